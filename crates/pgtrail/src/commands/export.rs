//! `pgtrail export`: the chain, oldest first, every field, as JSON Lines.
//!
//! Without filters it walks the chain with `Store::scan` page by page, so
//! memory stays bounded whatever the store's size. With filters it asks the
//! store's `query` (which applies them the same way `log` does) and prints
//! the result oldest first. `--format json` writes one JSON array instead.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::Utc;
use pgtrail_core::{Event, Filter};

use crate::cli::ExportArgs;
use crate::output::Format;
use crate::Invocation;

/// Events read per round trip when walking the whole chain.
const PAGE: usize = 10_000;

/// Runs `pgtrail export`.
pub async fn run(args: &ExportArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
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
        json_array: ctx.output.format == Format::Json,
        written: 0,
    };
    let write_error = || format!("cannot write to {target}");
    writer.start().with_context(write_error)?;
    if filter == Filter::default() {
        let mut after = 0;
        loop {
            let page = store.scan(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last
                .seq
                .context("the store returned an event without seq")?;
            for event in &page {
                writer.write(event).with_context(write_error)?;
            }
        }
    } else {
        let mut events = store.query(&filter).await?;
        events.reverse();
        for event in &events {
            writer.write(event).with_context(write_error)?;
        }
    }
    writer.finish().with_context(write_error)?;
    if let Some(path) = &args.out {
        tracing::info!(events = writer.written, "Exported to {}", path.display());
    }
    Ok(crate::exit::ok())
}

/// Writes events as JSON Lines or as one JSON array.
struct EventWriter {
    out: BufWriter<Box<dyn Write>>,
    json_array: bool,
    written: u64,
}

impl EventWriter {
    fn start(&mut self) -> std::io::Result<()> {
        if self.json_array {
            self.out.write_all(b"[")?;
        }
        Ok(())
    }

    fn write(&mut self, event: &Event) -> std::io::Result<()> {
        if self.json_array && self.written > 0 {
            self.out.write_all(b",")?;
        }
        if self.json_array {
            self.out.write_all(b"\n")?;
        }
        serde_json::to_writer(&mut self.out, event)?;
        if !self.json_array {
            self.out.write_all(b"\n")?;
        }
        self.written += 1;
        Ok(())
    }

    fn finish(&mut self) -> std::io::Result<()> {
        if self.json_array {
            self.out.write_all(b"\n]\n")?;
        }
        self.out.flush()
    }
}
