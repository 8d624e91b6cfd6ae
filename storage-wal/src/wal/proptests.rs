//! Property tests of recovery against the rules in the crate doc: any sequence of writes
//! reads back after a restart; a torn or damaged *final* batch of the newest segment is
//! cut off at the batch boundary before it; damage anywhere else is [`Error::Corrupt`];
//! a batch comes back whole or not at all; no input makes `open` panic, and a repaired
//! log reopens without further repairs. Seeded (see [`crate::proptest_config`]).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use raft::prelude::{Entry, HardState};
use raft::{GetEntriesContext, Storage};

use crate::record::BATCH_MARKER_LEN;
use crate::{Error, WalOptions, WalStorage};

/// One write: entries from `back` indexes before the end of the log (an overwrite when
/// positive), and a hard state.
#[derive(Debug, Clone)]
struct Write {
    back: u64,
    data: Vec<Vec<u8>>,
    hard_state: Option<(u64, u64, u64)>,
}

fn writes(max: usize) -> impl Strategy<Value = Vec<Write>> {
    let write = (
        0u64..3,
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..48), 0..4),
        prop::option::of((0u64..5, 0u64..4, 0u64..30)),
    )
        .prop_map(|(back, data, hard_state)| Write {
            back,
            data,
            hard_state,
        });
    prop::collection::vec(write, 1..max)
}

/// The state after some whole batches, as recovery must rebuild it.
#[derive(Debug, Clone, Default, PartialEq)]
struct State {
    log: Vec<Entry>,
    hard_state: HardState,
}

/// A log written by `writes`: the state after each batch and where each batch ends in
/// the (single, newest) segment.
struct Written {
    dir: tempfile::TempDir,
    opts: WalOptions,
    header_len: u64,
    /// (end offset in the newest segment, state after the batch), in write order.
    batches: Vec<(u64, State)>,
}

fn temp_dir() -> tempfile::TempDir {
    // Recovery logic, not durability: a RAM file system keeps fsync cheap.
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

fn write(writes: &[Write], opts: WalOptions) -> Written {
    let dir = temp_dir();
    let mut wal = WalStorage::open(dir.path(), opts.clone()).unwrap();
    let header_len = wal.active_header_len;
    let mut state = State::default();
    let mut batches = Vec::new();
    for (n, w) in writes.iter().enumerate() {
        let start = (state.log.len() as u64 + 1).saturating_sub(w.back).max(1);
        let entries: Vec<Entry> = w
            .data
            .iter()
            .enumerate()
            .map(|(i, data)| Entry {
                index: start + i as u64,
                term: n as u64 + 1,
                data: data.clone().into(),
                ..Default::default()
            })
            .collect();
        // Every write must put a batch on disk.
        let hard_state = match (w.hard_state, entries.is_empty()) {
            (Some((term, vote, commit)), _) => Some(HardState {
                term,
                vote,
                commit,
                ..Default::default()
            }),
            (None, true) => Some(HardState {
                term: n as u64,
                ..Default::default()
            }),
            (None, false) => None,
        };
        wal.append(&entries, hard_state.as_ref()).unwrap();
        if !entries.is_empty() {
            state.log.truncate(start as usize - 1);
            state.log.extend(entries);
        }
        if let Some(hs) = hard_state {
            state.hard_state = hs;
        }
        batches.push((wal.active_len, state.clone()));
    }
    drop(wal);
    Written {
        dir,
        opts,
        header_len,
        batches,
    }
}

fn read_state(wal: &WalStorage) -> State {
    let (first, last) = (wal.first_index(), wal.last_index());
    State {
        log: Storage::entries(wal, first, last + 1, None, GetEntriesContext::empty(false)).unwrap(),
        hard_state: wal.hard_state(),
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    files.sort();
    files
}

/// One segment, no preallocation: the file ends where the last batch does.
fn one_growing_segment() -> WalOptions {
    WalOptions {
        segment_size: 1 << 20,
        preallocate: false,
        ..WalOptions::default()
    }
}

/// A repaired log is clean: it reopens with no repairs, the same state, and takes writes.
fn reopens_clean(dir: &Path, opts: &WalOptions, state: &State) -> Result<(), TestCaseError> {
    let mut wal = WalStorage::open(dir, opts.clone()).unwrap();
    prop_assert_eq!(wal.recovery_report(), &crate::RecoveryReport::default());
    prop_assert_eq!(&read_state(&wal), state);
    let next = wal.last_index() + 1;
    let entry = Entry {
        index: next,
        term: 99,
        ..Default::default()
    };
    wal.append(std::slice::from_ref(&entry), None).unwrap();
    drop(wal);
    let wal = WalStorage::open(dir, opts.clone()).unwrap();
    prop_assert_eq!(wal.last_index(), next);
    Ok(())
}

/// Runs `test` on `cases` seeded inputs; each case names what it saw. Then insists that
/// every outcome in `at_least` was seen that often, so the interesting cases were tried.
fn run_counting<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<&'static str, TestCaseError>,
    at_least: &[(&str, usize)],
) where
    S::Value: std::fmt::Debug,
{
    let seen = RefCell::new(BTreeMap::<&'static str, usize>::new());
    let mut runner = TestRunner::new(crate::proptest_config(cases));
    let result = runner.run(&strategy, |input| {
        let outcome = test(input)?;
        *seen.borrow_mut().entry(outcome).or_default() += 1;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let seen = seen.into_inner();
    eprintln!("{seen:?}");
    for (what, at_least) in at_least {
        let count = seen.get(what).copied().unwrap_or(0);
        assert!(
            count >= *at_least,
            "only {count} cases of {what:?} (at least {at_least}): {seen:?}"
        );
    }
}

proptest! {
    #![proptest_config(crate::proptest_config(48))]

    #[test]
    fn any_sequence_of_writes_reads_back_after_a_restart(
        writes in writes(16),
        segment_size in prop::sample::select(vec![200u64, 600, 1 << 20]),
        preallocate in any::<bool>(),
    ) {
        let opts = WalOptions { segment_size, preallocate, cache_entries: 4, ..WalOptions::default() };
        let written = write(&writes, opts.clone());
        let expected = &written.batches.last().unwrap().1;
        let wal = WalStorage::open(written.dir.path(), opts).unwrap();
        prop_assert_eq!(wal.recovery_report(), &crate::RecoveryReport::default());
        prop_assert_eq!(&read_state(&wal), expected);
    }

    #[test]
    fn arbitrary_bytes_as_a_segment_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        keep_header in any::<bool>(),
    ) {
        let written = write(&[], one_growing_segment());
        let dir = written.dir.path();
        let segment = segment_files(dir).pop().unwrap();
        // Behind a valid header, or in place of everything.
        let mut content = if keep_header { fs::read(&segment).unwrap() } else { Vec::new() };
        content.extend(&bytes);
        fs::write(&segment, &content).unwrap();
        match WalStorage::open(dir, written.opts.clone()) {
            Ok(wal) => {
                let state = read_state(&wal);
                drop(wal);
                reopens_clean(dir, &written.opts, &state)?;
            }
            Err(Error::Corrupt { .. }) => {}
            Err(other) => return Err(TestCaseError::fail(format!("{other:?}"))),
        }
    }
}

/// Boundaries of the newest segment's regions: region 0 is the segment header, region
/// `i` the `i`-th batch; `starts[i]..starts[i + 1]` is region `i`.
fn region_starts(written: &Written) -> Vec<u64> {
    let mut starts = vec![0, written.header_len];
    starts.extend(written.batches.iter().map(|(end, _)| *end));
    starts
}

#[test]
fn a_cut_anywhere_recovers_exactly_the_whole_batches_before_it() {
    // Half the cuts land on a region boundary, half anywhere.
    let strategy = (writes(10), any::<bool>(), any::<prop::sample::Index>());
    run_counting(
        64,
        strategy,
        |(writes, on_boundary, cut)| {
            let written = write(&writes, one_growing_segment());
            let dir = written.dir.path();
            let segment = segment_files(dir).pop().unwrap();
            let bytes = fs::read(&segment).unwrap();
            let starts = region_starts(&written);
            let cut = if on_boundary {
                starts[cut.index(starts.len())]
            } else {
                cut.index(bytes.len() + 1) as u64
            };
            fs::write(&segment, &bytes[..cut as usize]).unwrap();

            let wal = WalStorage::open(dir, written.opts.clone())
                .map_err(|e| TestCaseError::fail(format!("cut at {cut}: {e}")))?;
            let report = wal.recovery_report().clone();
            let state = read_state(&wal);
            drop(wal);
            let outcome = if cut < written.header_len {
                // Nothing was ever synced behind a torn header: the segment goes.
                prop_assert!(report.removed_torn_segment, "cut at {}", cut);
                prop_assert_eq!(&state, &State::default());
                "cut in the header"
            } else {
                let (end, expected) = written
                    .batches
                    .iter()
                    .rev()
                    .find(|(end, _)| *end <= cut)
                    .cloned()
                    .unwrap_or((written.header_len, State::default()));
                prop_assert_eq!(&state, &expected, "cut at {}", cut);
                prop_assert_eq!(report.truncated_bytes, cut - end, "cut at {}", cut);
                // Cut back to the batch boundary.
                prop_assert_eq!(fs::metadata(&segment).unwrap().len(), end);
                if end == cut {
                    "cut at a batch boundary"
                } else {
                    "cut inside a batch"
                }
            };
            reopens_clean(dir, &written.opts, &state)?;
            Ok(outcome)
        },
        &[
            ("cut in the header", 3),
            ("cut at a batch boundary", 10),
            ("cut inside a batch", 10),
        ],
    );
}

/// Where the damage of [`damage_is_a_torn_final_batch_or_corruption_never_a_partial_batch`]
/// lands.
#[derive(Debug, Clone, Copy)]
enum Aim {
    /// Anywhere in the segment.
    Anywhere,
    /// Inside the final batch: the torn last write.
    FinalBatch,
    /// From some region to the end of the segment.
    FromRegion(prop::sample::Index),
    /// From some region to the end, and into the marker of every batch there: the last
    /// writes all torn (a write that is not synced, a commit-only hard state, may be
    /// followed by more before the crash).
    Markers(prop::sample::Index),
}

#[test]
fn damage_is_a_torn_final_batch_or_corruption_never_a_partial_batch() {
    let aim = prop_oneof![
        Just(Aim::Anywhere),
        Just(Aim::FinalBatch),
        any::<prop::sample::Index>().prop_map(Aim::FromRegion),
        any::<prop::sample::Index>().prop_map(Aim::Markers),
    ];
    let damage = prop::collection::vec((any::<prop::sample::Index>(), 1..=u8::MAX), 1..6);
    run_counting(
        96,
        (writes(10), aim, damage),
        |(writes, aim, damage)| {
            let written = write(&writes, one_growing_segment());
            let dir = written.dir.path();
            let segment = segment_files(dir).pop().unwrap();
            let mut bytes = fs::read(&segment).unwrap();
            let starts = region_starts(&written);
            let last = written.batches.len();
            let (from, markers_from) = match aim {
                Aim::Anywhere => (0, None),
                Aim::FinalBatch => (starts[last], None),
                Aim::FromRegion(region) => (starts[region.index(last + 1)], None),
                Aim::Markers(region) => {
                    let region = region.index(last) + 1;
                    (starts[region], Some(region))
                }
            };
            let span = bytes.len() as u64 - from;
            let mut positions: Vec<u64> = damage
                .iter()
                .map(|(at, _)| from + at.index(span as usize) as u64)
                .collect();
            for region in markers_from.into_iter().flat_map(|r| r..=last) {
                positions.push(starts[region] + region as u64 % BATCH_MARKER_LEN as u64);
            }
            positions.sort_unstable();
            positions.dedup();
            for (i, at) in positions.iter().enumerate() {
                bytes[*at as usize] ^= damage[i % damage.len()].1;
            }
            fs::write(&segment, &bytes).unwrap();

            let region_of = |at: u64| starts.iter().filter(|s| **s <= at).count() - 1;
            let damaged: Vec<bool> = (0..=last)
                .map(|r| positions.iter().any(|p| region_of(*p) == r))
                .collect();
            let first = damaged.iter().position(|d| *d).unwrap_or(last);
            let intact_after = damaged[first..].iter().any(|d| !d);
            let before_first = if first <= 1 {
                State::default()
            } else {
                written.batches[first - 2].1.clone()
            };

            match WalStorage::open(dir, written.opts.clone()) {
                Ok(wal) => {
                    // Only the final write may be cut off; everything before it comes back.
                    prop_assert!(
                        !intact_after,
                        "damage at {:?} in region {}, with intact writes after it, was not reported",
                        positions,
                        first
                    );
                    let report = wal.recovery_report().clone();
                    let state = read_state(&wal);
                    drop(wal);
                    prop_assert_eq!(&state, &before_first, "damage at {:?}", positions);
                    if first == 0 {
                        prop_assert!(report.removed_torn_segment);
                    } else {
                        prop_assert_eq!(report.truncated_bytes, starts[last + 1] - starts[first]);
                    }
                    reopens_clean(dir, &written.opts, &state)?;
                    Ok(if first == last {
                        "damaged final batch cut off"
                    } else {
                        "damage to the end cut off"
                    })
                }
                Err(Error::Corrupt {
                    segment: at_segment,
                    offset,
                    ..
                }) => {
                    prop_assert!(
                        first < last,
                        "damage at {:?} only in the final batch is a torn write, not corruption",
                        positions
                    );
                    prop_assert_eq!(at_segment, segment);
                    // Reported inside the first damaged header or batch.
                    prop_assert!(
                        starts[first] <= offset && offset < starts[first + 1],
                        "damage at {:?} reported at {}",
                        positions,
                        offset
                    );
                    Ok(if first == 0 {
                        "damaged header is corruption"
                    } else if intact_after {
                        "damage before an intact batch is corruption"
                    } else {
                        "damage to the end is corruption"
                    })
                }
                Err(other) => Err(TestCaseError::fail(format!(
                    "damage at {positions:?}: {other:?}"
                ))),
            }
        },
        &[
            ("damaged final batch cut off", 15),
            ("damaged header is corruption", 3),
            ("damage before an intact batch is corruption", 8),
            ("damage to the end cut off", 3),
        ],
    );
}

#[test]
fn damage_in_an_older_segment_is_always_corruption() {
    let opts = WalOptions {
        segment_size: 200,
        preallocate: false,
        ..WalOptions::default()
    };
    let strategy = (writes(16), any::<prop::sample::Index>(), 1..=u8::MAX);
    run_counting(
        48,
        strategy,
        |(writes, position, flip)| {
            let written = write(&writes, opts.clone());
            let segments = segment_files(written.dir.path());
            prop_assume!(segments.len() >= 2);
            let mut bytes = fs::read(&segments[0]).unwrap();
            let position = position.index(bytes.len());
            bytes[position] ^= flip;
            fs::write(&segments[0], &bytes).unwrap();
            match WalStorage::open(written.dir.path(), written.opts.clone()) {
                Err(Error::Corrupt { segment, .. }) => {
                    prop_assert_eq!(&segment, &segments[0]);
                    Ok("corruption")
                }
                other => Err(TestCaseError::fail(format!(
                    "damage at {position}: {other:?}"
                ))),
            }
        },
        &[("corruption", 30)],
    );
}

#[test]
fn garbage_after_the_last_batch_is_cut_off_and_zeros_are_kept() {
    let garbage = prop_oneof![
        prop::collection::vec(any::<u8>(), 1..100),
        (1usize..100).prop_map(|len| vec![0; len]),
    ];
    run_counting(
        48,
        (writes(8), garbage),
        |(writes, garbage)| {
            let written = write(&writes, one_growing_segment());
            let dir = written.dir.path();
            let segment = segment_files(dir).pop().unwrap();
            let mut bytes = fs::read(&segment).unwrap();
            let valid = bytes.len() as u64;
            bytes.extend(&garbage);
            fs::write(&segment, &bytes).unwrap();
            let wal = WalStorage::open(dir, written.opts.clone()).unwrap();
            let expected = &written.batches.last().unwrap().1;
            prop_assert_eq!(&read_state(&wal), expected);
            let zeros = garbage.iter().all(|b| *b == 0);
            // Zeros are a preallocated tail (kept); anything else a torn write (cut off).
            let cut = if zeros { 0 } else { garbage.len() as u64 };
            prop_assert_eq!(wal.recovery_report().truncated_bytes, cut);
            drop(wal);
            let len = fs::metadata(&segment).unwrap().len();
            prop_assert_eq!(len, if zeros { bytes.len() as u64 } else { valid });
            reopens_clean(dir, &written.opts, expected)?;
            Ok(if zeros {
                "zeros kept"
            } else {
                "garbage cut off"
            })
        },
        &[("zeros kept", 10), ("garbage cut off", 10)],
    );
}
