//! The files a task wrote, as its outcome lists them: paths relative to the output folder, figures
//! and checks.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use lathe_model::delivery::outcome::{OutcomeFile, OutcomeKind};
use lathe_model::report::QcVerdict;

/// A relative delivery path under `out`, its folder made.
pub(crate) fn place(out: &Path, relative: &str) -> Result<PathBuf> {
    let path = out.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    Ok(path)
}

/// A file's path relative to `out`, `/`-separated.
pub(crate) fn relative_to(out: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(out).unwrap_or(path);
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// An audio file an `assemble` task wrote, with its figures.
pub(crate) fn programme_file(
    out: &Path,
    path: &Path,
    kind: OutcomeKind,
    analysis: &lathe_model::analysis::Analysis,
    issues: Vec<String>,
    notes: Vec<String>,
) -> OutcomeFile {
    OutcomeFile {
        path: relative_to(out, path),
        delivered: true,
        kind,
        duration_s: Some(analysis.duration_s),
        integrated_lufs: analysis.integrated_lufs,
        true_peak_dbtp: analysis.true_peak_dbtp,
        qc: QcVerdict {
            passed: issues.is_empty(),
            issues,
        },
        platforms: Vec::new(),
        notes,
    }
}

/// A file an `assemble` task wrote that is not audio (CUE sheet, DDP stream).
pub(crate) fn paperwork_file(
    out: &Path,
    path: &Path,
    kind: OutcomeKind,
    qc: &QcVerdict,
) -> OutcomeFile {
    OutcomeFile {
        path: relative_to(out, path),
        delivered: true,
        kind,
        duration_s: None,
        integrated_lufs: None,
        true_peak_dbtp: None,
        qc: qc.clone(),
        platforms: Vec::new(),
        notes: Vec::new(),
    }
}
