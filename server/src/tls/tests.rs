//! Tests of TLS configuration: certificate loading, auto TLS, client-certificate checks.
//! Handshakes run in memory between rustls connections, so no sockets are involved.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConnection};

use super::*;

/// A test CA that signs leaf certificates, everything written to PEM files in a temp dir.
pub(crate) struct TestPki {
    pub dir: tempfile::TempDir,
    ca_cert: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

/// Paths of one leaf certificate and its key.
pub(crate) struct LeafFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestPki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "concord test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        Self {
            dir,
            ca_cert,
            ca_key,
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A leaf for server and client auth with common name `cn`, SANs `sans` and `serial`.
    pub fn leaf(&self, name: &str, cn: &str, sans: &[&str], serial: u64) -> LeafFiles {
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        let files = LeafFiles {
            cert: self.dir.path().join(format!("{name}.pem")),
            key: self.dir.path().join(format!("{name}-key.pem")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    /// A CRL revoking the certificates with these serial numbers.
    pub fn crl(&self, revoked_serials: &[u64]) -> PathBuf {
        let params = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(4000, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked_serials
                .iter()
                .map(|&serial| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(serial),
                    revocation_time: rcgen::date_time_ymd(2024, 1, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.ca_cert, &self.ca_key).unwrap();
        let path = self.dir.path().join("crl.pem");
        std::fs::write(&path, crl.pem().unwrap()).unwrap();
        path
    }

    /// Settings using `leaf` with this CA as trusted CA.
    pub fn settings(&self, leaf: &LeafFiles, client_cert_auth: bool) -> TlsSettings {
        TlsSettings {
            cert_file: Some(leaf.cert.clone()),
            key_file: Some(leaf.key.clone()),
            trusted_ca_file: Some(self.ca_file()),
            client_cert_auth,
            ..Default::default()
        }
    }
}

fn no_auto() -> AutoTls {
    AutoTls::default()
}

fn build_configs(settings: &TlsSettings) -> TlsConfigs {
    build(settings, &no_auto()).unwrap().unwrap()
}

/// Runs a TLS handshake (plus one application byte from the client, so a server that
/// refuses the client's certificate in TLS 1.3 has spoken) between two in-memory
/// connections. Returns the first error either side reports.
fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    server_name: &str,
) -> std::result::Result<(), rustls::Error> {
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    let mut client = rustls::Connection::Client(ClientConnection::new(client, name)?);
    let mut server = rustls::Connection::Server(ServerConnection::new(server)?);
    std::io::Write::write_all(&mut client.writer(), b"x").unwrap();
    for _round in 0..20 {
        let moved_to_server = pump(&mut client, &mut server)?;
        let moved_to_client = pump(&mut server, &mut client)?;
        if moved_to_server + moved_to_client == 0 {
            break;
        }
    }
    if client.is_handshaking() || server.is_handshaking() {
        return Err(rustls::Error::General("handshake did not finish".into()));
    }
    let mut received = [0u8; 1];
    std::io::Read::read_exact(&mut server.reader(), &mut received)
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    assert_eq!(&received, b"x");
    Ok(())
}

/// Moves every pending TLS byte from `from` to `to`; returns how many moved.
fn pump(
    from: &mut rustls::Connection,
    to: &mut rustls::Connection,
) -> std::result::Result<usize, rustls::Error> {
    let mut bytes = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut bytes).unwrap();
    }
    let mut remaining = bytes.as_slice();
    while !remaining.is_empty() {
        to.read_tls(&mut remaining).unwrap();
        to.process_new_packets()?;
    }
    Ok(bytes.len())
}

#[test]
fn civil_dates() {
    assert_eq!(civil_date(0), (1970, 1, 1));
    assert_eq!(civil_date(951_782_400), (2000, 2, 29));
    assert_eq!(civil_date(1_700_000_000), (2023, 11, 14));
    assert_eq!(civil_date(4_102_444_799), (2099, 12, 31));
}

#[test]
fn hosts_lose_their_ports() {
    assert_eq!(host_without_port("10.0.0.1:2380"), "10.0.0.1");
    assert_eq!(host_without_port("example.com"), "example.com");
    assert_eq!(host_without_port("[::1]:2380"), "::1");
    assert_eq!(host_without_port("::1"), "::1");
}

#[test]
fn common_name_is_read_from_the_subject() {
    let mut params = rcgen::CertificateParams::new(vec!["m1.example".to_string()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "org");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "member-1");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let parsed = webpki::EndEntityCert::try_from(cert.der()).unwrap();
    assert_eq!(common_name(parsed.subject()), Some(&b"member-1"[..]));
    assert_eq!(common_name(&[0x31, 0x05, 0x30]), None, "truncated DER");
}

#[test]
fn tls_is_off_without_certificates_or_auto_tls() {
    assert!(
        build(&TlsSettings::default(), &no_auto())
            .unwrap()
            .is_none()
    );
}

#[test]
fn missing_and_empty_files_are_reported_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let settings = TlsSettings {
        cert_file: Some(empty.clone()),
        key_file: Some(dir.path().join("absent.pem")),
        ..Default::default()
    };
    let error = build(&settings, &no_auto()).unwrap_err().to_string();
    assert!(
        error.contains("empty.pem") && error.contains("no certificate"),
        "{error}"
    );
}

#[test]
fn client_cert_auth_without_ca_is_refused() {
    let pki = TestPki::new();
    let leaf = pki.leaf("server", "server", &["localhost"], 10);
    let mut settings = pki.settings(&leaf, true);
    settings.trusted_ca_file = None;
    assert!(matches!(
        build(&settings, &no_auto()),
        Err(NetError::TlsSettings(_))
    ));
}

fn auto_settings() -> TlsSettings {
    TlsSettings {
        auto_tls: true,
        ..Default::default()
    }
}

fn auto_in(dir: &Path) -> AutoTls {
    AutoTls {
        dir: dir.join("fixtures").join("peer"),
        hosts: vec!["10.1.2.3".into(), "member.example:2380".into()],
        validity_years: 1,
    }
}

#[test]
fn auto_tls_writes_a_certificate_and_reuses_it() {
    let data_dir = tempfile::tempdir().unwrap();
    let auto = auto_in(data_dir.path());
    let first = build(&auto_settings(), &auto).unwrap().unwrap();
    let cert_path = auto.dir.join("cert.pem");
    let cert_pem = std::fs::read(&cert_path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(auto.dir.join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // The certificate names the hosts plus localhost.
    let certs = load_certs(&cert_path).unwrap();
    let parsed = webpki::EndEntityCert::try_from(&certs[0]).unwrap();
    for name in ["10.1.2.3", "member.example", "localhost", "127.0.0.1"] {
        let name = ServerName::try_from(name).unwrap();
        assert!(parsed.verify_is_valid_for_subject_name(&name).is_ok());
    }

    let second = build(&auto_settings(), &auto).unwrap().unwrap();
    assert_eq!(
        std::fs::read(&cert_path).unwrap(),
        cert_pem,
        "reused on restart"
    );
    // Two auto-TLS members trust each other without a CA.
    handshake(first.client.clone(), second.server.clone(), "10.1.2.3").unwrap();
    assert_eq!(
        first.server.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    assert_eq!(first.client.alpn_protocols, vec![b"h2".to_vec()]);
}

#[test]
fn given_certificates_win_over_auto_tls() {
    let pki = TestPki::new();
    let leaf = pki.leaf("server", "server", &["localhost"], 10);
    let data_dir = tempfile::tempdir().unwrap();
    let auto = auto_in(data_dir.path());
    let mut settings = pki.settings(&leaf, false);
    settings.auto_tls = true;
    build(&settings, &auto).unwrap().unwrap();
    assert!(!auto.dir.exists(), "no self-signed certificate generated");
}

#[test]
fn ca_signed_certificates_verify_and_strangers_do_not() {
    let pki = TestPki::new();
    let server = build_configs(&pki.settings(
        &pki.leaf("server", "server", &["localhost", "127.0.0.1"], 10),
        true,
    ));
    let good = build_configs(&pki.settings(&pki.leaf("good", "good", &["localhost"], 11), false));
    handshake(good.client.clone(), server.server.clone(), "localhost").unwrap();
    handshake(good.client.clone(), server.server.clone(), "127.0.0.1").unwrap();

    // The client checks the server's name.
    assert!(handshake(good.client.clone(), server.server.clone(), "other.example").is_err());

    // A client with a certificate from another CA is refused by the server.
    let stranger_pki = TestPki::new();
    let stranger_leaf = stranger_pki.leaf("stranger", "stranger", &["localhost"], 12);
    let mut stranger_settings = stranger_pki.settings(&stranger_leaf, false);
    stranger_settings.trusted_ca_file = Some(pki.ca_file());
    let stranger = build_configs(&stranger_settings);
    let error = handshake(stranger.client.clone(), server.server.clone(), "localhost").unwrap_err();
    assert!(
        matches!(error, rustls::Error::InvalidCertificate(_)),
        "{error:?}"
    );

    // An auto-TLS client (self-signed) is refused too.
    let data_dir = tempfile::tempdir().unwrap();
    let auto = build(&auto_settings(), &auto_in(data_dir.path()))
        .unwrap()
        .unwrap();
    assert!(handshake(auto.client.clone(), server.server.clone(), "localhost").is_err());

    // Without client-cert-auth, the same stranger is let in.
    let open = build_configs(&pki.settings(&pki.leaf("open", "open", &["localhost"], 13), false));
    handshake(stranger.client.clone(), open.server.clone(), "localhost").unwrap();
}

#[test]
fn allowed_common_name_is_enforced() {
    let pki = TestPki::new();
    let mut settings = pki.settings(&pki.leaf("server", "server", &["localhost"], 10), true);
    settings.allowed_cn = Some("member".into());
    let server = build_configs(&settings);
    let member = build_configs(&pki.settings(&pki.leaf("m", "member", &["m.example"], 11), false));
    let other = build_configs(&pki.settings(&pki.leaf("o", "intruder", &["member"], 12), false));
    handshake(member.client.clone(), server.server.clone(), "localhost").unwrap();
    let error = handshake(other.client.clone(), server.server.clone(), "localhost").unwrap_err();
    // Refused as Go's TLS refuses it: a bad_certificate alert to the client.
    assert_eq!(
        error,
        rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
    );
}

#[test]
fn tls_failures_read_as_gos() {
    let alert = rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate);
    assert_eq!(
        go_tls_error_text(&alert).as_deref(),
        Some("remote error: tls: bad certificate")
    );
    // Wrapped in an I/O error, as tokio-rustls passes it on.
    let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, alert.clone());
    assert_eq!(
        go_tls_error_text(&wrapped).as_deref(),
        Some("remote error: tls: bad certificate")
    );
    // Only its text left, as h2 passes I/O errors on.
    let text = std::io::Error::other(alert.to_string());
    assert_eq!(
        go_tls_error_text(&text).as_deref(),
        Some("remote error: tls: bad certificate")
    );
    let unknown_ca = rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA);
    assert_eq!(
        go_tls_error_text(&unknown_ca).as_deref(),
        Some("remote error: tls: unknown certificate authority")
    );
    assert_eq!(go_tls_error_text(&std::io::Error::other("reset")), None);
}

#[test]
fn allowed_hostname_is_checked_against_the_sans() {
    let pki = TestPki::new();
    let mut settings = pki.settings(&pki.leaf("server", "server", &["localhost"], 10), true);
    settings.allowed_hostname = Some("m1.example".into());
    let server = build_configs(&settings);
    let member = build_configs(&pki.settings(&pki.leaf("m", "x", &["m1.example"], 11), false));
    let other =
        build_configs(&pki.settings(&pki.leaf("o", "m1.example", &["m2.example"], 12), false));
    handshake(member.client.clone(), server.server.clone(), "localhost").unwrap();
    assert!(handshake(other.client.clone(), server.server.clone(), "localhost").is_err());

    settings.allowed_cn = Some("x".into());
    assert!(matches!(
        build(&settings, &no_auto()),
        Err(NetError::TlsSettings(_))
    ));
}

#[test]
fn revoked_client_certificates_are_refused() {
    let pki = TestPki::new();
    let mut settings = pki.settings(&pki.leaf("server", "server", &["localhost"], 10), true);
    settings.crl_file = Some(pki.crl(&[66]));
    let server = build_configs(&settings);
    let fine = build_configs(&pki.settings(&pki.leaf("fine", "fine", &["a"], 65), false));
    let revoked = build_configs(&pki.settings(&pki.leaf("revoked", "revoked", &["b"], 66), false));
    handshake(fine.client.clone(), server.server.clone(), "localhost").unwrap();
    let error = handshake(revoked.client.clone(), server.server.clone(), "localhost").unwrap_err();
    assert_eq!(
        error,
        rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)
    );
}

#[test]
fn cipher_suites_limit_tls12_and_unknown_names_are_refused() {
    let data_dir = tempfile::tempdir().unwrap();
    let auto = auto_in(data_dir.path());
    let error = build_with_cipher_suites(&auto_settings(), &auto, &["TLS_BOGUS".into()])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(r#"unexpected TLS cipher suite "TLS_BOGUS""#),
        "{error}"
    );

    let only = [
        "TLS_RSA_WITH_AES_128_CBC_SHA".to_string(), // known to Go, skipped here
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305".to_string(),
    ];
    let server = build_with_cipher_suites(&auto_settings(), &auto, &only)
        .unwrap()
        .unwrap();
    // A TLS 1.2-only client offering every suite gets the one allowed.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCertificate { provider }))
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let mut client =
        rustls::Connection::Client(ClientConnection::new(Arc::new(client), name).unwrap());
    let mut server_connection =
        rustls::Connection::Server(ServerConnection::new(server.server.clone()).unwrap());
    for _round in 0..10 {
        pump(&mut client, &mut server_connection).unwrap();
        pump(&mut server_connection, &mut client).unwrap();
    }
    let negotiated = client.negotiated_cipher_suite().unwrap().suite();
    assert_eq!(
        negotiated,
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
    );
    // TLS 1.3 stays available.
    handshake(server.client.clone(), server.server.clone(), "localhost").unwrap();
}
