//! Transitions of many tasks of one job at once: what the dispatcher (tasks to `queued`) and
//! `cancel` (every unfinished task to `cancelled`) do to many tasks, in transactions of
//! [`BATCH`] tasks instead of one each.

use std::collections::BTreeMap;

use super::{Coordinator, SWAP_ATTEMPTS, move_index_keys};
use crate::error::{Error, Result};
use crate::record::{self, TaskCounts, TaskRecord, counts_key, decode, encode, task_key};
use crate::state::{Expect, Transaction};

/// The most tasks one transaction moves. A task takes at most 5 of etcd's 128 operations (its
/// check, its record, its two index keys and its QC key) and the counts shards up to 32 more
/// (a check and a write for each of 16).
pub(super) const BATCH: usize = 18;

impl Coordinator {
    /// Applies `change` to `tasks` (records of job `job_id` as read, with their revisions), one
    /// transaction per [`BATCH`] tasks that also moves their index keys and counts shards.
    /// `change` returns false to leave a task as it is. When another write came first, the
    /// chunk's tasks are read again and `change` applied to them afresh. Returns the records
    /// written.
    pub(super) async fn transition_batch(
        &self,
        job_id: &str,
        tasks: Vec<(TaskRecord, i64)>,
        change: impl Fn(&mut TaskRecord) -> bool,
    ) -> Result<Vec<TaskRecord>> {
        let mut written = Vec::with_capacity(tasks.len());
        let mut tasks = tasks.into_iter().peekable();
        while tasks.peek().is_some() {
            let chunk: Vec<(TaskRecord, i64)> = tasks.by_ref().take(BATCH).collect();
            written.extend(self.transition_chunk(job_id, chunk, &change).await?);
        }
        Ok(written)
    }

    async fn transition_chunk(
        &self,
        job_id: &str,
        mut chunk: Vec<(TaskRecord, i64)>,
        change: &impl Fn(&mut TaskRecord) -> bool,
    ) -> Result<Vec<TaskRecord>> {
        for _ in 0..SWAP_ATTEMPTS {
            let mut moves = Vec::with_capacity(chunk.len());
            for (task, revision) in &chunk {
                let mut changed = task.clone();
                if change(&mut changed) {
                    moves.push((task, *revision, changed));
                }
            }
            if moves.is_empty() {
                return Ok(Vec::new());
            }
            let mut shards: BTreeMap<String, (TaskCounts, i64)> = BTreeMap::new();
            let shard_keys: Vec<String> = moves
                .iter()
                .map(|(task, _, _)| counts_key(job_id, record::count_shard(task.index)))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            for (key, stored) in shard_keys
                .iter()
                .zip(self.inner.state.get_many(&shard_keys).await?)
            {
                let stored = stored.ok_or_else(|| Error::JobNotFound(job_id.to_owned()))?;
                shards.insert(key.clone(), (decode(key, &stored.value)?, stored.revision));
            }
            let mut transaction = Transaction::new();
            for (task, revision, changed) in &moves {
                let key = task_key(&task.id)?;
                let before = (task.state, task.qc_failed);
                let after = (changed.state, changed.qc_failed);
                transaction = transaction
                    .check(key.clone(), Expect::Revision(*revision))
                    .put(key, encode(changed)?);
                transaction = move_index_keys(transaction, &task.id, before, after)?;
                let shard = counts_key(job_id, record::count_shard(task.index));
                if let Some((counts, _)) = shards.get_mut(&shard) {
                    counts.moved(before, after);
                }
            }
            for (key, (counts, revision)) in &shards {
                transaction = transaction
                    .check(key.clone(), Expect::Revision(*revision))
                    .put(key.clone(), encode(counts)?);
            }
            if self.inner.state.commit(&transaction).await? {
                let mut written = Vec::with_capacity(moves.len());
                for (task, _, changed) in moves {
                    self.transitioned(task.state, changed.clone());
                    written.push(changed);
                }
                return Ok(written);
            }
            // Another write came first (a counts shard, most likely): read the tasks again.
            let keys = chunk
                .iter()
                .map(|(task, _)| task_key(&task.id))
                .collect::<Result<Vec<_>>>()?;
            let fresh = self.inner.state.get_many(&keys).await?;
            chunk = keys
                .iter()
                .zip(fresh)
                .filter_map(|(key, stored)| {
                    let stored = stored?;
                    Some(
                        decode::<TaskRecord>(key, &stored.value)
                            .map(|task| (task, stored.revision)),
                    )
                })
                .collect::<Result<Vec<_>>>()?;
        }
        Err(Error::Contention {
            key: counts_key(job_id, 0),
            attempts: SWAP_ATTEMPTS,
        })
    }
}
