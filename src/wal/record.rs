//! WAL record encoding: `len: u32 LE | crc32c(payload): u32 LE | payload`, and the payload
//! `lsn: u64 LE | kind: u8 | fields`. Decoding never trusts the bytes: every length is checked.

use bytes::Bytes;

/// Bytes of the frame header (length and CRC).
pub const HEADER: usize = 8;
/// Largest payload a record may have (a 16 MiB body plus its fields, with room).
pub const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

/// Everything that changes a pipeline's state, as logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A batch of events: the request body as received, parsed again on replay.
    Events {
        /// Arrival time (processing time of the batch), epoch ms.
        arrival: i64,
        /// 0: JSON, 1: NDJSON.
        format: u8,
        idempotency_key: Option<String>,
        /// Offset of the batch's first event (a check on replay).
        first_offset: u64,
        body: Bytes,
    },
    /// A watermark advance.
    Watermark { time: i64 },
    /// A processing-time tick.
    Tick { now: i64 },
    /// Cluster mode: a leader took the pipeline over under `epoch` (the first record it
    /// appends; it changes no state). Records of an older epoch after it are not applied.
    Epoch { epoch: i64 },
    /// Cluster mode, partitions spread: checkpoint `checkpoint`'s barrier. Every partition's
    /// owner writes its partition's state as of this point (it changes no state).
    Barrier { checkpoint: i64 },
    /// Cluster mode, partitions spread: the pipeline was restored to checkpoint `checkpoint`
    /// here; every owner starts its partition again from it (it changes no state).
    Restore { checkpoint: i64 },
}

/// Why bytes are not a record.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record is truncated")]
    Truncated,
    #[error("record length {0} is out of range")]
    BadLength(usize),
    #[error("checksum mismatch")]
    Checksum,
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("idempotency key is not UTF-8")]
    BadKey,
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
}

impl Record {
    /// The framed bytes of this record at `lsn`: built in one buffer, so a request body is
    /// copied once, from the request into the record.
    pub fn encode(&self, lsn: u64) -> Vec<u8> {
        let body_len = match self {
            Record::Events {
                idempotency_key,
                body,
                ..
            } => idempotency_key.as_ref().map_or(0, String::len) + body.len() + 32,
            _ => 16,
        };
        let mut framed = Vec::with_capacity(HEADER + 8 + 1 + body_len);
        framed.extend_from_slice(&[0; HEADER]);
        framed.extend_from_slice(&lsn.to_le_bytes());
        match self {
            Record::Events {
                arrival,
                format,
                idempotency_key,
                first_offset,
                body,
            } => {
                framed.push(1);
                framed.extend_from_slice(&arrival.to_le_bytes());
                framed.push(*format);
                framed.extend_from_slice(&first_offset.to_le_bytes());
                let key = idempotency_key.as_deref().unwrap_or("").as_bytes();
                framed.push(u8::from(idempotency_key.is_some()));
                framed.extend_from_slice(&(key.len() as u32).to_le_bytes());
                framed.extend_from_slice(key);
                framed.extend_from_slice(&(body.len() as u32).to_le_bytes());
                framed.extend_from_slice(body);
            }
            Record::Watermark { time } => {
                framed.push(2);
                framed.extend_from_slice(&time.to_le_bytes());
            }
            Record::Tick { now } => {
                framed.push(3);
                framed.extend_from_slice(&now.to_le_bytes());
            }
            Record::Epoch { epoch } => {
                framed.push(4);
                framed.extend_from_slice(&epoch.to_le_bytes());
            }
            Record::Barrier { checkpoint } => {
                framed.push(5);
                framed.extend_from_slice(&checkpoint.to_le_bytes());
            }
            Record::Restore { checkpoint } => {
                framed.push(6);
                framed.extend_from_slice(&checkpoint.to_le_bytes());
            }
        }
        let payload = &framed[HEADER..];
        let (len, crc) = (payload.len() as u32, crc32c::crc32c(payload));
        framed[..4].copy_from_slice(&len.to_le_bytes());
        framed[4..HEADER].copy_from_slice(&crc.to_le_bytes());
        framed
    }

    /// Decodes the record framed at the start of `bytes`: (lsn, record, bytes used).
    pub fn decode(bytes: &[u8]) -> Result<(u64, Record, usize), DecodeError> {
        let header = bytes.get(..HEADER).ok_or(DecodeError::Truncated)?;
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        if !(9..=MAX_PAYLOAD).contains(&len) {
            return Err(DecodeError::BadLength(len));
        }
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let payload = bytes
            .get(HEADER..HEADER + len)
            .ok_or(DecodeError::Truncated)?;
        if crc32c::crc32c(payload) != crc {
            return Err(DecodeError::Checksum);
        }
        let (lsn, record) = decode_payload(payload)?;
        Ok((lsn, record, HEADER + len))
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

fn decode_payload(payload: &[u8]) -> Result<(u64, Record), DecodeError> {
    let mut r = Reader(payload);
    let lsn = r.u64()?;
    let record = match r.u8()? {
        1 => {
            let arrival = r.i64()?;
            let format = r.u8()?;
            let first_offset = r.u64()?;
            let has_key = r.u8()? == 1;
            let key_len = r.u32()? as usize;
            let key = std::str::from_utf8(r.take(key_len)?).map_err(|_| DecodeError::BadKey)?;
            let body_len = r.u32()? as usize;
            let body = Bytes::copy_from_slice(r.take(body_len)?);
            Record::Events {
                arrival,
                format,
                idempotency_key: has_key.then(|| key.to_owned()),
                first_offset,
                body,
            }
        }
        2 => Record::Watermark { time: r.i64()? },
        3 => Record::Tick { now: r.i64()? },
        4 => Record::Epoch { epoch: r.i64()? },
        5 => Record::Barrier {
            checkpoint: r.i64()?,
        },
        6 => Record::Restore {
            checkpoint: r.i64()?,
        },
        kind => return Err(DecodeError::UnknownKind(kind)),
    };
    match r.0.len() {
        0 => Ok((lsn, record)),
        n => Err(DecodeError::Trailing(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = Record> {
        prop_oneof![
            (
                any::<i64>(),
                0..2u8,
                proptest::option::of(".{0,20}"),
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..200)
            )
                .prop_map(|(arrival, format, idempotency_key, first_offset, body)| {
                    Record::Events {
                        arrival,
                        format,
                        idempotency_key,
                        first_offset,
                        body: Bytes::from(body),
                    }
                }),
            any::<i64>().prop_map(|time| Record::Watermark { time }),
            any::<i64>().prop_map(|now| Record::Tick { now }),
            any::<i64>().prop_map(|epoch| Record::Epoch { epoch }),
            any::<i64>().prop_map(|checkpoint| Record::Barrier { checkpoint }),
            any::<i64>().prop_map(|checkpoint| Record::Restore { checkpoint }),
        ]
    }

    proptest! {
        #[test]
        fn records_round_trip(lsn in any::<u64>(), record in record()) {
            let bytes = record.encode(lsn);
            let (got_lsn, got, used) = Record::decode(&bytes).unwrap();
            prop_assert_eq!((got_lsn, got, used), (lsn, record, bytes.len()));
        }

        #[test]
        fn any_single_flipped_bit_is_detected(record in record(), bit in any::<usize>()) {
            let mut bytes = record.encode(7);
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(Record::decode(&bytes).is_err() || Record::decode(&bytes).unwrap().1 != record);
        }

        #[test]
        fn every_prefix_is_truncated_not_garbage(record in record(), cut in any::<usize>()) {
            let bytes = record.encode(7);
            let cut = cut % bytes.len();
            prop_assert!(Record::decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn an_empty_idempotency_key_differs_from_none() {
        let some = Record::Events {
            arrival: 1,
            format: 0,
            idempotency_key: Some(String::new()),
            first_offset: 1,
            body: Bytes::new(),
        };
        assert_eq!(Record::decode(&some.encode(1)).unwrap().1, some);
    }
}
