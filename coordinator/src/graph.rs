//! Graph jobs: a catalogue delivery the client planned as tasks with dependencies (the model's
//! `delivery::plan::DeliveryPlan`), run in dependency order.
//!
//! A task is published only once every task it `needs` succeeded; just before, the coordinator
//! resolves its work from their outcomes ([`resolve_task`]: the album's level plan, the masters'
//! reports) and lists the files of its `inputs_from` tasks as its inputs. A task whose need failed
//! (or was cancelled) fails without running, naming that need ([`readiness`]).

use lathe_model::delivery::outcome::TaskOutcome;
use lathe_model::delivery::plan::Work;
use lathe_model::delivery::resolve::resolve;
use lathe_proto::v1;

use crate::error::{Error, Result};
use crate::record::{GraphPart, OutputRecord, TaskRecord, TaskState, task_id};

/// Whether a pending graph task can go on the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Every need succeeded.
    Ready,
    /// Some need has not finished yet.
    Waiting,
    /// A need failed or was cancelled: the task cannot run (the reason names the need).
    Blocked(String),
}

/// The task at `index` among a job's tasks (listed in key order, so normally at that position).
pub fn task_at(tasks: &[TaskRecord], index: u32) -> Option<&TaskRecord> {
    tasks
        .get(index as usize)
        .filter(|t| t.index == index)
        .or_else(|| tasks.iter().find(|t| t.index == index))
}

/// Whether `task` can run, from the states of the tasks it needs.
pub fn readiness(task: &TaskRecord, tasks: &[TaskRecord]) -> Readiness {
    let mut waiting = false;
    for &need in &task.graph.needs {
        let Some(needed) = task_at(tasks, need) else {
            return Readiness::Blocked(format!("needs task {need}, which does not exist"));
        };
        match needed.state {
            TaskState::Succeeded => {}
            TaskState::Failed => {
                return Readiness::Blocked(format!("needs {}, which failed", needed.graph.label));
            }
            TaskState::Cancelled => {
                return Readiness::Blocked(format!(
                    "needs {}, which was cancelled",
                    needed.graph.label
                ));
            }
            TaskState::Pending | TaskState::Queued | TaskState::Running => waiting = true,
        }
    }
    if waiting {
        Readiness::Waiting
    } else {
        Readiness::Ready
    }
}

/// A ready graph task's resolved work (as JSON) and its inputs: the engine's `resolve` over the
/// outcomes of its needs, and the files of its `inputs_from` tasks in order.
pub fn resolve_task(
    task: &TaskRecord,
    tasks: &[TaskRecord],
) -> Result<(String, Vec<OutputRecord>)> {
    let work: Work =
        serde_json::from_str(&task.graph.work_json).map_err(|e| Error::CorruptRecord {
            key: task.id.clone(),
            reason: format!("work_json: {e}"),
        })?;
    let mut outcomes = Vec::with_capacity(task.graph.needs.len());
    for &need in &task.graph.needs {
        let needed =
            task_at(tasks, need).ok_or_else(|| Error::TaskNotFound(task_id(&task.job_id, need)))?;
        let outcome: TaskOutcome =
            serde_json::from_str(&needed.report_json).map_err(|e| Error::CorruptRecord {
                key: needed.id.clone(),
                reason: format!("outcome: {e}"),
            })?;
        outcomes.push(outcome);
    }
    let needs: Vec<&TaskOutcome> = outcomes.iter().collect();
    let resolved = resolve(&work, &needs)?;
    let work_json = serde_json::to_string(&resolved).map_err(|e| Error::CorruptRecord {
        key: task.id.clone(),
        reason: format!("resolved work: {e}"),
    })?;
    let mut inputs = Vec::new();
    for &from in &task.graph.inputs_from {
        let producer =
            task_at(tasks, from).ok_or_else(|| Error::TaskNotFound(task_id(&task.job_id, from)))?;
        inputs.extend(producer.graph.outputs.iter().cloned());
    }
    Ok((work_json, inputs))
}

/// A relative path of normal components (folders allowed), so that writing it under an output
/// folder cannot leave that folder.
pub fn is_inside(path: &str) -> bool {
    let parsed = std::path::Path::new(path);
    !path.is_empty()
        && !path.ends_with('/')
        && parsed.file_name().is_some()
        && parsed
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// A plain file name: no folders.
fn is_plain_name(name: &str) -> bool {
    let path = std::path::Path::new(name);
    path.file_name().map(|n| n.to_string_lossy()) == Some(name.into()) && !name.starts_with('.')
}

/// The tasks of a graph job, checked: each work parses and has its kind, sources are digests with
/// plain names, needs point at earlier tasks, inputs come from needs. A task the client could not
/// prepare (its `error` set) is failed from the start.
pub fn plan_graph_tasks(job_id: &str, specs: &[v1::GraphTaskSpec]) -> Result<Vec<TaskRecord>> {
    let invalid = |index: usize, reason: String| {
        Error::InvalidRequest(format!("graph task {index}: {reason}"))
    };
    let mut tasks = Vec::with_capacity(specs.len());
    for (index, spec) in specs.iter().enumerate() {
        let work: Work = serde_json::from_str(&spec.work_json)
            .map_err(|e| invalid(index, format!("work_json: {e}")))?;
        if spec.kind != work.kind() {
            return Err(invalid(
                index,
                format!("kind {:?} but the work is {:?}", spec.kind, work.kind()),
            ));
        }
        let refused = !spec.error.is_empty();
        if !refused && spec.source_digests.len() != spec.source_names.len() {
            return Err(invalid(
                index,
                format!(
                    "{} source digests but {} source names",
                    spec.source_digests.len(),
                    spec.source_names.len()
                ),
            ));
        }
        for digest in &spec.source_digests {
            crate::blob::Digest::parse(digest)?;
        }
        if let Some(name) = spec.source_names.iter().find(|n| !is_plain_name(n)) {
            return Err(invalid(
                index,
                format!("source name {name:?} must be a plain file name"),
            ));
        }
        let mut needs = spec.needs.clone();
        needs.sort_unstable();
        needs.dedup();
        if needs.len() != spec.needs.len() || needs.iter().any(|&n| n as usize >= index) {
            return Err(invalid(
                index,
                format!("needs {:?}: each must be an earlier task, once", spec.needs),
            ));
        }
        if let Some(from) = spec.inputs_from.iter().find(|f| !spec.needs.contains(f)) {
            return Err(invalid(
                index,
                format!("inputs from task {from}, which it does not need"),
            ));
        }
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        let label = if spec.label.is_empty() {
            format!("{} {index}", spec.kind)
        } else {
            spec.label.clone()
        };
        tasks.push(TaskRecord {
            id: task_id(job_id, index),
            job_id: job_id.to_owned(),
            index,
            kind: spec.kind.clone(),
            source_digest: String::new(),
            source_name: spec.source_names.first().cloned().unwrap_or_default(),
            output_name: String::new(),
            profile_toml: String::new(),
            state: if refused {
                TaskState::Failed
            } else {
                TaskState::Pending
            },
            worker_id: String::new(),
            attempts: 0,
            last_error: spec.error.clone(),
            output_digest: String::new(),
            report_json: String::new(),
            tags_json: String::new(),
            started_unix_ms: 0,
            qc_failed: false,
            queued_count: 0,
            deliveries: 0,
            attempt_started_unix_ms: 0,
            attempt_token_hash: String::new(),
            graph: GraphPart {
                label,
                work_json: spec.work_json.clone(),
                source_digests: spec.source_digests.clone(),
                source_names: spec.source_names.clone(),
                needs: spec.needs.clone(),
                inputs_from: spec.inputs_from.clone(),
                inputs: Vec::new(),
                outputs: Vec::new(),
            },
        });
    }
    Ok(tasks)
}

/// Checks a graph task's completion: every file inside the delivery folder, and the outcome (its
/// `report_json`) listing the same files in the same order. Returns the files to record.
pub fn check_outputs(
    task_id: &str,
    outputs: &[v1::OutputFile],
    report_json: &str,
) -> Result<Vec<OutputRecord>> {
    let outcome: TaskOutcome = serde_json::from_str(report_json).map_err(|e| {
        Error::InvalidRequest(format!("task {task_id}: the outcome is not valid: {e}"))
    })?;
    let paths: Vec<&str> = outputs.iter().map(|o| o.path.as_str()).collect();
    let listed: Vec<&str> = outcome.files.iter().map(|f| f.path.as_str()).collect();
    if paths != listed {
        return Err(Error::InvalidRequest(format!(
            "task {task_id}: uploaded files {paths:?} are not the outcome's {listed:?}"
        )));
    }
    if let Some(bad) = outputs.iter().find(|o| !is_inside(&o.path)) {
        return Err(Error::InvalidRequest(format!(
            "task {task_id}: output path {:?} must be a relative path inside the output folder",
            bad.path
        )));
    }
    Ok(outputs.iter().map(OutputRecord::from_proto).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lathe_model::delivery::plan::MeasureWork;

    fn measure_spec(needs: Vec<u32>, inputs_from: Vec<u32>) -> v1::GraphTaskSpec {
        let work = Work::Measure(MeasureWork {
            album: "A".to_owned(),
            track: 0,
        });
        v1::GraphTaskSpec {
            label: String::new(),
            kind: work.kind().to_owned(),
            work_json: serde_json::to_string(&work).expect("work json"),
            source_digests: vec![crate::blob::Digest::of(b"x").to_string()],
            source_names: vec!["x.wav".to_owned()],
            needs,
            inputs_from,
            error: String::new(),
        }
    }

    #[test]
    fn needs_must_point_back_and_inputs_come_from_needs() {
        let ok = plan_graph_tasks(
            "j",
            &[measure_spec(vec![], vec![]), measure_spec(vec![0], vec![0])],
        )
        .expect("a valid graph");
        assert_eq!(ok[1].graph.needs, [0]);
        assert_eq!(ok[1].graph.label, "measure 1");
        for (specs, expected) in [
            (
                vec![measure_spec(vec![0], vec![])],
                "each must be an earlier task",
            ),
            (
                vec![
                    measure_spec(vec![], vec![]),
                    measure_spec(vec![0, 0], vec![]),
                ],
                "each must be an earlier task",
            ),
            (
                vec![measure_spec(vec![], vec![]), measure_spec(vec![], vec![0])],
                "which it does not need",
            ),
        ] {
            let error = plan_graph_tasks("j", &specs).expect_err(expected);
            assert!(error.to_string().contains(expected), "{error}");
        }
        let mut renamed = measure_spec(vec![], vec![]);
        renamed.source_names = vec!["../x.wav".to_owned()];
        let error = plan_graph_tasks("j", &[renamed]).expect_err("path refused");
        assert!(error.to_string().contains("plain file name"), "{error}");
        let mut unreadable = measure_spec(vec![], vec![]);
        unreadable.source_digests.clear();
        unreadable.error = "/music/x.wav: No such file or directory".to_owned();
        let failed = plan_graph_tasks("j", &[unreadable]).expect("a task failed from the start");
        assert_eq!(failed[0].state, TaskState::Failed);
        assert_eq!(
            failed[0].last_error,
            "/music/x.wav: No such file or directory"
        );
        let mut wrong_kind = measure_spec(vec![], vec![]);
        wrong_kind.kind = "render".to_owned();
        let error = plan_graph_tasks("j", &[wrong_kind]).expect_err("kind refused");
        assert!(
            error.to_string().contains("the work is \"measure\""),
            "{error}"
        );
    }

    #[test]
    fn a_task_is_ready_once_its_needs_succeeded_and_blocked_when_one_failed() {
        let mut tasks = plan_graph_tasks(
            "j",
            &[
                measure_spec(vec![], vec![]),
                measure_spec(vec![], vec![]),
                measure_spec(vec![0, 1], vec![1]),
            ],
        )
        .expect("graph");
        tasks[0].graph.label = "A / measure / 01 Dawn".to_owned();
        assert_eq!(readiness(&tasks[2], &tasks), Readiness::Waiting);
        tasks[0].state = TaskState::Succeeded;
        assert_eq!(readiness(&tasks[2], &tasks), Readiness::Waiting);
        tasks[1].state = TaskState::Succeeded;
        assert_eq!(readiness(&tasks[2], &tasks), Readiness::Ready);
        tasks[0].state = TaskState::Failed;
        assert_eq!(
            readiness(&tasks[2], &tasks),
            Readiness::Blocked("needs A / measure / 01 Dawn, which failed".to_owned())
        );
    }

    #[test]
    fn resolving_lists_the_inputs_in_order_and_reads_the_outcomes() {
        let mut tasks = plan_graph_tasks(
            "j",
            &[
                measure_spec(vec![], vec![]),
                measure_spec(vec![], vec![]),
                measure_spec(vec![0, 1], vec![1, 0]),
            ],
        )
        .expect("graph");
        let file = |path: &str| OutputRecord {
            path: path.to_owned(),
            digest: crate::blob::Digest::of(path.as_bytes()).to_string(),
            delivered: false,
        };
        for (task, paths) in tasks
            .iter_mut()
            .zip([vec!["a/1.wav"], vec!["b/1.wav", "b/2.wav"]])
        {
            task.state = TaskState::Succeeded;
            task.report_json = serde_json::to_string(&TaskOutcome::default()).expect("json");
            task.graph.outputs = paths.into_iter().map(file).collect();
        }
        let (work_json, inputs) = resolve_task(&tasks[2], &tasks).expect("resolved");
        assert_eq!(
            serde_json::from_str::<Work>(&work_json).expect("work"),
            serde_json::from_str::<Work>(&tasks[2].graph.work_json).expect("work")
        );
        let paths: Vec<&str> = inputs.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["b/1.wav", "b/2.wav", "a/1.wav"]);

        tasks[1].report_json = "not json".to_owned();
        let error = resolve_task(&tasks[2], &tasks).expect_err("a bad outcome");
        assert!(error.to_string().contains("outcome"), "{error}");
    }

    #[test]
    fn completion_must_list_the_outcomes_files_inside_the_folder() {
        let outcome = |paths: &[&str]| {
            let mut outcome = TaskOutcome::default();
            for path in paths {
                outcome
                    .files
                    .push(lathe_model::delivery::outcome::OutcomeFile {
                        path: (*path).to_owned(),
                        delivered: true,
                        kind: lathe_model::delivery::outcome::OutcomeKind::Track,
                        duration_s: None,
                        integrated_lufs: None,
                        true_peak_dbtp: None,
                        qc: lathe_model::report::QcVerdict {
                            passed: true,
                            issues: Vec::new(),
                        },
                        platforms: Vec::new(),
                        notes: Vec::new(),
                    });
            }
            serde_json::to_string(&outcome).expect("json")
        };
        let file = |path: &str| v1::OutputFile {
            path: path.to_owned(),
            digest: crate::blob::Digest::of(b"x").to_string(),
            delivered: true,
        };
        let recorded =
            check_outputs("t", &[file("A/cd/A.cue")], &outcome(&["A/cd/A.cue"])).expect("valid");
        assert_eq!(recorded[0].path, "A/cd/A.cue");
        let error = check_outputs("t", &[file("A/x.cue")], &outcome(&["A/cd/A.cue"]))
            .expect_err("not the outcome's");
        assert!(error.to_string().contains("not the outcome's"), "{error}");
        let error =
            check_outputs("t", &[file("../x.cue")], &outcome(&["../x.cue"])).expect_err("escapes");
        assert!(
            error.to_string().contains("inside the output folder"),
            "{error}"
        );
    }
}
