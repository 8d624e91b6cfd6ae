//! `ETCDCTL_*` environment handling and `--debug`, as etcdctl 3.4 does it when
//! a command builds its client: unknown variables are warned about, a
//! variable shadowed by its flag is fatal, `--debug` lists the inherited
//! flags; commands without a client say nothing. No server is needed (a
//! closed port and short timeouts).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{CONCORDCTL, assert_lines_equal, require_reference_tools};
use std::process::Command;

/// Runs a client with extra environment; capnslog time stamps and grpc-go's
/// own debug log lines (which concordctl does not imitate) are dropped.
fn transcript(tool: &str, env: &[(&str, &str)], args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(["--dial-timeout=100ms", "--command-timeout=200ms"])
        .args(args)
        .env("ETCDCTL_API", "3")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr: String = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| {
            !l.starts_with("{\"level\":") && !l.starts_with("INFO: ") && !l.starts_with("WARNING: ")
        })
        .map(|l| match l.get(26..) {
            Some(rest) if l.as_bytes().get(4) == Some(&b'-') && rest.starts_with(" ") => {
                format!("<time>{rest}\n")
            }
            _ => format!("{l}\n"),
        })
        .collect();
    format!(
        "$ {env:?} {}\n--- stdout\n{}--- stderr\n{stderr}--- rc={}\n",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        out.status.code().unwrap_or(-1)
    )
}

/// Extra environment variables and the command line.
type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);

#[test]
fn environment_and_debug_match_etcdctl() {
    require_reference_tools();
    let cases: &[Case<'_>] = &[
        (
            &[("ETCDCTL_ENDPOINTS", "127.0.0.1:1")],
            &["--endpoints=127.0.0.1:2", "get", "a"],
        ),
        (
            &[("ETCDCTL_ENDPOINTS", "127.0.0.1:1")],
            &["--endpoints=127.0.0.1:2", "version"],
        ),
        (
            &[("ETCDCTL_FOO", "bar")],
            &["--endpoints=127.0.0.1:2", "get", "a"],
        ),
        (
            &[("ETCDCTL_WATCH_KEY", "k")],
            &["--endpoints=127.0.0.1:2", "member", "list"],
        ),
        (&[], &["--debug", "--endpoints=127.0.0.1:1", "get", "a"]),
        (
            &[("ETCDCTL_DEBUG", "true"), ("ETCDCTL_WRITE_OUT", "json")],
            &["--endpoints=127.0.0.1:1", "endpoint", "status", "--cluster"],
        ),
        (
            &[],
            &[
                "--debug",
                "--endpoints=127.0.0.1:1,127.0.0.1:2",
                "--keepalive-time=1m",
                "put",
                "a",
                "b",
            ],
        ),
        // values pflag cannot parse: ignored, the flag left at pflag's zero
        // value (0s, false); an empty value is no value, warned about
        (
            &[("ETCDCTL_DIAL_TIMEOUT", "abc"), ("ETCDCTL_HEX", "maybe")],
            &["--debug", "--endpoints=127.0.0.1:1", "get", "a"],
        ),
        (
            &[
                ("ETCDCTL_INSECURE_TRANSPORT", "x"),
                ("ETCDCTL_KEEPALIVE_TIME", "1x"),
            ],
            &["--debug", "--endpoints=127.0.0.1:1", "get", "a"],
        ),
        (
            &[("ETCDCTL_WRITE_OUT", ""), ("ETCDCTL_DEBUG", "yes")],
            &["--endpoints=127.0.0.1:1", "get", "a"],
        ),
        (
            &[("ETCDCTL_COMMAND_TIMEOUT", "zz")],
            &[
                "--command-timeout=1s",
                "--endpoints=127.0.0.1:1",
                "get",
                "a",
            ],
        ),
        (&[("ETCDCTL_DIAL_TIMEOUT", "abc")], &["version"]),
        // DNS SRV discovery through the machine's resolver: both clients ask
        // the same nameserver for the same names and report it alike.
        (&[], &["--discovery-srv", "example.invalid", "get", "a"]),
        (
            &[],
            &[
                "-d",
                "example.invalid",
                "--discovery-srv-name",
                "x",
                "get",
                "a",
            ],
        ),
        (&[], &["--discovery-srv", "example.invalid", "version"]),
    ];
    for (env, args) in cases {
        let expected = transcript("etcdctl", env, args);
        let actual = transcript(CONCORDCTL, env, args);
        assert_lines_equal(&expected, &actual);
    }
}
