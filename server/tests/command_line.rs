//! The `concord` binary's command line, run as a user runs it. (Being an integration test
//! of this package also makes cargo build the binary that the black-box tests start.)

use std::process::Command;

fn concord(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(args)
        .env_remove("ETCD_NAME")
        .output()
        .expect("run concord")
}

#[test]
fn version_names_the_etcd_api_it_speaks() {
    let output = concord(&["--version"]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("etcd API Version: 3.4.23"), "{text}");
}

#[test]
fn bad_flags_are_refused_with_gos_wording_and_exit_code_2() {
    let unknown = concord(&["--no-such-flag"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&unknown.stderr)
            .contains("flag provided but not defined: -no-such-flag")
    );

    let bad_value = concord(&["--heartbeat-interval=often"]);
    assert_eq!(bad_value.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad_value.stderr)
            .contains("invalid value \"often\" for flag -heartbeat-interval: parse error")
    );
}

#[test]
fn help_lists_etcds_flags() {
    let output = concord(&["--help"]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--initial-cluster",
        "--listen-client-urls",
        "--peer-auto-tls",
        "--snapshot-count",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
}
