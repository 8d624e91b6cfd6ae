//! The JSON that etcdctl's `-w json` prints: Go's `encoding/json` applied to the
//! gogo-protobuf structs. Keys are the proto field names (the structs' json
//! tags), every field is `omitempty`, bytes are standard base64, 64-bit integers
//! are plain numbers, enums are numbers, oneof wrappers use the Go field names
//! (`"Response":{"ResponsePut":{...}}`), and strings escape `<`, `>`, `&`.

use base64::Engine as _;
use concord_proto::etcdserverpb as pb;
use concord_proto::mvccpb;
use concord_server::http::v2::json::go_string;

/// Builds one JSON object, skipping empty values as `omitempty` does.
#[derive(Default)]
pub struct Obj {
    buf: String,
}

impl Obj {
    pub fn new() -> Self {
        Self::default()
    }

    fn key(&mut self, name: &str) {
        self.buf.push(if self.buf.is_empty() { '{' } else { ',' });
        go_string(&mut self.buf, name);
        self.buf.push(':');
    }

    /// Emits `name:raw` unconditionally; `raw` must already be JSON.
    pub fn raw(mut self, name: &str, raw: &str) -> Self {
        self.key(name);
        self.buf.push_str(raw);
        self
    }

    pub fn int(self, name: &str, v: i64) -> Self {
        if v == 0 {
            self
        } else {
            self.raw(name, &v.to_string())
        }
    }

    pub fn uint(self, name: &str, v: u64) -> Self {
        if v == 0 {
            self
        } else {
            self.raw(name, &v.to_string())
        }
    }

    pub fn boolean(self, name: &str, v: bool) -> Self {
        if v { self.raw(name, "true") } else { self }
    }

    pub fn string(self, name: &str, v: &str) -> Self {
        if v.is_empty() {
            self
        } else {
            self.raw(name, &string(v))
        }
    }

    /// A string field without omitempty (a json tag without it).
    pub fn string_always(self, name: &str, v: &str) -> Self {
        self.raw(name, &string(v))
    }

    pub fn bytes(self, name: &str, v: &[u8]) -> Self {
        if v.is_empty() {
            self
        } else {
            self.raw(name, &bytes(v))
        }
    }

    pub fn strings(self, name: &str, v: &[String]) -> Self {
        if v.is_empty() {
            return self;
        }
        let items: Vec<String> = v.iter().map(|s| string(s)).collect();
        self.raw(name, &format!("[{}]", items.join(",")))
    }

    /// A nested message pointer: omitted when absent, `{}` when empty.
    pub fn msg(self, name: &str, v: Option<String>) -> Self {
        match v {
            Some(json) => self.raw(name, &json),
            None => self,
        }
    }

    /// A repeated message field, omitted when empty.
    pub fn msgs(self, name: &str, v: Vec<String>) -> Self {
        if v.is_empty() {
            self
        } else {
            self.raw(name, &format!("[{}]", v.join(",")))
        }
    }

    pub fn finish(mut self) -> String {
        if self.buf.is_empty() {
            self.buf.push('{');
        }
        self.buf.push('}');
        self.buf
    }
}

/// A JSON string the way Go's encoder writes it (HTML-safe escaping).
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    go_string(&mut out, s);
    out
}

/// Base64 (standard alphabet, padded) as a JSON string, as Go encodes `[]byte`.
pub fn bytes(b: &[u8]) -> String {
    string(&base64::engine::general_purpose::STANDARD.encode(b))
}

pub fn header(h: &pb::ResponseHeader) -> String {
    Obj::new()
        .uint("cluster_id", h.cluster_id)
        .uint("member_id", h.member_id)
        .int("revision", h.revision)
        .uint("raft_term", h.raft_term)
        .finish()
}

fn header_opt(h: Option<&pb::ResponseHeader>) -> Option<String> {
    h.map(header)
}

pub fn key_value(kv: &mvccpb::KeyValue) -> String {
    Obj::new()
        .bytes("key", &kv.key)
        .int("create_revision", kv.create_revision)
        .int("mod_revision", kv.mod_revision)
        .int("version", kv.version)
        .bytes("value", &kv.value)
        .int("lease", kv.lease)
        .finish()
}

pub fn range_response(r: &pb::RangeResponse) -> String {
    Obj::new()
        .msg("header", header_opt(r.header.as_ref()))
        .msgs("kvs", r.kvs.iter().map(key_value).collect())
        .boolean("more", r.more)
        .int("count", r.count)
        .finish()
}

pub fn put_response(r: &pb::PutResponse) -> String {
    Obj::new()
        .msg("header", header_opt(r.header.as_ref()))
        .msg("prev_kv", r.prev_kv.as_ref().map(key_value))
        .finish()
}

pub fn delete_response(r: &pb::DeleteRangeResponse) -> String {
    Obj::new()
        .msg("header", header_opt(r.header.as_ref()))
        .int("deleted", r.deleted)
        .msgs("prev_kvs", r.prev_kvs.iter().map(key_value).collect())
        .finish()
}

pub fn txn_response(r: &pb::TxnResponse) -> String {
    use pb::response_op::Response;
    let ops = r
        .responses
        .iter()
        .map(|op| {
            let inner = match &op.response {
                None => "null".to_owned(),
                Some(Response::ResponseRange(x)) => {
                    Obj::new().raw("ResponseRange", &range_response(x)).finish()
                }
                Some(Response::ResponsePut(x)) => {
                    Obj::new().raw("ResponsePut", &put_response(x)).finish()
                }
                Some(Response::ResponseDeleteRange(x)) => Obj::new()
                    .raw("ResponseDeleteRange", &delete_response(x))
                    .finish(),
                Some(Response::ResponseTxn(x)) => {
                    Obj::new().raw("ResponseTxn", &txn_response(x)).finish()
                }
            };
            Obj::new().raw("Response", &inner).finish()
        })
        .collect();
    Obj::new()
        .msg("header", header_opt(r.header.as_ref()))
        .boolean("succeeded", r.succeeded)
        .msgs("responses", ops)
        .finish()
}

pub fn member(m: &pb::Member) -> String {
    Obj::new()
        .uint("ID", m.id)
        .string("name", &m.name)
        .strings("peerURLs", &m.peer_ur_ls)
        .strings("clientURLs", &m.client_ur_ls)
        .boolean("isLearner", m.is_learner)
        .finish()
}

pub fn member_list_response(r: &pb::MemberListResponse) -> String {
    Obj::new()
        .msg("header", header_opt(r.header.as_ref()))
        .msgs("members", r.members.iter().map(member).collect())
        .finish()
}

/// The 3.4 field set of `StatusResponse` (later fields are unknown to etcdctl 3.4).
pub fn status_response(r: &pb::StatusResponse) -> String {
    Obj::new()
        .msg("header", header_opt(r.header.as_ref()))
        .string("version", &r.version)
        .int("dbSize", r.db_size)
        .uint("leader", r.leader)
        .uint("raftIndex", r.raft_index)
        .uint("raftTerm", r.raft_term)
        .uint("raftAppliedIndex", r.raft_applied_index)
        .strings("errors", &r.errors)
        .int("dbSizeInUse", r.db_size_in_use)
        .boolean("isLearner", r.is_learner)
        .finish()
}

pub fn lease_grant_response(r: &pb::LeaseGrantResponse) -> String {
    Obj::new()
        .msg("header", header_opt(r.header.as_ref()))
        .int("ID", r.id)
        .int("TTL", r.ttl)
        .string("error", &r.error)
        .finish()
}

pub fn lease_revoke_response(r: &pb::LeaseRevokeResponse) -> String {
    Obj::new()
        .msg("header", header_opt(r.header.as_ref()))
        .finish()
}

pub fn lease_keep_alive_response(r: &pb::LeaseKeepAliveResponse) -> String {
    Obj::new()
        .msg("header", header_opt(r.header.as_ref()))
        .int("ID", r.id)
        .int("TTL", r.ttl)
        .finish()
}

pub fn lease_time_to_live_response(r: &pb::LeaseTimeToLiveResponse) -> String {
    let keys: Vec<String> = r.keys.iter().map(|k| bytes(k)).collect();
    Obj::new()
        .msg("header", header_opt(r.header.as_ref()))
        .int("ID", r.id)
        .int("TTL", r.ttl)
        .int("grantedTTL", r.granted_ttl)
        .msgs("keys", keys)
        .finish()
}

pub fn lease_leases_response(r: &pb::LeaseLeasesResponse) -> String {
    let leases = r
        .leases
        .iter()
        .map(|l| Obj::new().int("ID", l.id).finish())
        .collect();
    Obj::new()
        .msg("header", header_opt(r.header.as_ref()))
        .msgs("leases", leases)
        .finish()
}

pub fn event(e: &mvccpb::Event) -> String {
    Obj::new()
        .int("type", i64::from(e.r#type))
        .msg("kv", e.kv.as_ref().map(key_value))
        .msg("prev_kv", e.prev_kv.as_ref().map(key_value))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_response_matches_etcdctl() {
        let r = pb::RangeResponse {
            header: Some(pb::ResponseHeader {
                cluster_id: 324952591200643719,
                member_id: 3319814642761637952,
                revision: 3,
                raft_term: 2,
            }),
            kvs: vec![mvccpb::KeyValue {
                key: b"a".to_vec(),
                create_revision: 2,
                mod_revision: 2,
                version: 1,
                value: b"1".to_vec(),
                lease: 0,
            }],
            more: false,
            count: 1,
        };
        assert_eq!(
            range_response(&r),
            r#"{"header":{"cluster_id":324952591200643719,"member_id":3319814642761637952,"revision":3,"raft_term":2},"kvs":[{"key":"YQ==","create_revision":2,"mod_revision":2,"version":1,"value":"MQ=="}],"count":1}"#
        );
    }

    #[test]
    fn txn_response_uses_go_oneof_names() {
        let r = pb::TxnResponse {
            header: Some(pb::ResponseHeader {
                revision: 13,
                ..Default::default()
            }),
            succeeded: false,
            responses: vec![pb::ResponseOp {
                response: Some(pb::response_op::Response::ResponsePut(pb::PutResponse {
                    header: Some(pb::ResponseHeader {
                        revision: 13,
                        ..Default::default()
                    }),
                    prev_kv: None,
                })),
            }],
        };
        assert_eq!(
            txn_response(&r),
            r#"{"header":{"revision":13},"responses":[{"Response":{"ResponsePut":{"header":{"revision":13}}}}]}"#
        );
    }

    #[test]
    fn empty_message_is_braces_and_strings_are_html_safe() {
        assert_eq!(Obj::new().finish(), "{}");
        assert_eq!(string("<a&b>"), r#""\u003ca\u0026b\u003e""#);
        assert_eq!(string("tab\there"), r#""tab\there""#);
    }
}
