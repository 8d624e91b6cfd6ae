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
//! **Freeing deleted files a step at a time.** Deleting a 64 MB table frees its blocks
//! at once, ~20 ms of file system work here (ext4 with `discard`), and while that runs
//! every write that needs the file system journal waits, the raft log's and fjall's
//! own included: puts waited 22-30 ms whenever fjall dropped a compaction's old
//! tables (at a memtable rotation, under its version lock, or at a defragment's end).
//! So the thread gives each big file of the store a second name (a hard link in
//! `<dir>.freeing`, see [`Freeing`]): when fjall deletes a file it only removes a
//! name, and the thread then frees the blocks [`FREE_STEP`] at a time. It shrinks a
//! file only when its own link is the file's last name, so nothing can read it.
//!
//! **The tables' size.** [`crate::Store::db_size`] is asked before every put (etcd's quota
//! check). fjall answers it from its current version, under the lock a flush or
//! compaction holds while it fsyncs the new version's manifest: a put waited 23-28 ms
//! there. This thread reads that size every tick instead (waiting for the lock itself
//! when it has to) and keeps it in an atomic.
//!
//! **Freeing flushed memtables off fjall's lock.** fjall frees a memtable where it
//! drops its last reference to it, which is under the keyspace's version lock (when a
//! flush installs its table and retires old versions), and that lock is taken by every
//! commit. The free walks the memtable's skip list node by node, and a memtable holds a
//! node per write, not per key: the `meta` keyspace's gets a new version of the applied
//! index and the current revision at every commit, up to about a million nodes in fjall's
//! 64 MiB. Measured on the defragment benchmark, puts waited 254-348 ms while one was
//! freed. So the thread holds a reference to each keyspace's active memtable
//! ([`MemtableKeeper`]); fjall's own drops then only count down, and once the thread's
//! reference is the last one it hands the memtable to a short-lived thread of its own to
//! free, so that this thread's write-back does not wait either.
//!
//! **Asleep when the store is quiet.** Ticking every 5 ms costs an idle member more CPU
//! than a whole idle etcd (measured: 31 against 13 clock ticks in 30 s; 6 before this
//! thread). Every flush and compaction follows a commit, and a defragment is called, so
//! once nothing has grown or waited to be freed for [`QUIET_TICKS`] ticks the thread
//! sleeps for [`ASLEEP_FOR`] and a commit or a defragment wakes it
//! ([`WriteBehind::wake`]: one relaxed load on the commit path while it is awake).

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use fjall::Keyspace;

use crate::table_read::{HeldMemtable, active_memtable};

/// How often the thread looks; at a compaction's ~300 MB/s, about 1.5 MB of new data.
const TICK: Duration = Duration::from_millis(5);
/// Growth below this waits for the next look (one small write-back instead of many).
const MIN_WRITE_BACK: u64 = 256 * 1024;
/// Directories are listed again at least this often even when their mtime (of coarse
/// granularity) did not change.
const RELIST_EVERY: u32 = 20;
/// A file that did not grow for this many ticks is closed (fjall is probably done with
/// it; if it grows again, a later listing opens it again).
const IDLE_TICKS: u32 = 40;
/// Files from this size on get a second name, so that their blocks are freed here.
const LINK_MIN: u64 = 1024 * 1024;
/// How much of a deleted file's space is freed per tick.
const FREE_STEP: u64 = 4 * 1024 * 1024;
/// Ticks with nothing growing or being freed before the thread sleeps: long enough for
/// fjall to start the flush or compaction a commit has just asked for.
const QUIET_TICKS: u32 = IDLE_TICKS;
/// How long the thread sleeps unless woken (it then looks once, and keeps the tables'
/// size current for changes no commit announced).
const ASLEEP_FOR: Duration = Duration::from_secs(1);

/// The sizes the thread keeps current.
#[derive(Debug, Default)]
pub(crate) struct SharedSizes {
    /// Bytes of the tables of every keyspace on disk.
    pub tables: AtomicU64,
}

impl SharedSizes {
    /// Reads the tables' size of the store's keyspaces now (fjall's answer, which may
    /// wait for a flush or compaction to install its tables).
    pub(crate) fn refresh(&self, kv: &Keyspace, meta: &Keyspace) {
        self.tables
            .store(kv.disk_space() + meta.disk_space(), Ordering::Release);
    }
}

/// What the store tells its thread.
enum Signal {
    /// Something was written or is about to be: look every [`TICK`] again.
    Wake,
    Stop,
}

/// The running thread; dropping it stops and joins it.
pub(crate) struct WriteBehind {
    signal: mpsc::Sender<Signal>,
    /// Set while the thread sleeps for [`ASLEEP_FOR`].
    asleep: Arc<AtomicBool>,
    /// How many times a [`Signal::Wake`] reached the thread.
    #[cfg_attr(not(test), expect(dead_code, reason = "only the tests read it"))]
    woken: Arc<AtomicU64>,
    /// How many memtables with entries the thread freed itself ([`MemtableKeeper`]).
    #[cfg_attr(not(test), expect(dead_code, reason = "only the tests read it"))]
    memtables_freed: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl WriteBehind {
    pub(crate) fn start(
        dir: &Path,
        kv: Keyspace,
        meta: Keyspace,
        sizes: Arc<SharedSizes>,
    ) -> std::io::Result<WriteBehind> {
        let (signal, signals) = mpsc::channel::<Signal>();
        let asleep = Arc::new(AtomicBool::new(false));
        let mut files = FileWatch::new(dir);
        let memtables_freed = Arc::new(AtomicU64::new(0));
        let mut memtables =
            MemtableKeeper::new(vec![kv.clone(), meta.clone()], memtables_freed.clone());
        let thread_asleep = asleep.clone();
        let woken = Arc::new(AtomicU64::new(0));
        let thread_woken = woken.clone();
        let thread = std::thread::Builder::new()
            .name("store-write-behind".to_string())
            .spawn(move || {
                let mut quiet_ticks = 0u32;
                loop {
                    memtables.look();
                    if files.step() {
                        quiet_ticks = 0;
                    } else {
                        quiet_ticks = quiet_ticks.saturating_add(1);
                    }
                    sizes.refresh(&kv, &meta);
                    let wait = if quiet_ticks >= QUIET_TICKS {
                        thread_asleep.store(true, Ordering::Release);
                        ASLEEP_FOR
                    } else {
                        TICK
                    };
                    let signal = signals.recv_timeout(wait);
                    thread_asleep.store(false, Ordering::Release);
                    match signal {
                        Ok(Signal::Wake) => {
                            thread_woken.fetch_add(1, Ordering::Relaxed);
                            quiet_ticks = 0;
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        Ok(WriteBehind {
            signal,
            asleep,
            woken,
            memtables_freed,
            thread: Some(thread),
        })
    }

    /// Wakes the thread if it sleeps: the store is writing (a commit, a defragment).
    pub(crate) fn wake(&self) {
        if self.asleep.load(Ordering::Relaxed) && self.asleep.swap(false, Ordering::AcqRel) {
            let _ = self.signal.send(Signal::Wake);
        }
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        let _ = self.signal.send(Signal::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Holds a reference to every memtable of its keyspaces from when it first sees it
/// active until fjall has let go of it, then frees it on a thread of its own (see the
/// module's doc). A memtable that is active for less than one look escapes it; it can
/// hold only what a tick's writes put in it, and fjall frees it as before.
struct MemtableKeeper {
    keyspaces: Vec<Keyspace>,
    /// Each keyspace's active memtable at the last look.
    active: Vec<Option<u64>>,
    held: Vec<HeldMemtable>,
    freed: Arc<AtomicU64>,
}

impl MemtableKeeper {
    fn new(keyspaces: Vec<Keyspace>, freed: Arc<AtomicU64>) -> MemtableKeeper {
        let active = vec![None; keyspaces.len()];
        MemtableKeeper {
            keyspaces,
            active,
            held: Vec::new(),
            freed,
        }
    }

    /// Takes hold of memtables that became active since the last look, and frees the
    /// ones only this keeper still holds.
    fn look(&mut self) {
        for (keyspace, seen) in self.keyspaces.iter().zip(&mut self.active) {
            let memtable = active_memtable(keyspace);
            if *seen != Some(memtable.id()) {
                *seen = Some(memtable.id());
                self.held.push(memtable);
            }
        }
        let released: Vec<HeldMemtable> = self
            .held
            .extract_if(.., |memtable| memtable.is_last_reference())
            .collect();
        let with_entries = released.iter().filter(|m| !m.is_empty()).count();
        if with_entries > 0 {
            self.freed.fetch_add(with_entries as u64, Ordering::Relaxed);
            // If no thread can be started, the closure, and the memtables with it, are
            // dropped here: freed on this thread, still off fjall's lock.
            let _ = std::thread::Builder::new()
                .name("store-free-memtable".to_string())
                .spawn(move || drop(released));
        }
    }
}

/// A file being written: the open handle and how much of it was handed to write-back.
struct Growing {
    file: File,
    written_back: u64,
    /// Its length at the last look.
    len: u64,
    /// Looks since it last grew.
    idle_ticks: u32,
}

/// What the thread knows of one file.
enum Watched {
    Growing(Growing),
    /// Not being written as far as the thread knows: there at start, or idle. A table
    /// can sit idle for longer than [`IDLE_TICKS`] and then grow again: a defragment's
    /// first table stays small while the compaction reads through the history that it
    /// drops (half the store in the defragment benchmark), then takes the live data
    /// fast. Missing that growth left 63 MB for fjall's fsync, and a raft log fsync
    /// waited 30-40 ms behind it.
    Still {
        len: u64,
        written_back: u64,
    },
}

/// The files under one directory tree, and which of them are growing.
struct FileWatch {
    root: PathBuf,
    /// Every directory of the tree with the mtime it had when last listed.
    dirs: HashMap<PathBuf, Option<SystemTime>>,
    /// Every file seen, with its handle while it grows.
    files: HashMap<PathBuf, Watched>,
    freeing: Freeing,
    ticks: u32,
    started: bool,
}

impl FileWatch {
    fn new(root: &Path) -> FileWatch {
        FileWatch {
            root: root.to_path_buf(),
            dirs: HashMap::new(),
            files: HashMap::new(),
            freeing: Freeing::open(root),
            ticks: 0,
            started: false,
        }
    }

    /// One look: returns whether anything is still growing or waiting to be freed.
    fn step(&mut self) -> bool {
        self.ticks = self.ticks.wrapping_add(1);
        let relist_all = !self.started || self.ticks.is_multiple_of(RELIST_EVERY);
        if relist_all || self.any_dir_changed() {
            self.relist();
        }
        self.started = true;
        for (path, watched) in &mut self.files {
            let Watched::Growing(state) = watched else {
                continue;
            };
            let len = state.file.metadata().map_or(0, |m| written_extent(&m));
            if len >= LINK_MIN {
                self.freeing.adopt(path);
            }
            if len > state.len {
                state.len = len;
                state.idle_ticks = 0;
            } else {
                state.idle_ticks += 1;
            }
            if len >= state.written_back + MIN_WRITE_BACK {
                start_write_back(&state.file, state.written_back, len - state.written_back);
                state.written_back = len;
            } else if state.idle_ticks >= IDLE_TICKS {
                *watched = Watched::Still {
                    len,
                    written_back: state.written_back,
                };
            }
        }
        self.freeing.step();
        let growing = self
            .files
            .values()
            .any(|watched| matches!(watched, Watched::Growing(_)));
        growing || !self.freeing.queue.is_empty()
    }

    fn any_dir_changed(&self) -> bool {
        self.dirs
            .iter()
            .any(|(dir, seen)| std::fs::metadata(dir).and_then(|m| m.modified()).ok() != *seen)
    }

    /// Lists the tree again: new files are watched from their start (files there when
    /// the thread started are not: fjall finished them earlier), big ones get their
    /// second name, and vanished ones are dropped (closing their handles) and handed to
    /// [`Freeing`].
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
            let len = std::fs::metadata(&path).map_or(0, |m| written_extent(&m));
            if len >= LINK_MIN {
                self.freeing.adopt(&path);
            }
            let watched = match self.files.remove(&path) {
                Some(Watched::Still {
                    len: seen,
                    written_back,
                }) if len > seen => watch_growing(&path, seen, written_back),
                Some(watched) => watched,
                None if self.started => watch_growing(&path, 0, 0),
                None => Watched::Still {
                    len,
                    written_back: len,
                },
            };
            files.insert(path, watched);
        }
        for vanished in self.files.keys() {
            self.freeing.vanished(vanished);
        }
        self.dirs = dirs;
        self.files = files;
    }
}

/// How far a file has been written: its length, or, for a file made long ahead of its
/// writes (fjall sets a new journal's length to 64 MiB and fills it from the start),
/// the bytes it has allocated, which the file system counts as soon as they are written
/// to the page cache. Measured by its length, such a journal never grew: it was never
/// written back, and fjall's fsync of it at every memtable flush, which holds the
/// journal's lock that every commit takes, wrote 1.1 MB and made a put wait 15 ms at
/// the start of the defragment benchmark's defragment.
fn written_extent(metadata: &std::fs::Metadata) -> u64 {
    metadata.len().min(metadata.blocks().saturating_mul(512))
}

/// Opens the file at `path` to watch it grow from `len`, of which `written_back` bytes
/// were handed to write-back already.
fn watch_growing(path: &Path, len: u64, written_back: u64) -> Watched {
    match File::open(path) {
        Ok(file) => Watched::Growing(Growing {
            file,
            written_back,
            len,
            idle_ticks: 0,
        }),
        Err(_) => Watched::Still { len, written_back },
    }
}

/// What [`freeing_dir`] appends to the store directory's name.
const FREEING_SUFFIX: &str = ".freeing";

/// The directory beside the store's `root` that holds [`Freeing`]'s second names.
pub(crate) fn freeing_dir(root: &Path) -> PathBuf {
    let mut name = root.file_name().unwrap_or_default().to_os_string();
    name.push(FREEING_SUFFIX);
    root.with_file_name(name)
}

/// The store directory whose second names `path` would hold, if `path` is named as a
/// [`freeing_dir`] is.
pub(crate) fn freeing_owner(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    Some(path.with_file_name(name.strip_suffix(FREEING_SUFFIX)?))
}

impl Drop for Freeing {
    /// A closed store leaves no second names behind: deleting its directory later
    /// then frees its files (at once, as without this thread), and nothing is left
    /// for a store that may never open there again.
    fn drop(&mut self) {
        let Some(dir) = &self.dir else { return };
        for link in self.links.values().chain(self.queue.iter()) {
            let _ = std::fs::remove_file(link);
        }
        let _ = std::fs::remove_dir(dir);
    }
}

/// Second names (hard links in `<dir>.freeing`) for the store's big files, and the
/// deleted ones whose blocks are being freed.
struct Freeing {
    /// `None` when the directory cannot be made: files are then freed where deleted.
    dir: Option<PathBuf>,
    /// A store file's path → its second name.
    links: HashMap<PathBuf, PathBuf>,
    /// Second names that are their file's last name: shrunk a step per tick, then removed.
    queue: VecDeque<PathBuf>,
    next_name: u64,
}

impl Freeing {
    /// Opens `<root>.freeing`; what an earlier run left there is freed too.
    fn open(root: &Path) -> Freeing {
        let dir = freeing_dir(root);
        let mut freeing = Freeing {
            dir: std::fs::create_dir_all(&dir).ok().map(|()| dir.clone()),
            links: HashMap::new(),
            queue: VecDeque::new(),
            next_name: 0,
        };
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                freeing.release(entry.path());
            }
        }
        freeing
    }

    /// Gives the store's file at `path` a second name, once.
    fn adopt(&mut self, path: &Path) {
        let Some(dir) = &self.dir else { return };
        if self.links.contains_key(path) {
            return;
        }
        loop {
            self.next_name += 1;
            let link = dir.join(self.next_name.to_string());
            match std::fs::hard_link(path, &link) {
                Ok(()) => {
                    self.links.insert(path.to_path_buf(), link);
                    return;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                // Gone already, or no links here: fjall frees it where it deletes it.
                Err(_) => return,
            }
        }
    }

    /// The store's file at `path` was deleted (or renamed away).
    fn vanished(&mut self, path: &Path) {
        if let Some(link) = self.links.remove(path) {
            self.release(link);
        }
    }

    /// Queues `link` for freeing if it is its file's last name; otherwise removing the
    /// name frees nothing and costs nothing.
    fn release(&mut self, link: PathBuf) {
        match std::fs::symlink_metadata(&link) {
            Ok(meta) if meta.is_file() && meta.nlink() == 1 => self.queue.push_back(link),
            Ok(meta) if meta.is_file() => {
                let _ = std::fs::remove_file(&link);
            }
            _ => {}
        }
    }

    /// Frees [`FREE_STEP`] of the first queued file, removing it once empty.
    fn step(&mut self) {
        let Some(link) = self.queue.front() else {
            return;
        };
        let shrunk = std::fs::OpenOptions::new()
            .write(true)
            .open(link)
            .and_then(|file| {
                // Checked again: a link made the file reachable once more is left alone.
                let meta = file.metadata()?;
                if meta.nlink() != 1 || meta.len() == 0 {
                    return Ok(true);
                }
                file.set_len(meta.len().saturating_sub(FREE_STEP))?;
                Ok(meta.len() <= FREE_STEP)
            });
        if shrunk.unwrap_or(true) {
            let _ = std::fs::remove_file(link);
            self.queue.pop_front();
        }
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

    /// Waits (up to 30 s) until `condition` holds.
    fn wait_until(what: &str, condition: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !condition() {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: not within 30 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_thread_sleeps_while_the_store_is_quiet_and_a_commit_wakes_it() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            crate::Store::open(&dir.path().join("db"), crate::StoreOptions::default()).unwrap();
        let write_behind = &store.write_behind;
        wait_until("asleep", || write_behind.asleep.load(Ordering::Acquire));
        let woken = write_behind.woken.load(Ordering::Relaxed);
        // Reads do not wake it.
        assert_eq!(store.current_revision(), 1);
        assert!(write_behind.asleep.load(Ordering::Acquire));
        let mut batch = store.write_batch();
        batch
            .put(&concord_proto::etcdserverpb::PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })
            .unwrap();
        batch.commit().unwrap();
        wait_until("woken by the commit", || {
            write_behind.woken.load(Ordering::Relaxed) > woken
        });
        // Nothing grows after it, so it goes back to sleep.
        wait_until("asleep again", || {
            write_behind.asleep.load(Ordering::Acquire)
        });
    }

    #[test]
    fn a_flushed_memtable_is_freed_by_the_thread_after_fjall_lets_go_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            crate::Store::open(&dir.path().join("db"), crate::StoreOptions::default()).unwrap();
        let freed = &store.write_behind.memtables_freed;
        // Every commit adds versions of the counters to the `meta` memtable, which the
        // thread takes hold of at its first look.
        wait_until("the thread's first look", || {
            store.write_behind.asleep.load(Ordering::Acquire)
        });
        let commit_some = |from: u64| {
            for index in from..from + 100 {
                let mut batch = store.write_batch();
                batch
                    .put(&concord_proto::etcdserverpb::PutRequest {
                        key: format!("k{index}").into_bytes(),
                        value: b"v".to_vec(),
                        ..Default::default()
                    })
                    .unwrap();
                batch.set_applied_index(index);
                batch.commit().unwrap();
            }
        };
        commit_some(1);
        assert_eq!(freed.load(Ordering::Relaxed), 0, "nothing flushed yet");
        store.meta.rotate_memtable_and_wait().unwrap();
        store.kv.rotate_memtable_and_wait().unwrap();
        // fjall retires the versions that still list a flushed memtable one flush
        // later, and drops its last references then.
        wait_until("the thread looked at the new memtables", || {
            store.write_behind.asleep.load(Ordering::Acquire)
        });
        commit_some(101);
        store.meta.rotate_memtable_and_wait().unwrap();
        store.kv.rotate_memtable_and_wait().unwrap();
        // The thread's references were the last ones, so the frees happened on its side.
        wait_until("the first flushed memtables freed by the thread", || {
            freed.load(Ordering::Relaxed) >= 2
        });
        assert_eq!(store.applied_index(), 200);
    }

    #[test]
    fn watches_files_created_after_the_start_and_lets_go_of_deleted_ones() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("db");
        std::fs::create_dir_all(dir.join("tables")).unwrap();
        std::fs::write(dir.join("old"), b"there at start").unwrap();
        let mut watch = FileWatch::new(&dir);
        watch.step();
        assert!(matches!(
            watch.files.get(&dir.join("old")),
            Some(Watched::Still { .. })
        ));

        let new = dir.join("tables").join("1");
        let mut file = File::create(&new).unwrap();
        watch.relist();
        assert!(matches!(watch.files.get(&new), Some(Watched::Growing(_))));
        file.write_all(&vec![7u8; 2 * MIN_WRITE_BACK as usize])
            .unwrap();
        watch.step();
        assert_eq!(written_back(&watch, &new), 2 * MIN_WRITE_BACK);

        std::fs::remove_file(&new).unwrap();
        watch.relist();
        assert!(!watch.files.contains_key(&new));
    }

    fn written_back(watch: &FileWatch, path: &Path) -> u64 {
        match &watch.files[path] {
            Watched::Growing(growing) => growing.written_back,
            Watched::Still { written_back, .. } => *written_back,
        }
    }

    #[test]
    fn a_file_that_grows_again_after_sitting_idle_is_written_back_again() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("db");
        std::fs::create_dir_all(&dir).unwrap();
        let mut watch = FileWatch::new(&dir);
        watch.step();
        let table = dir.join("table");
        let mut file = File::create(&table).unwrap();
        watch.relist();
        file.write_all(&vec![1u8; MIN_WRITE_BACK as usize]).unwrap();
        watch.step();
        assert_eq!(written_back(&watch, &table), MIN_WRITE_BACK);
        // A little growth below the write-back size does not count as idle...
        for _ in 0..IDLE_TICKS - 1 {
            watch.step();
        }
        file.write_all(b"a few bytes").unwrap();
        watch.step();
        assert!(matches!(watch.files[&table], Watched::Growing(_)));
        // ...but no growth for IDLE_TICKS looks closes it,
        for _ in 0..IDLE_TICKS {
            watch.step();
        }
        assert!(matches!(watch.files[&table], Watched::Still { .. }));
        assert!(!watch.step(), "nothing is growing");
        // and when it grows again the next listing watches it from where it was.
        file.write_all(&vec![2u8; 3 * MIN_WRITE_BACK as usize])
            .unwrap();
        watch.relist();
        assert!(matches!(watch.files[&table], Watched::Growing(_)));
        watch.step();
        let len = std::fs::metadata(&table).unwrap().len();
        assert_eq!(written_back(&watch, &table), len);
    }

    #[test]
    fn a_file_made_long_ahead_of_its_writes_is_written_back_as_it_fills() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("db");
        std::fs::create_dir_all(&dir).unwrap();
        let mut watch = FileWatch::new(&dir);
        watch.step();
        let journal = dir.join("1.jnl");
        let mut file = File::create(&journal).unwrap();
        file.set_len(64 * 1024 * 1024).unwrap();
        watch.relist();
        watch.step();
        assert_eq!(written_back(&watch, &journal), 0, "nothing written yet");
        file.write_all(&vec![1u8; 2 * MIN_WRITE_BACK as usize])
            .unwrap();
        watch.step();
        assert_eq!(written_back(&watch, &journal), 2 * MIN_WRITE_BACK);
        file.write_all(&vec![2u8; MIN_WRITE_BACK as usize]).unwrap();
        watch.step();
        assert_eq!(written_back(&watch, &journal), 3 * MIN_WRITE_BACK);
    }

    fn names_in(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn a_deleted_big_file_is_freed_in_steps_and_a_renamed_one_is_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("db");
        std::fs::create_dir_all(&dir).unwrap();
        let freeing_dir = root.path().join("db.freeing");
        let big = vec![1u8; (2 * FREE_STEP + 1) as usize];
        std::fs::write(dir.join("deleted"), &big).unwrap();
        std::fs::write(dir.join("renamed"), &big).unwrap();
        std::fs::write(dir.join("small"), b"under the link size").unwrap();
        let mut watch = FileWatch::new(&dir);
        watch.step();
        assert_eq!(names_in(&freeing_dir), 2, "the big files got second names");

        std::fs::remove_file(dir.join("deleted")).unwrap();
        std::fs::rename(dir.join("renamed"), dir.join("moved")).unwrap();
        watch.relist();
        // The renamed file's second name is dropped at once; its content is untouched.
        assert_eq!(std::fs::read(dir.join("moved")).unwrap(), big);
        assert_eq!(watch.freeing.queue.len(), 1);
        let link = watch.freeing.queue[0].clone();
        watch.freeing.step();
        assert_eq!(std::fs::metadata(&link).unwrap().len(), FREE_STEP + 1);
        watch.freeing.step();
        watch.freeing.step();
        assert!(!link.exists(), "freed, then removed");
        assert!(watch.freeing.queue.is_empty());
        // `moved` was seen as a new file and got a second name of its own.
        assert_eq!(names_in(&freeing_dir), 1);
        // A closed store leaves no second names.
        drop(watch);
        assert!(!freeing_dir.exists());
        assert_eq!(std::fs::read(dir.join("moved")).unwrap(), big);
    }

    #[test]
    fn what_an_earlier_run_left_to_free_is_freed_and_live_files_keep_their_data() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("db");
        let freeing_dir = root.path().join("db.freeing");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&freeing_dir).unwrap();
        std::fs::write(freeing_dir.join("7"), vec![0u8; 100]).unwrap();
        std::fs::write(dir.join("live"), b"data").unwrap();
        std::fs::hard_link(dir.join("live"), freeing_dir.join("8")).unwrap();
        let mut watch = FileWatch::new(&dir);
        assert!(
            !freeing_dir.join("8").exists(),
            "a second name of a live file is just removed"
        );
        assert_eq!(std::fs::read(dir.join("live")).unwrap(), b"data");
        watch.freeing.step();
        assert_eq!(names_in(&freeing_dir), 0);
    }
}
