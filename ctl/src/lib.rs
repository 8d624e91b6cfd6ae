//! `concordctl`: an etcdctl-3.4-compatible command-line client for etcd v3
//! servers (Concord or etcd itself).
//!
//! Owned here: the command line (etcdctl's global flags, `ETCDCTL_*`
//! environment variables with etcdctl's checks and `--debug` dump, DNS SRV
//! discovery, v3 commands `put get del txn compaction watch lease member
//! endpoint alarm defrag move-leader snapshot make-mirror lock elect auth user
//! role check (perf, datascale) version`, resolved by unique prefix as cobra does), shell
//! completion (`completion bash|zsh|fish|powershell`, answered through cobra's `__complete`), clientv3's
//! `retrying of unary invoker failed` warnings, etcdctl's help layout, the `txn` input language, and etcdctl's output formats
//! (`-w simple|json|fields|table|protobuf`) reproduced byte for byte, with
//! etcdctl's `Error: ...` lines and exit codes. Long-running commands (watch,
//! lock, elect, make-mirror) ride out a server restart as clientv3 does.
//! The tests in `tests/` run the same command lines through Debian's etcdctl
//! and concordctl against real members and compare.
//!
//! ```
//! use concord_ctl::printer::{Format, Printer};
//! use concord_proto::etcdserverpb::PutResponse;
//!
//! let out = Printer::new(Format::Simple, false).put(&PutResponse::default()).unwrap();
//! assert_eq!(out, b"OK\n");
//! ```

pub mod auth;
pub mod cli;
pub mod client;
pub mod commands;
pub mod completion;
pub mod discovery;
pub mod environ;
pub mod error;
pub mod gofmt;
pub mod gojson;
pub mod help;
pub mod kv;
pub mod printer;
pub mod progress;
pub mod resolve;
pub mod table;
pub mod tls;
pub mod txn;
pub mod v2;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use error::{CtlError, ExitCode};
use std::ffi::OsString;
use std::io::Write;

/// Runs concordctl with these arguments (including the program name) and
/// returns the process exit code.
pub fn run(args: Vec<OsString>) -> i32 {
    // cobra's hidden commands behind the completion scripts.
    if let Some(ask) = args.get(1).and_then(|a| a.to_str())
        && (ask == "__complete" || ask == "__completeNoDesc")
    {
        let words: Vec<String> = args[2..]
            .iter()
            .map(|w| w.to_string_lossy().into_owned())
            .collect();
        let answer = completion::answer(&words, ask == "__complete");
        print!("{}", answer.stdout());
        eprint!("{}", answer.stderr());
        return 0;
    }
    // etcdctl's main: ETCDCTL_API picks the command tree (2: the v2 one).
    match std::env::var("ETCDCTL_API").unwrap_or_default().as_str() {
        "" | "3" => {}
        "2" => return v2::run(args),
        other => {
            eprintln!("unsupported API version {other}");
            return 1;
        }
    }
    let (args, path) = match resolve::resolve(args) {
        resolve::Resolution::Run { args, path } => (args, path),
        resolve::Resolution::UnknownCommand(message) => {
            // cobra reports it, then etcdctl's main reports cobra's error again.
            eprint!("Error: {message}\nRun 'etcdctl --help' for usage.\nError: {message}\n");
            return ExitCode::Error as i32;
        }
        resolve::Resolution::GroupHelp(path) => return print_help(&path),
        resolve::Resolution::RefusedArgs {
            args,
            path,
            message,
        } => {
            if wants_help(&args) {
                return print_help(&path);
            }
            if let Err(e) = environ::command().try_get_matches_from(&args) {
                return usage_error(&e, &path);
            }
            eprintln!("Error: {message}");
            return ExitCode::BadArgs as i32;
        }
    };
    if path.first() == Some(&"help") {
        if path.len() == 1 && wants_help(&args) {
            return print_help(&path);
        }
        return print_help(&path[1..]);
    }
    if wants_help(&args) {
        return print_help(&path);
    }
    if resolve::is_group(&path) {
        // A group runs without an action and prints its help, once its flags
        // have parsed.
        if let Err(e) = environ::command().try_get_matches_from(&args)
            && is_flag_error(&e)
        {
            return usage_error(&e, &path);
        }
        return print_help(&path);
    }
    if path.first() == Some(&"completion") {
        return completion_script(&args, &path);
    }
    let parsed = environ::command()
        .try_get_matches_from(args)
        .and_then(|m| <cli::Cli as clap::FromArgMatches>::from_arg_matches(&m).map(|c| (c, m)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return usage_error(&e, &path),
    };
    let prelude = client_prelude(&cli, &matches, &path);
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let stdin = std::io::stdin();
    let mut out = stdout.lock();
    let mut err = stderr.lock();
    let mut input = stdin.lock();
    let result = execute(cli, prelude, &mut out, &mut err, &mut input);
    let _ = out.flush();
    match result {
        Ok(()) => 0,
        Err(e) => {
            if !e.message.is_empty() {
                let _ = writeln!(err, "Error: {}", e.message);
            }
            e.code as i32
        }
    }
}

/// `completion <shell> [--no-descriptions]`: the script for the program as it was
/// called (`etcdctl` through a link of that name).
fn completion_script(args: &[OsString], path: &[&str]) -> i32 {
    // The resolver only lets cobra's four shells through.
    let Some(shell) = path
        .get(1)
        .and_then(|name| completion::Shell::from_name(name))
    else {
        return print_help(path);
    };
    let mut descriptions = true;
    for arg in args.iter().skip(1).filter_map(|a| a.to_str()) {
        match arg {
            "--no-descriptions" | "--no-descriptions=true" => descriptions = false,
            "--no-descriptions=false" => descriptions = true,
            _ => {}
        }
    }
    let program = args
        .first()
        .map(std::path::Path::new)
        .and_then(std::path::Path::file_name)
        .map_or_else(|| "concordctl".into(), |n| n.to_string_lossy());
    print!("{}", completion::script(shell, &program, descriptions));
    0
}

fn execute(
    cli: cli::Cli,
    prelude: environ::Prelude,
    out: &mut dyn Write,
    err: &mut dyn Write,
    stdin: &mut dyn std::io::BufRead,
) -> Result<(), CtlError> {
    // etcdctl checks the output format when it sets up a client's display;
    // `version` has neither.
    let format = match cli.command {
        cli::Command::Version => printer::Format::Simple,
        _ => printer::Format::parse(&cli.write_out)?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::new(ExitCode::Error, e.to_string()))?;
    let mut endpoints: Vec<String> = cli
        .endpoints
        .iter()
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect();
    let domain = cli.discovery_srv.clone().unwrap_or_default();
    if !domain.is_empty() && !matches!(cli.command, cli::Command::Version) {
        // etcdctl looks the domain up right after its environment checks.
        prelude.emit()?;
        let resolv_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let discovered = runtime.block_on(discovery::endpoints(
            &domain,
            cli.discovery_srv_name.as_deref().unwrap_or_default(),
            cli.insecure_discovery,
            discovery::nameserver(&resolv_conf),
        ))?;
        if !discovered.is_empty() {
            endpoints = discovered;
        }
    }
    let credentials = credentials(&cli, &mut *out, stdin)?;
    let config = client::ClientConfig {
        endpoints,
        dial_timeout: cli.dial_timeout,
        command_timeout: cli.command_timeout,
        keepalive_time: cli.keepalive_time,
        keepalive_timeout: cli.keepalive_timeout,
        credentials,
        tls: tls_settings(&cli),
        prelude: std::sync::Arc::new(prelude),
    };
    let mut ctx = commands::Context {
        config,
        printer: printer::Printer::new(format, cli.hex),
        out,
        err,
        stdin,
    };
    runtime.block_on(commands::run(cli.command, &mut ctx))
}

/// The global flags as pflag prints their values, with whether the command
/// line set them; then etcdctl's environment checks and `--debug` dump.
fn client_prelude(cli: &cli::Cli, matches: &clap::ArgMatches, path: &[&str]) -> environ::Prelude {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut flags: Vec<(String, String)> = vec![
        ("cacert".into(), opt(&cli.cacert)),
        ("cert".into(), opt(&cli.cert)),
        (
            "command-timeout".into(),
            gofmt::duration(cli.command_timeout),
        ),
        ("debug".into(), cli.debug.to_string()),
        ("dial-timeout".into(), gofmt::duration(cli.dial_timeout)),
        ("discovery-srv".into(), opt(&cli.discovery_srv)),
        ("discovery-srv-name".into(), opt(&cli.discovery_srv_name)),
        ("endpoints".into(), format!("[{}]", cli.endpoints.join(","))),
        ("hex".into(), cli.hex.to_string()),
        (
            "insecure-discovery".into(),
            cli.insecure_discovery.to_string(),
        ),
        (
            "insecure-skip-tls-verify".into(),
            cli.insecure_skip_tls_verify.to_string(),
        ),
        (
            "insecure-transport".into(),
            cli.insecure_transport.to_string(),
        ),
        ("keepalive-time".into(), gofmt::duration(cli.keepalive_time)),
        (
            "keepalive-timeout".into(),
            gofmt::duration(cli.keepalive_timeout),
        ),
        ("key".into(), opt(&cli.key)),
        ("password".into(), opt(&cli.password)),
        ("user".into(), opt(&cli.user)),
        ("write-out".into(), cli.write_out.clone()),
    ];
    if path.first() == Some(&"endpoint") && path.len() == 2 {
        let cluster = match &cli.command {
            cli::Command::Endpoint(a) => a.cluster,
            _ => false,
        };
        flags.push(("cluster".into(), cluster.to_string()));
        flags.sort();
    }
    let given = |name: &str| {
        let id = name.replace('-', "_");
        let mut m = Some(matches);
        let mut found = false;
        while let Some(level) = m {
            if level.try_contains_id(&id).unwrap_or(false)
                && level.value_source(&id) == Some(clap::parser::ValueSource::CommandLine)
            {
                found = true;
            }
            m = level.subcommand().map(|(_, sub)| sub);
        }
        found
    };
    let flags: Vec<(String, bool, String)> = flags
        .into_iter()
        .map(|(name, value)| {
            let set = given(&name);
            (name, set, value)
        })
        .collect();
    let extra: &[&str] = if path.first() == Some(&"watch") {
        &["ETCDCTL_WATCH_KEY", "ETCDCTL_WATCH_RANGE_END"]
    } else {
        &[]
    };
    environ::prelude(&flags, extra, cli.debug)
}

fn tls_settings(cli: &cli::Cli) -> Option<tls::TlsSettings> {
    // etcdctl's secureCfgFromCmd: under secure discovery the SRV domain is the
    // TLS server name.
    let server_name = cli
        .discovery_srv
        .as_deref()
        .filter(|_| !cli.insecure_discovery);
    tls::settings(
        cli.cacert.as_deref(),
        cli.cert.as_deref(),
        cli.key.as_deref(),
        server_name,
        cli.insecure_transport,
        cli.insecure_skip_tls_verify,
    )
}

/// `--user name[:password]` and `--password`, prompting when only a name is given
/// (speakeasy's prompt, on stdout as etcdctl's).
fn credentials(
    cli: &cli::Cli,
    out: &mut dyn Write,
    stdin: &mut dyn std::io::BufRead,
) -> Result<Option<(String, String)>, CtlError> {
    let Some(user) = cli.user.as_deref().filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    if let Some(password) = &cli.password {
        if user.contains(':') {
            return Err(CtlError::bad_args(
                "When the password flag is used, the user flag shouldn't include a password",
            ));
        }
        return Ok(Some((user.to_owned(), password.clone())));
    }
    if let Some((name, password)) = user.split_once(':') {
        return Ok(Some((name.to_owned(), password.to_owned())));
    }
    let password = auth::read_hidden_line(stdin, || {
        write!(out, "Password: ")?;
        out.flush()
    })
    .map_err(|e| CtlError::bad_args(format!("failed to read password: {e}")))?;
    // The typed password is not echoed, so end the prompt's line ourselves.
    let _ = writeln!(out);
    let _ = out.flush();
    Ok(Some((user.to_owned(), password)))
}

fn context_string(e: &clap::Error, kind: ContextKind) -> String {
    match e.get(kind) {
        Some(ContextValue::String(s)) => s.clone(),
        Some(ContextValue::Strings(v)) => v.join(" "),
        _ => String::new(),
    }
}

/// Prints etcdctl's help for the command at `path` to stdout; exit code 0.
fn print_help(path: &[&str]) -> i32 {
    let text = help::render(path)
        .or_else(|| help::render(&[]))
        .unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    0
}

/// `-h`, `--help` or `--help=true` before any `--`, as pflag reads them.
fn wants_help(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .map(|a| a.to_string_lossy())
        .take_while(|a| a != "--")
        .any(|a| match a.strip_prefix("--help=") {
            Some(v) => cli::go_bool(v) == Ok(true),
            None => a == "-h" || a == "--help",
        })
}

/// A flag error as cobra reports it: the error, the command's usage on stdout,
/// a blank line, then etcdctl's own report of the same error; exit code 1.
fn flag_error(message: &str, path: &[&str]) -> i32 {
    eprintln!("Error: {message}");
    print_help(path);
    eprintln!();
    eprintln!("Error: {message}");
    1
}

fn is_flag_error(e: &clap::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::UnknownArgument | ErrorKind::ValueValidation | ErrorKind::InvalidValue
    )
}

/// Prints a command-line syntax error as etcdctl (cobra) does and returns its exit code.
fn usage_error(e: &clap::Error, path: &[&str]) -> i32 {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            0
        }
        ErrorKind::UnknownArgument => {
            let arg = context_string(e, ContextKind::InvalidArg);
            let flag = arg.split('=').next().unwrap_or_default();
            let message = match flag.strip_prefix('-') {
                Some(short) if !short.starts_with('-') => {
                    let letter = short.chars().next().unwrap_or_default();
                    format!("unknown shorthand flag: '{letter}' in {flag}")
                }
                _ => format!("unknown flag: {flag}"),
            };
            flag_error(&message, path)
        }
        ErrorKind::InvalidSubcommand => {
            let name = context_string(e, ContextKind::InvalidSubcommand);
            eprintln!("Error: unknown command \"{name}\" for \"etcdctl\"");
            1
        }
        ErrorKind::ValueValidation => {
            // pflag: invalid argument "abc" for "--rev" flag: strconv.ParseInt: ...
            let arg = context_string(e, ContextKind::InvalidArg);
            let flag = arg.split([' ', '=', '[']).next().unwrap_or_default();
            let value = context_string(e, ContextKind::InvalidValue);
            let reason = std::error::Error::source(e)
                .map(ToString::to_string)
                .unwrap_or_default();
            flag_error(
                &format!("invalid argument \"{value}\" for \"{flag}\" flag: {reason}"),
                path,
            )
        }
        ErrorKind::InvalidValue if context_string(e, ContextKind::InvalidValue).is_empty() => {
            let arg = context_string(e, ContextKind::InvalidArg);
            let flag = arg.split([' ', '=', '[']).next().unwrap_or_default();
            flag_error(&format!("flag needs an argument: {flag}"), path)
        }
        _ => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or_default();
            eprintln!("Error: {}", first.trim_start_matches("error: "));
            1
        }
    }
}
