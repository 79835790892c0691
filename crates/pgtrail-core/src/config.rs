//! Typed configuration: what `pgtrail.toml` may contain.
//!
//! The binary layers file → `PGTRAIL_*` environment → flags; this module only
//! defines the shape, its defaults and its validation.

use serde::{Deserialize, Serialize};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is not valid TOML or has unknown keys.
    #[error("cannot parse {path}")]
    Parse {
        /// The file.
        path: String,
        /// What the TOML parser said.
        #[source]
        source: toml::de::Error,
    },
    /// A value is out of range or malformed.
    #[error("config key '{key}': {reason}")]
    Invalid {
        /// Dotted path of the key.
        key: String,
        /// The constraint it broke.
        reason: String,
    },
}

/// The whole `pgtrail.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where events are kept.
    pub store: StoreConfig,
    /// Checkpoint signing.
    pub signing: SigningConfig,
    /// How long events are kept.
    pub retention: RetentionConfig,
    /// Where application identity is read from.
    pub identity: IdentityConfig,
    /// Trigger capture drained by `pgtrail run`.
    pub triggers: TriggersConfig,
    /// Logical replication (`pgtrail replicate`, `pgtrail run`); `[capture]`
    /// is its deprecated alias.
    #[serde(alias = "capture")]
    pub replication: ReplicationConfig,
    /// The statement proxy (`pgtrail proxy`, `pgtrail run`).
    pub proxy: ProxyConfig,
    /// The HTTP API and dashboard (`pgtrail serve`, `pgtrail run`).
    pub server: ServerConfig,
    /// `[metrics]`: where `pgtrail run` serves `/metrics` without a server
    /// (docs/metrics.md).
    pub metrics: MetricsConfig,
    /// `[[sinks]]`: where `pgtrail run` sends the sealed events on
    /// (docs/integrations.md).
    pub sinks: Vec<SinkConfig>,
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite:PATH` (embedded, one file) or a `postgres://` URL.
    pub url: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: default_store_url(),
        }
    }
}

/// The store used when none is configured: a file in the working directory.
pub fn default_store_url() -> String {
    "sqlite:pgtrail.db".to_string()
}

/// `[signing]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// Ed25519 private key file (from `pgtrail keygen`) used to sign checkpoints.
    pub private_key: Option<String>,
    /// Ed25519 public key file used by `verify` to check checkpoint signatures.
    pub public_key: Option<String>,
    /// Public keys replaced by `public_key` (after a rotation): `verify`
    /// also accepts checkpoints signed with one of these. Write a retired
    /// key as `PATH@N`, N the last event it signed: its checkpoints past
    /// event N are then refused, so a leaked old key cannot sign new ones.
    pub previous_public_keys: Vec<String>,
    /// Witness file: every signed checkpoint is also appended here (keep it
    /// off the store's host); `verify` checks the store against it.
    pub witness: Option<String>,
    /// Witness servers (`pgtrail witness`, C2SP tlog-witness) `pgtrail run`
    /// submits each new checkpoint to; their cosignatures are kept in the
    /// store for `verify --witness-key`.
    pub witnesses: Vec<WitnessServer>,
    /// How often `pgtrail run` signs a checkpoint of each store it writes
    /// to (when the head moved), e.g. `10m`; `status` warns past twice this.
    pub checkpoint_every: String,
}

/// One of `[[signing.witnesses]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessServer {
    /// Its submission prefix: `http://host:port` (`/add-checkpoint` is appended).
    pub url: String,
    /// Its verifier key, `<name>+<key id>+<key>` (`pgtrail witness --print-vkey`).
    pub vkey: String,
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig {
            private_key: None,
            public_key: None,
            previous_public_keys: Vec::new(),
            witness: None,
            witnesses: Vec::new(),
            checkpoint_every: "10m".into(),
        }
    }
}

impl SigningConfig {
    /// `checkpoint_every` as a duration (checked by [`Config::validate`]).
    pub fn checkpoint_interval(&self) -> Result<std::time::Duration, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            key: "signing.checkpoint_every".into(),
            reason,
        };
        let every = crate::time::parse_duration(&self.checkpoint_every)
            .map_err(|e| invalid(e.to_string()))?;
        every
            .to_std()
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| invalid("must be longer than zero".into()))
    }
}

/// `[retention]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// How long to keep events, e.g. `400d`; unset keeps everything.
    pub keep: Option<String>,
    /// Directory to archive removed events into (compressed JSONL + checksum).
    pub archive_dir: Option<String>,
}

/// `[identity]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Session settings read for the application user, first set one wins.
    pub user_settings: Vec<String>,
    /// Session setting holding a JSON object of application context.
    pub context_setting: String,
    /// Keys of a sqlcommenter comment naming the application user, first
    /// present wins (see `sql_comment`).
    pub comment_user_keys: Vec<String>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            user_settings: vec!["pgtrail.user".into(), "app.current_user".into()],
            context_setting: "pgtrail.context".into(),
            comment_user_keys: crate::sql_comment::default_user_keys(),
        }
    }
}

/// `[triggers]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TriggersConfig {
    /// Database with trigger capture installed whose inbox `pgtrail run`
    /// drains (libpq URL); unset: `pgtrail run` drains only with `--db`.
    pub db: Option<String>,
    /// Pause between drains, in milliseconds (`seal_interval_ms` is its
    /// deprecated alias).
    #[serde(alias = "seal_interval_ms")]
    pub drain_interval_ms: u64,
}

impl Default for TriggersConfig {
    fn default() -> Self {
        TriggersConfig {
            db: None,
            drain_interval_ms: 1000,
        }
    }
}

/// `[replication]` (formerly `[capture]`)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// Database captured through logical replication (libpq URL); unset:
    /// `pgtrail run` replicates only with `--replication-db`.
    pub db: Option<String>,
    /// Replication slot (one per consumer).
    pub slot: String,
    /// Publication naming the captured tables.
    pub publication: String,
    /// A batch is appended when it holds this many events…
    pub batch_events: u64,
    /// …or when its oldest transaction waited this many milliseconds.
    pub batch_wait_ms: u64,
    /// Lag, in megabytes of WAL, past which a warning fires (log and status).
    pub lag_warn_mb: u64,
    /// Megabytes (counted roughly) of changes held in memory for open
    /// transactions; past it the largest is spilled to `spill_dir`.
    pub memory_limit_mb: u64,
    /// Directory for spill files (created 0700; a subdirectory per slot);
    /// unset: `pgtrail-spill` in the system's temporary directory.
    pub spill_dir: Option<String>,
    /// Columns masked with the keyed hash of trigger capture (`track
    /// --mask`), as `schema.table.column`; the key is the captured
    /// database's own (see docs/cdc.md).
    pub mask: Vec<String>,
    /// Columns whose values become `***`, as `schema.table.column`.
    pub mask_redact: Vec<String>,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            db: None,
            slot: "pgtrail".into(),
            publication: "pgtrail".into(),
            batch_events: 5000,
            batch_wait_ms: 50,
            lag_warn_mb: 256,
            memory_limit_mb: 256,
            spill_dir: None,
            mask: Vec::new(),
            mask_redact: Vec::new(),
        }
    }
}

/// `[server]`: the HTTP API and dashboard (docs/dashboard.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to serve on, e.g. `127.0.0.1:8080`; `pgtrail run` serves
    /// only when it is set.
    pub listen: Option<String>,
    /// The tokens file (`pgtrail token`; SHA-256 of each token, 0600);
    /// unset: `pgtrail-tokens.toml` beside the configuration file.
    pub tokens_file: Option<String>,
    /// PEM certificate chain served over HTTPS; with `tls_key`.
    pub tls_cert: Option<String>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<String>,
    /// Serve plain HTTP on an address other than loopback (tokens and
    /// session cookies then cross the network in clear): refused unless set.
    pub insecure_http: bool,
    /// Where access records are made durable before a read is answered
    /// (a spool, created 0700, drained into the store in batches); unset:
    /// `pgtrail-server-spool-<listen address>` in the system's state
    /// directory (see docs/dashboard.md).
    pub access_spool_dir: Option<String>,
}

/// `[metrics]`: Prometheus metrics (docs/metrics.md). `pgtrail serve`,
/// and `pgtrail run` with `[server] listen`, serve `/metrics` on the
/// server's listener; `listen` here gives `pgtrail run` a listener that
/// serves only `/metrics` (the same tokens, TLS and loopback rules as
/// `[server]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address for `/metrics` alone, e.g. `127.0.0.1:9187`.
    pub listen: Option<String>,
}

/// One `[[sinks]]` entry: a destination with its own cursor. Unknown keys
/// are refused by the kind's own table (serde refuses them on a struct
/// that flattens another only that way).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkConfig {
    /// Unique among the sinks: names its cursor and its line in `status`.
    pub name: String,
    /// Record format (`pgtrail_sink::format::Format`); each kind has a default.
    #[serde(default)]
    pub format: Option<String>,
    /// The store it reads (`sqlite:PATH` or `postgres://…`); `[store] url`
    /// when unset.
    #[serde(default)]
    pub store: Option<String>,
    /// Directory of its cursor file (`<name>.cursor`); beside a SQLite
    /// store (`<store file>.sinks/`) when unset, required for a Postgres
    /// store.
    #[serde(default)]
    pub state_dir: Option<String>,
    /// Most items handed to the destination at once (default 1000).
    #[serde(default)]
    pub batch: Option<usize>,
    /// The destination and its settings.
    #[serde(flatten)]
    pub kind: SinkKind,
}

/// A sink's destination, by its `type` key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SinkKind {
    /// A rotating JSONL (or other line format) file a collector tails.
    File(FileSinkConfig),
    /// HTTP batches: Splunk HEC, Elasticsearch/OpenSearch `_bulk`, a webhook.
    Http(HttpSinkConfig),
    /// Syslog over UDP, TCP or TLS.
    Syslog(SyslogSinkConfig),
    /// NATS JetStream.
    Nats(NatsSinkConfig),
}

/// `type = "file"`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSinkConfig {
    /// Directory the files are written in.
    pub dir: String,
    /// Name of the current file without its extension (default
    /// `pgtrail-events`): `<prefix>.<ext>` is written, rotated files are
    /// `<prefix>-<UTC time>-<first seq>.<ext>`.
    pub prefix: Option<String>,
    /// Rotate once the current file reaches this many megabytes (default
    /// 100; 0: never by size).
    pub rotate_mb: Option<u64>,
    /// Rotate once the current file is this old (`1h`, `1d`; default
    /// never by time).
    pub rotate_every: Option<String>,
}

/// `type = "http"`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSinkConfig {
    /// Where batches are posted (`http://` or `https://`). For `splunk`
    /// the HEC base or its `/services/collector/event` URL; for
    /// `elasticsearch` the cluster (or index) URL `_bulk` is added to.
    pub url: String,
    /// `webhook` (default), `splunk` (HEC) or `elasticsearch` (also
    /// OpenSearch: `_bulk`).
    pub api: Option<String>,
    /// File holding the secret: the HEC token, the `_bulk` API key or
    /// basic credentials (`user:password`), the webhook's HMAC key.
    pub secret_file: Option<String>,
    /// Environment variable holding the secret, instead of a file.
    pub secret_env: Option<String>,
    /// Webhook body: `array` (a JSON array, default) or `ndjson`.
    pub body: Option<String>,
    /// `_bulk`: the index written to (default `pgtrail-events`).
    pub index: Option<String>,
    /// Splunk HEC: `sourcetype` (default `pgtrail:event`), `source`
    /// (default `pgtrail`), `index` (default: the token's).
    pub sourcetype: Option<String>,
    /// Splunk HEC `source`.
    pub source: Option<String>,
    /// Seconds a request may take (default 30).
    pub timeout_secs: Option<u64>,
    /// PEM file of the CA certificates to trust for `https://` (default:
    /// the system's).
    pub ca_file: Option<String>,
    /// Requests under way at once, each on its own connection (default 4
    /// for `splunk` and `elasticsearch`, 1 for a webhook, which then gets
    /// requests in chain order); `batch` is the most events in one request.
    /// The cursor moves only past a delivery all of whose requests succeeded.
    pub max_in_flight: Option<usize>,
}

/// `type = "syslog"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogSinkConfig {
    /// `udp://HOST:PORT`, `tcp://HOST:PORT` or `tls://HOST:PORT`.
    pub url: String,
    /// TLS: PEM file of the CA(s) the receiver's certificate must chain to;
    /// unset: the system's trust store. The certificate must name the host.
    pub ca_file: Option<String>,
    /// TLS: PEM certificate chain presented when the receiver asks for one.
    pub cert_file: Option<String>,
    /// TLS: the private key of `cert_file`.
    pub key_file: Option<String>,
    /// HOSTNAME in the messages; unset: this machine's host name.
    pub hostname: Option<String>,
    /// Seconds a connect or a batch's write may take before the batch fails.
    pub timeout_secs: u64,
    /// UDP: the largest datagram sent; a longer message is truncated with a
    /// marker (and counted). RFC 5426 asks receivers for 2048 at least.
    pub max_datagram: usize,
}

impl Default for SyslogSinkConfig {
    fn default() -> Self {
        SyslogSinkConfig {
            url: String::new(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            hostname: None,
            timeout_secs: 10,
            max_datagram: 2048,
        }
    }
}

/// `type = "nats"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSinkConfig {
    /// `nats://HOST:PORT` (`tls://` for TLS), or several, comma-separated.
    pub url: String,
    /// Subject every event is published on (fixed: no event field chooses it).
    pub subject: String,
    /// Subject the signed checkpoints are published on.
    pub checkpoint_subject: String,
    /// JetStream stream taking both subjects; with `create_stream`, made
    /// when missing (an existing stream is used as it is).
    pub stream: String,
    /// Create `stream` when it does not exist.
    pub create_stream: bool,
    /// Seconds JetStream remembers a `Nats-Msg-Id` for a stream it creates:
    /// a redelivery within the window is stored once.
    pub duplicate_window_secs: u64,
    /// NATS credentials file (`.creds`: JWT and NKey seed).
    pub credentials_file: Option<String>,
    /// User name, with `password_file`.
    pub user: Option<String>,
    /// File holding the password of `user` (first line).
    pub password_file: Option<String>,
    /// File holding an authentication token (first line).
    pub token_file: Option<String>,
    /// PEM file of the CA(s) the server's certificate must chain to; set:
    /// TLS is required.
    pub ca_file: Option<String>,
    /// Seconds a connect or a batch's acknowledgements may take.
    pub timeout_secs: u64,
}

impl Default for NatsSinkConfig {
    fn default() -> Self {
        NatsSinkConfig {
            url: String::new(),
            subject: "pgtrail.events".into(),
            checkpoint_subject: "pgtrail.checkpoints".into(),
            stream: "PGTRAIL".into(),
            create_stream: false,
            duplicate_window_secs: 600,
            credentials_file: None,
            user: None,
            password_file: None,
            token_file: None,
            ca_file: None,
            timeout_secs: 10,
        }
    }
}

/// `[proxy]`: the statement proxy (docs/proxy.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    // --- where
    /// Address clients connect to, e.g. `0.0.0.0:6432`; unset: `pgtrail
    /// run` runs no proxy.
    pub listen: Option<String>,
    /// The server (libpq URL): only host, port and TLS settings (`sslmode`,
    /// `sslrootcert`) are used; user, database and credentials are each
    /// client's own.
    pub upstream: Option<String>,

    // --- nothing lost
    /// When a statement's result may reach its client.
    pub durability: Durability,
    /// What happens to statements when neither the store nor the spool can
    /// take their events.
    pub when_full: WhenTrailFull,
    /// The spool directory (created 0700); unset: `pgtrail-proxy-spool` in
    /// the system's state directory (see docs/proxy.md).
    pub spool_dir: Option<String>,
    /// Most megabytes the spool may hold.
    pub spool_max_mb: u64,

    // --- what to log
    /// `"all"`, `"failed"`, `"none"`, or a list of statement classes
    /// (`read`, `write`, `function`, `role`, `ddl`, `misc`, `misc_set`,
    /// `unknown`) and `failed`, e.g. `["write", "ddl", "role", "failed"]`.
    #[serde(deserialize_with = "one_or_many")]
    pub log: Vec<String>,
    /// Ordered include/exclude rules, first match wins (docs/proxy.md).
    pub rules: Vec<ProxyRule>,
    /// Share (0.0 to 1.0) of READ statements logged that no rule chose.
    pub sample_reads: f64,
    /// Bind parameters in events: `none`, `hash` or `full`.
    pub params: ParamsPolicy,
    /// File holding the key of `params = "hash"` (HMAC-SHA-256; at least 16
    /// bytes, e.g. `head -c 32 /dev/urandom > key`): an unkeyed hash of a
    /// parameter is reversed by hashing guesses, so `hash` needs a key.
    pub params_hash_key_file: Option<String>,
    /// Columns (`schema.table.column`) whose parameter values `params =
    /// "full"` replaces by the keyed hash of `params_hash_key_file` (`***`
    /// without a key), as `[replication] mask` masks them in row images.
    pub mask: Vec<String>,
    /// Columns whose parameter values become `***` (as `[replication] mask_redact`).
    pub mask_redact: Vec<String>,
    /// Literals in statement text: `keep` or `normalize` (each becomes `$n`).
    pub literals: LiteralsPolicy,

    // --- TLS toward clients
    /// PEM certificate chain offered to clients; with `tls_key`, SSLRequest
    /// and direct TLS are accepted.
    pub tls_cert: Option<String>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<String>,
    /// Refuse clients that do not use TLS.
    pub require_tls: bool,

    // --- writes around the proxy
    /// With trigger capture also in `pgtrail run`, raise an alarm for each
    /// transaction whose row changes came from a backend the proxy never
    /// opened (docs/proxy.md). Turn off when the proxy fronts another
    /// server than the one trigger capture audits.
    pub bypass_alarm: bool,
    /// Database roles allowed to write around the proxy (a migration role).
    pub bypass_roles: Vec<String>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: None,
            upstream: None,
            durability: Durability::default(),
            when_full: WhenTrailFull::default(),
            spool_dir: None,
            spool_max_mb: 1024,
            log: vec!["all".into()],
            rules: Vec::new(),
            sample_reads: 1.0,
            params: ParamsPolicy::default(),
            params_hash_key_file: None,
            mask: Vec::new(),
            mask_redact: Vec::new(),
            literals: LiteralsPolicy::default(),
            tls_cert: None,
            tls_key: None,
            require_tls: false,
            bypass_alarm: true,
            bypass_roles: Vec::new(),
        }
    }
}

/// The statement classes `[proxy] log` and `[[proxy.rules]] class` name
/// (pgAudit's, lower case; `failed` is a statement that failed).
pub const PROXY_CLASSES: [&str; 9] = [
    "read", "write", "function", "role", "ddl", "misc", "misc_set", "unknown", "failed",
];

impl ProxyConfig {
    /// Checks `log`, `rules` and `params`: unknown class names are refused
    /// (a typo would silently log nothing), `hash` needs its key.
    pub fn validate_logging(&self) -> Result<(), ConfigError> {
        let class_error = |key: &str, name: &str| ConfigError::Invalid {
            key: key.into(),
            reason: format!(
                "unknown statement class '{name}' (expected one of: {})",
                PROXY_CLASSES.join(", ")
            ),
        };
        let level = |name: &str| name.to_ascii_lowercase();
        match self
            .log
            .iter()
            .map(|l| level(l))
            .collect::<Vec<_>>()
            .as_slice()
        {
            [] => {
                return Err(ConfigError::Invalid {
                    key: "proxy.log".into(),
                    reason: "must not be empty (use \"none\" to log nothing)".into(),
                })
            }
            [one] if one == "all" || one == "none" => {}
            many => {
                for name in many {
                    if name == "all" || name == "none" {
                        return Err(ConfigError::Invalid {
                            key: "proxy.log".into(),
                            reason: format!("'{name}' cannot be combined with classes"),
                        });
                    }
                    if !PROXY_CLASSES.contains(&name.as_str()) {
                        return Err(class_error("proxy.log", name));
                    }
                }
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let key = format!("proxy.rules[{i}].class");
            for name in &rule.class {
                if !PROXY_CLASSES.contains(&level(name).as_str()) {
                    return Err(class_error(&key, name));
                }
            }
            let empty = rule.db_user.is_empty()
                && rule.app_user.is_empty()
                && rule.database.is_empty()
                && rule.table.is_empty()
                && rule.class.is_empty();
            if empty {
                return Err(ConfigError::Invalid {
                    key: format!("proxy.rules[{i}]"),
                    reason:
                        "a rule needs at least one of db_user, app_user, database, table, class"
                            .into(),
                });
            }
            for table in &rule.table {
                if table.trim().is_empty() {
                    return Err(ConfigError::Invalid {
                        key: format!("proxy.rules[{i}].table"),
                        reason: "empty table name".into(),
                    });
                }
            }
        }
        if self.params == ParamsPolicy::Hash && self.params_hash_key_file.is_none() {
            return Err(ConfigError::Invalid {
                key: "proxy.params".into(),
                reason: "\"hash\" needs params_hash_key_file (an unkeyed hash of a value is \
                         reversed by hashing guesses)"
                    .into(),
            });
        }
        Ok(())
    }
}

/// `[proxy] durability`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Results are never held for an fsync: each event is written to the
    /// spool before its result is released (a crash of pgtrail loses none)
    /// and made durable by group commit within milliseconds.
    #[default]
    Async,
    /// A result is released only once its event is durable.
    Strict,
}

/// `[proxy] when_full`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenTrailFull {
    /// Refuse new statements with a clear SQLSTATE and message.
    #[default]
    FailClosed,
    /// Serve them, and count and report every event dropped.
    FailOpen,
}

/// `[proxy] params`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamsPolicy {
    /// Parameter values are left out (their count and formats are kept).
    #[default]
    None,
    /// Each value is replaced by its keyed hash.
    Hash,
    /// Values are kept (masked columns still masked).
    Full,
}

/// `[proxy] literals`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LiteralsPolicy {
    /// The text as sent (secrets still redacted).
    #[default]
    Keep,
    /// Every literal replaced by a placeholder.
    Normalize,
}

/// One `[[proxy.rules]]` entry: statements matching every field set here
/// are included or excluded; the first matching rule decides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyRule {
    /// `include` or `exclude`.
    pub action: RuleAction,
    /// Database roles the rule applies to.
    pub db_user: Vec<String>,
    /// Application users (claimed) the rule applies to.
    pub app_user: Vec<String>,
    /// Databases the rule applies to.
    pub database: Vec<String>,
    /// Tables (`table` or `schema.table`) the statement touches.
    pub table: Vec<String>,
    /// Statement classes (as in `log`).
    pub class: Vec<String>,
}

/// `include` or `exclude`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// Log what matches.
    #[default]
    Include,
    /// Do not log what matches.
    Exclude,
}

/// A string or a list of strings.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

impl Config {
    /// Parses TOML text; `path` names the file in errors.
    pub fn from_toml(text: &str, path: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_string(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that TOML types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.store.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid {
                key: "store.url".into(),
                reason: "expected sqlite:PATH or postgres://…".into(),
            });
        }
        self.signing.checkpoint_interval()?;
        if let Some(keep) = &self.retention.keep {
            crate::time::parse_duration(keep).map_err(|e| ConfigError::Invalid {
                key: "retention.keep".into(),
                reason: e.to_string(),
            })?;
        }
        for name in self
            .identity
            .user_settings
            .iter()
            .chain([&self.identity.context_setting])
        {
            let valid = name.split_once('.').is_some_and(|(a, b)| {
                [a, b].iter().all(|p| {
                    !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
            });
            if !valid {
                return Err(ConfigError::Invalid {
                    key: "identity".into(),
                    reason: format!("'{name}' is not a custom setting name like prefix.name"),
                });
            }
        }
        for (key, url) in [
            ("triggers.db", &self.triggers.db),
            ("replication.db", &self.replication.db),
        ] {
            if let Some(url) = url.as_deref() {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(ConfigError::Invalid {
                        key: key.into(),
                        reason: "expected a postgres:// URL".into(),
                    });
                }
            }
        }
        // Postgres's own rule for slot names.
        let slot = &self.replication.slot;
        let valid_slot = !slot.is_empty()
            && slot.len() <= 63
            && slot
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid_slot {
            return Err(ConfigError::Invalid {
                key: "replication.slot".into(),
                reason: format!("'{slot}': use 1 to 63 lowercase letters, digits or _"),
            });
        }
        if self.replication.publication.is_empty() {
            return Err(ConfigError::Invalid {
                key: "replication.publication".into(),
                reason: "must not be empty".into(),
            });
        }
        if self.replication.batch_events == 0 {
            return Err(ConfigError::Invalid {
                key: "replication.batch_events".into(),
                reason: "must be at least 1".into(),
            });
        }
        for (key, names) in [
            ("replication.mask", &self.replication.mask),
            ("replication.mask_redact", &self.replication.mask_redact),
            ("proxy.mask", &self.proxy.mask),
            ("proxy.mask_redact", &self.proxy.mask_redact),
        ] {
            for name in names {
                let parts: Vec<&str> = name.rsplitn(3, '.').collect();
                if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
                    return Err(ConfigError::Invalid {
                        key: key.into(),
                        reason: format!(
                            "'{name}' is not schema.table.column (e.g. public.users.ssn)"
                        ),
                    });
                }
            }
        }
        self.proxy.validate_logging()?;
        if !(0.0..=1.0).contains(&self.proxy.sample_reads) {
            return Err(ConfigError::Invalid {
                key: "proxy.sample_reads".into(),
                reason: "must be between 0.0 and 1.0".into(),
            });
        }
        if self.proxy.tls_cert.is_some() != self.proxy.tls_key.is_some() {
            return Err(ConfigError::Invalid {
                key: "proxy.tls_cert".into(),
                reason: "tls_cert and tls_key go together".into(),
            });
        }
        if self.proxy.require_tls && self.proxy.tls_cert.is_none() {
            return Err(ConfigError::Invalid {
                key: "proxy.require_tls".into(),
                reason: "needs tls_cert and tls_key".into(),
            });
        }
        if self.replication.memory_limit_mb == 0 {
            return Err(ConfigError::Invalid {
                key: "replication.memory_limit_mb".into(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn witness_servers_are_a_list_of_url_and_vkey() {
        let config = Config::from_toml(
            "[[signing.witnesses]]\nurl = \"http://w1:7380\"\nvkey = \"w1+00+AA\"\n\
             [[signing.witnesses]]\nurl = \"http://w2:7380\"\nvkey = \"w2+00+AA\"\n",
            "w.toml",
        )
        .expect("valid");
        let urls: Vec<&str> = config
            .signing
            .witnesses
            .iter()
            .map(|w| w.url.as_str())
            .collect();
        assert_eq!(urls, ["http://w1:7380", "http://w2:7380"]);
        let typo = "[[signing.witnesses]]\nurl = \"http://w1\"\nvkey = \"v\"\nkey = \"x\"\n";
        assert!(Config::from_toml(typo, "w.toml").is_err());
        assert!(Config::default().signing.witnesses.is_empty());
    }

    #[test]
    fn sinks_are_a_list_of_tables_told_apart_by_type() {
        let config = Config::from_toml(
            "[[sinks]]\nname = \"siem\"\ntype = \"file\"\nformat = \"ocsf\"\ndir = \"/var/lib/pgtrail/out\"\n\
             [[sinks]]\nname = \"bus\"\ntype = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\n",
            "s.toml",
        )
        .expect("valid");
        assert_eq!(config.sinks.len(), 2);
        assert_eq!(config.sinks[0].format.as_deref(), Some("ocsf"));
        assert!(
            matches!(&config.sinks[0].kind, SinkKind::File(file) if file.dir == "/var/lib/pgtrail/out")
        );
        assert!(
            matches!(&config.sinks[1].kind, SinkKind::Nats(nats) if nats.url == "nats://127.0.0.1:4222")
        );
        for bad in [
            "[[sinks]]\nname = \"x\"\ntype = \"kafka\"\n",
            "[[sinks]]\nname = \"x\"\ntype = \"file\"\ndir = \"d\"\ndirr = \"typo\"\n",
        ] {
            assert!(Config::from_toml(bad, "s.toml").is_err(), "{bad}");
        }
    }

    #[test]
    fn syslog_and_nats_sinks_take_their_keys_and_defaults() {
        let config = Config::from_toml(
            "[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\nurl = \"tls://logs:6514\"\nca_file = \"ca.pem\"\n\
             [[sinks]]\nname = \"bus\"\ntype = \"nats\"\nurl = \"nats://h:4222\"\ncreate_stream = true\npassword_file = \"p\"\nuser = \"u\"\n",
            "s.toml",
        )
        .expect("valid");
        let SinkKind::Syslog(syslog) = &config.sinks[0].kind else {
            panic!("syslog");
        };
        assert_eq!(syslog.ca_file.as_deref(), Some("ca.pem"));
        assert_eq!((syslog.timeout_secs, syslog.max_datagram), (10, 2048));
        let SinkKind::Nats(nats) = &config.sinks[1].kind else {
            panic!("nats");
        };
        assert!(nats.create_stream);
        assert_eq!(nats.subject, "pgtrail.events");
        assert_eq!(nats.checkpoint_subject, "pgtrail.checkpoints");
        assert_eq!(nats.duplicate_window_secs, 600);
        for bad in [
            "[[sinks]]\nname = \"x\"\ntype = \"syslog\"\nurl = \"udp://h\"\nmax_datagrams = 9000\n",
            "[[sinks]]\nname = \"x\"\ntype = \"nats\"\nurl = \"nats://h\"\npassword = \"inline\"\n",
        ] {
            assert!(Config::from_toml(bad, "s.toml").is_err(), "{bad}");
        }
    }

    #[test]
    fn proxy_section_reads_one_level_or_a_list() {
        let config = Config::from_toml(
            "[proxy]\nlisten = \"127.0.0.1:6432\"\nlog = \"failed\"\ndurability = \"strict\"\n",
            "p.toml",
        )
        .expect("valid");
        assert_eq!(config.proxy.log, ["failed"]);
        assert_eq!(config.proxy.durability, Durability::Strict);
        let config = Config::from_toml(
            "[proxy]\nlog = [\"write\", \"ddl\"]\n[[proxy.rules]]\naction = \"exclude\"\ndb_user = [\"health\"]\n",
            "p.toml",
        )
        .expect("valid");
        assert_eq!(config.proxy.log, ["write", "ddl"]);
        assert_eq!(config.proxy.rules[0].action, RuleAction::Exclude);
        for bad in [
            "[proxy]\nsample_reads = 2.0\n",
            "[proxy]\nrequire_tls = true\n",
            "[proxy]\ntls_cert = \"c.pem\"\n",
            "[proxy]\ndurability = \"eventually\"\n",
        ] {
            assert!(Config::from_toml(bad, "p.toml").is_err(), "{bad}");
        }
    }

    #[test]
    fn checkpoint_every_is_a_positive_duration() {
        let config = Config::default();
        assert_eq!(
            config.signing.checkpoint_interval().expect("default"),
            std::time::Duration::from_secs(600)
        );
        for bad in ["0s", "10", "soon"] {
            let text = format!("[signing]\ncheckpoint_every = \"{bad}\"\n");
            let err = Config::from_toml(&text, "p.toml").expect_err(bad);
            assert!(
                err.to_string().contains("signing.checkpoint_every"),
                "{err}"
            );
        }
    }
}
