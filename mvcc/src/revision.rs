//! Revisions and their on-disk encoding.
//!
//! A revision is `(main, sub)`: `main` counts write transactions (one per
//! request that changed something), `sub` orders the changes inside one. In
//! the `kv` keyspace a revision is stored as big-endian `main(8) ++ sub(8)`,
//! followed by [`TOMBSTONE_MARK`] for deletions, so a byte-ordered scan walks
//! the history in revision order.

/// A point in the store's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    /// One per write transaction.
    pub main: i64,
    /// Position of the change inside its write transaction.
    pub sub: i64,
}

impl Revision {
    /// A revision.
    pub const fn new(main: i64, sub: i64) -> Self {
        Self { main, sub }
    }
}

/// Appended to a revision key when the change at that revision is a deletion.
pub const TOMBSTONE_MARK: u8 = b't';

/// Length of a revision key without the tombstone mark.
pub const REVISION_KEY_LEN: usize = 16;

/// Encodes a revision as a `kv` keyspace key.
pub fn encode_revision_key(rev: Revision, tombstone: bool) -> Vec<u8> {
    let mut key = Vec::with_capacity(REVISION_KEY_LEN + 1);
    key.extend_from_slice(&rev.main.to_be_bytes());
    key.extend_from_slice(&rev.sub.to_be_bytes());
    if tombstone {
        key.push(TOMBSTONE_MARK);
    }
    key
}

/// Decodes a `kv` keyspace key into its revision and tombstone flag; `None` if it
/// is not a revision key.
pub fn decode_revision_key(key: &[u8]) -> Option<(Revision, bool)> {
    let (main, rest) = key.split_first_chunk::<8>()?;
    let (sub, rest) = rest.split_first_chunk::<8>()?;
    let tombstone = match rest {
        [] => false,
        [TOMBSTONE_MARK] => true,
        _ => return None,
    };
    Some((
        Revision::new(i64::from_be_bytes(*main), i64::from_be_bytes(*sub)),
        tombstone,
    ))
}

/// Length of etcd's revision key (its `key` bucket's keys) without the tombstone mark:
/// `main(8 BE) ++ '_' ++ sub(8 BE)`.
pub const ETCD_REVISION_KEY_LEN: usize = 17;

/// Encodes a revision as etcd's backend does in its `key` bucket (and as etcd's
/// `HashKV` hashes it): `main(8 BE) ++ '_' ++ sub(8 BE)`, then `'t'` for a deletion.
pub fn encode_etcd_revision_key(rev: Revision, tombstone: bool) -> Vec<u8> {
    let mut key = Vec::with_capacity(ETCD_REVISION_KEY_LEN + 1);
    key.extend_from_slice(&rev.main.to_be_bytes());
    key.push(b'_');
    key.extend_from_slice(&rev.sub.to_be_bytes());
    if tombstone {
        key.push(TOMBSTONE_MARK);
    }
    key
}

/// Decodes one of etcd's `key` bucket keys; `None` if it is not one.
pub fn decode_etcd_revision_key(key: &[u8]) -> Option<(Revision, bool)> {
    let (main, rest) = key.split_first_chunk::<8>()?;
    let (separator, rest) = rest.split_first()?;
    if *separator != b'_' {
        return None;
    }
    let (sub, rest) = rest.split_first_chunk::<8>()?;
    let tombstone = match rest {
        [] => false,
        [TOMBSTONE_MARK] => true,
        _ => return None,
    };
    Some((
        Revision::new(i64::from_be_bytes(*main), i64::from_be_bytes(*sub)),
        tombstone,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn etcd_keys_round_trip_and_match_etcds_layout() {
        // etcd 3.4's revToBytes for {main: 2, sub: 1}, plus markTombstone's 't'.
        let key = encode_etcd_revision_key(Revision::new(2, 1), true);
        assert_eq!(key, b"\0\0\0\0\0\0\0\x02_\0\0\0\0\0\0\0\x01t");
        assert_eq!(
            decode_etcd_revision_key(&key),
            Some((Revision::new(2, 1), true))
        );
        assert_eq!(
            decode_etcd_revision_key(&key[..17]),
            Some((Revision::new(2, 1), false))
        );
        assert_eq!(decode_etcd_revision_key(&key[..16]), None);
        assert_eq!(
            decode_etcd_revision_key(&encode_revision_key(Revision::new(2, 1), false)),
            None
        );
    }

    use super::*;

    #[test]
    fn keys_sort_in_revision_order() {
        let revs = [
            Revision::new(1, 0),
            Revision::new(1, 1),
            Revision::new(1, 255),
            Revision::new(1, 256),
            Revision::new(2, 0),
            Revision::new(256, 0),
            Revision::new(1 << 40, 3),
        ];
        let keys: Vec<_> = revs
            .iter()
            .enumerate()
            .map(|(i, r)| encode_revision_key(*r, i % 2 == 0))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(decode_revision_key(key), Some((revs[i], i % 2 == 0)));
        }
    }

    #[test]
    fn rejects_foreign_keys() {
        assert_eq!(decode_revision_key(b"short"), None);
        let mut key = encode_revision_key(Revision::new(5, 1), false);
        key.push(b'x');
        assert_eq!(decode_revision_key(&key), None);
    }

    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// Revisions as the store makes them (never negative), often equal.
        fn revision() -> impl Strategy<Value = Revision> {
            let part = || prop_oneof![0..3i64, 0..=i64::MAX];
            (part(), part()).prop_map(|(main, sub)| Revision::new(main, sub))
        }

        proptest! {
            #![proptest_config(crate::proptest_config(512))]

            #[test]
            fn keys_round_trip_and_truncations_are_rejected(
                main in any::<i64>(),
                sub in any::<i64>(),
                tombstone in any::<bool>(),
            ) {
                let rev = Revision::new(main, sub);
                let key = encode_revision_key(rev, tombstone);
                prop_assert_eq!(key.len(), REVISION_KEY_LEN + usize::from(tombstone));
                prop_assert_eq!(decode_revision_key(&key), Some((rev, tombstone)));
                for cut in 0..REVISION_KEY_LEN {
                    prop_assert_eq!(decode_revision_key(&key[..cut]), None);
                }
            }

            #[test]
            fn keys_sort_as_their_revisions(
                a in revision(),
                b in revision(),
                a_tombstone in any::<bool>(),
                b_tombstone in any::<bool>(),
            ) {
                let (ka, kb) = (
                    encode_revision_key(a, a_tombstone),
                    encode_revision_key(b, b_tombstone),
                );
                // A deletion's key sorts right after the same revision's put.
                prop_assert_eq!(ka.cmp(&kb), (a, a_tombstone).cmp(&(b, b_tombstone)));
            }

            /// Any bytes: no panic; accepted exactly when they are a key
            /// `encode_revision_key` writes.
            #[test]
            fn decodes_only_what_encode_writes(
                mut bytes in prop_oneof![vec(any::<u8>(), 0..20), vec(any::<u8>(), 15..19)],
                mark in any::<bool>(),
            ) {
                if mark && let Some(last) = bytes.last_mut() {
                    *last = TOMBSTONE_MARK;
                }
                let is_key = bytes.len() == REVISION_KEY_LEN
                    || (bytes.len() == REVISION_KEY_LEN + 1 && bytes[REVISION_KEY_LEN] == TOMBSTONE_MARK);
                match decode_revision_key(&bytes) {
                    Some((rev, tombstone)) => {
                        prop_assert_eq!(encode_revision_key(rev, tombstone), bytes);
                    }
                    None => prop_assert!(!is_key),
                }
            }
        }
    }
}
