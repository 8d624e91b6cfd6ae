//! The raft log on disk: CRC-framed segment files, group-commit fsync, torn-tail repair,
//! hard state, conf state, snapshot files and purge; [`WalStorage`] implements raft-rs's
//! [`raft::Storage`].
//!
//! # On disk
//!
//! One directory holds segment files `<seq:016x>.wal` and snapshot files
//! `<index:016x>-<term:016x>.snap`. A segment is a sequence of records
//! `len: u32 | crc32c: u32 | type: u8 | payload` (the checksum covers length, type and
//! payload). Every segment starts with a header record carrying the log window
//! (compacted index and term, last index) and the hard state and conf state at the time it
//! was created, so older segments can be deleted without losing state; it is synced on its
//! own before anything is written behind it. Then follow batches: every write (one
//! fsync) starts with a batch record giving the byte length of the entry, hard-state,
//! conf-state and compaction records that follow it. Recovery replays whole batches in
//! order: an entry whose index is at or below the current last index replaces the
//! conflicting suffix, exactly like [`WalStorage::append`] did.
//!
//! # Durability
//!
//! [`WalStorage::append`] writes a batch of entries plus the hard state with one `write`
//! and one `fdatasync` (group commit). Creating, renaming or deleting files is followed by
//! an fsync of the directory. Segments a compaction leaves without live entries are
//! deleted on a thread of their own once the compaction record is durable, so the
//! writer never waits for a file system to free 64 MiB (a crash before they are gone
//! leaves them behind, and recovery drops their entries again). A failed fsync (or
//! write, or deletion) is fatal: the error says so
//! ([`Error::is_fatal`]), the storage refuses further writes ([`Error::Poisoned`]) and
//! the caller must stop the member; nothing is retried.
//!
//! On open, a torn or corrupt *final* batch of the newest segment (one that no later
//! write follows) is cut off, even when some of its pages reached the disk out of order;
//! damage anywhere else is [`Error::Corrupt`], which stops the member. A batch comes back
//! whole or not at all, so a record that was fsynced is never dropped.
//!
//! # Example
//!
//! ```
//! use concord_storage_wal::{WalOptions, WalStorage};
//! use raft::Storage as _;
//! use raft::prelude::{Entry, HardState};
//!
//! let dir = tempfile::tempdir()?;
//! let mut wal = WalStorage::open(dir.path(), WalOptions::default())?;
//! let entries: Vec<Entry> = (1..=3)
//!     .map(|index| Entry { index, term: 1, data: b"put x".to_vec().into(), ..Default::default() })
//!     .collect();
//! let hard_state = HardState { term: 1, vote: 1, commit: 2, ..Default::default() };
//! wal.append(&entries, Some(&hard_state))?; // one fsync for all of it
//! drop(wal);
//!
//! let wal = WalStorage::open(dir.path(), WalOptions::default())?; // recovers
//! assert_eq!(wal.last_index()?, 3);
//! assert_eq!(wal.initial_state()?.hard_state.commit, 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod purge;
mod record;
mod snapshot_file;
mod wal;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

pub use wal::{RecoveryReport, WalStorage};

/// Tuning knobs for [`WalStorage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalOptions {
    /// A new segment file is started when the next batch would grow the current one past
    /// this many bytes (a single batch larger than this gets a segment of its own).
    pub segment_size: u64,
    /// How many of the most recent entries are kept decoded in memory; older ones are
    /// read back from their segment.
    pub cache_entries: usize,
    /// Upper bound on the encoded bytes of the cached entries.
    pub cache_bytes: usize,
    /// Reserve each new segment's `segment_size` bytes on disk, as zeros, when it is
    /// created, so that later `fdatasync` calls do not also have to persist a growing file
    /// size (uses `fallocate`, so creating a segment stays cheap). Appends then overwrite
    /// the reserved blocks with real zeros a stretch ahead of the records, so that most
    /// fsyncs do not also persist the conversion of `fallocate`'s unwritten extents.
    pub preallocate: bool,
    /// [`WalStorage::create_snapshot`] keeps this many entries behind the snapshot index so
    /// slightly lagging followers can catch up from the log (etcd's default is 5000).
    pub keep_entries: u64,
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions {
            segment_size: 64 * 1024 * 1024,
            cache_entries: 4096,
            cache_bytes: 64 * 1024 * 1024,
            preallocate: true,
            keep_entries: 5000,
        }
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed. Fatal when it happened while writing.
    #[error("wal i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An fsync failed: what was written may or may not be on disk. Fatal, never retry.
    #[error("fsync of {path} failed, the member must stop (never retry): {source}")]
    SyncFailed {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A record before the tail of the log is damaged, or the records contradict each
    /// other. The member must stop; an operator has to repair or replace the data.
    #[error("corrupt wal segment {segment} at offset {offset}: {reason}")]
    Corrupt {
        segment: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A snapshot file is damaged.
    #[error("corrupt snapshot file {path}: {reason}")]
    CorruptSnapshot { path: PathBuf, reason: String },
    /// An earlier write or fsync failed; the storage accepts no more writes.
    #[error("wal is unusable after an earlier fatal error")]
    Poisoned,
    /// The index lies before the first index (it was compacted).
    #[error("index {index} is compacted (first index is {first_index})")]
    Compacted { index: u64, first_index: u64 },
    /// The index lies after the last index.
    #[error("index {index} is past the last index {last_index}")]
    Unavailable { index: u64, last_index: u64 },
    /// Appended entries must follow each other and the log without a gap.
    #[error("entries must be contiguous: expected index {expected}, got {got}")]
    NonContiguous { expected: u64, got: u64 },
    /// The snapshot is not newer than what the storage already has.
    #[error("snapshot at index {index} is out of date (storage is at index {current})")]
    SnapshotOutOfDate { index: u64, current: u64 },
    /// A local snapshot may only cover committed entries.
    #[error("cannot snapshot at index {index}: only entries up to {commit} are committed")]
    SnapshotNotCommitted { index: u64, commit: u64 },
    /// A record payload (or snapshot metadata) exceeds 4 GiB.
    #[error("record of {len} bytes is too large")]
    RecordTooLarge { len: usize },
    /// A protobuf message could not be encoded.
    #[error("cannot encode protobuf message: {0}")]
    Encode(String),
    /// [`WalOptions`] are unusable.
    #[error("invalid wal options: {0}")]
    InvalidOptions(&'static str),
}

impl Error {
    /// True when the member must stop: durability can no longer be promised (failed write
    /// or fsync), or the data on disk is damaged.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::Io { .. }
                | Error::SyncFailed { .. }
                | Error::Corrupt { .. }
                | Error::CorruptSnapshot { .. }
                | Error::Poisoned
        )
    }

    pub(crate) fn io(path: &Path, source: io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn sync(path: &Path, source: io::Error) -> Error {
        Error::SyncFailed {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn encode(error: protobuf::ProtobufError) -> Error {
        Error::Encode(error.to_string())
    }
}

impl From<Error> for raft::Error {
    fn from(error: Error) -> raft::Error {
        use raft::StorageError;
        match error {
            Error::Compacted { .. } => raft::Error::Store(StorageError::Compacted),
            Error::Unavailable { .. } => raft::Error::Store(StorageError::Unavailable),
            other => raft::Error::Store(StorageError::Other(Box::new(other))),
        }
    }
}

/// The configuration of this crate's property tests: `cases` cases from a fixed seed, so
/// every run tries the same inputs, and no regression files written.
#[cfg(test)]
pub(crate) fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, RngAlgorithm, RngSeed};
    Config {
        cases,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(0x5eed_c0c0),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Makes creations, renames and deletions of directory entries durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), Error> {
    let handle = File::open(dir).map_err(|e| Error::io(dir, e))?;
    handle.sync_all().map_err(|e| Error::sync(dir, e))
}
