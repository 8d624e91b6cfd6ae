//! The linearizability search over one key: Lowe's just-in-time linearization with a cache of
//! visited configurations.
//!
//! Operations that certainly took effect ("forced") are sorted by return time and the search
//! walks their returns in that order. An operation is linearized only when it must be, at its own
//! return, preceded by any in-flight operations ordered before it. Any linearization can be
//! rewritten into that shape (move each linearization point later, to just before the next
//! return of an operation not yet linearized; that crosses only invocations, which changes no
//! real-time constraint), so nothing is lost. A configuration is the index of the next return,
//! the operations linearized ahead of their return (never more than those in flight), the model
//! state, and how many members of each pool of optional writes are used. The search skips a
//! configuration seen before, one dominated by a configuration seen before (the same but for
//! having used no fewer pool members), and one whose floor already exceeds what some forced
//! operation not yet linearized accepts (the floor never goes down, so it cannot be completed;
//! without this the search thrashes when many writes are in flight and its first guess at their
//! order is wrong).
//!
//! Writes of unknown outcome (or cut off by a window, or hidden while shrinking) that no
//! operation which took effect observes are "quiet" (see `lower`; observed ones are forced). A
//! run has hundreds per key, and trying each at every point would make the search exponential.
//! Why the way they are handled never rejects a history etcd could have produced:
//!
//! 1. Pools. A quiet write puts a value nobody reads or deletes the key (a quiet
//!    compare-and-set counts as a put, a weakening). Members of a pool differ only in invocation
//!    time, and each may take effect any time after it, so any use of some of them can be
//!    rewritten to use them in invocation order, as long as the points they serve are taken in
//!    order of deadline (see `absorb`): a counter per pool replaces a bit per operation.
//! 2. Laziness. A quiet write is applied only right before an operation that cannot be
//!    linearized without it (a read of absence, a failed compare-and-set, a delete that found the
//!    key, ...). Had it taken effect earlier, every operation between would have been either a
//!    write overwriting it, or a failed compare-and-set that is also fine without it (or needs
//!    it, and then it is applied before that one): moving it later loses nothing but its effect
//!    on the version and create revision of the key's later values.
//! 3. Absorption. That effect shows only when a read returns a later write's value with a
//!    version or create revision the model does not have. The read then asks for the quiet
//!    writes that must have taken effect before that write (`Absorbed`), and takes them from the
//!    pools if enough were invoked in time.
//! 4. Revisions. A quiet write placed later than it took effect would have to exceed revisions
//!    that operations it really preceded saw, so it gets any revision and leaves the floor alone
//!    (`NewRev::Anywhere`): a weakening.
//!
//! The weakenings (a compare-and-set taken as a put, revisions of quiet writes unchecked, a
//! version after a quiet delete not recounted) only ever accept more; the random tests check
//! that histories from a simulated etcd with many unknown outcomes are all accepted.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::model::{Absorbed, Effect, Model, State};

/// An operation that took effect, linearized somewhere in `invoke..=ret`.
#[derive(Clone, Debug)]
pub(super) struct Forced {
    /// Where it came from (for messages; the search ignores it).
    pub(super) source: usize,
    pub(super) invoke: u64,
    pub(super) ret: u64,
    pub(super) effect: Effect,
}

#[derive(Clone, Debug)]
pub(super) struct Problem {
    pub(super) model: Model,
    pub(super) initial: State,
    /// Sorted by `(ret, invoke)`: index `i` returns at event `i`.
    pub(super) forced: Vec<Forced>,
    /// Invocation times of the quiet puts and of the quiet deletes.
    pub(super) quiet_puts: Vec<u64>,
    pub(super) quiet_deletes: Vec<u64>,
}

/// How many members of each pool a configuration has used.
type Used = [u32; POOLS];

const PUTS: usize = 0;
const DELETES: usize = 1;
const POOLS: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Linearizable,
    /// No configuration got past the return of `forced[stuck_at]`.
    NotLinearizable {
        stuck_at: usize,
    },
    /// The search visited `budget` configurations without deciding.
    Undecided,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Node {
    event: u32,
    /// Operations linearized before their return, sorted.
    early: Vec<u32>,
    state: State,
}

impl Problem {
    /// Sorts `forced` into event order; callers may push in any order before searching.
    pub(super) fn sort(&mut self) {
        self.forced.sort_by_key(|op| (op.ret, op.invoke));
        self.quiet_puts.sort_unstable();
        self.quiet_deletes.sort_unstable();
    }

    fn pool(&self, pool: usize) -> &[u64] {
        if pool == PUTS {
            &self.quiet_puts
        } else {
            &self.quiet_deletes
        }
    }

    /// `used` after taking what `absorbed` asks for, if the pools have it, at event time `now`.
    ///
    /// Members are taken in invocation order, each for a point of the order that must come
    /// after its invocation. That greedy choice is only as good as any other if the points are
    /// served in order of their deadlines; they are: a quiet write applied before an operation
    /// at event `now` has deadline `now`, which never decreases as the search goes on, and the
    /// ones a read absorbs precede the write it read, which was linearized at an event no later
    /// than `now` and no earlier than any quiet write applied before it, hence the deadline
    /// `min(returned, now)`.
    fn absorb(&self, used: &Used, absorbed: Absorbed, now: u64) -> Option<Used> {
        let by = absorbed.by.min(now);
        let mut after: Used = *used;
        for (pool, wanted) in [(PUTS, absorbed.puts), (DELETES, absorbed.deletes)] {
            if wanted == 0 {
                continue;
            }
            let invoked_by = self.pool(pool).partition_point(|&invoke| invoke <= by);
            after[pool] = after[pool].checked_add(wanted)?;
            if after[pool] as usize > invoked_by {
                return None;
            }
        }
        Some(after)
    }

    /// The ways to linearize `op` now: directly, or, only when that is impossible, right after
    /// one quiet write from a pool.
    fn linearize(&self, state: &State, used: &Used, op: &Forced, now: u64) -> Vec<(State, Used)> {
        if let Some((next, absorbed)) = self.model.step(state, &op.effect, op.ret)
            && let Some(used) = self.absorb(used, absorbed, now)
        {
            return vec![(next, used)];
        }
        let mut ways = Vec::new();
        for (pool, effect) in [(PUTS, Effect::QuietPut), (DELETES, Effect::QuietDelete)] {
            let next_member = used[pool] as usize;
            if self
                .pool(pool)
                .get(next_member)
                .is_none_or(|&invoke| invoke > now)
            {
                continue;
            }
            let Some((quiet, _)) = self.model.step(state, &effect, u64::MAX) else {
                continue;
            };
            let mut more: Used = *used;
            more[pool] += 1;
            if let Some((next, absorbed)) = self.model.step(&quiet, &op.effect, op.ret)
                && let Some(more) = self.absorb(&more, absorbed, now)
            {
                ways.push((next, more));
            }
        }
        ways
    }

    /// Linearizes at once every read in flight that the state already satisfies without
    /// changing. Doing so is never worse than waiting: the state stays the same, and ordering
    /// the read later instead could only have raised the floor or narrowed revisions for what
    /// follows. It spares the search from trying every subset of a crowd of concurrent reads.
    fn settle_reads(&self, node: &mut Node, in_flight: &[u32]) {
        for &other in in_flight {
            let effect = &self.forced[other as usize].effect;
            if !matches!(
                effect,
                Effect::Get { .. } | Effect::CasFailed { .. } | Effect::DeleteNothing { .. }
            ) {
                continue;
            }
            let Err(position) = node.early.binary_search(&other) else {
                continue;
            };
            if let Some((after, absorbed)) = self.model.step(&node.state, effect, u64::MAX)
                && after == node.state
                && absorbed.puts == 0
                && absorbed.deletes == 0
            {
                node.early.insert(position, other);
            }
        }
    }

    /// Whether some order of the operations is a history etcd could have produced, exploring at
    /// most `budget` configurations.
    pub(super) fn search(&self, budget: usize) -> Verdict {
        self.search_counted(budget).0
    }

    /// [`Problem::search`], with the number of configurations it explored.
    pub(super) fn search_counted(&self, budget: usize) -> (Verdict, usize) {
        let count = self.forced.len();
        let in_flight = self.in_flight();
        let later_cap = self.later_cap();
        // A configuration whose floor is above what an operation not yet linearized can accept
        // can never be completed (the floor never goes down): prune it at once rather than find
        // out many events later. This is what keeps the search from thrashing when many writes
        // are in flight and the first order it tries is not the revision order.
        let doomed = |node: &Node| {
            let event = node.event as usize;
            if event == count {
                return false;
            }
            let floor = node.state.floor();
            floor > later_cap[event]
                || in_flight[event].iter().any(|&other| {
                    node.early.binary_search(&other).is_err()
                        && floor > self.forced[other as usize].effect.floor_cap()
                })
        };
        let mut visited: HashMap<Node, Vec<Used>> = HashMap::new();
        let mut stack: Vec<(Node, Used)> = Vec::new();
        let mut explored = 0usize;
        let mut deepest = 0usize;
        let start = Node {
            event: 0,
            early: Vec::new(),
            state: self.initial,
        };
        let mut offer =
            |node: Node, used: Used, stack: &mut Vec<(Node, Used)>, explored: &mut usize| {
                if doomed(&node) {
                    return;
                }
                match visited.entry(node.clone()) {
                    Entry::Occupied(mut seen) => {
                        if seen.get().iter().any(|other| dominates(other, &used)) {
                            return;
                        }
                        seen.get_mut().retain(|other| !dominates(&used, other));
                        seen.get_mut().push(used);
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(vec![used]);
                    }
                }
                *explored += 1;
                stack.push((node, used));
            };
        offer(start, [0; POOLS], &mut stack, &mut explored);
        while let Some((node, used)) = stack.pop() {
            let event = node.event as usize;
            if event == count {
                return (Verdict::Linearizable, explored);
            }
            if explored > budget {
                return (Verdict::Undecided, explored);
            }
            deepest = deepest.max(event);
            let mut node = node;
            self.settle_reads(&mut node, &in_flight[event]);
            if let Ok(position) = node.early.binary_search(&node.event) {
                let mut early = node.early;
                early.remove(position);
                let next = Node {
                    event: node.event + 1,
                    early,
                    state: node.state,
                };
                offer(next, used, &mut stack, &mut explored);
                continue;
            }
            let now = self.forced[event].ret;
            // Pushed in reverse order of preference: the stack pops the last first, and the
            // likeliest way on is to linearize the returning operation itself.
            for &other in &in_flight[event] {
                if other == node.event || node.early.binary_search(&other).is_ok() {
                    continue;
                }
                let op = &self.forced[other as usize];
                for (state, more) in self.linearize(&node.state, &used, op, now) {
                    let mut early = node.early.clone();
                    let position = early.binary_search(&other).unwrap_or_else(|p| p);
                    early.insert(position, other);
                    let next = Node {
                        event: node.event,
                        early,
                        state,
                    };
                    offer(next, more, &mut stack, &mut explored);
                }
            }
            for (state, more) in self.linearize(&node.state, &used, &self.forced[event], now) {
                let next = Node {
                    event: node.event + 1,
                    early: node.early.clone(),
                    state,
                };
                offer(next, more, &mut stack, &mut explored);
            }
        }
        (Verdict::NotLinearizable { stuck_at: deepest }, explored)
    }

    /// For each event, the lowest [`Effect::floor_cap`] among the operations invoked after it.
    fn later_cap(&self) -> Vec<i64> {
        let mut by_invoke: Vec<(u64, i64)> = self
            .forced
            .iter()
            .map(|op| (op.invoke, op.effect.floor_cap()))
            .collect();
        by_invoke.sort_unstable();
        let mut suffix = vec![i64::MAX; by_invoke.len() + 1];
        for position in (0..by_invoke.len()).rev() {
            suffix[position] = suffix[position + 1].min(by_invoke[position].1);
        }
        self.forced
            .iter()
            .map(|op| suffix[by_invoke.partition_point(|&(invoke, _)| invoke <= op.ret)])
            .collect()
    }

    /// For each event, the forced operations that can be linearized there: invoked by then and
    /// not returned before it (itself included).
    fn in_flight(&self) -> Vec<Vec<u32>> {
        let mut by_invoke: Vec<u32> = (0..self.forced.len() as u32).collect();
        by_invoke.sort_by_key(|&index| self.forced[index as usize].invoke);
        let mut next_invoked = 0;
        let mut current: Vec<u32> = Vec::new();
        let mut result = Vec::with_capacity(self.forced.len());
        for (event, op) in self.forced.iter().enumerate() {
            while next_invoked < by_invoke.len()
                && self.forced[by_invoke[next_invoked] as usize].invoke <= op.ret
            {
                current.push(by_invoke[next_invoked]);
                next_invoked += 1;
            }
            current.retain(|&index| index as usize >= event);
            result.push(current.clone());
        }
        result
    }
}

/// `a` has used no more of any pool than `b`.
fn dominates(a: &[u32], b: &[u32]) -> bool {
    a.iter().zip(b).all(|(x, y)| x <= y)
}

#[cfg(test)]
mod tests {
    use super::super::model::{NewRev, Val};
    use super::*;

    fn forced(invoke: u64, ret: u64, effect: Effect) -> Forced {
        Forced {
            source: 0,
            invoke,
            ret,
            effect,
        }
    }

    fn put(value: u32, rev: i64) -> Effect {
        Effect::Put {
            value: Val::id(value),
            rev: NewRev::At(rev),
        }
    }

    /// A read of `value` as written by a single put at revision `modified`.
    fn get(value: Option<u32>, header: i64, modified: i64) -> Effect {
        Effect::Get {
            header,
            kv: value.map(|value| super::super::model::Observed {
                value,
                create: modified,
                modified,
                version: 1,
            }),
        }
    }

    fn problem(forced: Vec<Forced>, quiet_puts: Vec<u64>) -> Problem {
        let mut problem = Problem {
            model: Model::default(),
            initial: State::fresh(),
            forced,
            quiet_puts,
            quiet_deletes: Vec::new(),
        };
        problem.sort();
        problem
    }

    #[test]
    fn concurrent_write_may_be_ordered_before_a_read_that_returned_first() {
        // put v1 (rev 2) in 0..10; get in 1..3 sees v1; put v2 (rev 3) in 4..6.
        let p = problem(
            vec![
                forced(0, 10, put(1, 2)),
                forced(1, 3, get(Some(1), 2, 2)),
                forced(4, 6, put(2, 3)),
            ],
            vec![],
        );
        assert_eq!(p.search(1000), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_is_stuck_at_the_read() {
        let p = problem(
            vec![
                forced(0, 1, put(1, 2)),
                forced(2, 3, put(2, 3)),
                forced(4, 5, get(Some(1), 3, 2)),
            ],
            vec![],
        );
        assert_eq!(p.search(1000), Verdict::NotLinearizable { stuck_at: 2 });
    }

    #[test]
    fn quiet_writes_count_only_if_invoked_before_the_write_they_precede() {
        // The read of version 2 needs one quiet put before the acknowledged one.
        let read = Effect::Get {
            header: 9,
            kv: Some(super::super::model::Observed {
                value: 1,
                create: 3,
                modified: 9,
                version: 2,
            }),
        };
        let early = problem(vec![forced(6, 7, put(1, 9)), forced(8, 9, read)], vec![5]);
        assert_eq!(early.search(1000), Verdict::Linearizable);
        let late = problem(vec![forced(2, 3, put(1, 9)), forced(8, 9, read)], vec![5]);
        assert_eq!(late.search(1000), Verdict::NotLinearizable { stuck_at: 1 });
        let used_up = problem(
            vec![
                forced(6, 7, put(1, 9)),
                forced(8, 9, read),
                // A delete that found the key needs it present: the one quiet put is gone.
                forced(
                    10,
                    11,
                    Effect::Delete {
                        rev: NewRev::At(10),
                    },
                ),
                forced(
                    12,
                    13,
                    Effect::Delete {
                        rev: NewRev::At(11),
                    },
                ),
            ],
            vec![5],
        );
        assert_eq!(
            used_up.search(1000),
            Verdict::NotLinearizable { stuck_at: 3 }
        );
    }

    #[test]
    fn quiet_writes_are_applied_where_an_operation_needs_them() {
        // Absent after an acknowledged put: a quiet delete invoked in time explains it.
        let read_absent = Effect::Get {
            header: 4,
            kv: None,
        };
        let mut p = problem(
            vec![forced(0, 1, put(1, 3)), forced(5, 6, read_absent)],
            vec![],
        );
        p.quiet_deletes = vec![4];
        assert_eq!(p.search(1000), Verdict::Linearizable);
        p.quiet_deletes = vec![7];
        p.sort();
        assert_eq!(p.search(1000), Verdict::NotLinearizable { stuck_at: 1 });
    }

    #[test]
    fn a_crowd_of_concurrent_reads_is_not_tried_in_every_subset() {
        // Twenty concurrent reads could be ordered in any way; the last read, of a value nobody
        // wrote, fails whatever the order. Without settling the reads at once the search would
        // try about a million configurations to find out.
        let ops = (0..20)
            .map(|i| forced(0, 100 + i, get(None, 5, 0)))
            .chain([forced(150, 151, get(Some(7), 5, 2))])
            .collect();
        let (verdict, explored) = problem(ops, vec![]).search_counted(500);
        assert_eq!(verdict, Verdict::NotLinearizable { stuck_at: 20 });
        assert!(explored < 100, "{explored}");
    }

    #[test]
    fn budget_exhaustion_is_undecided() {
        let ops = (0..10)
            .map(|i| forced(10 * i, 10 * i + 5, put(i as u32, i as i64 + 2)))
            .collect();
        let p = problem(ops, vec![]);
        assert_eq!(p.search(100), Verdict::Linearizable);
        assert_eq!(p.search(5), Verdict::Undecided);
    }
}
