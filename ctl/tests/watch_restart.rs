//! `watch` rides out a server restart as etcdctl's does (clientv3 opens the
//! watch again from the revision after the last event): the events before
//! and after the restart are printed, none twice.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{CONCORDCTL, Etcd, free_port, require_reference_tools};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn put(etcd: &Etcd, key: &str, value: &str) {
    let out = Command::new("etcdctl")
        .args(["--endpoints", etcd.endpoint(), "put", key, value])
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn transcript(tool: &str) -> Vec<String> {
    let mut etcd = Etcd::start(free_port(), free_port());
    let mut watch = Command::new(tool)
        .args(["--endpoints", etcd.endpoint(), "watch", "k", "--prefix"])
        .env("ETCDCTL_API", "3")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the watch printed nothing more")
    };
    std::thread::sleep(Duration::from_millis(500));
    put(&etcd, "k1", "before");
    let mut lines: Vec<String> = (0..3).map(|_| next()).collect();
    etcd.restart();
    put(&etcd, "k2", "after");
    lines.extend((0..3).map(|_| next()));
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "{tool}: more output than the two events"
    );
    let _ = watch.kill();
    let _ = watch.wait();
    lines
}

#[test]
fn watch_survives_a_server_restart_like_etcdctl() {
    require_reference_tools();
    let expected = transcript("etcdctl");
    assert_eq!(expected, ["PUT", "k1", "before", "PUT", "k2", "after"]);
    assert_eq!(transcript(CONCORDCTL), expected);
}

/// An election observer keeps observing through a server restart: it prints
/// the next leader once, and nothing twice.
#[test]
fn election_observer_survives_a_server_restart() {
    require_reference_tools();
    let mut etcd = Etcd::start(free_port(), free_port());
    let endpoint = etcd.endpoint().to_owned();
    let spawn = |args: &[&str]| {
        let mut child = Command::new(CONCORDCTL)
            .args(["--endpoints", &endpoint, "elect"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    };
    let next = |rx: &std::sync::mpsc::Receiver<String>| {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("expected another line")
    };
    let (mut first, won) = spawn(&["office", "one"]);
    next(&won);
    assert_eq!(next(&won), "one");
    let (mut observer, seen) = spawn(&["-l", "office"]);
    next(&seen);
    assert_eq!(next(&seen), "one");

    etcd.restart();
    std::thread::sleep(Duration::from_secs(1));
    let stop = |child: &mut std::process::Child| {
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        child.wait().unwrap()
    };
    assert!(
        stop(&mut first).success(),
        "the leader resigns after the restart"
    );
    let (mut second, won) = spawn(&["office", "two"]);
    next(&won);
    assert_eq!(next(&won), "two");
    next(&seen);
    assert_eq!(next(&seen), "two");
    assert!(seen.recv_timeout(Duration::from_millis(500)).is_err());
    assert!(observer.try_wait().unwrap().is_none(), "observer exited");
    stop(&mut second);
    stop(&mut observer);
}
