//! The state store: job and task records, worker registrations under leases, compare-and-swap
//! transitions.
//!
//! Two implementations with the same semantics, checked by one conformance suite
//! (`coordinator/tests/integration/conformance.rs`): [`EtcdStore`] (etcd v3) and [`MemoryStore`]. Every value
//! carries the store revision that last changed it; [`StateStore::swap`] writes only if that revision
//! is still current, so concurrent transitions never overwrite each other. Keys put under a lease
//! disappear when the lease runs out (its holder stopped refreshing it) or is revoked.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// One page of a range read: entries sorted by key, and where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// At most the asked-for number of entries, sorted by key.
    pub entries: Vec<(String, Versioned)>,
    /// The key to read after for the next page; `None` when this page ends the range.
    pub next: Option<String>,
}

/// The most entries a page may hold, whatever the caller asks: a page of task records stays far
/// below etcd's 4 MiB reply limit.
pub const MAX_PAGE: usize = 1_000;

/// What a [`Transaction`] requires of a key before it writes anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The key was last changed at this revision.
    Revision(i64),
    /// The key does not exist.
    Absent,
}

/// Writes to several keys that happen together or not at all, if every check holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transaction {
    /// Keys and what each must be.
    pub checks: Vec<(String, Expect)>,
    /// Keys written. A key whose revision the transaction checks keeps its lease; any other is
    /// written without one.
    pub puts: Vec<(String, Vec<u8>)>,
    /// Keys removed.
    pub deletes: Vec<String>,
}

/// The most checks, puts and deletes one transaction may hold (etcd's default `--max-txn-ops` is
/// 128).
pub const MAX_TRANSACTION_OPS: usize = 128;

impl Transaction {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires `key` to be as `expect` says.
    #[must_use]
    pub fn check(mut self, key: impl Into<String>, expect: Expect) -> Self {
        self.checks.push((key.into(), expect));
        self
    }

    /// Writes `value` at `key`.
    #[must_use]
    pub fn put(mut self, key: impl Into<String>, value: Vec<u8>) -> Self {
        self.puts.push((key.into(), value));
        self
    }

    /// Removes `key`.
    #[must_use]
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.deletes.push(key.into());
        self
    }

    fn ops(&self) -> usize {
        self.checks.len() + self.puts.len() + self.deletes.len()
    }
}

/// The state store.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// The value at `key`.
    async fn get(&self, key: &str) -> Result<Option<Versioned>>;
    /// Up to `limit` keys starting with `prefix` (at most [`MAX_PAGE`]), sorted by key, beginning
    /// after the key `after` (from the start of the range without it).
    async fn page(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Page> {
        self.page_range(prefix, after, None, limit).await
    }
    /// [`page`](Self::page) of only the keys before `before` (all of the prefix without it): a
    /// window of a range. etcd counts every key of the range it reads, whatever the limit, so a
    /// read that must stay cheap in a range of 100,000 keys reads a window of it.
    async fn page_range(
        &self,
        prefix: &str,
        after: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Page>;
    /// The values at `keys`, in their order (`None` for a key not stored), read at one revision
    /// per [`MAX_TRANSACTION_OPS`] keys.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>>;
    /// Writes `value` at `key` unconditionally; returns the new revision.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<i64>;
    /// Writes `value` at `key` only if its revision is still `expected` (`None`: only if the key does
    /// not exist). Returns false, writing nothing, when another write came first.
    async fn swap(&self, key: &str, expected: Option<i64>, value: Vec<u8>) -> Result<bool> {
        let expect = expected.map_or(Expect::Absent, Expect::Revision);
        self.commit(&Transaction::new().check(key, expect).put(key, value))
            .await
    }
    /// Applies `transaction` atomically if every check holds; returns false, writing nothing,
    /// when one does not. [`Error::State`] if it holds more than [`MAX_TRANSACTION_OPS`] operations.
    async fn commit(&self, transaction: &Transaction) -> Result<bool>;
    /// Removes every key starting with `prefix`.
    async fn delete_prefix(&self, prefix: &str) -> Result<()>;
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

impl MemoryEntry {
    fn versioned(&self) -> Versioned {
        Versioned {
            value: self.value.clone(),
            revision: self.revision,
        }
    }
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
        Ok(self.lock()?.entries.get(key).map(MemoryEntry::versioned))
    }

    async fn page_range(
        &self,
        prefix: &str,
        after: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Page> {
        let limit = limit.clamp(1, MAX_PAGE);
        let state = self.lock()?;
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        let mut range = state
            .entries
            .range::<String, _>((start, Bound::Unbounded))
            .take_while(|(key, _)| {
                key.starts_with(prefix) && before.is_none_or(|before| key.as_str() < before)
            });
        let entries: Vec<(String, Versioned)> = range
            .by_ref()
            .take(limit)
            .map(|(key, entry)| (key.clone(), entry.versioned()))
            .collect();
        let next = match range.next() {
            Some(_) => entries.last().map(|(key, _)| key.clone()),
            None => None,
        };
        Ok(Page { entries, next })
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>> {
        let state = self.lock()?;
        Ok(keys
            .iter()
            .map(|key| state.entries.get(key).map(MemoryEntry::versioned))
            .collect())
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<i64> {
        Ok(self.lock()?.write(key, value, None))
    }

    async fn commit(&self, transaction: &Transaction) -> Result<bool> {
        check_size(transaction)?;
        let mut state = self.lock()?;
        let holds = transaction.checks.iter().all(|(key, expect)| {
            let current = state.entries.get(key).map(|entry| entry.revision);
            match expect {
                Expect::Revision(revision) => current == Some(*revision),
                Expect::Absent => current.is_none(),
            }
        });
        if !holds {
            return Ok(false);
        }
        state.revision += 1;
        let revision = state.revision;
        for (key, value) in &transaction.puts {
            let lease = checked_revision(transaction, key)
                .then(|| state.entries.get(key).and_then(|entry| entry.lease))
                .flatten();
            state.entries.insert(
                key.clone(),
                MemoryEntry {
                    value: value.clone(),
                    revision,
                    lease,
                },
            );
        }
        for key in &transaction.deletes {
            state.entries.remove(key);
        }
        Ok(true)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let mut state = self.lock()?;
        let keys: Vec<String> = state
            .entries
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, _)| key.clone())
            .collect();
        if !keys.is_empty() {
            state.revision += 1;
        }
        for key in keys {
            state.entries.remove(&key);
        }
        Ok(())
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
    /// The user the client logged in as, to log in again when etcd forgets its token.
    credentials: Option<crate::store_access::Credentials>,
    /// True while a new login is under way.
    logging_in: Arc<AtomicBool>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// True when `transaction` checks `key`'s revision (so the key exists and keeps its lease).
fn checked_revision(transaction: &Transaction, key: &str) -> bool {
    transaction
        .checks
        .iter()
        .any(|(checked, expect)| checked == key && matches!(expect, Expect::Revision(_)))
}

/// Refuses a transaction larger than [`MAX_TRANSACTION_OPS`].
fn check_size(transaction: &Transaction) -> Result<()> {
    if transaction.ops() > MAX_TRANSACTION_OPS {
        return Err(Error::State(format!(
            "a transaction of {} operations; at most {MAX_TRANSACTION_OPS}",
            transaction.ops()
        )));
    }
    Ok(())
}

/// The end of the key range of every key starting with `prefix` (etcd's `range_end`): the prefix
/// with its last byte that is not 0xff incremented and the rest dropped.
fn prefix_end(mut prefix: Vec<u8>) -> Vec<u8> {
    while let Some(last) = prefix.pop() {
        if last < 0xff {
            prefix.push(last + 1);
            return prefix;
        }
    }
    // Every byte was 0xff: the range runs to the end of the keyspace.
    vec![0]
}

/// An etcd key's value and the revision that last changed it.
fn versioned(kv: &etcd_client::KeyValue) -> Versioned {
    Versioned {
        value: kv.value().to_vec(),
        revision: kv.mod_revision(),
    }
}

fn etcd_error(context: &'static str) -> impl Fn(etcd_client::Error) -> Error {
    move |error| Error::State(format!("etcd {context}: {error}"))
}

/// True when etcd refused a request for its authentication token: one it no longer knows (etcd
/// keeps tokens in memory, so a restart forgets them; an unused one expires after
/// `--auth-token-ttl`) or one older than a change of users or roles.
fn stale_token(error: &etcd_client::Error) -> bool {
    let text = error.to_string();
    text.contains("invalid auth token") || text.contains("revision of auth store is old")
}

/// A client of etcd at `endpoints` (comma-separated URLs) with `access`'s TLS and credentials
/// (logged in already when it has credentials).
///
/// # Errors
/// An endpoint whose scheme does not match the TLS options, unreadable TLS files, etcd out of
/// reach, or refused credentials.
pub async fn connect_etcd(
    endpoints: &str,
    access: &crate::store_access::EtcdAccess,
) -> Result<etcd_client::Client> {
    let endpoints: Vec<&str> = endpoints.split(',').map(str::trim).collect();
    let mut options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(10));
    let tls = &access.tls;
    if tls.enabled() {
        if let Some(plain) = endpoints.iter().find(|e| !e.starts_with("https://")) {
            return Err(Error::InvalidRequest(format!(
                "etcd endpoint {plain}: TLS options (a CA or a client certificate) need https:// endpoints"
            )));
        }
        let read = |path: &std::path::Path| std::fs::read(path).map_err(|e| Error::io(path, e));
        let mut config = etcd_client::TlsOptions::new();
        if let Some(ca) = &tls.ca {
            config = config.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
        }
        if let Some(identity) = &tls.identity {
            config = config.identity(etcd_client::Identity::from_pem(
                read(&identity.cert)?,
                read(&identity.key)?,
            ));
        }
        options = options.with_tls(config);
    } else if access.credentials.is_some()
        && let Some(plain) = endpoints.iter().find(|e| e.starts_with("http://"))
    {
        tracing::warn!(endpoint = %plain, "etcd password sent without TLS (give --etcd-ca and an https:// endpoint)");
    }
    if let Some(credentials) = &access.credentials {
        options = options.with_user(credentials.user.clone(), credentials.password());
    }
    etcd_client::Client::connect(&endpoints, Some(options))
        .await
        .map_err(|e| Error::State(format!("cannot connect to etcd at {endpoints:?}: {e}")))
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` (comma-separated URLs) over plain `http://` without
    /// credentials; every key is stored under `namespace`.
    pub async fn connect(endpoints: &str, namespace: &str) -> Result<Self> {
        Self::connect_with(
            endpoints,
            namespace,
            &crate::store_access::EtcdAccess::default(),
        )
        .await
    }

    /// Connects to etcd at `endpoints` (comma-separated URLs) with `access`'s TLS and credentials;
    /// every key is stored under `namespace`. When etcd forgets the login's token (a restart), the
    /// request that finds out fails and the store logs in again for the next ones.
    ///
    /// # Errors
    /// As [`connect_etcd`].
    pub async fn connect_with(
        endpoints: &str,
        namespace: &str,
        access: &crate::store_access::EtcdAccess,
    ) -> Result<Self> {
        Ok(Self {
            client: connect_etcd(endpoints, access).await?,
            namespace: namespace.to_owned(),
            credentials: access.credentials.clone(),
            logging_in: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Maps an etcd error of `context` to the store's, logging in again (in the background) when
    /// etcd no longer takes the client's token.
    fn failed(&self, context: &'static str) -> impl Fn(etcd_client::Error) -> Error + '_ {
        move |error| {
            if stale_token(&error) {
                self.log_in_again();
            }
            etcd_error(context)(error)
        }
    }

    /// Logs in again with the store's credentials, once at a time.
    fn log_in_again(&self) {
        let Some(credentials) = self.credentials.clone() else {
            return;
        };
        if self.logging_in.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut client = self.client.clone();
        let logging_in = Arc::clone(&self.logging_in);
        tokio::spawn(async move {
            // etcd refuses a login that carries a token it does not know: drop it first.
            client.remove_client_auth();
            match client
                .set_client_auth(credentials.user.clone(), credentials.password().to_owned())
                .await
            {
                Ok(()) => tracing::info!(user = %credentials.user, "logged in to etcd again"),
                Err(error) => tracing::warn!(%error, "cannot log in to etcd again"),
            }
            logging_in.store(false, Ordering::Release);
        });
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
            .map_err(self.failed("get"))?;
        Ok(response.kvs().first().map(versioned))
    }

    async fn page_range(
        &self,
        prefix: &str,
        after: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Page> {
        let limit = limit.clamp(1, MAX_PAGE);
        let start = match after {
            // The smallest key after `after`.
            Some(after) if after >= prefix => format!("{}\0", self.key(after)),
            _ => self.key(prefix),
        };
        let prefix_end = prefix_end(self.key(prefix).into_bytes());
        let end = match before {
            // `[0]` is the end of the keyspace, after every key.
            Some(before) if prefix_end == [0] => self.key(before).into_bytes(),
            Some(before) => prefix_end.min(self.key(before).into_bytes()),
            None => prefix_end,
        };
        let options = etcd_client::GetOptions::new()
            .with_range(end)
            .with_sort(etcd_client::SortTarget::Key, etcd_client::SortOrder::Ascend)
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let response = self
            .client
            .clone()
            .get(start, Some(options))
            .await
            .map_err(self.failed("range read"))?;
        let entries = response
            .kvs()
            .iter()
            .map(|kv| {
                let key = kv
                    .key_str()
                    .map_err(self.failed("key"))?
                    .strip_prefix(&self.namespace)
                    .unwrap_or_default()
                    .to_owned();
                Ok((key, versioned(kv)))
            })
            .collect::<Result<Vec<_>>>()?;
        let next = if response.more() {
            entries.last().map(|(key, _)| key.clone())
        } else {
            None
        };
        Ok(Page { entries, next })
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Versioned>>> {
        use etcd_client::{Txn, TxnOp, TxnOpResponse};
        let mut values = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(MAX_TRANSACTION_OPS) {
            let reads: Vec<TxnOp> = chunk
                .iter()
                .map(|key| TxnOp::get(self.key(key), None))
                .collect();
            let response = self
                .client
                .clone()
                .txn(Txn::new().and_then(reads))
                .await
                .map_err(self.failed("multi-key read"))?;
            for answer in response.op_responses() {
                let TxnOpResponse::Get(read) = answer else {
                    return Err(Error::State("etcd multi-key read: not a read".to_owned()));
                };
                values.push(read.kvs().first().map(versioned));
            }
        }
        Ok(values)
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<i64> {
        let response = self
            .client
            .clone()
            .put(self.key(key), value, None)
            .await
            .map_err(self.failed("put"))?;
        Ok(response.header().map_or(0, |header| header.revision()))
    }

    async fn commit(&self, transaction: &Transaction) -> Result<bool> {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp};
        check_size(transaction)?;
        let checks: Vec<Compare> = transaction
            .checks
            .iter()
            .map(|(key, expect)| match expect {
                Expect::Revision(revision) => {
                    Compare::mod_revision(self.key(key), CompareOp::Equal, *revision)
                }
                Expect::Absent => Compare::create_revision(self.key(key), CompareOp::Equal, 0),
            })
            .collect();
        let mut ops: Vec<TxnOp> = transaction
            .puts
            .iter()
            .map(|(key, value)| {
                let options = checked_revision(transaction, key)
                    .then(|| etcd_client::PutOptions::new().with_ignore_lease());
                TxnOp::put(self.key(key), value.clone(), options)
            })
            .collect();
        ops.extend(
            transaction
                .deletes
                .iter()
                .map(|key| TxnOp::delete(self.key(key), None)),
        );
        let response = self
            .client
            .clone()
            .txn(Txn::new().when(checks).and_then(ops))
            .await
            .map_err(self.failed("transaction"))?;
        Ok(response.succeeded())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let options = etcd_client::DeleteOptions::new().with_prefix();
        self.client
            .clone()
            .delete(self.key(prefix), Some(options))
            .await
            .map_err(self.failed("delete range"))?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .clone()
            .delete(self.key(key), None)
            .await
            .map_err(self.failed("delete"))?;
        Ok(())
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let response = self
            .client
            .clone()
            .lease_grant(seconds, None)
            .await
            .map_err(self.failed("lease grant"))?;
        Ok(response.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let expired = |error: etcd_client::Error| {
            if error.to_string().contains("not found") {
                Error::LeaseExpired { lease }
            } else {
                self.failed("lease keep-alive")(error)
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
                other => self.failed("put")(other),
            })?;
        Ok(())
    }

    async fn revoke(&self, lease: LeaseId) -> Result<()> {
        self.client
            .clone()
            .lease_revoke(lease)
            .await
            .map_err(self.failed("lease revoke"))?;
        Ok(())
    }
}
