//! `pgtrail prove`: one event, its inclusion proof and a signed checkpoint
//! that covers it, as a proof file (`pgtrail_store::proof_file`); and
//! `pgtrail verify-proof`, which checks such a file with the public key
//! alone, with no store and no network, and says what it shows.
//!
//! `prove` checks the file it made before writing it: when the event in the
//! store no longer hashes to what the checkpoint signed, it refuses (exit 1)
//! rather than hand out a file that fails at the auditor's.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use pgtrail_core::{Event, Kind};
use pgtrail_store::checkpoint::{load_public_key, trusted_signer, CheckpointKind};
use pgtrail_store::proof_file::{
    public_key_from_hex, ProofFile, ProofFileError, Proven, PublicKey,
};
use pgtrail_store::{Store, TrustedKey};
use serde::Serialize;

use super::checkpoint::{parse_trusted_key, signing_key, trusted_keys};
use crate::cli::{ProveArgs, VerifyProofArgs};
use crate::Invocation;

/// Runs `pgtrail prove`.
pub async fn run(args: &ProveArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let keys = keys(args, ctx)?;
    let store = ctx.open_existing_store().await?;
    let event = find_event(store.as_ref(), &args.event).await?;
    let seq = event.seq.unwrap_or_default();

    let checkpoints = store.checkpoints().await?;
    let covering = checkpoints
        .iter()
        .rev()
        .filter(|c| c.note.is_some() && c.seq >= seq)
        .find(|c| trusted_signer(c, &keys).is_ok());
    let Some(checkpoint) = covering else {
        let newest = checkpoints
            .iter()
            .rev()
            .find(|c| c.note.is_some() && trusted_signer(c, &keys).is_ok())
            .map(|c| {
                format!(
                    "the newest one signed by a trusted key is at event {}",
                    c.seq
                )
            })
            .unwrap_or_else(|| "none is signed by a trusted key".into());
        anyhow::bail!(
            "no signed checkpoint covers event {seq} yet ({newest}): run `pgtrail checkpoint` \
             or wait for the checkpointer of `pgtrail run`"
        );
    };
    let note = with_cosignatures(store.as_ref(), checkpoint).await?;
    let note = note.as_str();
    let size = u64::try_from(checkpoint.seq).context("a checkpoint's size is negative")?;
    let index = u64::try_from(seq - 1).context("an event's seq is not positive")?;
    let hashes = pgtrail_store::proof::inclusion(store.as_ref(), index, size)
        .await
        .with_context(|| format!("cannot make the inclusion proof of event {seq}"))?;
    let file = ProofFile::build_redacted(&event, &args.redact, hashes, note)?;

    // The file must verify under the key that signed its checkpoint.
    let signer = trusted_signer(checkpoint, &keys)
        .ok()
        .and_then(|i| keys.get(i))
        .context("the checkpoint's signer is gone")?;
    if let Err(e) = file.verify(&signer.key) {
        eprintln!(
            "FAILED: event {seq} in {} is not what the checkpoint at event {size} signed ({e}); \
             no proof written. The store changed after it was signed: run `pgtrail verify`.",
            store.location()
        );
        return Ok(crate::exit::check_failed());
    }
    let text = file.to_text();
    match &args.out {
        Some(path) => {
            std::fs::write(path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            crate::output::line(&format!(
                "wrote the proof of event {seq} under the checkpoint of size {size} to {}",
                path.display()
            ))?;
        }
        None => {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    Ok(crate::exit::ok())
}

/// The checkpoint's note with the witness servers' cosignatures the store
/// keeps for its exact text appended as signature lines: a C2SP note any
/// signed-note reader checks, each cosignature over the same text.
async fn with_cosignatures(
    store: &dyn Store,
    checkpoint: &pgtrail_store::Checkpoint,
) -> anyhow::Result<String> {
    let mut note = checkpoint.note.clone().unwrap_or_default();
    let text = pgtrail_store::note::SignedNote::parse(&note)
        .map_err(|e| anyhow::anyhow!("the checkpoint's note does not parse: {e}"))?
        .text;
    for cosignature in store.cosignatures(checkpoint.seq).await? {
        if cosignature.checkpoint == text && !note.contains(&cosignature.line) {
            note.push_str(&cosignature.line);
        }
    }
    Ok(note)
}

/// The keys whose checkpoints `prove` may use: `--public-key`, else the
/// configured ones and the public half of the signing key.
fn keys(args: &ProveArgs, ctx: &Invocation) -> anyhow::Result<Vec<TrustedKey>> {
    if !args.public_key.is_empty() {
        return args
            .public_key
            .iter()
            .map(|e| parse_trusted_key(e))
            .collect();
    }
    let mut keys = trusted_keys(&ctx.config.signing)?;
    if let Some((_, pair)) = signing_key(None, &ctx.config.signing)? {
        let own = pair.verifying_key();
        if !keys.iter().any(|k| k.key == own) {
            keys.push(TrustedKey::current(own));
        }
    }
    if keys.is_empty() {
        anyhow::bail!(
            "no public key to choose a signed checkpoint with: pass --public-key FILE, \
             or set [signing] public_key or private_key"
        );
    }
    Ok(keys)
}

/// The event `wanted` names: its seq, or its id.
async fn find_event(store: &dyn Store, wanted: &str) -> anyhow::Result<Event> {
    let location = store.location();
    if !wanted.is_empty() && wanted.bytes().all(|b| b.is_ascii_digit()) {
        let seq: i64 = wanted
            .parse()
            .with_context(|| format!("'{wanted}' is too large for an event's seq"))?;
        if seq < 1 {
            anyhow::bail!("event numbers start at 1");
        }
        let found = store.scan(seq - 1, 1).await?.into_iter().next();
        return match found {
            Some(event) if event.seq == Some(seq) => Ok(event),
            Some(_) => anyhow::bail!(
                "event {seq} was removed by retention from {location}: no proof can be made \
                 from this store now (a proof made before the removal still verifies)"
            ),
            None => {
                let head = store.head().await?.map_or(0, |h| h.seq);
                anyhow::bail!("no event {seq} in {location}: it ends at event {head}")
            }
        };
    }
    let id = uuid::Uuid::parse_str(wanted)
        .with_context(|| format!("'{wanted}' is neither an event's seq nor its id (a UUID)"))?;
    let Some(seq) = store.seq_of_id(id).await? else {
        anyhow::bail!("no event with id {id} in {location} (retention may have removed it)");
    };
    let found = store.scan(seq - 1, 1).await?.into_iter().next();
    found
        .filter(|e| e.seq == Some(seq) && e.id == id)
        .with_context(|| format!("event {seq} (id {id}) could not be read from {location}"))
}

/// What `verify-proof --format json` prints.
#[derive(Debug, Serialize)]
struct Verdict {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    proven: Option<Proven>,
    /// The required witnesses whose cosignature of the checkpoint holds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cosigned_by: Vec<Cosigner>,
}

/// A witness server that cosigned the proof's checkpoint, and when.
#[derive(Debug, Serialize)]
struct Cosigner {
    witness: String,
    #[serde(with = "pgtrail_core::time::micros")]
    at: chrono::DateTime<chrono::Utc>,
}

/// The cosignatures `args` requires, checked on the proof's checkpoint:
/// those that hold, or why too few do.
fn cosigners(
    args: &VerifyProofArgs,
    file: &ProofFile,
) -> anyhow::Result<Result<Vec<Cosigner>, String>> {
    use pgtrail_store::cosignature::{self, WitnessKey};
    let keys: Vec<WitnessKey> = args
        .witness_key
        .iter()
        .map(|k| WitnessKey::parse_vkey(k).context("--witness-key"))
        .collect::<anyhow::Result<_>>()?;
    let min = args.min_cosignatures.unwrap_or(keys.len());
    if min > keys.len() {
        anyhow::bail!(
            "--min-cosignatures {min} is more than the {} --witness-key given",
            keys.len()
        );
    }
    let note = pgtrail_store::note::SignedNote::parse(&file.checkpoint)
        .map_err(|e| anyhow::anyhow!("the checkpoint: {e}"))?;
    let mut held = Vec::new();
    let mut missing = Vec::new();
    for key in &keys {
        match cosignature::verify(&note, key) {
            Ok(at) => held.push(Cosigner {
                witness: key.name.clone(),
                at,
            }),
            Err(e) => missing.push(e.0),
        }
    }
    if held.len() < min {
        return Ok(Err(format!(
            "the checkpoint has {} of the {min} witness cosignatures required: {}",
            held.len(),
            missing.join("; ")
        )));
    }
    Ok(Ok(held))
}

/// Runs `pgtrail verify-proof`.
pub async fn verify(args: &VerifyProofArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let key = public_key(&args.public_key)?;
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let file = String::from_utf8(bytes)
        .map_err(|_| ProofFileError::Malformed("it is not UTF-8 text".into()))
        .and_then(|text| ProofFile::parse(&text));
    let verdict = match file {
        Ok(file) => match file.verify(&key) {
            Ok(proven) => match cosigners(args, &file)? {
                Ok(held) => Ok((proven, held)),
                Err(reason) => Err(ProofFileError::Invalid(reason)),
            },
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let name = args.file.display().to_string();
    match verdict {
        Ok((proven, cosigned_by)) => {
            let mut text = plain_words(&proven);
            for c in &cosigned_by {
                text.push_str(&format!(
                    "Cosigned by the witness {} at {}: it saw no other log at that size, nor one smaller.\n",
                    c.witness,
                    pgtrail_core::time::format_micros(&c.at)
                ));
            }
            let verdict = Verdict {
                ok: true,
                reason: None,
                proven: Some(proven),
                cosigned_by,
            };
            ctx.output.document(&verdict, || text)?;
            Ok(crate::exit::ok())
        }
        Err(e) => {
            let verdict = Verdict {
                ok: false,
                reason: Some(e.to_string()),
                proven: None,
                cosigned_by: Vec::new(),
            };
            ctx.output
                .document(&verdict, || format!("FAILED: {name}: {e}\n"))?;
            Ok(crate::exit::check_failed())
        }
    }
}

/// A key file, or the key's 64 hex characters.
fn public_key(arg: &str) -> anyhow::Result<PublicKey> {
    let path = Path::new(arg);
    if !path.exists() && arg.len() == 64 && arg.bytes().all(|b| b.is_ascii_hexdigit()) {
        return public_key_from_hex(arg)
            .with_context(|| format!("'{arg}' is not a valid Ed25519 public key"));
    }
    Ok(load_public_key(path)?)
}

/// What the proof shows, as a sentence, then what it does not.
fn plain_words(p: &Proven) -> String {
    let e = &p.event;
    let kind = match p.checkpoint_kind {
        CheckpointKind::Head => "",
        CheckpointKind::Prune => " (a prune checkpoint)",
    };
    format!(
        "event {}, {} by {} at {}, is entry {} of the log {} whose signed size was {} at {}{kind}.\n\
         OK: it was recorded as shown (hash {}) and has not been altered since that checkpoint, \
         signed by the key with id {}.\n\
         {}\
         This shows the event is in the log; it does not show that the log holds every change \
         (see docs/proofs.md).\n",
        thousands(p.entry),
        what(e),
        crate::describe::actor(e),
        pgtrail_core::time::format_micros(&e.captured_at),
        thousands(p.entry),
        p.origin,
        thousands(p.tree_size),
        pgtrail_core::time::format_micros(&p.checkpoint_time),
        p.event_hash,
        p.key_id,
        withheld(&p.withheld),
    )
}

/// The sentence on withheld fields, empty when the file shows them all.
fn withheld(fields: &[String]) -> String {
    if fields.is_empty() {
        return String::new();
    }
    format!(
        "withheld: {} \u{2014} their commitments are in the file, their values are not; \
         they are covered by the hash all the same.\n",
        fields.join(", ")
    )
}

/// "a DELETE on public.accounts id=42", or what the event's kind records.
fn what(e: &Event) -> String {
    let op = e.operation.as_deref().unwrap_or("change");
    let target = crate::describe::table(e);
    let row =
        e.pk.as_ref()
            .map(|pk| format!(" {}", crate::describe::pk(pk)))
            .unwrap_or_default();
    match e.kind {
        Kind::RowChange => format!("{} {op} on {target}{row}", article(op)),
        Kind::Snapshot => format!("a snapshot of {target}{row}"),
        Kind::Ddl => format!("{} {op} (DDL)", article(op)),
        Kind::Statement => {
            let class = e.class.as_deref().unwrap_or("UNKNOWN");
            let sql = e.sql.as_deref().unwrap_or("-");
            format!("a {class} statement `{}`", short(sql))
        }
        Kind::Session => format!("a session event ({op})"),
        Kind::Alarm => format!("an alarm ({})", crate::describe::summary(e)),
        Kind::Quarantine => "a quarantined event".into(),
        Kind::Access => format!("a read of the trail ({op})"),
    }
}

fn article(word: &str) -> &'static str {
    match word.chars().next().map(|c| c.to_ascii_uppercase()) {
        Some('A' | 'E' | 'I' | 'O' | 'U') => "an",
        _ => "a",
    }
}

/// At most 80 characters of one line.
fn short(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= 80 {
        line
    } else {
        format!("{}…", line.chars().take(79).collect::<String>())
    }
}

/// 18342 as "18,342".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_what_they_record() {
        let mut e = Event::new(pgtrail_core::Source::Trigger, Kind::RowChange);
        e.schema = Some("public".into());
        e.table = Some("accounts".into());
        e.operation = Some("DELETE".into());
        e.pk = serde_json::from_str(r#"{"id": "42"}"#).expect("json");
        assert_eq!(what(&e), "a DELETE on public.accounts id=42");
        e.operation = Some("UPDATE".into());
        assert_eq!(what(&e), "an UPDATE on public.accounts id=42");
        let mut s = Event::new(pgtrail_core::Source::Proxy, Kind::Statement);
        s.class = Some("READ".into());
        s.sql = Some(format!("select\n  {}", "x, ".repeat(40)));
        let said = what(&s);
        assert!(said.starts_with("a READ statement `select x, x,"), "{said}");
        assert!(said.chars().count() < 110, "{said}");
    }

    #[test]
    fn numbers_read_in_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(18_342), "18,342");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }
}
