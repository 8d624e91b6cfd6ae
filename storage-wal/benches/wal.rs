//! Append throughput of `WalStorage`: entries per second with 1 and with 64 entries
//! (256-byte payloads) per append, i.e. per fsync. Run with
//! `cargo bench -p concord-storage-wal`; set `WAL_BENCH_DIR` to measure another file
//! system than the default temp dir.

use std::error::Error;
use std::path::Path;
use std::time::{Duration, Instant};

use concord_storage_wal::{WalOptions, WalStorage};
use raft::prelude::{Entry, HardState};

const PAYLOAD_BYTES: usize = 256;

struct Outcome {
    entries: u64,
    appends: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

fn run(
    dir: &Path,
    opts: WalOptions,
    per_append: u64,
    budget: Duration,
) -> Result<Outcome, Box<dyn Error>> {
    let mut wal = WalStorage::open(dir, opts)?;
    let payload = vec![0xab_u8; PAYLOAD_BYTES];
    let mut next = 1u64;
    let mut latencies = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget {
        let batch: Vec<Entry> = (next..next + per_append)
            .map(|index| Entry {
                index,
                term: 1,
                data: payload.clone().into(),
                ..Default::default()
            })
            .collect();
        let hard_state = HardState {
            term: 1,
            vote: 1,
            commit: next,
            ..Default::default()
        };
        let began = Instant::now();
        wal.append(&batch, Some(&hard_state))?;
        latencies.push(began.elapsed());
        next += per_append;
    }
    Ok(Outcome {
        entries: next - 1,
        appends: latencies.len(),
        elapsed: start.elapsed(),
        latencies,
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() -> Result<(), Box<dyn Error>> {
    // `cargo bench` passes `--bench`; nothing to parse.
    let base = std::env::var_os("WAL_BENCH_DIR").map(std::path::PathBuf::from);
    let budget = Duration::from_secs(3);
    println!("payload {PAYLOAD_BYTES} B, {budget:?} per case, one fsync per append");
    for preallocate in [false, true] {
        for per_append in [1u64, 64] {
            let dir = match &base {
                Some(base) => tempfile::tempdir_in(base)?,
                None => tempfile::tempdir()?,
            };
            let opts = WalOptions {
                preallocate,
                ..WalOptions::default()
            };
            let mut outcome = run(dir.path(), opts, per_append, budget)?;
            outcome.latencies.sort();
            let seconds = outcome.elapsed.as_secs_f64();
            println!(
                "{per_append:>3} entries/append, preallocate={preallocate:<5}: {:>9.0} entries/s, {:>6.0} appends/s, append p50 {:?} p99 {:?}",
                outcome.entries as f64 / seconds,
                outcome.appends as f64 / seconds,
                percentile(&outcome.latencies, 0.5),
                percentile(&outcome.latencies, 0.99),
            );
        }
    }
    Ok(())
}
