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

/// `--cors` takes what etcd 3.4.23 takes: `*`, or host:port URLs; anything else stops
/// the server before it starts, with etcd's flag error and exit status 2.
#[test]
fn cors_values_are_refused_as_etcd_refuses_them() -> Result<()> {
    let refused = [
        (
            "http://app.example",
            r#"invalid value "http://app.example" for flag -cors: URL address does not have the form "host:port": http://app.example"#,
        ),
        (
            "app.example:80",
            r#"invalid value "app.example:80" for flag -cors: URL scheme must be http, https, unix, or unixs: app.example:80"#,
        ),
        (
            "http://x:80,*",
            r#"invalid value "http://x:80,*" for flag -cors: URL scheme must be http, https, unix, or unixs: *"#,
        ),
        (
            "http://a b:1",
            r#"invalid value "http://a b:1" for flag -cors: parse "http://a b:1": invalid character " " in host name"#,
        ),
    ];
    let dir = tempfile::tempdir()?;
    for (value, error) in refused {
        let output = std::process::Command::new(concord_tests::concord_binary())
            .arg("--data-dir")
            .arg(dir.path().join("never"))
            .arg(format!("--cors={value}"))
            .output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{value}: {stderr}");
        assert_eq!(stderr.lines().next(), Some(error), "{value}");
        assert!(!dir.path().join("never").exists(), "{value}");
    }
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

    // Every route's bad bodies, answered byte for byte as etcd 3.4.23's gateway answered
    // them on a fresh member (curl -d BODY; streams' errors before their first answer
    // included): numbers judged by their literal, the text of a quoted integer read
    // again as JSON, fields in declaration order, enums by name or int32, bytes as base64
    // or an array of byte values.
    let refused_by_route: &[(&str, &str, u16, &str)] = &[
        (
            "/v3/kv/range",
            r#"{"limit":99999999999999999999}"#,
            400,
            r#"{"error":"json: cannot unmarshal number 99999999999999999999 into Go value of type int64","message":"json: cannot unmarshal number 99999999999999999999 into Go value of type int64","code":3}"#,
        ),
        (
            "/v3/kv/range",
            r#"{"limit":-99999999999999999999}"#,
            400,
            r#"{"error":"json: cannot unmarshal number -99999999999999999999 into Go value of type int64","message":"json: cannot unmarshal number -99999999999999999999 into Go value of type int64","code":3}"#,
        ),
        (
            "/v3/kv/range",
            r#"{"limit":1.5}"#,
            400,
            r#"{"error":"json: cannot unmarshal number 1.5 into Go value of type int64","message":"json: cannot unmarshal number 1.5 into Go value of type int64","code":3}"#,
        ),
        (
            "/v3/kv/range",
            r#"{"limit":1e3}"#,
            400,
            r#"{"error":"json: cannot unmarshal number 1e3 into Go value of type int64","message":"json: cannot unmarshal number 1e3 into Go value of type int64","code":3}"#,
        ),
        (
            "/v3/kv/range",
            r#"{"limit":"1e3"}"#,
            400,
            r#"{"error":"json: cannot unmarshal number 1e3 into Go value of type int64","message":"json: cannot unmarshal number 1e3 into Go value of type int64","code":3}"#,
        ),
        (
            "/v3/kv/range",
            r#"{"limit":"99999999999999999999"}"#,
            400,
            r#"{"error":"json: cannot unmarshal number 99999999999999999999 into Go value of type int64","message":"json: cannot unmarshal number 99999999999999999999 into Go value of type int64","code":3}"#,
        ),
        (
            "/v3/kv/range",
            r#"{"key":"Zm9v","sort_order":99999999999}"#,
            400,
            r#"{"error":"json: cannot unmarshal number 99999999999 into Go value of type etcdserverpb.RangeRequest_SortOrder","message":"json: cannot unmarshal number 99999999999 into Go value of type etcdserverpb.RangeRequest_SortOrder","code":3}"#,
        ),
        (
            "/v3/kv/range",
            r#"{"key":"Zm9v","sort_order":1.5}"#,
            400,
            r#"{"error":"json: cannot unmarshal number 1.5 into Go value of type etcdserverpb.RangeRequest_SortOrder","message":"json: cannot unmarshal number 1.5 into Go value of type etcdserverpb.RangeRequest_SortOrder","code":3}"#,
        ),
        (
            "/v3/kv/range",
            r#"{"key":"Zm9v","sort_order":true}"#,
            400,
            r#"{"error":"json: cannot unmarshal bool into Go value of type etcdserverpb.RangeRequest_SortOrder","message":"json: cannot unmarshal bool into Go value of type etcdserverpb.RangeRequest_SortOrder","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":1}"#,
            400,
            r#"{"error":"json: cannot unmarshal number into Go value of type []uint8","message":"json: cannot unmarshal number into Go value of type []uint8","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v","value":"!!"}"#,
            400,
            r#"{"error":"illegal base64 data at input byte 0","message":"illegal base64 data at input byte 0","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v","value":"YmFy","lease":-1}"#,
            404,
            r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v","value":"YmFy","lease":"abc"}"#,
            400,
            r#"{"error":"invalid character 'a' looking for beginning of value","message":"invalid character 'a' looking for beginning of value","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v","value":"YmFy","lease":99999999999999999999}"#,
            400,
            r#"{"error":"json: cannot unmarshal number 99999999999999999999 into Go value of type int64","message":"json: cannot unmarshal number 99999999999999999999 into Go value of type int64","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v","value":"YmFy","prev_kv":"true"}"#,
            400,
            r#"{"error":"json: cannot unmarshal string into Go value of type bool","message":"json: cannot unmarshal string into Go value of type bool","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v","value":"YmFy","ignore_value":1}"#,
            400,
            r#"{"error":"json: cannot unmarshal number into Go value of type bool","message":"json: cannot unmarshal number into Go value of type bool","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"[]"#,
            400,
            r#"{"error":"json: cannot unmarshal array into Go value of type map[string]json.RawMessage","message":"json: cannot unmarshal array into Go value of type map[string]json.RawMessage","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#""x""#,
            400,
            r#"{"error":"json: cannot unmarshal string into Go value of type map[string]json.RawMessage","message":"json: cannot unmarshal string into Go value of type map[string]json.RawMessage","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v","value":["YmFy"]}"#,
            400,
            r#"{"error":"json: cannot unmarshal string into Go value of type uint8","message":"json: cannot unmarshal string into Go value of type uint8","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9","value":"YmFy"}"#,
            400,
            r#"{"error":"illegal base64 data at input byte 0","message":"illegal base64 data at input byte 0","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v=","value":"YmFy"}"#,
            400,
            r#"{"error":"illegal base64 data at input byte 4","message":"illegal base64 data at input byte 4","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v","value":"YmFy","lease":1.0}"#,
            400,
            r#"{"error":"json: cannot unmarshal number 1.0 into Go value of type int64","message":"json: cannot unmarshal number 1.0 into Go value of type int64","code":3}"#,
        ),
        (
            "/v3/kv/deleterange",
            r#"{"key":"Zm9v","range_end":5}"#,
            400,
            r#"{"error":"json: cannot unmarshal number into Go value of type []uint8","message":"json: cannot unmarshal number into Go value of type []uint8","code":3}"#,
        ),
        (
            "/v3/kv/deleterange",
            r#"{"key":"Zm9v","prev_kv":1}"#,
            400,
            r#"{"error":"json: cannot unmarshal number into Go value of type bool","message":"json: cannot unmarshal number into Go value of type bool","code":3}"#,
        ),
        (
            "/v3/kv/deleterange",
            r#"{"key":"Zm9v","prevKv":"x"}"#,
            400,
            r#"{"error":"json: cannot unmarshal string into Go value of type bool","message":"json: cannot unmarshal string into Go value of type bool","code":3}"#,
        ),
        (
            "/v3/kv/deleterange",
            r#"{"key":"@@"}"#,
            400,
            r#"{"error":"illegal base64 data at input byte 0","message":"illegal base64 data at input byte 0","code":3}"#,
        ),
        (
            "/v3/kv/deleterange",
            r#"{}"#,
            400,
            r#"{"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3}"#,
        ),
        (
            "/v3/kv/txn",
            r#"{"compare":{}}"#,
            400,
            r#"{"error":"json: cannot unmarshal object into Go value of type []json.RawMessage","message":"json: cannot unmarshal object into Go value of type []json.RawMessage","code":3}"#,
        ),
        (
            "/v3/kv/txn",
            r#"{"compare":[{"result":"BOGUS","target":"VALUE","key":"Zm9v"}]}"#,
            400,
            r#"{"error":"unknown value \"BOGUS\" for enum etcdserverpb.Compare_CompareResult","message":"unknown value \"BOGUS\" for enum etcdserverpb.Compare_CompareResult","code":3}"#,
        ),
        (
            "/v3/kv/txn",
            r#"{"compare":[{"result":"EQUAL","target":"BOGUS","key":"Zm9v"}]}"#,
            400,
            r#"{"error":"unknown value \"BOGUS\" for enum etcdserverpb.Compare_CompareTarget","message":"unknown value \"BOGUS\" for enum etcdserverpb.Compare_CompareTarget","code":3}"#,
        ),
        (
            "/v3/kv/txn",
            r#"{"compare":[{"result":"EQUAL","target":"VERSION","key":"Zm9v","version":"x"}]}"#,
            400,
            r#"{"error":"invalid character 'x' looking for beginning of value","message":"invalid character 'x' looking for beginning of value","code":3}"#,
        ),
        (
            "/v3/kv/txn",
            r#"{"success":[{"request_put":{"key":"Zm9v","value":5}}]}"#,
            400,
            r#"{"error":"json: cannot unmarshal number into Go value of type []uint8","message":"json: cannot unmarshal number into Go value of type []uint8","code":3}"#,
        ),
        (
            "/v3/kv/txn",
            r#"{"success":[1]}"#,
            400,
            r#"{"error":"json: cannot unmarshal number into Go value of type map[string]json.RawMessage","message":"json: cannot unmarshal number into Go value of type map[string]json.RawMessage","code":3}"#,
        ),
        (
            "/v3/kv/txn",
            r#"{"success":{"request_put":{}}}"#,
            400,
            r#"{"error":"json: cannot unmarshal object into Go value of type []json.RawMessage","message":"json: cannot unmarshal object into Go value of type []json.RawMessage","code":3}"#,
        ),
        (
            "/v3/kv/txn",
            r#"{"success":[{"bogus":{}}]}"#,
            400,
            r#"{"error":"etcdserver: key not found","message":"etcdserver: key not found","code":3}"#,
        ),
        (
            "/v3/kv/compaction",
            r#"{"revision":-1}"#,
            400,
            r#"{"error":"etcdserver: mvcc: required revision has been compacted","message":"etcdserver: mvcc: required revision has been compacted","code":11}"#,
        ),
        (
            "/v3/kv/compaction",
            r#"{"revision":"x"}"#,
            400,
            r#"{"error":"invalid character 'x' looking for beginning of value","message":"invalid character 'x' looking for beginning of value","code":3}"#,
        ),
        (
            "/v3/kv/compaction",
            r#"{"revision":99999999999999999999}"#,
            400,
            r#"{"error":"json: cannot unmarshal number 99999999999999999999 into Go value of type int64","message":"json: cannot unmarshal number 99999999999999999999 into Go value of type int64","code":3}"#,
        ),
        (
            "/v3/kv/compaction",
            r#"{"revision":1,"physical":"yes"}"#,
            400,
            r#"{"error":"json: cannot unmarshal string into Go value of type bool","message":"json: cannot unmarshal string into Go value of type bool","code":3}"#,
        ),
        (
            "/v3/kv/compaction",
            r#"{"revision":100}"#,
            400,
            r#"{"error":"etcdserver: mvcc: required revision is a future revision","message":"etcdserver: mvcc: required revision is a future revision","code":11}"#,
        ),
        (
            "/v3/lease/grant",
            r#"{"TTL":"x"}"#,
            400,
            r#"{"error":"invalid character 'x' looking for beginning of value","message":"invalid character 'x' looking for beginning of value","code":3}"#,
        ),
        (
            "/v3/lease/grant",
            r#"{"TTL":99999999999999999999}"#,
            400,
            r#"{"error":"json: cannot unmarshal number 99999999999999999999 into Go value of type int64","message":"json: cannot unmarshal number 99999999999999999999 into Go value of type int64","code":3}"#,
        ),
        (
            "/v3/lease/grant",
            r#"{"TTL":10.5}"#,
            400,
            r#"{"error":"json: cannot unmarshal number 10.5 into Go value of type int64","message":"json: cannot unmarshal number 10.5 into Go value of type int64","code":3}"#,
        ),
        (
            "/v3/lease/grant",
            r#"{"TTL":9999999999999}"#,
            400,
            r#"{"error":"etcdserver: too large lease TTL","message":"etcdserver: too large lease TTL","code":11}"#,
        ),
        (
            "/v3/lease/revoke",
            r#"{"ID":"x"}"#,
            400,
            r#"{"error":"invalid character 'x' looking for beginning of value","message":"invalid character 'x' looking for beginning of value","code":3}"#,
        ),
        (
            "/v3/lease/revoke",
            r#"{"ID":0}"#,
            404,
            r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#,
        ),
        (
            "/v3/lease/revoke",
            r#"{}"#,
            404,
            r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#,
        ),
        (
            "/v3/kv/lease/revoke",
            r#"{"ID":1}"#,
            404,
            r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#,
        ),
        (
            "/v3/lease/timetolive",
            r#"{"ID":1,"keys":"yes"}"#,
            400,
            r#"{"error":"json: cannot unmarshal string into Go value of type bool","message":"json: cannot unmarshal string into Go value of type bool","code":3}"#,
        ),
        (
            "/v3/kv/lease/timetolive",
            r#"{"ID":"abc"}"#,
            400,
            r#"{"error":"invalid character 'a' looking for beginning of value","message":"invalid character 'a' looking for beginning of value","code":3}"#,
        ),
        (
            "/v3/lease/keepalive",
            r#"{"ID":"x"}"#,
            500,
            r#"{"error":"invalid character 'x' looking for beginning of value","message":"invalid character 'x' looking for beginning of value","code":2}"#,
        ),
        (
            "/v3/kv/range",
            r#"{"key":"Zm9v","sort_order":"BOGUS"}"#,
            400,
            r#"{"error":"unknown value \"BOGUS\" for enum etcdserverpb.RangeRequest_SortOrder","message":"unknown value \"BOGUS\" for enum etcdserverpb.RangeRequest_SortOrder","code":3}"#,
        ),
        (
            "/v3/kv/range",
            r#"{"key":"Zm9v","sort_target":"BOGUS"}"#,
            400,
            r#"{"error":"unknown value \"BOGUS\" for enum etcdserverpb.RangeRequest_SortTarget","message":"unknown value \"BOGUS\" for enum etcdserverpb.RangeRequest_SortTarget","code":3}"#,
        ),
        (
            "/v3/kv/range",
            r#"{"key":"Zm9v","sort_order":"7"}"#,
            400,
            r#"{"error":"unknown value \"7\" for enum etcdserverpb.RangeRequest_SortOrder","message":"unknown value \"7\" for enum etcdserverpb.RangeRequest_SortOrder","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"value":"!!","lease":"abc","key":1}"#,
            400,
            r#"{"error":"json: cannot unmarshal number into Go value of type []uint8","message":"json: cannot unmarshal number into Go value of type []uint8","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"lease":"abc","value":"!!"}"#,
            400,
            r#"{"error":"illegal base64 data at input byte 0","message":"illegal base64 data at input byte 0","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"prev_kv":"x","lease":"abc"}"#,
            400,
            r#"{"error":"invalid character 'a' looking for beginning of value","message":"invalid character 'a' looking for beginning of value","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":[300]}"#,
            400,
            r#"{"error":"json: cannot unmarshal number 300 into Go value of type uint8","message":"json: cannot unmarshal number 300 into Go value of type uint8","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":[1.5]}"#,
            400,
            r#"{"error":"json: cannot unmarshal number 1.5 into Go value of type uint8","message":"json: cannot unmarshal number 1.5 into Go value of type uint8","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":[-1]}"#,
            400,
            r#"{"error":"json: cannot unmarshal number -1 into Go value of type uint8","message":"json: cannot unmarshal number -1 into Go value of type uint8","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":[true]}"#,
            400,
            r#"{"error":"json: cannot unmarshal bool into Go value of type uint8","message":"json: cannot unmarshal bool into Go value of type uint8","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":[[1]]}"#,
            400,
            r#"{"error":"json: cannot unmarshal array into Go value of type uint8","message":"json: cannot unmarshal array into Go value of type uint8","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v","lease":" 5"}"#,
            404,
            r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v","lease":"5 "}"#,
            404,
            r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v","lease":""}"#,
            400,
            r#"{"error":"unexpected end of JSON input","message":"unexpected end of JSON input","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v","lease":"0x10"}"#,
            400,
            r#"{"error":"invalid character 'x' after top-level value","message":"invalid character 'x' after top-level value","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v","lease":true}"#,
            400,
            r#"{"error":"json: cannot unmarshal bool into Go value of type int64","message":"json: cannot unmarshal bool into Go value of type int64","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v","lease":{}}"#,
            400,
            r#"{"error":"json: cannot unmarshal object into Go value of type int64","message":"json: cannot unmarshal object into Go value of type int64","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v","lease":[]}"#,
            400,
            r#"{"error":"json: cannot unmarshal array into Go value of type int64","message":"json: cannot unmarshal array into Go value of type int64","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v","lease":"\"5\""}"#,
            400,
            r#"{"error":"invalid character '\\\\' looking for beginning of value","message":"invalid character '\\\\' looking for beginning of value","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v","lease":1E400}"#,
            400,
            r#"{"error":"json: cannot unmarshal number 1E400 into Go value of type int64","message":"json: cannot unmarshal number 1E400 into Go value of type int64","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v=="}"#,
            400,
            r#"{"error":"illegal base64 data at input byte 4","message":"illegal base64 data at input byte 4","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm 9v"}"#,
            400,
            r#"{"error":"illegal base64 data at input byte 2","message":"illegal base64 data at input byte 2","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#""#,
            400,
            r#"{"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"null"#,
            400,
            r#"{"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"Key":"Zm9v"}"#,
            400,
            r#"{"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"KEY":"Zm9v","value":"YmFy"}"#,
            400,
            r#"{"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3}"#,
        ),
        (
            "/v3/watch",
            r#"{"create_request":{"key":"Zm9v","filters":["BOGUS"]}}"#,
            500,
            r#"{"error":"unknown value \"BOGUS\" for enum etcdserverpb.WatchCreateRequest_FilterType","message":"unknown value \"BOGUS\" for enum etcdserverpb.WatchCreateRequest_FilterType","code":2}"#,
        ),
        (
            "/v3/watch",
            r#"{"create_request":{"key":"Zm9v","filters":[1.5]}}"#,
            500,
            r#"{"error":"json: cannot unmarshal number 1.5 into Go value of type etcdserverpb.WatchCreateRequest_FilterType","message":"json: cannot unmarshal number 1.5 into Go value of type etcdserverpb.WatchCreateRequest_FilterType","code":2}"#,
        ),
        (
            "/v3/watch",
            r#"{"create_request":{"key":"Zm9v","filters":"NOPUT"}}"#,
            500,
            r#"{"error":"invalid target \"slice\" for enum etcdserverpb.WatchCreateRequest_FilterType","message":"invalid target \"slice\" for enum etcdserverpb.WatchCreateRequest_FilterType","code":2}"#,
        ),
        (
            "/v3/kv/txn",
            r#"{"success":[{"request_put":{"key":"Zm9v"}}],"compare":[{"key":"Zm9v","target":"LEASE","lease":"x"}]}"#,
            400,
            r#"{"error":"invalid character 'x' looking for beginning of value","message":"invalid character 'x' looking for beginning of value","code":3}"#,
        ),
        (
            "/v3/kv/txn",
            r#"{"compare":[{"key":"Zm9v","result":"EQUAL","target":99999999999}]}"#,
            400,
            r#"{"error":"json: cannot unmarshal number 99999999999 into Go value of type etcdserverpb.Compare_CompareTarget","message":"json: cannot unmarshal number 99999999999 into Go value of type etcdserverpb.Compare_CompareTarget","code":3}"#,
        ),
        (
            "/v3/kv/txn",
            r#"{"success":[{"request_delete_range":{}}]}"#,
            400,
            r#"{"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3}"#,
        ),
        (
            "/v3/kv/compaction",
            r#"{"revision":"1.5"}"#,
            400,
            r#"{"error":"json: cannot unmarshal number 1.5 into Go value of type int64","message":"json: cannot unmarshal number 1.5 into Go value of type int64","code":3}"#,
        ),
        (
            "/v3/kv/compaction",
            r#"{"physical":1}"#,
            400,
            r#"{"error":"json: cannot unmarshal number into Go value of type bool","message":"json: cannot unmarshal number into Go value of type bool","code":3}"#,
        ),
        (
            "/v3/kv/compaction",
            r#"{"revision":[1]}"#,
            400,
            r#"{"error":"json: cannot unmarshal array into Go value of type int64","message":"json: cannot unmarshal array into Go value of type int64","code":3}"#,
        ),
        (
            "/v3/lease/grant",
            r#"{"TTL":true}"#,
            400,
            r#"{"error":"json: cannot unmarshal bool into Go value of type int64","message":"json: cannot unmarshal bool into Go value of type int64","code":3}"#,
        ),
        (
            "/v3/lease/grant",
            r#"{"TTL":"10","ID":"18446744073709551615"}"#,
            400,
            r#"{"error":"json: cannot unmarshal number 18446744073709551615 into Go value of type int64","message":"json: cannot unmarshal number 18446744073709551615 into Go value of type int64","code":3}"#,
        ),
        (
            "/v3/lease/revoke",
            r#"{"ID":9223372036854775808}"#,
            400,
            r#"{"error":"json: cannot unmarshal number 9223372036854775808 into Go value of type int64","message":"json: cannot unmarshal number 9223372036854775808 into Go value of type int64","code":3}"#,
        ),
        (
            "/v3/lease/keepalive",
            r#"{"ID":1.5}"#,
            500,
            r#"{"error":"json: cannot unmarshal number 1.5 into Go value of type int64","message":"json: cannot unmarshal number 1.5 into Go value of type int64","code":2}"#,
        ),
        (
            "/v3/lease/keepalive",
            r#"[]"#,
            500,
            r#"{"error":"json: cannot unmarshal array into Go value of type map[string]json.RawMessage","message":"json: cannot unmarshal array into Go value of type map[string]json.RawMessage","code":2}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9"}"#,
            400,
            r#"{"error":"illegal base64 data at input byte 0","message":"illegal base64 data at input byte 0","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Z==="}"#,
            400,
            r#"{"error":"illegal base64 data at input byte 1","message":"illegal base64 data at input byte 1","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm="}"#,
            400,
            r#"{"error":"illegal base64 data at input byte 3","message":"illegal base64 data at input byte 3","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm=x"}"#,
            400,
            r#"{"error":"illegal base64 data at input byte 2","message":"illegal base64 data at input byte 2","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9=x"}"#,
            400,
            r#"{"error":"illegal base64 data at input byte 4","message":"illegal base64 data at input byte 4","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v\nZ"}"#,
            400,
            r#"{"error":"illegal base64 data at input byte 5","message":"illegal base64 data at input byte 5","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v\n\nZm"}"#,
            400,
            r#"{"error":"illegal base64 data at input byte 6","message":"illegal base64 data at input byte 6","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm==\nx"}"#,
            400,
            r#"{"error":"illegal base64 data at input byte 5","message":"illegal base64 data at input byte 5","code":3}"#,
        ),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9vYmFyYm!6"}"#,
            400,
            r#"{"error":"illegal base64 data at input byte 10","message":"illegal base64 data at input byte 10","code":3}"#,
        ),
    ];
    for (route, body, status, expected) in refused_by_route {
        let answer = post(&url, route, body).await?;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (*status, *expected),
            "{route} {body}"
        );
    }
    Ok(())
}

/// Bodies etcd 3.4.23's gateway takes although they look wrong, with what it makes of
/// them (read off etcd answering the same requests).
#[tokio::test]
async fn odd_bodies_are_taken_as_etcd_takes_them() -> Result<()> {
    let cluster = Cluster::start(1)?;
    cluster.leader().await?;
    let url = endpoint(&cluster);
    // a=2, b=1: by value, b comes first.
    post_ok(&url, "/v3/kv/put", r#"{"key":"YQ==","value":"Mg=="}"#).await?;
    post_ok(&url, "/v3/kv/put", r#"{"key":"Yg==","value":"MQ=="}"#).await?;
    let keys = |answer: &Value| -> Vec<String> {
        answer["kvs"]
            .as_array()
            .map(|kvs| kvs.iter().filter_map(|kv| unb64(&kv["key"]).ok()).collect())
            .unwrap_or_default()
    };
    // A sort order etcd does not know sorts nothing (keys stay ascending), even with a
    // target it does not know either.
    for body in [
        r#"{"key":"YQ==","range_end":"Yw==","sort_order":7}"#,
        r#"{"key":"YQ==","range_end":"Yw==","sort_order":-1,"sort_target":"VALUE"}"#,
        r#"{"key":"YQ==","range_end":"Yw==","sort_order":7,"sort_target":9}"#,
    ] {
        let answer = post_ok(&url, "/v3/kv/range", body).await?;
        assert_eq!(keys(&answer), ["a", "b"], "{body}");
    }
    let descending = post_ok(
        &url,
        "/v3/kv/range",
        r#"{"key":"YQ==","range_end":"Yw==","sort_order":2}"#,
    )
    .await?;
    assert_eq!(keys(&descending), ["b", "a"]);
    // A target etcd does not know, with an order to sort by, panics etcd 3.4
    // (etcd-io/etcd#13554); it gets etcd 3.6's answer.
    let answer = post(
        &url,
        "/v3/kv/range",
        r#"{"key":"YQ==","sort_order":"ASCEND","sort_target":9}"#,
    )
    .await?;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (
            400,
            r#"{"error":"etcdserver: invalid sort option","message":"etcdserver: invalid sort option","code":3}"#
        )
    );
    // Compare results and targets by unknown numbers pass through (the compare is false).
    let txn = post_ok(
        &url,
        "/v3/kv/txn",
        r#"{"compare":[{"result":7,"target":"VALUE","key":"YQ==","value":"MQ=="}]}"#,
    )
    .await?;
    assert_header(&txn);
    // Bytes as arrays of byte values (null is 0); integers as "-0", "null", " 5 ".
    post_ok(&url, "/v3/kv/put", r#"{"key":[99,null],"value":[1,2]}"#).await?;
    let range = post_ok(&url, "/v3/kv/range", r#"{"key":"YwA="}"#).await?;
    assert_eq!(range["kvs"][0]["value"], "AQI=");
    for lease in [r#""-0""#, r#""null""#, "-0"] {
        let body = format!(r#"{{"key":"ZA==","lease":{lease}}}"#);
        post_ok(&url, "/v3/kv/put", &body).await?;
    }
    // Base64 with line breaks; a JSON name wins over the proto name.
    post_ok(&url, "/v3/kv/put", r#"{"key":"ZQ==\n","value":"eA=="}"#).await?;
    let put = post_ok(
        &url,
        "/v3/kv/put",
        r#"{"key":"ZQ==","value":"eQ==","prevKv":true,"prev_kv":false}"#,
    )
    .await?;
    assert_eq!(put["prev_kv"]["value"], "eA==", "{put}");
    let put = post_ok(
        &url,
        "/v3/kv/put",
        r#"{"key":"ZQ==","value":"eQ==","prev_kv":true,"prevKv":false}"#,
    )
    .await?;
    assert!(put.get("prev_kv").is_none(), "{put}");
    // A TTL under the minimum is raised to it; a lease by a negative ID exists.
    let grant = post_ok(&url, "/v3/lease/grant", r#"{"TTL":-5}"#).await?;
    assert_eq!(grant["TTL"], "2", "{grant}");
    let grant = post_ok(&url, "/v3/lease/grant", r#"{"TTL":10,"ID":-1}"#).await?;
    assert_eq!(grant["ID"], "-1", "{grant}");
    post_ok(&url, "/v3/lease/revoke", r#"{"ID":-1}"#).await?;
    Ok(())
}
