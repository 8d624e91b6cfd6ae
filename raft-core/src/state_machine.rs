//! [`StateMachine`]: what the driver hands committed entries to, and [`Committed`].

use raft::eraftpb::{ConfChangeV2, ConfState, SnapshotMetadata};

use crate::error::BoxError;

/// One committed log entry as the state machine sees it, in log order.
#[derive(Debug, Clone, PartialEq)]
pub enum Committed {
    /// A client proposal.
    Normal {
        /// The entry's log index.
        index: u64,
        /// The entry's term.
        term: u64,
        /// The request id given to [`crate::Node::propose`].
        id: u64,
        /// The member that proposed it (0 in logs written before this was recorded).
        /// Request ids are unique per member only: match results on both.
        origin: u64,
        /// The proposal's payload.
        data: Vec<u8>,
    },
    /// A membership change, already applied to raft by the driver (and its resulting
    /// [`ConfState`] persisted in the log store) before the state machine sees it.
    ConfChange {
        /// The entry's log index.
        index: u64,
        /// The entry's term.
        term: u64,
        /// The request id given to [`crate::Node::propose_conf_change`]; `None` for the
        /// automatic "leave joint configuration" entry raft proposes itself.
        id: Option<u64>,
        /// The change as proposed.
        change: ConfChangeV2,
        /// The configuration after the change, or `None` if raft rejected the change
        /// (the configuration is then unchanged).
        conf_state: Option<ConfState>,
    },
    /// An entry without a payload (a new leader's first entry, or a refused conf change).
    Empty {
        /// The entry's log index.
        index: u64,
        /// The entry's term.
        term: u64,
    },
}

impl Committed {
    /// The entry's log index.
    pub fn index(&self) -> u64 {
        match self {
            Committed::Normal { index, .. }
            | Committed::ConfChange { index, .. }
            | Committed::Empty { index, .. } => *index,
        }
    }

    /// The entry's term.
    pub fn term(&self) -> u64 {
        match self {
            Committed::Normal { term, .. }
            | Committed::ConfChange { term, .. }
            | Committed::Empty { term, .. } => *term,
        }
    }
}

/// The replicated state machine the [`crate::Node`] applies committed entries to.
///
/// Contract:
/// - `apply` receives every committed entry exactly once in log order (`Empty` and
///   `ConfChange` included), and afterwards `applied_index()` is the index of the last
///   one. It returns one [`StateMachine::Output`] per entry, in order: the answer to
///   whoever proposed it, which the node hands back in that proposal's
///   [`crate::ProposalOutcome`] (answers to entries nobody here waits for are dropped). The state machine persists its applied index together with its data; it may
///   do so lazily (without fsync): after a crash the node re-delivers every entry after
///   the durable `applied_index()` and none at or before it.
/// - A batch that ends with a [`Committed::ConfChange`] must be durable when `apply`
///   returns (sync the backend). The driver persists the new ConfState in the log
///   store just before, and ends a batch at every conf change, so after a crash at most
///   the latest conf change is re-delivered, onto a configuration that already contains
///   it (where re-applying it is a no-op or is refused, leaving it unchanged).
/// - `snapshot` serialises the state at `applied_index()`.
/// - Every `snapshot_interval` applied entries the node takes a local snapshot and
///   compacts the log behind it. What it keeps in the log store comes from
///   [`StateMachine::checkpoint`]: by default the serialised state (`snapshot`), which
///   costs a full copy of the state each time. A state machine that is its own durable
///   copy (a database) makes its state durable instead and returns `None`: the log store
///   then keeps only the snapshot's metadata, and a follower that needs a snapshot gets
///   one serialised by `snapshot` when it is sent, at the applied index of that moment.
/// - `restore` replaces the whole state by a snapshot's (from the leader, or at start-up
///   when the log was compacted past the durable applied index). Empty `data` means the
///   empty initial state (the bootstrap snapshot carries no data).
pub trait StateMachine {
    /// What applying one entry answers its proposer (`()` when there is nothing to say).
    type Output;

    /// Apply a batch of committed entries (one durable batch is fine); one output per
    /// entry, in order.
    fn apply(&mut self, entries: &[Committed]) -> Result<Vec<Self::Output>, BoxError>;

    /// The index of the last entry applied (durably or not; see the trait doc).
    fn applied_index(&self) -> u64;

    /// Serialise the current state.
    fn snapshot(&mut self) -> Result<Vec<u8>, BoxError>;

    /// A local snapshot is due at `applied_index()` and the log will be compacted behind
    /// it. Return the data the log store keeps for it (`Some`, the default: the
    /// serialised state), or make the state at `applied_index()` durable and return
    /// `None` (see the trait doc). After `None`, losing any of that state is corruption:
    /// the entries to rebuild it may be gone.
    fn checkpoint(&mut self) -> Result<Option<Vec<u8>>, BoxError> {
        self.snapshot().map(Some)
    }

    /// Replace the state by a snapshot's; afterwards `applied_index() == meta.index`.
    /// `data` is always what `snapshot` produced (or empty, see the trait doc), never
    /// the placeholder of a checkpoint.
    fn restore(&mut self, meta: &SnapshotMetadata, data: &[u8]) -> Result<(), BoxError>;
}
