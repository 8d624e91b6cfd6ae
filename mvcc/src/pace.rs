//! Pacing a defragment's compaction: the rate at which it writes its new tables.
//!
//! A defragment rewrites the whole store at the speed of a CPU (about 400 MB/s of
//! tables on the 2-core test VM). The store's background thread already starts the
//! write-back of those tables as they grow (`write_behind`), so the disk gets them in
//! slices instead of one table at a time. But every raft log `fdatasync` ends in a
//! device cache flush, and that flush persists whatever reached the device before it:
//! at 400 MB/s that is most of what the disk can persist, so the puts' log fsyncs took
//! 3-7 ms at p99 and up to 29 ms during a defragment, against about 1 ms without one
//! (measured with `cargo xtask bench --defrag`). Nothing else would fix it: the tables
//! must reach the disk, and the log must flush.
//!
//! So while a defragment runs, compactions write at most [`DEFRAG_BYTES_PER_SEC`] of
//! live data, and the log's flushes find little of the defragment's data before them.
//! fjall has no rate limit of its own; it does call a compaction filter for every item
//! a compaction keeps, on the compaction's thread and with no lock held (lsm-tree
//! merges after it has let go of its compaction and version locks). [`PacingFilter`]
//! is such a filter: it keeps every item, and sleeps when the compactions of the
//! moment are ahead of the rate. Outside a defragment it costs one relaxed load per
//! item.
//!
//! The rate is shared by every compaction that runs while the defragment does (its
//! own, and any fjall starts in the background), through one [`Budget`].

use std::panic::RefUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use fjall::compaction::filter::{CompactionFilter, Context, Factory, ItemAccessor, Verdict};
use parking_lot::Mutex;

/// What a defragment's compactions may write per second (keys and values as stored,
/// before compression). About a quarter of what the test VM's disk persists per
/// second, and 2.5 s for the benchmark's 160 MiB of live data, where etcd's
/// defragment of the same store stops the world for 1.5-3 s.
pub const DEFRAG_BYTES_PER_SEC: u64 = 64 * 1024 * 1024;

/// How much a compaction may write ahead of the rate before it waits: small, so that
/// no flush of the raft log finds more of it than this.
const BURST: u64 = 1024 * 1024;

/// A filter charges the budget once per this many bytes, not per item.
const CHARGE_EVERY: u64 = 64 * 1024;

/// The rate every compaction shares; 0 while no defragment runs.
#[derive(Debug, Default)]
pub(crate) struct CompactionPace {
    bytes_per_sec: AtomicU64,
    budget: Mutex<Budget>,
    /// Bytes charged while paced, over the store's life.
    charged: AtomicU64,
    /// The thread whose compactions give up once `stopping` is set: the defragment's.
    /// Never a fjall worker's: an error in one of those poisons the database.
    paced_thread: Mutex<Option<ThreadId>>,
    stopping: AtomicBool,
}

impl CompactionPace {
    /// Paces compactions at `bytes_per_sec` until the guard is dropped; the calling
    /// thread's own compactions give up once [`CompactionPace::stop`] is called. One
    /// caller at a time (the store serializes defragments).
    pub(crate) fn paced(self: &Arc<Self>, bytes_per_sec: u64) -> PacedWhile {
        *self.budget.lock() = Budget::default();
        *self.paced_thread.lock() = Some(std::thread::current().id());
        self.bytes_per_sec.store(bytes_per_sec, Ordering::Release);
        PacedWhile(self.clone())
    }

    /// Makes the paced thread's running compaction fail at its next charge (the tables
    /// it was merging stay as they were; fjall deletes the unfinished output when the
    /// store opens again), and every later one at its first.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn rate(&self) -> u64 {
        self.bytes_per_sec.load(Ordering::Relaxed)
    }

    /// Records `bytes` written now; returns how long the writer must wait.
    fn charge(&self, bytes: u64) -> Duration {
        let rate = self.rate();
        if rate == 0 {
            return Duration::ZERO;
        }
        self.charged.fetch_add(bytes, Ordering::Relaxed);
        self.budget.lock().charge(Instant::now(), bytes, rate)
    }

    #[cfg(test)]
    pub(crate) fn charged(&self) -> u64 {
        self.charged.load(Ordering::Relaxed)
    }

    /// The factory to install for a keyspace whose compactions this paces.
    pub(crate) fn filter_factory(self: &Arc<Self>) -> Arc<dyn Factory> {
        Arc::new(PacingFactory(self.clone()))
    }
}

/// Compactions run unpaced again when this is dropped.
pub(crate) struct PacedWhile(Arc<CompactionPace>);

impl Drop for PacedWhile {
    fn drop(&mut self) {
        self.0.bytes_per_sec.store(0, Ordering::Release);
        *self.0.paced_thread.lock() = None;
    }
}

/// A virtual clock of the writes (the generic cell rate algorithm): each charge moves
/// `due` on by the time its bytes take at the rate, from no earlier than now; a writer
/// more than [`BURST`]'s worth of time ahead of the real clock waits for the
/// difference.
#[derive(Debug, Default)]
struct Budget {
    due: Option<Instant>,
}

impl Budget {
    fn charge(&mut self, now: Instant, bytes: u64, bytes_per_sec: u64) -> Duration {
        let cost = duration_of(bytes, bytes_per_sec);
        let allowance = duration_of(BURST, bytes_per_sec);
        let due = self.due.map_or(now, |due| due.max(now)) + cost;
        self.due = Some(due);
        due.saturating_duration_since(now).saturating_sub(allowance)
    }
}

fn duration_of(bytes: u64, bytes_per_sec: u64) -> Duration {
    Duration::from_nanos(
        u64::try_from(u128::from(bytes) * 1_000_000_000 / u128::from(bytes_per_sec.max(1)))
            .unwrap_or(u64::MAX),
    )
}

struct PacingFactory(Arc<CompactionPace>);

// Holds only atomics and a mutex that no code panics under.
impl RefUnwindSafe for PacingFactory {}

impl Factory for PacingFactory {
    fn name(&self) -> &str {
        "concord-defragment-pace"
    }

    fn make_filter(&self, _ctx: &Context) -> Box<dyn CompactionFilter> {
        // Called on the thread that runs the compaction.
        let on_paced_thread = *self.0.paced_thread.lock() == Some(std::thread::current().id());
        Box::new(PacingFilter {
            pace: self.0.clone(),
            unpaid: 0,
            on_paced_thread,
        })
    }
}

/// Keeps every item; waits when the compactions are ahead of the pace.
struct PacingFilter {
    pace: Arc<CompactionPace>,
    /// Bytes kept since the last charge.
    unpaid: u64,
    /// Whether this compaction runs on the defragment's thread (and may give up).
    on_paced_thread: bool,
}

impl CompactionFilter for PacingFilter {
    fn filter_item(
        &mut self,
        item: ItemAccessor<'_>,
        _ctx: &Context,
    ) -> fjall::compaction::filter::CompactionFilterResult {
        if self.pace.rate() == 0 {
            self.unpaid = 0;
            return Ok(Verdict::Keep);
        }
        let value_len = if item.is_indirection() {
            0
        } else {
            item.value()?.len()
        };
        self.unpaid += (item.key().len() + value_len) as u64;
        if self.unpaid >= CHARGE_EVERY {
            if self.on_paced_thread && self.pace.is_stopping() {
                return Err(std::io::Error::other("the store is closing").into());
            }
            let wait = self.pace.charge(std::mem::take(&mut self.unpaid));
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
        Ok(Verdict::Keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn a_writer_at_the_rate_never_waits_and_one_ahead_waits_for_the_difference() {
        let start = Instant::now();
        let mut budget = Budget::default();
        // 1 MiB per 1/64 s at 64 MiB/s: exactly the rate, never a wait.
        for i in 0..100u32 {
            let now = start + Duration::from_secs(1) / 64 * i;
            assert_eq!(
                budget.charge(now, MIB, 64 * MIB),
                Duration::ZERO,
                "charge {i}"
            );
        }
        // All at once: the first MiB is the burst, each further MiB waits 1/64 s more.
        let mut budget = Budget::default();
        let waits: Vec<Duration> = (0..4)
            .map(|_| budget.charge(start, MIB, 64 * MIB))
            .collect();
        let step = Duration::from_secs(1) / 64;
        assert_eq!(waits, vec![Duration::ZERO, step, step * 2, step * 3]);
    }

    #[test]
    fn time_spent_idle_is_not_saved_up_for_a_burst_later() {
        let start = Instant::now();
        let mut budget = Budget::default();
        budget.charge(start, MIB, 64 * MIB);
        // Ten idle seconds later, a burst is paced from then, not allowed ten seconds'
        // worth of bytes at once.
        let later = start + Duration::from_secs(10);
        budget.charge(later, MIB, 64 * MIB);
        assert_eq!(
            budget.charge(later, MIB, 64 * MIB),
            Duration::from_secs(1) / 64
        );
    }

    #[test]
    fn unpaced_charges_cost_nothing_and_the_guard_unpaces() {
        let pace = Arc::new(CompactionPace::default());
        assert_eq!(pace.charge(100 * MIB), Duration::ZERO);
        let paced = pace.paced(MIB);
        assert_eq!(pace.charge(MIB), Duration::ZERO);
        let wait = pace.charge(3 * MIB);
        assert!(wait > Duration::from_secs(2), "{wait:?}");
        drop(paced);
        assert_eq!(pace.charge(100 * MIB), Duration::ZERO);
        // Pacing again starts from a fresh budget.
        let _paced = pace.paced(MIB);
        assert_eq!(pace.charge(MIB), Duration::ZERO);
    }
}
