//! `eddy wal repair`: the operator's explicit cut of a corrupt log. It cuts at the first
//! damage that recovery needs, moves every cut byte (the rest of that segment, every later
//! segment) into `repaired-<stamp>/` beside the segments (kept, never deleted by eddy), and
//! accounts for what the cut records held, so that offsets are never handed out twice.

use super::record::MAX_PAYLOAD;
use super::{Beyond, Record, Verdict, WalError, io, read};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What a repair cut.
#[derive(Debug)]
pub struct Cut {
    /// The damaged segment and the byte the cut starts at.
    pub path: PathBuf,
    pub position: u64,
    pub reason: String,
    /// Bytes moved out of the log.
    pub bytes: u64,
    /// The directory holding the cut bytes.
    pub copy: PathBuf,
    /// The good records left in the log.
    pub kept: Vec<(u64, Record)>,
    /// What the cut bytes held.
    pub beyond: Vec<Beyond>,
}

/// The outcome of a repair.
#[derive(Debug)]
pub enum Repaired {
    /// Nothing is wrong.
    Whole,
    /// Only a torn tail, which opening the log cuts by itself: nothing was done.
    Torn { path: PathBuf, bytes: u64 },
    /// The log was cut.
    Cut(Cut),
}

/// Repairs the log in `dir` (which must not be open), `covered` being the LSN the last
/// completed checkpoint covers; `stamp` names the copy directory.
pub fn repair(dir: &Path, covered: u64, stamp: &str) -> Result<Repaired, WalError> {
    if !dir.exists() {
        return Ok(Repaired::Whole);
    }
    let (segments, scan) = read(dir, covered)?;
    let damage = match scan.verdict {
        Verdict::Whole => return Ok(Repaired::Whole),
        Verdict::Torn { segment, position } => {
            let (_, path, data) = &segments[segment];
            let bytes = (data.len() - position) as u64;
            return Ok(Repaired::Torn {
                path: path.clone(),
                bytes,
            });
        }
        Verdict::Corrupt(damage) => damage,
    };
    let copy = fresh_dir(dir, stamp)?;
    let (_, path, data) = &segments[damage.segment];
    let name = path.file_name().expect("segments have names");
    let mut bytes = (data.len() - damage.position) as u64;
    if damage.position == 0 {
        std::fs::rename(path, copy.join(name)).map_err(io(path))?;
    } else {
        // The copy is durable before the original loses a byte.
        let target = copy.join(name);
        let mut file = File::create(&target).map_err(io(&target))?;
        file.write_all(&data[damage.position..])
            .and_then(|()| file.sync_all())
            .map_err(io(&target))?;
        sync_dir(&copy)?;
        let original = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io(path))?;
        original
            .set_len(damage.position as u64)
            .and_then(|()| original.sync_all())
            .map_err(io(path))?;
    }
    for (_, later, data) in &segments[damage.segment + 1..] {
        let name = later.file_name().expect("segments have names");
        std::fs::rename(later, copy.join(name)).map_err(io(later))?;
        bytes += data.len() as u64;
    }
    sync_dir(&copy)?;
    sync_dir(dir)?;
    Ok(Repaired::Cut(Cut {
        path: path.clone(),
        position: damage.position as u64,
        reason: damage.reason,
        bytes,
        copy,
        kept: scan.records,
        beyond: scan.beyond,
    }))
}

fn fresh_dir(dir: &Path, stamp: &str) -> Result<PathBuf, WalError> {
    let mut n = 1;
    loop {
        let name = match n {
            1 => format!("repaired-{stamp}"),
            n => format!("repaired-{stamp}-{n}"),
        };
        let path = dir.join(name);
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(io(&path)(e)),
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// What the cut records held, as far as they can be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loss {
    /// Acknowledged events lost: those of readable cut records, and those of unreadable ones
    /// that a later readable record's first offset pins down.
    pub events: u64,
    /// Further events that unreadable or missing records after the last readable batch may
    /// have held: an upper bound (each event takes at least a byte); 0 when all are counted.
    pub uncounted_at_most: u64,
    /// First and last offset of the counted lost events.
    pub offsets: Option<(u64, u64)>,
    /// Idempotency keys of the lost batches that could be read, in log order.
    pub keys: Vec<String>,
    /// The next event offset must be at least this: above every offset a cut record took.
    pub next_offset: u64,
}

/// Accounts for a cut: `kept` records stay, `beyond` went; records up to `covered` are in the
/// last checkpoint, whose next offset was `start`.
pub fn loss(kept: &[(u64, Record)], beyond: &[Beyond], covered: u64, start: u64) -> Loss {
    let end_of = |record: &Record| match record {
        Record::Events {
            first_offset,
            format,
            body,
            ..
        } => Some(first_offset + events_in(*format, body)),
        _ => None,
    };
    let kept_end = kept
        .iter()
        .filter_map(|(_, r)| end_of(r))
        .fold(start, u64::max);
    let (mut last_end, mut pending, mut keys) = (kept_end, 0_u64, Vec::new());
    for item in beyond {
        match item {
            Beyond::Record(lsn, record) if *lsn > covered => {
                if let Some(end) = end_of(record) {
                    last_end = last_end.max(end);
                    pending = 0;
                }
                if let Record::Events {
                    idempotency_key: Some(key),
                    ..
                } = record
                {
                    keys.push(key.clone());
                }
            }
            Beyond::Record(..) => {}
            Beyond::Unreadable { bytes } => pending = pending.saturating_add(*bytes),
            Beyond::Missing { lsns } => {
                pending = pending.saturating_add(lsns.saturating_mul(MAX_PAYLOAD as u64))
            }
        }
    }
    let events = last_end - kept_end;
    Loss {
        events,
        uncounted_at_most: pending,
        offsets: (events > 0).then(|| (kept_end, last_end - 1)),
        keys,
        next_offset: last_end.saturating_add(pending),
    }
}

/// Events in a logged body: NDJSON's non-blank lines, a JSON array's elements, or one.
fn events_in(format: u8, body: &[u8]) -> u64 {
    if format == 1 {
        let blank = |line: &[u8]| line.iter().all(u8::is_ascii_whitespace);
        return body.split(|b| *b == b'\n').filter(|l| !blank(l)).count() as u64;
    }
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(body)
            .map_or(1, |events| events.len() as u64),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first_offset: u64, n: usize, key: Option<&str>) -> Record {
        let body = format!("[{}]", vec!["{}"; n].join(","));
        Record::Events {
            arrival: 0,
            format: 0,
            idempotency_key: key.map(str::to_owned),
            first_offset,
            body: body.into(),
        }
    }

    #[test]
    fn events_are_counted_from_bodies_and_pinned_by_later_offsets() {
        let kept = [(1, batch(1, 3, None))];
        let beyond = [
            Beyond::Unreadable { bytes: 80 },
            Beyond::Record(3, batch(6, 2, Some("k3"))),
            Beyond::Record(4, Record::Tick { now: 1 }),
        ];
        let l = loss(&kept, &beyond, 0, 1);
        assert_eq!(l.events, 4, "offsets 4 and 5 unreadable, 6 and 7 read");
        assert_eq!(l.offsets, Some((4, 7)));
        assert_eq!(l.uncounted_at_most, 0);
        assert_eq!(l.keys, ["k3"]);
        assert_eq!(l.next_offset, 8);
    }

    #[test]
    fn unreadable_records_after_the_last_batch_raise_the_floor_by_their_bytes() {
        let beyond = [
            Beyond::Record(5, batch(10, 1, None)),
            Beyond::Unreadable { bytes: 300 },
        ];
        let l = loss(&[], &beyond, 4, 10);
        assert_eq!((l.events, l.uncounted_at_most), (1, 300));
        assert_eq!(l.next_offset, 311);
    }

    #[test]
    fn records_the_checkpoint_covers_are_not_lost() {
        let beyond = [Beyond::Record(2, batch(1, 5, Some("old")))];
        let l = loss(&[], &beyond, 2, 6);
        assert_eq!((l.events, l.offsets, l.next_offset), (0, None, 6));
        assert!(l.keys.is_empty());
    }

    #[test]
    fn ndjson_bodies_count_non_blank_lines() {
        assert_eq!(events_in(1, b"{}\n\n {}\n"), 2);
        assert_eq!(events_in(0, b" {\"a\": [1, 2]}"), 1);
        assert_eq!(events_in(0, b"[{}, {\"x\": [1]}]"), 2);
    }
}
