//! The coordinator's bounds against a client over real gRPC on loopback: an upload larger than the
//! cap is refused as it crosses it, leaving nothing on the blob store's disk, and an upload of the
//! cap itself is stored.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lathe_coordinator::auth::{Role, create_token};
use lathe_coordinator::blob::DiskBlobStore;
use lathe_coordinator::client::{Access, FarmClient};
use lathe_coordinator::queue::MemoryQueue;
use lathe_coordinator::state::MemoryStore;
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
    let state = Arc::new(MemoryStore::new());
    let (_, token) = create_token(state.as_ref(), "uploader", Role::Submit)
        .await
        .expect("token");
    let coordinator = Coordinator::new(
        Arc::new(MemoryQueue::new(
            settings.queue_settings(Duration::from_secs(30)),
        )),
        state,
        Arc::new(blobs),
        settings,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        lathe_coordinator::grpc::serve(
            &coordinator,
            listener,
            &Transport::InsecureLoopback,
            async {
                let _ = stopped.await;
            },
        )
        .await
    });
    let client = FarmClient::connect(&Access::insecure(&format!("http://{address}"), Some(token)))
        .await
        .expect("connect");

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

    let _ = stop.send(());
    server.await.expect("join").expect("serve");
}
