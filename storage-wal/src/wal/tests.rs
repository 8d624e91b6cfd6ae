//! Tests that need to see where records sit on disk (crash cuts, bit flips, segment
//! files). The model-based property test lives in `tests/model.rs`.

use std::fs;
use std::path::{Path, PathBuf};

use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, Storage, StorageError};
use tempfile::TempDir;

use super::ZERO_AHEAD_BYTES;
use crate::record::{BATCH_MARKER_LEN, HEADER_LEN};
use crate::{Error, WalOptions, WalStorage};

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("value of entry {index} at term {term}")
            .into_bytes()
            .into(),
        ..Default::default()
    }
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|index| entry(index, term)).collect()
}

fn hard_state(term: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote: 1,
        commit,
        ..Default::default()
    }
}

fn voters(ids: &[u64]) -> ConfState {
    ConfState {
        voters: ids.to_vec(),
        ..Default::default()
    }
}

fn small_opts() -> WalOptions {
    WalOptions {
        segment_size: 512,
        cache_entries: 3,
        ..growing_opts()
    }
}

/// Segments that grow with each write, so a test can cut the newest one at any length
/// (preallocated ones are torn by zeros instead).
fn growing_opts() -> WalOptions {
    WalOptions {
        preallocate: false,
        ..WalOptions::default()
    }
}

fn whole_log(wal: &WalStorage) -> Vec<Entry> {
    let first = wal.first_index();
    let last = wal.last_index();
    Storage::entries(wal, first, last + 1, None, GetEntriesContext::empty(false)).unwrap()
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

fn files_with_extension(dir: &Path, extension: &str) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == extension)
        })
        .count()
}

/// Copies the log directory, replacing the newest segment by `newest_segment`.
fn copy_with_newest(dir: &Path, newest_segment: &[u8]) -> TempDir {
    let copy = tempfile::tempdir().unwrap();
    let segments = segment_files(dir);
    for (i, path) in segments.iter().enumerate() {
        let target = copy.path().join(path.file_name().unwrap());
        if i + 1 == segments.len() {
            fs::write(target, newest_segment).unwrap();
        } else {
            fs::copy(path, target).unwrap();
        }
    }
    copy
}

/// One batch as written: where it ends in the newest segment and what it holds.
#[derive(Clone)]
struct Batch {
    end: u64,
    entries: Vec<Entry>,
    hard_state: HardState,
}

fn append_tracked(wal: &mut WalStorage, batch: &[Entry], hs: &HardState) -> Batch {
    wal.append(batch, Some(hs)).unwrap();
    Batch {
        end: wal.active_len,
        entries: batch.to_vec(),
        hard_state: hs.clone(),
    }
}

/// Replays whole batches the way recovery should: an entry replaces the suffix from its
/// index; a batch cut anywhere is dropped entirely.
fn expected_state(batches: &[Batch], cut: u64) -> (Vec<Entry>, HardState) {
    let mut log: Vec<Entry> = Vec::new();
    let mut hs = HardState::default();
    for batch in batches.iter().take_while(|b| b.end <= cut) {
        for e in &batch.entries {
            log.truncate((e.index - 1) as usize);
            log.push(e.clone());
        }
        hs = batch.hard_state.clone();
    }
    (log, hs)
}

/// Start offsets of the records of the batch that holds `entries` (marker first).
fn record_starts(wal: &WalStorage, indexes: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    let first = wal.location(*indexes.start()).offset;
    let mut starts = vec![first - BATCH_MARKER_LEN as u64];
    starts.extend(indexes.map(|i| wal.location(i).offset));
    starts
}

#[test]
fn round_trip_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WalStorage::open(dir.path(), small_opts()).unwrap();
    assert_eq!(wal.first_index(), 1);
    assert_eq!(wal.last_index(), 0);
    wal.set_conf_state(&voters(&[1, 2, 3])).unwrap();
    for batch in 0..20u64 {
        let first = batch * 5 + 1;
        wal.append(
            &entries(first..=first + 4, 1 + batch / 7),
            Some(&hard_state(3, first)),
        )
        .unwrap();
    }
    let before = whole_log(&wal);
    assert_eq!(before.len(), 100);
    assert!(
        segment_files(dir.path()).len() > 2,
        "small segments should roll over"
    );
    drop(wal);

    let wal = WalStorage::open(dir.path(), small_opts()).unwrap();
    assert_eq!(whole_log(&wal), before);
    assert_eq!(wal.hard_state(), hard_state(3, 96));
    assert_eq!(wal.conf_state(), voters(&[1, 2, 3]));
    let state = wal.initial_state().unwrap();
    assert_eq!(state.hard_state, hard_state(3, 96));
    assert_eq!(state.conf_state, voters(&[1, 2, 3]));
    assert_eq!(Storage::term(&wal, 0).unwrap(), 0);
    assert_eq!(Storage::term(&wal, 50).unwrap(), 1 + 9 / 7);
    assert_eq!(wal.recovery_report(), &crate::RecoveryReport::default());
}

#[test]
fn cutting_the_newest_segment_at_every_byte_recovers_exactly_the_whole_batches() {
    tear_the_newest_segment_at_every_byte(false);
}

#[test]
fn zeroing_a_preallocated_segment_from_every_byte_recovers_exactly_the_whole_batches() {
    tear_the_newest_segment_at_every_byte(true);
}

/// A crash during the last writes leaves the newest segment cut short (a growing file) or
/// with zeros where the writes did not land (a preallocated one); either way what was
/// written before the tear must come back, and only whole batches of it.
fn tear_the_newest_segment_at_every_byte(preallocate: bool) {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_size: 16 * 1024,
        preallocate,
        ..WalOptions::default()
    };
    let mut wal = WalStorage::open(dir.path(), opts.clone()).unwrap();
    let mut batches = Vec::new();
    for batch in 0..4u64 {
        let first = batch * 3 + 1;
        batches.push(append_tracked(
            &mut wal,
            &entries(first..=first + 2, 1),
            &hard_state(1, first),
        ));
    }
    // The last batches: a conflicting overwrite, a commit-only hard state, an append.
    let tail_start = wal.active_len;
    batches.push(append_tracked(
        &mut wal,
        &entries(8..=9, 2),
        &hard_state(2, 8),
    ));
    batches.push(append_tracked(&mut wal, &[], &hard_state(2, 9)));
    batches.push(append_tracked(
        &mut wal,
        &entries(10..=11, 2),
        &hard_state(2, 10),
    ));
    let full_len = wal.active_len;
    drop(wal);

    let segment = fs::read(&segment_files(dir.path())[0]).unwrap();
    let file_len = if preallocate {
        opts.segment_size
    } else {
        full_len
    };
    assert_eq!(segment.len() as u64, file_len);
    for cut in tail_start..=full_len {
        let torn = if preallocate {
            let mut zeroed = segment.clone();
            zeroed[cut as usize..].fill(0);
            zeroed
        } else {
            segment[..cut as usize].to_vec()
        };
        let copy = copy_with_newest(dir.path(), &torn);
        let wal = WalStorage::open(copy.path(), opts.clone())
            .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let (log, hs) = expected_state(&batches, cut);
        assert_eq!(whole_log(&wal), log, "cut at {cut}");
        assert_eq!(wal.hard_state(), hs, "cut at {cut}");
        let last_whole = batches
            .iter()
            .map(|b| b.end)
            .filter(|end| *end <= cut)
            .max();
        // A torn batch is cut off the file, with the zeros after it if preallocated.
        let last_whole = last_whole.unwrap();
        let cut_off = if preallocate && cut > last_whole {
            segment.len() as u64 - last_whole
        } else {
            cut - last_whole
        };
        assert_eq!(
            wal.recovery_report().truncated_bytes,
            cut_off,
            "cut at {cut}"
        );
        drop(wal);
        // The repaired log is clean: it reopens without repairs and accepts appends.
        let mut wal = WalStorage::open(copy.path(), opts.clone()).unwrap();
        assert_eq!(wal.recovery_report().truncated_bytes, 0);
        let next = wal.last_index() + 1;
        wal.append(&[entry(next, 3)], None).unwrap();
        drop(wal);
        let wal = WalStorage::open(copy.path(), opts.clone()).unwrap();
        assert_eq!(wal.last_index(), next);
        // The repair cut the zeros off too; reopening reserved them again.
        let newest_len = fs::metadata(&segment_files(copy.path())[0]).unwrap().len();
        let expected_len = if preallocate {
            opts.segment_size
        } else {
            wal.active_len
        };
        assert_eq!(newest_len, expected_len, "cut at {cut}");
    }
}

#[test]
fn cutting_a_fresh_segment_inside_its_header_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts();
    let mut wal = WalStorage::open(dir.path(), opts.clone()).unwrap();
    let mut index = 0;
    while segment_files(dir.path()).len() < 2 {
        index += 1;
        wal.append(&[entry(index, 1)], Some(&hard_state(1, index)))
            .unwrap();
    }
    // The header is written and synced first; the batch that rolled over follows it.
    let header_len = wal.active_header_len;
    assert_eq!(
        wal.location(index).offset,
        header_len + BATCH_MARKER_LEN as u64
    );
    let before_roll = entries(1..=index - 1, 1);
    let newest = fs::read(segment_files(dir.path())[1].clone()).unwrap();
    drop(wal);
    for cut in 0..=newest.len() {
        let copy = copy_with_newest(dir.path(), &newest[..cut]);
        let wal = WalStorage::open(copy.path(), opts.clone()).unwrap();
        let cut = cut as u64;
        assert_eq!(
            wal.recovery_report().removed_torn_segment,
            cut < header_len,
            "cut at {cut}"
        );
        let files = if cut < header_len { 1 } else { 2 };
        assert_eq!(segment_files(copy.path()).len(), files, "cut at {cut}");
        let complete = cut == newest.len() as u64;
        let mut expected = before_roll.clone();
        if complete {
            expected.push(entry(index, 1));
        }
        assert_eq!(whole_log(&wal), expected, "cut at {cut}");
        let commit = if complete { index } else { index - 1 };
        assert_eq!(wal.hard_state(), hard_state(1, commit), "cut at {cut}");
    }
}

#[test]
fn flipped_bits_in_the_final_batch_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WalStorage::open(dir.path(), growing_opts()).unwrap();
    wal.append(&entries(1..=5, 1), Some(&hard_state(1, 3)))
        .unwrap();
    wal.append(&entries(6..=7, 1), None).unwrap();
    let batch_start = record_starts(&wal, 6..=7)[0];
    let batch_end = wal.active_len;
    drop(wal);
    let segment = fs::read(&segment_files(dir.path())[0]).unwrap();
    for position in batch_start..batch_end {
        let mut damaged = segment.clone();
        damaged[position as usize] ^= 1 << (position % 8);
        let copy = copy_with_newest(dir.path(), &damaged);
        let wal = WalStorage::open(copy.path(), growing_opts())
            .unwrap_or_else(|e| panic!("flip at {position}: {e}"));
        assert_eq!(whole_log(&wal), entries(1..=5, 1), "flip at {position}");
        assert_eq!(wal.hard_state(), hard_state(1, 3));
        assert_eq!(
            wal.recovery_report().truncated_bytes,
            batch_end - batch_start
        );
    }
}

#[test]
fn flipped_bits_before_the_final_batch_are_corruption_at_the_damaged_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WalStorage::open(dir.path(), growing_opts()).unwrap();
    wal.append(&entries(1..=5, 1), Some(&hard_state(1, 3)))
        .unwrap();
    let mut starts = record_starts(&wal, 1..=5);
    let hs_start = wal.location(5).offset + (HEADER_LEN as u64) + u64::from(wal.location(5).len);
    starts.push(hs_start);
    let first_batch_end = wal.active_len;
    wal.append(&entries(6..=7, 1), None).unwrap();
    drop(wal);
    let segment_path = segment_files(dir.path())[0].clone();
    let segment = fs::read(&segment_path).unwrap();
    for position in starts[0]..first_batch_end {
        let mut damaged = segment.clone();
        damaged[position as usize] ^= 1 << (position % 8);
        let copy = copy_with_newest(dir.path(), &damaged);
        let damaged_record = *starts.iter().filter(|s| **s <= position).max().unwrap();
        match WalStorage::open(copy.path(), growing_opts()) {
            Err(Error::Corrupt {
                segment, offset, ..
            }) => {
                assert_eq!(segment.file_name(), segment_path.file_name());
                assert_eq!(offset, damaged_record, "flip at {position}");
            }
            other => panic!("flip at {position}: expected corruption, got {other:?}"),
        }
    }
}

#[test]
fn a_hole_inside_the_final_batch_is_a_torn_write_but_earlier_it_is_corruption() {
    // Pages of the last, unsynced write may reach the disk out of order (in place writes
    // into a preallocated segment): a zeroed record with valid ones behind it.
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WalStorage::open(dir.path(), growing_opts()).unwrap();
    wal.append(&entries(1..=4, 1), Some(&hard_state(1, 2)))
        .unwrap();
    let first_batch = record_starts(&wal, 1..=4);
    wal.append(&entries(5..=8, 1), Some(&hard_state(1, 6)))
        .unwrap();
    let last_batch = record_starts(&wal, 5..=8);
    let full_len = wal.active_len;
    drop(wal);
    let segment = fs::read(&segment_files(dir.path())[0]).unwrap();
    let zero_record = |record_start: u64, next_start: u64| {
        let mut damaged = segment.clone();
        damaged[record_start as usize..next_start as usize].fill(0);
        copy_with_newest(dir.path(), &damaged)
    };

    let copy = zero_record(last_batch[2], last_batch[3]);
    let wal = WalStorage::open(copy.path(), growing_opts()).unwrap();
    assert_eq!(whole_log(&wal), entries(1..=4, 1));
    assert_eq!(wal.hard_state(), hard_state(1, 2));
    assert_eq!(
        wal.recovery_report().truncated_bytes,
        full_len - last_batch[0]
    );

    let copy = zero_record(first_batch[2], first_batch[3]);
    assert!(matches!(
        WalStorage::open(copy.path(), growing_opts()),
        Err(Error::Corrupt { offset, .. }) if offset == first_batch[2]
    ));
}

#[test]
fn damage_in_an_older_segment_is_corruption_even_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WalStorage::open(dir.path(), small_opts()).unwrap();
    for index in 1..=40 {
        wal.append(&[entry(index, 1)], None).unwrap();
    }
    drop(wal);
    let segments = segment_files(dir.path());
    assert!(segments.len() >= 3);
    let mut oldest = fs::read(&segments[0]).unwrap();
    let len = oldest.len();
    oldest[len - 1] ^= 0x80;
    fs::write(&segments[0], &oldest).unwrap();
    let error = WalStorage::open(dir.path(), small_opts()).unwrap_err();
    assert!(matches!(error, Error::Corrupt { ref segment, .. } if *segment == segments[0]));
    assert!(error.is_fatal());
}

#[test]
fn a_missing_middle_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WalStorage::open(dir.path(), small_opts()).unwrap();
    for index in 1..=40 {
        wal.append(&[entry(index, 1)], None).unwrap();
    }
    drop(wal);
    fs::remove_file(&segment_files(dir.path())[1]).unwrap();
    assert!(matches!(
        WalStorage::open(dir.path(), small_opts()),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn conflicting_suffix_is_replaced_in_memory_on_disk_and_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts();
    let mut wal = WalStorage::open(dir.path(), opts.clone()).unwrap();
    for index in 1..=30 {
        wal.append(&[entry(index, 1)], None).unwrap();
    }
    assert!(segment_files(dir.path()).len() >= 2);
    // Overwrite from an index that lives in the oldest segment (and not in the cache).
    wal.append(&entries(5..=7, 2), Some(&hard_state(2, 4)))
        .unwrap();
    let mut expected = entries(1..=4, 1);
    expected.extend(entries(5..=7, 2));
    assert_eq!(wal.last_index(), 7);
    assert_eq!(whole_log(&wal), expected);
    assert_eq!(Storage::term(&wal, 7).unwrap(), 2);
    assert_eq!(
        Storage::term(&wal, 8),
        Err(raft::Error::Store(StorageError::Unavailable))
    );
    drop(wal);

    let mut wal = WalStorage::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(whole_log(&wal), expected);
    // Overwrite the tail again (inside the cache), then keep appending.
    wal.append(&entries(7..=9, 3), None).unwrap();
    expected.truncate(6);
    expected.extend(entries(7..=9, 3));
    assert_eq!(whole_log(&wal), expected);
    drop(wal);
    let wal = WalStorage::open(dir.path(), opts).unwrap();
    assert_eq!(whole_log(&wal), expected);
    assert_eq!(wal.hard_state(), hard_state(2, 4));
}

#[test]
fn append_rejects_gaps_and_compacted_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WalStorage::open(dir.path(), small_opts()).unwrap();
    wal.append(&entries(1..=5, 1), None).unwrap();
    assert!(matches!(
        wal.append(&[entry(7, 1)], None),
        Err(Error::NonContiguous {
            expected: 6,
            got: 7
        })
    ));
    assert!(matches!(
        wal.append(&[entry(6, 1), entry(8, 1)], None),
        Err(Error::NonContiguous {
            expected: 7,
            got: 8
        })
    ));
    wal.compact(3).unwrap();
    assert!(matches!(
        wal.append(&[entry(2, 2)], None),
        Err(Error::Compacted {
            index: 2,
            first_index: 3
        })
    ));
    assert!(matches!(
        wal.compact(7),
        Err(Error::Unavailable {
            index: 7,
            last_index: 5
        })
    ));
    assert!(!wal.is_poisoned(), "argument errors are not fatal");
    assert_eq!(whole_log(&wal), entries(3..=5, 1));
}

#[test]
fn compaction_purges_whole_segments_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts();
    let mut wal = WalStorage::open(dir.path(), opts.clone()).unwrap();
    wal.set_conf_state(&voters(&[1])).unwrap();
    wal.set_hard_state(&hard_state(1, 0)).unwrap();
    for index in 1..=60 {
        wal.append(&[entry(index, 1 + index / 20)], Some(&hard_state(4, index)))
            .unwrap();
    }
    let segments_before = segment_files(dir.path());
    assert!(segments_before.len() > 4);

    wal.compact(41).unwrap();
    assert_eq!(wal.first_index(), 41);
    assert_eq!(Storage::term(&wal, 40).unwrap(), 3);
    assert_eq!(
        Storage::term(&wal, 39),
        Err(raft::Error::Store(StorageError::Compacted))
    );
    assert_eq!(
        Storage::entries(&wal, 40, 42, None, GetEntriesContext::empty(false)),
        Err(raft::Error::Store(StorageError::Compacted))
    );
    wal.wait_for_purge().unwrap();
    let segments_after = segment_files(dir.path());
    assert!(segments_after.len() < segments_before.len());
    // Exactly the segments that hold no live entry are gone.
    let oldest_needed = wal.location(41).segment;
    assert_eq!(
        segments_after[0].file_name().unwrap().to_str().unwrap(),
        format!("{oldest_needed:016x}.wal")
    );
    // Compacting to the current first index or below is a no-op.
    wal.compact(10).unwrap();
    assert_eq!(wal.first_index(), 41);
    let expected: Vec<Entry> = (41..=60).map(|i| entry(i, 1 + i / 20)).collect();
    assert_eq!(whole_log(&wal), expected);
    drop(wal);

    // The records that set the conf state lived in purged segments: segment headers keep it.
    let mut wal = WalStorage::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(wal.first_index(), 41);
    assert_eq!(Storage::term(&wal, 40).unwrap(), 3);
    assert_eq!(whole_log(&wal), expected);
    assert_eq!(wal.conf_state(), voters(&[1]));
    assert_eq!(wal.hard_state(), hard_state(4, 60));

    // Compacting everything leaves an empty log that still knows the last term.
    wal.compact(61).unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (61, 60));
    wal.wait_for_purge().unwrap();
    assert_eq!(segment_files(dir.path()).len(), 1);
    drop(wal);
    let mut wal = WalStorage::open(dir.path(), opts).unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (61, 60));
    assert_eq!(Storage::term(&wal, 60).unwrap(), 4);
    wal.append(&[entry(61, 4)], None).unwrap();
    assert_eq!(whole_log(&wal), vec![entry(61, 4)]);
}

/// Obsolete segments are deleted after `compact` returns, on the purge thread; a crash
/// before they are gone leaves them behind, and recovery must come back with the
/// compacted log, then delete them at the next compaction.
#[test]
fn segments_a_crash_left_undeleted_after_a_compaction_are_skipped_and_purged_later() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts();
    let mut wal = WalStorage::open(dir.path(), opts.clone()).unwrap();
    wal.set_conf_state(&voters(&[1])).unwrap();
    for index in 1..=60 {
        wal.append(&[entry(index, 1)], Some(&hard_state(1, index)))
            .unwrap();
    }
    let before: Vec<(PathBuf, Vec<u8>)> = segment_files(dir.path())
        .into_iter()
        .map(|path| {
            let bytes = fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    wal.compact(41).unwrap();
    wal.wait_for_purge().unwrap();
    drop(wal);
    // The crash: the deletions never reached the disk.
    let mut restored = 0;
    for (path, bytes) in &before {
        if !path.exists() {
            fs::write(path, bytes).unwrap();
            restored += 1;
        }
    }
    assert!(restored > 0, "the compaction made segments obsolete");

    let mut wal = WalStorage::open(dir.path(), opts).unwrap();
    assert_eq!(wal.first_index(), 41);
    assert_eq!(whole_log(&wal), entries(41..=60, 1));
    assert_eq!(wal.conf_state(), voters(&[1]));
    wal.compact(42).unwrap();
    wal.wait_for_purge().unwrap();
    let oldest_needed = wal.location(42).segment;
    assert_eq!(
        segment_files(dir.path())[0]
            .file_name()
            .unwrap()
            .to_str()
            .unwrap(),
        format!("{oldest_needed:016x}.wal")
    );
}

#[test]
fn entries_honours_max_size_from_cache_and_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WalStorage::open(dir.path(), small_opts()).unwrap();
    let all: Vec<Entry> = (1..=20)
        .map(|index| Entry {
            index,
            term: 1,
            data: vec![b'x'; (index as usize * 7) % 50].into(),
            ..Default::default()
        })
        .collect();
    wal.append(&all, None).unwrap();
    for low in [1u64, 10, 18] {
        for high in [low + 1, 19, 21] {
            if high <= low {
                continue;
            }
            for max_size in [0u64, 1, 20, 60, 100, 250, raft::NO_LIMIT] {
                let mut expected = all[(low - 1) as usize..(high - 1) as usize].to_vec();
                raft::util::limit_size(&mut expected, Some(max_size));
                let got =
                    Storage::entries(&wal, low, high, max_size, GetEntriesContext::empty(false))
                        .unwrap();
                assert_eq!(got, expected, "low {low} high {high} max {max_size}");
                assert!(!got.is_empty(), "at least one entry is always returned");
            }
        }
    }
    assert_eq!(
        Storage::entries(&wal, 1, 22, None, GetEntriesContext::empty(false)),
        Err(raft::Error::Store(StorageError::Unavailable))
    );
}

fn snapshot(index: u64, term: u64, ids: &[u64], data: &[u8]) -> Snapshot {
    let mut snapshot = Snapshot::default();
    let meta = snapshot.mut_metadata();
    meta.index = index;
    meta.term = term;
    meta.set_conf_state(voters(ids));
    snapshot.data = data.to_vec().into();
    snapshot
}

#[test]
fn applying_a_snapshot_resets_the_log_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small_opts();
    let mut wal = WalStorage::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(
        Storage::snapshot(&wal, 0, 2),
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable
        ))
    );
    for index in 1..=30 {
        wal.append(&[entry(index, 1)], Some(&hard_state(1, index - 1)))
            .unwrap();
    }
    wal.apply_snapshot(snapshot(25, 3, &[1, 2], b"state at 25"))
        .unwrap();
    let check = |wal: &WalStorage| {
        assert_eq!((wal.first_index(), wal.last_index()), (26, 25));
        assert_eq!(Storage::term(wal, 25).unwrap(), 3);
        assert_eq!(wal.hard_state(), hard_state(3, 25));
        assert_eq!(wal.conf_state(), voters(&[1, 2]));
        let got = Storage::snapshot(wal, 20, 2).unwrap();
        assert_eq!(got, snapshot(25, 3, &[1, 2], b"state at 25"));
        assert_eq!(wal.last_snapshot(), Some(&got));
        assert_eq!(
            Storage::snapshot(wal, 26, 2),
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable
            ))
        );
    };
    check(&wal);
    wal.wait_for_purge().unwrap();
    assert_eq!(segment_files(dir.path()).len(), 1, "the old log is deleted");
    assert!(matches!(
        wal.apply_snapshot(snapshot(25, 3, &[1], b"")),
        Err(Error::SnapshotOutOfDate { .. })
    ));
    drop(wal);

    let mut wal = WalStorage::open(dir.path(), opts.clone()).unwrap();
    check(&wal);
    wal.append(&entries(26..=27, 3), None).unwrap();
    wal.apply_snapshot(snapshot(40, 4, &[1, 2, 3], b"state at 40"))
        .unwrap();
    assert_eq!(
        files_with_extension(dir.path(), "snap"),
        1,
        "older snapshot files go"
    );
    drop(wal);
    let wal = WalStorage::open(dir.path(), opts).unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (41, 40));
    assert_eq!(wal.conf_state(), voters(&[1, 2, 3]));
}

#[test]
fn a_snapshot_written_before_a_crash_is_installed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WalStorage::open(dir.path(), small_opts()).unwrap();
    wal.append(&entries(1..=10, 1), Some(&hard_state(1, 5)))
        .unwrap();
    drop(wal);
    // apply_snapshot crashed after the snapshot file was in place, before the log reset.
    crate::snapshot_file::write(
        dir.path(),
        &snapshot(20, 2, &[1, 2], b"leader state"),
        crate::snapshot_file::Origin::Leader,
    )
    .unwrap();
    fs::write(dir.path().join("garbage.snap.tmp"), b"half a snapshot").unwrap();
    let mut wal = WalStorage::open(dir.path(), small_opts()).unwrap();
    assert!(wal.recovery_report().completed_snapshot_install);
    assert_eq!((wal.first_index(), wal.last_index()), (21, 20));
    assert_eq!(wal.hard_state(), hard_state(2, 20));
    assert_eq!(wal.conf_state(), voters(&[1, 2]));
    // The replaced log's segments pass through temporary names on the purge thread.
    wal.wait_for_purge().unwrap();
    assert_eq!(files_with_extension(dir.path(), "tmp"), 0);
}

#[test]
fn creating_a_snapshot_keeps_recent_entries_and_compacts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        keep_entries: 10,
        ..small_opts()
    };
    let mut wal = WalStorage::open(dir.path(), opts.clone()).unwrap();
    for index in 1..=50 {
        wal.append(
            &[entry(index, 2)],
            Some(&hard_state(2, index.saturating_sub(5))),
        )
        .unwrap();
    }
    assert!(matches!(
        wal.create_snapshot(46, voters(&[1]), b"too new".to_vec()),
        Err(Error::SnapshotNotCommitted {
            index: 46,
            commit: 45
        })
    ));
    wal.create_snapshot(30, voters(&[1]), b"at 30".to_vec())
        .unwrap();
    assert_eq!(wal.first_index(), 21, "entries <= 30 - 10 are purged");
    assert_eq!(Storage::term(&wal, 20).unwrap(), 2);
    let taken = Storage::snapshot(&wal, 0, 2).unwrap();
    assert_eq!(taken.get_metadata().index, 30);
    assert_eq!(taken.get_metadata().term, 2);
    assert_eq!(&taken.data[..], b"at 30");
    assert!(matches!(
        wal.create_snapshot(30, voters(&[1]), Vec::new()),
        Err(Error::SnapshotOutOfDate { .. })
    ));
    wal.create_snapshot(45, voters(&[1, 2]), b"at 45".to_vec())
        .unwrap();
    assert_eq!(wal.first_index(), 36);
    assert_eq!(files_with_extension(dir.path(), "snap"), 1);
    drop(wal);

    let wal = WalStorage::open(dir.path(), opts).unwrap();
    assert!(!wal.recovery_report().completed_snapshot_install);
    assert_eq!((wal.first_index(), wal.last_index()), (36, 50));
    let kept = wal.last_snapshot().unwrap();
    assert_eq!(kept.get_metadata().index, 45);
    assert_eq!(kept.get_metadata().get_conf_state(), &voters(&[1, 2]));
    assert_eq!(&kept.data[..], b"at 45");
}

#[test]
fn a_damaged_snapshot_file_stops_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WalStorage::open(dir.path(), small_opts()).unwrap();
    wal.apply_snapshot(snapshot(5, 1, &[1], b"snapshot payload"))
        .unwrap();
    drop(wal);
    let path = dir.path().join(crate::snapshot_file::file_name(5, 1));
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&path, bytes).unwrap();
    let error = WalStorage::open(dir.path(), small_opts()).unwrap_err();
    assert!(matches!(error, Error::CorruptSnapshot { .. }), "{error:?}");
}

#[test]
fn restart_keeps_hard_state_and_conf_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WalStorage::open(dir.path(), small_opts()).unwrap();
    wal.set_conf_state(&voters(&[1, 2, 3])).unwrap();
    wal.append(&entries(1..=3, 1), Some(&hard_state(1, 1)))
        .unwrap();
    wal.set_hard_state(&hard_state(2, 3)).unwrap();
    let joint = ConfState {
        voters: vec![1, 2, 4],
        voters_outgoing: vec![1, 2, 3],
        learners_next: vec![3],
        auto_leave: true,
        ..Default::default()
    };
    wal.set_conf_state(&joint).unwrap();
    drop(wal);
    let wal = WalStorage::open(dir.path(), small_opts()).unwrap();
    let state = wal.initial_state().unwrap();
    assert_eq!(state.hard_state, hard_state(2, 3));
    assert_eq!(state.conf_state, joint);
}

#[test]
fn preallocated_segments_recover_without_repairs() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_size: 4096,
        preallocate: true,
        ..small_opts()
    };
    let mut wal = WalStorage::open(dir.path(), opts.clone()).unwrap();
    for index in 1..=200 {
        wal.append(&[entry(index, 1)], Some(&hard_state(1, index)))
            .unwrap();
    }
    let expected = whole_log(&wal);
    let segments = segment_files(dir.path());
    assert!(segments.len() >= 3);
    let newest = segments.last().unwrap();
    assert_eq!(fs::metadata(newest).unwrap().len(), 4096);
    for sealed in &segments[..segments.len() - 1] {
        let len = fs::metadata(sealed).unwrap().len();
        assert!(len < 4096, "sealed segments lose their zero tail");
    }
    drop(wal);
    let mut wal = WalStorage::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(wal.recovery_report(), &crate::RecoveryReport::default());
    assert_eq!(whole_log(&wal), expected);
    wal.append(&[entry(201, 1)], None).unwrap();
    drop(wal);
    let wal = WalStorage::open(dir.path(), opts).unwrap();
    assert_eq!(wal.last_index(), 201);
}

#[test]
fn a_failed_write_poisons_the_storage_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WalStorage::open(dir.path(), small_opts()).unwrap();
    wal.append(&entries(1..=3, 1), Some(&hard_state(1, 1)))
        .unwrap();
    // Swap the active segment's handle for a read-only one: the next write fails.
    let active = wal.segments.values_mut().next_back().unwrap();
    active.file = fs::File::open(&active.path).unwrap();
    let error = wal
        .append(&[entry(4, 1)], Some(&hard_state(1, 2)))
        .unwrap_err();
    assert!(error.is_fatal(), "{error:?}");
    assert!(wal.is_poisoned());
    assert_eq!(wal.last_index(), 3);
    assert_eq!(wal.hard_state(), hard_state(1, 1));
    assert!(matches!(
        wal.set_hard_state(&hard_state(1, 3)),
        Err(Error::Poisoned)
    ));
    assert!(matches!(wal.compact(2), Err(Error::Poisoned)));
    // Reads keep serving the durable state.
    assert_eq!(whole_log(&wal), entries(1..=3, 1));
}

#[test]
fn storage_can_move_to_the_raft_driver_thread() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<WalStorage>();
    assert_send::<raft::RawNode<WalStorage>>();
}

#[test]
fn only_entries_terms_and_votes_require_an_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WalStorage::open(dir.path(), small_opts()).unwrap();
    wal.append(&entries(1..=2, 1), Some(&hard_state(1, 0)))
        .unwrap();
    let commit_only = hard_state(1, 2);
    assert!(
        !wal.must_sync(&[], Some(&commit_only)),
        "a commit index alone is re-learned"
    );
    assert!(
        wal.must_sync(&entries(3..=3, 1), None),
        "new entries must be durable"
    );
    assert!(
        wal.must_sync(&[], Some(&hard_state(2, 2))),
        "a new term must be durable"
    );
    let mut voted = hard_state(1, 2);
    voted.vote = 7;
    assert!(wal.must_sync(&[], Some(&voted)), "a vote must be durable");

    // Unsynced commit-only records still read back after a clean restart, and a segment
    // roll syncs them first: the log stays recoverable across many rolls.
    for index in 3..=200 {
        wal.append(&entries(index..=index, 1), None).unwrap();
        wal.set_hard_state(&hard_state(1, index)).unwrap();
    }
    drop(wal);
    let wal = WalStorage::open(dir.path(), small_opts()).unwrap();
    assert_eq!(wal.last_index(), 200);
    assert_eq!(wal.hard_state().commit, 200);
}

#[test]
fn appends_write_real_zeros_a_stretch_ahead_without_growing_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let segment_size = 4 * ZERO_AHEAD_BYTES;
    let opts = WalOptions {
        segment_size,
        preallocate: true,
        ..small_opts()
    };
    let mut wal = WalStorage::open(dir.path(), opts.clone()).unwrap();
    wal.append(&[entry(1, 1)], Some(&hard_state(1, 1))).unwrap();
    let first_end = wal.active_len;
    assert_eq!(wal.active_written_to, first_end + ZERO_AHEAD_BYTES);
    // Batches inside the zeroed stretch write no more zeros.
    wal.append(&[entry(2, 1)], Some(&hard_state(1, 2))).unwrap();
    assert_eq!(wal.active_written_to, first_end + ZERO_AHEAD_BYTES);
    // Past it, the next stretch; never past the reserved size.
    let mut index = 3;
    while wal.segments.len() == 1 {
        let large = Entry {
            data: vec![7u8; 100 * 1024].into(),
            ..entry(index, 1)
        };
        wal.append(&[large], Some(&hard_state(1, index))).unwrap();
        assert!(wal.active_written_to >= wal.active_len);
        assert!(wal.active_written_to <= wal.active_file_len);
        index += 1;
    }
    let newest = segment_files(dir.path()).pop().unwrap();
    assert_eq!(fs::metadata(&newest).unwrap().len(), segment_size);
    let expected = whole_log(&wal);
    drop(wal);
    let wal = WalStorage::open(dir.path(), opts).unwrap();
    assert_eq!(wal.recovery_report(), &crate::RecoveryReport::default());
    assert_eq!(whole_log(&wal), expected);
    assert_eq!(wal.active_written_to, wal.active_len);
}
