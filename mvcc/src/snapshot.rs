//! Whole-backend snapshots for raft: every `kv` and `meta` entry (so the data,
//! the revisions, the applied index and the side tables), framed and
//! checksummed. Side tables that belong to one member rather than to the
//! replicated state (its own identity, say) are kept across a restore: the
//! receiver's entries replace whatever the sender's snapshot holds for them.
//!
//! Format: [`MAGIC`], then records `tag(1) | key_len(4 BE) | key | value_len(4 BE)
//! | value` with tag 1 for `kv` and 2 for `meta`, then tag 0 and the CRC-32C of
//! everything before it (4 BE).

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use fjall::{Keyspace, Readable};

use crate::error::Error;
use crate::metrics::OpenRead;
use crate::store::{MetaEntry, Store, StoreOptions, meta_user_key};

const MAGIC: &[u8] = b"CONCORD-MVCC-SNAPSHOT-1\n";
const TAG_END: u8 = 0;
const TAG_KV: u8 = 1;
const TAG_META: u8 = 2;
/// Entries per fjall batch while restoring.
const RESTORE_CHUNK: usize = 10_000;
/// Bytes of keys and values per fjall batch while restoring the `meta` records from a
/// file: the batch is held in memory until it commits.
const RESTORE_CHUNK_BYTES: usize = 2 * 1024 * 1024;

/// The snapshot of a store as a byte stream (the same bytes as
/// [`Store::snapshot_bytes`]), read from a consistent fjall snapshot taken when the
/// reader was made: the store goes on committing meanwhile, and only one record is
/// held in memory at a time. `Send`, so another thread can stream it.
pub struct SnapshotReader {
    /// Keyspaces still to read, each with its record tag, in order.
    pending: std::collections::VecDeque<(u8, fjall::Iter)>,
    /// Bytes produced and not yet read, from `pos`.
    buf: Vec<u8>,
    pos: usize,
    /// CRC-32C of everything before the trailer.
    crc: u32,
    ended: bool,
    /// Keeps the view the iterators read from.
    _view: fjall::Snapshot,
    _open: OpenRead,
}

impl SnapshotReader {
    /// Refills `buf` with the next record, or the end mark and checksum.
    fn refill(&mut self) -> std::io::Result<()> {
        self.buf.clear();
        self.pos = 0;
        while let Some((tag, iter)) = self.pending.front_mut() {
            let tag = *tag;
            match iter.next() {
                Some(guard) => {
                    let (key, value) = guard.into_inner().map_err(std::io::Error::other)?;
                    self.buf.push(tag);
                    put_chunk(&mut self.buf, &key).map_err(std::io::Error::other)?;
                    put_chunk(&mut self.buf, &value).map_err(std::io::Error::other)?;
                    self.crc = crc32c::crc32c_append(self.crc, &self.buf);
                    return Ok(());
                }
                None => {
                    self.pending.pop_front();
                }
            }
        }
        if !self.ended {
            self.ended = true;
            self.buf.push(TAG_END);
            self.crc = crc32c::crc32c_append(self.crc, &self.buf);
            self.buf.extend_from_slice(&self.crc.to_be_bytes());
        }
        Ok(())
    }
}

impl Read for SnapshotReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            self.refill()?;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Checks a snapshot file's framing and checksum without holding it in memory.
pub fn verify_snapshot_file(path: &Path) -> Result<(), Error> {
    let bad = |what: &str| Error::InvalidSnapshot(what.to_string());
    let len = std::fs::metadata(path)?.len();
    let body_len = len
        .checked_sub(4)
        .filter(|&n| n > MAGIC.len() as u64)
        .ok_or_else(|| bad("too short"))?;
    let mut file = BufReader::new(std::fs::File::open(path)?);
    let mut magic = vec![0; MAGIC.len()];
    file.read_exact(&mut magic)?;
    if magic != MAGIC {
        return Err(bad("wrong magic"));
    }
    let mut crc = crc32c::crc32c(&magic);
    let mut left = body_len - MAGIC.len() as u64;
    let mut chunk = vec![0; 64 * 1024];
    while left > 0 {
        let n = chunk.len().min(left as usize);
        file.read_exact(&mut chunk[..n])?;
        crc = crc32c::crc32c_append(crc, &chunk[..n]);
        left -= n as u64;
    }
    let mut trailer = [0; 4];
    file.read_exact(&mut trailer)?;
    if crc != u32::from_be_bytes(trailer) {
        return Err(bad("checksum mismatch"));
    }
    Ok(())
}

impl Store {
    /// The whole backend as a stream, from a consistent view taken now (between
    /// batches). See [`SnapshotReader`].
    pub fn snapshot_reader(&self) -> SnapshotReader {
        let view = {
            // No batch is half-committed while we hold the writer lock.
            let _writer = self.writer.lock();
            self.db.snapshot()
        };
        let pending = [(TAG_KV, &self.kv), (TAG_META, &self.meta)]
            .into_iter()
            .map(|(tag, keyspace)| (tag, view.iter(keyspace)))
            .collect();
        SnapshotReader {
            pending,
            buf: MAGIC.to_vec(),
            pos: 0,
            crc: crc32c::crc32c(MAGIC),
            ended: false,
            _view: view,
            _open: self.metrics.open_read(),
        }
    }

    /// [`Store::restore_keeping`] from a snapshot file (verified with
    /// [`verify_snapshot_file`] first), read record by record: neither the file nor
    /// the store is held in memory.
    ///
    /// The `kv` records (the bulk of a store, in key order as the snapshot iterated them)
    /// are ingested straight into on-disk tables, bypassing the memtables and the journal:
    /// written through batches they would pass through up to five 16 MiB memtables
    /// (fjall stalls writers only at four queued flushes) and the journal, and the fresh
    /// store would replay that journal into memtables again when it is reopened. The few
    /// `meta` records go through bounded batches.
    pub fn restore_keeping_from_file(
        dir: &Path,
        file: &Path,
        opts: StoreOptions,
        member_tables: &[(&str, &[MetaEntry])],
    ) -> Result<Store, Error> {
        restore_from_file_in_steps(dir, file, opts, member_tables, |_| {})
    }
}

/// The steps of [`Store::restore_keeping_from_file`], in order. Each is reported to the
/// caller of [`restore_from_file_in_steps`] once done, so that tests can take what a
/// crash right after it would leave on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RestoreStep {
    /// The file's checksum matched; nothing on disk was touched yet.
    Verified,
    /// The staging directory (`<dir>.restoring`) holds an empty store.
    StagingOpened,
    /// One more `kv` record went into the ingestion (`n` so far).
    KvIngested(usize),
    /// The ingested tables are part of the staged store.
    KvFinished,
    /// One batch of `meta` records is committed to the staged store.
    MetaBatchWritten,
    /// The staged store is complete and durable.
    StagingPersisted,
    /// The old store was moved aside (`<dir>.replaced`); `dir` does not exist.
    OldMovedAside,
    /// The staged store is `dir`.
    NewMovedIn,
    /// The old store is gone.
    OldRemoved,
}

/// [`Store::restore_keeping_from_file`], telling `step` what each step did as it ends.
fn restore_from_file_in_steps(
    dir: &Path,
    file: &Path,
    opts: StoreOptions,
    member_tables: &[(&str, &[MetaEntry])],
    mut step: impl FnMut(RestoreStep),
) -> Result<Store, Error> {
    verify_snapshot_file(file)?;
    step(RestoreStep::Verified);
    let table_prefixes: Vec<Vec<u8>> = member_tables
        .iter()
        .map(|(table, _)| meta_user_key(table, b""))
        .collect();
    let staging = sibling(dir, RESTORING);
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    {
        let store = Store::open(&staging, opts.clone())?;
        step(RestoreStep::StagingOpened);
        let mut reader = BufReader::new(std::fs::File::open(file)?);
        let mut magic = vec![0; MAGIC.len()];
        reader.read_exact(&mut magic)?;
        let mut ingestion = Some(store.kv.start_ingestion()?);
        let mut last_kv: Option<Vec<u8>> = None;
        let mut ingested = 0;
        let mut meta = Vec::new();
        let mut meta_bytes = 0;
        loop {
            let mut tag = [0u8; 1];
            reader.read_exact(&mut tag)?;
            if tag[0] == TAG_END {
                break;
            }
            if tag[0] != TAG_KV && tag[0] != TAG_META {
                return Err(Error::InvalidSnapshot("unknown record tag".into()));
            }
            let key = read_chunk(&mut reader)?;
            let value = read_chunk(&mut reader)?;
            if tag[0] == TAG_KV {
                // Ingestion takes keys in ascending order only (and panics otherwise).
                if last_kv.as_ref().is_some_and(|last| key <= *last) {
                    return Err(Error::InvalidSnapshot("kv records out of order".into()));
                }
                let Some(ingesting) = ingestion.as_mut() else {
                    return Err(Error::InvalidSnapshot("kv record after meta".into()));
                };
                ingesting.write(key.clone(), value)?;
                last_kv = Some(key);
                ingested += 1;
                step(RestoreStep::KvIngested(ingested));
                continue;
            }
            // The kv records all come first.
            if let Some(done) = ingestion.take() {
                done.finish()?;
                step(RestoreStep::KvFinished);
            }
            if table_prefixes.iter().any(|p| key.starts_with(p)) {
                continue;
            }
            meta_bytes += key.len() + value.len();
            meta.push((TAG_META, key, value));
            if meta.len() == RESTORE_CHUNK || meta_bytes >= RESTORE_CHUNK_BYTES {
                write_owned(&store, &meta)?;
                step(RestoreStep::MetaBatchWritten);
                meta.clear();
                meta_bytes = 0;
            }
        }
        if let Some(done) = ingestion.take() {
            done.finish()?;
            step(RestoreStep::KvFinished);
        }
        for (table, entries) in member_tables {
            for (key, value) in entries.iter() {
                meta.push((TAG_META, meta_user_key(table, key), value.clone()));
            }
        }
        write_owned(&store, &meta)?;
        step(RestoreStep::MetaBatchWritten);
        store.persist()?;
        step(RestoreStep::StagingPersisted);
    }
    install_staged(dir, &staging, &mut step)?;
    Store::open(dir, opts)
}

fn read_chunk(reader: &mut impl Read) -> Result<Vec<u8>, Error> {
    let mut len = [0u8; 4];
    reader.read_exact(&mut len)?;
    let mut chunk = vec![0; u32::from_be_bytes(len) as usize];
    reader.read_exact(&mut chunk)?;
    Ok(chunk)
}

fn write_owned(store: &Store, records: &[(u8, Vec<u8>, Vec<u8>)]) -> Result<(), Error> {
    let borrowed: Vec<Record<'_>> = records
        .iter()
        .map(|(tag, key, value)| Record {
            tag: *tag,
            key,
            value,
        })
        .collect();
    write_records(store, &borrowed)
}

/// The suffix of the directory a restore into `<dir>` stages its store in.
const RESTORING: &str = "restoring";
/// The suffix `<dir>` is renamed to while a restore moves the staged store in.
const REPLACED: &str = "replaced";

/// Moves a fully written staging directory into place. A crash leaves the old or the
/// new directory, never a mix: between the two renames `dir` is missing and
/// `<dir>.replaced` holds the old store, which [`recover_interrupted_restore`] (run by
/// [`Store::open`]) moves back.
fn install_staged(
    dir: &Path,
    staging: &Path,
    step: &mut impl FnMut(RestoreStep),
) -> Result<(), Error> {
    if dir.exists() {
        let old = sibling(dir, REPLACED);
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        std::fs::rename(dir, &old)?;
        sync_parent(dir)?;
        step(RestoreStep::OldMovedAside);
        std::fs::rename(staging, dir)?;
        sync_parent(dir)?;
        step(RestoreStep::NewMovedIn);
        std::fs::remove_dir_all(&old)?;
        step(RestoreStep::OldRemoved);
    } else {
        std::fs::rename(staging, dir)?;
        sync_parent(dir)?;
        step(RestoreStep::NewMovedIn);
    }
    Ok(())
}

/// Makes the renames in `dir`'s parent durable.
fn sync_parent(dir: &Path) -> Result<(), Error> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Undoes what a restore into `dir` that a crash interrupted left behind, before `dir` is
/// opened: a staged store that was not moved in yet is deleted (the old store stays),
/// and an old store moved aside is moved back if the staged one never took its place, or
/// deleted if it did.
pub(crate) fn recover_interrupted_restore(dir: &Path) -> Result<(), Error> {
    let old = sibling(dir, REPLACED);
    if old.exists() {
        if dir.exists() {
            std::fs::remove_dir_all(&old)?;
        } else {
            std::fs::rename(&old, dir)?;
            sync_parent(dir)?;
        }
    }
    let staging = sibling(dir, RESTORING);
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    Ok(())
}

impl Store {
    /// A consistent copy of the whole backend, taken between batches.
    pub fn snapshot_bytes(&self) -> Result<Vec<u8>, Error> {
        let snapshot = {
            // No batch is half-committed while we hold the writer lock.
            let _writer = self.writer.lock();
            self.db.snapshot()
        };
        let _open = self.metrics.open_read();
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
        let staging = sibling(dir, RESTORING);
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        {
            let store = Store::open(&staging, opts.clone())?;
            write_records(&store, &records)?;
            store.persist()?;
        }
        install_staged(dir, &staging, &mut |_| {})?;
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
mod streaming_tests {
    use super::*;
    use concord_proto::etcdserverpb::PutRequest;

    #[test]
    fn the_reader_streams_what_snapshot_bytes_holds_and_restores_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a"), StoreOptions::default()).unwrap();
        let mut batch = store.write_batch();
        for i in 0..100 {
            let put = PutRequest {
                key: format!("k{i}").into_bytes(),
                value: vec![7; 300],
                ..Default::default()
            };
            batch.put(&put).unwrap();
        }
        batch.set_applied_index(9);
        batch.commit().unwrap();
        let whole = store.snapshot_bytes().unwrap();
        let mut reader = store.snapshot_reader();
        // Writes after the reader was made are not in it.
        let mut later = store.write_batch();
        later
            .put(&PutRequest {
                key: b"later".to_vec(),
                ..Default::default()
            })
            .unwrap();
        later.commit().unwrap();
        let mut streamed = Vec::new();
        let mut small = [0u8; 97];
        loop {
            let n = reader.read(&mut small).unwrap();
            if n == 0 {
                break;
            }
            streamed.extend_from_slice(&small[..n]);
        }
        assert_eq!(streamed, whole);

        let file = dir.path().join("snap");
        std::fs::write(&file, &streamed).unwrap();
        let kept: Vec<MetaEntry> = vec![(b"id".to_vec(), b"me".to_vec())];
        let restored = Store::restore_keeping_from_file(
            &dir.path().join("b"),
            &file,
            StoreOptions::default(),
            &[("local", kept.as_slice())],
        )
        .unwrap();
        assert_eq!(restored.applied_index(), 9);
        assert_eq!(restored.current_revision(), store.current_revision() - 1);
        assert_eq!(
            restored.meta_get("local", b"id").unwrap(),
            Some(b"me".to_vec())
        );

        let mut damaged = streamed.clone();
        damaged[MAGIC.len() + 3] ^= 1;
        std::fs::write(&file, &damaged).unwrap();
        assert!(matches!(
            verify_snapshot_file(&file),
            Err(Error::InvalidSnapshot(_))
        ));
    }
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
        #![proptest_config(crate::proptest_config(256))]

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

/// A restore from a snapshot file stopped by a crash after any of its steps: what the
/// crash leaves on disk is taken at that moment (a copy of the directory, as a SIGKILL
/// would leave it), opened, and must hold the old store whole or the restored one whole,
/// with nothing of the restore's scaffolding left behind.
#[cfg(test)]
mod crash_tests {
    use super::*;
    use concord_proto::etcdserverpb::{PutRequest, RangeRequest};

    const OLD_KEYS: usize = 200;
    const NEW_KEYS: usize = 300;

    fn store_with(dir: &Path, prefix: &str, count: usize, applied: u64) -> Store {
        let store = Store::open(dir, StoreOptions::default()).unwrap();
        let mut batch = store.write_batch();
        for n in 0..count {
            batch
                .put(&PutRequest {
                    key: format!("{prefix}/{n:04}").into_bytes(),
                    value: vec![b'v'; 100],
                    ..Default::default()
                })
                .unwrap();
        }
        batch.set_applied_index(applied);
        batch.commit().unwrap();
        store.persist().unwrap();
        store
    }

    /// Every key the store holds, and its applied index.
    fn contents(store: &Store) -> (Vec<String>, u64) {
        let all = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        };
        let keys = store
            .range(&all)
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| String::from_utf8(kv.key).unwrap())
            .collect();
        (keys, store.applied_index())
    }

    fn expected(prefix: &str, count: usize, applied: u64) -> (Vec<String>, u64) {
        let keys = (0..count).map(|n| format!("{prefix}/{n:04}")).collect();
        (keys, applied)
    }

    /// Copies the tree under `from` to `to` as it is now. A file that goes away while it
    /// is copied is left out, as a crash at that instant may leave it.
    fn copy_tree(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        let Ok(entries) = std::fs::read_dir(from) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let target = to.join(entry.file_name());
            if kind.is_dir() {
                copy_tree(&entry.path(), &target);
            } else if let Err(error) = std::fs::copy(entry.path(), &target) {
                assert_eq!(error.kind(), std::io::ErrorKind::NotFound, "{error}");
            }
        }
    }

    /// Restores a snapshot of `NEW_KEYS` keys into `disk/db` (holding `OLD_KEYS` other
    /// keys first, if `replacing`), taking a crash image after every step but most
    /// single `kv` records; returns the steps in order and the images.
    fn restore_with_crash_images(
        root: &Path,
        replacing: bool,
    ) -> (Vec<RestoreStep>, Vec<(RestoreStep, PathBuf)>) {
        let source = store_with(&root.join("source"), "new", NEW_KEYS, 50);
        let file = root.join("snapshot");
        let mut out = std::fs::File::create(&file).unwrap();
        std::io::copy(&mut source.snapshot_reader(), &mut out).unwrap();
        drop(out);
        let disk = root.join("disk");
        std::fs::create_dir_all(&disk).unwrap();
        if replacing {
            drop(store_with(&disk.join("db"), "old", OLD_KEYS, 7));
        }
        let mut steps = Vec::new();
        let mut images = Vec::new();
        let kept: Vec<MetaEntry> = vec![(b"id".to_vec(), b"me".to_vec())];
        let restored = restore_from_file_in_steps(
            &disk.join("db"),
            &file,
            StoreOptions::default(),
            &[("local", kept.as_slice())],
            |step| {
                steps.push(step);
                let worth_an_image = match step {
                    RestoreStep::KvIngested(n) => n == 1 || n == NEW_KEYS / 2,
                    _ => true,
                };
                if worth_an_image {
                    let image = root.join(format!("image-{}", images.len()));
                    copy_tree(&disk, &image);
                    images.push((step, image));
                }
            },
        )
        .unwrap();
        assert_eq!(contents(&restored), expected("new", NEW_KEYS, 50));
        (steps, images)
    }

    fn position(steps: &[RestoreStep], step: RestoreStep) -> usize {
        steps
            .iter()
            .position(|s| *s == step)
            .unwrap_or_else(|| panic!("{step:?} never happened: {steps:?}"))
    }

    #[test]
    fn a_restore_over_a_store_stopped_after_any_step_leaves_the_old_or_the_new_whole() {
        let root = tempfile::tempdir().unwrap();
        let (steps, images) = restore_with_crash_images(root.path(), true);
        // Every step was reached, in this order.
        let order = [
            RestoreStep::Verified,
            RestoreStep::StagingOpened,
            RestoreStep::KvIngested(1),
            RestoreStep::KvIngested(NEW_KEYS),
            RestoreStep::KvFinished,
            RestoreStep::MetaBatchWritten,
            RestoreStep::StagingPersisted,
            RestoreStep::OldMovedAside,
            RestoreStep::NewMovedIn,
            RestoreStep::OldRemoved,
        ];
        let at: Vec<usize> = order.iter().map(|&s| position(&steps, s)).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
        let moved_in = position(&steps, RestoreStep::NewMovedIn);

        for (step, image) in &images {
            let db = image.join("db");
            let store = Store::open(&db, StoreOptions::default()).unwrap();
            let crashed_before_the_new_store_was_in = position(&steps, *step) < moved_in;
            if crashed_before_the_new_store_was_in {
                assert_eq!(
                    contents(&store),
                    expected("old", OLD_KEYS, 7),
                    "after {step:?}"
                );
                assert_eq!(store.meta_get("local", b"id").unwrap(), None);
            } else {
                assert_eq!(
                    contents(&store),
                    expected("new", NEW_KEYS, 50),
                    "after {step:?}"
                );
                assert_eq!(
                    store.meta_get("local", b"id").unwrap(),
                    Some(b"me".to_vec())
                );
            }
            assert!(!image.join("db.restoring").exists(), "after {step:?}");
            assert!(!image.join("db.replaced").exists(), "after {step:?}");
        }
    }

    /// The server restores into a fresh directory (its next store generation) and only
    /// ever opens one that exists: until the restored store is moved in, there is none.
    #[test]
    fn a_restore_into_a_fresh_directory_stopped_after_any_step_leaves_nothing_or_the_new_whole() {
        let root = tempfile::tempdir().unwrap();
        let (steps, images) = restore_with_crash_images(root.path(), false);
        assert!(!steps.contains(&RestoreStep::OldMovedAside), "{steps:?}");
        let moved_in = position(&steps, RestoreStep::NewMovedIn);
        for (step, image) in &images {
            let db = image.join("db");
            if position(&steps, *step) < moved_in {
                assert!(!db.exists(), "after {step:?}");
                recover_interrupted_restore(&db).unwrap();
                assert!(!db.exists(), "after {step:?}");
            } else {
                let store = Store::open(&db, StoreOptions::default()).unwrap();
                assert_eq!(
                    contents(&store),
                    expected("new", NEW_KEYS, 50),
                    "after {step:?}"
                );
            }
            assert!(!image.join("db.restoring").exists(), "after {step:?}");
        }
    }
}
