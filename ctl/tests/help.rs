//! Help and usage errors, byte for byte as etcdctl 3.4 prints them: every
//! command's `--help`, the `help` command, groups run without a subcommand,
//! and flag errors (which print the command's usage). No server is needed.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{CONCORDCTL, assert_lines_equal, require_reference_tools, run};

/// Every command of etcdctl 3.4 (cobra's `completion` scripts aside).
const COMMANDS: &[&str] = &[
    "",
    "get",
    "put",
    "del",
    "txn",
    "compaction",
    "alarm",
    "alarm disarm",
    "alarm list",
    "defrag",
    "endpoint",
    "endpoint health",
    "endpoint status",
    "endpoint hashkv",
    "move-leader",
    "watch",
    "version",
    "lease",
    "lease grant",
    "lease revoke",
    "lease timetolive",
    "lease list",
    "lease keep-alive",
    "member",
    "member add",
    "member remove",
    "member update",
    "member list",
    "member promote",
    "snapshot",
    "snapshot save",
    "snapshot restore",
    "snapshot status",
    "make-mirror",
    "migrate",
    "lock",
    "elect",
    "auth",
    "auth enable",
    "auth disable",
    "user",
    "user add",
    "user delete",
    "user get",
    "user list",
    "user passwd",
    "user grant-role",
    "user revoke-role",
    "role",
    "role add",
    "role delete",
    "role get",
    "role list",
    "role grant-permission",
    "role revoke-permission",
    "check",
    "check perf",
    "check datascale",
    "help",
    "completion",
];

fn same(args: &[&str]) {
    let expected = run("etcdctl", "127.0.0.1:1", args, "");
    let actual = run(CONCORDCTL, "127.0.0.1:1", args, "");
    assert_lines_equal(&expected, &actual);
}

#[test]
fn every_commands_help_matches_etcdctl() {
    require_reference_tools();
    for command in COMMANDS {
        let mut args: Vec<&str> = command.split(' ').filter(|w| !w.is_empty()).collect();
        args.push("--help");
        same(&args);
    }
}

#[test]
fn help_forms_match_etcdctl() {
    require_reference_tools();
    for args in [
        &[][..],
        &["-h"],
        &["help"],
        &["help", "get"],
        &["help", "member", "list"],
        &["h", "mem", "l"],
        &["member"],
        &["member", "x"],
        &["user", "g", "bob"],
        &["-w", "json", "endpoint"],
        &["get", "--help=true"],
        &["lock", "-h"],
        &["endp", "st", "-h"],
    ] {
        same(args);
    }
}

#[test]
fn flag_errors_print_usage_like_etcdctl() {
    require_reference_tools();
    for args in [
        &["get", "a", "--nope"][..],
        &["get", "a", "--rev", "abc"],
        &["get", "a", "--rev"],
        &["get", "-x"],
        &["--dial-timeout=1x", "get", "a"],
        &["--nope"],
        &["member", "list", "--nope"],
        &["make-mirror", "--no-dest-prefix=maybe", "x"],
        &["lease", "grant", "--bad=1"],
    ] {
        same(args);
    }
}
