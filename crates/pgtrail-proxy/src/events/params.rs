//! Bind parameters in events (`[proxy] params`) and masked columns.
//!
//! - `none`: left out.
//! - `hash`: each value becomes HMAC-SHA-256 of its bytes (text or binary
//!   format, as sent) under the operator's key (`params_hash_key_file`),
//!   hex: equal values stay equal, and without the key a guess cannot be
//!   checked (an unkeyed hash of a phone number is reversed by hashing all
//!   phone numbers, so there is none).
//! - `full`: text values as sent (credentials in a connection string
//!   redacted), binary ones as `\x` and hex; a value bound to a masked
//!   column (`[proxy] mask`, `mask_redact`) is masked: the keyed hash (or
//!   `***` without a key) or `***`. Which parameter binds which column is
//!   the analyzer's rule ([`pgtrail_sql::Statement::binds`]); a parameter of
//!   a statement touching a masked table that binds no known column is
//!   `***` (it may be compared with a masked column in a way the rule does
//!   not follow).

use std::collections::HashMap;

use pgtrail_core::config::{ParamsPolicy, ProxyConfig};
use pgtrail_sql::Object;
use pgtrail_wire::frontend::Parameters;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::EventsError;

/// What a masked value becomes without a keyed hash.
pub(crate) const MASKED: &str = "***";

/// How a masked column's values are replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MaskMode {
    Hash,
    Redact,
}

/// The HMAC-SHA-256 key, as its padded inner and outer keys.
#[derive(Clone)]
pub(crate) struct HashKey {
    ipad: [u8; 64],
    opad: [u8; 64],
}

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(hidden)")
    }
}

impl HashKey {
    /// Shortest key accepted, in bytes.
    pub(crate) const MIN_LEN: usize = 16;

    pub(crate) fn new(key: &[u8]) -> HashKey {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for (i, b) in block.iter().enumerate() {
            ipad[i] ^= b;
            opad[i] ^= b;
        }
        HashKey { ipad, opad }
    }

    /// HMAC-SHA-256 of `bytes`, hex.
    pub(crate) fn hash(&self, bytes: &[u8]) -> String {
        let inner = Sha256::new()
            .chain_update(self.ipad)
            .chain_update(bytes)
            .finalize();
        hex::encode(
            Sha256::new()
                .chain_update(self.opad)
                .chain_update(inner)
                .finalize(),
        )
    }
}

/// The parameter policy of one proxy.
#[derive(Debug, Clone)]
pub(crate) struct ParamPolicy {
    pub policy: ParamsPolicy,
    key: Option<HashKey>,
    /// (schema, table) → (column, mode).
    masks: HashMap<(String, String), Vec<(String, MaskMode)>>,
}

impl ParamPolicy {
    pub(crate) fn new(config: &ProxyConfig) -> Result<ParamPolicy, EventsError> {
        let key = match &config.params_hash_key_file {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|source| EventsError::Key {
                    path: path.clone(),
                    source,
                })?;
                // A key written by `echo` ends in a newline: not part of it.
                let trimmed = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
                if trimmed.len() < HashKey::MIN_LEN {
                    return Err(EventsError::Config {
                        key: "proxy.params_hash_key_file".into(),
                        reason: format!(
                            "{path}: the key must be at least {} bytes",
                            HashKey::MIN_LEN
                        ),
                    });
                }
                Some(HashKey::new(trimmed))
            }
            None => None,
        };
        if config.params == ParamsPolicy::Hash && key.is_none() {
            return Err(EventsError::Config {
                key: "proxy.params".into(),
                reason: "\"hash\" needs params_hash_key_file (an unkeyed hash is reversed by \
                         hashing guesses)"
                    .into(),
            });
        }
        let mut masks: HashMap<(String, String), Vec<(String, MaskMode)>> = HashMap::new();
        for (names, mode, key) in [
            (&config.mask, MaskMode::Hash, "proxy.mask"),
            (&config.mask_redact, MaskMode::Redact, "proxy.mask_redact"),
        ] {
            for name in names {
                let mut parts = name.rsplitn(3, '.');
                let (Some(column), Some(table), Some(schema)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(EventsError::Config {
                        key: key.into(),
                        reason: format!("'{name}' is not schema.table.column"),
                    });
                };
                masks
                    .entry((schema.to_string(), table.to_string()))
                    .or_default()
                    .push((column.to_string(), mode));
            }
        }
        Ok(ParamPolicy {
            policy: config.params,
            key,
            masks,
        })
    }

    /// Whether any of `objects` has masked columns.
    pub(crate) fn masks_any(&self, objects: &[Object]) -> bool {
        !self.masks.is_empty()
            && objects.iter().any(|o| {
                o.schema
                    .as_ref()
                    .is_some_and(|s| self.masks.contains_key(&(s.clone(), o.name.clone())))
                    // An unresolved schema: any table of that name.
                    || (o.schema.is_none() && self.masks.keys().any(|(_, t)| *t == o.name))
            })
    }

    /// How a value bound to `column` of a statement on `objects` is masked:
    /// the strictest mode any of the statement's tables gives the column.
    fn mode_of(&self, column: &str, objects: &[Object]) -> Option<MaskMode> {
        let mut mode = None;
        for o in objects {
            let lists = self.masks.iter().filter(|((s, t), _)| {
                *t == o.name && o.schema.as_ref().is_none_or(|schema| schema == s)
            });
            for (_, columns) in lists {
                for (c, m) in columns {
                    if c == column {
                        mode = match (mode, m) {
                            (Some(MaskMode::Redact), _) | (_, MaskMode::Redact) => {
                                Some(MaskMode::Redact)
                            }
                            _ => Some(MaskMode::Hash),
                        };
                    }
                }
            }
        }
        mode
    }

    /// The event's `params`: `None` with `none`, or when nothing was bound.
    /// `binds(n)`: the column parameter `n` (1-based) is bound to, if known.
    pub(crate) fn values(
        &self,
        params: &Parameters,
        objects: &[Object],
        binds: &dyn Fn(usize) -> Option<String>,
    ) -> Option<Vec<Value>> {
        if self.policy == ParamsPolicy::None || params.values.is_empty() {
            return None;
        }
        let masked_table = self.masks_any(objects);
        let out = params
            .values
            .iter()
            .enumerate()
            .map(|(i, value)| {
                let Some(bytes) = value else {
                    return Value::Null;
                };
                let binary = params.format(i) == 1;
                match self.policy {
                    ParamsPolicy::Hash => match &self.key {
                        Some(key) => Value::String(key.hash(bytes)),
                        None => Value::String(MASKED.into()),
                    },
                    _ => {
                        let mode = if masked_table {
                            match binds(i + 1) {
                                Some(column) => self.mode_of(&column, objects),
                                None => Some(MaskMode::Redact),
                            }
                        } else {
                            None
                        };
                        match (mode, &self.key) {
                            (Some(MaskMode::Hash), Some(key)) => Value::String(key.hash(bytes)),
                            (Some(_), _) => Value::String(MASKED.into()),
                            (None, _) => Value::String(shown(bytes, binary)),
                        }
                    }
                }
            })
            .collect();
        Some(out)
    }
}

/// A value as `full` shows it: text as sent (credentials of a connection
/// string redacted), anything else as `\x` and hex.
fn shown(bytes: &[u8], binary: bool) -> String {
    match (binary, std::str::from_utf8(bytes)) {
        (false, Ok(text)) if !text.contains('\0') => pgtrail_sql::redact_value(text),
        _ => format!("\\x{}", hex::encode(bytes)),
    }
}
