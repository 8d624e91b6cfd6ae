//! etcd v3's wire protocol, generated at build time from our own `.proto` files
//! (no system `protoc` needed). Owned here: `etcdserverpb`, `mvccpb`, `authpb`,
//! `v3lockpb`, `v3electionpb`.
