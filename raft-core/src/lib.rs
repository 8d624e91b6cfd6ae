//! The consensus driver around raft-rs's `RawNode` (raft 0.7): `Ready` handling in one
//! place, proposals with ids, batched ReadIndex, membership changes, snapshots, and a
//! deterministic in-process cluster harness.
//!
//! # What this crate owns
//!
//! - [`Node`]: the single owner of a `RawNode` over a [`LogStore`]. It is synchronous:
//!   no threads, no sockets, no clock. Time moves by [`Node::tick`]; messages come in by
//!   [`Node::step`] and leave through an [`Outbox`] the caller implements.
//!   Configured with pre-vote, check-quorum, message size / in-flight / uncommitted-size
//!   limits ([`NodeConfig`], etcd's defaults), and started with raft's `applied` set
//!   from the [`StateMachine`]'s applied index, so a restart never re-applies an entry.
//! - [`Node::handle_ready`]: the one function that handles a raft `Ready` in the right
//!   order (early messages, snapshot, one fsync for entries + hard state, persisted
//!   messages, apply, advance, the `LightReady`, snapshots/compaction, reads). Its doc
//!   is the contract. The server calls it in its driver loop while
//!   [`Node::has_ready`].
//! - Proposals carry a request id (stored in `Entry.context` with the proposing member
//!   and the term, big-endian). The node records index → (term, id) at propose time; every accepted proposal ends in a
//!   [`ProposalOutcome`] (applied at index, or [`ProposalError`]) — a dropped proposal
//!   is an error, never silence. An applied proposal's outcome carries what the state
//!   machine's `apply` answered for its entry, so the waiter needs nothing else.
//!   Outcomes are decided by what *commits*: the entry committed at the index is ours (applied) or not (`Overwritten`), or an entry of a
//!   later term committed before the index (`Overwritten`: terms only grow along the
//!   log, so this also resolves proposals past the end of a new leader's log as soon as
//!   its first entry commits); a snapshot covering the index or the member's removal
//!   gives `OutcomeUnknown`. Refusals at propose time are a [`ProposeError`] (not
//!   leader, transfer in progress, too many uncommitted bytes, conf change refused).
//!   Proposals are accepted on the leader only (`NotLeader { leader_id }` elsewhere),
//!   unless [`NodeConfig::forward_proposals`] is set: then a follower sends what was
//!   proposed to it to the leader as one `MsgProp` per Ready, stamped with the leader's
//!   term. The leader appends a forwarded entry only in that term (and once), so the
//!   follower learns the outcome from what it applies: its entry (applied), or an entry
//!   of a later term first ([`ProposalError::Dropped`]: it will never commit).
//! - Linearizable reads ([`Node::read_index`]): concurrent reads share one ReadIndex
//!   round (one round in flight, the rest queue for the next); a read completes only
//!   once the applied index reaches the round's index; a new leader starts no round
//!   before it committed an entry of its term; rounds lost to a leader change or a
//!   dropped message are retried, and reads past their deadline fail explicitly.
//! - Membership: [`Node::propose_conf_change`] with `ConfChangeV2` (see [`codec`] for
//!   builders: add voter, add learner, promote learner, remove; several at once go
//!   through joint consensus with automatic leave). The driver applies the change to
//!   raft, persists the `ConfState` ([`LogStore::set_conf_state`]) and then shows the
//!   entry to the state machine as [`Committed::ConfChange`], ending the apply batch
//!   there (the state machine syncs such a batch: see [`StateMachine`]). A member
//!   removed from the configuration goes inert ([`ReadyOutcome::removed`], pending
//!   requests fail); a removed leader steps down first.
//! - Snapshots: every `snapshot_interval` applied entries (default 10,000) the state
//!   machine checkpoints ([`StateMachine::checkpoint`]: serialised into
//!   [`LogStore::create_snapshot`], or made durable in place, leaving a
//!   [`CHECKPOINT_PLACEHOLDER`] there) and the log is compacted, keeping
//!   `snapshot_catchup_entries` (default 5,000) for slow followers. Followers further
//!   behind get a `MsgSnapshot` (built from a placeholder, it is the state machine
//!   serialised when it is sent, at the applied index); the caller reports the transport
//!   outcome with [`Node::report_snapshot`]. raft-rs refuses a snapshot whose
//!   configuration does not list the receiver, so a leader takes a fresh snapshot when a
//!   new member needs one.
//! - Leader transfer ([`Node::transfer_leader`]).
//! - [`codec`]: raft's `eraftpb::Message` to and from bytes (protobuf 2), so transport
//!   protos carry raft messages as opaque `bytes`.
//! - [`MemLogStore`]: an in-memory [`LogStore`] whose every mutation is one atomic
//!   "fsync" (with a [`CrashSwitch`] to fail at an exact point); `WalStorage` from
//!   `concord-storage-wal` implements [`LogStore`] too (module `wal`).
//! - `harness` (feature `harness`, always on for this crate's tests): N nodes in one
//!   process, messages routed by a seeded scheduler (ChaCha8) with drop, duplicate,
//!   delay/reorder, partition, isolate, crash/restart (also in the middle of a Ready,
//!   and with a state machine that loses its unflushed applies), membership changes and
//!   leader transfers; invariants checked after every step (one leader per term,
//!   committed prefixes agree, an applied entry and the configuration at an index never
//!   differ, no index applied twice, reads not stale), liveness after healing (every
//!   acknowledged proposal applied everywhere, nothing left without an outcome). Replay
//!   a failing seed with `RAFT_SEED=<seed> cargo nextest run -p concord-raft-core
//!   --release random_schedules`; explore more with `RAFT_SEEDS=<a>..<b>`.
//!
//! # The server's driver loop
//!
//! One thread owns the [`Node`] and the [`StateMachine`]:
//!
//! 1. feed inputs: [`Node::step`] for each message from a peer, [`Node::propose`] /
//!    [`Node::propose_conf_change`] / [`Node::read_index`] for client requests (keep
//!    the waiter under the request id), [`Node::tick`] every heartbeat interval
//!    (100 ms), [`Node::report_snapshot`] / [`Node::report_unreachable`] from the
//!    transport;
//! 2. while [`Node::has_ready`]: [`Node::handle_ready`], then complete waiters from the
//!    [`ReadyOutcome`] (proposals by id, reads by id: serve them from local state now),
//!    and watch `role_change`, `conf_state` and `removed`.
//!
//! Any [`Error`] from `handle_ready` is fatal: stop the member, restart from disk.
//!
//! # Example: a single-member cluster
//!
//! ```
//! use concord_raft_core::{
//!     BoxError, Committed, MemLogStore, Node, NodeConfig, StateMachine,
//! };
//! use raft::eraftpb::{Message, SnapshotMetadata};
//!
//! #[derive(Default)]
//! struct Counter { applied: u64, sum: u64 }
//!
//! impl StateMachine for Counter {
//!     type Output = u64; // the sum after the entry
//!     fn apply(&mut self, entries: &[Committed]) -> Result<Vec<u64>, BoxError> {
//!         let mut sums = Vec::with_capacity(entries.len());
//!         for entry in entries {
//!             if let Committed::Normal { data, .. } = entry {
//!                 self.sum += u64::from(data[0]);
//!             }
//!             self.applied = entry.index();
//!             sums.push(self.sum);
//!         }
//!         Ok(sums)
//!     }
//!     fn applied_index(&self) -> u64 { self.applied }
//!     fn snapshot(&mut self) -> Result<Vec<u8>, BoxError> { Ok(self.sum.to_be_bytes().to_vec()) }
//!     fn restore(&mut self, meta: &SnapshotMetadata, data: &[u8]) -> Result<(), BoxError> {
//!         self.sum = if data.is_empty() { 0 } else { u64::from_be_bytes(data.try_into()?) };
//!         self.applied = meta.index;
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut store = MemLogStore::new();
//! Node::bootstrap(&mut store, &[1])?;
//! let mut sm = Counter::default();
//! let mut node = Node::new(NodeConfig::new(1), store, &mut sm)?;
//! let mut outbox: Vec<Message> = Vec::new(); // a single member sends nothing
//! node.campaign()?;
//! while node.has_ready() { node.handle_ready(&mut sm, &mut outbox)?; }
//! assert!(node.is_leader());
//!
//! node.propose(7, vec![5])?;           // request id 7
//! let outcome = node.handle_ready(&mut sm, &mut outbox)?;
//! assert_eq!(outcome.proposals[0].id, 7);
//! assert!(outcome.proposals[0].result.is_ok());
//! assert_eq!(outcome.proposals[0].output, Some(5)); // the answer travels with it
//! assert_eq!(sm.sum, 5);
//! # Ok(()) }
//! ```

pub mod codec;
mod error;
mod node;
mod state_machine;
mod store;
mod tracking;
mod wal;

#[cfg(any(test, feature = "harness"))]
pub mod harness;

pub use error::{BoxError, Error, ProposalError, ProposeError, ReadError, Result};
pub use node::{
    CHECKPOINT_PLACEHOLDER, Node, NodeConfig, Outbox, ReadyOutcome, Role, RoleChange,
    discard_logger,
};
pub use state_machine::{Committed, StateMachine};
pub use store::{CrashSwitch, LogStore, MemLogStore, MemStoreError, SimulatedCrash};
pub use tracking::{ProposalOutcome, ReadOutcome};

/// Re-export of the raft crate (its protobuf types are part of this API).
pub use raft;

#[cfg(test)]
mod tests;
