//! `backup`: a copy of a member's data dir that can only start as a new cluster, as
//! etcdctl v2's `backup` makes one (read off etcd 3.4's
//! `etcdctl/ctlv2/command/backup_command.go` and the e2e `TestCtlV2Backup*`):
//! - the member and cluster ids are replaced by new ones (from the clock, as etcd's id
//!   generator makes them) and the member table is emptied, so the copy can neither
//!   rejoin the old cluster nor start without `--force-new-cluster`;
//! - the v2 store is kept; the v3 data (keys, leases, v3 auth, alarms) only with
//!   `--with-v3`, otherwise the copy's MVCC store starts empty;
//! - the copy is consistent: the store as it was at one moment, plus the committed raft
//!   entries it had not applied yet (only the v2 ones without `--with-v3`; never
//!   membership changes), applied to the copy here as the member itself would apply
//!   them. The copy's raft log is fresh.
//!
//! Like etcd, which reads its WAL without a lock, a backup without `--with-v3` may be
//! taken from a running member: its store and raft log are copied file by file and the
//! copy is kept only if no file changed while it was taken (otherwise it is taken again,
//! a few times, waiting a little longer each time for a quiet moment). The source is
//! never opened for writing. `--with-v3` needs the member stopped (etcd waits for the
//! v3 database's lock); a data dir a member holds is refused.
//!
//! The result is written under a staging directory inside the backup dir and renamed
//! into place at the end, so a failure leaves nothing behind.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use concord_mvcc::{Store, StoreOptions};
use concord_proto::concordpb::{InternalRequest, internal_request};
use concord_raft_core::{Committed, StateMachine};
use concord_storage_wal::{WalOptions, WalStorage};
use prost::Message;
use raft::eraftpb::EntryType;
use raft::{GetEntriesContext, Storage as _};

use crate::error::Error;
use crate::state::alarms::{Alarms, Quota};
use crate::state::auth::AuthStore;
use crate::state::backend::{Backend, MEMBER_LOCAL_TABLE};
use crate::state::leases::LeaseKeeper;
use crate::state::membership::{MEMBERS_TABLE, Membership, REMOVED_TABLE};
use crate::state::snapshots::SnapshotFiles;
use crate::state::{ApplyObserver, Machine, v2};

/// How many times a running member's files are copied before giving up.
const COPY_ATTEMPTS: u32 = 10;

/// Where to read from and write to, as etcdctl's flags name them.
#[derive(Debug, Clone, Copy)]
pub struct BackupRequest<'a> {
    /// `--data-dir`: the member's data dir.
    pub data_dir: &'a Path,
    /// `--wal-dir`: the member's raft log, if not `<data-dir>/member/wal`.
    pub wal_dir: Option<&'a Path>,
    /// `--backup-dir`: where the copy's data dir goes (created if missing; it must not
    /// hold a `member` directory yet).
    pub backup_dir: &'a Path,
    /// `--backup-wal-dir`: where the copy's (fresh) raft log goes, if not
    /// `<backup-dir>/member/wal`; start the copy with `--wal-dir` pointing there.
    pub backup_wal_dir: Option<&'a Path>,
    /// `--with-v3`: keep the v3 data too.
    pub with_v3: bool,
}

/// What a backup wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackedUp {
    pub member_id: u64,
    pub cluster_id: u64,
    /// Committed raft entries the store had not applied yet, applied to the copy.
    pub replayed_entries: u64,
}

/// The new member and cluster ids, as etcd's `idutil.NewGenerator(0, now)` hands out
/// its first two: the low 40 bits of the Unix time in milliseconds, shifted past an
/// 8-bit counter that starts at 1.
pub fn new_identity(now: SystemTime) -> (u64, u64) {
    let millis = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let base = (millis & ((1 << 40) - 1)) << 8;
    (base + 1, base + 2)
}

/// Writes the backup `request` asks for, under the identity `(member_id, cluster_id)`
/// (see [`new_identity`]).
pub fn backup(request: &BackupRequest<'_>, identity: (u64, u64)) -> Result<BackedUp, Error> {
    let source_db = newest_store_dir(&request.data_dir.join("member").join("db"))?;
    let source_wal = request
        .wal_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| request.data_dir.join("member").join("wal"));
    if !source_wal.is_dir() {
        return Err(not_found(&source_wal));
    }
    if request.with_v3 && held_by_member(&source_db)? {
        return Err(Error::Backup(format!(
            "the data dir {} is in use by a running member: stop it first (a backup --with-v3 copies the v3 store, which needs the member stopped)",
            request.data_dir.display()
        )));
    }
    let target = request.backup_dir.join("member");
    if target.exists() {
        return Err(Error::Backup(format!(
            "the backup dir {} already holds a member data dir",
            request.backup_dir.display()
        )));
    }
    if let Some(dir) = request.backup_wal_dir
        && dir.exists()
        && std::fs::read_dir(dir).map_err(Error::Io)?.next().is_some()
    {
        return Err(Error::Backup(format!(
            "the backup wal dir {} is not empty",
            dir.display()
        )));
    }
    let staging = request.backup_dir.join("member.backup-staging");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(Error::Io)?;
    }
    let result = write_backup(request, &source_db, &source_wal, &staging, identity);
    let outcome = result.and_then(|backed_up| {
        std::fs::rename(staging.join("member"), &target).map_err(Error::Io)?;
        let wal = request
            .backup_wal_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| target.join("wal"));
        std::fs::create_dir_all(wal).map_err(Error::Io)?;
        Ok(backed_up)
    });
    let _ = std::fs::remove_dir_all(&staging);
    outcome
}

fn write_backup(
    request: &BackupRequest<'_>,
    source_db: &Path,
    source_wal: &Path,
    staging: &Path,
    (member_id, cluster_id): (u64, u64),
) -> Result<BackedUp, Error> {
    let member_dir = staging.join("member");
    std::fs::create_dir_all(&member_dir).map_err(Error::Io)?;
    let dest_db = member_dir.join("db");
    let copied_wal = staging.join("source-wal");
    // With v3, the copied store is the backup's store; without, only its v2 tables go
    // into a fresh one.
    let copied_db = if request.with_v3 {
        dest_db.clone()
    } else {
        staging.join("source-db")
    };
    consistent_copy(&[(source_db, &copied_db), (source_wal, &copied_wal)])?;

    let wal = WalStorage::open(&copied_wal, WalOptions::default())?;
    let backend = if request.with_v3 {
        Arc::new(Backend::open(dest_db, StoreOptions::default())?)
    } else {
        let source = Store::open(&copied_db, StoreOptions::default())?;
        let backend = Arc::new(Backend::open(dest_db, StoreOptions::default())?);
        copy_v2_tables(&source, &backend.store())?;
        drop(source);
        std::fs::remove_dir_all(&copied_db).map_err(Error::Io)?;
        backend
    };
    let tail = unapplied_entries(&wal, backend.store().applied_index(), request.with_v3)?;
    drop(wal);
    let replayed_entries = tail
        .iter()
        .filter(|entry| matches!(entry, Committed::Normal { .. }))
        .count() as u64;
    if !tail.is_empty() {
        replay(&backend, member_id, &tail, &staging.join("snap-stream"))?;
    }

    let store = backend.store();
    let mut batch = store.write_batch();
    // etcd deletes the members buckets: --force-new-cluster makes the member table anew.
    for table in [MEMBERS_TABLE, REMOVED_TABLE] {
        for (key, _) in store.meta_scan(table)? {
            batch.meta_delete(table, &key);
        }
    }
    batch.meta_put(MEMBER_LOCAL_TABLE, b"member_id", &member_id.to_be_bytes());
    batch.meta_put(MEMBER_LOCAL_TABLE, b"cluster_id", &cluster_id.to_be_bytes());
    // The copy's raft log is fresh: its store has applied nothing of it.
    batch.set_applied_index(0);
    batch.commit()?;
    store.persist()?;
    Ok(BackedUp {
        member_id,
        cluster_id,
        replayed_entries,
    })
}

/// The v2 store's tables (nodes, index, history, v2 auth), as they are.
fn copy_v2_tables(source: &Store, dest: &Store) -> Result<(), Error> {
    let mut batch = dest.write_batch();
    for table in [
        v2::NODES_TABLE,
        v2::INDEX_TABLE,
        v2::EVENTS_TABLE,
        v2::AUTH_TABLE,
    ] {
        for (key, value) in source.meta_scan(table)? {
            batch.meta_put(table, &key, &value);
        }
    }
    // The entries after this index are replayed onto the copy.
    batch.set_applied_index(source.applied_index());
    batch.commit()?;
    Ok(())
}

/// The committed entries after `applied`, as the copy replays them: the v2 requests
/// (and the cluster version, which etcd 3.4 writes in its v2 store), every other
/// request only `with_v3`. Membership changes and member attributes become empty
/// entries (etcd drops them): the new cluster's member table is its own.
fn unapplied_entries(
    wal: &WalStorage,
    applied: u64,
    with_v3: bool,
) -> Result<Vec<Committed>, Error> {
    let read_error = |e: raft::Error| Error::Corrupt(format!("reading the raft log: {e}"));
    let first = raft::Storage::first_index(wal).map_err(read_error)?;
    let last = raft::Storage::last_index(wal).map_err(read_error)?;
    let commit = wal.hard_state().commit.min(last);
    if commit <= applied {
        return Ok(Vec::new());
    }
    if first > applied + 1 {
        return Err(Error::Corrupt(format!(
            "the raft log starts at {first} but the store applied only up to {applied}"
        )));
    }
    let entries = wal
        .entries(
            applied + 1,
            commit + 1,
            None,
            GetEntriesContext::empty(false),
        )
        .map_err(read_error)?;
    let mut kept = Vec::with_capacity(entries.len());
    for entry in entries {
        let (index, term) = (entry.index, entry.term);
        let wanted =
            entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty() && {
                let request = InternalRequest::decode(entry.data.as_ref())
                    .map_err(|e| Error::Corrupt(format!("raft entry {index}: bad request: {e}")))?;
                use internal_request::Request as R;
                match request.request {
                    Some(R::V2(_) | R::ClusterVersionSet(_)) => true,
                    Some(R::MemberAttrSet(_) | R::MemberUpdate(_)) | None => false,
                    Some(_) => with_v3,
                }
            };
        kept.push(if wanted {
            Committed::Normal {
                index,
                term,
                id: 0,
                origin: 0,
                data: entry.data.to_vec(),
            }
        } else {
            Committed::Empty { index, term }
        });
    }
    Ok(kept)
}

/// Applies `entries` to the copy with the member's own state machine.
fn replay(
    backend: &Arc<Backend>,
    member_id: u64,
    entries: &[Committed],
    snapshot_dir: &Path,
) -> Result<(), Error> {
    let crate::config::Invocation::Run(config) =
        crate::config::resolve(Vec::new(), |_| None, Vec::new(), |_| Ok(String::new()))?
    else {
        return Err(Error::Corrupt("no default configuration".into()));
    };
    let mut machine = Machine::new(
        backend.clone(),
        member_id,
        Membership::default(),
        Arc::new(LeaseKeeper::new(&config, member_id)),
        Arc::new(AuthStore::new(config.auth_token_ttl)),
        Arc::new(Alarms::new(Quota::new(None))),
        Arc::new(SnapshotFiles::new(snapshot_dir.to_path_buf()).map_err(Error::Io)?),
        Box::new(Unobserved),
    )?;
    machine
        .apply(entries)
        .map_err(|e| Error::Corrupt(format!("replaying the raft log: {e}")))?;
    Ok(())
}

struct Unobserved;

impl ApplyObserver for Unobserved {
    fn membership_changed(&mut self, _: &Membership) {}
    fn published(&mut self, _: &concord_proto::etcdserverpb::Member) {}
}

/// The directory of the store generation a member would open (see
/// [`crate::state::backend`]): the highest `db.<n>`, else `db`.
fn newest_store_dir(base: &Path) -> Result<PathBuf, Error> {
    let newest = crate::state::backend::generations(base)?
        .into_iter()
        .last()
        .map(|(_, dir)| dir);
    newest.ok_or_else(|| not_found(base))
}

/// Whether a running member holds the store in `dir` (fjall's lock file is locked).
// `File::try_lock` is the call fjall itself takes its lock with (fjall 3's
// `locked_file.rs`).
fn held_by_member(dir: &Path) -> Result<bool, Error> {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("lock"))
    else {
        return Ok(false);
    };
    match file.try_lock() {
        Ok(()) => Ok(false),
        Err(std::fs::TryLockError::WouldBlock) => Ok(true),
        Err(std::fs::TryLockError::Error(error)) => Err(Error::Io(error)),
    }
}

/// Copies each `(from, to)` directory tree, again until no source file changed while
/// the copies were taken: what is kept is every tree as it was at one moment.
fn consistent_copy(trees: &[(&Path, &Path)]) -> Result<(), Error> {
    for attempt in 1..=COPY_ATTEMPTS {
        let before = fingerprint(trees)?;
        for (_, to) in trees {
            if to.exists() {
                std::fs::remove_dir_all(to).map_err(Error::Io)?;
            }
        }
        let copied = trees.iter().try_for_each(|(from, to)| copy_tree(from, to));
        match copied {
            Ok(()) if fingerprint(trees)? == before => return Ok(()),
            Ok(()) => {}
            // A file went away under the copy (a compaction, a purged log segment).
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(Error::Io(error)),
        }
        std::thread::sleep(Duration::from_millis(100 * u64::from(attempt)));
    }
    Err(Error::Backup(format!(
        "the member kept writing to its data dir during {COPY_ATTEMPTS} copies: try again when it is quieter, or stop it"
    )))
}

type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// Every file below the trees' sources with its length and modification time.
fn fingerprint(trees: &[(&Path, &Path)]) -> Result<Fingerprint, Error> {
    let mut files = Vec::new();
    for (from, _) in trees {
        list_files(from, &mut files).map_err(Error::Io)?;
    }
    files.sort();
    Ok(files)
}

fn list_files(dir: &Path, out: &mut Fingerprint) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let metadata = match entry.metadata() {
            Ok(metadata) => metadata,
            // Deleted since it was listed: the copy notices that the listing changed.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        if metadata.is_dir() {
            list_files(&entry.path(), out)?;
        } else {
            out.push((entry.path(), metadata.len(), metadata.modified().ok()));
        }
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// etcd's words for a missing directory.
fn not_found(path: &Path) -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("open {}: no such file or directory", path.display()),
    ))
}
