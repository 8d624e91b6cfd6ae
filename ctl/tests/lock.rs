//! `lock` and `elect` against a real etcd: mutual exclusion between two
//! concordctl processes, waiters that are stopped or get the lock as etcdctl's
//! do, and an election (campaign, resign, observe) seen identically by both
//! clients. (Single runs, exec mode and errors: `tests/scripts/lock_elect.txt`.)

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{CONCORDCTL, Etcd, require_reference_tools};
use concord_tests::side_by_side::{Server, ServerKind};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Number of keys under `prefix/` (holders and waiters of the lock).
fn lock_keys(endpoint: &str, prefix: &str) -> usize {
    let out = Command::new("etcdctl")
        .args(["--endpoints", endpoint, "get", "--prefix", "--keys-only"])
        .arg(format!("{prefix}/"))
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .count()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn second_locker_waits_for_the_first() {
    require_reference_tools();
    let etcd = Etcd::start(common::free_port(), common::free_port());
    let mut holder = Command::new(CONCORDCTL)
        .args(["--endpoints", etcd.endpoint(), "lock", "contended"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    assert!(first_line.starts_with("contended/"), "{first_line:?}");

    let waiter = Command::new(CONCORDCTL)
        .args([
            "--endpoints",
            etcd.endpoint(),
            "lock",
            "contended",
            "echo",
            "acquired",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the waiter's own key exists it has queued behind the holder.
    wait_until("the waiter queues", || {
        lock_keys(etcd.endpoint(), "contended") == 2
    });
    let mut waiter = waiter;
    assert!(
        waiter.try_wait().unwrap().is_none(),
        "waiter ran while the lock was held"
    );

    let status = Command::new("kill")
        .args(["-INT", &holder.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        holder.wait().unwrap().success(),
        "holder must unlock and exit 0 on SIGINT"
    );
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "acquired\n");
    assert!(out.status.success());
    wait_until("both keys are gone", || {
        lock_keys(etcd.endpoint(), "contended") == 0
    });
}

/// A fresh Concord member, for the same transcripts side by side with etcd's.
fn concord() -> Server {
    Server::start(ServerKind::Concord, &[]).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Reads a child's stdout lines on a thread so the test can wait for them.
fn line_reader(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_line(rx: &std::sync::mpsc::Receiver<String>) -> String {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("expected another line of output")
}

fn interrupt(child: &mut std::process::Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "must exit 0 after SIGINT");
}

/// Observer output (lease IDs masked) for: candidate A wins with "first",
/// resigns, then candidate B wins with "second".
fn election_transcript(tool: &str, endpoint: &str) -> Vec<String> {
    let spawn = |args: &[&str]| {
        Command::new(tool)
            .args(["--endpoints", endpoint])
            .args(args)
            .env("ETCDCTL_API", "3")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut observer = spawn(&["elect", "-l", "office"]);
    let observed = line_reader(observer.stdout.take().unwrap());
    let mut transcript = Vec::new();
    for proposal in ["first", "second"] {
        let mut candidate = spawn(&["elect", "office", proposal]);
        let won = line_reader(candidate.stdout.take().unwrap());
        let key = next_line(&won);
        assert_eq!(next_line(&won), proposal);
        assert_eq!(next_line(&observed), key);
        assert_eq!(next_line(&observed), proposal);
        transcript.push(key.split('/').next().unwrap().to_owned());
        transcript.push(proposal.to_owned());
        interrupt(&mut candidate);
    }
    interrupt(&mut observer);
    transcript
}

#[test]
fn election_campaign_and_observe_match_etcdctl() {
    require_reference_tools();
    let etcd = Etcd::start(common::free_port(), common::free_port());
    let expected = election_transcript("etcdctl", etcd.endpoint());
    assert_eq!(expected, ["office", "first", "office", "second"]);
    assert_eq!(election_transcript(CONCORDCTL, etcd.endpoint()), expected);
    let concord = concord();
    for tool in ["etcdctl", CONCORDCTL] {
        assert_eq!(
            election_transcript(tool, &concord.endpoint()),
            expected,
            "{tool} against Concord"
        );
    }
}

/// etcd's e2e `testLock`/`testElect` with a signal of choice: a holder, a
/// waiter that is stopped while it waits, and a waiter that must get the lock
/// (or win the election) once the holder lets go. Returns what each process
/// printed and how it ended, lease IDs masked.
fn contention_transcript(
    tool: &str,
    endpoint: &str,
    command: &[&str],
    signal: &str,
) -> Vec<String> {
    let spawn = || {
        let mut child = Command::new(tool)
            .args(["--endpoints", endpoint])
            .args(command)
            .env("ETCDCTL_API", "3")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = line_reader(child.stdout.take().unwrap());
        (child, lines)
    };
    let mask = |line: String| match line.split_once('/') {
        Some((name, _)) => format!("{name}/<lease>"),
        None => line,
    };
    let stop = |child: &mut std::process::Child| {
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    let name = command[1];
    let mut transcript = Vec::new();
    let (mut holder, held) = spawn();
    transcript.push(mask(next_line(&held)));
    let (mut blocked, blocked_lines) = spawn();
    let (mut next, next_lines) = spawn();
    wait_until("both waiters queue", || lock_keys(endpoint, name) == 3);
    for lines in [&blocked_lines, &next_lines] {
        assert!(
            lines.recv_timeout(Duration::from_millis(200)).is_err(),
            "a waiter printed while the lock was held"
        );
    }
    assert!(blocked.try_wait().unwrap().is_none(), "waiter exited early");

    stop(&mut blocked);
    let out = blocked.wait_with_output().unwrap();
    transcript.push(format!(
        "blocked: {:?} {:?}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.starts_with("{\"level\""))
            .collect::<Vec<_>>(),
        out.status.code()
    ));
    // The stopped waiter's key is gone at once, not when its lease expires.
    wait_until("the stopped waiter withdraws", || {
        lock_keys(endpoint, name) == 2
    });

    stop(&mut holder);
    transcript.push(format!("holder: {:?}", holder.wait().unwrap().code()));
    let started = Instant::now();
    transcript.push(mask(next_line(&next_lines)));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    stop(&mut next);
    transcript.push(format!("next: {:?}", next.wait().unwrap().code()));
    transcript
}

#[test]
fn stopped_waiters_withdraw_and_the_next_one_acquires() {
    require_reference_tools();
    let etcd = Etcd::start(common::free_port(), common::free_port());
    let concord = concord();
    for (command, signal) in [
        (&["lock", "lk"][..], "-INT"),
        (&["lock", "lk2"][..], "-TERM"),
        (&["elect", "el", "p"][..], "-INT"),
        (&["elect", "el2", "p"][..], "-TERM"),
    ] {
        let expected = contention_transcript("etcdctl", etcd.endpoint(), command, signal);
        assert!(
            expected
                .iter()
                .any(|l| l.contains("Error: context canceled")),
            "{expected:?}"
        );
        let actual = contention_transcript(CONCORDCTL, etcd.endpoint(), command, signal);
        assert_eq!(actual, expected, "{command:?} {signal}");
        for tool in ["etcdctl", CONCORDCTL] {
            let actual = contention_transcript(tool, &concord.endpoint(), command, signal);
            assert_eq!(
                actual, expected,
                "{tool} against Concord: {command:?} {signal}"
            );
        }
    }
}

/// A holder keeps its lock and a waiter keeps waiting while the server
/// restarts; once the holder lets go, the waiter gets the lock.
#[test]
fn lock_survives_a_server_restart() {
    require_reference_tools();
    let mut etcd = Etcd::start(common::free_port(), common::free_port());
    let spawn = |args: &[&str]| {
        let mut child = Command::new(CONCORDCTL)
            .args(["--endpoints", etcd.endpoint(), "lock", "restarted"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = line_reader(child.stdout.take().unwrap());
        (child, lines)
    };
    let (mut holder, held) = spawn(&[]);
    assert!(next_line(&held).starts_with("restarted/"));
    let (mut waiter, waited) = spawn(&["echo", "acquired"]);
    wait_until("the waiter queues", || {
        lock_keys(etcd.endpoint(), "restarted") == 2
    });

    etcd.restart();
    std::thread::sleep(Duration::from_secs(2));
    assert!(holder.try_wait().unwrap().is_none(), "holder exited");
    assert!(waiter.try_wait().unwrap().is_none(), "waiter exited");
    assert_eq!(lock_keys(etcd.endpoint(), "restarted"), 2);

    interrupt(&mut holder);
    assert_eq!(next_line(&waited), "acquired");
    assert!(waiter.wait().unwrap().success());
}
