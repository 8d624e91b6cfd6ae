//! Local clusters of real server processes on 127.0.0.1: Concord (`target/release/concord`) or
//! Debian's etcd (`/usr/bin/etcd`), each member with its own ports, data dir and log file.
//! Members run in their own process group so a terminal's Ctrl-C reaches only xtask, which then
//! stops them in order (SIGTERM, wait); dropping a [`LocalCluster`] stops it too.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long a member gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Which server a cluster runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Concord,
    Etcd,
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Concord => "concord",
            Flavor::Etcd => "etcd",
        }
    }
}

/// Where one member listens and keeps its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberLayout {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
}

impl MemberLayout {
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

/// The fixed port plan of `cargo xtask cluster`, after etcd's Procfile: member `i` serves clients
/// on `base + 10000 * i` and peers on the port after it (2379/2380, 12379/12380, 22379/22380).
pub fn procfile_layout(members: usize, base_port: u16, root: &Path) -> Result<Vec<MemberLayout>> {
    (0..members)
        .map(|i| {
            let client_port = u32::from(base_port) + 10_000 * i as u32;
            if client_port + 1 > u32::from(u16::MAX) {
                bail!(
                    "{members} members do not fit above base port {base_port} (10000 ports apart)"
                );
            }
            Ok(layout_member(
                i,
                client_port as u16,
                client_port as u16 + 1,
                root,
            ))
        })
        .collect()
}

/// Members on ports the kernel reports free right now (for throw-away clusters).
pub fn ephemeral_layout(members: usize, root: &Path) -> Result<Vec<MemberLayout>> {
    // Hold every listener until all ports are chosen so no port is handed out twice.
    let listeners: Vec<TcpListener> = (0..2 * members)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()?;
    Ok((0..members)
        .map(|i| layout_member(i, ports[2 * i], ports[2 * i + 1], root))
        .collect())
}

fn layout_member(i: usize, client_port: u16, peer_port: u16, root: &Path) -> MemberLayout {
    let name = format!("m{i}");
    MemberLayout {
        data_dir: root.join(format!("{name}.data")),
        log_path: root.join(format!("{name}.log")),
        name,
        client_port,
        peer_port,
    }
}

/// The `--initial-cluster` value for a layout.
pub fn initial_cluster(layout: &[MemberLayout]) -> String {
    layout
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The command line of one member; both servers take etcd's flags.
pub fn member_args(flavor: Flavor, member: &MemberLayout, layout: &[MemberLayout]) -> Vec<String> {
    let mut args: Vec<String> = [
        ("--name", member.name.clone()),
        ("--data-dir", member.data_dir.to_string_lossy().into_owned()),
        ("--listen-client-urls", member.client_url()),
        ("--advertise-client-urls", member.client_url()),
        ("--listen-peer-urls", member.peer_url()),
        ("--initial-advertise-peer-urls", member.peer_url()),
        ("--initial-cluster", initial_cluster(layout)),
        (
            "--initial-cluster-token",
            format!("xtask-{}", flavor.name()),
        ),
        ("--initial-cluster-state", "new".to_string()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect();
    if flavor == Flavor::Etcd {
        // etcd 3.4 defaults to the deprecated capnslog logger and warns about it at start.
        args.extend(["--logger".to_string(), "zap".to_string()]);
    }
    args
}

struct Member {
    layout: MemberLayout,
    child: Option<Child>,
}

/// A running cluster. Stopped (SIGTERM, then wait) by [`LocalCluster::stop`] or on drop.
pub struct LocalCluster {
    members: Vec<Member>,
}

impl LocalCluster {
    /// Starts every member of `layout` with `binary` and waits until each accepts connections.
    pub fn start(flavor: Flavor, binary: &Path, layout: Vec<MemberLayout>) -> Result<LocalCluster> {
        if !binary.exists() {
            match flavor {
                Flavor::Concord => bail!(
                    "{} is missing: cargo build --release -p concord-server",
                    binary.display()
                ),
                Flavor::Etcd => bail!(
                    "{} is missing: apt-get install etcd-server",
                    binary.display()
                ),
            }
        }
        let cluster = Self::spawn(binary, &layout, |member| {
            member_args(flavor, member, &layout)
        })?;
        for member in &cluster.members {
            wait_accepting(&member.layout, Duration::from_secs(30))?;
        }
        Ok(cluster)
    }

    /// Starts one `binary` process per member with `args(member)`, logs appended to the
    /// member's log file, without waiting for anything.
    fn spawn(
        binary: &Path,
        layout: &[MemberLayout],
        args: impl Fn(&MemberLayout) -> Vec<String>,
    ) -> Result<LocalCluster> {
        // Members started so far are stopped by drop if a later one fails to start.
        let mut cluster = LocalCluster {
            members: Vec::new(),
        };
        for member in layout {
            std::fs::create_dir_all(member.data_dir.parent().unwrap_or(Path::new(".")))?;
            let log = File::options()
                .create(true)
                .append(true)
                .open(&member.log_path)
                .with_context(|| format!("open {}", member.log_path.display()))?;
            let child = Command::new(binary)
                .args(args(member))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                // Own process group: the terminal's SIGINT reaches xtask only, which then stops
                // the members in order.
                .process_group(0)
                .spawn()
                .with_context(|| format!("start {} {}", binary.display(), member.name))?;
            cluster.members.push(Member {
                layout: member.clone(),
                child: Some(child),
            });
        }
        Ok(cluster)
    }

    pub fn layout(&self) -> Vec<MemberLayout> {
        self.members.iter().map(|m| m.layout.clone()).collect()
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.layout.client_url()).collect()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.child.as_ref().map(Child::id))
            .collect()
    }

    /// Members that have exited on their own, with their exit status.
    pub fn exited(&mut self) -> Vec<(String, String)> {
        let mut gone = Vec::new();
        for member in &mut self.members {
            if let Some(child) = member.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                gone.push((member.layout.name.clone(), status.to_string()));
                member.child = None;
            }
        }
        gone
    }

    /// SIGTERM to every member, then waits for all (SIGKILL after a grace period).
    pub fn stop(&mut self) -> Vec<(String, String)> {
        for member in &self.members {
            if let Some(child) = &member.child {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        let mut outcomes = Vec::new();
        for member in &mut self.members {
            let Some(mut child) = member.child.take() else {
                continue;
            };
            let outcome = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break status.to_string(),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break "killed (no exit within the grace period after SIGTERM)".to_string();
                    }
                }
            };
            outcomes.push((member.layout.name.clone(), outcome));
        }
        outcomes
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_accepting(member: &MemberLayout, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", member.client_port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = std::fs::read_to_string(&member.log_path).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(20).collect();
    bail!(
        "member {} did not accept connections on port {} within {limit:?}; last log lines:\n{}",
        member.name,
        member.client_port,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procfile_ports() {
        let layout = procfile_layout(3, 2379, Path::new("/d")).unwrap();
        let ports: Vec<(u16, u16)> = layout
            .iter()
            .map(|m| (m.client_port, m.peer_port))
            .collect();
        assert_eq!(ports, [(2379, 2380), (12379, 12380), (22379, 22380)]);
        assert_eq!(layout[1].data_dir, Path::new("/d/m1.data"));
        assert_eq!(layout[1].log_path, Path::new("/d/m1.log"));
        assert!(procfile_layout(7, 2379, Path::new("/d")).is_ok());
        assert!(procfile_layout(8, 2379, Path::new("/d")).is_err());
    }

    #[test]
    fn ephemeral_ports_are_distinct() {
        let layout = ephemeral_layout(3, Path::new("/d")).unwrap();
        let mut ports: Vec<u16> = layout
            .iter()
            .flat_map(|m| [m.client_port, m.peer_port])
            .collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 6);
    }

    #[test]
    fn member_command_line() {
        let layout = procfile_layout(2, 2379, Path::new("/d")).unwrap();
        let args = member_args(Flavor::Concord, &layout[1], &layout);
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .map(|i| args[i + 1].as_str())
        };
        assert_eq!(value("--name"), Some("m1"));
        assert_eq!(
            value("--listen-client-urls"),
            Some("http://127.0.0.1:12379")
        );
        assert_eq!(
            value("--initial-cluster"),
            Some("m0=http://127.0.0.1:2380,m1=http://127.0.0.1:12380")
        );
        assert_eq!(value("--logger"), None);
        // fsync stays on for both: nobody passes etcd's --unsafe-no-fsync.
        let etcd = member_args(Flavor::Etcd, &layout[0], &layout);
        assert!(!etcd.iter().any(|a| a.contains("unsafe")));
        assert!(etcd.windows(2).any(|w| w == ["--logger", "zap"]));
    }

    /// A stand-in member: a shell that records SIGTERM in its log and exits 0.
    fn term_recording_member(member: &MemberLayout) -> Vec<String> {
        let script =
            "trap 'echo got-sigterm; exit 0' TERM; echo ready; while :; do sleep 0.01; done";
        vec!["-c".into(), script.into(), member.name.clone()]
    }

    #[test]
    fn stop_sends_sigterm_and_waits() {
        let dir = std::env::temp_dir().join(format!("xtask-stop-test-{}", std::process::id()));
        let layout = ephemeral_layout(2, &dir).unwrap();
        let mut cluster =
            LocalCluster::spawn(Path::new("/bin/sh"), &layout, term_recording_member).unwrap();
        assert_eq!(cluster.pids().len(), 2);
        // SIGTERM before the trap is set would kill the shell outright: wait for "ready".
        let deadline = Instant::now() + Duration::from_secs(10);
        for member in &layout {
            while !std::fs::read_to_string(&member.log_path)
                .unwrap_or_default()
                .contains("ready")
            {
                assert!(
                    Instant::now() < deadline,
                    "{} never became ready",
                    member.name
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let outcomes = cluster.stop();
        assert_eq!(
            outcomes,
            [
                ("m0".to_string(), "exit status: 0".to_string()),
                ("m1".to_string(), "exit status: 0".to_string())
            ]
        );
        for member in &layout {
            let log = std::fs::read_to_string(&member.log_path).unwrap();
            assert_eq!(log, "ready\ngot-sigterm\n", "{}", member.name);
        }
        assert!(cluster.pids().is_empty());
        assert!(
            cluster.stop().is_empty(),
            "a second stop has nothing left to stop"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn exited_reports_members_that_died() {
        let dir = std::env::temp_dir().join(format!("xtask-exit-test-{}", std::process::id()));
        let layout = ephemeral_layout(1, &dir).unwrap();
        let mut cluster = LocalCluster::spawn(Path::new("/bin/sh"), &layout, |_| {
            vec!["-c".into(), "exit 3".into()]
        })
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let gone = loop {
            let gone = cluster.exited();
            if !gone.is_empty() || Instant::now() > deadline {
                break gone;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(gone, [("m0".to_string(), "exit status: 3".to_string())]);
        assert!(cluster.pids().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_binaries_say_how_to_get_them() {
        let layout = ephemeral_layout(1, Path::new("/nonexistent")).unwrap();
        let etcd =
            LocalCluster::start(Flavor::Etcd, Path::new("/nonexistent/etcd"), layout.clone());
        assert!(
            etcd.err()
                .unwrap()
                .to_string()
                .contains("apt-get install etcd-server")
        );
        let concord =
            LocalCluster::start(Flavor::Concord, Path::new("/nonexistent/concord"), layout);
        assert!(
            concord
                .err()
                .unwrap()
                .to_string()
                .contains("cargo build --release -p concord-server")
        );
    }
}
