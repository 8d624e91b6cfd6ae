//! A curl-like HTTP/1.1 client for the JSON gateway: one connection per request, a JSON
//! body in, and the answer as a whole or as the lines of a stream as they arrive.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use concord_tests::http_json::{post, b64};
//! let answer = post("http://127.0.0.1:2379", "/v3/kv/range", &format!(r#"{{"key":"{}"}}"#, b64("k"))).await?;
//! assert_eq!(answer.status, 200);
//! # Ok(()) }
//! ```

use std::convert::Infallible;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

/// A whole answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {}", self.body))
    }
}

/// Standard base64, as the gateway writes `bytes` fields.
pub fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Decodes a base64 `bytes` field as text.
pub fn unb64(value: &serde_json::Value) -> Result<String> {
    let text = value.as_str().context("a bytes field is a string")?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(text)?;
    Ok(String::from_utf8(bytes)?)
}

async fn send<B>(
    endpoint: &str,
    method: &str,
    path: &str,
    body: B,
    headers: &[(&str, &str)],
) -> Result<hyper::Response<Incoming>>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let authority = endpoint
        .strip_prefix("http://")
        .context("an http:// endpoint")?
        .trim_end_matches('/')
        .to_string();
    let stream = tokio::net::TcpStream::connect(&authority).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", &authority)
        .header("content-type", "application/x-www-form-urlencoded");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Ok(sender.send_request(request.body(body)?).await?)
}

/// `curl -X METHOD endpoint+path -d body` with extra headers.
pub async fn request(
    endpoint: &str,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Result<Answer> {
    let response = send(
        endpoint,
        method,
        path,
        Full::new(Bytes::from(body.to_string())),
        headers,
    )
    .await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8(body.to_vec())?,
    })
}

/// `curl endpoint+path -d body`.
pub async fn post(endpoint: &str, path: &str, body: &str) -> Result<Answer> {
    request(endpoint, "POST", path, body, &[]).await
}

/// [`post`], requiring a 200 answer; its JSON.
pub async fn post_ok(endpoint: &str, path: &str, body: &str) -> Result<serde_json::Value> {
    let answer = post(endpoint, path, body).await?;
    if answer.status != 200 {
        bail!("{path} answered {}: {}", answer.status, answer.body);
    }
    answer.json()
}

/// A streaming call: requests go out as they are sent, answers are read line by line.
pub struct JsonStream {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    requests: Option<mpsc::Sender<Result<Frame<Bytes>, Infallible>>>,
    body: Incoming,
    pending: Vec<u8>,
}

impl JsonStream {
    /// Opens `path` with `first` as the first request; the request body stays open.
    pub async fn open(endpoint: &str, path: &str, first: &str) -> Result<JsonStream> {
        let (sender, receiver) = mpsc::channel(16);
        sender
            .send(Ok(Frame::data(Bytes::from(first.to_string()))))
            .await
            .ok()
            .context("queue the first request")?;
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(receiver));
        let response = send(endpoint, "POST", path, body, &[]).await?;
        Ok(JsonStream {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            requests: Some(sender),
            body: response.into_body(),
            pending: Vec::new(),
        })
    }

    /// Sends one more request on the open body.
    pub async fn send(&mut self, request: &str) -> Result<()> {
        let sender = self
            .requests
            .as_ref()
            .context("the request body is closed")?;
        sender
            .send(Ok(Frame::data(Bytes::from(request.to_string()))))
            .await
            .ok()
            .context("the request body went away")
    }

    /// Ends the request body (the call may go on answering).
    pub fn close_requests(&mut self) {
        self.requests = None;
    }

    /// The next line of the answer; `None` when the answer ended.
    pub async fn next_line(&mut self) -> Result<Option<String>> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Ok(Some(String::from_utf8(line)?.trim_end().to_string()));
            }
            match self.body.frame().await {
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.pending.extend_from_slice(&data);
                    }
                }
                None if self.pending.is_empty() => return Ok(None),
                None => {
                    let rest = String::from_utf8(std::mem::take(&mut self.pending))?;
                    return Ok(Some(rest));
                }
            }
        }
    }

    /// The next line as JSON; an error at the end of the answer.
    pub async fn next_json(&mut self) -> Result<serde_json::Value> {
        let line = self.next_line().await?.context("the stream ended")?;
        serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))
    }
}
