//! What the `pgtrail run` tests stand on: a database on its own cluster with
//! a directory for pgtrail.toml (`Service`), a `pgtrail run` process started
//! there (`Running`), and waiting on what its consumer received.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgtrail_testkit::Cluster;

/// A database on its own throwaway cluster, created with `schema_sql`, and a
/// temporary directory for pgtrail.toml, the SQLite store and the run's log.
pub struct Service {
    pub url: String,
    pub db: String,
    pub dir: tempfile::TempDir,
    pub client: tokio_postgres::Client,
    /// Last: stops after the connection above is dropped.
    pub cluster: Cluster,
}

impl Service {
    pub async fn new(prefix: &str, schema_sql: &str) -> Service {
        let cluster = Cluster::start().expect("start cluster");
        let url = cluster.create_database(prefix).await.expect("database");
        let db = url.rsplit('/').next().expect("db name").to_string();
        let client = cluster.connect(&db).await.expect("connect");
        client.batch_execute(schema_sql).await.expect("schema");
        let dir = tempfile::tempdir().expect("tempdir");
        Service {
            url,
            db,
            dir,
            client,
            cluster,
        }
    }

    /// The SQLite store's file in the directory.
    pub fn store_file(&self) -> PathBuf {
        self.dir.path().join("trail.db")
    }

    /// Inserts rows `ids` into table `t (id, v)`, one transaction each.
    pub async fn insert(&self, ids: std::ops::RangeInclusive<i32>) {
        for id in ids {
            self.client
                .execute(
                    "insert into t (id, v) values ($1::int, 'v' || $1::int)",
                    &[&id],
                )
                .await
                .expect("insert");
        }
    }

    /// `pgtrail replicate --setup` of table `t`: its publication and slot
    /// (without streaming of large transactions).
    pub fn set_up_capture(&self) {
        crate::support::pgtrail_in(
            self.dir.path(),
            &[
                "replicate",
                "--db",
                &self.url,
                "--setup",
                "--tables",
                "public.t",
                "--no-stream",
            ],
            &[],
            None,
        )
        .ok();
    }

    /// Starts `pgtrail run args` in the directory.
    pub fn start(&self, args: &[&str]) -> Running {
        Running::start(self.dir.path(), args)
    }

    /// Waits until the consumer of `run` received WAL up to `lsn`.
    pub async fn wait_until_received(&self, lsn: &str, run: &Running) {
        wait_until_received(&self.client, lsn, run).await
    }
}

/// A running `pgtrail run`; killed if the test ends without stopping it.
pub struct Running(pub Child, PathBuf);

impl Running {
    /// Starts `pgtrail run args` in `dir` (where its pgtrail.toml is), with
    /// a clean environment; stderr goes to `dir/run.log`.
    pub fn start(dir: &Path, args: &[&str]) -> Running {
        let log = dir.join("run.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_pgtrail"))
            .arg("run")
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PGTRAIL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start pgtrail run");
        Running(child, log)
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal}");
    }

    /// Waits for the exit (at most 60 s); returns the exit code and stderr.
    pub async fn wait(mut self) -> (i32, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return (status.code().unwrap_or(-1), self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "pgtrail run did not exit: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, and a clean exit; returns stderr.
    pub async fn stop(self) -> String {
        self.signal("-TERM");
        let (code, stderr) = self.wait().await;
        assert_eq!(code, 0, "clean stop: {stderr}");
        stderr
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the consumer of `run` reported WAL up to `lsn` as received
/// (its `write` position in `pg_stat_replication`), stored or not.
async fn wait_until_received(client: &tokio_postgres::Client, lsn: &str, run: &Running) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let received: Option<bool> = client
            .query_one(
                "select bool_or(write_lsn >= $1::text::pg_lsn) from pg_stat_replication",
                &[&lsn],
            )
            .await
            .expect("pg_stat_replication")
            .get(0);
        if received == Some(true) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nothing received after 60 s: {}",
            run.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The address after `prefix` on a whole line of a process's `log`: stderr
/// is unbuffered, so a line can be read before its end (the port) is
/// written, and a line without its newline is not taken.
pub fn address_in(log: &str, prefix: &str) -> Option<String> {
    log.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .find_map(|l| l.split(prefix).nth(1).map(|a| a.trim().to_string()))
}

/// A running `pgtrail serve` (or `run` with `[server] listen`) and the
/// address it listens on; stopped with SIGTERM when dropped.
pub struct Serving {
    pub child: Child,
    pub address: String,
    pub stderr: PathBuf,
}

impl Serving {
    /// Starts `pgtrail args` in `dir` with a clean environment and waits
    /// until it says where it listens (plain HTTP).
    pub fn start(dir: &Path, args: &[&str]) -> Serving {
        let stderr = dir.join("serve.err");
        let child = Command::new(env!("CARGO_BIN_EXE_pgtrail"))
            .args(args)
            .current_dir(dir)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr"))
            .spawn()
            .expect("start pgtrail");
        let mut serving = Serving {
            child,
            address: String::new(),
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        serving.address = loop {
            let log = std::fs::read_to_string(&serving.stderr).unwrap_or_default();
            if let Some(address) = address_in(&log, "listening on http://") {
                break address;
            }
            if let Ok(Some(status)) = serving.child.try_wait() {
                panic!("pgtrail {args:?} exited ({status}): {log}");
            }
            assert!(Instant::now() < deadline, "not listening: {log}");
            std::thread::sleep(Duration::from_millis(50));
        };
        serving
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        // Only a child still running (an exited one's pid may be reused).
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// `GET path` over plain HTTP with an optional bearer `token`: the status
/// code and the body (a chunked one put back together).
pub fn http_get(address: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    let answer = String::from_utf8(answer).expect("utf-8");
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status: {answer}"));
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        unchunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}
