//! `/v2/keys`: etcd 3.4's keys handler. Writes and `quorum=true` reads go through raft
//! as `V2Request`s; plain reads and watches are served from this member's v2 store.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use concord_proto::concordpb::{apply_result, internal_request};

use super::json;
use crate::core::Core;
use crate::state::v2::{
    ECODE_INDEX_NAN, ECODE_INVALID_FIELD, ECODE_PREV_VALUE_REQUIRED, ECODE_RAFT_INTERNAL,
    ECODE_REFRESH_TTL_REQUIRED, ECODE_REFRESH_VALUE, ECODE_TTL_NAN, ECODE_UNAUTHORIZED, Event,
    Method as V2Method, Request, SharedV2Store, V2Error, WatchStart,
};

pub const KEYS_PREFIX: &str = "/v2/keys";
/// Events a watcher may fall behind by before it is dropped (etcd's channel size).
const WATCH_BUFFER: usize = 100;

/// Unix nanoseconds now.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// A request's form: body values first, then the query's, as Go's `r.Form`.
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Form {
        let mut pairs = Vec::new();
        let form_body = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if form_body && (method == Method::POST || method == Method::PUT || method == "PATCH") {
            pairs.extend(url::form_urlencoded::parse(body).into_owned());
        }
        if let Some(query) = uri.query() {
            pairs.extend(url::form_urlencoded::parse(query.as_bytes()).into_owned());
        }
        Form(pairs)
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    pub fn value(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// Go's strconv.ParseBool of the first value; missing is false.
    fn boolean(&self, name: &str) -> Result<bool, ()> {
        if !self.has(name) {
            return Ok(false);
        }
        match self.value(name) {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
            "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
            _ => Err(()),
        }
    }

    fn unsigned(&self, name: &str) -> Result<u64, ()> {
        if !self.has(name) {
            return Ok(0);
        }
        self.value(name).parse::<u64>().map_err(|_| ())
    }
}

/// Percent-decodes a URL path (Go's `URL.Path`).
pub fn decode_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%'
            && let Some(hex) = raw.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a keys request asks for, parsed as etcd's `parseKeyRequest` does.
struct KeyRequest {
    request: Request,
    wait: bool,
    since: u64,
    quorum: bool,
    stream: bool,
    no_value_on_success: bool,
}

fn field_error(code: u32, cause: &str) -> V2Error {
    V2Error::new(code, cause, 0)
}

fn parse(method: &Method, path: &str, form: &Form, now: i64) -> Result<KeyRequest, V2Error> {
    let boolean = |name: &str| {
        form.boolean(name).map_err(|()| {
            field_error(
                ECODE_INVALID_FIELD,
                &format!("invalid value for \"{name}\""),
            )
        })
    };
    let prev_index = form
        .unsigned("prevIndex")
        .map_err(|()| field_error(ECODE_INDEX_NAN, "invalid value for \"prevIndex\""))?;
    let since = form
        .unsigned("waitIndex")
        .map_err(|()| field_error(ECODE_INDEX_NAN, "invalid value for \"waitIndex\""))?;
    let recursive = boolean("recursive")?;
    let sorted = boolean("sorted")?;
    let wait = boolean("wait")?;
    let dir = boolean("dir")?;
    let quorum = boolean("quorum")?;
    let stream = boolean("stream")?;
    if wait && method != Method::GET {
        return Err(field_error(
            ECODE_INVALID_FIELD,
            "\"wait\" can only be used with GET requests",
        ));
    }
    let prev_value = form.value("prevValue").to_string();
    if form.has("prevValue") && prev_value.is_empty() {
        return Err(field_error(
            ECODE_PREV_VALUE_REQUIRED,
            "\"prevValue\" cannot be empty",
        ));
    }
    let no_value_on_success = boolean("noValueOnSuccess")?;
    let ttl = if form.value("ttl").is_empty() {
        None
    } else {
        Some(
            form.unsigned("ttl")
                .map_err(|()| field_error(ECODE_TTL_NAN, "invalid value for \"ttl\""))?,
        )
    };
    let prev_exist = if form.has("prevExist") {
        Some(
            form.boolean("prevExist")
                .map_err(|()| field_error(ECODE_INVALID_FIELD, "invalid value for prevExist"))?,
        )
    } else {
        None
    };
    let mut refresh = false;
    if form.has("refresh") {
        refresh = form
            .boolean("refresh")
            .map_err(|()| field_error(ECODE_INVALID_FIELD, "invalid value for refresh"))?;
        if refresh {
            if form.has("value") && !form.value("value").is_empty() {
                return Err(field_error(
                    ECODE_REFRESH_VALUE,
                    "A value was provided on a refresh",
                ));
            }
            if ttl.is_none() {
                return Err(field_error(ECODE_REFRESH_TTL_REQUIRED, "No TTL value set"));
            }
        }
    }
    let v2_method = match *method {
        Method::POST => V2Method::Post,
        Method::DELETE => V2Method::Delete,
        Method::GET | Method::HEAD if quorum => V2Method::QGet,
        _ => V2Method::Put,
    };
    let expiration = match ttl {
        Some(0) | None => 0,
        Some(seconds) => now.saturating_add((seconds as i64).saturating_mul(1_000_000_000)),
    };
    Ok(KeyRequest {
        request: Request {
            method: v2_method,
            path: path.to_string(),
            value: form.value("value").to_string(),
            dir,
            prev_value,
            prev_index,
            prev_exist,
            expiration,
            refresh,
            recursive,
            sorted,
            time: 0,
            internal: false,
        },
        wait,
        since,
        quorum,
        stream,
        no_value_on_success,
    })
}

/// The state the v2 routes share.
#[derive(Clone)]
pub struct V2State {
    pub core: Arc<Core>,
    pub store: SharedV2Store,
}

fn cluster_id(core: &Core) -> HeaderValue {
    HeaderValue::from_str(&format!("{:x}", core.cluster_id)).unwrap_or(HeaderValue::from_static(""))
}

pub fn error_response(core: &Core, error: &V2Error) -> Response {
    let mut response = Response::new(Body::from(json::error(error)));
    *response.status_mut() =
        StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let headers = response.headers_mut();
    headers.insert("x-etcd-cluster-id", cluster_id(core));
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("x-etcd-index", HeaderValue::from(error.index));
    response
}

fn raft_headers(core: &Core, response: &mut Response, etcd_index: u64) {
    let headers = response.headers_mut();
    headers.insert("x-etcd-cluster-id", cluster_id(core));
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("x-etcd-index", HeaderValue::from(etcd_index));
    let status = &core.raft.status;
    headers.insert(
        "x-raft-index",
        HeaderValue::from(status.commit_index.load(Ordering::Acquire)),
    );
    headers.insert("x-raft-term", HeaderValue::from(status.term()));
}

fn event_response(core: &Core, event: &Event, bare: bool) -> Response {
    let bare = bare
        && matches!(
            event.action,
            crate::state::v2::Action::Set
                | crate::state::v2::Action::CompareAndSwap
                | crate::state::v2::Action::Create
                | crate::state::v2::Action::Update
        );
    let mut response = Response::new(Body::from(json::event(event, now_nanos(), bare)));
    if event.is_created() {
        *response.status_mut() = StatusCode::CREATED;
    }
    raft_headers(core, &mut response, event.etcd_index);
    response
}

/// Proposes a v2 request through raft and waits for its outcome.
pub async fn propose(core: &Core, request: &Request) -> Result<Option<Event>, V2Error> {
    let result = core
        .propose(internal_request::Request::V2(request.to_proto()))
        .await
        .map_err(|e| V2Error::new(ECODE_RAFT_INTERNAL, e.message, 0))?;
    match result.result {
        Some(apply_result::Result::V2(outcome)) => crate::state::v2::decode_outcome(&outcome)
            .map_err(|e| V2Error::new(ECODE_RAFT_INTERNAL, e.to_string(), 0))?,
        Some(apply_result::Result::Error(error)) => {
            Err(V2Error::new(ECODE_RAFT_INTERNAL, error.message, 0))
        }
        _ => Err(V2Error::new(
            ECODE_RAFT_INTERNAL,
            "unexpected apply result",
            0,
        )),
    }
}

pub async fn keys(
    State(state): State<V2State>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    body: Bytes,
) -> Response {
    let core = &state.core;
    if !matches!(
        method,
        Method::HEAD | Method::GET | Method::PUT | Method::POST | Method::DELETE
    ) {
        return super::method_not_allowed("HEAD,GET,PUT,POST,DELETE");
    }
    let path = decode_path(uri.path().get(KEYS_PREFIX.len()..).unwrap_or(""));
    let form = Form::parse(&method, &uri, &headers, &body);
    let parsed = match parse(&method, &path, &form, now_nanos()) {
        Ok(parsed) => parsed,
        Err(error) => return error_response(core, &error),
    };
    let allowed = super::auth::AuthStore::new(&state)
        .has_key_prefix_access(
            &method,
            &headers,
            &extensions,
            &path,
            parsed.request.recursive,
        )
        .await;
    if !allowed {
        return error_response(
            core,
            &V2Error::new(ECODE_UNAUTHORIZED, "Insufficient credentials", 0),
        );
    }
    if method == Method::GET && parsed.wait {
        return watch(&state, &parsed).await;
    }
    let outcome = if (method == Method::GET || method == Method::HEAD) && !parsed.quorum {
        state
            .store
            .lock()
            .get(
                &parsed.request.path,
                parsed.request.recursive,
                parsed.request.sorted,
            )
            .map(Some)
    } else {
        propose(core, &parsed.request).await
    };
    match outcome {
        Ok(Some(event)) => event_response(core, &event, parsed.no_value_on_success),
        Ok(None) => error_response(
            core,
            &V2Error::new(
                ECODE_RAFT_INTERNAL,
                "received response with no Event/Watcher",
                0,
            ),
        ),
        Err(error) => error_response(core, &error),
    }
}

/// Removes its watcher from the hub when the response ends or the client leaves.
struct WatchGuard {
    store: SharedV2Store,
    id: Option<u64>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.store.lock().hub().remove(id);
        }
    }
}

async fn watch(state: &V2State, parsed: &KeyRequest) -> Response {
    let core = &state.core;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Event>(WATCH_BUFFER);
    let sink = Box::new(move |event: &Event| sender.try_send(event.clone()).is_ok());
    let started = {
        let mut store = state.store.lock();
        let index = store.index();
        store
            .watch(
                &parsed.request.path,
                parsed.request.recursive,
                parsed.stream,
                parsed.since,
                sink,
            )
            .map(|start| (start, index))
    };
    let (start, start_index) = match started {
        Ok(started) => started,
        Err(error) => return error_response(core, &error),
    };
    let guard = match start {
        WatchStart::Immediate(event) => {
            let mut response = Response::new(Body::from(json::event(&event, now_nanos(), false)));
            raft_headers(core, &mut response, start_index);
            return response;
        }
        WatchStart::Registered(id) => WatchGuard {
            store: state.store.clone(),
            id: Some(id),
        },
    };
    let stream = parsed.stream;
    let events = futures::stream::unfold(
        (receiver, guard, false),
        move |(mut receiver, guard, finished)| async move {
            if finished {
                return None;
            }
            let event = receiver.recv().await?;
            let chunk = Bytes::from(json::event(&event, now_nanos(), false));
            Some((Ok::<Bytes, Infallible>(chunk), (receiver, guard, !stream)))
        },
    );
    let mut response = Response::new(Body::from_stream(events));
    raft_headers(core, &mut response, start_index);
    response
}
