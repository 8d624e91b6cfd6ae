//! What one large compaction costs the thread that applies it (the server's apply
//! thread): `REVISIONS` revisions (default 200,000) written as `KEYS` keys (default
//! 20,000) overwritten in turn with 256-byte values, the store reopened (so the key
//! index and the block cache start as a restarted member's do), then one compaction
//! at the newest revision, which removes all but each key's last revision. Prints
//! the wall time and the calling thread's CPU time of the compaction's commit (the
//! machine may be shared: the CPU time is the figure that does not count other
//! processes' turns on the core), and the in-use size before and after.
//!
//! `cargo bench -p concord-mvcc --bench compact`. The store uses the server's cache
//! and memtable sizes (1 MiB, 1.5 MiB). `BENCH_DIR`: where the store lives.

use std::time::Instant;

use concord_mvcc::{Store, StoreOptions};
use concord_proto::etcdserverpb::PutRequest;

const VALUE_LEN: usize = 256;
const ROUND: usize = 1000;

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let revisions = env_number("REVISIONS", 200_000);
    let keys = env_number("KEYS", 20_000).max(1);
    let base = match std::env::var("BENCH_DIR") {
        Ok(dir) => tempfile::tempdir_in(dir)?,
        Err(_) => tempfile::tempdir()?,
    };
    let options = StoreOptions {
        cache_size_bytes: 1024 * 1024,
        memtable_size_bytes: 1536 * 1024,
        ..StoreOptions::default()
    };
    {
        let store = Store::open(base.path(), options.clone())?;
        let mut put = PutRequest {
            value: vec![0x5a; VALUE_LEN],
            ..Default::default()
        };
        let mut written = 0;
        while written < revisions {
            let mut batch = store.write_batch();
            for _ in 0..ROUND.min(revisions - written) {
                put.key = format!("/registry/k{:010}", written % keys).into_bytes();
                put.value[..8].copy_from_slice(&(written as u64).to_be_bytes());
                batch.put(&put)?;
                written += 1;
            }
            batch.commit()?;
        }
        store.persist()?;
    }
    let store = Store::open(base.path(), options)?;
    let at = store.current_revision();
    let in_use_before = store.db_size_in_use();
    let wall = Instant::now();
    let cpu = thread_cpu_ns();
    let mut batch = store.write_batch();
    batch.compact(at)?;
    batch.commit()?;
    let cpu = (thread_cpu_ns() - cpu) as f64 / 1e6;
    let wall = wall.elapsed().as_secs_f64() * 1e3;
    println!(
        "compact at {at} over {revisions} revisions of {keys} keys (removing {} revisions): {wall:.0} ms wall, {cpu:.0} ms CPU of the applying thread; in use {in_use_before} -> {} bytes",
        revisions - keys.min(revisions),
        store.db_size_in_use()
    );
    Ok(())
}
