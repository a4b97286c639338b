//! Outputs that appear complete or not at all: a file is written under a temporary name beside its
//! final path ([`temp_path_for`]) and renamed into place only once it is whole; a [`TempFile`] guard
//! removes the temporary file on every other way out (an error, a cancellation, a panic).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A file being written under a temporary name: removed when dropped, unless
/// [`TempFile::commit`] renamed it into place.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    /// Guards `path` (usually [`temp_path_for`] of the final path); nothing is created yet.
    pub fn new(path: PathBuf) -> Self {
        Self { path, keep: false }
    }

    /// The guard of the temporary file for `final_path`.
    pub fn for_output(final_path: &Path) -> Self {
        Self::new(temp_path_for(final_path))
    }

    /// The temporary file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the file to `final_path`; it is then no longer removed.
    ///
    /// # Errors
    /// [`Error::Io`] naming `final_path` if the rename fails (the temporary file is then removed).
    pub fn commit(mut self, final_path: &Path) -> Result<()> {
        std::fs::rename(&self.path, final_path).map_err(|e| Error::io(final_path, e))?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The temporary name a file is written under before it is renamed to `path`: beside it, hidden,
/// named for it and for this process (`.name.PID.partial`), so that two processes writing the same
/// output do not share a temporary file.
pub fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.partial", std::process::id()))
}

/// Writes `bytes` to `path` atomically (temporary name, then rename).
///
/// # Errors
/// [`Error::Io`] naming the file that could not be written or renamed; nothing is left behind.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let temp = TempFile::for_output(path);
    std::fs::write(temp.path(), bytes).map_err(|e| Error::io(temp.path(), e))?;
    temp.commit(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_temporary_name_is_hidden_beside_the_output_and_names_this_process() {
        let temp = temp_path_for(Path::new("/masters/01 Dusk.flac"));
        assert_eq!(
            temp,
            Path::new(&format!(
                "/masters/.01 Dusk.flac.{}.partial",
                std::process::id()
            ))
        );
    }

    #[test]
    fn a_dropped_temp_file_is_removed_and_a_committed_one_is_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("master.wav");
        let dropped = TempFile::for_output(&output);
        std::fs::write(dropped.path(), b"half").unwrap();
        drop(dropped);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let committed = TempFile::for_output(&output);
        std::fs::write(committed.path(), b"whole").unwrap();
        let temp = committed.path().to_path_buf();
        committed.commit(&output).unwrap();
        assert!(!temp.exists());
        assert_eq!(std::fs::read(&output).unwrap(), b"whole");
    }

    #[test]
    fn write_atomically_leaves_only_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("delivery.json");
        write_atomically(&output, b"{}").unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["delivery.json"]);
        // A folder that does not exist: an error naming the file, nothing left anywhere.
        let missing = dir.path().join("no-such-folder/out.json");
        let error = write_atomically(&missing, b"{}").unwrap_err();
        assert!(error.to_string().contains("no-such-folder"), "{error}");
    }
}
