//! Local clusters of real server processes on 127.0.0.1: Concord (`target/release/concord`) or
//! Debian's etcd (`/usr/bin/etcd`), each member with its own ports, data dir and log file.
//! Members run in their own process group so a terminal's Ctrl-C reaches only xtask, which then
//! stops them in order (SIGTERM, wait); dropping a [`LocalCluster`] stops it too.
//!
//! For fault injection a member can be killed (SIGKILL), restarted with its original command
//! line, paused (SIGSTOP) and resumed (SIGCONT), and may advertise a peer port other than the one
//! it listens on (a proxy in front of it, see `chaos::proxy`).

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
    /// The port the member's peer listener binds.
    pub peer_port: u16,
    /// The port the other members dial to reach it: `peer_port`, unless a proxy sits in between.
    pub advertised_peer_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
}

impl MemberLayout {
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
    pub fn listen_peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
    pub fn advertised_peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.advertised_peer_port)
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
        advertised_peer_port: peer_port,
    }
}

/// The `--initial-cluster` value for a layout.
pub fn initial_cluster(layout: &[MemberLayout]) -> String {
    layout
        .iter()
        .map(|m| format!("{}={}", m.name, m.advertised_peer_url()))
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
        ("--listen-peer-urls", member.listen_peer_url()),
        (
            "--initial-advertise-peer-urls",
            member.advertised_peer_url(),
        ),
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
    /// The command line it was started with, reused by [`LocalCluster::restart`].
    binary: PathBuf,
    args: Vec<String>,
    /// `None` once it has exited (or was killed and not restarted yet).
    child: Option<Child>,
    /// SIGSTOPped by [`LocalCluster::pause`] and not resumed yet.
    paused: bool,
}

impl Member {
    fn spawn(&mut self) -> Result<()> {
        let parent = self.layout.data_dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.layout.log_path)
            .with_context(|| format!("open {}", self.layout.log_path.display()))?;
        let child = Command::new(&self.binary)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Own process group: the terminal's SIGINT reaches xtask only, which then stops
            // the members in order.
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {} {}", self.binary.display(), self.layout.name))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }
}

/// A running cluster. Stopped (SIGTERM, then wait) by [`LocalCluster::stop`] or on drop.
pub struct LocalCluster {
    members: Vec<Member>,
}

impl LocalCluster {
    /// Starts every member of `layout` with `binary` and waits until each accepts connections.
    pub fn start(flavor: Flavor, binary: &Path, layout: Vec<MemberLayout>) -> Result<LocalCluster> {
        Self::start_with(flavor, binary, layout, &[])
    }

    /// [`LocalCluster::start`] with `extra_args` appended to every member's command line.
    pub fn start_with(
        flavor: Flavor,
        binary: &Path,
        layout: Vec<MemberLayout>,
        extra_args: &[String],
    ) -> Result<LocalCluster> {
        let cluster = Self::launch(flavor, binary, layout, extra_args)?;
        cluster.wait_accepting(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// Starts every member like [`LocalCluster::start_with`] without waiting for them.
    pub fn launch(
        flavor: Flavor,
        binary: &Path,
        layout: Vec<MemberLayout>,
        extra_args: &[String],
    ) -> Result<LocalCluster> {
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
        Self::spawn(binary, &layout, |member| {
            let mut args = member_args(flavor, member, &layout);
            args.extend_from_slice(extra_args);
            args
        })
    }

    /// Waits until every member accepts client connections.
    pub fn wait_accepting(&self, limit: Duration) -> Result<()> {
        for member in &self.members {
            wait_accepting(&member.layout, limit)?;
        }
        Ok(())
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
        for layout in layout {
            let mut member = Member {
                layout: layout.clone(),
                binary: binary.to_path_buf(),
                args: args(layout),
                child: None,
                paused: false,
            };
            member.spawn()?;
            cluster.members.push(member);
        }
        Ok(cluster)
    }

    /// Starts one more member, `binary args`, without waiting for it; returns its index.
    pub fn spawn_member(
        &mut self,
        layout: MemberLayout,
        binary: &Path,
        args: Vec<String>,
    ) -> Result<usize> {
        let mut member = Member {
            layout,
            binary: binary.to_path_buf(),
            args,
            child: None,
            paused: false,
        };
        member.spawn()?;
        self.members.push(member);
        Ok(self.members.len() - 1)
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

    /// The pid of member `index`, if it is running (or paused).
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.members
            .get(index)
            .and_then(|m| m.child.as_ref().map(Child::id))
    }

    /// Whether member `index` is SIGSTOPped.
    pub fn is_paused(&self, index: usize) -> bool {
        self.members.get(index).is_some_and(|m| m.paused)
    }

    /// Members that have exited on their own, with their exit status. A member killed by
    /// [`LocalCluster::kill`] is not among them.
    pub fn exited(&mut self) -> Vec<(String, String)> {
        let mut gone = Vec::new();
        for member in &mut self.members {
            if let Some(child) = member.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                gone.push((member.layout.name.clone(), status.to_string()));
                member.child = None;
                member.paused = false;
            }
        }
        gone
    }

    fn member(&mut self, index: usize) -> Result<&mut Member> {
        let count = self.members.len();
        self.members
            .get_mut(index)
            .with_context(|| format!("no member {index} in a cluster of {count}"))
    }

    /// SIGKILL to member `index`, and waits for it to be gone.
    pub fn kill(&mut self, index: usize) -> Result<()> {
        let member = self.member(index)?;
        let Some(mut child) = member.child.take() else {
            bail!("member {} is not running", member.layout.name);
        };
        member.paused = false;
        // A stopped process dies from SIGKILL too; no SIGCONT needed.
        child
            .kill()
            .with_context(|| format!("kill {}", member.layout.name))?;
        child
            .wait()
            .with_context(|| format!("wait for {}", member.layout.name))?;
        Ok(())
    }

    /// Starts member `index` again with its original command line (same data dir); returns the
    /// new pid. Does not wait for it to accept connections.
    pub fn restart(&mut self, index: usize) -> Result<u32> {
        let member = self.member(index)?;
        if member.child.is_some() {
            bail!("member {} is still running", member.layout.name);
        }
        member.spawn()?;
        Ok(member.child.as_ref().map(Child::id).unwrap_or_default())
    }

    /// Starts member `index` (not running) as a new member joining a running cluster, the
    /// way an operator replaces a machine after `member add`: its data dir emptied, then
    /// started with `--initial-cluster-state existing` and `initial_cluster` (what `member
    /// add` printed). Later restarts reuse this command line. Returns the new pid.
    pub fn start_fresh(&mut self, index: usize, initial_cluster: &str) -> Result<u32> {
        let member = self.member(index)?;
        if member.child.is_some() {
            bail!("member {} is still running", member.layout.name);
        }
        let data_dir = &member.layout.data_dir;
        if data_dir.exists() {
            std::fs::remove_dir_all(data_dir)
                .with_context(|| format!("remove {}", data_dir.display()))?;
        }
        set_flag(&mut member.args, "--initial-cluster", initial_cluster);
        set_flag(&mut member.args, "--initial-cluster-state", "existing");
        member.spawn()?;
        Ok(member.child.as_ref().map(Child::id).unwrap_or_default())
    }

    /// SIGSTOP to member `index`: it keeps its sockets but does nothing until resumed.
    pub fn pause(&mut self, index: usize) -> Result<()> {
        let member = self.member(index)?;
        let pid = member
            .child
            .as_ref()
            .map(Child::id)
            .with_context(|| format!("member {} is not running", member.layout.name))?;
        send_signal(pid, "STOP")?;
        member.paused = true;
        Ok(())
    }

    /// SIGCONT to member `index` (after [`LocalCluster::pause`]).
    pub fn resume(&mut self, index: usize) -> Result<()> {
        let member = self.member(index)?;
        let pid = member
            .child
            .as_ref()
            .map(Child::id)
            .with_context(|| format!("member {} is not running", member.layout.name))?;
        send_signal(pid, "CONT")?;
        member.paused = false;
        Ok(())
    }

    /// SIGTERM to every member, then waits for all (SIGKILL after a grace period).
    pub fn stop(&mut self) -> Vec<(String, String)> {
        for member in &mut self.members {
            if let Some(child) = &member.child {
                let pid = child.id();
                let _ = send_signal(pid, "TERM");
                // A stopped process only acts on SIGTERM once it runs again.
                if member.paused {
                    let _ = send_signal(pid, "CONT");
                    member.paused = false;
                }
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

/// Sets `flag`'s value in a command line of `--flag value` pairs (appended if absent).
pub fn set_flag(args: &mut Vec<String>, flag: &str, value: &str) {
    match args.iter().position(|a| a == flag) {
        Some(at) if at + 1 < args.len() => args[at + 1] = value.to_string(),
        _ => args.extend([flag.to_string(), value.to_string()]),
    }
}

/// `kill -<signal> <pid>` (the workspace forbids `unsafe`, so no direct `kill(2)`).
fn send_signal(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .with_context(|| format!("run kill -{signal} {pid}"))?;
    if !status.success() {
        bail!("kill -{signal} {pid}: {status}");
    }
    Ok(())
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
    fn flags_are_replaced_or_appended() {
        let mut args: Vec<String> = ["--name", "m0", "--initial-cluster-state", "new"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        set_flag(&mut args, "--initial-cluster-state", "existing");
        set_flag(&mut args, "--initial-cluster", "m0=http://127.0.0.1:2380");
        assert_eq!(
            args,
            [
                "--name",
                "m0",
                "--initial-cluster-state",
                "existing",
                "--initial-cluster",
                "m0=http://127.0.0.1:2380"
            ]
        );
    }

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

    /// The process state letter of /proc/<pid>/stat (`T` when stopped).
    fn process_state(pid: u32) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let (_, after_comm) = stat.rsplit_once(')').unwrap();
        after_comm.trim_start().chars().next().unwrap()
    }

    fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "never happened: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn kill_restart_pause_resume() {
        let dir = std::env::temp_dir().join(format!("xtask-faults-test-{}", std::process::id()));
        let layout = ephemeral_layout(2, &dir).unwrap();
        let mut cluster =
            LocalCluster::spawn(Path::new("/bin/sh"), &layout, term_recording_member).unwrap();
        // SIGTERM before a member's trap is set would kill the shell outright, and m0's
        // restart is recognised by a second ready line in its log: wait for both.
        for member in &layout {
            wait_for("members ready", || {
                std::fs::read_to_string(&member.log_path)
                    .unwrap_or_default()
                    .contains("ready")
            });
        }
        let first = cluster.pid(0).unwrap();
        cluster.kill(0).unwrap();
        assert_eq!(cluster.pid(0), None);
        assert!(cluster.exited().is_empty(), "a kill is not a crash");
        assert!(cluster.kill(0).is_err(), "nothing left to kill");
        let second = cluster.restart(0).unwrap();
        assert_ne!(first, second);
        assert_eq!(cluster.pid(0), Some(second));
        assert!(cluster.restart(0).is_err(), "already running");
        // The restarted member appends to the same log, with the same command line.
        wait_for("the restarted member's ready line", || {
            std::fs::read_to_string(&layout[0].log_path)
                .unwrap_or_default()
                .matches("ready")
                .count()
                == 2
        });

        let paused = cluster.pid(1).unwrap();
        cluster.pause(1).unwrap();
        assert!(cluster.is_paused(1));
        wait_for("SIGSTOP", || process_state(paused) == 'T');
        cluster.resume(1).unwrap();
        assert!(!cluster.is_paused(1));
        wait_for("SIGCONT", || process_state(paused) != 'T');

        // A paused member still stops on SIGTERM (stop resumes it).
        cluster.pause(1).unwrap();
        wait_for("SIGSTOP", || process_state(paused) == 'T');
        let outcomes = cluster.stop();
        assert_eq!(
            outcomes,
            [
                ("m0".to_string(), "exit status: 0".to_string()),
                ("m1".to_string(), "exit status: 0".to_string())
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn advertised_peer_urls_may_differ_from_the_listener() {
        let mut layout = procfile_layout(2, 2379, Path::new("/d")).unwrap();
        layout[1].advertised_peer_port = 40000;
        let args = member_args(Flavor::Etcd, &layout[1], &layout);
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .map(|i| args[i + 1].as_str())
        };
        assert_eq!(value("--listen-peer-urls"), Some("http://127.0.0.1:12380"));
        assert_eq!(
            value("--initial-advertise-peer-urls"),
            Some("http://127.0.0.1:40000")
        );
        assert_eq!(
            value("--initial-cluster"),
            Some("m0=http://127.0.0.1:2380,m1=http://127.0.0.1:40000")
        );
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
