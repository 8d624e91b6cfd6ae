//! Test certificates: a CA, a server certificate and a client certificate (PEM files in a
//! temporary directory), for members that serve clients over TLS.
//!
//! ```no_run
//! let tls = concord_tests::tls::TlsFiles::generate().unwrap();
//! // etcd --cert-file <tls.server_cert> --key-file <tls.server_key> ...
//! // etcdctl --cacert <tls.ca> --cert <tls.client_cert> --key <tls.client_key> ...
//! # let _ = tls;
//! ```

use std::path::Path;

use anyhow::{Context, Result};

/// PEM files of a test CA, a server certificate and a client certificate (common name
/// `root`, the name etcd's `--client-cert-auth` takes as the user), written to a
/// temporary directory that lives as long as this value.
pub struct TlsFiles {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
    dir: tempfile::TempDir,
}

impl TlsFiles {
    /// Certificates for `localhost` and 127.0.0.1.
    pub fn generate() -> Result<TlsFiles> {
        Self::generate_for(&["localhost"], true)
    }

    /// Certificates naming only these DNS names (and 127.0.0.1 if `loopback_ip`).
    pub fn generate_for(names: &[&str], loopback_ip: bool) -> Result<TlsFiles> {
        let dir = tempfile::tempdir()?;
        let write = |name: &str, pem: String| -> Result<String> {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).with_context(|| format!("write {}", path.display()))?;
            Ok(path.to_string_lossy().into_owned())
        };
        let ca = TestCa::new("concord test CA")?;
        let (server_cert, server_key) = ca.leaf(
            "server",
            names,
            loopback_ip,
            &[rcgen::ExtendedKeyUsagePurpose::ServerAuth],
        )?;
        let (client_cert, client_key) = ca.leaf(
            "root",
            names,
            loopback_ip,
            &[rcgen::ExtendedKeyUsagePurpose::ClientAuth],
        )?;
        Ok(TlsFiles {
            ca: write("ca.pem", ca.pem())?,
            server_cert: write("server.pem", server_cert)?,
            server_key: write("server-key.pem", server_key)?,
            client_cert: write("client.pem", client_cert)?,
            client_key: write("client-key.pem", client_key)?,
            dir,
        })
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A self-signed test CA and its key, signing leaf certificates.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    pub fn new(common_name: &str) -> Result<TestCa> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(TestCa { cert, key })
    }

    /// The CA's certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate signed by this CA for `dns_names` (and 127.0.0.1 if `loopback_ip`),
    /// with this common name and these extended key usages: (certificate, key), PEM.
    pub fn leaf(
        &self,
        common_name: &str,
        dns_names: &[&str],
        loopback_ip: bool,
        usages: &[rcgen::ExtendedKeyUsagePurpose],
    ) -> Result<(String, String)> {
        let names: Vec<String> = dns_names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names)?;
        if loopback_ip {
            params
                .subject_alt_names
                .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        }
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.extended_key_usages = usages.to_vec();
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// A gRPC channel to `127.0.0.1:port` over TLS, checking the server as `localhost`
/// against `dir/ca.crt` and presenting `dir/<identity>.crt` with its key (mutual TLS:
/// a client certificate's common name, or a peer's certificate).
pub async fn mutual_tls_channel(
    port: u16,
    dir: &Path,
    identity: &str,
) -> Result<tonic::transport::Channel> {
    let pem = |name: String| std::fs::read(dir.join(name));
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem("ca.crt".into())?.as_slice()) {
        roots.add(cert?)?;
    }
    let chain = rustls_pemfile::certs(&mut pem(format!("{identity}.crt"))?.as_slice())
        .collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut pem(format!("{identity}.key"))?.as_slice())?
        .ok_or_else(|| anyhow::anyhow!("no key in {identity}.key"))?;
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let connect = tower::service_fn(move |_: http::Uri| {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            let name = rustls::pki_types::ServerName::try_from("localhost")
                .map_err(std::io::Error::other)?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://localhost:{port}"))?
            .connect_with_connector(connect)
            .await?,
    )
}
