//! The crate's error enum and the per-request failure reasons reported to callers.

use std::error::Error as StdError;

/// A boxed error from a [`crate::LogStore`] or [`crate::StateMachine`] implementation.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Errors that stop the [`crate::Node`]. Every one of them is fatal for the member: after
/// `handle_ready` returned one, drop the node (a failed fsync must never be retried) and
/// restart it from what the storage persisted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// raft-rs refused an operation (invalid config, corrupt restore, ...).
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// The log storage failed (I/O, fsync, corruption).
    #[error("log storage: {0}")]
    Storage(#[source] BoxError),
    /// The state machine failed to apply, snapshot or restore.
    #[error("state machine: {0}")]
    StateMachine(#[source] BoxError),
    /// A protobuf (de)serialisation failed.
    #[error("protobuf: {0}")]
    Codec(#[from] protobuf::ProtobufError),
    /// Stored state contradicts itself, e.g. the state machine claims an applied index
    /// beyond the end of the raft log.
    #[error("inconsistent state: {0}")]
    Inconsistent(String),
}

/// Why a proposal (or conf change) was refused before it entered the log. Returned
/// synchronously by [`crate::Node::propose`] and [`crate::Node::propose_conf_change`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProposeError {
    /// This member is not the leader. `leader_id` is 0 when no leader is known.
    #[error("not leader (leader is {leader_id})")]
    NotLeader {
        /// The leader this member knows of, 0 if none.
        leader_id: u64,
    },
    /// A leadership transfer is in progress; proposals are refused until it ends.
    #[error("leader transfer in progress")]
    TransferInProgress,
    /// The leader has too many uncommitted bytes (`max_uncommitted_size`).
    #[error("too many uncommitted entries")]
    TooManyUncommitted,
    /// A proposal with this id is still pending.
    #[error("duplicate request id {0}")]
    DuplicateId(u64),
    /// raft refused the conf change (another one is pending, joint-state rules, ...).
    #[error("conf change refused: {0}")]
    ConfChangeRefused(&'static str),
    /// raft dropped the proposal for another reason.
    #[error("proposal dropped")]
    Dropped,
    /// This member was removed from the cluster.
    #[error("member removed from the cluster")]
    Removed,
    /// Encoding the proposal failed.
    #[error("encode: {0}")]
    Encode(String),
}

/// Why an accepted proposal did not complete. Reported in
/// [`crate::ReadyOutcome::proposals`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProposalError {
    /// Another entry now occupies the proposal's index (leadership changed and the new
    /// leader's log won). The proposal was definitely not applied.
    #[error("proposal at index {index} was overwritten by another entry")]
    Overwritten {
        /// The index the proposal had been appended at.
        index: u64,
    },
    /// This member installed a snapshot covering the proposal's index, or was removed
    /// from the cluster, or (for a proposal forwarded to the leader) gave up waiting, so
    /// whether the proposal made it is unknown here. The caller must treat the outcome
    /// as uncertain.
    #[error("outcome of proposal at index {index} unknown (covered by a snapshot)")]
    OutcomeUnknown {
        /// The index the proposal had been appended at (0: forwarded, index unknown).
        index: u64,
    },
    /// A proposal forwarded to the leader of `term` was not appended in that term (it
    /// never left, the leader refused it, or leadership moved on): it will never
    /// commit. Definitely not applied.
    #[error("proposal forwarded in term {term} was dropped")]
    Dropped {
        /// The term of the leader the proposal was forwarded to.
        term: u64,
    },
    /// The conf change was committed but raft refused to apply it (e.g. it would remove
    /// every voter); the configuration is unchanged.
    #[error("conf change at index {index} rejected: {reason}")]
    ConfChangeRejected {
        /// The entry's index.
        index: u64,
        /// raft's reason.
        reason: String,
    },
}

/// Why a linearizable read failed. Reported in [`crate::ReadyOutcome::reads`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// No ReadIndex round confirmed leadership before the read's deadline.
    #[error("read index timed out")]
    Timeout,
    /// A read with this id is already pending.
    #[error("duplicate read id {0}")]
    DuplicateId(u64),
    /// This member was removed from the cluster.
    #[error("member removed from the cluster")]
    Removed,
}

/// Result alias for fatal errors.
pub type Result<T, E = Error> = std::result::Result<T, E>;
