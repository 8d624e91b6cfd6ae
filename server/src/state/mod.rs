//! The state machine: everything a committed raft entry changes (the MVCC store, leases,
//! membership, the watch events it publishes) and the result it answers, applied
//! synchronously on the raft driver thread. Nothing here knows about tasks, sockets or
//! async channels (the tidy check enforces it): the faces reach this state through the
//! driver, and read it through [`backend::Backend`].
//!
//! ```no_run
//! # fn example(config: &concord_server::config::Config) -> Result<(), concord_mvcc::Error> {
//! use std::sync::Arc;
//! use concord_server::state::{Machine, ApplyObserver, backend::Backend, leases::LeaseKeeper,
//!     alarms::{Alarms, Quota}, auth::AuthStore, membership::Membership, snapshots::SnapshotFiles};
//! # struct Quiet;
//! # impl ApplyObserver for Quiet {
//! #     fn membership_changed(&mut self, _: &Membership) {}
//! #     fn published(&mut self, _: &concord_proto::etcdserverpb::Member) {}
//! # }
//! let backend = Arc::new(Backend::open("m1.concord/member/db".into(), Default::default())?);
//! let leases = Arc::new(LeaseKeeper::new(config, 1));
//! let snapshots = Arc::new(SnapshotFiles::new("m1.concord/member/snap-stream".into()).map_err(concord_mvcc::Error::from)?);
//! let auth = Arc::new(AuthStore::new(config.auth_token_ttl));
//! let alarms = Arc::new(Alarms::new(Quota::new(config.quota_backend_bytes)));
//! let machine = Machine::new(backend, 1, Membership::default(), leases, auth, alarms, snapshots, Box::new(Quiet))?;
//! // raft-core's `Node::handle_ready(&mut machine, ..)` applies committed entries to it
//! // and hands each entry's `ApplyResult` to the outcome of the proposal that wrote it.
//! # drop(machine); Ok(()) }
//! ```

pub mod alarms;
mod apply;
pub mod auth;
pub mod backend;
pub mod backup;
pub mod etcd_snapshot;
pub mod leases;
pub mod membership;
pub mod snapshots;
pub mod v2;

pub use apply::{ApplyObserver, EventSink, Machine};
