//! Matching throughput: 10,000 synced watchers (single keys, prefixes of varied
//! depth, a few from-key ranges), events published one revision at a time.
//! Run: `cargo bench -p concord-watch --bench matching` (knobs: WATCHERS, EVENTS,
//! CATCH_ALL=0 to leave out the 1 % of watchers on every key).

use std::collections::VecDeque;
use std::time::Instant;

use concord_proto::etcdserverpb::WatchCreateRequest;
use concord_proto::mvccpb::{Event, KeyValue};
use concord_watch::{Limits, Outgoing, Registry, StreamId};

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Events in the stream's queued responses (the queue is emptied).
fn drain_events(registry: &mut Registry, stream: StreamId, out: &mut VecDeque<Outgoing>) -> usize {
    registry.drain_into(stream, out);
    let events = out.iter().map(|r| r.events.len()).sum();
    out.clear();
    events
}

fn main() {
    let watchers = knob("WATCHERS", 10_000);
    let events = knob("EVENTS", 200_000);
    // Whether 1 % of the watchers watch every key (each then gets every event).
    let catch_all = knob("CATCH_ALL", 1) != 0;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut registry = Registry::new(
        Limits {
            stream_queue_messages: usize::MAX,
            ..Limits::default()
        },
        0,
    );
    let streams: Vec<u64> = (0..100)
        .map(|_| registry.open_stream(Box::new(|| {})))
        .collect();
    let key = |a: u64, b: u64, c: u64| format!("/registry/{a:02}/{b:02}/{c:04}");
    let started = Instant::now();
    for n in 0..watchers {
        let stream = streams[n % streams.len()];
        let r = next();
        let (a, b, c) = (r % 50, (r >> 8) % 50, (r >> 16) % 10_000);
        let request = match r % 10 {
            0..=5 => WatchCreateRequest {
                key: key(a, b, c).into_bytes(),
                ..Default::default()
            },
            6..=8 => WatchCreateRequest {
                key: format!("/registry/{a:02}/{b:02}/").into_bytes(),
                range_end: format!("/registry/{a:02}/{b:02}0").into_bytes(),
                ..Default::default()
            },
            _ if catch_all && r % 100 == 9 => WatchCreateRequest {
                key: b"/registry/".to_vec(),
                range_end: vec![0],
                ..Default::default()
            },
            _ => WatchCreateRequest {
                key: format!("/registry/{a:02}/").into_bytes(),
                range_end: format!("/registry/{a:02}0").into_bytes(),
                ..Default::default()
            },
        };
        registry
            .create(stream, &request)
            .expect("creating a bench watcher");
    }
    let create_time = started.elapsed();
    for &stream in &streams {
        registry.drain(stream);
    }
    let batch: Vec<Vec<Event>> = (0..events)
        .map(|n| {
            let r = next();
            vec![Event {
                kv: Some(KeyValue {
                    key: key(r % 50, (r >> 8) % 50, (r >> 16) % 10_000).into_bytes(),
                    value: vec![b'x'; 64],
                    mod_revision: n as i64 + 1,
                    ..Default::default()
                }),
                ..Default::default()
            }]
        })
        .collect();
    let started = Instant::now();
    let mut delivered = 0usize;
    let mut out = VecDeque::new();
    for (n, events) in batch.into_iter().enumerate() {
        registry.publish(events);
        if n % 1000 == 999 {
            for &stream in &streams {
                delivered += drain_events(&mut registry, stream, &mut out);
            }
        }
    }
    for &stream in &streams {
        delivered += drain_events(&mut registry, stream, &mut out);
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{watchers} watchers created in {:.1} ms; {events} events published in {elapsed:.2} s: \
         {:.0} events/s matched, {delivered} deliveries ({:.0} deliveries/s)",
        create_time.as_secs_f64() * 1000.0,
        events as f64 / elapsed,
        delivered as f64 / elapsed
    );
}
