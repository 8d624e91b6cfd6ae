//! The store seen from outside its own format: a consistent [`StoreView`] that another
//! format (etcd's snapshot file) is written from, and an [`Importer`] that builds a fresh
//! store from such a file's records. Both go record by record: neither holds the store
//! in memory.

use std::path::Path;

use fjall::{Keyspace, Readable};

use crate::error::Error;
use crate::metrics::OpenRead;
use crate::revision::{Revision, decode_revision_key, encode_revision_key};
use crate::store::{
    META_APPLIED_INDEX, META_COMPACT_REV, META_CURRENT_REV, MetaEntry, NEVER_COMPACTED, Store,
    StoreOptions, meta_user_key, rev_to_u64,
};

/// Keys and values per fjall batch while importing, and their bytes: a batch is held in
/// memory until it commits.
const IMPORT_BATCH_RECORDS: usize = 10_000;
const IMPORT_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// The whole store as of one moment between batches: every stored revision with its
/// encoded `mvccpb.KeyValue`, the side tables and the counters. Taking it costs nothing
/// and never blocks the writer; holding it keeps the versions it sees on disk. `Send`.
pub struct StoreView {
    view: fjall::Snapshot,
    kv: Keyspace,
    meta: Keyspace,
    current_revision: i64,
    compact_revision: i64,
    applied_index: u64,
    _open: OpenRead,
}

impl std::fmt::Debug for StoreView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreView")
            .field("current_revision", &self.current_revision)
            .field("compact_revision", &self.compact_revision)
            .field("applied_index", &self.applied_index)
            .finish_non_exhaustive()
    }
}

impl StoreView {
    /// The newest revision the view holds.
    pub fn current_revision(&self) -> i64 {
        self.current_revision
    }

    /// The compact revision as etcd reports it: -1 when never compacted.
    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// The raft index the view's state was applied up to.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Every stored revision in revision order: `(revision, tombstone, encoded KeyValue)`
    /// (a tombstone's value carries only the key, as etcd stores it).
    pub fn revisions(&self) -> impl Iterator<Item = Result<(Revision, bool, Vec<u8>), Error>> + '_ {
        self.view.iter(&self.kv).map(|guard| {
            let (key, value) = guard.into_inner()?;
            let (rev, tombstone) = decode_revision_key(&key)
                .ok_or_else(|| Error::Corrupt(format!("bad revision key {key:?}")))?;
            Ok((rev, tombstone, value.to_vec()))
        })
    }

    /// Every entry of a side table, in key order. Side tables are small (leases,
    /// members, users, roles): read whole.
    pub fn side_table(&self, table: &str) -> Result<Vec<MetaEntry>, Error> {
        let prefix = meta_user_key(table, b"");
        let mut out = Vec::new();
        for guard in self.view.prefix(&self.meta, &prefix) {
            let (k, v) = guard.into_inner()?;
            out.push((
                k.get(prefix.len()..).unwrap_or_default().to_vec(),
                v.to_vec(),
            ));
        }
        Ok(out)
    }
}

impl Store {
    /// A [`StoreView`] of the store as it is now.
    pub fn view(&self) -> StoreView {
        // No batch is half-committed while we hold the writer lock, and the counters
        // read under it belong to the same moment as the fjall snapshot.
        let _writer = self.writer.lock();
        StoreView {
            view: self.db.snapshot(),
            kv: self.kv.clone(),
            meta: self.meta.clone(),
            current_revision: self.current_revision(),
            compact_revision: self.etcd_compact_revision(),
            applied_index: self.applied_index(),
            _open: self.metrics.open_read(),
        }
    }

    /// Starts building a fresh store in `dir` (which must not exist yet) from another
    /// format's records. See [`Importer`].
    pub fn import(dir: &Path, opts: StoreOptions) -> Result<Importer, Error> {
        if dir.exists() {
            return Err(Error::Corrupt(format!(
                "cannot import into {}: it already exists",
                dir.display()
            )));
        }
        Ok(Importer {
            store: Store::open(dir, opts)?,
            pending: Vec::new(),
            pending_bytes: 0,
            newest: 1,
        })
    }
}

/// Builds a store record by record; [`Importer::finish`] writes its counters and makes
/// it durable. Revisions may come in any order.
pub struct Importer {
    store: Store,
    /// `(is_kv, key, value)`.
    pending: Vec<(bool, Vec<u8>, Vec<u8>)>,
    pending_bytes: usize,
    newest: i64,
}

impl std::fmt::Debug for Importer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Importer")
            .field("newest", &self.newest)
            .finish_non_exhaustive()
    }
}

impl Importer {
    /// Adds one stored revision with its encoded `mvccpb.KeyValue`.
    pub fn revision(
        &mut self,
        rev: Revision,
        tombstone: bool,
        encoded: &[u8],
    ) -> Result<(), Error> {
        self.newest = self.newest.max(rev.main);
        self.push(true, encode_revision_key(rev, tombstone), encoded.to_vec())
    }

    /// Adds one side-table entry.
    pub fn side_entry(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.push(false, meta_user_key(table, key), value.to_vec())
    }

    fn push(&mut self, is_kv: bool, key: Vec<u8>, value: Vec<u8>) -> Result<(), Error> {
        self.pending_bytes += key.len() + value.len();
        self.pending.push((is_kv, key, value));
        if self.pending.len() >= IMPORT_BATCH_RECORDS || self.pending_bytes >= IMPORT_BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        let mut batch = self.store.db.batch();
        for (is_kv, key, value) in self.pending.drain(..) {
            let keyspace = if is_kv {
                &self.store.kv
            } else {
                &self.store.meta
            };
            batch.insert(keyspace, key, value);
        }
        batch.commit()?;
        self.pending_bytes = 0;
        Ok(())
    }

    /// Writes the counters (the current revision is at least the newest revision
    /// imported; `compact_revision` -1 for never compacted), `fsync`s and closes the
    /// store. Open it with [`Store::open`], which rebuilds the key index.
    pub fn finish(
        mut self,
        current_revision: i64,
        compact_revision: i64,
        applied_index: u64,
    ) -> Result<(), Error> {
        self.flush()?;
        let current = current_revision.max(self.newest).max(1);
        let mut batch = self.store.db.batch();
        batch.insert(
            &self.store.meta,
            META_CURRENT_REV,
            rev_to_u64(current).to_be_bytes(),
        );
        batch.insert(
            &self.store.meta,
            META_APPLIED_INDEX,
            applied_index.to_be_bytes(),
        );
        if compact_revision != NEVER_COMPACTED {
            batch.insert(
                &self.store.meta,
                META_COMPACT_REV,
                rev_to_u64(compact_revision).to_be_bytes(),
            );
        }
        batch.commit()?;
        self.store.persist()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};

    #[test]
    fn a_store_imported_from_a_view_reads_as_the_original() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("a"), StoreOptions::default()).expect("open");
        let mut batch = store.write_batch();
        for i in 0..50 {
            batch
                .put(&PutRequest {
                    key: format!("k{}", i % 7).into_bytes(),
                    value: format!("v{i}").into_bytes(),
                    ..Default::default()
                })
                .expect("put");
        }
        batch
            .delete_range(&DeleteRangeRequest {
                key: b"k3".to_vec(),
                ..Default::default()
            })
            .expect("delete");
        batch.meta_put("lease", b"\0\0\0\0\0\0\0\x05", b"ttl");
        batch.set_applied_index(12);
        batch.commit().expect("commit");
        store.compact(20).expect("compact");
        let view = store.view();
        // Later writes are not in the view.
        let mut later = store.write_batch();
        later
            .put(&PutRequest {
                key: b"later".to_vec(),
                ..Default::default()
            })
            .expect("put");
        later.commit().expect("commit");

        let copy_dir = dir.path().join("b");
        let mut import = Store::import(&copy_dir, StoreOptions::default()).expect("import");
        for record in view.revisions() {
            let (rev, tombstone, value) = record.expect("record");
            import.revision(rev, tombstone, &value).expect("revision");
        }
        for (key, value) in view.side_table("lease").expect("leases") {
            import.side_entry("lease", &key, &value).expect("lease");
        }
        import
            .finish(
                view.current_revision(),
                view.compact_revision(),
                view.applied_index(),
            )
            .expect("finish");
        let copy = Store::open(&copy_dir, StoreOptions::default()).expect("reopen");
        assert_eq!(copy.current_revision(), 52);
        assert_eq!(copy.etcd_compact_revision(), 20);
        assert_eq!(copy.applied_index(), 12);
        assert_eq!(copy.hash_kv(0).expect("hash"), {
            let (_, compact, _) = store.hash_kv(52).expect("hash at 52");
            (store.hash_kv(52).expect("hash").0, compact, 52)
        });
        let every = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision: 30,
            ..Default::default()
        };
        assert_eq!(
            copy.range(&every).expect("range").kvs,
            store.range(&every).expect("range").kvs
        );
        assert_eq!(
            copy.meta_get("lease", b"\0\0\0\0\0\0\0\x05")
                .expect("lease"),
            Some(b"ttl".to_vec())
        );
        assert!(Store::import(&copy_dir, StoreOptions::default()).is_err());
    }
}
