//! `backup --data-dir D --backup-dir B [--wal-dir W] [--backup-wal-dir BW] [--with-v3]`:
//! a copy of a Concord member's data dir under a new member and cluster id, to be
//! started with `--force-new-cluster` (see `concord_server::state::backup`, which does
//! the work with no async runtime). etcdctl's own backup reads etcd's WAL and bbolt
//! files, which a Concord data dir does not hold; this one reads Concord's.
//!
//! Like etcdctl (whose failures are Go's `log.Fatal`), a failure prints one
//! time-stamped log line on standard error and exits 1; a success logs what it wrote.

use std::path::Path;
use std::time::SystemTime;

use concord_server::state::backup::{self, BackupRequest};

use super::flags::Parsed;
use super::{Exit, Outcome};

pub fn run(local: &Parsed) -> Outcome {
    let data_dir = local.string("data-dir");
    let wal_dir = local.string("wal-dir");
    let backup_dir = local.string("backup-dir");
    let backup_wal_dir = local.string("backup-wal-dir");
    let request = BackupRequest {
        data_dir: Path::new(&data_dir),
        wal_dir: Some(Path::new(&wal_dir)).filter(|_| !wal_dir.is_empty()),
        backup_dir: Path::new(&backup_dir),
        backup_wal_dir: Some(Path::new(&backup_wal_dir)).filter(|_| !backup_wal_dir.is_empty()),
        with_v3: local.bool("with-v3"),
    };
    let now = SystemTime::now();
    match backup::backup(&request, backup::new_identity(now)) {
        Ok(done) => {
            log_line(
                now,
                &format!(
                    "backed up {} to {} as member {:x} of a new cluster {:x} ({} raft entries replayed{}); start it with --force-new-cluster",
                    request.data_dir.display(),
                    request.backup_dir.display(),
                    done.member_id,
                    done.cluster_id,
                    done.replayed_entries,
                    if request.with_v3 {
                        ", v3 data kept"
                    } else {
                        ", v3 data dropped"
                    },
                ),
            );
            Ok(())
        }
        Err(error) => {
            let message = match error {
                // Go's words for a file error, as etcdctl's log.Fatal prints them.
                concord_server::error::Error::Io(io) => io.to_string(),
                other => other.to_string(),
            };
            log_line(SystemTime::now(), &message);
            Err(Exit(1))
        }
    }
}

/// One line as etcdctl 3.4's logger writes it (capnslog's format, which etcd's packages
/// install as Go's standard logger): `2006-01-02 15:04:05.000000 I | message`.
fn log_line(at: SystemTime, message: &str) {
    let since_epoch = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let stamp =
        concord_server::http::v2::json::go_time(since_epoch.as_secs() as i64 * 1_000_000_000);
    let date = stamp.get(..10).unwrap_or_default();
    let time = stamp.get(11..19).unwrap_or_default();
    let micros = since_epoch.subsec_micros();
    eprintln!("{date} {time}.{micros:06} I | {message}");
}
