//! `cargo xtask bench --snapshot`: the cost of catching a new member up from a raft snapshot.
//!
//! One member is filled with `--size-mib` of values (incompressible, `--val-size` bytes each),
//! with a small `--snapshot-count` so its log is compacted and a new member can only catch up
//! from a snapshot. Then a second member is added (`member add`, started with
//! `--initial-cluster-state existing` and an empty data dir) and the run waits until it has
//! applied everything the first one had. Meanwhile both processes' RSS is sampled from /proc
//! every [`SAMPLE_EVERY`]; the report gives the transfer's time, each side's RSS before it
//! (idle) and its peak, and the receiver's peak while receiving and while installing (split at
//! its "received a snapshot" log line).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench::mebibytes;
use crate::cluster::{self, Flavor, LocalCluster};
use crate::etcd::{Client, Options};
use crate::procfs;
use crate::stats::SplitMix64;

/// How often RSS is read.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// Puts in flight while filling the store.
const FILL_WRITERS: usize = 8;
/// How long the new member may take to catch up.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(1800);

/// One run's settings.
#[derive(Clone, Debug)]
pub struct SnapshotBenchConfig {
    pub binary: std::path::PathBuf,
    /// Wiped at the start; holds both members' data dirs and logs.
    pub root: std::path::PathBuf,
    pub size_bytes: u64,
    pub val_size: usize,
}

/// Peak RSS of the processes being watched, and of the receiver per phase.
#[derive(Default)]
struct Peaks {
    sender: AtomicU64,
    receiver: AtomicU64,
    /// The receiver's peak until its log says the snapshot was received.
    receiving: AtomicU64,
    /// The receiver's peak after that (verifying and installing the file, then serving).
    installing: AtomicU64,
    received: AtomicBool,
}

fn raise(peak: &AtomicU64, value: u64) {
    peak.fetch_max(value, Ordering::Relaxed);
}

pub async fn run(config: &SnapshotBenchConfig) -> Result<()> {
    if config.root.exists() {
        std::fs::remove_dir_all(&config.root)
            .with_context(|| format!("remove {}", config.root.display()))?;
    }
    let layout = cluster::ephemeral_layout(2, &config.root)?;
    let extra: Vec<String> = [
        "--snapshot-count",
        "100",
        "--quota-backend-bytes",
        "17179869184",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let sender_layout = layout[0].clone();
    let receiver_layout = layout[1].clone();
    let mut cluster = LocalCluster::start_with(
        Flavor::Concord,
        &config.binary,
        vec![sender_layout.clone()],
        &extra,
    )?;
    let sender_endpoint = sender_layout.client_url();
    crate::bench::wait_serving(
        std::slice::from_ref(&sender_endpoint),
        Duration::from_secs(60),
    )
    .await?;
    let sender_pid = cluster.pid(0).context("the first member is not running")?;

    let filling = Instant::now();
    let puts = fill(&sender_endpoint, config).await?;
    println!(
        "filled {} MiB in {puts} puts of {} B in {:.1}s",
        mebibytes(puts * config.val_size as u64),
        config.val_size,
        filling.elapsed().as_secs_f64()
    );
    // Let the flushes and the last snapshot settle before the idle figure is taken.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sender_idle = procfs::rss_bytes(sender_pid)?;

    let mut admin = Client::connect(
        &sender_endpoint,
        &Options::requests(Duration::from_secs(10)),
    )?;
    let added = admin
        .member_add(vec![receiver_layout.advertised_peer_url()], false)
        .await?;
    let target = admin.status().await?.raft_index;
    let new_id = added.member.as_ref().map_or(0, |m| m.id);
    let initial_cluster = added
        .members
        .iter()
        .flat_map(|m| {
            let name = if m.id == new_id {
                receiver_layout.name.clone()
            } else {
                m.name.clone()
            };
            m.peer_ur_ls
                .iter()
                .map(move |url| format!("{name}={url}"))
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join(",");
    let mut args = cluster::member_args(Flavor::Concord, &receiver_layout, &[]);
    cluster::set_flag(&mut args, "--initial-cluster", &initial_cluster);
    cluster::set_flag(&mut args, "--initial-cluster-state", "existing");
    args.extend(extra.iter().cloned());

    let peaks = Arc::new(Peaks::default());
    raise(&peaks.sender, sender_idle);
    let started = Instant::now();
    let receiver = cluster.spawn_member(receiver_layout.clone(), &config.binary, args)?;
    let receiver_pid = cluster
        .pid(receiver)
        .context("the new member is not running")?;
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let peaks = peaks.clone();
        let sampling = sampling.clone();
        let log = receiver_layout.log_path.clone();
        std::thread::spawn(move || sample(sender_pid, receiver_pid, &log, &peaks, &sampling))
    };
    // The receiver's RSS once it serves, before the snapshot (sent after its first contact).
    let receiver_idle = loop {
        if std::net::TcpStream::connect(("127.0.0.1", receiver_layout.client_port)).is_ok() {
            break procfs::rss_bytes(receiver_pid)?;
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the new member did not accept clients within 30s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut receiver_client = Client::connect(
        &receiver_layout.client_url(),
        &Options::requests(Duration::from_secs(5)),
    )?;
    loop {
        if let Ok(status) = receiver_client.status().await
            && status.raft_applied_index >= target
        {
            break;
        }
        if started.elapsed() > CATCH_UP_LIMIT {
            bail!(
                "the new member did not catch up within {CATCH_UP_LIMIT:?}; see {}",
                receiver_layout.log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the RSS sampler panicked"))?;
    let sent = std::fs::read_to_string(&sender_layout.log_path)
        .unwrap_or_default()
        .lines()
        .rev()
        .find(|l| l.contains("sent a snapshot"))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("bytes=").and_then(|b| b.parse::<u64>().ok()))
        });
    let receiver_after = procfs::rss_bytes(receiver_pid).unwrap_or(0);
    cluster.stop();

    let peak = |p: &AtomicU64| p.load(Ordering::Relaxed);
    println!(
        "snapshot to a new member: {} MiB sent, caught up in {:.1}s",
        sent.map_or("? (no 'sent a snapshot' line)".to_string(), mebibytes),
        elapsed.as_secs_f64()
    );
    println!(
        "sender   RSS (MiB) idle {:>7}  peak {:>7}  (+{})",
        mebibytes(sender_idle),
        mebibytes(peak(&peaks.sender)),
        mebibytes(peak(&peaks.sender).saturating_sub(sender_idle))
    );
    println!(
        "receiver RSS (MiB) idle {:>7}  peak {:>7}  (+{}; receiving {}, installing {}; after {})",
        mebibytes(receiver_idle),
        mebibytes(peak(&peaks.receiver)),
        mebibytes(peak(&peaks.receiver).saturating_sub(receiver_idle)),
        mebibytes(peak(&peaks.receiving)),
        mebibytes(peak(&peaks.installing)),
        mebibytes(receiver_after),
    );
    Ok(())
}

/// Puts values until `size_bytes` are stored; returns how many.
async fn fill(endpoint: &str, config: &SnapshotBenchConfig) -> Result<u64> {
    let total = config.size_bytes.div_ceil(config.val_size as u64);
    let next = Arc::new(AtomicU64::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..FILL_WRITERS {
        let mut client = Client::connect(endpoint, &Options::requests(Duration::from_secs(30)))?;
        let next = next.clone();
        let val_size = config.val_size;
        writers.spawn(async move {
            let mut rng = SplitMix64::new(writer as u64 + 1);
            let mut value = vec![0u8; val_size];
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return Ok::<(), anyhow::Error>(());
                }
                for word in value.chunks_mut(8) {
                    let random = rng.next_u64().to_le_bytes();
                    word.copy_from_slice(&random[..word.len()]);
                }
                client
                    .put(format!("snapshot-bench/{n:010}"), value.clone())
                    .await?;
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.context("a writer panicked")??;
    }
    Ok(total)
}

fn sample(sender: u32, receiver: u32, log: &Path, peaks: &Peaks, sampling: &AtomicBool) {
    let mut last_log_check = Instant::now();
    while sampling.load(Ordering::Relaxed) {
        if let Ok(rss) = procfs::rss_bytes(sender) {
            raise(&peaks.sender, rss);
        }
        if !peaks.received.load(Ordering::Relaxed)
            && last_log_check.elapsed() > Duration::from_millis(100)
        {
            last_log_check = Instant::now();
            if std::fs::read_to_string(log).is_ok_and(|l| l.contains("received a snapshot")) {
                peaks.received.store(true, Ordering::Relaxed);
            }
        }
        if let Ok(rss) = procfs::rss_bytes(receiver) {
            raise(&peaks.receiver, rss);
            if peaks.received.load(Ordering::Relaxed) {
                raise(&peaks.installing, rss);
            } else {
                raise(&peaks.receiving, rss);
            }
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
}
