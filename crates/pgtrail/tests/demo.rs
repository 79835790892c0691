//! `pgtrail demo`, as a new user runs it first: the trail it prints, the
//! database it leaves running for the next commands, and Ctrl-C.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::pgtrail_in;

#[tokio::test]
async fn demo_shows_the_trail_keeps_the_database_running_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stdout_path = dir.path().join("demo.out");
    let stderr_path = dir.path().join("demo.err");
    let mut demo = Command::new(env!("CARGO_BIN_EXE_pgtrail"))
        .arg("demo")
        .current_dir(dir.path())
        .env_clear()
        // A user's shell has a PATH; the cluster's tools need one.
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("start pgtrail demo");
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();

    // It prints the trail, then the connection string, and keeps running.
    let deadline = Instant::now() + Duration::from_secs(120);
    let url = loop {
        let out = read(&stdout_path);
        if let Some(line) = out
            .lines()
            .find_map(|l| l.strip_prefix("Connection string: "))
        {
            break line.trim().to_string();
        }
        if let Some(status) = demo.try_wait().expect("try_wait") {
            panic!(
                "demo exited early ({status}): {out}\n{}",
                read(&stderr_path)
            );
        }
        assert!(
            Instant::now() < deadline,
            "no connection string: {out}\n{}",
            read(&stderr_path)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let shown = read(&stdout_path);
    assert!(shown.contains("$ pgtrail log"), "{shown}");
    for user in ["alice@example.com", "carol@example.com", "signup-service"] {
        assert!(shown.contains(user), "the log names {user}: {shown}");
    }
    assert!(
        shown.contains("$ pgtrail history public.users id=1") && shown.contains("Ann Smith"),
        "the history shows the update's new value: {shown}"
    );

    // It serves the dashboard to the local operator and says where.
    let dashboard = shown
        .lines()
        .find_map(|l| l.strip_prefix("Dashboard: http://"))
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or_else(|| panic!("no dashboard address: {shown}"))
        .to_string();
    let mut stream = std::net::TcpStream::connect(&dashboard).expect("dashboard answers");
    use std::io::{Read as _, Write as _};
    write!(
        stream,
        "GET /readyz HTTP/1.1\r\nHost: {dashboard}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The next commands it suggests work on the running database.
    let alice = pgtrail_in(
        dir.path(),
        &[
            "--store",
            &url,
            "--format",
            "jsonl",
            "log",
            "--user",
            "alice@example.com",
        ],
        &[],
        None,
    );
    let events = alice.events();
    assert_eq!(events.len(), 1, "{alice:#?}");
    assert_eq!(events[0].operation.as_deref(), Some("UPDATE"));
    let verified = pgtrail_in(dir.path(), &["--store", &url, "verify"], &[], None);
    verified.ok();

    // Ctrl-C stops it cleanly and removes the throwaway database.
    let status = Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(status) = demo.try_wait().expect("try_wait") {
            break status.code();
        }
        assert!(Instant::now() < deadline, "demo did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(code, Some(0), "{}", read(&stderr_path));
    assert!(read(&stderr_path).contains("demo stopped"));
    assert!(
        tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .is_err(),
        "the demo database is gone"
    );
}
