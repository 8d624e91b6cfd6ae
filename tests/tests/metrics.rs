//! Prometheus `/metrics`: etcd 3.4's families with their types, and values that move
//! as etcd's do, read over plain HTTP as Prometheus reads them.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use concord_tests::{Cluster, concord_binary, free_port};

/// The families Debian's etcd 3.4.23 exports on a three-member cluster after a short
/// load (its `go_*`, `promhttp_*`, `etcd_grpc_proxy_*` and most `etcd_debugging_*`
/// families left out), with their types, as read off its `/metrics`.
const ETCD_FAMILIES: &[(&str, &str)] = &[
    ("etcd_cluster_version", "gauge"),
    ("etcd_debugging_mvcc_keys_total", "gauge"),
    ("etcd_debugging_mvcc_put_total", "counter"),
    ("etcd_debugging_mvcc_range_total", "counter"),
    ("etcd_debugging_mvcc_delete_total", "counter"),
    ("etcd_debugging_mvcc_txn_total", "counter"),
    ("etcd_debugging_mvcc_current_revision", "gauge"),
    ("etcd_debugging_mvcc_compact_revision", "gauge"),
    ("etcd_debugging_mvcc_db_total_size_in_bytes", "gauge"),
    ("etcd_debugging_mvcc_total_put_size_in_bytes", "gauge"),
    ("etcd_debugging_server_lease_expired_total", "counter"),
    ("etcd_disk_backend_commit_duration_seconds", "histogram"),
    ("etcd_disk_backend_defrag_duration_seconds", "histogram"),
    ("etcd_disk_backend_snapshot_duration_seconds", "histogram"),
    ("etcd_disk_defrag_inflight", "gauge"),
    ("etcd_disk_wal_fsync_duration_seconds", "histogram"),
    ("etcd_disk_wal_write_bytes_total", "gauge"),
    ("etcd_mvcc_db_open_read_transactions", "gauge"),
    ("etcd_mvcc_db_total_size_in_bytes", "gauge"),
    ("etcd_mvcc_db_total_size_in_use_in_bytes", "gauge"),
    ("etcd_mvcc_delete_total", "counter"),
    ("etcd_mvcc_hash_duration_seconds", "histogram"),
    ("etcd_mvcc_hash_rev_duration_seconds", "histogram"),
    ("etcd_mvcc_put_total", "counter"),
    ("etcd_mvcc_range_total", "counter"),
    ("etcd_mvcc_txn_total", "counter"),
    ("etcd_network_client_grpc_received_bytes_total", "counter"),
    ("etcd_network_client_grpc_sent_bytes_total", "counter"),
    ("etcd_network_peer_received_bytes_total", "counter"),
    ("etcd_network_peer_sent_bytes_total", "counter"),
    ("etcd_network_peer_round_trip_time_seconds", "histogram"),
    ("etcd_server_client_requests_total", "counter"),
    ("etcd_server_go_version", "gauge"),
    ("etcd_server_has_leader", "gauge"),
    ("etcd_server_health_failures", "counter"),
    ("etcd_server_health_success", "counter"),
    ("etcd_server_heartbeat_send_failures_total", "counter"),
    ("etcd_server_id", "gauge"),
    ("etcd_server_is_leader", "gauge"),
    ("etcd_server_is_learner", "gauge"),
    ("etcd_server_leader_changes_seen_total", "counter"),
    ("etcd_server_learner_promote_successes", "counter"),
    ("etcd_server_proposals_applied_total", "gauge"),
    ("etcd_server_proposals_committed_total", "gauge"),
    ("etcd_server_proposals_failed_total", "counter"),
    ("etcd_server_proposals_pending", "gauge"),
    ("etcd_server_quota_backend_bytes", "gauge"),
    ("etcd_server_read_indexes_failed_total", "counter"),
    ("etcd_server_slow_apply_total", "counter"),
    ("etcd_server_slow_read_indexes_total", "counter"),
    ("etcd_server_snapshot_apply_in_progress_total", "gauge"),
    ("etcd_server_version", "gauge"),
    ("etcd_snap_db_fsync_duration_seconds", "histogram"),
    ("etcd_snap_db_save_total_duration_seconds", "histogram"),
    ("etcd_snap_fsync_duration_seconds", "histogram"),
    ("grpc_server_handled_total", "counter"),
    ("grpc_server_msg_received_total", "counter"),
    ("grpc_server_msg_sent_total", "counter"),
    ("grpc_server_started_total", "counter"),
    ("os_fd_limit", "gauge"),
    ("os_fd_used", "gauge"),
    ("process_cpu_seconds_total", "counter"),
    ("process_max_fds", "gauge"),
    ("process_open_fds", "gauge"),
    ("process_resident_memory_bytes", "gauge"),
    ("process_start_time_seconds", "gauge"),
    ("process_virtual_memory_bytes", "gauge"),
    ("process_virtual_memory_max_bytes", "gauge"),
];

/// A scrape: each family's type, and each sample line's value by its full series
/// text (`name{labels}`).
struct Scrape {
    types: HashMap<String, String>,
    samples: HashMap<String, f64>,
}

impl Scrape {
    fn value(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or_else(|| {
            panic!("no series {series} in the scrape");
        })
    }
}

/// GET over HTTP/1.1 with std's TCP, as a scraper does; returns status and body.
fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    Ok((status, body.to_string()))
}

fn scrape(port: u16) -> Result<Scrape> {
    let (status, body) = http_get(port, "/metrics")?;
    if status != 200 {
        bail!("/metrics answered {status}: {body}");
    }
    let mut types = HashMap::new();
    let mut samples = HashMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                let previous = types.insert(name.to_string(), kind.to_string());
                assert!(previous.is_none(), "family {name} declared twice");
            }
        } else if !line.starts_with('#')
            && let Some((series, value)) = line.rsplit_once(' ')
        {
            samples.insert(series.to_string(), value.parse()?);
        }
    }
    Ok(Scrape { types, samples })
}

fn member_scrape(cluster: &Cluster, i: usize) -> Result<Scrape> {
    scrape(cluster.members[i].client_port)
}

/// Every member has applied every write committed before this call.
async fn caught_up(cluster: &Cluster) -> Result<()> {
    for i in 0..3 {
        cluster.member_client(i).await?.get("warm", None).await?;
    }
    Ok(())
}

#[tokio::test]
async fn etcd_families_are_exported_with_their_types_and_move_as_etcds_do() -> Result<()> {
    let cluster = Cluster::start(3)?;
    let leader = cluster.leader().await?;
    let mut client = cluster.member_client(leader).await?;
    // A short load: puts, reads, a delete, a txn, a lease, a watch.
    client.put("warm", "up", None).await?;
    client.get("warm", None).await?;
    // A linearizable read through each member waits until it has applied what was
    // committed, so no scrape misses (or later counts) a write a follower still applies.
    caught_up(&cluster).await?;
    let before: Vec<Scrape> = (0..3)
        .map(|i| member_scrape(&cluster, i))
        .collect::<Result<_>>()?;
    const PUTS: usize = 17;
    for n in 0..PUTS {
        client.put(format!("k{n}"), "v", None).await?;
    }
    client.delete("k0", None).await?;
    let txn = etcd_client::Txn::new()
        .when([etcd_client::Compare::value(
            "k1",
            etcd_client::CompareOp::Equal,
            "v",
        )])
        .and_then([etcd_client::TxnOp::put("k1", "w", None)]);
    client.txn(txn).await?;
    let lease = client.lease_grant(60, None).await?;
    client.lease_revoke(lease.id()).await?;
    // A failed call: revoking a lease that does not exist is NotFound.
    let missing = client.lease_revoke(lease.id()).await;
    assert!(missing.is_err());
    let mut watch = client.watch("k", None).await?;
    let created = watch.message().await?;
    assert!(created.is_some_and(|r| r.created()));
    drop(watch);
    caught_up(&cluster).await?;

    let after: Vec<Scrape> = (0..3)
        .map(|i| member_scrape(&cluster, i))
        .collect::<Result<_>>()?;
    for (i, scrape) in after.iter().enumerate() {
        for (name, kind) in ETCD_FAMILIES {
            assert_eq!(
                scrape.types.get(*name).map(String::as_str),
                Some(*kind),
                "member {i}: family {name}"
            );
        }
        // Every member applies every put: the txn's put counts too (etcd counts the
        // ops of a txn as it does single requests).
        let grew = scrape.value("etcd_mvcc_put_total") - before[i].value("etcd_mvcc_put_total");
        assert_eq!(grew, (PUTS + 1) as f64, "member {i}: puts counted");
        assert_eq!(
            scrape.value("etcd_debugging_mvcc_put_total")
                - before[i].value("etcd_debugging_mvcc_put_total"),
            (PUTS + 1) as f64
        );
        assert_eq!(
            scrape.value("etcd_mvcc_delete_total") - before[i].value("etcd_mvcc_delete_total"),
            1.0,
            "member {i}: the delete counted"
        );
        // The txn compared one key and put one: more than one op, so a txn.
        assert_eq!(
            scrape.value("etcd_mvcc_txn_total") - before[i].value("etcd_mvcc_txn_total"),
            1.0,
            "member {i}: the txn counted"
        );
        // warm plus k0..k16, less k0.
        assert_eq!(scrape.value("etcd_debugging_mvcc_keys_total"), PUTS as f64);
        assert_eq!(scrape.value("etcd_server_has_leader"), 1.0, "member {i}");
        assert!(scrape.value("etcd_server_proposals_applied_total") > 0.0);
        assert!(scrape.value("etcd_disk_wal_fsync_duration_seconds_count") > 0.0);
        assert!(
            scrape.value("etcd_disk_backend_commit_duration_seconds_bucket{le=\"+Inf\"}") > 0.0
        );
        assert_eq!(
            scrape.value(r#"etcd_server_version{server_version="3.4.23"}"#),
            1.0
        );
    }
    let leaders: f64 = after.iter().map(|s| s.value("etcd_server_is_leader")).sum();
    assert_eq!(leaders, 1.0, "exactly one member leads");
    assert_eq!(after[leader].value("etcd_server_is_leader"), 1.0);

    // gRPC calls on the member the client used, labels sorted as go-grpc-prometheus
    // writes them.
    let grpc = |method: &str, service: &str, code: &str, kind: &str| {
        format!(
            "grpc_server_handled_total{{grpc_code=\"{code}\",grpc_method=\"{method}\",grpc_service=\"{service}\",grpc_type=\"{kind}\"}}"
        )
    };
    let delta = |series: &str| after[leader].value(series) - before[leader].value(series);
    assert_eq!(
        delta(&grpc("Put", "etcdserverpb.KV", "OK", "unary")),
        PUTS as f64
    );
    assert_eq!(
        delta(&grpc(
            "LeaseRevoke",
            "etcdserverpb.Lease",
            "NotFound",
            "unary"
        )),
        1.0
    );
    assert_eq!(
        delta(&grpc("LeaseRevoke", "etcdserverpb.Lease", "OK", "unary")),
        1.0
    );
    assert_eq!(
        delta(
            r#"grpc_server_started_total{grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"}"#
        ),
        PUTS as f64
    );
    assert_eq!(
        delta(
            r#"grpc_server_msg_received_total{grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"}"#
        ),
        PUTS as f64
    );
    assert!(delta("etcd_network_client_grpc_received_bytes_total") > 0.0);
    assert!(delta("etcd_network_client_grpc_sent_bytes_total") > 0.0);

    // Raft traffic between the members, by peer id; the leader times its heartbeats'
    // round trips (it sends one each heartbeat interval: wait for the first answers).
    let ids: Vec<String> = {
        let members = client.member_list().await?;
        members
            .members()
            .iter()
            .map(|m| format!("{:x}", m.id()))
            .collect()
    };
    let leader_id = format!("{:x}", client.status().await?.leader());
    for peer in ids.iter().filter(|id| **id != leader_id) {
        let sent = format!("etcd_network_peer_sent_bytes_total{{To=\"{peer}\"}}");
        let received = format!("etcd_network_peer_received_bytes_total{{From=\"{peer}\"}}");
        let round_trips =
            format!("etcd_network_peer_round_trip_time_seconds_count{{To=\"{peer}\"}}");
        assert!(after[leader].value(&sent) > 0.0, "{sent}");
        assert!(after[leader].value(&received) > 0.0, "{received}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while member_scrape(&cluster, leader)?.value(&round_trips) == 0.0 {
            assert!(
                Instant::now() < deadline,
                "no heartbeat round trip to {peer}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

#[tokio::test]
async fn leader_changes_are_seen_by_the_survivors() -> Result<()> {
    let mut cluster = Cluster::start(3)?;
    let leader = cluster.leader().await?;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let before: Vec<f64> = survivors
        .iter()
        .map(|&i| Ok(member_scrape(&cluster, i)?.value("etcd_server_leader_changes_seen_total")))
        .collect::<Result<_>>()?;
    assert!(before.iter().all(|&seen| seen >= 1.0), "{before:?}");
    cluster.kill(leader);
    let new_leader = cluster.leader().await?;
    assert_ne!(new_leader, leader);
    for (n, &i) in survivors.iter().enumerate() {
        let scrape = member_scrape(&cluster, i)?;
        assert!(
            scrape.value("etcd_server_leader_changes_seen_total") > before[n],
            "member {i} saw the new leader"
        );
        assert_eq!(scrape.value("etcd_server_has_leader"), 1.0);
    }
    Ok(())
}

/// A member started alone from a three-member `--initial-cluster`: it never has a
/// leader, yet serves `/metrics` (on its client port and on `--listen-metrics-urls`).
struct LoneMember {
    child: Child,
    client_port: u16,
    metrics_port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for LoneMember {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_lone_member() -> Result<LoneMember> {
    // A port free_port found may be taken by another test before the member binds it;
    // the member then exits, and is started again on other ports.
    for _ in 0..3 {
        if let Some(member) = try_start_lone_member()? {
            return Ok(member);
        }
    }
    bail!("the lone member never served metrics")
}

/// Starts the member; `None` if it exited before serving metrics.
fn try_start_lone_member() -> Result<Option<LoneMember>> {
    let dir = tempfile::tempdir()?;
    let (client_port, metrics_port) = (free_port(), free_port());
    let peers = [free_port(), free_port(), free_port()];
    let initial_cluster = peers
        .iter()
        .enumerate()
        .map(|(i, port)| format!("m{i}=http://127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{}", peers[0]);
    let child = Command::new(concord_binary())
        .args(["--name", "m0", "--data-dir"])
        .arg(dir.path().join("m0"))
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &initial_cluster])
        .args([
            "--listen-metrics-urls",
            &format!("http://127.0.0.1:{metrics_port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut member = LoneMember {
        child,
        client_port,
        metrics_port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", member.metrics_port)).is_err() {
        if member.child.try_wait()?.is_some() {
            return Ok(None);
        }
        if Instant::now() > deadline {
            bail!("the lone member never served metrics");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Some(member))
}

#[test]
fn metrics_answer_without_a_leader_on_both_listeners() -> Result<()> {
    let member = start_lone_member()?;
    for port in [member.client_port, member.metrics_port] {
        let scrape = scrape(port)?;
        assert_eq!(scrape.value("etcd_server_has_leader"), 0.0);
        assert_eq!(scrape.value("etcd_server_is_leader"), 0.0);
        assert_eq!(scrape.value("etcd_server_leader_changes_seen_total"), 0.0);
    }
    // The metrics listener also serves etcd's /health, which fails without a leader.
    let (status, body) = http_get(member.metrics_port, "/health")?;
    assert_eq!((status, body.trim()), (503, r#"{"health":"false"}"#));
    let scrape = scrape(member.metrics_port)?;
    assert!(scrape.value("etcd_server_health_failures") >= 1.0);
    // And nothing else: the metrics listener is no client port.
    assert_eq!(http_get(member.metrics_port, "/version")?.0, 404);
    Ok(())
}

/// A series' change between two scrapes (absent counts as 0: labelled series appear
/// on their first event).
fn grew(before: &Scrape, after: &Scrape, series: &str) -> f64 {
    after.samples.get(series).copied().unwrap_or(0.0)
        - before.samples.get(series).copied().unwrap_or(0.0)
}

fn started(method: &str, service: &str, kind: &str) -> String {
    format!(
        "grpc_server_started_total{{grpc_method=\"{method}\",grpc_service=\"{service}\",grpc_type=\"{kind}\"}}"
    )
}

/// Waits until member `i`'s scrape satisfies `ready`; returns that scrape.
async fn wait_scrape(
    cluster: &Cluster,
    i: usize,
    what: &str,
    ready: impl Fn(&Scrape) -> bool,
) -> Result<Scrape> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let scrape = member_scrape(cluster, i)?;
        if ready(&scrape) {
            return Ok(scrape);
        }
        if Instant::now() > deadline {
            let mut lines: Vec<_> = scrape
                .samples
                .iter()
                .filter(|(series, _)| {
                    series.starts_with("etcd_network")
                        || series.starts_with("etcd_snap")
                        || series.starts_with("etcd_mvcc_db")
                })
                .map(|(series, value)| format!("{series} {value}"))
                .collect();
            lines.sort();
            bail!(
                "member {i}: {what} never happened; scrape:\n{}",
                lines.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// go-grpc-prometheus registers every method of every service at zero when the
/// server starts, Lock and Election included (etcd 3.4.23's first scrape lists
/// `v3lockpb.Lock` and `v3electionpb.Election` series before any call): dashboards'
/// `rate()` and `increase()` need the series before the first event.
#[tokio::test]
async fn lock_and_election_series_exist_at_zero_from_the_start() -> Result<()> {
    let cluster = Cluster::start(1)?;
    cluster.leader().await?;
    let scrape = member_scrape(&cluster, 0)?;
    let methods = [
        ("v3lockpb.Lock", "Lock", "unary"),
        ("v3lockpb.Lock", "Unlock", "unary"),
        ("v3electionpb.Election", "Campaign", "unary"),
        ("v3electionpb.Election", "Proclaim", "unary"),
        ("v3electionpb.Election", "Leader", "unary"),
        ("v3electionpb.Election", "Observe", "server_stream"),
        ("v3electionpb.Election", "Resign", "unary"),
    ];
    let codes = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    for (service, method, kind) in methods {
        let labels =
            format!(r#"grpc_method="{method}",grpc_service="{service}",grpc_type="{kind}""#);
        for family in [
            "grpc_server_started_total",
            "grpc_server_msg_received_total",
            "grpc_server_msg_sent_total",
        ] {
            assert_eq!(scrape.value(&format!("{family}{{{labels}}}")), 0.0);
        }
        for code in codes {
            assert_eq!(
                scrape.value(&format!(
                    r#"grpc_server_handled_total{{grpc_code="{code}",{labels}}}"#
                )),
                0.0
            );
        }
    }
    // And they move from there: one lock counts one started and one handled Lock.
    let mut client = cluster.member_client(0).await?;
    let lease = client.lease_grant(10, None).await?.id();
    let options = etcd_client::LockOptions::new().with_lease(lease);
    client.lock("metrics-lock", Some(options)).await?;
    let after = member_scrape(&cluster, 0)?;
    let lock = r#"grpc_method="Lock",grpc_service="v3lockpb.Lock",grpc_type="unary""#;
    assert_eq!(
        after.value(&format!("grpc_server_started_total{{{lock}}}")),
        1.0
    );
    assert_eq!(
        after.value(&format!(
            r#"grpc_server_handled_total{{grpc_code="OK",{lock}}}"#
        )),
        1.0
    );
    Ok(())
}

/// What the gRPC metrics count is what reaches the client port's gRPC server, as
/// etcd 3.4.23 counts it: its gateway dials the member's own gRPC server (`curl
/// /v3/kv/put` counts one `Put`, with client version "unknown"), while its Lock and
/// Election services call KV, Lease and Watch as functions (`/v3/lock/lock` counts one
/// `Lock` and no `Txn`, `Range` or `Watch`).
#[tokio::test]
async fn gateway_calls_are_counted_and_lock_and_election_internals_are_not() -> Result<()> {
    use concord_tests::http_json::{b64, post_ok};
    let cluster = Cluster::start(1)?;
    cluster.leader().await?;
    let endpoint = cluster.members[0].client_url();
    let before = member_scrape(&cluster, 0)?;
    post_ok(
        &endpoint,
        "/v3/kv/put",
        &format!(r#"{{"key":"{}","value":"{}"}}"#, b64("gw"), b64("1")),
    )
    .await?;
    let lease = post_ok(&endpoint, "/v3/lease/grant", r#"{"TTL":60}"#).await?;
    let lease_id = lease["ID"].as_str().context("lease ID")?.to_string();
    let locked = post_ok(
        &endpoint,
        "/v3/lock/lock",
        &format!(r#"{{"name":"{}","lease":"{lease_id}"}}"#, b64("gw-lock")),
    )
    .await?;
    let key = locked["key"].as_str().context("lock key")?.to_string();
    post_ok(
        &endpoint,
        "/v3/lock/unlock",
        &format!(r#"{{"key":"{key}"}}"#),
    )
    .await?;
    let gateway_done = member_scrape(&cluster, 0)?;
    // Lock and Election over gRPC, as a client calls them.
    let mut client = cluster.member_client(0).await?;
    let grant = client.lease_grant(60, None).await?;
    let lock = client
        .lock(
            "grpc-lock",
            Some(etcd_client::LockOptions::new().with_lease(grant.id())),
        )
        .await?;
    client.unlock(lock.key()).await?;
    client.campaign("grpc-election", "me", grant.id()).await?;
    let after = member_scrape(&cluster, 0)?;

    let counted =
        |method: &str, service: &str| grew(&before, &after, &started(method, service, "unary"));
    assert_eq!(counted("Put", "etcdserverpb.KV"), 1.0, "the gateway's put");
    assert_eq!(counted("LeaseGrant", "etcdserverpb.Lease"), 2.0);
    assert_eq!(counted("Lock", "v3lockpb.Lock"), 2.0);
    assert_eq!(counted("Unlock", "v3lockpb.Lock"), 2.0);
    assert_eq!(counted("Campaign", "v3electionpb.Election"), 1.0);
    // Lock, Unlock and Campaign put, read, delete and wait on keys: none of it counts.
    for method in ["Range", "Txn", "DeleteRange"] {
        assert_eq!(counted(method, "etcdserverpb.KV"), 0.0, "{method}");
    }
    assert_eq!(
        grew(
            &before,
            &after,
            &started("Watch", "etcdserverpb.Watch", "bidi_stream")
        ),
        0.0
    );
    let handled_put = r#"grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"}"#;
    assert_eq!(grew(&before, &after, handled_put), 1.0);
    // The gateway sends no client version: its four calls count as "unknown".
    assert_eq!(
        grew(
            &before,
            &gateway_done,
            r#"etcd_server_client_requests_total{client_api_version="unknown",type="unary"}"#
        ),
        4.0
    );
    Ok(())
}

/// `--metrics=extensive` adds go-grpc-prometheus's handling-time histogram, with its
/// buckets (Prometheus's defaults) and labels, as etcd 3.4.23 shows it; `basic` (the
/// default) leaves it out.
#[tokio::test]
async fn extensive_metrics_add_the_grpc_handling_time_histogram() -> Result<()> {
    let basic = Cluster::start(1)?;
    basic.leader().await?;
    basic.member_client(0).await?.put("k", "v", None).await?;
    let scrape = member_scrape(&basic, 0)?;
    assert!(!scrape.types.contains_key("grpc_server_handling_seconds"));
    drop(basic);

    let cluster = Cluster::start_with(1, &["--metrics", "extensive"])?;
    cluster.leader().await?;
    let before = member_scrape(&cluster, 0)?;
    assert_eq!(
        before
            .types
            .get("grpc_server_handling_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    cluster.member_client(0).await?.put("k", "v", None).await?;
    let after = member_scrape(&cluster, 0)?;
    let labels = r#"grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary""#;
    assert_eq!(
        grew(
            &before,
            &after,
            &format!("grpc_server_handling_seconds_count{{{labels}}}")
        ),
        1.0
    );
    let bounds = [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
    ];
    for le in bounds {
        let bucket = format!("grpc_server_handling_seconds_bucket{{{labels},le=\"{le}\"}}");
        assert!(after.samples.contains_key(&bucket), "{bucket}");
    }
    assert_eq!(
        grew(
            &before,
            &after,
            &format!("grpc_server_handling_seconds_bucket{{{labels},le=\"+Inf\"}}")
        ),
        1.0
    );
    // Every method is there from the start, at zero, as go-grpc-prometheus registers them.
    assert_eq!(
        after.value(r#"grpc_server_handling_seconds_count{grpc_method="Defragment",grpc_service="etcdserverpb.Maintenance",grpc_type="unary"}"#),
        0.0
    );
    Ok(())
}

/// A defragmentation is timed, and a client's snapshot holds a read transaction open
/// until the client goes away.
#[tokio::test(flavor = "multi_thread")]
async fn defragmentation_and_open_read_transactions_are_recorded() -> Result<()> {
    let cluster = Cluster::start(1)?;
    cluster.leader().await?;
    let mut client = cluster.member_client(0).await?;
    // Bigger than what the stream buffers, so an unread snapshot keeps the server busy.
    for i in 0..80 {
        client
            .put(format!("big-{i:02}"), vec![b'x'; 100 * 1024], None)
            .await?;
    }
    let before = member_scrape(&cluster, 0)?;
    assert_eq!(before.value("etcd_mvcc_db_open_read_transactions"), 0.0);
    client.defragment().await?;
    let after = member_scrape(&cluster, 0)?;
    assert_eq!(
        grew(
            &before,
            &after,
            "etcd_disk_backend_defrag_duration_seconds_count"
        ),
        1.0
    );
    assert!(after.value("etcd_disk_backend_defrag_duration_seconds_sum") > 0.0);
    assert_eq!(after.value("etcd_disk_defrag_inflight"), 0.0);

    let mut snapshot = client.snapshot().await?;
    let first = snapshot
        .message()
        .await?
        .context("a first snapshot chunk")?;
    assert!(first.remaining_bytes() > 0);
    let open = member_scrape(&cluster, 0)?;
    assert_eq!(open.value("etcd_mvcc_db_open_read_transactions"), 1.0);
    drop(snapshot);
    drop(client);
    wait_scrape(&cluster, 0, "the snapshot's read transaction ending", |s| {
        s.value("etcd_mvcc_db_open_read_transactions") == 0.0
    })
    .await?;
    Ok(())
}

/// A TCP relay between a test's client and a member, so that the test can cut the
/// client's connection at a moment of its choosing (the client library keeps its own
/// connections open as long as it likes).
struct Relay {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Relays one connection to `target`; cut when the relay is dropped.
    async fn to(target: u16) -> Result<Relay> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut member) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut client, &mut member).await;
        });
        Ok(Relay { port, task })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Both sockets close with the task.
        self.task.abort();
    }
}

/// A client that abandons a snapshot stream, whether it cancels the stream (an h2
/// RST_STREAM on a connection that stays open) or its connection goes away, at any
/// point of the stream (before the first chunk is read, or after a few), ends the
/// server's sending and closes the view the snapshot was read from: every time.
#[tokio::test(flavor = "multi_thread")]
async fn abandoned_snapshot_streams_always_release_their_views() -> Result<()> {
    let cluster = Cluster::start(1)?;
    cluster.leader().await?;
    let mut client = cluster.member_client(0).await?;
    // Far more than the stream and the connection buffer, so the server's sender is
    // still at work (and waiting on the client) when the client goes.
    for i in 0..80 {
        client
            .put(format!("big-{i:02}"), vec![b'x'; 100 * 1024], None)
            .await?;
    }
    drop(client);
    let member_port = cluster.members[0].client_port;
    for round in 0..30 {
        let relay = Relay::to(member_port).await?;
        let mut client =
            etcd_client::Client::connect([format!("http://127.0.0.1:{}", relay.port)], None)
                .await?;
        let mut snapshot = client.snapshot().await?;
        let chunks_read = round % 5;
        for _ in 0..chunks_read {
            let chunk = snapshot.message().await?.context("a snapshot chunk")?;
            assert!(chunk.remaining_bytes() > 0);
        }
        let open = member_scrape(&cluster, 0)?;
        assert_eq!(
            open.value("etcd_mvcc_db_open_read_transactions"),
            1.0,
            "round {round}"
        );
        let cut_connection = round % 2 == 1;
        if cut_connection {
            drop(relay);
            drop(snapshot);
        } else {
            // The connection stays open (the relay and the client live on) while the
            // server must notice the cancelled stream.
            drop(snapshot);
        }
        wait_scrape(
            &cluster,
            0,
            &format!(
                "round {round}: the view released ({} after {chunks_read} chunks)",
                if cut_connection {
                    "connection cut"
                } else {
                    "stream cancelled"
                }
            ),
            |s| s.value("etcd_mvcc_db_open_read_transactions") == 0.0,
        )
        .await?;
        drop(client);
    }
    Ok(())
}

/// A new member catches up from a snapshot: the leader counts it sent, the new member
/// counts it received and times its `.snap.db` file's save and fsync, and both time the
/// raft snapshot files they write (the leader's every `--snapshot-count` entries, the
/// new member's on install).
#[tokio::test(flavor = "multi_thread")]
async fn snapshots_sent_to_a_new_member_are_recorded_on_both_sides() -> Result<()> {
    let mut cluster = Cluster::start_with(1, &["--snapshot-count", "10"])?;
    cluster.leader().await?;
    let mut client = cluster.member_client(0).await?;
    for i in 0..40 {
        client
            .put(format!("big-{i:02}"), vec![b'x'; 10 * 1024], None)
            .await?;
    }
    let leader_id = format!("{:x}", cluster.member_id(0).await?);
    let leader_before = member_scrape(&cluster, 0)?;
    assert!(leader_before.value("etcd_snap_fsync_duration_seconds_count") >= 1.0);
    let (i, id) = cluster.add_member(false).await?;
    let new_id = format!("{id:x}");
    let sent = format!("etcd_network_snapshot_send_success{{To=\"{new_id}\"}}");
    let leader_after = wait_scrape(&cluster, 0, "a snapshot sent", |s| {
        s.samples.get(&sent).is_some_and(|&n| n >= 1.0)
    })
    .await?;
    assert!(
        leader_after.value(&format!(
            "etcd_network_snapshot_send_total_duration_seconds_count{{To=\"{new_id}\"}}"
        )) >= 1.0
    );
    let received = format!("etcd_network_snapshot_receive_success{{From=\"{leader_id}\"}}");
    let member = wait_scrape(&cluster, i, "a snapshot received", |s| {
        s.samples.get(&received).is_some_and(|&n| n >= 1.0)
    })
    .await?;
    assert!(member.value("etcd_snap_db_fsync_duration_seconds_count") >= 1.0);
    assert!(member.value("etcd_snap_db_save_total_duration_seconds_count") >= 1.0);
    assert!(member.value("etcd_snap_fsync_duration_seconds_count") >= 1.0);
    assert_eq!(
        member.value("etcd_server_snapshot_apply_in_progress_total"),
        0.0
    );
    assert!(
        member.value(&format!(
            "etcd_network_snapshot_receive_total_duration_seconds_count{{From=\"{leader_id}\"}}"
        )) >= 1.0
    );
    Ok(())
}

/// Each member counts its peers active while a raft stream to them is up, and counts a
/// disconnection when one goes away (labels `Local` and `Remote`, as etcd's).
#[tokio::test(flavor = "multi_thread")]
async fn peers_are_active_until_they_disconnect() -> Result<()> {
    let mut cluster = Cluster::start(3)?;
    cluster.leader().await?;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(format!("{:x}", cluster.member_id(i).await?));
    }
    let active = |local: usize, remote: usize| {
        format!(
            "etcd_network_active_peers{{Local=\"{}\",Remote=\"{}\"}}",
            ids[local], ids[remote]
        )
    };
    let disconnected = |local: usize, remote: usize| {
        format!(
            "etcd_network_disconnected_peers_total{{Local=\"{}\",Remote=\"{}\"}}",
            ids[local], ids[remote]
        )
    };
    for i in 0..3 {
        let peers: Vec<String> = (0..3).filter(|&j| j != i).map(|j| active(i, j)).collect();
        wait_scrape(&cluster, i, "both peers active", |s| {
            peers.iter().all(|p| s.samples.get(p) == Some(&1.0))
        })
        .await?;
    }
    let before = member_scrape(&cluster, 0)?;
    cluster.kill(2);
    let (gone, dropped) = (active(0, 2), disconnected(0, 2));
    let after = wait_scrape(&cluster, 0, "member 2 disconnected", |s| {
        s.samples.get(&gone) == Some(&0.0)
    })
    .await?;
    assert!(grew(&before, &after, &dropped) >= 1.0, "{dropped}");
    assert_eq!(after.value(&active(0, 1)), 1.0);
    Ok(())
}
