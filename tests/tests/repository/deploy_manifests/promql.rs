//! The metrics the binaries export, and what a PromQL expression (a Grafana panel's, KEDA's query)
//! says about them: which `lathe_*` series it reads, with which label matchers, grouped by which
//! labels. Enough of PromQL's lexical rules for that (strings, range selectors, identifiers), not a
//! parser of the language.

/// How Prometheus exposes a metric: a histogram is read as `NAME_bucket`, `NAME_sum`, `NAME_count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// A value that goes up and down.
    Gauge,
    /// A count that only goes up (the name ends in `_total`).
    Counter,
    /// Observations in buckets (`le`).
    Histogram,
}

/// One metric of the coordinator or the worker, as its `/metrics` exposes it.
#[derive(Debug)]
pub struct KnownMetric {
    /// The exposed name (counters with their `_total`).
    pub name: &'static str,
    /// Its kind.
    pub kind: MetricKind,
    /// Its labels, each with the values it takes when they are a closed set (empty: any value).
    pub labels: Labels,
}

/// A metric's labels, each with the values it takes (empty: any value).
pub type Labels = &'static [(&'static str, &'static [&'static str])];

use MetricKind::{Counter, Gauge, Histogram};

/// Any value of a label (an open set, such as job ids).
const ANY: &[&str] = &[];

/// A gauge named `name` with `labels`.
const fn gauge(name: &'static str, labels: Labels) -> KnownMetric {
    KnownMetric {
        name,
        kind: Gauge,
        labels,
    }
}

/// A counter (its exposed name, with `_total`).
const fn counter(name: &'static str, labels: Labels) -> KnownMetric {
    KnownMetric {
        name,
        kind: Counter,
        labels,
    }
}

/// A histogram (its base name, without `_bucket`/`_sum`/`_count`).
const fn histogram(name: &'static str, labels: Labels) -> KnownMetric {
    KnownMetric {
        name,
        kind: Histogram,
        labels,
    }
}

/// Every metric the deploy files may name: the coordinator's, then the worker's. The one place to
/// change when the code names a metric differently.
pub const KNOWN_METRICS: &[KnownMetric] = &[
    // The coordinator's (`--http-listen` / `--metrics-listen`, port 7481).
    gauge("lathe_backlog_tasks", &[]),
    gauge("lathe_job_tasks", &[("job", ANY), ("state", ANY)]),
    histogram("lathe_dispatch_pass_seconds", &[]),
    counter("lathe_store_errors_total", &[("store", &["etcd", "nats"])]),
    counter("lathe_qc_failures_total", &[]),
    counter("lathe_blob_bytes_received_total", &[]),
    counter("lathe_blob_bytes_sent_total", &[]),
    gauge("lathe_worker_slots", &[("state", &["busy", "total"])]),
    // The worker's (`--metrics-listen`, port 7482).
    histogram("lathe_worker_phase_seconds", &[("phase", ANY)]),
    histogram("lathe_worker_realtime_factor", &[]),
    counter("lathe_worker_tasks_total", &[("outcome", ANY)]),
    counter("lathe_worker_bytes_fetched_total", &[]),
    counter("lathe_worker_bytes_uploaded_total", &[]),
    counter("lathe_worker_heartbeat_failures_total", &[]),
    gauge("lathe_worker_ready", &[]),
    gauge("lathe_worker_slots_busy", &[]),
    gauge("lathe_worker_slots_total", &[]),
];

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: &[&str] = &["instance", "job"];

/// The known metric a series name reads (`lathe_dispatch_pass_seconds_bucket` reads the histogram
/// `lathe_dispatch_pass_seconds`), or `None`.
pub fn metric_of(series: &str) -> Option<&'static KnownMetric> {
    if let Some(metric) = KNOWN_METRICS.iter().find(|m| m.name == series) {
        return Some(metric);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = series.strip_suffix(suffix)?;
        KNOWN_METRICS
            .iter()
            .find(|m| m.name == base && m.kind == MetricKind::Histogram)
    })
}

/// A label matcher of a selector: `state="busy"`.
#[derive(Debug, PartialEq, Eq)]
pub struct Matcher {
    /// The label's name.
    pub label: String,
    /// `=`, `!=`, `=~` or `!~`.
    pub op: String,
    /// The value, unquoted.
    pub value: String,
}

/// A `lathe_*` series an expression reads, with its matchers.
#[derive(Debug, PartialEq, Eq)]
pub struct Selector {
    /// The series' name.
    pub series: String,
    /// The `{...}` matchers after it.
    pub matchers: Vec<Matcher>,
}

/// What an expression reads: its `lathe_*` selectors and the labels of its `by`/`without` clauses.
#[derive(Debug, Default)]
pub struct ExpressionReads {
    /// The selectors of `lathe_*` series.
    pub selectors: Vec<Selector>,
    /// Every label named in a `by (...)` or `without (...)`.
    pub grouping: Vec<String>,
}

/// Reads `expr`: its `lathe_*` selectors and grouping labels. Strings and `[...]` ranges are
/// passed over, so `rate(x[$__rate_interval])` and `label_replace(..., "lathe_y", ...)` name no
/// metric.
pub fn reads(expr: &str) -> ExpressionReads {
    let chars: Vec<char> = expr.chars().collect();
    let mut reads = ExpressionReads::default();
    let mut i = 0;
    let mut last_word = String::new();
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '(' && (last_word == "by" || last_word == "without") {
            let end = chars[i..]
                .iter()
                .position(|&c| c == ')')
                .map_or(chars.len(), |p| i + p);
            let inside: String = chars[i + 1..end].iter().collect();
            reads.grouping.extend(
                inside
                    .split(',')
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
            last_word.clear();
            i = end + 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word.starts_with("lathe_") {
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let matchers = if chars.get(j) == Some(&'{') {
                    let (matchers, end) = parse_matchers(&chars, j + 1);
                    i = end;
                    matchers
                } else {
                    Vec::new()
                };
                reads.selectors.push(Selector {
                    series: word.clone(),
                    matchers,
                });
            }
            last_word = word;
        } else {
            if !c.is_whitespace() {
                last_word.clear();
            }
            i += 1;
        }
    }
    reads
}

/// The index just after the string literal opening at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The matchers from `start` (just after `{`) to the closing `}`, and the index after it.
fn parse_matchers(chars: &[char], start: usize) -> (Vec<Matcher>, usize) {
    let mut matchers = Vec::new();
    let mut i = start;
    loop {
        while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
            i += 1;
        }
        if i >= chars.len() || chars[i] == '}' {
            return (matchers, i + 1);
        }
        let label_start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        let label: String = chars[label_start..i].iter().collect();
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        let op_start = i;
        while i < chars.len() && matches!(chars[i], '=' | '!' | '~') {
            i += 1;
        }
        let op: String = chars[op_start..i].iter().collect();
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if i >= chars.len() || label.is_empty() || op.is_empty() {
            // Not a matcher PromQL accepts: keep what was read, stop at the brace.
            let end = chars[i.min(chars.len())..]
                .iter()
                .position(|&c| c == '}')
                .map_or(chars.len(), |p| i + p);
            return (matchers, end + 1);
        }
        let value_end = skip_string(chars, i);
        let value: String = chars[i + 1..(value_end - 1).min(chars.len())]
            .iter()
            .collect();
        matchers.push(Matcher { label, op, value });
        i = value_end;
    }
}

/// What is wrong with `expr`'s use of the known metrics: unknown `lathe_*` series, labels a metric
/// does not have, values outside a label's closed set, grouping by a label none of its metrics has.
pub fn expression_problems(expr: &str) -> Vec<String> {
    let reads = reads(expr);
    let mut problems = Vec::new();
    let mut labels_in_scope: Vec<&str> = TARGET_LABELS.to_vec();
    for selector in &reads.selectors {
        let Some(metric) = metric_of(&selector.series) else {
            problems.push(format!(
                "`{}` is not a metric the binaries export (known: promql::KNOWN_METRICS)",
                selector.series
            ));
            continue;
        };
        if metric.kind == MetricKind::Histogram {
            labels_in_scope.push("le");
        }
        labels_in_scope.extend(metric.labels.iter().map(|(label, _)| *label));
        for matcher in &selector.matchers {
            let Some((_, values)) = metric.labels.iter().find(|(l, _)| *l == matcher.label) else {
                if !TARGET_LABELS.contains(&matcher.label.as_str()) {
                    problems.push(format!(
                        "`{}` has no label `{}`",
                        metric.name, matcher.label
                    ));
                }
                continue;
            };
            if matcher.op == "=" && !values.is_empty() && !values.contains(&matcher.value.as_str())
            {
                problems.push(format!(
                    "`{}{{{}=\"{}\"}}`: the label takes {values:?}",
                    metric.name, matcher.label, matcher.value
                ));
            }
        }
    }
    for label in &reads.grouping {
        if !reads.selectors.is_empty() && !labels_in_scope.contains(&label.as_str()) {
            problems.push(format!(
                "grouped by `{label}`, a label none of its metrics has"
            ));
        }
    }
    problems
}

/// The known metrics `expr` reads (a histogram's series count as the histogram).
pub fn metrics_read(expr: &str) -> Vec<&'static str> {
    reads(expr)
        .selectors
        .iter()
        .filter_map(|s| metric_of(&s.series))
        .map(|m| m.name)
        .collect()
}

#[test]
fn an_expression_is_read_past_strings_and_ranges() {
    let reads = reads(
        r#"histogram_quantile(0.95, sum by (le, phase) (rate(lathe_worker_phase_seconds_bucket{phase!="x"}[$__rate_interval]))) + on() label_replace(vector(1), "a", "lathe_not_a_metric", "", "")"#,
    );
    assert_eq!(reads.selectors.len(), 1);
    assert_eq!(
        reads.selectors[0].series,
        "lathe_worker_phase_seconds_bucket"
    );
    assert_eq!(reads.selectors[0].matchers[0].label, "phase");
    assert_eq!(reads.selectors[0].matchers[0].value, "x");
    assert_eq!(reads.grouping, ["le", "phase"]);
}

#[test]
fn unknown_metrics_labels_and_values_are_reported() {
    assert!(expression_problems("sum(lathe_backlog_tasks)").is_empty());
    assert!(expression_problems(r#"sum(lathe_worker_slots{state="busy"})"#).is_empty());
    let unknown = expression_problems("sum(lathe_backlog)");
    assert!(
        unknown[0].contains("`lathe_backlog` is not a metric"),
        "{unknown:?}"
    );
    let label = expression_problems(r#"lathe_job_tasks{status="running"}"#);
    assert!(label[0].contains("no label `status`"), "{label:?}");
    let value = expression_problems(r#"lathe_worker_slots{state="idle"}"#);
    assert!(value[0].contains("the label takes"), "{value:?}");
    let grouping = expression_problems("sum by (phase) (lathe_job_tasks)");
    assert!(grouping[0].contains("grouped by `phase`"), "{grouping:?}");
    // `_bucket` belongs to histograms only.
    assert!(!expression_problems("lathe_backlog_tasks_bucket").is_empty());
}
