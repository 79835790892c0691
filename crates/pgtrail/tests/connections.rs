//! Connections as a libpq user makes them: the password from `PGPASSWORD`
//! or a password file (never the URL), TLS at each `sslmode` against a
//! cluster with a certificate the test made, and the refusal to send a
//! password in cleartext without TLS. Every command runs the real binary
//! with only the environment given here (no `HOME`, so no `~/.pgpass`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pgtrail_testkit::{Cluster, ClusterOptions, TestCa};

use crate::support::{pgtrail_in, Run};

const PASSWORD: &str = "pw-Zq7!x";

/// A cluster whose TCP logins (but the superuser's) use `hba`, a database
/// and a superuser `admin` with [`PASSWORD`] stored as `encryption` asks.
struct Guarded {
    cluster: Cluster,
    db: String,
    dir: tempfile::TempDir,
}

impl Guarded {
    async fn start(hba: &[&str], encryption: &str, tls: Option<&TestCa>) -> Self {
        let options = ClusterOptions {
            hba: hba.iter().map(|l| l.to_string()).collect(),
            tls: tls.map(|ca| ca.server(&["localhost"]).expect("server certificate")),
            ..ClusterOptions::default()
        };
        let cluster = Cluster::start_with(options).expect("start cluster");
        let url = cluster.create_database("conn").await.expect("database");
        let db = url.rsplit('/').next().expect("db name").to_string();
        cluster
            .psql(
                "postgres",
                &format!(
                    "set password_encryption = '{encryption}'; create role admin superuser login password '{PASSWORD}'"
                ),
            )
            .expect("create role");
        Guarded {
            cluster,
            db,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// `postgres://admin@HOST:PORT/DB` plus `query` — never a password.
    fn url(&self, host: &str, query: &str) -> String {
        format!(
            "postgres://admin@{host}:{}/{}{query}",
            self.cluster.port(),
            self.db
        )
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        pgtrail_in(self.dir.path(), args, env, None)
    }

    fn write(&self, name: &str, text: &str, mode: u32) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path_string(&path)
    }
}

fn path_string(path: &Path) -> String {
    path.to_str().expect("UTF-8 path").to_string()
}

#[track_caller]
fn assert_error_has(run: &Run, parts: &[&str]) {
    let line = run.error();
    for part in parts {
        assert!(line.contains(part), "{part:?} missing in: {line}");
    }
    assert!(!run.stderr.contains(PASSWORD), "{run:?}");
}

async fn every_part_logs_in_without_a_password_in_the_url(encryption: &str) {
    let method = encryption;
    let g = Guarded::start(
        &[
            &format!("host all all 127.0.0.1/32 {method}"),
            &format!("host replication all 127.0.0.1/32 {method}"),
        ],
        encryption,
        None,
    )
    .await;
    g.cluster
        .psql(
            &g.db,
            "create table public.items (id int primary key, name text)",
        )
        .expect("table");
    let url = g.url("127.0.0.1", "");

    // No password anywhere: one line saying what is missing and where pgtrail looked.
    let none: &[(&str, &str)] = &[];
    for args in [
        vec!["install", "--db", &url],
        vec!["--store", &url, "log"],
        vec!["replicate", "--db", &url, "--setup", "--no-stream"],
    ] {
        let run = g.run(&args, none);
        assert_error_has(
            &run,
            &["password missing for user 'admin'", "PGPASSWORD", ".pgpass"],
        );
    }

    // PGPASSWORD: install, track, the store, capture's setup.
    let env = [("PGPASSWORD", PASSWORD)];
    g.run(&["install", "--db", &url], &env).ok();
    g.run(&["track", "--db", &url, "public.items"], &env).ok();
    g.cluster
        .psql(&g.db, "insert into public.items values (1, 'one')")
        .expect("insert");
    g.run(&["drain", "--db", &url], &env).ok();
    let events = g.run(&["--store", &url, "log"], &env).events();
    assert_eq!(events.len(), 1, "{events:?}");
    g.run(&["replicate", "--db", &url, "--setup", "--no-stream"], &env)
        .ok();

    // A password file, as libpq reads it (0600, host:port:db:user:password).
    let line = format!("127.0.0.1:{}:{}:admin:{PASSWORD}\n", g.cluster.port(), g.db);
    let passfile = g.write("pgpass", &line, 0o600);
    let env = [("PGPASSFILE", passfile.as_str())];
    g.run(&["--store", &url, "log"], &env).ok();
    g.run(&["status", "--db", &url], &env).ok();

    // The same file readable by others is ignored, and the error says why.
    let loose = g.write("pgpass-loose", &line, 0o644);
    let run = g.run(&["--store", &url, "log"], &[("PGPASSFILE", loose.as_str())]);
    assert_error_has(
        &run,
        &["password missing", "pgpass-loose", "0644", "chmod 0600"],
    );

    // A line for another database does not match.
    let other = g.write("pgpass-other", "127.0.0.1:*:elsewhere:admin:x\n", 0o600);
    let run = g.run(&["--store", &url, "log"], &[("PGPASSFILE", other.as_str())]);
    assert_error_has(&run, &["password missing", "no line for this host"]);

    // A wrong password is the server's refusal, not a missing password.
    let run = g.run(&["--store", &url, "log"], &[("PGPASSWORD", "wrong")]);
    assert_error_has(&run, &["password authentication failed"]);
}

#[tokio::test]
async fn every_part_logs_in_with_scram_from_the_environment_or_a_password_file() {
    every_part_logs_in_without_a_password_in_the_url("scram-sha-256").await;
}

#[tokio::test]
async fn every_part_logs_in_with_md5_from_the_environment_or_a_password_file() {
    every_part_logs_in_without_a_password_in_the_url("md5").await;
}

#[tokio::test]
async fn tls_follows_sslmode_and_sslrootcert() {
    let ca = TestCa::new("pgtrail test CA").expect("CA");
    let stranger = TestCa::new("someone else's CA").expect("CA");
    // Only TLS logins for admin; the certificate names `localhost` only.
    let g = Guarded::start(
        &["hostssl all admin 127.0.0.1/32 scram-sha-256"],
        "scram-sha-256",
        Some(&ca),
    )
    .await;
    let root = g.write("root.crt", &ca.cert_pem(), 0o644);
    let wrong_root = g.write("stranger.crt", &stranger.cert_pem(), 0o644);
    let env = [("PGPASSWORD", PASSWORD)];
    let log = |url: &str| g.run(&["--store", url, "log"], &env);

    // Encrypted without checking the server: require, and prefer (the default).
    log(&g.url("127.0.0.1", "?sslmode=require")).ok();
    log(&g.url("127.0.0.1", "")).ok();
    // The server checked: by CA, and by CA and name.
    log(&g.url(
        "127.0.0.1",
        &format!("?sslmode=verify-ca&sslrootcert={root}"),
    ))
    .ok();
    log(&g.url(
        "localhost",
        &format!("?sslmode=verify-full&sslrootcert={root}"),
    ))
    .ok();
    // The same through the environment, as libpq reads it.
    g.run(
        &["--store", &g.url("localhost", ""), "log"],
        &[
            ("PGPASSWORD", PASSWORD),
            ("PGSSLMODE", "verify-full"),
            ("PGSSLROOTCERT", root.as_str()),
        ],
    )
    .ok();

    // A certificate for another name fails verify-full…
    let run = log(&g.url(
        "127.0.0.1",
        &format!("?sslmode=verify-full&sslrootcert={root}"),
    ));
    assert_error_has(
        &run,
        &["TLS with 127.0.0.1", "verify-full", "not valid for name"],
    );
    // …and one signed by a CA not trusted fails verify-ca and verify-full.
    for mode in ["verify-ca", "verify-full"] {
        let run = log(&g.url(
            "localhost",
            &format!("?sslmode={mode}&sslrootcert={wrong_root}"),
        ));
        assert_error_has(&run, &["TLS with localhost", mode, "UnknownIssuer"]);
    }
    // Checking needs a root: said before anything is sent.
    let run = log(&g.url("localhost", "?sslmode=verify-full"));
    assert_error_has(&run, &["sslrootcert"]);
    // Without TLS the server's hostssl-only rules turn the login away.
    let run = log(&g.url("127.0.0.1", "?sslmode=disable"));
    assert_error_has(&run, &["no pg_hba.conf entry", "no encryption"]);
}

#[tokio::test]
async fn a_cleartext_password_is_sent_only_over_tls_or_when_allowed() {
    let ca = TestCa::new("pgtrail test CA").expect("CA");
    // `password` makes the server ask for the password in cleartext.
    let g = Guarded::start(
        &["host all admin 127.0.0.1/32 password"],
        "scram-sha-256",
        Some(&ca),
    )
    .await;
    let env = [("PGPASSWORD", PASSWORD)];
    // Over plain TCP, someone on the path would read it: refused, nothing sent.
    let run = g.run(
        &["--store", &g.url("127.0.0.1", "?sslmode=disable"), "log"],
        &env,
    );
    assert_error_has(&run, &["cleartext", "without TLS", "require_auth=password"]);
    let run = g.run(
        &["install", "--db", &g.url("127.0.0.1", "?sslmode=disable")],
        &env,
    );
    assert_error_has(&run, &["cleartext"]);
    // Inside TLS it is encrypted: sent.
    g.run(
        &["--store", &g.url("127.0.0.1", "?sslmode=require"), "log"],
        &env,
    )
    .ok();
    // The user's explicit permission, libpq's way.
    g.run(
        &[
            "--store",
            &g.url("127.0.0.1", "?sslmode=disable&require_auth=password"),
            "log",
        ],
        &env,
    )
    .ok();
}
