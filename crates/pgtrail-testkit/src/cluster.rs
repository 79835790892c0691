//! One throwaway cluster: create, start, connect, stop and remove.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::reaper::{self, DIR_PREFIX};
use crate::{find_bindir, PgBinaries, ServerTls, TestkitError};

/// Settings every test cluster runs with: logical replication on, durability
/// off (a test cluster is thrown away), short timeouts so broken replication
/// connections are noticed quickly.
const BASE_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "127.0.0.1"),
    ("wal_level", "logical"),
    ("max_replication_slots", "20"),
    ("max_wal_senders", "20"),
    ("max_connections", "100"),
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("wal_sender_timeout", "5s"),
    ("shared_buffers", "64MB"),
    ("track_commit_timestamp", "on"),
    ("log_min_messages", "warning"),
];

/// How to start a cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Keep the cluster in this directory instead of a temporary one; it is
    /// reused if it already holds a cluster and is not removed on drop.
    pub data_dir: Option<PathBuf>,
    /// Extra or overriding `postgresql.conf` settings.
    pub settings: Vec<(String, String)>,
    /// A fixed port instead of a free one.
    pub port: Option<u16>,
    /// `pg_hba.conf` lines for everyone but the superuser, e.g.
    /// `host all auditor 127.0.0.1/32 scram-sha-256` or `hostssl all all
    /// 127.0.0.1/32 md5`. Empty: everyone is trusted. The superuser
    /// `postgres` is always trusted (socket and loopback), so the testkit and
    /// [`Cluster::url`] keep working.
    pub hba: Vec<String>,
    /// Runs with `ssl = on` and this certificate (see [`crate::TestCa`]).
    pub tls: Option<ServerTls>,
}

/// What `pg_hba.conf` starts with when a test gives lines of its own.
const SUPERUSER_HBA: &str = "local all all trust
host all postgres 127.0.0.1/32 trust
host replication postgres 127.0.0.1/32 trust
local replication all trust
";

/// A running PostgreSQL cluster, stopped and removed on drop.
#[derive(Debug)]
pub struct Cluster {
    bins: PgBinaries,
    /// Holds `data/`, the log and the Unix socket.
    dir: PathBuf,
    keep_dir: bool,
    port: u16,
    running: bool,
}

impl Cluster {
    /// Starts a fresh cluster with the default options.
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_with(ClusterOptions::default())
    }

    /// Starts a cluster with `options`.
    pub fn start_with(options: ClusterOptions) -> Result<Self, TestkitError> {
        let bins = find_bindir()?;
        let (dir, keep_dir) = match &options.data_dir {
            Some(dir) => (dir.clone(), true),
            None => {
                reaper::reap_once();
                let name = format!("{DIR_PREFIX}{}", uuid::Uuid::new_v4().simple());
                (std::env::temp_dir().join(name), false)
            }
        };
        let mut cluster = Cluster {
            bins,
            dir,
            keep_dir,
            port: 0,
            running: false,
        };
        if !cluster.data_dir().join("PG_VERSION").is_file() {
            cluster.create_from_template()?;
        }
        let mut settings = options.settings.clone();
        cluster.write_security(&options, &mut settings)?;
        // A free port can be taken by someone else before postgres binds it:
        // try a few.
        let mut last_error = None;
        for _ in 0..5 {
            cluster.port = match options.port {
                Some(port) => port,
                None => free_port()?,
            };
            match cluster.pg_ctl_start(&settings) {
                Ok(()) => {
                    cluster.running = true;
                    return Ok(cluster);
                }
                Err(e)
                    if options.port.is_none() && cluster.log_tail().contains("could not bind") =>
                {
                    last_error = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or(TestkitError::NoBinaries))
    }

    /// Takes charge of the cluster in `dir` that a dead process left, so
    /// dropping it stops the server (if it runs) and removes `dir`.
    pub(crate) fn adopt(bins: PgBinaries, dir: PathBuf) -> Cluster {
        let running = dir.join("data").join("postmaster.pid").is_file();
        Cluster {
            bins,
            dir,
            keep_dir: false,
            port: 0,
            running,
        }
    }

    /// The TCP port the cluster listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the cluster's data, log and socket.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server binaries in use.
    pub fn binaries(&self) -> &PgBinaries {
        &self.bins
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A libpq URL for database `db` as the superuser `postgres`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Connects to `db` as `postgres`; the connection runs on a spawned task.
    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client, TestkitError> {
        let (client, connection) =
            tokio_postgres::connect(&self.url(db), tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Creates a database with a unique name starting with `prefix` and
    /// returns its URL, so parallel tests never share one.
    pub async fn create_database(&self, prefix: &str) -> Result<String, TestkitError> {
        let clean: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let name = format!(
            "{clean}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let client = self.connect("postgres").await?;
        client
            .batch_execute(&format!("create database \"{name}\""))
            .await?;
        Ok(self.url(&name))
    }

    /// Runs `sql` with psql in `db` and returns its output (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, TestkitError> {
        let psql = self.bins.program("psql");
        let out = Command::new(&psql)
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url(db),
                "-c",
                sql,
            ])
            .output()
            .map_err(|e| command_error(&psql, e.to_string()))?;
        if !out.status.success() {
            return Err(command_error(
                &psql,
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    /// Stops the server (immediately: a test cluster has nothing to save).
    pub fn stop(&mut self) -> Result<(), TestkitError> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        let data = self.data_dir();
        let mode = if self.keep_dir { "fast" } else { "immediate" };
        self.run_pg("pg_ctl", &["-D", path_str(&data), "-m", mode, "-w", "stop"])
            .map(drop)
    }

    /// Writes `pg_hba.conf` and the TLS files the options ask for.
    fn write_security(
        &self,
        options: &ClusterOptions,
        settings: &mut Vec<(String, String)>,
    ) -> Result<(), TestkitError> {
        let data = self.data_dir();
        let write = |name: &str, text: &str| {
            let path = data.join(name);
            write_private(&path, text).map_err(|e| io_error(format!("write {}", path.display()), e))
        };
        if !options.hba.is_empty() {
            let mut hba = SUPERUSER_HBA.to_string();
            for line in &options.hba {
                hba.push_str(line);
                hba.push('\n');
            }
            write("pg_hba.conf", &hba)?;
        }
        if let Some(tls) = &options.tls {
            write("server.crt", &tls.cert_pem)?;
            write("server.key", &tls.key_pem)?;
            for (name, value) in [
                ("ssl", "on"),
                ("ssl_cert_file", "server.crt"),
                ("ssl_key_file", "server.key"),
            ] {
                settings.push((name.to_string(), value.to_string()));
            }
        }
        if !options.hba.is_empty() || options.tls.is_some() {
            self.give_to_postgres(&data)?;
        }
        Ok(())
    }

    /// Copies the machine-wide template (running initdb once to make it).
    fn create_from_template(&self) -> Result<(), TestkitError> {
        let template = self.ensure_template()?;
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| io_error(format!("create {}", self.dir.display()), e))?;
        if !self.keep_dir {
            reaper::write_owner(&self.dir)
                .map_err(|e| io_error(format!("write the owner of {}", self.dir.display()), e))?;
        }
        let status = Command::new("cp")
            .args(["-a", path_str(&template), path_str(&self.data_dir())])
            .status()
            .map_err(|e| io_error("copy the template cluster".into(), e))?;
        if !status.success() {
            return Err(command_error(
                Path::new("cp"),
                format!("copying {} failed", template.display()),
            ));
        }
        self.give_to_postgres(&self.dir)
    }

    /// The initdb'd template for this version, made once and shared.
    fn ensure_template(&self) -> Result<PathBuf, TestkitError> {
        let root = std::env::temp_dir().join(format!(
            "pgtrail-testkit-template-{}-uid{}",
            self.bins.major,
            current_uid()
        ));
        let template = root.join("data");
        if template.join("PG_VERSION").is_file() {
            return Ok(template);
        }
        std::fs::create_dir_all(&root)
            .map_err(|e| io_error(format!("create {}", root.display()), e))?;
        self.give_to_postgres(&root)?;
        // initdb into a private directory, then rename: concurrent tests race
        // harmlessly and the template is never seen half-made.
        let staging = root.join(format!("staging-{}", uuid::Uuid::new_v4().simple()));
        self.run_pg(
            "initdb",
            &[
                "-D",
                path_str(&staging),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        if std::fs::rename(&staging, &template).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        Ok(template)
    }

    fn pg_ctl_start(&self, extra: &[(String, String)]) -> Result<(), TestkitError> {
        let mut options = format!("-p {} -k {}", self.port, self.dir.display());
        let overridden = |name: &str| extra.iter().any(|(k, _)| k == name);
        // pg_ctl hands the options to a shell: quoted, a value may hold
        // spaces (`log_line_prefix = '%m [%p] '`).
        let shell_quoted = |value: &str| format!("'{}'", value.replace('\'', "'\\''"));
        for (name, value) in BASE_SETTINGS.iter().filter(|(name, _)| !overridden(name)) {
            options.push_str(&format!(" -c {name}={}", shell_quoted(value)));
        }
        for (name, value) in extra {
            options.push_str(&format!(" -c {name}={}", shell_quoted(value)));
        }
        let log = self.dir.join("postgres.log");
        let data = self.data_dir();
        self.run_pg(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-l",
                path_str(&log),
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "start",
            ],
        )
        .map(drop)
        .map_err(|e| match e {
            TestkitError::Command { command, detail } => TestkitError::Command {
                command,
                detail: format!("{detail}\nserver log:\n{}", self.log_tail()),
            },
            other => other,
        })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Runs a server program, as the `postgres` OS user when we are root.
    fn run_pg(&self, program: &str, args: &[&str]) -> Result<String, TestkitError> {
        let path = self.bins.program(program);
        let mut command = if current_uid() == 0 {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = command
            .args(args)
            .env("LC_ALL", "C")
            .output()
            .map_err(|e| command_error(&path, e.to_string()))?;
        if !out.status.success() {
            let detail = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return Err(command_error(&path, detail));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// As root, hands `dir` (recursively) to the `postgres` OS user.
    fn give_to_postgres(&self, dir: &Path) -> Result<(), TestkitError> {
        if current_uid() != 0 {
            return Ok(());
        }
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres", path_str(dir)])
            .status()
            .map_err(|e| io_error("chown to postgres".into(), e))?;
        if !status.success() {
            return Err(command_error(
                Path::new("chown"),
                format!(
                    "cannot give {} to the postgres user (does it exist?)",
                    dir.display()
                ),
            ));
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop();
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Writes a file readable by its owner only (the server refuses a key others can read).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

fn free_port() -> Result<u16, TestkitError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| io_error("find a free port".into(), e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| io_error("find a free port".into(), e))
}

fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to this process's user; avoids unsafe getuid().
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}

fn command_error(program: &Path, detail: String) -> TestkitError {
    TestkitError::Command {
        command: program.display().to_string(),
        detail,
    }
}

fn io_error(what: String, source: std::io::Error) -> TestkitError {
    TestkitError::Io { what, source }
}
