//! Runtime reconfiguration against real `concord` processes: growing and shrinking a
//! cluster with writes in between, a learner refused promotion until it is in sync, a
//! removed member exiting by itself (and refusing to come back with its old data), a
//! restarted member keeping the membership it had, not the one its flags name, a
//! member killed halfway through receiving a snapshot (held there by a relay) installing
//! none of it, and a new voter restarted before it learned the cluster still answering
//! the votes that elect a leader.

use std::time::Duration;

use anyhow::Result;
use concord_tests::relay::Relay;
use concord_tests::{Cluster, free_port};

/// Waits until member `through` lists `voters` voters and `learners` learners; returns
/// their ids.
async fn wait_members(
    cluster: &Cluster,
    through: usize,
    voters: usize,
    learners: usize,
) -> Result<(Vec<u64>, Vec<u64>)> {
    let mut seen = (Vec::new(), Vec::new());
    for _ in 0..100 {
        if let Ok(ids) = cluster.member_ids(through).await {
            if (ids.0.len(), ids.1.len()) == (voters, learners) {
                return Ok(ids);
            }
            seen = ids;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("member {through} lists {seen:?}, not {voters} voters and {learners} learners")
}

async fn put_and_read_everywhere(cluster: &Cluster, key: &str) -> Result<()> {
    // Through a running member: a client of every endpoint may pick a stopped one.
    let first = (0..cluster.members.len())
        .find(|&i| cluster.is_running(i))
        .unwrap_or(0);
    let mut client = cluster.member_client(first).await?;
    client.put(key, "v", None).await?;
    for i in 0..cluster.members.len() {
        if !cluster.is_running(i) {
            continue;
        }
        let mut member = cluster.member_client(i).await?;
        // Linearizable: every voter sees the write at once.
        let got = member.get(key, None).await?;
        assert_eq!(got.kvs().len(), 1, "member {i} misses {key}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn grow_one_to_three_to_five_then_shrink_to_three() -> Result<()> {
    let mut cluster = Cluster::start(1)?;
    put_and_read_everywhere(&cluster, "before").await?;
    for size in 2..=5 {
        let (i, id) = cluster.add_member(false).await?;
        cluster.leader().await?;
        let (voters, _) = wait_members(&cluster, i, size, 0).await?;
        assert!(voters.contains(&id));
        put_and_read_everywhere(&cluster, &format!("at-{size}")).await?;
    }
    // The new members caught up with what was written before they came.
    for i in 1..5 {
        let mut member = cluster.member_client(i).await?;
        assert_eq!(member.get("before", None).await?.kvs().len(), 1);
    }
    for i in [4, 3] {
        cluster.remove_member(i).await?;
        cluster.wait_exit(i, Duration::from_secs(20))?;
    }
    cluster.leader().await?;
    wait_members(&cluster, 0, 3, 0).await?;
    put_and_read_everywhere(&cluster, "after-shrink").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_learner_votes_on_nothing_and_is_promoted_only_in_sync() -> Result<()> {
    let mut cluster = Cluster::start(3)?;
    cluster.leader().await?;
    let mut client = cluster.client().await?;
    // A learner that never started has matched nothing of the leader's log.
    let mut ids = Vec::new();
    let never_started = client
        .member_add(
            ["http://127.0.0.1:1"],
            Some(etcd_client::MemberAddOptions::new().with_is_learner()),
        )
        .await?;
    let id = never_started.member().map(|m| m.id()).unwrap_or(0);
    ids.push(id);
    let refused = client.member_promote(id).await.unwrap_err().to_string();
    assert!(
        refused
            .contains("etcdserver: can only promote a learner member which is in sync with leader"),
        "{refused}"
    );
    let second = client
        .member_add(
            ["http://127.0.0.1:2"],
            Some(etcd_client::MemberAddOptions::new().with_is_learner()),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        second.contains("etcdserver: too many learner members in cluster"),
        "{second}"
    );
    let taken = client
        .member_add([cluster.members[0].peer_url()], None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        taken.contains("etcdserver: Peer URLs already exists"),
        "{taken}"
    );
    client.member_remove(id).await?;
    let gone = client.member_remove(id).await.unwrap_err().to_string();
    assert!(gone.contains("etcdserver: member not found"), "{gone}");

    // A learner that runs catches up, answers serializable reads only, and is promoted.
    let (i, id) = cluster.add_member(true).await?;
    client.put("k", "v", None).await?;
    let mut learner = cluster.member_client(i).await?;
    let refused = learner.put("x", "y", None).await.unwrap_err().to_string();
    assert!(
        refused.contains("etcdserver: rpc not supported for learner"),
        "{refused}"
    );
    let status = learner.status().await?;
    assert!(status.is_learner());
    let mut promoted = false;
    for _ in 0..100 {
        let serializable = etcd_client::GetOptions::new().with_serializable();
        if learner.get("k", Some(serializable)).await?.kvs().len() == 1
            && client.member_promote(id).await.is_ok()
        {
            promoted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(promoted, "the learner was never promoted");
    wait_members(&cluster, 0, 4, 0).await?;
    let not_learner = client.member_promote(id).await.unwrap_err().to_string();
    assert!(
        not_learner.contains("etcdserver: can only promote a learner member"),
        "{not_learner}"
    );
    put_and_read_everywhere(&cluster, "after-promote").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_member_exits_and_cannot_come_back_with_its_data() -> Result<()> {
    let mut cluster = Cluster::start(3)?;
    cluster.leader().await?;
    put_and_read_everywhere(&cluster, "k").await?;
    let leader = cluster.leader().await?;
    // Remove a follower, then the leader itself.
    let follower = (0..3).find(|&i| i != leader).unwrap_or(0);
    for i in [follower, leader] {
        cluster.remove_member(i).await?;
        cluster.wait_exit(i, Duration::from_secs(20))?;
        assert!(
            cluster
                .log(i)
                .contains("the member has been permanently removed from the cluster"),
            "member {i} log:\n{}",
            cluster.log(i)
        );
    }
    let survivor = (0..3).find(|&i| i != leader && i != follower).unwrap_or(0);
    wait_members(&cluster, survivor, 1, 0).await?;
    put_and_read_everywhere(&cluster, "alone").await?;
    // With its old data dir the removed member is refused by the cluster, and stops.
    cluster.spawn(follower)?;
    cluster.wait_exit(follower, Duration::from_secs(20))?;
    Ok(())
}

/// A member removed while a write waits on it (it handed the write to the leader, and a
/// relay keeps the cluster's answers from it) answers that write with etcd's
/// "etcdserver: server stopped" once it learns of its removal, instead of leaving it to
/// its timeout (which held up the member's exit by seconds), and exits.
#[tokio::test(flavor = "multi_thread")]
async fn a_removed_member_answers_the_write_waiting_on_it_and_exits() -> Result<()> {
    let mut cluster = Cluster::start(3)?;
    cluster.leader().await?;
    let listen_peer_port = free_port();
    let relay = Relay::start(listen_peer_port, None).await?;
    let (i, _, initial_cluster) = cluster
        .announce_member_on(false, relay.port, listen_peer_port)
        .await?;
    cluster.start_added(i, &initial_cluster)?;
    cluster.wait_ready(i)?;
    wait_caught_up(&cluster, i).await?;

    // From now on the member hears nothing from the cluster; what it sends still arrives.
    relay.cut_and_hold();
    let mut member = cluster.member_client(i).await?;
    let write = tokio::spawn(async move { member.put("pending", "v", None).await });
    // The leader applied the write; the member waits to hear that it did.
    let mut client = cluster.member_client(0).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while client.get("pending", None).await?.kvs().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the write never reached the leader; log:\n{}",
            cluster.log(i)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.remove_member(i).await?;
    let answer = within(60, "the waiting write's answer".into(), write).await??;
    let error = answer
        .err()
        .map(|e| e.to_string())
        .unwrap_or_else(|| "answered OK".into());
    assert!(
        error.contains("etcdserver: server stopped"),
        "{error}; log:\n{}",
        cluster.log(i)
    );
    cluster.wait_exit(i, Duration::from_secs(20))?;
    assert!(
        cluster
            .log(i)
            .contains("the member has been permanently removed from the cluster"),
        "{}",
        cluster.log(i)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_member_keeps_its_membership_view() -> Result<()> {
    let mut cluster = Cluster::start(3)?;
    cluster.leader().await?;
    let (added, added_id) = cluster.add_member(false).await?;
    cluster.leader().await?;
    // m1's flags still name the three founders; its store knows four members.
    cluster.stop(1);
    cluster.spawn(1)?;
    cluster.wait_ready(1)?;
    cluster.leader().await?;
    let (voters, _) = wait_members(&cluster, 1, 4, 0).await?;
    assert!(voters.contains(&added_id));
    // And it still talks to the member its flags do not name.
    cluster.stop(0);
    cluster.stop(2);
    cluster.spawn(0)?;
    cluster.wait_ready(0)?;
    cluster.leader().await?;
    let mut client = cluster.member_client(added).await?;
    client.put("k", "v", None).await?;
    cluster.spawn(2)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_member_catches_up_from_a_snapshot_streamed_in_chunks() -> Result<()> {
    // Snapshot at once, so the new member catches up from one (several 1 MiB chunks).
    let mut cluster = Cluster::start_with(1, &["--snapshot-count", "10"])?;
    cluster.leader().await?;
    let mut client = cluster.member_client(0).await?;
    for i in 0..40 {
        client
            .put(format!("big-{i:02}"), vec![b'x'; 100 * 1024], None)
            .await?;
    }
    let (i, _) = cluster.add_member(false).await?;
    let mut member = cluster.member_client(i).await?;
    let serializable = etcd_client::GetOptions::new()
        .with_prefix()
        .with_serializable()
        .with_keys_only();
    let mut seen = 0;
    for _ in 0..100 {
        seen = member
            .get("big-", Some(serializable.clone()))
            .await?
            .kvs()
            .len();
        if seen == 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, 40, "log:\n{}", cluster.log(i));
    assert!(
        cluster.log(i).contains("received a snapshot"),
        "{}",
        cluster.log(i)
    );
    // The received file was installed and is gone.
    let incoming = cluster.members[i]
        .data_dir
        .join("member")
        .join("snap-stream");
    assert_eq!(std::fs::read_dir(incoming)?.count(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn force_new_cluster_restarts_a_member_alone_with_its_data() -> Result<()> {
    let mut cluster = Cluster::start(3)?;
    cluster.leader().await?;
    put_and_read_everywhere(&cluster, "kept").await?;
    for i in 0..3 {
        cluster.stop(i);
    }
    cluster.extra_args.push("--force-new-cluster".into());
    cluster.spawn(0)?;
    cluster.wait_ready(0)?;
    let (voters, _) = wait_members(&cluster, 0, 1, 0).await?;
    assert_eq!(voters, vec![cluster.member_id(0).await?]);
    let mut client = cluster.member_client(0).await?;
    assert_eq!(client.get("kept", None).await?.kvs().len(), 1);
    client.put("after", "v", None).await?;
    Ok(())
}

/// Puts `count` keys `{prefix}{n:06}` = `v{n}` in txns of 128 puts (etcd's
/// `--max-txn-ops`), four txns in flight.
async fn put_many(cluster: &Cluster, through: usize, prefix: &str, count: usize) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..4 {
        let mut client = cluster.member_client(through).await?;
        let prefix = prefix.to_string();
        tasks.spawn(async move {
            let mut start = lane * 128;
            while start < count {
                let ops: Vec<etcd_client::TxnOp> = (start..(start + 128).min(count))
                    .map(|n| {
                        etcd_client::TxnOp::put(format!("{prefix}{n:06}"), format!("v{n}"), None)
                    })
                    .collect();
                client.txn(etcd_client::Txn::new().and_then(ops)).await?;
                start += 4 * 128;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// Reads every key under `prefix` through member `i` (linearizable, in pages), as
/// key -> value.
async fn read_all(
    cluster: &Cluster,
    i: usize,
    prefix: &str,
) -> Result<std::collections::BTreeMap<String, String>> {
    let mut client = cluster.member_client(i).await?;
    let end = format!("{}\u{7f}", prefix);
    let mut from = prefix.to_string();
    let mut all = std::collections::BTreeMap::new();
    loop {
        let page = etcd_client::GetOptions::new()
            .with_range(end.clone())
            .with_limit(20_000);
        let got = client.get(from.clone(), Some(page)).await?;
        for kv in got.kvs() {
            all.insert(kv.key_str()?.to_string(), kv.value_str()?.to_string());
        }
        match got.kvs().last() {
            Some(last) if got.more() => from = format!("{}\0", last.key_str()?),
            _ => return Ok(all),
        }
    }
}

/// Waits until member `i` has applied what the leader had committed when the wait began.
async fn wait_caught_up(cluster: &Cluster, i: usize) -> Result<()> {
    let leader = cluster.leader().await?;
    let target = cluster
        .member_client(leader)
        .await?
        .status()
        .await?
        .raft_index();
    for _ in 0..1200 {
        if let Ok(mut client) = cluster.member_client(i).await
            && let Ok(status) = client.status().await
            && status.raft_applied_index() >= target
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("member {i} did not catch up; log:\n{}", cluster.log(i))
}

/// A writer that puts `live/{n}` = `w{n}` through the members listed in `endpoints`
/// (round robin) until told to stop; returns the numbers of the puts that were
/// acknowledged.
fn spawn_writer(
    endpoints: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Vec<usize>> {
    tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        let mut clients: std::collections::HashMap<String, etcd_client::Client> =
            std::collections::HashMap::new();
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(3));
        let mut n = 0;
        while !*stop.borrow() {
            let listed = endpoints.lock().map(|e| e.clone()).unwrap_or_default();
            let Some(url) = listed.get(n % listed.len().max(1)).cloned() else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            if !clients.contains_key(&url) {
                match etcd_client::Client::connect([url.clone()], Some(options.clone())).await {
                    Ok(client) => {
                        clients.insert(url.clone(), client);
                    }
                    Err(_) => {
                        n += 1;
                        continue;
                    }
                }
            }
            let Some(client) = clients.get_mut(&url) else {
                continue;
            };
            if client
                .put(format!("live/{n:06}"), format!("w{n}"), None)
                .await
                .is_ok()
            {
                acknowledged.push(n);
            }
            n += 1;
        }
        acknowledged
    })
}

/// `step`'s outcome, or a failure naming `what` if it takes more than `seconds`: a step
/// that hangs fails the test with its name instead of stalling the suite.
async fn within<T>(
    seconds: u64,
    what: String,
    step: impl std::future::Future<Output = T>,
) -> Result<T> {
    tokio::time::timeout(Duration::from_secs(seconds), step)
        .await
        .map_err(|_| anyhow::anyhow!("{what} took more than {seconds} s"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_replacement_of_every_member_under_writes_loses_no_acknowledged_write()
-> Result<()> {
    const KEYS: usize = 100_000;
    // A short log after each snapshot, so every new member catches up from one.
    let mut cluster = Cluster::start_with(3, &["--snapshot-count", "100"])?;
    let leader = cluster.leader().await?;
    put_many(&cluster, leader, "bulk/", KEYS).await?;

    let endpoints = std::sync::Arc::new(std::sync::Mutex::new(cluster.endpoints()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let writer = spawn_writer(endpoints.clone(), stopped);
    for old in 0..3 {
        let old_url = cluster.members[old].client_url();
        endpoints.lock().unwrap().retain(|e| *e != old_url);
        within(
            120,
            format!("removing member {old}"),
            cluster.remove_member(old),
        )
        .await??;
        assert_eq!(cluster.wait_exit(old, Duration::from_secs(30))?, Some(0));
        let (new, _) = within(
            180,
            format!("adding member {}", cluster.members.len()),
            cluster.add_member(false),
        )
        .await??;
        wait_caught_up(&cluster, new).await?;
        assert!(
            cluster.log(new).contains("received a snapshot"),
            "member {new} did not catch up by snapshot; log:\n{}",
            cluster.log(new)
        );
        endpoints
            .lock()
            .unwrap()
            .push(cluster.members[new].client_url());
    }
    stop.send(true)?;
    let acknowledged = within(60, "stopping the writer".into(), writer).await??;
    assert!(!acknowledged.is_empty(), "no write was acknowledged");

    for member in 3..6 {
        let bulk = within(
            120,
            format!("reading member {member}"),
            read_all(&cluster, member, "bulk/"),
        )
        .await??;
        assert_eq!(bulk.len(), KEYS, "member {member}");
        for (n, (key, value)) in bulk.iter().enumerate() {
            assert_eq!(
                (key.as_str(), value.as_str()),
                (format!("bulk/{n:06}").as_str(), format!("v{n}").as_str())
            );
        }
        let live = read_all(&cluster, member, "live/").await?;
        for n in &acknowledged {
            assert_eq!(
                live.get(&format!("live/{n:06}")),
                Some(&format!("w{n}")),
                "member {member} lost acknowledged write {n}"
            );
        }
    }
    Ok(())
}

/// The size of the largest file directly in `dir` (0 if none).
fn largest_file(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok().map(|m| m.len()))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Waits (up to `seconds`) until `condition` holds.
async fn wait_until(seconds: u64, what: &str, mut condition: impl FnMut() -> bool) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    while !condition() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{what}: not within {seconds} s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A new member's peer traffic goes through a relay that lets the first few MiB of a
/// 24 MiB snapshot through and holds the rest: the member is SIGKILLed with part of the
/// snapshot on disk. Started again (its peers still held off), it has dropped that part
/// and installed none of it; once the relay opens, it catches up by a fresh snapshot and
/// holds exactly the leader's store. The new member joins as a learner, so the leader
/// keeps its quorum (of one) while the member is down and the cluster takes writes.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_killed_while_receiving_a_snapshot_installs_none_of_it_and_catches_up_whole()
-> Result<()> {
    const KEYS: usize = 240;
    const VALUE_BYTES: usize = 100 * 1024;
    const LET_THROUGH: u64 = 4 * 1024 * 1024;
    // Snapshot at once, so the new member catches up from one.
    let mut cluster = Cluster::start_with(1, &["--snapshot-count", "10"])?;
    cluster.leader().await?;
    let mut client = cluster.member_client(0).await?;
    let value = |n: usize| format!("{n:06}").repeat(VALUE_BYTES / 6);
    for n in 0..KEYS {
        client.put(format!("big/{n:04}"), value(n), None).await?;
    }
    let listen_peer_port = free_port();
    let relay = Relay::start(listen_peer_port, Some(LET_THROUGH)).await?;
    let (i, id, initial_cluster) = cluster
        .announce_member_on(true, relay.port, listen_peer_port)
        .await?;
    let incoming = cluster.members[i]
        .data_dir
        .join("member")
        .join("snap-stream");

    // 1. Part of the snapshot arrives, the rest waits in the relay: SIGKILL.
    cluster.start_added(i, &initial_cluster)?;
    wait_until(120, "part of the snapshot arriving", || {
        largest_file(&incoming) >= 2 * 1024 * 1024
    })
    .await?;
    cluster.kill(i);
    let partial = largest_file(&incoming);
    assert!(
        partial < (KEYS * VALUE_BYTES) as u64,
        "the whole snapshot got through: {partial} bytes, {} forwarded",
        relay.forwarded()
    );
    assert!(
        !cluster.log(i).contains("received a snapshot"),
        "{}",
        cluster.log(i)
    );
    // The leader kept its quorum: the cluster takes writes while the member is down.
    client.put("while-down", "v", None).await?;

    // 2. Started again while its peers cannot reach it: the part it had is gone, and
    // nothing of it was installed.
    relay.cut_and_hold();
    cluster.start_added(i, &initial_cluster)?;
    cluster.wait_ready(i)?;
    assert_eq!(std::fs::read_dir(&incoming)?.count(), 0);
    let mut member = cluster.member_client(i).await?;
    let count_only = etcd_client::GetOptions::new()
        .with_prefix()
        .with_serializable()
        .with_count_only();
    assert_eq!(
        member.get("big/", Some(count_only.clone())).await?.count(),
        0
    );

    // 3. Its peers reach it again: it catches up by a snapshot, whole.
    relay.open();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let count = member.get("big/", Some(count_only.clone())).await?.count();
        assert!(
            count == 0 || count == KEYS as i64,
            "a partial store: {count} keys"
        );
        if count == KEYS as i64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never caught up; log:\n{}",
            cluster.log(i)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        cluster.log(i).contains("received a snapshot"),
        "{}",
        cluster.log(i)
    );
    wait_caught_up(&cluster, i).await?;
    // In sync, it is promoted (a learner answers no HashKV), and holds the same store as
    // the leader's, every revision of it (etcd's HashKV).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while let Err(error) = client.member_promote(id).await {
        assert!(
            std::time::Instant::now() < deadline,
            "never promoted: {error}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_members(&cluster, i, 2, 0).await?;
    let revision = client
        .get("big/", None)
        .await?
        .header()
        .map_or(0, |h| h.revision());
    let expected = client.hash_kv(revision).await?.hash();
    assert_eq!(member.hash_kv(revision).await?.hash(), expected);
    let got = member.get("big/0007", None).await?;
    assert_eq!(got.kvs()[0].value(), value(7).as_bytes());
    assert_eq!(member.get("while-down", None).await?.kvs().len(), 1);
    // The received file was installed and deleted.
    assert_eq!(std::fs::read_dir(&incoming)?.count(), 0);
    Ok(())
}

/// A voter joins a one-member cluster (which from then on needs its vote) and is killed
/// before it has installed anything: started again, its store names no other member.
/// The leader's calls name the leader's peer URLs, so the member answers them (etcd's
/// "remote" peers): a leader is elected and the member catches up. Without that it heard
/// the candidate's votes and its answers went nowhere: no leader, ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_voter_restarted_before_it_learned_the_cluster_answers_and_a_leader_is_elected()
-> Result<()> {
    const KEYS: usize = 50;
    let mut cluster = Cluster::start_with(1, &["--snapshot-count", "10"])?;
    cluster.leader().await?;
    let mut client = cluster.member_client(0).await?;
    for n in 0..KEYS {
        client
            .put(format!("k/{n:03}"), format!("v{n}"), None)
            .await?;
    }
    // Nothing the cluster sends the new member gets through until the relay opens.
    let listen_peer_port = free_port();
    let relay = Relay::start(listen_peer_port, Some(0)).await?;
    let (i, _, initial_cluster) = cluster
        .announce_member_on(false, relay.port, listen_peer_port)
        .await?;
    cluster.start_added(i, &initial_cluster)?;
    // Serving: its identity is stored, so the next start is a restart, not a join.
    cluster.wait_ready(i)?;
    cluster.kill(i);
    assert_eq!(relay.forwarded(), 0);
    // Without the new member's vote the leader steps down (it checks its quorum).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while client.status().await?.leader() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the leader never stepped down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    cluster.start_added(i, &initial_cluster)?;
    cluster.wait_ready(i)?;
    relay.open();
    let leader = cluster.leader().await?;
    let mut through_leader = cluster.member_client(leader).await?;
    through_leader.put("after", "v", None).await?;
    wait_caught_up(&cluster, i).await?;
    let mut member = cluster.member_client(i).await?;
    let all = etcd_client::GetOptions::new()
        .with_prefix()
        .with_count_only();
    assert_eq!(member.get("k/", Some(all)).await?.count(), KEYS as i64);
    assert_eq!(member.get("after", None).await?.kvs().len(), 1);
    assert!(
        cluster.log(i).contains("added new remote peer"),
        "{}",
        cluster.log(i)
    );
    Ok(())
}
