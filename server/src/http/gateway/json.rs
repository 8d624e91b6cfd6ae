//! The JSON mapping of etcd 3.4's gateway (grpc-gateway v1's default marshaler, jsonpb
//! with `OrigName: true` and `EmitDefaults: false`), for any message of our descriptor
//! set, through prost-reflect's serde support:
//!
//! - out: proto field names (`cluster_id`, `create_revision`, `ID`, `TTL`), `bytes` as
//!   standard base64, 64-bit integers as strings, enums by name, default values left out
//!   (a oneof member that is set is written even when it holds its default);
//! - in: proto or JSON (lowerCamel) field names, integers as numbers or strings, enums
//!   by name or number, `null` for "not set", unknown fields ignored (grpc-gateway's
//!   decoder allows them).

use prost::Message as _;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};

/// A request body that is not a JSON encoding of the method's request message.
#[derive(Debug)]
pub struct DecodeError(pub String);

/// The protobuf encoding of the JSON `value` as a `desc` message.
pub fn json_to_protobuf(
    desc: &MessageDescriptor,
    value: serde_json::Value,
) -> Result<Vec<u8>, DecodeError> {
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    DynamicMessage::deserialize_with_options(desc.clone(), value, &options)
        .map(|message| message.encode_to_vec())
        .map_err(|error| DecodeError(error.to_string()))
}

/// The gateway's JSON for the protobuf encoding `protobuf` of a `desc` message.
pub fn protobuf_to_json(desc: &MessageDescriptor, protobuf: &[u8]) -> Result<Vec<u8>, String> {
    let message = DynamicMessage::decode(desc.clone(), protobuf).map_err(|e| e.to_string())?;
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true)
        .stringify_64_bit_integers(true)
        .use_enum_numbers(false);
    let mut serializer = serde_json::Serializer::new(Vec::new());
    message
        .serialize_with_options(&mut serializer, &options)
        .map_err(|e| e.to_string())?;
    Ok(serializer.into_inner())
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

    fn decode(name: &str, json: &str) -> Result<Vec<u8>, DecodeError> {
        json_to_protobuf(&message(name), serde_json::from_str(json).unwrap())
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
