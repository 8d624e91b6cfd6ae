//! A small command-line parser: `--flag value`, `--flag=value`, boolean switches and
//! positionals. Hand-rolled so xtask compiles in seconds (no clap).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, Result, bail};

/// Parsed arguments: flag values by name (without the leading dashes) and positionals in order.
#[derive(Debug, Default)]
pub struct Args {
    values: BTreeMap<String, String>,
    switches: Vec<String>,
    positionals: Vec<String>,
}

impl Args {
    /// Splits `raw` into flags and positionals. `switch_names` are the flags that take no value
    /// (`--compare`); every other `--name` takes the next argument (or its `=value`).
    pub fn parse(raw: &[String], switch_names: &[&str]) -> Result<Args> {
        let mut args = Args::default();
        let mut iter = raw.iter();
        while let Some(arg) = iter.next() {
            let Some(flag) = arg
                .strip_prefix("--")
                .or_else(|| arg.strip_prefix('-').filter(|f| !f.is_empty()))
            else {
                args.positionals.push(arg.clone());
                continue;
            };
            if let Some((name, value)) = flag.split_once('=') {
                if switch_names.contains(&name) {
                    bail!("--{name} takes no value");
                }
                args.values.insert(name.to_string(), value.to_string());
            } else if switch_names.contains(&flag) {
                args.switches.push(flag.to_string());
            } else {
                let value = iter
                    .next()
                    .with_context(|| format!("--{flag} needs a value"))?;
                args.values.insert(flag.to_string(), value.clone());
            }
        }
        Ok(args)
    }

    pub fn switch(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }

    pub fn positionals(&self) -> &[String] {
        &self.positionals
    }

    /// The flag's value parsed as `T`, or `default` when it is absent.
    pub fn get_or<T: FromStr>(&self, name: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.values.get(name) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|e| anyhow::anyhow!("invalid value {text:?} for --{name}: {e}")),
        }
    }

    pub fn string(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn path_or(&self, name: &str, default: PathBuf) -> PathBuf {
        self.values.get(name).map(PathBuf::from).unwrap_or(default)
    }

    /// A comma-separated list flag (`--endpoints a,b,c`); empty when absent.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.values
            .get(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Fails on any flag not in `known` (a typo must not silently run the default).
    pub fn reject_unknown(&self, known: &[&str]) -> Result<()> {
        for name in self.values.keys().chain(self.switches.iter()) {
            if !known.contains(&name.as_str()) {
                bail!("unknown flag --{name} (known: {})", known.join(", "));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn values_switches_and_positionals() {
        let args = Args::parse(
            &strings(&[
                "put",
                "--clients",
                "200",
                "--conns=10",
                "--compare",
                "extra",
            ]),
            &["compare"],
        )
        .unwrap();
        assert_eq!(args.positionals(), ["put", "extra"]);
        assert_eq!(args.get_or("clients", 1usize).unwrap(), 200);
        assert_eq!(args.get_or("conns", 1usize).unwrap(), 10);
        assert_eq!(args.get_or("total", 7u64).unwrap(), 7);
        assert!(args.switch("compare"));
        assert!(!args.switch("fresh"));
    }

    #[test]
    fn single_dash_flags_are_flags() {
        let args = Args::parse(&strings(&["-members", "5"]), &[]).unwrap();
        assert_eq!(args.get_or("members", 3usize).unwrap(), 5);
    }

    #[test]
    fn missing_value_is_an_error() {
        let err = Args::parse(&strings(&["--clients"]), &[]).unwrap_err();
        assert!(err.to_string().contains("--clients needs a value"), "{err}");
    }

    #[test]
    fn switch_with_value_is_an_error() {
        assert!(Args::parse(&strings(&["--compare=yes"]), &["compare"]).is_err());
    }

    #[test]
    fn bad_number_names_the_flag() {
        let args = Args::parse(&strings(&["--clients", "many"]), &[]).unwrap();
        let err = args.get_or("clients", 1usize).unwrap_err();
        assert!(err.to_string().contains("--clients"), "{err}");
    }

    #[test]
    fn lists_split_on_commas() {
        let args = Args::parse(&strings(&["--endpoints", "a:1, b:2,,c:3"]), &[]).unwrap();
        assert_eq!(args.list("endpoints"), ["a:1", "b:2", "c:3"]);
        assert!(args.list("pids").is_empty());
    }

    #[test]
    fn unknown_flags_are_rejected() {
        let args = Args::parse(&strings(&["--clinets", "3"]), &[]).unwrap();
        let err = args.reject_unknown(&["clients"]).unwrap_err();
        assert!(err.to_string().contains("--clinets"), "{err}");
        let ok = Args::parse(&strings(&["--clients", "3"]), &[]).unwrap();
        ok.reject_unknown(&["clients"]).unwrap();
    }
}
