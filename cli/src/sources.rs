//! The audio files a command's inputs name, and the names the CLI shows them under.

use std::path::{Path, PathBuf};

use lathe_model::catalog::find_audio_files;

use crate::Usage;

/// Expands folders (recursively, audio extensions only, sorted) and keeps files as given; a file
/// named twice (also through a link) is kept once.
pub(crate) fn collect_sources(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, Usage> {
    let mut sources = Vec::new();
    for input in inputs {
        if input.is_dir() {
            sources.extend(find_audio_files(input).map_err(|e| Usage(e.to_string()))?);
        } else if input.exists() {
            sources.push(input.clone());
        } else {
            return Err(Usage(format!(
                "{}: no such file or folder",
                input.display()
            )));
        }
    }
    let mut seen = std::collections::HashSet::new();
    sources.retain(|p| seen.insert(p.canonicalize().unwrap_or_else(|_| p.clone())));
    Ok(sources)
}

/// The file name of `path` (empty when it has none): what a farm task knows a file by.
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The file name of `path` for tables and progress bars, the whole path when it has none.
pub(crate) fn display_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
