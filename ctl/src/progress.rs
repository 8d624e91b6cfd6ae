//! The progress bar `check perf` and `check datascale` draw on stdout, as
//! etcdctl 3.4 draws it with `gopkg.in/cheggaaa/pb.v1` (format `"Bom !"`):
//! the line is rewritten (`\r`) every 200 ms and once more, with the time
//! taken, when the bar finishes.
//!
//! pb sizes the bar to the width of the controlling terminal. Without one
//! (a pipe, a test, CI) its width is 0 and the line holds only the counters,
//! the percentage and the time left: ` 12 / 60  20.00% 00m48s`. That is the
//! form drawn here, always (concordctl does not ask the terminal its width).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// pb's `DEFAULT_REFRESH_RATE`.
const REFRESH: Duration = Duration::from_millis(200);

/// A bar counting up to `total`.
pub struct ProgressBar {
    total: u64,
    current: AtomicU64,
    started: Instant,
    /// When `current` last changed, as nanoseconds since `started`.
    changed_at: AtomicU64,
}

impl ProgressBar {
    /// Starts a bar and its refresher, which prints until [`ProgressBar::finish`].
    pub fn start(total: u64) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let bar = Arc::new(Self {
            total,
            current: AtomicU64::new(0),
            started: Instant::now(),
            changed_at: AtomicU64::new(0),
        });
        bar.print(&bar.line(false));
        let refresher = {
            let bar = bar.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(REFRESH).await;
                    bar.print(&bar.line(false));
                }
            })
        };
        (bar, refresher)
    }

    /// Counts `n` more.
    pub fn add(&self, n: u64) {
        self.current.fetch_add(n, Ordering::Relaxed);
        let since = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.changed_at.store(since, Ordering::Relaxed);
    }

    /// Stops the refresher and prints the final line, with the time taken.
    pub fn finish(&self, refresher: tokio::task::JoinHandle<()>) {
        refresher.abort();
        self.print(&self.line(true));
        println!();
    }

    fn print(&self, line: &str) {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r{line}");
        let _ = out.flush();
    }

    /// pb's line at width 0: counters, percentage, then the time left (or,
    /// finished, the time taken).
    fn line(&self, finished: bool) -> String {
        let current = self.current.load(Ordering::Relaxed);
        let changed_at = Duration::from_nanos(self.changed_at.load(Ordering::Relaxed));
        render(
            self.total,
            current,
            self.started.elapsed(),
            changed_at,
            finished,
        )
    }
}

/// One line of the bar: `elapsed` since the start, `changed_at` the time of
/// the last change (measured from the start).
fn render(
    total: u64,
    current: u64,
    elapsed: Duration,
    changed_at: Duration,
    finished: bool,
) -> String {
    let percent = if total > 0 {
        current as f64 / (total as f64 / 100.0)
    } else {
        current as f64 / 100.0
    };
    // pb's counters box ` %d / %d ` and percent box ` %6.02f%%`.
    let mut line = format!(" {current} / {total}  {:>6}%", format!("{percent:.2}"));
    if finished {
        let taken = Duration::from_secs(elapsed.as_secs());
        line.push(' ');
        line.push_str(&crate::gofmt::duration(taken));
    } else if current > 0 && total > 0 {
        let per_entry = changed_at / u32::try_from(current).unwrap_or(u32::MAX);
        let left = per_entry
            .saturating_mul(u32::try_from(total.saturating_sub(current)).unwrap_or(u32::MAX))
            .saturating_sub(elapsed.saturating_sub(changed_at));
        let left = Duration::from_secs(left.as_secs());
        if left > Duration::ZERO {
            line.push(' ');
            line.push_str(&format_time_left(left));
        }
    }
    line
}

/// pb's `formatDuration`: `[Nd][Nh]MMmSSs`.
fn format_time_left(d: Duration) -> String {
    let mut secs = d.as_secs();
    let mut out = String::new();
    const DAY: u64 = 86_400;
    if secs > DAY {
        out.push_str(&format!("{}d", secs / DAY));
        secs %= DAY;
    }
    if secs > 3600 {
        out.push_str(&format!("{}h", secs / 3600));
        secs %= 3600;
    }
    out.push_str(&format!("{:02}m{:02}s", secs / 60, secs % 60));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_look_like_pb_at_width_zero() {
        let s = Duration::from_secs;
        assert_eq!(render(60, 0, s(0), s(0), false), " 0 / 60    0.00%");
        // 12 of 60 in 12 s: 48 s left.
        assert_eq!(
            render(60, 12, s(12), s(12), false),
            " 12 / 60   20.00% 00m48s"
        );
        assert_eq!(
            render(60, 60, Duration::from_millis(60_400), s(60), true),
            " 60 / 60  100.00% 1m0s"
        );
        assert_eq!(
            render(10_000, 2_500, s(1), s(1), false),
            " 2500 / 10000   25.00% 00m03s"
        );
    }

    #[test]
    fn time_left_format() {
        assert_eq!(format_time_left(Duration::from_secs(75)), "01m15s");
        assert_eq!(format_time_left(Duration::from_secs(3_700)), "1h01m40s");
    }
}
