//! etcdctl v2's command line as urfave/cli v1 reads it: Go's `flag` package
//! (`-name`, `--name`, `-name=value`, `-name value`; bool flags take a value
//! only after `=`; parsing stops at the first argument that is not a flag or
//! after `--`), and, for a command's own flags, urfave's reordering that
//! moves the command's known flags (and the argument after each one written
//! without `=`) before its positional arguments.

use std::collections::HashMap;

/// What a flag holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    String,
    Int,
    Duration,
    /// urfave's `StringSliceFlag`: every use adds one value.
    StringSlice,
}

/// One flag: its names (the first is the one commands ask for) and kind.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub names: &'static [&'static str],
    pub kind: Kind,
}

pub const fn flag(names: &'static [&'static str], kind: Kind) -> Spec {
    Spec { names, kind }
}

/// urfave adds `--help, -h` to every command.
const HELP: Spec = flag(&["help", "h"], Kind::Bool);

/// The flags given and the positional arguments left.
#[derive(Debug, Default, Clone)]
pub struct Parsed {
    values: HashMap<&'static str, Vec<String>>,
    pub args: Vec<String>,
}

impl Parsed {
    fn last(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    pub fn bool(&self, name: &str) -> bool {
        self.last(name).is_some_and(|v| parse_bool(v) == Some(true))
    }

    pub fn string(&self, name: &str) -> String {
        self.last(name).unwrap_or_default().to_owned()
    }

    pub fn int(&self, name: &str) -> i64 {
        self.last(name).and_then(parse_int).unwrap_or_default()
    }

    pub fn duration(&self, name: &str) -> Option<std::time::Duration> {
        self.last(name)
            .and_then(|v| crate::gofmt::parse_duration(v).ok())
    }

    pub fn strings(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }

    pub fn help(&self) -> bool {
        self.bool("help")
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseInt(v, 0, 64)`: decimal, `0x`, `0o`/`0`, `0b`, with a sign.
pub fn parse_int(v: &str) -> Option<i64> {
    let (negative, digits) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v.strip_prefix('+').unwrap_or(v)),
    };
    let digits = digits.replace('_', "");
    let (radix, body) = if let Some(b) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        (16, b.to_owned())
    } else if let Some(b) = digits
        .strip_prefix("0b")
        .or_else(|| digits.strip_prefix("0B"))
    {
        (2, b.to_owned())
    } else if let Some(b) = digits
        .strip_prefix("0o")
        .or_else(|| digits.strip_prefix("0O"))
    {
        (8, b.to_owned())
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, digits[1..].to_owned())
    } else {
        (10, digits)
    };
    if body.is_empty() || body.starts_with(['+', '-']) {
        return None;
    }
    let magnitude = i128::from(u64::from_str_radix(&body, radix).ok()?);
    let value = if negative { -magnitude } else { magnitude };
    i64::try_from(value).ok()
}

/// urfave's `reorderArgs`: the command's own flags first.
pub fn reorder(specs: &[Spec], args: &[String]) -> Vec<String> {
    let is_flag = |arg: &str| {
        if arg == "-" || arg == "--" || !arg.starts_with('-') {
            return false;
        }
        let name = arg.trim_start_matches('-');
        let name = if arg.starts_with("--") {
            arg.replacen('-', "", 2)
        } else {
            name.to_owned()
        };
        let name = name.split('=').next().unwrap_or_default().to_owned();
        specs
            .iter()
            .chain(std::iter::once(&HELP))
            .any(|s| s.names.contains(&name.as_str()))
    };
    let mut flags = Vec::new();
    let mut rest = Vec::new();
    let mut may_be_value = false;
    for (i, arg) in args.iter().enumerate() {
        if may_be_value && !is_flag(arg) {
            may_be_value = false;
            flags.push(arg.clone());
        } else if arg == "--" {
            rest.insert(0, "--".to_owned());
            rest.extend(args[i + 1..].iter().cloned());
            break;
        } else if is_flag(arg) {
            flags.push(arg.clone());
            may_be_value = !arg.contains('=');
        } else {
            rest.push(arg.clone());
        }
    }
    flags.extend(rest);
    flags
}

/// Go's `FlagSet.Parse` (with urfave's help flag added); the error is Go's text.
pub fn parse(specs: &[Spec], args: &[String]) -> Result<Parsed, String> {
    let mut parsed = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg.len() < 2 || !arg.starts_with('-') {
            break;
        }
        let mut name = &arg[1..];
        if let Some(rest) = name.strip_prefix('-') {
            if rest.is_empty() {
                i += 1;
                break;
            }
            name = rest;
        }
        if name.is_empty() || name.starts_with('-') || name.starts_with('=') {
            return Err(format!("bad flag syntax: {arg}"));
        }
        i += 1;
        let (name, value) = match name.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (name, None),
        };
        let Some(spec) = specs
            .iter()
            .chain(std::iter::once(&HELP))
            .find(|s| s.names.contains(&name))
        else {
            return Err(format!("flag provided but not defined: -{name}"));
        };
        let value = if spec.kind == Kind::Bool {
            match value {
                Some(v) if parse_bool(&v).is_none() => {
                    return Err(format!(
                        "invalid boolean value {} for -{name}: parse error",
                        go_quote(&v)
                    ));
                }
                Some(v) => v,
                None => "true".to_owned(),
            }
        } else {
            match value {
                Some(v) => v,
                None if i < args.len() => {
                    i += 1;
                    args[i - 1].clone()
                }
                None => return Err(format!("flag needs an argument: -{name}")),
            }
        };
        let valid = match spec.kind {
            Kind::Int => parse_int(&value).is_some(),
            Kind::Duration => crate::gofmt::parse_duration(&value).is_ok(),
            _ => true,
        };
        if !valid {
            return Err(format!(
                "invalid value {} for flag -{name}: parse error",
                go_quote(&value)
            ));
        }
        parsed.values.entry(spec.names[0]).or_default().push(value);
    }
    parsed.args = args[i..].to_vec();
    Ok(parsed)
}

/// Go's `%q` of a string.
pub fn go_quote(v: &str) -> String {
    let mut out = String::new();
    concord_server::http::v2::json::go_string(&mut out, v);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET: &[Spec] = &[
        flag(&["ttl"], Kind::Int),
        flag(&["swap-with-value"], Kind::String),
        flag(&["recursive", "r"], Kind::Bool),
    ];

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn flags_after_arguments_move_first() {
        let args = reorder(SET, &strings(&["/k", "v", "--ttl", "30", "-r"]));
        assert_eq!(args, strings(&["--ttl", "30", "-r", "/k", "v"]));
        let p = parse(SET, &args).unwrap();
        assert_eq!(p.int("ttl"), 30);
        assert!(p.bool("recursive"));
        assert_eq!(p.args, strings(&["/k", "v"]));
    }

    #[test]
    fn double_dash_keeps_what_follows() {
        let args = reorder(SET, &strings(&["-r", "k", "--", "-x"]));
        assert_eq!(args, strings(&["-r", "k", "--", "-x"]));
        let p = parse(SET, &args).unwrap();
        assert_eq!(p.args, strings(&["k", "--", "-x"]));
    }

    #[test]
    fn go_errors() {
        assert_eq!(
            parse(SET, &strings(&["--bad"])).unwrap_err(),
            "flag provided but not defined: -bad"
        );
        assert_eq!(
            parse(SET, &strings(&["--ttl"])).unwrap_err(),
            "flag needs an argument: -ttl"
        );
        assert_eq!(
            parse(SET, &strings(&["--ttl=x"])).unwrap_err(),
            "invalid value \"x\" for flag -ttl: parse error"
        );
        assert_eq!(parse_int("0x10"), Some(16));
        assert_eq!(parse_int("010"), Some(8));
        assert_eq!(parse_int("-5"), Some(-5));
    }
}
