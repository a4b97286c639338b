//! The dashboard's HTML vocabulary: escaping, the page frame, and the words and numbers every page
//! shows (states, times, durations, levels). Every string that comes from a user (job names, file
//! names, errors, worker ids) goes through [`escape`] before it joins markup.

use std::fmt::Write as _;

use crate::auth::Caller;

/// `text` safe inside an element or a quoted attribute: `& < > " '` become entities.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// `text` as one component of a URL's path or query: every byte but unreserved ones
/// percent-encoded.
pub fn url_component(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// Which page of the navigation is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The jobs list and a job's pages.
    Jobs,
    /// The workers.
    Workers,
}

/// Who is looking at a page and where: what its header shows.
#[derive(Debug, Clone, Copy)]
pub struct Viewer<'a> {
    /// The signed-in caller.
    pub caller: &'a Caller,
    /// The page's part of the navigation.
    pub section: Section,
    /// The navigation links the workers page (the caller's role sees it).
    pub workers: bool,
}

/// The header of a signed-in page: the navigation (the workers only when `viewer.workers`) with
/// `section` marked, who is signed in, and the sign-out button (a form: it works without
/// the script).
fn signed_in_header(viewer: Viewer<'_>) -> String {
    let current = |this: Section| {
        if this == viewer.section {
            " aria-current=\"page\""
        } else {
            ""
        }
    };
    let mut nav = format!("<a href=\"/\"{}>Jobs</a>", current(Section::Jobs));
    if viewer.workers {
        let _ = write!(
            nav,
            " <a href=\"/workers\"{}>Workers</a>",
            current(Section::Workers)
        );
    }
    format!(
        "<nav>{nav}</nav><span id=\"live\" class=\"live\"></span>\
         <span class=\"who\" id=\"signed-in\">{name} ({role})</span>\
         <form method=\"post\" action=\"/logout\" class=\"sign-out\">\
         <button type=\"submit\" id=\"sign-out\">Sign out</button></form>",
        name = escape(&viewer.caller.name),
        role = viewer.caller.role.name(),
    )
}

/// A whole page: `title` (plain text, escaped here), the header for `viewer` (none on the
/// sign-in page and error pages: only the name), and `body` (markup). `body_data` are `data-`
/// attributes for the script (name, value; values are escaped here).
pub fn page(
    title: &str,
    viewer: Option<Viewer<'_>>,
    body_data: &[(&str, &str)],
    body: &str,
) -> String {
    let mut data = String::new();
    for (name, value) in body_data {
        let _ = write!(data, " data-{name}=\"{}\"", escape(value));
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · lathe</title><link rel=\"stylesheet\" href=\"/static/dashboard.css\">\
         <script src=\"/static/dashboard.js\" defer></script></head>\
         <body{data}><header><strong>lathe</strong>{}</header>\
         <main>{body}</main></body></html>\n",
        escape(title),
        viewer.map(signed_in_header).unwrap_or_default(),
    )
}

/// A point in time (milliseconds since the Unix epoch) as `YYYY-MM-DD HH:MM:SS` UTC; empty for 0.
pub fn utc_time(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return String::new();
    }
    let seconds = unix_ms / 1000;
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    // Days since 1970-01-01 to a civil date (H. Hinnant's `civil_from_days`), in unsigned
    // arithmetic: the epoch is shifted to 0000-03-01, so every date here is positive.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// A duration in words a person reads at a glance: `42 s`, `7 min 05 s`, `3 h 20 min`.
pub fn duration(ms: u64) -> String {
    let seconds = ms / 1000;
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min {:02} s", seconds / 60, seconds % 60),
        _ => format!("{} h {:02} min", seconds / 3600, seconds % 3600 / 60),
    }
}

/// A level with one decimal and its unit, or an em dash when there is none.
pub fn level(value: Option<f64>, unit: &str) -> String {
    match value {
        Some(value) if value.is_finite() => format!("{value:.1} {unit}"),
        _ => "—".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        let crafted = "<img src=x onerror=\"alert('x')\">&";
        let escaped = escape(crafted);
        assert!(!escaped.contains('<') && !escaped.contains('>') && !escaped.contains('"'));
        assert!(!escaped.contains('\''));
        assert_eq!(
            escaped,
            "&lt;img src=x onerror=&quot;alert(&#39;x&#39;)&quot;&gt;&amp;"
        );
    }

    #[test]
    fn url_components_keep_only_unreserved_bytes() {
        assert_eq!(url_component("0a1.0000003"), "0a1.0000003");
        assert_eq!(url_component("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn times_are_civil_utc() {
        assert_eq!(utc_time(0), "");
        assert_eq!(utc_time(1), "1970-01-01 00:00:00");
        // 2024-02-29 12:34:56 UTC, a leap day.
        assert_eq!(utc_time(1_709_210_096_000), "2024-02-29 12:34:56");
        assert_eq!(utc_time(1_798_761_600_000), "2027-01-01 00:00:00");
    }

    #[test]
    fn the_header_names_the_caller_and_links_the_workers_only_when_asked() {
        let submit = Caller {
            name: "<alice>".to_owned(),
            role: crate::auth::Role::Submit,
        };
        let viewer = Viewer {
            caller: &submit,
            section: Section::Jobs,
            workers: false,
        };
        let html = page("Jobs", Some(viewer), &[], "");
        assert!(html.contains("&lt;alice&gt; (submit)"), "{html}");
        assert!(!html.contains("<alice>"), "{html}");
        assert!(!html.contains("href=\"/workers\""), "{html}");
        assert!(html.contains("action=\"/logout\""), "{html}");
        let admin = Caller::admin("root");
        let html = page(
            "Workers",
            Some(Viewer {
                caller: &admin,
                section: Section::Workers,
                workers: true,
            }),
            &[],
            "",
        );
        assert!(html.contains("<a href=\"/workers\" aria-current=\"page\">"));
        let signed_out = page("Sign in", None, &[], "");
        assert!(!signed_out.contains("<nav>") && !signed_out.contains("/logout"));
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(42_400), "42 s");
        assert_eq!(duration(425_000), "7 min 05 s");
        assert_eq!(duration(12_000_000), "3 h 20 min");
    }
}
