//! The synced watchers, indexed by what they watch. Watchers of the same key, or of
//! the same range, share one entry: a thousand watchers of one prefix are one interval
//! in the [`IntervalIndex`], so matching an event costs a lookup per distinct key or
//! range, then a copy of the members' slot numbers.

use std::collections::HashMap;

use crate::interval::{End, IntervalIndex};

/// Watchers of one key (`end` None) or one range.
struct Group {
    key: Vec<u8>,
    end: Option<End>,
    /// Registry slots, in no particular order.
    members: Vec<usize>,
}

#[derive(Default)]
pub(crate) struct SyncedIndex {
    /// Groups by number; `None` for free numbers.
    groups: Vec<Option<Group>>,
    free_groups: Vec<usize>,
    keys: HashMap<Vec<u8>, usize>,
    ranges: HashMap<(Vec<u8>, End), usize>,
    intervals: IntervalIndex<usize>,
    /// By registry slot: the watcher's group and its place among the members.
    places: Vec<Option<(usize, usize)>>,
}

impl SyncedIndex {
    /// Adds the watcher in `slot` (replacing where it was).
    pub(crate) fn insert(&mut self, slot: usize, key: &[u8], end: Option<&End>) {
        self.remove(slot);
        let existing = match end {
            None => self.keys.get(key),
            Some(end) => self.ranges.get(&(key.to_vec(), end.clone())),
        };
        let group = match existing {
            Some(&group) => group,
            None => {
                let group = self.free_groups.pop().unwrap_or(self.groups.len());
                let entry = Group {
                    key: key.to_vec(),
                    end: end.cloned(),
                    members: Vec::new(),
                };
                if group == self.groups.len() {
                    self.groups.push(Some(entry));
                } else {
                    self.groups[group] = Some(entry);
                }
                match end {
                    None => {
                        self.keys.insert(key.to_vec(), group);
                    }
                    Some(end) => {
                        self.ranges.insert((key.to_vec(), end.clone()), group);
                        self.intervals.insert(key.to_vec(), end.clone(), group);
                    }
                }
                group
            }
        };
        let Some(entry) = self.groups[group].as_mut() else {
            return;
        };
        if self.places.len() <= slot {
            self.places.resize(slot + 1, None);
        }
        self.places[slot] = Some((group, entry.members.len()));
        entry.members.push(slot);
    }

    /// Takes the watcher in `slot` out; `false` if it was not in.
    pub(crate) fn remove(&mut self, slot: usize) -> bool {
        let Some((group, at)) = self.places.get_mut(slot).and_then(Option::take) else {
            return false;
        };
        let Some(entry) = self.groups[group].as_mut() else {
            return false;
        };
        entry.members.swap_remove(at);
        if let Some(&moved) = entry.members.get(at) {
            self.places[moved] = Some((group, at));
        }
        if entry.members.is_empty()
            && let Some(entry) = self.groups[group].take()
        {
            match entry.end {
                None => {
                    self.keys.remove(&entry.key);
                }
                Some(end) => {
                    self.ranges.remove(&(entry.key, end));
                    self.intervals.remove(group);
                }
            }
            self.free_groups.push(group);
        }
        true
    }

    /// Appends the slot of every watcher whose key or range holds `key`.
    pub(crate) fn matching(&mut self, key: &[u8], out: &mut Vec<usize>, groups: &mut Vec<usize>) {
        groups.clear();
        if let Some(&group) = self.keys.get(key) {
            groups.push(group);
        }
        self.intervals.stab(key, groups);
        for &group in groups.iter() {
            if let Some(entry) = &self.groups[group] {
                out.extend_from_slice(&entry.members);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matching(index: &mut SyncedIndex, key: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        index.matching(key, &mut out, &mut Vec::new());
        out.sort_unstable();
        out
    }

    #[test]
    fn watchers_of_one_target_share_a_group_and_leave_it_cleanly() {
        let mut index = SyncedIndex::default();
        let prefix = End::Before(b"p0".to_vec());
        for slot in 0..5 {
            index.insert(slot, b"p/", Some(&prefix));
        }
        index.insert(5, b"p/a", None);
        index.insert(6, b"p/a", None);
        index.insert(7, b"", Some(&End::Unbounded));
        assert_eq!(index.intervals.len(), 2);
        assert_eq!(matching(&mut index, b"p/a"), vec![0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(matching(&mut index, b"p/b"), vec![0, 1, 2, 3, 4, 7]);
        // Removing from the middle keeps every other member findable.
        assert!(index.remove(1));
        assert!(!index.remove(1));
        assert!(index.remove(4));
        assert!(index.remove(5));
        assert_eq!(matching(&mut index, b"p/a"), vec![0, 2, 3, 6, 7]);
        for slot in [0, 2, 3] {
            assert!(index.remove(slot));
        }
        // The empty group is gone from the interval index; its number is reused.
        assert_eq!(index.intervals.len(), 1);
        assert_eq!(matching(&mut index, b"p/b"), vec![7]);
        index.insert(1, b"q", Some(&End::Before(b"r".to_vec())));
        assert_eq!(index.groups.len(), 3);
        assert_eq!(matching(&mut index, b"qq"), vec![1, 7]);
        // Re-inserting a slot moves it.
        index.insert(1, b"p/a", None);
        assert_eq!(matching(&mut index, b"qq"), vec![7]);
        assert_eq!(matching(&mut index, b"p/a"), vec![1, 6, 7]);
    }
}
