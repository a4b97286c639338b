//! Small inline SVG charts of a track before and after mastering: short-term loudness over time and
//! the mean spectrum (the curves `report.html` plots, from the model's `PlotData`), and the
//! analysis' levels side by side where no curves were measured. The control plane links no audio
//! code, so the engine's own chart functions are not at hand: these draw the same data.

use std::fmt::Write as _;

use lathe_model::analysis::Analysis;
use lathe_model::plot::{CURVE_STEP_S, PlotData, band_centre_hz};

use super::html::escape;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const MARGIN: f64 = 40.0;
/// The source's colour and the master's.
const BEFORE: &str = "#888";
const AFTER: &str = "#1f77b4";
/// Levels below this are drawn at it, dB.
const FLOOR_DB: f64 = -70.0;

/// One line of a chart.
struct Series<'a> {
    label: &'a str,
    colour: &'a str,
    points: Vec<(f64, f64)>,
}

/// The two series of a before-and-after chart, in their colours.
fn before_and_after(before: Vec<(f64, f64)>, after: Vec<(f64, f64)>) -> [Series<'static>; 2] {
    [
        Series {
            label: "before",
            colour: BEFORE,
            points: before,
        },
        Series {
            label: "after",
            colour: AFTER,
            points: after,
        },
    ]
}

/// The axes of a chart: x and y ranges, whether x is logarithmic.
struct Axes {
    x: (f64, f64),
    y: (f64, f64),
    log_x: bool,
}

impl Axes {
    fn x(&self, x: f64) -> f64 {
        let (low, high) = self.x;
        let t = if self.log_x {
            (x.max(1e-9).ln() - low.ln()) / (high.ln() - low.ln())
        } else {
            (x - low) / (high - low).max(1e-9)
        };
        MARGIN + t.clamp(0.0, 1.0) * (WIDTH - 2.0 * MARGIN)
    }

    fn y(&self, y: f64) -> f64 {
        let (low, high) = self.y;
        let t = (y - low) / (high - low).max(1e-9);
        HEIGHT - MARGIN - t.clamp(0.0, 1.0) * (HEIGHT - 2.0 * MARGIN)
    }
}

/// The frame of a chart: the plot area, the y ticks, the title and the axis labels.
fn frame(title: &str, x_label: &str, y_label: &str, axes: &Axes) -> String {
    let mut svg = format!(
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         role=\"img\" aria-label=\"{0}\"><title>{0}</title>\
         <rect x=\"{MARGIN}\" y=\"{MARGIN}\" width=\"{1}\" height=\"{2}\" fill=\"#fafafa\" stroke=\"#ccc\"/>",
        escape(title),
        WIDTH - 2.0 * MARGIN,
        HEIGHT - 2.0 * MARGIN,
    );
    let (low, high) = axes.y;
    for step in 0..=4 {
        let y = low + (high - low) * f64::from(step) / 4.0;
        let _ = write!(
            svg,
            "<text x=\"4\" y=\"{:.1}\" font-size=\"10\">{y:.0}</text>",
            axes.y(y) + 3.0
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{MARGIN}\" y=\"{:.1}\" font-size=\"11\">{} ({:.0} to {:.0})</text>\
         <text x=\"{MARGIN}\" y=\"14\" font-size=\"12\" font-weight=\"bold\">{}</text>\
         <text x=\"{:.1}\" y=\"14\" font-size=\"10\">{}</text>",
        HEIGHT - 8.0,
        escape(x_label),
        axes.x.0,
        axes.x.1,
        escape(title),
        WIDTH - 160.0,
        escape(y_label),
    );
    svg
}

/// An SVG line chart of `series`.
fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series], axes: &Axes) -> String {
    let mut svg = frame(title, x_label, y_label, axes);
    for (number, line) in series.iter().enumerate() {
        let points: Vec<String> = line
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", axes.x(x), axes.y(y.max(FLOOR_DB))))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{0}\" stroke-width=\"1.5\" points=\"{1}\"/>\
             <text x=\"{2:.1}\" y=\"{3:.1}\" font-size=\"11\" fill=\"{0}\">{4}</text>",
            line.colour,
            points.join(" "),
            WIDTH - MARGIN - 120.0,
            MARGIN + 14.0 * (number as f64 + 1.0),
            escape(line.label),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Short-term loudness over time, before and after.
pub fn loudness_over_time(before: &PlotData, after: &PlotData) -> String {
    let curve = |data: &PlotData| -> Vec<(f64, f64)> {
        data.short_term_lufs
            .iter()
            .enumerate()
            .map(|(step, &lufs)| ((step + 1) as f64 * CURVE_STEP_S, lufs))
            .collect()
    };
    let length = before
        .short_term_lufs
        .len()
        .max(after.short_term_lufs.len())
        .max(1) as f64
        * CURVE_STEP_S;
    line_chart(
        "Loudness over time (short-term)",
        "seconds",
        "LUFS",
        &before_and_after(curve(before), curve(after)),
        &Axes {
            x: (0.0, length),
            y: (-60.0, 0.0),
            log_x: false,
        },
    )
}

/// The mean spectrum, before and after.
pub fn spectrum(before: &PlotData, after: &PlotData) -> String {
    let curve = |data: &PlotData| -> Vec<(f64, f64)> {
        data.spectrum_db
            .iter()
            .enumerate()
            .map(|(band, &db)| (band_centre_hz(band), db))
            .collect()
    };
    line_chart(
        "Spectrum (mean)",
        "Hz, log scale",
        "dB",
        &before_and_after(curve(before), curve(after)),
        &Axes {
            x: (20.0, 20_000.0),
            y: (FLOOR_DB, 0.0),
            log_x: true,
        },
    )
}

/// One level of an analysis.
type Measure = fn(&Analysis) -> Option<f64>;

/// The analysis' levels of the source and of the master as pairs of bars (integrated, highest
/// short-term and momentary loudness, true peak and sample peak).
pub fn levels(before: &Analysis, after: &Analysis) -> String {
    let axes = Axes {
        x: (0.0, 5.0),
        y: (-60.0, 6.0),
        log_x: false,
    };
    let mut svg = frame(
        "Levels before (grey) and after (blue)",
        "measure",
        "LUFS / dBTP / dBFS",
        &axes,
    );
    let measures: [(&str, Measure); 5] = [
        ("integrated", |a| a.integrated_lufs),
        ("max short-term", |a| a.max_short_term_lufs),
        ("max momentary", |a| a.max_momentary_lufs),
        ("true peak", |a| a.true_peak_dbtp),
        ("sample peak", |a| a.sample_peak_dbfs),
    ];
    let slot = (WIDTH - 2.0 * MARGIN) / measures.len() as f64;
    let base = axes.y(axes.y.0);
    for (number, (name, measure)) in measures.iter().enumerate() {
        let left = MARGIN + slot * number as f64;
        for (side, (analysis, colour)) in [(before, BEFORE), (after, AFTER)].iter().enumerate() {
            let Some(value) = measure(analysis).filter(|value| value.is_finite()) else {
                continue;
            };
            let top = axes.y(value);
            let x = left + 8.0 + side as f64 * slot * 0.42;
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\"/>\
                 <text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"9\">{value:.1}</text>",
                slot * 0.38,
                (base - top).max(0.0),
                top - 2.0,
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{name}</text>",
            left + 8.0,
            HEIGHT - MARGIN + 12.0,
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use lathe_model::plot::SPECTRUM_BANDS;

    fn data(offset_db: f64) -> PlotData {
        PlotData {
            short_term_lufs: (0..30)
                .map(|second| -20.0 + offset_db - f64::from(second % 3))
                .collect(),
            spectrum_db: (0..SPECTRUM_BANDS)
                .map(|band| -30.0 - band as f64 * 0.5 + offset_db)
                .collect(),
        }
    }

    #[test]
    fn charts_draw_one_line_per_curve_inside_the_frame() {
        for svg in [
            loudness_over_time(&data(0.0), &data(6.0)),
            spectrum(&data(0.0), &data(6.0)),
        ] {
            assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
            assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
            // Every point lies inside the view box.
            for points in svg.split("points=\"").skip(1) {
                let points = points.split('"').next().unwrap_or_default();
                for point in points.split(' ') {
                    let (x, y) = point.split_once(',').expect("x,y");
                    let (x, y): (f64, f64) = (x.parse().expect("x"), y.parse().expect("y"));
                    assert!((0.0..=WIDTH).contains(&x) && (0.0..=HEIGHT).contains(&y));
                }
            }
        }
    }

    #[test]
    fn band_centres_span_the_audible_range() {
        assert!(band_centre_hz(0) > 20.0 && band_centre_hz(0) < 25.0);
        assert!(band_centre_hz(SPECTRUM_BANDS - 1) < 20_000.0);
        assert!(band_centre_hz(SPECTRUM_BANDS - 1) > 17_000.0);
    }
}
