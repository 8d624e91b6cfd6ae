//! etcd's multi-version data model on fjall: revisions, the key index, range /
//! put / delete / txn / compact / hash, and the events each write produces.
//!
//! Owned here:
//! - [`Store`]: the backend (fjall keyspace `kv`: big-endian `main ++ sub`
//!   revision keys, plus a tombstone mark, → encoded `mvccpb.KeyValue`; keyspace
//!   `meta`: current / compact revision, applied raft index, side tables) and
//!   the in-memory key index, rebuilt at [`Store::open`]. Reads take `&self` and
//!   run concurrently with the writer.
//! - [`WriteBatch`]: one apply round; every write of the round and the applied
//!   raft index go to one fjall batch. Each write returns the watch events it
//!   produced.
//! - Errors with etcd's messages ([`Error`]).
//!
//! Conventions the server and the watch crate rely on:
//! - Responses carry the revision in `header.revision`
//!   (`Some(ResponseHeader { revision, ..Default::default() })`); the server fills
//!   the other header fields of the top-level response.
//! - Every write returns its events in execution order (PUT with `kv`; DELETE
//!   with `kv = { key, mod_revision }`), each with `prev_kv` unless
//!   [`WriteBatch::set_event_prev_kv`] turned that off. [`Store::events`] serves
//!   history to watchers that fell behind.
//! - Error texts are etcd's. On the wire etcd prefixes the mvcc ones:
//!   `Compacted` / `FutureRevision` travel as gRPC `OutOfRange` with
//!   `"etcdserver: " + text`; the `etcdserver:` errors are `InvalidArgument`.
//! - `StoreOptions::max_txn_ops` is etcd's `--max-txn-ops`; the request-size
//!   limit and lease existence are the server's business.
//!
//! ```
//! use concord_mvcc::{Store, StoreOptions};
//! use concord_proto::etcdserverpb::{PutRequest, RangeRequest};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path(), StoreOptions::default())?;
//! let mut batch = store.write_batch();
//! let (put, events) = batch.put(&PutRequest {
//!     key: b"foo".to_vec(),
//!     value: b"bar".to_vec(),
//!     ..Default::default()
//! })?;
//! batch.set_applied_index(7);
//! batch.commit()?;
//! // As in etcd, an empty store is at revision 1 and the first write is 2.
//! assert_eq!(put.header.map(|h| h.revision), Some(2));
//! assert_eq!(events.len(), 1);
//!
//! let got = store.range(&RangeRequest { key: b"foo".to_vec(), ..Default::default() })?;
//! assert_eq!(got.kvs[0].value, b"bar");
//! assert_eq!(store.applied_index(), 7);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod batch;
mod error;
mod export;
mod key_index;
mod key_map;
mod metrics;
mod pace;
mod read;
mod revision;
mod snapshot;
mod store;
mod table_read;
mod txn;
mod write_behind;

pub use batch::WriteBatch;
pub use error::Error;
pub use export::{Importer, StoreView};
pub use key_index::KeyRange;
pub use pace::DEFRAG_BYTES_PER_SEC;
pub use revision::{
    ETCD_REVISION_KEY_LEN, Revision, TOMBSTONE_MARK, decode_etcd_revision_key, decode_revision_key,
    encode_etcd_revision_key, encode_revision_key,
};
pub use snapshot::{SnapshotReader, verify_snapshot_file};
pub use store::{MetaEntry, Store, StoreOptions};
pub use txn::check_txn;

// The server shares a `Store` between its apply loop and its readers.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
};

/// The configuration of this crate's property tests: `cases` cases from a fixed seed, so
/// every run tries the same inputs, and no regression files written.
#[cfg(test)]
pub(crate) fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, RngAlgorithm, RngSeed};
    Config {
        cases,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(0x3ecc_5eed),
        failure_persistence: None,
        ..Config::default()
    }
}
