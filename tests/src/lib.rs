//! Black-box test support: start real `concord` processes on 127.0.0.1 and talk to them
//! with real clients (the `etcd-client` crate, Debian's `etcdctl`).
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let mut cluster = concord_tests::Cluster::start(3)?;
//! let mut client = cluster.client().await?;
//! client.put("k", "v", None).await?;
//! cluster.kill(0);
//! # Ok(()) }
//! ```

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod http_json;
pub mod membership;
pub mod relay;
pub mod side_by_side;
pub mod tls;

/// The `concord` binary next to the test executable (cargo builds it with the workspace).
pub fn concord_binary() -> PathBuf {
    binary("concord")
}

/// The `concordctl` binary next to the test executable.
pub fn concordctl_binary() -> PathBuf {
    binary("concordctl")
}

/// The test-only `corrupt_store` example of the server (damages a stopped member's
/// store for the corruption checks' tests; `cargo build -p concord-server --examples`).
pub fn corrupt_store_binary() -> PathBuf {
    binary("examples/corrupt_store")
}

fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --release)",
        path.display()
    );
    path
}

/// Whether a member failed to start because another process took one of its ports.
fn is_port_taken(error: &anyhow::Error) -> bool {
    format!("{error:#}").contains("address already in use")
}

/// Whether a server's log (Concord's or etcd's) says it serves clients on `port` of
/// the loopback address.
pub fn serves_clients_on(log: &str, port: u16) -> bool {
    let address = format!("127.0.0.1:{port}");
    log.lines().any(|line| {
        line.contains("client requests on")
            && line
                .split(|c: char| c.is_whitespace() || c == '/' || c == ',')
                .any(|word| word == address)
    })
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// One member's fixed settings.
#[derive(Clone, Debug)]
pub struct MemberSpec {
    pub name: String,
    pub client_port: u16,
    /// The peer port the cluster knows the member by (its advertised peer URL).
    pub peer_port: u16,
    /// The peer port the member listens on: `peer_port`, unless a test relays its peer
    /// traffic (see [`relay::Relay`]).
    pub listen_peer_port: u16,
    pub data_dir: PathBuf,
}

impl MemberSpec {
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
    pub fn listen_peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.listen_peer_port)
    }
}

/// A cluster of real `concord` processes.
pub struct Cluster {
    pub members: Vec<MemberSpec>,
    processes: Vec<Option<Child>>,
    initial_cluster: String,
    _dir: tempfile::TempDir,
    pub extra_args: Vec<String>,
}

impl Cluster {
    /// Starts `size` members and waits until every one serves.
    pub fn start(size: usize) -> Result<Cluster> {
        Self::start_with(size, &[])
    }

    pub fn start_with(size: usize, extra_args: &[&str]) -> Result<Cluster> {
        // `free_port` hands out a port that nothing holds at that moment; a test running
        // in parallel can take it before the member binds it. Such a start is tried again
        // on other ports, a bounded number of times; any other failure is final.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match Self::start_on_free_ports(size, extra_args) {
                Err(error) if attempts < 3 && is_port_taken(&error) => continue,
                result => return result,
            }
        }
    }

    fn start_on_free_ports(size: usize, extra_args: &[&str]) -> Result<Cluster> {
        let mut cluster = Self::plan(size, extra_args)?;
        for i in 0..size {
            cluster.spawn(i)?;
        }
        for i in 0..size {
            cluster.wait_ready(i)?;
        }
        Ok(cluster)
    }

    /// A cluster of `size` members with ports and data dirs chosen but nothing started
    /// (a test prepares the data dirs, say with `snapshot restore`, then spawns them).
    pub fn plan(size: usize, extra_args: &[&str]) -> Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let members: Vec<MemberSpec> = (0..size)
            .map(|i| {
                let peer_port = free_port();
                MemberSpec {
                    name: format!("m{i}"),
                    client_port: free_port(),
                    peer_port,
                    listen_peer_port: peer_port,
                    data_dir: dir.path().join(format!("m{i}.concord")),
                }
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        Ok(Cluster {
            processes: members.iter().map(|_| None).collect(),
            members,
            initial_cluster,
            _dir: dir,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// The `--initial-cluster` the members start with.
    pub fn initial_cluster(&self) -> &str {
        &self.initial_cluster
    }

    /// A directory that lives as long as the cluster (for files a test makes).
    pub fn scratch_dir(&self) -> &Path {
        self._dir.path()
    }

    /// Starts member `i` (again) with its data dir as it is.
    pub fn spawn(&mut self, i: usize) -> Result<()> {
        let initial_cluster = self.initial_cluster.clone();
        self.spawn_member(i, &initial_cluster, "new")
    }

    /// Starts member `i` with the given `--initial-cluster` and `--initial-cluster-state`.
    pub(crate) fn spawn_member(
        &mut self,
        i: usize,
        initial_cluster: &str,
        initial_cluster_state: &str,
    ) -> Result<()> {
        let member = &self.members[i];
        let log = std::fs::File::create(self._dir.path().join(format!("{}.log", member.name)))?;
        let child = Command::new(concord_binary())
            .args(["--name", &member.name])
            .args(["--data-dir", &member.data_dir.to_string_lossy()])
            .args(["--listen-client-urls", &member.client_url()])
            .args(["--advertise-client-urls", &member.client_url()])
            .args(["--listen-peer-urls", &member.listen_peer_url()])
            .args(["--initial-advertise-peer-urls", &member.peer_url()])
            .args(["--initial-cluster", initial_cluster])
            .args(["--initial-cluster-state", initial_cluster_state])
            .args(["--initial-cluster-token", "concord-tests"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", member.name))?;
        self.processes[i] = Some(child);
        Ok(())
    }

    /// The member's log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(
            self._dir
                .path()
                .join(format!("{}.log", self.members[i].name)),
        )
        .unwrap_or_default()
    }

    /// The last `lines` lines of every member's log, each under its name: for the
    /// message of a test that gives up waiting, since the logs go with the cluster.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for (i, member) in self.members.iter().enumerate() {
            let log = self.log(i);
            let all: Vec<&str> = log.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            out.push_str(&format!(
                "--- {} (last {} lines)\n",
                member.name,
                tail.len()
            ));
            for line in tail {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Waits until member `i` accepts client connections on its own listener.
    ///
    /// A connection alone proves nothing: when a parallel test's server took the port
    /// first, the member exits with "address already in use" while the port still
    /// answers. So the member's log must say it serves that port, and a log that says
    /// the port was taken fails at once (which [`Cluster::start_with`] tries again).
    pub fn wait_ready(&self, i: usize) -> Result<()> {
        let port = self.members[i].client_port;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let log = self.log(i);
            if log.contains("address already in use") {
                bail!(
                    "member {} could not bind its ports; log:\n{log}",
                    self.members[i].name
                );
            }
            if serves_clients_on(&log, port)
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "member {} did not start serving; log:\n{}",
            self.members[i].name,
            self.log(i)
        )
    }

    /// kill -9.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.processes[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status code.
    pub fn stop(&mut self, i: usize) -> Option<i32> {
        let mut child = self.processes[i].take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().ok().and_then(|s| s.code())
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.processes[i].is_some()
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(MemberSpec::client_url).collect()
    }

    /// A client of every member.
    pub async fn client(&self) -> Result<etcd_client::Client> {
        Ok(etcd_client::Client::connect(self.endpoints(), None).await?)
    }

    /// A client of member `i` only.
    pub async fn member_client(&self, i: usize) -> Result<etcd_client::Client> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(10));
        Ok(etcd_client::Client::connect([self.members[i].client_url()], Some(options)).await?)
    }

    /// The index of the member every running member agrees leads, waiting for one.
    pub async fn leader(&self) -> Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut seen = Vec::new();
            for i in 0..self.members.len() {
                if !self.is_running(i) {
                    continue;
                }
                if let Ok(mut client) = self.member_client(i).await
                    && let Ok(status) = client.status().await
                {
                    let own = status.header().map(|h| h.member_id()).unwrap_or(0);
                    seen.push((i, own, status.leader()));
                }
            }
            let leaders: Vec<u64> = seen.iter().map(|(_, _, leader)| *leader).collect();
            if !leaders.is_empty()
                && leaders[0] != 0
                && leaders.iter().all(|l| *l == leaders[0])
                && let Some((i, _, _)) = seen.iter().find(|(_, own, _)| *own == leaders[0])
            {
                return Ok(*i);
            }
            if Instant::now() > deadline {
                bail!("no agreed leader: {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.processes.len() {
            self.kill(i);
        }
    }
}

/// The reference tools from Debian's etcd 3.4.23 packages that the suite compares
/// Concord with. Every test finds them through [`reference_tool`], and a missing one
/// fails the test: a run that could not compare is not a pass. `cargo xtask test`
/// installs the packages before it runs the suite.
pub const REFERENCE_TOOLS: &[(&str, &str)] = &[("etcd", "etcd-server"), ("etcdctl", "etcd-client")];

/// Debian's `etcd` server.
pub fn etcd() -> PathBuf {
    reference_tool("etcd")
}

/// Debian's `etcdctl`.
pub fn etcdctl() -> PathBuf {
    reference_tool("etcdctl")
}

/// Finds a reference tool on `PATH`, or panics with the `apt-get` line that installs it.
pub fn reference_tool(name: &str) -> PathBuf {
    let package = REFERENCE_TOOLS
        .iter()
        .find(|(tool, _)| *tool == name)
        .map_or(name, |(_, package)| *package);
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed: run `apt-get install {package}` \
                 (`cargo xtask test` installs it)"
            )
        })
}

/// Runs a ctl binary against `endpoints`; returns (success, stdout, stderr).
pub fn run_ctl(
    binary: &Path,
    endpoints: &[String],
    args: &[&str],
    stdin: Option<&str>,
) -> Result<(bool, String, String)> {
    use std::io::Write;
    let mut child = Command::new(binary)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(mut input), Some(text)) = (child.stdin.take(), stdin) {
        input.write_all(text.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// Runs `/usr/bin/python3 -c script args...` (a Debian python client as a user runs it).
/// The script proves it ran to its end by printing `marker` on a line of its own; returns
/// what it printed before that line. A failed exit or a missing marker is an error that
/// carries the script's stdout and stderr.
pub fn run_python(script: &str, args: &[&str], marker: &str) -> Result<String> {
    let output = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .context("run /usr/bin/python3")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let before_marker = stdout
        .split_inclusive('\n')
        .position(|line| line.trim_end_matches('\n') == marker)
        .map(|at| stdout.split_inclusive('\n').take(at).collect::<String>());
    match before_marker {
        Some(printed) if output.status.success() => Ok(printed),
        _ => bail!(
            "python3 script failed ({}; marker {marker:?} expected):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            output.status
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::serves_clients_on;

    #[test]
    fn the_ready_line_of_either_server_names_its_own_port_only() {
        let concord = "2026-12-07T18:03:17Z  INFO concord_server::member: ready to serve \
                       client requests on http://127.0.0.1:23791";
        let etcd = "2026-12-07 18:03:40.882248 N | embed: serving insecure client requests \
                    on 127.0.0.1:23795, this is strongly discouraged!";
        assert!(serves_clients_on(concord, 23791));
        assert!(serves_clients_on(etcd, 23795));
        assert!(!serves_clients_on(concord, 2379));
        assert!(!serves_clients_on(etcd, 2379));
        let taken =
            "ERROR concord: network: listen tcp 127.0.0.1:23791: bind: address already in use";
        assert!(!serves_clients_on(taken, 23791));
    }
}
