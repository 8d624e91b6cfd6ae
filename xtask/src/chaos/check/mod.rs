//! The history checker: proves a chaos run's history linearizable against a model of etcd with
//! revisions, and its watch streams ordered, free of duplicates and complete.
//!
//! ```text
//! let report = check(&history);
//! print!("{report}");              // a summary line, then every anomaly with the operations that show it
//! std::process::exit(if report.anomalies.is_empty() { 0 } else { 1 });
//! ```
//!
//! Four families of checks:
//!
//! * **Per key** (`keys`): every key's operations must have a linearization under a model of
//!   one etcd key with revisions (`model`): value, create and mod revision, version, and the
//!   store revision a read's header reports. The search (`search`) is Lowe's just-in-time
//!   linearization with a cache of configurations; operations of unknown outcome are sorted by
//!   what can observe them (`lower`) so they do not make it exponential. Splitting by key is
//!   sound and complete for single-key operations (linearizability is compositional); what it
//!   cannot see, the store-wide revision order, the next family checks. Cheap checks of what
//!   each read names come first, for clearer messages (the value's write exists, on this key,
//!   did not fail, was invoked before the read returned, got the revision the read reports; the
//!   header is at least the `mod_revision`). A key that fails is shrunk to a small failing
//!   sub-history before it is reported.
//! * **Stale reads** (`stale`): a read that returned an older state of its key than an
//!   operation completed before the read was invoked had established. The search above rejects
//!   such a history too; this check names the anomaly, so that a run can be required to fail
//!   for exactly that reason (the `--serializable-gets` self-test).
//! * **Store-wide revisions** (`global`): acknowledged writes never share a revision; an
//!   operation invoked after another returned never sees an older revision (and a write gets a
//!   newer one).
//! * **Watches** (`watch`): every stream in revision order without duplicates, every event
//!   matching a write of the history at that revision, no write of a watched key missing from
//!   what the stream vouched for, and all streams agreeing on what happened at each revision.
//!
//! The checker must never call a correct history wrong, so every rule is one etcd guarantees;
//! where a complete check would be too costly it is weaker, never stricter (unknown revisions
//! are bounded per write, not jointly; unknown writes nobody reads are pooled and placed lazily,
//! see `search` for why that is sound). A key whose search runs out of budget is reported as
//! undecided, which fails the run like any anomaly.

mod global;
mod index;
mod keys;
mod lower;
mod model;
mod search;
mod stale;
mod watch;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::chaos::history::{Call, EventKind, History, Operation, Outcome, WatchEvent};

/// What the checker found.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// Operations in the history.
    pub operations: usize,
    /// Distinct keys the operations touched.
    pub keys: usize,
    /// Watch streams checked.
    pub watches: usize,
    /// Everything wrong; empty when the history passes.
    pub anomalies: Vec<Anomaly>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// The kinds of anomaly found, each once, in the order of [`AnomalyKind`].
    pub fn kinds(&self) -> Vec<AnomalyKind> {
        let kinds: BTreeSet<AnomalyKind> = self.anomalies.iter().map(|a| a.kind).collect();
        kinds.into_iter().collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnomalyKind {
    /// The record itself is broken (a value written twice, an outcome that does not fit its call,
    /// a return before the invocation): the harness's fault, but nothing can be trusted after it.
    InvalidHistory,
    /// A key's operations have no order consistent with etcd's semantics.
    NotLinearizable,
    /// The search for a key ran out of budget: not a pass.
    Undecided,
    /// A read returned an older value of its key (or its absence from an older revision) than
    /// a write or a read of the key that completed before the read was invoked had established.
    StaleRead,
    /// A read returned a value no write could have produced (never written, written to another
    /// key, by a compare-and-set that failed, or only after the read returned).
    PhantomRead,
    /// A read's `mod_revision` for a value differs from the revision its write was acknowledged
    /// at, or from what another read reported for the same value.
    ReadWrongRevision,
    /// An answer etcd cannot give (a version that does not fit the revisions, a header revision
    /// below the returned `mod_revision`, a delete of one key removing several).
    ImpossibleResult,
    /// Two writes acknowledged at the same revision.
    RevisionReused,
    /// An operation saw an older revision than one that completed before it was invoked (a stale
    /// read), or a write got a revision not above it.
    RevisionWentBackwards,
    WatchOutOfOrder,
    WatchDuplicate,
    /// A write the stream vouched for is missing from it.
    WatchGap,
    /// An event that matches no write of the history.
    WatchUnknownEvent,
    /// An event for a known write at another revision.
    WatchWrongRevision,
    /// Two streams disagree on what happened at a revision.
    WatchDisagreement,
    /// An event outside the stream's key prefix or before its start revision.
    WatchOutOfRange,
}

impl AnomalyKind {
    /// The name in a machine-readable summary: the display name with dashes, `stale-read`.
    pub fn slug(self) -> String {
        self.to_string().replace(' ', "-")
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AnomalyKind::InvalidHistory => "invalid history",
            AnomalyKind::NotLinearizable => "not linearizable",
            AnomalyKind::Undecided => "could not decide",
            AnomalyKind::StaleRead => "stale read",
            AnomalyKind::PhantomRead => "phantom read",
            AnomalyKind::ReadWrongRevision => "read with a wrong revision",
            AnomalyKind::ImpossibleResult => "impossible result",
            AnomalyKind::RevisionReused => "revision reused",
            AnomalyKind::RevisionWentBackwards => "revision went backwards",
            AnomalyKind::WatchOutOfOrder => "watch events out of order",
            AnomalyKind::WatchDuplicate => "duplicated watch event",
            AnomalyKind::WatchGap => "missing watch event",
            AnomalyKind::WatchUnknownEvent => "watch event matching no write",
            AnomalyKind::WatchWrongRevision => "watch event with a wrong revision",
            AnomalyKind::WatchDisagreement => "watch streams disagree",
            AnomalyKind::WatchOutOfRange => "watch event out of range",
        })
    }
}

/// One thing wrong with a history, with the operations that show it.
#[derive(Clone, Debug)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    /// The key it concerns, when it concerns one.
    pub key: Option<String>,
    /// What is wrong, in a sentence.
    pub summary: String,
    /// The operations that show it, by invocation time: for a key that is not linearizable, a
    /// small failing sub-history.
    pub operations: Vec<Operation>,
    /// Anything else a reader needs (watch events, what the sub-history leaves out).
    pub notes: Vec<String>,
}

impl Anomaly {
    fn new(kind: AnomalyKind, key: Option<&str>, summary: String) -> Anomaly {
        Anomaly {
            kind,
            key: key.map(str::to_string),
            summary,
            operations: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn with_operations<'a>(
        mut self,
        operations: impl IntoIterator<Item = &'a Operation>,
    ) -> Anomaly {
        self.operations.extend(operations.into_iter().cloned());
        self.operations.sort_by_key(|op| (op.invoke_ns, op.client));
        self
    }

    fn with_note(mut self, note: String) -> Anomaly {
        self.notes.push(note);
        self
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.kind)?;
        if let Some(key) = &self.key {
            write!(f, " key {key:?}")?;
        }
        writeln!(f, ": {}", self.summary)?;
        for op in &self.operations {
            writeln!(f, "    {}", describe(op))?;
        }
        for note in &self.notes {
            writeln!(f, "    ({note})")?;
        }
        Ok(())
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "checked {} operations on {} keys and {} watch streams: {}",
            self.operations,
            self.keys,
            self.watches,
            match self.anomalies.len() {
                0 => "no anomalies".to_string(),
                1 => "1 anomaly".to_string(),
                n => format!("{n} anomalies"),
            }
        )?;
        for anomaly in &self.anomalies {
            write!(f, "{anomaly}")?;
        }
        Ok(())
    }
}

/// Checks a history: every key linearizable, revisions consistent across the store, every watch
/// stream ordered, duplicate-free, complete and in agreement with the others.
pub fn check(history: &History) -> CheckReport {
    let index = index::Index::new(history);
    let mut findings = Findings::default();
    keys::check(&index, &mut findings);
    stale::check(&index, &mut findings);
    global::check(&index, &mut findings);
    watch::check(&index, &mut findings);
    CheckReport {
        operations: history.operations.len(),
        keys: index.by_key.len(),
        watches: history.watches.len(),
        anomalies: findings.finish(),
    }
}

/// Anomalies as they are found, at most a few of each kind per scope (one watch stream, the
/// store-wide checks) so that one broken stream does not bury the rest; the others are counted.
#[derive(Debug, Default)]
struct Findings {
    anomalies: Vec<Anomaly>,
    per_scope: BTreeMap<(AnomalyKind, String), usize>,
}

const SHOWN_PER_SCOPE: usize = 5;

impl Findings {
    fn push(&mut self, scope: &str, anomaly: Anomaly) {
        let count = self
            .per_scope
            .entry((anomaly.kind, scope.to_string()))
            .or_default();
        *count += 1;
        if *count <= SHOWN_PER_SCOPE {
            self.anomalies.push(anomaly);
        }
    }

    fn finish(mut self) -> Vec<Anomaly> {
        for ((kind, scope), count) in self.per_scope {
            if count > SHOWN_PER_SCOPE {
                self.anomalies.push(Anomaly::new(
                    kind,
                    None,
                    format!(
                        "{} more like the above in {scope} (not shown)",
                        count - SHOWN_PER_SCOPE
                    ),
                ));
            }
        }
        self.anomalies
    }
}

fn millis(ns: u64) -> String {
    format!("{}.{:03}", ns / 1_000_000, (ns / 1_000) % 1_000)
}

/// One operation on a line: client, invoke and return times in ms, call, outcome.
fn describe(op: &Operation) -> String {
    let returned = op.return_ns.map_or("?".to_string(), millis);
    let call = match &op.call {
        Call::Put { key, value } => format!("put {key} = {value:?}"),
        Call::Get { key } => format!("get {key}"),
        Call::Delete { key } => format!("delete {key}"),
        Call::Cas {
            key,
            expected,
            value,
        } => match expected {
            Some(expected) => format!("cas {key}: if value == {expected:?} then put {value:?}"),
            None => format!("cas {key}: if absent then put {value:?}"),
        },
    };
    let outcome = match &op.outcome {
        Outcome::Put { revision } => format!("ok at revision {revision}"),
        Outcome::Get { revision, kv: None } => format!("absent (header revision {revision})"),
        Outcome::Get {
            revision,
            kv: Some(kv),
        } => format!(
            "{:?} (create {}, mod {}, version {}; header revision {revision})",
            kv.value, kv.create_revision, kv.mod_revision, kv.version
        ),
        Outcome::Delete { revision, deleted } => {
            if *deleted > 0 {
                format!("deleted {deleted} at revision {revision}")
            } else {
                format!("deleted nothing (header revision {revision})")
            }
        }
        Outcome::Cas {
            revision,
            succeeded,
        } => {
            if *succeeded {
                format!("succeeded at revision {revision}")
            } else {
                format!("failed (header revision {revision})")
            }
        }
        Outcome::Unknown => "unknown outcome (may or may not have taken effect)".to_string(),
    };
    format!(
        "client {:>3}  {:>12} .. {:>12} ms  {call}  ->  {outcome}",
        op.client,
        millis(op.invoke_ns),
        returned
    )
}

fn describe_event(event: &WatchEvent) -> String {
    match event.kind {
        EventKind::Put => format!(
            "put {} = {:?} at revision {}",
            event.key, event.value, event.mod_revision
        ),
        EventKind::Delete => format!("delete {} at revision {}", event.key, event.mod_revision),
    }
}
