//! The dashboard's view of the audited databases (`pgtrail_server::capture`):
//! trigger capture's tracked tables and backlog in `[triggers] db`, the
//! replication slot's state and lag in `[replication] db`. Read on each
//! load of the integrity page, each database within [`PROBE_TIMEOUT`].

use std::time::Duration;

use chrono::Utc;
use pgtrail_cdc::slot;
use pgtrail_core::config::Config;
use pgtrail_server::capture::{CapturePath, CaptureProbe};
use pgtrail_store::freshness::{self, SlotFacts, MIB};
use pgtrail_store::open::redact_url;

/// How long one database may take to answer before the page says so.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The capture paths `config` names.
pub struct ConfigProbe {
    triggers_db: Option<String>,
    replication_db: Option<String>,
    slot: String,
    lag_warn_bytes: u64,
}

impl ConfigProbe {
    /// `None` when the config names no audited database.
    pub fn from_config(config: &Config) -> Option<Self> {
        let probe = ConfigProbe {
            triggers_db: config.triggers.db.clone(),
            replication_db: config.replication.db.clone(),
            slot: config.replication.slot.clone(),
            lag_warn_bytes: config.replication.lag_warn_mb.saturating_mul(MIB),
        };
        (probe.triggers_db.is_some() || probe.replication_db.is_some()).then_some(probe)
    }

    async fn triggers(&self, db: &str) -> CapturePath {
        let mut path = CapturePath {
            path: "triggers",
            database: redact_url(db),
            ..CapturePath::default()
        };
        let read = async {
            let client = pgtrail_triggers::connect(db).await?;
            pgtrail_triggers::track::backlog(&client).await
        };
        match tokio::time::timeout(PROBE_TIMEOUT, read).await {
            Ok(Ok(backlog)) => {
                path.tables_tracked = Some(backlog.tables);
                path.pending_rows = Some(backlog.pending);
                path.oldest_pending_seconds = Some(backlog.oldest_pending_seconds);
            }
            Ok(Err(error)) => path.error = Some(error.to_string()),
            Err(_) => path.error = Some(timed_out()),
        }
        path
    }

    async fn replication(&self, db: &str) -> CapturePath {
        let mut path = CapturePath {
            path: "logical replication",
            database: redact_url(db),
            slot: Some(self.slot.clone()),
            ..CapturePath::default()
        };
        let read = async {
            let client = pgtrail_triggers::connect(db)
                .await
                .map_err(|e| e.to_string())?;
            slot::slot_status(&client, std::slice::from_ref(&self.slot))
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(PROBE_TIMEOUT, read).await {
            Ok(Ok(found)) => match found.iter().find(|s| s.name == self.slot) {
                Some(found) => {
                    let facts = SlotFacts {
                        name: &found.name,
                        active: found.active,
                        lag_bytes: found.lag_bytes,
                        replay_lag_seconds: found.replay_lag_seconds,
                        wal_status: found.wal_status.as_deref(),
                    };
                    path.slot_active = Some(found.active);
                    path.lag_bytes = Some(found.lag_bytes);
                    // The store's newest commit is not read here: while no
                    // consumer is connected the page shows bytes only.
                    path.lag_seconds = freshness::slot_lag_seconds(&facts, None, Utc::now()).0;
                    path.warning =
                        freshness::slot_warning(&facts, self.lag_warn_bytes).map(|w| w.to_string());
                }
                None => {
                    path.warning = Some(
                        freshness::SlotWarning::Missing {
                            slot: self.slot.clone(),
                        }
                        .to_string(),
                    )
                }
            },
            Ok(Err(error)) => path.error = Some(error),
            Err(_) => path.error = Some(timed_out()),
        }
        path
    }
}

fn timed_out() -> String {
    format!("no answer within {} s", PROBE_TIMEOUT.as_secs())
}

#[async_trait::async_trait]
impl CaptureProbe for ConfigProbe {
    async fn probe(&self) -> Vec<CapturePath> {
        let mut out = Vec::new();
        if let Some(db) = &self.triggers_db {
            out.push(self.triggers(db).await);
        }
        if let Some(db) = &self.replication_db {
            out.push(self.replication(db).await);
        }
        out
    }
}
