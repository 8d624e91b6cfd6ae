//! etcd's rafthttp metrics, per peer (labelled with the peer's id in hex, as etcd's
//! `To` / `From` labels are): bytes sent and received on the raft streams, messages
//! dropped, heartbeats that could not be sent, and the round-trip time; the peers
//! connected and the disconnections (`Local` and `Remote`, as etcd's peer status
//! counts them); snapshots sent and received, and the received snapshot's file
//! (etcd's `etcd_snap_db_*`, timed as etcd's `SaveDBFrom` times the `.snap.db`).
//!
//! etcd measures the round trip with a prober; here it is the time from a heartbeat
//! to the peer's answer on the raft stream, which only the leader sends and so only the
//! leader reports (`etcd_network_peer_round_trip_time_seconds{To=…}`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use parking_lot::Mutex;

/// One peer's handles, registered when the peer is first seen.
pub(super) struct PeerMetrics {
    pub sent_bytes: Counter,
    pub received_bytes: Counter,
    pub sent_failures: Counter,
    round_trip: Histogram,
    /// When the oldest unanswered heartbeat to the peer left.
    heartbeat_sent: Mutex<Option<Instant>>,
}

impl PeerMetrics {
    fn new(peer: u64) -> Self {
        let id = format!("{peer:x}");
        PeerMetrics {
            sent_bytes: counter!("etcd_network_peer_sent_bytes_total", "To" => id.clone()),
            received_bytes: counter!("etcd_network_peer_received_bytes_total", "From" => id.clone()),
            sent_failures: counter!("etcd_network_peer_sent_failures_total", "To" => id.clone()),
            round_trip: histogram!("etcd_network_peer_round_trip_time_seconds", "To" => id),
            heartbeat_sent: Mutex::new(None),
        }
    }

    pub fn heartbeat_sent(&self) {
        self.heartbeat_sent.lock().get_or_insert_with(Instant::now);
    }

    pub fn heartbeat_answered(&self) {
        if let Some(sent) = self.heartbeat_sent.lock().take() {
            self.round_trip.record(sent.elapsed().as_secs_f64());
        }
    }
}

/// Every peer's [`PeerMetrics`].
#[derive(Default)]
pub(super) struct PeersMetrics {
    peers: Mutex<HashMap<u64, Arc<PeerMetrics>>>,
}

impl PeersMetrics {
    pub fn peer(&self, id: u64) -> Arc<PeerMetrics> {
        self.peers
            .lock()
            .entry(id)
            .or_insert_with(|| Arc::new(PeerMetrics::new(id)))
            .clone()
    }
}

/// A peer counted in `etcd_network_active_peers` while the guard lives (a raft stream
/// to it is up); its end counts in `etcd_network_disconnected_peers_total`, whether the
/// stream broke or the link stopped.
pub(super) struct ActivePeer {
    active: Gauge,
    disconnected: Counter,
}

impl ActivePeer {
    pub fn new(local: u64, peer: u64) -> Self {
        let labels = [
            ("Local", format!("{local:x}")),
            ("Remote", format!("{peer:x}")),
        ];
        let active = gauge!("etcd_network_active_peers", &labels);
        active.increment(1.0);
        ActivePeer {
            active,
            disconnected: counter!("etcd_network_disconnected_peers_total", &labels),
        }
    }
}

impl Drop for ActivePeer {
    fn drop(&mut self) {
        self.active.decrement(1.0);
        self.disconnected.increment(1);
    }
}

/// A snapshot sent to `peer`, taking `elapsed`: counted as a success or a failure
/// (etcd's `etcd_network_snapshot_send_*`, the duration for successes only).
pub(super) fn snapshot_sent(peer: u64, delivered: bool, elapsed: Duration) {
    let to = format!("{peer:x}");
    if delivered {
        counter!("etcd_network_snapshot_send_success", "To" => to.clone()).increment(1);
        histogram!("etcd_network_snapshot_send_total_duration_seconds", "To" => to).record(elapsed);
    } else {
        counter!("etcd_network_snapshot_send_failures", "To" => to).increment(1);
    }
}

/// A snapshot received from `peer` (0 while unknown), taking `elapsed` from its first
/// chunk until raft had it (etcd's `etcd_network_snapshot_receive_*`).
pub(super) fn snapshot_received(peer: u64, delivered: bool, elapsed: Duration) {
    let from = format!("{peer:x}");
    if delivered {
        counter!("etcd_network_snapshot_receive_success", "From" => from.clone()).increment(1);
        histogram!("etcd_network_snapshot_receive_total_duration_seconds", "From" => from)
            .record(elapsed);
    } else {
        counter!("etcd_network_snapshot_receive_failures", "From" => from).increment(1);
    }
}

/// The received snapshot's file was synced: `fsync` took `fsync`, receiving and
/// writing the whole file `total` (etcd's `etcd_snap_db_fsync_duration_seconds` and
/// `etcd_snap_db_save_total_duration_seconds`).
pub(super) fn snapshot_file_saved(fsync: Duration, total: Duration) {
    histogram!("etcd_snap_db_fsync_duration_seconds").record(fsync);
    histogram!("etcd_snap_db_save_total_duration_seconds").record(total);
}
