//! Leases against real members: grant, attach, revoke, expiry (with the DELETE events
//! watchers see), keep-alive through a follower, leader failure and restarts.
//!
//! Timing: the default election timeout is 1 s, so the minimum TTL is 2 s and a new
//! leader extends every lease by 1 s. Bounds below allow for that and for slow machines,
//! but every assertion can fail: keys that must live are checked after their TTL has
//! passed (and renewed), keys that must go are waited for with a deadline.

use std::time::Duration;

use concord_tests::Cluster;
use etcd_client::{
    Client, EventType, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, Txn,
    TxnOp, WatchOptions,
};
use tokio::time::{Instant, sleep};

async fn exists(client: &mut Client, key: &str) -> anyhow::Result<bool> {
    Ok(client.get(key, None).await?.count() > 0)
}

/// Waits until `key` is gone; returns how long that took.
async fn wait_gone(client: &mut Client, key: &str, limit: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if !exists(client, key).await? {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "{key} still exists after {limit:?}"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

fn with_lease(id: i64) -> Option<PutOptions> {
    Some(PutOptions::new().with_lease(id))
}

#[tokio::test]
async fn grant_revoke_time_to_live_and_errors() -> anyhow::Result<()> {
    let cluster = Cluster::start(1)?;
    let mut client = cluster.client().await?;

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
    assert!((55..=60).contains(&ttl.ttl()), "remaining {}", ttl.ttl());
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
    let cluster = Cluster::start(1)?;
    let mut client = cluster.client().await?;
    let lease = client.lease_grant(3, None).await?;
    let granted = Instant::now();
    for key in ["job/1", "job/2", "job/3"] {
        client.put(key, "running", with_lease(lease.id())).await?;
    }
    let mut watch = client
        .watch("job/", Some(WatchOptions::new().with_prefix()))
        .await?;

    sleep(Duration::from_secs(2)).await;
    assert!(
        exists(&mut client, "job/1").await?,
        "the lease has not expired yet"
    );
    wait_gone(&mut client, "job/3", Duration::from_secs(5)).await?;
    let lived = granted.elapsed();
    assert!(
        lived >= Duration::from_millis(2900),
        "expired early, after {lived:?}"
    );
    assert!(
        lived < Duration::from_secs(6),
        "expired late, after {lived:?}"
    );
    let left = client
        .get("job/", Some(GetOptions::new().with_prefix()))
        .await?;
    assert_eq!(left.count(), 0);

    let mut deleted = Vec::new();
    let mut revisions = Vec::new();
    while deleted.len() < 3 {
        let response = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await?
            .map_err(anyhow::Error::from)?
            .expect("the watch stream stays open");
        for event in response.events() {
            assert_eq!(event.event_type(), EventType::Delete);
            let kv = event.kv().expect("an event carries its key");
            deleted.push(String::from_utf8_lossy(kv.key()).to_string());
            revisions.push(kv.mod_revision());
        }
    }
    deleted.sort();
    assert_eq!(deleted, ["job/1", "job/2", "job/3"]);
    assert!(
        revisions.iter().all(|r| *r == revisions[0]),
        "one revision: {revisions:?}"
    );
    let ttl = client.lease_time_to_live(lease.id(), None).await?;
    assert_eq!(ttl.ttl(), -1);
    Ok(())
}

#[tokio::test]
async fn keep_alive_through_a_follower() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    let leader = cluster.leader().await?;
    let follower = (leader + 1) % 3;
    let mut client = cluster.member_client(follower).await?;
    let lease = client.lease_grant(2, None).await?;
    client.put("alive", "yes", with_lease(lease.id())).await?;

    let (mut keeper, mut responses) = client.lease_keep_alive(lease.id()).await?;
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        keeper.keep_alive().await?;
        let response = responses.message().await?.expect("a keep-alive response");
        assert_eq!(response.ttl(), 2, "renewed on the leader");
        sleep(Duration::from_millis(500)).await;
    }
    // Three TTLs later the key is still there, and the follower reports the leader's TTL.
    assert!(exists(&mut client, "alive").await?);
    let ttl = client.lease_time_to_live(lease.id(), None).await?;
    assert!((1..=2).contains(&ttl.ttl()), "remaining {}", ttl.ttl());
    drop(keeper);
    drop(responses);
    wait_gone(&mut client, "alive", Duration::from_secs(6)).await?;
    Ok(())
}

#[tokio::test]
async fn killing_the_leader_neither_expires_live_leases_nor_keeps_dead_ones() -> anyhow::Result<()>
{
    let mut cluster = Cluster::start(3)?;
    let old_leader = cluster.leader().await?;
    let survivor = (old_leader + 1) % 3;
    let mut client = cluster.member_client(survivor).await?;
    let live = client.lease_grant(4, None).await?;
    let dead = client.lease_grant(2, None).await?;
    client.put("live", "1", with_lease(live.id())).await?;
    client.put("dead", "1", with_lease(dead.id())).await?;

    // Keep `live` alive through the survivor the whole time; `dead` gets no renewal.
    let mut keeper_client = cluster.member_client(survivor).await?;
    let live_id = live.id();
    let renewals = tokio::spawn(async move {
        let (mut keeper, mut responses) = keeper_client.lease_keep_alive(live_id).await?;
        let mut ttls = Vec::new();
        let until = Instant::now() + Duration::from_secs(12);
        while Instant::now() < until {
            keeper.keep_alive().await?;
            if let Some(response) = responses.message().await? {
                ttls.push(response.ttl());
            }
            sleep(Duration::from_millis(500)).await;
        }
        anyhow::Ok(ttls)
    });

    cluster.kill(old_leader);
    let killed = Instant::now();
    let new_leader = cluster.leader().await?;
    assert_ne!(new_leader, old_leader);
    // The dead lease's keys go once the new leader's extended TTL (2 s + 1 s) passes.
    let took = wait_gone(&mut client, "dead", Duration::from_secs(15)).await?;
    assert!(
        took < Duration::from_secs(15),
        "dead lease lived {took:?} after the kill"
    );

    let ttls = renewals.await??;
    assert!(
        ttls.iter().all(|ttl| *ttl == 4),
        "every renewal found the lease: {ttls:?}"
    );
    assert!(killed.elapsed() > Duration::from_secs(10));
    assert!(
        exists(&mut client, "live").await?,
        "the renewed lease never expired"
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
    let deadline = Instant::now() + Duration::from_secs(10);
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
