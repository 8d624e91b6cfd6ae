//! What a chaos run records and the checker reads: every client operation with its invoke and
//! return times and what the server answered, and every watch stream with the events it
//! delivered. Times are nanoseconds since the start of the run on one monotonic clock, so the
//! real-time order of operations from different clients can be compared.
//!
//! A request that failed or timed out has an [`Outcome::Unknown`] result: it may or may not have
//! taken effect, at any time after its invocation (a checker treats it as returning at the end of
//! time). Values are unique per run, so a read identifies the write it observed.

/// One client operation: what was asked, when, and what came back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client (a sequential process: one request in flight at a time) that ran it.
    pub client: usize,
    /// When the request was sent.
    pub invoke_ns: u64,
    /// When the answer arrived; `None` when the outcome is unknown.
    pub return_ns: Option<u64>,
    pub call: Call,
    pub outcome: Outcome,
}

/// What a client asked for. Every call touches one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// `Put(key, value)`.
    Put { key: String, value: String },
    /// A linearizable single-key `Range`.
    Get { key: String },
    /// `DeleteRange` of one key.
    Delete { key: String },
    /// Compare-and-set as one `Txn`: if the key's value equals `expected` (`None`: the key does
    /// not exist, compared as `create_revision == 0`) then put `value`, else do nothing.
    Cas {
        key: String,
        expected: Option<String>,
        value: String,
    },
}

impl Call {
    pub fn key(&self) -> &str {
        match self {
            Call::Put { key, .. }
            | Call::Get { key }
            | Call::Delete { key }
            | Call::Cas { key, .. } => key,
        }
    }

    /// The value this call may write, if it writes one.
    pub fn written_value(&self) -> Option<&str> {
        match self {
            Call::Put { value, .. } | Call::Cas { value, .. } => Some(value),
            Call::Get { .. } | Call::Delete { .. } => None,
        }
    }
}

/// A key-value pair as a `Range` returned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedKv {
    pub value: String,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
}

/// What came back. `revision` is always the response header's revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The put is applied at `revision`.
    Put { revision: i64 },
    /// The key held `kv` (`None`: absent) as of `revision`.
    Get {
        revision: i64,
        kv: Option<ObservedKv>,
    },
    /// `deleted` is 0 or 1; when 1 the delete is applied at `revision`.
    Delete { revision: i64, deleted: i64 },
    /// The txn's compare held (`succeeded`, and the put is applied at `revision`) or not (a
    /// read-only txn: nothing changed, `revision` is the store's revision then).
    Cas { revision: i64, succeeded: bool },
    /// The request failed or timed out: it may have taken effect, or not.
    Unknown,
}

/// An event as a watch stream delivered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub key: String,
    /// The value put; empty for a delete.
    pub value: String,
    pub mod_revision: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One watch stream opened during the run, over every key with `prefix`, from `start_revision`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchRecord {
    /// Which watcher it was (for messages).
    pub watcher: usize,
    pub prefix: String,
    pub start_revision: i64,
    /// Every event, in the order the stream delivered them.
    pub events: Vec<WatchEvent>,
    /// The highest revision the stream vouched to be complete up to: the revision of the last
    /// event it delivered, or the header revision of a later progress notification (sent only
    /// when the watcher is synced), whichever is higher. A response header with events does not
    /// vouch for anything (etcd's catch-up sends later revisions in later responses). The checker
    /// holds the stream to having delivered every write to its keys in
    /// `start_revision..=complete_to`.
    pub complete_to: i64,
}

/// Everything a run recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub operations: Vec<Operation>,
    pub watches: Vec<WatchRecord>,
}

impl History {
    /// Events delivered, over every watch stream.
    pub fn watch_events(&self) -> usize {
        self.watches.iter().map(|w| w.events.len()).sum()
    }
}
