//! Recording: a sample of the calls a process serves, per stage, written to
//! rotating files as [`pb::Recording`] messages, for `feeds replay`.
//!
//! A process records the calls to the stages it hosts, however they arrive:
//! over gRPC (at the server adapter) or in-process (at the `local`
//! binding). A sampled call pays for encoding its request and its answer on
//! the request path; everything else happens on the recorder's own thread:
//! the call hands the record over a bounded queue and never waits, so a full
//! queue or a slow disk drops records (counted) and never slows a call.
//! Shadow copies are not recorded.
//!
//! # File format
//! A file starts with the 8 bytes `TNDREC01`. Then, per record: the four
//! bytes `TREC`, the length `n` of the encoded `Recording` (`u32`,
//! little-endian), the low 32 bits of its XXH3-64 checksum (`u32`,
//! little-endian), then the `n` bytes. The marker and the checksum let a
//! reader name the byte offset where a file is damaged and find the next
//! whole record after it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use serde::{Deserialize, Serialize};

use crate::stack::MethodInfo;
use crate::{ConfigError, Cx, Stage, pb};

/// First bytes of a recording file.
pub const FILE_MAGIC: &[u8; 8] = b"TNDREC01";
/// First bytes of every record.
pub const RECORD_MAGIC: &[u8; 4] = b"TREC";
/// Bytes before a record's message: marker, length, checksum.
const RECORD_HEAD: usize = 12;

/// One stage's `[record.<stage>]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordConfig {
    /// Fraction of calls recorded (0..=1).
    pub rate: f64,
    /// Directory the files go to (created if missing).
    pub dir: String,
    /// A file is closed and a new one started past this size.
    pub max_file_bytes: u64,
    /// Files kept per stage; the oldest are deleted.
    pub max_files: usize,
    /// Calls whose request and answer together are larger are not recorded
    /// (counted).
    pub max_record_bytes: usize,
    /// Records waiting for the writer; past it, records are dropped (counted).
    pub queue: usize,
}

impl Default for RecordConfig {
    fn default() -> Self {
        Self {
            rate: 0.01,
            dir: "recordings".into(),
            max_file_bytes: 64 << 20,
            max_files: 8,
            max_record_bytes: 4 << 20,
            queue: 1_024,
        }
    }
}

impl RecordConfig {
    /// Checks the values; `prefix` is `record.<stage>`.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::new(format!("{prefix}.{key}"), why));
        if !(0.0..=1.0).contains(&self.rate) {
            return bad("rate", "must be a fraction (0..=1)");
        }
        if self.dir.is_empty() {
            return bad("dir", "must name a directory");
        }
        if self.max_file_bytes < 4_096 {
            return bad("max_file_bytes", "must be at least 4096");
        }
        if self.max_files == 0 {
            return bad("max_files", "must be at least 1");
        }
        if self.max_record_bytes == 0 || self.max_record_bytes as u64 > self.max_file_bytes {
            return bad("max_record_bytes", "must be 1..=max_file_bytes");
        }
        if self.queue == 0 {
            return bad("queue", "must be at least 1");
        }
        Ok(())
    }
}

/// The recorders of one process, by stage.
#[derive(Debug, Default)]
pub struct Recorders(BTreeMap<Stage, std::sync::Arc<Recorder>>);

/// Two sets of recorders are the same only if they are one set (they own
/// threads and files, not values).
impl PartialEq for Recorders {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Recorders {}

impl Recorders {
    /// Starts a recorder (and its writer thread) for every configured stage.
    pub fn new(configs: &BTreeMap<Stage, RecordConfig>) -> Result<Self, ConfigError> {
        let mut out = BTreeMap::new();
        for (stage, config) in configs {
            out.insert(
                *stage,
                std::sync::Arc::new(Recorder::start(*stage, config)?),
            );
        }
        Ok(Self(out))
    }

    /// The recorder of `stage`, if it is recorded.
    pub fn get(&self, stage: Stage) -> Option<std::sync::Arc<Recorder>> {
        self.0.get(&stage).cloned()
    }
}

/// One stage's recorder: the sampling, and the queue to its writer thread.
#[derive(Debug)]
pub struct Recorder {
    stage: Stage,
    /// `rate` in millionths.
    rate: u64,
    max_record_bytes: usize,
    queue: SyncSender<pb::Recording>,
    /// Records not written, by reason (shared with the writer).
    dropped: std::sync::Arc<Dropped>,
}

/// Why records were not written.
#[derive(Debug, Default)]
struct Dropped {
    queue_full: AtomicU64,
    too_large: AtomicU64,
    write_failed: AtomicU64,
}

/// A sampled call on its way to the recorder.
pub struct Pending<'r> {
    recorder: &'r Recorder,
    record: pb::Recording,
    started: Instant,
}

impl Recorder {
    fn start(stage: Stage, config: &RecordConfig) -> Result<Self, ConfigError> {
        let prefix = format!("record.{}", stage.name());
        config.validate(&prefix)?;
        let dir = PathBuf::from(&config.dir);
        std::fs::create_dir_all(&dir).map_err(|e| {
            ConfigError::new(format!("{prefix}.dir"), format!("{}: {e}", dir.display()))
        })?;
        let (queue, rx) = std::sync::mpsc::sync_channel::<pb::Recording>(config.queue);
        let dropped = std::sync::Arc::new(Dropped::default());
        let writer = Writer {
            dir,
            stage,
            max_file_bytes: config.max_file_bytes,
            max_files: config.max_files,
            file: None,
            written: 0,
            sequence: 0,
        };
        let failed = std::sync::Arc::clone(&dropped);
        std::thread::Builder::new()
            .name(format!("record-{}", stage.name()))
            .spawn(move || writer.run(rx, &failed))
            .map_err(|e| ConfigError::new(prefix, format!("cannot start the writer: {e}")))?;
        Ok(Self {
            stage,
            rate: (config.rate * 1e6).round() as u64,
            max_record_bytes: config.max_record_bytes,
            queue,
            dropped,
        })
    }

    /// Starts recording this call if the sample takes it (never a shadow
    /// copy): the request is encoded now, the answer in [`Pending::finish`].
    pub fn begin<M: prost::Message>(
        &self,
        method: &MethodInfo,
        binding: &str,
        cx: &Cx,
        request: &M,
    ) -> Option<Pending<'_>> {
        if cx.is_shadow() || crate::observe::random_u64() % 1_000_000 >= self.rate {
            return None;
        }
        if request.encoded_len() > self.max_record_bytes {
            self.count(&self.dropped.too_large, "too_large");
            return None;
        }
        let metadata = cx
            .headers()
            .map(|(name, value)| pb::Header {
                name: name.to_owned(),
                value: value.to_owned(),
            })
            .collect();
        let started_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        Some(Pending {
            recorder: self,
            record: pb::Recording {
                stage: self.stage.name().to_owned(),
                method: method.path.to_owned(),
                metadata,
                request: request.encode_to_vec().into(),
                started_unix_us,
                binding: binding.to_owned(),
                ..Default::default()
            },
            started: Instant::now(),
        })
    }

    fn count(&self, counter: &AtomicU64, reason: &'static str) {
        counter.fetch_add(1, Ordering::Relaxed);
        crate::observe::count_record_dropped(self.stage, reason);
    }

    /// Records dropped so far: (queue full, too large, write failed).
    pub fn dropped(&self) -> (u64, u64, u64) {
        let d = &self.dropped;
        (
            d.queue_full.load(Ordering::Relaxed),
            d.too_large.load(Ordering::Relaxed),
            d.write_failed.load(Ordering::Relaxed),
        )
    }
}

impl Pending<'_> {
    /// Adds the call's outcome and hands the record to the writer, without
    /// waiting.
    pub fn finish<R: prost::Message>(mut self, out: &Result<R, crate::Status>) {
        let r = &mut self.record;
        r.duration_us = self.started.elapsed().as_micros() as u64;
        match out {
            Ok(answer) => {
                if r.request.len() + answer.encoded_len() > self.recorder.max_record_bytes {
                    self.recorder
                        .count(&self.recorder.dropped.too_large, "too_large");
                    return;
                }
                r.response = answer.encode_to_vec().into();
            }
            Err(status) => {
                r.code = status.code() as i32;
                r.message = status.message().to_owned();
            }
        }
        match self.recorder.queue.try_send(self.record) {
            Ok(()) => crate::observe::count_recorded(self.recorder.stage),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self
                .recorder
                .count(&self.recorder.dropped.queue_full, "queue_full"),
        }
    }
}

/// The writer thread's state: the current file and when to rotate.
struct Writer {
    dir: PathBuf,
    stage: Stage,
    max_file_bytes: u64,
    max_files: usize,
    file: Option<std::io::BufWriter<std::fs::File>>,
    written: u64,
    sequence: u64,
}

impl Writer {
    fn run(mut self, rx: std::sync::mpsc::Receiver<pb::Recording>, dropped: &Dropped) {
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            while let Some(record) = next {
                if let Err(e) = self.write(&record) {
                    dropped.write_failed.fetch_add(1, Ordering::Relaxed);
                    crate::observe::count_record_dropped(self.stage, "write_failed");
                    tracing::warn!(stage = self.stage.name(), dir = %self.dir.display(), "recording not written: {e}");
                    self.file = None;
                }
                next = rx.try_recv().ok();
            }
            // The queue is empty: flush, so a file on disk is whole up to
            // its last record whenever the process is idle.
            if let Some(f) = self.file.as_mut() {
                let _ = f.flush();
            }
        }
    }

    fn write(&mut self, record: &pb::Recording) -> std::io::Result<()> {
        let body = record.encode_to_vec();
        let len = (RECORD_HEAD + body.len()) as u64;
        if self.file.is_none() || self.written + len > self.max_file_bytes {
            self.rotate()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(std::io::Error::other("no file open"));
        };
        file.write_all(RECORD_MAGIC)?;
        file.write_all(&(body.len() as u32).to_le_bytes())?;
        file.write_all(&(xxhash_rust::xxh3::xxh3_64(&body) as u32).to_le_bytes())?;
        file.write_all(&body)?;
        self.written += len;
        Ok(())
    }

    /// Closes the current file, deletes the oldest beyond `max_files`, and
    /// opens `<stage>-<unix ms>-<seq>.rec`.
    fn rotate(&mut self) -> std::io::Result<()> {
        if let Some(mut f) = self.file.take() {
            f.flush()?;
        }
        let prefix = format!("{}-", self.stage.name());
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "rec")
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&prefix))
            })
            .collect();
        files.sort();
        while files.len() >= self.max_files {
            let oldest = files.remove(0);
            std::fs::remove_file(oldest)?;
        }
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        self.sequence += 1;
        let path = self
            .dir
            .join(format!("{prefix}{ms:013}-{:06}.rec", self.sequence));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        file.write_all(FILE_MAGIC)?;
        self.file = Some(file);
        self.written = FILE_MAGIC.len() as u64;
        Ok(())
    }
}

/// A recording file could not be read at some point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: byte {offset}: {why}")]
pub struct RecordError {
    /// The file.
    pub file: String,
    /// Where the damage starts.
    pub offset: u64,
    /// What is wrong there.
    pub why: String,
}

/// Reads the records of one file in order.
pub struct RecordReader<R> {
    input: R,
    file: String,
    offset: u64,
    /// Bytes read past `offset` but not yet consumed (while resyncing).
    buffer: Vec<u8>,
    started: bool,
}

impl RecordReader<std::io::BufReader<std::fs::File>> {
    /// Opens `path`.
    pub fn open(path: &Path) -> Result<Self, RecordError> {
        let file = std::fs::File::open(path).map_err(|e| RecordError {
            file: path.display().to_string(),
            offset: 0,
            why: e.to_string(),
        })?;
        Ok(Self::new(
            std::io::BufReader::new(file),
            &path.display().to_string(),
        ))
    }
}

impl<R: Read> RecordReader<R> {
    /// Reads `input`, named `file` in errors.
    pub fn new(input: R, file: &str) -> Self {
        Self {
            input,
            file: file.to_owned(),
            offset: 0,
            buffer: Vec::new(),
            started: false,
        }
    }

    fn error(&self, offset: u64, why: impl Into<String>) -> RecordError {
        RecordError {
            file: self.file.clone(),
            offset,
            why: why.into(),
        }
    }

    /// Fills `buffer` to at least `n` bytes; false at a clean end of input.
    fn fill(&mut self, n: usize) -> Result<bool, RecordError> {
        let mut chunk = [0u8; 8_192];
        while self.buffer.len() < n {
            let got = self
                .input
                .read(&mut chunk)
                .map_err(|e| self.error(self.offset + self.buffer.len() as u64, e.to_string()))?;
            if got == 0 {
                return Ok(false);
            }
            self.buffer.extend_from_slice(&chunk[..got]);
        }
        Ok(true)
    }

    fn consume(&mut self, n: usize) {
        self.buffer.drain(..n);
        self.offset += n as u64;
    }

    /// The next record: `Ok(None)` at the end, `Err` where the file is
    /// damaged (the reader then stands at the damage; see [`Self::skip_damage`]).
    pub fn next_record(&mut self) -> Result<Option<pb::Recording>, RecordError> {
        if !self.started {
            if !self.fill(FILE_MAGIC.len())? || &self.buffer[..FILE_MAGIC.len()] != FILE_MAGIC {
                return Err(self.error(0, "not a recording file (no TNDREC01 header)"));
            }
            self.consume(FILE_MAGIC.len());
            self.started = true;
        }
        if !self.fill(1)? {
            return Ok(None);
        }
        let at = self.offset;
        if !self.fill(RECORD_HEAD)? {
            return Err(self.error(at, "truncated record header"));
        }
        if &self.buffer[..4] != RECORD_MAGIC {
            return Err(self.error(at, "no record marker"));
        }
        let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let len = word(&self.buffer[4..8]) as usize;
        let sum = word(&self.buffer[8..12]);
        if len > 1 << 30 {
            return Err(self.error(at, format!("record length {len} is not plausible")));
        }
        if !self.fill(RECORD_HEAD + len)? {
            return Err(self.error(
                at,
                format!(
                    "truncated record: {len} bytes announced, {} present",
                    self.buffer.len() - RECORD_HEAD
                ),
            ));
        }
        let body = &self.buffer[RECORD_HEAD..RECORD_HEAD + len];
        if xxhash_rust::xxh3::xxh3_64(body) as u32 != sum {
            return Err(self.error(at, "checksum mismatch"));
        }
        let record = pb::Recording::decode(body)
            .map_err(|e| self.error(at, format!("not a Recording: {e}")))?;
        self.consume(RECORD_HEAD + len);
        Ok(Some(record))
    }

    /// Moves past damage to the next record marker (or the end); returns
    /// the bytes skipped.
    pub fn skip_damage(&mut self) -> Result<u64, RecordError> {
        let start = self.offset;
        // Past the damaged marker itself, then to the next marker.
        if !self.buffer.is_empty() {
            self.consume(1);
        }
        loop {
            if let Some(i) = self
                .buffer
                .windows(RECORD_MAGIC.len())
                .position(|w| w == RECORD_MAGIC)
            {
                self.consume(i);
                return Ok(self.offset - start);
            }
            // Keep the last bytes: a marker may straddle two reads.
            let keep = self.buffer.len().min(RECORD_MAGIC.len() - 1);
            let drop = self.buffer.len() - keep;
            self.consume(drop);
            let before = self.buffer.len();
            if !self.fill(before + 1)? {
                let rest = self.buffer.len();
                self.consume(rest);
                return Ok(self.offset - start);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u64) -> pb::Recording {
        pb::Recording {
            stage: "recall".into(),
            method: "/feeds.v1.Recall/Recall".into(),
            request: pb::RecallRequest {
                user_id: i.to_string(),
                ..Default::default()
            }
            .encode_to_vec()
            .into(),
            ..Default::default()
        }
    }

    fn file(records: &[pb::Recording]) -> Vec<u8> {
        let mut out = FILE_MAGIC.to_vec();
        for r in records {
            let body = r.encode_to_vec();
            out.extend_from_slice(RECORD_MAGIC);
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(&(xxhash_rust::xxh3::xxh3_64(&body) as u32).to_le_bytes());
            out.extend_from_slice(&body);
        }
        out
    }

    fn read_all(bytes: &[u8], skip: bool) -> Result<(Vec<pb::Recording>, u64), RecordError> {
        let mut reader = RecordReader::new(bytes, "t.rec");
        let (mut out, mut skipped) = (Vec::new(), 0);
        loop {
            match reader.next_record() {
                Ok(Some(r)) => out.push(r),
                Ok(None) => return Ok((out, skipped)),
                Err(e) if skip && e.offset > 0 => {
                    skipped += 1;
                    reader.skip_damage()?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    #[test]
    fn records_round_trip() {
        let records: Vec<_> = (0..5).map(record).collect();
        let (got, skipped) = read_all(&file(&records), false).expect("reads");
        assert_eq!(got, records);
        assert_eq!(skipped, 0);
    }

    #[test]
    fn damage_is_named_by_offset_and_can_be_skipped() {
        let records: Vec<_> = (0..3).map(record).collect();
        let mut bytes = file(&records);
        let second = 8 + RECORD_HEAD + records[0].encode_to_vec().len();
        // A flipped byte in the second record's body.
        bytes[second + RECORD_HEAD + 2] ^= 0xff;
        let err = read_all(&bytes, false).expect_err("damaged");
        assert_eq!(err.offset, second as u64, "{err}");
        assert!(err.to_string().contains("t.rec: byte"), "{err}");
        let (got, skipped) = read_all(&bytes, true).expect("skips");
        assert_eq!(got, vec![records[0].clone(), records[2].clone()]);
        assert_eq!(skipped, 1);
        // Truncated in the middle of the last record.
        let cut = &file(&records)[..bytes.len() - 3];
        let err = read_all(cut, false).expect_err("truncated");
        assert!(err.why.contains("truncated"), "{err}");
        // Not a recording at all.
        let err = read_all(b"hello world", false).expect_err("not ours");
        assert_eq!(err.offset, 0);
    }

    #[test]
    fn the_writer_rotates_and_keeps_max_files() {
        let dir = std::env::temp_dir().join(format!("tandem-rec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let mut w = Writer {
            dir: dir.clone(),
            stage: Stage::Recall,
            max_file_bytes: 200,
            max_files: 2,
            file: None,
            written: 0,
            sequence: 0,
        };
        for i in 0..20 {
            w.write(&record(i)).expect("write");
        }
        w.rotate().expect("close");
        let files: Vec<_> = std::fs::read_dir(&dir).expect("list").collect();
        assert_eq!(files.len(), 2, "{files:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
