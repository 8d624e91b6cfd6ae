//! The byte layout of bbolt pages, as Go's bbolt 1.3 lays them out on a little-endian
//! machine (`page.go`, `db.go`, `bucket.go`, `freelist.go`). Only encoding and decoding
//! of fixed-size records lives here; walking trees is `read.rs`'s, building them
//! `write.rs`'s.

/// bbolt's magic number, first field of a meta page.
pub const MAGIC: u32 = 0xED0C_DAED;
/// The only data file version bbolt 1.3 reads and writes.
pub const VERSION: u32 = 2;

/// Page header: `id: u64 | flags: u16 | count: u16 | overflow: u32`.
pub const PAGE_HEADER_SIZE: usize = 16;
/// Branch element: `pos: u32 | ksize: u32 | pgid: u64`.
pub const BRANCH_ELEMENT_SIZE: usize = 16;
/// Leaf element: `flags: u32 | pos: u32 | ksize: u32 | vsize: u32`.
pub const LEAF_ELEMENT_SIZE: usize = 16;
/// Bucket header stored as the value of a bucket entry: `root: u64 | sequence: u64`.
pub const BUCKET_HEADER_SIZE: usize = 16;
/// The meta record after the page header (64 bytes, the checksum over the first 56).
pub const META_SIZE: usize = 64;
const META_CHECKSUMMED: usize = 56;

pub const BRANCH_PAGE: u16 = 0x01;
pub const LEAF_PAGE: u16 = 0x02;
pub const META_PAGE: u16 = 0x04;
pub const FREELIST_PAGE: u16 = 0x10;

/// Leaf element flag: the value is a bucket header (plus an inline page), not data.
pub const BUCKET_LEAF_FLAG: u32 = 0x01;

/// A meta page's freelist field when the freelist is not stored (`NoFreelistSync`).
pub const NO_FREELIST: u64 = u64::MAX;

/// The page header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    pub id: u64,
    pub flags: u16,
    pub count: u16,
    pub overflow: u32,
}

impl PageHeader {
    pub fn decode(b: &[u8; PAGE_HEADER_SIZE]) -> PageHeader {
        PageHeader {
            id: u64_at(b, 0),
            flags: u16::from_le_bytes([b[8], b[9]]),
            count: u16::from_le_bytes([b[10], b[11]]),
            overflow: u32_at(b, 12),
        }
    }

    pub fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.id.to_le_bytes());
        out[8..10].copy_from_slice(&self.flags.to_le_bytes());
        out[10..12].copy_from_slice(&self.count.to_le_bytes());
        out[12..16].copy_from_slice(&self.overflow.to_le_bytes());
    }
}

/// A bucket header: the root page of the bucket's tree (0 for an inline bucket, whose
/// leaf page follows the header in the value) and its `NextSequence` counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BucketHeader {
    pub root: u64,
    pub sequence: u64,
}

impl BucketHeader {
    pub fn decode(b: &[u8; BUCKET_HEADER_SIZE]) -> BucketHeader {
        BucketHeader {
            root: u64_at(b, 0),
            sequence: u64_at(b, 8),
        }
    }

    pub fn encode(&self) -> [u8; BUCKET_HEADER_SIZE] {
        let mut out = [0; BUCKET_HEADER_SIZE];
        out[0..8].copy_from_slice(&self.root.to_le_bytes());
        out[8..16].copy_from_slice(&self.sequence.to_le_bytes());
        out
    }
}

/// The meta record of pages 0 and 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub magic: u32,
    pub version: u32,
    pub page_size: u32,
    pub flags: u32,
    pub root: BucketHeader,
    pub freelist: u64,
    /// The high water mark: the number of pages the database has (its size in pages).
    pub pgid: u64,
    pub txid: u64,
    pub checksum: u64,
}

impl Meta {
    pub fn decode(b: &[u8; META_SIZE]) -> Meta {
        Meta {
            magic: u32_at(b, 0),
            version: u32_at(b, 4),
            page_size: u32_at(b, 8),
            flags: u32_at(b, 12),
            root: BucketHeader {
                root: u64_at(b, 16),
                sequence: u64_at(b, 24),
            },
            freelist: u64_at(b, 32),
            pgid: u64_at(b, 40),
            txid: u64_at(b, 48),
            checksum: u64_at(b, 56),
        }
    }

    /// The record's bytes with `checksum` as stored (use [`Meta::sealed`] to compute it).
    pub fn encode(&self) -> [u8; META_SIZE] {
        let mut out = [0; META_SIZE];
        out[0..4].copy_from_slice(&self.magic.to_le_bytes());
        out[4..8].copy_from_slice(&self.version.to_le_bytes());
        out[8..12].copy_from_slice(&self.page_size.to_le_bytes());
        out[12..16].copy_from_slice(&self.flags.to_le_bytes());
        out[16..32].copy_from_slice(&self.root.encode());
        out[32..40].copy_from_slice(&self.freelist.to_le_bytes());
        out[40..48].copy_from_slice(&self.pgid.to_le_bytes());
        out[48..56].copy_from_slice(&self.txid.to_le_bytes());
        out[56..64].copy_from_slice(&self.checksum.to_le_bytes());
        out
    }

    /// FNV-1a 64 over the fields before the checksum, as bbolt's `meta.sum64`.
    pub fn sum64(&self) -> u64 {
        fnv1a64(&self.encode()[..META_CHECKSUMMED])
    }

    /// This meta with its checksum set.
    pub fn sealed(mut self) -> Meta {
        self.checksum = self.sum64();
        self
    }

    /// Why bbolt would refuse this meta, if it would. bbolt 1.3 also accepts a zero
    /// checksum (files from before checksums existed); this reader does not, since every
    /// bbolt of the last decade writes one and a zeroed meta is more likely damage.
    pub fn invalid_reason(&self) -> Option<String> {
        if self.magic != MAGIC {
            Some(format!(
                "bad magic {:#010x} (want {MAGIC:#010x})",
                self.magic
            ))
        } else if self.version != VERSION {
            Some(format!(
                "unsupported version {} (want {VERSION})",
                self.version
            ))
        } else if self.checksum != self.sum64() {
            Some(format!(
                "checksum {:#018x} does not match its fields ({:#018x})",
                self.checksum,
                self.sum64()
            ))
        } else {
            None
        }
    }
}

/// A branch element's fixed part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BranchElement {
    pub pos: u32,
    pub ksize: u32,
    pub pgid: u64,
}

impl BranchElement {
    pub fn decode(b: &[u8; BRANCH_ELEMENT_SIZE]) -> BranchElement {
        BranchElement {
            pos: u32_at(b, 0),
            ksize: u32_at(b, 4),
            pgid: u64_at(b, 8),
        }
    }

    pub fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.pos.to_le_bytes());
        out[4..8].copy_from_slice(&self.ksize.to_le_bytes());
        out[8..16].copy_from_slice(&self.pgid.to_le_bytes());
    }
}

/// A leaf element's fixed part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafElement {
    pub flags: u32,
    pub pos: u32,
    pub ksize: u32,
    pub vsize: u32,
}

impl LeafElement {
    pub fn decode(b: &[u8; LEAF_ELEMENT_SIZE]) -> LeafElement {
        LeafElement {
            flags: u32_at(b, 0),
            pos: u32_at(b, 4),
            ksize: u32_at(b, 8),
            vsize: u32_at(b, 12),
        }
    }

    pub fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.flags.to_le_bytes());
        out[4..8].copy_from_slice(&self.pos.to_le_bytes());
        out[8..12].copy_from_slice(&self.ksize.to_le_bytes());
        out[12..16].copy_from_slice(&self.vsize.to_le_bytes());
    }
}

/// FNV-1a, 64 bits (Go's `hash/fnv.New64a`).
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in data {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// One leaf or branch item on its way into a page: the bytes a page needs for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item<'a> {
    Leaf {
        flags: u32,
        key: &'a [u8],
        value: &'a [u8],
    },
    Branch {
        key: &'a [u8],
        pgid: u64,
    },
}

/// Encodes a leaf or branch page holding `items` (all of one kind) into `out`, which
/// must be zeroed and at least [`encoded_size`] long, rounded up to whole pages by the
/// caller. Elements first, then the keys and values in element order, each element's
/// `pos` relative to the element itself (as bbolt's `node.write`).
pub fn encode_page(out: &mut [u8], id: u64, overflow: u32, is_leaf: bool, items: &[Item<'_>]) {
    let header = PageHeader {
        id,
        flags: if is_leaf { LEAF_PAGE } else { BRANCH_PAGE },
        count: u16::try_from(items.len()).unwrap_or(u16::MAX),
        overflow,
    };
    header.encode(&mut out[..PAGE_HEADER_SIZE]);
    let element_size = if is_leaf {
        LEAF_ELEMENT_SIZE
    } else {
        BRANCH_ELEMENT_SIZE
    };
    let mut data = PAGE_HEADER_SIZE + element_size * items.len();
    for (i, item) in items.iter().enumerate() {
        let at = PAGE_HEADER_SIZE + element_size * i;
        let pos = (data - at) as u32;
        match *item {
            Item::Leaf { flags, key, value } => {
                LeafElement {
                    flags,
                    pos,
                    ksize: key.len() as u32,
                    vsize: value.len() as u32,
                }
                .encode(&mut out[at..at + LEAF_ELEMENT_SIZE]);
                out[data..data + key.len()].copy_from_slice(key);
                data += key.len();
                out[data..data + value.len()].copy_from_slice(value);
                data += value.len();
            }
            Item::Branch { key, pgid } => {
                BranchElement {
                    pos,
                    ksize: key.len() as u32,
                    pgid,
                }
                .encode(&mut out[at..at + BRANCH_ELEMENT_SIZE]);
                out[data..data + key.len()].copy_from_slice(key);
                data += key.len();
            }
        }
    }
}

/// The bytes a page of `items` occupies before rounding up to whole pages.
pub fn encoded_size(items: &[Item<'_>]) -> usize {
    PAGE_HEADER_SIZE + items.iter().map(item_size).sum::<usize>()
}

/// One item's share of a page: its element plus its key and value.
pub fn item_size(item: &Item<'_>) -> usize {
    match item {
        Item::Leaf { key, value, .. } => LEAF_ELEMENT_SIZE + key.len() + value.len(),
        Item::Branch { key, .. } => BRANCH_ELEMENT_SIZE + key.len(),
    }
}

pub fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(word)
}

pub fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        // Test vectors of the FNV reference (isthe.com/chongo/tech/comp/fnv).
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn meta_round_trips_and_its_checksum_covers_every_field_before_it() {
        let meta = Meta {
            magic: MAGIC,
            version: VERSION,
            page_size: 4096,
            flags: 0,
            root: BucketHeader {
                root: 3,
                sequence: 0,
            },
            freelist: 2,
            pgid: 4,
            txid: 1,
            checksum: 0,
        }
        .sealed();
        let bytes = meta.encode();
        assert_eq!(Meta::decode(&bytes), meta);
        assert_eq!(meta.invalid_reason(), None);
        for byte in 0..META_CHECKSUMMED {
            let mut damaged = bytes;
            damaged[byte] ^= 0x40;
            assert!(
                Meta::decode(&damaged).invalid_reason().is_some(),
                "byte {byte}"
            );
        }
    }

    #[test]
    fn a_leaf_page_lays_out_elements_then_data_with_relative_positions() {
        let items = [
            Item::Leaf {
                flags: 0,
                key: b"a",
                value: b"xy",
            },
            Item::Leaf {
                flags: BUCKET_LEAF_FLAG,
                key: b"bc",
                value: b"z",
            },
        ];
        let size = encoded_size(&items);
        assert_eq!(size, 16 + 2 * 16 + 3 + 3);
        let mut out = vec![0; size];
        encode_page(&mut out, 7, 0, true, &items);
        let header = PageHeader::decode(out[..16].try_into().expect("16 bytes"));
        assert_eq!(
            header,
            PageHeader {
                id: 7,
                flags: LEAF_PAGE,
                count: 2,
                overflow: 0
            }
        );
        let first = LeafElement::decode(out[16..32].try_into().expect("16 bytes"));
        // data starts after both elements: 16 + 32 = 48, relative to element 0 at 16
        assert_eq!(
            first,
            LeafElement {
                flags: 0,
                pos: 32,
                ksize: 1,
                vsize: 2
            }
        );
        let second = LeafElement::decode(out[32..48].try_into().expect("16 bytes"));
        assert_eq!(
            second,
            LeafElement {
                flags: 1,
                pos: 48 + 3 - 32,
                ksize: 2,
                vsize: 1
            }
        );
        assert_eq!(&out[48..], b"axybcz");
    }

    #[test]
    fn a_branch_page_holds_keys_and_child_ids() {
        let items = [
            Item::Branch {
                key: b"k1",
                pgid: 9,
            },
            Item::Branch {
                key: b"k2",
                pgid: 10,
            },
        ];
        let mut out = vec![0; encoded_size(&items)];
        encode_page(&mut out, 3, 0, false, &items);
        let second = BranchElement::decode(out[32..48].try_into().expect("16 bytes"));
        assert_eq!(
            second,
            BranchElement {
                pos: 48 + 2 - 32,
                ksize: 2,
                pgid: 10
            }
        );
        assert_eq!(&out[48..], b"k1k2");
        assert_eq!(u16::from_le_bytes([out[8], out[9]]), BRANCH_PAGE);
    }
}
