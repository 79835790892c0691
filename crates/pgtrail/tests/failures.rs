//! What a user sees when something is wrong: one `error: …` line naming what
//! and where, exit status 2, nothing half-done.

use std::process::{Command, Stdio};

use crate::support::{pgtrail_in, Backend, Trail};

#[tokio::test]
async fn an_unreadable_store_path_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = "sqlite:/nonexistent/dir/trail.db";
    let run = pgtrail_in(
        dir.path(),
        &["--store", url, "import", crate::support::SAMPLE],
        &[],
        None,
    );
    assert!(run.error().contains("/nonexistent/dir/trail.db"), "{run:?}");

    let unreadable = dir.path().join("a-directory.db");
    std::fs::create_dir(&unreadable).expect("mkdir");
    let url = format!("sqlite:{}", unreadable.display());
    let run = pgtrail_in(
        dir.path(),
        &["--store", &url, "import", crate::support::SAMPLE],
        &[],
        None,
    );
    assert!(run.error().contains("a-directory.db"), "{run:?}");
}

#[test]
fn reading_a_missing_store_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    // (`verify` fails a check instead, exit 1: see integrity.rs.)
    for verb in [&["log"][..], &["history", "users", "id=1"], &["export"]] {
        let run = pgtrail_in(dir.path(), verb, &[], None);
        assert!(
            run.error().contains("no store at pgtrail.db"),
            "{verb:?}: {run:?}"
        );
    }
    assert!(!dir.path().join("pgtrail.db").exists());
}

#[tokio::test]
async fn a_foreign_file_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "shopping list\n").expect("write");
    let url = format!("sqlite:{}", file.display());
    let run = pgtrail_in(
        dir.path(),
        &["--store", &url, "import", crate::support::SAMPLE],
        &[],
        None,
    );
    let line = run.error();
    assert!(
        line.contains("notes.txt") && line.contains("not a pgtrail store"),
        "{line}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        "shopping list\n"
    );

    // Another program's SQLite database is foreign too.
    let other = dir.path().join("app.db");
    rusqlite::Connection::open(&other)
        .and_then(|c| c.execute_batch("create table t (x int); insert into t values (1);"))
        .expect("make a database");
    let url = format!("sqlite:{}", other.display());
    let run = pgtrail_in(dir.path(), &["--store", &url, "log"], &[], None);
    assert!(run.error().contains("not a pgtrail store"), "{run:?}");
}

#[tokio::test]
async fn a_newer_schema_version_is_refused_sqlite() {
    let trail = Trail::new(Backend::Sqlite).await;
    trail.import_sample();
    rusqlite::Connection::open(trail.sqlite_file())
        .and_then(|c| c.pragma_update(None, "user_version", 99))
        .expect("bump version");
    let line = trail.run(&["log"]).error().to_string();
    assert!(
        line.contains("schema version 99") && line.contains("upgrade pgtrail"),
        "{line}"
    );
}

#[tokio::test]
async fn a_newer_schema_version_is_refused_postgres() {
    let trail = Trail::new(Backend::Postgres).await;
    trail.import_sample();
    trail.psql(
        "insert into pgtrail.schema_migrations (version, name) values (99, 'from the future')",
    );
    let line = trail.run(&["log"]).error().to_string();
    assert!(
        line.contains("schema version 99") && line.contains("upgrade pgtrail"),
        "{line}"
    );
}

#[tokio::test]
async fn invalid_arguments_name_the_flag_and_the_form() {
    let trail = Trail::new(Backend::Sqlite).await;
    trail.import_sample();
    let line = trail
        .run(&["log", "--since", "the day before yesterday"])
        .error()
        .to_string();
    assert!(
        line.contains("--since")
            && line.contains("'the day before yesterday'")
            && line.contains("7d"),
        "{line}"
    );
    let line = trail
        .run(&["as-of", "users", "id=1", "last tuesday"])
        .error()
        .to_string();
    assert!(line.contains("'last tuesday'"), "{line}");
    let line = trail.run(&["log", "--pk", "42"]).error().to_string();
    assert!(line.contains("--pk") && line.contains("id=42"), "{line}");
    let line = trail.run(&["history", "users", "42"]).error().to_string();
    assert!(line.contains("invalid key '42'"), "{line}");
    let line = trail.run(&["log", "--kind", "rows"]).error().to_string();
    assert!(
        line.contains("--kind") && line.contains("row_change"),
        "{line}"
    );
    let line = trail
        .run(&["retention", "--keep", "forever"])
        .error()
        .to_string();
    assert!(
        line.contains("--keep") && line.contains("forever"),
        "{line}"
    );
}

#[tokio::test]
async fn an_unknown_table_is_an_empty_answer() {
    let trail = Trail::new(Backend::Sqlite).await;
    trail.import_sample();
    assert_eq!(trail.run(&["log", "--table", "public.nothing"]).ok(), "");
    assert!(trail
        .run(&["history", "nothing", "id=1", "--format", "table"])
        .ok()
        .contains("no changes recorded"));
}

#[tokio::test]
async fn an_unreachable_postgres_fails_with_the_url_and_no_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Port 1 on loopback: nothing listens there, the connection is refused.
    let url = "postgres://auditor:s3cret@127.0.0.1:1/trail";
    let run = pgtrail_in(dir.path(), &["--store", url, "log"], &[], None);
    let line = run.error();
    assert!(line.contains("127.0.0.1:1"), "{line}");
    assert!(
        !line.contains("s3cret") && !run.stderr.contains("s3cret"),
        "{run:?}"
    );
}

#[tokio::test]
async fn a_closed_pipe_ends_quietly() {
    let trail = Trail::new(Backend::Sqlite).await;
    trail.import_sample();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgtrail"))
        .args(["--store", &trail.url, "export"])
        .current_dir(trail.dir.path())
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wait");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
}

#[tokio::test]
async fn retention_keep_out_of_range_is_refused_not_a_panic() {
    let trail = crate::support::Trail::new(crate::support::Backend::Sqlite).await;
    trail.import_sample();
    // Parses as a duration, but now minus it falls outside the calendar.
    let run = trail.run(&["retention", "--keep", "99999999999d"]);
    let line = run.error();
    assert!(
        line.contains("--keep 99999999999d is out of range"),
        "{line}"
    );
    assert!(!run.stderr.contains("panicked"), "{run:?}");
    assert_eq!(trail.run(&["log"]).events().len(), 20, "nothing removed");
}
