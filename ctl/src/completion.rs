//! Shell completion as etcdctl 3.4.23's cobra offers it: `completion <shell>` prints a
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
//! The shells are etcdctl's: bash, zsh, fish and powershell ([`Shell`]). Each script is
//! concordctl's own, written for that shell; all of them ask `__complete` and follow its
//! directive the same way (no file names when it says 4, the shell's own completion when
//! nothing fits otherwise).

use clap::CommandFactory as _;

/// cobra's `ShellCompDirectiveNoFileComp`: no file names when nothing fits.
const NO_FILE_COMP: u32 = 4;
/// cobra's `ShellCompDirectiveDefault`: the shell's own completion (file names).
const DEFAULT: u32 = 0;

/// What `__complete` (`descriptions`) or `__completeNoDesc` prints for these words: the
/// words after the program name, the last one being the word under the cursor (empty
/// when the cursor stands after a space).
pub fn complete(words: &[String], descriptions: bool) -> String {
    answer(words, descriptions).stdout()
}

/// cobra's whole answer to `__complete`: candidates and directive on stdout, its debug
/// notes and the directive by name on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// One candidate a line: `name`, or `name<TAB>description`.
    pub candidates: String,
    /// The bit set that tells the script what to do when nothing fits.
    pub directive: u32,
    /// cobra's `[Debug] [Error] ...` line, where it has one.
    pub note: String,
}

impl Answer {
    /// What goes to stdout: the candidates, then `:<directive>`.
    pub fn stdout(&self) -> String {
        format!("{}:{}\n", self.candidates, self.directive)
    }

    /// What goes to stderr: the note, then the directive by name.
    pub fn stderr(&self) -> String {
        const NAMES: [(u32, &str); 5] = [
            (1, "ShellCompDirectiveError"),
            (2, "ShellCompDirectiveNoSpace"),
            (4, "ShellCompDirectiveNoFileComp"),
            (8, "ShellCompDirectiveFilterFileExt"),
            (16, "ShellCompDirectiveFilterDirs"),
        ];
        let names: Vec<&str> = NAMES
            .iter()
            .filter(|(bit, _)| self.directive & bit != 0)
            .map(|(_, name)| *name)
            .collect();
        let names = if names.is_empty() {
            "ShellCompDirectiveDefault".to_owned()
        } else {
            names.join(", ")
        };
        format!("{}Completion ended with directive: {names}\n", self.note)
    }
}

/// Where the words before the cursor lead, as cobra's `Find` walks them.
struct Walk<'a> {
    /// The command path, names spelled out in full.
    path: Vec<&'static str>,
    /// The clap commands along it (shorter than `path + 1` under cobra's own commands,
    /// `help` and `completion`, which clap does not know).
    commands: Vec<&'a clap::Command>,
    /// Words that named no subcommand: the command's arguments.
    arguments: usize,
    /// The word before the cursor is a flag that takes it as its value.
    wants_value: bool,
    /// After `help`: the command path its words name, or `None` once one names nothing.
    help_target: Option<Option<Vec<&'static str>>>,
}

fn walk<'a>(root: &'a clap::Command, before: &[String]) -> Walk<'a> {
    let mut walk = Walk {
        path: Vec::new(),
        commands: vec![root],
        arguments: 0,
        wants_value: false,
        help_target: None,
    };
    for word in before {
        if walk.wants_value {
            walk.wants_value = false;
            continue;
        }
        if let Some(flag) = word.strip_prefix("--") {
            if !flag.contains('=') {
                walk.wants_value = takes_value(&walk.commands, |arg| arg.get_long() == Some(flag));
            }
            continue;
        }
        if let Some(flag) = word.strip_prefix('-') {
            // `-w json`; `-wjson` and `-w=json` carry their value.
            let mut letters = flag.chars();
            if let (Some(letter), None) = (letters.next(), letters.next()) {
                walk.wants_value =
                    takes_value(&walk.commands, |arg| arg.get_short() == Some(letter));
            }
            continue;
        }
        if let Some(target) = walk.help_target.as_mut() {
            // `help` names a command with its words.
            *target = target.take().and_then(|mut target| {
                let child = find_child(&target.join(" "), word)?;
                target.push(last_name(child));
                Some(target)
            });
            continue;
        }
        let child = if walk.arguments == 0 {
            find_child(&walk.path.join(" "), word)
        } else {
            None
        };
        let Some(child) = child else {
            walk.arguments += 1;
            continue;
        };
        let name = last_name(child);
        walk.path.push(name);
        if walk.commands.len() == walk.path.len()
            && let Some(next) = walk
                .commands
                .last()
                .and_then(|cmd| cmd.find_subcommand(name))
        {
            walk.commands.push(next);
        }
        if walk.path == ["help"] {
            walk.help_target = Some(Some(Vec::new()));
        }
    }
    walk
}

/// The last name of a command path (`member list` → `list`).
fn last_name(path: &'static str) -> &'static str {
    path.rsplit(' ').next().unwrap_or(path)
}

/// [`complete`]'s answer in parts.
pub fn answer(words: &[String], descriptions: bool) -> Answer {
    let (current, before) = match words.split_last() {
        Some((current, before)) => (current.as_str(), before),
        None => ("", &[][..]),
    };
    let root = crate::cli::Cli::command();
    let walk = walk(&root, before);
    let mut out = String::new();
    let mut line = |name: &str, description: &str| {
        out.push_str(name);
        if descriptions && !description.is_empty() {
            out.push('\t');
            out.push_str(description);
        }
        out.push('\n');
    };
    let mut note = String::new();
    let directive = if walk.path.is_empty() && walk.arguments > 0 {
        // cobra's root takes no arguments: a word that is no command ends it all.
        note = format!(
            "[Debug] [Error] Unable to find a command for arguments: [{}]\n",
            before.join(" ")
        );
        DEFAULT
    } else if walk.wants_value || (current.starts_with('-') && current.contains('=')) {
        // The value of a flag: whatever the shell offers (a file name, often).
        DEFAULT
    } else if current.starts_with('-') {
        for (flag, usage) in flags(&walk.path, &walk.commands) {
            if flag.starts_with(current) {
                line(&flag, &usage);
            }
        }
        NO_FILE_COMP
    } else if let Some(target) = &walk.help_target {
        // `help`'s argument is a command path.
        if let Some(target) = target {
            complete_children(&target.join(" "), current, &mut line);
        }
        NO_FILE_COMP
    } else if walk.path.first() == Some(&"completion") {
        // cobra's completion commands want no file names, and take no argument.
        if walk.path.len() == 1 && walk.arguments == 0 {
            complete_children("completion", current, &mut line);
        }
        NO_FILE_COMP
    } else if walk.arguments == 0 && !crate::help::children(&walk.path.join(" ")).is_empty() {
        complete_children(&walk.path.join(" "), current, &mut line);
        NO_FILE_COMP
    } else {
        // A command's arguments: keys, values, file names: the shell's own.
        DEFAULT
    };
    Answer {
        candidates: out,
        directive,
        note,
    }
}

/// Offers the subcommands of `path` that start with `current`, with their descriptions.
fn complete_children(path: &str, current: &str, line: &mut impl FnMut(&str, &str)) {
    for child in crate::help::children(path) {
        let name = last_name(child);
        if name.starts_with(current) {
            line(name, crate::help::short(child).unwrap_or_default());
        }
    }
}

/// The flags of the command at `path`, as cobra offers them: those it inherits (the
/// root's, and its groups' persistent ones), then its own (with cobra's `--help`, and
/// `--no-descriptions` on a completion script's command), each set in name order, a
/// shorthand right after its long name.
fn flags(path: &[&str], commands: &[&clap::Command]) -> Vec<(String, String)> {
    type Flag = (String, Option<char>, String);
    let usable = |arg: &clap::Arg| -> Option<Flag> {
        let long = arg
            .get_long()
            .filter(|_| !arg.is_hide_set() && !arg.is_positional())?;
        let usage = arg.get_help().map(ToString::to_string).unwrap_or_default();
        Some((long.to_owned(), arg.get_short(), usage))
    };
    let defined = commands.len() == path.len() + 1;
    let parents = if defined {
        &commands[..commands.len() - 1]
    } else {
        commands
    };
    let mut inherited: Vec<Flag> = Vec::new();
    for (depth, cmd) in parents.iter().enumerate() {
        let persistent = cmd
            .get_arguments()
            .filter(|arg| depth == 0 || arg.is_global_set());
        inherited.extend(persistent.filter_map(usable));
    }
    let mut own: Vec<Flag> = match commands.last() {
        Some(cmd) if defined => cmd.get_arguments().filter_map(usable).collect(),
        _ => Vec::new(),
    };
    let name = path.last().copied().unwrap_or("etcdctl");
    own.push(("help".to_owned(), Some('h'), format!("help for {name}")));
    if path.len() == 2 && path[0] == "completion" {
        own.push((
            "no-descriptions".to_owned(),
            None,
            "disable completion descriptions".to_owned(),
        ));
    }
    let mut listed = Vec::new();
    for mut set in [inherited, own] {
        set.sort_by(|a, b| a.0.cmp(&b.0));
        for (long, short, usage) in set {
            listed.push((format!("--{long}"), usage.clone()));
            if let Some(short) = short {
                listed.push((format!("-{short}"), usage));
            }
        }
    }
    listed
}

/// The subcommand of `path` that `word` names, in full or by a unique prefix (etcdctl
/// resolves prefixes).
fn find_child(path: &str, word: &str) -> Option<&'static str> {
    let children = crate::help::children(path);
    let name = |child: &&'static str| last_name(child);
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

/// Whether the flag that `is_flag` picks (given without `=value`) takes the next word as
/// its value.
fn takes_value(commands: &[&clap::Command], is_flag: impl Fn(&clap::Arg) -> bool) -> bool {
    commands
        .iter()
        .flat_map(|cmd| cmd.get_arguments())
        .find(|arg| is_flag(arg))
        .is_some_and(|arg| {
            !matches!(arg.get_action(), clap::ArgAction::SetTrue)
                && arg.get_num_args().is_none_or(|n| n.min_values() > 0)
        })
}

/// A shell etcdctl 3.4.23's `completion` command writes a script for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    PowerShell,
}

impl Shell {
    /// The shell that `completion <name>` names, as the subcommand is spelled.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "bash" => Some(Self::Bash),
            "zsh" => Some(Self::Zsh),
            "fish" => Some(Self::Fish),
            "powershell" => Some(Self::PowerShell),
            _ => None,
        }
    }
}

/// The completion script for `shell` that completes the program called `program` (the
/// name it was run as) by asking it through `__complete` (`__completeNoDesc` without
/// `descriptions`).
pub fn script(shell: Shell, program: &str, descriptions: bool) -> String {
    // The program's name as a shell function name.
    let identifier = program.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    let function = format!("__{identifier}_complete");
    let ask = if descriptions {
        "__complete"
    } else {
        "__completeNoDesc"
    };
    match shell {
        Shell::Bash => bash_script(program, &function, ask),
        // zsh's convention: `_program`, the name compdef and $fpath look for.
        Shell::Zsh => zsh_script(program, &format!("_{identifier}"), ask),
        Shell::Fish => fish_script(program, &function, ask),
        Shell::PowerShell => powershell_script(program, ask),
    }
}

/// bash shows no descriptions: the script keeps each candidate's name only.
fn bash_script(program: &str, function: &str, ask: &str) -> String {
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

/// zsh: candidates go to `_describe` (name and description side by side); where nothing
/// fits and the directive allows it, `_files`. The file is both sourceable and an
/// autoloadable `_program` function (`#compdef`).
fn zsh_script(program: &str, function: &str, ask: &str) -> String {
    format!(
        r#"#compdef {program}

# zsh completion for {program}                              -*- shell-script -*-
#
# Load it in the current shell with `source <({program} completion zsh); compdef {function} {program}`,
# or for every session by writing it to "${{fpath[1]}}/{function}".

{function}()
{{
    local request out directive line name
    local -a candidates nospace
    # The words up to the cursor, as typed: eval gives the program the arguments the
    # shell would. An empty last word (the cursor after a space) is passed as "".
    request="${{words[1]}} {ask} ${{words[2,CURRENT]}}"
    [[ -z ${{words[CURRENT]}} ]] && request+=' ""'
    out=$(eval "$request" 2>/dev/null) || return 1
    directive=${{out##*:}}
    [[ $directive == <-> ]] || directive=0
    (( directive & 1 )) && return 1
    for line in "${{(@f)${{out%:*}}}}"; do
        [[ -n $line ]] || continue
        # _describe ends a name at its first unescaped colon.
        name=${{${{line%%$'\t'*}}//:/\\:}}
        if [[ $line == *$'\t'* ]]; then
            candidates+=("$name:${{line#*$'\t'}}")
        else
            candidates+=("$name")
        fi
    done
    # The value of a --flag=value word: complete after the '='.
    [[ ${{words[CURRENT]}} == -*=* ]] && compset -P '*='
    (( directive & 2 )) && nospace=(-S '')
    if (( ${{#candidates}} )) && _describe -t commands '{program}' candidates "${{nospace[@]}}"; then
        return 0
    fi
    (( directive & {NO_FILE_COMP} )) && return 1
    _files
}}

# Autoloaded from $fpath the completion system runs this file as the function itself;
# sourced, it only defines the function.
if [[ $funcstack[1] == {function} ]]; then
    {function} "$@"
fi
"#
    )
}

/// fish: one `complete` rule whose condition asks the program and keeps its candidates
/// (fish shows each description beside its name); when the condition fails, fish
/// completes file names itself.
fn fish_script(program: &str, function: &str, ask: &str) -> String {
    format!(
        r#"# fish completion for {program}                              -*- shell-script -*-
#
# Load it in the current shell with `{program} completion fish | source`, or for every
# session by writing it to ~/.config/fish/completions/{program}.fish.

# Asks the program what fits the word under the cursor and keeps the candidates in
# ${function}_candidates. Fails where fish should complete file names instead.
function {function}
    set -g {function}_candidates
    set -l words (commandline -opc)
    set -l current (commandline -ct)
    set -l out ($words[1] {ask} $words[2..-1] "$current" 2>/dev/null)
    or return 1
    set -l directive 0
    if set -q out[1]; and string match -qr '^:[0-9]+$' -- $out[-1]
        set directive (string sub --start 2 -- $out[-1])
        set -e out[-1]
    end
    if test (math "floor($directive / 1) % 2") -eq 1
        return 1
    end
    # Candidates are already those that start with the word under the cursor.
    for line in $out
        string length -q -- $line
        and set -a {function}_candidates $line
    end
    set -q {function}_candidates[1]
    or test (math "floor($directive / {NO_FILE_COMP}) % 2") -eq 1
end

complete -c {program} -e
complete -c {program} -n {function} -f -a '${function}_candidates'
"#
    )
}

/// PowerShell: a native argument completer that turns each candidate into a
/// `CompletionResult` with its description as the tooltip; where nothing fits and the
/// directive allows it, PowerShell's own path completion.
fn powershell_script(program: &str, ask: &str) -> String {
    format!(
        r#"# powershell completion for {program}                              -*- shell-script -*-
#
# Load it in the current session with
#     {program} completion powershell | Out-String | Invoke-Expression
# or for every session by adding that output to your PowerShell profile.

Register-ArgumentCompleter -Native -CommandName '{program}' -ScriptBlock {{
    param($WordToComplete, $CommandAst, $CursorPosition)

    # The words before the cursor; the first is the program as it was typed.
    $words = @($CommandAst.CommandElements |
        Where-Object {{ $_.Extent.StartOffset -lt $CursorPosition }} |
        ForEach-Object {{ $_.Extent.Text }})
    $program = $words[0]
    $arguments = @($words | Select-Object -Skip 1)
    if ($WordToComplete -eq '') {{
        # The cursor after a space: an empty word. PowerShell before 7.3 (and its Legacy
        # argument passing) drops an empty argument to a native program; quoted, it stays.
        if ($PSVersionTable.PSVersion -lt [version]'7.3' -or $PSNativeCommandArgumentPassing -eq 'Legacy') {{
            $arguments += '""'
        }} else {{
            $arguments += ''
        }}
    }}
    $out = @(& $program {ask} @arguments 2>$null)
    if ($out.Count -eq 0) {{ return }}
    $directive = 0
    if ($out[-1] -match '^:([0-9]+)$') {{
        $directive = [int]$Matches[1]
        $out = @($out | Select-Object -First ($out.Count - 1))
    }}
    if (($directive -band 1) -ne 0) {{ return }}
    # Candidates are already those that start with the word under the cursor.
    $results = @(foreach ($line in $out) {{
        if ($line -eq '') {{ continue }}
        $name, $description = $line -split "`t", 2
        if (-not $description) {{ $description = $name }}
        [System.Management.Automation.CompletionResult]::new($name, $name, 'ParameterValue', $description)
    }})
    if ($results.Count -gt 0) {{ return $results }}
    # Nothing fits: an empty answer keeps PowerShell from offering file names.
    if (($directive -band {NO_FILE_COMP}) -ne 0) {{ return '' }}
}}
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
        // A short flag's value is stepped over too, and `--flag=value` is a value.
        assert_eq!(complete(&words("-w "), false), ":0\n");
        assert_eq!(complete(&words("-w json mem"), false), "member\n:4\n");
        assert_eq!(complete(&words("get --write-out="), true), ":0\n");
    }

    #[test]
    fn arguments_of_leaf_commands_are_the_shells() {
        assert_eq!(complete(&words("get foo "), true), ":0\n");
    }

    #[test]
    fn cobra_names_the_directive_on_stderr() {
        let answer = |directive| Answer {
            candidates: String::new(),
            directive,
            note: String::new(),
        };
        assert_eq!(
            answer(0).stderr(),
            "Completion ended with directive: ShellCompDirectiveDefault\n"
        );
        assert_eq!(
            answer(6).stderr(),
            "Completion ended with directive: ShellCompDirectiveNoSpace, ShellCompDirectiveNoFileComp\n"
        );
    }

    #[test]
    fn the_script_asks_the_program() {
        let script = script(Shell::Bash, "concordctl", true);
        assert!(script.contains("\"${COMP_WORDS[0]}\" __complete "));
        assert!(script.ends_with("complete -F __concordctl_complete concordctl\n"));
    }
}
