//! The MVCC store as the member holds it: one generation at a time, replaced as a whole
//! when a raft snapshot brings another member's state.
//!
//! Ownership hand-over, so that a restore never waits for readers: every generation
//! lives in a directory of its own (`db`, then `db.1`, `db.2`, ...) that no other
//! generation ever reuses. A restore writes the next generation's directory, swaps it
//! in, and marks the old one retired; whoever lets go of the old generation last (the
//! restore itself, or a reader finishing its request) closes it and deletes its
//! directory. At start-up the highest complete generation wins and older ones are
//! deleted, so a crash at any point leaves either the old or the new state, never
//! both halves.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use concord_mvcc::{Store, StoreOptions};
use parking_lot::RwLock;

/// The side table of what belongs to this member alone (its member and cluster ids): a
/// snapshot from another member replaces everything else but never this.
pub const MEMBER_LOCAL_TABLE: &str = "local";

/// One generation of the store. Dereferences to the [`Store`]; hold it for the duration
/// of one request only.
#[derive(Debug)]
pub struct Generation {
    /// `None` only while being dropped.
    store: Option<Store>,
    dir: PathBuf,
    /// Replaced by a newer generation: its directory goes when the last holder lets go.
    retired: AtomicBool,
}

impl Deref for Generation {
    type Target = Store;

    fn deref(&self) -> &Store {
        // Only `drop` takes the store out, and nobody derefs a generation being dropped.
        self.store
            .as_ref()
            .unwrap_or_else(|| unreachable!("a generation is used after it was dropped"))
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        // Close the store before its files go.
        drop(self.store.take());
        if self.retired.load(Ordering::Acquire)
            && let Err(error) = Store::remove_dir(&self.dir)
        {
            tracing::warn!(
                "cannot delete the replaced store {}: {error}",
                self.dir.display()
            );
        }
    }
}

/// The MVCC store, swappable as a whole when a raft snapshot replaces it.
#[derive(Debug)]
pub struct Backend {
    current: RwLock<Arc<Generation>>,
    /// The first generation's directory; later ones are its siblings `<name>.<n>`.
    base: PathBuf,
    options: StoreOptions,
}

impl Backend {
    /// Opens the newest complete generation under `base` (deleting older ones and any
    /// restore a crash interrupted).
    pub fn open(base: PathBuf, options: StoreOptions) -> Result<Backend, concord_mvcc::Error> {
        let generations = generations(&base)?;
        let newest = generations.last().map(|&(n, _)| n).unwrap_or(0);
        for (n, dir) in &generations {
            if *n != newest {
                Store::remove_dir(dir)?;
            }
        }
        let dir = generation_dir(&base, newest);
        let store = Store::open(&dir, options.clone())?;
        Ok(Backend {
            current: RwLock::new(Arc::new(Generation {
                store: Some(store),
                dir,
                retired: AtomicBool::new(false),
            })),
            base,
            options,
        })
    }

    /// The store to read from now. Hold it only for the duration of one request.
    pub fn store(&self) -> Arc<Generation> {
        self.current.read().clone()
    }

    /// Replaces the store's contents by a snapshot's, keeping this member's own side
    /// table. Readers go on with the old generation until they let go of it.
    pub fn restore(&self, bytes: &[u8]) -> Result<(), concord_mvcc::Error> {
        let old = self.store();
        let own_identity = old.meta_scan(MEMBER_LOCAL_TABLE)?;
        let next = generation_number(&self.base, &old.dir).unwrap_or(0) + 1;
        let dir = generation_dir(&self.base, next);
        let restored = Store::restore_keeping(
            &dir,
            bytes,
            self.options.clone(),
            &[(MEMBER_LOCAL_TABLE, own_identity.as_slice())],
        )?;
        self.install(restored, dir);
        Ok(())
    }
}

impl Backend {
    /// [`Backend::restore`] from a received snapshot file, verified before anything is
    /// replaced and read record by record.
    pub fn restore_from_file(&self, file: &Path) -> Result<(), concord_mvcc::Error> {
        let old = self.store();
        let own_identity = old.meta_scan(MEMBER_LOCAL_TABLE)?;
        let next = generation_number(&self.base, &old.dir).unwrap_or(0) + 1;
        let dir = generation_dir(&self.base, next);
        let restored = Store::restore_keeping_from_file(
            &dir,
            file,
            self.options.clone(),
            &[(MEMBER_LOCAL_TABLE, own_identity.as_slice())],
        )?;
        self.install(restored, dir);
        Ok(())
    }

    fn install(&self, store: Store, dir: PathBuf) {
        let fresh = Arc::new(Generation {
            store: Some(store),
            dir,
            retired: AtomicBool::new(false),
        });
        let replaced = std::mem::replace(&mut *self.current.write(), fresh);
        replaced.retired.store(true, Ordering::Release);
    }
}

/// The directory of generation `n` (0 is `base` itself).
fn generation_dir(base: &Path, n: u64) -> PathBuf {
    if n == 0 {
        return base.to_path_buf();
    }
    let mut name = base.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{n}"));
    base.with_file_name(name)
}

fn generation_number(base: &Path, dir: &Path) -> Option<u64> {
    if dir == base {
        return Some(0);
    }
    let base_name = base.file_name()?.to_str()?;
    let name = dir.file_name()?.to_str()?;
    name.strip_prefix(base_name)?
        .strip_prefix('.')?
        .parse()
        .ok()
}

/// The complete generations under `base`, oldest first. A restore's staging directory
/// (`<name>.<n>.restoring`) is not one, and is deleted.
pub(crate) fn generations(base: &Path) -> Result<Vec<(u64, PathBuf)>, concord_mvcc::Error> {
    let mut found = Vec::new();
    if base.exists() {
        found.push((0, base.to_path_buf()));
    }
    let Some(parent) = base.parent().filter(|p| p.exists()) else {
        return Ok(found);
    };
    for entry in std::fs::read_dir(parent)? {
        let path = entry?.path();
        if let Some(n) = generation_number(base, &path).filter(|&n| n > 0) {
            found.push((n, path));
        } else if let Some(name) = path.file_name().and_then(|n| n.to_str())
            && name.ends_with(".restoring")
            && generation_number(base, &path.with_extension("")).is_some()
        {
            concord_mvcc::Store::remove_dir(&path)?;
        } else if let Some(store) = concord_mvcc::Store::freeing_owner(&path)
            && !store.exists()
        {
            // The second names of a store a crash kept from closing, whose directory is
            // gone: they alone still hold its files' space. (Gone already if its
            // `.restoring` store was deleted above.)
            match std::fs::remove_dir_all(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_proto::etcdserverpb::{PutRequest, RangeRequest};

    fn put(backend: &Backend, key: &str) {
        let store = backend.store();
        let mut batch = store.write_batch();
        batch
            .put(&PutRequest {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })
            .unwrap();
        batch.commit().unwrap();
    }

    fn keys(store: &Store) -> Vec<Vec<u8>> {
        let all = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        };
        store
            .range(&all)
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| kv.key)
            .collect()
    }

    #[test]
    fn a_restore_hands_the_old_generation_to_its_last_reader() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("db");
        let source = Backend::open(dir.path().join("source"), StoreOptions::default()).unwrap();
        put(&source, "from-snapshot");
        let snapshot = source.store().snapshot_bytes().unwrap();

        let backend = Backend::open(base.clone(), StoreOptions::default()).unwrap();
        put(&backend, "local");
        let reader = backend.store();
        // The restore does not wait for the reader...
        backend.restore(&snapshot).unwrap();
        assert_eq!(keys(&backend.store()), vec![b"from-snapshot".to_vec()]);
        // ...which still reads the generation it holds, until it lets go.
        assert_eq!(keys(&reader), vec![b"local".to_vec()]);
        assert!(base.exists());
        drop(reader);
        assert!(
            !base.exists(),
            "the last holder deletes the replaced generation"
        );
        drop(backend);

        let reopened = Backend::open(base, StoreOptions::default()).unwrap();
        assert_eq!(keys(&reopened.store()), vec![b"from-snapshot".to_vec()]);
    }

    #[test]
    fn start_up_keeps_the_newest_complete_generation() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("db");
        let backend = Backend::open(base.clone(), StoreOptions::default()).unwrap();
        put(&backend, "old");
        drop(backend);
        let newer = Backend::open(dir.path().join("db.3"), StoreOptions::default()).unwrap();
        put(&newer, "new");
        drop(newer);
        std::fs::create_dir_all(dir.path().join("db.4.restoring")).unwrap();
        // Second names a crash left behind: of a restore's staging store, and of a
        // store whose directory is gone.
        for orphan in ["db.4.restoring.freeing", "db.2.freeing"] {
            std::fs::create_dir_all(dir.path().join(orphan)).unwrap();
            std::fs::write(dir.path().join(orphan).join("1"), b"held space").unwrap();
        }

        let backend = Backend::open(base.clone(), StoreOptions::default()).unwrap();
        assert_eq!(keys(&backend.store()), vec![b"new".to_vec()]);
        assert!(!base.exists());
        assert!(!dir.path().join("db.4.restoring").exists());
        assert!(!dir.path().join("db.4.restoring.freeing").exists());
        assert!(!dir.path().join("db.2.freeing").exists());
        assert!(
            dir.path().join("db.3.freeing").exists(),
            "the open store's own"
        );
    }
}
