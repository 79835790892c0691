//! The `pgtrail` binary: parses the command line and hands it to [`pgtrail::run`].
//!
//! Exit status: 0 ok, 1 a check failed (`verify`), 2 an error (one line on
//! stderr, `error: ` and the cause chain). A closed stdout (`pgtrail log |
//! head`) is not an error: it exits 0 without a word.

use std::process::ExitCode;

use clap::Parser;
use pgtrail::cli::Cli;

/// mimalloc: capture allocates events on one thread and frees them on
/// another, where glibc's malloc spent ~30% of the consumer's time on arena
/// locks (bench/cdc/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    install_tracing();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return report(anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    match runtime.block_on(pgtrail::run(cli)) {
        Ok(code) => code,
        Err(e) => report(e),
    }
}

/// Diagnostics go to stderr; `PGTRAIL_LOG` (e.g. `debug`, `pgtrail_store=trace`) sets the level.
fn install_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGTRAIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn report(error: anyhow::Error) -> ExitCode {
    let broken_pipe = error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return ExitCode::SUCCESS;
    }
    // One line, even when a cause's message spans several (parser snippets).
    let message = format!("{error:#}");
    let one_line: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    eprintln!("error: {}", one_line.join(" "));
    pgtrail::exit::error()
}
