//! Raft snapshots between real members: the store checkpoints in place (the raft log's
//! snapshot file keeps no copy of it), and a follower that fell behind the compacted log
//! is sent the store as it is when the snapshot leaves the leader.

use std::path::Path;
use std::time::{Duration, Instant};

use concord_tests::Cluster;
use etcd_client::GetOptions;

/// Sizes of the raft snapshot files under a member's data dir.
fn snapshot_file_sizes(data_dir: &Path) -> Vec<u64> {
    let wal = data_dir.join("member").join("wal");
    std::fs::read_dir(&wal)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".snap"))
                .filter_map(|e| e.metadata().ok().map(|m| m.len()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_member_behind_the_compacted_log_catches_up_from_the_leaders_store() -> anyhow::Result<()>
{
    let mut cluster = Cluster::start_with(3, &["--snapshot-count", "50"])?;
    let leader = cluster.leader().await?;
    let behind = (leader + 1) % 3;
    cluster.kill(behind);

    let mut client = cluster.member_client(leader).await?;
    let value = "v".repeat(1000);
    for i in 0..400 {
        client.put(format!("s{i:04}"), value.as_str(), None).await?;
    }
    // Checkpoints replaced the snapshot file several times; it holds metadata only, not
    // the ~400 KB of values.
    let sizes = snapshot_file_sizes(&cluster.members[leader].data_dir);
    assert!(!sizes.is_empty(), "the leader took a snapshot");
    assert!(
        sizes.iter().all(|&size| size < 4096),
        "snapshot files hold no copy of the store: {sizes:?}"
    );

    cluster.spawn(behind)?;
    cluster.wait_ready(behind)?;
    let mut follower = cluster.member_client(behind).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = follower
            .get(
                "s",
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_count_only()
                        .with_serializable(),
                ),
            )
            .await;
        if got.as_ref().is_ok_and(|r| r.count() == 400) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the member did not catch up: {got:?}\n{}",
            cluster.log(behind)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        cluster.log(behind).contains("received a snapshot"),
        "caught up by a snapshot, not from the log:\n{}",
        cluster.log(behind)
    );
    // Writes after the snapshot reach it through the log as usual.
    client.put("after", "snapshot", None).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = follower
            .get("after", Some(GetOptions::new().with_serializable()))
            .await?;
        if got.kvs().first().map(|kv| kv.value()) == Some(b"snapshot".as_slice()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "write after the snapshot missing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
