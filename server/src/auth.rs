//! Who makes a request, for every face (gRPC and HTTP alike): the token in the request
//! (etcd's `token` metadata, or `authorization` on the gateway), simple or JWT, or,
//! with `--client-cert-auth` and no token, the client certificate's common name.
//! Also what etcd does around passwords before a request enters the log: bcrypt runs
//! on blocking threads behind a bound, so wrong passwords cannot tie up the async
//! workers, and the log carries hashes, never passwords.
//!
//! The decisions themselves live with the replicated state in
//! [`crate::state::auth::AuthStore`].

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::config::{AuthTokenKind, Config};
use crate::etcd_error::EtcdError;
use crate::listener::{ConnectionInfo, InProcessCall};
use crate::state::auth::{AuthInfo, AuthStore};

/// The metadata that carries a client's certificate name on the calls the member makes
/// on that client's behalf (Lock and Election run on the member's own KV, Watch and
/// Lease services). It is believed only on the in-process connection, which no client
/// can reach; on any other connection it is ignored.
pub const CALLER_CERTIFICATE_NAME: &str = "concord-caller-certificate-name";

/// What a gRPC request carries that can name its sender (etcd's `AuthInfoFromCtx` and
/// `AuthInfoFromTLS` read the same): a token and a client certificate's common name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The `token` metadata, else `authorization` (the JSON gateway passes the HTTP
    /// `Authorization` header on under that name), as etcd looks them up.
    pub token: Option<String>,
    pub certificate_name: Option<String>,
}

impl Credentials {
    pub fn of<T>(request: &tonic::Request<T>) -> Credentials {
        let text = |key: &str| {
            request
                .metadata()
                .get(key)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let extensions = request.extensions();
        let certificate_name = if extensions.get::<InProcessCall>().is_some() {
            text(CALLER_CERTIFICATE_NAME)
        } else {
            extensions
                .get::<ConnectionInfo>()
                .and_then(ConnectionInfo::common_name)
        };
        Credentials {
            token: text("token").or_else(|| text("authorization")),
            certificate_name,
        }
    }

    /// The metadata that hands these credentials on to a call the member makes for the
    /// sender over its in-process connection.
    pub fn to_metadata(&self) -> tonic::metadata::MetadataMap {
        let mut metadata = tonic::metadata::MetadataMap::new();
        let mut insert = |key: &'static str, value: &Option<String>| {
            if let Some(value) = value.as_deref().and_then(|v| v.parse().ok()) {
                metadata.insert(key, value);
            }
        };
        insert("token", &self.token);
        insert(CALLER_CERTIFICATE_NAME, &self.certificate_name);
        metadata
    }
}

/// etcd's claims: who, at which auth revision, until when.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    exp: u64,
}

/// `--auth-token jwt,...`: the keys and how to sign.
pub struct JwtTokens {
    algorithm: Algorithm,
    /// None when only a public key was given (etcd's verify-only mode).
    signing: Option<EncodingKey>,
    verifying: DecodingKey,
    ttl: Duration,
}

enum Tokens {
    Simple,
    Jwt(Box<JwtTokens>),
}

/// Request identities and password handling of one member.
pub struct Authenticator {
    pub store: Arc<AuthStore>,
    tokens: Tokens,
    bcrypt_cost: u32,
    bcrypt_slots: Semaphore,
    client_cert_auth: bool,
}

impl Authenticator {
    pub fn new(config: &Config, store: Arc<AuthStore>) -> Result<Authenticator, String> {
        let tokens = match &config.auth_token {
            AuthTokenKind::Simple => Tokens::Simple,
            AuthTokenKind::Jwt { options } => Tokens::Jwt(Box::new(JwtTokens::new(options)?)),
        };
        let slots = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(2);
        Ok(Authenticator {
            store,
            tokens,
            bcrypt_cost: config.bcrypt_cost,
            bcrypt_slots: Semaphore::new(slots),
            client_cert_auth: config.client_tls.client_cert_auth,
        })
    }

    /// Runs one bcrypt job on a blocking thread once a slot is free.
    async fn bcrypt<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, EtcdError> {
        let _slot = self
            .bcrypt_slots
            .acquire()
            .await
            .map_err(|_| EtcdError::stopped())?;
        tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| EtcdError::internal(format!("bcrypt: {e}")))
    }

    /// The bcrypt hash of a password at the configured cost, in Go's `$2a$` form (so
    /// the stored hashes are the ones etcd writes).
    pub async fn hash_password(&self, password: String) -> Result<String, EtcdError> {
        let cost = self.bcrypt_cost;
        self.bcrypt(move || {
            bcrypt::hash_with_result(password, cost)
                .map(|parts| parts.format_for_version(bcrypt::Version::TwoA))
        })
        .await?
        .map_err(|e| EtcdError::internal(format!("bcrypt: {e}")))
    }

    /// etcd's `CheckPassword`: the auth revision the password was right at.
    pub async fn check_password(&self, name: &str, password: String) -> Result<u64, EtcdError> {
        let (hash, revision) = self.store.password_hash(name)?;
        let matches = self
            .bcrypt(move || {
                let hash = String::from_utf8_lossy(&hash).into_owned();
                bcrypt::verify(password, &hash).unwrap_or(false)
            })
            .await?;
        if matches {
            Ok(revision)
        } else {
            Err(EtcdError::auth_failed())
        }
    }

    /// A fresh simple token for an Authenticate proposal (etcd's 16 random letters,
    /// a dot and a number), or None with JWT, whose token the proposer signs after
    /// the entry applied.
    pub fn new_simple_token(&self) -> Option<String> {
        match self.tokens {
            Tokens::Simple => {
                let mut rng = rand::rng();
                let letters: String = (0..16)
                    .map(|_| {
                        let i = rng.random_range(0..52u8);
                        (if i < 26 { b'a' + i } else { b'A' + i - 26 }) as char
                    })
                    .collect();
                Some(format!("{letters}.{}", rng.random_range(1..u32::MAX)))
            }
            Tokens::Jwt(_) => None,
        }
    }

    /// The token Authenticate answers: the simple token the entry registered, or a JWT
    /// signed now for `name` at auth revision `revision`.
    pub fn token_for(
        &self,
        name: &str,
        revision: u64,
        simple: String,
    ) -> Result<String, EtcdError> {
        match &self.tokens {
            Tokens::Simple => Ok(simple),
            Tokens::Jwt(jwt) => jwt.sign(name, revision),
        }
    }

    /// Who sent a request: Ok(None) when it names nobody. A token that is unknown,
    /// expired or badly signed is etcd's "invalid auth token".
    pub fn identify(
        &self,
        token: Option<&str>,
        certificate_name: Option<String>,
    ) -> Result<Option<AuthInfo>, EtcdError> {
        if let Some(token) = token {
            let info = match &self.tokens {
                Tokens::Simple => {
                    self.store
                        .simple_token_user(token, Instant::now())
                        .map(|username| AuthInfo {
                            username,
                            revision: self.store.revision(),
                            follows_current_revision: true,
                        })
                }
                Tokens::Jwt(jwt) => jwt.verify(token),
            };
            return info.map(Some).ok_or_else(EtcdError::invalid_auth_token);
        }
        if self.client_cert_auth
            && let Some(name) = certificate_name
        {
            return Ok(Some(AuthInfo {
                username: name,
                revision: self.store.revision(),
                follows_current_revision: true,
            }));
        }
        Ok(None)
    }
}

impl JwtTokens {
    fn new(options: &std::collections::BTreeMap<String, String>) -> Result<JwtTokens, String> {
        let method = options.get("sign-method").map(String::as_str).unwrap_or("");
        let algorithm: Algorithm = method
            .parse()
            .map_err(|_| "auth: invalid auth signature method".to_string())?;
        let ttl = match options.get("ttl").filter(|t| !t.is_empty()) {
            Some(text) => crate::config::flags::parse_go_duration(text)
                .ok_or_else(|| format!("auth: invalid auth options: ttl {text}"))?,
            None => Duration::from_secs(300),
        };
        let read = |name: &str| -> Result<Option<Vec<u8>>, String> {
            match options.get(name).filter(|f| !f.is_empty()) {
                Some(file) => std::fs::read(file)
                    .map(Some)
                    .map_err(|e| format!("open {file}: {e}")),
                None => Ok(None),
            }
        };
        let private = read("priv-key")?;
        let public = read("pub-key")?;
        let (signing, verifying) = keys_for(algorithm, private.as_deref(), public.as_deref())?;
        Ok(JwtTokens {
            algorithm,
            signing,
            verifying,
            ttl,
        })
    }

    fn sign(&self, username: &str, revision: u64) -> Result<String, EtcdError> {
        let Some(key) = &self.signing else {
            return Err(EtcdError {
                code: tonic::Code::Unknown,
                message: "auth: token signing attempted with verify-only key".into(),
            });
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let claims = Claims {
            username: username.to_string(),
            revision,
            exp: (now + self.ttl).as_secs(),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key)
            .map_err(|e| EtcdError::internal(format!("jwt: {e}")))
    }

    fn verify(&self, token: &str) -> Option<AuthInfo> {
        let mut validation = Validation::new(self.algorithm);
        validation.leeway = 0;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Claims>(token, &self.verifying, &validation).ok()?;
        Some(AuthInfo {
            username: data.claims.username,
            revision: data.claims.revision,
            follows_current_revision: false,
        })
    }
}

/// The signing key and the verifying key of a JWT configuration. As etcd does, the
/// private key decides when given (its public half verifies); a public key alone
/// (a PEM public key or a certificate) only verifies.
fn keys_for(
    algorithm: Algorithm,
    private: Option<&[u8]>,
    public: Option<&[u8]>,
) -> Result<(Option<EncodingKey>, DecodingKey), String> {
    use Algorithm::*;
    let missing = || "auth: missing key data".to_string();
    match algorithm {
        HS256 | HS384 | HS512 => {
            let secret = private.ok_or_else(missing)?;
            Ok((
                Some(EncodingKey::from_secret(secret)),
                DecodingKey::from_secret(secret),
            ))
        }
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => {
            if let Some(pem) = private {
                let signing = EncodingKey::from_rsa_pem(pem).map_err(|e| e.to_string())?;
                let der = pem_der(pem)?;
                let pair = ring::rsa::KeyPair::from_pkcs8(&der)
                    .or_else(|_| ring::rsa::KeyPair::from_der(&der))
                    .map_err(|e| format!("rsa key: {e}"))?;
                use ring::signature::KeyPair as _;
                let verifying = DecodingKey::from_rsa_der(pair.public_key().as_ref());
                return Ok((Some(signing), verifying));
            }
            let pem = public.ok_or_else(missing)?;
            Ok((None, public_key(pem, false)?))
        }
        ES256 | ES384 => {
            if let Some(pem) = private {
                let signing = EncodingKey::from_ec_pem(pem).map_err(|e| e.to_string())?;
                // The verifying half: the public key given, else none can be derived
                // without parsing SEC1 here, so a public key is required alongside.
                let pem_public = public.ok_or_else(missing)?;
                return Ok((Some(signing), public_key(pem_public, true)?));
            }
            let pem = public.ok_or_else(missing)?;
            Ok((None, public_key(pem, true)?))
        }
        EdDSA => Err("auth: invalid auth signature method".into()),
    }
}

/// The DER inside the first PEM block of `pem`.
fn pem_der(pem: &[u8]) -> Result<Vec<u8>, String> {
    let mut reader = std::io::BufReader::new(pem);
    match rustls_pemfile::read_one(&mut reader) {
        Ok(Some(item)) => Ok(match item {
            rustls_pemfile::Item::Pkcs1Key(k) => k.secret_pkcs1_der().to_vec(),
            rustls_pemfile::Item::Pkcs8Key(k) => k.secret_pkcs8_der().to_vec(),
            rustls_pemfile::Item::Sec1Key(k) => k.secret_sec1_der().to_vec(),
            rustls_pemfile::Item::X509Certificate(c) => c.to_vec(),
            rustls_pemfile::Item::SubjectPublicKeyInfo(s) => s.to_vec(),
            _ => return Err("auth: missing key data".into()),
        }),
        _ => Err("auth: missing key data".into()),
    }
}

/// A verifying key from a PEM public key or certificate (jwt-go accepts both).
fn public_key(pem: &[u8], ec: bool) -> Result<DecodingKey, String> {
    let der = pem_der(pem)?;
    let spki = if pem_is_certificate(pem) {
        let certificate = rustls::pki_types::CertificateDer::from(der.as_slice());
        let cert = webpki::EndEntityCert::try_from(&certificate)
            .map_err(|e| format!("certificate: {e}"))?;
        cert.subject_public_key_info().as_ref().to_vec()
    } else {
        der
    };
    let key_bits = spki_key_bits(&spki).ok_or_else(|| "auth: missing key data".to_string())?;
    Ok(if ec {
        DecodingKey::from_ec_der(key_bits)
    } else {
        DecodingKey::from_rsa_der(key_bits)
    })
}

fn pem_is_certificate(pem: &[u8]) -> bool {
    String::from_utf8_lossy(pem).contains("BEGIN CERTIFICATE")
}

/// The key bits of a SubjectPublicKeyInfo: `SEQUENCE { algorithm, BIT STRING }` (the
/// algorithm SEQUENCE may come without its outer tag, as webpki hands it over).
fn spki_key_bits(spki: &[u8]) -> Option<&[u8]> {
    fn header(data: &[u8]) -> Option<(u8, usize, usize)> {
        let tag = *data.first()?;
        let first = *data.get(1)? as usize;
        if first < 0x80 {
            return Some((tag, 2, first));
        }
        let count = first & 0x7f;
        let mut len = 0usize;
        for i in 0..count {
            len = (len << 8) | *data.get(2 + i)? as usize;
        }
        Some((tag, 2 + count, len))
    }
    let mut body = spki;
    let (tag, start, len) = header(body)?;
    if tag == 0x30 {
        // Either the outer SEQUENCE or (without it) the algorithm SEQUENCE.
        let inner = body.get(start..start + len)?;
        if start + len == body.len() && inner.first() == Some(&0x30) {
            body = inner;
        }
    }
    let (_, algo_start, algo_len) = header(body)?;
    let rest = body.get(algo_start + algo_len..)?;
    let (tag, bits_start, bits_len) = header(rest)?;
    if tag != 0x03 {
        return None;
    }
    // Skip the BIT STRING's unused-bits byte.
    rest.get(bits_start + 1..bits_start + bits_len)
}
