//! `cargo xtask bench --watch-memory`: what open watch streams cost the member serving them,
//! Concord against etcd run the same way. For each stream count, on a fresh cluster of each
//! flavor: the serving member's RSS idle, with the single-watcher streams open, after
//! `--puts` puts under the watched prefix (every event delivered to every stream), and
//! `--settle` after the streams closed; its peak (VmHWM), and its CPU time per 1,000 events
//! while the puts fanned out.
//!
//! Memory is not timing: these figures hold on a loaded machine, unlike throughput. The
//! streams come from xtask's lean client (`watch_client`), `--streams-per-conn` to an HTTP/2
//! connection; the client's own memory is not the server's and is not counted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench;
use crate::cluster::{self, Flavor, LocalCluster};
use crate::etcd::{self, Client, Options};
use crate::procfs;
use crate::watch_client::WatchStream;

/// How long every event may take to reach every stream after the last put.
const DELIVERY_LIMIT: Duration = Duration::from_secs(300);
/// Pause before the idle reading, for start-up work (the first snapshot, compaction of the
/// start-up journal) to finish.
const IDLE_SETTLE: Duration = Duration::from_secs(3);

#[derive(Clone, Debug)]
pub struct MemoryConfig {
    pub concord: PathBuf,
    pub etcd: PathBuf,
    pub members: usize,
    pub streams: Vec<usize>,
    pub puts: u64,
    pub val_size: usize,
    pub streams_per_conn: usize,
    pub settle: Duration,
}

/// The serving member's figures over one run.
#[derive(Clone, Debug, Default)]
pub struct MemoryFigures {
    pub idle: u64,
    pub open: u64,
    pub after_puts: u64,
    pub peak: u64,
    pub closed: u64,
    pub cpu_per_thousand_events: f64,
    pub delivered: u64,
    pub expected: u64,
}

pub async fn run(config: &MemoryConfig) -> Result<()> {
    let root = std::env::temp_dir().join(format!("xtask-watch-memory-{}", std::process::id()));
    let mut rows = Vec::new();
    for &streams in &config.streams {
        for flavor in [Flavor::Concord, Flavor::Etcd] {
            let binary = match flavor {
                Flavor::Concord => &config.concord,
                Flavor::Etcd => &config.etcd,
            };
            let dir = root.join(format!("{}-{streams}", flavor.name()));
            let figures = one_run(flavor, binary, &dir, config, streams).await;
            let _ = std::fs::remove_dir_all(&dir);
            let figures = figures.with_context(|| format!("{} with {streams}", flavor.name()))?;
            print_row(streams, flavor, &figures);
            rows.push((streams, flavor, figures));
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    println!("\n{}", table(config, &rows));
    Ok(())
}

fn mib(bytes: u64) -> String {
    bench::mebibytes(bytes)
}

fn print_row(streams: usize, flavor: Flavor, f: &MemoryFigures) {
    println!(
        "  {} {streams} streams: idle {} open {} after puts {} peak {} closed {} MiB; \
         {}/{} events, cpu {:.3} s per 1000 events",
        flavor.name(),
        mib(f.idle),
        mib(f.open),
        mib(f.after_puts),
        mib(f.peak),
        mib(f.closed),
        f.delivered,
        f.expected,
        f.cpu_per_thousand_events
    );
}

/// The comparison table; ratios are Concord / etcd.
pub fn table(config: &MemoryConfig, rows: &[(usize, Flavor, MemoryFigures)]) -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut out = format!(
        "watch stream memory of the serving member ({} member(s) each), single-watcher streams, \
         {} per connection, {} puts of {} B; RSS in MiB; load average {}\n\
         {:<8} {:<8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9} {:>9}\n",
        config.members,
        config.streams_per_conn,
        config.puts,
        config.val_size,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        "streams",
        "server",
        "idle",
        "open",
        "puts",
        "peak",
        "closed",
        "cpu/1k ev",
        "delivered"
    );
    for (streams, flavor, f) in rows {
        out += &format!(
            "{:<8} {:<8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9.3} {:>9}\n",
            streams,
            flavor.name(),
            mib(f.idle),
            mib(f.open),
            mib(f.after_puts),
            mib(f.peak),
            mib(f.closed),
            f.cpu_per_thousand_events,
            if f.delivered == f.expected {
                "all".to_string()
            } else {
                format!("{}/{}", f.delivered, f.expected)
            }
        );
    }
    for pair in rows.chunks(2) {
        if let [(streams, _, c), (_, _, e)] = pair {
            let ratio = |a: u64, b: u64| a as f64 / (b as f64).max(1.0);
            out += &format!(
                "{streams} streams, concord/etcd: open {:.2}, after puts {:.2}, peak {:.2}; \
                 concord closed - idle {:+.1} MiB; cpu per event {:.2}\n",
                ratio(c.open, e.open),
                ratio(c.after_puts, e.after_puts),
                ratio(c.peak, e.peak),
                (c.closed as f64 - c.idle as f64) / (1024.0 * 1024.0),
                c.cpu_per_thousand_events / e.cpu_per_thousand_events.max(1e-9),
            );
        }
    }
    out += &format!(
        "closed: RSS {} s after the last stream closed",
        config.settle.as_secs()
    );
    out
}

async fn one_run(
    flavor: Flavor,
    binary: &Path,
    dir: &Path,
    config: &MemoryConfig,
    streams: usize,
) -> Result<MemoryFigures> {
    let mut cluster = LocalCluster::start(
        flavor,
        binary,
        cluster::ephemeral_layout(config.members, dir)?,
    )?;
    let endpoints = cluster.endpoints();
    let result = measure(&cluster, &endpoints, config, streams).await;
    for (name, status) in cluster.exited() {
        println!(
            "  WARNING: {} member {name} exited: {status}",
            flavor.name()
        );
    }
    cluster.stop();
    result
}

async fn measure(
    cluster: &LocalCluster,
    endpoints: &[String],
    config: &MemoryConfig,
    streams: usize,
) -> Result<MemoryFigures> {
    bench::wait_serving(endpoints, Duration::from_secs(60)).await?;
    // The streams and the writer go to the first member: that one serves them.
    let serving = endpoints[0].clone();
    let pid = cluster
        .pid(0)
        .context("the serving member is not running")?;
    tokio::time::sleep(IDLE_SETTLE).await;
    let mut figures = MemoryFigures {
        idle: procfs::rss_bytes(pid)?,
        ..Default::default()
    };

    let prefix = format!("/xtask-watch-memory/{streams}/");
    let conns = streams.div_ceil(config.streams_per_conn);
    let mut pool = Vec::with_capacity(conns);
    for _ in 0..conns {
        pool.push(etcd::dial(&serving, &Options::default()).await?);
    }
    let delivered = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::with_capacity(streams);
    for n in 0..streams {
        let mut stream = WatchStream::open(pool[n % conns].clone(), &prefix, 1)
            .await
            .with_context(|| format!("open watch stream {n}"))?;
        let delivered = delivered.clone();
        readers.push(tokio::spawn(async move {
            while let Ok(Some(response)) = stream.next().await {
                delivered.fetch_add(response.sequences.len() as u64, Ordering::Relaxed);
            }
        }));
    }
    figures.open = procfs::rss_bytes(pid)?;

    let ticks = procfs::clock_ticks_per_second();
    let cpu_before = procfs::cpu_seconds(pid, ticks)?;
    let mut writer = Client::connect(&serving, &Options::requests(Duration::from_secs(30)))?;
    let value = vec![b'm'; config.val_size];
    for seq in 0..config.puts {
        writer
            .put(format!("{prefix}{seq}"), value.clone())
            .await
            .with_context(|| format!("put {seq}"))?;
    }
    figures.expected = config.puts * streams as u64;
    let deadline = Instant::now() + DELIVERY_LIMIT;
    while delivered.load(Ordering::Relaxed) < figures.expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    figures.delivered = delivered.load(Ordering::Relaxed);
    let cpu = procfs::cpu_seconds(pid, ticks)? - cpu_before;
    figures.cpu_per_thousand_events = cpu * 1000.0 / figures.delivered.max(1) as f64;
    figures.after_puts = procfs::rss_bytes(pid)?;

    for reader in &readers {
        reader.abort();
    }
    for reader in readers {
        let _ = reader.await;
    }
    drop(pool);
    drop(writer);
    tokio::time::sleep(config.settle).await;
    figures.closed = procfs::rss_bytes(pid)?;
    figures.peak = procfs::peak_rss_bytes(pid)?;
    if figures.delivered < figures.expected {
        println!(
            "  WARNING: {} of {} events delivered within {DELIVERY_LIMIT:?}",
            figures.delivered, figures.expected
        );
    }
    Ok(figures)
}

/// Parses `--streams 1000,10000`.
pub fn parse_streams(list: &[String]) -> Result<Vec<usize>> {
    if list.is_empty() {
        return Ok(vec![1000, 10_000]);
    }
    let counts = list
        .iter()
        .map(|s| {
            s.parse()
                .with_context(|| format!("invalid stream count {s:?}"))
        })
        .collect::<Result<Vec<usize>>>()?;
    if counts.contains(&0) {
        bail!("--streams must be positive");
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_counts() {
        assert_eq!(parse_streams(&[]).unwrap(), [1000, 10_000]);
        assert_eq!(parse_streams(&["5".into(), "7".into()]).unwrap(), [5, 7]);
        assert!(parse_streams(&["0".into()]).is_err());
        assert!(parse_streams(&["x".into()]).is_err());
    }

    #[test]
    fn table_pairs_the_flavors() {
        let config = MemoryConfig {
            concord: PathBuf::new(),
            etcd: PathBuf::new(),
            members: 1,
            streams: vec![1000],
            puts: 1000,
            val_size: 256,
            streams_per_conn: 100,
            settle: Duration::from_secs(20),
        };
        let mib = 1024 * 1024;
        let concord = MemoryFigures {
            idle: 10 * mib,
            open: 20 * mib,
            after_puts: 30 * mib,
            peak: 40 * mib,
            closed: 12 * mib,
            cpu_per_thousand_events: 0.01,
            delivered: 1_000_000,
            expected: 1_000_000,
        };
        let etcd = MemoryFigures {
            idle: 20 * mib,
            open: 80 * mib,
            after_puts: 120 * mib,
            peak: 160 * mib,
            closed: 100 * mib,
            cpu_per_thousand_events: 0.02,
            delivered: 999,
            expected: 1_000_000,
        };
        let text = table(
            &config,
            &[(1000, Flavor::Concord, concord), (1000, Flavor::Etcd, etcd)],
        );
        assert!(
            text.contains("open 0.25, after puts 0.25, peak 0.25"),
            "{text}"
        );
        assert!(text.contains("closed - idle +2.0 MiB"), "{text}");
        assert!(text.contains("cpu per event 0.50"), "{text}");
        assert!(text.contains("999/1000000"), "{text}");
    }
}
