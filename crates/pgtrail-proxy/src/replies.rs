//! The queue of expected replies: what the client sent, in order, waiting
//! for the server's answer. The server answers every request in the order
//! it was sent (protocol docs, "Message Flow"), so matching is a FIFO:
//! each server message belongs to the request at the front of the queue.
//!
//! Rules followed here, from the "Message Flow" chapter:
//! - Simple Query: one result per statement (CommandComplete, or
//!   EmptyQueryResponse), an ErrorResponse ends the text, ReadyForQuery ends
//!   the Query.
//! - Extended query: Parse → ParseComplete, Bind → BindComplete, Describe →
//!   [ParameterDescription] RowDescription | NoData, Execute → DataRow* then
//!   CommandComplete | EmptyQueryResponse | PortalSuspended, Close →
//!   CloseComplete, Sync → ReadyForQuery, Flush → nothing.
//! - After an error in extended query the server discards every message
//!   until Sync: those get no reply, and their statements did not run.
//! - NoticeResponse, ParameterStatus and NotificationResponse may come at
//!   any time and answer nothing.
//! - During COPY FROM STDIN the server ignores Sync and Flush (libpq sends
//!   them without knowing the command was a COPY).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use pgtrail_wire::backend::{BackendMessage, CommandTag, ErrorFields, TransactionStatus};
use pgtrail_wire::frame::RawFrame;
use pgtrail_wire::frontend::{FrontendMessage, Parameters, Target};

use crate::prepared::{Portal, Prepared, Progress};
use crate::record::{Outcome, Protocol, StatementRecord, Step};
use crate::{SessionError, Side};

/// One request waiting for its reply.
#[derive(Debug)]
enum Expected {
    Query {
        sql: Arc<str>,
        sent_at: SystemTime,
        part: u32,
        /// An error ended the text: the server runs none of the rest.
        over: bool,
    },
    Parse {
        name: String,
        sql: Arc<str>,
    },
    Bind {
        portal: String,
        statement: String,
        params: Parameters,
    },
    Describe,
    Execute {
        portal: String,
        sent_at: SystemTime,
    },
    Close {
        target: Target,
        name: String,
    },
    Sync,
    FunctionCall {
        oid: u32,
        args: Parameters,
        sent_at: SystemTime,
        /// Its result or error came; only ReadyForQuery is left.
        over: bool,
    },
    /// COPY data the client sent before the server asked for it
    /// (CopyInResponse): it belongs to the request before it if that turns
    /// out to be a COPY FROM STDIN, and is ignored by the server otherwise.
    /// Answers nothing.
    CopyData {
        bytes: u64,
        /// Ended by CopyDone or CopyFail.
        done: bool,
    },
}

impl Expected {
    fn name(&self) -> &'static str {
        match self {
            Expected::Query { .. } => "Query",
            Expected::Parse { .. } => "Parse",
            Expected::Bind { .. } => "Bind",
            Expected::Describe => "Describe",
            Expected::Execute { .. } => "Execute",
            Expected::Close { .. } => "Close",
            Expected::Sync => "Sync",
            Expected::FunctionCall { .. } => "FunctionCall",
            Expected::CopyData { .. } => "CopyData",
        }
    }

    fn step(&self) -> Step {
        match self {
            Expected::Query { .. } => Step::Query,
            Expected::Parse { .. } => Step::Parse,
            Expected::Bind { .. } => Step::Bind,
            Expected::Describe => Step::Describe,
            Expected::Execute { .. } => Step::Execute,
            Expected::Close { .. } => Step::Close,
            Expected::Sync => Step::Sync,
            Expected::FunctionCall { .. } => Step::FunctionCall,
            Expected::CopyData { .. } => Step::Execute,
        }
    }
}

/// Where a COPY stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Copy {
    None,
    /// CopyInResponse seen; the client streams until CopyDone or CopyFail.
    In,
    /// The client finished; the server's CommandComplete or error follows.
    InDone,
    /// CopyOutResponse seen; the server streams until CopyDone.
    Out,
}

/// After an extended-protocol error, until the client's Sync: what the
/// discarded messages would have prepared (to name the SQL of the Executes
/// that did not run), and the error not yet given to a statement.
#[derive(Debug)]
struct Skip {
    /// The failure of a Parse/Bind/Describe/Close, given to the next Execute
    /// (the statement it stopped); recorded on its own at Sync otherwise.
    failure: Option<StatementRecord>,
    statements: HashMap<String, Arc<str>>,
    portals: HashMap<String, (String, Option<Arc<str>>, Parameters)>,
}

/// The reply queue and what it has learnt.
#[derive(Debug)]
pub(crate) struct Replies {
    queue: VecDeque<Expected>,
    prepared: Prepared,
    /// The record being built from the front request's replies.
    current: Option<StatementRecord>,
    copy: Copy,
    skip: Option<Skip>,
    /// When the previous request's last reply arrived: a pipelined request
    /// starts no earlier.
    last_done: SystemTime,
    /// Complete, waiting for the transaction status of the next ReadyForQuery.
    unstamped: Vec<StatementRecord>,
    /// Complete and stamped, for the caller.
    pub done: VecDeque<StatementRecord>,
    pub backend_pid: Option<i32>,
    pub status: Option<TransactionStatus>,
    /// CopyBoth (replication) started: frames are only forwarded.
    passthrough: bool,
    /// Records finished so far (unstamped, done or taken): the session
    /// holds results back by this count.
    pub finished: u64,
}

impl Replies {
    pub fn new(now: SystemTime) -> Self {
        Replies {
            queue: VecDeque::new(),
            prepared: Prepared::default(),
            current: None,
            copy: Copy::None,
            skip: None,
            last_done: now,
            unstamped: Vec::new(),
            done: VecDeque::new(),
            backend_pid: None,
            status: None,
            passthrough: false,
            finished: 0,
        }
    }

    /// Requests not answered yet.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// A message from the client, already forwarded or about to be.
    pub fn on_client(&mut self, message: FrontendMessage, now: SystemTime) {
        if self.passthrough {
            return;
        }
        let expected = match message {
            FrontendMessage::CopyData(data) => {
                let bytes = data.len() as u64;
                match self.copy {
                    Copy::In => {
                        if let Some(record) = &mut self.current {
                            record.copy_bytes += bytes;
                        }
                    }
                    Copy::None if self.skip.is_none() => self.early_copy(bytes, false),
                    _ => {}
                }
                return;
            }
            FrontendMessage::CopyDone | FrontendMessage::CopyFail(_) => {
                match self.copy {
                    Copy::In => self.copy = Copy::InDone,
                    Copy::None if self.skip.is_none() => self.early_copy(0, true),
                    _ => {}
                }
                return;
            }
            // The server ignores both during COPY FROM STDIN.
            FrontendMessage::Sync | FrontendMessage::Flush if self.copy == Copy::In => return,
            FrontendMessage::Flush
            | FrontendMessage::Terminate
            | FrontendMessage::Authentication(_)
            | FrontendMessage::Other(_) => return,
            FrontendMessage::Sync => {
                if let Some(skip) = self.skip.take() {
                    if let Some(failure) = skip.failure {
                        self.finish(failure, now);
                    }
                }
                Expected::Sync
            }
            FrontendMessage::Query(sql) => Expected::Query {
                sql: Arc::from(sql),
                sent_at: now,
                part: 0,
                over: false,
            },
            FrontendMessage::Parse { name, sql, .. } => Expected::Parse {
                name,
                sql: Arc::from(sql),
            },
            FrontendMessage::Bind {
                portal,
                statement,
                params,
                ..
            } => Expected::Bind {
                portal,
                statement,
                params,
            },
            FrontendMessage::Describe { .. } => Expected::Describe,
            FrontendMessage::Execute { portal, .. } => Expected::Execute {
                portal,
                sent_at: now,
            },
            FrontendMessage::Close { target, name } => Expected::Close { target, name },
            FrontendMessage::FunctionCall { oid, args, .. } => Expected::FunctionCall {
                oid,
                args,
                sent_at: now,
                over: false,
            },
        };
        if self.skip.is_some() {
            self.discarded(expected, now);
        } else {
            self.queue.push_back(expected);
        }
    }

    /// A message from the server, already forwarded or about to be.
    pub fn on_server(&mut self, raw: &RawFrame, now: SystemTime) -> Result<(), SessionError> {
        let tag = raw.tag();
        if self.passthrough || matches!(tag, b'N' | b'A' | b'S') {
            return Ok(()); // asynchronous: answers nothing
        }
        // COPY data no COPY took: the server ignored it.
        while let Some(Expected::CopyData { .. }) = self.queue.front() {
            self.queue.pop_front();
        }
        let Some(front) = self.queue.front() else {
            // A FATAL error (shutdown, idle timeout) can come unasked.
            if tag == b'E' {
                return Ok(());
            }
            return Err(out_of_step(tag, "no request outstanding"));
        };
        match (front, tag) {
            // Replies every statement-running request can get.
            (
                Expected::Query { .. } | Expected::Execute { .. } | Expected::FunctionCall { .. },
                b'E',
            ) => {
                let error = parse_error(raw)?;
                self.copy = Copy::None;
                let step = front.step();
                let record = self.current(now);
                record.outcome = Outcome::Failed { step, error };
                self.finish_current(now);
                match self.queue.front_mut() {
                    Some(Expected::Execute { .. }) => {
                        self.queue.pop_front();
                        self.skip_until_sync(None, now);
                    }
                    Some(Expected::Query { over, .. } | Expected::FunctionCall { over, .. }) => {
                        *over = true;
                    }
                    _ => {}
                }
            }
            (Expected::Query { .. } | Expected::Execute { .. }, b'D') => {
                self.current(now).rows_returned += 1;
            }
            (Expected::Query { .. } | Expected::Execute { .. }, b'C') => {
                let tag = match BackendMessage::parse(raw.frame()).map_err(malformed)? {
                    BackendMessage::CommandComplete(tag) => tag,
                    _ => return Err(out_of_step(b'C', "unparsable CommandComplete")),
                };
                let parsed = CommandTag::parse(&tag);
                let rows = parsed.rows;
                let record = self.current(now);
                record.rows = rows;
                // A SELECT portal run in several row-limited Executes: the
                // last one's tag counts only its own rows (PortalRunSelect).
                if record.executions > 1 && tag.starts_with("SELECT") {
                    record.rows = Some(record.rows_returned);
                }
                let sql = record.sql.clone();
                record.command_tag = Some(tag.clone());
                self.finish_current(now);
                if let Some(sql) = sql {
                    for (name, portal) in self.prepared.apply_command(&tag, &sql) {
                        self.portal_gone(name, portal, now);
                    }
                }
                match self.queue.front_mut() {
                    Some(Expected::Query { part, .. }) => *part += 1,
                    Some(Expected::Execute { portal, .. }) => {
                        if let Some(portal) = self.prepared.portal_mut(portal) {
                            portal.progress = None;
                        }
                        self.queue.pop_front();
                    }
                    _ => {}
                }
            }
            (Expected::Query { .. } | Expected::Execute { .. }, b'I') => {
                self.current = None;
                self.last_done = now;
                if let Some(Expected::Execute { .. }) = self.queue.front() {
                    self.queue.pop_front();
                }
            }
            (Expected::Query { .. } | Expected::Execute { .. }, b'G') => {
                self.current(now);
                self.copy = Copy::In;
                // What the client sent after this request and before it saw
                // CopyInResponse reached the server during the COPY: Syncs
                // (libpq sends one with the Execute) are ignored, data
                // counts, and a CopyDone ends the COPY; what follows it is
                // ordinary traffic again.
                let mut early = 0;
                while let Some(next) = self.queue.get(1) {
                    match *next {
                        Expected::Sync => {}
                        Expected::CopyData { bytes, done } => {
                            early += bytes;
                            if done {
                                self.copy = Copy::InDone;
                            }
                        }
                        _ => break,
                    }
                    self.queue.remove(1);
                    if self.copy == Copy::InDone {
                        break;
                    }
                }
                self.current(now).copy_bytes += early;
            }
            (Expected::Query { .. } | Expected::Execute { .. }, b'H') => {
                self.current(now);
                self.copy = Copy::Out;
            }
            (Expected::Query { .. } | Expected::Execute { .. }, b'd') if self.copy == Copy::Out => {
                self.current(now).copy_bytes += raw.body().len() as u64;
            }
            (Expected::Query { .. } | Expected::Execute { .. }, b'c') if self.copy == Copy::Out => {
                self.copy = Copy::None;
            }
            (Expected::Query { .. } | Expected::Execute { .. }, b'W') => {
                // Replication (CopyBoth): nothing after this is a statement.
                self.passthrough = true;
            }
            (Expected::Query { .. }, b'T') => {}
            (Expected::Execute { .. }, b's') => {
                let record = self.current.take();
                if let (Some(record), Some(Expected::Execute { portal, .. })) =
                    (record, self.queue.pop_front())
                {
                    if let Some(portal) = self.prepared.portal_mut(&portal) {
                        portal.progress = Some(Progress {
                            rows_returned: record.rows_returned,
                            executions: record.executions,
                            started_at: record.started_at,
                        });
                    }
                }
                self.last_done = now;
            }
            (Expected::FunctionCall { .. }, b'V') => {
                self.current(now);
                self.finish_current(now);
                if let Some(Expected::FunctionCall { over, .. }) = self.queue.front_mut() {
                    *over = true;
                }
            }
            (Expected::Query { .. } | Expected::FunctionCall { .. } | Expected::Sync, b'Z') => {
                let status = match BackendMessage::parse(raw.frame()).map_err(malformed)? {
                    BackendMessage::ReadyForQuery(status) => status,
                    _ => return Err(out_of_step(b'Z', "unparsable ReadyForQuery")),
                };
                if let Some(Expected::Query { .. }) = self.queue.pop_front() {
                    if let Some((name, portal)) = self.prepared.simple_query() {
                        self.portal_gone(name, portal, now);
                    }
                }
                self.current = None;
                self.copy = Copy::None;
                self.ready(status, now);
            }
            (Expected::Parse { .. }, b'1') => {
                if let Some(Expected::Parse { name, sql }) = self.queue.pop_front() {
                    self.prepared.add_statement(name, sql);
                }
                self.last_done = now;
            }
            (Expected::Bind { .. }, b'2') => {
                if let Some(Expected::Bind {
                    portal,
                    statement,
                    params,
                }) = self.queue.pop_front()
                {
                    let sql = self.prepared.statement(&statement);
                    let bound = Portal {
                        statement,
                        sql,
                        params,
                        progress: None,
                    };
                    if let Some(old) = self.prepared.add_portal(portal.clone(), bound) {
                        self.portal_gone(portal, old, now);
                    }
                }
                self.last_done = now;
            }
            (Expected::Describe, b't') => {}
            (Expected::Describe, b'T' | b'n') => {
                self.queue.pop_front();
                self.last_done = now;
            }
            (Expected::Close { .. }, b'3') => {
                if let Some(Expected::Close { target, name }) = self.queue.pop_front() {
                    match target {
                        Target::Statement => self.prepared.remove_statement(&name),
                        Target::Portal => {
                            if let Some((name, portal)) = self.prepared.remove_portal(&name) {
                                self.portal_gone(name, portal, now);
                            }
                        }
                    }
                }
                self.last_done = now;
            }
            (
                Expected::Parse { .. }
                | Expected::Bind { .. }
                | Expected::Describe
                | Expected::Close { .. },
                b'E',
            ) => {
                let error = parse_error(raw)?;
                let step = front.step();
                let failed = self.queue.pop_front();
                let mut record = StatementRecord::new(Protocol::Extended, None, now);
                record.started_at = self.last_done.max(now);
                record.outcome = Outcome::Failed { step, error };
                let mut skip = Skip {
                    failure: None,
                    statements: HashMap::new(),
                    portals: HashMap::new(),
                };
                match failed {
                    Some(Expected::Parse { name, sql }) => {
                        record.sql = Some(sql.clone());
                        record.statement = Some(name.clone());
                        skip.statements.insert(name, sql);
                    }
                    Some(Expected::Bind {
                        portal,
                        statement,
                        params,
                    }) => {
                        let sql = self.prepared.statement(&statement);
                        record.sql = sql.clone();
                        record.statement = Some(statement.clone());
                        record.portal = Some(portal.clone());
                        record.params = params.clone();
                        skip.portals.insert(portal, (statement, sql, params));
                    }
                    _ => {}
                }
                skip.failure = Some(record);
                self.skip_until_sync(Some(skip), now);
            }
            (Expected::Sync, b'E') => {
                // The implicit transaction failed to commit (e.g. a deferred
                // constraint): a failure of its own, before ReadyForQuery.
                let mut record = StatementRecord::new(Protocol::Extended, None, now);
                record.outcome = Outcome::Failed {
                    step: Step::Sync,
                    error: parse_error(raw)?,
                };
                self.finish(record, now);
            }
            (front, tag) => {
                return Err(out_of_step(
                    tag,
                    &format!("while waiting on {}", front.name()),
                ));
            }
        }
        Ok(())
    }

    /// COPY data (or its end) before any CopyInResponse: kept in line with
    /// the requests, consecutive data in one marker.
    fn early_copy(&mut self, bytes: u64, end: bool) {
        if let Some(Expected::CopyData { bytes: b, done }) = self.queue.back_mut() {
            if !*done {
                *b += bytes;
                *done = end;
                return;
            }
        }
        self.queue
            .push_back(Expected::CopyData { bytes, done: end });
    }

    /// The record for the front request, started on its first reply.
    fn current(&mut self, now: SystemTime) -> &mut StatementRecord {
        if self.current.is_none() {
            let started = self.last_done;
            let record = match self.queue.front() {
                Some(Expected::Query {
                    sql, sent_at, part, ..
                }) => {
                    let mut r = StatementRecord::new(
                        Protocol::Simple { part: *part },
                        Some(sql.clone()),
                        now,
                    );
                    r.started_at = started.max(*sent_at);
                    r.executions = 1;
                    r
                }
                Some(Expected::Execute { portal, sent_at }) => {
                    let mut r = StatementRecord::new(Protocol::Extended, None, now);
                    r.started_at = started.max(*sent_at);
                    r.portal = Some(portal.clone());
                    if let Some(bound) = self.prepared.portal_mut(portal) {
                        r.sql = bound.sql.clone();
                        r.statement = Some(bound.statement.clone());
                        r.params = bound.params.clone();
                        if let Some(progress) = bound.progress.take() {
                            r.rows_returned = progress.rows_returned;
                            r.executions = progress.executions;
                            r.started_at = progress.started_at;
                        }
                    }
                    r.executions += 1;
                    r
                }
                Some(Expected::FunctionCall {
                    oid, args, sent_at, ..
                }) => {
                    let mut r =
                        StatementRecord::new(Protocol::FunctionCall { oid: *oid }, None, now);
                    r.started_at = started.max(*sent_at);
                    r.params = args.clone();
                    r.executions = 1;
                    r
                }
                _ => StatementRecord::new(Protocol::Extended, None, now),
            };
            self.current = Some(record);
        }
        self.current
            .get_or_insert_with(|| StatementRecord::new(Protocol::Extended, None, now))
    }

    fn finish_current(&mut self, now: SystemTime) {
        if let Some(record) = self.current.take() {
            self.finish(record, now);
        }
    }

    fn finish(&mut self, mut record: StatementRecord, now: SystemTime) {
        self.finished += 1;
        record.finished_at = now;
        record.backend_pid = self.backend_pid;
        self.last_done = now;
        self.unstamped.push(record);
    }

    /// ReadyForQuery: every record since the last one gets this status.
    pub(crate) fn ready(&mut self, status: TransactionStatus, now: SystemTime) {
        if status == TransactionStatus::Idle {
            // Outside a transaction no protocol-level portal survives.
            for (name, portal) in self.prepared.end_transaction() {
                self.portal_gone(name, portal, now);
            }
        }
        self.status = Some(status);
        for mut record in self.unstamped.drain(..) {
            record.transaction_status = Some(status);
            self.done.push_back(record);
        }
        self.last_done = now;
    }

    /// Hands the complete records over before the next ReadyForQuery,
    /// without a transaction status (the session's hold-back limit).
    pub fn release_unstamped(&mut self) {
        self.done.extend(self.unstamped.drain(..));
    }

    /// Complete records waiting for the next ReadyForQuery.
    pub fn unstamped(&self) -> usize {
        self.unstamped.len()
    }

    /// A portal closed or dropped: a suspended run is recorded as such.
    fn portal_gone(&mut self, name: String, portal: Portal, now: SystemTime) {
        if let Some(progress) = portal.progress {
            let mut record = StatementRecord::new(Protocol::Extended, portal.sql, now);
            record.statement = Some(portal.statement);
            record.portal = Some(name);
            record.params = portal.params;
            record.rows_returned = progress.rows_returned;
            record.executions = progress.executions;
            record.started_at = progress.started_at;
            record.outcome = Outcome::Suspended;
            let last_done = self.last_done;
            self.finish(record, now);
            self.last_done = last_done;
        }
    }

    /// After an error: the server discards what follows until Sync.
    fn skip_until_sync(&mut self, skip: Option<Skip>, now: SystemTime) {
        self.skip = Some(skip.unwrap_or(Skip {
            failure: None,
            statements: HashMap::new(),
            portals: HashMap::new(),
        }));
        while let Some(front) = self.queue.front() {
            if matches!(front, Expected::Sync) {
                if let Some(Skip {
                    failure: Some(failure),
                    ..
                }) = self.skip.take()
                {
                    self.finish(failure, now);
                }
                self.skip = None;
                return;
            }
            if let Some(expected) = self.queue.pop_front() {
                self.discarded(expected, now);
            }
        }
    }

    /// A request the server discards (an earlier error, before Sync).
    fn discarded(&mut self, expected: Expected, now: SystemTime) {
        let Some(skip) = self.skip.as_mut() else {
            return;
        };
        let record = match expected {
            Expected::Parse { name, sql } => {
                skip.statements.insert(name, sql);
                None
            }
            Expected::Bind {
                portal,
                statement,
                params,
            } => {
                let sql = skip
                    .statements
                    .get(&statement)
                    .cloned()
                    .or_else(|| self.prepared.statement(&statement));
                skip.portals.insert(portal, (statement, sql, params));
                None
            }
            Expected::Execute { portal, .. } => {
                let mut record = StatementRecord::new(Protocol::Extended, None, now);
                if let Some((statement, sql, params)) = skip.portals.get(&portal) {
                    record.sql = sql.clone();
                    record.statement = Some(statement.clone());
                    record.params = params.clone();
                } else if let Some(bound) = self.prepared.portal_mut(&portal) {
                    record.sql = bound.sql.clone();
                    record.statement = Some(bound.statement.clone());
                    record.params = bound.params.clone();
                }
                record.portal = Some(portal);
                record.outcome = NOT_RUN;
                // The first statement stopped by a failed Parse or Bind
                // carries that failure; the rest did not run.
                if let Some(failure) = skip.failure.take() {
                    record.outcome = failure.outcome;
                    record.started_at = failure.started_at;
                }
                Some(record)
            }
            Expected::Query { sql, .. } => {
                let mut record = StatementRecord::new(Protocol::Simple { part: 0 }, Some(sql), now);
                record.outcome = NOT_RUN;
                Some(record)
            }
            Expected::FunctionCall { oid, args, .. } => {
                let mut record = StatementRecord::new(Protocol::FunctionCall { oid }, None, now);
                record.params = args;
                record.outcome = NOT_RUN;
                Some(record)
            }
            Expected::Describe
            | Expected::Close { .. }
            | Expected::Sync
            | Expected::CopyData { .. } => None,
        };
        if let Some(record) = record {
            let last_done = self.last_done;
            self.finish(record, now);
            self.last_done = last_done;
        }
    }

    /// The connection ended: requests without a reply may or may not have
    /// run, and are recorded so.
    pub fn close(&mut self, now: SystemTime) {
        // A portal run is one statement however many Executes it took: the
        // ones still unanswered give it one record, not one each.
        let mut recorded: HashSet<String> = HashSet::new();
        if let Some(mut record) = self.current.take() {
            if record.outcome == Outcome::Completed {
                record.outcome = Outcome::NoReply;
            }
            if let Some(Expected::Execute { portal, .. }) = self.queue.pop_front() {
                recorded.insert(portal);
            }
            self.finish(record, now);
        }
        // Parses and Binds sent but not confirmed still name the SQL of the
        // Executes after them (a pipeline cut before its replies).
        let mut statements: HashMap<String, Arc<str>> = HashMap::new();
        let mut portals: HashMap<String, (String, Option<Arc<str>>, Parameters)> = HashMap::new();
        for expected in std::mem::take(&mut self.queue) {
            let record = match expected {
                Expected::Query { over: true, .. } | Expected::FunctionCall { over: true, .. } => {
                    None
                }
                Expected::Query { sql, part, .. } => Some(StatementRecord::new(
                    Protocol::Simple { part },
                    Some(sql),
                    now,
                )),
                Expected::Parse { name, sql } => {
                    statements.insert(name, sql);
                    None
                }
                Expected::Bind {
                    portal,
                    statement,
                    params,
                } => {
                    let sql = statements
                        .get(&statement)
                        .cloned()
                        .or_else(|| self.prepared.statement(&statement));
                    recorded.remove(&portal);
                    portals.insert(portal, (statement, sql, params));
                    None
                }
                Expected::Execute { portal, .. } if recorded.contains(&portal) => None,
                Expected::Execute { portal, .. } => {
                    let mut record = StatementRecord::new(Protocol::Extended, None, now);
                    if let Some((statement, sql, params)) = portals.get(&portal) {
                        record.sql = sql.clone();
                        record.statement = Some(statement.clone());
                        record.params = params.clone();
                    } else if let Some(bound) = self.prepared.portal_mut(&portal) {
                        record.sql = bound.sql.clone();
                        record.statement = Some(bound.statement.clone());
                        record.params = bound.params.clone();
                        if let Some(progress) = bound.progress.take() {
                            record.rows_returned = progress.rows_returned;
                            record.executions = progress.executions;
                            record.started_at = progress.started_at;
                        }
                    }
                    recorded.insert(portal.clone());
                    record.portal = Some(portal);
                    Some(record)
                }
                Expected::FunctionCall { oid, args, .. } => {
                    let mut record =
                        StatementRecord::new(Protocol::FunctionCall { oid }, None, now);
                    record.params = args;
                    Some(record)
                }
                _ => None,
            };
            if let Some(mut record) = record {
                record.outcome = Outcome::NoReply;
                self.finish(record, now);
            }
        }
        if let Some(Skip {
            failure: Some(failure),
            ..
        }) = self.skip.take()
        {
            self.finish(failure, now);
        }
        // A run suspended by a row limit and never resumed ends here.
        for (name, portal) in self.prepared.end_transaction() {
            self.portal_gone(name, portal, now);
        }
        self.done.extend(self.unstamped.drain(..));
    }
}

const NOT_RUN: Outcome = Outcome::NotRun;

fn parse_error(raw: &RawFrame) -> Result<ErrorFields, SessionError> {
    match BackendMessage::parse(raw.frame()).map_err(malformed)? {
        BackendMessage::ErrorResponse(fields) => Ok(fields),
        _ => Err(out_of_step(b'E', "unparsable ErrorResponse")),
    }
}

fn malformed(source: pgtrail_wire::WireError) -> SessionError {
    SessionError::Malformed {
        side: Side::Server,
        source,
    }
}

fn out_of_step(tag: u8, context: &str) -> SessionError {
    SessionError::out_of_step(
        Side::Server,
        format!("message '{}' {context}", char::from(tag).escape_default()),
    )
}
