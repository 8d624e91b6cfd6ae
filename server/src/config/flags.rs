//! etcd's command-line flags, their `ETCD_*` environment twins and the YAML config file,
//! read into one table of raw values. Parsing follows Go's `flag` package, because that is
//! what etcd users and tooling type: `-name x`, `--name x`, `--name=x`, and booleans only as
//! `--flag` or `--flag=false`.

use std::collections::BTreeMap;

use super::ConfigError;

/// How a flag takes its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagKind {
    Text,
    Bool,
    Unsigned,
    Signed,
    /// A Go duration such as `10m`, `500ms`, `2h`.
    Duration,
}

/// One flag etcd accepts. `effective` is false for flags Concord accepts for drop-in
/// compatibility but whose behaviour it does not have (they are logged at start-up when set).
#[derive(Clone, Copy, Debug)]
pub struct FlagSpec {
    pub name: &'static str,
    pub kind: FlagKind,
    pub default: &'static str,
    pub help: &'static str,
    pub effective: bool,
}

const fn flag(
    name: &'static str,
    kind: FlagKind,
    default: &'static str,
    help: &'static str,
) -> FlagSpec {
    FlagSpec {
        name,
        kind,
        default,
        help,
        effective: true,
    }
}

const fn inert(name: &'static str, kind: FlagKind, default: &'static str) -> FlagSpec {
    FlagSpec {
        name,
        kind,
        default,
        help: "accepted for etcd compatibility; no effect",
        effective: false,
    }
}

use FlagKind::{Bool, Duration, Signed, Text, Unsigned};

/// Every flag of etcd 3.4 (plus the 3.5 ones deployments use), in `etcd --help` order.
pub const FLAGS: &[FlagSpec] = &[
    flag(
        "name",
        Text,
        "default",
        "Human-readable name for this member.",
    ),
    flag(
        "data-dir",
        Text,
        "",
        "Path to the data directory (default '${name}.concord').",
    ),
    flag(
        "wal-dir",
        Text,
        "",
        "Path to the dedicated raft log directory.",
    ),
    flag(
        "snapshot-count",
        Unsigned,
        "10000",
        "Number of committed transactions to trigger a snapshot.",
    ),
    flag(
        "heartbeat-interval",
        Unsigned,
        "100",
        "Time (in milliseconds) of a heartbeat interval.",
    ),
    flag(
        "election-timeout",
        Unsigned,
        "1000",
        "Time (in milliseconds) for an election to timeout.",
    ),
    flag(
        "initial-election-tick-advance",
        Bool,
        "true",
        "Whether to fast-forward initial election ticks on boot.",
    ),
    flag(
        "listen-peer-urls",
        Text,
        "http://localhost:2380",
        "List of URLs to listen on for peer traffic.",
    ),
    flag(
        "listen-client-urls",
        Text,
        "http://localhost:2379",
        "List of URLs to listen on for client traffic.",
    ),
    inert("max-snapshots", Unsigned, "5"),
    inert("max-wals", Unsigned, "5"),
    flag(
        "quota-backend-bytes",
        Signed,
        "0",
        "Raise alarms when backend size exceeds the given quota (0 defaults to 2 GiB).",
    ),
    inert("backend-batch-interval", Duration, ""),
    inert("backend-batch-limit", Unsigned, "0"),
    flag(
        "max-txn-ops",
        Unsigned,
        "128",
        "Maximum number of operations permitted in a transaction.",
    ),
    flag(
        "max-request-bytes",
        Unsigned,
        "1572864",
        "Maximum client request size in bytes the server will accept.",
    ),
    flag(
        "max-concurrent-streams",
        Unsigned,
        "4294967295",
        "Maximum concurrent streams that each client can open at a time.",
    ),
    flag(
        "grpc-keepalive-min-time",
        Duration,
        "5s",
        "Minimum interval duration that a client should wait before pinging server.",
    ),
    flag(
        "grpc-keepalive-interval",
        Duration,
        "2h",
        "Frequency duration of server-to-client ping to check if a connection is alive.",
    ),
    flag(
        "grpc-keepalive-timeout",
        Duration,
        "20s",
        "Additional duration of wait before closing a non-responsive connection.",
    ),
    flag(
        "initial-advertise-peer-urls",
        Text,
        "http://localhost:2380",
        "List of this member's peer URLs to advertise to the rest of the cluster.",
    ),
    flag(
        "initial-cluster",
        Text,
        "",
        "Initial cluster configuration for bootstrapping (default '${name}=${initial-advertise-peer-urls}').",
    ),
    flag(
        "initial-cluster-state",
        Text,
        "new",
        "Initial cluster state ('new' or 'existing').",
    ),
    flag(
        "initial-cluster-token",
        Text,
        "etcd-cluster",
        "Initial cluster token for the cluster during bootstrap.",
    ),
    flag(
        "advertise-client-urls",
        Text,
        "http://localhost:2379",
        "List of this member's client URLs to advertise to the public.",
    ),
    inert("discovery", Text, ""),
    inert("discovery-fallback", Text, "proxy"),
    inert("discovery-proxy", Text, ""),
    inert("discovery-srv", Text, ""),
    inert("discovery-srv-name", Text, ""),
    flag(
        "strict-reconfig-check",
        Bool,
        "true",
        "Reject reconfiguration requests that would cause quorum loss.",
    ),
    flag(
        "pre-vote",
        Bool,
        "true",
        "Enable the raft Pre-Vote algorithm (always on in Concord).",
    ),
    flag(
        "auto-compaction-retention",
        Text,
        "0",
        "Auto compaction retention length. 0 means disable auto compaction.",
    ),
    flag(
        "auto-compaction-mode",
        Text,
        "periodic",
        "Interpret 'auto-compaction-retention' one of: periodic|revision.",
    ),
    flag(
        "enable-v2",
        Bool,
        "false",
        "Accept etcd V2 client requests.",
    ),
    flag(
        "cert-file",
        Text,
        "",
        "Path to the client server TLS cert file.",
    ),
    flag(
        "key-file",
        Text,
        "",
        "Path to the client server TLS key file.",
    ),
    flag(
        "client-cert-auth",
        Bool,
        "false",
        "Enable client cert authentication.",
    ),
    flag(
        "client-crl-file",
        Text,
        "",
        "Path to the client certificate revocation list file.",
    ),
    flag(
        "client-cert-allowed-hostname",
        Text,
        "",
        "Allowed TLS hostname for client cert authentication.",
    ),
    flag(
        "trusted-ca-file",
        Text,
        "",
        "Path to the client server TLS trusted CA cert file.",
    ),
    flag(
        "auto-tls",
        Bool,
        "false",
        "Client TLS using generated certificates.",
    ),
    flag(
        "peer-cert-file",
        Text,
        "",
        "Path to the peer server TLS cert file.",
    ),
    flag(
        "peer-key-file",
        Text,
        "",
        "Path to the peer server TLS key file.",
    ),
    flag(
        "peer-client-cert-auth",
        Bool,
        "false",
        "Enable peer client cert authentication.",
    ),
    flag(
        "peer-trusted-ca-file",
        Text,
        "",
        "Path to the peer server TLS trusted CA file.",
    ),
    flag(
        "peer-cert-allowed-cn",
        Text,
        "",
        "Allowed CN for inter peer authentication.",
    ),
    flag(
        "peer-cert-allowed-hostname",
        Text,
        "",
        "Allowed TLS hostname for inter peer authentication.",
    ),
    flag(
        "peer-auto-tls",
        Bool,
        "false",
        "Peer TLS using self-generated certificates if --peer-key-file and --peer-cert-file are not provided.",
    ),
    flag(
        "peer-crl-file",
        Text,
        "",
        "Path to the peer certificate revocation list file.",
    ),
    flag(
        "cipher-suites",
        Text,
        "",
        "Comma-separated list of supported TLS cipher suites between client/server and peers.",
    ),
    flag(
        "cors",
        Text,
        "*",
        "Comma-separated white list of origins for CORS, or cross-origin resource sharing.",
    ),
    flag(
        "host-whitelist",
        Text,
        "*",
        "Comma-separated acceptable hostnames from HTTP client requests, if server is not secure.",
    ),
    flag(
        "auth-token",
        Text,
        "simple",
        "Specify a v3 authentication token type and its options ('simple' or 'jwt').",
    ),
    flag(
        "bcrypt-cost",
        Unsigned,
        "10",
        "Specify the cost/strength of the bcrypt algorithm for hashing auth passwords.",
    ),
    flag(
        "auth-token-ttl",
        Unsigned,
        "300",
        "The lifetime in seconds of the auth token.",
    ),
    inert("enable-pprof", Bool, "false"),
    flag(
        "metrics",
        Text,
        "basic",
        "Set level of detail for exported metrics, specify 'extensive' to include server side grpc histogram metrics.",
    ),
    flag(
        "listen-metrics-urls",
        Text,
        "",
        "List of URLs to listen on for the metrics and health endpoints.",
    ),
    flag(
        "logger",
        Text,
        "zap",
        "Currently only supports 'zap' for structured logging.",
    ),
    flag(
        "log-outputs",
        Text,
        "default",
        "Specify 'stdout' or 'stderr' to skip journald logging even when running under systemd.",
    ),
    flag(
        "log-level",
        Text,
        "info",
        "Configures log level. Only supports debug, info, warn, error, panic, or fatal.",
    ),
    flag(
        "debug",
        Bool,
        "false",
        "Enable debug-level logging (deprecated: use --log-level=debug).",
    ),
    inert("log-package-levels", Text, ""),
    inert("proxy", Text, "off"),
    inert("proxy-failure-wait", Unsigned, "5000"),
    inert("proxy-refresh-interval", Unsigned, "30000"),
    inert("proxy-dial-timeout", Unsigned, "1000"),
    inert("proxy-write-timeout", Unsigned, "5000"),
    inert("proxy-read-timeout", Unsigned, "0"),
    flag(
        "experimental-initial-corrupt-check",
        Bool,
        "false",
        "Enable to check data corruption before serving any client/peer traffic.",
    ),
    flag(
        "experimental-corrupt-check-time",
        Duration,
        "0s",
        "Duration of time between cluster corruption check passes.",
    ),
    inert("experimental-enable-v2v3", Text, ""),
    inert("experimental-backend-bbolt-freelist-type", Text, "array"),
    flag(
        "experimental-enable-lease-checkpoint",
        Bool,
        "true",
        "Enable to persist lease remaining TTL to prevent indefinite auto-renewal of long lived leases.",
    ),
    inert("experimental-compaction-batch-limit", Unsigned, "1000"),
    inert(
        "experimental-peer-skip-client-san-verification",
        Bool,
        "false",
    ),
    flag(
        "experimental-watch-progress-notify-interval",
        Duration,
        "10m",
        "Duration of periodic watch progress notifications.",
    ),
    inert("experimental-warning-apply-duration", Duration, "100ms"),
    flag(
        "force-new-cluster",
        Bool,
        "false",
        "Force to create a new one member cluster.",
    ),
    flag(
        "self-signed-cert-validity",
        Unsigned,
        "1",
        "The validity period of the client and peer certificates that are automatically generated by etcd, unit is year.",
    ),
];

/// Flags that are handled before anything else and take no part in configuration.
const META_FLAGS: &[&str] = &["help", "h", "version", "config-file"];

pub fn spec(name: &str) -> Option<&'static FlagSpec> {
    FLAGS.iter().find(|f| f.name == name)
}

/// Where a value came from; a command-line flag shadows its environment variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    CommandLine,
    Environment,
    ConfigFile,
}

/// What the command line asked for before any configuration is built.
#[derive(Debug, Default)]
pub struct CommandLine {
    pub values: BTreeMap<&'static str, String>,
    pub help: bool,
    pub version: bool,
    pub config_file: Option<String>,
}

/// Parses arguments the way Go's `flag` package does (what etcd uses).
pub fn parse_command_line<I, S>(args: I) -> Result<CommandLine, ConfigError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut parsed = CommandLine::default();
    let mut args = args.into_iter().map(Into::into);
    while let Some(arg) = args.next() {
        let Some(stripped) = arg.strip_prefix('-') else {
            return Err(ConfigError::Positional(arg));
        };
        let stripped = stripped.strip_prefix('-').unwrap_or(stripped);
        if stripped.is_empty() || stripped.starts_with('-') || stripped.starts_with('=') {
            return Err(ConfigError::BadFlagSyntax(arg));
        }
        let (name, inline) = match stripped.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (stripped, None),
        };
        if META_FLAGS.contains(&name) {
            match name {
                "help" | "h" => parsed.help = true,
                "version" => parsed.version = parse_bool_value(name, inline.as_deref())?,
                _ => {
                    let value = match inline {
                        Some(v) => v,
                        None => args
                            .next()
                            .ok_or_else(|| ConfigError::MissingValue(name.into()))?,
                    };
                    parsed.config_file = Some(value);
                }
            }
            continue;
        }
        let spec = spec(name).ok_or_else(|| ConfigError::UnknownFlag(name.into()))?;
        let value = if spec.kind == Bool {
            parse_bool_value(name, inline.as_deref())?.to_string()
        } else {
            match inline {
                Some(v) => v,
                None => args
                    .next()
                    .ok_or_else(|| ConfigError::MissingValue(name.into()))?,
            }
        };
        check_value(spec, &value)?;
        parsed.values.insert(spec.name, value);
    }
    Ok(parsed)
}

fn parse_bool_value(name: &str, inline: Option<&str>) -> Result<bool, ConfigError> {
    match inline {
        None => Ok(true),
        Some(v) => parse_go_bool(v).ok_or_else(|| ConfigError::InvalidValue {
            flag: name.into(),
            value: v.into(),
            reason: "parse error".into(),
        }),
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Rejects a value its flag's kind cannot hold, with Go's wording.
pub fn check_value(spec: &FlagSpec, value: &str) -> Result<(), ConfigError> {
    let ok = match spec.kind {
        Text => true,
        Bool => parse_go_bool(value).is_some(),
        Unsigned => value.parse::<u64>().is_ok(),
        Signed => value.parse::<i64>().is_ok(),
        Duration => value.is_empty() || parse_go_duration(value).is_some(),
    };
    if ok {
        Ok(())
    } else {
        Err(ConfigError::InvalidValue {
            flag: spec.name.into(),
            value: value.into(),
            reason: "parse error".into(),
        })
    }
}

/// Go's `time.ParseDuration` for the units etcd users write (`ns us ms s m h`, fractions,
/// concatenations such as `1h30m`).
pub fn parse_go_duration(text: &str) -> Option<std::time::Duration> {
    if text == "0" {
        return Some(std::time::Duration::ZERO);
    }
    let mut rest = text;
    let mut total_nanos: f64 = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total_nanos += number * scale;
    }
    Some(std::time::Duration::from_nanos(total_nanos as u64))
}

/// The environment variable that carries a flag: `--initial-cluster` is `ETCD_INITIAL_CLUSTER`.
pub fn env_name(flag: &str) -> String {
    format!("ETCD_{}", flag.to_ascii_uppercase().replace('-', "_"))
}

/// Reads `ETCD_*` variables for every flag not set on the command line. Returns the values
/// taken and the names of `ETCD_*` variables that match no flag (etcd warns about those).
pub fn read_environment<F>(
    command_line: &BTreeMap<&'static str, String>,
    lookup: F,
    all_vars: impl IntoIterator<Item = String>,
) -> Result<(BTreeMap<&'static str, String>, Vec<String>), ConfigError>
where
    F: Fn(&str) -> Option<String>,
{
    let mut values = BTreeMap::new();
    for spec in FLAGS {
        let Some(value) = lookup(&env_name(spec.name)) else {
            continue;
        };
        if command_line.contains_key(spec.name) {
            continue;
        }
        check_value(spec, &value).map_err(|_| ConfigError::InvalidEnv {
            var: env_name(spec.name),
            value: value.clone(),
        })?;
        values.insert(spec.name, value);
    }
    let known: Vec<String> = FLAGS.iter().map(|f| env_name(f.name)).collect();
    let ignored_by_design = [
        "ETCD_CONFIG_FILE",
        "ETCD_VERSION",
        "ETCD_HELP",
        "ETCD_UNSUPPORTED_ARCH",
    ];
    let unknown = all_vars
        .into_iter()
        .filter(|v| v.starts_with("ETCD_"))
        .filter(|v| !known.contains(v) && !ignored_by_design.contains(&v.as_str()))
        .collect();
    Ok((values, unknown))
}

/// The YAML config file: the same names as the flags, with TLS settings nested under
/// `client-transport-security` and `peer-transport-security` as in etcd's file format.
pub fn read_config_file(text: &str) -> Result<BTreeMap<&'static str, String>, ConfigError> {
    let document: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| ConfigError::ConfigFile(e.to_string()))?;
    let mut values = BTreeMap::new();
    let serde_yaml::Value::Mapping(map) = document else {
        if document.is_null() {
            return Ok(values);
        }
        return Err(ConfigError::ConfigFile(
            "the config file must be a YAML mapping".into(),
        ));
    };
    for (key, value) in map {
        let key = yaml_scalar(&key)
            .ok_or_else(|| ConfigError::ConfigFile("a key is not a string".into()))?;
        match key.as_str() {
            "client-transport-security" | "peer-transport-security" => {
                let prefix = if key == "peer-transport-security" {
                    "peer-"
                } else {
                    ""
                };
                let serde_yaml::Value::Mapping(inner) = value else {
                    if value.is_null() {
                        continue;
                    }
                    return Err(ConfigError::ConfigFile(format!("{key} must be a mapping")));
                };
                for (inner_key, inner_value) in inner {
                    let inner_key = yaml_scalar(&inner_key)
                        .ok_or_else(|| ConfigError::ConfigFile("a key is not a string".into()))?;
                    let flag_name = match inner_key.as_str() {
                        "auto-tls" if prefix.is_empty() => "auto-tls".to_string(),
                        "auto-tls" => "peer-auto-tls".to_string(),
                        "crl-file" if prefix.is_empty() => "client-crl-file".to_string(),
                        "allowed-cn" => "peer-cert-allowed-cn".to_string(),
                        "allowed-hostname" if prefix.is_empty() => {
                            "client-cert-allowed-hostname".to_string()
                        }
                        "allowed-hostname" => "peer-cert-allowed-hostname".to_string(),
                        other => format!("{prefix}{other}"),
                    };
                    insert_yaml_value(&mut values, &flag_name, &inner_value)?;
                }
            }
            _ => insert_yaml_value(&mut values, &key, &value)?,
        }
    }
    Ok(values)
}

fn insert_yaml_value(
    values: &mut BTreeMap<&'static str, String>,
    key: &str,
    value: &serde_yaml::Value,
) -> Result<(), ConfigError> {
    let spec =
        spec(key).ok_or_else(|| ConfigError::ConfigFile(format!("unknown field {key:?}")))?;
    if value.is_null() {
        return Ok(());
    }
    let text = match value {
        serde_yaml::Value::Sequence(items) => items
            .iter()
            .map(|item| {
                yaml_scalar(item).ok_or_else(|| {
                    ConfigError::ConfigFile(format!("{key}: list items must be scalars"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?
            .join(","),
        other => yaml_scalar(other)
            .ok_or_else(|| ConfigError::ConfigFile(format!("{key}: expected a scalar value")))?,
    };
    check_value(spec, &text)?;
    values.insert(spec.name, text);
    Ok(())
}

fn yaml_scalar(value: &serde_yaml::Value) -> Option<String> {
    match value {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The usage text `concord --help` prints.
pub fn usage() -> String {
    let mut text = String::from(
        "Usage:\n\n  concord [flags]\n    Start a Concord (etcd-compatible) server.\n\n  concord --version\n    Show the version.\n\n  concord -h | --help\n    Show the help information.\n\n  concord --config-file FILE\n    Read configuration from a YAML file (flags and environment are then ignored).\n\nFlags (each also read from ETCD_<NAME>, e.g. --initial-cluster as ETCD_INITIAL_CLUSTER):\n",
    );
    for spec in FLAGS {
        let default = if spec.default.is_empty() {
            String::new()
        } else {
            format!(" '{}'", spec.default)
        };
        text.push_str(&format!(
            "  --{}{}\n      {}\n",
            spec.name, default, spec.help
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_forms_are_all_accepted() {
        let parsed = parse_command_line([
            "-name",
            "a",
            "--data-dir=/tmp/x",
            "--snapshot-count",
            "5",
            "--force-new-cluster",
            "--enable-v2=false",
        ])
        .unwrap();
        assert_eq!(parsed.values["name"], "a");
        assert_eq!(parsed.values["data-dir"], "/tmp/x");
        assert_eq!(parsed.values["snapshot-count"], "5");
        assert_eq!(parsed.values["force-new-cluster"], "true");
        assert_eq!(parsed.values["enable-v2"], "false");
    }

    #[test]
    fn errors_use_go_flag_wording() {
        let unknown = parse_command_line(["--foo"]).unwrap_err();
        assert_eq!(unknown.to_string(), "flag provided but not defined: -foo");
        let bad = parse_command_line(["--heartbeat-interval=abc"]).unwrap_err();
        assert_eq!(
            bad.to_string(),
            "invalid value \"abc\" for flag -heartbeat-interval: parse error"
        );
        let positional = parse_command_line(["extra"]).unwrap_err();
        assert_eq!(positional.to_string(), "'extra' is not a valid flag");
        let missing = parse_command_line(["--name"]).unwrap_err();
        assert_eq!(missing.to_string(), "flag needs an argument: -name");
        // A boolean never swallows the next argument.
        let dangling = parse_command_line(["--force-new-cluster", "false"]).unwrap_err();
        assert_eq!(dangling.to_string(), "'false' is not a valid flag");
    }

    #[test]
    fn meta_flags_are_recognised() {
        let parsed = parse_command_line(["--version"]).unwrap();
        assert!(parsed.version);
        let parsed = parse_command_line(["--config-file", "c.yml"]).unwrap();
        assert_eq!(parsed.config_file.as_deref(), Some("c.yml"));
        assert!(parse_command_line(["-h"]).unwrap().help);
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(
            parse_go_duration("10m"),
            Some(std::time::Duration::from_secs(600))
        );
        assert_eq!(
            parse_go_duration("1h30m"),
            Some(std::time::Duration::from_secs(5400))
        );
        assert_eq!(
            parse_go_duration("250ms"),
            Some(std::time::Duration::from_millis(250))
        );
        assert_eq!(
            parse_go_duration("1.5s"),
            Some(std::time::Duration::from_millis(1500))
        );
        assert_eq!(parse_go_duration("0"), Some(std::time::Duration::ZERO));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("x"), None);
    }

    #[test]
    fn command_line_shadows_environment_and_unknown_variables_are_reported() {
        let mut command_line = BTreeMap::new();
        command_line.insert("name", "from-flag".to_string());
        let env: BTreeMap<String, String> = [
            ("ETCD_NAME", "from-env"),
            ("ETCD_DATA_DIR", "/d"),
            ("ETCD_BOGUS", "1"),
            ("PATH", "/bin"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let (values, unknown) =
            read_environment(&command_line, |k| env.get(k).cloned(), env.keys().cloned()).unwrap();
        assert!(!values.contains_key("name"));
        assert_eq!(values["data-dir"], "/d");
        assert_eq!(unknown, vec!["ETCD_BOGUS".to_string()]);
    }

    #[test]
    fn bad_environment_value_is_an_error() {
        let env = |k: &str| (k == "ETCD_SNAPSHOT_COUNT").then(|| "many".to_string());
        let err = read_environment(&BTreeMap::new(), env, Vec::new()).unwrap_err();
        assert!(err.to_string().contains("ETCD_SNAPSHOT_COUNT"), "{err}");
    }

    #[test]
    fn config_file_reads_flat_and_nested_keys() {
        let yaml = "name: infra1\nsnapshot-count: 500\nenable-v2: false\nlisten-client-urls: http://127.0.0.1:2379\ninitial-cluster: [\"a=http://x:1\", \"b=http://y:2\"]\nclient-transport-security:\n  cert-file: /c.pem\n  client-cert-auth: true\npeer-transport-security:\n  auto-tls: true\n  trusted-ca-file: /ca.pem\n";
        let values = read_config_file(yaml).unwrap();
        assert_eq!(values["name"], "infra1");
        assert_eq!(values["snapshot-count"], "500");
        assert_eq!(values["enable-v2"], "false");
        assert_eq!(values["initial-cluster"], "a=http://x:1,b=http://y:2");
        assert_eq!(values["cert-file"], "/c.pem");
        assert_eq!(values["client-cert-auth"], "true");
        assert_eq!(values["peer-auto-tls"], "true");
        assert_eq!(values["peer-trusted-ca-file"], "/ca.pem");
        let err = read_config_file("nmae: x\n").unwrap_err();
        assert!(err.to_string().contains("nmae"), "{err}");
    }
}
