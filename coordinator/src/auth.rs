//! Who may call what. Clients present a bearer token whose role decides which job calls they may
//! make and on whose jobs; workers present, besides their certificate, the token of the attempt
//! they hold.
//!
//! A client token is `lathe_{id}_{secret}`: `id` (16 hexadecimal characters) names its record,
//! `tokens/{id}` in the state store, which holds the token's name, role and the BLAKE3 hash of
//! `secret` (32 random bytes), never the secret itself. A secret that random needs no slow hash:
//! nobody can guess one whose hash they read. A revoked token keeps its record (marked revoked),
//! so that `token list` still shows who had access. The job API reads the record again at most
//! [`TOKEN_RECHECK`] after it last did, so a revocation holds within that time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::record::{decode, encode, unix_ms};
use crate::state::{Expect, MAX_PAGE, StateStore, Transaction};

/// Prefix of every client token's record.
pub const TOKENS_PREFIX: &str = "tokens/";

/// The metadata key a client's token travels in (`authorization: Bearer lathe_...`).
pub const AUTHORIZATION: &str = "authorization";

/// What a client token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Submit jobs; watch, read, fetch, cancel, retry, suspend, resume and reprioritise its own.
    Submit,
    /// Watch, read and fetch every job; change nothing.
    Read,
    /// Everything: every job, deletes, pins, blocklists, workers.
    Admin,
}

impl Role {
    /// The role's name as the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Submit => "submit",
            Self::Read => "read",
            Self::Admin => "admin",
        }
    }

    /// The role named `name` (`submit`, `read`, `admin`).
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "submit" => Ok(Self::Submit),
            "read" => Ok(Self::Read),
            "admin" => Ok(Self::Admin),
            other => Err(Error::InvalidRequest(format!(
                "{other:?} is not a role: submit, read or admin"
            ))),
        }
    }
}

/// A client token as stored: everything but its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The id in the token's text and key.
    pub id: String,
    /// Who holds it: the owner recorded on the jobs it submits.
    pub name: String,
    /// What it allows.
    pub role: Role,
    /// BLAKE3 of the secret, hexadecimal.
    pub secret_hash: String,
    /// When it was made (milliseconds since the Unix epoch).
    pub created_unix_ms: u64,
    /// When it was revoked (milliseconds since the Unix epoch), or 0 while it is valid.
    #[serde(default)]
    pub revoked_unix_ms: u64,
}

/// Longest token name: names are stored on every job.
pub const MAX_TOKEN_NAME_BYTES: usize = 64;

/// The key of token `id`'s record.
pub fn token_key(id: &str) -> String {
    format!("{TOKENS_PREFIX}{id}")
}

/// Who made a job call: the name and role of the token it presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name.
    pub name: String,
    /// The token's role.
    pub role: Role,
}

impl Caller {
    /// A caller that may do everything, for the unit tests.
    #[cfg(test)]
    pub(crate) fn admin(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            role: Role::Admin,
        }
    }

    /// May this caller see (status, watch, fetch) a job owned by `owner`?
    pub fn may_read(&self, owner: &str) -> bool {
        match self.role {
            Role::Admin | Role::Read => true,
            Role::Submit => owner == self.name,
        }
    }

    /// May this caller change (cancel, retry, suspend, resume, reprioritise) a job owned by
    /// `owner`?
    pub fn may_change(&self, owner: &str) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Submit => owner == self.name,
            Role::Read => false,
        }
    }

    /// Refuses the call unless the caller may see a job of `owner`.
    pub fn require_read(&self, job_id: &str, owner: &str) -> Result<()> {
        if self.may_read(owner) {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!(
            "job {job_id} belongs to another user; a submit token reaches only its own jobs"
        )))
    }

    /// Refuses the call unless the caller may change a job of `owner`.
    pub fn require_change(&self, job_id: &str, owner: &str) -> Result<()> {
        if self.may_change(owner) {
            return Ok(());
        }
        Err(Error::PermissionDenied(match self.role {
            Role::Read => format!("a read token cannot change job {job_id}"),
            _ => format!(
                "job {job_id} belongs to another user; a submit token changes only its own jobs"
            ),
        }))
    }

    /// Refuses the call unless the caller is at least `role` (`Submit` to submit, `Admin` for
    /// the farm's own operations).
    pub fn require(&self, role: Role, what: &str) -> Result<()> {
        let allowed = match role {
            Role::Admin => self.role == Role::Admin,
            Role::Submit => matches!(self.role, Role::Admin | Role::Submit),
            Role::Read => true,
        };
        if allowed {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!(
            "{what} needs a token with the {} role; this one has {}",
            role.name(),
            self.role.name()
        )))
    }
}

/// Random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::State(format!("no randomness from the operating system: {e}")))?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hash a secret is stored as.
fn secret_hash(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

/// Makes a token named `name` with `role`, stores its record and returns it with the token's
/// text (the only time the text exists outside its holder).
pub async fn create_token(
    state: &dyn StateStore,
    name: &str,
    role: Role,
) -> Result<(TokenRecord, String)> {
    if name.is_empty()
        || name.len() > MAX_TOKEN_NAME_BYTES
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
    {
        return Err(Error::InvalidRequest(format!(
            "token name {name:?}: 1 to {MAX_TOKEN_NAME_BYTES} letters, digits, '-', '_', '.' or '@'"
        )));
    }
    let id = hex(&random_bytes::<8>()?);
    let secret = hex(&random_bytes::<32>()?);
    let record = TokenRecord {
        id: id.clone(),
        name: name.to_owned(),
        role,
        secret_hash: secret_hash(&secret),
        created_unix_ms: unix_ms(),
        revoked_unix_ms: 0,
    };
    let key = token_key(&id);
    let stored = state
        .commit(
            &Transaction::new()
                .check(&key, Expect::Absent)
                .put(&key, encode(&record)?),
        )
        .await?;
    if !stored {
        return Err(Error::State(format!("token id {id} exists; try again")));
    }
    Ok((record, format!("lathe_{id}_{secret}")))
}

/// A page of the token records after id `after`, with the id to continue after.
pub async fn list_tokens(
    state: &dyn StateStore,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<TokenRecord>, Option<String>)> {
    let after = after.map(token_key);
    let page = state
        .page(TOKENS_PREFIX, after.as_deref(), limit.min(MAX_PAGE))
        .await?;
    let records = page
        .entries
        .iter()
        .map(|(key, value)| decode::<TokenRecord>(key, &value.value))
        .collect::<Result<Vec<_>>>()?;
    let next = page
        .next
        .and_then(|key| key.strip_prefix(TOKENS_PREFIX).map(str::to_owned));
    Ok((records, next))
}

/// Revokes token `id` (from now on it is refused); false when it was revoked already.
pub async fn revoke_token(state: &dyn StateStore, id: &str) -> Result<bool> {
    let key = token_key(id);
    for _ in 0..8 {
        let stored = state
            .get(&key)
            .await?
            .ok_or_else(|| Error::InvalidRequest(format!("no token with id {id}")))?;
        let mut record: TokenRecord = decode(&key, &stored.value)?;
        if record.revoked_unix_ms != 0 {
            return Ok(false);
        }
        record.revoked_unix_ms = unix_ms();
        if state
            .swap(&key, Some(stored.revision), encode(&record)?)
            .await?
        {
            return Ok(true);
        }
    }
    Err(Error::Contention { key, attempts: 8 })
}

/// The caller a token's text names, if the token is valid: its record exists, is not revoked,
/// and the secret hashes to the stored hash.
pub async fn authenticate(state: &dyn StateStore, token: &str) -> Result<Caller> {
    let refused = || Error::Unauthenticated("the token is not valid (revoked or unknown)".into());
    let (id, secret) = token
        .strip_prefix("lathe_")
        .and_then(|rest| rest.split_once('_'))
        .filter(|(id, secret)| {
            id.len() == 16
                && secret.len() == 64
                && id
                    .bytes()
                    .chain(secret.bytes())
                    .all(|b| b.is_ascii_hexdigit())
        })
        .ok_or_else(|| {
            Error::Unauthenticated("malformed token (expected lathe_ID_SECRET)".into())
        })?;
    let key = token_key(id);
    let stored = state.get(&key).await?.ok_or_else(refused)?;
    let record: TokenRecord = decode(&key, &stored.value)?;
    // blake3::Hash compares in constant time.
    let presented = blake3::hash(secret.as_bytes());
    let expected = blake3::Hash::from_hex(&record.secret_hash).map_err(|_| refused())?;
    if record.revoked_unix_ms != 0 || presented != expected {
        return Err(refused());
    }
    Ok(Caller {
        name: record.name,
        role: record.role,
    })
}

/// How long a verified token is taken on trust before its record is read again: a revocation
/// holds within this time.
pub const TOKEN_RECHECK: Duration = Duration::from_secs(5);

/// How long a verified token stays good while the state store cannot be reached (a client
/// retrying its submission through an etcd outage is not locked out by it).
pub const TOKEN_GRACE: Duration = Duration::from_secs(600);

/// Tokens remembered; past this the memory is cleared (it is only a cache).
const TOKEN_CACHE_ENTRIES: usize = 4_096;

/// The tokens verified lately, by the hash of their text.
#[derive(Debug, Default)]
pub struct TokenCache {
    verified: Mutex<HashMap<blake3::Hash, (Caller, Instant)>>,
}

impl TokenCache {
    /// [`authenticate`], with the record read again only every [`TOKEN_RECHECK`], and a token
    /// verified within [`TOKEN_GRACE`] still good while the store is unreachable.
    pub async fn authenticate(&self, state: &dyn StateStore, token: &str) -> Result<Caller> {
        let key = blake3::hash(token.as_bytes());
        let remembered = self
            .verified
            .lock()
            .ok()
            .and_then(|verified| verified.get(&key).cloned());
        if let Some((caller, at)) = &remembered
            && at.elapsed() < TOKEN_RECHECK
        {
            return Ok(caller.clone());
        }
        match authenticate(state, token).await {
            Ok(caller) => {
                if let Ok(mut verified) = self.verified.lock() {
                    if verified.len() >= TOKEN_CACHE_ENTRIES {
                        verified.clear();
                    }
                    verified.insert(key, (caller.clone(), Instant::now()));
                }
                Ok(caller)
            }
            Err(error) if error.is_retryable() => match remembered {
                Some((caller, at)) if at.elapsed() < TOKEN_GRACE => Ok(caller),
                _ => Err(error),
            },
            Err(error) => {
                if let Ok(mut verified) = self.verified.lock() {
                    verified.remove(&key);
                }
                Err(error)
            }
        }
    }
}

/// The token of a task's attempt: random text handed to the worker that starts the attempt, and
/// the hash the task record keeps of it.
pub fn attempt_token() -> Result<(String, String)> {
    let token = hex(&random_bytes::<24>()?);
    let hash = secret_hash(&token);
    Ok((token, hash))
}

/// True when `token` is the attempt token whose hash is `stored_hash` (constant time).
pub fn attempt_token_matches(token: &str, stored_hash: &str) -> bool {
    match blake3::Hash::from_hex(stored_hash) {
        Ok(expected) => !token.is_empty() && blake3::hash(token.as_bytes()) == expected,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;

    #[tokio::test]
    async fn a_token_authenticates_until_it_is_revoked() {
        let state = MemoryStore::new();
        let (record, text) = create_token(&state, "alice", Role::Submit).await.unwrap();
        assert!(!text.contains(&record.secret_hash));
        let caller = authenticate(&state, &text).await.unwrap();
        assert_eq!(
            caller,
            Caller {
                name: "alice".into(),
                role: Role::Submit
            }
        );
        // The stored record holds no secret: the token's text is not in it.
        let stored = state.get(&token_key(&record.id)).await.unwrap().unwrap();
        let secret = text.rsplit('_').next().unwrap();
        assert!(!String::from_utf8_lossy(&stored.value).contains(secret));

        assert!(revoke_token(&state, &record.id).await.unwrap());
        assert!(!revoke_token(&state, &record.id).await.unwrap());
        assert!(matches!(
            authenticate(&state, &text).await,
            Err(Error::Unauthenticated(_))
        ));
    }

    #[tokio::test]
    async fn a_wrong_secret_or_a_malformed_token_is_refused() {
        let state = MemoryStore::new();
        let (record, text) = create_token(&state, "bob", Role::Admin).await.unwrap();
        let forged = format!("lathe_{}_{}", record.id, "0".repeat(64));
        assert!(matches!(
            authenticate(&state, &forged).await,
            Err(Error::Unauthenticated(_))
        ));
        for bad in [
            "",
            "lathe_",
            "Bearer x",
            &text[..text.len() - 1],
            &format!("{text}0"),
        ] {
            assert!(
                matches!(
                    authenticate(&state, bad).await,
                    Err(Error::Unauthenticated(_))
                ),
                "{bad:?}"
            );
        }
        assert!(create_token(&state, "a b", Role::Read).await.is_err());
        assert!(
            create_token(&state, &"x".repeat(65), Role::Read)
                .await
                .is_err()
        );
    }

    #[test]
    fn roles_reach_what_the_issue_says() {
        let submit = Caller {
            name: "alice".into(),
            role: Role::Submit,
        };
        let read = Caller {
            name: "reader".into(),
            role: Role::Read,
        };
        let admin = Caller::admin("root");
        assert!(submit.may_read("alice") && !submit.may_read("bob"));
        assert!(submit.may_change("alice") && !submit.may_change("bob"));
        assert!(read.may_read("bob") && !read.may_change("bob"));
        assert!(admin.may_read("bob") && admin.may_change("bob"));
        assert!(submit.require(Role::Submit, "submit").is_ok());
        assert!(read.require(Role::Submit, "submit").is_err());
        assert!(submit.require(Role::Admin, "delete").is_err());
        assert!(admin.require(Role::Admin, "delete").is_ok());
    }

    #[test]
    fn attempt_tokens_match_only_themselves() {
        let (token, hash) = attempt_token().unwrap();
        let (other, _) = attempt_token().unwrap();
        assert!(attempt_token_matches(&token, &hash));
        assert!(!attempt_token_matches(&other, &hash));
        assert!(!attempt_token_matches("", &hash));
        assert!(!attempt_token_matches(&token, ""));
    }
}
