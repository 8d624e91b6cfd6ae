//! Leases against real members: grant, attach, revoke, expiry (with the DELETE events
//! watchers see), keep-alive through a follower, leader failure and restarts.
//!
//! Timing: the default election timeout is 1 s, so the minimum TTL is 2 s and a new
//! leader extends every lease by 1 s. The tests assert the order of events (revisions,
//! which of two leases outlived the other, a remaining TTL before and after a renewal)
//! rather than elapsed time. Where a real lease must run out, the wait has a generous
//! deadline ([`EVENTUALLY`]): it must happen, not happen fast. The two time bounds that
//! remain are sound on a machine of any speed: a lease's clock starts when the server
//! applies the grant, which is after the test sent it, so "no sooner than the TTL" and
//! "no less remaining than the TTL minus the time since" are measured from just before
//! the grant was sent.

use std::time::Duration;

use concord_tests::Cluster;
use etcd_client::{
    Client, EventType, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, Txn,
    TxnOp, WatchOptions,
};
use tokio::time::{Instant, sleep};

/// How long something that must happen may take: generous, because the machine is
/// shared and a deadline here only tells "never" from "eventually".
const EVENTUALLY: Duration = Duration::from_secs(30);

async fn exists(client: &mut Client, key: &str) -> anyhow::Result<bool> {
    Ok(client.get(key, None).await?.count() > 0)
}

/// Waits until `key` is gone; returns when that was seen.
async fn wait_gone(client: &mut Client, key: &str) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        if !exists(client, key).await? {
            return Ok(Instant::now());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{key} still exists after {EVENTUALLY:?}"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

/// The lease's remaining TTL in whole seconds (rounded down; -1 once it is gone).
async fn remaining(client: &mut Client, id: i64) -> anyhow::Result<i64> {
    Ok(client.lease_time_to_live(id, None).await?.ttl())
}

/// Waits until the lease's remaining TTL is at most `at_most`; returns it.
async fn wait_aged(client: &mut Client, id: i64, at_most: i64) -> anyhow::Result<i64> {
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        let ttl = remaining(client, id).await?;
        if ttl <= at_most {
            return Ok(ttl);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "lease {id:x} still has {ttl} s after {EVENTUALLY:?}"
        );
        sleep(Duration::from_millis(100)).await;
    }
}

fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map(|h| h.revision()).unwrap_or(0)
}

fn with_lease(id: i64) -> Option<PutOptions> {
    Some(PutOptions::new().with_lease(id))
}

#[tokio::test]
async fn grant_revoke_time_to_live_and_errors() -> anyhow::Result<()> {
    let cluster = Cluster::start(1)?;
    let mut client = cluster.client().await?;

    let asked = Instant::now();
    let lease = client.lease_grant(60, None).await?;
    assert_ne!(lease.id(), 0, "the server chooses an id");
    assert_eq!(lease.ttl(), 60);
    // TTLs below the minimum are raised to it (ceil of 1.5 x 1 s election timeout).
    let short = client.lease_grant(1, None).await?;
    assert_eq!(short.ttl(), 2);
    // A client-chosen id, then the same id again.
    let chosen = client
        .lease_grant(30, Some(LeaseGrantOptions::new().with_id(0x1234)))
        .await?;
    assert_eq!(chosen.id(), 0x1234);
    let again = client
        .lease_grant(30, Some(LeaseGrantOptions::new().with_id(0x1234)))
        .await;
    assert!(
        format!("{again:?}").contains("etcdserver: lease already exists"),
        "{again:?}"
    );
    let huge = client.lease_grant(9_000_000_001, None).await;
    assert!(
        format!("{huge:?}").contains("etcdserver: too large lease TTL"),
        "{huge:?}"
    );

    let listed: Vec<i64> = client
        .leases()
        .await?
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    for id in [lease.id(), short.id(), 0x1234] {
        assert!(listed.contains(&id), "{id:x} not in {listed:?}");
    }

    client.put("a", "1", with_lease(lease.id())).await?;
    client.put("b", "2", with_lease(lease.id())).await?;
    client.put("c", "3", with_lease(lease.id())).await?;
    // Put again without the lease: c is detached and survives the revoke.
    client.put("c", "4", None).await?;
    // A txn's put attaches, a delete detaches.
    let txn = Txn::new().and_then([TxnOp::put("t", "1", with_lease(lease.id()))]);
    client.txn(txn).await?;
    client.delete("b", None).await?;
    let bad_txn = Txn::new().and_then([TxnOp::put("t", "1", with_lease(0x999))]);
    let bad_txn = client.txn(bad_txn).await.map(|_| ());
    assert!(
        format!("{bad_txn:?}").contains("etcdserver: requested lease not found"),
        "{bad_txn:?}"
    );
    let unknown = client.put("x", "1", with_lease(0x999)).await;
    assert!(
        format!("{unknown:?}").contains("etcdserver: requested lease not found"),
        "{unknown:?}"
    );

    let ttl = client
        .lease_time_to_live(lease.id(), Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await?;
    assert_eq!(ttl.granted_ttl(), 60);
    // The countdown started after `asked` and the answer was read before now: whatever
    // the machine's speed, at least 60 s less the whole seconds since remain.
    let since = asked.elapsed().as_secs_f64().ceil() as i64;
    assert!(
        (60 - since..=60).contains(&ttl.ttl()),
        "remaining {} of 60 s, {since} s after the grant was sent",
        ttl.ttl()
    );
    assert_eq!(ttl.keys(), &[b"a".to_vec(), b"t".to_vec()]);

    let before = client
        .get("c", None)
        .await?
        .header()
        .map(|h| h.revision())
        .unwrap_or(0);
    let revoked = client.lease_revoke(lease.id()).await?;
    let after = revoked.header().map(|h| h.revision()).unwrap_or(0);
    assert_eq!(after, before + 1, "both keys are deleted in one revision");
    assert!(!exists(&mut client, "a").await?);
    assert!(!exists(&mut client, "t").await?);
    assert!(exists(&mut client, "c").await?);

    // Unknown leases: TTL -1 from TimeToLive, TTL 0 from KeepAlive, an error from Revoke.
    let gone = client.lease_time_to_live(lease.id(), None).await?;
    assert_eq!(gone.ttl(), -1);
    // (etcd-client turns the TTL 0 answer into this error; a gRPC error would read
    // differently.)
    let keep_alive = client.lease_keep_alive(lease.id()).await.map(|_| ());
    assert!(
        format!("{keep_alive:?}").contains("LeaseKeepAliveError(\"lease not found\")"),
        "{keep_alive:?}"
    );
    let revoke_again = client.lease_revoke(lease.id()).await;
    assert!(
        format!("{revoke_again:?}").contains("requested lease not found"),
        "{revoke_again:?}"
    );
    Ok(())
}

#[tokio::test]
async fn expiry_deletes_the_keys_and_watchers_see_the_deletes() -> anyhow::Result<()> {
    const TTL: i64 = 3;
    let cluster = Cluster::start(1)?;
    let mut client = cluster.client().await?;
    // The watch exists before the lease does, so it sees the puts and the deletes
    // however long the setup takes.
    let mut watch = client
        .watch("job/", Some(WatchOptions::new().with_prefix()))
        .await?;
    let created = watch.message().await?.expect("a created response");
    assert!(created.created());

    let asked = Instant::now();
    let lease = client.lease_grant(TTL, None).await?;
    let mut puts = Vec::new();
    for key in ["job/1", "job/2", "job/3"] {
        let put = client.put(key, "running", with_lease(lease.id())).await?;
        puts.push((EventType::Put, key.to_string(), revision_of(put.header())));
    }
    let gone_seen = wait_gone(&mut client, "job/3").await?;
    let lived = gone_seen - asked;
    assert!(
        lived >= Duration::from_secs(TTL as u64),
        "expired early: gone {lived:?} after the grant was sent"
    );
    let left = client
        .get("job/", Some(GetOptions::new().with_prefix()))
        .await?;
    assert_eq!(left.count(), 0);

    // The watcher sees the three puts, then the three deletes together in the next
    // revision: nothing else happened in between.
    let last_put = puts[2].2;
    let mut expected = puts;
    for key in ["job/1", "job/2", "job/3"] {
        expected.push((EventType::Delete, key.to_string(), last_put + 1));
    }
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let response = tokio::time::timeout(EVENTUALLY, watch.message())
            .await?
            .map_err(anyhow::Error::from)?
            .expect("the watch stream stays open");
        for event in response.events() {
            let kv = event.kv().expect("an event carries its key");
            seen.push((
                event.event_type(),
                String::from_utf8_lossy(kv.key()).to_string(),
                kv.mod_revision(),
            ));
        }
    }
    assert_eq!(seen, expected);
    let ttl = client.lease_time_to_live(lease.id(), None).await?;
    assert_eq!(ttl.ttl(), -1);
    Ok(())
}

/// A keep-alive sent to a follower renews the lease on the leader, and TTL queries on
/// the follower report the leader's countdown. Shown by order, not by time: of two
/// leases granted together, the renewed one ends up with more time left than the other
/// by at least the time that passed before the renewal.
#[tokio::test]
async fn keep_alive_through_a_follower() -> anyhow::Result<()> {
    const TTL: i64 = 6;
    let cluster = Cluster::start(3)?;
    let leader = cluster.leader().await?;
    let follower = (leader + 1) % 3;
    let mut client = cluster.member_client(follower).await?;
    let control = client.lease_grant(TTL, None).await?;
    let kept = client.lease_grant(TTL, None).await?;
    // (Opening the stream renews once too: right away, so it adds nothing to `kept`.)
    let (mut keeper, mut responses) = client.lease_keep_alive(kept.id()).await?;
    client.put("control", "1", with_lease(control.id())).await?;
    client.put("alive", "yes", with_lease(kept.id())).await?;

    // Both count down; once more than 2 s have passed (remaining at most TTL - 3),
    // renew the second.
    let aged = wait_aged(&mut client, control.id(), TTL - 3).await?;
    keeper.keep_alive().await?;
    let response = responses.message().await?.expect("a keep-alive response");
    assert_eq!(response.ttl(), TTL, "renewed on the leader");
    // Kept first, control second: the control's count can only have gone down since.
    // The renewal came more than 2 s after the control's grant, so on any machine the
    // renewed lease has at least 2 s more (whole seconds, rounded down); without the
    // renewal it would have only the moment between the two grants more (and the
    // stream's first renewal), which rounds to at most 1 s.
    let kept_left = remaining(&mut client, kept.id()).await?;
    let control_left = remaining(&mut client, control.id()).await?;
    assert!(
        kept_left >= control_left + 2,
        "renewed lease has {kept_left} s left, the other {control_left} s \
         (it had {aged} s before the renewal)"
    );

    // Without renewals, both run out.
    drop(keeper);
    drop(responses);
    wait_gone(&mut client, "control").await?;
    wait_gone(&mut client, "alive").await?;
    Ok(())
}

#[tokio::test]
async fn killing_the_leader_neither_expires_live_leases_nor_keeps_dead_ones() -> anyhow::Result<()>
{
    // `live` is renewed all along and has the shorter TTL: had any renewal been lost, it
    // would run out before `dead`, which is never renewed.
    const LIVE_TTL: i64 = 5;
    const DEAD_TTL: i64 = 10;
    let mut cluster = Cluster::start(3)?;
    let old_leader = cluster.leader().await?;
    let survivor = (old_leader + 1) % 3;
    let mut client = cluster.member_client(survivor).await?;
    let live = client.lease_grant(LIVE_TTL, None).await?;
    let dead = client.lease_grant(DEAD_TTL, None).await?;
    client.put("live", "1", with_lease(live.id())).await?;
    let put = client.put("dead", "1", with_lease(dead.id())).await?;
    let old_term = put.header().map(|h| h.raft_term()).unwrap_or(0);

    // Keep `live` alive through the survivor until told to stop.
    let mut keeper_client = cluster.member_client(survivor).await?;
    let live_id = live.id();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let renewals = tokio::spawn(async move {
        let (mut keeper, mut responses) = keeper_client.lease_keep_alive(live_id).await?;
        let mut answers = Vec::new();
        loop {
            keeper.keep_alive().await?;
            let response = responses
                .message()
                .await?
                .ok_or_else(|| anyhow::anyhow!("the keep-alive stream ended"))?;
            let term = response.header().map(|h| h.raft_term()).unwrap_or(0);
            answers.push((response.ttl(), term));
            tokio::select! {
                _ = &mut stopped => break,
                () = sleep(Duration::from_millis(500)) => {}
            }
        }
        anyhow::Ok(answers)
    });

    cluster.kill(old_leader);
    let new_leader = cluster.leader().await?;
    assert_ne!(new_leader, old_leader);
    // A write only the new leader can commit; `dead` still existed at its revision, so
    // whatever deletes it comes after, from the new leader's expiry.
    let marker = client.put("marker", "1", None).await?;
    let marker_revision = revision_of(marker.header());
    let at_marker = client
        .get(
            "dead",
            Some(GetOptions::new().with_revision(marker_revision)),
        )
        .await?;
    assert_eq!(
        at_marker.count(),
        1,
        "the unrenewed lease ran out before a new leader took over: nothing to test"
    );
    wait_gone(&mut client, "dead").await?;
    assert!(
        exists(&mut client, "live").await?,
        "the renewed lease (shorter TTL) expired before the unrenewed one"
    );

    let _ = stop.send(());
    let answers = renewals.await??;
    assert!(
        answers.iter().all(|(ttl, _)| *ttl == LIVE_TTL),
        "every renewal found the lease: {answers:?}"
    );
    assert!(
        answers.iter().any(|(_, term)| *term > old_term),
        "renewals were answered under the new leader's term (> {old_term}): {answers:?}"
    );
    let ttl = client.lease_time_to_live(live.id(), None).await?;
    assert!(ttl.ttl() > 0);
    Ok(())
}

#[tokio::test]
async fn leases_and_their_keys_survive_a_restart() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(1)?;
    let id = {
        let mut client = cluster.client().await?;
        let lease = client.lease_grant(600, None).await?;
        client.put("kept", "1", with_lease(lease.id())).await?;
        client.put("other", "1", None).await?;
        lease.id()
    };
    cluster.stop(0);
    cluster.spawn(0)?;
    cluster.wait_ready(0)?;
    let mut client = cluster.client().await?;
    let deadline = Instant::now() + EVENTUALLY;
    let ttl = loop {
        match client
            .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
            .await
        {
            Ok(ttl) => break ttl,
            Err(error) if Instant::now() < deadline => {
                eprintln!("waiting for the restarted member: {error}");
                sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error.into()),
        }
    };
    assert_eq!(ttl.granted_ttl(), 600);
    assert_eq!(ttl.keys(), &[b"kept".to_vec()]);
    client.lease_revoke(id).await?;
    assert!(!exists(&mut client, "kept").await?);
    assert!(exists(&mut client, "other").await?);
    Ok(())
}
