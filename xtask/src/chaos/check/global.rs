//! Store-wide revision checks, which the per-key search cannot make: revisions are one counter
//! for the whole store, so operations on different keys are ordered by them too.
//!
//! * No two writes share a revision (every write of these histories touches one key).
//! * If `a` returned before `b` was invoked, `b` is linearized after `a`, when the store was at
//!   least at `a`'s revision: `b`'s header revision is at least `a`'s, and above it when `b` is
//!   a write (it made a new revision). A read that breaks it is a stale read.
//!
//! Writes of unknown outcome take part where a read pinned their revision (see `Index`), as the
//! later operation only: they have no return time.

use std::collections::BTreeMap;

use super::index::{Index, Role, role};
use super::{Anomaly, AnomalyKind, Findings};

const SCOPE: &str = "the store-wide revision checks";

pub(super) fn check(index: &Index<'_>, findings: &mut Findings) {
    let operations = &index.history.operations;

    let mut by_revision: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (&position, &revision) in &index.write_revision {
        by_revision.entry(revision).or_default().push(position);
    }
    for (revision, mut writers) in by_revision {
        if writers.len() > 1 {
            writers.sort_unstable();
            findings.push(
                SCOPE,
                Anomaly::new(
                    AnomalyKind::RevisionReused,
                    None,
                    format!("{} writes at revision {revision}", writers.len()),
                )
                .with_operations(writers.iter().map(|&p| &operations[p])),
            );
        }
    }

    // (position, revision, is a write) of every operation whose revision is known.
    let mut known: Vec<(usize, i64, bool)> = Vec::new();
    for (position, op) in operations.iter().enumerate() {
        match role(op) {
            Role::Write(revision) => known.push((position, revision, true)),
            Role::Read(revision) => known.push((position, revision, false)),
            Role::Unknown => {
                if let Some(&revision) = index.write_revision.get(&position) {
                    known.push((position, revision, true));
                }
            }
        }
    }
    let mut by_return: Vec<(u64, usize, i64)> = known
        .iter()
        .filter_map(|&(position, revision, _)| {
            let op = &operations[position];
            let ret = op.return_ns.filter(|_| role(op) != Role::Unknown)?;
            Some((ret, position, revision))
        })
        .collect();
    by_return.sort_unstable();
    let mut by_invoke = known;
    by_invoke.sort_by_key(|&(position, _, _)| (operations[position].invoke_ns, position));

    let mut returned = 0;
    // The highest revision among operations returned so far, and one that had it.
    let mut highest: Option<(i64, usize)> = None;
    for (position, revision, is_write) in by_invoke {
        let invoke = operations[position].invoke_ns;
        while returned < by_return.len() && by_return[returned].0 < invoke {
            let (_, earlier, earlier_revision) = by_return[returned];
            if highest.is_none_or(|(top, _)| earlier_revision > top) {
                highest = Some((earlier_revision, earlier));
            }
            returned += 1;
        }
        let Some((top, earlier)) = highest else {
            continue;
        };
        let behind = if is_write {
            revision <= top
        } else {
            revision < top
        };
        if behind {
            let summary = if is_write {
                format!(
                    "a write got revision {revision}, not above revision {top} that an operation \
                     completed before it was invoked had already seen"
                )
            } else {
                format!(
                    "stale read: header revision {revision}, below revision {top} that an \
                     operation completed before it was invoked had already seen"
                )
            };
            let mut anomaly = Anomaly::new(AnomalyKind::RevisionWentBackwards, None, summary)
                .with_operations([&operations[earlier], &operations[position]]);
            if role(&operations[position]) == Role::Unknown {
                anomaly = anomaly.with_note(format!(
                    "the write's outcome is unknown; a read returned its value with mod_revision \
                     {revision}"
                ));
            }
            findings.push(SCOPE, anomaly);
        }
    }
}
