//! The load generator: closed-loop clients over the etcd v3 API, sharing a fixed number of
//! HTTP/2 connections (requests through [`unary_client`], watch streams through
//! [`watch_client`]; the status and readiness checks and the watch workload's writers through
//! [`etcd`]), plus the server-side figures (RSS, CPU) read from /proc.
//!
//! Every client task takes the next operation number from a shared counter until `total` is
//! reached, so `total` operations are spread over `clients` concurrent requesters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use concord_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use concord_proto::etcdserverpb::{
    Compare, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest, request_op,
};
use http::Uri;
use prost::Message;

use crate::etcd::{self, Client, Options};
use crate::procfs;
use crate::stats::{LatencySummary, SplitMix64, millis};
use crate::unary_client::{self, CallError, UnaryConn, frame};
use crate::watch_client::WatchStream;

/// A run stops early after this many failed operations (a missing service fails every call).
const MAX_ERRORS: u64 = 100;
/// Range workloads first write at most this many keys of the key space.
const RANGE_PRELOAD_MAX: u64 = 10_000;
/// How long watchers may lag behind the writer's last put before missing events are reported.
const WATCH_DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// What the clients do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Put a random key of the key space.
    Put,
    /// Range (get) one random key of a preloaded key space.
    Range { serializable: bool },
    /// Compare-and-put: `if mod_revision(k) < MAX then put(k) else get(k)`.
    Txn,
    /// LeaseGrant followed by LeaseRevoke: one operation is the pair.
    LeaseChurn,
    /// `clients` watchers on one prefix, 100 to a gRPC stream as etcd's `benchmark watch`
    /// lays them out, one writer putting `total` keys under it; events delivered per second
    /// and put-to-event latency.
    WatchFanOut,
}

impl Workload {
    /// Parses a workload name; `consistency` (`l` or `s`) applies to `range`.
    pub fn parse(name: &str, consistency: Option<&str>) -> Result<Workload> {
        let serializable = match consistency {
            None | Some("l") | Some("linearizable") => false,
            Some("s") | Some("serializable") => true,
            Some(other) => bail!("--consistency must be l or s, not {other:?}"),
        };
        Ok(match name {
            "put" => Workload::Put,
            "range" => Workload::Range { serializable },
            "range-l" => Workload::Range {
                serializable: false,
            },
            "range-s" => Workload::Range { serializable: true },
            "txn" | "txn-put" => Workload::Txn,
            "lease" | "lease-churn" => Workload::LeaseChurn,
            "watch" | "watch-fanout" => Workload::WatchFanOut,
            other => bail!(
                "unknown workload {other:?} (put, range, range-l, range-s, txn, lease, watch)"
            ),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Range {
                serializable: false,
            } => "range-l",
            Workload::Range { serializable: true } => "range-s",
            Workload::Txn => "txn",
            Workload::LeaseChurn => "lease",
            Workload::WatchFanOut => "watch",
        }
    }
}

/// One benchmark run's settings.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub endpoints: Vec<String>,
    pub workload: Workload,
    /// Concurrent requesters (watchers, for the watch workload).
    pub clients: usize,
    /// gRPC connections shared by the clients; connection `i` goes to endpoint `i % endpoints`.
    pub conns: usize,
    /// Operations in all (puts by the writer, for the watch workload).
    pub total: u64,
    pub key_size: usize,
    pub val_size: usize,
    pub key_space: u64,
    /// Watchers sharing one gRPC watch stream (watch workload): etcd's `benchmark watch
    /// --watch-per-stream`, whose default 100 lays 1,000 watchers out as 10 streams; 1 is
    /// how most real clients watch (each process, each `watch()` call, its own stream).
    pub watchers_per_stream: usize,
    /// Which client drives the load.
    pub client: ClientKind,
}

/// etcd's `benchmark watch` default: 100 watchers to a stream.
pub const DEFAULT_WATCHERS_PER_STREAM: usize = 100;

/// The load generator's client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// xtask's own: requests framed once and sent as bytes, watch responses scanned in
    /// place ([`unary_client`], [`watch_client`]): the client costs little of the cores it
    /// shares with the servers.
    Lean,
    /// The standard `etcd-client` crate, as users' programs run it (every message encoded
    /// and decoded, one stream per `watch()` call): `tests/examples/etcd_client_load.rs`,
    /// driven by [`crate::standard_client`].
    EtcdClient,
}

impl ClientKind {
    pub fn parse(name: &str) -> Result<ClientKind> {
        match name {
            "lean" => Ok(ClientKind::Lean),
            "etcd-client" => Ok(ClientKind::EtcdClient),
            other => bail!("--client must be lean or etcd-client, not {other:?}"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ClientKind::Lean => "lean",
            ClientKind::EtcdClient => "etcd-client",
        }
    }
}

impl BenchConfig {
    pub fn validate(&self) -> Result<()> {
        if self.endpoints.is_empty() {
            bail!("no endpoints");
        }
        if self.clients == 0
            || self.conns == 0
            || self.total == 0
            || self.key_space == 0
            || self.watchers_per_stream == 0
        {
            bail!(
                "--clients, --conns, --total, --key-space and --watch-per-stream must be positive"
            );
        }
        if self.key_size < 20 && self.key_space > 10u64.pow(self.key_size as u32) {
            bail!(
                "--key-space {} does not fit in --key-size {} decimal digits",
                self.key_space,
                self.key_size
            );
        }
        Ok(())
    }
}

/// The key for number `n`: decimal, zero-padded to `key_size` bytes.
pub fn key_for(n: u64, key_size: usize) -> Vec<u8> {
    format!("{n:0key_size$}").into_bytes()
}

/// Figures of one server process over a run.
#[derive(Clone, Debug)]
pub struct ServerFigures {
    pub pid: u32,
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

/// Watch fan-out specifics.
#[derive(Clone, Debug)]
pub struct WatchFigures {
    pub expected_events: u64,
    pub delivered_events: u64,
    pub events_per_second: f64,
    /// Put sent → event received.
    pub event_latency: Option<LatencySummary>,
    /// CPU seconds the load generator itself used over the measured phase (readers and
    /// writer), when it ran in this process: on a shared machine it bounds what the servers
    /// can be given.
    pub client_cpu_seconds: Option<f64>,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub workload: Workload,
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latency: Option<LatencySummary>,
    pub watch: Option<WatchFigures>,
    pub servers: Vec<ServerFigures>,
}

impl Outcome {
    pub fn ops_per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The figure compared across servers: events/s for watch fan-out, ops/s otherwise.
    pub fn throughput(&self) -> f64 {
        self.watch
            .as_ref()
            .map_or_else(|| self.ops_per_second(), |w| w.events_per_second)
    }

    /// p50 of the figure that matters: put-to-event for watch fan-out, request latency otherwise.
    pub fn p50(&self) -> Option<Duration> {
        match &self.watch {
            Some(w) => w.event_latency.map(|l| l.p50),
            None => self.latency.map(|l| l.p50),
        }
    }

    pub fn total_rss_bytes(&self) -> u64 {
        self.servers.iter().map(|s| s.rss_bytes).sum()
    }

    /// What CPU time is divided by: events delivered for watch fan-out (the server's work is
    /// the fan-out, not the handful of puts), successful operations otherwise.
    pub fn work_units(&self) -> (u64, &'static str) {
        match &self.watch {
            Some(w) => (w.delivered_events, "events"),
            None => (self.ops, "ops"),
        }
    }

    /// Server CPU seconds (all members) per 1000 work units.
    pub fn cpu_seconds_per_thousand_ops(&self) -> Option<f64> {
        let (units, _) = self.work_units();
        (units > 0 && !self.servers.is_empty()).then(|| {
            self.servers.iter().map(|s| s.cpu_seconds).sum::<f64>() * 1000.0 / units as f64
        })
    }

    /// Whether the run produced figures worth comparing.
    pub fn failed(&self) -> bool {
        self.ops == 0 || self.errors >= MAX_ERRORS
    }

    pub fn print(&self) {
        let name = self.workload.name();
        println!(
            "{name}: {} ops in {:.2}s = {:.1} ops/s, errors {}",
            self.ops,
            self.elapsed.as_secs_f64(),
            self.ops_per_second(),
            self.errors
        );
        if let Some(error) = &self.first_error {
            println!("  first error: {error}");
        }
        if let Some(latency) = self.latency {
            println!("  latency {latency}");
        }
        if let Some(watch) = &self.watch {
            println!(
                "  events delivered {}/{} = {:.1} events/s",
                watch.delivered_events, watch.expected_events, watch.events_per_second
            );
            if let Some(latency) = watch.event_latency {
                println!("  put-to-event latency {latency}");
            }
            if let Some(cpu) = watch.client_cpu_seconds {
                let per_thousand = cpu * 1000.0 / watch.delivered_events.max(1) as f64;
                println!("  load generator cpu {cpu:.3}s ({per_thousand:.4} s per 1000 events)");
            }
        }
        let (units, unit_name) = self.work_units();
        for server in &self.servers {
            let per_thousand = server.cpu_seconds * 1000.0 / units.max(1) as f64;
            println!(
                "  server pid {}: rss {:.1} MiB, cpu {:.3}s ({per_thousand:.3} s per 1000 {unit_name})",
                server.pid,
                server.rss_bytes as f64 / (1024.0 * 1024.0),
                server.cpu_seconds,
            );
        }
    }
}

/// CPU time of the server processes at the start of a measured phase.
pub(crate) struct ProcessProbe {
    pids: Vec<u32>,
    ticks_per_second: u64,
    cpu_before: Vec<f64>,
}

impl ProcessProbe {
    pub(crate) fn start(pids: &[u32]) -> ProcessProbe {
        let ticks_per_second = procfs::clock_ticks_per_second();
        let cpu_before = pids
            .iter()
            .map(|&pid| procfs::cpu_seconds(pid, ticks_per_second).unwrap_or(0.0))
            .collect();
        ProcessProbe {
            pids: pids.to_vec(),
            ticks_per_second,
            cpu_before,
        }
    }

    pub(crate) fn finish(&self) -> Vec<ServerFigures> {
        self.pids
            .iter()
            .zip(&self.cpu_before)
            .filter_map(|(&pid, before)| {
                let cpu_after = procfs::cpu_seconds(pid, self.ticks_per_second).ok()?;
                let rss_bytes = procfs::rss_bytes(pid).ok()?;
                Some(ServerFigures {
                    pid,
                    rss_bytes,
                    cpu_seconds: cpu_after - before,
                })
            })
            .collect()
    }
}

/// The port of an endpoint such as `http://127.0.0.1:2379` or `localhost:2379`.
pub fn endpoint_port(endpoint: &str) -> Option<u16> {
    let without_scheme = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let authority = without_scheme.split('/').next()?;
    authority.rsplit_once(':')?.1.parse().ok()
}

/// The local processes listening on the endpoints' ports.
pub fn local_server_pids(endpoints: &[String]) -> Vec<u32> {
    let mut pids: Vec<u32> = endpoints
        .iter()
        .filter_map(|e| endpoint_port(e))
        .flat_map(|port| procfs::pids_listening_on(port).unwrap_or_default())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// `conns` connections, round-robin over the endpoints.
async fn connect_pool(
    endpoints: &[String],
    conns: usize,
    request_timeout: Duration,
) -> Result<Vec<UnaryConn>> {
    let mut pool = Vec::with_capacity(conns);
    for i in 0..conns {
        pool.push(UnaryConn::connect(&endpoints[i % endpoints.len()], request_timeout).await?);
    }
    Ok(pool)
}

/// The endpoint of the member every endpoint names as leader (etcd's Status), and the others.
pub async fn split_by_leader(endpoints: &[String]) -> Result<(String, Vec<String>)> {
    let mut leader = None;
    let mut others = Vec::new();
    let mut named = Vec::new();
    let clients = Client::connect_each(endpoints, &Options::requests(Duration::from_secs(5)))?;
    for (mut client, endpoint) in clients.into_iter().zip(endpoints) {
        let status = client.status().await?;
        let own = status.header.map_or(0, |h| h.member_id);
        named.push(status.leader);
        if own != 0 && own == status.leader {
            leader = Some(endpoint.clone());
        } else {
            others.push(endpoint.clone());
        }
    }
    named.dedup();
    match leader {
        Some(leader) if named.len() == 1 => Ok((leader, others)),
        _ => bail!("the members do not agree on a leader: {named:x?}"),
    }
}

/// Waits until the cluster commits a write (a leader exists and a quorum is up).
pub async fn wait_serving(endpoints: &[String], limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut last_error = String::new();
    while Instant::now() < deadline {
        let ready = async {
            let options = Options::requests(Duration::from_secs(5));
            Client::connect(&endpoints[0], &options)?
                .put("xtask/ready", "")
                .await
        };
        match ready.await {
            Ok(_) => return Ok(()),
            Err(e) => last_error = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "the cluster at {} did not commit a write within {limit:?}: {last_error}",
        endpoints.join(",")
    )
}

/// What one client request does, with its fixed inputs.
#[derive(Clone, Copy)]
enum Op {
    PutRandom,
    /// Put key number `seq` (the range preload).
    PutSequential,
    Range {
        serializable: bool,
    },
    Txn,
    LeaseChurn,
}

/// The URIs of every call a client task may make, on its connection.
struct Calls {
    put: Uri,
    range: Uri,
    txn: Uri,
    lease_grant: Uri,
    lease_revoke: Uri,
}

impl Calls {
    fn on(conn: &UnaryConn) -> Result<Calls> {
        Ok(Calls {
            put: conn.uri(unary_client::KV_PUT)?,
            range: conn.uri(unary_client::KV_RANGE)?,
            txn: conn.uri(unary_client::KV_TXN)?,
            lease_grant: conn.uri(unary_client::LEASE_GRANT)?,
            lease_revoke: conn.uri(unary_client::LEASE_REVOKE)?,
        })
    }
}

async fn run_op(
    op: Op,
    conn: &mut UnaryConn,
    calls: &Calls,
    rng: &mut SplitMix64,
    seq: u64,
    cfg: &BenchConfig,
    value: &[u8],
) -> Result<(), CallError> {
    match op {
        Op::PutRandom | Op::PutSequential => {
            let n = match op {
                Op::PutSequential => seq,
                _ => rng.below(cfg.key_space),
            };
            let put = PutRequest {
                key: key_for(n, cfg.key_size),
                value: value.to_vec(),
                ..Default::default()
            };
            conn.call(&calls.put, frame(&put)).await?;
        }
        Op::Range { serializable } => {
            let preloaded = cfg.key_space.min(RANGE_PRELOAD_MAX);
            let range = RangeRequest {
                key: key_for(rng.below(preloaded), cfg.key_size),
                serializable,
                ..Default::default()
            };
            conn.call(&calls.range, frame(&range)).await?;
        }
        Op::Txn => {
            // Compare-and-put: put if the key's mod revision is below i64::MAX (always),
            // else read it.
            let key = key_for(rng.below(cfg.key_space), cfg.key_size);
            let txn = TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Less as i32,
                    target: CompareTarget::Mod as i32,
                    key: key.clone(),
                    target_union: Some(TargetUnion::ModRevision(i64::MAX)),
                    ..Default::default()
                }],
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: key.clone(),
                        value: value.to_vec(),
                        ..Default::default()
                    })),
                }],
                failure: vec![RequestOp {
                    request: Some(request_op::Request::RequestRange(RangeRequest {
                        key,
                        ..Default::default()
                    })),
                }],
            };
            conn.call(&calls.txn, frame(&txn)).await?;
        }
        Op::LeaseChurn => {
            let grant = LeaseGrantRequest { ttl: 60, id: 0 };
            let granted = conn.call(&calls.lease_grant, frame(&grant)).await?;
            let id = LeaseGrantResponse::decode(granted)
                .map_err(|_| CallError::Empty)?
                .id;
            let revoke = LeaseRevokeRequest { id };
            conn.call(&calls.lease_revoke, frame(&revoke)).await?;
        }
    }
    Ok(())
}

struct LoopOutcome {
    ops: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    latencies_micros: Vec<u64>,
}

/// `clients` tasks doing `op` until `total` operations are taken, over the shared `pool`.
async fn closed_loop(
    pool: &[UnaryConn],
    cfg: &BenchConfig,
    op: Op,
    total: u64,
) -> Result<LoopOutcome> {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let cfg = Arc::new(cfg.clone());
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(cfg.clients);
    for i in 0..cfg.clients {
        let mut conn = pool[i % pool.len()].clone();
        let calls = Calls::on(&conn)?;
        let (next, errors, first_error, cfg) = (
            next.clone(),
            errors.clone(),
            first_error.clone(),
            cfg.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = SplitMix64::new(0x5EED_0000 + i as u64);
            let value: Vec<u8> = (0..cfg.val_size)
                .map(|_| b'a' + rng.below(26) as u8)
                .collect();
            let mut latencies = Vec::new();
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= total || errors.load(Ordering::Relaxed) >= MAX_ERRORS {
                    break;
                }
                let sent = Instant::now();
                match run_op(op, &mut conn, &calls, &mut rng, seq, &cfg, &value).await {
                    Ok(()) => latencies.push(sent.elapsed().as_micros() as u64),
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut first) = first_error.lock() {
                            first.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies_micros = Vec::new();
    for task in tasks {
        latencies_micros.extend(task.await.context("client task panicked")?);
    }
    let elapsed = start.elapsed();
    let first_error = first_error.lock().ok().and_then(|mut e| e.take());
    Ok(LoopOutcome {
        ops: latencies_micros.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        first_error,
        elapsed,
        latencies_micros,
    })
}

/// Runs one benchmark; `pids` are the server processes to measure.
pub async fn run(cfg: &BenchConfig, pids: &[u32]) -> Result<Outcome> {
    cfg.validate()?;
    if cfg.client == ClientKind::EtcdClient {
        return crate::standard_client::run(cfg, pids).await;
    }
    let op = match cfg.workload {
        Workload::WatchFanOut => return watch_fan_out(cfg, pids).await,
        Workload::Put => Op::PutRandom,
        Workload::Range { serializable } => Op::Range { serializable },
        Workload::Txn => Op::Txn,
        Workload::LeaseChurn => Op::LeaseChurn,
    };
    let pool = connect_pool(&cfg.endpoints, cfg.conns, Duration::from_secs(30)).await?;
    if let Op::Range { .. } = op {
        // Ranges read keys that exist; the preload is not measured.
        let preload_keys = cfg.key_space.min(RANGE_PRELOAD_MAX);
        let preload = closed_loop(&pool, cfg, Op::PutSequential, preload_keys).await?;
        if preload.errors > 0 {
            bail!(
                "range preload failed: {}",
                preload.first_error.unwrap_or_default()
            );
        }
    }
    let probe = ProcessProbe::start(pids);
    let mut run = closed_loop(&pool, cfg, op, cfg.total).await?;
    Ok(Outcome {
        workload: cfg.workload,
        ops: run.ops,
        errors: run.errors,
        first_error: run.first_error,
        elapsed: run.elapsed,
        latency: LatencySummary::from_micros(&mut run.latencies_micros),
        watch: None,
        servers: probe.finish(),
    })
}

/// What one watch stream's reader has seen, kept apart per stream so readers on different
/// threads never write to the same counters.
#[derive(Default)]
struct StreamTally {
    delivered: AtomicU64,
    /// When its last event arrived, from the run's origin.
    last_event_nanos: AtomicU64,
    /// Put-to-event latency of every event.
    latencies_micros: Mutex<Vec<u64>>,
}

/// Concurrent writers, each a closed loop on its own connection (etcd's `benchmark watch`
/// runs one per `--clients`, default 1). Override with `XTASK_WATCH_WRITERS`.
pub(crate) fn watch_writers() -> usize {
    std::env::var("XTASK_WATCH_WRITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(1)
}

/// `cfg.clients` watchers on one fresh prefix, `cfg.watchers_per_stream` to a gRPC stream, the
/// streams round-robin over `cfg.conns` connections; one writer on its own connection puts
/// `cfg.total` keys under the prefix, one at a time (etcd's `benchmark watch` with its default
/// `--clients 1`). Every event is timed from the moment its put was sent.
async fn watch_fan_out(cfg: &BenchConfig, pids: &[u32]) -> Result<Outcome> {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let prefix = format!("/xtask-watch/{nonce}/");
    // The streams' own lean client (see `watch_client`), with no request timeout: it would
    // cut the long-lived streams.
    let mut pool = Vec::with_capacity(cfg.conns);
    for n in 0..cfg.conns {
        pool.push(etcd::dial(&cfg.endpoints[n % cfg.endpoints.len()], &Options::default()).await?);
    }
    let mut writers = Vec::new();
    for _ in 0..watch_writers() {
        writers.push(Client::connect(
            &cfg.endpoints[0],
            &Options::requests(Duration::from_secs(30)),
        )?);
    }

    let origin = Instant::now();
    let sent_at_nanos: Arc<Vec<AtomicU64>> =
        Arc::new((0..cfg.total).map(|_| AtomicU64::new(0)).collect());
    let per_stream = cfg.watchers_per_stream;
    let mut readers = Vec::new();
    let mut tallies: Vec<Arc<StreamTally>> = Vec::new();
    let mut opened = 0;
    while opened < cfg.clients {
        let watchers = per_stream.min(cfg.clients - opened);
        let n = readers.len();
        let channel = pool[n % pool.len()].clone();
        let mut stream = WatchStream::open(channel, &prefix, watchers)
            .await
            .with_context(|| format!("open watch stream {n} ({opened} watchers so far)"))?;
        opened += watchers;
        let tally = Arc::new(StreamTally::default());
        tallies.push(tally.clone());
        let sent_at_nanos = sent_at_nanos.clone();
        let expected = cfg.total * watchers as u64;
        readers.push(tokio::spawn(async move {
            let mut seen = 0;
            let mut latencies = Vec::new();
            while seen < expected {
                let Ok(Some(response)) = stream.next().await else {
                    break;
                };
                let now = origin.elapsed().as_nanos() as u64;
                latencies.clear();
                for &seq in &response.sequences {
                    let Some(sent) = sent_at_nanos.get(seq) else {
                        continue;
                    };
                    latencies.push(now.saturating_sub(sent.load(Ordering::Acquire)) / 1000);
                }
                if !latencies.is_empty() {
                    seen += latencies.len() as u64;
                    tally.delivered.store(seen, Ordering::Relaxed);
                    tally.last_event_nanos.store(now, Ordering::Relaxed);
                    if let Ok(mut samples) = tally.latencies_micros.lock() {
                        samples.extend_from_slice(&latencies);
                    }
                }
            }
        }));
    }

    let probe = ProcessProbe::start(pids);
    let load_generator = ProcessProbe::start(&[std::process::id()]);
    let first_put_nanos = origin.elapsed().as_nanos() as u64;
    let next_seq = Arc::new(AtomicU64::new(0));
    let mut writer_tasks = Vec::with_capacity(writers.len());
    for mut writer in writers {
        let (next_seq, sent_at_nanos, prefix) =
            (next_seq.clone(), sent_at_nanos.clone(), prefix.clone());
        let value: Vec<u8> = vec![b'w'; cfg.val_size];
        let total = cfg.total;
        writer_tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut errors, mut first_error) = (0u64, None);
            loop {
                let seq = next_seq.fetch_add(1, Ordering::Relaxed);
                if seq >= total || errors >= MAX_ERRORS {
                    break;
                }
                let sent = Instant::now();
                sent_at_nanos[seq as usize]
                    .store(origin.elapsed().as_nanos() as u64, Ordering::Release);
                match writer.put(format!("{prefix}{seq}"), value.clone()).await {
                    Ok(_) => latencies.push(sent.elapsed().as_micros() as u64),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (latencies, errors, first_error)
        }));
    }
    let mut put_latencies = Vec::with_capacity(cfg.total as usize);
    let (mut errors, mut first_error) = (0, None);
    for task in writer_tasks {
        let (latencies, task_errors, task_error) = task.await.context("writer task panicked")?;
        put_latencies.extend(latencies);
        errors += task_errors;
        if first_error.is_none() {
            first_error = task_error;
        }
    }
    let writer_elapsed = Duration::from_nanos(origin.elapsed().as_nanos() as u64 - first_put_nanos);
    let expected_events = put_latencies.len() as u64 * cfg.clients as u64;
    let drain_deadline = Instant::now() + WATCH_DRAIN_LIMIT;
    let delivered = || -> u64 {
        tallies
            .iter()
            .map(|t| t.delivered.load(Ordering::Relaxed))
            .sum()
    };
    while delivered() < expected_events && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let servers = probe.finish();
    let client_cpu_seconds = load_generator.finish().first().map(|own| own.cpu_seconds);
    for reader in &readers {
        reader.abort();
    }
    let delivered_events = delivered();
    let delivery_window = tallies
        .iter()
        .map(|t| t.last_event_nanos.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0)
        .saturating_sub(first_put_nanos);
    let mut event_micros: Vec<u64> = tallies
        .iter()
        .flat_map(|t| {
            t.latencies_micros
                .lock()
                .map(|v| v.clone())
                .unwrap_or_default()
        })
        .collect();
    Ok(Outcome {
        workload: cfg.workload,
        ops: put_latencies.len() as u64,
        errors,
        first_error,
        elapsed: writer_elapsed,
        latency: LatencySummary::from_micros(&mut put_latencies),
        watch: Some(WatchFigures {
            expected_events,
            delivered_events,
            events_per_second: delivered_events as f64 / (delivery_window as f64 / 1e9).max(1e-9),
            event_latency: LatencySummary::from_micros(&mut event_micros),
            client_cpu_seconds,
        }),
        servers,
    })
}

/// Prints a run's settings before it starts.
pub fn describe(cfg: &BenchConfig) -> String {
    let layout = match cfg.workload {
        Workload::WatchFanOut => format!(", watch-per-stream {}", cfg.watchers_per_stream),
        _ => String::new(),
    };
    format!(
        "{} against {}: clients {}, conns {}, total {}, key-size {}, val-size {}, key-space {}{layout}, client {}",
        cfg.workload.name(),
        cfg.endpoints.join(","),
        cfg.clients,
        cfg.conns,
        cfg.total,
        cfg.key_size,
        cfg.val_size,
        cfg.key_space,
        cfg.client.name()
    )
}

/// `12.3 MiB`-style, for tables.
pub fn mebibytes(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

/// For the compare table.
pub fn p50_text(outcome: &Outcome) -> String {
    outcome.p50().map_or_else(|| "-".to_string(), millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_names() {
        assert_eq!(Workload::parse("put", None).unwrap(), Workload::Put);
        assert_eq!(
            Workload::parse("range", None).unwrap(),
            Workload::Range {
                serializable: false
            }
        );
        assert_eq!(
            Workload::parse("range", Some("s")).unwrap(),
            Workload::Range { serializable: true }
        );
        assert_eq!(
            Workload::parse("range-s", None).unwrap(),
            Workload::Range { serializable: true }
        );
        assert_eq!(
            Workload::parse("range-l", None).unwrap(),
            Workload::Range {
                serializable: false
            }
        );
        assert_eq!(
            Workload::parse("lease", None).unwrap(),
            Workload::LeaseChurn
        );
        assert_eq!(
            Workload::parse("watch", None).unwrap(),
            Workload::WatchFanOut
        );
        assert!(Workload::parse("range", Some("x")).is_err());
        assert!(Workload::parse("scan", None).is_err());
        for w in ["put", "range-l", "range-s", "txn", "lease", "watch"] {
            assert_eq!(Workload::parse(w, None).unwrap().name(), w);
        }
    }

    #[test]
    fn keys_are_padded_decimals() {
        assert_eq!(key_for(42, 8), b"00000042");
        assert_eq!(key_for(0, 1), b"0");
    }

    fn config() -> BenchConfig {
        BenchConfig {
            endpoints: vec!["127.0.0.1:2379".into()],
            workload: Workload::Put,
            clients: 1,
            conns: 1,
            total: 1,
            key_size: 8,
            val_size: 8,
            key_space: 1000,
            watchers_per_stream: DEFAULT_WATCHERS_PER_STREAM,
            client: ClientKind::Lean,
        }
    }

    #[test]
    fn validation() {
        config().validate().unwrap();
        assert!(
            BenchConfig {
                key_space: 1_000_000_000,
                ..config()
            }
            .validate()
            .is_err()
        );
        assert!(
            BenchConfig {
                conns: 0,
                ..config()
            }
            .validate()
            .is_err()
        );
        assert!(
            BenchConfig {
                endpoints: vec![],
                ..config()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn endpoint_ports() {
        assert_eq!(endpoint_port("http://127.0.0.1:2379"), Some(2379));
        assert_eq!(endpoint_port("127.0.0.1:12379"), Some(12379));
        assert_eq!(endpoint_port("https://[::1]:2379/"), Some(2379));
        assert_eq!(endpoint_port("localhost"), None);
    }

    #[test]
    fn outcome_figures() {
        let outcome = Outcome {
            workload: Workload::Put,
            ops: 2000,
            errors: 0,
            first_error: None,
            elapsed: Duration::from_secs(2),
            latency: LatencySummary::from_micros(&mut [1000, 2000, 3000]),
            watch: None,
            servers: vec![
                ServerFigures {
                    pid: 1,
                    rss_bytes: 10 << 20,
                    cpu_seconds: 1.0,
                },
                ServerFigures {
                    pid: 2,
                    rss_bytes: 20 << 20,
                    cpu_seconds: 3.0,
                },
            ],
        };
        assert_eq!(outcome.throughput(), 1000.0);
        assert_eq!(outcome.p50(), Some(Duration::from_millis(2)));
        assert_eq!(outcome.total_rss_bytes(), 30 << 20);
        assert_eq!(outcome.cpu_seconds_per_thousand_ops(), Some(2.0));
        assert!(!outcome.failed());
        let watch = Outcome {
            watch: Some(WatchFigures {
                expected_events: 10,
                delivered_events: 10,
                events_per_second: 500.0,
                event_latency: LatencySummary::from_micros(&mut [7000]),
                client_cpu_seconds: None,
            }),
            ..outcome
        };
        assert_eq!(watch.throughput(), 500.0);
        // CPU is per 1000 delivered events for watch fan-out: 4 s over 10 events.
        assert_eq!(watch.cpu_seconds_per_thousand_ops(), Some(400.0));
        assert_eq!(watch.p50(), Some(Duration::from_millis(7)));
    }
}
