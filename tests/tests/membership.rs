//! Runtime reconfiguration against real `concord` processes: growing and shrinking a
//! cluster with writes in between, a learner refused promotion until it is in sync, a
//! removed member exiting by itself (and refusing to come back with its old data), and
//! a restarted member keeping the membership it had, not the one its flags name.

use std::time::Duration;

use anyhow::Result;
use concord_tests::Cluster;

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
