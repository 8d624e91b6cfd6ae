//! etcd 3.4's HTTP/JSON gateway: every route of [`HTTP_ROUTES`] (and its `/v3beta/`
//! twin, which etcd 3.4 rewrites to `/v3/`) turns its JSON body into the method's
//! request, calls the member's own gRPC server over an in-process connection
//! ([`crate::listener::in_process_channel`]), and answers with the JSON of the response
//! ([`json`]), as grpc-gateway v1 does for etcd:
//!
//! - unary methods answer one JSON object;
//! - streaming methods (`/v3/watch`, `/v3/lease/keepalive`, snapshot, observe) answer
//!   newline-delimited `{"result": …}` objects, each flushed as it is produced; a request
//!   stream is the body's sequence of JSON values, and the call stays open until the
//!   server ends it or the client goes away;
//! - errors are `{"error": …, "message": …, "code": …}` with grpc-gateway's HTTP status
//!   for the gRPC code, or, once a stream has answered, a last
//!   `{"error": {"grpc_code": …, "http_code": …, "message": …, "http_status": …}}`.
//!
//! The gateway holds no service logic: the same gRPC services answer, with the same
//! checks, and the gateway's calls share one HTTP/2 connection, so that they count
//! against `--max-concurrent-streams` as etcd's do. The `Authorization` header travels
//! as the call's `authorization` metadata, for the services' auth checks.

pub mod json;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{any, post};
use concord_proto::http_routes::{HTTP_ROUTES, HttpRoute};
use futures::StreamExt as _;
use http_body_util::BodyExt as _;
use prost_reflect::MessageDescriptor;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};

mod go_json;

use json::DecodeError;

/// The HTTP/JSON gateway's routes, calling the member's services over `channel`.
pub fn router(channel: Channel) -> Router {
    let mut router = Router::new();
    let mut served = std::collections::HashSet::new();
    for route in HTTP_ROUTES {
        // grpc-gateway serves the first method registered for a path.
        if !served.insert(route.path) {
            continue;
        }
        let Some(method) = Method::describe(route) else {
            tracing::error!(
                ?route,
                "gateway route names no method of the descriptor set"
            );
            continue;
        };
        let method = Arc::new(method);
        let handler = {
            let channel = channel.clone();
            move |request: Request| {
                let (channel, method) = (channel.clone(), method.clone());
                async move { call(channel, &method, request).await }
            }
        };
        let method_router = post(handler).fallback(method_not_allowed);
        let beta = route.path.replacen("/v3/", "/v3beta/", 1);
        router = router
            .route(route.path, method_router.clone())
            .route(&beta, method_router);
    }
    router
        .route("/v3/{*rest}", any(not_found))
        .route("/v3beta/{*rest}", any(not_found))
}

/// What a route calls.
struct Method {
    grpc_path: http::uri::PathAndQuery,
    input: MessageDescriptor,
    output: MessageDescriptor,
    client_streaming: bool,
    server_streaming: bool,
}

impl Method {
    fn describe(route: &HttpRoute) -> Option<Method> {
        let service = concord_proto::descriptor_pool().get_service_by_name(route.service)?;
        let method = service.methods().find(|m| m.name() == route.method)?;
        Some(Method {
            grpc_path: route.grpc_path().parse().ok()?,
            input: method.input(),
            output: method.output(),
            client_streaming: method.is_client_streaming(),
            server_streaming: method.is_server_streaming(),
        })
    }
}

/// Go's `http.Error`, which grpc-gateway uses for requests that match no route.
fn plain_error(status: StatusCode) -> Response {
    let mut response = Response::new(Body::from(format!(
        "{}\n",
        status.canonical_reason().unwrap_or_default()
    )));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn method_not_allowed() -> Response {
    plain_error(StatusCode::METHOD_NOT_ALLOWED)
}

async fn not_found() -> Response {
    plain_error(StatusCode::NOT_FOUND)
}

async fn call(channel: Channel, method: &Method, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let metadata = forwarded_metadata(&parts.headers);
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    if let Err(error) = grpc.ready().await {
        return error_response(&Status::unavailable(error.to_string()));
    }
    let path = method.grpc_path.clone();
    if method.client_streaming {
        let mut requests = JsonRequests::new(body, method.input.clone());
        // grpc-gateway reads the first request before it answers: a body that does not
        // start with one is an error of the whole call (an empty body is no request).
        let first = match requests.next().await {
            Some(Ok(first)) => Some(first),
            Some(Err(DecodeError(message))) => return error_response(&Status::unknown(message)),
            None => None,
        };
        let (sender, receiver) = mpsc::channel(16);
        let reader = first.map(|first| {
            tokio::spawn(async move {
                if sender.send(first).await.is_err() {
                    return;
                }
                // A request that does not decode ends the sending side, as grpc-gateway
                // does; so does the end of the body.
                while let Some(Ok(request)) = requests.next().await {
                    if sender.send(request).await.is_err() {
                        return;
                    }
                }
            })
        });
        let mut call = tonic::Request::new(ReceiverStream::new(receiver));
        *call.metadata_mut() = metadata;
        let responses = grpc.streaming(call, path, RawCodec).await;
        stream_response(responses, method.output.clone(), reader.map(AbortOnDrop)).await
    } else {
        // Only the body's first JSON value is read (an empty body is the empty request),
        // as grpc-gateway's decoder does: a client may keep the body open.
        let message = match JsonRequests::new(body, method.input.clone()).next().await {
            Some(Ok(message)) => message,
            None => Vec::new(),
            Some(Err(DecodeError(message))) => {
                return error_response(&Status::invalid_argument(message));
            }
        };
        let mut call = tonic::Request::new(message);
        *call.metadata_mut() = metadata;
        if method.server_streaming {
            let responses = grpc.server_streaming(call, path, RawCodec).await;
            stream_response(responses, method.output.clone(), None).await
        } else {
            match grpc.unary(call, path, RawCodec).await {
                Ok(response) => unary_response(response, &method.output),
                Err(status) => error_response(&status),
            }
        }
    }
}

/// The HTTP headers a call passes on as gRPC metadata: the auth token.
fn forwarded_metadata(headers: &HeaderMap) -> tonic::metadata::MetadataMap {
    let mut metadata = tonic::metadata::MetadataMap::new();
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| tonic::metadata::MetadataValue::try_from(value.as_bytes()).ok())
    {
        metadata.insert("authorization", token);
    }
    metadata
}

/// The response's gRPC header metadata, as grpc-gateway passes it on
/// (`Grpc-Metadata-<key>`); the gRPC content type is among them.
fn metadata_headers(metadata: &tonic::metadata::MetadataMap, headers: &mut HeaderMap) {
    headers.insert(
        "grpc-metadata-content-type",
        HeaderValue::from_static("application/grpc"),
    );
    // What grpc-go keeps from itself out of a call's header metadata.
    const TRANSPORT_HEADERS: &[&str] = &[
        "content-type",
        "date",
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
        "grpc-encoding",
        "grpc-accept-encoding",
    ];
    for entry in metadata.iter() {
        if let tonic::metadata::KeyAndValueRef::Ascii(key, value) = entry
            && !TRANSPORT_HEADERS.contains(&key.as_str())
            && let Ok(name) =
                http::HeaderName::from_bytes(format!("grpc-metadata-{}", key.as_str()).as_bytes())
            && let Ok(value) = HeaderValue::from_bytes(value.as_encoded_bytes())
        {
            headers.append(name, value);
        }
    }
}

fn unary_response(response: tonic::Response<Vec<u8>>, output: &MessageDescriptor) -> Response {
    let (metadata, message, _) = response.into_parts();
    match json::protobuf_to_json(output, &message) {
        Ok(body) => {
            let mut response = crate::http::json_answer(StatusCode::OK, Body::from(body));
            metadata_headers(&metadata, response.headers_mut());
            response
        }
        Err(error) => error_response(&Status::internal(error)),
    }
}

/// grpc-gateway's `HTTPStatusFromCode`.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// grpc-gateway's error body: jsonpb of `{error, message, code}` with empty fields left
/// out.
fn error_body(status: &Status) -> String {
    let mut fields = Vec::new();
    if !status.message().is_empty() {
        let message = go_json_string(status.message());
        fields.push(format!("\"error\":{message}"));
        fields.push(format!("\"message\":{message}"));
    }
    if status.code() != Code::Ok {
        fields.push(format!("\"code\":{}", status.code() as i32));
    }
    format!("{{{}}}", fields.join(","))
}

fn error_response(status: &Status) -> Response {
    crate::http::json_answer(http_status(status.code()), Body::from(error_body(status)))
}

/// `text` as a JSON string, escaped as Go's encoding/json (grpc-gateway's marshaler)
/// escapes it.
fn go_json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    crate::http::v2::json::go_string(&mut out, text);
    out
}

/// The last chunk of a stream that failed after it had answered.
fn stream_error_chunk(status: &Status) -> Bytes {
    let http = http_status(status.code());
    let mut fields = vec![];
    if status.code() != Code::Ok {
        fields.push(format!("\"grpc_code\":{}", status.code() as i32));
    }
    fields.push(format!("\"http_code\":{}", http.as_u16()));
    if !status.message().is_empty() {
        let message = go_json_string(status.message());
        fields.push(format!("\"message\":{message}"));
    }
    let reason = serde_json::Value::from(http.canonical_reason().unwrap_or_default());
    fields.push(format!("\"http_status\":{reason}"));
    Bytes::from(format!("{{\"error\":{{{}}}}}", fields.join(",")))
}

/// One `{"result": …}` line of a stream.
fn result_chunk(output: &MessageDescriptor, message: &[u8]) -> Result<Bytes, Status> {
    let json = json::protobuf_to_json(output, message).map_err(Status::internal)?;
    let mut chunk = Vec::with_capacity(json.len() + 12);
    chunk.extend_from_slice(b"{\"result\":");
    chunk.extend_from_slice(&json);
    chunk.extend_from_slice(b"}\n");
    Ok(Bytes::from(chunk))
}

/// Aborts the task that feeds a call's requests when the call's response goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Answers a streaming call: the HTTP status and headers wait for the first response (an
/// error before it is a plain error answer), then every response is a line, sent as it
/// comes.
async fn stream_response(
    responses: Result<tonic::Response<tonic::Streaming<Vec<u8>>>, Status>,
    output: MessageDescriptor,
    reader: Option<AbortOnDrop>,
) -> Response {
    let (metadata, mut stream) = match responses {
        Ok(response) => {
            let (metadata, stream, _) = response.into_parts();
            (metadata, stream)
        }
        Err(status) => return error_response(&status),
    };
    let first = match stream.message().await {
        Ok(Some(first)) => first,
        Ok(None) => {
            let mut response = crate::http::json_answer(StatusCode::OK, Body::empty());
            metadata_headers(&metadata, response.headers_mut());
            return response;
        }
        Err(status) => {
            let mut response = crate::http::json_answer(
                http_status(status.code()),
                Body::from(stream_error_chunk(&status)),
            );
            metadata_headers(&metadata, response.headers_mut());
            return response;
        }
    };
    let first = match result_chunk(&output, &first) {
        Ok(chunk) => chunk,
        Err(status) => return error_response(&status),
    };
    // The state: the stream (None once it ended or failed) and the reader, kept alive as
    // long as the body.
    let rest = futures::stream::unfold(
        (Some(stream), output, reader),
        |(stream, output, reader)| async move {
            let mut stream = stream?;
            let chunk = match stream.message().await {
                Ok(Some(message)) => match result_chunk(&output, &message) {
                    Ok(chunk) => chunk,
                    Err(status) => {
                        return Some((stream_error_chunk(&status), (None, output, reader)));
                    }
                },
                Ok(None) => return None,
                Err(status) => return Some((stream_error_chunk(&status), (None, output, reader))),
            };
            Some((chunk, (Some(stream), output, reader)))
        },
    );
    let body = futures::stream::once(async move { first })
        .chain(rest)
        .map(Ok::<_, std::convert::Infallible>);
    let mut response = crate::http::json_answer(StatusCode::OK, Body::from_stream(body));
    metadata_headers(&metadata, response.headers_mut());
    response
}

/// The sequence of JSON values in a request body, each decoded as `desc` and encoded as
/// protobuf, read as the body arrives (Go's `json.Decoder` over the body).
struct JsonRequests {
    body: Body,
    desc: MessageDescriptor,
    buffer: Vec<u8>,
    body_ended: bool,
}

impl JsonRequests {
    fn new(body: Body, desc: MessageDescriptor) -> JsonRequests {
        JsonRequests {
            body,
            desc,
            buffer: Vec::new(),
            body_ended: false,
        }
    }

    /// The next request; `None` at the end of the body.
    async fn next(&mut self) -> Option<Result<Vec<u8>, DecodeError>> {
        loop {
            match go_json::value_end(&self.buffer) {
                Ok(end) => {
                    let request = json::json_to_protobuf(&self.desc, &self.buffer[..end]);
                    self.buffer.drain(..end);
                    return Some(request);
                }
                // An incomplete value, or nothing but blanks so far: read on.
                Err(error) if error != go_json::UNEXPECTED_EOF => {
                    return Some(Err(DecodeError(error)));
                }
                _ if self.body_ended => {
                    if self.buffer.iter().all(u8::is_ascii_whitespace) {
                        return None;
                    }
                    return Some(Err(DecodeError(go_json::UNEXPECTED_EOF.into())));
                }
                _ => {}
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) | None => self.body_ended = true,
            }
        }
    }
}

/// Passes messages through as their protobuf encoding: the gateway turns JSON into
/// protobuf with reflection, so the call itself carries bytes.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let len = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, len).to_vec()))
    }
}
