//! The in-memory key index: for every key, the revisions at which it changed.
//!
//! etcd keeps, per key, "generations" (create .. tombstone) of revisions. Here a
//! key's history is a flat, ascending list of [`Point`]s; a generation is the run
//! of puts up to a tombstone. Every point carries the `create_revision` and
//! `version` the key had at that point, so writers never read the backend to
//! compute them. Values are never held here.
//!
//! Memory matters (one entry per key, a million keys is normal): the common case,
//! a live key whose only retained revision is its latest put, is stored inline
//! ([`Entry::Single`], 32 bytes) with no allocation besides the key itself.

use std::collections::HashSet;
use std::ops::ControlFlow;

use crate::key_map::KeyMap;

use crate::revision::Revision;

/// One change of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Point {
    pub main: i64,
    /// `create_revision` of the key after this change (0 for a tombstone).
    pub created_main: i64,
    /// `version` of the key after this change (0 for a tombstone).
    pub version: i64,
    pub sub: u32,
    pub tombstone: bool,
}

impl Point {
    pub fn revision(&self) -> Revision {
        Revision::new(self.main, i64::from(self.sub))
    }
}

/// A key's retained history.
#[derive(Debug, Clone)]
enum Entry {
    /// A live key with exactly one retained revision (the usual state after
    /// compaction, and of keys written once).
    Single(Point),
    /// Ascending, non-empty.
    Multi(Vec<Point>),
}

impl Entry {
    fn points(&self) -> &[Point] {
        match self {
            Entry::Single(p) => std::slice::from_ref(p),
            Entry::Multi(v) => v,
        }
    }

    /// The newest point with `main <= rev`.
    fn at(&self, rev: i64) -> Option<&Point> {
        let points = self.points();
        let n = points.partition_point(|p| p.main <= rev);
        n.checked_sub(1).and_then(|i| points.get(i))
    }

    fn latest(&self) -> Option<&Point> {
        self.points().last()
    }

    fn push(&mut self, point: Point) {
        match self {
            Entry::Single(p) => *self = Entry::Multi(vec![*p, point]),
            Entry::Multi(v) => v.push(point),
        }
    }

    /// Normalizes after removals: `None` if nothing is left.
    fn from_points(mut points: Vec<Point>) -> Option<Entry> {
        match points.as_slice() {
            [] => None,
            [single] if !single.tombstone => Some(Entry::Single(*single)),
            _ => {
                points.shrink_to_fit();
                Some(Entry::Multi(points))
            }
        }
    }
}

/// Which keys a request addresses, with etcd's `range_end` conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRange<'a> {
    /// `range_end` empty: exactly `key`.
    Single(&'a [u8]),
    /// `[start, end)`; `end == None` means no upper bound (`range_end == "\0"`).
    Span {
        /// Inclusive start.
        start: &'a [u8],
        /// Exclusive end; `None` for "every key from `start` on".
        end: Option<&'a [u8]>,
    },
}

impl<'a> KeyRange<'a> {
    /// Interprets etcd's `(key, range_end)` pair.
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        match range_end {
            [] => KeyRange::Single(key),
            [0] => KeyRange::Span {
                start: key,
                end: None,
            },
            end => KeyRange::Span {
                start: key,
                end: Some(end),
            },
        }
    }

    /// Whether `key` falls in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        match *self {
            KeyRange::Single(k) => k == key,
            KeyRange::Span { start, end } => key >= start && end.is_none_or(|e| key < e),
        }
    }

    /// Whether the two ranges share a key.
    pub fn overlaps(&self, other: &KeyRange<'_>) -> bool {
        let (a_start, a_end) = self.bounds();
        let (b_start, b_end) = other.bounds();
        // [a_start, a_end) and [b_start, b_end) intersect iff each starts before the other ends.
        let a_before_b_end = b_end
            .as_ref()
            .is_none_or(|e| a_start.as_slice() < e.as_slice());
        let b_before_a_end = a_end
            .as_ref()
            .is_none_or(|e| b_start.as_slice() < e.as_slice());
        a_before_b_end && b_before_a_end
    }

    /// Half-open bounds; a single key `k` is `[k, k\0)`.
    fn bounds(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        match *self {
            KeyRange::Single(k) => {
                let mut end = k.to_vec();
                end.push(0);
                (k.to_vec(), Some(end))
            }
            KeyRange::Span { start, end } => (start.to_vec(), end.map(<[u8]>::to_vec)),
        }
    }
}

/// Key → retained history. Not synchronized: the store wraps it in a lock.
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    map: KeyMap<Entry>,
}

impl KeyIndex {
    pub fn key_count(&self) -> usize {
        self.map.len()
    }

    /// Keys whose newest revision is not a deletion. Walks the index.
    pub fn live_key_count(&self) -> usize {
        self.map
            .values()
            .filter(|e| e.latest().is_some_and(|p| !p.tombstone))
            .count()
    }

    /// Heap bytes of the index, keys included.
    pub fn heap_bytes(&self) -> usize {
        let histories: usize = self
            .map
            .values()
            .map(|e| match e {
                Entry::Single(_) => 0,
                Entry::Multi(v) => v.capacity() * std::mem::size_of::<Point>(),
            })
            .sum();
        self.map.heap_bytes() + histories
    }

    /// Makes the index as dense as possible (after bulk loading).
    pub fn repack(&mut self) {
        self.map.repack();
    }

    /// The live version of `key` as of revision `rev`, if any.
    pub fn visible(&self, key: &[u8], rev: i64) -> Option<Point> {
        self.map
            .get(key)
            .and_then(|e| e.at(rev))
            .filter(|p| !p.tombstone)
            .copied()
    }

    /// [`KeyIndex::visible`] without necessarily comparing `key`'s bytes:
    /// `Some((point, false))` is `key`'s point if the index holds `key` at
    /// all, and may otherwise be another key's, so the caller must confirm the
    /// key with the record it reads at `point` (stored key-values carry their
    /// key). `Some((point, true))` is confirmed. See [`KeyMap::get_by_tag`].
    pub fn visible_unconfirmed(&self, key: &[u8], rev: i64) -> Option<(Point, bool)> {
        let (entry, confirmed) = self.map.get_by_tag(key)?;
        entry
            .at(rev)
            .filter(|p| !p.tombstone)
            .map(|p| (*p, confirmed))
    }

    /// The newest change of `key`, if it is a put (the writer's view).
    pub fn latest_live(&self, key: &[u8]) -> Option<Point> {
        self.map
            .get(key)
            .and_then(Entry::latest)
            .filter(|p| !p.tombstone)
            .copied()
    }

    /// Calls `visit` for every key of `range` that is live at `rev`, in key order,
    /// until it returns `false`.
    pub fn for_each_visible(
        &self,
        range: KeyRange<'_>,
        rev: i64,
        mut visit: impl FnMut(&[u8], Point) -> bool,
    ) {
        match range {
            KeyRange::Single(key) => {
                if let Some(p) = self.visible(key, rev) {
                    visit(key, p);
                }
            }
            KeyRange::Span { start, end } => {
                if end.is_some_and(|e| e <= start) {
                    return;
                }
                self.map.visit_range(start, end, |key, entry| {
                    match entry.at(rev).filter(|p| !p.tombstone) {
                        Some(p) if !visit(key, *p) => ControlFlow::Break(()),
                        _ => ControlFlow::Continue(()),
                    }
                });
            }
        }
    }

    /// Records a change; `point` must be newer than every retained point of `key`.
    pub fn record(&mut self, key: &[u8], point: Point) {
        match self.map.get_mut(key) {
            Some(entry) => entry.push(point),
            None if !point.tombstone => {
                self.map.insert(key, Entry::Single(point));
            }
            // A tombstone of a key we do not know has nothing to delete; callers
            // never produce one, and keeping it out keeps the index small.
            None => {}
        }
    }

    /// Records a put at `(main, sub)` in one lookup, deriving `create_revision` and
    /// `version` from the key's newest change. Returns the new point and the
    /// key's previous live point, if any.
    pub fn record_put(&mut self, key: &[u8], main: i64, sub: u32) -> (Point, Option<Point>) {
        let next = |prev: Option<Point>| Point {
            main,
            created_main: prev.map_or(main, |p| p.created_main),
            version: prev.map_or(1, |p| p.version + 1),
            sub,
            tombstone: false,
        };
        if let Some(entry) = self.map.get_mut(key) {
            let prev = entry.latest().filter(|p| !p.tombstone).copied();
            let point = next(prev);
            entry.push(point);
            return (point, prev);
        }
        let point = next(None);
        self.map.insert(key, Entry::Single(point));
        (point, None)
    }

    /// Forgets every change of `key` newer than main revision `rev` (an aborted
    /// write).
    pub fn rollback_above(&mut self, key: &[u8], rev: i64) {
        let Some(entry) = self.map.get_mut(key) else {
            return;
        };
        if entry.latest().is_some_and(|p| p.main <= rev) {
            return;
        }
        let kept: Vec<Point> = entry
            .points()
            .iter()
            .filter(|p| p.main <= rev)
            .copied()
            .collect();
        match Entry::from_points(kept) {
            Some(e) => *entry = e,
            None => {
                self.map.remove(key);
            }
        }
    }

    /// Drops history at or below `rev`, keeping each key's newest live revision
    /// at or below it. The revisions dropped (with their tombstone flags) are
    /// appended to `dead` so the backend can delete them.
    pub fn compact(&mut self, rev: i64, dead: &mut Vec<(Revision, bool)>) {
        self.map.retain(|_, entry| {
            let Entry::Multi(points) = entry else {
                // A single live revision is always the one to keep.
                return true;
            };
            let below = points.partition_point(|p| p.main <= rev);
            let Some(newest_below) = below.checked_sub(1).and_then(|i| points.get(i)) else {
                return true;
            };
            let drop_until = if newest_below.tombstone {
                below
            } else {
                below - 1
            };
            if drop_until == 0 {
                return true;
            }
            dead.extend(
                points
                    .drain(..drop_until)
                    .map(|p| (p.revision(), p.tombstone)),
            );
            match Entry::from_points(std::mem::take(points)) {
                Some(e) => {
                    *entry = e;
                    true
                }
                None => false,
            }
        });
    }

    /// The revisions a compaction at `rev` would keep at or below `rev`: each
    /// key's newest live revision at or below it (etcd's `keep` set for HashKV).
    pub fn keep_set(&self, rev: i64) -> HashSet<Revision> {
        self.map
            .values()
            .filter_map(|e| e.at(rev))
            .filter(|p| !p.tombstone)
            .map(Point::revision)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(main: i64, created: i64, version: i64) -> Point {
        Point {
            main,
            created_main: created,
            version,
            sub: 0,
            tombstone: false,
        }
    }

    fn tomb(main: i64) -> Point {
        Point {
            main,
            created_main: 0,
            version: 0,
            sub: 0,
            tombstone: true,
        }
    }

    #[test]
    fn entry_is_compact() {
        assert!(
            std::mem::size_of::<Entry>() <= 32,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }

    #[test]
    fn history_visibility_and_compaction() {
        let mut index = KeyIndex::default();
        index.record(b"a", put(2, 2, 1));
        index.record(b"a", put(4, 2, 2));
        index.record(b"a", tomb(6));
        index.record(b"a", put(8, 8, 1));
        index.record(b"b", put(3, 3, 1));

        assert_eq!(index.visible(b"a", 1), None);
        assert_eq!(index.visible(b"a", 3).map(|p| p.main), Some(2));
        assert_eq!(index.visible(b"a", 5).map(|p| p.version), Some(2));
        assert_eq!(index.visible(b"a", 7), None);
        assert_eq!(index.visible(b"a", 9).map(|p| p.created_main), Some(8));

        let mut seen = Vec::new();
        index.for_each_visible(KeyRange::new(b"a", b"\0"), 4, |k, p| {
            seen.push((k.to_vec(), p.main));
            true
        });
        assert_eq!(seen, vec![(b"a".to_vec(), 4), (b"b".to_vec(), 3)]);

        let keep = index.keep_set(5);
        assert!(keep.contains(&Revision::new(4, 0)) && keep.contains(&Revision::new(3, 0)));
        assert_eq!(keep.len(), 2);

        let mut dead = Vec::new();
        index.compact(4, &mut dead);
        assert_eq!(dead, vec![(Revision::new(2, 0), false)]);
        assert_eq!(index.visible(b"a", 4).map(|p| p.main), Some(4));

        dead.clear();
        index.compact(7, &mut dead);
        assert_eq!(
            dead,
            vec![(Revision::new(4, 0), false), (Revision::new(6, 0), true)]
        );
        assert_eq!(index.visible(b"a", 7), None);
        assert_eq!(index.visible(b"a", 8).map(|p| p.main), Some(8));
        assert!(matches!(index.map.get(b"a"), Some(Entry::Single(_))));

        index.record(b"b", tomb(9));
        dead.clear();
        index.compact(9, &mut dead);
        assert_eq!(
            dead,
            vec![(Revision::new(3, 0), false), (Revision::new(9, 0), true)]
        );
        assert_eq!(index.key_count(), 1);
    }

    #[test]
    fn single_version_keys_cost_little_beyond_the_key() {
        // The memory goal: well under 150 bytes per key besides the key itself.
        let n = 50_000u64;
        let key = |i: u64| format!("/registry/pods/{:08}", i.wrapping_mul(0x9E37_79B9) % n);
        for shuffled in [false, true] {
            let mut index = KeyIndex::default();
            for i in 0..n {
                let k = if shuffled {
                    key(i)
                } else {
                    format!("/registry/pods/{i:08}")
                };
                index.record_put(k.as_bytes(), i64::try_from(i).unwrap_or(0) + 1, 0);
            }
            index.repack();
            let per_key = index.heap_bytes() as f64 / n as f64 - key(0).len() as f64;
            assert!(
                per_key < 48.0,
                "shuffled={shuffled}: {per_key:.1} B per key"
            );
        }
    }

    #[test]
    fn rollback_restores_previous_state() {
        let mut index = KeyIndex::default();
        index.record(b"a", put(2, 2, 1));
        index.record(b"a", put(3, 2, 2));
        index.record(b"a", tomb(4));
        index.record(b"n", put(4, 4, 1));
        index.rollback_above(b"a", 2);
        index.rollback_above(b"n", 3);
        assert!(matches!(index.map.get(b"a"), Some(Entry::Single(p)) if p.main == 2));
        assert_eq!(index.key_count(), 1);
        assert_eq!(index.latest_live(b"a").map(|p| p.version), Some(1));
    }

    #[test]
    fn ranges_overlap_like_intervals() {
        let single = KeyRange::new(b"b", b"");
        assert!(single.overlaps(&KeyRange::new(b"a", b"c")));
        assert!(!single.overlaps(&KeyRange::new(b"c", b"d")));
        assert!(!single.overlaps(&KeyRange::new(b"a", b"b")));
        assert!(single.overlaps(&KeyRange::new(b"b", b"\0")));
        assert!(KeyRange::new(b"a", b"c").overlaps(&KeyRange::new(b"b", b"\0")));
        assert!(!KeyRange::new(b"a", b"b").overlaps(&KeyRange::new(b"b", b"c")));
        assert!(KeyRange::new(b"a", b"\0").contains(b"zzz"));
        assert!(!KeyRange::new(b"b", b"a").contains(b"b"));
    }
}
