//! The crate's one error type. Messages are etcd's, byte for byte: clients
//! match them by text.

/// Everything an mvcc operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The requested revision is at or below the compaction point.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is newer than the current one.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// `ignore_value` / `ignore_lease` on a key that does not exist, or an empty
    /// `RequestOp` in a txn.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A request without a key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value` together with a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A txn branch writes one key twice.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A txn with more compares or ops than `StoreOptions::max_txn_ops`.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A range request that sorts by a target etcd does not know.
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    /// The storage engine failed; after a failed commit the store is poisoned.
    #[error("mvcc: backend storage failed: {0}")]
    Storage(#[from] fjall::Error),
    /// A file system operation outside the storage engine failed.
    #[error("mvcc: i/o failed: {0}")]
    Io(#[from] std::io::Error),
    /// The backend holds something this code did not write.
    #[error("mvcc: corrupt backend: {0}")]
    Corrupt(String),
    /// Bytes given to `Store::restore` are not a snapshot of this format.
    #[error("mvcc: invalid snapshot: {0}")]
    InvalidSnapshot(String),
    /// A defragment given up because the store's member is stopping (etcd's
    /// `ErrStopped`).
    #[error("etcdserver: server stopped")]
    Stopped,
    /// An earlier commit failed; the in-memory state can no longer be trusted.
    #[error("mvcc: store is poisoned by an earlier failed commit")]
    Poisoned,
}
