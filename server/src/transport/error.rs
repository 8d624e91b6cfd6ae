//! The one error type of the networking area: TLS material, listeners and the peer
//! transport.

use std::path::PathBuf;

/// What can go wrong while setting up TLS, binding or serving a listener, or talking to
/// a peer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// A certificate, key or CRL file could not be read or written.
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A PEM file held no usable item of the expected kind.
    #[error("{path}: {what}")]
    Pem { path: PathBuf, what: String },
    /// The TLS settings contradict each other (e.g. client-cert-auth without a CA).
    #[error("invalid TLS settings: {0}")]
    TlsSettings(String),
    /// rustls refused the certificate, key or configuration.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built (e.g. a malformed CA or CRL).
    #[error("tls client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// Generating a self-signed certificate (auto TLS) failed.
    #[error("generating a self-signed certificate: {0}")]
    CertGeneration(#[from] rcgen::Error),
    /// A URL cannot be listened on or connected to.
    #[error("invalid URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    /// Binding a listener failed; the text follows Go's (`listen tcp ADDR: bind: ...`),
    /// as etcd prints it.
    #[error("listen tcp {addr}: bind: {reason}")]
    Bind { addr: String, reason: String },
    /// Any other socket error.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// tonic's server or channel failed.
    #[error("grpc transport: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// A peer answered an RPC with an error.
    #[error("peer rpc: {0}")]
    Rpc(Box<tonic::Status>),
    /// A connection attempt did not finish in time.
    #[error("connecting to {0} timed out")]
    ConnectTimeout(String),
}

impl From<tonic::Status> for NetError {
    fn from(status: tonic::Status) -> Self {
        NetError::Rpc(Box::new(status))
    }
}

/// Shorthand for results of this area.
pub type Result<T, E = NetError> = std::result::Result<T, E>;
