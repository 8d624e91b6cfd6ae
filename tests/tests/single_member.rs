//! One member, driven by the `etcd-client` crate the way an application would.

use concord_tests::Cluster;
use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};

#[tokio::test]
async fn put_get_delete_and_revisions() -> anyhow::Result<()> {
    let cluster = Cluster::start(1)?;
    let mut client = cluster.client().await?;

    let first = client.put("foo", "bar", None).await?;
    let first_rev = first.header().unwrap().revision();
    let second = client
        .put("foo", "baz", Some(PutOptions::new().with_prev_key()))
        .await?;
    assert_eq!(second.prev_key().unwrap().value(), b"bar");
    assert_eq!(second.header().unwrap().revision(), first_rev + 1);

    let got = client.get("foo", None).await?;
    assert_eq!(got.kvs().len(), 1);
    assert_eq!(got.kvs()[0].value(), b"baz");
    assert_eq!(got.kvs()[0].version(), 2);
    assert_eq!(got.kvs()[0].create_revision(), first_rev);

    let old = client
        .get("foo", Some(GetOptions::new().with_revision(first_rev)))
        .await?;
    assert_eq!(old.kvs()[0].value(), b"bar");

    for key in ["p/a", "p/b", "p/c", "q"] {
        client.put(key, "x", None).await?;
    }
    let prefixed = client
        .get("p/", Some(GetOptions::new().with_prefix()))
        .await?;
    assert_eq!(
        prefixed.kvs().iter().map(|kv| kv.key()).collect::<Vec<_>>(),
        vec![&b"p/a"[..], b"p/b", b"p/c"]
    );
    let limited = client
        .get("p/", Some(GetOptions::new().with_prefix().with_limit(2)))
        .await?;
    assert_eq!(limited.kvs().len(), 2);
    assert!(limited.more());
    assert_eq!(limited.count(), 3);

    let deleted = client
        .delete(
            "p/",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await?;
    assert_eq!(deleted.deleted(), 3);
    assert_eq!(deleted.prev_kvs().len(), 3);
    let serial = client
        .get(
            "p/",
            Some(GetOptions::new().with_prefix().with_serializable()),
        )
        .await?;
    assert_eq!(serial.count(), 0);
    Ok(())
}

#[tokio::test]
async fn txn_compare_and_swap() -> anyhow::Result<()> {
    let cluster = Cluster::start(1)?;
    let mut client = cluster.client().await?;
    client.put("lock", "free", None).await?;

    let take = Txn::new()
        .when([Compare::value("lock", CompareOp::Equal, "free")])
        .and_then([TxnOp::put("lock", "mine", None), TxnOp::get("lock", None)])
        .or_else([TxnOp::get("lock", None)]);
    let taken = client.txn(take.clone()).await?;
    assert!(taken.succeeded());
    let again = client.txn(take).await?;
    assert!(!again.succeeded());

    let duplicate = Txn::new().and_then([TxnOp::put("a", "1", None), TxnOp::put("a", "2", None)]);
    let error = client.txn(duplicate).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("etcdserver: duplicate key given in txn request"),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn etcd_errors_reach_the_client_with_etcds_text() -> anyhow::Result<()> {
    let cluster = Cluster::start(1)?;
    let mut client = cluster.client().await?;
    client.put("k", "v1", None).await?;
    let rev = client
        .put("k", "v2", None)
        .await?
        .header()
        .unwrap()
        .revision();
    client.compact(rev, None).await?;

    let compacted = client
        .get("k", Some(GetOptions::new().with_revision(rev - 1)))
        .await
        .unwrap_err();
    assert!(
        compacted
            .to_string()
            .contains("etcdserver: mvcc: required revision has been compacted"),
        "{compacted}"
    );
    let future = client
        .get("k", Some(GetOptions::new().with_revision(rev + 100)))
        .await
        .unwrap_err();
    assert!(
        future
            .to_string()
            .contains("etcdserver: mvcc: required revision is a future revision"),
        "{future}"
    );
    let lease = client
        .put("k", "v", Some(PutOptions::new().with_lease(12345)))
        .await
        .unwrap_err();
    assert!(
        lease
            .to_string()
            .contains("etcdserver: requested lease not found"),
        "{lease}"
    );
    let empty = client.put("", "v", None).await.unwrap_err();
    assert!(
        empty
            .to_string()
            .contains("etcdserver: key is not provided"),
        "{empty}"
    );
    let too_many = Txn::new().and_then(
        (0..129)
            .map(|i| TxnOp::put(format!("k{i}"), "v", None))
            .collect::<Vec<_>>(),
    );
    let error = client.txn(too_many).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("etcdserver: too many operations in txn request"),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn oversized_put_is_refused_and_the_member_carries_on() -> anyhow::Result<()> {
    let cluster = Cluster::start(1)?;
    let mut client = cluster.client().await?;
    let big = vec![b'x'; 2 * 1024 * 1024];
    let error = client.put("big", big, None).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("request is too large") || text.contains("larger than max"),
        "{text}"
    );
    // Just under the limit is accepted.
    let fits = vec![b'y'; 1024 * 1024];
    client.put("fits", fits.clone(), None).await?;
    assert_eq!(client.get("fits", None).await?.kvs()[0].value(), &fits[..]);
    assert!(client.get("big", None).await?.kvs().is_empty());
    Ok(())
}

#[tokio::test]
async fn restart_keeps_everything() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(1)?;
    let mut client = cluster.client().await?;
    for i in 0..200 {
        client
            .put(format!("key{i:03}"), format!("value{i}"), None)
            .await?;
    }
    let before = client
        .get("key", Some(GetOptions::new().with_prefix()))
        .await?;
    let revision = before.header().unwrap().revision();
    drop(client);

    assert_eq!(
        cluster.stop(0),
        Some(0),
        "a clean stop exits 0; log:\n{}",
        cluster.log(0)
    );
    cluster.spawn(0)?;
    cluster.wait_ready(0)?;
    cluster.leader().await?;
    let mut client = cluster.client().await?;
    let after = client
        .get("key", Some(GetOptions::new().with_prefix()))
        .await?;
    assert_eq!(after.kvs().len(), 200);
    assert_eq!(after.header().unwrap().revision(), revision);
    assert_eq!(after.kvs()[199].value(), b"value199");

    // kill -9 loses nothing that was acknowledged either.
    client.put("after-restart", "1", None).await?;
    cluster.kill(0);
    cluster.spawn(0)?;
    cluster.wait_ready(0)?;
    cluster.leader().await?;
    let mut client = cluster.client().await?;
    assert_eq!(
        client.get("after-restart", None).await?.kvs()[0].value(),
        b"1"
    );
    assert_eq!(
        client
            .get(
                "key",
                Some(GetOptions::new().with_prefix().with_count_only())
            )
            .await?
            .count(),
        200
    );
    Ok(())
}
