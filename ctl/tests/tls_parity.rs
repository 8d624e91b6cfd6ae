//! concordctl over TLS against a real etcd, compared with etcdctl: CA
//! verification, `https://` endpoints, `--insecure-skip-tls-verify`, client
//! certificates, and the failures when verification is impossible.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{CONCORDCTL, Etcd, TlsFiles, assert_lines_equal, require_reference_tools, run};

fn compare(etcd: &Etcd, endpoint: &str, cases: &[Vec<&str>]) -> String {
    let mut etcdctl_transcript = String::new();
    for args in cases {
        let expected = run("etcdctl", endpoint, args, "");
        let actual = run(CONCORDCTL, endpoint, args, "");
        assert_lines_equal(&expected, &actual);
        etcdctl_transcript.push_str(&expected);
    }
    let _ = etcd;
    etcdctl_transcript
}

#[test]
fn server_tls_matches_etcdctl() {
    require_reference_tools();
    let tls = TlsFiles::generate();
    let etcd = Etcd::start_tls(&tls, false);
    let ca = tls.ca.as_str();
    let cases: Vec<Vec<&str>> = vec![
        vec!["--cacert", ca, "put", "k", "v"],
        vec!["--cacert", ca, "get", "k", "-w", "json"],
        vec!["--cacert", ca, "member", "list"],
        vec![
            "--insecure-skip-tls-verify",
            "--insecure-transport=false",
            "get",
            "k",
        ],
        vec![
            "--command-timeout",
            "1s",
            "--insecure-transport=false",
            "get",
            "k",
        ],
        vec!["--command-timeout", "1s", "get", "k"],
    ];
    let transcript = compare(&etcd, etcd.endpoint(), &cases);
    assert!(
        transcript.contains("\"kvs\":[{\"key\":\"aw==\""),
        "{transcript}"
    );
    assert!(
        transcript.contains("Error: context deadline exceeded"),
        "{transcript}"
    );
    // The same with an explicit https:// endpoint.
    let cases: Vec<Vec<&str>> = vec![
        vec!["--cacert", ca, "get", "k"],
        vec![
            "--insecure-skip-tls-verify",
            "--insecure-transport=false",
            "get",
            "k",
            "-w",
            "fields",
        ],
        // Skipping verification alone configures no TLS: https:// then uses
        // the system roots, which do not know our CA.
        vec![
            "--command-timeout",
            "1s",
            "--insecure-skip-tls-verify",
            "get",
            "k",
        ],
    ];
    let transcript = compare(&etcd, etcd.url(), &cases);
    assert!(transcript.contains("\"Key\" : \"k\""), "{transcript}");
}

#[test]
fn client_certificates_match_etcdctl() {
    require_reference_tools();
    let tls = TlsFiles::generate();
    let etcd = Etcd::start_tls(&tls, true);
    let (ca, cert, key) = (
        tls.ca.as_str(),
        tls.client_cert.as_str(),
        tls.client_key.as_str(),
    );
    let cases: Vec<Vec<&str>> = vec![
        vec![
            "--cacert", ca, "--cert", cert, "--key", key, "put", "k", "v",
        ],
        vec!["--cacert", ca, "--cert", cert, "--key", key, "get", "k"],
        vec!["--cacert", ca, "--command-timeout", "1s", "get", "k"],
    ];
    let transcript = compare(&etcd, etcd.endpoint(), &cases);
    assert!(transcript.contains("OK\n"), "{transcript}");
}
