//! The store's background thread: write-behind for the files fjall writes, and the
//! size of the store's tables, kept where a request can read it without a lock.
//!
//! **Write-behind** (RocksDB's `bytes_per_sync`, which fjall lacks). fjall writes a table
//! (a memtable flush of 16 MiB, a compaction's 64 MB tables, a defragment's whole store)
//! into the page cache and fsyncs it when it is complete, so the disk gets the whole table
//! at once. The raft log's `fdatasync` of a few hundred bytes, on the path of every
//! write, then queues behind it: measured on the defragment benchmark (`cargo xtask bench
//! --defrag`), puts waited 36 ms in the raft log's fsync while a defragment's tables were
//! synced, and 58 ms once while a compaction's were. Here a thread looks every
//! [`TICK`] for files in the store's directory that grew and starts the write-back of what
//! they gained (`sync_file_range(SYNC_FILE_RANGE_WRITE)`: it starts the writes, waits for
//! nothing, and promises nothing about durability, which fjall's own fsyncs still give).
//! The disk then receives a table in slices of a few MiB spread over its writing, and a
//! log fsync waits behind at most one slice.
//!
//! **Replaced tables.** The thread also holds the tables of the `kv` keyspace, so that a
//! table a compaction replaced is deleted here, not where fjall or a commit lets go of it
//! (see [`TableKeeper`]).
//!
//! **The tables' size.** [`crate::Store::db_size`] is asked before every put (etcd's quota
//! check). fjall answers it from its current version, under the lock a flush or
//! compaction holds while it fsyncs the new version's manifest: a put waited 23-28 ms
//! there. This thread reads that size every tick instead (waiting for the lock itself
//! when it has to) and keeps it in an atomic.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use fjall::Keyspace;

use crate::table_read::TableKeeper;

/// How often the thread looks; at a compaction's ~300 MB/s, about 1.5 MB of new data.
const TICK: Duration = Duration::from_millis(5);
/// Growth below this waits for the next look (one small write-back instead of many).
const MIN_WRITE_BACK: u64 = 256 * 1024;
/// Directories are listed again at least this often even when their mtime (of coarse
/// granularity) did not change.
const RELIST_EVERY: u32 = 20;
/// A file that did not grow for this many ticks is closed (fjall is done with it).
const IDLE_TICKS: u32 = 40;

/// The sizes the thread keeps current.
#[derive(Debug, Default)]
pub(crate) struct SharedSizes {
    /// Bytes of the tables of every keyspace on disk.
    pub tables: AtomicU64,
}

/// The running thread; dropping it stops and joins it.
pub(crate) struct WriteBehind {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WriteBehind {
    pub(crate) fn start(
        dir: &Path,
        kv: Keyspace,
        meta: Keyspace,
        sizes: Arc<SharedSizes>,
    ) -> std::io::Result<WriteBehind> {
        let (stop, stopped) = mpsc::channel::<()>();
        let mut files = FileWatch::new(dir);
        let mut tables = TableKeeper::default();
        let thread = std::thread::Builder::new()
            .name("store-write-behind".to_string())
            .spawn(move || {
                loop {
                    files.step();
                    tables.step(&kv);
                    let size = kv.disk_space() + meta.disk_space();
                    sizes.tables.store(size, Ordering::Release);
                    match stopped.recv_timeout(TICK) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        Ok(WriteBehind {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A file being written: the open handle and how much of it was handed to write-back.
struct Growing {
    file: File,
    written_back: u64,
    idle_ticks: u32,
}

/// The files under one directory tree, and which of them are growing.
struct FileWatch {
    root: PathBuf,
    /// Every directory of the tree with the mtime it had when last listed.
    dirs: HashMap<PathBuf, Option<SystemTime>>,
    /// Every file seen, with its handle while it grows (`None`: done, or there at start).
    files: HashMap<PathBuf, Option<Growing>>,
    ticks: u32,
    started: bool,
}

impl FileWatch {
    fn new(root: &Path) -> FileWatch {
        FileWatch {
            root: root.to_path_buf(),
            dirs: HashMap::new(),
            files: HashMap::new(),
            ticks: 0,
            started: false,
        }
    }

    fn step(&mut self) {
        self.ticks = self.ticks.wrapping_add(1);
        let relist_all = !self.started || self.ticks.is_multiple_of(RELIST_EVERY);
        if relist_all || self.any_dir_changed() {
            self.relist();
        }
        self.started = true;
        for growing in self.files.values_mut() {
            let Some(state) = growing else { continue };
            let len = state.file.metadata().map_or(0, |m| m.len());
            if len >= state.written_back + MIN_WRITE_BACK {
                start_write_back(&state.file, state.written_back, len - state.written_back);
                state.written_back = len;
                state.idle_ticks = 0;
            } else {
                state.idle_ticks += 1;
                if state.idle_ticks >= IDLE_TICKS {
                    *growing = None;
                }
            }
        }
    }

    fn any_dir_changed(&self) -> bool {
        self.dirs
            .iter()
            .any(|(dir, seen)| std::fs::metadata(dir).and_then(|m| m.modified()).ok() != *seen)
    }

    /// Lists the tree again: new files are watched from their start (files there when
    /// the thread started are not: fjall finished them earlier), vanished ones dropped
    /// (closing their handles, so that their space is freed).
    fn relist(&mut self) {
        let mut dirs = HashMap::new();
        let mut present = Vec::new();
        let mut pending = vec![self.root.clone()];
        while let Some(dir) = pending.pop() {
            let modified = std::fs::metadata(&dir).and_then(|m| m.modified()).ok();
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            dirs.insert(dir, modified);
            for entry in entries.flatten() {
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    pending.push(entry.path());
                } else if kind.is_file() {
                    present.push(entry.path());
                }
            }
        }
        let mut files = HashMap::with_capacity(present.len());
        for path in present {
            let state = match self.files.remove(&path) {
                Some(state) => state,
                None if self.started => File::open(&path).ok().map(|file| Growing {
                    file,
                    written_back: 0,
                    idle_ticks: 0,
                }),
                None => None,
            };
            files.insert(path, state);
        }
        self.dirs = dirs;
        self.files = files;
    }
}

/// Starts writing `len` bytes of `file` from `offset` back to the disk, without waiting.
/// A failure only means the data goes out later, with fjall's own fsync.
fn start_write_back(file: &File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range reads no memory of ours; it is given an open descriptor
    // (borrowed from `file` for the call) and two integers.
    #[allow(unsafe_code)]
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn watches_files_created_after_the_start_and_lets_go_of_deleted_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tables")).unwrap();
        std::fs::write(dir.path().join("old"), b"there at start").unwrap();
        let mut watch = FileWatch::new(dir.path());
        watch.step();
        assert!(matches!(
            watch.files.get(&dir.path().join("old")),
            Some(None)
        ));

        let new = dir.path().join("tables").join("1");
        let mut file = File::create(&new).unwrap();
        watch.relist();
        assert!(matches!(watch.files.get(&new), Some(Some(_))));
        file.write_all(&vec![7u8; 2 * MIN_WRITE_BACK as usize])
            .unwrap();
        watch.step();
        let written_back = watch.files[&new].as_ref().map(|g| g.written_back);
        assert_eq!(written_back, Some(2 * MIN_WRITE_BACK));

        std::fs::remove_file(&new).unwrap();
        watch.relist();
        assert!(!watch.files.contains_key(&new));
    }
}
