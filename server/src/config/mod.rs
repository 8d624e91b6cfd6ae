//! The member's configuration: etcd's flags, `ETCD_*` variables or a YAML file, checked
//! and turned into typed settings. Precedence is etcd's: with `--config-file` only the
//! file counts; otherwise a command-line flag shadows its environment variable, which
//! shadows the default.

pub mod flags;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

pub use flags::{FLAGS, FlagKind, FlagSpec};

/// Everything that can be wrong with the configuration; messages follow etcd's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("flag provided but not defined: -{0}")]
    UnknownFlag(String),
    #[error("flag needs an argument: -{0}")]
    MissingValue(String),
    #[error("bad flag syntax: {0}")]
    BadFlagSyntax(String),
    #[error("'{0}' is not a valid flag")]
    Positional(String),
    #[error("invalid value \"{value}\" for flag -{flag}: {reason}")]
    InvalidValue {
        flag: String,
        value: String,
        reason: String,
    },
    #[error("invalid value {value:?} for environment variable {var}")]
    InvalidEnv { var: String, value: String },
    #[error("error reading the config file: {0}")]
    ConfigFile(String),
    #[error("invalid URL {url:?} in --{flag}: {reason}")]
    BadUrl {
        flag: &'static str,
        url: String,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Whether this member bootstraps a new cluster or joins an existing one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

/// TLS settings of one side (clients or peers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub trusted_ca_file: Option<PathBuf>,
    pub client_cert_auth: bool,
    pub auto_tls: bool,
    pub crl_file: Option<PathBuf>,
    pub allowed_cn: Option<String>,
    pub allowed_hostname: Option<String>,
}

impl TlsSettings {
    /// True when connections on this side are encrypted.
    pub fn enabled(&self) -> bool {
        self.auto_tls || (self.cert_file.is_some() && self.key_file.is_some())
    }
}

/// How auth tokens are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthTokenKind {
    Simple,
    Jwt { options: BTreeMap<String, String> },
}

/// When the server compacts history on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    Disabled,
    /// Keep this much time of history.
    Periodic(Duration),
    /// Keep this many revisions.
    Revision(i64),
}

/// The typed configuration of one member.
#[derive(Clone, Debug)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    pub wal_dir: Option<PathBuf>,
    pub snapshot_count: u64,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    pub initial_election_tick_advance: bool,
    pub listen_peer_urls: Vec<Url>,
    pub listen_client_urls: Vec<Url>,
    pub listen_metrics_urls: Vec<Url>,
    pub initial_advertise_peer_urls: Vec<Url>,
    pub advertise_client_urls: Vec<Url>,
    /// Member name → its peer URLs, in the order given.
    pub initial_cluster: Vec<(String, Vec<Url>)>,
    pub initial_cluster_state: ClusterState,
    pub initial_cluster_token: String,
    /// `--quota-backend-bytes`: `None` when negative (no quota, as etcd), etcd's
    /// 2 GiB when 0.
    pub quota_backend_bytes: Option<u64>,
    pub max_txn_ops: u64,
    pub max_request_bytes: u64,
    pub max_concurrent_streams: u32,
    pub grpc_keepalive_min_time: Duration,
    pub grpc_keepalive_interval: Duration,
    pub grpc_keepalive_timeout: Duration,
    pub strict_reconfig_check: bool,
    pub pre_vote: bool,
    pub auto_compaction: AutoCompaction,
    pub enable_v2: bool,
    pub client_tls: TlsSettings,
    pub peer_tls: TlsSettings,
    pub cipher_suites: Vec<String>,
    /// Allowed CORS origins ([`parse_cors`]): `["*"]` or URLs as Go writes them.
    pub cors: Vec<String>,
    pub host_whitelist: Vec<String>,
    pub auth_token: AuthTokenKind,
    pub bcrypt_cost: u32,
    pub auth_token_ttl: Duration,
    pub metrics_extensive: bool,
    pub log_level: String,
    pub log_outputs: Vec<String>,
    pub initial_corrupt_check: bool,
    /// `--experimental-corrupt-check-time`: the leader's periodic check (zero: off).
    pub corrupt_check_time: Duration,
    pub lease_checkpoint: bool,
    pub watch_progress_notify_interval: Duration,
    pub force_new_cluster: bool,
    pub self_signed_cert_validity_years: u32,
    /// Flags that were set but have no effect in Concord (logged at start-up).
    pub inert_flags_set: Vec<&'static str>,
    /// `ETCD_*` variables that match no flag (logged at start-up, as etcd does).
    pub unknown_env_vars: Vec<String>,
}

/// The default backend quota when `--quota-backend-bytes` is 0 (etcd's 2 GiB).
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// The largest quota etcd recommends (8 GiB); larger values are kept, with etcd's warning.
pub const MAX_QUOTA_BYTES: u64 = 8 * 1024 * 1024 * 1024;

/// What `main` should do after reading its arguments.
#[derive(Debug)]
pub enum Invocation {
    Run(Box<Config>),
    PrintHelp,
    PrintVersion,
}

/// Reads the process's arguments and environment.
pub fn from_process() -> Result<Invocation, ConfigError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env: BTreeMap<String, String> = std::env::vars().collect();
    resolve(
        args,
        |k| env.get(k).cloned(),
        env.keys().cloned().collect(),
        |path| {
            std::fs::read_to_string(path)
                .map_err(|e| ConfigError::ConfigFile(format!("{path}: {e}")))
        },
    )
}

/// Resolves arguments, environment and config file into what to do. Every source is passed
/// in, so tests need no process state.
pub fn resolve<F, R>(
    args: Vec<String>,
    env_lookup: F,
    env_names: Vec<String>,
    read_file: R,
) -> Result<Invocation, ConfigError>
where
    F: Fn(&str) -> Option<String>,
    R: Fn(&str) -> Result<String, ConfigError>,
{
    let command_line = flags::parse_command_line(args)?;
    if command_line.help {
        return Ok(Invocation::PrintHelp);
    }
    if command_line.version {
        return Ok(Invocation::PrintVersion);
    }
    let config_file = command_line
        .config_file
        .clone()
        .or_else(|| env_lookup("ETCD_CONFIG_FILE"));
    let (values, unknown_env_vars) = match config_file {
        Some(path) => (flags::read_config_file(&read_file(&path)?)?, Vec::new()),
        None => {
            let (env_values, unknown) =
                flags::read_environment(&command_line.values, &env_lookup, env_names)?;
            let mut values = env_values;
            values.extend(command_line.values);
            (values, unknown)
        }
    };
    let mut config = Config::from_values(&values)?;
    config.unknown_env_vars = unknown_env_vars;
    Ok(Invocation::Run(Box::new(config)))
}

/// Typed access to the raw values, falling back to each flag's default.
struct Values<'a> {
    raw: &'a BTreeMap<&'static str, String>,
}

impl Values<'_> {
    fn text(&self, name: &'static str) -> String {
        self.raw
            .get(name)
            .cloned()
            .unwrap_or_else(|| default_of(name).to_string())
    }

    fn optional_path(&self, name: &'static str) -> Option<PathBuf> {
        let text = self.text(name);
        (!text.is_empty()).then(|| PathBuf::from(text))
    }

    fn optional_text(&self, name: &'static str) -> Option<String> {
        let text = self.text(name);
        (!text.is_empty()).then_some(text)
    }

    fn boolean(&self, name: &'static str) -> Result<bool, ConfigError> {
        let text = self.text(name);
        flags::parse_go_bool(&text).ok_or_else(|| invalid(name, &text, "parse error"))
    }

    fn unsigned(&self, name: &'static str) -> Result<u64, ConfigError> {
        let text = self.text(name);
        text.parse()
            .map_err(|_| invalid(name, &text, "parse error"))
    }

    fn signed(&self, name: &'static str) -> Result<i64, ConfigError> {
        let text = self.text(name);
        text.parse()
            .map_err(|_| invalid(name, &text, "parse error"))
    }

    fn duration(&self, name: &'static str) -> Result<Duration, ConfigError> {
        let text = self.text(name);
        flags::parse_go_duration(&text).ok_or_else(|| invalid(name, &text, "parse error"))
    }

    fn list(&self, name: &'static str) -> Vec<String> {
        split_list(&self.text(name))
    }

    fn urls(&self, name: &'static str) -> Result<Vec<Url>, ConfigError> {
        self.list(name).iter().map(|u| parse_url(name, u)).collect()
    }

    fn was_set(&self, name: &'static str) -> bool {
        self.raw.contains_key(name)
    }
}

fn default_of(name: &str) -> &'static str {
    flags::spec(name).map(|s| s.default).unwrap_or("")
}

fn invalid(flag: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::InvalidValue {
        flag: flag.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// A listen or advertise URL: `http`/`https`/`unix`/`unixs`, a host and an explicit port,
/// nothing else (etcd rejects paths, queries and fragments).
pub fn parse_url(flag: &'static str, text: &str) -> Result<Url, ConfigError> {
    let bad = |reason: &str| ConfigError::BadUrl {
        flag,
        url: text.into(),
        reason: reason.into(),
    };
    let url = Url::parse(text).map_err(|e| bad(&e.to_string()))?;
    match url.scheme() {
        "http" | "https" => {}
        "unix" | "unixs" => return Ok(url),
        other => {
            return Err(bad(&format!(
                "URL scheme must be http, https, unix, or unixs: {other}"
            )));
        }
    }
    if url.host_str().is_none() {
        return Err(bad("URL must have a host"));
    }
    if url.port().is_none() {
        return Err(bad("URL address does not have the form \"host:port\""));
    }
    if !(url.path().is_empty() || url.path() == "/")
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(bad("URL must not contain a path, query or fragment"));
    }
    Ok(url)
}

/// `--cors` as etcd 3.4 takes it (a `UniqueURLs` flag with `*` as its one exception):
/// exactly `*` allows every origin; anything else is a comma-separated list of URLs,
/// each checked as etcd's `types.NewURLs` checks listen URLs (after Go's `url.Parse`):
/// `http`, `https`, `unix` or `unixs`, `host:port`, no path. An origin is allowed when
/// it equals one of them as Go writes the URL back (scheme in lower case), so
/// `--cors=http://app.example` is refused and `http://app.example:80` only matches an
/// `Origin` that names port 80. Errors read as etcd's, off etcd 3.4.23 started with
/// each value.
pub fn parse_cors(text: &str) -> Result<Vec<String>, ConfigError> {
    if text == "*" {
        return Ok(vec!["*".to_string()]);
    }
    let mut origins = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        let origin = go_listen_url(item).map_err(|reason| invalid("cors", text, &reason))?;
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    Ok(origins)
}

/// etcd's `types.NewURLs` check of one URL over Go's `url.Parse`, with their error texts;
/// the URL as Go's `URL.String` writes it back.
fn go_listen_url(text: &str) -> Result<String, String> {
    let parse_error = |reason: &str| format!("parse {text:?}: {reason}");
    let scheme_error = || format!("URL scheme must be http, https, unix, or unixs: {text}");
    if text.bytes().any(|c| c < 0x20 || c == 0x7f) {
        return Err(parse_error("net/url: invalid control character in URL"));
    }
    let (without_fragment, fragment) = match text.split_once('#') {
        Some((url, fragment)) => (url, Some(fragment)),
        None => (text, None),
    };
    check_go_escapes(fragment.unwrap_or_default()).map_err(|e| parse_error(&e))?;
    // Go's getScheme: letters, then letters, digits, `+`, `-` or `.`, up to a `:`.
    let mut scheme = "";
    for (at, c) in without_fragment.char_indices() {
        match c {
            'a'..='z' | 'A'..='Z' => {}
            '0'..='9' | '+' | '-' | '.' if at > 0 => {}
            ':' if at == 0 => return Err(parse_error("missing protocol scheme")),
            ':' => {
                scheme = &without_fragment[..at];
                break;
            }
            _ => break,
        }
    }
    let rest = if scheme.is_empty() {
        without_fragment
    } else {
        &without_fragment[scheme.len() + 1..]
    };
    let rest = rest.split_once('?').map_or(rest, |(before, _)| before);
    let scheme_lower = scheme.to_ascii_lowercase();
    let (host, path) = match rest.strip_prefix("//") {
        Some(authority_and_path) if !scheme.is_empty() => {
            let (authority, path) = match authority_and_path.find('/') {
                Some(at) => authority_and_path.split_at(at),
                None => (authority_and_path, ""),
            };
            let host = authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host);
            check_go_host(host).map_err(|e| parse_error(&e))?;
            (Some(host), path)
        }
        _ => {
            if scheme.is_empty() && !rest.starts_with('/') {
                let first_segment = rest.split('/').next().unwrap_or_default();
                if first_segment.contains(':') {
                    return Err(parse_error(
                        "first path segment in URL cannot contain colon",
                    ));
                }
            }
            check_go_escapes(rest).map_err(|e| parse_error(&e))?;
            (None, if rest.starts_with('/') { rest } else { "" })
        }
    };
    if !matches!(scheme_lower.as_str(), "http" | "https" | "unix" | "unixs") {
        return Err(scheme_error());
    }
    // Go's net.SplitHostPort: a port after the last colon, brackets around IPv6.
    let host = host.unwrap_or_default();
    let splits = if let Some(bracketed) = host.strip_prefix('[') {
        bracketed
            .split_once(']')
            .is_some_and(|(_, after)| after.starts_with(':') && !after[1..].contains(':'))
    } else {
        host.matches(':').count() == 1
    };
    if !splits {
        return Err(format!(
            "URL address does not have the form \"host:port\": {text}"
        ));
    }
    if !path.is_empty() {
        return Err(format!("URL must not contain a path: {text}"));
    }
    Ok(
        format!("{scheme_lower}:{}", &without_fragment[scheme.len() + 1..])
            + &fragment.map(|f| format!("#{f}")).unwrap_or_default(),
    )
}

/// Go's `unescape`: every `%` starts two hex digits.
fn check_go_escapes(text: &str) -> Result<(), String> {
    let bytes = text.as_bytes();
    for (at, &c) in bytes.iter().enumerate() {
        if c == b'%'
            && !(bytes.get(at + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(at + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            let escape: String = text[at..].chars().take(3).collect();
            return Err(format!("invalid URL escape {escape:?}"));
        }
    }
    Ok(())
}

/// Go's `parseHost` for a host that is not bracketed: the port after the last colon is
/// digits, and the name has no character Go refuses in a host.
fn check_go_host(host: &str) -> Result<(), String> {
    if !host.starts_with('[')
        && let Some((_, port)) = host.rsplit_once(':')
        && !port.bytes().all(|c| c.is_ascii_digit())
    {
        return Err(format!("invalid port \":{port}\" after host"));
    }
    check_go_escapes(host)?;
    if let Some(c) = host.chars().find(|&c| {
        !(c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:[]%".contains(c) || !c.is_ascii())
    }) {
        return Err(format!(
            "invalid character {:?} in host name",
            c.to_string()
        ));
    }
    Ok(())
}

/// `name1=http://a:2380,name1=http://b:2380,name2=...` into members with their URLs.
pub fn parse_initial_cluster(text: &str) -> Result<Vec<(String, Vec<Url>)>, ConfigError> {
    let mut members: Vec<(String, Vec<Url>)> = Vec::new();
    for item in split_list(text) {
        let (name, url) = item.split_once('=').ok_or_else(|| {
            ConfigError::Invalid(format!(
                "--initial-cluster: {item:?} is not of the form name=url"
            ))
        })?;
        let url = parse_url("initial-cluster", url)?;
        match members.iter_mut().find(|(n, _)| n == name) {
            Some((_, urls)) => urls.push(url),
            None => members.push((name.to_string(), vec![url])),
        }
    }
    Ok(members)
}

/// Formats a URL the way etcd prints and hashes it: `http://127.0.0.1:2380`, no slash.
pub fn url_text(url: &Url) -> String {
    let text = url.as_str();
    text.strip_suffix('/').unwrap_or(text).to_string()
}

impl Config {
    /// Builds and checks the configuration from raw flag values.
    pub fn from_values(raw: &BTreeMap<&'static str, String>) -> Result<Config, ConfigError> {
        let v = Values { raw };
        let name = v.text("name");
        let data_dir = v
            .optional_path("data-dir")
            .unwrap_or_else(|| PathBuf::from(format!("{name}.concord")));
        let heartbeat_ms = v.unsigned("heartbeat-interval")?;
        let election_ms = v.unsigned("election-timeout")?;
        if heartbeat_ms == 0 {
            return Err(invalid("heartbeat-interval", "0", "must be positive"));
        }
        if election_ms < 5 * heartbeat_ms {
            return Err(ConfigError::Invalid(format!(
                "--election-timeout[{election_ms}ms] should be at least as 5 times as --heartbeat-interval[{heartbeat_ms}ms]"
            )));
        }
        if election_ms > 50_000 {
            return Err(ConfigError::Invalid(format!(
                "--election-timeout[{election_ms}ms] is too long, and should be set less than 50000ms"
            )));
        }
        let initial_advertise_peer_urls = v.urls("initial-advertise-peer-urls")?;
        let initial_cluster = if v.was_set("initial-cluster") {
            parse_initial_cluster(&v.text("initial-cluster"))?
        } else {
            vec![(name.clone(), initial_advertise_peer_urls.clone())]
        };
        let initial_cluster_state = match v.text("initial-cluster-state").as_str() {
            "new" => ClusterState::New,
            "existing" => ClusterState::Existing,
            other => return Err(invalid("initial-cluster-state", other, "invalid value")),
        };
        let quota = v.signed("quota-backend-bytes")?;
        let quota_backend_bytes = match quota {
            q if q < 0 => None,
            0 => Some(DEFAULT_QUOTA_BYTES),
            q => Some(q as u64),
        };
        let auto_compaction = parse_auto_compaction(
            &v.text("auto-compaction-mode"),
            &v.text("auto-compaction-retention"),
        )?;
        let auth_token = parse_auth_token(&v.text("auth-token"))?;
        let log_level = if v.boolean("debug")? {
            "debug".to_string()
        } else {
            v.text("log-level")
        };
        if !matches!(
            log_level.as_str(),
            "debug" | "info" | "warn" | "error" | "panic" | "fatal"
        ) {
            return Err(invalid(
                "log-level",
                &log_level,
                "must be one of debug, info, warn, error, panic, fatal",
            ));
        }
        let max_concurrent_streams =
            u32::try_from(v.unsigned("max-concurrent-streams")?).unwrap_or(u32::MAX);
        let inert_flags_set = FLAGS
            .iter()
            .filter(|f| !f.effective && raw.get(f.name).is_some_and(|value| value != f.default))
            .map(|f| f.name)
            .collect();
        let config = Config {
            name,
            data_dir,
            wal_dir: v.optional_path("wal-dir"),
            snapshot_count: v.unsigned("snapshot-count")?,
            heartbeat_interval: Duration::from_millis(heartbeat_ms),
            election_timeout: Duration::from_millis(election_ms),
            initial_election_tick_advance: v.boolean("initial-election-tick-advance")?,
            listen_peer_urls: v.urls("listen-peer-urls")?,
            listen_client_urls: v.urls("listen-client-urls")?,
            listen_metrics_urls: v.urls("listen-metrics-urls")?,
            initial_advertise_peer_urls,
            advertise_client_urls: v.urls("advertise-client-urls")?,
            initial_cluster,
            initial_cluster_state,
            initial_cluster_token: v.text("initial-cluster-token"),
            quota_backend_bytes,
            max_txn_ops: v.unsigned("max-txn-ops")?,
            max_request_bytes: v.unsigned("max-request-bytes")?,
            max_concurrent_streams,
            grpc_keepalive_min_time: v.duration("grpc-keepalive-min-time")?,
            grpc_keepalive_interval: v.duration("grpc-keepalive-interval")?,
            grpc_keepalive_timeout: v.duration("grpc-keepalive-timeout")?,
            strict_reconfig_check: v.boolean("strict-reconfig-check")?,
            pre_vote: v.boolean("pre-vote")?,
            auto_compaction,
            enable_v2: v.boolean("enable-v2")?,
            client_tls: TlsSettings {
                cert_file: v.optional_path("cert-file"),
                key_file: v.optional_path("key-file"),
                trusted_ca_file: v.optional_path("trusted-ca-file"),
                client_cert_auth: v.boolean("client-cert-auth")?,
                auto_tls: v.boolean("auto-tls")?,
                crl_file: v.optional_path("client-crl-file"),
                allowed_cn: None,
                allowed_hostname: v.optional_text("client-cert-allowed-hostname"),
            },
            peer_tls: TlsSettings {
                cert_file: v.optional_path("peer-cert-file"),
                key_file: v.optional_path("peer-key-file"),
                trusted_ca_file: v.optional_path("peer-trusted-ca-file"),
                client_cert_auth: v.boolean("peer-client-cert-auth")?,
                auto_tls: v.boolean("peer-auto-tls")?,
                crl_file: v.optional_path("peer-crl-file"),
                allowed_cn: v.optional_text("peer-cert-allowed-cn"),
                allowed_hostname: v.optional_text("peer-cert-allowed-hostname"),
            },
            cipher_suites: v.list("cipher-suites"),
            cors: parse_cors(&v.text("cors"))?,
            host_whitelist: v.list("host-whitelist"),
            auth_token,
            bcrypt_cost: u32::try_from(v.unsigned("bcrypt-cost")?)
                .ok()
                .filter(|c| (4..=31).contains(c))
                .ok_or_else(|| {
                    invalid(
                        "bcrypt-cost",
                        &v.text("bcrypt-cost"),
                        "must be between 4 and 31",
                    )
                })?,
            auth_token_ttl: Duration::from_secs(v.unsigned("auth-token-ttl")?),
            metrics_extensive: match v.text("metrics").as_str() {
                "basic" => false,
                "extensive" => true,
                other => return Err(invalid("metrics", other, "must be basic or extensive")),
            },
            log_level,
            log_outputs: v.list("log-outputs"),
            initial_corrupt_check: v.boolean("experimental-initial-corrupt-check")?,
            corrupt_check_time: v.duration("experimental-corrupt-check-time")?,
            lease_checkpoint: v.boolean("experimental-enable-lease-checkpoint")?,
            watch_progress_notify_interval: v
                .duration("experimental-watch-progress-notify-interval")?,
            force_new_cluster: v.boolean("force-new-cluster")?,
            self_signed_cert_validity_years: u32::try_from(
                v.unsigned("self-signed-cert-validity")?,
            )
            .unwrap_or(u32::MAX)
            .max(1),
            inert_flags_set,
            unknown_env_vars: Vec::new(),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.listen_client_urls.is_empty() {
            return Err(ConfigError::Invalid(
                "--listen-client-urls must not be empty".into(),
            ));
        }
        if self.listen_peer_urls.is_empty() {
            return Err(ConfigError::Invalid(
                "--listen-peer-urls must not be empty".into(),
            ));
        }
        let me = self
            .initial_cluster
            .iter()
            .find(|(name, _)| *name == self.name);
        match (self.initial_cluster_state, me) {
            (_, Some((_, urls))) => {
                let mut listed: Vec<String> = urls.iter().map(url_text).collect();
                let mut advertised: Vec<String> = self
                    .initial_advertise_peer_urls
                    .iter()
                    .map(url_text)
                    .collect();
                listed.sort();
                advertised.sort();
                if listed != advertised {
                    return Err(ConfigError::Invalid(format!(
                        "--initial-cluster has {}={} but missing from --initial-advertise-peer-urls={} (\"{}\"(resolved from {:?}) != \"{}\")",
                        self.name,
                        listed.join(","),
                        advertised.join(","),
                        advertised.join(","),
                        advertised.join(","),
                        listed.join(","),
                    )));
                }
            }
            (_, None) => {
                return Err(ConfigError::Invalid(format!(
                    "couldn't find local name {:?} in the initial cluster configuration",
                    self.name
                )));
            }
        }
        if self.client_tls.enabled()
            && !self
                .listen_client_urls
                .iter()
                .any(|u| u.scheme() == "https" || u.scheme() == "unixs")
            && !self.client_tls.auto_tls
        {
            tracing::warn!("client TLS is configured but no --listen-client-urls uses https");
        }
        let peer_uses_tls = self.listen_peer_urls.iter().any(|u| u.scheme() == "https");
        if peer_uses_tls && !self.peer_tls.enabled() {
            return Err(ConfigError::Invalid(
                "--listen-peer-urls uses https but neither --peer-cert-file/--peer-key-file nor --peer-auto-tls is set"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Election timeout in heartbeat ticks (raft's `election_tick`).
    pub fn election_ticks(&self) -> usize {
        let ticks = self.election_timeout.as_millis() / self.heartbeat_interval.as_millis().max(1);
        usize::try_from(ticks).unwrap_or(usize::MAX).max(2)
    }

    /// The smallest TTL a lease may have: ceil(1.5 x election timeout), in seconds.
    pub fn min_lease_ttl_seconds(&self) -> i64 {
        let millis = self.election_timeout.as_millis() as i64 * 3 / 2;
        (millis + 999) / 1000
    }

    /// Where the raft log lives: `--wal-dir`, or `<data-dir>/member/wal`.
    pub fn wal_path(&self) -> PathBuf {
        self.wal_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("member").join("wal"))
    }

    /// Where the MVCC backend lives.
    pub fn backend_path(&self) -> PathBuf {
        self.data_dir.join("member").join("db")
    }
}

fn parse_auto_compaction(mode: &str, retention: &str) -> Result<AutoCompaction, ConfigError> {
    match mode {
        "periodic" => {
            if retention.is_empty() || retention == "0" {
                return Ok(AutoCompaction::Disabled);
            }
            // A bare number means hours, as in etcd.
            let duration = match retention.parse::<u64>() {
                Ok(hours) => Duration::from_secs(hours * 3600),
                Err(_) => flags::parse_go_duration(retention).ok_or_else(|| {
                    invalid("auto-compaction-retention", retention, "parse error")
                })?,
            };
            Ok(if duration.is_zero() {
                AutoCompaction::Disabled
            } else {
                AutoCompaction::Periodic(duration)
            })
        }
        "revision" => {
            let revisions: i64 = retention
                .parse()
                .map_err(|_| invalid("auto-compaction-retention", retention, "parse error"))?;
            Ok(if revisions == 0 {
                AutoCompaction::Disabled
            } else {
                AutoCompaction::Revision(revisions)
            })
        }
        other => Err(invalid(
            "auto-compaction-mode",
            other,
            "must be periodic or revision",
        )),
    }
}

fn parse_auth_token(text: &str) -> Result<AuthTokenKind, ConfigError> {
    let mut parts = text.split(',');
    match parts.next().unwrap_or_default() {
        "simple" | "" => Ok(AuthTokenKind::Simple),
        "jwt" => {
            let options = parts
                .map(|p| {
                    p.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| invalid("auth-token", text, "jwt options must be key=value"))
                })
                .collect::<Result<_, _>>()?;
            Ok(AuthTokenKind::Jwt { options })
        }
        other => Err(invalid("auth-token", other, "unknown token type")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cors_is_checked_as_etcd_checks_it() {
        use super::parse_cors;
        // Read off etcd 3.4.23 started with --cors=VALUE (exit status 2 for errors).
        let accepted: &[(&str, &[&str])] = &[
            ("*", &["*"]),
            ("http://app.example:80", &["http://app.example:80"]),
            ("https://a:1,http://b:2", &["https://a:1", "http://b:2"]),
            ("HTTP://x:80 ", &["http://x:80"]),
            ("http://[::1]:80", &["http://[::1]:80"]),
            ("http://:80", &["http://:80"]),
            ("unix://x:1", &["unix://x:1"]),
            ("http://x:80?q=1", &["http://x:80?q=1"]),
            ("http://x:80,http://x:80", &["http://x:80"]),
        ];
        for (value, origins) in accepted {
            assert_eq!(parse_cors(value).unwrap(), *origins, "{value}");
        }
        let refused: &[(&str, &str)] = &[
            (
                "http://app.example",
                "URL address does not have the form \"host:port\": http://app.example",
            ),
            (
                "app.example:80",
                "URL scheme must be http, https, unix, or unixs: app.example:80",
            ),
            (
                "http://app.example,https://b.example:8443",
                "URL address does not have the form \"host:port\": http://app.example",
            ),
            ("://bad", "parse \"://bad\": missing protocol scheme"),
            (
                "http://",
                "URL address does not have the form \"host:port\": http://",
            ),
            (
                "ftp://x",
                "URL scheme must be http, https, unix, or unixs: ftp://x",
            ),
            (
                "http://a b",
                "parse \"http://a b\": invalid character \" \" in host name",
            ),
            ("", "URL scheme must be http, https, unix, or unixs: "),
            (
                "http://app.example/path",
                "URL address does not have the form \"host:port\": http://app.example/path",
            ),
            (
                " http://x",
                "URL address does not have the form \"host:port\": http://x",
            ),
            (
                "http://x,",
                "URL address does not have the form \"host:port\": http://x",
            ),
            (
                "localhost",
                "URL scheme must be http, https, unix, or unixs: localhost",
            ),
            ("%zz", "parse \"%zz\": invalid URL escape \"%zz\""),
            (
                "http://x:80/path",
                "URL must not contain a path: http://x:80/path",
            ),
            (
                "http://x:80,*",
                "URL scheme must be http, https, unix, or unixs: *",
            ),
            ("**", "URL scheme must be http, https, unix, or unixs: **"),
            (
                "http://x:abc",
                "parse \"http://x:abc\": invalid port \":abc\" after host",
            ),
        ];
        for (value, reason) in refused {
            assert_eq!(
                parse_cors(value).unwrap_err().to_string(),
                format!("invalid value \"{value}\" for flag -cors: {reason}"),
                "{value}"
            );
        }
    }

    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let args = args.iter().map(|s| s.to_string()).collect();
        match resolve(
            args,
            |k| env.get(k).cloned(),
            env.keys().cloned().collect(),
            |_| Err(ConfigError::ConfigFile("no file in this test".into())),
        )? {
            Invocation::Run(config) => Ok(*config),
            other => panic!("expected a run, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_etcds() {
        let config = run(&[], &[]).unwrap();
        assert_eq!(config.name, "default");
        assert_eq!(config.data_dir, PathBuf::from("default.concord"));
        assert_eq!(
            url_text(&config.listen_client_urls[0]),
            "http://localhost:2379"
        );
        assert_eq!(
            url_text(&config.listen_peer_urls[0]),
            "http://localhost:2380"
        );
        assert_eq!(
            config.initial_cluster,
            vec![(
                "default".to_string(),
                vec![Url::parse("http://localhost:2380").unwrap()]
            )]
        );
        assert_eq!(config.heartbeat_interval, Duration::from_millis(100));
        assert_eq!(config.election_ticks(), 10);
        assert_eq!(config.max_request_bytes, 1_572_864);
        assert_eq!(config.max_txn_ops, 128);
        assert_eq!(config.quota_backend_bytes, Some(DEFAULT_QUOTA_BYTES));
        assert_eq!(config.snapshot_count, 10_000);
        assert_eq!(config.min_lease_ttl_seconds(), 2);
        assert_eq!(config.initial_cluster_state, ClusterState::New);
        assert_eq!(
            config.wal_path(),
            PathBuf::from("default.concord/member/wal")
        );
    }

    #[test]
    fn three_member_flags_and_environment() {
        let config = run(
            &[
                "--name", "infra2",
                "--initial-advertise-peer-urls", "http://127.0.0.1:22380",
                "--listen-peer-urls", "http://127.0.0.1:22380",
                "--initial-cluster", "infra1=http://127.0.0.1:12380,infra2=http://127.0.0.1:22380,infra3=http://127.0.0.1:32380",
            ],
            &[("ETCD_INITIAL_CLUSTER_STATE", "existing"), ("ETCD_NAME", "ignored"), ("ETCD_SNAPSHOT_COUNT", "42")],
        )
        .unwrap();
        assert_eq!(config.name, "infra2");
        assert_eq!(config.initial_cluster.len(), 3);
        assert_eq!(config.initial_cluster_state, ClusterState::Existing);
        assert_eq!(config.snapshot_count, 42);
        assert_eq!(config.data_dir, PathBuf::from("infra2.concord"));
    }

    #[test]
    fn inconsistent_settings_are_rejected_with_etcds_words() {
        let err = run(
            &[
                "--name",
                "x",
                "--initial-cluster",
                "y=http://localhost:2380",
            ],
            &[],
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("couldn't find local name \"x\""),
            "{err}"
        );
        let err = run(&["--election-timeout", "100"], &[]).unwrap_err();
        assert!(
            err.to_string().contains("should be at least as 5 times"),
            "{err}"
        );
        let err = run(&["--initial-cluster-state", "bogus"], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value \"bogus\" for flag -initial-cluster-state: invalid value"
        );
        let err = run(&["--listen-client-urls", "http://127.0.0.1"], &[]).unwrap_err();
        assert!(err.to_string().contains("host:port"), "{err}");
        let err = run(&["--listen-client-urls", "ftp://127.0.0.1:1"], &[]).unwrap_err();
        assert!(err.to_string().contains("scheme"), "{err}");
        let err = run(&["--initial-cluster", "default=http://localhost:9999"], &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("missing from --initial-advertise-peer-urls"),
            "{err}"
        );
        let err = run(&["--listen-peer-urls", "https://localhost:2380"], &[]).unwrap_err();
        assert!(err.to_string().contains("peer-auto-tls"), "{err}");
    }

    #[test]
    fn config_file_replaces_flags_and_environment() {
        let args = vec![
            "--config-file".to_string(),
            "/etc/concord.yml".to_string(),
            "--name".to_string(),
            "ignored".to_string(),
        ];
        let invocation = resolve(
            args,
            |_| Some("also-ignored".into()),
            Vec::new(),
            |path| {
                assert_eq!(path, "/etc/concord.yml");
                Ok("name: fromfile\ninitial-cluster: fromfile=http://localhost:2380\n".into())
            },
        )
        .unwrap();
        let Invocation::Run(config) = invocation else {
            panic!("expected run")
        };
        assert_eq!(config.name, "fromfile");
    }

    #[test]
    fn auto_compaction_and_tokens() {
        assert_eq!(
            parse_auto_compaction("periodic", "1").unwrap(),
            AutoCompaction::Periodic(Duration::from_secs(3600))
        );
        assert_eq!(
            parse_auto_compaction("periodic", "30m").unwrap(),
            AutoCompaction::Periodic(Duration::from_secs(1800))
        );
        assert_eq!(
            parse_auto_compaction("revision", "1000").unwrap(),
            AutoCompaction::Revision(1000)
        );
        assert_eq!(
            parse_auto_compaction("periodic", "0").unwrap(),
            AutoCompaction::Disabled
        );
        assert!(parse_auto_compaction("sometimes", "1").is_err());
        assert_eq!(parse_auth_token("simple").unwrap(), AuthTokenKind::Simple);
        let AuthTokenKind::Jwt { options } =
            parse_auth_token("jwt,pub-key=a.pub,priv-key=a.priv,sign-method=RS256").unwrap()
        else {
            panic!("expected jwt")
        };
        assert_eq!(options["sign-method"], "RS256");
    }

    #[test]
    fn inert_flags_are_remembered_for_the_start_up_log() {
        let config = run(&["--enable-pprof", "--max-wals", "5"], &[]).unwrap();
        assert_eq!(config.inert_flags_set, vec!["enable-pprof"]);
    }
}
