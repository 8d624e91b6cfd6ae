//! The raft traffic counters etcd's v2 stats report (`/v2/stats/self` and
//! `/v2/stats/leader`, etcd's `v2stats.ServerStats` and `LeaderStats`), recorded where
//! the transport sends and receives:
//!
//! - every append (`MsgAppend`) this member sends counts in `sendAppendRequestCnt` and
//!   the send rate, and makes this member the leader it reports (as etcd's
//!   `SendAppendReq` does); every append it receives counts in `recvAppendRequestCnt`
//!   and the receive rate, and names the leader it came from, with the time that leader
//!   was first seen;
//! - per follower, a success with its latency for each append answered (the time from
//!   the oldest unanswered append to the follower's `MsgAppendResponse`), and a failure
//!   for each append that could not be handed to the follower's link. etcd times the
//!   write of the append to its stream instead; both are in milliseconds.
//!
//! The rates are etcd's: requests and bytes per second over the last (at most) 200
//! appends, 0 once the newest is more than a second old.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

/// etcd's `queueCapacity`: the appends a rate is computed over.
const RATE_WINDOW: usize = 200;

/// One direction's recent appends: when, and how large.
#[derive(Debug, Default)]
struct RateQueue {
    entries: VecDeque<(Instant, usize)>,
}

impl RateQueue {
    fn insert(&mut self, at: Instant, bytes: usize) {
        if self.entries.len() == RATE_WINDOW {
            self.entries.pop_front();
        }
        self.entries.push_back((at, bytes));
    }

    /// (appends per second, bytes per second), as etcd's `statsQueue.Rate`.
    fn rate(&mut self, now: Instant) -> (f64, f64) {
        let (Some(front), Some(back)) = (self.entries.front(), self.entries.back()) else {
            return (0.0, 0.0);
        };
        if now.duration_since(back.0) > Duration::from_secs(1) {
            self.entries.clear();
            return (0.0, 0.0);
        }
        let sample = back.0.duration_since(front.0).as_secs_f64();
        let bytes: usize = self.entries.iter().map(|(_, b)| b).sum();
        // Go divides by a zero duration too, and JSON cannot carry the infinity it gets;
        // one append alone reports no rate.
        if sample == 0.0 {
            return (0.0, 0.0);
        }
        (self.entries.len() as f64 / sample, bytes as f64 / sample)
    }
}

/// One follower's append latencies (milliseconds) and outcomes.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowerStats {
    pub current: f64,
    pub average: f64,
    average_square: f64,
    pub standard_deviation: f64,
    pub minimum: f64,
    pub maximum: f64,
    pub success: u64,
    pub fail: u64,
    /// When the oldest unanswered append to the follower left.
    pending: Option<Instant>,
}

impl Default for FollowerStats {
    fn default() -> Self {
        FollowerStats {
            current: 0.0,
            average: 0.0,
            average_square: 0.0,
            standard_deviation: 0.0,
            // etcd starts the minimum at 1 << 20 ms so the first success sets it.
            minimum: f64::from(1u32 << 20),
            maximum: 0.0,
            success: 0,
            fail: 0,
            pending: None,
        }
    }
}

impl FollowerStats {
    fn succeeded(&mut self, latency: Duration) {
        let total = self.success as f64 * self.average;
        let total_square = self.success as f64 * self.average_square;
        self.success += 1;
        self.current = latency.as_secs_f64() * 1000.0;
        self.maximum = self.maximum.max(self.current);
        self.minimum = self.minimum.min(self.current);
        self.average = (total + self.current) / self.success as f64;
        self.average_square = (total_square + self.current * self.current) / self.success as f64;
        self.standard_deviation = (self.average_square - self.average * self.average)
            .max(0.0)
            .sqrt();
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// The leader this member last heard from (or itself, once it sends appends), and
    /// when it became that leader.
    leader: Option<(u64, SystemTime)>,
    recv_appends: u64,
    send_appends: u64,
    recv_rate: RateQueue,
    send_rate: RateQueue,
    followers: HashMap<u64, FollowerStats>,
}

/// What `/v2/stats/self` shows, read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct SelfStats {
    pub start_time: SystemTime,
    pub leader: Option<(u64, SystemTime)>,
    pub recv_append_request_count: u64,
    pub recv_pkg_rate: f64,
    pub recv_bandwidth_rate: f64,
    pub send_append_request_count: u64,
    pub send_pkg_rate: f64,
    pub send_bandwidth_rate: f64,
}

/// The counters of one member, shared by its transport and its HTTP face.
#[derive(Debug)]
pub struct RaftStats {
    local_id: u64,
    start_time: SystemTime,
    inner: Mutex<Inner>,
}

impl RaftStats {
    pub fn new(local_id: u64) -> Self {
        RaftStats {
            local_id,
            start_time: SystemTime::now(),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// An append of `bytes` from `leader` arrived.
    pub fn append_received(&self, leader: u64, bytes: usize) {
        let mut inner = self.inner.lock();
        if inner.leader.map(|(id, _)| id) != Some(leader) {
            inner.leader = Some((leader, SystemTime::now()));
        }
        inner.recv_rate.insert(Instant::now(), bytes);
        inner.recv_appends += 1;
    }

    /// An append of `bytes` is being sent to `to`: this member leads.
    pub fn append_sent(&self, to: u64, bytes: usize) {
        let mut inner = self.inner.lock();
        if inner.leader.map(|(id, _)| id) != Some(self.local_id) {
            inner.leader = Some((self.local_id, SystemTime::now()));
        }
        let now = Instant::now();
        inner.send_rate.insert(now, bytes);
        inner.send_appends += 1;
        inner
            .followers
            .entry(to)
            .or_default()
            .pending
            .get_or_insert(now);
    }

    /// An append to `to` could not be handed to its link.
    pub fn append_failed(&self, to: u64) {
        self.inner.lock().followers.entry(to).or_default().fail += 1;
    }

    /// `from` answered an append.
    pub fn append_answered(&self, from: u64) {
        let mut inner = self.inner.lock();
        let follower = inner.followers.entry(from).or_default();
        if let Some(sent) = follower.pending.take() {
            follower.succeeded(sent.elapsed());
        }
    }

    /// `/v2/stats/self`'s numbers now.
    pub fn self_stats(&self) -> SelfStats {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        let (recv_pkg_rate, recv_bandwidth_rate) = inner.recv_rate.rate(now);
        let (send_pkg_rate, send_bandwidth_rate) = inner.send_rate.rate(now);
        SelfStats {
            start_time: self.start_time,
            leader: inner.leader,
            recv_append_request_count: inner.recv_appends,
            recv_pkg_rate,
            recv_bandwidth_rate,
            send_append_request_count: inner.send_appends,
            send_pkg_rate,
            send_bandwidth_rate,
        }
    }

    /// Each follower's stats now, among `members` (others are forgotten, as etcd's
    /// leader stats drop a removed member).
    pub fn followers(&self, members: &[u64]) -> Vec<(u64, FollowerStats)> {
        let mut inner = self.inner.lock();
        inner.followers.retain(|id, _| members.contains(id));
        let mut list: Vec<(u64, FollowerStats)> = members
            .iter()
            .filter(|&&id| id != self.local_id)
            .map(|&id| (id, inner.followers.entry(id).or_default().clone()))
            .collect();
        list.sort_by_key(|(id, _)| *id);
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_average_as_etcds() {
        let mut f = FollowerStats::default();
        f.succeeded(Duration::from_millis(2));
        f.succeeded(Duration::from_millis(4));
        assert_eq!(f.success, 2);
        assert!((f.average - 3.0).abs() < 1e-9);
        assert!((f.standard_deviation - 1.0).abs() < 1e-9);
        assert!((f.minimum - 2.0).abs() < 1e-9);
        assert!((f.maximum - 4.0).abs() < 1e-9);
        assert!((f.current - 4.0).abs() < 1e-9);
    }

    #[test]
    fn counts_and_leaders() {
        let stats = RaftStats::new(1);
        stats.append_received(2, 100);
        stats.append_received(2, 100);
        let s = stats.self_stats();
        assert_eq!(s.recv_append_request_count, 2);
        assert_eq!(s.leader.map(|(id, _)| id), Some(2));
        stats.append_sent(3, 10);
        stats.append_answered(3);
        stats.append_failed(3);
        let s = stats.self_stats();
        assert_eq!(s.send_append_request_count, 1);
        assert_eq!(s.leader.map(|(id, _)| id), Some(1));
        let followers = stats.followers(&[1, 3]);
        assert_eq!(followers.len(), 1);
        assert_eq!((followers[0].1.success, followers[0].1.fail), (1, 1));
    }
}
