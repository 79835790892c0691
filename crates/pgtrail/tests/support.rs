//! Running the real binary against a fresh store.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pgtrail_core::Event;

/// The quickstart's sample trail.
pub const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/sample.jsonl");

/// The sample's events, as parsed from the file.
pub fn sample_events() -> Vec<Event> {
    std::fs::read_to_string(SAMPLE)
        .expect("read sample")
        .lines()
        .map(|l| serde_json::from_str(l).expect("sample line is an event"))
        .collect()
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts exit 0 and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "expected success, got {self:#?}");
        &self.stdout
    }

    /// Asserts exit 2 with a single `error: …` line on stderr; returns that line.
    #[track_caller]
    pub fn error(&self) -> &str {
        assert_eq!(self.code, 2, "expected an error, got {self:#?}");
        let line = self.stderr.trim_end();
        assert!(
            line.starts_with("error: ") && !line.contains('\n'),
            "one error line: {self:#?}"
        );
        assert!(self.stdout.is_empty(), "no output on error: {self:#?}");
        line
    }

    /// Stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("not JSON ({e}): {self:#?}"))
    }

    /// Stdout as JSON Lines of events.
    #[track_caller]
    pub fn events(&self) -> Vec<Event> {
        self.ok()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not an event ({e}): {l}")))
            .collect()
    }
}

/// Runs `pgtrail args` in `dir` with only `env` set (no inherited PGTRAIL_*).
pub fn pgtrail_in(dir: &Path, args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pgtrail"));
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("run pgtrail");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input).expect("write stdin");
    }
    let output = child.wait_with_output().expect("wait for pgtrail");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Which store backend a test runs against.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty store and a working directory to run pgtrail in.
pub struct Trail {
    pub url: String,
    pub dir: tempfile::TempDir,
    pub cluster: Option<pgtrail_testkit::Cluster>,
}

impl Trail {
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        match backend {
            Backend::Sqlite => Trail {
                url: format!("sqlite:{}", dir.path().join("trail.db").display()),
                dir,
                cluster: None,
            },
            Backend::Postgres => {
                let cluster = pgtrail_testkit::Cluster::start().expect("start cluster");
                let url = cluster
                    .create_database("cli")
                    .await
                    .expect("create database");
                Trail {
                    url,
                    dir,
                    cluster: Some(cluster),
                }
            }
        }
    }

    /// A second empty store of the same backend (same cluster for Postgres).
    pub async fn another_store(&self) -> String {
        match &self.cluster {
            None => format!(
                "sqlite:{}",
                self.dir
                    .path()
                    .join(format!("other-{}.db", uuid::Uuid::now_v7()))
                    .display()
            ),
            Some(cluster) => cluster
                .create_database("cli_other")
                .await
                .expect("create database"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs pgtrail on this store.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// Runs pgtrail on this store with extra environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut all = vec![("PGTRAIL_STORE", self.url.as_str())];
        all.extend_from_slice(env);
        pgtrail_in(self.dir.path(), args, &all, None)
    }

    /// Runs pgtrail on this store with `input` on stdin.
    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        pgtrail_in(
            self.dir.path(),
            args,
            &[("PGTRAIL_STORE", self.url.as_str())],
            Some(input),
        )
    }

    /// Imports the sample trail.
    pub fn import_sample(&self) {
        let summary = self.run(&["import", SAMPLE, "--format", "json"]).json();
        assert_eq!(summary["imported"], 20, "{summary}");
    }

    /// Runs SQL against the Postgres store's database.
    pub fn psql(&self, sql: &str) -> String {
        let cluster = self.cluster.as_ref().expect("a Postgres trail");
        let db = self.url.rsplit('/').next().expect("database in URL");
        cluster.psql(db, sql).expect("psql")
    }

    /// Replaces `from` with `to` in event `seq`'s stored body, its hash left
    /// as it was: someone with the store file (or the schema) editing who
    /// did it.
    pub fn edit_stored_body(&self, seq: i64, from: &str, to: &str) {
        match self.cluster {
            Some(_) => {
                self.psql(&format!(
                    "update pgtrail.events set body = replace(body::text, '{from}', '{to}')::json where seq = {seq}"
                ));
            }
            None => {
                let db = rusqlite::Connection::open(self.sqlite_file()).expect("open sqlite");
                let changed = db
                    .execute(
                        "update events set body = replace(body, ?1, ?2) where seq = ?3",
                        rusqlite::params![from, to, seq],
                    )
                    .expect("tamper");
                assert_eq!(changed, 1);
            }
        }
    }

    /// The SQLite store's file.
    pub fn sqlite_file(&self) -> PathBuf {
        PathBuf::from(self.url.strip_prefix("sqlite:").expect("a SQLite trail"))
    }
}

/// Instantiates each `async fn name(trail: Trail)` once per backend.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use $crate::support::{Backend, Trail};

            #[tokio::test]
            async fn sqlite() {
                super::$name(Trail::new(Backend::Sqlite).await).await;
            }

            #[tokio::test]
            async fn postgres() {
                super::$name(Trail::new(Backend::Postgres).await).await;
            }
        }
    )*};
}
