//! The checkpointer against real SQLite stores and a real witness file: it
//! signs at start and the last events at a stop, never creates a store, and
//! refuses (at start, so `pgtrail run` does not start) a store that someone
//! with the file rolled back to an older copy.

use std::path::Path;
use std::time::Duration;

use pgtrail_core::{Event, Kind, Source};
use pgtrail_pipeline::checkpointer::{CheckpointError, Checkpointer, Keys, Target};
use pgtrail_store::sqlite::SqliteStore;
use pgtrail_store::{witness, KeyPair, Store};

/// Long enough that no round runs by itself during a test.
const INTERVAL: Duration = Duration::from_secs(3600);

fn events(from: usize, n: usize) -> Vec<Event> {
    (from..from + n)
        .map(|i| {
            let mut e = Event::new(Source::Proxy, Kind::Statement);
            e.db_user = Some("app".into());
            e.sql = Some(format!("update t set v = 1 where id = {i}"));
            e
        })
        .collect()
}

/// A key saved in `dir`, as `pgtrail keygen` writes it.
fn new_key(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("signing.key");
    let key = KeyPair::generate().expect("key");
    key.save(&path, &dir.join("signing.key.pub")).expect("save");
    path
}

fn keys(key: &Path, witness: &Path) -> Keys {
    Keys {
        key: KeyPair::load(key).expect("load key"),
        trusted: Vec::new(),
        witness: Some(witness.to_path_buf()),
        witness_servers: Vec::new(),
    }
}

async fn append(path: &Path, from: usize, n: usize) {
    let store = SqliteStore::open(path).await.expect("open");
    store.append(&events(from, n)).await.expect("append");
}

async fn checkpoint_seqs(path: &Path) -> Vec<i64> {
    let store = SqliteStore::open(path).await.expect("open");
    let checkpoints = store.checkpoints().await.expect("checkpoints");
    checkpoints.iter().map(|c| c.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signs_at_start_and_the_last_events_at_a_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("trail.db");
    let witness_file = dir.path().join("witness.notes");
    let key = new_key(dir.path());
    append(&db, 0, 3).await;
    let url = format!("sqlite:{}", db.display());

    let running = Checkpointer::start(
        keys(&key, &witness_file),
        vec![Target::Url(url.clone())],
        INTERVAL,
    )
    .await
    .expect("start");
    assert_eq!(checkpoint_seqs(&db).await, [3], "signed at start");

    // Events stored while it runs are covered by the last checkpoint.
    append(&db, 3, 2).await;
    let last = running.finish().await;
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(last[0].1.seq, 5);
    assert_eq!(checkpoint_seqs(&db).await, [3, 5]);
    let notes = witness::read(&witness_file).expect("witness").notes;
    assert_eq!(notes.len(), 2, "every checkpoint is witnessed");

    // Nothing moved: a stop signs nothing more (the start's heartbeat aside).
    let running = Checkpointer::start(keys(&key, &witness_file), vec![Target::Url(url)], INTERVAL)
        .await
        .expect("start");
    assert!(running.finish().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_does_not_exist_is_not_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("not-yet.db");
    let key = new_key(dir.path());
    let running = Checkpointer::start(
        keys(&key, &dir.path().join("witness.notes")),
        vec![Target::Url(format!("sqlite:{}", db.display()))],
        INTERVAL,
    )
    .await
    .expect("start");
    assert!(running.finish().await.is_empty());
    assert!(!db.exists(), "the checkpointer never creates a store");
}

/// Someone with the store file puts back an older copy (dropping the newest
/// events and their checkpoint): the witness still holds that checkpoint,
/// so the checkpointer refuses to start rather than sign the older chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_copy_put_back_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("trail.db");
    let witness_file = dir.path().join("witness.notes");
    let key = new_key(dir.path());
    let url = format!("sqlite:{}", db.display());

    append(&db, 0, 3).await;
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).expect("mkdir");
    for entry in std::fs::read_dir(dir.path()).expect("ls") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            std::fs::copy(&path, copy.join(path.file_name().expect("name"))).expect("copy");
        }
    }
    append(&db, 3, 2).await;
    let running = Checkpointer::start(
        keys(&key, &witness_file),
        vec![Target::Url(url.clone())],
        INTERVAL,
    )
    .await
    .expect("start");
    running.finish().await;
    assert_eq!(checkpoint_seqs(&db).await, [5]);

    for name in ["trail.db", "trail.db-wal", "trail.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(name));
        if copy.join(name).exists() {
            std::fs::copy(copy.join(name), dir.path().join(name)).expect("put back");
        }
    }
    let refused = Checkpointer::start(keys(&key, &witness_file), vec![Target::Url(url)], INTERVAL)
        .await
        .err()
        .expect("an older copy is refused");
    assert!(
        matches!(refused, CheckpointError::Refused(_)),
        "{refused:?}"
    );
    assert!(
        checkpoint_seqs(&db).await.is_empty(),
        "nothing was signed over the older copy"
    );
}

/// Witness servers that refuse connections or never answer: checkpoints
/// are signed and stored all the same, within the submission timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witnesses_that_are_down_never_stop_checkpoints() {
    use pgtrail_pipeline::witnesses::{WitnessServer, SUBMIT_TIMEOUT};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("trail.db");
    let key = new_key(dir.path());
    append(&db, 0, 3).await;
    // A port nobody listens on, and a listener that never accepts.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_url = format!("http://{}", silent.local_addr().expect("addr"));
    let vkey = pgtrail_store::cosignature::WitnessKey {
        name: "w".into(),
        key: KeyPair::generate().expect("key").verifying_key(),
    }
    .to_vkey();
    let mut keys = keys(&key, &dir.path().join("witness.notes"));
    keys.witness_servers = vec![
        WitnessServer::parse(&closed_url, &vkey).expect("witness"),
        WitnessServer::parse(&silent_url, &vkey).expect("witness"),
    ];
    let started = std::time::Instant::now();
    let running = Checkpointer::start(
        keys,
        vec![Target::Url(format!("sqlite:{}", db.display()))],
        INTERVAL,
    )
    .await
    .expect("start");
    assert!(
        started.elapsed() < SUBMIT_TIMEOUT * 2,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(checkpoint_seqs(&db).await, [3], "signed at start");
    append(&db, 3, 2).await;
    assert_eq!(running.finish().await.len(), 1);
    assert_eq!(checkpoint_seqs(&db).await, [3, 5]);
    let store = SqliteStore::open(&db).await.expect("open");
    assert!(store.cosignatures(5).await.expect("kept").is_empty());
    drop(silent);
}
