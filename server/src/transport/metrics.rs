//! etcd's rafthttp metrics, per peer (labelled with the peer's id in hex, as etcd's
//! `To` / `From` labels are): bytes sent and received on the raft streams, messages
//! dropped, heartbeats that could not be sent, and the round-trip time.
//!
//! etcd measures the round trip with a prober; here it is the time from a heartbeat
//! to the peer's answer on the raft stream, which only the leader sends and so only the
//! leader reports (`etcd_network_peer_round_trip_time_seconds{To=…}`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use metrics::{Counter, Histogram, counter, histogram};
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
