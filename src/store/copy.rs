//! PostgreSQL: a checkpoint's state rows written with `COPY … FROM STDIN (FORMAT binary)`
//! instead of multi-row inserts (no statement to parse and plan per 2,000 rows, no text
//! conversion of the values), and read with `COPY … TO STDOUT (FORMAT binary)` instead of a
//! query (no row object and typed decode per row and column). The binary format (PostgreSQL's "COPY" page): a signature, then
//! per row its field count and each field as a big-endian length (-1: null) and its bytes in
//! the column type's binary form (int4, int8: big-endian; text: UTF-8; bytea: raw).

use super::contents::LoadedRow;
use crate::state::StateRow;

/// The statement the rows of [`state_rows`] go to.
pub(super) const COPY_STATE: &str = "copy state_rows \
     (pipeline, operator, key, checkpoint, key_group, last_time, value) \
     from stdin (format binary)";

/// Rows per COPY data message (a few MB).
pub(super) const ROWS_PER_MESSAGE: usize = 20_000;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// The header of a binary COPY: signature, flags, header extension length.
pub(super) fn header() -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    out
}

/// The end of a binary COPY.
pub(super) fn trailer() -> [u8; 2] {
    (-1i16).to_be_bytes()
}

/// `rows` of checkpoint `id` of `pipeline` as binary COPY tuples, appended to `out`.
pub(super) fn state_rows(out: &mut Vec<u8>, pipeline: &str, id: i64, rows: &[StateRow]) {
    for row in rows {
        out.extend_from_slice(&7i16.to_be_bytes());
        field(out, Some(pipeline.as_bytes()));
        field(out, Some(&i32::from(row.operator).to_be_bytes()));
        field(out, Some(row.key.as_str().as_bytes()));
        field(out, Some(&id.to_be_bytes()));
        field(out, Some(&i32::from(row.key_group).to_be_bytes()));
        field(out, Some(&row.last_time.to_be_bytes()));
        field(out, row.value.as_deref());
    }
}

fn field(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            let len = i32::try_from(bytes.len()).expect("a field under 2 GiB");
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(bytes);
        }
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

/// The `COPY` that reads what [`super::contents::LOAD_STATE`] selects. COPY takes no
/// parameters: the name goes in as a literal (pipeline names are `[a-z0-9_-]`; quotes are
/// doubled all the same).
pub(super) fn copy_state_out(pipeline: &str, id: i64) -> String {
    let name = pipeline.replace('\'', "''");
    format!(
        "copy (select operator, key, key_group, last_time, value, checkpoint from state_rows \
         where pipeline = '{name}' and checkpoint <= {id} order by checkpoint desc) \
         to stdout (format binary)"
    )
}

/// Reads the binary COPY of [`copy_state_out`] as it arrives, in chunks that split rows
/// anywhere.
#[derive(Default)]
pub(super) struct RowReader {
    pending: Vec<u8>,
    header_read: bool,
    ended: bool,
}

impl RowReader {
    /// Takes the next chunk; each complete row goes to `row`.
    pub(super) fn feed(
        &mut self,
        chunk: &[u8],
        mut row: impl FnMut(LoadedRow),
    ) -> Result<(), String> {
        self.pending.extend_from_slice(chunk);
        let mut at = 0;
        if !self.header_read {
            let Some(end) = header_end(&self.pending)? else {
                return Ok(());
            };
            at = end;
            self.header_read = true;
        }
        while !self.ended {
            match parse_row(&self.pending[at..])? {
                Parsed::Row(loaded, used) => {
                    row(loaded);
                    at += used;
                }
                Parsed::End(used) => {
                    self.ended = true;
                    at += used;
                }
                Parsed::Incomplete => break,
            }
        }
        self.pending.drain(..at);
        Ok(())
    }

    /// After the last chunk: the COPY ended as it should.
    pub(super) fn finish(self) -> Result<(), String> {
        if self.ended && self.pending.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the state COPY ended early or with {} stray bytes",
                self.pending.len()
            ))
        }
    }
}

/// Where the header ends, once it is all there.
fn header_end(data: &[u8]) -> Result<Option<usize>, String> {
    let fixed = SIGNATURE.len() + 8;
    if data.len() < fixed {
        return Ok(None);
    }
    if &data[..SIGNATURE.len()] != SIGNATURE {
        return Err("the state COPY does not start with the binary COPY signature".into());
    }
    let extension = be_i32(&data[SIGNATURE.len() + 4..]) as usize;
    Ok((data.len() >= fixed + extension).then_some(fixed + extension))
}

enum Parsed {
    Row(LoadedRow, usize),
    End(usize),
    Incomplete,
}

/// One row (operator int4, key text, key_group int4, last_time int8, value bytea or null,
/// checkpoint int8) from the start of `data`, and the bytes it took.
fn parse_row(data: &[u8]) -> Result<Parsed, String> {
    if data.len() < 2 {
        return Ok(Parsed::Incomplete);
    }
    match i16::from_be_bytes([data[0], data[1]]) {
        -1 => return Ok(Parsed::End(2)),
        6 => {}
        n => return Err(format!("a state COPY row has {n} fields, not 6")),
    }
    let mut at = 2;
    let mut fields: [Option<&[u8]>; 6] = [None; 6];
    for field in &mut fields {
        if data.len() < at + 4 {
            return Ok(Parsed::Incomplete);
        }
        let len = be_i32(&data[at..]);
        at += 4;
        if len < 0 {
            continue;
        }
        let len = len as usize;
        if data.len() < at + len {
            return Ok(Parsed::Incomplete);
        }
        *field = Some(&data[at..at + len]);
        at += len;
    }
    let [operator, key, key_group, last_time, value, checkpoint] = fields;
    let int = |f: Option<&[u8]>, what| match f {
        Some(b) if b.len() == 4 => Ok(i64::from(be_i32(b))),
        Some(b) if b.len() == 8 => Ok(i64::from_be_bytes(b.try_into().expect("8 bytes"))),
        _ => Err(format!("a state COPY row has a bad {what}")),
    };
    let key = key.ok_or("a state COPY row has no key")?;
    let key = std::str::from_utf8(key).map_err(|_| "a state COPY key is not UTF-8")?;
    let row = (
        int(operator, "operator")? as i32,
        key.to_owned(),
        int(key_group, "key group")? as i32,
        int(last_time, "last time")?,
        value.map(<[u8]>::to_vec),
        int(checkpoint, "checkpoint")?,
    );
    Ok(Parsed::Row(row, at))
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary COPY of rows as PostgreSQL sends them for [`copy_state_out`].
    fn copy_of(rows: &[LoadedRow]) -> Vec<u8> {
        let mut out = header();
        for (operator, key, key_group, last_time, value, checkpoint) in rows {
            out.extend_from_slice(&6i16.to_be_bytes());
            field(&mut out, Some(&operator.to_be_bytes()));
            field(&mut out, Some(key.as_bytes()));
            field(&mut out, Some(&key_group.to_be_bytes()));
            field(&mut out, Some(&last_time.to_be_bytes()));
            field(&mut out, value.as_deref());
            field(&mut out, Some(&checkpoint.to_be_bytes()));
        }
        out.extend_from_slice(&trailer());
        out
    }

    fn read_in_chunks(data: &[u8], size: usize) -> Result<Vec<LoadedRow>, String> {
        let mut reader = RowReader::default();
        let mut rows = Vec::new();
        for chunk in data.chunks(size) {
            reader.feed(chunk, |row| rows.push(row))?;
        }
        reader.finish()?;
        Ok(rows)
    }

    #[test]
    fn rows_are_read_back_whatever_the_chunks_split() {
        let rows: Vec<LoadedRow> = (0..50)
            .map(|i| {
                let value = (i % 7 != 0).then(|| vec![i as u8; i]);
                (
                    i as i32 % 3,
                    format!("key-{i}-é"),
                    i as i32,
                    -(i as i64),
                    value,
                    9 - i as i64 / 10,
                )
            })
            .collect();
        let data = copy_of(&rows);
        for size in [1, 2, 3, 7, 64, 1000, data.len()] {
            assert_eq!(
                read_in_chunks(&data, size).unwrap(),
                rows,
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn a_cut_or_foreign_copy_is_an_error() {
        let data = copy_of(&[(0, "k".into(), 1, 2, None, 3)]);
        let cut = read_in_chunks(&data[..data.len() - 1], 5).unwrap_err();
        assert!(cut.contains("ended early"), "{cut}");
        let foreign = read_in_chunks(b"not a binary copy at all", 4).unwrap_err();
        assert!(foreign.contains("signature"), "{foreign}");
        let mut five = header();
        five.extend_from_slice(&5i16.to_be_bytes());
        let fields = read_in_chunks(&five, 100).unwrap_err();
        assert!(fields.contains("5 fields"), "{fields}");
    }

    #[test]
    fn the_name_goes_in_as_a_quoted_literal() {
        assert!(copy_state_out("it's", 4).contains("pipeline = 'it''s' and checkpoint <= 4 "));
    }

    #[test]
    fn a_row_is_its_field_count_then_each_field_length_prefixed() {
        let row = StateRow {
            operator: 2,
            key: "ab".into(),
            key_group: 300,
            last_time: 5,
            value: None,
        };
        let mut out = header();
        state_rows(&mut out, "p", 9, &[row]);
        out.extend_from_slice(&trailer());
        let mut expected = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        expected.extend_from_slice(&[0, 7]);
        expected.extend_from_slice(&[0, 0, 0, 1, b'p']);
        expected.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 2]);
        expected.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']);
        expected.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 9]);
        expected.extend_from_slice(&[0, 0, 0, 4, 0, 0, 1, 44]);
        expected.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 5]);
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(out, expected);
    }
}
