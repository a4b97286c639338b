//! The embedded farm (coordinator and worker loops in one process on the in-process queue, store and
//! blob store) gives exactly the masters the engine writes when called directly.

use std::path::PathBuf;

use lathe_coordinator::blob::{BlobStore, Digest};
use lathe_coordinator::client::digest_file;
use lathe_engine::render::{MasterRequest, master_track};
use lathe_model::profile::Profile;
use lathe_model::tags::TrackTags;
use lathe_proto::v1;
use lathe_synth::{Style, TrackRecipe, write_wav};
use lathe_worker::embedded::{EmbeddedFarm, fetch_outputs, submit_and_wait};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_farm_masters_match_the_engine_byte_for_byte() {
    let work = tempfile::tempdir().expect("temp dir");
    let sources_dir = work.path().join("sources");
    std::fs::create_dir_all(&sources_dir).expect("sources");
    let sources: Vec<PathBuf> = [Style::Pop, Style::Ballad, Style::Rock]
        .into_iter()
        .enumerate()
        .map(|(index, style)| {
            let recipe = TrackRecipe {
                duration_s: 3.0,
                ..TrackRecipe::new(style, 40 + index as u64)
            };
            let path = sources_dir.join(format!("{index:02}-{}.wav", style.name()));
            write_wav(&recipe, &path, 24).expect("write");
            path
        })
        .collect();
    let corrupt = sources_dir.join("99-broken.wav");
    std::fs::write(&corrupt, b"RIFF not really a wave file").expect("write");
    let profile = Profile::preset("cd").expect("preset");

    let farm = EmbeddedFarm::start(2, &work.path().join("scratch"))
        .await
        .expect("embedded farm");
    let mut all = sources.clone();
    all.push(corrupt.clone());
    let status = submit_and_wait(&farm.client, &all, &profile, "embedded", 0)
        .await
        .expect("job");
    let out = work.path().join("farm");
    let written = fetch_outputs(&farm.client, &status, &out)
        .await
        .expect("fetch");
    farm.stop().await;

    assert_eq!(status.state(), v1::JobState::CompletedWithFailures);
    let broken = status
        .tasks
        .iter()
        .find(|t| t.source_name == "99-broken.wav")
        .expect("broken task");
    assert_eq!(broken.state(), v1::TaskState::Failed);
    assert_eq!(
        broken.attempts, 1,
        "the embedded farm tries each track once"
    );
    assert!(
        broken.last_error.starts_with("99-broken.wav:"),
        "{}",
        broken.last_error
    );
    assert_eq!(written.len(), 3);

    let direct = work.path().join("direct");
    std::fs::create_dir_all(&direct).expect("direct");
    for source in &sources {
        let name = source
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .into_owned();
        let output = direct.join(format!("{name}.wav"));
        master_track(
            &MasterRequest {
                input: source,
                output: &output,
                profile: &profile,
                tags: TrackTags::default(),
                level: None,
                fades: None,
            },
            &mut |_| std::ops::ControlFlow::Continue(()),
        )
        .expect("master");
        let farmed = std::fs::read(out.join(format!("{name}.wav"))).expect("farm master");
        assert!(
            std::fs::read(&output).expect("direct master") == farmed,
            "{name}: the embedded farm's master differs"
        );
        assert!(out.join(format!("{name}.report.json")).is_file());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_too_large_for_one_request_is_submitted_through_a_blob() {
    let work = tempfile::tempdir().expect("temp dir");
    let farm = EmbeddedFarm::start(1, &work.path().join("scratch"))
        .await
        .expect("embedded farm");
    let source = farm
        .client
        .upload_bytes(bytes::Bytes::from_static(b"not audio"))
        .await
        .expect("upload");
    // 60,000 tracks with long names: more than the 4 MiB a request carries whole.
    let tracks: Vec<v1::TrackSpec> = (0..60_000)
        .map(|index| v1::TrackSpec {
            source_digest: source.to_string(),
            source_name: format!("{index:06}-a-long-name-as-archives-give-their-transfers.wav"),
            ..Default::default()
        })
        .collect();
    let request = v1::SubmitJobRequest {
        name: "large".to_owned(),
        profile_toml: Profile::preset("cd").expect("preset").to_toml(),
        tracks,
        ..Default::default()
    };
    assert!(prost::Message::encoded_len(&request) > lathe_coordinator::client::SUBMIT_INLINE_BYTES);
    let both = v1::SubmitJobRequest {
        tracks: request.tracks[..1].to_vec(),
        tasks_digest: source.to_string(),
        ..request.clone()
    };
    let job_id = farm.client.submit_job(request).await.expect("submit");
    let mut jobs = farm.client.jobs.clone();
    let refused = jobs
        .submit(both)
        .await
        .expect_err("tasks in the request and in a blob");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    jobs.cancel(v1::JobRef {
        job_id: job_id.clone(),
    })
    .await
    .expect("cancel");
    let status = jobs
        .get_job(v1::JobRef { job_id })
        .await
        .expect("status")
        .into_inner();
    farm.stop().await;
    assert_eq!(status.counts.expect("counts").total(), 60_000);
}

/// Submits one track, source blob `digest`, with the `cd` preset; returns the job's final status.
async fn master_blob(farm: &EmbeddedFarm, digest: &str) -> v1::JobStatus {
    let job_id = farm
        .client
        .submit_job(v1::SubmitJobRequest {
            name: "adopted".to_owned(),
            profile_toml: Profile::preset("cd").expect("preset").to_toml(),
            tracks: vec![v1::TrackSpec {
                source_digest: digest.to_owned(),
                source_name: "song.wav".to_owned(),
                output_name: "song.wav".to_owned(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .expect("submit");
    lathe_worker::embedded::wait_for_job(&farm.client, &job_id)
        .await
        .expect("job")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopted_sources_are_read_in_place_and_masters_delivered_without_a_copy() {
    let work = tempfile::tempdir().expect("temp dir");
    let source = work.path().join("song.wav");
    let recipe = TrackRecipe {
        duration_s: 3.0,
        ..TrackRecipe::new(Style::Pop, 7)
    };
    write_wav(&recipe, &source, 24).expect("write");
    let farm = EmbeddedFarm::start(1, &work.path().join("scratch"))
        .await
        .expect("embedded farm");
    let blobs = farm.local_blobs.clone().expect("a local blob store");

    let digest = digest_file(&source).await.expect("digest");
    blobs.adopt(digest, &source).expect("adopt");
    let status = master_blob(&farm, &digest.to_string()).await;
    let task = &status.tasks[0];
    assert_eq!(
        task.state(),
        v1::TaskState::Succeeded,
        "{}",
        task.last_error
    );
    let stored = blobs.page(None, 10).await.expect("page");
    let stored: Vec<String> = stored.iter().map(|b| b.digest.to_string()).collect();
    assert_eq!(
        stored,
        [task.output_digest.as_str()],
        "the store holds the master only: the source was read where it lies"
    );
    let delivered = work.path().join("out").join("song.wav");
    std::fs::create_dir_all(delivered.parent().expect("folder")).expect("out");
    let master = Digest::parse(&task.output_digest).expect("digest");
    blobs.deliver(&master, &delivered).await.expect("deliver");
    let direct = work.path().join("direct.wav");
    master_track(
        &MasterRequest {
            input: &source,
            output: &direct,
            profile: &Profile::preset("cd").expect("preset"),
            tags: TrackTags::default(),
            level: None,
            fades: None,
        },
        &mut |_| std::ops::ControlFlow::Continue(()),
    )
    .expect("master");
    assert!(
        std::fs::read(&direct).expect("direct") == std::fs::read(&delivered).expect("delivered"),
        "the delivered master is the engine's"
    );

    // A source changed between its digest and its render is refused, and left as it is.
    let digest = digest_file(&source).await.expect("digest");
    blobs.adopt(digest, &source).expect("adopt");
    std::fs::write(&source, b"changed").expect("change");
    let status = master_blob(&farm, &digest.to_string()).await;
    farm.stop().await;
    let task = &status.tasks[0];
    assert_eq!(task.state(), v1::TaskState::Failed);
    assert!(task.last_error.contains("digest"), "{}", task.last_error);
    assert_eq!(std::fs::read(&source).expect("source"), b"changed");
}
