//! The protobuf messages the coordinator accepts (`lathe_proto::v1`), decoded with prost from the
//! input after its first byte (which picks the message). Whatever decodes must encode and decode
//! again to the same message. A job submission then goes through the coordinator's own planning
//! (`plan::plan_job`, which checks the profile, digests, names and the task graph before anything
//! is stored), and a task's completion through `graph::check_outputs`; what they accept must keep
//! their promises: digests that are 64 hexadecimal digits, files inside the output folder.
#![no_main]

use lathe_coordinator::blob::Digest;
use lathe_coordinator::graph::{check_outputs, is_inside};
use lathe_coordinator::plan::plan_job;
use lathe_model::profile::PRESETS;
use lathe_proto::v1;
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// Decodes `bytes` as `M`; what decodes encodes and decodes again to itself.
fn decode<M: Message + Default + PartialEq>(bytes: &[u8]) -> Option<M> {
    let message = M::decode(bytes).ok()?;
    let again = M::decode(message.encode_to_vec().as_slice()).expect("re-encoded message decodes");
    assert!(
        again == message,
        "a message changed in an encode-decode round trip"
    );
    Some(message)
}

/// A digest the coordinator accepted names its blob in the one way the protocol gives
/// (lower-case hexadecimal): it prints back as it came. (The coordinator counts a blob's
/// references by the digest's text; two spellings of one blob would count apart.)
fn assert_canonical(digest: &str) {
    let parsed = Digest::parse(digest).expect("an accepted digest parses");
    assert_eq!(
        parsed.to_string(),
        digest,
        "a digest accepted in another spelling"
    );
}

/// Plans a submission as the coordinator does and checks what it accepted.
fn plan(request: &v1::SubmitJobRequest) {
    let Ok(plan) = plan_job("fuzz-job", request) else {
        return;
    };
    let count = if request.graph.is_empty() {
        request.tracks.len()
    } else {
        request.graph.len()
    };
    assert_eq!(plan.tasks.len(), count);
    for track in &request.tracks {
        assert_canonical(&track.source_digest);
    }
    for task in &request.graph {
        task.source_digests.iter().for_each(|d| assert_canonical(d));
    }
    if !request.plan_digest.is_empty() && !request.graph.is_empty() {
        assert_canonical(&request.plan_digest);
    }
    for task in plan.tasks.iter().filter(|t| !t.graph.is_graph()) {
        assert!(
            is_inside(&task.output_name),
            "master {:?} of source {:?} would be written outside the output folder",
            task.output_name,
            task.source_name
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0 => {
            if let Some(request) = decode::<v1::SubmitJobRequest>(bytes) {
                plan(&request);
            }
        }
        1 => {
            // A job's tasks uploaded as a blob (`tasks_digest`), submitted with a valid profile.
            if let Some(tasks) = decode::<v1::JobTasks>(bytes) {
                plan(&v1::SubmitJobRequest {
                    profile_toml: PRESETS[0].1.to_owned(),
                    tracks: tasks.tracks,
                    graph: tasks.graph,
                    ..Default::default()
                });
            }
        }
        2 => {
            if let Some(request) = decode::<v1::CompleteTaskRequest>(bytes)
                && let Ok(files) =
                    check_outputs(&request.task_id, &request.outputs, &request.report_json)
            {
                assert_eq!(files.len(), request.outputs.len());
                for output in &request.outputs {
                    assert!(is_inside(&output.path), "{:?}", output.path);
                }
            }
        }
        3 => {
            decode::<v1::BlobChunk>(bytes);
        }
        4 => {
            decode::<v1::StartTaskRequest>(bytes);
        }
        5 => {
            decode::<v1::ProgressRequest>(bytes);
        }
        6 => {
            decode::<v1::FailTaskRequest>(bytes);
        }
        _ => {
            decode::<v1::MissingBlobsRequest>(bytes);
        }
    }
});
