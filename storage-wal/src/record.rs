//! Record framing: `len: u32 LE | crc32c: u32 LE | type: u8 | payload[len]`.
//!
//! The checksum covers the length and type bytes as well as the payload, so a flipped bit
//! anywhere in a record (header included) is detected.
//!
//! Every write (one fsync) is a *batch*: a `Batch` record whose payload is the byte length
//! of the records that follow it in the same write. Recovery applies a batch only when all
//! of its records are valid, and knows where the last write ended even when its pages
//! reached the disk out of order.

use crate::Error;

/// Bytes before the payload of every record.
pub(crate) const HEADER_LEN: usize = 9;

/// Upper bound on the checksum work spent deciding whether a bad record is the torn tail
/// of the log or corruption in the middle of it. Past this budget recovery refuses to
/// guess and reports corruption (fail safe: never silently drop data that might be synced).
const TAIL_SCAN_BUDGET_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum RecordType {
    /// First record of every segment: the log window and the hard/conf state at creation.
    SegmentHeader = 1,
    Entry = 2,
    HardState = 3,
    ConfState = 4,
    /// The log was compacted: entries up to and including `index` are gone.
    Compact = 5,
    /// Starts a batch: the payload is the byte length of the batch's records.
    Batch = 6,
}

/// Size of the `Batch` record that starts every batch.
pub(crate) const BATCH_MARKER_LEN: usize = HEADER_LEN + 8;

/// A buffer for one batch: room for the marker, records appended after it.
pub(crate) fn start_batch() -> Vec<u8> {
    let mut buf = Vec::with_capacity(4096);
    buf.resize(BATCH_MARKER_LEN, 0);
    buf
}

/// Fills in the marker of a buffer made by [`start_batch`].
pub(crate) fn seal_batch(buf: &mut [u8]) -> Result<(), Error> {
    let records_len = (buf.len() - BATCH_MARKER_LEN) as u64;
    let mut marker = Vec::with_capacity(BATCH_MARKER_LEN);
    append_record(&mut marker, RecordType::Batch, |out| {
        put_u64(out, records_len);
        Ok(())
    })?;
    buf[..BATCH_MARKER_LEN].copy_from_slice(&marker);
    Ok(())
}

impl RecordType {
    fn from_byte(byte: u8) -> Option<RecordType> {
        Some(match byte {
            1 => RecordType::SegmentHeader,
            2 => RecordType::Entry,
            3 => RecordType::HardState,
            4 => RecordType::ConfState,
            5 => RecordType::Compact,
            6 => RecordType::Batch,
            _ => return None,
        })
    }
}

fn checksum(len_bytes: [u8; 4], type_byte: u8, payload: &[u8]) -> u32 {
    let head = [
        len_bytes[0],
        len_bytes[1],
        len_bytes[2],
        len_bytes[3],
        type_byte,
    ];
    crc32c::crc32c_append(crc32c::crc32c(&head), payload)
}

/// Appends one record to `buf`; `write_payload` appends the payload bytes.
/// Returns the payload length.
pub(crate) fn append_record(
    buf: &mut Vec<u8>,
    record_type: RecordType,
    write_payload: impl FnOnce(&mut Vec<u8>) -> Result<(), Error>,
) -> Result<u32, Error> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; HEADER_LEN]);
    write_payload(buf)?;
    let payload_len = buf.len() - start - HEADER_LEN;
    let len = u32::try_from(payload_len).map_err(|_| {
        buf.truncate(start);
        Error::RecordTooLarge { len: payload_len }
    })?;
    let len_bytes = len.to_le_bytes();
    let type_byte = record_type as u8;
    let crc = checksum(len_bytes, type_byte, &buf[start + HEADER_LEN..]);
    buf[start..start + 4].copy_from_slice(&len_bytes);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    buf[start + 8] = type_byte;
    Ok(len)
}

/// Appends a record whose payload is a protobuf message.
pub(crate) fn append_message<M: protobuf::Message>(
    buf: &mut Vec<u8>,
    record_type: RecordType,
    message: &M,
) -> Result<u32, Error> {
    append_record(buf, record_type, |out| {
        message.write_to_vec(out).map_err(Error::encode)
    })
}

/// The outcome of reading the record starting at some offset of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed<'a> {
    /// A record whose checksum matches; `next` is the offset just after it.
    Valid {
        record_type: RecordType,
        payload: &'a [u8],
        next: usize,
    },
    /// The buffer ends exactly here.
    End,
    /// Not a valid record (torn, truncated or corrupt).
    Invalid(&'static str),
}

pub(crate) fn parse_at(buf: &[u8], offset: usize) -> Parsed<'_> {
    let rest = match buf.get(offset..) {
        Some([]) | None => return Parsed::End,
        Some(rest) => rest,
    };
    if rest.len() < HEADER_LEN {
        return Parsed::Invalid("record header is cut short");
    }
    let len_bytes = [rest[0], rest[1], rest[2], rest[3]];
    let stored_crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    let type_byte = rest[8];
    let len = u32::from_le_bytes(len_bytes) as usize;
    let Some(payload) = rest.get(HEADER_LEN..HEADER_LEN + len) else {
        return Parsed::Invalid("record extends past the end of the segment");
    };
    if checksum(len_bytes, type_byte, payload) != stored_crc {
        return Parsed::Invalid("checksum mismatch");
    }
    let Some(record_type) = RecordType::from_byte(type_byte) else {
        return Parsed::Invalid("unknown record type");
    };
    Parsed::Valid {
        record_type,
        payload,
        next: offset + HEADER_LEN + len,
    }
}

/// Looks for a valid record (of type `only`, if given) starting anywhere at or after `from`.
///
/// Used after damage: `Ok(None)` means nothing valid follows, so the damage is the torn
/// tail of the last write; `Ok(Some(offset))` means a valid record follows, so the damage
/// is in the middle of the log; `Err(())` means the search budget ran out and the caller
/// must treat the damage as corruption.
pub(crate) fn find_valid_record_from(
    buf: &[u8],
    from: usize,
    only: Option<RecordType>,
) -> Result<Option<usize>, ()> {
    let mut budget = TAIL_SCAN_BUDGET_BYTES;
    let mut offset = from;
    while offset + HEADER_LEN <= buf.len() {
        let type_byte = buf[offset + 8];
        let len = u32::from_le_bytes([
            buf[offset],
            buf[offset + 1],
            buf[offset + 2],
            buf[offset + 3],
        ]) as u64;
        // Cheap filters first: a record must have a known type and fit in the buffer.
        let fits = (offset + HEADER_LEN) as u64 + len <= buf.len() as u64;
        let wanted = match (RecordType::from_byte(type_byte), only) {
            (Some(found), Some(only)) => found == only,
            (found, None) => found.is_some(),
            (None, Some(_)) => false,
        };
        if wanted && fits {
            budget = budget.checked_sub(len + HEADER_LEN as u64).ok_or(())?;
            if let Parsed::Valid { .. } = parse_at(buf, offset) {
                return Ok(Some(offset));
            }
        }
        offset += 1;
    }
    Ok(None)
}

pub(crate) fn put_u64(buf: &mut Vec<u8>, value: u64) {
    buf.extend_from_slice(&value.to_le_bytes());
}

/// Reads little-endian integers from a payload, failing on short input.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        let bytes = self.bytes(8)?;
        let mut array = [0u8; 8];
        array.copy_from_slice(bytes);
        Some(u64::from_le_bytes(array))
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        let bytes = self.bytes(4)?;
        let mut array = [0u8; 4];
        array.copy_from_slice(bytes);
        Some(u32::from_le_bytes(array))
    }

    pub(crate) fn rest(self) -> &'a [u8] {
        self.rest
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod proptests;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(record_type: RecordType, payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        append_record(&mut buf, record_type, |out| {
            out.extend_from_slice(payload);
            Ok(())
        })
        .unwrap();
        buf
    }

    #[test]
    fn valid_record_parses_back() {
        let mut buf = record(RecordType::Entry, b"hello");
        buf.extend(record(RecordType::Compact, b""));
        let Parsed::Valid {
            record_type,
            payload,
            next,
        } = parse_at(&buf, 0)
        else {
            panic!("first record should parse");
        };
        assert_eq!(record_type, RecordType::Entry);
        assert_eq!(payload, b"hello");
        assert_eq!(next, HEADER_LEN + 5);
        assert!(matches!(
            parse_at(&buf, next),
            Parsed::Valid {
                record_type: RecordType::Compact,
                ..
            }
        ));
        assert_eq!(parse_at(&buf, buf.len()), Parsed::End);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let original = record(RecordType::HardState, b"some payload bytes");
        for bit in 0..original.len() * 8 {
            let mut damaged = original.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(parse_at(&damaged, 0), Parsed::Invalid(_)),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let original = record(RecordType::Entry, b"0123456789");
        for cut in 1..original.len() {
            assert!(matches!(parse_at(&original[..cut], 0), Parsed::Invalid(_)));
        }
    }

    #[test]
    fn tail_scan_finds_a_following_record_or_reports_none() {
        let first = record(RecordType::Entry, b"first");
        let second = record(RecordType::Entry, b"second");
        let mut buf = first.clone();
        buf.extend(&second);
        buf[0] ^= 0xff; // damage the length of the first record
        assert_eq!(find_valid_record_from(&buf, 1, None), Ok(Some(first.len())));
        assert_eq!(
            find_valid_record_from(&buf, 1, Some(RecordType::Batch)),
            Ok(None)
        );
        let zeros = vec![0u8; 4096];
        assert_eq!(find_valid_record_from(&zeros, 0, None), Ok(None));
    }
}
