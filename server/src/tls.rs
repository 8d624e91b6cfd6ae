//! TLS for clients and peers: rustls server and client configurations built from etcd's
//! TLS flags ([`TlsSettings`]).
//!
//! - Certificates, keys, CAs and CRLs are read from PEM files.
//! - `client_cert_auth` requires and verifies client certificates against the trusted CA,
//!   with etcd's optional `allowed_cn` / `allowed_hostname` check on the client's
//!   certificate (`--peer-cert-allowed-cn`, `--peer-cert-allowed-hostname`).
//! - Auto TLS (`--auto-tls`, `--peer-auto-tls`) generates a self-signed certificate under
//!   `<data-dir>/fixtures/{client,peer}` and reuses it on restart, as etcd does. A client
//!   using an auto-TLS identity does not verify the server's certificate chain (etcd's
//!   `InsecureSkipVerify`), but still checks the handshake signatures.
//! - Both sides negotiate ALPN `h2` (gRPC); servers also offer `http/1.1`.
//!
//! ```no_run
//! use concord_server::config::TlsSettings;
//! use concord_server::tls::{self, AutoTls};
//!
//! let settings = TlsSettings { auto_tls: true, ..Default::default() };
//! let auto = AutoTls {
//!     dir: "/var/lib/concord/fixtures/peer".into(),
//!     hosts: vec!["10.0.0.1".into()],
//!     validity_years: 1,
//! };
//! let configs = tls::build(&settings, &auto)?.expect("auto TLS is on");
//! // configs.server goes to the listener, configs.client to the peer transport.
//! # Ok::<(), concord_server::transport::NetError>(())
//! ```

use std::collections::BTreeSet;
use std::fs;
use std::io::BufReader;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};
use tracing::warn;
use url::Url;

use crate::config::{Config, TlsSettings};
use crate::transport::{NetError, Result};

/// ALPN protocol id of HTTP/2, which gRPC needs.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol id of HTTP/1.1, offered by servers for the HTTP endpoints.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Where auto TLS keeps its generated certificate and which names the certificate covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AutoTls {
    /// Directory of `cert.pem` and `key.pem` (`<data-dir>/fixtures/peer` or `/client`).
    pub dir: PathBuf,
    /// Host names or IP addresses for the certificate's SANs (ports are ignored);
    /// `localhost` and `127.0.0.1` are always added.
    pub hosts: Vec<String>,
    /// Validity of a newly generated certificate (`--self-signed-cert-validity`; 0 means 1).
    pub validity_years: u32,
}

impl AutoTls {
    /// The peer side: `<data-dir>/fixtures/peer`, hosts of the listen and advertised peer URLs.
    pub fn for_peers(config: &Config) -> Self {
        Self::new(
            config.data_dir.join("fixtures").join("peer"),
            config
                .listen_peer_urls
                .iter()
                .chain(&config.initial_advertise_peer_urls),
            config.self_signed_cert_validity_years,
        )
    }

    /// The client side: `<data-dir>/fixtures/client`, hosts of the listen and advertised
    /// client URLs.
    pub fn for_clients(config: &Config) -> Self {
        Self::new(
            config.data_dir.join("fixtures").join("client"),
            config
                .listen_client_urls
                .iter()
                .chain(&config.advertise_client_urls),
            config.self_signed_cert_validity_years,
        )
    }

    fn new<'a>(dir: PathBuf, urls: impl Iterator<Item = &'a Url>, validity_years: u32) -> Self {
        let hosts = urls
            .filter_map(|url| url.host_str())
            .map(|host| {
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string()
            })
            .collect();
        Self {
            dir,
            hosts,
            validity_years,
        }
    }
}

/// The two rustls configurations of one side (clients or peers).
#[derive(Clone, Debug)]
pub struct TlsConfigs {
    /// For the listener of this side.
    pub server: Arc<ServerConfig>,
    /// For outgoing connections of this side (the peer transport, or a proxy to clients).
    pub client: Arc<ClientConfig>,
}

/// Builds the server and client configurations for `settings`, or `None` when TLS is off.
/// `auto` is used only when `settings.auto_tls` is set and no certificate files are given
/// (given files win, as in etcd).
pub fn build(settings: &TlsSettings, auto: &AutoTls) -> Result<Option<TlsConfigs>> {
    build_with_cipher_suites(settings, auto, &[])
}

/// [`build`] restricted to the TLS 1.2 cipher suites named as Go names them
/// (`--cipher-suites`); TLS 1.3 suites stay enabled, as in Go. Empty means rustls's
/// defaults.
pub fn build_with_cipher_suites(
    settings: &TlsSettings,
    auto: &AutoTls,
    cipher_suites: &[String],
) -> Result<Option<TlsConfigs>> {
    if !settings.enabled() {
        return Ok(None);
    }
    let provider = Arc::new(provider_with_cipher_suites(cipher_suites)?);
    let (identity, is_auto) = match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => {
            if settings.auto_tls {
                warn!("ignoring auto TLS since certificate and key files are given");
            }
            (Identity::from_files(cert, key)?, false)
        }
        _ => (self_signed_identity(auto)?, true),
    };
    let roots = match &settings.trusted_ca_file {
        Some(path) => Some(Arc::new(load_roots(path)?)),
        None => None,
    };
    let crls = match &settings.crl_file {
        Some(path) => load_crls(path)?,
        None => Vec::new(),
    };
    if settings.allowed_cn.is_some() && settings.allowed_hostname.is_some() {
        return Err(NetError::TlsSettings(
            "cannot set both allowed CN and allowed hostname".into(),
        ));
    }

    let server = server_config(settings, &identity, roots.clone(), crls, is_auto, &provider)?;
    let client = client_config(&identity, roots, is_auto, &provider)?;
    Ok(Some(TlsConfigs {
        server: Arc::new(server),
        client: Arc::new(client),
    }))
}

/// [`build`] for the peer side of `config` (with its `--cipher-suites`).
pub fn peer_tls(config: &Config) -> Result<Option<TlsConfigs>> {
    build_with_cipher_suites(
        &config.peer_tls,
        &AutoTls::for_peers(config),
        &config.cipher_suites,
    )
}

/// [`build`] for the client side of `config` (with its `--cipher-suites`).
pub fn client_tls(config: &Config) -> Result<Option<TlsConfigs>> {
    build_with_cipher_suites(
        &config.client_tls,
        &AutoTls::for_clients(config),
        &config.cipher_suites,
    )
}

/// TLS 1.2 suites Go knows but rustls does not implement (CBC, RC4, 3DES, static RSA key
/// exchange). etcd accepts these names; Concord accepts them too and skips them.
const GO_SUITES_WITHOUT_RUSTLS: &[&str] = &[
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// The ring provider with its TLS 1.2 suites limited to `names` (Go's spelling; the
/// ChaCha20 suites with or without the `_SHA256` suffix). Unknown names are an error with
/// etcd's wording.
fn provider_with_cipher_suites(names: &[String]) -> Result<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    if names.is_empty() {
        return Ok(provider);
    }
    let mut chosen: Vec<rustls::SupportedCipherSuite> = provider
        .cipher_suites
        .iter()
        .filter(|suite| suite.version() == &rustls::version::TLS13)
        .copied()
        .collect();
    for name in names {
        let canonical = if name.ends_with("CHACHA20_POLY1305") {
            format!("{name}_SHA256")
        } else {
            name.clone()
        };
        let found = provider
            .cipher_suites
            .iter()
            .find(|suite| format!("{:?}", suite.suite()) == canonical);
        match found {
            Some(suite) if !chosen.contains(suite) => chosen.push(*suite),
            Some(_) => {}
            None if GO_SUITES_WITHOUT_RUSTLS.contains(&name.as_str()) => {
                warn!(cipher_suite = %name, "cipher suite not supported by rustls; skipped");
            }
            None => {
                return Err(NetError::TlsSettings(format!(
                    "unexpected TLS cipher suite {name:?}"
                )));
            }
        }
    }
    provider.cipher_suites = chosen;
    Ok(provider)
}

/// The peer listener's configuration (`--peer-*` flags), `None` without peer TLS.
pub fn peer_server_config(config: &Config) -> Result<Option<Arc<ServerConfig>>> {
    Ok(peer_tls(config)?.map(|configs| configs.server))
}

/// The configuration for connections to other members, `None` without peer TLS.
pub fn peer_client_config(config: &Config) -> Result<Option<Arc<ClientConfig>>> {
    Ok(peer_tls(config)?.map(|configs| configs.client))
}

/// The client listener's configuration (`--cert-file`, `--auto-tls`, ...), `None` without
/// client TLS.
pub fn client_server_config(config: &Config) -> Result<Option<Arc<ServerConfig>>> {
    Ok(client_tls(config)?.map(|configs| configs.server))
}

/// A certificate chain and its private key.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    fn from_files(cert_path: &Path, key_path: &Path) -> Result<Self> {
        let chain = load_certs(cert_path)?;
        let key = load_key(key_path)?;
        Ok(Self { chain, key })
    }
}

fn server_config(
    settings: &TlsSettings,
    identity: &Identity,
    roots: Option<Arc<RootCertStore>>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    is_auto: bool,
    provider: &Arc<CryptoProvider>,
) -> Result<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let verifier: Option<Arc<dyn ClientCertVerifier>> = match (roots, settings.client_cert_auth) {
        (Some(roots), client_cert_auth) if client_cert_auth || !crls.is_empty() => {
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
            if !crls.is_empty() {
                verifier = verifier
                    .with_crls(crls)
                    .only_check_end_entity_revocation()
                    .allow_unknown_revocation_status();
            }
            if !client_cert_auth {
                // A CRL without client-cert-auth: certificates are asked for and checked
                // (and revoked ones refused) but not required.
                verifier = verifier.allow_unauthenticated();
            }
            let verifier: Arc<dyn ClientCertVerifier> = Arc::new(TrustedCertificateAsClient {
                inner: verifier.build()?,
                roots,
            });
            let allowed = match (&settings.allowed_cn, &settings.allowed_hostname) {
                (Some(cn), _) => Some(AllowedName::CommonName(cn.clone())),
                (None, Some(host)) => Some(AllowedName::Hostname(host.clone())),
                (None, None) => None,
            };
            Some(match allowed {
                Some(allowed) => Arc::new(AllowedNameVerifier {
                    inner: verifier,
                    allowed,
                }),
                None => verifier,
            })
        }
        (None, true) if is_auto => {
            warn!("client certificate authentication is off: auto TLS has no CA to check against");
            None
        }
        (None, true) => {
            return Err(NetError::TlsSettings(
                "client-cert-auth requires a trusted CA file".into(),
            ));
        }
        _ => None,
    };
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(config)
}

fn client_config(
    identity: &Identity,
    roots: Option<Arc<RootCertStore>>,
    is_auto: bool,
    provider: &Arc<CryptoProvider>,
) -> Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match roots {
        Some(roots) => builder.with_root_certificates(roots),
        None if is_auto => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCertificate {
                provider: provider.clone(),
            })),
        None => builder.with_root_certificates(system_roots()),
    };
    let mut config =
        builder.with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// The operating system's CA bundle, for peers with certificates but no `--peer-trusted-ca-file`
/// (Go falls back to the system pool in that case).
fn system_roots() -> RootCertStore {
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/cert.pem",
            ]
            .map(PathBuf::from),
        );
    let mut roots = RootCertStore::empty();
    for path in candidates {
        if let Ok(certs) = load_certs(&path) {
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added > 0 {
                break;
            }
        }
    }
    if roots.is_empty() {
        warn!("no trusted CA file and no system CA bundle: server certificates cannot be verified");
    }
    roots
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| NetError::File {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_error(path: &Path, what: impl Into<String>) -> NetError {
    NetError::Pem {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// Every certificate in a PEM file (a chain: leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = read_file(path)?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(bytes.as_slice()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, format!("malformed PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no certificate found"));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes = read_file(path)?;
    rustls_pemfile::private_key(&mut BufReader::new(bytes.as_slice()))
        .map_err(|e| pem_error(path, format!("malformed PEM: {e}")))?
        .ok_or_else(|| pem_error(path, "no private key found"))
}

fn load_roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// CRLs from a PEM file, or the whole file as one DER CRL (Go accepts both).
fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let bytes = read_file(path)?;
    let crls = rustls_pemfile::crls(&mut BufReader::new(bytes.as_slice()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, format!("malformed PEM: {e}")))?;
    if crls.is_empty() && !bytes.is_empty() && bytes[0] == 0x30 {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    if crls.is_empty() {
        return Err(pem_error(path, "no certificate revocation list found"));
    }
    Ok(crls)
}

/// Loads `<dir>/cert.pem` and `<dir>/key.pem` if both exist, otherwise generates a
/// self-signed certificate and writes them (key readable by the owner only).
fn self_signed_identity(auto: &AutoTls) -> Result<Identity> {
    let cert_path = auto.dir.join("cert.pem");
    let key_path = auto.dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return Identity::from_files(&cert_path, &key_path);
    }
    let (cert_pem, key_pem) = generate_self_signed(&auto.hosts, auto.validity_years, now_unix())?;
    create_private_dir(&auto.dir)?;
    write_private_file(&key_path, key_pem.as_bytes())?;
    write_private_file(&cert_path, cert_pem.as_bytes())?;
    Identity::from_files(&cert_path, &key_path)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A self-signed ECDSA P-256 certificate for `hosts` (plus `localhost` and `127.0.0.1`),
/// usable for server and client authentication, valid from the day of `now_unix` for
/// `validity_years` (at least 1). Returns `(certificate PEM, private key PEM)`.
pub fn generate_self_signed(
    hosts: &[String],
    validity_years: u32,
    now_unix: u64,
) -> Result<(String, String)> {
    let mut names: BTreeSet<String> = hosts
        .iter()
        .map(|h| host_without_port(h).to_string())
        .filter(|h| !h.is_empty())
        .collect();
    names.insert("localhost".into());
    names.insert("127.0.0.1".into());

    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = names
        .iter()
        .map(|name| match name.parse::<IpAddr>() {
            Ok(ip) => Ok(rcgen::SanType::IpAddress(ip)),
            Err(_) => Ok(rcgen::SanType::DnsName(name.clone().try_into()?)),
        })
        .collect::<std::result::Result<Vec<_>, rcgen::Error>>()?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "concord");
    params.is_ca = rcgen::IsCa::NoCa;
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let (year, month, day) = civil_date(now_unix);
    let years = i32::try_from(validity_years.max(1)).unwrap_or(1);
    params.not_before = rcgen::date_time_ymd(year, month, day);
    params.not_after = rcgen::date_time_ymd(year.saturating_add(years), month, day.min(28));

    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` → the host alone.
fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        // A bare IPv6 address has several colons; only strip a port from host:port.
        Some((name, port)) if !name.contains(':') && port.parse::<u16>().is_ok() => name,
        _ => host,
    }
}

/// The UTC calendar date of a Unix timestamp (proleptic Gregorian).
fn civil_date(unix_seconds: u64) -> (i32, u8, u8) {
    // Howard Hinnant's days-to-civil algorithm.
    let days = i64::try_from(unix_seconds / 86_400).unwrap_or(0) + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (
        i32::try_from(year).unwrap_or(i32::MAX),
        u8::try_from(month).unwrap_or(1),
        u8::try_from(day).unwrap_or(1),
    )
}

fn create_private_dir(dir: &Path) -> Result<()> {
    let io_error = |source| NetError::File {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(io_error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_error)?;
    }
    Ok(())
}

/// Writes through a temporary file and a rename, so a crash never leaves half a PEM file
/// that would be reused on the next start.
fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    let io_error = |source| NetError::File {
        path: path.to_path_buf(),
        source,
    };
    let temporary = path.with_extension("pem.tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    {
        use std::io::Write;
        let mut file = options.open(&temporary).map_err(io_error)?;
        file.write_all(contents).map_err(io_error)?;
        file.sync_all().map_err(io_error)?;
    }
    fs::rename(&temporary, path).map_err(io_error)
}

/// A TLS failure somewhere in `error`'s chain, in the words Go's TLS uses (etcd's
/// logs show these, and etcd's tests look for them): an alert the other side sent is
/// "remote error: tls: <alert>". None when the chain holds no TLS error.
pub fn go_tls_error_text(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(error) = next {
        // An `io::Error` hides the error it wraps from `source()`.
        let wrapped = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        for candidate in [Some(error), wrapped].into_iter().flatten() {
            if let Some(rustls::Error::AlertReceived(alert)) =
                candidate.downcast_ref::<rustls::Error>()
            {
                return Some(format!("remote error: tls: {}", go_alert_text(*alert)));
            }
        }
        // h2 keeps only the text of the I/O errors it passes on: rustls's
        // "received fatal alert: <name>".
        if let Some(alert) = error
            .to_string()
            .split_once("received fatal alert: ")
            .and_then(|(_, name)| alert_named(name.trim()))
        {
            return Some(format!("remote error: tls: {}", go_alert_text(alert)));
        }
        next = error.source();
    }
    None
}

/// The alert whose rustls name (its `Debug`) is `name`.
fn alert_named(name: &str) -> Option<rustls::AlertDescription> {
    (0..=u8::MAX)
        .map(rustls::AlertDescription::from)
        .find(|alert| format!("{alert:?}") == name)
}

/// Go's `crypto/tls` names of the alerts a handshake can end with.
fn go_alert_text(alert: rustls::AlertDescription) -> String {
    use rustls::AlertDescription as A;
    match alert {
        A::CloseNotify => "close notify",
        A::UnexpectedMessage => "unexpected message",
        A::BadRecordMac => "bad record MAC",
        A::RecordOverflow => "record overflow",
        A::HandshakeFailure => "handshake failure",
        A::BadCertificate => "bad certificate",
        A::UnsupportedCertificate => "unsupported certificate",
        A::CertificateRevoked => "revoked certificate",
        A::CertificateExpired => "expired certificate",
        A::CertificateUnknown => "unknown certificate",
        A::IllegalParameter => "illegal parameter",
        A::UnknownCA => "unknown certificate authority",
        A::AccessDenied => "access denied",
        A::DecodeError => "error decoding message",
        A::DecryptError => "error decrypting message",
        A::ProtocolVersion => "protocol version not supported",
        A::InsufficientSecurity => "insufficient security level",
        A::InternalError => "internal error",
        A::UserCanceled => "user canceled",
        A::NoRenegotiation => "no renegotiation",
        A::MissingExtension => "missing extension",
        A::UnsupportedExtension => "unsupported extension",
        A::UnrecognisedName => "unrecognized name",
        A::CertificateRequired => "certificate required",
        A::NoApplicationProtocol => "no application protocol",
        other => return format!("alert({})", u8::from(other)),
    }
    .to_string()
}

/// The name a client certificate must carry (etcd allows one or the other).
#[derive(Clone, Debug)]
enum AllowedName {
    /// The subject's common name must equal this.
    CommonName(String),
    /// The certificate must be valid for this host name or IP address (SANs).
    Hostname(String),
}

/// Accepts, besides what the WebPKI verifier accepts, a client certificate that is
/// itself one of the trusted CA certificates, as Go's `x509.Verify` does (a leaf found
/// in the roots pool is a chain of its own). etcd's fixtures use such certificates
/// (`CommonName-root.crt` is CA, server and client at once); WebPKI refuses every CA
/// certificate as an end entity, and a client refused so never connects: etcdctl's
/// `user add`, which has no deadline, then waits for the connection forever.
#[derive(Debug)]
struct TrustedCertificateAsClient {
    inner: Arc<dyn ClientCertVerifier>,
    roots: Arc<RootCertStore>,
}

/// Whether WebPKI refused `end_entity` only because it is a CA's certificate, and that
/// certificate is itself one of `roots` (same subject and key): Go's `x509.Verify` accepts
/// such a leaf as a chain of its own, WebPKI never does. Both sides use it: the server for
/// client certificates, concordctl for server certificates (adding its name check).
///
/// WebPKI checks the validity period before it refuses a CA as an end entity, so that
/// refusal already says the certificate is current; the handshake proves the peer holds
/// its key.
pub fn is_trusted_root_refused_as_end_entity(
    error: &rustls::Error,
    end_entity: &CertificateDer<'_>,
    roots: &RootCertStore,
) -> bool {
    let refused_as_ca = match error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            matches!(
                other.0.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::CaUsedAsEndEntity)
            )
        }
        _ => false,
    };
    if !refused_as_ca {
        return false;
    }
    let Ok(anchor) = webpki::anchor_from_trusted_cert(end_entity) else {
        return false;
    };
    roots.roots.iter().any(|root| {
        root.subject.as_ref() == anchor.subject.as_ref()
            && root.subject_public_key_info.as_ref() == anchor.subject_public_key_info.as_ref()
    })
}

impl ClientCertVerifier for TrustedCertificateAsClient {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Err(error)
                if is_trusted_root_refused_as_end_entity(&error, end_entity, &self.roots) =>
            {
                Ok(ClientCertVerified::assertion())
            }
            outcome => outcome,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Wraps the WebPKI verifier and additionally checks the client's CN or host name.
#[derive(Debug)]
struct AllowedNameVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: AllowedName,
}

impl AllowedNameVerifier {
    fn name_allowed(&self, end_entity: &CertificateDer<'_>) -> bool {
        let Ok(cert) = webpki::EndEntityCert::try_from(end_entity) else {
            return false;
        };
        match &self.allowed {
            AllowedName::CommonName(cn) => {
                common_name(cert.subject()).is_some_and(|name| name == cn.as_bytes())
            }
            AllowedName::Hostname(host) => ServerName::try_from(host.as_str())
                .is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok()),
        }
    }
}

impl ClientCertVerifier for AllowedNameVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.name_allowed(end_entity) {
            Ok(verified)
        } else {
            // etcd's text for the same refusal, logged here since the handshake error
            // carries rustls's own words; the refusal is a `bad_certificate` alert, as
            // Go's TLS sends when etcd's check fails ("remote error: tls: bad
            // certificate" on the other side).
            let presented = webpki::EndEntityCert::try_from(end_entity)
                .ok()
                .and_then(|cert| common_name(cert.subject()).map(<[u8]>::to_vec))
                .map(|cn| String::from_utf8_lossy(&cn).into_owned())
                .unwrap_or_default();
            warn!(
                allowed = ?self.allowed,
                common_name = %presented,
                "rejected connection: client certificate authentication failed"
            );
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts any server certificate (auto TLS peers have no common CA) but still verifies
/// that the server holds the certificate's private key.
#[derive(Debug)]
struct AnyServerCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The subject common name of a DER certificate, if it has one in a string type.
pub fn certificate_common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    common_name(parsed.subject()).map(|name| String::from_utf8_lossy(name).into_owned())
}

/// The last common name (OID 2.5.4.3) in a DER `Name` without its outer SEQUENCE header
/// (what webpki's `subject()` returns). Go's `Subject.CommonName` also keeps the last one.
fn common_name(name: &[u8]) -> Option<&[u8]> {
    const COMMON_NAME_OID: &[u8] = &[0x55, 0x04, 0x03];
    let mut found = None;
    let mut rdns = name;
    while !rdns.is_empty() {
        let (tag, set, rest) = der_element(rdns)?;
        rdns = rest;
        if tag != 0x31 {
            return None;
        }
        let mut attributes = set;
        while !attributes.is_empty() {
            let (tag, attribute, rest) = der_element(attributes)?;
            attributes = rest;
            if tag != 0x30 {
                return None;
            }
            let (oid_tag, oid, value) = der_element(attribute)?;
            if oid_tag != 0x06 {
                return None;
            }
            let (_string_tag, text, _) = der_element(value)?;
            if oid == COMMON_NAME_OID {
                found = Some(text);
            }
        }
    }
    found
}

/// Splits one DER element off `input`: `(tag, contents, remainder)`.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (length, &rest[count..])
    };
    if rest.len() < length {
        return None;
    }
    let (contents, remainder) = rest.split_at(length);
    Some((tag, contents, remainder))
}

#[cfg(test)]
pub(crate) mod tests;
