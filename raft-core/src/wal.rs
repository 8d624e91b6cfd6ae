//! `LogStore` for `concord_storage_wal::WalStorage` (filled in once that crate lands).
