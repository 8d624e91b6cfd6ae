//! A byte-stream shim in front of hyper that repairs one thing in HTTP/2 requests: an
//! `:authority` carrying a URL scheme.
//!
//! etcd's Go clients dial `passthrough:///http://127.0.0.1:2379` when given
//! `--endpoints http://127.0.0.1:2379`, so grpc-go sends `:authority: http://127.0.0.1:2379`.
//! grpc-go servers (etcd) accept it; h2, under hyper, resets such a stream with
//! PROTOCOL_ERROR ("malformed authority"). [`AuthorityFix`] wraps an accepted connection
//! (TCP, Unix or decrypted TLS) and rewrites the client's header blocks on their way to
//! hyper: the scheme prefix and a trailing `/` are stripped from `:authority`, and an
//! authority that is still invalid is dropped, so the request is served.
//!
//! How: the first 24 bytes decide. Anything but the HTTP/2 connection preface is HTTP/1.x
//! and passes untouched. For HTTP/2, frames pass unchanged except header blocks
//! (HEADERS + CONTINUATION), which are decoded with the client's HPACK dynamic table and
//! re-encoded as literals without indexing: the server's HPACK table then stays empty, in
//! step whatever the client's holds. Only header blocks are decoded; DATA frames are
//! copied at most once. A frame stream the shim cannot follow (bad HPACK, a frame out of
//! place) passes through unchanged from that point on, for hyper to reject as it would
//! have. Writes (server → client) are not touched.
//!
//! ```
//! # async fn example() -> std::io::Result<()> {
//! use concord_server::h2_authority::AuthorityFix;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let (mut client, server) = tokio::io::duplex(1024);
//! client.write_all(b"GET /health HTTP/1.1\r\n\r\n").await?;
//! drop(client);
//! let mut fixed = AuthorityFix::new(server); // hand this to hyper instead of `server`
//! let mut seen = String::new();
//! fixed.read_to_string(&mut seen).await?;
//! assert_eq!(seen, "GET /health HTTP/1.1\r\n\r\n"); // HTTP/1.x passes untouched
//! # Ok(()) }
//! ```

mod hpack;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::debug;

use self::hpack::{Decoder, encode_literal};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// SETTINGS_HEADER_TABLE_SIZE the server advertises: hyper leaves h2's default (4096),
/// so the client's dynamic table never exceeds it.
const HEADER_TABLE_SIZE: usize = 4096;
/// SETTINGS_MAX_FRAME_SIZE the server advertises (hyper's default, 16 KiB): the largest
/// frame the client may send and the size rewritten blocks are split at.
const MAX_FRAME_SIZE: usize = 16 * 1024;
/// The most bytes a rewritten header block may take. h2 accepts at most 5 CONTINUATION
/// frames after a HEADERS frame at this frame size (and a 16 KiB header list), so a
/// larger block would be refused anyway; the limit also bounds what a client can make
/// the shim allocate by repeating references to large dynamic-table entries.
const MAX_BLOCK_BYTES: usize = 6 * MAX_FRAME_SIZE;

const FRAME_HEADER_LEN: usize = 9;

const FRAME_HEADERS: u8 = 0x1;
const FRAME_PUSH_PROMISE: u8 = 0x5;
const FRAME_CONTINUATION: u8 = 0x9;

const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// URL schemes etcd's clients may leave in front of the authority.
const SCHEME_PREFIXES: [&[u8]; 4] = [b"http://", b"https://", b"unix://", b"unixs://"];

/// The `:authority` to send on for `value`: unchanged when h2 accepts it, else without
/// a scheme prefix and trailing `/`; `None` (drop the field) when even that is invalid.
pub fn normalize_authority(value: &[u8]) -> Option<&[u8]> {
    if is_valid_authority(value) {
        return Some(value);
    }
    let mut rest = value;
    for scheme in SCHEME_PREFIXES {
        if rest.len() >= scheme.len() && rest[..scheme.len()].eq_ignore_ascii_case(scheme) {
            rest = &rest[scheme.len()..];
            break;
        }
    }
    while let [head @ .., b'/'] = rest {
        rest = head;
    }
    is_valid_authority(rest).then_some(rest)
}

/// The test h2 applies to `:authority` (it parses it as an `http::uri::Authority`).
fn is_valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// The fixed part of an HTTP/2 frame.
#[derive(Debug, Clone, Copy)]
struct FrameHead {
    len: usize,
    kind: u8,
    flags: u8,
    stream_id: u32,
}

impl FrameHead {
    fn parse(bytes: &[u8]) -> Self {
        Self {
            len: usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]),
            kind: bytes[3],
            flags: bytes[4],
            stream_id: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7FFF_FFFF,
        }
    }

    fn write(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream_id: u32) {
        // `len` is at most MAX_FRAME_SIZE, which fits the 24-bit field.
        out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&stream_id.to_be_bytes());
    }
}

/// A header block split over HEADERS and CONTINUATION frames, collected until
/// END_HEADERS.
#[derive(Debug)]
struct PendingBlock {
    stream_id: u32,
    /// The HEADERS frame's flags.
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The frames as received, replayed if the block cannot be rewritten.
    raw: Vec<u8>,
}

/// Why the shim stopped following the frame stream (logged, then everything passes).
#[derive(Debug)]
enum Unfollowable {
    Hpack(hpack::HpackError),
    Frame(&'static str),
}

impl std::fmt::Display for Unfollowable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unfollowable::Hpack(error) => write!(f, "undecodable header block ({error:?})"),
            Unfollowable::Frame(what) => f.write_str(what),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Deciding between HTTP/2 and HTTP/1.x from the first 24 bytes.
    Preface,
    /// Following HTTP/2 frames.
    Frames,
    /// Every byte passes as it is (HTTP/1.x, or a stream the shim cannot follow).
    Passthrough,
}

/// Bytes read from the connection and not yet handed on; `start..end` of `data`.
#[derive(Debug, Default)]
struct InputBuffer {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl InputBuffer {
    fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads once from `inner`, first making room for at least `want` bytes in all.
    fn poll_fill<S: AsyncRead + Unpin>(
        &mut self,
        inner: &mut S,
        cx: &mut Context<'_>,
        want: usize,
    ) -> Poll<io::Result<usize>> {
        let want = want.max(FRAME_HEADER_LEN + MAX_FRAME_SIZE);
        if self.data.len() - self.start < want || self.end == self.data.len() {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.data.len() < want {
                self.data.resize(want, 0);
            }
        }
        let mut read_buf = ReadBuf::new(&mut self.data[self.end..]);
        ready!(Pin::new(inner).poll_read(cx, &mut read_buf))?;
        let n = read_buf.filled().len();
        self.end += n;
        Poll::Ready(Ok(n))
    }
}

/// Bytes produced by the shim (rewritten header blocks), handed on before `input`.
#[derive(Debug, Default)]
struct OutputBuffer {
    data: Vec<u8>,
    pos: usize,
}

impl OutputBuffer {
    fn is_empty(&self) -> bool {
        self.pos == self.data.len()
    }

    fn copy_to(&mut self, buf: &mut ReadBuf<'_>) -> usize {
        let n = buf.remaining().min(self.data.len() - self.pos);
        buf.put_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        if self.is_empty() {
            self.data.clear();
            self.pos = 0;
        }
        n
    }
}

/// An accepted connection whose HTTP/2 requests get a usable `:authority` (see the
/// module docs). Reads are rewritten; writes pass straight through.
#[derive(Debug)]
pub struct AuthorityFix<S> {
    inner: S,
    mode: Mode,
    input: InputBuffer,
    output: OutputBuffer,
    /// Bytes at the front of `input` that go on as they are.
    ready: usize,
    /// Bytes of the current non-header frame's payload not yet seen.
    payload_left: usize,
    block: Option<PendingBlock>,
    decoder: Decoder,
    /// Where a header block is re-encoded before it is framed.
    scratch: Vec<u8>,
}

impl<S> AuthorityFix<S> {
    /// Wraps an accepted connection; nothing is read until hyper reads.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            mode: Mode::Preface,
            input: InputBuffer::default(),
            output: OutputBuffer::default(),
            ready: 0,
            payload_left: 0,
            block: None,
            decoder: Decoder::new(HEADER_TABLE_SIZE),
            scratch: Vec::new(),
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Hands `output`, then the ready part of `input`, to `buf`; false if neither had
    /// anything.
    fn deliver(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if !self.output.is_empty() {
            self.output.copy_to(buf);
            return true;
        }
        if self.ready > 0 {
            let n = buf.remaining().min(self.ready);
            buf.put_slice(&self.input.bytes()[..n]);
            self.input.consume(n);
            self.ready -= n;
            return true;
        }
        false
    }

    /// Stops following frames: a half-collected block is replayed as received and every
    /// byte from here on passes unchanged.
    fn fall_back(&mut self, why: Unfollowable) {
        debug!(%why, "HTTP/2 authority fix: passing the rest of the connection through");
        if let Some(block) = self.block.take() {
            self.output.data.extend_from_slice(&block.raw);
        }
        self.mode = Mode::Passthrough;
        self.ready = self.input.len();
        self.payload_left = 0;
    }

    /// Moves through the frames in `input` as far as possible. Returns how many bytes
    /// must be at the front of `input` before more progress is possible.
    fn advance(&mut self) -> usize {
        while self.mode == Mode::Frames {
            if self.payload_left > 0 {
                let available = self.input.len() - self.ready;
                let n = available.min(self.payload_left);
                self.ready += n;
                self.payload_left -= n;
                if self.payload_left > 0 {
                    return 0;
                }
            }
            let rest = &self.input.bytes()[self.ready..];
            if rest.len() < FRAME_HEADER_LEN {
                return FRAME_HEADER_LEN;
            }
            let head = FrameHead::parse(rest);
            let in_block = matches!(
                head.kind,
                FRAME_HEADERS | FRAME_CONTINUATION | FRAME_PUSH_PROMISE
            ) || self.block.is_some();
            if !in_block {
                self.ready += FRAME_HEADER_LEN;
                self.payload_left = head.len;
                continue;
            }
            if self.ready > 0 {
                // Hand on what precedes the header frame first, so it sits at the front.
                return 0;
            }
            if head.len > MAX_FRAME_SIZE {
                self.fall_back(Unfollowable::Frame("header frame over the frame size"));
                return 0;
            }
            if rest.len() < FRAME_HEADER_LEN + head.len {
                return FRAME_HEADER_LEN + head.len;
            }
            if let Err(why) = self.on_header_frame(head) {
                self.fall_back(why);
            }
        }
        0
    }

    /// Handles the complete header-block frame `head` at the front of `input`.
    fn on_header_frame(&mut self, head: FrameHead) -> Result<(), Unfollowable> {
        let frame_len = FRAME_HEADER_LEN + head.len;
        let frame = &self.input.bytes()[..frame_len];
        let payload = &frame[FRAME_HEADER_LEN..];
        match (head.kind, self.block.as_mut()) {
            (FRAME_HEADERS, None) => {
                if head.stream_id == 0 {
                    return Err(Unfollowable::Frame("HEADERS on stream 0"));
                }
                let (priority, fragment) = split_headers_payload(head.flags, payload)?;
                if head.flags & FLAG_END_HEADERS != 0 {
                    // The usual case, one frame: rewritten straight from the input.
                    rewrite_block(
                        &mut self.decoder,
                        &mut self.scratch,
                        &mut self.output.data,
                        head.stream_id,
                        head.flags,
                        priority,
                        fragment,
                    )?;
                } else {
                    self.block = Some(PendingBlock {
                        stream_id: head.stream_id,
                        flags: head.flags,
                        priority,
                        fragment: fragment.to_vec(),
                        raw: frame.to_vec(),
                    });
                }
            }
            (FRAME_CONTINUATION, Some(block)) if block.stream_id == head.stream_id => {
                if block.raw.len() + frame_len > MAX_BLOCK_BYTES {
                    return Err(Unfollowable::Frame("header block too large"));
                }
                block.fragment.extend_from_slice(payload);
                if head.flags & FLAG_END_HEADERS != 0 {
                    rewrite_block(
                        &mut self.decoder,
                        &mut self.scratch,
                        &mut self.output.data,
                        block.stream_id,
                        block.flags,
                        block.priority,
                        &block.fragment,
                    )?;
                    self.block = None;
                } else {
                    block.raw.extend_from_slice(frame);
                }
            }
            _ => return Err(Unfollowable::Frame("header block frame out of place")),
        }
        self.input.consume(frame_len);
        Ok(())
    }
}

/// Splits a HEADERS payload into its priority fields (if flagged) and its header block
/// fragment, without padding.
fn split_headers_payload(
    flags: u8,
    payload: &[u8],
) -> Result<(Option<[u8; 5]>, &[u8]), Unfollowable> {
    let mut body = payload;
    if flags & FLAG_PADDED != 0 {
        let (&pad_len, rest) = body
            .split_first()
            .ok_or(Unfollowable::Frame("PADDED without a pad length"))?;
        let keep = rest
            .len()
            .checked_sub(usize::from(pad_len))
            .ok_or(Unfollowable::Frame("padding longer than the frame"))?;
        body = &rest[..keep];
    }
    let mut priority = None;
    if flags & FLAG_PRIORITY != 0 {
        if body.len() < 5 {
            return Err(Unfollowable::Frame("PRIORITY fields cut short"));
        }
        let (fields, rest) = body.split_at(5);
        priority = Some([fields[0], fields[1], fields[2], fields[3], fields[4]]);
        body = rest;
    }
    Ok((priority, body))
}

/// Decodes `fragment`, re-encodes it as literals with a fixed `:authority`, and appends
/// it to `out` as HEADERS (+ CONTINUATION) frames. `out` is untouched on error.
fn rewrite_block(
    decoder: &mut Decoder,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
    stream_id: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: &[u8],
) -> Result<(), Unfollowable> {
    scratch.clear();
    decoder
        .decode(fragment, MAX_BLOCK_BYTES, |name, value, never_indexed| {
            if name == b":authority" {
                if let Some(authority) = normalize_authority(value) {
                    encode_literal(scratch, name, authority, never_indexed);
                }
            } else {
                encode_literal(scratch, name, value, never_indexed);
            }
        })
        .map_err(Unfollowable::Hpack)?;

    let priority_len = if priority.is_some() { 5 } else { 0 };
    let mut block: &[u8] = scratch;
    let first_len = block.len().min(MAX_FRAME_SIZE - priority_len);
    let (first, rest) = block.split_at(first_len);
    let mut headers_flags = flags & !(FLAG_PADDED | FLAG_END_HEADERS);
    if rest.is_empty() {
        headers_flags |= FLAG_END_HEADERS;
    }
    FrameHead::write(
        out,
        priority_len + first.len(),
        FRAME_HEADERS,
        headers_flags,
        stream_id,
    );
    if let Some(fields) = priority {
        out.extend_from_slice(&fields);
    }
    out.extend_from_slice(first);
    block = rest;
    while !block.is_empty() {
        let (chunk, rest) = block.split_at(block.len().min(MAX_FRAME_SIZE));
        let flags = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
        FrameHead::write(out, chunk.len(), FRAME_CONTINUATION, flags, stream_id);
        out.extend_from_slice(chunk);
        block = rest;
    }
    Ok(())
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if buf.remaining() == 0 || this.deliver(buf) {
                return Poll::Ready(Ok(()));
            }
            match this.mode {
                Mode::Passthrough => {
                    // Everything buffered was delivered: drop the buffer for good.
                    this.input = InputBuffer::default();
                    return Pin::new(&mut this.inner).poll_read(cx, buf);
                }
                Mode::Preface => {
                    let seen = this.input.bytes();
                    let n = seen.len().min(PREFACE.len());
                    if seen[..n] != PREFACE[..n] {
                        this.mode = Mode::Passthrough;
                        this.ready = this.input.len();
                    } else if n == PREFACE.len() {
                        this.mode = Mode::Frames;
                        this.ready = PREFACE.len();
                    } else if ready!(this.input.poll_fill(&mut this.inner, cx, PREFACE.len()))? == 0
                    {
                        // End of stream inside the preface: hand on what came.
                        this.mode = Mode::Passthrough;
                        this.ready = this.input.len();
                    }
                }
                Mode::Frames => {
                    let want = this.advance();
                    if !this.output.is_empty() || this.ready > 0 || this.mode != Mode::Frames {
                        continue;
                    }
                    if this.payload_left > 0 && this.input.len() == 0 {
                        // Inside a DATA (or other) frame with nothing buffered: read
                        // straight into the caller's buffer, no copy.
                        let limit = this.payload_left.min(buf.remaining());
                        let mut direct = ReadBuf::new(buf.initialize_unfilled_to(limit));
                        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut direct))?;
                        let n = direct.filled().len();
                        buf.advance(n);
                        this.payload_left -= n;
                        return Poll::Ready(Ok(()));
                    }
                    if ready!(this.input.poll_fill(&mut this.inner, cx, want))? == 0 {
                        // End of stream inside a frame: hand on what came, unchanged.
                        this.fall_back(Unfollowable::Frame("connection closed mid-frame"));
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
