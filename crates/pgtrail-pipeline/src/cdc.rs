//! Logical-replication capture, run by the pipeline: one
//! `pgtrail_cdc::consumer::session` after another, each with its own
//! writer stage, reconnecting after what may pass.
//!
//! A session ends when its connection breaks; the next starts from the
//! newest stored position, and the slot re-sends whatever was not
//! confirmed. After a lost connection the old walsender may still hold the
//! slot for a moment, so "slot in use" is waited out a few times before it
//! counts as another consumer running.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgtrail_cdc::catalog::Table;
use pgtrail_cdc::connection::ConnectOptions;
use pgtrail_cdc::consumer::{self, ReplicationOptions};
use pgtrail_cdc::mask::Masking;
use pgtrail_cdc::{baseline, CdcError, RetryPolicy};
use pgtrail_core::handover::Acknowledged;
use pgtrail_store::cpu::{self, Stage};
use pgtrail_store::Store;
use pgtrail_wire::Lsn;
use tokio::sync::watch;

use crate::retry::{self, Backoff, Retryable};
use crate::toast::ToastBounds;
use crate::writer::{self, WriterOptions};
use crate::PipelineError;

/// What capture made durable: the newest stored LSN, the commit time of
/// its transaction and the events stored since start.
pub type Progress = Acknowledged<Lsn>;

/// What the operator reads while the store is down.
const MEANWHILE: &str = "the slot keeps the WAL";

/// The longest pause between reconnects.
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// A session that ran this long was healthy: the next failure starts the
/// back-off from the beginning.
const HEALTHY: Duration = Duration::from_secs(30);

/// Times "slot in use" is waited out after a lost connection.
const SLOT_IN_USE_WAITS: u32 = 20;

impl Retryable for CdcError {
    fn is_retryable(&self) -> bool {
        self.retry_policy() == RetryPolicy::Reconnect
    }
}

/// Captures into `store` until `shutdown` becomes true, reconnecting after
/// failures that may pass. `progress` (optional) reports what is durable,
/// for callers that wait for it (tests, status).
pub async fn run(
    connect: &ConnectOptions,
    options: &ReplicationOptions,
    store: Arc<dyn Store>,
    mut shutdown: watch::Receiver<bool>,
    progress: Option<watch::Sender<Progress>>,
) -> Result<(), PipelineError> {
    let progress = progress.unwrap_or_else(|| watch::channel(Progress::default()).0);
    let mut backoff = Backoff::new(options.retry_pause, MAX_PAUSE);
    let mut sessions = 0u32;
    let mut in_use_waits = 0u32;
    loop {
        let started = Instant::now();
        sessions += 1;
        let error = match session(connect, options, store.clone(), &mut shutdown, &progress).await {
            Ok(()) => return Ok(()),
            Err(PipelineError::Cdc(error)) => error,
            Err(error) => return Err(error),
        };
        let pause = match error {
            CdcError::SlotInUse { .. } if sessions > 1 && in_use_waits < SLOT_IN_USE_WAITS => {
                in_use_waits += 1;
                options.retry_pause
            }
            error if error.is_retryable() => {
                in_use_waits = 0;
                if started.elapsed() > HEALTHY {
                    backoff.succeeded();
                }
                let pause = backoff.failed();
                retry::log_failure(
                    "Streaming from the replication slot",
                    MEANWHILE,
                    &error,
                    backoff.failures(),
                    pause,
                );
                pause
            }
            error => return Err(error.into()),
        };
        if retry::sleep_or_stop(pause, &mut shutdown).await {
            return Ok(());
        }
    }
}

/// One replication session with its writer. The writer's failure, if any,
/// is the session's: the session only sees its queue close.
async fn session(
    connect: &ConnectOptions,
    options: &ReplicationOptions,
    store: Arc<dyn Store>,
    shutdown: &mut watch::Receiver<bool>,
    progress: &watch::Sender<Progress>,
) -> Result<(), PipelineError> {
    let start = *progress.borrow();
    let mut writer_options = WriterOptions::new(options.retry_pause, MEANWHILE);
    writer_options.toast = Some(ToastBounds::default());
    let (queue, writer) = writer::spawn(
        store,
        start,
        writer_options,
        shutdown.clone(),
        Some(progress.clone()),
    );
    let streamed = cpu::metered(
        Stage::Decode,
        consumer::session(
            connect,
            options,
            queue.batches,
            queue.acknowledged,
            shutdown,
        ),
    )
    .await;
    finish(writer.await)?;
    Ok(streamed?)
}

/// Creates `slot` with an exported snapshot and stores every row of
/// `tables` as of that snapshot (see `pgtrail_cdc::baseline`); returns the
/// number of rows. A store outage is waited out, unless `stop` turns true.
pub async fn take_baseline(
    connect: &ConnectOptions,
    client: &tokio_postgres::Client,
    slot: &str,
    tables: &[Table],
    masking: &Masking,
    store: Arc<dyn Store>,
    stop: watch::Receiver<bool>,
) -> Result<u64, PipelineError> {
    let options = WriterOptions::new(
        Duration::from_millis(500),
        "the baseline waits in its snapshot",
    );
    let (queue, writer) = writer::spawn(store, Acknowledged::default(), options, stop, None);
    let taken = baseline::create_slot_with_baseline(
        connect,
        client,
        slot,
        tables,
        masking,
        queue.batches,
        queue.acknowledged,
    )
    .await;
    finish(writer.await)?;
    Ok(taken?)
}

/// A writer's end as the pipeline's error.
fn finish(
    written: Result<Result<(), pgtrail_store::StoreError>, tokio::task::JoinError>,
) -> Result<(), PipelineError> {
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(PipelineError::Store(error)),
        Err(join) => Err(PipelineError::Writer(join.to_string())),
    }
}
