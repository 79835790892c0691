//! From a [`StatementRecord`] to an audit [`Event`], off the forwarding
//! path: the shell hands each text to [`SessionRecorder::prepare`] once the
//! bytes went to the server (the analysis, on a cache miss, overlaps the
//! server's work), and each completed record to
//! [`SessionRecorder::statement`], which looks the analysis up again (a
//! hash lookup) and maps it.
//!
//! A [`Recorder`] is shared by every session of one proxy (the analysis
//! cache, the policies); a [`SessionRecorder`] follows one session: its
//! `search_path` (SET, RESET, `set_config`, startup options,
//! ParameterStatus), the application's claims (with SET LOCAL ending at
//! the transaction's end, and a failed statement's claims never taking
//! effect), and its SQL-level prepared statements (so EXECUTE is classed by
//! what it runs). See docs/proxy.md for the event's fields and the rules.

mod params;
mod policy;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use pgtrail_core::config::{IdentityConfig, LiteralsPolicy, ProxyConfig};
use pgtrail_core::event::{Channel, Event, JsonObject, Kind, Source};
use pgtrail_sql::{
    Analysis, Analyzer, Claim, ClaimScope, ClaimTracker, ClaimValue, Class, ClassSet, Object,
    SearchPath, StandardStrings, Statement, TextPolicy, Transaction, REDACTED,
};
use pgtrail_wire::backend::{ErrorFields, TransactionStatus};
use serde_json::Value;

use crate::{Outcome, Protocol, SessionContext, StartupInfo, StatementRecord};

use params::ParamPolicy;
use policy::{Facts, Policy};

/// Distinct statement texts the analysis cache keeps.
const CACHE_TEXTS: usize = 4096;

/// Why a [`Recorder`] cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventsError {
    /// A `[proxy]` key holds a value the recorder cannot use.
    #[error("[{key}]: {reason}")]
    Config {
        /// The key, e.g. `proxy.rules[2].class`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file of `params = "hash"` cannot be read.
    #[error("cannot read params_hash_key_file {path}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What a session did, for its DISCONNECT event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionStats {
    /// Statements completed (recorded or not).
    pub statements: u64,
    /// Bytes the client sent.
    pub bytes_from_client: u64,
    /// Bytes sent to the client.
    pub bytes_to_client: u64,
    /// When the client connected.
    pub started_at: SystemTime,
}

/// Shared by every session of one proxy: the analysis cache, the policy.
#[derive(Debug)]
pub struct Recorder {
    /// Analyzes texts missing from the cache (no lock held meanwhile).
    parser: Analyzer,
    cache: Mutex<Analyzer>,
    identity: IdentityConfig,
    policy: Policy,
    params: ParamPolicy,
    normalize: bool,
    /// Unique per proxy process and start: the prefix of session ids.
    start_id: String,
    /// `pgtrail_proxy_statements_total` per class, looked up once.
    class_counters: Vec<(Class, metrics::Counter)>,
}

impl Recorder {
    /// A recorder for `proxy`'s policies, reading claims per `identity`.
    pub fn new(proxy: &ProxyConfig, identity: &IdentityConfig) -> Result<Recorder, EventsError> {
        let policy = Policy::new(proxy)?;
        let params = ParamPolicy::new(proxy)?;
        let text = match proxy.literals {
            LiteralsPolicy::Keep => TextPolicy::Secrets,
            LiteralsPolicy::Normalize => TextPolicy::Constants,
        };
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Ok(Recorder {
            parser: Analyzer::new(2, identity, text),
            cache: Mutex::new(Analyzer::new(CACHE_TEXTS, identity, text)),
            identity: identity.clone(),
            policy,
            params,
            normalize: proxy.literals == LiteralsPolicy::Normalize,
            start_id: format!("{:x}.{:x}", started.as_micros(), std::process::id()),
            class_counters: Class::ALL
                .into_iter()
                .map(|class| {
                    let counter = metrics::counter!("pgtrail_proxy_statements_total", "class" => class.as_str());
                    (class, counter)
                })
                .collect(),
        })
    }

    /// A recorder for one client session.
    pub fn session(self: &Arc<Self>, context: Arc<SessionContext>) -> SessionRecorder {
        let claims = ClaimTracker::new(&self.identity);
        SessionRecorder {
            session_id: format!("{}-{}", self.start_id, context.id),
            client_addr: context.client.ip().to_string(),
            application_name: context.application_name.clone(),
            recorder: Arc::clone(self),
            context,
            default_path: SearchPath::default(),
            path: Paths::default(),
            claims,
            in_block: false,
            implicit: false,
            prepared: HashMap::new(),
            statements: 0,
            tx: Tx::default(),
            strings: StandardStrings::On,
            ahead: None,
        }
    }

    /// Counts a statement of `class` on `/metrics` (whether or not the log
    /// rules keep its event).
    fn count(&self, class: Class) {
        if let Some((_, counter)) = self.class_counters.iter().find(|(c, _)| *c == class) {
            counter.increment(1);
        }
    }

    /// Whether nothing at all is recorded (`log = "none"`, audit off): the
    /// shell may skip the recorder entirely.
    pub fn is_off(&self) -> bool {
        self.policy.level.none
    }

    /// The analysis of `sql` read in `mode`, from the cache or made now.
    fn analyze(&self, sql: &str, mode: StandardStrings) -> Arc<Analysis> {
        let lock = || self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = lock().cached(sql, mode) {
            return found;
        }
        let analysis = Arc::new(self.parser.analyze_uncached_in(sql, mode));
        lock().store(sql, mode, Arc::clone(&analysis));
        analysis
    }

    /// Cache lookups answered and analyses made so far.
    pub fn cache_stats(&self) -> (u64, u64) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stats()
    }
}

/// The session's `search_path` in layers, as Postgres keeps a setting.
#[derive(Debug, Clone, Default)]
struct Paths {
    /// Committed (`None`: the default).
    committed: Option<SearchPath>,
    /// Set session-wide in the open transaction block (`Some(None)`: reset).
    in_tx: Option<Option<SearchPath>>,
    /// Set LOCAL in the open transaction block.
    local: Option<Option<SearchPath>>,
}

/// One per client session: tracks claims, search_path, prepared statements.
#[derive(Debug)]
pub struct SessionRecorder {
    recorder: Arc<Recorder>,
    context: Arc<SessionContext>,
    session_id: String,
    /// The client's address as text, made once (every event carries it).
    client_addr: String,
    application_name: Option<String>,
    /// The path a RESET returns to (startup options, else Postgres's default).
    default_path: SearchPath,
    path: Paths,
    claims: ClaimTracker,
    /// In a transaction block (BEGIN, or the implicit one of a
    /// multi-statement Query).
    in_block: bool,
    /// The block is a multi-statement Query's implicit transaction.
    implicit: bool,
    /// SQL-level `PREPARE`d statements: the analysis and which statement.
    prepared: HashMap<String, (Arc<Analysis>, usize)>,
    /// Statements seen (the sampling draw's counter).
    statements: u64,
    /// The transaction the statements run in, as the proxy sees it.
    tx: Tx,
    /// `standard_conforming_strings` as the server last reported it: the
    /// mode a text is expected to be read in (a text that could read
    /// differently is read in both, see `pgtrail_sql::Analysis::ambiguous`).
    strings: StandardStrings,
    /// The text `prepare` analyzed last, and its analysis: the next
    /// `statement`, if of that text, takes it instead of asking the shared
    /// cache again (a text answered by its shape is not cached as itself).
    ahead: Option<(Box<str>, Arc<Analysis>)>,
}

/// The session's transactions as the proxy sees them: what links a
/// statement to the row changes its transaction made (docs/proxy.md, "One
/// trail across paths"). A transaction ends when the session is out of a
/// block after a statement; a Query of several statements or a pipeline
/// without Sync may count as more than one (harmless: the link unites them
/// by the server's xid), never two server transactions as one.
#[derive(Debug, Clone, Copy, Default)]
struct Tx {
    /// The session's transaction number, from 1 (0: none yet).
    number: u64,
    /// The statement's place in it, from 0.
    statement: u64,
    /// When its first statement started, on the proxy's clock.
    started_at: Option<SystemTime>,
    /// A statement ran in it and it has not ended.
    open: bool,
}

impl Tx {
    /// A statement starting at `at` enters the open transaction or a new one.
    fn enter(&mut self, at: SystemTime) {
        if self.open {
            self.statement += 1;
        } else {
            self.number += 1;
            self.statement = 0;
            self.started_at = Some(at);
            self.open = true;
        }
    }

    /// The proxy's own context keys, written after (over) any the
    /// application claimed through `pgtrail.context`: a claim is never
    /// taken for the link.
    fn describe(&self, context: &mut JsonObject) {
        context.insert("tx".into(), self.number.into());
        context.insert("tx_statement".into(), self.statement.into());
        if let Some(at) = self.started_at {
            context.insert(
                "tx_started_at".into(),
                pgtrail_core::time::format_micros(&DateTime::<Utc>::from(at)).into(),
            );
        }
    }
}

/// What a statement runs, owned (so the session may change afterwards).
struct Ran {
    class: Class,
    classes: ClassSet,
    operation: String,
    objects: Vec<Object>,
    claims: Vec<Claim>,
}

impl SessionRecorder {
    /// The startup packet's parameters: claims made with `options=-c
    /// pgtrail.user=…` (PGOPTIONS) and a `search_path` set there. Call once,
    /// before the first statement.
    pub fn startup(&mut self, startup: &StartupInfo) {
        let params: Vec<(&str, &str)> = startup
            .params
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let claims = self.recorder.parser.startup_claims(&params);
        self.claims.apply(&claims, false);
        for (name, value) in &startup.params {
            if name.eq_ignore_ascii_case("search_path") {
                self.default_path = SearchPath::parse(value);
            }
        }
        if let Some(options) = startup.options() {
            for (name, value) in pgtrail_sql::startup_options(options) {
                if name == "search_path" {
                    self.default_path = SearchPath::parse(&value);
                }
            }
        }
        if self.application_name.is_none() {
            self.application_name = startup.application_name().map(str::to_string);
        }
    }

    /// A ParameterStatus from the server: `search_path` (reported by
    /// servers that report it) replaces the tracked one; `application_name`
    /// the name sent at startup; `standard_conforming_strings` the mode the
    /// next texts are read in.
    pub fn parameter_status(&mut self, name: &str, value: &str) {
        match name {
            "search_path" => {
                self.path = Paths {
                    committed: Some(SearchPath::parse(value)),
                    in_tx: None,
                    local: None,
                };
            }
            "application_name" => self.application_name = Some(value.to_string()),
            "standard_conforming_strings" => {
                if let Some(mode) = StandardStrings::from_setting(value) {
                    self.strings = mode;
                }
            }
            _ => {}
        }
    }

    /// Text the client just sent (Query or Parse), called by the shell
    /// after the bytes went to the server: analysis (and its cache miss)
    /// overlaps the server's work instead of delaying the result.
    pub fn prepare(&mut self, sql: &str) {
        if !self.recorder.is_off() {
            self.ahead = Some((sql.into(), self.recorder.analyze(sql, self.strings)));
        }
    }

    /// Whether this session's CONNECT, failed-login and DISCONNECT events
    /// are logged (`log` is not `none` and no rule on `db_user`/`database`
    /// excludes the session).
    pub fn logs_session(&self) -> bool {
        self.recorder.policy.keeps_session(
            self.context.user.as_deref(),
            self.context.database.as_deref(),
        )
    }

    fn search_path(&self) -> &SearchPath {
        let layered = match (&self.path.local, &self.path.in_tx) {
            (Some(local), _) => local.as_ref(),
            (None, Some(in_tx)) => in_tx.as_ref(),
            (None, None) => self.path.committed.as_ref(),
        };
        layered.unwrap_or(&self.default_path)
    }

    /// The event for a completed statement, or None when the log rules
    /// leave it out (the session's state is updated either way).
    pub fn statement(&mut self, record: &StatementRecord) -> Option<Event> {
        if self.recorder.is_off() {
            return None;
        }
        self.statements += 1;
        self.tx.enter(record.started_at);
        let completed = record.outcome == Outcome::Completed;
        let failed = matches!(record.outcome, Outcome::Failed { .. });
        let Some(sql) = record.sql.as_deref() else {
            return self.without_text(record);
        };
        // Taken, so an idle session holds no text.
        let analysis = match self.ahead.take() {
            Some((text, analysis)) if *text == *sql => analysis,
            _ => self.recorder.analyze(sql, self.strings),
        };
        let (part, last_part) = match record.protocol {
            Protocol::Simple { part } => {
                let part = usize::try_from(part).unwrap_or(usize::MAX);
                let count = analysis.statements.len();
                (part.min(count.saturating_sub(1)), part + 1 >= count)
            }
            _ => (0, true),
        };
        let multi =
            matches!(record.protocol, Protocol::Simple { .. }) && analysis.statements.len() > 1;
        let Some(stmt) = analysis.statements.get(part) else {
            return self.without_text(record);
        };
        if multi && part == 0 && !self.in_block {
            // A Query of several statements outside a block runs in one
            // implicit transaction: a failure undoes all of it.
            self.in_block = true;
            self.implicit = true;
        }

        let ran = self.ran(stmt, record);
        self.recorder.count(ran.class);
        // The user as it stood before the statement (or its comment's).
        let app_user = self
            .claims
            .app_user_for(&ran.claims)
            .map(|(v, c)| (v.clone(), c));
        let context_claim = self.claims.context().cloned();

        let mut event = self.base(Kind::Statement, record.started_at);
        event.backend_pid = record.backend_pid.or(self.context.backend_pid);
        event.class = Some(ran.class.as_str().to_string());
        event.operation = Some(ran.operation.clone());
        event.command_tag = record.command_tag.clone();
        event.rows = record
            .rows
            .or((record.rows_returned > 0).then_some(record.rows_returned))
            .and_then(|r| i64::try_from(r).ok());
        event.duration_us = Some(micros(
            record
                .finished_at
                .duration_since(record.started_at)
                .unwrap_or_default(),
        ));
        let mut text = stmt.sql.clone();
        if !self.recorder.normalize && self.recorder.params.masks_any(&ran.objects) {
            // A masked column's value can only be in the text as a constant.
            text = pgtrail_sql::redact_constants(&text).0;
        }
        if let Outcome::Failed { error, .. } = &record.outcome {
            event.sqlstate = Some(error.code().to_string());
            // An ambiguous text's error may quote what one reading takes
            // for a literal (a password's tail).
            let sensitive = !analysis.parsed || analysis.ambiguous || text.contains(REDACTED);
            event.error = Some(scrub_error(error.message(), sensitive));
        }
        event.sql = Some(text);
        event.params = self
            .recorder
            .params
            .values(&record.params, &ran.objects, &|n| {
                stmt.binds
                    .iter()
                    .find(|(p, _)| usize::try_from(*p).ok() == Some(n))
                    .map(|(_, c)| c.clone())
            });
        self.set_objects(&mut event, &ran.objects);
        if let Some((value, channel)) = &app_user {
            if let ClaimValue::Set(user) = value {
                event.app_user = Some(user.clone());
            }
            event.claim("app_user", channel.event_channel());
        }
        let mut context = JsonObject::new();
        if let Some(held) = &context_claim {
            if let ClaimValue::Set(text) = &held.value {
                if let Ok(Value::Object(claimed)) = serde_json::from_str::<Value>(text) {
                    context.extend(claimed);
                    event.claim("context", held.channel.event_channel());
                }
            }
        }
        if let Some(status) = record.transaction_status {
            context.insert("transaction_status".into(), status_name(status).into());
        }
        context.insert("protocol".into(), protocol_name(record.protocol).into());
        if let Some(setting) = analysis.ambiguity() {
            // The server may have read the text either way (see docs/proxy.md).
            context.insert("ambiguous".into(), setting.into());
        }
        self.tx.describe(&mut context);
        match &record.outcome {
            Outcome::NotRun => {
                context.insert("outcome".into(), "not_run".into());
            }
            Outcome::Suspended => {
                context.insert("outcome".into(), "suspended".into());
            }
            Outcome::NoReply => {
                context.insert("outcome".into(), "no_reply".into());
            }
            _ => {}
        }
        event.context = Some(context);
        event.vouch_server_fields();

        // Logging decision, before the statement changes the session.
        let mut classes = ran.classes;
        classes.insert(ran.class);
        let user = match &app_user {
            Some((ClaimValue::Set(user), _)) => Some(user.as_str()),
            _ => None,
        };
        let keep = self.recorder.policy.keeps(
            &Facts {
                db_user: self.context.user.as_deref(),
                app_user: user,
                database: self.context.database.as_deref(),
                objects: &ran.objects,
                search_path: self.search_path().schemas(),
                classes,
                failed,
            },
            policy::draw(self.context.id, self.statements),
        );

        self.update(stmt, &analysis, part, &ran, record, completed, failed);
        if !multi || last_part {
            self.resync(record);
        }
        self.tx.open = self.in_block;
        keep.then_some(event)
    }

    /// What `stmt` runs (for EXECUTE, the prepared statement), with its
    /// objects resolved against the session's search_path.
    fn ran(&self, stmt: &Statement, record: &StatementRecord) -> Ran {
        let prepared = |name: &str| {
            self.prepared
                .get(name)
                .and_then(|(a, i)| a.statements.get(*i))
        };
        let runs = stmt.runs(prepared);
        let operation = match &stmt.execute {
            Some(name) => prepared(name)
                .and_then(|p| p.prepared_command.clone())
                .unwrap_or_else(|| stmt.command.clone()),
            None => stmt.command.clone(),
        };
        let path = self.search_path();
        let objects = runs.objects.iter().map(|o| o.resolve(path, None)).collect();
        // Parameters fill `set_config('pgtrail.user', $1, …)`.
        let texts: Vec<Option<&str>> = record
            .params
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_deref()
                    .filter(|_| record.params.format(i) == 0)
                    .and_then(|b| std::str::from_utf8(b).ok())
            })
            .collect();
        let claims = runs
            .claims
            .iter()
            .map(|c| c.with_parameters(&texts))
            .collect();
        Ran {
            class: runs.class,
            classes: runs.classes,
            operation: if operation.is_empty() {
                "UNKNOWN".into()
            } else {
                operation
            },
            objects,
            claims,
        }
    }

    /// Changes the session as the statement did.
    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        stmt: &Statement,
        analysis: &Arc<Analysis>,
        part: usize,
        ran: &Ran,
        record: &StatementRecord,
        completed: bool,
        failed: bool,
    ) {
        if failed {
            match &stmt.transaction {
                // A failed COMMIT (a deferred constraint) rolled back; a
                // failed ROLLBACK leaves the block as it was.
                Some(Transaction::Commit { .. }) | Some(Transaction::PrepareTransaction) => {
                    self.end_transaction(false)
                }
                _ if self.implicit => self.end_transaction(false),
                _ => {}
            }
            return;
        }
        if !completed {
            return;
        }
        if let Some(name) = &stmt.prepare {
            // Bounded as the protocol's names are: past the bound an EXECUTE
            // is UNKNOWN (and logged whatever the level).
            if self.prepared.len() < crate::MAX_NAMES || self.prepared.contains_key(name) {
                self.prepared
                    .insert(name.clone(), (Arc::clone(analysis), part));
            }
        }
        match &stmt.deallocate {
            Some(pgtrail_sql::Deallocate::Name(name)) => {
                self.prepared.remove(name);
            }
            Some(pgtrail_sql::Deallocate::All) => self.prepared.clear(),
            None => {}
        }
        if let Some((path, scope)) = &stmt.search_path {
            let path = path.clone();
            match (scope, self.in_block) {
                (ClaimScope::Transaction, true) => self.path.local = Some(path),
                (ClaimScope::Transaction, false) | (ClaimScope::Statement, _) => {}
                (ClaimScope::Session, true) => {
                    self.path.in_tx = Some(path);
                    self.path.local = None;
                }
                (ClaimScope::Session, false) => self.path.committed = path,
            }
        }
        self.claims.apply(&ran.claims, self.in_block);
        match &stmt.transaction {
            Some(Transaction::Begin) => {
                self.in_block = true;
                self.implicit = false;
            }
            Some(Transaction::Commit { chain }) => {
                // COMMIT of a failed block answers ROLLBACK.
                let committed = record.command_tag.as_deref() != Some("ROLLBACK");
                self.end_transaction(committed);
                self.in_block = *chain;
            }
            Some(Transaction::Rollback { chain }) => {
                self.end_transaction(false);
                self.in_block = *chain;
            }
            Some(Transaction::PrepareTransaction) => self.end_transaction(true),
            _ => {}
        }
    }

    fn end_transaction(&mut self, committed: bool) {
        self.claims.end_transaction(committed);
        if let (true, Some(in_tx)) = (committed, self.path.in_tx.take()) {
            self.path.committed = in_tx;
        }
        self.path.in_tx = None;
        self.path.local = None;
        self.in_block = false;
        self.implicit = false;
    }

    /// Aligns the block state with the server's transaction status after
    /// the last statement of a message.
    fn resync(&mut self, record: &StatementRecord) {
        match record.transaction_status {
            Some(TransactionStatus::Idle) if self.in_block => {
                let failed = matches!(record.outcome, Outcome::Failed { .. });
                self.end_transaction(!failed);
            }
            Some(TransactionStatus::InTransaction | TransactionStatus::Failed)
                if !self.in_block =>
            {
                self.in_block = true;
            }
            _ => {}
        }
    }

    /// A FunctionCall, or an Execute of a statement the proxy never saw.
    fn without_text(&mut self, record: &StatementRecord) -> Option<Event> {
        let failed = matches!(record.outcome, Outcome::Failed { .. });
        let class = match record.protocol {
            Protocol::FunctionCall { .. } => Class::Function,
            _ => Class::Unknown,
        };
        self.recorder.count(class);
        let mut event = self.base(Kind::Statement, record.started_at);
        event.backend_pid = record.backend_pid.or(self.context.backend_pid);
        event.class = Some(class.as_str().to_string());
        event.operation = Some(match record.protocol {
            Protocol::FunctionCall { .. } => "FUNCTION CALL".into(),
            _ => "UNKNOWN".into(),
        });
        event.command_tag = record.command_tag.clone();
        event.duration_us = Some(micros(
            record
                .finished_at
                .duration_since(record.started_at)
                .unwrap_or_default(),
        ));
        if let Outcome::Failed { error, .. } = &record.outcome {
            event.sqlstate = Some(error.code().to_string());
            event.error = Some(scrub_error(error.message(), false));
        }
        event.params = self.recorder.params.values(&record.params, &[], &|_| None);
        if let Some(held) = self.claims.app_user() {
            if let ClaimValue::Set(user) = &held.value {
                event.app_user = Some(user.clone());
            }
            event.claim("app_user", held.channel.event_channel());
        }
        let mut context = JsonObject::new();
        if let Some(status) = record.transaction_status {
            context.insert("transaction_status".into(), status_name(status).into());
        }
        context.insert("protocol".into(), protocol_name(record.protocol).into());
        if let Protocol::FunctionCall { oid } = record.protocol {
            context.insert("function_oid".into(), oid.into());
        }
        self.tx.describe(&mut context);
        event.context = Some(context);
        event.vouch_server_fields();
        let keep = self.recorder.policy.keeps(
            &Facts {
                db_user: self.context.user.as_deref(),
                app_user: event.app_user.as_deref(),
                database: self.context.database.as_deref(),
                objects: &[],
                search_path: &[],
                classes: ClassSet::of(class),
                failed,
            },
            policy::draw(self.context.id, self.statements),
        );
        self.resync(record);
        self.tx.open = self.in_block;
        keep.then_some(event)
    }

    /// An event with the session's actor fields.
    fn base(&self, kind: Kind, at: SystemTime) -> Event {
        let mut event = Event::at(Source::Proxy, kind, DateTime::<Utc>::from(at));
        event.db_user = self.context.user.clone();
        event.database = self.context.database.clone();
        event.client_addr = Some(self.client_addr.clone());
        event.client_port = Some(i32::from(self.context.client.port()));
        event.application_name = self.application_name.clone();
        if event.application_name.is_some() {
            // The client chooses it.
            event.claim("application_name", Channel::Proxy);
        }
        event.backend_pid = self.context.backend_pid;
        event.session_id = Some(self.session_id.clone());
        event
    }

    fn set_objects(&self, event: &mut Event, objects: &[Object]) {
        let mut names: Vec<String> = objects.iter().map(Object::qualified).collect();
        names.sort();
        names.dedup();
        event.objects = names;
        let target = objects
            .iter()
            .find(|o| o.access == pgtrail_sql::Access::Write && !o.maybe_cte)
            .or_else(|| {
                objects
                    .iter()
                    .find(|o| o.access == pgtrail_sql::Access::Read && !o.maybe_cte)
            })
            .or_else(|| objects.iter().find(|o| !o.maybe_cte))
            .or_else(|| objects.first());
        if let Some(target) = target {
            event.schema = target.schema.clone();
            event.table = Some(target.name.clone());
        }
    }

    /// A login that succeeded (at the first ReadyForQuery).
    pub fn connected(&mut self, at: SystemTime) -> Event {
        let mut event = self.base(Kind::Session, at);
        event.operation = Some("CONNECT".into());
        if let Some(held) = self.claims.app_user() {
            if let ClaimValue::Set(user) = &held.value {
                event.app_user = Some(user.clone());
            }
            event.claim("app_user", held.channel.event_channel());
        }
        event.vouch_server_fields();
        event
    }

    /// A login the server refused (`error`: its ErrorResponse).
    pub fn login_failed(&mut self, error: &ErrorFields, at: SystemTime) -> Event {
        let mut event = self.base(Kind::Session, at);
        event.operation = Some("CONNECT".into());
        event.sqlstate = Some(error.code().to_string());
        event.error = Some(error.message().to_string());
        event.vouch_server_fields();
        // The server accepted no role: the user is only what the client asked for.
        if let Some(provenance) = event.provenance.as_mut() {
            provenance.vouched.retain(|f| f != "db_user");
        }
        event
    }

    /// The session ended.
    pub fn disconnected(&mut self, stats: &SessionStats, at: SystemTime) -> Event {
        let mut event = self.base(Kind::Session, at);
        event.operation = Some("DISCONNECT".into());
        event.duration_us = Some(micros(
            at.duration_since(stats.started_at).unwrap_or_default(),
        ));
        let mut context = JsonObject::new();
        context.insert("statements".into(), stats.statements.into());
        context.insert("bytes_from_client".into(), stats.bytes_from_client.into());
        context.insert("bytes_to_client".into(), stats.bytes_to_client.into());
        event.context = Some(context);
        if let Some(held) = self.claims.app_user() {
            if let ClaimValue::Set(user) = &held.value {
                event.app_user = Some(user.clone());
            }
            event.claim("app_user", held.channel.event_channel());
        }
        event.vouch_server_fields();
        event
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn status_name(status: TransactionStatus) -> &'static str {
    match status {
        TransactionStatus::Idle => "idle",
        TransactionStatus::InTransaction => "in_transaction",
        TransactionStatus::Failed => "failed",
    }
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Simple { .. } => "simple",
        Protocol::Extended => "extended",
        Protocol::FunctionCall { .. } => "function_call",
    }
}

/// An error message fit for the trail. Postgres echoes values in some
/// messages (`invalid input syntax for type integer: "…"`), and the token
/// near a syntax error: a value after `: "` is always replaced (it may be a
/// parameter the policy leaves out), and when the statement's text held a
/// secret or could not be parsed, every quoted part is.
fn scrub_error(message: &str, sensitive: bool) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find('"') {
        let before = &rest[..open];
        let Some(close) = rest[open + 1..].find('"').map(|c| open + 1 + c) else {
            break;
        };
        let value_echo = before.ends_with(": ");
        out.push_str(before);
        if sensitive || value_echo {
            out.push('"');
            out.push_str(params::MASKED);
            out.push('"');
        } else {
            out.push_str(&rest[open..=close]);
        }
        rest = &rest[close + 1..];
    }
    if sensitive && rest.contains('"') {
        // An unclosed quote: drop what follows it.
        if let Some(open) = rest.find('"') {
            out.push_str(&rest[..open]);
            out.push_str("\"***");
            return out;
        }
    }
    out.push_str(rest);
    out
}
