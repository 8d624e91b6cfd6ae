//! The store: the fjall backend, the shared key index, and the read side.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use concord_proto::etcdserverpb::{RangeRequest, RangeResponse};
use concord_proto::mvccpb::event::EventType;
use concord_proto::mvccpb::{Event, KeyValue};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};
use parking_lot::{Mutex, RwLock};

use crate::batch::WriteBatch;
use crate::error::Error;
use crate::key_index::{KeyIndex, KeyRange, Point};
use crate::metrics::StoreMetrics;
use crate::pace::CompactionPace;
use crate::read::{self, FetchKv, RangePlan};
use crate::revision::{
    Revision, decode_revision_key, encode_etcd_revision_key, encode_revision_key,
};
use crate::table_read::{self, TableReads};
use crate::write_behind::{SharedSizes, WriteBehind};

/// Keyspace of revision key → encoded `mvccpb.KeyValue`.
pub(crate) const KV_KEYSPACE: &str = "kv";
/// Keyspace of the store's own counters and the side tables ([`Store::meta_get`]).
pub(crate) const META_KEYSPACE: &str = "meta";

/// Internal meta keys start with this byte, side-table keys with [`META_USER`].
const META_INTERNAL: u8 = 0;
const META_USER: u8 = 1;
pub(crate) const META_APPLIED_INDEX: &[u8] = b"\0applied_index";
pub(crate) const META_CURRENT_REV: &[u8] = b"\0current_rev";
pub(crate) const META_COMPACT_REV: &[u8] = b"\0compact_rev";
/// The compact revision of a store never compacted (etcd's `compactMainRev` starts
/// there); the meta keyspace then has no compact revision at all.
pub(crate) const NEVER_COMPACTED: i64 = -1;

/// A side-table entry: `(key, value)`.
pub type MetaEntry = (Vec<u8>, Vec<u8>);

/// How to open a [`Store`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// fjall block cache, bytes. Values are not kept in memory; this cache is
    /// what makes repeated reads of hot keys cheap. Point reads cache a block
    /// they read from disk at its second recent miss, not its first (see
    /// `table_read`), so reads spread over more data than this do not churn
    /// it.
    pub cache_size_bytes: u64,
    /// Size at which the `kv` keyspace's memtable is flushed to disk. Revision
    /// keys only grow, so each flush becomes a table of its own. Reads of
    /// revisions already in tables skip the memtables (see
    /// `get_from_tables`). Smaller memtables use less memory, but fjall halts
    /// writers while 4 flushes are queued, and at 4 MiB the bench's puts fell
    /// from ~245k/s to ~140k/s on a busy machine; at 16 MiB they keep up.
    pub memtable_size_bytes: u64,
    /// `fsync` the journal on every commit. Off by default: the raft log is the
    /// source of truth and entries after the stored applied index are re-applied
    /// after a crash.
    pub sync_on_commit: bool,
    /// etcd's `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// What a defragment's compactions may write per second (see
    /// [`crate::DEFRAG_BYTES_PER_SEC`]); 0 leaves them unpaced.
    pub defrag_bytes_per_sec: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_size_bytes: 16 * 1024 * 1024,
            memtable_size_bytes: 16 * 1024 * 1024,
            sync_on_commit: false,
            max_txn_ops: 128,
            defrag_bytes_per_sec: crate::DEFRAG_BYTES_PER_SEC,
        }
    }
}

/// What readers need to agree on: the index and the revisions it is valid for.
/// Changed only under the write lock, together.
#[derive(Debug)]
pub(crate) struct IndexState {
    pub index: KeyIndex,
    /// Newest committed revision.
    pub current_rev: i64,
    /// Newest compaction; -1 when never compacted, as etcd's `compactMainRev`
    /// starts (so a first `Compact` at revision 0 succeeds, as etcd 3.4's does).
    pub compact_rev: i64,
}

/// etcd's MVCC key-value store on fjall. `Send + Sync`: reads through `&self`
/// run concurrently with the single writer ([`Store::write_batch`]).
pub struct Store {
    /// First, so that it is stopped (and lets go of its keyspace handles) before the
    /// database closes.
    pub(crate) write_behind: WriteBehind,
    /// The tables' size, kept by `write_behind`'s thread (see [`Store::db_size`]).
    sizes: Arc<SharedSizes>,
    pub(crate) dir: PathBuf,
    pub(crate) opts: StoreOptions,
    pub(crate) db: Database,
    pub(crate) kv: Keyspace,
    pub(crate) meta: Keyspace,
    pub(crate) state: RwLock<IndexState>,
    /// Mirrors of `state`'s revisions and the applied index for lock-free getters.
    pub(crate) current_rev: AtomicI64,
    pub(crate) compact_rev: AtomicI64,
    pub(crate) applied_index: AtomicU64,
    /// Held by the one open [`WriteBatch`].
    pub(crate) writer: Mutex<()>,
    pub(crate) poisoned: AtomicBool,
    /// Bytes (revision key + encoded value) of the revisions the store keeps: what a
    /// defragment would leave of the `kv` keyspace. Grows at each commit, shrinks by
    /// what a compaction removes (see [`Store::db_size_in_use`]).
    pub(crate) live_bytes: AtomicU64,
    /// Bytes of the side tables' entries (keys and values), kept as batches write them:
    /// the other part of the in-use size.
    pub(crate) meta_live_bytes: AtomicU64,
    /// Our own search structures over the `kv` tables (see `get_from_tables`).
    pub(crate) table_reads: TableReads,
    pub(crate) metrics: StoreMetrics,
    /// The rate a defragment's compactions keep to (see `pace`).
    pace: Arc<CompactionPace>,
    /// Held by the running defragment: one at a time, as etcd's.
    defragmenting: Mutex<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("current_rev", &self.current_revision())
            .field("compact_rev", &self.compact_revision())
            .field("applied_index", &self.applied_index())
            .finish_non_exhaustive()
    }
}

/// Reads committed revisions straight from the backend.
pub(crate) struct BackendFetch<'a>(pub &'a Store);

impl FetchKv for BackendFetch<'_> {
    fn fetch(&self, rev: Revision) -> Result<Option<KeyValue>, Error> {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&rev.main.to_be_bytes());
        key[8..].copy_from_slice(&rev.sub.to_be_bytes());
        if let Some(bytes) = get_from_tables(self.0, &key)? {
            return read::decode_kv(&bytes).map(Some);
        }
        match self.0.kv.get(key)? {
            Some(bytes) => read::decode_kv(&bytes).map(Some),
            None => Ok(None),
        }
    }
}

/// Looks `key` up in the keyspace's on-disk tables only, skipping its
/// memtables; `None` when no table has a live value for it (the caller then
/// asks fjall, which searches everything).
///
/// Why skipping the memtables is sound here: a revision key is written once,
/// with the value that revision will always have (revisions are never reused;
/// a crash re-applies the same log entries and so rewrites the same bytes; a
/// snapshot restore builds a new store). So any copy of the key's value is the
/// right one. The only newer thing a memtable can hold for an old revision key
/// is a compaction's removal, and a read that found the revision in the key
/// index before that compaction committed may still return its value (that is
/// what it would have read a moment earlier; later reads no longer find the
/// revision in the index).
///
/// Why it is worth it: fjall's point read searches the active and sealed
/// memtables first, and revisions that are not in a memtable (all but the
/// newest few megabytes of writes) never are: about 2,000 of the ~12,000
/// instructions of a cached read, and a walk through a cold skip list.
///
/// The search itself is [`TableReads::get`]'s (integer compares instead of
/// the engine's byte-string index search; see `table_read`).
fn get_from_tables(store: &Store, key: &[u8; 16]) -> Result<Option<fjall::Slice>, Error> {
    store.table_reads.get(&store.kv, key)
}

/// How many times a read restarts because a compaction removed a revision
/// between reading the index and reading the backend.
const READ_ATTEMPTS: usize = 8;

impl Store {
    /// Opens (or creates) the store in `dir` and rebuilds the key index from the
    /// backend. Finishes a compaction that was interrupted by a crash, and cleans up
    /// after a snapshot restore into `dir` that a crash interrupted (the old store or
    /// the restored one is kept whole, never a mix; see [`Store::restore`]).
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store, Error> {
        crate::snapshot::recover_interrupted_restore(dir)?;
        let pace = Arc::new(CompactionPace::default());
        let factory = pace.filter_factory();
        let db = Database::builder(dir)
            .cache_size(opts.cache_size_bytes)
            .with_compaction_filter_factories(Arc::new(move |_keyspace| Some(factory.clone())))
            .open()?;
        let memtable = opts.memtable_size_bytes;
        let kv = db.keyspace(KV_KEYSPACE, || kv_keyspace_options(memtable))?;
        let meta = db.keyspace(META_KEYSPACE, KeyspaceCreateOptions::default)?;

        let applied_index = read_u64(&meta, META_APPLIED_INDEX)?.unwrap_or(0);
        let stored_current = read_u64(&meta, META_CURRENT_REV)?.map_or(0, u64_to_rev);
        let compact_rev = read_u64(&meta, META_COMPACT_REV)?.map_or(NEVER_COMPACTED, u64_to_rev);

        let mut meta_live_bytes = 0u64;
        for guard in meta.iter() {
            let (key, value) = guard.into_inner()?;
            meta_live_bytes += (key.len() + value.len()) as u64;
        }
        let mut index = KeyIndex::default();
        let mut newest = 0i64;
        let mut live_bytes = 0u64;
        for guard in kv.iter() {
            let (key, value) = guard.into_inner()?;
            live_bytes += (key.len() + value.len()) as u64;
            let (rev, tombstone) = decode_revision_key(&key)
                .ok_or_else(|| Error::Corrupt(format!("bad revision key {key:?}")))?;
            let kv = read::decode_kv(&value)?;
            let sub = u32::try_from(rev.sub)
                .map_err(|_| Error::Corrupt(format!("sub revision {} out of range", rev.sub)))?;
            index.record(
                &kv.key,
                Point {
                    main: rev.main,
                    created_main: if tombstone { 0 } else { kv.create_revision },
                    version: if tombstone { 0 } else { kv.version },
                    sub,
                    tombstone,
                },
            );
            newest = newest.max(rev.main);
        }
        index.repack();
        // A crash between a compaction's commit and the removal of the history
        // it dropped leaves that history behind: remove it now.
        let mut dead = Vec::new();
        if compact_rev > 0 {
            index.compact(compact_rev, &mut dead);
        }
        if !dead.is_empty() {
            let mut batch = db.batch();
            let keys = sorted_revision_keys(&dead);
            live_bytes = live_bytes.saturating_sub(stored_bytes_of_sorted(&kv, &keys)?);
            for key in keys {
                batch.remove(&kv, key);
            }
            batch.commit()?;
        }
        // etcd's empty store is at revision 1, so its first write is revision 2.
        let current_rev = stored_current.max(newest).max(compact_rev).max(1);
        let table_reads = TableReads::new(opts.cache_size_bytes);
        let metrics = StoreMetrics::new();
        metrics.keys.set(index.live_key_count() as f64);
        let sizes = Arc::new(SharedSizes::default());
        sizes.refresh(&kv, &meta);
        let write_behind = WriteBehind::start(dir, kv.clone(), meta.clone(), sizes.clone())?;
        Ok(Store {
            write_behind,
            sizes,
            dir: dir.to_path_buf(),
            opts,
            db,
            kv,
            meta,
            state: RwLock::new(IndexState {
                index,
                current_rev,
                compact_rev,
            }),
            current_rev: AtomicI64::new(current_rev),
            compact_rev: AtomicI64::new(compact_rev),
            applied_index: AtomicU64::new(applied_index),
            writer: Mutex::new(()),
            poisoned: AtomicBool::new(false),
            live_bytes: AtomicU64::new(live_bytes),
            meta_live_bytes: AtomicU64::new(meta_live_bytes),
            table_reads,
            metrics,
            pace,
            defragmenting: Mutex::new(()),
        })
    }

    /// The raft index stored with the last committed batch (0 for a new store).
    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::Acquire)
    }

    /// The newest committed revision: 1 for a new store, so the first write is
    /// revision 2, as in etcd.
    pub fn current_revision(&self) -> i64 {
        self.current_rev.load(Ordering::Acquire)
    }

    /// The newest compaction revision (0: never compacted, or compacted at 0).
    pub fn compact_revision(&self) -> i64 {
        self.compact_rev.load(Ordering::Acquire).max(0)
    }

    /// The newest compaction revision as etcd reports it in `HashKV`: -1 when the
    /// store was never compacted.
    pub fn etcd_compact_revision(&self) -> i64 {
        self.compact_rev.load(Ordering::Acquire)
    }

    /// Number of keys with retained history (live or deleted but not compacted).
    pub fn indexed_keys(&self) -> usize {
        self.state.read().index.key_count()
    }

    /// Heap bytes of the in-memory key index (keys included), for metrics.
    /// Walks the index: not for hot paths.
    pub fn index_heap_bytes(&self) -> usize {
        self.state.read().index.heap_bytes()
    }

    /// etcd's Range over committed data. The response's `header` is
    /// `Some(ResponseHeader { revision: current, ..Default::default() })`: the
    /// server fills in the other fields.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, Error> {
        self.metrics.record_read();
        if read::is_plain_point_get(req) {
            return self.point_get(req);
        }
        let plan = RangePlan::new(req)?;
        let fetch = BackendFetch(self);
        for _ in 0..READ_ATTEMPTS {
            let (current, collected) = {
                let state = self.state.read();
                let rev = read::read_revision(req.revision, state.current_rev, state.compact_rev)?;
                (
                    state.current_rev,
                    read::collect(&state.index, req, &plan, rev),
                )
            };
            if let Some(kvs) = read::fetch_all(&fetch, &collected.revisions)? {
                return Ok(read::finish(req, &plan, kvs, collected.count, current));
            }
        }
        Err(Error::Corrupt(
            "a revision listed by the key index is missing from the backend".into(),
        ))
    }

    /// [`Store::range`] of one key without sorting or filters: the common get,
    /// answered without the general path's lists, sorting and limits.
    fn point_get(&self, req: &RangeRequest) -> Result<RangeResponse, Error> {
        let fetch = BackendFetch(self);
        for _ in 0..READ_ATTEMPTS {
            let (current, found) = {
                let state = self.state.read();
                let rev = read::read_revision(req.revision, state.current_rev, state.compact_rev)?;
                let found = if req.count_only {
                    state.index.visible(&req.key, rev).map(|p| (p, true))
                } else {
                    // The record fetched below carries its key, which confirms
                    // the lookup more cheaply than the index's copy of the key.
                    state.index.visible_unconfirmed(&req.key, rev)
                };
                (state.current_rev, found)
            };
            let Some((point, confirmed)) = found else {
                return Ok(read::point_response(None, 0, current));
            };
            if req.count_only {
                return Ok(read::point_response(None, 1, current));
            }
            if let Some(mut kv) = fetch.fetch(point.revision())? {
                if !confirmed && kv.key != req.key {
                    // Another key with the same tag: `req.key` is not in the index.
                    return Ok(read::point_response(None, 0, current));
                }
                if req.keys_only {
                    kv.value = Vec::new();
                }
                return Ok(read::point_response(Some(kv), 1, current));
            }
        }
        Err(Error::Corrupt(
            "a revision listed by the key index is missing from the backend".into(),
        ))
    }

    /// Starts the apply round's write batch. Blocks while another batch is open
    /// (there is one writer). The batch is `!Send`: use it on one thread. Do not
    /// call [`Store::compact`] or [`Store::snapshot_bytes`] on the thread that
    /// holds a batch: they wait for the writer lock (use
    /// [`WriteBatch::compact`] instead).
    pub fn write_batch(&self) -> WriteBatch<'_> {
        WriteBatch::new(self)
    }

    /// Compacts in a batch of its own. See [`WriteBatch::compact`].
    pub fn compact(&self, rev: i64) -> Result<(), Error> {
        let mut batch = self.write_batch();
        batch.compact(rev)?;
        batch.commit()
    }

    /// etcd's HashKV: a CRC-32C (Castagnoli) over `"key"` and then every stored
    /// revision key (in etcd's 17-byte form) and value up to `rev` (0: current),
    /// skipping history a compaction at `rev` would drop below the compaction point.
    /// Returns `(hash, compact_revision, hash_revision)`, the compact revision -1
    /// when the store was never compacted, as etcd reports it.
    pub fn hash_kv(&self, rev: i64) -> Result<(u32, i64, i64), Error> {
        let (snapshot, keep, compact, rev) = {
            let state = self.state.read();
            let (current, compact) = (state.current_rev, state.compact_rev);
            if rev > 0 && rev <= compact {
                return Err(Error::Compacted);
            }
            if rev > current {
                return Err(Error::FutureRevision);
            }
            let rev = if rev <= 0 { current } else { rev };
            (self.db.snapshot(), state.index.keep_set(rev), compact, rev)
        };
        let _open = self.metrics.open_read();
        let upper = encode_revision_key(Revision::new(rev.saturating_add(1), 0), false);
        let mut crc = crc32c::crc32c(b"key");
        for guard in snapshot.range(&self.kv, ..upper) {
            let (key, value) = guard.into_inner()?;
            let (kr, tombstone) = decode_revision_key(&key)
                .ok_or_else(|| Error::Corrupt(format!("bad revision key {key:?}")))?;
            if kr.main <= compact && !keep.is_empty() && !keep.contains(&kr) {
                continue;
            }
            // etcd hashes its own key bucket's keys: hashing the same bytes makes
            // the hash comparable with etcd's (and a snapshot restored from etcd
            // hashes as etcd's member did).
            crc = crc32c::crc32c_append(crc, &encode_etcd_revision_key(kr, tombstone));
            crc = crc32c::crc32c_append(crc, &value);
        }
        Ok((crc, compact, rev))
    }

    /// History for watchers: the events with `start_rev <= mod_revision < end_rev`
    /// (`end_rev <= 0`: up to the current revision) on keys in `[key, range_end)`
    /// (etcd conventions: empty `range_end` is the single key, `"\0"` every key
    /// from `key` on), in revision order, covering at most `limit` revisions that
    /// have matching events (`0`: no limit). Returns the events and the next
    /// revision to read. With `with_prev_kv`, each event carries the key's
    /// previous value when it is still retained.
    ///
    /// `Err(Compacted)` if `start_rev <= compact_revision()` (`start_rev < 1`
    /// counts as 1). DELETE events carry `kv = { key, mod_revision }` only, as
    /// etcd's do. Reads committed data only and never blocks the writer.
    pub fn events(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_rev: i64,
        end_rev: i64,
        limit: usize,
        with_prev_kv: bool,
    ) -> Result<(Vec<Event>, i64), Error> {
        // Revision 0 is before the first write: history starts at 1.
        let start_rev = start_rev.max(1);
        if start_rev <= self.compact_revision() {
            return Err(Error::Compacted);
        }
        let current = self.current_revision();
        let end = if end_rev <= 0 || end_rev > current + 1 {
            current + 1
        } else {
            end_rev
        };
        if start_rev >= end {
            return Ok((Vec::new(), start_rev.max(end)));
        }
        let range = KeyRange::new(key, range_end);
        let lower = encode_revision_key(Revision::new(start_rev, 0), false);
        let upper = encode_revision_key(Revision::new(end, 0), false);
        let mut events = Vec::new();
        let mut revisions_seen = 0usize;
        let mut last_main = 0i64;
        let mut next = end;
        for guard in self.kv.range(lower..upper) {
            let (rkey, value) = guard.into_inner()?;
            let (rev, tombstone) = decode_revision_key(&rkey)
                .ok_or_else(|| Error::Corrupt(format!("bad revision key {rkey:?}")))?;
            let mut kv = read::decode_kv(&value)?;
            if !range.contains(&kv.key) {
                continue;
            }
            if rev.main != last_main {
                if limit > 0 && revisions_seen == limit {
                    next = rev.main;
                    break;
                }
                revisions_seen += 1;
                last_main = rev.main;
            }
            let prev_kv = if with_prev_kv {
                self.get_at(&kv.key, rev.main - 1)?
            } else {
                None
            };
            let kind = if tombstone {
                kv = KeyValue {
                    key: kv.key,
                    mod_revision: rev.main,
                    ..Default::default()
                };
                EventType::Delete
            } else {
                EventType::Put
            };
            events.push(Event {
                r#type: kind as i32,
                kv: Some(kv),
                prev_kv,
            });
        }
        // A compaction that ran during the scan may have removed events we
        // needed; report it rather than a silently incomplete history.
        if start_rev <= self.compact_revision() {
            return Err(Error::Compacted);
        }
        Ok((events, next))
    }

    /// The value of `key` at `rev`, `None` if absent or no longer retained.
    fn get_at(&self, key: &[u8], rev: i64) -> Result<Option<KeyValue>, Error> {
        let point = {
            let state = self.state.read();
            if rev < state.compact_rev || rev <= 0 {
                return Ok(None);
            }
            state.index.visible(key, rev)
        };
        match point {
            Some(p) => BackendFetch(self).fetch(p.revision()),
            None => Ok(None),
        }
    }

    /// Reads a side-table entry written with [`WriteBatch::meta_put`].
    pub fn meta_get(&self, keyspace: &str, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .meta
            .get(meta_user_key(keyspace, key))?
            .map(|v| v.to_vec()))
    }

    /// Every entry of a side table, in key order.
    pub fn meta_scan(&self, keyspace: &str) -> Result<Vec<MetaEntry>, Error> {
        let prefix = meta_user_key(keyspace, b"");
        let mut out = Vec::new();
        for guard in self.meta.prefix(&prefix) {
            let (k, v) = guard.into_inner()?;
            let user_key = k.get(prefix.len()..).unwrap_or_default().to_vec();
            out.push((user_key, v.to_vec()));
        }
        Ok(out)
    }

    /// The store's size as etcd's quota and `Status.dbSize` count a bolt file: the
    /// bytes of its tables on disk, plus the writes not yet flushed to a table (held
    /// in memtables, and on disk only in the journal). In memory, so cheap enough to
    /// ask on every write.
    ///
    /// The journal itself is not counted: it is the store's write-ahead log, like
    /// etcd's `member/wal` (which etcd does not count either), and its part already in
    /// tables is dead weight fjall recycles when the journal rotates (at 64 MB). So
    /// after [`Store::defragment`] the size is that of the live data, as a
    /// defragmented bolt file's is. [`Store::files_size`] is the size of every file.
    ///
    /// Never waits: the tables' part is the size the store's background thread read
    /// at most a few milliseconds ago (fjall's own answer waits while a flush or
    /// compaction installs its tables, which held puts' quota checks for up to 28 ms;
    /// see `write_behind`), and exact again after [`Store::defragment`].
    pub fn db_size(&self) -> Result<u64, Error> {
        Ok(self.sizes.tables.load(Ordering::Acquire) + self.db.write_buffer_size())
    }

    /// The part of [`Store::db_size`] in use (etcd's `dbSizeInUse`, the bolt file minus
    /// its free pages): the revisions the store keeps (keys and values, as stored) and
    /// its side tables, without what compactions and overwrites left behind for a
    /// defragment to reclaim. Never more than the db size.
    pub fn db_size_in_use(&self) -> u64 {
        let live =
            self.live_bytes.load(Ordering::Acquire) + self.meta_live_bytes.load(Ordering::Acquire);
        live.min(self.db_size().unwrap_or(u64::MAX))
    }

    /// Bytes of everything in the store's directory, the journal included (what `du`
    /// says). The journal is preallocated sparse, so its unwritten tail counts nothing.
    pub fn files_size(&self) -> Result<u64, Error> {
        Ok(allocated_bytes(&self.dir)?)
    }

    /// etcd's Defragment, without its pause: flushes the memtables, then rewrites every
    /// table of both keyspaces in one major compaction, which drops the versions that
    /// compactions and overwrites left behind (and the journals the flush made
    /// obsolete), so the files on disk shrink to the live data. Readers and the writer
    /// go on meanwhile: fjall compacts beside them and swaps the tables in when done;
    /// only versions an open [`crate::StoreView`] still sees are kept. Blocks the caller
    /// until done. (The store keeps no blob files, so there is no blob garbage to
    /// collect.)
    pub fn defragment(&self) -> Result<(), Error> {
        let _one_at_a_time = self.defragmenting.lock();
        if self.pace.is_stopping() {
            return Err(Error::Stopped);
        }
        let _inflight = self.metrics.defragmenting();
        let _paced = self.pace.paced(self.opts.defrag_bytes_per_sec);
        self.write_behind.wake();
        let started = std::time::Instant::now();
        for keyspace in [&self.kv, &self.meta] {
            keyspace.rotate_memtable_and_wait()?;
            keyspace.major_compact().map_err(|error| {
                if self.pace.is_stopping() {
                    Error::Stopped
                } else {
                    error.into()
                }
            })?;
        }
        self.table_reads.release_replaced_tables(&self.kv);
        // Exact now, not at the background thread's next look.
        self.sizes.refresh(&self.kv, &self.meta);
        self.metrics.defrag_seconds.record(started.elapsed());
        Ok(())
    }

    /// For a member that is stopping: a running defragment gives up at its compaction's
    /// next charge of the pace (every 64 KiB it writes; an unpaced one, as offline, runs
    /// on) and answers [`Error::Stopped`], as does every later one, instead of holding
    /// up the member's exit for the seconds it takes. The store is as it was before that
    /// defragment.
    pub fn stop_defragments(&self) {
        self.pace.stop();
    }

    /// `fsync`s the journal: everything committed so far survives power loss.
    pub fn persist(&self) -> Result<(), Error> {
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    /// How many tables of the `kv` keyspace each LSM level holds, top level
    /// first (empty if fjall keeps it otherwise): what a point read may
    /// search, for benchmarks and diagnostics.
    pub fn kv_tables_per_level(&self) -> Vec<usize> {
        table_read::tables_per_level(&self.kv)
    }

    /// Test-only, for the corruption checks' tests (never called by the server):
    /// overwrites the value stored at `key`'s newest revision in place, keeping its
    /// revision, version and every other revision, which no write through the store
    /// can do, then syncs. Returns the revision rewritten, `None` if `key` has no live
    /// revision. Open the store with no member running on it.
    #[doc(hidden)]
    pub fn overwrite_value_in_place_for_tests(
        &self,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<i64>, Error> {
        use prost::Message as _;
        let _writer = self.writer.lock();
        for guard in self.kv.iter().rev() {
            let (stored_key, stored) = guard.into_inner()?;
            let Some((rev, false)) = decode_revision_key(&stored_key) else {
                continue;
            };
            let mut kv = read::decode_kv(&stored)?;
            if kv.key != key {
                continue;
            }
            kv.value = value.to_vec();
            self.kv.insert(stored_key, kv.encode_to_vec())?;
            self.persist()?;
            return Ok(Some(rev.main));
        }
        Ok(None)
    }

    /// Deletes the directory of a store that is not open, with what a store keeps
    /// beside it (`<dir>.freeing`, see `write_behind`; an open store removes it when
    /// dropped, a crashed one may have left it).
    pub fn remove_dir(dir: &Path) -> std::io::Result<()> {
        let freeing = crate::write_behind::freeing_dir(dir);
        if freeing.exists() {
            std::fs::remove_dir_all(&freeing)?;
        }
        std::fs::remove_dir_all(dir)
    }

    /// The store directory whose second names (`<dir>.freeing`) the directory at `path`
    /// holds, if it is one.
    pub fn freeing_owner(path: &Path) -> Option<PathBuf> {
        crate::write_behind::freeing_owner(path)
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// How the `kv` keyspace is laid out. fjall stores these with the keyspace when
/// it is created; a store created with other options keeps those.
///
/// Tuned for point reads of revisions the key index knows exist (profiled with
/// 1,000,000 keys of 256-byte values, see `benches/store.rs`):
/// - no filter in the last level: a read never looks for a revision that is
///   not there (tables keep the filters they were flushed with, which still
///   let reads skip tables of compaction tombstones spanning old revisions);
/// - a restart point at every entry and a hash index of 8 buckets per entry,
///   so a read jumps to its entry instead of scanning up to 16 entries and
///   decoding each (about 2,000 of ~14,000 instructions per read saved; the
///   tables cost a little more to write);
/// - 4 KiB blocks: a read that misses the block cache pays a `pread` (a copy
///   out of the page cache, from memory rather than CPU caches when reads are
///   random) and an xxh3-128 checksum of the whole block (~4,600 instructions
///   for 8 KiB here), both in proportion to the block size; bigger blocks
///   only save block loads to reads that walk neighbouring revisions. The
///   block index no longer weighs in (point reads search their own, see
///   `table_read`). Medians over 11 alternating runs on a busy machine, gets
///   per CPU-second: random ~189k (4 KiB) vs ~172k (8 KiB), key order ~1.53M
///   vs ~1.62M; 2 KiB was no better than 4 KiB for random gets and worse in
///   key order; 16 KiB lost random reads (~125k, when the engine's own index
///   search was still in use);
/// - no compression: values are small and often already compact (the bench's
///   are random bytes), and a cached block is read without inflating it.
fn kv_keyspace_options(memtable_size_bytes: u64) -> KeyspaceCreateOptions {
    use fjall::config::{
        BlockSizePolicy, CompressionPolicy, HashRatioPolicy, RestartIntervalPolicy,
    };
    KeyspaceCreateOptions::default()
        .max_memtable_size(memtable_size_bytes)
        .expect_point_read_hits(true)
        .data_block_restart_interval_policy(RestartIntervalPolicy::all(1))
        .data_block_hash_ratio_policy(HashRatioPolicy::all(8.0))
        .data_block_size_policy(BlockSizePolicy::all(4 * 1024))
        .data_block_compression_policy(CompressionPolicy::disabled())
}

/// The `meta` keyspace key of a side-table entry: `1, len(table) as u16 BE,
/// table, key`.
pub(crate) fn meta_user_key(keyspace: &str, key: &[u8]) -> Vec<u8> {
    let table = keyspace.as_bytes();
    let table = table.get(..usize::from(u16::MAX)).unwrap_or(table);
    let len = u16::try_from(table.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(3 + table.len() + key.len());
    out.push(META_USER);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(table);
    out.extend_from_slice(key);
    out
}

fn read_u64(meta: &Keyspace, key: &[u8]) -> Result<Option<u64>, Error> {
    debug_assert_eq!(key.first(), Some(&META_INTERNAL));
    match meta.get(key)? {
        None => Ok(None),
        Some(v) => {
            let bytes: [u8; 8] = v
                .as_ref()
                .try_into()
                .map_err(|_| Error::Corrupt(format!("meta value of {key:?} is not 8 bytes")))?;
            Ok(Some(u64::from_be_bytes(bytes)))
        }
    }
}

pub(crate) fn u64_to_rev(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn rev_to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Bytes allocated on disk for every file below `dir`.
/// Bytes a stored `kv` entry occupies (key and value), 0 if it is not there.
pub(crate) fn stored_bytes(kv: &Keyspace, key: &[u8]) -> Result<u64, Error> {
    Ok(kv
        .size_of(key)?
        .map_or(0, |value| (key.len() as u64) + u64::from(value)))
}

/// The backend keys of `revisions`, in key (revision) order.
pub(crate) fn sorted_revision_keys(revisions: &[(Revision, bool)]) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = revisions
        .iter()
        .map(|&(rev, tombstone)| encode_revision_key(rev, tombstone))
        .collect();
    keys.sort_unstable();
    keys
}

/// What the stored `keys` (sorted; absent ones weigh nothing) weigh, key and value:
/// one forward scan from the first to the last, stepping through the wanted keys as
/// it goes, rather than a point read (a search of every level) for each.
pub(crate) fn stored_bytes_of_sorted(kv: &Keyspace, keys: &[Vec<u8>]) -> Result<u64, Error> {
    let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
        return Ok(0);
    };
    let mut wanted = keys.iter().peekable();
    let mut total = 0u64;
    for guard in kv.range(first.as_slice()..=last.as_slice()) {
        let (key, value) = guard.into_inner()?;
        while wanted.next_if(|w| w.as_slice() < &*key).is_some() {}
        if wanted.next_if(|w| w.as_slice() == &*key).is_some() {
            total += (key.len() + value.len()) as u64;
        }
        if wanted.peek().is_none() {
            break;
        }
    }
    Ok(total)
}

fn allocated_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current)? {
            let entry = entry?;
            let metadata = entry.metadata()?;
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                total += metadata.blocks() * 512;
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_proto::etcdserverpb::{DeleteRangeRequest, PutRequest};

    fn put(batch: &mut WriteBatch<'_>, key: &[u8], value: &[u8]) {
        batch
            .put(&PutRequest {
                key: key.to_vec(),
                value: value.to_vec(),
                ..Default::default()
            })
            .expect("put");
    }

    fn get(store: &Store, key: &[u8], revision: i64, count_only: bool) -> (Vec<KeyValue>, i64) {
        let resp = store
            .range(&RangeRequest {
                key: key.to_vec(),
                revision,
                count_only,
                ..Default::default()
            })
            .expect("range");
        (resp.kvs, resp.count)
    }

    #[test]
    fn compaction_frees_exactly_the_removed_revisions_bytes() {
        // The in-use size after a compaction is what a fresh open counts by scanning
        // every stored revision: the scan over the removed span added up the same bytes
        // the point reads did, tombstones and skipped live revisions included.
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = StoreOptions {
            memtable_size_bytes: 64 * 1024,
            ..StoreOptions::default()
        };
        let store = Store::open(dir.path(), opts.clone()).expect("open");
        for round in 0..40u8 {
            let mut batch = store.write_batch();
            for key in 0..50u8 {
                put(
                    &mut batch,
                    &[b'k', key],
                    &vec![round; 100 + usize::from(key)],
                );
            }
            if round % 7 == 0 {
                batch
                    .delete_range(&DeleteRangeRequest {
                        key: vec![b'k', round],
                        ..Default::default()
                    })
                    .expect("delete");
            }
            batch.commit().expect("commit");
        }
        let middle = store.current_revision() / 2;
        store.compact(middle).expect("compact");
        store
            .compact(store.current_revision() - 3)
            .expect("compact");
        let live = store.live_bytes.load(Ordering::Acquire);
        drop(store);
        let reopened = Store::open(dir.path(), opts).expect("reopen");
        assert_eq!(live, reopened.live_bytes.load(Ordering::Acquire));
    }

    /// 2,000 keys of 500 bytes written four times, the history compacted: three
    /// quarters of what the store holds is for a defragment to drop.
    fn write_garbage_for_a_defragment(store: &Store) {
        for round in 0..4u8 {
            let mut batch = store.write_batch();
            for key in 0..2000u16 {
                put(&mut batch, &key.to_be_bytes(), &[round; 500]);
            }
            batch.commit().expect("commit");
        }
        store.compact(store.current_revision()).expect("compact");
    }

    #[test]
    fn a_defragment_paces_its_compactions_and_only_it_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = StoreOptions {
            memtable_size_bytes: 256 * 1024,
            // Fast enough not to slow the test; any rate charges the same bytes.
            defrag_bytes_per_sec: 1 << 30,
            ..StoreOptions::default()
        };
        let store = Store::open(dir.path(), opts).expect("open");
        write_garbage_for_a_defragment(&store);
        // The flushes above started fjall's own compactions: none of them was paced.
        assert_eq!(store.pace.charged(), 0);
        store.defragment().expect("defragment");
        // The defragment rewrote the live revisions through the pacing filter (less what
        // each of its two compactions left uncharged at its end; more where fjall's
        // collection watermark still kept overwritten versions).
        let live = store.live_bytes.load(Ordering::Acquire);
        assert!(live > 1024 * 1024, "{live}");
        let charged = store.pace.charged();
        assert!(
            charged + 2 * 64 * 1024 >= live,
            "charged {charged} of {live}"
        );
        // And writes after it are not paced.
        let mut batch = store.write_batch();
        put(&mut batch, b"after", b"v");
        batch.commit().expect("commit");
        store.kv.rotate_memtable_and_wait().expect("flush");
        assert_eq!(store.pace.charged(), charged);
    }

    #[test]
    fn a_stopped_defragment_gives_up_and_leaves_the_store_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = StoreOptions {
            memtable_size_bytes: 256 * 1024,
            // So slow that the defragment would run for minutes unless it gives up.
            defrag_bytes_per_sec: 16 * 1024,
            ..StoreOptions::default()
        };
        let store = Arc::new(Store::open(dir.path(), opts.clone()).expect("open"));
        write_garbage_for_a_defragment(&store);
        let before = store.hash_kv(0).expect("hash");
        let defragment = std::thread::spawn({
            let store = store.clone();
            move || store.defragment()
        });
        // Stop once the defragment's compaction is under way (it has charged its rate).
        while store.pace.charged() == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        store.stop_defragments();
        let outcome = defragment.join().expect("the defragment panicked");
        assert!(matches!(outcome, Err(Error::Stopped)), "{outcome:?}");
        assert!(matches!(store.defragment(), Err(Error::Stopped)));
        // Nothing was lost, now or after a reopen; a defragment then runs whole.
        assert_eq!(store.hash_kv(0).expect("hash"), before);
        let mut batch = store.write_batch();
        put(&mut batch, b"after", b"v");
        batch.commit().expect("the store still takes writes");
        let after = store.hash_kv(0).expect("hash");
        drop(store);
        let reopened = Store::open(
            dir.path(),
            StoreOptions {
                defrag_bytes_per_sec: 0,
                ..opts
            },
        )
        .expect("reopen");
        assert_eq!(reopened.hash_kv(0).expect("hash"), after);
        reopened.defragment().expect("defragment");
        assert_eq!(reopened.hash_kv(0).expect("hash"), after);
    }

    #[test]
    fn point_gets_tell_apart_keys_whose_index_tags_collide() {
        // Point gets may take the index entry of the only key in a chunk with
        // the requested key's tag and confirm the key from the fetched record:
        // a colliding key that is absent must read as absent.
        let mut seen = std::collections::HashMap::new();
        let (present, absent) = (0u32..)
            .map(|i| format!("key{i}").into_bytes())
            .find_map(|k| {
                seen.insert(crate::key_map::key_tag(&k), k.clone())
                    .map(|other| (other, k))
            })
            .expect("a tag collision");
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
        let mut batch = store.write_batch();
        put(&mut batch, &present, b"v1");
        batch.commit().expect("commit");
        for count_only in [false, true] {
            assert_eq!(get(&store, &absent, 0, count_only), (vec![], 0));
            assert_eq!(get(&store, &present, 0, count_only).1, 1);
        }
        assert_eq!(get(&store, &present, 0, false).0[0].value, b"v1");

        let mut batch = store.write_batch();
        put(&mut batch, &absent, b"v2");
        batch.commit().expect("commit");
        assert_eq!(get(&store, &absent, 0, false).0[0].value, b"v2");
        assert_eq!(get(&store, &present, 0, false).0[0].value, b"v1");
        // At revision 2 only `present` existed.
        assert_eq!(get(&store, &absent, 2, false), (vec![], 0));
        assert_eq!(get(&store, &present, 2, false).0[0].key, present);
    }

    #[test]
    fn point_reads_take_values_from_tables_and_fall_back_to_memtables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
        let revision_array = |main: i64| {
            let key = encode_revision_key(Revision::new(main, 0), false);
            <[u8; 16]>::try_from(key.as_slice()).expect("16 bytes")
        };
        let mut batch = store.write_batch();
        put(&mut batch, b"a", b"a1"); // revision 2
        put(&mut batch, b"b", b"b1"); // 3
        batch.commit().expect("commit");
        store.kv.rotate_memtable_and_wait().expect("flush");
        let mut batch = store.write_batch();
        put(&mut batch, b"a", b"a2"); // 4, only in the memtable
        batch.commit().expect("commit");

        let from_tables = |main: i64| {
            get_from_tables(&store, &revision_array(main))
                .expect("read")
                .map(|bytes| read::decode_kv(&bytes).expect("decode").value)
        };
        assert_eq!(from_tables(2), Some(b"a1".to_vec()));
        assert_eq!(from_tables(4), None);
        assert_eq!(get(&store, b"a", 0, false).0[0].value, b"a2");
        assert_eq!(get(&store, b"a", 3, false).0[0].value, b"a1");

        // The compaction's removal of a@2 sits in the memtable above the
        // table's copy, which a direct table read still sees; the index no
        // longer hands out revision 2, so no read returns it.
        store.compact(4).expect("compact");
        assert_eq!(from_tables(2), Some(b"a1".to_vec()));
        assert!(matches!(
            store.range(&RangeRequest {
                key: b"a".to_vec(),
                revision: 3,
                ..Default::default()
            }),
            Err(Error::Compacted)
        ));
        // Once the removal is flushed, the newest table holds a tombstone and
        // the table read gives way to fjall's full read.
        store.kv.rotate_memtable_and_wait().expect("flush");
        assert_eq!(from_tables(2), None);
        assert_eq!(from_tables(3), Some(b"b1".to_vec()));
        assert_eq!(get(&store, b"a", 0, false).0[0].value, b"a2");
        assert_eq!(get(&store, b"b", 0, false).0[0].value, b"b1");
    }

    #[test]
    fn open_finishes_a_compaction_whose_removals_never_ran() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
            let mut batch = store.write_batch();
            for (key, value) in [("a", "1"), ("a", "2"), ("b", "1")] {
                batch
                    .put(&PutRequest {
                        key: key.into(),
                        value: value.into(),
                        ..Default::default()
                    })
                    .expect("put");
            }
            batch
                .delete_range(&DeleteRangeRequest {
                    key: b"b".to_vec(),
                    ..Default::default()
                })
                .expect("delete");
            batch.commit().expect("commit");
            // What a crash right after a compaction's commit leaves: the
            // compaction recorded, the history it dropped still on disk.
            store
                .meta
                .insert(META_COMPACT_REV, 5u64.to_be_bytes())
                .expect("meta");
            assert_eq!(store.kv.iter().count(), 4);
        }
        let store = Store::open(dir.path(), StoreOptions::default()).expect("reopen");
        assert_eq!(store.compact_revision(), 5);
        assert_eq!(store.current_revision(), 5);
        // Only a@3 is left: a@2 was superseded, b@4 and its tombstone @5 deleted.
        let left: Vec<_> = store
            .kv
            .iter()
            .map(|g| g.key().map(|k| decode_revision_key(&k)))
            .collect::<Result<_, _>>()
            .expect("scan");
        assert_eq!(left, vec![Some((Revision::new(3, 0), false))]);
        assert_eq!(store.indexed_keys(), 1);
    }
}
