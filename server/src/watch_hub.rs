//! The member's watch hub: the [`concord_watch::Registry`] behind a mutex, fed by the
//! apply loop through an [`EventSink`], and two background threads: one fans published
//! events out to the watchers (so the apply loop hands a round's events over and answers
//! its clients at once, instead of matching and queueing for every watcher first), the
//! other catches unsynced watchers up from MVCC history (reading outside the lock, so
//! neither the apply loop nor other streams wait on disk) and runs the periodic progress
//! tick.
//!
//! Because events reach the registry a little after their writes were acknowledged, a
//! watch "from now" starts after the store's current revision, not after the last
//! published one ([`Registry::create_at`]): it never reports a write its client saw
//! acknowledged before creating it.
//!
//! Events come from the local apply loop only: a watch served by a follower keeps
//! delivering across leader changes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use concord_proto::etcdserverpb::WatchCreateRequest;
use concord_proto::mvccpb::{Event, KeyValue};
use concord_watch::{
    CatchUpOutcome, CatchUpTask, History, Limits, Registry, StreamId, StreamWaker,
};
use parking_lot::{Condvar, Mutex};

use crate::state::EventSink;
use crate::state::backend::Backend;

/// How often the catch-up thread looks at unsynced watchers without being asked
/// (etcd's sync interval).
const SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// At most one "watchers set aside" log line this often.
const SET_ASIDE_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// etcd's gRPC framing allowance on top of `--max-request-bytes`.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// What the apply loop handed over, in order, for the fan-out thread.
enum Handed {
    Events(Vec<Event>),
    StoreReplaced(i64),
}

#[derive(Default)]
struct FanOutQueue {
    handed: Vec<Handed>,
    /// The hub is gone: the fan-out thread ends.
    closed: bool,
}

/// Every watcher of the member.
pub struct WatchHub {
    registry: Mutex<Registry>,
    /// [`Registry::wants_prev_kv`] as of the last registry call, for the apply loop
    /// (which must not wait for the registry's lock).
    prev_kv_wanted: AtomicBool,
    /// [`Registry::has_streams`] as of the last registry call: without streams the apply
    /// loop publishes itself rather than wake the fan-out thread for nothing.
    streams_open: AtomicBool,
    fan_out: Arc<(Mutex<FanOutQueue>, Condvar)>,
    backend: Arc<Backend>,
    kicked: Mutex<bool>,
    kick_signal: Condvar,
    progress_interval: Duration,
    /// The set-aside count last logged, and when.
    reported_set_aside: Mutex<(u64, Instant)>,
}

/// History from whichever store is current (a snapshot may replace it): the store is
/// held for one read only, so a restore never waits on a watcher.
struct BackendHistory<'a>(&'a Backend);

impl History for BackendHistory<'_> {
    fn events(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_rev: i64,
        limit: usize,
        prev_kv: bool,
    ) -> Result<(Vec<Event>, i64), concord_mvcc::Error> {
        self.0
            .store()
            .events(key, range_end, start_rev, 0, limit, prev_kv)
    }

    fn compact_revision(&self) -> i64 {
        self.0.store().compact_revision()
    }

    fn kvs_at(
        &self,
        key: &[u8],
        range_end: &[u8],
        revision: i64,
    ) -> Result<Vec<KeyValue>, concord_mvcc::Error> {
        History::kvs_at(&**self.0.store(), key, range_end, revision)
    }
}

impl WatchHub {
    /// A hub for `backend` starting at its current revision, with its fan-out and
    /// catch-up threads (which end when the hub is dropped). `progress_interval` zero:
    /// no periodic progress notifications.
    pub fn start(
        backend: Arc<Backend>,
        max_request_bytes: u64,
        progress_interval: Duration,
    ) -> std::io::Result<Arc<WatchHub>> {
        let hub = WatchHub::without_threads(backend, max_request_bytes, progress_interval);
        let weak = Arc::downgrade(&hub);
        std::thread::Builder::new()
            .name("watch-sync".into())
            .spawn(move || run_catch_up(weak))?;
        let (weak, queue) = (Arc::downgrade(&hub), hub.fan_out.clone());
        std::thread::Builder::new()
            .name("watch-fanout".into())
            .spawn(move || run_fan_out(weak, queue))?;
        Ok(hub)
    }

    /// The hub alone: handed-over events wait for [`WatchHub::fan_out_now`] and
    /// unsynced watchers for [`WatchHub::catch_up_pass`] (tests drive both).
    fn without_threads(
        backend: Arc<Backend>,
        max_request_bytes: u64,
        progress_interval: Duration,
    ) -> Arc<WatchHub> {
        let limits = Limits {
            max_response_bytes: max_request_bytes as usize + GRPC_OVERHEAD_BYTES,
            ..Limits::default()
        };
        let current = backend.store().current_revision();
        Arc::new(WatchHub {
            registry: Mutex::new(Registry::new(limits, current)),
            prev_kv_wanted: AtomicBool::new(false),
            streams_open: AtomicBool::new(false),
            fan_out: Arc::default(),
            backend,
            kicked: Mutex::new(false),
            kick_signal: Condvar::new(),
            progress_interval,
            reported_set_aside: Mutex::new((0, Instant::now() - SET_ASIDE_LOG_INTERVAL)),
        })
    }

    /// Creates a watch on `stream` (etcd's create; a refusal is queued for the client).
    pub fn create(&self, stream: StreamId, request: &WatchCreateRequest) {
        // Read before the registry's lock: the store is at least at every revision
        // whose write has been acknowledged, published or not.
        let store_revision = self.backend.store().current_revision();
        self.with_registry(|registry| {
            // A refusal is queued for the client as etcd's canceled response.
            let _ = registry.create_at(stream, request, store_revision);
        });
    }

    /// Hands what the apply loop produced to the fan-out thread. With no stream open,
    /// publishing only advances the registry's revision: the apply loop does it at once
    /// instead of waking that thread (a context switch per round on every member). A
    /// stale answer is harmless either way: the same in-order publish runs on another
    /// thread.
    fn hand_over(&self, handed: Handed) {
        let (queue, signal) = &*self.fan_out;
        queue.lock().handed.push(handed);
        if self.streams_open.load(Ordering::Acquire) {
            signal.notify_one();
        } else {
            self.fan_out_now();
        }
    }

    /// Publishes what has been handed over and not yet published, in order. Taken
    /// under the registry's lock, so it never overtakes a batch the fan-out thread took.
    fn fan_out_now(&self) {
        self.with_registry(|registry| {
            let handed = std::mem::take(&mut self.fan_out.0.lock().handed);
            // Consecutive rounds go out as one publish: a watcher behind by several
            // gets them in one response.
            let mut events = Vec::new();
            for item in handed {
                match item {
                    Handed::Events(round) if events.is_empty() => events = round,
                    Handed::Events(round) => events.extend(round),
                    Handed::StoreReplaced(revision) => {
                        registry.publish(std::mem::take(&mut events));
                        registry.store_replaced(revision);
                    }
                }
            }
            registry.publish(events);
        });
    }

    /// The apply loop's side: every committed round's events.
    pub fn event_sink(self: &Arc<Self>) -> Box<dyn EventSink> {
        Box::new(HubSink(self.clone()))
    }

    pub fn open_stream(&self, waker: Box<dyn StreamWaker>) -> StreamId {
        let (stream, _) = self.locked(|registry| registry.open_stream(waker));
        stream
    }

    /// Runs `f` on the registry, then wakes the streams it queued responses for and
    /// the catch-up thread if watchers wait.
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        let (result, unsynced) = self.locked(f);
        if unsynced {
            self.kick();
        }
        result
    }

    /// Runs `f` on the registry and wakes the streams it queued responses for, after
    /// the lock is released (a sender woken under it would only wait for it); also says
    /// whether watchers wait for a catch-up.
    fn locked<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> (R, bool) {
        let (result, unsynced, wakes) = {
            let mut registry = self.registry.lock();
            let result = f(&mut registry);
            self.prev_kv_wanted
                .store(registry.wants_prev_kv(), Ordering::Release);
            self.streams_open
                .store(registry.has_streams(), Ordering::Release);
            (result, registry.has_unsynced(), registry.take_wakes())
        };
        for waker in wakes {
            waker.wake();
        }
        (result, unsynced)
    }

    /// Asks the catch-up thread for a pass now.
    pub fn kick(&self) {
        *self.kicked.lock() = true;
        self.kick_signal.notify_one();
    }

    /// One catch-up pass; `true` if some watcher moved.
    fn catch_up_pass(&self) -> bool {
        let tasks = self.registry.lock().take_catch_up();
        if tasks.is_empty() {
            return false;
        }
        let counts = self.registry.lock().counts();
        let watchers: usize = tasks.iter().map(CatchUpTask::watchers).sum();
        tracing::debug!(
            "watch catch-up of {watchers} watchers in {} reads; {counts:?}",
            tasks.len()
        );
        let mut reported = self.reported_set_aside.lock();
        if counts.set_aside > reported.0 && reported.1.elapsed() >= SET_ASIDE_LOG_INTERVAL {
            tracing::info!(
                "{} slow watchers set aside so far (their streams' buffers were full); \
                 they catch up from history",
                counts.set_aside
            );
            *reported = (counts.set_aside, Instant::now());
        }
        drop(reported);
        let mut moved = false;
        let history = BackendHistory(&self.backend);
        for task in tasks {
            let outcome = task.run(&history);
            if let CatchUpOutcome::Failed(error) = &outcome {
                tracing::warn!("watch catch-up read failed: {error}");
            } else {
                moved = true;
            }
            self.locked(|registry| registry.finish_catch_up(task, outcome));
        }
        moved
    }
}

struct HubSink(Arc<WatchHub>);

impl EventSink for HubSink {
    fn publish(&mut self, events: Vec<Event>) {
        self.0.hand_over(Handed::Events(events));
    }

    fn store_replaced(&mut self, current_revision: i64) {
        self.0.hand_over(Handed::StoreReplaced(current_revision));
    }

    fn wants_prev_kv(&self) -> bool {
        self.0.prev_kv_wanted.load(Ordering::Acquire)
    }
}

impl Drop for WatchHub {
    fn drop(&mut self) {
        let (queue, signal) = &*self.fan_out;
        queue.lock().closed = true;
        signal.notify_one();
    }
}

/// Publishes whatever the apply loop hands over, a batch at a time: rounds applied
/// while the previous fan-out ran go out together.
fn run_fan_out(hub: Weak<WatchHub>, queue: Arc<(Mutex<FanOutQueue>, Condvar)>) {
    let (state, signal) = &*queue;
    loop {
        {
            let mut state = state.lock();
            while state.handed.is_empty() && !state.closed {
                signal.wait(&mut state);
            }
            if state.closed {
                return;
            }
        }
        let Some(hub) = hub.upgrade() else {
            return;
        };
        hub.fan_out_now();
    }
}

fn run_catch_up(hub: Weak<WatchHub>) {
    let mut next_tick: Option<Instant> = None;
    let mut busy = false;
    loop {
        let Some(hub) = hub.upgrade() else {
            return;
        };
        let now = Instant::now();
        let tick_due = hub.progress_interval > Duration::ZERO;
        let next = *next_tick.get_or_insert(now + hub.progress_interval);
        if !busy {
            let mut kicked = hub.kicked.lock();
            if !*kicked {
                let wait = if tick_due {
                    SYNC_INTERVAL.min(next.saturating_duration_since(now))
                } else {
                    SYNC_INTERVAL
                };
                hub.kick_signal.wait_for(&mut kicked, wait);
            }
            *kicked = false;
        }
        if tick_due && Instant::now() >= next {
            hub.locked(Registry::progress_tick);
            next_tick = Some(Instant::now() + hub.progress_interval);
        }
        busy = hub.catch_up_pass();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_mvcc::StoreOptions;
    use concord_proto::etcdserverpb::{PutRequest, WatchResponse};

    fn put(backend: &Backend, key: &str, sink: &mut dyn EventSink) {
        let store = backend.store();
        let mut batch = store.write_batch();
        let (_, events) = batch
            .put(&PutRequest {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })
            .unwrap();
        batch.commit().unwrap();
        drop(store);
        sink.publish(events);
    }

    /// Publishes what the sink handed over, as the fan-out thread would.
    fn settle(hub: &WatchHub) {
        hub.fan_out_now();
    }

    fn revisions(responses: &[WatchResponse]) -> Vec<i64> {
        responses
            .iter()
            .flat_map(|r| r.events.iter())
            .map(|e| e.kv.as_ref().unwrap().mod_revision)
            .collect()
    }

    /// The apply loop hands events over and answers its clients before the fan-out
    /// thread publishes them: a watch created after that answer still starts after the
    /// write, published or not by then.
    #[test]
    fn a_watch_created_after_a_write_was_acknowledged_starts_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let backend =
            Arc::new(Backend::open(dir.path().join("db"), StoreOptions::default()).unwrap());
        // No fan-out thread: the events stay handed over, unpublished, until `settle`
        // (while some stream is open; see the next test).
        let hub = WatchHub::without_threads(backend.clone(), 1_572_864, Duration::ZERO);
        let _bystander = hub.open_stream(Box::new(|| {}));
        let mut sink = hub.event_sink();
        for round in 0..20 {
            put(&backend, "k", &mut *sink);
            let written = backend.store().current_revision();
            assert!(hub.with_registry(|registry| registry.revision()) < written);
            let stream = hub.open_stream(Box::new(|| {}));
            let create = WatchCreateRequest {
                key: b"k".to_vec(),
                ..Default::default()
            };
            hub.create(stream, &create);
            put(&backend, "k", &mut *sink);
            settle(&hub);
            let out = hub.with_registry(|registry| registry.drain(stream));
            assert!(out[0].created);
            assert_eq!(
                out[0].header.as_ref().unwrap().revision,
                written,
                "round {round}"
            );
            assert_eq!(revisions(&out), vec![written + 1], "round {round}");
            hub.with_registry(|registry| registry.close_stream(stream));
        }
    }

    /// Without a stream there is nobody to fan out to: the apply loop publishes itself
    /// (no thread to wake), and the first stream opened hands over to the thread again.
    #[test]
    fn without_streams_the_apply_loop_publishes_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let backend =
            Arc::new(Backend::open(dir.path().join("db"), StoreOptions::default()).unwrap());
        let hub = WatchHub::without_threads(backend.clone(), 1_572_864, Duration::ZERO);
        let mut sink = hub.event_sink();
        put(&backend, "k", &mut *sink);
        let written = backend.store().current_revision();
        assert_eq!(hub.with_registry(|registry| registry.revision()), written);

        let stream = hub.open_stream(Box::new(|| {}));
        put(&backend, "k", &mut *sink);
        assert_eq!(hub.with_registry(|registry| registry.revision()), written);
        settle(&hub);
        assert_eq!(
            hub.with_registry(|registry| registry.revision()),
            written + 1
        );

        hub.with_registry(|registry| registry.close_stream(stream));
        put(&backend, "k", &mut *sink);
        assert_eq!(
            hub.with_registry(|registry| registry.revision()),
            written + 2
        );
    }

    #[test]
    fn catch_up_reads_the_store_and_joins_the_apply_loops_events() {
        let dir = tempfile::tempdir().unwrap();
        let backend =
            Arc::new(Backend::open(dir.path().join("db"), StoreOptions::default()).unwrap());
        let hub = WatchHub::start(backend.clone(), 1_572_864, Duration::ZERO).unwrap();
        let mut sink = hub.event_sink();
        for _ in 0..5 {
            put(&backend, "k", &mut *sink);
        }
        settle(&hub);
        let first = backend.store().current_revision() - 4;
        let stream = hub.open_stream(Box::new(|| {}));
        hub.with_registry(|registry| {
            registry.create(
                stream,
                &WatchCreateRequest {
                    key: b"k".to_vec(),
                    start_revision: first,
                    ..Default::default()
                },
            )
        })
        .unwrap();
        // Written to the store, not yet published: the catch-up reads it, the
        // publish that follows must not repeat it.
        let store = backend.store();
        let mut batch = store.write_batch();
        let (_, late) = batch
            .put(&PutRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })
            .unwrap();
        batch.commit().unwrap();
        drop(store);
        // The background thread may take the catch-up first: wait for the state, not
        // for a time.
        while hub.registry.lock().counts().synced == 0 {
            hub.catch_up_pass();
            std::thread::yield_now();
        }
        sink.publish(late);
        put(&backend, "k", &mut *sink);
        settle(&hub);
        let out = hub.with_registry(|registry| registry.drain(stream));
        assert!(out[0].created);
        let current = backend.store().current_revision();
        assert_eq!(revisions(&out), (first..=current).collect::<Vec<_>>());
    }
}
