//! Client TLS (`--cacert`, `--cert`, `--key`, `--insecure-skip-tls-verify`,
//! `--insecure-transport=false`), with clientv3's rule for which endpoints use
//! it: `https://` always, `http://` never, scheme-less ones when TLS is
//! configured. With `--discovery-srv` and `--insecure-discovery=false`, the
//! SRV domain is the name every server certificate is checked against
//! (etcdctl's `secureCfg.serverName`, which becomes `tls.Config.ServerName`),
//! not the host of each discovered endpoint.

use crate::error::{CtlError, ExitCode};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Where etcdctl (Go) finds the system's CA bundle on Debian.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// TLS flags.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    pub cacert: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub insecure_skip_verify: bool,
    /// The name server certificates must carry, in place of each endpoint's
    /// host: the `--discovery-srv` domain under secure discovery.
    pub server_name: Option<String>,
}

/// etcdctl configures TLS when a CA or client certificate or a server name
/// is given, or when `--insecure-transport=false` asks for a secure
/// connection anyway (empty values count as not given).
pub fn settings(
    cacert: Option<&str>,
    cert: Option<&str>,
    key: Option<&str>,
    server_name: Option<&str>,
    insecure_transport: bool,
    insecure_skip_verify: bool,
) -> Option<TlsSettings> {
    let keep = |v: Option<&str>| v.filter(|s| !s.is_empty()).map(str::to_owned);
    let (cacert, cert, key, server_name) = (keep(cacert), keep(cert), keep(key), keep(server_name));
    if cacert.is_none()
        && cert.is_none()
        && key.is_none()
        && server_name.is_none()
        && insecure_transport
    {
        return None;
    }
    Some(TlsSettings {
        cacert,
        cert,
        key,
        insecure_skip_verify,
        server_name,
    })
}

/// Go's text for a failed file operation (`no such file or directory`).
fn go_io_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_lowercase(),
                None => text,
            }
        }
    }
}

/// Unusable TLS files: etcdctl fails building its client configuration,
/// with ExitBadArgs.
fn bad_files(message: String) -> CtlError {
    CtlError::new(ExitCode::BadArgs, message)
}

fn bad_connection(message: String) -> CtlError {
    CtlError::new(ExitCode::BadConnection, message)
}

fn read_pem(path: &str) -> Result<Vec<u8>, CtlError> {
    std::fs::read(path).map_err(|e| bad_files(format!("open {path}: {}", go_io_error(&e))))
}

/// Builds the rustls configuration (HTTP/2 via ALPN) from the flags.
pub fn client_config(settings: &TlsSettings) -> Result<Arc<rustls::ClientConfig>, CtlError> {
    if settings.cert.is_some() != settings.key.is_some() {
        // Go's TLSInfo checks the pair before reading any file.
        return Err(bad_files(format!(
            "KeyFile and CertFile must both be present[key: {}, cert: {}]",
            settings.key.as_deref().unwrap_or_default(),
            settings.cert.as_deref().unwrap_or_default()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad_connection(e.to_string()))?;
    let builder = if settings.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let bundle = match &settings.cacert {
            Some(path) => read_pem(path)?,
            None => std::fs::read(SYSTEM_CA_BUNDLE).unwrap_or_default(),
        };
        for cert in rustls_pemfile::certs(&mut bundle.as_slice()) {
            let cert = cert.map_err(|e| bad_connection(format!("bad CA certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| bad_connection(format!("bad CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let webpki =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.clone(), provider)
                .build()
                .map_err(|e| bad_connection(format!("bad CA certificate: {e}")))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(TrustedCertificateAsServer {
                inner: webpki,
                roots,
            }))
    };
    let mut config = match (&settings.cert, &settings.key) {
        (Some(cert), Some(key)) => {
            let certs = rustls_pemfile::certs(&mut read_pem(cert)?.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad_files(format!("bad client certificate: {e}")))?;
            if certs.is_empty() {
                return Err(bad_files(
                    "tls: failed to find any PEM data in certificate input".to_owned(),
                ));
            }
            let key = rustls_pemfile::private_key(&mut read_pem(key)?.as_slice())
                .map_err(|e| bad_files(format!("bad client key: {e}")))?
                .ok_or_else(|| {
                    bad_files("tls: failed to find any PEM data in key input".to_owned())
                })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| bad_files(e.to_string()))?
        }
        (None, None) => builder.with_no_client_auth(),
        (cert, key) => {
            // Go's TLSInfo: the key and certificate come as a pair.
            return Err(bad_files(format!(
                "KeyFile and CertFile must both be present[key: {}, cert: {}]",
                key.as_deref().unwrap_or_default(),
                cert.as_deref().unwrap_or_default()
            )));
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// `--insecure-skip-tls-verify`: accept any server certificate (signatures
/// are still checked so the handshake itself is sound).
#[derive(Debug)]
struct AcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Accepts, besides what the WebPKI verifier accepts, a server certificate that is
/// itself one of the trusted CA certificates and names the server, as Go's
/// `x509.Verify` does (a leaf found in the roots pool is a chain of its own). etcd's
/// `CommonName-root.crt` fixture is CA, server and client certificate at once; WebPKI
/// refuses any CA certificate as an end entity, so concordctl could not connect where
/// etcdctl does.
#[derive(Debug)]
struct TrustedCertificateAsServer {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    roots: Arc<rustls::RootCertStore>,
}

impl TrustedCertificateAsServer {
    /// Whether WebPKI refused `end_entity` only for being a CA certificate that is one
    /// of ours, and it is valid for `server_name`.
    fn accepts_trusted_root(
        &self,
        error: &rustls::Error,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        server_name: &rustls::pki_types::ServerName<'_>,
    ) -> bool {
        concord_server::tls::is_trusted_root_refused_as_end_entity(error, end_entity, &self.roots)
            && webpki::EndEntityCert::try_from(end_entity)
                .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(server_name).is_ok())
    }
}

impl rustls::client::danger::ServerCertVerifier for TrustedCertificateAsServer {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(error) if self.accepts_trusted_root(&error, end_entity, server_name) => {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            outcome => outcome,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A tonic connector that dials `host:port` addresses in order (failing over
/// to the next one) and wraps the connection in TLS.
#[derive(Clone)]
pub struct TlsConnector {
    addresses: Arc<Vec<(String, u16)>>,
    tls: tokio_rustls::TlsConnector,
    /// Checked against every server's certificate when set; else each host.
    server_name: Option<Arc<str>>,
}

impl TlsConnector {
    pub fn new(
        addresses: Vec<(String, u16)>,
        config: Arc<rustls::ClientConfig>,
        server_name: Option<&str>,
    ) -> Self {
        Self {
            addresses: Arc::new(addresses),
            tls: tokio_rustls::TlsConnector::from(config),
            server_name: server_name.map(Arc::from),
        }
    }
}

/// The name a server's certificate must carry: the configured server name,
/// else the host dialled (Go's `tls.Config.ServerName` over the authority).
pub fn verified_name(
    server_name: Option<&str>,
    host: &str,
) -> Result<rustls::pki_types::ServerName<'static>, std::io::Error> {
    rustls::pki_types::ServerName::try_from(server_name.unwrap_or(host).to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

type Connecting =
    Pin<Box<dyn Future<Output = Result<TokioIo<TlsStream<TcpStream>>, std::io::Error>> + Send>>;

impl tonic::codegen::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let addresses = self.addresses.clone();
        let tls = self.tls.clone();
        let server_name = self.server_name.clone();
        Box::pin(async move {
            let mut last_error =
                std::io::Error::new(std::io::ErrorKind::NotFound, "no endpoints to dial");
            for (host, port) in addresses.iter() {
                let attempt = async {
                    let tcp = TcpStream::connect((host.as_str(), *port)).await?;
                    tcp.set_nodelay(true)?;
                    let name = verified_name(server_name.as_deref(), host)?;
                    tls.connect(name, tcp).await
                };
                match attempt.await {
                    Ok(stream) => return Ok(TokioIo::new(stream)),
                    Err(e) => last_error = e,
                }
            }
            Err(last_error)
        })
    }
}

/// Splits `host:port` (IPv6 in brackets) from an endpoint without its scheme.
pub fn host_port(authority: &str) -> Result<(String, u16), CtlError> {
    let bad = || bad_connection(format!("invalid endpoint {authority}"));
    let authority = authority.split('/').next().unwrap_or(authority);
    let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_owned(), port.parse().map_err(|_| bad())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_handles_ipv6_and_paths() {
        assert_eq!(
            host_port("127.0.0.1:2379").unwrap(),
            ("127.0.0.1".to_owned(), 2379)
        );
        assert_eq!(host_port("[::1]:2379").unwrap(), ("::1".to_owned(), 2379));
        assert_eq!(host_port("h:1/x").unwrap(), ("h".to_owned(), 1));
        assert!(host_port("nohost").is_err());
    }

    #[test]
    fn a_server_name_alone_configures_tls_and_names_every_server() {
        let configured = settings(None, None, None, Some("example.com"), true, false);
        assert_eq!(
            configured.and_then(|s| s.server_name).as_deref(),
            Some("example.com")
        );
        // Empty values are no values.
        assert!(settings(None, Some(""), None, Some(""), true, false).is_none());
        let name = verified_name(Some("example.com"), "10.0.0.1").unwrap();
        assert_eq!(name.to_str(), "example.com");
        let name = verified_name(None, "localhost").unwrap();
        assert_eq!(name.to_str(), "localhost");
    }

    #[test]
    fn missing_ca_file_is_a_usage_error() {
        let settings = TlsSettings {
            cacert: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let e = client_config(&settings).unwrap_err();
        assert_eq!(e.code, ExitCode::BadArgs);
        assert_eq!(
            e.message,
            "open /nonexistent/ca.pem: no such file or directory"
        );
    }
}
