//! `snapshot status` and `snapshot restore`: etcd's snapshot file (a bbolt database plus
//! a sha256 trailer), read and turned into a fresh member data dir with the server's own
//! synchronous code (`concord_server::state::etcd_snapshot`, which uses no tokio), so a
//! file from Concord or from etcd 3.4 restores the same way. (`snapshot save` lives with
//! the other maintenance calls in `cluster.rs`.)

use std::path::Path;

use concord_server::state::etcd_snapshot::{self, RestoreTarget, Status};

use super::Context;
use crate::cli::SnapshotCommand;
use crate::error::CtlError;
use crate::gofmt;
use crate::printer::Format;
use crate::table;

/// `snapshot status FILE` and `snapshot restore FILE` (save is a client call).
pub(super) fn snapshot_offline(
    command: SnapshotCommand,
    ctx: &mut Context<'_>,
) -> Result<(), CtlError> {
    match command {
        SnapshotCommand::Save { .. } => Err(CtlError::error("snapshot save needs a server")),
        SnapshotCommand::Status { args } => {
            let [path] = args.as_slice() else {
                return Err(CtlError::bad_args(
                    "snapshot status requires exactly one argument",
                ));
            };
            let status = read_status(Path::new(path))?;
            let out = render_status(ctx.printer.format.unwrap_or(Format::Simple), &status)?;
            ctx.emit(out.as_bytes())
        }
        SnapshotCommand::Restore {
            args,
            data_dir,
            wal_dir: _,
            initial_cluster,
            initial_cluster_token,
            initial_advertise_peer_urls,
            name,
            skip_hash_check,
        } => {
            let [path] = args.as_slice() else {
                return Err(CtlError::bad_args(
                    "snapshot restore requires exactly one argument",
                ));
            };
            // Concord's data dir defaults to `<name>.concord` (etcd's to `<name>.etcd`).
            let data_dir = if data_dir.is_empty() {
                format!("{name}.concord")
            } else {
                data_dir
            };
            let cluster = concord_server::config::parse_initial_cluster(&initial_cluster)
                .map_err(|e| CtlError::error(e.to_string()))?;
            let mut peer_urls = Vec::new();
            for url in initial_advertise_peer_urls
                .split(',')
                .filter(|u| !u.is_empty())
            {
                peer_urls.push(
                    concord_server::config::parse_url("initial-advertise-peer-urls", url)
                        .map_err(|e| CtlError::error(e.to_string()))?,
                );
            }
            log_line(
                ctx,
                "restoring snapshot",
                &[
                    ("path", quote(path)),
                    ("data-dir", quote(&data_dir)),
                    ("name", quote(&name)),
                ],
            )?;
            let target = RestoreTarget {
                initial_cluster: &cluster,
                initial_cluster_token: &initial_cluster_token,
                advertise_peer_urls: &peer_urls,
            };
            let restored = etcd_snapshot::restore(
                Path::new(path),
                skip_hash_check,
                Path::new(&data_dir),
                &target,
            )
            .map_err(|e| CtlError::error(etcd_text(&e)))?;
            let cluster_id = format!("{:x}", restored.cluster_id);
            for (_, urls) in &cluster {
                let id = concord_server::state::membership::member_id(
                    urls,
                    &initial_cluster_token,
                    None,
                );
                let urls: Vec<String> = urls.iter().map(concord_server::config::url_text).collect();
                log_line(
                    ctx,
                    "added member",
                    &[
                        ("cluster-id", quote(&cluster_id)),
                        ("local-member-id", quote("0")),
                        ("added-peer-id", quote(&format!("{id:x}"))),
                        (
                            "added-peer-peer-urls",
                            serde_json::to_string(&urls).unwrap_or_default(),
                        ),
                    ],
                )?;
            }
            log_line(
                ctx,
                "restored snapshot",
                &[
                    ("path", quote(path)),
                    ("data-dir", quote(&data_dir)),
                    ("revision", restored.revision.to_string()),
                    ("keys", restored.keys.to_string()),
                ],
            )
        }
    }
}

fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// One of the JSON log lines etcdctl's restore writes to standard error.
fn log_line(ctx: &mut Context<'_>, msg: &str, fields: &[(&str, String)]) -> Result<(), CtlError> {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    let mut line = format!(
        "{{\"level\":\"info\",\"ts\":{ts},\"caller\":\"snapshot/restore\",\"msg\":{}",
        quote(msg)
    );
    for (key, value) in fields {
        line.push_str(&format!(",{}:{value}", quote(key)));
    }
    line.push_str("}\n");
    ctx.emit_err(&line)
}

/// The server's error in etcdctl's words where a script or a person matches them.
fn etcd_text(error: &concord_server::error::Error) -> String {
    use concord_bolt::Error as Bolt;
    match error {
        concord_server::error::Error::Snapshot(Bolt::TrailerMismatch {
            expected, actual, ..
        }) => format!(
            "expected sha256 {}, got {}",
            go_bytes(expected),
            go_bytes(actual)
        ),
        concord_server::error::Error::Corrupt(message) => message.clone(),
        other => other.to_string(),
    }
}

/// A hex digest as Go's `%v` prints a byte slice: `[1 2 255]`.
fn go_bytes(hex: &str) -> String {
    let bytes: Vec<String> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .map(|b| b.to_string())
        .collect();
    format!("[{}]", bytes.join(" "))
}

fn read_status(path: &Path) -> Result<Status, CtlError> {
    match std::fs::metadata(path) {
        Err(e) => {
            let reason = match e.kind() {
                std::io::ErrorKind::NotFound => "no such file or directory".to_owned(),
                _ => e.to_string(),
            };
            return Err(CtlError::error(format!(
                "stat {}: {reason}",
                path.display()
            )));
        }
        // bbolt opens the path read-write first, which a directory refuses.
        Ok(meta) if meta.is_dir() => {
            return Err(CtlError::error(format!(
                "open {}: is a directory",
                path.display()
            )));
        }
        Ok(_) => {}
    }
    // etcdctl's status opens the file as a bolt database, trailer or not; bbolt calls a
    // file whose meta pages do not hold (too short, not bolt) an "invalid database".
    let db = etcd_snapshot::open_snapshot(path, true).map_err(|e| match e {
        concord_server::error::Error::Snapshot(
            concord_bolt::Error::NotBolt { .. } | concord_bolt::Error::Truncated { .. },
        ) => CtlError::error("invalid database"),
        other => CtlError::error(other.to_string()),
    })?;
    etcd_snapshot::status(&db).map_err(|e| CtlError::error(e.to_string()))
}

/// etcdctl 3.4's printers of a `snapshot.Status`.
fn render_status(format: Format, status: &Status) -> Result<String, CtlError> {
    let row = vec![
        format!("{:x}", status.hash),
        status.revision.to_string(),
        status.total_key.to_string(),
        gofmt::humanize_bytes(status.total_size),
    ];
    Ok(match format {
        Format::Simple => format!("{}\n", row.join(", ")),
        Format::Table => table::render(&["hash", "revision", "total keys", "total size"], &[row]),
        Format::Json => format!(
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}\n",
            status.hash, status.revision, status.total_key, status.total_size
        ),
        Format::Fields => format!(
            "\"Hash\" : {}\n\"Revision\" : {}\n\"Keys\" : {}\n\"Size\" : {}\n",
            status.hash, status.revision, status.total_key, status.total_size
        ),
        Format::Protobuf => {
            return Err(CtlError::bad_feature(
                "protobuf not supported as output format",
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_prints_as_etcdctl_does() {
        let status = Status {
            hash: 0x1b33be82,
            revision: 5,
            total_key: 11,
            total_size: 16384,
        };
        assert_eq!(
            render_status(Format::Simple, &status).expect("simple"),
            "1b33be82, 5, 11, 16 kB\n"
        );
        assert_eq!(
            render_status(Format::Json, &status).expect("json"),
            "{\"hash\":456375938,\"revision\":5,\"totalKey\":11,\"totalSize\":16384}\n"
        );
        assert_eq!(go_bytes("01ff10"), "[1 255 16]");
    }
}
