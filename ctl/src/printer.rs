//! etcdctl's output formats (`-w simple|json|fields|table|protobuf`), one
//! function per response kind. Each returns the exact bytes etcdctl 3.4 prints
//! to standard output, or the error it exits with.

use crate::error::CtlError;
use crate::gofmt;
use crate::gojson::{self, Obj};
use crate::table;
use concord_proto::etcdserverpb as pb;
use concord_proto::mvccpb;
use prost::Message;
use std::fmt::Write as _;

/// An output format (`-w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Simple,
    Json,
    Fields,
    Table,
    Protobuf,
}

impl Format {
    pub fn parse(s: &str) -> Result<Self, CtlError> {
        match s {
            "simple" => Ok(Self::Simple),
            "json" => Ok(Self::Json),
            "fields" => Ok(Self::Fields),
            "table" => Ok(Self::Table),
            "protobuf" => Ok(Self::Protobuf),
            _ => Err(CtlError::bad_feature("unsupported output format")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Simple => "simple",
            Self::Json => "json",
            Self::Fields => "fields",
            Self::Table => "table",
            Self::Protobuf => "protobuf",
        }
    }

    fn unsupported(self) -> CtlError {
        CtlError::bad_feature(format!("{} not supported as output format", self.name()))
    }
}

/// Options of the simple printer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Printer {
    pub format: Option<Format>,
    pub hex: bool,
    pub value_only: bool,
}

/// Output bytes (protobuf output is binary).
pub type Output = Vec<u8>;

fn text(s: String) -> Result<Output, CtlError> {
    Ok(s.into_bytes())
}

impl Printer {
    pub fn new(format: Format, hex: bool) -> Self {
        Self {
            format: Some(format),
            hex,
            value_only: false,
        }
    }

    fn fmt(&self) -> Format {
        self.format.unwrap_or(Format::Simple)
    }

    fn simple_kv(&self, out: &mut String, kv: &mvccpb::KeyValue) {
        let (k, v) = if self.hex {
            (gofmt::hex_escaped(&kv.key), gofmt::hex_escaped(&kv.value))
        } else {
            (lossy(&kv.key), lossy(&kv.value))
        };
        if !self.value_only {
            out.push_str(&k);
            out.push('\n');
        }
        out.push_str(&v);
        out.push('\n');
    }

    /// The four formats of a response etcdctl prints no table for.
    fn without_table<M: Message>(
        &self,
        r: &M,
        simple: impl FnOnce(&mut String),
        json: impl FnOnce(&M) -> String,
        fields: impl FnOnce(&mut String),
    ) -> Result<Output, CtlError> {
        match self.fmt() {
            Format::Simple => {
                let mut out = String::new();
                simple(&mut out);
                text(out)
            }
            Format::Json => text(json(r) + "\n"),
            Format::Fields => {
                let mut out = String::new();
                fields(&mut out);
                text(out)
            }
            Format::Protobuf => Ok(r.encode_to_vec()),
            Format::Table => Err(self.fmt().unsupported()),
        }
    }

    pub fn get(&self, r: &pb::RangeResponse) -> Result<Output, CtlError> {
        self.without_table(
            r,
            |out| self.simple_get(out, r),
            gojson::range_response,
            |out| fields_get(out, r),
        )
    }

    fn simple_get(&self, out: &mut String, r: &pb::RangeResponse) {
        for kv in &r.kvs {
            self.simple_kv(out, kv);
        }
    }

    pub fn put(&self, r: &pb::PutResponse) -> Result<Output, CtlError> {
        self.without_table(
            r,
            |out| self.simple_put(out, r),
            gojson::put_response,
            |out| fields_put(out, r),
        )
    }

    fn simple_put(&self, out: &mut String, r: &pb::PutResponse) {
        out.push_str("OK\n");
        if let Some(prev) = &r.prev_kv {
            self.simple_kv(out, prev);
        }
    }

    pub fn del(&self, r: &pb::DeleteRangeResponse) -> Result<Output, CtlError> {
        self.without_table(
            r,
            |out| self.simple_del(out, r),
            gojson::delete_response,
            |out| fields_del(out, r),
        )
    }

    fn simple_del(&self, out: &mut String, r: &pb::DeleteRangeResponse) {
        let _ = writeln!(out, "{}", r.deleted);
        for kv in &r.prev_kvs {
            self.simple_kv(out, kv);
        }
    }

    pub fn txn(&self, r: &pb::TxnResponse) -> Result<Output, CtlError> {
        use pb::response_op::Response;
        match self.fmt() {
            Format::Simple => {
                let mut out = String::new();
                out.push_str(if r.succeeded {
                    "SUCCESS\n"
                } else {
                    "FAILURE\n"
                });
                for op in &r.responses {
                    out.push('\n');
                    match &op.response {
                        Some(Response::ResponseDeleteRange(x)) => self.simple_del(&mut out, x),
                        Some(Response::ResponsePut(x)) => self.simple_put(&mut out, x),
                        Some(Response::ResponseRange(x)) => self.simple_get(&mut out, x),
                        _ => {
                            let _ = writeln!(out, "unexpected response {op:?}");
                        }
                    }
                }
                text(out)
            }
            Format::Json => text(gojson::txn_response(r) + "\n"),
            Format::Fields => {
                let mut out = String::new();
                fields_header(&mut out, r.header.as_ref());
                let _ = writeln!(out, "\"Succeeded\" : {}", r.succeeded);
                for op in &r.responses {
                    match &op.response {
                        Some(Response::ResponseDeleteRange(x)) => fields_del(&mut out, x),
                        Some(Response::ResponsePut(x)) => fields_put(&mut out, x),
                        Some(Response::ResponseRange(x)) => fields_get(&mut out, x),
                        _ => {
                            let _ = writeln!(
                                out,
                                "\"Unknown\" : {}",
                                gofmt::quote(format!("{op:?}").as_bytes())
                            );
                        }
                    }
                }
                text(out)
            }
            Format::Protobuf => Ok(r.encode_to_vec()),
            Format::Table => Err(self.fmt().unsupported()),
        }
    }

    pub fn member_list(&self, r: &pb::MemberListResponse) -> Result<Output, CtlError> {
        let (hdr, rows) = member_rows(r);
        match self.fmt() {
            Format::Simple => text(simple_rows(&rows)),
            Format::Json => text(gojson::member_list_response(r) + "\n"),
            Format::Fields => {
                let mut out = String::new();
                fields_header(&mut out, r.header.as_ref());
                for m in &r.members {
                    let _ = writeln!(out, "\"ID\" : {}", m.id);
                    let _ = writeln!(out, "\"Name\" : {}", gofmt::quote(m.name.as_bytes()));
                    for u in &m.peer_ur_ls {
                        let _ = writeln!(out, "\"PeerURL\" : {}", gofmt::quote(u.as_bytes()));
                    }
                    for u in &m.client_ur_ls {
                        let _ = writeln!(out, "\"ClientURL\" : {}", gofmt::quote(u.as_bytes()));
                    }
                    let _ = writeln!(out, "\"IsLearner\" : {}", m.is_learner);
                    out.push('\n');
                }
                text(out)
            }
            Format::Table => text(table::render(&hdr, &rows)),
            Format::Protobuf => Ok(r.encode_to_vec()),
        }
    }

    pub fn endpoint_status(&self, list: &[EndpointStatus]) -> Result<Output, CtlError> {
        let hdr = [
            "endpoint",
            "ID",
            "version",
            "db size",
            "is leader",
            "is learner",
            "raft term",
            "raft index",
            "raft applied index",
            "errors",
        ];
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|s| {
                let r = &s.status;
                let member_id = r.header.as_ref().map_or(0, |h| h.member_id);
                vec![
                    s.endpoint.clone(),
                    format!("{member_id:x}"),
                    r.version.clone(),
                    gofmt::humanize_bytes(u64::try_from(r.db_size).unwrap_or(0)),
                    (r.leader == member_id).to_string(),
                    r.is_learner.to_string(),
                    r.raft_term.to_string(),
                    r.raft_index.to_string(),
                    r.raft_applied_index.to_string(),
                    r.errors.join(", "),
                ]
            })
            .collect();
        match self.fmt() {
            Format::Simple => text(simple_rows(&rows)),
            Format::Json => {
                let items: Vec<String> = list
                    .iter()
                    .map(|s| {
                        Obj::new()
                            .string_always("Endpoint", &s.endpoint)
                            .raw("Status", &gojson::status_response(&s.status))
                            .finish()
                    })
                    .collect();
                text(format!("[{}]\n", items.join(",")))
            }
            Format::Fields => {
                let mut out = String::new();
                for s in list {
                    let r = &s.status;
                    fields_header(&mut out, r.header.as_ref());
                    let _ = writeln!(out, "\"Version\" : {}", gofmt::quote(r.version.as_bytes()));
                    let _ = writeln!(out, "\"DBSize\" : {}", r.db_size);
                    let _ = writeln!(out, "\"Leader\" : {}", r.leader);
                    let _ = writeln!(out, "\"IsLearner\" : {}", r.is_learner);
                    let _ = writeln!(out, "\"RaftIndex\" : {}", r.raft_index);
                    let _ = writeln!(out, "\"RaftTerm\" : {}", r.raft_term);
                    let _ = writeln!(out, "\"RaftAppliedIndex\" : {}", r.raft_applied_index);
                    let _ = writeln!(out, "\"Errors\" : {}", gofmt::string_slice(&r.errors));
                    let _ = writeln!(
                        out,
                        "\"Endpoint\" : {}",
                        gofmt::quote(s.endpoint.as_bytes())
                    );
                    out.push('\n');
                }
                text(out)
            }
            Format::Table => text(table::render(&hdr, &rows)),
            Format::Protobuf => Err(self.fmt().unsupported()),
        }
    }

    /// Health results; the simple format goes to standard error (returned as
    /// the second element), as etcdctl does.
    pub fn endpoint_health(&self, list: &[EndpointHealth]) -> Result<(Output, String), CtlError> {
        match self.fmt() {
            Format::Simple => {
                let mut err = String::new();
                for h in list {
                    if h.error.is_empty() {
                        let _ = writeln!(
                            err,
                            "{} is healthy: successfully committed proposal: took = {}",
                            h.endpoint, h.took
                        );
                    } else {
                        let _ = writeln!(
                            err,
                            "{} is unhealthy: failed to commit proposal: {}",
                            h.endpoint, h.error
                        );
                    }
                }
                Ok((Vec::new(), err))
            }
            Format::Json => {
                let items: Vec<String> = list
                    .iter()
                    .map(|h| {
                        Obj::new()
                            .string_always("endpoint", &h.endpoint)
                            .raw("health", if h.health { "true" } else { "false" })
                            .string_always("took", &h.took)
                            .string("error", &h.error)
                            .finish()
                    })
                    .collect();
                Ok((
                    format!("[{}]\n", items.join(",")).into_bytes(),
                    String::new(),
                ))
            }
            Format::Fields => {
                let mut out = String::new();
                for h in list {
                    let _ = writeln!(
                        out,
                        "\"Endpoint\" : {}",
                        gofmt::quote(h.endpoint.as_bytes())
                    );
                    let _ = writeln!(out, "\"Health\" : {}", h.health);
                    let _ = writeln!(out, "\"Took\" : {}", h.took);
                    let _ = writeln!(out, "\"Error\" : {}", h.error);
                    out.push('\n');
                }
                Ok((out.into_bytes(), String::new()))
            }
            Format::Table => {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|h| {
                        vec![
                            h.endpoint.clone(),
                            h.health.to_string(),
                            h.took.clone(),
                            h.error.clone(),
                        ]
                    })
                    .collect();
                Ok((
                    table::render(&["endpoint", "health", "took", "error"], &rows).into_bytes(),
                    String::new(),
                ))
            }
            Format::Protobuf => Err(self.fmt().unsupported()),
        }
    }

    /// `member add|update|remove|promote`: a one-line summary in simple
    /// format, the raw response in json and protobuf (`protobuf`, encoded);
    /// etcdctl 3.4 has no fields/table form.
    pub fn member_change(
        &self,
        verb: MemberChange,
        id: u64,
        header: Option<&pb::ResponseHeader>,
        protobuf: Vec<u8>,
        json: impl FnOnce() -> String,
    ) -> Result<Output, CtlError> {
        match self.fmt() {
            Format::Simple => {
                let cluster = header.map_or(0, |h| h.cluster_id);
                let what = match verb {
                    MemberChange::Added => "added to",
                    MemberChange::Updated => "updated in",
                    MemberChange::Removed => "removed from",
                    MemberChange::Promoted => "promoted in",
                };
                text(format!("Member {id:16x} {what} cluster {cluster:16x}\n"))
            }
            Format::Json => text(json() + "\n"),
            Format::Protobuf => Ok(protobuf),
            other => Err(other.unsupported()),
        }
    }

    pub fn alarm(&self, r: &pb::AlarmResponse) -> Result<Output, CtlError> {
        match self.fmt() {
            Format::Simple => {
                let mut out = String::new();
                for a in &r.alarms {
                    let _ = writeln!(
                        out,
                        "memberID:{} alarm:{} ",
                        a.member_id,
                        alarm_name(a.alarm)
                    );
                }
                text(out)
            }
            Format::Json => {
                let alarms = r
                    .alarms
                    .iter()
                    .map(|a| {
                        Obj::new()
                            .uint("memberID", a.member_id)
                            .int("alarm", i64::from(a.alarm))
                            .finish()
                    })
                    .collect();
                text(
                    Obj::new()
                        .msg("header", r.header.as_ref().map(gojson::header))
                        .msgs("alarms", alarms)
                        .finish()
                        + "\n",
                )
            }
            Format::Fields => {
                let mut out = String::new();
                fields_header(&mut out, r.header.as_ref());
                for a in &r.alarms {
                    let _ = writeln!(out, "\"MemberID\" : {}", a.member_id);
                    let _ = writeln!(out, "\"AlarmType\" : {}", alarm_name(a.alarm));
                    out.push('\n');
                }
                text(out)
            }
            Format::Protobuf => Ok(r.encode_to_vec()),
            Format::Table => Err(self.fmt().unsupported()),
        }
    }

    pub fn endpoint_hashkv(&self, list: &[EndpointHashKv]) -> Result<Output, CtlError> {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|h| vec![h.endpoint.clone(), h.hash.hash.to_string()])
            .collect();
        match self.fmt() {
            Format::Simple => text(simple_rows(&rows)),
            Format::Json => {
                let items: Vec<String> = list
                    .iter()
                    .map(|h| {
                        let r = &h.hash;
                        let inner = Obj::new()
                            .msg("header", r.header.as_ref().map(gojson::header))
                            .uint("hash", u64::from(r.hash))
                            .int("compact_revision", r.compact_revision)
                            .finish();
                        Obj::new()
                            .string_always("Endpoint", &h.endpoint)
                            .raw("HashKV", &inner)
                            .finish()
                    })
                    .collect();
                text(format!("[{}]\n", items.join(",")))
            }
            Format::Fields => {
                let mut out = String::new();
                for h in list {
                    fields_header(&mut out, h.hash.header.as_ref());
                    let _ = writeln!(
                        out,
                        "\"Endpoint\" : {}",
                        gofmt::quote(h.endpoint.as_bytes())
                    );
                    let _ = writeln!(out, "\"Hash\" : {}", h.hash.hash);
                    out.push('\n');
                }
                text(out)
            }
            Format::Table => text(table::render(&["endpoint", "hash"], &rows)),
            Format::Protobuf => Err(self.fmt().unsupported()),
        }
    }

    pub fn move_leader(
        &self,
        from: u64,
        to: u64,
        r: &pb::MoveLeaderResponse,
    ) -> Result<Output, CtlError> {
        match self.fmt() {
            Format::Simple => text(format!("Leadership transferred from {from:x} to {to:x}\n")),
            Format::Json => text(
                Obj::new()
                    .msg("header", r.header.as_ref().map(gojson::header))
                    .finish()
                    + "\n",
            ),
            Format::Fields => {
                let mut out = String::new();
                fields_header(&mut out, r.header.as_ref());
                text(out)
            }
            Format::Protobuf => Ok(r.encode_to_vec()),
            Format::Table => Err(self.fmt().unsupported()),
        }
    }

    pub fn lease_grant(&self, r: &pb::LeaseGrantResponse) -> Result<Output, CtlError> {
        match self.fmt() {
            Format::Simple => text(format!(
                "lease {:016x} granted with TTL({}s)\n",
                r.id, r.ttl
            )),
            Format::Json => text(
                flat_header(r.header.as_ref())
                    .raw("ID", &r.id.to_string())
                    .raw("TTL", &r.ttl.to_string())
                    .string_always("Error", &r.error)
                    .finish()
                    + "\n",
            ),
            Format::Fields => {
                let mut out = String::new();
                fields_header(&mut out, r.header.as_ref());
                let _ = writeln!(out, "\"ID\" : {}", r.id);
                let _ = writeln!(out, "\"TTL\" : {}", r.ttl);
                text(out)
            }
            // clientv3's lease responses embed *pb.ResponseHeader, whose
            // Marshal is what etcdctl's protobuf printer ends up calling.
            Format::Protobuf => Ok(r.header.map(|h| h.encode_to_vec()).unwrap_or_default()),
            Format::Table => Err(self.fmt().unsupported()),
        }
    }

    pub fn lease_revoke(&self, id: i64, r: &pb::LeaseRevokeResponse) -> Result<Output, CtlError> {
        match self.fmt() {
            Format::Simple => text(format!("lease {id:016x} revoked\n")),
            Format::Json => text(gojson::lease_revoke_response(r) + "\n"),
            Format::Fields => {
                let mut out = String::new();
                fields_header(&mut out, r.header.as_ref());
                text(out)
            }
            // clientv3.LeaseRevokeResponse is a type of its own over pb's, without
            // Marshal: etcdctl refuses it, showing it with Go's `%v`.
            Format::Protobuf => Err(CtlError::bad_feature(format!(
                "marshal unsupported for type clientv3.LeaseRevokeResponse ({{{}}})",
                header_compact_text(r.header.as_ref())
            ))),
            Format::Table => Err(self.fmt().unsupported()),
        }
    }

    pub fn lease_keep_alive(&self, r: &pb::LeaseKeepAliveResponse) -> Result<Output, CtlError> {
        match self.fmt() {
            Format::Simple => text(format!(
                "lease {:016x} keepalived with TTL({})\n",
                r.id, r.ttl
            )),
            Format::Json => text(
                flat_header(r.header.as_ref())
                    .raw("ID", &r.id.to_string())
                    .raw("TTL", &r.ttl.to_string())
                    .finish()
                    + "\n",
            ),
            Format::Fields => {
                let mut out = String::new();
                fields_header(&mut out, r.header.as_ref());
                let _ = writeln!(out, "\"ID\" : {}", r.id);
                let _ = writeln!(out, "\"TTL\" : {}", r.ttl);
                text(out)
            }
            // clientv3's lease responses embed *pb.ResponseHeader, whose
            // Marshal is what etcdctl's protobuf printer ends up calling.
            Format::Protobuf => Ok(r.header.map(|h| h.encode_to_vec()).unwrap_or_default()),
            Format::Table => Err(self.fmt().unsupported()),
        }
    }

    pub fn lease_time_to_live(
        &self,
        r: &pb::LeaseTimeToLiveResponse,
        with_keys: bool,
    ) -> Result<Output, CtlError> {
        match self.fmt() {
            Format::Simple => {
                if r.granted_ttl == 0 && r.ttl == -1 {
                    return text(format!("lease {:016x} already expired\n", r.id));
                }
                let mut line = format!(
                    "lease {:016x} granted with TTL({}s), remaining({}s)",
                    r.id, r.granted_ttl, r.ttl
                );
                if with_keys {
                    let keys: Vec<String> = r.keys.iter().map(|k| lossy(k)).collect();
                    let _ = write!(line, ", attached keys({})", gofmt::string_slice(&keys));
                }
                text(line + "\n")
            }
            Format::Json => {
                let keys = if r.keys.is_empty() {
                    "null".to_owned()
                } else {
                    let items: Vec<String> = r.keys.iter().map(|k| gojson::bytes(k)).collect();
                    format!("[{}]", items.join(","))
                };
                text(
                    flat_header(r.header.as_ref())
                        .raw("id", &r.id.to_string())
                        .raw("ttl", &r.ttl.to_string())
                        .raw("granted-ttl", &r.granted_ttl.to_string())
                        .raw("keys", &keys)
                        .finish()
                        + "\n",
                )
            }
            Format::Fields => {
                let mut out = String::new();
                fields_header(&mut out, r.header.as_ref());
                let _ = writeln!(out, "\"ID\" : {}", r.id);
                let _ = writeln!(out, "\"TTL\" : {}", r.ttl);
                let _ = writeln!(out, "\"GrantedTTL\" : {}", r.granted_ttl);
                for k in &r.keys {
                    let _ = writeln!(out, "\"Key\" : {}", gofmt::quote(k));
                }
                text(out)
            }
            // clientv3's lease responses embed *pb.ResponseHeader, whose
            // Marshal is what etcdctl's protobuf printer ends up calling.
            Format::Protobuf => Ok(r.header.map(|h| h.encode_to_vec()).unwrap_or_default()),
            Format::Table => Err(self.fmt().unsupported()),
        }
    }

    pub fn lease_list(&self, r: &pb::LeaseLeasesResponse) -> Result<Output, CtlError> {
        match self.fmt() {
            Format::Simple => {
                let mut out = format!("found {} leases\n", r.leases.len());
                for l in &r.leases {
                    let _ = writeln!(out, "{:016x}", l.id);
                }
                text(out)
            }
            Format::Json => {
                // clientv3 always makes the slice, so no leases is `[]`.
                let items: Vec<String> = r
                    .leases
                    .iter()
                    .map(|l| Obj::new().raw("id", &l.id.to_string()).finish())
                    .collect();
                let leases = format!("[{}]", items.join(","));
                text(
                    flat_header(r.header.as_ref())
                        .raw("leases", &leases)
                        .finish()
                        + "\n",
                )
            }
            Format::Fields => {
                let mut out = String::new();
                fields_header(&mut out, r.header.as_ref());
                for l in &r.leases {
                    let _ = writeln!(out, "\"ID\" : {}", l.id);
                }
                text(out)
            }
            // clientv3's lease responses embed *pb.ResponseHeader, whose
            // Marshal is what etcdctl's protobuf printer ends up calling.
            Format::Protobuf => Ok(r.header.map(|h| h.encode_to_vec()).unwrap_or_default()),
            Format::Table => Err(self.fmt().unsupported()),
        }
    }

    /// One watch response (etcdctl prints events only; fields adds the header).
    pub fn watch(&self, r: &pb::WatchResponse) -> Result<Output, CtlError> {
        match self.fmt() {
            Format::Simple => {
                let mut out = String::new();
                for e in &r.events {
                    out.push_str(event_type_name(e.r#type));
                    out.push('\n');
                    if let Some(prev) = &e.prev_kv {
                        self.simple_kv(&mut out, prev);
                    }
                    if let Some(kv) = &e.kv {
                        self.simple_kv(&mut out, kv);
                    }
                }
                text(out)
            }
            Format::Json => {
                let events: Vec<String> = r.events.iter().map(gojson::event).collect();
                // A canceled watch's last response carries an empty, not a
                // nil, event list in etcdctl's output.
                let events = if events.is_empty() && !r.canceled {
                    "null".to_owned()
                } else {
                    format!("[{}]", events.join(","))
                };
                let header = r
                    .header
                    .as_ref()
                    .map(gojson::header)
                    .unwrap_or_else(|| "{}".into());
                text(
                    Obj::new()
                        .raw("Header", &header)
                        .raw("Events", &events)
                        .raw("CompactRevision", &r.compact_revision.to_string())
                        .raw("Canceled", if r.canceled { "true" } else { "false" })
                        .raw("Created", if r.created { "true" } else { "false" })
                        .finish()
                        + "\n",
                )
            }
            Format::Fields => {
                let mut out = String::new();
                fields_header(&mut out, r.header.as_ref());
                for e in &r.events {
                    let _ = writeln!(out, "\"Type\" : {}", event_type_name(e.r#type));
                    if let Some(prev) = &e.prev_kv {
                        fields_kv(&mut out, "Prev", prev);
                    }
                    if let Some(kv) = &e.kv {
                        fields_kv(&mut out, "", kv);
                    }
                }
                text(out)
            }
            Format::Protobuf => {
                let mut out = Vec::new();
                for e in &r.events {
                    out.extend(e.encode_to_vec());
                }
                Ok(out)
            }
            Format::Table => Err(self.fmt().unsupported()),
        }
    }
}

/// What happened to a member, for `member_change`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    Added,
    Updated,
    Removed,
    Promoted,
}

/// One `endpoint hashkv` result.
#[derive(Debug, Clone)]
pub struct EndpointHashKv {
    pub endpoint: String,
    pub hash: pb::HashKvResponse,
}

fn alarm_name(alarm: i32) -> &'static str {
    match pb::AlarmType::try_from(alarm) {
        Ok(pb::AlarmType::None) => "NONE",
        Ok(pb::AlarmType::Nospace) => "NOSPACE",
        Ok(pb::AlarmType::Corrupt) => "CORRUPT",
        Err(_) => "UNKNOWN",
    }
}

/// One `endpoint status` result.
#[derive(Debug, Clone)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub status: pb::StatusResponse,
}

/// One `endpoint health` result.
#[derive(Debug, Clone)]
pub struct EndpointHealth {
    pub endpoint: String,
    pub health: bool,
    /// Go duration string of the probe's round trip.
    pub took: String,
    pub error: String,
}

fn event_type_name(t: i32) -> &'static str {
    if t == mvccpb::event::EventType::Delete as i32 {
        "DELETE"
    } else {
        "PUT"
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// clientv3 embeds `*pb.ResponseHeader` in lease responses, so its fields are
/// flattened into the object.
fn flat_header(h: Option<&pb::ResponseHeader>) -> Obj {
    let h = h.cloned().unwrap_or_default();
    Obj::new()
        .uint("cluster_id", h.cluster_id)
        .uint("member_id", h.member_id)
        .int("revision", h.revision)
        .uint("raft_term", h.raft_term)
}

fn member_rows(r: &pb::MemberListResponse) -> ([&'static str; 6], Vec<Vec<String>>) {
    let hdr = [
        "ID",
        "Status",
        "Name",
        "Peer Addrs",
        "Client Addrs",
        "Is Learner",
    ];
    let rows = r
        .members
        .iter()
        .map(|m| {
            vec![
                format!("{:x}", m.id),
                if m.name.is_empty() {
                    "unstarted"
                } else {
                    "started"
                }
                .to_owned(),
                m.name.clone(),
                m.peer_ur_ls.join(","),
                m.client_ur_ls.join(","),
                m.is_learner.to_string(),
            ]
        })
        .collect();
    (hdr, rows)
}

fn simple_rows(rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    for row in rows {
        out.push_str(&row.join(", "));
        out.push('\n');
    }
    out
}

fn fields_header(out: &mut String, h: Option<&pb::ResponseHeader>) {
    let h = h.cloned().unwrap_or_default();
    let _ = writeln!(out, "\"ClusterID\" : {}", h.cluster_id);
    let _ = writeln!(out, "\"MemberID\" : {}", h.member_id);
    let _ = writeln!(out, "\"Revision\" : {}", h.revision);
    let _ = writeln!(out, "\"RaftTerm\" : {}", h.raft_term);
}

fn fields_kv(out: &mut String, prefix: &str, kv: &mvccpb::KeyValue) {
    let _ = writeln!(out, "\"{prefix}Key\" : {}", gofmt::quote(&kv.key));
    let _ = writeln!(out, "\"{prefix}CreateRevision\" : {}", kv.create_revision);
    let _ = writeln!(out, "\"{prefix}ModRevision\" : {}", kv.mod_revision);
    let _ = writeln!(out, "\"{prefix}Version\" : {}", kv.version);
    let _ = writeln!(out, "\"{prefix}Value\" : {}", gofmt::quote(&kv.value));
    let _ = writeln!(out, "\"{prefix}Lease\" : {}", kv.lease);
}

fn fields_get(out: &mut String, r: &pb::RangeResponse) {
    fields_header(out, r.header.as_ref());
    for kv in &r.kvs {
        fields_kv(out, "", kv);
    }
    let _ = writeln!(out, "\"More\" : {}", r.more);
    let _ = writeln!(out, "\"Count\" : {}", r.count);
}

fn fields_put(out: &mut String, r: &pb::PutResponse) {
    fields_header(out, r.header.as_ref());
    if let Some(prev) = &r.prev_kv {
        fields_kv(out, "Prev", prev);
    }
}

fn fields_del(out: &mut String, r: &pb::DeleteRangeResponse) {
    fields_header(out, r.header.as_ref());
    let _ = writeln!(out, "\"Deleted\" : {}", r.deleted);
    for kv in &r.prev_kvs {
        fields_kv(out, "Prev", kv);
    }
}

/// A response header as gogoproto's `String()` writes it (protobuf's compact text:
/// each set field and a space), `<nil>` for none.
fn header_compact_text(header: Option<&pb::ResponseHeader>) -> String {
    let Some(h) = header else {
        return "<nil>".to_owned();
    };
    let mut text = String::new();
    for (name, value) in [
        ("cluster_id", h.cluster_id.to_string()),
        ("member_id", h.member_id.to_string()),
        ("revision", h.revision.to_string()),
        ("raft_term", h.raft_term.to_string()),
    ] {
        if value != "0" {
            let _ = write!(text, "{name}:{value} ");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(rev: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: 324952591200643719,
            member_id: 3319814642761637952,
            revision: rev,
            raft_term: 2,
        })
    }

    fn kv(k: &str, v: &str, c: i64, m: i64, ver: i64) -> mvccpb::KeyValue {
        mvccpb::KeyValue {
            key: k.into(),
            value: v.into(),
            create_revision: c,
            mod_revision: m,
            version: ver,
            lease: 0,
        }
    }

    fn s(o: Result<Output, CtlError>) -> String {
        String::from_utf8(o.unwrap()).unwrap()
    }

    #[test]
    fn simple_get_and_hex_and_value_only() {
        let r = pb::RangeResponse {
            header: header(3),
            kvs: vec![kv("k2", "v2", 2, 2, 1), kv("k3", "", 3, 3, 1)],
            more: false,
            count: 2,
        };
        assert_eq!(
            s(Printer::new(Format::Simple, false).get(&r)),
            "k2\nv2\nk3\n\n"
        );
        assert_eq!(
            s(Printer::new(Format::Simple, true).get(&r)),
            "\\x6b\\x32\n\\x76\\x32\n\\x6b\\x33\n\n"
        );
        let mut p = Printer::new(Format::Simple, false);
        p.value_only = true;
        assert_eq!(s(p.get(&r)), "v2\n\n");
    }

    #[test]
    fn fields_put_with_prev_kv() {
        let r = pb::PutResponse {
            header: header(6),
            prev_kv: Some(kv("a", "4", 2, 5, 3)),
        };
        let expected = "\"ClusterID\" : 324952591200643719\n\"MemberID\" : 3319814642761637952\n\
\"Revision\" : 6\n\"RaftTerm\" : 2\n\"PrevKey\" : \"a\"\n\"PrevCreateRevision\" : 2\n\
\"PrevModRevision\" : 5\n\"PrevVersion\" : 3\n\"PrevValue\" : \"4\"\n\"PrevLease\" : 0\n";
        assert_eq!(s(Printer::new(Format::Fields, false).put(&r)), expected);
    }

    #[test]
    fn txn_simple_separates_responses_with_blank_lines() {
        use pb::response_op::Response;
        let r = pb::TxnResponse {
            header: header(9),
            succeeded: true,
            responses: vec![
                pb::ResponseOp {
                    response: Some(Response::ResponsePut(pb::PutResponse::default())),
                },
                pb::ResponseOp {
                    response: Some(Response::ResponseDeleteRange(pb::DeleteRangeResponse {
                        deleted: 1,
                        prev_kvs: vec![kv("k2", "v2", 1, 1, 1)],
                        ..Default::default()
                    })),
                },
            ],
        };
        assert_eq!(
            s(Printer::new(Format::Simple, false).txn(&r)),
            "SUCCESS\n\nOK\n\n1\nk2\nv2\n"
        );
    }

    #[test]
    fn table_unsupported_for_kv() {
        let e = Printer::new(Format::Table, false)
            .get(&pb::RangeResponse::default())
            .unwrap_err();
        assert_eq!(e.message, "table not supported as output format");
        assert_eq!(e.code, crate::error::ExitCode::BadFeature);
        assert_eq!(
            Format::parse("bogus").unwrap_err().message,
            "unsupported output format"
        );
    }

    #[test]
    fn endpoint_status_simple_row() {
        let st = EndpointStatus {
            endpoint: "127.0.0.1:23790".into(),
            status: pb::StatusResponse {
                header: header(8),
                version: "3.4.23".into(),
                db_size: 24576,
                leader: 3319814642761637952,
                raft_index: 11,
                raft_term: 2,
                raft_applied_index: 11,
                db_size_in_use: 16384,
                ..Default::default()
            },
        };
        let p = Printer::new(Format::Simple, false);
        assert_eq!(
            s(p.endpoint_status(std::slice::from_ref(&st))),
            "127.0.0.1:23790, 2e1259d415f2a040, 3.4.23, 25 kB, true, false, 2, 11, 11, \n"
        );
        let p = Printer::new(Format::Json, false);
        assert_eq!(
            s(p.endpoint_status(&[st])),
            "[{\"Endpoint\":\"127.0.0.1:23790\",\"Status\":{\"header\":{\"cluster_id\":324952591200643719,\"member_id\":3319814642761637952,\"revision\":8,\"raft_term\":2},\"version\":\"3.4.23\",\"dbSize\":24576,\"leader\":3319814642761637952,\"raftIndex\":11,\"raftTerm\":2,\"raftAppliedIndex\":11,\"dbSizeInUse\":16384}}]\n"
        );
    }

    #[test]
    fn lease_outputs() {
        let p = Printer::new(Format::Simple, false);
        let g = pb::LeaseGrantResponse {
            header: header(19),
            id: 0x2040a2001969233a,
            ttl: 100,
            error: String::new(),
        };
        assert_eq!(
            s(p.lease_grant(&g)),
            "lease 2040a2001969233a granted with TTL(100s)\n"
        );
        let j = Printer::new(Format::Json, false);
        assert_eq!(
            s(j.lease_grant(&g)),
            "{\"cluster_id\":324952591200643719,\"member_id\":3319814642761637952,\"revision\":19,\"raft_term\":2,\"ID\":2324035529033196346,\"TTL\":100,\"Error\":\"\"}\n"
        );
        let t = pb::LeaseTimeToLiveResponse {
            header: header(19),
            id: 1,
            ttl: -1,
            granted_ttl: 0,
            keys: vec![],
        };
        assert_eq!(
            s(p.lease_time_to_live(&t, false)),
            "lease 0000000000000001 already expired\n"
        );
        assert_eq!(
            s(j.lease_time_to_live(&t, false)),
            "{\"cluster_id\":324952591200643719,\"member_id\":3319814642761637952,\"revision\":19,\"raft_term\":2,\"id\":1,\"ttl\":-1,\"granted-ttl\":0,\"keys\":null}\n"
        );
        let t = pb::LeaseTimeToLiveResponse {
            header: header(21),
            id: 0x2040a20019692343,
            ttl: 99,
            granted_ttl: 100,
            keys: vec![b"lk".to_vec(), b"lk2".to_vec()],
        };
        assert_eq!(
            s(p.lease_time_to_live(&t, true)),
            "lease 2040a20019692343 granted with TTL(100s), remaining(99s), attached keys([lk lk2])\n"
        );
    }
}
