//! The replication connection logs in as libpq would: the password from
//! `PGPASSWORD` or a password file, TLS by `sslmode` with the server's
//! certificate checked, and no cleartext password without TLS. The
//! environment is handed to the parser, so tests never change the process's.

use std::os::unix::fs::PermissionsExt;

use pgtrail_cdc::connection::{ConnectOptions, ReplicationConnection};
use pgtrail_cdc::CdcError;
use pgtrail_connect::{ConnectConfig, ConnectError};
use pgtrail_testkit::{Cluster, ClusterOptions, TestCa};

const PASSWORD: &str = "repl-Pw9";

fn options(url: &str, env: &[(&str, &str)]) -> ConnectOptions {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |var: &str| env.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone());
    ConnectOptions::from_config(ConnectConfig::parse_with_env(url, &lookup).expect("valid URL"))
}

async fn login(url: &str, env: &[(&str, &str)]) -> Result<String, CdcError> {
    let mut conn = ReplicationConnection::connect(&options(url, env)).await?;
    let system = conn.identify_system().await?;
    conn.close().await;
    Ok(system.dbname)
}

#[tokio::test]
async fn replication_logs_in_with_the_environment_a_password_file_and_tls() {
    let ca = TestCa::new("pgtrail test CA").expect("CA");
    let cluster = Cluster::start_with(ClusterOptions {
        hba: vec![
            "hostssl all replicator 127.0.0.1/32 scram-sha-256".into(),
            "host all cleartext 127.0.0.1/32 password".into(),
        ],
        tls: Some(ca.server(&["localhost"]).expect("server certificate")),
        ..ClusterOptions::default()
    })
    .expect("start cluster");
    cluster
        .psql(
            "postgres",
            &format!(
                "create role replicator replication login password '{PASSWORD}';
                 create role cleartext replication login password '{PASSWORD}'"
            ),
        )
        .expect("roles");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root.crt");
    std::fs::write(&root, ca.cert_pem()).expect("root");
    let root = root.to_str().expect("utf8").to_string();
    let port = cluster.port();
    let url = |user: &str, host: &str, query: &str| {
        format!("postgres://{user}@{host}:{port}/postgres{query}")
    };

    // PGPASSWORD over TLS, the certificate checked by CA and name.
    let verified = url(
        "replicator",
        "localhost",
        &format!("?sslmode=verify-full&sslrootcert={root}"),
    );
    let dbname = login(&verified, &[("PGPASSWORD", PASSWORD)])
        .await
        .expect("logs in");
    assert_eq!(dbname, "postgres");

    // A password file instead (and sslmode from the environment).
    let passfile = dir.path().join("pgpass");
    std::fs::write(
        &passfile,
        format!("localhost:{port}:*:replicator:{PASSWORD}\n"),
    )
    .expect("write");
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    login(
        &url("replicator", "localhost", ""),
        &[
            ("PGPASSFILE", passfile.to_str().expect("utf8")),
            ("PGSSLMODE", "verify-full"),
            ("PGSSLROOTCERT", &root),
        ],
    )
    .await
    .expect("logs in with the password file");

    // No password: one error naming what is missing.
    let error = login(&url("replicator", "localhost", "?sslmode=require"), &[])
        .await
        .expect_err("no password");
    assert!(
        matches!(
            error,
            CdcError::Connect(ConnectError::PasswordMissing { .. })
        ),
        "{error:?}"
    );

    // A certificate for another name fails verify-full before any password is sent.
    let error = login(
        &url(
            "replicator",
            "127.0.0.1",
            &format!("?sslmode=verify-full&sslrootcert={root}"),
        ),
        &[("PGPASSWORD", PASSWORD)],
    )
    .await
    .expect_err("wrong name");
    assert!(
        matches!(error, CdcError::Connect(ConnectError::Tls { .. })),
        "{error:?}"
    );

    // hostssl only: without TLS the server turns the login away.
    let error = login(
        &url("replicator", "127.0.0.1", "?sslmode=disable"),
        &[("PGPASSWORD", PASSWORD)],
    )
    .await
    .expect_err("no TLS");
    assert!(
        error.to_string().contains("no pg_hba.conf entry"),
        "{error}"
    );

    // The server asks for the password in cleartext: not over plain TCP…
    let error = login(
        &url("cleartext", "127.0.0.1", "?sslmode=disable"),
        &[("PGPASSWORD", PASSWORD)],
    )
    .await
    .expect_err("cleartext refused");
    assert!(
        matches!(
            error,
            CdcError::Connect(ConnectError::CleartextRefused { .. })
        ),
        "{error:?}"
    );
    // …but inside TLS, or when the user allows it.
    login(
        &url("cleartext", "127.0.0.1", "?sslmode=require"),
        &[("PGPASSWORD", PASSWORD)],
    )
    .await
    .expect("cleartext inside TLS");
    login(
        &url(
            "cleartext",
            "127.0.0.1",
            "?sslmode=disable&require_auth=password",
        ),
        &[("PGPASSWORD", PASSWORD)],
    )
    .await
    .expect("cleartext allowed explicitly");
}
