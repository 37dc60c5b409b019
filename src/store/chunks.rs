//! A checkpoint's state as stored: per key group, the rows that checkpoint wrote, encoded
//! together in one value (a **chunk**, table `state_chunks`), so that a checkpoint of a
//! million keys writes and a load reads a few hundred values instead of a row per key. Per
//! row, the database did more work than eddy: a binary `COPY` of 2.7 M rows took 24–33 s to
//! write (mostly the primary-key index) and 2.5 CPU-s to read back, plus 1.9 CPU-s to take
//! apart (one message per row).
//!
//! A chunk is the CRC-32C (little-endian) of what follows, then per row, little-endian:
//! operator `u16`, last time `i64`, key length `u32` and the key's UTF-8, value length `u32`
//! (`u32::MAX`: the key has no state any more) and the value. Its key group and row count are
//! columns beside it; a load checks both, and the CRC, before it uses a row.
//!
//! Versions as before: the state at checkpoint C is, per (operator, key), the newest version
//! in a chunk of a checkpoint at or before C. Compaction merges a key group's chunks that no
//! retained checkpoint tells apart (see [`to_compact`]).

use crate::state::StateRow;

/// A chunk is cut into parts past this many bytes (a few MB: one value in memory at a time).
const PART_BYTES: usize = 4 << 20;

/// Value length of a deleted key.
const DELETED: u32 = u32::MAX;

/// One chunk (or part of one) to store: its key group, part number, row count and bytes.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Chunk {
    pub key_group: u16,
    pub part: i32,
    pub rows: i32,
    pub data: Vec<u8>,
}

/// `rows` as chunks, one per key group (cut into parts of [`PART_BYTES`]), in key-group order.
pub(super) fn encode(rows: &[StateRow]) -> Vec<Chunk> {
    let mut order: Vec<&StateRow> = rows.iter().collect();
    order.sort_by_key(|r| r.key_group);
    let mut chunks: Vec<Chunk> = Vec::new();
    for row in order {
        let start_new = match chunks.last() {
            Some(last) => last.key_group != row.key_group || last.data.len() >= PART_BYTES,
            None => true,
        };
        if start_new {
            let part = match chunks.last() {
                Some(last) if last.key_group == row.key_group => last.part + 1,
                _ => 0,
            };
            chunks.push(Chunk {
                key_group: row.key_group,
                part,
                rows: 0,
                data: vec![0; 4],
            });
        }
        let chunk = chunks.last_mut().expect("pushed above");
        put_row(&mut chunk.data, row);
        chunk.rows += 1;
    }
    for chunk in &mut chunks {
        let crc = crc32c::crc32c(&chunk.data[4..]);
        chunk.data[..4].copy_from_slice(&crc.to_le_bytes());
    }
    chunks
}

/// Chunks per insert statement at most (6 parameters each: far under both backends' limits).
const CHUNKS_PER_STATEMENT: usize = 256;

/// `chunks` in runs for one insert statement each: at most [`CHUNKS_PER_STATEMENT`], and at
/// most [`PART_BYTES`] of data unless one chunk alone is more.
pub(super) fn statements(chunks: &[Chunk]) -> Vec<&[Chunk]> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, chunk) in chunks.iter().enumerate() {
        let full = i - start == CHUNKS_PER_STATEMENT || bytes + chunk.data.len() > PART_BYTES;
        if i > start && full {
            runs.push(&chunks[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += chunk.data.len();
    }
    if start < chunks.len() {
        runs.push(&chunks[start..]);
    }
    runs
}

fn put_row(out: &mut Vec<u8>, row: &StateRow) {
    out.extend_from_slice(&row.operator.to_le_bytes());
    out.extend_from_slice(&row.last_time.to_le_bytes());
    let key = row.key.as_bytes();
    out.extend_from_slice(&len(key.len()).to_le_bytes());
    out.extend_from_slice(key);
    match &row.value {
        Some(value) => {
            out.extend_from_slice(&len(value.len()).to_le_bytes());
            out.extend_from_slice(value);
        }
        None => out.extend_from_slice(&DELETED.to_le_bytes()),
    }
}

fn len(n: usize) -> u32 {
    u32::try_from(n)
        .ok()
        .filter(|&n| n != DELETED)
        .expect("a key or value under 4 GiB")
}

/// The rows of a stored chunk of `key_group` said to hold `rows` rows, each to `row`; what is
/// wrong with it otherwise (nothing is sent before the whole chunk is checked).
pub(super) fn decode(
    key_group: u16,
    rows: i32,
    data: &[u8],
    mut row: impl FnMut(StateRow),
) -> Result<(), String> {
    let (crc, body) = data
        .split_first_chunk::<4>()
        .ok_or_else(|| format!("{} bytes is too short for a chunk", data.len()))?;
    let stored = u32::from_le_bytes(*crc);
    let actual = crc32c::crc32c(body);
    if stored != actual {
        return Err(format!(
            "its CRC-32C is {actual:#010x}, {stored:#010x} was stored"
        ));
    }
    let mut decoded = Vec::with_capacity(usize::try_from(rows).unwrap_or(0));
    let mut at = Reader { data: body, at: 0 };
    while at.at < body.len() {
        decoded.push(at.row(key_group)?);
    }
    if decoded.len() != usize::try_from(rows).unwrap_or(usize::MAX) {
        return Err(format!(
            "it holds {} rows, {rows} were stored",
            decoded.len()
        ));
    }
    decoded.into_iter().for_each(&mut row);
    Ok(())
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.data.len());
        let end = end.ok_or_else(|| format!("a row is cut off at byte {}", self.at + 4))?;
        let bytes = &self.data[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn row(&mut self, key_group: u16) -> Result<StateRow, String> {
        let operator = u16::from_le_bytes(self.array()?);
        let last_time = i64::from_le_bytes(self.array()?);
        let key_len = u32::from_le_bytes(self.array()?) as usize;
        let key = std::str::from_utf8(self.take(key_len)?)
            .map_err(|_| format!("a key before byte {} is not UTF-8", self.at + 4))?;
        let value = match u32::from_le_bytes(self.array()?) {
            DELETED => None,
            n => Some(self.take(n as usize)?.to_vec()),
        };
        Ok(StateRow {
            operator,
            key: key.into(),
            key_group,
            last_time,
            value,
        })
    }
}

/// Chunks stored per key group: more than this many checkpoints' chunks of one key group at
/// or before the oldest retained checkpoint (plus the key group modulo this, so that key
/// groups written alike are not all rewritten by the same prune) are merged whatever their
/// sizes.
const MAX_VERSIONS: usize = 32;

fn max_versions(key_group: i32) -> usize {
    MAX_VERSIONS + key_group.rem_euclid(MAX_VERSIONS as i32) as usize
}

/// The key groups worth compacting, from (key group, checkpoint, rows) of the chunks at or
/// before the oldest retained checkpoint (one entry per key group and checkpoint, oldest
/// checkpoint first within a key group): those whose newer chunks together hold at least as
/// many rows as the oldest (so that what is stored stays within about twice what is live and
/// the work of merging follows the rows written, as in a size-tiered LSM tree), or that have
/// more than [`max_versions`] checkpoints' chunks (so a load reads few values per key group).
pub(super) fn to_compact(chunks: &[(i32, i64, i64)]) -> Vec<i32> {
    let mut groups = Vec::new();
    for same in chunks.chunk_by(|a, b| a.0 == b.0) {
        let [(key_group, _, base), newer @ ..] = same else {
            continue;
        };
        let newer_rows: i64 = newer.iter().map(|c| c.2).sum();
        if !newer.is_empty() && (newer_rows >= *base || same.len() > max_versions(*key_group)) {
            groups.push(*key_group);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key_group: u16, key: &str, value: Option<&[u8]>) -> StateRow {
        StateRow {
            operator: 3,
            key: key.into(),
            key_group,
            last_time: -7,
            value: value.map(<[u8]>::to_vec),
        }
    }

    fn decoded(chunk: &Chunk) -> Result<Vec<StateRow>, String> {
        let mut rows = Vec::new();
        decode(chunk.key_group, chunk.rows, &chunk.data, |r| rows.push(r))?;
        Ok(rows)
    }

    #[test]
    fn rows_come_back_per_key_group_deletions_and_empty_values_included() {
        let rows = [
            row(9, "b", Some(b"{\"n\":1}")),
            row(2, "a", None),
            row(9, "é", Some(b"")),
            row(2, "c", Some(b"[]")),
        ];
        let chunks = encode(&rows);
        let groups: Vec<_> = chunks
            .iter()
            .map(|c| (c.key_group, c.part, c.rows))
            .collect();
        assert_eq!(groups, [(2, 0, 2), (9, 0, 2)]);
        assert_eq!(
            decoded(&chunks[0]).unwrap(),
            [rows[1].clone(), rows[3].clone()]
        );
        assert_eq!(
            decoded(&chunks[1]).unwrap(),
            [rows[0].clone(), rows[2].clone()]
        );
        assert!(encode(&[]).is_empty());
    }

    #[test]
    fn a_big_key_group_is_cut_into_parts() {
        let value = vec![b'x'; 1 << 20];
        let rows: Vec<_> = (0..10)
            .map(|i| row(5, &format!("k{i}"), Some(&value)))
            .collect();
        let chunks = encode(&rows);
        let parts: Vec<_> = chunks.iter().map(|c| (c.part, c.rows)).collect();
        assert_eq!(parts, [(0, 4), (1, 4), (2, 2)]);
        let back: Vec<_> = chunks.iter().flat_map(|c| decoded(c).unwrap()).collect();
        assert_eq!(back, rows);
    }

    #[test]
    fn chunks_go_many_to_a_statement_within_a_count_and_a_size() {
        let small: Vec<_> = (0..600)
            .map(|i| row(i as u16 % 300, "k", Some(b"v")))
            .collect();
        let chunks = encode(&small);
        assert_eq!(chunks.len(), 300);
        let runs: Vec<_> = statements(&chunks).iter().map(|r| r.len()).collect();
        assert_eq!(runs, [CHUNKS_PER_STATEMENT, 300 - CHUNKS_PER_STATEMENT]);
        let value = vec![b'x'; PART_BYTES / 3];
        let big: Vec<_> = (0..7).map(|i| row(i, "k", Some(&value))).collect();
        let chunks = encode(&big);
        let runs: Vec<_> = statements(&chunks).iter().map(|r| r.len()).collect();
        assert_eq!(runs, [2, 2, 2, 1], "under PART_BYTES each");
        let huge = encode(&[
            row(0, "k", Some(&vec![0; PART_BYTES * 2])),
            row(1, "k", None),
        ]);
        let runs: Vec<_> = statements(&huge).iter().map(|r| r.len()).collect();
        assert_eq!(runs, [1, 1], "a chunk over the size goes alone");
        assert!(statements(&[]).is_empty());
    }

    #[test]
    fn every_flipped_byte_and_every_cut_is_found() {
        let chunk = &encode(&[row(1, "key", Some(b"value")), row(1, "k2", None)])[0];
        for at in 0..chunk.data.len() {
            let mut data = chunk.data.clone();
            data[at] ^= 0x10;
            let bad = Chunk { data, ..*chunk };
            assert!(decoded(&bad).is_err(), "flipped byte {at}");
        }
        for len in 0..chunk.data.len() {
            let bad = Chunk {
                data: chunk.data[..len].to_vec(),
                ..*chunk
            };
            assert!(decoded(&bad).is_err(), "cut at {len}");
        }
        let miscounted = Chunk {
            rows: 3,
            data: chunk.data.clone(),
            ..*chunk
        };
        let err = decoded(&miscounted).unwrap_err();
        assert_eq!(err, "it holds 2 rows, 3 were stored");
    }

    /// `chunk` with its body replaced by `body`, under a CRC that matches.
    fn resealed(chunk: &Chunk, body: &[u8]) -> Chunk {
        let mut data = crc32c::crc32c(body).to_le_bytes().to_vec();
        data.extend_from_slice(body);
        Chunk { data, ..*chunk }
    }

    #[test]
    fn a_chunk_whose_crc_matches_but_whose_rows_do_not_parse_is_refused() {
        let chunk = &encode(&[row(1, "key", Some(b"value"))])[0];
        let body = &chunk.data[4..];
        let cut = resealed(chunk, &body[..body.len() - 2]);
        assert_eq!(decoded(&cut).unwrap_err(), "a row is cut off at byte 25");
        let mut bad_key = body.to_vec();
        bad_key[14] = 0xff;
        let err = decoded(&resealed(chunk, &bad_key)).unwrap_err();
        assert_eq!(err, "a key before byte 21 is not UTF-8");
        assert_eq!(
            decoded(&Chunk {
                data: vec![1, 2],
                ..*chunk
            })
            .unwrap_err(),
            "2 bytes is too short for a chunk"
        );
    }

    #[test]
    fn a_key_group_is_compacted_once_its_newer_chunks_hold_as_many_rows_as_its_oldest() {
        let chunks = [
            (1, 1, 100),
            (1, 2, 60),
            (1, 3, 39),
            (2, 1, 100),
            (2, 2, 60),
            (2, 4, 40),
            (3, 4, 5),
        ];
        assert_eq!(to_compact(&chunks), [2]);
        let many = |key_group: i32, n: usize| -> Vec<(i32, i64, i64)> {
            let rows = |c| if c == 0 { 1_000 } else { 1 };
            (0..n as i64).map(|c| (key_group, c, rows(c))).collect()
        };
        assert_eq!(
            to_compact(&many(0, MAX_VERSIONS + 1)),
            [0],
            "too many versions"
        );
        assert!(to_compact(&many(0, MAX_VERSIONS)).is_empty());
        assert!(
            to_compact(&many(7, MAX_VERSIONS + 7)).is_empty(),
            "key group 7 waits 7 checkpoints longer"
        );
        assert_eq!(to_compact(&many(7, MAX_VERSIONS + 8)), [7]);
        assert_eq!(to_compact(&many(32, MAX_VERSIONS + 1)), [32]);
    }
}
