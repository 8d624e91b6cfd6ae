//! The `concord` server: configuration, gRPC and HTTP services, the apply loop and the
//! peer transport. The only crate that knows about sockets, tasks and channels.
//!
//! A write travels `grpc::kv` → [`core::Core::propose`] (forwarded to the leader by a
//! follower) → [`driver`] (the thread owning raft) → [`state`] (the synchronous state
//! machine: MVCC, leases, membership) → the entry's result, carried by raft-core's
//! proposal outcome back to the driver's waiter. Reads wait for a ReadIndex barrier
//! and are served from the local store.
//!
//! ```no_run
//! # async fn example() -> Result<(), concord_server::error::Error> {
//! use concord_server::config::{self, Invocation};
//! let args = vec!["--name".to_string(), "m1".to_string()];
//! let Invocation::Run(config) = config::resolve(args, |_| None, Vec::new(), |_| unreachable!())? else { return Ok(()) };
//! let member = concord_server::member::start(*config).await?;
//! member.stop().await;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod config;
pub mod core;
pub mod corruption;
pub mod driver;
pub mod error;
pub mod etcd_error;
pub mod grpc;
pub mod h2_authority;
pub mod http;
pub mod lease_expiry;
pub mod listener;
pub mod member;
pub mod reconfig;
pub mod state;
mod stream_tasks;
pub mod tls;
pub mod transport;
pub mod watch_hub;
