//! The v2 HTTP client, as etcd's Go `client` package behaves for etcdctl v2:
//! endpoints tried in order from the pinned one (a failed endpoint passes the
//! request to the next; a one-shot write stops at the first failure), 5xx
//! answers counted as a member without a leader, a per-request header timeout
//! (`--timeout`, not for long polls), basic auth, `--debug`'s cURL lines,
//! and the cluster sync through `/v2/members`. HTTP/1.1 over hyper, TLS over
//! rustls.

use crate::error::CtlError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// What the client says when no endpoint answers, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// Every endpoint failed: Go's `ClusterError`.
    Cluster(Vec<String>),
    /// The command's deadline passed.
    DeadlineExceeded,
    /// `client: no endpoints available`.
    NoEndpoints,
    /// Anything else, by its Go text.
    Other(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cluster(errors) => {
                write!(f, "client: etcd cluster is unavailable or misconfigured")?;
                for (i, e) in errors.iter().enumerate() {
                    writeln!(f, "; error #{i}: {e}")?;
                }
                Ok(())
            }
            Self::DeadlineExceeded => write!(f, "context deadline exceeded"),
            Self::NoEndpoints => write!(f, "client: no endpoints available"),
            Self::Other(text) => write!(f, "{text}"),
        }
    }
}

impl ClientError {
    /// `ClusterError.Detail()`, printed after the error by etcdctl.
    pub fn detail(&self) -> Option<String> {
        match self {
            Self::Cluster(errors) => Some(
                errors
                    .iter()
                    .enumerate()
                    .map(|(i, e)| format!("error #{i}: {e}\n"))
                    .collect(),
            ),
            _ => None,
        }
    }

    /// Whether etcdctl counts it as a connection error (its `isConnectionError`).
    pub fn is_connection_error(&self) -> bool {
        match self {
            Self::Cluster(errors) => errors.iter().all(|e| e.starts_with("dial tcp ")),
            Self::DeadlineExceeded => true,
            _ => false,
        }
    }
}

/// An answer: status, the headers etcdctl reads, and the body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub index: Option<u64>,
    pub body: Vec<u8>,
}

/// One request, as the Go client's actions build it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: &'static str,
    /// Path (already escaped) and query.
    pub target: String,
    pub body: Option<(Vec<u8>, &'static str)>,
    /// Writes that must not be sent twice (`create`, delete).
    pub one_shot: bool,
    /// A long poll: no header timeout.
    pub wait: bool,
}

impl Request {
    pub fn new(method: &'static str, target: String) -> Self {
        Self {
            method,
            target,
            body: None,
            one_shot: false,
            wait: false,
        }
    }

    pub fn form(mut self, body: String) -> Self {
        self.body = Some((body.into_bytes(), "application/x-www-form-urlencoded"));
        self
    }

    pub fn json(mut self, body: String) -> Self {
        self.body = Some((body.into_bytes(), "application/json"));
        self
    }
}

/// The client's settings.
#[derive(Debug, Clone)]
pub struct Client {
    endpoints: Vec<String>,
    pinned: usize,
    tls: Option<Arc<rustls::ClientConfig>>,
    server_name: Option<String>,
    header_timeout: Duration,
    dial_timeout: Duration,
    credentials: Option<(String, String)>,
    debug: bool,
}

impl Client {
    pub fn new(
        endpoints: Vec<String>,
        tls: Option<Arc<rustls::ClientConfig>>,
        server_name: Option<String>,
        header_timeout: Duration,
        dial_timeout: Duration,
        credentials: Option<(String, String)>,
    ) -> Self {
        Self {
            endpoints,
            pinned: 0,
            tls,
            server_name,
            header_timeout,
            dial_timeout,
            credentials,
            debug: false,
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    pub fn tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.tls.clone()
    }

    pub fn set_debug(&mut self, debug: bool) {
        self.debug = debug;
    }

    /// Replaces the endpoints with the members' client URLs (`Client.Sync`).
    pub async fn sync(&mut self) -> Result<(), ClientError> {
        let reply = self
            .send(&Request::new("GET", "/v2/members".to_owned()))
            .await?;
        if reply.status != 200 {
            return Err(ClientError::Other(format!(
                "unexpected status code {}",
                reply.status
            )));
        }
        let members = parse_members(&reply.body)?;
        let urls: Vec<String> = members.into_iter().flat_map(|m| m.client_urls).collect();
        if urls.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        self.endpoints = urls;
        self.pinned = 0;
        Ok(())
    }

    /// Sends the request to the endpoints in turn (`httpClusterClient.Do`).
    pub async fn send(&mut self, request: &Request) -> Result<Reply, ClientError> {
        if self.endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let count = self.endpoints.len();
        let mut errors = Vec::new();
        for i in self.pinned..self.pinned + count {
            let k = i % count;
            let endpoint = self.endpoints[k].clone();
            let outcome = match self.send_to(&endpoint, request).await {
                Ok(reply) if reply.status / 100 == 5 => {
                    let text = match reply.status {
                        500 | 503 => format!("client: etcd member {endpoint} has no leader"),
                        code => format!(
                            "client: etcd member {endpoint} returns server error [{}]",
                            status_text(code)
                        ),
                    };
                    errors.push(text);
                    Err(ClientError::Other(errors[0].clone()))
                }
                Ok(reply) => Ok(reply),
                Err(e) => {
                    errors.push(e.clone());
                    Err(ClientError::Other(e))
                }
            };
            match outcome {
                Ok(reply) => {
                    self.pinned = k;
                    return Ok(reply);
                }
                Err(e) if request.one_shot => {
                    self.pinned = (k + 1) % count;
                    return Err(e);
                }
                Err(_) => {}
            }
        }
        Err(ClientError::Cluster(errors))
    }

    async fn send_to(&self, endpoint: &str, request: &Request) -> Result<Reply, String> {
        let url = format!("{}{}", endpoint.trim_end_matches('/'), request.target);
        if self.debug {
            let mut line = format!("cURL Command: curl -X {} {url}", request.method);
            if let Some((body, _)) = &request.body {
                line.push_str(&format!(
                    " -d {}",
                    super::flags::go_quote(&String::from_utf8_lossy(body))
                ));
            }
            eprintln!("{line}");
        }
        let (secure, authority) = match endpoint.split_once("://") {
            Some(("https", rest)) => (true, rest),
            Some(("http", rest)) => (false, rest),
            _ => {
                let scheme = endpoint.split(':').next().unwrap_or_default();
                return Err(format!("unsupported protocol scheme \"{scheme}\""));
            }
        };
        let authority = authority.split('/').next().unwrap_or(authority).to_owned();
        let (host, port) = crate::tls::host_port(&authority).map_err(|e| e.message)?;
        let dial = format!("dial tcp {authority}");
        let tcp =
            tokio::time::timeout(self.dial_timeout, TcpStream::connect((host.as_str(), port)))
                .await
                .map_err(|_| format!("{dial}: i/o timeout"))?
                .map_err(|e| format!("{dial}: {}", go_dial_error(&e)))?;
        let _ = tcp.set_nodelay(true);
        let mut builder = http::Request::builder()
            .method(request.method)
            .uri(request.target.as_str())
            .header(http::header::HOST, authority.as_str())
            .header(http::header::USER_AGENT, "Go-http-client/1.1");
        if let Some((user, password)) = &self.credentials {
            use base64::Engine as _;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            builder = builder.header(http::header::AUTHORIZATION, format!("Basic {token}"));
        }
        let body = match &request.body {
            Some((bytes, content_type)) => {
                builder = builder.header(http::header::CONTENT_TYPE, *content_type);
                Full::new(Bytes::from(bytes.clone()))
            }
            None => Full::new(Bytes::new()),
        };
        let http_request = builder.body(body).map_err(|e| e.to_string())?;
        let exchange = async {
            if secure {
                let config = self
                    .tls
                    .clone()
                    .ok_or_else(|| "tls: no configuration".to_owned())?;
                let name = crate::tls::verified_name(self.server_name.as_deref(), &host)
                    .map_err(|e| e.to_string())?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("remote error: {e}"))?;
                round_trip(TokioIo::new(stream), http_request).await
            } else {
                round_trip(TokioIo::new(tcp), http_request).await
            }
        };
        let (status, headers, body) = if request.wait || self.header_timeout.is_zero() {
            exchange.await?
        } else {
            tokio::time::timeout(self.header_timeout, exchange)
                .await
                .map_err(|_| format!("client: endpoint {endpoint} exceeded header timeout"))??
        };
        let index = headers
            .get("X-Etcd-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Reply {
            status,
            index,
            body: body.to_vec(),
        })
    }
}

type Head = (u16, http::HeaderMap, hyper::body::Incoming);

async fn round_trip<S>(io: TokioIo<S>, request: http::Request<Full<Bytes>>) -> Result<Head, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("EOF ({e})"))?;
    let status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    Ok((status, parts.headers, body))
}

/// Go's text for a failed dial.
fn go_dial_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_owned(),
        _ => {
            let text = e.to_string();
            let text = match text.find(" (os error") {
                Some(i) => &text[..i],
                None => &text,
            };
            format!("connect: {}", text.to_lowercase())
        }
    }
}

/// Go's `http.StatusText` for the 5xx codes.
fn status_text(code: u16) -> &'static str {
    match code {
        501 => "Not Implemented",
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// A member as `/v2/members` lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

fn strings(v: &serde_json::Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub fn parse_member(v: &serde_json::Value) -> Member {
    let text = |key: &str| {
        v.get(key)
            .and_then(|s| s.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    Member {
        id: text("id"),
        name: text("name"),
        peer_urls: strings(v, "peerURLs"),
        client_urls: strings(v, "clientURLs"),
    }
}

/// `{"members": [...]}`.
pub fn parse_members(body: &[u8]) -> Result<Vec<Member>, ClientError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ClientError::Other(e.to_string()))?;
    Ok(v.get("members")
        .and_then(|m| m.as_array())
        .map(|a| a.iter().map(parse_member).collect())
        .unwrap_or_default())
}

/// The TLS configuration etcdctl v2 builds from `--ca-file`, `--cert-file`
/// and `--key-file` (HTTP/1.1 by ALPN).
pub fn tls_config(
    ca: Option<&str>,
    cert: Option<&str>,
    key: Option<&str>,
) -> Result<Arc<rustls::ClientConfig>, CtlError> {
    let settings = crate::tls::TlsSettings {
        cacert: ca.map(str::to_owned),
        cert: cert.map(str::to_owned),
        key: key.map(str::to_owned),
        insecure_skip_verify: false,
        server_name: None,
    };
    let config = crate::tls::client_config(&settings)?;
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Go's `path.Clean` as `pathutil.CanonicalURLPath` uses it: a leading `/`,
/// `.`/`..`/`//` resolved, a trailing `/` kept.
pub fn canonical_path(p: &str) -> String {
    let p = if p.starts_with('/') {
        p.to_owned()
    } else {
        format!("/{p}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let mut clean = format!("/{}", parts.join("/"));
    if p.ends_with('/') && clean != "/" {
        clean.push('/');
    }
    clean
}

/// Go's `url.PathEscape`-like escaping of a URL path (`URL.EscapedPath`).
pub fn escape_path(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_'
                    | b'.'
                    | b'~'
                    | b'$'
                    | b'&'
                    | b'+'
                    | b','
                    | b'/'
                    | b':'
                    | b';'
                    | b'='
                    | b'@'
            );
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Go's `url.QueryEscape`.
pub fn query_escape(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Go's `url.Values.Encode`: sorted by key, query-escaped.
pub fn encode_query(pairs: &[(&str, String)]) -> String {
    let mut pairs: Vec<&(&str, String)> = pairs.iter().collect();
    pairs.sort_by_key(|(k, _)| *k);
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths() {
        assert_eq!(canonical_path("foo"), "/foo");
        assert_eq!(canonical_path("/a//b/../c/"), "/a/c/");
        assert_eq!(canonical_path(""), "/");
        assert_eq!(escape_path("/v2/keys/a b!"), "/v2/keys/a%20b%21");
    }

    #[test]
    fn cluster_errors_print_as_go() {
        let e = ClientError::Cluster(vec![
            "dial tcp 127.0.0.1:1: connect: connection refused".into(),
        ]);
        assert_eq!(
            e.to_string(),
            "client: etcd cluster is unavailable or misconfigured; error #0: dial tcp 127.0.0.1:1: connect: connection refused\n"
        );
        assert!(e.is_connection_error());
        assert_eq!(
            encode_query(&[("wait", "true".into()), ("recursive", "false".into())]),
            "recursive=false&wait=true"
        );
    }
}
