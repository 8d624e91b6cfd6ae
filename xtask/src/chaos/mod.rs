//! `cargo xtask chaos`: a real cluster whose peer links run through proxies the harness owns, a
//! nemesis injecting faults, clients recording a history, and a checker that proves the history
//! linearizable and the watch streams complete.
//!
//! A run, in order:
//! 1. one proxy per member ([`proxy`]); each member advertises its proxy as its peer URL, so
//!    every peer connection crosses the harness, which knows the dialer of each ([`identify`]);
//! 2. the cluster ([`crate::cluster::LocalCluster`], Concord or Debian's etcd) on free ports;
//! 3. clients ([`workload`]) and watchers ([`watchers`]) start, recording into a [`History`];
//! 4. the nemesis ([`nemesis`]) runs a seeded schedule of faults (kill -9 and restart, SIGSTOP
//!    and SIGCONT, blackhole, delay, dropped connections, each healed after a few seconds; a
//!    member replaced by a fresh one, directly or through a learner that is then promoted);
//! 5. a final quiet period with everything healed lets pending requests settle; then the
//!    clients stop, the watchers catch up to the final revision (confirmed by a progress
//!    notification), the cluster stops, and [`check::check`] judges the history.
//!
//! The run passes when the checker finds no anomaly, no member exited on its own, every watcher
//! caught up, and at least some operations succeeded (a cluster that never served would
//! otherwise pass vacuously).

pub mod check;
pub mod history;
mod identify;
pub mod nemesis;
mod proxy;
mod watchers;
mod workload;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::sync::watch;

use self::history::{Call, History, Operation, Outcome};
use self::nemesis::{Nemesis, NemesisReport};
use self::proxy::Network;
use self::watchers::WatcherOutcome;
use self::workload::{Clock, Shared};
use crate::cluster::{self, Flavor, LocalCluster};
use crate::etcd::{Client, Options, Read};

/// How one run is set up.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    pub flavor: Flavor,
    pub binary: PathBuf,
    pub members: usize,
    pub duration: Duration,
    pub seed: u64,
    pub clients: usize,
    pub keys: usize,
    pub watchers: usize,
    pub request_timeout: Duration,
    /// The members' `--snapshot-count`.
    pub snapshot_count: u64,
    /// Harness self-test: serve gets from local state but record them as linearizable; the
    /// run must then fail with stale reads.
    pub serializable_gets: bool,
    /// Wiped at the start; holds the members' data dirs and logs, and the recorded history.
    pub data_dir: PathBuf,
    /// Fault kinds to inject (`--faults`); every kind when empty.
    pub faults: Vec<String>,
}

/// The key prefix the run writes under and watches.
const PREFIX: &str = "chaos/";

/// Short raft timing so faults heal quickly (etcd's defaults, spelled out for both servers).
const RAFT_TIMING: [&str; 4] = ["--heartbeat-interval", "100", "--election-timeout", "1000"];

/// The default `--snapshot-count` of a chaos run: frequent snapshots, so that members coming
/// back from a fault are caught up by snapshot as well as by log entries (etcd's and Concord's
/// default, 10,000, makes that rare in a short run).
pub const SNAPSHOT_COUNT: u64 = 2000;

/// `120s`, `2m`, `500ms`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: f64 = number
        .parse()
        .with_context(|| format!("invalid duration {text:?}"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => bail!("invalid duration {text:?}: use ms, s, m or h"),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        bail!("invalid duration {text:?}");
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The quiet period at the end, with every fault healed: long enough for elections, restarts
/// and catch-up to finish so that pending requests settle.
pub fn final_quiet(duration: Duration) -> Duration {
    (duration / 6).clamp(Duration::from_secs(3), Duration::from_secs(10))
}

/// What a run produced, for the summary.
struct RunOutcome {
    history: History,
    /// Faults in the nemesis's plan; `nemesis.injected` counts those it injected.
    planned_faults: usize,
    nemesis: NemesisReport,
    watchers: Vec<WatcherOutcome>,
    final_revision: Option<i64>,
    stop_outcomes: Vec<(String, String)>,
    proxy: String,
}

/// Runs the chaos test; prints the summary. `Ok(true)` when the run passed.
pub async fn run(config: &ChaosConfig) -> Result<bool> {
    let outcome = run_cluster(config).await?;
    println!("checking the history ...");
    let history = outcome.history.clone();
    let checking = std::time::Instant::now();
    let report = tokio::task::spawn_blocking(move || check::check(&history))
        .await
        .context("the checker panicked")?;
    let check_time = checking.elapsed();
    let mut failures = Vec::new();
    print_summary(config, &outcome, &mut failures);
    println!("\nchecker ({:.1}s): {report}", check_time.as_secs_f64());
    if !report.is_ok() {
        let kinds: Vec<String> = report.kinds().iter().map(ToString::to_string).collect();
        failures.push(format!(
            "{} anomalies ({})",
            report.anomalies.len(),
            kinds.join(", ")
        ));
    }
    println!(
        "member logs: {}/m*.log; history: {}",
        config.data_dir.display(),
        config.data_dir.join("history.txt").display()
    );
    println!(
        "{}",
        machine_summary(&outcome, &report, failures.is_empty())
    );
    if failures.is_empty() {
        println!("PASS");
        Ok(true)
    } else {
        println!("FAIL: {}", failures.join("; "));
        Ok(false)
    }
}

async fn run_cluster(config: &ChaosConfig) -> Result<RunOutcome> {
    if config.data_dir.exists() {
        std::fs::remove_dir_all(&config.data_dir)
            .with_context(|| format!("remove {}", config.data_dir.display()))?;
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("create {}", config.data_dir.display()))?;

    let listeners = proxy::bind(config.members)?;
    let mut layout = cluster::ephemeral_layout(config.members, &config.data_dir)?;
    let network = Network::new(config.members, true);
    for ((member, listener), index) in layout.iter_mut().zip(listeners).zip(0..) {
        member.advertised_peer_port = listener.local_addr()?.port();
        let upstream = SocketAddr::from(([127, 0, 0, 1], member.peer_port));
        proxy::spawn(listener, index, upstream, network.clone())?;
    }
    let mut extra: Vec<String> = RAFT_TIMING.iter().map(|s| s.to_string()).collect();
    extra.extend([
        "--snapshot-count".to_string(),
        config.snapshot_count.to_string(),
    ]);
    let binary = config.binary.clone();
    let flavor = config.flavor;
    let cluster = LocalCluster::launch(flavor, &binary, layout, &extra)?;
    // Published before the members get far enough to dial each other, so that the proxies
    // recognise even the first connections.
    for index in 0..config.members {
        network.set_pid(index, cluster.pid(index));
    }
    let cluster = tokio::task::spawn_blocking(move || {
        cluster
            .wait_accepting(Duration::from_secs(30))
            .map(|()| cluster)
    })
    .await
    .context("starting the cluster panicked")??;
    let endpoints = cluster.endpoints();
    println!(
        "chaos: {} cluster of {} ({}), peers behind proxies {}",
        config.flavor.name(),
        config.members,
        endpoints.join(","),
        cluster
            .layout()
            .iter()
            .map(|m| format!("{}:{}->{}", m.name, m.advertised_peer_port, m.peer_port))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let cluster = Arc::new(Mutex::new(cluster));
    crate::bench::wait_serving(&endpoints, Duration::from_secs(60)).await?;
    let (status_clients, member_ids) = member_ids(&endpoints, config.request_timeout).await?;

    let clock = Clock::start();
    let shared = Arc::new(Shared {
        endpoints: endpoints.clone(),
        keys: (0..config.keys).map(|k| format!("{PREFIX}k{k}")).collect(),
        prefix: PREFIX.to_string(),
        request_timeout: config.request_timeout,
        serializable_gets: config.serializable_gets,
        clock,
        highest_revision: AtomicI64::new(1),
        next_client_id: AtomicUsize::new(config.clients),
    });
    let (stop_clients, stop) = watch::channel(false);
    let (send_final, final_revision) = watch::channel(None);
    let clients: Vec<_> = (0..config.clients)
        .map(|worker| {
            tokio::spawn(workload::run_client(
                worker,
                config.seed,
                shared.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let watchers: Vec<_> = (0..config.watchers)
        .map(|id| {
            tokio::spawn(watchers::run_watcher(
                id,
                config.seed,
                shared.clone(),
                final_revision.clone(),
            ))
        })
        .collect();

    let quiet = final_quiet(config.duration);
    let active = config.duration.saturating_sub(quiet);
    let steps = nemesis::plan_of(config.members, active, config.seed, &config.faults);
    println!(
        "chaos: {} faults planned over {:.0}s (seed {}), then {:.0}s quiet",
        steps.len(),
        active.as_secs_f64(),
        config.seed,
        quiet.as_secs_f64()
    );
    let nemesis = Nemesis {
        cluster: cluster.clone(),
        network: network.clone(),
        status_clients,
        member_ids: Mutex::new(member_ids),
        started: clock_instant(&clock),
        members: config.members,
        verbose: true,
    };
    let mut nemesis_report = nemesis.run(&steps, active).await;
    let remaining = config.duration.saturating_sub(clock.elapsed());
    tokio::time::sleep(remaining).await;

    let _ = stop_clients.send(true);
    let mut operations: Vec<Operation> = Vec::new();
    for client in clients {
        operations.extend(client.await.context("a client panicked")?);
    }
    operations.sort_by_key(|op| op.invoke_ns);
    println!(
        "[{:7.1}s] clients stopped; waiting for the watchers to catch up",
        clock.elapsed().as_secs_f64()
    );
    let final_revision = final_store_revision(&endpoints, config.request_timeout).await;
    let mut watcher_outcomes = Vec::new();
    match final_revision {
        Some(revision) => {
            let _ = send_final.send(Some(revision));
            for watcher in watchers {
                watcher_outcomes.push(watcher.await.context("a watcher panicked")?);
            }
            println!(
                "[{:7.1}s] watchers done at the final revision {revision}",
                clock.elapsed().as_secs_f64()
            );
        }
        None => {
            // Without a final revision nothing can be vouched for beyond what was delivered.
            for watcher in &watchers {
                watcher.abort();
            }
        }
    }
    for member in 0..config.members {
        nemesis.check_identity(member, &mut nemesis_report).await;
    }
    // Crashes up to the very end count, including any during the final catch-up.
    let stop_outcomes = {
        let mut cluster = cluster
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (name, status) in cluster.exited() {
            nemesis_report.crashes.push(nemesis::Crash {
                log_tail: log_tail(&config.data_dir.join(format!("{name}.log"))),
                member: name,
                status,
                at: clock.elapsed(),
            });
        }
        network.close();
        if config.flavor == Flavor::Etcd {
            // etcd's leader spends seconds trying to hand over leadership to followers that are
            // stopping too; its shutdown is not under test, so it is cut short.
            for member in 0..config.members {
                let _ = cluster.kill(member);
            }
        }
        cluster.stop()
    };
    let proxy = proxy_summary(&network);
    let history = History {
        operations,
        watches: watcher_outcomes
            .iter()
            .flat_map(|w| w.records.iter().cloned())
            .collect(),
    };
    let served_by: Vec<(usize, u64)> = watcher_outcomes
        .iter()
        .flat_map(|w| w.served_by.iter().copied())
        .collect();
    let dump = config.data_dir.join("history.txt");
    std::fs::write(&dump, dump_history(&history, &served_by))
        .with_context(|| format!("write {}", dump.display()))?;
    Ok(RunOutcome {
        history,
        planned_faults: steps.len(),
        nemesis: nemesis_report,
        watchers: watcher_outcomes,
        final_revision,
        stop_outcomes,
        proxy,
    })
}

/// The tokio instant matching the run clock's start (the nemesis prints times on it).
fn clock_instant(clock: &Clock) -> tokio::time::Instant {
    tokio::time::Instant::now() - clock.elapsed()
}

fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// One status client per member, and each member's id (the leader field of Status names it).
async fn member_ids(endpoints: &[String], timeout: Duration) -> Result<(Vec<Client>, Vec<u64>)> {
    let mut clients = Client::connect_each(endpoints, &Options::under_faults(timeout))?;
    let mut ids = Vec::new();
    for (client, endpoint) in clients.iter_mut().zip(endpoints) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let id = loop {
            let answer = tokio::time::timeout(timeout, client.status()).await;
            if let Ok(Ok(status)) = answer
                && let Some(header) = status.header
            {
                break header.member_id;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{endpoint} did not answer Maintenance.Status within 30s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        ids.push(id);
    }
    Ok((clients, ids))
}

/// The store's revision once the clients have stopped, from a linearizable read.
async fn final_store_revision(endpoints: &[String], timeout: Duration) -> Option<i64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for endpoint in endpoints.iter().cycle() {
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        let read = async {
            let mut client = Client::connect(endpoint, &Options::under_faults(timeout))?;
            client.get(PREFIX, Read::Linearizable).await
        };
        if let Ok(Ok(response)) = tokio::time::timeout(timeout, read).await
            && let Some(header) = response.header
        {
            return Some(header.revision);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn proxy_summary(network: &Network) -> String {
    let stats = &network.stats;
    format!(
        "{} peer connections ({} of unknown origin), {} refused and {} cut by drops, {} MiB forwarded",
        stats.accepted.load(Ordering::Relaxed),
        stats.unidentified.load(Ordering::Relaxed),
        stats.refused.load(Ordering::Relaxed),
        stats.cut.load(Ordering::Relaxed),
        stats.bytes.load(Ordering::Relaxed) / (1024 * 1024)
    )
}

fn call_kind(call: &Call) -> &'static str {
    match call {
        Call::Put { .. } => "put",
        Call::Get { .. } => "get",
        Call::Cas { .. } => "cas",
        Call::Delete { .. } => "delete",
    }
}

/// Per kind: (ok, unknown, and for cas/delete how many changed something).
fn operation_counts(operations: &[Operation]) -> BTreeMap<&'static str, (usize, usize, usize)> {
    let mut counts: BTreeMap<&'static str, (usize, usize, usize)> = BTreeMap::new();
    for op in operations {
        let entry = counts.entry(call_kind(&op.call)).or_default();
        match op.outcome {
            Outcome::Unknown => entry.1 += 1,
            Outcome::Cas {
                succeeded: true, ..
            }
            | Outcome::Delete { deleted: 1.., .. } => {
                entry.0 += 1;
                entry.2 += 1;
            }
            _ => entry.0 += 1,
        }
    }
    counts
}

/// The line that starts with this is the run's summary for scripts and tests.
const MACHINE_SUMMARY: &str = "chaos-summary";

/// One line of `key=value` words after [`MACHINE_SUMMARY`]: operations that completed (`ok`)
/// and that did not (`unknown`), faults planned and injected (and per kind), members that exited on their
/// own, watch events delivered, anomalies and their kinds ([`check::AnomalyKind::slug`], or
/// `none`), and the verdict.
fn machine_summary(outcome: &RunOutcome, report: &check::CheckReport, passed: bool) -> String {
    let (ok, unknown) = totals(&operation_counts(&outcome.history.operations));
    let kinds: Vec<String> = report.kinds().into_iter().map(|k| k.slug()).collect();
    let words = [
        ("ok", ok.to_string()),
        ("unknown", unknown.to_string()),
        ("faults-planned", outcome.planned_faults.to_string()),
        ("faults-injected", outcome.nemesis.total().to_string()),
        (
            "fault-kinds",
            if outcome.nemesis.injected.is_empty() {
                "none".to_string()
            } else {
                outcome
                    .nemesis
                    .injected
                    .iter()
                    .map(|(kind, n)| format!("{kind}:{n}"))
                    .collect::<Vec<_>>()
                    .join(",")
            },
        ),
        ("crashes", outcome.nemesis.crashes.len().to_string()),
        ("watch-events", outcome.history.watch_events().to_string()),
        ("anomalies", report.anomalies.len().to_string()),
        (
            "anomaly-kinds",
            if kinds.is_empty() {
                "none".to_string()
            } else {
                kinds.join(",")
            },
        ),
        ("verdict", if passed { "pass" } else { "fail" }.to_string()),
    ];
    let words: Vec<String> = words.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{MACHINE_SUMMARY} {}", words.join(" "))
}

/// Operations that completed and that did not, over every kind.
fn totals(counts: &BTreeMap<&'static str, (usize, usize, usize)>) -> (usize, usize) {
    counts
        .values()
        .fold((0, 0), |(ok, unknown), c| (ok + c.0, unknown + c.1))
}

fn print_summary(config: &ChaosConfig, outcome: &RunOutcome, failures: &mut Vec<String>) {
    let operations = &outcome.history.operations;
    let counts = operation_counts(operations);
    let (ok, unknown) = totals(&counts);
    println!(
        "\n=== chaos summary: {} x{} for {:.0}s, seed {}, {} clients on {} keys, {} watchers",
        config.flavor.name(),
        config.members,
        config.duration.as_secs_f64(),
        config.seed,
        config.clients,
        config.keys,
        config.watchers
    );
    println!(
        "operations: {} ({ok} ok, {unknown} unknown)",
        operations.len()
    );
    for (kind, (ok, unknown, changed)) in &counts {
        let extra = match *kind {
            "cas" => format!(" ({changed} succeeded, {} failed)", ok - changed),
            "delete" => format!(" ({changed} deleted a key)"),
            _ => String::new(),
        };
        println!("  {kind:<6} {ok:>7} ok {unknown:>6} unknown{extra}");
    }
    if ok == 0 {
        failures.push("no operation succeeded".to_string());
    }
    let events = outcome.history.watch_events();
    let broken: usize = outcome.watchers.iter().map(|w| w.broken).sum();
    println!(
        "watch streams: {} ({} events delivered, {broken} broke and were resumed); final revision {}",
        outcome.history.watches.len(),
        events,
        outcome
            .final_revision
            .map_or("unknown".to_string(), |r| r.to_string())
    );
    for stalled in outcome.watchers.iter().filter_map(|w| w.stalled.as_ref()) {
        println!("  STALLED: {stalled}");
        failures.push(stalled.clone());
    }
    if outcome.final_revision.is_none() {
        failures.push("no member answered a read after the run".to_string());
    }
    let report = &outcome.nemesis;
    let total = report.total();
    let per_kind: Vec<String> = report
        .injected
        .iter()
        .map(|(kind, n)| match report.leader_hits.get(kind) {
            Some(leader) => format!("{kind} {n} (leader {leader})"),
            None => format!("{kind} {n}"),
        })
        .collect();
    println!("faults: {total} injected: {}", per_kind.join(", "));
    println!("proxy: {}", outcome.proxy);
    for error in &report.errors {
        println!("  nemesis error: {error}");
        failures.push(format!("nemesis: {error}"));
    }
    for crash in &report.crashes {
        println!(
            "  CRASH: {} exited on its own at {:.1}s ({}); last log lines:\n{}",
            crash.member,
            crash.at.as_secs_f64(),
            crash.status,
            indent(&crash.log_tail)
        );
        failures.push(format!("{} exited on its own", crash.member));
    }
    let stops: Vec<String> = outcome
        .stop_outcomes
        .iter()
        .map(|(name, status)| format!("{name} {status}"))
        .collect();
    if stops.is_empty() {
        println!("members stopped: kill -9");
    } else {
        println!("members stopped: {}", stops.join(", "));
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The history as text, one operation or watch stream per line, for reading after a failure;
/// `served_by` names each watch stream's member and opening time.
fn dump_history(history: &History, served_by: &[(usize, u64)]) -> String {
    let mut text = String::new();
    for op in &history.operations {
        let _ = writeln!(
            text,
            "op client={} invoke={} return={} {:?} => {:?}",
            op.client,
            op.invoke_ns,
            op.return_ns
                .map_or("unknown".to_string(), |ns| ns.to_string()),
            op.call,
            op.outcome
        );
    }
    for (index, watch) in history.watches.iter().enumerate() {
        let (member, opened) = match served_by.get(index) {
            Some((member, opened_ns)) => (format!("m{member}"), opened_ns.to_string()),
            None => ("?".to_string(), "?".to_string()),
        };
        let _ = writeln!(
            text,
            "watch watcher={} member={member} opened={opened} prefix={:?} start={} complete_to={} events={:?}",
            watch.watcher, watch.prefix, watch.start_revision, watch.complete_to, watch.events
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("120s").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn the_quiet_period_scales_within_bounds() {
        assert_eq!(final_quiet(Duration::from_secs(30)), Duration::from_secs(5));
        assert_eq!(final_quiet(Duration::from_secs(6)), Duration::from_secs(3));
        assert_eq!(
            final_quiet(Duration::from_secs(600)),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn counts_per_kind() {
        let op = |call: Call, outcome: Outcome| Operation {
            client: 0,
            invoke_ns: 0,
            return_ns: None,
            call,
            outcome,
        };
        let key = || "k".to_string();
        let counts = operation_counts(&[
            op(Call::Get { key: key() }, Outcome::Unknown),
            op(
                Call::Cas {
                    key: key(),
                    expected: None,
                    value: "v".into(),
                },
                Outcome::Cas {
                    revision: 2,
                    succeeded: true,
                },
            ),
            op(
                Call::Cas {
                    key: key(),
                    expected: None,
                    value: "w".into(),
                },
                Outcome::Cas {
                    revision: 2,
                    succeeded: false,
                },
            ),
            op(
                Call::Delete { key: key() },
                Outcome::Delete {
                    revision: 2,
                    deleted: 0,
                },
            ),
        ]);
        assert_eq!(counts["get"], (0, 1, 0));
        assert_eq!(counts["cas"], (2, 0, 1));
        assert_eq!(counts["delete"], (1, 0, 0));
    }

    #[test]
    fn the_machine_summary_counts_and_names_the_anomalies() {
        let get = |outcome, return_ns| Operation {
            client: 0,
            invoke_ns: 0,
            return_ns,
            call: Call::Get { key: "k".into() },
            outcome,
        };
        let found = Outcome::Get {
            revision: 2,
            kv: None,
        };
        let mut outcome = RunOutcome {
            history: History {
                operations: vec![get(found.clone(), Some(1)), get(found, Some(2))],
                watches: Vec::new(),
            },
            planned_faults: 3,
            nemesis: NemesisReport::default(),
            watchers: Vec::new(),
            final_revision: Some(2),
            stop_outcomes: Vec::new(),
            proxy: String::new(),
        };
        outcome.history.operations.push(get(Outcome::Unknown, None));
        outcome.nemesis.injected.insert("kill", 2);
        outcome.nemesis.injected.insert("pause", 1);
        let mut report = check::CheckReport::default();
        assert_eq!(
            machine_summary(&outcome, &report, true),
            "chaos-summary ok=2 unknown=1 faults-planned=3 faults-injected=3 \
             fault-kinds=kill:2,pause:1 crashes=0 watch-events=0 anomalies=0 \
             anomaly-kinds=none verdict=pass"
        );
        for kind in [
            check::AnomalyKind::StaleRead,
            check::AnomalyKind::NotLinearizable,
            check::AnomalyKind::StaleRead,
        ] {
            report.anomalies.push(check::Anomaly {
                kind,
                key: None,
                summary: String::new(),
                operations: Vec::new(),
                notes: Vec::new(),
            });
        }
        let line = machine_summary(&outcome, &report, false);
        assert!(
            line.ends_with(" anomalies=3 anomaly-kinds=not-linearizable,stale-read verdict=fail"),
            "{line}"
        );
    }
}
