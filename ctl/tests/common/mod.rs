//! Shared helpers of the integration tests: a real etcd member in a temporary
//! directory that a test can kill and restart. Comparing concordctl's output with
//! etcdctl's is the side-by-side harness's (`concord_tests::side_by_side`).

#![allow(clippy::unwrap_used, dead_code)] // test code; each test file uses a subset

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CONCORDCTL: &str = env!("CARGO_BIN_EXE_concordctl");

/// Fails the test unless Debian's etcd and etcdctl are installed (one lookup for the
/// whole suite: `concord_tests::reference_tool`).
pub fn require_reference_tools() {
    concord_tests::etcd();
    concord_tests::etcdctl();
}

pub use concord_tests::free_port;
pub use concord_tests::tls::TlsFiles;

/// One etcd member in a temporary directory, killed on drop.
pub struct Etcd {
    child: Child,
    /// How to start it again on the same data directory and ports.
    command: Vec<std::ffi::OsString>,
    client_url: String,
    /// Flags etcdctl needs to reach the member (TLS files).
    ctl_flags: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub fn start(client_port: u16, peer_port: u16) -> Etcd {
        Self::start_with(client_port, peer_port, None, false)
    }

    /// A member serving clients over TLS, optionally requiring client certificates.
    pub fn start_tls(tls: &TlsFiles, client_cert_auth: bool) -> Etcd {
        Self::start_with(free_port(), free_port(), Some(tls), client_cert_auth)
    }

    fn start_with(
        client_port: u16,
        peer_port: u16,
        tls: Option<&TlsFiles>,
        client_cert_auth: bool,
    ) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let mut command = Command::new(concord_tests::etcd());
        command
            .args(["--name", "parity"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("parity={peer_url}")])
            .args(["--initial-cluster-token", "concord-parity"]);
        let mut ctl_flags = Vec::new();
        if let Some(tls) = tls {
            command.args([
                "--cert-file",
                &tls.server_cert,
                "--key-file",
                &tls.server_key,
            ]);
            ctl_flags = vec!["--cacert".to_owned(), tls.ca.clone()];
            if client_cert_auth {
                command.args(["--client-cert-auth", "--trusted-ca-file", &tls.ca]);
                ctl_flags.extend([
                    "--cert".to_owned(),
                    tls.client_cert.clone(),
                    "--key".to_owned(),
                    tls.client_key.clone(),
                ]);
            }
        }
        let argv = std::iter::once(command.get_program().to_owned())
            .chain(command.get_args().map(ToOwned::to_owned))
            .collect();
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        let etcd = Etcd {
            child,
            command: argv,
            client_url,
            ctl_flags,
            _dir: dir,
        };
        etcd.wait_ready();
        etcd
    }

    /// Kills the member (SIGKILL); [`Etcd::restart`] brings it back.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the member again on its data directory and ports, and waits
    /// until it serves.
    pub fn restart(&mut self) {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self._dir.path().join("etcd.log"))
            .unwrap();
        self.child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("respawn etcd");
        self.wait_ready();
    }

    /// `host:port`, without the scheme.
    pub fn endpoint(&self) -> &str {
        self.client_url
            .split("://")
            .nth(1)
            .unwrap_or(&self.client_url)
    }

    pub fn url(&self) -> &str {
        &self.client_url
    }

    /// Polls until etcd has a leader and commits a linearizable read.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let status = Command::new(concord_tests::etcdctl())
                .args(["--endpoints", self.endpoint(), "--command-timeout", "1s"])
                .args(&self.ctl_flags)
                // Readiness, not the certificate's names (some name no address).
                .arg("--insecure-skip-tls-verify")
                .args(["endpoint", "health"])
                .env("ETCDCTL_API", "3")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            if status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd did not become ready");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
