//! Go's `encoding/json` error texts for request bodies the gateway refuses, as etcd
//! 3.4's gateway (grpc-gateway v1, jsonpb over `encoding/json`) writes them in its
//! `{"error", "message", "code"}` answers: syntax errors found by Go's scanner
//! (`invalid character 'x' looking for beginning of value`, `unexpected EOF`) and type
//! errors found when a value meets its field (`json: cannot unmarshal string into Go
//! value of type bool`, `unknown value "X" for enum etcdserverpb.RangeRequest_SortOrder`,
//! `illegal base64 data at input byte 0`). Expected texts were read off etcd 3.4.23
//! answering curl.
//!
//! It also decodes request bodies ([`decode_message`]) as jsonpb does, from the body's
//! text rather than from a `serde_json::Value`: Go judges a number by its literal (and
//! quotes it in errors: `number 99999999999999999999`, `number 1e3`), reads the text
//! inside a quoted integer again as JSON, and takes fields in declaration order. The
//! result is a prost-reflect [`DynamicMessage`].

use prost_reflect::{
    DynamicMessage, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, Value,
};

/// Go's `quoteChar`: a byte as the scanner names it in its errors.
fn quote_char(c: u8) -> String {
    match c {
        b'\'' => "'\\''".to_string(),
        b'"' => "'\"'".to_string(),
        b'\\' => "'\\\\'".to_string(),
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

pub const UNEXPECTED_EOF: &str = "unexpected EOF";

/// Go's `maxNestingDepth`: deeper JSON is a syntax error.
const MAX_DEPTH: usize = 10_000;

/// Go's scanner over the first JSON value of `input`: the error it reports (the first
/// invalid byte, or `unexpected EOF` when the input ends inside the value); `None` if
/// the value is well formed.
#[cfg(test)]
fn syntax_error(input: &[u8]) -> Option<String> {
    value_end(input).err()
}

/// Where the first JSON value of `input` ends (blanks before it skipped), or Go's
/// scanner's error for it (`unexpected EOF` when the input ends inside it). Iterative,
/// so that deep nesting costs no stack.
pub fn value_end(input: &[u8]) -> Result<usize, String> {
    let mut scanner = Scanner { input, at: 0 };
    scanner.value()?;
    Ok(scanner.at)
}

struct Scanner<'a> {
    input: &'a [u8],
    at: usize,
}

/// An open container while scanning.
enum Open {
    Object,
    Array,
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

    /// After `{` or `,` in an object: a key and its colon.
    fn object_key(&mut self) -> Result<(), String> {
        let c = self.peek()?;
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
        Ok(())
    }

    /// One whole value, containers included, with an explicit stack.
    fn value(&mut self) -> Result<(), String> {
        let mut open: Vec<Open> = Vec::new();
        loop {
            // A value starts here.
            let c = self.peek()?;
            match c {
                b'{' | b'[' => {
                    if open.len() + 1 > MAX_DEPTH {
                        return Err(invalid(c, "exceeded max depth"));
                    }
                    self.at += 1;
                    let close = if c == b'{' { b'}' } else { b']' };
                    if self.peek()? == close {
                        self.at += 1;
                    } else if c == b'{' {
                        self.object_key()?;
                        open.push(Open::Object);
                        continue;
                    } else {
                        open.push(Open::Array);
                        continue;
                    }
                }
                b'"' => {
                    self.at += 1;
                    self.string()?;
                }
                b'-' | b'0'..=b'9' => self.number()?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                c => return Err(invalid(c, "looking for beginning of value")),
            }
            // A value ended: close what it ends, or go on to the next member.
            loop {
                let Some(container) = open.last() else {
                    return Ok(());
                };
                let c = self.peek()?;
                match (container, c) {
                    (Open::Object, b',') => {
                        self.at += 1;
                        self.object_key()?;
                        break;
                    }
                    (Open::Array, b',') => {
                        self.at += 1;
                        break;
                    }
                    (Open::Object, b'}') | (Open::Array, b']') => {
                        self.at += 1;
                        open.pop();
                    }
                    (Open::Object, c) => return Err(invalid(c, "after object key:value pair")),
                    (Open::Array, c) => return Err(invalid(c, "after array element")),
                }
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

/// `json.Unmarshal`'s syntax check of a whole input (as jsonpb applies it to the text
/// inside a quoted number): one value and nothing but blanks after it.
fn unmarshal_syntax_error(input: &[u8]) -> Option<String> {
    let mut scanner = Scanner { input, at: 0 };
    if let Err(error) = scanner.value() {
        return Some(if error == UNEXPECTED_EOF {
            "unexpected end of JSON input".to_string()
        } else {
            error
        });
    }
    scanner.skip_blanks();
    let c = *input.get(scanner.at)?;
    Some(invalid(c, "after top-level value"))
}

/// A well-formed JSON value, as written: `text` starts at its first byte (no blanks)
/// and ends with it.
#[derive(Clone, Copy)]
struct Raw<'a> {
    text: &'a [u8],
}

/// The JSON type Go names in "cannot unmarshal X into ...".
#[derive(Clone, Copy, PartialEq, Eq)]
enum JsonKind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl JsonKind {
    fn name(self) -> &'static str {
        match self {
            JsonKind::Null => "null",
            JsonKind::Bool => "bool",
            JsonKind::Number => "number",
            JsonKind::String => "string",
            JsonKind::Array => "array",
            JsonKind::Object => "object",
        }
    }
}

impl<'a> Raw<'a> {
    /// The first value in `input` (which the scanner accepted), blanks trimmed.
    fn first(input: &'a [u8]) -> Raw<'a> {
        let start = input
            .iter()
            .position(|c| !c.is_ascii_whitespace())
            .unwrap_or(input.len());
        let end = value_end(input).unwrap_or(input.len());
        Raw {
            text: &input[start..end],
        }
    }

    fn kind(self) -> JsonKind {
        match self.text.first() {
            Some(b'n') | None => JsonKind::Null,
            Some(b't' | b'f') => JsonKind::Bool,
            Some(b'"') => JsonKind::String,
            Some(b'[') => JsonKind::Array,
            Some(b'{') => JsonKind::Object,
            Some(_) => JsonKind::Number,
        }
    }

    /// A string's text between its quotes, escapes as written.
    fn string_inner(self) -> &'a [u8] {
        &self.text[1..self.text.len().saturating_sub(1)]
    }

    /// A string's decoded content (invalid UTF-8 replaced, as Go does).
    fn string_value(self) -> String {
        serde_json::from_slice::<String>(self.text).unwrap_or_else(|_| {
            serde_json::from_str::<String>(&String::from_utf8_lossy(self.text)).unwrap_or_default()
        })
    }

    /// An array's elements.
    fn items(self) -> Vec<Raw<'a>> {
        let mut items = Vec::new();
        let mut at = 1;
        loop {
            let rest = &self.text[at..];
            let skip = rest
                .iter()
                .position(|c| !c.is_ascii_whitespace())
                .unwrap_or(rest.len());
            at += skip;
            match self.text.get(at) {
                Some(b']') | None => return items,
                Some(b',') => at += 1,
                Some(_) => {
                    let item = Raw::first(&self.text[at..]);
                    at += item.text.len();
                    items.push(item);
                }
            }
        }
    }

    /// An object's members, in order (keys decoded).
    fn members(self) -> Vec<(String, Raw<'a>)> {
        let mut members = Vec::new();
        let mut at = 1;
        let mut key: Option<String> = None;
        loop {
            let rest = &self.text[at..];
            let skip = rest
                .iter()
                .position(|c| !c.is_ascii_whitespace())
                .unwrap_or(rest.len());
            at += skip;
            match self.text.get(at) {
                Some(b'}') | None => return members,
                Some(b',' | b':') => at += 1,
                Some(_) => {
                    let item = Raw::first(&self.text[at..]);
                    at += item.text.len();
                    match key.take() {
                        None => key = Some(item.string_value()),
                        Some(name) => members.push((name, item)),
                    }
                }
            }
        }
    }

    fn literal(self) -> String {
        String::from_utf8_lossy(self.text).into_owned()
    }
}

fn cannot_unmarshal(what: &str, go_type: &str) -> String {
    format!("json: cannot unmarshal {what} into Go value of type {go_type}")
}

/// How deeply messages may nest in a request (a txn in a txn in ...): deeper is
/// refused rather than recursed into.
const MAX_MESSAGE_DEPTH: usize = 100;

/// Decodes the first JSON value of `input` (which the scanner accepted) as a `desc`
/// message the way etcd 3.4's gateway does (golang/protobuf 1.3's jsonpb over
/// `encoding/json`), with its error texts:
///
/// - fields are taken in declaration order, oneof members after the others, by proto
///   name or JSON name (the JSON name wins if both are there); unknown fields are
///   ignored; `null` leaves a field unset (a oneof member is set to its default);
/// - 64- and 32-bit integers are numbers or strings holding one (the string's text is
///   decoded as JSON again, escapes and all), refused unless the literal is a base-10
///   integer in range (`number 1e3`, `number 99999999999999999999`);
/// - enums by name, or by a number that fits an int32 (unknown numbers pass);
/// - bytes as standard base64 (line breaks ignored) or an array of byte values.
pub fn decode_message(desc: &MessageDescriptor, input: &[u8]) -> Result<DynamicMessage, String> {
    let raw = Raw::first(input);
    if raw.kind() == JsonKind::Null {
        return Ok(DynamicMessage::new(desc.clone()));
    }
    message(desc, raw, 0)
}

fn message(desc: &MessageDescriptor, raw: Raw<'_>, depth: usize) -> Result<DynamicMessage, String> {
    if raw.kind() != JsonKind::Object {
        return Err(cannot_unmarshal(
            raw.kind().name(),
            "map[string]json.RawMessage",
        ));
    }
    if depth > MAX_MESSAGE_DEPTH {
        return Err("exceeded max depth".to_string());
    }
    // A map: the last of repeated keys wins.
    let members: std::collections::HashMap<String, Raw<'_>> = raw.members().into_iter().collect();
    let mut message = DynamicMessage::new(desc.clone());
    let declared: Vec<FieldDescriptor> = desc
        .descriptor_proto()
        .field
        .iter()
        .filter_map(|field| desc.get_field_by_name(field.name()))
        .collect();
    let (plain, oneof): (Vec<_>, Vec<_>) = declared
        .into_iter()
        .partition(|field| field.containing_oneof().is_none());
    for (field, in_oneof) in plain
        .iter()
        .map(|f| (f, false))
        .chain(oneof.iter().map(|f| (f, true)))
    {
        let Some(value) = members
            .get(field.json_name())
            .or_else(|| members.get(field.name()))
        else {
            continue;
        };
        match field_value(field, *value, depth)? {
            Some(decoded) => message.set_field(field, decoded),
            None if in_oneof => message.set_field(field, field.kind().default_value()),
            None => {}
        }
    }
    Ok(message)
}

/// The Go type jsonpb names for an enum: `package.Outer_Inner`.
fn go_enum_name(desc: &EnumDescriptor) -> String {
    let nested = desc
        .full_name()
        .strip_prefix(desc.package_name())
        .map(|rest| rest.trim_start_matches('.').replace('.', "_"))
        .unwrap_or_else(|| desc.name().to_string());
    format!("{}.{nested}", desc.package_name())
}

/// An enum value given by name (jsonpb takes the text between the quotes as it is).
fn enum_by_name(desc: &EnumDescriptor, raw: Raw<'_>) -> Result<i32, String> {
    let name = raw.string_inner();
    std::str::from_utf8(name)
        .ok()
        .and_then(|name| desc.get_value_by_name(name))
        .map(|value| value.number())
        .ok_or_else(|| {
            let quoted = serde_json::Value::from(String::from_utf8_lossy(name).into_owned());
            format!("unknown value {quoted} for enum {}", go_enum_name(desc))
        })
}

/// One field's value; `None` for `null` (unset).
fn field_value(
    field: &FieldDescriptor,
    raw: Raw<'_>,
    depth: usize,
) -> Result<Option<Value>, String> {
    let kind = field.kind();
    // jsonpb looks at enum names before anything else, lists included.
    if let (Kind::Enum(desc), JsonKind::String) = (&kind, raw.kind()) {
        let number = enum_by_name(desc, raw)?;
        if field.is_list() {
            return Err(format!(
                "invalid target \"slice\" for enum {}",
                go_enum_name(desc)
            ));
        }
        return Ok(Some(Value::EnumNumber(number)));
    }
    if field.is_map() {
        // No request message of etcd's API has a map field.
        return Err(cannot_unmarshal(raw.kind().name(), "map"));
    }
    if field.is_list() {
        return match raw.kind() {
            JsonKind::Null => Ok(None),
            JsonKind::Array => raw
                .items()
                .into_iter()
                .map(|item| {
                    Ok(single_value(&kind, item, depth)?.unwrap_or_else(|| kind.default_value()))
                })
                .collect::<Result<Vec<_>, String>>()
                .map(|items| Some(Value::List(items))),
            other => Err(cannot_unmarshal(other.name(), "[]json.RawMessage")),
        };
    }
    single_value(&kind, raw, depth)
}

fn single_value(kind: &Kind, raw: Raw<'_>, depth: usize) -> Result<Option<Value>, String> {
    if raw.kind() == JsonKind::Null {
        return Ok(None);
    }
    Ok(Some(match kind {
        Kind::Message(desc) => Value::Message(message(desc, raw, depth + 1)?),
        Kind::Enum(desc) => {
            // By name, or a number as Go's int32 decoding takes it.
            let go_type = go_enum_name(desc);
            match raw.kind() {
                JsonKind::String => Value::EnumNumber(enum_by_name(desc, raw)?),
                JsonKind::Number => Value::EnumNumber(
                    std::str::from_utf8(raw.text)
                        .ok()
                        .and_then(|text| text.parse::<i32>().ok())
                        .ok_or_else(|| {
                            cannot_unmarshal(&format!("number {}", raw.literal()), &go_type)
                        })?,
                ),
                other => return Err(cannot_unmarshal(other.name(), &go_type)),
            }
        }
        Kind::Bytes => Value::Bytes(bytes_value(raw)?.into()),
        Kind::Bool => match raw.kind() {
            JsonKind::Bool => Value::Bool(raw.text[0] == b't'),
            other => return Err(cannot_unmarshal(other.name(), "bool")),
        },
        Kind::String => match raw.kind() {
            JsonKind::String => Value::String(raw.string_value()),
            other => return Err(cannot_unmarshal(other.name(), "string")),
        },
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            integer(raw, "int64")?.map_or(Value::I64(0), |t| Value::I64(t.parse().unwrap_or(0)))
        }
        Kind::Uint64 | Kind::Fixed64 => {
            integer(raw, "uint64")?.map_or(Value::U64(0), |t| Value::U64(t.parse().unwrap_or(0)))
        }
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            integer(raw, "int32")?.map_or(Value::I32(0), |t| Value::I32(t.parse().unwrap_or(0)))
        }
        Kind::Uint32 | Kind::Fixed32 => {
            integer(raw, "uint32")?.map_or(Value::U32(0), |t| Value::U32(t.parse().unwrap_or(0)))
        }
        Kind::Double | Kind::Float => {
            let go_type = if *kind == Kind::Double {
                "float64"
            } else {
                "float32"
            };
            let text = number_text(raw, go_type)?;
            let number = match text {
                None => 0.0,
                Some(text) => text
                    .parse::<f64>()
                    .map_err(|_| cannot_unmarshal(&format!("number {text}"), go_type))?,
            };
            if *kind == Kind::Double {
                Value::F64(number)
            } else {
                Value::F32(number as f32)
            }
        }
    }))
}

/// The literal of a number field's value: the number itself, or (jsonpb) the text inside
/// a string, which `json.Unmarshal` reads again; `None` for a `null` in the string.
fn number_text(raw: Raw<'_>, go_type: &str) -> Result<Option<String>, String> {
    let inner = match raw.kind() {
        JsonKind::Number => return Ok(Some(raw.literal())),
        JsonKind::String => raw.string_inner(),
        other => return Err(cannot_unmarshal(other.name(), go_type)),
    };
    if let Some(error) = unmarshal_syntax_error(inner) {
        return Err(error);
    }
    let value = Raw::first(inner);
    match value.kind() {
        JsonKind::Number => Ok(Some(value.literal())),
        JsonKind::Null => Ok(None),
        other => Err(cannot_unmarshal(other.name(), go_type)),
    }
}

/// An integer field's literal, checked as Go's `strconv.Parse{Int,Uint}` checks it
/// (base 10, no fraction or exponent, in range).
fn integer(raw: Raw<'_>, go_type: &str) -> Result<Option<String>, String> {
    let Some(text) = number_text(raw, go_type)? else {
        return Ok(None);
    };
    let fits = match go_type {
        "int64" => text.parse::<i64>().is_ok(),
        "uint64" => text.parse::<u64>().is_ok(),
        "int32" => text.parse::<i32>().is_ok(),
        _ => text.parse::<u32>().is_ok(),
    };
    if fits {
        Ok(Some(text))
    } else {
        Err(cannot_unmarshal(&format!("number {text}"), go_type))
    }
}

/// A bytes field: base64 text, or an array of byte values (`encoding/json`'s `[]byte`).
fn bytes_value(raw: Raw<'_>) -> Result<Vec<u8>, String> {
    match raw.kind() {
        JsonKind::String => base64_value(&raw.string_value()),
        JsonKind::Array => raw
            .items()
            .into_iter()
            .map(|item| match item.kind() {
                JsonKind::Null => Ok(0),
                JsonKind::Number => std::str::from_utf8(item.text)
                    .ok()
                    .and_then(|text| text.parse::<u8>().ok())
                    .ok_or_else(|| {
                        cannot_unmarshal(&format!("number {}", item.literal()), "uint8")
                    }),
                other => Err(cannot_unmarshal(other.name(), "uint8")),
            })
            .collect(),
        other => Err(cannot_unmarshal(other.name(), "[]uint8")),
    }
}

/// Go's `base64.StdEncoding` decoding of `text` (which skips `\r` and `\n`, requires
/// padding and ignores leftover bits), with its error: the offset it reports.
fn base64_value(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    if let Some(offset) = go_base64_error(text.as_bytes()) {
        return Err(format!("illegal base64 data at input byte {offset}"));
    }
    let config = GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let engine = GeneralPurpose::new(&base64::alphabet::STANDARD, config);
    let symbols: Vec<u8> = text
        .bytes()
        .filter(|c| *c != b'\r' && *c != b'\n')
        .collect();
    engine
        .decode(symbols)
        .map_err(|error| format!("illegal base64 data: {error}"))
}

/// Where Go's standard base64 decoder stops on `src`, quantum by quantum (four symbols,
/// line breaks skipped): at a byte outside the alphabet, at padding too early or not
/// completed, at anything after the padding, or at the start of a quantum the input
/// ends inside (counted as Go counts it, line breaks left out). `None` if it decodes.
fn go_base64_error(src: &[u8]) -> Option<usize> {
    let is_symbol = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
    let is_break = |c: u8| c == b'\r' || c == b'\n';
    let skip_breaks = |mut at: usize| {
        while at < src.len() && is_break(src[at]) {
            at += 1;
        }
        at
    };
    let mut at = 0;
    loop {
        let mut symbols = 0;
        while symbols < 4 {
            let Some(&c) = src.get(at) else {
                return (symbols > 0).then(|| at - symbols);
            };
            at += 1;
            if is_symbol(c) {
                symbols += 1;
                continue;
            }
            if is_break(c) {
                continue;
            }
            if c != b'=' || symbols < 2 {
                return Some(at - 1);
            }
            // Padding ends the data: "==" after two symbols, "=" after three.
            if symbols == 2 {
                at = skip_breaks(at);
                match src.get(at) {
                    None => return Some(src.len()),
                    Some(b'=') => at += 1,
                    Some(_) => return Some(at - 1),
                }
            }
            at = skip_breaks(at);
            return (at < src.len()).then_some(at);
        }
    }
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
        // Go's nesting limit, without recursion here.
        let deep = "[".repeat(10_001);
        assert_eq!(
            syntax_error(deep.as_bytes()).as_deref(),
            Some("invalid character '[' exceeded max depth")
        );
        assert_eq!(
            syntax_error("[".repeat(10_000).as_bytes()).as_deref(),
            Some("unexpected EOF")
        );
    }

    fn decode(message: &str, json: &str) -> Result<DynamicMessage, String> {
        let desc = concord_proto::descriptor_pool()
            .get_message_by_name(message)
            .expect("message");
        decode_message(&desc, json.as_bytes())
    }

    #[test]
    fn requests_decode_as_jsonpb_decodes_them() {
        // Read off etcd 3.4.23's gateway answering these bodies.
        let refused: &[(&str, &str, &str)] = &[
            (
                "etcdserverpb.RangeRequest",
                r#"{"limit":99999999999999999999}"#,
                "json: cannot unmarshal number 99999999999999999999 into Go value of type int64",
            ),
            (
                "etcdserverpb.RangeRequest",
                r#"{"limit":"1e3"}"#,
                "json: cannot unmarshal number 1e3 into Go value of type int64",
            ),
            (
                "etcdserverpb.PutRequest",
                r#"{"lease":"abc","value":"!!"}"#,
                "illegal base64 data at input byte 0",
            ),
            (
                "etcdserverpb.PutRequest",
                r#"{"key":"Zm9v","lease":"\"5\""}"#,
                "invalid character '\\\\' looking for beginning of value",
            ),
            (
                "etcdserverpb.PutRequest",
                r#"{"key":"Zm9v","lease":""}"#,
                "unexpected end of JSON input",
            ),
            (
                "etcdserverpb.PutRequest",
                r#"{"key":[300]}"#,
                "json: cannot unmarshal number 300 into Go value of type uint8",
            ),
            (
                "etcdserverpb.RangeRequest",
                r#"{"sort_order":99999999999}"#,
                "json: cannot unmarshal number 99999999999 into Go value of type etcdserverpb.RangeRequest_SortOrder",
            ),
            (
                "etcdserverpb.WatchCreateRequest",
                r#"{"filters":"NOPUT"}"#,
                "invalid target \"slice\" for enum etcdserverpb.WatchCreateRequest_FilterType",
            ),
        ];
        for (message, json, error) in refused {
            assert_eq!(
                decode(message, json).err().as_deref(),
                Some(*error),
                "{json}"
            );
        }
        let put = decode(
            "etcdserverpb.PutRequest",
            r#"{"key":[98,null],"value":"eA==\n","lease":" 5 ","prevKv":true,"prev_kv":false}"#,
        )
        .expect("decodes");
        let field = |name: &str| put.get_field_by_name(name).expect("field").into_owned();
        assert_eq!(field("key"), Value::Bytes(b"b\0".to_vec().into()));
        assert_eq!(field("value"), Value::Bytes(b"x".to_vec().into()));
        assert_eq!(field("lease"), Value::I64(5));
        assert_eq!(field("prev_kv"), Value::Bool(true));
        let watch = decode(
            "etcdserverpb.WatchCreateRequest",
            r#"{"filters":["NODELETE",7]}"#,
        )
        .expect("decodes");
        assert_eq!(
            watch
                .get_field_by_name("filters")
                .expect("field")
                .into_owned(),
            Value::List(vec![Value::EnumNumber(1), Value::EnumNumber(7)])
        );
    }
}
