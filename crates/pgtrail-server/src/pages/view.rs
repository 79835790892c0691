//! What the templates show of an event: plain strings made here, so the
//! templates only place them (askama escapes every one).

use pgtrail_core::event::JsonObject;
use pgtrail_core::filter::{canonical_pk, TableName};
use pgtrail_core::Event;
use serde_json::Value;

use crate::auth::Principal;

/// `event` as `who` may see it: `auth::present` decides, for the pages as
/// for the API.
pub fn present(who: &Principal, event: Event) -> Event {
    crate::auth::present(who, event)
}

/// An identity as the page shows it: whether the server vouches for it.
pub struct Who {
    pub name: String,
    /// The application said so (a session setting, a comment, the proxy's
    /// client): a claim, shown as one.
    pub claimed: bool,
    /// How the claim came (`setting`, `comment`, `proxy`), or why it is one.
    pub via: String,
}

/// One line of a results list.
pub struct EventLine {
    pub seq: i64,
    pub time: String,
    pub source: String,
    pub kind: String,
    pub who: Option<Who>,
    pub db_user: String,
    pub table: String,
    pub row_link: Option<String>,
    pub pk: String,
    pub operation: String,
    pub failed: bool,
    pub outcome: String,
}

impl EventLine {
    pub fn new(event: &Event) -> Self {
        let table = event.qualified_table().unwrap_or_default();
        EventLine {
            seq: event.seq.unwrap_or_default(),
            time: time(event.captured_at),
            source: event.source.to_string(),
            kind: event.kind.to_string(),
            who: who(event),
            db_user: event.db_user.clone().unwrap_or_default(),
            row_link: row_link(event),
            pk: event.pk.as_ref().map(pk_text).unwrap_or_default(),
            table,
            operation: event.operation.clone().unwrap_or_default(),
            failed: event.failed(),
            outcome: outcome(event),
        }
    }
}

/// `ok`, or the SQLSTATE and the error.
pub fn outcome(event: &Event) -> String {
    if !event.failed() {
        return "ok".into();
    }
    match (&event.sqlstate, &event.error) {
        (Some(state), Some(error)) => format!("{state} {error}"),
        (Some(state), None) => state.clone(),
        (None, Some(error)) => error.clone(),
        (None, None) => "failed".into(),
    }
}

/// The application's user, marked as a claim unless the server vouches for it.
pub fn who(event: &Event) -> Option<Who> {
    let name = event.app_user.clone()?;
    // pgtrail serve's own records name the principal it authenticated.
    if event.source == pgtrail_core::Source::Server {
        return Some(Who {
            name,
            claimed: false,
            via: "pgtrail serve".into(),
        });
    }
    let vouched = event
        .provenance
        .as_ref()
        .is_some_and(|p| p.vouched.iter().any(|f| f == "app_user"));
    let channels = event
        .provenance
        .as_ref()
        .map(|p| {
            p.channels("app_user")
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    Some(Who {
        name,
        claimed: !vouched,
        via: if channels.is_empty() {
            "the application".into()
        } else {
            channels
        },
    })
}

/// A time as pages show it: UTC, to the millisecond.
pub fn time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
}

/// A JSON value as text: strings bare, NULL as `NULL`, the rest as JSON.
pub fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "NULL".into(),
        other => pgtrail_core::json::to_string(other),
    }
}

/// A key as `col=value[,col=value]` when that reads back the same, else its JSON.
pub fn pk_text(pk: &JsonObject) -> String {
    let simple = pk.iter().all(|(k, v)| {
        !k.contains(['=', ','])
            && !k.trim().is_empty()
            && k.trim() == k
            && !value_text(v).contains(',')
            // The parser trims the whole key text.
            && value_text(v).trim() == value_text(v)
            && !matches!(v, Value::Object(_) | Value::Array(_) | Value::Null)
    });
    if simple && !pk.is_empty() {
        pk.iter()
            .map(|(k, v)| format!("{k}={}", value_text(v)))
            .collect::<Vec<_>>()
            .join(",")
    } else {
        canonical_pk(pk)
    }
}

/// The table as the row page's path names it: `schema.table`, quoted only
/// where a name holds a dot or a quote.
pub fn table_text(table: &TableName) -> String {
    let plain = |s: &str| !s.contains(['.', '"']) && s.trim() == s;
    if plain(&table.table) && table.schema.as_deref().is_none_or(plain) {
        table.to_string()
    } else {
        table.index_name()
    }
}

/// The link to the page of the row `event` changed.
pub fn row_link(event: &Event) -> Option<String> {
    let pk = event.pk.as_ref().filter(|pk| !pk.is_empty())?;
    let table = TableName {
        schema: event.schema.clone(),
        table: event.table.clone()?,
    };
    Some(format!(
        "/rows/{}/{}",
        encode(&table_text(&table)),
        encode(&pk_text(pk))
    ))
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query string from pairs, empty values left out.
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use pgtrail_core::filter::PkFilter;
    use serde_json::json;

    #[test]
    fn keys_and_tables_in_links_read_back_as_the_same_row() {
        for pk in [
            json!({"id": "42"}),
            json!({"a": "1", "b": "x,y"}),
            json!({"note": "a=b"}),
            json!({"we,ird": "v"}),
            json!({"id": " padded "}),
        ] {
            let pk = pk.as_object().cloned().expect("object");
            let text = pk_text(&pk);
            assert_eq!(PkFilter::parse(&text).expect(&text).0, pk, "{text}");
        }
        for (schema, table) in [
            (Some("public"), "orders"),
            (Some("a.b"), "c\"d"),
            (None, "t.1"),
        ] {
            let name = TableName {
                schema: schema.map(str::to_string),
                table: table.to_string(),
            };
            assert_eq!(TableName::parse(&table_text(&name)).expect("parses"), name);
        }
        assert_eq!(encode("a b/é?&"), "a%20b%2F%C3%A9%3F%26");
    }

    #[test]
    fn a_viewer_never_sees_statement_parameters() {
        let mut event = Event::new(pgtrail_core::Source::Proxy, pgtrail_core::Kind::Statement);
        event.params = Some(vec![json!("secret")]);
        let viewer = Principal::new("v", Role::Viewer);
        assert_eq!(present(&viewer, event.clone()).params, None);
        let auditor = Principal::local_operator();
        assert!(present(&auditor, event).params.is_some());
    }
}
