//! The reader: pages are read on demand through [`ReadAt`], one tree path at a time.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Error;
use crate::page::{
    BRANCH_ELEMENT_SIZE, BRANCH_PAGE, BUCKET_HEADER_SIZE, BUCKET_LEAF_FLAG, BranchElement,
    BucketHeader, FREELIST_PAGE, LEAF_ELEMENT_SIZE, LEAF_PAGE, LeafElement, META_SIZE, Meta,
    NO_FREELIST, PAGE_HEADER_SIZE, PageHeader, u64_at,
};

/// A tree deeper than this is taken for a cycle of branch pages. A 4 KiB-page bbolt tree
/// of 2^64 keys is far shallower.
const MAX_DEPTH: usize = 64;

/// Positioned reads from a file or a buffer: all the reader needs from its source.
pub trait ReadAt {
    /// Fills `buf` from `offset`, or fails (a short read is an error).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// The source's length in bytes.
    fn size(&self) -> io::Result<u64>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
        {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
        }
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }
}

/// An open bbolt database (read-only). Cheap to hold: only the chosen meta is kept; pages
/// are read when a lookup or an iterator reaches them.
#[derive(Debug)]
pub struct Db<S> {
    source: S,
    /// Where the source came from, for error messages.
    name: PathBuf,
    page_size: u64,
    meta: Meta,
}

impl Db<File> {
    /// Opens the bbolt file at `path` (a plain database: see [`Db::open_snapshot`] for an
    /// etcd snapshot with its sha256 trailer).
    pub fn open_path(path: impl AsRef<Path>) -> Result<Db<File>, Error> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| Error::io(path, source))?;
        let len = file.size().map_err(|source| Error::io(path, source))?;
        Db::open_named(file, len, path.to_path_buf())
    }

    /// Opens an etcd snapshot file: checks its sha256 trailer (see
    /// [`crate::verify_trailer`]) and opens the database in front of it.
    pub fn open_snapshot(path: impl AsRef<Path>) -> Result<Db<File>, Error> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| Error::io(path, source))?;
        let len = crate::trailer::verify_trailer_named(&file, path)?;
        Db::open_named(file, len, path.to_path_buf())
    }
}

impl<S: ReadAt> Db<S> {
    /// Opens the database that fills `source`.
    pub fn open(source: S) -> Result<Db<S>, Error> {
        let len = source
            .size()
            .map_err(|source| Error::io("<source>", source))?;
        Db::open_named(source, len, PathBuf::from("<source>"))
    }

    /// Opens the database in the first `len` bytes of `source` (the rest, such as a
    /// snapshot's trailer, is ignored).
    pub fn open_len(source: S, len: u64) -> Result<Db<S>, Error> {
        Db::open_named(source, len, PathBuf::from("<source>"))
    }

    fn open_named(source: S, len: u64, name: PathBuf) -> Result<Db<S>, Error> {
        // Page 0's meta gives the page size; if it is damaged, look for page 1's meta at
        // every page size bbolt could have used (as bbolt itself falls back on the OS's).
        let meta0 = read_meta(&source, len, 0, &name)?;
        let meta0_err = meta0.invalid_reason();
        let mut candidates = Vec::new();
        if meta0_err.is_none() {
            candidates.push(u64::from(meta0.page_size));
        } else {
            candidates.extend((9..=16).map(|shift| 1u64 << shift));
        }
        let mut meta1 = None;
        let mut meta1_err = None;
        for page_size in candidates {
            if page_size < 512 || !page_size.is_power_of_two() || page_size > 1 << 16 {
                meta1_err = Some(format!("unsupported page size {page_size}"));
                continue;
            }
            let meta = read_meta(&source, len, page_size, &name)?;
            match meta.invalid_reason() {
                None if u64::from(meta.page_size) == page_size => {
                    meta1 = Some(meta);
                    meta1_err = None;
                    break;
                }
                None => {
                    meta1_err = Some(format!(
                        "page size {} differs from page 0's {}",
                        meta.page_size, page_size
                    ))
                }
                Some(reason) => meta1_err = meta1_err.or(Some(reason)),
            }
        }
        let valid0 = meta0_err.is_none().then_some(meta0);
        let meta = match (valid0, meta1) {
            (Some(a), Some(b)) if b.txid > a.txid && b.page_size == a.page_size => b,
            (Some(a), _) => a,
            (None, Some(b)) => b,
            (None, None) => {
                return Err(Error::NotBolt {
                    path: name,
                    reason: format!(
                        "neither meta page is valid (page 0: {}; page 1: {})",
                        meta0_err.unwrap_or_default(),
                        meta1_err.unwrap_or_else(|| "unreadable".into())
                    ),
                });
            }
        };
        let page_size = u64::from(meta.page_size);
        if page_size < 512 || !page_size.is_power_of_two() || page_size > 1 << 16 {
            return Err(Error::NotBolt {
                path: name,
                reason: format!("unsupported page size {page_size}"),
            });
        }
        let needed = meta.pgid.checked_mul(page_size);
        if needed.is_none_or(|needed| needed > len) {
            return Err(Error::Truncated {
                path: name,
                reason: format!(
                    "the meta (txid {}) counts {} pages of {page_size} bytes, the file has {len} bytes",
                    meta.txid, meta.pgid
                ),
            });
        }
        if meta.pgid < 3 || meta.root.root < 2 || meta.root.root >= meta.pgid {
            return Err(Error::Corrupt {
                path: name,
                pgid: meta.root.root,
                reason: format!(
                    "root bucket page {} outside the {} pages",
                    meta.root.root, meta.pgid
                ),
            });
        }
        if meta.freelist != NO_FREELIST && (meta.freelist < 2 || meta.freelist >= meta.pgid) {
            return Err(Error::Corrupt {
                path: name,
                pgid: meta.freelist,
                reason: format!("freelist page outside the {} pages", meta.pgid),
            });
        }
        Ok(Db {
            source,
            name,
            page_size,
            meta,
        })
    }

    /// The page size the file was written with.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// The transaction id of the meta in use (the valid one with the higher id).
    pub fn txid(&self) -> u64 {
        self.meta.txid
    }

    /// The database's size in pages (bbolt's high water mark); its size in bytes, as
    /// bbolt's `Tx.Size` reports it, is this times [`Db::page_size`].
    pub fn page_count(&self) -> u64 {
        self.meta.pgid
    }

    /// The top-level bucket, whose entries are the database's buckets.
    pub fn root(&self) -> Bucket<'_, S> {
        Bucket {
            db: self,
            root: Root::Page(self.meta.root.root),
            sequence: self.meta.root.sequence,
            nesting: 0,
        }
    }

    /// The top-level bucket called `name`.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'_, S>>, Error> {
        self.root().bucket(name)
    }

    /// The ids of the pages on the freelist (empty when the file stores none).
    pub fn free_pages(&self) -> Result<Vec<u64>, Error> {
        if self.meta.freelist == NO_FREELIST {
            return Ok(Vec::new());
        }
        let page = self.read_page(self.meta.freelist)?;
        if page.header.flags & FREELIST_PAGE == 0 {
            return Err(self.corrupt(page.id, "the meta's freelist is not a freelist page"));
        }
        let (skip, count) = if page.header.count == 0xFFFF {
            let count = page
                .buf
                .get(PAGE_HEADER_SIZE..PAGE_HEADER_SIZE + 8)
                .map(|b| u64_at(b, 0))
                .ok_or_else(|| self.corrupt(page.id, "freelist count does not fit"))?;
            (1u64, count)
        } else {
            (0u64, u64::from(page.header.count))
        };
        let end = skip
            .checked_add(count)
            .and_then(|n| n.checked_mul(8))
            .and_then(|n| n.checked_add(PAGE_HEADER_SIZE as u64));
        if end.is_none_or(|end| end > page.buf.len() as u64) {
            return Err(self.corrupt(page.id, "freelist ids overrun the page"));
        }
        let start = PAGE_HEADER_SIZE + 8 * skip as usize;
        Ok((0..count as usize)
            .map(|i| u64_at(&page.buf, start + 8 * i))
            .collect())
    }

    fn corrupt(&self, pgid: u64, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            path: self.name.clone(),
            pgid,
            reason: reason.into(),
        }
    }

    /// Reads page `pgid` with its overflow pages.
    fn read_page(&self, pgid: u64) -> Result<Arc<Page>, Error> {
        if pgid < 2 || pgid >= self.meta.pgid {
            return Err(self.corrupt(
                pgid,
                format!(
                    "page id out of range (the file has {} pages)",
                    self.meta.pgid
                ),
            ));
        }
        let offset = pgid * self.page_size;
        let mut head = [0; PAGE_HEADER_SIZE];
        self.source
            .read_exact_at(&mut head, offset)
            .map_err(|source| Error::io(&self.name, source))?;
        let header = PageHeader::decode(&head);
        if header.id != pgid {
            return Err(self.corrupt(pgid, format!("page header says it is page {}", header.id)));
        }
        let pages = u64::from(header.overflow) + 1;
        if pgid + pages > self.meta.pgid {
            return Err(self.corrupt(
                pgid,
                format!(
                    "{} overflow pages run past the file's {} pages",
                    header.overflow, self.meta.pgid
                ),
            ));
        }
        let mut buf = vec![0; (pages * self.page_size) as usize];
        self.source
            .read_exact_at(&mut buf, offset)
            .map_err(|source| Error::io(&self.name, source))?;
        Page::new(buf, pgid, header).map_err(|reason| self.corrupt(pgid, reason))
    }

    /// Reads a page reached from a branch: it must be a branch or a leaf.
    fn read_node(&self, pgid: u64) -> Result<Arc<Page>, Error> {
        let page = self.read_page(pgid)?;
        if page.is_leaf() || page.is_branch() {
            Ok(page)
        } else {
            Err(self.corrupt(
                pgid,
                format!(
                    "expected a branch or leaf page, found flags {:#x}",
                    page.header.flags
                ),
            ))
        }
    }
}

fn read_meta<S: ReadAt>(source: &S, len: u64, offset: u64, name: &Path) -> Result<Meta, Error> {
    let end = offset + (PAGE_HEADER_SIZE + META_SIZE) as u64;
    if end > len {
        return Err(Error::Truncated {
            path: name.to_path_buf(),
            reason: format!("{len} bytes cannot hold the meta page at offset {offset}"),
        });
    }
    let mut buf = [0; META_SIZE];
    source
        .read_exact_at(&mut buf, offset + PAGE_HEADER_SIZE as u64)
        .map_err(|source| Error::io(name, source))?;
    Ok(Meta::decode(&buf))
}

/// One page (with its overflow pages) as read, elements validated on access.
#[derive(Debug)]
struct Page {
    /// The page id, or 0 for an inline bucket's page.
    id: u64,
    header: PageHeader,
    buf: Vec<u8>,
}

impl Page {
    fn new(buf: Vec<u8>, id: u64, header: PageHeader) -> Result<Arc<Page>, String> {
        let page = Page { id, header, buf };
        if page.is_leaf() || page.is_branch() {
            let elements = PAGE_HEADER_SIZE + usize::from(header.count) * LEAF_ELEMENT_SIZE;
            if elements > page.buf.len() {
                return Err(format!(
                    "{} elements do not fit in {} bytes",
                    header.count,
                    page.buf.len()
                ));
            }
        }
        Ok(Arc::new(page))
    }

    fn is_leaf(&self) -> bool {
        self.header.flags & LEAF_PAGE != 0
    }

    fn is_branch(&self) -> bool {
        self.header.flags & BRANCH_PAGE != 0 && !self.is_leaf()
    }

    fn count(&self) -> usize {
        usize::from(self.header.count)
    }

    fn bytes(&self, element_at: usize, pos: u32, len: u64) -> Result<&[u8], String> {
        let start = element_at as u64 + u64::from(pos);
        let end = start + len;
        if end > self.buf.len() as u64 {
            return Err(format!(
                "element at byte {element_at} points to {start}..{end}, past the page's {} bytes",
                self.buf.len()
            ));
        }
        Ok(&self.buf[start as usize..end as usize])
    }

    /// Leaf element `i`: flags, key, value.
    fn leaf(&self, i: usize) -> Result<(u32, &[u8], &[u8]), String> {
        let at = PAGE_HEADER_SIZE + i * LEAF_ELEMENT_SIZE;
        let element = LeafElement::decode(
            self.buf[at..at + LEAF_ELEMENT_SIZE]
                .try_into()
                .map_err(|_| "short element".to_string())?,
        );
        let both = self.bytes(
            at,
            element.pos,
            u64::from(element.ksize) + u64::from(element.vsize),
        )?;
        let (key, value) = both.split_at(element.ksize as usize);
        Ok((element.flags, key, value))
    }

    /// Branch element `i`: key, child page id.
    fn branch(&self, i: usize) -> Result<(&[u8], u64), String> {
        let at = PAGE_HEADER_SIZE + i * BRANCH_ELEMENT_SIZE;
        let element = BranchElement::decode(
            self.buf[at..at + BRANCH_ELEMENT_SIZE]
                .try_into()
                .map_err(|_| "short element".to_string())?,
        );
        let key = self.bytes(at, element.pos, u64::from(element.ksize))?;
        Ok((key, element.pgid))
    }
}

#[derive(Debug, Clone)]
enum Root {
    Page(u64),
    Inline(Arc<Page>),
}

/// A bucket: a sorted map from keys to values or nested buckets.
#[derive(Debug, Clone)]
pub struct Bucket<'db, S> {
    db: &'db Db<S>,
    root: Root,
    sequence: u64,
    /// How many buckets this one is inside (0 for the top-level bucket): a damaged file
    /// can make a bucket hold itself, and a walk down nested buckets must still end.
    nesting: usize,
}

/// What a key of a bucket holds.
#[derive(Debug)]
pub enum Value<'db, S> {
    /// A plain value.
    Data(Vec<u8>),
    /// A nested bucket.
    Bucket(Bucket<'db, S>),
}

/// One entry of a bucket, as an iterator yields it.
#[derive(Debug)]
pub struct Entry<'db, S> {
    pub key: Vec<u8>,
    pub value: Value<'db, S>,
}

impl<'db, S: ReadAt> Bucket<'db, S> {
    /// The bucket's `NextSequence` counter.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Whether the bucket is stored inline in its parent's leaf.
    pub fn is_inline(&self) -> bool {
        matches!(self.root, Root::Inline(_))
    }

    fn root_page(&self) -> Result<Arc<Page>, Error> {
        match &self.root {
            Root::Page(pgid) => self.db.read_node(*pgid),
            Root::Inline(page) => Ok(page.clone()),
        }
    }

    /// The leaf element for `key`, if present: (flags, value).
    fn find(&self, key: &[u8]) -> Result<Option<(u32, Vec<u8>)>, Error> {
        let mut page = self.root_page()?;
        let mut depth = 0;
        while page.is_branch() {
            depth += 1;
            if depth > MAX_DEPTH || page.count() == 0 {
                return Err(self.db.corrupt(page.id, "branch page is empty or a cycle"));
            }
            // The last child whose first key is <= key (the first child otherwise).
            let mut child = None;
            for i in 0..page.count() {
                let (first, pgid) = page.branch(i).map_err(|r| self.db.corrupt(page.id, r))?;
                if i > 0 && first > key {
                    break;
                }
                child = Some(pgid);
            }
            let pgid = child.ok_or_else(|| self.db.corrupt(page.id, "empty branch"))?;
            page = self.db.read_node(pgid)?;
        }
        if !page.is_leaf() {
            return Err(self
                .db
                .corrupt(page.id, "bucket root is not a leaf or branch"));
        }
        for i in 0..page.count() {
            let (flags, k, v) = page.leaf(i).map_err(|r| self.db.corrupt(page.id, r))?;
            if k == key {
                return Ok(Some((flags, v.to_vec())));
            }
        }
        Ok(None)
    }

    /// Levels of the bucket's tree along its first path: 1 for a single leaf (or an
    /// inline bucket), 2 when a branch page sits above the leaves, and so on.
    pub fn depth(&self) -> Result<usize, Error> {
        let mut page = self.root_page()?;
        let mut depth = 1;
        while page.is_branch() {
            if depth > MAX_DEPTH || page.count() == 0 {
                return Err(self.db.corrupt(page.id, "branch page is empty or a cycle"));
            }
            let (_, child) = page.branch(0).map_err(|r| self.db.corrupt(page.id, r))?;
            page = self.db.read_node(child)?;
            depth += 1;
        }
        Ok(depth)
    }

    /// The value stored under `key` (`None` when absent or when `key` names a bucket).
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .find(key)?
            .filter(|(flags, _)| flags & BUCKET_LEAF_FLAG == 0)
            .map(|(_, value)| value))
    }

    /// The nested bucket called `name` (`None` when absent or a plain value).
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'db, S>>, Error> {
        match self.find(name)? {
            Some((flags, value)) if flags & BUCKET_LEAF_FLAG != 0 => Ok(Some(
                self.db
                    .open_bucket_value(&value, self.pgid_for_errors(), self.nesting + 1)?,
            )),
            _ => Ok(None),
        }
    }

    fn pgid_for_errors(&self) -> u64 {
        match &self.root {
            Root::Page(pgid) => *pgid,
            Root::Inline(_) => 0,
        }
    }

    /// Every entry in key order. Each item is an error at most once: after an error the
    /// iterator ends.
    pub fn iter(&self) -> Iter<'db, S> {
        Iter {
            db: self.db,
            start: Some(self.root.clone()),
            stack: Vec::new(),
            last_key: None,
            failed: false,
            nesting: self.nesting,
        }
    }
}

impl<S: ReadAt> Db<S> {
    fn open_bucket_value<'db>(
        &'db self,
        value: &[u8],
        parent: u64,
        nesting: usize,
    ) -> Result<Bucket<'db, S>, Error> {
        if nesting > MAX_DEPTH {
            return Err(self.corrupt(
                parent,
                "buckets nested deeper than 64 levels (a bucket inside itself?)",
            ));
        }
        let header: &[u8; BUCKET_HEADER_SIZE] = value
            .get(..BUCKET_HEADER_SIZE)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| self.corrupt(parent, "bucket value shorter than its header"))?;
        let header = BucketHeader::decode(header);
        let root = if header.root == 0 {
            let inline = &value[BUCKET_HEADER_SIZE..];
            let page_header: &[u8; PAGE_HEADER_SIZE] = inline
                .get(..PAGE_HEADER_SIZE)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| self.corrupt(parent, "inline bucket shorter than a page header"))?;
            let page_header = PageHeader::decode(page_header);
            let page = Page::new(inline.to_vec(), 0, page_header)
                .map_err(|r| self.corrupt(parent, format!("inline bucket: {r}")))?;
            if !page.is_leaf() {
                return Err(self.corrupt(parent, "inline bucket page is not a leaf"));
            }
            Root::Inline(page)
        } else {
            Root::Page(header.root)
        };
        Ok(Bucket {
            db: self,
            root,
            sequence: header.sequence,
            nesting,
        })
    }
}

/// Iterates a bucket's entries in key order, reading one root-to-leaf path of pages at a
/// time.
#[derive(Debug)]
pub struct Iter<'db, S> {
    db: &'db Db<S>,
    /// The root, until the first call descends from it.
    start: Option<Root>,
    /// The path from the root: each page with the index of the element to visit next.
    stack: Vec<(Arc<Page>, usize)>,
    last_key: Option<Vec<u8>>,
    failed: bool,
    /// The nesting of the bucket iterated (see [`Bucket`]).
    nesting: usize,
}

impl<'db, S: ReadAt> Iter<'db, S> {
    fn push(&mut self, page: Arc<Page>) -> Result<(), Error> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(self.db.corrupt(
                page.id,
                "tree deeper than 64 levels (a cycle of branch pages?)",
            ));
        }
        if page.is_branch() && page.count() == 0 {
            return Err(self.db.corrupt(page.id, "empty branch page"));
        }
        if !page.is_branch() && !page.is_leaf() {
            return Err(self.db.corrupt(page.id, "not a branch or leaf page"));
        }
        self.stack.push((page, 0));
        Ok(())
    }

    fn step(&mut self) -> Result<Option<Entry<'db, S>>, Error> {
        if let Some(root) = self.start.take() {
            let page = match root {
                Root::Page(pgid) => self.db.read_node(pgid)?,
                Root::Inline(page) => page,
            };
            self.push(page)?;
        }
        loop {
            let Some((page, index)) = self.stack.last_mut() else {
                return Ok(None);
            };
            if *index >= page.count() {
                self.stack.pop();
                continue;
            }
            let i = *index;
            *index += 1;
            let page = page.clone();
            if page.is_branch() {
                let (_, child) = page.branch(i).map_err(|r| self.db.corrupt(page.id, r))?;
                let child = self.db.read_node(child)?;
                self.push(child)?;
                continue;
            }
            let (flags, key, value) = page.leaf(i).map_err(|r| self.db.corrupt(page.id, r))?;
            if self.last_key.as_deref().is_some_and(|last| last >= key) {
                return Err(self.db.corrupt(page.id, "keys out of order"));
            }
            self.last_key = Some(key.to_vec());
            let value = if flags & BUCKET_LEAF_FLAG != 0 {
                Value::Bucket(
                    self.db
                        .open_bucket_value(value, page.id, self.nesting + 1)?,
                )
            } else {
                Value::Data(value.to_vec())
            };
            return Ok(Some(Entry {
                key: key.to_vec(),
                value,
            }));
        }
    }
}

impl<'db, S: ReadAt> Iterator for Iter<'db, S> {
    type Item = Result<Entry<'db, S>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(entry) => entry.map(Ok),
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}
