//! `pgtrail proxy` (experimental) as a user runs it: clients go through it
//! to a real cluster, and each statement comes out as a JSON line, with
//! secrets in SQL redacted and parameter values never printed.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgtrail_testkit::Cluster;
use serde_json::Value;

/// Kills the proxy when the test ends, passing or not.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn proxy_prints_each_statement_as_json() {
    let cluster = Cluster::start().expect("cluster");
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let upstream = format!("{}?sslmode=disable", cluster.url("postgres"));
    let child = Command::new(env!("CARGO_BIN_EXE_pgtrail"))
        .args(["proxy", "--listen", "127.0.0.1:0", "--upstream", &upstream])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("start pgtrail proxy");
    let _proxy = Proxy(child);
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let address = loop {
        if let Some(address) = read(&err)
            .lines()
            .find_map(|l| l.split("listening on ").nth(1).map(str::to_string))
        {
            break address;
        }
        assert!(Instant::now() < deadline, "not listening: {}", read(&err));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let url = format!("postgres://postgres@{address}/postgres");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect through the proxy");
    tokio::spawn(connection);
    client
        .batch_execute("CREATE ROLE reporting LOGIN PASSWORD 'hunter2-secret'")
        .await
        .expect("create role");
    let row = client
        .query_one("SELECT $1::text AS card", &[&"4111-1111-1111-1111"])
        .await
        .expect("select");
    assert_eq!(row.get::<_, &str>(0), "4111-1111-1111-1111");
    let error = client
        .batch_execute("DELETE FROM missing_table")
        .await
        .expect_err("no such table");
    assert_eq!(error.code().map(|c| c.code()), Some("42P01"));

    let lines: Vec<Value> = loop {
        let text = read(&out);
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        if lines.len() >= 3 {
            break lines;
        }
        assert!(Instant::now() < deadline, "three lines: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = read(&out);
    assert!(
        !text.contains("hunter2-secret"),
        "the password is redacted: {text}"
    );
    assert!(
        !text.contains("4111"),
        "parameter values are not printed: {text}"
    );

    assert_eq!(lines[0]["command_tag"], "CREATE ROLE");
    assert_eq!(lines[0]["protocol"], "simple");
    assert_eq!(lines[0]["db_user"], "postgres");
    assert_eq!(lines[0]["client_addr"], "127.0.0.1");
    assert!(lines[0]["backend_pid"].as_i64().is_some_and(|pid| pid > 0));
    assert_eq!(lines[1]["sql"], "SELECT $1::text AS card");
    assert_eq!(lines[1]["protocol"], "extended");
    assert_eq!(lines[1]["param_formats"], serde_json::json!(["binary"]));
    assert_eq!(lines[1]["rows_returned"], 1);
    assert_eq!(lines[2]["outcome"], "failed");
    assert_eq!(lines[2]["error"]["sqlstate"], "42P01");
    assert_eq!(lines[2]["sql"], "DELETE FROM missing_table");
    assert_eq!(lines[2]["transaction_status"], "idle");
}

/// `pgtrail proxy --tls-cert --tls-key --require-tls`, with libpq: a client
/// in the clear is refused (28000, nothing reaches the server), one with
/// sslmode=verify-full against the proxy's certificate gets through.
#[tokio::test]
async fn proxy_serves_tls_from_flags_and_requires_it() {
    let cluster = Cluster::start().expect("cluster");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = pgtrail_testkit::TestCa::new("pgtrail test CA").expect("ca");
    let cert = ca.server(&["localhost"]).expect("cert");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let (cert_file, key_file) = (
        write("proxy.crt", &cert.cert_pem),
        write("proxy.key", &cert.key_pem),
    );
    let ca_file = write("ca.pem", &ca.cert_pem());
    let err = dir.path().join("err");
    let upstream = format!("{}?sslmode=disable", cluster.url("postgres"));
    let child = Command::new(env!("CARGO_BIN_EXE_pgtrail"))
        .args(["proxy", "--listen", "127.0.0.1:0", "--upstream", &upstream])
        .args([
            "--tls-cert",
            &cert_file,
            "--tls-key",
            &key_file,
            "--require-tls",
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("start pgtrail proxy");
    let _proxy = Proxy(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let port = loop {
        let text = std::fs::read_to_string(&err).unwrap_or_default();
        if let Some(port) = text.lines().find_map(|l| {
            l.split("listening on ")
                .nth(1)?
                .rsplit(':')
                .next()
                .map(str::to_string)
        }) {
            break port;
        }
        assert!(Instant::now() < deadline, "not listening: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let psql = |sslmode: &str| {
        let conninfo = format!(
            "host=localhost port={port} user=postgres dbname=postgres sslmode={sslmode} sslrootcert={ca_file}"
        );
        Command::new(cluster.binaries().program("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-w",
                "-d",
                &conninfo,
                "-c",
                "SELECT 'through TLS'",
            ])
            .output()
            .expect("psql")
    };
    let plain = psql("disable");
    assert!(!plain.status.success());
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(stderr.contains("this proxy requires TLS"), "{stderr}");
    let tls = psql("verify-full");
    assert!(
        tls.status.success(),
        "{}",
        String::from_utf8_lossy(&tls.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&tls.stdout).trim(), "through TLS");
}
