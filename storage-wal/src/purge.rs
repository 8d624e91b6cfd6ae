//! Deleting the segments that a compaction left without live entries, on a thread of its
//! own, off the writer's path.
//!
//! Why: deleting the fill's 64 MiB segments and fsyncing the directory held the raft
//! driver thread 47-49 ms once per raft snapshot (measured on the defragment benchmark's
//! member, ext4 mounted with `discard`), during which no write was answered. And the
//! deletion itself, even off that thread, made the raft log's fdatasyncs wait 13-14 ms
//! for the journal commit that freed (and trimmed) 128 MiB at once: so a segment's
//! space is freed a few MiB at a time (see [`shrink_and_remove`]).
//!
//! Why it is safe: the compaction record that makes the segments unneeded is fsynced
//! before they are handed over. The thread first takes them out of the log by renaming
//! them to temporary names (in ascending order, then one directory fsync), which
//! recovery deletes; only then does it shrink and unlink them. A crash before the
//! renames leaves whole old segments, which recovery replays and the compaction record
//! drops again (as for a crash between the record's fsync and the unlink before); a
//! crash between renames leaves a contiguous run of them.
//!
//! A failed rename, fsync or deletion is fatal like any other failed write: the next
//! write of the storage returns the error and the storage is poisoned.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::snapshot_file::TEMP_SUFFIX;
use crate::{Error, fsync_dir};

/// How much of a deleted segment is freed at once, and the pause between two cuts.
const SHRINK_STEP: u64 = 4 * 1024 * 1024;
const SHRINK_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// A file to delete and the handle the storage held on it (closed after the unlink).
pub(crate) type Doomed = (PathBuf, std::fs::File);

/// What the purge thread has not finished, and its first failure.
#[derive(Default)]
struct Progress {
    pending: usize,
    failure: Option<Error>,
}

/// The purge thread of one storage directory. Dropping it waits for every deletion
/// handed over so far.
pub(crate) struct Purger {
    sender: Option<mpsc::Sender<Vec<Doomed>>>,
    progress: Arc<(Mutex<Progress>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Purger {
    pub(crate) fn start(dir: &Path) -> Result<Purger, Error> {
        let (sender, receiver) = mpsc::channel::<Vec<Doomed>>();
        let progress = Arc::new((Mutex::new(Progress::default()), Condvar::new()));
        let thread = {
            let progress = progress.clone();
            let purged_dir = dir.to_path_buf();
            std::thread::Builder::new()
                .name("wal-purge".to_string())
                .spawn(move || {
                    for batch in receiver {
                        let outcome = delete(&purged_dir, batch);
                        let (lock, done) = &*progress;
                        let mut progress = lock.lock().unwrap_or_else(PoisonError::into_inner);
                        progress.pending -= 1;
                        if let Err(error) = outcome {
                            progress.failure.get_or_insert(error);
                        }
                        done.notify_all();
                    }
                })
                .map_err(|e| Error::io(dir, e))?
        };
        Ok(Purger {
            sender: Some(sender),
            progress,
            thread: Some(thread),
        })
    }

    /// Hands `files` over for deletion (in the order given), followed by one fsync of the
    /// directory. Returns an earlier deletion's failure instead, if there was one.
    pub(crate) fn delete(&self, files: Vec<Doomed>) -> Result<(), Error> {
        self.check()?;
        if files.is_empty() {
            return Ok(());
        }
        let (lock, _) = &*self.progress;
        lock.lock().unwrap_or_else(PoisonError::into_inner).pending += 1;
        let sent = self
            .sender
            .as_ref()
            .is_some_and(|sender| sender.send(files).is_ok());
        if !sent {
            // The thread is gone (it cannot panic short of a bug): nothing will be deleted.
            lock.lock().unwrap_or_else(PoisonError::into_inner).pending -= 1;
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    /// The first failure of a deletion so far; it stays reported.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let (lock, _) = &*self.progress;
        let progress = lock.lock().unwrap_or_else(PoisonError::into_inner);
        match &progress.failure {
            None => Ok(()),
            Some(error) => Err(copy_of(error)),
        }
    }

    /// Blocks until every deletion handed over so far is done (and its directory fsync).
    pub(crate) fn wait(&self) -> Result<(), Error> {
        let (lock, done) = &*self.progress;
        let mut progress = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while progress.pending > 0 {
            progress = done.wait(progress).unwrap_or_else(PoisonError::into_inner);
        }
        drop(progress);
        self.check()
    }
}

impl Drop for Purger {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has deleted everything queued.
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Takes the segments out of the log (renamed to temporary names, which recovery deletes,
/// in ascending order, then one directory fsync), then frees their space in steps.
fn delete(dir: &Path, batch: Vec<Doomed>) -> Result<(), Error> {
    let mut renamed = Vec::with_capacity(batch.len());
    for (path, file) in batch {
        drop(file);
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(TEMP_SUFFIX);
        let doomed = path.with_file_name(name);
        std::fs::rename(&path, &doomed).map_err(|e| Error::io(&path, e))?;
        renamed.push(doomed);
    }
    fsync_dir(dir)?;
    for doomed in renamed {
        shrink_and_remove(&doomed).map_err(|e| Error::io(&doomed, e))?;
    }
    Ok(())
}

/// Cuts the file down [`SHRINK_STEP`] at a time, pausing between cuts, then unlinks it.
///
/// Why: unlinking a whole 64 MiB segment at once took 23 ms of file system work (ext4
/// freeing its blocks, and with `discard` trimming them in the journal commit), and the
/// raft log's fdatasyncs meanwhile waited 13-14 ms for that commit. Each cut frees a
/// little, so each commit the log waits for carries little.
fn shrink_and_remove(path: &Path) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    let mut len = file.metadata()?.len();
    while len > SHRINK_STEP {
        len -= SHRINK_STEP;
        file.set_len(len)?;
        std::thread::sleep(SHRINK_PAUSE);
    }
    drop(file);
    std::fs::remove_file(path)
}

/// The same failure again (`io::Error` is not `Clone`): same kind, path and message.
fn copy_of(error: &Error) -> Error {
    match error {
        Error::SyncFailed { path, source } => Error::SyncFailed {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Error::Io { path, source } => Error::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        _ => Error::Poisoned,
    }
}
