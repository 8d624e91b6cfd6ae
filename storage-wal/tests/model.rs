//! Property-style test: seeded random appends, overwrites, hard/conf state changes,
//! compactions, snapshots and restarts, applied both to `WalStorage` and to raft's
//! `MemStorage`; after every step the two must agree on everything `raft::Storage` exposes.

#![allow(clippy::unwrap_used)] // tests may unwrap

use concord_storage_wal::{Error, WalOptions, WalStorage};
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, Storage, StorageError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KEEP_ENTRIES: u64 = 3;

fn options() -> WalOptions {
    WalOptions {
        segment_size: 700,
        cache_entries: 4,
        cache_bytes: 600,
        keep_entries: KEEP_ENTRIES,
        ..WalOptions::default()
    }
}

struct Run {
    rng: StdRng,
    dir: tempfile::TempDir,
    wal: Option<WalStorage>,
    model: MemStorage,
    /// Term of the entry before the first one; `MemStorage` forgets it on compaction.
    base_term: u64,
    term: u64,
    /// Index of the newest snapshot the wal holds.
    snapshot_index: u64,
    steps: Vec<String>,
}

impl Run {
    fn new(seed: u64) -> Run {
        // The model checks logic, not durability: prefer a RAM file system where fsync is
        // cheap, so that many seeds stay fast.
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap();
        let wal = WalStorage::open(dir.path(), options()).unwrap();
        Run {
            rng: StdRng::seed_from_u64(seed),
            dir,
            wal: Some(wal),
            model: MemStorage::new(),
            base_term: 0,
            term: 1,
            snapshot_index: 0,
            steps: Vec::new(),
        }
    }

    fn wal(&mut self) -> &mut WalStorage {
        self.wal.as_mut().unwrap()
    }

    fn first(&self) -> u64 {
        self.model.first_index().unwrap()
    }

    fn last(&self) -> u64 {
        self.model.last_index().unwrap()
    }

    fn random_hard_state(&mut self) -> HardState {
        let last = self.last();
        let commit = self.rng.random_range(0..=last);
        HardState {
            term: self.term,
            vote: self.rng.random_range(0..4),
            commit,
            ..Default::default()
        }
    }

    fn step(&mut self) {
        match self.rng.random_range(0..100) {
            0..50 => self.append(),
            50..60 => {
                let hs = self.random_hard_state();
                self.steps.push(format!("set_hard_state {hs:?}"));
                self.wal().set_hard_state(&hs).unwrap();
                self.model.wl().set_hardstate(hs);
            }
            60..65 => {
                let cs = ConfState {
                    voters: (1..=self.rng.random_range(1..6)).collect(),
                    learners: vec![self.rng.random_range(10..20)],
                    ..Default::default()
                };
                self.steps.push(format!("set_conf_state {cs:?}"));
                self.wal().set_conf_state(&cs).unwrap();
                self.model.wl().set_conf_state(cs);
            }
            65..75 => self.compact(),
            75..80 => self.create_snapshot(),
            80..83 => self.apply_snapshot(),
            _ => {
                self.steps.push("restart".to_string());
                self.wal = None;
                self.wal = Some(WalStorage::open(self.dir.path(), options()).unwrap());
            }
        }
    }

    fn append(&mut self) {
        let (first, last) = (self.first(), self.last());
        let start = if self.rng.random_bool(0.7) || last < first {
            last + 1
        } else {
            self.rng.random_range(first..=last)
        };
        if self.rng.random_bool(0.15) {
            self.term += 1;
        }
        let count = self.rng.random_range(1..=8);
        let batch: Vec<Entry> = (start..start + count)
            .map(|index| Entry {
                index,
                term: self.term,
                data: vec![index as u8; self.rng.random_range(0..200)].into(),
                context: vec![7; self.rng.random_range(0..3)].into(),
                ..Default::default()
            })
            .collect();
        let hs = self.rng.random_bool(0.5).then(|| HardState {
            term: self.term,
            vote: 1,
            commit: self.rng.random_range(0..start),
            ..Default::default()
        });
        self.steps
            .push(format!("append {start}..{} hs {hs:?}", start + count));
        self.wal().append(&batch, hs.as_ref()).unwrap();
        self.model.wl().append(&batch).unwrap();
        if let Some(hs) = hs {
            self.model.wl().set_hardstate(hs);
        }
    }

    fn compact(&mut self) {
        // MemStorage forgets its first index when compacted to empty, so stay below last + 1.
        let (first, last) = (self.first(), self.last());
        if last < first {
            return;
        }
        let index = self.rng.random_range(first..=last);
        self.steps.push(format!("compact {index}"));
        if index > first {
            self.base_term = self.model.term(index - 1).unwrap();
        }
        self.wal().compact(index).unwrap();
        self.model.wl().compact(index).unwrap();
    }

    fn create_snapshot(&mut self) {
        let commit = self.model.rl().hard_state().commit;
        let low = self.first().max(self.snapshot_index + 1);
        let high = commit.min(self.last());
        if low > high {
            return;
        }
        let index = self.rng.random_range(low..=high);
        let cs = self.model.initial_state().unwrap().conf_state;
        self.steps.push(format!("create_snapshot {index}"));
        self.wal()
            .create_snapshot(index, cs, format!("state at {index}").into_bytes())
            .unwrap();
        self.snapshot_index = index;
        let compact_index = index + 1 - KEEP_ENTRIES.min(index + 1);
        if compact_index > self.first() {
            self.base_term = self.model.term(compact_index - 1).unwrap();
            self.model.wl().compact(compact_index).unwrap();
        }
    }

    fn apply_snapshot(&mut self) {
        let first = self.first();
        let index = self
            .rng
            .random_range(first.saturating_sub(2)..self.last() + 6);
        self.term += 1;
        let mut snapshot = Snapshot {
            data: b"leader state".to_vec().into(),
            ..Default::default()
        };
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = self.term;
        meta.mut_conf_state().voters = vec![1, 2, 3];
        self.steps.push(format!("apply_snapshot {index}"));
        let ours = self.wal().apply_snapshot(snapshot.clone());
        let theirs = self.model.wl().apply_snapshot(snapshot);
        match (ours, theirs) {
            (Ok(()), Ok(())) => {
                self.base_term = self.term;
                self.snapshot_index = index;
            }
            (Err(Error::SnapshotOutOfDate { .. }), Err(e)) => {
                assert_eq!(e, raft::Error::Store(StorageError::SnapshotOutOfDate));
            }
            (ours, theirs) => panic!("apply_snapshot {index}: wal {ours:?}, model {theirs:?}"),
        }
    }

    fn check(&mut self) {
        let context = || GetEntriesContext::empty(false);
        let wal = self.wal.as_ref().unwrap();
        let model = &self.model;
        let (first, last) = (self.first(), self.last());
        let trace = || self.steps.join("\n");
        assert_eq!(wal.first_index().unwrap(), first, "{}", trace());
        assert_eq!(wal.last_index().unwrap(), last, "{}", trace());
        let ours = wal.initial_state().unwrap();
        let theirs = model.initial_state().unwrap();
        assert_eq!(ours.hard_state, theirs.hard_state, "{}", trace());
        assert_eq!(ours.conf_state, theirs.conf_state, "{}", trace());
        assert_eq!(wal.term(first - 1).unwrap(), self.base_term, "{}", trace());
        for index in first..=last {
            assert_eq!(wal.term(index).unwrap(), model.term(index).unwrap());
        }
        assert_eq!(
            wal.term(last + 1),
            Err(raft::Error::Store(StorageError::Unavailable))
        );
        if first >= 2 {
            assert_eq!(
                wal.term(first - 2),
                Err(raft::Error::Store(StorageError::Compacted))
            );
        }
        if last >= first {
            assert_eq!(
                wal.entries(first, last + 1, None, context()).unwrap(),
                model.entries(first, last + 1, None, context()).unwrap(),
                "{}",
                trace()
            );
        }
        let mut rng = StdRng::seed_from_u64(self.steps.len() as u64);
        for _ in 0..3 {
            if last < first {
                break;
            }
            let low = rng.random_range(first..=last);
            let high = rng.random_range(low + 1..=last + 1);
            let max_size = rng.random_range(0..600);
            assert_eq!(
                wal.entries(low, high, max_size, context()).unwrap(),
                model.entries(low, high, max_size, context()).unwrap(),
                "entries({low}, {high}, {max_size})\n{}",
                trace()
            );
        }
        if let Some(snapshot) = wal.last_snapshot() {
            assert_eq!(snapshot.get_metadata().index, self.snapshot_index);
        }
    }
}

#[test]
fn random_operations_match_raft_mem_storage() {
    for seed in 0..64 {
        let mut run = Run::new(seed);
        for _ in 0..400 {
            run.step();
            run.check();
        }
        // A final restart must not change anything.
        run.wal = None;
        run.wal = Some(WalStorage::open(run.dir.path(), options()).unwrap());
        run.check();
    }
}
