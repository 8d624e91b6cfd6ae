//! Shell completion as etcdctl 3.4.23's cobra offers it: `completion bash` prints a
//! script that asks the binary itself what fits the word under the cursor, through the
//! hidden `__complete` command (`__completeNoDesc` without descriptions). Its answer is
//! cobra's: one candidate a line (`name<TAB>description`), then `:<directive>`, a bit set
//! that tells the script what to do when nothing fits (4: no file names).
//!
//! ```
//! let answer = concord_ctl::completion::complete(&["lea".into()], true);
//! assert_eq!(answer, "lease\tLease related commands\n:4\n");
//! ```
//!
//! Only the bash script is generated: the other shells' commands refuse, saying so.

use clap::CommandFactory as _;

/// cobra's `ShellCompDirectiveNoFileComp`: no file names when nothing fits.
const NO_FILE_COMP: u32 = 4;
/// cobra's `ShellCompDirectiveDefault`: the shell's own completion (file names).
const DEFAULT: u32 = 0;

/// What `__complete` (`descriptions`) or `__completeNoDesc` prints for these words: the
/// words after the program name, the last one being the word under the cursor (empty
/// when the cursor stands after a space).
pub fn complete(words: &[String], descriptions: bool) -> String {
    let (current, before) = match words.split_last() {
        Some((current, before)) => (current.as_str(), before),
        None => ("", &[][..]),
    };
    let root = crate::cli::Cli::command();
    let mut path: Vec<&'static str> = Vec::new();
    let mut commands = vec![&root];
    let mut skip_value = false;
    for word in before {
        if skip_value {
            skip_value = false;
            continue;
        }
        if let Some(flag) = word.strip_prefix("--") {
            if !flag.contains('=') {
                skip_value = takes_value(&commands, flag);
            }
            continue;
        }
        if word.starts_with('-') {
            continue;
        }
        let here = path.join(" ");
        let Some(child) = find_child(&here, word) else {
            // An argument of a command that takes no subcommand.
            continue;
        };
        let name = child.rsplit(' ').next().unwrap_or(child);
        path.push(name);
        if let Some(next) = commands.last().and_then(|cmd| cmd.find_subcommand(name)) {
            commands.push(next);
        }
    }
    let mut out = String::new();
    let mut line = |name: &str, description: &str| {
        out.push_str(name);
        if descriptions && !description.is_empty() {
            out.push('\t');
            out.push_str(description);
        }
        out.push('\n');
    };
    let directive = if skip_value {
        // The value of a flag: whatever the shell offers (a file name, often).
        DEFAULT
    } else if current.starts_with('-') {
        let mut flags: Vec<(String, String)> = Vec::new();
        for cmd in &commands {
            for arg in cmd.get_arguments() {
                if let Some(long) = arg.get_long()
                    && !arg.is_hide_set()
                {
                    let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                    flags.push((format!("--{long}"), help));
                }
            }
        }
        let name = path.last().copied().unwrap_or("etcdctl");
        flags.push(("--help".to_owned(), format!("help for {name}")));
        flags.sort();
        flags.dedup_by(|a, b| a.0 == b.0);
        for (flag, help) in flags.iter().filter(|(flag, _)| flag.starts_with(current)) {
            line(flag, help);
        }
        NO_FILE_COMP
    } else {
        let here = path.join(" ");
        let children = crate::help::children(&here);
        if children.is_empty() {
            DEFAULT
        } else {
            for child in children {
                let name = child.rsplit(' ').next().unwrap_or(child);
                if name.starts_with(current) {
                    line(name, crate::help::short(child).unwrap_or_default());
                }
            }
            NO_FILE_COMP
        }
    };
    out.push_str(&format!(":{directive}\n"));
    out
}

/// The subcommand of `path` that `word` names, in full or by a unique prefix (etcdctl
/// resolves prefixes).
fn find_child(path: &str, word: &str) -> Option<&'static str> {
    let children = crate::help::children(path);
    let name = |child: &&'static str| child.rsplit(' ').next().unwrap_or(child);
    if let Some(exact) = children.iter().find(|child| name(child) == word) {
        return Some(exact);
    }
    let mut matches = children
        .iter()
        .filter(|child| name(child).starts_with(word));
    match (matches.next(), matches.next()) {
        (Some(only), None) if !word.is_empty() => Some(only),
        _ => None,
    }
}

/// Whether `--flag` (given without `=value`) takes the next word as its value.
fn takes_value(commands: &[&clap::Command], flag: &str) -> bool {
    commands
        .iter()
        .flat_map(|cmd| cmd.get_arguments())
        .find(|arg| arg.get_long() == Some(flag))
        .is_some_and(|arg| {
            !matches!(arg.get_action(), clap::ArgAction::SetTrue)
                && arg.get_num_args().is_none_or(|n| n.min_values() > 0)
        })
}

/// The bash completion script for the program called `program`: it completes the
/// program's words with what `program __complete` answers, and falls back to file names
/// where cobra's directive allows them.
pub fn bash_script(program: &str, descriptions: bool) -> String {
    let function = format!(
        "__{}_complete",
        program.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    let ask = if descriptions {
        "__complete"
    } else {
        "__completeNoDesc"
    };
    // bash shows no descriptions: the script keeps each candidate's name only.
    format!(
        r#"# bash completion for {program}                          -*- shell-script -*-
#
# Load it in the current shell with `source <({program} completion bash)`, or for every
# session by writing it to /etc/bash_completion.d/{program}.

{function}()
{{
    local cur="${{COMP_WORDS[COMP_CWORD]}}"
    local out directive candidate
    out=$("${{COMP_WORDS[0]}}" {ask} "${{COMP_WORDS[@]:1:COMP_CWORD-1}}" "$cur" 2>/dev/null) || return
    directive=${{out##*:}}
    out=${{out%:*}}
    COMPREPLY=()
    while IFS='' read -r candidate; do
        candidate=${{candidate%%$'\t'*}}
        [[ -n $candidate ]] && COMPREPLY+=("$candidate")
    done <<< "$out"
    if (( ${{#COMPREPLY[@]}} == 0 )) && (( (directive & {NO_FILE_COMP}) == 0 )); then
        compopt -o default 2>/dev/null
    fi
}}

complete -F {function} {program}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn commands_complete_by_prefix_with_descriptions() {
        assert_eq!(
            complete(&words("mem"), true),
            "member\tMembership related commands\n:4\n"
        );
        assert_eq!(
            complete(&words("member "), false),
            "add\nlist\npromote\nremove\nupdate\n:4\n"
        );
    }

    #[test]
    fn flags_and_their_values() {
        let got = complete(&words("get --pre"), true);
        assert_eq!(got, "--prefix\tGet keys with matching prefix\n:4\n");
        // Global flags, whatever the command.
        assert!(complete(&words("put --endp"), false).starts_with("--endpoints\n"));
        // The word after a flag that takes a value is that value: the shell's own.
        assert_eq!(complete(&words("--cacert "), false), ":0\n");
        // ... and a command after it is still found.
        assert_eq!(
            complete(&words("--cacert /x lease rev"), false),
            "revoke\n:4\n"
        );
    }

    #[test]
    fn arguments_of_leaf_commands_are_the_shells() {
        assert_eq!(complete(&words("get foo "), true), ":0\n");
    }

    #[test]
    fn the_script_asks_the_program() {
        let script = bash_script("concordctl", true);
        assert!(script.contains("\"${COMP_WORDS[0]}\" __complete "));
        assert!(script.ends_with("complete -F __concordctl_complete concordctl\n"));
    }
}
