//! Benchmark (not a test): many leases with keys expiring at the same moment must not
//! stall writes. Starts one real `concord` member, grants LEASES leases (default 10,000)
//! with KEYS keys each (default 10) and TTL seconds (default 60), then measures the
//! latency of sequential puts from WRITERS clients (default 4) before the expiry
//! (baseline) and while the leader revokes the expired leases (at most 1000 per second),
//! and prints p50 / p99 / max for both phases.
//!
//! ```text
//! cargo build --release -p concord-server
//! cargo run --release -p concord-tests --example lease_expiry_bench
//! LEASES=2000 KEYS=5 TTL=20 cargo run --release -p concord-tests --example lease_expiry_bench
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use concord_tests::Cluster;
use etcd_client::{Client, GetOptions, PutOptions};
use tokio::time::{Instant, sleep};

fn setting(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(text) => text.parse().with_context(|| format!("{name}={text}")),
        Err(_) => Ok(default),
    }
}

/// Latencies of sequential puts by `writers` clients until `stop` is set.
async fn measure_puts(
    endpoint: String,
    writers: u64,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<Duration>> {
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let endpoint = endpoint.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect([endpoint], None).await?;
            let mut latencies = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                client
                    .put(format!("probe/{writer}/{}", i % 100), "x", None)
                    .await?;
                latencies.push(start.elapsed());
                i += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    all.sort();
    Ok(all)
}

fn report(phase: &str, latencies: &[Duration]) {
    if latencies.is_empty() {
        println!("{phase}: no puts");
        return;
    }
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{phase}: {} puts, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        latencies[latencies.len() - 1].as_secs_f64() * 1e3,
    );
}

async fn leased_keys(client: &mut Client) -> anyhow::Result<i64> {
    let options = GetOptions::new().with_prefix().with_count_only();
    Ok(client.get("leased/", Some(options)).await?.count())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let leases = setting("LEASES", 10_000)?;
    let keys = setting("KEYS", 10)?;
    let ttl = setting("TTL", 60)? as i64;
    let writers = setting("WRITERS", 4)?;
    let cluster = Cluster::start(1)?;
    let endpoint = cluster.members[0].client_url();
    let mut client = Client::connect([endpoint.clone()], None).await?;

    // Grant and fill with 32 concurrent clients; every lease is granted within a
    // couple of seconds so they expire (almost) together.
    let setup = Instant::now();
    let granted = Instant::now();
    let mut tasks = Vec::new();
    let workers = 32;
    for worker in 0..workers {
        let endpoint = endpoint.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect([endpoint], None).await?;
            let mut ids = Vec::new();
            for n in (worker..leases).step_by(workers as usize) {
                ids.push((n, client.lease_grant(ttl, None).await?.id()));
            }
            anyhow::Ok((client, ids))
        }));
    }
    let mut filled = Vec::new();
    for task in tasks {
        filled.push(task.await??);
    }
    let grant_time = setup.elapsed();
    let mut tasks = Vec::new();
    for (mut client, ids) in filled {
        tasks.push(tokio::spawn(async move {
            for (n, id) in ids {
                for k in 0..keys {
                    let options = PutOptions::new().with_lease(id);
                    client
                        .put(format!("leased/{n:05}/{k}"), "v", Some(options))
                        .await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let setup_time = setup.elapsed();
    println!(
        "{leases} leases (TTL {ttl} s) granted in {:.1} s, {} keys attached after {:.1} s",
        grant_time.as_secs_f64(),
        leases * keys,
        setup_time.as_secs_f64()
    );
    let expiry = granted + Duration::from_secs(ttl as u64);
    anyhow::ensure!(
        expiry > Instant::now() + Duration::from_secs(5),
        "setup took longer than the TTL allows: raise TTL"
    );

    // Baseline: until one second before the expiry.
    let stop = Arc::new(AtomicBool::new(false));
    let baseline = tokio::spawn(measure_puts(endpoint.clone(), writers, stop.clone()));
    sleep(expiry - Duration::from_secs(1) - Instant::now()).await;
    stop.store(true, Ordering::Relaxed);
    let baseline = baseline.await??;

    // During the expiry: until every leased key is gone.
    let stop = Arc::new(AtomicBool::new(false));
    let during = tokio::spawn(measure_puts(endpoint.clone(), writers, stop.clone()));
    sleep(expiry - Instant::now()).await;
    let expiry_started = Instant::now();
    let deadline = expiry_started + Duration::from_secs(120);
    let mut remaining = leased_keys(&mut client).await?;
    while remaining > 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(200)).await;
        remaining = leased_keys(&mut client).await?;
    }
    let revoke_time = expiry_started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let during = during.await??;
    println!(
        "all leased keys gone {:.1} s after the expiry ({} left)",
        revoke_time.as_secs_f64(),
        remaining
    );
    report("baseline", &baseline);
    report("during expiry", &during);
    anyhow::ensure!(remaining == 0, "leased keys left after 120 s");
    Ok(())
}
