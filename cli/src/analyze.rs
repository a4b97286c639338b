//! `lathe analyze`: QC figures for any audio file.

use std::path::PathBuf;

use lathe_engine::qc::analyze_file;

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

/// Analyses every file; a file that cannot be read is reported and the others go on.
pub fn run(args: &AnalyzeArgs, streams: &mut Streams<'_>) -> anyhow::Result<i32> {
    let mut analyses = Vec::new();
    let mut failed = false;
    for file in &args.files {
        match analyze_file(file) {
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
            "file", "dur s", "rate", "ch", "LUFS", "LRA", "max M", "max S", "dBTP", "peak", "clip",
            "DC", "corr", "lead s", "trail s",
        ]);
        for a in &analyses {
            table.row(vec![
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
            ]);
        }
        write!(streams.out, "{}", table.render())?;
    }
    Ok(if failed { EXIT_FAILURES } else { EXIT_OK })
}
