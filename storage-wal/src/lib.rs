//! The raft log on disk: CRC-framed segment files, group-commit fsync, torn-tail repair,
//! hard state, snapshot files and purge; implements raft-rs's `Storage`.
