//! API tokens: who may look, and with which role.
//!
//! A token is `pgt_` and 32 random bytes (base64url), shown once by
//! `pgtrail token create`. The tokens file (`[server] tokens_file`, 0600)
//! keeps its SHA-256, never the token: 256 random bits cannot be guessed
//! or brute-forced from their hash, so a slow password hash (argon2) would
//! add nothing but a few milliseconds of CPU to every API call.
//!
//! The file, not the store: the store is the trail that `verify` checks
//! and a table of credentials is no event; a file works the same with both
//! stores and with a read-only store role. Whoever can write the file can
//! mint a token (as with `authorized_keys`); each token's creation and
//! revocation through `pgtrail token` is an event in the trail, so a token
//! whose creation is not there was written by hand (docs/security.md).
//!
//! The server re-reads the file when it changes, so a revocation takes
//! effect on the next request, sessions made with the token included. A
//! file it cannot read or parse lets nobody in (not even the local
//! operator) until it is fixed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::auth::Role;

/// The prefix of every token: recognisable in a secret scanner and a log.
pub const TOKEN_PREFIX: &str = "pgt_";

/// Why the tokens file cannot be used or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The file cannot be read, written or replaced.
    #[error("tokens file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a tokens file.
    #[error("tokens file {path} is not valid: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What the parser said.
        reason: String,
    },
    /// A token with this name exists already.
    #[error("a token named '{0}' exists already (revoke it first, or choose another name)")]
    Exists(String),
    /// No token has this name.
    #[error("no token named '{0}'")]
    NotFound(String),
    /// The name is empty, too long or has characters outside `[A-Za-z0-9._@-]`.
    #[error("invalid token name '{0}': use 1 to 64 of A-Z a-z 0-9 . _ @ -")]
    Name(String),
    /// The system's random source failed.
    #[error("cannot draw random bytes: {0}")]
    Random(String),
}

/// One token as the file keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds it: recorded in each access event it makes.
    pub name: String,
    /// What it may see.
    pub role: Role,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensDocument {
    #[serde(default, rename = "token")]
    tokens: Vec<TokenEntry>,
}

/// The tokens of one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenSet {
    entries: Vec<TokenEntry>,
}

impl TokenSet {
    /// Reads `path`; a missing file holds no token.
    pub fn load(path: &Path) -> Result<TokenSet, TokenError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TokenSet::default()),
            Err(source) => return Err(io_error(path, source)),
        };
        let document: TokensDocument = toml::from_str(&text).map_err(|e| TokenError::Invalid {
            path: path.display().to_string(),
            reason: e.message().to_string(),
        })?;
        for entry in &document.tokens {
            if decode_hash(&entry.sha256).is_none() {
                return Err(TokenError::Invalid {
                    path: path.display().to_string(),
                    reason: format!("token '{}': sha256 is not 64 hex digits", entry.name),
                });
            }
        }
        Ok(TokenSet {
            entries: document.tokens,
        })
    }

    /// Writes the set to `path` (0600), replacing it atomically.
    pub fn save(&self, path: &Path) -> Result<(), TokenError> {
        let document = TokensDocument {
            tokens: self.entries.clone(),
        };
        let body = toml::to_string(&document).map_err(|e| TokenError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let text = format!(
            "# pgtrail API tokens (`pgtrail token create|list|revoke`): the SHA-256 of\n\
             # each token, never the token. Whoever can write this file can let anyone in.\n\n\
             {body}"
        );
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut temp = tempfile_in(&dir, path)?;
        temp.1
            .write_all(text.as_bytes())
            .and_then(|()| temp.1.sync_all())
            .map_err(|e| io_error(&temp.0, e))?;
        std::fs::rename(&temp.0, path).map_err(|e| io_error(path, e))?;
        Ok(())
    }

    /// The tokens, in creation order.
    pub fn entries(&self) -> &[TokenEntry] {
        &self.entries
    }

    /// Whether the set holds no token.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds a fresh token named `name`; returns the token, which exists
    /// nowhere else (show it once).
    pub fn create(&mut self, name: &str, role: Role) -> Result<String, TokenError> {
        check_name(name)?;
        if self.entries.iter().any(|entry| entry.name == name) {
            return Err(TokenError::Exists(name.to_string()));
        }
        let token = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes()?)
        );
        self.entries.push(TokenEntry {
            name: name.to_string(),
            role,
            sha256: hex::encode(hash(&token)),
            created_at: Utc::now(),
        });
        Ok(token)
    }

    /// Removes the token named `name`.
    pub fn revoke(&mut self, name: &str) -> Result<TokenEntry, TokenError> {
        let index = self
            .entries
            .iter()
            .position(|entry| entry.name == name)
            .ok_or_else(|| TokenError::NotFound(name.to_string()))?;
        Ok(self.entries.remove(index))
    }

    /// The entry whose hash is the hash of `token`. Every entry is compared,
    /// each in constant time, so the time taken says nothing about which
    /// (if any) came close.
    pub fn find(&self, token: &str) -> Option<&TokenEntry> {
        let presented = hash(token);
        let mut found = None;
        for entry in &self.entries {
            if let Some(stored) = decode_hash(&entry.sha256) {
                if constant_time_eq(&stored, &presented) && found.is_none() {
                    found = Some(entry);
                }
            }
        }
        found
    }

    /// Whether the token `name` with hash `sha256` is still in the set
    /// (a session made with a token dies with it).
    pub fn holds(&self, name: &str, sha256: &str) -> bool {
        self.entries
            .iter()
            .any(|entry| entry.name == name && entry.sha256 == sha256)
    }
}

/// The tokens file as the server sees it: re-read when it changes.
#[derive(Debug)]
pub struct TokensFile {
    path: PathBuf,
    cached: Mutex<Cached>,
}

#[derive(Debug)]
struct Cached {
    stamp: Option<Stamp>,
    tokens: Result<Arc<TokenSet>, String>,
}

/// What tells a changed file: size, modification time, inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl TokensFile {
    /// The file at `path` (it need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> TokensFile {
        TokensFile {
            path: path.into(),
            cached: Mutex::new(Cached {
                stamp: None,
                tokens: Ok(Arc::new(TokenSet::default())),
            }),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current tokens, re-read if the file changed since the last call;
    /// `Err` (with the reason) when it cannot be read: nobody gets in.
    pub fn current(&self) -> Result<Arc<TokenSet>, String> {
        let stamp = stamp(&self.path);
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if cached.stamp.is_none() || cached.stamp != stamp {
            cached.tokens = TokenSet::load(&self.path)
                .map(Arc::new)
                .map_err(|e| e.to_string());
            if let Err(reason) = &cached.tokens {
                tracing::error!(%reason, "the tokens file cannot be used: nobody gets in");
            }
            cached.stamp = stamp;
        }
        cached.tokens.clone()
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode: meta.ino(),
    })
}

/// SHA-256 of a token.
fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn decode_hash(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text).ok()?;
    bytes.try_into().ok()
}

/// Compares two byte strings without stopping at the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// 32 bytes from the system's random source.
pub(crate) fn random_bytes() -> Result<[u8; 32], TokenError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(bytes)
}

fn check_name(name: &str) -> Result<(), TokenError> {
    let fine = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if fine {
        Ok(())
    } else {
        Err(TokenError::Name(name.to_string()))
    }
}

fn io_error(path: &Path, source: std::io::Error) -> TokenError {
    TokenError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A new file beside `path`, created 0600 (never readable by others, even
/// for a moment), to be renamed over it.
fn tempfile_in(dir: &Path, path: &Path) -> Result<(PathBuf, std::fs::File), TokenError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tokens".into());
    let suffix = hex::encode(&random_bytes()?[..8]);
    let temp = dir.join(format!(".{name}.{suffix}.tmp"));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|e| io_error(&temp, e))?;
    Ok((temp, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_found_by_itself_only_and_the_file_keeps_no_token() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("tokens.toml");
        let mut set = TokenSet::default();
        let token = set.create("ann", Role::Viewer).expect("create");
        assert!(token.starts_with(TOKEN_PREFIX));
        assert_eq!(token.len(), TOKEN_PREFIX.len() + 43);
        set.save(&path).expect("save");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains(&token[TOKEN_PREFIX.len()..]));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let loaded = TokenSet::load(&path).expect("load");
        assert_eq!(loaded.find(&token).map(|e| e.name.as_str()), Some("ann"));
        let mut wrong = token.clone();
        wrong.pop();
        wrong.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(loaded.find(&wrong).is_none());
        assert!(loaded.find("").is_none());
        // The stored hash is not a token.
        assert!(loaded.find(&loaded.entries()[0].sha256).is_none());
    }

    #[test]
    fn names_are_unique_and_plain() {
        let mut set = TokenSet::default();
        set.create("ann", Role::Auditor).expect("create");
        assert!(matches!(
            set.create("ann", Role::Viewer),
            Err(TokenError::Exists(_))
        ));
        for bad in ["", "a b", "x\ny", "<script>", &"a".repeat(65)] {
            assert!(matches!(
                set.create(bad, Role::Viewer),
                Err(TokenError::Name(_))
            ));
        }
        assert!(set.revoke("ann").is_ok());
        assert!(matches!(set.revoke("ann"), Err(TokenError::NotFound(_))));
    }

    #[test]
    fn the_server_sees_a_revocation_and_refuses_a_broken_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("tokens.toml");
        let file = TokensFile::new(&path);
        assert!(file.current().expect("no file: no token").is_empty());
        let mut set = TokenSet::default();
        let token = set.create("ann", Role::Auditor).expect("create");
        set.save(&path).expect("save");
        assert!(file.current().expect("read").find(&token).is_some());
        set.revoke("ann").expect("revoke");
        set.save(&path).expect("save");
        assert!(file.current().expect("read").find(&token).is_none());
        std::fs::write(&path, "[[token]]\nname = 1\n").expect("write");
        assert!(file.current().is_err());
    }
}
