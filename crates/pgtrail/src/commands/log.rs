//! `pgtrail log`: events matching filters, newest first; with `--tx`, one
//! transaction's statements and row changes together.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::{anyhow, Context as _};
use chrono::Utc;
use pgtrail_core::Event;
use pgtrail_store::link::{self, TxId};
use serde::Serialize;

use crate::cli::LogArgs;
use crate::output::Table;
use crate::{describe, Invocation};

/// Runs `pgtrail log`.
pub async fn run(args: &LogArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    if let Some(id) = &args.tx {
        return transaction(id, ctx).await;
    }
    let filter = crate::filters::filter(&args.filter, Some(args.limit), Utc::now())?;
    let store = ctx.open_existing_store().await?;
    let events = store.query(&filter).await?;
    ctx.output
        .records(&events, |events| table(events).render())?;
    Ok(crate::exit::ok())
}

/// `--tx`, as JSON: the transaction's ids, its statements, and its row
/// changes each with the `seq` of the statement that made it.
#[derive(Serialize)]
struct TxView<'a> {
    xids: &'a [i64],
    backend_pid: Option<i32>,
    /// The proxy's ids of it (`PID@TIME`).
    proxy_tx: Vec<String>,
    statements: &'a [Event],
    changes: Vec<Change<'a>>,
}

#[derive(Serialize)]
struct Change<'a> {
    event: &'a Event,
    #[serde(skip_serializing_if = "Option::is_none")]
    statement_seq: Option<i64>,
}

async fn transaction(id: &str, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let id: TxId = id.parse().map_err(|e: String| anyhow!(e)).context("--tx")?;
    let stores = link_stores(ctx).await?;
    let stores: Vec<&dyn pgtrail_store::Store> = stores.iter().map(|s| &**s).collect();
    let Some(tx) = link::transaction(&stores, &id, link::default_skew()).await? else {
        anyhow::bail!("no transaction {id} in the trail");
    };
    let mut proxy_tx: Vec<String> = tx
        .statements
        .iter()
        .filter_map(link::proxy_tx)
        .map(|(id, _, _)| id.to_string())
        .collect();
    proxy_tx.dedup();
    let view = TxView {
        xids: &tx.xids,
        backend_pid: tx.backend_pid,
        proxy_tx,
        statements: &tx.statements,
        changes: tx
            .changes
            .iter()
            .zip(&tx.made_by)
            .map(|(event, by)| Change {
                event,
                statement_seq: by.and_then(|i| tx.statements[i].seq),
            })
            .collect(),
    };
    ctx.output.document(&view, || text(&view))?;
    Ok(crate::exit::ok())
}

/// The stores a transaction's events may be in: the configured one, and
/// trigger capture's own (the audited database's `pgtrail.events`) when
/// `[triggers] db` names another: the proxy's statements and the trigger
/// path's rows are then in two stores.
pub(crate) async fn link_stores(
    ctx: &Invocation,
) -> anyhow::Result<Vec<std::sync::Arc<dyn pgtrail_store::Store>>> {
    let mut stores = vec![ctx.open_existing_store().await?];
    if let Some(db) = ctx.config.triggers.db.as_deref() {
        if db != ctx.config.store.url {
            match pgtrail_pipeline::store::open(db).await {
                Ok(store) => stores.push(store),
                Err(error) => tracing::warn!(
                    %error,
                    "cannot read trigger capture's store ([triggers] db): its row changes are left out"
                ),
            }
        }
    }
    Ok(stores)
}

fn text(view: &TxView<'_>) -> String {
    let mut out = String::new();
    let xids: Vec<String> = view.xids.iter().map(i64::to_string).collect();
    let _ = writeln!(
        out,
        "transaction xid {}, backend {}, proxy {}: {} statement(s), {} row change(s)",
        if xids.is_empty() {
            "-".into()
        } else {
            xids.join(", ")
        },
        view.backend_pid.map_or("-".into(), |p| p.to_string()),
        if view.proxy_tx.is_empty() {
            "- (not seen by the proxy)".into()
        } else {
            view.proxy_tx.join(", ")
        },
        view.statements.len(),
        view.changes.len(),
    );
    let mut rows: Vec<(&Event, Option<i64>)> = view
        .statements
        .iter()
        .map(|s| (s, None))
        .chain(view.changes.iter().map(|c| (c.event, c.statement_seq)))
        .collect();
    rows.sort_by_key(|(e, _)| (e.captured_at, e.seq));
    let mut table = Table::new(&[
        "seq", "time", "user", "source", "op", "table", "pk", "by", "summary",
    ]);
    for (e, by) in rows {
        table.push(vec![
            describe::number(e.seq),
            describe::time(&e.captured_at),
            describe::actor(e),
            e.source.to_string(),
            e.operation.clone().unwrap_or_else(|| e.kind.to_string()),
            describe::table(e),
            e.pk.as_ref().map(describe::pk).unwrap_or_default(),
            by.map(|s| format!("#{s}")).unwrap_or_default(),
            describe::summary(e),
        ]);
    }
    out.push_str(&table.render());
    out
}

fn table(events: &[Event]) -> Table {
    let mut table = Table::new(&[
        "seq", "time", "user", "source", "op", "table", "pk", "summary",
    ]);
    for e in events {
        table.push(vec![
            describe::number(e.seq),
            describe::time(&e.captured_at),
            describe::actor(e),
            e.source.to_string(),
            e.operation.clone().unwrap_or_else(|| e.kind.to_string()),
            describe::table(e),
            e.pk.as_ref().map(describe::pk).unwrap_or_default(),
            describe::summary(e),
        ]);
    }
    table
}
