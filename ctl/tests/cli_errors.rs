//! Argument errors are reported before any connection is made, with etcdctl's
//! `Error: ...` text and exit code. No server is needed.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::Write;
use std::process::{Command, Stdio};

fn concordctl(args: &[&str], stdin: &str) -> (String, String, i32) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_concordctl"))
        // A closed port: any accidental request fails instead of hanging.
        .args(["--endpoints", "127.0.0.1:1", "--command-timeout", "1s"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        out.status.code().unwrap(),
    )
}

#[test]
fn argument_errors_have_etcdctl_text_and_codes() {
    let cases: &[(&[&str], &str, &str, i32)] = &[
        (
            &["get"],
            "",
            "Error: get command needs one argument as key and an optional argument as range_end\n",
            128,
        ),
        (
            &["put"],
            "",
            "Error: put command needs 1 argument and input from stdin or 2 arguments\n",
            128,
        ),
        (
            &["put", "k"],
            "",
            "Error: put command needs 1 argument and input from stdin or 2 arguments\n",
            128,
        ),
        (
            &["del", "a", "b", "c"],
            "",
            "Error: del command needs one argument as key and an optional argument as range_end\n",
            128,
        ),
        (
            &["get", "a", "-w", "bogus"],
            "",
            "Error: unsupported output format\n",
            4,
        ),
        (
            &["get", "a", "--consistency", "x"],
            "",
            "Error: unknown consistency flag \"x\"\n",
            4,
        ),
        (
            &["compaction"],
            "",
            "Error: compaction command needs 1 argument\n",
            128,
        ),
        (
            &["compaction", "abc"],
            "",
            "Error: strconv.ParseInt: parsing \"abc\": invalid syntax\n",
            1,
        ),
        (
            &["lease", "grant", "abc"],
            "",
            "Error: bad TTL (strconv.ParseInt: parsing \"abc\": invalid syntax)\n",
            128,
        ),
        (
            &["lease", "revoke", "zz"],
            "",
            "Error: bad lease ID arg (strconv.ParseInt: parsing \"zz\": invalid syntax), expecting ID in Hex\n",
            128,
        ),
        (
            &["txn"],
            "bogus\n\n\n\n",
            "Error: malformed comparison: bogus\n",
            3,
        ),
        (&["txn"], "\n", "Error: EOF\n", 3),
        (&["watch"], "", "Error: bad number of arguments\n", 128),
        // (flag errors also print the command's usage: tests/help.rs)
    ];
    for (args, stdin, stderr, code) in cases {
        let (out, err, rc) = concordctl(args, stdin);
        assert_eq!(
            (out.as_str(), err.as_str(), rc),
            ("", *stderr, *code),
            "concordctl {args:?}"
        );
    }
}

#[test]
fn interactive_txn_prompts_before_failing() {
    let (out, err, rc) = concordctl(&["txn", "-i"], "\nput\n");
    assert_eq!(out, "compares:\nsuccess requests (get, put, del):\n");
    assert_eq!(err, "Error: invalid txn compare request: put\n");
    assert_eq!(rc, 3);
}

#[test]
fn version_prints_the_etcdctl_release_it_mirrors() {
    let (out, _, rc) = concordctl(&["version"], "");
    assert_eq!(out, "etcdctl version: 3.4.23\nAPI version: 3.4\n");
    assert_eq!(rc, 0);
}

#[test]
fn unreachable_server_is_a_deadline_error() {
    let (out, err, rc) = concordctl(&["put", "k", "v"], "");
    assert_eq!(
        (out.as_str(), err.as_str(), rc),
        ("", "Error: context deadline exceeded\n", 1)
    );
}
