//! Debian's etcdctl (the real one) against a 3-member Concord cluster.

use concord_tests::{Cluster, etcdctl, run_ctl};

#[tokio::test]
async fn etcdctl_put_get_del_txn_and_status() -> anyhow::Result<()> {
    let etcdctl = etcdctl();
    let cluster = Cluster::start(3)?;
    cluster.leader().await?;
    let endpoints = cluster.endpoints();
    let ctl = |args: &[&str]| run_ctl(&etcdctl, &endpoints, args, None);

    let (ok, out, err) = ctl(&["put", "foo", "bar"])?;
    assert!(ok, "{err}");
    assert_eq!(out, "OK\n");
    let (ok, out, _) = ctl(&["get", "foo"])?;
    assert!(ok);
    assert_eq!(out, "foo\nbar\n");
    let (ok, out, _) = ctl(&["get", "foo", "--print-value-only"])?;
    assert!(ok);
    assert_eq!(out, "bar\n");
    let (ok, out, _) = ctl(&["get", "foo", "-w", "json"])?;
    assert!(ok);
    assert!(out.contains("\"kvs\":[{\"key\":\"Zm9v\""), "{out}");

    let txn = "value(\"foo\") = \"bar\"\n\nput foo baz\n\nput foo nope\n\n";
    let (ok, out, err) = run_ctl(&etcdctl, &endpoints, &["txn"], Some(txn))?;
    assert!(ok, "{err}");
    assert_eq!(out, "SUCCESS\n\nOK\n");
    let (_, out, _) = ctl(&["get", "foo", "--print-value-only"])?;
    assert_eq!(out, "baz\n");

    let (ok, out, _) = ctl(&["del", "foo"])?;
    assert!(ok);
    assert_eq!(out, "1\n");

    let (ok, out, err) = ctl(&["endpoint", "health"])?;
    assert!(ok, "{err}");
    assert_eq!(
        out.matches("is healthy").count() + err.matches("is healthy").count(),
        3,
        "{out}{err}"
    );
    let (ok, out, err) = ctl(&["endpoint", "status", "-w", "table"])?;
    assert!(ok, "{err}");
    assert_eq!(out.matches("3.4.23").count(), 3, "{out}");
    let (ok, out, err) = ctl(&["member", "list"])?;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.lines().all(|line| line.contains(", started, m")),
        "{out}"
    );
    Ok(())
}
