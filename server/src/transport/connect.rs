//! gRPC channels to other members: plain HTTP/2 for `http://` URLs, HTTP/2 over rustls
//! (ALPN `h2`) for `https://` URLs.

use std::sync::Arc;
use std::time::Duration;

use concord_proto::concordpb::peer_client::PeerClient;
use concord_proto::concordpb::{MemberInfoRequest, MemberInfoResponse};
use concord_proto::etcdserverpb::{HashKvRequest, HashKvResponse};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};
use url::Url;

use super::{NetError, Result};

/// How long establishing a connection (TCP, TLS and HTTP/2) may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings on idle and busy connections, so a dead or partitioned peer is noticed in
/// seconds rather than at the TCP timeout.
pub(super) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
pub(super) const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Flow-control windows large enough for snapshot chunks and bursts of appends.
pub(super) const STREAM_WINDOW_BYTES: u32 = 4 * 1024 * 1024;
pub(super) const CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;

/// Where to dial for one URL.
#[derive(Clone)]
pub(super) struct Target {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) tls: Option<(TlsConnector, ServerName<'static>)>,
}

/// Where to dial for `url` (TLS settings required for `https`).
pub(super) fn target(url: &Url, tls: Option<Arc<ClientConfig>>) -> Result<Target> {
    let bad = |reason: &str| NetError::Url {
        url: url.to_string(),
        reason: reason.into(),
    };
    let secure = match url.scheme() {
        "http" => false,
        "https" => true,
        _ => return Err(bad("peer URLs must be http or https")),
    };
    let host = url
        .host_str()
        .ok_or_else(|| bad("missing host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| bad("missing port"))?;
    let tls = if secure {
        let config = tls.ok_or_else(|| {
            NetError::TlsSettings(format!("{url} is https but no client TLS is configured"))
        })?;
        let server_name =
            ServerName::try_from(host.clone()).map_err(|_| bad("invalid host name for TLS"))?;
        Some((TlsConnector::from(config), server_name))
    } else {
        None
    };
    Ok(Target { host, port, tls })
}

fn prepare(url: &Url, tls: Option<Arc<ClientConfig>>) -> Result<(Endpoint, Target)> {
    let target = target(url, tls)?;
    let origin = format!("{}://{}", url.scheme(), url.authority());
    let endpoint = Endpoint::from_shared(origin)
        .map_err(|e| NetError::Url {
            url: url.to_string(),
            reason: e.to_string(),
        })?
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
        .initial_connection_window_size(Some(CONNECTION_WINDOW_BYTES));
    Ok((endpoint, target))
}

/// A tower connector dialing `target` over TCP and rustls. Resolves host names (e.g.
/// `localhost`) through the system resolver.
fn tls_connector(
    target: Target,
) -> impl tower::Service<
    http::Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Error = std::io::Error,
    Future = impl Future<Output = std::io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>>
             + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |_uri: http::Uri| {
        let target = target.clone();
        async move {
            let (connector, server_name) = target
                .tls
                .ok_or_else(|| std::io::Error::other("TLS connector without TLS settings"))?;
            let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
            tcp.set_nodelay(true)?;
            let stream = connector.connect(server_name, tcp).await?;
            Ok(TokioIo::new(stream))
        }
    })
}

/// Connects to a member now (TCP, TLS, HTTP/2), failing after a few seconds. `tls` is
/// needed for `https://` URLs and ignored for `http://` ones.
pub async fn connect(url: &Url, tls: Option<Arc<ClientConfig>>) -> Result<Channel> {
    let (endpoint, target) = prepare(url, tls)?;
    let connecting = async {
        if target.tls.is_some() {
            endpoint.connect_with_connector(tls_connector(target)).await
        } else {
            endpoint.connect_timeout(CONNECT_TIMEOUT).connect().await
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(channel) => Ok(channel?),
        Err(_) => Err(NetError::ConnectTimeout(url.to_string())),
    }
}

/// A channel that connects on first use and reconnects by itself (for RPCs such as
/// forwarding a write to the leader). Must be called inside a tokio runtime.
pub fn lazy_channel(url: &Url, tls: Option<Arc<ClientConfig>>) -> Result<Channel> {
    let (endpoint, target) = prepare(url, tls)?;
    let endpoint = endpoint.connect_timeout(CONNECT_TIMEOUT);
    if target.tls.is_some() {
        Ok(endpoint.connect_with_connector_lazy(tls_connector(target)))
    } else {
        Ok(endpoint.connect_lazy())
    }
}

/// Asks the member at `url` who it is (the peer service's `MemberInfo`), e.g. to check a
/// peer's cluster id before joining.
pub async fn fetch_member_info(
    url: &Url,
    tls: Option<Arc<ClientConfig>>,
) -> Result<MemberInfoResponse> {
    let channel = connect(url, tls).await?;
    let mut client = PeerClient::new(channel);
    let call = client.member_info(MemberInfoRequest {});
    match tokio::time::timeout(CONNECT_TIMEOUT, call).await {
        Ok(response) => Ok(response?.into_inner()),
        Err(_) => Err(NetError::ConnectTimeout(url.to_string())),
    }
}

/// Asks the member at `url` for its HashKV at `revision` (the corruption checks), as a
/// member of cluster `cluster_id`, within `timeout` all told. An error the peer
/// answered (a compacted or future revision) comes back as its status.
/// A request to a peer's `Peer` service, with the headers that name the sending member
/// and its cluster (`from`: member id, cluster id), as the raft streams carry them.
pub fn peer_request<T>(message: T, from: (u64, u64)) -> tonic::Request<T> {
    let (member_id, cluster_id) = from;
    let mut request = tonic::Request::new(message);
    for (name, id) in [
        (super::CLUSTER_ID_HEADER, cluster_id),
        (super::FROM_HEADER, member_id),
    ] {
        if let Ok(value) = format!("{id:x}").parse() {
            request.metadata_mut().insert(name, value);
        }
    }
    request
}

pub async fn fetch_hash_kv(
    url: &Url,
    tls: Option<Arc<ClientConfig>>,
    from: (u64, u64),
    revision: i64,
    timeout: Duration,
) -> std::result::Result<HashKvResponse, tonic::Status> {
    let (member_id, cluster_id) = from;
    let call = async {
        let channel = connect(url, tls)
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let request = peer_request(HashKvRequest { revision }, (member_id, cluster_id));
        let answer = PeerClient::new(channel).hash_kv(request).await?;
        Ok::<_, tonic::Status>(answer.into_inner())
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(answer) => answer,
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "no answer from {url} within {timeout:?}"
        ))),
    }
}
