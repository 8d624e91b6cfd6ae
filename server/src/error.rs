//! The server crate's error: everything that can stop a member from starting or running.
//! (Errors a *client* meets are [`crate::etcd_error::EtcdError`] values, not failures of
//! the server.)

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("raft log: {0}")]
    Wal(#[from] concord_storage_wal::Error),
    #[error("backend: {0}")]
    Backend(#[from] concord_mvcc::Error),
    #[error("raft: {0}")]
    Raft(#[from] concord_raft_core::Error),
    #[error("network: {0}")]
    Net(#[from] crate::transport::NetError),
    #[error("snapshot file: {0}")]
    Snapshot(#[from] concord_bolt::Error),
    #[error("i/o: {0}")]
    Io(#[source] std::io::Error),
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Join(String),
    /// `--experimental-initial-corrupt-check` found a peer whose store diverged
    /// (etcd's words, which operators and tooling look for).
    #[error("{0:x} found data inconsistency with peers")]
    DataInconsistency(u64),
    #[error(
        "member {0:x} was removed from the cluster: start it with a fresh data dir after `member add`"
    )]
    Removed(u64),
    /// `--auth-token` options that cannot make tokens (etcd's "auth: ..." texts).
    #[error("{0}")]
    AuthToken(String),
    /// `backup` cannot copy this data dir (in use by a running member, or the target
    /// already holds one).
    #[error("{0}")]
    Backup(String),
}
