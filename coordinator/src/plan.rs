//! Planning a job into tasks. Loose tracks with track-mode loudness are one `render` task per track
//! (the engine's `render::master_track`); a graph job (a catalogue delivery the client planned) is
//! checked and stored as it came ([`crate::graph`]).

use std::collections::HashMap;

use lathe_model::profile::Profile;
use lathe_proto::v1;

use crate::error::{Error, Result};
use crate::record::{JobRecord, JobState, TaskRecord, TaskState, task_id, unix_ms};

/// The task kind that masters one track.
pub const RENDER: &str = "render";

/// The most tasks one job may hold. Task keys number a job's tasks with seven digits (so that
/// they sort in task order), and a catalogue larger than this goes in several jobs.
pub const MAX_JOB_TASKS: usize = 1_000_000;

/// Refuses a job of more than [`MAX_JOB_TASKS`] tasks or graph steps.
fn check_job_size(count: usize, what: &str) -> Result<()> {
    if count > MAX_JOB_TASKS {
        return Err(Error::InvalidRequest(format!(
            "the job has {count} {what}; a job holds at most {MAX_JOB_TASKS}: submit the catalogue as several jobs"
        )));
    }
    Ok(())
}

/// Master file names for sources, as `lathe master` names them: `<stem>.<ext>`, and when two sources
/// share a stem (ignoring case) the later ones get `-2`, `-3`, ... in input order.
pub fn output_names<'a>(
    source_names: impl IntoIterator<Item = &'a str>,
    extension: &str,
) -> Vec<String> {
    let mut used: HashMap<String, usize> = HashMap::new();
    source_names
        .into_iter()
        .map(|name| {
            let stem = std::path::Path::new(name)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let count = used.entry(stem.to_lowercase()).or_insert(0);
            *count += 1;
            if *count == 1 {
                format!("{stem}.{extension}")
            } else {
                format!("{stem}-{count}.{extension}")
            }
        })
        .collect()
}

/// A planned job: its record and its tasks'.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The job.
    pub job: JobRecord,
    /// Its tasks, in order.
    pub tasks: Vec<TaskRecord>,
}

/// Plans `request` as job `job_id`, checking every profile and file name first.
pub fn plan_job(job_id: &str, request: &v1::SubmitJobRequest) -> Result<Plan> {
    let profile = Profile::from_toml(&request.profile_toml, "the job's profile")?;
    if !request.graph.is_empty() {
        if !request.tracks.is_empty() {
            return Err(Error::InvalidRequest(
                "a job has tracks or a graph, not both".to_owned(),
            ));
        }
        if !request.plan_digest.is_empty() {
            crate::blob::Digest::parse(&request.plan_digest)?;
        }
        check_job_size(request.graph.len(), "graph tasks")?;
        let tasks = crate::graph::plan_graph_tasks(job_id, &request.graph)?;
        return Ok(Plan {
            job: job_record(job_id, request, profile.name, tasks.len()),
            tasks,
        });
    }
    if request.tracks.is_empty() {
        return Err(Error::InvalidRequest("the job has no tracks".to_owned()));
    }
    check_job_size(request.tracks.len(), "tracks")?;
    let mut extensions = Vec::new();
    for (index, track) in request.tracks.iter().enumerate() {
        crate::blob::Digest::parse(&track.source_digest)?;
        let name = std::path::Path::new(&track.source_name);
        if name.file_name().map(|n| n.to_string_lossy()) != Some(track.source_name.as_str().into())
        {
            return Err(Error::InvalidRequest(format!(
                "track {index}: source_name {:?} must be a plain file name",
                track.source_name
            )));
        }
        if !track.output_name.is_empty() {
            check_output_name(index, &track.output_name)?;
        }
        if !track.tags_json.is_empty() {
            serde_json::from_str::<lathe_model::tags::TrackTags>(&track.tags_json)
                .map_err(|e| Error::InvalidRequest(format!("track {index}: tags_json: {e}")))?;
        }
        let extension = if track.profile_toml.is_empty() {
            profile.output.format.extension()
        } else {
            Profile::from_toml(&track.profile_toml, &track.source_name)?
                .output
                .format
                .extension()
        };
        extensions.push(extension);
    }
    let names = output_names(
        request.tracks.iter().map(|t| t.source_name.as_str()),
        profile.output.format.extension(),
    );
    let tasks = request
        .tracks
        .iter()
        .zip(names)
        .zip(extensions)
        .enumerate()
        .map(|(index, ((track, name), extension))| {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            let output_name = if track.output_name.is_empty() {
                std::path::Path::new(&name)
                    .with_extension(extension)
                    .to_string_lossy()
                    .into_owned()
            } else {
                track.output_name.clone()
            };
            TaskRecord {
                id: task_id(job_id, index),
                job_id: job_id.to_owned(),
                index,
                kind: RENDER.to_owned(),
                source_digest: track.source_digest.clone(),
                source_name: track.source_name.clone(),
                output_name,
                profile_toml: track.profile_toml.clone(),
                state: TaskState::Pending,
                worker_id: String::new(),
                attempts: 0,
                last_error: String::new(),
                output_digest: String::new(),
                report_json: String::new(),
                tags_json: track.tags_json.clone(),
                started_unix_ms: 0,
                qc_failed: false,
                queued_count: 0,
                deliveries: 0,
                attempt_started_unix_ms: 0,
                attempt_token_hash: String::new(),
                graph: Default::default(),
            }
        })
        .collect::<Vec<_>>();
    Ok(Plan {
        job: job_record(job_id, request, profile.name, tasks.len()),
        tasks,
    })
}

/// The record of a job of `task_count` tasks, running from now.
fn job_record(
    job_id: &str,
    request: &v1::SubmitJobRequest,
    profile_name: String,
    task_count: usize,
) -> JobRecord {
    let name = if request.name.is_empty() {
        let noun = if request.graph.is_empty() {
            "tracks"
        } else {
            "tasks"
        };
        format!("{task_count} {noun}")
    } else {
        request.name.clone()
    };
    JobRecord {
        id: job_id.to_owned(),
        name,
        priority: request.priority,
        profile_toml: request.profile_toml.clone(),
        profile_name,
        state: JobState::Running,
        submitted_unix_ms: unix_ms(),
        task_count: u32::try_from(task_count).unwrap_or(u32::MAX),
        consecutive_failures: Default::default(),
        paused_reason: String::new(),
        blocklist: Vec::new(),
        plan_digest: request.plan_digest.clone(),
        finished_unix_ms: 0,
        pinned: false,
        idempotency_key: request.idempotency_key.clone(),
        trace_context: Vec::new(),
        owner: String::new(),
    }
}

/// An output name given by the client: a relative path of normal components (folders allowed), so
/// that fetching it cannot write outside the output folder.
fn check_output_name(index: usize, name: &str) -> Result<()> {
    let path = std::path::Path::new(name);
    let plain = path
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if plain && path.file_name().is_some() && !name.ends_with('/') {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "track {index}: output_name {name:?} must be a relative path inside the output folder"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_stems_get_numbered_suffixes() {
        let names = output_names(
            ["01-dawn.ogg", "01-dawn.wav", "01-Dawn.flac", "x.wav"],
            "flac",
        );
        assert_eq!(
            names,
            ["01-dawn.flac", "01-dawn-2.flac", "01-Dawn-3.flac", "x.flac"]
        );
    }

    fn request(source_name: &str) -> v1::SubmitJobRequest {
        v1::SubmitJobRequest {
            name: String::new(),
            priority: 3,
            profile_toml: Profile::preset("cd")
                .map(|p| p.to_toml())
                .unwrap_or_default(),
            tracks: vec![v1::TrackSpec {
                source_digest: crate::blob::Digest::of(b"x").to_string(),
                source_name: source_name.to_owned(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn plans_one_render_task_per_track() {
        let plan = plan_job("j1", &request("a.flac")).expect("plan");
        assert_eq!(plan.tasks.len(), 1);
        assert_eq!(plan.tasks[0].output_name, "a.wav");
        assert_eq!(plan.tasks[0].id, "j1.0000000");
        assert_eq!(plan.job.priority, 3);
        assert_eq!(plan.job.profile_name, "cd");
    }

    #[test]
    fn output_names_may_have_folders_but_not_escape() {
        let mut named = request("a.flac");
        named.tracks[0].output_name = "Album/streaming/01 Dawn.flac".to_owned();
        let plan = plan_job("j1", &named).expect("plan");
        assert_eq!(plan.tasks[0].output_name, "Album/streaming/01 Dawn.flac");
        for bad in ["../x.flac", "/tmp/x.flac", "a/../../x.flac", "a/"] {
            named.tracks[0].output_name = bad.to_owned();
            let error = plan_job("j1", &named).expect_err(bad);
            assert!(
                error.to_string().contains("inside the output folder"),
                "{error}"
            );
        }
    }

    #[test]
    fn refuses_a_job_larger_than_task_keys_number() {
        let mut large = request("a.flac");
        let track = large.tracks[0].clone();
        large.tracks = vec![track; MAX_JOB_TASKS + 1];
        let error = plan_job("j1", &large).expect_err("too large");
        assert!(error.to_string().contains("several jobs"), "{error}");
        large.tracks.truncate(MAX_JOB_TASKS);
        assert!(
            check_job_size(large.tracks.len(), "tracks").is_ok(),
            "the largest job is allowed"
        );
    }

    #[test]
    fn refuses_paths_as_source_names() {
        let error = plan_job("j1", &request("../a.flac")).expect_err("path refused");
        assert!(error.to_string().contains("plain file name"), "{error}");
    }
}
