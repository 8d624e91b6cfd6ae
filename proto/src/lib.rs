//! etcd v3's wire protocol and Concord's internal protocol, generated at build
//! time from hand-written `.proto` files under `proto/` (no system `protoc`).
//!
//! Owned here: `mvccpb`, `authpb`, `etcdserverpb` (services KV, Watch, Lease,
//! Cluster, Maintenance, Auth), `v3lockpb`, `v3electionpb` — with etcd's exact
//! package, message, field and enum names and numbers — and `concordpb` (the raft
//! entry payload [`concordpb::InternalRequest`] and the member-to-member `Peer`
//! service).
//!
//! The tonic clients and servers of those services are behind the `grpc` feature,
//! which only the binaries and the tests turn on, so that the pure crates that use
//! the messages stay free of tokio.
//!
//! Note that prost turns etcd's camelCase fields into snake case: `peerURLs`
//! becomes `peer_ur_ls`, `ID` becomes `id`, `TTL` becomes `ttl`.
//!
//! ```
//! use concord_proto::etcdserverpb::PutRequest;
//! use prost::Message;
//!
//! let put = PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() };
//! let bytes = put.encode_to_vec();
//! assert_eq!(PutRequest::decode(bytes.as_slice()).unwrap(), put);
//! ```

#![allow(clippy::all, clippy::pedantic, missing_docs, rust_2018_idioms)]

/// Key-value records and watch events (`mvccpb`).
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
}

/// Users, roles and permissions (`authpb`).
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
}

/// etcd v3's client gRPC API (`etcdserverpb`).
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}

/// The server-side lock service (`v3lockpb`).
pub mod v3lockpb {
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
}

/// The server-side election service (`v3electionpb`).
pub mod v3electionpb {
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
}

/// Concord's internal protocol: raft entry payloads and the peer service.
pub mod concordpb {
    include!(concat!(env!("OUT_DIR"), "/concordpb.rs"));
}

pub mod http_routes;

/// The encoded `google.protobuf.FileDescriptorSet` of every file above, for
/// reflection (e.g. the HTTP/JSON gateway with prost-reflect).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/concord_descriptor.bin"));

/// Every message and service above, for reflection: protobuf JSON with prost-reflect's
/// serde support (the HTTP/JSON gateway). Decoded once.
#[cfg(feature = "json")]
pub fn descriptor_pool() -> &'static prost_reflect::DescriptorPool {
    static POOL: std::sync::OnceLock<prost_reflect::DescriptorPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        // The set was produced by protox from our own files at build time: it decodes.
        prost_reflect::DescriptorPool::decode(FILE_DESCRIPTOR_SET)
            .expect("the build's own descriptor set decodes")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn put_request_round_trips() {
        let put = etcdserverpb::PutRequest {
            key: b"foo".to_vec(),
            value: b"bar".to_vec(),
            lease: 0x1234,
            prev_kv: true,
            ignore_value: false,
            ignore_lease: true,
        };
        let bytes = put.encode_to_vec();
        let decoded = etcdserverpb::PutRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded, put);
    }

    #[test]
    fn key_value_uses_etcd_field_numbers() {
        let kv = mvccpb::KeyValue {
            key: b"a".to_vec(),
            mod_revision: 5,
            ..Default::default()
        };
        assert_eq!(kv.encode_to_vec(), vec![0x0a, 0x01, b'a', 0x18, 0x05]);
        let kv = mvccpb::KeyValue {
            create_revision: 2,
            version: 1,
            value: b"v".to_vec(),
            lease: 7,
            ..Default::default()
        };
        // create_revision=2 (tag 0x10), version=4 (0x20), value=5 (0x2a), lease=6 (0x30)
        assert_eq!(
            kv.encode_to_vec(),
            vec![0x10, 0x02, 0x20, 0x01, 0x2a, 0x01, b'v', 0x30, 0x07]
        );
    }

    #[test]
    fn compare_range_end_is_field_64_and_value_in_oneof() {
        let cmp = etcdserverpb::Compare {
            result: etcdserverpb::compare::CompareResult::NotEqual as i32,
            target: etcdserverpb::compare::CompareTarget::Value as i32,
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            target_union: Some(etcdserverpb::compare::TargetUnion::Value(b"v".to_vec())),
        };
        // result=1 varint 3, target=2 varint 3, key=3, value=7, range_end=64 (tag 0x82 0x04)
        assert_eq!(
            cmp.encode_to_vec(),
            vec![
                0x08, 0x03, 0x10, 0x03, 0x1a, 0x01, b'k', 0x3a, 0x01, b'v', 0x82, 0x04, 0x01, b'l'
            ]
        );
    }

    #[test]
    fn watch_response_events_are_field_11() {
        let resp = etcdserverpb::WatchResponse {
            events: vec![mvccpb::Event {
                r#type: mvccpb::event::EventType::Delete as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(resp.encode_to_vec(), vec![0x5a, 0x02, 0x08, 0x01]);
    }

    #[test]
    fn internal_request_round_trips() {
        let req = concordpb::InternalRequest {
            header: Some(concordpb::RequestHeader {
                id: 9,
                username: "root".into(),
                auth_revision: 3,
            }),
            request: Some(concordpb::internal_request::Request::Put(
                etcdserverpb::PutRequest {
                    key: b"k".to_vec(),
                    ..Default::default()
                },
            )),
        };
        let bytes = req.encode_to_vec();
        assert_eq!(
            concordpb::InternalRequest::decode(bytes.as_slice()).unwrap(),
            req
        );
    }

    #[test]
    fn every_http_route_names_a_described_method() {
        let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        for route in http_routes::HTTP_ROUTES {
            let (package, service) = route.service.split_once('.').unwrap();
            let found = fds.file.iter().filter(|f| f.package() == package).any(|f| {
                f.service.iter().any(|s| {
                    s.name() == service && s.method.iter().any(|m| m.name() == route.method)
                })
            });
            assert!(found, "{route:?} names no method of our protos");
        }
    }

    #[test]
    fn descriptor_set_lists_every_package() {
        let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let packages: Vec<_> = fds.file.iter().map(|f| f.package().to_owned()).collect();
        for p in [
            "mvccpb",
            "authpb",
            "etcdserverpb",
            "v3lockpb",
            "v3electionpb",
            "concordpb",
        ] {
            assert!(packages.iter().any(|q| q == p), "missing {p}");
        }
    }
}
