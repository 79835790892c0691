//! The file sink: one record per line in a file a collector tails.
//!
//! The current file is `<dir>/<prefix>.<ext>` (`pgtrail-events.jsonl` by
//! default). Once it reaches `rotate_mb` or is older than `rotate_every`
//! it is renamed to `<prefix>-<UTC time>-<first seq>.<ext>` (time as
//! `20261206T181500Z`, the seq of its first event) and a new current file
//! is started, so a collector follows one name and globs the rest. Each
//! batch is written and fsync'd before `Ok`.
//!
//! The file only grows (a tailer keeps a byte offset). A crash in the
//! middle of a write can leave a partial last line; on restart it is
//! ended with a newline, left as it is, and the runner writes every event
//! after the cursor again, that one complete among them. A reader skips a
//! line that does not parse (the remains of a crash: its record follows
//! in full) and deduplicates by the event id (at least once).

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use pgtrail_store::RawEvent;

use crate::format::{Encoder, Format, FormatError};
use crate::sink::{Item, Sealed, Sink, SinkError};

/// Default size at which the current file is rotated.
pub const DEFAULT_ROTATE_BYTES: u64 = 100 * 1024 * 1024;

/// How the file sink writes.
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// Directory of the files.
    pub dir: PathBuf,
    /// Name of the current file without extension.
    pub prefix: String,
    /// Rotate at this size (`None`: never by size).
    pub rotate_bytes: Option<u64>,
    /// Rotate at this age (`None`: never by time).
    pub rotate_every: Option<Duration>,
}

/// A rotating line file.
pub struct FileSink {
    options: FileOptions,
    encoder: Encoder,
    ext: &'static str,
    file: Option<Current>,
    buffer: Vec<u8>,
}

/// The open current file.
struct Current {
    file: File,
    size: u64,
    started: SystemTime,
    first_seq: Option<i64>,
}

impl FileSink {
    /// A sink writing `format` records as `options` say. Nothing is opened
    /// until the first delivery.
    pub fn new(options: FileOptions, format: Format) -> Self {
        FileSink {
            options,
            encoder: Encoder::new(format),
            ext: extension(format),
            file: None,
            buffer: Vec::new(),
        }
    }

    /// The current file's path.
    pub fn current_path(&self) -> PathBuf {
        self.options
            .dir
            .join(format!("{}.{}", self.options.prefix, self.ext))
    }

    fn unavailable(&self, what: &str, error: std::io::Error) -> SinkError {
        SinkError::Unavailable {
            destination: self.destination(),
            reason: format!("{what}: {error}"),
        }
    }

    /// Opens (or creates) the current file, ending a partial last line.
    fn open_current(&mut self) -> Result<(), SinkError> {
        let path = self.current_path();
        fs::create_dir_all(&self.options.dir)
            .map_err(|e| self.unavailable("cannot create the directory", e))?;
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| self.unavailable("cannot open the current file", e))?;
        let meta = file
            .metadata()
            .map_err(|e| self.unavailable("cannot read the current file", e))?;
        let mut size = meta.len();
        let mut first_seq = None;
        if size > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(size - 1))
                .and_then(|_| file.read_exact(&mut last))
                .map_err(|e| self.unavailable("cannot read the current file", e))?;
            if last[0] != b'\n' {
                // A write cut short: end the fragment so the next record
                // starts on its own line; the runner writes it again whole.
                file.write_all(b"\n")
                    .and_then(|_| file.sync_data())
                    .map_err(|e| self.unavailable("cannot end a partial line", e))?;
                size += 1;
                tracing::warn!(file = %path.display(), "ended a partial last line left by a crash; its record is written again in full");
            }
            first_seq = first_seq_of(&mut file);
        }
        let started = meta
            .created()
            .or_else(|_| meta.modified())
            .unwrap_or_else(|_| SystemTime::now());
        let mut current = Current {
            file,
            size,
            started,
            first_seq,
        };
        if size == 0 {
            let header = self.encoder.header();
            if !header.is_empty() {
                current
                    .file
                    .write_all(&header)
                    .map_err(|e| self.unavailable("cannot write the header", e))?;
                current.size += header.len() as u64;
            }
            current.started = SystemTime::now();
        }
        self.file = Some(current);
        Ok(())
    }

    /// True when the current file is due for rotation.
    fn due(&self, current: &Current) -> bool {
        let header = self.encoder.header().len() as u64;
        if current.size <= header {
            return false;
        }
        let by_size = self
            .options
            .rotate_bytes
            .is_some_and(|max| max > 0 && current.size >= max);
        let by_time = self
            .options
            .rotate_every
            .is_some_and(|every| current.started.elapsed().is_ok_and(|age| age >= every));
        by_size || by_time
    }

    /// Renames the current file to its rotated name and makes the directory
    /// entry durable; the next write starts a new current file.
    fn rotate(&mut self) -> Result<(), SinkError> {
        let Some(current) = self.file.take() else {
            return Ok(());
        };
        current
            .file
            .sync_all()
            .map_err(|e| self.unavailable("cannot fsync before rotating", e))?;
        drop(current.file);
        let time: DateTime<Utc> = Utc::now();
        let mut name = format!(
            "{}-{}",
            self.options.prefix,
            time.format("%Y%m%dT%H%M%S%.3fZ")
        );
        if let Some(seq) = current.first_seq {
            name.push_str(&format!("-{seq}"));
        }
        let rotated = self.options.dir.join(format!("{name}.{}", self.ext));
        fs::rename(self.current_path(), &rotated)
            .map_err(|e| self.unavailable("cannot rotate", e))?;
        sync_dir(&self.options.dir)
            .map_err(|e| self.unavailable("cannot fsync the directory", e))?;
        tracing::info!(file = %rotated.display(), "rotated");
        Ok(())
    }
}

/// The extension of a format's files.
fn extension(format: Format) -> &'static str {
    match format {
        Format::Jsonl | Format::Ocsf | Format::Ecs => "jsonl",
        Format::Cef => "cef",
        Format::Syslog => "log",
        Format::Csv => "csv",
    }
}

/// The `seq` of the file's first JSON line, if it has one.
fn first_seq_of(file: &mut File) -> Option<i64> {
    let mut head = vec![0u8; 64 * 1024];
    file.seek(SeekFrom::Start(0)).ok()?;
    let n = file.read(&mut head).ok()?;
    let line = head[..n].split(|b| *b == b'\n').next()?;
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    value.get("seq")?.as_i64()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[async_trait]
impl Sink for FileSink {
    fn destination(&self) -> String {
        self.current_path().display().to_string()
    }

    async fn deliver(&mut self, items: &[Item]) -> Result<(), SinkError> {
        let first_seq = self.encode(items, Encoder::encode)?;
        self.write_buffer(first_seq)
    }

    fn reads_raw(&self) -> bool {
        self.encoder.format() == Format::Jsonl
    }

    async fn deliver_raw(&mut self, items: &[Item<RawEvent>]) -> Result<(), SinkError> {
        // Each event written from its stored body.
        let first_seq = self.encode(items, Encoder::encode_raw)?;
        self.write_buffer(first_seq)
    }
}

impl FileSink {
    /// Encodes `items` into the buffer (events with `event`), before
    /// anything is written: a record that cannot be written fails the
    /// batch with nothing of it in the file. Returns the first event's seq.
    fn encode<E: Sealed>(
        &mut self,
        items: &[Item<E>],
        event: impl Fn(&Encoder, &E, &mut Vec<u8>) -> Result<(), FormatError>,
    ) -> Result<Option<i64>, SinkError> {
        self.buffer.clear();
        let mut first_seq = None;
        for item in items {
            let start = self.buffer.len();
            match item {
                Item::Event(sealed) => {
                    first_seq = first_seq.or(sealed.seq());
                    event(&self.encoder, sealed, &mut self.buffer)?;
                }
                Item::Checkpoint(checkpoint) => {
                    self.encoder
                        .encode_checkpoint(checkpoint, &mut self.buffer)?;
                }
            }
            if self.buffer.len() > start && self.buffer.last() != Some(&b'\n') {
                self.buffer.push(b'\n');
            }
        }
        Ok(first_seq)
    }
}

impl FileSink {
    /// Writes the encoded batch in one write and one fsync, rotating
    /// first when the current file is due.
    fn write_buffer(&mut self, first_seq: Option<i64>) -> Result<(), SinkError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        if self.file.as_ref().is_some_and(|current| self.due(current)) {
            self.rotate()?;
        }
        if self.file.is_none() {
            self.open_current()?;
        }
        let Some(current) = self.file.as_mut() else {
            return Err(SinkError::Unavailable {
                destination: self.destination(),
                reason: "the current file is not open".into(),
            });
        };
        let written = current
            .file
            .write_all(&self.buffer)
            .and_then(|_| current.file.sync_data());
        match written {
            Ok(()) => {
                current.size += self.buffer.len() as u64;
                current.first_seq = current.first_seq.or(first_seq);
                Ok(())
            }
            Err(error) => {
                // Reopened next time: a partial line is ended then.
                self.file = None;
                Err(self.unavailable("cannot write", error))
            }
        }
    }
}
