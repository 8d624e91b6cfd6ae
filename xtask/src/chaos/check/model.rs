//! etcd's behaviour on one key, as the linearizability search steps through it.
//!
//! The state of a key is what a `Range` would return (value, create and mod revision, version)
//! plus `floor`: the lowest revision the store can have reached at this point of the order. Along
//! any linearization of an etcd history the store revision never decreases and every write
//! raises it, so a read's header revision is at least `floor` and a write's revision is above it.
//! That single number makes the per-key search see revisions: a read that returns the right value
//! with a header older than a write before it in the order is rejected.
//!
//! Revisions a history does not tell (the write's outcome is unknown, or the state before a
//! window of the history was left open) are ranges, narrowed by what later operations observe:
//! every read bounds the current key's revisions from above, a `Get` binds them exactly.

use std::collections::HashSet;

/// Upper end of a revision nobody has bounded yet.
pub(super) const OPEN_END: i64 = i64::MAX;

/// A value as the model holds it: one of the run's (unique) values, or a value no operation of
/// the history ever observes. Every write nobody observes stores the same `UNOBSERVED` marker,
/// which is what lets interchangeable unknown writes lead to equal states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Val(u32);

impl Val {
    pub(super) const UNOBSERVED: Val = Val(u32::MAX);

    pub(super) fn id(id: u32) -> Val {
        Val(id)
    }
}

/// A revision known to lie in `lo..=hi` (`lo == hi`: known exactly).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Rev {
    lo: i64,
    hi: i64,
}

impl Rev {
    pub(super) fn at(revision: i64) -> Rev {
        Rev {
            lo: revision,
            hi: revision,
        }
    }

    fn within(lo: i64, hi: i64) -> Option<Rev> {
        (lo <= hi).then_some(Rev { lo, hi })
    }

    /// The revision is `revision`, if that is possible.
    fn bind(self, revision: i64) -> Option<Rev> {
        (self.lo <= revision && revision <= self.hi).then_some(Rev::at(revision))
    }

    fn at_most(self, hi: i64) -> Option<Rev> {
        Rev::within(self.lo, self.hi.min(hi))
    }
}

/// The key as a `Range` would return it. `version` 0 stands for "not known" (real versions are
/// at least 1); it only arises after a window that starts from an open state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Kv {
    value: Val,
    create: Rev,
    modified: Rev,
    version: i64,
    /// When the write of the current value returned: quiet writes invoked by then may have taken
    /// effect before it (see [`Absorbed`]).
    since: u64,
}

/// Quiet writes (see `lower`) a read needs to have taken effect earlier than the search placed
/// any, invoked by `by`: `puts` more versions in the key's current life, and `deletes` (at most
/// one) when the key was re-created since the model's creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Absorbed {
    pub(super) puts: u32,
    pub(super) deletes: u32,
    pub(super) by: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Slot {
    /// Not known: absent, or holding a value written before the window (see [`Model::past`]).
    Open,
    Absent,
    Present(Kv),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct State {
    slot: Slot,
    /// The lowest revision the store can be at after the operations ordered so far.
    floor: i64,
}

impl State {
    /// The key before the run: absent, in a store at revision 1 at least.
    pub(super) fn fresh() -> State {
        State {
            slot: Slot::Absent,
            floor: 1,
        }
    }

    /// The lowest revision the store can be at.
    pub(super) fn floor(&self) -> i64 {
        self.floor
    }

    /// The key's state left open, in a store that has reached at least `floor`.
    pub(super) fn open(floor: i64) -> State {
        State {
            slot: Slot::Open,
            floor,
        }
    }
}

/// A `Range` result as the model compares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Observed {
    pub(super) value: u32,
    pub(super) create: i64,
    pub(super) modified: i64,
    pub(super) version: i64,
}

/// The revision a write gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NewRev {
    /// Acknowledged (or read) at this revision.
    At(i64),
    /// Not told by the history: some revision above everything ordered before it.
    Above,
    /// Not told, and the write may have been placed later than it took effect (see
    /// `Effect::QuietPut`): any revision, and the floor stays.
    Anywhere,
}

impl From<Option<i64>> for NewRev {
    fn from(revision: Option<i64>) -> NewRev {
        revision.map_or(NewRev::Above, NewRev::At)
    }
}

/// What one operation does to the key, with what it observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Effect {
    Put {
        value: Val,
        rev: NewRev,
    },
    /// A compare-and-set that succeeded.
    Cas {
        expected: Option<u32>,
        value: Val,
        rev: NewRev,
    },
    /// A compare-and-set whose compare failed: a read at `header`.
    CasFailed {
        expected: Option<u32>,
        header: i64,
    },
    Get {
        header: i64,
        kv: Option<Observed>,
    },
    /// A delete that removed the key.
    Delete {
        rev: NewRev,
    },
    /// A delete that found nothing: a read at `header`.
    DeleteNothing {
        header: i64,
    },
    /// A write nobody observes (see `lower`), placed by the search only where an operation needs
    /// it, which may be later than it took effect. So its revision is [`NewRev::Anywhere`]:
    /// placed later, it would otherwise have to exceed revisions that operations it really
    /// preceded saw. That is a weakening; what its revision could still tell is lost.
    QuietPut,
    QuietDelete,
}

impl Effect {
    /// The highest floor at which the operation can still be ordered: below its revision if it
    /// is a write whose revision is known, at most its header if it is a read.
    pub(super) fn floor_cap(&self) -> i64 {
        match *self {
            Effect::Put {
                rev: NewRev::At(revision),
                ..
            }
            | Effect::Cas {
                rev: NewRev::At(revision),
                ..
            }
            | Effect::Delete {
                rev: NewRev::At(revision),
            } => revision - 1,
            Effect::CasFailed { header, .. }
            | Effect::Get { header, .. }
            | Effect::DeleteNothing { header } => header,
            _ => i64::MAX,
        }
    }
}

/// The model of one key. `past` holds the values written before the window when the search
/// starts from an open state: the only values an open key can turn out to hold.
#[derive(Clone, Debug, Default)]
pub(super) struct Model {
    pub(super) past: HashSet<u32>,
}

impl Model {
    /// The state after `effect`, or `None` when etcd could not have produced it from `state`,
    /// with the quiet writes it needs to have happened earlier. `returned` is when the operation
    /// returned (`u64::MAX` for one that may not have happened).
    pub(super) fn step(
        &self,
        state: &State,
        effect: &Effect,
        returned: u64,
    ) -> Option<(State, Absorbed)> {
        let unchanged = |state| Some((state, Absorbed::default()));
        match *effect {
            Effect::Put { value, rev } => {
                unchanged(write(state, state.slot, value, rev, returned)?)
            }
            Effect::Cas {
                expected,
                value,
                rev,
            } => {
                let before = self.slot_where_compare_holds(state.slot, expected)?;
                unchanged(write(state, before, value, rev, returned)?)
            }
            Effect::CasFailed { expected, header } => {
                let slot = match (state.slot, expected) {
                    (Slot::Open, _) => Slot::Open,
                    // A value compare on a missing key fails in etcd.
                    (Slot::Absent, Some(_)) => Slot::Absent,
                    (Slot::Absent, None) => return None,
                    (Slot::Present(kv), None) => Slot::Present(kv),
                    (Slot::Present(kv), Some(expected)) => {
                        if kv.value == Val::id(expected) {
                            return None;
                        }
                        Slot::Present(kv)
                    }
                };
                unchanged(read(slot, state.floor, header)?)
            }
            Effect::Get { header, kv: None } => match state.slot {
                Slot::Present(_) => None,
                Slot::Open | Slot::Absent => unchanged(read(Slot::Absent, state.floor, header)?),
            },
            Effect::Get {
                header,
                kv: Some(observed),
            } => {
                if observed.modified > header {
                    return None;
                }
                let kv = match state.slot {
                    Slot::Absent => return None,
                    Slot::Open => {
                        if !self.past.contains(&observed.value) {
                            return None;
                        }
                        Kv {
                            value: Val::id(observed.value),
                            create: Rev::within(1, OPEN_END)?,
                            modified: Rev::within(1, OPEN_END)?,
                            version: 0,
                            since: 0,
                        }
                    }
                    Slot::Present(kv) => kv,
                };
                if kv.value != Val::id(observed.value) || !plausible(&observed) {
                    return None;
                }
                let absorbed = life_explained(&kv, &observed)?;
                let bound = Kv {
                    value: kv.value,
                    create: Rev::at(observed.create),
                    modified: kv.modified.bind(observed.modified)?,
                    version: observed.version,
                    since: kv.since,
                };
                Some((read(Slot::Present(bound), state.floor, header)?, absorbed))
            }
            Effect::Delete { rev } => match state.slot {
                Slot::Absent => None,
                Slot::Open | Slot::Present(_) => {
                    let (_, floor) = next_revision(state.floor, rev)?;
                    unchanged(State {
                        slot: Slot::Absent,
                        floor,
                    })
                }
            },
            Effect::DeleteNothing { header } => match state.slot {
                Slot::Present(_) => None,
                Slot::Open | Slot::Absent => unchanged(read(Slot::Absent, state.floor, header)?),
            },
            Effect::QuietPut => unchanged(write(
                state,
                state.slot,
                Val::UNOBSERVED,
                NewRev::Anywhere,
                returned,
            )?),
            Effect::QuietDelete => self.step(
                state,
                &Effect::Delete {
                    rev: NewRev::Anywhere,
                },
                returned,
            ),
        }
    }

    /// The key as it must have been for a compare-and-set's compare to hold, or `None` when it
    /// could not hold.
    fn slot_where_compare_holds(&self, slot: Slot, expected: Option<u32>) -> Option<Slot> {
        match (slot, expected) {
            (Slot::Absent | Slot::Open, None) => Some(Slot::Absent),
            (Slot::Present(_), None) | (Slot::Absent, Some(_)) => None,
            (Slot::Present(kv), Some(expected)) => (kv.value == Val::id(expected)).then_some(slot),
            (Slot::Open, Some(expected)) => {
                if !self.past.contains(&expected) {
                    return None;
                }
                Some(Slot::Present(Kv {
                    value: Val::id(expected),
                    create: Rev::within(1, OPEN_END)?,
                    modified: Rev::within(1, OPEN_END)?,
                    version: 0,
                    since: 0,
                }))
            }
        }
    }
}

/// A `Range` result etcd can return at all: a key created at `create` and modified `version - 1`
/// times since, each time at a higher revision.
pub(super) fn plausible(observed: &Observed) -> bool {
    observed.version >= 1
        && observed.create >= 1
        && observed.create <= observed.modified
        && (observed.version == 1) == (observed.create == observed.modified)
        && observed.modified - observed.create >= observed.version - 1
}

/// How a read's create revision and version can follow from the key's life as the model has
/// it, given that quiet writes may have taken effect before the current value's write (they are
/// only ever applied when an operation cannot do without them, so the search never puts them
/// there itself):
///
/// * the same life: `version - model version` more puts;
/// * created earlier than the model has it (a quiet put created the key): those puts plus one;
/// * created later (a quiet delete, then a write, re-created it): one delete; the version is
///   then left to the read (a weakening: the writes since the re-creation are not recounted).
fn life_explained(kv: &Kv, observed: &Observed) -> Option<Absorbed> {
    let absorbed = |puts: i64, deletes| {
        Some(Absorbed {
            puts: u32::try_from(puts).ok()?,
            deletes,
            by: kv.since,
        })
    };
    // A version of 0 is not known (after a window that starts from an open state): any count
    // of puts fits, but a creation the model does not have still needs its put or delete.
    if kv.create.bind(observed.create).is_some() {
        let puts = if kv.version == 0 {
            0
        } else {
            observed.version - kv.version
        };
        return absorbed(puts, 0);
    }
    if observed.create < kv.create.lo {
        let puts = if kv.version == 0 {
            1
        } else {
            observed.version - kv.version
        };
        return absorbed(puts, 0).filter(|a| a.puts > 0);
    }
    absorbed(0, 1)
}

/// The revision a write gets and the floor after it.
fn next_revision(floor: i64, rev: NewRev) -> Option<(Rev, i64)> {
    match rev {
        NewRev::At(revision) => (revision > floor).then_some((Rev::at(revision), revision)),
        // The floor moves by one, the least it can, and later observations raise it as far as
        // they need.
        NewRev::Above => {
            let lowest = floor.checked_add(1)?;
            Some((Rev::within(lowest, OPEN_END)?, lowest))
        }
        NewRev::Anywhere => Some((Rev::within(1, OPEN_END)?, floor)),
    }
}

fn write(state: &State, before: Slot, value: Val, rev: NewRev, returned: u64) -> Option<State> {
    let (revision, floor) = next_revision(state.floor, rev)?;
    let kv = match before {
        Slot::Absent => Kv {
            value,
            create: revision,
            modified: revision,
            version: 1,
            since: returned,
        },
        Slot::Present(old) => Kv {
            value,
            // The key was created before this write.
            create: match rev {
                NewRev::At(revision) => old.create.at_most(revision - 1)?,
                NewRev::Above | NewRev::Anywhere => old.create,
            },
            modified: revision,
            version: if old.version == 0 { 0 } else { old.version + 1 },
            since: returned,
        },
        // Created by this write, or earlier: no later than this write either way.
        Slot::Open => Kv {
            value,
            create: Rev::within(1, revision.hi)?,
            modified: revision,
            version: 0,
            since: returned,
        },
    };
    Some(State {
        slot: Slot::Present(kv),
        floor,
    })
}

/// A read at `header`: the store had reached every revision ordered before it, and the key's
/// revisions are at most `header`.
fn read(slot: Slot, floor: i64, header: i64) -> Option<State> {
    if header < floor {
        return None;
    }
    let slot = match slot {
        Slot::Present(kv) => Slot::Present(Kv {
            create: kv.create.at_most(header)?,
            modified: kv.modified.at_most(header)?,
            ..kv
        }),
        other => other,
    };
    Some(State {
        slot,
        floor: header,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(header: i64, value: u32, create: i64, modified: i64, version: i64) -> Effect {
        Effect::Get {
            header,
            kv: Some(Observed {
                value,
                create,
                modified,
                version,
            }),
        }
    }

    fn put(value: u32, rev: Option<i64>) -> Effect {
        Effect::Put {
            value: Val::id(value),
            rev: rev.into(),
        }
    }

    /// The state after `effects`, when none needs a quiet write.
    fn run(model: &Model, start: State, effects: &[Effect]) -> Option<State> {
        effects.iter().try_fold(start, |state, effect| {
            let (next, absorbed) = model.step(&state, effect, 100)?;
            (absorbed.puts == 0 && absorbed.deletes == 0).then_some(next)
        })
    }

    #[test]
    fn reads_say_which_quiet_writes_must_have_come_before() {
        let model = Model::default();
        let state = run(&model, State::fresh(), &[put(1, Some(5)), put(2, Some(10))]);
        let state = state.expect("two puts");
        let absorbed = |effect: Effect| model.step(&state, &effect, 100).map(|(_, a)| a);
        let needs = |puts, deletes| {
            Some(Absorbed {
                puts,
                deletes,
                by: 100,
            })
        };
        // Two more versions: two quiet puts.
        assert_eq!(absorbed(get(12, 2, 5, 10, 4)), needs(2, 0));
        // Created earlier than revision 5: a quiet put created it, one more version.
        assert_eq!(absorbed(get(12, 2, 3, 10, 3)), needs(1, 0));
        assert_eq!(absorbed(get(12, 2, 3, 10, 2)), None);
        // Created later: a quiet delete before the put at 10 re-created it.
        assert_eq!(absorbed(get(12, 2, 10, 10, 1)), needs(0, 1));
    }

    #[test]
    fn put_then_get_sees_value_revisions_and_version() {
        let model = Model::default();
        let ok = [
            put(1, Some(5)),
            put(2, Some(7)),
            get(7, 2, 5, 7, 2),
            get(9, 2, 5, 7, 2),
        ];
        assert!(run(&model, State::fresh(), &ok).is_some());
        for bad in [
            get(7, 1, 5, 5, 1), // old value
            get(7, 2, 5, 7, 1), // wrong version
            get(7, 2, 7, 7, 2), // wrong create
            get(6, 2, 5, 7, 2), // header below mod
        ] {
            let effects = [put(1, Some(5)), put(2, Some(7)), bad];
            assert!(run(&model, State::fresh(), &effects).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn revisions_and_headers_never_go_back_along_the_order() {
        let model = Model::default();
        assert!(run(&model, State::fresh(), &[put(1, Some(5)), put(2, Some(5))]).is_none());
        let stale_header = [put(1, Some(5)), get(4, 1, 5, 5, 1)];
        assert!(run(&model, State::fresh(), &stale_header).is_none());
        let read_then_older_write = [Effect::Get {
            header: 9,
            kv: None,
        }];
        let after = run(&model, State::fresh(), &read_then_older_write);
        assert!(after.is_some());
        assert!(
            run(
                &model,
                State::fresh(),
                &[read_then_older_write[0], put(1, Some(9))]
            )
            .is_none()
        );
        assert!(
            run(
                &model,
                State::fresh(),
                &[read_then_older_write[0], put(1, Some(10))]
            )
            .is_some()
        );
    }

    #[test]
    fn unknown_revision_is_bound_by_a_later_read_within_what_other_reads_allow() {
        let model = Model::default();
        let unknown = put(1, None);
        // A failed compare at header 12 saw the write, so its revision is at most 12.
        let seen_by_cas = Effect::CasFailed {
            expected: Some(99),
            header: 12,
        };
        let base = [put(0, Some(10)), unknown, seen_by_cas];
        assert!(
            run(
                &model,
                State::fresh(),
                &[&base[..], &[get(20, 1, 10, 12, 2)]].concat()
            )
            .is_some()
        );
        assert!(
            run(
                &model,
                State::fresh(),
                &[&base[..], &[get(20, 1, 10, 14, 2)]].concat()
            )
            .is_none()
        );
        assert!(
            run(
                &model,
                State::fresh(),
                &[&base[..], &[get(20, 1, 10, 10, 2)]].concat()
            )
            .is_none()
        );
        // Two writes of unknown revision after revision 10: the second is at 12 or later.
        let two = [put(0, Some(10)), put(1, None), put(2, None)];
        assert!(
            run(
                &model,
                State::fresh(),
                &[&two[..], &[get(30, 2, 10, 12, 3)]].concat()
            )
            .is_some()
        );
        assert!(
            run(
                &model,
                State::fresh(),
                &[&two[..], &[get(30, 2, 10, 11, 3)]].concat()
            )
            .is_none()
        );
        let tight = [put(0, Some(10)), put(1, None), put(2, Some(11))];
        assert!(run(&model, State::fresh(), &tight).is_none());
    }

    #[test]
    fn delete_and_compare_and_set_follow_presence() {
        let model = Model::default();
        let delete = Effect::Delete { rev: NewRev::At(6) };
        let nothing = Effect::DeleteNothing { header: 6 };
        assert!(run(&model, State::fresh(), &[delete]).is_none());
        assert!(run(&model, State::fresh(), &[nothing]).is_some());
        assert!(run(&model, State::fresh(), &[put(1, Some(5)), nothing]).is_none());
        let create = Effect::Cas {
            expected: None,
            value: Val::id(2),
            rev: NewRev::At(7),
        };
        let swap = Effect::Cas {
            expected: Some(2),
            value: Val::id(3),
            rev: NewRev::At(8),
        };
        assert!(run(&model, State::fresh(), &[create, swap, get(8, 3, 7, 8, 2)]).is_some());
        assert!(run(&model, State::fresh(), &[put(1, Some(5)), create]).is_none());
        let failed_on_absent = Effect::CasFailed {
            expected: Some(2),
            header: 3,
        };
        assert!(run(&model, State::fresh(), &[failed_on_absent]).is_some());
        let failed_create_on_absent = Effect::CasFailed {
            expected: None,
            header: 3,
        };
        assert!(run(&model, State::fresh(), &[failed_create_on_absent]).is_none());
    }

    #[test]
    fn open_state_takes_only_past_values() {
        let model = Model {
            past: HashSet::from([7]),
        };
        assert!(run(&model, State::open(20), &[get(21, 7, 3, 9, 4)]).is_some());
        assert!(run(&model, State::open(20), &[get(21, 8, 3, 9, 4)]).is_none());
        assert!(
            run(
                &model,
                State::open(20),
                &[Effect::Get {
                    header: 21,
                    kv: None
                }]
            )
            .is_some()
        );
        // A put on an open key: version unknown until read, create no later than the put.
        let effects = [put(1, Some(22)), get(23, 1, 4, 22, 6)];
        assert!(run(&model, State::open(20), &effects).is_some());
        let effects = [put(1, Some(22)), get(23, 1, 22, 22, 1)];
        assert!(run(&model, State::open(20), &effects).is_some());
        let effects = [put(1, Some(22)), get(23, 1, 23, 23, 1)];
        assert!(run(&model, State::open(20), &effects).is_none());
    }
}
