//! `make-mirror` against real etcd members: the destination ends up exactly as
//! etcdctl's mirror leaves it (initial copy and followed changes, with each
//! prefix option), and the mirror survives the destination and then the source
//! restarting. (Argument errors: `tests/scripts/mirror.txt`.)

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{CONCORDCTL, Etcd, free_port, require_reference_tools};
use concord_tests::side_by_side::assert_same;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn etcdctl(etcd: &Etcd, args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .args(["--endpoints", etcd.endpoint()])
        .args(args)
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap();
    assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Generous: the suite runs many members at once on a small machine.
const PATIENCE: Duration = Duration::from_secs(45);

fn wait_for_value(etcd: &Etcd, key: &str, value: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if etcdctl(etcd, &["get", key, "--print-value-only"]) == format!("{value}\n") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key}={value} never reached the mirror"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn_mirror(tool: &str, source: &Etcd, dest: &Etcd, flags: &[&str]) -> Child {
    Command::new(tool)
        .args(["--endpoints", source.endpoint(), "make-mirror"])
        .args(flags)
        .arg(dest.endpoint())
        .env("ETCDCTL_API", "3")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The destination's keys, values and revisions after mirroring a fixed
/// history, plus what the mirror printed.
fn mirrored(tool: &str, ports: [u16; 4], flags: &[&str], sentinel: &str) -> String {
    let initial = if flags.is_empty() { 4 } else { 2 };
    let source = Etcd::start(ports[0], ports[1]);
    let dest = Etcd::start(ports[2], ports[3]);
    for (k, v) in [("o_a", "1"), ("other", "2"), ("o_b", "3"), ("x_o_c", "4")] {
        etcdctl(&source, &["put", k, v]);
    }
    let mirror = spawn_mirror(tool, &source, &dest, flags);
    // The initial copy first, so that later writes reach it as events.
    let deadline = Instant::now() + PATIENCE;
    while etcdctl(&dest, &["get", "", "--from-key", "--keys-only"])
        .lines()
        .filter(|l| !l.is_empty())
        .count()
        < initial
    {
        assert!(
            Instant::now() < deadline,
            "{tool}: the initial copy never finished"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    etcdctl(&source, &["put", "o_a", "changed"]);
    etcdctl(&source, &["del", "o_b"]);
    etcdctl(&source, &["put", "o_new", "5"]);
    let txn = Command::new("etcdctl")
        .args(["--endpoints", source.endpoint(), "txn"])
        .env("ETCDCTL_API", "3")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut txn = txn;
        txn.stdin
            .take()
            .unwrap()
            .write_all(b"\nput o_t1 a\nput o_t2 b\ndel other\n\n\n")
            .unwrap();
        assert!(txn.wait().unwrap().success());
    }
    etcdctl(&source, &["put", "o_zz_end", "end"]);
    wait_for_value(&dest, sentinel, "end");
    let mut mirror = mirror;
    let _ = mirror.kill();
    let out = mirror.wait_with_output().unwrap();
    let listing = etcdctl(&dest, &["get", "", "--from-key", "-w", "fields"]);
    // Header fields differ between members; keys, values and revisions must not.
    let listing: String = listing
        .lines()
        .filter(|l| !l.starts_with("\"ClusterID\"") && !l.starts_with("\"MemberID\""))
        .map(|l| format!("{l}\n"))
        .collect();
    format!(
        "{listing}--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn destination_matches_etcdctl_mirror() {
    require_reference_tools();
    let ports = [free_port(), free_port(), free_port(), free_port()];
    for (flags, sentinel) in [
        (&[][..], "o_zz_end"),
        (&["--prefix", "o_"][..], "o_zz_end"),
        (&["--prefix", "o_", "--dest-prefix", "d_"][..], "d_zz_end"),
        (&["--prefix", "o_", "--no-dest-prefix"][..], "zz_end"),
    ] {
        let expected = mirrored("etcdctl", ports, flags, sentinel);
        assert!(expected.contains("\"Key\" : "), "{expected}");
        let actual = mirrored(CONCORDCTL, ports, flags, sentinel);
        assert_same(
            &format!("make-mirror {flags:?}"),
            ("etcdctl", &expected),
            ("concordctl", &actual),
        );
    }
}

#[test]
fn mirror_survives_destination_and_source_restarts() {
    require_reference_tools();
    let mut source = Etcd::start(free_port(), free_port());
    let mut dest = Etcd::start(free_port(), free_port());
    etcdctl(&source, &["put", "k0", "before"]);
    let mut mirror = spawn_mirror(CONCORDCTL, &source, &dest, &[]);
    wait_for_value(&dest, "k0", "before");

    dest.kill();
    etcdctl(&source, &["put", "k1", "while the destination was down"]);
    dest.restart();
    wait_for_value(&dest, "k1", "while the destination was down");

    source.restart();
    etcdctl(&source, &["put", "k2", "after the source restarted"]);
    wait_for_value(&dest, "k2", "after the source restarted");

    etcdctl(&source, &["del", "k0"]);
    let deadline = Instant::now() + PATIENCE;
    while !etcdctl(&dest, &["get", "k0"]).is_empty() {
        assert!(Instant::now() < deadline, "delete never reached the mirror");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(mirror.try_wait().unwrap().is_none(), "mirror exited");
    let _ = mirror.kill();
    let _ = mirror.wait();
}
