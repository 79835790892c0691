//! serde adapters for the `Event`'s JSON fields (`context`, `pk`, `old`,
//! `new`, `params`): they go through this module's reader and writer, so an
//! event read back from a store or an export is the event that was hashed,
//! at any depth and with any keys.
//!
//! With serde_json, a field is read as a `RawValue` (skipped over without
//! recursion, no depth limit) and then parsed here; it is written as the
//! `RawValue` of this module's writer.

use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::event::JsonObject;

fn read<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    let Some(raw) = Option::<Box<RawValue>>::deserialize(deserializer)? else {
        return Ok(None);
    };
    super::parse(raw.get()).map(Some).map_err(D::Error::custom)
}

/// Writes an optional object (`None` is skipped by the field's attributes).
pub(crate) fn serialize_object<S: Serializer>(
    value: &Option<JsonObject>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(object) => {
            let text = super::write::object_to_string(object);
            let raw = RawValue::from_string(text).map_err(S::Error::custom)?;
            raw.serialize(serializer)
        }
        None => serializer.serialize_none(),
    }
}

/// Reads an optional object.
pub(crate) fn deserialize_object<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<JsonObject>, D::Error> {
    match read(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(object)) => Ok(Some(object)),
        Some(_) => Err(D::Error::custom("expected a JSON object")),
    }
}

/// Writes optional bound parameters.
pub(crate) fn serialize_params<S: Serializer>(
    value: &Option<Vec<Value>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(params) => {
            let text = super::write::array_to_string(params);
            let raw = RawValue::from_string(text).map_err(S::Error::custom)?;
            raw.serialize(serializer)
        }
        None => serializer.serialize_none(),
    }
}

/// Reads optional bound parameters.
pub(crate) fn deserialize_params<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<Value>>, D::Error> {
    match read(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(params)) => Ok(Some(params)),
        Some(_) => Err(D::Error::custom("expected a JSON array")),
    }
}

/// Reads an event's `nonce`: exactly 32 lowercase hex characters, the one
/// spelling `Event::new` writes (another would be a second preimage of the
/// same commitments).
pub(crate) fn deserialize_nonce<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let Some(text) = Option::<String>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if crate::canonical::commit::nonce_bytes(&text).is_none() {
        return Err(D::Error::custom(
            "the nonce is not 32 lowercase hex characters",
        ));
    }
    Ok(Some(text))
}
