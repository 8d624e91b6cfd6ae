//! etcd 3.4's v2 API against real `concord` members: the keys API's JSON byte for byte
//! (as read off Debian's etcd 3.4.23 with --enable-v2, indexes included: the
//! membership writes move the v2 index as etcd's do), watches, TTL expiry decided by the leader, the cluster
//! endpoints, and Debian's python3-etcd (the v2 client) as a user would run it.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use concord_tests::{Cluster, run_python};

/// One HTTP exchange through curl: status, headers (lower-cased names), body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn curl(url: &str, args: &[&str]) -> Result<Reply> {
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "--max-time", "20"])
        .args(args)
        .arg(url)
        .output()
        .context("run curl")?;
    let text = String::from_utf8(out.stdout)?;
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("no HTTP reply from {url}: {text:?}");
    };
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .context("status line")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: body.to_string(),
    })
}

fn v2_cluster(size: usize) -> Result<Cluster> {
    let cluster = Cluster::start_with(size, &["--enable-v2"])?;
    for i in 0..size {
        cluster.wait_ready(i)?;
    }
    Ok(cluster)
}

fn keys(cluster: &Cluster, i: usize, path: &str) -> String {
    format!("{}/v2/keys{path}", cluster.members[i].client_url())
}

/// The v2 index of a fresh cluster of `size` members before any key is written, as
/// etcd 3.4.23 answers it (3 for one member): each member's addition and its
/// published attributes, and the cluster version.
fn bootstrap_index(size: usize) -> u64 {
    2 * size as u64 + 1
}

/// Waits until a member answers v2 reads (it has a leader and its routes are up) and
/// the cluster's bootstrap writes have all been applied.
fn wait_v2(cluster: &Cluster, i: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let bootstrapped = bootstrap_index(cluster.members.len());
    loop {
        let last = curl(&keys(cluster, i, "/"), &["-d", "quorum=true", "-G"]);
        if let Ok(reply) = &last
            && reply.status == 200
            && reply
                .header("x-etcd-index")
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|index| index >= bootstrapped)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            let last = match &last {
                Ok(reply) => format!(
                    "status {}, X-Etcd-Index {:?}",
                    reply.status,
                    reply.header("x-etcd-index")
                ),
                Err(e) => format!("{e:#}"),
            };
            bail!(
                "member {i} never served v2 at index {bootstrapped} (last answer: {last}); \
                 logs:\n{}",
                cluster.logs_tail(60)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn v2_is_off_by_default_as_in_etcd() -> Result<()> {
    let cluster = Cluster::start(1)?;
    cluster.wait_ready(0)?;
    let reply = curl(&keys(&cluster, 0, "/foo"), &[])?;
    assert_eq!(reply.status, 404);
    Ok(())
}

#[test]
fn keys_api_answers_as_etcd_does() -> Result<()> {
    let cluster = v2_cluster(1)?;
    wait_v2(&cluster, 0)?;
    let url = |p: &str| keys(&cluster, 0, p);

    let set = curl(&url("/foo"), &["-XPUT", "-d", "value=bar"])?;
    assert_eq!(set.status, 201);
    assert_eq!(
        set.body,
        "{\"action\":\"set\",\"node\":{\"key\":\"/foo\",\"value\":\"bar\",\"modifiedIndex\":4,\"createdIndex\":4}}\n"
    );
    assert_eq!(set.header("x-etcd-index"), Some("4"));
    assert!(set.header("x-raft-index").is_some() && set.header("x-raft-term").is_some());
    assert!(set.header("x-etcd-cluster-id").is_some());

    let again = curl(&url("/foo"), &["-XPUT", "-d", "value=baz"])?;
    assert_eq!(again.status, 200);
    assert_eq!(
        again.body,
        "{\"action\":\"set\",\"node\":{\"key\":\"/foo\",\"value\":\"baz\",\"modifiedIndex\":5,\"createdIndex\":5},\"prevNode\":{\"key\":\"/foo\",\"value\":\"bar\",\"modifiedIndex\":4,\"createdIndex\":4}}\n"
    );

    let missing = curl(&url("/nope"), &[])?;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.body,
        "{\"errorCode\":100,\"message\":\"Key not found\",\"cause\":\"/nope\",\"index\":5}\n"
    );

    // compareAndSwap: a failed compare, then a good one; update and create.
    let failed = curl(
        &url("/foo"),
        &["-XPUT", "-d", "value=x", "-d", "prevValue=no"],
    )?;
    assert_eq!(failed.status, 412);
    assert_eq!(
        failed.body,
        "{\"errorCode\":101,\"message\":\"Compare failed\",\"cause\":\"[no != baz]\",\"index\":5}\n"
    );
    let cas = curl(
        &url("/foo"),
        &["-XPUT", "-d", "value=x", "-d", "prevIndex=5"],
    )?;
    assert!(
        cas.body.starts_with("{\"action\":\"compareAndSwap\""),
        "{}",
        cas.body
    );
    let exists = curl(
        &url("/foo"),
        &["-XPUT", "-d", "value=x", "-d", "prevExist=false"],
    )?;
    assert_eq!(exists.status, 412);
    assert!(
        exists.body.starts_with(
            "{\"errorCode\":105,\"message\":\"Key already exists\",\"cause\":\"/foo\""
        )
    );
    let update = curl(
        &url("/foo"),
        &["-XPUT", "-d", "value=y", "-d", "prevExist=true"],
    )?;
    assert!(update.body.starts_with("{\"action\":\"update\""));
    let cad = curl(&url("/foo?prevValue=no"), &["-XDELETE"])?;
    assert_eq!(cad.status, 412);
    let cad = curl(&url("/foo?prevValue=y"), &["-XDELETE"])?;
    assert_eq!(
        cad.body,
        "{\"action\":\"compareAndDelete\",\"node\":{\"key\":\"/foo\",\"modifiedIndex\":8,\"createdIndex\":5},\"prevNode\":{\"key\":\"/foo\",\"value\":\"y\",\"modifiedIndex\":7,\"createdIndex\":5}}\n"
    );

    // Directories: implicit, explicit, hidden, listings, delete rules.
    curl(&url("/dir/b"), &["-XPUT", "-d", "value=2"])?;
    curl(&url("/dir/a/deep"), &["-XPUT", "-d", "value=1"])?;
    curl(&url("/dir/_hidden"), &["-XPUT", "-d", "value=h"])?;
    let mkdir = curl(&url("/empty"), &["-XPUT", "-d", "dir=true"])?;
    assert_eq!(
        mkdir.body,
        "{\"action\":\"set\",\"node\":{\"key\":\"/empty\",\"dir\":true,\"modifiedIndex\":12,\"createdIndex\":12}}\n"
    );
    let list = curl(&url("/dir?sorted=true"), &[])?;
    assert_eq!(
        list.body,
        "{\"action\":\"get\",\"node\":{\"key\":\"/dir\",\"dir\":true,\"nodes\":[{\"key\":\"/dir/a\",\"dir\":true,\"modifiedIndex\":10,\"createdIndex\":10},{\"key\":\"/dir/b\",\"value\":\"2\",\"modifiedIndex\":9,\"createdIndex\":9}],\"modifiedIndex\":9,\"createdIndex\":9}}\n"
    );
    let deep = curl(&url("/dir?recursive=true&sorted=true"), &[])?;
    assert!(
        deep.body.contains("\"nodes\":[{\"key\":\"/dir/a/deep\""),
        "{}",
        deep.body
    );
    let hidden = curl(&url("/dir/_hidden"), &[])?;
    assert!(hidden.body.contains("\"value\":\"h\""));
    let not_file = curl(&url("/dir"), &["-XDELETE"])?;
    assert_eq!(
        (not_file.status, &not_file.body[..15]),
        (403, "{\"errorCode\":10")
    );
    assert!(not_file.body.contains("\"errorCode\":102"));
    let not_empty = curl(&url("/dir?dir=true"), &["-XDELETE"])?;
    assert!(
        not_empty
            .body
            .contains("\"errorCode\":108,\"message\":\"Directory not empty\"")
    );
    let rmdir = curl(&url("/empty?dir=true"), &["-XDELETE"])?;
    assert!(
        rmdir
            .body
            .starts_with("{\"action\":\"delete\",\"node\":{\"key\":\"/empty\",\"dir\":true")
    );
    let rm = curl(&url("/dir?recursive=true"), &["-XDELETE"])?;
    assert_eq!(rm.status, 200);
    assert_eq!(curl(&url("/dir/b"), &[])?.status, 404);
    let not_dir = curl(&url("/dir2"), &["-XPUT", "-d", "value=f"])?;
    assert_eq!(not_dir.status, 201);
    let under_file = curl(&url("/dir2/x"), &["-XPUT", "-d", "value=f"])?;
    assert!(
        under_file
            .body
            .contains("\"errorCode\":104,\"message\":\"Not a directory\",\"cause\":\"/dir2\"")
    );

    // In-order keys, quorum reads, bad input.
    let post = curl(&url("/queue"), &["-XPOST", "-d", "value=job"])?;
    assert_eq!(post.status, 201);
    assert!(
        post.body
            .contains("\"key\":\"/queue/00000000000000000016\""),
        "{}",
        post.body
    );
    let quorum = curl(&url("/queue?quorum=true&recursive=true"), &[])?;
    assert!(quorum.body.contains("\"value\":\"job\""));
    let bad = curl(&url("/foo?prevIndex=x"), &["-XPUT", "-d", "value=1"])?;
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.body,
        "{\"errorCode\":203,\"message\":\"The given index in POST form is not a number\",\"cause\":\"invalid value for \\\"prevIndex\\\"\",\"index\":0}\n"
    );
    let refresh = curl(&url("/foo"), &["-XPUT", "-d", "refresh=true"])?;
    assert!(refresh.body.contains("\"errorCode\":212"));
    let root = curl(&url("/"), &["-XDELETE", "-d", "recursive=true", "-G"])?;
    assert!(
        root.body
            .contains("\"errorCode\":107,\"message\":\"Root is read only\"")
    );
    let patch = curl(&url("/foo"), &["-XPATCH"])?;
    assert_eq!(patch.status, 405);
    Ok(())
}

#[test]
fn v2_and_v3_keyspaces_are_separate() -> Result<()> {
    let cluster = v2_cluster(1)?;
    wait_v2(&cluster, 0)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut client = cluster.client().await?;
        client.put("/v3only", "v", None).await?;
        curl(&keys(&cluster, 0, "/v2only"), &["-XPUT", "-d", "value=v"])?;
        assert_eq!(curl(&keys(&cluster, 0, "/v3only"), &[])?.status, 404);
        let got = client.get("/v2only", None).await?;
        assert!(got.kvs().is_empty());
        anyhow::Ok(())
    })
}

#[test]
fn ttl_refresh_and_expiry_with_an_expire_event() -> Result<()> {
    let cluster = v2_cluster(1)?;
    wait_v2(&cluster, 0)?;
    let url = |p: &str| keys(&cluster, 0, p);
    let set = curl(&url("/t"), &["-XPUT", "-d", "value=v", "-d", "ttl=100"])?;
    assert!(set.body.contains("\"ttl\":100,"), "{}", set.body);
    assert!(set.body.contains("\"expiration\":\"20"));
    let refreshed = curl(
        &url("/t"),
        &[
            "-XPUT",
            "-d",
            "ttl=1",
            "-d",
            "refresh=true",
            "-d",
            "prevExist=true",
        ],
    )?;
    assert!(
        refreshed.body.contains("\"value\":\"v\""),
        "{}",
        refreshed.body
    );
    assert!(
        refreshed.body.ends_with("\"refresh\":true}\n"),
        "{}",
        refreshed.body
    );
    let index: u64 = refreshed.header("x-etcd-index").context("index")?.parse()?;
    // The next event on /t is its expiry, whenever the leader decides it.
    let expired = curl(&url(&format!("/t?wait=true&waitIndex={}", index + 1)), &[])?;
    assert!(
        expired.body.starts_with(&format!(
            "{{\"action\":\"expire\",\"node\":{{\"key\":\"/t\",\"modifiedIndex\":{},\"createdIndex\":4}},\"prevNode\":{{\"key\":\"/t\",\"value\":\"v\",\"expiration\":",
            index + 1
        )),
        "{}",
        expired.body
    );
    assert_eq!(curl(&url("/t"), &[])?.status, 404);
    // Setting without a TTL removes it.
    curl(&url("/p"), &["-XPUT", "-d", "value=v", "-d", "ttl=1"])?;
    let permanent = curl(&url("/p"), &["-XPUT", "-d", "value=w"])?;
    let (node, prev) = permanent
        .body
        .split_once("\"prevNode\"")
        .context("a prevNode")?;
    assert!(!node.contains("\"ttl\""), "{}", permanent.body);
    assert!(prev.contains("\"ttl\""), "{}", permanent.body);
    let stats = curl(
        &format!("{}/v2/stats/store", cluster.members[0].client_url()),
        &[],
    )?;
    assert!(stats.body.contains("\"expireCount\":1,"), "{}", stats.body);
    Ok(())
}

#[test]
fn watches_long_poll_replay_stream_and_clear() -> Result<()> {
    let cluster = v2_cluster(1)?;
    wait_v2(&cluster, 0)?;
    let base = keys(&cluster, 0, "");
    let waiter = {
        let url = format!("{base}/w?wait=true&recursive=true");
        std::thread::spawn(move || curl(&url, &[]))
    };
    // The waiter registers before the write at the next index: it must see it.
    std::thread::sleep(Duration::from_millis(300));
    curl(&format!("{base}/w/child"), &["-XPUT", "-d", "value=1"])?;
    let seen = waiter.join().expect("waiter thread")?;
    assert!(
        seen.body
            .starts_with("{\"action\":\"set\",\"node\":{\"key\":\"/w/child\""),
        "{}",
        seen.body
    );
    // Replay from history by waitIndex.
    // The bootstrap's membership writes (indexes 1 to 3) are in the history too, but no
    // watcher of the keys sees them.
    let replay = curl(&format!("{base}/w/child?wait=true&waitIndex=1"), &[])?;
    assert!(
        replay.body.contains("\"modifiedIndex\":4"),
        "{}",
        replay.body
    );
    // Fill the history past its window with python3-etcd, then ask for a cleared index.
    python(&cluster, "for i in range(1005):\n    c.write('/fill', i)\n")?;
    let cleared = curl(&format!("{base}/w?wait=true&waitIndex=2"), &[])?;
    assert_eq!(cleared.status, 400);
    assert_eq!(
        cleared.body,
        "{\"errorCode\":401,\"message\":\"The event in requested index is outdated and cleared\",\"cause\":\"the requested history has been cleared [10/2]\",\"index\":1009}\n"
    );
    // A stream watch gets every event, in order.
    let stream = {
        let url = format!("{base}/s?wait=true&stream=true&recursive=true");
        std::thread::spawn(move || curl(&url, &["--max-time", "3"]))
    };
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..3 {
        curl(&format!("{base}/s/{i}"), &["-XPUT", "-d", "value=1"])?;
    }
    let streamed = stream.join().expect("stream thread")?;
    let lines: Vec<&str> = streamed.body.lines().collect();
    assert_eq!(lines.len(), 3, "{}", streamed.body);
    for (i, line) in lines.iter().enumerate() {
        assert!(line.contains(&format!("\"key\":\"/s/{i}\"")), "{line}");
    }
    Ok(())
}

/// Runs a python3-etcd script with `c`, a client of member 0; returns what it printed.
fn python(cluster: &Cluster, script: &str) -> Result<String> {
    let port = cluster.members[0].client_port;
    let program = format!(
        "import etcd\nc = etcd.Client(host='127.0.0.1', port={port})\n{script}\nprint('python3-etcd ok')\n"
    );
    run_python(&program, &[], "python3-etcd ok")
}

#[test]
fn python_etcd_client_works_against_concord() -> Result<()> {
    let cluster = v2_cluster(1)?;
    wait_v2(&cluster, 0)?;
    let out = python(
        &cluster,
        r#"
import threading
c.write('/py/a', 'one')
print(c.read('/py/a').value)
c.test_and_set('/py/a', 'two', 'one')
try:
    c.test_and_set('/py/a', 'three', 'one')
except ValueError as e:
    print('cas failed', e)
c.write('/py/dir', None, dir=True)
c.write('/py/dir/x', '1')
print(sorted(ch.key for ch in c.read('/py', recursive=True).leaves))
r = c.write('/py/ttl', 'gone', ttl=1)
ev = c.read('/py/ttl', wait=True, waitIndex=r.modifiedIndex + 1, timeout=30)
print(ev.action)
try:
    c.read('/py/ttl')
except etcd.EtcdKeyNotFound:
    print('expired')
print(c.read('/py/a', wait=True, waitIndex=1).value)
def later():
    import time; time.sleep(0.5); c.write('/py/w', 'woke')
threading.Thread(target=later).start()
print(c.read('/py/w', wait=True, timeout=30).value)
print(c.machines)
c.delete('/py', recursive=True)
print(c.read('/py/a') if False else 'deleted')
"#,
    )?;
    let url = cluster.members[0].client_url();
    assert_eq!(
        out,
        format!(
            "one\ncas failed Compare failed : [one != two]\n['/py/a', '/py/dir/x']\nexpire\nexpired\none\nwoke\n['{url}']\ndeleted\n"
        )
    );
    Ok(())
}

#[test]
fn cluster_endpoints_list_members_and_machines() -> Result<()> {
    let cluster = v2_cluster(3)?;
    for i in 0..3 {
        wait_v2(&cluster, i)?;
    }
    let base = cluster.members[1].client_url();
    // Members publish their client URLs through raft once they serve.
    let mut endpoints = cluster.endpoints();
    endpoints.sort();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let machines = curl(&format!("{base}/v2/machines"), &[])?;
        let mut listed: Vec<&str> = machines.body.split(", ").collect();
        listed.sort();
        if listed == endpoints {
            break;
        }
        assert!(Instant::now() < deadline, "machines: {}", machines.body);
        std::thread::sleep(Duration::from_millis(100));
    }
    let members = curl(&format!("{base}/v2/members"), &[])?;
    assert!(
        members.body.starts_with("{\"members\":[{\"id\":\""),
        "{}",
        members.body
    );
    assert_eq!(members.body.matches("\"clientURLs\"").count(), 3);
    let leader = curl(&format!("{base}/v2/members/leader"), &[])?;
    assert_eq!(leader.status, 200);
    let store = curl(&format!("{base}/v2/stats/store"), &[])?;
    assert!(store.body.starts_with("{\"getsSuccess\":"));
    let bad = curl(&format!("{base}/v2/members"), &["-XPOST", "-d", "x"])?;
    assert_eq!(
        (bad.status, bad.body.as_str()),
        (415, "{\"message\":\"Bad Content-Type\"}")
    );
    Ok(())
}

/// The highest index a key's events reached, read through a follower.
fn wait_for_expire(cluster: &Cluster, i: usize, path: &str, from: u64) -> Result<String> {
    let reply = curl(
        &keys(cluster, i, &format!("{path}?wait=true&waitIndex={from}")),
        &[],
    )?;
    Ok(reply.body)
}

#[test]
fn ttl_expires_after_a_leader_failover() -> Result<()> {
    let mut cluster = v2_cluster(3)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let leader = runtime.block_on(cluster.leader())?;
    let other = (leader + 1) % 3;
    wait_v2(&cluster, other)?;
    let set = curl(
        &keys(&cluster, other, "/ttl"),
        &["-XPUT", "-d", "value=v", "-d", "ttl=3"],
    )?;
    assert_eq!(set.status, 201, "{}", set.body);
    let index: u64 = set.header("x-etcd-index").context("index")?.parse()?;
    cluster.kill(leader);
    let new_leader = runtime.block_on(cluster.leader())?;
    assert_ne!(new_leader, leader);
    let event = wait_for_expire(&cluster, other, "/ttl", index + 1)?;
    assert!(event.starts_with("{\"action\":\"expire\""), "{event}");
    for i in (0..3).filter(|&i| i != leader) {
        assert_eq!(curl(&keys(&cluster, i, "/ttl"), &[])?.status, 404);
    }
    Ok(())
}

#[test]
fn a_long_polling_watcher_misses_nothing_across_a_leader_change() -> Result<()> {
    let mut cluster = v2_cluster(3)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let leader = runtime.block_on(cluster.leader())?;
    let watcher_member = (leader + 1) % 3;
    let writer_member = (leader + 2) % 3;
    wait_v2(&cluster, watcher_member)?;
    wait_v2(&cluster, writer_member)?;
    let watch_base = keys(&cluster, watcher_member, "/seq");
    let start: u64 = curl(&keys(&cluster, watcher_member, "/"), &[])?
        .header("x-etcd-index")
        .context("index")?
        .parse()?;
    let watcher = std::thread::spawn(move || -> Result<Vec<String>> {
        // Long-polls as confd does: the next index after the last event seen.
        let mut next = start + 1;
        let mut values = Vec::new();
        while values.len() < 20 {
            let reply = curl(
                &format!("{watch_base}?wait=true&recursive=true&waitIndex={next}"),
                &[],
            )?;
            if reply.status != 200 {
                continue;
            }
            let index = reply
                .body
                .split("\"modifiedIndex\":")
                .nth(1)
                .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|s| s.parse::<u64>().ok())
                .context("event index")?;
            let value = reply
                .body
                .split("\"value\":\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or_default()
                .to_string();
            values.push(value);
            next = index + 1;
        }
        Ok(values)
    });
    let writer_url = keys(&cluster, writer_member, "/seq/k");
    for i in 0..20 {
        if i == 10 {
            cluster.kill(leader);
        }
        // A write that times out during the election is tried again.
        loop {
            let reply = curl(&writer_url, &["-XPUT", "-d", &format!("value={i}")])?;
            if reply.status < 300 {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let values = watcher.join().expect("watcher thread")?;
    let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(values, expected);
    Ok(())
}

/// The v2 auth API as etcd 3.4.23 answers it (each body read off etcd run with the same
/// requests): users and roles, the switch, basic auth on the keys, root only for
/// members and auth writes, the guest role for requests without credentials, and
/// every auth write at an index of its own.
#[test]
fn v2_auth_api_answers_as_etcd_does() -> Result<()> {
    let cluster = v2_cluster(1)?;
    wait_v2(&cluster, 0)?;
    let base = cluster.members[0].client_url();
    let auth = |p: &str| format!("{base}/v2/auth{p}");
    let put = |url: &str, body: &str| curl(url, &["-XPUT", "-d", body]);

    curl(&keys(&cluster, 0, "/foo"), &["-XPUT", "-d", "value=bar"])?;
    let user = put(&auth("/users/foo"), r#"{"user":"foo", "password":"pass"}"#)?;
    assert_eq!(
        (user.status, user.body.as_str()),
        (201, "{\"user\":\"foo\",\"roles\":null}\n")
    );
    let role = put(
        &auth("/roles/foo"),
        r#"{"role":"foo", "permissions": {"kv": {"read": ["/foo/*"]}}}"#,
    )?;
    assert_eq!(
        (role.status, role.body.as_str()),
        (
            201,
            "{\"role\":\"foo\",\"permissions\":{\"kv\":{\"read\":[\"/foo/*\"],\"write\":null}}}\n"
        )
    );
    let granted = put(&auth("/users/foo"), r#"{"user": "foo", "grant": ["foo"]}"#)?;
    assert_eq!(
        (granted.status, granted.body.as_str()),
        (200, "{\"user\":\"foo\",\"roles\":[\"foo\"]}\n")
    );
    let again = put(&auth("/users/foo"), r#"{"user": "foo", "grant": ["foo"]}"#)?;
    assert_eq!(
        (again.status, again.body.as_str()),
        (
            409,
            "{\"message\":\"auth: Granting duplicate role foo for user foo\"}"
        )
    );
    let root = put(&auth("/users/root"), r#"{"user": "root", "password": "a"}"#)?;
    assert_eq!(root.body, "{\"user\":\"root\",\"roles\":[\"root\"]}\n");
    let roles = curl(&auth("/roles"), &[])?;
    assert_eq!(
        roles.body,
        "{\"roles\":[{\"role\":\"foo\",\"permissions\":{\"kv\":{\"read\":[\"/foo/*\"],\"write\":null}}},{\"role\":\"root\",\"permissions\":{\"kv\":{\"read\":[\"/*\"],\"write\":[\"/*\"]}}}]}\n"
    );
    let foo = curl(&auth("/users/foo"), &[])?;
    assert_eq!(
        foo.body,
        "{\"user\":\"foo\",\"roles\":[{\"role\":\"foo\",\"permissions\":{\"kv\":{\"read\":[\"/foo/*\"],\"write\":null}}}]}\n"
    );
    let missing = curl(&auth("/users/nobody"), &[])?;
    assert_eq!(
        (missing.status, missing.body.as_str()),
        (404, "{\"message\":\"auth: User nobody does not exist.\"}")
    );

    let enabled = curl(&auth("/enable"), &["-XPUT"])?;
    assert_eq!((enabled.status, enabled.body.as_str()), (200, ""));
    // /foo at 4; the auth tree's four directories and switch, foo, role foo, the
    // grant, root, the guest role made on enabling, the switch: 14, as on etcd.
    let read = curl(&keys(&cluster, 0, "/foo/"), &["-u", "root:a"])?;
    assert_eq!(read.header("x-etcd-index"), Some("14"));
    assert!(read.body.contains("\"value\":\"bar\""), "{}", read.body);
    let as_foo = curl(&keys(&cluster, 0, "/foo/"), &["-u", "foo:pass"])?;
    assert_eq!(as_foo.status, 200);
    let wrong = curl(&keys(&cluster, 0, "/foo/"), &["-u", "foo:"])?;
    assert_eq!(
        (wrong.status, wrong.body.as_str()),
        (
            401,
            "{\"errorCode\":110,\"message\":\"The request requires user authentication\",\"cause\":\"Insufficient credentials\",\"index\":0}\n"
        )
    );
    let foo_writes = curl(
        &keys(&cluster, 0, "/foo/x"),
        &["-XPUT", "-d", "value=1", "-u", "foo:pass"],
    )?;
    assert_eq!(foo_writes.status, 401);
    // Without credentials the guest role decides: all keys until it is narrowed.
    assert_eq!(curl(&keys(&cluster, 0, "/foo"), &[])?.status, 200);
    let narrowed = curl(
        &auth("/roles/guest"),
        &[
            "-XPUT",
            "-u",
            "root:a",
            "-d",
            r#"{"role":"guest","revoke":{"kv":{"read":["/*"],"write":["/*"]}}}"#,
        ],
    )?;
    assert_eq!(
        narrowed.body,
        "{\"role\":\"guest\",\"permissions\":{\"kv\":{\"read\":[],\"write\":[]}}}\n"
    );
    assert_eq!(curl(&keys(&cluster, 0, "/foo"), &[])?.status, 401);
    assert_eq!(curl(&auth("/users"), &[])?.status, 401);
    let member_add = curl(
        &format!("{base}/v2/members"),
        &[
            "-XPOST",
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"peerURLs":["http://127.0.0.1:1"]}"#,
        ],
    )?;
    assert_eq!(
        (member_add.status, member_add.body.as_str()),
        (401, "{\"message\":\"Insufficient credentials\"}")
    );
    let root_gone = curl(&auth("/users/root"), &["-XDELETE", "-u", "root:a"])?;
    assert_eq!(
        root_gone.body,
        "{\"message\":\"auth: Cannot delete root user while auth is enabled.\"}"
    );
    let state = curl(&auth("/enable"), &[])?;
    assert_eq!(state.body, "{\"enabled\":true}\n");
    let disabled = curl(&auth("/enable"), &["-XDELETE", "-u", "root:a"])?;
    assert_eq!(disabled.status, 200);
    assert_eq!(curl(&keys(&cluster, 0, "/foo"), &[])?.status, 200);
    // A name in the URL is percent-decoded, as Go's URL.Path is.
    let spaced = put(
        &auth("/users/Autogenerated%20CA"),
        r#"{"user":"Autogenerated CA","password":"p"}"#,
    )?;
    assert_eq!(
        (spaced.status, spaced.body.as_str()),
        (201, "{\"user\":\"Autogenerated CA\",\"roles\":null}\n")
    );
    Ok(())
}

/// etcd's `--cors` (default `*`): every v2 answer names the allowed origin, and a
/// preflight OPTIONS is answered at once.
#[test]
fn v2_answers_carry_cors_headers() -> Result<()> {
    // etcd 3.4 takes only host:port URLs for --cors.
    let cluster = Cluster::start_with(1, &["--enable-v2", "--cors", "http://app.example:80"])?;
    cluster.wait_ready(0)?;
    wait_v2(&cluster, 0)?;
    let url = keys(&cluster, 0, "/k");
    let allowed = curl(&url, &["-H", "Origin: http://app.example:80"])?;
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("http://app.example:80")
    );
    assert_eq!(
        allowed.header("access-control-allow-methods"),
        Some("POST, GET, OPTIONS, PUT, DELETE")
    );
    assert_eq!(
        allowed.header("access-control-allow-headers"),
        Some("accept, content-type, authorization")
    );
    let other = curl(&url, &["-H", "Origin: http://elsewhere"])?;
    assert_eq!(other.header("access-control-allow-origin"), None);
    let preflight = curl(&url, &["-XOPTIONS", "-H", "Origin: http://app.example:80"])?;
    assert_eq!((preflight.status, preflight.body.as_str()), (200, ""));

    let open = v2_cluster(1)?;
    wait_v2(&open, 0)?;
    let any = curl(&keys(&open, 0, "/k"), &[])?;
    assert_eq!(any.header("access-control-allow-origin"), Some("*"));
    Ok(())
}

/// The top-level field names of a JSON object, in the order they were written.
fn field_names(body: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0;
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            '"' => {
                let start = i + 1;
                let mut end = start;
                while let Some((j, c)) = chars.next() {
                    if c == '\\' {
                        chars.next();
                    } else if c == '"' {
                        end = j;
                        break;
                    }
                }
                if depth == 1 && chars.peek().map(|(_, c)| *c) == Some(':') {
                    names.push(body[start..end].to_owned());
                }
            }
            _ => {}
        }
    }
    names
}

fn json(reply: &Reply) -> Result<serde_json::Value> {
    serde_json::from_str(&reply.body).with_context(|| format!("not JSON: {}", reply.body))
}

#[test]
fn stats_show_raft_traffic_and_store_counters_as_etcd() -> Result<()> {
    let cluster = v2_cluster(3)?;
    for i in 0..3 {
        wait_v2(&cluster, i)?;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let leader = runtime.block_on(cluster.leader())?;
    let follower = (leader + 1) % 3;
    let stats = |i: usize, what: &str| {
        curl(
            &format!("{}/v2/stats/{what}", cluster.members[i].client_url()),
            &[],
        )
    };
    let leader_self = stats(leader, "self")?;
    let leader_id = json(&leader_self)?["id"].as_str().context("id")?.to_owned();
    let before_leader = json(&leader_self)?;
    let before_follower = json(&stats(follower, "self")?)?;
    let before_store = json(&stats(follower, "store")?)?;
    // Writes through the follower: the leader sends appends, the follower receives them.
    for n in 0..5 {
        let set = curl(
            &keys(&cluster, follower, &format!("/stats{n}")),
            &["-XPUT", "-d", "value=v"],
        )?;
        assert_eq!(set.status, 201, "{}", set.body);
    }
    assert_eq!(curl(&keys(&cluster, follower, "/stats0"), &[])?.status, 200);
    assert_eq!(curl(&keys(&cluster, follower, "/nope"), &[])?.status, 404);

    let leader_self = stats(leader, "self")?;
    assert_eq!(leader_self.header("content-type"), Some("application/json"));
    let names = field_names(&leader_self.body);
    // etcd 3.4.23's order; the rates appear only while appends flow (omitempty).
    let expected: Vec<&str> = [
        "name",
        "id",
        "state",
        "startTime",
        "leaderInfo",
        "recvAppendRequestCnt",
        "sendAppendRequestCnt",
        "sendPkgRate",
        "sendBandwidthRate",
    ]
    .into_iter()
    .filter(|n| !n.ends_with("Rate") || names.iter().any(|m| m == n))
    .collect();
    assert_eq!(names, expected, "{}", leader_self.body);
    let leader_self = json(&leader_self)?;
    assert_eq!(leader_self["state"], "StateLeader");
    assert_eq!(leader_self["leaderInfo"]["leader"], leader_id.as_str());
    assert!(
        leader_self["sendAppendRequestCnt"].as_u64()
            > before_leader["sendAppendRequestCnt"].as_u64(),
        "{leader_self}"
    );
    let uptime = leader_self["leaderInfo"]["uptime"]
        .as_str()
        .context("uptime")?;
    assert!(uptime.ends_with('s'), "{uptime}");

    let follower_self = json(&stats(follower, "self")?)?;
    assert_eq!(follower_self["state"], "StateFollower");
    assert_eq!(follower_self["leaderInfo"]["leader"], leader_id.as_str());
    assert!(
        follower_self["recvAppendRequestCnt"].as_u64()
            >= Some(
                before_follower["recvAppendRequestCnt"]
                    .as_u64()
                    .unwrap_or(0)
                    + 5
            ),
        "{follower_self}"
    );
    assert_eq!(follower_self["sendAppendRequestCnt"], 0);

    let refused = stats(follower, "leader")?;
    assert_eq!(
        (refused.status, refused.body.as_str()),
        (403, "{\"message\":\"not current leader\"}")
    );
    let leader_stats = stats(leader, "leader")?;
    assert_eq!(field_names(&leader_stats.body), ["leader", "followers"]);
    let leader_stats = json(&leader_stats)?;
    assert_eq!(leader_stats["leader"], leader_id.as_str());
    let followers = leader_stats["followers"].as_object().context("followers")?;
    assert_eq!(followers.len(), 2, "{leader_stats}");
    assert!(!followers.contains_key(&leader_id));
    for (id, f) in followers {
        assert!(f["counts"]["success"].as_u64() >= Some(5), "{id}: {f}");
        assert_eq!(f["counts"]["fail"], 0);
        let latency = &f["latency"];
        for field in [
            "current",
            "average",
            "standardDeviation",
            "minimum",
            "maximum",
        ] {
            assert!(latency[field].as_f64().is_some(), "{field}: {latency}");
        }
        assert!(latency["minimum"].as_f64() <= latency["maximum"].as_f64());
    }

    // The store's counters are the member's own (etcd counts on every member: writes
    // as they are applied, reads where they are served).
    let store = json(&stats(follower, "store")?)?;
    let moved = |field: &str| {
        store[field].as_u64().unwrap_or(0) - before_store[field].as_u64().unwrap_or(0)
    };
    assert_eq!(moved("setsSuccess"), 5, "{store}");
    assert_eq!(moved("getsSuccess"), 1, "{store}");
    assert_eq!(moved("getsFail"), 1, "{store}");
    Ok(())
}

/// Runs `ETCDCTL_API=2 concordctl --endpoints=<urls> args...`: (exit code, stdout, stderr).
fn ctl_v2(endpoints: &[String], args: &[&str]) -> Result<(i32, String, String)> {
    let endpoints = format!("--endpoints={}", endpoints.join(","));
    concordctl_v2(std::iter::once(endpoints.as_str()).chain(args.iter().copied()))
}

/// `ETCDCTL_API=2 concordctl ARGS`: its exit code, stdout and stderr.
fn concordctl_v2<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<(i32, String, String)> {
    let output = Command::new(concord_tests::concordctl_binary())
        .env("ETCDCTL_API", "2")
        .args(args)
        .output()?;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[test]
fn concordctl_v2_commands_on_a_three_member_cluster() -> Result<()> {
    let mut cluster = v2_cluster(3)?;
    for i in 0..3 {
        wait_v2(&cluster, i)?;
    }
    let endpoints = cluster.endpoints();
    let (code, out, _) = ctl_v2(&endpoints, &["cluster-health"])?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.matches(" is healthy: got healthy result from ").count(),
        3
    );
    assert!(out.ends_with("cluster is healthy\n"), "{out}");
    let (code, out, _) = ctl_v2(&endpoints, &["member", "list"])?;
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert_eq!(out.matches("isLeader=true").count(), 1, "{out}");

    // A write through one member, read and watched through the others (the client
    // syncs to the members' client URLs first, as etcdctl does).
    let (code, out, err) = ctl_v2(&endpoints[..1], &["set", "/dir/k", "v1"])?;
    assert_eq!((code, out.as_str()), (0, "v1\n"), "{err}");
    let (code, out, _) = ctl_v2(
        &endpoints[1..2],
        &["--no-sync", "get", "--quorum", "/dir/k"],
    )?;
    assert_eq!((code, out.as_str()), (0, "v1\n"));
    let (_, out, _) = ctl_v2(&endpoints[2..], &["-o", "extended", "get", "/dir/k"])?;
    let index: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("Modified-Index: "))
        .context("index")?
        .parse()?;
    let (code, out, _) = ctl_v2(
        &endpoints[2..],
        &[
            "watch",
            "-r",
            "--after-index",
            &(index - 1).to_string(),
            "/dir",
        ],
    )?;
    assert_eq!((code, out.as_str()), (0, "[set] /dir/k\nv1\n"));

    // Every member down but one: the cluster is degraded, and a stopped endpoint is
    // passed over for a running one.
    cluster.kill(0);
    let (code, out, _) = ctl_v2(&endpoints, &["cluster-health"])?;
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("cluster is degraded"), "{out}");
    let (code, out, _) = ctl_v2(&endpoints, &["--no-sync", "get", "/dir/k"])?;
    assert_eq!((code, out.as_str()), (0, "v1\n"));
    let (code, _, err) = ctl_v2(&endpoints[..1], &["--no-sync", "get", "/dir/k"])?;
    assert_eq!(code, 4);
    assert!(
        err.starts_with(
            "Error:  client: etcd cluster is unavailable or misconfigured; error #0: dial tcp "
        ),
        "{err}"
    );
    Ok(())
}

/// `ETCDCTL_API=2 concordctl backup args...` (no endpoint: it reads files only).
fn backup(args: &[&str]) -> Result<(i32, String, String)> {
    concordctl_v2(std::iter::once("backup").chain(args.iter().copied()))
}

/// `ETCDCTL_API=3 concordctl get key` through member 0: what it prints.
fn v3_get(cluster: &Cluster, key: &str) -> Result<String> {
    let (ok, out, err) = concord_tests::run_ctl(
        &concord_tests::concordctl_binary(),
        &cluster.endpoints(),
        &["get", key],
        None,
    )?;
    anyhow::ensure!(ok, "get {key}: {err}");
    Ok(out)
}

/// The member's id and its cluster's, as `/v2/stats/self` and the keys API tell them.
fn identity(cluster: &Cluster) -> Result<(String, String)> {
    let stats = json(&curl(
        &format!("{}/v2/stats/self", cluster.members[0].client_url()),
        &[],
    )?)?;
    let reply = curl(&keys(cluster, 0, "/"), &[])?;
    Ok((
        stats["id"].as_str().context("id")?.to_string(),
        reply
            .header("x-etcd-cluster-id")
            .context("cluster id")?
            .to_string(),
    ))
}

/// A member with keys in both keyspaces (`/foo1` through v2, `v3key` through v3), and
/// an unstarted one-member cluster planned to start on the backup of it with
/// `--force-new-cluster`.
fn backup_source_and_target() -> Result<(Cluster, Cluster)> {
    let source = v2_cluster(1)?;
    wait_v2(&source, 0)?;
    let (ok, _, err) = concord_tests::run_ctl(
        &concord_tests::concordctl_binary(),
        &source.endpoints(),
        &["put", "v3key", "123"],
        None,
    )?;
    assert!(ok, "{err}");
    let set = curl(&keys(&source, 0, "/foo1"), &["-XPUT", "-d", "value=bar1"])?;
    assert_eq!(set.status, 201, "{}", set.body);
    let target = Cluster::plan(1, &["--enable-v2", "--force-new-cluster"])?;
    Ok((source, target))
}

/// Starts the planned member on its backup and checks what every backup guarantees:
/// the v2 keys are there, the member and cluster ids are new, the member is alone in
/// its cluster, and it takes writes.
fn start_restored(target: &mut Cluster, original: &(String, String)) -> Result<()> {
    target.spawn(0)?;
    target.wait_ready(0)?;
    wait_v2(target, 0)?;
    let got = curl(&keys(target, 0, "/foo1"), &["-d", "quorum=true", "-G"])?;
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(got.body.contains("\"value\":\"bar1\""), "{}", got.body);
    let restored = identity(target)?;
    assert_ne!(restored.0, original.0, "a new member id");
    assert_ne!(restored.1, original.1, "a new cluster id");
    let members = json(&curl(
        &format!("{}/v2/members", target.members[0].client_url()),
        &[],
    )?)?;
    let members = members["members"].as_array().context("members")?;
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0]["id"].as_str(), Some(restored.0.as_str()));
    assert_eq!(
        members[0]["peerURLs"][0].as_str(),
        Some(target.members[0].peer_url().as_str())
    );
    let set = curl(&keys(target, 0, "/foo2"), &["-XPUT", "-d", "value=bar2"])?;
    assert_eq!(set.status, 201, "{}", set.body);
    Ok(())
}

#[test]
fn backup_of_a_running_member_keeps_the_v2_store_under_new_ids() -> Result<()> {
    let (source, mut target) = backup_source_and_target()?;
    let original = identity(&source)?;
    let data_dir = source.members[0].data_dir.to_string_lossy().into_owned();
    let backup_dir = target.members[0].data_dir.to_string_lossy().into_owned();
    // Without --with-v3 a running member's data dir is copied, as etcdctl's is.
    let (code, out, err) = backup(&["--data-dir", &data_dir, "--backup-dir", &backup_dir])?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("v3 data dropped"), "{err}");
    drop(source);

    start_restored(&mut target, &original)?;
    assert_eq!(v3_get(&target, "v3key")?, "", "v3 keys stay behind");
    Ok(())
}

#[test]
fn backup_with_v3_keeps_the_v3_keys_and_needs_the_member_stopped() -> Result<()> {
    let (mut source, mut target) = backup_source_and_target()?;
    let original = identity(&source)?;
    let data_dir = source.members[0].data_dir.to_string_lossy().into_owned();
    let backup_dir = target.members[0].data_dir.to_string_lossy().into_owned();
    let args = [
        "--data-dir",
        &data_dir,
        "--backup-dir",
        &backup_dir,
        "--with-v3",
    ];
    let (code, _, err) = backup(&args)?;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("is in use by a running member: stop it first"),
        "{err}"
    );
    assert!(!target.members[0].data_dir.join("member").exists());

    assert_eq!(source.stop(0), Some(0));
    let (code, out, err) = backup(&args)?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("v3 data kept"), "{err}");
    // Once written, a backup dir is not written over.
    let (code, _, err) = backup(&args)?;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already holds a member data dir"), "{err}");

    start_restored(&mut target, &original)?;
    assert_eq!(v3_get(&target, "v3key")?, "v3key\n123\n");
    Ok(())
}

#[test]
fn backup_after_a_crash_replays_what_the_store_had_not_written() -> Result<()> {
    let (mut source, mut target) = backup_source_and_target()?;
    let original = identity(&source)?;
    // Writes the store may hold only in memory when the member dies: the raft log has
    // them, and the backup applies them to its copy.
    for i in 0..20 {
        let set = curl(
            &keys(&source, 0, &format!("/crash/{i}")),
            &["-XPUT", "-d", "value=x"],
        )?;
        assert_eq!(set.status, 201, "{}", set.body);
    }
    source.kill(0);
    let data_dir = source.members[0].data_dir.to_string_lossy().into_owned();
    let backup_dir = target.members[0].data_dir.to_string_lossy().into_owned();
    let (code, out, err) = backup(&["--data-dir", &data_dir, "--backup-dir", &backup_dir])?;
    assert_eq!(code, 0, "{out}{err}");

    start_restored(&mut target, &original)?;
    let listed = json(&curl(&keys(&target, 0, "/crash"), &[])?)?;
    assert_eq!(
        listed["node"]["nodes"].as_array().map(Vec::len),
        Some(20),
        "{listed}"
    );
    Ok(())
}

#[test]
fn backup_refuses_bad_flags_and_missing_dirs_as_etcdctl() -> Result<()> {
    let (code, out, err) = backup(&["--bogus"])?;
    assert_eq!(code, 1);
    assert!(
        out.starts_with("Incorrect Usage: flag provided but not defined: -bogus"),
        "{out}"
    );
    assert!(
        err.contains("flag provided but not defined: -bogus"),
        "{err}"
    );

    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("nothing-here");
    let backup_dir = dir.path().join("backup");
    let (code, _, err) = backup(&[
        "--data-dir",
        &missing.to_string_lossy(),
        "--backup-dir",
        &backup_dir.to_string_lossy(),
    ])?;
    assert_eq!(code, 1);
    // etcdctl's log line: `2006-01-02 15:04:05.000000 I | open <dir>: no such file or directory`.
    let line = err.trim_end();
    assert_eq!(line.as_bytes()[4], b'-', "{err}");
    assert!(
        line.ends_with(&format!(
            " I | open {}: no such file or directory",
            missing.join("member").join("db").display()
        )),
        "{err}"
    );
    assert!(!backup_dir.join("member").exists());
    Ok(())
}
