//! Help text in etcdctl 3.4's own layout (NAME, USAGE, VERSION, API VERSION,
//! COMMANDS, DESCRIPTION, OPTIONS, GLOBAL OPTIONS), aligned with Go's
//! `text/tabwriter` as etcdctl configures it (tab padding, tab width 8,
//! padding 1).
//!
//! Command names, usage lines and descriptions are etcdctl's (the table
//! below); the flags come from the clap definitions in [`crate::cli`], printed
//! as pflag prints them: sorted by name, `--flag="string"`, `--flag=5s`,
//! `--bool[=false]`.
//!
//! ```
//! let text = concord_ctl::help::render(&["version"]).unwrap();
//! assert!(text.starts_with("NAME:\n\tversion - Prints the version of etcdctl\n"));
//! ```

use clap::CommandFactory as _;

/// What etcdctl's cobra commands say about themselves: (path, use, short, long).
const COMMANDS: &[(&str, &str, &str, &str)] = &[
    ("", "etcdctl", "A simple command line client for etcd3.", ""),
    (
        "get",
        "get [options] <key> [range_end]",
        "Gets the key or a range of keys",
        "",
    ),
    (
        "put",
        "put [options] <key> <value> (<value> can also be given from stdin)",
        "Puts the given key into the store",
        PUT_LONG,
    ),
    (
        "del",
        "del [options] <key> [range_end]",
        "Removes the specified key or range of keys [key, range_end)",
        "",
    ),
    (
        "txn",
        "txn [options]",
        "Txn processes all the requests in one transaction",
        "",
    ),
    (
        "compaction",
        "compaction [options] <revision>",
        "Compacts the event history in etcd",
        "",
    ),
    ("alarm", "alarm <subcommand>", "Alarm related commands", ""),
    ("alarm disarm", "disarm", "Disarms all alarms", ""),
    ("alarm list", "list", "Lists all alarms", ""),
    (
        "defrag",
        "defrag",
        "Defragments the storage of the etcd members with given endpoints",
        "",
    ),
    (
        "endpoint",
        "endpoint <subcommand>",
        "Endpoint related commands",
        "",
    ),
    (
        "endpoint health",
        "health",
        "Checks the healthiness of endpoints specified in `--endpoints` flag",
        "",
    ),
    (
        "endpoint status",
        "status",
        "Prints out the status of endpoints specified in `--endpoints` flag",
        "When --write-out is set to simple, this command prints out comma-separated status lists for each endpoint.\nThe items in the lists are endpoint, ID, version, db size, is leader, is learner, raft term, raft index, raft applied index, errors.\n",
    ),
    (
        "endpoint hashkv",
        "hashkv",
        "Prints the KV history hash for each endpoint in --endpoints",
        "",
    ),
    (
        "move-leader",
        "move-leader <transferee-member-id>",
        "Transfers leadership to another etcd cluster member.",
        "",
    ),
    (
        "watch",
        "watch [options] [key or prefix] [range_end] [--] [exec-command arg1 arg2 ...]",
        "Watches events stream on keys or prefixes",
        "",
    ),
    ("version", "version", "Prints the version of etcdctl", ""),
    ("lease", "lease <subcommand>", "Lease related commands", ""),
    ("lease grant", "grant <ttl>", "Creates leases", ""),
    ("lease revoke", "revoke <leaseID>", "Revokes leases", ""),
    (
        "lease timetolive",
        "timetolive <leaseID> [options]",
        "Get lease information",
        "",
    ),
    ("lease list", "list", "List all active leases", ""),
    (
        "lease keep-alive",
        "keep-alive [options] <leaseID>",
        "Keeps leases alive (renew)",
        "",
    ),
    (
        "member",
        "member <subcommand>",
        "Membership related commands",
        "",
    ),
    (
        "member add",
        "add <memberName> [options]",
        "Adds a member into the cluster",
        "",
    ),
    (
        "member remove",
        "remove <memberID>",
        "Removes a member from the cluster",
        "",
    ),
    (
        "member update",
        "update <memberID> [options]",
        "Updates a member in the cluster",
        "",
    ),
    (
        "member list",
        "list",
        "Lists all members in the cluster",
        "When --write-out is set to simple, this command prints out comma-separated member lists for each endpoint.\nThe items in the lists are ID, Status, Name, Peer Addrs, Client Addrs, Is Learner.\n",
    ),
    (
        "member promote",
        "promote <memberID>",
        "Promotes a non-voting member in the cluster",
        "Promotes a non-voting learner member to a voting one in the cluster.\n",
    ),
    (
        "snapshot",
        "snapshot <subcommand>",
        "Manages etcd node snapshots",
        "",
    ),
    (
        "snapshot save",
        "save <filename>",
        "Stores an etcd node backend snapshot to a given file",
        "",
    ),
    (
        "snapshot restore",
        "restore <filename> [options]",
        "Restores an etcd member snapshot to an etcd directory",
        "",
    ),
    (
        "snapshot status",
        "status <filename>",
        "Gets backend snapshot status of a given file",
        "When --write-out is set to simple, this command prints out comma-separated status lists for each endpoint.\nThe items in the lists are hash, revision, total keys, total size.\n",
    ),
    (
        "make-mirror",
        "make-mirror [options] <destination>",
        "Makes a mirror at the destination etcd cluster",
        "",
    ),
    (
        "migrate",
        "migrate",
        "Migrates keys in a v2 store to a mvcc store",
        "",
    ),
    (
        "lock",
        "lock <lockname> [exec-command arg1 arg2 ...]",
        "Acquires a named lock",
        "",
    ),
    (
        "elect",
        "elect <election-name> [proposal]",
        "Observes and participates in leader election",
        "",
    ),
    (
        "auth",
        "auth <enable or disable>",
        "Enable or disable authentication",
        "",
    ),
    ("auth enable", "enable", "Enables authentication", ""),
    ("auth disable", "disable", "Disables authentication", ""),
    ("user", "user <subcommand>", "User related commands", ""),
    (
        "user add",
        "add <user name or user:password> [options]",
        "Adds a new user",
        "",
    ),
    ("user delete", "delete <user name>", "Deletes a user", ""),
    (
        "user get",
        "get <user name> [options]",
        "Gets detailed information of a user",
        "",
    ),
    ("user list", "list", "Lists all users", ""),
    (
        "user passwd",
        "passwd <user name> [options]",
        "Changes password of user",
        "",
    ),
    (
        "user grant-role",
        "grant-role <user name> <role name>",
        "Grants a role to a user",
        "",
    ),
    (
        "user revoke-role",
        "revoke-role <user name> <role name>",
        "Revokes a role from a user",
        "",
    ),
    ("role", "role <subcommand>", "Role related commands", ""),
    ("role add", "add <role name>", "Adds a new role", ""),
    ("role delete", "delete <role name>", "Deletes a role", ""),
    (
        "role get",
        "get <role name>",
        "Gets detailed information of a role",
        "",
    ),
    ("role list", "list", "Lists all roles", ""),
    (
        "role grant-permission",
        "grant-permission [options] <role name> <permission type> <key> [endkey]",
        "Grants a key to a role",
        "",
    ),
    (
        "role revoke-permission",
        "revoke-permission <role name> <key> [endkey]",
        "Revokes a key from a role",
        "",
    ),
    (
        "check",
        "check <subcommand>",
        "commands for checking properties of the etcd cluster",
        "",
    ),
    (
        "check perf",
        "perf [options]",
        "Check the performance of the etcd cluster",
        "",
    ),
    (
        "check datascale",
        "datascale [options]",
        "Check the memory usage of holding data for different workloads on a given server endpoint.",
        "If no endpoint is provided, localhost will be used. If multiple endpoints are provided, first endpoint will be used.",
    ),
    (
        "help",
        "help [command]",
        "Help about any command",
        "Help provides help for any command in the application.\nSimply type etcdctl help [path to command] for full details.",
    ),
    (
        "completion",
        "completion",
        "Generate the autocompletion script for the specified shell",
        "Generate the autocompletion script for etcdctl for the specified shell.\nSee each sub-command's help for details on how to use the generated script.\n",
    ),
    (
        "completion bash",
        "bash",
        "Generate the autocompletion script for bash",
        COMPLETION_BASH_LONG,
    ),
    (
        "completion fish",
        "fish",
        "Generate the autocompletion script for fish",
        COMPLETION_FISH_LONG,
    ),
    (
        "completion powershell",
        "powershell",
        "Generate the autocompletion script for powershell",
        COMPLETION_POWERSHELL_LONG,
    ),
    (
        "completion zsh",
        "zsh",
        "Generate the autocompletion script for zsh",
        COMPLETION_ZSH_LONG,
    ),
];

const PUT_LONG: &str = "
Puts the given key into the store.

When <value> begins with '-', <value> is interpreted as a flag.
Insert '--' for workaround:

$ put <key> -- <value>
$ put -- <key> <value>

If <value> isn't given as a command line argument and '--ignore-value' is not specified,
this command tries to read the value from standard input.

If <lease> isn't given as a command line argument and '--ignore-lease' is not specified,
this command tries to read the value from standard input.

For example,
$ cat file | put <key>
will store the content of the file to <key>.
";

/// cobra's help for `completion bash` (the script concordctl writes is its own, see
/// [`crate::completion`]; how to load it is the same).
const COMPLETION_BASH_LONG: &str = "Generate the autocompletion script for the bash shell.

This script depends on the 'bash-completion' package.
If it is not installed already, you can install it via your OS's package manager.

To load completions in your current shell session:

\tsource <(etcdctl completion bash)

To load completions for every new session, execute once:

#### Linux:

\tetcdctl completion bash > /etc/bash_completion.d/etcdctl

#### macOS:

\tetcdctl completion bash > $(brew --prefix)/etc/bash_completion.d/etcdctl

You will need to start a new shell for this setup to take effect.
";

/// cobra's help for `completion zsh` (the script is concordctl's own, loaded the same way).
const COMPLETION_ZSH_LONG: &str = "Generate the autocompletion script for the zsh shell.

If shell completion is not already enabled in your environment you will need
to enable it.  You can execute the following once:

\techo \"autoload -U compinit; compinit\" >> ~/.zshrc

To load completions in your current shell session:

\tsource <(etcdctl completion zsh); compdef _etcdctl etcdctl

To load completions for every new session, execute once:

#### Linux:

\tetcdctl completion zsh > \"${fpath[1]}/_etcdctl\"

#### macOS:

\tetcdctl completion zsh > $(brew --prefix)/share/zsh/site-functions/_etcdctl

You will need to start a new shell for this setup to take effect.
";

/// cobra's help for `completion fish`.
const COMPLETION_FISH_LONG: &str = "Generate the autocompletion script for the fish shell.

To load completions in your current shell session:

\tetcdctl completion fish | source

To load completions for every new session, execute once:

\tetcdctl completion fish > ~/.config/fish/completions/etcdctl.fish

You will need to start a new shell for this setup to take effect.
";

/// cobra's help for `completion powershell`.
const COMPLETION_POWERSHELL_LONG: &str = "Generate the autocompletion script for powershell.

To load completions in your current shell session:

\tetcdctl completion powershell | Out-String | Invoke-Expression

To load completions for every new session, add the output of the above command
to your powershell profile.
";

/// Flags pflag prints without quotes (numbers, durations, lists).
const UNQUOTED: &[&str] = &[
    "rev",
    "limit",
    "ttl",
    "dial-timeout",
    "command-timeout",
    "keepalive-time",
    "keepalive-timeout",
    "endpoints",
];

fn entry(path: &str) -> Option<&'static (&'static str, &'static str, &'static str, &'static str)> {
    COMMANDS.iter().find(|c| c.0 == path)
}

/// The short description of the command at `path` (names spelled out in full).
pub fn short(path: &str) -> Option<&'static str> {
    entry(path).map(|c| c.2)
}

/// The paths of `path`'s subcommands, sorted by name as cobra sorts them.
pub fn children(path: &str) -> Vec<&'static str> {
    let mut kids: Vec<&'static str> = COMMANDS
        .iter()
        .map(|c| c.0)
        .filter(|p| {
            let rest = if path.is_empty() {
                Some(*p).filter(|p| !p.is_empty())
            } else {
                p.strip_prefix(path).and_then(|r| r.strip_prefix(' '))
            };
            rest.is_some_and(|r| !r.contains(' '))
        })
        .collect();
    kids.sort_unstable();
    kids
}

/// One flag line as etcdctl's `etcdFlagUsages` writes it.
struct Flag {
    name: String,
    line: String,
}

fn flag_line(arg: &clap::Arg) -> Option<Flag> {
    let name = arg.get_long()?.to_owned();
    if arg.is_hide_set() {
        return None;
    }
    let mut line = match arg.get_short() {
        Some(s) => format!("  -{s}, --{name}"),
        None => format!("      --{name}"),
    };
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    let is_bool = matches!(arg.get_action(), clap::ArgAction::SetTrue)
        || arg.get_num_args().is_some_and(|r| r.min_values() == 0);
    let default = if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
        "false".to_owned()
    } else if name == "endpoints" {
        format!("[{}]", defaults.join(","))
    } else {
        defaults.join(",")
    };
    if is_bool {
        line.push_str(&format!("[={default}]"));
    } else if UNQUOTED.contains(&name.as_str()) {
        line.push_str(&format!("={default}"));
    } else {
        line.push_str(&format!("={}", crate::gofmt::quote(default.as_bytes())));
    }
    let usage = arg.get_help().map(ToString::to_string).unwrap_or_default();
    line.push('\t');
    line.push_str(&usage);
    line.push('\n');
    Some(Flag { name, line })
}

fn flag_block(mut flags: Vec<Flag>) -> String {
    flags.sort_by(|a, b| a.name.cmp(&b.name));
    flags.into_iter().map(|f| f.line).collect()
}

fn own_flags(cmd: &clap::Command) -> Vec<Flag> {
    cmd.get_arguments()
        .filter(|a| !a.is_positional())
        .filter_map(flag_line)
        .collect()
}

/// etcdctl's help for the command at `path` (names spelled out in full), or
/// `None` if there is no such command.
pub fn render(path: &[&str]) -> Option<String> {
    let key = path.join(" ");
    let &(_, use_line, short, long) = entry(&key)?;
    let root = crate::cli::Cli::command();
    // Flags: the command's own (with cobra's -h), and those it inherits: the
    // root's, and a group's persistent ones (`endpoint --cluster`).
    let mut cmd = &root;
    let mut inherited = Vec::new();
    let mut defined = true;
    for name in path {
        let is_root = std::ptr::eq(cmd, &root);
        inherited.extend(
            own_flags(cmd)
                .into_iter()
                .filter(|f| is_root || is_global(cmd, &f.name)),
        );
        match cmd.find_subcommand(name) {
            Some(next) => cmd = next,
            // Commands cobra adds itself (`help`, `completion ...`).
            None => {
                defined = false;
                break;
            }
        }
    }
    let at_root = path.is_empty();
    let name = path.last().copied().unwrap_or("etcdctl");
    let mut local = if defined { own_flags(cmd) } else { Vec::new() };
    if path.len() == 2 && path[0] == "completion" {
        local.push(Flag {
            name: "no-descriptions".to_owned(),
            line: "      --no-descriptions[=false]\tdisable completion descriptions\n".to_owned(),
        });
    }
    local.push(Flag {
        name: "help".to_owned(),
        line: format!("  -h, --help[=false]\thelp for {name}\n"),
    });

    let parent_path = if path.len() > 1 {
        format!("etcdctl {}", path[..path.len() - 1].join(" "))
    } else {
        "etcdctl".to_owned()
    };
    let mut text = String::from("NAME:\n");
    if at_root {
        text.push_str(&format!("\tetcdctl - {short}\n"));
    } else {
        text.push_str(&format!("\t{key} - {short}\n"));
    }
    text.push_str("\nUSAGE:\n");
    let full_use = if at_root {
        use_line.to_owned()
    } else {
        format!("{parent_path} {use_line}")
    };
    // cobra's `completion bash` alone hides `[flags]` in its usage line.
    let no_flags = path == ["completion", "bash"];
    if no_flags || full_use.contains("[flags]") {
        text.push_str(&format!("\t{full_use}\n"));
    } else {
        text.push_str(&format!("\t{full_use} [flags]\n"));
    }
    if at_root {
        text.push_str(&format!(
            "\nVERSION:\n\t{}\n",
            crate::commands::ETCDCTL_COMPAT_VERSION
        ));
    }
    let kids = children(&key);
    if !kids.is_empty() {
        text.push_str(&format!(
            "\nAPI VERSION:\n\t{}\n",
            crate::commands::API_VERSION
        ));
        text.push_str("\n\nCOMMANDS:\n");
        let mut all = Vec::new();
        collect_runnable(&key, &mut all);
        for p in all {
            let rel = if key.is_empty() {
                p
            } else {
                &p[key.len() + 1..]
            };
            let short = entry(p).map_or("", |e| e.2);
            text.push_str(&format!("\t{rel}\t{short}\n"));
        }
    }
    if !long.is_empty() {
        text.push_str("\nDESCRIPTION:\n");
        for line in long.trim_matches(['\n', '\t', ' ']).split('\n') {
            text.push_str(&format!("\t{line}\n"));
        }
    }
    text.push_str("\nOPTIONS:\n");
    text.push_str(&flag_block(local));
    if !at_root {
        text.push_str("\nGLOBAL OPTIONS:\n");
        text.push_str(&flag_block(inherited));
    }
    text.push('\n');
    Some(tabwriter(&text))
}

fn is_global(cmd: &clap::Command, long: &str) -> bool {
    cmd.get_arguments()
        .any(|a| a.get_long() == Some(long) && a.is_global_set())
}

/// Every runnable command under `path` (groups themselves are not), depth
/// first in sorted order, as etcdctl's help lists them.
fn collect_runnable(path: &str, out: &mut Vec<&'static str>) {
    for kid in children(path) {
        if children(kid).is_empty() {
            out.push(kid);
        }
        collect_runnable(kid, out);
    }
}

/// Go's `text/tabwriter` with minwidth 0, tabwidth 8, padding 1, padchar
/// '\t' and no flags: cells are tab-terminated, a column's width is that of
/// its widest cell in a block of consecutive lines that have the column, plus
/// one, and cells are padded with tabs to it.
pub fn tabwriter(text: &str) -> String {
    let lines: Vec<Vec<&str>> = text.split('\n').map(|l| l.split('\t').collect()).collect();
    let mut out = String::new();
    let mut widths = Vec::new();
    format_block(&lines, 0, lines.len(), &mut widths, &mut out);
    // split('\n') yields one more (empty) line than there are newlines.
    if out.ends_with('\n') && !text.ends_with('\n') {
        out.pop();
    }
    out
}

const TAB_WIDTH: usize = 8;

fn format_block(
    lines: &[Vec<&str>],
    mut line0: usize,
    line1: usize,
    widths: &mut Vec<usize>,
    out: &mut String,
) {
    let column = widths.len();
    let mut this = line0;
    while this < line1 {
        if column + 1 >= lines[this].len() {
            this += 1;
            continue;
        }
        write_lines(lines, line0, this, widths, out);
        line0 = this;
        let mut width = 0;
        while this < line1 && column + 1 < lines[this].len() {
            width = width.max(lines[this][column].chars().count() + 1);
            this += 1;
        }
        widths.push(width);
        format_block(lines, line0, this, widths, out);
        widths.pop();
        line0 = this;
    }
    write_lines(lines, line0, line1, widths, out);
}

fn write_lines(lines: &[Vec<&str>], from: usize, to: usize, widths: &[usize], out: &mut String) {
    for (i, line) in lines.iter().enumerate().take(to).skip(from) {
        for (j, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if j < widths.len() && j + 1 < line.len() {
                let cell_width = widths[j].div_ceil(TAB_WIDTH) * TAB_WIDTH;
                let pad = cell_width - cell.chars().count();
                out.extend(std::iter::repeat_n('\t', pad.div_ceil(TAB_WIDTH)));
            }
        }
        if i + 1 < lines.len() {
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabwriter_pads_columns_with_tabs() {
        assert_eq!(
            tabwriter("\ta\tb\n\tlonger name\tc\n"),
            "\ta\t\tb\n\tlonger name\tc\n"
        );
        assert_eq!(tabwriter("x\ty\nplain\nz\tw\n"), "x\ty\nplain\nz\tw\n");
    }

    #[test]
    fn every_command_has_help() {
        for (path, ..) in COMMANDS {
            let parts: Vec<&str> = path.split(' ').filter(|p| !p.is_empty()).collect();
            assert!(render(&parts).is_some(), "{path}");
        }
    }
}
