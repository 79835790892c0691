//! The Rust clients of the client matrix (`clients.rs`): tokio-postgres and
//! sqlx (runtime queries only, no compile-time macros). Each suite returns
//! one canonical line per step, like the external suites print, and the
//! failure that stopped it, if any.

use std::time::Duration;

use futures_util::{SinkExt as _, TryStreamExt as _};
use serde_json::{json, Value};
use sqlx::{Connection as _, Executor as _, Row as _};

use crate::clients::{Mark, Target};

/// Collects the suite's lines.
#[derive(Default)]
struct Steps(Vec<String>);

impl Steps {
    fn step(&mut self, name: &str, result: Value) {
        self.0
            .push(json!({ "step": name, "result": result }).to_string());
    }
}

pub const TOKIO_POSTGRES_MARKS: [Mark; 6] = [
    // A portal read 3 rows at a time: one statement, 8 rows.
    Mark {
        text: "mark_tokio_portal",
        class: "READ",
        rows: Some(8),
        sqlstate: None,
        times: 1,
    },
    Mark {
        text: "mark_tokio_insert",
        class: "WRITE",
        rows: Some(2),
        sqlstate: None,
        times: 1,
    },
    Mark {
        text: "mark_tokio_select",
        class: "READ",
        rows: Some(2),
        sqlstate: None,
        times: 1,
    },
    Mark {
        text: "mark_tokio_dup",
        class: "WRITE",
        rows: None,
        sqlstate: Some("23505"),
        times: 1,
    },
    // Pipelined: three at once, the middle one failing.
    Mark {
        text: "mark_tokio_pipe_ok",
        class: "WRITE",
        rows: Some(1),
        sqlstate: None,
        times: 2,
    },
    Mark {
        text: "mark_tokio_pipe_dup",
        class: "WRITE",
        rows: None,
        sqlstate: Some("23505"),
        times: 1,
    },
];

pub const SQLX_MARKS: [Mark; 3] = [
    Mark {
        text: "mark_sqlx_insert",
        class: "WRITE",
        rows: Some(2),
        sqlstate: None,
        times: 1,
    },
    Mark {
        text: "mark_sqlx_select",
        class: "READ",
        rows: Some(2),
        sqlstate: None,
        times: 1,
    },
    Mark {
        text: "mark_sqlx_dup",
        class: "WRITE",
        rows: None,
        sqlstate: Some("23505"),
        times: 1,
    },
];

fn pg_error(e: &tokio_postgres::Error) -> Value {
    json!({ "sqlstate": e.code().map(|c| c.code()), "error": e.as_db_error().map(|d| d.message()) })
}

fn sqlx_error(e: &sqlx::Error) -> Value {
    match e.as_database_error() {
        Some(d) => json!({ "sqlstate": d.code(), "error": d.message() }),
        None => json!({ "error": e.to_string() }),
    }
}

/// Runs `suite` within `limit`; a timeout is a failure that keeps the steps
/// printed so far.
async fn bounded<F>(limit: Duration, suite: F) -> (Vec<String>, Option<String>)
where
    F: FnOnce(
        std::sync::Arc<std::sync::Mutex<Steps>>,
    ) -> futures_util::future::BoxFuture<'static, Result<(), String>>,
{
    let steps = std::sync::Arc::new(std::sync::Mutex::new(Steps::default()));
    let outcome = tokio::time::timeout(limit, suite(steps.clone())).await;
    let lines = steps.lock().map(|s| s.0.clone()).unwrap_or_default();
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some(format!("hung: stopped after {limit:?}")),
    };
    (lines, failure)
}

pub async fn tokio_postgres_suite(
    target: &Target,
    limit: Duration,
) -> (Vec<String>, Option<String>) {
    let target = target.clone();
    bounded(limit, move |steps| {
        Box::pin(async move {
            tokio_postgres_steps(&target, &steps)
                .await
                .map_err(|e| e.to_string())
        })
    })
    .await
}

macro_rules! step {
    ($steps:expr, $name:expr, $value:expr) => {{
        let value = $value;
        if let Ok(mut steps) = $steps.lock() {
            steps.step($name, value);
        }
    }};
}

async fn tokio_postgres_steps(
    target: &Target,
    steps: &std::sync::Mutex<Steps>,
) -> Result<(), tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(target.port)
        .user("postgres")
        .dbname(&target.database)
        .application_name("client-matrix");
    let (mut client, mut connection) = config.connect(tokio_postgres::NoTls).await?;
    // Drives the connection and passes notifications on.
    let (notes, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Ok(Some(message)) = messages.try_next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = notes.send(json!([n.channel(), n.payload()]));
            }
        }
    });

    client
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, data bytea)")
        .await?;
    // Binary parameters (tokio-postgres sends every parameter in binary).
    let data: &[u8] = &[0, 1, 255];
    let inserted = client
        .execute(
            "INSERT INTO items AS mark_tokio_insert (id, name, data) VALUES ($1, $2, $3), ($4, $5, NULL)",
            &[&1i32, &"one", &data, &2i32, &"two"],
        )
        .await?;
    step!(steps, "insert", json!(inserted));
    let rows = client
        .query(
            "SELECT id, name, data AS mark_tokio_select FROM items ORDER BY id",
            &[],
        )
        .await?;
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            let data: Option<Vec<u8>> = r.get(2);
            json!([r.get::<_, i32>(0), r.get::<_, String>(1), data])
        })
        .collect();
    step!(steps, "select", json!(rows));
    let dup = client
        .execute(
            "INSERT INTO items AS mark_tokio_dup (id, name) VALUES ($1, $2)",
            &[&1i32, &"x"],
        )
        .await;
    step!(
        steps,
        "duplicate",
        dup.map_or_else(|e| pg_error(&e), |n| json!(n))
    );

    // Pipelined futures: all three are sent before the first reply.
    let insert = "INSERT INTO items AS mark_tokio_pipe_ok (id, name) VALUES ($1, $2)";
    let (a, b, c) = futures_util::future::join3(
        client.execute(insert, &[&10i32, &"ten"]),
        client.execute(
            "INSERT INTO items AS mark_tokio_pipe_dup (id, name) VALUES ($1, $2)",
            &[&1i32, &"duplicate"],
        ),
        client.execute(insert, &[&11i32, &"eleven"]),
    )
    .await;
    let show =
        |r: Result<u64, tokio_postgres::Error>| r.map_or_else(|e| pg_error(&e), |n| json!(n));
    step!(steps, "pipelined", json!([show(a), show(b), show(c)]));
    let statement = client
        .prepare("SELECT name FROM items WHERE id = $1")
        .await?;
    let ids = [1i32, 2, 10, 11, 3];
    let params: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 1]> =
        ids.iter().map(|id| [id as _]).collect();
    let names =
        futures_util::future::try_join_all(params.iter().map(|p| client.query_opt(&statement, p)))
            .await?;
    let names: Vec<Option<String>> = names.iter().map(|r| r.as_ref().map(|r| r.get(0))).collect();
    step!(steps, "prepared pipelined", json!(names));

    // A portal run three rows at a time (Execute with a row limit).
    let transaction = client.transaction().await?;
    transaction
        .execute(
            "INSERT INTO items (id, name) SELECT g, 'g' || g FROM generate_series(100, 107) g",
            &[],
        )
        .await?;
    let ids = transaction
        .prepare("SELECT id AS mark_tokio_portal FROM items WHERE id >= 100 ORDER BY id")
        .await?;
    let portal = transaction.bind(&ids, &[]).await?;
    let mut batches = Vec::new();
    loop {
        // A short batch is the last: one more Execute would run the
        // finished portal again (recorded on its own, with 0 rows).
        let batch = transaction.query_portal(&portal, 3).await?;
        let last = batch.len() < 3;
        batches.push(batch.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>());
        if last {
            break;
        }
    }
    transaction.commit().await?;
    step!(steps, "portal", json!(batches));

    // COPY in (text), one failing, and out.
    let sink = client.copy_in("COPY items (id, name) FROM STDIN").await?;
    let mut sink = Box::pin(sink);
    sink.send(&b"200\tc200\n201\tc201\n"[..]).await?;
    sink.send(&b"202\tc202\n"[..]).await?;
    let copied = sink.as_mut().finish().await?;
    step!(steps, "copy in", json!(copied));
    let failing = async {
        let sink = client.copy_in("COPY items (id, name) FROM STDIN").await?;
        let mut sink = Box::pin(sink);
        sink.send(&b"203\tc203\n200\tdup\n"[..]).await?;
        sink.as_mut().finish().await
    };
    step!(
        steps,
        "copy in error",
        failing.await.map_or_else(|e| pg_error(&e), |n| json!(n))
    );
    let stream = client
        .copy_out("COPY (SELECT id, name FROM items WHERE id >= 200 ORDER BY id) TO STDOUT")
        .await?;
    let chunks: Vec<_> = Box::pin(stream).try_collect().await?;
    let text: String = chunks.iter().map(|c| String::from_utf8_lossy(c)).collect();
    step!(steps, "copy out", json!(text));

    // Several statements in one simple Query, the second failing.
    let simple = client
        .simple_query("SELECT 1; SELECT 1 / 0; SELECT 3")
        .await;
    step!(
        steps,
        "simple multi",
        simple.map_or_else(|e| pg_error(&e), |m| json!(m.len()))
    );

    // LISTEN/NOTIFY on the same connection: the notification arrives
    // between results.
    client
        .batch_execute("LISTEN matrix; NOTIFY matrix, 'hello'")
        .await?;
    client
        .execute("SELECT pg_notify('matrix', 'again')", &[])
        .await?;
    let mut got = Vec::new();
    while got.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(5), notifications.recv()).await {
            Ok(Some(n)) => got.push(n),
            _ => break,
        }
    }
    step!(steps, "notifications", json!(got));

    // Cancel a running statement through a CancelRequest, until it stops.
    let token = client.cancel_token();
    let canceller = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = token.cancel_query(tokio_postgres::NoTls).await;
        }
    });
    let cancelled = client.simple_query("SELECT pg_sleep(20)").await;
    canceller.abort();
    step!(
        steps,
        "cancel",
        cancelled.map_or_else(|e| pg_error(&e), |_| json!("not cancelled"))
    );
    let row = client
        .query_one("SELECT count(*), sum(id) FROM items", &[])
        .await?;
    step!(
        steps,
        "final",
        json!([row.get::<_, i64>(0), row.get::<_, i64>(1)])
    );
    Ok(())
}

pub async fn sqlx_suite(target: &Target, limit: Duration) -> (Vec<String>, Option<String>) {
    let target = target.clone();
    bounded(limit, move |steps| {
        Box::pin(async move { sqlx_steps(&target, &steps).await.map_err(|e| e.to_string()) })
    })
    .await
}

async fn sqlx_steps(target: &Target, steps: &std::sync::Mutex<Steps>) -> Result<(), sqlx::Error> {
    let options = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(target.port)
        .username("postgres")
        .database(&target.database)
        .ssl_mode(sqlx::postgres::PgSslMode::Disable)
        .application_name("client-matrix");
    let mut conn = sqlx::PgConnection::connect_with(&options).await?;
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, data bytea)")
        .await?;
    // query(): a named prepared statement, cached, parameters in binary.
    let done = sqlx::query(
        "INSERT INTO items AS mark_sqlx_insert (id, name, data) VALUES ($1, $2, $3), ($4, $5, NULL)",
    )
    .bind(1i32)
    .bind("one")
    .bind(vec![0u8, 255])
    .bind(2i32)
    .bind("two")
    .execute(&mut conn)
    .await?;
    step!(steps, "insert", json!(done.rows_affected()));
    let rows = sqlx::query("SELECT id, name, data AS mark_sqlx_select FROM items ORDER BY id")
        .fetch_all(&mut conn)
        .await?;
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!([
                r.get::<i32, _>(0),
                r.get::<String, _>(1),
                r.get::<Option<Vec<u8>>, _>(2)
            ])
        })
        .collect();
    step!(steps, "select", json!(rows));
    let dup = sqlx::query("INSERT INTO items AS mark_sqlx_dup (id, name) VALUES ($1, $2)")
        .bind(1i32)
        .bind("x")
        .execute(&mut conn)
        .await;
    step!(
        steps,
        "duplicate",
        dup.map_or_else(|e| sqlx_error(&e), |d| json!(d.rows_affected()))
    );
    // The cached statement again, and an unnamed one (persistent(false)).
    let mut names = Vec::new();
    for id in [1i32, 2, 3] {
        let name: Option<String> = sqlx::query("SELECT name FROM items WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut conn)
            .await?
            .map(|r| r.get(0));
        names.push(name);
        let unnamed: Option<String> = sqlx::query("SELECT name FROM items WHERE id = $1 + 0")
            .bind(id)
            .persistent(false)
            .fetch_optional(&mut conn)
            .await?
            .map(|r| r.get(0));
        names.push(unnamed);
    }
    step!(steps, "prepared", json!(names));

    // A transaction rolled back after an error.
    let mut tx = conn.begin().await?;
    sqlx::query("DELETE FROM items WHERE id = 1")
        .execute(&mut *tx)
        .await?;
    let error = sqlx::query("SELECT 1 / $1")
        .bind(0i32)
        .execute(&mut *tx)
        .await;
    step!(
        steps,
        "transaction error",
        error.map_or_else(|e| sqlx_error(&e), |_| json!("no error"))
    );
    tx.rollback().await?;

    // COPY in and out.
    let mut copy = conn.copy_in_raw("COPY items (id, name) FROM STDIN").await?;
    copy.send(&b"300\tc300\n301\tc301\n"[..]).await?;
    step!(steps, "copy in", json!(copy.finish().await?));
    let mut copy = conn.copy_in_raw("COPY items (id, name) FROM STDIN").await?;
    copy.send(&b"302\tc302\n300\tdup\n"[..]).await?;
    step!(
        steps,
        "copy in error",
        copy.finish()
            .await
            .map_or_else(|e| sqlx_error(&e), |n| json!(n))
    );
    let chunks: Vec<_> = conn
        .copy_out_raw("COPY (SELECT id, name FROM items WHERE id >= 300 ORDER BY id) TO STDOUT")
        .await?
        .try_collect()
        .await?;
    let text: String = chunks.iter().map(|c| String::from_utf8_lossy(c)).collect();
    step!(steps, "copy out", json!(text));

    // LISTEN/NOTIFY through a pool's listener.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await?;
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
    listener.listen("matrix").await?;
    sqlx::query("SELECT pg_notify('matrix', $1)")
        .bind("hello")
        .execute(&mut conn)
        .await?;
    let note = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await;
    let note = match note {
        Ok(Ok(n)) => json!([n.channel(), n.payload()]),
        Ok(Err(e)) => sqlx_error(&e),
        Err(_) => json!("no notification"),
    };
    step!(steps, "notification", note);
    drop(listener);
    pool.close().await;

    let row = sqlx::query("SELECT count(*), sum(id) FROM items")
        .fetch_one(&mut conn)
        .await?;
    step!(
        steps,
        "final",
        json!([row.get::<i64, _>(0), row.get::<i64, _>(1)])
    );
    conn.close().await?;
    Ok(())
}

/// Bytes a broken or hostile client sends after logging in, each on its own
/// connection: the proxy must give the server's answer or end the session
/// with a FATAL of its own ([`CLEAN_FATAL`]), never hang.
const RAW_CASES: [(&str, &[u8]); 8] = [
    ("unknown message type", b"!\0\0\0\x04"),
    ("length below four", b"Q\0\0\0\x03"),
    ("query without its NUL", b"Q\0\0\0\x08abcd"),
    ("length of 2 GiB", b"Q\x7f\xff\xff\xff"),
    ("truncated frame then EOF", b"Q\0\0\0\x20SELEC"),
    (
        "copy data outside COPY, then a query",
        b"d\0\0\0\x06hiQ\0\0\0\x0dSELECT 1\0",
    ),
    (
        "bind of a missing statement",
        b"B\0\0\0\x12\0nosuch\0\0\0\0\0\0\0S\0\0\0\x04",
    ),
    (
        "execute of a missing portal",
        b"E\0\0\0\x0fnosuch\0\0\0\0\0S\0\0\0\x04",
    ),
];

/// What a session the proxy ends shows its client.
pub const CLEAN_FATAL: &str = r#"["E:FATAL:08P01","closed"]"#;

pub async fn raw_suite(target: &Target, limit: Duration) -> (Vec<String>, Option<String>) {
    let target = target.clone();
    bounded(limit, move |steps| {
        Box::pin(async move {
            for (name, bytes) in RAW_CASES {
                let result = raw_case(&target, bytes).await;
                step!(steps, name, result);
            }
            Ok(())
        })
    })
    .await
}

/// Logs in, sends `bytes` (half-closing when the case is a truncated frame)
/// and renders what comes back until ReadyForQuery or the end.
async fn raw_case(target: &Target, bytes: &[u8]) -> Value {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", target.port)).await else {
        return json!("cannot connect");
    };
    let mut startup = Vec::new();
    startup.extend_from_slice(&196_608i32.to_be_bytes());
    for (k, v) in [("user", "postgres"), ("database", target.database.as_str())] {
        startup.extend_from_slice(k.as_bytes());
        startup.push(0);
        startup.extend_from_slice(v.as_bytes());
        startup.push(0);
    }
    startup.push(0);
    let mut packet = ((startup.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&startup);
    if stream.write_all(&packet).await.is_err() {
        return json!("startup refused");
    }
    let mut seen = Vec::new();
    // Log in: until the first ReadyForQuery.
    let mut logged_in = false;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut sent = false;
    loop {
        // Whole messages in the buffer.
        while buffer.len() >= 5 {
            let len = i32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]);
            let total = usize::try_from(len).unwrap_or(0) + 1;
            if total < 5 || buffer.len() < total {
                break;
            }
            let message: Vec<u8> = buffer.drain(..total).collect();
            let tag = message[0];
            if !logged_in {
                if tag == b'Z' {
                    logged_in = true;
                } else if tag == b'E' {
                    return json!(["login failed", error_fields(&message[5..])]);
                }
                continue;
            }
            match tag {
                b'E' => seen.push(json!(format!("E:{}", error_fields(&message[5..])))),
                b'Z' => {
                    seen.push(json!("Z"));
                    return json!(seen);
                }
                other => seen.push(json!(char::from(other).to_string())),
            }
        }
        if logged_in && !sent {
            sent = true;
            if stream.write_all(bytes).await.is_err() {
                seen.push(json!("write refused"));
                return json!(seen);
            }
            if bytes.len() > 5 && bytes[0] == b'Q' && bytes.len() < 0x20 && bytes[4] == 0x20 {
                let _ = stream.shutdown().await;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                seen.push(json!("closed"));
                return json!(seen);
            }
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// An ErrorResponse as `SEVERITY:SQLSTATE` (messages differ between the
/// server and the proxy's own FATAL).
fn error_fields(body: &[u8]) -> String {
    let (mut severity, mut code) = (String::new(), String::new());
    for field in body.split(|b| *b == 0) {
        match field.first() {
            Some(b'V') => severity = String::from_utf8_lossy(&field[1..]).into_owned(),
            Some(b'C') => code = String::from_utf8_lossy(&field[1..]).into_owned(),
            _ => {}
        }
    }
    format!("{severity}:{code}")
}
