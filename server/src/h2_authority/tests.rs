//! Tests of the authority fix: frame handling over in-memory streams cut into chunks of
//! every size, then real sockets in front of the combined listener.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::hpack::{STATIC_TABLE, encode_integer, huffman_encode};
use super::*;

const FRAME_DATA: u8 = 0x0;
const FRAME_SETTINGS: u8 = 0x4;
const FRAME_PING: u8 = 0x6;
const FRAME_GOAWAY: u8 = 0x7;
const FRAME_RST_STREAM: u8 = 0x3;
const FRAME_WINDOW_UPDATE: u8 = 0x8;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;

type Fields = Vec<(String, String)>;

fn fields(list: &[(&str, &str)]) -> Fields {
    list.iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// A client's HPACK encoder the way grpc-go and h2 use it: whole-field matches are
/// indexed, everything else is a literal with incremental indexing (name by index when
/// known), strings Huffman-coded; the table evicts at its size.
struct ClientEncoder {
    table: VecDeque<(String, String)>,
    size: usize,
    max_size: usize,
    pending_size_update: Option<usize>,
}

impl ClientEncoder {
    fn new() -> Self {
        Self {
            table: VecDeque::new(),
            size: 0,
            max_size: 4096,
            pending_size_update: None,
        }
    }

    fn set_table_size(&mut self, size: usize) {
        self.max_size = size;
        self.evict_to(size);
        self.pending_size_update = Some(size);
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            let (name, value) = self.table.pop_back().unwrap();
            self.size -= name.len() + value.len() + 32;
        }
    }

    fn find(&self, name: &str, value: &str) -> (Option<usize>, Option<usize>) {
        let statics = STATIC_TABLE.iter().map(|(n, v)| (*n, *v));
        let dynamics = self.table.iter().map(|(n, v)| (n.as_str(), v.as_str()));
        let mut name_index = None;
        for (position, (n, v)) in statics.chain(dynamics).enumerate() {
            if n == name {
                if v == value {
                    return (Some(position + 1), Some(position + 1));
                }
                name_index.get_or_insert(position + 1);
            }
        }
        (None, name_index)
    }

    fn encode(&mut self, list: &Fields) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(size) = self.pending_size_update.take() {
            encode_integer(&mut out, size, 5, 0x20);
        }
        for (name, value) in list {
            match self.find(name, value) {
                (Some(index), _) => encode_integer(&mut out, index, 7, 0x80),
                (None, name_index) => {
                    match name_index {
                        Some(index) => encode_integer(&mut out, index, 6, 0x40),
                        None => {
                            out.push(0x40);
                            huffman_string(&mut out, name.as_bytes());
                        }
                    }
                    huffman_string(&mut out, value.as_bytes());
                    let entry_size = name.len() + value.len() + 32;
                    if entry_size > self.max_size {
                        self.evict_to(0);
                    } else {
                        self.evict_to(self.max_size - entry_size);
                        self.size += entry_size;
                        self.table.push_front((name.clone(), value.clone()));
                    }
                }
            }
        }
        out
    }
}

fn huffman_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut coded = Vec::new();
    huffman_encode(bytes, &mut coded);
    encode_integer(out, coded.len(), 7, 0x80);
    out.extend_from_slice(&coded);
}

fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    FrameHead::write(&mut out, payload.len(), kind, flags, stream_id);
    out.extend_from_slice(payload);
    out
}

fn grpc_request(authority: &str, request_id: usize) -> Fields {
    fields(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/etcdserverpb.KV/Range"),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("user-agent", "grpc-go/1.26.0"),
        ("te", "trailers"),
        ("x-request-id", &format!("request-{request_id:04}")),
    ])
}

/// `list` with `:authority` as the shim should pass it on.
fn fixed(list: &Fields, authority: Option<&str>) -> Fields {
    list.iter()
        .filter_map(|(name, value)| match name.as_str() {
            ":authority" => authority.map(|a| (name.clone(), a.to_string())),
            _ => Some((name.clone(), value.clone())),
        })
        .collect()
}

/// Yields `data` in reads of at most `chunk` bytes.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
}

impl AsyncRead for Chunked {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = this
            .chunk
            .min(buf.remaining())
            .min(this.data.len() - this.pos);
        buf.put_slice(&this.data[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// Everything the shim hands on for `input` read in `chunk`-byte pieces, read by the
/// caller `read_size` bytes at a time.
async fn through_shim(input: &[u8], chunk: usize, read_size: usize) -> Vec<u8> {
    let mut shim = AuthorityFix::new(Chunked {
        data: input.to_vec(),
        pos: 0,
        chunk,
    });
    let mut out = Vec::new();
    let mut buf = vec![0; read_size];
    loop {
        let n = shim.read(&mut buf).await.unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

const CHUNKS: [usize; 5] = [1, 5, 9, 1000, 1 << 20];
const READ_SIZES: [usize; 3] = [1, 13, 64 * 1024];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    kind: u8,
    flags: u8,
    stream_id: u32,
    payload: Vec<u8>,
}

fn parse_frames(mut bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let head = FrameHead::parse(bytes);
        frames.push(Frame {
            kind: head.kind,
            flags: head.flags,
            stream_id: head.stream_id,
            payload: bytes[FRAME_HEADER_LEN..FRAME_HEADER_LEN + head.len].to_vec(),
        });
        bytes = &bytes[FRAME_HEADER_LEN + head.len..];
    }
    frames
}

/// A header block as the server sees it after the shim.
#[derive(Debug)]
struct Block {
    stream_id: u32,
    flags: u8,
    priority: Option<Vec<u8>>,
    fields: Fields,
}

/// Splits the shim's HTTP/2 output into its header blocks (decoded by a fresh decoder,
/// as the server's) and its other frames, checking what the server's decoder relies on:
/// one HEADERS frame then CONTINUATIONs, no padding, and no dynamic table use.
fn server_view(output: &[u8]) -> (Vec<Block>, Vec<Frame>) {
    assert_eq!(&output[..PREFACE.len()], PREFACE);
    let mut decoder = Decoder::new(HEADER_TABLE_SIZE);
    let mut blocks = Vec::new();
    let mut others = Vec::new();
    let mut pending: Option<(Frame, Vec<u8>)> = None;
    for frame in parse_frames(&output[PREFACE.len()..]) {
        assert!(frame.payload.len() <= MAX_FRAME_SIZE, "frame over the size");
        let complete = match (frame.kind, pending.take()) {
            (FRAME_HEADERS, None) => {
                assert_eq!(frame.flags & FLAG_PADDED, 0);
                let skip = if frame.flags & FLAG_PRIORITY != 0 {
                    5
                } else {
                    0
                };
                let fragment = frame.payload[skip..].to_vec();
                if frame.flags & FLAG_END_HEADERS != 0 {
                    Some((frame, fragment))
                } else {
                    pending = Some((frame, fragment));
                    None
                }
            }
            (FRAME_CONTINUATION, Some((first, mut fragment))) => {
                assert_eq!(frame.stream_id, first.stream_id);
                fragment.extend_from_slice(&frame.payload);
                if frame.flags & FLAG_END_HEADERS != 0 {
                    Some((first, fragment))
                } else {
                    pending = Some((first, fragment));
                    None
                }
            }
            (_, None) => {
                others.push(frame);
                None
            }
            (kind, Some(_)) => panic!("frame type {kind} inside a header block"),
        };
        let Some((first, fragment)) = complete else {
            continue;
        };
        let mut decoded = Vec::new();
        decoder
            .decode(&fragment, usize::MAX, |name, value, _| {
                decoded.push((
                    String::from_utf8(name.to_vec()).unwrap(),
                    String::from_utf8(value.to_vec()).unwrap(),
                ));
            })
            .unwrap();
        assert_eq!(decoder.dynamic_table_len(), 0, "the shim must not index");
        blocks.push(Block {
            stream_id: first.stream_id,
            flags: first.flags,
            priority: (first.flags & FLAG_PRIORITY != 0).then(|| first.payload[..5].to_vec()),
            fields: decoded,
        });
    }
    assert!(pending.is_none(), "output ends inside a header block");
    (blocks, others)
}

#[test]
fn authorities_lose_their_scheme_or_are_dropped() {
    let cases: [(&str, Option<&str>); 12] = [
        ("127.0.0.1:2379", Some("127.0.0.1:2379")),
        ("localhost", Some("localhost")),
        ("[::1]:2379", Some("[::1]:2379")),
        ("http://127.0.0.1:2379", Some("127.0.0.1:2379")),
        ("https://etcd.example:2379/", Some("etcd.example:2379")),
        ("HTTP://127.0.0.1:2379", Some("127.0.0.1:2379")),
        ("unix://localhost:12345", Some("localhost:12345")),
        ("unixs://localhost:12345", Some("localhost:12345")),
        ("127.0.0.1:2379/", Some("127.0.0.1:2379")),
        ("http://", None),
        ("http://a b:1", None),
        ("unix:///tmp/etcd.sock", None),
    ];
    for (value, expected) in cases {
        let got = normalize_authority(value.as_bytes()).map(|a| std::str::from_utf8(a).unwrap());
        assert_eq!(got, expected, "{value}");
    }
}

#[tokio::test]
async fn http1_and_near_misses_of_the_preface_pass_untouched() {
    let inputs: [&[u8]; 5] = [
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"POST /v3/kv/put HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
        b"PRI * HTTP/1.1\r\n\r\nhttp://127.0.0.1 and more bytes after it",
        b"PRI * HTTP/2.0\r\n",
        b"",
    ];
    for input in inputs {
        for chunk in CHUNKS {
            for read_size in READ_SIZES {
                assert_eq!(through_shim(input, chunk, read_size).await, input);
            }
        }
    }
}

#[tokio::test]
async fn a_schemed_authority_is_fixed_and_other_frames_pass_unchanged() {
    let request = grpc_request("http://127.0.0.1:2379", 1);
    let block = ClientEncoder::new().encode(&request);
    let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let mut input = PREFACE.to_vec();
    let settings = frame(FRAME_SETTINGS, 0, 0, &[0, 4, 0, 0x10, 0, 0]);
    let window = frame(FRAME_WINDOW_UPDATE, 0, 0, &[0, 0x0F, 0, 1]);
    let ping = frame(FRAME_PING, 0, 0, b"12345678");
    input.extend(&settings);
    input.extend(&window);
    input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &block));
    input.extend(frame(FRAME_DATA, FLAG_END_STREAM, 1, &body));
    input.extend(&ping);
    for chunk in CHUNKS {
        for read_size in READ_SIZES {
            let output = through_shim(&input, chunk, read_size).await;
            let (blocks, others) = server_view(&output);
            assert_eq!(blocks.len(), 1);
            assert_eq!(blocks[0].fields, fixed(&request, Some("127.0.0.1:2379")));
            assert_eq!(
                (blocks[0].stream_id, blocks[0].flags),
                (1, FLAG_END_HEADERS)
            );
            let others: Vec<Vec<u8>> = others
                .iter()
                .map(|f| frame(f.kind, f.flags, f.stream_id, &f.payload))
                .collect();
            let data = frame(FRAME_DATA, FLAG_END_STREAM, 1, &body);
            assert_eq!(
                others,
                [settings.clone(), window.clone(), data, ping.clone()]
            );
        }
    }
}

#[tokio::test]
async fn continuation_padding_and_priority_are_merged_into_one_clean_frame() {
    let request = grpc_request("https://etcd.example:2379/", 3);
    let block = ClientEncoder::new().encode(&request);
    let (part1, part2) = block.split_at(block.len() / 3);
    let (part2, part3) = part2.split_at(part2.len() / 2);
    let priority = [0x80, 0, 0, 1, 200]; // exclusive, depends on stream 1, weight 201
    let mut first = vec![4]; // pad length
    first.extend(priority);
    first.extend(part1);
    first.extend([0; 4]);
    let mut input = PREFACE.to_vec();
    input.extend(frame(
        FRAME_HEADERS,
        FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM,
        3,
        &first,
    ));
    input.extend(frame(FRAME_CONTINUATION, 0, 3, part2));
    input.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 3, part3));
    for chunk in CHUNKS {
        for read_size in READ_SIZES {
            let output = through_shim(&input, chunk, read_size).await;
            let raw = parse_frames(&output[PREFACE.len()..]);
            assert_eq!(raw.len(), 1, "one HEADERS frame, no CONTINUATION");
            let (blocks, others) = server_view(&output);
            assert!(others.is_empty());
            assert_eq!(blocks[0].stream_id, 3);
            assert_eq!(
                blocks[0].flags,
                FLAG_PRIORITY | FLAG_END_STREAM | FLAG_END_HEADERS
            );
            assert_eq!(blocks[0].priority.as_deref(), Some(&priority[..]));
            assert_eq!(blocks[0].fields, fixed(&request, Some("etcd.example:2379")));
        }
    }
}

#[tokio::test]
async fn a_block_larger_than_a_frame_is_split_into_continuations() {
    let mut request = grpc_request("http://127.0.0.1:2379", 4);
    request.push(("x-large".into(), "v".repeat(30_000)));
    let block = ClientEncoder::new().encode(&request);
    let (part1, part2) = block.split_at(MAX_FRAME_SIZE);
    let mut input = PREFACE.to_vec();
    input.extend(frame(FRAME_HEADERS, 0, 5, part1));
    input.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 5, part2));
    for chunk in [7, 1 << 20] {
        let output = through_shim(&input, chunk, 64 * 1024).await;
        let raw = parse_frames(&output[PREFACE.len()..]);
        let shape: Vec<(u8, u8, usize)> = raw
            .iter()
            .map(|f| (f.kind, f.flags, f.payload.len()))
            .collect();
        // The value is no longer Huffman-coded: 30,000 bytes and change, two frames.
        assert_eq!(shape.len(), 2, "{shape:?}");
        assert_eq!(shape[0], (FRAME_HEADERS, 0, MAX_FRAME_SIZE));
        assert_eq!(shape[1].0, FRAME_CONTINUATION);
        assert_eq!(shape[1].1, FLAG_END_HEADERS);
        assert!(shape[1].2 > 30_000 - MAX_FRAME_SIZE);
        let (blocks, _) = server_view(&output);
        assert_eq!(blocks[0].fields, fixed(&request, Some("127.0.0.1:2379")));
    }
}

#[tokio::test]
async fn the_clients_dynamic_table_is_followed_across_requests() {
    let mut encoder = ClientEncoder::new();
    let mut input = PREFACE.to_vec();
    input.extend(frame(FRAME_SETTINGS, 0, 0, &[]));
    let mut expected = Vec::new();
    for i in 0..60 {
        let (authority, kept) = match i % 4 {
            0 | 1 => ("http://127.0.0.1:2379", Some("127.0.0.1:2379")),
            2 => ("localhost:2379", Some("localhost:2379")),
            _ => ("http://not a host/", None),
        };
        match i {
            20 => encoder.set_table_size(200),
            30 => encoder.set_table_size(0),
            40 => encoder.set_table_size(4096),
            _ => {}
        }
        let mut request = grpc_request(authority, i % 7);
        // Values big enough that entries are evicted as the table fills.
        request.push(("x-filler".into(), format!("{i}").repeat(i * 10)));
        let stream_id = 1 + 2 * i as u32;
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            stream_id,
            &encoder.encode(&request),
        ));
        input.extend(frame(FRAME_DATA, FLAG_END_STREAM, stream_id, &[0; 5]));
        expected.push(fixed(&request, kept));
    }
    assert!(encoder.table.len() > 3, "the client did use its table");
    for chunk in [1, 100, 1 << 20] {
        let output = through_shim(&input, chunk, 64 * 1024).await;
        let (blocks, _) = server_view(&output);
        let got: Vec<Fields> = blocks.into_iter().map(|b| b.fields).collect();
        assert_eq!(got, expected);
    }
}

#[tokio::test]
async fn streams_the_shim_cannot_follow_pass_through_unchanged() {
    let good = ClientEncoder::new().encode(&grpc_request("http://127.0.0.1:2379", 0));
    let later = frame(FRAME_HEADERS, FLAG_END_HEADERS, 9, &good);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "index 0",
            frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &[0x80]),
        ),
        (
            "size update too big",
            frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &[0x3F, 0xE2, 0x1F]),
        ),
        (
            "continuation alone",
            frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, &good),
        ),
        (
            "headers on stream 0",
            frame(FRAME_HEADERS, FLAG_END_HEADERS, 0, &good),
        ),
        (
            "data inside a block",
            [
                frame(FRAME_HEADERS, 0, 1, &good),
                frame(FRAME_DATA, 0, 1, b"x"),
            ]
            .concat(),
        ),
        (
            "continuation of another stream",
            [
                frame(FRAME_HEADERS, 0, 1, &good[..4]),
                frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 3, &good[4..]),
            ]
            .concat(),
        ),
        (
            "bad hpack after a continuation",
            [
                frame(FRAME_HEADERS, 0, 1, &good),
                frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, &[0x80]),
            ]
            .concat(),
        ),
        (
            "padding longer than the frame",
            frame(
                FRAME_HEADERS,
                FLAG_END_HEADERS | FLAG_PADDED,
                1,
                &[200, 0x82],
            ),
        ),
        (
            "frame over the frame size",
            frame(
                FRAME_HEADERS,
                FLAG_END_HEADERS,
                1,
                &vec![0x82; MAX_FRAME_SIZE + 1],
            ),
        ),
        (
            "push promise",
            frame(FRAME_PUSH_PROMISE, FLAG_END_HEADERS, 1, &good),
        ),
    ];
    for (what, frames) in cases {
        let mut input = PREFACE.to_vec();
        input.extend(frame(FRAME_SETTINGS, 0, 0, &[]));
        input.extend(&frames);
        input.extend(&later);
        for chunk in CHUNKS {
            let output = through_shim(&input, chunk, 8192).await;
            assert!(output == input, "{what} (chunks of {chunk})");
        }
    }

    // A connection that ends inside a block hands on what came.
    let mut input = PREFACE.to_vec();
    input.extend(frame(FRAME_HEADERS, 0, 1, &good));
    input.extend(&frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, &good)[..12]);
    for chunk in CHUNKS {
        assert_eq!(through_shim(&input, chunk, 8192).await, input);
    }
}

#[tokio::test]
async fn a_good_block_before_a_bad_one_stays_fixed() {
    let request = grpc_request("http://127.0.0.1:2379", 0);
    let mut input = PREFACE.to_vec();
    input.extend(frame(
        FRAME_HEADERS,
        FLAG_END_HEADERS,
        1,
        &ClientEncoder::new().encode(&request),
    ));
    let bad = frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &[0x80]);
    input.extend(&bad);
    let output = through_shim(&input, 1 << 20, 8192).await;
    assert!(output.ends_with(&bad));
    let (blocks, _) = server_view(&output[..output.len() - bad.len()]);
    assert_eq!(blocks[0].fields, fixed(&request, Some("127.0.0.1:2379")));
}

// ---- Real sockets: the combined listener with the shim in front of hyper. ----

/// Serves the peer MemberInfo service and an `/echo` route on 127.0.0.1; returns the
/// address and a sender that stops the server.
async fn serve_echo() -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    use crate::transport::PeerTransport;
    use concord_proto::concordpb::MemberInfoResponse;

    let (inbound, _) = std::sync::mpsc::channel();
    let transport = PeerTransport::new(7, 99, None, inbound);
    let grpc = tonic::service::Routes::new(transport.service(|| MemberInfoResponse {
        cluster_id: 99,
        member_id: 7,
        name: "m7".into(),
        ..Default::default()
    }));
    let http = axum::Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .route(
            "/echo",
            axum::routing::get(|request: axum::extract::Request| async move {
                let authority = request.uri().authority().map(|a| a.to_string());
                let header = request
                    .headers()
                    .get("x-test")
                    .map(|v| v.to_str().unwrap_or("?").to_string());
                format!(
                    "{} {}",
                    authority.unwrap_or_default(),
                    header.unwrap_or_default()
                )
            }),
        );
    let url = url::Url::parse("http://127.0.0.1:0").unwrap();
    let bound = crate::listener::bind(&url).await.unwrap();
    let addr = bound.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(crate::listener::serve(
        bound,
        None,
        grpc,
        Some(http),
        async {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

/// What a raw client collected for one stream.
#[derive(Debug, Default)]
struct Response {
    headers: Fields,
    data: Vec<u8>,
    ended: bool,
}

/// Sends `requests` (header list, optional body) as streams 1, 3, 5, ... on one raw
/// HTTP/2 connection, encoding with a dynamic-table-using encoder, and collects the
/// responses.
async fn raw_h2_exchange(
    addr: std::net::SocketAddr,
    requests: &[(Fields, Option<Vec<u8>>)],
) -> Vec<Response> {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let mut encoder = ClientEncoder::new();
    let mut out = PREFACE.to_vec();
    out.extend(frame(FRAME_SETTINGS, 0, 0, &[]));
    for (i, (headers, body)) in requests.iter().enumerate() {
        let stream_id = 1 + 2 * i as u32;
        let block = encoder.encode(headers);
        let flags = if body.is_some() { 0 } else { FLAG_END_STREAM };
        out.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS | flags,
            stream_id,
            &block,
        ));
        if let Some(body) = body {
            out.extend(frame(FRAME_DATA, FLAG_END_STREAM, stream_id, body));
        }
    }
    socket.write_all(&out).await.unwrap();

    let mut decoder = Decoder::new(4096);
    let mut responses: HashMap<u32, Response> = HashMap::new();
    let exchange = async {
        while responses.values().filter(|r| r.ended).count() < requests.len() {
            let mut head = [0; FRAME_HEADER_LEN];
            socket.read_exact(&mut head).await.unwrap();
            let head = FrameHead::parse(&head);
            let mut payload = vec![0; head.len];
            socket.read_exact(&mut payload).await.unwrap();
            let response = responses.entry(head.stream_id).or_default();
            match head.kind {
                FRAME_SETTINGS if head.flags & FLAG_ACK == 0 => {
                    socket
                        .write_all(&frame(FRAME_SETTINGS, FLAG_ACK, 0, &[]))
                        .await
                        .unwrap();
                }
                FRAME_HEADERS => {
                    assert_ne!(
                        head.flags & FLAG_END_HEADERS,
                        0,
                        "short responses fit a frame"
                    );
                    decoder
                        .decode(&payload, usize::MAX, |name, value, _| {
                            response.headers.push((
                                String::from_utf8_lossy(name).into_owned(),
                                String::from_utf8_lossy(value).into_owned(),
                            ));
                        })
                        .unwrap();
                    response.ended = head.flags & FLAG_END_STREAM != 0;
                }
                FRAME_DATA => {
                    response.data.extend_from_slice(&payload);
                    response.ended = head.flags & FLAG_END_STREAM != 0;
                }
                FRAME_RST_STREAM | FRAME_GOAWAY => {
                    panic!(
                        "stream {} refused: frame {} {payload:?}",
                        head.stream_id, head.kind
                    )
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("the server answers within 20 s");
    (0..requests.len())
        .map(|i| responses.remove(&(1 + 2 * i as u32)).unwrap())
        .collect()
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn a_schemed_authority_is_served_over_a_real_socket_and_http1_still_works() {
    let (addr, stop) = serve_echo().await;
    let schemed = format!("http://{addr}");
    let member_info = |authority: &str| {
        fields(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/concordpb.Peer/MemberInfo"),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ])
    };
    let echo = fields(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/echo"),
        (":authority", &schemed),
        ("x-test", "kept"),
    ]);
    let empty_message = Some(vec![0; 5]);
    let responses = raw_h2_exchange(
        addr,
        &[
            (member_info(&schemed), empty_message.clone()),
            // The second request reuses the client's table entries from the first.
            (member_info(&schemed), empty_message.clone()),
            (member_info("unix://localhost:2379"), empty_message),
            (echo, None),
        ],
    )
    .await;
    for response in &responses[..3] {
        assert_eq!(header(response, ":status"), Some("200"), "{response:?}");
        assert_eq!(header(response, "grpc-status"), Some("0"), "{response:?}");
        let reply =
            concord_proto::concordpb::MemberInfoResponse::decode(&response.data[5..]).unwrap();
        assert_eq!((reply.member_id, reply.name.as_str()), (7, "m7"));
    }
    assert_eq!(header(&responses[3], ":status"), Some("200"));
    assert_eq!(
        String::from_utf8_lossy(&responses[3].data),
        format!("{addr} kept")
    );

    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    tcp.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.ends_with("ok"), "{reply}");
    stop.send(()).unwrap();
}

#[tokio::test]
async fn h2s_own_client_encoder_survives_the_rewrite() {
    // h2's client indexes and Huffman-codes on its own terms: every header must still
    // reach the handler intact, over many requests that fill and evict its table.
    let (addr, stop) = serve_echo().await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    for i in 0..50usize {
        let value = format!("value-{i}-{}", "ab".repeat((i * 37) % 300));
        let request = http::Request::get(format!("http://{addr}/echo"))
            .header("x-test", &value)
            .header("x-constant", "same every time")
            .body(())
            .unwrap();
        let mut client = client.clone().ready().await.unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            body.flow_control().release_capacity(chunk.len()).unwrap();
            text.extend_from_slice(&chunk);
        }
        assert_eq!(String::from_utf8(text).unwrap(), format!("{addr} {value}"));
    }
    stop.send(()).unwrap();
}
