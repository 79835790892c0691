//! The command line: global options and one subcommand per verb.
//!
//! Doc comments are the help text. Each verb's arguments live in their own
//! struct here so that `commands/<verb>.rs` only holds behaviour. Global
//! options (`--config`, `--store`, `--format`) may be given before or after
//! the verb.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::output::Format;

/// pgtrail: a tamper-evident audit trail for PostgreSQL.
///
/// Captures row changes and DDL (by triggers or logical replication), keeps
/// them append-only in a hash-chained store (an SQLite file or a Postgres
/// schema), and answers "who changed what, when" from the command line.
#[derive(Debug, Parser)]
#[command(name = "pgtrail", version, propagate_version = true)]
#[command(after_help = "\
Quick start:
  pgtrail import examples/sample.jsonl     # load a sample trail into sqlite:pgtrail.db
  pgtrail log                              # the newest events
  pgtrail history public.users id=1        # every change to one row

Configuration comes from pgtrail.toml (see `pgtrail init`), then PGTRAIL_SECTION__KEY
environment variables (e.g. PGTRAIL_STORE__URL), then flags.")]
pub struct Cli {
    /// Configuration file [default: pgtrail.toml, if it exists].
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "PGTRAIL_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Store to use: `sqlite:PATH` or `postgres://USER@HOST/DB` (overrides `[store] url`).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "PGTRAIL_STORE",
        value_name = "URL"
    )]
    pub store: Option<String>,

    /// Output format [default: table on a terminal, jsonl when piped];
    /// `export` also writes ocsf, ecs, cef, syslog and csv.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_enum,
        value_name = "FORMAT"
    )]
    pub format: Option<FormatFlag>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// What `--format` names: how a command prints its results (table, json,
/// jsonl), or, for `export` only, the record format a SIEM takes (the same
/// encoders as `[[sinks]]`, from `pgtrail_sink::format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatFlag {
    /// Aligned columns, for reading.
    Table,
    /// One JSON document (`export`: one JSON array).
    Json,
    /// One JSON object per line.
    Jsonl,
    /// `export` only: OCSF 1.3 (Datastore Activity, Authentication), one per line.
    Ocsf,
    /// `export` only: Elastic Common Schema with OpenTelemetry `db.*`, one per line.
    Ecs,
    /// `export` only: ArcSight CEF, one per line.
    Cef,
    /// `export` only: RFC 5424 syslog messages, one per line.
    Syslog,
    /// `export` only: RFC 4180 CSV with a header line.
    Csv,
}

impl FormatFlag {
    /// The output format it names, if it is one (`None` for a record format).
    pub fn output(self) -> Option<Format> {
        match self {
            FormatFlag::Table => Some(Format::Table),
            FormatFlag::Json => Some(Format::Json),
            FormatFlag::Jsonl => Some(Format::Jsonl),
            _ => None,
        }
    }

    /// The record format it names, if `export` writes it as records.
    pub fn record(self) -> Option<pgtrail_sink::format::Format> {
        use pgtrail_sink::format::Format as Record;
        match self {
            FormatFlag::Jsonl => Some(Record::Jsonl),
            FormatFlag::Ocsf => Some(Record::Ocsf),
            FormatFlag::Ecs => Some(Record::Ecs),
            FormatFlag::Cef => Some(Record::Cef),
            FormatFlag::Syslog => Some(Record::Syslog),
            FormatFlag::Csv => Some(Record::Csv),
            FormatFlag::Table | FormatFlag::Json => None,
        }
    }
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented pgtrail.toml template to start from.
    Init(InitArgs),
    /// Make an Ed25519 key pair for signing checkpoints.
    Keygen(KeygenArgs),
    /// Sign the chain's current head and store the checkpoint.
    Checkpoint(CheckpointArgs),
    /// Check that no event was modified, removed, inserted or reordered.
    Verify(VerifyArgs),
    /// Write a proof file that one event is in the log a signed checkpoint covers.
    Prove(ProveArgs),
    /// Check a proof file offline, with the store's public key only.
    #[command(name = "verify-proof")]
    VerifyProof(VerifyProofArgs),
    /// Print the proof that the log at one checkpoint extends an older one.
    Consistency(ConsistencyArgs),
    /// Check a consistency proof offline against the old checkpoint and the key.
    #[command(name = "verify-consistency")]
    VerifyConsistency(VerifyConsistencyArgs),
    /// Run a witness server (C2SP tlog-witness): cosign logs' checkpoints that only grew.
    Witness(WitnessArgs),
    /// List events, newest first, filtered.
    Log(LogArgs),
    /// Who connected from where through the proxy: failed logins first, then sessions.
    Sessions(SessionsArgs),
    /// Compliance reports: bulk changes, after hours, DELETE spikes, who read a row.
    Report(ReportArgs),
    /// Every change to one row, newest first, with a field-level diff.
    History(HistoryArgs),
    /// One row as it was at a moment.
    #[command(name = "as-of")]
    AsOf(AsOfArgs),
    /// Who set each current value of one row, when, in which transaction.
    Blame(BlameArgs),
    /// Append events from a JSONL file; they are sealed anew.
    Import(ImportArgs),
    /// Write the chain, oldest first, as JSONL.
    Export(ExportArgs),
    /// Remove (optionally archive) events older than the retention window.
    Retention(RetentionArgs),
    /// Capture row changes and DDL from the WAL (logical replication) into the store.
    /// (`capture` is its deprecated alias.)
    #[command(alias = "capture")]
    Replicate(ReplicateArgs),
    /// Install trigger capture (and the store) into a database.
    Install(InstallArgs),
    /// Remove trigger capture from a database; the trail is kept unless --drop-data.
    Uninstall(UninstallArgs),
    /// Start capturing tables with triggers (or change their options).
    Track(TrackArgs),
    /// Stop capturing tables with triggers; their trail is kept.
    Untrack(UntrackArgs),
    /// Tracked tables, how they are captured, events so far, what waits in the inbox.
    Status(StatusArgs),
    /// Inspect a database: what to capture and how, settings, slots, roles (only reads).
    Doctor(DoctorArgs),
    /// Drain trigger capture's inbox once: changes of finished transactions into the store.
    /// (`seal` is its deprecated alias.)
    #[command(alias = "seal")]
    Drain(DrainArgs),
    /// Run capture until stopped: drain trigger capture and stream logical replication.
    Run(RunArgs),
    /// Schema changes, grouped by transaction.
    Ddl(DdlArgs),
    /// Start a throwaway Postgres with pgtrail, play a short session, show the trail.
    Demo(DemoArgs),
    /// Statement audit at the wire: proxy clients to a server, recording every statement and login in the trail.
    Proxy(ProxyArgs),
    /// The dashboard and the HTTP API over the store.
    Serve(ServeArgs),
    /// API and dashboard tokens: create (shown once), list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// `pgtrail proxy`
#[derive(Debug, Args)]
#[command(after_help = "\
Clients connect to ADDR as if it were Postgres and log in as themselves
(authentication passes through). Every statement, login and disconnect is
an event in the store (--store / [store] url), through a spool on disk:
no result reaches a client before its statement's event is in the spool
(durability async: written, fsync'd within milliseconds; strict: fsync'd
first). A full spool (store away too long) refuses new statements with
SQLSTATE 53400 (when_full = \"fail_closed\", the default) or drops events
and reports them as an alarm (\"fail_open\"). Flags override [proxy] keys.
With --tls-cert and --tls-key clients may use TLS (sslmode=require);
--require-tls makes them. Toward the server, TLS follows the upstream
URL's sslmode (and sslrootcert).

Examples:
  pgtrail proxy --listen 127.0.0.1:6432 --upstream 'postgres://db.internal:5432/postgres'
  pgtrail --store sqlite:/var/lib/pgtrail/trail.db proxy --durability strict
  pgtrail proxy --log none          # audit off: forward only
  pgtrail proxy --listen 0.0.0.0:6432 --tls-cert proxy.crt --tls-key proxy.key --require-tls \
      --upstream 'postgres://db.internal/postgres?sslmode=verify-full&sslrootcert=root.crt'
  psql 'postgres://app@127.0.0.1:6432/shop'")]
pub struct ProxyArgs {
    /// Address to accept clients on, e.g. 127.0.0.1:6432 (port 0: any free port,
    /// printed on stderr); default [proxy] listen.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The server, as a libpq URL; only host, port and TLS settings (sslmode,
    /// sslrootcert) are used, since each client logs in as itself; default
    /// [proxy] upstream.
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// When a result may reach its client: async (its event written to the
    /// spool) or strict (fsync'd); default [proxy] durability.
    #[arg(long, value_name = "MODE", value_parser = ["async", "strict"])]
    pub durability: Option<String>,
    /// What to record: all, none (audit off), failed, or classes
    /// (write,ddl,role,…); default [proxy] log.
    #[arg(long, value_name = "LEVEL", value_delimiter = ',')]
    pub log: Vec<String>,
    /// The spool directory; default [proxy] spool_dir.
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<String>,
    /// PEM certificate chain offered to clients (SSLRequest and PostgreSQL 17
    /// direct TLS are then accepted); overrides `[proxy] tls_cert`.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert; overrides `[proxy] tls_key`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Refuse clients that do not use TLS (FATAL 28000 before anything
    /// reaches the server); overrides `[proxy] require_tls`.
    #[arg(long)]
    pub require_tls: bool,
}

/// `pgtrail init`
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  pgtrail init                      # writes ./pgtrail.toml
  pgtrail --config /etc/pgtrail.toml init --force")]
pub struct InitArgs {
    /// Overwrite the file if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `pgtrail keygen`
#[derive(Debug, Args)]
#[command(after_help = "\
Example:
  pgtrail keygen --out /etc/pgtrail/signing.key
  # then in pgtrail.toml:  [signing] private_key = \"/etc/pgtrail/signing.key\"
  # and give signing.key.pub to whoever runs `pgtrail verify --public-key`.")]
pub struct KeygenArgs {
    /// Private key file to write; the public key goes to the same path plus `.pub`.
    /// Existing files are never overwritten.
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
}

/// `pgtrail checkpoint`
#[derive(Debug, Args)]
#[command(after_help = "\
`pgtrail run` signs checkpoints of the stores it writes to by itself when it has a key;
this signs the head of one store once (a store nothing runs on, before a backup, from cron),
as a signed note, and appends it to the witness ([signing] witness or --witness).
It first checks the chain against the checkpoints signed before and the witness, and
signs nothing (exit 1) when they disagree.
Example, from cron every ten minutes:
  */10 * * * *  pgtrail checkpoint
The private key comes from [signing] private_key or PGTRAIL_SIGNING__PRIVATE_KEY.")]
pub struct CheckpointArgs {
    /// Private key file [default: `[signing] private_key`].
    #[arg(long, value_name = "FILE")]
    pub private_key: Option<PathBuf>,
    /// Witness file to append the checkpoint to [default: `[signing] witness`].
    #[arg(long, value_name = "FILE")]
    pub witness: Option<PathBuf>,
}

/// `pgtrail verify`
#[derive(Debug, Args)]
#[command(after_help = "\
Exit status: 0 when the chain is intact, 1 when a problem was found, 2 on error.
Examples:
  pgtrail verify --public-key signing.key.pub
  pgtrail verify --public-key new.key.pub --public-key old.key.pub@120000   # across a key rotation
  pgtrail verify --public-key signing.key.pub --witness /mnt/witness/pgtrail.notes --max-unsigned 10000
  pgtrail verify --public-key signing.key.pub --witness-key \"$(cat w1.vkey)\" --witness-key \"$(cat w2.vkey)\" --min-cosignatures 2
  pgtrail verify --public-key signing.key.pub --archive archive/pgtrail-000000000001-000000005000.jsonl.gz")]
pub struct VerifyArgs {
    /// Public key that checkpoints must be signed with; repeat it to trust
    /// the keys of a rotation, a retired key as `FILE@N` (trusted only for
    /// checkpoints up to event N) [default: `[signing] public_key` and
    /// `previous_public_keys`].
    #[arg(long, value_name = "FILE")]
    pub public_key: Vec<String>,
    /// Witness file the store must agree with [default: `[signing] witness`].
    #[arg(long, value_name = "FILE")]
    pub witness: Option<PathBuf>,
    /// A witness server's vkey (`pgtrail witness --print-vkey`): the newest checkpoint must
    /// carry its cosignature. Repeat for several witnesses.
    #[arg(long, value_name = "VKEY")]
    pub witness_key: Vec<String>,
    /// With --witness-key: how many of those witnesses must have cosigned the newest
    /// checkpoint [default: 1].
    #[arg(long, value_name = "N", requires = "witness_key")]
    pub min_cosignatures: Option<usize>,
    /// Fail when more than N events follow the newest signed checkpoint.
    #[arg(long, value_name = "N")]
    pub max_unsigned: Option<u64>,
    /// Check this retention archive against its prune checkpoint instead of
    /// the chain.
    #[arg(long, value_name = "FILE")]
    pub archive: Option<PathBuf>,
    /// The verifier's memory of the last checkpoint it found sound: the
    /// store must extend it, and only newer events are walked [default:
    /// `$XDG_STATE_HOME/pgtrail/verify/<origin>.json`, or under
    /// `~/.local/state`]. Keep it where the store's admins cannot write.
    #[arg(long, value_name = "FILE", conflicts_with = "no_state")]
    pub state: Option<PathBuf>,
    /// Neither read nor write the verifier's memory.
    #[arg(long)]
    pub no_state: bool,
    /// Walk every event, even those a remembered checkpoint covers.
    #[arg(long)]
    pub full: bool,
}

/// `pgtrail consistency`.
#[derive(Debug, Args)]
pub struct ConsistencyArgs {
    /// The old checkpoint: its size (a checkpoint in the store), or a file
    /// holding its signed note.
    #[arg(value_name = "OLD")]
    pub old: String,
    /// The new checkpoint's size [default: the newest checkpoint].
    #[arg(value_name = "NEW")]
    pub new: Option<u64>,
}

/// `pgtrail verify-consistency`.
#[derive(Debug, Args)]
pub struct VerifyConsistencyArgs {
    /// The proof, as `pgtrail consistency` printed it.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The old checkpoint's signed note, which the holder kept.
    #[arg(long, value_name = "FILE")]
    pub old: PathBuf,
    /// Public key both checkpoints must be signed with (hex file); repeat it
    /// to accept any of several (a key rotation).
    #[arg(long, value_name = "FILE", required = true)]
    pub public_key: Vec<PathBuf>,
}

/// `pgtrail prove`
#[derive(Debug, Args)]
#[command(after_help = "\
Writes one self-contained file (C2SP tlog-proof, see docs/proofs.md): the event (without
the values --redact withholds), its inclusion proof in the Merkle tree, and the newest checkpoint signed
by a trusted key that covers it. Hand the auditor the file, and the public key through
another channel; they run `pgtrail verify-proof FILE --public-key KEY`, with no store.
Exit status: 0 when written, 1 when the store no longer matches the signed checkpoint
(nothing is written: run `pgtrail verify`), 2 on error.
Examples:
  pgtrail prove 18342 --out event-18342.tlog-proof
  pgtrail prove 18342 --redact ssn,salary --out event-18342.tlog-proof
  pgtrail prove 0190f1c2-7b7e-7cc4-9c53-3f2b8f0e2a11 --public-key signing.key.pub > proof.tlog-proof")]
pub struct ProveArgs {
    /// The event: its seq (chain position) or its id (a UUID).
    #[arg(value_name = "SEQ|EVENT_ID")]
    pub event: String,
    /// File to write [default: stdout].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Public key whose checkpoints may be used, as for `verify` (repeat it;
    /// `FILE@N` for a retired key) [default: `[signing] public_key`,
    /// `previous_public_keys` and the public half of `[signing] private_key`].
    #[arg(long, value_name = "FILE")]
    pub public_key: Vec<String>,
    /// Withhold these columns' values from the event's pk, old and new: the
    /// file keeps each one's salted commitment, so the proof still verifies
    /// and says which fields were withheld (events recorded since hash
    /// version 2 only; a column the event does not have is an error).
    #[arg(long, value_delimiter = ',', value_name = "COLUMNS")]
    pub redact: Vec<String>,
}

/// `pgtrail verify-proof`
#[derive(Debug, Args)]
#[command(after_help = "\
Reads no store and no network: the file and the key are all it uses. Prints what the
proof shows in plain words. Exit status: 0 when it verifies, 1 when it does not (the
reason is printed), 2 on error (a file or key that cannot be read).
Example:
  pgtrail verify-proof event-18342.tlog-proof --public-key signing.key.pub")]
pub struct VerifyProofArgs {
    /// The proof file `pgtrail prove` wrote.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The store's public key: a file of 64 hex characters (`keygen`'s
    /// `.pub`), or those 64 hex characters themselves.
    #[arg(long, value_name = "KEY")]
    pub public_key: String,
    /// A witness server's verifier key (`name+keyid+base64`, what
    /// `pgtrail witness --print-vkey` prints) whose cosignature of the
    /// proof's checkpoint is required; repeat for several.
    #[arg(long, value_name = "VKEY")]
    pub witness_key: Vec<String>,
    /// How many of the --witness-key witnesses must have cosigned (all of
    /// them when not given).
    #[arg(long, value_name = "N", requires = "witness_key")]
    pub min_cosignatures: Option<usize>,
}

/// `pgtrail witness`
#[derive(Debug, Args)]
#[command(after_help = "\
Runs on another host than the store, under another administrator: it keeps the latest
checkpoint of each log in --state and cosigns a new one only when a consistency proof shows
the log grew from it (C2SP tlog-witness, POST /add-checkpoint). Not the witness file of
`pgtrail verify --witness`.
Example:
  pgtrail keygen --out /etc/pgtrail-witness/witness.key
  pgtrail witness --key /etc/pgtrail-witness/witness.key --name witness.example.com/w1 --print-vkey
  pgtrail witness --listen 0.0.0.0:7380 --state /var/lib/pgtrail-witness \\
    --key /etc/pgtrail-witness/witness.key --name witness.example.com/w1 \\
    --log pgtrail/store/0f3c...=/etc/pgtrail-witness/store.key.pub")]
pub struct WitnessArgs {
    /// Address to listen on (`host:port`; port 0 picks a free one, printed on stdout).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Directory holding the latest checkpoint of each log (one file per log).
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// The witness's private key file (`pgtrail keygen`).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The witness's name in its cosignatures (a key name: no spaces, no `+`).
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// A log it cosigns: its origin (`pgtrail/store/<store id>`, see `pgtrail status`) and
    /// the public key file its checkpoints are signed with. Repeat for several logs.
    #[arg(long, value_name = "ORIGIN=FILE")]
    pub log: Vec<String>,
    /// Print the witness's vkey (for `[signing] witnesses` and `verify --witness-key`) and exit.
    #[arg(long)]
    pub print_vkey: bool,
}

/// Filters shared by `log` and `export`.
#[derive(Debug, Args, Default, Clone)]
pub struct FilterArgs {
    /// Only events on this table (`users` or `public.users`; without a schema, in any
    /// schema). A statement matches if it touched the table anywhere (a JOIN, a subquery).
    #[arg(long, value_name = "TABLE")]
    pub table: Option<String>,
    /// Only events on the row with this key: `id=42`, or `a=1,b=x` for a composite key.
    #[arg(long, value_name = "KEY")]
    pub pk: Option<String>,
    /// Only events by this user (application user or database role).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Leave out events of this database role (the role the server authenticated;
    /// an application's claimed user never hides an event).
    #[arg(long, value_name = "ROLE")]
    pub not_user: Option<String>,
    /// Only this operation: INSERT, UPDATE, DELETE, TRUNCATE, or a command tag such as "CREATE TABLE".
    #[arg(long, value_name = "OP")]
    pub op: Option<String>,
    /// Only statements of this class: READ, WRITE, FUNCTION, ROLE, DDL, MISC, MISC_SET, UNKNOWN.
    #[arg(long, value_name = "CLASS")]
    pub class: Option<String>,
    /// Only this kind: row_change, ddl, statement, session, snapshot, alarm, quarantine.
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// Only this capture path: trigger, cdc, proxy.
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<String>,
    /// Only events at or after this time: RFC 3339, a date, psql's timestamptz
    /// (`2026-12-06 02:19:01+00`), a duration ago (`2h`, `7d`), today, yesterday, "last week".
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only events before this time (same forms as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only failures: statements and logins with an error (a SQLSTATE outside class 00).
    #[arg(long)]
    pub failed: bool,
    /// Only events whose SQL text contains all these words.
    #[arg(long, value_name = "TEXT")]
    pub search: Option<String>,
    /// Only events of this database role (unlike --user, never the application's claimed user).
    #[arg(long, value_name = "ROLE")]
    pub db_user: Option<String>,
    /// Only events from this client address or CIDR block (`10.1.2.3`, `10.0.0.0/8`).
    #[arg(long, value_name = "ADDR")]
    pub ip: Option<String>,
    /// Only events in this database.
    #[arg(long, value_name = "NAME")]
    pub db: Option<String>,
    /// Only events older than this seq: the next page after a page whose last event had it.
    #[arg(long, value_name = "SEQ")]
    pub before: Option<i64>,
}

/// `pgtrail log`
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  pgtrail log --table public.users --since 2h
  pgtrail log --user alice@example.com --op UPDATE --limit 20
  pgtrail log --failed --format json
  pgtrail log --search \"drop table\"
  pgtrail log --kind statement --op DELETE --user alice --table public.orders --since 2026-03-01 --until 2026-03-02
  pgtrail log --kind statement --op INSERT --failed --since 1d
  pgtrail log --kind statement --op SELECT --table patients --not-user reporting
  pgtrail log --tx 7321                                  # a transaction by its xid
  pgtrail log --tx 4242@2026-03-02T10:00:00.010000Z      # by the proxy's PID@TIME")]
pub struct LogArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// One transaction, its statements (seen by the proxy) and its row changes
    /// (trigger and logical replication) together, each change with the statement
    /// that made it: an xid (as row changes show it), or the proxy's PID@TIME
    /// (backend pid and the transaction's start, as statements show it in
    /// `context`). The other filters do not apply.
    #[arg(long, value_name = "ID")]
    pub tx: Option<String>,
    /// At most this many events (the newest).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: usize,
}

/// `pgtrail sessions`
#[derive(Debug, Args)]
#[command(after_help = "\
Reads the proxy's session events: failed logins (user, database, client address,
SQLSTATE and message, how many, first and last time), then successful sessions
grouped by user and client address.
Examples:
  pgtrail sessions --since 1d
  pgtrail sessions --failed --user admin
  pgtrail sessions --since 7d --format json")]
pub struct SessionsArgs {
    /// Only logins at or after this time: RFC 3339, a date, or a duration ago (`2h`, `7d`).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only logins as this user (the database role, or an application user claimed at startup).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Only failed logins.
    #[arg(long)]
    pub failed: bool,
}

/// `pgtrail report`
#[derive(Debug, Args)]
#[command(after_help = "\
The dashboard's reports (/reports) and the API's (/api/v1/reports/NAME), from the
same functions. A window is at most 92 days; a report says when it stopped at its
cap on the events read.
Examples:
  pgtrail report bulk-changes --since 24h --threshold 100
  pgtrail report after-hours --since 7d --hours 08-18 --days mon-fri --tz +02:00
  pgtrail report delete-spikes --since 7d --multiple 3 --min 10
  pgtrail report who-read --table public.patients --pk id=42 --since 30d")]
pub struct ReportArgs {
    /// Which report.
    #[arg(value_enum)]
    pub name: ReportName,
    /// From this time (the forms of `log --since`); each report has its own default span.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Before this time (now by default).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// bulk-changes: more rows than this (100).
    #[arg(long, value_name = "ROWS")]
    pub threshold: Option<String>,
    /// bulk-changes, delete-spikes: only this table; who-read: the table read (required).
    #[arg(long, value_name = "TABLE")]
    pub table: Option<String>,
    /// after-hours: working hours (08-18).
    #[arg(long, value_name = "FROM-TO")]
    pub hours: Option<String>,
    /// after-hours: working days (mon-fri, or mon,tue,sat).
    #[arg(long, value_name = "DAYS")]
    pub days: Option<String>,
    /// after-hours: a time zone (Europe/Berlin) or a UTC offset (UTC, +02:00, -05:30).
    #[arg(long, value_name = "ZONE", allow_hyphen_values = true)]
    pub tz: Option<String>,
    /// delete-spikes: times the table's usual hourly rate (3).
    #[arg(long, value_name = "N")]
    pub multiple: Option<String>,
    /// delete-spikes: at least this many DELETEs in the hour (10).
    #[arg(long, value_name = "N")]
    pub min: Option<String>,
    /// who-read: the row's key (id=42).
    #[arg(long, value_name = "KEY")]
    pub pk: Option<String>,
}

/// The reports of `pgtrail report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportName {
    BulkChanges,
    AfterHours,
    DeleteSpikes,
    WhoRead,
}

/// `pgtrail history`
#[derive(Debug, Args)]
#[command(after_help = "\
Example:
  pgtrail history public.users id=1
  pgtrail history order_lines order_id=7,line=2")]
pub struct HistoryArgs {
    /// The table (`users` or `public.users`).
    pub table: String,
    /// The row's key: `id=42`, or `a=1,b=x` for a composite key.
    pub pk: String,
}

/// `pgtrail as-of`
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  pgtrail as-of public.users id=1 2026-01-31T12:00:00Z
  pgtrail as-of public.users id=1 2h        # two hours ago")]
pub struct AsOfArgs {
    /// The table (`users` or `public.users`).
    pub table: String,
    /// The row's key: `id=42`, or `a=1,b=x` for a composite key.
    pub pk: String,
    /// The moment: RFC 3339, a date, or a duration ago (`2h`, `7d`).
    pub time: String,
}

/// `pgtrail blame`
#[derive(Debug, Args)]
#[command(after_help = "\
Example:
  pgtrail blame public.accounts id=10")]
pub struct BlameArgs {
    /// The table (`users` or `public.users`).
    pub table: String,
    /// The row's key: `id=42`, or `a=1,b=x` for a composite key.
    pub pk: String,
}

/// `pgtrail import`
#[derive(Debug, Args)]
#[command(after_help = "\
Without --from, each line is one event as JSON (the form `pgtrail export` writes). seq,
prev_hash and hash are ignored: the store seals every event anew. Events whose id is
already stored are skipped, so an import can be run again. A bad record stops the
import; the batch it is in is not written (earlier batches are).
--from pgaudit reads pgAudit's AUDIT lines from a server log (stderr with its
log_line_prefix, csvlog or jsonlog) into statement events; --from table reads a
trigger-fed audit table (audit.logged_actions, or JSONB old/new rows) into row changes.
Imported events have source `import` and say where they came from in context.imported.
Examples:
  pgtrail import examples/sample.jsonl
  pgtrail --store sqlite:old.db export | pgtrail --store sqlite:new.db import -
  pgtrail import --from pgaudit /var/log/postgresql/postgresql-15-main.log \\
      --log-line-prefix '%m [%p] %q%u@%d '
  pgtrail import --from pgaudit postgresql.csv
  pgtrail import --from table postgres://auditor@db/shop --table audit.logged_actions")]
pub struct ImportArgs {
    /// The JSONL file (`-`: standard input), the server log, or the URL of
    /// the audit table's database.
    pub input: String,
    /// What the input is.
    #[arg(long, value_enum, default_value = "jsonl")]
    pub from: ImportFrom,
    /// The server log's format [default: told from its first record].
    #[arg(long, value_name = "stderr|csvlog|jsonlog")]
    pub log_format: Option<String>,
    /// The server's `log_line_prefix`, for a stderr log.
    #[arg(long, value_name = "PREFIX", default_value = "%m [%p] ")]
    pub log_line_prefix: String,
    /// `log_timezone`'s offset from UTC, when the log writes times with a
    /// zone abbreviation other than UTC (e.g. `+01:00` for CET).
    #[arg(long, value_name = "OFFSET", allow_hyphen_values = true)]
    pub log_utc_offset: Option<String>,
    /// Keep the statement parameters pgAudit logged
    /// (`pgaudit.log_parameter`); without it they are left out.
    #[arg(long)]
    pub keep_params: bool,
    /// The audit table, `schema.table` (`--from table`).
    #[arg(long, value_name = "SCHEMA.TABLE")]
    pub table: Option<String>,
    /// Only the audit table's rows with a key above this one.
    #[arg(long, value_name = "KEY", default_value_t = 0)]
    pub after: i64,
}

/// What `pgtrail import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFrom {
    /// Events as JSON Lines.
    Jsonl,
    /// A server log with pgAudit's lines.
    Pgaudit,
    /// A trigger-fed audit table.
    Table,
}

/// `pgtrail export`
#[derive(Debug, Args)]
#[command(after_help = "\
Writes every field of every event, including seq, prev_hash and hash, oldest first, as
JSON Lines; --format json writes one JSON array, and --format ocsf|ecs|cef|syslog|csv
the records a SIEM takes (docs/integrations.md has each format's field mapping).
With --follow it keeps writing new events as they are sealed, each once, until Ctrl-C.
Examples:
  pgtrail export --out trail.jsonl
  pgtrail export --table public.users --since 7d > users-week.jsonl
  pgtrail export --format ocsf --follow | vector --config vector.toml
  pgtrail export --format csv --kind session --failed --out failed-logins.csv")]
pub struct ExportArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// File to write [default: standard output].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// After the events there are, keep writing new ones as they are sealed
    /// (each batch flushed), until Ctrl-C.
    #[arg(long)]
    pub follow: bool,
    /// Syslog facility for `--format syslog` [default: local0, and auth for
    /// session events].
    /// (`local0`…`local7`, `auth`, `authpriv`, `daemon`, `user`, `audit`.)
    #[arg(long, value_name = "NAME")]
    pub facility: Option<pgtrail_sink::format::Facility>,
}

/// `pgtrail retention`
#[derive(Debug, Args)]
#[command(after_help = "\
Removes the oldest events as a prefix of the chain, after recording a (signed, when
[signing] private_key is set) checkpoint, so `pgtrail verify` still passes.
Example:
  pgtrail retention --keep 400d --archive /var/lib/pgtrail/archive")]
pub struct RetentionArgs {
    /// How long to keep events, e.g. `400d`, `8w` [default: `[retention] keep`].
    #[arg(long, value_name = "DURATION")]
    pub keep: Option<String>,
    /// Archive removed events here first, as gzip'd JSONL with a .sha256 file
    /// [default: `[retention] archive_dir`].
    #[arg(long, value_name = "DIR")]
    pub archive: Option<PathBuf>,
}

/// `pgtrail replicate` (formerly `pgtrail capture`)
#[derive(Debug, Args)]
#[command(after_help = "\
Runs until interrupted (Ctrl-C / SIGTERM). A flush position is confirmed to Postgres only
after the store has the events, so a restart resumes exactly where the store left off.
Examples:
  pgtrail replicate --db postgres://pgtrail@db/shop --setup --actor        # first run
  pgtrail replicate --db postgres://pgtrail@db/shop                        # later runs
  pgtrail replicate --db postgres://pgtrail@db/shop --setup --tables public.orders,public.users \\
      --replica-identity full --baseline
  pgtrail replicate --db postgres://pgtrail@db/shop --status               # slot lag
  pgtrail replicate --db postgres://pgtrail@db/shop --drop                 # remove everything
The password comes from PGPASSWORD or ~/.pgpass (PGPASSFILE), never put it in the URL (argv);
TLS follows sslmode/sslrootcert (URL or PGSSLMODE/PGSSLROOTCERT), see docs/configuration.md.")]
pub struct ReplicateArgs {
    /// Database to capture (libpq URL) [default: `[replication] db`]; the role needs REPLICATION,
    /// and --setup needs ownership of the tables (a superuser for --actor's DDL event triggers).
    #[arg(long, env = "PGTRAIL_DB", value_name = "URL")]
    pub db: Option<String>,
    /// Create or complete the publication and the slot (and more, see below) first.
    #[arg(long)]
    pub setup: bool,
    /// With --setup: only these tables (comma-separated, `schema.table`) [default: all user schemas].
    #[arg(long, value_delimiter = ',', value_name = "TABLES")]
    pub tables: Vec<String>,
    /// With --setup: every table of these schemas, including tables created later.
    #[arg(long = "schema", value_delimiter = ',', value_name = "SCHEMA")]
    pub schemas: Vec<String>,
    /// With --setup: `full` records whole old rows on UPDATE/DELETE (costs WAL volume).
    #[arg(long, value_name = "IDENTITY", value_parser = ["full"])]
    pub replica_identity: Option<String>,
    /// With --setup: install the actor triggers that record who made each change,
    /// and the DDL event triggers; revokes PUBLIC's EXECUTE on pg_logical_emit_message
    /// in this database, so that only pgtrail can send an actor (docs/cdc.md).
    /// (`--context` is its deprecated alias.)
    #[arg(long, alias = "context")]
    pub actor: bool,
    /// With --setup on a new slot: store the current rows as `snapshot` events first.
    #[arg(long)]
    pub baseline: bool,
    /// Set up (if asked) and exit without streaming.
    #[arg(long)]
    pub no_stream: bool,
    /// Remove the slot, the publication and the actor triggers, then exit.
    #[arg(long, conflicts_with_all = ["setup", "baseline"])]
    pub drop: bool,
    /// Print the slot's lag and exit.
    #[arg(long, conflicts_with_all = ["setup", "baseline", "drop"])]
    pub status: bool,
    #[command(flatten)]
    pub tuning: ReplicationTuning,
}

/// Logical-replication settings shared by `replicate` and `run`; each falls
/// back to its `[replication]` key.
#[derive(Debug, Args, Default, Clone)]
pub struct ReplicationTuning {
    /// Replication slot name [default: `[replication] slot`, pgtrail].
    #[arg(long, value_name = "NAME")]
    pub slot: Option<String>,
    /// Publication name [default: `[replication] publication`, pgtrail].
    #[arg(long, value_name = "NAME")]
    pub publication: Option<String>,
    /// Warn when the slot lags more than this many megabytes [default: `[replication] lag_warn_mb`, 256].
    #[arg(long, value_name = "MB")]
    pub lag_warn_mb: Option<u64>,
    /// Append a batch at this many events (or after --batch-wait-ms)
    /// [default: `[replication] batch_events`, 5000].
    #[arg(long, value_name = "N")]
    pub batch_events: Option<u64>,
    /// Append a batch when its oldest transaction waited this long
    /// [default: `[replication] batch_wait_ms`, 50].
    #[arg(long, value_name = "MS")]
    pub batch_wait_ms: Option<u64>,
    /// Hold at most about this many megabytes of open transactions' changes
    /// in memory; the largest transaction past it is spilled to --spill-dir
    /// [default: `[replication] memory_limit_mb`, 256].
    #[arg(long, value_name = "MB", value_parser = clap::value_parser!(u64).range(1..))]
    pub memory_limit_mb: Option<u64>,
    /// Directory for spill files of large transactions (created 0700, must be this user's)
    /// [default: `[replication] spill_dir`, pgtrail-spill-UID in the temporary directory].
    #[arg(long, value_name = "DIR")]
    pub spill_dir: Option<std::path::PathBuf>,
}

/// `pgtrail install`
#[derive(Debug, Args)]
#[command(after_help = "\
Creates schema pgtrail (the store and the trigger capture: inbox, functions, DDL event
triggers, roles pgtrail_reader and pgtrail_admin) in one transaction; running it again
upgrades an older install in place. Needs a superuser (event triggers).
Examples:
  pgtrail install --db postgres://postgres@localhost/shop
  pgtrail install --db postgres://postgres@localhost/shop --dry-run > install.sql
The password comes from PGPASSWORD or ~/.pgpass (PGPASSFILE), never put it in the URL (argv);
TLS follows sslmode/sslrootcert (URL or PGSSLMODE/PGSSLROOTCERT), see docs/configuration.md.")]
pub struct InstallArgs {
    /// Database to audit (libpq URL).
    #[arg(long, env = "PGTRAIL_DB", value_name = "URL")]
    pub db: String,
    /// Print the SQL instead of running it.
    #[arg(long)]
    pub dry_run: bool,
}

/// `pgtrail uninstall`
#[derive(Debug, Args)]
#[command(after_help = "\
Drains what is pending, then removes the capture triggers, the DDL event triggers and
pgtrail's functions. The trail (pgtrail.events, checkpoints) stays unless --drop-data.
Example:
  pgtrail uninstall --db postgres://postgres@localhost/shop")]
pub struct UninstallArgs {
    /// Database to remove trigger capture from (libpq URL).
    #[arg(long, env = "PGTRAIL_DB", value_name = "URL")]
    pub db: String,
    /// Also drop schema pgtrail with the whole trail.
    #[arg(long)]
    pub drop_data: bool,
    /// Print the SQL instead of running it.
    #[arg(long)]
    pub dry_run: bool,
}

/// `pgtrail track`
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  pgtrail track --db $DB public.users public.orders --ignore updated_at,last_login_at
  pgtrail track --db $DB customers --mask email,phone            # keyed hash: equal stays equal
  pgtrail track --db $DB cards --mask number --mask-mode redact  # ***
  pgtrail track --db $DB --all --schema shop --auto              # and tables created later
Tracking again changes a table's options. Tables without a primary key are tracked with the
whole row as identity (their events say so).")]
pub struct TrackArgs {
    /// Database (libpq URL).
    #[arg(long, env = "PGTRAIL_DB", value_name = "URL")]
    pub db: String,
    /// Tables to track (`users` or `public.users`).
    #[arg(value_name = "TABLE", conflicts_with = "all")]
    pub tables: Vec<String>,
    /// Track every table of --schema.
    #[arg(long)]
    pub all: bool,
    /// With --all: the schema [default: public].
    #[arg(long, value_name = "SCHEMA", requires = "all")]
    pub schema: Option<String>,
    /// With --all: also track tables created in the schema later.
    #[arg(long, requires = "all")]
    pub auto: bool,
    /// Columns whose changes alone are not logged (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "COLUMNS")]
    pub ignore: Vec<String>,
    /// Columns whose values are masked in the trail (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "COLUMNS")]
    pub mask: Vec<String>,
    /// How masked values are replaced: `hash` (keyed, equal values stay equal) or `redact` (***).
    #[arg(long, default_value = "hash", value_parser = ["hash", "redact"], value_name = "MODE")]
    pub mask_mode: String,
    /// Also record each change's statement text.
    #[arg(long)]
    pub sql: bool,
    /// `row`: row-level triggers, cheapest per statement (OLTP); `statement`: statement-level
    /// triggers with transition tables, cheapest for bulk UPDATE/DELETE/INSERT.
    #[arg(long, default_value = "row", value_parser = ["row", "statement"], value_name = "MODE")]
    pub mode: String,
}

/// `pgtrail untrack`
#[derive(Debug, Args)]
#[command(after_help = "\
Example:
  pgtrail untrack --db $DB public.sessions")]
pub struct UntrackArgs {
    /// Database (libpq URL).
    #[arg(long, env = "PGTRAIL_DB", value_name = "URL")]
    pub db: String,
    /// Tables to stop tracking.
    #[arg(value_name = "TABLE", required = true)]
    pub tables: Vec<String>,
}

/// `pgtrail status`
#[derive(Debug, Args)]
#[command(after_help = "\
Shows trigger capture (when installed) and pgtrail's replication slots: whether a consumer
is connected, the confirmed position, and the lag in bytes and seconds, with a warning past
`[replication] lag_warn_mb`, and each store's newest signed checkpoint, with a warning when it is stale.
Exit status: 0; with --check, 1 when anything carries a warning (for monitoring), 2 on error.
Examples:
  pgtrail status --db postgres://pgtrail@localhost/shop
  pgtrail status --db postgres://pgtrail@localhost/shop --check --format json   # from a monitor")]
pub struct StatusArgs {
    /// Database (libpq URL).
    #[arg(long, env = "PGTRAIL_DB", value_name = "URL")]
    pub db: String,
    /// Replication slot to report (repeatable) [default: `[replication] slot`].
    #[arg(long = "slot", value_name = "NAME")]
    pub slots: Vec<String>,
    /// Exit with status 1 when a slot or a store's checkpoints carry a warning.
    #[arg(long)]
    pub check: bool,
}

/// `pgtrail doctor`
#[derive(Debug, Args)]
#[command(after_help = "\
Reads the server's settings, replication slots, pgAudit, every user table (keys, replica
identity, TOASTed columns, write rates since the statistics were reset) and the roles, and
says per table which capture path to use and what it costs (figures from bench/README.md).
Only reads, in a read-only transaction; a role with pg_monitor is enough, and what a role
may not read is reported as `not_checked`, never an error. Findings and codes: docs/doctor.md.
Exit status: 0 no warning, 1 warnings, 3 failures; 2 when doctor could not run (connection).
Examples:
  pgtrail doctor --db postgres://monitor@db/shop
  pgtrail doctor --db postgres://monitor@db/shop --format json | jq '.findings[]'
  pgtrail doctor --db postgres://monitor@db/shop --sample 60   # write rates measured now")]
pub struct DoctorArgs {
    /// Database (libpq URL).
    #[arg(long, env = "PGTRAIL_DB", value_name = "URL")]
    pub db: String,
    /// Measure write rates over this many seconds now, instead of since the statistics were reset.
    #[arg(long, value_name = "SECONDS")]
    pub sample: Option<u64>,
    /// A table with at least this many writes per second is busy (logical replication is advised).
    #[arg(long, value_name = "N", default_value_t = 1000.0)]
    pub busy_writes: f64,
    /// Show info findings in plain output too (JSON always has them).
    #[arg(long, short)]
    pub verbose: bool,
}

/// `pgtrail drain` (formerly `pgtrail seal`)
#[derive(Debug, Args)]
#[command(after_help = "\
Only transactions that are over are drained, in commit order: their events are appended
to the store in the database and their inbox rows deleted; the rest wait for the next run.
Example, from cron every minute (or keep `pgtrail run` going instead):
  * * * * *  pgtrail drain --db postgres://pgtrail@localhost/shop")]
pub struct DrainArgs {
    /// Database (libpq URL).
    #[arg(long, env = "PGTRAIL_DB", value_name = "URL")]
    pub db: String,
}

/// `pgtrail run`
#[derive(Debug, Args)]
#[command(after_help = "\
The one long-running process. It runs each configured part side by side until interrupted
(Ctrl-C / SIGTERM):
  - draining: the trigger inbox of --db / `[triggers] db` (when trigger capture is installed
    there), every --interval-ms, and once more before it exits;
  - logical replication: --replication-db / `[replication] db` into the store (--store /
    `[store] url`), from a slot made by `pgtrail replicate --setup`; the batch in hand is
    stored before it exits;
  - checkpoints, with a private key (--private-key / `[signing] private_key`): the head of each
    store written to is signed every `[signing] checkpoint_every` (10m) when it moved, and once
    more after the other parts stopped.
Each part retries what may pass (a database restarting, a store outage). If a part fails
for good, the others stop cleanly and pgtrail exits with status 2, so that a supervisor
(systemd Restart=on-failure) restarts it; it never keeps running with a part dead.
Examples:
  pgtrail run --db postgres://pgtrail@localhost/shop
  pgtrail run --replication-db postgres://pgtrail@localhost/shop --store sqlite:/var/lib/pgtrail/trail.db
  pgtrail run                      # both from pgtrail.toml: [triggers] db, [replication] db
Deprecated aliases: --capture-db (--replication-db), [capture] ([replication]),
[triggers] seal_interval_ms (drain_interval_ms).")]
pub struct RunArgs {
    /// Database whose trigger capture to drain (libpq URL) [default: `[triggers] db`].
    #[arg(long, env = "PGTRAIL_DB", value_name = "URL")]
    pub db: Option<String>,
    /// Pause between drains [default: `[triggers] drain_interval_ms`, 1000].
    #[arg(long, value_name = "MS")]
    pub interval_ms: Option<u64>,
    /// Database to capture by logical replication (libpq URL) [default: `[replication] db`].
    #[arg(long, alias = "capture-db", value_name = "URL")]
    pub replication_db: Option<String>,
    #[command(flatten)]
    pub replication: ReplicationTuning,
    /// Private key that signs checkpoints of the stores this process writes to, every
    /// `[signing] checkpoint_every` [default: `[signing] private_key`]. Without a key,
    /// no checkpoint is signed.
    #[arg(long, value_name = "FILE")]
    pub private_key: Option<PathBuf>,
}

/// `pgtrail ddl`
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  pgtrail --store $DB ddl --since 7d
  pgtrail --store $DB ddl --user alice@example.com --format json")]
pub struct DdlArgs {
    /// Only changes at or after this time: RFC 3339, a date, or a duration ago (`2h`, `7d`).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only changes before this time (same forms as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only changes by this user (application user or database role).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// At most this many commands (the newest).
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub limit: usize,
}

/// `pgtrail demo`
#[derive(Debug, Args)]
#[command(after_help = "\
Example:
  cargo run --release -- demo")]
pub struct DemoArgs {
    /// Keep the demo cluster in this directory (reused next time) instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Listen on this port instead of a free one.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Command {
        match Cli::try_parse_from(args) {
            Ok(cli) => cli.command,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn the_old_names_still_parse() {
        assert!(matches!(
            parse(&["pgtrail", "seal", "--db", "postgres://h/db"]),
            Command::Drain(DrainArgs { db }) if db == "postgres://h/db"
        ));
        let Command::Replicate(args) = parse(&["pgtrail", "capture", "--setup", "--context"])
        else {
            panic!("capture is replicate");
        };
        assert!(args.setup && args.actor);
        let Command::Run(args) = parse(&["pgtrail", "run", "--capture-db", "postgres://h/db"])
        else {
            panic!("run");
        };
        assert_eq!(args.replication_db.as_deref(), Some("postgres://h/db"));
    }

    #[test]
    fn the_new_names_parse() {
        assert!(matches!(
            parse(&["pgtrail", "drain", "--db", "postgres://h/db"]),
            Command::Drain(_)
        ));
        let Command::Replicate(args) = parse(&["pgtrail", "replicate", "--setup", "--actor"])
        else {
            panic!("replicate");
        };
        assert!(args.setup && args.actor);
        let Command::Run(args) = parse(&["pgtrail", "run", "--replication-db", "postgres://h/db"])
        else {
            panic!("run");
        };
        assert_eq!(args.replication_db.as_deref(), Some("postgres://h/db"));
    }
}

/// `pgtrail serve`
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  pgtrail serve                          # http://127.0.0.1:8080
  pgtrail serve --listen 0.0.0.0:8080 --store postgres://pgtrail@db/audit")]
pub struct ServeArgs {
    /// Address to listen on [default: `[server] listen`, else 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// PEM certificate chain to serve HTTPS with [default: `[server] tls_cert`].
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert [default: `[server] tls_key`].
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on an address other than loopback: tokens and
    /// session cookies then cross the network in clear [`[server] insecure_http`].
    #[arg(long)]
    pub insecure_http: bool,
}

/// `pgtrail token`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once and only its SHA-256 is kept.
    Create(TokenCreateArgs),
    /// The tokens: name, role, created (never the tokens themselves).
    List,
    /// Revoke a token: the next request with it, and its sessions, are refused.
    Revoke(TokenRevokeArgs),
}

/// `pgtrail token create`
#[derive(Debug, Args)]
#[command(after_help = "\
The token goes to `[server] tokens_file` (default: pgtrail-tokens.toml beside
the configuration file, 0600), hashed; its creation is an access event in
the store. Use it as `Authorization: Bearer TOKEN` or on the login page.

Examples:
  pgtrail token create --name alice --role auditor
  pgtrail token create --name support-dashboard --role viewer")]
pub struct TokenCreateArgs {
    /// Who holds it: recorded with everything it reads (A-Z a-z 0-9 . _ @ -).
    #[arg(long)]
    pub name: String,
    /// `auditor` sees everything stored; `viewer` no statement parameters.
    #[arg(long, value_name = "auditor|viewer")]
    pub role: String,
}

/// `pgtrail token revoke`
#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    /// The token's name.
    pub name: String,
}
