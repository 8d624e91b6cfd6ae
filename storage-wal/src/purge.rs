//! Deleting the segments that a compaction left without live entries, on a thread of its
//! own, off the writer's path.
//!
//! Why: deleting a 64 MiB segment and fsyncing the directory made the file system free
//! the segment's blocks and commit its journal before the writer could go on; measured
//! on the defragment benchmark's member (ext4 mounted with `discard`), 47-49 ms on the
//! raft driver thread, once per raft snapshot, during which no write was answered.
//!
//! Why it is safe: the compaction record that makes the segments unneeded is fsynced
//! before they are handed over, so the deletions only have to happen some time later.
//! A crash before they happen leaves whole old segments behind, which recovery already
//! handles (it replays them and the compaction record drops their entries again), as it
//! did for a crash between the record's fsync and the unlink. Segments are deleted in
//! ascending order, so the ones left are always a contiguous run.
//!
//! A failed deletion or directory fsync is fatal like any other failed write: the next
//! write of the storage returns the error and the storage is poisoned.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::{Error, fsync_dir};

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

fn delete(dir: &Path, batch: Vec<Doomed>) -> Result<(), Error> {
    for (path, file) in batch {
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        drop(file);
    }
    fsync_dir(dir)
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
