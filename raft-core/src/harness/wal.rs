//! [`CrashableWal`]: a [`WalStorage`] the harness can crash (reopen from its directory)
//! and make fail at an exact durable write.

use std::path::{Path, PathBuf};

use concord_storage_wal::{WalOptions, WalStorage};
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage};

use super::HarnessStore;
use crate::{BoxError, CrashSwitch, LogStore};

/// A [`WalStorage`] in a directory, with a [`CrashSwitch`] checked before each write.
#[derive(Debug)]
pub struct CrashableWal {
    wal: WalStorage,
    dir: PathBuf,
    options: WalOptions,
    crash: CrashSwitch,
}

impl CrashableWal {
    /// Open (or create) the WAL in `dir`.
    pub fn open(dir: &Path, options: WalOptions) -> Result<Self, BoxError> {
        Ok(CrashableWal {
            wal: WalStorage::open(dir, options.clone())?,
            dir: dir.to_path_buf(),
            options,
            crash: CrashSwitch::default(),
        })
    }

    /// The WAL itself.
    pub fn wal(&self) -> &WalStorage {
        &self.wal
    }
}

impl HarnessStore for CrashableWal {
    fn recover(self) -> Result<Self, BoxError> {
        let CrashableWal {
            wal, dir, options, ..
        } = self;
        drop(wal);
        CrashableWal::open(&dir, options)
    }

    fn set_crash_switch(&mut self, crash: CrashSwitch) {
        self.crash = crash;
    }
}

impl Storage for CrashableWal {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.wal.initial_state()
    }
    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.wal.entries(low, high, max_size, context)
    }
    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.wal.term(idx)
    }
    fn first_index(&self) -> raft::Result<u64> {
        self.wal.first_index()
    }
    fn last_index(&self) -> raft::Result<u64> {
        self.wal.last_index()
    }
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        self.wal.snapshot(request_index, to)
    }
}

impl LogStore for CrashableWal {
    fn append(&mut self, entries: &[Entry], hs: Option<&HardState>) -> Result<(), BoxError> {
        self.crash.check()?;
        LogStore::append(&mut self.wal, entries, hs)
    }
    fn set_hard_state(&mut self, hs: &HardState) -> Result<(), BoxError> {
        self.crash.check()?;
        LogStore::set_hard_state(&mut self.wal, hs)
    }
    fn set_conf_state(&mut self, cs: &ConfState) -> Result<(), BoxError> {
        self.crash.check()?;
        LogStore::set_conf_state(&mut self.wal, cs)
    }
    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), BoxError> {
        self.crash.check()?;
        LogStore::apply_snapshot(&mut self.wal, snapshot)
    }
    fn create_snapshot(&mut self, i: u64, cs: ConfState, data: Vec<u8>) -> Result<(), BoxError> {
        self.crash.check()?;
        LogStore::create_snapshot(&mut self.wal, i, cs, data)
    }
    fn compact(&mut self, index: u64) -> Result<(), BoxError> {
        self.crash.check()?;
        LogStore::compact(&mut self.wal, index)
    }
    fn latest_snapshot(&self) -> Result<Snapshot, BoxError> {
        LogStore::latest_snapshot(&self.wal)
    }
}
