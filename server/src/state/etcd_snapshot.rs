//! etcd's snapshot file, in and out: what `Maintenance.Snapshot` streams and
//! `concordctl snapshot restore` reads (a bbolt database with etcd's buckets plus a
//! sha256 trailer; see `concord_bolt`), so that etcd's tools and Concord's read each
//! other's backups.
//!
//! What goes where (etcd 3.4's backend, read off `mvcc/kvstore.go`, `lease/lessor.go`,
//! `auth/store.go`, `etcdserver/api/membership/store.go`):
//! - `key`: etcd's 17-byte revision key (`main ++ '_' ++ sub`, `'t'` after it for a
//!   deletion) → the encoded `mvccpb.KeyValue` (a deletion's holds only the key);
//! - `meta`: `consistent_index` (8 bytes BE), and once compacted `scheduledCompactRev` and
//!   `finishedCompactRev` (the revision key of `{main: rev}`);
//! - `lease`: the id (8 bytes BE) → `leasepb.Lease {ID, TTL, RemainingTTL}`;
//! - `auth` (`authRevision`, `enabled`), `authUsers`, `authRoles` (users and roles as
//!   `authpb` messages keyed by name: the auth store's own encoding, so copied as is);
//! - `members`: the id in hex → the member as JSON; `members_removed`: hex id →
//!   `removed`; `cluster`: `clusterVersion`; `alarm`: one key per raised alarm.
//!
//! Writing reads a consistent [`StoreView`] record by record into the streaming bolt
//! writer; reading walks the file's pages on demand. Neither holds the store in memory.
//! Synchronous like all of `state`: concordctl's restore calls it with no async runtime.

use std::io::{Read, Seek, Write};
use std::path::Path;

use concord_bolt::{Db, ReadAt, Writer};
use concord_lease::LeaseRecord;
use concord_mvcc::{
    Revision, Store, StoreOptions, StoreView, decode_etcd_revision_key, encode_etcd_revision_key,
};
use concord_proto::etcdserverpb::Member;
use prost::Message;

use crate::error::Error;
use crate::state::auth;
use crate::state::backend::MEMBER_LOCAL_TABLE;
use crate::state::leases::LEASE_KEYSPACE;
use crate::state::membership::Membership;

/// etcd's `leasepb.Lease`, the value of its `lease` bucket.
#[derive(Clone, PartialEq, prost::Message)]
struct EtcdLease {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(int64, tag = "2")]
    ttl: i64,
    #[prost(int64, tag = "3")]
    remaining_ttl: i64,
}

/// The cluster version a snapshot carries when the store has none recorded yet.
const DEFAULT_CLUSTER_VERSION: &str = "3.4.0";

/// What a written snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Bytes of the database (without the trailer).
    pub db_size: u64,
    pub revision: i64,
}

/// Writes the view as an etcd snapshot file (database, then the sha256 trailer) into
/// `out`, which must be empty; `out` is left positioned at its end.
pub fn write_snapshot<W: Read + Write + Seek>(
    view: &StoreView,
    out: W,
) -> Result<(W, Written), Error> {
    let mut writer = Writer::new(out)?;
    // Top-level buckets in byte order, as the writer requires.
    writer.begin_bucket(b"alarm")?;
    writer.end_bucket()?;

    // The auth store keeps etcd's own encodings: the revision as 8 bytes BE, enabled
    // as one byte, users and roles as authpb messages keyed by name.
    let auth = view.side_table(auth::AUTH_TABLE)?;
    let auth_value = |key: &[u8]| {
        auth.iter()
            .find(|(k, _)| k == key)
            .map(|(_, value)| value.clone())
    };
    writer.begin_bucket(b"auth")?;
    // etcd's auth store commits revision 1 when it is created.
    let revision = auth_value(auth::REVISION_KEY).unwrap_or_else(|| 1u64.to_be_bytes().to_vec());
    writer.put(b"authRevision", &revision)?;
    if let Some(enabled) = auth_value(auth::ENABLED_KEY) {
        writer.put(b"enabled", &enabled)?;
    }
    writer.end_bucket()?;
    for (bucket, table) in [
        (&b"authRoles"[..], auth::ROLES_TABLE),
        (b"authUsers", auth::USERS_TABLE),
    ] {
        writer.begin_bucket(bucket)?;
        for (key, value) in view.side_table(table)? {
            writer.put(&key, &value)?;
        }
        writer.end_bucket()?;
    }

    writer.begin_bucket(b"cluster")?;
    let version = view
        .side_table("cluster")?
        .into_iter()
        .find(|(key, _)| key == b"version")
        .map(|(_, value)| value)
        .unwrap_or_else(|| DEFAULT_CLUSTER_VERSION.as_bytes().to_vec());
    writer.put(b"clusterVersion", &version)?;
    writer.end_bucket()?;

    writer.begin_bucket(b"key")?;
    for record in view.revisions() {
        let (rev, tombstone, value) = record?;
        writer.put(&encode_etcd_revision_key(rev, tombstone), &value)?;
    }
    writer.end_bucket()?;

    writer.begin_bucket(b"lease")?;
    for (key, value) in view.side_table(LEASE_KEYSPACE)? {
        let record = LeaseRecord::decode(&key, &value)
            .map_err(|e| Error::Corrupt(format!("lease record: {e}")))?;
        let lease = EtcdLease {
            id: record.id,
            ttl: record.ttl,
            remaining_ttl: record.remaining_ttl,
        };
        writer.put(&key, &lease.encode_to_vec())?;
    }
    writer.end_bucket()?;

    let mut members = Vec::new();
    for (_, value) in view.side_table(crate::state::membership::MEMBERS_TABLE)? {
        let member = Member::decode(value.as_slice())
            .map_err(|e| Error::Corrupt(format!("member record: {e}")))?;
        members.push((format!("{:x}", member.id), member_json(&member)));
    }
    // etcd's keys are the ids in hex without padding: sorted as text, not as numbers.
    members.sort();
    writer.begin_bucket(b"members")?;
    for (key, value) in &members {
        writer.put(key.as_bytes(), value.as_bytes())?;
    }
    writer.end_bucket()?;
    let mut removed: Vec<String> = view
        .side_table(crate::state::membership::REMOVED_TABLE)?
        .into_iter()
        .filter_map(|(key, _)| <[u8; 8]>::try_from(key.as_slice()).ok())
        .map(|id| format!("{:x}", u64::from_be_bytes(id)))
        .collect();
    removed.sort();
    writer.begin_bucket(b"members_removed")?;
    for key in &removed {
        writer.put(key.as_bytes(), b"removed")?;
    }
    writer.end_bucket()?;

    writer.begin_bucket(b"meta")?;
    writer.put(b"consistent_index", &view.applied_index().to_be_bytes())?;
    let compact = view.compact_revision();
    if compact >= 0 {
        let key = encode_etcd_revision_key(Revision::new(compact, 0), false);
        writer.put(b"finishedCompactRev", &key)?;
        writer.put(b"scheduledCompactRev", &key)?;
    }
    writer.end_bucket()?;

    let (out, summary) = writer.finish_snapshot()?;
    Ok((
        out,
        Written {
            db_size: summary.size,
            revision: view.current_revision(),
        },
    ))
}

/// A member as etcd's membership store writes it (Go's `json.Marshal` of its `Member`:
/// `id`, `peerURLs`, then `isLearner`, `name` and `clientURLs` when set).
fn member_json(member: &Member) -> String {
    // Serializing strings cannot fail.
    fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
        serde_json::to_string(value).unwrap_or_default()
    }
    let mut fields = vec![
        format!("\"id\":{}", member.id),
        format!("\"peerURLs\":{}", json(member.peer_ur_ls.as_slice())),
    ];
    if member.is_learner {
        fields.push("\"isLearner\":true".into());
    }
    if !member.name.is_empty() {
        fields.push(format!("\"name\":{}", json(member.name.as_str())));
    }
    if !member.client_ur_ls.is_empty() {
        fields.push(format!(
            "\"clientURLs\":{}",
            json(member.client_ur_ls.as_slice())
        ));
    }
    format!("{{{}}}", fields.join(","))
}

/// What `snapshot status` reports about a file, computed as etcdctl 3.4 does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// CRC-32 (Castagnoli) over every bucket name, key and value, in bucket order.
    pub hash: u32,
    /// The newest main revision in the `key` bucket.
    pub revision: i64,
    /// Keys in every bucket.
    pub total_key: u64,
    /// The database's size: pages in use times the page size.
    pub total_size: u64,
}

/// Opens an etcd snapshot file for reading: checks its sha256 trailer (a file without
/// one is refused unless `skip_hash_check`, as etcdctl's restore does), then its bolt
/// metas. A damaged file is an error naming what is wrong.
pub fn open_snapshot(path: &Path, skip_hash_check: bool) -> Result<Db<std::fs::File>, Error> {
    let file = std::fs::File::open(path).map_err(Error::Io)?;
    let len = file.metadata().map_err(Error::Io)?.len();
    let db_len = if concord_bolt::has_trailer(len) {
        if skip_hash_check {
            len - concord_bolt::TRAILER_SIZE
        } else {
            concord_bolt::verify_trailer(&file)?
        }
    } else if skip_hash_check {
        len
    } else {
        return Err(Error::Corrupt(format!(
            "snapshot {} is missing its sha256 hash (a snapshot from `snapshot save` has it; a copied db file needs --skip-hash-check)",
            path.display()
        )));
    };
    Ok(Db::open_len(file, db_len)?)
}

/// etcdctl's `snapshot status` figures for an open snapshot database.
pub fn status<S: ReadAt>(db: &Db<S>) -> Result<Status, Error> {
    let mut crc = 0u32;
    let mut total_key = 0u64;
    let mut revision = 0i64;
    for bucket in db.root().iter() {
        let bucket = bucket?;
        let concord_bolt::Value::Bucket(inner) = bucket.value else {
            continue;
        };
        crc = crc32c::crc32c_append(crc, &bucket.key);
        let is_key_bucket = bucket.key == b"key";
        for entry in inner.iter() {
            let entry = entry?;
            crc = crc32c::crc32c_append(crc, &entry.key);
            if let concord_bolt::Value::Data(value) = &entry.value {
                crc = crc32c::crc32c_append(crc, value);
            }
            if is_key_bucket && let Some((rev, _)) = decode_etcd_revision_key(&entry.key) {
                revision = revision.max(rev.main);
            }
            total_key += 1;
        }
    }
    Ok(Status {
        hash: crc,
        revision,
        total_key,
        total_size: db.page_count() * db.page_size(),
    })
}

/// Who the restored member is and which cluster it starts.
#[derive(Debug, Clone)]
pub struct RestoreTarget<'a> {
    pub initial_cluster: &'a [(String, Vec<url::Url>)],
    pub initial_cluster_token: &'a str,
    pub advertise_peer_urls: &'a [url::Url],
}

/// What a restore wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub member_id: u64,
    pub cluster_id: u64,
    pub revision: i64,
    pub keys: u64,
}

/// Builds a fresh member data dir at `data_dir` (which must not exist) from an etcd
/// snapshot file: the store with every revision, the compaction point and the leases;
/// users, roles and whether auth is enabled; the member's new identity computed from
/// the flags as etcd computes it. The cluster's
/// membership comes from `--initial-cluster` when the member starts, as after etcd's
/// restore. Everything is written under a temporary sibling directory that is renamed
/// into place at the end, so a failure leaves nothing behind.
pub fn restore(
    snapshot: &Path,
    skip_hash_check: bool,
    data_dir: &Path,
    target: &RestoreTarget<'_>,
) -> Result<Restored, Error> {
    if data_dir.exists() {
        return Err(Error::Corrupt(format!(
            "data-dir {:?} exists",
            data_dir.display().to_string()
        )));
    }
    let membership =
        Membership::from_initial_cluster(target.initial_cluster, target.initial_cluster_token);
    let member_id = crate::state::membership::member_id(
        target.advertise_peer_urls,
        target.initial_cluster_token,
        None,
    );
    if !membership.ids().contains(&member_id) {
        return Err(Error::Corrupt(format!(
            "couldn't find local name in the initial cluster configuration: --initial-advertise-peer-urls {} is not in --initial-cluster",
            target
                .advertise_peer_urls
                .iter()
                .map(crate::config::url_text)
                .collect::<Vec<_>>()
                .join(",")
        )));
    }
    let cluster_id = crate::state::membership::cluster_id(&membership.ids());
    let db = open_snapshot(snapshot, skip_hash_check)?;

    let mut staging_name = data_dir.file_name().unwrap_or_default().to_os_string();
    staging_name.push(".restoring");
    let staging = data_dir.with_file_name(staging_name);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(Error::Io)?;
    }
    let result = write_restored(&db, &staging, member_id, cluster_id);
    match result {
        Ok((revision, keys)) => {
            std::fs::rename(&staging, data_dir).map_err(Error::Io)?;
            Ok(Restored {
                member_id,
                cluster_id,
                revision,
                keys,
            })
        }
        Err(error) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(error)
        }
    }
}

fn write_restored<S: ReadAt>(
    db: &Db<S>,
    staging: &Path,
    member_id: u64,
    cluster_id: u64,
) -> Result<(i64, u64), Error> {
    let member_dir = staging.join("member");
    std::fs::create_dir_all(&member_dir).map_err(Error::Io)?;
    let mut import = Store::import(&member_dir.join("db"), StoreOptions::default())?;
    let keys_bucket = db
        .bucket(b"key")?
        .ok_or_else(|| Error::Corrupt("the snapshot has no key bucket".into()))?;
    let mut newest = 1i64;
    let mut keys = 0u64;
    for entry in keys_bucket.iter() {
        let entry = entry?;
        let (rev, tombstone) = decode_etcd_revision_key(&entry.key).ok_or_else(|| {
            Error::Corrupt(format!(
                "bad revision key {:?} in the key bucket",
                entry.key
            ))
        })?;
        let concord_bolt::Value::Data(value) = &entry.value else {
            return Err(Error::Corrupt("a bucket inside the key bucket".into()));
        };
        concord_proto::mvccpb::KeyValue::decode(value.as_slice()).map_err(|e| {
            Error::Corrupt(format!("revision {}: bad mvccpb.KeyValue: {e}", rev.main))
        })?;
        import.revision(rev, tombstone, value)?;
        newest = newest.max(rev.main);
        keys += 1;
    }
    if let Some(leases) = db.bucket(b"lease")? {
        for entry in leases.iter() {
            let entry = entry?;
            let concord_bolt::Value::Data(value) = &entry.value else {
                continue;
            };
            let lease = EtcdLease::decode(value.as_slice())
                .map_err(|e| Error::Corrupt(format!("bad leasepb.Lease: {e}")))?;
            let record = LeaseRecord {
                id: lease.id,
                ttl: lease.ttl,
                remaining_ttl: lease.remaining_ttl,
            };
            import.side_entry(
                LEASE_KEYSPACE,
                &LeaseRecord::key(lease.id),
                &record.encode_value(),
            )?;
        }
    }
    if let Some(bucket) = db.bucket(b"auth")? {
        for (name, key) in [
            (&b"authRevision"[..], auth::REVISION_KEY),
            (b"enabled", auth::ENABLED_KEY),
        ] {
            if let Some(value) = bucket.get(name)? {
                import.side_entry(auth::AUTH_TABLE, key, &value)?;
            }
        }
    }
    for (bucket, table) in [
        (&b"authRoles"[..], auth::ROLES_TABLE),
        (b"authUsers", auth::USERS_TABLE),
    ] {
        if let Some(bucket) = db.bucket(bucket)? {
            for entry in bucket.iter() {
                let entry = entry?;
                if let concord_bolt::Value::Data(value) = &entry.value {
                    import.side_entry(table, &entry.key, value)?;
                }
            }
        }
    }
    // etcd finishes a scheduled compaction when it opens the backend: so does
    // `Store::open` with the scheduled revision as the compact revision.
    let mut compact = -1i64;
    if let Some(meta) = db.bucket(b"meta")? {
        for name in [&b"finishedCompactRev"[..], b"scheduledCompactRev"] {
            if let Some(value) = meta.get(name)? {
                let (rev, _) = decode_etcd_revision_key(&value).ok_or_else(|| {
                    Error::Corrupt(format!(
                        "meta {}: not a revision",
                        String::from_utf8_lossy(name)
                    ))
                })?;
                compact = compact.max(rev.main);
            }
        }
    }
    import.side_entry(MEMBER_LOCAL_TABLE, b"member_id", &member_id.to_be_bytes())?;
    import.side_entry(MEMBER_LOCAL_TABLE, b"cluster_id", &cluster_id.to_be_bytes())?;
    // A fresh raft log starts at index 1: the store has applied nothing of it.
    import.finish(newest, compact, 0)?;
    // Opening checks every record and completes the compaction.
    Store::open(&member_dir.join("db"), StoreOptions::default())?;
    Ok((newest, keys))
}
