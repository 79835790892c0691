//! Browser sessions: the login page trades a token for a random session id
//! in a cookie. The cookie never holds the token; the id maps, in this
//! process's memory only, to the token's name, role and hash, and to the
//! session's CSRF token. A restart logs everyone out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::auth::Role;
use crate::tokens::{random_bytes, TokenError};

/// How long a session lasts after its login, whatever it does.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// The session cookie's name.
pub const COOKIE: &str = "pgtrail_session";

/// Most sessions kept at once: a login past it drops the oldest.
const MAX_SESSIONS: usize = 10_000;

/// One logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its hash: the session ends when the tokens file no longer has it.
    pub sha256: String,
    /// What every POST of this session must carry (form field `csrf` or
    /// header `X-CSRF-Token`).
    pub csrf: String,
    expires: Instant,
}

/// The sessions of this process.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Starts a session; returns its id (the cookie's value).
    pub fn start(&self, name: &str, role: Role, sha256: &str) -> Result<String, TokenError> {
        let id = random_text()?;
        let session = Session {
            name: name.to_string(),
            role,
            sha256: sha256.to_string(),
            csrf: random_text()?,
            expires: Instant::now() + SESSION_LIFETIME,
        };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_SESSIONS {
            let now = Instant::now();
            map.retain(|_, s| s.expires > now);
            if map.len() >= MAX_SESSIONS {
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, s)| s.expires)
                    .map(|(id, _)| id.clone())
                {
                    map.remove(&oldest);
                }
            }
        }
        map.insert(id.clone(), session);
        Ok(id)
    }

    /// The live session with this id.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(id) {
            Some(session) if session.expires > Instant::now() => Some(session.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends the session with this id.
    pub fn end(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// 32 random bytes as base64url: a session id or a CSRF token.
pub(crate) fn random_text() -> Result<String, TokenError> {
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes()?))
}
