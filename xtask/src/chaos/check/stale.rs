//! Stale reads, named as such: a read that returned an older state of its key than one an
//! operation on that key had established before the read was invoked.
//!
//! If `a` returned before a read `r` of the same key was invoked, `r` is linearized after `a`,
//! so the key's last change as `r` sees it is at least as recent as what `a` established:
//!
//! * an acknowledged write (put, a compare-and-set that succeeded, a delete that deleted) at
//!   revision `R`: the key then has a `mod_revision` of at least `R`, or is absent after a
//!   delete at or after `R`;
//! * a read that returned the key with `mod_revision` `m`: likewise, at least `m`.
//!
//! So `r` is stale when it returns the key with a `mod_revision` below the newest of those, or
//! returns it absent with a header revision below the newest value established (a read of the
//! store before that value was written). Both follow from linearizability alone, so the check
//! never calls a correct history wrong; the per-key search finds the same histories not
//! linearizable, but only this check says what kind of wrong it is. Operations of unknown
//! outcome establish nothing (they have no return time).

use super::index::{Index, Role, outcome_fits_call, role};
use super::{Anomaly, AnomalyKind, Findings};
use crate::chaos::history::{Operation, Outcome};

/// What a completed operation established about its key.
#[derive(Clone, Copy)]
struct Established {
    returned: u64,
    /// The key's `mod_revision` was at least this from then on (or the key was deleted later).
    revision: i64,
    /// Whether the key held a value at `revision` (not for a delete).
    present: bool,
    position: usize,
}

fn established(position: usize, op: &Operation) -> Option<Established> {
    let returned = op.return_ns?;
    if !outcome_fits_call(op) {
        return None;
    }
    let (revision, present) = match (role(op), &op.outcome) {
        (Role::Write(revision), Outcome::Delete { .. }) => (revision, false),
        (Role::Write(revision), _) => (revision, true),
        (Role::Read(_), Outcome::Get { kv: Some(kv), .. }) => (kv.mod_revision, true),
        _ => return None,
    };
    Some(Established {
        returned,
        revision,
        present,
        position,
    })
}

fn what(op: &Operation) -> &'static str {
    match op.outcome {
        Outcome::Get { .. } => "a read",
        Outcome::Delete { .. } => "a delete",
        _ => "a write",
    }
}

pub(super) fn check(index: &Index<'_>, findings: &mut Findings) {
    let operations = &index.history.operations;
    for (key, positions) in &index.by_key {
        let mut by_return: Vec<Established> = positions
            .iter()
            .filter_map(|&position| established(position, &operations[position]))
            .collect();
        by_return.sort_by_key(|e| (e.returned, e.position));
        let mut returned = 0;
        // The newest state established so far, and the newest value.
        let mut newest: Option<Established> = None;
        let mut newest_value: Option<Established> = None;
        // `positions` are in invocation order.
        for &position in positions {
            let read = &operations[position];
            while returned < by_return.len() && by_return[returned].returned < read.invoke_ns {
                let e = by_return[returned];
                if newest.is_none_or(|n| e.revision > n.revision) {
                    newest = Some(e);
                }
                if e.present && newest_value.is_none_or(|n| e.revision > n.revision) {
                    newest_value = Some(e);
                }
                returned += 1;
            }
            let Outcome::Get {
                revision: header,
                kv,
            } = &read.outcome
            else {
                continue;
            };
            if read.return_ns.is_none() || !outcome_fits_call(read) {
                continue;
            }
            let (summary, by) = match (kv, newest, newest_value) {
                (Some(kv), Some(by), _) if kv.mod_revision < by.revision => (
                    format!(
                        "a read returned {:?} (mod_revision {}), older than revision {} that {} \
                         completed before the read was invoked had established",
                        kv.value,
                        kv.mod_revision,
                        by.revision,
                        what(&operations[by.position])
                    ),
                    by,
                ),
                (None, _, Some(by)) if *header < by.revision => (
                    format!(
                        "a read returned no value as of revision {header}, older than the value \
                         at revision {} that {} completed before the read was invoked had \
                         established",
                        by.revision,
                        what(&operations[by.position])
                    ),
                    by,
                ),
                _ => continue,
            };
            findings.push(
                &format!("key {key:?}"),
                Anomaly::new(AnomalyKind::StaleRead, Some(key), summary)
                    .with_operations([&operations[by.position], read]),
            );
        }
    }
}
