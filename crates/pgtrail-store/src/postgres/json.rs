//! JSON columns as text, through `pgtrail_core::json` both ways.
//!
//! tokio-postgres's `Json<T>` goes through serde_json, which stops reading
//! at 128 levels, reads its private number marker key as a number, and
//! recurses once per level when writing. These wrappers carry the text
//! instead: [`JsonText`] binds text written by core's writer, [`RawJson`]
//! hands back the text Postgres sent for core's reader, [`JsonStr`] binds
//! borrowed text (an event's body). The trigger sealer reads the audited
//! database's row images with [`RawJson`] too.

use std::error::Error;

use bytes::BytesMut;
use postgres_types::{accepts, to_sql_checked, FromSql, IsNull, ToSql, Type};

/// The version byte of the binary `jsonb` format.
const JSONB_VERSION: u8 = 1;

/// JSON text to bind to a `json` or `jsonb` parameter (or COPY column).
#[derive(Debug)]
pub struct JsonText(pub String);

impl ToSql for JsonText {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.extend_from_slice(&[JSONB_VERSION]);
        }
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    accepts!(JSON, JSONB);
    to_sql_checked!();
}

/// Borrowed JSON text to bind like [`JsonText`] (an event's body, written
/// once by the canonical encoder and bound without a copy).
#[derive(Debug)]
pub struct JsonStr<'a>(pub &'a str);

impl ToSql for JsonStr<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.extend_from_slice(&[JSONB_VERSION]);
        }
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    // TEXT: the body column (schema 5).
    accepts!(JSON, JSONB, TEXT);
    to_sql_checked!();
}

/// The text of a `json` or `jsonb` value (or of a `text` column holding
/// JSON, such as the body) as Postgres sent it.
#[derive(Debug, Clone, Copy)]
pub struct RawJson<'a>(pub &'a str);

impl<'a> FromSql<'a> for RawJson<'a> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        let text = if *ty == Type::JSONB {
            match raw.split_first() {
                Some((&JSONB_VERSION, text)) => text,
                _ => return Err("unsupported jsonb binary format version".into()),
            }
        } else {
            raw
        };
        Ok(RawJson(std::str::from_utf8(text)?))
    }

    // TEXT: the body column (schema 5).
    accepts!(JSON, JSONB, TEXT);
}
