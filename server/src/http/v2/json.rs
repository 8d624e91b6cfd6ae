//! etcd's v2 JSON, byte for byte: Go's encoding/json field order and `omitempty`
//! rules, its HTML-safe string escaping, and `time.Time`'s RFC 3339 format with
//! nanoseconds (trailing zeros dropped).

use std::fmt::Write;

use crate::state::v2::{Event, NodeView, V2Error};

/// A string as Go's encoder writes it (`<`, `>`, `&`, U+2028 and U+2029 escaped): the
/// one escaper for every JSON Concord prints as Go would (the v2 API, concordctl's
/// `-w json`).
pub fn go_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Unix nanoseconds as Go's `time.Time` JSON in UTC: `2006-01-02T15:04:05.999999999Z`.
pub fn go_time(unix_nanos: i64) -> String {
    let seconds = unix_nanos.div_euclid(1_000_000_000);
    let nanos = unix_nanos.rem_euclid(1_000_000_000);
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    );
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    text
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Seconds left, rounded up, as etcd computes a node's `ttl`.
fn ttl_seconds(expire_at: i64, now: i64) -> i64 {
    let left = expire_at - now;
    let mut ttl = left / 1_000_000_000;
    if left % 1_000_000_000 > 0 {
        ttl += 1;
    }
    ttl
}

/// etcd's NodeExtern: key, value, dir, expiration, ttl, nodes, modifiedIndex,
/// createdIndex, each omitted when empty.
pub fn node(out: &mut String, node: &NodeView, now: i64) {
    out.push('{');
    let mut first = true;
    let mut field = |out: &mut String, name: &str| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push('"');
        out.push_str(name);
        out.push_str("\":");
    };
    if !node.key.is_empty() {
        field(out, "key");
        go_string(out, &node.key);
    }
    if let Some(value) = &node.value {
        field(out, "value");
        go_string(out, value);
    }
    if node.dir {
        field(out, "dir");
        out.push_str("true");
    }
    if let Some(at) = node.expire_at {
        field(out, "expiration");
        go_string(out, &go_time(at));
        let ttl = ttl_seconds(at, now);
        if ttl != 0 {
            field(out, "ttl");
            let _ = write!(out, "{ttl}");
        }
    }
    if let Some(children) = node.nodes.as_ref().filter(|c| !c.is_empty()) {
        field(out, "nodes");
        out.push('[');
        for (i, child) in children.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            self::node(out, child, now);
        }
        out.push(']');
    }
    if node.modified_index != 0 {
        field(out, "modifiedIndex");
        let _ = write!(out, "{}", node.modified_index);
    }
    if node.created_index != 0 {
        field(out, "createdIndex");
        let _ = write!(out, "{}", node.created_index);
    }
    out.push('}');
}

/// An event as etcd's encoder writes it, newline included. `bare` drops the nodes
/// (`noValueOnSuccess`).
pub fn event(event: &Event, now: i64, bare: bool) -> String {
    let mut out = String::from("{\"action\":");
    go_string(&mut out, event.action.as_str());
    if !bare {
        out.push_str(",\"node\":");
        node(&mut out, &event.node, now);
        if let Some(prev) = &event.prev_node {
            out.push_str(",\"prevNode\":");
            node(&mut out, prev, now);
        }
    }
    if event.refresh {
        out.push_str(",\"refresh\":true");
    }
    out.push_str("}\n");
    out
}

/// etcd's v2 error body, newline included.
pub fn error(error: &V2Error) -> String {
    let mut out = format!("{{\"errorCode\":{},\"message\":", error.code);
    go_string(&mut out, error.message());
    if !error.cause.is_empty() {
        out.push_str(",\"cause\":");
        go_string(&mut out, &error.cause);
    }
    let _ = writeln!(out, ",\"index\":{}}}", error.index);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_go_does() {
        assert_eq!(go_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(go_time(1_767_225_600_500_000_000), "2026-01-01T00:00:00.5Z");
        assert_eq!(
            go_time(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
    }

    #[test]
    fn strings_escape_as_go_does() {
        let mut out = String::new();
        go_string(&mut out, "a<b>&\"\u{1}é");
        assert_eq!(out, "\"a\\u003cb\\u003e\\u0026\\\"\\u0001é\"");
    }

    #[test]
    fn ttl_rounds_up() {
        assert_eq!(ttl_seconds(10_000_000_001, 0), 11);
        assert_eq!(ttl_seconds(10_000_000_000, 0), 10);
    }
}
