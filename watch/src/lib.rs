//! Watchers: the registry by key and range, synced and unsynced groups, catch-up from
//! MVCC history, filters, fragmenting, progress and compaction cancel.
