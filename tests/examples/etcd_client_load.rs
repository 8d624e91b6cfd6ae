//! Load generator on the standard `etcd-client` crate, for `cargo xtask bench --client
//! etcd-client` (not a test). xtask's own client pre-frames its requests and scans watch
//! responses in place; users' clients decode every message, and open one watch stream per
//! `watch()` call. This runs the same workloads as xtask's lean client with the crate users
//! take, so a ratio measured one way can be checked the other. It lives here, beside the
//! tests that already build `etcd-client` (which wants a `protoc`), so xtask builds without.
//!
//! The run talks to xtask over stdin/stdout, so that the server CPU xtask reads from /proc
//! covers the measured phase only:
//! 1. set up (connect, preload the keys ranges read, open and create the watchers), then
//!    print `ready`;
//! 2. wait for a line on stdin;
//! 3. run, then print `result {json}` (the figures, latencies already summarized).
//!
//! ```text
//! etcd_client_load --endpoints 127.0.0.1:2379 --workload put --clients 200 --conns 20 --total 20000
//! etcd_client_load --endpoints 127.0.0.1:2379 --workload watch --clients 1000 --conns 10 \
//!     --total 1000 --watch-per-stream 1
//! ```
//! Workloads: put, range-l, range-s, txn (compare-and-put), lease (grant + revoke), watch
//! (`--clients` watchers on one prefix, `--watch-per-stream` to a stream, `--watch-writers`
//! writers putting `--total` keys under it).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, WatchOptions};
use serde_json::{Value, json};

/// A run stops early after this many failed operations (as xtask's own client).
const MAX_ERRORS: u64 = 100;
/// Range workloads first write at most this many keys of the key space.
const RANGE_PRELOAD_MAX: u64 = 10_000;
/// How long watchers may lag behind the last put before missing events are reported.
const WATCH_DRAIN_LIMIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    Put,
    Range { serializable: bool },
    Txn,
    Lease,
    Watch,
}

#[derive(Clone, Debug)]
struct Config {
    endpoints: Vec<String>,
    workload: Workload,
    clients: usize,
    conns: usize,
    total: u64,
    key_size: usize,
    val_size: usize,
    key_space: u64,
    watch_per_stream: usize,
    watch_writers: usize,
}

fn parse_args() -> Result<Config> {
    let mut values = BTreeMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(name) = flag.strip_prefix("--") else {
            bail!("unexpected argument {flag:?}");
        };
        let value = args
            .next()
            .with_context(|| format!("--{name} needs a value"))?;
        values.insert(name.to_string(), value);
    }
    fn number<T: std::str::FromStr>(
        values: &BTreeMap<String, String>,
        name: &str,
        default: T,
    ) -> Result<T> {
        match values.get(name) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| anyhow::anyhow!("invalid value {text:?} for --{name}")),
        }
    }
    let workload = match values.get("workload").map(String::as_str) {
        Some("put") => Workload::Put,
        Some("range-l") => Workload::Range {
            serializable: false,
        },
        Some("range-s") => Workload::Range { serializable: true },
        Some("txn") => Workload::Txn,
        Some("lease") => Workload::Lease,
        Some("watch") => Workload::Watch,
        other => bail!("--workload must be put, range-l, range-s, txn, lease or watch: {other:?}"),
    };
    let endpoints: Vec<String> = values
        .get("endpoints")
        .map(|list| {
            list.split(',')
                .filter(|e| !e.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let config = Config {
        endpoints,
        workload,
        clients: number(&values, "clients", 1)?,
        conns: number(&values, "conns", 1)?,
        total: number(&values, "total", 10_000)?,
        key_size: number(&values, "key-size", 8)?,
        val_size: number(&values, "val-size", 256)?,
        key_space: number(&values, "key-space", 100_000)?,
        watch_per_stream: number(&values, "watch-per-stream", 100)?,
        watch_writers: number(&values, "watch-writers", 1)?,
    };
    if config.endpoints.is_empty()
        || config.clients == 0
        || config.conns == 0
        || config.total == 0
        || config.key_space == 0
        || config.watch_per_stream == 0
        || config.watch_writers == 0
    {
        bail!(
            "--endpoints, --clients, --conns, --total, --key-space, --watch-per-stream and --watch-writers must be given and positive"
        );
    }
    Ok(config)
}

fn key_for(n: u64, key_size: usize) -> String {
    format!("{n:0key_size$}")
}

/// SplitMix64, as xtask's client picks keys.
struct SplitMix64(u64);

impl SplitMix64 {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % bound.max(1)
    }
}

/// Nearest-rank p50, p99 and max of latencies in microseconds, as xtask summarizes them.
fn summary(micros: &mut [u64]) -> Value {
    if micros.is_empty() {
        return Value::Null;
    }
    micros.sort_unstable();
    let at = |p: f64| {
        let rank = ((p / 100.0) * micros.len() as f64).ceil() as usize;
        micros[rank.clamp(1, micros.len()) - 1]
    };
    json!({"count": micros.len(), "p50": at(50.0), "p99": at(99.0), "max": at(100.0)})
}

async fn connect_pool(config: &Config) -> Result<Vec<Client>> {
    let mut pool = Vec::with_capacity(config.conns);
    for n in 0..config.conns {
        let endpoint = &config.endpoints[n % config.endpoints.len()];
        pool.push(
            Client::connect([endpoint.as_str()], None)
                .await
                .with_context(|| format!("connect to {endpoint}"))?,
        );
    }
    Ok(pool)
}

/// Waits for xtask's go-ahead after announcing that set-up is done.
fn ready_then_wait() -> Result<()> {
    println!("ready");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(())
}

fn print_result(result: Value) -> Result<()> {
    println!("result {result}");
    std::io::stdout().flush()?;
    Ok(())
}

async fn one_op(
    workload: Workload,
    client: &mut Client,
    rng: &mut SplitMix64,
    seq: Option<u64>,
    config: &Config,
    value: &[u8],
) -> Result<(), etcd_client::Error> {
    match workload {
        Workload::Put => {
            let n = seq.unwrap_or_else(|| rng.below(config.key_space));
            client
                .put(key_for(n, config.key_size), value.to_vec(), None)
                .await?;
        }
        Workload::Range { serializable } => {
            let preloaded = config.key_space.min(RANGE_PRELOAD_MAX);
            let options = serializable.then(|| GetOptions::new().with_serializable());
            client
                .get(key_for(rng.below(preloaded), config.key_size), options)
                .await?;
        }
        Workload::Txn => {
            // Compare-and-put: put if the key's mod revision is below i64::MAX (always),
            // else read it.
            let key = key_for(rng.below(config.key_space), config.key_size);
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Less,
                    i64::MAX,
                )])
                .and_then([TxnOp::put(key.clone(), value.to_vec(), None)])
                .or_else([TxnOp::get(key, None)]);
            client.txn(txn).await?;
        }
        Workload::Lease => {
            let granted = client.lease_grant(60, None).await?;
            client.lease_revoke(granted.id()).await?;
        }
        Workload::Watch => unreachable!("the watch workload has its own loop"),
    }
    Ok(())
}

struct LoopOutcome {
    latencies_micros: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
}

/// `clients` tasks over the pool doing `workload` until `total` operations are taken;
/// `sequential` puts key number `seq` (the range preload) instead of a random one.
async fn closed_loop(
    pool: &[Client],
    config: &Arc<Config>,
    workload: Workload,
    total: u64,
    sequential: bool,
) -> Result<LoopOutcome> {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(config.clients);
    for i in 0..config.clients {
        let mut client = pool[i % pool.len()].clone();
        let (next, errors, config) = (next.clone(), errors.clone(), config.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = SplitMix64(0x5EED_0000 + i as u64);
            let value: Vec<u8> = (0..config.val_size)
                .map(|_| b'a' + rng.below(26) as u8)
                .collect();
            let mut latencies = Vec::new();
            let mut first_error = None;
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= total || errors.load(Ordering::Relaxed) >= MAX_ERRORS {
                    break;
                }
                let sent = Instant::now();
                let chosen = sequential.then_some(seq);
                match one_op(workload, &mut client, &mut rng, chosen, &config, &value).await {
                    Ok(()) => latencies.push(sent.elapsed().as_micros() as u64),
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (latencies, first_error)
        }));
    }
    let mut outcome = LoopOutcome {
        latencies_micros: Vec::new(),
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let (latencies, first_error) = task.await.context("client task panicked")?;
        outcome.latencies_micros.extend(latencies);
        if outcome.first_error.is_none() {
            outcome.first_error = first_error;
        }
    }
    outcome.elapsed = start.elapsed();
    outcome.errors = errors.load(Ordering::Relaxed);
    Ok(outcome)
}

async fn unary(config: Config) -> Result<()> {
    let config = Arc::new(config);
    let pool = connect_pool(&config).await?;
    if let Workload::Range { .. } = config.workload {
        let preload = config.key_space.min(RANGE_PRELOAD_MAX);
        let loaded = closed_loop(&pool, &config, Workload::Put, preload, true).await?;
        if loaded.errors > 0 {
            bail!(
                "range preload failed: {}",
                loaded.first_error.unwrap_or_default()
            );
        }
    }
    ready_then_wait()?;
    let mut run = closed_loop(&pool, &config, config.workload, config.total, false).await?;
    print_result(json!({
        "ops": run.latencies_micros.len(),
        "errors": run.errors,
        "first_error": run.first_error,
        "elapsed_secs": run.elapsed.as_secs_f64(),
        "latency_micros": summary(&mut run.latencies_micros),
        "watch": Value::Null,
    }))
}

/// What one stream's reader saw.
#[derive(Default)]
struct StreamTally {
    delivered: AtomicU64,
    last_event_nanos: AtomicU64,
    latencies_micros: Mutex<Vec<u64>>,
}

async fn watch(config: Config) -> Result<()> {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let prefix = format!("/xtask-watch/{nonce}/");
    let pool = connect_pool(&config).await?;
    let mut writers = Vec::with_capacity(config.watch_writers);
    for _ in 0..config.watch_writers {
        writers.push(Client::connect([config.endpoints[0].as_str()], None).await?);
    }
    let origin = Instant::now();
    let sent_at_nanos: Arc<Vec<AtomicU64>> =
        Arc::new((0..config.total).map(|_| AtomicU64::new(0)).collect());
    let mut tallies: Vec<Arc<StreamTally>> = Vec::new();
    let mut readers = Vec::new();
    let mut opened = 0;
    while opened < config.clients {
        let watchers = config.watch_per_stream.min(config.clients - opened);
        let n = readers.len();
        let mut client = pool[n % pool.len()].clone();
        let options = || Some(WatchOptions::new().with_prefix());
        let mut stream = client
            .watch(prefix.as_str(), options())
            .await
            .with_context(|| format!("open watch stream {n} ({opened} watchers so far)"))?;
        for _ in 1..watchers {
            stream.watch(prefix.as_str(), options()).await?;
        }
        let mut created = 0;
        while created < watchers {
            let response = stream
                .message()
                .await?
                .context("the stream ended before its watchers were created")?;
            if !response.created() || response.canceled() {
                bail!("a response other than `created` on stream {n}");
            }
            created += 1;
        }
        opened += watchers;
        let tally = Arc::new(StreamTally::default());
        tallies.push(tally.clone());
        let (sent_at_nanos, prefix) = (sent_at_nanos.clone(), prefix.clone());
        let expected = config.total * watchers as u64;
        readers.push(tokio::spawn(async move {
            let mut seen = 0;
            let mut latencies = Vec::new();
            while seen < expected {
                let Ok(Some(response)) = stream.message().await else {
                    break;
                };
                let now = origin.elapsed().as_nanos() as u64;
                latencies.clear();
                for event in response.events() {
                    let Some(seq) = event
                        .kv()
                        .and_then(|kv| kv.key().strip_prefix(prefix.as_bytes()))
                        .and_then(|digits| std::str::from_utf8(digits).ok())
                        .and_then(|digits| digits.parse::<usize>().ok())
                    else {
                        continue;
                    };
                    if let Some(sent) = sent_at_nanos.get(seq) {
                        latencies.push(now.saturating_sub(sent.load(Ordering::Acquire)) / 1000);
                    }
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
            // The stream (and its request side) stays open until the run ends.
            stream
        }));
    }
    ready_then_wait()?;

    let first_put_nanos = origin.elapsed().as_nanos() as u64;
    let next_seq = Arc::new(AtomicU64::new(0));
    let mut writer_tasks = Vec::new();
    for mut writer in writers {
        let (next_seq, sent_at_nanos, prefix) =
            (next_seq.clone(), sent_at_nanos.clone(), prefix.clone());
        let value = vec![b'w'; config.val_size];
        let total = config.total;
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
                match writer
                    .put(format!("{prefix}{seq}"), value.clone(), None)
                    .await
                {
                    Ok(_) => latencies.push(sent.elapsed().as_micros() as u64),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (latencies, errors, first_error)
        }));
    }
    let mut put_latencies = Vec::new();
    let (mut errors, mut first_error) = (0u64, None::<String>);
    for task in writer_tasks {
        let (latencies, task_errors, task_error) = task.await.context("writer task panicked")?;
        put_latencies.extend(latencies);
        errors += task_errors;
        if first_error.is_none() {
            first_error = task_error;
        }
    }
    let writer_elapsed = origin.elapsed().as_nanos() as u64 - first_put_nanos;
    let expected = put_latencies.len() as u64 * config.clients as u64;
    let delivered = || -> u64 {
        tallies
            .iter()
            .map(|t| t.delivered.load(Ordering::Relaxed))
            .sum()
    };
    let deadline = Instant::now() + WATCH_DRAIN_LIMIT;
    while delivered() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let delivered_events = delivered();
    let window_nanos = tallies
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
                .map(|mut held| std::mem::take(&mut *held))
                .unwrap_or_default()
        })
        .collect();
    print_result(json!({
        "ops": put_latencies.len(),
        "errors": errors,
        "first_error": first_error,
        "elapsed_secs": writer_elapsed as f64 / 1e9,
        "latency_micros": summary(&mut put_latencies),
        "watch": {
            "expected": expected,
            "delivered": delivered_events,
            "events_per_second": delivered_events as f64 / (window_nanos as f64 / 1e9).max(1e-9),
            "event_latency_micros": summary(&mut event_micros),
        },
    }))?;
    for reader in readers {
        reader.abort();
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let config = parse_args()?;
    match config.workload {
        Workload::Watch => watch(config).await,
        _ => unary(config).await,
    }
}
