//! `cargo xtask test`: the README's one test command, also what CI runs.
//!
//! In order: install the Debian packages the suite compares Concord with (as root, with
//! apt-get; otherwise print the exact `apt-get install` line and fail, since a suite that had
//! to skip is not a pass), put the `protoc` that the `protoc-bin-vendored` crate ships first
//! on `PATH` (the third-party `etcd-client` crate in the tests wants one; nothing uses a
//! system `protoc`), check formatting, clippy and the house rules ([`crate::tidy`]), then
//! run the whole suite with nextest (or `cargo test` where nextest is missing). The runner's
//! own summary line is the last thing printed.
//!
//! Why `PATH` and not `PROTOC`: raft-rs's `raft-proto` build script (protobuf-build) panics
//! when `PROTOC` names a protoc whose major version is not 3, and the vendored one is 36.x.
//! Found on `PATH` instead, protobuf-build turns it down politely and uses the protoc it
//! bundles, while prost-build (under etcd-client) takes it. `PROTOC` is removed from the
//! children's environment for the same reason.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Debian packages the suite needs, each with a file that shows it is installed.
///
/// - `etcd-server`, `etcd-client`: etcd 3.4.23, the reference the interop, parity,
///   side-by-side and chaos tests compare Concord with.
pub const SYSTEM_PACKAGES: &[SystemPackage] = &[
    SystemPackage {
        name: "etcd-server",
        installs: "/usr/bin/etcd",
    },
    SystemPackage {
        name: "etcd-client",
        installs: "/usr/bin/etcdctl",
    },
    // The v2 client the v2 tests run, and curl for the v2 HTTP API.
    SystemPackage {
        name: "python3-etcd",
        installs: "/usr/lib/python3/dist-packages/etcd/__init__.py",
    },
    SystemPackage {
        name: "curl",
        installs: "/usr/bin/curl",
    },
    // The JSON gateway's and the locks' python clients (tests/tests/gateway.rs,
    // lock_election.rs).
    SystemPackage {
        name: "python3-etcd3gw",
        installs: "/usr/lib/python3/dist-packages/etcd3gw/__init__.py",
    },
    SystemPackage {
        name: "python3-etcd3",
        installs: "/usr/lib/python3/dist-packages/etcd3/__init__.py",
    },
    // Scrapes a cluster and runs etcd's Grafana dashboard queries
    // (tests/tests/prometheus.rs).
    SystemPackage {
        name: "prometheus",
        installs: "/usr/bin/prometheus",
    },
    // concordctl's zsh and fish completion scripts run in the real shells
    // (ctl/tests/completion.rs).
    SystemPackage {
        name: "zsh",
        installs: "/usr/bin/zsh",
    },
    SystemPackage {
        name: "fish",
        installs: "/usr/bin/fish",
    },
];

/// A Debian package and one file it installs.
#[derive(Debug, Clone, Copy)]
pub struct SystemPackage {
    pub name: &'static str,
    pub installs: &'static str,
}

pub fn test_command(root: &Path, runner_args: &[String]) -> Result<()> {
    install_system_packages()?;

    let protoc = protoc_bin_vendored::protoc_bin_path()
        .context("find the protoc shipped by the protoc-bin-vendored crate")?;
    let search_path = path_with_first(&protoc)?;
    eprintln!("xtask: protoc for etcd-client: {}", protoc.display());

    run_step(
        root,
        &search_path,
        "cargo fmt --all --check",
        &["fmt", "--all", "--check"],
    )?;
    run_step(
        root,
        &search_path,
        "cargo clippy --workspace --all-targets -- -D warnings",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;

    eprintln!("xtask: tidy");
    let violations = crate::tidy::run(root)?;
    if !violations.is_empty() {
        for violation in &violations {
            eprintln!("tidy: {violation}");
        }
        bail!("{} house rule(s) broken", violations.len());
    }

    let mut suite: Vec<&str> = if nextest_installed() {
        vec!["nextest", "run"]
    } else {
        eprintln!("xtask: cargo-nextest is not installed; running the suite with cargo test");
        vec!["test"]
    };
    suite.extend(["--workspace", "--release", "--no-fail-fast"]);
    suite.extend(runner_args.iter().map(String::as_str));
    let description = format!("cargo {}", suite.join(" "));
    run_step(root, &search_path, &description, &suite)
}

/// Installs what is missing of [`SYSTEM_PACKAGES`]: with apt-get as root, else an error that
/// names the command to run.
fn install_system_packages() -> Result<()> {
    let missing = missing_packages(SYSTEM_PACKAGES, |path| Path::new(path).exists());
    if missing.is_empty() {
        return Ok(());
    }
    let install_line = format!("apt-get install -y {}", missing.join(" "));
    if !running_as_root()? {
        bail!(
            "the test suite needs Debian packages that are missing: {}\n\
             install them as root, then run `cargo xtask test` again:\n    sudo {install_line}",
            missing.join(" ")
        );
    }
    eprintln!("xtask: apt-get update && {install_line}");
    for args in [
        vec!["update", "-qq"],
        [
            vec!["install", "-y", "-qq", "--no-install-recommends"],
            missing.clone(),
        ]
        .concat(),
    ] {
        let status = Command::new("apt-get")
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("run apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed: {status}", args.join(" "));
        }
    }
    let still_missing = missing_packages(SYSTEM_PACKAGES, |path| Path::new(path).exists());
    if !still_missing.is_empty() {
        bail!(
            "apt-get finished but these are still missing: {}",
            still_missing.join(" ")
        );
    }
    Ok(())
}

/// The names of the packages whose marker file `exists` says is absent.
pub fn missing_packages(
    packages: &[SystemPackage],
    exists: impl Fn(&str) -> bool,
) -> Vec<&'static str> {
    packages
        .iter()
        .filter(|package| !exists(package.installs))
        .map(|package| package.name)
        .collect()
}

/// Whether the effective user is root, from `/proc/self/status` (no libc call needed).
fn running_as_root() -> Result<bool> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    effective_uid(&status)
        .map(|uid| uid == 0)
        .context("no Uid line in /proc/self/status")
}

/// The effective uid from a `/proc/<pid>/status` text (`Uid: real effective saved fs`).
pub fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|uid| uid.parse().ok())
}

fn nextest_installed() -> bool {
    cargo_command()
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// `PATH` with the folder of `protoc` (the vendored one, alone in its `bin` folder) first.
pub(crate) fn path_with_first(protoc: &Path) -> Result<OsString> {
    let folder = protoc
        .parent()
        .context("the vendored protoc has no folder")?
        .to_path_buf();
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(folder).chain(std::env::split_paths(&rest)))
        .context("build PATH with the vendored protoc first")
}

fn run_step(root: &Path, search_path: &OsStr, description: &str, args: &[&str]) -> Result<()> {
    eprintln!("xtask: {description}");
    let status = cargo_command()
        .args(args)
        .current_dir(root)
        .env("PATH", search_path)
        .env_remove("PROTOC")
        .status()
        .with_context(|| format!("run {description}"))?;
    if !status.success() {
        bail!("{description} failed: {status}");
    }
    Ok(())
}

fn cargo_command() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_packages_are_named_in_order() {
        let installed = ["/usr/bin/etcdctl"];
        let missing = missing_packages(SYSTEM_PACKAGES, |path| installed.contains(&path));
        let expected: Vec<&str> = SYSTEM_PACKAGES
            .iter()
            .filter(|package| package.installs != "/usr/bin/etcdctl")
            .map(|package| package.name)
            .collect();
        assert_eq!(missing, expected);
        assert_eq!(missing[0], "etcd-server");
        let none = missing_packages(SYSTEM_PACKAGES, |_| true);
        assert!(none.is_empty());
    }

    #[test]
    fn effective_uid_is_the_second_field() {
        let status = "Name:\txtask\nUid:\t1000\t0\t1000\t1000\nGid:\t0\t0\t0\t0\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Name:\tx\n"), None);
    }
}
