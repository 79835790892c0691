//! Column masking on logical replication capture, the same as trigger
//! capture's `track --mask`: a masked value becomes the keyed hash of its
//! text (HMAC-SHA256, hex) or `***`; null stays null.
//!
//! **The same key.** Trigger capture keeps its key in the captured
//! database, in `pgtrail.capture_settings` (as HMAC's inner and outer pads,
//! readable only by its owner and superusers). Logical replication capture
//! reads the same row at start ([`load_key`]), or creates it when trigger
//! capture is not installed ([`ensure_key`], run by `--setup`), so a value
//! masked on one path equals the same value masked on the other. The key
//! never leaves the database except into the consumer's memory: it is not
//! configured, not an argument, and never printed (its `Debug` says so).
//!
//! **The same text.** Trigger capture hashes `image ->> column` of the row
//! as JSON; here the hashed text is the JSON value's text the same way: a
//! string as is, a number's digits, `true`/`false`, a JSON document as
//! `jsonb` prints it. Types whose JSON text differs between the two paths
//! anyway (timestamps: `T` and the session's zone on the trigger path) hash
//! differently, as their unmasked values differ.

use std::collections::HashMap;

use pgtrail_core::event::JsonObject;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::catalog::catalog_error;
use crate::CdcError;

/// How a masked column's values are replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskMode {
    /// The keyed hash: equal values stay equal.
    Hash,
    /// `***`.
    Redact,
}

/// The masking key, as HMAC-SHA256's padded inner and outer keys.
#[derive(Clone)]
pub struct MaskKey {
    ipad: Vec<u8>,
    opad: Vec<u8>,
}

impl std::fmt::Debug for MaskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MaskKey(hidden)")
    }
}

impl MaskKey {
    /// The key from its pads (each 64 bytes: the key XOR 0x36 and 0x5c).
    pub fn from_pads(ipad: Vec<u8>, opad: Vec<u8>) -> Option<MaskKey> {
        (ipad.len() == 64 && opad.len() == 64).then_some(MaskKey { ipad, opad })
    }

    /// HMAC-SHA256 of `text`, hex: `pgtrail.keyed_hash(text)` of trigger capture.
    pub fn hash(&self, text: &str) -> String {
        let inner = Sha256::new()
            .chain_update(&self.ipad)
            .chain_update(text.as_bytes())
            .finalize();
        hex::encode(
            Sha256::new()
                .chain_update(&self.opad)
                .chain_update(inner)
                .finalize(),
        )
    }
}

/// Which columns are masked, and how (`[replication] mask`, `mask_redact`).
#[derive(Debug, Clone, Default)]
pub struct Masking {
    columns: HashMap<(String, String), Vec<(String, MaskMode)>>,
    key: Option<MaskKey>,
}

impl Masking {
    /// From `schema.table.column` names: `hash` ones get the keyed hash,
    /// `redact` ones `***`. Names are taken as written (no case folding);
    /// a name with fewer than three parts is refused.
    pub fn parse(hash: &[String], redact: &[String]) -> Result<Masking, String> {
        let mut masking = Masking::default();
        for (names, mode) in [(hash, MaskMode::Hash), (redact, MaskMode::Redact)] {
            for name in names {
                let mut parts = name.rsplitn(3, '.');
                let (Some(column), Some(table), Some(schema)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(format!(
                        "'{name}' is not schema.table.column (e.g. public.users.ssn)"
                    ));
                };
                if [schema, table, column].iter().any(|p| p.is_empty()) {
                    return Err(format!("'{name}' has an empty part"));
                }
                masking
                    .columns
                    .entry((schema.to_string(), table.to_string()))
                    .or_default()
                    .push((column.to_string(), mode));
            }
        }
        Ok(masking)
    }

    /// Whether any column is masked.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// Whether a keyed hash is asked for (then [`Masking::with_key`] is needed).
    pub fn needs_key(&self) -> bool {
        self.columns
            .values()
            .flatten()
            .any(|(_, mode)| *mode == MaskMode::Hash)
    }

    /// Sets the key of the keyed hash.
    pub fn with_key(mut self, key: MaskKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Masks the columns of `schema.table` present in `image`.
    pub fn apply(&self, schema: &str, table: &str, image: &mut JsonObject) {
        let Some(columns) = self.columns.get(&(schema.to_string(), table.to_string())) else {
            return;
        };
        for (column, mode) in columns {
            let Some(value) = image.get_mut(column) else {
                continue;
            };
            if value.is_null() {
                continue;
            }
            *value = match (mode, &self.key) {
                (MaskMode::Hash, Some(key)) => Value::String(key.hash(&json_text(value))),
                // No key (refused at start, see `needs_key`): never the value.
                _ => Value::String("***".into()),
            };
        }
    }

    /// Whether `schema.table` has masked columns.
    pub fn masks(&self, schema: &str, table: &str) -> bool {
        self.columns
            .contains_key(&(schema.to_string(), table.to_string()))
    }
}

/// The text `jsonb ->> key` gives for `value`.
fn json_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => jsonb_text(other),
    }
}

/// A JSON document as `jsonb` prints it: `", "` and `": "` separators, object
/// keys shortest first, then bytewise.
fn jsonb_text(value: &Value) -> String {
    match value {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(jsonb_text).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(object) => {
            let mut keys: Vec<&String> = object.keys().collect();
            keys.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
            let pairs: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}: {}",
                        Value::String(k.clone()),
                        jsonb_text(&object[k.as_str()])
                    )
                })
                .collect();
            format!("{{{}}}", pairs.join(", "))
        }
        other => other.to_string(),
    }
}

/// Reads the masking key trigger capture (or [`ensure_key`]) keeps in the
/// captured database.
pub async fn load_key(client: &Client) -> Result<MaskKey, CdcError> {
    let exists: bool = client
        .query_one(
            "select to_regclass('pgtrail.capture_settings') is not null",
            &[],
        )
        .await
        .map_err(catalog_error("looking for the masking key"))?
        .get(0);
    if !exists {
        return Err(CdcError::NotReady {
            problem: "masked columns are configured ([replication] mask) but the database has no masking key".into(),
            hint: "run pgtrail replicate --setup once: it creates the key (trigger capture's install does too, and both paths then share it)".into(),
        });
    }
    let row = client
        .query_one(
            "select mask_ipad, mask_opad from pgtrail.capture_settings",
            &[],
        )
        .await
        .map_err(catalog_error(
            "reading the masking key (the capture role must own schema pgtrail or be a superuser)",
        ))?;
    MaskKey::from_pads(row.get(0), row.get(1)).ok_or_else(|| CdcError::Unexpected {
        action: "reading the masking key".into(),
        detail: "pgtrail.capture_settings holds a key of the wrong size".into(),
    })
}

/// `masking` with the database's key when it needs one.
pub async fn keyed(
    client: &Client,
    masking: &Masking,
) -> Result<std::sync::Arc<Masking>, CdcError> {
    let masking = if masking.needs_key() {
        masking.clone().with_key(load_key(client).await?)
    } else {
        masking.clone()
    };
    Ok(std::sync::Arc::new(masking))
}

/// Creates the masking key if the database has none, the way trigger
/// capture's install does (same table, same random key size), so that
/// installing trigger capture later keeps it.
pub async fn ensure_key(client: &Client) -> Result<(), CdcError> {
    let mut key = [0u8; 32];
    getrandom::getrandom(&mut key).map_err(|e| CdcError::Unexpected {
        action: "making a masking key".into(),
        detail: e.to_string(),
    })?;
    let pad = |byte: u8| -> Vec<u8> {
        (0..64)
            .map(|i| key.get(i).copied().unwrap_or(0) ^ byte)
            .collect()
    };
    client
        .batch_execute(
            "create schema if not exists pgtrail;
             create table if not exists pgtrail.capture_settings (
                 singleton boolean primary key default true check (singleton),
                 install_id uuid not null,
                 mask_ipad bytea not null,
                 mask_opad bytea not null);
             revoke all on pgtrail.capture_settings from public;",
        )
        .await
        .map_err(catalog_error("creating the masking key's table"))?;
    client
        .execute(
            "insert into pgtrail.capture_settings (install_id, mask_ipad, mask_opad) \
             values (gen_random_uuid(), $1, $2) on conflict (singleton) do nothing",
            &[&pad(0x36), &pad(0x5c)],
        )
        .await
        .map_err(catalog_error("storing the masking key"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> MaskKey {
        MaskKey::from_pads(vec![0x36; 64], vec![0x5c; 64]).expect("pads")
    }

    #[test]
    fn the_keyed_hash_is_hmac_sha256_of_the_text() {
        // HMAC-SHA256 with an empty key, a published test vector.
        assert_eq!(
            key().hash(""),
            "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad"
        );
    }

    #[test]
    fn masked_columns_of_the_named_table_only() {
        let masking = Masking::parse(
            &["public.users.ssn".into(), "public.users.meta".into()],
            &["public.cards.number".into()],
        )
        .expect("valid")
        .with_key(key());
        let mut image = json!({"ssn": "123-45-6789", "name": "Bob", "meta": {"b": 1, "aa": [1, "x"]}, "n": null})
            .as_object()
            .cloned()
            .expect("object");
        masking.apply("public", "users", &mut image);
        assert_eq!(image["ssn"], key().hash("123-45-6789"));
        assert_eq!(image["meta"], key().hash(r#"{"b": 1, "aa": [1, "x"]}"#));
        assert_eq!(image["name"], "Bob");
        let mut card = json!({"number": 4111, "ssn": "x", "none": null})
            .as_object()
            .cloned()
            .expect("object");
        masking.apply("public", "cards", &mut card);
        assert_eq!(card["number"], "***");
        assert_eq!(card["ssn"], "x");
        let mut other = json!({"ssn": "1"}).as_object().cloned().expect("object");
        masking.apply("other", "users", &mut other);
        assert_eq!(other["ssn"], "1");
    }

    #[test]
    fn names_must_have_three_parts_and_the_key_stays_hidden() {
        assert!(Masking::parse(&["users.ssn".into()], &[]).is_err());
        assert!(Masking::parse(&["public..ssn".into()], &[]).is_err());
        assert!(Masking::parse(&["my.schema.t.c".into()], &[]).is_ok());
        assert_eq!(format!("{:?}", key()), "MaskKey(hidden)");
        let masking = Masking::parse(&["a.b.c".into()], &[]).expect("valid");
        assert!(masking.needs_key());
        // Without a key a hashed column is still never stored as is.
        let mut image = json!({"c": "v"}).as_object().cloned().expect("object");
        masking.apply("a", "b", &mut image);
        assert_eq!(image["c"], "***");
    }
}
