//! The consensus driver around raft-rs's `RawNode`: `Ready` handling in one place,
//! proposals with ids, batched ReadIndex, membership changes, snapshots, and a
//! deterministic in-process cluster harness.
