//! Attacks on the stores as the farm deploys them: nats-server with TLS and the users and
//! permissions of `deploy/nats-auth.conf`, etcd with TLS and the users `setup_etcd_users` makes.
//! Each test shows what a client without credentials, or with the workers' credentials, cannot do,
//! and that the farm's own code works with exactly those permissions.

use std::time::Duration;

use bytes::Bytes;
use lathe_coordinator::etcd_users::{EtcdUsers, setup_etcd_users};
use lathe_coordinator::queue::{
    CONSUMER_NAME, JetStreamQueue, QueueMessage, QueueSettings, STREAM_NAME, TASK_SUBJECT,
    WorkQueue,
};
use lathe_coordinator::state::{EtcdStore, StateStore};
use lathe_coordinator::store_access::{Credentials, EtcdAccess, NatsAccess, TlsFiles};
use lathe_coordinator::testing::{EtcdSecurity, EtcdServer, NatsSecurity, NatsServer, TestPki};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const SETTINGS: QueueSettings = QueueSettings {
    ack_wait: Duration::from_secs(5),
    max_deliver: 3,
};

const COORDINATOR_PASSWORD: &str = "coordinator-secret";
const WORKER_PASSWORD: &str = "worker-secret";

/// How long a refused JetStream request is waited for: the server drops a request the user may
/// not publish (and says so), so the request only times out.
const REFUSED_WAIT: Duration = Duration::from_millis(500);

fn task(id: &str) -> QueueMessage {
    QueueMessage {
        id: id.to_owned(),
        payload: Bytes::from(format!("task {id}")),
        headers: Vec::new(),
    }
}

fn nats_access(pki: &TestPki, user: &str, password: &str) -> NatsAccess {
    NatsAccess {
        tls: pki.tls(true),
        credentials: Some(Credentials::new(user, password)),
    }
}

/// A raw NATS client with `access`, whose server errors (permission violations) arrive on the
/// returned channel.
async fn raw_client(
    url: &str,
    access: &NatsAccess,
) -> Result<
    (
        async_nats::Client,
        tokio::sync::mpsc::UnboundedReceiver<String>,
    ),
    async_nats::ConnectError,
> {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let mut options = async_nats::ConnectOptions::new()
        .require_tls(access.tls.enabled())
        .event_callback(move |event| {
            let sender = sender.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    let _ = sender.send(error.to_string());
                }
            }
        });
    if let Some(ca) = &access.tls.ca {
        options = options.add_root_certificates(ca.clone());
    }
    if let Some(identity) = &access.tls.identity {
        options = options.add_client_certificate(identity.cert.clone(), identity.key.clone());
    }
    if let Some(credentials) = &access.credentials {
        options =
            options.user_and_password(credentials.user.clone(), credentials.password().into());
    }
    options = options
        .connection_timeout(Duration::from_secs(3))
        .request_timeout(Some(REFUSED_WAIT));
    options.connect(url).await.map(|client| (client, receiver))
}

/// Waits for the server's permission violation naming `subject`.
async fn violation(errors: &mut tokio::sync::mpsc::UnboundedReceiver<String>, subject: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let error = tokio::time::timeout_at(deadline, errors.recv())
            .await
            .unwrap_or_else(|_| panic!("no permission violation for {subject}"))
            .expect("event channel open");
        if error.to_lowercase().contains("permissions violation") && error.contains(subject) {
            return;
        }
    }
}

/// The payloads the task stream holds, read by the coordinator.
async fn held(queue: &JetStreamQueue) -> Vec<Bytes> {
    queue
        .held(None, 100)
        .await
        .expect("held")
        .into_iter()
        .map(|message| message.payload)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_refuses_plaintext_and_clients_without_credentials() {
    let pki = TestPki::new();
    let Some(nats) = NatsServer::start_secure(NatsSecurity::new(
        &pki,
        COORDINATOR_PASSWORD,
        WORKER_PASSWORD,
    )) else {
        return;
    };
    let url = nats.url();
    let coordinator = JetStreamQueue::connect_with(
        &url,
        SETTINGS,
        &nats_access(&pki, "coordinator", COORDINATOR_PASSWORD),
    )
    .await
    .expect("the coordinator connects with its user");
    coordinator.publish(task("real")).await.expect("publish");

    // Plaintext: the server announces that TLS is required and answers nothing said in clear,
    // not even a PING, let alone a publication.
    let stream = tokio::net::TcpStream::connect(url.trim_start_matches("nats://"))
        .await
        .expect("TCP connection");
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut info = String::new();
    reader.read_line(&mut info).await.expect("INFO line");
    assert!(info.contains("\"tls_required\":true"), "{info}");
    let plaintext = format!(
        "CONNECT {{\"verbose\":false,\"user\":\"coordinator\",\"pass\":\"{COORDINATOR_PASSWORD}\"}}\r\n\
         PUB {TASK_SUBJECT} 5\r\nforge\r\nPING\r\n"
    );
    let _ = writer.write_all(plaintext.as_bytes()).await;
    let mut answer = String::new();
    let read = tokio::time::timeout(Duration::from_secs(3), reader.read_line(&mut answer)).await;
    assert!(
        !matches!(read, Ok(Ok(n)) if n > 0 && answer.starts_with("PONG")),
        "the server answered a plaintext client: {answer:?}"
    );

    // TLS without the farm's CA: the client does not trust the server (and sends nothing).
    let untrusted = NatsAccess {
        tls: TlsFiles {
            ca: None,
            identity: Some(pki.client()),
        },
        credentials: Some(Credentials::new("coordinator", COORDINATOR_PASSWORD)),
    };
    assert!(raw_client(&url, &untrusted).await.is_err());
    // TLS without a client certificate: the server requires one.
    let no_certificate = NatsAccess {
        tls: pki.tls(false),
        credentials: Some(Credentials::new("coordinator", COORDINATOR_PASSWORD)),
    };
    assert!(raw_client(&url, &no_certificate).await.is_err());
    // TLS, a certificate, no user; a wrong password; the worker's password for the coordinator.
    let anonymous = NatsAccess {
        tls: pki.tls(true),
        credentials: None,
    };
    let error = raw_client(&url, &anonymous).await.expect_err("no user");
    assert!(
        error.to_string().to_lowercase().contains("authorization"),
        "{error}"
    );
    for (user, password) in [("coordinator", "guess"), ("coordinator", WORKER_PASSWORD)] {
        let error = raw_client(&url, &nats_access(&pki, user, password))
            .await
            .expect_err("a wrong password");
        assert!(
            error.to_string().to_lowercase().contains("authorization"),
            "{error}"
        );
    }
    // The farm's own queue code with the same settings but no credentials is refused too.
    let refused = JetStreamQueue::connect_with(
        &url,
        SETTINGS,
        &NatsAccess {
            tls: pki.tls(true),
            credentials: None,
        },
    )
    .await;
    assert!(refused.is_err());
    // Nothing got into the stream but the coordinator's task.
    assert_eq!(held(&coordinator).await, [Bytes::from("task real")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_user_pulls_and_acknowledges_but_cannot_publish_or_change_the_stream() {
    let pki = TestPki::new();
    let Some(nats) = NatsServer::start_secure(NatsSecurity::new(
        &pki,
        COORDINATOR_PASSWORD,
        WORKER_PASSWORD,
    )) else {
        return;
    };
    let url = nats.url();
    let worker_access = nats_access(&pki, "worker", WORKER_PASSWORD);
    let coordinator = JetStreamQueue::connect_with(
        &url,
        SETTINGS,
        &nats_access(&pki, "coordinator", COORDINATOR_PASSWORD),
    )
    .await
    .expect("the coordinator connects");
    // What the farm's worker does, with the worker's user: open, pull, mark in progress, ack; nak
    // and pull again; term.
    let worker = JetStreamQueue::connect_with(&url, SETTINGS, &worker_access)
        .await
        .expect("the worker opens the stream the coordinator made");
    coordinator.publish(task("one")).await.expect("publish");
    coordinator.publish(task("two")).await.expect("publish");
    let deliveries = worker.pull(1, Duration::from_secs(3)).await.expect("pull");
    assert_eq!(deliveries.len(), 1);
    let first = deliveries.into_iter().next().expect("a delivery");
    assert_eq!(first.payload, Bytes::from("task one"));
    first.progress().await.expect("in progress");
    first.ack().await.expect("ack (confirmed by the server)");
    let second = worker.pull(1, Duration::from_secs(3)).await.expect("pull");
    assert_eq!(second.len(), 1);
    for delivery in second {
        delivery.nak(None).await.expect("nak");
    }
    let again = worker.pull(1, Duration::from_secs(3)).await.expect("pull");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery, 2, "the nak'd task came back");
    for delivery in again {
        delivery.term().await.expect("term");
    }
    coordinator.publish(task("three")).await.expect("publish");
    // A term is not confirmed: wait for the server to drop the message.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while held(&coordinator).await != [Bytes::from("task three")] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            held(&coordinator).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The same user, attacking.
    let (client, mut errors) = raw_client(&url, &worker_access).await.expect("connects");
    let jetstream = async_nats::jetstream::new(client.clone());
    let mut jetstream = jetstream;
    jetstream.set_timeout(REFUSED_WAIT);
    // Publish a task (JetStream, then plain NATS).
    assert!(
        jetstream
            .publish(TASK_SUBJECT, Bytes::from("forged"))
            .await
            .expect("sent")
            .await
            .is_err()
    );
    violation(&mut errors, TASK_SUBJECT).await;
    client
        .publish(TASK_SUBJECT, Bytes::from("forged"))
        .await
        .expect("sent");
    client.flush().await.expect("flush");
    violation(&mut errors, TASK_SUBJECT).await;
    // Make a stream or a consumer of its own (to read every task), change the task stream.
    let own_stream = async_nats::jetstream::stream::Config {
        name: "STOLEN".to_owned(),
        subjects: vec![TASK_SUBJECT.to_owned()],
        ..Default::default()
    };
    assert!(jetstream.create_stream(own_stream).await.is_err());
    violation(&mut errors, "$JS.API.STREAM.CREATE.STOLEN").await;
    let mut stream = jetstream
        .get_stream(STREAM_NAME)
        .await
        .expect("stream info");
    let mut config = stream.info().await.expect("stream info").config.clone();
    config.max_messages = 1;
    assert!(jetstream.update_stream(config).await.is_err());
    violation(&mut errors, "$JS.API.STREAM.UPDATE.LATHE_TASKS").await;
    let own_consumer = async_nats::jetstream::consumer::pull::Config {
        durable_name: Some("spy".to_owned()),
        ..Default::default()
    };
    assert!(stream.create_consumer(own_consumer).await.is_err());
    violation(&mut errors, "$JS.API.CONSUMER.CREATE.LATHE_TASKS").await;
    // Delete or purge the stream, delete the consumer.
    assert!(jetstream.delete_stream(STREAM_NAME).await.is_err());
    violation(&mut errors, "$JS.API.STREAM.DELETE.LATHE_TASKS").await;
    assert!(stream.purge().await.is_err());
    violation(&mut errors, "$JS.API.STREAM.PURGE.LATHE_TASKS").await;
    assert!(stream.delete_consumer(CONSUMER_NAME).await.is_err());
    violation(&mut errors, "$JS.API.CONSUMER.DELETE.LATHE_TASKS").await;
    // Read a task by its sequence (a worker sees only what it is delivered).
    assert!(stream.get_raw_message(1).await.is_err());
    violation(&mut errors, "$JS.API.STREAM.MSG.GET.LATHE_TASKS").await;
    // Listen on the task subject.
    let _ = client.subscribe(TASK_SUBJECT).await;
    client.flush().await.expect("flush");
    violation(&mut errors, TASK_SUBJECT).await;
    // The stream and the consumer are intact and hold only the coordinator's task.
    assert_eq!(held(&coordinator).await, [Bytes::from("task three")]);
    let delivered = worker.pull(1, Duration::from_secs(3)).await.expect("pull");
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].payload, Bytes::from("task three"));

    // The rest of what the coordinator does, with its user: the consumer's depth, removing a held
    // message, and a task past its deliveries (the advisory, then the raw read and delete).
    assert_eq!(coordinator.depth().await.expect("depth"), 1);
    let sequence = coordinator.held(None, 1).await.expect("held")[0].sequence;
    assert!(coordinator.remove(sequence).await.expect("remove"));
    assert!(held(&coordinator).await.is_empty());
    drop(delivered);
    let mut exhausted = coordinator.exhausted().await.expect("advisories");
    coordinator.publish(task("four")).await.expect("publish");
    for _ in 0..SETTINGS.max_deliver {
        let deliveries = worker.pull(1, Duration::from_secs(3)).await.expect("pull");
        assert_eq!(deliveries.len(), 1);
        for delivery in deliveries {
            delivery.nak(None).await.expect("nak");
        }
    }
    // JetStream notices when it would deliver again, while a pull waits.
    let mut noticed = None;
    for _ in 0..20 {
        assert!(
            worker
                .pull(1, Duration::from_millis(300))
                .await
                .expect("pull")
                .is_empty()
        );
        if let Ok(Some(payload)) = tokio::time::timeout(
            Duration::from_millis(200),
            futures::StreamExt::next(&mut exhausted),
        )
        .await
        {
            noticed = Some(payload);
            break;
        }
    }
    assert_eq!(
        noticed,
        Some(Bytes::from("task four")),
        "the advisory reached the coordinator"
    );
    assert!(
        held(&coordinator).await.is_empty(),
        "the coordinator removed it"
    );
}

const NAMESPACE: &str = "/lathe/";
const ROOT_PASSWORD: &str = "root-secret";
const LATHE_PASSWORD: &str = "lathe-secret";

fn etcd_access(pki: &TestPki, credentials: Option<Credentials>) -> EtcdAccess {
    EtcdAccess {
        tls: pki.tls(true),
        credentials,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_refuses_clients_without_credentials_and_keeps_the_coordinator_in_its_namespace() {
    let pki = TestPki::new();
    let Some(mut etcd) = EtcdServer::start_secure(EtcdSecurity::new(&pki)) else {
        return;
    };
    let url = etcd.url();
    let users = EtcdUsers {
        endpoints: url.clone(),
        tls: pki.tls(true),
        root_password: ROOT_PASSWORD.to_owned(),
        coordinator: Credentials::new("lathe", LATHE_PASSWORD),
        namespace: NAMESPACE.to_owned(),
    };
    setup_etcd_users(&users).await.expect("users set up");
    // Again (as `make farm` does on every start): nothing changes, nothing fails.
    setup_etcd_users(&users).await.expect("users set up again");
    let lathe = Some(Credentials::new("lathe", LATHE_PASSWORD));
    let store = EtcdStore::connect_with(&url, NAMESPACE, &etcd_access(&pki, lathe.clone()))
        .await
        .expect("the coordinator's user logs in");
    store.put("jobs/a", b"1".to_vec()).await.expect("put");
    assert_eq!(
        store.get("jobs/a").await.expect("get").map(|v| v.value),
        Some(b"1".to_vec())
    );

    // Plain HTTP to a TLS-only etcd: no answer.
    let plain = url.replacen("https://", "http://", 1);
    // (etcd-client connects lazily: the refusal shows on the first request, or at once.)
    if let Ok(plain) = EtcdStore::connect(&plain, NAMESPACE).await {
        assert!(plain.get("jobs/a").await.is_err());
    }
    // TLS, no user: refused.
    let anonymous = EtcdStore::connect_with(&url, NAMESPACE, &etcd_access(&pki, None))
        .await
        .expect("connects (etcd-client is lazy)");
    let error = anonymous.get("jobs/a").await.expect_err("no user");
    assert!(
        error.to_string().contains("user name is empty")
            || error.to_string().contains("permission denied"),
        "{error}"
    );
    assert!(anonymous.put("jobs/b", b"forged".to_vec()).await.is_err());
    // Wrong passwords, and the root user's name with the coordinator's password.
    for (user, password) in [("lathe", "guess"), ("root", LATHE_PASSWORD)] {
        let refused = EtcdStore::connect_with(
            &url,
            NAMESPACE,
            &etcd_access(&pki, Some(Credentials::new(user, password))),
        )
        .await;
        let error = refused.expect_err("a wrong password");
        assert!(
            error.to_string().contains("authentication failed"),
            "{error}"
        );
    }
    // TLS without a client certificate: etcd requires one signed by the farm's CA.
    let no_certificate = EtcdStore::connect_with(
        &url,
        NAMESPACE,
        &EtcdAccess {
            tls: pki.tls(false),
            credentials: lathe.clone(),
        },
    )
    .await;
    assert!(no_certificate.is_err());
    // TLS without the farm's CA: the server is not trusted.
    let untrusted = EtcdStore::connect_with(
        &url,
        NAMESPACE,
        &EtcdAccess {
            tls: TlsFiles {
                ca: None,
                identity: Some(pki.client()),
            },
            credentials: lathe.clone(),
        },
    )
    .await;
    assert!(untrusted.is_err());

    // The coordinator's user, outside its namespace: another farm's keys, the whole keyspace, the
    // users.
    let elsewhere = EtcdStore::connect_with(&url, "/other/", &etcd_access(&pki, lathe.clone()))
        .await
        .expect("logs in");
    let error = elsewhere
        .put("jobs/x", b"1".to_vec())
        .await
        .expect_err("outside");
    assert!(error.to_string().contains("permission denied"), "{error}");
    assert!(elsewhere.get("jobs/x").await.is_err());
    let everything = EtcdStore::connect_with(&url, "", &etcd_access(&pki, lathe.clone()))
        .await
        .expect("logs in");
    assert!(everything.page("/", None, 10).await.is_err());
    let mut client =
        lathe_coordinator::state::connect_etcd(&url, &etcd_access(&pki, lathe.clone()))
            .await
            .expect("logs in");
    assert!(client.auth_disable().await.is_err());
    assert!(client.user_add("intruder", "x", None).await.is_err());
    assert!(client.user_grant_role("lathe", "root").await.is_err());

    // etcd forgets its tokens when it restarts: the store logs in again by itself.
    etcd.kill();
    etcd.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match store.get("jobs/a").await {
            Ok(value) => {
                assert_eq!(value.map(|v| v.value), Some(b"1".to_vec()));
                break;
            }
            Err(error) if tokio::time::Instant::now() < deadline => {
                eprintln!("after the restart: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("the store did not log in again: {error}"),
        }
    }
}
