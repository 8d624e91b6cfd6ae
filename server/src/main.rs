//! `concord`: start one member of a Concord cluster, with etcd's flags.

use concord_server::config::{self, Invocation};

/// The request path allocates small buffers on one thread and frees them on another
/// (decoded on an async worker, applied on the raft thread), where glibc's malloc takes its
/// slow paths. With mimalloc, 200 clients' puts on 3 members cost 15-20% less server CPU
/// and each member's RSS fell from ~31-38 MiB to ~20-26 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` in the v3 library that libmimalloc-sys 0.1.49 builds
/// (its `mimalloc.h`; the sys crate names no constant for it). A test checks that this
/// option number holds the purge delay's default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed memory before giving it back to the OS.
const PURGE_DELAY_MS: std::ffi::c_long = 100;
/// How often an async worker asks mimalloc to give back what has waited past the delay.
const COLLECT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Gives freed memory back to the OS soon after it is freed. mimalloc's purge delay is
/// not a timer: it is checked only when a thread allocates or collects, so after a burst
/// (1,000 watch streams served, then closed) the idle worker threads kept every page with
/// the default delay (1 s): RSS stayed 16 MiB above idle twenty seconds after 1,000
/// streams closed, 131 MiB after 10,000. A delay of 0 gave it back at once, but under
/// load it returned and refaulted the same pages all the time (200 clients' puts on 3
/// members: 0.23 madvise calls and 1.4 page faults per put, against 0.02 and 0.13). A
/// short delay keeps the pages a busy member reuses, and [`collect_freed_memory`] gives
/// back the rest within a second or so of going idle. `MIMALLOC_PURGE_DELAY` in the
/// environment still decides if set.
#[allow(unsafe_code)]
fn set_purge_delay() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets one entry of mimalloc's option table, which is not thread safe: this
    // runs first in `main`, before any other thread of ours exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}

/// Every [`COLLECT_INTERVAL`], collects this worker's freed pages and purges what has
/// waited past the delay in every thread's arenas (mimalloc's arenas are shared).
#[allow(unsafe_code)]
async fn collect_freed_memory() {
    let mut interval = tokio::time::interval(COLLECT_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        // SAFETY: mimalloc's collect may be called from any thread at any time.
        unsafe { libmimalloc_sys::mi_collect(false) }
    }
}

fn main() {
    set_purge_delay();
    let invocation = match config::from_process() {
        Ok(invocation) => invocation,
        Err(error) => {
            eprintln!("{error}");
            eprintln!("See 'concord --help'.");
            std::process::exit(2);
        }
    };
    let config = match invocation {
        Invocation::PrintHelp => {
            print!("{}", config::flags::usage());
            return;
        }
        Invocation::PrintVersion => {
            println!("concord Version: {}", env!("CARGO_PKG_VERSION"));
            println!("etcd API Version: {}", concord_server::grpc::ETCD_VERSION);
            return;
        }
        Invocation::Run(config) => config,
    };
    init_logging(&config.log_level);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(async_worker_threads());
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("concord: cannot start the async runtime: {error}");
            std::process::exit(1);
        }
    };
    runtime.spawn(collect_freed_memory());
    if let Err(error) = runtime.block_on(concord_server::member::run_until_signal(*config)) {
        tracing::error!("{error}");
        std::process::exit(1);
    }
}

/// One core is left to the raft driver thread, which is busy under any write load (it
/// appends, fsyncs and applies): with as many async workers as cores, a woken worker
/// and the driver keep preempting each other. On two cores the single worker also saves
/// the cross-worker wake-ups and work stealing of every request's hops (single-client
/// put through a follower, p50: 1.42/1.86 ms -> 1.21/1.60 ms side by side). tokio's
/// `TOKIO_WORKER_THREADS` still overrides.
fn async_worker_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |cores| cores.get().saturating_sub(1))
        .max(1)
}

fn init_logging(level: &str) {
    let level = match level {
        "debug" => "debug",
        "warn" => "warn",
        "error" | "panic" | "fatal" => "error",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONCORD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

#[cfg(test)]
mod tests {
    /// The option number is mimalloc's purge delay: v3 gives it a default of 1000 ms,
    /// which no other option has.
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_option_number_is_mimallocs() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads one entry of mimalloc's option table; nothing in this test
        // binary sets options.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, 1000);
    }
}
