//! `concordctl completion bash|zsh|fish|powershell`: each script, loaded into the real
//! shell (bash, zsh and fish; PowerShell is not packaged for Debian), completes command
//! names, subcommands and flags by asking concordctl itself (`__complete`), and leaves the
//! arguments of a command to the shell's own (file name) completion. `__complete` itself
//! answers as etcdctl's does, byte for byte.

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

/// The path of an installed shell, or a panic that names the package to install.
fn shell(name: &str) -> &'static str {
    let path: &'static str = match name {
        "zsh" => "/usr/bin/zsh",
        _ => "/usr/bin/fish",
    };
    assert!(
        std::path::Path::new(path).exists(),
        "{name} is not installed: run `apt-get install {name}` (`cargo xtask test` installs it)"
    );
    path
}

/// `concordctl completion <shell>` written to a file in `dir`.
fn script_file(dir: &std::path::Path, shell: &str) -> std::path::PathBuf {
    let out = Command::new(CONCORDCTL)
        .args(["completion", shell])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    let file = dir.join(format!("concordctl.{shell}"));
    std::fs::write(&file, &out.stdout).unwrap();
    file
}

/// PATH with concordctl's directory first, so that the scripts find it by name.
fn path_with_concordctl() -> String {
    let bin_dir = std::path::Path::new(CONCORDCTL).parent().unwrap();
    format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Drives an interactive zsh in a pseudo-terminal (zsh's own zpty module): loads
/// compinit and the script, records every match the completion system adds (as
/// `<name>` or `<name><display line>`), presses TAB after `line`, and prints the
/// records. Each step waits for a marker the shell prints, never for time.
const ZSH_DRIVER: &str = r#"
zmodload zsh/zpty || exit 2
zpty shell zsh -f -i
zpty -w shell 'PS1= RPS1=; autoload -Uz compinit; compinit -u -D'
zpty -w shell "source ${(q)1}; compdef _concordctl concordctl"
zpty -w shell 'compadd() {
  if (( ${@[(I)-[OAD]]} )); then builtin compadd "$@"; return; fi
  local -a added shown; builtin compadd -A added "$@"
  local at=${@[(i)-d]}; (( at < $# )) && shown=("${(@P)${@[at+1]}}")
  local i; for i in {1..$#added}; do print -r -- "MATCH<${added[i]}>${shown[i]:+<${shown[i]}>}"; done
  builtin compadd "$@"
}'
zpty -w shell 'comppostfuncs=(__matches_done); __matches_done() { print -r -- MATCHES-DONE; exit }'
zpty -w shell 'zstyle ":completion:*" menu no; print -r -- READY-READY'
zpty -r shell out '*READY-READY*READY-READY*' || exit 3
zpty -w -n shell "$2"$'\t'
while zpty -r shell out; do
  case $out in
    *MATCHES-DONE*) break;;
    *MATCH\<*) print -r -- "${${out#*MATCH}%%$'\r'*}";;
  esac
done
zpty -d shell
"#;

/// What zsh's completion system offers for `line` followed by TAB, one match a line.
fn zsh_complete(line: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let script = script_file(dir.path(), "zsh");
    let driver = dir.path().join("driver.zsh");
    std::fs::write(&driver, ZSH_DRIVER).unwrap();
    let args = [driver.as_os_str(), script.as_os_str(), line.as_ref()];
    run_shell("zsh", "-f", &args, dir.path())
}

/// Runs the shell `name` with `option` and `args` in `dir`, concordctl on its PATH, and
/// returns what it printed.
fn run_shell(name: &str, option: &str, args: &[&std::ffi::OsStr], dir: &std::path::Path) -> String {
    let out = Command::new(shell(name))
        .arg(option)
        .args(args)
        .current_dir(dir)
        .env("PATH", path_with_concordctl())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// What fish offers for `line` (`complete --do-complete`: fish's own completion, run
/// without a terminal), one `name<TAB>description` a line.
fn fish_complete(line: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let script = script_file(dir.path(), "fish");
    std::fs::create_dir(dir.path().join("some-dir")).unwrap();
    let program = format!(
        "source {}; complete --do-complete {}",
        script.display(),
        fish_quote(line)
    );
    run_shell(
        "fish",
        "--no-config",
        &["-c".as_ref(), program.as_ref()],
        dir.path(),
    )
}

fn fish_quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[test]
fn zsh_completes_commands_with_descriptions() {
    assert_eq!(
        zsh_complete("concordctl mem"),
        "<member><member  -- Membership related commands>\n"
    );
    assert_eq!(
        zsh_complete("concordctl --hex lease re"),
        "<revoke><revoke  -- Revokes leases>\n"
    );
    let flags = zsh_complete("concordctl watch --prev");
    assert_eq!(
        flags,
        "<--prev-kv><--prev-kv  -- get the previous key-value pair before the event happens>\n"
    );
}

#[test]
fn zsh_leaves_arguments_to_file_completion() {
    // `get <key>` has nothing of concordctl's: zsh's _files offers the files of the
    // directory the shell runs in (the script's own among them).
    assert_eq!(
        zsh_complete("concordctl get key concordctl.z"),
        "<concordctl.zsh>\n"
    );
    // A flag's value after '=' too.
    assert_eq!(
        zsh_complete("concordctl --cacert=concordctl.z"),
        "<concordctl.zsh>\n"
    );
}

#[test]
fn fish_completes_commands_with_descriptions() {
    assert_eq!(
        fish_complete("concordctl mem"),
        "member\tMembership related commands\n"
    );
    assert_eq!(
        fish_complete("concordctl member "),
        "add\tAdds a member into the cluster\n\
         list\tLists all members in the cluster\n\
         promote\tPromotes a non-voting member in the cluster\n\
         remove\tRemoves a member from the cluster\n\
         update\tUpdates a member in the cluster\n"
    );
    assert_eq!(
        fish_complete("concordctl endpoint status --clu"),
        "--cluster\tuse all endpoints from the cluster member list\n"
    );
}

#[test]
fn fish_leaves_arguments_to_file_completion() {
    assert_eq!(fish_complete("concordctl get key some-"), "some-dir/\n");
}

/// Each shell etcdctl 3.4.23 writes a script for; every script asks concordctl by the
/// name it was run as, through `__complete` (`__completeNoDesc` with
/// `--no-descriptions`).
#[test]
fn every_shell_of_etcdctl_has_a_script() {
    for shell in ["bash", "zsh", "fish", "powershell"] {
        for (flag, ask) in [
            (None, "__complete "),
            (Some("--no-descriptions"), "__completeNoDesc "),
        ] {
            let mut cmd = Command::new(CONCORDCTL);
            cmd.args(["completion", shell]);
            cmd.args(flag);
            let out = cmd.output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{shell}: {out:?}");
            let script = String::from_utf8(out.stdout).unwrap();
            assert!(script.contains(ask), "{shell} {flag:?}:\n{script}");
            assert!(script.contains("concordctl"), "{shell}");
        }
    }
}

/// `__complete`'s answer and its stderr lines are etcdctl's, for commands, flags (in
/// cobra's order: inherited, then the command's own), flag values, arguments, `help`'s
/// command paths, cobra's own commands and words that name no command.
#[test]
fn complete_answers_as_etcdctl_does() {
    common::require_reference_tools();
    let etcdctl = concord_tests::etcdctl();
    let cases: &[&[&str]] = &[
        &[""],
        &["mem"],
        &["member", ""],
        &["get", "--pre"],
        &["get", "--write-out="],
        &["-w", ""],
        &["--cacert", ""],
        &["--cacert", "/x", "lease", "rev"],
        &["get", "foo", ""],
        &["snapshot", "s"],
        &["endpoint", "status", "--clu"],
        &["completion", ""],
        &["help", "mem"],
        &["help", "member", "-"],
        &["--debug", "ge"],
        &["get", "-"],
        &["endpoint", "status", "-"],
        &["completion", "bash", "--"],
        &["completion", "x", ""],
        &["member", "x", ""],
        &["x", "y", ""],
        &["get", "-w", "json", ""],
    ];
    for words in cases {
        let ours = Command::new(CONCORDCTL)
            .arg("__complete")
            .args(*words)
            .output()
            .unwrap();
        let theirs = Command::new(&etcdctl)
            .arg("__complete")
            .args(*words)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&theirs.stdout),
            "stdout of __complete {words:?}"
        );
        assert_eq!(
            String::from_utf8_lossy(&ours.stderr),
            String::from_utf8_lossy(&theirs.stderr),
            "stderr of __complete {words:?}"
        );
        assert_eq!(ours.status.code(), theirs.status.code(), "{words:?}");
    }
}
