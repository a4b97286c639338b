//! One conformance suite for each infrastructure trait, run against both implementations: the work
//! queue (in process | NATS JetStream), the state store (in memory | etcd) and the blob store (in memory
//! | disk). The real servers are started by the harness on free loopback ports.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use lathe_coordinator::Error;
use lathe_coordinator::blob::{
    BlobStore, Digest, DiskBlobStore, MemoryBlobStore, get_bytes, put_bytes,
};
use lathe_coordinator::queue::{
    JetStreamQueue, MemoryQueue, QueueMessage, QueueSettings, StoredMessage, WorkQueue,
};
use lathe_coordinator::state::{
    EtcdStore, Expect, MAX_TRANSACTION_OPS, MemoryStore, Page, StateStore, Transaction,
};
use lathe_coordinator::testing::{EtcdServer, NatsServer};

const SETTINGS: QueueSettings = QueueSettings {
    ack_wait: Duration::from_secs(1),
    max_deliver: 3,
};

fn message(id: &str) -> QueueMessage {
    QueueMessage {
        id: id.to_owned(),
        payload: Bytes::from(format!("payload {id}")),
        headers: vec![("traceparent".to_owned(), format!("00-{id}"))],
    }
}

/// Waits until `queue` delivers something or `wait` passes; returns the payloads, acked.
async fn drain(queue: &dyn WorkQueue, wait: Duration) -> Vec<Bytes> {
    let mut payloads = Vec::new();
    for delivery in queue.pull(10, wait).await.expect("pull") {
        payloads.push(delivery.payload.clone());
        delivery.ack().await.expect("ack");
    }
    payloads
}

async fn queue_suite(queue: Arc<dyn WorkQueue>) {
    // Delivery in order, headers kept, ack removes.
    queue.publish(message("a")).await.expect("publish");
    queue.publish(message("b")).await.expect("publish");
    let deliveries = queue.pull(2, Duration::from_secs(2)).await.expect("pull");
    let payloads: Vec<_> = deliveries.iter().map(|d| d.payload.clone()).collect();
    assert_eq!(
        payloads,
        [Bytes::from("payload a"), Bytes::from("payload b")]
    );
    assert_eq!(deliveries[0].delivery, 1);
    assert!(
        deliveries[0]
            .headers
            .contains(&("traceparent".to_owned(), "00-a".to_owned())),
        "{:?}",
        deliveries[0].headers
    );
    for delivery in deliveries {
        delivery.ack().await.expect("ack");
    }
    assert_eq!(queue.depth().await.expect("depth"), 0);
    assert!(
        drain(queue.as_ref(), Duration::from_millis(300))
            .await
            .is_empty()
    );

    // Not acknowledged within ack_wait: redelivered, delivery count 2.
    queue.publish(message("c")).await.expect("publish");
    let first = queue.pull(1, Duration::from_secs(2)).await.expect("pull");
    assert_eq!(first.len(), 1);
    let again = queue.pull(1, Duration::from_secs(5)).await.expect("pull");
    assert_eq!(again.len(), 1, "redelivered after ack_wait");
    assert_eq!(again[0].payload, Bytes::from("payload c"));
    assert_eq!(again[0].delivery, 2);
    for delivery in again {
        delivery.ack().await.expect("ack");
    }
    drop(first);

    // In-progress acks hold the message past ack_wait.
    queue.publish(message("d")).await.expect("publish");
    let held = queue.pull(1, Duration::from_secs(2)).await.expect("pull");
    assert_eq!(held.len(), 1);
    let mut redelivered = 0;
    for _ in 0..6 {
        held[0].progress().await.expect("progress");
        redelivered += queue
            .pull(1, Duration::from_millis(400))
            .await
            .expect("pull")
            .len();
    }
    assert_eq!(redelivered, 0, "in-progress acks prevent redelivery");
    for delivery in held {
        delivery.ack().await.expect("ack");
    }

    // Nak with a delay: redelivered after it.
    queue.publish(message("e")).await.expect("publish");
    let naked = queue.pull(1, Duration::from_secs(2)).await.expect("pull");
    naked
        .into_iter()
        .next()
        .expect("one delivery")
        .nak(Some(Duration::from_millis(300)))
        .await
        .expect("nak");
    let back = queue.pull(1, Duration::from_secs(5)).await.expect("pull");
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].payload, Bytes::from("payload e"));
    assert_eq!(back[0].delivery, 2);
    for delivery in back {
        delivery.term().await.expect("term");
    }
    // Term: never again.
    assert!(
        drain(queue.as_ref(), Duration::from_millis(1500))
            .await
            .is_empty()
    );

    // Same id published twice while held: stored once.
    queue.publish(message("f")).await.expect("publish");
    queue.publish(message("f")).await.expect("publish");
    assert_eq!(
        drain(queue.as_ref(), Duration::from_secs(2)).await,
        [Bytes::from("payload f")]
    );
    assert!(
        drain(queue.as_ref(), Duration::from_millis(300))
            .await
            .is_empty()
    );

    // Past max_deliver: not delivered again, reported as exhausted.
    let mut exhausted = queue.exhausted().await.expect("exhausted stream");
    queue.publish(message("g")).await.expect("publish");
    for expected in 1..=SETTINGS.max_deliver {
        let delivery = queue
            .pull(1, Duration::from_secs(3))
            .await
            .expect("pull")
            .into_iter()
            .next()
            .expect("a delivery");
        assert_eq!(delivery.delivery, expected);
        delivery.nak(None).await.expect("nak");
    }
    // The queue notices when it would redeliver (JetStream: on its own timer).
    let mut noticed = None;
    for _ in 0..20 {
        assert!(
            queue
                .pull(1, Duration::from_millis(300))
                .await
                .expect("pull")
                .is_empty()
        );
        if let Ok(Some(payload)) =
            tokio::time::timeout(Duration::from_millis(200), exhausted.next()).await
        {
            noticed = Some(payload);
            break;
        }
    }
    assert_eq!(noticed, Some(Bytes::from("payload g")));
    assert_eq!(queue.depth().await.expect("depth"), 0);

    // The held messages are listed in publication order, a page at a time, and can be removed.
    for id in ["h1", "h2", "h3"] {
        queue.publish(message(id)).await.expect("publish");
    }
    let payloads =
        |held: &[StoredMessage]| -> Vec<Bytes> { held.iter().map(|m| m.payload.clone()).collect() };
    let held = queue.held(None, 10).await.expect("held");
    assert_eq!(
        payloads(&held),
        ["payload h1", "payload h2", "payload h3"].map(Bytes::from)
    );
    let next = queue.held(Some(held[0].sequence), 1).await.expect("held");
    assert_eq!(payloads(&next), [Bytes::from("payload h2")]);
    assert!(queue.remove(held[1].sequence).await.expect("remove"));
    assert!(!queue.remove(held[1].sequence).await.expect("remove again"));
    assert_eq!(
        payloads(&queue.held(None, 10).await.expect("held")),
        ["payload h1", "payload h3"].map(Bytes::from)
    );
    let mut drained = drain(queue.as_ref(), Duration::from_secs(2)).await;
    drained.extend(drain(queue.as_ref(), Duration::from_millis(500)).await);
    assert_eq!(drained.len(), 2);
    assert!(queue.held(None, 10).await.expect("held").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_queue_conforms() {
    queue_suite(Arc::new(MemoryQueue::new(SETTINGS))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_queue_conforms() {
    let Some(nats) = NatsServer::start() else {
        return;
    };
    let queue = JetStreamQueue::connect(&nats.url(), SETTINGS)
        .await
        .expect("connect to NATS");
    queue_suite(Arc::new(queue)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_queue_works_again_after_the_server_lost_its_data() {
    let Some(mut nats) = NatsServer::start() else {
        return;
    };
    let queue = JetStreamQueue::connect(&nats.url(), SETTINGS)
        .await
        .expect("connect to NATS");
    queue.publish(message("before")).await.expect("publish");
    nats.restart_fresh();
    // The stream and the consumer are gone; the first publish creates them again.
    let mut published = Err(lathe_coordinator::Error::Queue("not tried".to_owned()));
    for _ in 0..50 {
        published = queue.publish(message("after")).await;
        if published.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    published.expect("publish after the restart");
    let held: Vec<Bytes> = queue
        .held(None, 10)
        .await
        .expect("held")
        .into_iter()
        .map(|m| m.payload)
        .collect();
    assert_eq!(
        held,
        [Bytes::from("payload after")],
        "the message before the restart is lost"
    );
    assert_eq!(
        drain(&queue, Duration::from_secs(5)).await,
        [Bytes::from("payload after")]
    );
}

async fn state_suite(store: Arc<dyn StateStore>) {
    assert_eq!(store.get("jobs/x").await.expect("get"), None);
    let revision = store.put("jobs/x", b"one".to_vec()).await.expect("put");
    let stored = store.get("jobs/x").await.expect("get").expect("stored");
    assert_eq!(stored.value, b"one");
    assert!(stored.revision > 0 && stored.revision == revision);

    // Compare-and-swap.
    assert!(
        !store
            .swap("jobs/x", None, b"dup".to_vec())
            .await
            .expect("swap")
    );
    assert!(
        store
            .swap("jobs/y", None, b"new".to_vec())
            .await
            .expect("swap")
    );
    assert!(
        store
            .swap("jobs/x", Some(stored.revision), b"two".to_vec())
            .await
            .expect("swap")
    );
    assert!(
        !store
            .swap("jobs/x", Some(stored.revision), b"stale".to_vec())
            .await
            .expect("swap"),
        "a stale revision loses"
    );
    assert_eq!(
        store
            .get("jobs/x")
            .await
            .expect("get")
            .expect("stored")
            .value,
        b"two"
    );

    // Paginated range reads: sorted, nothing from other prefixes, each page bounded, the
    // continuation key picking up where the page ended.
    for index in (0..7).rev() {
        store
            .put(
                &format!("tasks/j/{index:07}"),
                format!("t{index}").into_bytes(),
            )
            .await
            .expect("put");
    }
    store
        .put("tasks/k/0000000", b"k0".to_vec())
        .await
        .expect("put");
    store.put("tasks/i", b"i".to_vec()).await.expect("put");
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store
            .page("tasks/j/", after.as_deref(), 3)
            .await
            .expect("page");
        assert!(page.entries.len() <= 3, "{page:?}");
        pages += 1;
        seen.extend(
            page.entries
                .into_iter()
                .map(|(key, stored)| (key, stored.value)),
        );
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<(String, Vec<u8>)> = (0..7)
        .map(|index| {
            (
                format!("tasks/j/{index:07}"),
                format!("t{index}").into_bytes(),
            )
        })
        .collect();
    assert_eq!(seen, expected);
    // A page that ends exactly at the range's end says so.
    let whole = store.page("tasks/j/", None, 7).await.expect("page");
    assert_eq!((whole.entries.len(), whole.next), (7, None));
    // Asking for more than a page may hold gets at most MAX_PAGE.
    let capped = store
        .page("tasks/j/", None, usize::MAX)
        .await
        .expect("page");
    assert_eq!(capped.entries.len(), 7);
    let empty = store.page("tasks/none/", None, 10).await.expect("page");
    assert_eq!(empty, Page::default());
    // A window of the range: only the keys before `before`, paged the same way; a window that
    // ends past the prefix stops at the prefix's end.
    let window = store
        .page_range(
            "tasks/j/",
            Some("tasks/j/0000001"),
            Some("tasks/j/0000005"),
            2,
        )
        .await
        .expect("window");
    let keys: Vec<&str> = window.entries.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, ["tasks/j/0000002", "tasks/j/0000003"]);
    assert_eq!(window.next.as_deref(), Some("tasks/j/0000003"));
    let window = store
        .page_range(
            "tasks/j/",
            Some("tasks/j/0000003"),
            Some("tasks/j/0000005"),
            2,
        )
        .await
        .expect("window");
    assert_eq!((window.entries.len(), window.next), (1, None));
    let window = store
        .page_range("tasks/j/", Some("tasks/j/0000005"), Some("tasks/k/9"), 10)
        .await
        .expect("window");
    let keys: Vec<&str> = window.entries.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, ["tasks/j/0000006"]);
    let window = store
        .page_range("tasks/j/", None, Some("tasks/a"), 10)
        .await
        .expect("window");
    assert_eq!(window, Page::default());
    // Several keys in one read, in the asked order, absent ones as None.
    let many = store
        .get_many(&[
            "tasks/j/0000004".to_owned(),
            "tasks/none".to_owned(),
            "tasks/k/0000000".to_owned(),
        ])
        .await
        .expect("get many");
    let values: Vec<Option<Vec<u8>>> = many
        .into_iter()
        .map(|stored| stored.map(|stored| stored.value))
        .collect();
    assert_eq!(values, [Some(b"t4".to_vec()), None, Some(b"k0".to_vec())]);
    let keys: Vec<String> = (0..300).map(|n| format!("tasks/j/{n:07}")).collect();
    let many = store
        .get_many(&keys)
        .await
        .expect("more than one transaction");
    assert_eq!(many.len(), 300);
    assert_eq!(many.iter().filter(|stored| stored.is_some()).count(), 7);

    // Transactions: every check holds and every write lands, or nothing changes.
    let t0 = store
        .get("tasks/j/0000000")
        .await
        .expect("get")
        .expect("stored");
    let stale = Transaction::new()
        .check("tasks/j/0000000", Expect::Revision(t0.revision))
        .check("counts/j", Expect::Revision(1))
        .put("tasks/j/0000000", b"moved".to_vec())
        .delete("tasks/j/0000001");
    assert!(
        !store.commit(&stale).await.expect("commit"),
        "a failed check writes nothing"
    );
    assert_eq!(
        store
            .get("tasks/j/0000000")
            .await
            .expect("get")
            .expect("stored")
            .value,
        b"t0"
    );
    assert!(store.get("tasks/j/0000001").await.expect("get").is_some());
    let fresh = Transaction::new()
        .check("tasks/j/0000000", Expect::Revision(t0.revision))
        .check("counts/j", Expect::Absent)
        .put("tasks/j/0000000", b"moved".to_vec())
        .put("counts/j", b"c".to_vec())
        .delete("tasks/j/0000001");
    assert!(store.commit(&fresh).await.expect("commit"));
    let moved = store
        .get("tasks/j/0000000")
        .await
        .expect("get")
        .expect("stored");
    let counts = store.get("counts/j").await.expect("get").expect("stored");
    assert_eq!(
        (moved.value.as_slice(), counts.value.as_slice()),
        (&b"moved"[..], &b"c"[..])
    );
    assert_eq!(
        moved.revision, counts.revision,
        "one transaction, one revision"
    );
    assert!(store.get("tasks/j/0000001").await.expect("get").is_none());
    let oversized = (0..=MAX_TRANSACTION_OPS).fold(Transaction::new(), |t, index| {
        t.put(format!("big/{index}"), Vec::new())
    });
    assert!(matches!(
        store.commit(&oversized).await,
        Err(Error::State(_))
    ));
    assert!(store.get("big/0").await.expect("get").is_none());

    // A prefix removed at once, and nothing beside it.
    store
        .delete_prefix("tasks/j/")
        .await
        .expect("delete prefix");
    assert!(
        store
            .page("tasks/j/", None, 10)
            .await
            .expect("page")
            .entries
            .is_empty()
    );
    assert!(store.get("tasks/k/0000000").await.expect("get").is_some());
    assert!(store.get("tasks/i").await.expect("get").is_some());
    store.delete("tasks/k/0000000").await.expect("delete");
    assert!(store.get("tasks/k/0000000").await.expect("get").is_none());

    // Leases: kept alive, the key stays; revoked, it goes.
    let lease = store
        .grant_lease(Duration::from_secs(2))
        .await
        .expect("lease");
    store
        .put_leased("workers/w1", b"w1".to_vec(), lease)
        .await
        .expect("put leased");
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        store.keep_alive(lease).await.expect("keep alive");
    }
    assert!(
        store.get("workers/w1").await.expect("get").is_some(),
        "kept alive"
    );
    store.revoke(lease).await.expect("revoke");
    assert!(
        store.get("workers/w1").await.expect("get").is_none(),
        "revoked"
    );
    assert!(matches!(
        store.keep_alive(lease).await,
        Err(Error::LeaseExpired { .. })
    ));

    // A lease nobody refreshes runs out and takes its keys.
    let lease = store
        .grant_lease(Duration::from_secs(2))
        .await
        .expect("lease");
    store
        .put_leased("workers/w2", b"w2".to_vec(), lease)
        .await
        .expect("put leased");
    let mut gone = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if store.get("workers/w2").await.expect("get").is_none() {
            gone = true;
            break;
        }
    }
    assert!(gone, "an unrefreshed lease expires");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    state_suite(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_conforms() {
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let store = EtcdStore::connect(&etcd.url(), "/conformance/")
        .await
        .expect("connect to etcd");
    state_suite(Arc::new(store)).await;
}

/// A deterministic 2.5 MiB test blob (several read chunks).
fn test_blob() -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..(5 << 19))
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

async fn blob_suite(store: Arc<dyn BlobStore>, corrupt: impl Fn(&Digest)) {
    let bytes = test_blob();
    let digest = Digest::of(&bytes);
    assert!(!store.contains(&digest).await.expect("contains"));
    assert_eq!(
        put_bytes(store.as_ref(), &bytes).await.expect("put"),
        digest
    );
    assert!(store.contains(&digest).await.expect("contains"));
    assert_eq!(
        get_bytes(store.as_ref(), &digest).await.expect("get"),
        bytes
    );
    // Digests print and parse as 64 hex digits.
    assert_eq!(Digest::parse(&digest.to_string()).expect("parse"), digest);

    // Bytes that do not match the digest they came with are not stored.
    let claimed = Digest::of(b"something else");
    let mut writer = store.writer(claimed).await.expect("writer");
    writer
        .write(bytes::Bytes::copy_from_slice(&bytes[..1000]))
        .await
        .expect("write");
    assert!(matches!(
        writer.commit().await,
        Err(Error::DigestMismatch { .. })
    ));
    assert!(!store.contains(&claimed).await.expect("contains"));

    assert!(matches!(
        store.read(&claimed).await.map(|_| ()),
        Err(Error::BlobNotFound(_))
    ));
    // Sizes: what a worker's scratch folder must hold.
    assert_eq!(store.size(&digest).await.expect("size"), bytes.len() as u64);
    assert!(matches!(
        store.size(&claimed).await,
        Err(Error::BlobNotFound(_))
    ));

    // Pages list the stored blobs in digest order, each with its age.
    let mut small = Vec::new();
    for index in 0..5 {
        small.push(
            put_bytes(store.as_ref(), format!("small {index}").as_bytes())
                .await
                .expect("put"),
        );
    }
    let mut all = small.clone();
    all.push(digest);
    all.sort();
    let first = store.page(None, 4).await.expect("page");
    let listed: Vec<Digest> = first.iter().map(|blob| blob.digest).collect();
    assert_eq!(listed, all[..4]);
    assert!(first.iter().all(|blob| blob.age < Duration::from_secs(600)));
    let rest = store.page(Some(&all[3]), 4).await.expect("page");
    let listed: Vec<Digest> = rest.iter().map(|blob| blob.digest).collect();
    assert_eq!(listed, all[4..]);

    // Removal: once, then it is gone.
    assert!(store.remove(&small[0]).await.expect("remove"));
    assert!(!store.remove(&small[0]).await.expect("remove again"));
    assert!(!store.contains(&small[0]).await.expect("contains"));
    assert_eq!(store.page(None, 100).await.expect("page").len(), 5);

    // Stored bytes that changed are refused on the way out.
    corrupt(&digest);
    assert!(matches!(
        get_bytes(store.as_ref(), &digest).await,
        Err(Error::DigestMismatch { .. })
    ));
}

#[tokio::test]
async fn memory_blob_store_conforms() {
    let store = MemoryBlobStore::new();
    let handle = store.clone();
    blob_suite(Arc::new(store), move |digest| {
        handle
            .corrupt(digest, Bytes::from_static(b"flipped"))
            .expect("corrupt");
    })
    .await;
}

#[tokio::test]
async fn disk_blob_store_conforms() {
    let folder = tempfile::tempdir().expect("temp dir");
    let store = DiskBlobStore::open(folder.path()).expect("open");
    let handle = store.clone();
    blob_suite(Arc::new(store), move |digest| {
        let path = handle.path_of(digest);
        let mut bytes = std::fs::read(&path).expect("read blob");
        bytes[1234] ^= 0x40;
        std::fs::write(&path, bytes).expect("rewrite blob");
    })
    .await;
    // Nothing is left under the temporary folder.
    assert_eq!(
        std::fs::read_dir(folder.path().join("tmp"))
            .expect("tmp folder")
            .count(),
        0
    );
    // A partial upload left by a process that stopped is swept when the store opens again; the
    // stored blobs stay.
    let partial = folder.path().join("tmp").join(".blob-x.partial");
    std::fs::write(&partial, b"half an upload").expect("partial");
    let reopened = DiskBlobStore::open(folder.path()).expect("reopen");
    assert!(!partial.exists());
    assert_eq!(reopened.page(None, 100).await.expect("page").len(), 5);
}
