//! One module per verb, and the dispatch from [`Command`] to them.
//!
//! Every verb has the same shape: `pub async fn run(args: &XArgs, ctx:
//! &Invocation) -> anyhow::Result<ExitCode>`. [`Invocation`] (one run of
//! the command line) carries what all of them share: the merged configuration and the output settings. Adding a
//! verb: an args struct and a variant in `cli.rs`, a module here, one match
//! arm in [`run`].

mod alarms;
mod as_of;
mod blame;
mod capture_probe;
mod checkpoint;
mod consistency;
mod ddl;
mod demo;
mod doctor;
mod drain;
mod export;
mod history;
mod import;
mod init;
mod install;
mod keygen;
mod log;
mod prove;
mod proxy;
mod replicate;
mod report;
mod retention;
mod run;
mod serve;
mod sessions;
mod status;
mod token;
mod track;
mod uninstall;
mod verify;
mod verify_cosignatures;
mod witness;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use pgtrail_core::config::Config;
use pgtrail_store::Store;

use crate::cli::{Cli, Command};
use crate::output::Output;

/// What every command gets besides its own arguments.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The merged configuration: file, then `PGTRAIL_*` environment, then flags.
    pub config: Config,
    /// The configuration file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// Where `--config` points, or `pgtrail.toml`: the file `init` writes.
    pub config_target: PathBuf,
    /// How to print results.
    pub output: Output,
}

impl Invocation {
    /// Loads the configuration named by `cli` and applies its flags.
    pub fn load(cli: &Cli) -> anyhow::Result<Self> {
        let loaded = crate::config::load(cli.config.as_deref(), std::env::vars())?;
        let mut invocation = Invocation {
            config: loaded.config,
            config_file: loaded.file,
            ..Invocation::defaults(cli)
        };
        if let Some(url) = &cli.store {
            invocation.config.store.url = url.clone();
        }
        Ok(invocation)
    }

    /// Default configuration plus the flags: for `init`, which must work
    /// when the existing file is broken.
    pub fn defaults(cli: &Cli) -> Self {
        Invocation {
            config: Config::default(),
            config_file: None,
            config_target: cli
                .config
                .clone()
                .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_FILE)),
            output: Output::new(cli.format.and_then(crate::cli::FormatFlag::output)),
        }
    }

    /// Opens the configured store, which must exist already: commands that
    /// only read or seal never leave an empty `pgtrail.db` behind because of
    /// a mistyped path. (A Postgres store is still migrated if it is older.)
    pub async fn open_existing_store(&self) -> anyhow::Result<Arc<dyn Store>> {
        if let Some(path) = missing_sqlite_file(&self.config.store.url) {
            anyhow::bail!(
                "no store at {path}: import events first (`pgtrail import FILE`), \
                 or point --store / [store] url at an existing store"
            );
        }
        self.open_store().await
    }

    /// Opens the configured store, creating an empty one if it does not exist.
    pub async fn open_store(&self) -> anyhow::Result<Arc<dyn Store>> {
        // Within a timeout: an unreachable host must fail fast, not hang a cron job.
        Ok(pgtrail_pipeline::store::open(&self.config.store.url).await?)
    }
}

pub(crate) use pgtrail_pipeline::store::missing_sqlite_file;

/// Runs the command `cli` names.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let ctx = match cli.command {
        // A witness host has no pgtrail.toml: its flags say everything.
        Command::Init(_) | Command::Witness(_) => Invocation::defaults(&cli),
        _ => Invocation::load(&cli).context("cannot load the configuration")?,
    };
    if let Some(flag) = cli.format {
        if flag.output().is_none() && !matches!(cli.command, Command::Export(_)) {
            anyhow::bail!(
                "--format {}: a record format, which only `pgtrail export` writes; \
                 this command prints table, json or jsonl",
                clap::ValueEnum::to_possible_value(&flag)
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default()
            );
        }
    }
    match &cli.command {
        Command::Init(args) => init::run(args, &ctx).await,
        Command::Keygen(args) => keygen::run(args, &ctx).await,
        Command::Checkpoint(args) => checkpoint::run(args, &ctx).await,
        Command::Verify(args) => verify::run(args, &ctx).await,
        Command::Prove(args) => prove::run(args, &ctx).await,
        Command::VerifyProof(args) => prove::verify(args, &ctx).await,
        Command::Consistency(args) => consistency::run(args, &ctx).await,
        Command::VerifyConsistency(args) => consistency::check(args, &ctx).await,
        Command::Witness(args) => witness::run(args, &ctx).await,
        Command::Log(args) => log::run(args, &ctx).await,
        Command::Sessions(args) => sessions::run(args, &ctx).await,
        Command::Report(args) => report::run(args, &ctx).await,
        Command::History(args) => history::run(args, &ctx).await,
        Command::AsOf(args) => as_of::run(args, &ctx).await,
        Command::Blame(args) => blame::run(args, &ctx).await,
        Command::Import(args) => import::run(args, &ctx).await,
        Command::Export(args) => export::run(args, cli.format, &ctx).await,
        Command::Retention(args) => retention::run(args, &ctx).await,
        Command::Replicate(args) => replicate::run(args, &ctx).await,
        Command::Proxy(args) => proxy::run(args, &ctx).await,
        Command::Serve(args) => serve::run(args, &ctx).await,
        Command::Token(command) => token::run(command, &ctx).await,
        Command::Install(args) => install::run(args, &ctx).await,
        Command::Uninstall(args) => uninstall::run(args, &ctx).await,
        Command::Track(args) => track::run(args, &ctx).await,
        Command::Untrack(args) => track::untrack(args, &ctx).await,
        Command::Status(args) => status::run(args, &ctx).await,
        Command::Doctor(args) => doctor::run(args, &ctx).await,
        Command::Drain(args) => drain::run(args, &ctx).await,
        Command::Run(args) => run::run(args, &ctx).await,
        Command::Ddl(args) => ddl::run(args, &ctx).await,
        Command::Demo(args) => demo::run(args, &ctx).await,
    }
}

/// Where pgtrail keeps a directory of state (a spool): `configured`, else
/// `name` in systemd's `$STATE_DIRECTORY`, else in the working directory.
pub(crate) fn state_dir(configured: Option<&str>, name: &str) -> PathBuf {
    if let Some(dir) = configured {
        return PathBuf::from(dir);
    }
    std::env::var_os("STATE_DIRECTORY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(name)
}
