//! etcd's sample Grafana dashboard against a Concord cluster: Debian's `prometheus`
//! scrapes a three-member cluster under a light load, and every query of etcd's
//! `Documentation/op-guide/grafana.json` returns data through Prometheus's HTTP API,
//! as the dashboard's panels would ask for it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use concord_tests::{Cluster, free_port};
use serde_json::Value;

/// Every query of etcd's sample dashboard (`Documentation/op-guide/grafana.json`, its
/// panels' `targets[].expr`, in panel order), with the series each returns for a
/// three-member cluster: one for a sum, one per member (`instance`) otherwise.
const DASHBOARD_QUERIES: &[(&str, usize)] = &[
    // Up
    ("sum(etcd_server_has_leader)", 1),
    // RPC Rate
    (
        r#"sum(rate(grpc_server_started_total{grpc_type="unary"}[5m]))"#,
        1,
    ),
    (
        r#"sum(rate(grpc_server_handled_total{grpc_type="unary",grpc_code!="OK"}[5m]))"#,
        1,
    ),
    // Active Streams
    (
        r#"sum(grpc_server_started_total{grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"}) - sum(grpc_server_handled_total{grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"})"#,
        1,
    ),
    (
        r#"sum(grpc_server_started_total{grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"}) - sum(grpc_server_handled_total{grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"})"#,
        1,
    ),
    // DB Size
    ("etcd_debugging_mvcc_db_total_size_in_bytes", 3),
    // Disk Sync Duration
    (
        "histogram_quantile(0.99, sum(rate(etcd_disk_wal_fsync_duration_seconds_bucket[5m])) by (instance, le))",
        3,
    ),
    (
        "histogram_quantile(0.99, sum(rate(etcd_disk_backend_commit_duration_seconds_bucket[5m])) by (instance, le))",
        3,
    ),
    // Memory
    ("process_resident_memory_bytes", 3),
    // Client Traffic In, Client Traffic Out
    ("rate(etcd_network_client_grpc_received_bytes_total[5m])", 3),
    ("rate(etcd_network_client_grpc_sent_bytes_total[5m])", 3),
    // Peer Traffic In, Peer Traffic Out
    (
        "sum(rate(etcd_network_peer_received_bytes_total[5m])) by (instance)",
        3,
    ),
    (
        "sum(rate(etcd_network_peer_sent_bytes_total[5m])) by (instance)",
        3,
    ),
    // Raft Proposals
    ("sum(rate(etcd_server_proposals_failed_total[5m]))", 1),
    ("sum(etcd_server_proposals_pending)", 1),
    ("sum(rate(etcd_server_proposals_committed_total[5m]))", 1),
    ("sum(rate(etcd_server_proposals_applied_total[5m]))", 1),
    // Total Leader Elections Per Day
    ("changes(etcd_server_leader_changes_seen_total[1d])", 3),
];

/// A `prometheus` process scraping the given targets every 500 ms, killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, targets: &[String]) -> Result<Prometheus> {
        let binary = Path::new("/usr/bin/prometheus");
        if !binary.exists() {
            bail!(
                "prometheus is not installed: run `apt-get install prometheus` (`cargo xtask test` installs it)"
            );
        }
        let config = dir.join("prometheus.yml");
        let quoted: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 500ms\n  scrape_timeout: 500ms\n  evaluation_interval: 500ms\n\
                 scrape_configs:\n  - job_name: concord\n    static_configs:\n      - targets: [{}]\n",
                quoted.join(", ")
            ),
        )?;
        let port = free_port();
        let log = dir.join("prometheus.log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("start prometheus")?;
        Ok(Prometheus { child, port, log })
    }

    /// Waits until Prometheus answers its readiness check.
    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "5",
                ])
                .arg(format!("http://127.0.0.1:{}/-/ready", self.port))
                .output()
                .context("run curl")?;
            if out.stdout == b"200" {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("prometheus never became ready; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// An instant query through the HTTP API: the result vector's series.
    fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10", "-G", "--data-urlencode"])
            .arg(format!("query={expr}"))
            .arg(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .output()
            .context("run curl")?;
        let body: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&out.stdout)))?;
        if body["status"] != "success" {
            bail!("query {expr} failed: {body}");
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The dashboard query that names `what`.
fn dashboard_query(what: &str) -> &'static str {
    DASHBOARD_QUERIES
        .iter()
        .map(|(expr, _)| *expr)
        .find(|expr| expr.contains(what))
        .expect("a dashboard query names it")
}

/// A series' value as a number (Prometheus writes `[time, "value"]`).
fn sample_value(series: &Value) -> Option<f64> {
    series["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_grafana_dashboard_queries_return_data_for_a_concord_cluster() -> Result<()> {
    let cluster = Cluster::start(3)?;
    let leader = cluster.leader().await?;
    let scratch = tempfile::tempdir()?;
    let targets: Vec<String> = cluster
        .members
        .iter()
        .map(|m| format!("127.0.0.1:{}", m.client_port))
        .collect();
    let prometheus = Prometheus::start(scratch.path(), &targets)?;
    prometheus.wait_ready()?;

    // A light load while Prometheus scrapes: puts (client traffic, proposals, fsyncs,
    // commits), an open watch and an open keep-alive stream (the active streams).
    let mut client = cluster.member_client(leader).await?;
    let _watch = client.watch("load/", None).await?;
    let lease = client.lease_grant(60, None).await?;
    let (mut keeper, _responses) = client.lease_keep_alive(lease.id()).await?;
    keeper.keep_alive().await?;
    let load = tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            if client
                .put(format!("load/{}", n % 100), "v", None)
                .await
                .is_err()
            {
                return;
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    // Each query answers once Prometheus holds enough samples (a rate needs two per
    // series): wait for all of them, however loaded the machine is.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut pending: Vec<(&str, usize)> = DASHBOARD_QUERIES.to_vec();
    let mut last_seen = Vec::new();
    while !pending.is_empty() {
        last_seen.clear();
        let mut still = Vec::new();
        for &(expr, series) in &pending {
            let result = prometheus.query(expr)?;
            let numbers = result
                .iter()
                .filter_map(sample_value)
                .filter(|v| v.is_finite());
            if result.len() == series && numbers.count() == series {
                continue;
            }
            last_seen.push(format!("{expr}: {}", Value::Array(result)));
            still.push((expr, series));
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let up = prometheus.query("up").unwrap_or_default();
            bail!(
                "dashboard queries without data:\n{}\nup: {}\nprometheus log:\n{}",
                last_seen.join("\n"),
                Value::Array(up),
                prometheus.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    load.abort();

    // What the panels show: every member up with a leader, the open streams, traffic.
    let has_leader = prometheus.query("sum(etcd_server_has_leader)")?;
    assert_eq!(sample_value(&has_leader[0]), Some(3.0));
    let watches = prometheus.query(dashboard_query("etcdserverpb.Watch"))?;
    assert!(
        sample_value(&watches[0]).is_some_and(|open| open >= 1.0),
        "{watches:?}"
    );
    let keep_alives = prometheus.query(dashboard_query("etcdserverpb.Lease"))?;
    assert!(
        sample_value(&keep_alives[0]).is_some_and(|open| open >= 1.0),
        "{keep_alives:?}"
    );
    let peer_out = prometheus.query(dashboard_query("etcd_network_peer_sent_bytes_total"))?;
    assert!(
        peer_out
            .iter()
            .filter_map(sample_value)
            .any(|rate| rate > 0.0)
    );
    Ok(())
}
