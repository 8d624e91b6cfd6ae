//! Watchers: the registry by key and range, synced and unsynced groups, catch-up from
//! MVCC history, filters, prev_kv, fragmenting, progress and compaction cancel, as etcd
//! 3.4's watch service behaves on the wire. Synchronous and single-threaded: no tokio.
//!
//! Owned here:
//! - [`Registry`]: every watcher of a member. Streams ([`Registry::open_stream`]) own
//!   watchers and a queue of [`Outgoing`] responses that the server drains
//!   ([`Registry::drain_into`]) when the stream's [`StreamWaker`] fires; the caller
//!   fires the wake-ups a call made due ([`Registry::take_wakes`]) after letting go of
//!   the registry, so a woken sender never waits on the caller's lock. Headers carry
//!   only `revision`; the server fills in cluster, member and term as it encodes them
//!   ([`Outgoing::encode`]). [`Registry::drain`] gives them as [`WatchResponse`]s.
//! - Encoding once ([`wire`]): a published event is encoded when the first watcher
//!   takes it and its bytes are shared by every other one; per watcher, fan-out costs
//!   a reference count and a queue entry, not a copy of the event.
//! - Matching: synced single-key watchers sit in a hash map, range watchers in an
//!   [`interval::IntervalIndex`], watchers of the same key or range grouped under one
//!   entry; each published event costs a lookup and a stabbing query over the distinct
//!   keys and ranges, not a scan of all watchers.
//! - Synced / unsynced: a watcher that starts at or below the published revision, or
//!   whose stream's queue is full when its events come, is unsynced. The server takes
//!   [`CatchUpTask`]s ([`Registry::take_catch_up`]), reads history outside its lock
//!   ([`CatchUpTask::run`] over a [`History`], e.g. the MVCC [`concord_mvcc::Store`]),
//!   and hands the outcome back ([`Registry::finish_catch_up`]). A watcher joins the
//!   synced group only when history reached the published revision, and keeps a
//!   `next_rev` below which published events are skipped: nothing is missed or
//!   repeated at the seam, even when a write commits between the read and the
//!   hand-back. Publishing never waits: a full stream sets its watchers aside.
//! - Progress ([`Registry::progress_tick`], [`Registry::request_progress`]), etcd's
//!   compaction cancel (`compact_revision`, header revision 0), its duplicate-id and
//!   empty-range refusals ([`Error`] texts), and [`fragment()`].
//!
//! ```
//! use concord_proto::etcdserverpb::WatchCreateRequest;
//! use concord_proto::mvccpb::{Event, KeyValue};
//! use concord_watch::{Limits, Registry};
//!
//! let mut registry = Registry::new(Limits::default(), 10);
//! let stream = registry.open_stream(Box::new(|| {}));
//! let prefix = WatchCreateRequest {
//!     key: b"foo/".to_vec(),
//!     range_end: b"foo0".to_vec(),
//!     ..Default::default()
//! };
//! assert_eq!(registry.create(stream, &prefix)?, 0);
//! let put = |key: &[u8], rev| Event {
//!     kv: Some(KeyValue { key: key.to_vec(), mod_revision: rev, ..Default::default() }),
//!     ..Default::default()
//! };
//! registry.publish(vec![put(b"foo/a", 11), put(b"bar", 11)]);
//! let out = registry.drain(stream);
//! assert!(out[0].created);
//! assert_eq!(out[1].events.len(), 1);
//! assert_eq!(out[1].header.as_ref().map(|h| h.revision), Some(11));
//! # Ok::<(), concord_watch::Error>(())
//! ```

mod error;
mod fragment;
pub mod interval;
mod registry;
mod synced;
pub mod wire;

pub use error::Error;
pub use fragment::fragment;
pub use registry::{
    CatchUpOutcome, CatchUpTask, Counts, History, Limits, Registry, StreamId, StreamWaker,
};
pub use wire::{Events, Outgoing, WireEvent};

pub use concord_proto::etcdserverpb::WatchResponse;

#[cfg(test)]
mod tests;
