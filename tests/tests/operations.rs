//! Operations: snapshots in etcd's file format saved from a running member and restored
//! into new clusters (from Concord's files and from etcd 3.4.23's), compared revision by
//! revision with the source.

use std::path::Path;

use concord_tests::side_by_side::{Server, ServerKind};
use concord_tests::{Cluster, concordctl_binary, etcdctl, run_ctl};
use etcd_client::{
    AlarmAction, AlarmOptions, AlarmType, Client, CompactionOptions, GetOptions, PutOptions,
};

/// Writes a history with overwrites, deletions, a lease with keys and a compaction;
/// returns (the lease id, the compact revision).
async fn write_history(client: &mut Client) -> anyhow::Result<(i64, i64)> {
    for i in 0..120 {
        client
            .put(format!("key/{:02}", i % 40), format!("value {i}"), None)
            .await?;
        if i % 17 == 0 {
            client
                .delete(format!("key/{:02}", (i + 5) % 40), None)
                .await?;
        }
    }
    let lease = client.lease_grant(600, None).await?.id();
    client
        .put("leased", "yes", Some(PutOptions::new().with_lease(lease)))
        .await?;
    let compact_at = client
        .get("key/00", None)
        .await?
        .header()
        .map_or(0, |h| h.revision())
        - 30;
    client
        .compact(compact_at, Some(CompactionOptions::new().with_physical()))
        .await?;
    for i in 0..20 {
        client
            .put(format!("late/{i}"), "after the compaction", None)
            .await?;
    }
    client
        .delete(
            "key/1",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await?;
    Ok((lease, compact_at))
}

/// Every key at every revision from `from` to `to`, as (revision, key, value, create,
/// mod, version, lease) rows, read serializably from one member.
async fn history(client: &mut Client, from: i64, to: i64) -> anyhow::Result<Vec<String>> {
    let mut rows = Vec::new();
    for rev in from..=to {
        let got = client
            .get(
                "",
                Some(
                    GetOptions::new()
                        .with_all_keys()
                        .with_revision(rev)
                        .with_serializable(),
                ),
            )
            .await?;
        for kv in got.kvs() {
            rows.push(format!(
                "{rev} {:?}={:?} c{} m{} v{} l{}",
                kv.key_str()?,
                kv.value_str()?,
                kv.create_revision(),
                kv.mod_revision(),
                kv.version(),
                kv.lease()
            ));
        }
    }
    Ok(rows)
}

fn ctl(binary: &Path, endpoint: &str, args: &[&str]) -> anyhow::Result<String> {
    let (ok, out, err) = run_ctl(binary, &[endpoint.to_string()], args, None)?;
    anyhow::ensure!(ok, "{} {args:?} failed: {out}{err}", binary.display());
    Ok(out + &err)
}

/// Restores `file` into every member of `cluster` and starts them.
fn restore_and_start(cluster: &mut Cluster, file: &Path) -> anyhow::Result<()> {
    let initial_cluster = cluster.initial_cluster().to_string();
    for i in 0..cluster.members.len() {
        let member = cluster.members[i].clone();
        let out = ctl(
            &concordctl_binary(),
            "http://127.0.0.1:1",
            &[
                "snapshot",
                "restore",
                &file.to_string_lossy(),
                "--name",
                &member.name,
                "--data-dir",
                &member.data_dir.to_string_lossy(),
                "--initial-cluster",
                &initial_cluster,
                "--initial-cluster-token",
                "concord-tests",
                "--initial-advertise-peer-urls",
                &member.peer_url(),
            ],
        )?;
        assert!(out.contains("added member"), "{out}");
    }
    for i in 0..cluster.members.len() {
        cluster.spawn(i)?;
    }
    for i in 0..cluster.members.len() {
        cluster.wait_ready(i)?;
    }
    Ok(())
}

/// Waits until the restored cluster elected a leader (its members serve serializable
/// reads before that).
async fn wait_for_leader(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.leader().await?;
    Ok(())
}

#[tokio::test]
async fn a_saved_snapshot_restores_into_three_members_with_every_revision() -> anyhow::Result<()> {
    let source = Cluster::start(1)?;
    let mut client = source.client().await?;
    let (lease, compact_at) = write_history(&mut client).await?;
    let current = client
        .get("x", None)
        .await?
        .header()
        .map_or(0, |h| h.revision());
    let file = source.scratch_dir().join("backup.db");
    let endpoint = source.endpoints()[0].clone();
    let out = ctl(
        &concordctl_binary(),
        &endpoint,
        &["snapshot", "save", &file.to_string_lossy()],
    )?;
    assert!(out.contains("Snapshot saved at"), "{out}");
    // etcd's own tool reads the file: its revision is the source's.
    let status = ctl(
        &etcdctl(),
        &endpoint,
        &["snapshot", "status", "-w", "json", &file.to_string_lossy()],
    )?;
    assert!(
        status.contains(&format!("\"revision\":{current}")),
        "{status}"
    );
    let ours = ctl(
        &concordctl_binary(),
        &endpoint,
        &["snapshot", "status", "-w", "json", &file.to_string_lossy()],
    )?;
    assert_eq!(
        ours.trim(),
        status.lines().last().unwrap_or_default().trim()
    );

    let expected = history(&mut client, compact_at, current).await?;
    let source_hash = client.hash_kv(current).await?.hash();
    let source_member = client.status().await?.header().map_or(0, |h| h.member_id());

    let mut restored = Cluster::plan(3, &[])?;
    restore_and_start(&mut restored, &file)?;
    wait_for_leader(&restored).await?;
    for i in 0..3 {
        let mut member = restored.member_client(i).await?;
        assert_eq!(
            history(&mut member, compact_at, current).await?,
            expected,
            "member {i}"
        );
        // History below the compaction stays compacted.
        let below = member
            .get(
                "key/00",
                Some(GetOptions::new().with_revision(compact_at - 1)),
            )
            .await;
        assert!(format!("{below:?}").contains("compacted"), "{below:?}");
        assert_eq!(
            member.hash_kv(current).await?.hash(),
            source_hash,
            "member {i}"
        );
        let ttl = member.lease_time_to_live(lease, None).await?;
        assert!(ttl.ttl() > 0, "the lease came back: {ttl:?}");
        assert_ne!(
            member.status().await?.header().map_or(0, |h| h.member_id()),
            source_member
        );
    }
    // The new cluster takes writes, at the revision after the source's.
    let mut writer = restored.client().await?;
    let put = writer.put("new", "write", None).await?;
    assert_eq!(put.header().map(|h| h.revision()), Some(current + 1));
    Ok(())
}

#[tokio::test]
async fn a_snapshot_saved_from_etcd_restores_with_identical_reads() -> anyhow::Result<()> {
    let etcd = Server::start(ServerKind::Etcd, &[])?;
    let mut client = Client::connect([etcd.endpoint()], None).await?;
    let (lease, compact_at) = write_history(&mut client).await?;
    let current = client
        .get("x", None)
        .await?
        .header()
        .map_or(0, |h| h.revision());
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("from-etcd.db");
    ctl(
        &etcdctl(),
        &etcd.endpoint(),
        &["snapshot", "save", &file.to_string_lossy()],
    )?;
    let expected = history(&mut client, compact_at, current).await?;
    let etcd_hash = client.hash_kv(current).await?.hash();

    let mut restored = Cluster::plan(1, &[])?;
    restore_and_start(&mut restored, &file)?;
    wait_for_leader(&restored).await?;
    let mut member = restored.member_client(0).await?;
    assert_eq!(history(&mut member, compact_at, current).await?, expected);
    assert_eq!(member.hash_kv(current).await?.hash(), etcd_hash);
    assert!(member.lease_time_to_live(lease, None).await?.ttl() > 0);
    Ok(())
}

#[tokio::test]
async fn a_damaged_or_truncated_snapshot_is_refused_and_nothing_is_written() -> anyhow::Result<()> {
    let source = Cluster::start(1)?;
    let mut client = source.client().await?;
    client.put("a", "1", None).await?;
    let endpoint = source.endpoints()[0].clone();
    let file = source.scratch_dir().join("good.db");
    ctl(
        &concordctl_binary(),
        &endpoint,
        &["snapshot", "save", &file.to_string_lossy()],
    )?;
    let bytes = std::fs::read(&file)?;

    let mut damaged = bytes.clone();
    damaged[..512].fill(0);
    let truncated = bytes[..bytes.len() / 2].to_vec();
    for (name, content, expect) in [
        ("damaged.db", damaged, "expected sha256"),
        ("truncated.db", truncated, "missing its sha256"),
    ] {
        let path = source.scratch_dir().join(name);
        std::fs::write(&path, content)?;
        let data_dir = source.scratch_dir().join(format!("{name}.concord"));
        let (ok, out, err) = run_ctl(
            &concordctl_binary(),
            std::slice::from_ref(&endpoint),
            &[
                "snapshot",
                "restore",
                &path.to_string_lossy(),
                "--data-dir",
                &data_dir.to_string_lossy(),
            ],
            None,
        )?;
        assert!(!ok, "{name} was accepted: {out}{err}");
        assert!(err.contains(expect), "{name}: {err}");
        assert!(!data_dir.exists(), "{name}: a data dir was written");
    }
    Ok(())
}

#[tokio::test]
async fn a_defragment_during_writes_loses_nothing() -> anyhow::Result<()> {
    let cluster = Cluster::start(1)?;
    let mut client = cluster.client().await?;
    let value = "v".repeat(2000);
    for i in 0..300 {
        client
            .put(format!("old/{}", i % 30), value.as_str(), None)
            .await?;
    }
    let revision = client
        .put("mark", "1", None)
        .await?
        .header()
        .map_or(0, |h| h.revision());
    client
        .compact(revision, Some(CompactionOptions::new().with_physical()))
        .await?;

    let mut writer = cluster.client().await?;
    let writes = tokio::spawn(async move {
        for i in 0..400 {
            writer
                .put(format!("new/{i:04}"), format!("value {i}"), None)
                .await?;
        }
        anyhow::Ok(())
    });
    let mut defragmenter = cluster.client().await?;
    for _ in 0..3 {
        defragmenter.defragment().await?;
    }
    writes.await??;
    defragmenter.defragment().await?;

    let got = client
        .get("new/", Some(GetOptions::new().with_prefix()))
        .await?;
    assert_eq!(got.kvs().len(), 400);
    for (i, kv) in got.kvs().iter().enumerate() {
        assert_eq!(kv.value_str()?, format!("value {i}"));
    }
    let old = client
        .get("old/", Some(GetOptions::new().with_prefix()))
        .await?;
    assert_eq!(old.kvs().len(), 30);
    assert!(old.kvs().iter().all(|kv| kv.value() == value.as_bytes()));
    // The history kept above the compaction is still readable.
    let at = client
        .get("mark", Some(GetOptions::new().with_revision(revision)))
        .await?;
    assert_eq!(at.kvs().len(), 1);
    // The offline form refuses a data dir its member is running on.
    let (ok, _, err) = run_ctl(
        &concordctl_binary(),
        &cluster.endpoints(),
        &[
            "defrag",
            "--data-dir",
            &cluster.members[0].data_dir.to_string_lossy(),
        ],
        None,
    )?;
    assert!(
        !ok && err.contains("Failed to defragment etcd data"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn a_restored_snapshot_keeps_users_roles_and_auth_enabled() -> anyhow::Result<()> {
    let source = Cluster::start(1)?;
    let mut client = source.client().await?;
    client.put("secret", "kept", None).await?;
    client.user_add("root", "rootpw", None).await?;
    client.user_grant_role("root", "root").await?;
    client.role_add("reader").await?;
    client.user_add("alice", "alicepw", None).await?;
    client.user_grant_role("alice", "reader").await?;
    client.auth_enable().await?;

    let endpoint = source.endpoints()[0].clone();
    let file = source.scratch_dir().join("auth.db");
    let out = ctl(
        &concordctl_binary(),
        &endpoint,
        &[
            "--user",
            "root:rootpw",
            "snapshot",
            "save",
            &file.to_string_lossy(),
        ],
    )?;
    assert!(out.contains("Snapshot saved at"), "{out}");

    let mut restored = Cluster::plan(1, &[])?;
    restore_and_start(&mut restored, &file)?;
    wait_for_leader(&restored).await?;
    let endpoints = restored.endpoints();
    // Auth is on: an anonymous read is refused, root's password still works.
    let mut anonymous = Client::connect(endpoints.clone(), None).await?;
    let refused = anonymous.get("secret", None).await;
    assert!(refused.is_err(), "{refused:?}");
    let mut root = Client::connect(
        endpoints,
        Some(etcd_client::ConnectOptions::new().with_user("root", "rootpw")),
    )
    .await?;
    assert_eq!(
        root.get("secret", None).await?.kvs()[0].value_str()?,
        "kept"
    );
    let alice = root.user_get("alice").await?;
    assert_eq!(alice.roles(), ["reader".to_string()]);
    let roles = root.role_list().await?;
    assert!(roles.roles().contains(&"reader".to_string()), "{roles:?}");
    Ok(())
}

/// `/health` as a client sees it: (HTTP status, body).
async fn health(endpoint: &str) -> anyhow::Result<(u16, String)> {
    let answer = concord_tests::http_json::request(endpoint, "GET", "/health", "", &[]).await?;
    Ok((answer.status, answer.body))
}

/// The alarms a member lists, as (member id, type) pairs.
async fn alarms(client: &mut Client) -> anyhow::Result<Vec<(u64, AlarmType)>> {
    let listed = client
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await?;
    Ok(listed
        .alarms()
        .iter()
        .map(|a| (a.member_id(), a.alarm()))
        .collect())
}

fn is_no_space(error: &etcd_client::Error) -> bool {
    error
        .to_string()
        .contains("etcdserver: mvcc: database space exceeded")
}

#[tokio::test]
async fn past_the_quota_every_member_refuses_writes_until_compact_defrag_and_disarm()
-> anyhow::Result<()> {
    // An empty member is far under 256 KiB; 4 KiB values pass it after some 60 puts.
    let cluster = Cluster::start_with(3, &["--quota-backend-bytes", "262144"])?;
    wait_for_leader(&cluster).await?;
    let mut client = cluster.client().await?;
    client.put("small", "fits", None).await?;
    let value = "b".repeat(4096);
    // A put the apply finds past the quota is answered NOSPACE without an alarm (etcd's
    // quotaApplierV3); the next one the quota check refuses raises it.
    let mut raised = false;
    for _ in 0..10_000 {
        if let Err(error) = client.put("big", value.as_str(), None).await {
            assert!(is_no_space(&error), "{error}");
            if !alarms(&mut client).await?.is_empty() {
                raised = true;
                break;
            }
        }
    }
    assert!(raised, "the quota is never reached");

    // NOSPACE went through raft: every member lists it, refuses puts, txns that put and
    // lease grants, and still serves reads, deletes and read-only txns. (A member whose
    // own store is past the quota raises NOSPACE too, under its own id, as etcd's do.)
    for i in 0..3 {
        let mut member = cluster.member_client(i).await?;
        let listed = alarms(&mut member).await?;
        assert!(
            !listed.is_empty() && listed.iter().all(|(_, t)| *t == AlarmType::Nospace),
            "member {i}: {listed:?}"
        );
        let put = member
            .put("other", "x", None)
            .await
            .expect_err("put allowed");
        assert!(is_no_space(&put), "{put}");
        let grant = member
            .lease_grant(60, None)
            .await
            .expect_err("grant allowed");
        assert!(is_no_space(&grant), "{grant}");
        let txn = etcd_client::Txn::new().and_then([etcd_client::TxnOp::put("t", "v", None)]);
        let refused_txn = member.txn(txn).await.expect_err("txn allowed");
        assert!(is_no_space(&refused_txn), "{refused_txn}");
        let read_txn = etcd_client::Txn::new().and_then([etcd_client::TxnOp::get("small", None)]);
        member.txn(read_txn).await?;
        let got = member.get("small", None).await?;
        assert_eq!(got.kvs()[0].value(), b"fits");
        // Listed through raft, so this member has applied every alarm raised so far.
        let raised_by = alarms(&mut member).await?;
        let status = member.status().await?;
        let texts: Vec<String> = raised_by
            .iter()
            .map(|(id, _)| format!("memberID:{id} alarm:NOSPACE "))
            .collect();
        assert_eq!(status.errors(), texts.as_slice());
        let (code, body) = health(&cluster.members[i].client_url()).await?;
        assert_eq!((code, body.as_str()), (503, "{\"health\":\"false\"}\n"));
    }
    client.delete("small", None).await?;

    // Compact away the overwritten values and defragment every member: each store is
    // back under the quota, the alarm can be disarmed, and writes work again.
    let revision = client
        .get("big", None)
        .await?
        .header()
        .map_or(0, |h| h.revision());
    let before = cluster.member_client(0).await?.status().await?.db_size();
    client
        .compact(revision, Some(CompactionOptions::new().with_physical()))
        .await?;
    for i in 0..3 {
        // A linearizable read first: the member has applied the compaction (a follower
        // may not have yet, and would defragment the uncompacted store).
        let mut member = cluster.member_client(i).await?;
        member.get("small", None).await?;
        member.defragment().await?;
    }
    let after = cluster.member_client(0).await?.status().await?;
    assert!(
        after.db_size() < before / 4 && after.db_size() < 262_144,
        "db size {before} -> {}",
        after.db_size()
    );
    for (member, alarm) in alarms(&mut client).await? {
        let mut options = AlarmOptions::new();
        options.with_member(member);
        let disarmed = client
            .alarm(AlarmAction::Deactivate, alarm, Some(options))
            .await?;
        assert_eq!(disarmed.alarms().len(), 1);
    }
    for i in 0..3 {
        let mut member = cluster.member_client(i).await?;
        assert!(alarms(&mut member).await?.is_empty());
        member.put(format!("after/{i}"), "written", None).await?;
        let (code, body) = health(&cluster.members[i].client_url()).await?;
        assert_eq!((code, body.as_str()), (200, "{\"health\":\"true\"}"));
    }
    Ok(())
}

#[tokio::test]
async fn alarms_survive_a_restart_and_corrupt_refuses_every_write() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(1)?;
    let mut client = cluster.client().await?;
    client.put("key", "before", None).await?;
    let member_id = client.status().await?.header().map_or(0, |h| h.member_id());
    let mut options = AlarmOptions::new();
    options.with_member(member_id);
    let raised = client
        .alarm(AlarmAction::Activate, AlarmType::Nospace, Some(options))
        .await?;
    assert_eq!(raised.alarms().len(), 1);
    assert_eq!(raised.alarms()[0].member_id(), member_id);

    assert_eq!(cluster.stop(0), Some(0));
    cluster.spawn(0)?;
    cluster.wait_ready(0)?;
    cluster.leader().await?;
    let mut client = cluster.client().await?;
    assert_eq!(
        alarms(&mut client).await?,
        vec![(member_id, AlarmType::Nospace)]
    );
    let refused = client
        .put("key", "after", None)
        .await
        .expect_err("put allowed");
    assert!(is_no_space(&refused), "{refused}");

    // CORRUPT (raised by member 0, as etcd's periodic check does) refuses writes,
    // deletes and compactions; reads go on.
    client
        .alarm(AlarmAction::Activate, AlarmType::Corrupt, None)
        .await?;
    let corrupt = |e: etcd_client::Error| e.to_string().contains("etcdserver: corrupt cluster");
    assert!(corrupt(
        client.put("key", "x", None).await.expect_err("put")
    ));
    assert!(corrupt(
        client.delete("key", None).await.expect_err("delete")
    ));
    assert!(corrupt(client.compact(1, None).await.expect_err("compact")));
    assert_eq!(client.get("key", None).await?.kvs()[0].value(), b"before");

    // Disarming both lets writes through again.
    client
        .alarm(AlarmAction::Deactivate, AlarmType::Corrupt, None)
        .await?;
    let mut options = AlarmOptions::new();
    options.with_member(member_id);
    client
        .alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(options))
        .await?;
    assert!(alarms(&mut client).await?.is_empty());
    client.put("key", "after", None).await?;
    Ok(())
}

#[tokio::test]
async fn compaction_frees_in_use_bytes_and_defragment_shrinks_the_db() -> anyhow::Result<()> {
    let cluster = Cluster::start(1)?;
    let mut client = cluster.client().await?;
    let value = "x".repeat(10_000);
    let mut revision = 0;
    for i in 0..400 {
        revision = client
            .put(format!("key/{}", i % 4), value.as_str(), None)
            .await?
            .header()
            .map_or(0, |h| h.revision());
    }
    let full = client.status().await?;
    assert!(full.db_size() > 4_000_000, "{}", full.db_size());
    assert!(full.raft_used_db_size() <= full.db_size());
    client
        .compact(revision, Some(CompactionOptions::new().with_physical()))
        .await?;
    let compacted = client.status().await?;
    // 396 of the 400 values are garbage now: in use falls at once, the size only after
    // a defragment.
    assert!(
        compacted.raft_used_db_size() < 200_000,
        "in use {} after the compaction",
        compacted.raft_used_db_size()
    );
    client.defragment().await?;
    let defragmented = client.status().await?;
    assert!(
        defragmented.db_size() < full.db_size() / 10,
        "db size {} -> {}",
        full.db_size(),
        defragmented.db_size()
    );
    assert!(defragmented.raft_used_db_size() <= defragmented.db_size());
    for i in 0..4 {
        let got = client.get(format!("key/{i}"), None).await?;
        assert_eq!(got.kvs()[0].value(), value.as_bytes());
    }
    Ok(())
}

/// A 60 s deadline for waiting on something a test can observe.
struct Deadline {
    what: &'static str,
    at: std::time::Instant,
}

impl Deadline {
    fn new(what: &'static str) -> Deadline {
        Deadline {
            what,
            at: std::time::Instant::now() + std::time::Duration::from_secs(60),
        }
    }

    /// Fails once the deadline passed, else waits a little before the next look.
    async fn tick(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            std::time::Instant::now() < self.at,
            "timed out waiting until {}",
            self.what
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        Ok(())
    }
}

/// etcd's TestEtcdCorruptHash scenario on Concord's store: one member's store is
/// damaged while it is stopped (a value rewritten in place at its revision). With the
/// initial check it refuses to start, with etcd's words; without it, it rejoins, and
/// the leader's periodic check raises CORRUPT (as etcd 3.4.23: under member id 0), after
/// which writes are refused with etcd's error, the alarm outlives restarts, and a
/// disarm lets writes through again.
#[tokio::test]
async fn a_diverged_store_is_refused_at_start_and_raises_corrupt_periodically() -> anyhow::Result<()>
{
    let mut cluster = Cluster::start_with(3, &["--experimental-corrupt-check-time", "1s"])?;
    let leader = cluster.leader().await?;
    let damaged = (leader + 1) % 3;
    // A client of one member that stays up throughout (a client of every member would
    // send some calls to the damaged one while it is stopped).
    let mut client = cluster.member_client(leader).await?;
    for i in 0..20 {
        client
            .put(format!("key/{i:02}"), format!("value {i}"), None)
            .await?;
    }
    let last = client.get("key/19", None).await?;
    let last_revision = last.header().map_or(0, |h| h.revision());
    let mut damaged_client = cluster.member_client(damaged).await?;
    let deadline = Deadline::new("the member to be damaged applied every write");
    loop {
        let got = damaged_client
            .get("key/19", Some(GetOptions::new().with_serializable()))
            .await?;
        if got.header().map_or(0, |h| h.revision()) >= last_revision {
            break;
        }
        deadline.tick().await?;
    }
    // A check over the agreeing stores passes without an alarm.
    let checks_before = cluster
        .log(leader)
        .matches("finished peer corruption check")
        .count();
    let deadline = Deadline::new("a periodic check ran after the writes");
    while cluster
        .log(leader)
        .matches("finished peer corruption check")
        .count()
        <= checks_before
    {
        deadline.tick().await?;
    }
    assert!(alarms(&mut client).await?.is_empty());

    assert_eq!(cluster.stop(damaged), Some(0));
    let data_dir = cluster.members[damaged]
        .data_dir
        .to_string_lossy()
        .to_string();
    let out = std::process::Command::new(concord_tests::corrupt_store_binary())
        .args([data_dir.as_str(), "key/07", "damaged"])
        .output()?;
    assert!(out.status.success(), "{out:?}");

    // The initial check: the member compares its hash with its peers' and refuses.
    cluster.extra_args = vec!["--experimental-initial-corrupt-check".to_string()];
    cluster.spawn(damaged)?;
    let code = cluster.wait_exit(damaged, std::time::Duration::from_secs(60))?;
    let log = cluster.log(damaged);
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("found data inconsistency with peers"), "{log}");
    assert!(!log.contains("ready to serve client requests"), "{log}");

    // Without it, the member rejoins, and the leader's periodic check finds it.
    cluster.extra_args = vec![
        "--experimental-corrupt-check-time".to_string(),
        "1s".to_string(),
    ];
    cluster.spawn(damaged)?;
    cluster.wait_ready(damaged)?;
    let deadline = Deadline::new("the CORRUPT alarm is raised");
    while alarms(&mut client).await?.is_empty() {
        deadline.tick().await?;
    }
    assert_eq!(alarms(&mut client).await?, vec![(0, AlarmType::Corrupt)]);
    let listed = ctl(
        &etcdctl(),
        &cluster.members[leader].client_url(),
        &["alarm", "list"],
    )?;
    assert_eq!(listed, "alarm:CORRUPT \n");
    // Each refusal is etcd's "corrupt cluster"; an answer the rejoining member's
    // election may cause meanwhile (leader changed, no leader, timed out) is asked again.
    let deadline = Deadline::new("writes are refused as a corrupt cluster");
    loop {
        let outcomes = [
            client.put("key/00", "x", None).await.map(|_| ()),
            client.delete("key/00", None).await.map(|_| ()),
            client.lease_grant(60, None).await.map(|_| ()),
        ];
        let texts: Vec<String> = outcomes
            .iter()
            .map(|o| o.as_ref().map_or_else(|e| e.to_string(), |()| "OK".into()))
            .collect();
        if texts
            .iter()
            .all(|t| t.contains("etcdserver: corrupt cluster"))
        {
            break;
        }
        let transient = |t: &String| {
            ["leader changed", "no leader", "timed out", "Unavailable"]
                .iter()
                .any(|w| t.contains(w))
        };
        assert!(
            texts
                .iter()
                .all(|t| t.contains("etcdserver: corrupt cluster") || transient(t)),
            "{texts:?}"
        );
        deadline.tick().await?;
    }
    let refused = ctl_failure(
        &cluster.members[leader].client_url(),
        &["put", "key/00", "x"],
    )?;
    assert!(refused.contains("etcdserver: corrupt cluster"), "{refused}");
    assert_eq!(
        client.get("key/00", None).await?.kvs()[0].value(),
        b"value 0"
    );

    // The alarm is stored: it outlives a restart of every member (here without the
    // periodic check, which would raise it again after a disarm: the stores still
    // differ). Disarming it then lets writes through, as etcd 3.4.23's does.
    cluster.extra_args.clear();
    for i in 0..3 {
        assert_eq!(cluster.stop(i), Some(0));
    }
    for i in 0..3 {
        cluster.spawn(i)?;
    }
    for i in 0..3 {
        cluster.wait_ready(i)?;
    }
    let leader = cluster.leader().await?;
    let endpoint = cluster.members[leader].client_url();
    let mut client = cluster.client().await?;
    assert_eq!(alarms(&mut client).await?, vec![(0, AlarmType::Corrupt)]);
    let refused = client.put("key/00", "x", None).await.expect_err("put");
    assert!(
        refused.to_string().contains("etcdserver: corrupt cluster"),
        "{refused}"
    );
    let disarmed = ctl(&etcdctl(), &endpoint, &["alarm", "disarm"])?;
    assert_eq!(disarmed, "alarm:CORRUPT \n");
    assert_eq!(ctl(&etcdctl(), &endpoint, &["alarm", "list"])?, "");
    assert_eq!(
        ctl(&etcdctl(), &endpoint, &["put", "key/00", "again"])?,
        "OK\n"
    );
    Ok(())
}

/// Runs etcdctl expecting it to fail; returns what it printed.
fn ctl_failure(endpoint: &str, args: &[&str]) -> anyhow::Result<String> {
    let (ok, out, err) = run_ctl(&etcdctl(), &[endpoint.to_string()], args, None)?;
    anyhow::ensure!(!ok, "etcdctl {args:?} succeeded: {out}");
    Ok(out + &err)
}

/// Test certificates for peer TLS in `dir`: a CA, the member's own certificate (server
/// and client use, `localhost` and 127.0.0.1) and one client certificate per
/// `(file name, common name, DNS name)`.
fn peer_certificates(dir: &Path, peers: &[(&str, &str, &str)]) -> anyhow::Result<()> {
    let write = |name: &str, pem: String| std::fs::write(dir.join(name), pem);
    let ca = concord_tests::tls::TestCa::new("peer test CA")?;
    let leaf = |file: &str, common_name: &str, dns: &str| -> anyhow::Result<()> {
        let (cert, key) = ca.leaf(
            common_name,
            &[dns],
            true,
            &[
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )?;
        write(&format!("{file}.crt"), cert)?;
        write(&format!("{file}.key"), key)?;
        Ok(())
    };
    leaf("self", "member", "localhost")?;
    for (file, common_name, dns) in peers {
        leaf(file, common_name, dns)?;
    }
    write("ca.crt", ca.pem())?;
    Ok(())
}

/// Calls the peer service's `HashKv` (revision 0) on `peer_port` over TLS as the peer
/// whose certificate is `dir/<file>.crt`; the answer's hash.
async fn peer_hash_kv(peer_port: u16, dir: &Path, file: &str) -> anyhow::Result<u32> {
    let channel = concord_tests::tls::mutual_tls_channel(peer_port, dir, file).await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    // HashKVRequest{revision: 0} is the empty message.
    let answer = grpc
        .unary(
            tonic::Request::new(Vec::new()),
            http::uri::PathAndQuery::from_static("/concordpb.Peer/HashKv"),
            RawBytes,
        )
        .await?
        .into_inner();
    hash_field(&answer).ok_or_else(|| anyhow::anyhow!("no hash in the answer {answer:?}"))
}

/// Field 2 (`hash`, a varint) of a protobuf-encoded HashKVResponse.
fn hash_field(mut message: &[u8]) -> Option<u32> {
    let varint = |bytes: &mut &[u8]| -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = bytes.split_first()?;
            *bytes = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    };
    while !message.is_empty() {
        let tag = varint(&mut message)?;
        match tag & 7 {
            0 => {
                let value = varint(&mut message)?;
                if tag >> 3 == 2 {
                    return u32::try_from(value).ok();
                }
            }
            2 => {
                let len = usize::try_from(varint(&mut message)?).ok()?;
                message = message.get(len..)?;
            }
            _ => return None,
        }
    }
    None
}

/// A gRPC codec that carries messages as their protobuf bytes.
#[derive(Clone, Copy, Default)]
struct RawBytes;

impl tonic::codec::Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;
    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }
    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

impl tonic::codec::Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let len = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, len).to_vec()))
    }
}

/// The corruption checks' `HashKv` travels over the peer port under the peer listener's
/// TLS checks: with `--peer-client-cert-auth` and `--peer-cert-allowed-cn` (or
/// `--peer-cert-allowed-hostname`), a peer whose certificate names another common name
/// (or host) gets no hash, one that matches gets the member's HashKV, the same the
/// client port's Maintenance service answers.
#[tokio::test]
async fn peer_hash_kv_obeys_the_peer_certificate_checks() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    peer_certificates(
        dir.path(),
        &[
            ("member", "member", "m1.example"),
            ("stranger", "stranger", "elsewhere.example"),
            ("named", "anyone", "m1.example"),
        ],
    )?;
    let file = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    for (check, value, allowed, refused) in [
        ("--peer-cert-allowed-cn", "member", "member", "stranger"),
        (
            "--peer-cert-allowed-hostname",
            "m1.example",
            "named",
            "stranger",
        ),
    ] {
        let peer_port = concord_tests::free_port();
        let peer_url = format!("https://127.0.0.1:{peer_port}");
        let (self_cert, self_key, ca) = (file("self.crt"), file("self.key"), file("ca.crt"));
        let cluster = Cluster::start_with(
            1,
            &[
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &format!("m0={peer_url}"),
                "--peer-cert-file",
                &self_cert,
                "--peer-key-file",
                &self_key,
                "--peer-trusted-ca-file",
                &ca,
                "--peer-client-cert-auth",
                check,
                value,
            ],
        )?;
        let mut client = Client::connect([cluster.members[0].client_url()], None).await?;
        client.put("k", "v", None).await?;
        let expected = client.hash_kv(0).await?.hash();
        let hash = peer_hash_kv(peer_port, dir.path(), allowed)
            .await
            .map_err(|e| anyhow::anyhow!("{check} {value}, as {allowed}: {e:#}"))?;
        assert_eq!(hash, expected, "{check} {value}, as {allowed}");
        let stranger = peer_hash_kv(peer_port, dir.path(), refused).await;
        assert!(
            stranger.is_err(),
            "{check} {value}: {refused} got a hash: {stranger:?}"
        );
        // The member serves on, and its peers still get answers.
        assert_eq!(
            peer_hash_kv(peer_port, dir.path(), allowed).await?,
            expected
        );
    }
    Ok(())
}
