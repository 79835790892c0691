//! Two `pgtrail witness` processes and a store whose checkpoints `pgtrail
//! run`'s checkpointer signs and submits to both: both cosign, `verify
//! --witness-key` holds; then whoever holds the store file and the signing
//! key forks the log (a copy grown with other events, re-signed with the
//! same key) and rolls it back (an older, smaller checkpoint): each witness
//! refuses each, and verify with two required cosignatures fails on the
//! fork. A witness's state file edited on disk stops it; a malformed
//! request gets 400 and the witness keeps cosigning.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pgtrail_core::{Event, Kind, Source};
use pgtrail_pipeline::checkpointer::{Checkpointer, Keys, Target};
use pgtrail_pipeline::witnesses::{post, request_body, WitnessServer};
use pgtrail_store::signing::{sign_head, Signed, Signer};
use pgtrail_store::sqlite::SqliteStore;
use pgtrail_store::{Checkpoint, KeyPair, Store};

use crate::support::pgtrail_in;

const INTERVAL: Duration = Duration::from_secs(3600);

fn events(tag: &str, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let mut e = Event::new(Source::Proxy, Kind::Statement);
            e.db_user = Some("app".into());
            e.sql = Some(format!(
                "update accounts set owner = '{tag}' where id = {i}"
            ));
            e
        })
        .collect()
}

/// Copies a closed SQLite store (its WAL too, if one was left).
fn copy_store(from: &Path, to: &Path) {
    std::fs::copy(from, to).expect("copy");
    for suffix in ["-wal", "-shm"] {
        let side = format!("{}{suffix}", from.display());
        if Path::new(&side).exists() {
            std::fs::copy(&side, format!("{}{suffix}", to.display())).expect("copy");
        }
    }
}

async fn append(path: &Path, tag: &str, n: usize) {
    let store = SqliteStore::open(path).await.expect("open");
    store.append(&events(tag, n)).await.expect("append");
}

/// A running `pgtrail witness`, killed when dropped.
struct WitnessProcess {
    child: Child,
    url: String,
    vkey: String,
}

impl Drop for WitnessProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn witness_command(dir: &Path, n: usize, origin: &str, log_key: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pgtrail"));
    command
        .args(["witness", "--listen", "127.0.0.1:0", "--state"])
        .arg(dir.join(format!("state{n}")))
        .arg("--key")
        .arg(dir.join(format!("witness{n}.key")))
        .args(["--name", &format!("witness{n}.example")])
        .arg("--log")
        .arg(format!("{origin}={}", log_key.display()))
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn start_witness(dir: &Path, n: usize, origin: &str, log_key: &Path) -> WitnessProcess {
    let key_path = dir.join(format!("witness{n}.key"));
    if !key_path.exists() {
        KeyPair::generate()
            .expect("key")
            .save(&key_path, &dir.join(format!("witness{n}.key.pub")))
            .expect("save");
    }
    let vkey = pgtrail_in(
        dir,
        &[
            "witness",
            "--key",
            &key_path.display().to_string(),
            "--name",
            &format!("witness{n}.example"),
            "--print-vkey",
        ],
        &[],
        None,
    )
    .ok()
    .trim()
    .to_string();
    let mut child = witness_command(dir, n, origin, log_key)
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("the witness did not start: {line:?}"))
        .to_string();
    WitnessProcess {
        child,
        url: format!("http://{address}"),
        vkey,
    }
}

fn verify(dir: &Path, db: &Path, public: &Path, vkeys: &[&str], min: usize) -> (i32, String) {
    let mut args = vec![
        "--format".to_string(),
        "table".into(),
        "verify".into(),
        "--public-key".into(),
        public.display().to_string(),
    ];
    for vkey in vkeys {
        args.push("--witness-key".into());
        args.push((*vkey).to_string());
    }
    args.push("--min-cosignatures".into());
    args.push(min.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let url = format!("sqlite:{}", db.display());
    let run = pgtrail_in(dir, &args, &[("PGTRAIL_STORE", url.as_str())], None);
    (run.code, format!("{}{}", run.stdout, run.stderr))
}

/// Signs the head of the store at `path` with `key` (no witness servers).
/// A proof of event 15 carries both witnesses' cosignatures of its
/// checkpoint: `verify-proof --witness-key` requires them offline, and a
/// cosignature edited in the file, or one missing, fails it.
fn proof_carries_the_cosignatures(dir: &Path, db: &Path, public: &Path, vkeys: &[&str]) {
    let store = format!("sqlite:{}", db.display());
    let file = dir.join("event15.tlog-proof");
    let public = public.to_str().expect("utf8");
    pgtrail_in(
        dir,
        &[
            "--store",
            &store,
            "prove",
            "15",
            "--public-key",
            public,
            "--out",
            file.to_str().expect("utf8"),
        ],
        &[],
        None,
    )
    .ok();
    let check = |file: &Path, keys: &[&str], min: Option<&str>| {
        let mut args = vec![
            "verify-proof".to_string(),
            file.display().to_string(),
            "--public-key".into(),
            public.to_string(),
        ];
        for key in keys {
            args.push("--witness-key".into());
            args.push((*key).to_string());
        }
        if let Some(min) = min {
            args.push("--min-cosignatures".into());
            args.push(min.into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        pgtrail_in(dir, &args, &[], None)
    };
    let both = check(&file, vkeys, None);
    assert_eq!(both.code, 0, "{both:?}");
    let verdict: serde_json::Value = serde_json::from_str(&both.stdout).expect("json");
    let cosigners: Vec<&str> = verdict["cosigned_by"]
        .as_array()
        .expect("cosigners")
        .iter()
        .filter_map(|c| c["witness"].as_str())
        .collect();
    assert_eq!(
        cosigners,
        ["witness1.example", "witness2.example"],
        "{verdict}"
    );
    // The same file without witness keys: the store's signature alone.
    assert_eq!(check(&file, &[], None).code, 0);

    // One cosignature line edited: that witness no longer counts.
    let text = std::fs::read_to_string(&file).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    let last = lines.last().expect("a line");
    let mut edited_last = last.to_string();
    let flip = edited_last.len() - 5;
    let c = if &edited_last[flip..=flip] == "A" {
        "B"
    } else {
        "A"
    };
    edited_last.replace_range(flip..=flip, c);
    let edited = dir.join("edited.tlog-proof");
    std::fs::write(&edited, text.replace(last, &edited_last)).expect("write");
    let refused = check(&edited, vkeys, None);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stdout.contains("1 of the 2 witness cosignatures"),
        "{refused:?}"
    );
    assert_eq!(
        check(&edited, vkeys, Some("1")).code,
        0,
        "one of two suffices when asked"
    );

    // Both cosignatures cut: the store's key alone still verifies, a
    // required witness does not.
    let cut: String = text
        .lines()
        .filter(|l| !l.starts_with("\u{2014} witness"))
        .map(|l| format!("{l}\n"))
        .collect();
    let stripped = dir.join("stripped.tlog-proof");
    std::fs::write(&stripped, cut).expect("write");
    assert_eq!(check(&stripped, &[], None).code, 0);
    assert_eq!(check(&stripped, vkeys, Some("1")).code, 1);
}

/// A store of 10 events at `dir/trail.db` and a signing key pair beside it.
struct Log {
    db: PathBuf,
    key_path: PathBuf,
    public: PathBuf,
}

async fn log_of_ten(dir: &Path) -> Log {
    let log = Log {
        db: dir.join("trail.db"),
        key_path: dir.join("signing.key"),
        public: dir.join("signing.key.pub"),
    };
    KeyPair::generate()
        .expect("key")
        .save(&log.key_path, &log.public)
        .expect("save");
    append(&log.db, "alice", 10).await;
    log
}

/// The origin line of the store's checkpoints.
async fn origin_of(db: &Path) -> String {
    let store = SqliteStore::open(db).await.expect("open");
    pgtrail_store::checkpoint::origin(&store.store_id().await.expect("id").expect("an id"))
}

async fn sign(path: &Path, key: &KeyPair) -> Checkpoint {
    let store = SqliteStore::open(path).await.expect("open");
    let signer = Signer {
        key,
        trusted: &[],
        witness: None,
    };
    match sign_head(&store, &signer, false).await.expect("sign") {
        Signed::New(checkpoint) => checkpoint,
        other => panic!("nothing signed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_witnesses_cosign_and_refuse_a_fork_and_a_rollback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let Log {
        db,
        key_path,
        public,
    } = log_of_ten(dir).await;
    // The store as it was at 10 events: what the forger starts from.
    let copy = dir.join("copy.db");
    copy_store(&db, &copy);
    let origin = origin_of(&db).await;
    let witnesses = [
        start_witness(dir, 1, &origin, &public),
        start_witness(dir, 2, &origin, &public),
    ];
    let servers: Vec<WitnessServer> = witnesses
        .iter()
        .map(|w| WitnessServer::parse(&w.url, &w.vkey).expect("witness"))
        .collect();

    // The checkpointer signs at start (10 events) and at the stop (20),
    // submitting each to both witnesses.
    let keys = Keys {
        key: KeyPair::load(&key_path).expect("load"),
        trusted: Vec::new(),
        witness: None,
        witness_servers: servers.clone(),
    };
    let checkpointer = Checkpointer::start(
        keys,
        vec![Target::Url(format!("sqlite:{}", db.display()))],
        INTERVAL,
    )
    .await
    .expect("start");
    append(&db, "alice", 10).await;
    checkpointer.finish().await;
    {
        let store = SqliteStore::open(&db).await.expect("open");
        for seq in [10, 20] {
            let kept = store.cosignatures(seq).await.expect("cosignatures");
            assert_eq!(kept.len(), 2, "both witnesses cosigned {seq}: {kept:?}");
        }
    }
    let vkeys: Vec<&str> = witnesses.iter().map(|w| w.vkey.as_str()).collect();
    let (code, out) = verify(dir, &db, &public, &vkeys, 2);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("cosigned by 2 of 2"), "{out}");
    proof_carries_the_cosignatures(dir, &db, &public, &vkeys);

    let key = KeyPair::load(&key_path).expect("load");
    // A fork at a larger size: from event 11 on other events, re-signed at
    // 25 with the same key; the proof from 20 is the fork's own.
    let fork = dir.join("fork.db");
    copy_store(&copy, &fork);
    append(&fork, "mallory", 15).await;
    let forked = sign(&fork, &key).await;
    let fork_store = SqliteStore::open(&fork).await.expect("open");
    let proof = pgtrail_store::proof::consistency(&fork_store, 20, 25)
        .await
        .expect("proof");
    let note = forked.note.clone().expect("note");
    for w in &witnesses {
        let (status, answer) = post(&w.url, request_body(20, &proof, &note))
            .await
            .expect("post");
        assert_eq!(status, 422, "a fork past 20 is refused: {answer}");
    }
    // A fork at the size the witnesses hold (20): another root.
    let same = dir.join("same.db");
    copy_store(&copy, &same);
    append(&same, "mallory", 10).await;
    let same_note = sign(&same, &key).await.note.expect("note");
    for w in &witnesses {
        let (status, answer) = post(&w.url, request_body(20, &[], &same_note))
            .await
            .expect("post");
        assert_eq!(status, 409, "another root at 20 is refused: {answer}");
        assert_eq!(answer, "20\n");
    }
    // A rollback: the old store signed again at 10 events.
    let rolled_note = sign(&copy, &key).await.note.expect("note");
    for w in &witnesses {
        for old in [10, 20] {
            let (status, answer) = post(&w.url, request_body(old, &[], &rolled_note))
                .await
                .expect("post");
            assert!(
                status == 409 || status == 400,
                "a rollback to 10 from {old} is refused: {status} {answer}"
            );
        }
    }
    // The checkpointer's own client against the fork: nothing cosigned.
    let mut client = pgtrail_pipeline::witnesses::Witnesses::new(servers.clone());
    let outcomes = client.submit(&fork_store, &forked, "fork").await;
    assert!(outcomes.iter().all(|(_, o)| o.is_err()), "{outcomes:?}");
    assert!(fork_store.cosignatures(25).await.expect("kept").is_empty());
    // The forger copies the real cosignatures onto the forked checkpoint.
    let real = SqliteStore::open(&db)
        .await
        .expect("open")
        .cosignatures(20)
        .await
        .expect("kept");
    for mut cosignature in real {
        cosignature.seq = forked.seq;
        cosignature.checkpoint = pgtrail_store::note::SignedNote::parse(&note)
            .expect("note")
            .text;
        fork_store.add_cosignature(&cosignature).await.expect("add");
    }
    drop(fork_store);
    let (code, out) = verify(dir, &fork, &public, &vkeys, 2);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("fewer than the 2 required"), "{out}");
    assert!(out.contains("altered"), "{out}");

    // A malformed request: 400, and the witness still cosigns.
    for w in &witnesses {
        let (status, _) = post(&w.url, "old 1\nnot a hash\n\n".into())
            .await
            .expect("post");
        assert_eq!(status, 400);
        let (status, answer) = post(&w.url, "\u{0}\u{1}garbage".into())
            .await
            .expect("post");
        assert_eq!(status, 400, "{answer}");
    }
    append(&db, "alice", 5).await;
    let grown = sign(&db, &key).await;
    let mut client = pgtrail_pipeline::witnesses::Witnesses::new(servers);
    let store = SqliteStore::open(&db).await.expect("open");
    let outcomes = client.submit(&store, &grown, "trail").await;
    assert!(outcomes.iter().all(|(_, o)| o.is_ok()), "{outcomes:?}");
    assert_eq!(store.cosignatures(25).await.expect("kept").len(), 2);
    drop(store);
    let (code, out) = verify(dir, &db, &public, &vkeys, 2);
    assert_eq!(code, 0, "{out}");

    // Someone with the witness's disk lowers its state to 10, hoping it
    // then cosigns the rolled-back log: it refuses to start.
    let [first, _second] = witnesses;
    drop(first);
    let state = std::fs::read_dir(dir.join("state1"))
        .expect("state dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "checkpoint"))
        .expect("a state file");
    let text = std::fs::read_to_string(&state).expect("read");
    std::fs::write(&state, text.replacen("\n25\n", "\n10\n", 1)).expect("write");
    let output = witness_command(dir, 1, &origin, &public)
        .output()
        .expect("run");
    assert_ne!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refuses to start"), "{stderr}");
}

/// `pgtrail checkpoint`, run by hand (or from cron) with
/// `[[signing.witnesses]]`, submits what it signs as the checkpointer does;
/// a witness that is down leaves the checkpoint signed and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_command_submits_to_the_witnesses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let Log {
        db,
        key_path,
        public,
    } = log_of_ten(dir).await;
    let origin = origin_of(&db).await;
    let witness = start_witness(dir, 1, &origin, &public);
    let config = dir.join("pgtrail.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"sqlite:{}\"\n\n[signing]\nprivate_key = \"{}\"\n\n\
             [[signing.witnesses]]\nurl = \"{}\"\nvkey = \"{}\"\n",
            db.display(),
            key_path.display(),
            witness.url,
            witness.vkey
        ),
    )
    .expect("config");
    let config = config.display().to_string();
    let checkpoint = |format| {
        pgtrail_in(
            dir,
            &["--config", &config, "--format", format, "checkpoint"],
            &[],
            None,
        )
    };

    let first = checkpoint("table");
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    assert!(
        first
            .stdout
            .contains("cosigned by the witness witness1.example"),
        "{}",
        first.stdout
    );
    let kept = |seq| {
        let db = db.clone();
        async move {
            let store = SqliteStore::open(&db).await.expect("open");
            store.cosignatures(seq).await.expect("cosignatures")
        }
    };
    assert_eq!(kept(10).await.len(), 1);
    let vkey = witness.vkey.clone();
    let vkeys = [vkey.as_str()];
    let (code, out) = verify(dir, &db, &public, &vkeys, 1);
    assert_eq!(code, 0, "{out}");

    // The witness goes away: the next checkpoint is still signed and kept,
    // the command says which witness did not cosign, and verify requiring
    // it fails on that checkpoint.
    drop(witness);
    append(&db, "alice", 5).await;
    let second = checkpoint("json");
    assert_eq!(second.code, 0, "{}{}", second.stdout, second.stderr);
    let document: serde_json::Value = serde_json::from_str(&second.stdout).expect("json");
    assert_eq!(document["seq"], 15, "{document}");
    assert_eq!(document["cosigned_by"], serde_json::json!([]), "{document}");
    assert!(
        second
            .stderr
            .contains("the witness witness1.example did not cosign the checkpoint"),
        "{}",
        second.stderr
    );
    assert!(kept(15).await.is_empty());
    let (code, out) = verify(dir, &db, &public, &vkeys, 1);
    assert_eq!(code, 1, "{out}");
}
