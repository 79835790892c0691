//! Seeded fuzz of the proxy's state machine through its public API
//! ([`Session`]), both sides at once (`pgtrail_testkit::fuzz`: a failure
//! prints its seed and case and replays exactly; `PGTRAIL_FUZZ_SCALE=N`
//! runs N times as many cases, `PGTRAIL_FUZZ_SEED` explores other ones).
//!
//! - Well-formed conversations (login, simple queries that succeed or fail,
//!   pipelines failing at any step, row-limited portals, COPY both ways,
//!   FunctionCall, asynchronous messages), the two byte streams interleaved
//!   in any order causality allows and cut at random byte boundaries, the
//!   client read only while the session wants it: each side gets exactly
//!   the other's bytes, every frame as soon as it is complete (so at most
//!   one incomplete frame is ever buffered), and each statement ends in
//!   exactly one record.
//! - The same cut off at a random byte (the connection drops): after
//!   `close`, every statement whose message was sent has a record, and no
//!   statement has more records than it could.
//! - The same with bytes flipped, lengths corrupted, frames truncated,
//!   duplicated, swapped or dropped, unknown tags, huge lengths and server
//!   messages that answer nothing, fed in any order: no panic, every error
//!   a `SessionError` naming the side that sent the bytes, only input bytes
//!   forwarded, and what the session keeps bounded by what came in.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgtrail_proxy::{
    Outcome, Protocol, Session, SessionConfig, SessionError, Side, StatementRecord,
};
use pgtrail_testkit::fuzz::{cases, mutate, rng, Rng};

// ---------------------------------------------------------------------------
// Messages (protocol 3.0, "Message Formats").

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let length = i32::try_from(body.len() + 4).expect("small message");
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.push(0);
}

fn startup() -> Vec<u8> {
    let mut body = 196_608i32.to_be_bytes().to_vec();
    for (k, v) in [("user", "alice"), ("database", "shop")] {
        cstr(&mut body, k);
        cstr(&mut body, v);
    }
    body.push(0);
    let mut out = i32::try_from(body.len() + 4)
        .expect("small")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(&body);
    out
}

fn query(sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, sql);
    msg(b'Q', &b)
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name);
    cstr(&mut b, sql);
    b.extend_from_slice(&0i16.to_be_bytes());
    msg(b'P', &b)
}

fn bind(portal: &str, statement: &str, value: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal);
    cstr(&mut b, statement);
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&1i16.to_be_bytes());
    b.extend_from_slice(&i32::try_from(value.len()).expect("small").to_be_bytes());
    b.extend_from_slice(value);
    b.extend_from_slice(&0i16.to_be_bytes());
    msg(b'B', &b)
}

fn describe(target: u8, name: &str) -> Vec<u8> {
    let mut b = vec![target];
    cstr(&mut b, name);
    msg(b'D', &b)
}

fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal);
    b.extend_from_slice(&max_rows.to_be_bytes());
    msg(b'E', &b)
}

fn close(target: u8, name: &str) -> Vec<u8> {
    let mut b = vec![target];
    cstr(&mut b, name);
    msg(b'C', &b)
}

fn function_call(oid: u32) -> Vec<u8> {
    let mut b = oid.to_be_bytes().to_vec();
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&1i16.to_be_bytes());
    b.extend_from_slice(&1i32.to_be_bytes());
    b.push(b'7');
    b.extend_from_slice(&0i16.to_be_bytes());
    msg(b'F', &b)
}

fn row_description() -> Vec<u8> {
    let mut b = 1i16.to_be_bytes().to_vec();
    cstr(&mut b, "x");
    b.extend_from_slice(&[
        0, 0, 0, 0, 0, 0, 0, 0, 0, 23, 0, 4, 255, 255, 255, 255, 0, 0,
    ]);
    msg(b'T', &b)
}

fn data_row(value: &[u8]) -> Vec<u8> {
    let mut b = 1i16.to_be_bytes().to_vec();
    b.extend_from_slice(&i32::try_from(value.len()).expect("small").to_be_bytes());
    b.extend_from_slice(value);
    msg(b'D', &b)
}

fn complete(tag: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, tag);
    msg(b'C', &b)
}

fn ready(status: u8) -> Vec<u8> {
    msg(b'Z', &[status])
}

fn error(code: &str) -> Vec<u8> {
    let mut b = Vec::new();
    for (field, value) in [(b'S', "ERROR"), (b'C', code), (b'M', "it failed")] {
        b.push(field);
        cstr(&mut b, value);
    }
    b.push(0);
    msg(b'E', &b)
}

fn notice() -> Vec<u8> {
    msg(b'N', b"SNOTICE\0Mhello\0\0")
}

fn notification() -> Vec<u8> {
    msg(b'A', b"\0\0\0\x63ch\0payload\0")
}

fn parameter_status(name: &str, value: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name);
    cstr(&mut b, value);
    msg(b'S', &b)
}

// ---------------------------------------------------------------------------
// Conversations: messages in causal order, with what each client message
// means for the records.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dir {
    Client,
    Server,
}

/// What a client message stands for in the records (`key`: the SQL text,
/// unique per exchange, or `fn:<oid>` for a FunctionCall).
#[derive(Clone, Debug)]
enum Unit {
    Nothing,
    /// A simple Query holding `parts` statements, of which `answered` get a
    /// result before ReadyForQuery (the rest are skipped after an error).
    Query {
        key: String,
        parts: usize,
        answered: usize,
    },
    /// An Execute that completes a portal's run, or a FunctionCall: one record.
    One {
        key: String,
    },
    /// An Execute the portal's run continues after (a row limit): the
    /// run is one statement, recorded once (with its last Execute, or as
    /// suspended or unanswered when the connection ends first).
    Partial {
        key: String,
    },
    /// A Parse or Bind the server rejects: its failure is the next
    /// Execute's record, or a record of its own when none follows.
    Failing {
        key: String,
    },
}

#[derive(Clone, Debug)]
struct Message {
    dir: Dir,
    bytes: Vec<u8>,
    unit: Unit,
    /// Messages of the other direction that must have arrived first.
    after: usize,
}

struct Builder<'r> {
    rng: &'r mut Rng,
    messages: Vec<Message>,
    clients: usize,
    servers: usize,
    /// Server messages a client message waits for (the client does not
    /// send before the login finished, nor across a COPY).
    floor: usize,
    next_id: u32,
    /// Exchanges whose server side reports a failure.
    failures: usize,
}

impl<'r> Builder<'r> {
    fn new(rng: &'r mut Rng) -> Self {
        let mut b = Builder {
            rng,
            messages: Vec::new(),
            clients: 0,
            servers: 0,
            floor: 0,
            next_id: 0,
            failures: 0,
        };
        b.client(startup(), Unit::Nothing);
        b.server(msg(b'R', &0i32.to_be_bytes()));
        b.server(parameter_status("server_version", "15.18"));
        b.server(msg(b'K', &[0, 0, 0x10, 0x92, 1, 2, 3, 4]));
        b.server(ready(b'I'));
        b.floor = b.servers;
        b
    }

    fn client(&mut self, bytes: Vec<u8>, unit: Unit) {
        self.messages.push(Message {
            dir: Dir::Client,
            bytes,
            unit,
            after: self.floor,
        });
        self.clients += 1;
    }

    fn server(&mut self, bytes: Vec<u8>) {
        self.messages.push(Message {
            dir: Dir::Server,
            bytes,
            unit: Unit::Nothing,
            after: self.clients,
        });
        self.servers += 1;
    }

    fn id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    fn exchange(&mut self) {
        let id = self.id();
        match self.rng.below(10) {
            0 | 1 => self.simple(id),
            2..=4 => self.pipeline(id),
            5 => self.row_limit(id),
            6 => self.copy_in(id),
            7 => self.copy_out(id),
            8 => {
                self.client(
                    function_call(1000 + id),
                    Unit::One {
                        key: format!("fn:{}", 1000 + id),
                    },
                );
                self.server(msg(b'V', b"\0\0\0\x011"));
                self.server(ready(b'I'));
            }
            _ => self.no_statement(id),
        }
        // Asynchronous messages answer nothing and may come at any time.
        if self.rng.below(4) == 0 {
            let extra = match self.rng.below(3) {
                0 => notice(),
                1 => notification(),
                _ => parameter_status("application_name", "fuzz"),
            };
            let at = self.messages.len() - self.rng.below(2);
            let after = self.messages[..at]
                .iter()
                .filter(|m| m.dir == Dir::Client)
                .count();
            self.messages.insert(
                at,
                Message {
                    dir: Dir::Server,
                    bytes: extra,
                    unit: Unit::Nothing,
                    after,
                },
            );
            self.servers += 1;
        }
    }

    /// A simple Query of 1 to 3 statements, or an empty one; it may fail at
    /// any statement.
    fn simple(&mut self, id: u32) {
        let parts = self.rng.below(4);
        let sql = (0..parts)
            .map(|p| format!("SELECT {id}{p}"))
            .collect::<Vec<_>>()
            .join("; ");
        let fail = (parts > 0 && self.rng.below(3) == 0).then(|| self.rng.below(parts));
        let answered = fail.map_or(parts, |f| f + 1);
        self.client(
            query(&sql),
            Unit::Query {
                key: sql.clone(),
                parts,
                answered,
            },
        );
        if parts == 0 {
            self.server(msg(b'I', b""));
        }
        for p in 0..parts {
            if fail == Some(p) {
                self.server(error("42703"));
                self.failures += 1;
                break;
            }
            self.server(row_description());
            for _ in 0..self.rng.below(3) {
                self.server(data_row(b"1"));
            }
            self.server(complete("SELECT 1"));
        }
        self.server(ready(b'I'));
    }

    /// Parse, [Describe], n × (Bind, Execute), Sync: failing at the Parse,
    /// at a Bind, at an Execute, or not at all.
    fn pipeline(&mut self, id: u32) {
        let sql = format!("SELECT $1 /* {id} */");
        let name = if self.rng.below(2) == 0 {
            String::new()
        } else {
            format!("s{id}")
        };
        let n = self.rng.below(4) + usize::from(self.rng.below(4) != 0);
        // 0: the Parse fails, 1..=n: the Bind of that Execute, n+1..=2n:
        // that Execute, beyond: nothing.
        let fail = self.rng.below(2 * n + 3);
        let key = sql.clone();
        let mut server = Vec::new();
        let mut failed = false;
        let unit = if fail == 0 {
            Unit::Failing { key: key.clone() }
        } else {
            Unit::Nothing
        };
        self.client(parse(&name, &sql), unit);
        if fail == 0 {
            server.push(error("42601"));
            failed = true;
        } else {
            server.push(msg(b'1', b""));
        }
        if self.rng.below(2) == 0 {
            self.client(describe(b'S', &name), Unit::Nothing);
            if !failed {
                server.push(msg(b't', &[0, 1, 0, 0, 0, 23]));
                server.push(row_description());
            }
        }
        for i in 1..=n {
            let bind_fails = fail == i;
            let unit = if bind_fails {
                Unit::Failing { key: key.clone() }
            } else {
                Unit::Nothing
            };
            self.client(bind("", &name, b"7"), unit);
            self.client(execute("", 0), Unit::One { key: key.clone() });
            if failed {
                continue;
            }
            if bind_fails {
                server.push(error("22P02"));
                failed = true;
                continue;
            }
            server.push(msg(b'2', b""));
            server.push(data_row(b"7"));
            if fail == n + i {
                server.push(error("22012"));
                failed = true;
            } else {
                server.push(complete("SELECT 1"));
            }
        }
        self.client(msg(b'S', b""), Unit::Nothing);
        server.push(ready(b'I'));
        if failed {
            self.failures += 1;
        }
        for s in server {
            self.server(s);
        }
    }

    /// A portal run in steps of one row (Execute with a row limit,
    /// PortalSuspended), to the end, in one transaction.
    fn row_limit(&mut self, id: u32) {
        let sql = format!("SELECT generate_series(1, 3) /* {id} */");
        let steps = 1 + self.rng.below(3);
        self.client(parse("", &sql), Unit::Nothing);
        self.client(bind("", "", b"7"), Unit::Nothing);
        self.server(msg(b'1', b""));
        self.server(msg(b'2', b""));
        for step in 0..steps {
            let last = step + 1 == steps;
            let unit = if last {
                Unit::One { key: sql.clone() }
            } else {
                Unit::Partial { key: sql.clone() }
            };
            self.client(execute("", if last { 0 } else { 1 }), unit);
            self.server(data_row(b"1"));
            if last {
                self.server(complete("SELECT 3"));
            } else {
                self.server(msg(b's', b""));
            }
        }
        self.client(msg(b'S', b""), Unit::Nothing);
        self.server(ready(b'T'));
        // Back to idle, so the next exchange starts outside a transaction.
        let commit = format!("COMMIT /* {id} */");
        self.client(
            query(&commit),
            Unit::Query {
                key: commit.clone(),
                parts: 1,
                answered: 1,
            },
        );
        self.server(complete("COMMIT"));
        self.server(ready(b'I'));
    }

    /// COPY FROM STDIN: the client sends its data once the server asked.
    fn copy_in(&mut self, id: u32) {
        let sql = format!("COPY t{id} FROM STDIN");
        self.floor = self.servers;
        self.client(
            query(&sql),
            Unit::Query {
                key: sql.clone(),
                parts: 1,
                answered: 1,
            },
        );
        self.server(msg(b'G', &[0, 0, 1, 0, 0]));
        self.floor = self.servers;
        let rows = self.rng.below(4);
        for _ in 0..rows {
            self.client(msg(b'd', b"1\t2\n"), Unit::Nothing);
        }
        self.client(msg(b'c', b""), Unit::Nothing);
        self.server(complete(&format!("COPY {rows}")));
        self.server(ready(b'I'));
        self.floor = self.servers;
    }

    fn copy_out(&mut self, id: u32) {
        let sql = format!("COPY t{id} TO STDOUT");
        self.client(
            query(&sql),
            Unit::Query {
                key: sql.clone(),
                parts: 1,
                answered: 1,
            },
        );
        self.server(msg(b'H', &[0, 0, 1, 0, 0]));
        let rows = self.rng.below(4);
        for _ in 0..rows {
            self.server(msg(b'd', b"1\t2\n"));
        }
        self.server(msg(b'c', b""));
        self.server(complete(&format!("COPY {rows}")));
        self.server(ready(b'I'));
    }

    /// Describe and close a named statement (Flush, then Sync): no record.
    fn no_statement(&mut self, id: u32) {
        let name = format!("d{id}");
        self.client(parse(&name, "SELECT 1"), Unit::Nothing);
        self.client(describe(b'S', &name), Unit::Nothing);
        self.client(msg(b'H', b""), Unit::Nothing);
        self.server(msg(b'1', b""));
        self.server(msg(b't', b"\0\0"));
        self.server(msg(b'n', b""));
        self.client(close(b'S', &name), Unit::Nothing);
        self.client(msg(b'S', b""), Unit::Nothing);
        self.server(msg(b'3', b""));
        self.server(ready(b'I'));
    }
}

/// A conversation of 1 to 8 exchanges after the login.
fn conversation(rng: &mut Rng) -> (Vec<Message>, usize) {
    let mut b = Builder::new(rng);
    for _ in 0..1 + b.rng.below(8) {
        b.exchange();
    }
    (b.messages, b.failures)
}

// ---------------------------------------------------------------------------
// Feeding a session.

/// One direction's byte stream and its frame boundaries.
struct Stream {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    after: Vec<usize>,
    fed: usize,
    forwarded: Vec<u8>,
}

impl Stream {
    fn of(messages: &[Message], dir: Dir) -> Stream {
        let mut s = Stream {
            bytes: Vec::new(),
            ends: Vec::new(),
            after: Vec::new(),
            fed: 0,
            forwarded: Vec::new(),
        };
        for m in messages.iter().filter(|m| m.dir == dir) {
            s.bytes.extend_from_slice(&m.bytes);
            s.ends.push(s.bytes.len());
            s.after.push(m.after);
        }
        s
    }

    /// Frames fully fed.
    fn complete(&self) -> usize {
        self.ends.partition_point(|&end| end <= self.fed)
    }

    /// Where the last complete frame ends.
    fn boundary(&self) -> usize {
        match self.complete() {
            0 => 0,
            n => self.ends[n - 1],
        }
    }

    /// How far this side may be fed, once `other` frames of the other side
    /// arrived.
    fn limit(&self, other: usize) -> usize {
        match self.after.partition_point(|&after| after <= other) {
            0 => 0,
            n => self.ends[n - 1],
        }
    }
}

fn at(clock: &mut u64) -> SystemTime {
    *clock += 1;
    UNIX_EPOCH + Duration::from_micros(*clock)
}

fn chunk(rng: &mut Rng, available: usize) -> usize {
    match rng.below(10) {
        0..=4 => 1 + rng.below(available.min(8)),
        5..=7 => 1 + rng.below(available),
        _ => available,
    }
}

/// Which side an error blames, if it names one.
fn blamed(error: &SessionError) -> Option<Side> {
    match error {
        SessionError::Malformed { side, .. } | SessionError::OutOfStep { side, .. } => Some(*side),
        // Both are about the client's first packet.
        SessionError::UnsupportedProtocol { .. } | SessionError::DirectTls => Some(Side::Client),
        other => {
            let text = other.to_string();
            if text.contains("client") {
                Some(Side::Client)
            } else if text.contains("server") {
                Some(Side::Server)
            } else {
                None
            }
        }
    }
}

/// Counts records by statement (SQL text, or `fn:<oid>`), and failures.
#[derive(Default, Debug)]
struct Tally {
    by_key: HashMap<String, usize>,
    failed: usize,
    total: usize,
}

impl Tally {
    fn take(&mut self, session: &mut Session) {
        while let Some(record) = session.next_record() {
            let key = match (record.protocol, &record.sql) {
                (Protocol::FunctionCall { oid }, _) => format!("fn:{oid}"),
                (_, Some(sql)) => sql.to_string(),
                (_, None) => "?".to_string(),
            };
            *self.by_key.entry(key).or_default() += 1;
            if matches!(record.outcome, Outcome::Failed { .. }) {
                self.failed += 1;
            }
            self.total += 1;
        }
    }
}

/// Feeds a well-formed conversation, sides interleaved as causality allows,
/// until `stop` bytes went in (all of them when `None`); checks after every
/// piece that each side got exactly the complete frames of the other.
fn feed_well_formed(
    rng: &mut Rng,
    messages: &[Message],
    config: &SessionConfig,
    stop: Option<usize>,
) -> (Session, Tally, [usize; 2]) {
    let mut session = Session::new(config.clone(), UNIX_EPOCH);
    let mut client = Stream::of(messages, Dir::Client);
    let mut server = Stream::of(messages, Dir::Server);
    let mut tally = Tally::default();
    let mut clock = 0;
    let mut budget = stop.unwrap_or(usize::MAX);
    while budget > 0 {
        let client_room = client.limit(server.complete()).saturating_sub(client.fed);
        let server_room = server.limit(client.complete()).saturating_sub(server.fed);
        let client_ok = client_room > 0 && session.wants_client_data();
        // The shell stops reading a client with too many requests pending;
        // a real server answers what it has before the Sync that ends a
        // pipeline, which this model of causality does not know, so a
        // stalled conversation feeds the client anyway (and the bound is
        // not checked for that piece).
        let stalled = client_room > 0 && !client_ok && server_room == 0;
        let dir = match (client_ok || stalled, server_room > 0) {
            (false, false) => break,
            (true, false) => Dir::Client,
            (false, true) => Dir::Server,
            (true, true) => {
                if rng.below(2) == 0 {
                    Dir::Client
                } else {
                    Dir::Server
                }
            }
        };
        let now = at(&mut clock);
        match dir {
            Dir::Client => {
                let n = chunk(rng, client_room).min(budget);
                let pending_before = session.pending_replies();
                let frames_before = client.complete();
                let piece = &client.bytes[client.fed..client.fed + n];
                if let Err(e) = session.client_data(piece, now) {
                    panic!("well-formed client bytes refused: {e}");
                }
                client.fed += n;
                budget -= n;
                let frames = client.complete() - frames_before;
                if !stalled {
                    assert!(
                        session.pending_replies()
                            <= pending_before.max(config.max_pending) + frames,
                        "pending replies beyond max_pending plus the frames of one read"
                    );
                }
            }
            Dir::Server => {
                let n = chunk(rng, server_room).min(budget);
                let piece = &server.bytes[server.fed..server.fed + n];
                if let Err(e) = session.server_data(piece, now) {
                    panic!("well-formed server bytes refused: {e}");
                }
                server.fed += n;
                budget -= n;
            }
        }
        if let Some(bytes) = session.take_to_server() {
            client.forwarded.extend_from_slice(&bytes);
        }
        if let Some(bytes) = session.take_to_client() {
            server.forwarded.extend_from_slice(&bytes);
        }
        // Every complete frame forwarded at once, nothing of an incomplete
        // one: what is held back is at most the one frame being read.
        assert_eq!(
            client.forwarded.len(),
            client.boundary(),
            "client frames forwarded as they complete"
        );
        assert_eq!(
            server.forwarded.len(),
            server.boundary(),
            "server frames forwarded as they complete"
        );
        tally.take(&mut session);
    }
    assert_eq!(client.forwarded, client.bytes[..client.boundary()]);
    assert_eq!(server.forwarded, server.bytes[..server.boundary()]);
    let complete = [client.complete(), server.complete()];
    (session, tally, complete)
}

fn config(rng: &mut Rng) -> SessionConfig {
    SessionConfig {
        max_pending: [4, 16, 100_000][rng.below(3)],
        ..SessionConfig::default()
    }
}

/// Runs `cases` cases, naming the failing one (the seed is printed by `rng`).
fn run(seed: u64, count: usize, mut case: impl FnMut(&mut Rng)) {
    let mut rng = rng(seed);
    for i in 0..cases(count) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| case(&mut rng))) {
            eprintln!("failed at case {i} of seed {seed:#x}");
            std::panic::resume_unwind(panic);
        }
    }
}

// ---------------------------------------------------------------------------
// The properties.

#[test]
fn well_formed_conversations_pass_through_and_give_one_record_per_statement() {
    run(0x5E55_1011_F00D, 5000, |rng| {
        let (messages, failures) = conversation(rng);
        let config = config(rng);
        let (session, tally, _) = feed_well_formed(rng, &messages, &config, None);
        let mut expected: HashMap<String, usize> = HashMap::new();
        let mut failing: HashMap<String, usize> = HashMap::new();
        for m in &messages {
            match &m.unit {
                Unit::Query { key, answered, .. } => {
                    *expected.entry(key.clone()).or_default() += answered;
                }
                Unit::One { key } => *expected.entry(key.clone()).or_default() += 1,
                Unit::Failing { key } => *failing.entry(key.clone()).or_default() += 1,
                Unit::Nothing | Unit::Partial { .. } => {}
            }
        }
        // A failing Parse or Bind with no Execute after it is a record of its own.
        for key in failing.keys() {
            let n = expected.entry(key.clone()).or_default();
            *n = (*n).max(1);
        }
        expected.retain(|_, n| *n > 0);
        assert_eq!(tally.by_key, expected, "one record per statement");
        assert_eq!(tally.failed, failures, "one failed record per failure");
        assert_eq!(session.pending_replies(), 0, "every request answered");
    });
}

#[test]
fn a_connection_cut_anywhere_leaves_one_record_per_statement_sent() {
    run(0xC0_7A11, 5000, |rng| {
        let (messages, _) = conversation(rng);
        let total: usize = messages.iter().map(|m| m.bytes.len()).sum();
        let stop = rng.below(total);
        let config = config(rng);
        let (mut session, mut tally, [clients, _]) =
            feed_well_formed(rng, &messages, &config, Some(stop));
        session.close(UNIX_EPOCH + Duration::from_secs(1));
        tally.take(&mut session);
        // Per statement: the client messages that reached the session.
        #[derive(Default, Debug)]
        struct Sent {
            queries: usize,
            parts: usize,
            ones: usize,
            partial: usize,
            failing: usize,
        }
        let mut sent: HashMap<String, Sent> = HashMap::new();
        for m in messages
            .iter()
            .filter(|m| m.dir == Dir::Client)
            .take(clients)
        {
            match &m.unit {
                Unit::Query { key, parts, .. } => {
                    let s = sent.entry(key.clone()).or_default();
                    s.queries += 1;
                    s.parts += parts;
                }
                Unit::One { key } => sent.entry(key.clone()).or_default().ones += 1,
                Unit::Failing { key } => sent.entry(key.clone()).or_default().failing += 1,
                Unit::Partial { key } => sent.entry(key.clone()).or_default().partial += 1,
                Unit::Nothing => {}
            }
        }
        for key in tally.by_key.keys() {
            assert!(sent.contains_key(key), "a record for {key:?}, never sent");
        }
        for (key, s) in &sent {
            let got = tally.by_key.get(key).copied().unwrap_or(0);
            // A run in steps is one statement, whichever step was the last
            // sent. An empty Query is no statement; a Query of several gets
            // a record per statement answered and one for the rest. The
            // session cannot count the statements of a text (it parses no
            // SQL): cut after the last result and before ReadyForQuery, a
            // Query gets one record too many, for a statement past its end
            // (`a_query_cut_after_its_last_result_gives_no_extra_record`).
            let runs = s.ones.max(usize::from(s.partial > 0));
            let least = runs + usize::from(s.parts > 0) * s.queries;
            let most = runs.max(usize::from(s.failing > 0)) + s.parts + s.queries;
            assert!(
                (least..=most).contains(&got),
                "{key:?}: {got} records for {s:?} sent (expected {least}..={most})"
            );
        }
    });
}

/// One corruption of a conversation, as a broken or hostile peer sends it.
fn corrupt(rng: &mut Rng, messages: &mut Vec<Message>) {
    let at = rng.below(messages.len());
    match rng.below(9) {
        0 => {
            let other = rng.below(messages.len());
            messages.swap(at, other);
        }
        1 => {
            messages.remove(at);
        }
        2 => {
            let copy = messages[at].clone();
            messages.insert(at, copy);
        }
        3 => messages[at].bytes = mutate(rng, &messages[at].bytes),
        4 => {
            // A corrupt length: tiny, off by a little, or huge.
            let bytes = &mut messages[at].bytes;
            let start = if bytes.len() > 5 && bytes[0].is_ascii_alphanumeric() {
                1
            } else {
                0
            };
            if bytes.len() >= start + 4 {
                let old = i32::from_be_bytes([
                    bytes[start],
                    bytes[start + 1],
                    bytes[start + 2],
                    bytes[start + 3],
                ]);
                let new = match rng.below(6) {
                    0 => 0,
                    1 => 3,
                    2 => old.wrapping_add(1 + rng.below(8) as i32),
                    3 => old.wrapping_sub(1 + rng.below(8) as i32),
                    4 => i32::MAX,
                    _ => 1 << 30,
                };
                bytes[start..start + 4].copy_from_slice(&new.to_be_bytes());
            }
        }
        5 => {
            // Truncated: the frame ends early, the next one's bytes follow.
            let len = messages[at].bytes.len();
            messages[at].bytes.truncate(rng.below(len));
        }
        6 => {
            // An unknown tag.
            let tag = [b'!', b'x', 0, 0xff, b'j', b'~'][rng.below(6)];
            if let Some(first) = messages[at].bytes.first_mut() {
                *first = tag;
            }
        }
        7 => {
            // A server message that answers nothing asked.
            let unasked = match rng.below(12) {
                0 => msg(b'1', b""),
                1 => msg(b'2', b""),
                2 => msg(b'3', b""),
                3 => complete("DELETE 3"),
                4 => ready(b'I'),
                5 => msg(b'n', b""),
                6 => row_description(),
                7 => data_row(b"x"),
                8 => msg(b's', b""),
                9 => msg(b'V', b"\0\0\0\x011"),
                10 => msg(b'G', &[0, 0, 0]),
                _ => error("57P01"),
            };
            messages.insert(
                at,
                Message {
                    dir: Dir::Server,
                    bytes: unasked,
                    unit: Unit::Nothing,
                    after: 0,
                },
            );
        }
        _ => {
            // Random bytes, either side.
            let dir = if rng.below(2) == 0 {
                Dir::Client
            } else {
                Dir::Server
            };
            let bytes = rng.bytes(40);
            messages.insert(
                at,
                Message {
                    dir,
                    bytes,
                    unit: Unit::Nothing,
                    after: 0,
                },
            );
        }
    }
}

#[test]
fn corrupted_and_reordered_frames_end_the_session_cleanly() {
    run(0xBAD_F00D_5EED, 12000, |rng| {
        let (mut messages, _) = conversation(rng);
        for _ in 0..1 + rng.below(4) {
            corrupt(rng, &mut messages);
        }
        // Fields named one by one, the rest default: the config grows.
        let config = SessionConfig {
            max_frame: [64, 4096, 1 << 30][rng.below(3)],
            ..config(rng)
        };
        let mut session = Session::new(config.clone(), UNIX_EPOCH);
        let client_in: Vec<u8> = messages
            .iter()
            .filter(|m| m.dir == Dir::Client)
            .flat_map(|m| m.bytes.clone())
            .collect();
        let server_in: Vec<u8> = messages
            .iter()
            .filter(|m| m.dir == Dir::Server)
            .flat_map(|m| m.bytes.clone())
            .collect();
        let (mut fed_client, mut fed_server) = (0, 0);
        let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
        let mut tally = Tally::default();
        let mut clock = 0;
        while fed_client < client_in.len() || fed_server < server_in.len() {
            let client_left = client_in.len() - fed_client;
            let server_left = server_in.len() - fed_server;
            let client_turn = server_left == 0 || (client_left > 0 && rng.below(2) == 0);
            let now = at(&mut clock);
            let (result, side) = if client_turn {
                let n = chunk(rng, client_left);
                let r = session.client_data(&client_in[fed_client..fed_client + n], now);
                fed_client += n;
                (r, Side::Client)
            } else {
                let n = chunk(rng, server_left);
                let r = session.server_data(&server_in[fed_server..fed_server + n], now);
                fed_server += n;
                (r, Side::Server)
            };
            to_server.extend_from_slice(&session.take_to_server().unwrap_or_default());
            to_client.extend_from_slice(&session.take_to_client().unwrap_or_default());
            tally.take(&mut session);
            // Bounded by the input: a request per client message, at most.
            assert!(session.pending_replies() <= fed_client / 5 + 1);
            if let Err(e) = result {
                assert_eq!(
                    blamed(&e),
                    Some(side),
                    "the error names the side that sent the bytes: {e}"
                );
                break;
            }
        }
        session.close(UNIX_EPOCH + Duration::from_secs(1));
        tally.take(&mut session);
        // Forwarded bytes are input bytes, in order: the client's as they
        // came; the server's after any 'N' refusing SSL or GSS encryption.
        assert!(
            client_in.starts_with(&to_server),
            "forwarded only what came in"
        );
        let refusals = to_client.iter().take_while(|&&b| b == b'N').count();
        assert!(
            (0..=refusals).any(|r| server_in.starts_with(&to_client[r..])),
            "forwarded only what came in"
        );
        // Records: at most one per message either side sent.
        assert!(tally.total <= (fed_client + fed_server) / 5 + 1);
    });
}

// ---------------------------------------------------------------------------
// What the fuzz found, kept as plain cases: a connection that drops after
// the client sent and before the server finished answering.

/// Plays a login and then `frames` in order, closes, returns the records.
fn replay(frames: &[(Dir, Vec<u8>)]) -> Vec<StatementRecord> {
    let mut session = Session::new(SessionConfig::default(), UNIX_EPOCH);
    let mut clock = 0;
    let mut login: Vec<(Dir, Vec<u8>)> = vec![(Dir::Client, startup())];
    login.extend(
        [
            msg(b'R', &0i32.to_be_bytes()),
            msg(b'K', &[0, 0, 0x10, 0x92, 1, 2, 3, 4]),
            ready(b'I'),
        ]
        .map(|m| (Dir::Server, m)),
    );
    for (dir, bytes) in login.iter().chain(frames) {
        let now = at(&mut clock);
        match dir {
            Dir::Client => session.client_data(bytes, now),
            Dir::Server => session.server_data(bytes, now),
        }
        .expect("well-formed");
    }
    session.close(at(&mut clock));
    std::iter::from_fn(|| session.next_record()).collect()
}

#[test]
fn a_pipeline_cut_before_its_replies_records_each_execute_with_its_sql() {
    let records = replay(&[
        (Dir::Client, parse("", "DELETE FROM t WHERE id = $1")),
        (Dir::Client, bind("", "", b"1")),
        (Dir::Client, execute("", 0)),
        (Dir::Client, msg(b'S', b"")),
    ]);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].outcome, Outcome::NoReply);
    assert_eq!(
        records[0].sql.as_deref(),
        Some("DELETE FROM t WHERE id = $1"),
        "an unanswered statement is recorded with its text"
    );
}

#[test]
fn a_row_limited_run_cut_short_is_one_record() {
    let sql = "SELECT generate_series(1, 9)";
    // Suspended, then the connection drops: the run is recorded.
    let records = replay(&[
        (Dir::Client, parse("", sql)),
        (Dir::Client, bind("", "", b"7")),
        (Dir::Client, execute("", 1)),
        (Dir::Client, msg(b'H', b"")),
        (Dir::Server, msg(b'1', b"")),
        (Dir::Server, msg(b'2', b"")),
        (Dir::Server, data_row(b"1")),
        (Dir::Server, msg(b's', b"")),
    ]);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].outcome, Outcome::Suspended);
    assert_eq!(records[0].rows_returned, 1);
    // Three row-limited Executes of one portal, none answered: one run.
    let records = replay(&[
        (Dir::Client, parse("", sql)),
        (Dir::Client, bind("", "", b"7")),
        (Dir::Client, execute("", 1)),
        (Dir::Client, execute("", 1)),
        (Dir::Client, execute("", 0)),
        (Dir::Client, msg(b'S', b"")),
    ]);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].outcome, Outcome::NoReply);
    assert_eq!(records[0].sql.as_deref(), Some(sql));
}

#[test]
fn a_failed_query_or_answered_function_call_cut_before_ready_is_one_record() {
    let records = replay(&[
        (Dir::Client, query("SELECT x")),
        (Dir::Server, error("42703")),
    ]);
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(matches!(records[0].outcome, Outcome::Failed { .. }));
    let records = replay(&[
        (Dir::Client, function_call(1598)),
        (Dir::Server, msg(b'V', b"\0\0\0\x011")),
    ]);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].outcome, Outcome::Completed);
}

/// Known limit: the session parses no SQL, so it cannot tell whether a
/// Query text holds more statements after the last result it saw. Cut
/// between that CommandComplete and ReadyForQuery, the Query gets a second
/// record (`NoReply`, `part` 1) for a statement that does not exist. The
/// events layer, which splits the text, can drop a record whose `part` is
/// past the text's last statement; until something does, this fails.
#[test]
#[ignore = "known limit: a NoReply record for a part past the text's end (see the comment)"]
fn a_query_cut_after_its_last_result_gives_no_extra_record() {
    let records = replay(&[
        (Dir::Client, query("DELETE FROM t")),
        (Dir::Server, complete("DELETE 3")),
    ]);
    assert_eq!(records.len(), 1, "{records:?}");
}
