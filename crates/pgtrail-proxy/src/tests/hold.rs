//! Results held until their events are recorded, and statements refused
//! while the trail is full: what the client sees, byte by byte.

use std::time::{Duration, UNIX_EPOCH};

use super::bind_complete;
use super::{
    bind, complete, data_row, error, execute, login_ok, parse, parse_complete, query, ready,
    row_description, startup_message, sync,
};
use crate::session::ABORT_QUERY;
use crate::{Login, Session, SessionConfig, REFUSED_SQLSTATE};

fn held() -> Session {
    let config = SessionConfig {
        hold: true,
        max_held: 1024,
        ..SessionConfig::default()
    };
    let mut session = Session::new(config, UNIX_EPOCH);
    let at = UNIX_EPOCH + Duration::from_millis(1);
    session
        .client_data(&startup_message(), at)
        .expect("startup");
    session.take_to_server();
    session.server_data(&login_ok(), at).expect("login");
    session
}

fn to_client(session: &mut Session) -> Vec<u8> {
    session
        .take_to_client()
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

fn client(session: &mut Session, bytes: &[u8]) -> Vec<u8> {
    session
        .client_data(bytes, UNIX_EPOCH)
        .expect("client bytes");
    session
        .take_to_server()
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

fn server(session: &mut Session, bytes: &[u8]) {
    session
        .server_data(bytes, UNIX_EPOCH)
        .expect("server bytes");
}

/// Logged in, the login's event recorded and its bytes out.
fn ready_session() -> Session {
    let mut session = held();
    let before = to_client(&mut session);
    assert!(
        !before.ends_with(&ready(b'I')),
        "the first ReadyForQuery waits for the connect event"
    );
    assert_eq!(session.take_login(), Some(Login::Connected));
    session.login_recorded();
    let after = to_client(&mut session);
    assert_eq!(after, ready(b'I'));
    session
}

#[test]
fn a_completion_waits_for_its_event_and_everything_after_it_too() {
    let mut s = ready_session();
    client(&mut s, &query("insert into t values (1)"));
    server(&mut s, &complete("INSERT 0 1"));
    assert!(to_client(&mut s).is_empty(), "CommandComplete held");
    server(&mut s, &ready(b'I'));
    assert!(to_client(&mut s).is_empty(), "what follows it held too");
    let record = s.next_record().expect("record at ReadyForQuery");
    assert_eq!(record.command_tag.as_deref(), Some("INSERT 0 1"));
    assert!(s.next_record().is_none());
    s.recorded(1);
    assert_eq!(
        to_client(&mut s),
        [complete("INSERT 0 1"), ready(b'I')].concat(),
        "released in order once recorded"
    );
    assert_eq!(s.held_bytes(), 0);
}

#[test]
fn rows_of_a_running_statement_are_not_held_for_ready_for_query() {
    let mut s = ready_session();
    client(&mut s, &query("select 1"));
    server(&mut s, &[row_description(), data_row(b"1")].concat());
    assert_eq!(
        to_client(&mut s),
        [row_description(), data_row(b"1")].concat(),
        "nothing completed yet: rows flow"
    );
    // A pipeline: the first Execute completes, the second's rows start.
    let batch = [
        parse("", "insert into t values (2)"),
        bind("", "", &[]),
        execute("", 0),
        parse("", "select x from t"),
        bind("", "", &[]),
        execute("", 0),
        sync(),
    ]
    .concat();
    server(&mut s, &[complete("SELECT 1"), ready(b'I')].concat());
    assert_eq!(s.next_record().map(|r| r.rows_returned), Some(1));
    s.recorded(1);
    to_client(&mut s);
    client(&mut s, &batch);
    server(
        &mut s,
        &[parse_complete(), bind_complete(), complete("INSERT 0 1")].concat(),
    );
    assert_eq!(
        to_client(&mut s),
        [parse_complete(), bind_complete()].concat()
    );
    assert!(s.next_record().is_none(), "waits for ReadyForQuery");
    server(
        &mut s,
        &[parse_complete(), bind_complete(), data_row(b"2")].concat(),
    );
    // The rows made the completed INSERT's record available at once
    // (without a transaction status), so they wait for its write only.
    let insert = s.next_record().expect("handed over early");
    assert_eq!(insert.command_tag.as_deref(), Some("INSERT 0 1"));
    assert_eq!(insert.transaction_status, None);
    assert!(to_client(&mut s).is_empty());
    s.recorded(1);
    assert_eq!(
        to_client(&mut s),
        [
            complete("INSERT 0 1"),
            parse_complete(),
            bind_complete(),
            data_row(b"2")
        ]
        .concat()
    );
    server(&mut s, &data_row(b"3"));
    assert_eq!(to_client(&mut s), data_row(b"3"), "later rows flow");
}

#[test]
fn held_bytes_past_the_limit_hand_the_records_over_early() {
    let mut s = ready_session();
    let mut batch = Vec::new();
    for _ in 0..200 {
        batch.extend([
            parse("", "insert into t values (3)"),
            bind("", "", &[]),
            execute("", 0),
        ]);
    }
    batch.push(sync());
    client(&mut s, &batch.concat());
    let mut handed = 0;
    for _ in 0..200 {
        server(
            &mut s,
            &[parse_complete(), bind_complete(), complete("INSERT 0 1")].concat(),
        );
        let mut new = 0;
        while s.next_record().is_some() {
            new += 1;
        }
        handed += new;
        s.recorded(new);
        to_client(&mut s);
        assert!(s.held_bytes() <= 1024 + 32, "bounded: {}", s.held_bytes());
    }
    assert!(
        handed >= 150,
        "records handed over before ReadyForQuery: {handed}"
    );
}

#[test]
fn a_failed_login_reaches_the_client_only_after_its_event() {
    let config = SessionConfig {
        hold: true,
        ..SessionConfig::default()
    };
    let mut s = Session::new(config, UNIX_EPOCH);
    client(&mut s, &startup_message());
    let refused = error("28P01", "password authentication failed for user \"alice\"");
    server(&mut s, &refused);
    assert!(to_client(&mut s).is_empty(), "held");
    assert!(matches!(s.take_login(), Some(Login::Failed(e)) if e.code() == "28P01"));
    s.login_recorded();
    assert_eq!(to_client(&mut s), refused);
}

fn error_code(bytes: &[u8]) -> Option<String> {
    let body = bytes.strip_prefix(b"E")?;
    let fields = &body[4..];
    let at = fields.windows(1).position(|w| w[0] == b'C')?;
    let rest = &fields[at + 1..];
    let end = rest.iter().position(|b| *b == 0)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// What the server answers to `ABORT_QUERY` in a session with `status`.
fn abort_reply(status: u8) -> Vec<u8> {
    let (code, after) = match status {
        b'I' => ("22P02", b'I'),
        b'T' => ("22P02", b'E'),
        _ => ("25P02", b'E'),
    };
    [
        error(code, "invalid input syntax for type integer"),
        ready(after),
    ]
    .concat()
}

#[test]
fn a_full_trail_refuses_a_new_query_in_protocol_and_the_server_only_sees_the_abort_query() {
    let mut s = ready_session();
    s.refuse_new(Some("pgtrail: the audit trail is full".into()));
    let sent = client(&mut s, &query("delete from payments"));
    assert_eq!(
        sent,
        query(ABORT_QUERY),
        "the refused statement never reaches the server: the abort query goes in its place"
    );
    assert!(
        to_client(&mut s).is_empty(),
        "answered when the server answers"
    );
    assert!(!s.wants_client_data(), "the client waits meanwhile");
    server(&mut s, &abort_reply(b'I'));
    let answer = to_client(&mut s);
    assert_eq!(error_code(&answer).as_deref(), Some(REFUSED_SQLSTATE));
    assert!(
        !String::from_utf8_lossy(&answer).contains("integer"),
        "the client sees the refusal, not the abort query's error"
    );
    assert!(
        answer.ends_with(&ready(b'I')),
        "then the server's ReadyForQuery"
    );
    assert!(s.next_record().is_none(), "nothing ran: no record");
    assert!(s.wants_client_data());
    // Room again: statements flow.
    s.refuse_new(None);
    assert_eq!(client(&mut s, &query("select 1")), query("select 1"));
}

#[test]
fn a_refusal_inside_a_transaction_block_leaves_it_failed_as_the_server_says() {
    let mut s = ready_session();
    client(&mut s, &query("begin"));
    server(&mut s, &[complete("BEGIN"), ready(b'T')].concat());
    assert!(s.next_record().is_some());
    s.recorded(1);
    to_client(&mut s);
    s.refuse_new(Some("full".into()));
    assert_eq!(
        client(&mut s, &query("insert into t values (1)")),
        query(ABORT_QUERY)
    );
    server(&mut s, &abort_reply(b'T'));
    let answer = to_client(&mut s);
    assert_eq!(error_code(&answer).as_deref(), Some(REFUSED_SQLSTATE));
    assert!(
        answer.ends_with(&ready(b'E')),
        "the transaction is failed, so a COMMIT can only roll it back"
    );
    assert_eq!(
        s.transaction_status(),
        Some(pgtrail_wire::backend::TransactionStatus::Failed)
    );
}

#[test]
fn a_refused_extended_batch_is_answered_at_its_sync_after_earlier_replies() {
    let mut s = ready_session();
    // A query forwarded before the trail filled, still running.
    client(&mut s, &query("update t set x = 1"));
    s.refuse_new(Some("pgtrail: the audit trail is full".into()));
    let batch = [
        parse("", "insert into t values (4)"),
        bind("", "", &[]),
        execute("", 0),
        sync(),
    ]
    .concat();
    assert_eq!(
        client(&mut s, &batch),
        query(ABORT_QUERY),
        "nothing of the batch forwarded, the abort query in its place"
    );
    assert!(
        to_client(&mut s).is_empty(),
        "answered after the update's replies"
    );
    assert!(!s.wants_client_data(), "the client waits meanwhile");
    server(&mut s, &[complete("UPDATE 1"), ready(b'T')].concat());
    assert!(s.next_record().is_some());
    s.recorded(1);
    assert!(!s.wants_client_data(), "the refusal is not answered yet");
    server(&mut s, &abort_reply(b'T'));
    let out = to_client(&mut s);
    let update = [complete("UPDATE 1"), ready(b'T')].concat();
    assert!(out.starts_with(&update), "the update's result first");
    let refusal = &out[update.len()..];
    assert_eq!(error_code(refusal).as_deref(), Some(REFUSED_SQLSTATE));
    assert!(
        refusal.ends_with(&ready(b'E')),
        "the server's status: the block failed"
    );
    assert!(s.wants_client_data());
}

#[test]
fn a_batch_already_started_runs_to_its_sync_when_the_trail_fills() {
    let mut s = ready_session();
    assert_eq!(
        client(&mut s, &parse("", "select 1")),
        parse("", "select 1")
    );
    s.refuse_new(Some("full".into()));
    let rest = [bind("", "", &[]), execute("", 0), sync()].concat();
    assert_eq!(
        client(&mut s, &rest),
        rest,
        "the batch's statement already began"
    );
    // The next one is refused: the abort query goes in its place.
    assert_eq!(client(&mut s, &query("select 2")), query(ABORT_QUERY));
}
