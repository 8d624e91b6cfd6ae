//! Per-key checks: the cheap checks of what each read names (they give the clearest messages),
//! then the linearizability search, and, when it fails, shrinking to a small failing
//! sub-history.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::index::{Index, Role, outcome_fits_call, role};
use super::lower::{Lowered, Mode, Window, lower};
use super::model::{Observed, plausible};
use super::search::Verdict;
use super::{Anomaly, AnomalyKind, Findings, describe};
use crate::chaos::history::{Operation, Outcome};

/// Configurations one key's search may visit before it gives up (about 200 bytes each, so at
/// most a few hundred MB with two keys at a time). A linearizable key typically needs a little
/// more than one per operation.
const SEARCH_BUDGET: usize = 1_000_000;
/// The same for each attempt while shrinking (an attempt that runs out counts as not failing).
const SHRINK_BUDGET: usize = 200_000;
/// Configurations all attempts to shrink one key may visit together (a few seconds' work); the
/// sub-history found by then is reported. Counting work rather than time keeps the result the
/// same on a loaded machine.
const SHRINK_WORK: usize = 10_000_000;
/// A backstop in case configurations get slow to explore.
const SHRINK_TIME: Duration = Duration::from_secs(20);

pub(super) fn check(index: &Index<'_>, findings: &mut Findings) {
    report_duplicate_values(index, findings);
    let keys: Vec<(&str, Vec<&Operation>)> = index
        .by_key
        .iter()
        .map(|(key, positions)| {
            let ops = positions
                .iter()
                .map(|&position| &index.history.operations[position])
                .collect();
            (*key, ops)
        })
        .collect();
    // Keys are independent; two threads halve the wait on a big history.
    let results: Vec<Vec<Anomaly>> = std::thread::scope(|scope| {
        let (left, right) = keys.split_at(keys.len() / 2);
        let other = scope.spawn(|| {
            left.iter()
                .map(|(key, ops)| check_key(index, key, ops, SEARCH_BUDGET))
                .collect::<Vec<_>>()
        });
        let mut mine: Vec<Vec<Anomaly>> = right
            .iter()
            .map(|(key, ops)| check_key(index, key, ops, SEARCH_BUDGET))
            .collect();
        let mut theirs = other
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        theirs.append(&mut mine);
        theirs
    });
    for (anomalies, (key, _)) in results.into_iter().zip(&keys) {
        for anomaly in anomalies {
            findings.push(&format!("key {key:?}"), anomaly);
        }
    }
}

fn report_duplicate_values(index: &Index<'_>, findings: &mut Findings) {
    for writers in &index.writers {
        if writers.len() > 1 {
            let ops = writers.iter().map(|&p| &index.history.operations[p]);
            findings.push(
                "the history",
                Anomaly::new(
                    AnomalyKind::InvalidHistory,
                    None,
                    "one value written by several operations (values must be unique per run)"
                        .to_string(),
                )
                .with_operations(ops),
            );
        }
    }
}

fn check_key(index: &Index<'_>, key: &str, ops: &[&Operation], budget: usize) -> Vec<Anomaly> {
    let anomalies = precheck(index, key, ops);
    if !anomalies.is_empty() {
        // The search would only fail on the same thing, with a vaguer message.
        return anomalies;
    }
    let modes = vec![Mode::Shown; ops.len()];
    let lowered = lower(index, ops, &modes, Window::WHOLE);
    let problem = &lowered.problem;
    match problem.search(budget) {
        Verdict::Linearizable => Vec::new(),
        Verdict::Undecided => vec![Anomaly::new(
            AnomalyKind::Undecided,
            Some(key),
            format!(
                "the search visited {budget} configurations without deciding ({} \
                 operations that took effect, {} that may have); this is not a pass",
                lowered.forced.len(),
                lowered.optional_quiet.len()
            ),
        )],
        Verdict::NotLinearizable { stuck_at } => {
            let stuck = problem.forced[stuck_at].source;
            vec![shrink(
                index,
                key,
                ops,
                ops[stuck].return_ns.unwrap_or(u64::MAX),
            )]
        }
    }
}

/// What each read names must exist: the value's write, on this key, not failed, invoked before
/// the read returned, at the revision the read reports.
fn precheck(index: &Index<'_>, key: &str, ops: &[&Operation]) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    let mut revision_seen: HashMap<&str, (i64, &Operation)> = HashMap::new();
    for &op in ops {
        if !outcome_fits_call(op) || op.return_ns.is_some_and(|ret| ret < op.invoke_ns) {
            anomalies.push(
                Anomaly::new(
                    AnomalyKind::InvalidHistory,
                    Some(key),
                    "an outcome that does not fit its call, or a return before the invocation"
                        .to_string(),
                )
                .with_operations([op]),
            );
            continue;
        }
        if op.return_ns.is_none() && op.outcome != Outcome::Unknown {
            anomalies.push(
                Anomaly::new(
                    AnomalyKind::InvalidHistory,
                    Some(key),
                    "an outcome without a return time".to_string(),
                )
                .with_operations([op]),
            );
            continue;
        }
        if let Outcome::Delete { deleted, .. } = op.outcome
            && !(0..=1).contains(&deleted)
        {
            anomalies.push(
                Anomaly::new(
                    AnomalyKind::ImpossibleResult,
                    Some(key),
                    format!("a delete of one key reported {deleted} keys deleted"),
                )
                .with_operations([op]),
            );
        }
        let Outcome::Get {
            revision: header,
            kv: Some(kv),
        } = &op.outcome
        else {
            continue;
        };
        let observed = Observed {
            value: 0,
            create: kv.create_revision,
            modified: kv.mod_revision,
            version: kv.version,
        };
        if kv.mod_revision > *header {
            anomalies.push(
                Anomaly::new(
                    AnomalyKind::ImpossibleResult,
                    Some(key),
                    format!(
                        "a read's header revision {header} is below the mod_revision {} it returned",
                        kv.mod_revision
                    ),
                )
                .with_operations([op]),
            );
        } else if !plausible(&observed) {
            anomalies.push(
                Anomaly::new(
                    AnomalyKind::ImpossibleResult,
                    Some(key),
                    "a read returned revisions and a version that cannot go together (version 1 \
                     iff create == mod, and at least version - 1 revisions between them)"
                        .to_string(),
                )
                .with_operations([op]),
            );
        }
        let writers: Vec<&Operation> = index
            .id(&kv.value)
            .map(|id| {
                index.writers[id as usize]
                    .iter()
                    .map(|&p| &index.history.operations[p])
                    .collect()
            })
            .unwrap_or_default();
        let on_key: Vec<&Operation> = writers
            .iter()
            .copied()
            .filter(|w| w.call.key() == key)
            .collect();
        let phantom = |why: String| {
            Anomaly::new(AnomalyKind::PhantomRead, Some(key), why)
                .with_operations(std::iter::once(op).chain(writers.iter().copied()))
        };
        let Some(&writer) = on_key.first() else {
            anomalies.push(phantom(if writers.is_empty() {
                format!("read {:?}, a value no operation wrote", kv.value)
            } else {
                format!("read {:?}, a value written to another key", kv.value)
            }));
            continue;
        };
        if let Outcome::Cas {
            succeeded: false, ..
        } = writer.outcome
        {
            anomalies.push(phantom(format!(
                "read {:?}, written only by a compare-and-set that reported failure",
                kv.value
            )));
            continue;
        }
        if let Some(ret) = op.return_ns
            && writer.invoke_ns > ret
        {
            anomalies.push(phantom(format!(
                "read {:?} before the write of it was invoked",
                kv.value
            )));
            continue;
        }
        if let Role::Write(revision) = role(writer)
            && revision != kv.mod_revision
        {
            anomalies.push(
                Anomaly::new(
                    AnomalyKind::ReadWrongRevision,
                    Some(key),
                    format!(
                        "read {:?} with mod_revision {}, but its write was acknowledged at \
                         revision {revision}",
                        kv.value, kv.mod_revision
                    ),
                )
                .with_operations([op, writer]),
            );
            continue;
        }
        match revision_seen.get(kv.value.as_str()) {
            Some(&(revision, other)) if revision != kv.mod_revision => anomalies.push(
                Anomaly::new(
                    AnomalyKind::ReadWrongRevision,
                    Some(key),
                    format!(
                        "two reads of {:?} report different mod_revisions ({revision} and {})",
                        kv.value, kv.mod_revision
                    ),
                )
                .with_operations([other, op, writer]),
            ),
            _ => {
                revision_seen.insert(&kv.value, (kv.mod_revision, op));
            }
        }
    }
    anomalies
}

/// What shrinking one key may still spend.
struct Allowance {
    configurations: usize,
    deadline: Instant,
}

impl Allowance {
    fn spent(&self) -> bool {
        self.configurations == 0 || Instant::now() > self.deadline
    }

    /// Whether `ops` under `modes`, in `window`, certainly has no linearization.
    fn fails(
        &mut self,
        index: &Index<'_>,
        ops: &[&Operation],
        modes: &[Mode],
        window: Window,
    ) -> bool {
        let problem = lower(index, ops, modes, window).problem;
        let (verdict, explored) = problem.search_counted(SHRINK_BUDGET.min(self.configurations));
        self.configurations = self.configurations.saturating_sub(explored);
        matches!(verdict, Verdict::NotLinearizable { .. })
    }
}

/// Shrinks a key's failing history, by weakenings only (so that what is reported still proves
/// the failure): end it where the search got stuck, then start it as late as possible (from an
/// open state), then hide operations, in halving chunks, while it still fails.
fn shrink(index: &Index<'_>, key: &str, ops: &[&Operation], stuck_return: u64) -> Anomaly {
    let mut allowance = Allowance {
        configurations: SHRINK_WORK,
        deadline: Instant::now() + SHRINK_TIME,
    };
    let mut modes = vec![Mode::Shown; ops.len()];

    // Earliest end at which the shortened history still fails. Ending where the search got
    // stuck is not always enough: writes still in flight there lose their revisions, and with
    // them what made the history fail.
    let mut ends: Vec<u64> = ops
        .iter()
        .filter_map(|op| op.return_ns)
        .filter(|&ret| ret >= stuck_return)
        .collect();
    ends.sort_unstable();
    ends.dedup();
    let (mut low, mut high) = (0, ends.len());
    while low < high && !allowance.spent() {
        let middle = (low + high) / 2;
        let candidate = Window {
            from: None,
            to: ends[middle],
        };
        if allowance.fails(index, ops, &modes, candidate) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    let mut window = Window {
        from: None,
        to: ends.get(high).copied().unwrap_or(u64::MAX),
    };
    if !allowance.fails(index, ops, &modes, window) {
        window = Window::WHOLE;
    }

    // Latest cut at which the shortened history still fails. Cutting later abstracts more, so
    // failures are (nearly) monotone in the cut; the binary search only ever keeps cuts it saw
    // fail.
    let cuts = quiescent_points(ops, window.to);
    let (mut low, mut high) = (0, cuts.len());
    while low < high && !allowance.spent() {
        let middle = (low + high) / 2;
        let candidate = Window {
            from: Some(cuts[middle]),
            ..window
        };
        if allowance.fails(index, ops, &modes, candidate) {
            window = candidate;
            low = middle + 1;
        } else {
            high = middle;
        }
    }

    // Hide what is not needed, big chunks first.
    let in_window: Vec<usize> = (0..ops.len())
        .filter(|&slot| {
            let op = ops[slot];
            op.invoke_ns <= window.to
                && op.outcome != Outcome::Unknown
                && window
                    .from
                    .is_none_or(|from| op.return_ns.is_some_and(|ret| ret >= from))
        })
        .collect();
    let mut chunk = in_window.len().div_ceil(2).max(1);
    'shrinking: loop {
        let mut start = 0;
        while start < in_window.len() {
            if allowance.spent() {
                break 'shrinking;
            }
            let slots = &in_window[start..(start + chunk).min(in_window.len())];
            start += chunk;
            if slots.iter().all(|&slot| modes[slot] == Mode::Hidden) {
                continue;
            }
            let mut candidate = modes.clone();
            for &slot in slots {
                candidate[slot] = Mode::Hidden;
            }
            if allowance.fails(index, ops, &candidate, window) {
                modes = candidate;
            }
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    witness(index, key, ops, &modes, window, allowance.spent())
}

/// Times at which none of the key's operations with a known outcome is in flight (each one an
/// invocation time), up to `to`.
fn quiescent_points(ops: &[&Operation], to: u64) -> Vec<u64> {
    let mut points = Vec::new();
    let mut busy_until: Option<u64> = None;
    for op in ops {
        if op.invoke_ns > to {
            break;
        }
        if busy_until.is_some_and(|until| until < op.invoke_ns) {
            points.push(op.invoke_ns);
        }
        if op.outcome != Outcome::Unknown {
            let ret = op.return_ns.unwrap_or(u64::MAX);
            busy_until = Some(busy_until.map_or(ret, |until| until.max(ret)));
        }
    }
    points.dedup();
    points
}

fn witness(
    index: &Index<'_>,
    key: &str,
    ops: &[&Operation],
    modes: &[Mode],
    window: Window,
    out_of_budget: bool,
) -> Anomaly {
    let lowered: Lowered = lower(index, ops, modes, window);
    let problem = &lowered.problem;
    let stuck = match problem.search(SHRINK_BUDGET) {
        Verdict::NotLinearizable { stuck_at } => Some(problem.forced[stuck_at].source),
        _ => None,
    };
    let mut shown: Vec<usize> = lowered
        .forced
        .iter()
        .copied()
        .filter(|&slot| modes[slot] == Mode::Shown || ops[slot].outcome == Outcome::Unknown)
        .collect();
    shown.sort_unstable();
    shown.dedup();
    let summary = match stuck {
        Some(slot) => format!(
            "no order of these operations is one etcd could produce; none gets past the return \
             of [{}]",
            describe(ops[slot]).trim()
        ),
        None => "no order of the key's operations is one etcd could produce".to_string(),
    };
    // The operation that saw the highest revision before the window is part of the proof: the
    // window's reads and writes must not go below it.
    let floor_witness = lowered.floor_witness.filter(|slot| !shown.contains(slot));
    let mut anomaly = Anomaly::new(AnomalyKind::NotLinearizable, Some(key), summary)
        .with_operations(shown.iter().chain(&floor_witness).map(|&slot| ops[slot]));
    if let Some(from) = window.from {
        anomaly = anomaly.with_note(format!(
            "the key's state before {} ms is left open: absent, or any value written by the {} \
             operations completed by then (the highest revision they saw is shown)",
            super::millis(from),
            lowered.before
        ));
    }
    let hidden = (0..ops.len())
        .filter(|&slot| modes[slot] == Mode::Hidden)
        .count();
    let quiet_unknown = lowered
        .optional_quiet
        .iter()
        .filter(|&&slot| modes[slot] == Mode::Shown)
        .count();
    let mut left_out = Vec::new();
    if hidden > 0 {
        left_out.push(format!(
            "{hidden} operations of the window (reads dropped, writes taken as of unknown outcome)"
        ));
    }
    if quiet_unknown > 0 {
        left_out.push(format!(
            "{quiet_unknown} writes of unknown outcome (or still in flight) that nothing shown reads"
        ));
    }
    if !left_out.is_empty() {
        anomaly = anomaly.with_note(format!(
            "not shown: {}; whether or when any of those writes took effect, it still fails",
            left_out.join(" and ")
        ));
    }
    let later = ops.iter().filter(|op| op.invoke_ns > window.to).count();
    if later > 0 {
        anomaly = anomaly.with_note(format!(
            "{later} operations invoked after {} ms not shown; operations still in flight then \
             may or may not have taken effect",
            super::millis(window.to)
        ));
    }
    // Name the writes of values that shown reads returned, when the writes are not shown.
    for &slot in &shown {
        if let Outcome::Get { kv: Some(kv), .. } = &ops[slot].outcome
            && let Some(writer) = index.writer(&kv.value, key)
            && !anomaly
                .operations
                .iter()
                .any(|op| *op == index.history.operations[writer])
        {
            let note = format!(
                "{:?} was written by: {}",
                kv.value,
                describe(&index.history.operations[writer]).trim()
            );
            if !anomaly.notes.contains(&note) {
                anomaly = anomaly.with_note(note);
            }
        }
    }
    if out_of_budget {
        anomaly = anomaly.with_note(
            "shrinking ran out of its budget; the sub-history may not be minimal".to_string(),
        );
    }
    anomaly
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::history::{Call, History};

    #[test]
    fn a_search_out_of_budget_is_reported_as_undecided_not_passed() {
        // Ten sequential puts need at least ten configurations.
        let operations: Vec<Operation> = (0..10u64)
            .map(|i| Operation {
                client: 1,
                invoke_ns: 10 * i,
                return_ns: Some(10 * i + 5),
                call: Call::Put {
                    key: "k".into(),
                    value: format!("v{i}"),
                },
                outcome: Outcome::Put {
                    revision: i as i64 + 2,
                },
            })
            .collect();
        let history = History {
            operations,
            watches: Vec::new(),
        };
        let index = Index::new(&history);
        let ops: Vec<&Operation> = history.operations.iter().collect();
        assert!(check_key(&index, "k", &ops, 100).is_empty());
        let anomalies = check_key(&index, "k", &ops, 5);
        assert_eq!(anomalies.len(), 1);
        assert_eq!(anomalies[0].kind, AnomalyKind::Undecided);
        assert!(anomalies[0].to_string().contains("this is not a pass"));
    }
}
