//! [`LogStore`] for [`WalStorage`], the on-disk raft log of `concord-storage-wal`.
//!
//! Every `WalStorage` write is durable when it returns; a fatal error poisons it (later
//! writes fail too), which the [`crate::Node`] turns into a fatal [`crate::Error`].
//! Note that [`WalStorage::create_snapshot`] also compacts the log itself, keeping
//! `WalOptions::keep_entries` entries behind the snapshot.

use concord_storage_wal::WalStorage;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};

use crate::error::BoxError;
use crate::store::LogStore;

impl LogStore for WalStorage {
    fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), BoxError> {
        Ok(WalStorage::append(self, entries, hard_state)?)
    }

    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), BoxError> {
        Ok(WalStorage::set_hard_state(self, hard_state)?)
    }

    fn set_conf_state(&mut self, conf_state: &ConfState) -> Result<(), BoxError> {
        Ok(WalStorage::set_conf_state(self, conf_state)?)
    }

    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), BoxError> {
        Ok(WalStorage::apply_snapshot(self, snapshot)?)
    }

    fn create_snapshot(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<(), BoxError> {
        Ok(WalStorage::create_snapshot(self, index, conf_state, data)?)
    }

    fn compact(&mut self, index: u64) -> Result<(), BoxError> {
        Ok(WalStorage::compact(self, index)?)
    }

    fn latest_snapshot(&self) -> Result<Snapshot, BoxError> {
        Ok(self.last_snapshot().cloned().unwrap_or_default())
    }
}
