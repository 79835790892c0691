//! Getting started: init, the configuration layers, help text.

use crate::support::pgtrail_in;

#[test]
fn init_writes_the_example_and_never_overwrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = pgtrail_in(dir.path(), &["init"], &[], None);
    assert!(run.ok().contains("pgtrail.toml"), "{run:?}");
    let written = std::fs::read_to_string(dir.path().join("pgtrail.toml")).expect("written");
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../pgtrail.example.toml"
    ))
    .expect("example");
    assert_eq!(written, example);

    std::fs::write(dir.path().join("pgtrail.toml"), "# mine\n").expect("write");
    let again = pgtrail_in(dir.path(), &["init"], &[], None);
    assert!(again.error().contains("--force"), "{again:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("pgtrail.toml")).expect("read"),
        "# mine\n"
    );
    pgtrail_in(dir.path(), &["init", "--force"], &[], None).ok();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("pgtrail.toml")).expect("read"),
        example
    );
}

#[test]
fn file_then_environment_then_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sample = crate::support::SAMPLE;
    std::fs::write(
        dir.path().join("pgtrail.toml"),
        "[store]\nurl = \"sqlite:from-file.db\"\n",
    )
    .expect("write");
    pgtrail_in(dir.path(), &["import", sample], &[], None).ok();
    assert!(
        dir.path().join("from-file.db").is_file(),
        "the file's store"
    );

    pgtrail_in(
        dir.path(),
        &["import", sample],
        &[("PGTRAIL_STORE__URL", "sqlite:from-env.db")],
        None,
    )
    .ok();
    assert!(
        dir.path().join("from-env.db").is_file(),
        "the environment overrides the file"
    );

    pgtrail_in(
        dir.path(),
        &["--store", "sqlite:from-flag.db", "import", sample],
        &[("PGTRAIL_STORE__URL", "sqlite:from-env.db")],
        None,
    )
    .ok();
    assert!(
        dir.path().join("from-flag.db").is_file(),
        "the flag overrides the environment"
    );

    std::fs::write(
        dir.path().join("elsewhere.toml"),
        "[store]\nurl = \"sqlite:named.db\"\n",
    )
    .expect("write");
    pgtrail_in(
        dir.path(),
        &["--config", "elsewhere.toml", "import", sample],
        &[],
        None,
    )
    .ok();
    assert!(
        dir.path().join("named.db").is_file(),
        "--config picks the file"
    );
}

#[test]
fn unknown_keys_are_errors_that_name_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("pgtrail.toml"),
        "[store]\nuri = \"sqlite:x.db\"\n",
    )
    .expect("write");
    let run = pgtrail_in(dir.path(), &["log"], &[], None);
    assert!(run.error().contains("uri"), "{run:?}");

    std::fs::remove_file(dir.path().join("pgtrail.toml")).expect("remove");
    let run = pgtrail_in(
        dir.path(),
        &["log"],
        &[("PGTRAIL_SIGNING__PRIVATE", "k")],
        None,
    );
    assert!(run.error().contains("PGTRAIL_SIGNING__PRIVATE"), "{run:?}");

    let run = pgtrail_in(dir.path(), &["--config", "missing.toml", "log"], &[], None);
    assert!(run.error().contains("missing.toml"), "{run:?}");
}

#[test]
fn help_shows_examples() {
    let dir = tempfile::tempdir().expect("tempdir");
    let top = pgtrail_in(dir.path(), &["--help"], &[], None);
    assert!(
        top.ok().contains("pgtrail import examples/sample.jsonl"),
        "{top:?}"
    );
    for verb in [
        "log",
        "sessions",
        "history",
        "as-of",
        "blame",
        "import",
        "export",
        "verify",
        "retention",
        "keygen",
        "checkpoint",
        "init",
    ] {
        let help = pgtrail_in(dir.path(), &[verb, "--help"], &[], None);
        assert!(
            help.ok().contains("Example"),
            "{verb} --help has an example: {help:?}"
        );
    }
}
