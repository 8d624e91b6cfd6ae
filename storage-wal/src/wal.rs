//! [`WalStorage`]: segment management, recovery, and the `raft::Storage` implementation.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::purge::Purger;
use crate::record::{self, HEADER_LEN, Parsed, Reader, RecordType};
use crate::snapshot_file::{self, Origin, SNAPSHOT_SUFFIX, TEMP_SUFFIX};
use crate::{Error, WalOptions, fsync_dir};

const SEGMENT_SUFFIX: &str = ".wal";
const SEGMENT_MAGIC: &[u8; 8] = b"CNCDWAL\x01";
static ZEROS: [u8; 64 * 1024] = [0u8; 64 * 1024];
/// How far past a batch the active segment's preallocated range is overwritten with real
/// zeros (see [`WalStorage::write_batch`]).
const ZERO_AHEAD_BYTES: u64 = 512 * 1024;

/// Where one live entry is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Location {
    term: u64,
    segment: u64,
    /// Offset of the record (its header) inside the segment.
    offset: u64,
    /// Encoded size of the entry (= the record's payload length).
    len: u32,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: File,
}

/// What [`WalStorage::open`] had to repair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Bytes cut off the end of the newest segment (a torn or corrupt final record).
    pub truncated_bytes: u64,
    /// The newest segment held no valid header at all and was removed.
    pub removed_torn_segment: bool,
    /// A snapshot file was newer than the log (a crash inside
    /// [`WalStorage::apply_snapshot`]) and the log was reset to it.
    pub completed_snapshot_install: bool,
}

/// The window of the log and the states a segment header records.
#[derive(Debug, Clone, Default)]
struct SegmentHeader {
    segment: u64,
    base_index: u64,
    base_term: u64,
    last_index: u64,
    hard_state: HardState,
    conf_state: ConfState,
}

impl SegmentHeader {
    fn encode(&self, buf: &mut Vec<u8>) -> Result<(), Error> {
        record::append_record(buf, RecordType::SegmentHeader, |out| {
            out.extend_from_slice(SEGMENT_MAGIC);
            record::put_u64(out, self.segment);
            record::put_u64(out, self.base_index);
            record::put_u64(out, self.base_term);
            record::put_u64(out, self.last_index);
            let hard_state = self.hard_state.write_to_bytes().map_err(Error::encode)?;
            out.extend_from_slice(&(hard_state.len() as u32).to_le_bytes());
            out.extend_from_slice(&hard_state);
            self.conf_state.write_to_vec(out).map_err(Error::encode)
        })?;
        Ok(())
    }

    fn decode(payload: &[u8]) -> Option<SegmentHeader> {
        let mut reader = Reader::new(payload);
        if reader.bytes(8)? != SEGMENT_MAGIC.as_slice() {
            return None;
        }
        let segment = reader.u64()?;
        let base_index = reader.u64()?;
        let base_term = reader.u64()?;
        let last_index = reader.u64()?;
        let hard_state_len = reader.u32()? as usize;
        let hard_state = HardState::parse_from_bytes(reader.bytes(hard_state_len)?).ok()?;
        let conf_state = ConfState::parse_from_bytes(reader.rest()).ok()?;
        Some(SegmentHeader {
            segment,
            base_index,
            base_term,
            last_index,
            hard_state,
            conf_state,
        })
    }
}

fn encode_compact(buf: &mut Vec<u8>, index: u64, term: u64) -> Result<(), Error> {
    record::append_record(buf, RecordType::Compact, |out| {
        record::put_u64(out, index);
        record::put_u64(out, term);
        Ok(())
    })?;
    Ok(())
}

fn segment_file_name(seq: u64) -> String {
    format!("{seq:016x}{SEGMENT_SUFFIX}")
}

fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    if stem.len() != 16 {
        return None;
    }
    u64::from_str_radix(stem, 16).ok()
}

/// A raft log stored in CRC-framed segment files; see the crate docs for the format.
///
/// All writes go through `&mut self` and are durable when they return. Reads through
/// [`raft::Storage`] see only what has been made durable.
pub struct WalStorage {
    dir: PathBuf,
    opts: WalOptions,
    /// Index and term of the entry just before the first one (the compaction point).
    base_index: u64,
    base_term: u64,
    /// `locations[i]` is where entry `base_index + 1 + i` lives.
    locations: VecDeque<Location>,
    /// The most recent entries: a suffix of the log.
    cache: VecDeque<Entry>,
    cached_bytes: usize,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Option<Snapshot>,
    snapshot_origin: Origin,
    /// Every segment file by sequence number; the last one is being appended to.
    segments: BTreeMap<u64, Segment>,
    /// Bytes of valid records in the active segment (the next write goes here).
    active_len: u64,
    /// Physical length of the active segment (larger than `active_len` when preallocated).
    active_file_len: u64,
    /// The active segment's bytes before this offset have been written (records or real
    /// zeros), so writing over them again changes no extent on disk.
    active_written_to: u64,
    /// The active segment holds bytes written without an fsync (commit-only hard states);
    /// it is synced before the next segment starts, so that only the newest segment can
    /// ever have a torn tail.
    active_unsynced: bool,
    /// Where the first record after the active segment's header starts.
    active_header_len: u64,
    poisoned: bool,
    /// Deletes purged segments off the writer's path (see `purge`).
    purger: Purger,
    recovery: RecoveryReport,
    /// etcd's `etcd_disk_wal_fsync_duration_seconds`: every fsync of a segment's data.
    fsync_seconds: metrics::Histogram,
    /// etcd's `etcd_disk_wal_write_bytes_total` (a gauge in etcd 3.4): bytes written.
    written_bytes: metrics::Gauge,
}

impl fmt::Debug for WalStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalStorage")
            .field("dir", &self.dir)
            .field("first_index", &(self.base_index + 1))
            .field("last_index", &self.last_index())
            .field("hard_state", &self.hard_state)
            .field("conf_state", &self.conf_state)
            .field("segments", &self.segments.keys().collect::<Vec<_>>())
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

/// Log state rebuilt while replaying segments. Locations are `None` while the entry's
/// record is in a segment that was already deleted; later records must resolve them.
#[derive(Default)]
struct Replay {
    base_index: u64,
    base_term: u64,
    locations: VecDeque<Option<Location>>,
    hard_state: HardState,
    conf_state: ConfState,
    seen_header: bool,
}

impl Replay {
    fn last_index(&self) -> u64 {
        self.base_index + self.locations.len() as u64
    }

    /// Moves the compaction point up to `index`, dropping the entries at or below it.
    fn compact_to(&mut self, index: u64, term: u64) {
        let drop = (index.saturating_sub(self.base_index) as usize).min(self.locations.len());
        self.locations.drain(..drop);
        self.base_index = index;
        self.base_term = term;
    }

    fn apply_header(&mut self, header: &SegmentHeader) -> Result<(), String> {
        if self.seen_header && header.base_index < self.base_index {
            return Err(format!(
                "segment header moves the compaction point back from {} to {}",
                self.base_index, header.base_index
            ));
        }
        if header.last_index < header.base_index {
            return Err("segment header has last index below its first index".to_string());
        }
        self.compact_to(header.base_index, header.base_term);
        let len = (header.last_index - header.base_index) as usize;
        self.locations.resize(len, None);
        self.hard_state = header.hard_state.clone();
        self.conf_state = header.conf_state.clone();
        self.seen_header = true;
        Ok(())
    }

    fn apply_entry(&mut self, index: u64, location: Location) -> Result<(), String> {
        if index <= self.base_index || index > self.last_index() + 1 {
            return Err(format!(
                "entry {index} does not fit the log (compacted up to {}, last index {})",
                self.base_index,
                self.last_index()
            ));
        }
        self.locations
            .truncate((index - self.base_index - 1) as usize);
        self.locations.push_back(Some(location));
        Ok(())
    }

    fn apply_compact(&mut self, index: u64, term: u64) -> Result<(), String> {
        if index < self.base_index || index > self.last_index() {
            return Err(format!(
                "compaction to {index} outside the log ({}..={})",
                self.base_index,
                self.last_index()
            ));
        }
        self.compact_to(index, term);
        Ok(())
    }
}

/// The files found in the directory at open.
#[derive(Default)]
struct DirListing {
    segments: Vec<(u64, PathBuf)>,
    snapshots: Vec<(u64, u64, PathBuf)>,
}

fn list_dir(dir: &Path) -> Result<DirListing, Error> {
    let mut listing = DirListing::default();
    let mut removed_temp = false;
    for dir_entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let dir_entry = dir_entry.map_err(|e| Error::io(dir, e))?;
        let path = dir_entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(TEMP_SUFFIX) {
            // A snapshot that was never renamed into place (never durable, never used),
            // or a segment the purge thread had taken out of the log.
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            removed_temp = true;
        } else if let Some(seq) = parse_segment_file_name(name) {
            listing.segments.push((seq, path));
        } else if let Some((index, term)) = snapshot_file::parse_file_name(name) {
            listing.snapshots.push((index, term, path));
        }
    }
    if removed_temp {
        fsync_dir(dir)?;
    }
    listing.segments.sort();
    listing.snapshots.sort();
    Ok(listing)
}

impl WalStorage {
    /// Opens the log in `dir`, creating the directory and an empty log if needed, or
    /// recovering what is there (see the crate docs for what recovery repairs).
    pub fn open(dir: &Path, opts: WalOptions) -> Result<WalStorage, Error> {
        if opts.segment_size == 0 {
            return Err(Error::InvalidOptions("segment_size must be positive"));
        }
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fsync_dir(parent)?;
            }
        }
        let listing = list_dir(dir)?;
        let mut wal = WalStorage {
            dir: dir.to_path_buf(),
            opts,
            base_index: 0,
            base_term: 0,
            locations: VecDeque::new(),
            cache: VecDeque::new(),
            cached_bytes: 0,
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            snapshot: None,
            snapshot_origin: Origin::Local,
            segments: BTreeMap::new(),
            active_len: 0,
            active_file_len: 0,
            active_written_to: 0,
            active_unsynced: false,
            active_header_len: 0,
            poisoned: false,
            purger: Purger::start(dir)?,
            recovery: RecoveryReport::default(),
            fsync_seconds: metrics::histogram!("etcd_disk_wal_fsync_duration_seconds"),
            written_bytes: metrics::gauge!("etcd_disk_wal_write_bytes_total"),
        };
        wal.load_newest_snapshot(&listing)?;
        wal.recover_segments(&listing)?;
        wal.reconcile_snapshot()?;
        wal.fill_cache()?;
        Ok(wal)
    }

    /// Loads the newest snapshot file and deletes older ones.
    fn load_newest_snapshot(&mut self, listing: &DirListing) -> Result<(), Error> {
        let Some((_, _, newest)) = listing.snapshots.last() else {
            return Ok(());
        };
        let (snapshot, origin) = snapshot_file::read(newest)?;
        self.snapshot = Some(snapshot);
        self.snapshot_origin = origin;
        let older = &listing.snapshots[..listing.snapshots.len() - 1];
        for (_, _, path) in older {
            fs::remove_file(path).map_err(|e| Error::io(path, e))?;
        }
        if !older.is_empty() {
            fsync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn recover_segments(&mut self, listing: &DirListing) -> Result<(), Error> {
        let mut replay = Replay::default();
        let mut kept: Vec<(u64, PathBuf, ReplayedSegment)> = Vec::new();
        let count = listing.segments.len();
        for (position, (seq, path)) in listing.segments.iter().enumerate() {
            if let Some((previous, _, _)) = kept.last()
                && *seq != previous + 1
            {
                return Err(Error::Corrupt {
                    segment: path.clone(),
                    offset: 0,
                    reason: format!("segment {} is missing", previous + 1),
                });
            }
            let is_newest = position + 1 == count;
            match replay_segment(*seq, path, is_newest, &mut replay, &mut self.recovery)? {
                Some(replayed) => kept.push((*seq, path.clone(), replayed)),
                None => {
                    // The newest segment never got a complete header: nothing in it was
                    // ever synced.
                    fs::remove_file(path).map_err(|e| Error::io(path, e))?;
                    fsync_dir(&self.dir)?;
                    self.recovery.removed_torn_segment = true;
                }
            }
        }

        let Some((_, first_path, _)) = kept.first() else {
            return self.start_fresh_log();
        };
        let mut locations = VecDeque::with_capacity(replay.locations.len());
        for (i, location) in replay.locations.iter().enumerate() {
            let Some(location) = location else {
                return Err(Error::Corrupt {
                    segment: first_path.clone(),
                    offset: 0,
                    reason: format!(
                        "entry {} is referenced but its segment is gone",
                        replay.base_index + 1 + i as u64
                    ),
                });
            };
            locations.push_back(*location);
        }
        self.base_index = replay.base_index;
        self.base_term = replay.base_term;
        self.locations = locations;
        self.hard_state = replay.hard_state;
        self.conf_state = replay.conf_state;

        let last = kept.len() - 1;
        for (i, (seq, path, replayed)) in kept.into_iter().enumerate() {
            let file = OpenOptions::new()
                .read(true)
                .write(i == last)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            if i == last {
                self.active_len = replayed.valid_len;
                self.active_file_len = replayed.file_len;
                self.active_written_to = replayed.valid_len;
                self.active_header_len = replayed.header_len;
                // A repaired tail was cut off with its zeros, and a segment written
                // without preallocation has none: reserve them again. Losing them in a
                // crash only leaves a shorter file.
                if self.opts.preallocate && self.opts.segment_size > replayed.file_len {
                    reserve_zeros(&file, replayed.file_len, self.opts.segment_size)
                        .map_err(|e| Error::io(&path, e))?;
                    self.active_file_len = self.opts.segment_size;
                }
            }
            self.segments.insert(seq, Segment { path, file });
        }
        Ok(())
    }

    /// No segment survived: start one that carries the snapshot's state (if any).
    fn start_fresh_log(&mut self) -> Result<(), Error> {
        if let Some(snapshot) = &self.snapshot {
            let meta = snapshot.get_metadata();
            self.base_index = meta.index;
            self.base_term = meta.term;
            self.conf_state = meta.get_conf_state().clone();
            self.hard_state.term = meta.term;
            self.hard_state.commit = meta.index;
        }
        self.roll_segment()
    }

    /// After a crash between writing a snapshot file and resetting the log in
    /// `apply_snapshot`, the snapshot is newer than the log: finish the install.
    fn reconcile_snapshot(&mut self) -> Result<(), Error> {
        let Some(snapshot) = &self.snapshot else {
            return Ok(());
        };
        let meta = snapshot.get_metadata().clone();
        // A local snapshot never changes the log; a leader's one replaced it, which is
        // durable once the compaction point reached the snapshot.
        if self.snapshot_origin == Origin::Local || meta.index <= self.base_index {
            return Ok(());
        }
        self.reset_log_to(&meta)?;
        self.recovery.completed_snapshot_install = true;
        Ok(())
    }

    fn fill_cache(&mut self) -> Result<(), Error> {
        let last = self.last_index();
        let mut first = last + 1;
        let mut bytes = 0usize;
        while first > self.base_index + 1 && (last + 1 - first) < self.opts.cache_entries as u64 {
            let len = self.location(first - 1).len as usize;
            if bytes + len > self.opts.cache_bytes {
                break;
            }
            bytes += len;
            first -= 1;
        }
        let entries = self.read_from_disk(first, last + 1)?;
        self.cache = entries.into();
        self.cached_bytes = bytes;
        Ok(())
    }

    // ----- state accessors -------------------------------------------------------------

    /// The directory this log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The latest durable hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state.clone()
    }

    /// The latest durable conf state.
    pub fn conf_state(&self) -> ConfState {
        self.conf_state.clone()
    }

    /// The newest snapshot (metadata and data), held in memory: keep snapshot data small
    /// (e.g. a descriptor of a backend checkpoint that is streamed out of band).
    pub fn last_snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// What [`WalStorage::open`] repaired.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// True after a fatal write or fsync failure; every later write returns
    /// [`Error::Poisoned`].
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn first_index(&self) -> u64 {
        self.base_index + 1
    }

    fn last_index(&self) -> u64 {
        self.base_index + self.locations.len() as u64
    }

    /// Location of a live entry; `index` must be in `first_index..=last_index`.
    fn location(&self, index: u64) -> Location {
        self.locations[(index - self.base_index - 1) as usize]
    }

    fn term_of(&self, index: u64) -> Result<u64, Error> {
        if index == self.base_index {
            return Ok(self.base_term);
        }
        if index < self.base_index {
            return Err(Error::Compacted {
                index,
                first_index: self.first_index(),
            });
        }
        if index > self.last_index() {
            return Err(Error::Unavailable {
                index,
                last_index: self.last_index(),
            });
        }
        Ok(self.location(index).term)
    }

    fn cache_first_index(&self) -> u64 {
        self.last_index() + 1 - self.cache.len() as u64
    }

    // ----- writes ------------------------------------------------------------------------

    fn check_writable(&mut self) -> Result<(), Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        // A segment deletion that failed on the purge thread is a failed write too.
        let purged = self.purger.check();
        self.fatal_guard(purged)
    }

    /// Blocks until the segments that compactions made obsolete so far are deleted
    /// (they are deleted on a thread of their own; see [`WalStorage::compact`]).
    pub fn wait_for_purge(&mut self) -> Result<(), Error> {
        let purged = self.purger.wait();
        self.fatal_guard(purged)
    }

    /// Runs a write step; a fatal failure poisons the storage.
    fn fatal_guard<T>(&mut self, result: Result<T, Error>) -> Result<T, Error> {
        if let Err(error) = &result
            && error.is_fatal()
        {
            self.poisoned = true;
        }
        result
    }

    /// Persists entries (replacing any conflicting suffix: an append whose first index is
    /// at or below the last index truncates the log there first) and, if given, the hard
    /// state — with one write and one fsync.
    pub fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), Error> {
        self.check_writable()?;
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        if let Some(first) = entries.first() {
            if first.index <= self.base_index {
                return Err(Error::Compacted {
                    index: first.index,
                    first_index: self.first_index(),
                });
            }
            if first.index > self.last_index() + 1 {
                return Err(Error::NonContiguous {
                    expected: self.last_index() + 1,
                    got: first.index,
                });
            }
            for (offset, entry) in entries.iter().enumerate() {
                let expected = first.index + offset as u64;
                if entry.index != expected {
                    return Err(Error::NonContiguous {
                        expected,
                        got: entry.index,
                    });
                }
            }
        }

        let mut buf = record::start_batch();
        let mut written = Vec::with_capacity(entries.len());
        for entry in entries {
            let offset = buf.len() as u64;
            let len = record::append_message(&mut buf, RecordType::Entry, entry)?;
            written.push((offset, len));
        }
        if let Some(hard_state) = hard_state {
            record::append_message(&mut buf, RecordType::HardState, hard_state)?;
        }
        let write = self.write_batch(&mut buf, self.must_sync(entries, hard_state));
        let (segment, start) = self.fatal_guard(write)?;

        if let Some(first) = entries.first() {
            self.truncate_suffix_from(first.index);
            for (entry, (offset, len)) in entries.iter().zip(written) {
                self.locations.push_back(Location {
                    term: entry.term,
                    segment,
                    offset: start + offset,
                    len,
                });
                self.cached_bytes += len as usize;
                self.cache.push_back(entry.clone());
            }
            self.evict_cache();
        }
        if let Some(hard_state) = hard_state {
            self.hard_state = hard_state.clone();
        }
        Ok(())
    }

    /// Drops entries `index..` from memory (their records stay on disk as garbage that
    /// recovery skips the same way).
    fn truncate_suffix_from(&mut self, index: u64) {
        let keep = (index - self.base_index - 1) as usize;
        self.locations.truncate(keep);
        while self.cache.back().is_some_and(|e| e.index >= index) {
            if let Some(entry) = self.cache.pop_back() {
                self.cached_bytes -= entry.compute_size() as usize;
            }
        }
    }

    fn evict_cache(&mut self) {
        while self.cache.len() > self.opts.cache_entries
            || self.cached_bytes > self.opts.cache_bytes
        {
            let Some(entry) = self.cache.pop_front() else {
                break;
            };
            self.cached_bytes -= entry.compute_size() as usize;
        }
    }

    /// raft's durability rule (etcd's `MustSync`): new entries, a new term or a vote must
    /// reach the disk before raft acts on them; a change of the commit index alone need
    /// not, because a restarted member learns it again from the leader and never below
    /// what it applied. Skipping that fsync halves the syncs of a steady write load.
    fn must_sync(&self, entries: &[Entry], hard_state: Option<&HardState>) -> bool {
        !entries.is_empty()
            || hard_state.is_some_and(|hs| {
                hs.term != self.hard_state.term || hs.vote != self.hard_state.vote
            })
    }

    /// Persists a hard state on its own; fsynced only if its term or vote changed (see
    /// [`WalStorage::must_sync`]).
    pub fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), Error> {
        self.append(&[], Some(hard_state))
    }

    /// Persists the conf state: one fsync.
    pub fn set_conf_state(&mut self, conf_state: &ConfState) -> Result<(), Error> {
        self.check_writable()?;
        let mut buf = record::start_batch();
        record::append_message(&mut buf, RecordType::ConfState, conf_state)?;
        let write = self.write_batch(&mut buf, true);
        self.fatal_guard(write)?;
        self.conf_state = conf_state.clone();
        Ok(())
    }

    /// Writes a batch (a buffer from [`record::start_batch`]) to the active segment, or to
    /// a new one if it would overflow it, with one write and, if `sync`, one fsync. Returns
    /// the segment and the offset where the buffer starts.
    fn write_batch(&mut self, batch: &mut [u8], sync: bool) -> Result<(u64, u64), Error> {
        record::seal_batch(batch)?;
        let has_records = self.active_len > self.active_header_len;
        if has_records && self.active_len + batch.len() as u64 > self.opts.segment_size {
            self.roll_segment()?;
        }
        let (&seq, segment) = self.segments.last_key_value().ok_or(Error::Poisoned)?;
        let start = self.active_len;
        let end = start + batch.len() as u64;
        // `fallocate` reserves a segment as unwritten extents: the first write into each
        // block turns it into a written one, and that change is metadata the next
        // `fdatasync` must persist with a second, synchronous inode write. Writing real
        // zeros a stretch ahead of the records pays for that once per stretch instead of
        // on nearly every fsync under load (a batch of 200 clients' puts starts a new
        // block each time).
        if end > self.active_written_to && self.active_written_to < self.active_file_len {
            let zeros_from = end.max(self.active_written_to);
            let zeros_to = self.active_file_len.min(end + ZERO_AHEAD_BYTES);
            if zeros_to > zeros_from {
                write_zeros(&segment.file, zeros_from, zeros_to)
                    .map_err(|e| Error::io(&segment.path, e))?;
            }
            self.active_written_to = end.max(zeros_to);
        }
        segment
            .file
            .write_all_at(batch, start)
            .map_err(|e| Error::io(&segment.path, e))?;
        self.written_bytes.increment(batch.len() as f64);
        if sync {
            let started = std::time::Instant::now();
            segment
                .file
                .sync_data()
                .map_err(|e| Error::sync(&segment.path, e))?;
            self.fsync_seconds.record(started.elapsed().as_secs_f64());
        }
        self.active_unsynced = !sync;
        self.active_len += batch.len() as u64;
        self.active_file_len = self.active_file_len.max(self.active_len);
        Ok((seq, start))
    }

    /// Seals the active segment and starts the next one with a header describing the
    /// current state. The header is synced on its own, before any batch is written after
    /// it: so a damaged header with valid records behind it can only be media damage.
    fn roll_segment(&mut self) -> Result<(), Error> {
        if self.active_unsynced
            && let Some(active) = self.segments.values().next_back()
        {
            let started = std::time::Instant::now();
            active
                .file
                .sync_data()
                .map_err(|e| Error::sync(&active.path, e))?;
            self.fsync_seconds.record(started.elapsed().as_secs_f64());
            self.active_unsynced = false;
        }
        if let Some(active) = self.segments.values().next_back()
            && self.active_file_len > self.active_len
        {
            // Cut the preallocated zeros so that only the newest segment has a tail.
            active
                .file
                .set_len(self.active_len)
                .map_err(|e| Error::io(&active.path, e))?;
            active
                .file
                .sync_all()
                .map_err(|e| Error::sync(&active.path, e))?;
        }
        let seq = self.segments.keys().next_back().map_or(1, |last| last + 1);
        let path = self.dir.join(segment_file_name(seq));
        let header = SegmentHeader {
            segment: seq,
            base_index: self.base_index,
            base_term: self.base_term,
            last_index: self.last_index(),
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        };
        let mut buf = Vec::with_capacity(256);
        header.encode(&mut buf)?;
        let header_len = buf.len() as u64;

        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut file_len = buf.len() as u64;
        if self.opts.preallocate && self.opts.segment_size > file_len {
            reserve_zeros(&file, file_len, self.opts.segment_size)
                .map_err(|e| Error::io(&path, e))?;
            file_len = self.opts.segment_size;
        }
        file.write_all_at(&buf, 0)
            .map_err(|e| Error::io(&path, e))?;
        file.sync_all().map_err(|e| Error::sync(&path, e))?;
        fsync_dir(&self.dir)?;

        self.segments.insert(seq, Segment { path, file });
        self.active_len = buf.len() as u64;
        self.active_file_len = file_len;
        self.active_written_to = header_len;
        self.active_header_len = header_len;
        Ok(())
    }

    /// Discards entries before `compact_index` (it becomes the first index), deleting the
    /// segments that hold nothing live any more (on the purge thread, after this returns:
    /// [`WalStorage::wait_for_purge`] waits for them). Normally called through
    /// [`WalStorage::create_snapshot`]; compacting past the newest snapshot leaves
    /// followers that need the dropped entries without a way to catch up.
    pub fn compact(&mut self, compact_index: u64) -> Result<(), Error> {
        self.check_writable()?;
        if compact_index <= self.first_index() {
            return Ok(());
        }
        if compact_index > self.last_index() + 1 {
            return Err(Error::Unavailable {
                index: compact_index,
                last_index: self.last_index(),
            });
        }
        let new_base = compact_index - 1;
        let new_base_term = self.term_of(new_base)?;
        let mut buf = record::start_batch();
        encode_compact(&mut buf, new_base, new_base_term)?;
        let write = self.write_batch(&mut buf, true);
        self.fatal_guard(write)?;

        let drop = (new_base - self.base_index) as usize;
        self.locations.drain(..drop);
        self.base_index = new_base;
        self.base_term = new_base_term;
        while self.cache.front().is_some_and(|e| e.index <= new_base) {
            if let Some(entry) = self.cache.pop_front() {
                self.cached_bytes -= entry.compute_size() as usize;
            }
        }
        let purge = self.purge_segments();
        self.fatal_guard(purge)
    }

    /// Deletes every segment older than the one holding the first live entry, on the
    /// purge thread (the caller's compaction record is already durable, see `purge`). The live
    /// entries' segments never decrease with the index (appends go to the newest segment),
    /// and the newest segment's header or records carry the compaction point and states.
    fn purge_segments(&mut self) -> Result<(), Error> {
        let Some(&active) = self.segments.keys().next_back() else {
            return Ok(());
        };
        let oldest_needed = self.locations.front().map_or(active, |l| l.segment);
        let doomed: Vec<u64> = self
            .segments
            .range(..oldest_needed)
            .map(|(s, _)| *s)
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        let files = doomed
            .into_iter()
            .filter_map(|seq| self.segments.remove(&seq))
            .map(|segment| (segment.path, segment.file))
            .collect();
        self.purger.delete(files)
    }

    /// Installs a snapshot received from the leader: writes the snapshot file, drops the
    /// whole log and restarts it after the snapshot (commit = snapshot index, term raised
    /// to the snapshot's, conf state from its metadata).
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), Error> {
        self.check_writable()?;
        let meta = snapshot.get_metadata().clone();
        if meta.index < self.first_index() {
            return Err(Error::SnapshotOutOfDate {
                index: meta.index,
                current: self.base_index,
            });
        }
        let written = snapshot_file::write(&self.dir, &snapshot, Origin::Leader);
        self.fatal_guard(written)?;
        self.snapshot = Some(snapshot);
        self.snapshot_origin = Origin::Leader;
        let reset = self.reset_log_to(&meta);
        self.fatal_guard(reset)?;
        let cleaned = self.remove_older_snapshot_files();
        self.fatal_guard(cleaned)
    }

    /// Restarts the log right after the snapshot point in a fresh segment, then deletes
    /// all older segments.
    fn reset_log_to(&mut self, meta: &SnapshotMetadata) -> Result<(), Error> {
        let previous = (
            self.base_index,
            self.base_term,
            std::mem::take(&mut self.locations),
            self.hard_state.clone(),
            self.conf_state.clone(),
        );
        self.base_index = meta.index;
        self.base_term = meta.term;
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = meta.index;
        self.conf_state = meta.get_conf_state().clone();
        if let Err(error) = self.roll_segment() {
            // Keep serving the old (still durable) state to readers.
            (
                self.base_index,
                self.base_term,
                self.locations,
                self.hard_state,
                self.conf_state,
            ) = previous;
            return Err(error);
        }
        self.cache.clear();
        self.cached_bytes = 0;
        self.purge_segments()
    }

    fn remove_older_snapshot_files(&mut self) -> Result<(), Error> {
        let Some(current) = &self.snapshot else {
            return Ok(());
        };
        let meta = current.get_metadata();
        let keep = snapshot_file::file_name(meta.index, meta.term);
        let mut removed = false;
        for dir_entry in fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))? {
            let dir_entry = dir_entry.map_err(|e| Error::io(&self.dir, e))?;
            let name = dir_entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(SNAPSHOT_SUFFIX) && name != keep {
                let path = dir_entry.path();
                fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                removed = true;
            }
        }
        if removed {
            fsync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The local state machine took a snapshot at `index` (which must be applied, hence
    /// committed): saves it as the newest snapshot file and compacts the log so that
    /// entries `<= index - keep_entries` are purged.
    pub fn create_snapshot(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<(), Error> {
        self.check_writable()?;
        let current = self.snapshot.as_ref().map_or(0, |s| s.get_metadata().index);
        if index <= current {
            return Err(Error::SnapshotOutOfDate { index, current });
        }
        if index > self.hard_state.commit {
            return Err(Error::SnapshotNotCommitted {
                index,
                commit: self.hard_state.commit,
            });
        }
        let term = self.term_of(index)?;
        let mut snapshot = Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf_state);
        snapshot.data = data.into();

        let written = snapshot_file::write(&self.dir, &snapshot, Origin::Local);
        self.fatal_guard(written)?;
        self.snapshot = Some(snapshot);
        self.snapshot_origin = Origin::Local;
        let cleaned = self.remove_older_snapshot_files();
        self.fatal_guard(cleaned)?;
        let compact_index = (index + 1).saturating_sub(self.opts.keep_entries);
        self.compact(compact_index)
    }

    // ----- reads -------------------------------------------------------------------------

    /// Reads entries `low..high` from their segments (all must be live).
    fn read_from_disk(&self, low: u64, high: u64) -> Result<Vec<Entry>, Error> {
        let mut entries = Vec::with_capacity((high - low) as usize);
        let mut index = low;
        while index < high {
            // Read a run of records that sit back to back in one segment with one pread.
            let first = self.location(index);
            let mut run_end = index + 1;
            let mut run_bytes = HEADER_LEN as u64 + u64::from(first.len);
            while run_end < high {
                let next = self.location(run_end);
                if next.segment != first.segment || next.offset != first.offset + run_bytes {
                    break;
                }
                run_bytes += HEADER_LEN as u64 + u64::from(next.len);
                run_end += 1;
            }
            let segment = self
                .segments
                .get(&first.segment)
                .ok_or_else(|| Error::Corrupt {
                    segment: self.dir.join(segment_file_name(first.segment)),
                    offset: first.offset,
                    reason: format!("segment holding entry {index} is gone"),
                })?;
            let mut buf = vec![0u8; run_bytes as usize];
            segment
                .file
                .read_exact_at(&mut buf, first.offset)
                .map_err(|e| Error::io(&segment.path, e))?;
            let mut position = 0usize;
            for expected_index in index..run_end {
                let corrupt = |reason: String| Error::Corrupt {
                    segment: segment.path.clone(),
                    offset: first.offset + position as u64,
                    reason,
                };
                let Parsed::Valid {
                    record_type: RecordType::Entry,
                    payload,
                    next,
                } = record::parse_at(&buf, position)
                else {
                    return Err(corrupt(format!(
                        "entry {expected_index} no longer reads back"
                    )));
                };
                let entry = Entry::parse_from_bytes(payload)
                    .map_err(|e| corrupt(format!("entry does not decode: {e}")))?;
                if entry.index != expected_index {
                    return Err(corrupt(format!(
                        "expected entry {expected_index}, found {}",
                        entry.index
                    )));
                }
                entries.push(entry);
                position = next;
            }
            index = run_end;
        }
        Ok(entries)
    }
}

/// What replay learnt about a segment it keeps.
struct ReplayedSegment {
    /// Bytes of valid records (the next write goes here).
    valid_len: u64,
    /// Physical length (longer than `valid_len` when a preallocated zero tail follows).
    file_len: u64,
    header_len: u64,
}

/// A record of a batch, validated but not yet applied.
struct PendingRecord<'a> {
    offset: usize,
    record_type: RecordType,
    payload: &'a [u8],
}

/// Collects the records of the batch occupying `from..end`; on damage returns where and why.
fn collect_batch<'a>(
    buf: &'a [u8],
    from: usize,
    end: usize,
    out: &mut Vec<PendingRecord<'a>>,
) -> Result<(), (usize, String)> {
    out.clear();
    let region = &buf[..end.min(buf.len())];
    let mut offset = from;
    while offset < end {
        match record::parse_at(region, offset) {
            Parsed::Valid {
                record_type: RecordType::SegmentHeader | RecordType::Batch,
                ..
            } => return Err((offset, "header or batch record inside a batch".to_string())),
            Parsed::Valid {
                record_type,
                payload,
                next,
            } => {
                out.push(PendingRecord {
                    offset,
                    record_type,
                    payload,
                });
                offset = next;
            }
            Parsed::End => return Err((offset, "batch is cut short".to_string())),
            Parsed::Invalid(reason) => return Err((offset, reason.to_string())),
        }
    }
    Ok(())
}

fn apply_record(seq: u64, record: &PendingRecord<'_>, replay: &mut Replay) -> Result<(), String> {
    let payload = record.payload;
    match record.record_type {
        RecordType::Entry => {
            let entry = Entry::parse_from_bytes(payload)
                .map_err(|e| format!("entry does not decode: {e}"))?;
            let location = Location {
                term: entry.term,
                segment: seq,
                offset: record.offset as u64,
                len: payload.len() as u32,
            };
            replay.apply_entry(entry.index, location)
        }
        RecordType::HardState => {
            replay.hard_state = HardState::parse_from_bytes(payload)
                .map_err(|e| format!("hard state does not decode: {e}"))?;
            Ok(())
        }
        RecordType::ConfState => {
            replay.conf_state = ConfState::parse_from_bytes(payload)
                .map_err(|e| format!("conf state does not decode: {e}"))?;
            Ok(())
        }
        RecordType::Compact => {
            let mut reader = Reader::new(payload);
            let (Some(index), Some(term)) = (reader.u64(), reader.u64()) else {
                return Err("compaction record is short".to_string());
            };
            replay.apply_compact(index, term)
        }
        RecordType::SegmentHeader | RecordType::Batch => {
            Err("header or batch record inside a batch".to_string())
        }
    }
}

/// Replays one segment into `replay`, batch by batch. Returns `None` when the newest
/// segment has no valid header (nothing in it was ever synced; it must be removed).
///
/// Damage in an older segment is corruption. In the newest segment, damage inside the
/// last batch (one that no valid record follows) is the torn tail of a write that never
/// completed: the file is cut back to the start of that batch.
fn replay_segment(
    seq: u64,
    path: &Path,
    is_newest: bool,
    replay: &mut Replay,
    report: &mut RecoveryReport,
) -> Result<Option<ReplayedSegment>, Error> {
    let buf = fs::read(path).map_err(|e| Error::io(path, e))?;
    let corrupt = |offset: usize, reason: String| Error::Corrupt {
        segment: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    // Decides between a torn tail and damage in the middle of the log.
    let judge_damage = |at: usize,
                        reason: String,
                        scan_from: usize,
                        only: Option<RecordType>|
     -> Result<(), Error> {
        if !is_newest {
            return Err(corrupt(at, reason));
        }
        match record::find_valid_record_from(&buf, scan_from, only) {
            Ok(None) => Ok(()),
            Ok(Some(valid)) => Err(corrupt(
                at,
                format!("{reason}, but a valid record follows at offset {valid}"),
            )),
            Err(()) => Err(corrupt(
                at,
                format!("{reason}; cannot tell a torn tail from damage"),
            )),
        }
    };

    let header_len = match record::parse_at(&buf, 0) {
        Parsed::Valid {
            record_type: RecordType::SegmentHeader,
            payload,
            next,
        } => {
            let header = SegmentHeader::decode(payload)
                .ok_or_else(|| corrupt(0, "header does not decode".to_string()))?;
            if header.segment != seq {
                return Err(corrupt(
                    0,
                    format!("header names segment {}", header.segment),
                ));
            }
            replay.apply_header(&header).map_err(|r| corrupt(0, r))?;
            next
        }
        Parsed::Valid { .. } => {
            return Err(corrupt(
                0,
                "segment does not start with a header".to_string(),
            ));
        }
        Parsed::End => {
            judge_damage(0, "segment is empty".to_string(), 0, None)?;
            return Ok(None);
        }
        Parsed::Invalid(reason) => {
            // The header is synced before anything is written behind it.
            judge_damage(0, reason.to_string(), 1, None)?;
            return Ok(None);
        }
    };

    let mut offset = header_len;
    let mut pending = Vec::new();
    loop {
        let (damage_at, reason, scan_from, only) = match record::parse_at(&buf, offset) {
            Parsed::End => break,
            Parsed::Valid {
                record_type: RecordType::Batch,
                payload,
                next,
            } => {
                let mut reader = Reader::new(payload);
                let declared = reader
                    .u64()
                    .filter(|_| reader.rest().is_empty())
                    .and_then(|len| usize::try_from(len).ok())
                    .ok_or_else(|| corrupt(offset, "batch marker does not decode".to_string()))?;
                let end = next.saturating_add(declared);
                match collect_batch(&buf, next, end, &mut pending) {
                    Ok(()) => {
                        for record in &pending {
                            apply_record(seq, record, replay)
                                .map_err(|r| corrupt(record.offset, r))?;
                        }
                        offset = end;
                        continue;
                    }
                    // Valid records inside the declared batch may have reached the disk
                    // out of order; only what lies beyond the batch decides.
                    Err((at, reason)) => (at, reason, end.min(buf.len()), None),
                }
            }
            Parsed::Valid { .. } => {
                return Err(corrupt(offset, "record outside a batch".to_string()));
            }
            Parsed::Invalid(reason) => {
                if is_newest && buf[offset..].iter().all(|&b| b == 0) {
                    // The preallocated (or zero-filled) rest of the newest segment.
                    return Ok(Some(ReplayedSegment {
                        valid_len: offset as u64,
                        file_len: buf.len() as u64,
                        header_len: header_len as u64,
                    }));
                }
                // Without the marker the batch's extent is unknown: its own records may
                // follow, but any later write would start with a valid marker.
                (
                    offset,
                    reason.to_string(),
                    offset + 1,
                    Some(RecordType::Batch),
                )
            }
        };
        judge_damage(damage_at, reason, scan_from, only)?;
        // A torn final batch: cut the file back to where it started.
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        file.set_len(offset as u64)
            .map_err(|e| Error::io(path, e))?;
        file.sync_all().map_err(|e| Error::sync(path, e))?;
        report.truncated_bytes += (buf.len() - offset) as u64;
        break;
    }
    Ok(Some(ReplayedSegment {
        valid_len: offset as u64,
        file_len: offset as u64,
        header_len: header_len as u64,
    }))
}

fn to_raft(error: Error) -> raft::Error {
    error.into()
}

impl raft::Storage for WalStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if low >= high {
            return Ok(Vec::new());
        }
        // Decide how many entries fit before touching the disk: a record's payload length
        // is the entry's encoded size, which is what raft's size limit counts.
        let max_size = max_size.into().unwrap_or(raft::NO_LIMIT);
        let mut end = low;
        let mut size = 0u64;
        while end < high {
            size = size.saturating_add(u64::from(self.location(end).len));
            if end > low && size > max_size {
                break;
            }
            end += 1;
        }
        let cache_first = self.cache_first_index();
        let mut entries = if low < cache_first {
            self.read_from_disk(low, end.min(cache_first))
                .map_err(to_raft)?
        } else {
            Vec::with_capacity((end - low) as usize)
        };
        if end > cache_first {
            let from = (low.max(cache_first) - cache_first) as usize;
            let to = (end - cache_first) as usize;
            entries.extend(self.cache.range(from..to).cloned());
        }
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.term_of(idx).map_err(to_raft)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(WalStorage::first_index(self))
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(WalStorage::last_index(self))
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        match &self.snapshot {
            Some(snapshot) if snapshot.get_metadata().index >= request_index => {
                Ok(snapshot.clone())
            }
            _ => Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            )),
        }
    }
}

/// Makes `file` hold zeros from `from` up to `to`, allocated on disk. `fallocate` does it
/// without writing them; filesystems without it get the zeros written. Either way, a later
/// `fdatasync` of records written into that range does not persist a new file size: an
/// appended write would, and on ext4 that costs an extra synchronous inode write per sync
/// (about a third more time per fsync measured here, with three members syncing at once).
/// `fallocate`'s blocks are still unwritten extents, though, whose conversion costs the
/// same inode write: [`WalStorage::write_batch`] overwrites them with real zeros ahead of
/// the records.
fn reserve_zeros(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    use rustix::fs::FallocateFlags;
    use rustix::io::Errno;
    match rustix::fs::fallocate(file, FallocateFlags::empty(), from, to - from) {
        Ok(()) => return Ok(()),
        Err(e) if e == Errno::OPNOTSUPP || e == Errno::NOSYS => {}
        Err(e) => return Err(e.into()),
    }
    write_zeros(file, from, to)
}

/// Writes zeros over `from..to` of `file`.
fn write_zeros(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let mut offset = from;
    while offset < to {
        let chunk = (to - offset).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..chunk], offset)?;
        offset += chunk as u64;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod proptests;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
