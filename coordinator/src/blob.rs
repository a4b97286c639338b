//! The blob store: sources and masters, content-addressed by SHA-256.
//!
//! Two implementations with the same semantics, checked by one conformance suite
//! (`coordinator/tests/conformance.rs`): [`DiskBlobStore`] (files on the coordinator's disk, written
//! under a temporary name and renamed into place) and [`MemoryBlobStore`]. A blob is written through a
//! [`BlobWriter`] that hashes what it is given and stores nothing unless the bytes hash to the digest
//! they were sent with; reading hashes again and fails at the end if the stored bytes changed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};

/// A SHA-256 digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Parses 64 hexadecimal characters.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || Error::BadDigest(text.to_owned());
        if text.len() != 64 || !text.is_ascii() {
            return Err(bad());
        }
        let mut digest = [0u8; 32];
        for (byte, pair) in digest.iter_mut().zip(text.as_bytes().chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Self(digest))
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// Incremental SHA-256, for checking a blob as it streams past.
#[derive(Debug, Clone, Default)]
pub struct DigestWriter(Sha256);

impl DigestWriter {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything added.
    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

/// Checks `actual` against `expected`.
pub fn verify(expected: &Digest, actual: &Digest) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::DigestMismatch {
            expected: expected.to_string(),
            actual: actual.to_string(),
        })
    }
}

/// A blob being written: bytes go in with [`write`](BlobWriter::write); [`commit`](BlobWriter::commit)
/// stores them only if they hash to the expected digest.
#[async_trait]
pub trait BlobWriter: Send {
    /// Appends bytes (taken by value: the in-memory store keeps the chunk itself, without a copy).
    async fn write(&mut self, bytes: Bytes) -> Result<()>;
    /// Verifies the digest and stores the blob; returns its size in bytes.
    async fn commit(self: Box<Self>) -> Result<u64>;
}

/// A blob being read, in chunks; the last item is an error if the stored bytes no longer hash to the
/// digest.
pub type BlobStream = futures::stream::BoxStream<'static, Result<Bytes>>;

/// The blob store.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// True when a blob with this digest is stored.
    async fn contains(&self, digest: &Digest) -> Result<bool>;
    /// Starts writing a blob that must hash to `expected`.
    async fn writer(&self, expected: Digest) -> Result<Box<dyn BlobWriter>>;
    /// Streams a stored blob; [`Error::BlobNotFound`] if there is none.
    async fn read(&self, digest: &Digest) -> Result<BlobStream>;
}

/// Stores `bytes` whole (for small blobs and tests); returns their digest.
pub async fn put_bytes(store: &dyn BlobStore, bytes: &[u8]) -> Result<Digest> {
    let digest = Digest::of(bytes);
    let mut writer = store.writer(digest).await?;
    writer.write(Bytes::copy_from_slice(bytes)).await?;
    writer.commit().await?;
    Ok(digest)
}

/// Reads a blob whole (for small blobs and tests), verified.
pub async fn get_bytes(store: &dyn BlobStore, digest: &Digest) -> Result<Vec<u8>> {
    let mut stream = store.read(digest).await?;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk?);
    }
    Ok(bytes)
}

/// Bytes read from disk per chunk when streaming a blob.
const READ_CHUNK_BYTES: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------------
// In memory.

/// The in-memory blob store.
#[derive(Debug, Clone, Default)]
pub struct MemoryBlobStore {
    blobs: Arc<Mutex<HashMap<Digest, StoredChunks>>>,
}

/// A blob in memory: the chunks as they arrived, shared (never copied) with every reader.
type StoredChunks = Arc<Vec<Bytes>>;

impl MemoryBlobStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<Digest, StoredChunks>>> {
        self.blobs
            .lock()
            .map_err(|_| Error::State("in-memory blob store lock poisoned".to_owned()))
    }

    /// Replaces a stored blob's bytes without changing its key: for tests of read verification.
    pub fn corrupt(&self, digest: &Digest, bytes: Bytes) -> Result<()> {
        self.lock()?.insert(*digest, Arc::new(vec![bytes]));
        Ok(())
    }
}

struct MemoryWriter {
    store: MemoryBlobStore,
    expected: Digest,
    chunks: Vec<Bytes>,
    hash: DigestWriter,
}

#[async_trait]
impl BlobWriter for MemoryWriter {
    async fn write(&mut self, bytes: Bytes) -> Result<()> {
        self.hash.update(&bytes);
        if !bytes.is_empty() {
            self.chunks.push(bytes);
        }
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<u64> {
        verify(&self.expected, &self.hash.finish())?;
        let size = self.chunks.iter().map(|c| c.len() as u64).sum();
        self.store
            .lock()?
            .insert(self.expected, Arc::new(self.chunks));
        Ok(size)
    }
}

/// Streams stored chunks (split to at most [`READ_CHUNK_BYTES`]), hashing them on the way and
/// failing at the end if they no longer hash to `digest`, like a read from disk.
fn verified_chunks(digest: Digest, chunks: StoredChunks) -> BlobStream {
    let pieces: Vec<Bytes> = chunks
        .iter()
        .flat_map(|chunk| {
            (0..chunk.len())
                .step_by(READ_CHUNK_BYTES)
                .map(|start| chunk.slice(start..(start + READ_CHUNK_BYTES).min(chunk.len())))
        })
        .collect();
    let state = Some((pieces.into_iter(), DigestWriter::default()));
    futures::stream::unfold(state, move |state| async move {
        let (mut pieces, mut hash) = state?;
        match pieces.next() {
            Some(piece) => {
                hash.update(&piece);
                Some((Ok(piece), Some((pieces, hash))))
            }
            None => verify(&digest, &hash.finish())
                .err()
                .map(|error| (Err(error), None)),
        }
    })
    .boxed()
}

#[async_trait]
impl BlobStore for MemoryBlobStore {
    async fn contains(&self, digest: &Digest) -> Result<bool> {
        Ok(self.lock()?.contains_key(digest))
    }

    async fn writer(&self, expected: Digest) -> Result<Box<dyn BlobWriter>> {
        Ok(Box::new(MemoryWriter {
            store: self.clone(),
            expected,
            chunks: Vec::new(),
            hash: DigestWriter::default(),
        }))
    }

    async fn read(&self, digest: &Digest) -> Result<BlobStream> {
        let bytes = self
            .lock()?
            .get(digest)
            .cloned()
            .ok_or_else(|| Error::BlobNotFound(digest.to_string()))?;
        Ok(verified_chunks(*digest, bytes))
    }
}

// ---------------------------------------------------------------------------------------------------
// On disk.

/// Blobs as files under a folder: `ROOT/sha256/ab/abcdef...` (the first two hex digits fan out the
/// folder). Written under `ROOT/tmp/` and renamed into place, so a blob file is always complete.
#[derive(Debug, Clone)]
pub struct DiskBlobStore {
    root: PathBuf,
}

impl DiskBlobStore {
    /// Opens (creating if needed) a store under `root`.
    pub fn open(root: &Path) -> Result<Self> {
        for folder in [root.join("sha256"), root.join("tmp")] {
            std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// Where the blob with `digest` lives.
    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        let hex = digest.to_string();
        self.root.join("sha256").join(&hex[..2]).join(hex)
    }
}

struct DiskWriter {
    final_path: PathBuf,
    temp: tempfile::TempPath,
    file: tokio::fs::File,
    expected: Digest,
    hash: DigestWriter,
    size: u64,
}

#[async_trait]
impl BlobWriter for DiskWriter {
    async fn write(&mut self, bytes: Bytes) -> Result<()> {
        self.hash.update(&bytes);
        self.size += bytes.len() as u64;
        self.file
            .write_all(&bytes)
            .await
            .map_err(|e| Error::io(&*self.temp, e))
    }

    async fn commit(self: Box<Self>) -> Result<u64> {
        let DiskWriter {
            final_path,
            temp,
            file,
            expected,
            hash,
            size,
        } = *self;
        verify(&expected, &hash.finish())?;
        file.sync_all().await.map_err(|e| Error::io(&*temp, e))?;
        drop(file);
        if let Some(folder) = final_path.parent() {
            tokio::fs::create_dir_all(folder)
                .await
                .map_err(|e| Error::io(folder, e))?;
        }
        temp.persist(&final_path)
            .map_err(|e| Error::io(&final_path, e.error))?;
        Ok(size)
    }
}

#[async_trait]
impl BlobStore for DiskBlobStore {
    async fn contains(&self, digest: &Digest) -> Result<bool> {
        tokio::fs::try_exists(self.path_of(digest))
            .await
            .map_err(|e| Error::io(self.path_of(digest), e))
    }

    async fn writer(&self, expected: Digest) -> Result<Box<dyn BlobWriter>> {
        let folder = self.root.join("tmp");
        let temp = tempfile::Builder::new()
            .prefix(".blob-")
            .suffix(".partial")
            .tempfile_in(&folder)
            .map_err(|e| Error::io(&folder, e))?
            .into_temp_path();
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&temp)
            .await
            .map_err(|e| Error::io(&*temp, e))?;
        Ok(Box::new(DiskWriter {
            final_path: self.path_of(&expected),
            temp,
            file,
            expected,
            hash: DigestWriter::default(),
            size: 0,
        }))
    }

    async fn read(&self, digest: &Digest) -> Result<BlobStream> {
        let path = self.path_of(digest);
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::BlobNotFound(digest.to_string()));
            }
            Err(error) => return Err(Error::io(&path, error)),
        };
        let state = Some((file, DigestWriter::default(), path, *digest));
        Ok(futures::stream::unfold(state, |state| async move {
            let (mut file, mut hash, path, digest) = state?;
            let mut buffer = vec![0u8; READ_CHUNK_BYTES];
            let mut filled = 0;
            while filled < buffer.len() {
                match file.read(&mut buffer[filled..]).await {
                    Ok(0) => break,
                    Ok(read) => filled += read,
                    Err(error) => return Some((Err(Error::io(&path, error)), None)),
                }
            }
            if filled == 0 {
                return verify(&digest, &hash.finish())
                    .err()
                    .map(|error| (Err(error), None));
            }
            buffer.truncate(filled);
            hash.update(&buffer);
            Some((Ok(Bytes::from(buffer)), Some((file, hash, path, digest))))
        })
        .boxed())
    }
}
