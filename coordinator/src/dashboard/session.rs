//! The dashboard's sessions: who signed in with which client token, held in the coordinator's
//! memory and named by a random id that a browser keeps in its `lathe_session` cookie.
//!
//! A session id is 32 random bytes from the operating system (64 hexadecimal characters); the
//! cookie carries the id, never the token. The store keys sessions by the BLAKE3 hash of their id,
//! so a lookup compares hashes, not the secret itself. It holds at most
//! [`SessionSettings::max_sessions`] (starting one more ends the oldest) and each for at most
//! [`SessionSettings::lifetime`] from its start, however active. Nothing is written anywhere: a
//! coordinator that restarts has no sessions, and everyone signs in again.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};

use crate::auth::random_bytes;
use crate::error::Result;

/// The cookie that carries a session's id.
pub const SESSION_COOKIE: &str = "lathe_session";

/// Sessions held at once by default.
pub const MAX_SESSIONS: usize = 10_000;

/// How long a session lasts by default, from its start: 12 hours.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3_600);

/// Bytes of randomness in a session id.
const SESSION_ID_BYTES: usize = 32;

/// How many sessions a store holds and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    /// Sessions held at once; starting one more ends the oldest.
    pub max_sessions: usize,
    /// How long a session lasts from its start (an absolute lifetime, not an idle timeout).
    pub lifetime: Duration,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            max_sessions: MAX_SESSIONS,
            lifetime: SESSION_LIFETIME,
        }
    }
}

/// One signed-in browser (no `Debug`: it holds a token).
struct Session {
    /// The client token it signed in with, checked again on every request.
    token: String,
    started: Instant,
    /// Its place in the order of starts.
    serial: u64,
}

/// What the store's lock guards.
#[derive(Default)]
struct Held {
    /// The sessions by the hash of their id.
    by_id: HashMap<blake3::Hash, Session>,
    /// The same sessions by their start, oldest first.
    by_start: BTreeMap<u64, blake3::Hash>,
    next_serial: u64,
}

impl Held {
    fn remove(&mut self, key: &blake3::Hash) {
        if let Some(session) = self.by_id.remove(key) {
            self.by_start.remove(&session.serial);
        }
    }

    /// Ends the oldest session; false when there is none.
    fn remove_oldest(&mut self) -> bool {
        match self.by_start.pop_first() {
            Some((_, key)) => {
                self.by_id.remove(&key);
                true
            }
            None => false,
        }
    }
}

/// The sessions of a dashboard.
pub struct Sessions {
    settings: SessionSettings,
    held: Mutex<Held>,
}

impl std::fmt::Debug for Sessions {
    /// Its settings and how many sessions it holds: never an id or a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("settings", &self.settings)
            .field("held", &self.held().by_id.len())
            .finish()
    }
}

/// The key a session id is held under.
fn key_of(id: &str) -> blake3::Hash {
    blake3::hash(id.as_bytes())
}

impl Sessions {
    /// An empty store.
    pub fn new(settings: SessionSettings) -> Self {
        Self {
            settings,
            held: Mutex::new(Held::default()),
        }
    }

    /// Its settings.
    pub fn settings(&self) -> SessionSettings {
        self.settings
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        // A panic while the lock was held leaves the maps consistent (every change is one
        // insert or remove on each), so the store goes on.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a session for `token` (already verified); returns its id, the cookie's value.
    /// Sessions past their lifetime end first, then the oldest while the store is full.
    ///
    /// # Errors
    /// When the operating system gives no randomness.
    pub fn start(&self, token: &str) -> Result<String> {
        let bytes = random_bytes::<SESSION_ID_BYTES>()?;
        let mut id = String::with_capacity(2 * SESSION_ID_BYTES);
        for byte in bytes {
            let _ = write!(id, "{byte:02x}");
        }
        let mut held = self.held();
        while let Some((_, key)) = held.by_start.first_key_value() {
            let expired = held
                .by_id
                .get(key)
                .is_none_or(|session| session.started.elapsed() >= self.settings.lifetime);
            if !expired {
                break;
            }
            held.remove_oldest();
        }
        while held.by_id.len() >= self.settings.max_sessions.max(1) && held.remove_oldest() {}
        let serial = held.next_serial;
        held.next_serial += 1;
        let key = key_of(&id);
        held.by_start.insert(serial, key);
        held.by_id.insert(
            key,
            Session {
                token: token.to_owned(),
                started: Instant::now(),
                serial,
            },
        );
        Ok(id)
    }

    /// The token of session `id`, while the session lasts; `None` for an unknown, ended or
    /// expired one (an expired one ends here).
    pub fn token(&self, id: &str) -> Option<String> {
        let key = key_of(id);
        let mut held = self.held();
        let session = held.by_id.get(&key)?;
        if session.started.elapsed() >= self.settings.lifetime {
            held.remove(&key);
            return None;
        }
        Some(session.token.clone())
    }

    /// Ends session `id` (signing out, or its token no longer valid).
    pub fn end(&self, id: &str) {
        self.held().remove(&key_of(id));
    }

    /// Sessions held now (expired ones included until they are next looked at or pushed out).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.held().by_id.len()
    }
}

/// The session id a request's cookies carry, if it has one of the right form.
pub fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .filter_map(|cookie| cookie.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, id)| id.to_owned())
        .filter(|id| id.len() == 2 * SESSION_ID_BYTES && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A `Set-Cookie` value of the session cookie: `pair` and `Max-Age`, then the attributes every
/// one carries.
fn cookie(pair_and_age: String, secure: bool) -> HeaderValue {
    let mut cookie = pair_and_age;
    cookie.push_str("; Path=/; HttpOnly; SameSite=Strict");
    if secure {
        cookie.push_str("; Secure");
    }
    // A name, hexadecimal, digits and ASCII words: always a valid header value.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `Set-Cookie` value of session `id`, kept by the browser for `lifetime`: sent only to this
/// server (`Path=/`, no `Domain`), out of scripts' reach (`HttpOnly`), never with a request
/// another site starts (`SameSite=Strict`), and only over TLS when the dashboard is served with
/// it (`secure`).
pub fn session_cookie(id: &str, lifetime: Duration, secure: bool) -> HeaderValue {
    cookie(
        format!("{SESSION_COOKIE}={id}; Max-Age={}", lifetime.as_secs()),
        secure,
    )
}

/// The `Set-Cookie` value that deletes the session cookie (signing out).
pub fn ended_cookie(secure: bool) -> HeaderValue {
    cookie(format!("{SESSION_COOKIE}=; Max-Age=0"), secure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(max_sessions: usize, lifetime: Duration) -> Sessions {
        Sessions::new(SessionSettings {
            max_sessions,
            lifetime,
        })
    }

    #[test]
    fn a_session_holds_its_token_until_it_ends() {
        let sessions = store(10, SESSION_LIFETIME);
        let id = sessions.start("lathe_a_b").expect("start");
        assert_eq!(id.len(), 64);
        assert!(!id.contains("lathe_a_b"));
        assert_eq!(sessions.token(&id).as_deref(), Some("lathe_a_b"));
        assert_eq!(sessions.token(&"0".repeat(64)), None);
        sessions.end(&id);
        assert_eq!(sessions.token(&id), None);
        assert_eq!(sessions.len(), 0);
    }

    #[test]
    fn its_debug_form_shows_no_token_or_id() {
        let sessions = store(10, SESSION_LIFETIME);
        let id = sessions.start("lathe_secret_token").expect("start");
        let shown = format!("{sessions:?}");
        assert!(
            !shown.contains("lathe_secret_token") && !shown.contains(&id),
            "{shown}"
        );
        assert!(shown.contains("held: 1"), "{shown}");
    }

    #[test]
    fn session_ids_differ() {
        let sessions = store(10, SESSION_LIFETIME);
        let first = sessions.start("t").expect("start");
        let second = sessions.start("t").expect("start");
        assert_ne!(first, second);
        assert_eq!(sessions.len(), 2);
    }

    #[test]
    fn a_full_store_ends_its_oldest_session() {
        let sessions = store(3, SESSION_LIFETIME);
        let ids: Vec<String> = (0..5)
            .map(|n| sessions.start(&format!("token-{n}")).expect("start"))
            .collect();
        assert_eq!(sessions.len(), 3);
        assert_eq!(sessions.token(&ids[0]), None);
        assert_eq!(sessions.token(&ids[1]), None);
        for (n, id) in ids.iter().enumerate().skip(2) {
            assert_eq!(sessions.token(id), Some(format!("token-{n}")));
        }
        // A session ended by hand leaves room without pushing another out.
        sessions.end(&ids[3]);
        let newest = sessions.start("token-5").expect("start");
        assert_eq!(sessions.token(&ids[2]).as_deref(), Some("token-2"));
        assert_eq!(sessions.token(&newest).as_deref(), Some("token-5"));
    }

    #[test]
    fn a_session_past_its_lifetime_is_gone() {
        let sessions = store(10, Duration::ZERO);
        let id = sessions.start("t").expect("start");
        assert_eq!(sessions.token(&id), None);
        assert_eq!(sessions.len(), 0, "looking at it ended it");
        // Expired sessions also make way when another starts.
        let first = sessions.start("t").expect("start");
        sessions.start("t").expect("start");
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions.token(&first), None);
    }

    #[test]
    fn the_cookie_is_found_among_others_and_checked_for_form() {
        let id = "ab".repeat(32);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("theme=dark; {SESSION_COOKIE}={id}; x=y"))
                .expect("header"),
        );
        assert_eq!(session_id(&headers), Some(id));
        for bad in [
            "lathe_session=short",
            "lathe_session_x=ab",
            "lathe_session=",
        ] {
            headers.insert(header::COOKIE, HeaderValue::from_static(bad));
            assert_eq!(session_id(&headers), None, "{bad}");
        }
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{SESSION_COOKIE}={}", "zz".repeat(32))).expect("h"),
        );
        assert_eq!(session_id(&headers), None);
    }

    #[test]
    fn the_cookie_is_strict_http_only_and_secure_over_tls() {
        let lifetime = Duration::from_secs(60);
        let plain = session_cookie("abc", lifetime, false);
        let plain = plain.to_str().expect("text");
        assert!(
            plain.starts_with("lathe_session=abc; Max-Age=60"),
            "{plain}"
        );
        for part in ["; Path=/", "; HttpOnly", "; SameSite=Strict"] {
            assert!(plain.contains(part), "{plain}");
        }
        assert!(!plain.contains("Secure"), "{plain}");
        let secure = session_cookie("abc", lifetime, true);
        assert!(secure.to_str().expect("text").ends_with("; Secure"));
        let gone = ended_cookie(true);
        let gone = gone.to_str().expect("text");
        assert!(gone.starts_with("lathe_session=; Max-Age=0"), "{gone}");
        assert!(gone.ends_with("; Secure"), "{gone}");
    }
}
