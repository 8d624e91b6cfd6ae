//! Property tests of the record framing (`len | crc32c | type | payload`): what is written
//! reads back, a cut sequence reads back exactly its whole records, damage is detected,
//! and no input makes the decoder panic or accept a record whose checksum does not match.
//! Seeded (see [`crate::proptest_config`]): every run tries the same cases.

use proptest::prelude::*;

use super::*;

const TYPES: [RecordType; 6] = [
    RecordType::SegmentHeader,
    RecordType::Entry,
    RecordType::HardState,
    RecordType::ConfState,
    RecordType::Compact,
    RecordType::Batch,
];

fn record_type() -> impl Strategy<Value = RecordType> {
    proptest::sample::select(TYPES.to_vec())
}

fn records(max: usize) -> impl Strategy<Value = Vec<(RecordType, Vec<u8>)>> {
    prop::collection::vec(
        (record_type(), prop::collection::vec(any::<u8>(), 0..200)),
        0..max,
    )
}

/// The records one after another, and the offset where each one ends.
fn encode(records: &[(RecordType, Vec<u8>)]) -> (Vec<u8>, Vec<usize>) {
    let mut buf = Vec::new();
    let mut ends = Vec::new();
    for (record_type, payload) in records {
        append_record(&mut buf, *record_type, |out| {
            out.extend_from_slice(payload);
            Ok(())
        })
        .unwrap();
        ends.push(buf.len());
    }
    (buf, ends)
}

/// Parses records from offset 0 until something other than a valid record: the records
/// and what stopped the walk.
fn walk(buf: &[u8]) -> (Vec<(RecordType, Vec<u8>)>, Parsed<'_>) {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        match parse_at(buf, offset) {
            Parsed::Valid {
                record_type,
                payload,
                next,
            } => {
                out.push((record_type, payload.to_vec()));
                offset = next;
            }
            stop => return (out, stop),
        }
    }
}

/// Bytes that mix valid records with garbage between them.
fn mixed_bytes() -> impl Strategy<Value = Vec<u8>> {
    let chunk = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        (record_type(), prop::collection::vec(any::<u8>(), 0..40)).prop_map(|r| encode(&[r]).0),
    ];
    prop::collection::vec(chunk, 0..6).prop_map(|chunks| chunks.concat())
}

proptest! {
    #![proptest_config(crate::proptest_config(256))]

    #[test]
    fn any_sequence_of_records_reads_back(records in records(20)) {
        let (buf, ends) = encode(&records);
        let (read, stop) = walk(&buf);
        prop_assert_eq!(&read, &records);
        prop_assert_eq!(stop, Parsed::End);
        // Every record ends where its header says.
        let mut offset = 0;
        for end in ends {
            let Parsed::Valid { next, .. } = parse_at(&buf, offset) else {
                return Err(TestCaseError::fail(format!("no record at {offset}")));
            };
            prop_assert_eq!(next, end);
            offset = next;
        }
    }

    #[test]
    fn a_cut_sequence_reads_back_exactly_its_whole_records(
        records in records(12),
        cut in any::<prop::sample::Index>(),
    ) {
        let (buf, ends) = encode(&records);
        let cut = cut.index(buf.len() + 1);
        let whole = ends.iter().filter(|end| **end <= cut).count();
        let (read, stop) = walk(&buf[..cut]);
        prop_assert_eq!(&read[..], &records[..whole]);
        let at_boundary = cut == 0 || ends.contains(&cut);
        if at_boundary {
            prop_assert_eq!(stop, Parsed::End);
        } else {
            prop_assert!(matches!(stop, Parsed::Invalid(_)), "cut at {}: {:?}", cut, stop);
        }
    }

    #[test]
    fn a_damaged_byte_is_detected_in_its_record_and_spares_the_ones_before(
        records in records(12).prop_filter("something to damage", |r| !r.is_empty()),
        position in any::<prop::sample::Index>(),
        flip in 1..=u8::MAX,
    ) {
        let (buf, ends) = encode(&records);
        let position = position.index(buf.len());
        let mut damaged = buf.clone();
        damaged[position] ^= flip;
        let hit = ends.iter().filter(|end| **end <= position).count();
        let (read, stop) = walk(&damaged);
        prop_assert_eq!(&read[..], &records[..hit], "damage at {}", position);
        prop_assert!(matches!(stop, Parsed::Invalid(_)), "damage at {}: {:?}", position, stop);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_only_checksummed_records_are_valid(bytes in mixed_bytes()) {
        let mut first_valid = None;
        let mut first_batch = None;
        for offset in 0..=bytes.len() + 1 {
            match parse_at(&bytes, offset) {
                Parsed::End => prop_assert!(offset >= bytes.len()),
                Parsed::Invalid(_) => prop_assert!(offset < bytes.len()),
                Parsed::Valid { record_type, payload, next } => {
                    prop_assert!(next <= bytes.len() && next == offset + HEADER_LEN + payload.len());
                    // A valid record is exactly what the encoder writes for it.
                    let (again, _) = encode(&[(record_type, payload.to_vec())]);
                    prop_assert_eq!(&again[..], &bytes[offset..next]);
                    first_valid.get_or_insert(offset);
                    if record_type == RecordType::Batch {
                        first_batch.get_or_insert(offset);
                    }
                }
            }
        }
        // The tail scan finds the first valid record (of the wanted type), or none.
        prop_assert_eq!(find_valid_record_from(&bytes, 0, None), Ok(first_valid));
        prop_assert_eq!(
            find_valid_record_from(&bytes, 0, Some(RecordType::Batch)),
            Ok(first_batch)
        );
    }
}
