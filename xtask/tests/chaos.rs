//! `cargo xtask chaos` as CI runs it: 30 seconds of faults on a 3-member cluster, whose history
//! must check clean. Against Concord (the server built in this target dir, next to the xtask
//! binary) and against Debian's etcd 3.4.23, the reference that proves the harness and the
//! checker do not cry wolf.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The same fault schedule every time; `cargo xtask chaos --seed` explores others.
const SEED: &str = "20240601";

fn xtask() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_xtask"))
}

/// Runs one chaos run, prints everything it printed, and asserts it passed.
fn chaos_run(target: &str, binary: &Path) {
    let data_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("chaos-{target}"));
    let output = Command::new(xtask())
        .args([
            "chaos",
            "--members",
            "3",
            "--duration",
            "30s",
            "--seed",
            SEED,
        ])
        .args(["--target", target, "--no-build"])
        .arg("--binary")
        .arg(binary)
        .arg("--data-dir")
        .arg(&data_dir)
        .output()
        .expect("run xtask chaos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "xtask chaos --target {target} failed ({}); member logs and history in {}",
        output.status,
        data_dir.display()
    );
    assert!(stdout.contains("PASS"), "no verdict printed");
}

#[test]
fn chaos_against_concord() {
    // Built by cargo in the same profile as xtask because the server crate has integration
    // tests (`cargo nextest run --workspace --release` builds every binary of the workspace).
    let concord = xtask().with_file_name("concord");
    assert!(
        concord.exists(),
        "{} is missing: build the workspace (cargo build --release -p concord-server)",
        concord.display()
    );
    chaos_run("concord", &concord);
}

#[test]
fn chaos_against_etcd() {
    let etcd = Path::new("/usr/bin/etcd");
    assert!(
        etcd.exists(),
        "{} is missing: apt-get install etcd-server",
        etcd.display()
    );
    chaos_run("etcd", etcd);
}
