//! The gRPC connection: endpoints, dial and command timeouts, the auth token,
//! and clientv3's retry rules (reads retry while the cluster is unavailable;
//! writes retry only when the request never left the client).

use crate::error::{CtlError, ExitCode, status_message};
use concord_proto::etcdserverpb as pb;
use std::future::Future;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// clientv3's default `MaxCallRecvMsgSize` (math.MaxInt32): large ranges and
/// snapshots must not hit tonic's 4 MiB default.
pub const MAX_RECV_MSG_SIZE: usize = i32::MAX as usize;

/// clientv3's default `MaxCallSendMsgSize`: grpc-go refuses to send more.
pub const MAX_SEND_MSG_SIZE: usize = 2 * 1024 * 1024;

/// grpc-go's client-side refusal of a request over the send limit.
fn check_send_size<T: prost::Message>(msg: &T) -> Result<(), CtlError> {
    let len = msg.encoded_len();
    if len > MAX_SEND_MSG_SIZE {
        return Err(CtlError::error(format!(
            "rpc error: code = ResourceExhausted desc = trying to send message larger than max ({len} vs. {MAX_SEND_MSG_SIZE})"
        )));
    }
    Ok(())
}

/// etcd's `ErrAuthNotEnabled`, which Authenticate answers while auth is off.
const AUTH_NOT_ENABLED: &str = "etcdserver: authentication is not enabled";

/// How long to wait between attempts while no endpoint answers.
const RETRY_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between attempts of a request without a deadline.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// Connection settings from the global flags.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub endpoints: Vec<String>,
    pub dial_timeout: Duration,
    pub command_timeout: Duration,
    pub keepalive_time: Duration,
    pub keepalive_timeout: Duration,
    /// `(user, password)` for Auth.Authenticate.
    pub credentials: Option<(String, String)>,
    /// TLS settings, when TLS is configured (a CA, a client certificate, or
    /// `--insecure-transport=false`); endpoints without a scheme then use it.
    pub tls: Option<crate::tls::TlsSettings>,
    /// What etcdctl prints when it builds its first client (environment
    /// warnings, the `--debug` flag dump).
    pub prelude: std::sync::Arc<crate::environ::Prelude>,
}

/// grpc-go raises a client keepalive time below 10 s to 10 s ("Adjusting
/// keepalive ping interval to minimum period of 10s"), and etcd's servers
/// answer more frequent pings with GOAWAY.
const MIN_KEEPALIVE_TIME: Duration = Duration::from_secs(10);

/// Whether a request may be sent again after an `Unavailable` error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Reads: retry on any `Unavailable`.
    Repeatable,
    /// Writes: retry only if the connection could not be made.
    NonRepeatable,
}

/// A client bound to a set of endpoints.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    command_timeout: Duration,
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    /// How clientv3's log lines name the connection.
    target: std::sync::Arc<str>,
}

/// clientv3's name for a connection in its log lines: `endpoint://client-<uuid>/<host:port
/// of the first endpoint>` (its resolver group's random id, then the dialled endpoint
/// without its scheme).
fn log_target(endpoints: &[String]) -> String {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let first = endpoints.first().map_or("", |ep| {
        ep.split_once("://").map_or(ep.as_str(), |(_, rest)| rest)
    });
    format!(
        "endpoint://client-{}-{}-4{}-{:x}{}-{}/{first}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        8 | (bytes[8] & 0x3),
        &hex[17..20],
        &hex[20..32]
    )
}

/// The warning clientv3's retry interceptor logs on stderr for each failed attempt of a
/// unary call (`retrying of unary invoker failed`), which etcdctl prints before its own
/// `Error:` line and even when the call's failure is ignored (Authenticate while auth is
/// off). Scripts and etcd's e2e tests look for it.
fn log_failed_attempt(target: &str, attempt: u32, status: &tonic::Status) {
    let error = crate::error::grpc_error_text(status);
    eprintln!(
        "{{\"level\":\"warn\",\"ts\":\"{}\",\"caller\":\"clientv3/retry_interceptor.go:62\",\"msg\":\"retrying of unary invoker failed\",\"target\":{},\"attempt\":{attempt},\"error\":{}}}",
        crate::environ::zap_timestamp(),
        serde_json::Value::from(target),
        serde_json::Value::from(error)
    );
}

/// `http://host:port` for an endpoint given with or without a scheme.
pub fn endpoint_url(ep: &str) -> String {
    if ep.contains("://") {
        ep.to_owned()
    } else {
        format!("http://{ep}")
    }
}

/// Whether clientv3 would dial this endpoint with TLS, and its `host:port`.
fn split_endpoint(cfg: &ClientConfig, ep: &str) -> (bool, String) {
    if let Some(rest) = ep
        .strip_prefix("https://")
        .or_else(|| ep.strip_prefix("unixs://"))
    {
        return (true, rest.to_owned());
    }
    if let Some((_, rest)) = ep.split_once("://") {
        return (false, rest.to_owned());
    }
    (cfg.tls.is_some(), ep.to_owned())
}

fn endpoint(cfg: &ClientConfig, authority: &str) -> Result<Endpoint, CtlError> {
    Ok(Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| CtlError::new(ExitCode::BadConnection, e.to_string()))?
        .connect_timeout(cfg.dial_timeout)
        .http2_keep_alive_interval(cfg.keepalive_time.max(MIN_KEEPALIVE_TIME))
        .keep_alive_timeout(cfg.keepalive_timeout))
}

/// One channel over the endpoints: plain ones balanced by tonic, TLS ones
/// through our connector (which fails over between them in order).
fn channel(cfg: &ClientConfig, endpoints: &[String]) -> Result<Channel, CtlError> {
    let mut plain = Vec::new();
    let mut secure = Vec::new();
    for ep in endpoints {
        match split_endpoint(cfg, ep) {
            (true, authority) => secure.push(authority),
            (false, authority) => plain.push(endpoint(cfg, &authority)?),
        }
    }
    if let Some(first) = secure.first() {
        let settings = cfg.tls.clone().unwrap_or_default();
        let config = crate::tls::client_config(&settings)?;
        let addresses = secure
            .iter()
            .map(|a| crate::tls::host_port(a))
            .collect::<Result<Vec<_>, _>>()?;
        let connector =
            crate::tls::TlsConnector::new(addresses, config, settings.server_name.as_deref());
        return Ok(endpoint(cfg, first)?.connect_with_connector_lazy(connector));
    }
    match plain.len() {
        0 => Err(CtlError::new(ExitCode::BadConnection, "no endpoints given")),
        1 => Ok(plain.remove(0).connect_lazy()),
        _ => Ok(Channel::balance_list(plain.into_iter())),
    }
}

impl Client {
    /// Builds a (lazily connecting) client over all configured endpoints and
    /// authenticates if credentials were given.
    pub async fn connect(cfg: &ClientConfig) -> Result<Self, CtlError> {
        Self::connect_to(cfg, &cfg.endpoints).await
    }

    /// A client for exactly these endpoints (e.g. one per `endpoint status` row).
    pub async fn connect_to(cfg: &ClientConfig, endpoints: &[String]) -> Result<Self, CtlError> {
        cfg.prelude.emit()?;
        let channel = channel(cfg, endpoints)?;
        let mut client = Self {
            channel,
            command_timeout: cfg.command_timeout,
            token: None,
            target: log_target(endpoints).into(),
        };
        if let Some((user, password)) = &cfg.credentials {
            let req = pb::AuthenticateRequest {
                name: user.clone(),
                password: password.clone(),
            };
            let authenticated = client
                .call(Retry::Repeatable, req, |c, r| async move {
                    pb::auth_client::AuthClient::new(c)
                        .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                        .authenticate(r)
                        .await
                })
                .await;
            let resp = match authenticated {
                Ok(resp) => resp,
                // clientv3.New ignores ErrAuthNotEnabled: the credentials are not needed.
                Err(e) if e.message == AUTH_NOT_ENABLED => return Ok(client),
                // clientv3.New fails, and etcdctl exits with ExitBadConnection.
                Err(e) => return Err(CtlError::new(ExitCode::BadConnection, e.message)),
            };
            let token = resp.token.parse().map_err(|_| {
                CtlError::new(
                    ExitCode::BadConnection,
                    "server returned an invalid auth token",
                )
            })?;
            client.token = Some(token);
        }
        Ok(client)
    }

    /// Sends one unary request within the command timeout, retrying as clientv3 does.
    pub async fn call<T, R, F, Fut>(&self, retry: Retry, msg: T, send: F) -> Result<R, CtlError>
    where
        T: Clone + prost::Message,
        F: Fn(Channel, tonic::Request<T>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        match tokio::time::timeout(
            self.command_timeout,
            self.call_no_deadline(retry, msg, send),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(CtlError::error("context deadline exceeded")),
        }
    }

    /// [`Client::call`] with no deadline, as clientv3 under
    /// `context.Background()` (`check perf`'s and `check datascale`'s puts).
    pub async fn call_no_deadline<T, R, F, Fut>(
        &self,
        retry: Retry,
        msg: T,
        send: F,
    ) -> Result<R, CtlError>
    where
        T: Clone + prost::Message,
        F: Fn(Channel, tonic::Request<T>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        check_send_size(&msg)?;
        let mut attempt = 0;
        loop {
            match send(self.channel.clone(), self.request(msg.clone())).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(status) => {
                    self.log_failure(attempt, &status);
                    if !should_retry(retry, &status) {
                        return Err(CtlError::error(status_message(&status)));
                    }
                    attempt += 1;
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
            }
        }
    }

    /// Sends one request with no deadline, as clientv3 does under a context
    /// that never ends: while no endpoint answers, or the server says it is
    /// unavailable (no leader yet after a restart), wait and send it again.
    /// For callers whose requests are safe to repeat (make-mirror's reads and
    /// its puts and deletes of mirrored keys).
    pub async fn call_until_done<T, R, F, Fut>(&self, msg: T, send: F) -> Result<R, CtlError>
    where
        T: Clone + prost::Message,
        F: Fn(Channel, tonic::Request<T>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        check_send_size(&msg)?;
        let mut backoff = RETRY_BACKOFF;
        let mut attempt = 0;
        loop {
            match send(self.channel.clone(), self.request(msg.clone())).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(status) => {
                    self.log_failure(attempt, &status);
                    if !should_retry(Retry::Repeatable, &status) {
                        return Err(CtlError::error(status_message(&status)));
                    }
                    attempt += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
                }
            }
        }
    }

    /// Logs a failed attempt as clientv3 does. A connection that could not be made is not
    /// logged: clientv3 dials before its first call and waits for the connection there, so
    /// its calls do not meet that failure.
    fn log_failure(&self, attempt: u32, status: &tonic::Status) {
        if !is_connection_error(status) && !is_dropped_connection(status) {
            log_failed_attempt(&self.target, attempt, status);
        }
    }

    /// Wraps a message, attaching the auth token.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(token) = &self.token {
            req.metadata_mut().insert("token", token.clone());
        }
        req
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Opens a watch stream that asks for `create` and sends nothing more (the request
    /// side stays open, as a watch stream's must).
    pub async fn open_watch(
        &self,
        create: pb::WatchCreateRequest,
    ) -> Result<tonic::Streaming<pb::WatchResponse>, tonic::Status> {
        use tokio_stream::StreamExt as _;
        let first = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
        };
        let requests = tokio_stream::iter(vec![first]).chain(tokio_stream::pending());
        Ok(pb::watch_client::WatchClient::new(self.channel())
            .max_decoding_message_size(MAX_RECV_MSG_SIZE)
            .watch(self.request(requests))
            .await?
            .into_inner())
    }

    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }
}

/// A status produced locally because no connection could be made (refused,
/// TLS handshake failed, plaintext to a TLS port) rather than by a server.
fn is_connection_error(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable => !status.message().starts_with("etcdserver: "),
        tonic::Code::Unknown => status.message().starts_with("transport error"),
        // The peer does not speak HTTP/2 (a TLS port answering plain text): grpc-go
        // keeps reconnecting until the deadline, as for a refused connection.
        tonic::Code::Internal => status.message().starts_with("h2 protocol error"),
        _ => false,
    }
}

/// A connection dropped mid-request (e.g. a TLS peer refusing our certificate after the
/// handshake).
fn is_dropped_connection(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Cancelled && status.message() == "operation was canceled"
}

fn should_retry(retry: Retry, status: &tonic::Status) -> bool {
    match retry {
        // A dropped connection is only safe to retry for reads.
        Retry::Repeatable => {
            status.code() == tonic::Code::Unavailable
                || is_connection_error(status)
                || is_dropped_connection(status)
        }
        Retry::NonRepeatable => is_connection_error(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_a_scheme() {
        assert_eq!(endpoint_url("127.0.0.1:2379"), "http://127.0.0.1:2379");
        assert_eq!(endpoint_url("http://h:1"), "http://h:1");
    }

    #[test]
    fn requests_over_two_mebibytes_are_refused_as_grpc_go_does() {
        let small = pb::PutRequest {
            key: b"k".to_vec(),
            value: vec![b'x'; 1000],
            ..Default::default()
        };
        assert!(check_send_size(&small).is_ok());
        let big = pb::PutRequest {
            key: b"big".to_vec(),
            value: vec![b'x'; 2_200_000],
            ..Default::default()
        };
        assert_eq!(
            check_send_size(&big).err().map(|e| e.message),
            Some(
                "rpc error: code = ResourceExhausted desc = trying to send message larger than max (2200010 vs. 2097152)"
                    .to_owned()
            )
        );
    }

    #[test]
    fn writes_do_not_retry_server_unavailability() {
        let no_leader = tonic::Status::unavailable("etcdserver: no leader");
        assert!(should_retry(Retry::Repeatable, &no_leader));
        assert!(!should_retry(Retry::NonRepeatable, &no_leader));
        let refused = tonic::Status::unavailable("tcp connect error");
        assert!(should_retry(Retry::NonRepeatable, &refused));
        let handshake = tonic::Status::unknown("transport error");
        assert!(should_retry(Retry::NonRepeatable, &handshake));
        let not_found = tonic::Status::not_found("etcdserver: requested lease not found");
        assert!(!should_retry(Retry::Repeatable, &not_found));
    }
}
