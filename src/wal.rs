//! The write-ahead log of one pipeline: every accepted batch, watermark advance and tick, in
//! processing order, under `EDDY_DATA_DIR/wal/<pipeline>/` as segment files named by their
//! first LSN.
//!
//! Group commit: appends queue under a mutex (called under the sequencer lock, so queue order
//! is processing order); one writer thread takes everything queued, writes it with one
//! `write`, one `fdatasync`, then runs each record's `after` action in order. The engine hands
//! batches to its shards in those actions, so nothing is applied, answered or visible before
//! it is durable.
//!
//! Invariant: LSNs are dense and increasing across segments. At open only a torn tail (an
//! interrupted write at the end of the newest segment: never acknowledged) is cut; any other
//! damage fails the open with [`WalError::Corrupt`] and changes nothing (see `scan`).
//!
//! Over 400 lines for a reason: the append queue, the one writer thread and the open are one
//! invariant (dense LSNs in processing order, durable before anything is applied) read best in
//! one file; framing (`record`), inspection (`scan`) and `repair` are their own files.

mod record;
mod repair;
mod scan;

pub use record::{DecodeError, MAX_PAYLOAD, Record};
pub use repair::{Cut, Loss, Repaired, loss, repair};
pub use scan::{Beyond, Damage, Scan, Verdict};

use crate::metrics::WalMetrics;
use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// Segment size at which the writer starts a new file.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// What happens once a record is durable (`Ok`) or can never be (`Err`).
pub type After = Box<dyn FnOnce(Result<(), WalFailed>) + Send>;

/// The log failed to write; the pipeline must stop (nothing after this is durable).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("write-ahead log failed: {0}")]
pub struct WalFailed(pub String);

/// Failures of opening a log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Acknowledged records are damaged or missing: nothing was changed on disk.
    #[error("WAL segment {path} is damaged at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
}

/// Segments read whole: (first LSN, path, contents), by first LSN.
type Segments = Vec<(u64, PathBuf, Vec<u8>)>;

/// The typed error of a scan's damage.
fn corrupt(segments: &Segments, damage: Damage) -> WalError {
    WalError::Corrupt {
        path: segments[damage.segment].1.clone(),
        position: damage.position as u64,
        reason: damage.reason,
    }
}

/// Deletes the log in `dir` (its pipeline is deleted). Copies a repair set aside
/// (`repaired-*`) are kept, and with them the directory: eddy never deletes them.
pub fn remove_log(dir: &Path) -> Result<(), WalError> {
    if !dir.exists() {
        return Ok(());
    }
    for (_, path) in segments_of(dir)? {
        std::fs::remove_file(&path).map_err(io(&path))?;
    }
    // Fails (and so keeps it) only when a repaired copy is inside.
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

/// Judges the log in `dir` without changing it (`covered`: the LSN the last completed
/// checkpoint covers); a missing directory is an empty, whole log.
pub fn inspect(dir: &Path, covered: u64) -> Result<Scan, WalError> {
    if !dir.exists() {
        return Ok(scan::scan(&[], covered));
    }
    Ok(read(dir, covered)?.1)
}

/// Reads every segment of `dir` and judges the log (`covered`: the LSN the last completed
/// checkpoint covers). Changes nothing on disk.
fn read(dir: &Path, covered: u64) -> Result<(Segments, Scan), WalError> {
    let mut segments = Vec::new();
    for (first, path) in segments_of(dir)? {
        let data = std::fs::read(&path).map_err(io(&path))?;
        segments.push((first, path, data));
    }
    let views: Vec<(u64, &[u8])> = segments.iter().map(|(f, _, d)| (*f, &d[..])).collect();
    let scan = scan::scan(&views, covered);
    for damage in &scan.passed_over {
        let path = segments[damage.segment].1.display();
        tracing::warn!(segment = %path, at = damage.position, reason = %damage.reason, "WAL damage passed over: it hides only records the last checkpoint covers");
    }
    Ok((segments, scan))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// How the log writes.
#[derive(Clone, Copy, Debug)]
pub struct WalOptions {
    /// `fdatasync` before acknowledging (off only for benchmarks).
    pub fsync: bool,
    pub segment_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            fsync: true,
            segment_bytes: SEGMENT_BYTES,
        }
    }
}

struct Entry {
    bytes: Vec<u8>,
    after: After,
}

struct Queue {
    entries: Vec<Entry>,
    next_lsn: u64,
    closing: bool,
    failed: Option<WalFailed>,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

/// An open log.
pub struct Wal {
    dir: PathBuf,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

/// What an opened log holds.
pub struct Opened {
    pub wal: Wal,
    /// Every good record, in LSN order.
    pub records: Vec<(u64, Record)>,
    /// Bytes cut from a torn tail.
    pub cut_bytes: u64,
    /// Where the torn tail was cut (segment, byte), when one was.
    pub cut_at: Option<(PathBuf, u64)>,
}

impl Wal {
    /// Opens (creating) the log in `dir`: reads every segment, cuts a bad tail, and starts the
    /// writer after the last good record, or at `next_lsn` if that is later (the log may have
    /// been emptied past a checkpoint at `next_lsn - 1`).
    pub fn open(dir: &Path, options: WalOptions, next_lsn: u64) -> Result<Opened, WalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let (mut segments, scan) = read(dir, next_lsn.saturating_sub(1))?;
        let (mut cut_bytes, mut cut_at) = (0, None);
        match scan.verdict {
            Verdict::Whole => {}
            Verdict::Torn { segment, position } => {
                let (_, path, data) = &segments[segment];
                cut_bytes = (data.len() - position) as u64;
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io(path))?;
                file.set_len(position as u64).map_err(io(path))?;
                file.sync_all().map_err(io(path))?;
                cut_at = Some((path.clone(), position as u64));
            }
            Verdict::Corrupt(damage) => return Err(corrupt(&segments, damage)),
        }
        let records = scan.records;
        let segments: Vec<(u64, PathBuf)> = segments.drain(..).map(|(f, p, _)| (f, p)).collect();
        let found = records
            .last()
            .map_or_else(|| segments.last().map_or(1, |(f, _)| *f), |(l, _)| l + 1);
        let next_lsn = found.max(next_lsn);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                entries: Vec::new(),
                next_lsn,
                closing: false,
                failed: None,
            }),
            wake: Condvar::new(),
        });
        let (file, path, size) = match segments.last() {
            Some((_, path)) if found == next_lsn => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(path)
                    .map_err(io(path))?;
                let size = file.metadata().map_err(io(path))?.len();
                (file, path.clone(), size)
            }
            _ => new_segment(dir, next_lsn)?,
        };
        let writer = Writer {
            dir: dir.to_owned(),
            file,
            path,
            size,
            options,
            shared: shared.clone(),
            metrics: WalMetrics::new(&pipeline_of(dir)),
        };
        let handle = std::thread::Builder::new()
            .name("eddy-wal".into())
            .spawn(move || writer.run())
            .map_err(io(dir))?;
        let wal = Wal {
            dir: dir.to_owned(),
            shared,
            writer: Some(handle),
        };
        Ok(Opened {
            wal,
            records,
            cut_bytes,
            cut_at,
        })
    }

    /// Queues `record`; `after` runs once it is durable, in LSN order. Returns its LSN.
    pub fn append(&self, record: &Record, after: After) -> u64 {
        let mut queue = self.shared.queue.lock().expect("wal lock");
        let lsn = queue.next_lsn;
        if let Some(failed) = queue.failed.clone() {
            drop(queue);
            after(Err(failed));
            return lsn;
        }
        queue.next_lsn += 1;
        queue.entries.push(Entry {
            bytes: record.encode(lsn),
            after,
        });
        drop(queue);
        self.shared.wake.notify_one();
        lsn
    }

    /// Queues an action that runs after everything queued before it is durable (no record).
    pub fn after_queued(&self, after: After) {
        let mut queue = self.shared.queue.lock().expect("wal lock");
        if let Some(failed) = queue.failed.clone() {
            drop(queue);
            after(Err(failed));
            return;
        }
        queue.entries.push(Entry {
            bytes: Vec::new(),
            after,
        });
        drop(queue);
        self.shared.wake.notify_one();
    }

    /// LSN of the newest record queued (0 before any).
    pub fn last_lsn(&self) -> u64 {
        self.shared.queue.lock().expect("wal lock").next_lsn - 1
    }

    /// Deletes segments whose records all have LSN <= `lsn` (covered by a checkpoint).
    pub fn remove_through(&self, lsn: u64) -> Result<usize, WalError> {
        let segments = segments_of(&self.dir)?;
        let mut removed = 0;
        for pair in segments.windows(2) {
            let (next_first, _) = &pair[1];
            if *next_first <= lsn + 1 {
                std::fs::remove_file(&pair[0].1).map_err(io(&pair[0].1))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Cuts every record after `lsn` from the log in `dir` (a restore discards them). The log
    /// must not be open.
    pub fn truncate_after(dir: &Path, lsn: u64) -> Result<(), WalError> {
        if !dir.exists() {
            return Ok(());
        }
        for (first, path) in segments_of(dir)? {
            if first > lsn {
                std::fs::remove_file(&path).map_err(io(&path))?;
                continue;
            }
            let data = std::fs::read(&path).map_err(io(&path))?;
            let mut pos = 0;
            while let Ok((record_lsn, _, used)) = Record::decode(&data[pos..]) {
                if record_lsn > lsn {
                    break;
                }
                pos += used;
            }
            if pos < data.len() {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io(&path))?;
                file.set_len(pos as u64).map_err(io(&path))?;
                file.sync_all().map_err(io(&path))?;
            }
        }
        Ok(())
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.shared.queue.lock().expect("wal lock").closing = true;
        self.shared.wake.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Segment files of `dir`, by first LSN.
/// The pipeline a log belongs to: its directory is `wal/<pipeline>`.
fn pipeline_of(dir: &Path) -> String {
    dir.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

fn segments_of(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            found.push((first, path));
        }
    }
    found.sort();
    Ok(found)
}

fn new_segment(dir: &Path, first_lsn: u64) -> Result<(File, PathBuf, u64), WalError> {
    let path = dir.join(format!("{first_lsn:020}.wal"));
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io(&path))?;
    // The new name must be durable too.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok((file, path, 0))
}

struct Writer {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    size: u64,
    options: WalOptions,
    shared: Arc<Shared>,
    metrics: WalMetrics,
}

impl Writer {
    fn run(mut self) {
        loop {
            let (entries, next_lsn) = {
                let mut queue = self.shared.queue.lock().expect("wal lock");
                while queue.entries.is_empty() && !queue.closing {
                    queue = self.shared.wake.wait(queue).expect("wal lock");
                }
                if queue.entries.is_empty() {
                    return;
                }
                (std::mem::take(&mut queue.entries), queue.next_lsn)
            };
            let written = self
                .write(&entries, next_lsn)
                .map_err(|e| WalFailed(e.to_string()));
            if let Err(e) = &written {
                tracing::error!(pipeline = %pipeline_of(&self.dir), reason = %e, next = "the pipeline answers 503 to every write until a restart recovers it from its WAL", wal = %self.path.display(), "WAL write failed");
                self.shared.queue.lock().expect("wal lock").failed = Some(e.clone());
            }
            for entry in entries {
                (entry.after)(written.clone());
            }
            if written.is_err() {
                let mut queue = self.shared.queue.lock().expect("wal lock");
                let failed = queue.failed.clone().expect("set above");
                for entry in std::mem::take(&mut queue.entries) {
                    (entry.after)(Err(failed.clone()));
                }
                return;
            }
        }
    }

    /// Writes the records of `entries` with vectored writes (no copy into one buffer), then
    /// one fdatasync for all of them.
    fn write(&mut self, entries: &[Entry], next_lsn: u64) -> Result<(), std::io::Error> {
        let total: usize = entries.iter().map(|e| e.bytes.len()).sum();
        if total == 0 {
            return Ok(());
        }
        let started = Instant::now();
        let mut slices: Vec<IoSlice<'_>> = entries.iter().map(|e| IoSlice::new(&e.bytes)).collect();
        let mut unwritten = &mut slices[..];
        while !unwritten.is_empty() {
            match self.file.write_vectored(unwritten)? {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                n => IoSlice::advance_slices(&mut unwritten, n),
            }
        }
        self.metrics.append.record(started.elapsed().as_secs_f64());
        self.metrics.bytes.increment(total as u64);
        if self.options.fsync {
            let started = Instant::now();
            self.file.sync_data()?;
            self.metrics.fsync.record(started.elapsed().as_secs_f64());
        }
        self.size += total as u64;
        if self.size >= self.options.segment_bytes {
            let (file, path, size) = new_segment(&self.dir, next_lsn).map_err(|e| match e {
                WalError::Io { source, .. } => source,
                other => std::io::Error::other(other.to_string()),
            })?;
            (self.file, self.path, self.size) = (file, path, size);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn events(n: u8) -> Record {
        Record::Events {
            arrival: i64::from(n),
            format: 0,
            idempotency_key: None,
            first_offset: u64::from(n),
            body: bytes::Bytes::from(vec![b'x'; 100]),
        }
    }

    fn open(dir: &Path, segment_bytes: u64, next_lsn: u64) -> Opened {
        Wal::open(
            dir,
            WalOptions {
                fsync: true,
                segment_bytes,
            },
            next_lsn,
        )
        .unwrap()
    }

    /// Appends `n` records and waits until each is durable; answers their LSNs.
    fn append(wal: &Wal, n: u8) -> Vec<u64> {
        let (tx, rx) = mpsc::channel();
        let lsns: Vec<u64> = (0..n)
            .map(|i| {
                let tx = tx.clone();
                wal.append(
                    &events(i),
                    Box::new(move |r| tx.send((i, r.is_ok())).unwrap()),
                )
            })
            .collect();
        let done: Vec<_> = (0..n).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(
            done,
            (0..n).map(|i| (i, true)).collect::<Vec<_>>(),
            "after-actions run in order, once durable"
        );
        lsns
    }

    #[test]
    fn a_failed_write_fails_that_record_and_every_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let opened = Wal::open(
            dir.path(),
            WalOptions {
                fsync: true,
                segment_bytes: 1,
            },
            1,
        )
        .unwrap();
        // The segment the writer rotates into is /dev/full: its first write gets ENOSPC. (Made
        // after opening: reading /dev/full never ends.)
        std::os::unix::fs::symlink("/dev/full", dir.path().join(format!("{:020}.wal", 2))).unwrap();
        assert_eq!(append(&opened.wal, 1), [1]);
        let (tx, rx) = mpsc::channel();
        for i in 0..2 {
            let tx = tx.clone();
            opened
                .wal
                .append(&events(i), Box::new(move |r| tx.send(r).unwrap()));
            let failed = rx.recv().unwrap().unwrap_err();
            assert!(failed.0.contains("No space left"), "{failed}");
        }
    }

    #[test]
    fn records_come_back_in_order_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let opened = open(dir.path(), SEGMENT_BYTES, 1);
        assert!(opened.records.is_empty());
        assert_eq!(append(&opened.wal, 5), [1, 2, 3, 4, 5]);
        drop(opened);
        let again = open(dir.path(), SEGMENT_BYTES, 1);
        assert_eq!(
            again.records.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(again.records[2].1, events(2));
        assert_eq!(append(&again.wal, 1), [6]);
    }

    #[test]
    fn a_torn_tail_is_cut_at_the_last_good_record() {
        let dir = tempfile::tempdir().unwrap();
        append(&open(dir.path(), SEGMENT_BYTES, 1).wal, 3);
        let segment = segments_of(dir.path()).unwrap().pop().unwrap().1;
        let good = std::fs::metadata(&segment).unwrap().len();
        let mut torn = events(9).encode(4);
        torn.truncate(torn.len() / 2);
        OpenOptions::new()
            .append(true)
            .open(&segment)
            .unwrap()
            .write_all(&torn)
            .unwrap();
        let again = open(dir.path(), SEGMENT_BYTES, 1);
        assert_eq!(again.records.len(), 3);
        assert_eq!(again.cut_bytes, torn.len() as u64);
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), good);
        assert_eq!(
            append(&again.wal, 1),
            [4],
            "the next record takes the cut one's place"
        );
    }

    #[test]
    fn a_corrupt_record_with_good_ones_after_it_fails_the_open_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        append(&open(dir.path(), SEGMENT_BYTES, 1).wal, 4);
        let segment = segments_of(dir.path()).unwrap().pop().unwrap().1;
        let mut data = std::fs::read(&segment).unwrap();
        let second = events(0).encode(1).len();
        data[second + 20] ^= 0xff;
        std::fs::write(&segment, &data).unwrap();
        let err = Wal::open(dir.path(), WalOptions::default(), 1)
            .err()
            .expect("corruption fails the open");
        match &err {
            WalError::Corrupt { path, position, .. } => {
                assert_eq!((path, *position), (&segment, second as u64), "{err}");
            }
            other => panic!("{other}"),
        }
        assert_eq!(std::fs::read(&segment).unwrap(), data, "nothing changed");
        assert_eq!(segments_of(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn a_bad_record_in_an_older_segment_fails_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let opened = open(dir.path(), 300, 1);
        for _ in 0..8 {
            append(&opened.wal, 1);
        }
        drop(opened);
        let first = segments_of(dir.path()).unwrap()[0].1.clone();
        let mut data = std::fs::read(&first).unwrap();
        let last = data.len() - 3;
        data[last] ^= 0x10;
        std::fs::write(&first, &data).unwrap();
        let err = Wal::open(dir.path(), WalOptions::default(), 1)
            .err()
            .unwrap();
        assert!(matches!(err, WalError::Corrupt { .. }), "{err}");
        assert_eq!(std::fs::read(&first).unwrap(), data);
    }

    #[test]
    fn a_repair_cuts_at_the_damage_keeps_every_cut_byte_and_the_log_opens_again() {
        let dir = tempfile::tempdir().unwrap();
        let opened = open(dir.path(), 300, 1);
        for _ in 0..8 {
            append(&opened.wal, 1);
        }
        drop(opened);
        let before: Vec<(PathBuf, Vec<u8>)> = segments_of(dir.path())
            .unwrap()
            .into_iter()
            .map(|(_, p)| {
                let data = std::fs::read(&p).unwrap();
                (p, data)
            })
            .collect();
        assert!(before.len() >= 3, "{}", before.len());
        let mut damaged = before[1].1.clone();
        damaged[30] ^= 0x01;
        std::fs::write(&before[1].0, &damaged).unwrap();
        let Repaired::Cut(cut) = repair(dir.path(), 0, "t").unwrap() else {
            panic!("a cut")
        };
        assert_eq!((&cut.path, cut.position), (&before[1].0, 0));
        let kept_bytes = before[0].1.len() as u64;
        let total: u64 = before.iter().map(|(_, d)| d.len() as u64).sum();
        assert_eq!(cut.bytes, total - kept_bytes);
        for (path, data) in &before[1..] {
            let copy = cut.copy.join(path.file_name().unwrap());
            let expected = if path == &before[1].0 { &damaged } else { data };
            assert_eq!(&std::fs::read(copy).unwrap(), expected);
        }
        let again = open(dir.path(), 300, 1);
        let lsns: Vec<u64> = again.records.iter().map(|(l, _)| *l).collect();
        assert_eq!(lsns, cut.kept.iter().map(|(l, _)| *l).collect::<Vec<_>>());
        drop(again);
        assert!(matches!(
            repair(dir.path(), 0, "u").unwrap(),
            Repaired::Whole
        ));
    }

    #[test]
    fn segments_rotate_and_covered_ones_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let opened = open(dir.path(), 300, 1);
        // One at a time: a group commit writes what is queued at once, rotating only after.
        for _ in 0..10 {
            append(&opened.wal, 1);
        }
        let before = segments_of(dir.path()).unwrap();
        assert!(before.len() >= 3, "{before:?}");
        let removed = opened.wal.remove_through(6).unwrap();
        let after = segments_of(dir.path()).unwrap();
        assert_eq!(before.len() - removed, after.len());
        assert!(
            after[0].0 <= 7,
            "the segment holding LSN 7 stays: {after:?}"
        );
        drop(opened);
        let again = open(dir.path(), 300, 7);
        assert_eq!(again.records.last().unwrap().0, 10);
        assert!(again.records.iter().all(|(l, _)| *l >= after[0].0));
    }

    #[test]
    fn truncation_discards_records_after_an_lsn_and_lsns_continue_from_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        append(&open(dir.path(), 300, 1).wal, 10);
        Wal::truncate_after(dir.path(), 4).unwrap();
        let again = open(dir.path(), 300, 1);
        assert_eq!(
            again.records.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        drop(again);
        Wal::truncate_after(dir.path(), 0).unwrap();
        let empty = open(dir.path(), 300, 42);
        assert!(empty.records.is_empty());
        assert_eq!(
            append(&empty.wal, 2),
            [42, 43],
            "a checkpoint at 41 covered what went"
        );
        drop(empty);
        let last = open(dir.path(), 300, 42);
        assert_eq!(
            last.records.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
            [42, 43]
        );
    }
}
