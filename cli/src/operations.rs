//! The farm's job operations: `cancel`, `retry`, `suspend`, `resume`, `priority`, `pin`, `unpin`
//! and `delete`. Each prints one line for a person, or with `--json` one JSON object: the job after the
//! change (as `lathe status JOB --json` prints it), or what `delete` removed.

use lathe_coordinator::client::FarmClient;
use lathe_proto::v1;
use serde_json::json;

use crate::coordinator::{CoordinatorArg, connect, rpc_error, runtime};
use crate::job_status::job_json;
use crate::{EXIT_OK, Streams};

/// Arguments of an operation on one job.
#[derive(Debug, clap::Args)]
pub struct JobArgs {
    /// The job id.
    pub job: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub coordinator: CoordinatorArg,
}

/// Arguments of `lathe priority`.
#[derive(Debug, clap::Args)]
pub struct PriorityArgs {
    /// The job id.
    pub job: String,
    /// The new priority: higher runs first; equal priorities share workers fairly.
    #[arg(allow_negative_numbers = true)]
    pub priority: i32,
    /// Print the job as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub coordinator: CoordinatorArg,
}

/// Arguments of `lathe delete`.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// The job id.
    pub job: String,
    /// Cancel the job first if it has not finished (without it, such a job is refused).
    #[arg(long)]
    pub force: bool,
    /// Print what was removed as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub coordinator: CoordinatorArg,
}

/// An operation on one job that answers with the job's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOperation {
    /// `lathe suspend`.
    Suspend,
    /// `lathe resume`.
    Resume,
    /// `lathe pin`.
    Pin,
    /// `lathe unpin`.
    Unpin,
}

/// `lathe suspend`, `resume`, `pin` or `unpin`.
pub fn run(
    operation: JobOperation,
    args: &JobArgs,
    streams: &mut Streams<'_>,
) -> anyhow::Result<i32> {
    runtime()?.block_on(async {
        let client = connect(&args.coordinator).await?;
        let mut jobs = client.jobs.clone();
        let job = v1::JobRef {
            job_id: args.job.clone(),
        };
        let pinned = |pinned| v1::SetPinnedRequest {
            job_id: args.job.clone(),
            pinned,
        };
        let status = match operation {
            JobOperation::Suspend => jobs.suspend(job).await,
            JobOperation::Resume => jobs.resume(job).await,
            JobOperation::Pin => jobs.set_pinned(pinned(true)).await,
            JobOperation::Unpin => jobs.set_pinned(pinned(false)).await,
        }
        .map_err(rpc_error)?
        .into_inner();
        let detail = match operation {
            JobOperation::Pin | JobOperation::Unpin if status.pinned => {
                ", pinned (retention keeps it)"
            }
            JobOperation::Pin | JobOperation::Unpin => ", not pinned",
            _ => "",
        };
        print_job(&status, detail, args.json, streams)
    })
}

/// `lathe retry`.
pub fn retry(args: &JobArgs, streams: &mut Streams<'_>) -> anyhow::Result<i32> {
    runtime()?.block_on(async {
        let client: FarmClient = connect(&args.coordinator).await?;
        let reply = client
            .jobs
            .clone()
            .retry(v1::JobRef {
                job_id: args.job.clone(),
            })
            .await
            .map_err(rpc_error)?
            .into_inner();
        let status = reply.job.unwrap_or_default();
        if args.json {
            let mut line = job_json(&status);
            line["retried"] = json!(reply.retried);
            writeln!(streams.out, "{line}")?;
            return Ok(EXIT_OK);
        }
        let detail = format!(", {} failed tasks retried", reply.retried);
        print_job(&status, &detail, false, streams)
    })
}

/// `lathe priority`.
pub fn priority(args: &PriorityArgs, streams: &mut Streams<'_>) -> anyhow::Result<i32> {
    runtime()?.block_on(async {
        let client = connect(&args.coordinator).await?;
        let status = client
            .jobs
            .clone()
            .set_priority(v1::SetPriorityRequest {
                job_id: args.job.clone(),
                priority: args.priority,
            })
            .await
            .map_err(rpc_error)?
            .into_inner();
        let detail = format!(", priority {}", status.priority);
        print_job(&status, &detail, args.json, streams)
    })
}

/// `lathe delete`.
pub fn delete(args: &DeleteArgs, streams: &mut Streams<'_>) -> anyhow::Result<i32> {
    runtime()?.block_on(async {
        let client = connect(&args.coordinator).await?;
        let reply = client
            .jobs
            .clone()
            .delete_job(v1::DeleteJobRequest {
                job_id: args.job.clone(),
                force: args.force,
            })
            .await
            .map_err(rpc_error)?
            .into_inner();
        if args.json {
            writeln!(
                streams.out,
                "{}",
                json!({
                    "job_id": args.job,
                    "deleted": true,
                    "tasks_removed": reply.tasks_removed,
                    "blobs_removed": reply.blobs_removed,
                })
            )?;
        } else {
            writeln!(
                streams.out,
                "job {}: deleted ({} tasks, {} blobs no other job used)",
                args.job, reply.tasks_removed, reply.blobs_removed
            )?;
        }
        Ok(EXIT_OK)
    })
}

/// The job after an operation: its state and `detail` on one line, or its JSON.
fn print_job(
    status: &v1::JobStatus,
    detail: &str,
    json: bool,
    streams: &mut Streams<'_>,
) -> anyhow::Result<i32> {
    if json {
        writeln!(streams.out, "{}", job_json(status))?;
    } else {
        writeln!(
            streams.out,
            "job {}: {}{detail}",
            status.job_id,
            status.state().word()
        )?;
    }
    Ok(EXIT_OK)
}

/// `lathe cancel`.
pub fn cancel(args: &JobArgs, streams: &mut Streams<'_>) -> anyhow::Result<i32> {
    runtime()?.block_on(async {
        let client = connect(&args.coordinator).await?;
        let reply = client
            .jobs
            .clone()
            .cancel(v1::JobRef {
                job_id: args.job.clone(),
            })
            .await
            .map_err(rpc_error)?
            .into_inner();
        let state = reply.state().word();
        if args.json {
            writeln!(
                streams.out,
                "{}",
                json!({ "job_id": args.job, "state": state })
            )?;
        } else {
            writeln!(streams.out, "job {}: {state}", args.job)?;
        }
        Ok(EXIT_OK)
    })
}
