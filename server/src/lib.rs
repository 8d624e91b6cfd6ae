//! The `concord` server: configuration, gRPC and HTTP services, the apply loop and the
//! peer transport. The only crate that knows about sockets, tasks and channels.

pub mod config;
