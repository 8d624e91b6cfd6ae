//! The writer: builds a fresh, compact bbolt file in one pass from sorted input.

use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::page::{
    BUCKET_LEAF_FLAG, BucketHeader, FREELIST_PAGE, Item, MAGIC, META_PAGE, Meta, PAGE_HEADER_SIZE,
    PageHeader, VERSION, encode_page, encoded_size, item_size,
};
use crate::{Error, PAGE_SIZE};

/// bbolt's `MaxKeySize`.
pub const MAX_KEY_SIZE: usize = 32_768;
/// bbolt's `MaxValueSize`.
pub const MAX_VALUE_SIZE: usize = (1 << 31) - 2;

/// The transaction id of the newer meta page; the other meta carries one less, as bbolt's
/// `Tx.WriteTo` (and so every etcd snapshot) has it.
const TXID: u64 = 2;

/// What [`Writer::finish`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Pages in the file (bbolt's high water mark).
    pub page_count: u64,
    /// Bytes of the database: `page_count * 4096`.
    pub size: u64,
    /// Plain key/value pairs written, in all buckets.
    pub keys: u64,
    /// Buckets written, nested ones included (not the root).
    pub buckets: u64,
}

/// Pages go out sequentially: page ids are handed out in file order.
#[derive(Debug)]
struct PageSink<W: Write> {
    out: BufWriter<W>,
    next_pgid: u64,
    scratch: Vec<u8>,
}

impl<W: Write> PageSink<W> {
    /// Writes a leaf or branch page of `items`, returns its id.
    fn write_node(&mut self, is_leaf: bool, items: &[Item<'_>]) -> Result<u64, Error> {
        let size = encoded_size(items);
        let pages = size.div_ceil(PAGE_SIZE).max(1);
        let overflow = u32::try_from(pages - 1)
            .map_err(|_| Error::Invalid(format!("a page of {size} bytes is too large")))?;
        let pgid = self.next_pgid;
        self.scratch.clear();
        self.scratch.resize(pages * PAGE_SIZE, 0);
        encode_page(&mut self.scratch, pgid, overflow, is_leaf, items);
        self.out
            .write_all(&self.scratch)
            .map_err(|e| Error::io("<bolt writer>", e))?;
        self.next_pgid += pages as u64;
        Ok(pgid)
    }
}

/// Items waiting for a page on one level of a tree under construction.
#[derive(Debug, Default)]
struct Pending {
    /// A leaf's items: (flags, key, value).
    leaves: Vec<(u32, Vec<u8>, Vec<u8>)>,
    /// A branch page's items: (first key of the child, child page id).
    children: Vec<(Vec<u8>, u64)>,
    /// Encoded size of the page these items would make.
    size: usize,
}

/// One bucket being built: its current leaf and one pending branch page per level above it.
#[derive(Debug)]
struct BucketBuilder {
    name: Vec<u8>,
    last_key: Option<Vec<u8>>,
    has_subbucket: bool,
    leaf: Pending,
    /// `branches[0]` holds the children of the next branch page above the leaves, and so on.
    branches: Vec<Pending>,
    leaves_written: bool,
}

impl BucketBuilder {
    fn new(name: Vec<u8>) -> BucketBuilder {
        BucketBuilder {
            name,
            last_key: None,
            has_subbucket: false,
            leaf: Pending {
                size: PAGE_HEADER_SIZE,
                ..Pending::default()
            },
            branches: Vec::new(),
            leaves_written: false,
        }
    }

    fn check_order(&mut self, key: &[u8]) -> Result<(), Error> {
        if key.is_empty() {
            return Err(Error::Invalid("empty key".into()));
        }
        if key.len() > MAX_KEY_SIZE {
            return Err(Error::Invalid(format!(
                "key of {} bytes exceeds bbolt's {MAX_KEY_SIZE}",
                key.len()
            )));
        }
        if let Some(last) = &self.last_key
            && last.as_slice() >= key
        {
            return Err(Error::OutOfOrder {
                key: key.to_vec(),
                previous: last.clone(),
            });
        }
        self.last_key = Some(key.to_vec());
        Ok(())
    }

    fn add_leaf<W: Write>(
        &mut self,
        sink: &mut PageSink<W>,
        flags: u32,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), Error> {
        let size = item_size(&Item::Leaf { flags, key, value });
        if !self.leaf.leaves.is_empty() && self.leaf.size + size > PAGE_SIZE {
            self.flush_leaf(sink)?;
        }
        self.leaf.leaves.push((flags, key.to_vec(), value.to_vec()));
        self.leaf.size += size;
        Ok(())
    }

    fn flush_leaf<W: Write>(&mut self, sink: &mut PageSink<W>) -> Result<(), Error> {
        let items: Vec<Item<'_>> = self
            .leaf
            .leaves
            .iter()
            .map(|(flags, key, value)| Item::Leaf {
                flags: *flags,
                key,
                value,
            })
            .collect();
        let pgid = sink.write_node(true, &items)?;
        let first = self
            .leaf
            .leaves
            .first()
            .map(|(_, key, _)| key.clone())
            .unwrap_or_default();
        self.leaf = Pending {
            size: PAGE_HEADER_SIZE,
            ..Pending::default()
        };
        self.leaves_written = true;
        self.add_child(sink, 0, first, pgid)
    }

    fn add_child<W: Write>(
        &mut self,
        sink: &mut PageSink<W>,
        level: usize,
        key: Vec<u8>,
        pgid: u64,
    ) -> Result<(), Error> {
        if self.branches.len() <= level {
            self.branches.push(Pending {
                size: PAGE_HEADER_SIZE,
                ..Pending::default()
            });
        }
        let size = item_size(&Item::Branch { key: &key, pgid });
        let pending = &self.branches[level];
        if !pending.children.is_empty() && pending.size + size > PAGE_SIZE {
            self.flush_branch(sink, level)?;
        }
        let pending = &mut self.branches[level];
        pending.children.push((key, pgid));
        pending.size += size;
        Ok(())
    }

    fn flush_branch<W: Write>(
        &mut self,
        sink: &mut PageSink<W>,
        level: usize,
    ) -> Result<(), Error> {
        let pending = std::mem::replace(
            &mut self.branches[level],
            Pending {
                size: PAGE_HEADER_SIZE,
                ..Pending::default()
            },
        );
        let items: Vec<Item<'_>> = pending
            .children
            .iter()
            .map(|(key, pgid)| Item::Branch { key, pgid: *pgid })
            .collect();
        let pgid = sink.write_node(false, &items)?;
        let first = pending
            .children
            .into_iter()
            .next()
            .map(|(key, _)| key)
            .unwrap_or_default();
        self.add_child(sink, level + 1, first, pgid)
    }

    /// Writes what is left and returns the bucket's value for its parent: a header with
    /// the root page, or (for a small bucket of one leaf without nested buckets, as bbolt
    /// does when the leaf fits in a quarter page) the header followed by the leaf inline.
    fn finish<W: Write>(
        mut self,
        sink: &mut PageSink<W>,
        allow_inline: bool,
    ) -> Result<Vec<u8>, Error> {
        if allow_inline
            && !self.leaves_written
            && !self.has_subbucket
            && self.leaf.size <= PAGE_SIZE / 4
        {
            let items: Vec<Item<'_>> = self
                .leaf
                .leaves
                .iter()
                .map(|(flags, key, value)| Item::Leaf {
                    flags: *flags,
                    key,
                    value,
                })
                .collect();
            let mut value = BucketHeader::default().encode().to_vec();
            let start = value.len();
            value.resize(start + encoded_size(&items), 0);
            encode_page(&mut value[start..], 0, 0, true, &items);
            return Ok(value);
        }
        if !self.leaf.leaves.is_empty() || !self.leaves_written {
            self.flush_leaf(sink)?;
        }
        let mut level = 0;
        let root = loop {
            let last = level + 1 == self.branches.len();
            if last && self.branches[level].children.len() == 1 {
                break self.branches[level].children[0].1;
            }
            self.flush_branch(sink, level)?;
            level += 1;
        };
        Ok(BucketHeader { root, sequence: 0 }.encode().to_vec())
    }
}

/// Builds a bbolt database in one pass, with memory for one page per tree level of each
/// open bucket (whatever the number of keys): leaves are written as they fill, branch
/// pages bottom-up as their levels fill. Keys (and nested bucket names, which share their
/// parent's key space) must arrive in strictly increasing byte order.
///
/// The file gets page size 4096, two meta pages (txids 2 and 1, as bbolt's `Tx.WriteTo`
/// writes them), an empty freelist at page 2, and no free pages: bbolt's `Tx.Check`
/// finds every page reachable.
#[derive(Debug)]
pub struct Writer<W: Write + Seek> {
    sink: PageSink<W>,
    /// `stack[0]` is the root bucket, whose entries are the top-level buckets.
    stack: Vec<BucketBuilder>,
    keys: u64,
    buckets: u64,
}

impl Writer<std::fs::File> {
    /// Creates (or truncates) the file at `path` and starts a database in it.
    pub fn create(path: impl AsRef<Path>) -> Result<Writer<std::fs::File>, Error> {
        let path = path.as_ref();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Writer::new(file)
    }
}

impl<W: Write + Seek> Writer<W> {
    /// Starts a database at the current position of `out` (normally an empty file).
    pub fn new(out: W) -> Result<Writer<W>, Error> {
        let mut sink = PageSink {
            out: BufWriter::with_capacity(256 * 1024, out),
            next_pgid: 0,
            scratch: Vec::with_capacity(PAGE_SIZE),
        };
        // Meta pages are written last, over these placeholders; then the empty freelist.
        let mut head = vec![0; 3 * PAGE_SIZE];
        PageHeader {
            id: 2,
            flags: FREELIST_PAGE,
            count: 0,
            overflow: 0,
        }
        .encode(&mut head[2 * PAGE_SIZE..]);
        sink.out
            .write_all(&head)
            .map_err(|e| Error::io("<bolt writer>", e))?;
        sink.next_pgid = 3;
        Ok(Writer {
            sink,
            stack: vec![BucketBuilder::new(Vec::new())],
            keys: 0,
            buckets: 0,
        })
    }

    /// Opens a bucket named `name` inside the current one (the root at first): a
    /// top-level bucket, or a nested one. Entries go into it until [`Writer::end_bucket`].
    pub fn begin_bucket(&mut self, name: &[u8]) -> Result<(), Error> {
        self.current()?.check_order(name)?;
        self.stack.push(BucketBuilder::new(name.to_vec()));
        Ok(())
    }

    /// Closes the current bucket, writing what remains of it.
    pub fn end_bucket(&mut self) -> Result<(), Error> {
        if self.stack.len() < 2 {
            return Err(Error::Invalid("end_bucket without an open bucket".into()));
        }
        let Some(bucket) = self.stack.pop() else {
            return Err(Error::Invalid("end_bucket without an open bucket".into()));
        };
        let name = bucket.name.clone();
        let value = bucket.finish(&mut self.sink, true)?;
        let Some(parent) = self.stack.last_mut() else {
            return Err(Error::Invalid("writer already finished".into()));
        };
        parent.has_subbucket = true;
        parent.add_leaf(&mut self.sink, BUCKET_LEAF_FLAG, &name, &value)?;
        self.buckets += 1;
        Ok(())
    }

    /// Adds `key` = `value` to the current bucket. Keys must increase.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        if self.stack.len() < 2 {
            return Err(Error::Invalid(
                "put outside a bucket (bbolt keeps only buckets at the top level)".into(),
            ));
        }
        if value.len() > MAX_VALUE_SIZE {
            return Err(Error::Invalid(format!(
                "value of {} bytes exceeds bbolt's {MAX_VALUE_SIZE}",
                value.len()
            )));
        }
        let Some(bucket) = self.stack.last_mut() else {
            return Err(Error::Invalid("writer already finished".into()));
        };
        bucket.check_order(key)?;
        bucket.add_leaf(&mut self.sink, 0, key, value)?;
        self.keys += 1;
        Ok(())
    }

    fn current(&mut self) -> Result<&mut BucketBuilder, Error> {
        self.stack
            .last_mut()
            .ok_or_else(|| Error::Invalid("writer already finished".into()))
    }

    /// Writes the root and the two meta pages, flushes, and hands back the output
    /// (positioned at the end of the database). Every bucket must have been ended.
    pub fn finish(mut self) -> Result<(W, Summary), Error> {
        if self.stack.len() != 1 {
            return Err(Error::Invalid(format!(
                "finish with {} bucket(s) still open",
                self.stack.len() - 1
            )));
        }
        let Some(root) = self.stack.pop() else {
            return Err(Error::Invalid("writer already finished".into()));
        };
        let value = root.finish(&mut self.sink, false)?;
        let root = BucketHeader::decode(
            value[..16]
                .try_into()
                .map_err(|_| Error::Invalid("root header".into()))?,
        );
        let page_count = self.sink.next_pgid;
        let io = |e| Error::io("<bolt writer>", e);
        let mut out = self.sink.out.into_inner().map_err(|e| io(e.into_error()))?;
        let end = out.stream_position().map_err(io)?;
        let start = end - page_count * PAGE_SIZE as u64;
        for (page, txid) in [(0u64, TXID), (1, TXID - 1)] {
            let meta = Meta {
                magic: MAGIC,
                version: VERSION,
                page_size: PAGE_SIZE as u32,
                flags: 0,
                root,
                freelist: 2,
                pgid: page_count,
                txid,
                checksum: 0,
            }
            .sealed();
            let mut bytes = vec![0; PAGE_HEADER_SIZE];
            PageHeader {
                id: page,
                flags: META_PAGE,
                count: 0,
                overflow: 0,
            }
            .encode(&mut bytes);
            bytes.extend_from_slice(&meta.encode());
            out.seek(SeekFrom::Start(start + page * PAGE_SIZE as u64))
                .map_err(io)?;
            out.write_all(&bytes).map_err(io)?;
        }
        out.seek(SeekFrom::Start(end)).map_err(io)?;
        out.flush().map_err(io)?;
        Ok((
            out,
            Summary {
                page_count,
                size: page_count * PAGE_SIZE as u64,
                keys: self.keys,
                buckets: self.buckets,
            },
        ))
    }
}

impl<W: Read + Write + Seek> Writer<W> {
    /// [`Writer::finish`], then appends etcd's sha256 trailer (see
    /// [`crate::append_trailer`]), making an etcd snapshot file. The output must hold
    /// nothing but this database.
    pub fn finish_snapshot(self) -> Result<(W, Summary), Error> {
        let (mut out, summary) = self.finish()?;
        crate::append_trailer(&mut out)?;
        Ok((out, summary))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// The writer's memory is one pending page per level, however many keys: checked on
    /// its state after every put of a bucket that grows three branch levels.
    #[test]
    fn pending_state_stays_within_a_page_per_level() {
        let mut writer = Writer::new(Cursor::new(Vec::new())).expect("writer");
        writer.begin_bucket(b"key").expect("begin");
        let mut max_levels = 0;
        for i in 0u64..300_000 {
            let mut key = i.to_be_bytes().to_vec();
            key.resize(64, b'_');
            writer.put(&key, b"value").expect("put");
            let bucket = writer.stack.last().expect("open bucket");
            assert!(bucket.leaf.size <= PAGE_SIZE);
            for level in &bucket.branches {
                assert!(level.size <= PAGE_SIZE);
            }
            max_levels = max_levels.max(bucket.branches.len());
        }
        assert_eq!(max_levels, 3, "leaves, then three branch levels");
        writer.end_bucket().expect("end");
        let (out, summary) = writer.finish().expect("finish");
        assert_eq!(out.get_ref().len() as u64, summary.size);
    }
}
