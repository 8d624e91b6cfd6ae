//! A memory-dense ordered map from byte keys to small values, for the key
//! index.
//!
//! A `BTreeMap<Box<[u8]>, V>` spends, per key, a 16-byte box pointer, a heap
//! allocation for the key, and about half of every node (nodes split half-full
//! and sequential inserts leave them so). Here keys live in sorted chunks of at
//! most [`CHUNK_MAX`] entries; a chunk stores its keys back to back in one byte
//! buffer with a `u32` end offset each, and its values in a parallel `Vec`.
//! Appends past the last key fill chunks completely; other inserts split a full
//! chunk in two; vectors grow in small exact steps so little capacity idles.
//! [`KeyMap::repack`] rebuilds everything dense (after the start-up rebuild,
//! which inserts in revision order, not key order).
//!
//! Finding a key is on every get and put. A binary search inside a chunk
//! touches a new cache line at nearly every probe, and with a million keys
//! those lines are cold: so each chunk also keeps 16 bits of a hash of every
//! key, and a lookup scans those (256 bytes, read in order) and compares only
//! the keys whose bits match. Random lookups over 1,000,000 keys went from
//! ~1.4-4 µs to ~1.2-1.8 µs here (the spread is the machine's load), at 2 bytes
//! a key. The chunk itself is still found by binary search over the
//! directory of first keys (ranges and inserts need the order anyway), done
//! on 8-byte words of those keys (see [`Directory`]).

use std::ops::ControlFlow;

/// Entries per chunk: inserting into a chunk moves at most this many.
const CHUNK_MAX: usize = 128;
/// Repacking fills chunks to this, leaving room for inserts.
const REPACK_FILL: usize = CHUNK_MAX * 7 / 8;

#[derive(Debug, Clone)]
struct Chunk<V> {
    /// The chunk's keys, in order, back to back.
    bytes: Vec<u8>,
    /// `ends[i]` is where key `i` ends in `bytes` (it starts where `i - 1` ends).
    ends: Vec<u32>,
    /// [`key_tag`] of every key: finding a known key scans these instead of
    /// binary-searching the keys, touching fewer cache lines.
    tags: Vec<u16>,
    values: Vec<V>,
}

/// Tags compared at once by [`Chunk::find`].
const TAG_BLOCK: usize = 16;

/// Bit `i` is set when `block[i] == tag` (`block` has at most 32 tags).
fn tag_hits(block: &[u16], tag: u16) -> u32 {
    block
        .iter()
        .enumerate()
        .fold(0u32, |m, (i, &t)| m | (u32::from(t == tag) << i))
}

/// 16 bits of a hash of `key`.
pub(crate) fn key_tag(key: &[u8]) -> u16 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut hash = key.len() as u64;
    let mut words = key.chunks_exact(8);
    for word in &mut words {
        let word = u64::from_le_bytes(<[u8; 8]>::try_from(word).unwrap_or_default());
        hash = (hash ^ word).wrapping_mul(K).rotate_left(31);
    }
    let mut tail = [0u8; 8];
    let rest = words.remainder();
    if let Some(dst) = tail.get_mut(..rest.len()) {
        dst.copy_from_slice(rest);
    }
    hash = (hash ^ u64::from_le_bytes(tail)).wrapping_mul(K);
    (hash >> 48) as u16
}

/// Grows `v` by a small exact step when full, instead of doubling.
fn reserve_small<T>(v: &mut Vec<T>, additional: usize) {
    if v.capacity() - v.len() < additional {
        v.reserve_exact(additional.max(v.len() / 8).max(4));
    }
}

impl<V> Chunk<V> {
    fn empty() -> Self {
        Self {
            bytes: Vec::new(),
            ends: Vec::new(),
            tags: Vec::new(),
            values: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.values.len()
    }

    fn start(&self, i: usize) -> usize {
        i.checked_sub(1)
            .and_then(|p| self.ends.get(p))
            .map_or(0, |&e| e as usize)
    }

    fn key(&self, i: usize) -> &[u8] {
        let end = self.ends.get(i).map_or(0, |&e| e as usize);
        self.bytes.get(self.start(i)..end).unwrap_or_default()
    }

    fn first_key(&self) -> &[u8] {
        self.key(0)
    }

    /// `Ok(i)` if key `i` equals `key`, else `Err(insertion point)`.
    fn search(&self, key: &[u8]) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key(mid).cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// The position of `key` by its tag.
    fn find(&self, key: &[u8]) -> Option<usize> {
        let tag = key_tag(key);
        let matches = |block: &[u16]| tag_hits(block, tag);
        let check = |base: usize, mut hits: u32| {
            while hits != 0 {
                let i = base + hits.trailing_zeros() as usize;
                if self.key(i) == key {
                    return Some(i);
                }
                hits &= hits - 1;
            }
            None
        };
        // Fixed-size blocks compile to a vector compare and a mask.
        let mut blocks = self.tags.chunks_exact(TAG_BLOCK);
        let mut base = 0;
        for block in &mut blocks {
            let block: &[u16; TAG_BLOCK] = block.try_into().ok()?;
            if let Some(i) = check(base, matches(block)) {
                return Some(i);
            }
            base += TAG_BLOCK;
        }
        check(base, matches(blocks.remainder()))
    }

    /// Where `key` is by its tag alone, when that is enough: see
    /// [`KeyMap::get_by_tag`].
    fn find_by_tag(&self, key: &[u8]) -> Option<(usize, bool)> {
        let tag = key_tag(key);
        let mut first = None;
        let mut matched = 0;
        let mut note = |base: usize, hits: u32| {
            if hits != 0 {
                first = first.or(Some(base + hits.trailing_zeros() as usize));
                matched += hits.count_ones();
            }
        };
        let mut blocks = self.tags.chunks_exact(TAG_BLOCK);
        let mut base = 0;
        for block in &mut blocks {
            let block: &[u16; TAG_BLOCK] = block.try_into().ok()?;
            note(base, tag_hits(block, tag));
            base += TAG_BLOCK;
        }
        note(base, tag_hits(blocks.remainder(), tag));
        match matched {
            0 => None,
            1 => first.map(|i| (i, false)),
            _ => self.find(key).map(|i| (i, true)),
        }
    }

    fn insert(&mut self, i: usize, key: &[u8], value: V) {
        let at = self.start(i);
        let len = u32::try_from(key.len()).unwrap_or(u32::MAX);
        reserve_small(&mut self.bytes, key.len());
        reserve_small(&mut self.ends, 1);
        reserve_small(&mut self.tags, 1);
        reserve_small(&mut self.values, 1);
        self.bytes.splice(at..at, key.iter().copied());
        for end in self.ends.get_mut(i..).unwrap_or_default() {
            *end += len;
        }
        self.ends
            .insert(i, u32::try_from(at).unwrap_or(u32::MAX) + len);
        self.tags.insert(i, key_tag(key));
        self.values.insert(i, value);
    }

    fn remove(&mut self, i: usize) -> V {
        let (start, end) = (self.start(i), self.ends[i] as usize);
        let len = u32::try_from(end - start).unwrap_or(u32::MAX);
        self.bytes.drain(start..end);
        self.ends.remove(i);
        for e in self.ends.get_mut(i..).unwrap_or_default() {
            *e -= len;
        }
        self.tags.remove(i);
        self.values.remove(i)
    }

    /// Moves entries `from..` into a new chunk.
    fn split_off(&mut self, from: usize) -> Chunk<V> {
        let cut = self.start(from);
        let bytes = self.bytes.split_off(cut);
        let cut = u32::try_from(cut).unwrap_or(u32::MAX);
        let ends = self
            .ends
            .split_off(from)
            .into_iter()
            .map(|e| e - cut)
            .collect();
        let tags = self.tags.split_off(from);
        let values = self.values.split_off(from);
        self.bytes.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.tags.shrink_to_fit();
        self.values.shrink_to_fit();
        Chunk {
            bytes,
            ends,
            tags,
            values,
        }
    }

    fn push(&mut self, key: &[u8], value: V) {
        self.bytes.extend_from_slice(key);
        self.ends
            .push(u32::try_from(self.bytes.len()).unwrap_or(u32::MAX));
        self.tags.push(key_tag(key));
        self.values.push(value);
    }
}

/// The first key of every chunk, packed like a chunk's keys, and for each
/// the 8 bytes that follow the prefix all of them share, as a big-endian
/// word. Finding a key's chunk is on every lookup: a binary search over the
/// words compares integers in one small array instead of calling `memcmp` on
/// keys whose first bytes (`/registry/...`) are all alike, and full keys are
/// compared only among entries whose words tie.
#[derive(Debug, Clone)]
struct Directory {
    keys: Chunk<()>,
    /// `words[i]` is [`word_after`] of key `i` and `shared`.
    words: Vec<u64>,
    /// Every key starts with the first `shared` bytes of key 0. Only ever
    /// shrinks (when a key without that prefix arrives), so removals keep it
    /// true without recomputing words.
    shared: usize,
}

/// Bytes `skip..skip + 8` of `key` as a big-endian word, zero-padded. Among
/// keys with the same first `skip` bytes, a smaller word means a smaller key;
/// equal words decide nothing.
fn word_after(key: &[u8], skip: usize) -> u64 {
    let rest = key.get(skip..).unwrap_or_default();
    let mut word = [0u8; 8];
    let n = rest.len().min(8);
    if let (Some(dst), Some(src)) = (word.get_mut(..n), rest.get(..n)) {
        dst.copy_from_slice(src);
    }
    u64::from_be_bytes(word)
}

fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Default for Directory {
    fn default() -> Self {
        Self {
            keys: Chunk::empty(),
            words: Vec::new(),
            shared: 0,
        }
    }
}

impl Directory {
    /// A directory of `keys`, which must be in ascending order.
    fn of<'k>(keys: impl Iterator<Item = &'k [u8]>) -> Self {
        let mut dir = Self::default();
        for key in keys {
            dir.keys.push(key, ());
        }
        dir.keys.bytes.shrink_to_fit();
        dir.keys.ends.shrink_to_fit();
        // Sorted keys share exactly what their first and last share.
        let last = dir.keys.len().saturating_sub(1);
        dir.shared = common_prefix_len(dir.keys.key(0), dir.keys.key(last));
        dir.recompute_words();
        dir
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.len()
    }

    fn heap_bytes(&self) -> usize {
        self.keys.bytes.capacity()
            + self.keys.ends.capacity() * std::mem::size_of::<u32>()
            + self.words.capacity() * std::mem::size_of::<u64>()
    }

    fn recompute_words(&mut self) {
        let shared = self.shared;
        self.words = (0..self.keys.len())
            .map(|i| word_after(self.keys.key(i), shared))
            .collect();
    }

    /// Narrows `shared` so that `key` has the prefix too.
    fn admit(&mut self, key: &[u8]) {
        if self.keys.len() == 0 {
            self.shared = key.len();
            return;
        }
        let prefix = self.keys.key(0).get(..self.shared).unwrap_or_default();
        let shared = common_prefix_len(prefix, key);
        if shared < self.shared {
            self.shared = shared;
            self.recompute_words();
        }
    }

    fn push(&mut self, key: &[u8]) {
        self.admit(key);
        self.keys.push(key, ());
        self.words.push(word_after(key, self.shared));
    }

    fn insert(&mut self, i: usize, key: &[u8]) {
        self.admit(key);
        self.keys.insert(i, key, ());
        self.words.insert(i, word_after(key, self.shared));
    }

    fn remove(&mut self, i: usize) {
        self.keys.remove(i);
        self.words.remove(i);
    }

    /// The position of the last key `<= key`; `None` if every key is greater
    /// (or there are none).
    fn last_at_or_below(&self, key: &[u8]) -> Option<usize> {
        let n = self.keys.len();
        let prefix = self.keys.key(0).get(..self.shared).unwrap_or_default();
        let at_or_below = match key.get(..prefix.len()) {
            Some(head) if head == prefix => {
                let word = word_after(key, prefix.len());
                let first_tie = self.words.partition_point(|&w| w < word);
                let rest = self.words.get(first_tie..).unwrap_or_default();
                // Chunks' first keys seldom share their word: a look at the
                // next few words usually ends the ties without a second
                // search over the rest of the directory.
                let ties = match rest.iter().take(4).position(|&w| w != word) {
                    Some(ties) => ties,
                    None => rest.partition_point(|&w| w == word),
                };
                // Only keys whose words tie need comparing in full.
                let (mut lo, mut hi) = (first_tie, first_tie + ties);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if self.keys.key(mid) <= key {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                }
                lo
            }
            // Every key starts with `prefix`: all of them are above a key that
            // sorts before it, and below one that sorts after it without it.
            _ if key < prefix => 0,
            _ => n,
        };
        at_or_below.checked_sub(1)
    }
}

/// Ordered map of byte keys; see the module doc.
#[derive(Debug, Clone)]
pub(crate) struct KeyMap<V> {
    chunks: Vec<Chunk<V>>,
    /// The first key of every chunk: see [`Directory`].
    directory: Directory,
    len: usize,
}

impl<V> Default for KeyMap<V> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            directory: Directory::default(),
            len: 0,
        }
    }
}

impl<V> KeyMap<V> {
    pub fn len(&self) -> usize {
        self.len
    }

    /// The chunk that holds `key` or would: the last one whose first key is
    /// `<= key` (or the first chunk).
    fn chunk_for(&self, key: &[u8]) -> usize {
        self.directory.last_at_or_below(key).unwrap_or(0)
    }

    /// Re-reads chunk `c`'s first key into the directory.
    fn refresh_directory(&mut self, c: usize) {
        if let Some(chunk) = self.chunks.get(c) {
            self.directory.remove(c);
            self.directory.insert(c, chunk.first_key());
        }
    }

    fn rebuild_directory(&mut self) {
        self.directory = Directory::of(self.chunks.iter().map(Chunk::first_key));
    }

    pub fn get(&self, key: &[u8]) -> Option<&V> {
        let chunk = self.chunks.get(self.chunk_for(key))?;
        chunk.find(key).and_then(|i| chunk.values.get(i))
    }

    /// [`KeyMap::get`] that may leave the key's bytes unread: `Some((v,
    /// true))` is `key`'s value; `Some((v, false))` is the value of the one key
    /// whose tag is `key`'s in the chunk where `key` would be, so it is `key`'s
    /// value if the map holds `key` at all, and the caller must confirm the key
    /// some other way. Reading a key's bytes costs a cache miss or two that a
    /// caller who reads the value's record anyway need not pay.
    pub fn get_by_tag(&self, key: &[u8]) -> Option<(&V, bool)> {
        let chunk = self.chunks.get(self.chunk_for(key))?;
        let (i, confirmed) = chunk.find_by_tag(key)?;
        chunk.values.get(i).map(|v| (v, confirmed))
    }

    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let c = self.chunk_for(key);
        let chunk = self.chunks.get_mut(c)?;
        let i = chunk.find(key)?;
        chunk.values.get_mut(i)
    }

    /// Inserts or replaces.
    pub fn insert(&mut self, key: &[u8], value: V) {
        if self.chunks.is_empty() {
            let mut chunk = Chunk::empty();
            chunk.push(key, value);
            self.chunks.push(chunk);
            self.directory.push(key);
            self.len = 1;
            return;
        }
        let c = self.chunk_for(key);
        let last = self.chunks.len() - 1;
        let Some(chunk) = self.chunks.get_mut(c) else {
            return;
        };
        let i = match chunk.search(key) {
            Ok(i) => {
                if let Some(slot) = chunk.values.get_mut(i) {
                    *slot = value;
                }
                return;
            }
            Err(i) => i,
        };
        self.len += 1;
        if chunk.len() < CHUNK_MAX {
            chunk.insert(i, key, value);
            if i == 0 {
                self.refresh_directory(c);
            }
            return;
        }
        if c == last && i == chunk.len() {
            // Appending past the largest key: start a fresh chunk, keep this one
            // full. Appends tend to continue, so size it for a full chunk.
            let mut fresh = Chunk {
                bytes: Vec::with_capacity(chunk.bytes.len()),
                ends: Vec::with_capacity(CHUNK_MAX),
                tags: Vec::with_capacity(CHUNK_MAX),
                values: Vec::with_capacity(CHUNK_MAX),
            };
            fresh.push(key, value);
            self.chunks.push(fresh);
            self.directory.push(key);
            return;
        }
        let mut upper = chunk.split_off(CHUNK_MAX / 2);
        if i <= CHUNK_MAX / 2 {
            chunk.insert(i, key, value);
        } else {
            upper.insert(i - CHUNK_MAX / 2, key, value);
        }
        self.directory.insert(c + 1, upper.first_key());
        self.chunks.insert(c + 1, upper);
        if i == 0 {
            self.refresh_directory(c);
        }
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<V> {
        let c = self.chunk_for(key);
        let chunk = self.chunks.get_mut(c)?;
        let i = chunk.search(key).ok()?;
        let value = chunk.remove(i);
        if chunk.len() == 0 {
            self.chunks.remove(c);
            self.directory.remove(c);
        } else if i == 0 {
            self.refresh_directory(c);
        }
        self.len -= 1;
        Some(value)
    }

    /// Visits entries with `start <= key < end` (`end == None`: no bound) in
    /// order until `visit` breaks.
    pub fn visit_range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        mut visit: impl FnMut(&[u8], &V) -> ControlFlow<()>,
    ) {
        let first = self.chunk_for(start);
        let mut from = self
            .chunks
            .get(first)
            .map_or(0, |c| c.search(start).unwrap_or_else(|i| i));
        for chunk in self.chunks.get(first..).unwrap_or_default() {
            for (i, value) in chunk.values.iter().enumerate().skip(from) {
                let key = chunk.key(i);
                if end.is_some_and(|e| key >= e) {
                    return;
                }
                if visit(key, value).is_break() {
                    return;
                }
            }
            from = 0;
        }
    }

    /// Heap bytes held by the map itself (not by what the values own).
    pub fn heap_bytes(&self) -> usize {
        let chunk = |c: &Chunk<V>| {
            c.bytes.capacity()
                + c.ends.capacity() * std::mem::size_of::<u32>()
                + c.tags.capacity() * std::mem::size_of::<u16>()
                + c.values.capacity() * std::mem::size_of::<V>()
        };
        self.chunks.iter().map(chunk).sum::<usize>()
            + self.chunks.capacity() * std::mem::size_of::<Chunk<V>>()
            + self.directory.heap_bytes()
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.chunks.iter().flat_map(|c| c.values.iter())
    }

    /// Keeps the entries for which `keep` returns true (it may change them).
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8], &mut V) -> bool) {
        let mut removed = 0usize;
        for chunk in &mut self.chunks {
            let mut i = 0;
            while i < chunk.len() {
                let start = chunk.start(i);
                let end = chunk.ends.get(i).map_or(start, |&e| e as usize);
                let (Some(key), Some(value)) =
                    (chunk.bytes.get(start..end), chunk.values.get_mut(i))
                else {
                    break;
                };
                if keep(key, value) {
                    i += 1;
                } else {
                    chunk.remove(i);
                    removed += 1;
                }
            }
        }
        self.len -= removed;
        self.chunks.retain(|c| c.len() > 0);
        if removed * 8 > self.len {
            self.repack();
        } else {
            self.rebuild_directory();
        }
    }

    /// Rebuilds all chunks densely (7/8 full, exact capacities).
    pub fn repack(&mut self) {
        let old = std::mem::take(&mut self.chunks);
        let mut current = Chunk::empty();
        for mut chunk in old {
            let values = std::mem::take(&mut chunk.values);
            for (i, value) in values.into_iter().enumerate() {
                if current.len() == REPACK_FILL {
                    self.chunks
                        .push(std::mem::replace(&mut current, Chunk::empty()));
                }
                current.push(chunk.key(i), value);
            }
        }
        if current.len() > 0 {
            self.chunks.push(current);
        }
        for chunk in &mut self.chunks {
            chunk.bytes.shrink_to_fit();
            chunk.ends.shrink_to_fit();
            chunk.tags.shrink_to_fit();
            chunk.values.shrink_to_fit();
        }
        self.chunks.shrink_to_fit();
        self.rebuild_directory();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::prelude::*;
    use rand_chacha::ChaCha8Rng;
    use std::collections::BTreeMap;

    fn contents(map: &KeyMap<u64>) -> Vec<(Vec<u8>, u64)> {
        let mut out = Vec::new();
        map.visit_range(b"", None, |k, v| {
            out.push((k.to_vec(), *v));
            ControlFlow::Continue(())
        });
        out
    }

    #[test]
    fn behaves_like_a_btreemap() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut map = KeyMap::default();
        let mut model = BTreeMap::new();
        for step in 0..20_000u64 {
            let key: Vec<u8> = format!("k{}", rng.random_range(0..3000)).into_bytes();
            match rng.random_range(0..10) {
                0..=5 => {
                    map.insert(&key, step);
                    model.insert(key, step);
                }
                6..=7 => assert_eq!(map.remove(&key), model.remove(&key)),
                8 => {
                    let end = format!("k{}", rng.random_range(0..3000)).into_bytes();
                    let mut got = Vec::new();
                    map.visit_range(&key, Some(&end), |k, v| {
                        got.push((k.to_vec(), *v));
                        if got.len() == 20 {
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        }
                    });
                    let want: Vec<_> = if key < end {
                        model
                            .range(key.clone()..end.clone())
                            .take(20)
                            .map(|(k, v)| (k.clone(), *v))
                            .collect()
                    } else {
                        vec![]
                    };
                    assert_eq!(got, want);
                }
                _ => {
                    if step % 1000 == 0 {
                        map.retain(|_, v| *v % 3 != 0);
                        model.retain(|_, v| *v % 3 != 0);
                    }
                    assert_eq!(map.get(&key), model.get(&key));
                }
            }
            assert_eq!(map.len(), model.len());
            assert_eq!(map.directory.len(), map.chunks.len());
        }
        for chunk in &map.chunks {
            let tags: Vec<u16> = (0..chunk.len()).map(|i| key_tag(chunk.key(i))).collect();
            assert_eq!(chunk.tags, tags);
        }
        let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
        assert_eq!(contents(&map), want);
        map.repack();
        assert_eq!(contents(&map), want);
        assert!(
            map.chunks
                .iter()
                .all(|c| c.len() <= CHUNK_MAX && c.len() > 0)
        );
        for (i, chunk) in map.chunks.iter().enumerate() {
            assert_eq!(map.directory.keys.key(i), chunk.first_key());
        }
    }

    /// The directory's words and shared prefix agree with its keys.
    fn check_directory(map: &KeyMap<u64>) {
        let dir = &map.directory;
        assert_eq!(dir.len(), map.chunks.len());
        assert_eq!(dir.words.len(), dir.len());
        let prefix = dir.keys.key(0).get(..dir.shared).expect("prefix");
        for (i, chunk) in map.chunks.iter().enumerate() {
            assert_eq!(dir.keys.key(i), chunk.first_key());
            assert!(dir.keys.key(i).starts_with(prefix));
            assert_eq!(dir.words[i], word_after(dir.keys.key(i), dir.shared));
        }
    }

    #[test]
    fn chunks_are_found_when_keys_share_long_prefixes_and_then_do_not() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut map = KeyMap::default();
        let mut model = BTreeMap::new();
        // Keys alike in their first 20 bytes and more (ties of words), then
        // keys that narrow the shared prefix to a few bytes and to nothing.
        let families = [
            "/registry/pods/default/web-",
            "/registry/pods/default/web-0000000000-",
            "/registry/pods/kube-system/",
            "/registry/",
            "/r",
            "",
            "\u{0}",
            "\u{ff}",
        ];
        for (round, family) in families.iter().enumerate() {
            for step in 0..3000u64 {
                let key = format!("{family}{}", rng.random_range(0..2000)).into_bytes();
                let value = round as u64 * 10_000 + step;
                if rng.random_range(0..5) == 0 {
                    assert_eq!(map.remove(&key), model.remove(&key));
                } else {
                    map.insert(&key, value);
                    model.insert(key, value);
                }
                let probe = format!("{family}{}", rng.random_range(0..2000)).into_bytes();
                assert_eq!(map.get(&probe), model.get(&probe));
            }
            check_directory(&map);
            for key in model.keys() {
                assert_eq!(map.get(key), model.get(key));
                // Neighbours of present keys, which land between chunks' first keys.
                let mut below = key.clone();
                below.pop();
                assert_eq!(map.get(&below), model.get(&below));
                let mut above = key.clone();
                above.push(0);
                assert_eq!(map.get(&above), model.get(&above));
            }
        }
        let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
        assert_eq!(contents(&map), want);
        map.repack();
        check_directory(&map);
        assert_eq!(contents(&map), want);
        for key in model.keys() {
            assert_eq!(map.get(key), model.get(key));
        }
    }

    #[test]
    fn keys_with_equal_tags_are_told_apart() {
        let mut seen = std::collections::HashMap::new();
        let (a, b) = (0u32..)
            .map(|i| format!("k{i}").into_bytes())
            .find_map(|k| seen.insert(key_tag(&k), k.clone()).map(|other| (other, k)))
            .unwrap();
        let mut map = KeyMap::default();
        map.insert(&a, 1u64);
        map.insert(&b, 2);
        assert_eq!((map.get(&a), map.get(&b)), (Some(&1), Some(&2)));
        assert_eq!(map.remove(&a), Some(1));
        assert_eq!((map.get(&a), map.get(&b)), (None, Some(&2)));
    }

    #[test]
    fn sequential_appends_fill_chunks() {
        let mut map = KeyMap::default();
        for i in 0..1000u64 {
            map.insert(format!("key{i:06}").as_bytes(), i);
        }
        assert_eq!(map.chunks.len(), 1000usize.div_ceil(CHUNK_MAX));
        assert_eq!(map.get(b"key000500"), Some(&500));
        assert_eq!(map.get(b"key"), None);
    }
}
