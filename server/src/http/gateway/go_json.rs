//! Go's `encoding/json` error texts for request bodies the gateway refuses, as etcd
//! 3.4's gateway (grpc-gateway v1, jsonpb over `encoding/json`) writes them in its
//! `{"error", "message", "code"}` answers: syntax errors found by Go's scanner
//! (`invalid character 'x' looking for beginning of value`, `unexpected EOF`) and type
//! errors found when a value meets its field (`json: cannot unmarshal string into Go
//! value of type bool`, `unknown value "X" for enum etcdserverpb.RangeRequest_SortOrder`,
//! `illegal base64 data at input byte 0`). Expected texts were read off etcd 3.4.23
//! answering curl; serde_json and prost-reflect still do the decoding itself.

use prost_reflect::{Kind, MessageDescriptor};
use serde_json::Value;

/// Go's `quoteChar`: a byte as the scanner names it in its errors.
fn quote_char(c: u8) -> String {
    match c {
        b'\'' => "'\\''".to_string(),
        b'"' => "'\"'".to_string(),
        b'\n' => "'\\n'".to_string(),
        b'\r' => "'\\r'".to_string(),
        b'\t' => "'\\t'".to_string(),
        0x07 => "'\\a'".to_string(),
        0x08 => "'\\b'".to_string(),
        0x0c => "'\\f'".to_string(),
        0x0b => "'\\v'".to_string(),
        c if c < 0x20 || c == 0x7f => format!("'\\x{c:02x}'"),
        c => format!("'{}'", char::from(c)),
    }
}

fn invalid(c: u8, context: &str) -> String {
    format!("invalid character {} {context}", quote_char(c))
}

const UNEXPECTED_EOF: &str = "unexpected EOF";

/// Go's scanner over the first JSON value of `input`: the error it reports (the first
/// invalid byte, or `unexpected EOF` when the input ends inside the value); `None` if
/// the value is well formed.
pub fn syntax_error(input: &[u8]) -> Option<String> {
    let mut scanner = Scanner { input, at: 0 };
    scanner.value().err()
}

struct Scanner<'a> {
    input: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
    fn skip_blanks(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.input.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte after blanks, not consumed.
    fn peek(&mut self) -> Result<u8, String> {
        self.skip_blanks();
        self.input
            .get(self.at)
            .copied()
            .ok_or_else(|| UNEXPECTED_EOF.to_string())
    }

    fn next_byte(&mut self) -> Result<u8, String> {
        let c = self
            .input
            .get(self.at)
            .copied()
            .ok_or_else(|| UNEXPECTED_EOF.to_string())?;
        self.at += 1;
        Ok(c)
    }

    fn value(&mut self) -> Result<(), String> {
        let c = self.peek()?;
        match c {
            b'{' => {
                self.at += 1;
                self.object()
            }
            b'[' => {
                self.at += 1;
                self.array()
            }
            b'"' => {
                self.at += 1;
                self.string()
            }
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            c => Err(invalid(c, "looking for beginning of value")),
        }
    }

    fn object(&mut self) -> Result<(), String> {
        let mut first = true;
        loop {
            let c = self.peek()?;
            if first && c == b'}' {
                self.at += 1;
                return Ok(());
            }
            if c != b'"' {
                return Err(invalid(c, "looking for beginning of object key string"));
            }
            self.at += 1;
            self.string()?;
            let c = self.peek()?;
            if c != b':' {
                return Err(invalid(c, "after object key"));
            }
            self.at += 1;
            self.value()?;
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Ok(());
                }
                c => return Err(invalid(c, "after object key:value pair")),
            }
            first = false;
        }
    }

    fn array(&mut self) -> Result<(), String> {
        if self.peek()? == b']' {
            self.at += 1;
            return Ok(());
        }
        loop {
            self.value()?;
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Ok(());
                }
                c => return Err(invalid(c, "after array element")),
            }
        }
    }

    /// After the opening quote.
    fn string(&mut self) -> Result<(), String> {
        loop {
            match self.next_byte()? {
                b'"' => return Ok(()),
                b'\\' => match self.next_byte()? {
                    b'b' | b'f' | b'n' | b'r' | b't' | b'\\' | b'/' | b'"' => {}
                    b'u' => {
                        for _ in 0..4 {
                            let c = self.next_byte()?;
                            if !c.is_ascii_hexdigit() {
                                return Err(invalid(c, "in \\u hexadecimal character escape"));
                            }
                        }
                    }
                    c => return Err(invalid(c, "in string escape code")),
                },
                c if c < 0x20 => return Err(invalid(c, "in string literal")),
                _ => {}
            }
        }
    }

    /// A number; the byte that ends it is left for the enclosing state to judge.
    fn number(&mut self) -> Result<(), String> {
        if self.input[self.at] == b'-' {
            self.at += 1;
            let c = self.next_byte()?;
            if !c.is_ascii_digit() {
                return Err(invalid(c, "in numeric literal"));
            }
            self.at -= 1;
        }
        if self.next_byte()? != b'0' {
            self.digits();
        }
        if self.input.get(self.at) == Some(&b'.') {
            self.at += 1;
            let c = self.next_byte()?;
            if !c.is_ascii_digit() {
                return Err(invalid(c, "after decimal point in numeric literal"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.input.get(self.at) {
            self.at += 1;
            let mut c = self.next_byte()?;
            if c == b'+' || c == b'-' {
                c = self.next_byte()?;
            }
            if !c.is_ascii_digit() {
                return Err(invalid(c, "in exponent of numeric literal"));
            }
            self.digits();
        }
        Ok(())
    }

    fn digits(&mut self) {
        while self.input.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), String> {
        let name = String::from_utf8_lossy(word);
        for &expected in word {
            let c = self.next_byte()?;
            if c != expected {
                return Err(invalid(
                    c,
                    &format!("in literal {name} (expecting {})", quote_char(expected)),
                ));
            }
        }
        Ok(())
    }
}

/// The JSON type Go names in "cannot unmarshal X into ...".
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn cannot_unmarshal(what: &str, go_type: &str) -> String {
    format!("json: cannot unmarshal {what} into Go value of type {go_type}")
}

/// The first type error Go's jsonpb would report decoding `value` as a `desc` message
/// (unknown fields ignored, `null` meaning "not set"); `None` when the types fit.
pub fn type_error(desc: &MessageDescriptor, value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::Object(fields) => fields.iter().find_map(|(name, value)| {
            let field = desc
                .get_field_by_json_name(name)
                .or_else(|| desc.get_field_by_name(name))?;
            if value.is_null() {
                return None;
            }
            if field.is_list() {
                let Value::Array(items) = value else {
                    return Some(cannot_unmarshal(json_kind(value), "[]json.RawMessage"));
                };
                return items
                    .iter()
                    .find_map(|item| field_error(&field.kind(), item));
            }
            if field.is_map() {
                return None;
            }
            field_error(&field.kind(), value)
        }),
        other => Some(cannot_unmarshal(
            json_kind(other),
            "map[string]json.RawMessage",
        )),
    }
}

fn field_error(kind: &Kind, value: &Value) -> Option<String> {
    match kind {
        Kind::Message(desc) => type_error(desc, value),
        Kind::Enum(desc) => match value {
            Value::Number(_) => None,
            Value::String(name) => desc.get_value_by_name(name).is_none().then(|| {
                // Go names a nested enum Outer_Inner, in its proto package.
                let go_name = desc
                    .full_name()
                    .strip_prefix(desc.package_name())
                    .map(|rest| rest.trim_start_matches('.').replace('.', "_"))
                    .unwrap_or_else(|| desc.name().to_string());
                format!(
                    "unknown value {} for enum {}.{go_name}",
                    serde_json::Value::String(name.clone()),
                    desc.package_name()
                )
            }),
            other => Some(cannot_unmarshal(json_kind(other), "int32")),
        },
        Kind::Bytes => match value {
            Value::String(text) => base64_error(text),
            other => Some(cannot_unmarshal(json_kind(other), "[]uint8")),
        },
        Kind::Bool => match value {
            Value::Bool(_) => None,
            other => Some(cannot_unmarshal(json_kind(other), "bool")),
        },
        Kind::String => match value {
            Value::String(_) => None,
            other => Some(cannot_unmarshal(json_kind(other), "string")),
        },
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => integer_error(value, "int64"),
        Kind::Uint64 | Kind::Fixed64 => integer_error(value, "uint64"),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => integer_error(value, "int32"),
        Kind::Uint32 | Kind::Fixed32 => integer_error(value, "uint32"),
        Kind::Double | Kind::Float => match value {
            Value::Number(_) | Value::String(_) => None,
            other => Some(cannot_unmarshal(json_kind(other), "float64")),
        },
    }
}

/// An integer field: a number, or (jsonpb) a string holding one, whose content Go
/// decodes as JSON again (so `"abc"` fails as `abc` would).
fn integer_error(value: &Value, go_type: &str) -> Option<String> {
    let number = match value {
        Value::Number(number) => number.to_string(),
        Value::String(text) => {
            let inner = text.as_bytes();
            if let Some(error) = syntax_error(inner) {
                return Some(error);
            }
            let mut scanner = Scanner {
                input: inner,
                at: 0,
            };
            let _ = scanner.value();
            scanner.skip_blanks();
            if let Some(&c) = inner.get(scanner.at) {
                return Some(invalid(c, "after top-level value"));
            }
            match serde_json::from_slice::<Value>(inner) {
                Ok(Value::Number(number)) => number.to_string(),
                Ok(other) => return Some(cannot_unmarshal(json_kind(&other), go_type)),
                Err(error) => return Some(error.to_string()),
            }
        }
        other => return Some(cannot_unmarshal(json_kind(other), go_type)),
    };
    let fits = match go_type {
        "int64" => number.parse::<i64>().is_ok(),
        "uint64" => number.parse::<u64>().is_ok(),
        "int32" => number.parse::<i32>().is_ok(),
        _ => number.parse::<u32>().is_ok(),
    };
    (!fits).then(|| cannot_unmarshal(&format!("number {number}"), go_type))
}

/// Go's `base64.StdEncoding` error for `text`: the offset of the first byte it refuses.
fn base64_error(text: &str) -> Option<String> {
    use base64::Engine as _;
    if base64::engine::general_purpose::STANDARD
        .decode(text)
        .is_ok()
    {
        return None;
    }
    let bytes = text.as_bytes();
    let is_symbol = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
    let at = bytes
        .iter()
        .position(|&c| !is_symbol(c))
        .unwrap_or(bytes.len());
    // Padding in the right place is fine; Go reports where the data stops fitting.
    let offset = if at < bytes.len() && bytes[at] == b'=' && at % 4 >= 2 {
        bytes.len().min(at + (4 - at % 4))
    } else {
        at
    };
    Some(format!("illegal base64 data at input byte {offset}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_read_as_gos() {
        // Read off etcd 3.4.23's gateway answering these bodies on /v3/kv/range.
        let cases: &[(&str, &str)] = &[
            ("x", "invalid character 'x' looking for beginning of value"),
            (r#"{"key":"#, "unexpected EOF"),
            (
                r#"{"key":"aw==",}"#,
                "invalid character '}' looking for beginning of object key string",
            ),
            (r#"{"a" 1}"#, "invalid character '1' after object key"),
            (
                r#"{"a":1 "b"}"#,
                "invalid character '\"' after object key:value pair",
            ),
            ("[1 2]", "invalid character '2' after array element"),
            (
                "tru ",
                "invalid character ' ' in literal true (expecting 'e')",
            ),
            ("nul", "unexpected EOF"),
            ("-x", "invalid character 'x' in numeric literal"),
            ("\"a\\q\"", "invalid character 'q' in string escape code"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                syntax_error(input.as_bytes()).as_deref(),
                Some(*expected),
                "{input}"
            );
        }
        assert_eq!(syntax_error(br#"{"key":"aw=="} x"#), None);
    }
}
