//! PostgreSQL: a checkpoint's state rows written with `COPY … FROM STDIN (FORMAT binary)`
//! instead of multi-row inserts: no statement to parse and plan per 2,000 rows, no text
//! conversion of the values. The binary format (PostgreSQL's "COPY" page): a signature, then
//! per row its field count and each field as a big-endian length (-1: null) and its bytes in
//! the column type's binary form (int4, int8: big-endian; text: UTF-8; bytea: raw).

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

#[cfg(test)]
mod tests {
    use super::*;

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
