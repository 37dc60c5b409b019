//! Reading a log back and judging what is wrong with it, without touching the disk: the one
//! place that tells a torn tail (cut at start) from corruption of acknowledged records (the
//! pipeline fails; only `eddy wal repair` or a restore cuts it).
//!
//! The rule (written down in docs/architecture.md, "Durability"):
//! - Frames are found again after a bad stretch by trying every later byte position for a frame
//!   whose length fits, whose CRC-32C matches and whose payload decodes exactly. A request body
//!   is JSON text, which never holds a NUL byte, while every frame's length field does (lengths
//!   are below 2^26): so a frame cannot hide inside a body, and one found is one eddy wrote.
//! - A torn tail is a bad stretch at the end of the NEWEST segment with no frame after it, that
//!   looks like an interrupted write: its frame runs past the end of the file (cut short), its
//!   length is not one eddy writes, or it is zero-filled (the whole frame, or an aligned
//!   512-byte sector of it: unwritten space after a power loss, as etcd's WAL judges it).
//! - Everything else is corruption: a bad stretch with a valid frame after it, a bad stretch in
//!   an older segment (the writer starts a segment only after the previous one is durable), a
//!   whole frame that fails its check at the end, and LSNs that do not continue.
//! - Damage that hides only records the last checkpoint covers (LSN <= `covered`) is not
//!   needed by recovery and is passed over with a warning: those records are never replayed,
//!   and their segment goes at the next checkpoint like any covered one.
//!
//! Over 400 lines for a reason: the judge is about 300 lines; the rest are its unit tests, one
//! for each kind of damage.

use super::record::{DecodeError, HEADER, MAX_PAYLOAD, Record};

/// The unit a disk writes whole: a zero-filled one inside a frame is unwritten space.
const SECTOR: usize = 512;

/// Where a log stops being whole, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Index of the segment (in the order given).
    pub segment: usize,
    /// Byte position in that segment where the damage starts (where a repair cuts).
    pub position: usize,
    pub reason: String,
}

/// What a scan concludes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every record checks and the LSNs continue.
    Whole,
    /// The newest segment ends in an interrupted write at `position`: never acknowledged.
    Torn { segment: usize, position: usize },
    /// Acknowledged records are damaged or missing.
    Corrupt(Damage),
}

/// What lies beyond a corrupt point, in log order: what a repair would cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Beyond {
    /// A record that still reads.
    Record(u64, Record),
    /// Bytes no frame could be read from.
    Unreadable { bytes: u64 },
    /// LSNs of which no byte is left (a missing segment, a cut-off start).
    Missing { lsns: u64 },
}

/// A log read back.
#[derive(Debug)]
pub struct Scan {
    /// The good records before the verdict's point (all of them when whole), in LSN order.
    pub records: Vec<(u64, Record)>,
    pub verdict: Verdict,
    /// Records and stretches after a corrupt point (empty unless corrupt).
    pub beyond: Vec<Beyond>,
    /// Damage passed over because it hides only covered records.
    pub passed_over: Vec<Damage>,
}

/// A stretch of one segment: a frame that reads, or bytes from `pos` to `end` that do not.
enum Piece {
    Good {
        pos: usize,
        lsn: u64,
        record: Record,
    },
    Bad {
        pos: usize,
        end: usize,
        error: DecodeError,
    },
}

/// Splits a segment into frames and the bad stretches between them.
fn pieces(data: &[u8]) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        match Record::decode(&data[pos..]) {
            Ok((lsn, record, used)) => {
                out.push(Piece::Good { pos, lsn, record });
                pos += used;
            }
            Err(error) => {
                let end = (pos + 1..data.len())
                    .find(|&q| Record::decode(&data[q..]).is_ok())
                    .unwrap_or(data.len());
                out.push(Piece::Bad { pos, end, error });
                pos = end;
            }
        }
    }
    out
}

/// Whether the bytes from `pos` to the end of a segment look like an interrupted write.
fn torn_shape(data: &[u8], pos: usize) -> bool {
    let rest = &data[pos..];
    let Some(header) = rest.get(..HEADER) else {
        return true;
    };
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    if !(9..=MAX_PAYLOAD).contains(&len) || HEADER + len > rest.len() {
        return true;
    }
    let frame = pos..pos + HEADER + len;
    let first_sector = frame.start.div_ceil(SECTOR) * SECTOR;
    let zero_sector = (first_sector..frame.end.saturating_sub(SECTOR - 1))
        .step_by(SECTOR)
        .any(|s| data[s..s + SECTOR].iter().all(|b| *b == 0));
    zero_sector || data[frame].iter().all(|b| *b == 0)
}

/// Judges a log: `segments` are (first LSN from the file name, contents), by first LSN;
/// `covered` is the LSN the last completed checkpoint covers (0 without one).
pub fn scan(segments: &[(u64, &[u8])], covered: u64) -> Scan {
    let need = covered + 1;
    let mut walk = Walk {
        scan: Scan {
            records: Vec::new(),
            verdict: Verdict::Whole,
            beyond: Vec::new(),
            passed_over: Vec::new(),
        },
        need,
        expect: None,
    };
    for (i, (first, data)) in segments.iter().enumerate() {
        let newest = i + 1 == segments.len();
        let next_first = segments.get(i + 1).map(|(f, _)| *f);
        walk.segment(i, *first, data, newest, next_first);
        if matches!(walk.scan.verdict, Verdict::Torn { .. }) {
            break;
        }
    }
    walk.scan
}

struct Walk {
    scan: Scan,
    need: u64,
    /// The LSN the next record must have (`None` before the first segment).
    expect: Option<u64>,
}

impl Walk {
    fn broken(&self) -> bool {
        matches!(self.scan.verdict, Verdict::Corrupt(_))
    }

    /// Records damage at (segment, position) hiding LSNs from `from` up to `to` (exclusive;
    /// `None`: unknown, so needed).
    fn damage(&mut self, at: (usize, usize), to: Option<u64>, reason: String, lost: Beyond) {
        let damage = Damage {
            segment: at.0,
            position: at.1,
            reason,
        };
        if self.broken() {
            self.scan.beyond.push(lost);
        } else if to.is_some_and(|to| to <= self.need) {
            self.scan.passed_over.push(damage);
        } else {
            self.scan.verdict = Verdict::Corrupt(damage);
            self.scan.beyond.push(lost);
        }
    }

    fn segment(&mut self, i: usize, first: u64, data: &[u8], newest: bool, next: Option<u64>) {
        match self.expect {
            None if first > self.need => self.damage(
                (i, 0),
                Some(first),
                format!(
                    "the log starts at LSN {first}, but the last checkpoint needs every record \
                     from LSN {}: a segment is missing",
                    self.need
                ),
                Beyond::Missing {
                    lsns: first - self.need,
                },
            ),
            Some(e) if first > e => self.damage(
                (i, 0),
                Some(first),
                format!(
                    "records {e} to {} are missing: the segment before this one ends at LSN {}",
                    first - 1,
                    e - 1
                ),
                Beyond::Missing { lsns: first - e },
            ),
            Some(e) if first < e => self.damage(
                (i, 0),
                None,
                format!(
                    "the segment is named LSN {first}, but the one before it reached LSN {}",
                    e - 1
                ),
                Beyond::Missing { lsns: 0 },
            ),
            _ => {}
        }
        let mut expect = first;
        let pieces = pieces(data);
        for (k, piece) in pieces.iter().enumerate() {
            match piece {
                Piece::Good { pos, lsn, record } => {
                    let (pos, lsn) = (*pos, *lsn);
                    if lsn > expect {
                        let reason = if pos == 0 {
                            format!(
                                "the segment is named LSN {first} but starts at LSN {lsn}: \
                                 records {first} to {} are missing",
                                lsn - 1
                            )
                        } else {
                            format!(
                                "records {expect} to {} are missing before the record at byte {pos}",
                                lsn - 1
                            )
                        };
                        let lost = Beyond::Missing { lsns: lsn - expect };
                        self.damage((i, pos), Some(lsn), reason, lost);
                    } else if lsn < expect {
                        let reason = format!(
                            "the record at byte {pos} has LSN {lsn}, out of sequence (expected {expect})"
                        );
                        self.damage((i, pos), None, reason, Beyond::Missing { lsns: 0 });
                    }
                    if lsn >= expect {
                        expect = lsn + 1;
                    }
                    if self.broken() {
                        self.scan.beyond.push(Beyond::Record(lsn, record.clone()));
                    } else {
                        self.scan.records.push((lsn, record.clone()));
                    }
                }
                Piece::Bad { pos, end, error } => {
                    let (pos, end) = (*pos, *end);
                    let lost = Beyond::Unreadable {
                        bytes: (end - pos) as u64,
                    };
                    if end < data.len() {
                        let Some(Piece::Good { lsn, .. }) = pieces.get(k + 1) else {
                            unreachable!("a bad stretch ends where a frame reads")
                        };
                        let reason =
                            format!("{error}; a valid record (LSN {lsn}) follows at byte {end}");
                        self.damage((i, pos), Some(*lsn), reason, lost);
                        // The stretch stands for the LSNs up to the record after it.
                        expect = expect.max(*lsn);
                    } else if !newest {
                        let reason = format!(
                            "{error}, in a segment that is not the newest (only the newest can \
                             end in a torn write)"
                        );
                        self.damage((i, pos), next, reason, lost);
                        // The next segment's name says where the log resumes.
                        if let Some(n) = next {
                            expect = expect.max(n);
                        }
                    } else if torn_shape(data, pos) {
                        if self.broken() {
                            self.scan.beyond.push(lost);
                        } else {
                            self.scan.verdict = Verdict::Torn {
                                segment: i,
                                position: pos,
                            };
                        }
                        return;
                    } else {
                        let reason = format!(
                            "{error}, in a whole record at the end of the newest segment (a torn \
                             write leaves a record cut short or zero-filled)"
                        );
                        self.damage((i, pos), None, reason, lost);
                    }
                }
            }
        }
        self.expect = Some(self.expect.map_or(expect, |e| e.max(expect)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(lsn: u64) -> Vec<u8> {
        Record::Tick { now: lsn as i64 }.encode(lsn)
    }

    /// A segment holding records `lsns`.
    fn segment(lsns: std::ops::RangeInclusive<u64>) -> Vec<u8> {
        lsns.flat_map(tick).collect()
    }

    fn judge(segments: &[(u64, Vec<u8>)], covered: u64) -> Scan {
        let refs: Vec<(u64, &[u8])> = segments.iter().map(|(f, d)| (*f, &d[..])).collect();
        scan(&refs, covered)
    }

    fn lsns(scan: &Scan) -> Vec<u64> {
        scan.records.iter().map(|(l, _)| *l).collect()
    }

    fn corrupt(scan: &Scan) -> &Damage {
        match &scan.verdict {
            Verdict::Corrupt(d) => d,
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn a_whole_log_reads_back_whole() {
        let s = judge(&[(1, segment(1..=3)), (4, segment(4..=5))], 0);
        assert_eq!(s.verdict, Verdict::Whole);
        assert_eq!(lsns(&s), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_last_record_cut_short_is_a_torn_tail() {
        let mut data = segment(1..=3);
        let good = data.len();
        data.extend_from_slice(&tick(4)[..10]);
        let s = judge(&[(1, data)], 0);
        assert_eq!(
            s.verdict,
            Verdict::Torn {
                segment: 0,
                position: good
            }
        );
        assert_eq!(lsns(&s), [1, 2, 3]);
    }

    #[test]
    fn zeros_after_the_last_record_are_a_torn_tail() {
        let mut data = segment(1..=2);
        data.extend_from_slice(&[0; 3000]);
        assert!(matches!(
            judge(&[(1, data)], 0).verdict,
            Verdict::Torn { .. }
        ));
    }

    #[test]
    fn a_whole_last_record_with_a_zeroed_sector_is_a_torn_tail() {
        let mut data = segment(1..=2);
        let at = data.len();
        data.extend(
            Record::Watermark { time: 1 }
                .encode(3)
                .iter()
                .chain(&[7; 2000]),
        );
        // A frame of 2025 bytes claiming the rest: make its length say so, then zero a sector.
        let len = (data.len() - at - HEADER) as u32;
        data[at..at + 4].copy_from_slice(&len.to_le_bytes());
        let sector = at.div_ceil(SECTOR) * SECTOR;
        data[sector..sector + SECTOR].fill(0);
        assert!(matches!(
            judge(&[(1, data)], 0).verdict,
            Verdict::Torn { .. }
        ));
    }

    #[test]
    fn a_flipped_byte_in_a_whole_last_record_is_corruption() {
        let mut data = segment(1..=3);
        let last = data.len() - 5;
        data[last] ^= 0x01;
        let s = judge(&[(1, data)], 0);
        assert!(corrupt(&s).reason.contains("whole record"), "{s:?}");
        assert_eq!(lsns(&s), [1, 2]);
    }

    #[test]
    fn a_bad_record_followed_by_good_ones_is_corruption_at_its_start() {
        let mut data = segment(1..=5);
        let second = tick(1).len();
        data[second + 12] ^= 0xff;
        let s = judge(&[(1, data)], 0);
        let d = corrupt(&s);
        assert_eq!((d.segment, d.position), (0, second));
        assert!(d.reason.contains("LSN 3"), "{}", d.reason);
        assert_eq!(lsns(&s), [1]);
        assert_eq!(
            s.beyond.first(),
            Some(&Beyond::Unreadable {
                bytes: second as u64
            })
        );
        let after: Vec<u64> = s.beyond[1..]
            .iter()
            .map(|b| match b {
                Beyond::Record(l, _) => *l,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(after, [3, 4, 5]);
    }

    #[test]
    fn a_bad_tail_of_an_older_segment_is_corruption() {
        let mut old = segment(1..=3);
        old.extend_from_slice(&tick(4)[..10]);
        let s = judge(&[(1, old), (5, segment(5..=6))], 0);
        assert!(corrupt(&s).reason.contains("not the newest"));
        assert_eq!(s.beyond.len(), 3, "the stretch and records 5, 6");
    }

    #[test]
    fn a_missing_segment_is_corruption_at_the_next_one() {
        let s = judge(&[(1, segment(1..=3)), (7, segment(7..=9))], 0);
        let d = corrupt(&s);
        assert_eq!((d.segment, d.position), (1, 0));
        assert_eq!(s.beyond[0], Beyond::Missing { lsns: 3 });
        assert_eq!(lsns(&s), [1, 2, 3]);
    }

    #[test]
    fn a_missing_first_segment_after_the_checkpoint_is_corruption() {
        let s = judge(&[(7, segment(7..=9))], 3);
        assert!(corrupt(&s).reason.contains("needs every record from LSN 4"));
    }

    #[test]
    fn a_segment_whose_start_is_cut_off_is_corruption() {
        let data = segment(1..=6);
        let cut = tick(1).len() * 2 + 7; // mid-record
        let s = judge(&[(1, data[cut..].to_vec())], 1);
        let d = corrupt(&s);
        assert_eq!((d.segment, d.position), (0, 0));
        let on_boundary = judge(&[(1, data[tick(1).len() * 3..].to_vec())], 1);
        assert!(corrupt(&on_boundary).reason.contains("starts at LSN 4"));
    }

    #[test]
    fn damage_hiding_only_covered_records_is_passed_over() {
        let data = segment(1..=6);
        let s = judge(&[(1, data[tick(1).len() * 3..].to_vec())], 3);
        assert_eq!(s.verdict, Verdict::Whole);
        assert_eq!(s.passed_over.len(), 1);
        assert_eq!(lsns(&s), [4, 5, 6]);
        let gap = judge(&[(1, segment(1..=2)), (5, segment(5..=6))], 4);
        assert_eq!(gap.verdict, Verdict::Whole);
        assert_eq!(lsns(&gap), [1, 2, 5, 6]);
    }

    #[test]
    fn an_empty_log_and_an_empty_newest_segment_are_whole() {
        assert_eq!(judge(&[], 9).verdict, Verdict::Whole);
        let s = judge(&[(1, segment(1..=2)), (3, Vec::new())], 0);
        assert_eq!(s.verdict, Verdict::Whole);
    }
}
