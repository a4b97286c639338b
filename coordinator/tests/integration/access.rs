//! Who may call what, over real gRPC on loopback, each an attack that must fail: job calls without
//! a token or with the wrong role or owner, a completion forged with another attempt's token or by
//! another worker, a source read outside the task, and over TLS a plaintext client, a worker's
//! certificate on the job API, a worker claiming another's id and a certificate from another CA.

use std::sync::Arc;
use std::time::Duration;

use lathe_coordinator::auth::{Role, create_token, revoke_token};
use lathe_coordinator::blob::MemoryBlobStore;
use lathe_coordinator::client::{Access, FarmClient, file_chunks};
use lathe_coordinator::grpc::{ATTEMPT_TOKEN_METADATA, TASK_ID_METADATA, WORKER_ID_METADATA};
use lathe_coordinator::pki::{Usage, certificate_paths, ensure_ca, issue};
use lathe_coordinator::queue::MemoryQueue;
use lathe_coordinator::state::{MemoryStore, StateStore};
use lathe_coordinator::testing::LoopbackServer;
use lathe_coordinator::tls::{ClientTls, ServerTls, Transport};
use lathe_coordinator::{Coordinator, CoordinatorSettings};
use lathe_proto::v1;

/// A coordinator serving on a free loopback port until dropped.
struct Served {
    state: Arc<MemoryStore>,
    coordinator: Coordinator,
    server: LoopbackServer,
}

async fn serve(transport: Transport) -> Served {
    let settings = CoordinatorSettings::default();
    let state = Arc::new(MemoryStore::new());
    let coordinator = Coordinator::new(
        Arc::new(MemoryQueue::new(
            settings.queue_settings(Duration::from_secs(30)),
        )),
        state.clone(),
        Arc::new(MemoryBlobStore::new()),
        settings,
    );
    let server = LoopbackServer::start(&coordinator, transport).await;
    Served {
        state,
        coordinator,
        server,
    }
}

async fn token(state: &dyn StateStore, name: &str, role: Role) -> String {
    create_token(state, name, role).await.expect("token").1
}

async fn client(served: &Served, token: &str) -> FarmClient {
    FarmClient::connect(&Access::insecure(
        served.server.url(),
        Some(token.to_owned()),
    ))
    .await
    .expect("connect")
}

fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> tonic::Code {
    result.expect_err("refused").code()
}

/// Uploads a source and submits it as a one-track job; returns the job id and the source digest.
async fn submit_one(client: &FarmClient) -> (String, String) {
    let source = client
        .upload_bytes(b"not audio, but a source all the same".to_vec().into())
        .await
        .expect("upload")
        .to_string();
    let profile = lathe_model::profile::Profile::preset("streaming").expect("preset");
    let job = client
        .submit_job(v1::SubmitJobRequest {
            name: "one".to_owned(),
            profile_toml: profile.to_toml(),
            tracks: vec![v1::TrackSpec {
                source_digest: source.clone(),
                source_name: "one.wav".to_owned(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .expect("submit");
    (job, source)
}

fn job_ref(job: &str) -> v1::JobRef {
    v1::JobRef {
        job_id: job.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_calls_need_a_valid_token_whose_role_and_owner_allow_them() {
    let served = serve(Transport::InsecureLoopback).await;
    let state = served.state.as_ref();
    let (alice, bob, reader, admin) = (
        token(state, "alice", Role::Submit).await,
        token(state, "bob", Role::Submit).await,
        token(state, "auditor", Role::Read).await,
        token(state, "root", Role::Admin).await,
    );

    // No token, a forged one, a revoked one.
    for access in [
        Access::insecure(served.server.url(), None),
        Access::insecure(
            served.server.url(),
            Some(format!("lathe_{}_{}", "0".repeat(16), "1".repeat(64))),
        ),
    ] {
        let error = FarmClient::connect(&access)
            .await
            .expect_err("no valid token");
        assert!(error.to_string().contains("not authenticated"), "{error}");
    }
    let (record, revoked) = create_token(state, "gone", Role::Admin)
        .await
        .expect("token");
    revoke_token(state, &record.id).await.expect("revoke");
    let error = FarmClient::connect(&Access::insecure(served.server.url(), Some(revoked)))
        .await
        .expect_err("a revoked token");
    assert!(error.to_string().contains("revoked or unknown"), "{error}");

    let alice = client(&served, &alice).await;
    let (job, source) = submit_one(&alice).await;
    let status = alice
        .jobs
        .clone()
        .get_job(job_ref(&job))
        .await
        .expect("own job");
    assert_eq!(status.get_ref().owner, "alice");

    // Another submitter neither sees nor changes nor fetches alice's job.
    let bob = client(&served, &bob).await;
    let mut jobs = bob.jobs.clone();
    assert_eq!(
        code(jobs.get_job(job_ref(&job)).await),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        code(jobs.cancel(job_ref(&job)).await),
        tonic::Code::PermissionDenied
    );
    let fetch = |job_id: &str| v1::BlobRef {
        digest: source.clone(),
        job_id: job_id.to_owned(),
    };
    assert_eq!(
        code(jobs.fetch_blob(fetch(&job)).await),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        code(jobs.fetch_blob(fetch("")).await),
        tonic::Code::PermissionDenied
    );
    let listed = jobs
        .list_jobs(v1::ListJobsRequest::default())
        .await
        .expect("list");
    assert!(
        listed.get_ref().jobs.iter().all(|j| j.job_id != job),
        "bob's list shows alice's job"
    );
    // Alice may fetch a blob of her job, but only naming it.
    assert!(alice.jobs.clone().fetch_blob(fetch(&job)).await.is_ok());

    // A read token reads everything and changes nothing.
    let reader = client(&served, &reader).await;
    let mut jobs = reader.jobs.clone();
    assert!(jobs.get_job(job_ref(&job)).await.is_ok());
    assert!(jobs.fetch_blob(fetch("")).await.is_ok());
    assert_eq!(
        code(jobs.cancel(job_ref(&job)).await),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        code(
            jobs.delete_job(v1::DeleteJobRequest {
                job_id: job.clone(),
                force: true
            })
            .await
        ),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        code(jobs.submit(v1::SubmitJobRequest::default()).await),
        tonic::Code::PermissionDenied
    );
    // Deletes and blocklists are the admin's, even of one's own job.
    assert_eq!(
        code(
            alice
                .jobs
                .clone()
                .delete_job(v1::DeleteJobRequest {
                    job_id: job.clone(),
                    force: true
                })
                .await
        ),
        tonic::Code::PermissionDenied
    );

    // The owner cancels; so may an admin.
    assert!(alice.jobs.clone().cancel(job_ref(&job)).await.is_ok());
    let admin = client(&served, &admin).await;
    let (other, _) = submit_one(&admin).await;
    assert!(admin.jobs.clone().cancel(job_ref(&other)).await.is_ok());

    // A client token cannot act as a worker.
    let mut workers = alice.workers.clone();
    let mut request = tonic::Request::new(v1::WorkerHeartbeat {
        worker_id: "w1".to_owned(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", "Bearer lathe_x".parse().expect("metadata"));
    assert_eq!(
        code(workers.heartbeat(request).await),
        tonic::Code::PermissionDenied
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_attempt_holding_a_task_may_read_its_source_upload_and_complete_it() {
    let served = serve(Transport::InsecureLoopback).await;
    let admin = token(served.state.as_ref(), "root", Role::Admin).await;
    let admin = client(&served, &admin).await;
    let (job, source) = submit_one(&admin).await;
    let other_blob = admin
        .upload_bytes(b"someone else's file".to_vec().into())
        .await
        .expect("upload")
        .to_string();
    served.coordinator.dispatch_ready().await.expect("dispatch");
    let task = format!("{job}.0000000");
    let mut workers = admin.workers.clone();
    let start = |worker: &str, delivery: u32| v1::StartTaskRequest {
        task_id: task.clone(),
        worker_id: worker.to_owned(),
        delivery,
    };
    let first = workers
        .start_task(start("w1", 1))
        .await
        .expect("start")
        .into_inner();
    assert_eq!(first.verdict(), v1::StartVerdict::Run);
    let spec = first.task.clone().expect("the task comes with the verdict");
    assert_eq!(spec.source_digest, source);

    let source_request = |digest: &str, worker: &str, token: &str| v1::SourceRequest {
        digest: digest.to_owned(),
        task_id: task.clone(),
        attempt_token: token.to_owned(),
        worker_id: worker.to_owned(),
    };
    assert!(
        workers
            .fetch_source(source_request(&source, "w1", &first.attempt_token))
            .await
            .is_ok()
    );
    for (digest, worker, token) in [
        (other_blob.as_str(), "w1", first.attempt_token.as_str()),
        (source.as_str(), "w1", "forged"),
        (source.as_str(), "w2", first.attempt_token.as_str()),
    ] {
        assert_eq!(
            code(
                workers
                    .fetch_source(source_request(digest, worker, token))
                    .await
            ),
            tonic::Code::PermissionDenied,
            "{digest} as {worker}"
        );
    }

    // A master uploaded under the attempt's token is stored; a forged upload is refused.
    let master = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(master.path(), b"the real master").expect("write");
    let master_digest = lathe_coordinator::client::digest_file(master.path())
        .await
        .expect("digest");
    let metadata = |token: &str| {
        [
            (TASK_ID_METADATA, task.clone()),
            (WORKER_ID_METADATA, "w1".to_owned()),
            (ATTEMPT_TOKEN_METADATA, token.to_owned()),
        ]
    };
    let chunks = file_chunks(master.path(), master_digest)
        .await
        .expect("chunks");
    let mut forged = tonic::Request::new(chunks);
    for (key, value) in metadata("forged") {
        forged
            .metadata_mut()
            .insert(key, value.parse().expect("metadata"));
    }
    assert_eq!(
        code(workers.put_result(forged).await),
        tonic::Code::PermissionDenied
    );
    let chunks = file_chunks(master.path(), master_digest)
        .await
        .expect("chunks");
    let mut upload = tonic::Request::new(chunks);
    for (key, value) in metadata(&first.attempt_token) {
        upload
            .metadata_mut()
            .insert(key, value.parse().expect("metadata"));
    }
    workers
        .put_result(upload)
        .await
        .expect("the attempt's upload");

    let complete = |worker: &str, token: &str, digest: &str| v1::CompleteTaskRequest {
        task_id: task.clone(),
        worker_id: worker.to_owned(),
        output_digest: digest.to_owned(),
        report_json: "{}".to_owned(),
        attempt_token: token.to_owned(),
        outputs: Vec::new(),
    };
    let forged = other_blob.as_str();
    assert_eq!(
        code(
            workers
                .complete_task(complete("w1", "forged", forged))
                .await
        ),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        code(
            workers
                .complete_task(complete("w2", &first.attempt_token, forged))
                .await
        ),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        code(
            workers
                .fail_task(v1::FailTaskRequest {
                    task_id: task.clone(),
                    worker_id: "w1".to_owned(),
                    error: "forged".to_owned(),
                    attempt_token: "forged".to_owned(),
                    ..Default::default()
                })
                .await
        ),
        tonic::Code::PermissionDenied
    );

    // The attempt is lost and the task starts again elsewhere: the old token is stale.
    let second = workers
        .start_task(start("w2", 2))
        .await
        .expect("start")
        .into_inner();
    assert_eq!(second.verdict(), v1::StartVerdict::Run);
    assert_eq!(
        code(
            workers
                .complete_task(complete("w1", &first.attempt_token, forged))
                .await
        ),
        tonic::Code::PermissionDenied
    );
    workers
        .complete_task(complete(
            "w2",
            &second.attempt_token,
            &master_digest.to_string(),
        ))
        .await
        .expect("the holder completes");
    let status = admin
        .task_page(&job, None, "", 10)
        .await
        .expect("tasks")
        .tasks
        .remove(0);
    assert_eq!(status.state(), v1::TaskState::Succeeded);
    assert_eq!(
        status.output_digest,
        master_digest.to_string(),
        "the real master"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_workers_are_their_certificates_and_plaintext_is_refused() {
    let pki = tempfile::tempdir().expect("temp dir");
    ensure_ca(pki.path()).expect("CA");
    let (server_cert, server_key) =
        issue(pki.path(), "server", "server", &Usage::Server(Vec::new())).expect("server");
    let (w1_cert, w1_key) = issue(pki.path(), "worker-w1", "w1", &Usage::Client).expect("w1");
    let ca = lathe_coordinator::pki::ca_path(pki.path());
    let tls = ServerTls::load(&server_cert, &server_key, &ca).expect("server TLS");
    let served = serve(Transport::Tls(tls)).await;
    let admin = token(served.state.as_ref(), "root", Role::Admin).await;

    // A plaintext client gets no answer.
    let plain = served.server.url().replacen("https://", "http://", 1);
    assert!(
        FarmClient::connect(&Access::insecure(&plain, Some(admin.clone())))
            .await
            .is_err(),
        "a plaintext client is refused"
    );
    // A client that trusts the farm's CA works.
    let user = Access {
        url: served.server.url().to_owned(),
        token: Some(admin.clone()),
        tls: Some(ClientTls::load(&ca, None).expect("client TLS")),
    };
    FarmClient::connect(&user).await.expect("a TLS client");

    // A worker's certificate cannot call the job API, even with a token.
    let worker = Access {
        url: served.server.url().to_owned(),
        token: Some(admin.clone()),
        tls: Some(ClientTls::load(&ca, Some((&w1_cert, &w1_key))).expect("worker TLS")),
    };
    let error = FarmClient::connect(&worker)
        .await
        .expect_err("a worker on the job API");
    assert!(
        error.to_string().contains("worker's certificate"),
        "{error}"
    );

    // The worker is who its certificate says, and nobody else.
    let worker = FarmClient::lazy(&Access {
        token: None,
        ..worker
    })
    .expect("worker client");
    let beat = |id: &str| v1::WorkerHeartbeat {
        worker_id: id.to_owned(),
        slots: 1,
        ..Default::default()
    };
    worker
        .workers
        .clone()
        .heartbeat(beat("w1"))
        .await
        .expect("w1 registers");
    assert_eq!(
        code(worker.workers.clone().heartbeat(beat("w2")).await),
        tonic::Code::PermissionDenied
    );
    let registered = served.coordinator.workers().await.expect("workers");
    assert_eq!(
        registered
            .iter()
            .map(|w| w.worker_id.as_str())
            .collect::<Vec<_>>(),
        ["w1"]
    );
    // Without a certificate, the worker API is closed.
    let anonymous = FarmClient::lazy(&user).expect("client");
    assert_eq!(
        code(anonymous.workers.clone().heartbeat(beat("w1")).await),
        tonic::Code::Unauthenticated
    );

    // A certificate from another CA does not get through the handshake.
    let rogue = tempfile::tempdir().expect("temp dir");
    ensure_ca(rogue.path()).expect("rogue CA");
    issue(rogue.path(), "worker-w1", "w1", &Usage::Client).expect("rogue w1");
    let (rogue_cert, rogue_key) = certificate_paths(rogue.path(), "worker-w1");
    let rogue = FarmClient::lazy(&Access {
        url: served.server.url().to_owned(),
        token: None,
        tls: Some(ClientTls::load(&ca, Some((&rogue_cert, &rogue_key))).expect("rogue TLS")),
    })
    .expect("rogue client");
    assert!(rogue.workers.clone().heartbeat(beat("w1")).await.is_err());
}
