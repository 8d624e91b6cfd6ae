//! The JSON mapping of etcd 3.4's gateway (grpc-gateway v1's default marshaler, jsonpb
//! with `OrigName: true` and `EmitDefaults: false`), for any message of our descriptor
//! set:
//!
//! - out: proto field names (`cluster_id`, `create_revision`, `ID`, `TTL`), `bytes` as
//!   standard base64, 64-bit integers as strings, enums by name, default values left out
//!   (a oneof member that is set is written even when it holds its default);
//!   (written through prost-reflect's serde support);
//! - in: proto or JSON (lowerCamel) field names, integers as numbers or strings, enums
//!   by name or number, `null` for "not set", unknown fields ignored (grpc-gateway's
//!   decoder allows them), read by [`super::go_json`] from the body's text, because
//!   Go's decoder judges numbers by their literal (`1e3` and `1.0` are no int64) and
//!   names them so in its errors.
//!
//! Strings are escaped as Go's `encoding/json` escapes them (jsonpb writes strings with
//! it), which serde_json does not do by itself: `<`, `>`, `&`, U+2028 and U+2029 as
//! `\u003c`, `\u003e`, `\u0026`, `\u2028`, `\u2029`, and backspace and form feed as
//! `\u0008` and `\u000c` (read off etcd 3.4.23, built with go1.19, answering
//! `/v3/auth/user/list` and a malformed body).

use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor, SerializeOptions};

/// A request body that is not a JSON encoding of the method's request message.
#[derive(Debug)]
pub struct DecodeError(pub String);

/// The protobuf encoding of the first JSON value in `json` (which Go's scanner accepted,
/// see [`super::go_json::value_end`]) as a `desc` message, decoded as etcd's gateway
/// decodes it ([`super::go_json::decode_message`]).
pub fn json_to_protobuf(desc: &MessageDescriptor, json: &[u8]) -> Result<Vec<u8>, DecodeError> {
    super::go_json::decode_message(desc, json)
        .map(|message| message.encode_to_vec())
        .map_err(DecodeError)
}

/// The gateway's JSON for the protobuf encoding `protobuf` of a `desc` message.
pub fn protobuf_to_json(desc: &MessageDescriptor, protobuf: &[u8]) -> Result<Vec<u8>, String> {
    let message = DynamicMessage::decode(desc.clone(), protobuf).map_err(|e| e.to_string())?;
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true)
        .stringify_64_bit_integers(true)
        .use_enum_numbers(false);
    let mut serializer = serde_json::Serializer::with_formatter(Vec::new(), GoEscapes);
    message
        .serialize_with_options(&mut serializer, &options)
        .map_err(|e| e.to_string())?;
    Ok(serializer.into_inner())
}

/// serde_json's compact output with Go's string escapes (see the module doc; the same
/// escapes as [`crate::http::v2::json::go_string`], which the error bodies use).
struct GoEscapes;

impl serde_json::ser::Formatter for GoEscapes {
    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> std::io::Result<()>
    where
        W: ?Sized + std::io::Write,
    {
        let mut plain_from = 0;
        for (at, c) in fragment.char_indices() {
            let escape = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[plain_from..at])?;
            writer.write_all(escape.as_bytes())?;
            plain_from = at + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[plain_from..])
    }

    fn write_char_escape<W>(
        &mut self,
        writer: &mut W,
        char_escape: serde_json::ser::CharEscape,
    ) -> std::io::Result<()>
    where
        W: ?Sized + std::io::Write,
    {
        use serde_json::ser::CharEscape;
        match char_escape {
            CharEscape::Backspace => writer.write_all(b"\\u0008"),
            CharEscape::FormFeed => writer.write_all(b"\\u000c"),
            other => serde_json::ser::CompactFormatter.write_char_escape(writer, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_proto::descriptor_pool;
    use concord_proto::etcdserverpb::{RangeResponse, ResponseHeader, WatchRequest};
    use concord_proto::mvccpb::KeyValue;

    fn message(name: &str) -> MessageDescriptor {
        descriptor_pool().get_message_by_name(name).unwrap()
    }

    #[test]
    fn responses_use_proto_names_base64_and_string_int64s() {
        let response = RangeResponse {
            header: Some(ResponseHeader {
                cluster_id: 14841639068965178418,
                member_id: 10276657743932975437,
                revision: 2,
                raft_term: 2,
            }),
            kvs: vec![KeyValue {
                key: b"foo".to_vec(),
                create_revision: 2,
                mod_revision: 2,
                version: 1,
                value: b"bar".to_vec(),
                lease: 0,
            }],
            more: false,
            count: 1,
        };
        let json = protobuf_to_json(
            &message("etcdserverpb.RangeResponse"),
            &response.encode_to_vec(),
        )
        .unwrap();
        // As etcd 3.4.23 answers it (curl -L http://127.0.0.1:2379/v3/kv/range).
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"2","raft_term":"2"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1"}"#
        );
    }

    #[test]
    fn strings_are_escaped_as_go_escapes_them() {
        // etcd 3.4.23's /v3/auth/user/list for users named "a<b>&c" and
        // "q\b\f\u0001\u2028\u007f\"\\/x" (DEL and `/` stay as they are).
        let response = concord_proto::etcdserverpb::AuthUserListResponse {
            header: None,
            users: vec![
                "a<b>&c".to_string(),
                "q\u{8}\u{c}\u{1}\u{2028}\u{7f}\"\\/x".to_string(),
            ],
        };
        let json = protobuf_to_json(
            &message("etcdserverpb.AuthUserListResponse"),
            &response.encode_to_vec(),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            "{\"users\":[\"a\\u003cb\\u003e\\u0026c\",\"q\\u0008\\u000c\\u0001\\u2028\u{7f}\\\"\\\\/x\"]}"
        );
        // The error bodies' escaping agrees.
        let mut error_text = String::new();
        crate::http::v2::json::go_string(&mut error_text, "a<b>&c\u{8}\u{c}\u{2029}");
        assert_eq!(
            error_text,
            "\"a\\u003cb\\u003e\\u0026c\\u0008\\u000c\\u2029\""
        );
    }

    fn decode(name: &str, json: &str) -> Result<Vec<u8>, DecodeError> {
        json_to_protobuf(&message(name), json.as_bytes())
    }

    #[test]
    fn requests_accept_names_numbers_nulls_and_unknown_fields() {
        let json = r#"{"create_request": {"key":"Zm9v","start_revision":1, "filters": ["NOPUT", 1]}, "Unknown": null}"#;
        let bytes = decode("etcdserverpb.WatchRequest", json).unwrap();
        let request = WatchRequest::decode(bytes.as_slice()).unwrap();
        let Some(concord_proto::etcdserverpb::watch_request::RequestUnion::CreateRequest(create)) =
            request.request_union
        else {
            panic!("not a create request: {request:?}");
        };
        assert_eq!(create.key, b"foo");
        assert_eq!(create.start_revision, 1);
        assert_eq!(create.filters, vec![0, 1]);
        let put = decode(
            "etcdserverpb.PutRequest",
            r#"{"key":"Zm9v","lease":"7","prevKv":true,"ID":null}"#,
        )
        .unwrap();
        let put = concord_proto::etcdserverpb::PutRequest::decode(put.as_slice()).unwrap();
        assert_eq!((put.lease, put.prev_kv), (7, true));
        assert!(decode("etcdserverpb.PutRequest", r#"{"key":1}"#).is_err());
    }
}
