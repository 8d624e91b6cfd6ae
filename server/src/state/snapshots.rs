//! Raft snapshots of the store that travel as streams, never whole in memory.
//!
//! Sending: when raft needs a snapshot, the state machine (on the driver thread) takes a
//! consistent view of the store at the applied index, which costs nothing, and hands it
//! over here; the `MsgSnapshot` carries only a descriptor naming it, and the transport
//! takes the view by that descriptor and reads it off the driver thread, chunk by chunk.
//! Receiving: the transport writes the chunks to a fresh file here and the message's
//! descriptor names that file; installing verifies the file's checksum before the store
//! is touched, and deletes the file afterwards.

use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use concord_mvcc::SnapshotReader;
use parking_lot::Mutex;

/// Descriptor of a view handed over for sending: this, then a token (8 bytes, BE).
const OUTGOING: &[u8] = b"\0concord snapshot stream\n";
/// Descriptor of a received snapshot: this, then the file's path (UTF-8).
const INCOMING: &[u8] = b"\0concord snapshot file\n";
/// Views kept for the transport at most: a view pins the store's old versions, so one
/// whose message was dropped before it was sent must not live forever.
const MAX_OUTGOING: usize = 4;

/// The views handed over for sending, and the directory received snapshots go to.
pub struct SnapshotFiles {
    dir: PathBuf,
    outgoing: Mutex<VecDeque<(u64, SnapshotReader)>>,
    next: AtomicU64,
}

impl std::fmt::Debug for SnapshotFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotFiles")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SnapshotFiles {
    /// Received snapshots are written under `dir`. What a crash left there stays until
    /// [`SnapshotFiles::clear_received`]: the raft log may name a received file that a
    /// restart must still restore from.
    pub fn new(dir: PathBuf) -> std::io::Result<SnapshotFiles> {
        std::fs::create_dir_all(&dir)?;
        Ok(SnapshotFiles {
            dir,
            outgoing: Mutex::new(VecDeque::new()),
            next: AtomicU64::new(1),
        })
    }

    /// Keeps `view` for the transport; returns the descriptor that names it.
    pub fn hand_over(&self, view: SnapshotReader) -> Vec<u8> {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let mut outgoing = self.outgoing.lock();
        while outgoing.len() >= MAX_OUTGOING {
            outgoing.pop_front();
        }
        outgoing.push_back((token, view));
        let mut descriptor = OUTGOING.to_vec();
        descriptor.extend_from_slice(&token.to_be_bytes());
        descriptor
    }

    /// The view an outgoing descriptor names (once).
    pub fn take(&self, data: &[u8]) -> Option<Box<dyn Read + Send>> {
        let token = u64::from_be_bytes(data.strip_prefix(OUTGOING)?.try_into().ok()?);
        let mut outgoing = self.outgoing.lock();
        let at = outgoing.iter().position(|(t, _)| *t == token)?;
        outgoing
            .remove(at)
            .map(|(_, view)| Box::new(view) as Box<dyn Read + Send>)
    }

    /// Deletes every received file: call it once raft started on the log, which then
    /// needs none of them (a snapshot it had to restore from is restored by then).
    pub fn clear_received(&self) -> std::io::Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            std::fs::remove_file(entry?.path())?;
        }
        Ok(())
    }

    /// A fresh file for a snapshot being received, and the descriptor naming it.
    pub fn incoming(&self) -> std::io::Result<(std::fs::File, Vec<u8>)> {
        // Names must not repeat across restarts while an older file may remain.
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = self.dir.join(format!("incoming-{nanos}-{n}.snap"));
        let file = std::fs::File::create(&path)?;
        let mut descriptor = INCOMING.to_vec();
        descriptor.extend_from_slice(path.to_string_lossy().as_bytes());
        Ok((file, descriptor))
    }
}

/// The file a received snapshot's descriptor names, if `data` is one.
pub fn incoming_file(data: &[u8]) -> Option<&Path> {
    let path = std::str::from_utf8(data.strip_prefix(INCOMING)?).ok()?;
    Some(Path::new(path))
}
