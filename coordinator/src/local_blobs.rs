//! The blob store of a farm that lives in one process on one machine (the embedded farm of
//! `lathe master`): its client, coordinator and workers share the files, so a source need not be
//! copied into the store, nor a master out of it.
//!
//! - A source is *adopted* where it lies ([`LocalBlobStore::adopt`]): the store remembers its path
//!   under the digest the client computed, and every read of it checks that digest again, so a
//!   file changed after it was submitted is refused, never mastered under its old digest.
//! - A worker in the same process takes a blob's file itself ([`LocalBlobStore::verified_file`])
//!   instead of streaming a copy into its scratch folder, and hands a master over by moving its
//!   file into the store ([`LocalBlobStore::adopt_by_moving`]).
//! - The client takes a master out by linking the store's file to its output name under a
//!   temporary name and renaming it into place ([`LocalBlobStore::deliver`]), the same atomic
//!   rename as a download.
//!
//! Blobs that arrive over gRPC (a delivery's plan, graph outputs) go to a [`DiskBlobStore`] as on
//! any farm. Nothing here is reachable over the network: adopting a path is a call in the process,
//! never a request, so a client of a farm cannot make its coordinator read a file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::blob::{
    BlobStore, BlobStream, BlobWriter, Digest, DiskBlobStore, StoredBlob, read_file, verify,
};
use crate::client::digest_file;
use crate::error::{Error, Result};

/// A [`DiskBlobStore`] under a scratch folder, plus files adopted where they lie.
#[derive(Debug)]
pub struct LocalBlobStore {
    disk: DiskBlobStore,
    /// Adopted files by the digest they had when adopted.
    adopted: Mutex<HashMap<Digest, PathBuf>>,
}

impl LocalBlobStore {
    /// Opens (creating if needed) the store's own files under `root`.
    pub fn open(root: &Path) -> Result<Self> {
        Ok(Self {
            disk: DiskBlobStore::open(root)?,
            adopted: Mutex::new(HashMap::new()),
        })
    }

    /// Makes the file at `path`, which hashed to `digest`, blob `digest`, without copying it
    /// (remembered by its absolute path, so that a link to it works from any folder). The file is
    /// only ever read; removing the blob forgets it and leaves the file.
    ///
    /// # Errors
    /// [`Error::Io`] if the current folder, which a relative `path` is taken from, is unknown.
    pub fn adopt(&self, digest: Digest, path: &Path) -> Result<()> {
        let path = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
        self.adopted_files().insert(digest, path);
        Ok(())
    }

    /// Makes the file at `path` (in the same file system as the store's folder) a blob by moving
    /// it into the store; returns its digest.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read or moved.
    pub async fn adopt_by_moving(&self, path: &Path) -> Result<Digest> {
        let digest = digest_file(path).await?;
        let stored = self.disk.path_of(&digest);
        if let Some(folder) = stored.parent() {
            tokio::fs::create_dir_all(folder)
                .await
                .map_err(|e| Error::io(folder, e))?;
        }
        tokio::fs::rename(path, &stored)
            .await
            .map_err(|e| Error::io(path, e))?;
        Ok(digest)
    }

    /// The file that holds blob `digest`, checked to hash to it now: an adopted file or the
    /// store's own.
    ///
    /// # Errors
    /// [`Error::BlobNotFound`] if there is no such blob, [`Error::DigestMismatch`] if its file
    /// changed since, [`Error::Io`] if it cannot be read.
    pub async fn verified_file(&self, digest: &Digest) -> Result<PathBuf> {
        let path = match self.adopted_path(digest) {
            Some(path) => path,
            None => {
                let path = self.disk.path_of(digest);
                if !tokio::fs::try_exists(&path)
                    .await
                    .map_err(|e| Error::io(&path, e))?
                {
                    return Err(Error::BlobNotFound(digest.to_string()));
                }
                path
            }
        };
        verify(digest, &digest_file(&path).await?)?;
        Ok(path)
    }

    /// Puts blob `digest` at `output`, atomically: its file (checked) is linked under a temporary
    /// name beside `output` and renamed into place, or copied there where a link cannot be made
    /// (another file system).
    ///
    /// # Errors
    /// As [`verified_file`](Self::verified_file), and [`Error::Io`] if `output` cannot be written.
    pub async fn deliver(&self, digest: &Digest, output: &Path) -> Result<u64> {
        let stored = self.verified_file(digest).await?;
        let output = output.to_path_buf();
        tokio::task::spawn_blocking(move || place(&stored, &output))
            .await
            .map_err(|e| Error::State(format!("delivering a blob: {e}")))?
    }

    fn adopted_files(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, PathBuf>> {
        // A panic while holding the lock leaves the map whole (inserts and removes only).
        self.adopted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn adopted_path(&self, digest: &Digest) -> Option<PathBuf> {
        self.adopted_files().get(digest).cloned()
    }

    /// An adopted blob's file, opened for reading; `None` if `digest` is not adopted.
    async fn open_adopted(&self, digest: &Digest) -> Result<Option<(std::fs::File, PathBuf)>> {
        let Some(path) = self.adopted_path(digest) else {
            return Ok(None);
        };
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Some((file, path)))
    }
}

/// Links (or copies) `stored` to a temporary name beside `output`, then renames it into place;
/// returns its size.
fn place(stored: &Path, output: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    // Already there (linked before): a rename of a link onto the same file would do nothing and
    // leave the temporary name behind.
    if let (Ok(from), Ok(to)) = (std::fs::metadata(stored), std::fs::metadata(output))
        && (from.dev(), from.ino()) == (to.dev(), to.ino())
    {
        return Ok(from.len());
    }
    let folder = output.parent().unwrap_or(Path::new("."));
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .make_in(folder, |path| {
            std::fs::hard_link(stored, path).or_else(|_| std::fs::copy(stored, path).map(|_| ()))
        })
        .map_err(|e| Error::io(folder, e))?;
    let size = std::fs::metadata(temp.path())
        .map_err(|e| Error::io(temp.path(), e))?
        .len();
    temp.persist(output)
        .map_err(|e| Error::io(output, e.error))?;
    Ok(size)
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn contains(&self, digest: &Digest) -> Result<bool> {
        if self.adopted_path(digest).is_some() {
            return Ok(true);
        }
        self.disk.contains(digest).await
    }

    async fn writer(&self, expected: Digest) -> Result<Box<dyn BlobWriter>> {
        self.disk.writer(expected).await
    }

    async fn read(&self, digest: &Digest) -> Result<BlobStream> {
        match self.open_adopted(digest).await? {
            Some((file, path)) => Ok(read_file(file, path, Some(*digest))),
            None => self.disk.read(digest).await,
        }
    }

    /// An adopted file is checked even here: it is the user's, and may have changed.
    async fn read_for_transfer(&self, digest: &Digest) -> Result<BlobStream> {
        match self.open_adopted(digest).await? {
            Some((file, path)) => Ok(read_file(file, path, Some(*digest))),
            None => self.disk.read_for_transfer(digest).await,
        }
    }

    async fn size(&self, digest: &Digest) -> Result<u64> {
        match self.adopted_path(digest) {
            Some(path) => Ok(tokio::fs::metadata(&path)
                .await
                .map_err(|e| Error::io(&path, e))?
                .len()),
            None => self.disk.size(digest).await,
        }
    }

    /// Forgets an adopted file (the file stays: it is the user's) or removes a stored one.
    async fn remove(&self, digest: &Digest) -> Result<bool> {
        if self.adopted_files().remove(digest).is_some() {
            return Ok(true);
        }
        self.disk.remove(digest).await
    }

    /// The store's own files only: adopted files are not the store's to sweep.
    async fn page(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<StoredBlob>> {
        self.disk.page(after, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::get_bytes;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_adopted_file_is_read_where_it_lies_and_refused_once_changed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalBlobStore::open(&dir.path().join("store")).expect("store");
        let source = dir.path().join("source.flac");
        std::fs::write(&source, b"the source's bytes").expect("write");
        let digest = digest_file(&source).await.expect("digest");
        store.adopt(digest, &source).expect("adopt");
        assert!(store.contains(&digest).await.expect("contains"));
        assert_eq!(
            get_bytes(&store, &digest).await.expect("read"),
            b"the source's bytes"
        );
        assert_eq!(store.verified_file(&digest).await.expect("file"), source);
        // Not copied into the store.
        assert!(store.page(None, 10).await.expect("page").is_empty());

        std::fs::write(&source, b"changed after it was submitted").expect("write");
        assert!(matches!(
            store.verified_file(&digest).await,
            Err(Error::DigestMismatch { .. })
        ));
        assert!(
            get_bytes(&store, &digest).await.is_err(),
            "a read checks it"
        );

        assert!(store.remove(&digest).await.expect("remove"));
        assert!(source.exists(), "forgetting a source leaves the file");
        assert!(!store.contains(&digest).await.expect("contains"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_moved_master_is_delivered_by_an_atomic_rename() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalBlobStore::open(&dir.path().join("store")).expect("store");
        let master = dir.path().join("task").join("master.flac");
        std::fs::create_dir_all(master.parent().expect("folder")).expect("folder");
        std::fs::write(&master, b"a master").expect("write");
        let digest = store.adopt_by_moving(&master).await.expect("moved in");
        assert!(!master.exists(), "moved, not copied");
        assert_eq!(store.page(None, 10).await.expect("page").len(), 1);

        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).expect("out");
        let output = out.join("track.flac");
        std::fs::write(&output, b"an older master").expect("write");
        for _ in 0..2 {
            // Twice: a second track with the same master gets it too.
            assert_eq!(store.deliver(&digest, &output).await.expect("deliver"), 8);
            assert_eq!(std::fs::read(&output).expect("read"), b"a master");
        }
        let left: Vec<_> = std::fs::read_dir(&out)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, ["track.flac"], "no temporary file left");
        assert!(matches!(
            store.deliver(&Digest::of(b"absent"), &output).await,
            Err(Error::BlobNotFound(_))
        ));
    }
}
