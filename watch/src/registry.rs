//! The registry of every watcher of a member, its streams' outgoing queues, and the
//! synced / unsynced bookkeeping. Single-threaded: the server wraps it in a mutex and
//! does the slow part of a catch-up (reading history) outside of it.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use concord_proto::etcdserverpb::{RangeRequest, WatchCreateRequest, WatchResponse};
use concord_proto::mvccpb::{Event, KeyValue, event::EventType};

use crate::error::Error;
use crate::fragment::fragment;
use crate::interval::End;
use crate::synced::SyncedIndex;
use crate::wire::{Events, Outgoing, WireEvent};

/// One client's bidirectional watch stream.
pub type StreamId = u64;

/// How big things may get.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Responses larger than this are split: between revisions always, inside one
    /// revision's events only for watchers created with `fragment` (etcd:
    /// `--max-request-bytes` plus 512 KiB of gRPC overhead).
    pub max_response_bytes: usize,
    /// Event responses a stream may have queued before its watchers are set aside to
    /// catch up from history later (control responses are never refused); etcd's
    /// `chanBufLen`...
    pub stream_queue_messages: usize,
    /// ...plus this many for each watcher of the stream. Every write a stream's watchers
    /// all match queues one response per watcher: with a fixed allowance, a stream of a
    /// hundred watchers would be set aside as soon as its client fell two writes behind,
    /// and each of them re-read from history what was already encoded and in memory.
    pub stream_queue_per_watcher: usize,
    /// Revisions one catch-up step reads for one watcher (etcd's `watchBatchMaxRevs`).
    pub catch_up_revisions: usize,
    /// Watchers one catch-up pass takes (etcd's `maxWatchersPerSync`).
    pub catch_up_watchers: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_response_bytes: 1_572_864 + 512 * 1024,
            stream_queue_messages: 128,
            stream_queue_per_watcher: 16,
            catch_up_revisions: 1000,
            catch_up_watchers: 512,
        }
    }
}

/// Where a catch-up reads history from: the MVCC store (or a stand-in in tests).
pub trait History {
    /// Events with `mod_revision >= start_rev` on `[key, range_end)` (etcd's range
    /// conventions) covering at most `limit` revisions, and the next revision to read.
    fn events(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_rev: i64,
        limit: usize,
        prev_kv: bool,
    ) -> Result<(Vec<Event>, i64), concord_mvcc::Error>;
    fn compact_revision(&self) -> i64;
    /// The key-values of `[key, range_end)` as of `revision` (a Range at that revision).
    fn kvs_at(
        &self,
        key: &[u8],
        range_end: &[u8],
        revision: i64,
    ) -> Result<Vec<KeyValue>, concord_mvcc::Error>;
}

impl History for concord_mvcc::Store {
    fn events(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_rev: i64,
        limit: usize,
        prev_kv: bool,
    ) -> Result<(Vec<Event>, i64), concord_mvcc::Error> {
        concord_mvcc::Store::events(self, key, range_end, start_rev, 0, limit, prev_kv)
    }
    fn compact_revision(&self) -> i64 {
        concord_mvcc::Store::compact_revision(self)
    }
    fn kvs_at(
        &self,
        key: &[u8],
        range_end: &[u8],
        revision: i64,
    ) -> Result<Vec<KeyValue>, concord_mvcc::Error> {
        let request = RangeRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            revision,
            ..Default::default()
        };
        Ok(self.range(&request)?.kvs)
    }
}

/// Hashes stream ids, which the registry hands out in sequence and looks up once per
/// delivery: a multiply spreads them well enough, at a fraction of SipHash's cost (no
/// client chooses them).
#[derive(Default)]
struct StreamIdHasher(u64);

impl Hasher for StreamIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(FIBONACCI);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(FIBONACCI);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// 2^64 / the golden ratio.
const FIBONACCI: u64 = 0x9e37_79b9_7f4a_7c15;

/// Wakes the task that sends a stream's queued responses.
pub trait StreamWaker: Send + Sync {
    fn wake(&self);
}

impl<F: Fn() + Send + Sync> StreamWaker for F {
    fn wake(&self) {
        self()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Receives published events directly.
    Synced,
    /// Behind: waits for a catch-up from history.
    Unsynced,
    /// A catch-up task is out for it.
    CatchingUp,
    /// Its start revision was compacted away; canceled, the id stays taken (as etcd).
    Compacted,
}

struct Watcher {
    stream: StreamId,
    id: i64,
    /// Tells a catch-up result for this watcher from one for a former occupant of the slot.
    serial: u64,
    key: Vec<u8>,
    /// `None`: the single key.
    end: Option<End>,
    /// The range end as the client sent it (after etcd's normalisation), for history reads.
    range_end: Vec<u8>,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    fragment: bool,
    progress_notify: bool,
    /// No events since the last progress tick (etcd's per-watcher progress flag).
    progress_due: bool,
    /// The first revision this watcher has not been given yet: a synced watcher skips
    /// published events below it (the catch-up seam), an unsynced one resumes there.
    next_rev: i64,
    state: State,
}

impl Watcher {
    fn wants(&self, event: &Event) -> bool {
        match EventType::try_from(event.r#type) {
            Ok(EventType::Put) => !self.no_put,
            Ok(EventType::Delete) => !self.no_delete,
            Err(_) => true,
        }
    }

    /// The event as this watcher sees it (prev_kv only if asked for), encoded.
    fn view(&self, event: &Event) -> WireEvent {
        WireEvent::encode(event, self.prev_kv)
    }
}

struct Stream {
    queue: VecDeque<Outgoing>,
    /// Event (not control) responses in `queue`.
    queued_events: usize,
    waker: Arc<dyn StreamWaker>,
    watchers: HashMap<i64, usize>,
    next_auto_id: i64,
    /// A progress request waits for every watcher of the stream to be synced.
    deferred_progress: bool,
}

/// Work for a catch-up: one read of a key or range from history, from the lowest start,
/// shared by every unsynced watcher of that same key or range (etcd reads once for all
/// its unsynced watchers too): a thousand watchers of one prefix that fell behind
/// together cost one history read and one encoding per event, not a thousand.
#[derive(Clone, Debug)]
pub struct CatchUpTask {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// Whether any of the watchers wants previous values.
    pub prev_kv: bool,
    pub limit: usize,
    watchers: Vec<CatchUpWatcher>,
}

/// One watcher of a [`CatchUpTask`].
#[derive(Clone, Debug)]
struct CatchUpWatcher {
    slot: usize,
    /// Tells a catch-up result for this watcher from one for a former occupant of the slot.
    serial: u64,
    /// The first revision this watcher still needs.
    start_rev: i64,
}

/// What a catch-up read found.
#[derive(Debug)]
pub enum CatchUpOutcome {
    /// History from the lowest start at or above `compact_revision` up to (excluding)
    /// `next`; the task's watchers that start below `compact_revision` are canceled.
    Events {
        events: Vec<Event>,
        next: i64,
        compact_revision: i64,
    },
    /// Every watcher of the task starts below the compaction point.
    Compacted { compact_revision: i64 },
    /// The read failed; the watcher is retried later.
    Failed(concord_mvcc::Error),
}

impl CatchUpTask {
    /// How many watchers the task catches up.
    pub fn watchers(&self) -> usize {
        self.watchers.len()
    }

    /// Reads the task's history. Runs without the registry's lock.
    pub fn run(&self, history: &dyn History) -> CatchUpOutcome {
        let compact = history.compact_revision();
        // etcd cancels watchers whose start is strictly below the compact revision;
        // at the compact revision itself history resumes right after it.
        let Some(from) = self
            .watchers
            .iter()
            .map(|w| w.start_rev)
            .filter(|&start| start >= compact)
            .min()
        else {
            return CatchUpOutcome::Compacted {
                compact_revision: compact,
            };
        };
        // What compaction kept of the compact revision itself (its puts still live
        // there) is delivered too, as etcd does; their previous values are gone.
        let mut kept = Vec::new();
        if compact > 0 && from == compact {
            match history.kvs_at(&self.key, &self.range_end, compact) {
                Ok(kvs) => kept.extend(
                    kvs.into_iter()
                        .filter(|kv| kv.mod_revision == compact)
                        .map(|kv| Event {
                            r#type: EventType::Put as i32,
                            kv: Some(kv),
                            prev_kv: None,
                        }),
                ),
                Err(concord_mvcc::Error::Compacted) => {
                    return CatchUpOutcome::Compacted {
                        compact_revision: history.compact_revision(),
                    };
                }
                Err(error) => return CatchUpOutcome::Failed(error),
            }
        }
        let start = from.max(compact + 1);
        match history.events(&self.key, &self.range_end, start, self.limit, self.prev_kv) {
            Ok((events, next)) => {
                kept.extend(events);
                CatchUpOutcome::Events {
                    events: kept,
                    next,
                    compact_revision: compact,
                }
            }
            Err(concord_mvcc::Error::Compacted) => CatchUpOutcome::Compacted {
                compact_revision: history.compact_revision(),
            },
            Err(error) => CatchUpOutcome::Failed(error),
        }
    }
}

/// Counts for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub streams: usize,
    pub watchers: usize,
    pub synced: usize,
    pub unsynced: usize,
    /// Times a synced watcher was set aside because its stream's queue was full.
    pub set_aside: u64,
}

/// Every watcher of a member. See the crate documentation for the protocol.
pub struct Registry {
    limits: Limits,
    slots: Vec<Option<Watcher>>,
    free_slots: Vec<usize>,
    next_serial: u64,
    next_stream: StreamId,
    streams: HashMap<StreamId, Stream, BuildHasherDefault<StreamIdHasher>>,
    /// Synced watchers by key and by range.
    synced: SyncedIndex,
    /// Watchers waiting for a catch-up (not those with one out).
    unsynced: BTreeSet<usize>,
    deferred_progress_streams: usize,
    set_aside_total: u64,
    /// Scratch tables of `publish`, kept to spare allocations.
    matched_at: Vec<usize>,
    matched: Vec<(usize, Events)>,
    hits: Vec<usize>,
    hit_groups: Vec<usize>,
    /// Streams `deliver` queued responses for since they were last woken.
    woken: Vec<StreamId>,
    /// Wake-ups due, for the caller to make once it has let go of the registry.
    due_wakes: Vec<Arc<dyn StreamWaker>>,
    /// Watchers (in any state) that asked for previous values.
    prev_kv_watchers: usize,
    /// The revision of the last published event: everything up to it has been offered
    /// to the synced watchers.
    last_published: i64,
}

fn revision_of(event: &Event) -> i64 {
    event.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

impl Registry {
    /// A registry for a store whose current revision is `current_revision`.
    pub fn new(limits: Limits, current_revision: i64) -> Registry {
        Registry {
            limits,
            slots: Vec::new(),
            free_slots: Vec::new(),
            next_serial: 1,
            next_stream: 1,
            streams: HashMap::default(),
            synced: SyncedIndex::default(),
            unsynced: BTreeSet::new(),
            deferred_progress_streams: 0,
            set_aside_total: 0,
            matched_at: Vec::new(),
            matched: Vec::new(),
            hits: Vec::new(),
            hit_groups: Vec::new(),
            woken: Vec::new(),
            due_wakes: Vec::new(),
            prev_kv_watchers: 0,
            last_published: current_revision,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The revision up to which events have been published.
    pub fn revision(&self) -> i64 {
        self.last_published
    }

    pub fn counts(&self) -> Counts {
        let watchers = self.slots.iter().flatten().count();
        let synced = self
            .slots
            .iter()
            .flatten()
            .filter(|w| w.state == State::Synced)
            .count();
        Counts {
            streams: self.streams.len(),
            watchers,
            synced,
            unsynced: self
                .slots
                .iter()
                .flatten()
                .filter(|w| matches!(w.state, State::Unsynced | State::CatchingUp))
                .count(),
            set_aside: self.set_aside_total,
        }
    }

    /// Whether any stream is open. Without one, publishing only moves the published
    /// revision forward.
    pub fn has_streams(&self) -> bool {
        !self.streams.is_empty()
    }

    /// Whether some watcher waits for a catch-up.
    pub fn has_unsynced(&self) -> bool {
        !self.unsynced.is_empty()
    }

    /// Whether any watcher asked for previous values. When none did, the writer may
    /// publish events without them (fetching a previous value costs a store read per
    /// overwrite). A watcher created meanwhile that meets such an event is sent back to
    /// history for it, whose events carry previous values: it never misses one.
    pub fn wants_prev_kv(&self) -> bool {
        self.prev_kv_watchers > 0
    }

    /// Opens a stream; `waker` is due whenever its queue goes from empty to not (see
    /// [`Registry::take_wakes`]).
    pub fn open_stream(&mut self, waker: Box<dyn StreamWaker>) -> StreamId {
        let waker: Arc<dyn StreamWaker> = Arc::from(waker);
        let id = self.next_stream;
        self.next_stream += 1;
        self.streams.insert(
            id,
            Stream {
                queue: VecDeque::new(),
                queued_events: 0,
                waker,
                watchers: HashMap::new(),
                next_auto_id: 0,
                deferred_progress: false,
            },
        );
        id
    }

    /// Closes a stream and frees all its watchers.
    pub fn close_stream(&mut self, stream: StreamId) {
        let Some(state) = self.streams.remove(&stream) else {
            return;
        };
        if state.deferred_progress {
            self.deferred_progress_streams -= 1;
        }
        for slot in state.watchers.into_values() {
            self.free_watcher(slot);
        }
    }

    /// Moves every response queued for `stream`, oldest first, to the end of `out`.
    /// An empty `out` trades buffers with the queue: nothing is copied.
    pub fn drain_into(&mut self, stream: StreamId, out: &mut VecDeque<Outgoing>) {
        if let Some(state) = self.streams.get_mut(&stream) {
            state.queued_events = 0;
            if out.is_empty() {
                std::mem::swap(out, &mut state.queue);
            } else {
                out.extend(state.queue.drain(..));
            }
        }
    }

    /// Takes every response queued for `stream`, oldest first, as messages (their
    /// events decoded again: for tests and callers off the hot path).
    pub fn drain(&mut self, stream: StreamId) -> Vec<WatchResponse> {
        let mut out = VecDeque::new();
        self.drain_into(stream, &mut out);
        out.iter()
            .map(|response| {
                response
                    .to_response()
                    .expect("the registry's own encoding decodes")
            })
            .collect()
    }

    /// etcd's create: queues the `created` response (or `created` + `canceled` with
    /// the reason) and returns the watch id.
    pub fn create(&mut self, stream: StreamId, request: &WatchCreateRequest) -> Result<i64, Error> {
        self.create_at(stream, request, self.last_published)
    }

    /// [`Registry::create`] on a member whose store is at `store_revision`, which may be
    /// ahead of the published revision (committed writes whose events are still on their
    /// way to [`Registry::publish`]): a watch from "now" starts after `store_revision`, so
    /// it never reports a write that was acknowledged before the watch was created.
    pub fn create_at(
        &mut self,
        stream: StreamId,
        request: &WatchCreateRequest,
        store_revision: i64,
    ) -> Result<i64, Error> {
        let now = store_revision.max(self.last_published);
        let result = self.try_create(stream, request, now);
        if let Err(error) = &result
            && !matches!(error, Error::UnknownStream(_))
        {
            let response = Outgoing {
                revision: now,
                watch_id: -1,
                created: true,
                canceled: true,
                cancel_reason: error.to_string(),
                ..Default::default()
            };
            self.push_control(stream, response);
        }
        result
    }

    fn try_create(
        &mut self,
        stream: StreamId,
        request: &WatchCreateRequest,
        now: i64,
    ) -> Result<i64, Error> {
        // etcd's normalisation: an empty key is "\0", the smallest key; a range end
        // of "\0" means every key from `key` on.
        let key = if request.key.is_empty() {
            vec![0]
        } else {
            request.key.clone()
        };
        let end = match request.range_end.as_slice() {
            [] => None,
            [0] => Some(End::Unbounded),
            bytes => Some(End::Before(bytes.to_vec())),
        };
        if let Some(End::Before(end)) = &end
            && key >= *end
        {
            return Err(Error::EmptyRange);
        }
        let state = self
            .streams
            .get_mut(&stream)
            .ok_or(Error::UnknownStream(stream))?;
        let id = if request.watch_id == 0 {
            while state.watchers.contains_key(&state.next_auto_id) {
                state.next_auto_id += 1;
            }
            let id = state.next_auto_id;
            state.next_auto_id += 1;
            id
        } else if state.watchers.contains_key(&request.watch_id) {
            return Err(Error::DuplicateId);
        } else {
            request.watch_id
        };
        let start = if request.start_revision == 0 {
            now + 1
        } else {
            request.start_revision
        };
        let mut no_put = false;
        let mut no_delete = false;
        for &filter in &request.filters {
            match filter {
                0 => no_put = true,
                1 => no_delete = true,
                _ => {}
            }
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        let watcher = Watcher {
            stream,
            id,
            serial,
            key,
            end,
            range_end: request.range_end.clone(),
            no_put,
            no_delete,
            prev_kv: request.prev_kv,
            fragment: request.fragment,
            progress_notify: request.progress_notify,
            progress_due: true,
            next_rev: start,
            state: State::Unsynced,
        };
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.slots[slot] = Some(watcher);
                slot
            }
            None => {
                self.slots.push(Some(watcher));
                self.slots.len() - 1
            }
        };
        state.watchers.insert(id, slot);
        if request.prev_kv {
            self.prev_kv_watchers += 1;
        }
        self.push_control(
            stream,
            Outgoing {
                revision: now,
                watch_id: id,
                created: true,
                ..Default::default()
            },
        );
        if start > self.last_published {
            self.make_synced(slot);
        } else {
            self.unsynced.insert(slot);
        }
        Ok(id)
    }

    /// etcd's cancel: `true` (and a `canceled` response queued) if the watcher existed.
    pub fn cancel(&mut self, stream: StreamId, watch_id: i64) -> bool {
        let Some(slot) = self
            .streams
            .get_mut(&stream)
            .and_then(|s| s.watchers.remove(&watch_id))
        else {
            return false;
        };
        self.free_watcher(slot);
        self.push_control(
            stream,
            Outgoing {
                revision: self.last_published,
                watch_id,
                canceled: true,
                ..Default::default()
            },
        );
        self.check_deferred_progress();
        true
    }

    /// A progress request: answered with watch id -1 at the published revision once
    /// every watcher of the stream is synced (deferred until then).
    pub fn request_progress(&mut self, stream: StreamId) {
        let ready = self.stream_synced(stream);
        let Some(state) = self.streams.get_mut(&stream) else {
            return;
        };
        if ready {
            let response = Outgoing {
                revision: self.last_published,
                watch_id: -1,
                ..Default::default()
            };
            self.push_control(stream, response);
        } else if !state.deferred_progress {
            state.deferred_progress = true;
            self.deferred_progress_streams += 1;
        }
    }

    /// The periodic progress notification (etcd's progress ticker): every synced
    /// watcher created with `progress_notify` that got no events since the previous
    /// tick gets an empty response at the published revision.
    pub fn progress_tick(&mut self) {
        let revision = self.last_published;
        for watcher in self.slots.iter_mut().flatten() {
            if !watcher.progress_notify {
                continue;
            }
            if watcher.progress_due
                && watcher.state == State::Synced
                && let Some(stream) = self.streams.get_mut(&watcher.stream)
                // Like etcd, a watcher whose buffer is full is busy receiving events:
                // it needs no progress notification.
                && stream.queued_events < queue_limit(&self.limits, stream)
            {
                push_and_wake(
                    &mut self.due_wakes,
                    stream,
                    Outgoing {
                        revision,
                        watch_id: watcher.id,
                        ..Default::default()
                    },
                    true,
                );
            }
            watcher.progress_due = true;
        }
    }

    /// The store was replaced by a snapshot whose current revision is `current_revision`:
    /// the revisions between the last published one and it will never be published, so
    /// every synced watcher resumes from the new store's history, each at the first
    /// revision it has not been sent (its own start may lie beyond the old revision).
    pub fn store_replaced(&mut self, current_revision: i64) {
        if current_revision <= self.last_published {
            return;
        }
        let synced: Vec<(usize, i64)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(slot, w)| {
                w.as_ref()
                    .filter(|w| w.state == State::Synced)
                    .map(|w| (slot, w.next_rev))
            })
            .collect();
        let first_unsent = self.last_published + 1;
        for (slot, next_rev) in synced {
            self.set_aside(slot, next_rev.max(first_unsent));
        }
        self.last_published = current_revision;
    }

    /// The events of one or more committed revisions, in revision order: offered to
    /// every synced watcher whose range holds their keys.
    pub fn publish(&mut self, events: Vec<Event>) {
        let Some(first) = events.first().map(revision_of) else {
            return;
        };
        let last = events.last().map_or(first, revision_of);
        if last <= self.last_published {
            return;
        }
        if first > self.last_published + 1 {
            // Revisions went missing: the store was replaced by a snapshot and nobody
            // said so. These events are in the new store's history too.
            self.store_replaced(last);
            return;
        }
        // Watchers in first-match order, each with its events; `matched_at[slot]` is the
        // watcher's place in `matched` (a reused table: no hashing per delivery).
        let mut matched = std::mem::take(&mut self.matched);
        self.matched_at.resize(self.slots.len(), usize::MAX);
        let mut hits = std::mem::take(&mut self.hits);
        // Watchers that want a previous value an event was published without, and the
        // revision they resume at from history.
        let mut lacking: Vec<(usize, i64)> = Vec::new();
        for event in &events {
            let revision = revision_of(event);
            // Encoded at most once per shape, on first use, then shared by every
            // watcher that gets it.
            let mut with_prev_kv: Option<WireEvent> = None;
            let mut without_prev_kv: Option<WireEvent> = None;
            if revision <= self.last_published {
                continue;
            }
            let Some(key) = event.kv.as_ref().map(|kv| kv.key.as_slice()) else {
                continue;
            };
            hits.clear();
            self.synced.matching(key, &mut hits, &mut self.hit_groups);
            for &slot in &hits {
                let Some(watcher) = self.slots[slot].as_ref() else {
                    continue;
                };
                if watcher.state != State::Synced
                    || revision < watcher.next_rev
                    || !watcher.wants(event)
                {
                    continue;
                }
                if !lacking.is_empty() && lacking.iter().any(|&(cut, _)| cut == slot) {
                    continue;
                }
                if watcher.prev_kv && lacks_prev_kv(event) {
                    lacking.push((slot, revision));
                    continue;
                }
                let view = if watcher.prev_kv || event.prev_kv.is_none() {
                    with_prev_kv.get_or_insert_with(|| WireEvent::encode(event, true))
                } else {
                    without_prev_kv.get_or_insert_with(|| WireEvent::encode(event, false))
                }
                .clone();
                match self.matched_at[slot] {
                    usize::MAX => {
                        self.matched_at[slot] = matched.len();
                        matched.push((slot, Events::from(view)));
                    }
                    at => matched[at].1.push(view),
                }
            }
        }
        self.hits = hits;
        self.last_published = last;
        for (slot, events) in matched.drain(..) {
            self.matched_at[slot] = usize::MAX;
            if let Err(resume) = self.deliver(slot, events, None) {
                self.set_aside_total += 1;
                self.set_aside(slot, resume);
            }
        }
        self.matched = matched;
        for (slot, revision) in lacking {
            // Unless a full queue already set it aside at an earlier revision.
            if self.slots[slot]
                .as_ref()
                .is_some_and(|w| w.state == State::Synced)
            {
                self.set_aside(slot, revision);
            }
        }
        self.wake_delivered();
        self.check_deferred_progress();
    }

    /// Hands out catch-ups for up to `catch_up_watchers` watchers, one task per distinct
    /// key or range, skipping watchers whose stream has no room for what they would read.
    pub fn take_catch_up(&mut self) -> Vec<CatchUpTask> {
        let mut tasks: Vec<CatchUpTask> = Vec::new();
        let mut task_of: HashMap<(&[u8], &[u8]), usize> = HashMap::new();
        let mut taken = Vec::new();
        for &slot in &self.unsynced {
            if taken.len() >= self.limits.catch_up_watchers {
                break;
            }
            let Some(watcher) = self.slots[slot].as_ref() else {
                continue;
            };
            let room = self
                .streams
                .get(&watcher.stream)
                .is_some_and(|s| s.queued_events < queue_limit(&self.limits, s));
            if !room {
                continue;
            }
            let member = CatchUpWatcher {
                slot,
                serial: watcher.serial,
                start_rev: watcher.next_rev,
            };
            let range = (watcher.key.as_slice(), watcher.range_end.as_slice());
            match task_of.get(&range) {
                Some(&at) => {
                    let task = &mut tasks[at];
                    task.prev_kv |= watcher.prev_kv;
                    task.watchers.push(member);
                }
                None => {
                    task_of.insert(range, tasks.len());
                    tasks.push(CatchUpTask {
                        key: watcher.key.clone(),
                        range_end: watcher.range_end.clone(),
                        prev_kv: watcher.prev_kv,
                        limit: self.limits.catch_up_revisions,
                        watchers: vec![member],
                    });
                }
            }
            taken.push(slot);
        }
        drop(task_of);
        for slot in taken {
            self.unsynced.remove(&slot);
            if let Some(watcher) = self.slots[slot].as_mut() {
                watcher.state = State::CatchingUp;
            }
        }
        tasks
    }

    /// Applies a catch-up's result to each of its watchers: queues the events read,
    /// then either joins the synced group (history reached the published revision) or
    /// waits for the next pass. A watcher canceled meanwhile is ignored.
    pub fn finish_catch_up(&mut self, task: CatchUpTask, outcome: CatchUpOutcome) {
        // Each event encoded at most once per shape, shared by every watcher of the task.
        let mut encoded: Vec<[Option<WireEvent>; 2]> = match &outcome {
            CatchUpOutcome::Events { events, .. } => vec![[None, None]; events.len()],
            _ => Vec::new(),
        };
        for member in &task.watchers {
            let slot = member.slot;
            let Some(watcher) = self.slots.get(slot).and_then(|w| w.as_ref()) else {
                continue;
            };
            if watcher.serial != member.serial || watcher.state != State::CatchingUp {
                continue;
            }
            match &outcome {
                CatchUpOutcome::Compacted { compact_revision }
                | CatchUpOutcome::Events {
                    compact_revision, ..
                } if member.start_rev < *compact_revision => {
                    let (stream, id) = (watcher.stream, watcher.id);
                    if let Some(watcher) = self.slots[slot].as_mut() {
                        watcher.state = State::Compacted;
                    }
                    // etcd's compaction cancel carries no header revision and no
                    // reason: clients recognise it by `compact_revision`.
                    self.push_control(
                        stream,
                        Outgoing {
                            revision: 0,
                            watch_id: id,
                            canceled: true,
                            compact_revision: *compact_revision,
                            ..Default::default()
                        },
                    );
                }
                // Compacted after the read was planned, though not below this
                // watcher's start: it reads again in a later pass.
                CatchUpOutcome::Compacted { .. } | CatchUpOutcome::Failed(_) => {
                    self.set_unsynced(slot, member.start_rev);
                }
                CatchUpOutcome::Events { events, next, .. } => {
                    let shape = usize::from(watcher.prev_kv);
                    let mine: Events = events
                        .iter()
                        .zip(encoded.iter_mut())
                        .filter(|(e, _)| revision_of(e) >= member.start_rev && watcher.wants(e))
                        .map(|(e, views)| {
                            views[shape].get_or_insert_with(|| watcher.view(e)).clone()
                        })
                        .collect();
                    // A read that stopped (its revision limit) before this watcher's
                    // start still brought it up to its start.
                    let next = (*next).max(member.start_rev);
                    match self.deliver(slot, mine, Some(next - 1)) {
                        Err(resume) => self.set_unsynced(slot, resume),
                        Ok(()) if next > self.last_published => {
                            if let Some(watcher) = self.slots[slot].as_mut() {
                                watcher.next_rev = next;
                            }
                            self.make_synced(slot);
                        }
                        Ok(()) => self.set_unsynced(slot, next),
                    }
                }
            }
        }
        self.wake_delivered();
        self.check_deferred_progress();
    }

    /// Runs one catch-up pass synchronously (tests and single-threaded users).
    pub fn catch_up(&mut self, history: &dyn History) -> usize {
        let tasks = self.take_catch_up();
        let count = tasks.len();
        for task in tasks {
            let outcome = task.run(history);
            self.finish_catch_up(task, outcome);
        }
        count
    }

    /// Queues `events` (in revision order) for a watcher, split between revisions to
    /// stay under the response size and fragmented inside a revision if the watcher
    /// allows it. `through`: the revision history was read up to (catch-up), for the
    /// last response's header. Err(revision) if the stream's queue filled up: events
    /// from that revision on were not queued.
    fn deliver(&mut self, slot: usize, events: Events, through: Option<i64>) -> Result<(), i64> {
        if events.is_empty() {
            return Ok(());
        }
        let Some(watcher) = self.slots[slot].as_mut() else {
            return Ok(());
        };
        let (stream_id, watch_id, fragmented) = (watcher.stream, watcher.id, watcher.fragment);
        let Some(stream) = self.streams.get_mut(&stream_id) else {
            return Ok(());
        };
        let max = self.limits.max_response_bytes;
        let limit = queue_limit(&self.limits, stream);
        let first = events[0].revision();
        let last = events.last().map_or(first, WireEvent::revision);
        if first == last && !fragmented {
            // One revision (the common case of a synced watcher): one response, no sizing.
            if stream.queued_events >= limit {
                return Err(first);
            }
            let revision = through.map_or(last, |through| last.max(through));
            let response = Outgoing {
                revision,
                watch_id,
                events,
                ..Default::default()
            };
            if push(stream, response, true) {
                self.woken.push(stream_id);
            }
            watcher.progress_due = false;
            return Ok(());
        }
        // Group by revision, then pack whole revisions into responses.
        let mut responses: Vec<Vec<WireEvent>> = Vec::new();
        let mut size = 0usize;
        let mut iter = events.into_vec().into_iter().peekable();
        while let Some(event) = iter.next() {
            let revision = event.revision();
            let mut group = vec![event];
            while iter.peek().is_some_and(|e| e.revision() == revision) {
                group.extend(iter.next());
            }
            let group_size: usize = group.iter().map(WireEvent::field_len).sum();
            match responses.last_mut() {
                Some(current) if size + group_size <= max => {
                    current.extend(group);
                    size += group_size;
                }
                _ => {
                    responses.push(group);
                    size = group_size;
                }
            }
        }
        let count = responses.len();
        for (n, events) in responses.into_iter().enumerate() {
            let first = events[0].revision();
            if stream.queued_events >= limit {
                return Err(first);
            }
            let mut revision = events.last().map_or(first, WireEvent::revision);
            if n + 1 == count
                && let Some(through) = through
            {
                revision = revision.max(through);
            }
            let response = Outgoing {
                revision,
                watch_id,
                events: events.into(),
                ..Default::default()
            };
            let mut was_idle = false;
            if fragmented {
                for piece in fragment(response, max) {
                    was_idle |= push(stream, piece, true);
                }
            } else {
                was_idle = push(stream, response, true);
            }
            if was_idle {
                self.woken.push(stream_id);
            }
            watcher.progress_due = false;
        }
        Ok(())
    }

    /// Refuses a create request the registry never saw (the server's permission
    /// check): etcd's `created` + `canceled` response with `reason` and watch id -1.
    pub fn refuse_create(&mut self, stream: StreamId, reason: String) {
        let response = Outgoing {
            revision: self.last_published,
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..Default::default()
        };
        self.push_control(stream, response);
    }

    fn push_control(&mut self, stream: StreamId, response: Outgoing) {
        if let Some(stream) = self.streams.get_mut(&stream) {
            push_and_wake(&mut self.due_wakes, stream, response, false);
        }
    }

    /// Makes the streams `deliver` queued for due for waking: once each, after the
    /// whole batch is queued, so a woken sender finds all of it.
    fn wake_delivered(&mut self) {
        for id in self.woken.drain(..) {
            if let Some(stream) = self.streams.get(&id) {
                self.due_wakes.push(stream.waker.clone());
            }
        }
    }

    /// The wake-ups the calls since the last take made due. The registry never wakes a
    /// stream itself: a sender woken while its caller still holds the registry (behind
    /// the server's lock) would only wake up to wait for that lock. Wake them once the
    /// registry is let go of.
    pub fn take_wakes(&mut self) -> Vec<Arc<dyn StreamWaker>> {
        std::mem::take(&mut self.due_wakes)
    }

    fn make_synced(&mut self, slot: usize) {
        let Some(watcher) = self.slots[slot].as_mut() else {
            return;
        };
        watcher.state = State::Synced;
        self.synced.insert(slot, &watcher.key, watcher.end.as_ref());
    }

    fn unindex(&mut self, slot: usize) {
        let Some(watcher) = self.slots[slot].as_ref() else {
            return;
        };
        if watcher.state != State::Synced {
            return;
        }
        self.synced.remove(slot);
    }

    /// A synced watcher falls behind at `resume` (its stream's queue is full, or the
    /// store was replaced): it catches up from history later.
    fn set_aside(&mut self, slot: usize, resume: i64) {
        self.unindex(slot);
        self.set_unsynced(slot, resume);
    }

    fn set_unsynced(&mut self, slot: usize, resume: i64) {
        if let Some(watcher) = self.slots[slot].as_mut() {
            watcher.state = State::Unsynced;
            watcher.next_rev = resume;
            self.unsynced.insert(slot);
        }
    }

    fn free_watcher(&mut self, slot: usize) {
        self.unindex(slot);
        self.unsynced.remove(&slot);
        if self.slots[slot].as_ref().is_some_and(|w| w.prev_kv) {
            self.prev_kv_watchers -= 1;
        }
        self.slots[slot] = None;
        self.free_slots.push(slot);
    }

    fn stream_synced(&self, stream: StreamId) -> bool {
        self.streams.get(&stream).is_some_and(|s| {
            s.watchers.values().all(|&slot| {
                self.slots[slot]
                    .as_ref()
                    .is_none_or(|w| matches!(w.state, State::Synced | State::Compacted))
            })
        })
    }

    fn check_deferred_progress(&mut self) {
        if self.deferred_progress_streams == 0 {
            return;
        }
        let waiting: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, s)| s.deferred_progress)
            .map(|(&id, _)| id)
            .collect();
        for stream in waiting {
            if self.stream_synced(stream) {
                if let Some(state) = self.streams.get_mut(&stream) {
                    state.deferred_progress = false;
                }
                self.deferred_progress_streams -= 1;
                self.request_progress(stream);
            }
        }
    }
}

/// Whether `event` was published without the previous value it has: a delete always
/// has one, a put has one unless it created its key.
fn lacks_prev_kv(event: &Event) -> bool {
    if event.prev_kv.is_some() {
        return false;
    }
    match EventType::try_from(event.r#type) {
        Ok(EventType::Delete) => true,
        Ok(EventType::Put) => event.kv.as_ref().is_some_and(|kv| kv.version > 1),
        Err(_) => false,
    }
}

/// Event responses `stream` may have queued before its watchers are set aside.
fn queue_limit(limits: &Limits, stream: &Stream) -> usize {
    limits.stream_queue_messages + limits.stream_queue_per_watcher * stream.watchers.len()
}

/// Queues `response`; `true` if the queue was empty (its stream needs waking).
fn push(stream: &mut Stream, response: Outgoing, is_event: bool) -> bool {
    let was_empty = stream.queue.is_empty();
    if is_event {
        stream.queued_events += 1;
    }
    stream.queue.push_back(response);
    was_empty
}

/// Queues `response`; the stream is due for waking if it was idle.
fn push_and_wake(
    due_wakes: &mut Vec<Arc<dyn StreamWaker>>,
    stream: &mut Stream,
    response: Outgoing,
    is_event: bool,
) {
    if push(stream, response, is_event) {
        due_wakes.push(stream.waker.clone());
    }
}
