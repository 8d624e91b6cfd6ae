//! Turns one key's recorded operations into a search [`Problem`], sorting the operations that
//! may or may not have taken effect into what the search can afford.
//!
//! An operation whose effect is uncertain (unknown outcome, still in flight where a window ends,
//! or hidden while shrinking) is one of:
//!
//! * **certain after all**: a write whose (unique) value an operation that took effect observed
//!   (a `Get` returned it, a successful compare-and-set expected it). Only that write can have
//!   produced the value, so it happened, and before the observer: it is searched as an ordinary
//!   operation returning when its earliest observer returned. Every linearization already puts
//!   it there, so this adds no constraint. A `Get` that saw it also tells its revision. One
//!   invoked before a window that starts from an open state may have taken effect before the
//!   window; placing it in the window just before its observer, with any revision and leaving
//!   the floor alone ([`NewRev::Anywhere`]), covers that case too.
//! * **quiet**: any other write. Which of several quiet writes of the same kind took effect
//!   makes no difference to anything the search checks (they all leave "a value nobody reads"),
//!   so they go into two pools, puts and deletes, used in invocation order and only where
//!   needed; see `search`. Treating them alike is a weakening where it is not exact: a quiet
//!   compare-and-set counts as a put (as if it could write even when its compare fails), a
//!   failed compare-and-set expecting a quiet write's value is not held to it, and a write
//!   whose revision is known only because the window cut off its return loses it.
//!
//! Uncertain reads constrain nothing and are dropped.

use std::collections::HashMap;

use super::index::Index;
use super::model::{Effect, Model, NewRev, Observed, State, Val};
use super::search::{Forced, Problem};
use crate::chaos::history::{Call, Operation, Outcome};

/// How the search sees a recorded operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// As recorded.
    Shown,
    /// Weakened: a read is left out, a write's outcome is forgotten (it may or may not have taken
    /// effect). A history that is linearizable stays so under any weakening, so a weakened
    /// history that fails proves the original fails.
    Hidden,
}

/// The part of a key's history to search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Window {
    /// When set, a time at which none of the key's operations with a known outcome was in
    /// flight. Those that returned before it were all linearized before every later one, so
    /// their combined effect is replaced by an open state (any value they wrote, or absent) in
    /// a store at least at the highest revision they saw: again a weakening.
    pub(super) from: Option<u64>,
    /// Operations invoked later are left out; those returning later may or may not have taken
    /// effect by then (a prefix of a linearizable history is linearizable in that sense).
    pub(super) to: u64,
}

impl Window {
    pub(super) const WHOLE: Window = Window {
        from: None,
        to: u64::MAX,
    };
}

/// The search problem, and where its operations came from.
#[derive(Clone, Debug)]
pub(super) struct Lowered {
    pub(super) problem: Problem,
    /// Recorded operations (indices into the key's list) in the window, by role.
    pub(super) forced: Vec<usize>,
    pub(super) optional_quiet: Vec<usize>,
    /// Operations that completed before `window.from`.
    pub(super) before: usize,
    /// The one among them that saw the highest revision (the window's floor).
    pub(super) floor_witness: Option<usize>,
}

/// What an uncertain write would do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteKind {
    Put,
    Delete,
    Cas(Option<u32>),
}

struct Uncertain {
    slot: usize,
    invoke: u64,
    call_value: Option<u32>,
    /// The revision, when the outcome is known (the operation is only cut off by the window).
    rev: Option<i64>,
    may_be_before_window: bool,
    effect_kind: WriteKind,
}

/// Lowers `ops` (the key's operations, sorted by invocation) seen through `modes` and `window`.
pub(super) fn lower(
    index: &Index<'_>,
    ops: &[&Operation],
    modes: &[Mode],
    window: Window,
) -> Lowered {
    let id = |value: &str| index.id(value).unwrap_or(u32::MAX - 1);
    let mut before = 0;
    let mut floor_witness = None;
    let mut model = Model::default();
    let mut floor = 1;
    let mut forced: Vec<(usize, Forced)> = Vec::new();
    let mut uncertain: Vec<Uncertain> = Vec::new();
    for (slot, (op, mode)) in ops.iter().zip(modes).enumerate() {
        if op.invoke_ns > window.to {
            continue;
        }
        let known = op.outcome != Outcome::Unknown;
        if let (Some(from), true, Some(ret)) = (window.from, known, op.return_ns)
            && ret < from
        {
            before += 1;
            if let Some(header) = header(&op.outcome)
                && header > floor
            {
                floor = header;
                floor_witness = Some(slot);
            }
            if let Some(value) = written(op) {
                model.past.insert(id(value));
            }
            continue;
        }
        let shown = *mode == Mode::Shown && known;
        let ret = op.return_ns.filter(|&ret| shown && ret <= window.to);
        let is_read = reads_only(op);
        if is_read && (ret.is_none() || *mode == Mode::Hidden) {
            continue;
        }
        if let Some(ret) = ret {
            if let Some(effect) = known_effect(op, &id) {
                forced.push((
                    slot,
                    Forced {
                        source: slot,
                        invoke: op.invoke_ns,
                        ret,
                        effect,
                    },
                ));
            }
            continue;
        }
        let may_be_before_window = window.from.is_some_and(|from| op.invoke_ns < from);
        let rev = if shown {
            match op.outcome {
                Outcome::Put { revision }
                | Outcome::Delete { revision, .. }
                | Outcome::Cas { revision, .. } => Some(revision),
                _ => None,
            }
        } else {
            None
        };
        let (call_value, effect_kind) = match &op.call {
            Call::Put { value, .. } => (Some(id(value)), WriteKind::Put),
            Call::Cas {
                expected, value, ..
            } => (
                Some(id(value)),
                WriteKind::Cas(expected.as_deref().map(&id)),
            ),
            Call::Delete { .. } => (None, WriteKind::Delete),
            Call::Get { .. } => continue,
        };
        if may_be_before_window && let Some(value) = call_value {
            model.past.insert(value);
        }
        uncertain.push(Uncertain {
            slot,
            invoke: op.invoke_ns,
            call_value,
            rev,
            may_be_before_window,
            effect_kind,
        });
    }

    // Which uncertain writes an operation that took effect observed, and by when.
    let by_value: HashMap<u32, usize> = uncertain
        .iter()
        .enumerate()
        .filter_map(|(position, u)| u.call_value.map(|value| (value, position)))
        .collect();
    let mut observed_by: Vec<Option<u64>> = vec![None; uncertain.len()];
    let mut bound_revision: Vec<Option<i64>> = vec![None; uncertain.len()];
    let note = |value: u32, ret: u64, observed_by: &mut Vec<Option<u64>>| {
        if let Some(&position) = by_value.get(&value) {
            let slot = &mut observed_by[position];
            *slot = Some(slot.map_or(ret, |earlier| earlier.min(ret)));
        }
    };
    for (_, op) in &forced {
        match op.effect {
            Effect::Get {
                kv: Some(observed), ..
            } => {
                note(observed.value, op.ret, &mut observed_by);
                if let Some(&position) = by_value.get(&observed.value) {
                    bound_revision[position].get_or_insert(observed.modified);
                }
            }
            Effect::Cas {
                expected: Some(expected),
                ..
            } => note(expected, op.ret, &mut observed_by),
            _ => {}
        }
    }
    // A compare-and-set that certainly happened (and so succeeded) observed its expected value
    // too; follow such chains to a fixpoint.
    loop {
        let mut changed = false;
        for position in 0..uncertain.len() {
            let (Some(ret), WriteKind::Cas(Some(expected))) =
                (observed_by[position], uncertain[position].effect_kind)
            else {
                continue;
            };
            let before = by_value.get(&expected).map(|&writer| observed_by[writer]);
            note(expected, ret, &mut observed_by);
            let after = by_value.get(&expected).map(|&writer| observed_by[writer]);
            changed |= before != after;
        }
        if !changed {
            break;
        }
    }

    let mut optional_quiet = Vec::new();
    let mut quiet_puts = Vec::new();
    let mut quiet_deletes = Vec::new();
    for (position, u) in uncertain.iter().enumerate() {
        let value = u.call_value.map_or(Val::UNOBSERVED, Val::id);
        // A write that may have taken effect before the window and is searched inside it
        // (its observer is there) may be placed after revisions it preceded.
        let rev = if u.may_be_before_window {
            NewRev::Anywhere
        } else {
            NewRev::from(u.rev.or(bound_revision[position]))
        };
        let effect = match u.effect_kind {
            WriteKind::Put => Effect::Put { value, rev },
            WriteKind::Cas(expected) => Effect::Cas {
                expected,
                value,
                rev,
            },
            WriteKind::Delete => Effect::Delete { rev },
        };
        if let Some(ret) = observed_by[position] {
            forced.push((
                u.slot,
                Forced {
                    source: u.slot,
                    invoke: u.invoke,
                    ret,
                    effect,
                },
            ));
        } else {
            optional_quiet.push(u.slot);
            match u.effect_kind {
                WriteKind::Delete => quiet_deletes.push(u.invoke),
                WriteKind::Put | WriteKind::Cas(_) => quiet_puts.push(u.invoke),
            }
        }
    }
    let mut forced_slots: Vec<usize> = forced.iter().map(|(slot, _)| *slot).collect();
    forced_slots.sort_unstable();
    let initial = if window.from.is_some() {
        State::open(floor)
    } else {
        State::fresh()
    };
    let mut problem = Problem {
        model,
        initial,
        forced: forced.into_iter().map(|(_, op)| op).collect(),
        quiet_puts,
        quiet_deletes,
    };
    problem.sort();
    Lowered {
        problem,
        forced: forced_slots,
        optional_quiet,
        before,
        floor_witness,
    }
}

/// The header revision of an outcome.
pub(super) fn header(outcome: &Outcome) -> Option<i64> {
    match *outcome {
        Outcome::Put { revision }
        | Outcome::Get { revision, .. }
        | Outcome::Delete { revision, .. }
        | Outcome::Cas { revision, .. } => Some(revision),
        Outcome::Unknown => None,
    }
}

/// The value an operation with a known outcome wrote, if it wrote one.
fn written(op: &Operation) -> Option<&str> {
    match (&op.call, &op.outcome) {
        (Call::Put { value, .. }, Outcome::Put { .. })
        | (
            Call::Cas { value, .. },
            Outcome::Cas {
                succeeded: true, ..
            },
        ) => Some(value),
        _ => None,
    }
}

/// Whether the operation, as recorded, changed nothing (a read, a failed compare-and-set, a
/// delete of nothing).
fn reads_only(op: &Operation) -> bool {
    matches!(
        (&op.call, &op.outcome),
        (Call::Get { .. }, _)
            | (_, Outcome::Get { .. })
            | (
                _,
                Outcome::Cas {
                    succeeded: false,
                    ..
                }
            )
            | (_, Outcome::Delete { deleted: 0, .. })
    )
}

fn known_effect(op: &Operation, id: &impl Fn(&str) -> u32) -> Option<Effect> {
    Some(match (&op.call, &op.outcome) {
        (Call::Put { value, .. }, Outcome::Put { revision }) => Effect::Put {
            value: Val::id(id(value)),
            rev: NewRev::At(*revision),
        },
        (Call::Get { .. }, Outcome::Get { revision, kv }) => Effect::Get {
            header: *revision,
            kv: kv.as_ref().map(|kv| Observed {
                value: id(&kv.value),
                create: kv.create_revision,
                modified: kv.mod_revision,
                version: kv.version,
            }),
        },
        (Call::Delete { .. }, Outcome::Delete { revision, deleted }) => {
            if *deleted > 0 {
                Effect::Delete {
                    rev: NewRev::At(*revision),
                }
            } else {
                Effect::DeleteNothing { header: *revision }
            }
        }
        (
            Call::Cas {
                expected, value, ..
            },
            Outcome::Cas {
                revision,
                succeeded,
            },
        ) => {
            let expected = expected.as_deref().map(id);
            if *succeeded {
                Effect::Cas {
                    expected,
                    value: Val::id(id(value)),
                    rev: NewRev::At(*revision),
                }
            } else {
                Effect::CasFailed {
                    expected,
                    header: *revision,
                }
            }
        }
        _ => return None,
    })
}
