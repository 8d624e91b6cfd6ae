//! The crate's one error type. The texts of the refusals are etcd's: they travel to
//! clients as `cancel_reason`.

/// Why a watch could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client chose a watch id already in use on the stream.
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateId,
    /// `key >= range_end`.
    #[error("mvcc: watcher range is empty")]
    EmptyRange,
    /// The stream was closed (or never opened).
    #[error("watch stream {0} is not open")]
    UnknownStream(u64),
}
