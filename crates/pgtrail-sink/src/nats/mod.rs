//! The NATS JetStream sink: one message per event on a fixed subject, with
//! the event id as `Nats-Msg-Id`.
//!
//! A batch is published pipelined (up to `ACK_WINDOW` acknowledgements
//! awaited at once, sliding) and `deliver` is `Ok` only once JetStream
//! acknowledged each one: the stream holds it. Any failure fails the whole
//! batch, which the runner sends again; JetStream stores a message whose
//! `Nats-Msg-Id` it saw within the stream's duplicate window only once, so
//! at-least-once redelivery ends as exactly one copy in the stream.
//!
//! The messages are core NATS publishes whose reply subjects the sink
//! subscribes to once per connection ([`acks`]); a JetStream request per
//! message (a reply inbox, a future and a timer each) cost more than the
//! rest of the sink. Before a delivery counts, the stream is asked for the
//! last message's sequence: an acknowledgement forged by someone who reads
//! the subject does not move the cursor past an event the stream lacks.
//!
//! Subjects come from the configuration only, never from an event's fields:
//! a table named `a.*.>` cannot choose where its events go. Checkpoints go
//! to their own subject. Credentials are read from files and never logged.

mod acks;

use std::time::Duration;

use async_nats::jetstream::context::{Context, ContextBuilder};
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind};
use async_nats::{Client, ConnectErrorKind, ConnectOptions, HeaderMap, Subject, Subscriber};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt as _;
use pgtrail_core::config::NatsSinkConfig;

use pgtrail_store::checkpoint::Checkpoint;
use pgtrail_store::RawEvent;

use crate::format::raw::{self, Members};
use crate::format::{Encoder, Format, FormatError};
use crate::sink::{Item, Sink, SinkError};

use acks::{Ack, Acknowledged, Attempt, Refusal};

/// Acknowledgements awaited at once: well below the reply subscription's
/// capacity (65,536 messages), past which the client drops replies.
const ACK_WINDOW: usize = 16_384;

/// Sends events to a NATS JetStream stream.
pub struct NatsSink {
    config: NatsSinkConfig,
    /// `url` without any `user:password@`.
    destination: String,
    encoder: Encoder,
    timeout: Duration,
    /// `subject` and `checkpoint_subject`, made once.
    subjects: (Subject, Subject),
    connection: Option<Connection>,
    stream_checked: bool,
    /// Delivery attempts so far: each has its own reply subjects.
    attempts: u64,
    /// The stream's last sequence when last looked at (0: not yet): a
    /// later delivery's new messages come after it.
    stream_last: u64,
}

/// A connection to NATS and what the sink keeps of it.
struct Connection {
    client: Client,
    jetstream: Context,
    /// `_INBOX.` and 128 random bits: the reply subjects' prefix.
    replies: String,
    /// Subscribed to `replies.>` (kept across reconnects by the client).
    acks: Subscriber,
}

impl std::fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSink")
            .field("destination", &self.destination)
            .field("subject", &self.config.subject)
            .finish_non_exhaustive()
    }
}

impl NatsSink {
    /// A sink for `config`, writing payloads with `encoder`. Checks the
    /// settings and tries to connect: wrong credentials are `Refused` here;
    /// a server that is down is not an error (`deliver` connects later).
    pub async fn connect(config: &NatsSinkConfig, encoder: Encoder) -> Result<Self, SinkError> {
        let destination = format!("nats {}", without_userinfo(&config.url));
        let invalid = |reason: String| SinkError::Refused {
            destination: destination.clone(),
            reason: format!("invalid nats sink settings: {reason}"),
        };
        if config.url.trim().is_empty() {
            return Err(invalid("url is empty".into()));
        }
        for (key, subject) in [
            ("subject", &config.subject),
            ("checkpoint_subject", &config.checkpoint_subject),
        ] {
            if !is_publish_subject(subject) {
                return Err(invalid(format!(
                    "{key} {subject:?} must be dot-separated tokens of printable characters, without '*', '>' or spaces"
                )));
            }
        }
        if config.subject == config.checkpoint_subject {
            return Err(invalid("subject and checkpoint_subject must differ".into()));
        }
        if !is_stream_name(&config.stream) {
            return Err(invalid(format!(
                "stream {:?} must be printable characters without '.', '*', '>', '/', '\\' or spaces",
                config.stream
            )));
        }
        if config.timeout_secs == 0 {
            return Err(invalid("timeout_secs must be at least 1".into()));
        }
        if config.create_stream && config.duplicate_window_secs == 0 {
            return Err(invalid(
                "duplicate_window_secs must be at least 1: the window is what makes redelivery exactly once".into(),
            ));
        }
        let mut sink = NatsSink {
            config: config.clone(),
            destination,
            encoder,
            timeout: Duration::from_secs(config.timeout_secs),
            subjects: (
                Subject::from(config.subject.as_str()),
                Subject::from(config.checkpoint_subject.as_str()),
            ),
            connection: None,
            stream_checked: false,
            attempts: 0,
            stream_last: 0,
        };
        // Check the credentials files now: a missing one is a setting to fix.
        sink.options().await?;
        match sink.open().await {
            Ok(()) => {}
            Err(refused @ SinkError::Refused { .. }) => return Err(refused),
            Err(error) => {
                tracing::warn!(destination = %sink.destination, %error, "NATS not reachable yet; will retry on delivery");
            }
        }
        Ok(sink)
    }

    fn unavailable(&self, reason: impl std::fmt::Display) -> SinkError {
        SinkError::Unavailable {
            destination: self.destination.clone(),
            reason: reason.to_string(),
        }
    }

    fn refused(&self, reason: impl std::fmt::Display) -> SinkError {
        SinkError::Refused {
            destination: self.destination.clone(),
            reason: reason.to_string(),
        }
    }

    async fn options(&self) -> Result<ConnectOptions, SinkError> {
        let config = &self.config;
        let mut options = ConnectOptions::new()
            .name("pgtrail")
            .connection_timeout(self.timeout)
            .request_timeout(Some(self.timeout))
            // Reconnect soon after a server restart: the runner is waiting.
            .reconnect_delay_callback(|attempts| Duration::from_millis(100u64 << attempts.min(4)))
            .event_callback(|event| async move {
                tracing::info!(%event, "NATS connection");
            });
        let secret = |key: &str, path: &str| -> Result<String, SinkError> {
            let text = std::fs::read_to_string(path)
                .map_err(|e| self.refused(format!("cannot read {key} {path}: {e}")))?;
            let first = text
                .lines()
                .next()
                .unwrap_or_default()
                .trim_end()
                .to_string();
            if first.is_empty() {
                return Err(self.refused(format!("{key} {path} is empty")));
            }
            Ok(first)
        };
        if let Some(path) = &config.credentials_file {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| self.refused(format!("cannot use credentials_file {path}: {e}")))?;
        }
        match (&config.user, &config.password_file) {
            (Some(user), Some(path)) => {
                let password = secret("password_file", path)?;
                options = options.user_and_password(user.clone(), password);
            }
            (None, None) => {}
            _ => return Err(self.refused("user and password_file go together")),
        }
        if let Some(path) = &config.token_file {
            options = options.token(secret("token_file", path)?);
        }
        if let Some(path) = &config.ca_file {
            options = options.add_root_certificates(path.into()).require_tls(true);
        }
        Ok(options)
    }

    /// Connects (when not connected) and makes sure the stream exists.
    async fn open(&mut self) -> Result<(), SinkError> {
        if self.connection.is_none() {
            let options = self.options().await?;
            let client = options
                .connect(self.config.url.as_str())
                .await
                .map_err(|error| match error.kind() {
                    ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                        self.refused(format!(
                            "{error} (check user, password_file, token_file or credentials_file)"
                        ))
                    }
                    ConnectErrorKind::ServerParse | ConnectErrorKind::Tls => self.refused(error),
                    _ => self.unavailable(error),
                })?;
            let mut random = [0u8; 16];
            getrandom::getrandom(&mut random)
                .map_err(|e| self.unavailable(format!("no random reply subject: {e}")))?;
            let replies = format!("_INBOX.{}", hex::encode(random));
            let acks = client
                .subscribe(format!("{replies}.>"))
                .await
                .map_err(|e| self.unavailable(format!("cannot subscribe to its replies: {e}")))?;
            self.connection = Some(Connection {
                jetstream: ContextBuilder::new()
                    .timeout(self.timeout)
                    .build(client.clone()),
                client,
                replies,
                acks,
            });
        }
        if !self.stream_checked {
            self.check_stream().await?;
            self.stream_checked = true;
        }
        Ok(())
    }

    /// The JetStream context of the connection.
    fn jetstream(&self) -> Result<&Context, SinkError> {
        match &self.connection {
            Some(connection) => Ok(&connection.jetstream),
            None => Err(self.unavailable("not connected")),
        }
    }

    async fn check_stream(&self) -> Result<(), SinkError> {
        let jetstream = self.jetstream()?;
        let name = &self.config.stream;
        if self.config.create_stream {
            let config = stream::Config {
                name: name.clone(),
                subjects: vec![
                    self.config.subject.clone(),
                    self.config.checkpoint_subject.clone(),
                ],
                storage: stream::StorageType::File,
                duplicate_window: Duration::from_secs(self.config.duplicate_window_secs),
                ..Default::default()
            };
            jetstream.get_or_create_stream(config).await.map_err(|e| {
                self.unavailable(format!("cannot create or find stream {name}: {e}"))
            })?;
        } else {
            jetstream.get_stream(name).await.map_err(|e| {
                self.unavailable(format!(
                    "cannot find stream {name} (create it, or set create_stream = true): {e}"
                ))
            })?;
        }
        Ok(())
    }

    /// The message for `item`: subject, `Nats-Msg-Id` and payload.
    fn message(&self, item: &Item) -> Result<Message, SinkError> {
        let mut payload = Vec::new();
        match item {
            Item::Event(event) => {
                self.encoder.encode(event, &mut payload)?;
                let seq = event.seq.unwrap_or_default();
                Ok(self.event_message(&event.id.to_string(), event.kind.as_str(), seq, payload))
            }
            Item::Checkpoint(checkpoint) => self.checkpoint_message(checkpoint),
        }
    }

    /// The same for an event as stored: its id and kind read from the
    /// body's members, the payload its `jsonl` line, never decoded.
    fn raw_message(&self, item: &Item<RawEvent>) -> Result<Message, SinkError> {
        let raw = match item {
            Item::Event(raw) => raw,
            Item::Checkpoint(checkpoint) => return self.checkpoint_message(checkpoint),
        };
        let stored = |reason: &str| FormatError::Stored {
            seq: raw.seq,
            reason: reason.to_string(),
        };
        let members = Members::of(&raw.body).map_err(|reason| stored(&reason))?;
        let id = members
            .plain_str("id")
            .ok_or_else(|| stored("its body has no id (the message id)"))?;
        let kind = members
            .plain_str("kind")
            .ok_or_else(|| stored("its body has no kind"))?;
        let mut payload = Vec::with_capacity(raw.body.len() + 200);
        if self.encoder.format() == Format::Jsonl {
            raw::jsonl(raw, &members, &mut payload);
        } else {
            self.encoder.encode_raw(raw, &mut payload)?;
        }
        Ok(self.event_message(id, kind, raw.seq, payload))
    }

    fn event_message(&self, id: &str, kind: &str, seq: i64, payload: Vec<u8>) -> Message {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        headers.insert("Pgtrail-Kind", kind);
        headers.insert("Pgtrail-Seq", seq.to_string().as_str());
        Message {
            subject: self.subjects.0.clone(),
            headers,
            payload: record(payload),
        }
    }

    fn checkpoint_message(&self, checkpoint: &Checkpoint) -> Result<Message, SinkError> {
        let mut payload = Vec::new();
        self.encoder.encode_checkpoint(checkpoint, &mut payload)?;
        let id = format!(
            "checkpoint-{}-{}-{}",
            checkpoint.kind.as_str(),
            checkpoint.seq,
            checkpoint.hash
        );
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        headers.insert("Pgtrail-Seq", checkpoint.seq.to_string().as_str());
        Ok(Message {
            subject: self.subjects.1.clone(),
            headers,
            payload: record(payload),
        })
    }

    async fn publish<T>(
        &mut self,
        items: &[T],
        message: impl Fn(&Self, &T) -> Result<Message, SinkError>,
    ) -> Result<(), SinkError> {
        self.open().await?;
        self.attempts += 1;
        let Some(connection) = self.connection.as_mut() else {
            return Err(self.unavailable("not connected"));
        };
        let client = connection.client.clone();
        let mut attempt = Attempt::new(
            &connection.replies,
            self.attempts,
            &self.config.stream,
            items.len(),
        );
        // A sliding window: a message is sent as soon as fewer than
        // ACK_WINDOW acknowledgements are awaited, so the server never
        // waits for the next publish.
        for item in items {
            while attempt.in_flight() >= ACK_WINDOW {
                self.acknowledgement(&mut attempt).await?;
            }
            let Message {
                subject,
                headers,
                payload,
            } = message(self, item)?;
            client
                .publish_with_reply_and_headers(subject, attempt.next_reply(), headers, payload)
                .await
                .map_err(|e| match e.kind() {
                    async_nats::client::PublishErrorKind::MaxPayloadExceeded => {
                        self.refused(format!("{e}: raise max_payload on the NATS server"))
                    }
                    _ => self.unavailable(e),
                })?;
        }
        while !attempt.is_done() {
            self.acknowledgement(&mut attempt).await?;
        }
        let acknowledged = attempt.finish().map_err(|r| self.refusal(r))?;
        self.check_new(&acknowledged).await?;
        if let Some((index, ack)) = acknowledged.last_duplicate {
            let id = message(self, &items[index])?
                .headers
                .get("Nats-Msg-Id")
                .map(|id| id.to_string())
                .unwrap_or_default();
            self.check_held(ack, &id).await?;
        }
        let duplicates = acknowledged.duplicates;
        if duplicates > 0 {
            // A redelivery, or someone else published these ids first: only
            // the stream's first copy of an id counts (docs/security.md).
            tracing::info!(destination = %self.destination, duplicates, batch = items.len(),
                "JetStream already held some of the batch's message ids and kept its first copies");
        }
        Ok(())
    }

    /// Waits for replies until one acknowledges a message of `attempt`;
    /// fails after `timeout` without any.
    async fn acknowledgement(&mut self, attempt: &mut Attempt) -> Result<(), SinkError> {
        let timeout = self.timeout;
        let Some(connection) = self.connection.as_mut() else {
            return Err(self.unavailable("not connected"));
        };
        let waited = tokio::time::timeout(timeout, async {
            loop {
                let Some(reply) = connection.acks.next().await else {
                    return Err(None);
                };
                match attempt.reply(reply.subject.as_str(), reply.status, &reply.payload) {
                    Ok(true) => return Ok(()),
                    Ok(false) => continue,
                    Err(refusal) => return Err(Some(refusal)),
                }
            }
        })
        .await;
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(Some(refusal))) => Err(self.refusal(refusal)),
            Ok(Err(None)) => {
                // The client closed the subscription: connect again next time.
                self.connection = None;
                Err(self.unavailable("the connection closed"))
            }
            Err(_) => Err(self.unavailable(format!(
                "{} of the batch's messages not acknowledged within {} s",
                attempt.in_flight(),
                timeout.as_secs()
            ))),
        }
    }

    /// Checks the new sequences against the stream's state (one cheap
    /// request, no message read): stored after the previous delivery, and
    /// no further than its last sequence. Forged acknowledgements that
    /// claim sequences the stream never gave fail the delivery.
    async fn check_new(&mut self, acknowledged: &Acknowledged) -> Result<(), SinkError> {
        if acknowledged.new == 0 {
            return Ok(());
        }
        let name = &self.config.stream;
        let last = self.stream_state().await?.last_sequence;
        let room = last.saturating_sub(self.stream_last);
        if acknowledged.first_new <= self.stream_last
            || acknowledged.last_new > last
            || acknowledged.new as u64 > room
        {
            return Err(self.refused(format!(
                "{} messages acknowledged as stored at sequences {}..={} of stream {name}, which went from {} to {last}: \
                 someone else answers on the sink's reply subjects (give only JetStream publish rights on _INBOX.>)",
                acknowledged.new, acknowledged.first_new, acknowledged.last_new, self.stream_last
            )));
        }
        self.stream_last = last;
        Ok(())
    }

    /// The stream's state (its first and last sequences).
    async fn stream_state(&self) -> Result<stream::State, SinkError> {
        let jetstream = self.jetstream()?;
        let name = &self.config.stream;
        let stream = jetstream
            .get_stream(name)
            .await
            .map_err(|e| self.unavailable(format!("cannot look up stream {name}: {e}")))?;
        Ok(stream.cached_info().state.clone())
    }

    /// Asks the stream for the message at `last.seq` (a duplicate's
    /// acknowledgement; reading a message costs the server a block load,
    /// so only on redelivery): it must be `id`, or the acknowledgement was
    /// forged. A first copy the stream's limits removed since is taken.
    async fn check_held(&self, last: Ack, id: &str) -> Result<(), SinkError> {
        let jetstream = self.jetstream()?;
        let name = &self.config.stream;
        let stream = jetstream
            .get_stream_no_info(name)
            .await
            .map_err(|e| self.unavailable(format!("cannot look up stream {name}: {e}")))?;
        let forged = || {
            self.refused(format!(
                "the acknowledgement of message {id} names sequence {} of stream {name}, which does not hold it: \
                 someone else answers on the sink's reply subjects (give only JetStream publish rights on _INBOX.>)",
                last.seq
            ))
        };
        match stream.get_raw_message(last.seq).await {
            Ok(held) => match held.headers.get("Nats-Msg-Id") {
                Some(held_id) if held_id.as_str() == id => Ok(()),
                _ => Err(forged()),
            },
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound && last.duplicate => {
                let first = self.stream_state().await?.first_sequence;
                match last.seq < first {
                    true => Ok(()),
                    false => Err(forged()),
                }
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Err(forged()),
            Err(e) => Err(self.unavailable(format!(
                "cannot read sequence {} of stream {name}: {e}",
                last.seq
            ))),
        }
    }

    fn refusal(&self, refusal: Refusal) -> SinkError {
        match refusal {
            // Fixing these takes an operator: the sink stalls and says why.
            Refusal::NoStream => self.refused(format!(
                "no stream takes subject {}: create stream {} or set create_stream = true",
                self.config.subject, self.config.stream
            )),
            // A full stream, a message too large…: JetStream says which.
            _ => self.refused(refusal),
        }
    }
}

#[async_trait]
impl Sink for NatsSink {
    fn destination(&self) -> String {
        self.destination.clone()
    }

    async fn deliver(&mut self, items: &[Item]) -> Result<(), SinkError> {
        self.deliver_with(items, Self::message).await
    }

    fn reads_raw(&self) -> bool {
        self.encoder.format() == Format::Jsonl
    }

    async fn deliver_raw(&mut self, items: &[Item<RawEvent>]) -> Result<(), SinkError> {
        self.deliver_with(items, Self::raw_message).await
    }
}

impl NatsSink {
    /// Publishes `items` (each made a message by `message`) within the
    /// batch's time limit.
    async fn deliver_with<T: Sync>(
        &mut self,
        items: &[T],
        message: impl Fn(&Self, &T) -> Result<Message, SinkError> + Send,
    ) -> Result<(), SinkError> {
        if items.is_empty() {
            return Ok(());
        }
        // Every wait has its own timeout; this bounds the sum for a batch
        // whose waits each come close to it: three times the timeout per
        // 1,000 messages begun, so a large batch to a slow server still
        // passes.
        let thousands = u32::try_from(items.len().div_ceil(1000)).unwrap_or(u32::MAX);
        let limit = self.timeout.saturating_mul(3).saturating_mul(thousands);
        match tokio::time::timeout(limit, self.publish(items, message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                if matches!(error, SinkError::Refused { .. }) {
                    // The stream may be created (again) meanwhile: look
                    // again next time, its sequences from the start.
                    self.stream_checked = false;
                    self.stream_last = 0;
                }
                Err(error)
            }
            Err(_) => Err(self.unavailable(format!(
                "the batch was not acknowledged within {} s",
                limit.as_secs()
            ))),
        }
    }
}

/// A message to publish.
struct Message {
    subject: Subject,
    headers: HeaderMap,
    payload: Bytes,
}

/// A record as a payload: a message is already one record, no line end.
fn record(mut payload: Vec<u8>) -> Bytes {
    while matches!(payload.last(), Some(b'\n' | b'\r')) {
        payload.pop();
    }
    Bytes::from(payload)
}

/// A subject a message can be published on: non-empty dot-separated tokens
/// of printable ASCII, no wildcard.
pub(crate) fn is_publish_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.split('.').all(|token| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|b| (33..=126).contains(&b) && b != b'*' && b != b'>')
        })
}

fn is_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| (33..=126).contains(&b) && !matches!(b, b'.' | b'*' | b'>' | b'/' | b'\\'))
}

/// `nats://user:secret@host:4222` as `nats://host:4222`, for messages.
fn without_userinfo(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let (scheme, rest) = match one.split_once("://") {
                Some((scheme, rest)) => (format!("{scheme}://"), rest),
                None => (String::new(), one),
            };
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}{rest}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_with_wildcards_or_empty_tokens_are_refused() {
        for good in ["pgtrail.events", "audit", "a-b_c.d1"] {
            assert!(is_publish_subject(good), "{good}");
        }
        for bad in [
            "",
            "a..b",
            ".a",
            "a.",
            "a.*",
            "a.>",
            "a b",
            "a.\tb",
            "pgtrail.é",
        ] {
            assert!(!is_publish_subject(bad), "{bad}");
        }
        assert!(is_stream_name("PGTRAIL"));
        for bad in ["", "A.B", "A*", "A/B", "A B"] {
            assert!(!is_stream_name(bad), "{bad}");
        }
    }

    #[test]
    fn destination_never_shows_url_credentials() {
        assert_eq!(
            without_userinfo("nats://alice:s3cret@h1:4222,tls://tok@h2"),
            "nats://h1:4222,tls://h2"
        );
        assert_eq!(without_userinfo("h:4222"), "h:4222");
    }
}
