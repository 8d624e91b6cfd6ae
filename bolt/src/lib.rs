//! Reads and writes bbolt database files: the format of etcd's backend and of the
//! snapshot that `etcdctl snapshot save` writes, so that etcd's tools and Concord read
//! each other's snapshots. [`Db`] reads (any bbolt 1.3 file), [`Writer`] writes a fresh,
//! compact file from sorted input, and [`verify_trailer`] / [`append_trailer`] handle the
//! sha256 trailer that etcd puts after the database in a snapshot file.
//!
//! # On disk
//!
//! All integers are little-endian. The file is an array of pages (4096 bytes here; the
//! reader takes the size from the meta page), page `n` at byte `n * page_size`. Every
//! page starts with a 16-byte header `id: u64 | flags: u16 | count: u16 | overflow: u32`;
//! a page whose contents do not fit continues over `overflow` further pages.
//!
//! - Pages 0 and 1 are **meta** pages (flag 0x04): `magic: u32 = 0xED0CDAED |
//!   version: u32 = 2 | page_size: u32 | flags: u32 | root bucket (root: u64,
//!   sequence: u64) | freelist: u64 | pgid: u64 | txid: u64 | checksum: u64`, the
//!   checksum being FNV-1a 64 over the 56 bytes before it. The valid meta with the
//!   higher `txid` is the current one; `pgid` is the number of pages in use (the
//!   database's size is `pgid * page_size`).
//! - A **freelist** page (0x10) lists free page ids as `u64`s (`count`, or when that is
//!   0xFFFF, the first `u64` is the count).
//! - A **branch** page (0x01) has `count` elements `pos: u32 | ksize: u32 | pgid: u64`,
//!   each naming a child page and its first key; a **leaf** page (0x02) has `count`
//!   elements `flags: u32 | pos: u32 | ksize: u32 | vsize: u32`. Keys and values follow
//!   the element array, `pos` counting from the element's own first byte.
//! - A **bucket** is a B+tree of such pages. A leaf element with flag 0x01 is a nested
//!   bucket: its value is `root: u64 | sequence: u64`, and when `root` is 0 the bucket's
//!   only leaf page follows inline in the value (bbolt does that for buckets smaller than
//!   a quarter page without nested buckets). The meta's root bucket holds the top-level
//!   buckets; etcd's are `key`, `meta`, `lease`, `auth`, `authUsers`, `authRoles`,
//!   `members`, `members_removed`, `cluster` and `alarm`.
//! - An etcd **snapshot** file is the database followed by the 32-byte sha256 of the
//!   database bytes; etcdctl recognizes the trailer by the file length (`len % 512 == 32`).
//!
//! # Reading and writing
//!
//! The reader never loads the whole file: it reads the pages a lookup or an iterator
//! reaches through [`ReadAt`] (a file's `pread`, or a byte slice), so memory is one
//! root-to-leaf path of pages. Every offset, size and page id read from the file is
//! checked before use: a truncated or damaged file gives [`Error::Truncated`],
//! [`Error::NotBolt`] or [`Error::Corrupt`], never a panic or an allocation the file's
//! length does not justify. Iteration also checks that keys strictly increase.
//!
//! The writer streams: leaf pages are written as they fill (to the full page, as bbolt's
//! compaction fills them), branch pages bottom-up as a level fills, so memory is one
//! pending page per tree level of each open bucket, however many keys a bucket has. Keys
//! must arrive in increasing order. The result has no free pages, two meta pages and an
//! empty freelist; Go's bbolt opens it and `Tx.Check` passes (tested against etcd 3.4.23's
//! `etcdctl snapshot status` and `snapshot restore`).
//!
//! # Why not a crate from crates.io
//!
//! `bbolt-rs` (a port of the whole Go database) declares no license, memory-maps the
//! file, and pulls a CLI's and a test generator's dependencies into its normal ones; its
//! write transactions hold every dirty node in memory, which a 100-million-key snapshot
//! cannot afford. `jammdb` and `boltdb` have file formats of their own, and `bolt-lite`
//! reads only, into memory. What etcd's snapshots need is small: this crate.
//!
//! # Example
//!
//! ```
//! use concord_bolt::{Db, Value, Writer};
//! use std::io::Cursor;
//!
//! let mut writer = Writer::new(Cursor::new(Vec::new()))?;
//! writer.begin_bucket(b"key")?;
//! for rev in 1u64..=1000 {
//!     writer.put(&rev.to_be_bytes(), format!("value {rev}").as_bytes())?;
//! }
//! writer.end_bucket()?;
//! writer.begin_bucket(b"meta")?;
//! writer.put(b"consistent_index", &42u64.to_be_bytes())?;
//! writer.end_bucket()?;
//! let (file, summary) = writer.finish_snapshot()?; // db + sha256 trailer
//! assert_eq!(summary.keys, 1001);
//!
//! let bytes = file.into_inner();
//! let db_len = concord_bolt::verify_trailer(&bytes)?;
//! let db = Db::open_len(&bytes, db_len)?;
//! let keys = db.bucket(b"key")?.expect("the key bucket");
//! assert_eq!(keys.get(&7u64.to_be_bytes())?, Some(b"value 7".to_vec()));
//! assert_eq!(keys.iter().count(), 1000);
//! let names: Vec<Vec<u8>> = db.root().iter().map(|e| Ok(e?.key)).collect::<Result<_, concord_bolt::Error>>()?;
//! assert_eq!(names, [b"key".to_vec(), b"meta".to_vec()]);
//! let meta = db.bucket(b"meta")?.expect("meta");
//! assert!(meta.is_inline());
//! assert!(matches!(db.root().iter().next(), Some(Ok(e)) if matches!(e.value, Value::Bucket(_))));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod page;
mod read;
mod trailer;
mod write;

use std::io;
use std::path::{Path, PathBuf};

pub use read::{Bucket, Db, Entry, Iter, ReadAt, Value};
pub use trailer::{TRAILER_SIZE, append_trailer, has_trailer, strip_trailer, verify_trailer};
pub use write::{MAX_KEY_SIZE, MAX_VALUE_SIZE, Summary, Writer};

/// The page size this crate writes (bbolt's default on Linux and etcd's).
pub const PAGE_SIZE: usize = 4096;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing failed.
    #[error("bolt i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Neither meta page is valid: not a bbolt file, or both metas are damaged.
    #[error("{path} is not a bolt database: {reason}")]
    NotBolt { path: PathBuf, reason: String },
    /// The file is shorter than its meta page says.
    #[error("bolt database {path} is truncated: {reason}")]
    Truncated { path: PathBuf, reason: String },
    /// A page, element or bucket contradicts the format or the rest of the file.
    #[error("bolt database {path} is corrupt at page {pgid}: {reason}")]
    Corrupt {
        path: PathBuf,
        pgid: u64,
        reason: String,
    },
    /// A snapshot file without etcd's sha256 trailer (its length is not `512n + 32`).
    #[error(
        "snapshot {path} has no sha256 trailer ({len} bytes; a snapshot from `etcdctl snapshot save` has 512n + 32)"
    )]
    MissingTrailer { path: PathBuf, len: u64 },
    /// The snapshot's sha256 trailer does not match its database bytes.
    #[error(
        "snapshot {path} is damaged: its trailer says sha256 {expected}, the data hashes to {actual}"
    )]
    TrailerMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// The writer got a key not greater than the one before it in the same bucket.
    #[error("keys out of order: {key:?} after {previous:?}")]
    OutOfOrder { key: Vec<u8>, previous: Vec<u8> },
    /// The writer was used against its rules (a put outside a bucket, an oversized key,
    /// an unbalanced `end_bucket`).
    #[error("bolt writer: {0}")]
    Invalid(String),
}

impl Error {
    fn io(path: impl AsRef<Path>, source: io::Error) -> Error {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}
