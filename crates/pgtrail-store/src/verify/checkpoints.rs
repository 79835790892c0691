//! Checks of each checkpoint: it matches the chain where it claims to, and
//! carries a valid signature by a trusted key.

use ed25519_dalek::VerifyingKey;

use super::{Problem, ProblemKind};
use crate::{Checkpoint, CheckpointKind};

pub(super) fn check_checkpoint(
    checkpoint: &Checkpoint,
    seen: &std::collections::HashMap<i64, String>,
    head_seq: i64,
    trusted: &[VerifyingKey],
) -> Option<Problem> {
    let problem = |detail: String| {
        Some(Problem {
            kind: ProblemKind::Checkpoint,
            seq: checkpoint.seq,
            detail,
        })
    };
    let what = format!(
        "{} checkpoint at event {} ({})",
        checkpoint.kind.as_str(),
        checkpoint.seq,
        pgtrail_core::time::format_micros(&checkpoint.created_at)
    );
    if let Err(detail) = check_signature(checkpoint, trusted, &what) {
        return problem(detail);
    }
    if checkpoint.kind == CheckpointKind::Head {
        if checkpoint.seq > head_seq {
            return problem(format!(
                "{what}: the chain ends at event {head_seq}; events after it were removed"
            ));
        }
        match seen.get(&checkpoint.seq) {
            Some(hash) if hash.is_empty() => {
                return problem(format!("{what}: event {} is missing", checkpoint.seq))
            }
            Some(hash) if *hash != checkpoint.hash => {
                return problem(format!(
                    "{what}: event {} is not the event that was signed (the chain was rewritten)",
                    checkpoint.seq
                ))
            }
            _ => {}
        }
    }
    None
}

/// Ok when no keys are trusted or one of them signed `checkpoint`.
fn check_signature(
    checkpoint: &Checkpoint,
    trusted: &[VerifyingKey],
    what: &str,
) -> std::result::Result<(), String> {
    let mut first_failure = None;
    for key in trusted {
        match checkpoint.verify_signature(key) {
            Ok(true) => return Ok(()),
            Ok(false) => return Err(format!("{what} is not signed")),
            Err(reason) => {
                first_failure.get_or_insert(reason);
            }
        }
    }
    match first_failure {
        None => Ok(()),
        Some(_) if trusted.len() > 1 => Err(format!(
            "{what}: its signature matches none of the {} trusted public keys",
            trusted.len()
        )),
        Some(reason) => Err(format!("{what}: {reason}")),
    }
}
