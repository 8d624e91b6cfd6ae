//! [`LogStore`]: what the driver needs from the raft log storage, and [`MemLogStore`],
//! an in-memory implementation whose every mutation is one atomic "fsync".

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use crate::error::BoxError;

/// The raft log storage as the [`crate::Node`] drives it: raft-rs's read-only [`Storage`]
/// plus the durable mutations. Every mutation must be durable (fsynced) when it returns
/// `Ok`; an `Err` is fatal for the member (the node stops, it never retries).
pub trait LogStore: Storage {
    /// Appends `entries` (contiguous, ascending) after truncating every stored entry at or
    /// after `entries[0].index`, and saves `hard_state` if given — all with one fsync.
    fn append(&mut self, entries: &[Entry], hard_state: Option<&HardState>)
    -> Result<(), BoxError>;

    /// Durably replaces the hard state.
    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), BoxError>;

    /// Durably replaces the conf state (called when a conf change is applied).
    fn set_conf_state(&mut self, conf_state: &ConfState) -> Result<(), BoxError>;

    /// Replaces the whole log by `snapshot` (received from the leader): entries are
    /// dropped, the conf state becomes the snapshot's, commit and term are raised to it.
    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), BoxError>;

    /// Records a snapshot of the state machine taken at applied `index` (which is in the
    /// log); raft-rs's [`Storage::snapshot`] returns it to send to lagging followers.
    fn create_snapshot(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<(), BoxError>;

    /// Discards the entries before `index` (so `first_index()` becomes `index`); `index`
    /// is at most the latest snapshot's index + 1.
    fn compact(&mut self, index: u64) -> Result<(), BoxError>;

    /// The latest snapshot (from `create_snapshot` or `apply_snapshot`), or an empty one
    /// (index 0) if there is none. Used at start-up when the state machine is behind the
    /// log's first index.
    fn latest_snapshot(&self) -> Result<Snapshot, BoxError>;
}

/// A shared countdown that makes [`MemLogStore`] (and the harness's state machine) fail
/// the n-th durable operation from now, modelling a crash at that exact point: the
/// failing operation persists nothing and neither does anything after it.
///
/// The switch also counts how often it tripped ([`CrashSwitch::fired`]), so a test that
/// arms a crash can check that the crash really happened.
#[derive(Clone, Debug)]
pub struct CrashSwitch(Arc<SwitchState>);

#[derive(Debug)]
struct SwitchState {
    /// Durable operations still allowed, or [`DISARMED`] / [`TRIPPED`].
    left: AtomicU64,
    /// How many times the switch went from armed to tripped.
    fired: AtomicU64,
}

const DISARMED: u64 = u64::MAX;
/// Armed, and the countdown ran out: every durable operation fails until disarmed.
const TRIPPED: u64 = u64::MAX - 1;

impl Default for CrashSwitch {
    fn default() -> Self {
        CrashSwitch(Arc::new(SwitchState {
            left: AtomicU64::new(DISARMED),
            fired: AtomicU64::new(0),
        }))
    }
}

impl CrashSwitch {
    /// Let `successes` more durable operations succeed, then fail every one after.
    pub fn arm(&self, successes: u64) {
        self.0
            .left
            .store(successes.min(TRIPPED - 1), Ordering::SeqCst);
    }

    /// Never fail again.
    pub fn disarm(&self) {
        self.0.left.store(DISARMED, Ordering::SeqCst);
    }

    /// Whether the switch has tripped (a durable operation was refused) since it was
    /// last armed, and is not disarmed.
    pub fn tripped(&self) -> bool {
        self.0.left.load(Ordering::SeqCst) == TRIPPED
    }

    /// How many times the switch has tripped since it was made (disarming keeps the
    /// count): one for each armed crash that happened.
    pub fn fired(&self) -> u64 {
        self.0.fired.load(Ordering::SeqCst)
    }

    /// Called before each durable operation: `Err` means "crashed, persist nothing".
    pub fn check(&self) -> Result<(), BoxError> {
        match self.0.left.load(Ordering::SeqCst) {
            DISARMED => Ok(()),
            TRIPPED => Err(Box::new(SimulatedCrash)),
            0 => {
                self.0.left.store(TRIPPED, Ordering::SeqCst);
                self.0.fired.fetch_add(1, Ordering::SeqCst);
                Err(Box::new(SimulatedCrash))
            }
            left => {
                self.0.left.store(left - 1, Ordering::SeqCst);
                Ok(())
            }
        }
    }
}

/// The error a tripped [`CrashSwitch`] produces.
#[derive(Debug, thiserror::Error)]
#[error("simulated crash")]
pub struct SimulatedCrash;

/// An in-memory [`LogStore`]. Every mutation is all-or-nothing and "durable" the moment
/// it returns `Ok`, so the store itself is exactly what a crash would keep: the harness
/// crashes a node by dropping the [`crate::Node`] and keeping this value.
#[derive(Debug, Clone, Default)]
pub struct MemLogStore {
    hard_state: HardState,
    conf_state: ConfState,
    /// Index and term of the last discarded entry (what `term(first_index - 1)` returns).
    compacted: (u64, u64),
    entries: Vec<Entry>,
    snapshot: Snapshot,
    crash: CrashSwitch,
    fsyncs: u64,
}

impl MemLogStore {
    /// An empty store (a member that joins an existing cluster starts like this).
    pub fn new() -> Self {
        Self::default()
    }

    /// The switch that makes this store fail like a crash.
    pub fn set_crash_switch(&mut self, crash: CrashSwitch) {
        self.crash = crash;
    }

    /// The persisted hard state.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The persisted conf state.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// How many durable writes (fsyncs) were made.
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs
    }

    fn first(&self) -> u64 {
        self.compacted.0 + 1
    }

    fn last(&self) -> u64 {
        self.entries.last().map_or(self.compacted.0, |e| e.index)
    }

    fn durable_op(&mut self) -> Result<(), BoxError> {
        self.crash.check()?;
        self.fsyncs += 1;
        Ok(())
    }
}

fn store_error(e: StorageError) -> raft::Error {
    raft::Error::Store(e)
}

impl Storage for MemLogStore {
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
        if low < self.first() {
            return Err(store_error(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(store_error(StorageError::Unavailable));
        }
        let offset = self.first();
        let slice = &self.entries[(low - offset) as usize..(high - offset) as usize];
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut out = Vec::with_capacity(slice.len());
        let mut size = 0u64;
        for entry in slice {
            size += u64::from(protobuf::Message::compute_size(entry));
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.compacted.0 {
            return Ok(self.compacted.1);
        }
        if idx < self.first() {
            return Err(store_error(StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(store_error(StorageError::Unavailable));
        }
        Ok(self.entries[(idx - self.first()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot.get_metadata().index == 0 {
            return Err(store_error(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(self.snapshot.clone())
    }
}

/// A [`LogStore`] precondition was violated.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MemStoreError(String);

impl LogStore for MemLogStore {
    fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), BoxError> {
        if let Some(first) = entries.first()
            && first.index > self.last() + 1
        {
            return Err(Box::new(MemStoreError(format!(
                "append at {} leaves a gap after {}",
                first.index,
                self.last()
            ))));
        }
        self.durable_op()?;
        // Entries before first_index are already compacted (committed): skip them.
        let first = self.first();
        let entries: Vec<&Entry> = entries.iter().filter(|e| e.index >= first).collect();
        if let Some(start) = entries.first().map(|e| e.index) {
            self.entries.truncate((start - first) as usize);
            self.entries.extend(entries.into_iter().cloned());
        }
        if let Some(hs) = hard_state {
            self.hard_state = hs.clone();
        }
        Ok(())
    }

    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), BoxError> {
        self.durable_op()?;
        self.hard_state = hard_state.clone();
        Ok(())
    }

    fn set_conf_state(&mut self, conf_state: &ConfState) -> Result<(), BoxError> {
        self.durable_op()?;
        self.conf_state = conf_state.clone();
        Ok(())
    }

    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), BoxError> {
        let meta: &SnapshotMetadata = snapshot.get_metadata();
        if meta.index < self.snapshot.get_metadata().index {
            return Err(Box::new(MemStoreError(format!(
                "snapshot {} older than {}",
                meta.index,
                self.snapshot.get_metadata().index
            ))));
        }
        self.durable_op()?;
        self.entries.clear();
        self.compacted = (meta.index, meta.term);
        self.conf_state = meta.get_conf_state().clone();
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.snapshot = snapshot;
        Ok(())
    }

    fn create_snapshot(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<(), BoxError> {
        let term = self.term(index)?;
        self.durable_op()?;
        let mut snapshot = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf_state);
        self.snapshot = snapshot;
        Ok(())
    }

    fn compact(&mut self, index: u64) -> Result<(), BoxError> {
        if index <= self.first() {
            return Ok(());
        }
        if index > self.snapshot.get_metadata().index + 1 || index > self.last() + 1 {
            return Err(Box::new(MemStoreError(format!(
                "compact to {index} beyond the snapshot or the log"
            ))));
        }
        self.durable_op()?;
        let term = self.term(index - 1)?;
        let drop = (index - self.first()) as usize;
        self.entries.drain(..drop);
        self.compacted = (index - 1, term);
        Ok(())
    }

    fn latest_snapshot(&self) -> Result<Snapshot, BoxError> {
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    #[test]
    fn append_truncates_conflicting_suffix_and_compact_keeps_term() {
        let mut s = MemLogStore::new();
        s.append(&[entry(1, 1), entry(2, 1), entry(3, 1)], None)
            .unwrap();
        s.append(&[entry(2, 2)], None).unwrap();
        assert_eq!(s.last_index().unwrap(), 2);
        assert_eq!(s.term(2).unwrap(), 2);
        s.create_snapshot(2, ConfState::default(), b"x".to_vec())
            .unwrap();
        s.compact(2).unwrap();
        assert_eq!(s.first_index().unwrap(), 2);
        assert_eq!(s.term(1).unwrap(), 1);
        assert!(s.term(0).is_err());
        assert_eq!(s.snapshot(0, 0).unwrap().get_metadata().index, 2);
    }

    #[test]
    fn a_tripped_crash_switch_persists_nothing() {
        let mut s = MemLogStore::new();
        let crash = CrashSwitch::default();
        s.set_crash_switch(crash.clone());
        crash.arm(1);
        s.append(&[entry(1, 1)], None).unwrap();
        assert!(!crash.tripped(), "one write was allowed");
        assert_eq!(crash.fired(), 0);
        assert!(s.append(&[entry(2, 1)], None).is_err());
        assert!(crash.tripped());
        assert!(s.append(&[entry(2, 1)], None).is_err(), "stays tripped");
        assert_eq!(
            crash.fired(),
            1,
            "one crash, however many writes it refused"
        );
        assert_eq!(s.last_index().unwrap(), 1);
        crash.disarm();
        assert!(!crash.tripped());
        s.append(&[entry(2, 1)], None).unwrap();
        crash.arm(0);
        assert!(s.append(&[entry(3, 1)], None).is_err());
        assert_eq!(crash.fired(), 2, "the count survives disarming");
        assert_eq!(s.last_index().unwrap(), 2);
    }
}
