//! The album's human-readable report: one self-contained HTML page with inline SVG plots of the
//! loudness over time before and after mastering, the spectrum before and after, and the tracks'
//! levels side by side, then a table per outlet.

use std::fmt::Write as _;
use std::path::Path;

use ebur128::{EbuR128, Mode};
use serde::Serialize;

use crate::audio::AudioBlock;
use crate::audio::BLOCK_FRAMES;
use crate::decode::Decoder;
use crate::error::{Error, Result};
use crate::plot::{FLOOR_DB, SpectrumMeter};
use lathe_model::plot::{CURVE_STEP_S, PlotData, SPECTRUM_BANDS, band_centre_hz};

/// Measures `path` for the plots (one decode pass).
///
/// # Errors
/// A decode error.
pub fn measure(path: &Path) -> Result<PlotData> {
    let mut decoder = Decoder::open(path)?;
    let info = decoder.info().clone();
    let rate = info.sample_rate_hz;
    let mut meter =
        EbuR128::new(info.channel_count as u32, rate, Mode::S).map_err(|e| Error::Decode {
            path: path.to_path_buf(),
            reason: format!("loudness meter: {e}"),
        })?;
    let step = (CURVE_STEP_S * f64::from(rate)) as usize;
    // Every frame: an album's report reads each file once, for these curves alone.
    let mut spectrum = SpectrumMeter::new(1);
    let mut curve = Vec::new();
    let mut since_read = 0usize;
    let mut block = AudioBlock::new(info.channel_count, BLOCK_FRAMES, rate);
    while decoder.read(&mut block)? > 0 {
        let n = block.frames();
        let mut at = 0;
        while at < n {
            let take = (step - since_read).min(n - at);
            let slices: Vec<&[f32]> = block.channels().map(|c| &c[at..at + take]).collect();
            let _ = meter.add_frames_planar_f32(&slices);
            since_read += take;
            at += take;
            if since_read == step {
                since_read = 0;
                let lufs = meter.loudness_shortterm().unwrap_or(f64::NEG_INFINITY);
                curve.push(if lufs.is_finite() {
                    lufs.max(FLOOR_DB)
                } else {
                    FLOOR_DB
                });
            }
        }
        spectrum.add(&block);
    }
    let spectrum_db = spectrum.bands_db(rate);
    Ok(PlotData {
        short_term_lufs: curve,
        spectrum_db,
    })
}

/// One track of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportTrack {
    /// Position and title.
    pub name: String,
    /// Source loudness, LUFS.
    pub before_lufs: Option<f64>,
    /// Master loudness (the first outlet's), LUFS.
    pub after_lufs: Option<f64>,
    /// The source's curves.
    pub before: PlotData,
    /// The master's curves.
    pub after: PlotData,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const MARGIN: f64 = 40.0;

/// One line of a chart: label, colour and (x, y) points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// An SVG line chart of `series` (label, colour, points (x, y)) with y from `y_min` to `y_max`.
fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
    (x_min, x_max): (f64, f64),
    (y_min, y_max): (f64, f64),
    log_x: bool,
) -> String {
    let fx = |x: f64| {
        let t = if log_x {
            (x.max(1e-9).ln() - x_min.ln()) / (x_max.ln() - x_min.ln())
        } else {
            (x - x_min) / (x_max - x_min).max(1e-9)
        };
        MARGIN + t.clamp(0.0, 1.0) * (WIDTH - 2.0 * MARGIN)
    };
    let fy = |y: f64| {
        let t = (y - y_min) / (y_max - y_min);
        HEIGHT - MARGIN - t.clamp(0.0, 1.0) * (HEIGHT - 2.0 * MARGIN)
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\"><title>{}</title>",
        escape(title)
    );
    let _ = write!(
        svg,
        "<rect x=\"{MARGIN}\" y=\"{MARGIN}\" width=\"{}\" height=\"{}\" fill=\"#fafafa\" stroke=\"#ccc\"/>",
        WIDTH - 2.0 * MARGIN,
        HEIGHT - 2.0 * MARGIN
    );
    let steps = 4;
    for i in 0..=steps {
        let y = y_min + (y_max - y_min) * f64::from(i) / f64::from(steps);
        let _ = write!(
            svg,
            "<text x=\"4\" y=\"{:.1}\" font-size=\"10\">{y:.0}</text>",
            fy(y) + 3.0
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{MARGIN}\" y=\"{}\" font-size=\"11\">{} ({x_min:.0} to {x_max:.0})</text><text x=\"{MARGIN}\" y=\"14\" font-size=\"12\" font-weight=\"bold\">{}</text><text x=\"{}\" y=\"14\" font-size=\"10\">{}</text>",
        HEIGHT - 8.0,
        escape(x_label),
        escape(title),
        WIDTH - 160.0,
        escape(y_label)
    );
    for (i, (label, colour, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", fx(*x), fy(*y)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/><text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"{colour}\">{}</text>",
            path.join(" "),
            WIDTH - MARGIN - 120.0,
            MARGIN + 14.0 * (i as f64 + 1.0),
            escape(label)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Grouped bars: each track's loudness before and after.
fn level_bars(tracks: &[ReportTrack]) -> String {
    let (y_min, y_max) = (-40.0, 0.0);
    let n = tracks.len().max(1) as f64;
    let slot = (WIDTH - 2.0 * MARGIN) / n;
    let fy = |y: f64| {
        HEIGHT - MARGIN - ((y - y_min) / (y_max - y_min)).clamp(0.0, 1.0) * (HEIGHT - 2.0 * MARGIN)
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\"><title>Track levels</title><text x=\"{MARGIN}\" y=\"14\" font-size=\"12\" font-weight=\"bold\">Integrated loudness per track, LUFS (grey: source, blue: master)</text>"
    );
    for (i, track) in tracks.iter().enumerate() {
        let x = MARGIN + slot * i as f64;
        for (j, (value, colour)) in [(track.before_lufs, "#999"), (track.after_lufs, "#1f77b4")]
            .into_iter()
            .enumerate()
        {
            if let Some(v) = value {
                let top = fy(v);
                let _ = write!(
                    svg,
                    "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\">{v:.1}</text>",
                    x + 4.0 + j as f64 * slot * 0.4,
                    slot * 0.38,
                    HEIGHT - MARGIN - top,
                    x + 4.0 + j as f64 * slot * 0.4,
                    top - 2.0
                );
            }
        }
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"9\">{}</text>",
            x + 4.0,
            HEIGHT - MARGIN + 12.0,
            escape(&track.name.chars().take(18).collect::<String>())
        );
    }
    svg.push_str("</svg>");
    svg
}

fn album_curve(tracks: &[ReportTrack], after: bool) -> Vec<(f64, f64)> {
    let mut points = Vec::new();
    let mut t = 0.0;
    for track in tracks {
        let data = if after { &track.after } else { &track.before };
        for value in &data.short_term_lufs {
            t += CURVE_STEP_S;
            points.push((t, *value));
        }
    }
    points
}

fn album_spectrum(tracks: &[ReportTrack], after: bool) -> Vec<(f64, f64)> {
    (0..SPECTRUM_BANDS)
        .map(|b| {
            let powers: Vec<f64> = tracks
                .iter()
                .filter_map(|t| {
                    let data = if after { &t.after } else { &t.before };
                    data.spectrum_db.get(b).map(|db| 10f64.powf(db / 10.0))
                })
                .collect();
            let mean = powers.iter().sum::<f64>() / powers.len().max(1) as f64;
            (
                band_centre_hz(b),
                (10.0 * mean.max(1e-12).log10()).max(FLOOR_DB),
            )
        })
        .collect()
}

/// The report page: `title`, the plots from `tracks`, then `sections` (heading, HTML table) as
/// given.
pub fn html(title: &str, tracks: &[ReportTrack], sections: &[(String, String)]) -> String {
    let before = album_curve(tracks, false);
    let after = album_curve(tracks, true);
    let length = before
        .last()
        .map_or(1.0, |p| p.0)
        .max(after.last().map_or(1.0, |p| p.0));
    let mut page = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{0}: lathe delivery report</title><style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}th{{background:#eee}}td:first-child{{text-align:left}}.fail{{color:#b00}}</style></head><body><h1>{0}</h1><p>lathe {1}: the album before (source) and after mastering (the first outlet's masters).</p>",
        escape(title),
        env!("CARGO_PKG_VERSION")
    );
    page.push_str(&line_chart(
        "Loudness over time (short-term, album running order)",
        "seconds",
        "LUFS",
        &[("before", "#999", before), ("after", "#1f77b4", after)],
        (0.0, length),
        (-60.0, 0.0),
        false,
    ));
    page.push_str(&line_chart(
        "Spectrum (album average)",
        "Hz, log scale",
        "dB",
        &[
            ("before", "#999", album_spectrum(tracks, false)),
            ("after", "#1f77b4", album_spectrum(tracks, true)),
        ],
        (20.0, 20_000.0),
        (-70.0, 0.0),
        true,
    ));
    page.push_str(&level_bars(tracks));
    for (heading, table) in sections {
        let _ = write!(page, "<h2>{}</h2>{table}", escape(heading));
    }
    page.push_str("</body></html>\n");
    page
}

/// An HTML table of `rows` under `header`; cells are escaped.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = String::from("<table><tr>");
    for h in header {
        let _ = write!(t, "<th>{}</th>", escape(h));
    }
    t.push_str("</tr>");
    for row in rows {
        t.push_str("<tr>");
        for cell in row {
            let class = if cell.starts_with("FAIL") {
                " class=\"fail\""
            } else {
                ""
            };
            let _ = write!(t, "<td{class}>{}</td>", escape(cell));
        }
        t.push_str("</tr>");
    }
    t.push_str("</table>");
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::Encoder;
    use lathe_model::stage_config::{Container, EncodeSpec};

    #[test]
    fn a_sine_peaks_in_its_band_and_reads_its_loudness() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sine.wav");
        let rate = 48_000;
        let signal: Vec<f32> = (0..rate * 6)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / rate as f32).sin())
            .collect();
        let spec = EncodeSpec {
            container: Container::Wav,
            bit_depth: 32,
        };
        let mut encoder = Encoder::create(&path, &spec, 2, rate as u32).unwrap();
        encoder
            .write(&AudioBlock::from_channels(
                vec![signal.clone(), signal],
                rate as u32,
            ))
            .unwrap();
        encoder.finish().unwrap();
        let data = measure(&path).unwrap();
        assert_eq!(data.short_term_lufs.len(), 6);
        // A 1 kHz stereo sine at -6 dBFS peak reads -6 - 3.01 + 3.01 (two channels) = -6.0 LUFS.
        assert!(
            (data.short_term_lufs[5] + 6.0).abs() < 0.1,
            "{:?}",
            data.short_term_lufs
        );
        let loudest = (0..SPECTRUM_BANDS)
            .max_by(|a, b| data.spectrum_db[*a].total_cmp(&data.spectrum_db[*b]))
            .unwrap();
        let (lo, hi) = (
            20.0 * 1000f64.powf(loudest as f64 / SPECTRUM_BANDS as f64),
            20.0 * 1000f64.powf((loudest + 1) as f64 / SPECTRUM_BANDS as f64),
        );
        assert!(lo <= 1000.0 && 1000.0 < hi, "{lo}..{hi}");
        let page = html(
            "A <b>",
            &[ReportTrack {
                name: "01 Dawn".into(),
                before_lufs: Some(-20.0),
                after_lufs: Some(-14.0),
                before: data.clone(),
                after: data,
            }],
            &[(
                "QC".into(),
                table(&["file", "verdict"], &[vec!["x".into(), "FAIL: y".into()]]),
            )],
        );
        assert_eq!(page.matches("<svg").count(), 3);
        assert!(page.contains("A &lt;b&gt;") && page.contains("class=\"fail\""));
    }
}
