//! `concordctl`: an etcdctl-3.4-compatible command-line client for etcd v3
//! servers (Concord or etcd itself).
//!
//! Owned here: the command line (etcdctl's global flags, `ETCDCTL_*`
//! environment variables, v3 commands `put get del txn compaction watch lease
//! member endpoint alarm defrag move-leader snapshot save lock elect auth user role
//! version`), the `txn` input language, and etcdctl's output formats
//! (`-w simple|json|fields|table|protobuf`) reproduced byte for byte, with
//! etcdctl's `Error: ...` lines and exit codes. `tests/etcdctl_parity.rs` runs
//! every command against a real etcd next to Debian's etcdctl and compares.
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
pub mod error;
pub mod gofmt;
pub mod gojson;
pub mod kv;
pub mod printer;
pub mod resolve;
pub mod table;
pub mod tls;
pub mod txn;

use clap::Parser as _;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use error::{CtlError, ExitCode};
use std::ffi::OsString;
use std::io::Write;

/// Runs concordctl with these arguments (including the program name) and
/// returns the process exit code.
pub fn run(args: Vec<OsString>) -> i32 {
    let args = match resolve::resolve(args) {
        resolve::Resolution::Run(args) => args,
        resolve::Resolution::UnknownCommand(message) => {
            // cobra reports it, then etcdctl's main reports cobra's error again.
            eprint!("Error: {message}\nRun 'etcdctl --help' for usage.\nError: {message}\n");
            return ExitCode::Error as i32;
        }
        resolve::Resolution::GroupHelp(path) => {
            let mut group = <cli::Cli as clap::CommandFactory>::command();
            for name in path {
                match group.find_subcommand(name) {
                    Some(sub) => group = sub.clone(),
                    None => break,
                }
            }
            let _ = group.print_help();
            return 0;
        }
    };
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let stdin = std::io::stdin();
    let mut out = stdout.lock();
    let mut err = stderr.lock();
    let mut input = stdin.lock();
    let result = execute(cli, &mut out, &mut err, &mut input);
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

fn execute(
    cli: cli::Cli,
    out: &mut dyn Write,
    err: &mut dyn Write,
    stdin: &mut dyn std::io::BufRead,
) -> Result<(), CtlError> {
    let format = printer::Format::parse(&cli.write_out)?;
    if cli.discovery_srv.as_deref().is_some_and(|d| !d.is_empty()) {
        // Accepted for compatibility, but silently ignoring it would talk to
        // the wrong cluster.
        return Err(CtlError::new(
            ExitCode::BadConnection,
            "--discovery-srv (DNS SRV discovery) is not supported; use --endpoints",
        ));
    }
    let credentials = credentials(&cli, err, stdin)?;
    let config = client::ClientConfig {
        endpoints: cli
            .endpoints
            .iter()
            .filter(|e| !e.is_empty())
            .cloned()
            .collect(),
        dial_timeout: cli.dial_timeout,
        command_timeout: cli.command_timeout,
        keepalive_time: cli.keepalive_time,
        keepalive_timeout: cli.keepalive_timeout,
        credentials,
        tls: tls_settings(&cli),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::new(ExitCode::Error, e.to_string()))?;
    let mut ctx = commands::Context {
        config,
        printer: printer::Printer::new(format, cli.hex),
        out,
        err,
        stdin,
    };
    runtime.block_on(commands::run(cli.command, &mut ctx))
}

fn tls_settings(cli: &cli::Cli) -> Option<tls::TlsSettings> {
    tls::settings(
        cli.cacert.as_deref(),
        cli.cert.as_deref(),
        cli.key.as_deref(),
        cli.insecure_transport,
        cli.insecure_skip_tls_verify,
    )
}

/// `--user name[:password]` and `--password`, prompting when only a name is given.
fn credentials(
    cli: &cli::Cli,
    err: &mut dyn Write,
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
    let _ = write!(err, "Password: ");
    let _ = err.flush();
    let mut line = String::new();
    stdin
        .read_line(&mut line)
        .map_err(|e| CtlError::bad_args(format!("failed to read password: {e}")))?;
    // The typed password is not echoed, so end the prompt's line ourselves.
    let _ = writeln!(err);
    Ok(Some((
        user.to_owned(),
        line.trim_end_matches(['\r', '\n']).to_owned(),
    )))
}

fn context_string(e: &clap::Error, kind: ContextKind) -> String {
    match e.get(kind) {
        Some(ContextValue::String(s)) => s.clone(),
        Some(ContextValue::Strings(v)) => v.join(" "),
        _ => String::new(),
    }
}

/// Prints a command-line syntax error as etcdctl (cobra) does and returns its exit code.
fn usage_error(e: &clap::Error) -> i32 {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            0
        }
        ErrorKind::UnknownArgument => {
            let flag = context_string(e, ContextKind::InvalidArg);
            eprintln!(
                "Error: unknown flag: {}",
                flag.split('=').next().unwrap_or_default()
            );
            1
        }
        ErrorKind::InvalidSubcommand => {
            let name = context_string(e, ContextKind::InvalidSubcommand);
            eprintln!("Error: unknown command \"{name}\" for \"etcdctl\"");
            1
        }
        ErrorKind::ValueValidation => {
            // pflag: invalid argument "abc" for "--rev" flag: strconv.ParseInt: ...
            let arg = context_string(e, ContextKind::InvalidArg);
            let flag = arg.split([' ', '=']).next().unwrap_or_default();
            let value = context_string(e, ContextKind::InvalidValue);
            let reason = std::error::Error::source(e)
                .map(ToString::to_string)
                .unwrap_or_default();
            eprintln!("Error: invalid argument \"{value}\" for \"{flag}\" flag: {reason}");
            1
        }
        ErrorKind::InvalidValue if context_string(e, ContextKind::InvalidValue).is_empty() => {
            let arg = context_string(e, ContextKind::InvalidArg);
            let flag = arg.split([' ', '=']).next().unwrap_or_default();
            eprintln!("Error: flag needs an argument: {flag}");
            1
        }
        _ => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or_default();
            eprintln!("Error: {}", first.trim_start_matches("error: "));
            1
        }
    }
}
