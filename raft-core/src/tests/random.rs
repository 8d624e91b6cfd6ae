//! Random schedules: many seeds over 3- and 5-member clusters. A failing seed is printed
//! with the command that replays it.

use crate::harness::random_schedule;

const STEPS: usize = 3000;

/// `RAFT_SEED=n` replays one seed; `RAFT_SEEDS=a..b` explores another range.
fn seeds(range: std::ops::Range<u64>) -> Vec<u64> {
    if let Ok(seed) = std::env::var("RAFT_SEED") {
        return vec![seed.trim().parse().expect("RAFT_SEED must be a number")];
    }
    if let Ok(spec) = std::env::var("RAFT_SEEDS") {
        let (a, b) = spec
            .split_once("..")
            .expect("RAFT_SEEDS must look like 1000..2000");
        let a: u64 = a.trim().parse().expect("RAFT_SEEDS start");
        let b: u64 = b.trim().parse().expect("RAFT_SEEDS end");
        // The "a" test of each cluster size takes the first half, "b" the second.
        let mid = a + b.saturating_sub(a) / 2;
        let second_half = !range.start.is_multiple_of(1000);
        return if second_half { mid..b } else { a..mid }.collect();
    }
    range.collect()
}

fn run(voters: u64, range: std::ops::Range<u64>) {
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let (mut acked, mut crashes, mut snapshots, mut reads, mut confs) = (0, 0, 0, 0, 0);
    let seeds = seeds(range);
    for &seed in &seeds {
        // raft-rs asserts its own invariants by panicking: report those per seed too.
        let run = std::panic::catch_unwind(|| random_schedule(seed, voters, STEPS)).unwrap_or_else(
            |panic| {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(format!("panic: {message}"))
            },
        );
        match run {
            Ok(stats) => {
                acked += stats.acked;
                crashes += stats.crashes;
                snapshots += stats.snapshots_restored;
                reads += stats.reads;
                confs += stats.conf_changes;
            }
            Err(e) => failures.push(format!(
                "seed {seed} ({voters} members): {e}\n  replay: RAFT_SEED={seed} cargo nextest run \
                 -p concord-raft-core --release random_schedules_{voters}"
            )),
        }
    }
    eprintln!(
        "{} seeds, {voters} members, {:?}: {acked} proposals acknowledged, {crashes} crashes, \
         {snapshots} snapshots restored, {reads} reads, {confs} conf changes",
        seeds.len(),
        started.elapsed()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(acked > 0 && reads > 0, "schedules made no progress");
}

#[test]
fn random_schedules_3_members_a() {
    run(3, 0..500);
}

#[test]
fn random_schedules_3_members_b() {
    run(3, 500..1000);
}

#[test]
fn random_schedules_5_members_a() {
    run(5, 10_000..10_500);
}

#[test]
fn random_schedules_5_members_b() {
    run(5, 10_500..11_000);
}
