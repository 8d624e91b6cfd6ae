//! The history checker: proves a chaos run's history linearizable against a model of etcd with
//! revisions, and its watch streams ordered, free of duplicates and complete.
//!
//! (First version: the API only; the search lands next.)

use std::collections::BTreeSet;
use std::fmt;

use crate::chaos::history::History;

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
}

/// One thing wrong with a history, with the operations that show it.
#[derive(Clone, Debug)]
pub struct Anomaly {
    pub kind: String,
    pub message: String,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "checked {} operations on {} keys and {} watch streams: {} anomalies",
            self.operations,
            self.keys,
            self.watches,
            self.anomalies.len()
        )?;
        for anomaly in &self.anomalies {
            writeln!(f, "{anomaly}")?;
        }
        Ok(())
    }
}

/// Checks a history. (Placeholder: counts only, finds nothing yet.)
pub fn check(history: &History) -> CheckReport {
    let keys: BTreeSet<&str> = history.operations.iter().map(|op| op.call.key()).collect();
    CheckReport {
        operations: history.operations.len(),
        keys: keys.len(),
        watches: history.watches.len(),
        anomalies: Vec::new(),
    }
}
