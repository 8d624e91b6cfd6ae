//! etcd's HTTP/JSON gateway against a real member, with curl-style requests: every KV,
//! lease and watch route (under `/v3/` and `/v3beta/`), the JSON mapping (bytes as
//! base64, 64-bit integers as strings, enums by name, defaults left out), errors with
//! grpc-gateway's status codes, streams that answer as events happen, the stream limit,
//! and Debian's python3-etcd3gw. The expected bodies were read off etcd 3.4.23 answering
//! the same requests.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use concord_tests::http_json::{JsonStream, b64, post, post_ok, request, unb64};
use concord_tests::{Cluster, run_python};
use serde_json::{Value, json};

/// How long something that must happen may take (the machine is shared).
const EVENTUALLY: Duration = Duration::from_secs(30);

fn endpoint(cluster: &Cluster) -> String {
    cluster.members[0].client_url()
}

/// The header every answer carries: 64-bit fields as decimal strings.
fn assert_header(value: &Value) {
    let header = &value["header"];
    for field in ["cluster_id", "member_id", "revision", "raft_term"] {
        let text = header[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} in {value}"));
        assert!(text.parse::<u64>().is_ok(), "{field} = {text}");
    }
}

#[tokio::test]
async fn kv_routes_answer_etcds_json() -> Result<()> {
    let cluster = Cluster::start(1)?;
    let url = endpoint(&cluster);

    let put = post_ok(
        &url,
        "/v3/kv/put",
        &json!({"key": b64("foo"), "value": b64("bar")}).to_string(),
    )
    .await?;
    assert_header(&put);
    assert_eq!(
        put.as_object().map(|o| o.len()),
        Some(1),
        "only the header: {put}"
    );
    let revision: i64 = put["header"]["revision"]
        .as_str()
        .context("revision")?
        .parse()?;

    // The same route under /v3beta/, and a request in camelCase names and numbers.
    let beta = post_ok(
        &url,
        "/v3beta/kv/put",
        r#"{"key":"Zm9vMg==","value":"YmF6","prevKv":true}"#,
    )
    .await?;
    assert_header(&beta);

    let range = post_ok(
        &url,
        "/v3/kv/range",
        &json!({"key": b64("foo")}).to_string(),
    )
    .await?;
    assert_header(&range);
    assert_eq!(range["count"], "1");
    assert_eq!(
        range["kvs"],
        json!([{"key": "Zm9v", "create_revision": revision.to_string(), "mod_revision": revision.to_string(), "version": "1", "value": "YmFy"}])
    );
    assert!(range.get("more").is_none(), "false is left out: {range}");

    // A prefix range, sorted by key descending (an enum by name), limited to 1.
    let prefix = post_ok(
        &url,
        "/v3/kv/range",
        &json!({"key": b64("foo"), "range_end": b64("fop"), "sort_order": "DESCEND", "sort_target": "KEY", "limit": "1"}).to_string(),
    )
    .await?;
    assert_eq!(prefix["count"], "2");
    assert_eq!(prefix["more"], true);
    assert_eq!(unb64(&prefix["kvs"][0]["key"])?, "foo2");

    // Txn: enums by name in, the oneof's name out.
    let txn = post_ok(
        &url,
        "/v3/kv/txn",
        &json!({
            "compare": [{"key": b64("foo"), "result": "EQUAL", "target": "VALUE", "value": b64("bar")}],
            "success": [{"request_put": {"key": b64("txn"), "value": b64("yes")}}],
            "failure": [{"request_range": {"key": b64("foo")}}]
        })
        .to_string(),
    )
    .await?;
    assert_eq!(txn["succeeded"], true);
    // etcd's inner responses carry only the revision in their header.
    assert_eq!(
        txn["responses"][0]["response_put"],
        json!({"header": {"revision": txn["header"]["revision"]}})
    );
    let txn = post_ok(
        &url,
        "/v3/kv/txn",
        &json!({
            "compare": [{"key": b64("foo"), "result": 1, "target": 3, "value": b64("bar")}],
            "failure": [{"request_range": {"key": b64("txn")}}]
        })
        .to_string(),
    )
    .await?;
    assert!(txn.get("succeeded").is_none(), "false is left out: {txn}");
    assert_eq!(
        unb64(&txn["responses"][0]["response_range"]["kvs"][0]["value"])?,
        "yes"
    );

    let deleted = post_ok(
        &url,
        "/v3/kv/deleterange",
        &json!({"key": b64("foo2"), "prev_kv": true}).to_string(),
    )
    .await?;
    assert_eq!(deleted["deleted"], "1");
    assert_eq!(unb64(&deleted["prev_kvs"][0]["value"])?, "baz");

    let compacted = post_ok(
        &url,
        "/v3/kv/compaction",
        &json!({"revision": revision.to_string()}).to_string(),
    )
    .await?;
    assert_header(&compacted);
    Ok(())
}

#[tokio::test]
async fn errors_are_grpc_gateways() -> Result<()> {
    let cluster = Cluster::start(1)?;
    let url = endpoint(&cluster);

    let empty_key = post(&url, "/v3/kv/range", "{}").await?;
    assert_eq!(empty_key.status, 400);
    assert_eq!(
        empty_key.body,
        r#"{"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3}"#
    );
    assert_eq!(empty_key.headers["content-type"], "application/json");

    let lease = post(&url, "/v3/lease/revoke", r#"{"ID":"12345"}"#).await?;
    assert_eq!(lease.status, 404);
    assert_eq!(
        lease.body,
        r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#
    );

    let compacted = post(&url, "/v3/kv/compaction", r#"{"revision":"100"}"#).await?;
    assert_eq!(compacted.status, 400);
    assert_eq!(compacted.json()?["code"], 11);

    // A body that is not the request's JSON: InvalidArgument, 400.
    let bad = post(&url, "/v3/kv/range", r#"{"key":1}"#).await?;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()?["code"], 3);

    let missing = post(&url, "/v3/kv/nothing", "{}").await?;
    assert_eq!(
        (missing.status, missing.body.as_str()),
        (404, "Not Found\n")
    );
    let get = request(&url, "GET", "/v3/kv/range", "", &[]).await?;
    assert_eq!(
        (get.status, get.body.as_str()),
        (405, "Method Not Allowed\n")
    );

    // A stream whose first request is not JSON fails as a whole (Unknown, 500).
    let watch = post(&url, "/v3/watch", "xx").await?;
    assert_eq!(watch.status, 500);
    assert_eq!(watch.json()?["code"], 2);
    Ok(())
}

/// Strings come out escaped as Go's `encoding/json` escapes them (grpc-gateway's
/// jsonpb): `<`, `>`, `&`, U+2028, backspace and form feed as `\u` escapes, DEL and `/`
/// as they are. Read off etcd 3.4.23 answering the same requests with curl.
#[tokio::test]
async fn strings_are_escaped_as_gos_json_escapes_them() -> Result<()> {
    let cluster = Cluster::start(1)?;
    let url = endpoint(&cluster);
    // The names as JSON string contents (escapes included), as curl sends them.
    for name in ["a<b>&c", r#"q\b\f\u0001\u2028\u007f\"\\/x"#] {
        let body = format!(r#"{{"name":"{name}","password":"x"}}"#);
        post_ok(&url, "/v3/auth/user/add", &body).await?;
    }
    let list = post(&url, "/v3/auth/user/list", "{}").await?;
    assert_eq!(list.status, 200);
    let users = list.body.split_once(r#""users":"#).context("users")?.1;
    assert_eq!(
        users,
        "[\"a\\u003cb\\u003e\\u0026c\",\"q\\u0008\\u000c\\u0001\\u2028\u{7f}\\\"\\\\/x\"]}"
    );
    Ok(())
}

#[tokio::test]
async fn lease_routes_and_keepalive_stream() -> Result<()> {
    let cluster = Cluster::start(1)?;
    let url = endpoint(&cluster);

    let grant = post_ok(&url, "/v3/lease/grant", r#"{"ID":"7001","TTL":"30"}"#).await?;
    assert_eq!(
        (&grant["ID"], &grant["TTL"]),
        (&json!("7001"), &json!("30"))
    );
    post_ok(
        &url,
        "/v3/kv/put",
        &json!({"key": b64("leased"), "value": b64("v"), "lease": "7001"}).to_string(),
    )
    .await?;

    for path in ["/v3/lease/timetolive", "/v3/kv/lease/timetolive"] {
        let ttl = post_ok(&url, path, r#"{"ID":7001,"keys":true}"#).await?;
        assert_eq!(ttl["ID"], "7001");
        assert_eq!(ttl["grantedTTL"], "30");
        assert_eq!(unb64(&ttl["keys"][0])?, "leased");
    }
    for path in ["/v3/lease/leases", "/v3/kv/lease/leases"] {
        let leases = post_ok(&url, path, "{}").await?;
        assert_eq!(leases["leases"], json!([{"ID": "7001"}]));
    }

    // Keepalive: each request answered on its line, while the body stays open.
    let mut keepalive = JsonStream::open(&url, "/v3/lease/keepalive", r#"{"ID":"7001"}"#).await?;
    assert_eq!(keepalive.status, 200);
    let first = keepalive.next_json().await?;
    assert_eq!(
        (&first["result"]["ID"], &first["result"]["TTL"]),
        (&json!("7001"), &json!("30"))
    );
    keepalive.send(r#"{"ID":"7001"}"#).await?;
    assert_eq!(keepalive.next_json().await?["result"]["ID"], "7001");
    // The end of the body ends the call once it has answered (etcd's server returns).
    keepalive.close_requests();
    assert_eq!(keepalive.next_line().await?, None);

    let revoked = post_ok(&url, "/v3/kv/lease/revoke", r#"{"ID":"7001"}"#).await?;
    assert_header(&revoked);
    let gone = post_ok(
        &url,
        "/v3/kv/range",
        &json!({"key": b64("leased")}).to_string(),
    )
    .await?;
    assert!(gone.get("count").is_none(), "count 0 is left out: {gone}");
    Ok(())
}

#[tokio::test]
async fn watch_stream_answers_as_events_happen() -> Result<()> {
    let cluster = Cluster::start(1)?;
    let url = endpoint(&cluster);

    let create = json!({"create_request": {"key": b64("w"), "range_end": b64("x")}}).to_string();
    let mut watch = JsonStream::open(&url, "/v3/watch", &create).await?;
    assert_eq!(watch.status, 200);
    assert_eq!(watch.headers["content-type"], "application/json");
    let created = watch.next_json().await?;
    assert_eq!(created["result"]["created"], true);
    assert_header(&created["result"]);

    // The request body may end: the watch goes on until the client goes away.
    watch.close_requests();
    post_ok(
        &url,
        "/v3/kv/put",
        &json!({"key": b64("w1"), "value": b64("one")}).to_string(),
    )
    .await?;
    let put = watch.next_json().await?;
    let event = &put["result"]["events"][0];
    assert!(
        event.get("type").is_none(),
        "PUT is the default and left out: {event}"
    );
    assert_eq!(unb64(&event["kv"]["key"])?, "w1");
    assert_eq!(unb64(&event["kv"]["value"])?, "one");

    post_ok(
        &url,
        "/v3/kv/deleterange",
        &json!({"key": b64("w1")}).to_string(),
    )
    .await?;
    let delete = watch.next_json().await?;
    assert_eq!(delete["result"]["events"][0]["type"], "DELETE");

    // A second watch on the same stream, from history, with a filter by name.
    let mut both = JsonStream::open(
        &url,
        "/v3/watch",
        &json!({"create_request": {"key": b64("w1"), "start_revision": 1, "filters": ["NODELETE"]}}).to_string(),
    )
    .await?;
    assert_eq!(both.next_json().await?["result"]["created"], true);
    let history = both.next_json().await?;
    assert_eq!(
        history["result"]["events"].as_array().map(Vec::len),
        Some(1),
        "{history}"
    );
    both.send(&json!({"create_request": {"key": b64("w2")}}).to_string())
        .await?;
    let second = both.next_json().await?;
    assert_eq!(
        (&second["result"]["created"], &second["result"]["watch_id"]),
        (&json!(true), &json!("1"))
    );
    Ok(())
}

#[tokio::test]
async fn cluster_and_maintenance_routes_answer() -> Result<()> {
    let cluster = Cluster::start(1)?;
    let url = endpoint(&cluster);
    let members = post_ok(&url, "/v3/cluster/member/list", "{}").await?;
    assert_eq!(members["members"][0]["name"], "m0");
    assert!(members["members"][0]["peerURLs"].is_array(), "{members}");
    let status = post_ok(&url, "/v3beta/maintenance/status", "{}").await?;
    assert_eq!(status["version"], "3.4.23");
    assert!(status["dbSize"].is_string(), "{status}");
    let hash = post_ok(&url, "/v3/maintenance/hash", "{}").await?;
    assert!(hash["hash"].is_number(), "uint32 stays a number: {hash}");
    let alarms = post_ok(&url, "/v3/maintenance/alarm", r#"{"action":"GET"}"#).await?;
    // etcd 3.4.23's Alarm answers without a header: no alarm, nothing to say.
    assert_eq!(alarms, json!({}));
    Ok(())
}

/// etcd's gateway dials its own gRPC server: its calls share one connection and its
/// stream limit (etcd's TestV3Curl_MaxStreams_*).
#[tokio::test]
async fn gateway_calls_count_against_max_concurrent_streams() -> Result<()> {
    let cluster = Cluster::start_with(1, &["--max-concurrent-streams", "2"])?;
    let url = endpoint(&cluster);
    let create = json!({"create_request": {"key": b64("foo")}}).to_string();
    let mut first = JsonStream::open(&url, "/v3/watch", &create).await?;
    first.next_json().await?;
    let mut second = JsonStream::open(&url, "/v3/watch", &create).await?;
    second.next_json().await?;

    let range_url = url.clone();
    let mut range = tokio::spawn(async move {
        post_ok(
            &range_url,
            "/v3/kv/range",
            &json!({"key": b64("foo")}).to_string(),
        )
        .await
    });
    // With both streams taken, the range waits (a bounded look: it must not answer).
    ensure!(
        tokio::time::timeout(Duration::from_secs(1), &mut range)
            .await
            .is_err(),
        "a range answered while the gateway's streams were all taken"
    );
    drop(first);
    let answer = tokio::time::timeout(EVENTUALLY, range).await???;
    assert_header(&answer);
    drop(second);
    Ok(())
}

/// Debian's python3-etcd3gw (OpenStack's gateway client) against Concord.
#[tokio::test]
async fn python_etcd3gw_works() -> Result<()> {
    let cluster = Cluster::start(1)?;
    let port = cluster.members[0].client_port;
    let script = r#"
import sys
from etcd3gw.client import Etcd3Client
c = Etcd3Client(host="127.0.0.1", port=int(sys.argv[1]), api_path="/v3/")
assert c.put("/gw/a", "1") is True
assert c.put("/gw/b", "2") is True
assert c.get("/gw/a") == [b"1"], c.get("/gw/a")
assert sorted(v for v, _ in c.get_prefix("/gw/")) == [b"1", b"2"]
lease = c.lease(30)
assert lease.ttl() > 0
assert c.put("/gw/leased", "x", lease=lease) is True
assert lease.keys() == [b"/gw/leased"], lease.keys()
assert lease.refresh() == 30
assert lease.revoke() is True
assert c.get("/gw/leased") == []
lock = c.lock("gw-lock", ttl=30)
assert lock.acquire() is True
assert lock.is_acquired()
other = c.lock("gw-lock", ttl=30)
assert other.acquire() is False
assert lock.release() is True
assert other.acquire() is True
assert other.release() is True
events, cancel = c.watch("/gw/watched")
# watch() returns once the watch is created (its first answer): the put is seen.
c.put("/gw/watched", "hello")
for event in events:
    assert event["kv"]["value"] == b"hello", event
    break
cancel()
assert c.delete("/gw/a") is True
assert c.get("/gw/a") == []
print("etcd3gw ok")
"#;
    run_python(script, &[&port.to_string()], "etcd3gw ok")?;
    Ok(())
}

/// etcd applies `--cors` to its whole client HTTP handler, not only to v2: the gateway,
/// `/metrics`, `/health`, `/version` and v2 all name an allowed origin in their answers
/// (none for an origin not allowed), and an OPTIONS preflight on any of them is answered
/// at once with 200 and no body. Read off etcd 3.4.23 (`embed/serve.go`'s access
/// controller) with curl.
#[tokio::test]
async fn cors_applies_to_every_client_http_answer() -> Result<()> {
    let cluster = Cluster::start_with(1, &["--enable-v2", "--cors", "http://app.example:8080"])?;
    cluster.leader().await?;
    let url = endpoint(&cluster);
    let routes = [
        (
            "POST",
            "/v3/kv/range",
            format!(r#"{{"key":"{}"}}"#, b64("k")),
        ),
        (
            "POST",
            "/v3beta/kv/range",
            format!(r#"{{"key":"{}"}}"#, b64("k")),
        ),
        ("GET", "/metrics", String::new()),
        ("GET", "/health", String::new()),
        ("GET", "/version", String::new()),
        ("GET", "/v2/keys/", String::new()),
    ];
    let allowed_origin = [("origin", "http://app.example:8080")];
    let other_origin = [("origin", "http://other.example")];
    for (method, path, body) in &routes {
        let allowed = request(&url, method, path, body, &allowed_origin).await?;
        assert_eq!(allowed.status, 200, "{method} {path}: {}", allowed.body);
        let header = |answer: &concord_tests::http_json::Answer, name: &str| {
            answer
                .headers
                .get(name)
                .map(|v| v.to_str().unwrap_or_default().to_string())
        };
        assert_eq!(
            header(&allowed, "access-control-allow-origin").as_deref(),
            Some("http://app.example:8080"),
            "{method} {path}"
        );
        assert_eq!(
            header(&allowed, "access-control-allow-methods").as_deref(),
            Some("POST, GET, OPTIONS, PUT, DELETE"),
            "{method} {path}"
        );
        assert_eq!(
            header(&allowed, "access-control-allow-headers").as_deref(),
            Some("accept, content-type, authorization"),
            "{method} {path}"
        );

        let other = request(&url, method, path, body, &other_origin).await?;
        assert_eq!(other.status, 200, "{method} {path}: {}", other.body);
        assert_eq!(
            header(&other, "access-control-allow-origin"),
            None,
            "{method} {path}"
        );

        let preflight = request(
            &url,
            "OPTIONS",
            path,
            "",
            &[
                ("origin", "http://app.example:8080"),
                ("access-control-request-method", "POST"),
            ],
        )
        .await?;
        assert_eq!(preflight.status, 200, "OPTIONS {path}");
        assert_eq!(preflight.body, "", "OPTIONS {path}");
        assert_eq!(
            header(&preflight, "access-control-allow-origin").as_deref(),
            Some("http://app.example:8080"),
            "OPTIONS {path}"
        );
    }
    drop(cluster);

    // The default (`--cors` not given) allows every origin: `*`, with or without one.
    let cluster = Cluster::start(1)?;
    cluster.leader().await?;
    let url = endpoint(&cluster);
    for (method, path, body) in &routes[..5] {
        let answer = request(&url, method, path, body, &[]).await?;
        assert_eq!(
            answer
                .headers
                .get("access-control-allow-origin")
                .and_then(|v| v.to_str().ok()),
            Some("*"),
            "{method} {path}"
        );
    }
    Ok(())
}

/// Malformed JSON gets etcd 3.4's gateway answer: Go's `encoding/json` (and jsonpb's)
/// error text as both `error` and `message`, code 3 (InvalidArgument) and HTTP 400;
/// unknown fields are ignored, and only the body's first JSON value is read. Each
/// expected text was read off etcd 3.4.23 answering the same body with curl.
#[tokio::test]
async fn malformed_json_gets_gos_decoder_errors() -> Result<()> {
    let cluster = Cluster::start(1)?;
    cluster.leader().await?;
    let url = endpoint(&cluster);
    let refused: &[(&str, &str)] = &[
        ("x", "invalid character 'x' looking for beginning of value"),
        (r#"{"key":"#, "unexpected EOF"),
        (
            r#"{"key": "aw==", "limit": "abc"}"#,
            "invalid character 'a' looking for beginning of value",
        ),
        (
            r#"{"key": 5}"#,
            "json: cannot unmarshal number into Go value of type []uint8",
        ),
        (r#"{"key":"!!"}"#, "illegal base64 data at input byte 0"),
        (
            "[1]",
            "json: cannot unmarshal array into Go value of type map[string]json.RawMessage",
        ),
        (
            r#""str""#,
            "json: cannot unmarshal string into Go value of type map[string]json.RawMessage",
        ),
        (
            r#"{"key":"aw==","limit":1.5}"#,
            "json: cannot unmarshal number 1.5 into Go value of type int64",
        ),
        (
            r#"{"key":"aw==","sort_order":"BOGUS"}"#,
            r#"unknown value "BOGUS" for enum etcdserverpb.RangeRequest_SortOrder"#,
        ),
        (
            r#"{"limit":"12x"}"#,
            "invalid character 'x' after top-level value",
        ),
        (
            r#"{"keys_only":"yes"}"#,
            "json: cannot unmarshal string into Go value of type bool",
        ),
        (
            r#"{"key":"aw==",}"#,
            "invalid character '}' looking for beginning of object key string",
        ),
        // No body, or null: the empty request, which the server refuses itself.
        ("", "etcdserver: key is not provided"),
        ("null", "etcdserver: key is not provided"),
    ];
    for (body, message) in refused {
        let answer = post(&url, "/v3/kv/range", body).await?;
        assert_eq!(answer.status, 400, "{body}: {}", answer.body);
        assert_eq!(
            answer.json()?,
            json!({"error": message, "message": message, "code": 3}),
            "{body}"
        );
    }
    // Unknown fields are ignored; what follows the first value is not read.
    for body in [
        r#"{"key":"aw==","unknown_field":1}"#,
        r#"{"key":"aw=="} x"#,
        r#"{"key":"aw==","limit":"12"}"#,
    ] {
        let answer = post(&url, "/v3/kv/range", body).await?;
        assert_eq!(answer.status, 200, "{body}: {}", answer.body);
        assert_header(&answer.json()?);
    }
    Ok(())
}
