//! Registry tests against an in-memory history, deterministic throughout.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use concord_proto::etcdserverpb::{WatchCreateRequest, WatchResponse};
use concord_proto::mvccpb::{Event, KeyValue, event::EventType};

use crate::{History, Limits, Registry};

/// Every event ever published, with a compaction point.
#[derive(Default)]
struct Log {
    events: Vec<Event>,
    compact: i64,
}

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    let start: &[u8] = if start.is_empty() { &[0] } else { start };
    match end {
        [] => key == start,
        [0] => key >= start,
        end => key >= start && key < end,
    }
}

impl History for Log {
    fn events(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_rev: i64,
        limit: usize,
        prev_kv: bool,
    ) -> Result<(Vec<Event>, i64), concord_mvcc::Error> {
        if start_rev <= self.compact {
            return Err(concord_mvcc::Error::Compacted);
        }
        let current = self.events.last().map_or(0, rev);
        let mut out = Vec::new();
        let mut revisions = 0;
        let mut last = 0;
        for event in self.events.iter().filter(|e| rev(e) >= start_rev) {
            if !in_range(&event.kv.as_ref().unwrap().key, key, range_end) {
                continue;
            }
            if rev(event) != last {
                if limit > 0 && revisions == limit {
                    return Ok((out, rev(event)));
                }
                revisions += 1;
                last = rev(event);
            }
            let mut event = event.clone();
            if !prev_kv {
                event.prev_kv = None;
            }
            out.push(event);
        }
        Ok((out, current + 1))
    }
    fn compact_revision(&self) -> i64 {
        self.compact
    }
    fn kvs_at(
        &self,
        key: &[u8],
        range_end: &[u8],
        revision: i64,
    ) -> Result<Vec<KeyValue>, concord_mvcc::Error> {
        if revision < self.compact {
            return Err(concord_mvcc::Error::Compacted);
        }
        // The latest version of each key in range at `revision`, if live.
        let mut latest: std::collections::BTreeMap<Vec<u8>, &Event> = Default::default();
        for event in self.events.iter().filter(|e| rev(e) <= revision) {
            let kv = event.kv.as_ref().unwrap();
            if in_range(&kv.key, key, range_end) {
                latest.insert(kv.key.clone(), event);
            }
        }
        Ok(latest
            .into_values()
            .filter(|e| e.r#type == EventType::Put as i32)
            .map(|e| e.kv.clone().unwrap())
            .collect())
    }
}

fn rev(event: &Event) -> i64 {
    event.kv.as_ref().unwrap().mod_revision
}

fn put(key: &str, revision: i64) -> Event {
    Event {
        r#type: EventType::Put as i32,
        kv: Some(KeyValue {
            key: key.as_bytes().to_vec(),
            value: format!("v{revision}").into_bytes(),
            mod_revision: revision,
            ..Default::default()
        }),
        prev_kv: Some(KeyValue {
            key: key.as_bytes().to_vec(),
            value: b"old".to_vec(),
            ..Default::default()
        }),
    }
}

fn delete(key: &str, revision: i64) -> Event {
    Event {
        r#type: EventType::Delete as i32,
        kv: Some(KeyValue {
            key: key.as_bytes().to_vec(),
            mod_revision: revision,
            ..Default::default()
        }),
        prev_kv: None,
    }
}

fn watch(key: &str, end: &[u8], start: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.as_bytes().to_vec(),
        range_end: end.to_vec(),
        start_revision: start,
        ..Default::default()
    }
}

fn header_rev(response: &WatchResponse) -> i64 {
    response.header.as_ref().unwrap().revision
}

/// Keys of the events a stream's responses carry for `watch_id`, as (key, revision).
fn seen(responses: &[WatchResponse], watch_id: i64) -> Vec<(String, i64)> {
    responses
        .iter()
        .filter(|r| r.watch_id == watch_id)
        .flat_map(|r| r.events.iter())
        .map(|e| {
            let kv = e.kv.as_ref().unwrap();
            (String::from_utf8(kv.key.clone()).unwrap(), kv.mod_revision)
        })
        .collect()
}

/// Makes the wake-ups the registry's calls made due.
fn wake_due(registry: &mut Registry) {
    for waker in registry.take_wakes() {
        waker.wake();
    }
}

/// Publishes into both the registry and the log.
fn commit(registry: &mut Registry, log: &mut Log, events: Vec<Event>) {
    log.events.extend(events.iter().cloned());
    registry.publish(events);
}

#[test]
fn single_key_prefix_and_from_key_watchers_match_their_events_only() {
    let mut registry = Registry::new(Limits::default(), 0);
    let stream = registry.open_stream(Box::new(|| {}));
    let single = registry.create(stream, &watch("foo", b"", 0)).unwrap();
    let prefix = registry.create(stream, &watch("foo/", b"foo0", 0)).unwrap();
    let from = registry.create(stream, &watch("m", b"\0", 0)).unwrap();
    let all = registry.create(stream, &watch("", b"\0", 0)).unwrap();
    assert_eq!((single, prefix, from, all), (0, 1, 2, 3));
    registry.publish(vec![put("foo", 1)]);
    registry.publish(vec![put("foo/a", 2), put("foo/b", 2), put("a", 2)]);
    registry.publish(vec![delete("zzz", 3)]);
    let out = registry.drain(stream);
    assert_eq!(out.iter().filter(|r| r.created).count(), 4);
    assert_eq!(seen(&out, single), vec![("foo".into(), 1)]);
    assert_eq!(
        seen(&out, prefix),
        vec![("foo/a".into(), 2), ("foo/b".into(), 2)]
    );
    assert_eq!(seen(&out, from), vec![("zzz".into(), 3)]);
    assert_eq!(seen(&out, all).len(), 5);
    // A synced watcher's response header is the revision of its last event, and
    // all events of one revision travel together.
    let prefix_responses: Vec<&WatchResponse> = out
        .iter()
        .filter(|r| r.watch_id == prefix && !r.created)
        .collect();
    assert_eq!(prefix_responses.len(), 1);
    assert_eq!(header_rev(prefix_responses[0]), 2);
}

#[test]
fn filters_and_prev_kv_shape_the_events() {
    let mut registry = Registry::new(Limits::default(), 0);
    let stream = registry.open_stream(Box::new(|| {}));
    let mut no_put = watch("k", b"", 0);
    no_put.filters = vec![0];
    let mut no_delete = watch("k", b"", 0);
    no_delete.filters = vec![1];
    no_delete.prev_kv = true;
    let a = registry.create(stream, &no_put).unwrap();
    let b = registry.create(stream, &no_delete).unwrap();
    registry.publish(vec![put("k", 1)]);
    registry.publish(vec![delete("k", 2)]);
    let out = registry.drain(stream);
    assert_eq!(seen(&out, a), vec![("k".into(), 2)]);
    assert_eq!(seen(&out, b), vec![("k".into(), 1)]);
    let with_prev = out.iter().find(|r| r.watch_id == b && !r.created).unwrap();
    assert!(with_prev.events[0].prev_kv.is_some());
    let without_prev = out.iter().find(|r| r.watch_id == a && !r.created).unwrap();
    assert!(without_prev.events[0].prev_kv.is_none());
}

#[test]
fn ids_duplicates_empty_ranges_and_cancel_answer_as_etcd() {
    let mut registry = Registry::new(Limits::default(), 7);
    let stream = registry.open_stream(Box::new(|| {}));
    let mut chosen = watch("a", b"", 0);
    chosen.watch_id = 1;
    assert_eq!(registry.create(stream, &chosen).unwrap(), 1);
    assert!(registry.create(stream, &chosen).is_err());
    // Auto ids skip the ones clients took.
    assert_eq!(registry.create(stream, &watch("a", b"", 0)).unwrap(), 0);
    assert_eq!(registry.create(stream, &watch("a", b"", 0)).unwrap(), 2);
    assert!(registry.create(stream, &watch("b", b"a", 0)).is_err());
    assert!(registry.cancel(stream, 1));
    assert!(!registry.cancel(stream, 1));
    let out = registry.drain(stream);
    let kinds: Vec<(i64, bool, bool, &str, i64)> = out
        .iter()
        .map(|r| {
            (
                r.watch_id,
                r.created,
                r.canceled,
                r.cancel_reason.as_str(),
                header_rev(r),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (1, true, false, "", 7),
            (
                -1,
                true,
                true,
                "mvcc: duplicate watch ID provided on the WatchStream",
                7
            ),
            (0, true, false, "", 7),
            (2, true, false, "", 7),
            (-1, true, true, "mvcc: watcher range is empty", 7),
            (1, false, true, "", 7),
        ]
    );
}

#[test]
fn catch_up_seam_neither_misses_nor_repeats_when_writes_land_mid_read() {
    let mut log = Log::default();
    let mut registry = Registry::new(
        Limits {
            catch_up_revisions: 2,
            ..Limits::default()
        },
        0,
    );
    for r in 1..=5 {
        commit(&mut registry, &mut log, vec![put(&format!("p/{r}"), r)]);
    }
    let stream = registry.open_stream(Box::new(|| {}));
    let id = registry.create(stream, &watch("p/", b"p0", 2)).unwrap();
    let mut rounds = 0;
    loop {
        let tasks = registry.take_catch_up();
        if tasks.is_empty() {
            break;
        }
        for task in tasks {
            let outcome = task.run(&log);
            // A write commits (and is published) after the read, before the hand-back;
            // another commits to the store but is not yet published.
            let next = log.events.last().map_or(0, rev) + 1;
            if rounds < 3 {
                commit(
                    &mut registry,
                    &mut log,
                    vec![put(&format!("p/{next}"), next)],
                );
            }
            registry.finish_catch_up(task, outcome);
        }
        rounds += 1;
        assert!(rounds < 20);
    }
    assert!(rounds >= 3, "the watcher needed several rounds");
    let next = log.events.last().map_or(0, rev) + 1;
    commit(&mut registry, &mut log, vec![put("p/last", next)]);
    let out = registry.drain(stream);
    let revisions: Vec<i64> = seen(&out, id).into_iter().map(|(_, r)| r).collect();
    let expected: Vec<i64> = (2..=next).collect();
    assert_eq!(revisions, expected);
}

#[test]
fn seam_with_store_ahead_of_published_revision() {
    let mut log = Log::default();
    let mut registry = Registry::new(Limits::default(), 0);
    commit(&mut registry, &mut log, vec![put("a", 1)]);
    // Revision 2 is committed to the store, its publish is still on the way.
    log.events.push(put("a", 2));
    let stream = registry.open_stream(Box::new(|| {}));
    let id = registry.create(stream, &watch("a", b"", 1)).unwrap();
    assert_eq!(registry.catch_up(&log), 1);
    assert_eq!(registry.counts().synced, 1);
    registry.publish(vec![put("a", 2)]);
    commit(&mut registry, &mut log, vec![put("a", 3)]);
    let out = registry.drain(stream);
    let revisions: Vec<i64> = seen(&out, id).into_iter().map(|(_, r)| r).collect();
    assert_eq!(revisions, vec![1, 2, 3]);
    // The catch-up response's header is the revision history was read up to.
    assert_eq!(header_rev(&out[1]), 2);
}

#[test]
fn start_below_the_compact_revision_is_created_then_canceled() {
    let mut log = Log::default();
    let mut registry = Registry::new(Limits::default(), 0);
    for r in 1..=6 {
        commit(&mut registry, &mut log, vec![put("k", r)]);
    }
    log.compact = 4;
    let stream = registry.open_stream(Box::new(|| {}));
    let mut old_request = watch("k", b"", 3);
    old_request.watch_id = 5;
    let old = registry.create(stream, &old_request).unwrap();
    let at_compact = registry.create(stream, &watch("k", b"", 4)).unwrap();
    registry.catch_up(&log);
    let out = registry.drain(stream);
    assert!(out[0].created && !out[0].canceled && out[0].watch_id == old);
    let cancel = out
        .iter()
        .find(|r| r.watch_id == old && r.canceled)
        .unwrap();
    assert_eq!(cancel.compact_revision, 4);
    assert_eq!(header_rev(cancel), 0);
    assert!(cancel.cancel_reason.is_empty());
    // At the compact revision itself: what compaction kept of it (k's put at 4,
    // without its previous value), then the rest.
    assert_eq!(
        seen(&out, at_compact),
        vec![("k".into(), 4), ("k".into(), 5), ("k".into(), 6)]
    );
    let first = out
        .iter()
        .find(|r| r.watch_id == at_compact && !r.created)
        .unwrap();
    assert!(first.events[0].prev_kv.is_none());
    // The compacted watcher's id stays taken until the client cancels it.
    assert!(registry.create(stream, &old_request).is_err());
    assert!(registry.cancel(stream, old));
}

#[test]
fn watchers_of_one_range_share_a_catch_up_read_and_each_gets_its_own_history() {
    let mut log = Log::default();
    let mut registry = Registry::new(Limits::default(), 0);
    for r in 1..=10 {
        let key = if r % 2 == 0 { "p/a" } else { "q" };
        commit(&mut registry, &mut log, vec![put(key, r)]);
    }
    log.compact = 3;
    let stream = registry.open_stream(Box::new(|| {}));
    // Same prefix, different starts (one of them compacted away), one with prev_kv.
    let starts = [2, 3, 5, 8, 9];
    let ids: Vec<i64> = starts
        .iter()
        .map(|&start| registry.create(stream, &watch("p/", b"p0", start)).unwrap())
        .collect();
    let mut with_prev = watch("p/", b"p0", 6);
    with_prev.prev_kv = true;
    let prev_id = registry.create(stream, &with_prev).unwrap();
    let other = registry.create(stream, &watch("q", b"", 4)).unwrap();

    let tasks = registry.take_catch_up();
    let mut sizes: Vec<usize> = tasks.iter().map(|t| t.watchers()).collect();
    sizes.sort();
    assert_eq!(sizes, vec![1, 6], "one read per distinct range");
    for task in tasks {
        let outcome = task.run(&log);
        registry.finish_catch_up(task, outcome);
    }
    assert_eq!(registry.counts().unsynced, 0);
    commit(&mut registry, &mut log, vec![put("p/b", 11)]);
    let out = registry.drain(stream);
    let revisions = |id| -> Vec<i64> { seen(&out, id).into_iter().map(|(_, r)| r).collect() };
    let cancel = out
        .iter()
        .find(|r| r.watch_id == ids[0] && r.canceled)
        .unwrap();
    assert_eq!(cancel.compact_revision, 3);
    assert!(revisions(ids[0]).is_empty());
    assert_eq!(revisions(ids[1]), vec![4, 6, 8, 10, 11]);
    assert_eq!(revisions(ids[2]), vec![6, 8, 10, 11]);
    assert_eq!(revisions(ids[3]), vec![8, 10, 11]);
    assert_eq!(revisions(ids[4]), vec![10, 11]);
    assert_eq!(revisions(prev_id), vec![6, 8, 10, 11]);
    assert_eq!(revisions(other), vec![5, 7, 9]);
    // Shared encodings keep each watcher's own shape.
    let has_prev = |id| {
        out.iter()
            .filter(|r| r.watch_id == id)
            .flat_map(|r| r.events.iter())
            .all(|e| e.prev_kv.is_some())
    };
    assert!(has_prev(prev_id));
    assert!(
        out.iter()
            .filter(|r| r.watch_id == ids[2])
            .flat_map(|r| r.events.iter())
            .all(|e| e.prev_kv.is_none())
    );
}

#[test]
fn a_watch_from_now_starts_after_the_store_revision_even_before_its_events_are_published() {
    let mut log = Log::default();
    let mut registry = Registry::new(Limits::default(), 0);
    for r in 1..=3 {
        commit(&mut registry, &mut log, vec![put("k", r)]);
    }
    // Revisions 4 and 5 are committed (and acknowledged) but not yet published.
    let stream = registry.open_stream(Box::new(|| {}));
    let from_now = registry.create_at(stream, &watch("k", b"", 0), 5).unwrap();
    let from_four = registry.create_at(stream, &watch("k", b"", 4), 5).unwrap();
    let behind = registry.create_at(stream, &watch("k", b"", 2), 5).unwrap();
    for r in 4..=6 {
        commit(&mut registry, &mut log, vec![put("k", r)]);
    }
    while registry.has_unsynced() {
        registry.catch_up(&log);
    }
    commit(&mut registry, &mut log, vec![put("k", 7)]);
    let out = registry.drain(stream);
    let created = out
        .iter()
        .find(|r| r.watch_id == from_now && r.created)
        .unwrap();
    assert_eq!(header_rev(created), 5);
    let revisions = |id| -> Vec<i64> { seen(&out, id).into_iter().map(|(_, r)| r).collect() };
    assert_eq!(revisions(from_now), vec![6, 7]);
    assert_eq!(revisions(from_four), vec![4, 5, 6, 7]);
    assert_eq!(revisions(behind), vec![2, 3, 4, 5, 6, 7]);
}

#[test]
fn a_full_stream_sets_its_watchers_aside_without_losing_or_blocking() {
    let mut log = Log::default();
    let mut registry = Registry::new(
        Limits {
            stream_queue_messages: 3,
            stream_queue_per_watcher: 0,
            catch_up_revisions: 2,
            ..Limits::default()
        },
        0,
    );
    let wakes = Arc::new(AtomicUsize::new(0));
    let counter = wakes.clone();
    let slow = registry.open_stream(Box::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    }));
    let fast = registry.open_stream(Box::new(|| {}));
    let slow_id = registry.create(slow, &watch("k", b"", 0)).unwrap();
    let fast_id = registry.create(fast, &watch("k", b"", 0)).unwrap();
    let mut slow_out = Vec::new();
    let mut fast_out = Vec::new();
    for r in 1..=20 {
        commit(&mut registry, &mut log, vec![put("k", r)]);
        if r == 1 {
            // Wake-ups are made by the caller, after the registry call returned.
            assert_eq!(wakes.load(Ordering::SeqCst), 0);
        }
        wake_due(&mut registry);
        fast_out.extend(registry.drain(fast));
        if r == 10 {
            // The slow client reads once, mid-way; catch-ups run all along.
            slow_out.extend(registry.drain(slow));
        }
        registry.catch_up(&log);
        wake_due(&mut registry);
    }
    assert_eq!(registry.counts().unsynced, 1);
    assert!(registry.counts().set_aside >= 1, "{:?}", registry.counts());
    while registry.has_unsynced() {
        slow_out.extend(registry.drain(slow));
        registry.catch_up(&log);
    }
    slow_out.extend(registry.drain(slow));
    let all: Vec<i64> = (1..=20).collect();
    let revs = |out: &[WatchResponse], id| -> Vec<i64> {
        seen(out, id).into_iter().map(|(_, r)| r).collect()
    };
    assert_eq!(revs(&fast_out, fast_id), all);
    assert_eq!(revs(&slow_out, slow_id), all);
    assert!(wakes.load(Ordering::SeqCst) >= 2);
}

#[test]
fn a_stream_may_queue_more_for_each_of_its_watchers() {
    let mut log = Log::default();
    let mut registry = Registry::new(
        Limits {
            stream_queue_messages: 2,
            stream_queue_per_watcher: 3,
            ..Limits::default()
        },
        0,
    );
    let stream = registry.open_stream(Box::new(|| {}));
    let ids: Vec<i64> = (0..4)
        .map(|_| registry.create(stream, &watch("k", b"", 0)).unwrap())
        .collect();
    // Room for 2 + 3 x 4 = 14 event responses: three writes (12) fit, the fourth
    // fits for two watchers only, and the others are set aside.
    for r in 1..=4 {
        commit(&mut registry, &mut log, vec![put("k", r)]);
    }
    assert_eq!(registry.counts().set_aside, 2);
    assert_eq!(registry.counts().unsynced, 2);
    let mut out = Vec::new();
    while registry.has_unsynced() {
        out.extend(registry.drain(stream));
        registry.catch_up(&log);
    }
    out.extend(registry.drain(stream));
    assert_eq!(registry.counts().synced, 4);
    for id in ids {
        let revisions: Vec<i64> = seen(&out, id).into_iter().map(|(_, r)| r).collect();
        assert_eq!(revisions, vec![1, 2, 3, 4], "watcher {id}");
    }
}

#[test]
fn events_published_without_previous_values_send_watchers_that_want_them_to_history() {
    let mut log = Log::default();
    let mut registry = Registry::new(Limits::default(), 0);
    let stream = registry.open_stream(Box::new(|| {}));
    let plain = registry.create(stream, &watch("k", b"", 0)).unwrap();
    assert!(!registry.wants_prev_kv());
    let mut with_prev = watch("k", b"", 0);
    with_prev.prev_kv = true;
    let wanting = registry.create(stream, &with_prev).unwrap();
    assert!(registry.wants_prev_kv());

    // The writer decided before the prev_kv watcher existed: its events come without
    // previous values, though the history has them.
    let mut created = put("k", 1);
    created.kv.as_mut().unwrap().version = 1;
    created.prev_kv = None;
    let mut overwrite = put("k", 2);
    overwrite.kv.as_mut().unwrap().version = 2;
    let mut removal = delete("k", 3);
    removal.prev_kv = overwrite.kv.clone();
    log.events
        .extend([created.clone(), overwrite.clone(), removal.clone()]);
    overwrite.prev_kv = None;
    removal.prev_kv = None;
    registry.publish(vec![created, overwrite, removal]);
    assert_eq!(registry.counts().unsynced, 1, "{:?}", registry.counts());
    registry.catch_up(&log);
    let out = registry.drain(stream);
    let events_of = |id| -> Vec<(i64, bool)> {
        out.iter()
            .filter(|r| r.watch_id == id)
            .flat_map(|r| r.events.iter())
            .map(|e| (e.kv.as_ref().unwrap().mod_revision, e.prev_kv.is_some()))
            .collect()
    };
    // The creation needs no previous value and went out at once; the rest came from
    // history, with theirs.
    assert_eq!(events_of(wanting), vec![(1, false), (2, true), (3, true)]);
    assert_eq!(events_of(plain), vec![(1, false), (2, false), (3, false)]);
    assert!(registry.cancel(stream, wanting));
    assert!(!registry.wants_prev_kv());
}

#[test]
fn responses_split_between_revisions_and_fragment_inside_one() {
    let mut registry = Registry::new(
        Limits {
            max_response_bytes: 150,
            ..Limits::default()
        },
        0,
    );
    let stream = registry.open_stream(Box::new(|| {}));
    let whole = registry.create(stream, &watch("", b"\0", 0)).unwrap();
    let mut fragmented = watch("", b"\0", 0);
    fragmented.fragment = true;
    let pieces = registry.create(stream, &fragmented).unwrap();
    // Revision 1: 10 events of ~60 bytes; revisions 2 and 3: one small event each.
    let big: Vec<Event> = (0..10).map(|n| put(&format!("key{n}"), 1)).collect();
    registry.publish(big);
    registry.publish(vec![put("x", 2)]);
    registry.publish(vec![put("y", 3)]);
    let out = registry.drain(stream);
    let of = |id| -> Vec<&WatchResponse> {
        out.iter()
            .filter(|r| r.watch_id == id && !r.created)
            .collect()
    };
    // Without `fragment`, revision 1 goes whole; revisions never share a response
    // with it past the limit.
    let unfragmented = of(whole);
    assert_eq!(unfragmented[0].events.len(), 10);
    assert!(unfragmented.iter().all(|r| !r.fragment));
    let fragments = of(pieces);
    let first_revision: Vec<&&WatchResponse> = fragments
        .iter()
        .take_while(|r| r.events.iter().all(|e| rev(e) == 1))
        .collect();
    assert!(first_revision.len() > 1);
    assert!(
        first_revision[..first_revision.len() - 1]
            .iter()
            .all(|r| r.fragment)
    );
    assert!(!first_revision.last().unwrap().fragment);
    assert_eq!(seen(&out, pieces), seen(&out, whole));
}

#[test]
fn progress_notifications_and_requests() {
    let mut log = Log::default();
    let mut registry = Registry::new(Limits::default(), 0);
    commit(&mut registry, &mut log, vec![put("a", 1)]);
    let stream = registry.open_stream(Box::new(|| {}));
    let mut notify = watch("a", b"", 0);
    notify.progress_notify = true;
    let quiet = registry.create(stream, &notify).unwrap();
    let busy = registry.create(stream, &notify).unwrap();
    let _plain = registry.create(stream, &watch("a", b"", 0)).unwrap();
    registry.drain(stream);
    registry.progress_tick();
    let out = registry.drain(stream);
    assert_eq!(out.len(), 2, "both notify watchers, not the plain one");
    assert!(
        out.iter()
            .all(|r| r.events.is_empty() && header_rev(r) == 1)
    );
    // A watcher that got events since the last tick skips one notification.
    registry.cancel(stream, quiet);
    registry.drain(stream);
    commit(&mut registry, &mut log, vec![put("a", 2)]);
    registry.drain(stream);
    registry.progress_tick();
    assert!(registry.drain(stream).is_empty());
    registry.progress_tick();
    let out = registry.drain(stream);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].watch_id, header_rev(&out[0])), (busy, 2));

    // A progress request waits until every watcher of the stream is synced.
    let lagging = registry.create(stream, &watch("a", b"", 1)).unwrap();
    registry.drain(stream);
    registry.request_progress(stream);
    assert!(registry.drain(stream).is_empty());
    registry.catch_up(&log);
    let out = registry.drain(stream);
    assert_eq!(seen(&out, lagging).len(), 2);
    let progress = out.last().unwrap();
    assert_eq!((progress.watch_id, header_rev(progress)), (-1, 2));
    assert!(progress.events.is_empty() && !progress.canceled);
}

#[test]
fn closing_a_stream_frees_its_watchers() {
    let mut registry = Registry::new(Limits::default(), 0);
    let stream = registry.open_stream(Box::new(|| {}));
    let other = registry.open_stream(Box::new(|| {}));
    for _ in 0..5 {
        registry.create(stream, &watch("a", b"b", 0)).unwrap();
        registry.create(stream, &watch("a", b"", 0)).unwrap();
    }
    registry.create(other, &watch("a", b"", 0)).unwrap();
    registry.close_stream(stream);
    assert_eq!(registry.counts().watchers, 1);
    registry.publish(vec![put("a", 1)]);
    assert_eq!(seen(&registry.drain(other), 0).len(), 1);
    assert!(registry.drain(stream).is_empty());
}

#[test]
fn a_revision_gap_sends_synced_watchers_back_to_history() {
    let mut log = Log::default();
    let mut registry = Registry::new(Limits::default(), 0);
    let stream = registry.open_stream(Box::new(|| {}));
    let id = registry.create(stream, &watch("k", b"", 0)).unwrap();
    commit(&mut registry, &mut log, vec![put("k", 1)]);
    // A snapshot brought revisions 2..=4 without publishing them.
    log.events
        .extend([put("k", 2), put("other", 3), put("k", 4)]);
    commit(&mut registry, &mut log, vec![put("k", 5)]);
    assert_eq!(registry.counts().unsynced, 1);
    registry.catch_up(&log);
    commit(&mut registry, &mut log, vec![put("k", 6)]);
    let revisions: Vec<i64> = seen(&registry.drain(stream), id)
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    assert_eq!(revisions, vec![1, 2, 4, 5, 6]);
}

#[test]
fn a_replaced_store_resumes_each_watcher_where_it_is_not_past_the_old_revision() {
    let mut log = Log::default();
    let mut registry = Registry::new(Limits::default(), 0);
    let stream = registry.open_stream(Box::new(|| {}));
    commit(&mut registry, &mut log, vec![put("k", 1)]);
    // Asks for revisions from 6 on, while the member is still at 1.
    let future = registry.create(stream, &watch("k", b"", 6)).unwrap();
    // A snapshot brought revisions 2..=7; a catch-up that read the new store already
    // delivered them before the hub heard of the restore.
    log.events.extend([
        put("k", 2),
        put("k", 3),
        put("k", 4),
        put("k", 5),
        put("k", 6),
        put("k", 7),
    ]);
    let caught_up = registry.create(stream, &watch("k", b"", 1)).unwrap();
    registry.catch_up(&log);
    registry.store_replaced(7);
    registry.catch_up(&log);
    commit(&mut registry, &mut log, vec![put("k", 8)]);
    let responses = registry.drain(stream);
    let revisions = |id| -> Vec<i64> { seen(&responses, id).into_iter().map(|(_, r)| r).collect() };
    assert_eq!(revisions(future), vec![6, 7, 8]);
    assert_eq!(revisions(caught_up), vec![1, 2, 3, 4, 5, 6, 7, 8]);
}

/// Many watchers over overlapping prefixes, random interleavings of writes, reads by
/// slow and fast clients and catch-ups: every watcher sees exactly its history.
#[test]
fn random_schedules_deliver_each_watchers_history_exactly_once() {
    for seed in 1..=20u64 {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut log = Log::default();
        let mut registry = Registry::new(
            Limits {
                stream_queue_messages: 4,
                stream_queue_per_watcher: 0,
                catch_up_revisions: 3,
                catch_up_watchers: 5,
                max_response_bytes: 300,
            },
            0,
        );
        let streams: Vec<u64> = (0..4)
            .map(|_| registry.open_stream(Box::new(|| {})))
            .collect();
        let mut outputs: Vec<Vec<WatchResponse>> = vec![Vec::new(); 4];
        // (stream index, watch id, request)
        let mut watchers = Vec::new();
        let prefixes = ["", "a", "ab", "abc", "b", "ba"];
        let mut revision = 0i64;
        for _step in 0..400 {
            match next() % 10 {
                0 | 1 if watchers.len() < 40 => {
                    let s = (next() % 4) as usize;
                    let p = prefixes[(next() % prefixes.len() as u64) as usize];
                    let request = match next() % 3 {
                        0 => watch(p, b"", 0),
                        1 => {
                            let mut end = p.as_bytes().to_vec();
                            match end.last_mut() {
                                Some(last) => *last += 1,
                                None => end = vec![0],
                            }
                            watch(p, &end, 0)
                        }
                        _ => watch(p, b"\0", 0),
                    };
                    let mut request = request;
                    request.start_revision = match next() % 3 {
                        0 => 0,
                        _ => 1 + (next() as i64).rem_euclid(revision + 2),
                    };
                    let id = registry.create(streams[s], &request).unwrap();
                    watchers.push((s, id, request));
                }
                2..=5 => {
                    revision += 1;
                    let count = 1 + next() % 3;
                    let events = (0..count)
                        .map(|_| {
                            let key =
                                ["a", "ab", "abc", "abd", "b", "ba", "c"][(next() % 7) as usize];
                            if next() % 4 == 0 {
                                delete(key, revision)
                            } else {
                                put(key, revision)
                            }
                        })
                        .collect();
                    commit(&mut registry, &mut log, events);
                }
                6 | 7 => {
                    let s = (next() % 4) as usize;
                    let drained = registry.drain(streams[s]);
                    outputs[s].extend(drained);
                }
                _ => {
                    registry.catch_up(&log);
                }
            }
        }
        // Quiesce: everyone reads, catch-ups finish.
        for _ in 0..1000 {
            for s in 0..4 {
                let drained = registry.drain(streams[s]);
                outputs[s].extend(drained);
            }
            if !registry.has_unsynced() {
                break;
            }
            registry.catch_up(&log);
        }
        assert!(!registry.has_unsynced(), "seed {seed}");
        for (s, id, request) in &watchers {
            let start = if request.start_revision == 0 {
                // The created response carries the revision it started after.
                let created = outputs[*s]
                    .iter()
                    .find(|r| r.created && r.watch_id == *id)
                    .unwrap();
                header_rev(created) + 1
            } else {
                request.start_revision
            };
            let expected: Vec<(String, i64)> = log
                .events
                .iter()
                .filter(|e| rev(e) >= start)
                .filter(|e| {
                    in_range(
                        &e.kv.as_ref().unwrap().key,
                        &request.key,
                        &request.range_end,
                    )
                })
                .map(|e| {
                    let kv = e.kv.as_ref().unwrap();
                    (String::from_utf8(kv.key.clone()).unwrap(), kv.mod_revision)
                })
                .collect();
            assert_eq!(
                seen(&outputs[*s], *id),
                expected,
                "seed {seed} watcher {id}"
            );
            // Responses of a watcher never split a revision (no fragment asked).
            let mut last_rev = 0;
            for response in outputs[*s].iter().filter(|r| r.watch_id == *id) {
                if let Some(first) = response.events.first() {
                    assert!(rev(first) > last_rev, "seed {seed}: a revision was split");
                    last_rev = rev(response.events.last().unwrap());
                }
            }
        }
    }
}
