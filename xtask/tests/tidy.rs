//! The house rules of `DESIGN.md` hold for the checkout (`cargo xtask tidy`, run here as part of
//! the suite; each rule's own tests, which show it failing on a broken input, are in
//! `xtask/src/tidy.rs`).

use std::process::Command;

#[test]
fn house_rules_hold() {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("tidy")
        .output()
        .expect("run xtask tidy");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "xtask tidy found broken rules:\n{stderr}"
    );
    assert!(stdout.contains("every rule holds"), "{stdout}{stderr}");
}
