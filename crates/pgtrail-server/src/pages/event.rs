//! An event's page: every field, who vouches for its identity fields, the
//! other events of its transaction, and its place in the chain.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use pgtrail_core::event::SERVER_FIELDS;
use pgtrail_core::Event;

use super::view::{self, EventLine};
use super::{html, PageError};
use crate::access::Access;
use crate::auth::Principal;
use crate::AppState;

/// Most of a transaction's other events shown with one event.
const MAX_TX_EVENTS: usize = 1000;

/// Identity fields an application can set (shown as claims unless vouched).
const CLAIMABLE: [&str; 3] = ["app_user", "application_name", "context"];

/// The event whose seq is `seq`, if stored.
pub async fn by_seq(state: &AppState, seq: i64) -> Result<Option<Event>, PageError> {
    if seq < 1 {
        return Ok(None);
    }
    let found = state.store.scan(seq - 1, 1).await?;
    Ok(found.into_iter().find(|e| e.seq == Some(seq)))
}

/// The other events of `event`'s transaction on its capture path (same
/// source, database, xid and commit time), oldest first
/// (`pgtrail_store::link::same_transaction`).
pub async fn transaction_of(state: &AppState, event: &Event) -> Result<Vec<Event>, PageError> {
    let (events, _) =
        pgtrail_store::link::same_transaction(state.store.as_ref(), event, MAX_TX_EVENTS).await?;
    Ok(events)
}

/// The event's transaction across capture paths: what the proxy saw run
/// beside what row capture saw change (`pgtrail_store::link`).
struct LinkedView {
    /// As `pgtrail log --tx` takes it.
    tx: String,
    statements: Vec<EventLine>,
    /// Each change, and the statement that made it (its seq and text), if
    /// the proxy saw it.
    changes: Vec<(EventLine, Option<(i64, String)>)>,
}

/// [`LinkedView`] of `event`, what `principal` may see of it.
async fn linked_of(
    state: &AppState,
    principal: &Principal,
    event: &Event,
) -> Result<Option<(LinkedView, usize)>, PageError> {
    use pgtrail_store::link;
    let found =
        link::transaction_of_event(&[state.store.as_ref()], event, link::default_skew()).await?;
    let Some((id, tx)) = found else {
        return Ok(None);
    };
    let shown = tx.statements.len() + tx.changes.len();
    let statements: Vec<Event> = tx
        .statements
        .into_iter()
        .map(|e| view::present(principal, e))
        .collect();
    let changes = tx
        .changes
        .into_iter()
        .zip(tx.made_by)
        .map(|(change, by)| {
            let maker = by
                .and_then(|i| statements.get(i))
                .map(|s| (s.seq.unwrap_or_default(), s.sql.clone().unwrap_or_default()));
            (EventLine::new(&view::present(principal, change)), maker)
        })
        .collect();
    let view = LinkedView {
        tx: id.to_string(),
        statements: statements.iter().map(EventLine::new).collect(),
        changes,
    };
    Ok(Some((view, shown)))
}

/// One identity field and who stands behind it.
struct Identity {
    field: &'static str,
    value: String,
    /// `vouched`, `claimed`, or `unmarked` (an event from before provenance).
    standing: &'static str,
    how: String,
}

#[derive(Template)]
#[template(path = "event.html")]
struct EventPage {
    principal: Principal,
    line: EventLine,
    fields: Vec<(String, String)>,
    identity: Vec<Identity>,
    transaction: Vec<EventLine>,
    xid: Option<i64>,
    window: usize,
    linked: Option<LinkedView>,
    seq: i64,
    prev_hash: String,
    hash: String,
    checkpoint: Option<String>,
    css: String,
    js: String,
}

pub async fn page(
    State(state): State<AppState>,
    principal: Principal,
    Path(seq): Path<String>,
) -> Result<Response, PageError> {
    let seq: i64 = seq
        .parse()
        .map_err(|_| PageError::BadRequest("an event's page is /events/{seq}".into()))?;
    let event = by_seq(&state, seq).await?;
    let transaction = match &event {
        Some(event) => transaction_of(&state, event).await?,
        None => Vec::new(),
    };
    let linked = match &event {
        Some(event) => linked_of(&state, &principal, event).await?,
        None => None,
    };
    let linked_count = linked.as_ref().map_or(0, |(_, n)| *n);
    state
        .record_access(
            &principal,
            Access {
                action: "event",
                target: serde_json::json!({ "seq": seq }),
                results: Some(
                    (usize::from(event.is_some()) + transaction.len() + linked_count) as u64,
                ),
            },
        )
        .await?;
    let event = event.ok_or_else(|| PageError::NotFound(format!("no event {seq}")))?;
    let event = view::present(&principal, event);
    let checkpoint = state
        .store
        .checkpoints()
        .await?
        .into_iter()
        .find(|c| c.seq >= seq)
        .map(|c| {
            format!(
                "{} checkpoint at seq {} ({} events), {}{}",
                c.kind.as_str(),
                c.seq,
                c.count,
                view::time(c.created_at),
                if c.signature.is_some() || c.note.is_some() {
                    ", signed"
                } else {
                    ", unsigned"
                }
            )
        });
    html(&EventPage {
        principal: principal.clone(),
        line: EventLine::new(&event),
        fields: fields(&event),
        identity: identity(&event),
        transaction: transaction
            .into_iter()
            .map(|e| EventLine::new(&view::present(&principal, e)))
            .collect(),
        xid: event.xid,
        window: MAX_TX_EVENTS,
        linked: linked.map(|(view, _)| view),
        seq,
        prev_hash: event.prev_hash.clone().unwrap_or_default(),
        hash: event.hash.clone().unwrap_or_default(),
        checkpoint,
        css: super::asset_path("pgtrail.css"),
        js: super::asset_path("htmx.min.js"),
    })
}

/// Every field the event has, as its JSON names it.
fn fields(event: &Event) -> Vec<(String, String)> {
    let Ok(serde_json::Value::Object(object)) = serde_json::to_value(event) else {
        return Vec::new();
    };
    object
        .iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::Object(_) | serde_json::Value::Array(_) => {
                    serde_json::to_string_pretty(v).unwrap_or_default()
                }
                other => view::value_text(other),
            };
            (k.clone(), text)
        })
        .collect()
}

fn identity(event: &Event) -> Vec<Identity> {
    let value = |field: &str| -> Option<String> {
        match field {
            "db_user" => event.db_user.clone(),
            "client_addr" => event.client_addr.clone(),
            "client_port" => event.client_port.map(|p| p.to_string()),
            "backend_pid" => event.backend_pid.map(|p| p.to_string()),
            "app_user" => event.app_user.clone(),
            "application_name" => event.application_name.clone(),
            "context" => event
                .context
                .as_ref()
                .map(pgtrail_core::json::object_to_string),
            _ => None,
        }
    };
    let provenance = event.provenance.as_ref();
    SERVER_FIELDS
        .iter()
        .chain(CLAIMABLE.iter())
        .filter_map(|field| {
            let value = value(field)?;
            let (standing, how) = match provenance {
                None => (
                    "unmarked",
                    "this event predates provenance: treat it as a claim".into(),
                ),
                Some(p) if p.vouched.iter().any(|f| f == field) => {
                    ("vouched", "reported by the database server".into())
                }
                Some(p) if !p.channels(field).is_empty() => (
                    "claimed",
                    format!(
                        "by the application, through {}",
                        p.channels(field)
                            .iter()
                            .map(|c| c.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
                Some(_) if SERVER_FIELDS.contains(field) => {
                    ("unmarked", "not marked as vouched for".into())
                }
                Some(_) => ("claimed", "set by the application".into()),
            };
            Some(Identity {
                field,
                value,
                standing,
                how,
            })
        })
        .collect()
}
