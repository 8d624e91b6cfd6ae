//! Prometheus `/metrics`, under etcd 3.4's metric names, types, labels and buckets, so
//! that etcd's Grafana dashboards and alert rules read a Concord member unchanged.
//!
//! The crates record where events happen, through the `metrics` facade (mvcc: ranges,
//! puts, deletes, txns, keys, backend commits; storage-wal: fsyncs and bytes written;
//! raft-core: leader changes; this crate: proposals, reads, peers, gRPC calls). This
//! module is the only one that knows the exporter: [`install`] puts the Prometheus
//! recorder in place (before anything registers a handle, which would otherwise be a
//! no-op), with etcd's help texts and histogram buckets, and pre-registers every
//! family etcd shows from the start at zero. Values that mirror state (leader, indexes,
//! database size, the process's CPU, memory and file descriptors) are read when
//! scraped, so they cost nothing in between.
//!
//! Answers while the member has no leader: nothing here waits for raft.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics::{describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::core::Core;
use crate::grpc::{CLUSTER_VERSION, ETCD_VERSION};

/// A family's Prometheus type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family as etcd 3.4 exposes it.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// Whether etcd shows the family before anything is recorded (families with
    /// labels appear once their first labelled series is recorded).
    pub unlabelled: bool,
}

const fn family(name: &'static str, kind: Kind, help: &'static str) -> Family {
    Family {
        name,
        kind,
        help,
        unlabelled: true,
    }
}

const fn labelled(name: &'static str, kind: Kind, help: &'static str) -> Family {
    Family {
        name,
        kind,
        help,
        unlabelled: false,
    }
}

use Kind::{Counter, Gauge, Histogram};

/// The families this member exports through the recorder. Help texts are etcd's.
/// `process_*` and `os_fd_*` are written by [`write_process_metrics`] instead (their
/// CPU counter is fractional, which the facade's counters are not).
pub const FAMILIES: &[Family] = &[
    // server
    family(
        "etcd_server_has_leader",
        Gauge,
        "Whether or not a leader exists. 1 is existence, 0 is not.",
    ),
    family(
        "etcd_server_is_leader",
        Gauge,
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
    ),
    family(
        "etcd_server_is_learner",
        Gauge,
        "Whether or not this member is a learner. 1 if is, 0 otherwise.",
    ),
    family(
        "etcd_server_leader_changes_seen_total",
        Counter,
        "The number of leader changes seen.",
    ),
    family(
        "etcd_server_learner_promote_successes",
        Counter,
        "The total number of successful learner promotions while this member is leader.",
    ),
    family(
        "etcd_server_heartbeat_send_failures_total",
        Counter,
        "The total number of leader heartbeat send failures (likely overloaded from slow disk).",
    ),
    family(
        "etcd_server_slow_apply_total",
        Counter,
        "The total number of slow apply requests (likely overloaded from slow disk).",
    ),
    family(
        "etcd_server_snapshot_apply_in_progress_total",
        Gauge,
        "1 if the server is applying the incoming snapshot. 0 if none.",
    ),
    family(
        "etcd_server_proposals_committed_total",
        Gauge,
        "The total number of consensus proposals committed.",
    ),
    family(
        "etcd_server_proposals_applied_total",
        Gauge,
        "The total number of consensus proposals applied.",
    ),
    family(
        "etcd_server_proposals_pending",
        Gauge,
        "The current number of pending proposals to commit.",
    ),
    family(
        "etcd_server_proposals_failed_total",
        Counter,
        "The total number of failed proposals seen.",
    ),
    family(
        "etcd_server_slow_read_indexes_total",
        Counter,
        "The total number of pending read indexes not in sync with leader's or timed out read index requests.",
    ),
    family(
        "etcd_server_read_indexes_failed_total",
        Counter,
        "The total number of failed read indexes seen.",
    ),
    family(
        "etcd_server_quota_backend_bytes",
        Gauge,
        "Current backend storage quota size in bytes.",
    ),
    labelled(
        "etcd_server_version",
        Gauge,
        "Which version is running. 1 for 'server_version' label with current version.",
    ),
    labelled(
        "etcd_server_go_version",
        Gauge,
        "Which Go version server is running with. 1 for 'server_go_version' label with current version.",
    ),
    labelled(
        "etcd_server_id",
        Gauge,
        "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
    ),
    labelled(
        "etcd_cluster_version",
        Gauge,
        "Which version is running. 1 for 'cluster_version' label with current cluster version",
    ),
    family(
        "etcd_server_health_success",
        Counter,
        "The total number of successful health checks",
    ),
    family(
        "etcd_server_health_failures",
        Counter,
        "The total number of failed health checks",
    ),
    labelled(
        "etcd_server_client_requests_total",
        Counter,
        "The total number of client requests per client version.",
    ),
    family(
        "etcd_debugging_server_lease_expired_total",
        Counter,
        "The total number of expired leases.",
    ),
    // disk
    family(
        "etcd_disk_wal_fsync_duration_seconds",
        Histogram,
        "The latency distributions of fsync called by WAL.",
    ),
    family(
        "etcd_disk_wal_write_bytes_total",
        Gauge,
        "Total number of bytes written in WAL.",
    ),
    family(
        "etcd_disk_backend_commit_duration_seconds",
        Histogram,
        "The latency distributions of commit called by backend.",
    ),
    family(
        "etcd_disk_backend_defrag_duration_seconds",
        Histogram,
        "The latency distribution of backend defragmentation.",
    ),
    family(
        "etcd_disk_backend_snapshot_duration_seconds",
        Histogram,
        "The latency distribution of backend snapshots.",
    ),
    family(
        "etcd_disk_defrag_inflight",
        Gauge,
        "Whether or not defrag is active on the member. 1 means active, 0 means not.",
    ),
    family(
        "etcd_snap_db_fsync_duration_seconds",
        Histogram,
        "The latency distributions of fsyncing .snap.db file",
    ),
    family(
        "etcd_snap_db_save_total_duration_seconds",
        Histogram,
        "The total latency distributions of v3 snapshot save",
    ),
    family(
        "etcd_snap_fsync_duration_seconds",
        Histogram,
        "The latency distributions of fsync called by snap.",
    ),
    // mvcc
    family(
        "etcd_mvcc_db_total_size_in_bytes",
        Gauge,
        "Total size of the underlying database physically allocated in bytes.",
    ),
    family(
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        Gauge,
        "Total size of the underlying database logically in use in bytes.",
    ),
    family(
        "etcd_mvcc_db_open_read_transactions",
        Gauge,
        "The number of currently open read transactions",
    ),
    family(
        "etcd_mvcc_range_total",
        Counter,
        "Total number of ranges seen by this member.",
    ),
    family(
        "etcd_mvcc_put_total",
        Counter,
        "Total number of puts seen by this member.",
    ),
    family(
        "etcd_mvcc_delete_total",
        Counter,
        "Total number of deletes seen by this member.",
    ),
    family(
        "etcd_mvcc_txn_total",
        Counter,
        "Total number of txns seen by this member.",
    ),
    family(
        "etcd_mvcc_hash_duration_seconds",
        Histogram,
        "The latency distribution of storage hash operation.",
    ),
    family(
        "etcd_mvcc_hash_rev_duration_seconds",
        Histogram,
        "The latency distribution of storage hash by revision operation.",
    ),
    family(
        "etcd_debugging_mvcc_range_total",
        Counter,
        "Total number of ranges seen by this member.",
    ),
    family(
        "etcd_debugging_mvcc_put_total",
        Counter,
        "Total number of puts seen by this member.",
    ),
    family(
        "etcd_debugging_mvcc_delete_total",
        Counter,
        "Total number of deletes seen by this member.",
    ),
    family(
        "etcd_debugging_mvcc_txn_total",
        Counter,
        "Total number of txns seen by this member.",
    ),
    family(
        "etcd_debugging_mvcc_keys_total",
        Gauge,
        "Total number of keys.",
    ),
    family(
        "etcd_debugging_mvcc_total_put_size_in_bytes",
        Gauge,
        "The total size of put kv pairs seen by this member.",
    ),
    family(
        "etcd_debugging_mvcc_db_total_size_in_bytes",
        Gauge,
        "Total size of the underlying database physically allocated in bytes.",
    ),
    family(
        "etcd_debugging_mvcc_current_revision",
        Gauge,
        "The current revision of store.",
    ),
    family(
        "etcd_debugging_mvcc_compact_revision",
        Gauge,
        "The revision of the last compaction in store.",
    ),
    // network
    family(
        "etcd_network_client_grpc_sent_bytes_total",
        Counter,
        "The total number of bytes sent to grpc clients.",
    ),
    family(
        "etcd_network_client_grpc_received_bytes_total",
        Counter,
        "The total number of bytes received from grpc clients.",
    ),
    labelled(
        "etcd_network_peer_sent_bytes_total",
        Counter,
        "The total number of bytes sent to peers.",
    ),
    labelled(
        "etcd_network_peer_received_bytes_total",
        Counter,
        "The total number of bytes received from peers.",
    ),
    labelled(
        "etcd_network_peer_sent_failures_total",
        Counter,
        "The total number of send failures from peers.",
    ),
    labelled(
        "etcd_network_peer_round_trip_time_seconds",
        Histogram,
        "Round-Trip-Time histogram between peers",
    ),
    labelled(
        "etcd_network_active_peers",
        Gauge,
        "The current number of active peer connections.",
    ),
    labelled(
        "etcd_network_disconnected_peers_total",
        Counter,
        "The total number of disconnected peers.",
    ),
    labelled(
        "etcd_network_snapshot_send_success",
        Counter,
        "Total number of successful snapshot sends",
    ),
    labelled(
        "etcd_network_snapshot_send_failures",
        Counter,
        "Total number of snapshot send failures",
    ),
    labelled(
        "etcd_network_snapshot_send_total_duration_seconds",
        Histogram,
        "Total latency distributions of v3 snapshot sends",
    ),
    labelled(
        "etcd_network_snapshot_receive_success",
        Counter,
        "Total number of successful snapshot receives",
    ),
    labelled(
        "etcd_network_snapshot_receive_failures",
        Counter,
        "Total number of snapshot receive failures",
    ),
    labelled(
        "etcd_network_snapshot_receive_total_duration_seconds",
        Histogram,
        "Total latency distributions of v3 snapshot receives",
    ),
    // gRPC (go-grpc-prometheus); every method's series are registered by the layer
    labelled(
        "grpc_server_started_total",
        Counter,
        "Total number of RPCs started on the server.",
    ),
    labelled(
        "grpc_server_handled_total",
        Counter,
        "Total number of RPCs completed on the server, regardless of success or failure.",
    ),
    labelled(
        "grpc_server_msg_received_total",
        Counter,
        "Total number of RPC stream messages received on the server.",
    ),
    labelled(
        "grpc_server_msg_sent_total",
        Counter,
        "Total number of gRPC stream messages sent by the server.",
    ),
    // Under --metrics=extensive only (its series exist only then).
    labelled(
        "grpc_server_handling_seconds",
        Histogram,
        "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
    ),
];

/// etcd's histogram buckets (`prometheus.ExponentialBuckets(start, 2, count)`), so
/// that quantile queries mean the same thing.
const BUCKETS: &[(&str, f64, usize)] = &[
    ("etcd_disk_wal_fsync_duration_seconds", 0.001, 14),
    ("etcd_disk_backend_commit_duration_seconds", 0.001, 14),
    ("etcd_disk_backend_defrag_duration_seconds", 0.1, 13),
    ("etcd_disk_backend_snapshot_duration_seconds", 0.01, 17),
    ("etcd_snap_db_fsync_duration_seconds", 0.001, 14),
    ("etcd_snap_db_save_total_duration_seconds", 0.1, 10),
    ("etcd_snap_fsync_duration_seconds", 0.001, 14),
    ("etcd_mvcc_hash_duration_seconds", 0.01, 15),
    ("etcd_mvcc_hash_rev_duration_seconds", 0.01, 15),
    ("etcd_network_peer_round_trip_time_seconds", 0.0001, 16),
    ("etcd_network_snapshot_send_total_duration_seconds", 0.1, 10),
    (
        "etcd_network_snapshot_receive_total_duration_seconds",
        0.1,
        10,
    ),
];

/// go-grpc-prometheus's handling-time buckets (Prometheus's `DefBuckets`), which etcd
/// keeps.
const GRPC_HANDLING_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histogram samples are folded into their buckets between scrapes (the
/// recorder keeps raw samples until then).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

fn exponential_buckets(start: f64, count: usize) -> Vec<f64> {
    let mut bounds = Vec::with_capacity(count);
    let mut bound = start;
    for _ in 0..count {
        bounds.push(bound);
        bound *= 2.0;
    }
    bounds
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder (once; later
/// calls return the same handle). Call before opening storage: handles registered
/// before it record nothing. `None` if another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for &(name, start, count) in BUCKETS {
                builder = builder
                    .set_buckets_for_metric(
                        Matcher::Full(name.to_string()),
                        &exponential_buckets(start, count),
                    )
                    .ok()?;
            }
            builder = builder
                .set_buckets_for_metric(
                    Matcher::Full("grpc_server_handling_seconds".to_string()),
                    GRPC_HANDLING_BUCKETS,
                )
                .ok()?;
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                Err(error) => {
                    tracing::warn!("metrics recorder not installed: {error}");
                    return None;
                }
            };
            for family in FAMILIES {
                match family.kind {
                    Counter => describe_counter!(family.name, family.help),
                    Gauge => describe_gauge!(family.name, family.help),
                    Histogram => describe_histogram!(family.name, family.help),
                }
                if family.unlabelled {
                    // Registering makes the series appear at zero, as etcd's do.
                    match family.kind {
                        Counter => drop(metrics::counter!(family.name)),
                        Gauge => drop(metrics::gauge!(family.name)),
                        Histogram => drop(metrics::histogram!(family.name)),
                    }
                }
            }
            metrics::gauge!("etcd_server_version", "server_version" => ETCD_VERSION).set(1.0);
            metrics::gauge!("etcd_cluster_version", "cluster_version" => &CLUSTER_VERSION[..3])
                .set(1.0);
            metrics::gauge!("etcd_server_go_version", "server_go_version" => env!("CONCORD_RUSTC_VERSION"))
                .set(1.0);
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(error) = spawned {
                tracing::warn!("metrics upkeep thread not started: {error}");
            }
            Some(handle)
        })
        .as_ref()
}

/// `/metrics`, for the client port and `--listen-metrics-urls`.
pub fn router(core: Arc<Core>) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(core)
}

async fn render(
    State(core): State<Arc<Core>>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";
    let Some(handle) = install() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("content-type", "text/plain; charset=utf-8")],
            "metrics recorder unavailable\n".to_string(),
        );
    };
    // Reading the store's size walks its directory: off the async workers.
    let core_for_scrape = core.clone();
    let _ = tokio::task::spawn_blocking(move || refresh_member_gauges(&core_for_scrape)).await;
    let mut body = handle.render();
    write_process_metrics(&mut body);
    (StatusCode::OK, [("content-type", TEXT_FORMAT)], body)
}

/// Sets the gauges that mirror the member's state.
fn refresh_member_gauges(core: &Core) {
    let status = &core.raft.status;
    let bool_gauge = |on: bool| if on { 1.0 } else { 0.0 };
    metrics::gauge!("etcd_server_has_leader").set(bool_gauge(status.leader() != 0));
    metrics::gauge!("etcd_server_is_leader").set(bool_gauge(status.is_leader()));
    metrics::gauge!("etcd_server_is_learner")
        .set(bool_gauge(status.is_learner.load(Ordering::Acquire)));
    metrics::gauge!("etcd_server_proposals_committed_total")
        .set(status.commit_index.load(Ordering::Acquire) as f64);
    metrics::gauge!("etcd_server_proposals_applied_total")
        .set(status.applied_index.load(Ordering::Acquire) as f64);
    // etcd shows a disabled quota as the negative flag value it was given.
    let quota = core.config.quota_backend_bytes.map_or(-1.0, |q| q as f64);
    metrics::gauge!("etcd_server_quota_backend_bytes").set(quota);
    metrics::gauge!("etcd_server_id", "server_id" => format!("{:x}", core.member_id)).set(1.0);
    let store = core.backend.store();
    metrics::gauge!("etcd_debugging_mvcc_current_revision").set(store.current_revision() as f64);
    metrics::gauge!("etcd_debugging_mvcc_compact_revision").set(store.compact_revision() as f64);
    match store.db_size() {
        Ok(bytes) => {
            for name in [
                "etcd_mvcc_db_total_size_in_bytes",
                "etcd_debugging_mvcc_db_total_size_in_bytes",
            ] {
                metrics::gauge!(name).set(bytes as f64);
            }
            // What compactions left for a defragment to reclaim is not in use.
            metrics::gauge!("etcd_mvcc_db_total_size_in_use_in_bytes")
                .set(store.db_size_in_use() as f64);
        }
        Err(error) => tracing::debug!("db size for metrics: {error}"),
    }
}

/// The Prometheus client's process collector and etcd's `os_fd_*` gauges, read from
/// `/proc/self` (Linux). Families whose source cannot be read are left out.
fn write_process_metrics(out: &mut String) {
    let mut family = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    let stat = procfs::self_stat();
    if let Some(stat) = &stat {
        family(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            stat.cpu_seconds,
        );
        family(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            stat.virtual_bytes as f64,
        );
        family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            stat.resident_bytes as f64,
        );
        if let Some(start) = stat.start_time_seconds {
            family(
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                start,
            );
        }
    }
    let open = procfs::open_fds();
    let limits = procfs::limits();
    if let Some(open) = open {
        family(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            open as f64,
        );
    }
    if let Some(limits) = &limits {
        family(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            limits.open_files as f64,
        );
        family(
            "process_virtual_memory_max_bytes",
            "gauge",
            "Maximum amount of virtual memory available in bytes.",
            limits.address_space as f64,
        );
    }
    if let Some(open) = open {
        family(
            "os_fd_used",
            "gauge",
            "The number of used file descriptors.",
            open as f64,
        );
    }
    if let Some(limits) = &limits {
        family(
            "os_fd_limit",
            "gauge",
            "The file descriptor limit.",
            limits.open_files as f64,
        );
    }
}

/// The few numbers the process metrics need from `/proc`.
mod procfs {
    use std::path::Path;

    /// Linux reports CPU times and start times in clock ticks of 1/100 s (`USER_HZ`).
    const TICKS_PER_SECOND: f64 = 100.0;

    pub struct SelfStat {
        pub cpu_seconds: f64,
        pub virtual_bytes: u64,
        pub resident_bytes: u64,
        pub start_time_seconds: Option<f64>,
    }

    /// `/proc/self/stat` (CPU, start time, virtual size) and `/proc/self/status`
    /// (resident size, in kB: no page size needed).
    pub fn self_stat() -> Option<SelfStat> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) is in parentheses and may hold spaces.
        let after_name = &stat[stat.rfind(')')? + 1..];
        // Fields from 3 (state) on; field n is at index n - 3.
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        let cpu_ticks = field(14)? + field(15)?;
        let start_ticks = field(22)?;
        let virtual_bytes = field(23)?;
        let resident_bytes = status_kb("VmRSS").map_or(0, |kb| kb * 1024);
        let start_time_seconds =
            boot_time().map(|boot| boot as f64 + start_ticks as f64 / TICKS_PER_SECOND);
        Some(SelfStat {
            cpu_seconds: cpu_ticks as f64 / TICKS_PER_SECOND,
            virtual_bytes,
            resident_bytes,
            start_time_seconds,
        })
    }

    fn status_kb(key: &str) -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        status.lines().find_map(|line| {
            let rest = line.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
    }

    /// Seconds since the epoch at boot (`btime` in `/proc/stat`).
    fn boot_time() -> Option<u64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        stat.lines()
            .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
    }

    pub fn open_fds() -> Option<usize> {
        Some(std::fs::read_dir(Path::new("/proc/self/fd")).ok()?.count())
    }

    pub struct Limits {
        pub open_files: u64,
        pub address_space: u64,
    }

    /// Soft limits from `/proc/self/limits`; "unlimited" is `u64::MAX`, as Go reports it.
    pub fn limits() -> Option<Limits> {
        let text = std::fs::read_to_string("/proc/self/limits").ok()?;
        let soft = |name: &str| -> Option<u64> {
            let line = text.lines().find(|l| l.starts_with(name))?;
            let value = line[name.len()..].split_whitespace().next()?;
            if value == "unlimited" {
                Some(u64::MAX)
            } else {
                value.parse().ok()
            }
        };
        Some(Limits {
            open_files: soft("Max open files")?,
            address_space: soft("Max address space")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_etcds() {
        // prometheus.ExponentialBuckets(0.001, 2, 14), as etcd's WAL fsync histogram.
        let bounds = exponential_buckets(0.001, 14);
        assert_eq!(bounds.len(), 14);
        assert_eq!(bounds[0], 0.001);
        assert_eq!(bounds[13].to_string(), "8.192");
    }

    #[test]
    fn every_bucketed_family_is_a_histogram() {
        let names = BUCKETS
            .iter()
            .map(|(name, _, _)| name)
            .chain([&"grpc_server_handling_seconds"]);
        for name in names {
            let family = FAMILIES.iter().find(|f| f.name == *name);
            assert_eq!(family.map(|f| f.kind), Some(Kind::Histogram), "{name}");
        }
    }

    /// What recording costs one put on the leader, with the handles the crates hold
    /// and the Prometheus recorder installed: the gRPC layer (method lookup, started,
    /// client version, a message and its bytes each way, handled), the pending gauge
    /// up and down, the slow-apply clock, and, at worst one per put, an mvcc batch's
    /// counts and commit timing and a WAL write's bytes and fsync timing. Run with
    /// `cargo test -p concord-server --lib cost_of_recording -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn cost_of_recording_a_put() {
        use std::collections::HashMap;
        use std::hint::black_box;
        use std::time::Instant;
        let handle = install().expect("recorder installed");
        let labels = [("grpc_method", "Put"), ("grpc_service", "etcdserverpb.KV")];
        let started = metrics::counter!("grpc_server_started_total", &labels);
        let handled = metrics::counter!("grpc_server_handled_total", &labels);
        let received = metrics::counter!("grpc_server_msg_received_total", &labels);
        let sent = metrics::counter!("grpc_server_msg_sent_total", &labels);
        let bytes_in = metrics::counter!("etcd_network_client_grpc_received_bytes_total");
        let bytes_out = metrics::counter!("etcd_network_client_grpc_sent_bytes_total");
        let clients = parking_lot::RwLock::new(HashMap::from([(
            "3.4".to_string(),
            metrics::counter!("etcd_server_client_requests_total"),
        )]));
        let methods: HashMap<String, std::sync::Arc<u64>> = (0..43)
            .map(|i| {
                (
                    format!("/etcdserverpb.Service{i}/Method"),
                    std::sync::Arc::new(i),
                )
            })
            .chain([("/etcdserverpb.KV/Put".to_string(), std::sync::Arc::new(99))])
            .collect();
        let pending = metrics::gauge!("etcd_server_proposals_pending");
        let puts = [
            metrics::counter!("etcd_mvcc_put_total"),
            metrics::counter!("etcd_debugging_mvcc_put_total"),
        ];
        let put_size = metrics::gauge!("etcd_debugging_mvcc_total_put_size_in_bytes");
        let keys = metrics::gauge!("etcd_debugging_mvcc_keys_total");
        let commit = metrics::histogram!("etcd_disk_backend_commit_duration_seconds");
        let wal_bytes = metrics::gauge!("etcd_disk_wal_write_bytes_total");
        let fsync = metrics::histogram!("etcd_disk_wal_fsync_duration_seconds");
        const PUTS: u32 = 1_000_000;
        let begin = Instant::now();
        for _ in 0..PUTS {
            let method = methods.get(black_box("/etcdserverpb.KV/Put")).cloned();
            black_box(method);
            started.increment(1);
            if let Some(c) = clients.read().get(black_box("3.4")) {
                c.increment(1);
            }
            received.increment(1);
            bytes_in.increment(black_box(40));
            pending.increment(1.0);
            let apply = Instant::now();
            puts[0].increment(1);
            puts[1].increment(1);
            put_size.increment(40.0);
            keys.increment(1.0);
            black_box(apply.elapsed());
            let timed = Instant::now();
            commit.record(timed.elapsed().as_secs_f64());
            wal_bytes.increment(100.0);
            let timed = Instant::now();
            fsync.record(timed.elapsed().as_secs_f64());
            pending.decrement(1.0);
            sent.increment(1);
            bytes_out.increment(black_box(30));
            handled.increment(1);
            if black_box(false) {
                handle.run_upkeep();
            }
        }
        let per_put = begin.elapsed() / PUTS;
        handle.run_upkeep();
        println!("recording one put costs {per_put:?}");
    }

    #[test]
    fn process_metrics_read_proc() {
        let mut text = String::new();
        write_process_metrics(&mut text);
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "os_fd_used",
            "os_fd_limit",
        ] {
            assert!(
                text.contains(&format!("\n{name} ")),
                "{name} missing in {text}"
            );
        }
    }
}
