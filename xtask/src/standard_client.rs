//! `cargo xtask bench --client etcd-client`: the load comes from the standard `etcd-client`
//! crate, run by the tests crate's example `etcd_client_load` (which `etcd-client`'s build
//! script needs a `protoc` for: the example is built with the vendored one, as `cargo xtask
//! test` builds the tests, so xtask itself still builds without). The example sets up
//! (connections, the range preload, watchers created), says `ready`, waits for a line on its
//! stdin, runs, and prints `result {json}`: the server CPU read from /proc between the two
//! covers the measured phase only, as it does for the lean client.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::bench::{BenchConfig, Outcome, ProcessProbe, WatchFigures, Workload};
use crate::stats::LatencySummary;

const EXAMPLE: &str = "etcd_client_load";

/// The example's binary in the release profile.
pub fn binary() -> PathBuf {
    crate::target_dir()
        .join("release")
        .join("examples")
        .join(EXAMPLE)
}

/// `cargo build --release -p concord-tests --example etcd_client_load`, with the vendored
/// `protoc` first on `PATH` (see `crate::test` for why not `PROTOC`).
pub fn build() -> Result<()> {
    let protoc = protoc_bin_vendored::protoc_bin_path()
        .context("find the protoc shipped by the protoc-bin-vendored crate")?;
    let search_path = crate::test::path_with_first(&protoc)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    eprintln!("xtask: cargo build --release -p concord-tests --example {EXAMPLE}");
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "concord-tests",
            "--example",
            EXAMPLE,
        ])
        .current_dir(crate::workspace_root())
        .env("PATH", search_path)
        .env_remove("PROTOC")
        .status()
        .context("run cargo build")?;
    if !status.success() {
        bail!("building the {EXAMPLE} example failed: {status}");
    }
    Ok(())
}

/// The example's arguments for `cfg`.
pub fn arguments(cfg: &BenchConfig) -> Vec<String> {
    let endpoints: Vec<String> = cfg.endpoints.iter().map(|e| crate::etcd::url(e)).collect();
    [
        ("endpoints", endpoints.join(",")),
        ("workload", cfg.workload.name().to_string()),
        ("clients", cfg.clients.to_string()),
        ("conns", cfg.conns.to_string()),
        ("total", cfg.total.to_string()),
        ("key-size", cfg.key_size.to_string()),
        ("val-size", cfg.val_size.to_string()),
        ("key-space", cfg.key_space.to_string()),
        ("watch-per-stream", cfg.watchers_per_stream.to_string()),
        ("watch-writers", crate::bench::watch_writers().to_string()),
    ]
    .into_iter()
    .flat_map(|(name, value)| [format!("--{name}"), value])
    .collect()
}

/// Runs one benchmark through the example; `pids` are the server processes to measure.
pub async fn run(cfg: &BenchConfig, pids: &[u32]) -> Result<Outcome> {
    let binary = binary();
    if !binary.exists() {
        bail!(
            "{} is missing: run without --no-build (or cargo build --release -p concord-tests --example {EXAMPLE})",
            binary.display()
        );
    }
    let mut child = Command::new(&binary)
        .args(arguments(cfg))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", binary.display()))?;
    let mut stdin = child.stdin.take().context("the example's stdin")?;
    let stdout = child.stdout.take().context("the example's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut probe = None;
    let mut result = None;
    while let Some(line) = lines.next_line().await? {
        if line == "ready" {
            probe = Some(ProcessProbe::start(pids));
            stdin.write_all(b"go\n").await?;
            stdin.flush().await?;
        } else if let Some(json) = line.strip_prefix("result ") {
            result = Some(json.to_string());
            break;
        } else {
            println!("  {EXAMPLE}: {line}");
        }
    }
    let servers = probe.as_ref().map(ProcessProbe::finish).unwrap_or_default();
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    let Some(result) = result else {
        bail!("{EXAMPLE} ended without a result ({status:?})");
    };
    let value: Value = serde_json::from_str(&result)
        .with_context(|| format!("{EXAMPLE}'s result is not JSON: {result}"))?;
    outcome(cfg.workload, &value, servers)
}

/// Reads a latency summary the example wrote (microseconds; `null` without samples).
fn latency(value: &Value) -> Option<LatencySummary> {
    let micros = |name: &str| value.get(name)?.as_u64().map(Duration::from_micros);
    Some(LatencySummary {
        count: value.get("count")?.as_u64()? as usize,
        p50: micros("p50")?,
        p99: micros("p99")?,
        max: micros("max")?,
    })
}

/// The example's result as an [`Outcome`].
pub fn outcome(
    workload: Workload,
    value: &Value,
    servers: Vec<crate::bench::ServerFigures>,
) -> Result<Outcome> {
    let number = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_u64)
            .with_context(|| format!("{EXAMPLE}'s result has no {name}: {value}"))
    };
    let watch = match value.get("watch") {
        Some(watch) if !watch.is_null() => Some(WatchFigures {
            expected_events: watch.get("expected").and_then(Value::as_u64).unwrap_or(0),
            delivered_events: watch.get("delivered").and_then(Value::as_u64).unwrap_or(0),
            events_per_second: watch
                .get("events_per_second")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            event_latency: watch.get("event_latency_micros").and_then(latency),
            // Its own process: not measured here.
            client_cpu_seconds: None,
        }),
        _ => None,
    };
    Ok(Outcome {
        workload,
        ops: number("ops")?,
        errors: number("errors")?,
        first_error: value
            .get("first_error")
            .and_then(Value::as_str)
            .map(String::from),
        elapsed: Duration::from_secs_f64(
            value
                .get("elapsed_secs")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
        ),
        latency: value.get("latency_micros").and_then(latency),
        watch,
        servers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{ClientKind, DEFAULT_WATCHERS_PER_STREAM};

    #[test]
    fn results_read_back_as_outcomes() {
        let unary: Value = serde_json::from_str(
            r#"{"ops":2000,"errors":1,"first_error":"boom","elapsed_secs":2.0,
                "latency_micros":{"count":2000,"p50":1500,"p99":4000,"max":9000},"watch":null}"#,
        )
        .unwrap();
        let put = outcome(Workload::Put, &unary, vec![]).unwrap();
        assert_eq!(put.ops, 2000);
        assert_eq!(put.errors, 1);
        assert_eq!(put.first_error.as_deref(), Some("boom"));
        assert_eq!(put.throughput(), 1000.0);
        assert_eq!(put.p50(), Some(Duration::from_micros(1500)));
        assert!(put.watch.is_none());

        let watched: Value = serde_json::from_str(
            r#"{"ops":10,"errors":0,"first_error":null,"elapsed_secs":0.5,
                "latency_micros":{"count":10,"p50":900,"p99":1000,"max":1000},
                "watch":{"expected":10000,"delivered":10000,"events_per_second":20000.0,
                         "event_latency_micros":{"count":10000,"p50":7000,"p99":9000,"max":9500}}}"#,
        )
        .unwrap();
        let watch = outcome(Workload::WatchFanOut, &watched, vec![]).unwrap();
        assert_eq!(watch.throughput(), 20000.0);
        assert_eq!(watch.p50(), Some(Duration::from_millis(7)));
        assert_eq!(watch.work_units(), (10000, "events"));

        let empty: Value =
            serde_json::from_str(r#"{"ops":0,"errors":100,"latency_micros":null}"#).unwrap();
        let failed = outcome(Workload::Put, &empty, vec![]).unwrap();
        assert!(failed.failed());
        assert!(failed.latency.is_none());
        assert!(outcome(Workload::Put, &Value::Null, vec![]).is_err());
    }

    #[test]
    fn arguments_carry_the_whole_config() {
        let cfg = BenchConfig {
            endpoints: vec!["127.0.0.1:2379".into(), "127.0.0.1:22379".into()],
            workload: Workload::WatchFanOut,
            clients: 1000,
            conns: 10,
            total: 1000,
            key_size: 8,
            val_size: 256,
            key_space: 100_000,
            watchers_per_stream: 1,
            client: ClientKind::EtcdClient,
        };
        let args = arguments(&cfg).join(" ");
        assert!(
            args.starts_with(
                "--endpoints http://127.0.0.1:2379,http://127.0.0.1:22379 --workload watch \
                 --clients 1000 --conns 10 --total 1000"
            ),
            "{args}"
        );
        assert!(args.contains("--watch-per-stream 1 "), "{args}");
        let range = BenchConfig {
            workload: Workload::Range { serializable: true },
            watchers_per_stream: DEFAULT_WATCHERS_PER_STREAM,
            ..cfg
        };
        assert!(arguments(&range).join(" ").contains("--workload range-s"));
    }
}
