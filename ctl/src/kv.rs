//! Turning `get` / `put` / `del` arguments and options into etcd requests,
//! exactly as etcdctl and clientv3's `OpGet` / `OpPut` / `OpDelete` do. Shared
//! by the top-level commands and by the request lines of `txn`.

use crate::error::CtlError;
use concord_proto::etcdserverpb as pb;
use pb::range_request::{SortOrder, SortTarget};

/// `get`'s options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetOptions {
    pub consistency: String,
    pub order: String,
    pub sort_by: String,
    pub limit: i64,
    pub prefix: bool,
    pub from_key: bool,
    pub rev: i64,
    pub keys_only: bool,
    pub count_only: bool,
}

/// `put`'s options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    pub lease: String,
    pub prev_kv: bool,
    pub ignore_value: bool,
    pub ignore_lease: bool,
}

/// `del`'s options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DelOptions {
    pub prefix: bool,
    pub prev_kv: bool,
    pub from_key: bool,
}

/// The end of the range of all keys starting with `key` (clientv3's
/// `GetPrefixRangeEnd`): increment the last byte below 0xff, dropping 0xff
/// bytes; all-0xff (or empty) prefixes mean "to the end" (`\0`).
pub fn prefix_range_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

pub fn get_request(args: &[Vec<u8>], opts: &GetOptions) -> Result<pb::RangeRequest, CtlError> {
    let Some(first) = args.first() else {
        return Err(CtlError::bad_args(
            "get command needs one argument as key and an optional argument as range_end",
        ));
    };
    if opts.prefix && opts.from_key {
        return Err(CtlError::bad_args(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        ));
    }
    if opts.keys_only && opts.count_only {
        return Err(CtlError::bad_args(
            "`--keys-only` and `--count-only` cannot be set at the same time, choose one",
        ));
    }
    let mut req = pb::RangeRequest {
        key: first.clone(),
        ..Default::default()
    };
    match opts.consistency.as_str() {
        "s" => req.serializable = true,
        "l" | "" => {}
        other => {
            return Err(CtlError::bad_feature(format!(
                "unknown consistency flag {}",
                crate::gofmt::quote(other.as_bytes())
            )));
        }
    }
    if let Some(end) = args.get(1) {
        if opts.prefix || opts.from_key {
            return Err(CtlError::bad_args(
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            ));
        }
        req.range_end = end.clone();
    }
    req.limit = opts.limit;
    if opts.rev > 0 {
        req.revision = opts.rev;
    }

    let mut order = match opts.order.to_uppercase().as_str() {
        "ASCEND" => SortOrder::Ascend,
        "DESCEND" => SortOrder::Descend,
        "" => SortOrder::None,
        _ => {
            return Err(CtlError::bad_feature(format!(
                "bad sort order {}",
                opts.order
            )));
        }
    };
    let target = match opts.sort_by.to_uppercase().as_str() {
        "CREATE" => SortTarget::Create,
        "KEY" | "" => SortTarget::Key,
        "MODIFY" => SortTarget::Mod,
        "VALUE" => SortTarget::Value,
        "VERSION" => SortTarget::Version,
        _ => {
            return Err(CtlError::bad_feature(format!(
                "bad sort target {}",
                opts.sort_by
            )));
        }
    };
    // clientv3's WithSort: keys already come back ascending, so sorting by key
    // ascending is sent as "no sort".
    if target == SortTarget::Key && order == SortOrder::Ascend {
        order = SortOrder::None;
    }
    req.sort_order = order as i32;
    req.sort_target = target as i32;

    if opts.prefix {
        if req.key.is_empty() {
            req.key = vec![0];
            req.range_end = vec![0];
        } else {
            req.range_end = prefix_range_end(&req.key);
        }
    }
    if opts.from_key {
        if req.key.is_empty() {
            req.key = vec![0];
        }
        req.range_end = vec![0];
    }
    req.keys_only = opts.keys_only;
    req.count_only = opts.count_only;
    Ok(req)
}

/// Builds a put from `key [value]`; `value` is `None` when it must come from stdin.
pub fn put_request(
    args: &[Vec<u8>],
    stdin_value: Option<Vec<u8>>,
    opts: &PutOptions,
) -> Result<pb::PutRequest, CtlError> {
    const NEEDS: &str = "put command needs 1 argument and input from stdin or 2 arguments";
    let Some(key) = args.first() else {
        return Err(CtlError::bad_args(NEEDS));
    };
    if opts.ignore_value && args.len() > 1 {
        return Err(CtlError::bad_args(
            "put command needs only 1 argument when 'ignore-value' is set",
        ));
    }
    let mut value = Vec::new();
    if !opts.ignore_value {
        value = match args.get(1) {
            Some(v) => v.clone(),
            None => match stdin_value {
                Some(v) if !v.is_empty() => v,
                _ => return Err(CtlError::bad_args(NEEDS)),
            },
        };
    }
    let lease = parse_hex_lease(if opts.lease.is_empty() {
        "0"
    } else {
        &opts.lease
    })
    .map_err(|e| CtlError::bad_args(format!("bad lease ID ({e}), expecting ID in Hex")))?;
    Ok(pb::PutRequest {
        key: key.clone(),
        value,
        lease,
        prev_kv: opts.prev_kv,
        ignore_value: opts.ignore_value,
        ignore_lease: opts.ignore_lease,
    })
}

pub fn delete_request(
    args: &[Vec<u8>],
    opts: &DelOptions,
) -> Result<pb::DeleteRangeRequest, CtlError> {
    if args.is_empty() || args.len() > 2 {
        return Err(CtlError::bad_args(
            "del command needs one argument as key and an optional argument as range_end",
        ));
    }
    if opts.prefix && opts.from_key {
        return Err(CtlError::bad_args(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        ));
    }
    let mut req = pb::DeleteRangeRequest {
        key: args[0].clone(),
        ..Default::default()
    };
    if let Some(end) = args.get(1) {
        if opts.prefix || opts.from_key {
            return Err(CtlError::bad_args(
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            ));
        }
        req.range_end = end.clone();
    }
    if opts.prefix {
        if req.key.is_empty() {
            req.key = vec![0];
            req.range_end = vec![0];
        } else {
            req.range_end = prefix_range_end(&req.key);
        }
    }
    req.prev_kv = opts.prev_kv;
    if opts.from_key {
        if req.key.is_empty() {
            req.key = vec![0];
        }
        req.range_end = vec![0];
    }
    Ok(req)
}

/// Go's `strconv.ParseInt(s, 16, 64)`, with its error text.
pub fn parse_hex_lease(s: &str) -> Result<i64, String> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "strconv.ParseInt: parsing {}: invalid syntax",
            go_q(s)
        ));
    }
    let magnitude = u64::from_str_radix(digits, 16)
        .map_err(|_| format!("strconv.ParseInt: parsing {}: value out of range", go_q(s)))?;
    let value = if neg {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    };
    value.ok_or_else(|| format!("strconv.ParseInt: parsing {}: value out of range", go_q(s)))
}

/// Go's `strconv.ParseInt(s, 10, 64)`, with its error text.
pub fn parse_decimal(s: &str) -> Result<i64, String> {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "strconv.ParseInt: parsing {}: invalid syntax",
            go_q(s)
        ));
    }
    s.parse::<i64>()
        .map_err(|_| format!("strconv.ParseInt: parsing {}: value out of range", go_q(s)))
}

fn go_q(s: &str) -> String {
    crate::gofmt::quote(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<Vec<u8>> {
        a.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_range_end(b"abc"), b"abd");
        assert_eq!(prefix_range_end(b"a\xff"), b"b");
        assert_eq!(prefix_range_end(b"\xff\xff"), b"\0");
    }

    #[test]
    fn get_prefix_and_from_key_ranges() {
        let opts = GetOptions {
            prefix: true,
            ..Default::default()
        };
        let r = get_request(&args(&["k"]), &opts).unwrap();
        assert_eq!((r.key, r.range_end), (b"k".to_vec(), b"l".to_vec()));
        let r = get_request(&args(&[""]), &opts).unwrap();
        assert_eq!((r.key, r.range_end), (vec![0], vec![0]));
        let opts = GetOptions {
            from_key: true,
            ..Default::default()
        };
        let r = get_request(&args(&["k2"]), &opts).unwrap();
        assert_eq!((r.key, r.range_end), (b"k2".to_vec(), vec![0]));
    }

    #[test]
    fn get_sort_by_key_ascend_is_sent_as_none() {
        let opts = GetOptions {
            order: "ascend".into(),
            ..Default::default()
        };
        let r = get_request(&args(&["k"]), &opts).unwrap();
        assert_eq!(r.sort_order, SortOrder::None as i32);
        let opts = GetOptions {
            order: "DESCEND".into(),
            sort_by: "value".into(),
            ..Default::default()
        };
        let r = get_request(&args(&["k"]), &opts).unwrap();
        assert_eq!(r.sort_order, SortOrder::Descend as i32);
        assert_eq!(r.sort_target, SortTarget::Value as i32);
    }

    #[test]
    fn get_argument_errors_match_etcdctl() {
        let e = get_request(&[], &GetOptions::default()).unwrap_err();
        assert_eq!(e.code, crate::error::ExitCode::BadArgs);
        let opts = GetOptions {
            consistency: "x".into(),
            ..Default::default()
        };
        let e = get_request(&args(&["k"]), &opts).unwrap_err();
        assert_eq!(e.message, "unknown consistency flag \"x\"");
        assert_eq!(e.code, crate::error::ExitCode::BadFeature);
        let opts = GetOptions {
            order: "bad".into(),
            ..Default::default()
        };
        assert_eq!(
            get_request(&args(&["k"]), &opts).unwrap_err().message,
            "bad sort order bad"
        );
    }

    #[test]
    fn put_lease_is_hex_and_value_may_come_from_stdin() {
        let opts = PutOptions {
            lease: "1234".into(),
            ..Default::default()
        };
        let r = put_request(&args(&["k", "v"]), None, &opts).unwrap();
        assert_eq!(r.lease, 0x1234);
        let r = put_request(&args(&["k"]), Some(b"from stdin\n".to_vec()), &opts).unwrap();
        assert_eq!(r.value, b"from stdin\n");
        let e = put_request(&args(&["k"]), Some(Vec::new()), &opts).unwrap_err();
        assert_eq!(
            e.message,
            "put command needs 1 argument and input from stdin or 2 arguments"
        );
        let opts = PutOptions {
            lease: "zz".into(),
            ..Default::default()
        };
        let e = put_request(&args(&["k", "v"]), None, &opts).unwrap_err();
        assert_eq!(
            e.message,
            "bad lease ID (strconv.ParseInt: parsing \"zz\": invalid syntax), expecting ID in Hex"
        );
    }

    #[test]
    fn del_argument_count_is_checked() {
        let e = delete_request(&args(&["a", "b", "c"]), &DelOptions::default()).unwrap_err();
        assert_eq!(
            e.message,
            "del command needs one argument as key and an optional argument as range_end"
        );
        let opts = DelOptions {
            prefix: true,
            prev_kv: true,
            ..Default::default()
        };
        let r = delete_request(&args(&["k"]), &opts).unwrap();
        assert_eq!(r.range_end, b"l");
        assert!(r.prev_kv);
    }

    #[test]
    fn decimal_parse_errors_match_go() {
        assert_eq!(parse_decimal("12"), Ok(12));
        assert_eq!(
            parse_decimal("abc"),
            Err("strconv.ParseInt: parsing \"abc\": invalid syntax".to_owned())
        );
    }
}
