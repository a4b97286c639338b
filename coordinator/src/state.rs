//! The state store: job and task records, worker registrations under leases, compare-and-swap
//! transitions.
//!
//! Two implementations with the same semantics, checked by one conformance suite
//! (`coordinator/tests/conformance.rs`): [`EtcdStore`] (etcd v3) and [`MemoryStore`]. Every value
//! carries the store revision that last changed it; [`StateStore::swap`] writes only if that revision
//! is still current, so concurrent transitions never overwrite each other. Keys put under a lease
//! disappear when the lease runs out (its holder stopped refreshing it) or is revoked.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::error::{Error, Result};

/// A stored value and the revision that last changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The value.
    pub value: Vec<u8>,
    /// The store revision of its last change (never 0 for a stored key).
    pub revision: i64,
}

/// A lease id.
pub type LeaseId = i64;

/// The state store.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// The value at `key`.
    async fn get(&self, key: &str) -> Result<Option<Versioned>>;
    /// Every key starting with `prefix` and its value, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>>;
    /// Writes `value` at `key` unconditionally; returns the new revision.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<i64>;
    /// Writes `value` at `key` only if its revision is still `expected` (`None`: only if the key does
    /// not exist). Returns false, writing nothing, when another write came first.
    async fn swap(&self, key: &str, expected: Option<i64>, value: Vec<u8>) -> Result<bool>;
    /// Removes `key` (no error if absent).
    async fn delete(&self, key: &str) -> Result<()>;
    /// A new lease that runs out after `ttl` unless refreshed.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;
    /// Refreshes a lease; [`Error::LeaseExpired`] if it already ran out.
    async fn keep_alive(&self, lease: LeaseId) -> Result<()>;
    /// Writes `value` at `key`, attached to `lease`.
    async fn put_leased(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<()>;
    /// Ends a lease now, deleting its keys.
    async fn revoke(&self, lease: LeaseId) -> Result<()>;
}

// ---------------------------------------------------------------------------------------------------
// In memory.

#[derive(Debug)]
struct MemoryEntry {
    value: Vec<u8>,
    revision: i64,
    lease: Option<LeaseId>,
}

#[derive(Debug, Default)]
struct MemoryState {
    revision: i64,
    next_lease: LeaseId,
    entries: BTreeMap<String, MemoryEntry>,
    /// Lease id -> (ttl, expiry).
    leases: HashMap<LeaseId, (Duration, Instant)>,
}

impl MemoryState {
    fn expire_leases(&mut self) {
        let now = Instant::now();
        let expired: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, (_, expiry))| *expiry <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            self.end_lease(id);
        }
    }

    fn end_lease(&mut self, id: LeaseId) {
        self.leases.remove(&id);
        self.entries.retain(|_, entry| entry.lease != Some(id));
    }

    fn write(&mut self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> i64 {
        self.revision += 1;
        self.entries.insert(
            key.to_owned(),
            MemoryEntry {
                value,
                revision: self.revision,
                lease,
            },
        );
        self.revision
    }
}

/// The in-memory state store.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<MemoryState>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, MemoryState>> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| Error::State("in-memory store lock poisoned".to_owned()))?;
        state.expire_leases();
        Ok(state)
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>> {
        Ok(self.lock()?.entries.get(key).map(|entry| Versioned {
            value: entry.value.clone(),
            revision: entry.revision,
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>> {
        Ok(self
            .lock()?
            .entries
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, entry)| {
                (
                    key.clone(),
                    Versioned {
                        value: entry.value.clone(),
                        revision: entry.revision,
                    },
                )
            })
            .collect())
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<i64> {
        Ok(self.lock()?.write(key, value, None))
    }

    async fn swap(&self, key: &str, expected: Option<i64>, value: Vec<u8>) -> Result<bool> {
        let mut state = self.lock()?;
        let current = state.entries.get(key).map(|entry| entry.revision);
        if current != expected {
            return Ok(false);
        }
        let lease = state.entries.get(key).and_then(|entry| entry.lease);
        state.write(key, value, lease);
        Ok(true)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let mut state = self.lock()?;
        if state.entries.remove(key).is_some() {
            state.revision += 1;
        }
        Ok(())
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let mut state = self.lock()?;
        state.next_lease += 1;
        let id = state.next_lease;
        state.leases.insert(id, (ttl, Instant::now() + ttl));
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let mut state = self.lock()?;
        let Some((ttl, expiry)) = state.leases.get_mut(&lease) else {
            return Err(Error::LeaseExpired { lease });
        };
        *expiry = Instant::now() + *ttl;
        Ok(())
    }

    async fn put_leased(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<()> {
        let mut state = self.lock()?;
        if !state.leases.contains_key(&lease) {
            return Err(Error::LeaseExpired { lease });
        }
        state.write(key, value, Some(lease));
        Ok(())
    }

    async fn revoke(&self, lease: LeaseId) -> Result<()> {
        self.lock()?.end_lease(lease);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------
// etcd.

/// The state store on etcd (v3 API). Keys are prefixed with a namespace so that several farms can
/// share one etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: etcd_client::Client,
    namespace: String,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

fn etcd_error(context: &'static str) -> impl Fn(etcd_client::Error) -> Error {
    move |error| Error::State(format!("etcd {context}: {error}"))
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` (comma-separated URLs); every key is stored under `namespace`.
    pub async fn connect(endpoints: &str, namespace: &str) -> Result<Self> {
        let endpoints: Vec<&str> = endpoints.split(',').map(str::trim).collect();
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10));
        let client = etcd_client::Client::connect(&endpoints, Some(options))
            .await
            .map_err(|e| Error::State(format!("cannot connect to etcd at {endpoints:?}: {e}")))?;
        Ok(Self {
            client,
            namespace: namespace.to_owned(),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.namespace)
    }
}

#[async_trait]
impl StateStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>> {
        let response = self
            .client
            .clone()
            .get(self.key(key), None)
            .await
            .map_err(etcd_error("get"))?;
        Ok(response.kvs().first().map(|kv| Versioned {
            value: kv.value().to_vec(),
            revision: kv.mod_revision(),
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>> {
        let options = etcd_client::GetOptions::new()
            .with_prefix()
            .with_sort(etcd_client::SortTarget::Key, etcd_client::SortOrder::Ascend);
        let response = self
            .client
            .clone()
            .get(self.key(prefix), Some(options))
            .await
            .map_err(etcd_error("list"))?;
        response
            .kvs()
            .iter()
            .map(|kv| {
                let key = kv
                    .key_str()
                    .map_err(etcd_error("key"))?
                    .strip_prefix(&self.namespace)
                    .unwrap_or_default()
                    .to_owned();
                Ok((
                    key,
                    Versioned {
                        value: kv.value().to_vec(),
                        revision: kv.mod_revision(),
                    },
                ))
            })
            .collect()
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<i64> {
        let response = self
            .client
            .clone()
            .put(self.key(key), value, None)
            .await
            .map_err(etcd_error("put"))?;
        Ok(response.header().map_or(0, |header| header.revision()))
    }

    async fn swap(&self, key: &str, expected: Option<i64>, value: Vec<u8>) -> Result<bool> {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp};
        let key = self.key(key);
        let condition = match expected {
            Some(revision) => Compare::mod_revision(key.clone(), CompareOp::Equal, revision),
            None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
        };
        // An existing key keeps its lease (as the in-memory store does).
        let options = etcd_client::PutOptions::new().with_ignore_lease();
        let put = if expected.is_some() {
            TxnOp::put(key, value, Some(options))
        } else {
            TxnOp::put(key, value, None)
        };
        let response = self
            .client
            .clone()
            .txn(Txn::new().when([condition]).and_then([put]))
            .await
            .map_err(etcd_error("transaction"))?;
        Ok(response.succeeded())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .clone()
            .delete(self.key(key), None)
            .await
            .map_err(etcd_error("delete"))?;
        Ok(())
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let response = self
            .client
            .clone()
            .lease_grant(seconds, None)
            .await
            .map_err(etcd_error("lease grant"))?;
        Ok(response.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let expired = |error: etcd_client::Error| {
            if error.to_string().contains("not found") {
                Error::LeaseExpired { lease }
            } else {
                etcd_error("lease keep-alive")(error)
            }
        };
        let (mut keeper, mut responses) = self
            .client
            .clone()
            .lease_keep_alive(lease)
            .await
            .map_err(expired)?;
        keeper.keep_alive().await.map_err(expired)?;
        match responses.message().await.map_err(expired)? {
            Some(response) if response.ttl() > 0 => Ok(()),
            _ => Err(Error::LeaseExpired { lease }),
        }
    }

    async fn put_leased(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<()> {
        let options = etcd_client::PutOptions::new().with_lease(lease);
        self.client
            .clone()
            .put(self.key(key), value, Some(options))
            .await
            .map_err(|error| match error {
                etcd_client::Error::GRpcStatus(status)
                    if status.message().contains("not found") =>
                {
                    Error::LeaseExpired { lease }
                }
                other => etcd_error("put")(other),
            })?;
        Ok(())
    }

    async fn revoke(&self, lease: LeaseId) -> Result<()> {
        self.client
            .clone()
            .lease_revoke(lease)
            .await
            .map_err(etcd_error("lease revoke"))?;
        Ok(())
    }
}
