//! Console sessions: who is signed in, their CSRF token, and the login attempts in progress.
//!
//! A session is 256 random bits, sent back only as an `HttpOnly`, `Secure`, `SameSite=Lax`
//! cookie scoped to `/console`, and held in this replica's memory with an absolute expiry. Every
//! state-changing request must carry the session's CSRF token in a form field (the synchroniser
//! token pattern); `SameSite` alone is not relied on. Both maps are bounded, so unauthenticated
//! callers cannot grow them: the oldest entries go first.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use opni_metrics_core::access::Caller;
use ring::rand::{SecureRandom, SystemRandom};

/// The session cookie.
pub(crate) const SESSION_COOKIE: &str = "omc_session";
/// The cookie binding an OpenID Connect login to the browser that started it.
pub(crate) const LOGIN_COOKIE: &str = "omc_login";
/// How long a login may take at the identity provider.
const LOGIN_TTL: Duration = Duration::from_secs(600);

/// `n` random bytes as unpadded base64url.
pub(crate) fn random_token(n: usize) -> Option<String> {
    let mut b = vec![0u8; n];
    SystemRandom::new().fill(&mut b).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// Who is signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    /// Shown in the header: the subject, or "admin".
    pub(crate) name: String,
    /// The reader behind the session; `None` for the admin token.
    pub(crate) caller: Option<Caller>,
    /// May manage (install, uninstall, configure Cortex, add clusters).
    pub(crate) admin: bool,
    /// How they signed in, for the header.
    pub(crate) method: &'static str,
}

#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) user: User,
    pub(crate) csrf: String,
    expires: Instant,
}

/// A login at the identity provider, keyed by its `state`.
#[derive(Debug, Clone)]
pub(crate) struct PendingLogin {
    pub(crate) verifier: String,
    pub(crate) nonce: String,
    started: Instant,
}

#[derive(Debug)]
pub(crate) struct Sessions {
    ttl: Duration,
    max: usize,
    sessions: Mutex<HashMap<String, Session>>,
    logins: Mutex<HashMap<String, PendingLogin>>,
}

impl Sessions {
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        Self { ttl, max: max.max(1), sessions: Mutex::default(), logins: Mutex::default() }
    }

    /// Starts a session for `user`; returns its id, or `None` without randomness.
    pub(crate) fn create(&self, user: User) -> Option<String> {
        let id = random_token(32)?;
        let csrf = random_token(32)?;
        let now = Instant::now();
        let mut map = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, s| s.expires > now);
        if map.len() >= self.max
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(id.clone(), Session { user, csrf, expires: now + self.ttl });
        Some(id)
    }

    /// The live session `id`.
    pub(crate) fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(id) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends session `id`.
    pub(crate) fn remove(&self, id: &str) {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    }

    /// Records a login started at the identity provider; returns its `state`.
    pub(crate) fn start_login(&self, verifier: String, nonce: String) -> Option<String> {
        let state = random_token(24)?;
        let now = Instant::now();
        let mut map = self.logins.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, l| now.duration_since(l.started) < LOGIN_TTL);
        if map.len() >= self.max
            && let Some(oldest) = map.iter().min_by_key(|(_, l)| l.started).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(state.clone(), PendingLogin { verifier, nonce, started: now });
        Some(state)
    }

    /// Takes the login `state` (once), if it has not expired.
    pub(crate) fn finish_login(&self, state: &str) -> Option<PendingLogin> {
        let login = self.logins.lock().unwrap_or_else(PoisonError::into_inner).remove(state)?;
        (login.started.elapsed() < LOGIN_TTL).then_some(login)
    }
}

/// Constant-time equality of two tokens.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in `headers`.
pub(crate) fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: `HttpOnly`, `Secure`, `SameSite=Lax`, scoped to `/console`; `max_age`
/// 0 deletes it.
pub(crate) fn set_cookie(name: &str, value: &str, max_age: Duration) -> String {
    format!("{name}={value}; Path=/console; Max-Age={}; HttpOnly; Secure; SameSite=Lax", max_age.as_secs())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn user() -> User {
        User { name: "u".into(), caller: None, admin: false, method: "test" }
    }

    #[test]
    fn sessions_are_bounded_and_expire() {
        let s = Sessions::new(Duration::from_secs(60), 2);
        let a = s.create(user()).unwrap();
        let b = s.create(user()).unwrap();
        let c = s.create(user()).unwrap();
        assert!(s.get(&a).is_none(), "the oldest goes first");
        assert!(s.get(&b).is_some() && s.get(&c).is_some());
        assert_ne!(s.get(&b).unwrap().csrf, s.get(&c).unwrap().csrf);
        s.remove(&b);
        assert!(s.get(&b).is_none());
        let gone = Sessions::new(Duration::ZERO, 2);
        let x = gone.create(user()).unwrap();
        assert!(gone.get(&x).is_none());
    }

    #[test]
    fn logins_are_taken_once() {
        let s = Sessions::new(Duration::from_secs(60), 4);
        let state = s.start_login("v".into(), "n".into()).unwrap();
        assert_eq!(s.finish_login(&state).unwrap().verifier, "v");
        assert!(s.finish_login(&state).is_none());
    }

    #[test]
    fn cookies_are_read_and_written_strictly() {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::COOKIE, "a=1; omc_session=xyz; b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "omc"), None);
        let c = set_cookie(SESSION_COOKIE, "v", Duration::from_secs(5));
        assert!(c.contains("HttpOnly") && c.contains("Secure") && c.contains("SameSite=Lax"));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
