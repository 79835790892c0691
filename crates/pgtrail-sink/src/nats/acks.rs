//! JetStream's acknowledgements matched to a delivery's messages, without
//! I/O.
//!
//! Each message of a delivery attempt is published with its own reply
//! subject `PREFIX.ATTEMPT.INDEX`: `PREFIX` is the connection's inbox,
//! `_INBOX.` and 128 random bits, on which the sink holds one subscription
//! (instead of a reply inbox, a future and a timer per message). A reply
//! counts only when it names this attempt and a message still waiting
//! (late replies to an earlier attempt and second replies are ignored), and
//! is a PubAck of the configured stream. A refusal (no stream, a stream
//! full, a JetStream error) fails the attempt.
//!
//! Someone who reads the event subject sees the reply subjects and could
//! answer first: [`Attempt::finish`] refuses new sequences that do not
//! rise in publishing order (one connection's messages are stored in
//! order), and the sink checks what it returns against the stream before
//! the delivery counts.

use async_nats::StatusCode;
use serde::Deserialize;

/// What a reply said, when it was not a PubAck.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No stream takes the subject (the server's "no responders").
    NoStream,
    /// JetStream answered with an error (a full stream, a message too
    /// large…); its code is 503 for most, lasting or not.
    JetStream {
        /// Its HTTP-like code (503: JetStream not available now).
        code: u16,
        /// JetStream's own error code.
        err_code: u64,
        /// Its description.
        description: String,
    },
    /// A PubAck of another stream than the configured one.
    OtherStream(String),
    /// Not a PubAck, or one without a sequence; or sequences that do not
    /// rise in publishing order.
    Unreadable(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoStream => write!(f, "no stream takes the subject"),
            Refusal::JetStream {
                code,
                err_code,
                description,
            } => write!(
                f,
                "JetStream refused the message: {description} (code {code}, err_code {err_code})"
            ),
            Refusal::OtherStream(stream) => {
                write!(
                    f,
                    "acknowledged by stream {stream:?}, not the configured one"
                )
            }
            Refusal::Unreadable(reason) => write!(f, "unusable acknowledgement: {reason}"),
        }
    }
}

/// A message JetStream acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ack {
    /// Where the stream holds it.
    pub seq: u64,
    /// The stream already held its `Nats-Msg-Id` (at `seq`).
    pub duplicate: bool,
}

/// One delivery attempt's messages and the acknowledgements come so far.
#[derive(Debug)]
pub(crate) struct Attempt {
    /// `PREFIX.ATTEMPT.`: the reply subjects without the index.
    replies: String,
    stream: String,
    acks: Vec<Option<Ack>>,
    sent: usize,
    acknowledged: usize,
}

impl Attempt {
    /// Attempt number `attempt` of `messages` messages, acknowledged on
    /// subjects under `prefix` by `stream`.
    pub fn new(prefix: &str, attempt: u64, stream: &str, messages: usize) -> Self {
        Attempt {
            replies: format!("{prefix}.{attempt}."),
            stream: stream.to_string(),
            acks: vec![None; messages],
            sent: 0,
            acknowledged: 0,
        }
    }

    /// The reply subject of the next message, which counts as sent.
    pub fn next_reply(&mut self) -> String {
        let subject = format!("{}{}", self.replies, self.sent);
        self.sent += 1;
        subject
    }

    /// Messages sent and not acknowledged yet.
    pub fn in_flight(&self) -> usize {
        self.sent - self.acknowledged
    }

    /// Every message sent was acknowledged.
    pub fn is_done(&self) -> bool {
        self.acknowledged == self.acks.len()
    }

    /// Takes one reply: `Ok(true)` when it acknowledged a waiting message,
    /// `Ok(false)` when it is not for this attempt or came twice.
    pub fn reply(
        &mut self,
        subject: &str,
        status: Option<StatusCode>,
        payload: &[u8],
    ) -> Result<bool, Refusal> {
        let Some(index) = subject
            .strip_prefix(self.replies.as_str())
            .and_then(|index| index.parse::<usize>().ok())
            .filter(|index| *index < self.sent)
        else {
            return Ok(false);
        };
        if self.acks[index].is_some() {
            return Ok(false);
        }
        let ack = pub_ack(status, payload, &self.stream)?;
        self.acks[index] = Some(ack);
        self.acknowledged += 1;
        Ok(true)
    }

    /// Once [`Attempt::is_done`]: what the stream acknowledged, after
    /// checking that its new sequences rise in publishing order.
    pub fn finish(&self) -> Result<Acknowledged, Refusal> {
        let mut summary = Acknowledged::default();
        for (index, ack) in self.acks.iter().enumerate() {
            let Some(ack) = ack else {
                return Err(Refusal::Unreadable("not every message acknowledged".into()));
            };
            if ack.duplicate {
                summary.duplicates += 1;
                summary.last_duplicate = Some((index, *ack));
            } else if ack.seq <= summary.last_new {
                return Err(Refusal::Unreadable(format!(
                    "stream sequence {} acknowledged after {}",
                    ack.seq, summary.last_new
                )));
            } else {
                if summary.new == 0 {
                    summary.first_new = ack.seq;
                }
                summary.new += 1;
                summary.last_new = ack.seq;
            }
        }
        Ok(summary)
    }
}

/// What the stream acknowledged of an attempt.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Acknowledged {
    /// Messages stored now, at sequences `first_new..=last_new`
    /// (rising, not always consecutive).
    pub new: usize,
    pub first_new: u64,
    pub last_new: u64,
    /// Messages the stream already held.
    pub duplicates: usize,
    /// The last of those: its index in the attempt, and its PubAck.
    pub last_duplicate: Option<(usize, Ack)>,
}

/// A PubAck, or a JetStream error, as the server writes them.
#[derive(Deserialize)]
struct Reply {
    stream: Option<String>,
    seq: Option<u64>,
    #[serde(default)]
    duplicate: bool,
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

fn pub_ack(status: Option<StatusCode>, payload: &[u8], stream: &str) -> Result<Ack, Refusal> {
    if status == Some(StatusCode::NO_RESPONDERS) {
        return Err(Refusal::NoStream);
    }
    let reply: Reply = serde_json::from_slice(payload).map_err(|error| {
        Refusal::Unreadable(match status {
            Some(status) => format!("status {status}"),
            None => error.to_string(),
        })
    })?;
    if let Some(error) = reply.error {
        return Err(Refusal::JetStream {
            code: error.code,
            err_code: error.err_code,
            description: error.description,
        });
    }
    match (reply.stream, reply.seq) {
        (Some(name), Some(seq)) if name == stream && seq > 0 => Ok(Ack {
            seq,
            duplicate: reply.duplicate,
        }),
        (Some(name), Some(_)) if name != stream => Err(Refusal::OtherStream(name)),
        _ => Err(Refusal::Unreadable("no stream or sequence".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "_INBOX.0123456789abcdef0123456789abcdef";

    fn ack(seq: u64) -> Vec<u8> {
        format!(r#"{{"stream":"PGTRAIL","seq":{seq}}}"#).into_bytes()
    }

    fn sent(attempt: u64, messages: usize) -> (Attempt, Vec<String>) {
        let mut attempt = Attempt::new(PREFIX, attempt, "PGTRAIL", messages);
        let replies = (0..messages).map(|_| attempt.next_reply()).collect();
        (attempt, replies)
    }

    #[test]
    fn acknowledgements_in_any_order_complete_the_attempt() {
        let (mut attempt, replies) = sent(7, 3);
        assert_eq!(replies[2], format!("{PREFIX}.7.2"));
        assert_eq!(attempt.in_flight(), 3);
        for (index, seq) in [(2, 12), (0, 10), (1, 11)] {
            assert!(!attempt.is_done());
            assert_eq!(attempt.reply(&replies[index], None, &ack(seq)), Ok(true));
        }
        assert!(attempt.is_done());
        assert_eq!(attempt.in_flight(), 0);
        let summary = attempt.finish().expect("in order");
        assert_eq!(
            (summary.new, summary.first_new, summary.last_new),
            (3, 10, 12)
        );
        assert_eq!((summary.duplicates, summary.last_duplicate), (0, None));
    }

    #[test]
    fn replies_to_another_attempt_or_twice_do_not_count() {
        let (mut attempt, replies) = sent(2, 2);
        let (_, earlier) = sent(1, 2);
        assert_eq!(attempt.reply(&earlier[0], None, &ack(1)), Ok(false));
        assert_eq!(attempt.reply(&replies[0], None, &ack(3)), Ok(true));
        assert_eq!(attempt.reply(&replies[0], None, &ack(4)), Ok(false));
        // Not sent yet, out of range, or not an index.
        for subject in [
            format!("{PREFIX}.2.5"),
            format!("{PREFIX}.2.x"),
            format!("{PREFIX}.2.1.0"),
            format!("{PREFIX}.22.1"),
            "_INBOX.other.2.1".to_string(),
        ] {
            assert_eq!(
                attempt.reply(&subject, None, &ack(9)),
                Ok(false),
                "{subject}"
            );
        }
        assert!(!attempt.is_done());
        assert_eq!(attempt.in_flight(), 1);
    }

    #[test]
    fn refusals_fail_the_attempt_with_what_jetstream_said() {
        let (mut attempt, replies) = sent(1, 5);
        assert_eq!(
            attempt.reply(&replies[0], Some(StatusCode::NO_RESPONDERS), b""),
            Err(Refusal::NoStream)
        );
        let full = br#"{"type":"io.nats.jetstream.api.v1.pub_ack_response","error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}"#;
        let refused = attempt.reply(&replies[1], None, full).expect_err("full");
        assert!(
            refused.to_string().contains("maximum messages exceeded"),
            "{refused}"
        );
        assert_eq!(
            attempt.reply(&replies[2], None, br#"{"stream":"OTHER","seq":4}"#),
            Err(Refusal::OtherStream("OTHER".into()))
        );
        for bad in [
            &b"not json"[..],
            br#"{"stream":"PGTRAIL"}"#,
            br#"{"stream":"PGTRAIL","seq":0}"#,
        ] {
            assert!(matches!(
                attempt.reply(&replies[3], None, bad),
                Err(Refusal::Unreadable(_))
            ));
        }
        assert!(!attempt.is_done());
    }

    #[test]
    fn new_sequences_must_rise_in_publishing_order() {
        let (mut attempt, replies) = sent(1, 3);
        attempt.reply(&replies[0], None, &ack(20)).expect("ack");
        attempt
            .reply(
                &replies[1],
                None,
                br#"{"stream":"PGTRAIL","seq":5,"duplicate":true}"#,
            )
            .expect("duplicate");
        attempt.reply(&replies[2], None, &ack(21)).expect("ack");
        let summary = attempt.finish().expect("rising");
        assert_eq!(
            (summary.new, summary.first_new, summary.last_new),
            (2, 20, 21)
        );
        assert_eq!(summary.duplicates, 1);
        assert_eq!(
            summary.last_duplicate,
            Some((
                1,
                Ack {
                    seq: 5,
                    duplicate: true
                }
            ))
        );

        // A forger answering with sequences of its own choosing.
        let (mut forged, replies) = sent(2, 2);
        forged.reply(&replies[0], None, &ack(30)).expect("ack");
        forged.reply(&replies[1], None, &ack(30)).expect("ack");
        assert!(matches!(forged.finish(), Err(Refusal::Unreadable(_))));
    }
}
