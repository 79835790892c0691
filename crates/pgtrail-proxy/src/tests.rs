//! The session driven with byte fixtures, one conversation per protocol
//! case of "Message Flow", and a seeded fuzz over both sides.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use pgtrail_wire::backend::TransactionStatus;
use pgtrail_wire::frontend::{encode_startup, PROTOCOL_VERSION_3_2};

use crate::{
    Outcome, Phase, Protocol, Session, SessionConfig, SessionError, StatementRecord, Step,
};

/// A message: tag, length, body.
pub(crate) fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(i32::try_from(body.len() + 4).expect("small")).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.push(0);
}

// Client messages.
pub(crate) fn query(sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, sql);
    msg(b'Q', &b)
}
pub(crate) fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name);
    cstr(&mut b, sql);
    b.extend_from_slice(&0i16.to_be_bytes());
    msg(b'P', &b)
}
pub(crate) fn bind(portal: &str, statement: &str, params: &[Option<&[u8]>]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal);
    cstr(&mut b, statement);
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        match p {
            Some(v) => {
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend_from_slice(v);
            }
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    b.extend_from_slice(&0i16.to_be_bytes());
    msg(b'B', &b)
}
pub(crate) fn describe(target: u8, name: &str) -> Vec<u8> {
    let mut b = vec![target];
    cstr(&mut b, name);
    msg(b'D', &b)
}
pub(crate) fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal);
    b.extend_from_slice(&max_rows.to_be_bytes());
    msg(b'E', &b)
}
pub(crate) fn close(target: u8, name: &str) -> Vec<u8> {
    let mut b = vec![target];
    cstr(&mut b, name);
    msg(b'C', &b)
}
pub(crate) fn sync() -> Vec<u8> {
    msg(b'S', b"")
}
pub(crate) fn flush() -> Vec<u8> {
    msg(b'H', b"")
}
pub(crate) fn copy_data(data: &[u8]) -> Vec<u8> {
    msg(b'd', data)
}
pub(crate) fn copy_done() -> Vec<u8> {
    msg(b'c', b"")
}
fn function_call(oid: u32, arg: &[u8]) -> Vec<u8> {
    let mut b = oid.to_be_bytes().to_vec();
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&1i16.to_be_bytes());
    b.extend_from_slice(&(arg.len() as i32).to_be_bytes());
    b.extend_from_slice(arg);
    b.extend_from_slice(&0i16.to_be_bytes());
    msg(b'F', &b)
}

// Server messages.
pub(crate) fn parse_complete() -> Vec<u8> {
    msg(b'1', b"")
}
pub(crate) fn bind_complete() -> Vec<u8> {
    msg(b'2', b"")
}
pub(crate) fn close_complete() -> Vec<u8> {
    msg(b'3', b"")
}
pub(crate) fn no_data() -> Vec<u8> {
    msg(b'n', b"")
}
pub(crate) fn row_description() -> Vec<u8> {
    let mut b = 1i16.to_be_bytes().to_vec();
    cstr(&mut b, "x");
    b.extend_from_slice(&[
        0, 0, 0, 0, 0, 0, 0, 0, 0, 23, 0, 4, 255, 255, 255, 255, 0, 0,
    ]);
    msg(b'T', &b)
}
pub(crate) fn data_row(value: &[u8]) -> Vec<u8> {
    let mut b = 1i16.to_be_bytes().to_vec();
    b.extend_from_slice(&(value.len() as i32).to_be_bytes());
    b.extend_from_slice(value);
    msg(b'D', &b)
}
pub(crate) fn complete(tag: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, tag);
    msg(b'C', &b)
}
pub(crate) fn ready(status: u8) -> Vec<u8> {
    msg(b'Z', &[status])
}
pub(crate) fn error(code: &str, message: &str) -> Vec<u8> {
    let mut b = Vec::new();
    for (field, value) in [
        (b'S', "ERROR"),
        (b'V', "ERROR"),
        (b'C', code),
        (b'M', message),
    ] {
        b.push(field);
        cstr(&mut b, value);
    }
    b.push(0);
    msg(b'E', &b)
}
pub(crate) fn notice(message: &str) -> Vec<u8> {
    let mut b = b"SNOTICE\0M".to_vec();
    cstr(&mut b, message);
    b.push(0);
    msg(b'N', &b)
}
fn portal_suspended() -> Vec<u8> {
    msg(b's', b"")
}
fn copy_response(tag: u8) -> Vec<u8> {
    msg(tag, &[0, 0, 1, 0, 0])
}
fn parameter_status(name: &str, value: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name);
    cstr(&mut b, value);
    msg(b'S', &b)
}
fn notification(channel: &str, payload: &str) -> Vec<u8> {
    let mut b = 99i32.to_be_bytes().to_vec();
    cstr(&mut b, channel);
    cstr(&mut b, payload);
    msg(b'A', &b)
}

pub(crate) fn startup_message() -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode_startup(
        &mut buf,
        &[
            ("user", "alice"),
            ("database", "shop"),
            ("application_name", "billing"),
            ("options", "-c pgtrail.user=bob"),
        ],
    );
    buf.to_vec()
}

/// What the server sends after a successful login: AuthenticationOk,
/// a parameter, BackendKeyData (pid 4242), ReadyForQuery.
pub(crate) fn login_ok() -> Vec<u8> {
    [
        msg(b'R', &0i32.to_be_bytes()),
        parameter_status("server_version", "15.18"),
        msg(b'K', &[0, 0, 0x10, 0x92, 1, 2, 3, 4]),
        ready(b'I'),
    ]
    .concat()
}

/// A session and a clock; every step checks that bytes pass through unchanged.
struct Conv {
    session: Session,
    clock: u64,
}

impl Conv {
    fn new() -> Self {
        Conv {
            session: Session::new(SessionConfig::default(), UNIX_EPOCH),
            clock: 0,
        }
    }

    /// Logged in and ready.
    fn ready() -> Self {
        let mut conv = Conv::new();
        conv.client(&startup_message());
        conv.server(&login_ok());
        assert_eq!(conv.session.phase(), &Phase::Ready);
        conv
    }

    fn now(&mut self) -> SystemTime {
        self.clock += 1;
        UNIX_EPOCH + Duration::from_millis(self.clock)
    }

    fn client(&mut self, bytes: &[u8]) {
        let now = self.now();
        self.session
            .client_data(bytes, now)
            .expect("valid client bytes");
        let sent = self.session.take_to_server().unwrap_or_default();
        assert_eq!(&sent[..], bytes, "forwarded to the server unchanged");
    }

    fn server(&mut self, bytes: &[u8]) {
        let now = self.now();
        self.session
            .server_data(bytes, now)
            .expect("valid server bytes");
        let sent = self.session.take_to_client().unwrap_or_default();
        assert_eq!(&sent[..], bytes, "forwarded to the client unchanged");
    }

    fn records(&mut self) -> Vec<StatementRecord> {
        std::iter::from_fn(|| self.session.next_record()).collect()
    }
}

fn failed_code(record: &StatementRecord) -> Option<(Step, &str)> {
    match &record.outcome {
        Outcome::Failed { step, error } => Some((*step, error.code())),
        _ => None,
    }
}

#[test]
fn startup_answers_ssl_and_gssenc_and_learns_the_login() {
    let mut session = Session::new(SessionConfig::default(), UNIX_EPOCH);
    // GSSENCRequest, then SSLRequest: both refused with 'N', nothing forwarded.
    let gss = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
    let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    session.client_data(&gss, UNIX_EPOCH).expect("valid");
    assert_eq!(session.take_to_client().as_deref(), Some(&b"N"[..]));
    session.client_data(&ssl, UNIX_EPOCH).expect("valid");
    assert_eq!(session.take_to_client().as_deref(), Some(&b"N"[..]));
    assert_eq!(session.take_to_server(), None);
    let mut conv = Conv { session, clock: 0 };
    conv.client(&startup_message());
    let startup = conv.session.startup().expect("learnt").clone();
    assert_eq!(startup.user(), Some("alice"));
    assert_eq!(startup.database(), Some("shop"));
    assert_eq!(startup.application_name(), Some("billing"));
    assert_eq!(startup.options(), Some("-c pgtrail.user=bob"));
    // SCRAM passes through untouched, both ways.
    conv.server(&msg(b'R', b"\0\0\0\x0aSCRAM-SHA-256\0\0"));
    conv.client(&msg(
        b'p',
        b"SCRAM-SHA-256\0\0\0\0\x20n,,n=,r=abcdefghijklmnopqrstuvwx",
    ));
    conv.server(&msg(b'R', b"\0\0\0\x0br=abc,s=c2FsdA==,i=4096"));
    conv.client(&msg(b'p', b"c=biws,r=abc,p=proof"));
    conv.server(&msg(b'R', b"\0\0\0\x0cv=sig"));
    assert_eq!(conv.session.phase(), &Phase::Authenticating);
    conv.server(&login_ok());
    assert_eq!(conv.session.phase(), &Phase::Ready);
    let key = conv.session.backend_key().expect("BackendKeyData");
    assert_eq!((key.pid, &key.secret[..]), (4242, &[1u8, 2, 3, 4][..]));
    assert_eq!(conv.session.parameter("server_version"), Some("15.18"));
}

#[test]
fn protocol_3_2_keys_and_failed_logins() {
    let mut conv = Conv::new();
    let mut startup = BytesMut::new();
    startup.put_i32(8 + 5 + 6 + 1);
    startup.put_i32(PROTOCOL_VERSION_3_2);
    startup.put_slice(b"user\0carol\0\0");
    conv.client(&startup);
    let mut key = vec![0, 0, 0, 7];
    key.extend_from_slice(&[9u8; 32]);
    conv.server(&msg(b'K', &key));
    assert_eq!(conv.session.backend_key().map(|k| k.secret.len()), Some(32));

    let mut conv = Conv::new();
    conv.client(&startup_message());
    conv.server(&msg(b'R', &[0, 0, 0, 5, 1, 2, 3, 4]));
    conv.client(&msg(b'p', b"md5abc\0"));
    let mut fatal = Vec::new();
    for (field, value) in [
        (b'S', "FATAL"),
        (b'C', "28P01"),
        (b'M', "password authentication failed"),
    ] {
        fatal.push(field);
        cstr(&mut fatal, value);
    }
    fatal.push(0);
    conv.server(&msg(b'E', &fatal));
    assert_eq!(conv.session.login_error().map(|e| e.code()), Some("28P01"));
}

#[test]
fn cancel_requests_expose_the_key_and_forward_nothing() {
    let mut session = Session::new(SessionConfig::default(), UNIX_EPOCH);
    let mut cancel = BytesMut::new();
    cancel.put_i32(16 + 28);
    cancel.put_i32(80_877_102);
    cancel.put_i32(4242);
    cancel.put_slice(&[7u8; 32]);
    session.client_data(&cancel, UNIX_EPOCH).expect("valid");
    let Phase::Cancel(key) = session.phase() else {
        panic!("expected a cancel, got {:?}", session.phase());
    };
    assert_eq!((key.pid, key.secret.len()), (4242, 32));
    assert_eq!(session.take_to_server(), None);
    assert_eq!(session.take_to_client(), None);
}

#[test]
fn bad_openings_end_the_session() {
    let mut session = Session::new(SessionConfig::default(), UNIX_EPOCH);
    let hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01];
    assert!(matches!(
        session.client_data(&hello, UNIX_EPOCH),
        Err(SessionError::DirectTls)
    ));
    let mut session = Session::new(SessionConfig::default(), UNIX_EPOCH);
    let v2 = [0, 0, 0, 9, 0, 2, 0, 0, 0];
    assert!(matches!(
        session.client_data(&v2, UNIX_EPOCH),
        Err(SessionError::UnsupportedProtocol { major: 2, minor: 0 })
    ));
    let mut session = Session::new(SessionConfig::default(), UNIX_EPOCH);
    let huge = 20_000i32.to_be_bytes();
    assert!(matches!(
        session.client_data(&huge, UNIX_EPOCH),
        Err(SessionError::Malformed { .. })
    ));
}

#[test]
fn simple_query_with_several_statements() {
    let mut conv = Conv::ready();
    let sql = "SELECT 1; INSERT INTO t VALUES (1), (2); BEGIN";
    conv.client(&query(sql));
    conv.server(&[row_description(), data_row(b"1"), complete("SELECT 1")].concat());
    conv.server(&notice("a notice between results"));
    conv.server(&[complete("INSERT 0 2"), complete("BEGIN")].concat());
    assert!(conv.records().is_empty(), "held for the transaction status");
    conv.server(&ready(b'T'));
    let records = conv.records();
    assert_eq!(records.len(), 3);
    let parts: Vec<_> = records.iter().map(|r| r.protocol).collect();
    assert_eq!(
        parts,
        [0, 1, 2].map(|part| Protocol::Simple { part }).to_vec()
    );
    assert_eq!(records[0].command_tag.as_deref(), Some("SELECT 1"));
    assert_eq!((records[0].rows, records[0].rows_returned), (Some(1), 1));
    assert_eq!(records[1].rows, Some(2));
    assert_eq!(records[2].command_tag.as_deref(), Some("BEGIN"));
    assert!(records.iter().all(|r| r.sql.as_deref() == Some(sql)));
    assert!(records
        .iter()
        .all(|r| r.transaction_status == Some(TransactionStatus::InTransaction)));
    assert!(records.iter().all(|r| r.backend_pid == Some(4242)));
    assert!(records[0].started_at < records[0].finished_at);
    assert_eq!(
        records[1].started_at, records[0].finished_at,
        "runs after the previous one"
    );
}

#[test]
fn simple_query_error_stops_the_text() {
    let mut conv = Conv::ready();
    conv.client(&query(
        "INSERT INTO t VALUES (1); INSERT INTO nope VALUES (1); SELECT 2",
    ));
    conv.server(&complete("INSERT 0 1"));
    conv.server(&error("42P01", "relation \"nope\" does not exist"));
    conv.server(&ready(b'I'));
    let records = conv.records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].outcome, Outcome::Completed);
    assert_eq!(failed_code(&records[1]), Some((Step::Query, "42P01")));
    assert_eq!(records[1].protocol, Protocol::Simple { part: 1 });
    assert_eq!(records[1].transaction_status, Some(TransactionStatus::Idle));
    // An empty query records nothing.
    conv.client(&query(""));
    conv.server(&[msg(b'I', b""), ready(b'I')].concat());
    assert!(conv.records().is_empty());
}

#[test]
fn extended_pipeline_records_each_execute_with_its_parameters() {
    let mut conv = Conv::ready();
    conv.client(&parse("", "INSERT INTO t VALUES ($1)"));
    // Forwarded at once, not held until Sync (checked by `client`).
    conv.client(&[bind("", "", &[Some(b"1")]), execute("", 0)].concat());
    conv.client(&[bind("", "", &[None]), execute("", 0), sync()].concat());
    conv.server(&[parse_complete(), bind_complete(), complete("INSERT 0 1")].concat());
    conv.server(&[bind_complete(), complete("INSERT 0 1"), ready(b'I')].concat());
    let records = conv.records();
    assert_eq!(records.len(), 2);
    for record in &records {
        assert_eq!(record.protocol, Protocol::Extended);
        assert_eq!(record.sql.as_deref(), Some("INSERT INTO t VALUES ($1)"));
        assert_eq!(
            (record.statement.as_deref(), record.portal.as_deref()),
            (Some(""), Some(""))
        );
        assert_eq!(record.rows, Some(1));
        assert_eq!(record.outcome, Outcome::Completed);
    }
    assert_eq!(
        records[0].params.values,
        vec![Some(Bytes::from_static(b"1"))]
    );
    assert_eq!(records[1].params.values, vec![None]);
}

#[test]
fn error_mid_pipeline_skips_to_sync() {
    let mut conv = Conv::ready();
    conv.client(
        &[
            parse("ok", "SELECT 1"),
            bind("", "ok", &[]),
            execute("", 0),
            parse("bad", "SELEC 2"),
            bind("", "bad", &[]),
            execute("", 0),
            bind("", "ok", &[]),
            execute("", 0),
            sync(),
        ]
        .concat(),
    );
    conv.server(
        &[
            parse_complete(),
            bind_complete(),
            data_row(b"1"),
            complete("SELECT 1"),
        ]
        .concat(),
    );
    conv.server(&error("42601", "syntax error at or near \"SELEC\""));
    conv.server(&ready(b'I'));
    let records = conv.records();
    assert_eq!(records.len(), 3, "{records:#?}");
    assert_eq!(records[0].outcome, Outcome::Completed);
    // The failed Parse is the failure of the statement it stopped.
    assert_eq!(failed_code(&records[1]), Some((Step::Parse, "42601")));
    assert_eq!(records[1].sql.as_deref(), Some("SELEC 2"));
    // The rest did not run (the server discarded it until Sync).
    assert_eq!(records[2].outcome, Outcome::NotRun);
    assert_eq!(records[2].sql.as_deref(), Some("SELECT 1"));
    // After Sync the session goes on normally.
    conv.client(&[bind("", "ok", &[]), execute("", 0), sync()].concat());
    conv.server(
        &[
            bind_complete(),
            data_row(b"1"),
            complete("SELECT 1"),
            ready(b'I'),
        ]
        .concat(),
    );
    assert_eq!(conv.records()[0].outcome, Outcome::Completed);
}

#[test]
fn error_before_the_sync_arrives_discards_what_follows() {
    let mut conv = Conv::ready();
    conv.client(
        &[
            parse("", "SELECT 1/0"),
            bind("", "", &[]),
            execute("", 0),
            flush(),
        ]
        .concat(),
    );
    conv.server(
        &[
            parse_complete(),
            bind_complete(),
            error("22012", "division by zero"),
        ]
        .concat(),
    );
    // Sent after the error, before Sync: discarded by the server.
    conv.client(&[bind("", "", &[]), execute("", 0), sync()].concat());
    conv.server(&ready(b'I'));
    let records = conv.records();
    assert_eq!(records.len(), 2);
    assert_eq!(failed_code(&records[0]), Some((Step::Execute, "22012")));
    assert_eq!(records[1].outcome, Outcome::NotRun);
    // A failed Parse with no Execute behind it is recorded on its own.
    conv.client(&[parse("s", "SELEC"), describe(b'S', "s"), sync()].concat());
    conv.server(&[error("42601", "syntax error"), ready(b'I')].concat());
    let records = conv.records();
    assert_eq!(records.len(), 1);
    assert_eq!(failed_code(&records[0]), Some((Step::Parse, "42601")));
    assert_eq!(records[0].statement.as_deref(), Some("s"));
}

#[test]
fn flush_without_sync_gets_replies_and_no_ready_for_query() {
    let mut conv = Conv::ready();
    conv.client(&[parse("s1", "SELECT $1"), describe(b'S', "s1"), flush()].concat());
    conv.server(
        &[
            parse_complete(),
            msg(b't', &[0, 1, 0, 0, 0, 23]),
            row_description(),
        ]
        .concat(),
    );
    conv.client(&[bind("p", "s1", &[Some(b"5")]), execute("p", 0), flush()].concat());
    conv.server(&[bind_complete(), data_row(b"5"), complete("SELECT 1")].concat());
    conv.client(&sync());
    conv.server(&ready(b'I'));
    let records = conv.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].statement.as_deref(), Some("s1"));
    assert_eq!(records[0].portal.as_deref(), Some("p"));
    assert_eq!(records[0].sql.as_deref(), Some("SELECT $1"));
}

#[test]
fn a_statement_name_counts_only_after_parse_complete() {
    let mut conv = Conv::ready();
    conv.client(&[parse("s", "SELECT 'old'"), sync()].concat());
    conv.server(&[parse_complete(), ready(b'I')].concat());
    // Re-preparing an existing name fails (42P05): the old text stays.
    conv.client(&[parse("s", "SELECT 'new'"), sync()].concat());
    conv.server(
        &[
            error("42P05", "prepared statement \"s\" already exists"),
            ready(b'I'),
        ]
        .concat(),
    );
    conv.client(&[bind("", "s", &[]), execute("", 0), sync()].concat());
    conv.server(
        &[
            bind_complete(),
            data_row(b"old"),
            complete("SELECT 1"),
            ready(b'I'),
        ]
        .concat(),
    );
    let records = conv.records();
    assert_eq!(records.len(), 2);
    assert_eq!(failed_code(&records[0]), Some((Step::Parse, "42P05")));
    assert_eq!(records[1].sql.as_deref(), Some("SELECT 'old'"));
    // Close, then DEALLOCATE and DISCARD ALL in SQL, forget names.
    conv.client(&[close(b'S', "s"), sync()].concat());
    conv.server(&[close_complete(), ready(b'I')].concat());
    conv.client(&[bind("", "s", &[]), execute("", 0), sync()].concat());
    conv.server(
        &[
            error("26000", "prepared statement \"s\" does not exist"),
            ready(b'I'),
        ]
        .concat(),
    );
    let records = conv.records();
    assert_eq!(failed_code(&records[0]), Some((Step::Bind, "26000")));
    assert_eq!(records[0].sql, None, "no statement by that name any more");
    conv.client(&query("PREPARE q AS SELECT 42"));
    conv.server(&[complete("PREPARE"), ready(b'I')].concat());
    conv.client(&[bind("", "q", &[]), execute("", 0), sync()].concat());
    conv.server(
        &[
            bind_complete(),
            data_row(b"42"),
            complete("SELECT 1"),
            ready(b'I'),
        ]
        .concat(),
    );
    assert_eq!(
        conv.records()[1].sql.as_deref(),
        Some("PREPARE q AS SELECT 42")
    );
    conv.client(&query("DISCARD ALL"));
    conv.server(&[complete("DISCARD ALL"), ready(b'I')].concat());
    conv.client(&[bind("", "q", &[]), execute("", 0), sync()].concat());
    conv.server(&[error("26000", "gone"), ready(b'I')].concat());
    assert_eq!(conv.records()[1].sql, None);
}

#[test]
fn row_limited_executes_make_one_record() {
    let mut conv = Conv::ready();
    conv.client(&query("BEGIN"));
    conv.server(&[complete("BEGIN"), ready(b'T')].concat());
    conv.records();
    conv.client(
        &[
            parse("", "SELECT * FROM t"),
            bind("c", "", &[]),
            execute("c", 2),
            sync(),
        ]
        .concat(),
    );
    conv.server(
        &[
            parse_complete(),
            bind_complete(),
            data_row(b"1"),
            data_row(b"2"),
            portal_suspended(),
            ready(b'T'),
        ]
        .concat(),
    );
    assert!(conv.records().is_empty(), "not complete yet");
    conv.client(&[execute("c", 2), sync()].concat());
    conv.server(&[data_row(b"3"), complete("SELECT 1"), ready(b'T')].concat());
    let records = conv.records();
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].rows_returned, records[0].executions), (3, 2));
    // The last Execute's tag counts its own row; the statement returned 3.
    assert_eq!(records[0].rows, Some(3));
    assert_eq!(records[0].outcome, Outcome::Completed);
    // Suspended, then closed: recorded as suspended.
    conv.client(
        &[
            bind("d", "", &[]),
            execute("d", 1),
            close(b'P', "d"),
            sync(),
        ]
        .concat(),
    );
    conv.server(
        &[
            bind_complete(),
            data_row(b"1"),
            portal_suspended(),
            close_complete(),
            ready(b'T'),
        ]
        .concat(),
    );
    let records = conv.records();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].outcome.clone(), records[0].rows_returned),
        (Outcome::Suspended, 1)
    );
    // Suspended, then the transaction ends: suspended too.
    conv.client(&[bind("e", "", &[]), execute("e", 1), sync()].concat());
    conv.server(
        &[
            bind_complete(),
            data_row(b"1"),
            portal_suspended(),
            ready(b'T'),
        ]
        .concat(),
    );
    conv.client(&query("COMMIT"));
    conv.server(&[complete("COMMIT"), ready(b'I')].concat());
    let records = conv.records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].command_tag.as_deref(), Some("COMMIT"));
    assert_eq!(records[1].outcome, Outcome::Suspended);
}

#[test]
fn copy_from_stdin_in_both_protocols() {
    let mut conv = Conv::ready();
    conv.client(&query("COPY t FROM STDIN"));
    conv.server(&copy_response(b'G'));
    conv.client(&[copy_data(b"1\n"), copy_data(b"22\n"), copy_done()].concat());
    conv.server(&[complete("COPY 2"), ready(b'I')].concat());
    let records = conv.records();
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].rows, records[0].copy_bytes), (Some(2), 5));

    // tokio-postgres: Bind/Execute/Sync, data, CopyDone, Sync. The first
    // Sync reaches the server during the COPY and is ignored.
    conv.client(
        &[
            parse("", "COPY t FROM STDIN"),
            bind("", "", &[]),
            execute("", 0),
            sync(),
        ]
        .concat(),
    );
    conv.server(&[parse_complete(), bind_complete(), copy_response(b'G')].concat());
    conv.client(&[copy_data(b"3\n"), copy_done(), sync()].concat());
    conv.server(&[complete("COPY 1"), ready(b'I')].concat());
    let records = conv.records();
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].rows, records[0].copy_bytes), (Some(1), 2));

    // A failing COPY (bad data) in the extended protocol.
    conv.client(&[bind("", "", &[]), execute("", 0), sync()].concat());
    conv.server(&[bind_complete(), copy_response(b'G')].concat());
    conv.client(&copy_data(b"oops\n"));
    conv.server(&error("22P02", "invalid input syntax for type integer"));
    conv.client(&[copy_done(), sync()].concat());
    conv.server(&ready(b'I'));
    let records = conv.records();
    assert_eq!(records.len(), 1);
    assert_eq!(failed_code(&records[0]), Some((Step::Execute, "22P02")));
}

#[test]
fn copy_data_sent_before_copy_in_response_counts() {
    // Simple protocol: the client sends the COPY and its data in one go.
    let mut conv = Conv::ready();
    conv.client(
        &[
            query("COPY t FROM STDIN"),
            copy_data(b"1\n"),
            copy_data(b"22\n"),
            copy_done(),
            query("SELECT 1"),
        ]
        .concat(),
    );
    conv.server(&[copy_response(b'G'), complete("COPY 2"), ready(b'I')].concat());
    conv.server(
        &[
            row_description(),
            data_row(b"1"),
            complete("SELECT 1"),
            ready(b'I'),
        ]
        .concat(),
    );
    let records = conv.records();
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!((records[0].rows, records[0].copy_bytes), (Some(2), 5));
    assert_eq!(records[1].sql.as_deref(), Some("SELECT 1"));

    // Extended protocol, all at once: the Sync sent with the Execute is
    // ignored by the server during the COPY, the one after CopyDone is not.
    conv.client(
        &[
            parse("", "COPY t FROM STDIN"),
            bind("", "", &[]),
            execute("", 0),
            sync(),
            copy_data(b"3\n"),
            copy_done(),
            sync(),
            parse("", "SELECT 2"),
            bind("", "", &[]),
            execute("", 0),
            sync(),
        ]
        .concat(),
    );
    conv.server(&[parse_complete(), bind_complete(), copy_response(b'G')].concat());
    conv.server(&[complete("COPY 1"), ready(b'I')].concat());
    conv.server(
        &[
            parse_complete(),
            bind_complete(),
            data_row(b"2"),
            complete("SELECT 1"),
            ready(b'I'),
        ]
        .concat(),
    );
    let records = conv.records();
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!((records[0].rows, records[0].copy_bytes), (Some(1), 2));
    assert_eq!(records[1].sql.as_deref(), Some("SELECT 2"));
    assert_eq!(conv.session.pending_replies(), 0);

    // Data after a statement that is no COPY: the server ignores it, and
    // so does the queue.
    conv.client(
        &[
            query("SELECT 3"),
            copy_data(b"junk"),
            copy_done(),
            query("SELECT 4"),
        ]
        .concat(),
    );
    conv.server(
        &[
            row_description(),
            data_row(b"3"),
            complete("SELECT 1"),
            ready(b'I'),
        ]
        .concat(),
    );
    conv.server(
        &[
            row_description(),
            data_row(b"4"),
            complete("SELECT 1"),
            ready(b'I'),
        ]
        .concat(),
    );
    let records = conv.records();
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[1].sql.as_deref(), Some("SELECT 4"));
    assert_eq!(records[1].copy_bytes, 0);
}

#[test]
fn copy_to_stdout_counts_bytes() {
    let mut conv = Conv::ready();
    conv.client(&query("COPY t TO STDOUT"));
    conv.server(
        &[
            copy_response(b'H'),
            copy_data(b"1\n"),
            copy_data(b"2\n"),
            copy_done(),
        ]
        .concat(),
    );
    conv.server(&[complete("COPY 2"), ready(b'I')].concat());
    let records = conv.records();
    assert_eq!((records[0].rows, records[0].copy_bytes), (Some(2), 4));
}

#[test]
fn function_calls_are_recorded() {
    let mut conv = Conv::ready();
    conv.client(&function_call(1598, b"\0\0\0\x01"));
    conv.server(&[msg(b'V', b"\0\0\0\x01x"), ready(b'I')].concat());
    conv.client(&function_call(1598, b"x"));
    conv.server(&[error("42883", "function does not exist"), ready(b'I')].concat());
    let records = conv.records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].protocol, Protocol::FunctionCall { oid: 1598 });
    assert_eq!(records[0].outcome, Outcome::Completed);
    assert_eq!(
        failed_code(&records[1]),
        Some((Step::FunctionCall, "42883"))
    );
}

#[test]
fn asynchronous_messages_come_at_any_time() {
    let mut conv = Conv::ready();
    conv.server(&notification("jobs", "1"));
    conv.server(&parameter_status("application_name", "renamed"));
    assert_eq!(conv.session.parameter("application_name"), Some("renamed"));
    conv.client(
        &[
            parse("", "SELECT 1"),
            bind("", "", &[]),
            execute("", 0),
            sync(),
        ]
        .concat(),
    );
    conv.server(
        &[
            parse_complete(),
            notice("n"),
            notification("jobs", "2"),
            bind_complete(),
        ]
        .concat(),
    );
    conv.server(
        &[
            data_row(b"1"),
            parameter_status("TimeZone", "UTC"),
            complete("SELECT 1"),
        ]
        .concat(),
    );
    conv.server(&[notification("jobs", "3"), ready(b'I')].concat());
    assert_eq!(conv.records().len(), 1);
    // An unasked FATAL (e.g. an administrator's shutdown) is forwarded.
    conv.server(&error(
        "57P01",
        "terminating connection due to administrator command",
    ));
}

#[test]
fn statements_without_a_reply_are_recorded_at_close() {
    let mut conv = Conv::ready();
    conv.client(&query("SELECT pg_sleep(10)"));
    conv.client(
        &[
            parse("", "SELECT 2"),
            bind("", "", &[]),
            execute("", 0),
            sync(),
        ]
        .concat(),
    );
    let now = conv.now();
    conv.session.close(now);
    let records = conv.records();
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.outcome == Outcome::NoReply));
    // The Parse was never answered, but if the Execute ran at all it ran
    // this text (a failed Parse would have stopped it): the record says so.
    assert_eq!(records[1].sql.as_deref(), Some("SELECT 2"));
}

#[test]
fn out_of_step_and_malformed_server_messages_end_the_session() {
    let mut conv = Conv::ready();
    let now = conv.now();
    let err = conv
        .session
        .server_data(&parse_complete(), now)
        .expect_err("nothing asked");
    assert!(matches!(err, SessionError::OutOfStep { .. }), "{err}");
    let mut conv = Conv::ready();
    conv.client(&[parse("", "SELECT 1"), sync()].concat());
    let now = conv.now();
    let err = conv
        .session
        .server_data(&bind_complete(), now)
        .expect_err("wrong reply");
    assert!(err.to_string().contains("while waiting on Parse"), "{err}");
    let mut conv = Conv::ready();
    conv.client(&query("SELECT 1"));
    let now = conv.now();
    let err = conv
        .session
        .server_data(&msg(b'C', b"SELECT 1"), now)
        .expect_err("no NUL");
    assert!(matches!(err, SessionError::Malformed { .. }), "{err}");
}

#[test]
fn oversized_frames_are_refused_from_the_header() {
    let config = SessionConfig {
        max_frame: 100,
        ..SessionConfig::default()
    };
    let mut session = Session::new(config, UNIX_EPOCH);
    session
        .client_data(&startup_message(), UNIX_EPOCH)
        .expect("valid");
    session.server_data(&login_ok(), UNIX_EPOCH).expect("valid");
    let header = [b'Q', 0, 0, 1, 0];
    assert!(matches!(
        session.client_data(&header, UNIX_EPOCH),
        Err(SessionError::Malformed { .. })
    ));
}

#[test]
fn bytes_arriving_one_at_a_time_are_forwarded_by_whole_frames() {
    let mut conv = Conv::ready();
    let input = [query("SELECT 1"), parse("", "SELECT 2"), sync()].concat();
    let mut forwarded = Vec::new();
    for (i, byte) in input.iter().enumerate() {
        let now = conv.now();
        conv.session.client_data(&[*byte], now).expect("valid");
        if let Some(bytes) = conv.session.take_to_server() {
            forwarded.extend_from_slice(&bytes);
            // Only whole frames, at the exact moment each completes.
            assert!(input[..=i].ends_with(&bytes));
        }
    }
    assert_eq!(forwarded, input);
}

mod fuzz;
mod hold;
mod startup_tls;
