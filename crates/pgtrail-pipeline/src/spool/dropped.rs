//! Batches a full spool dropped (`fail_open`), remembered on disk until an
//! `alarm` event reporting them is in the store.
//!
//! Drops accumulate in `dropped.json` (rewritten, fsync'd, renamed into
//! place on each drop). To report them the drainer renames it to
//! `reporting.json`, appends the alarm — whose id is fixed when the first
//! drop is counted, so appending it again after a crash is skipped by the
//! store — and then removes the file. Drops during a report start a new
//! `dropped.json`.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Utc};
use pgtrail_core::alarm::{Alarm, SPOOL_DROPPED};
use pgtrail_core::{Event, Source};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{dir, SpoolError};

const PENDING: &str = "dropped.json";
const REPORTING: &str = "reporting.json";

/// Drops counted since the last report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Report {
    /// The alarm event's id.
    id: Uuid,
    /// The source of the first dropped batch (the alarm's source).
    source: Source,
    events: u64,
    batches: u64,
    first_at: DateTime<Utc>,
    last_at: DateTime<Utc>,
}

impl Report {
    /// The `alarm` event recording these drops.
    pub(super) fn alarm(&self, spool: &Path) -> Event {
        let message = format!(
            "the spool {} was full and its policy is fail_open: {} events in {} batches were dropped, not stored, between {} and {}",
            spool.display(),
            self.events,
            self.batches,
            self.first_at.to_rfc3339(),
            self.last_at.to_rfc3339(),
        );
        let mut event = Alarm::new(SPOOL_DROPPED, message).event(self.source);
        event.id = self.id;
        if let Some(context) = event.context.as_mut() {
            context.insert("dropped_events".into(), Value::from(self.events));
            context.insert("dropped_batches".into(), Value::from(self.batches));
            context.insert(
                "first_dropped_at".into(),
                Value::from(self.first_at.to_rfc3339()),
            );
            context.insert(
                "last_dropped_at".into(),
                Value::from(self.last_at.to_rfc3339()),
            );
        }
        event
    }

    /// Events dropped.
    pub(super) fn events(&self) -> u64 {
        self.events
    }
}

/// The drops not yet in the store.
#[derive(Debug, Default)]
pub(super) struct Drops {
    /// Counted since the last report started.
    pending: Option<Report>,
    /// Being appended to the store.
    reporting: Option<Report>,
}

fn read(dir: &Path, name: &str) -> Result<Option<Report>, SpoolError> {
    let path = dir.join(name);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SpoolError::Io {
                action: "read",
                path,
                source,
            })
        }
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| SpoolError::Corrupt {
            path,
            offset: 0,
            reason: format!("not a record of dropped batches: {e}"),
        })
}

impl Drops {
    /// The drops a previous run left unreported.
    pub(super) fn load(dir: &Path) -> Result<Drops, SpoolError> {
        Ok(Drops {
            pending: read(dir, PENDING)?,
            reporting: read(dir, REPORTING)?,
        })
    }

    /// Events dropped and not yet reported in the store.
    pub(super) fn events(&self) -> u64 {
        [&self.pending, &self.reporting]
            .into_iter()
            .flatten()
            .map(|r| r.events)
            .sum()
    }

    /// Counts a dropped batch, durably, before the caller hears of it.
    pub(super) fn record(
        &mut self,
        dir: &Path,
        events: u64,
        source: Source,
    ) -> Result<(), SpoolError> {
        let now = Utc::now();
        let mut report = self.pending.clone().unwrap_or(Report {
            id: Uuid::now_v7(),
            source,
            events: 0,
            batches: 0,
            first_at: now,
            last_at: now,
        });
        report.events += events;
        report.batches += 1;
        report.last_at = now;
        let text = serde_json::to_vec(&report).map_err(SpoolError::Encode)?;
        let tmp = dir.join("dropped.json.tmp");
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| SpoolError::Io {
                action,
                path,
                source,
            }
        };
        let _ = std::fs::remove_file(&tmp);
        let mut file = dir::create_private(&tmp)?;
        file.write_all(&text)
            .and_then(|()| file.sync_all())
            .map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, dir.join(PENDING)).map_err(io("rename", &tmp))?;
        dir::sync(dir)?;
        self.pending = Some(report);
        Ok(())
    }

    /// The drops to report now, if any: an unfinished report first, else
    /// those counted so far (moved aside, so later drops count anew).
    pub(super) fn start_report(&mut self, dir: &Path) -> Result<Option<Report>, SpoolError> {
        if self.reporting.is_none() {
            let Some(pending) = self.pending.take() else {
                return Ok(None);
            };
            let from = dir.join(PENDING);
            if let Err(source) = std::fs::rename(&from, dir.join(REPORTING)) {
                self.pending = Some(pending);
                return Err(SpoolError::Io {
                    action: "rename",
                    path: from,
                    source,
                });
            }
            dir::sync(dir)?;
            self.reporting = Some(pending);
        }
        Ok(self.reporting.clone())
    }

    /// The report is in the store: forget it.
    pub(super) fn finish_report(&mut self, dir: &Path) -> Result<(), SpoolError> {
        let path = dir.join(REPORTING);
        std::fs::remove_file(&path).map_err(|source| SpoolError::Io {
            action: "remove",
            path,
            source,
        })?;
        dir::sync(dir)?;
        self.reporting = None;
        Ok(())
    }
}
