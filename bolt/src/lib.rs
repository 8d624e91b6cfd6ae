//! Reads and writes bbolt database files, the format of etcd's backend and snapshots.
//!
//! (Work in progress: the reader and writer follow.)
//!
//! # Example
//!
//! ```
//! assert_eq!(concord_bolt::PAGE_SIZE, 4096);
//! ```

/// The page size this crate writes (bbolt's default on Linux).
pub const PAGE_SIZE: usize = 4096;
