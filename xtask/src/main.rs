//! `cargo xtask ...`: local clusters and benchmarks for Concord.
//!
//! ```text
//! cargo xtask test [NEXTEST ARGS]
//! cargo xtask tidy
//! cargo xtask cluster [--members 3] [--base-port 2379] [--data-dir target/xtask-cluster] [--fresh] [--no-build]
//! cargo xtask bench [--endpoints 127.0.0.1:2379,...] WORKLOAD [--clients 1] [--conns 1] [--total 10000]
//!                   [--key-size 8] [--val-size 256] [--key-space 100000] [--consistency l|s] [--pids 1,2]
//!                   [--watch-per-stream 100] [--client lean|etcd-client] [--no-build]
//! cargo xtask bench --compare [--members 3] [--total 20000] [--no-build] [--client lean|etcd-client]
//! cargo xtask bench --watch-memory [--streams 1000,10000] [--puts 1000] [--members 1] [--settle 20s]
//! cargo xtask bench --snapshot [--size-mib 1024] [--val-size 102400] [--no-build] [--binary PATH]
//! cargo xtask chaos [--members 3|5] [--duration 120s] [--seed N] [--target concord|etcd]
//!                   [--clients 8] [--keys 8] [--watchers 3] [--timeout 1s] [--no-build]
//!                   [--snapshot-count 2000] [--binary PATH] [--data-dir DIR] [--serializable-gets]
//!                   [--faults kill,pause,isolate,delay,drop,replace,learner]
//! ```
//!
//! WORKLOAD is `put`, `range` (`--consistency l|s`), `range-l`, `range-s`, `txn` (compare-and-put),
//! `lease` (grant + revoke) or `watch` (`--clients` watchers on one prefix, `--watch-per-stream`
//! to a gRPC stream, one writer putting `--total` keys). `--conns M` gRPC connections are shared
//! by the `--clients N` requesters, connection `i` going to endpoint `i % endpoints`.
//! `--client etcd-client` drives the load with the standard `etcd-client` crate instead of
//! xtask's lean client (see [`standard_client`]). Server RSS and CPU come from /proc for the
//! processes listening on the endpoints' ports (or `--pids`).
//!
//! `chaos` runs a cluster under faults with clients and watchers recording a history, checks it
//! (linearizability, watch completeness) and exits non-zero on any anomaly; see [`chaos`].
//!
//! The load generator lives here (tokio, h2, and tonic through `concord-proto`'s generated
//! clients) rather than in a separate crate: all are already built for the workspace, so xtask
//! still compiles in seconds.

mod args;
mod bench;
mod chaos;
mod cluster;
mod compare;
mod defrag_bench;
mod etcd;
mod procfs;
mod snapshot_bench;
mod standard_client;
mod stats;
mod test;
mod tidy;
mod unary_client;
mod watch_client;
mod watch_memory;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::args::Args;
use crate::bench::{BenchConfig, ClientKind, Workload};
use crate::cluster::{Flavor, LocalCluster};

const USAGE: &str = "usage:
  cargo xtask test [NEXTEST ARGS]   (installs what the suite needs, fmt, clippy, tidy, the whole suite)
  cargo xtask tidy                  (the house rules of DESIGN.md that a machine can check)
  cargo xtask cluster [--members 3] [--base-port 2379] [--data-dir DIR] [--fresh] [--no-build]
  cargo xtask bench [--endpoints A,B] WORKLOAD [--clients N] [--conns M] [--total K]
                    [--key-size 8] [--val-size 256] [--key-space 100000] [--consistency l|s] [--pids P,Q]
                    [--watch-per-stream 100] [--client lean|etcd-client] [--no-build]
  cargo xtask bench --compare [--members 3] [--total 20000] [--no-build] [--etcd /usr/bin/etcd]
                    [--client lean|etcd-client]
  cargo xtask bench --watch-memory [--streams 1000,10000] [--puts 1000] [--members 1] [--settle 20s]
                    [--streams-per-conn 100] [--val-size 256] [--no-build] [--etcd /usr/bin/etcd]
                    (the serving member's RSS with watch streams open and after they close)
  cargo xtask bench --snapshot [--size-mib 1024] [--val-size 102400] [--no-build] [--binary PATH]
                    (a new member caught up from a snapshot: time, sender and receiver RSS)
  cargo xtask bench --defrag [--keys 500000] [--overwrites 1] [--val-size 256] [--baseline-secs 10]
                    [--no-build] [--binary PATH] [--etcd /usr/bin/etcd]
                    (put latency while a defragment runs on a store of much garbage, and etcd's)
  cargo xtask chaos [--members 3|5] [--duration 120s] [--seed N] [--target concord|etcd]
                    [--clients 8] [--keys 8] [--watchers 3] [--timeout 1s] [--no-build]
                    [--snapshot-count 2000] [--binary PATH] [--data-dir DIR] [--serializable-gets]
                    [--faults kill,pause,isolate,delay,drop,replace,learner]
  (--serializable-gets tests the harness itself: gets read local state, the run must fail)
WORKLOAD: put | range | range-l | range-s | txn | lease | watch";

const ETCD_BINARY: &str = "/usr/bin/etcd";

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = dispatch(&raw) {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn dispatch(raw: &[String]) -> Result<()> {
    match raw.first().map(String::as_str) {
        Some("cluster") => cluster_command(&raw[1..]),
        Some("bench") => bench_command(&raw[1..]),
        Some("chaos") => chaos_command(&raw[1..]),
        Some("test") => test::test_command(&workspace_root(), &raw[1..]),
        Some("tidy") => tidy_command(),
        Some("help" | "--help" | "-h") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command {other:?}\n{USAGE}"),
    }
}

fn tidy_command() -> Result<()> {
    let violations = tidy::run(&workspace_root())?;
    for violation in &violations {
        eprintln!("tidy: {violation}");
    }
    if !violations.is_empty() {
        bail!("{} house rule(s) broken", violations.len());
    }
    println!("tidy: every rule holds");
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn concord_binary() -> PathBuf {
    target_dir().join("release").join("concord")
}

fn build_concord() -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    eprintln!("xtask: cargo build --release -p concord-server");
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "concord-server"])
        .current_dir(workspace_root())
        .status()
        .context("run cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p concord-server failed: {status}");
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")
}

/// SIGINT (Ctrl-C) and SIGTERM listeners. Created before any member starts: from then on those
/// signals are queued for xtask instead of killing it and orphaning the members.
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    /// Needs a runtime context (`Runtime::enter`).
    fn install() -> Result<StopSignals> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt()).context("listen for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("listen for SIGTERM")?,
        })
    }

    async fn received(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

fn cluster_command(raw: &[String]) -> Result<()> {
    let args = Args::parse(raw, &["fresh", "no-build"])?;
    args.reject_unknown(&["members", "base-port", "data-dir", "fresh", "no-build"])?;
    if let Some(extra) = args.positionals().first() {
        bail!("unexpected argument {extra:?}\n{USAGE}");
    }
    let members: usize = args.get_or("members", 3)?;
    let base_port: u16 = args.get_or("base-port", 2379)?;
    let data_dir = args.path_or("data-dir", target_dir().join("xtask-cluster"));
    if members == 0 {
        bail!("--members must be at least 1");
    }
    let layout = cluster::procfile_layout(members, base_port, &data_dir)?;
    if !args.switch("no-build") {
        build_concord()?;
    }
    if args.switch("fresh") && data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("remove {}", data_dir.display()))?;
    }
    let runtime = runtime()?;
    let mut stop_signals = {
        let _context = runtime.enter();
        StopSignals::install()?
    };
    let mut cluster = LocalCluster::start(Flavor::Concord, &concord_binary(), layout)?;
    let endpoints: Vec<String> = cluster
        .layout()
        .iter()
        .map(|m| format!("127.0.0.1:{}", m.client_port))
        .collect();
    println!("concord cluster of {members} running (Ctrl-C stops it):");
    for (member, pid) in cluster.layout().iter().zip(cluster.pids()) {
        println!(
            "  {} pid {pid}: client {} peer {} data {} log {}",
            member.name,
            member.client_url(),
            member.advertised_peer_url(),
            member.data_dir.display(),
            member.log_path.display()
        );
    }
    println!(
        "try:\n  etcdctl --endpoints={} put foo bar",
        endpoints.join(",")
    );
    println!(
        "  etcdctl --endpoints={} -w table endpoint status",
        endpoints.join(",")
    );
    println!(
        "  cargo xtask bench --endpoints {} put --clients 50 --conns 5",
        endpoints.join(",")
    );

    runtime.block_on(async {
        loop {
            tokio::select! {
                _ = stop_signals.received() => break,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    for (name, status) in cluster.exited() {
                        println!("member {name} exited: {status}");
                    }
                    if cluster.pids().is_empty() {
                        bail!("every member has exited; see the logs in {}", data_dir.display());
                    }
                }
            }
        }
        anyhow::Ok(())
    })?;
    println!("stopping (SIGTERM to each member) ...");
    for (name, status) in cluster.stop() {
        println!("  {name}: {status}");
    }
    Ok(())
}

fn bench_command(raw: &[String]) -> Result<()> {
    let args = Args::parse(
        raw,
        &["compare", "snapshot", "defrag", "no-build", "watch-memory"],
    )?;
    if args.switch("watch-memory") {
        return watch_memory_command(&args);
    }
    if args.switch("defrag") {
        args.reject_unknown(&[
            "defrag",
            "keys",
            "val-size",
            "overwrites",
            "baseline-secs",
            "no-build",
            "binary",
            "etcd",
        ])?;
        let concord = args.path_or("binary", concord_binary());
        if !args.switch("no-build") && args.string("binary").is_none() {
            build_concord()?;
        }
        let etcd = args.path_or("etcd", PathBuf::from(ETCD_BINARY));
        if !etcd.exists() {
            bail!("{} is missing: apt-get install etcd-server", etcd.display());
        }
        let config = defrag_bench::DefragBenchConfig {
            concord,
            etcd,
            root: target_dir().join("xtask-bench-defrag"),
            keys: args.get_or("keys", 500_000)?,
            val_size: args.get_or("val-size", 256)?,
            overwrites: args.get_or("overwrites", 1)?,
            baseline: Duration::from_secs(args.get_or("baseline-secs", 10)?),
        };
        if config.keys < 100 || config.val_size == 0 {
            bail!("--keys must be at least 100 and --val-size positive");
        }
        let runtime = runtime()?;
        let mut stop_signals = {
            let _context = runtime.enter();
            StopSignals::install()?
        };
        return runtime.block_on(async {
            tokio::select! {
                r = defrag_bench::run(&config) => r,
                _ = stop_signals.received() => bail!("interrupted; members stopped"),
            }
        });
    }
    if args.switch("snapshot") {
        args.reject_unknown(&["snapshot", "size-mib", "val-size", "no-build", "binary"])?;
        let binary = args.path_or("binary", concord_binary());
        if !args.switch("no-build") && args.string("binary").is_none() {
            build_concord()?;
        }
        let size_mib: u64 = args.get_or("size-mib", 1024)?;
        let val_size: usize = args.get_or("val-size", 100 * 1024)?;
        if size_mib == 0 || val_size == 0 || val_size > 1024 * 1024 {
            bail!("--size-mib must be positive and --val-size between 1 and 1048576");
        }
        let config = snapshot_bench::SnapshotBenchConfig {
            binary,
            root: target_dir().join("xtask-bench-snapshot"),
            size_bytes: size_mib * 1024 * 1024,
            val_size,
        };
        let runtime = runtime()?;
        let mut stop_signals = {
            let _context = runtime.enter();
            StopSignals::install()?
        };
        return runtime.block_on(async {
            tokio::select! {
                r = snapshot_bench::run(&config) => r,
                _ = stop_signals.received() => bail!("interrupted; members stopped"),
            }
        });
    }
    if args.switch("compare") {
        args.reject_unknown(&["compare", "members", "total", "no-build", "etcd", "client"])?;
        let members: usize = args.get_or("members", 3)?;
        let total: u64 = args.get_or("total", 20_000)?;
        let client = ClientKind::parse(args.string("client").unwrap_or("lean"))?;
        let etcd = args.path_or("etcd", PathBuf::from(ETCD_BINARY));
        if !etcd.exists() {
            bail!("{} is missing: apt-get install etcd-server", etcd.display());
        }
        if !args.switch("no-build") {
            build_concord()?;
            if client == ClientKind::EtcdClient {
                standard_client::build()?;
            }
        }
        let concord = concord_binary();
        let runtime = runtime()?;
        let mut stop_signals = {
            let _context = runtime.enter();
            StopSignals::install()?
        };
        return runtime.block_on(async {
            tokio::select! {
                r = compare::run(&concord, &etcd, members, total, client) => r,
                _ = stop_signals.received() => bail!("interrupted; clusters stopped"),
            }
        });
    }
    args.reject_unknown(&[
        "endpoints",
        "clients",
        "conns",
        "total",
        "key-size",
        "val-size",
        "key-space",
        "consistency",
        "pids",
        "watch-per-stream",
        "client",
        "no-build",
    ])?;
    let [workload] = args.positionals() else {
        bail!("bench needs exactly one WORKLOAD\n{USAGE}");
    };
    let mut endpoints = args.list("endpoints");
    if endpoints.is_empty() {
        endpoints.push("127.0.0.1:2379".to_string());
    }
    let config = BenchConfig {
        workload: Workload::parse(workload, args.string("consistency"))?,
        endpoints,
        clients: args.get_or("clients", 1)?,
        conns: args.get_or("conns", 1)?,
        total: args.get_or("total", 10_000)?,
        key_size: args.get_or("key-size", 8)?,
        val_size: args.get_or("val-size", 256)?,
        key_space: args.get_or("key-space", 100_000)?,
        watchers_per_stream: args.get_or("watch-per-stream", bench::DEFAULT_WATCHERS_PER_STREAM)?,
        client: ClientKind::parse(args.string("client").unwrap_or("lean"))?,
    };
    config.validate()?;
    if config.client == ClientKind::EtcdClient && !args.switch("no-build") {
        standard_client::build()?;
    }
    let pids: Vec<u32> = match args.list("pids") {
        listed if !listed.is_empty() => listed
            .iter()
            .map(|p| p.parse().with_context(|| format!("invalid pid {p:?}")))
            .collect::<Result<_>>()?,
        _ => bench::local_server_pids(&config.endpoints),
    };
    println!("{}", bench::describe(&config));
    if pids.is_empty() {
        println!("(no local server process found on the endpoints' ports: no RSS/CPU figures)");
    }
    let outcome = runtime()?.block_on(bench::run(&config, &pids))?;
    outcome.print();
    if outcome.failed() {
        bail!("the run failed");
    }
    Ok(())
}

fn watch_memory_command(args: &Args) -> Result<()> {
    args.reject_unknown(&[
        "watch-memory",
        "streams",
        "puts",
        "members",
        "settle",
        "streams-per-conn",
        "val-size",
        "no-build",
        "etcd",
    ])?;
    let etcd = args.path_or("etcd", PathBuf::from(ETCD_BINARY));
    if !etcd.exists() {
        bail!("{} is missing: apt-get install etcd-server", etcd.display());
    }
    let config = watch_memory::MemoryConfig {
        concord: concord_binary(),
        etcd,
        members: args.get_or("members", 1)?,
        streams: watch_memory::parse_streams(&args.list("streams"))?,
        puts: args.get_or("puts", 1000)?,
        val_size: args.get_or("val-size", 256)?,
        streams_per_conn: args.get_or("streams-per-conn", 100)?,
        settle: chaos::parse_duration(args.string("settle").unwrap_or("20s"))?,
    };
    if config.members == 0 || config.puts == 0 || config.streams_per_conn == 0 {
        bail!("--members, --puts and --streams-per-conn must be positive");
    }
    if !args.switch("no-build") {
        build_concord()?;
    }
    let runtime = runtime()?;
    let mut stop_signals = {
        let _context = runtime.enter();
        StopSignals::install()?
    };
    runtime.block_on(async {
        tokio::select! {
            r = watch_memory::run(&config) => r,
            _ = stop_signals.received() => bail!("interrupted; members stopped"),
        }
    })
}

fn chaos_command(raw: &[String]) -> Result<()> {
    let args = Args::parse(raw, &["no-build", "serializable-gets"])?;
    args.reject_unknown(&[
        "members",
        "duration",
        "seed",
        "target",
        "clients",
        "keys",
        "watchers",
        "timeout",
        "no-build",
        "binary",
        "data-dir",
        "serializable-gets",
        "snapshot-count",
        "faults",
    ])?;
    let faults = args.list("faults");
    if let Some(unknown) = faults
        .iter()
        .find(|f| !chaos::nemesis::KINDS.contains(&f.as_str()))
    {
        bail!(
            "unknown fault {unknown:?} in --faults (one of {})",
            chaos::nemesis::KINDS.join(",")
        );
    }
    if let Some(extra) = args.positionals().first() {
        bail!("unexpected argument {extra:?}\n{USAGE}");
    }
    let flavor = match args.string("target").unwrap_or("concord") {
        "concord" => Flavor::Concord,
        "etcd" => Flavor::Etcd,
        other => bail!("--target must be concord or etcd, not {other:?}"),
    };
    let members: usize = args.get_or("members", 3)?;
    if !(3..=7).contains(&members) {
        bail!("--members must be between 3 and 7 (3 or 5 make sense)");
    }
    let duration = chaos::parse_duration(args.string("duration").unwrap_or("120s"))?;
    let request_timeout = chaos::parse_duration(args.string("timeout").unwrap_or("1s"))?;
    let seed: u64 = match args.string("seed") {
        Some(_) => args.get_or("seed", 0)?,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default(),
    };
    let clients: usize = args.get_or("clients", 8)?;
    let keys: usize = args.get_or("keys", 8)?;
    let watchers: usize = args.get_or("watchers", 3)?;
    if clients == 0 || keys == 0 {
        bail!("--clients and --keys must be at least 1");
    }
    let binary = match (args.string("binary"), flavor) {
        (Some(path), _) => PathBuf::from(path),
        (None, Flavor::Concord) => concord_binary(),
        (None, Flavor::Etcd) => PathBuf::from(ETCD_BINARY),
    };
    if flavor == Flavor::Concord && args.string("binary").is_none() && !args.switch("no-build") {
        build_concord()?;
    }
    let data_dir = args.path_or(
        "data-dir",
        target_dir().join("xtask-chaos").join(flavor.name()),
    );
    let config = chaos::ChaosConfig {
        flavor,
        binary,
        members,
        duration,
        seed,
        clients,
        keys,
        watchers,
        request_timeout,
        serializable_gets: args.switch("serializable-gets"),
        snapshot_count: args.get_or("snapshot-count", chaos::SNAPSHOT_COUNT)?,
        data_dir,
        faults,
    };
    let runtime = runtime()?;
    let mut stop_signals = {
        let _context = runtime.enter();
        StopSignals::install()?
    };
    let passed = runtime.block_on(async {
        tokio::select! {
            passed = chaos::run(&config) => passed,
            _ = stop_signals.received() => bail!("interrupted; cluster stopped"),
        }
    })?;
    // Tasks still parked on a stopped cluster (proxies, watchers) must not hold up the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if !passed {
        bail!("the chaos run found problems (see above); repeat it with --seed {seed}");
    }
    Ok(())
}
