//! Command-name resolution as etcdctl's CLI library (cobra, with prefix
//! matching turned on) does it, applied to the arguments before clap sees them.
//!
//! - A command or subcommand is named by its full name or by any prefix that
//!   only one of its siblings has (`compact 5`, `mem list`, `endp st`).
//! - A word that names no top-level command is an error, with cobra's
//!   "Did you mean this?" suggestions: siblings within Levenshtein distance 2,
//!   or that start with the word (so an ambiguous prefix lists its matches).
//! - A word that names no subcommand of a group (`member x`) is no error: the
//!   group runs, and a group without its own action prints its help.
//!
//! Words are found as cobra's `Find` finds them: flags are skipped, and a
//! `--flag` or `-f` without `=` that is not a known boolean flag takes the
//! next word as its value.
//!
//! ```
//! use concord_ctl::resolve::{resolve, Resolution};
//! let args = ["etcdctl", "mem", "l", "-w", "json"].map(Into::into).to_vec();
//! let Resolution::Run { args, path } = resolve(args) else { panic!() };
//! assert_eq!(args, ["etcdctl", "member", "list", "-w", "json"]);
//! assert_eq!(path, ["member", "list"]);
//! ```

use std::ffi::OsString;

/// One command of etcdctl 3.4's tree, in the order etcdctl registers them
/// (the order cobra lists suggestions in).
struct Node {
    name: &'static str,
    children: &'static [Node],
    /// Hidden from suggestions (cobra's own `help` command).
    unlisted: bool,
}

const fn leaf(name: &'static str) -> Node {
    Node {
        name,
        children: &[],
        unlisted: false,
    }
}

const fn group(name: &'static str, children: &'static [Node]) -> Node {
    Node {
        name,
        children,
        unlisted: false,
    }
}

/// etcdctl's commands (`ctlv3/ctl.go`), then the two cobra adds itself.
static ROOT: &[Node] = &[
    leaf("get"),
    leaf("put"),
    leaf("del"),
    leaf("txn"),
    leaf("compaction"),
    group("alarm", &[leaf("disarm"), leaf("list")]),
    leaf("defrag"),
    group(
        "endpoint",
        &[leaf("health"), leaf("status"), leaf("hashkv")],
    ),
    leaf("move-leader"),
    leaf("watch"),
    leaf("version"),
    group(
        "lease",
        &[
            leaf("grant"),
            leaf("revoke"),
            leaf("timetolive"),
            leaf("list"),
            leaf("keep-alive"),
        ],
    ),
    group(
        "member",
        &[
            leaf("add"),
            leaf("remove"),
            leaf("update"),
            leaf("list"),
            leaf("promote"),
        ],
    ),
    group("snapshot", &[leaf("save"), leaf("restore"), leaf("status")]),
    leaf("make-mirror"),
    leaf("migrate"),
    leaf("lock"),
    leaf("elect"),
    group("auth", &[leaf("enable"), leaf("disable")]),
    group(
        "user",
        &[
            leaf("add"),
            leaf("delete"),
            leaf("get"),
            leaf("list"),
            leaf("passwd"),
            leaf("grant-role"),
            leaf("revoke-role"),
        ],
    ),
    group(
        "role",
        &[
            leaf("add"),
            leaf("delete"),
            leaf("get"),
            leaf("list"),
            leaf("grant-permission"),
            leaf("revoke-permission"),
        ],
    ),
    group("check", &[leaf("perf"), leaf("datascale")]),
    Node {
        name: "help",
        children: &[],
        unlisted: true,
    },
    group(
        "completion",
        &[leaf("bash"), leaf("fish"), leaf("powershell"), leaf("zsh")],
    ),
];

/// Boolean flags (they never take the next word as a value) of the root and
/// of groups; `--cluster` is `endpoint`'s, inherited by its subcommands.
fn is_bool_flag(name: &str, path: &[&str]) -> bool {
    matches!(
        name,
        "debug" | "hex" | "insecure-transport" | "insecure-skip-tls-verify" | "insecure-discovery"
    ) || match path.first().copied() {
        Some("endpoint" | "defrag") => name == "cluster",
        Some("check") => matches!(name, "auto-compact" | "auto-defrag"),
        Some("migrate") => name == "no-ttl",
        _ => false,
    }
}

/// Commands without positional arguments: etcdctl ignores any it is given.
const IGNORE_ARGS: &[&[&str]] = &[
    &["version"],
    &["defrag"],
    &["migrate"],
    &["endpoint", "health"],
    &["endpoint", "status"],
    &["endpoint", "hashkv"],
    &["lease", "list"],
    &["member", "list"],
    &["check", "perf"],
    &["check", "datascale"],
];

/// Commands that refuse positional arguments, with etcdctl's words.
const REFUSE_ARGS: &[(&[&str], &str)] = &[
    (
        &["alarm", "disarm"],
        "alarm disarm command accepts no arguments",
    ),
    (
        &["alarm", "list"],
        "alarm list command accepts no arguments",
    ),
    (
        &["auth", "enable"],
        "auth enable command does not accept any arguments",
    ),
    (
        &["auth", "disable"],
        "auth disable command does not accept any arguments",
    ),
    (&["role", "list"], "role list command requires no arguments"),
    (&["user", "list"], "user list command requires no arguments"),
];

/// What to do with the command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Parse these arguments (command names spelled out in full); `path` is
    /// the command they name (empty for the root).
    Run {
        args: Vec<OsString>,
        path: Vec<&'static str>,
    },
    /// cobra's error for an unknown top-level command, without `Error: `.
    UnknownCommand(String),
    /// A command given arguments it refuses: etcdctl's message (exit code
    /// 128, after the flags have parsed).
    RefusedArgs {
        args: Vec<OsString>,
        path: Vec<&'static str>,
        message: &'static str,
    },
    /// A group given a word that names none of its subcommands: cobra runs
    /// the group, which prints its help (to stdout, exit 0).
    GroupHelp(Vec<&'static str>),
}

/// The positions (into `args`) of the words cobra's `stripFlags` keeps.
fn command_words(args: &[OsString], live: &[usize], path: &[&str]) -> Vec<usize> {
    let mut words = Vec::new();
    let mut i = 0;
    while i < live.len() {
        let s = args[live[i]].to_string_lossy();
        i += 1;
        if s == "--" {
            break;
        }
        let takes_value = if let Some(long) = s.strip_prefix("--") {
            !long.contains('=') && !is_bool_flag(long, path)
        } else {
            // Short flags: only `-w`, `-d` and `-h` exist above the leaves, and
            // cobra has not yet added `-h` when it resolves names.
            s.starts_with('-') && s.len() == 2
        };
        if takes_value {
            if live.len() - i <= 1 {
                break;
            }
            i += 1;
            continue;
        }
        if !s.is_empty() && !s.starts_with('-') {
            words.push(live[i - 1]);
        }
    }
    words
}

/// cobra's `findNext`: the exact name, else the only sibling with this prefix.
fn find<'a>(nodes: &'a [Node], word: &str) -> Option<&'a Node> {
    if let Some(n) = nodes.iter().find(|n| n.name == word) {
        return Some(n);
    }
    let mut matches = nodes.iter().filter(|n| n.name.starts_with(word));
    match (matches.next(), matches.next()) {
        (Some(n), None) => Some(n),
        _ => None,
    }
}

/// Levenshtein distance, ignoring case (cobra's `ld`).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + cost);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// cobra's "unknown command" error text for the root command.
pub fn unknown_command(word: &str) -> String {
    let lower = word.to_lowercase();
    let suggestions: Vec<&str> = ROOT
        .iter()
        .filter(|n| !n.unlisted)
        .filter(|n| distance(word, n.name) <= 2 || n.name.starts_with(&lower))
        .map(|n| n.name)
        .collect();
    let mut msg = format!("unknown command \"{word}\" for \"etcdctl\"");
    if !suggestions.is_empty() {
        msg.push_str("\n\nDid you mean this?\n");
        for s in suggestions {
            msg.push('\t');
            msg.push_str(s);
            msg.push('\n');
        }
    }
    msg
}

/// Spells out the command names in `args` (program name first) as cobra
/// would resolve them.
pub fn resolve(mut args: Vec<OsString>) -> Resolution {
    // cobra restarts its scan after each name it takes, with that name removed.
    let mut live: Vec<usize> = (1..args.len()).collect();
    let mut nodes = ROOT;
    let mut path: Vec<&'static str> = Vec::new();
    let mut help = false;
    loop {
        let words = command_words(&args, &live, &path);
        let Some(&at) = words.first() else {
            break;
        };
        let word = args[at].to_string_lossy().into_owned();
        let Some(node) = find(nodes, &word) else {
            if help {
                // cobra's help reports an unknown topic and shows the root's help.
                return Resolution::GroupHelp(Vec::new());
            }
            if path.is_empty() {
                return Resolution::UnknownCommand(unknown_command(&word));
            }
            return Resolution::GroupHelp(path);
        };
        args[at] = OsString::from(node.name);
        live.retain(|&i| i != at);
        path.push(node.name);
        if node.name == "help" && !help {
            // `help <command...>` finds its command from the root again.
            help = true;
            nodes = ROOT;
            path.clear();
            continue;
        }
        if node.children.is_empty() {
            break;
        }
        nodes = node.children;
    }
    if help {
        path.insert(0, "help");
    } else {
        let rest = command_words(&args, &live, &path);
        if IGNORE_ARGS.contains(&path.as_slice()) {
            let drop: std::collections::HashSet<usize> = rest.into_iter().collect();
            let args = args
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !drop.contains(i))
                .map(|(_, a)| a)
                .collect();
            return Resolution::Run { args, path };
        }
        if let Some((_, message)) = REFUSE_ARGS.iter().find(|(p, _)| *p == path.as_slice())
            && !rest.is_empty()
        {
            let drop: std::collections::HashSet<usize> = rest.into_iter().collect();
            let args = args
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !drop.contains(i))
                .map(|(_, a)| a)
                .collect();
            return Resolution::RefusedArgs {
                args,
                path,
                message,
            };
        }
    }
    Resolution::Run { args, path }
}

/// Whether the command at `path` is a group (or the root): cobra runs it
/// without an action of its own, which prints its help.
pub fn is_group(path: &[&str]) -> bool {
    let mut nodes = ROOT;
    for name in path {
        match nodes.iter().find(|n| n.name == *name) {
            Some(n) => nodes = n.children,
            None => return false,
        }
    }
    !nodes.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> Resolution {
        let args = std::iter::once("etcdctl")
            .chain(line.split_whitespace())
            .map(OsString::from)
            .collect();
        resolve(args)
    }

    fn spelled(line: &str) -> String {
        match run(line) {
            Resolution::Run { args, .. } => args[1..]
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" "),
            Resolution::UnknownCommand(m) => format!("unknown: {m}"),
            Resolution::GroupHelp(path) => format!("help: {}", path.join(" ")),
            Resolution::RefusedArgs { message, .. } => format!("refused: {message}"),
        }
    }

    #[test]
    fn unique_prefixes_resolve() {
        assert_eq!(spelled("compact 5"), "compaction 5");
        assert_eq!(spelled("mem list"), "member list");
        assert_eq!(spelled("endp st"), "endpoint status");
        assert_eq!(spelled("endp --cluster st"), "endpoint --cluster status");
        assert_eq!(spelled("le g 10"), "lease grant 10");
        assert_eq!(spelled("-w json g foo"), "-w json get foo");
        assert_eq!(spelled("--endpoints=x:1 pu k v"), "--endpoints=x:1 put k v");
        assert_eq!(spelled("--hex g k"), "--hex get k");
        assert_eq!(spelled("h g"), "help get");
        assert_eq!(spelled("help h"), "help help");
        // Arguments of a leaf are never touched.
        assert_eq!(spelled("get mem"), "get mem");
        assert_eq!(spelled("user get g"), "user get g");
        // etcdctl ignores arguments of commands that take none, or refuses them.
        assert_eq!(spelled("ver x"), "version");
        assert_eq!(spelled("mem l x -w json"), "member list -w json");
        assert_eq!(spelled("endp hashkv --rev 5 x"), "endpoint hashkv --rev 5");
        assert_eq!(
            spelled("alarm list x"),
            "refused: alarm list command accepts no arguments"
        );
    }

    #[test]
    fn flags_with_values_hide_the_next_word() {
        // `--endpoints member` is a flag and its value; `list` is the command.
        assert_eq!(
            spelled("--endpoints member list"),
            "unknown: unknown command \"list\" for \"etcdctl\""
        );
    }

    #[test]
    fn unknown_subcommands_are_left_for_the_group() {
        assert_eq!(spelled("member x"), "help: member");
        // Ambiguous at the second level: `user` has `get` and `grant-role`.
        assert_eq!(spelled("user g bob"), "help: user");
    }

    #[test]
    fn unknown_and_ambiguous_commands_list_suggestions() {
        assert_eq!(
            spelled("e"),
            "unknown: unknown command \"e\" for \"etcdctl\"\n\nDid you mean this?\n\tget\n\tdel\n\tendpoint\n\telect\n"
        );
        assert_eq!(
            spelled("comp 5"),
            "unknown: unknown command \"comp\" for \"etcdctl\"\n\nDid you mean this?\n\tcompaction\n\tcompletion\n"
        );
        assert_eq!(
            spelled("x"),
            "unknown: unknown command \"x\" for \"etcdctl\"\n\nDid you mean this?\n\ttxn\n"
        );
        assert_eq!(
            spelled("zzz"),
            "unknown: unknown command \"zzz\" for \"etcdctl\""
        );
    }

    #[test]
    fn levenshtein() {
        assert_eq!(distance("e", "get"), 2);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("ABC", "abc"), 0);
    }
}
