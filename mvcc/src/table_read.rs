//! Point reads of revision keys from the `kv` keyspace's on-disk tables, with
//! a block index of our own.
//!
//! lsm-tree's `Table::get` finds a key's data block by binary search over the
//! table's index block, decoding varints and comparing byte strings at every
//! probe, and finds the table by comparing byte-string key ranges: about a
//! third of a cached point read. Revision keys are 16 bytes (plus a tombstone
//! mark), so the same searches over the first 16 bytes of each key as a
//! `u128` are a handful of integer compares. This module keeps those `u128`
//! lists for the tables of the tree's current version, and loads and searches
//! data blocks through lsm-tree's own (public but doc-hidden) pieces:
//! `Block::from_file`, `DataBlock::point_read`, the shared block cache (so
//! blocks read here and by fjall are cached once, under the same key), the
//! table's pinned filter.
//!
//! Why first-16-byte prefixes answer exactly for a 16-byte key `k`: a longer
//! key whose prefix equals `k` is greater than `k`, so "prefix >= k" holds
//! exactly when "key >= k" does. Block and table upper bounds are compared
//! that way. A table's lower bound compared by prefix can only let in a
//! table that does not hold `k`, whose lookup then finds nothing, as it
//! would in lsm-tree.
//!
//! Tables this cannot serve (an index split in two levels, keys shorter than
//! 16 bytes) are read with `Table::get`, and so are tables whose filter is
//! not pinned in memory when their filter is wanted (lsm-tree loads it
//! through the block cache); a version with keys shorter than 16 bytes is
//! left to the caller. Tables that a reopened store finds in the last level
//! have their filters unpinned, but the last candidate table of a read is
//! searched without its filter anyway (see `TableReads::search`). Where
//! this module cannot search a version at all, [`lsm_tree_table_get`] does
//! lsm-tree's own search of the tables.
//!
//! This is the only module that names lsm-tree or reaches into a fjall
//! keyspace's tree (DESIGN.md: the table API is doc-hidden and may change in
//! any release, so lsm-tree is pinned to an exact version). The rest of the
//! crate sees [`TableReads::get`], [`TableReads::release_replaced_tables`]
//! and [`tables_per_level`], which take the `kv` keyspace itself, and
//! [`active_memtable`], which takes any keyspace.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, OnceLock};

use lsm_tree::table::block::BlockType;
use lsm_tree::table::block::decoder::ParsedItem;
use lsm_tree::table::filter::standard_bloom;
use lsm_tree::table::{Block, BlockHandle, DataBlock, GlobalTableId, IndexBlock, Table, TableId};
use lsm_tree::{AbstractTree, SeqNo, Slice};
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::Error;

/// What the tables say about a key.
#[derive(Debug, PartialEq, Eq)]
enum TableLookup {
    /// The newest version in the tables is this value.
    Value(Slice),
    /// The newest version in the tables is a deletion.
    Deleted,
    /// No table holds the key.
    Absent,
    /// This version's tables cannot be searched here: ask lsm-tree.
    Unsupported,
}

/// The `u128` views of the current version's tables, rebuilt when the tree's
/// version changes. Tables already seen keep their block lists. A view holds
/// its tables, so the files of tables a compaction replaced are deleted at
/// the next point read or commit after it, not when lsm-tree lets go of them.
pub(crate) struct TableReads {
    view: RwLock<VersionView>,
    admission: Admission,
}

impl TableReads {
    /// `cache_bytes`: the block cache's capacity, which sizes the admission
    /// window (see [`Admission`]).
    pub fn new(cache_bytes: u64) -> Self {
        Self {
            view: RwLock::default(),
            admission: Admission::new(cache_bytes),
        }
    }
}

/// Which blocks a point read puts into the block cache: those that missed it
/// before, recently (a doorkeeper, as in TinyLFU).
///
/// A block read once and not again before the cache would have evicted it
/// only costs the cache an insert and an eviction, and with reads spread
/// over more data than the cache holds that is nearly every block: inserting
/// them took ~20% of a random point read (the bench's 1,000,000 values,
/// 16 MiB cache: ~160-190k gets per CPU-second with, ~205-230k without).
/// So a block's first miss only leaves its mark in a slot, and a second miss
/// that finds the mark caches it. The marks are as many as the cache has
/// blocks: a block read again within that many misses would likely have
/// still been cached, one read later would likely have been evicted anyway.
/// A block whose reads come in a burst (neighbouring revisions) is served by
/// the thread's [`LAST_BLOCK`] meanwhile. Slots may be overwritten by other
/// blocks or read racily: either only changes whether one block is cached.
struct Admission {
    marks: Box<[AtomicU64]>,
}

impl Admission {
    fn new(cache_bytes: u64) -> Self {
        // 4 KiB: the kv keyspace's data block size.
        let slots = usize::try_from(cache_bytes / 4096)
            .unwrap_or(usize::MAX)
            .clamp(64, 1 << 20);
        Self {
            marks: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Whether the block at `offset` of table `id`, which missed the cache,
    /// should be cached now.
    fn admit(&self, id: GlobalTableId, offset: u64) -> bool {
        let mark = block_mark(id, offset);
        let Some(slot) = self
            .marks
            .get(usize::try_from(mark % self.marks.len() as u64).unwrap_or(0))
        else {
            return true;
        };
        if slot.load(AtomicOrdering::Relaxed) == mark {
            slot.store(0, AtomicOrdering::Relaxed);
            true
        } else {
            slot.store(mark, AtomicOrdering::Relaxed);
            false
        }
    }
}

/// A well-mixed, non-zero 64-bit mark of a block's place.
fn block_mark(id: GlobalTableId, offset: u64) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = id.tree_id().wrapping_mul(K) ^ id.table_id();
    h = h.wrapping_mul(K) ^ offset;
    h = (h ^ (h >> 29)).wrapping_mul(K);
    (h ^ (h >> 32)) | 1
}

#[derive(Default)]
struct VersionView {
    /// The lsm-tree version this was built from (`None`: not built yet).
    version_id: Option<u64>,
    /// `None`: a table has keys shorter than 16 bytes.
    runs: Option<Vec<RunView>>,
}

/// One sorted run: disjoint tables in key order.
struct RunView {
    /// First 16 bytes of each table's smallest and largest key.
    min_keys: Vec<u128>,
    max_keys: Vec<u128>,
    tables: Vec<Arc<TableReader>>,
}

impl TableReads {
    /// The value of revision key `key` in the on-disk tables of `kv` (the
    /// store's `kv` keyspace), memtables skipped; `None` when the newest
    /// version the tables hold is a deletion, when no table holds the key, or
    /// when `kv` is not a standard tree. Searched with our block lists where
    /// the tables allow, else the way lsm-tree searches them
    /// ([`lsm_tree_table_get`]).
    #[inline]
    pub fn get(&self, kv: &fjall::Keyspace, key: &[u8; 16]) -> Result<Option<Slice>, Error> {
        let fjall::AnyTree::Standard(tree) = &kv.tree else {
            return Ok(None);
        };
        let lookup = match self.search(tree, key)? {
            TableLookup::Unsupported => lsm_tree_table_get(tree, key)?,
            lookup => lookup,
        };
        Ok(match lookup {
            TableLookup::Value(value) => Some(value),
            _ => None,
        })
    }

    /// Looks `key` up in the tables of `tree`'s current version, top level
    /// first, as lsm-tree's point read does: the first table holding the key
    /// has its newest version.
    fn search(&self, tree: &lsm_tree::Tree, key: &[u8; 16]) -> Result<TableLookup, Error> {
        let view = self.current_view(tree);
        let Some(runs) = &view.runs else {
            return Ok(TableLookup::Unsupported);
        };
        let needle = u128::from_be_bytes(*key);
        let mut filter_hash = None;
        // A table's filter only spares a block search when the table lacks
        // the key, which is worth it when a table below may still hold it.
        // The last candidate is searched without: the key index asks only for
        // revisions that exist, so it nearly always holds them, and a filter
        // probe is a cache miss of its own.
        let mut pending: Option<&TableReader> = None;
        for run in runs {
            let at = run.max_keys.partition_point(|&max| max < needle);
            let Some(table) = run.tables.get(at) else {
                continue;
            };
            if run.min_keys.get(at).is_some_and(|&min| min > needle) {
                continue;
            }
            if let Some(above) = pending.replace(table) {
                match above.get(key, needle, Some(&mut filter_hash), &self.admission)? {
                    TableLookup::Absent => {}
                    found => return Ok(found),
                }
            }
        }
        match pending {
            Some(last) => last.get(key, needle, None, &self.admission),
            None => Ok(TableLookup::Absent),
        }
    }
}

impl TableReads {
    /// Lets go of the tables of versions older than `kv`'s current one, so
    /// lsm-tree can delete the files a compaction replaced; the writer calls
    /// this after each commit, as reads may not come for a while.
    pub fn release_replaced_tables(&self, kv: &fjall::Keyspace) {
        if let fjall::AnyTree::Standard(tree) = &kv.tree {
            drop(self.current_view(tree));
        }
    }

    /// The view of `tree`'s current version (or a newer one), built if needed.
    fn current_view(&self, tree: &lsm_tree::Tree) -> RwLockReadGuard<'_, VersionView> {
        let version = tree.current_version();
        let mut view = self.view.read();
        // Version ids only grow; a view newer than the version read above is
        // as good (its tables hold everything the older ones held that the
        // key index can still ask for).
        if view.version_id < Some(version.id()) {
            drop(view);
            let mut stale = self.view.write();
            if stale.version_id < Some(version.id()) {
                let runs: Vec<Vec<Table>> = version
                    .iter_levels()
                    .flat_map(|level| level.iter())
                    .map(|run| run.iter().cloned().collect())
                    .collect();
                *stale = VersionView::new(tree.id, version.id(), runs, &stale);
            }
            view = RwLockWriteGuard::downgrade(stale);
        }
        view
    }
}

impl VersionView {
    /// `runs`: the version's sorted runs, top level first.
    fn new(
        tree_id: u64,
        version_id: u64,
        runs: Vec<Vec<Table>>,
        previous: &VersionView,
    ) -> VersionView {
        let known: HashMap<TableId, &Arc<TableReader>> = previous
            .runs
            .iter()
            .flatten()
            .flat_map(|run| &run.tables)
            .map(|table| (table.table.id(), table))
            .collect();
        let mut views = Vec::with_capacity(runs.len());
        for run in runs {
            let mut view = RunView {
                min_keys: Vec::with_capacity(run.len()),
                max_keys: Vec::with_capacity(run.len()),
                tables: Vec::with_capacity(run.len()),
            };
            for table in run {
                let range = &table.metadata.key_range;
                let (Some(min), Some(max)) = (key_prefix(range.min()), key_prefix(range.max()))
                else {
                    return VersionView {
                        version_id: Some(version_id),
                        runs: None,
                    };
                };
                view.min_keys.push(min);
                view.max_keys.push(max);
                view.tables.push(match known.get(&table.id()) {
                    Some(reader) => Arc::clone(reader),
                    None => Arc::new(TableReader::new(tree_id, table)),
                });
            }
            views.push(view);
        }
        VersionView {
            version_id: Some(version_id),
            runs: Some(views),
        }
    }
}

/// The first 16 bytes of a key, big-endian; `None` for shorter keys.
fn key_prefix(key: &[u8]) -> Option<u128> {
    key.first_chunk::<16>()
        .map(|prefix| u128::from_be_bytes(*prefix))
}

thread_local! {
    /// The data block this thread read last, by table and offset. Reads of
    /// revisions written together (a range's keys, which `read::fetch_all`
    /// fetches in revision order; gets walking recent writes) hit one block
    /// after another, and this spares them the shared cache's lookup (hashing,
    /// a shard lock, recency bookkeeping). Blocks never change once written
    /// and a table id is never reused within a tree, nor a tree id within the
    /// process, so a remembered block is always the block at that place. It
    /// holds one block per thread beyond the cache's budget.
    static LAST_BLOCK: std::cell::RefCell<Option<(GlobalTableId, u64, DataBlock)>> =
        const { std::cell::RefCell::new(None) };
}

/// One table and, once first read, its block list.
struct TableReader {
    table: Table,
    id: GlobalTableId,
    /// Built at the first read of the table; `None` when the table is read
    /// with `Table::get` instead.
    blocks: OnceLock<Option<BlockList>>,
    /// The table's file, opened at the first block that misses the cache
    /// (lsm-tree keeps its descriptors to itself).
    file: OnceLock<File>,
}

/// A table's data blocks in key order.
struct BlockList {
    /// First 16 bytes of each block's last key.
    end_keys: Vec<u128>,
    /// The last of every [`GROUP`] end keys (and of the shorter last group):
    /// a random read's search starts in this small, cache-resident list and
    /// then touches one group of `end_keys` instead of probing all of them
    /// across memory (a table's list is tens of kilobytes, all tables' over
    /// a megabyte for 1,000,000 values).
    group_ends: Vec<u128>,
    handles: Vec<BlockHandle>,
}

/// End keys per group: 16 × 16 bytes, four cache lines.
const GROUP: usize = 16;

impl BlockList {
    fn new(end_keys: Vec<u128>, handles: Vec<BlockHandle>) -> Self {
        let group_ends = end_keys
            .chunks(GROUP)
            .filter_map(|group| group.last().copied())
            .collect();
        Self {
            end_keys,
            group_ends,
            handles,
        }
    }

    /// The first block whose end key is `>= needle` (`end_keys.len()` if
    /// none): the only block that can hold it, unless versions of the key
    /// continue in the next.
    fn first_ending_at_or_after(&self, needle: u128) -> usize {
        let group = self.group_ends.partition_point(|&end| end < needle);
        let start = group.saturating_mul(GROUP).min(self.end_keys.len());
        let within = self
            .end_keys
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take(GROUP)
            .take_while(|&&end| end < needle)
            .count();
        start + within
    }
}

impl TableReader {
    fn new(tree_id: u64, table: Table) -> Self {
        let id = GlobalTableId::from((tree_id, table.id()));
        Self {
            table,
            id,
            blocks: OnceLock::new(),
            file: OnceLock::new(),
        }
    }

    /// `filter_hash`: where the key's filter hash is kept once computed;
    /// `None` to search without the table's filter (where lsm-tree reads the
    /// table, it checks the filter all the same).
    fn get(
        &self,
        key: &[u8; 16],
        needle: u128,
        filter_hash: Option<&mut Option<u64>>,
        admission: &Admission,
    ) -> Result<TableLookup, Error> {
        let use_filter = filter_hash.is_some();
        let mut hash_of_key = None;
        let filter_hash = filter_hash.unwrap_or(&mut hash_of_key);
        let hash = |filter_hash: &mut Option<u64>| {
            *filter_hash.get_or_insert_with(|| standard_bloom::Builder::get_hash(key))
        };
        let table = &self.table;
        let unpinned_filter = table.pinned_filter_block.is_none()
            && (table.regions.filter.is_some() || table.regions.filter_tli.is_some());
        let blocks = match self.blocks()? {
            Some(blocks) if !(use_filter && unpinned_filter) => blocks,
            // lsm-tree's read loads an unpinned filter through the block cache.
            _ => {
                let item = table
                    .get(key, SeqNo::MAX, hash(filter_hash))
                    .map_err(fjall::Error::from)?;
                return Ok(lookup(item));
            }
        };
        if use_filter
            && let Some(filter) = &table.pinned_filter_block
            && !filter
                .maybe_contains_hash(hash(filter_hash))
                .map_err(fjall::Error::from)?
        {
            return Ok(TableLookup::Absent);
        }
        // Versions of one key may spill into the next block; the key is
        // absent once a block ends past it.
        let mut at = blocks.first_ending_at_or_after(needle);
        while let (Some(&end), Some(handle)) = (blocks.end_keys.get(at), blocks.handles.get(at)) {
            if let Some(item) = self.point_read_in_block(handle, key, admission)? {
                return Ok(lookup(Some(item)));
            }
            if end != needle {
                break;
            }
            at += 1;
        }
        Ok(TableLookup::Absent)
    }

    fn blocks(&self) -> Result<Option<&BlockList>, Error> {
        if let Some(blocks) = self.blocks.get() {
            return Ok(blocks.as_ref());
        }
        let blocks = self.read_block_list()?;
        Ok(self.blocks.get_or_init(|| blocks).as_ref())
    }

    /// Reads the table's dense block index from its file. `None` when the
    /// table needs lsm-tree's read (see the module doc).
    fn read_block_list(&self) -> Result<Option<BlockList>, Error> {
        let table = &self.table;
        if table.regions.index.is_some() {
            return Ok(None);
        }
        let block = Block::from_file(
            self.file()?,
            table.regions.tli,
            table.metadata.index_block_compression,
        )
        .map_err(fjall::Error::from)?;
        if block.header.block_type != BlockType::Index {
            return Err(Error::Corrupt(format!(
                "table {} index is a {:?} block",
                table.id(),
                block.header.block_type
            )));
        }
        let index = IndexBlock::new(block);
        let mut end_keys = Vec::with_capacity(index.len());
        let mut handles = Vec::with_capacity(index.len());
        for item in index.iter() {
            let handle = item.materialize(index.as_slice());
            let Some(end) = key_prefix(handle.end_key()) else {
                return Ok(None);
            };
            end_keys.push(end);
            handles.push(handle.into_inner());
        }
        if end_keys.is_sorted() {
            Ok(Some(BlockList::new(end_keys, handles)))
        } else {
            Err(Error::Corrupt(format!(
                "table {} index is out of order",
                table.id()
            )))
        }
    }

    fn file(&self) -> Result<&File, Error> {
        if let Some(file) = self.file.get() {
            return Ok(file);
        }
        let file = File::open(&*self.table.path)?;
        Ok(self.file.get_or_init(|| file))
    }

    /// `key` looked up in the block at `handle`: the block this thread read
    /// last if it is this one (searched in place), else the block from the
    /// shared block cache, else read from the file (and cached if `admission`
    /// says so).
    fn point_read_in_block(
        &self,
        handle: &BlockHandle,
        key: &[u8; 16],
        admission: &Admission,
    ) -> Result<Option<lsm_tree::InternalValue>, Error> {
        let offset = *handle.offset();
        let remembered = LAST_BLOCK.with_borrow(|last| match last {
            Some((id, at, block)) if *id == self.id && *at == offset => {
                Some(block.point_read(key, SeqNo::MAX))
            }
            _ => None,
        });
        if let Some(item) = remembered {
            return Ok(item);
        }
        let block = DataBlock::new(self.load_uncached_by_thread(handle, admission)?);
        let item = block.point_read(key, SeqNo::MAX);
        LAST_BLOCK.set(Some((self.id, offset, block)));
        Ok(item)
    }

    fn load_uncached_by_thread(
        &self,
        handle: &BlockHandle,
        admission: &Admission,
    ) -> Result<Block, Error> {
        let cache = &self.table.cache;
        if let Some(block) = cache.get_block(self.id, handle.offset()) {
            return Ok(block);
        }
        let block = Block::from_file(
            self.file()?,
            *handle,
            self.table.metadata.data_block_compression,
        )
        .map_err(fjall::Error::from)?;
        if block.header.block_type != BlockType::Data {
            return Err(Error::Corrupt(format!(
                "table {} block at {} is a {:?} block",
                self.table.id(),
                *handle.offset(),
                block.header.block_type
            )));
        }
        if admission.admit(self.id, *handle.offset()) {
            cache.insert_block(self.id, handle.offset(), block.clone());
        }
        Ok(block)
    }
}

/// lsm-tree's own search of the tables: levels top-down and the one candidate
/// table of each run; the first table holding the key has its newest version.
/// The filter hash is the one lsm-tree's filters are built with (its bloom
/// filter builder's); `current_version`, the levels' runs and `Table::get`
/// are public in lsm-tree but hidden from its docs.
fn lsm_tree_table_get(tree: &lsm_tree::Tree, key: &[u8]) -> Result<TableLookup, Error> {
    let version = tree.current_version();
    let filter_hash = standard_bloom::Builder::get_hash(key);
    for level in version.iter_levels() {
        for run in level.iter() {
            let Some(table) = run.get_for_key(key) else {
                continue;
            };
            match table
                .get(key, SeqNo::MAX, filter_hash)
                .map_err(fjall::Error::from)?
            {
                Some(item) if item.is_tombstone() => return Ok(TableLookup::Deleted),
                Some(item) => return Ok(TableLookup::Value(item.value)),
                None => {}
            }
        }
    }
    Ok(TableLookup::Absent)
}

/// A reference to one of a keyspace's memtables, taken while it was the active one
/// (for the store's background thread, which frees memtables off fjall's lock: see
/// `write_behind`).
pub(crate) struct HeldMemtable(Arc<lsm_tree::Memtable>);

impl HeldMemtable {
    /// fjall's id of the memtable, unique within its keyspace.
    pub(crate) fn id(&self) -> u64 {
        self.0.id()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether this is the last reference: fjall has let go of the memtable, and
    /// dropping this frees it.
    pub(crate) fn is_last_reference(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }
}

/// The keyspace's active memtable, held.
pub(crate) fn active_memtable(keyspace: &fjall::Keyspace) -> HeldMemtable {
    HeldMemtable(keyspace.tree.active_memtable())
}

/// How many tables of `kv` each LSM level holds, top level first (empty when
/// `kv` is not a standard tree).
pub(crate) fn tables_per_level(kv: &fjall::Keyspace) -> Vec<usize> {
    match &kv.tree {
        fjall::AnyTree::Standard(tree) => tree
            .current_version()
            .iter_levels()
            .map(|level| level.iter().map(|run| run.len()).sum())
            .collect(),
        fjall::AnyTree::Blob(_) => Vec::new(),
    }
}

fn lookup(item: Option<lsm_tree::InternalValue>) -> TableLookup {
    match item {
        Some(item) if item.is_tombstone() => TableLookup::Deleted,
        Some(item) => TableLookup::Value(item.value),
        None => TableLookup::Absent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};
    use concord_proto::etcdserverpb::PutRequest;

    fn standard_tree(keyspace: &fjall::Keyspace) -> &lsm_tree::Tree {
        match &keyspace.tree {
            fjall::AnyTree::Standard(tree) => tree,
            fjall::AnyTree::Blob(_) => panic!("kv keyspace is not a standard tree"),
        }
    }

    /// Every revision key up to a little past `newest`: puts, removed
    /// revisions and revisions never written.
    fn all_revision_keys(newest: i64) -> impl Iterator<Item = [u8; 16]> {
        (0..newest + 3).flat_map(|main| {
            (0..2i64).map(move |sub| {
                let mut key = [0u8; 16];
                key[..8].copy_from_slice(&main.to_be_bytes());
                key[8..].copy_from_slice(&sub.to_be_bytes());
                key
            })
        })
    }

    /// Compares every revision key's lookup; returns how many found a value
    /// and how many a deletion.
    fn assert_same_as_lsm_tree(store: &Store, reads: &TableReads, stage: &str) -> (usize, usize) {
        let tree = standard_tree(&store.kv);
        let (mut values, mut deleted) = (0, 0);
        for key in all_revision_keys(store.current_revision()) {
            let ours = reads.search(tree, &key).expect("our read");
            let theirs = lsm_tree_table_get(tree, &key).expect("lsm-tree read");
            assert_eq!(ours, theirs, "{stage}: key {key:?}");
            values += usize::from(matches!(ours, TableLookup::Value(_)));
            deleted += usize::from(ours == TableLookup::Deleted);
        }
        (values, deleted)
    }

    #[test]
    fn finds_what_lsm_tree_finds_across_flushes_compactions_and_levels() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
        // One view kept across every stage (tables carried over from one
        // version to the next) and one built afresh at each stage.
        let kept = TableReads::new(16 << 20);
        let put_round = |round: usize| {
            let mut batch = store.write_batch();
            // 40 keys overwritten again and again, values of a few hundred
            // bytes: every table spans several data blocks.
            for i in 0..300usize {
                batch
                    .put(&PutRequest {
                        key: format!("key{}", (i * 7 + round) % 40).into_bytes(),
                        value: vec![(i % 251) as u8; 100 + (i * 13 + round) % 300],
                        ..Default::default()
                    })
                    .expect("put");
            }
            batch.commit().expect("commit");
        };
        for round in 0..4 {
            put_round(round);
            store.kv.rotate_memtable_and_wait().expect("flush");
            let found = assert_same_as_lsm_tree(&store, &kept, "after a flush");
            assert_eq!(found, (300 * (round + 1), 0));
            assert_same_as_lsm_tree(&store, &TableReads::new(16 << 20), "fresh view");
        }
        // A compaction's removals, first only in tables above the values they
        // remove, then merged with them.
        store
            .compact(store.current_revision() - 500)
            .expect("compact");
        store.kv.rotate_memtable_and_wait().expect("flush");
        let (found, deleted) = assert_same_as_lsm_tree(&store, &kept, "after the removals' flush");
        assert_eq!(found + deleted, 1200, "removals hide values");
        assert!(deleted > 0);
        store.kv.major_compact().expect("major compaction");
        let merged = assert_same_as_lsm_tree(&store, &kept, "after a major compaction");
        // The merge drops the removed values with their removals.
        assert_eq!(merged, (found, 0));
        assert_same_as_lsm_tree(&store, &TableReads::new(16 << 20), "fresh view");
        put_round(9);
        store.kv.rotate_memtable_and_wait().expect("flush");
        assert_eq!(
            assert_same_as_lsm_tree(&store, &kept, "a flush over compacted tables"),
            (found + 300, 0)
        );
        // A reopened store loads its tables with the pinning of the levels
        // they sit in now.
        drop(store);
        let store = Store::open(dir.path(), StoreOptions::default()).expect("reopen");
        assert_eq!(
            assert_same_as_lsm_tree(&store, &TableReads::new(16 << 20), "after a reopen"),
            (found + 300, 0)
        );
    }

    #[test]
    fn block_lists_find_the_first_block_ending_at_or_after_a_key() {
        for blocks in [0usize, 1, 15, 16, 17, 40] {
            // End keys 10, 20, 30, ...
            let ends: Vec<u128> = (1..=blocks as u128).map(|i| i * 10).collect();
            let handles = vec![BlockHandle::new(lsm_tree::table::BlockOffset(0), 1); blocks];
            let list = BlockList::new(ends.clone(), handles);
            for needle in 0..=(blocks as u128 + 1) * 10 {
                assert_eq!(
                    list.first_ending_at_or_after(needle),
                    ends.partition_point(|&end| end < needle),
                    "{blocks} blocks, key {needle}"
                );
            }
        }
    }

    #[test]
    fn admission_caches_a_block_at_its_second_miss() {
        let admission = Admission::new(16 << 20);
        let (a, b) = (GlobalTableId::from((1, 7)), GlobalTableId::from((2, 7)));
        assert!(!admission.admit(a, 4096));
        assert!(!admission.admit(b, 4096));
        assert!(!admission.admit(a, 8192));
        assert!(admission.admit(a, 4096));
        assert!(admission.admit(b, 4096));
        // Admitted blocks start over: were one evicted, it would have to
        // miss twice again.
        assert!(!admission.admit(a, 4096));
    }

    #[test]
    fn point_reads_cache_blocks_read_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
        let mut batch = store.write_batch();
        for i in 0..300 {
            batch
                .put(&PutRequest {
                    key: format!("key{i}").into_bytes(),
                    value: vec![7; 200],
                    ..Default::default()
                })
                .expect("put");
        }
        batch.commit().expect("commit");
        store.kv.rotate_memtable_and_wait().expect("flush");
        let revision = |main: i64| {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&main.to_be_bytes());
            key
        };
        let (first, last) = (revision(2), revision(301));
        let reads = TableReads::new(16 << 20);
        let tree = standard_tree(&store.kv);
        let read = |key: &[u8; 16]| {
            assert!(matches!(
                reads.search(tree, key).expect("read"),
                TableLookup::Value(_)
            ));
        };
        read(&first);
        let first_block_cached = || {
            let view = reads.view.read();
            let table = &view.runs.as_ref().expect("runs")[0].tables[0];
            let blocks = table.blocks.get().expect("built").as_ref().expect("ours");
            assert!(blocks.end_keys.len() > 2, "the values span several blocks");
            let offset = blocks.handles[0].offset();
            table.table.cache.get_block(table.id, offset).is_some()
        };
        assert!(!first_block_cached(), "one miss is only remembered");
        read(&first);
        assert!(!first_block_cached(), "served by the thread's last block");
        read(&last);
        read(&first);
        assert!(first_block_cached(), "a second miss caches the block");
    }

    #[test]
    fn commits_let_go_of_tables_a_compaction_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
        let put = |key: &str| {
            let mut batch = store.write_batch();
            batch
                .put(&PutRequest {
                    key: key.into(),
                    value: vec![1; 100],
                    ..Default::default()
                })
                .expect("put");
            batch.commit().expect("commit");
        };
        let viewed_tables = || {
            let view = store.table_reads.view.read();
            let mut ids: Vec<TableId> = view
                .runs
                .iter()
                .flatten()
                .flat_map(|run| &run.tables)
                .map(|table| table.table.id())
                .collect();
            ids.sort_unstable();
            ids
        };
        let current_tables = || {
            let mut ids: Vec<TableId> = standard_tree(&store.kv)
                .current_version()
                .iter_tables()
                .map(Table::id)
                .collect();
            ids.sort_unstable();
            ids
        };
        for key in ["a", "b", "c"] {
            put(key);
            store.kv.rotate_memtable_and_wait().expect("flush");
        }
        let got = store
            .range(&concord_proto::etcdserverpb::RangeRequest {
                key: b"a".to_vec(),
                ..Default::default()
            })
            .expect("range");
        assert_eq!(got.kvs.len(), 1);
        let flushed = viewed_tables();
        assert_eq!(flushed.len(), 3);
        store.kv.major_compact().expect("major compaction");
        assert_eq!(viewed_tables(), flushed, "no read since the compaction");
        // The next commit, with no read in between, moves the view on and
        // lets go of the replaced tables (lsm-tree deletes a replaced table's
        // file once nothing holds it).
        put("d");
        assert_eq!(viewed_tables(), current_tables());
        assert!(viewed_tables().iter().all(|id| !flushed.contains(id)));
    }

    #[test]
    fn leaves_tables_with_short_keys_to_lsm_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = fjall::Database::builder(dir.path()).open().expect("open");
        let keyspace = db
            .keyspace("short", fjall::KeyspaceCreateOptions::default)
            .expect("keyspace");
        keyspace.insert(b"a", b"1").expect("insert");
        keyspace.insert([b'a'; 16], b"2").expect("insert");
        keyspace.rotate_memtable_and_wait().expect("flush");
        let reads = TableReads::new(16 << 20);
        assert_eq!(
            reads
                .search(standard_tree(&keyspace), &[b'a'; 16])
                .expect("read"),
            TableLookup::Unsupported
        );
        // `get` answers all the same, from lsm-tree's own search.
        let value = reads.get(&keyspace, &[b'a'; 16]).expect("read");
        assert_eq!(value.as_deref(), Some(&b"2"[..]));
        assert_eq!(reads.get(&keyspace, &[b'b'; 16]).expect("read"), None);
    }
}
