//! `ETCDCTL_API=2 concordctl ...`: etcdctl 3.4's v2 command tree (urfave/cli
//! v1 as etcdctl uses it), speaking HTTP to `/v2/keys`, `/v2/members` and
//! `/v2/auth`: the key commands (`get set mk mkdir setdir update updatedir
//! rm rmdir ls watch exec-watch`), `member`, `cluster-health`, `user`, `role`,
//! `auth`, and `backup` of a Concord data dir. Output (`-o simple|extended|json`),
//! error texts and exit codes are etcdctl v2's.

pub mod auth;
pub mod backup;
pub mod client;
pub mod cluster;
pub mod flags;
pub mod help;
pub mod keys;

use client::{Client, ClientError};
use flags::{Kind, Parsed, Spec, flag};
use std::ffi::OsString;
use std::io::Write;
use std::time::Duration;

/// etcdctl v2's exit codes (`ctlv2/command/error.go`).
pub const EXIT_BAD_ARGS: i32 = 1;
pub const EXIT_BAD_CONNECTION: i32 = 2;
pub const EXIT_SERVER_ERROR: i32 = 4;
pub const EXIT_CLUSTER_NOT_HEALTHY: i32 = 5;

/// The default endpoints when no flag or variable names any.
const DEFAULT_ENDPOINTS: &str = "http://127.0.0.1:2379,http://127.0.0.1:4001";
/// etcdctl v2's dial timeout (30 s, or the total timeout when shorter).
const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(30);

const GLOBAL_FLAGS: &[Spec] = &[
    flag(&["debug"], Kind::Bool),
    flag(&["no-sync"], Kind::Bool),
    flag(&["output", "o"], Kind::String),
    flag(&["discovery-srv", "D"], Kind::String),
    flag(&["insecure-discovery"], Kind::Bool),
    flag(&["peers", "C"], Kind::String),
    flag(&["endpoint"], Kind::String),
    flag(&["endpoints"], Kind::String),
    flag(&["cert-file"], Kind::String),
    flag(&["key-file"], Kind::String),
    flag(&["ca-file"], Kind::String),
    flag(&["username", "u"], Kind::String),
    flag(&["timeout"], Kind::Duration),
    flag(&["total-timeout"], Kind::Duration),
    flag(&["version", "v"], Kind::Bool),
];

/// A command ended: its exit code (what it had to say is already printed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit(pub i32);

pub type Outcome = Result<(), Exit>;

/// The global options every command reads.
#[derive(Debug, Clone)]
pub struct Globals {
    pub parsed: Parsed,
}

impl Globals {
    pub fn output(&self) -> String {
        if self.parsed.strings("output").is_empty() {
            "simple".to_owned()
        } else {
            self.parsed.string("output")
        }
    }

    pub fn debug(&self) -> bool {
        self.parsed.bool("debug")
    }

    pub fn total_timeout(&self) -> Duration {
        self.parsed
            .duration("total-timeout")
            .unwrap_or(Duration::from_secs(5))
    }

    fn timeout(&self) -> Duration {
        self.parsed
            .duration("timeout")
            .unwrap_or(Duration::from_secs(2))
    }

    fn flag_or_env(&self, flag: &str, env: &str) -> String {
        let v = self.parsed.string(flag);
        if v.is_empty() {
            std::env::var(env).unwrap_or_default()
        } else {
            v
        }
    }

    /// `getPeersFlagValue`: flag, then variable, for each of the three names.
    fn endpoints(&self) -> Result<Vec<String>, String> {
        let mut value = String::new();
        for (flag, env) in [
            ("endpoints", "ETCDCTL_ENDPOINTS"),
            ("endpoint", "ETCDCTL_ENDPOINT"),
            ("peers", "ETCDCTL_PEERS"),
        ] {
            if value.is_empty() {
                value = self.flag_or_env(flag, env);
            }
        }
        if value.is_empty() {
            value = DEFAULT_ENDPOINTS.to_owned();
        }
        value.split(',').map(go_endpoint).collect()
    }

    /// `newClient`: endpoints (SRV discovery first), TLS, credentials.
    pub async fn new_client(&self) -> Result<Client, String> {
        let domain = self.flag_or_env("discovery-srv", "ETCDCTL_DISCOVERY_SRV");
        let insecure = self.parsed.bool("insecure-discovery")
            || !std::env::var("ETCDCTL_INSECURE_DISCOVERY")
                .unwrap_or_default()
                .is_empty();
        let mut endpoints = Vec::new();
        if !domain.is_empty() {
            let resolv_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            let service = std::env::var("ETCDCTL_DISCOVERY_SRV_NAME").unwrap_or_default();
            endpoints = crate::discovery::endpoints(
                &domain,
                &service,
                true,
                crate::discovery::nameserver(&resolv_conf),
            )
            .await
            .map_err(|e| e.message)?;
            if !insecure {
                endpoints.retain(|ep| {
                    let keep = !ep.starts_with("http://");
                    if !keep {
                        eprintln!("ignoring discovered insecure endpoint \"{ep}\"");
                    }
                    keep
                });
            }
        }
        if endpoints.is_empty() {
            endpoints = self.endpoints()?;
        }
        let ca = self.flag_or_env("ca-file", "ETCDCTL_CA_FILE");
        let cert = self.flag_or_env("cert-file", "ETCDCTL_CERT_FILE");
        let key = self.flag_or_env("key-file", "ETCDCTL_KEY_FILE");
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let tls = client::tls_config(
            non_empty(&ca).as_deref(),
            non_empty(&cert).as_deref(),
            non_empty(&key).as_deref(),
        )
        .map_err(|e| e.message)?;
        let server_name = (!domain.is_empty() && !insecure).then(|| domain.clone());
        let total = self.total_timeout();
        let dial = if !total.is_zero() && total < DEFAULT_DIAL_TIMEOUT {
            total
        } else {
            DEFAULT_DIAL_TIMEOUT
        };
        let user = self.flag_or_env("username", "ETCDCTL_USERNAME");
        let credentials = if user.is_empty() {
            None
        } else {
            Some(username_password("Password: ", &user)?)
        };
        Ok(Client::new(
            endpoints,
            Some(tls),
            server_name,
            self.timeout(),
            dial,
            credentials,
        ))
    }

    /// `mustNewClient`: a client, synchronised with the member list unless
    /// `--no-sync`; failures end the program as etcdctl's do.
    pub async fn must_client(&self) -> Result<Client, Exit> {
        let mut client = match self.new_client().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return Err(Exit(1));
            }
        };
        let debug = self.debug();
        client.set_debug(debug);
        if !self.parsed.bool("no-sync") {
            if debug {
                eprintln!(
                    "start to sync cluster using endpoints({})",
                    client.endpoints().join(",")
                );
            }
            let result = match tokio::time::timeout(self.total_timeout(), client.sync()).await {
                Ok(r) => r,
                Err(_) => Err(ClientError::DeadlineExceeded),
            };
            if let Err(e) = result {
                if e == ClientError::NoEndpoints {
                    eprintln!("etcd cluster has no published client endpoints.");
                    eprintln!(
                        "Try '--no-sync' if you want to access non-published client endpoints({}).",
                        client.endpoints().join(",")
                    );
                    return Err(self.handle_error(EXIT_SERVER_ERROR, &e));
                }
                if e.is_connection_error() {
                    return Err(self.handle_error(EXIT_BAD_CONNECTION, &e));
                }
            }
            if debug {
                eprintln!("got endpoints({}) after sync", client.endpoints().join(","));
            }
        }
        if debug {
            eprintln!("Cluster-Endpoints: {}", client.endpoints().join(", "));
        }
        Ok(client)
    }

    /// `mustNewClientNoSync`.
    pub async fn must_client_no_sync(&self) -> Result<Client, Exit> {
        let mut client = match self.new_client().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return Err(Exit(1));
            }
        };
        if self.debug() {
            eprintln!("Cluster-Endpoints: {}", client.endpoints().join(", "));
            client.set_debug(true);
        }
        Ok(client)
    }

    /// `handleError` for a client failure.
    pub fn handle_error(&self, code: i32, e: &ClientError) -> Exit {
        eprintln!("Error:  {e}");
        if let Some(detail) = e.detail() {
            eprintln!("{detail}");
        }
        Exit(code)
    }

    /// `handleError` for an argument error.
    pub fn fail(&self, code: i32, message: &str) -> Exit {
        eprintln!("Error:  {message}");
        Exit(code)
    }

    /// Runs `f` under the command's total timeout.
    pub async fn with_deadline<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        match tokio::time::timeout(self.total_timeout(), f).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::DeadlineExceeded),
        }
    }
}

/// An endpoint as `url.Parse` reads it, with `http` when it names no scheme:
/// `127.0.0.1:2379` is refused as Go refuses it; `localhost:2379` names the
/// scheme `localhost`, which the client then cannot speak.
fn go_endpoint(ep: &str) -> Result<String, String> {
    if ep.contains("://") {
        return Ok(ep.to_owned());
    }
    let colon = ep.find(':');
    let slash = ep.find('/').unwrap_or(ep.len());
    match colon {
        Some(i) if i < slash => {
            let scheme = &ep[..i];
            let valid_scheme = scheme
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
            if valid_scheme {
                Ok(ep.to_owned())
            } else {
                Err(format!(
                    "parse {}: first path segment in URL cannot contain colon",
                    flags::go_quote(ep)
                ))
            }
        }
        _ => Ok(format!("http://{ep}")),
    }
}

/// `getUsernamePassword`: `name:password`, or a prompt for the password.
pub fn username_password(prompt: &str, flag: &str) -> Result<(String, String), String> {
    if let Some((user, password)) = flag.split_once(':') {
        return Ok((user.to_owned(), password.to_owned()));
    }
    Ok((flag.to_owned(), prompt_password(prompt)?))
}

/// speakeasy's `Ask`: the prompt, a line read with the echo off.
pub fn prompt_password(prompt: &str) -> Result<String, String> {
    let mut out = std::io::stdout();
    let line = crate::auth::read_hidden_line(&mut std::io::stdin().lock(), || {
        write!(out, "{prompt}")?;
        out.flush()
    })
    .map_err(|e| e.to_string())?;
    let _ = writeln!(out);
    Ok(line)
}

/// A command's flags and how it runs.
#[derive(Debug, Clone, Copy)]
pub struct Command {
    pub name: &'static str,
    pub flags: &'static [Spec],
}

const COMMANDS: &[&str] = &[
    "backup",
    "cluster-health",
    "mk",
    "mkdir",
    "rm",
    "rmdir",
    "get",
    "ls",
    "set",
    "setdir",
    "update",
    "updatedir",
    "watch",
    "exec-watch",
    "member",
    "user",
    "role",
    "auth",
];

const GROUPS: &[(&str, &[&str])] = &[
    ("member", &["list", "add", "remove", "update"]),
    (
        "user",
        &["add", "get", "list", "remove", "grant", "revoke", "passwd"],
    ),
    ("role", &["add", "get", "list", "remove", "grant", "revoke"]),
    ("auth", &["enable", "disable"]),
];

/// The flags of the (sub)command at `path`.
fn command_flags(path: &[&str]) -> &'static [Spec] {
    const TTL: Spec = flag(&["ttl"], Kind::Int);
    match path {
        ["backup"] => &[
            Spec {
                names: &["data-dir"],
                kind: Kind::String,
            },
            Spec {
                names: &["wal-dir"],
                kind: Kind::String,
            },
            Spec {
                names: &["backup-dir"],
                kind: Kind::String,
            },
            Spec {
                names: &["backup-wal-dir"],
                kind: Kind::String,
            },
            Spec {
                names: &["with-v3"],
                kind: Kind::Bool,
            },
        ],
        ["cluster-health"] => &[Spec {
            names: &["forever", "f"],
            kind: Kind::Bool,
        }],
        ["mk"] => &[
            Spec {
                names: &["in-order"],
                kind: Kind::Bool,
            },
            TTL,
        ],
        ["mkdir"] | ["setdir"] | ["update"] | ["updatedir"] => &[TTL],
        ["rm"] => &[
            Spec {
                names: &["dir"],
                kind: Kind::Bool,
            },
            Spec {
                names: &["recursive", "r"],
                kind: Kind::Bool,
            },
            Spec {
                names: &["with-value"],
                kind: Kind::String,
            },
            Spec {
                names: &["with-index"],
                kind: Kind::Int,
            },
        ],
        ["get"] => &[
            Spec {
                names: &["sort"],
                kind: Kind::Bool,
            },
            Spec {
                names: &["quorum", "q"],
                kind: Kind::Bool,
            },
        ],
        ["ls"] => &[
            Spec {
                names: &["sort"],
                kind: Kind::Bool,
            },
            Spec {
                names: &["recursive", "r"],
                kind: Kind::Bool,
            },
            Spec {
                names: &["p"],
                kind: Kind::Bool,
            },
            Spec {
                names: &["quorum", "q"],
                kind: Kind::Bool,
            },
        ],
        ["set"] => &[
            TTL,
            Spec {
                names: &["swap-with-value"],
                kind: Kind::String,
            },
            Spec {
                names: &["swap-with-index"],
                kind: Kind::Int,
            },
        ],
        ["watch"] => &[
            Spec {
                names: &["forever", "f"],
                kind: Kind::Bool,
            },
            Spec {
                names: &["after-index"],
                kind: Kind::Int,
            },
            Spec {
                names: &["recursive", "r"],
                kind: Kind::Bool,
            },
        ],
        ["exec-watch"] => &[
            Spec {
                names: &["after-index"],
                kind: Kind::Int,
            },
            Spec {
                names: &["recursive", "r"],
                kind: Kind::Bool,
            },
        ],
        ["user", "grant"] | ["user", "revoke"] => &[Spec {
            names: &["roles"],
            kind: Kind::StringSlice,
        }],
        ["role", "grant"] | ["role", "revoke"] => &[
            Spec {
                names: &["path"],
                kind: Kind::String,
            },
            Spec {
                names: &["read"],
                kind: Kind::Bool,
            },
            Spec {
                names: &["write"],
                kind: Kind::Bool,
            },
            Spec {
                names: &["readwrite", "rw"],
                kind: Kind::Bool,
            },
        ],
        _ => &[],
    }
}

fn print_page(path: &[&str]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(help::page(path).unwrap_or_default().as_bytes());
    let _ = out.flush();
}

/// urfave's help command: `help [command]`, exit 3 for an unknown topic.
fn help_topic(parent: &[&str], topic: Option<&str>) -> i32 {
    match topic {
        None => {
            print_page(parent);
            0
        }
        Some(name) => {
            let mut path = parent.to_vec();
            path.push(name);
            if help::page(&path).is_some() {
                print_page(&path);
                0
            } else {
                eprintln!("No help topic for '{name}'");
                3
            }
        }
    }
}

/// Runs etcdctl v2 with these arguments (the program name first).
pub fn run(args: Vec<OsString>) -> i32 {
    let args: Vec<String> = args
        .into_iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let parsed = match flags::parse(GLOBAL_FLAGS, &args) {
        Ok(p) => p,
        Err(e) => {
            print!("Incorrect Usage. {e}\n\n");
            print_page(&[]);
            eprintln!("{e}");
            return 1;
        }
    };
    if parsed.help() {
        print_page(&[]);
        return 0;
    }
    if parsed.bool("version") {
        println!("etcdctl version: 3.4.23");
        println!("API version: 2");
        return 0;
    }
    let rest = parsed.args.clone();
    let globals = Globals { parsed };
    let Some(name) = rest.first().map(String::as_str) else {
        print_page(&[]);
        return 0;
    };
    if name == "help" || name == "h" {
        return help_topic(&[], rest.get(1).map(String::as_str));
    }
    let Some(&name) = COMMANDS.iter().find(|c| **c == name) else {
        eprintln!("No help topic for '{name}'");
        return 3;
    };
    let tail = &rest[1..];
    if let Some((_, subs)) = GROUPS.iter().find(|(g, _)| *g == name) {
        let group = match flags::parse(&[], tail) {
            Ok(p) => p,
            Err(e) => {
                print!("Incorrect Usage. {e}\n\n");
                print_page(&[name]);
                eprintln!("{e}");
                return 1;
            }
        };
        if group.help() {
            print_page(&[name]);
            return 0;
        }
        let Some(sub) = group.args.first().map(String::as_str) else {
            print_page(&[name]);
            return 0;
        };
        if sub == "help" || sub == "h" {
            return help_topic(&[name], group.args.get(1).map(String::as_str));
        }
        let Some(&sub) = subs.iter().find(|s| **s == sub) else {
            eprintln!("No help topic for '{sub}'");
            return 3;
        };
        return run_command(&globals, &[name, sub], &group.args[1..]);
    }
    run_command(&globals, &[name], tail)
}

fn run_command(globals: &Globals, path: &[&'static str], tail: &[String]) -> i32 {
    let specs = command_flags(path);
    let reordered = flags::reorder(specs, tail);
    let local = match flags::parse(specs, &reordered) {
        Ok(p) => p,
        Err(e) => {
            print!("Incorrect Usage: {e}\n\n");
            print_page(path);
            eprintln!("{e}");
            return 1;
        }
    };
    if local.help() {
        print_page(path);
        return 0;
    }
    if path == ["backup"] {
        // Offline: files only, no client and no runtime.
        return match backup::run(&local) {
            Ok(()) => 0,
            Err(Exit(code)) => code,
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let outcome = runtime.block_on(async {
        match path {
            ["cluster-health"] => cluster::health(globals, &local).await,
            ["member", sub] => cluster::member(globals, sub, &local).await,
            ["user", sub] => auth::user(globals, sub, &local).await,
            ["role", sub] => auth::role(globals, sub, &local).await,
            ["auth", sub] => auth::enable_disable(globals, *sub == "enable", &local).await,
            [cmd] => keys::run(globals, cmd, &local).await,
            _ => Err(Exit(1)),
        }
    });
    let _ = std::io::stdout().flush();
    match outcome {
        Ok(()) => 0,
        Err(Exit(code)) => code,
    }
}
