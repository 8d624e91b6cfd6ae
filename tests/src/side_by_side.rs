//! Side by side: the same scripted ctl session runs against one fresh Concord member and
//! one fresh member of Debian's etcd 3.4.23 (the oracle), and the two transcripts are
//! compared step by step after masking what legitimately differs.
//!
//! ```no_run
//! use concord_tests::side_by_side::{Ctl, Script, check};
//! let script = Script::parse("demo", "$ put foo bar\n$ get foo -w json\n").unwrap();
//! check(&script, Ctl::Etcdctl); // panics with a line diff of the first differing steps
//! ```
//!
//! # Scripts
//!
//! A script is data: a text file under `tests/scripts/` (see [`Script::load`]), one
//! command per line.
//!
//! ```text
//! # a comment; blank lines are ignored
//! % server-arg --auto-compaction-retention=0   (before the first step: a flag both servers get)
//! % tls                         (before the first step) both servers serve clients over TLS
//! % tls client-cert-auth        ... and require a client certificate signed by the CA
//! $ put foo bar                 a step: the ctl's arguments, split like a POSIX shell
//!                               (single and double quotes, backslash); leading NAME=value
//!                               words set environment variables (ETCDCTL_API=3 by default)
//! < value("foo") = "bar"        the step's standard input, one `<` line per line
//! <                             (`<` alone is an empty line)
//! ! stdin-repeat 1600000 x      standard input of that many copies of one character
//! ! end-with-put a             for commands that do not end (a watch from a `--rev`): the
//!                               harness puts key `a` with a marker value just before the
//!                               ctl starts, and stops the ctl once the marker's event is
//!                               printed. Events come in revision order, so everything up to
//!                               the marker (and any event that should not be there) is in
//!                               the transcript, and nothing depends on how long output takes.
//! ! stdin-open                  keep stdin open until the step ends (`watch -i`)
//! ! ctl etcdctl                 run this step with the real etcdctl even in a concordctl run
//! ! no-endpoints                run the ctl without the harness's `--endpoints` (the step
//!                               gives its own, sets `ETCDCTL_ENDPOINTS`, or wants the default)
//! ! expect Error: x\n           every transcript of this step (stdout, stderr and status,
//!                               masked, as `SIDE_BY_SIDE_DUMP` shows them) contains this text
//!                               (`\n` is a newline): two equally broken runs must not agree
//! ! expect-stdout-bytes 5000000 ... and its stdout is at least this long
//! ! known-difference #15 why    Concord differs here; the issue that owns it, and why
//! ! known-difference with concordctl #18 why
//!                               the same, seen only when concordctl drives (etcdctl hides it)
//! ! concordctl-gap #14 why      concordctl differs from etcdctl here (concordctl runs only)
//! ! background holder           start the step and go on with the next ones; the step's
//!                               output and exit status are recorded where an `&` line
//!                               ends it (below)
//! ! until-stdout TEXT           a background step: go on only once its stdout shows TEXT
//!                               (`\n` is a newline); a foreground step: run it again until
//!                               its stdout shows TEXT (both with a deadline)
//! & interrupt holder            send SIGINT to a background step, wait for it to exit, and
//!                               record its output and status here
//! & kill holder                 the same with SIGKILL (its session lease is then left to
//!                               expire)
//! & wait holder                 wait for a background step to exit by itself, and record it
//! & await holder TEXT           wait until a background step's stdout shows TEXT (it goes
//!                               on running; `\n` is a newline)
//! ```
//!
//! Every background step must be ended by an `&` line; each wait has a deadline and no
//! step waits for time to pass: a background step that must be doing something before the
//! script goes on says what it prints then (`until-stdout`), and the state a step must
//! see is polled for (`until-stdout` on a foreground step), never slept for.
//!
//! Variables, expanded in arguments, environment values and standard input with each
//! server's own value (`$$` is a plain `$`):
//! `$LEASE_1`, `$LEASE_2`, ... are the lease ids that `lease grant` steps printed, in order
//! (hex, as etcdctl takes them), `$ADDED_1`, `$ADDED_2`, ... the ids of the members that
//! `member add` steps added (hex), `$MEMBER_ID` is the member's id (hex), `$PEER_URL` its
//! peer URL, `$ENDPOINT` its client address (`127.0.0.1:port`) and `$URL` its client URL
//! (`http://` or, with `% tls`, `https://`), and `$DIR` is an empty directory of the run's
//! own. With `% tls`: `$CA`, `$CERT` and `$KEY` are the CA and the client certificate and
//! key (PEM files), and the harness's `--endpoints` is `$ENDPOINT`: a step gives the ctl
//! what TLS flags it wants.
//!
//! # What is compared
//!
//! Every step's stdout, stderr and exit status, run with the real `etcdctl` (or with
//! `concordctl`, see [`Ctl`]) against both servers. With the real etcdctl the comparison is
//! strict: a step that differs fails the test unless the script marks it
//! `known-difference`, and a marked step that no longer differs fails too (remove the mark).
//! A concordctl run also compares concordctl's transcripts with the real etcdctl's against
//! etcd, where `concordctl-gap` marks what concordctl still lacks (issue 14).
//!
//! Set `SIDE_BY_SIDE_DUMP=<dir>` to have every run write its masked transcript there.
//!
//! # What is masked
//!
//! Only what [`MASKERS`] lists, each by name, field or pattern; no line is dropped. Each
//! server's ids, ports and directories are masked as exact values, learned from the server
//! itself. Revisions are not masked: a fresh member given the same script must reach the
//! same revisions. Comparing concordctl with etcdctl (never one server with the other)
//! also applies [`CTL_MASKERS`], whose one rule leaves out the log lines of etcdctl's Go
//! client library, as the ctl parity tests do.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::tls::TlsFiles;
use crate::{concord_binary, concordctl_binary, etcd, etcdctl, free_port};

/// Which ctl binary runs a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ctl {
    /// Debian's `etcdctl` 3.4.23.
    Etcdctl,
    /// Our `concordctl`.
    Concordctl,
}

/// What `end-with-put` writes, followed by the step's line number: each step's marker is
/// its own, so a watch whose history holds an earlier step's marker does not stop there
/// (it would stop while its own event was half printed).
pub const END_MARKER: &str = "side-by-side-end";

/// The value a step's `end-with-put` writes.
fn end_marker(step: &Step) -> String {
    let line = step.origin.rsplit(':').next().unwrap_or_default();
    format!("{END_MARKER}-{line}")
}

/// Whether a ctl's stdout shows `marker`'s event: as a line of its own (simple format),
/// quoted (fields), or quoted in base64 (json).
fn shows_end_marker(stdout: &[u8], marker: &str) -> bool {
    use base64::Engine as _;
    let text = String::from_utf8_lossy(stdout);
    let base64 = base64::engine::general_purpose::STANDARD.encode(marker);
    text.lines().any(|line| line == marker)
        || text.contains(&format!("\"{marker}\""))
        || text.contains(&format!("\"{base64}\""))
}

impl Ctl {
    pub fn binary(self) -> PathBuf {
        match self {
            Ctl::Etcdctl => etcdctl(),
            Ctl::Concordctl => concordctl_binary(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Ctl::Etcdctl => "etcdctl",
            Ctl::Concordctl => "concordctl",
        }
    }
}

/// A difference the script knows about, with the issue that owns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    pub issue: u32,
    pub reason: String,
    /// The mark holds only in runs with this ctl.
    pub only_with: Option<Ctl>,
}

/// One ctl invocation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Where the step is written (`file:line`).
    pub origin: String,
    /// The step as written, for messages.
    pub text: String,
    /// Arguments after `--endpoints`, before variable expansion.
    pub args: Vec<String>,
    /// Environment set for this step (over `ETCDCTL_API=3`).
    pub env: Vec<(String, String)>,
    pub stdin: Option<String>,
    /// Keep stdin open until the step ends (interactive commands end at its end).
    pub stdin_open: bool,
    /// A ctl this step always runs with, whatever the run's ctl.
    pub ctl: Option<Ctl>,
    /// Put this key with [`END_MARKER`] when the ctl starts, and stop the ctl once the
    /// marker is printed (watches that do not end).
    pub end_with_put: Option<String>,
    pub known_difference: Option<Mark>,
    pub concordctl_gap: Option<Mark>,
    /// Run without the harness's `--endpoints`.
    pub no_endpoints: bool,
    /// Texts every transcript of this step contains.
    pub expects: Vec<String>,
    /// The least length of the step's stdout, in bytes.
    pub expect_stdout_bytes: Option<usize>,
    /// Run in the background under this name, until an `&` line ends it.
    pub background: Option<String>,
    /// What the step's stdout must show before the script goes on.
    pub until_stdout: Option<String>,
    /// An `&` line: what it does to which background step. Its `args` are that step's,
    /// so its output is masked as the command's.
    pub control: Option<Control>,
}

/// What an `&` line does to a background step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    /// SIGINT, then wait for the exit.
    Interrupt(String),
    /// SIGKILL, then wait for the exit.
    Kill(String),
    /// Wait for the exit.
    Wait(String),
    /// Wait until the stdout shows this text; the step goes on running.
    AwaitStdout(String, String),
}

impl Control {
    /// Whether the step ends the background step it names.
    pub fn ends(&self) -> bool {
        !matches!(self, Control::AwaitStdout(..))
    }

    pub fn name(&self) -> &str {
        match self {
            Control::Interrupt(name)
            | Control::Kill(name)
            | Control::Wait(name)
            | Control::AwaitStdout(name, _) => name,
        }
    }
}

impl Step {
    /// The `-w`/`--write-out` format the step asks for (`simple` by default).
    pub fn output_format(&self) -> &str {
        let mut format = "simple";
        let mut args = self.args.iter();
        while let Some(arg) = args.next() {
            if arg == "-w" || arg == "--write-out" {
                if let Some(value) = args.next() {
                    format = value;
                }
            } else if let Some(value) = arg
                .strip_prefix("--write-out=")
                .or_else(|| arg.strip_prefix("-w="))
            {
                format = value;
            } else if let Some(value) = arg.strip_prefix("-w")
                && !value.is_empty()
            {
                format = value;
            }
        }
        format
    }

    /// Whether the step's command starts with these words (`["endpoint", "status"]`), or
    /// with unique prefixes of them as etcdctl resolves them (`endp st`). The values of
    /// global flags given as separate words (`--cacert FILE`) are not words of the command.
    pub fn is_command(&self, words: &[&str]) -> bool {
        const TAKE_A_VALUE: &[&str] = &[
            "--cacert",
            "--cert",
            "--key",
            "--endpoints",
            "--user",
            "--password",
            "--command-timeout",
            "--dial-timeout",
            "--keepalive-time",
            "--keepalive-timeout",
            "--discovery-srv",
            "-d",
            "--discovery-srv-name",
            "-w",
            "--write-out",
        ];
        let mut positional = Vec::new();
        let mut args = self.args.iter().map(String::as_str);
        while let Some(arg) = args.next() {
            if TAKE_A_VALUE.contains(&arg) {
                args.next();
            } else if !arg.starts_with('-') {
                positional.push(arg);
            }
        }
        positional.len() >= words.len()
            && positional
                .iter()
                .zip(words)
                .all(|(given, word)| !given.is_empty() && word.starts_with(given))
    }
}

/// A scripted session.
#[derive(Clone, Debug, Default)]
pub struct Script {
    pub name: String,
    /// Flags both servers start with.
    pub server_args: Vec<String>,
    /// Whether the servers serve clients over TLS, and how.
    pub tls: Option<TlsMode>,
    pub steps: Vec<Step>,
}

/// How a `% tls` script's servers serve clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsMode {
    /// The servers require a client certificate signed by the test CA.
    pub client_cert_auth: bool,
}

impl Script {
    /// The directory of the script files: `tests/scripts/`.
    pub fn dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts")
    }

    /// Reads `tests/scripts/<name>.txt`.
    pub fn load(name: &str) -> Result<Script> {
        let path = Self::dir().join(format!("{name}.txt"));
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let mut script = Self::parse(&format!("scripts/{name}.txt"), &text)?;
        script.name = name.to_owned();
        Ok(script)
    }

    /// The names of every script under `tests/scripts/`, sorted.
    pub fn all_names() -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(Self::dir())? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "txt")
                && let Some(stem) = path.file_stem()
            {
                names.push(stem.to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Parses the script format described in the module documentation.
    pub fn parse(name: &str, text: &str) -> Result<Script> {
        let mut script = Script {
            name: name.to_owned(),
            ..Script::default()
        };
        for (index, line) in text.lines().enumerate() {
            let origin = format!("{name}:{}", index + 1);
            let trimmed = line.trim_end();
            if trimmed.trim_start().is_empty() || trimmed.trim_start().starts_with('#') {
                continue;
            }
            if let Some(command) = trimmed.strip_prefix("$ ") {
                let words = split_words(command).with_context(|| origin.clone())?;
                let mut env = Vec::new();
                let mut args = Vec::new();
                for word in words {
                    match word.split_once('=') {
                        Some((key, value))
                            if args.is_empty()
                                && !key.is_empty()
                                && key.chars().all(|c| c.is_ascii_uppercase() || c == '_') =>
                        {
                            env.push((key.to_owned(), value.to_owned()));
                        }
                        _ => args.push(word),
                    }
                }
                script.steps.push(Step {
                    origin,
                    text: command.to_owned(),
                    args,
                    env,
                    ..Step::default()
                });
                continue;
            }
            if let Some(control) = trimmed.strip_prefix("& ") {
                let (verb, rest) = control
                    .trim()
                    .split_once(' ')
                    .with_context(|| format!("{origin}: `& interrupt|kill|wait|await <name>`"))?;
                let (name, text) = match verb {
                    "await" => rest
                        .trim()
                        .split_once(' ')
                        .map(|(name, text)| (name.to_owned(), text.replace("\\n", "\n")))
                        .with_context(|| format!("{origin}: `& await <name> <text>`"))?,
                    _ => (rest.trim().to_owned(), String::new()),
                };
                let Some(started) = script
                    .steps
                    .iter()
                    .find(|step| step.background.as_ref() == Some(&name))
                else {
                    bail!("{origin}: no background step {name:?} before this line");
                };
                if script.steps.iter().any(|step| {
                    step.control
                        .as_ref()
                        .is_some_and(|c| c.ends() && c.name() == name)
                }) {
                    bail!("{origin}: background step {name:?} is already ended");
                }
                let args = started.args.clone();
                let line = format!("& {}", control.trim());
                let control = match verb {
                    "interrupt" => Control::Interrupt(name),
                    "kill" => Control::Kill(name),
                    "wait" => Control::Wait(name),
                    "await" => Control::AwaitStdout(name, text),
                    other => bail!("{origin}: unknown `&` action {other:?}"),
                };
                script.steps.push(Step {
                    origin,
                    text: line,
                    args,
                    control: Some(control),
                    ..Step::default()
                });
                continue;
            }
            if let Some(flag) = trimmed.strip_prefix("% server-arg ") {
                if !script.steps.is_empty() {
                    bail!("{origin}: `% server-arg` belongs before the first step");
                }
                script.server_args.push(flag.trim().to_owned());
                continue;
            }
            if let Some(mode) = trimmed.strip_prefix("% tls") {
                if !script.steps.is_empty() {
                    bail!("{origin}: `% tls` belongs before the first step");
                }
                script.tls = Some(TlsMode {
                    client_cert_auth: match mode.trim() {
                        "" => false,
                        "client-cert-auth" => true,
                        other => bail!("{origin}: `% tls [client-cert-auth]`, not {other:?}"),
                    },
                });
                continue;
            }
            let Some(step) = script.steps.last_mut() else {
                bail!("{origin}: {trimmed:?} comes before any `$ ` step");
            };
            if trimmed == "<" || trimmed.starts_with("< ") {
                let stdin = step.stdin.get_or_insert_with(String::new);
                stdin.push_str(trimmed.strip_prefix("< ").unwrap_or(""));
                stdin.push('\n');
            } else if let Some(directive) = trimmed.strip_prefix("! ") {
                let (word, rest) = directive.split_once(' ').unwrap_or((directive, ""));
                match word {
                    "stdin-open" => step.stdin_open = true,
                    "background" => {
                        let name = rest.trim();
                        if name.is_empty() || name.contains(' ') {
                            bail!("{origin}: background <name>");
                        }
                        if step.control.is_some() {
                            bail!("{origin}: an `&` line is not a step to run");
                        }
                        step.background = Some(name.to_owned());
                    }
                    "until-stdout" => {
                        if rest.is_empty() {
                            bail!("{origin}: until-stdout <text>");
                        }
                        step.until_stdout = Some(rest.replace("\\n", "\n"));
                    }
                    "no-endpoints" => step.no_endpoints = true,
                    "expect" => {
                        if rest.is_empty() {
                            bail!("{origin}: expect <text>");
                        }
                        step.expects.push(rest.replace("\\n", "\n"));
                    }
                    "expect-stdout-bytes" => {
                        let bytes = rest.trim().parse().with_context(|| origin.clone())?;
                        step.expect_stdout_bytes = Some(bytes);
                    }
                    "end-with-put" => {
                        let key = rest.trim();
                        if key.is_empty() {
                            bail!("{origin}: end-with-put <key>");
                        }
                        step.end_with_put = Some(key.to_owned());
                    }
                    "stdin-repeat" => {
                        let (count, ch) = rest
                            .trim()
                            .split_once(' ')
                            .with_context(|| format!("{origin}: stdin-repeat <count> <char>"))?;
                        let count: usize = count.parse().with_context(|| origin.clone())?;
                        step.stdin = Some(ch.repeat(count));
                    }
                    "ctl" => {
                        step.ctl = Some(match rest.trim() {
                            "etcdctl" => Ctl::Etcdctl,
                            "concordctl" => Ctl::Concordctl,
                            other => bail!("{origin}: unknown ctl {other:?}"),
                        });
                    }
                    "known-difference" => {
                        step.known_difference = Some(parse_mark(&origin, rest)?);
                    }
                    "concordctl-gap" => step.concordctl_gap = Some(parse_mark(&origin, rest)?),
                    other => bail!("{origin}: unknown directive {other:?}"),
                }
            } else {
                bail!("{origin}: a line is `$ step`, `< stdin`, `! directive`, `%` or `#`");
            }
        }
        if script.steps.is_empty() {
            bail!("{name}: no steps");
        }
        for step in &script.steps {
            if let Some(background) = &step.background {
                let ended = script.steps.iter().any(|other| {
                    other
                        .control
                        .as_ref()
                        .is_some_and(|c| c.ends() && c.name() == background)
                });
                if !ended {
                    bail!(
                        "{}: background step {background:?} is never ended by an `&` line",
                        step.origin
                    );
                }
                if step.end_with_put.is_some() {
                    bail!(
                        "{}: a background step ends by an `&` line, not end-with-put",
                        step.origin
                    );
                }
            }
        }
        Ok(script)
    }
}

fn parse_mark(origin: &str, text: &str) -> Result<Mark> {
    let mut text = text.trim();
    let mut only_with = None;
    if let Some(rest) = text.strip_prefix("with ") {
        let (ctl, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        only_with = Some(match ctl {
            "etcdctl" => Ctl::Etcdctl,
            "concordctl" => Ctl::Concordctl,
            other => bail!("{origin}: unknown ctl {other:?}"),
        });
        text = rest.trim();
    }
    let (issue, reason) = text
        .strip_prefix('#')
        .and_then(|t| t.split_once(' '))
        .with_context(|| format!("{origin}: a mark reads `#<issue> <reason>`"))?;
    let issue = issue
        .parse()
        .with_context(|| format!("{origin}: issue number"))?;
    let reason = reason.trim().to_owned();
    if reason.is_empty() {
        bail!("{origin}: a mark needs a reason");
    }
    Ok(Mark {
        issue,
        reason,
        only_with,
    })
}

/// Splits a command line into words as a POSIX shell would (without expansions).
fn split_words(line: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => bail!("unterminated ' in {line:?}"),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => bail!("unterminated \" in {line:?}"),
                        },
                        Some(c) => w.push(c),
                        None => bail!("unterminated \" in {line:?}"),
                    }
                }
            }
            '\\' => {
                let next = chars.next().context("a trailing backslash")?;
                word.get_or_insert_with(String::new).push(next);
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(w) = word {
        words.push(w);
    }
    Ok(words)
}

/// Expands `$NAME` (uppercase letters, digits, `_`) from `vars`; `$$` is a `$`.
fn expand(text: &str, vars: &HashMap<String, String>) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(after) = after.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let len = after
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(after.len());
        if len == 0 {
            out.push('$');
        } else {
            let name = &after[..len];
            match vars.get(name) {
                Some(value) => out.push_str(value),
                None => bail!("${name} is not set at this step"),
            }
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Which server a transcript came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    Etcd,
    Concord,
}

impl ServerKind {
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Etcd => "etcd",
            ServerKind::Concord => "concord",
        }
    }
}

/// One fresh single-member server, with the values its outputs are masked by.
pub struct Server {
    pub kind: ServerKind,
    pub client_port: u16,
    pub peer_port: u16,
    pub member_id: u64,
    pub cluster_id: u64,
    /// The TLS files the member serves with, and whether it asks for client certificates.
    tls: Option<(Arc<TlsFiles>, TlsMode)>,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts one member of the kind, named `m0` with cluster token `concord-tests` (as
    /// [`Cluster`](crate::Cluster) names its members), and waits until it has a leader.
    /// Both kinds get the same flags (etcd's names), `server_args` last.
    pub fn start(kind: ServerKind, server_args: &[String]) -> Result<Server> {
        Self::start_tls(kind, server_args, None)
    }

    /// [`Server::start`], serving clients over TLS with these files when given.
    pub fn start_tls(
        kind: ServerKind,
        server_args: &[String],
        tls: Option<(Arc<TlsFiles>, TlsMode)>,
    ) -> Result<Server> {
        // `free_port` hands out a port nothing holds at that moment; a test running in
        // parallel can take it before the member binds it. Such a start is tried again on
        // other ports, a bounded number of times; any other failure is final.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut server = Self::spawn(kind, server_args, tls.clone())?;
            match server.wait_ready() {
                Ok(()) => return Ok(server),
                Err(_) if attempt < 3 && server.log().contains("address already in use") => {}
                Err(error) => return Err(error),
            }
        }
    }

    fn spawn(
        kind: ServerKind,
        server_args: &[String],
        tls: Option<(Arc<TlsFiles>, TlsMode)>,
    ) -> Result<Server> {
        let dir = tempfile::tempdir()?;
        let (client_port, peer_port) = (free_port(), free_port());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let (binary, data_dir) = match kind {
            ServerKind::Etcd => (etcd(), "m0.etcd"),
            ServerKind::Concord => (concord_binary(), "m0.concord"),
        };
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let mut command = Command::new(binary);
        command
            .args(["--name", "m0"])
            .arg("--data-dir")
            .arg(dir.path().join(data_dir))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("m0={peer_url}")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "concord-tests"]);
        if let Some((files, mode)) = &tls {
            command.args([
                "--cert-file",
                &files.server_cert,
                "--key-file",
                &files.server_key,
            ]);
            if mode.client_cert_auth {
                command.args(["--client-cert-auth", "--trusted-ca-file", &files.ca]);
            }
        }
        let child = command
            .args(server_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", kind.name()))?;
        Ok(Server {
            kind,
            client_port,
            peer_port,
            member_id: 0,
            cluster_id: 0,
            tls,
            child,
            dir,
        })
    }

    /// The client URL (`http://` or `https://`).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The real etcdctl, set up to reach this member (for the harness's own calls).
    fn harness_etcdctl(&self) -> Command {
        let mut command = Command::new(etcdctl());
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()));
        if let Some((files, _)) = &self.tls {
            command.args(["--cacert", &files.ca]);
            command.args(["--cert", &files.client_cert, "--key", &files.client_key]);
        }
        command
    }

    /// Waits until the member knows a leader, and learns its member and cluster ids.
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // A status from the port is not enough: a parallel test's server may hold it
            // (this one then exits with "address already in use"). Its own log must say
            // it serves the port.
            match self.probe() {
                Ok((member_id, cluster_id))
                    if crate::serves_clients_on(&self.log(), self.client_port) =>
                {
                    self.member_id = member_id;
                    self.cluster_id = cluster_id;
                    return Ok(());
                }
                Ok(_) if Instant::now() > deadline || self.has_exited() => bail!(
                    "{} answered on its port without saying it serves it\nlog:\n{}",
                    self.kind.name(),
                    self.log()
                ),
                Ok(_) => std::thread::sleep(Duration::from_millis(50)),
                Err(last) if Instant::now() > deadline || self.has_exited() => bail!(
                    "{} did not get a leader; last status: {last}\nlog:\n{}",
                    self.kind.name(),
                    self.log()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// One `endpoint status`: the member and cluster ids once the member knows a leader,
    /// else what etcdctl printed.
    fn probe(&self) -> Result<(u64, u64), String> {
        let output = self
            .harness_etcdctl()
            .args(["--command-timeout=1s", "endpoint", "status", "-w", "json"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        match (
            json_number(&text, "\"member_id\":"),
            json_number(&text, "\"cluster_id\":"),
            json_number(&text, "\"leader\":"),
        ) {
            (Some(member), Some(cluster), Some(leader))
                if output.status.success() && leader != 0 =>
            {
                Ok((member, cluster))
            }
            _ => Err(text),
        }
    }

    /// Runs the script's steps in order with `ctl` (unless a step names its own).
    pub fn run(&self, script: &Script, ctl: Ctl) -> Result<Transcript> {
        let dir = tempfile::tempdir()?;
        let mut vars = HashMap::new();
        vars.insert("DIR".to_owned(), dir.path().to_string_lossy().into_owned());
        vars.insert("MEMBER_ID".to_owned(), format!("{:x}", self.member_id));
        let mut context = MaskContext {
            member_id: self.member_id,
            cluster_id: self.cluster_id,
            client_port: self.client_port,
            peer_port: self.peer_port,
            dir: dir.path().to_string_lossy().into_owned(),
            tls_dir: String::new(),
            leases: Vec::new(),
            added_members: Vec::new(),
        };
        vars.insert(
            "PEER_URL".to_owned(),
            format!("http://127.0.0.1:{}", self.peer_port),
        );
        vars.insert(
            "ENDPOINT".to_owned(),
            format!("127.0.0.1:{}", self.client_port),
        );
        vars.insert("URL".to_owned(), self.endpoint());
        if let Some((files, _)) = &self.tls {
            context.tls_dir = files.dir().to_string_lossy().into_owned();
            for (name, path) in [
                ("CA", &files.ca),
                ("CERT", &files.client_cert),
                ("KEY", &files.client_key),
            ] {
                vars.insert(name.to_owned(), path.clone());
            }
        }
        let mut raw = Vec::with_capacity(script.steps.len());
        let mut elapsed = Vec::with_capacity(script.steps.len());
        let mut background: HashMap<String, Running> = HashMap::new();
        for step in &script.steps {
            let start = Instant::now();
            let output = self
                .run_any_step(step, step.ctl.unwrap_or(ctl), &vars, &mut background)
                .with_context(|| format!("{}: $ {}", step.origin, step.text))?;
            if step.control.is_none()
                && step.background.is_none()
                && step.is_command(&["lease", "grant"])
                && let Some(id) = granted_lease(step, &output.stdout)
            {
                context.leases.push(id);
                vars.insert(format!("LEASE_{}", context.leases.len()), format!("{id:x}"));
            }
            if step.control.is_none()
                && step.background.is_none()
                && step.is_command(&["member", "add"])
                && let Some(id) = added_member(step, &output.stdout)
            {
                context.added_members.push(id);
                let n = context.added_members.len();
                vars.insert(format!("ADDED_{n}"), format!("{id:x}"));
            }
            raw.push(output);
            elapsed.push(start.elapsed());
        }
        // Two runs against servers that both died would agree; a server must still serve.
        if let Err(last) = self.probe() {
            bail!(
                "{} stopped serving during the script: {last}\nlog:\n{}",
                self.kind.name(),
                self.log()
            );
        }
        // Masked at the end, so a value learned late (a lease id) is masked everywhere.
        let steps = script
            .steps
            .iter()
            .zip(raw)
            .map(|(step, output)| output.masked(step, &context))
            .collect();
        let transcript = Transcript {
            server: self.kind,
            steps,
            elapsed,
        };
        if let Some(dir) = std::env::var_os("SIDE_BY_SIDE_DUMP") {
            let path = Path::new(&dir).join(format!(
                "{}.{}.{}.txt",
                script.name.replace(['/', '.'], "_"),
                ctl.name(),
                self.kind.name()
            ));
            std::fs::write(&path, transcript.render(script))
                .with_context(|| format!("write {}", path.display()))?;
        }
        Ok(transcript)
    }

    /// Runs one ctl command against this member, as a script step would (the harness's
    /// `--endpoints`, `ETCDCTL_API=3`, nothing else from the environment), unmasked.
    pub fn invoke(&self, ctl: Ctl, args: &[&str], stdin: Option<&str>) -> Result<StepOutput> {
        let step = Step {
            text: args.join(" "),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            stdin: stdin.map(str::to_owned),
            ..Step::default()
        };
        let raw = self.run_step(&step, ctl, &HashMap::new())?;
        Ok(StepOutput {
            stdout: String::from_utf8_lossy(&raw.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&raw.stderr).into_owned(),
            status: raw.status,
        })
    }

    /// Puts `key` = `marker` with the real etcdctl, for a step that ends at its event.
    fn put_end_marker(&self, key: &str, marker: &str) -> Result<()> {
        let output = self
            .harness_etcdctl()
            .args(["put", key, marker])
            .output()
            .context("put the end marker")?;
        if !output.status.success() {
            bail!(
                "put of the end marker failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Runs a step of any kind: a command in the foreground (again and again with
    /// `until-stdout`), one started in the background, or an `&` line that ends one.
    fn run_any_step(
        &self,
        step: &Step,
        ctl: Ctl,
        vars: &HashMap<String, String>,
        background: &mut HashMap<String, Running>,
    ) -> Result<RawOutput> {
        if let Some(control) = &step.control {
            if let Control::AwaitStdout(name, text) = control {
                background
                    .get_mut(name)
                    .with_context(|| format!("{name} is not running"))?
                    .wait_for_stdout(text)?;
                return Ok(RawOutput {
                    stdout: Vec::new(),
                    stderr: Vec::new(),
                    status: format!("{name} printed it"),
                });
            }
            let running = background
                .remove(control.name())
                .with_context(|| format!("{} is not running", control.name()))?;
            match control {
                Control::Interrupt(_) => running.signal("INT")?,
                Control::Kill(_) => running.signal("KILL")?,
                Control::Wait(_) | Control::AwaitStdout(..) => {}
            }
            return Ok(running.wait(None, BACKGROUND_DEADLINE));
        }
        if let Some(name) = &step.background {
            let mut running = self.spawn_step(step, ctl, vars)?;
            if let Some(text) = &step.until_stdout {
                running.wait_for_stdout(text)?;
            }
            background.insert(name.clone(), running);
            return Ok(RawOutput {
                stdout: Vec::new(),
                stderr: Vec::new(),
                status: format!("running in the background as {name}"),
            });
        }
        let Some(text) = &step.until_stdout else {
            return self.run_step(step, ctl, vars);
        };
        let deadline = Instant::now() + BACKGROUND_DEADLINE;
        loop {
            let output = self.run_step(step, ctl, vars)?;
            if contains(&output.stdout, text) {
                return Ok(output);
            }
            if Instant::now() > deadline {
                bail!(
                    "stdout never showed {text:?} within {}s; last run printed:\n{}{}",
                    BACKGROUND_DEADLINE.as_secs(),
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn run_step(&self, step: &Step, ctl: Ctl, vars: &HashMap<String, String>) -> Result<RawOutput> {
        // Before the ctl starts, so the marker is the last event of the history the watch
        // replays: written while the watch catches up, it could land in the catch-up
        // response or in one of its own, as each server's timing has it.
        if let Some(key) = &step.end_with_put {
            self.put_end_marker(&expand(key, vars)?, &end_marker(step))?;
        }
        let running = self.spawn_step(step, ctl, vars)?;
        let marker = step.end_with_put.as_ref().map(|_| end_marker(step));
        Ok(running.wait(marker.as_deref(), STEP_TIMEOUT))
    }

    /// Starts the step's ctl with its arguments, environment and standard input.
    fn spawn_step(&self, step: &Step, ctl: Ctl, vars: &HashMap<String, String>) -> Result<Running> {
        let args = step
            .args
            .iter()
            .map(|a| expand(a, vars))
            .collect::<Result<Vec<_>>>()?;
        let stdin = step.stdin.as_deref().map(|s| expand(s, vars)).transpose()?;
        let mut command = Command::new(ctl.binary());
        for (key, _) in std::env::vars() {
            if key.starts_with("ETCDCTL_") {
                command.env_remove(key);
            }
        }
        command.env("ETCDCTL_API", "3");
        for (key, value) in &step.env {
            command.env(key, expand(value, vars)?);
        }
        if !step.no_endpoints {
            // With TLS, the address alone: the step's flags decide how the ctl dials it.
            command.arg(match self.tls {
                Some(_) => format!("--endpoints=127.0.0.1:{}", self.client_port),
                None => format!("--endpoints={}", self.endpoint()),
            });
        }
        let mut child = ChildGuard(
            command
                .args(&args)
                .stdin(if stdin.is_some() || step.stdin_open {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("start {}", ctl.name()))?,
        );
        let writer = child.0.stdin.take().map(|mut input| {
            let text = stdin.unwrap_or_default();
            let hold = step.stdin_open;
            // A ctl may exit before reading everything (an error): ignore a broken pipe.
            // With `stdin-open` the pipe comes back in the join result, open until then.
            std::thread::spawn(move || {
                let _ = input.write_all(text.as_bytes());
                hold.then_some(input)
            })
        });
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = [
            reader(child.0.stdout.take().context("stdout")?, stdout.clone()),
            reader(child.0.stderr.take().context("stderr")?, stderr.clone()),
        ];
        Ok(Running {
            child,
            stdout,
            stderr,
            readers,
            writer,
        })
    }
}

/// How long a background step may take to print what the script waits for, or to exit
/// once ended; and how long a foreground step is run again until it shows its text.
const BACKGROUND_DEADLINE: Duration = Duration::from_secs(60);

/// How long a foreground step may run.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

fn contains(haystack: &[u8], needle: &str) -> bool {
    String::from_utf8_lossy(haystack).contains(needle)
}

/// A started ctl, its output collected as it comes.
struct Running {
    child: ChildGuard,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: [std::thread::JoinHandle<()>; 2],
    writer: Option<std::thread::JoinHandle<Option<std::process::ChildStdin>>>,
}

impl Running {
    /// Sends a signal (`INT`, `KILL`) to the ctl.
    fn signal(&self, signal: &str) -> Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.0.id().to_string())
            .status()
            .context("run kill")?;
        if !status.success() {
            bail!("kill -{signal} {} failed: {status}", self.child.0.id());
        }
        Ok(())
    }

    /// Waits until the ctl's stdout shows `text`; fails if it exits first or the deadline
    /// passes.
    fn wait_for_stdout(&mut self, text: &str) -> Result<()> {
        let deadline = Instant::now() + BACKGROUND_DEADLINE;
        loop {
            if contains(&lock(&self.stdout), text) {
                return Ok(());
            }
            let exited = self.child.exited();
            if exited || Instant::now() > deadline {
                bail!(
                    "the background step {} before its stdout showed {text:?}; it printed:\n{}{}",
                    if exited { "exited" } else { "timed out" },
                    String::from_utf8_lossy(&lock(&self.stdout)),
                    String::from_utf8_lossy(&lock(&self.stderr))
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the ctl to exit, or stops it once its stdout shows `end_marker` or
    /// `timeout` has passed, and collects its output.
    fn wait(mut self, end_marker: Option<&str>, timeout: Duration) -> RawOutput {
        let child = &mut self.child.0;
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    break match status.code() {
                        Some(code) => format!("exit {code}"),
                        None => format!("killed by a signal ({status})"),
                    };
                }
                Ok(None) => {}
                Err(error) => break format!("could not wait for the ctl: {error}"),
            }
            if let Some(marker) = end_marker
                && shows_end_marker(&lock(&self.stdout), marker)
            {
                let _ = child.kill();
                let _ = child.wait();
                break "stopped by the harness at the end marker".to_owned();
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                break format!("killed by the harness after {}s", timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        for reader in self.readers {
            let _ = reader.join();
        }
        if let Some(writer) = self.writer {
            let _ = writer.join();
        }
        let stdout = std::mem::take(&mut *lock(&self.stdout));
        let stderr = std::mem::take(&mut *lock(&self.stderr));
        RawOutput {
            stdout,
            stderr,
            status,
        }
    }
}

fn lock(buffer: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
    buffer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn reader(
    mut source: impl Read + Send + 'static,
    sink: Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = source.read(&mut buf) {
            if n == 0 {
                break;
            }
            lock(&sink).extend_from_slice(&buf[..n]);
        }
    })
}

/// Kills the ctl if the harness returns early.
struct ChildGuard(Child);

impl ChildGuard {
    fn exited(&mut self) -> bool {
        !matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The first number after `key` in `text`.
fn json_number(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits: String = text[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The lease id a `lease grant` step printed, in any of etcdctl's formats.
fn granted_lease(step: &Step, stdout: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(stdout);
    match step.output_format() {
        "json" => json_number(&text, "\"ID\":"),
        "fields" => json_number(&text, "\"ID\" :"),
        _ => {
            let hex = text.strip_prefix("lease ")?.split(' ').next()?;
            u64::from_str_radix(hex, 16).ok()
        }
    }
}

/// The id of the member a `member add` step added, in any of etcdctl's formats.
fn added_member(step: &Step, stdout: &[u8]) -> Option<u64> {
    if step.output_format() == "protobuf" {
        // MemberAddResponse.member (2) -> Member.ID (1).
        let member = protobuf_field(stdout, 2)?;
        let mut at = 0;
        while at < member.len() {
            let tag = read_varint(member, &mut at)?;
            match (tag >> 3, tag & 7) {
                (1, 0) => return read_varint(member, &mut at),
                (_, 0) => {
                    read_varint(member, &mut at)?;
                }
                (_, 2) => {
                    let len = usize::try_from(read_varint(member, &mut at)?).ok()?;
                    at += len;
                }
                _ => return None,
            }
        }
        return None;
    }
    let text = String::from_utf8_lossy(stdout);
    match step.output_format() {
        "json" => json_number(&text, "\"member\":{\"ID\":"),
        "fields" => json_number(&text, "\"ID\" :"),
        _ => {
            let at = text.find("Member ")? + "Member ".len();
            let hex = text[at..].trim_start().split(' ').next()?;
            u64::from_str_radix(hex, 16).ok()
        }
    }
}

/// The bytes of the first top-level length-delimited field `field`.
fn protobuf_field(bytes: &[u8], field: u64) -> Option<&[u8]> {
    let mut at = 0;
    while at < bytes.len() {
        let tag = read_varint(bytes, &mut at)?;
        match tag & 7 {
            0 => {
                read_varint(bytes, &mut at)?;
            }
            2 => {
                let len = usize::try_from(read_varint(bytes, &mut at)?).ok()?;
                let raw = bytes.get(at..at.checked_add(len)?)?;
                if tag >> 3 == field {
                    return Some(raw);
                }
                at += len;
            }
            _ => return None,
        }
    }
    None
}

struct RawOutput {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: String,
}

impl RawOutput {
    fn masked(self, step: &Step, context: &MaskContext) -> StepOutput {
        let stdout = if step.output_format() == "protobuf" {
            protobuf_dump(&self.stdout)
        } else {
            String::from_utf8_lossy(&self.stdout).into_owned()
        };
        let stderr = String::from_utf8_lossy(&self.stderr).into_owned();
        StepOutput {
            stdout: mask(&stdout, step, context),
            stderr: mask(&stderr, step, context),
            status: self.status,
        }
    }
}

/// What one step printed, masked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepOutput {
    pub stdout: String,
    pub stderr: String,
    /// `exit N`, or how the harness ended the ctl.
    pub status: String,
}

impl StepOutput {
    /// The step's block in a transcript.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for (name, stream) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let _ = writeln!(text, "--- {name}");
            text.push_str(stream);
            if !stream.is_empty() && !stream.ends_with('\n') {
                text.push_str("\\ (no newline at the end)\n");
            }
        }
        let _ = writeln!(text, "--- {}", self.status);
        text
    }
}

/// A script's masked outputs against one server.
#[derive(Clone, Debug)]
pub struct Transcript {
    pub server: ServerKind,
    pub steps: Vec<StepOutput>,
    /// How long each step took (shown in dumps, never compared).
    pub elapsed: Vec<Duration>,
}

impl Transcript {
    /// The whole transcript as text (set `SIDE_BY_SIDE_DUMP=<dir>` to have every run
    /// write its own there).
    pub fn render(&self, script: &Script) -> String {
        let mut text = String::new();
        for (i, (step, output)) in script.steps.iter().zip(&self.steps).enumerate() {
            let took = self.elapsed.get(i).copied().unwrap_or_default();
            let _ = writeln!(
                text,
                "$ {}    # {}, {} ms",
                step.text,
                step.origin,
                took.as_millis()
            );
            text.push_str(&output.render());
        }
        text
    }
}

// ---------------------------------------------------------------------------------------
// Masking

/// The values a server's outputs are masked by.
#[derive(Clone, Debug, Default)]
pub struct MaskContext {
    pub member_id: u64,
    pub cluster_id: u64,
    pub client_port: u16,
    pub peer_port: u16,
    /// The run's `$DIR`.
    pub dir: String,
    /// Where the run's TLS files are (`% tls`).
    pub tls_dir: String,
    /// Lease ids in the order `lease grant` steps printed them.
    pub leases: Vec<u64>,
    /// Member ids in the order `member add` steps printed them.
    pub added_members: Vec<u64>,
}

/// A named rule for what legitimately differs between two servers.
pub struct Masker {
    pub name: &'static str,
    /// What it replaces, for a reviewer.
    pub what: &'static str,
    pub apply: fn(&str, &Step, &MaskContext) -> String,
}

/// Every masker, applied in this order to each step's stdout and stderr.
pub const MASKERS: &[Masker] = &[
    Masker {
        name: "lease-ids",
        what: "each lease id a `lease grant` printed (hex and decimal) -> <LEASE_n>",
        apply: |text, _, cx| {
            let mut text = text.to_owned();
            for (i, id) in cx.leases.iter().enumerate() {
                text = replace_number(&text, *id, &format!("<LEASE_{}>", i + 1));
            }
            text
        },
    },
    Masker {
        name: "added-member-ids",
        what: "each member id a `member add` printed (hex and decimal) -> <ADDED_n>",
        apply: |text, _, cx| {
            let mut text = text.to_owned();
            for (i, id) in cx.added_members.iter().enumerate() {
                text = replace_number(&text, *id, &format!("<ADDED_{}>", i + 1));
            }
            text
        },
    },
    Masker {
        name: "member-id",
        what: "the server's member id (hex and decimal) -> <MEMBER_ID>",
        apply: |text, _, cx| replace_number(text, cx.member_id, "<MEMBER_ID>"),
    },
    Masker {
        name: "cluster-id",
        what: "the server's cluster id (hex and decimal) -> <CLUSTER_ID>",
        apply: |text, _, cx| replace_number(text, cx.cluster_id, "<CLUSTER_ID>"),
    },
    Masker {
        name: "ports",
        what: "127.0.0.1:<client port> -> <CLIENT_ADDR>, 127.0.0.1:<peer port> -> <PEER_ADDR>",
        apply: |text, _, cx| {
            let text = replace_token(
                text,
                &format!("127.0.0.1:{}", cx.client_port),
                "<CLIENT_ADDR>",
                |c| c.is_ascii_digit(),
            );
            replace_token(
                &text,
                &format!("127.0.0.1:{}", cx.peer_port),
                "<PEER_ADDR>",
                |c| c.is_ascii_digit(),
            )
        },
    },
    Masker {
        name: "dir",
        what: "the run's $DIR -> <DIR>, the directory of its TLS files -> <TLS_DIR>",
        apply: |text, _, cx| {
            let mut text = text.to_owned();
            for (dir, with) in [(&cx.dir, "<DIR>"), (&cx.tls_dir, "<TLS_DIR>")] {
                if !dir.is_empty() {
                    text = text.replace(dir.as_str(), with);
                }
            }
            text
        },
    },
    Masker {
        name: "raft-term",
        what: "the raft term: header `raft_term`, status `raftTerm`/`RaftTerm`",
        apply: |text, _, _| {
            let mut text = text.to_owned();
            for key in [
                "\"raft_term\":",
                "\"raftTerm\":",
                "\"RaftTerm\" : ",
                "raft_term: ",
            ] {
                text = mask_after(&text, key, "<TERM>");
            }
            text
        },
    },
    Masker {
        name: "endpoint-status-internals",
        what: "`endpoint status`: db size, raft term, raft index and applied index \
               (json, fields, and their columns in simple and table)",
        apply: |text, step, _| {
            if !step.is_command(&["endpoint", "status"]) {
                return text.to_owned();
            }
            let mut text = text.to_owned();
            for (key, with) in [
                ("\"dbSize\":", "<DB_SIZE>"),
                ("\"dbSizeInUse\":", "<DB_SIZE>"),
                ("\"raftIndex\":", "<RAFT_INDEX>"),
                ("\"raftAppliedIndex\":", "<RAFT_INDEX>"),
                ("\"DBSize\" : ", "<DB_SIZE>"),
                ("\"DBSizeInUse\" : ", "<DB_SIZE>"),
                ("\"RaftIndex\" : ", "<RAFT_INDEX>"),
                ("\"RaftAppliedIndex\" : ", "<RAFT_INDEX>"),
            ] {
                text = mask_after(&text, key, with);
            }
            // Columns: endpoint, id, version, db size, is leader, is learner, raft term,
            // raft index, raft applied index, errors.
            let columns = [
                (3, "<DB_SIZE>"),
                (6, "<TERM>"),
                (7, "<RAFT_INDEX>"),
                (8, "<RAFT_INDEX>"),
            ];
            match step.output_format() {
                "simple" => map_lines(&text, |line| {
                    let mut cells: Vec<&str> = line.split(", ").collect();
                    if cells.len() == 10 {
                        for (i, with) in columns {
                            cells[i] = with;
                        }
                    }
                    cells.join(", ")
                }),
                "table" => map_lines(&text, |line| {
                    let mut cells: Vec<String> = line.split('|').map(str::to_owned).collect();
                    // "| a | b |" splits into an empty first and last cell.
                    if cells.len() == 12 && !line.contains("ENDPOINT") {
                        for (i, with) in columns {
                            cells[i + 1] = format!(" {with} ");
                        }
                    }
                    cells.join("|")
                }),
                _ => text,
            }
        },
    },
    Masker {
        name: "durations",
        what: "how long something took: `took = `, `\"took\":` (a string or, in etcdctl's \
               log lines, seconds), `\"Took\" : `, the TOOK column of a table",
        apply: |text, step, _| {
            let text = mask_until(text, "took = ", '\n', "<DURATION>");
            let text = mask_until(&text, "\"took\":\"", '"', "<DURATION>");
            let text = mask_seconds(&text, "\"took\":", "<DURATION>");
            let text = mask_until(&text, "\"Took\" : ", '\n', "<DURATION>");
            if step.output_format() != "table" {
                return text;
            }
            map_lines(&text, |line| {
                line.split('|')
                    .map(|cell| {
                        if is_go_duration(cell.trim()) {
                            " <DURATION> ".to_owned()
                        } else {
                            cell.to_owned()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("|")
            })
        },
    },
    Masker {
        name: "lease-remaining",
        what: "a lease's remaining TTL in `lease timetolive` (`remaining(Ns)`, json `ttl`, \
               fields `TTL`); the granted TTL stays",
        apply: |text, step, _| {
            if !step.is_command(&["lease", "timetolive"]) {
                return text.to_owned();
            }
            let text = mask_after(text, "remaining(", "<REMAINING>");
            let text = mask_after(&text, "\"ttl\":", "<REMAINING>");
            mask_after(&text, "\"TTL\" : ", "<REMAINING>")
        },
    },
    Masker {
        name: "lease-keys-order",
        what: "the order of a lease's keys in `lease timetolive --keys` (etcd lists them in \
               Go map order, which is random): sorted",
        apply: |text, step, _| {
            if !step.is_command(&["lease", "timetolive"]) {
                return text.to_owned();
            }
            let text = sort_list(text, "attached keys([", "])", " ");
            sort_list(&text, "\"keys\":[", "]", ",")
        },
    },
    Masker {
        name: "etcdctl-log",
        what: "in etcdctl's own log lines on stderr: the time (`\"ts\"`, a date or seconds) \
               and the client's random name (`endpoint://client-<uuid>/`)",
        apply: |text, _, _| {
            map_lines(text, |line| {
                if !line.starts_with("{\"level\":") {
                    return line.to_owned();
                }
                let line = mask_until(line, "\"ts\":\"", '"', "<TIME>");
                let line = mask_seconds(&line, "\"ts\":", "\"<TIME>\"");
                mask_until(&line, "endpoint://client-", '/', "<UUID>")
            })
        },
    },
    Masker {
        name: "snapshot-file",
        what: "a snapshot file's hash (it covers the member's random ids) and size (etcd's \
               own files differ in free pages from member to member): `snapshot status`'s \
               first and last cells in simple and table, json `hash` and `totalSize`, fields \
               `Hash` and `Size`; the `size` etcdctl logs when `snapshot save` fetched it",
        apply: |text, step, _| {
            if step.is_command(&["snapshot", "save"]) {
                return mask_until(text, "\"size\":\"", '"', "<SIZE>");
            }
            if !step.is_command(&["snapshot", "status"]) {
                return text.to_owned();
            }
            let mut text = text.to_owned();
            for (key, with) in [
                ("\"hash\":", "<HASH>"),
                ("\"Hash\" : ", "<HASH>"),
                ("\"totalSize\":", "<SIZE>"),
                ("\"Size\" : ", "<SIZE>"),
            ] {
                text = mask_after(&text, key, with);
            }
            map_lines(&text, |line| {
                let is_hex =
                    |cell: &str| !cell.is_empty() && cell.chars().all(|c| c.is_ascii_hexdigit());
                match step.output_format() {
                    "simple" => {
                        let cells: Vec<&str> = line.split(", ").collect();
                        if cells.len() == 4 && is_hex(cells[0]) {
                            format!("<HASH>, {}, {}, <SIZE>", cells[1], cells[2])
                        } else {
                            line.to_owned()
                        }
                    }
                    "table" => {
                        let mut cells: Vec<String> = line.split('|').map(str::to_owned).collect();
                        if cells.len() == 6 && is_hex(cells[1].trim()) {
                            cells[1] = " <HASH> ".to_owned();
                            cells[4] = " <SIZE> ".to_owned();
                        }
                        cells.join("|")
                    }
                    _ => line.to_owned(),
                }
            })
        },
    },
    Masker {
        name: "log-time",
        what: "the time at the start of etcdctl's capnslog lines (`2006-01-02 15:04:05.000000 W \
               | ...`) and of grpc-go's log lines that `--debug` turns on (`INFO: 2006/01/02 \
               15:04:05 ...`, also `WARNING:` and `ERROR:`) -> <TIME>",
        apply: |text, _, _| {
            map_lines(text, |line| {
                for level in ["INFO: ", "WARNING: ", "ERROR: "] {
                    if let Some(rest) = line.strip_prefix(level)
                        && rest.get(..19).is_some_and(|t| is_log_time(t, '/', ' '))
                    {
                        return format!("{level}<TIME>{}", &rest[19..]);
                    }
                }
                match line.get(..26) {
                    Some(time) if is_log_time(time, '-', ' ') => format!("<TIME>{}", &line[26..]),
                    _ => line.to_owned(),
                }
            })
        },
    },
    Masker {
        name: "grpc-go-log-order",
        what: "the order of each run of grpc-go's log lines (after log-time): its goroutines \
               log connection changes as they happen to run; sorted",
        apply: |text, _, _| {
            let is_grpc = |line: &str| {
                ["INFO: <TIME>", "WARNING: <TIME>", "ERROR: <TIME>"]
                    .iter()
                    .any(|prefix| line.starts_with(prefix))
            };
            let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
            let mut start = 0;
            while start < lines.len() {
                if !is_grpc(lines[start]) {
                    start += 1;
                    continue;
                }
                let mut end = start;
                while end < lines.len() && is_grpc(lines[end]) && lines[end].ends_with('\n') {
                    end += 1;
                }
                lines[start..end].sort_unstable();
                start = end.max(start + 1);
            }
            lines.concat()
        },
    },
    Masker {
        name: "member-order",
        what: "the order of members (etcd sorts them by their random ids): the entries of \
               `ETCD_INITIAL_CLUSTER`, json `members` arrays, and the rows of `member list` \
               (simple and table), sorted",
        apply: |text, step, _| {
            let text = map_lines(text, |line| {
                match line.strip_prefix("ETCD_INITIAL_CLUSTER=\"") {
                    Some(rest) => {
                        let mut parts: Vec<&str> = rest.trim_end_matches('"').split(',').collect();
                        parts.sort_unstable();
                        format!("ETCD_INITIAL_CLUSTER=\"{}\"", parts.join(","))
                    }
                    None => sort_json_array(line, "\"members\":["),
                }
            });
            if !step.is_command(&["member"]) {
                return text;
            }
            match step.output_format() {
                "protobuf" => return sort_protobuf_blocks(&text),
                "fields" => return sort_field_blocks(&text),
                _ => {}
            }
            if !step.is_command(&["member", "list"]) {
                return text;
            }
            match step.output_format() {
                "simple" => {
                    let mut lines: Vec<&str> = text.lines().collect();
                    lines.sort_unstable();
                    lines.iter().map(|l| format!("{l}\n")).collect()
                }
                "table" => {
                    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
                    // Rows between the header's rule and the closing rule.
                    // Compared without the padding (it follows the widths of the
                    // unmasked ids).
                    if lines.len() > 4 {
                        let end = lines.len() - 1;
                        lines[3..end].sort_by_key(|l| l.replace(' ', ""));
                    }
                    lines.iter().map(|l| format!("{l}\n")).collect()
                }
                _ => text,
            }
        },
    },
    Masker {
        name: "session-keys",
        what: "the keys `lock` and `elect` print and `get -w fields` lists (`<name>/<session \
               lease id in hex>`, a whole line or a `\"Key\" : ` field), and in `get -w \
               fields` the `\"Lease\" : ` of a lease no `lease grant` step granted: the \
               lease id a command's own session got -> <SESSION>",
        apply: |text, step, _| {
            let fields = step.is_command(&["get"]) && step.output_format() == "fields";
            if !(fields || step.is_command(&["lock"]) || step.is_command(&["elect"])) {
                return text.to_owned();
            }
            let session_key = |key: &str| match key.rsplit_once('/') {
                Some((name, id))
                    if !name.is_empty()
                        && (8..=16).contains(&id.len())
                        && id.chars().all(|c| c.is_ascii_hexdigit()) =>
                {
                    Some(format!("{name}/<SESSION>"))
                }
                _ => None,
            };
            map_lines(text, |line| {
                if fields {
                    if let Some(id) = line.strip_prefix("\"Lease\" : ")
                        && id != "0"
                        && id.chars().all(|c| c.is_ascii_digit())
                    {
                        return "\"Lease\" : <SESSION>".to_owned();
                    }
                    return line
                        .strip_prefix("\"Key\" : \"")
                        .and_then(|rest| rest.strip_suffix('"'))
                        .and_then(session_key)
                        .map_or_else(|| line.to_owned(), |key| format!("\"Key\" : \"{key}\""));
                }
                session_key(line).unwrap_or_else(|| line.to_owned())
            })
        },
    },
    Masker {
        name: "table-padding",
        what: "in `-w table` output, the padding of cells and the length of rules (they \
               follow the widths of masked cells)",
        apply: |text, step, _| {
            if step.output_format() != "table" {
                return text.to_owned();
            }
            map_lines(text, |line| {
                if line.starts_with('+') && line.chars().all(|c| c == '+' || c == '-') {
                    let columns = line.matches('+').count().saturating_sub(1);
                    "+-".repeat(columns) + "+"
                } else if line.starts_with('|') {
                    line.split('|')
                        .map(str::trim)
                        .collect::<Vec<_>>()
                        .join(" | ")
                        .trim()
                        .to_owned()
                } else {
                    line.to_owned()
                }
            })
        },
    },
];

/// Applied on top of [`MASKERS`] when concordctl's transcript is compared with etcdctl's.
pub const CTL_MASKERS: &[Masker] = &[
    Masker {
        name: "etcdctl-client-log-lines",
        what: "the lines etcdctl's Go client library logs on stderr when a call fails \
               (`{\"level\":\"warn\",...,\"msg\":\"retrying of unary invoker failed\",...}`): \
               concordctl writes them too, but how many retries a failing connection gets \
               is timing (steps that need the line say so with `expect`); the server \
               comparison keeps them (they carry the gRPC code)",
        apply: |text, _, _| {
            text.split_inclusive('\n')
                .filter(|line| !line.starts_with("{\"level\":"))
                .collect()
        },
    },
    Masker {
        name: "grpc-go-log-lines",
        what: "grpc-go's own log lines (`INFO: <TIME> [core]Subchannel Connectivity change \
               to READY`, `WARNING: <TIME> [core]grpc: addrConn.createTransport failed ...`), \
               which etcdctl's `--debug` turns on: the state of grpc-go's balancer, which \
               concordctl does not have (the `--debug` flag dump, etcdctl's own, is compared)",
        apply: |text, _, _| {
            text.split_inclusive('\n')
                .filter(|line| {
                    !["INFO: <TIME>", "WARNING: <TIME>", "ERROR: <TIME>"]
                        .iter()
                        .any(|prefix| line.starts_with(prefix))
                })
                .collect()
        },
    },
    Masker {
        name: "stty-complaints",
        what: "`stty: 'standard input': Inappropriate ioctl for device`: etcdctl's password \
               prompt runs stty on a standard input that is not a terminal",
        apply: |text, _, _| {
            text.split_inclusive('\n')
                .filter(|line| !line.starts_with("stty: "))
                .collect()
        },
    },
];

/// Applies every masker in [`MASKERS`].
pub fn mask(text: &str, step: &Step, context: &MaskContext) -> String {
    MASKERS.iter().fold(text.to_owned(), |text, masker| {
        (masker.apply)(&text, step, context)
    })
}

fn map_lines(text: &str, f: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&f(line));
    }
    out
}

/// Replaces `needle` where it is not part of a longer token (`is_token` chars around).
fn replace_token(text: &str, needle: &str, with: &str, is_token: fn(char) -> bool) -> String {
    if needle.is_empty() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut previous: Option<char> = None;
    while let Some(i) = rest.find(needle) {
        let before = rest[..i]
            .chars()
            .next_back()
            .or(if i == 0 { previous } else { None });
        let after = rest[i + needle.len()..].chars().next();
        out.push_str(&rest[..i]);
        // A boundary only matters where the needle's own edge is part of a token: a
        // needle that starts with padding (` %16x`) may follow a word.
        let joins_before = needle.starts_with(is_token) && before.is_some_and(is_token);
        let joins_after = needle.ends_with(is_token) && after.is_some_and(is_token);
        if joins_before || joins_after {
            out.push_str(needle);
        } else {
            out.push_str(with);
        }
        previous = needle.chars().next_back();
        rest = &rest[i + needle.len()..];
    }
    out.push_str(rest);
    out
}

/// Replaces a number written in decimal, in hex (`%x`) or in zero-padded hex (`%016x`).
fn replace_number(text: &str, value: u64, with: &str) -> String {
    if value == 0 {
        return text.to_owned();
    }
    let mut text = replace_token(text, &value.to_string(), with, |c| {
        c.is_ascii_alphanumeric()
    });
    // Short hex forms would match ordinary words; server ids and lease ids are long.
    if value >= 1 << 32 {
        // `%16x` pads with spaces (`Member %16x added`): the padding goes with the
        // number, where a space stands before it too (a `, ` before a bare id keeps its
        // space).
        if value < 1 << 60 {
            text = replace_token(&text, &format!(" {value:>16x}"), &format!(" {with}"), |c| {
                c.is_ascii_alphanumeric()
            });
        }
        for hex in [format!("{value:016x}"), format!("{value:x}")] {
            text = replace_token(&text, &hex, with, |c| c.is_ascii_alphanumeric());
        }
    }
    text
}

/// Replaces the digits right after each `key`.
fn mask_after(text: &str, key: &str, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(key) {
        out.push_str(&rest[..i + key.len()]);
        rest = &rest[i + key.len()..];
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits > 0 {
            out.push_str(with);
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// Replaces a number of seconds (`1796579385.026695`) right after each `key`.
fn mask_seconds(text: &str, key: &str, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(key) {
        out.push_str(&rest[..i + key.len()]);
        rest = &rest[i + key.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == '-'))
            .unwrap_or(rest.len());
        if end > 0 && rest.starts_with(|c: char| c.is_ascii_digit()) {
            out.push_str(with);
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// Replaces what follows each `key` up to `end` (not included).
fn mask_until(text: &str, key: &str, end: char, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(key) {
        out.push_str(&rest[..i + key.len()]);
        rest = &rest[i + key.len()..];
        let stop = rest.find(end).unwrap_or(rest.len());
        out.push_str(with);
        rest = &rest[stop..];
    }
    out.push_str(rest);
    out
}

/// Sorts the `separator`-separated items between each `open` and the next `close`.
fn sort_list(text: &str, open: &str, close: &str, separator: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(open) {
        out.push_str(&rest[..i + open.len()]);
        rest = &rest[i + open.len()..];
        let Some(end) = rest.find(close) else {
            break;
        };
        let mut items: Vec<&str> = rest[..end].split(separator).collect();
        items.sort_unstable();
        out.push_str(&items.join(separator));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Sorts runs of top-level `N { ... }` blocks of the same field in a protobuf dump
/// (repeated messages whose order is the server's: members by random id).
fn sort_protobuf_blocks(text: &str) -> String {
    let mut items: Vec<String> = Vec::new();
    for line in text.split_inclusive('\n') {
        match items.last_mut() {
            Some(last) if line.starts_with(' ') || line.starts_with('}') => last.push_str(line),
            _ => items.push(line.to_owned()),
        }
    }
    sort_runs(&mut items, |item| {
        item.split_once(" {\n").map(|(field, _)| field.to_owned())
    });
    items.concat()
}

/// Sorts the blank-line-ended blocks of `-w fields` output after the header's
/// four lines (members, in the server's order).
fn sort_field_blocks(text: &str) -> String {
    let mut lines = text.split_inclusive('\n');
    let mut out: String = lines.by_ref().take(4).collect();
    let mut items: Vec<String> = Vec::new();
    let mut open = false;
    for line in lines {
        if open && let Some(last) = items.last_mut() {
            last.push_str(line);
        } else {
            items.push(line.to_owned());
        }
        open = line != "\n" && line.starts_with('"');
    }
    sort_runs(&mut items, |item| {
        item.starts_with("\"ID\" :").then(|| "member".to_owned())
    });
    out.push_str(&items.concat());
    out
}

/// Sorts each run of consecutive items that share a key.
fn sort_runs(items: &mut [String], key: impl Fn(&str) -> Option<String>) {
    let mut start = 0;
    while start < items.len() {
        let Some(k) = key(&items[start]) else {
            start += 1;
            continue;
        };
        let mut end = start + 1;
        while end < items.len() && key(&items[end]).as_ref() == Some(&k) {
            end += 1;
        }
        items[start..end].sort_unstable();
        start = end;
    }
}

/// Sorts the top-level elements of the JSON array that follows `marker`.
fn sort_json_array(line: &str, marker: &str) -> String {
    let Some(start) = line.find(marker).map(|i| i + marker.len()) else {
        return line.to_owned();
    };
    let (mut depth, mut elem_start, mut elems, mut end) = (0i32, start, Vec::new(), line.len());
    for (i, b) in line.bytes().enumerate().skip(start) {
        match b {
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth > 0 => depth -= 1,
            b']' => {
                elems.push(&line[elem_start..i]);
                end = i;
                break;
            }
            b',' if depth == 0 => {
                elems.push(&line[elem_start..i]);
                elem_start = i + 1;
            }
            _ => {}
        }
    }
    elems.sort_unstable();
    format!("{}{}{}", &line[..start], elems.join(","), &line[end..])
}

/// `2006-01-02 15:04:05` (with `date` between the date's parts), optionally followed by
/// `.000000`: a log line's time.
fn is_log_time(text: &str, date: char, between: char) -> bool {
    let pattern: String = format!("0000{date}00{date}00{between}00:00:00.000000");
    text.len() >= 19
        && text
            .chars()
            .zip(pattern.chars())
            .all(|(c, p)| if p == '0' { c.is_ascii_digit() } else { c == p })
}

fn is_go_duration(s: &str) -> bool {
    let unit = s.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
    s.len() > unit.len() && ["ns", "µs", "ms", "s", "m", "h"].contains(&unit)
}

/// Renders `-w protobuf` output (one marshalled response) as a field dump, so it can be
/// masked and diffed: the top-level field 1 is etcd's `ResponseHeader` and is named; other
/// length-delimited fields show as nested messages where they parse as one, else as quoted
/// bytes.
pub fn protobuf_dump(bytes: &[u8]) -> String {
    let mut out = String::new();
    if dump_message(bytes, 0, true, &mut out).is_none() {
        out.clear();
        let _ = writeln!(out, "(not a protobuf message) {}", quote_bytes(bytes));
    }
    out
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn dump_message(bytes: &[u8], depth: usize, top: bool, out: &mut String) -> Option<()> {
    const HEADER: [&str; 4] = ["cluster_id", "member_id", "revision", "raft_term"];
    let indent = "  ".repeat(depth);
    let mut at = 0;
    while at < bytes.len() {
        let tag = read_varint(bytes, &mut at)?;
        let (field, wire) = (tag >> 3, tag & 7);
        if field == 0 {
            return None;
        }
        match wire {
            0 => {
                let value = read_varint(bytes, &mut at)?;
                let _ = writeln!(out, "{indent}{field}: {value}");
            }
            1 | 5 => {
                let len = if wire == 1 { 8 } else { 4 };
                let raw = bytes.get(at..at + len)?;
                at += len;
                let _ = writeln!(out, "{indent}{field}: fixed {}", quote_bytes(raw));
            }
            2 => {
                let len = usize::try_from(read_varint(bytes, &mut at)?).ok()?;
                let raw = bytes.get(at..at.checked_add(len)?)?;
                at += len;
                let mut nested = String::new();
                if top && field == 1 && dump_header(raw, &HEADER, &indent, &mut nested).is_some() {
                    out.push_str(&nested);
                } else if !raw.is_empty()
                    && dump_message(raw, depth + 1, false, &mut nested).is_some()
                {
                    let _ = writeln!(out, "{indent}{field} {{");
                    out.push_str(&nested);
                    let _ = writeln!(out, "{indent}}}");
                } else {
                    let _ = writeln!(out, "{indent}{field}: {}", quote_bytes(raw));
                }
            }
            _ => return None,
        }
    }
    Some(())
}

fn dump_header(bytes: &[u8], names: &[&str; 4], indent: &str, out: &mut String) -> Option<()> {
    let mut at = 0;
    let mut fields = Vec::new();
    while at < bytes.len() {
        let tag = read_varint(bytes, &mut at)?;
        let (field, wire) = (tag >> 3, tag & 7);
        if wire != 0 || !(1..=4).contains(&field) {
            return None;
        }
        let value = read_varint(bytes, &mut at)?;
        fields.push(format!(
            "{}: {value}",
            names[usize::try_from(field - 1).ok()?]
        ));
    }
    let _ = writeln!(out, "{indent}header {{ {} }}", fields.join(" "));
    Some(())
}

fn quote_bytes(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for b in bytes {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(char::from(*b)),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s.push('"');
    s
}

// ---------------------------------------------------------------------------------------
// Comparing

/// Runs `script` with `ctl` against a fresh etcd and a fresh Concord member at once.
/// With `% tls`, both servers serve the same certificates.
pub fn run_both(script: &Script, ctl: Ctl) -> Result<(Transcript, Transcript)> {
    let tls = match script.tls {
        Some(mode) => Some((Arc::new(TlsFiles::generate()?), mode)),
        None => None,
    };
    let start = |kind| Server::start_tls(kind, &script.server_args, tls.clone())?.run(script, ctl);
    std::thread::scope(|scope| {
        let etcd = scope.spawn(|| start(ServerKind::Etcd));
        let concord = scope.spawn(|| start(ServerKind::Concord));
        let etcd = etcd
            .join()
            .map_err(|_| anyhow::anyhow!("the etcd run panicked"))?;
        let concord = concord
            .join()
            .map_err(|_| anyhow::anyhow!("the concord run panicked"))?;
        Ok((etcd?, concord?))
    })
}

/// What a comparison holds apart, which decides the marks it honours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparing {
    /// The two servers, both driven by this ctl: `known-difference` marks apply.
    Servers(Ctl),
    /// concordctl and etcdctl, both against etcd: `concordctl-gap` marks apply.
    Ctls,
}

impl Comparing {
    /// The step's mark for this comparison, and whether a mark that no longer differs
    /// fails. A server difference marked for every ctl may hide behind a concordctl gap,
    /// so in concordctl runs only marks that name concordctl are held to that.
    fn mark(self, step: &Step) -> Option<(&Mark, bool)> {
        match self {
            Comparing::Servers(ctl) => step
                .known_difference
                .as_ref()
                .filter(|mark| mark.only_with.is_none_or(|only| only == ctl))
                .map(|mark| (mark, ctl == Ctl::Etcdctl || mark.only_with == Some(ctl))),
            Comparing::Ctls => step.concordctl_gap.as_ref().map(|mark| (mark, true)),
        }
    }
}

/// What a comparison found.
#[derive(Debug, Default)]
pub struct Comparison {
    /// Failures: differing unmarked steps, stale marks.
    pub failures: Vec<String>,
    /// Differences the script marks, with their diffs.
    pub tolerated: Vec<String>,
}

/// Compares two transcripts of `script` step by step.
pub fn compare(
    script: &Script,
    (left_name, left): (&str, &Transcript),
    (right_name, right): (&str, &Transcript),
    comparing: Comparing,
) -> Comparison {
    let mut comparison = Comparison::default();
    for (index, step) in script.steps.iter().enumerate() {
        let (l, r) = (&left.steps[index], &right.steps[index]);
        let mark = comparing.mark(step);
        let heading = format!("step {} ({}): $ {}", index + 1, step.origin, step.text);
        if l == r {
            if let Some((mark, true)) = mark {
                comparison.failures.push(format!(
                    "{heading}\n  is marked as a difference (#{}: {}) but {left_name} and \
                     {right_name} now agree: remove the mark\n",
                    mark.issue, mark.reason
                ));
            }
            continue;
        }
        let diff = line_diff(&l.render(), &r.render(), left_name, right_name);
        match mark {
            Some((mark, _)) => comparison.tolerated.push(format!(
                "{heading}\n  known (#{}: {})\n{diff}",
                mark.issue, mark.reason
            )),
            None => comparison.failures.push(format!("{heading}\n{diff}")),
        }
    }
    comparison
}

/// Panics with a line diff unless `right` is `left`, line for line (`what` says what the
/// two texts are, for the message).
#[track_caller]
pub fn assert_same(what: &str, (left_name, left): (&str, &str), (right_name, right): (&str, &str)) {
    if left != right {
        panic!(
            "{what}: {right_name} differs from {left_name}\n{}",
            line_diff(left, right, left_name, right_name)
        );
    }
}

/// A unified-style line diff: ` ` both, `-` only left, `+` only right.
pub fn line_diff(left: &str, right: &str, left_name: &str, right_name: &str) -> String {
    let a: Vec<&str> = left.lines().collect();
    let b: Vec<&str> = right.lines().collect();
    // Longest common subsequence table, from the end.
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = format!("  --- {left_name}\n  +++ {right_name}\n");
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            let _ = writeln!(out, "   {}", a[i]);
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, "  -{}", a[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "  +{}", b[j]);
            j += 1;
        }
    }
    out
}

/// The side-by-side test of one script: with the real etcdctl, Concord must print what
/// etcd prints, step by step (bar `known-difference` marks). With concordctl, Concord must
/// still print what etcd prints, and concordctl what the real etcdctl prints against etcd
/// (bar `concordctl-gap` marks, after [`CTL_MASKERS`]). Panics with the differing steps
/// and their line diffs; prints the tolerated differences.
pub fn check(script: &Script, ctl: Ctl) {
    let (etcd_run, concord_run) = run_both(script, ctl)
        .unwrap_or_else(|e| panic!("{}: the {} run failed: {e:#}", script.name, ctl.name()));
    let mut failures = String::new();
    for transcript in [&etcd_run, &concord_run] {
        for failure in unmet_expectations(script, transcript) {
            let _ = writeln!(
                failures,
                "{} against {}: {failure}",
                ctl.name(),
                transcript.server.name()
            );
        }
    }
    let name = |server: &str| format!("{} against {server}", ctl.name());
    let mut comparisons = vec![(
        "Concord differs from etcd",
        compare(
            script,
            (&name("etcd"), &etcd_run),
            (&name("concord"), &concord_run),
            Comparing::Servers(ctl),
        ),
    )];
    if ctl == Ctl::Concordctl {
        let (oracle, _) = run_both(script, Ctl::Etcdctl)
            .unwrap_or_else(|e| panic!("{}: the etcdctl run failed: {e:#}", script.name));
        comparisons.push((
            "concordctl differs from etcdctl",
            compare(
                script,
                ("etcdctl against etcd", &ctl_masked(script, &oracle)),
                ("concordctl against etcd", &ctl_masked(script, &etcd_run)),
                Comparing::Ctls,
            ),
        ));
    }
    for (title, comparison) in &comparisons {
        for tolerated in &comparison.tolerated {
            eprintln!("{}: {title} (tolerated)\n{tolerated}", script.name);
        }
        for failure in &comparison.failures {
            let _ = writeln!(failures, "{title}: {failure}");
        }
    }
    assert!(
        failures.is_empty(),
        "{} ({} run): {} step(s) differ or miss what they expect\n\n{failures}\n\
         maskers applied: {}",
        script.name,
        ctl.name(),
        comparisons
            .iter()
            .map(|(_, c)| c.failures.len())
            .sum::<usize>(),
        MASKERS
            .iter()
            .chain(if ctl == Ctl::Concordctl {
                CTL_MASKERS
            } else {
                &[]
            })
            .map(|m| m.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// The `expect` and `expect-stdout-bytes` lines a transcript does not meet.
pub fn unmet_expectations(script: &Script, transcript: &Transcript) -> Vec<String> {
    let mut unmet = Vec::new();
    for (index, (step, output)) in script.steps.iter().zip(&transcript.steps).enumerate() {
        let heading = format!("step {} ({}): $ {}", index + 1, step.origin, step.text);
        let rendered = output.render();
        for text in &step.expects {
            if !rendered.contains(text.as_str()) {
                unmet.push(format!(
                    "{heading}\n  does not show {text:?}; it printed:\n{rendered}"
                ));
            }
        }
        if let Some(least) = step.expect_stdout_bytes
            && output.stdout.len() < least
        {
            unmet.push(format!(
                "{heading}\n  printed {} bytes on stdout, expected at least {least}",
                output.stdout.len()
            ));
        }
    }
    unmet
}

fn ctl_masked(script: &Script, transcript: &Transcript) -> Transcript {
    let context = MaskContext::default();
    let steps = script
        .steps
        .iter()
        .zip(&transcript.steps)
        .map(|(step, output)| {
            let apply = |text: &str| {
                CTL_MASKERS.iter().fold(text.to_owned(), |text, masker| {
                    (masker.apply)(&text, step, &context)
                })
            };
            StepOutput {
                stdout: apply(&output.stdout),
                stderr: apply(&output.stderr),
                status: output.status.clone(),
            }
        })
        .collect();
    Transcript {
        server: transcript.server,
        steps,
        elapsed: transcript.elapsed.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_steps_stdin_and_directives() {
        let script = Script::parse(
            "t",
            "# c\n% server-arg --x=1\n$ ETCDCTL_API=3 put 'a b' \"c\\\"d\" e\\ f\n< one\n<\n\
             ! known-difference #15 because\n$ watch --rev=1 k\n! end-with-put k\n! ctl etcdctl\n\
             ! known-difference with concordctl #18 only there\n",
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(script.server_args, ["--x=1"]);
        let put = &script.steps[0];
        assert_eq!(put.args, ["put", "a b", "c\"d", "e f"]);
        assert_eq!(put.env, [("ETCDCTL_API".to_owned(), "3".to_owned())]);
        assert_eq!(put.stdin.as_deref(), Some("one\n\n"));
        assert_eq!(
            put.known_difference,
            Some(Mark {
                issue: 15,
                reason: "because".to_owned(),
                only_with: None,
            })
        );
        assert_eq!(script.steps[1].end_with_put.as_deref(), Some("k"));
        assert_eq!(script.steps[1].ctl, Some(Ctl::Etcdctl));
        let mark = script.steps[1].known_difference.as_ref();
        assert_eq!(mark.and_then(|m| m.only_with), Some(Ctl::Concordctl));
        assert_eq!(mark.map(|m| m.reason.as_str()), Some("only there"));
        assert!(Script::parse("t", "< x\n").is_err());
        assert!(Script::parse("t", "$ get\n! known-difference 15 no hash\n").is_err());
    }

    #[test]
    fn parses_background_steps_and_the_lines_that_end_them() {
        let script = Script::parse(
            "t",
            "$ lock l\n! background holder\n! until-stdout l/\n$ get l --prefix\n\
             & await holder l/\\n\n& interrupt holder\n! expect l/\n",
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(script.steps[0].background.as_deref(), Some("holder"));
        assert_eq!(script.steps[0].until_stdout.as_deref(), Some("l/"));
        assert_eq!(
            script.steps[2].control,
            Some(Control::AwaitStdout("holder".into(), "l/\n".into()))
        );
        let end = &script.steps[3];
        assert_eq!(end.control, Some(Control::Interrupt("holder".into())));
        assert_eq!(end.args, ["lock", "l"], "masked as the command it ends");
        assert_eq!(end.expects, ["l/"]);
        // Every background step is ended, once, by a line that comes after it.
        assert!(Script::parse("t", "$ lock l\n! background h\n").is_err());
        assert!(Script::parse("t", "& wait h\n$ lock l\n! background h\n").is_err());
        assert!(Script::parse("t", "$ lock l\n! background h\n& wait h\n& kill h\n").is_err());
    }

    #[test]
    fn masks_exact_ids_and_named_fields_only() {
        let step = Step {
            args: vec!["get".into(), "k".into(), "-w".into(), "json".into()],
            ..Step::default()
        };
        let cx = MaskContext {
            member_id: 0xd52b0718a13bb38c,
            cluster_id: 2640745107038013128,
            client_port: 2379,
            leases: vec![0x338ca24c61a86217],
            ..MaskContext::default()
        };
        let text = format!(
            "{{\"cluster_id\":2640745107038013128,\"member_id\":{},\"revision\":12,\"raft_term\":2}} \
             d52b0718a13bb38c 338ca24c61a86217 {} 127.0.0.1:2379 127.0.0.1:23790",
            0xd52b0718a13bb38cu64, 0x338ca24c61a86217u64
        );
        assert_eq!(
            mask(&text, &step, &cx),
            "{\"cluster_id\":<CLUSTER_ID>,\"member_id\":<MEMBER_ID>,\"revision\":12,\
             \"raft_term\":<TERM>} <MEMBER_ID> <LEASE_1> <LEASE_1> <CLIENT_ADDR> 127.0.0.1:23790"
        );
    }

    #[test]
    fn space_padded_ids_lose_their_padding_after_a_word() {
        // Go's `%16x` pads an id of 15 hex digits with a space; cluster ids are random, so
        // the two servers' outputs differ in padding one run in sixteen.
        let step = Step::default();
        let cx = MaskContext {
            member_id: 0x0d52b0718a13bb38,
            cluster_id: 0x0640745107038013,
            ..MaskContext::default()
        };
        let text = format!(
            "Member {:16x} added to cluster {:16x}\nid, {:x}\n",
            cx.member_id, cx.cluster_id, cx.member_id
        );
        assert_eq!(
            mask(&text, &step, &cx),
            "Member <MEMBER_ID> added to cluster <CLUSTER_ID>\nid, <MEMBER_ID>\n"
        );
    }

    #[test]
    fn line_diff_marks_both_sides() {
        let diff = line_diff("a\nb\nc\n", "a\nx\nc\n", "l", "r");
        assert_eq!(diff, "  --- l\n  +++ r\n   a\n  -b\n  +x\n   c\n");
    }

    #[test]
    fn protobuf_dump_names_the_header() {
        // header {cluster_id: 1, member_id: 2, revision: 3, raft_term: 4}, count: 1
        let bytes = [0x0a, 0x08, 0x08, 1, 0x10, 2, 0x18, 3, 0x20, 4, 0x20, 1];
        assert_eq!(
            protobuf_dump(&bytes),
            "header { cluster_id: 1 member_id: 2 revision: 3 raft_term: 4 }\n4: 1\n"
        );
    }
}
