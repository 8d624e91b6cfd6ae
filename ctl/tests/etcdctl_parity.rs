//! concordctl against real etcd: every command's stdout, stderr ("Error: ..."
//! lines; etcdctl's zap warnings are dropped) and exit code must equal what
//! Debian's etcdctl 3.4 produces for the same input.
//!
//! Needs `etcd` and `etcdctl` on PATH; without them each test prints a notice
//! and passes (CI installs them).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{CONCORDCTL, Etcd, assert_lines_equal, free_port, require_reference_tools, run};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Replaces the value after each marker up to the next terminator with `*`
/// (health probe durations vary between runs).
fn mask(text: &str, marker: &str, terminators: &[char]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(marker) {
        out.push_str(&rest[..i + marker.len()]);
        rest = &rest[i + marker.len()..];
        let end = rest
            .find(|c| terminators.contains(&c))
            .unwrap_or(rest.len());
        out.push('*');
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn normalize(text: &str) -> String {
    let t = mask(text, "took = ", &['\n']);
    let t = mask(&t, "\"took\":\"", &['"']);
    let t = mask(&t, "\"Took\" : ", &['\n']);
    // In the health table the duration also sets the column's width.
    t.lines()
        .map(|line| {
            if line.starts_with("+-") {
                "+rule+\n".to_owned()
            } else if line.starts_with('|') {
                let cells: Vec<&str> = line
                    .split('|')
                    .map(str::trim)
                    .map(|c| if is_go_duration(c) { "*" } else { c })
                    .collect();
                format!("{}\n", cells.join("|"))
            } else {
                format!("{line}\n")
            }
        })
        .collect()
}

fn is_go_duration(s: &str) -> bool {
    let unit = s.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
    s.len() > unit.len() && ["ns", "µs", "ms", "s"].contains(&unit)
}

type Step<'a> = (&'a [&'a str], &'a str);

/// Writes and errors: replayed on a fresh member for each client, so revisions
/// and IDs line up.
const SCENARIO: &[Step<'_>] = &[
    (&["lease", "list", "-w", "json"], ""),
    (&["put", "a", "1"], ""),
    (&["put", "b", "2", "-w", "json"], ""),
    (&["put", "a", "3", "--prev-kv"], ""),
    (&["put", "a", "4", "--prev-kv", "-w", "fields"], ""),
    (&["put", "a", "5", "--prev-kv", "-w", "json"], ""),
    (&["put", "fromstdin"], "value from stdin\n"),
    (&["put", "k1", "v1"], ""),
    (&["put", "k2", "v2"], ""),
    (&["put", "k3", ""], ""),
    (&["put", "bin", "\u{1}\u{7f}é"], ""),
    (&["put", "k1", "--ignore-value", "-w", "json"], ""),
    (&["put", "nokey", "--ignore-value"], ""),
    (&["put", "x", "1", "--lease", "1234"], ""),
    (&["put", "x", "1", "--lease", "zz"], ""),
    (&["put"], ""),
    (&["put", "k1", "v", "--ignore-value"], ""),
    (&["get", "k", "--prefix", "-w", "fields"], ""),
    (&["get", "", "--prefix", "-w", "json"], ""),
    (&["get", "bin", "-w", "fields"], ""),
    (&["get", "bin", "--hex"], ""),
    (&["get", "k", "--rev", "100"], ""),
    (
        &["txn", "-i"],
        "value(\"k1\") = \"v1\"\n\nput k1 \"new v\"\nget k --prefix\ndel k2 --prev-kv\n\nput k9 x\n\n",
    ),
    (
        &["txn", "-w", "json"],
        "value(\"k1\") = \"zz\"\n\nput k1 \"new v\"\n\nput k9 x\nget k9\n\n",
    ),
    (
        &["txn", "-w", "fields"],
        "mod(\"k1\") > \"0\"\nversion(\"k1\") < \"9\"\ncreate(\"k1\") != \"1\"\n\nput k1 a\nget k1 --keys-only\n\nput k9 x\n\n",
    ),
    (&["txn", "-w", "table"], "\n\n\n"),
    (&["txn"], "bogus\n\n\n\n"),
    (&["txn"], "value(\"k1\") ==\"a\"\n\n\n\n"),
    (&["txn"], "value(\"k1\")==\"a\"\n\n\n\n"),
    (&["txn"], "ver(\"k1\") = \"x\"\n\n\n\n"),
    (&["txn"], "foo(\"k1\") = \"1\"\n\n\n\n"),
    (&["txn"], "\nput\n\n\n"),
    (&["txn"], "\nfoo k\n\n\n"),
    (&["txn"], "\nput k\n\n\n"),
    (&["txn"], "\n"),
    (&["txn"], ""),
    (
        &["txn"],
        "value(`k1`) = `a` trailing\n\nput \"k 3\" v3 --prev-kv\nget k --prefix --limit=2 --sort-by=KEY --order=DESCEND\n\n\n",
    ),
    (&["txn", "extra"], ""),
    (&["del", "k", "--prefix", "--prev-kv", "-w", "fields"], ""),
    (&["del", "nothing"], ""),
    (&["del", "a", "--prev-kv", "-w", "json"], ""),
    (&["del"], ""),
    (&["del", "a", "b", "c"], ""),
    (&["compact", "2"], ""),
    (&["compaction", "3"], ""),
    (&["compaction", "3"], ""),
    (&["compaction", "abc"], ""),
    (&["compaction"], ""),
    (&["get", "a", "--rev", "2"], ""),
    (&["watch", "a", "--rev", "1"], ""),
    (&["watch", "a", "--rev", "1", "-w", "json"], ""),
    (&["watch"], ""),
    (&["lease", "revoke", "1"], ""),
    (&["lease", "revoke", "zz"], ""),
    (&["lease", "grant"], ""),
    (&["lease", "grant", "abc"], ""),
    (&["lease", "timetolive", "1"], ""),
    (&["lease", "timetolive", "1", "-w", "json"], ""),
    (&["lease", "keep-alive", "--once", "1"], ""),
    (&["lease", "list"], ""),
];

#[test]
fn write_scenario_matches_etcdctl() {
    require_reference_tools();
    let (client_port, peer_port) = (free_port(), free_port());
    let mut transcripts = Vec::new();
    for tool in ["etcdctl", CONCORDCTL] {
        let etcd = Etcd::start(client_port, peer_port);
        let mut transcript = String::new();
        for (args, stdin) in SCENARIO {
            transcript.push_str(&run(tool, etcd.endpoint(), args, stdin));
        }
        drop(etcd);
        transcripts.push(normalize(&transcript));
    }
    // Guard against two equally broken runs (e.g. no server at all).
    for expected in [
        "\"PrevValue\" : \"3\"",
        "SUCCESS\n",
        "compacted revision 3\n",
        "Error: etcdserver: requested lease not found\n",
        "Error: malformed comparison: bogus\n",
        "\"Deleted\" : ",
    ] {
        assert!(
            transcripts[0].contains(expected),
            "etcdctl transcript lacks {expected:?}"
        );
    }
    assert_lines_equal(&transcripts[0], &transcripts[1]);
}

/// Reads and formats: both clients on the same member, one after the other.
const READS: &[&[&str]] = &[
    &["get", "a"],
    &["get", "a", "-w", "json"],
    &["get", "a", "-w", "fields"],
    &["get", "a", "-w", "table"],
    &["get", "a", "-w", "protobuf"],
    &["get", "a", "-w", "bogus"],
    &["get", "k", "--prefix"],
    &["get", "k", "--prefix", "--keys-only"],
    &["get", "k", "--prefix", "--print-value-only"],
    &["get", "k", "--prefix", "--print-value-only", "-w", "json"],
    &["get", "k", "--prefix", "--limit", "1", "-w", "json"],
    &[
        "get",
        "k",
        "--prefix",
        "--sort-by",
        "VALUE",
        "--order",
        "DESCEND",
    ],
    &[
        "get",
        "k",
        "--prefix",
        "--sort-by=create",
        "--order=ascend",
        "-w",
        "fields",
    ],
    &["get", "k", "--from-key"],
    &["get", "k1", "k3"],
    &["get", "k1", "k3", "--prefix"],
    &["get", "k", "--prefix", "--from-key"],
    &["get", "k", "--prefix", "--order", "bad"],
    &["get", "k", "--prefix", "--sort-by", "bad"],
    &["get", "k", "--consistency", "s"],
    &["get", "k", "--consistency", "x"],
    &["get", "--prefix", "k", "--hex"],
    &["get", "nothing", "-w", "json"],
    &["get", "nothing", "-w", "fields"],
    &["get"],
    &["member", "list"],
    &["member", "list", "-w", "json"],
    &["member", "list", "-w", "fields"],
    &["member", "list", "-w", "table"],
    &["member", "list", "-w", "protobuf"],
    &["endpoint", "status"],
    &["endpoint", "status", "-w", "json"],
    &["endpoint", "status", "-w", "fields"],
    &["endpoint", "status", "-w", "table"],
    &["endpoint", "status", "-w", "protobuf"],
    &["endpoint", "status", "--cluster"],
    &["endpoint", "health"],
    &["endpoint", "health", "-w", "json"],
    &["endpoint", "health", "-w", "fields"],
    &["endpoint", "health", "-w", "table"],
    &["endpoint", "health", "--cluster", "-w", "json"],
    &["version"],
    // cobra's prefix matching of command names, and its unknown-command errors
    &["g", "a"],
    &["-w", "json", "g", "a"],
    &["mem", "l"],
    &["endp", "st", "-w", "fields"],
    &["endpoint", "--cluster", "he", "-w", "json"],
    &["ver"],
    &["e"],
    &["comp", "5"],
    &["x"],
    &["zzz"],
    &["m"],
    // arguments etcdctl ignores, or refuses, for commands that take none
    &["version", "x"],
    &["member", "list", "x"],
    &["endpoint", "health", "x", "-w", "json"],
    &["alarm", "list", "x"],
    &["auth", "enable", "x"],
    &["user", "list", "x"],
    &["role", "list", "x", "y"],
    &["endpoint", "hashkv", "--rev", "1000"],
    &["endpoint", "hashkv", "-w", "json"],
    // unusable TLS files fail the client's set-up (exit 128), before any dial
    &["--cacert", "/nonexistent", "get", "a"],
    &["--cert", "/nonexistent", "get", "a"],
    &["--key", "/nonexistent", "get", "a"],
    &[
        "--cert",
        "/etc/hostname",
        "--key",
        "/etc/hostname",
        "get",
        "a",
    ],
    &["--cacert", "/nonexistent", "--cert", "x", "get", "a"],
    // the output format is checked by commands that print through it
    &["-w", "bogus", "version"],
    &["-w", "bogus", "get", "a"],
];

#[test]
fn read_commands_match_etcdctl() {
    require_reference_tools();
    let etcd = Etcd::start(free_port(), free_port());
    for (k, v) in [("a", "1"), ("k1", "v1"), ("k2", "v2"), ("k3", "")] {
        let block = run("etcdctl", etcd.endpoint(), &["put", k, v], "");
        assert!(block.ends_with("rc=0\n"), "{block}");
    }
    for args in READS {
        let expected = normalize(&run("etcdctl", etcd.endpoint(), args, ""));
        let actual = normalize(&run(CONCORDCTL, etcd.endpoint(), args, ""));
        assert_lines_equal(&expected, &actual);
    }
}

#[test]
fn environment_variables_configure_the_client() {
    require_reference_tools();
    let etcd = Etcd::start(free_port(), free_port());
    let run_env = |tool: &str| {
        let out = Command::new(tool)
            .args(["get", "", "--prefix"])
            .env("ETCDCTL_API", "3")
            .env("ETCDCTL_ENDPOINTS", format!("http://{}", etcd.endpoint()))
            .env("ETCDCTL_WRITE_OUT", "json")
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.status.code(),
        )
    };
    let expected = run_env("etcdctl");
    assert!(expected.0.starts_with("{\"header\""), "{expected:?}");
    assert_eq!(run_env(CONCORDCTL), expected);
}

#[test]
fn unreachable_endpoint_times_out_like_etcdctl() {
    require_reference_tools();
    let dead = format!("127.0.0.1:{}", free_port());
    let args = ["--command-timeout", "1s", "get", "a"];
    let expected = run("etcdctl", &dead, &args, "");
    let actual = run(CONCORDCTL, &dead, &args, "");
    assert_eq!(actual, expected);
    assert!(
        actual.contains("Error: context deadline exceeded"),
        "{actual}"
    );
}

#[test]
fn authentication_matches_etcdctl() {
    require_reference_tools();
    let etcd = Etcd::start(free_port(), free_port());
    for args in [
        &["user", "add", "root:pw"][..],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["put", "secret", "s3"],
        &["auth", "enable"],
    ] {
        let block = run("etcdctl", etcd.endpoint(), args, "");
        assert!(block.ends_with("rc=0\n"), "{block}");
    }
    for args in [
        &["--user", "root:pw", "get", "secret"][..],
        &[
            "--user",
            "root",
            "--password",
            "pw",
            "get",
            "secret",
            "-w",
            "json",
        ],
        &["--user", "root:bad", "get", "secret"],
        &["--user", "nobody:x", "put", "k", "v"],
        &["get", "secret"],
        &["put", "k", "v"],
    ] {
        let expected = run("etcdctl", etcd.endpoint(), args, "");
        let actual = run(CONCORDCTL, etcd.endpoint(), args, "");
        assert_lines_equal(&expected, &actual);
    }
}

#[test]
fn lease_scenario_matches_etcdctl() {
    require_reference_tools();
    let steps: &[&[&str]] = &[
        &["put", "lk", "v", "--lease", "{ID}"],
        // One attached key: etcd lists several in Go map order.
        &["get", "lk", "-w", "json"],
        &["lease", "keep-alive", "--once", "{ID}"],
        &["lease", "keep-alive", "--once", "{ID}", "-w", "json"],
        &["lease", "keep-alive", "--once", "{ID}", "-w", "fields"],
        &["lease", "timetolive", "{ID}", "--keys"],
        &["lease", "list"],
        &["lease", "list", "-w", "json"],
        &["lease", "list", "-w", "fields"],
        &["lease", "list", "-w", "protobuf"],
        &["lease", "timetolive", "{ID}", "-w", "protobuf"],
        &["lease", "revoke", "{ID}"],
        &["get", "lk"],
        &["lease", "timetolive", "{ID}"],
        &["lease", "timetolive", "{ID}", "-w", "fields"],
        &["lease", "keep-alive", "--once", "{ID}"],
        &["lease", "keep-alive", "{ID}"],
        &["lease", "revoke", "{ID}"],
    ];
    let (client_port, peer_port) = (free_port(), free_port());
    let mut transcripts = Vec::new();
    for tool in ["etcdctl", CONCORDCTL] {
        let etcd = Etcd::start(client_port, peer_port);
        let grant = run(tool, etcd.endpoint(), &["lease", "grant", "100"], "");
        let hex = grant
            .split("--- stdout\nlease ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("no lease in {grant}"))
            .to_owned();
        let decimal = i64::from_str_radix(&hex, 16).unwrap().to_string();
        let mut transcript = grant.clone();
        for args in steps {
            let args: Vec<&str> = args
                .iter()
                .map(|a| if *a == "{ID}" { hex.as_str() } else { a })
                .collect();
            transcript.push_str(&run(tool, etcd.endpoint(), &args, ""));
        }
        drop(etcd);
        let masked = transcript.replace(&hex, "<ID>").replace(&decimal, "<ID>");
        transcripts.push(mask(&masked, "remaining(", &[')']));
    }
    assert!(
        transcripts[0].contains("keepalived with TTL(100)"),
        "{}",
        transcripts[0]
    );
    assert!(
        transcripts[0].contains("already expired"),
        "{}",
        transcripts[0]
    );
    assert_lines_equal(&transcripts[0], &transcripts[1]);
}

#[test]
fn member_and_maintenance_commands_match_etcdctl() {
    require_reference_tools();
    let (client_port, peer_port) = (free_port(), free_port());
    // A fresh peer URL per add: etcd refuses to re-add a removed member's URL.
    let learner_urls: Vec<String> = (0..3)
        .map(|_| format!("http://127.0.0.1:{}", free_port()))
        .collect();
    let mut transcripts = Vec::new();
    for tool in ["etcdctl", CONCORDCTL] {
        let etcd = Etcd::start(client_port, peer_port);
        let mut transcript = String::new();
        let mut ids = Vec::new();
        // Learners only: a voting member that never starts would cost quorum.
        for (format, learner_url) in ["simple", "json", "fields"].into_iter().zip(&learner_urls) {
            let add = [
                "member",
                "add",
                "new1",
                "--learner",
                "--peer-urls",
                learner_url,
                "-w",
                format,
            ];
            transcript.push_str(&run(tool, etcd.endpoint(), &add, ""));
            let list = run("etcdctl", etcd.endpoint(), &["member", "list"], "");
            let Some(id) = list
                .lines()
                .find(|l| l.contains("unstarted"))
                .and_then(|l| l.split(',').next())
                .map(str::to_owned)
            else {
                panic!("no learner after member add: {list}\n{transcript}");
            };
            // No `member update` here: etcd 3.4 turns an updated learner into a
            // voting member, which would cost quorum.
            for args in [
                &["member", "promote", &id, "-w", format][..],
                &["member", "remove", &id, "-w", format],
            ] {
                transcript.push_str(&run(tool, etcd.endpoint(), args, ""));
            }
            ids.push(id);
        }
        for args in [
            &["member", "list", "-w", "json"][..],
            &["member", "add", "x"],
            &["member", "add", "x", "http://a"],
            &["member", "remove", "zz"],
            &["member", "remove", "12"],
            &["alarm", "list"],
            &["alarm", "list", "-w", "json"],
            &["alarm", "disarm"],
            &["defrag"],
            &["defrag", "--cluster"],
            &["endpoint", "hashkv"],
            &["endpoint", "hashkv", "-w", "json"],
            &["endpoint", "hashkv", "-w", "fields"],
            &["endpoint", "hashkv", "-w", "table"],
            &["endpoint", "hashkv", "--cluster", "--rev", "1"],
            &["move-leader", "zz"],
            &["move-leader", "12"],
        ] {
            transcript.push_str(&run(tool, etcd.endpoint(), args, ""));
        }
        let leader = run("etcdctl", etcd.endpoint(), &["endpoint", "status"], "");
        let leader_id = leader
            .lines()
            .nth(2)
            .and_then(|l| l.split(", ").nth(1))
            .unwrap()
            .to_owned();
        transcript.push_str(&run(
            tool,
            etcd.endpoint(),
            &["move-leader", &leader_id],
            "",
        ));
        let own_peer_url = format!("http://127.0.0.1:{peer_port}");
        for format in ["simple", "json", "fields"] {
            let update = [
                "member",
                "update",
                &leader_id,
                "--peer-urls",
                &own_peer_url,
                "-w",
                format,
            ];
            transcript.push_str(&run(tool, etcd.endpoint(), &update, ""));
        }
        drop(etcd);
        for id in ids {
            let decimal = u64::from_str_radix(&id, 16).unwrap().to_string();
            transcript = transcript
                .replace(&format!("Member {id:>16} "), "Member <ID> ")
                .replace(&id, "<ID>")
                .replace(&decimal, "<ID>");
        }
        // etcd orders members by their (random) IDs.
        transcripts.push(canonical_member_order(&transcript));
    }
    assert!(
        transcripts[0].contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
        "{}",
        transcripts[0]
    );
    assert!(
        transcripts[0].contains("Leadership transferred from"),
        "{}",
        transcripts[0]
    );
    assert_lines_equal(&transcripts[0], &transcripts[1]);
}

#[test]
fn snapshot_save_matches_etcdctl() {
    require_reference_tools();
    let etcd = Etcd::start(free_port(), free_port());
    for (k, v) in [("a", "1"), ("b", "2")] {
        let block = run("etcdctl", etcd.endpoint(), &["put", k, v], "");
        assert!(block.ends_with("rc=0\n"), "{block}");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for tool in ["etcdctl", CONCORDCTL] {
        let path = dir.path().join(format!("{}.db", files.len()));
        let path_text = path.to_str().unwrap().to_owned();
        let block = run(tool, etcd.endpoint(), &["snapshot", "save", &path_text], "");
        let block = block.replace(&path_text, "<PATH>");
        let expected =
            "$ snapshot save <PATH>\n--- stdout\nSnapshot saved at <PATH>\n--- stderr\n--- rc=0\n";
        assert_eq!(block, expected, "{tool}");
        files.push(std::fs::read(&path).unwrap());
    }
    assert!(!files[0].is_empty());
    assert!(files[0] == files[1], "snapshot bytes differ from etcdctl's");
    for args in [
        &["snapshot", "save"][..],
        &["snapshot", "save", "/nonexistent/dir/x.db"],
    ] {
        let expected = run("etcdctl", etcd.endpoint(), args, "");
        let actual = run(CONCORDCTL, etcd.endpoint(), args, "");
        assert_lines_equal(&expected, &actual);
    }
}

/// User, role and auth management, replayed on fresh members.
const AUTH_SCENARIO: &[Step<'_>] = &[
    (&["user", "add", "root:pw"], ""),
    (&["user", "add", "u1:p1", "-w", "json"], ""),
    (&["user", "add", "u2:p2", "-w", "fields"], ""),
    (&["user", "add", "u3:p3", "-w", "table"], ""),
    (&["user", "add", "u4", "--no-password"], ""),
    (&["user", "add", "u5", "--interactive=false"], "secret\n"),
    (&["user", "add", "i1"], "pa\npa\n"),
    (&["user", "add", "i2"], "pa\npb\n"),
    (&["user", "add", "i3"], ""),
    (&["user", "add", ":x"], ""),
    (&["user", "add", "u1:again"], ""),
    (&["user", "add"], ""),
    (&["role", "add", "r1"], ""),
    (&["role", "add", "r2", "-w", "json"], ""),
    (&["role", "add", "r3", "-w", "fields"], ""),
    (&["role", "add"], ""),
    (&["role", "grant-permission", "r1", "read", "k"], ""),
    (
        &[
            "role",
            "grant-permission",
            "r1",
            "readwrite",
            "p",
            "--prefix",
        ],
        "",
    ),
    (&["role", "grant-permission", "r1", "write", "a", "z"], ""),
    (
        &["role", "grant-permission", "r1", "write", "f", "--from-key"],
        "",
    ),
    (
        &["role", "grant-permission", "r2", "read", "x", "-w", "json"],
        "",
    ),
    (
        &[
            "role",
            "grant-permission",
            "r2",
            "READ",
            "y",
            "-w",
            "fields",
        ],
        "",
    ),
    (&["role", "grant-permission", "r1", "bogus", "x"], ""),
    (&["role", "grant-permission", "r1", "read"], ""),
    (
        &[
            "role",
            "grant-permission",
            "r1",
            "read",
            "a",
            "b",
            "--prefix",
        ],
        "",
    ),
    (&["role", "get", "r1"], ""),
    (&["role", "get", "r1", "-w", "json"], ""),
    (&["role", "get", "r1", "-w", "fields"], ""),
    (&["role", "get", "r1", "-w", "table"], ""),
    (&["role", "get", "nobody"], ""),
    (&["role", "list"], ""),
    (&["role", "list", "-w", "json"], ""),
    (&["role", "list", "-w", "fields"], ""),
    (&["role", "list", "-w", "protobuf"], ""),
    (&["role", "get", "r1", "-w", "protobuf"], ""),
    (&["role", "add", "r4", "-w", "protobuf"], ""),
    (&["user", "list", "-w", "protobuf"], ""),
    (&["user", "grant-role", "u1", "r1"], ""),
    (&["user", "grant-role", "u1", "r2", "-w", "json"], ""),
    (&["user", "grant-role", "u1"], ""),
    (&["user", "get", "u1"], ""),
    (&["user", "get", "u1", "--detail"], ""),
    (&["user", "get", "u1", "-w", "json"], ""),
    (&["user", "get", "u1", "-w", "fields"], ""),
    (&["user", "get", "nobody"], ""),
    (&["user", "list"], ""),
    (&["user", "list", "-w", "json"], ""),
    (&["user", "list", "-w", "fields"], ""),
    (&["user", "revoke-role", "u1", "r2"], ""),
    (&["user", "revoke-role", "u1", "r2"], ""),
    (&["role", "revoke-permission", "r1", "k"], ""),
    (&["role", "revoke-permission", "r1", "p", "--prefix"], ""),
    (&["role", "revoke-permission", "r1", "a", "z"], ""),
    (&["role", "revoke-permission", "r1", "f", "--from-key"], ""),
    (&["role", "revoke-permission", "r1", "nope"], ""),
    (&["role", "revoke-permission", "r1"], ""),
    (&["role", "delete", "r3"], ""),
    (&["role", "delete", "r3"], ""),
    (&["user", "delete", "u4"], ""),
    (&["user", "delete", "u4", "-w", "json"], ""),
    (&["user", "passwd", "u1", "--interactive=false"], "newpw\n"),
    (&["user", "passwd", "u2"], "x\n"),
    (&["auth", "enable"], ""),
    (&["get", "k"], ""),
    (&["--user", "u1:newpw", "get", "k"], ""),
    (&["--user", "u1:newpw", "put", "k", "v"], ""),
    (&["--user", "root:pw", "user", "list"], ""),
    (&["--user", "root:pw", "auth", "disable"], ""),
    (&["auth", "disable"], ""),
];

#[test]
fn auth_scenario_matches_etcdctl() {
    require_reference_tools();
    let (client_port, peer_port) = (free_port(), free_port());
    let mut transcripts = Vec::new();
    for tool in ["etcdctl", CONCORDCTL] {
        let etcd = Etcd::start(client_port, peer_port);
        let transcript: String = AUTH_SCENARIO
            .iter()
            .map(|(args, stdin)| run(tool, etcd.endpoint(), args, stdin))
            .collect();
        drop(etcd);
        transcripts.push(transcript);
    }
    for expected in [
        "Role r1 updated\n",
        "Authentication Enabled\n",
        "(prefix p)",
    ] {
        assert!(
            transcripts[0].contains(expected),
            "etcdctl transcript lacks {expected:?}"
        );
    }
    assert_lines_equal(&transcripts[0], &transcripts[1]);
}

/// etcd lists members by ID, and a new member's ID is random: sort the member
/// entries of `ETCD_INITIAL_CLUSTER` and of JSON `"members":[...]` arrays.
fn canonical_member_order(text: &str) -> String {
    text.lines()
        .map(|line| {
            let line = if let Some(rest) = line.strip_prefix("ETCD_INITIAL_CLUSTER=\"") {
                let mut parts: Vec<&str> = rest.trim_end_matches('"').split(',').collect();
                parts.sort_unstable();
                format!("ETCD_INITIAL_CLUSTER=\"{}\"", parts.join(","))
            } else {
                line.to_owned()
            };
            format!("{}\n", sort_json_array(&line, "\"members\":["))
        })
        .collect()
}

/// Sorts the top-level elements of the JSON array that follows `marker`.
fn sort_json_array(line: &str, marker: &str) -> String {
    let Some(start) = line.find(marker).map(|i| i + marker.len()) else {
        return line.to_owned();
    };
    let (mut depth, mut elem_start, mut elems, mut end) = (0i32, start, Vec::new(), line.len());
    for (i, b) in line.bytes().enumerate().skip(start) {
        match b {
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth > 0 => depth -= 1,
            b']' => {
                elems.push(&line[elem_start..i]);
                end = i;
                break;
            }
            b',' if depth == 0 => {
                elems.push(&line[elem_start..i]);
                elem_start = i + 1;
            }
            _ => {}
        }
    }
    elems.sort_unstable();
    format!("{}{}{}", &line[..start], elems.join(","), &line[end..])
}

/// Watch output for a replayed history: read until the last event shows up,
/// then stop the client (a watch never ends on its own).
fn watch_output(tool: &str, endpoint: &str, format: &str, marker: &str) -> String {
    use std::io::Read;
    let mut child = Command::new(tool)
        .args(["--endpoints", endpoint, "-w", format])
        .args(["watch", "w", "--prefix", "--prev-kv", "--rev", "1"])
        .env("ETCDCTL_API", "3")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    // Until the last event is printed in full (a read may end mid-line).
    while !(String::from_utf8_lossy(&out).contains(marker) && out.ends_with(b"\n")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => out.extend(chunk),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn watch_history_matches_etcdctl() {
    require_reference_tools();
    let etcd = Etcd::start(free_port(), free_port());
    for args in [
        &["put", "w1", "a"][..],
        &["put", "w1", "b"],
        &["put", "w2", "c"],
        &["del", "w1"],
        &["put", "other", "x"],
        &["txn"],
        &["put", "wend", "done"],
    ] {
        let stdin = "\nput w3 t1\nput w4 t2\n\n\n";
        let block = run("etcdctl", etcd.endpoint(), args, stdin);
        assert!(block.ends_with("rc=0\n"), "{block}");
    }
    // An exec-command runs per event; its failure ends the watch (exit 1).
    let exec = [
        "watch",
        "w1",
        "--rev",
        "1",
        "--",
        "sh",
        "-c",
        "echo \"$ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE\"; exit 7",
    ];
    let expected = run("etcdctl", etcd.endpoint(), &exec, "");
    assert!(expected.contains("\"PUT\" \"w1\" \"a\"\n"), "{expected}");
    assert_lines_equal(&expected, &run(CONCORDCTL, etcd.endpoint(), &exec, ""));
    for (format, marker) in [
        ("simple", "wend\ndone\n"),
        ("json", "\"value\":\"ZG9uZQ==\""),
        // The event's last line: stopping at its value raced etcdctl's printing of it.
        ("fields", "\"Value\" : \"done\"\n\"Lease\" : 0\n"),
    ] {
        let expected = watch_output("etcdctl", etcd.endpoint(), format, marker);
        assert!(expected.contains(marker), "etcdctl printed {expected:?}");
        let actual = watch_output(CONCORDCTL, etcd.endpoint(), format, marker);
        assert_lines_equal(&expected, &actual);
    }
}

/// A range answer larger than tonic's default 4 MiB message limit.
#[test]
fn large_range_matches_etcdctl() {
    require_reference_tools();
    let etcd = Etcd::start(free_port(), free_port());
    let value = "x".repeat(1_400_000);
    for i in 0..4 {
        let block = run(
            "etcdctl",
            etcd.endpoint(),
            &["put", &format!("big{i}")],
            &value,
        );
        assert!(block.ends_with("rc=0\n"), "{block}");
    }
    for format in ["simple", "json"] {
        let args = ["get", "big", "--prefix", "-w", format];
        let expected = run("etcdctl", etcd.endpoint(), &args, "");
        let actual = run(CONCORDCTL, etcd.endpoint(), &args, "");
        assert!(
            expected.len() > 5_000_000,
            "etcdctl printed only {} bytes",
            expected.len()
        );
        assert!(
            actual == expected,
            "{format}: concordctl printed {} bytes, etcdctl {}; concordctl ends {:?}",
            actual.len(),
            expected.len(),
            &actual[actual.len().saturating_sub(200)..]
        );
    }
}
