//! The bounds on what a request may carry: the length of every string and list the services
//! accept, and the tasks a job may have. A request past a bound is refused with the field's name
//! and its limit before anything of it is stored. (Blob uploads have their own cap,
//! `CoordinatorSettings::max_upload_bytes`, and gRPC messages theirs, `grpc::MAX_MESSAGE_BYTES`.)

use lathe_proto::v1;

use crate::error::{Error, Result};

/// Ids: jobs, tasks, workers, tokens, idempotency keys.
pub const MAX_ID_BYTES: usize = 128;
/// A name a person reads: a job's name, a file name, a label, a tag value.
pub const MAX_NAME_BYTES: usize = 1_024;
/// A relative output path.
pub const MAX_PATH_BYTES: usize = 4_096;
/// A profile (TOML); the presets are under 4 KiB.
pub const MAX_PROFILE_BYTES: usize = 256 << 10;
/// A track's tags as JSON (cover art does not travel here).
pub const MAX_TAGS_BYTES: usize = 64 << 10;
/// A graph task's work as JSON (its profiles inline).
pub const MAX_WORK_BYTES: usize = 1 << 20;
/// A finished task's report or outcome as JSON; a track's report with its curves is about 3 KB.
pub const MAX_REPORT_BYTES: usize = 1 << 20;
/// A failed attempt's error: a longer one is cut to this, not refused.
pub const MAX_ERROR_BYTES: usize = 8 << 10;
/// Items in a list of digests, sources, needs or files in one message.
pub const MAX_LIST_ITEMS: usize = 10_000;

/// Refuses `text` when it is longer than `limit` bytes.
pub fn bounded_text(field: &str, text: &str, limit: usize) -> Result<()> {
    if text.len() > limit {
        return Err(Error::InvalidRequest(format!(
            "{field}: {} bytes, more than the {limit} allowed",
            text.len()
        )));
    }
    Ok(())
}

/// Refuses a list of `len` items when it holds more than `limit`.
pub fn bounded_list(field: &str, len: usize, limit: usize) -> Result<()> {
    if len > limit {
        return Err(Error::InvalidRequest(format!(
            "{field}: {len} items, more than the {limit} allowed"
        )));
    }
    Ok(())
}

/// `text` cut to at most `limit` bytes, at a character boundary.
pub fn truncated(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Checks every field of a submission (its tasks, whether they came in the request or in a
/// blob) against the bounds.
pub fn check_submission(request: &v1::SubmitJobRequest) -> Result<()> {
    bounded_text("name", &request.name, MAX_NAME_BYTES)?;
    bounded_text("profile", &request.profile_toml, MAX_PROFILE_BYTES)?;
    bounded_text("idempotency key", &request.idempotency_key, MAX_ID_BYTES)?;
    bounded_text("plan digest", &request.plan_digest, MAX_ID_BYTES)?;
    bounded_text("tasks digest", &request.tasks_digest, MAX_ID_BYTES)?;
    bounded_list(
        "tasks",
        request.tracks.len() + request.graph.len(),
        crate::plan::MAX_JOB_TASKS,
    )?;
    for track in &request.tracks {
        bounded_text("source digest", &track.source_digest, MAX_ID_BYTES)?;
        bounded_text("source name", &track.source_name, MAX_NAME_BYTES)?;
        bounded_text("track profile", &track.profile_toml, MAX_PROFILE_BYTES)?;
        bounded_text("output name", &track.output_name, MAX_PATH_BYTES)?;
        bounded_text("tags", &track.tags_json, MAX_TAGS_BYTES)?;
    }
    for task in &request.graph {
        bounded_text("label", &task.label, MAX_NAME_BYTES)?;
        bounded_text("kind", &task.kind, MAX_ID_BYTES)?;
        bounded_text("work", &task.work_json, MAX_WORK_BYTES)?;
        bounded_text("error", &task.error, MAX_ERROR_BYTES)?;
        for (field, len) in [
            ("source digests", task.source_digests.len()),
            ("source names", task.source_names.len()),
            ("needs", task.needs.len()),
            ("inputs", task.inputs_from.len()),
        ] {
            bounded_list(field, len, MAX_LIST_ITEMS)?;
        }
        for digest in &task.source_digests {
            bounded_text("source digest", digest, MAX_ID_BYTES)?;
        }
        for name in &task.source_names {
            bounded_text("source name", name, MAX_NAME_BYTES)?;
        }
    }
    Ok(())
}

/// Checks a completion's files and report against the bounds.
pub fn check_completion(request: &v1::CompleteTaskRequest) -> Result<()> {
    bounded_text("task id", &request.task_id, MAX_ID_BYTES)?;
    bounded_text("output digest", &request.output_digest, MAX_ID_BYTES)?;
    bounded_text("report", &request.report_json, MAX_REPORT_BYTES)?;
    bounded_list("outputs", request.outputs.len(), MAX_LIST_ITEMS)?;
    for file in &request.outputs {
        bounded_text("output path", &file.path, MAX_PATH_BYTES)?;
        bounded_text("output digest", &file.digest, MAX_ID_BYTES)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_fields_are_refused_naming_the_field() {
        let mut request = v1::SubmitJobRequest {
            name: "x".repeat(MAX_NAME_BYTES),
            ..Default::default()
        };
        assert!(check_submission(&request).is_ok());
        request.name.push('x');
        let error = check_submission(&request).unwrap_err().to_string();
        assert!(error.contains("name") && error.contains("1024"), "{error}");

        let request = v1::SubmitJobRequest {
            tracks: vec![
                v1::TrackSpec {
                    tags_json: "t".repeat(MAX_TAGS_BYTES + 1),
                    ..Default::default()
                };
                1
            ],
            ..Default::default()
        };
        assert!(
            check_submission(&request)
                .unwrap_err()
                .to_string()
                .contains("tags")
        );
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncated("héllo", 2), "h");
        assert_eq!(truncated("héllo", 3), "hé");
        assert_eq!(truncated("abc", 10), "abc");
    }
}
