//! `pgtrail export`: the chain, oldest first, every field: JSON Lines by
//! default, one JSON array with `--format json`, or the records a SIEM
//! takes (`ocsf`, `ecs`, `cef`, `syslog`, `csv`, through the same
//! `pgtrail_sink::format` encoders as the sinks).
//!
//! Without filters it walks the chain with `Store::scan` page by page, so
//! memory stays bounded whatever the store's size. With filters it asks the
//! store's `query` (which applies them the same way `log` does) and prints
//! the result oldest first.
//!
//! `--follow` then keeps going from a cursor, the last `seq` written (the
//! chain's head when filters were used): each round scans the events
//! sealed after it, writes them (with filters: those of them the store's
//! `query` matches, asked for that `seq` range only) and flushes, so every
//! event is written once, in chain order, none skipped. Stores hand out
//! `seq` in commit order (SQLite's single writer, Postgres's locked head
//! row), so nothing can appear behind the cursor. Ctrl-C ends it after the
//! current batch, with a count on standard error.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use pgtrail_core::{Event, Filter};
use pgtrail_sink::format::{Encoder, Format as Record};
use pgtrail_store::Store;

use crate::cli::{ExportArgs, FormatFlag};
use crate::Invocation;

/// Events read per round trip when walking the whole chain.
const PAGE: usize = 10_000;

/// How long `--follow` waits when there is nothing new.
const IDLE: Duration = Duration::from_millis(200);

/// Runs `pgtrail export`.
pub async fn run(
    args: &ExportArgs,
    flag: Option<FormatFlag>,
    ctx: &Invocation,
) -> anyhow::Result<ExitCode> {
    let records = match flag {
        // Today's default, whatever the terminal: JSON Lines.
        None => Records::Encoded(Encoder::new(Record::Jsonl)),
        Some(FormatFlag::Json) => Records::Array,
        Some(FormatFlag::Table) => anyhow::bail!(
            "--format table: export writes records, not a table \
             (json, jsonl, ocsf, ecs, cef, syslog or csv)"
        ),
        Some(flag) => {
            let format = flag.record().context("--format: not a record format")?;
            let mut encoder = Encoder::new(format);
            if let Some(facility) = args.facility {
                encoder = encoder.with_facility(facility);
            }
            Records::Encoded(encoder)
        }
    };
    if args.facility.is_some()
        && !matches!(&records, Records::Encoded(e) if e.format() == Record::Syslog)
    {
        anyhow::bail!("--facility is for --format syslog");
    }
    if args.follow && matches!(records, Records::Array) {
        anyhow::bail!("--follow writes one record per line: use --format jsonl (or another record format), not json");
    }
    let filter = crate::filters::filter(&args.filter, None, Utc::now())?;
    let store = ctx.open_existing_store().await?;
    let (target, sink): (String, Box<dyn Write>) = match &args.out {
        Some(path) => {
            let file =
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            (path.display().to_string(), Box::new(file))
        }
        None => ("standard output".into(), Box::new(std::io::stdout().lock())),
    };
    let mut writer = EventWriter {
        out: BufWriter::new(sink),
        records,
        written: 0,
        buf: Vec::new(),
    };
    let write_error = || format!("cannot write to {target}");
    // Installed before the first read, so a Ctrl-C at any point of a
    // follow ends it cleanly rather than killing it mid-record.
    let stop = args.follow.then(ctrl_c);
    writer.start().with_context(write_error)?;
    let unfiltered = filter == Filter::default();
    let mut after = if unfiltered {
        0
    } else {
        // The head first: the query below stops there, the follow starts there.
        let head = store.head().await?.map_or(0, |h| h.seq);
        let mut events = store
            .query(&Filter {
                before_seq: Some(bound(filter.before_seq, head + 1)),
                ..filter.clone()
            })
            .await?;
        events.reverse();
        for event in &events {
            writer.write(event).with_context(write_error)?;
        }
        head
    };
    // Without filters the walk below is the export; with them, it is only
    // the follow.
    while unfiltered || stop.is_some() {
        if stop.as_ref().is_some_and(|stop| *stop.borrow()) {
            break;
        }
        let page = store.scan(after, PAGE).await?;
        let Some(last) = page.last() else {
            let Some(stop) = stop.as_ref() else { break };
            writer.flush().with_context(write_error)?;
            let mut stop = stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(IDLE) => {}
                _ = stop.changed() => {}
            }
            continue;
        };
        let last = last
            .seq
            .context("the store returned an event without seq")?;
        if unfiltered {
            for event in &page {
                writer.write(event).with_context(write_error)?;
            }
        } else {
            for event in matching(&*store, &filter, &page, after, last).await? {
                writer.write(&event).with_context(write_error)?;
            }
        }
        after = last;
        if stop.is_some() {
            writer.flush().with_context(write_error)?;
        }
    }
    writer.finish().with_context(write_error)?;
    if stop.is_some() {
        eprintln!(
            "pgtrail export: {} events written to {target}",
            writer.written
        );
    } else if let Some(path) = &args.out {
        tracing::info!(events = writer.written, "Exported to {}", path.display());
    }
    Ok(crate::exit::ok())
}

/// The events of `page` (the chain after `after`, through `last`) that
/// `filter` matches, oldest first, as the store's own query matches them:
/// asked for events before `last + 1` captured no earlier than the
/// page's earliest, and kept when they lie after `after`.
async fn matching(
    store: &dyn Store,
    filter: &Filter,
    page: &[Event],
    after: i64,
    last: i64,
) -> anyhow::Result<Vec<Event>> {
    let earliest = page.iter().map(|e| e.captured_at).min();
    let since = match (filter.since, earliest) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let mut events = store
        .query(&Filter {
            since,
            before_seq: Some(bound(filter.before_seq, last + 1)),
            limit: None,
            ..filter.clone()
        })
        .await?;
    events.retain(|e| e.seq.is_some_and(|seq| seq > after));
    events.reverse();
    Ok(events)
}

/// The tighter of a user's `--before` and ours.
fn bound(user: Option<i64>, ours: i64) -> i64 {
    user.map_or(ours, |user| user.min(ours))
}

/// A receiver that turns true on the first Ctrl-C.
fn ctrl_c() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = tx.send(true);
        }
    });
    rx
}

/// How events are written.
enum Records {
    /// One JSON array (`--format json`).
    Array,
    /// One record each, in a `pgtrail_sink` format.
    Encoded(Encoder),
}

/// Writes events as records of one format, or as one JSON array.
struct EventWriter {
    out: BufWriter<Box<dyn Write>>,
    records: Records,
    written: u64,
    buf: Vec<u8>,
}

impl EventWriter {
    fn start(&mut self) -> std::io::Result<()> {
        match &self.records {
            Records::Array => self.out.write_all(b"["),
            Records::Encoded(encoder) => self.out.write_all(&encoder.header()),
        }
    }

    fn write(&mut self, event: &Event) -> std::io::Result<()> {
        match &self.records {
            Records::Array => {
                if self.written > 0 {
                    self.out.write_all(b",")?;
                }
                self.out.write_all(b"\n")?;
                serde_json::to_writer(&mut self.out, event)?;
            }
            Records::Encoded(encoder) => {
                self.buf.clear();
                encoder
                    .encode(event, &mut self.buf)
                    .map_err(std::io::Error::other)?;
                // A syslog message has no framing of its own: one per line
                // here (it holds no raw line break).
                if encoder.format() == Record::Syslog {
                    self.buf.push(b'\n');
                }
                self.out.write_all(&self.buf)?;
            }
        }
        self.written += 1;
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    fn finish(&mut self) -> std::io::Result<()> {
        if matches!(self.records, Records::Array) {
            self.out.write_all(b"\n]\n")?;
        }
        self.out.flush()
    }
}
