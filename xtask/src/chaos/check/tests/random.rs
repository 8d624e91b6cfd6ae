//! Seeded random histories from a simulated etcd: clients with one request in flight each, every
//! request taking effect at one instant inside its interval (so the history is linearizable by
//! construction), some outcomes unknown (the effect then happens or not, possibly long after the
//! client gave up), and watch streams fed from the simulated store's events.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use super::super::index::{Index, Role, role};
use super::*;

/// SplitMix64: small, seedable, good enough to shape test histories.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Copy, Debug)]
struct Shape {
    clients: usize,
    keys: usize,
    ops_per_client: usize,
    unknown_percent: u64,
    /// Longest request latency, in microseconds.
    max_latency_us: u64,
}

struct Generated {
    history: History,
    /// For each operation that wrote a value and took effect, the key as a read right after it
    /// would have returned it.
    after_write: Vec<Option<ObservedKv>>,
}

struct Simulation {
    rng: Rng,
    shape: Shape,
    store: HashMap<String, ObservedKv>,
    revision: i64,
    events: Vec<WatchEvent>,
    operations: Vec<Operation>,
    after_write: Vec<Option<ObservedKv>>,
    unknown: Vec<bool>,
    last_seen: Vec<HashMap<String, Option<String>>>,
    remaining: Vec<usize>,
    queue: BinaryHeap<Reverse<(u64, u8, usize)>>,
    next_value: u64,
}

const TAKE_EFFECT: u8 = 0;
const RETURN: u8 = 1;

impl Simulation {
    fn start_request(&mut self, client: usize, now: u64) {
        self.remaining[client] -= 1;
        let key = format!("k{}", self.rng.below(self.shape.keys as u64));
        self.next_value += 1;
        let value = format!("v{}", self.next_value);
        let call = match self.rng.below(100) {
            0..30 => put(&key, &value),
            30..65 => get(&key),
            65..85 => {
                let expected = self.last_seen[client].get(&key).cloned().flatten();
                cas(&key, expected.as_deref(), &value)
            }
            _ => delete(&key),
        };
        let latency = 1_000 * (1 + self.rng.below(self.shape.max_latency_us));
        let id = self.operations.len();
        let unknown = self.rng.chance(self.shape.unknown_percent);
        if unknown {
            if self.rng.chance(50) {
                let effect = now + self.rng.below(5 * latency + 1);
                self.queue.push(Reverse((effect, TAKE_EFFECT, id)));
            }
        } else {
            let effect = now + self.rng.below(latency + 1);
            self.queue.push(Reverse((effect, TAKE_EFFECT, id)));
        }
        self.queue.push(Reverse((now + latency, RETURN, id)));
        self.operations.push(Operation {
            client,
            invoke_ns: now,
            return_ns: (!unknown).then_some(now + latency),
            call,
            outcome: Outcome::Unknown,
        });
        self.after_write.push(None);
        self.unknown.push(unknown);
    }

    fn write(&mut self, key: &str, value: &str) -> i64 {
        self.revision += 1;
        let revision = self.revision;
        let kv = match self.store.get(key) {
            Some(old) => ObservedKv {
                value: value.into(),
                create_revision: old.create_revision,
                mod_revision: revision,
                version: old.version + 1,
            },
            None => ObservedKv {
                value: value.into(),
                create_revision: revision,
                mod_revision: revision,
                version: 1,
            },
        };
        self.store.insert(key.into(), kv);
        self.events.push(put_event(key, value, revision));
        revision
    }

    fn take_effect(&mut self, id: usize) {
        let call = self.operations[id].call.clone();
        let outcome = match &call {
            Call::Put { key, value } => Outcome::Put {
                revision: self.write(key, value),
            },
            Call::Get { key } => Outcome::Get {
                revision: self.revision,
                kv: self.store.get(key).cloned(),
            },
            Call::Delete { key } => {
                if self.store.remove(key).is_some() {
                    self.revision += 1;
                    self.events.push(delete_event(key, self.revision));
                    deleted(self.revision, 1)
                } else {
                    deleted(self.revision, 0)
                }
            }
            Call::Cas {
                key,
                expected,
                value,
            } => {
                let holds = match (expected, self.store.get(key)) {
                    (None, None) => true,
                    (Some(expected), Some(kv)) => kv.value == *expected,
                    _ => false,
                };
                if holds {
                    swapped(self.write(key, value), true)
                } else {
                    swapped(self.revision, false)
                }
            }
        };
        if let Some(value) = call.written_value()
            && matches!(
                outcome,
                Outcome::Put { .. }
                    | Outcome::Cas {
                        succeeded: true,
                        ..
                    }
            )
        {
            self.after_write[id] = self.store.get(call.key()).cloned();
            debug_assert_eq!(
                self.after_write[id].as_ref().map(|kv| kv.value.as_str()),
                Some(value)
            );
        }
        if !self.unknown[id] {
            self.operations[id].outcome = outcome;
        }
    }

    fn returned(&mut self, id: usize, now: u64) {
        let client = self.operations[id].client;
        let op = &self.operations[id];
        let key = op.call.key().to_string();
        let seen = match (&op.call, &op.outcome) {
            (Call::Put { value, .. }, Outcome::Put { .. })
            | (
                Call::Cas { value, .. },
                Outcome::Cas {
                    succeeded: true, ..
                },
            ) => Some(Some(value.clone())),
            (_, Outcome::Get { kv, .. }) => Some(kv.as_ref().map(|kv| kv.value.clone())),
            (_, Outcome::Delete { .. }) => Some(None),
            _ => None,
        };
        if let Some(seen) = seen {
            self.last_seen[client].insert(key, seen);
        }
        if self.remaining[client] > 0 {
            let pause = 1_000 * self.rng.below(300);
            self.start_request(client, now + pause);
        }
    }
}

fn generate(seed: u64, shape: Shape) -> Generated {
    let mut sim = Simulation {
        rng: Rng(seed),
        shape,
        store: HashMap::new(),
        revision: 1,
        events: Vec::new(),
        operations: Vec::new(),
        after_write: Vec::new(),
        unknown: Vec::new(),
        last_seen: vec![HashMap::new(); shape.clients],
        remaining: vec![shape.ops_per_client; shape.clients],
        queue: BinaryHeap::new(),
        next_value: 0,
    };
    for client in 0..shape.clients {
        let start = 1_000 * sim.rng.below(1_000);
        sim.start_request(client, start);
    }
    while let Some(Reverse((now, what, id))) = sim.queue.pop() {
        if what == TAKE_EFFECT {
            sim.take_effect(id);
        } else {
            sim.returned(id, now);
        }
    }
    let last = sim.revision;
    let middle = last / 2;
    let watches = vec![
        stream(0, 1, last, sim.events.clone()),
        stream(
            1,
            middle,
            last,
            sim.events
                .iter()
                .filter(|event| event.mod_revision >= middle)
                .cloned()
                .collect(),
        ),
    ];
    Generated {
        history: history(sim.operations, watches),
        after_write: sim.after_write,
    }
}

const SMALL: Shape = Shape {
    clients: 5,
    keys: 3,
    ops_per_client: 60,
    unknown_percent: 10,
    max_latency_us: 2_000,
};

const CROWDED: Shape = Shape {
    clients: 12,
    keys: 2,
    ops_per_client: 40,
    unknown_percent: 15,
    max_latency_us: 5_000,
};

/// Many unknown outcomes, applied long after the client gave up.
const FLAKY: Shape = Shape {
    clients: 8,
    keys: 1,
    ops_per_client: 50,
    unknown_percent: 40,
    max_latency_us: 3_000,
};

/// Seeds per shape; `CHECK_SEEDS=n` runs more (a longer hunt for false alarms).
fn seeds() -> u64 {
    std::env::var("CHECK_SEEDS")
        .ok()
        .and_then(|seeds| seeds.parse().ok())
        .unwrap_or(40)
}

#[test]
fn simulated_linearizable_histories_are_accepted() {
    for seed in 0..seeds() {
        for shape in [SMALL, CROWDED, FLAKY] {
            let generated = generate(seed, shape);
            let report = check(&generated.history);
            assert!(
                report.is_ok(),
                "seed {seed}, {shape:?}: a linearizable history was rejected:\n{report}"
            );
        }
    }
}

/// Makes one read return a value that was overwritten before the read was invoked: `old` was
/// written and acknowledged, then `newer` was invoked after `old` returned and itself returned
/// before the read was invoked. No linearization can put the read between them. Returns the read.
fn make_a_read_stale(generated: &mut Generated, rng: &mut Rng) -> Option<usize> {
    let ops = &generated.history.operations;
    let known_write = |position: usize| matches!(role(&ops[position]), Role::Write(_));
    let mut reads: Vec<usize> = (0..ops.len())
        .filter(|&p| matches!(ops[p].outcome, Outcome::Get { .. }))
        .collect();
    // A seeded shuffle, so different seeds pick different reads.
    for i in (1..reads.len()).rev() {
        reads.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for read in reads {
        let key = ops[read].call.key();
        let invoked = ops[read].invoke_ns;
        let newer = (0..ops.len()).filter(|&p| {
            ops[p].call.key() == key
                && known_write(p)
                && ops[p].return_ns.is_some_and(|r| r < invoked)
        });
        for newer in newer {
            let newer_invoked = ops[newer].invoke_ns;
            let old = (0..ops.len()).find(|&p| {
                ops[p].call.key() == key
                    && generated.after_write[p].is_some()
                    && known_write(p)
                    && ops[p].return_ns.is_some_and(|r| r < newer_invoked)
            });
            if let Some(old) = old {
                let kv = generated.after_write[old].clone();
                if let Outcome::Get { kv: read_kv, .. } =
                    &mut generated.history.operations[read].outcome
                {
                    *read_kv = kv;
                }
                return Some(read);
            }
        }
    }
    None
}

#[test]
fn simulated_histories_with_a_stale_read_are_rejected() {
    let mut mutated = 0;
    for seed in 0..seeds() {
        for shape in [SMALL, CROWDED, FLAKY] {
            let mut generated = generate(seed, shape);
            let mut rng = Rng(seed ^ 0x5EED);
            let Some(read) = make_a_read_stale(&mut generated, &mut rng) else {
                continue;
            };
            mutated += 1;
            let target = generated.history.operations[read].clone();
            let report = check(&generated.history);
            assert!(
                !report.is_ok(),
                "seed {seed}, {shape:?}: a stale read was accepted: {target:?}"
            );
            assert!(
                report
                    .anomalies
                    .iter()
                    .all(|a| a.key.as_deref() == Some(target.call.key())),
                "seed {seed}: expected only the stale read's key to fail:\n{report}"
            );
            // Named for what it is, and found by the search too.
            assert_eq!(
                report.kinds(),
                [AnomalyKind::NotLinearizable, AnomalyKind::StaleRead],
                "seed {seed}:\n{report}"
            );
            let stale = report
                .anomalies
                .iter()
                .find(|a| a.kind == AnomalyKind::StaleRead)
                .map(|a| &a.operations);
            assert!(
                stale.is_some_and(|ops| ops.contains(&target)),
                "seed {seed}: the stale read is not the one named:\n{report}"
            );
            let witness = &report.anomalies[0];
            assert!(
                witness.operations.contains(&target),
                "seed {seed}: the sub-history lacks the stale read:\n{report}"
            );
            assert!(
                witness.operations.len() <= 6,
                "seed {seed}: the sub-history is not small:\n{report}"
            );
        }
    }
    assert!(
        mutated as u64 >= seeds() * 2,
        "only {mutated} histories could be mutated"
    );
}

#[test]
fn simulated_watch_streams_with_a_dropped_or_repeated_event_are_rejected() {
    for seed in 0..10 {
        let generated = generate(seed, SMALL);
        let mut rng = Rng(seed);
        let events = &generated.history.watches[0].events;
        let victim = rng.below(events.len() as u64) as usize;

        let mut dropped = generated.history.clone();
        dropped.watches[0].events.remove(victim);
        let report = check(&dropped);
        // Only a write the history pins to a revision can be missed; a write of unknown outcome
        // nobody read (or a delete of unknown outcome) may have happened or not.
        let pinned = Index::new(&generated.history)
            .write_revision
            .values()
            .any(|&revision| revision == events[victim].mod_revision);
        assert_eq!(
            kinds(&report).contains(&AnomalyKind::WatchGap),
            pinned,
            "seed {seed}: dropped {:?}:\n{report}",
            events[victim]
        );

        let mut repeated = generated.history.clone();
        let copy = repeated.watches[0].events[victim].clone();
        repeated.watches[0].events.insert(victim + 1, copy);
        assert_rejected_with(&repeated, AnomalyKind::WatchDuplicate);
    }
}

#[test]
fn a_hundred_thousand_operations_are_checked_in_seconds() {
    let shape = Shape {
        clients: 16,
        keys: 10,
        ops_per_client: 6_250,
        unknown_percent: 3,
        max_latency_us: 3_000,
    };
    let generated = generate(7, shape);
    assert_eq!(generated.history.operations.len(), 100_000);
    let started = Instant::now();
    let report = check(&generated.history);
    let elapsed = started.elapsed();
    assert!(report.is_ok(), "{report}");
    eprintln!(
        "checked {} operations, {} watch events, in {elapsed:?}",
        report.operations,
        generated.history.watch_events()
    );

    let mut broken = generated;
    let mut rng = Rng(1);
    let read = make_a_read_stale(&mut broken, &mut rng).expect("a read to make stale");
    let started = Instant::now();
    let report = check(&broken.history);
    let elapsed = started.elapsed();
    assert!(!report.is_ok());
    assert!(
        report.anomalies[0]
            .operations
            .contains(&broken.history.operations[read]),
        "{report}"
    );
    eprintln!("found and shrank a stale read in {elapsed:?}:\n{report}");
}

/// Timings for the report, over shapes a chaos run can produce:
/// `cargo nextest run -p xtask --release --run-ignored only check_timings --no-capture`.
#[test]
#[ignore = "a measurement, not a check"]
fn check_timings() {
    for (name, shape) in [
        (
            "16 clients, 10 keys, 3% unknown",
            Shape {
                clients: 16,
                keys: 10,
                ops_per_client: 6_250,
                unknown_percent: 3,
                max_latency_us: 3_000,
            },
        ),
        (
            "16 clients, 5 keys, 5% unknown",
            Shape {
                clients: 16,
                keys: 5,
                ops_per_client: 6_250,
                unknown_percent: 5,
                max_latency_us: 3_000,
            },
        ),
        (
            "16 clients, 1 key, 5% unknown",
            Shape {
                clients: 16,
                keys: 1,
                ops_per_client: 2_000,
                unknown_percent: 5,
                max_latency_us: 3_000,
            },
        ),
        (
            "8 clients, 2 keys, 20% unknown, slow",
            Shape {
                clients: 8,
                keys: 2,
                ops_per_client: 5_000,
                unknown_percent: 20,
                max_latency_us: 20_000,
            },
        ),
    ] {
        let mut generated = generate(11, shape);
        let started = Instant::now();
        let report = check(&generated.history);
        let passed = started.elapsed();
        assert!(report.is_ok(), "{name}: {report}");
        let read = make_a_read_stale(&mut generated, &mut Rng(3)).expect("a read to make stale");
        let started = Instant::now();
        let report = check(&generated.history);
        let failed = started.elapsed();
        assert!(
            report.anomalies[0]
                .operations
                .contains(&generated.history.operations[read])
        );
        eprintln!(
            "{name}: {} operations checked in {passed:?}; with a stale read, found and shrunk \
             to {} operations in {failed:?}",
            report.operations,
            report.anomalies[0].operations.len()
        );
    }
}
