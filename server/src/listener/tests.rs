//! Listener tests over real sockets on 127.0.0.1.

use std::sync::Arc;

use axum::routing::get;
use concord_proto::concordpb::peer_client::PeerClient;
use concord_proto::concordpb::{MemberInfoRequest, MemberInfoResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::*;
use crate::config::TlsSettings;
use crate::tls::tests::TestPki;
use crate::tls::{self, AutoTls, TlsConfigs};
use crate::transport::{self, PeerTransport};

fn url(text: &str) -> Url {
    Url::parse(text).unwrap()
}

/// A gRPC service to call: the peer service answering MemberInfo.
fn member_info_routes() -> Routes {
    let (inbound, _) = std::sync::mpsc::channel();
    let transport = PeerTransport::new(7, 99, None, inbound);
    Routes::new(transport.service(|| MemberInfoResponse {
        cluster_id: 99,
        member_id: 7,
        name: "m7".into(),
        ..Default::default()
    }))
}

/// An HTTP router that reports what it knows about the connection.
fn http_routes() -> axum::Router {
    axum::Router::new()
        .route("/health", get(|| async { r#"{"health":"true"}"# }))
        .route(
            "/whoami",
            get(|info: axum::Extension<ConnectionInfo>| async move {
                info.common_name().unwrap_or_else(|| "anonymous".into())
            }),
        )
}

/// Sends one HTTP/1.1 request on `stream` and returns the whole response text.
async fn http1_get<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8(response).unwrap()
}

async fn member_info(channel: tonic::transport::Channel) -> MemberInfoResponse {
    PeerClient::new(channel)
        .member_info(MemberInfoRequest {})
        .await
        .unwrap()
        .into_inner()
}

struct Served {
    url: Url,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<()>>,
}

async fn serve_both(scheme: &str, tls: Option<Arc<ServerConfig>>) -> Served {
    let bound = bind(&url(&format!("{scheme}://127.0.0.1:0")))
        .await
        .unwrap();
    let url = bound.bound_url();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_combined(
        bound,
        tls,
        member_info_routes(),
        http_routes(),
        HttpOptions::default(),
        async {
            let _ = stopped.await;
        },
    ));
    Served { url, stop, task }
}

#[tokio::test]
async fn a_taken_port_fails_at_bind_time_with_etcds_text() {
    let first = bind(&url("http://127.0.0.1:0")).await.unwrap();
    let error = bind(&first.bound_url()).await.unwrap_err();
    let expected = format!(
        "listen tcp 127.0.0.1:{}: bind: address already in use",
        first.local_addr().port()
    );
    assert_eq!(error.to_string(), expected);
}

#[tokio::test]
async fn localhost_is_resolved_to_ipv4_and_other_schemes_are_refused() {
    let bound = bind(&url("http://localhost:0")).await.unwrap();
    assert_eq!(bound.local_addr().ip().to_string(), "127.0.0.1");
    assert_eq!(bound.bound_url().host_str(), Some("localhost"));
    assert!(matches!(
        bind(&url("ftp://localhost:2379")).await,
        Err(NetError::Url { .. })
    ));
}

#[tokio::test]
async fn unix_sockets_serve_http_and_remove_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("member.sock");
    // A stale file from a previous run is replaced, as etcd does.
    std::fs::write(&path, b"stale").unwrap();
    let socket_url = url(&format!("unix://{}", path.display()));
    let bound = bind(&socket_url).await.unwrap();
    assert_eq!(bound.bound_url(), socket_url);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_combined(
        bound,
        None,
        member_info_routes(),
        http_routes(),
        HttpOptions::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    let response = http1_get(stream, "/health").await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(!path.exists(), "the socket file is removed on close");
}

#[tokio::test]
async fn grpc_and_http1_share_one_plain_port() {
    let served = serve_both("http", None).await;
    let channel = transport::connect(&served.url, None).await.unwrap();
    let info = member_info(channel).await;
    assert_eq!((info.member_id, info.name.as_str()), (7, "m7"));

    let tcp = TcpStream::connect(served.url.socket_addrs(|| None).unwrap()[0])
        .await
        .unwrap();
    let response = http1_get(tcp, "/health").await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with(r#"{"health":"true"}"#), "{response}");

    let tcp = TcpStream::connect(served.url.socket_addrs(|| None).unwrap()[0])
        .await
        .unwrap();
    let response = http1_get(tcp, "/no-such-page").await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");

    served.stop.send(()).unwrap();
    served.task.await.unwrap().unwrap();
    // The port is closed once serving returned.
    assert!(
        TcpStream::connect(served.url.socket_addrs(|| None).unwrap()[0])
            .await
            .is_err()
    );
}

fn auto_tls_configs(dir: &std::path::Path) -> TlsConfigs {
    let settings = TlsSettings {
        auto_tls: true,
        ..Default::default()
    };
    let auto = AutoTls {
        dir: dir.to_path_buf(),
        hosts: vec!["127.0.0.1".into()],
        validity_years: 1,
    };
    tls::build(&settings, &auto).unwrap().unwrap()
}

/// A TLS client stream speaking HTTP/1.1 (ALPN), trusting whatever `client` trusts.
async fn tls_http1_stream(
    client: &Arc<rustls::ClientConfig>,
    url: &Url,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut config = rustls::ClientConfig::clone(client);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(url.socket_addrs(|| None).unwrap()[0])
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

#[tokio::test]
async fn grpc_and_http1_share_one_tls_port() {
    let dir = tempfile::tempdir().unwrap();
    let configs = auto_tls_configs(dir.path());
    let served = serve_both("https", Some(configs.server.clone())).await;

    let channel = transport::connect(&served.url, Some(configs.client.clone()))
        .await
        .unwrap();
    assert_eq!(member_info(channel).await.cluster_id, 99);

    let stream = tls_http1_stream(&configs.client, &served.url).await;
    let response = http1_get(stream, "/whoami").await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("anonymous"), "{response}");

    // Plain text on the TLS port gets no answer.
    let tcp = TcpStream::connect(served.url.socket_addrs(|| None).unwrap()[0])
        .await
        .unwrap();
    let response = http1_get(tcp, "/health").await;
    assert!(!response.contains("200 OK"));

    served.stop.send(()).unwrap();
    served.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn requests_see_the_client_certificate_common_name() {
    let pki = TestPki::new();
    let server_leaf = pki.leaf("server", "server", &["127.0.0.1"], 1);
    let server = tls::build(&pki.settings(&server_leaf, true), &AutoTls::default())
        .unwrap()
        .unwrap();
    let client_leaf = pki.leaf("client", "alice", &["client.example"], 2);
    let client = tls::build(&pki.settings(&client_leaf, false), &AutoTls::default())
        .unwrap()
        .unwrap();
    let served = serve_both("https", Some(server.server.clone())).await;

    let stream = tls_http1_stream(&client.client, &served.url).await;
    let response = http1_get(stream, "/whoami").await;
    assert!(response.ends_with("alice"), "{response}");

    served.stop.send(()).unwrap();
    served.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn serve_grpc_serves_a_tonic_router_until_shutdown() {
    let bound = bind(&url("http://127.0.0.1:0")).await.unwrap();
    let url = bound.bound_url();
    let (inbound, _) = std::sync::mpsc::channel();
    let transport = PeerTransport::new(3, 4, None, inbound);
    let router =
        tonic::transport::Server::builder().add_service(transport.service(|| MemberInfoResponse {
            member_id: 3,
            ..Default::default()
        }));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_grpc(bound, None, router, async {
        let _ = stopped.await;
    }));
    let channel = transport::connect(&url, None).await.unwrap();
    assert_eq!(member_info(channel.clone()).await.member_id, 3);
    drop(channel);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn drain_timeout_closes_connections_that_stay_open() {
    let bound = bind(&url("http://127.0.0.1:0")).await.unwrap();
    let addr = bound.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let (entered_tx, mut entered) = tokio::sync::mpsc::unbounded_channel::<()>();
    let slow = axum::Router::new().route(
        "/forever",
        get(move || {
            let entered = entered_tx.clone();
            async move {
                let _ = entered.send(());
                std::future::pending::<()>().await;
                "never"
            }
        }),
    );
    let options = HttpOptions {
        drain_timeout: Duration::from_millis(200),
        ..HttpOptions::default()
    };
    let task = tokio::spawn(serve_combined(
        bound,
        None,
        Routes::default(),
        slow,
        options,
        async {
            let _ = stopped.await;
        },
    ));
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /forever HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    // Wait until the handler has the request (it never answers): the drain timeout, not
    // a connection closed before its request was read, is what ends the serving.
    tokio::time::timeout(Duration::from_secs(30), entered.recv())
        .await
        .expect("the request reaches its handler")
        .expect("the handler was entered");
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serving ends after the drain timeout")
        .unwrap()
        .unwrap();
    let mut rest = Vec::new();
    tcp.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "the request got no response");
}
