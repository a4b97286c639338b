//! `lathe analyze`: QC figures for any audio file.

use std::path::PathBuf;

use lathe_engine::qc::analyze_file_with_defects;
use lathe_model::defects::Defects;

use crate::table::{Table, level};
use crate::{EXIT_FAILURES, EXIT_OK, Streams};

/// Arguments of `lathe analyze`.
#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {
    /// Audio files to analyse.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print a JSON array with one object per file instead of a table.
    #[arg(long)]
    json: bool,
}

/// The table's defect columns: clicks a minute, crackle a second, the noise floor with its SNR and
/// shape, the hum (mains, level, harmonics) and the clipped runs at the peak (count, longest).
fn defect_cells(d: &Defects) -> Vec<String> {
    let noise = &d.noise;
    vec![
        format!("{:.0}", d.clicks_per_min),
        format!("{:.1}", d.crackle_per_s),
        format!(
            "{:.0} dBFS {} (SNR {:.0})",
            noise.level_dbfs,
            noise.shape.name(),
            noise.snr_db
        ),
        d.hum.as_ref().map_or_else(
            || "-".to_owned(),
            |h| {
                format!(
                    "{:.0} Hz {:.0} dBFS x{}",
                    h.mains_hz,
                    h.level_dbfs,
                    h.harmonics.len()
                )
            },
        ),
        format!("{} (max {})", d.clipping.runs, d.clipping.longest_run),
    ]
}

/// Analyses every file; a file that cannot be read is reported and the others go on.
pub fn run(args: &AnalyzeArgs, streams: &mut Streams<'_>) -> anyhow::Result<i32> {
    let mut analyses = Vec::new();
    let mut failed = false;
    for file in &args.files {
        match analyze_file_with_defects(file) {
            Ok(analysis) => analyses.push(analysis),
            Err(error) => {
                writeln!(streams.err, "lathe: {error}")?;
                failed = true;
            }
        }
    }
    if args.json {
        writeln!(streams.out, "{}", serde_json::to_string_pretty(&analyses)?)?;
    } else {
        let mut table = Table::new(&[
            "file",
            "dur s",
            "rate",
            "ch",
            "LUFS",
            "LRA",
            "max M",
            "max S",
            "dBTP",
            "peak",
            "clip",
            "DC",
            "corr",
            "lead s",
            "trail s",
            "clicks/min",
            "crackle/s",
            "noise",
            "hum",
            "clip runs",
        ]);
        for a in &analyses {
            let mut cells = vec![
                a.path.display().to_string(),
                format!("{:.2}", a.duration_s),
                a.sample_rate.to_string(),
                a.channels.to_string(),
                level(a.integrated_lufs),
                level(a.loudness_range_lu),
                level(a.max_momentary_lufs),
                level(a.max_short_term_lufs),
                level(a.true_peak_dbtp),
                level(a.sample_peak_dbfs),
                a.clipped_samples.to_string(),
                format!("{:.4}", a.dc_offset),
                a.phase_correlation
                    .map_or_else(|| "-".to_owned(), |c| format!("{c:.2}")),
                format!("{:.2}", a.leading_silence_s),
                format!("{:.2}", a.trailing_silence_s),
            ];
            cells.extend(a.defects.as_ref().map_or_else(Vec::new, defect_cells));
            table.row(cells);
        }
        write!(streams.out, "{}", table.render())?;
    }
    Ok(if failed { EXIT_FAILURES } else { EXIT_OK })
}

#[cfg(test)]
mod tests {
    use lathe_synth::{Style, TrackRecipe, write_wav};

    use crate::{EXIT_OK, Streams, run};

    fn lathe(args: &[&str]) -> (i32, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = run(
            std::iter::once("lathe").chain(args.iter().copied()),
            &mut Streams {
                out: &mut out,
                err: &mut err,
            },
        );
        (status, String::from_utf8_lossy(&out).into_owned())
    }

    /// The defects are in the table's last columns and in the JSON's `defects`.
    #[test]
    fn analyze_reports_the_defects() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.wav");
        let recipe = TrackRecipe {
            duration_s: 3.0,
            ..TrackRecipe::new(Style::Ambient, 2)
        };
        write_wav(&recipe, &input, 24).unwrap();
        let (status, table) = lathe(&["analyze", input.to_str().unwrap()]);
        assert_eq!(status, EXIT_OK);
        let header = table.lines().next().unwrap_or_default();
        for column in ["clicks/min", "crackle/s", "noise", "hum", "clip runs"] {
            assert!(header.contains(column), "{header}");
        }
        let (status, json) = lathe(&["analyze", "--json", input.to_str().unwrap()]);
        assert_eq!(status, EXIT_OK);
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        let defects = &parsed[0]["defects"];
        for key in ["clicks_per_min", "crackle_per_s", "noise", "clipping"] {
            assert!(!defects[key].is_null(), "{key} missing: {defects}");
        }
        assert!(defects["noise"]["shape"].is_string(), "{defects}");
    }
}
