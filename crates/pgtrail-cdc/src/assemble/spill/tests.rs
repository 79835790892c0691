//! Spill files round-trip items exactly and clean up after themselves.

use std::os::unix::fs::PermissionsExt;

use pgtrail_core::{Event, Kind, Source};
use serde_json::json;

use super::*;

fn tricky_event() -> Event {
    let mut event = Event::new(Source::Cdc, Kind::RowChange);
    event.schema = Some("public".into());
    event.table = Some("ledger \"quoted\"\n".into());
    event.operation = Some("UPDATE".into());
    let object = |value: serde_json::Value| value.as_object().expect("object").clone();
    event.pk = Some(object(json!({"id": "42", "région": "ü"})));
    // Numeric digits beyond f64, a NULL, nested JSON, an array with NULL, text with NUL and newlines.
    event.old = Some(object(json!({
        "amount": "12345678901234567890.1234567890",
        "note": null,
        "doc": {"a": [1, 2.50, {"b": null}], "n": 12345678901234567890123u128},
        "tags": ["x", null],
        "raw": "line\nbreak\u{0}nul",
    })));
    event.new = Some(object(json!({"amount": "0.0000000001", "note": "set"})));
    event.changed = vec!["amount".into(), "note".into()];
    // An unchanged TOAST value the source could not see: absent from new, listed here.
    event.partial = vec!["big".into()];
    event.context = Some(object(json!({"request": "r-1"})));
    event
}

fn full_actor() -> Actor {
    Actor {
        app_user: Some("alice".into()),
        context: Some(r#"{"tenant":"t1"}"#.into()),
        db_user: Some("app".into()),
        current_user: Some("owner".into()),
        client_addr: Some("10.0.0.1".into()),
        client_port: Some(5433),
        application_name: Some("shop".into()),
        backend_pid: Some(777),
        comment: vec![("request_id".into(), "r-9".into())],
    }
}

#[test]
fn items_round_trip_exactly_in_order() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut dir = SpillDir::open(temp.path().join("spill")).expect("opens");
    let mut file = dir.create(9).expect("creates");
    let event = tricky_event();
    let items = vec![
        (9, Item::Actor(full_actor())),
        (9, Item::Event(Box::new(event.clone()))),
        (12, Item::Actor(Actor::default())),
        (
            12,
            Item::Event(Box::new(Event::new(Source::Cdc, Kind::Ddl))),
        ),
    ];
    for (xid, item) in &items {
        file.write(*xid, item).expect("writes");
    }
    assert_eq!(file.records(), 4);
    let mut reader = file.into_reader().expect("reads");
    for (xid, item) in items {
        let (read_xid, read_item, size) = reader.next_item().expect("reads").expect("an item");
        assert_eq!(read_xid, xid);
        assert!(size > 13);
        match (item, read_item) {
            (Item::Actor(a), Item::Actor(b)) => assert_eq!(a, b),
            (Item::Event(a), Item::Event(b)) => {
                assert_eq!(a, b);
                // The hashed form too, byte for byte.
                assert_eq!(
                    pgtrail_core::canonical_json(&a),
                    pgtrail_core::canonical_json(&b)
                );
            }
            (a, b) => panic!("kind changed: {a:?} became {b:?}"),
        }
    }
    assert!(reader.next_item().expect("end").is_none());
}

#[test]
fn files_are_private_and_removed_after_use() {
    let temp = tempfile::tempdir().expect("temp dir");
    let path = temp.path().join("a").join("spill");
    let mut dir = SpillDir::open(&path).expect("opens");
    let mode = std::fs::metadata(&path)
        .expect("exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);

    let mut file = dir.create(1).expect("creates");
    file.write(1, &Item::Actor(Actor::default()))
        .expect("writes");
    let files = || std::fs::read_dir(&path).expect("lists").count();
    assert_eq!(files(), 1);
    let mode = std::fs::read_dir(&path)
        .expect("lists")
        .map(|e| {
            e.expect("entry")
                .metadata()
                .expect("meta")
                .permissions()
                .mode()
        })
        .next()
        .expect("a file");
    assert_eq!(mode & 0o777, 0o600);
    let reader = file.into_reader().expect("reads");
    assert_eq!(files(), 1);
    drop(reader);
    assert_eq!(files(), 0, "read back and dropped: removed");

    // Dropped while still being written (an aborted transaction): removed too.
    let file = dir.create(2).expect("creates");
    drop(file);
    assert_eq!(files(), 0);
    // The consumer stopped: its empty directory goes too.
    drop(dir);
    assert!(!path.exists());
}

#[test]
fn opening_removes_leftover_spill_files_only() {
    let temp = tempfile::tempdir().expect("temp dir");
    let path = temp.path().join("spill");
    {
        let mut dir = SpillDir::open(&path).expect("opens");
        let mut file = dir.create(5).expect("creates");
        file.write(5, &Item::Actor(Actor::default()))
            .expect("writes");
        // A crash: the file is never dropped.
        std::mem::forget(file);
    }
    std::fs::write(path.join("notes.txt"), "not ours").expect("writes");
    assert_eq!(std::fs::read_dir(&path).expect("lists").count(), 2);
    SpillDir::open(&path).expect("reopens");
    let left: Vec<_> = std::fs::read_dir(&path)
        .expect("lists")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["notes.txt"]);
}

#[test]
fn a_spill_file_that_cannot_be_created_is_an_error() {
    let temp = tempfile::tempdir().expect("temp dir");
    let path = temp.path().join("spill");
    let mut dir = SpillDir::open(&path).expect("opens");
    std::fs::remove_dir(&path).expect("removes");
    let error = dir.create(3).expect_err("no directory");
    assert_eq!(error.path.parent(), Some(path.as_path()));
    assert!(error.to_string().contains("create spill file"), "{error}");
}

#[test]
fn a_full_disk_is_an_error_not_a_lost_item() {
    // /dev/full fails every write with ENOSPC, like a full disk.
    let Ok(full) = OpenOptions::new().write(true).read(true).open("/dev/full") else {
        return;
    };
    let mut file = SpillFile {
        writer: BufWriter::with_capacity(16, full),
        path: Removal(PathBuf::from("/nonexistent/pgtrail-test.spill")),
        records: 0,
        bytes: 0,
        body: Vec::new(),
    };
    let event = Item::Event(Box::new(tricky_event()));
    let error = file.write(1, &event).expect_err("the disk is full");
    assert_eq!(error.source.raw_os_error(), Some(28), "ENOSPC: {error:?}");
}

/// Someone who can put a directory where the consumer spills can feed it
/// forged changes: each way of planting one is refused before anything is
/// read from it.
#[test]
fn a_directory_someone_else_controls_is_refused() {
    let temp = tempfile::tempdir().expect("temp dir");
    let is_root = rustix::process::geteuid().is_root();

    // A directory another user made in advance.
    let planted = if is_root {
        let planted = temp.path().join("planted");
        std::fs::create_dir(&planted).expect("mkdir");
        std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).expect("chown to nobody");
        planted
    } else {
        PathBuf::from("/usr")
    };
    let error = SpillDir::open(&planted).expect_err("not ours");
    assert!(
        format!("{:?}", error.source).contains("belongs to uid"),
        "{error:?}"
    );

    // A symbolic link to a directory of the attacker's choosing.
    let target = temp.path().join("elsewhere");
    std::fs::create_dir(&target).expect("mkdir");
    let link = temp.path().join("link");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let error = SpillDir::open(&link).expect_err("a link");
    assert!(
        format!("{:?}", error.source).contains("symbolic link"),
        "{error:?}"
    );

    // A parent anyone may write to (without /tmp's sticky bit): the directory could be swapped.
    let open_parent = temp.path().join("open");
    std::fs::create_dir(&open_parent).expect("mkdir");
    std::fs::set_permissions(&open_parent, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let error = SpillDir::open(open_parent.join("spill")).expect_err("swappable");
    assert!(
        format!("{:?}", error.source).contains("writable by others"),
        "{error:?}"
    );
    // With the sticky bit (as /tmp has), only the owner can rename it: fine.
    std::fs::set_permissions(&open_parent, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    SpillDir::open(open_parent.join("spill2")).expect("sticky parent");
}

#[test]
fn the_default_directory_is_per_user_not_shared() {
    let default = crate::consumer::default_spill_dir();
    let uid = rustix::process::geteuid().as_raw();
    assert_eq!(
        default.file_name().and_then(|n| n.to_str()),
        Some(format!("pgtrail-spill-{uid}").as_str())
    );
}
