//! The load generator's unary gRPC calls (put, range, txn, lease), made on HTTP/2 directly.
//!
//! On a small machine the load generator shares the cores with the servers it measures, so
//! whatever it spends per request is taken from them. Through a tonic client (tonic's channel
//! with its buffer task, message types built per call; measured with the `etcd-client` crate,
//! whose clients are tonic's like those of [`crate::etcd`]) a put cost the client ~42 µs of CPU,
//! a third of the whole machine's CPU per put in the 3-member comparison. Here a request is
//! one pre-framed message on a shared HTTP/2 connection, and a response is checked for its
//! gRPC status and handed back undecoded. Both targets (concord and etcd) are driven by this
//! same client.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use prost::Message;
use tokio::net::TcpStream;

/// Full gRPC method paths the benchmark calls.
pub const KV_PUT: &str = "/etcdserverpb.KV/Put";
pub const KV_RANGE: &str = "/etcdserverpb.KV/Range";
pub const KV_TXN: &str = "/etcdserverpb.KV/Txn";
pub const LEASE_GRANT: &str = "/etcdserverpb.Lease/LeaseGrant";
pub const LEASE_REVOKE: &str = "/etcdserverpb.Lease/LeaseRevoke";

/// gRPC's length prefix: a compression flag byte and a big-endian u32 length.
const FRAME_PREFIX_LEN: usize = 5;

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    Transport(h2::Error),
    /// The server answered with a non-OK gRPC status.
    Status {
        code: String,
        message: String,
    },
    Http(StatusCode),
    /// The response carried no message.
    Empty,
    Timeout(Duration),
    Request(http::Error),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Transport(e) => write!(f, "transport: {e}"),
            CallError::Status { code, message } => write!(f, "grpc status {code}: {message}"),
            CallError::Http(status) => write!(f, "http status {status}"),
            CallError::Empty => write!(f, "response without a message"),
            CallError::Timeout(limit) => write!(f, "no response within {limit:?}"),
            CallError::Request(e) => write!(f, "request: {e}"),
        }
    }
}

impl std::error::Error for CallError {}

impl From<h2::Error> for CallError {
    fn from(error: h2::Error) -> Self {
        CallError::Transport(error)
    }
}

/// One HTTP/2 connection to a member; clones share it (each call is its own stream).
#[derive(Clone)]
pub struct UnaryConn {
    sender: SendRequest<Bytes>,
    authority: String,
    timeout: Duration,
}

impl UnaryConn {
    pub async fn connect(endpoint: &str, timeout: Duration) -> Result<UnaryConn> {
        let authority = endpoint
            .strip_prefix("http://")
            .unwrap_or(endpoint)
            .trim_end_matches('/')
            .to_string();
        let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&authority))
            .await
            .with_context(|| format!("connect to {authority}: timed out"))?
            .with_context(|| format!("connect to {authority}"))?;
        tcp.set_nodelay(true)?;
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(1 << 24)
            .handshake::<_, Bytes>(tcp)
            .await
            .with_context(|| format!("HTTP/2 handshake with {authority}"))?;
        tokio::spawn(async move {
            // Ends when every clone of the sender is dropped or the server goes away; a
            // call in flight then fails with the transport error.
            let _ = connection.await;
        });
        Ok(UnaryConn {
            sender,
            authority,
            timeout,
        })
    }

    /// The URI of `path` on this connection's member (built once per client task).
    pub fn uri(&self, path: &str) -> Result<Uri> {
        Uri::builder()
            .scheme("http")
            .authority(self.authority.as_str())
            .path_and_query(path)
            .build()
            .with_context(|| format!("uri for {path}"))
    }

    /// Sends `request` (a framed message, see [`frame`]) to `uri` and returns the response
    /// message's bytes.
    pub async fn call(&mut self, uri: &Uri, request: Bytes) -> Result<Bytes, CallError> {
        match tokio::time::timeout(self.timeout, self.exchange(uri, request)).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Timeout(self.timeout)),
        }
    }

    async fn exchange(&mut self, uri: &Uri, request: Bytes) -> Result<Bytes, CallError> {
        let head = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(CallError::Request)?;
        let mut sender = self.sender.clone().ready().await?;
        let (response, mut body_out) = sender.send_request(head, false)?;
        body_out.send_data(request, true)?;
        let (parts, mut body) = response.await?.into_parts();
        if parts.status != StatusCode::OK {
            return Err(CallError::Http(parts.status));
        }
        // A failure may come as headers alone ("trailers-only").
        check_grpc_status(&parts.headers)?;
        let mut received = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            received.extend_from_slice(&chunk);
        }
        if let Some(trailers) = body.trailers().await? {
            check_grpc_status(&trailers)?;
        }
        if received.len() < FRAME_PREFIX_LEN {
            return Err(CallError::Empty);
        }
        let declared = u32::from_be_bytes([received[1], received[2], received[3], received[4]]);
        let end = (FRAME_PREFIX_LEN + declared as usize).min(received.len());
        Ok(received.freeze().slice(FRAME_PREFIX_LEN..end))
    }
}

fn check_grpc_status(headers: &HeaderMap) -> Result<(), CallError> {
    match headers.get("grpc-status") {
        None => Ok(()),
        Some(code) if code.as_bytes() == b"0" => Ok(()),
        Some(code) => Err(CallError::Status {
            code: String::from_utf8_lossy(code.as_bytes()).into_owned(),
            message: headers
                .get("grpc-message")
                .map(|m| percent_decode(m.as_bytes()))
                .unwrap_or_default(),
        }),
    }
}

/// gRPC sends `grpc-message` percent-encoded.
fn percent_decode(encoded: &[u8]) -> String {
    let mut decoded = Vec::with_capacity(encoded.len());
    let mut i = 0;
    while i < encoded.len() {
        let hex = encoded
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (encoded[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// `message` with gRPC's length prefix, ready to send.
pub fn frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(FRAME_PREFIX_LEN + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    // Cannot fail: the buffer was sized for the message.
    let _ = message.encode(&mut buf);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_proto::etcdserverpb::PutRequest;

    #[test]
    fn frames_carry_the_length_prefix() {
        let put = PutRequest {
            key: b"k".to_vec(),
            value: vec![7; 300],
            ..Default::default()
        };
        let framed = frame(&put);
        assert_eq!(framed[0], 0);
        let len = u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize;
        assert_eq!(len, framed.len() - FRAME_PREFIX_LEN);
        assert_eq!(
            PutRequest::decode(&framed[FRAME_PREFIX_LEN..]).unwrap(),
            put
        );
    }

    #[test]
    fn grpc_status_other_than_ok_is_an_error_with_its_message() {
        let mut headers = HeaderMap::new();
        assert!(check_grpc_status(&headers).is_ok());
        headers.insert("grpc-status", "0".parse().unwrap());
        assert!(check_grpc_status(&headers).is_ok());
        headers.insert("grpc-status", "9".parse().unwrap());
        headers.insert("grpc-message", "etcdserver:%20no%20leader".parse().unwrap());
        let error = check_grpc_status(&headers).unwrap_err().to_string();
        assert_eq!(error, "grpc status 9: etcdserver: no leader");
    }

    #[test]
    fn percent_decoding_leaves_stray_percent_signs() {
        assert_eq!(percent_decode(b"a%20b%zz%2"), "a b%zz%2");
    }
}
