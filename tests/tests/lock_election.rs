//! The server-side Lock and Election services (`v3lockpb`, `v3electionpb`) against a real
//! member, through gRPC (the `etcd-client` crate) and the JSON gateway: mutual exclusion
//! in creation order, a waiter that goes away or whose lease expires, campaigns,
//! proclamations, observers, resignation, and etcd's errors.
//!
//! Waiting is asserted by order, not time: a second locker must still be waiting when
//! the first unlocks (a bounded look that can only fail if the lock is broken), and must
//! then get the lock.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use concord_tests::http_json::{JsonStream, b64, post, post_ok, unb64};
use concord_tests::{Cluster, run_python};
use etcd_client::{Client, GetOptions, LeaderKey, LockOptions, ProclaimOptions, ResignOptions};
use serde_json::json;

const EVENTUALLY: Duration = Duration::from_secs(30);
/// A bounded look at something that must not happen yet.
const NOT_YET: Duration = Duration::from_millis(500);

fn status_message(error: &etcd_client::Error) -> String {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            format!("{:?}: {}", status.code(), status.message())
        }
        other => other.to_string(),
    }
}

async fn keys_under(client: &mut Client, prefix: &str) -> Result<Vec<String>> {
    let response = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await?;
    Ok(response
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap_or_default().to_string())
        .collect())
}

#[tokio::test]
async fn locks_are_granted_in_creation_order() -> Result<()> {
    let cluster = Cluster::start(1)?;
    let mut client = cluster.client().await?;
    let lease = client.lease_grant(60, None).await?.id();
    let held = client
        .lock("lk", Some(LockOptions::new().with_lease(lease)))
        .await?;
    let key = String::from_utf8(held.key().to_vec())?;
    assert_eq!(key, format!("lk/{lease:x}"));
    let value = client.get(key.as_str(), None).await?;
    assert_eq!(value.kvs()[0].lease(), lease);

    // A second locker (no lease: the service grants it a 60 s one) waits for the first.
    let mut second_client = cluster.client().await?;
    let mut second = tokio::spawn(async move { second_client.lock("lk", None).await });
    ensure!(
        tokio::time::timeout(NOT_YET, &mut second).await.is_err(),
        "two holders at once"
    );
    client.unlock(key.as_str()).await?;
    let second = tokio::time::timeout(EVENTUALLY, second).await???;
    let second_key = String::from_utf8(second.key().to_vec())?;
    assert!(
        second_key.starts_with("lk/") && second_key != key,
        "{second_key}"
    );
    assert_eq!(
        keys_under(&mut client, "lk/").await?,
        vec![second_key.clone()]
    );
    client.unlock(second_key.as_str()).await?;
    assert!(keys_under(&mut client, "lk/").await?.is_empty());

    // A lease that does not exist: etcd's error from the put.
    let error = client
        .lock("lk", Some(LockOptions::new().with_lease(0x1234)))
        .await
        .expect_err("a lock on a missing lease");
    assert_eq!(
        status_message(&error),
        "NotFound: etcdserver: requested lease not found"
    );
    Ok(())
}

#[tokio::test]
async fn a_waiter_that_goes_away_or_loses_its_lease_leaves_no_key() -> Result<()> {
    let cluster = Cluster::start(1)?;
    let mut client = cluster.client().await?;
    let held = client.lock("gone", None).await?;

    // A waiter that gives up: its key is deleted.
    let mut quitter = cluster.client().await?;
    let waiting = tokio::spawn(async move { quitter.lock("gone", None).await });
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while keys_under(&mut client, "gone/").await?.len() < 2 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the waiter never wrote its key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    waiting.abort();
    while keys_under(&mut client, "gone/").await?.len() > 1 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the quitter's key stayed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A waiter whose lease expires while it waits gets etcd's error once it would hold.
    let short = client.lease_grant(2, None).await?.id();
    let mut expiring = cluster.client().await?;
    let waiting = tokio::spawn(async move {
        expiring
            .lock("gone", Some(LockOptions::new().with_lease(short)))
            .await
    });
    let short_key = format!("gone/{short:x}");
    while !keys_under(&mut client, "gone/").await?.contains(&short_key) {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the expiring waiter never wrote its key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while keys_under(&mut client, "gone/").await?.contains(&short_key) {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.unlock(held.key()).await?;
    let error = tokio::time::timeout(EVENTUALLY, waiting)
        .await??
        .expect_err("lock lost");
    assert_eq!(status_message(&error), "Unknown: mutex: session is expired");
    Ok(())
}

#[tokio::test]
async fn elections_campaign_proclaim_observe_and_resign() -> Result<()> {
    let cluster = Cluster::start(1)?;
    let mut client = cluster.client().await?;

    let error = client.leader("el").await.expect_err("no leader yet");
    assert_eq!(status_message(&error), "Unknown: election: no leader");

    let mut observer = cluster.client().await?.observe("el").await?;

    let lease = client.lease_grant(60, None).await?.id();
    let won = client.campaign("el", "first", lease).await?;
    let leader = won.leader().context("a leader key")?.clone();
    assert_eq!(leader.name(), b"el");
    assert_eq!(leader.key(), format!("el/{lease:x}").as_bytes());
    assert_eq!(leader.lease(), lease);
    let seen = observer.message().await?.context("observed")?;
    assert_eq!(seen.kv().context("kv")?.value(), b"first");

    // A second candidate waits behind the leader.
    let mut rival = cluster.client().await?;
    let rival_lease = client.lease_grant(60, None).await?.id();
    let mut campaign =
        tokio::spawn(async move { rival.campaign("el", "second", rival_lease).await });
    ensure!(
        tokio::time::timeout(NOT_YET, &mut campaign).await.is_err(),
        "two leaders at once"
    );

    client
        .proclaim(
            "updated",
            Some(ProclaimOptions::new().with_leader(leader.clone())),
        )
        .await?;
    let now = client.leader("el").await?;
    assert_eq!(now.kv().context("kv")?.value(), b"updated");
    let seen = observer.message().await?.context("observed")?;
    assert_eq!(seen.kv().context("kv")?.value(), b"updated");

    // A stale leader key cannot proclaim.
    let stale = LeaderKey::new()
        .with_name("el")
        .with_key(leader.key().to_vec());
    let error = client
        .proclaim("stale", Some(ProclaimOptions::new().with_leader(stale)))
        .await
        .expect_err("stale leader");
    assert_eq!(status_message(&error), "Unknown: election: not leader");

    client
        .resign(Some(ResignOptions::new().with_leader(leader)))
        .await?;
    let second = tokio::time::timeout(EVENTUALLY, campaign).await???;
    assert_eq!(
        second.leader().context("leader")?.key(),
        format!("el/{rival_lease:x}").as_bytes()
    );
    let seen = observer.message().await?.context("observed")?;
    assert_eq!(seen.kv().context("kv")?.value(), b"second");
    let error = client.proclaim("x", None).await.expect_err("no leader key");
    assert!(status_message(&error).contains("leader"), "{error}");
    Ok(())
}

#[tokio::test]
async fn lock_and_election_routes_of_the_gateway() -> Result<()> {
    let cluster = Cluster::start(1)?;
    let url = cluster.members[0].client_url();

    let lock = post_ok(
        &url,
        "/v3/lock/lock",
        &json!({"name": b64("gwl")}).to_string(),
    )
    .await?;
    let key = lock["key"].as_str().context("key")?.to_string();
    assert!(unb64(&lock["key"])?.starts_with("gwl/"), "{lock}");
    let unlock = post_ok(&url, "/v3/lock/unlock", &json!({"key": key}).to_string()).await?;
    assert!(unlock["header"]["revision"].is_string(), "{unlock}");

    // The gateway answers a stream's headers with its first result (as etcd's does): the
    // observer opens while the campaign runs.
    let observe_url = url.clone();
    let observe = tokio::spawn(async move {
        JsonStream::open(
            &observe_url,
            "/v3/election/observe",
            &json!({"name": b64("gwe")}).to_string(),
        )
        .await
    });
    let campaign = post_ok(
        &url,
        "/v3/election/campaign",
        &json!({"name": b64("gwe"), "value": b64("v1")}).to_string(),
    )
    .await?;
    let leader = campaign["leader"].clone();
    assert_eq!(unb64(&leader["name"])?, "gwe");
    assert!(
        leader["rev"].is_string() && leader["lease"].is_string(),
        "{campaign}"
    );
    let mut observe = tokio::time::timeout(EVENTUALLY, observe).await???;
    assert_eq!(observe.status, 200);
    let seen = observe.next_json().await?;
    assert_eq!(unb64(&seen["result"]["kv"]["value"])?, "v1");

    post_ok(
        &url,
        "/v3/election/proclaim",
        &json!({"leader": leader, "value": b64("v2")}).to_string(),
    )
    .await?;
    let seen = observe.next_json().await?;
    assert_eq!(unb64(&seen["result"]["kv"]["value"])?, "v2");
    let current = post_ok(
        &url,
        "/v3/election/leader",
        &json!({"name": b64("gwe")}).to_string(),
    )
    .await?;
    assert_eq!(unb64(&current["kv"]["value"])?, "v2");
    post_ok(
        &url,
        "/v3/election/resign",
        &json!({"leader": leader}).to_string(),
    )
    .await?;
    let none = post(
        &url,
        "/v3/election/leader",
        &json!({"name": b64("gwe")}).to_string(),
    )
    .await?;
    assert_eq!(
        (none.status, none.body.as_str()),
        (
            500,
            r#"{"error":"election: no leader","message":"election: no leader","code":2}"#
        )
    );
    let missing = post(&url, "/v3/election/resign", "{}").await?;
    assert_eq!(
        missing.body,
        r#"{"error":"\"leader\" field must be provided","message":"\"leader\" field must be provided","code":2}"#
    );
    Ok(())
}

/// Debian's python3-etcd3 (gRPC) and python3-etcd3gw (gateway) locks against Concord.
#[tokio::test]
async fn python_client_locks_work() -> Result<()> {
    let cluster = Cluster::start(1)?;
    let port = cluster.members[0].client_port;
    let script = r#"
import sys
import etcd3
from etcd3gw.client import Etcd3Client
port = int(sys.argv[1])
c = etcd3.client(host="127.0.0.1", port=port)
lock = c.lock("py-lock", ttl=30)
assert lock.acquire(timeout=5)
assert lock.is_acquired()
other = c.lock("py-lock", ttl=30)
assert not other.acquire(timeout=0)
lock.release()
assert other.acquire(timeout=5)
other.release()
gw = Etcd3Client(host="127.0.0.1", port=port, api_path="/v3beta/")
gl = gw.lock("gw-lock", ttl=30)
assert gl.acquire() is True
assert gl.is_acquired()
assert gl.release() is True
print("python locks ok")
"#;
    run_python(script, &[&port.to_string()], "python locks ok")?;
    Ok(())
}
