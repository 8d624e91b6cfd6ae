//! `txn`'s input language, as etcdctl reads it from standard input: a block of
//! comparisons, a block of success requests and a block of failure requests,
//! each ended by an empty line.
//!
//! ```text
//! mod("key1") > "0"
//!
//! put key1 "overwrote-key1"
//!
//! put key1 "created-key1"
//! put key2 "some extra key"
//!
//! ```

use crate::error::CtlError;
use crate::kv::{self, DelOptions, GetOptions, PutOptions};
use concord_proto::etcdserverpb as pb;
use pb::compare::{CompareResult, CompareTarget, TargetUnion};
use std::io::{BufRead, Write};

pub const PROMPT_COMPARES: &str = "compares:";
pub const PROMPT_SUCCESS: &str = "success requests (get, put, del):";
pub const PROMPT_FAILURE: &str = "failure requests (get, put, del):";

/// Reads a whole transaction; with `interactive`, prints etcdctl's prompts to `out`.
pub fn read_txn(
    input: &mut impl BufRead,
    interactive: bool,
    out: &mut impl Write,
) -> Result<pb::TxnRequest, CtlError> {
    let mut txn = pb::TxnRequest::default();
    prompt(out, interactive, PROMPT_COMPARES)?;
    txn.compare = read_block(input, parse_compare)?;
    prompt(out, interactive, PROMPT_SUCCESS)?;
    txn.success = read_block(input, parse_request_op)?;
    prompt(out, interactive, PROMPT_FAILURE)?;
    txn.failure = read_block(input, parse_request_op)?;
    Ok(txn)
}

fn prompt(out: &mut impl Write, interactive: bool, text: &str) -> Result<(), CtlError> {
    if interactive {
        writeln!(out, "{text}")
            .and_then(|()| out.flush())
            .map_err(|e| CtlError::new(crate::error::ExitCode::Io, e.to_string()))?;
    }
    Ok(())
}

/// Parses lines up to the next empty one, each as soon as it is read. Like
/// Go's `ReadString('\n')`, input that ends without a newline is an `EOF` error.
fn read_block<T>(
    input: &mut impl BufRead,
    parse: impl Fn(&str) -> Result<T, CtlError>,
) -> Result<Vec<T>, CtlError> {
    let mut items = Vec::new();
    loop {
        let mut buf = Vec::new();
        input
            .read_until(b'\n', &mut buf)
            .map_err(|e| CtlError::invalid_input(e.to_string()))?;
        if buf.last() != Some(&b'\n') {
            return Err(CtlError::invalid_input("EOF"));
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim();
        if line.is_empty() {
            return Ok(items);
        }
        items.push(parse(line)?);
    }
}

/// Parses `target("key") op "value"`; targets `ver`/`version`, `c`/`create`,
/// `m`/`mod`, `val`/`value`, `lease` (hex); ops `=`, `==`, `!=`, `>`, `<`.
pub fn parse_compare(line: &str) -> Result<pb::Compare, CtlError> {
    let Some((target, rest)) = line.split_once('(') else {
        return Err(CtlError::invalid_input(format!(
            "malformed comparison: {line}"
        )));
    };
    let scanned = scan_compare_operands(rest);
    if scanned.count != 3 {
        return Err(CtlError::invalid_input(format!(
            "malformed comparison: {line}; got {target}({}) {} {}",
            crate::gofmt::quote(&scanned.key),
            scanned.op,
            crate::gofmt::quote(&scanned.value)
        )));
    }
    let invalid = || CtlError::invalid_input(format!("invalid txn compare request: {line}"));
    let value_text = String::from_utf8_lossy(&scanned.value).into_owned();
    let decimal = || kv::parse_decimal(&value_text).map_err(|_| invalid());
    let (target, union) = match target {
        "ver" | "version" => (CompareTarget::Version, TargetUnion::Version(decimal()?)),
        "c" | "create" => (
            CompareTarget::Create,
            TargetUnion::CreateRevision(decimal()?),
        ),
        "m" | "mod" => (CompareTarget::Mod, TargetUnion::ModRevision(decimal()?)),
        "val" | "value" => (
            CompareTarget::Value,
            TargetUnion::Value(scanned.value.clone()),
        ),
        "lease" => (
            CompareTarget::Lease,
            TargetUnion::Lease(kv::parse_hex_lease(&value_text).map_err(|_| invalid())?),
        ),
        other => {
            return Err(CtlError::invalid_input(format!(
                "malformed comparison: {line} (unknown target {other})"
            )));
        }
    };
    let result = match scanned.op.as_str() {
        "=" | "==" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        ">" => CompareResult::Greater,
        "<" => CompareResult::Less,
        // etcdctl panics here ("Unknown result op"); we report it as bad input.
        _ => return Err(invalid()),
    };
    Ok(pb::Compare {
        result: result as i32,
        target: target as i32,
        key: scanned.key,
        range_end: Vec::new(),
        target_union: Some(union),
    })
}

/// What Go's `fmt.Sscanf(rest, "%q) %s %q", &key, &op, &val)` fills in.
#[derive(Debug, Default)]
struct ScannedCompare {
    count: usize,
    key: Vec<u8>,
    op: String,
    value: Vec<u8>,
}

fn scan_compare_operands(rest: &str) -> ScannedCompare {
    let mut out = ScannedCompare::default();
    let mut s = rest;
    // %q
    s = s.trim_start_matches(is_go_space);
    let Some((key, after)) = scan_quoted(s) else {
        return out;
    };
    out.key = key;
    out.count = 1;
    s = after;
    // literal ')'
    let Some(after) = s.strip_prefix(')') else {
        return out;
    };
    s = after;
    // a format space: one or more spaces, or the end of input
    if !s.is_empty() && !s.starts_with(is_go_space) {
        return out;
    }
    s = s.trim_start_matches(is_go_space);
    // %s
    let end = s.find(is_go_space).unwrap_or(s.len());
    if end == 0 {
        return out;
    }
    out.op = s[..end].to_owned();
    out.count = 2;
    s = &s[end..];
    if !s.is_empty() && !s.starts_with(is_go_space) {
        return out;
    }
    s = s.trim_start_matches(is_go_space);
    // %q
    let Some((value, _)) = scan_quoted(s) else {
        return out;
    };
    out.value = value;
    out.count = 3;
    out
}

fn is_go_space(c: char) -> bool {
    c != '\n' && c.is_whitespace()
}

/// A Go quoted string (`"..."` with escapes, or a raw `` `...` ``) at the start
/// of `s`: its bytes and the remaining input.
fn scan_quoted(s: &str) -> Option<(Vec<u8>, &str)> {
    if let Some(body) = s.strip_prefix('`') {
        let end = body.find('`')?;
        return Some((body.as_bytes()[..end].to_vec(), &body[end + 1..]));
    }
    let body = s.strip_prefix('"')?;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            let value = go_unquote_body(&body[..i])?;
            return Some((value, &body[i + 1..]));
        }
    }
    None
}

/// Decodes the inside of a Go double-quoted string literal to bytes.
fn go_unquote_body(body: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let esc = chars.next()?;
        match esc {
            'a' => out.push(7),
            'b' => out.push(8),
            'f' => out.push(12),
            'n' => out.push(b'\n'),
            'r' => out.push(b'\r'),
            't' => out.push(b'\t'),
            'v' => out.push(11),
            '\\' => out.push(b'\\'),
            '"' => out.push(b'"'),
            'x' => {
                let hex: String = chars.by_ref().take(2).collect();
                if hex.len() != 2 {
                    return None;
                }
                out.push(u8::from_str_radix(&hex, 16).ok()?);
            }
            '0'..='7' => {
                let rest: String = chars.by_ref().take(2).collect();
                let oct = format!("{esc}{rest}");
                if oct.len() != 3 {
                    return None;
                }
                out.push(u8::try_from(u32::from_str_radix(&oct, 8).ok()?).ok()?);
            }
            'u' | 'U' => {
                let n = if esc == 'u' { 4 } else { 8 };
                let hex: String = chars.by_ref().take(n).collect();
                if hex.len() != n {
                    return None;
                }
                let ch = char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Splits a request line into arguments: whitespace-separated words,
/// `"double quoted"` strings with Go escapes, and `'single quoted'` strings.
pub fn argify(line: &str) -> Result<Vec<Vec<u8>>, CtlError> {
    let mut args = Vec::new();
    let mut rest = line;
    loop {
        rest = rest.trim_start_matches(char::is_whitespace);
        let Some(first) = rest.chars().next() else {
            break;
        };
        match first {
            '"' => match quoted_span(rest, '"') {
                Some(len) => {
                    let (word, after) = rest.split_at(len);
                    let value = go_unquote_body(&word[1..word.len() - 1])
                        .ok_or_else(|| CtlError::invalid_input("invalid syntax"))?;
                    args.push(value);
                    rest = after;
                }
                None => rest = &rest[1..],
            },
            '\'' => match rest[1..].find('\'') {
                // etcdctl 3.4 slices single-quoted words with the wrong length
                // (`args[i][1:len(args)-1]`); we keep the whole quoted text.
                Some(end) => {
                    args.push(rest.as_bytes()[1..=end].to_vec());
                    rest = &rest[end + 2..];
                }
                None => rest = &rest[1..],
            },
            _ => {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                args.push(rest.as_bytes()[..end].to_vec());
                rest = &rest[end..];
            }
        }
    }
    Ok(args)
}

/// Length of a `"..."` span (with backslash escapes) at the start of `s`.
fn quoted_span(s: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == quote {
            return Some(i + 1);
        }
    }
    None
}

/// Parses one request line: `get ...`, `put ...` or `del ...` with the same
/// flags as the commands.
pub fn parse_request_op(line: &str) -> Result<pb::RequestOp, CtlError> {
    use pb::request_op::Request;
    let args = argify(line)?;
    if args.len() < 2 {
        return Err(CtlError::invalid_input(format!(
            "invalid txn compare request: {line}"
        )));
    }
    let invalid = || CtlError::invalid_input(format!("invalid txn request: {line}"));
    let command = String::from_utf8_lossy(&args[0]).into_owned();
    let request = match command.as_str() {
        "get" => {
            let (flags, positional) = split_flags(&args[1..], GET_FLAGS).ok_or_else(invalid)?;
            let mut opts = GetOptions {
                consistency: "l".into(),
                ..Default::default()
            };
            for (name, value) in flags {
                match name.as_str() {
                    "consistency" => opts.consistency = value,
                    "order" => opts.order = value,
                    "sort-by" => opts.sort_by = value,
                    "limit" => opts.limit = value.parse().map_err(|_| invalid())?,
                    "rev" => opts.rev = value.parse().map_err(|_| invalid())?,
                    "prefix" => opts.prefix = parse_bool(&value).ok_or_else(invalid)?,
                    "from-key" => opts.from_key = parse_bool(&value).ok_or_else(invalid)?,
                    "keys-only" => opts.keys_only = parse_bool(&value).ok_or_else(invalid)?,
                    "count-only" => opts.count_only = parse_bool(&value).ok_or_else(invalid)?,
                    _ => {} // print-value-only: output-only, irrelevant inside a txn
                }
            }
            Request::RequestRange(kv::get_request(&positional, &opts)?)
        }
        "put" => {
            let (flags, positional) = split_flags(&args[1..], PUT_FLAGS).ok_or_else(invalid)?;
            let mut opts = PutOptions {
                lease: "0".into(),
                ..Default::default()
            };
            for (name, value) in flags {
                match name.as_str() {
                    "lease" => opts.lease = value,
                    "prev-kv" => opts.prev_kv = parse_bool(&value).ok_or_else(invalid)?,
                    "ignore-value" => opts.ignore_value = parse_bool(&value).ok_or_else(invalid)?,
                    "ignore-lease" => opts.ignore_lease = parse_bool(&value).ok_or_else(invalid)?,
                    _ => {}
                }
            }
            // Standard input was consumed by the txn reader, so there is no
            // value to fall back on (etcdctl reads an empty stdin here too).
            Request::RequestPut(kv::put_request(&positional, None, &opts)?)
        }
        "del" => {
            let (flags, positional) = split_flags(&args[1..], DEL_FLAGS).ok_or_else(invalid)?;
            let mut opts = DelOptions::default();
            for (name, value) in flags {
                let on = parse_bool(&value).ok_or_else(invalid)?;
                match name.as_str() {
                    "prefix" => opts.prefix = on,
                    "prev-kv" => opts.prev_kv = on,
                    "from-key" => opts.from_key = on,
                    _ => {}
                }
            }
            Request::RequestDeleteRange(kv::delete_request(&positional, &opts)?)
        }
        _ => return Err(invalid()),
    };
    Ok(pb::RequestOp {
        request: Some(request),
    })
}

/// (flag name, takes a value)
type FlagSpec = &'static [(&'static str, bool)];
const GET_FLAGS: FlagSpec = &[
    ("consistency", true),
    ("order", true),
    ("sort-by", true),
    ("limit", true),
    ("rev", true),
    ("prefix", false),
    ("from-key", false),
    ("keys-only", false),
    ("count-only", false),
    ("print-value-only", false),
];
const PUT_FLAGS: FlagSpec = &[
    ("lease", true),
    ("prev-kv", false),
    ("ignore-value", false),
    ("ignore-lease", false),
];
const DEL_FLAGS: FlagSpec = &[("prefix", false), ("prev-kv", false), ("from-key", false)];

/// pflag-style parsing: `--name value`, `--name=value`, bare booleans, `--`
/// ends flags, flags may follow positionals. `None` on an unknown flag.
#[allow(clippy::type_complexity)]
fn split_flags(args: &[Vec<u8>], spec: FlagSpec) -> Option<(Vec<(String, String)>, Vec<Vec<u8>>)> {
    let mut flags = Vec::new();
    let mut positional = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let text = String::from_utf8_lossy(arg);
        if text == "--" {
            positional.extend(iter.cloned());
            break;
        }
        let Some(body) = text.strip_prefix("--") else {
            if text.starts_with('-') && text.len() > 1 {
                return None;
            }
            positional.push(arg.clone());
            continue;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (body.to_owned(), None),
        };
        let (_, takes_value) = spec.iter().find(|(n, _)| *n == name)?;
        let value = match (inline, takes_value) {
            (Some(v), _) => v,
            (None, true) => String::from_utf8_lossy(iter.next()?).into_owned(),
            (None, false) => "true".to_owned(),
        };
        flags.push((name, value));
    }
    Some((flags, positional))
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::request_op::Request;

    #[test]
    fn compare_targets_and_ops() {
        let c = parse_compare(r#"value("k1") = "v1""#).unwrap();
        assert_eq!(c.key, b"k1");
        assert_eq!(c.target, CompareTarget::Value as i32);
        assert_eq!(c.result, CompareResult::Equal as i32);
        assert_eq!(c.target_union, Some(TargetUnion::Value(b"v1".to_vec())));

        let c = parse_compare(r#"mod("k1") > "3""#).unwrap();
        assert_eq!(c.target_union, Some(TargetUnion::ModRevision(3)));
        assert_eq!(c.result, CompareResult::Greater as i32);

        let c = parse_compare(r#"c("k") != "2""#).unwrap();
        assert_eq!(c.target_union, Some(TargetUnion::CreateRevision(2)));
        assert_eq!(c.result, CompareResult::NotEqual as i32);

        let c = parse_compare(r#"ver("k") < "9""#).unwrap();
        assert_eq!(c.target_union, Some(TargetUnion::Version(9)));

        let c = parse_compare(r#"lease("k") == "1a""#).unwrap();
        assert_eq!(c.target_union, Some(TargetUnion::Lease(0x1a)));

        let c = parse_compare(r#"value(`raw`) = "\x41\n""#).unwrap();
        assert_eq!(c.key, b"raw");
        assert_eq!(c.target_union, Some(TargetUnion::Value(b"A\n".to_vec())));
    }

    #[test]
    fn compare_errors_match_etcdctl() {
        let msg = |l: &str| parse_compare(l).unwrap_err().message;
        assert_eq!(msg("bogus"), "malformed comparison: bogus");
        assert_eq!(
            msg(r#"value("k1") =="a""#),
            r#"malformed comparison: value("k1") =="a"; got value("k1") =="a" """#
        );
        assert_eq!(
            msg(r#"value("k1")=="a""#),
            r#"malformed comparison: value("k1")=="a"; got value("k1")  """#
        );
        assert_eq!(
            msg(r#"value(k1) = "1""#),
            r#"malformed comparison: value(k1) = "1"; got value("")  """#
        );
        assert_eq!(
            msg(r#"ver("k1") = "x""#),
            r#"invalid txn compare request: ver("k1") = "x""#
        );
        assert_eq!(
            msg(r#"foo("k1") = "1""#),
            r#"malformed comparison: foo("k1") = "1" (unknown target foo)"#
        );
        assert_eq!(
            parse_compare("bogus").unwrap_err().code,
            crate::error::ExitCode::InvalidInput
        );
    }

    #[test]
    fn argify_handles_quotes_and_escapes() {
        let a = argify(r#"put k1 "new v" 'single q' "esc\x41\n\u00e9""#).unwrap();
        let expected: Vec<Vec<u8>> = vec![
            b"put".to_vec(),
            b"k1".to_vec(),
            b"new v".to_vec(),
            b"single q".to_vec(),
            "escA\né".as_bytes().to_vec(),
        ];
        assert_eq!(a, expected);
    }

    #[test]
    fn request_lines_with_flags() {
        let op =
            parse_request_op("get k --prefix --limit=2 --sort-by KEY --order=DESCEND").unwrap();
        let Some(Request::RequestRange(r)) = op.request else {
            panic!("not a range")
        };
        assert_eq!(
            (r.key.as_slice(), r.range_end.as_slice(), r.limit),
            (&b"k"[..], &b"l"[..], 2)
        );

        let op = parse_request_op(r#"put "k 3" v3 --prev-kv"#).unwrap();
        let Some(Request::RequestPut(p)) = op.request else {
            panic!("not a put")
        };
        assert_eq!(
            (p.key.as_slice(), p.value.as_slice(), p.prev_kv),
            (&b"k 3"[..], &b"v3"[..], true)
        );

        let op = parse_request_op("del k2 --prev-kv").unwrap();
        let Some(Request::RequestDeleteRange(d)) = op.request else {
            panic!("not a del")
        };
        assert!(d.prev_kv);
    }

    #[test]
    fn request_line_errors_match_etcdctl() {
        let err = |l: &str| parse_request_op(l).unwrap_err();
        assert_eq!(err("put").message, "invalid txn compare request: put");
        assert_eq!(err("foo k").message, "invalid txn request: foo k");
        assert_eq!(
            err("put k1 a --bogus").message,
            "invalid txn request: put k1 a --bogus"
        );
        let e = err("put k");
        assert_eq!(
            e.message,
            "put command needs 1 argument and input from stdin or 2 arguments"
        );
        assert_eq!(e.code, crate::error::ExitCode::BadArgs);
    }

    #[test]
    fn read_txn_blocks_and_prompts() {
        let input = "value(\"k1\") = \"v1\"\n\nput k1 x\nget k1\n\ndel k2\n\n";
        let mut out = Vec::new();
        let txn = read_txn(&mut input.as_bytes(), true, &mut out).unwrap();
        assert_eq!(
            (txn.compare.len(), txn.success.len(), txn.failure.len()),
            (1, 2, 1)
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n"
        );
        let mut quiet = Vec::new();
        read_txn(&mut "\n\n\n".as_bytes(), false, &mut quiet).unwrap();
        assert!(quiet.is_empty());
    }

    #[test]
    fn read_txn_without_final_newline_is_eof() {
        let mut out = Vec::new();
        let e = read_txn(&mut "\n".as_bytes(), false, &mut out).unwrap_err();
        assert_eq!(
            (e.message.as_str(), e.code),
            ("EOF", crate::error::ExitCode::InvalidInput)
        );
        let e = read_txn(&mut "value(\"k\") = \"a\"".as_bytes(), false, &mut out).unwrap_err();
        assert_eq!(e.message, "EOF");
    }
}
