//! Listeners: bind a listen URL at start-up (so "address already in use" is reported
//! before the member starts), then serve it, with TLS when a rustls `ServerConfig` is
//! given.
//!
//! - [`serve_grpc`] serves a tonic [`Router`] (the peer port).
//! - [`serve_combined`] serves gRPC and plain HTTP on one port, as etcd does on its client
//!   port: requests with content type `application/grpc...` go to tonic's [`Routes`],
//!   everything else to an axum [`axum::Router`]. HTTP/1.1 and HTTP/2 are both accepted;
//!   HTTP/2 requests pass through [`AuthorityFix`] first (etcd clients' `:authority`).
//!
//! Every request carries a [`ConnectionInfo`] extension (addresses and the client's TLS
//! certificate chain, e.g. for etcd's CN-based authentication).
//!
//! ```no_run
//! # async fn run() -> Result<(), concord_server::transport::NetError> {
//! use concord_server::listener::{self, HttpOptions};
//!
//! let url = url::Url::parse("http://127.0.0.1:2379").unwrap();
//! let bound = listener::bind(&url).await?; // fails now if the port is taken
//! let grpc = tonic::service::Routes::default();
//! let http = axum::Router::new().route("/health", axum::routing::get(|| async { "ok" }));
//! listener::serve_combined(bound, None, grpc, http, HttpOptions::default(), std::future::pending())
//!     .await
//! # }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::Routes;
use tonic::transport::server::{Connected, Router};
use tower::ServiceExt as _;
use tracing::{debug, warn};
use url::Url;

use crate::h2_authority::AuthorityFix;
use crate::stream_tasks::{self, ConnectionExecutor};
use crate::transport::{NetError, Result};

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after an accept error such as "too many open files", so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// A socket bound to a listen URL, not yet serving.
#[derive(Debug)]
pub struct BoundListener {
    socket: Socket,
    url: Url,
    local_addr: SocketAddr,
}

/// The listening socket: TCP, or a Unix domain socket for `unix://` / `unixs://` URLs.
#[derive(Debug)]
enum Socket {
    Tcp(TcpListener),
    Unix {
        listener: UnixListener,
        path: PathBuf,
    },
}

impl Socket {
    async fn accept(&self) -> io::Result<(RawStream, SocketAddr)> {
        match self {
            Socket::Tcp(listener) => {
                let (stream, remote_addr) = listener.accept().await?;
                // Raft heartbeats and small RPCs must not wait for Nagle.
                let _ = stream.set_nodelay(true);
                Ok((RawStream::Tcp(stream), remote_addr))
            }
            Socket::Unix { listener, .. } => {
                let (stream, _) = listener.accept().await?;
                Ok((RawStream::Unix(stream), UNIX_PLACEHOLDER_ADDR))
            }
        }
    }
}

impl Drop for Socket {
    /// Go removes a Unix socket's file when its listener closes; so do we.
    fn drop(&mut self) {
        if let Socket::Unix { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The "address" of both ends of a Unix socket connection in [`ConnectionInfo`].
const UNIX_PLACEHOLDER_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

impl BoundListener {
    /// The address actually bound (useful with port 0); `0.0.0.0:0` for Unix sockets.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL this listener was bound for.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The URL with the bound port filled in (e.g. `http://127.0.0.1:0` → the real port).
    pub fn bound_url(&self) -> Url {
        let mut url = self.url.clone();
        if let Socket::Tcp(_) = self.socket {
            // Only fails for URLs that cannot have a port, which `bind` already refused.
            let _ = url.set_port(Some(self.local_addr.port()));
        }
        url
    }
}

/// Binds a listen URL. For `http`/`https`, host names (e.g. `localhost`) are resolved and
/// the first address is bound, IPv4 first, as Go does. For `unix`/`unixs`, the socket
/// file is `host[:port][path]` as etcd builds it (`unix://localhost:2379` is the file
/// `localhost:2379` in the working directory); a stale file is replaced.
pub async fn bind(url: &Url) -> Result<BoundListener> {
    let bad = |reason: &str| NetError::Url {
        url: url.to_string(),
        reason: reason.into(),
    };
    match url.scheme() {
        "http" | "https" => {}
        "unix" | "unixs" => return bind_unix(url),
        _ => return Err(bad("listen URLs must be http, https, unix or unixs")),
    }
    let host = url.host_str().ok_or_else(|| bad("missing host"))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| bad("missing port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let shown = format!("{}:{port}", url.host_str().unwrap_or(host));
    let mut candidates: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| NetError::Bind {
            addr: shown.clone(),
            reason: e.to_string(),
        })?
        .collect();
    candidates.sort_by_key(|addr| !addr.is_ipv4());
    let addr = *candidates
        .first()
        .ok_or_else(|| bad("host resolves to no address"))?;
    let listener = TcpListener::bind(addr).await.map_err(|e| NetError::Bind {
        addr: shown.clone(),
        reason: go_error_text(&e),
    })?;
    let local_addr = listener.local_addr().map_err(|source| NetError::Io {
        context: format!("local address of {shown}"),
        source,
    })?;
    Ok(BoundListener {
        socket: Socket::Tcp(listener),
        url: url.clone(),
        local_addr,
    })
}

fn bind_unix(url: &Url) -> Result<BoundListener> {
    let mut path = url.host_str().unwrap_or_default().to_string();
    if let Some(port) = url.port() {
        path.push_str(&format!(":{port}"));
    }
    path.push_str(url.path());
    if path.is_empty() {
        return Err(NetError::Url {
            url: url.to_string(),
            reason: "missing socket path".into(),
        });
    }
    let path = PathBuf::from(path);
    // etcd removes a leftover socket file before listening.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|e| NetError::Bind {
        addr: path.display().to_string(),
        reason: go_error_text(&e),
    })?;
    Ok(BoundListener {
        socket: Socket::Unix { listener, path },
        url: url.clone(),
        local_addr: UNIX_PLACEHOLDER_ADDR,
    })
}

/// The wording Go's syscall errors have, which etcd users and scripts know.
fn go_error_text(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::AddrInUse => "address already in use".into(),
        io::ErrorKind::AddrNotAvailable => "cannot assign requested address".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => error.to_string(),
    }
}

/// What a request knows about its connection; found in every request's extensions
/// (`request.extensions().get::<ConnectionInfo>()`).
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    pub local_addr: SocketAddr,
    pub remote_addr: SocketAddr,
    /// The client's certificate chain (leaf first) when it presented one over TLS.
    pub peer_certificates: Option<Arc<[CertificateDer<'static>]>>,
}

impl ConnectionInfo {
    /// The common name of the client's certificate, if any (etcd authenticates a client
    /// by it when client-cert-auth is on and no token is sent).
    pub fn common_name(&self) -> Option<String> {
        let leaf = self.peer_certificates.as_ref()?.first()?;
        crate::tls::certificate_common_name(leaf)
    }
}

/// One accepted connection, after the TLS handshake if TLS is on.
pub struct AcceptedStream {
    io: StreamKind,
    info: ConnectionInfo,
}

enum StreamKind {
    Plain(RawStream),
    Tls(Box<TlsStream<RawStream>>),
}

/// An accepted socket before TLS.
enum RawStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl RawStream {
    /// Whether the client's first byte is a TLS handshake record's (0x16), read
    /// without taking it; a client silent past the handshake timeout counts as TLS
    /// (the handshake then times out). A Unix socket is taken as TLS.
    async fn opens_with_tls(&self) -> bool {
        const TLS_HANDSHAKE_RECORD: u8 = 0x16;
        let RawStream::Tcp(tcp) = self else {
            return true;
        };
        let mut first = [0u8; 1];
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await {
            Ok(Ok(1)) => first[0] == TLS_HANDSHAKE_RECORD,
            _ => true,
        }
    }
}

impl AcceptedStream {
    /// What the connection's requests will see as [`ConnectionInfo`].
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }
}

impl Connected for AcceptedStream {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

/// Implements tokio's `AsyncRead` and `AsyncWrite` for an enum by delegating to the
/// variant's stream (every variant holds an `Unpin` stream, or a box of one).
macro_rules! delegate_io {
    ($type:ty, $($variant:path),+) => {
        impl AsyncRead for $type {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($variant(stream) => Pin::new(&mut *stream).poll_read(cx, buf),)+
                }
            }
        }

        impl AsyncWrite for $type {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $($variant(stream) => Pin::new(&mut *stream).poll_write(cx, buf),)+
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $($variant(stream) => Pin::new(&mut *stream).poll_write_vectored(cx, bufs),)+
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    $($variant(stream) => stream.is_write_vectored(),)+
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($variant(stream) => Pin::new(&mut *stream).poll_flush(cx),)+
                }
            }

            fn poll_shutdown(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($variant(stream) => Pin::new(&mut *stream).poll_shutdown(cx),)+
                }
            }
        }
    };
}

delegate_io!(RawStream, RawStream::Tcp, RawStream::Unix);
delegate_io!(StreamKind, StreamKind::Plain, StreamKind::Tls);

impl AsyncRead for AcceptedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for AcceptedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Finishes accepting `tcp`: the TLS handshake when `tls` is set. `None` (logged) when the
/// client fails the handshake or takes too long.
async fn establish(
    tcp: RawStream,
    remote_addr: SocketAddr,
    local_addr: SocketAddr,
    tls: Option<TlsAcceptor>,
) -> Option<AcceptedStream> {
    let Some(acceptor) = tls else {
        return Some(AcceptedStream {
            io: StreamKind::Plain(tcp),
            info: ConnectionInfo {
                local_addr,
                remote_addr,
                peer_certificates: None,
            },
        });
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            let peer_certificates = stream
                .get_ref()
                .1
                .peer_certificates()
                .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect());
            Some(AcceptedStream {
                io: StreamKind::Tls(Box::new(stream)),
                info: ConnectionInfo {
                    local_addr,
                    remote_addr,
                    peer_certificates,
                },
            })
        }
        Ok(Err(error)) => {
            // etcd logs rejected handshakes too ("rejected connection from ...").
            warn!(%remote_addr, %error, "rejected connection: TLS handshake failed");
            None
        }
        Err(_) => {
            warn!(%remote_addr, "rejected connection: TLS handshake timed out");
            None
        }
    }
}

/// Accepts connections until `ready` is closed, handshaking each on its own task so one
/// slow client cannot hold up the others.
async fn accept_into(
    listener: Socket,
    local_addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    ready: mpsc::Sender<AcceptedStream>,
) {
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            _ = ready.closed() => return,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote_addr)) => {
                    let tls = tls.clone();
                    let ready = ready.clone();
                    handshakes.spawn(async move {
                        if let Some(stream) = establish(tcp, remote_addr, local_addr, tls).await {
                            let _ = ready.send(stream).await;
                        }
                    });
                }
                Err(error) => {
                    warn!(%local_addr, %error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
}

/// Serves a tonic router on `listener` until `shutdown` completes, then drains the
/// connections (tonic's graceful shutdown). tonic's own `Server` settings (keepalive,
/// stream limits, message sizes) apply; its TCP settings do not.
pub async fn serve_grpc<F>(
    listener: BoundListener,
    tls: Option<Arc<ServerConfig>>,
    router: Router,
    shutdown: F,
) -> Result<()>
where
    F: Future<Output = ()>,
{
    let (ready_tx, ready_rx) = mpsc::channel(64);
    let acceptor = tls.map(TlsAcceptor::from);
    let BoundListener {
        socket, local_addr, ..
    } = listener;
    let accept_task = tokio::spawn(accept_into(socket, local_addr, acceptor, ready_tx));
    let incoming = ReceiverStream::new(ready_rx).map(Ok::<_, io::Error>);
    let served = router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    // Dropping the incoming stream already stopped the accept loop; make sure of it.
    accept_task.abort();
    Ok(served?)
}

/// HTTP settings of [`serve_combined`].
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// HTTP/2 concurrent streams per connection (`--max-concurrent-streams`).
    pub max_concurrent_streams: Option<u32>,
    /// Interval of HTTP/2 keepalive pings (`--grpc-keepalive-interval`); `None` disables.
    pub keepalive_interval: Option<Duration>,
    /// How long to wait for a ping's answer (`--grpc-keepalive-timeout`).
    pub keepalive_timeout: Duration,
    /// After shutdown, how long open requests (watches, streams) may take to finish
    /// before their connections are closed.
    pub drain_timeout: Duration,
    /// With TLS set, a TCP connection that does not open with a TLS handshake is
    /// served in the clear: etcd serves an `http` and an `https` URL of the same
    /// address from one listener.
    pub plain_too: bool,
}

impl Default for HttpOptions {
    /// etcd's defaults: unlimited streams, pings every 2 h, 20 s ping timeout.
    fn default() -> Self {
        Self {
            // hyper would otherwise cap a connection at 200 streams; etcd allows 2^32 - 1.
            max_concurrent_streams: Some(u32::MAX),
            keepalive_interval: Some(Duration::from_secs(2 * 60 * 60)),
            keepalive_timeout: Duration::from_secs(20),
            drain_timeout: Duration::from_secs(5),
            plain_too: false,
        }
    }
}

/// True for gRPC requests (`content-type: application/grpc`, `application/grpc+proto`, ...).
fn is_grpc<B>(request: &http::Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"))
}

/// Routes one request to tonic or axum, adding the connection's info to it.
async fn route(
    grpc: Routes,
    http: axum::Router,
    info: ConnectionInfo,
    mut request: http::Request<Incoming>,
) -> std::result::Result<http::Response<axum::body::Body>, Infallible> {
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(info.remote_addr));
    request
        .extensions_mut()
        .insert(tonic::transport::server::TcpConnectInfo {
            local_addr: Some(info.local_addr),
            remote_addr: Some(info.remote_addr),
        });
    request.extensions_mut().insert(info);
    if is_grpc(&request) {
        let response = grpc.oneshot(request).await?;
        Ok(response.map(axum::body::Body::new))
    } else {
        http.oneshot(request).await
    }
}

/// [`serve_combined`] with default [`HttpOptions`]; without an HTTP router, non-gRPC
/// requests get 404. Never fails once bound (accept errors are logged), so it returns
/// nothing and can be spawned as is.
pub async fn serve<F>(
    listener: BoundListener,
    tls: Option<Arc<ServerConfig>>,
    grpc: Routes,
    http: Option<axum::Router>,
    shutdown: F,
) where
    F: Future<Output = ()>,
{
    serve_with(listener, tls, grpc, http, HttpOptions::default(), shutdown).await;
}

/// [`serve`] with the given [`HttpOptions`].
pub async fn serve_with<F>(
    listener: BoundListener,
    tls: Option<Arc<ServerConfig>>,
    grpc: Routes,
    http: Option<axum::Router>,
    options: HttpOptions,
    shutdown: F,
) where
    F: Future<Output = ()>,
{
    let local_addr = listener.local_addr;
    let http = http.unwrap_or_default();
    if let Err(error) = serve_combined(listener, tls, grpc, http, options, shutdown).await {
        warn!(%local_addr, %error, "listener stopped");
    }
}

/// Serves gRPC and HTTP (1.1 and 2, over TLS when `tls` is set) on one listener until
/// `shutdown` completes; then stops accepting, lets open requests finish for at most
/// `options.drain_timeout` and closes what is left.
pub async fn serve_combined<F>(
    listener: BoundListener,
    tls: Option<Arc<ServerConfig>>,
    grpc: Routes,
    http: axum::Router,
    options: HttpOptions,
    shutdown: F,
) -> Result<()>
where
    F: Future<Output = ()>,
{
    let grpc = grpc.prepare();
    let acceptor = tls.map(TlsAcceptor::from);
    let local_addr = listener.local_addr;
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.socket.accept() => {
                let (tcp, remote_addr) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        warn!(%local_addr, %error, "accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                let watcher = graceful.watcher();
                let acceptor = acceptor.clone();
                let options = options.clone();
                let (grpc, http) = (grpc.clone(), http.clone());
                connections.spawn(async move {
                    let acceptor = if options.plain_too && !tcp.opens_with_tls().await {
                        None
                    } else {
                        acceptor
                    };
                    let Some(stream) = establish(tcp, remote_addr, local_addr, acceptor).await
                    else {
                        return;
                    };
                    let info = stream.info.clone();
                    let service = hyper::service::service_fn(move |request| {
                        route(grpc.clone(), http.clone(), info.clone(), request)
                    });
                    // etcd's Go clients may send `:authority: http://host:port`, which
                    // h2 refuses; the shim repairs their header blocks before hyper.
                    let stream = AuthorityFix::new(stream);
                    let executor = ConnectionExecutor::default();
                    let mut builder = auto::Builder::new(executor.clone());
                    builder
                        .http2()
                        .timer(TokioTimer::new())
                        .max_concurrent_streams(options.max_concurrent_streams)
                        .keep_alive_interval(options.keepalive_interval)
                        .keep_alive_timeout(options.keepalive_timeout);
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    let serving = stream_tasks::drive(watcher.watch(connection), executor);
                    if let Err(error) = serving.await {
                        debug!(%remote_addr, %error, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(options.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        debug!(%local_addr, "drain timeout: closing the remaining connections");
    }
    connections.shutdown().await;
    Ok(())
}

mod in_process;
pub use in_process::{InProcessCall, InProcessTarget, in_process_channel};

#[cfg(test)]
mod tests;
