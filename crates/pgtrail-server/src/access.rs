//! The audit of the auditors: every search, export, event, row and status
//! read through the server becomes an `access` event in the trail (who,
//! what they asked for, how many events it returned).

use pgtrail_core::{Event, Kind, Source};
use serde_json::{Map, Value};

use crate::auth::Principal;
use crate::AppState;

/// One read through the server.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    /// What was read: `search`, `export`, `event`, `row`, `ddl`, `sessions`,
    /// `status`, `verify`, `tail`, …
    pub action: &'static str,
    /// What was asked for: the filter, the row, the event (JSON).
    pub target: Value,
    /// How many events the answer held, when it is a list.
    pub results: Option<u64>,
}

/// The access record could not be written: the read must not be answered.
#[derive(Debug, thiserror::Error)]
#[error("cannot record this access in the trail: {0}")]
pub struct AccessError(#[from] pgtrail_store::StoreError);

impl AppState {
    /// Appends the access event of `access` by `who`; durable on return.
    pub async fn record_access(&self, who: &Principal, access: Access) -> Result<(), AccessError> {
        let mut event = Event::new(Source::Server, Kind::Access);
        event.app_user = Some(who.name.clone());
        event.operation = Some(access.action.to_ascii_uppercase());
        event.rows = access.results.map(|n| n as i64);
        let mut context = Map::new();
        context.insert(
            "role".into(),
            serde_json::to_value(who.role).unwrap_or(Value::Null),
        );
        context.insert("target".into(), access.target);
        event.context = Some(context);
        self.store.append(&[event]).await?;
        Ok(())
    }
}
