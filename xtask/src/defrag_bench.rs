//! `cargo xtask bench --defrag`: what a defragment costs the writes that run meanwhile,
//! Concord and etcd side by side (issue 18).
//!
//! For each server, one fresh member is filled with `--keys` keys (`--val-size`
//! incompressible bytes each, written in txns of [`FILL_TXN_PUTS`] puts), every key is
//! then overwritten `--overwrites` times, and the history is compacted at the newest
//! revision: most of the store is garbage. Then one client puts one key at a time for
//! `--baseline` (the latency without a defragment), and the same client goes on putting
//! while another connection calls `Defragment`. Reported per server: the defragment's
//! duration, put latency (p50, p99, max) without it and while it runs (every put that
//! overlapped it), and `Status`'s db size and in-use size before and after.
//!
//! Both servers run on this machine at once with nothing else of ours: on a shared
//! machine other processes' load shows in every figure.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use concord_proto::etcdserverpb::{PutRequest, RequestOp, TxnRequest, request_op};

use crate::bench::mebibytes;
use crate::cluster::{self, Flavor, LocalCluster};
use crate::etcd::{Client, Options};
use crate::stats::{LatencySummary, SplitMix64, millis};

/// Puts per fill txn (etcd's default --max-txn-ops is 128).
const FILL_TXN_PUTS: u64 = 100;
/// How many of the slowest puts during a defragment are listed with their times.
const SLOWEST_SHOWN: usize = 5;
/// Fill txns in flight.
const FILL_WRITERS: usize = 4;

/// One run's settings.
#[derive(Clone, Debug)]
pub struct DefragBenchConfig {
    pub concord: PathBuf,
    pub etcd: PathBuf,
    /// Wiped at the start; holds both members' data dirs and logs.
    pub root: PathBuf,
    pub keys: u64,
    pub val_size: usize,
    pub overwrites: u64,
    pub baseline: Duration,
}

/// One server's figures.
struct Outcome {
    flavor: Flavor,
    fill: Duration,
    before: (i64, i64),
    after: (i64, i64),
    defrag: Duration,
    baseline: Option<LatencySummary>,
    during: Option<LatencySummary>,
    /// The slowest puts that overlapped the defragment, slowest first: when each was
    /// sent, from the defragment's start (negative: before it), and how long it took.
    slowest_during: Vec<(f64, Duration)>,
}

pub async fn run(config: &DefragBenchConfig) -> Result<()> {
    if config.root.exists() {
        std::fs::remove_dir_all(&config.root)
            .with_context(|| format!("remove {}", config.root.display()))?;
    }
    let mut outcomes = Vec::new();
    for (flavor, binary) in [
        (Flavor::Concord, &config.concord),
        (Flavor::Etcd, &config.etcd),
    ] {
        let outcome = run_one(flavor, binary, config).await?;
        print_outcome(&outcome, config);
        outcomes.push(outcome);
    }
    println!();
    println!(
        "| server | defrag | db size before -> after | in use before -> after | puts without defrag p50 / p99 / max | puts during defrag (n) p50 / p99 / max |"
    );
    println!("|---|---|---|---|---|---|");
    for o in &outcomes {
        let latency = |s: &Option<LatencySummary>| {
            s.map_or("-".to_string(), |s| {
                format!("{} / {} / {}", millis(s.p50), millis(s.p99), millis(s.max))
            })
        };
        println!(
            "| {} | {} | {} -> {} MiB | {} -> {} MiB | {} | ({}) {} |",
            o.flavor.name(),
            millis(o.defrag),
            mebibytes(o.before.0 as u64),
            mebibytes(o.after.0 as u64),
            mebibytes(o.before.1 as u64),
            mebibytes(o.after.1 as u64),
            latency(&o.baseline),
            o.during.map_or(0, |s| s.count),
            latency(&o.during),
        );
    }
    Ok(())
}

fn print_outcome(o: &Outcome, config: &DefragBenchConfig) {
    println!(
        "{}: filled {} keys x {} writes of {} B in {:.1}s; defragment took {}",
        o.flavor.name(),
        config.keys,
        config.overwrites + 1,
        config.val_size,
        o.fill.as_secs_f64(),
        millis(o.defrag)
    );
    if !o.slowest_during.is_empty() {
        let shown: Vec<String> = o
            .slowest_during
            .iter()
            .map(|(offset, took)| format!("{} at {:+.0}ms", millis(*took), offset * 1000.0))
            .collect();
        println!(
            "{}: slowest puts during it (when sent, from its start): {}",
            o.flavor.name(),
            shown.join(", ")
        );
    }
}

async fn run_one(flavor: Flavor, binary: &Path, config: &DefragBenchConfig) -> Result<Outcome> {
    let root = config.root.join(flavor.name());
    let layout = cluster::ephemeral_layout(1, &root)?;
    let extra: Vec<String> = ["--quota-backend-bytes", "8589934592"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let endpoint = layout[0].client_url();
    let mut cluster = LocalCluster::start_with(flavor, binary, layout, &extra)?;
    crate::bench::wait_serving(std::slice::from_ref(&endpoint), Duration::from_secs(60)).await?;
    let outcome = measure(flavor, &endpoint, config).await;
    cluster.stop();
    outcome
}

async fn measure(flavor: Flavor, endpoint: &str, config: &DefragBenchConfig) -> Result<Outcome> {
    let options = Options::requests(Duration::from_secs(120));
    let mut admin = Client::connect(endpoint, &options)?;
    let filling = Instant::now();
    fill(endpoint, config).await?;
    let fill = filling.elapsed();
    let revision = admin.status().await?.header.map_or(0, |h| h.revision);
    admin.compact(revision, true).await?;
    let status = admin.status().await?;
    let before = (status.db_size, status.db_size_in_use);

    let mut writer = Client::connect(endpoint, &options)?;
    let mut baseline = Vec::new();
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < config.baseline {
        let sent = Instant::now();
        writer
            .put(format!("defrag-bench/live/{}", n % 1000), vec![b'v'; 256])
            .await?;
        baseline.push(sent.elapsed().as_micros() as u64);
        n += 1;
    }

    // The writer runs until the defragment is answered; every put that overlapped it
    // (sent before its end, answered after its start) counts.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut samples: Vec<(Instant, Instant)> = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                writer
                    .put(format!("defrag-bench/live/{}", n % 1000), vec![b'v'; 256])
                    .await?;
                samples.push((sent, Instant::now()));
                n += 1;
            }
            Ok::<_, anyhow::Error>(samples)
        })
    };
    // Let the writer get going before the defragment starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let defrag_started = Instant::now();
    admin.defragment().await?;
    let defrag_ended = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let samples = writes.await.context("the writer panicked")??;
    let overlapping: Vec<&(Instant, Instant)> = samples
        .iter()
        .filter(|(sent, answered)| *sent < defrag_ended && *answered > defrag_started)
        .collect();
    let mut slowest_during: Vec<(f64, Duration)> = overlapping
        .iter()
        .map(|(sent, answered)| {
            let offset = if *sent >= defrag_started {
                sent.duration_since(defrag_started).as_secs_f64()
            } else {
                -defrag_started.duration_since(*sent).as_secs_f64()
            };
            (offset, answered.duration_since(*sent))
        })
        .collect();
    slowest_during.sort_by_key(|(_, took)| std::cmp::Reverse(*took));
    slowest_during.truncate(SLOWEST_SHOWN);
    let mut during: Vec<u64> = overlapping
        .iter()
        .map(|(sent, answered)| answered.duration_since(*sent).as_micros() as u64)
        .collect();
    let status = admin.status().await?;
    Ok(Outcome {
        flavor,
        fill,
        before,
        after: (status.db_size, status.db_size_in_use),
        defrag: defrag_ended.duration_since(defrag_started),
        baseline: LatencySummary::from_micros(&mut baseline),
        during: LatencySummary::from_micros(&mut during),
        slowest_during,
    })
}

/// Writes every key `overwrites + 1` times, in txns of puts.
async fn fill(endpoint: &str, config: &DefragBenchConfig) -> Result<()> {
    let total = config.keys * (config.overwrites + 1);
    let next = Arc::new(AtomicU64::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..FILL_WRITERS {
        let mut client = Client::connect(endpoint, &Options::requests(Duration::from_secs(60)))?;
        let next = next.clone();
        let (keys, val_size) = (config.keys, config.val_size);
        writers.spawn(async move {
            let mut rng = SplitMix64::new(writer as u64 + 1);
            loop {
                let first = next.fetch_add(FILL_TXN_PUTS, Ordering::Relaxed);
                if first >= total {
                    return Ok::<(), anyhow::Error>(());
                }
                let success = (first..(first + FILL_TXN_PUTS).min(total))
                    .map(|n| {
                        let mut value = vec![0u8; val_size];
                        for word in value.chunks_mut(8) {
                            let random = rng.next_u64().to_le_bytes();
                            word.copy_from_slice(&random[..word.len()]);
                        }
                        RequestOp {
                            request: Some(request_op::Request::RequestPut(PutRequest {
                                key: format!("defrag-bench/{:010}", n % keys).into_bytes(),
                                value,
                                ..Default::default()
                            })),
                        }
                    })
                    .collect();
                client
                    .txn(TxnRequest {
                        success,
                        ..Default::default()
                    })
                    .await?;
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.context("a writer panicked")??;
    }
    Ok(())
}
