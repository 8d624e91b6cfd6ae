//! xtask's etcd v3 client for the chaos run and the benchmark's control calls (readiness, the
//! leader, the watch workload's writers): the tonic clients that `concord-proto` generates
//! (with protox, so building xtask needs no `protoc`), wrapped so that call sites read like
//! etcd's own client.
//!
//! A [`Client`] talks to one member over one HTTP/2 connection, dialed lazily and dialed again
//! after it breaks (tonic's `Channel`); [`Options`] bounds dialing and each request and sets
//! HTTP/2 pings. Clients for several members come from [`Client::connect_each`]. Errors are
//! `anyhow` errors that name the call, the member and the gRPC status. The benchmark's hot path
//! does not come through here: see `unary_client` and `watch_client`.
//!
//! ```text
//! let options = Options::under_faults(Duration::from_secs(1));
//! let mut client = Client::connect("http://127.0.0.1:2379", &options)?;
//! let revision = client.put("k", "v").await?.header.map_or(0, |h| h.revision);
//! let value = client.get("k", Read::Linearizable).await?.kvs.pop().map(|kv| kv.value);
//! ```

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use concord_proto::etcdserverpb::cluster_client::ClusterClient;
use concord_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use concord_proto::etcdserverpb::kv_client::KvClient;
use concord_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use concord_proto::etcdserverpb::watch_client::WatchClient;
use concord_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, Compare, DefragmentRequest, DefragmentResponse,
    DeleteRangeRequest, DeleteRangeResponse, MemberAddRequest, MemberAddResponse,
    MemberListRequest, MemberListResponse, MemberPromoteRequest, MemberPromoteResponse,
    MemberRemoveRequest, MemberRemoveResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, StatusRequest, StatusResponse, TxnRequest, TxnResponse,
    WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse, request_op,
    watch_request,
};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

/// How a client dials and how long it waits. `Default` waits for nothing: for long-lived
/// watch streams that a request timeout would cut.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Bound on dialing the member.
    pub connect_timeout: Option<Duration>,
    /// Bound on each request (on a stream, until its response headers arrive).
    pub request_timeout: Option<Duration>,
    /// HTTP/2 pings every `.0`, idle or not, to be answered within `.1`.
    pub keep_alive: Option<(Duration, Duration)>,
}

impl Options {
    /// Requests answered within `request_timeout`, dialing within 5 s.
    pub fn requests(request_timeout: Duration) -> Options {
        Options {
            connect_timeout: Some(Duration::from_secs(5)),
            request_timeout: Some(request_timeout),
            keep_alive: None,
        }
    }

    /// Dialing and requests within `timeout`, and a ping every second answered within it: a
    /// member that vanished (kill -9 behind a SIGSTOP leaves no FIN) is noticed quickly.
    pub fn under_faults(timeout: Duration) -> Options {
        Options {
            connect_timeout: Some(timeout),
            request_timeout: Some(timeout),
            keep_alive: Some((Duration::from_secs(1), timeout)),
        }
    }

    fn endpoint(&self, endpoint: &str) -> Result<Endpoint> {
        let url = url(endpoint);
        let mut endpoint =
            Endpoint::from_shared(url.clone()).with_context(|| format!("endpoint {url}"))?;
        if let Some(timeout) = self.connect_timeout {
            endpoint = endpoint.connect_timeout(timeout);
        }
        if let Some(timeout) = self.request_timeout {
            endpoint = endpoint.timeout(timeout);
        }
        if let Some((interval, timeout)) = self.keep_alive {
            endpoint = endpoint
                .http2_keep_alive_interval(interval)
                .keep_alive_timeout(timeout)
                .keep_alive_while_idle(true);
        }
        Ok(endpoint)
    }
}

/// `http://host:port` for an endpoint given with or without a scheme.
pub fn url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

/// A connection to `endpoint`, dialed now (an error if the member does not accept it).
pub async fn dial(endpoint: &str, options: &Options) -> Result<Channel> {
    options
        .endpoint(endpoint)?
        .connect()
        .await
        .with_context(|| format!("connect to {}", url(endpoint)))
}

/// etcd's end of the range of every key starting with `prefix` (`WithPrefix`): the prefix with
/// its last byte below 0xff incremented and what follows dropped; `\0` (to the end of the
/// keyspace) when there is no such byte.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Which members may answer a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// Through the leader's ReadIndex: never older than a write that completed before it.
    Linearizable,
    /// From the member's local state, however far behind.
    Serializable,
}

/// The compare of a compare-and-set: the key holds `value`.
pub fn value_is(key: &str, value: &str) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Value as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(TargetUnion::Value(value.as_bytes().to_vec())),
        ..Default::default()
    }
}

/// The compare of a create-if-absent: the key does not exist (`create_revision == 0`).
pub fn absent(key: &str) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(TargetUnion::CreateRevision(0)),
        ..Default::default()
    }
}

/// A put inside a txn.
pub fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        })),
    }
}

/// The KV, Watch, Maintenance and Cluster services of one member; clones share its
/// connection.
#[derive(Clone)]
pub struct Client {
    url: String,
    kv: KvClient<Channel>,
    watch: WatchClient<Channel>,
    maintenance: MaintenanceClient<Channel>,
    cluster: ClusterClient<Channel>,
}

impl Client {
    /// A client of `endpoint`; nothing is dialed until the first request.
    pub fn connect(endpoint: &str, options: &Options) -> Result<Client> {
        let channel = options.endpoint(endpoint)?.connect_lazy();
        Ok(Client {
            url: url(endpoint),
            kv: KvClient::new(channel.clone()),
            watch: WatchClient::new(channel.clone()),
            maintenance: MaintenanceClient::new(channel.clone()),
            cluster: ClusterClient::new(channel),
        })
    }

    /// One client per endpoint, in order.
    pub fn connect_each(endpoints: &[String], options: &Options) -> Result<Vec<Client>> {
        endpoints
            .iter()
            .map(|endpoint| Client::connect(endpoint, options))
            .collect()
    }

    pub async fn put(
        &mut self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<PutResponse> {
        let request = PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        };
        answer(&self.url, "Put", self.kv.put(request)).await
    }

    /// A single key.
    pub async fn get(&mut self, key: impl Into<Vec<u8>>, read: Read) -> Result<RangeResponse> {
        let request = RangeRequest {
            key: key.into(),
            serializable: read == Read::Serializable,
            ..Default::default()
        };
        answer(&self.url, "Range", self.kv.range(request)).await
    }

    /// A single key.
    pub async fn delete(&mut self, key: impl Into<Vec<u8>>) -> Result<DeleteRangeResponse> {
        let request = DeleteRangeRequest {
            key: key.into(),
            ..Default::default()
        };
        answer(&self.url, "DeleteRange", self.kv.delete_range(request)).await
    }

    pub async fn txn(&mut self, request: TxnRequest) -> Result<TxnResponse> {
        answer(&self.url, "Txn", self.kv.txn(request)).await
    }

    /// Compacts the history up to `revision`; `physical` waits until it is removed.
    pub async fn compact(&mut self, revision: i64, physical: bool) -> Result<CompactionResponse> {
        let request = CompactionRequest { revision, physical };
        answer(&self.url, "Compact", self.kv.compact(request)).await
    }

    /// The member's Maintenance.Defragment, answered when it is done.
    pub async fn defragment(&mut self) -> Result<DefragmentResponse> {
        answer(
            &self.url,
            "Defragment",
            self.maintenance.defragment(DefragmentRequest {}),
        )
        .await
    }

    /// The member's Maintenance.Status: its id (in the header) and the leader it knows.
    pub async fn status(&mut self) -> Result<StatusResponse> {
        answer(
            &self.url,
            "Status",
            self.maintenance.status(StatusRequest {}),
        )
        .await
    }

    /// Cluster.MemberAdd of a member (a learner if asked) that will listen on `peer_urls`.
    pub async fn member_add(
        &mut self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<MemberAddResponse> {
        let request = MemberAddRequest {
            peer_ur_ls: peer_urls,
            is_learner,
        };
        answer(&self.url, "MemberAdd", self.cluster.member_add(request)).await
    }

    pub async fn member_remove(&mut self, id: u64) -> Result<MemberRemoveResponse> {
        let request = MemberRemoveRequest { id };
        answer(
            &self.url,
            "MemberRemove",
            self.cluster.member_remove(request),
        )
        .await
    }

    pub async fn member_promote(&mut self, id: u64) -> Result<MemberPromoteResponse> {
        let request = MemberPromoteRequest { id };
        answer(
            &self.url,
            "MemberPromote",
            self.cluster.member_promote(request),
        )
        .await
    }

    /// Cluster.MemberList as the member knows it (not linearizable).
    pub async fn member_list(&mut self) -> Result<MemberListResponse> {
        let request = MemberListRequest::default();
        answer(&self.url, "MemberList", self.cluster.member_list(request)).await
    }

    /// Opens a Watch stream with one watcher, `create`; returns once the member answered the
    /// stream (the `created` response is the stream's first message).
    pub async fn watch(&mut self, create: WatchCreateRequest) -> Result<WatchStream> {
        let (requests, queued) = mpsc::unbounded_channel();
        // Cannot fail: the receiving end is right here.
        let _ = requests.send(watch_request(watch_request::RequestUnion::CreateRequest(
            create,
        )));
        let outbound = tokio_stream::wrappers::UnboundedReceiverStream::new(queued);
        let responses = answer(&self.url, "Watch", self.watch.watch(outbound)).await?;
        Ok(WatchStream {
            url: self.url.clone(),
            requests,
            responses,
        })
    }
}

fn watch_request(request: watch_request::RequestUnion) -> WatchRequest {
    WatchRequest {
        request_union: Some(request),
    }
}

/// An open Watch stream.
pub struct WatchStream {
    url: String,
    /// Kept open: a client that closes its side ends the stream.
    requests: mpsc::UnboundedSender<WatchRequest>,
    responses: tonic::Streaming<WatchResponse>,
}

impl WatchStream {
    /// Asks for a progress notification: a response without events, whose header revision is
    /// the one everything up to was sent.
    pub fn request_progress(&self) -> Result<()> {
        let progress = watch_request::RequestUnion::ProgressRequest(WatchProgressRequest {});
        self.requests
            .send(watch_request(progress))
            .map_err(|_| anyhow!("Watch on {}: the stream is closed", self.url))
    }

    /// The next response; `None` when the member ended the stream.
    pub async fn message(&mut self) -> Result<Option<WatchResponse>> {
        self.responses
            .message()
            .await
            .map_err(|status| status_error(status, "Watch", &self.url))
    }
}

/// The message of a unary call (or the stream of a streaming one), or an error naming `call`
/// and the member.
async fn answer<T>(
    url: &str,
    call: &str,
    response: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    response
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| status_error(status, call, url))
}

fn status_error(status: tonic::Status, call: &str, url: &str) -> anyhow::Error {
    anyhow!(
        "{call} on {url}: grpc status {:?}: {}",
        status.code(),
        status.message()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_as_etcd_computes_them() {
        assert_eq!(prefix_end(b"chaos/"), b"chaos0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn endpoints_get_a_scheme() {
        assert_eq!(url("127.0.0.1:2379"), "http://127.0.0.1:2379");
        assert_eq!(url("http://127.0.0.1:2379"), "http://127.0.0.1:2379");
    }

    #[test]
    fn a_refused_request_names_the_call_and_the_member() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A port nobody listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoint = format!("127.0.0.1:{port}");
        let error = runtime
            .block_on(async {
                let mut client =
                    Client::connect(&endpoint, &Options::requests(Duration::from_secs(1)))?;
                client.put("k", "v").await
            })
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(&format!(
                "Put on http://{endpoint}: grpc status Unavailable"
            )),
            "{error}"
        );
    }
}
