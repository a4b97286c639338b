//! The output folder check of `lathe master`: masters never land among their sources.

use std::path::{Path, PathBuf};

use crate::Usage;

/// Refuses an output folder that could mix masters with sources: one inside (or equal to) an input
/// folder (a later run would pick the masters up as sources), or the folder a source file is in,
/// both the folder it is named in and, through a symbolic link, the one it really is in.
pub(crate) fn check_output_folder(
    out: &Path,
    input_folders: &[PathBuf],
    sources: &[PathBuf],
) -> Result<(), Usage> {
    let out = resolve(out).map_err(|e| Usage(format!("{}: {e}", out.display())))?;
    let refuse = |folder: &Path| {
        Usage(format!(
            "the output folder {} is an input folder (or inside one: {}); choose another",
            out.display(),
            folder.display()
        ))
    };
    for folder in input_folders
        .iter()
        .filter(|i| i.is_dir())
        .filter_map(|i| canonical_folder(i))
    {
        if out.starts_with(&folder) {
            return Err(refuse(&folder));
        }
    }
    for folder in source_folders(sources)
        .iter()
        .filter_map(|f| canonical_folder(f))
    {
        if out == folder {
            return Err(refuse(&folder));
        }
    }
    Ok(())
}

/// The folders `sources` are in, each once and sorted: the folder a source is named in and, when it is
/// a symbolic link, the folder of the file it links to.
pub(crate) fn source_folders(sources: &[PathBuf]) -> Vec<PathBuf> {
    let mut folders: Vec<PathBuf> = sources
        .iter()
        .flat_map(|s| [Some(s.clone()), s.canonicalize().ok()])
        .flatten()
        .filter_map(|s| s.parent().map(Path::to_path_buf))
        .collect();
    folders.sort();
    folders.dedup();
    folders
}

/// The canonical form of `folder` (`""`, a bare file name's folder, is the current folder).
fn canonical_folder(folder: &Path) -> Option<PathBuf> {
    let folder = if folder.as_os_str().is_empty() {
        Path::new(".")
    } else {
        folder
    };
    folder.canonicalize().ok()
}

/// The absolute, symlink-free form of `path`, which need not exist yet (its nearest existing ancestor is
/// canonicalised and the rest appended).
fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    if path.exists() {
        return path.canonicalize();
    }
    let absolute = std::path::absolute(path)?;
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        let Some(parent) = existing.parent() else {
            break;
        };
        rest.push(
            existing
                .file_name()
                .map(ToOwned::to_owned)
                .unwrap_or_default(),
        );
        existing = parent;
    }
    let mut resolved = existing.canonicalize()?;
    resolved.extend(rest.iter().rev());
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linked_source_file_refuses_its_real_folder() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let real = dir.path().join("a");
        let named = dir.path().join("b");
        std::fs::create_dir_all(&real).expect("folder a");
        std::fs::create_dir_all(&named).expect("folder b");
        std::fs::write(real.join("track.wav"), b"").expect("a source");
        std::os::unix::fs::symlink(real.join("track.wav"), named.join("track.wav"))
            .expect("a link");
        let sources = [named.join("track.wav")];
        let refused = check_output_folder(&real, &[], &sources).expect_err("a's folder refused");
        assert!(
            refused.0.contains("is an input folder"),
            "unexpected message: {}",
            refused.0
        );
        assert!(check_output_folder(&named, &[], &sources).is_err());
        assert!(check_output_folder(&dir.path().join("out"), &[], &sources).is_ok());
        let folders = source_folders(&sources);
        assert_eq!(folders.len(), 2, "{folders:?}");
        assert!(folders.contains(&named));
        assert!(folders.contains(&real.canonicalize().expect("a")));
    }
}
