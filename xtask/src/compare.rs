//! `cargo xtask bench --compare`: the same workloads against a fresh Concord cluster and a fresh
//! Debian etcd cluster of the same size on this machine (fsync on for both), then a table of
//! Concord/etcd ratios. Both clusters run throughout; each case runs on one right after the
//! other (alternating which goes first), so a shifting background load skews no ratio much.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

use crate::bench::{self, BenchConfig, ClientKind, Outcome, Workload};
use crate::cluster::{self, Flavor, LocalCluster};

/// Which members a case's clients talk to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Connections round-robin over every member (followers hand writes to the leader).
    Spread,
    /// Every connection to the leader.
    Leader,
    /// Every connection to one follower.
    Follower,
}

/// One row of the comparison: a label and the run's settings (endpoints filled in later).
#[derive(Clone, Debug)]
pub struct Case {
    pub label: &'static str,
    pub target: Target,
    pub config: BenchConfig,
}

impl Case {
    fn endpoints(&self, all: &[String], leader: &str, followers: &[String]) -> Vec<String> {
        match self.target {
            Target::Spread => all.to_vec(),
            Target::Leader => vec![leader.to_string()],
            Target::Follower => followers
                .first()
                .map_or_else(|| vec![leader.to_string()], |f| vec![f.clone()]),
        }
    }
}

/// The watch fan-out layouts compared: (label, watchers, streams, connections). One stream
/// per watcher is how most clients watch (each process, each `watch()` call its own);
/// 100 to a stream is etcd's `benchmark watch` default.
const WATCH_LAYOUTS: [(&str, usize, usize, usize); 4] = [
    ("watch, 1000 streams x 1", 1000, 1000, 10),
    ("watch, 10 streams x 100", 1000, 10, 10),
    ("watch, 10000 streams x 1", 10_000, 10_000, 100),
    ("watch, 100 streams x 100", 10_000, 100, 100),
];

/// The compared workloads, driven by `client`; `total` sizes the big ones and the others
/// scale from it so a full comparison stays within minutes on a small machine. The watch
/// cases deliver about a million events each at the default 20,000: 1,000 puts to 1,000
/// watchers, 100 puts to 10,000.
pub fn cases(total: u64, client: ClientKind) -> Vec<Case> {
    let base = BenchConfig {
        endpoints: Vec::new(),
        workload: Workload::Put,
        clients: 1,
        conns: 1,
        total,
        key_size: 8,
        val_size: 256,
        key_space: 100_000,
        watchers_per_stream: bench::DEFAULT_WATCHERS_PER_STREAM,
        client,
    };
    let put_200 = BenchConfig {
        clients: 200,
        conns: 20,
        ..base.clone()
    };
    let range_100 = BenchConfig {
        workload: Workload::Range {
            serializable: false,
        },
        clients: 100,
        conns: 10,
        key_space: 1000,
        ..base.clone()
    };
    let put_1 = BenchConfig {
        total: (total / 20).max(1),
        ..base.clone()
    };
    let watch_cases = WATCH_LAYOUTS.map(|(label, watchers, streams, conns)| Case {
        label,
        target: Target::Spread,
        config: BenchConfig {
            workload: Workload::WatchFanOut,
            clients: watchers,
            conns,
            watchers_per_stream: watchers / streams,
            total: (total * 1000 / watchers as u64 / 20).max(1),
            ..base.clone()
        },
    });
    let mut cases = vec![
        Case {
            label: "put, 200 clients",
            target: Target::Spread,
            config: put_200.clone(),
        },
        Case {
            label: "put, 200 clients on the leader",
            target: Target::Leader,
            config: put_200.clone(),
        },
        Case {
            label: "range linearizable, 100 clients",
            target: Target::Spread,
            config: range_100.clone(),
        },
        Case {
            label: "range lin., 100 on the leader",
            target: Target::Leader,
            config: range_100.clone(),
        },
        Case {
            label: "range serializable, 100 clients",
            target: Target::Spread,
            config: BenchConfig {
                workload: Workload::Range { serializable: true },
                ..range_100
            },
        },
        Case {
            label: "txn (compare+put), 200 clients",
            target: Target::Spread,
            config: BenchConfig {
                workload: Workload::Txn,
                ..put_200
            },
        },
        Case {
            label: "put, 1 client on the leader",
            target: Target::Leader,
            config: put_1.clone(),
        },
        Case {
            label: "put, 1 client on a follower",
            target: Target::Follower,
            config: put_1,
        },
        Case {
            label: "lease grant+revoke, 50 clients",
            target: Target::Spread,
            config: BenchConfig {
                workload: Workload::LeaseChurn,
                clients: 50,
                conns: 5,
                total: (total / 4).max(1),
                ..base
            },
        },
    ];
    cases.extend(watch_cases);
    cases
}

/// One side of the comparison: a running cluster of one flavor.
struct Side {
    flavor: Flavor,
    cluster: LocalCluster,
    endpoints: Vec<String>,
    pids: Vec<u32>,
}

impl Side {
    async fn start(flavor: Flavor, binary: &Path, members: usize, root: &Path) -> Result<Side> {
        let dir = root.join(flavor.name());
        let cluster =
            LocalCluster::start(flavor, binary, cluster::ephemeral_layout(members, &dir)?)?;
        let endpoints = cluster.endpoints();
        println!(
            "=== {} cluster: {} (logs in {})",
            flavor.name(),
            endpoints.join(","),
            dir.display()
        );
        bench::wait_serving(&endpoints, Duration::from_secs(60)).await?;
        let pids = cluster.pids();
        Ok(Side {
            flavor,
            cluster,
            endpoints,
            pids,
        })
    }

    /// Runs one case; an error is recorded as `Err(message)` so the other cases still run.
    async fn run_case(&mut self, case: &Case) -> Result<Outcome, String> {
        let flavor = self.flavor.name();
        // Asked before every case: leadership may move during a run.
        let (leader, followers) = bench::split_by_leader(&self.endpoints)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let config = BenchConfig {
            endpoints: case.endpoints(&self.endpoints, &leader, &followers),
            ..case.config.clone()
        };
        println!(
            "--- {flavor} [{}]: {}",
            case.label,
            bench::describe(&config)
        );
        let outcome = bench::run(&config, &self.pids).await;
        match &outcome {
            Ok(outcome) => outcome.print(),
            Err(e) => println!("  failed: {e:#}"),
        }
        for (name, status) in self.cluster.exited() {
            println!("  WARNING: {flavor} member {name} exited: {status}");
        }
        outcome.map_err(|e| format!("{e:#}"))
    }

    fn stop(mut self) {
        for (name, status) in self.cluster.stop() {
            println!("{} {name}: {status}", self.flavor.name());
        }
    }
}

/// Which side runs a case first: alternating, so a load that rises or falls through a
/// pair of runs favours neither side over the whole table.
fn concord_first(case_index: usize) -> bool {
    case_index.is_multiple_of(2)
}
/// Removes the comparison's data dirs however the comparison ends.
struct TempRoot(PathBuf);

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Names a Concord binary to compare instead of the workspace's build (e.g. a saved
/// build from before a change, for before/after tables under the same machine load).
const CONCORD_BINARY_ENV: &str = "XTASK_COMPARE_CONCORD";

pub async fn run(
    concord: &Path,
    etcd: &Path,
    members: usize,
    total: u64,
    client: ClientKind,
) -> Result<()> {
    let chosen = std::env::var_os(CONCORD_BINARY_ENV).map(PathBuf::from);
    let concord = chosen.as_deref().unwrap_or(concord);
    println!("concord binary: {}", concord.display());
    let root = TempRoot(std::env::temp_dir().join(format!("xtask-compare-{}", std::process::id())));
    let cases = cases(total, client);
    // Both clusters run for the whole comparison and each case runs against one, then
    // at once against the other: on a machine shared with other work, the background
    // load then weighs on both sides of a row alike (one cluster after the other, a
    // change of load between the halves skewed every ratio). The idle cluster costs a
    // heartbeat every 100 ms.
    let mut concord_side = Side::start(Flavor::Concord, concord, members, &root.0).await?;
    let mut etcd_side = Side::start(Flavor::Etcd, etcd, members, &root.0).await?;
    let mut concord_outcomes = Vec::new();
    let mut etcd_outcomes = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        if concord_first(index) {
            concord_outcomes.push(concord_side.run_case(case).await);
            etcd_outcomes.push(etcd_side.run_case(case).await);
        } else {
            etcd_outcomes.push(etcd_side.run_case(case).await);
            concord_outcomes.push(concord_side.run_case(case).await);
        }
    }
    concord_side.stop();
    etcd_side.stop();
    println!(
        "\n{}",
        table(&cases, &concord_outcomes, &etcd_outcomes, members, client)
    );
    Ok(())
}

fn ratio(concord: f64, etcd: f64) -> String {
    if etcd > 0.0 {
        format!("{:.2}", concord / etcd)
    } else {
        "-".to_string()
    }
}

/// The comparison table (ratios are Concord / etcd: > 1 means Concord has more of it).
pub fn table(
    cases: &[Case],
    concord: &[Result<Outcome, String>],
    etcd: &[Result<Outcome, String>],
    members: usize,
    client: ClientKind,
) -> String {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| {
            let fields: Vec<&str> = l.split_whitespace().take(3).collect();
            (fields.len() == 3).then(|| fields.join(" "))
        })
        .unwrap_or_else(|| "?".into());
    let client = client.name();
    let mut out = format!(
        "Concord vs etcd 3.4.23, {members} members each, fsync on, same machine, client {client}, \
         load average {load} at the end (ratio = concord/etcd)\n\
         {:<32} {:>10} {:>10} {:>6} | {:>9} {:>9} {:>6} | {:>8} {:>8} {:>6} | {:>7} {:>7} {:>6}\n",
        "workload",
        "concord/s",
        "etcd/s",
        "ratio",
        "c p50",
        "e p50",
        "ratio",
        "c RSS",
        "e RSS",
        "ratio",
        "c cpu",
        "e cpu",
        "ratio"
    );
    for ((case, c), e) in cases.iter().zip(concord).zip(etcd) {
        match (c, e) {
            (Ok(c), Ok(e)) if !c.failed() && !e.failed() => {
                let p50 = |o: &Outcome| o.p50().map_or(0.0, |d| d.as_secs_f64());
                // Milliseconds per 1,000 operations: a watch event costs microseconds.
                let cpu_ms = |o: &Outcome| o.cpu_seconds_per_thousand_ops().map(|s| s * 1000.0);
                let cpu = |o: &Outcome| cpu_ms(o).map_or("-".into(), |v| format!("{v:.1}"));
                let cpu_ratio = match (cpu_ms(c), cpu_ms(e)) {
                    (Some(c), Some(e)) => ratio(c, e),
                    _ => "-".to_string(),
                };
                out += &format!(
                    "{:<32} {:>10.0} {:>10.0} {:>6} | {:>9} {:>9} {:>6} | {:>8} {:>8} {:>6} | {:>7} {:>7} {:>6}\n",
                    case.label,
                    c.throughput(),
                    e.throughput(),
                    ratio(c.throughput(), e.throughput()),
                    bench::p50_text(c),
                    bench::p50_text(e),
                    ratio(p50(c), p50(e)),
                    bench::mebibytes(c.total_rss_bytes()),
                    bench::mebibytes(e.total_rss_bytes()),
                    ratio(c.total_rss_bytes() as f64, e.total_rss_bytes() as f64),
                    cpu(c),
                    cpu(e),
                    cpu_ratio,
                );
            }
            _ => {
                let why = |o: &Result<Outcome, String>| match o {
                    Ok(o) if o.failed() => {
                        format!("failed: {}", o.first_error.clone().unwrap_or_default())
                    }
                    Ok(_) => "ok".to_string(),
                    Err(e) => format!("failed: {e}"),
                };
                out += &format!("{:<32} concord {}; etcd {}\n", case.label, why(c), why(e));
            }
        }
    }
    out += "throughput: ops/s (watch: events delivered/s); p50: request latency (watch: put-to-event);\n\
            RSS: MiB summed over members after the run; cpu: server CPU milliseconds (utime + stime) per 1000 ops (watch: events), all members.";
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_scale_with_total() {
        let compared = cases(20_000, ClientKind::Lean);
        let totals: Vec<u64> = compared.iter().map(|c| c.config.total).collect();
        assert_eq!(
            totals,
            [
                20_000, 20_000, 20_000, 20_000, 20_000, 20_000, 1_000, 1_000, 5_000, 1_000, 1_000,
                100, 100
            ]
        );
        assert_eq!(compared[0].config.clients, 200);
        // The watch layouts: (watchers, per stream, connections).
        let layouts: Vec<(usize, usize, usize)> = compared
            .iter()
            .filter(|c| c.config.workload == Workload::WatchFanOut)
            .map(|c| {
                (
                    c.config.clients,
                    c.config.watchers_per_stream,
                    c.config.conns,
                )
            })
            .collect();
        assert_eq!(
            layouts,
            [
                (1000, 1, 10),
                (1000, 100, 10),
                (10_000, 1, 100),
                (10_000, 100, 100)
            ]
        );
        // About a million events per watch case.
        for case in compared
            .iter()
            .filter(|c| c.config.workload == Workload::WatchFanOut)
        {
            assert_eq!(case.config.total * case.config.clients as u64, 1_000_000);
        }
        assert!(
            cases(100, ClientKind::EtcdClient)
                .iter()
                .all(|c| c.config.client == ClientKind::EtcdClient)
        );
        let targets: Vec<Target> = compared.iter().map(|c| c.target).collect();
        assert_eq!(targets.iter().filter(|&&t| t == Target::Leader).count(), 3);
        assert_eq!(
            targets.iter().filter(|&&t| t == Target::Follower).count(),
            1
        );
        for case in &compared {
            BenchConfig {
                endpoints: vec!["x:1".into()],
                ..case.config.clone()
            }
            .validate()
            .unwrap();
        }
        assert!(
            cases(1, ClientKind::Lean)
                .iter()
                .all(|c| c.config.total >= 1)
        );
    }

    #[test]
    fn sides_take_turns_going_first() {
        let firsts: Vec<bool> = (0..4).map(concord_first).collect();
        assert_eq!(firsts, [true, false, true, false]);
    }

    #[test]
    fn cases_pick_their_members() {
        let all: Vec<String> = ["a:1", "b:1", "c:1"].map(String::from).to_vec();
        let followers = vec!["a:1".to_string(), "c:1".to_string()];
        let endpoints = |target| {
            Case {
                label: "x",
                target,
                config: cases(1, ClientKind::Lean)[0].config.clone(),
            }
            .endpoints(&all, "b:1", &followers)
        };
        assert_eq!(endpoints(Target::Spread), all);
        assert_eq!(endpoints(Target::Leader), ["b:1"]);
        assert_eq!(endpoints(Target::Follower), ["a:1"]);
    }

    #[test]
    fn table_shows_ratios_and_failures() {
        let cases = cases(100, ClientKind::Lean);
        let outcome = |ops: u64, secs: u64, errors: u64| Outcome {
            workload: Workload::Put,
            ops,
            errors,
            first_error: (errors > 0).then(|| "unimplemented".to_string()),
            elapsed: Duration::from_secs(secs),
            latency: crate::stats::LatencySummary::from_micros(&mut [2000]),
            watch: None,
            servers: vec![],
        };
        let concord = vec![Ok(outcome(100, 1, 0)), Err("boom".to_string())];
        let etcd = vec![Ok(outcome(100, 2, 0)), Ok(outcome(0, 1, 100))];
        let text = table(&cases[..2], &concord, &etcd, 3, ClientKind::Lean);
        assert!(text.contains("client lean"), "{text}");
        let put_row = text.lines().find(|l| l.starts_with("put, 200")).unwrap();
        assert!(put_row.contains(" 2.00 "), "{put_row}");
        let range_row = text
            .lines()
            .find(|l| l.starts_with("put, 200 clients on"))
            .unwrap();
        assert!(range_row.contains("concord failed: boom"), "{range_row}");
        assert!(
            range_row.contains("etcd failed: unimplemented"),
            "{range_row}"
        );
    }
}
