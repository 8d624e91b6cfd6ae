//! What etcdctl says about its flags and `ETCDCTL_*` environment when a
//! command builds its client (`clientConfigFromCmd`, `pkg/flags`):
//!
//! - `ETCDCTL_*` variables that name no flag, or are empty: a warning each
//!   (`<time> W | pkg/flags: unrecognized environment variable ETCDCTL_FOO=bar`);
//! - a variable whose flag was also given on the command line: a fatal log
//!   line (`<time> C | pkg/flags: conflicting environment variable ...`) and
//!   exit code 1;
//! - with `--debug`, every inherited flag as `ETCDCTL_NAME=value`.
//!
//! Commands that never build a client (`version`, argument errors) say none of
//! it, so the text is prepared at parse time and printed by the first
//! [`crate::client::Client::connect`].

use std::sync::atomic::{AtomicBool, Ordering};

/// The global flags whose `ETCDCTL_*` value pflag parses as a Go duration.
const DURATION_FLAGS: &[&str] = &[
    "dial_timeout",
    "command_timeout",
    "keepalive_time",
    "keepalive_timeout",
];
/// The global flags whose `ETCDCTL_*` value pflag parses as a Go bool.
const BOOL_FLAGS: &[&str] = &[
    "hex",
    "insecure_transport",
    "insecure_skip_tls_verify",
    "insecure_discovery",
    "debug",
];

/// concordctl's command line, reading `ETCDCTL_*` as etcdctl 3.4 does
/// (`pkg/flags.SetPflagsFromEnv`, whose error etcdctl ignores):
///
/// - an empty value is no value: the flag keeps its default;
/// - a value pflag cannot parse is not an error: pflag's duration and bool
///   flags store the zero value of a failed parse (`0s`, `false`), so the flag
///   takes that (seen with etcdctl: `ETCDCTL_DIAL_TIMEOUT=abc etcdctl --debug
///   get a` lists `ETCDCTL_DIAL_TIMEOUT=0s`).
///
/// The same value on the command line stays an error.
pub fn command() -> clap::Command {
    command_with_env(|name| std::env::var_os(name))
}

fn command_with_env(lookup: impl Fn(&str) -> Option<std::ffi::OsString>) -> clap::Command {
    let mut command = <crate::cli::Cli as clap::CommandFactory>::command();
    let with_env: Vec<(String, String)> = command
        .get_arguments()
        .filter_map(|arg| {
            let name = arg.get_env()?.to_string_lossy().into_owned();
            Some((arg.get_id().to_string(), name))
        })
        .collect();
    for (id, name) in with_env {
        let Some(value) = lookup(&name) else {
            continue;
        };
        let value = value.to_string_lossy();
        let zero = if value.is_empty() {
            None
        } else if DURATION_FLAGS.contains(&id.as_str()) {
            match crate::gofmt::parse_duration(&value) {
                Ok(_) => continue,
                Err(_) => Some("0s"),
            }
        } else if BOOL_FLAGS.contains(&id.as_str()) {
            match crate::cli::go_bool(&value) {
                Ok(_) => continue,
                Err(_) => Some("false"),
            }
        } else {
            continue;
        };
        command = command.mut_arg(id, |arg| {
            let arg = arg.env(None::<&'static str>);
            match zero {
                Some(zero) => arg.default_value(zero),
                None => arg,
            }
        });
    }
    command
}

/// The lines to print when the first client is built, and whether they end
/// the program.
#[derive(Debug, Clone, Default)]
pub struct Prelude {
    pub text: String,
    pub fatal: bool,
}

static PRINTED: AtomicBool = AtomicBool::new(false);

impl Prelude {
    /// Prints the prelude once per process; a fatal one fails with exit
    /// code 1 and nothing more to print.
    pub fn emit(&self) -> Result<(), crate::error::CtlError> {
        if PRINTED.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        eprint!("{}", self.text);
        if self.fatal {
            return Err(crate::error::CtlError::silent(
                crate::error::ExitCode::Error,
            ));
        }
        Ok(())
    }
}

/// `pkg/flags.FlagToEnv`.
pub fn flag_to_env(name: &str) -> String {
    format!("ETCDCTL_{}", name.replace('-', "_").to_uppercase())
}

/// capnslog's time stamp: `2006-01-02 15:04:05.000000` (UTC here).
fn timestamp() -> String {
    let (now, [year, month, day, hour, minute, second]) = utc_now();
    format!(
        "{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}.{:06}",
        now.subsec_micros()
    )
}

/// zap's ISO 8601 time stamp, as clientv3's logger writes it (`"ts"`):
/// `2006-01-02T15:04:05.000Z` (UTC here).
pub fn zap_timestamp() -> String {
    let (now, [year, month, day, hour, minute, second]) = utc_now();
    format!(
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{:03}Z",
        now.subsec_millis()
    )
}

/// The time since the epoch, and the UTC calendar date and time of day it is.
fn utc_now() -> (std::time::Duration, [i64; 6]) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = i64::try_from(now.as_secs()).unwrap_or_default();
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        now,
        [year, month, day, rem / 3600, rem % 3600 / 60, rem % 60],
    )
}

/// Builds the prelude. `flags` are the command's inherited flags (name,
/// whether the command line set it, value as pflag prints it), sorted by name;
/// `extra` are further variable names the command recognises.
pub fn prelude(flags: &[(String, bool, String)], extra: &[&str], debug: bool) -> Prelude {
    let mut text = String::new();
    let mut fatal = false;
    let known: Vec<String> = flags
        .iter()
        .map(|(name, ..)| flag_to_env(name))
        .chain(extra.iter().map(|n| (*n).to_owned()))
        .collect();
    for (key, value) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let set_on_command_line = flags
            .iter()
            .any(|(name, given, _)| *given && flag_to_env(name) == key);
        if set_on_command_line {
            text.push_str(&format!(
                "{} C | pkg/flags: conflicting environment variable \"{key}\" is shadowed by corresponding command-line flag (either unset environment variable or disable flag)\n",
                timestamp()
            ));
            fatal = true;
            break;
        }
        // pflag uses only non-empty values; an empty one is left over and
        // warned about like an unknown name.
        let used = known.contains(&key) && !value.is_empty();
        if key.starts_with("ETCDCTL_") && !used && key != "ETCDCTL_API" {
            text.push_str(&format!(
                "{} W | pkg/flags: unrecognized environment variable {key}={}\n",
                timestamp(),
                value.to_string_lossy()
            ));
        }
    }
    if debug && !fatal {
        for (name, _, value) in flags {
            text.push_str(&format!("{}={value}\n", flag_to_env(name)));
        }
    }
    Prelude { text, fatal }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(env: &[(&str, &str)], args: &[&str]) -> Result<crate::cli::Cli, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let command =
            command_with_env(|name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.into()));
        let matches = command
            .try_get_matches_from(args)
            .map_err(|e| e.to_string())?;
        <crate::cli::Cli as clap::FromArgMatches>::from_arg_matches(&matches)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn unparsable_environment_values_take_pflags_zero_value() {
        let cli = parse_with(
            &[
                ("ETCDCTL_DIAL_TIMEOUT", "abc"),
                ("ETCDCTL_INSECURE_TRANSPORT", "maybe"),
                ("ETCDCTL_WRITE_OUT", ""),
                ("ETCDCTL_KEEPALIVE_TIME", ""),
            ],
            &["concordctl", "get", "a"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.dial_timeout, std::time::Duration::ZERO);
        assert!(!cli.insecure_transport);
        assert_eq!(cli.write_out, "simple");
        assert_eq!(cli.keepalive_time, std::time::Duration::from_secs(2));
    }

    #[test]
    fn unparsable_command_line_values_stay_errors() {
        let env = [("ETCDCTL_DIAL_TIMEOUT", "abc")];
        assert!(parse_with(&env, &["concordctl", "--dial-timeout=abc", "get", "a"]).is_err());
        let cli = parse_with(&env, &["concordctl", "--dial-timeout=1s", "get", "a"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.dial_timeout, std::time::Duration::from_secs(1));
    }

    #[test]
    fn env_names() {
        assert_eq!(flag_to_env("dial-timeout"), "ETCDCTL_DIAL_TIMEOUT");
        assert_eq!(flag_to_env("write-out"), "ETCDCTL_WRITE_OUT");
    }

    #[test]
    fn timestamps_look_like_capnslog() {
        let t = timestamp();
        assert_eq!(t.len(), "2006-01-02 15:04:05.000000".len(), "{t}");
        assert_eq!(&t[4..5], "-");
        assert_eq!(&t[10..11], " ");
    }
}
