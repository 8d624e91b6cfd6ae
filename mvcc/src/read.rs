//! Range evaluation shared by committed reads ([`crate::Store::range`]) and reads
//! inside a write batch: etcd's planning (when to fetch everything, the
//! one-extra fetch for `more`), filters, sorting, `limit`, `keys_only` and
//! `count_only`.

use std::cmp::Ordering;

use concord_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use concord_proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use concord_proto::mvccpb::KeyValue;

use crate::error::Error;
use crate::key_index::{KeyIndex, KeyRange};
use crate::revision::Revision;

/// Where key-values are read from by revision.
pub(crate) trait FetchKv {
    /// The key-value stored at `rev` (a put, never a tombstone); `None` if the
    /// backend no longer has it (compacted away after the index was read).
    fn fetch(&self, rev: Revision) -> Result<Option<KeyValue>, Error>;
}

/// A validated range request's options.
pub(crate) struct RangePlan {
    /// How to sort after fetching: `None` leaves the key order as it is.
    sort: Option<(SortOrder, SortTarget)>,
    /// Fetch at most this many key-values (`None`: all).
    fetch_limit: Option<usize>,
}

impl RangePlan {
    /// Checks a request like etcd's API layer does.
    pub fn new(req: &RangeRequest) -> Result<Self, Error> {
        if req.key.is_empty() {
            return Err(Error::EmptyKey);
        }
        // As etcd 3.4's apply: a target other than the key means ascending when no order
        // is given; an order it does not know sorts nothing. A target it does not know,
        // with an order to sort by, panics etcd 3.4 (etcd-io/etcd#13554); it is refused
        // here with the error etcd 3.6's request check gives.
        let mut order = SortOrder::try_from(req.sort_order).ok();
        if req.sort_target != SortTarget::Key as i32 && order == Some(SortOrder::None) {
            order = Some(SortOrder::Ascend);
        }
        let sort = match order {
            None | Some(SortOrder::None) => None,
            Some(order) => Some((
                order,
                SortTarget::try_from(req.sort_target).map_err(|_| Error::InvalidSortOption)?,
            )),
        };
        // etcd fetches everything when it has to sort or filter, and otherwise one
        // more than the limit so it can tell whether there is more.
        let fetch_everything = req.sort_order != SortOrder::None as i32
            || req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        let fetch_limit = if fetch_everything || req.limit <= 0 {
            None
        } else {
            Some(
                usize::try_from(req.limit)
                    .unwrap_or(usize::MAX)
                    .saturating_add(1),
            )
        };
        Ok(Self { sort, fetch_limit })
    }
}

/// Whether `req` reads exactly one key with no sorting or filtering, so the
/// general path's planning, sorting and limits have nothing to do (a `limit`
/// cannot cut a one-key answer).
pub(crate) fn is_plain_point_get(req: &RangeRequest) -> bool {
    !req.key.is_empty()
        && req.range_end.is_empty()
        && req.sort_order == 0
        && req.sort_target == 0
        && req.min_mod_revision == 0
        && req.max_mod_revision == 0
        && req.min_create_revision == 0
        && req.max_create_revision == 0
}

/// The response to a one-key range: `count` is 1 if the key is live at the
/// read revision, `kv` is it unless `count_only`.
pub(crate) fn point_response(
    kv: Option<KeyValue>,
    count: i64,
    header_revision: i64,
) -> RangeResponse {
    RangeResponse {
        header: Some(header(header_revision)),
        kvs: kv.map_or_else(Vec::new, |kv| vec![kv]),
        more: false,
        count,
    }
}

/// The revision a range reads at: `Err` for future or compacted revisions.
pub(crate) fn read_revision(requested: i64, current: i64, compacted: i64) -> Result<i64, Error> {
    if requested > current {
        return Err(Error::FutureRevision);
    }
    let rev = if requested <= 0 { current } else { requested };
    if rev < compacted {
        return Err(Error::Compacted);
    }
    Ok(rev)
}

/// What the index says a range covers.
pub(crate) struct Collected {
    pub revisions: Vec<Revision>,
    pub count: i64,
}

/// Walks the index for a range: every visible key is counted, at most
/// `fetch_limit` are listed (none when `count_only`).
pub(crate) fn collect(
    index: &KeyIndex,
    req: &RangeRequest,
    plan: &RangePlan,
    rev: i64,
) -> Collected {
    let mut revisions = Vec::new();
    let mut count = 0i64;
    index.for_each_visible(KeyRange::new(&req.key, &req.range_end), rev, |_, point| {
        count += 1;
        if !req.count_only && plan.fetch_limit.is_none_or(|limit| revisions.len() < limit) {
            revisions.push(point.revision());
        }
        true
    });
    Collected { revisions, count }
}

/// Fetches the listed revisions; `Ok(None)` if one vanished.
pub(crate) fn fetch_all(
    fetch: &impl FetchKv,
    revisions: &[Revision],
) -> Result<Option<Vec<KeyValue>>, Error> {
    if revisions.len() <= 8 {
        let mut kvs = Vec::with_capacity(revisions.len());
        for rev in revisions {
            match fetch.fetch(*rev)? {
                Some(kv) => kvs.push(kv),
                None => return Ok(None),
            }
        }
        return Ok(Some(kvs));
    }
    // Many keys: read in revision order, so keys written together hit the same
    // backend blocks one after another, then put the results back in key order.
    let mut order: Vec<usize> = (0..revisions.len()).collect();
    order.sort_unstable_by_key(|&i| revisions.get(i).copied());
    let mut slots: Vec<Option<KeyValue>> = vec![None; revisions.len()];
    for i in order {
        let Some(rev) = revisions.get(i) else {
            continue;
        };
        match fetch.fetch(*rev)? {
            Some(kv) => {
                if let Some(slot) = slots.get_mut(i) {
                    *slot = Some(kv);
                }
            }
            None => return Ok(None),
        }
    }
    Ok(slots.into_iter().collect())
}

/// Applies filters, sort, limit and `keys_only` the way etcd's applier does.
pub(crate) fn finish(
    req: &RangeRequest,
    plan: &RangePlan,
    mut kvs: Vec<KeyValue>,
    count: i64,
    header_revision: i64,
) -> RangeResponse {
    if req.max_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision <= req.max_mod_revision);
    }
    if req.min_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision >= req.min_mod_revision);
    }
    if req.max_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision <= req.max_create_revision);
    }
    if req.min_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision >= req.min_create_revision);
    }
    if let Some((order, target)) = plan.sort {
        let by = |a: &KeyValue, b: &KeyValue| -> Ordering {
            match target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            }
        };
        if order == SortOrder::Descend {
            kvs.sort_by(|a, b| by(b, a));
        } else {
            kvs.sort_by(by);
        }
    }
    let mut more = false;
    if let Ok(limit) = usize::try_from(req.limit)
        && limit > 0
        && kvs.len() > limit
    {
        kvs.truncate(limit);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    RangeResponse {
        header: Some(header(header_revision)),
        kvs,
        more,
        count,
    }
}

/// A response header carrying only the revision; the server fills the rest.
pub(crate) fn header(revision: i64) -> ResponseHeader {
    ResponseHeader {
        revision,
        ..Default::default()
    }
}

/// Decodes a stored key-value (`mvccpb.KeyValue` in protobuf encoding).
///
/// Written out by hand because it is on every read: prost's generic path
/// copies each bytes field through an intermediate buffer (two allocations and
/// copies per field), which cost more than the rest of the decode.
/// Unknown fields are skipped, as protobuf requires.
pub(crate) fn decode_kv(bytes: &[u8]) -> Result<KeyValue, Error> {
    decode_kv_fields(bytes).ok_or_else(|| Error::Corrupt("undecodable key-value".into()))
}

fn decode_kv_fields(mut buf: &[u8]) -> Option<KeyValue> {
    let mut kv = KeyValue::default();
    while !buf.is_empty() {
        let tag = read_varint(&mut buf)?;
        let (field, wire_type) = (tag >> 3, tag & 7);
        match (field, wire_type) {
            (1, WIRE_LEN) => kv.key = read_len_delimited(&mut buf)?.to_vec(),
            (5, WIRE_LEN) => kv.value = read_len_delimited(&mut buf)?.to_vec(),
            // int64 fields are two's-complement varints: the cast restores the sign.
            (2, WIRE_VARINT) => kv.create_revision = read_varint(&mut buf)? as i64,
            (3, WIRE_VARINT) => kv.mod_revision = read_varint(&mut buf)? as i64,
            (4, WIRE_VARINT) => kv.version = read_varint(&mut buf)? as i64,
            (6, WIRE_VARINT) => kv.lease = read_varint(&mut buf)? as i64,
            (0, _) => return None,
            (_, WIRE_VARINT) => {
                read_varint(&mut buf)?;
            }
            (_, WIRE_LEN) => {
                read_len_delimited(&mut buf)?;
            }
            (_, WIRE_FIXED64) => buf = buf.get(8..)?,
            (_, WIRE_FIXED32) => buf = buf.get(4..)?,
            _ => return None,
        }
    }
    Some(kv)
}

const WIRE_VARINT: u64 = 0;
const WIRE_FIXED64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_FIXED32: u64 = 5;

fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    // Tags, lengths under 128 and small revisions are one byte: most varints
    // of a stored key-value.
    if let Some((&byte, rest)) = buf.split_first()
        && byte < 0x80
    {
        *buf = rest;
        return Some(u64::from(byte));
    }
    let mut value = 0u64;
    for (i, &byte) in buf.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            *buf = buf.get(i + 1..)?;
            return Some(value);
        }
    }
    None
}

fn read_len_delimited<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(read_varint(buf)?).ok()?;
    let (field, rest) = buf.split_at_checked(len)?;
    *buf = rest;
    Some(field)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn decodes_what_prost_encodes() {
        let cases = [
            KeyValue::default(),
            KeyValue {
                key: b"/registry/pods/a".to_vec(),
                create_revision: 2,
                mod_revision: 1 << 40,
                version: 300,
                value: vec![0xff; 1000],
                lease: -1,
            },
            KeyValue {
                key: b"k".to_vec(),
                mod_revision: i64::MAX,
                lease: i64::MIN,
                ..Default::default()
            },
        ];
        for kv in cases {
            assert_eq!(decode_kv(&kv.encode_to_vec()).ok(), Some(kv));
        }
    }

    #[test]
    fn skips_unknown_fields_and_rejects_garbage() {
        let kv = KeyValue {
            key: b"a".to_vec(),
            value: b"b".to_vec(),
            version: 1,
            ..Default::default()
        };
        let mut bytes = kv.encode_to_vec();
        // Field 9 of each wire type: varint, fixed64, length-delimited, fixed32.
        bytes.extend_from_slice(&[9 << 3, 0x96, 0x01]);
        bytes.extend_from_slice(&[(9 << 3) | 1, 1, 2, 3, 4, 5, 6, 7, 8]);
        bytes.extend_from_slice(&[(9 << 3) | 2, 2, b'x', b'y']);
        bytes.extend_from_slice(&[(9 << 3) | 5, 1, 2, 3, 4]);
        assert_eq!(decode_kv(&bytes).ok(), Some(kv.clone()));

        // A cut at a field boundary is a valid, shorter message; a cut inside a
        // field is an error.
        let encoded = kv.encode_to_vec();
        for cut in 1..encoded.len() {
            assert_ne!(
                decode_kv(&encoded[..cut]).ok(),
                Some(kv.clone()),
                "cut at {cut}"
            );
        }
        assert!(decode_kv(&encoded[..encoded.len() - 1]).is_err());
        assert!(decode_kv(&encoded[..2]).is_err());
        assert!(decode_kv(&[0x0a, 0x05, b'a']).is_err());
        assert!(decode_kv(&[0xff; 11]).is_err());
        // Wire types 3 and 4 (groups) are not used by KeyValue.
        assert!(decode_kv(&[(9 << 3) | 3]).is_err());
    }

    /// Properties of the stored key-value decoder, checked against prost's
    /// own encoder and decoder.
    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// int64 fields: zero (not encoded at all), small, or anything.
        fn int64() -> impl Strategy<Value = i64> {
            prop_oneof![Just(0), 1..300i64, any::<i64>()]
        }

        fn key_value() -> impl Strategy<Value = KeyValue> {
            (
                vec(any::<u8>(), 0..48),
                int64(),
                int64(),
                int64(),
                vec(any::<u8>(), 0..300),
                int64(),
            )
                .prop_map(
                    |(key, create_revision, mod_revision, version, value, lease)| KeyValue {
                        key,
                        create_revision,
                        mod_revision,
                        version,
                        value,
                        lease,
                    },
                )
        }

        /// `decode_kv` on anything: no panic, an error is `Corrupt`, and
        /// where prost also decodes the bytes both read the same key-value
        /// (ours is laxer: it skips a known field of the wrong wire type).
        fn check_any(bytes: &[u8]) -> Result<(), TestCaseError> {
            match decode_kv(bytes) {
                Ok(ours) => {
                    if let Ok(theirs) = KeyValue::decode(bytes) {
                        prop_assert_eq!(ours, theirs);
                    }
                }
                Err(e) => prop_assert!(matches!(e, Error::Corrupt(_)), "{e:?}"),
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(crate::proptest_config(256))]

            #[test]
            fn round_trips_what_prost_encodes(kv in key_value()) {
                prop_assert_eq!(decode_kv(&kv.encode_to_vec()).ok(), Some(kv));
            }

            /// Every prefix of a record: a cut at a field boundary is a
            /// shorter, valid record, a cut inside a field is `Corrupt`,
            /// exactly as prost decides.
            #[test]
            fn reads_every_truncation_as_prost_does(kv in key_value()) {
                let bytes = kv.encode_to_vec();
                for cut in 0..bytes.len() {
                    let prefix = &bytes[..cut];
                    let ours = decode_kv(prefix);
                    prop_assert!(matches!(ours, Ok(_) | Err(Error::Corrupt(_))));
                    let ours = ours.ok();
                    prop_assert_ne!(ours.as_ref(), Some(&kv), "cut at {}", cut);
                    prop_assert_eq!(ours, KeyValue::decode(prefix).ok(), "cut at {}", cut);
                }
            }

            #[test]
            fn survives_arbitrary_bytes(bytes in vec(any::<u8>(), 0..128)) {
                check_any(&bytes)?;
            }

            #[test]
            fn survives_a_changed_byte(
                kv in key_value(),
                at in any::<prop::sample::Index>(),
                byte in any::<u8>(),
            ) {
                let mut bytes = kv.encode_to_vec();
                if !bytes.is_empty() {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
                check_any(&bytes)?;
            }
        }
    }
}
