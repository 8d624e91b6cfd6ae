//! Whole-backend snapshots for raft: every `kv` and `meta` entry (so the data,
//! the revisions, the applied index and the side tables), framed and
//! checksummed. Side tables that belong to one member rather than to the
//! replicated state (its own identity, say) are kept across a restore: the
//! receiver's entries replace whatever the sender's snapshot holds for them.
//!
//! Format: [`MAGIC`], then records `tag(1) | key_len(4 BE) | key | value_len(4 BE)
//! | value` with tag 1 for `kv` and 2 for `meta`, then tag 0 and the CRC-32C of
//! everything before it (4 BE).

use std::path::{Path, PathBuf};

use fjall::{Keyspace, Readable};

use crate::error::Error;
use crate::store::{MetaEntry, Store, StoreOptions, meta_user_key};

const MAGIC: &[u8] = b"CONCORD-MVCC-SNAPSHOT-1\n";
const TAG_END: u8 = 0;
const TAG_KV: u8 = 1;
const TAG_META: u8 = 2;
/// Entries per fjall batch while restoring.
const RESTORE_CHUNK: usize = 10_000;

impl Store {
    /// A consistent copy of the whole backend, taken between batches.
    pub fn snapshot_bytes(&self) -> Result<Vec<u8>, Error> {
        let snapshot = {
            // No batch is half-committed while we hold the writer lock.
            let _writer = self.writer.lock();
            self.db.snapshot()
        };
        let mut out = MAGIC.to_vec();
        for (tag, keyspace) in [(TAG_KV, &self.kv), (TAG_META, &self.meta)] {
            for guard in snapshot.iter(keyspace) {
                let (key, value) = guard.into_inner()?;
                out.push(tag);
                put_chunk(&mut out, &key)?;
                put_chunk(&mut out, &value)?;
            }
        }
        out.push(TAG_END);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        Ok(out)
    }

    /// Replaces whatever is in `dir` with the snapshot and opens it. Any `Store`
    /// open on `dir` must be dropped first. The snapshot is verified before
    /// anything on disk is touched, and written to a sibling directory that is
    /// renamed into place, so a crash leaves either the old or the new contents.
    pub fn restore(dir: &Path, bytes: &[u8], opts: StoreOptions) -> Result<Store, Error> {
        Self::restore_keeping(dir, bytes, opts, &[])
    }

    /// [`Store::restore`], except that each side table named in `member_tables` ends up
    /// holding exactly the given entries (this member's own, read before the old store
    /// was closed) instead of the snapshot's: a snapshot from another member must not
    /// overwrite who this member is. Written in the same staged directory as the rest,
    /// so a crash never leaves the restored data without them.
    pub fn restore_keeping(
        dir: &Path,
        bytes: &[u8],
        opts: StoreOptions,
        member_tables: &[(&str, &[MetaEntry])],
    ) -> Result<Store, Error> {
        let table_prefixes: Vec<Vec<u8>> = member_tables
            .iter()
            .map(|(table, _)| meta_user_key(table, b""))
            .collect();
        let mut records = parse(bytes)?;
        records
            .retain(|r| r.tag != TAG_META || !table_prefixes.iter().any(|p| r.key.starts_with(p)));
        let kept: Vec<(Vec<u8>, &[u8])> = member_tables
            .iter()
            .flat_map(|(table, entries)| {
                entries
                    .iter()
                    .map(move |(key, value)| (meta_user_key(table, key), value.as_slice()))
            })
            .collect();
        records.extend(kept.iter().map(|(key, value)| Record {
            tag: TAG_META,
            key,
            value,
        }));
        let staging = sibling(dir, "restoring");
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        {
            let store = Store::open(&staging, opts.clone())?;
            write_records(&store, &records)?;
            store.persist()?;
        }
        if dir.exists() {
            let old = sibling(dir, "replaced");
            if old.exists() {
                std::fs::remove_dir_all(&old)?;
            }
            std::fs::rename(dir, &old)?;
            std::fs::rename(&staging, dir)?;
            std::fs::remove_dir_all(&old)?;
        } else {
            std::fs::rename(&staging, dir)?;
        }
        Store::open(dir, opts)
    }
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    dir.with_file_name(name)
}

fn put_chunk(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), Error> {
    let len =
        u32::try_from(bytes.len()).map_err(|_| Error::Corrupt("entry larger than 4 GiB".into()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

struct Record<'a> {
    tag: u8,
    key: &'a [u8],
    value: &'a [u8],
}

fn parse(bytes: &[u8]) -> Result<Vec<Record<'_>>, Error> {
    let bad = |what: &str| Error::InvalidSnapshot(what.to_string());
    let body_len = bytes.len().checked_sub(4).ok_or_else(|| bad("too short"))?;
    let (body, crc) = bytes.split_at(body_len);
    let crc: [u8; 4] = crc.try_into().map_err(|_| bad("too short"))?;
    if crc32c::crc32c(body) != u32::from_be_bytes(crc) {
        return Err(bad("checksum mismatch"));
    }
    let mut rest = body.strip_prefix(MAGIC).ok_or_else(|| bad("wrong magic"))?;
    let mut records = Vec::new();
    loop {
        let (&tag, after) = rest.split_first().ok_or_else(|| bad("truncated"))?;
        rest = after;
        if tag == TAG_END {
            if !rest.is_empty() {
                return Err(bad("data after the end"));
            }
            return Ok(records);
        }
        if tag != TAG_KV && tag != TAG_META {
            return Err(bad("unknown record tag"));
        }
        let key = take_chunk(&mut rest).ok_or_else(|| bad("truncated key"))?;
        let value = take_chunk(&mut rest).ok_or_else(|| bad("truncated value"))?;
        records.push(Record { tag, key, value });
    }
}

fn take_chunk<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, after) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    let chunk = after.get(..len)?;
    *rest = after.get(len..)?;
    Some(chunk)
}

fn write_records(store: &Store, records: &[Record<'_>]) -> Result<(), Error> {
    for chunk in records.chunks(RESTORE_CHUNK) {
        let mut batch = store.db.batch();
        for r in chunk {
            let keyspace: &Keyspace = if r.tag == TAG_KV {
                &store.kv
            } else {
                &store.meta
            };
            batch.insert(keyspace, r.key, r.value);
        }
        batch.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    type Entry = (u8, Vec<u8>, Vec<u8>);

    /// `body` (magic and records) with its checksum, as `snapshot_bytes` ends it.
    fn sealed(mut body: Vec<u8>) -> Vec<u8> {
        let crc = crc32c::crc32c(&body);
        body.extend_from_slice(&crc.to_be_bytes());
        body
    }

    /// The body `snapshot_bytes` writes for these entries.
    fn body(entries: &[Entry]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for (tag, key, value) in entries {
            out.push(*tag);
            put_chunk(&mut out, key).expect("small");
            put_chunk(&mut out, value).expect("small");
        }
        out.push(TAG_END);
        out
    }

    fn parsed(bytes: &[u8]) -> Result<Vec<Entry>, Error> {
        Ok(parse(bytes)?
            .into_iter()
            .map(|r| (r.tag, r.key.to_vec(), r.value.to_vec()))
            .collect())
    }

    fn entries() -> impl Strategy<Value = Vec<Entry>> {
        vec(
            (
                prop_oneof![Just(TAG_KV), Just(TAG_META)],
                vec(any::<u8>(), 0..24),
                vec(any::<u8>(), 0..64),
            ),
            0..8,
        )
    }

    /// `body`, checksummed, through `parse`: no panic, an error is
    /// `InvalidSnapshot`, and what parses is written back the same.
    fn check_any(body: Vec<u8>) -> Result<(), TestCaseError> {
        match parsed(&sealed(body.clone())) {
            Ok(entries) => prop_assert_eq!(self::body(&entries), body),
            Err(e) => prop_assert!(matches!(e, Error::InvalidSnapshot(_)), "{e:?}"),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn parses_what_is_written(entries in entries()) {
            prop_assert_eq!(parsed(&sealed(body(&entries))).ok(), Some(entries));
        }

        /// A snapshot cut short, even with a checksum that matches the cut
        /// (a sender that stopped early), is `InvalidSnapshot`.
        #[test]
        fn rejects_every_truncation(entries in entries()) {
            let body = body(&entries);
            let whole = sealed(body.clone());
            for cut in 0..whole.len() {
                prop_assert!(matches!(parsed(&whole[..cut]), Err(Error::InvalidSnapshot(_))));
            }
            for cut in 0..body.len() {
                let resealed = sealed(body[..cut].to_vec());
                prop_assert!(matches!(parsed(&resealed), Err(Error::InvalidSnapshot(_))));
            }
        }

        /// Any records after the magic, checksummed: see [`check_any`].
        #[test]
        fn survives_arbitrary_records(
            tail in vec(prop_oneof![0..3u8, any::<u8>()], 0..96),
        ) {
            let mut body = MAGIC.to_vec();
            body.extend_from_slice(&tail);
            check_any(body)?;
        }

        /// A written snapshot with one byte changed, checksummed again.
        #[test]
        fn survives_a_changed_byte(
            entries in entries(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut body = body(&entries);
            let at = MAGIC.len() + at.index(body.len() - MAGIC.len());
            body[at] = byte;
            check_any(body)?;
        }
    }
}
