//! etcd's gRPC services, each a thin layer over [`crate::core::Core`].

pub mod cluster;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod watch;

/// The etcd version Concord reports, for tools that check it (etcdctl, the e2e suite).
pub const ETCD_VERSION: &str = "3.4.23";
/// The cluster version Concord reports (etcd's major.minor.0).
pub const CLUSTER_VERSION: &str = "3.4.0";
