//! A deterministic in-process cluster: N [`Node`]s over [`MemLogStore`]s, every message
//! routed by the test (deliver in any order, drop, delay, partition, isolate), members
//! crashed and restarted with exactly what they persisted, and the safety invariants
//! checked after every step:
//!
//! - at most one leader per term;
//! - committed prefixes agree on every member;
//! - an applied entry never changes (and no member applies an index twice or skips one);
//! - a linearizable read returns an index covering every write acknowledged before the
//!   read started, and is served only once that index is applied;
//!
//! and, by [`Cluster::converge`] after the network heals, liveness: every acknowledged
//! proposal is applied on every member and no proposal or read is left without an
//! outcome.
//!
//! [`random_schedule`] drives a cluster with a seeded scheduler (ChaCha8): the same seed
//! replays the same run. Besides the network faults and crashes it duplicates
//! messages, crashes members in the middle of their Ready handling (a [`CrashSwitch`]
//! fails the n-th durable write), lets state machines lose their unflushed applies on a
//! crash, changes membership (learners, promotions, removals, joint swaps with fresh
//! member ids), transfers leadership, and uses small message/in-flight/Ready limits.
//! Every member also checks that each conf change leads to the same configuration at
//! the same index everywhere.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use raft::eraftpb::{ConfChangeV2, Message, MessageType, SnapshotMetadata};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{BoxError, ProposalError, ProposeError, ReadError};
use crate::{
    Committed, CrashSwitch, LogStore, MemLogStore, Node, NodeConfig, SimulatedCrash, StateMachine,
};

/// A state machine that records what it applied: the set of applied proposal ids (with
/// their index), a fingerprint of every applied entry, and any contract violation.
#[derive(Debug, Default, Clone)]
pub struct TestStateMachine {
    applied: u64,
    applied_ids: BTreeMap<u64, u64>,
    /// Fingerprints of entries applied since the harness last looked.
    fresh: Vec<(u64, u64)>,
    /// Configurations resulting from conf changes applied since the harness last looked.
    fresh_confs: Vec<(u64, String)>,
    violations: Vec<String>,
    crash: CrashSwitch,
    restores: u64,
    /// Apply batches between two flushes (0 or 1: every batch is durable at once). A
    /// crash loses what was applied since the last flush, like a backend that commits
    /// without fsync; the node then re-delivers those entries.
    flush_every: u64,
    batches_since_flush: u64,
    durable_applied: u64,
    /// Checkpoint in place (flush, keep no data in the log store) instead of handing
    /// the serialised state to the log store at each local snapshot.
    checkpoints_in_place: bool,
}

/// The error the test state machine returns when its crash switch trips.
#[derive(Debug, thiserror::Error)]
#[error("test state machine: {0}")]
pub struct TestSmError(String);

fn fingerprint(entry: &Committed) -> u64 {
    let mut h = DefaultHasher::new();
    match entry {
        Committed::Normal {
            index,
            term,
            id,
            origin,
            data,
        } => (0u8, index, term, id, origin, data).hash(&mut h),
        Committed::ConfChange {
            index, term, id, ..
        } => (1u8, index, term, id).hash(&mut h),
        Committed::Empty { index, term } => (2u8, index, term).hash(&mut h),
    }
    h.finish()
}

impl TestStateMachine {
    /// Proposal ids applied, with the index each was applied at.
    pub fn applied_ids(&self) -> &BTreeMap<u64, u64> {
        &self.applied_ids
    }

    /// A crash: forget everything applied since the last flush.
    fn lose_unflushed(&mut self) {
        let durable = self.durable_applied;
        self.applied_ids.retain(|_, index| *index <= durable);
        self.applied = durable;
        self.batches_since_flush = 0;
    }

    /// A state machine that checkpoints in place: it flushes at each local snapshot and
    /// leaves no data in the log store (see [`StateMachine::checkpoint`]).
    pub fn checkpointing() -> Self {
        TestStateMachine {
            checkpoints_in_place: true,
            ..Default::default()
        }
    }

    /// How many snapshots were restored into this state machine.
    pub fn restores(&self) -> u64 {
        self.restores
    }
}

impl StateMachine for TestStateMachine {
    type Output = ();

    fn apply(&mut self, entries: &[Committed]) -> Result<Vec<()>, BoxError> {
        self.crash.check()?;
        for entry in entries {
            if entry.index() != self.applied + 1 {
                self.violations.push(format!(
                    "applied index {} after {} (re-applied or skipped)",
                    entry.index(),
                    self.applied
                ));
            }
            match entry {
                Committed::Normal { id, index, .. }
                | Committed::ConfChange {
                    id: Some(id),
                    index,
                    ..
                } => {
                    self.applied_ids.insert(*id, *index);
                }
                _ => {}
            }
            self.fresh.push((entry.index(), fingerprint(entry)));
            if let Committed::ConfChange {
                index,
                conf_state: Some(cs),
                ..
            } = entry
            {
                let sorted = |v: &[u64]| {
                    let mut v = v.to_vec();
                    v.sort_unstable();
                    v
                };
                let conf = format!(
                    "voters {:?} outgoing {:?} learners {:?} next {:?} auto_leave {}",
                    sorted(&cs.voters),
                    sorted(&cs.voters_outgoing),
                    sorted(&cs.learners),
                    sorted(&cs.learners_next),
                    cs.auto_leave
                );
                self.fresh_confs.push((*index, conf));
            }
            self.applied = entry.index();
        }
        self.batches_since_flush += 1;
        let ends_with_conf_change = matches!(entries.last(), Some(Committed::ConfChange { .. }));
        if self.batches_since_flush >= self.flush_every || ends_with_conf_change {
            self.durable_applied = self.applied;
            self.batches_since_flush = 0;
        }
        Ok(vec![(); entries.len()])
    }

    fn applied_index(&self) -> u64 {
        self.applied
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, BoxError> {
        let mut out = Vec::with_capacity(8 + self.applied_ids.len() * 16);
        out.extend_from_slice(&self.applied.to_be_bytes());
        for (id, index) in &self.applied_ids {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&index.to_be_bytes());
        }
        Ok(out)
    }

    fn checkpoint(&mut self) -> Result<Option<Vec<u8>>, BoxError> {
        if !self.checkpoints_in_place {
            return self.snapshot().map(Some);
        }
        self.crash.check()?;
        self.durable_applied = self.applied;
        self.batches_since_flush = 0;
        Ok(None)
    }

    fn restore(&mut self, meta: &SnapshotMetadata, data: &[u8]) -> Result<(), BoxError> {
        self.crash.check()?;
        let mut ids = BTreeMap::new();
        if !data.is_empty() {
            let words: Vec<u64> = data
                .chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
                .collect();
            if words.first() != Some(&meta.index) || words.len() % 2 != 1 {
                return Err(Box::new(TestSmError(format!(
                    "snapshot data does not match its index {}",
                    meta.index
                ))));
            }
            for pair in words[1..].chunks_exact(2) {
                ids.insert(pair[0], pair[1]);
            }
        }
        self.applied_ids = ids;
        self.applied = meta.index;
        self.restores += 1;
        self.durable_applied = meta.index;
        self.batches_since_flush = 0;
        Ok(())
    }
}

/// A [`LogStore`] the harness can crash: `recover` yields what a restart finds (reopen
/// from disk; for [`MemLogStore`] the value itself, as every mutation is durable), and
/// the [`CrashSwitch`] fails durable writes at an exact point.
pub trait HarnessStore: LogStore + Sized {
    /// The store as a restarted process would find it.
    fn recover(self) -> Result<Self, BoxError>;
    /// Fail durable writes as `crash` says.
    fn set_crash_switch(&mut self, crash: CrashSwitch);
}

impl HarnessStore for MemLogStore {
    fn recover(self) -> Result<Self, BoxError> {
        Ok(self)
    }
    fn set_crash_switch(&mut self, crash: CrashSwitch) {
        MemLogStore::set_crash_switch(self, crash);
    }
}

mod wal;
pub use wal::CrashableWal;

/// Whether `error` (or an error it wraps) is the [`SimulatedCrash`] of a tripped switch.
fn is_simulated_crash(error: &crate::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<SimulatedCrash>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// A message on the simulated wire.
#[derive(Debug, Clone)]
struct Envelope {
    from: u64,
    to: u64,
    message: Message,
}

struct Member<S: LogStore> {
    node: Option<Node<S>>,
    /// The store of a crashed member (what it had persisted).
    stopped_store: Option<S>,
    sm: TestStateMachine,
    crash: CrashSwitch,
    /// Reads in flight on this member: read id -> highest acknowledged index at request.
    reads: BTreeMap<u64, u64>,
}

/// Knobs for the nodes of a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Snapshot every this many applied entries.
    pub snapshot_interval: u64,
    /// Entries kept behind a snapshot.
    pub snapshot_catchup_entries: u64,
    /// Limit on uncommitted bytes at the leader.
    pub max_uncommitted_size: u64,
    /// Weight of membership changes in [`Cluster::random_step`] (0: none; the other
    /// actions weigh about 800 in total).
    pub membership_changes: u32,
    /// The state machines make their applies durable every this many batches (0 or 1:
    /// every batch); a crash loses the rest.
    pub sm_flush_every: u64,
    /// Maximum bytes per append message.
    pub max_size_per_msg: u64,
    /// Maximum append messages in flight per follower.
    pub max_inflight_msgs: usize,
    /// Maximum bytes of committed entries per Ready.
    pub max_committed_size_per_ready: u64,
    /// The state machines checkpoint in place ([`StateMachine::checkpoint`] returns
    /// `None`), so leaders serialise them only when they send a snapshot.
    pub checkpoints_in_place: bool,
    /// Followers forward proposals to the leader ([`NodeConfig::forward_proposals`]);
    /// random steps then propose on any member.
    pub forward_proposals: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            snapshot_interval: 10_000,
            snapshot_catchup_entries: 5_000,
            max_uncommitted_size: 1 << 30,
            membership_changes: 0,
            sm_flush_every: 1,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            max_committed_size_per_ready: 64 * 1024 * 1024,
            checkpoints_in_place: false,
            forward_proposals: false,
        }
    }
}

/// N members in one process; see the module documentation.
pub struct Cluster<S: HarnessStore = MemLogStore> {
    rng: ChaCha8Rng,
    options: ClusterOptions,
    new_store: Box<dyn FnMut(u64) -> S>,
    members: BTreeMap<u64, Member<S>>,
    wire: Vec<Envelope>,
    /// Directed links that drop everything.
    cut: BTreeSet<(u64, u64)>,
    incarnation: u64,
    next_request_id: u64,
    leaders_by_term: BTreeMap<u64, u64>,
    committed_terms: BTreeMap<u64, u64>,
    checked_commit: BTreeMap<u64, u64>,
    applied_fingerprints: BTreeMap<u64, u64>,
    applied_confs: BTreeMap<u64, String>,
    /// Proposals acknowledged (applied on the proposer): id -> index.
    acked: BTreeMap<u64, u64>,
    /// Proposals that failed: id -> error.
    failed: BTreeMap<u64, ProposalError>,
    /// Reads completed: read id -> index.
    reads_done: BTreeMap<u64, u64>,
    reads_failed: BTreeSet<u64>,
    conf_change_ids: BTreeSet<u64>,
    /// Members ever added (a removed member id is never reused, as in etcd).
    ever_added: BTreeSet<u64>,
    violation: Option<String>,
    /// Counters for reports.
    pub stats: Stats,
}

/// What happened during a run.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Messages delivered.
    pub delivered: u64,
    /// Messages dropped (randomly or by a cut link or a down member).
    pub dropped: u64,
    /// Crashes (including crashes in the middle of Ready handling).
    pub crashes: u64,
    /// Crashes in the middle of Ready handling: an armed [`CrashSwitch`] refused a
    /// durable write (see [`Cluster::arm_crash`]).
    pub ready_crashes: u64,
    /// Snapshots restored from a leader.
    pub snapshots_restored: u64,
    /// Snapshots members took themselves (their log compacted behind them).
    pub snapshots_created: u64,
    /// Proposals acknowledged.
    pub acked: u64,
    /// Proposals failed after acceptance.
    pub failed: u64,
    /// Reads completed.
    pub reads: u64,
    /// Conf changes applied (acknowledged).
    pub conf_changes: u64,
}

impl Stats {
    /// Adds the counts of `other` (to sum the runs of many seeds).
    pub fn add(&mut self, other: &Stats) {
        let Stats {
            delivered,
            dropped,
            crashes,
            ready_crashes,
            snapshots_restored,
            snapshots_created,
            acked,
            failed,
            reads,
            conf_changes,
        } = other;
        self.delivered += delivered;
        self.dropped += dropped;
        self.crashes += crashes;
        self.ready_crashes += ready_crashes;
        self.snapshots_restored += snapshots_restored;
        self.snapshots_created += snapshots_created;
        self.acked += acked;
        self.failed += failed;
        self.reads += reads;
        self.conf_changes += conf_changes;
    }
}

impl Cluster<MemLogStore> {
    /// A cluster of `voters` founding members (ids 1..=voters) with default options.
    pub fn new(voters: u64, seed: u64) -> Self {
        Self::with_options(voters, seed, ClusterOptions::default())
    }

    /// A cluster of `voters` founding members with `options`.
    pub fn with_options(voters: u64, seed: u64, options: ClusterOptions) -> Self {
        Cluster::with_stores(voters, seed, options, Box::new(|_| MemLogStore::new()))
    }
}

impl<S: HarnessStore> Cluster<S> {
    /// A cluster of `voters` founding members whose empty stores come from `new_store`
    /// (called with the member id).
    pub fn with_stores(
        voters: u64,
        seed: u64,
        options: ClusterOptions,
        new_store: Box<dyn FnMut(u64) -> S>,
    ) -> Self {
        let mut cluster = Cluster {
            rng: ChaCha8Rng::seed_from_u64(seed),
            options,
            new_store,
            members: BTreeMap::new(),
            wire: Vec::new(),
            cut: BTreeSet::new(),
            incarnation: 0,
            next_request_id: 1,
            leaders_by_term: BTreeMap::new(),
            committed_terms: BTreeMap::new(),
            checked_commit: BTreeMap::new(),
            applied_fingerprints: BTreeMap::new(),
            applied_confs: BTreeMap::new(),
            acked: BTreeMap::new(),
            failed: BTreeMap::new(),
            reads_done: BTreeMap::new(),
            reads_failed: BTreeSet::new(),
            conf_change_ids: BTreeSet::new(),
            ever_added: BTreeSet::new(),
            violation: None,
            stats: Stats::default(),
        };
        let ids: Vec<u64> = (1..=voters).collect();
        cluster.ever_added.extend(&ids);
        for &id in &ids {
            let mut store = (cluster.new_store)(id);
            if let Err(e) = Node::bootstrap(&mut store, &ids) {
                cluster.violate(format!("bootstrap of {id} failed: {e}"));
            }
            cluster.insert_member(id, store);
        }
        cluster
    }

    /// Add a member process with an empty store (not yet in the configuration: propose
    /// a conf change to add it; the leader then sends it a snapshot).
    pub fn add_process(&mut self, id: u64) {
        let store = (self.new_store)(id);
        self.insert_member(id, store);
    }

    fn insert_member(&mut self, id: u64, store: S) {
        let crash = CrashSwitch::default();
        let sm = TestStateMachine {
            crash: crash.clone(),
            flush_every: self.options.sm_flush_every,
            checkpoints_in_place: self.options.checkpoints_in_place,
            ..Default::default()
        };
        self.members.insert(
            id,
            Member {
                node: None,
                stopped_store: Some(store),
                sm,
                crash,
                reads: BTreeMap::new(),
            },
        );
        self.restart(id);
    }

    fn node_config(&mut self, id: u64) -> NodeConfig {
        self.incarnation += 1;
        let mut config = NodeConfig::new(id);
        // raft-rs draws the randomised election timeout from its own thread RNG; a
        // one-tick range makes it deterministic. Distinct per member, so that members
        // ticked in lockstep (as `converge` does) cannot split votes forever; the random
        // schedule still ticks members unevenly.
        let timeout = 10 + 2 * (id.saturating_sub(1) as usize);
        config.min_election_tick = timeout;
        config.max_election_tick = timeout + 1;
        config.snapshot_interval = self.options.snapshot_interval;
        config.forward_proposals = self.options.forward_proposals;
        config.snapshot_catchup_entries = self.options.snapshot_catchup_entries;
        config.max_uncommitted_size = self.options.max_uncommitted_size;
        config.max_inflight_msgs = self.options.max_inflight_msgs;
        config.max_committed_size_per_ready = self.options.max_committed_size_per_ready;
        // raft requires max_size_per_msg <= max_uncommitted_size.
        config.max_size_per_msg = self
            .options
            .max_size_per_msg
            .min(config.max_uncommitted_size);
        config.incarnation = self.incarnation;
        config
    }

    fn violate(&mut self, message: String) {
        if self.violation.is_none() {
            self.violation = Some(message);
        }
    }

    /// The first invariant violation seen, if any.
    pub fn violation(&self) -> Option<&str> {
        self.violation.as_deref()
    }

    /// Panic with the first invariant violation, if any.
    pub fn assert_ok(&self) {
        if let Some(v) = &self.violation {
            panic!("invariant violated: {v}");
        }
    }

    /// Ids of all member processes (up or down).
    pub fn ids(&self) -> Vec<u64> {
        self.members.keys().copied().collect()
    }

    /// Ids of the members that are up.
    pub fn live_ids(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|(_, m)| m.node.is_some())
            .map(|(&id, _)| id)
            .collect()
    }

    /// The node of a member that is up.
    pub fn node(&self, id: u64) -> Option<&Node<S>> {
        self.members.get(&id).and_then(|m| m.node.as_ref())
    }

    /// The node of a member that is up, mutable (tests of this crate only).
    #[cfg(test)]
    pub(crate) fn node_mut(&mut self, id: u64) -> Option<&mut Node<S>> {
        self.members.get_mut(&id).and_then(|m| m.node.as_mut())
    }

    /// A member's state machine.
    pub fn sm(&self, id: u64) -> Option<&TestStateMachine> {
        self.members.get(&id).map(|m| &m.sm)
    }

    /// The live leader with the highest term, if any.
    pub fn leader(&self) -> Option<u64> {
        self.members
            .iter()
            .filter_map(|(&id, m)| m.node.as_ref().map(|n| (id, n)))
            .filter(|(_, n)| n.is_leader())
            .max_by_key(|(_, n)| n.term())
            .map(|(id, _)| id)
    }

    /// Proposals acknowledged so far: id -> index.
    pub fn acked(&self) -> &BTreeMap<u64, u64> {
        &self.acked
    }

    /// Proposals that failed: id -> error.
    pub fn failed(&self) -> &BTreeMap<u64, ProposalError> {
        &self.failed
    }

    /// Completed reads: read id -> index.
    pub fn reads_done(&self) -> &BTreeMap<u64, u64> {
        &self.reads_done
    }

    /// Reads that failed.
    pub fn reads_failed(&self) -> &BTreeSet<u64> {
        &self.reads_failed
    }

    /// Messages on the wire.
    pub fn in_flight(&self) -> usize {
        self.wire.len()
    }

    // ----- faults -------------------------------------------------------------------

    /// Crash member `id`: volatile state is lost, the store keeps what it persisted.
    pub fn crash(&mut self, id: u64) {
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        let Some(node) = member.node.take() else {
            return;
        };
        member.reads.clear();
        member.sm.lose_unflushed();
        self.stats.crashes += 1;
        match node.into_store().recover() {
            Ok(store) => member.stopped_store = Some(store),
            Err(e) => self.violate(format!("member {id} cannot recover its store: {e}")),
        }
    }

    /// Restart a crashed member from its store and its state machine's durable state.
    pub fn restart(&mut self, id: u64) {
        let config = self.node_config(id);
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        let Some(mut store) = member.stopped_store.take() else {
            return;
        };
        member.crash.disarm();
        store.set_crash_switch(member.crash.clone());
        match Node::new(config, store, &mut member.sm) {
            Ok(node) => member.node = Some(node),
            Err(e) => {
                let message = format!("restart of {id} failed: {e}");
                self.violate(message);
            }
        }
    }

    /// Let member `id` make `successes` more durable writes, then crash at the next one
    /// (in the middle of its Ready handling). A restart disarms the switch.
    pub fn arm_crash(&mut self, id: u64, successes: u64) {
        if let Some(m) = self.members.get(&id) {
            m.crash.arm(successes);
        }
    }

    /// How many armed crashes of member `id` happened (its switch refused a durable
    /// write), over the whole run.
    pub fn crashes_fired(&self, id: u64) -> u64 {
        self.members.get(&id).map_or(0, |m| m.crash.fired())
    }

    /// Cut every link between different groups (both directions).
    pub fn partition(&mut self, groups: &[&[u64]]) {
        self.cut.clear();
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i != j {
                    for &x in a.iter() {
                        for &y in b.iter() {
                            self.cut.insert((x, y));
                        }
                    }
                }
            }
        }
    }

    /// Cut `id` off from every other member.
    pub fn isolate(&mut self, id: u64) {
        for other in self.ids() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    /// Restore every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    // ----- driving ------------------------------------------------------------------

    fn with_node<T>(&mut self, id: u64, f: impl FnOnce(&mut Node<S>) -> T) -> Option<T> {
        let member = self.members.get_mut(&id)?;
        let node = member.node.as_mut()?;
        let result = f(node);
        self.process(id);
        Some(result)
    }

    /// One tick on member `id`.
    pub fn tick(&mut self, id: u64) {
        self.with_node(id, |n| n.tick());
    }

    /// One tick on every live member.
    pub fn tick_all(&mut self) {
        for id in self.live_ids() {
            self.tick(id);
        }
    }

    /// Make `id` campaign now.
    pub fn campaign(&mut self, id: u64) {
        if self
            .with_node(id, |n| n.campaign())
            .is_some_and(|r| r.is_err())
        {
            self.violate(format!("campaign on {id} failed"));
        }
    }

    /// Propose on member `id`; returns the request id.
    pub fn propose(&mut self, id: u64, data: Vec<u8>) -> Result<u64, ProposeError> {
        let request = self.next_request_id;
        self.next_request_id += 1;
        self.with_node(id, |n| n.propose(request, data))
            .unwrap_or(Err(ProposeError::NotLeader { leader_id: 0 }))?;
        Ok(request)
    }

    /// Propose a conf change on member `id`; returns the request id.
    pub fn propose_conf_change(
        &mut self,
        id: u64,
        change: ConfChangeV2,
    ) -> Result<u64, ProposeError> {
        let request = self.next_request_id;
        self.next_request_id += 1;
        self.with_node(id, |n| n.propose_conf_change(request, change))
            .unwrap_or(Err(ProposeError::NotLeader { leader_id: 0 }))?;
        self.conf_change_ids.insert(request);
        Ok(request)
    }

    /// Start a linearizable read on member `id`; returns the read id.
    pub fn read(&mut self, id: u64) -> Result<u64, ReadError> {
        let read = self.next_request_id;
        self.next_request_id += 1;
        let floor = self.acked.values().copied().max().unwrap_or(0);
        // Registered first: the read may complete within the call (single voter).
        if let Some(m) = self.members.get_mut(&id) {
            m.reads.insert(read, floor);
        }
        let result = self
            .with_node(id, |n| n.read_index(read))
            .unwrap_or(Err(ReadError::Timeout));
        if let Err(e) = result {
            if let Some(m) = self.members.get_mut(&id) {
                m.reads.remove(&read);
            }
            return Err(e);
        }
        Ok(read)
    }

    /// Ask leader `id` to transfer leadership to `to`.
    pub fn transfer_leader(&mut self, id: u64, to: u64) {
        self.with_node(id, |n| n.transfer_leader(to));
    }

    /// Handle every Ready of member `id`, then check the invariants.
    fn process(&mut self, id: u64) {
        let mut guard = 0;
        loop {
            guard += 1;
            let Some(member) = self.members.get_mut(&id) else {
                return;
            };
            let Some(node) = member.node.as_mut() else {
                return;
            };
            if !node.has_ready() {
                break;
            }
            if guard > 1000 {
                self.violate(format!("member {id} never runs out of Ready"));
                return;
            }
            let mut outbox: Vec<Message> = Vec::new();
            let result = node.handle_ready(&mut member.sm, &mut outbox);
            for message in outbox {
                self.wire.push(Envelope {
                    from: id,
                    to: message.to,
                    message,
                });
            }
            match result {
                Ok(outcome) => self.record(id, outcome),
                Err(e) => {
                    // A failed durable write is fatal: the member crashes. Only the armed
                    // crash switch may make it fail; anything else is a bug the crash
                    // must not hide.
                    let tripped = self.members.get(&id).is_some_and(|m| m.crash.tripped());
                    if tripped && is_simulated_crash(&e) {
                        self.stats.ready_crashes += 1;
                    } else {
                        self.violate(format!("member {id} failed to handle a Ready: {e}"));
                    }
                    self.crash(id);
                    return;
                }
            }
        }
        self.check(id);
    }

    fn record(&mut self, id: u64, outcome: crate::ReadyOutcome) {
        if outcome.snapshot_restored.is_some() {
            self.stats.snapshots_restored += 1;
        }
        if outcome.snapshot_created.is_some() {
            self.stats.snapshots_created += 1;
        }
        for p in outcome.proposals {
            match p.result {
                Ok(index) => {
                    self.stats.acked += 1;
                    if self.conf_change_ids.contains(&p.id) {
                        self.stats.conf_changes += 1;
                    }
                    if self.acked.insert(p.id, index).is_some() {
                        self.violate(format!("proposal {} acknowledged twice", p.id));
                    }
                }
                Err(e) => {
                    self.stats.failed += 1;
                    if self.acked.contains_key(&p.id) {
                        self.violate(format!("proposal {} failed after its ack", p.id));
                    }
                    self.failed.insert(p.id, e);
                }
            }
        }
        let applied = self.members.get(&id).map_or(0, |m| m.sm.applied);
        for r in outcome.reads {
            let floor = self
                .members
                .get_mut(&id)
                .and_then(|m| m.reads.remove(&r.id));
            let Some(floor) = floor else {
                self.violate(format!("unknown read {} completed on {id}", r.id));
                continue;
            };
            match r.result {
                Ok(index) => {
                    self.stats.reads += 1;
                    if index < floor {
                        self.violate(format!(
                            "stale read {} on {id}: index {index} < acknowledged write {floor}",
                            r.id
                        ));
                    }
                    if applied < index {
                        self.violate(format!(
                            "read {} on {id} served at applied {applied} < read index {index}",
                            r.id
                        ));
                    }
                    self.reads_done.insert(r.id, index);
                }
                Err(_) => {
                    self.reads_failed.insert(r.id);
                }
            }
        }
    }

    /// The invariants, for member `id` (the others did not change).
    fn check(&mut self, id: u64) {
        let mut violations = Vec::new();
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        violations.append(&mut member.sm.violations);
        let fresh = std::mem::take(&mut member.sm.fresh);
        for (index, fp) in fresh {
            let seen = *self.applied_fingerprints.entry(index).or_insert(fp);
            if seen != fp {
                violations.push(format!("member {id} applied a different entry at {index}"));
            }
        }
        for (index, conf) in std::mem::take(&mut member.sm.fresh_confs) {
            let seen = self
                .applied_confs
                .entry(index)
                .or_insert_with(|| conf.clone());
            if *seen != conf {
                violations.push(format!(
                    "member {id} reached configuration {conf} at {index}, others {seen}"
                ));
            }
        }
        if let Some(node) = member.node.as_ref() {
            if node.is_leader() {
                let leader = *self.leaders_by_term.entry(node.term()).or_insert(id);
                if leader != id {
                    violations.push(format!(
                        "two leaders in term {}: {leader} and {id}",
                        node.term()
                    ));
                }
            }
            let commit = node.commit_index();
            let checked = self.checked_commit.entry(id).or_insert(0);
            let log = &node.raw().raft.raft_log;
            let first = log.first_index();
            for index in (*checked + 1).max(first)..=commit {
                let Ok(term) = log.term(index) else {
                    continue;
                };
                let known = *self.committed_terms.entry(index).or_insert(term);
                if known != term {
                    violations.push(format!(
                        "member {id} committed term {term} at {index}, others term {known}"
                    ));
                }
            }
            *checked = (*checked).max(commit);
        }
        for v in violations {
            self.violate(v);
        }
    }

    fn deliver(&mut self, envelope: Envelope, drop: bool) {
        let Envelope { from, to, message } = envelope;
        let is_snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
        let link_cut = self.cut.contains(&(from, to));
        let target_up = self.node(to).is_some();
        if drop || link_cut || !target_up {
            self.stats.dropped += 1;
            let report_unreachable = link_cut || !target_up;
            self.with_node(from, |n| {
                if is_snapshot {
                    n.report_snapshot(to, false);
                }
                if report_unreachable {
                    n.report_unreachable(to);
                }
            });
            return;
        }
        self.stats.delivered += 1;
        // Errors only mean "ignored" (e.g. a response from a removed member).
        let _ = self.with_node(to, |n| n.step(message));
        if is_snapshot {
            self.with_node(from, |n| n.report_snapshot(to, true));
        }
    }

    /// Deliver (or drop, if the link is cut) the message at `position` on the wire.
    pub fn deliver_at(&mut self, position: usize) {
        if position < self.wire.len() {
            let envelope = self.wire.remove(position);
            self.deliver(envelope, false);
        }
    }

    /// Drop the message at `position` on the wire.
    pub fn drop_at(&mut self, position: usize) {
        if position < self.wire.len() {
            let envelope = self.wire.remove(position);
            self.deliver(envelope, true);
        }
    }

    /// Deliver messages in order until the wire is empty (bounded).
    pub fn deliver_all(&mut self) {
        let mut budget = 100_000;
        while !self.wire.is_empty() && budget > 0 {
            budget -= 1;
            self.deliver_at(0);
        }
    }

    /// Drop every message for which `pred(from, to, message)` holds, deliver the rest.
    pub fn deliver_all_except(&mut self, mut pred: impl FnMut(u64, u64, &Message) -> bool) {
        let mut budget = 100_000;
        while !self.wire.is_empty() && budget > 0 {
            budget -= 1;
            let envelope = self.wire.remove(0);
            let drop = pred(envelope.from, envelope.to, &envelope.message);
            self.deliver(envelope, drop);
        }
    }

    /// `n` rounds of: tick everyone, deliver everything.
    pub fn run_ticks(&mut self, n: usize) {
        for _ in 0..n {
            self.tick_all();
            self.deliver_all();
        }
    }

    /// Make `id` leader: campaign and deliver until it wins (or `Err` after a while).
    pub fn elect(&mut self, id: u64) -> Result<(), String> {
        self.campaign(id);
        self.deliver_all();
        for _ in 0..200 {
            if self
                .node(id)
                .is_some_and(|n| n.is_leader() && n.applied_index() >= n.commit_index())
            {
                return Ok(());
            }
            self.run_ticks(1);
        }
        Err(format!("{id} did not become leader"))
    }

    /// Run until every acknowledged proposal is applied on every live voter or learner
    /// in the configuration, and nothing is left pending; `Err` after `max_ticks`.
    pub fn converge(&mut self, max_ticks: usize) -> Result<(), String> {
        for _ in 0..max_ticks {
            self.run_ticks(1);
            if self.violation.is_some() {
                break;
            }
            if self.converged() {
                return Ok(());
            }
        }
        self.assert_converged()
    }

    fn converged(&self) -> bool {
        self.assert_converged().is_ok()
    }

    /// One line per member: role, term, leader, commit, applied, configuration.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (id, m) in &self.members {
            match &m.node {
                None => out.push_str(&format!("\n  {id}: down")),
                Some(n) => out.push_str(&format!(
                    "\n  {id}: {:?} term {} leader {} commit {} applied {} last {} removed {} conf {:?}",
                    n.role(),
                    n.term(),
                    n.leader_id(),
                    n.commit_index(),
                    n.applied_index(),
                    n.last_index(),
                    n.is_removed(),
                    n.conf_state()
                )),
            }
        }
        out
    }

    fn assert_converged(&self) -> Result<(), String> {
        if let Some(v) = &self.violation {
            return Err(format!("invariant violated: {v}"));
        }
        let leader = self
            .leader()
            .ok_or_else(|| format!("no leader:{}", self.describe()))?;
        let leader_node = self.node(leader).ok_or("leader down")?;
        let commit = leader_node.commit_index();
        let conf = leader_node.conf_state();
        let members: BTreeSet<u64> = conf.voters.iter().chain(&conf.learners).copied().collect();
        for &id in &members {
            let node = self.node(id).ok_or(format!("member {id} is down"))?;
            let sm = self.sm(id).ok_or("no state machine")?;
            if node.applied_index() < commit || sm.applied < commit {
                return Err(format!(
                    "member {id} applied {} < leader commit {commit}",
                    node.applied_index()
                ));
            }
            for (request, index) in &self.acked {
                if sm.applied_ids.get(request) != Some(index) {
                    return Err(format!(
                        "acknowledged proposal {request} (index {index}) not applied on {id}"
                    ));
                }
            }
            for (request, error) in &self.failed {
                if matches!(
                    error,
                    ProposalError::Overwritten { .. } | ProposalError::Dropped { .. }
                ) && sm.applied_ids.contains_key(request)
                {
                    return Err(format!(
                        "proposal {request} reported {error} but applied on {id}"
                    ));
                }
            }
            if node.pending_proposals() > 0 || node.pending_reads() > 0 {
                return Err(format!(
                    "member {id} has {} proposals and {} reads without outcome",
                    node.pending_proposals(),
                    node.pending_reads()
                ));
            }
        }
        Ok(())
    }

    // ----- random schedules ---------------------------------------------------------

    fn random_live(&mut self) -> Option<u64> {
        let live = self.live_ids();
        if live.is_empty() {
            None
        } else {
            Some(live[self.rng.random_range(0..live.len())])
        }
    }

    /// One random step of a schedule.
    pub fn random_step(&mut self) {
        let ids = self.ids();
        let wire = self.wire.len() as u32;
        // Weights: delivering grows with the backlog so the wire stays bounded.
        let weights: [(u32, u8); 14] = [
            (300 + 10 * wire, 0), // deliver a random message (reorder, delay)
            (20, 1),              // drop a random message
            (250, 2),             // tick a random member
            (100, 3),             // propose on the leader
            (40, 4),              // linearizable read on a random member
            (3, 5),               // crash a member
            (20, 6),              // restart a crashed member
            (3, 7),               // crash in the middle of a later Ready
            (8, 8),               // random partition
            (15, 9),              // heal
            (4, 10),              // isolate one member
            (3, 11),              // leader transfer
            (self.options.membership_changes, 12), // a conf change
            (10, 13),             // duplicate a random message
        ];
        let total: u32 = weights.iter().map(|w| w.0).sum();
        let mut pick = self.rng.random_range(0..total);
        let mut action = 0;
        for (w, a) in weights {
            if pick < w {
                action = a;
                break;
            }
            pick -= w;
        }
        match action {
            0 if !self.wire.is_empty() => {
                let i = self.rng.random_range(0..self.wire.len());
                self.deliver_at(i);
            }
            1 if !self.wire.is_empty() => {
                let i = self.rng.random_range(0..self.wire.len());
                self.drop_at(i);
            }
            2 => {
                if let Some(id) = self.random_live() {
                    self.tick(id);
                }
            }
            3 if self.options.forward_proposals => {
                if let Some(id) = self.random_live() {
                    let len = self.rng.random_range(1..32);
                    let data: Vec<u8> = (0..len).map(|_| self.rng.random()).collect();
                    let _ = self.propose(id, data);
                }
            }
            3 => {
                if let Some(leader) = self.leader() {
                    let len = self.rng.random_range(1..32);
                    let data: Vec<u8> = (0..len).map(|_| self.rng.random()).collect();
                    let _ = self.propose(leader, data);
                }
            }
            4 => {
                if let Some(id) = self.random_live() {
                    let _ = self.read(id);
                }
            }
            5 => {
                if let Some(id) = self.random_live() {
                    self.crash(id);
                }
            }
            6 => {
                let down: Vec<u64> = ids
                    .iter()
                    .copied()
                    .filter(|&i| self.node(i).is_none())
                    .collect();
                if !down.is_empty() {
                    let id = down[self.rng.random_range(0..down.len())];
                    self.restart(id);
                }
            }
            7 => {
                if let Some(id) = self.random_live() {
                    let k = self.rng.random_range(0..4);
                    self.arm_crash(id, k);
                }
            }
            8 => {
                let mut a = Vec::new();
                let mut b = Vec::new();
                for &id in &ids {
                    if self.rng.random_bool(0.5) {
                        a.push(id);
                    } else {
                        b.push(id);
                    }
                }
                self.partition(&[&a, &b]);
            }
            9 => self.heal(),
            10 => {
                let id = ids[self.rng.random_range(0..ids.len())];
                self.isolate(id);
            }
            12 => self.random_conf_change(),
            13 if !self.wire.is_empty() => {
                let i = self.rng.random_range(0..self.wire.len());
                let copy = self.wire[i].clone();
                // A duplicated snapshot would be reported twice; raft tolerates that,
                // but keep the one-report-per-send contract of the Outbox.
                if copy.message.get_msg_type() != MessageType::MsgSnapshot {
                    self.wire.push(copy);
                }
            }
            11 => {
                if let Some(leader) = self.leader() {
                    let to = ids[self.rng.random_range(0..ids.len())];
                    if to != leader {
                        self.transfer_leader(leader, to);
                    }
                }
            }
            _ => {}
        }
    }
}

impl<S: HarnessStore> Cluster<S> {
    /// Propose a random membership change on the leader: add the spare member (as
    /// learner or voter), promote it, remove it, or swap it with another member through
    /// a joint configuration.
    fn random_conf_change(&mut self) {
        let Some(leader) = self.leader() else {
            return;
        };
        let Some(node) = self.node(leader) else {
            return;
        };
        let conf = node.conf_state();
        let ids = self.ids();
        let mut spare: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| !self.ever_added.contains(id))
            .collect();
        if spare.is_empty() && ids.len() < 12 {
            let id = ids.iter().max().copied().unwrap_or(0) + 1;
            self.add_process(id);
            spare.push(id);
        }
        let learners = conf.learners.clone();
        let voters = conf.voters.clone();
        let choice = self.rng.random_range(0..4);
        let change = match choice {
            0 if !spare.is_empty() => {
                let id = spare[self.rng.random_range(0..spare.len())];
                self.ever_added.insert(id);
                crate::codec::add_learner(id)
            }
            1 if !learners.is_empty() => {
                let id = learners[self.rng.random_range(0..learners.len())];
                crate::codec::promote_learner(id)
            }
            2 if voters.len() > 3 || !learners.is_empty() => {
                let pool = if voters.len() > 3 { &voters } else { &learners };
                let id = pool[self.rng.random_range(0..pool.len())];
                crate::codec::remove_node(id)
            }
            3 if !spare.is_empty() && voters.len() >= 3 => {
                let add = spare[self.rng.random_range(0..spare.len())];
                self.ever_added.insert(add);
                let remove = voters[self.rng.random_range(0..voters.len())];
                crate::codec::conf_change(&[
                    (raft::eraftpb::ConfChangeType::AddNode, add),
                    (raft::eraftpb::ConfChangeType::RemoveNode, remove),
                ])
            }
            _ => return,
        };
        let _ = self.propose_conf_change(leader, change);
    }
}

/// Run one random schedule of `steps` steps on a `voters`-member cluster over
/// [`MemLogStore`]s (small snapshot interval, so snapshots and compaction happen), then
/// heal, restart everyone and check liveness. `Err` carries the first violation.
pub fn random_schedule(seed: u64, voters: u64, steps: usize) -> Result<Stats, String> {
    let options = ClusterOptions {
        // Half the seeds run state machines that checkpoint in place; half (crossed)
        // forward proposals from followers.
        checkpoints_in_place: seed % 2 == 1,
        forward_proposals: seed % 4 >= 2,
        ..schedule_options()
    };
    let mut cluster = Cluster::with_options(voters, seed, options);
    // Two spare processes that membership changes can add.
    cluster.add_process(voters + 1);
    cluster.add_process(voters + 2);
    run_schedule(cluster, steps)
}

/// The cluster options random schedules use: snapshots every 24 entries, 4 kept behind.
pub fn schedule_options() -> ClusterOptions {
    ClusterOptions {
        snapshot_interval: 24,
        snapshot_catchup_entries: 4,
        membership_changes: 4,
        sm_flush_every: 3,
        // Small limits, so that appends are split, flow control kicks in and committed
        // entries arrive over several Readies.
        max_size_per_msg: 128,
        max_inflight_msgs: 4,
        max_committed_size_per_ready: 256,
        ..ClusterOptions::default()
    }
}

/// Drive `cluster` through `steps` random steps, then heal, restart everyone and check
/// liveness.
pub fn run_schedule<S: HarnessStore>(
    mut cluster: Cluster<S>,
    steps: usize,
) -> Result<Stats, String> {
    for _ in 0..steps {
        cluster.random_step();
        if let Some(v) = cluster.violation() {
            return Err(v.to_string());
        }
    }
    cluster.heal();
    for id in cluster.ids() {
        if let Some(m) = cluster.members.get(&id) {
            m.crash.disarm();
        }
        cluster.restart(id);
    }
    cluster.converge(600)?;
    Ok(cluster.stats)
}
