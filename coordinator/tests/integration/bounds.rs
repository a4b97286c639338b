//! The coordinator's bounds against a client over real gRPC on loopback: an upload larger than the
//! cap is refused as it crosses it, leaving nothing on the blob store's disk, and an upload of the
//! cap itself is stored; a unary call that hangs is ended at the call deadline, an upload that
//! stalls at the idle timeout, and an upload that flows steadily for longer than both is not cut.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lathe_coordinator::auth::{Role, create_token};
use lathe_coordinator::blob::{
    BlobStore, BlobStream, BlobWriter, Digest, DiskBlobStore, MemoryBlobStore, StoredBlob,
};
use lathe_coordinator::client::{Access, FarmClient};
use lathe_coordinator::queue::MemoryQueue;
use lathe_coordinator::state::MemoryStore;
use lathe_coordinator::testing::LoopbackServer;
use lathe_coordinator::tls::Transport;
use lathe_coordinator::{Coordinator, CoordinatorSettings};

/// The cap the test sets: three 1 MiB chunks.
const CAP: u64 = 3 << 20;

/// Bytes in every file under `folder`.
fn bytes_under(folder: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(folder)
        .expect("read the blob store")
        .flatten()
    {
        let path = entry.path();
        total += if path.is_dir() {
            bytes_under(&path)
        } else {
            entry.metadata().map_or(0, |m| m.len())
        };
    }
    total
}

/// Deterministic bytes that do not compress or repeat.
fn noise(length: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_past_the_cap_is_refused_and_leaves_nothing_on_disk() {
    let folder = tempfile::tempdir().expect("temp dir");
    let blobs = DiskBlobStore::open(folder.path()).expect("blob store");
    let settings = CoordinatorSettings {
        max_upload_bytes: CAP,
        ..CoordinatorSettings::default()
    };
    let (client, server) = served(settings, Arc::new(blobs), Role::Submit).await;

    // A watcher reads the store's disk use while the upload runs.
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (watching, root) = (Arc::clone(&watching), folder.path().to_path_buf());
        std::thread::spawn(move || {
            let mut most = 0;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(bytes_under(&root));
                std::thread::sleep(Duration::from_millis(1));
            }
            most
        })
    };
    let error = client
        .upload_bytes(noise(8 << 20, 7).into())
        .await
        .expect_err("an upload of 8 MiB against a cap of 3 MiB");
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let most = watcher.join().expect("watcher");
    assert!(
        most <= CAP + (1 << 20),
        "{most} bytes on disk during the upload: more than the cap plus one chunk"
    );
    let message = error.to_string();
    assert!(
        message.contains(&format!("cap of {CAP} bytes")),
        "{message}"
    );
    assert!(
        !error.is_retryable(),
        "a refusal, not a failure to retry: {message}"
    );
    assert_eq!(
        bytes_under(folder.path()),
        0,
        "the refused upload's partial blob is removed"
    );

    // The cap itself is allowed, and stored.
    let at_cap = client
        .upload_bytes(noise(CAP as usize, 11).into())
        .await
        .expect("an upload of exactly the cap");
    assert_eq!(bytes_under(folder.path()), CAP, "{at_cap} stored");

    server.stop().await.expect("serve");
}

/// A blob the [`StallingBlobs`] store never answers about.
fn stalling_digest() -> Digest {
    Digest::of(b"a blob the store never answers about")
}

/// The in-memory blob store, except that asking whether it holds [`stalling_digest`] never
/// returns: a handler that hangs on its store.
struct StallingBlobs(MemoryBlobStore);

#[async_trait::async_trait]
impl BlobStore for StallingBlobs {
    async fn contains(&self, digest: &Digest) -> lathe_coordinator::Result<bool> {
        if *digest == stalling_digest() {
            std::future::pending::<()>().await;
        }
        self.0.contains(digest).await
    }

    async fn writer(&self, expected: Digest) -> lathe_coordinator::Result<Box<dyn BlobWriter>> {
        self.0.writer(expected).await
    }

    async fn read(&self, digest: &Digest) -> lathe_coordinator::Result<BlobStream> {
        self.0.read(digest).await
    }

    async fn read_for_transfer(&self, digest: &Digest) -> lathe_coordinator::Result<BlobStream> {
        self.0.read_for_transfer(digest).await
    }

    async fn size(&self, digest: &Digest) -> lathe_coordinator::Result<u64> {
        self.0.size(digest).await
    }

    async fn remove(&self, digest: &Digest) -> lathe_coordinator::Result<bool> {
        self.0.remove(digest).await
    }

    async fn page(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> lathe_coordinator::Result<Vec<StoredBlob>> {
        self.0.page(after, limit).await
    }
}

/// The deadlines the tests set: small, so that they take a second.
const CALL_TIMEOUT: Duration = Duration::from_millis(300);
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// A coordinator with `settings` on `blobs`, serving on loopback; returns a client with a token
/// of `role`, and the server.
async fn served(
    settings: CoordinatorSettings,
    blobs: Arc<dyn BlobStore>,
    role: Role,
) -> (FarmClient, LoopbackServer) {
    let state = Arc::new(MemoryStore::new());
    let (_, token) = create_token(state.as_ref(), "caller", role)
        .await
        .expect("token");
    let coordinator = Coordinator::new(
        Arc::new(MemoryQueue::new(
            settings.queue_settings(Duration::from_secs(30)),
        )),
        state,
        blobs,
        settings,
    );
    let server = LoopbackServer::start(&coordinator, Transport::InsecureLoopback).await;
    let client = FarmClient::connect(&Access::insecure(server.url(), Some(token)))
        .await
        .expect("connect");
    (client, server)
}

/// A coordinator on [`StallingBlobs`] with the tests' deadlines, serving on loopback; returns a
/// client with an admin token and the server.
async fn deadlined_server() -> (FarmClient, LoopbackServer) {
    let settings = CoordinatorSettings {
        call_timeout: CALL_TIMEOUT,
        stream_idle_timeout: STREAM_IDLE_TIMEOUT,
        ..CoordinatorSettings::default()
    };
    served(
        settings,
        Arc::new(StallingBlobs(MemoryBlobStore::new())),
        Role::Admin,
    )
    .await
}

/// Fails the test instead of hanging it when a call is not ended.
const NOT_ENDED: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_that_hangs_is_ended_at_the_call_deadline() {
    let (client, server) = deadlined_server().await;
    let mut jobs = client.jobs.clone();
    let call = jobs.missing_blobs(lathe_proto::v1::MissingBlobsRequest {
        digests: vec![stalling_digest().to_string()],
    });
    let status = tokio::time::timeout(NOT_ENDED, call)
        .await
        .expect("the server ends the call")
        .expect_err("a call past its deadline");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("/lathe.v1.JobApi/MissingBlobs"),
        "{status:?}"
    );
    // The server goes on serving.
    client
        .jobs
        .clone()
        .missing_blobs(lathe_proto::v1::MissingBlobsRequest::default())
        .await
        .expect("a call that answers");
    drop(server);
}

/// `chunks` chunks of 4 KiB making one blob, the first naming its digest, each sent `every`
/// after the one before; then the stream ends, or stalls for ever when `stall`.
fn paced_upload(
    chunks: usize,
    every: Duration,
    stall: bool,
) -> impl futures::Stream<Item = lathe_proto::v1::BlobChunk> + Send + 'static {
    use futures::StreamExt as _;
    let bytes = noise(chunks * 4096, 3);
    let digest = Digest::of(&bytes).to_string();
    let pieces: Vec<lathe_proto::v1::BlobChunk> = bytes
        .chunks(4096)
        .enumerate()
        .map(|(index, data)| lathe_proto::v1::BlobChunk {
            digest: if index == 0 {
                digest.clone()
            } else {
                String::new()
            },
            data: data.to_vec().into(),
        })
        .collect();
    let paced = futures::stream::iter(pieces).then(move |chunk| async move {
        tokio::time::sleep(every).await;
        chunk
    });
    let tail = if stall {
        futures::stream::pending().boxed()
    } else {
        futures::stream::empty().boxed()
    };
    paced.chain(tail)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_flows_steadily_is_not_cut_and_one_that_stalls_is_ended() {
    let (client, server) = deadlined_server().await;
    // 15 chunks 100 ms apart: 1.5 s, past the call deadline and the idle timeout both, but
    // never idle for long.
    let steady = tokio::time::timeout(
        NOT_ENDED,
        client
            .jobs
            .clone()
            .put_blob(paced_upload(15, Duration::from_millis(100), false)),
    )
    .await
    .expect("the upload ends")
    .expect("a steady upload is stored");
    assert_eq!(steady.get_ref().size_bytes, 15 * 4096);

    // Two chunks, then nothing: ended once it has been idle for the idle timeout.
    let stalled = tokio::time::timeout(
        NOT_ENDED,
        client
            .jobs
            .clone()
            .put_blob(paced_upload(2, Duration::from_millis(10), true)),
    )
    .await
    .expect("the server ends the upload")
    .expect_err("a stalled upload");
    assert_eq!(stalled.code(), tonic::Code::DeadlineExceeded, "{stalled:?}");
    assert!(stalled.message().contains("stalled"), "{stalled:?}");
    drop(server);
}
