//! Throughput and memory of the store with many keys (no fsync):
//! puts/s (in apply rounds of `ROUND` puts), point gets/s (in key order and in
//! random order, one thread; random again after a reopen, when tables are
//! loaded with the options of the level they now sit in), and resident memory
//! per key.
//!
//! Every rate is printed three times: per wall-clock second, per CPU-second of
//! the calling thread, and per CPU-second of all the process's threads (on a
//! shared machine wall time also counts the time other processes had the
//! core; the calling thread's CPU time leaves out fjall's flush and compaction
//! workers, which the last figure includes). Keys are written in
//! key order, so "key order" gets also walk the backend in revision order;
//! "random" gets touch a random backend block each time, and with 1,000,000
//! values of 256 random bytes (incompressible, ~330 MB on disk) most of them
//! miss the block cache and cost a `pread` from the OS page cache.
//!
//! RSS figures are growth over the process's RSS before the store was opened;
//! the benchmark's own buffers are allocated before that baseline, so what is
//! left is the store: key index, fjall block cache, memtables, allocator
//! slack. The store is in the state the put phase leaves it in (no forced
//! flush or compaction): what a server that just applied those writes has.
//!
//! `cargo bench -p concord-mvcc --bench store`. Environment: `KEYS` (default
//! 1,000,000), `BENCH_DIR` (where the store lives; default the temp dir),
//! `GETS=key-order|random` (one get phase only), `CACHE_MIB` and `MEMTABLE_MIB`
//! (override `StoreOptions::default()`, which is what the server uses), `SKIP_REOPEN`, `KEEP=<dir>` (keep
//! the store) and `OPEN_ONLY=<dir>` (only open a kept store in a fresh process).

use std::time::Instant;

use concord_mvcc::{Store, StoreOptions};
use concord_proto::etcdserverpb::{PutRequest, RangeRequest};
use rand::prelude::*;
use rand_chacha::ChaCha8Rng;

const VALUE_LEN: usize = 256;
const ROUND: usize = 1000;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// CPU time (ns) of a task, from the scheduler's accounting: on a shared
/// machine wall time also counts the time other processes had the core.
fn schedstat_cpu_ns(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn thread_cpu_ns() -> u64 {
    schedstat_cpu_ns("/proc/thread-self/schedstat".as_ref())
}

/// CPU time of every live thread of the process: the caller plus fjall's
/// flush and compaction workers.
fn process_cpu_ns() -> u64 {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(Result::ok)
                .map(|task| schedstat_cpu_ns(&task.path().join("schedstat")))
                .sum()
        })
        .unwrap_or(0)
}

struct Timer {
    wall: Instant,
    cpu: u64,
    process_cpu: u64,
}

impl Timer {
    fn start() -> Self {
        Self {
            wall: Instant::now(),
            cpu: thread_cpu_ns(),
            process_cpu: process_cpu_ns(),
        }
    }

    /// "N/s wall, M/s per CPU-second of this thread, P/s per CPU-second of the
    /// whole process".
    fn report(&self, name: &str, ops: usize) {
        let wall = self.wall.elapsed().as_secs_f64();
        let cpu = (thread_cpu_ns() - self.cpu) as f64 / 1e9;
        let process_cpu = process_cpu_ns().saturating_sub(self.process_cpu) as f64 / 1e9;
        println!(
            "{name}: {:.0}/s wall ({ops} in {wall:.2}s), {:.0}/s per CPU-second of the calling thread, {:.0}/s per CPU-second of all threads",
            ops as f64 / wall,
            ops as f64 / cpu.max(1e-9),
            ops as f64 / process_cpu.max(1e-9)
        );
    }
}

const KEY_PREFIX: &[u8] = b"/registry/k";
const KEY_DIGITS: usize = 10;

/// Writes key `i` (`/registry/k` and ten zero-padded digits) into `out`. The
/// get loops reuse one request, so what they time is the store, not `format!`.
fn write_key(out: &mut Vec<u8>, mut i: usize) {
    out.clear();
    out.extend_from_slice(KEY_PREFIX);
    out.resize(KEY_PREFIX.len() + KEY_DIGITS, b'0');
    for digit in out.iter_mut().rev().take(KEY_DIGITS) {
        *digit = b'0' + (i % 10) as u8;
        i /= 10;
    }
}

fn key(i: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(KEY_PREFIX.len() + KEY_DIGITS);
    write_key(&mut out, i);
    out
}

/// Gets every key of `order`, in that order, and reports the rate.
fn timed_gets(
    store: &Store,
    order: &[usize],
    name: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut req = RangeRequest {
        key: key(0),
        ..Default::default()
    };
    let timer = Timer::start();
    let mut bytes = 0usize;
    for &k in order {
        write_key(&mut req.key, k);
        let resp = store.range(&req)?;
        bytes += resp.kvs.first().map_or(0, |kv| kv.value.len());
    }
    timer.report(name, order.len());
    assert_eq!(bytes, order.len() * VALUE_LEN, "every key found");
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys: usize = std::env::var("KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    assert_eq!(
        key(1_234_567),
        format!("/registry/k{:010}", 1_234_567).into_bytes()
    );
    let key_len = key(0).len();
    // The server opens its store with `StoreOptions::default()`; these knobs
    // exist to explore other sizes.
    let mut opts = StoreOptions::default();
    let mib = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| v << 20)
    };
    if let Some(bytes) = mib("CACHE_MIB") {
        opts.cache_size_bytes = bytes;
    }
    if let Some(bytes) = mib("MEMTABLE_MIB") {
        opts.memtable_size_bytes = bytes;
    }
    // `OPEN_ONLY=<dir>`: only open a store a previous run kept (`KEEP=<dir>`) and
    // measure what the rebuilt key index costs in a fresh process.
    if let Ok(kept) = std::env::var("OPEN_ONLY") {
        let before = rss_bytes();
        let timer = Timer::start();
        let store = Store::open(std::path::Path::new(&kept), opts)?;
        let n = store.indexed_keys();
        timer.report("open (rebuild the key index)", n);
        let index = store.index_heap_bytes();
        println!(
            "key index heap: {:.1} B per key ({:.1} B beyond the {key_len}-byte key)",
            index as f64 / n as f64,
            index as f64 / n as f64 - key_len as f64
        );
        let grown = rss_bytes().saturating_sub(before) as f64 / n as f64;
        println!(
            "RSS growth per key after open: {grown:.0} B ({:.0} B beyond the {key_len}-byte key)",
            grown - key_len as f64
        );
        return Ok(());
    }
    let dir = match std::env::var("BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d)?,
        Err(_) => tempfile::tempdir()?,
    };
    println!(
        "keys: {keys}, key {key_len} B, value {VALUE_LEN} B, rounds of {ROUND}, block cache {} MiB, memtable {} MiB",
        opts.cache_size_bytes >> 20,
        opts.memtable_size_bytes >> 20
    );

    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut value = vec![0u8; VALUE_LEN];
    // Allocated (and touched) before the baseline: the get order is the
    // benchmark's memory, not the store's.
    let mut order: Vec<usize> = (0..keys).collect();

    let rss_start = rss_bytes();
    let store = Store::open(dir.path(), opts.clone())?;

    // Puts, in apply rounds like the server's.
    let timer = Timer::start();
    let mut i = 0;
    while i < keys {
        let mut batch = store.write_batch();
        for _ in 0..ROUND.min(keys - i) {
            rng.fill_bytes(&mut value);
            batch.put(&PutRequest {
                key: key(i),
                value: value.clone(),
                ..Default::default()
            })?;
            i += 1;
        }
        batch.set_applied_index(i as u64);
        batch.commit()?;
    }
    timer.report("put", keys);
    let rss_after_puts = rss_bytes();
    let index = store.index_heap_bytes();
    println!(
        "key index heap: {} MiB, {:.1} B per key ({:.1} B beyond the {key_len}-byte key)",
        index >> 20,
        index as f64 / keys as f64,
        index as f64 / keys as f64 - key_len as f64
    );

    // Point gets: in key order, then in random order.
    // `GETS=key-order` or `GETS=random` runs only one of the two (for profiling).
    let only = std::env::var("GETS").unwrap_or_default();
    for (name, shuffle) in [("get (key order)", false), ("get (random keys)", true)] {
        let phase = if shuffle { "random" } else { "key-order" };
        if !only.is_empty() && only != phase {
            continue;
        }
        if shuffle {
            order.shuffle(&mut rng);
        }
        timed_gets(&store, &order, name)?;
    }
    let rss_after_gets = rss_bytes();
    println!(
        "kv tables per level after the gets: {:?}",
        store.kv_tables_per_level()
    );

    // Overwrites of existing keys: each also reads the previous value for the
    // event's prev_kv.
    let updates = keys / 10;
    for (name, event_prev_kv, part) in [
        (
            "put (overwrite, random existing keys, events with prev_kv)",
            true,
            0,
        ),
        (
            "put (overwrite, random existing keys, events without prev_kv)",
            false,
            1,
        ),
    ] {
        let timer = Timer::start();
        for chunk in order[part * updates..(part + 1) * updates].chunks(ROUND) {
            let mut batch = store.write_batch();
            batch.set_event_prev_kv(event_prev_kv);
            for &k in chunk {
                rng.fill_bytes(&mut value);
                batch.put(&PutRequest {
                    key: key(k),
                    value: value.clone(),
                    ..Default::default()
                })?;
            }
            batch.commit()?;
        }
        timer.report(name, updates);
    }

    let per_key = |rss: u64| (rss.saturating_sub(rss_start)) as f64 / keys as f64;
    println!(
        "RSS growth per key after puts: {:.0} B ({:.0} B beyond the {key_len}-byte key)",
        per_key(rss_after_puts),
        per_key(rss_after_puts) - key_len as f64
    );
    println!(
        "RSS growth per key after gets: {:.0} B ({:.0} B beyond the key; includes the block cache)",
        per_key(rss_after_gets),
        per_key(rss_after_gets) - key_len as f64
    );

    if std::env::var("SKIP_REOPEN").is_ok() {
        return Ok(());
    }

    // Reopen: the key index is rebuilt from disk. The allocator keeps much of
    // what the closed store freed, so growth is measured from the process's
    // baseline (an upper bound); `OPEN_ONLY` measures a fresh process.
    drop(store);
    let started = Instant::now();
    let store = Store::open(dir.path(), opts)?;
    let open_secs = started.elapsed().as_secs_f64();
    let reopened = per_key(rss_bytes());
    println!(
        "reopen (index rebuild of {} keys): {open_secs:.2}s; RSS growth over the baseline {reopened:.0} B per key ({:.0} beyond the key)",
        store.indexed_keys(),
        reopened - key_len as f64
    );
    println!("db size on disk: {} MiB", store.db_size()? >> 20);
    // A reopened store loads its tables with the options of the levels they
    // sit in now, not the ones they were flushed with: reads must stay as
    // fast as before the restart.
    order.shuffle(&mut rng);
    timed_gets(
        &store,
        &order[..keys / 5],
        "get (random keys, after reopen; a fifth of the keys)",
    )?;
    println!(
        "kv tables per level after reopen: {:?}",
        store.kv_tables_per_level()
    );
    if let Ok(keep) = std::env::var("KEEP") {
        drop(store);
        std::fs::rename(dir.path(), &keep)?;
        println!("kept the store in {keep}");
    }
    Ok(())
}
