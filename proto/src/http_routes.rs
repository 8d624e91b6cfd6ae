//! etcd 3.4's HTTP/JSON gateway routes: the `google.api.http` annotations of its
//! `rpc.proto`, `v3lock.proto` and `v3election.proto`, which our `.proto` files leave out
//! (they do not change the wire format). Every one of them is a `POST` whose body is the
//! whole request message (`body: "*"`).
//!
//! Order matters where two methods share a path: grpc-gateway serves the one
//! registered first, so `/v3/maintenance/hash` is `Hash`, not `HashKV`.
//!
//! ```
//! use concord_proto::http_routes::HTTP_ROUTES;
//!
//! let range = HTTP_ROUTES.iter().find(|r| r.path == "/v3/kv/range").unwrap();
//! assert_eq!(range.service, "etcdserverpb.KV");
//! assert_eq!(range.grpc_path(), "/etcdserverpb.KV/Range");
//! ```

/// One `option (google.api.http) = { post: PATH body: "*" }` of etcd's protos.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpRoute {
    /// The HTTP path (`POST`), under `/v3/`.
    pub path: &'static str,
    /// The service's full protobuf name.
    pub service: &'static str,
    /// The method's name within the service.
    pub method: &'static str,
}

impl HttpRoute {
    /// The gRPC path the route forwards to (`/package.Service/Method`).
    pub fn grpc_path(&self) -> String {
        format!("/{}/{}", self.service, self.method)
    }
}

const fn route(path: &'static str, service: &'static str, method: &'static str) -> HttpRoute {
    HttpRoute {
        path,
        service,
        method,
    }
}

const KV: &str = "etcdserverpb.KV";
const WATCH: &str = "etcdserverpb.Watch";
const LEASE: &str = "etcdserverpb.Lease";
const CLUSTER: &str = "etcdserverpb.Cluster";
const MAINTENANCE: &str = "etcdserverpb.Maintenance";
const AUTH: &str = "etcdserverpb.Auth";
const LOCK: &str = "v3lockpb.Lock";
const ELECTION: &str = "v3electionpb.Election";

/// Every route, in the order etcd's generated gateway registers them.
pub const HTTP_ROUTES: &[HttpRoute] = &[
    route("/v3/kv/range", KV, "Range"),
    route("/v3/kv/put", KV, "Put"),
    route("/v3/kv/deleterange", KV, "DeleteRange"),
    route("/v3/kv/txn", KV, "Txn"),
    route("/v3/kv/compaction", KV, "Compact"),
    route("/v3/watch", WATCH, "Watch"),
    route("/v3/lease/grant", LEASE, "LeaseGrant"),
    route("/v3/lease/revoke", LEASE, "LeaseRevoke"),
    route("/v3/kv/lease/revoke", LEASE, "LeaseRevoke"),
    route("/v3/lease/keepalive", LEASE, "LeaseKeepAlive"),
    route("/v3/lease/timetolive", LEASE, "LeaseTimeToLive"),
    route("/v3/kv/lease/timetolive", LEASE, "LeaseTimeToLive"),
    route("/v3/lease/leases", LEASE, "LeaseLeases"),
    route("/v3/kv/lease/leases", LEASE, "LeaseLeases"),
    route("/v3/cluster/member/add", CLUSTER, "MemberAdd"),
    route("/v3/cluster/member/remove", CLUSTER, "MemberRemove"),
    route("/v3/cluster/member/update", CLUSTER, "MemberUpdate"),
    route("/v3/cluster/member/list", CLUSTER, "MemberList"),
    route("/v3/cluster/member/promote", CLUSTER, "MemberPromote"),
    route("/v3/maintenance/alarm", MAINTENANCE, "Alarm"),
    route("/v3/maintenance/status", MAINTENANCE, "Status"),
    route("/v3/maintenance/defragment", MAINTENANCE, "Defragment"),
    route("/v3/maintenance/hash", MAINTENANCE, "Hash"),
    route("/v3/maintenance/hash", MAINTENANCE, "HashKV"),
    route("/v3/maintenance/snapshot", MAINTENANCE, "Snapshot"),
    route(
        "/v3/maintenance/transfer-leadership",
        MAINTENANCE,
        "MoveLeader",
    ),
    route("/v3/auth/enable", AUTH, "AuthEnable"),
    route("/v3/auth/disable", AUTH, "AuthDisable"),
    route("/v3/auth/authenticate", AUTH, "Authenticate"),
    route("/v3/auth/user/add", AUTH, "UserAdd"),
    route("/v3/auth/user/get", AUTH, "UserGet"),
    route("/v3/auth/user/list", AUTH, "UserList"),
    route("/v3/auth/user/delete", AUTH, "UserDelete"),
    route("/v3/auth/user/changepw", AUTH, "UserChangePassword"),
    route("/v3/auth/user/grant", AUTH, "UserGrantRole"),
    route("/v3/auth/user/revoke", AUTH, "UserRevokeRole"),
    route("/v3/auth/role/add", AUTH, "RoleAdd"),
    route("/v3/auth/role/get", AUTH, "RoleGet"),
    route("/v3/auth/role/list", AUTH, "RoleList"),
    route("/v3/auth/role/delete", AUTH, "RoleDelete"),
    route("/v3/auth/role/grant", AUTH, "RoleGrantPermission"),
    route("/v3/auth/role/revoke", AUTH, "RoleRevokePermission"),
    route("/v3/lock/lock", LOCK, "Lock"),
    route("/v3/lock/unlock", LOCK, "Unlock"),
    route("/v3/election/campaign", ELECTION, "Campaign"),
    route("/v3/election/proclaim", ELECTION, "Proclaim"),
    route("/v3/election/leader", ELECTION, "Leader"),
    route("/v3/election/observe", ELECTION, "Observe"),
    route("/v3/election/resign", ELECTION, "Resign"),
];
