//! Watch against real members: many watchers on overlapping prefixes while writers run
//! (some created at past revisions, some stalling then resuming), and a watch on a
//! follower across a leader kill. Every watcher's stream must equal the history of its
//! range, exactly once and in order.

use std::time::Duration;

use concord_tests::Cluster;
use etcd_client::{EventType, WatchOptions, WatchStream};

/// One write as the writers saw it acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Write {
    key: String,
    revision: i64,
    delete: bool,
}

fn prefix_of(n: usize) -> String {
    // 1 + 5 + 25 overlapping prefixes: "w/", "w/a/", "w/a/b/".
    match n % 31 {
        0 => "w/".to_string(),
        m if m <= 5 => format!("w/{}/", m - 1),
        m => format!("w/{}/{}/", (m - 6) / 5, (m - 6) % 5),
    }
}

async fn writer(
    client: &mut etcd_client::Client,
    seed: u64,
    count: usize,
) -> anyhow::Result<Vec<Write>> {
    let mut state = seed | 1;
    let mut writes = Vec::new();
    for _ in 0..count {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let key = format!("w/{}/{}/{}", state % 5, (state >> 8) % 5, (state >> 16) % 4);
        if state.is_multiple_of(5) {
            let response = client.delete(key.clone(), None).await?;
            if response.deleted() > 0 {
                let revision = response.header().map(|h| h.revision()).unwrap_or(0);
                writes.push(Write {
                    key,
                    revision,
                    delete: true,
                });
            }
        } else {
            let response = client.put(key.clone(), format!("{state}"), None).await?;
            let revision = response.header().map(|h| h.revision()).unwrap_or(0);
            writes.push(Write {
                key,
                revision,
                delete: false,
            });
        }
    }
    Ok(writes)
}

fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map(|h| h.revision()).unwrap_or(0)
}

/// Puts `key`, returns the revision the put was acknowledged at.
async fn put_revision(
    client: &mut etcd_client::Client,
    key: &str,
    value: String,
) -> anyhow::Result<i64> {
    let response = client.put(key, value, None).await?;
    Ok(response.header().map(|h| h.revision()).unwrap_or(0))
}

/// Reads a watcher's stream until it has `expected` events (or times out); returns the
/// events seen and the start revision its created response implies.
async fn collect(stream: &mut WatchStream, expected: usize) -> anyhow::Result<Vec<Write>> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < expected {
        let message = tokio::time::timeout_at(deadline, stream.message()).await;
        let Ok(message) = message else {
            anyhow::bail!("timed out with {} of {expected} events", seen.len());
        };
        let Some(response) = message? else {
            anyhow::bail!("stream ended with {} of {expected} events", seen.len());
        };
        anyhow::ensure!(!response.canceled(), "canceled: {response:?}");
        for event in response.events() {
            let kv = event.kv().expect("events carry kv");
            seen.push(Write {
                key: kv.key_str()?.to_string(),
                revision: kv.mod_revision(),
                delete: event.event_type() == EventType::Delete,
            });
        }
    }
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_watchers_see_exactly_their_ranges_history() -> anyhow::Result<()> {
    let cluster = Cluster::start(1)?;
    let mut client = cluster.client().await?;
    let first = client.put("w/0/0/0", "seed", None).await?;
    let base = first.header().map(|h| h.revision()).unwrap_or(0);
    let mut history = vec![Write {
        key: "w/0/0/0".into(),
        revision: base,
        delete: false,
    }];

    // Stalling watchers: 10 on "big/", each on its own connection, created before the writes
    // and not read until every write is done.
    let mut stalled = Vec::new();
    for n in 0..10 {
        let mut own = cluster.client().await?;
        let mut options = WatchOptions::new().with_prefix();
        if n % 2 == 0 {
            options = options.with_start_revision(base);
        }
        let mut stream = own.watch("big/", Some(options)).await?;
        let created = stream.message().await?.expect("created response");
        let start = if n % 2 == 0 {
            base
        } else {
            created.header().map(|h| h.revision()).unwrap_or(0) + 1
        };
        stalled.push((own, stream, start));
    }
    // Writers start; watchers are created while they run. One writer puts large values
    // under "big/", which only the stalling watchers watch: their backlog outgrows the
    // HTTP/2 window and the server's queue, so the server sets them aside.
    let mut writers = Vec::new();
    for seed in 1..=3u64 {
        let mut c = cluster.client().await?;
        writers.push(tokio::spawn(async move {
            writer(&mut c, seed * 7919, 400).await
        }));
    }
    let mut big_client = cluster.client().await?;
    let big_writer = tokio::spawn(async move {
        let mut writes = Vec::new();
        for i in 0..400 {
            let key = format!("big/{}", i % 7);
            let response = big_client
                .put(key.clone(), vec![b'x'; 16 * 1024], None)
                .await?;
            let revision = response.header().map(|h| h.revision()).unwrap_or(0);
            writes.push(Write {
                key,
                revision,
                delete: false,
            });
        }
        anyhow::Ok(writes)
    });
    // Readers: 990 watchers on overlapping prefixes, 30 per connection, each read by
    // its own task from the start.
    let mut readers = Vec::new();
    let mut connection = cluster.client().await?;
    for n in 0..990usize {
        if n % 30 == 29 {
            connection = cluster.client().await?;
        }
        let prefix = prefix_of(n);
        let mut options = WatchOptions::new().with_prefix();
        let past = (n % 3 == 0).then(|| base + (n as i64 % 7));
        if let Some(start) = past {
            options = options.with_start_revision(start);
        }
        let mut stream = connection.watch(prefix.clone(), Some(options)).await?;
        let created = stream.message().await?.expect("created response");
        assert!(created.created());
        let start = past.unwrap_or(created.header().map(|h| h.revision()).unwrap_or(0) + 1);
        let (count_tx, count_rx) = tokio::sync::oneshot::channel::<usize>();
        readers.push((
            prefix,
            start,
            count_tx,
            tokio::spawn(async move {
                let expected = count_rx.await?;
                collect(&mut stream, expected).await
            }),
        ));
    }
    for handle in writers {
        history.extend(handle.await??);
    }
    history.extend(big_writer.await??);
    history.sort_by_key(|w| w.revision);
    let expected = |prefix: &str, start: i64| -> Vec<Write> {
        history
            .iter()
            .filter(|w| w.key.starts_with(prefix) && w.revision >= start)
            .cloned()
            .collect()
    };
    let mut checked = 0;
    let mut pending = Vec::new();
    for (prefix, start, count_tx, task) in readers {
        let want = expected(&prefix, start);
        let _ = count_tx.send(want.len());
        pending.push((prefix, start, want, task));
    }
    for (prefix, start, want, task) in pending {
        let got = task.await??;
        assert_eq!(got, want, "watcher on {prefix} from {start}");
        checked += 1;
    }
    for (_client, mut stream, start) in stalled {
        let want = expected("big/", start);
        assert_eq!(want.len(), 400);
        let got = collect(&mut stream, want.len()).await?;
        assert_eq!(got, want, "stalled watcher from {start}");
        checked += 1;
    }
    assert_eq!(checked, 1000);
    // The stalled streams' backlog outgrew their buffers: the server set them aside
    // and they caught up from history.
    assert!(
        cluster.log(0).contains("slow watchers set aside"),
        "no watcher was set aside; the stall did not exercise catch-up"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_on_a_follower_survives_a_leader_kill() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3)?;
    let leader = cluster.leader().await?;
    let follower = (leader + 1) % 3;
    let writer_member = (leader + 2) % 3;
    let mut watch_client = cluster.member_client(follower).await?;
    let mut stream = watch_client
        .watch("k", Some(WatchOptions::new().with_prefix()))
        .await?;
    let created = stream.message().await?.expect("created");
    let start = created.header().map(|h| h.revision()).unwrap_or(0) + 1;

    let mut history = Vec::new();
    let mut client = cluster.member_client(follower).await?;
    for i in 0..20 {
        let response = client.put(format!("k{i}"), "before", None).await?;
        history.push(Write {
            key: format!("k{i}"),
            revision: response.header().map(|h| h.revision()).unwrap_or(0),
            delete: false,
        });
    }
    cluster.kill(leader);
    let new_leader = cluster.leader().await?;
    assert_ne!(new_leader, leader);
    let mut client = cluster.member_client(writer_member).await?;
    for i in 20..40 {
        let response = client.put(format!("k{i}"), "after", None).await?;
        history.push(Write {
            key: format!("k{i}"),
            revision: response.header().map(|h| h.revision()).unwrap_or(0),
            delete: false,
        });
    }
    let want: Vec<Write> = history
        .into_iter()
        .filter(|w| w.revision >= start)
        .collect();
    let got = collect(&mut stream, want.len()).await?;
    assert_eq!(got, want);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_start_is_created_then_canceled_with_the_compact_revision() -> anyhow::Result<()>
{
    let cluster = Cluster::start(1)?;
    let mut client = cluster.client().await?;
    for i in 0..5 {
        client.put("c", format!("{i}"), None).await?;
    }
    let current = client
        .get("c", None)
        .await?
        .header()
        .map(|h| h.revision())
        .unwrap_or(0);
    client.compact(current - 1, None).await?;
    let mut stream = client
        .watch(
            "c",
            Some(WatchOptions::new().with_start_revision(current - 3)),
        )
        .await?;
    let created = stream.message().await?.expect("created");
    assert!(created.created() && !created.canceled());
    let canceled = stream.message().await?.expect("cancel");
    assert!(canceled.canceled());
    assert_eq!(canceled.compact_revision(), current - 1);
    // From the compact revision itself: what compaction kept of it, then the rest.
    let mut stream = client
        .watch(
            "c",
            Some(WatchOptions::new().with_start_revision(current - 1)),
        )
        .await?;
    assert!(stream.message().await?.expect("created").created());
    let got = collect(&mut stream, 2).await?;
    let revisions: Vec<i64> = got.iter().map(|w| w.revision).collect();
    assert_eq!(revisions, vec![current - 1, current]);
    Ok(())
}

/// Events reach the watchers after the writes were acknowledged (the fan-out runs beside
/// the apply loop): a watch created after a put's answer, from "now", must still start
/// after that put, even while a writer and two thousand watchers of other keys keep the
/// fan-out busy (so the put's events often wait behind earlier ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_now_never_reports_a_write_acknowledged_before_it() -> anyhow::Result<()> {
    let cluster = Cluster::start(1)?;
    let mut busy = cluster.client().await?;
    let crowd_options = || Some(WatchOptions::new().with_prefix());
    let mut crowd = busy.watch("crowd/", crowd_options()).await?;
    for _ in 1..2000 {
        crowd.watch("crowd/", crowd_options()).await?;
    }
    // Read, so the crowd's events keep flowing rather than being set aside.
    let reader = tokio::spawn(async move {
        let _owner = busy;
        while let Ok(Some(_)) = crowd.message().await {}
    });
    let mut crowd_writer = cluster.client().await?;
    let writer = tokio::spawn(async move {
        for n in 0u64.. {
            if crowd_writer
                .put(format!("crowd/{}", n % 16), "x", None)
                .await
                .is_err()
            {
                break;
            }
        }
    });

    let mut client = cluster.client().await?;
    let mut watching = cluster.client().await?;
    let mut stream = watching.watch("unrelated", None).await?;
    assert!(stream.message().await?.expect("created").created());
    for round in 0..100 {
        let acknowledged = put_revision(&mut client, "k", format!("before {round}")).await?;
        stream.watch("k", None).await?;
        let created = loop {
            let response = stream.message().await?.expect("created response");
            if response.created() {
                break response;
            }
        };
        let id = created.watch_id();
        let created_at = created.header().map(|h| h.revision()).unwrap_or(0);
        assert!(
            created_at >= acknowledged,
            "round {round}: created at {created_at}, the put was acknowledged at {acknowledged}"
        );
        let after = put_revision(&mut client, "k", format!("after {round}")).await?;
        let first = loop {
            let response = stream.message().await?.expect("an event");
            if response.watch_id() == id && !response.events().is_empty() {
                break response;
            }
        };
        let revision = first.events()[0].kv().map(|kv| kv.mod_revision());
        assert_eq!(
            revision,
            Some(after),
            "round {round}: the first event of a watch created after the put at \
             {acknowledged} was acknowledged"
        );
        stream.cancel(id).await?;
    }
    writer.abort();
    reader.abort();
    Ok(())
}

/// Members skip reading previous values while no watcher wants them. Watchers that ask
/// for them, created while a writer overwrites a key, must still get every overwrite's
/// previous value, whether or not the round that wrote it knew of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prev_kv_watchers_created_mid_stream_get_every_previous_value() -> anyhow::Result<()> {
    /// Overwrites before the first watcher is created, and after the last one is.
    const BEFORE: u64 = 50;
    const AFTER: u64 = 100;
    let cluster = Cluster::start(1)?;
    let mut writer_client = cluster.client().await?;
    // One writer and nothing else: value n is written at revision base + n.
    let base = revision_of(writer_client.put("p", "0", None).await?.header());
    let (written_tx, mut written) = tokio::sync::watch::channel(0u64);
    let (all_created_tx, all_created) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(async move {
        let mut n = 0u64;
        let mut last = None;
        while last != Some(n) {
            n += 1;
            let put = writer_client.put("p", format!("{n}"), None).await?;
            let revision = revision_of(put.header());
            anyhow::ensure!(
                revision == base + n as i64,
                "put {n} at revision {revision}"
            );
            written_tx.send_replace(n);
            if last.is_none() && *all_created.borrow() {
                last = Some(n + AFTER);
            }
        }
        writer_client.delete("p", None).await?;
        anyhow::Ok(n)
    });
    written.wait_for(|n| *n >= BEFORE).await?;
    let mut watchers = Vec::new();
    for _ in 0..20 {
        let mut own = cluster.client().await?;
        let options = WatchOptions::new().with_prev_key();
        let mut stream = own.watch("p", Some(options)).await?;
        let created = stream.message().await?.expect("created");
        assert!(created.created());
        // The watch starts after the revision it was created at: its first event is
        // the overwrite after the value current then.
        let created_value = (revision_of(created.header()) - base) as u64;
        watchers.push((
            created_value,
            tokio::spawn(async move {
                let _owner = own;
                let mut next = created_value + 1;
                loop {
                    let Some(response) = stream.message().await? else {
                        anyhow::bail!("the stream ended");
                    };
                    for event in response.events() {
                        let kv = event.kv().expect("events carry kv");
                        let prev = event.prev_kv();
                        if event.event_type() == EventType::Delete {
                            let prev = prev.expect("a delete carries the deleted value");
                            anyhow::ensure!(prev.value_str()? == (next - 1).to_string());
                            return anyhow::Ok(next - 1 - created_value);
                        }
                        let value: u64 = kv.value_str()?.parse()?;
                        anyhow::ensure!(value == next, "expected the overwrite to {next}: {kv:?}");
                        let prev = prev.ok_or_else(|| {
                            anyhow::anyhow!("the overwrite to {value} came without prev_kv")
                        })?;
                        anyhow::ensure!(prev.value_str()? == (value - 1).to_string());
                        next += 1;
                    }
                }
            }),
        ));
    }
    all_created_tx.send_replace(true);
    let last = writer.await??;
    for (created_value, watcher) in watchers {
        assert!(
            (BEFORE..=last - AFTER).contains(&created_value),
            "created mid-stream: at value {created_value} of {last}"
        );
        let checked = tokio::time::timeout(Duration::from_secs(60), watcher).await???;
        assert_eq!(
            checked,
            last - created_value,
            "a watcher created at value {created_value} checks every later overwrite"
        );
    }
    Ok(())
}
