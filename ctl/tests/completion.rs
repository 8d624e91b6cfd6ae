//! `concordctl completion bash`: the script, loaded into a real bash, completes command
//! names, subcommands and flags by asking concordctl itself (`__complete`), and leaves
//! the arguments of a command to bash's own (file name) completion.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::CONCORDCTL;
use std::process::Command;

/// What the loaded script offers for `words` (the last one under the cursor), one
/// candidate a line, and bash's `compopt` state as `default` when it falls back to file
/// names.
fn complete(words: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("concordctl.bash");
    let out = Command::new(CONCORDCTL)
        .args(["completion", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::write(&script, &out.stdout).unwrap();
    let bin_dir = std::path::Path::new(CONCORDCTL).parent().unwrap();
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'\n\
         COMP_WORDS=(concordctl {})\n\
         COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))\n\
         __concordctl_complete\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        quoted.join(" ")
    );
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn commands_and_subcommands_complete_by_prefix() {
    assert_eq!(complete(&["mem"]), "member\n");
    assert_eq!(
        complete(&["member", ""]),
        "add\nlist\npromote\nremove\nupdate\n"
    );
    assert_eq!(complete(&["lease", "re"]), "revoke\n");
    // Global flags and their values are stepped over.
    assert_eq!(
        complete(&["--endpoints", "127.0.0.1:2379", "--hex", "snap", ""]),
        "restore\nsave\nstatus\n"
    );
}

#[test]
fn flags_complete_for_the_command_at_hand() {
    assert_eq!(complete(&["get", "--pre"]), "--prefix\n");
    assert_eq!(complete(&["watch", "--prev"]), "--prev-kv\n");
    assert_eq!(complete(&["endpoint", "status", "--clu"]), "--cluster\n");
}

#[test]
fn arguments_are_left_to_bash() {
    // Nothing of concordctl's own: bash completes file names there.
    assert_eq!(complete(&["get", "some-key", ""]), "\n");
}

#[test]
fn only_bash_is_generated() {
    let out = Command::new(CONCORDCTL)
        .args(["completion", "zsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: concordctl generates the completion script for bash only, not for zsh\n"
    );
}
