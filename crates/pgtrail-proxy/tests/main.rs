//! The proxy against a real throwaway cluster, with tokio-postgres as the
//! client: each test runs the same work directly and through the proxy,
//! checks the client sees the same results, and checks the records.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt, TryStreamExt};
use pgtrail_proxy::{serve, Outcome, Protocol, Recorded, Upstream};
use pgtrail_testkit::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls, SimpleQueryMessage};

/// A cluster, a proxy in front of it, and the records it sends.
struct Setup {
    cluster: Cluster,
    proxy_port: u16,
    records: mpsc::Receiver<Recorded>,
}

async fn setup() -> Setup {
    let cluster = Cluster::start().expect("cluster");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let proxy_port = listener.local_addr().expect("addr").port();
    let upstream =
        Upstream::parse(&format!("{}?sslmode=disable", cluster.url("postgres"))).expect("url");
    let (sink, records) = mpsc::channel(16);
    tokio::spawn(serve(listener, upstream, sink));
    Setup {
        cluster,
        proxy_port,
        records,
    }
}

impl Setup {
    fn proxy_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.proxy_port)
    }

    async fn through_proxy(&self) -> Client {
        let (client, connection) = tokio_postgres::connect(&self.proxy_url(), NoTls)
            .await
            .expect("connect through the proxy");
        tokio::spawn(connection);
        client
    }

    async fn direct(&self) -> Client {
        self.cluster.connect("postgres").await.expect("direct")
    }

    /// The next `n` records (fails after 10 s).
    async fn records(&mut self, n: usize) -> Vec<Recorded> {
        let mut out = Vec::new();
        while out.len() < n {
            let next = tokio::time::timeout(Duration::from_secs(10), self.records.recv())
                .await
                .unwrap_or_else(|_| panic!("only {} of {n} records: {out:#?}", out.len()))
                .expect("the proxy runs");
            out.push(next);
        }
        out
    }

    /// No further record within a short while.
    async fn no_more_records(&mut self) {
        let next = tokio::time::timeout(Duration::from_millis(300), self.records.recv()).await;
        assert!(next.is_err(), "unexpected record {next:?}");
    }
}

fn simple_rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn sql(r: &Recorded) -> &str {
    r.record.sql.as_deref().unwrap_or("")
}

#[tokio::test]
async fn simple_extended_and_transactions_match_direct() {
    let mut s = setup().await;
    let direct = s.direct().await;
    direct
        .batch_execute("CREATE TABLE t (id int primary key, name text)")
        .await
        .expect("create");
    let proxied = s.through_proxy().await;

    let text = "SELECT 1 AS a, 'x' AS b; SELECT generate_series(1, 3)";
    let via = proxied.simple_query(text).await.expect("through");
    let dir = direct.simple_query(text).await.expect("direct");
    assert_eq!(simple_rows(&via), simple_rows(&dir));
    let records = s.records(2).await;
    assert_eq!(records[0].record.protocol, Protocol::Simple { part: 0 });
    assert_eq!(records[1].record.command_tag.as_deref(), Some("SELECT 3"));
    assert_eq!(records[1].record.rows_returned, 3);
    assert!(records.iter().all(|r| sql(r) == text));
    let session = &records[0].session;
    assert_eq!(session.user.as_deref(), Some("postgres"));
    assert_eq!(session.database.as_deref(), Some("postgres"));
    assert!(session.backend_pid.is_some());

    // Extended protocol: tokio-postgres prepares (Parse/Describe/Sync),
    // then binds and executes with typed parameters.
    let query = "SELECT $1::int + 1 AS n, $2::text AS s";
    let via = proxied
        .query_one(query, &[&41i32, &"hi"])
        .await
        .expect("through");
    let dir = direct
        .query_one(query, &[&41i32, &"hi"])
        .await
        .expect("direct");
    assert_eq!(
        (via.get::<_, i32>(0), via.get::<_, &str>(1)),
        (dir.get::<_, i32>(0), dir.get::<_, &str>(1))
    );
    let records = s.records(1).await;
    let record = &records[0].record;
    assert_eq!(
        (sql(&records[0]), record.protocol),
        (query, Protocol::Extended)
    );
    assert_eq!(record.params.values.len(), 2);
    assert_eq!(
        record.params.values[0].as_deref(),
        Some(&41i32.to_be_bytes()[..])
    );
    assert_eq!(record.params.format(0), 1, "tokio-postgres binds binary");
    assert_eq!(record.command_tag.as_deref(), Some("SELECT 1"));

    // A transaction, through the proxy; the status after each statement.
    let mut proxied = proxied;
    let tx = proxied.transaction().await.expect("begin");
    tx.execute("INSERT INTO t VALUES ($1, $2)", &[&1i32, &"one"])
        .await
        .expect("insert");
    tx.execute("UPDATE t SET name = upper(name)", &[])
        .await
        .expect("update");
    tx.commit().await.expect("commit");
    let records = s.records(4).await;
    let tags: Vec<_> = records
        .iter()
        .map(|r| r.record.command_tag.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        tags,
        ["START TRANSACTION", "INSERT 0 1", "UPDATE 1", "COMMIT"]
    );
    use pgtrail_wire::backend::TransactionStatus::{Idle, InTransaction};
    let statuses: Vec<_> = records
        .iter()
        .map(|r| r.record.transaction_status)
        .collect();
    assert_eq!(
        statuses,
        [
            Some(InTransaction),
            Some(InTransaction),
            Some(InTransaction),
            Some(Idle)
        ]
    );
    let row = direct
        .query_one("SELECT name FROM t WHERE id = 1", &[])
        .await
        .expect("row");
    assert_eq!(
        row.get::<_, &str>(0),
        "ONE",
        "the proxied transaction committed"
    );
}

#[tokio::test]
async fn a_pipeline_with_a_failure_in_the_middle() {
    let mut s = setup().await;
    let proxied = s.through_proxy().await;
    let direct = s.direct().await;
    for client in [&proxied, &direct] {
        // Polled together, tokio-postgres pipelines the three queries.
        let (a, b, c) = tokio::join!(
            client.query("SELECT 1::int", &[]),
            client.query("SELECT 1/0", &[]),
            client.query("SELECT 3::int", &[]),
        );
        assert_eq!(a.expect("first")[0].get::<_, i32>(0), 1);
        let error = b.expect_err("division by zero");
        assert_eq!(error.code().map(|c| c.code()), Some("22012"));
        assert_eq!(c.expect("third")[0].get::<_, i32>(0), 3);
    }
    let records = s.records(3).await;
    let mut by_sql: Vec<_> = records
        .iter()
        .map(|r| (sql(r).to_string(), r.record.sqlstate().map(str::to_string)))
        .collect();
    by_sql.sort();
    assert_eq!(
        by_sql,
        [
            ("SELECT 1/0".to_string(), Some("22012".to_string())),
            ("SELECT 1::int".to_string(), None),
            ("SELECT 3::int".to_string(), None),
        ]
    );
    let failed = records
        .iter()
        .find(|r| r.record.sqlstate().is_some())
        .expect("the failure");
    let Outcome::Failed { error, .. } = &failed.record.outcome else {
        panic!("not failed");
    };
    assert_eq!(error.message(), "division by zero");
    s.no_more_records().await;
}

#[tokio::test]
async fn failed_statements_carry_sqlstate_and_message() {
    let mut s = setup().await;
    let proxied = s.through_proxy().await;
    let error = proxied
        .batch_execute("INSERT INTO missing VALUES (1)")
        .await
        .expect_err("no table");
    assert_eq!(error.code().map(|c| c.code()), Some("42P01"));
    let records = s.records(1).await;
    assert_eq!(records[0].record.sqlstate(), Some("42P01"));
    assert_eq!(sql(&records[0]), "INSERT INTO missing VALUES (1)");
    // The session goes on.
    assert_eq!(
        proxied
            .query_one("SELECT 2", &[])
            .await
            .expect("ok")
            .get::<_, i32>(0),
        2
    );
}

#[tokio::test]
async fn copy_in_and_out() {
    let mut s = setup().await;
    let proxied = s.through_proxy().await;
    proxied
        .batch_execute("CREATE TABLE c (id int, note text)")
        .await
        .expect("create");
    s.records(1).await;
    let sink = proxied.copy_in("COPY c FROM STDIN").await.expect("copy in");
    futures_util::pin_mut!(sink);
    let data = "1\tone\n2\ttwo\n3\tthree\n";
    sink.send(bytes::Bytes::from_static(data.as_bytes()))
        .await
        .expect("send");
    let rows = sink.finish().await.expect("finish");
    assert_eq!(rows, 3);
    let records = s.records(1).await;
    assert_eq!(records[0].record.command_tag.as_deref(), Some("COPY 3"));
    assert_eq!(records[0].record.copy_bytes, data.len() as u64);

    let stream = proxied
        .copy_out("COPY c TO STDOUT")
        .await
        .expect("copy out");
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.expect("read");
    let out: Vec<u8> = chunks.concat();
    assert_eq!(String::from_utf8(out).expect("text"), data);
    let records = s.records(1).await;
    assert_eq!(records[0].record.rows, Some(3));
    assert_eq!(records[0].record.copy_bytes, data.len() as u64);

    // The session is in step afterwards.
    let n: i64 = proxied
        .query_one("SELECT count(*) FROM c", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 3);
}

#[tokio::test]
async fn listen_notify_reaches_the_client() {
    let s = setup().await;
    let (client, mut connection) = tokio_postgres::connect(&s.proxy_url(), NoTls)
        .await
        .expect("connect");
    let (tx, mut notes) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    client.batch_execute("LISTEN jobs").await.expect("listen");
    let direct = s.direct().await;
    direct
        .batch_execute("NOTIFY jobs, 'first'; SELECT pg_notify('jobs', 'second')")
        .await
        .expect("notify");
    for expected in ["first", "second"] {
        let note = tokio::time::timeout(Duration::from_secs(10), notes.recv())
            .await
            .expect("in time")
            .expect("a notification");
        assert_eq!(note, ("jobs".to_string(), expected.to_string()));
    }
    // Still in step after asynchronous messages.
    assert_eq!(
        client
            .query_one("SELECT 5", &[])
            .await
            .expect("ok")
            .get::<_, i32>(0),
        5
    );
}

#[tokio::test]
async fn a_cancel_goes_to_the_right_backend() {
    let mut s = setup().await;
    let proxied = s.through_proxy().await;
    let bystander = s.through_proxy().await;
    let token = proxied.cancel_token();
    let sleeper = tokio::spawn(async move {
        let result = proxied.batch_execute("SELECT pg_sleep(30)").await;
        (proxied, result)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The token holds the proxy's address: the cancel goes through it.
    token.cancel_query(NoTls).await.expect("cancel sent");
    let (_client, result) = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("cancelled in time, not after 30 s")
        .expect("task");
    let error = result.expect_err("cancelled");
    assert_eq!(error.code().map(|c| c.code()), Some("57014"));
    let records = s.records(1).await;
    assert_eq!(records[0].record.sqlstate(), Some("57014"));
    assert_eq!(sql(&records[0]), "SELECT pg_sleep(30)");
    // The other session was not touched.
    assert_eq!(
        bystander
            .query_one("SELECT 1", &[])
            .await
            .expect("ok")
            .get::<_, i32>(0),
        1
    );
}

/// A raw session straight to `port`: logs in as postgres, returns the
/// stream and the BackendKeyData body (pid and key).
async fn raw_login(port: u16) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut startup = bytes::BytesMut::new();
    pgtrail_wire::frontend::encode_startup(&mut startup, &[("user", "postgres")]);
    stream.write_all(&startup).await.expect("startup");
    let mut buf = bytes::BytesMut::new();
    let mut key = None;
    loop {
        match pgtrail_wire::frame::decode_frame(&mut buf).expect("frames") {
            Some(frame) if frame.tag == b'K' => key = Some(frame.body.to_vec()),
            Some(frame) if frame.tag == b'Z' => break,
            Some(_) => {}
            None => {
                let n = stream.read_buf(&mut buf).await.expect("read");
                assert!(n > 0, "logged in");
            }
        }
    }
    (stream, key.expect("BackendKeyData"))
}

/// Runs `pg_sleep(1.5)` on a raw session while `cancel` sends a
/// CancelRequest with `key` to `target_port`; returns the SQLSTATE if the
/// statement failed.
async fn sleep_while_cancelling(
    stream: &mut TcpStream,
    key: &[u8],
    target_port: u16,
) -> Option<String> {
    let mut query = bytes::BytesMut::new();
    pgtrail_wire::frontend::encode_query(&mut query, "SELECT pg_sleep(1.5)");
    stream.write_all(&query).await.expect("query");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut cancel = i32::try_from(8 + key.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    cancel.extend_from_slice(&80_877_102i32.to_be_bytes());
    cancel.extend_from_slice(key);
    let mut canceller = TcpStream::connect(("127.0.0.1", target_port))
        .await
        .expect("connect");
    canceller.write_all(&cancel).await.expect("cancel");
    let mut rest = Vec::new();
    let _ = canceller.read_to_end(&mut rest).await;
    let mut buf = bytes::BytesMut::new();
    let mut sqlstate = None;
    loop {
        match pgtrail_wire::backend::BackendMessage::decode(&mut buf).expect("frames") {
            Some(pgtrail_wire::backend::BackendMessage::ErrorResponse(e)) => {
                sqlstate = Some(e.code().to_string())
            }
            Some(pgtrail_wire::backend::BackendMessage::ReadyForQuery(_)) => return sqlstate,
            Some(_) => {}
            None => {
                let n = stream.read_buf(&mut buf).await.expect("read");
                assert!(n > 0, "answered");
            }
        }
    }
}

#[tokio::test]
async fn a_cancel_for_a_backend_the_proxy_does_not_serve_is_dropped() {
    let s = setup().await;
    // A session straight to the server; its own key, sent through the proxy
    // (as by a client who can reach only the proxy): not forwarded.
    let (mut direct, key) = raw_login(s.cluster.port()).await;
    assert_eq!(
        sleep_while_cancelling(&mut direct, &key, s.proxy_port).await,
        None,
        "the statement ran to completion"
    );
    // The control: the same key sent to the server itself cancels.
    assert_eq!(
        sleep_while_cancelling(&mut direct, &key, s.cluster.port())
            .await
            .as_deref(),
        Some("57014")
    );
    // And a proxied session's key, through the proxy, cancels.
    let (mut proxied, key) = raw_login(s.proxy_port).await;
    assert_eq!(
        sleep_while_cancelling(&mut proxied, &key, s.proxy_port)
            .await
            .as_deref(),
        Some("57014")
    );
}

#[tokio::test]
async fn a_client_sending_garbage_is_dropped_and_others_are_served() {
    let mut s = setup().await;
    let steady = s.through_proxy().await;
    // Garbage instead of a startup packet.
    let mut garbage = TcpStream::connect(("127.0.0.1", s.proxy_port))
        .await
        .expect("connect");
    garbage
        .write_all(b"\xff\xff\xff\xffGET / HTTP/1.1\r\n\r\n")
        .await
        .expect("send");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), garbage.read_to_end(&mut rest))
        .await
        .expect("closed promptly");
    assert!(n.is_ok(), "closed");
    assert_fatal_protocol_violation(&rest);

    // A malformed message after a good login: only that session ends.
    let mut bad = TcpStream::connect(("127.0.0.1", s.proxy_port))
        .await
        .expect("connect");
    let mut startup = bytes::BytesMut::new();
    pgtrail_wire::frontend::encode_startup(&mut startup, &[("user", "postgres")]);
    bad.write_all(&startup).await.expect("startup");
    let mut buf = vec![0u8; 4096];
    let mut seen = Vec::new();
    while !seen.ends_with(b"Z\0\0\0\x05I") {
        let n = bad.read(&mut buf).await.expect("read");
        assert!(n > 0, "logged in");
        seen.extend_from_slice(&buf[..n]);
    }
    // A Bind whose parameter count says 5 but carries none.
    bad.write_all(b"B\0\0\0\x0a\0\0\0\0\0\x05")
        .await
        .expect("send");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), bad.read_to_end(&mut rest))
        .await
        .expect("closed promptly");
    assert!(n.is_ok(), "closed");
    assert_fatal_protocol_violation(&rest);

    assert_eq!(
        steady
            .query_one("SELECT 7", &[])
            .await
            .expect("ok")
            .get::<_, i32>(0),
        7
    );
    let after = s.through_proxy().await;
    assert_eq!(
        after
            .query_one("SELECT 8", &[])
            .await
            .expect("ok")
            .get::<_, i32>(0),
        8
    );
    let records = s.records(2).await;
    assert!(records
        .iter()
        .all(|r| r.record.outcome == Outcome::Completed));
}

/// One ErrorResponse, FATAL, SQLSTATE 08P01, naming the proxy.
fn assert_fatal_protocol_violation(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    assert!(bytes.starts_with(b"E"), "an ErrorResponse: {text}");
    let mut buf = bytes::BytesMut::from(bytes);
    let message = pgtrail_wire::backend::BackendMessage::decode(&mut buf)
        .expect("well-formed")
        .expect("whole");
    let pgtrail_wire::backend::BackendMessage::ErrorResponse(fields) = message else {
        panic!("not an ErrorResponse: {text}");
    };
    assert_eq!((fields.severity(), fields.code()), ("FATAL", "08P01"));
    assert!(
        fields
            .message()
            .starts_with("pgtrail proxy: malformed message from the client"),
        "{fields}"
    );
    assert!(buf.is_empty(), "nothing after it");
}
