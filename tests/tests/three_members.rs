//! Three members: replication, leader failure, restarts and a minority cut off.

use std::time::Duration;

use concord_tests::Cluster;
use etcd_client::GetOptions;

#[tokio::test]
async fn writes_anywhere_are_read_everywhere() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    cluster.leader().await?;
    for writer in 0..3 {
        let mut client = cluster.member_client(writer).await?;
        client
            .put(format!("from-{writer}"), format!("{writer}"), None)
            .await?;
    }
    for reader in 0..3 {
        let mut client = cluster.member_client(reader).await?;
        let got = client
            .get("from-", Some(GetOptions::new().with_prefix()))
            .await?;
        assert_eq!(
            got.kvs().len(),
            3,
            "member {reader} sees every write (linearizable read)"
        );
    }
    // Each member publishes its name and client URLs through raft once it serves.
    let mut client = cluster.member_client(0).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let members = client.member_list().await?;
        assert_eq!(members.members().len(), 3);
        let published = members
            .members()
            .iter()
            .filter(|m| m.client_urls().len() == 1)
            .count();
        if published == 3 {
            assert!(members.members().iter().all(|m| !m.name().is_empty()));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "members never published: {members:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test]
async fn killing_the_leader_loses_no_acknowledged_write() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3)?;
    let old_leader = cluster.leader().await?;
    let mut acknowledged = Vec::new();
    {
        let mut client = cluster.member_client((old_leader + 1) % 3).await?;
        for i in 0..50 {
            client
                .put(format!("k{i:02}"), format!("v{i}"), None)
                .await?;
            acknowledged.push(i);
        }
    }
    cluster.kill(old_leader);
    let new_leader = cluster.leader().await?;
    assert_ne!(new_leader, old_leader);

    let mut client = cluster.member_client(new_leader).await?;
    for i in 50..80 {
        // Writes continue under the new leader.
        client
            .put(format!("k{i:02}"), format!("v{i}"), None)
            .await?;
        acknowledged.push(i);
    }
    let got = client
        .get("k", Some(GetOptions::new().with_prefix()))
        .await?;
    assert_eq!(got.kvs().len(), acknowledged.len());

    // The old leader rejoins and catches up.
    cluster.spawn(old_leader)?;
    cluster.wait_ready(old_leader)?;
    let mut rejoined = cluster.member_client(old_leader).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match rejoined
            .get("k", Some(GetOptions::new().with_prefix()))
            .await
        {
            Ok(got) if got.kvs().len() == acknowledged.len() => break,
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "old leader never caught up: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn all_members_restarted_keep_all_data() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3)?;
    cluster.leader().await?;
    let mut client = cluster.client().await?;
    for i in 0..100 {
        client.put(format!("d{i:03}"), "x", None).await?;
    }
    drop(client);
    for i in 0..3 {
        cluster.stop(i);
    }
    for i in 0..3 {
        cluster.spawn(i)?;
    }
    for i in 0..3 {
        cluster.wait_ready(i)?;
    }
    cluster.leader().await?;
    for i in 0..3 {
        let mut client = cluster.member_client(i).await?;
        let got = client
            .get("d", Some(GetOptions::new().with_prefix().with_count_only()))
            .await?;
        assert_eq!(got.count(), 100, "member {i}");
    }
    Ok(())
}

#[tokio::test]
async fn a_member_in_a_minority_never_acknowledges_a_write() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3)?;
    let leader = cluster.leader().await?;
    let survivor = (leader + 1) % 3;
    let mut client = cluster.member_client(survivor).await?;
    client.put("before", "1", None).await?;
    for i in 0..3 {
        if i != survivor {
            cluster.kill(i);
        }
    }
    for attempt in 0..5 {
        let put = client.put(format!("minority-{attempt}"), "1", None).await;
        assert!(
            put.is_err(),
            "a minority member acknowledged a write: {put:?}"
        );
    }
    // Bring one member back: a majority again, and writes succeed.
    let back = (survivor + 1) % 3;
    cluster.spawn(back)?;
    cluster.wait_ready(back)?;
    cluster.leader().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match client.put("majority-again", "1", None).await {
            Ok(_) => break,
            Err(error) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "writes never resumed: {error}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let got = client
        .get("minority-", Some(GetOptions::new().with_prefix()))
        .await?;
    assert!(got.kvs().is_empty(), "no refused write was applied later");
    Ok(())
}
