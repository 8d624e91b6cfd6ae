//! An interval index over byte-string key ranges: "which ranges contain this key?" in
//! `O(log n + matches)`, instead of testing every range.
//!
//! The ranges sit in an array sorted by start key, read as an implicit balanced binary
//! tree (the middle of every sub-array is its root), each root holding the largest end
//! of its sub-array. A stabbing query skips every sub-tree whose largest end is at or
//! before the key, and every right sub-tree whose root starts after it. Changes mark the
//! array dirty; it is re-sorted once before the next query, so a burst of watcher
//! creations costs one sort, not one per watcher.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::Hash;

/// The exclusive upper bound of a range; `Unbounded` is etcd's "every key from `key` on"
/// (`range_end = "\0"`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum End {
    Before(Vec<u8>),
    Unbounded,
}

impl End {
    /// Whether `key` is below this bound.
    pub fn above(&self, key: &[u8]) -> bool {
        match self {
            End::Before(end) => key < end.as_slice(),
            End::Unbounded => true,
        }
    }
}

impl PartialOrd for End {
    fn partial_cmp(&self, other: &End) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for End {
    fn cmp(&self, other: &End) -> Ordering {
        match (self, other) {
            (End::Unbounded, End::Unbounded) => Ordering::Equal,
            (End::Unbounded, End::Before(_)) => Ordering::Greater,
            (End::Before(_), End::Unbounded) => Ordering::Less,
            (End::Before(a), End::Before(b)) => a.cmp(b),
        }
    }
}

#[derive(Debug)]
struct Entry<T> {
    start: Vec<u8>,
    end: End,
    value: T,
    /// Largest `end` in the sub-tree rooted here (valid when the index is clean).
    max_end: End,
}

/// Ranges `[start, end)` with a value each; values are unique.
#[derive(Debug)]
pub struct IntervalIndex<T> {
    entries: Vec<Entry<T>>,
    position: HashMap<T, usize>,
    dirty: bool,
}

impl<T: Copy + Eq + Hash> Default for IntervalIndex<T> {
    fn default() -> Self {
        IntervalIndex {
            entries: Vec::new(),
            position: HashMap::new(),
            dirty: false,
        }
    }
}

impl<T: Copy + Eq + Hash> IntervalIndex<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds `[start, end)` under `value` (replacing a previous range of the same value).
    pub fn insert(&mut self, start: Vec<u8>, end: End, value: T) {
        self.remove(value);
        self.position.insert(value, self.entries.len());
        self.entries.push(Entry {
            start,
            max_end: end.clone(),
            end,
            value,
        });
        self.dirty = true;
    }

    /// Removes the range of `value`; `false` if there was none.
    pub fn remove(&mut self, value: T) -> bool {
        let Some(at) = self.position.remove(&value) else {
            return false;
        };
        self.entries.swap_remove(at);
        if let Some(moved) = self.entries.get(at) {
            self.position.insert(moved.value, at);
        }
        self.dirty = true;
        true
    }

    /// Appends to `out` the value of every range containing `key`.
    pub fn stab(&mut self, key: &[u8], out: &mut Vec<T>) {
        if self.dirty {
            self.rebuild();
        }
        self.stab_in(0, self.entries.len(), key, out);
    }

    fn stab_in(&self, lo: usize, hi: usize, key: &[u8], out: &mut Vec<T>) {
        if lo >= hi {
            return;
        }
        let mid = lo + (hi - lo) / 2;
        let root = &self.entries[mid];
        if !root.max_end.above(key) {
            // Every range here ends at or before the key.
            return;
        }
        self.stab_in(lo, mid, key, out);
        if root.start.as_slice() <= key {
            if root.end.above(key) {
                out.push(root.value);
            }
            self.stab_in(mid + 1, hi, key, out);
        }
    }

    fn rebuild(&mut self) {
        self.entries.sort_by(|a, b| a.start.cmp(&b.start));
        for (at, entry) in self.entries.iter().enumerate() {
            self.position.insert(entry.value, at);
        }
        let len = self.entries.len();
        self.fill_max(0, len);
        self.dirty = false;
    }

    fn fill_max(&mut self, lo: usize, hi: usize) -> Option<End> {
        if lo >= hi {
            return None;
        }
        let mid = lo + (hi - lo) / 2;
        let mut max = self.entries[mid].end.clone();
        for child in [self.fill_max(lo, mid), self.fill_max(mid + 1, hi)]
            .into_iter()
            .flatten()
        {
            if child > max {
                max = child;
            }
        }
        self.entries[mid].max_end = max.clone();
        Some(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(ranges: &[(Vec<u8>, End, u32)], key: &[u8]) -> Vec<u32> {
        let mut hits: Vec<u32> = ranges
            .iter()
            .filter(|(s, e, _)| s.as_slice() <= key && e.above(key))
            .map(|(_, _, v)| *v)
            .collect();
        hits.sort_unstable();
        hits
    }

    #[test]
    fn stabbing_matches_a_scan_through_inserts_and_removes() {
        // A deterministic pseudo-random walk over short keys, checked against a scan.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let key = |n: u64| -> Vec<u8> {
            let len = 1 + (n % 3) as usize;
            (0..len)
                .map(|i| b'a' + ((n >> (i * 4)) % 6) as u8)
                .collect()
        };
        let mut index = IntervalIndex::new();
        let mut model: Vec<(Vec<u8>, End, u32)> = Vec::new();
        for step in 0..3000u32 {
            let r = next();
            if r % 5 == 0 && !model.is_empty() {
                let victim = model.swap_remove((r as usize / 5) % model.len());
                assert!(index.remove(victim.2));
            } else {
                let start = key(next());
                let end = if r % 7 == 0 {
                    End::Unbounded
                } else {
                    End::Before(key(next()))
                };
                index.insert(start.clone(), end.clone(), step);
                model.push((start, end, step));
            }
            if step % 10 == 0 {
                let probe = key(next());
                let mut got = Vec::new();
                index.stab(&probe, &mut got);
                got.sort_unstable();
                assert_eq!(got, brute(&model, &probe), "probe {probe:?} at step {step}");
            }
        }
    }

    #[test]
    fn prefix_and_from_key_ranges() {
        let mut index = IntervalIndex::new();
        index.insert(b"foo".to_vec(), End::Before(b"fop".to_vec()), 1);
        index.insert(b"a".to_vec(), End::Unbounded, 2);
        index.insert(b"zz".to_vec(), End::Before(b"zz".to_vec()), 3); // empty
        let mut got = Vec::new();
        index.stab(b"foo/bar", &mut got);
        got.sort_unstable();
        assert_eq!(got, vec![1, 2]);
        got.clear();
        index.stab(b"fop", &mut got);
        assert_eq!(got, vec![2]);
        got.clear();
        index.stab(b"0", &mut got);
        assert!(got.is_empty());
        got.clear();
        index.stab(b"zz", &mut got);
        assert_eq!(got, vec![2]);
    }
}
