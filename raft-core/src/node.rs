//! [`Node`]: the single owner of raft-rs's `RawNode` and the one place where a `Ready`
//! is handled ([`Node::handle_ready`]).

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeV2, ConfState, Entry, EntryType, HardState, Message,
    MessageType, Snapshot, SnapshotMetadata,
};
use raft::{GetEntriesContext, RawNode, ReadOnlyOption, SnapshotStatus, StateRole};
use slog::Logger;

use crate::error::{Error, ProposeError, ReadError, Result};
use crate::state_machine::{Committed, StateMachine};
use crate::store::LogStore;
use crate::tracking::{Forwarded, LeaderView, ProposalOutcome, Proposals, ReadOutcome, Reads};

/// Where outgoing raft messages go. The driver calls `send` with early messages (a
/// leader's appends/heartbeats, sent before its own fsync as raft allows) and again with
/// messages that may only leave after the fsync. Delivery is best effort: raft retries.
/// For every `MsgSnapshot` the caller must later call [`Node::report_snapshot`].
pub trait Outbox {
    /// Hand messages to the transport.
    fn send(&mut self, messages: Vec<Message>);
}

impl Outbox for Vec<Message> {
    fn send(&mut self, mut messages: Vec<Message>) {
        self.append(&mut messages);
    }
}

/// Tuning of a [`Node`]. Defaults follow etcd (in ticks of 100 ms: heartbeat 1 tick,
/// election 10 ticks).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This member's raft id (non-zero, unique in the cluster).
    pub id: u64,
    /// Ticks without hearing from a leader before campaigning.
    pub election_tick: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_tick: usize,
    /// Randomised election timeout range `[min, max)`; 0 picks raft's defaults
    /// (`election_tick`, `2 * election_tick`).
    pub min_election_tick: usize,
    /// See `min_election_tick`.
    pub max_election_tick: usize,
    /// Pre-vote (raft thesis 9.6): a partitioned member cannot disrupt the cluster.
    pub pre_vote: bool,
    /// The leader steps down when it has not heard from a quorum for an election timeout.
    pub check_quorum: bool,
    /// Maximum bytes of entries per append message.
    pub max_size_per_msg: u64,
    /// Maximum append messages in flight per follower.
    pub max_inflight_msgs: usize,
    /// Proposals are refused while this many uncommitted bytes are in the leader's log.
    pub max_uncommitted_size: u64,
    /// Maximum bytes of committed entries handed over per Ready.
    pub max_committed_size_per_ready: u64,
    /// Snapshot the state machine (and compact the log) every this many applied entries.
    pub snapshot_interval: u64,
    /// Entries kept behind a snapshot so slightly lagging followers catch up from the log.
    pub snapshot_catchup_entries: u64,
    /// A ReadIndex round unanswered for this many ticks is re-issued.
    pub read_retry_ticks: u64,
    /// A read not completed within this many ticks fails with [`ReadError::Timeout`].
    pub read_timeout_ticks: u64,
    /// Must differ on every start of this member (e.g. start time in nanoseconds); keeps
    /// ReadIndex request contexts unique across restarts.
    pub incarnation: u64,
    /// A follower hands proposals to the leader itself (raft's `MsgProp`, one message
    /// per Ready) instead of refusing them with [`ProposeError::NotLeader`].
    pub forward_proposals: bool,
    /// A forwarded proposal neither applied nor ruled out after this many ticks ends as
    /// [`crate::ProposalError::OutcomeUnknown`].
    pub forward_timeout_ticks: u64,
}

impl NodeConfig {
    /// etcd-like defaults for member `id`.
    pub fn new(id: u64) -> Self {
        NodeConfig {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            min_election_tick: 0,
            max_election_tick: 0,
            pre_vote: true,
            check_quorum: true,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            max_uncommitted_size: 1 << 30,
            max_committed_size_per_ready: 64 * 1024 * 1024,
            snapshot_interval: 10_000,
            snapshot_catchup_entries: 5_000,
            read_retry_ticks: 10,
            read_timeout_ticks: 50,
            incarnation: 0,
            forward_proposals: false,
            forward_timeout_ticks: 150,
        }
    }

    fn raft_config(&self, applied: u64) -> raft::Config {
        raft::Config {
            id: self.id,
            election_tick: self.election_tick,
            heartbeat_tick: self.heartbeat_tick,
            min_election_tick: self.min_election_tick,
            max_election_tick: self.max_election_tick,
            applied,
            max_size_per_msg: self.max_size_per_msg,
            max_inflight_msgs: self.max_inflight_msgs,
            check_quorum: self.check_quorum,
            pre_vote: self.pre_vote,
            read_only_option: ReadOnlyOption::Safe,
            max_uncommitted_size: self.max_uncommitted_size,
            max_committed_size_per_ready: self.max_committed_size_per_ready,
            ..raft::Config::default()
        }
    }
}

/// A member's role as raft sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Pre-vote phase of a campaign.
    PreCandidate,
    /// Campaigning.
    Candidate,
    /// Leads the cluster.
    Leader,
}

impl From<StateRole> for Role {
    fn from(role: StateRole) -> Self {
        match role {
            StateRole::Follower => Role::Follower,
            StateRole::PreCandidate => Role::PreCandidate,
            StateRole::Candidate => Role::Candidate,
            StateRole::Leader => Role::Leader,
        }
    }
}

/// Role, leader and term after a change of any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleChange {
    /// This member's role now.
    pub role: Role,
    /// The leader this member knows of (0: none).
    pub leader_id: u64,
    /// The current term.
    pub term: u64,
}

/// What one [`Node::handle_ready`] call achieved, for the caller to act on. `O` is the
/// state machine's [`StateMachine::Output`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReadyOutcome<O = ()> {
    /// Proposals (and conf changes) that completed (with the state machine's answer) or
    /// failed.
    pub proposals: Vec<ProposalOutcome<O>>,
    /// Reads that may now be served (or failed).
    pub reads: Vec<ReadOutcome>,
    /// Set when role, leader or term changed.
    pub role_change: Option<RoleChange>,
    /// The configuration, when a conf change or a snapshot changed it.
    pub conf_state: Option<ConfState>,
    /// Index of a snapshot received from the leader and restored into the state machine.
    pub snapshot_restored: Option<u64>,
    /// Index of a snapshot this member took (the log was compacted behind it).
    pub snapshot_created: Option<u64>,
    /// The applied index after this call.
    pub applied_index: u64,
    /// This member was removed from the configuration: it ignores every input from now
    /// on; the caller should shut it down.
    pub removed: bool,
}

impl<O> Default for ReadyOutcome<O> {
    fn default() -> Self {
        ReadyOutcome {
            proposals: Vec::new(),
            reads: Vec::new(),
            role_change: None,
            conf_state: None,
            snapshot_restored: None,
            snapshot_created: None,
            applied_index: 0,
            removed: false,
        }
    }
}

impl<O> ReadyOutcome<O> {
    /// Adds outcomes that carry no answer (every failure, and nothing else).
    fn extend_unanswered(&mut self, outcomes: Vec<ProposalOutcome>) {
        self.proposals
            .extend(outcomes.into_iter().map(|p| p.answered(None)));
    }
}

/// The consensus driver of one member. See the crate documentation.
pub struct Node<S: LogStore> {
    raw: RawNode<S>,
    config: NodeConfig,
    applied: u64,
    last_snapshot_index: u64,
    /// A member was added: the next snapshot is due now (see `apply_entries`).
    snapshot_due: bool,
    /// The configuration recorded in the latest snapshot.
    snapshot_conf: ConfState,
    /// This member was removed from the configuration: it takes part in nothing any more.
    removed: bool,
    ticks: u64,
    proposals: Proposals,
    /// Proposals this member forwarded to the leader.
    forwarded: Forwarded,
    /// Entries proposed here as a follower, sent to the leader at the next Ready.
    to_forward: Vec<Entry>,
    /// Forwarded proposals appended while leading in `seen_term`, by (origin, id): a
    /// duplicated `MsgProp` must not append the same request twice.
    seen_forwarded: std::collections::HashSet<(u64, u64)>,
    seen_term: u64,
    reads: Reads,
    /// Outcomes produced outside `handle_ready` (e.g. read timeouts at `tick`).
    deferred_reads: Vec<ReadOutcome>,
    deferred_proposals: Vec<ProposalOutcome>,
    last_role: RoleChange,
}

impl<S: LogStore> std::fmt::Debug for Node<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.config.id)
            .field("role", &self.role())
            .field("term", &self.term())
            .field("leader_id", &self.leader_id())
            .field("commit", &self.commit_index())
            .field("applied", &self.applied)
            .finish()
    }
}

fn storage_err(e: crate::error::BoxError) -> Error {
    Error::Storage(e)
}

fn sm_err(e: crate::error::BoxError) -> Error {
    Error::StateMachine(e)
}

/// What a proposal's entry context carries: the request id, the member that proposed
/// it and the term of the leader it was proposed to. (Logs written before forwarding
/// hold the id alone: origin and term 0.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProposalTag {
    id: u64,
    origin: u64,
    term: u64,
}

impl ProposalTag {
    fn encode(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.origin.to_be_bytes());
        out.extend_from_slice(&self.term.to_be_bytes());
        out
    }

    fn decode(context: &[u8]) -> Option<ProposalTag> {
        let word = |i: usize| {
            context
                .get(i * 8..i * 8 + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
        };
        match context.len() {
            8 => Some(ProposalTag {
                id: word(0)?,
                origin: 0,
                term: 0,
            }),
            24 => Some(ProposalTag {
                id: word(0)?,
                origin: word(1)?,
                term: word(2)?,
            }),
            _ => None,
        }
    }
}

/// Most forwarded requests a leader remembers per term to refuse duplicates.
const SEEN_FORWARDED_LIMIT: usize = 1 << 16;

/// The data the log store keeps for a local snapshot when the state machine
/// checkpointed itself ([`StateMachine::checkpoint`] returned `None`): the state lives in
/// the state machine, and a leader serialises it only when it sends a snapshot.
pub const CHECKPOINT_PLACEHOLDER: &[u8] =
    b"\0concord-raft-core checkpoint: the state machine holds the data";

/// A logger that drops everything (raft-rs needs one).
pub fn discard_logger() -> Logger {
    Logger::root(slog::Discard, slog::o!())
}

impl<S: LogStore> Node<S> {
    /// Initialise a fresh store as a founding member of a cluster whose voters are
    /// `voters` (every founding member must use the same list): writes a bootstrap
    /// snapshot at index 1, term 1, carrying that configuration and no data. Members
    /// added later start from an empty store instead and receive a snapshot from the
    /// leader. Returns false (and changes nothing) if the store already holds state.
    pub fn bootstrap(store: &mut S, voters: &[u64]) -> Result<bool> {
        let state = store.initial_state()?;
        if state.initialized() || store.last_index()? > 0 {
            return Ok(false);
        }
        let mut snapshot = Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.index = 1;
        meta.term = 1;
        meta.mut_conf_state().set_voters(voters.to_vec());
        store.apply_snapshot(snapshot).map_err(storage_err)?;
        Ok(true)
    }

    /// Start a member on `store`, resuming after the state machine's applied index so
    /// that no entry is applied twice. If the log was compacted past that index, the
    /// state machine is first restored from the store's latest snapshot.
    pub fn new(config: NodeConfig, store: S, sm: &mut impl StateMachine) -> Result<Self> {
        Self::with_logger(config, store, sm, &discard_logger())
    }

    /// [`Node::new`] with a logger for raft-rs.
    pub fn with_logger(
        config: NodeConfig,
        mut store: S,
        sm: &mut impl StateMachine,
        logger: &Logger,
    ) -> Result<Self> {
        let first = store.first_index()?;
        let last = store.last_index()?;
        let snapshot_meta = store
            .latest_snapshot()
            .map_err(storage_err)?
            .take_metadata();
        let mut applied = sm.applied_index();
        if applied < first - 1 {
            let mut snapshot = store.latest_snapshot().map_err(storage_err)?;
            if snapshot.get_metadata().index < first - 1 {
                return Err(Error::Inconsistent(format!(
                    "state machine applied {applied}, log starts at {first}, latest snapshot {}",
                    snapshot.get_metadata().index
                )));
            }
            let data = snapshot.take_data();
            if data.as_ref() == CHECKPOINT_PLACEHOLDER {
                return Err(Error::Inconsistent(format!(
                    "state machine applied {applied}, but it had made index {} durable \
                     before the log was compacted behind it: its durable state was lost",
                    snapshot.get_metadata().index
                )));
            }
            sm.restore(snapshot.get_metadata(), &data).map_err(sm_err)?;
            applied = snapshot.get_metadata().index;
        }
        if applied > last {
            return Err(Error::Inconsistent(format!(
                "state machine applied {applied} beyond the log's last index {last}"
            )));
        }
        // The commit index is persisted lazily (raft learns it again from the leader), but
        // everything applied was committed: raft requires commit >= applied at start.
        let mut hard_state: HardState = store.initial_state()?.hard_state;
        if hard_state.commit < applied {
            hard_state.commit = applied;
            store.set_hard_state(&hard_state).map_err(storage_err)?;
        }
        let raw = RawNode::new(&config.raft_config(applied), store, logger)?;
        let reads = Reads::new(config.id, config.incarnation, config.read_retry_ticks);
        let mut node = Node {
            raw,
            config,
            applied,
            last_snapshot_index: snapshot_meta.index,
            snapshot_conf: snapshot_meta.get_conf_state().clone(),
            snapshot_due: false,
            removed: false,
            ticks: 0,
            proposals: Proposals::default(),
            forwarded: Forwarded::default(),
            to_forward: Vec::new(),
            seen_forwarded: std::collections::HashSet::new(),
            seen_term: 0,
            reads,
            deferred_reads: Vec::new(),
            deferred_proposals: Vec::new(),
            last_role: RoleChange {
                role: Role::Follower,
                leader_id: 0,
                term: 0,
            },
        };
        node.last_role = node.role_now();
        let conf = node.conf_state();
        // An empty configuration is a member that was added but has not received its
        // first snapshot yet; one that lists others but not us means we were removed.
        node.removed = !conf.voters.is_empty() && !Self::lists(&conf, node.config.id);
        Ok(node)
    }

    fn lists(conf: &ConfState, id: u64) -> bool {
        conf.voters
            .iter()
            .chain(&conf.learners)
            .chain(&conf.voters_outgoing)
            .chain(&conf.learners_next)
            .any(|&member| member == id)
    }

    /// Give the store back (e.g. to restart the member on it in a test).
    pub fn into_store(self) -> S {
        self.raw.raft.r.raft_log.store
    }

    /// The log store.
    pub fn store(&self) -> &S {
        self.raw.store()
    }

    // ----- inputs -------------------------------------------------------------------

    /// Advance logical time by one tick (heartbeats, elections, read retries/timeouts).
    pub fn tick(&mut self) {
        if self.removed {
            return;
        }
        self.raw.tick();
        self.ticks += 1;
        self.reads.on_tick(self.ticks, &mut self.deferred_reads);
        self.forwarded
            .on_tick(self.ticks, &mut self.deferred_proposals);
        self.maybe_start_read_round();
    }

    /// Feed a message received from a peer. An error means the message was ignored
    /// (e.g. a response from a member that is no longer in the configuration); it is not
    /// fatal.
    pub fn step(&mut self, message: Message) -> std::result::Result<(), raft::Error> {
        if self.removed {
            return Err(raft::Error::StepPeerNotFound);
        }
        if message.get_msg_type() == MessageType::MsgPropose && !self.accept_forwarded(&message) {
            // The forwarder rules it out once it applies an entry of a later term.
            return Err(raft::Error::ProposalDropped);
        }
        let result = self.raw.step(message);
        self.maybe_start_read_round();
        result
    }

    /// A follower's `MsgProp` is appended only by the leader of the term every entry was
    /// stamped with (the forwarder's reasoning about dropped proposals rests on it), and
    /// only once.
    fn accept_forwarded(&mut self, message: &Message) -> bool {
        let raft = &self.raw.raft;
        if raft.state != StateRole::Leader || raft.lead_transferee.is_some() {
            return false;
        }
        let term = raft.term;
        let tags: Option<Vec<ProposalTag>> = message
            .get_entries()
            .iter()
            .map(|e| {
                ProposalTag::decode(&e.context)
                    .filter(|t| t.term == term && t.origin == message.from)
                    .filter(|_| e.get_entry_type() == EntryType::EntryNormal)
            })
            .collect();
        let Some(tags) = tags.filter(|tags| !tags.is_empty()) else {
            return false;
        };
        if self.seen_term != term || self.seen_forwarded.len() > SEEN_FORWARDED_LIMIT {
            self.seen_term = term;
            self.seen_forwarded.clear();
        }
        if tags
            .iter()
            .any(|t| self.seen_forwarded.contains(&(t.origin, t.id)))
        {
            return false;
        }
        self.seen_forwarded
            .extend(tags.iter().map(|t| (t.origin, t.id)));
        true
    }

    /// Start an election now (tests, or a freshly bootstrapped single member).
    pub fn campaign(&mut self) -> Result<()> {
        self.raw.campaign()?;
        Ok(())
    }

    fn check_can_propose(&self, id: u64) -> std::result::Result<(), ProposeError> {
        if self.removed {
            return Err(ProposeError::Removed);
        }
        let raft = &self.raw.raft;
        if raft.state != StateRole::Leader {
            return Err(ProposeError::NotLeader {
                leader_id: raft.leader_id,
            });
        }
        if raft.lead_transferee.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        if self.proposals.contains_id(id) || self.forwarded.contains_id(id) {
            return Err(ProposeError::DuplicateId(id));
        }
        Ok(())
    }

    fn forward(&mut self, id: u64, data: Vec<u8>) -> std::result::Result<(), ProposeError> {
        if self.forwarded.contains_id(id) {
            return Err(ProposeError::DuplicateId(id));
        }
        let term = self.raw.raft.term;
        let mut entry = Entry::default();
        entry.set_entry_type(EntryType::EntryNormal);
        entry.context = ProposalTag {
            id,
            origin: self.config.id,
            term,
        }
        .encode()
        .into();
        entry.data = data.into();
        self.to_forward.push(entry);
        self.forwarded
            .insert(id, term, self.ticks + self.config.forward_timeout_ticks);
        Ok(())
    }

    /// Sends what was proposed here since the last Ready to the leader, in one message,
    /// if the leader and term are still those the proposals were stamped with.
    fn send_forwarded<O>(&mut self, outcome: &mut ReadyOutcome<O>) {
        if self.to_forward.is_empty() {
            return;
        }
        let entries = std::mem::take(&mut self.to_forward);
        let mut dropped = Vec::new();
        let raft = &self.raw.raft;
        let (term, leader) = (raft.term, raft.leader_id);
        let still_follower = raft.state == StateRole::Follower && leader != 0;
        let mut sendable = Vec::with_capacity(entries.len());
        for entry in entries {
            match ProposalTag::decode(&entry.context) {
                Some(tag) if still_follower && tag.term == term => sendable.push(entry),
                Some(tag) => self.forwarded.drop_unsent(tag.id, &mut dropped),
                None => {}
            }
        }
        outcome.extend_unanswered(dropped);
        if sendable.is_empty() {
            return;
        }
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgPropose);
        message.from = self.config.id;
        message.to = leader;
        message.set_entries(sendable.into());
        self.raw.raft.msgs.push(message);
    }

    fn dropped_reason(&self) -> ProposeError {
        if self.raw.raft.prs().get(self.config.id).is_none() {
            ProposeError::Dropped
        } else {
            ProposeError::TooManyUncommitted
        }
    }

    /// Propose `data` under request id `id` (leader only). On `Ok` the proposal is in the
    /// leader's log; a later [`ReadyOutcome::proposals`] reports it applied (with its
    /// index) or failed — never nothing, as long as this node lives.
    ///
    /// With [`NodeConfig::forward_proposals`], a follower that knows a leader accepts the
    /// proposal too and sends it to the leader with the next Ready; its outcome comes
    /// when this member applies it, or rules it out (see [`crate::ProposalError`]).
    pub fn propose(&mut self, id: u64, data: Vec<u8>) -> std::result::Result<(), ProposeError> {
        match self.check_can_propose(id) {
            Err(ProposeError::NotLeader { leader_id })
                if leader_id != 0 && self.config.forward_proposals =>
            {
                return self.forward(id, data);
            }
            checked => checked?,
        }
        let tag = ProposalTag {
            id,
            origin: self.config.id,
            term: self.raw.raft.term,
        };
        match self.raw.propose(tag.encode(), data) {
            Ok(()) => {}
            Err(raft::Error::ProposalDropped) => return Err(self.dropped_reason()),
            Err(e) => return Err(ProposeError::Encode(e.to_string())),
        }
        let index = self.raw.raft.raft_log.last_index();
        self.proposals
            .insert(index, self.raw.raft.term, id, &mut self.deferred_proposals);
        Ok(())
    }

    /// Propose a membership change under request id `id` (leader only); see
    /// [`crate::codec`] for builders. A change with several steps enters a joint
    /// configuration that raft leaves automatically. Completion is reported like a
    /// proposal's, and the new configuration in [`ReadyOutcome::conf_state`].
    pub fn propose_conf_change(
        &mut self,
        id: u64,
        change: ConfChangeV2,
    ) -> std::result::Result<(), ProposeError> {
        self.check_can_propose(id)?;
        let raft = &self.raw.raft;
        let joint = !raft.prs().conf().to_conf_state().voters_outgoing.is_empty();
        let leaving = change.changes.is_empty();
        if raft.has_pending_conf() {
            return Err(ProposeError::ConfChangeRefused(
                "a previous conf change is not applied yet",
            ));
        }
        if joint && !leaving {
            return Err(ProposeError::ConfChangeRefused(
                "must leave the joint configuration first",
            ));
        }
        if !joint && leaving {
            return Err(ProposeError::ConfChangeRefused(
                "not in a joint configuration; nothing to leave",
            ));
        }
        let tag = ProposalTag {
            id,
            origin: self.config.id,
            term: self.raw.raft.term,
        };
        match self.raw.propose_conf_change(tag.encode(), change) {
            Ok(()) => {}
            Err(raft::Error::ProposalDropped) => return Err(self.dropped_reason()),
            Err(e) => return Err(ProposeError::Encode(e.to_string())),
        }
        let index = self.raw.raft.raft_log.last_index();
        self.proposals
            .insert(index, self.raw.raft.term, id, &mut self.deferred_proposals);
        Ok(())
    }

    /// Request a linearizable read under id `read_id`. Reads arriving while a ReadIndex
    /// round is in flight share the next round. [`ReadyOutcome::reads`] reports the read
    /// ready to serve once the applied index reaches the confirmed commit index, or
    /// failed after `read_timeout_ticks`.
    pub fn read_index(&mut self, read_id: u64) -> std::result::Result<(), ReadError> {
        if self.removed {
            return Err(ReadError::Removed);
        }
        self.reads
            .enqueue(read_id, self.ticks + self.config.read_timeout_ticks)?;
        self.maybe_start_read_round();
        Ok(())
    }

    /// Ask the leader (this member) to hand leadership to `to`; proposals are refused
    /// until the transfer ends (it is abandoned after an election timeout).
    pub fn transfer_leader(&mut self, to: u64) {
        self.raw.transfer_leader(to);
    }

    /// Report whether a `MsgSnapshot` to `to` was delivered; the leader keeps the
    /// follower paused until this is called.
    pub fn report_snapshot(&mut self, to: u64, delivered: bool) {
        let status = if delivered {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        self.raw.report_snapshot(to, status);
    }

    /// Report that a message to `to` could not be delivered (the leader probes it).
    pub fn report_unreachable(&mut self, to: u64) {
        self.raw.report_unreachable(to);
    }

    fn leader_view(&self) -> LeaderView {
        let raft = &self.raw.raft;
        LeaderView {
            leader_id: raft.leader_id,
            term: raft.term,
            leader_not_ready: raft.state == StateRole::Leader && !raft.commit_to_current_term(),
        }
    }

    fn maybe_start_read_round(&mut self) {
        if let Some(ctx) = self.reads.next_round(self.leader_view(), self.ticks) {
            self.raw.read_index(ctx);
        }
    }

    // ----- the Ready ----------------------------------------------------------------

    /// Whether [`Node::handle_ready`] has work to do.
    pub fn has_ready(&self) -> bool {
        if self.removed {
            return !self.deferred_reads.is_empty() || !self.deferred_proposals.is_empty();
        }
        self.raw.has_ready()
            || !self.to_forward.is_empty()
            || !self.deferred_reads.is_empty()
            || !self.deferred_proposals.is_empty()
            || self.reads.has_completable(self.applied)
            || self.role_now() != self.last_role
    }

    /// Handle one raft `Ready`, in this order (the order is the contract):
    ///
    /// 1. `out.send` the early messages (a leader's appends, sent before its own fsync).
    /// 2. A snapshot from the leader: persist it in the store, restore the state machine.
    /// 3. Persist the new entries and the hard state with one fsync
    ///    ([`LogStore::append`]).
    /// 4. `out.send` the messages that must follow the fsync (votes, append responses).
    /// 5. Apply the committed entries in batches to [`StateMachine::apply`]; a conf
    ///    change is applied to raft and its ConfState persisted first, and ends its
    ///    batch. Proposals are resolved by the entries applied.
    /// 6. Advance raft, then handle the `LightReady`: send its messages, apply its
    ///    committed entries (its commit index needs no fsync: it is re-learned from the
    ///    leader after a restart, and start-up raises it to the applied index).
    /// 7. Tell raft the applied index; snapshot the state machine and compact the log if
    ///    `snapshot_interval` entries were applied since the last snapshot, a member was
    ///    added, or a follower needs a snapshot that lists it.
    /// 8. If this member was removed, fail its pending requests; report role changes;
    ///    complete reads whose index is applied; start the next ReadIndex round.
    ///
    /// Any `Err` is fatal for this member (the Ready is half handled): drop the node.
    pub fn handle_ready<M: StateMachine>(
        &mut self,
        sm: &mut M,
        out: &mut impl Outbox,
    ) -> Result<ReadyOutcome<M::Output>> {
        let mut outcome = ReadyOutcome::default();
        outcome.extend_unanswered(std::mem::take(&mut self.deferred_proposals));
        self.send_forwarded(&mut outcome);
        if self.raw.has_ready() {
            let mut ready = self.raw.ready();

            // 1. early messages
            let mut messages = ready.take_messages();
            if !messages.is_empty() {
                self.fill_checkpoint_snapshots(&mut messages, sm)?;
                out.send(messages);
            }

            // 2. snapshot
            if !ready.snapshot().is_empty() {
                let snapshot = ready.snapshot().clone();
                self.install_snapshot(snapshot, sm, &mut outcome)?;
            }
            self.reads.on_read_states(ready.take_read_states());

            // 3. entries + hard state, one fsync
            let entries = ready.take_entries();
            let hard_state = ready.hs().cloned();
            if !entries.is_empty() || hard_state.is_some() {
                self.raw
                    .mut_store()
                    .append(&entries, hard_state.as_ref())
                    .map_err(storage_err)?;
            }

            // 4. messages allowed only after the fsync
            let mut persisted = ready.take_persisted_messages();
            if !persisted.is_empty() {
                self.fill_checkpoint_snapshots(&mut persisted, sm)?;
                out.send(persisted);
            }

            // 5. committed entries
            let committed = ready.take_committed_entries();
            self.apply_entries(committed, sm, &mut outcome)?;

            // 6. advance + light ready
            let mut light = self.raw.advance_append(ready);
            let mut messages = light.take_messages();
            if !messages.is_empty() {
                self.fill_checkpoint_snapshots(&mut messages, sm)?;
                out.send(messages);
            }
            let committed = light.take_committed_entries();
            self.apply_entries(committed, sm, &mut outcome)?;

            // 7. applied index, snapshot
            self.raw.advance_apply_to(self.applied);
            self.maybe_leave_joint();
            if self.follower_needs_fresh_snapshot() {
                self.snapshot_due = true;
            }
            self.maybe_snapshot(sm, &mut outcome)?;
        }

        if self.removed {
            self.stop_after_removal(&mut outcome);
        }

        // 8. reads, role
        let role = self.role_now();
        if role != self.last_role {
            // etcd counts each time a member learns of a leader other than the one it knew.
            if role.leader_id != 0 && role.leader_id != self.last_role.leader_id {
                metrics::counter!("etcd_server_leader_changes_seen_total").increment(1);
            }
            self.last_role = role;
            outcome.role_change = Some(role);
            self.reads.on_leader_change(self.leader_view());
        }
        outcome.reads.append(&mut self.deferred_reads);
        self.reads.complete(self.applied, &mut outcome.reads);
        self.maybe_start_read_round();
        outcome.applied_index = self.applied;
        Ok(outcome)
    }

    /// A `MsgSnapshot` built from a checkpoint carries no state: serialise the state
    /// machine now and describe the snapshot at the applied index, with the configuration
    /// as applied (the state machine cannot go back to the checkpoint's index). The
    /// follower answers with that index, which is at or past the one raft asked for.
    fn fill_checkpoint_snapshots(
        &mut self,
        messages: &mut [Message],
        sm: &mut impl StateMachine,
    ) -> Result<()> {
        let mut fresh: Option<Snapshot> = None;
        for message in messages.iter_mut() {
            if message.get_msg_type() != MessageType::MsgSnapshot
                || message.get_snapshot().get_data() != CHECKPOINT_PLACEHOLDER
            {
                continue;
            }
            let snapshot = match &fresh {
                Some(snapshot) => snapshot.clone(),
                None => {
                    let mut snapshot = Snapshot::default();
                    let meta = snapshot.mut_metadata();
                    meta.index = self.applied;
                    meta.term = self.raw.raft.raft_log.term(self.applied)?;
                    meta.set_conf_state(self.conf_state());
                    snapshot.data = sm.snapshot().map_err(sm_err)?.into();
                    fresh = Some(snapshot.clone());
                    snapshot
                }
            };
            message.set_snapshot(snapshot);
        }
        Ok(())
    }

    /// This member is no longer in the configuration: every pending request gets its
    /// outcome now (proposals may still commit elsewhere, hence "unknown").
    fn stop_after_removal<O>(&mut self, outcome: &mut ReadyOutcome<O>) {
        outcome.removed = true;
        let mut failed = Vec::new();
        self.proposals.fail_all(&mut failed);
        self.forwarded.fail_all(&mut failed);
        outcome.extend_unanswered(failed);
        self.reads.fail_all(ReadError::Removed, &mut outcome.reads);
    }

    fn install_snapshot<M: StateMachine>(
        &mut self,
        mut snapshot: Snapshot,
        sm: &mut M,
        outcome: &mut ReadyOutcome<M::Output>,
    ) -> Result<()> {
        let meta: SnapshotMetadata = snapshot.get_metadata().clone();
        let data = snapshot.take_data();
        snapshot.data = data.clone();
        // etcd's `etcd_server_snapshot_apply_in_progress_total`: 1 while it installs.
        let in_progress = metrics::gauge!("etcd_server_snapshot_apply_in_progress_total");
        in_progress.set(1.0);
        let installed = self
            .raw
            .mut_store()
            .apply_snapshot(snapshot)
            .map_err(storage_err)
            .and_then(|()| sm.restore(&meta, &data).map_err(sm_err));
        in_progress.set(0.0);
        installed?;
        self.applied = meta.index;
        self.last_snapshot_index = meta.index;
        self.snapshot_conf = meta.get_conf_state().clone();
        let mut unknown = Vec::new();
        self.proposals
            .on_snapshot(meta.index, meta.term, &mut unknown);
        self.forwarded.on_snapshot(meta.term, &mut unknown);
        outcome.extend_unanswered(unknown);
        outcome.snapshot_restored = Some(meta.index);
        outcome.conf_state = Some(meta.get_conf_state().clone());
        Ok(())
    }

    fn apply_entries<M: StateMachine>(
        &mut self,
        entries: Vec<Entry>,
        sm: &mut M,
        outcome: &mut ReadyOutcome<M::Output>,
    ) -> Result<()> {
        let mut batch = Vec::with_capacity(entries.len());
        let mut results = Vec::new();
        for mut entry in entries {
            if entry.index <= self.applied {
                continue;
            }
            let (index, term) = (entry.index, entry.term);
            let tag = ProposalTag::decode(&entry.context);
            let id = tag.map(|t| t.id);
            let origin = tag.map_or(0, |t| t.origin);
            let committed = match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() && entry.context.is_empty() => {
                    Committed::Empty { index, term }
                }
                EntryType::EntryNormal => Committed::Normal {
                    index,
                    term,
                    id: id.unwrap_or(0),
                    origin,
                    data: entry.take_data().to_vec(),
                },
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    let change = if entry.get_entry_type() == EntryType::EntryConfChange {
                        let mut v1 = ConfChange::default();
                        v1.merge_from_bytes(&entry.data)?;
                        let mut single = ConfChangeSingle::default();
                        single.set_change_type(v1.get_change_type());
                        single.node_id = v1.node_id;
                        let mut v2 = ConfChangeV2::default();
                        v2.mut_changes().push(single);
                        v2
                    } else {
                        let mut v2 = ConfChangeV2::default();
                        v2.merge_from_bytes(&entry.data)?;
                        v2
                    };
                    let before = self.conf_state();
                    let conf_state = match self.raw.apply_conf_change(&change) {
                        Ok(cs) => {
                            // raft-rs refuses a snapshot whose ConfState does not list
                            // the receiver, so a new member can only catch up from a
                            // snapshot taken after it was added: take one now.
                            let known = |id: &u64| {
                                before.voters.contains(id)
                                    || before.learners.contains(id)
                                    || before.voters_outgoing.contains(id)
                            };
                            if cs.voters.iter().chain(&cs.learners).any(|id| !known(id)) {
                                self.snapshot_due = true;
                            }
                            let raft = &mut self.raw.raft;
                            if raft.state == StateRole::Leader && !cs.voters.contains(&raft.id) {
                                // A leader removed (or demoted) by the change steps down
                                // now: raft-rs would panic on its next commit as it is no
                                // longer in its own progress tracker.
                                let term = raft.term;
                                raft.become_follower(term, raft::INVALID_ID);
                                // Appends it queued for the new configuration are no
                                // longer its to send (raft-rs asserts a follower has
                                // none pending after advance).
                                raft.msgs.clear();
                            }
                            if !Self::lists(&cs, self.config.id) {
                                self.removed = true;
                            }
                            self.raw
                                .mut_store()
                                .set_conf_state(&cs)
                                .map_err(storage_err)?;
                            outcome.conf_state = Some(cs.clone());
                            Some(cs)
                        }
                        Err(e) => {
                            // Also the case when an entry is re-applied after a crash
                            // that happened after its ConfState was persisted: the
                            // configuration already reflects it.
                            self.proposals.reject(index, e.to_string(), &mut results);
                            None
                        }
                    };
                    Committed::ConfChange {
                        index,
                        term,
                        id,
                        change,
                        conf_state,
                    }
                }
            };
            self.proposals.on_applied(index, term, id, &mut results);
            let forwarded_here = id.filter(|_| origin == self.config.id && origin != 0);
            self.forwarded
                .on_applied(index, term, forwarded_here, &mut results);
            let ends_batch = matches!(committed, Committed::ConfChange { .. });
            batch.push(committed);
            if ends_batch {
                // A batch ends at each conf change, so that at most the latest
                // ConfState is persisted ahead of the state machine (see the
                // `StateMachine` contract).
                self.apply_batch(&mut batch, &mut results, sm, outcome)?;
            }
        }
        self.apply_batch(&mut batch, &mut results, sm, outcome)
    }

    /// Applies `batch` and hands each proposal it resolved its entry's answer.
    fn apply_batch<M: StateMachine>(
        &mut self,
        batch: &mut Vec<Committed>,
        results: &mut Vec<ProposalOutcome>,
        sm: &mut M,
        outcome: &mut ReadyOutcome<M::Output>,
    ) -> Result<()> {
        let (Some(first), Some(last)) = (
            batch.first().map(Committed::index),
            batch.last().map(Committed::index),
        ) else {
            outcome.extend_unanswered(std::mem::take(results));
            return Ok(());
        };
        let outputs = sm.apply(batch).map_err(sm_err)?;
        if outputs.len() != batch.len() {
            return Err(Error::StateMachine(
                format!(
                    "apply answered {} outputs for {} entries",
                    outputs.len(),
                    batch.len()
                )
                .into(),
            ));
        }
        self.applied = last;
        batch.clear();
        // A batch holds consecutive indexes, so an entry's answer is at index - first;
        // only proposals applied in this batch are `Ok`.
        let mut outputs: Vec<Option<M::Output>> = outputs.into_iter().map(Some).collect();
        for resolved in results.drain(..) {
            let output = match resolved.result {
                Ok(index) if (first..=last).contains(&index) => {
                    outputs[(index - first) as usize].take()
                }
                _ => None,
            };
            outcome.proposals.push(resolved.answered(output));
        }
        Ok(())
    }

    /// raft-rs leaves an auto-leave joint configuration only if the leader that applied
    /// the joint entry is still leader; a later leader would stay joint. Propose the
    /// leave ourselves in that case.
    fn maybe_leave_joint(&mut self) {
        let raft = &self.raw.raft;
        if raft.state != StateRole::Leader || raft.has_pending_conf() {
            return;
        }
        let conf = raft.prs().conf().to_conf_state();
        if conf.voters_outgoing.is_empty() || !conf.auto_leave {
            return;
        }
        // An empty ConfChangeV2 means "leave the joint configuration". If raft refuses,
        // the next Ready tries again.
        let _ = self
            .raw
            .propose_conf_change(Vec::new(), ConfChangeV2::default());
    }

    /// A follower needs entries this leader compacted, and the latest snapshot does not
    /// list it (it was taken before the follower joined, e.g. the bootstrap snapshot):
    /// raft-rs would send it a snapshot it must refuse. A fresh one is due.
    fn follower_needs_fresh_snapshot(&self) -> bool {
        let raft = &self.raw.raft;
        if raft.state != StateRole::Leader {
            return false;
        }
        let first = raft.raft_log.first_index();
        raft.prs().iter().any(|(&id, progress)| {
            id != self.config.id
                && progress.next_idx < first
                && !Self::lists(&self.snapshot_conf, id)
        })
    }

    fn maybe_snapshot<O>(
        &mut self,
        sm: &mut impl StateMachine,
        outcome: &mut ReadyOutcome<O>,
    ) -> Result<()> {
        let interval_passed =
            self.applied >= self.last_snapshot_index + self.config.snapshot_interval;
        if !(interval_passed || self.snapshot_due) || self.applied <= self.last_snapshot_index {
            return Ok(());
        }
        let index = self.applied;
        let data = sm
            .checkpoint()
            .map_err(sm_err)?
            .unwrap_or_else(|| CHECKPOINT_PLACEHOLDER.to_vec());
        let conf_state = self.raw.raft.prs().conf().to_conf_state();
        // The commit index is persisted lazily (the LightReady's is not), but a store
        // may insist that a snapshot covers only entries it knows are committed. All
        // Readies are persisted at this point, so raft's hard state is the persisted
        // one with a newer commit index.
        let hard_state = self.raw.raft.hard_state();
        let store = self.raw.mut_store();
        if store.initial_state()?.hard_state.commit < index {
            store.set_hard_state(&hard_state).map_err(storage_err)?;
        }
        store
            .create_snapshot(index, conf_state.clone(), data)
            .map_err(storage_err)?;
        self.snapshot_conf = conf_state;
        let compact_to = index.saturating_sub(self.config.snapshot_catchup_entries);
        if compact_to > store.first_index()? {
            store.compact(compact_to).map_err(storage_err)?;
        }
        self.last_snapshot_index = index;
        self.snapshot_due = false;
        outcome.snapshot_created = Some(index);
        Ok(())
    }

    // ----- status -------------------------------------------------------------------

    fn role_now(&self) -> RoleChange {
        let raft = &self.raw.raft;
        RoleChange {
            role: raft.state.into(),
            leader_id: raft.leader_id,
            term: raft.term,
        }
    }

    /// This member's id.
    pub fn id(&self) -> u64 {
        self.config.id
    }

    /// The leader this member knows of (0: none).
    pub fn leader_id(&self) -> u64 {
        self.raw.raft.leader_id
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// This member's role.
    pub fn role(&self) -> Role {
        self.raw.raft.state.into()
    }

    /// Whether this member was removed from the configuration (it is inert).
    pub fn is_removed(&self) -> bool {
        self.removed
    }

    /// Whether this member is the leader.
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The commit index known here.
    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// The index of the last entry handed to the state machine.
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// The index of the last entry in the log (persisted or not).
    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    /// The current configuration (as applied).
    pub fn conf_state(&self) -> ConfState {
        self.raw.raft.prs().conf().to_conf_state()
    }

    /// Voters (of the incoming configuration when joint), sorted.
    pub fn voters(&self) -> Vec<u64> {
        let mut voters = self.conf_state().voters;
        voters.sort_unstable();
        voters
    }

    /// Learners, sorted.
    pub fn learners(&self) -> Vec<u64> {
        let mut learners = self.conf_state().learners;
        learners.sort_unstable();
        learners
    }

    /// Ticks since this node started.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// Proposals awaiting their outcome.
    pub fn pending_proposals(&self) -> usize {
        self.proposals.len() + self.forwarded.len()
    }

    /// Reads awaiting their outcome.
    pub fn pending_reads(&self) -> usize {
        self.reads.pending()
    }

    /// ReadIndex rounds issued so far (to observe batching).
    pub fn read_rounds_issued(&self) -> u64 {
        self.reads.rounds_issued()
    }

    /// The raw raft node, read-only (diagnostics and tests).
    pub fn raw(&self) -> &RawNode<S> {
        &self.raw
    }

    /// The raw raft node, mutable: bypasses the driver's bookkeeping, tests only.
    #[cfg(test)]
    pub(crate) fn raw_mut(&mut self) -> &mut RawNode<S> {
        &mut self.raw
    }

    /// Entries `[low, high)` of the log (persisted or not), for diagnostics and tests.
    pub fn entries(&self, low: u64, high: u64) -> Result<Vec<Entry>> {
        Ok(self
            .raw
            .raft
            .raft_log
            .entries(low, None, GetEntriesContext::empty(false))?
            .into_iter()
            .take_while(|e| e.index < high)
            .collect())
    }
}
