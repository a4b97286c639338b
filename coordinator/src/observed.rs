//! The state store and work queue as the coordinator uses them: every call passed to the real one,
//! and every failed call counted in [`CoordinatorMetrics`] (`lathe_store_errors_total`), so an
//! operator sees etcd or NATS trouble before jobs stall.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::metrics::{CoordinatorMetrics, STATE_STORE, WORK_QUEUE};
use crate::queue::{
    Delivery, ExhaustedStream, QueueMessage, QueueSettings, StoredMessage, WorkQueue,
};
use crate::state::{LeaseId, Page, StateStore, Transaction};

/// Counts `outcome` if it failed for a reason other than an expired lease (an answer, not a fault).
fn counted<T>(metrics: &CoordinatorMetrics, store: &'static str, outcome: Result<T>) -> Result<T> {
    if let Err(error) = &outcome
        && !matches!(error, Error::LeaseExpired { .. })
    {
        metrics.store_error(store);
    }
    outcome
}

/// A state store whose failed calls are counted.
pub struct ObservedState {
    inner: Arc<dyn StateStore>,
    metrics: Arc<CoordinatorMetrics>,
}

impl ObservedState {
    /// `inner`, counted in `metrics`.
    pub fn new(inner: Arc<dyn StateStore>, metrics: Arc<CoordinatorMetrics>) -> Self {
        Self { inner, metrics }
    }

    fn count<T>(&self, outcome: Result<T>) -> Result<T> {
        counted(&self.metrics, STATE_STORE, outcome)
    }
}

#[async_trait]
impl StateStore for ObservedState {
    async fn get(&self, key: &str) -> Result<Option<crate::state::Versioned>> {
        self.count(self.inner.get(key).await)
    }

    async fn page_range(
        &self,
        prefix: &str,
        after: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Page> {
        self.count(self.inner.page_range(prefix, after, before, limit).await)
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<crate::state::Versioned>>> {
        self.count(self.inner.get_many(keys).await)
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<i64> {
        self.count(self.inner.put(key, value).await)
    }

    async fn commit(&self, transaction: &Transaction) -> Result<bool> {
        self.count(self.inner.commit(transaction).await)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        self.count(self.inner.delete_prefix(prefix).await)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.count(self.inner.delete(key).await)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        self.count(self.inner.grant_lease(ttl).await)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        self.count(self.inner.keep_alive(lease).await)
    }

    async fn put_leased(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<()> {
        self.count(self.inner.put_leased(key, value, lease).await)
    }

    async fn revoke(&self, lease: LeaseId) -> Result<()> {
        self.count(self.inner.revoke(lease).await)
    }
}

/// A work queue whose failed calls are counted.
pub struct ObservedQueue {
    inner: Arc<dyn WorkQueue>,
    metrics: Arc<CoordinatorMetrics>,
}

impl ObservedQueue {
    /// `inner`, counted in `metrics`.
    pub fn new(inner: Arc<dyn WorkQueue>, metrics: Arc<CoordinatorMetrics>) -> Self {
        Self { inner, metrics }
    }

    fn count<T>(&self, outcome: Result<T>) -> Result<T> {
        counted(&self.metrics, WORK_QUEUE, outcome)
    }
}

#[async_trait]
impl WorkQueue for ObservedQueue {
    fn settings(&self) -> QueueSettings {
        self.inner.settings()
    }

    async fn publish(&self, message: QueueMessage) -> Result<()> {
        self.count(self.inner.publish(message).await)
    }

    async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        self.count(self.inner.pull(max, wait).await)
    }

    async fn depth(&self) -> Result<u64> {
        self.count(self.inner.depth().await)
    }

    async fn exhausted(&self) -> Result<ExhaustedStream> {
        self.count(self.inner.exhausted().await)
    }

    async fn held(&self, after: Option<u64>, limit: usize) -> Result<Vec<StoredMessage>> {
        self.count(self.inner.held(after, limit).await)
    }

    async fn remove(&self, sequence: u64) -> Result<bool> {
        self.count(self.inner.remove(sequence).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;

    #[tokio::test]
    async fn failed_calls_are_counted_and_answers_are_not() {
        let metrics = Arc::new(CoordinatorMetrics::new());
        let state = ObservedState::new(Arc::new(MemoryStore::new()), Arc::clone(&metrics));
        state.put("a", b"1".to_vec()).await.expect("put");
        // A transaction over the limit is an error of the store's.
        let mut huge = Transaction::new();
        for i in 0..=crate::state::MAX_TRANSACTION_OPS {
            huge = huge.put(format!("k{i}"), Vec::new());
        }
        assert!(state.commit(&huge).await.is_err());
        // An expired lease is an answer.
        let lease = state
            .grant_lease(Duration::from_millis(1))
            .await
            .expect("lease");
        state.revoke(lease).await.expect("revoke");
        let _ = state.keep_alive(lease).await;
        assert!(
            metrics
                .encode()
                .contains("lathe_store_errors_total{store=\"state\"} 1\n"),
            "{}",
            metrics.encode()
        );
    }
}
