//! Authentication and authorization against real members: one table of users, roles
//! with overlapping keys, ranges, prefixes and from-key permissions, and every kind of
//! request, allowed and denied. The same table runs against Debian's etcd 3.4.23 and
//! must come out with the same decisions (error texts included); a few decisions are
//! also asserted outright, so both servers cannot be wrong the same way unnoticed.
//! The table covers Lock and Election (run as the caller, on the caller's permissions)
//! and the JSON gateway (the token in the `Authorization` header).
//! Also: restarts keep users, roles and the enabled switch; JWT tokens verify with the
//! public key.

use std::collections::BTreeMap;
use std::process::Command;

use concord_tests::Cluster;
use concord_tests::http_json::{self, b64};
use concord_tests::side_by_side::{Server, ServerKind};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, LockOptions, Permission,
    PutOptions, ResignOptions, Txn, TxnOp, WatchOptions,
};

const USERS: &[(&str, &[&str])] = &[
    ("alice", &["rw-foo", "read-app", "rw-sync"]),
    ("bob", &["read-a-to-m", "write-k-to-p", "read-sync"]),
    ("carol", &["write-from-x", "read-app"]),
    ("dave", &["read-gap"]),
    ("erin", &[]),
];

fn permissions() -> Vec<(&'static str, Vec<Permission>)> {
    vec![
        ("rw-foo", vec![Permission::read_write("foo")]),
        // Lock and election keys live under /sync/.
        (
            "rw-sync",
            vec![Permission::read_write("/sync/").with_prefix()],
        ),
        ("read-sync", vec![Permission::read("/sync/").with_prefix()]),
        ("read-app", vec![Permission::read("/app/").with_prefix()]),
        (
            "read-a-to-m",
            vec![Permission::read("a").with_range_end("m")],
        ),
        (
            "write-k-to-p",
            vec![Permission::write("k").with_range_end("p")],
        ),
        ("write-from-x", vec![Permission::write("x").with_from_key()]),
        (
            "read-gap",
            vec![
                Permission::read("a").with_range_end("c"),
                Permission::read("d").with_range_end("f"),
            ],
        ),
    ]
}

/// Users, roles and a few keys, then auth on: as root while auth is off.
async fn set_up(endpoint: &str) -> anyhow::Result<()> {
    let mut root = Client::connect([endpoint], None).await?;
    root.user_add("root", "rootpw", None).await?;
    root.role_add("root").await?;
    root.user_grant_role("root", "root").await?;
    for (role, perms) in permissions() {
        root.role_add(role).await?;
        for perm in perms {
            root.role_grant_permission(role, perm).await?;
        }
    }
    for (user, roles) in USERS {
        root.user_add(*user, format!("{user}pw"), None).await?;
        for role in *roles {
            root.user_grant_role(*user, *role).await?;
        }
    }
    for key in ["foo", "/app/1", "b", "e", "l", "y"] {
        root.put(key, "v", None).await?;
    }
    root.auth_enable().await?;
    Ok(())
}

fn outcome<T>(result: Result<T, etcd_client::Error>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(etcd_client::Error::GRpcStatus(status)) => status.message().to_string(),
        Err(other) => format!("error: {other}"),
    }
}

/// Every request of the table as one user; returns case -> outcome.
async fn decisions_of(
    endpoint: &str,
    user: &str,
    password: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let options = ConnectOptions::new().with_user(user, password);
    let mut c = Client::connect([endpoint], Some(options)).await?;
    let mut out = BTreeMap::new();
    let mut record = |case: &str, result: String| {
        out.insert(format!("{user}: {case}"), result);
    };

    // Reads.
    record("get foo", outcome(c.get("foo", None).await));
    record("get /app/1", outcome(c.get("/app/1", None).await));
    record(
        "get prefix /app/",
        outcome(c.get("/app/", Some(GetOptions::new().with_prefix())).await),
    );
    record(
        "get [b, e)",
        outcome(c.get("b", Some(GetOptions::new().with_range("e"))).await),
    );
    record(
        "get [a, m)",
        outcome(c.get("a", Some(GetOptions::new().with_range("m"))).await),
    );
    record(
        "get [a, c)",
        outcome(c.get("a", Some(GetOptions::new().with_range("c"))).await),
    );
    record("get e", outcome(c.get("e", None).await));
    record(
        "get from y",
        outcome(c.get("y", Some(GetOptions::new().with_from_key())).await),
    );
    record(
        "serializable get l",
        outcome(
            c.get("l", Some(GetOptions::new().with_serializable()))
                .await,
        ),
    );

    // Writes.
    record("put foo", outcome(c.put("foo", "w", None).await));
    record(
        "put foo prev_kv",
        outcome(
            c.put("foo", "w", Some(PutOptions::new().with_prev_key()))
                .await,
        ),
    );
    record("put l", outcome(c.put("l", "w", None).await));
    record(
        "put l prev_kv",
        outcome(
            c.put("l", "w", Some(PutOptions::new().with_prev_key()))
                .await,
        ),
    );
    record("put zz", outcome(c.put("zz", "w", None).await));
    record("put /app/2", outcome(c.put("/app/2", "w", None).await));
    record("delete foo", outcome(c.delete("foo", None).await));
    record(
        "delete [k, o)",
        outcome(
            c.delete("k", Some(DeleteOptions::new().with_range("o")))
                .await,
        ),
    );
    record(
        "delete [k, o) prev_kv",
        outcome(
            c.delete(
                "k",
                Some(DeleteOptions::new().with_range("o").with_prev_key()),
            )
            .await,
        ),
    );
    record(
        "delete from x",
        outcome(
            c.delete("x", Some(DeleteOptions::new().with_from_key()))
                .await,
        ),
    );

    // Txns: compares and both branches count.
    let txn = Txn::new()
        .when([Compare::value("foo", CompareOp::Equal, "nope")])
        .and_then([TxnOp::put("foo", "t", None)])
        .or_else([TxnOp::get("foo", None)]);
    record("txn compare foo, put/get foo", outcome(c.txn(txn).await));
    let txn = Txn::new()
        .when([Compare::value("foo", CompareOp::Equal, "nope")])
        .and_then([TxnOp::put("foo", "t", None)])
        .or_else([TxnOp::put("l", "t", None)]);
    record("txn put foo else put l", outcome(c.txn(txn).await));
    let txn = Txn::new()
        .when([Compare::version("l", CompareOp::Greater, 0)])
        .and_then([TxnOp::put("l", "t", None)]);
    record("txn compare l, put l", outcome(c.txn(txn).await));
    let txn = Txn::new().and_then([TxnOp::get("/app/", Some(GetOptions::new().with_prefix()))]);
    record("txn get prefix /app/", outcome(c.txn(txn).await));

    // Auth management: admin only, except one's own user and roles.
    record("user get self", outcome(c.user_get(user).await));
    record("user get alice", outcome(c.user_get("alice").await));
    record("role get read-app", outcome(c.role_get("read-app").await));
    record("user list", outcome(c.user_list().await));
    record("role list", outcome(c.role_list().await));
    record("role add", outcome(c.role_add(format!("new-{user}")).await));

    // Watch: checked at creation, the refusal a canceled create.
    for (case, key, options) in [
        ("watch foo", "foo", None),
        (
            "watch prefix /app/",
            "/app/",
            Some(WatchOptions::new().with_prefix()),
        ),
        (
            "watch [a, m)",
            "a",
            Some(WatchOptions::new().with_range("m")),
        ),
    ] {
        let result = match c.watch(key, options).await {
            Ok(mut stream) => match stream.message().await {
                Ok(Some(response)) if response.canceled() => response.cancel_reason().to_string(),
                Ok(Some(_)) => "ok".into(),
                Ok(None) => "stream ended".into(),
                Err(error) => outcome::<()>(Err(error)),
            },
            Err(error) => outcome::<()>(Err(error)),
        };
        record(case, result);
    }

    // Maintenance: hash is admin only, compaction is not checked.
    let mut maintenance = c.maintenance_client();
    record("hash", outcome(maintenance.hash().await));

    // Lock and Election write and read their keys as the caller. A lease grant needs
    // no permission.
    let lease = c.lease_grant(60, None).await?.id();
    let lock = c
        .lock("/sync/lock", Some(LockOptions::new().with_lease(lease)))
        .await;
    let unlock = match &lock {
        Ok(held) => outcome(c.unlock(held.key().to_vec()).await),
        Err(_) => "not held".into(),
    };
    record("lock /sync/lock", outcome(lock));
    record("unlock /sync/lock", unlock);
    record(
        "lock /elsewhere",
        outcome(
            c.lock("/elsewhere", Some(LockOptions::new().with_lease(lease)))
                .await,
        ),
    );
    let campaign = c.campaign("/sync/election", user, lease).await;
    record(
        "leader /sync/election",
        outcome(c.leader("/sync/election").await),
    );
    let resign = match campaign.as_ref().map(|r| r.leader().cloned()) {
        Ok(Some(leader)) => outcome(
            c.resign(Some(ResignOptions::new().with_leader(leader)))
                .await,
        ),
        _ => "not leader".into(),
    };
    record("campaign /sync/election", outcome(campaign));
    record("resign /sync/election", resign);
    c.lease_revoke(lease).await?;
    Ok(out)
}

/// The JSON gateway: the token Authenticate answers, sent back in `Authorization`.
async fn gateway_decisions(endpoint: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let answer = |a: http_json::Answer| format!("{} {}", a.status, a.body);
    let put = |key: &str| format!(r#"{{"key":"{}","value":"{}"}}"#, b64(key), b64("gw"));
    for (user, password) in [("alice", "alicepw"), ("bob", "bobpw")] {
        let login = format!(r#"{{"name":"{user}","password":"{password}"}}"#);
        let authenticated = http_json::post_ok(endpoint, "/v3/auth/authenticate", &login).await?;
        let token = authenticated["token"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no token in {authenticated}"))?
            .to_string();
        let header = [("authorization", token.as_str())];
        for key in ["foo", "l"] {
            let response =
                http_json::request(endpoint, "POST", "/v3/kv/put", &put(key), &header).await?;
            out.insert(
                format!("gateway {user}: put {key}"),
                // The revision differs between servers; the status and error do not.
                if response.status == 200 {
                    "200".into()
                } else {
                    answer(response)
                },
            );
        }
        let range = format!(r#"{{"key":"{}"}}"#, b64("/app/1"));
        let response =
            http_json::request(endpoint, "POST", "/v3/kv/range", &range, &header).await?;
        out.insert(
            format!("gateway {user}: get /app/1"),
            format!("{}", response.status),
        );
    }
    let bad = [("authorization", "not-a-token")];
    out.insert(
        "gateway: put foo with a bad token".into(),
        answer(http_json::request(endpoint, "POST", "/v3/kv/put", &put("foo"), &bad).await?),
    );
    out.insert(
        "gateway: put foo without a token".into(),
        answer(http_json::post(endpoint, "/v3/kv/put", &put("foo")).await?),
    );
    let wrong = r#"{"name":"alice","password":"wrong"}"#;
    out.insert(
        "gateway: authenticate with a wrong password".into(),
        answer(http_json::post(endpoint, "/v3/auth/authenticate", wrong).await?),
    );
    Ok(out)
}

/// Leases: revoking one writes every key attached to it.
async fn lease_decisions(endpoint: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let root_options = ConnectOptions::new().with_user("root", "rootpw");
    let mut root = Client::connect([endpoint], Some(root_options)).await?;
    for (user, key) in [
        ("alice", "foo"),
        ("alice", "l"),
        ("bob", "l"),
        ("bob", "foo"),
    ] {
        let lease = root.lease_grant(60, None).await?.id();
        root.put(key, "leased", Some(PutOptions::new().with_lease(lease)))
            .await?;
        let options = ConnectOptions::new().with_user(user, format!("{user}pw"));
        let mut c = Client::connect([endpoint], Some(options)).await?;
        out.insert(
            format!("{user}: revoke lease on {key}"),
            outcome(c.lease_revoke(lease).await),
        );
        let lease = root.lease_grant(60, None).await?.id();
        root.put(key, "leased", Some(PutOptions::new().with_lease(lease)))
            .await?;
        out.insert(
            format!("{user}: put zz with the lease on {key}"),
            outcome(
                c.put("zz", "w", Some(PutOptions::new().with_lease(lease)))
                    .await,
            ),
        );
    }
    let mut nobody = Client::connect([endpoint], None).await?;
    out.insert(
        "nobody: get foo".into(),
        outcome(nobody.get("foo", None).await),
    );
    out.insert(
        "nobody: put foo".into(),
        outcome(nobody.put("foo", "x", None).await),
    );
    let wrong = ConnectOptions::new().with_user("alice", "wrong");
    out.insert(
        "alice with a wrong password".into(),
        outcome(Client::connect([endpoint], Some(wrong)).await),
    );
    let unknown = ConnectOptions::new().with_user("nobody", "x");
    out.insert(
        "an unknown user".into(),
        outcome(Client::connect([endpoint], Some(unknown)).await),
    );
    Ok(out)
}

async fn table(kind: ServerKind) -> anyhow::Result<BTreeMap<String, String>> {
    let server = Server::start(kind, &[])?;
    let endpoint = server.endpoint();
    set_up(&endpoint).await?;
    let mut all = BTreeMap::new();
    for (user, _) in USERS {
        all.extend(decisions_of(&endpoint, user, &format!("{user}pw")).await?);
    }
    all.extend(decisions_of(&endpoint, "root", "rootpw").await?);
    all.extend(lease_decisions(&endpoint).await?);
    all.extend(gateway_decisions(&endpoint).await?);
    drop(server);
    Ok(all)
}

#[tokio::test(flavor = "multi_thread")]
async fn rbac_decisions_match_etcd() -> anyhow::Result<()> {
    let ours = table(ServerKind::Concord).await?;
    let theirs = table(ServerKind::Etcd).await?;
    let mut differences = Vec::new();
    for (case, expected) in &theirs {
        let got = ours.get(case).map(String::as_str).unwrap_or("<missing>");
        if got != expected {
            differences.push(format!("{case}: etcd {expected:?}, concord {got:?}"));
        }
    }
    assert!(
        differences.is_empty(),
        "decisions differ from etcd 3.4.23:\n{}",
        differences.join("\n")
    );
    // Sanity: the table does decide both ways, with etcd's texts.
    let denied = "etcdserver: permission denied";
    for (case, want) in [
        ("alice: put foo", "ok"),
        ("alice: put l", denied),
        ("alice: get prefix /app/", "ok"),
        ("bob: get [b, e)", "ok"),
        ("bob: put l prev_kv", "ok"),
        ("bob: delete [k, o) prev_kv", denied),
        ("carol: delete from x", "ok"),
        ("carol: get from y", denied),
        ("dave: get [a, c)", "ok"),
        ("dave: get [b, e)", denied),
        ("dave: user get self", "ok"),
        ("dave: user get alice", denied),
        (
            "erin: watch foo",
            "rpc error: code = PermissionDenied desc = etcdserver: permission denied",
        ),
        ("alice: watch prefix /app/", "ok"),
        ("alice: txn put foo else put l", denied),
        ("root: user list", "ok"),
        ("alice: lock /sync/lock", "ok"),
        ("alice: unlock /sync/lock", "ok"),
        ("alice: lock /elsewhere", denied),
        ("alice: campaign /sync/election", "ok"),
        ("bob: lock /sync/lock", denied),
        ("bob: campaign /sync/election", denied),
        ("bob: leader /sync/election", "election: no leader"),
        ("erin: leader /sync/election", denied),
        ("gateway alice: put foo", "200"),
        ("gateway alice: get /app/1", "200"),
        (
            "gateway bob: put foo",
            r#"403 {"error":"etcdserver: permission denied","message":"etcdserver: permission denied","code":7}"#,
        ),
        (
            "gateway: put foo with a bad token",
            r#"401 {"error":"etcdserver: invalid auth token","message":"etcdserver: invalid auth token","code":16}"#,
        ),
        ("alice: revoke lease on l", denied),
        ("nobody: get foo", "etcdserver: user name is empty"),
        (
            "alice with a wrong password",
            "etcdserver: authentication failed, invalid user ID or password",
        ),
    ] {
        assert_eq!(ours.get(case).map(String::as_str), Some(want), "{case}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn restarts_keep_users_roles_and_the_switch() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(1)?;
    let endpoint = cluster.endpoints()[0].clone();
    set_up(&endpoint).await?;
    cluster.stop(0);
    cluster.spawn(0)?;
    cluster.wait_ready(0)?;
    // Still enabled: no user is no access.
    let mut anonymous = Client::connect([endpoint.as_str()], None).await?;
    let error = outcome(anonymous.get("foo", None).await);
    assert_eq!(error, "etcdserver: user name is empty");
    let options = ConnectOptions::new().with_user("root", "rootpw");
    let mut root = Client::connect([endpoint.as_str()], Some(options)).await?;
    let mut users = root.user_list().await?.users().to_vec();
    users.sort();
    assert_eq!(users, ["alice", "bob", "carol", "dave", "erin", "root"]);
    let role = root.role_get("read-gap").await?;
    assert_eq!(role.permissions().len(), 2);
    let options = ConnectOptions::new().with_user("alice", "alicepw");
    let mut alice = Client::connect([endpoint.as_str()], Some(options)).await?;
    alice.put("foo", "after restart", None).await?;
    assert_eq!(
        outcome(alice.put("l", "x", None).await),
        "etcdserver: permission denied"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_tokens_verify_with_the_public_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let private = dir.path().join("jwt.key");
    let public = dir.path().join("jwt.pub");
    let status = Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&private)
        .arg("2048")
        .output()?;
    anyhow::ensure!(status.status.success(), "openssl genrsa failed");
    let status = Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .output()?;
    anyhow::ensure!(status.status.success(), "openssl rsa -pubout failed");
    let token_flag = format!(
        "jwt,pub-key={},priv-key={},sign-method=RS256,ttl=10m",
        public.display(),
        private.display()
    );
    let cluster = Cluster::start_with(1, &["--auth-token", &token_flag])?;
    let endpoint = cluster.endpoints()[0].clone();
    let mut root = Client::connect([endpoint.as_str()], None).await?;
    root.user_add("root", "rootpw", None).await?;
    root.user_grant_role("root", "root").await?;
    root.auth_enable().await?;
    let mut auth = Client::connect([endpoint.as_str()], None)
        .await?
        .auth_client();
    let token = auth.authenticate("root".into(), "rootpw".into()).await?;
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&std::fs::read(&public)?)?;
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        token.token(),
        &key,
        &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256),
    )?
    .claims;
    assert_eq!(claims["username"], "root");
    assert!(claims["revision"].as_u64().is_some_and(|r| r > 1));
    assert!(claims["exp"].as_u64().is_some());
    // And the server takes it.
    let options = ConnectOptions::new().with_user("root", "rootpw");
    let mut client = Client::connect([endpoint.as_str()], Some(options)).await?;
    client.put("k", "v", None).await?;
    Ok(())
}

/// Root and a user with no role, then auth on (as root, while auth is still off).
async fn enable_with_root_and_user(endpoint: &str) -> anyhow::Result<()> {
    let mut root = Client::connect([endpoint], None).await?;
    root.user_add("root", "rootpw", None).await?;
    root.user_grant_role("root", "root").await?;
    root.user_add("user", "userpw", None).await?;
    root.auth_enable().await?;
    Ok(())
}

async fn client_as(endpoint: &str, user: &str, password: &str) -> anyhow::Result<Client> {
    let options = ConnectOptions::new().with_user(user, password);
    Ok(Client::connect([endpoint], Some(options)).await?)
}

/// An expired lease is revoked with its keys while auth is on (the member revokes it
/// itself, needing no user: etcd revokes as root). It used to stay forever, answering
/// "remaining(0s)" instead of etcd's "already expired" (e2e
/// TestCtlV3AuthLeaseTestTimeToLiveExpired).
#[tokio::test(flavor = "multi_thread")]
async fn expired_leases_are_revoked_with_auth_on() -> anyhow::Result<()> {
    let cluster = Cluster::start(1)?;
    let endpoint = cluster.endpoints()[0].clone();
    enable_with_root_and_user(&endpoint).await?;
    let mut root = client_as(&endpoint, "root", "rootpw").await?;
    let lease = root.lease_grant(2, None).await?.id();
    root.put("leased", "v", Some(PutOptions::new().with_lease(lease)))
        .await?;
    let mut events = root.watch("leased", None).await?;
    // The key's deletion is the revocation's effect; a generous deadline, no sleeping.
    let deleted = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(response) = events.message().await? {
            if response
                .events()
                .iter()
                .any(|e| e.event_type() == etcd_client::EventType::Delete)
            {
                return anyhow::Ok(true);
            }
        }
        anyhow::Ok(false)
    })
    .await;
    assert!(
        matches!(deleted, Ok(Ok(true))),
        "the expired lease's key was not deleted: {deleted:?}"
    );
    assert_eq!(root.lease_time_to_live(lease, None).await?.ttl(), -1);
    assert!(root.get("leased", None).await?.kvs().is_empty());
    // The real etcdctl says so in etcd's words.
    let (_, stdout, stderr) = concord_tests::run_ctl(
        &concord_tests::etcdctl(),
        std::slice::from_ref(&endpoint),
        &[
            "--user=root:rootpw",
            "lease",
            "timetolive",
            &format!("{lease:x}"),
        ],
        None,
    )?;
    assert_eq!(
        stdout,
        format!("lease {lease:016x} already expired\n"),
        "stderr: {stderr}"
    );
    Ok(())
}

/// Users added and deleted while a simple-token user writes and reads: every change
/// moves the auth revision past the writer's, and etcd proposes (or reads) again as of
/// the current revision instead of answering "revision of auth store is old" (e2e
/// TestCtlV3AuthCertCNWithWithConcurrentOperation, where concordctl's puts met it).
#[tokio::test(flavor = "multi_thread")]
async fn requests_racing_user_changes_are_not_refused_for_an_old_revision() -> anyhow::Result<()> {
    let cluster = Cluster::start(1)?;
    let endpoint = cluster.endpoints()[0].clone();
    enable_with_root_and_user(&endpoint).await?;
    let mut admin = client_as(&endpoint, "root", "rootpw").await?;
    let mut writer = client_as(&endpoint, "root", "rootpw").await?;
    let changes = tokio::spawn(async move {
        for i in 0..60 {
            let name = format!("churn-{i}");
            admin.user_add(name.as_str(), "pw", None).await?;
            admin.user_delete(name.as_str()).await?;
        }
        anyhow::Ok(())
    });
    let mut refused = Vec::new();
    let mut writes = 0;
    while !changes.is_finished() || writes < 60 {
        let key = format!("key-{writes}");
        if let Err(e) = writer.put(key.as_str(), "v", None).await {
            refused.push(format!("put {key}: {e}"));
        }
        if let Err(e) = writer.get(key.as_str(), None).await {
            refused.push(format!("get {key}: {e}"));
        }
        writes += 1;
    }
    changes.await??;
    assert!(refused.is_empty(), "{} refused: {refused:?}", refused.len());
    Ok(())
}

/// Puts racing a role revoke, through every member of three (followers hand theirs to
/// the leader, and an auth-revision retry must not let one through): every put that
/// began after the revoke was acknowledged is refused with "permission denied", every
/// put that ended before the revoke was sent succeeded, every acknowledged put is in
/// the store and no refused one is (e2e TestCtlV3AuthRoleRevokeDuringOps).
#[tokio::test(flavor = "multi_thread")]
async fn puts_racing_a_role_revoke_are_decided_on_either_side_of_it() -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let cluster = Cluster::start(3)?;
    cluster.leader().await?;
    let endpoints = cluster.endpoints();
    let mut root = Client::connect([endpoints[0].as_str()], None).await?;
    root.user_add("root", "rootpw", None).await?;
    root.user_grant_role("root", "root").await?;
    root.user_add("writer", "writerpw", None).await?;
    root.role_add("race").await?;
    root.role_grant_permission("race", Permission::read_write("race/").with_prefix())
        .await?;
    root.user_grant_role("writer", "race").await?;
    root.auth_enable().await?;
    let mut root = client_as(&endpoints[0], "root", "rootpw").await?;

    let (sent, acknowledged) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let allowed_so_far = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..6 {
        let endpoint = endpoints[w % 3].clone();
        let (sent, acknowledged) = (sent.clone(), acknowledged.clone());
        let allowed_so_far = allowed_so_far.clone();
        writers.push(tokio::spawn(async move {
            let mut client = client_as(&endpoint, "writer", "writerpw").await?;
            // (key, began after the acknowledgement, ended before the revoke was sent, outcome)
            let mut puts = Vec::new();
            let mut after = 0;
            for n in 0.. {
                let key = format!("race/{w}-{n}");
                let began_after = acknowledged.load(Ordering::SeqCst);
                let result = client.put(key.as_str(), "v", None).await;
                let ended_before = !sent.load(Ordering::SeqCst);
                if result.is_ok() {
                    allowed_so_far.fetch_add(1, Ordering::SeqCst);
                }
                puts.push((key, began_after, ended_before, outcome(result)));
                if began_after {
                    after += 1;
                    if after == 10 {
                        break;
                    }
                }
                // Writers that never see the revoke would run for ever: the revoke
                // comes once 60 puts are in, long before this.
                anyhow::ensure!(n < 100_000, "the revoke never came");
            }
            anyhow::Ok(puts)
        }));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while allowed_so_far.load(Ordering::SeqCst) < 60 {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the writers did not get 60 puts in"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    sent.store(true, Ordering::SeqCst);
    root.user_revoke_role("writer", "race").await?;
    acknowledged.store(true, Ordering::SeqCst);

    let mut puts = Vec::new();
    for writer in writers {
        puts.extend(writer.await??);
    }
    let stored: std::collections::BTreeSet<String> = root
        .get(
            "race/",
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await?
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    let denied = "etcdserver: permission denied";
    let mut wrong = Vec::new();
    for (key, began_after, ended_before, outcome) in &puts {
        let ok = outcome.as_str() == "ok";
        if *began_after && outcome != denied {
            wrong.push(format!(
                "{key} began after the revoke's acknowledgement: {outcome}"
            ));
        }
        if *ended_before && !ok {
            wrong.push(format!("{key} ended before the revoke was sent: {outcome}"));
        }
        if !ok && outcome != denied {
            wrong.push(format!("{key}: {outcome}"));
        }
        if ok != stored.contains(key) {
            wrong.push(format!(
                "{key}: {outcome}, stored: {}",
                stored.contains(key)
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(puts.iter().filter(|p| p.1).count() == 60);
    Ok(())
}

/// A member change sent to a follower is decided by the leader with the sender's token:
/// root may remove a member through any member, an ordinary user through none (e2e
/// TestCtlV3AuthMemberRemove, where the follower's hand-over lost the token and root
/// got "user name is empty" until its deadline).
#[tokio::test(flavor = "multi_thread")]
async fn member_remove_through_a_follower_carries_the_senders_token() -> anyhow::Result<()> {
    let cluster = Cluster::start(3)?;
    let leader = cluster.leader().await?;
    let follower = (0..3).find(|i| *i != leader).unwrap_or(0);
    let endpoint = cluster.members[follower].client_url();
    enable_with_root_and_user(&endpoint).await?;
    let mut root = client_as(&endpoint, "root", "rootpw").await?;
    let members = root.member_list().await?;
    let mine = root.status().await?.header().map(|h| h.member_id());
    let victim = members
        .members()
        .iter()
        .map(|m| m.id())
        .find(|id| Some(*id) != mine)
        .ok_or_else(|| anyhow::anyhow!("no other member"))?;
    let mut user = client_as(&endpoint, "user", "userpw").await?;
    assert_eq!(
        outcome(user.member_remove(victim).await),
        "etcdserver: permission denied"
    );
    // The answer lists the members the leader has once the removal applied.
    let left: Vec<u64> = root
        .member_remove(victim)
        .await?
        .members()
        .iter()
        .map(|m| m.id())
        .collect();
    assert_eq!(left.len(), 2, "{left:x?}");
    assert!(!left.contains(&victim));
    Ok(())
}

/// Three members serving clients over TLS with `--client-cert-auth` (their peer links
/// plain), for member changes sent to a follower by certificate identities.
struct TlsCluster {
    children: Vec<std::process::Child>,
    ports: Vec<u16>,
    dir: tempfile::TempDir,
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl TlsCluster {
    fn start(cert: &str, key: &str, ca: &str) -> anyhow::Result<TlsCluster> {
        let dir = tempfile::tempdir()?;
        let ports: Vec<(u16, u16)> = (0..3)
            .map(|_| (concord_tests::free_port(), concord_tests::free_port()))
            .collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = TlsCluster {
            children: Vec::new(),
            ports: ports.iter().map(|(client, _)| *client).collect(),
            dir,
        };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let client_url = format!("https://localhost:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log = std::fs::File::create(cluster.dir.path().join(format!("m{i}.log")))?;
            cluster.children.push(
                Command::new(concord_tests::concord_binary())
                    .args(["--name", &format!("m{i}")])
                    .arg("--data-dir")
                    .arg(cluster.dir.path().join(format!("m{i}.concord")))
                    .args(["--listen-client-urls", &client_url])
                    .args(["--advertise-client-urls", &client_url])
                    .args(["--listen-peer-urls", &peer_url])
                    .args(["--initial-advertise-peer-urls", &peer_url])
                    .args(["--initial-cluster", &initial_cluster])
                    .args(["--cert-file", cert, "--key-file", key])
                    .args(["--trusted-ca-file", ca, "--client-cert-auth"])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(log)
                    .spawn()?,
            );
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        for (i, port) in cluster.ports.iter().enumerate() {
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "member {i} did not serve: {}",
                    std::fs::read_to_string(cluster.dir.path().join(format!("m{i}.log")))
                        .unwrap_or_default()
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        Ok(cluster)
    }
}

fn as_learner() -> etcd_client::MemberAddOptions {
    etcd_client::MemberAddOptions::new().with_is_learner()
}

/// With `--client-cert-auth`, a member change sent to a follower by a caller known only
/// by its client certificate is decided for that caller: the follower checks it and
/// hands the change to the leader over the peer link (etcd's followers propose member
/// changes themselves). Root's certificate adds, promotes and removes through the
/// follower; a certificate of a user without the root role is refused each time. (The
/// follower used to forward to the leader's client URL, where its own certificate, not
/// the caller's, named the user.)
#[tokio::test(flavor = "multi_thread")]
async fn member_changes_through_a_follower_keep_the_certificate_identity() -> anyhow::Result<()> {
    let files = tempfile::tempdir()?;
    let (ca, cert, key) = certificates_for(files.path(), &["root", "user"])?;
    let cluster = TlsCluster::start(&cert, &key, &ca)?;
    // A follower every member agrees on, and a member to remove that is neither.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (follower, victim) = loop {
        let mut seen = Vec::new();
        for port in &cluster.ports {
            let mut client = certificate_client(*port, files.path(), "root").await?;
            if let Ok(status) = client.status().await {
                let own = status.header().map(|h| h.member_id()).unwrap_or(0);
                seen.push((*port, own, status.leader()));
            }
        }
        let leader = seen.first().map(|s| s.2).unwrap_or(0);
        if seen.len() == 3 && leader != 0 && seen.iter().all(|s| s.2 == leader) {
            let others: Vec<(u16, u64)> = seen
                .iter()
                .filter(|s| s.1 != leader)
                .map(|s| (s.0, s.1))
                .collect();
            break (others[0].0, others[1].1);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no agreed leader: {seen:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let mut root = certificate_client(follower, files.path(), "root").await?;
    root.user_add("root", "rootpw", None).await?;
    root.user_grant_role("root", "root").await?;
    root.user_add(
        "user",
        "",
        Some(etcd_client::UserAddOptions::new().with_no_pwd()),
    )
    .await?;
    root.auth_enable().await?;

    let mut user = certificate_client(follower, files.path(), "user").await?;
    let denied = "etcdserver: permission denied";

    let learner_url = format!("http://127.0.0.1:{}", concord_tests::free_port());
    assert_eq!(
        outcome(
            user.member_add([learner_url.as_str()], Some(as_learner()))
                .await
        ),
        denied
    );
    let learner = root
        .member_add([learner_url.as_str()], Some(as_learner()))
        .await?
        .member()
        .map(|m| m.id())
        .ok_or_else(|| anyhow::anyhow!("no member in the answer"))?;
    // The leader decided: the learner never started, so it is not in sync.
    assert_eq!(outcome(user.member_promote(learner).await), denied);
    assert_eq!(
        outcome(root.member_promote(learner).await),
        "etcdserver: can only promote a learner member which is in sync with leader"
    );
    assert_eq!(outcome(user.member_remove(learner).await), denied);
    root.member_remove(learner).await?;
    assert_eq!(outcome(user.member_remove(victim).await), denied);
    let left: Vec<u64> = root
        .member_remove(victim)
        .await?
        .members()
        .iter()
        .map(|m| m.id())
        .collect();
    assert_eq!(left.len(), 2, "{left:x?}");
    assert!(!left.contains(&victim));
    Ok(())
}

/// One member serving clients over TLS with `--client-cert-auth`, trusting `ca`.
struct TlsMember {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for TlsMember {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsMember {
    fn start(cert: &str, key: &str, ca: &str) -> anyhow::Result<TlsMember> {
        let dir = tempfile::tempdir()?;
        let (port, peer) = (concord_tests::free_port(), concord_tests::free_port());
        let client_url = format!("https://localhost:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("member.log"))?;
        let child = Command::new(concord_tests::concord_binary())
            .arg("--data-dir")
            .arg(dir.path().join("m.concord"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .args(["--cert-file", cert, "--key-file", key])
            .args(["--trusted-ca-file", ca, "--client-cert-auth"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()?;
        let member = TlsMember { child, port, dir };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the member did not serve: {}",
                member.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(member)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("member.log")).unwrap_or_default()
    }

    /// The real etcdctl with a client certificate (and nothing else naming a user):
    /// (success, stdout + stderr). A run past a minute is killed and is an error, so a
    /// client that cannot connect (etcdctl's `user add` has no deadline) fails the test
    /// instead of hanging it.
    /// Runs `ctl` (etcdctl or concordctl) against the member with a client identity.
    fn ctl(
        &self,
        ctl: &std::path::Path,
        (cert, key, ca): (&str, &str, &str),
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<(bool, String)> {
        use std::io::{Read, Write};
        let mut child = Command::new(ctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=https://localhost:{}", self.port))
            .args(["--cacert", ca, "--cert", cert, "--key", key])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.unwrap_or("").as_bytes())?;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("etcdctl {args:?} still running after a minute");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut text = String::new();
        if let Some(mut out) = child.stdout.take() {
            out.read_to_string(&mut text)?;
        }
        if let Some(mut err) = child.stderr.take() {
            err.read_to_string(&mut text)?;
        }
        Ok((status.success(), text))
    }
}

/// A CA certificate that also serves as the server's and the client's certificate, as
/// etcd's `CommonName-root.crt` fixture does: Go takes a leaf found among the trusted
/// roots as verified. Its common name `root` is the client's user. Under concurrent user
/// changes (each a new auth revision) and writes by that identity, every command
/// succeeds (e2e TestCtlV3AuthCertCNWithWithConcurrentOperation, which hung: the
/// member refused the certificate, and etcdctl's `user add` waited for a connection
/// forever).
#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_ca_certificate_is_a_client_identity() -> anyhow::Result<()> {
    let files = tempfile::tempdir()?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "root");
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let cert_path = files.path().join("root.crt");
    let key_path = files.path().join("root.key");
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    let (cert, key) = (
        cert_path.to_string_lossy().into_owned(),
        key_path.to_string_lossy().into_owned(),
    );
    let member = TlsMember::start(&cert, &key, &cert)?;
    let identity = (cert.as_str(), key.as_str(), cert.as_str());
    // Both ctls must take the CA certificate as the server's too, as Go's x509 does:
    // the steps alternate between them.
    let (etcdctl, concordctl) = (concord_tests::etcdctl(), concord_tests::concordctl_binary());
    let ctls = [etcdctl.as_path(), concordctl.as_path()];
    let run = |ctl: &std::path::Path,
               args: &[&str],
               stdin: Option<&str>,
               want: &str|
     -> anyhow::Result<()> {
        let (ok, text) = member.ctl(ctl, identity, args, stdin)?;
        anyhow::ensure!(
            ok && text.contains(want),
            "{} {args:?}: {text}",
            ctl.display()
        );
        Ok(())
    };
    run(
        &concordctl,
        &["user", "add", "root", "--interactive=false"],
        Some("rootpw\n"),
        "User root created",
    )?;
    run(
        &etcdctl,
        &["user", "grant-role", "root", "root"],
        None,
        "Role root is granted to user root",
    )?;
    run(
        &concordctl,
        &["auth", "enable"],
        None,
        "Authentication Enabled",
    )?;
    std::thread::scope(|scope| {
        let users = scope.spawn(|| -> anyhow::Result<()> {
            for i in 0..10 {
                let user = format!("user-{i}");
                let ctl = ctls[i % 2];
                run(
                    ctl,
                    &["user", "add", &user, "--interactive=false"],
                    Some("pw\n"),
                    &format!("User {user} created"),
                )?;
                run(
                    ctl,
                    &["user", "delete", &user],
                    None,
                    &format!("User {user} deleted"),
                )?;
            }
            Ok(())
        });
        let keys = scope.spawn(|| -> anyhow::Result<()> {
            for i in 0..10 {
                let key = format!("key-{i}");
                let ctl = ctls[(i + 1) % 2];
                run(ctl, &["put", &key, "v"], None, "OK")?;
                run(ctl, &["del", &key], None, "1")?;
            }
            Ok(())
        });
        for worker in [users, keys] {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a worker panicked"))??;
        }
        anyhow::Ok(())
    })?;
    // The certificate is the identity: root may list users without a password.
    for ctl in ctls {
        run(ctl, &["user", "list"], None, "root")?;
    }
    Ok(())
}

/// Under a pseudo-terminal: the ctl prompts for `--user`'s password with the echo off,
/// and Ctrl-C at the prompt, or SIGINT, SIGTERM or SIGHUP sent by another process while
/// it waits, ends it with the echo back on and speakeasy's exit status 255 (concordctl
/// used to die of the signal with the terminal left silent). etcdctl runs the same
/// script, so the two are held to the same outcome.
#[test]
fn interrupting_the_password_prompt_restores_the_echo() -> anyhow::Result<()> {
    const SCRIPT: &str = r#"
import os, pty, select, signal, sys, termios, time
ctl, how = sys.argv[1], sys.argv[2]
pid, fd = pty.fork()
if pid == 0:
    os.execv(ctl, [ctl, "--endpoints=127.0.0.1:1", "--user", "root", "get", "foo"])
def echo():
    return bool(termios.tcgetattr(fd)[3] & termios.ECHO)
deadline = time.time() + 60
seen = b""
while not seen.endswith(b"Password: "):
    ready, _, _ = select.select([fd], [], [], max(0, deadline - time.time()))
    if not ready:
        sys.exit("no prompt; saw %r" % seen)
    seen += os.read(fd, 1024)
# speakeasy turns the echo off just after its prompt shows: wait for it.
while echo():
    if time.time() > deadline:
        sys.exit("the echo stayed on while prompting")
    time.sleep(0.01)
print("echo while prompting:", echo())
if how == "ctrl-c":
    os.write(fd, b"\x03")
else:
    os.kill(pid, getattr(signal, how))
_, status = os.waitpid(pid, 0)
print("exit:", os.waitstatus_to_exitcode(status))
print("echo after:", echo())
print("END")
"#;
    let expected = "echo while prompting: False\nexit: 255\necho after: True\n";
    for ctl in [concord_tests::concordctl_binary(), concord_tests::etcdctl()] {
        for how in ["ctrl-c", "SIGINT", "SIGTERM", "SIGHUP"] {
            let printed = concord_tests::run_python(SCRIPT, &[&ctl.to_string_lossy(), how], "END")?;
            assert_eq!(printed, expected, "{} {how}", ctl.display());
        }
    }
    Ok(())
}

/// A CA, a server certificate for localhost, and client certificates whose common names
/// are users, as PEM files in `dir`; returns (ca, server cert, server key).
fn certificates_for(
    dir: &std::path::Path,
    users: &[&str],
) -> anyhow::Result<(String, String, String)> {
    let write = |name: &str, pem: String| -> anyhow::Result<String> {
        let path = dir.join(name);
        std::fs::write(&path, pem)?;
        Ok(path.to_string_lossy().into_owned())
    };
    let ca = concord_tests::tls::TestCa::new("auth test CA")?;
    let leaf = |name: &str, usage| ca.leaf(name, &["localhost"], false, &[usage]);
    let (server_cert, server_key) = leaf("server", rcgen::ExtendedKeyUsagePurpose::ServerAuth)?;
    for user in users {
        let (cert, key) = leaf(user, rcgen::ExtendedKeyUsagePurpose::ClientAuth)?;
        write(&format!("{user}.crt"), cert)?;
        write(&format!("{user}.key"), key)?;
    }
    Ok((
        write("ca.crt", ca.pem())?,
        write("server.crt", server_cert)?,
        write("server.key", server_key)?,
    ))
}

/// An etcd-client client of `port` over TLS, presenting `user`'s certificate from `dir`
/// and no user name or password: the certificate's common name is the identity.
async fn certificate_client(
    port: u16,
    dir: &std::path::Path,
    user: &str,
) -> anyhow::Result<Client> {
    let channel = concord_tests::tls::mutual_tls_channel(port, dir, user).await?;
    Ok(Client::from_channel(etcd_client::Channel::Tonic(channel), None).await?)
}

/// With `--client-cert-auth` and no token, the certificate's common name is the user for
/// the Lock and Election services too: a user whose role grants the lock and election
/// prefix locks and campaigns, one without gets etcd's permission error.
#[tokio::test(flavor = "multi_thread")]
async fn lock_and_election_as_a_certificate_identity() -> anyhow::Result<()> {
    let files = tempfile::tempdir()?;
    let (ca, cert, key) = certificates_for(files.path(), &["root", "locker", "stranger"])?;
    let member = TlsMember::start(&cert, &key, &ca)?;
    let mut root = certificate_client(member.port, files.path(), "root").await?;
    root.user_add("root", "rootpw", None).await?;
    root.user_grant_role("root", "root").await?;
    root.role_add("sync").await?;
    root.role_grant_permission("sync", Permission::read_write("/sync/").with_prefix())
        .await?;
    for user in ["locker", "stranger"] {
        root.user_add(
            user,
            "",
            Some(etcd_client::UserAddOptions::new().with_no_pwd()),
        )
        .await?;
    }
    root.user_grant_role("locker", "sync").await?;
    root.auth_enable().await?;

    let mut locker = certificate_client(member.port, files.path(), "locker").await?;
    let lease = locker.lease_grant(60, None).await?.id();
    let lock = locker
        .lock("/sync/lock", Some(LockOptions::new().with_lease(lease)))
        .await?;
    assert!(lock.key().starts_with(b"/sync/lock/"), "{:?}", lock.key());
    locker.unlock(lock.key()).await?;
    let campaign = locker.campaign("/sync/election", "me", lease).await?;
    let leader = campaign
        .leader()
        .ok_or_else(|| anyhow::anyhow!("no leader key"))?;
    assert_eq!(
        locker
            .leader("/sync/election")
            .await?
            .kv()
            .map(|kv| kv.value()),
        Some(&b"me"[..])
    );
    locker
        .resign(Some(ResignOptions::new().with_leader(leader.clone())))
        .await?;

    let mut stranger = certificate_client(member.port, files.path(), "stranger").await?;
    let lease = stranger.lease_grant(60, None).await?.id();
    let denied = "etcdserver: permission denied";
    assert_eq!(
        outcome(
            stranger
                .lock("/sync/lock", Some(LockOptions::new().with_lease(lease)))
                .await
        ),
        denied
    );
    assert_eq!(
        outcome(stranger.campaign("/sync/election", "me", lease).await),
        denied
    );
    Ok(())
}
