//! etcd's multi-version data model on fjall: revisions, the key index, range / put /
//! delete / txn / compact / hash, and the events each write produces.
