//! The Watch service's gRPC codec: requests are decoded by prost as usual, responses
//! are the registry's [`Outgoing`]s, whose events are already encoded. The header's
//! cluster, member and term are filled in here, as each response is written.

use std::sync::Arc;

use concord_proto::etcdserverpb::{ResponseHeader, WatchRequest};
use concord_watch::Outgoing;
use concord_watch::wire::header_field;
use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::core::Core;

/// The encode buffer's first size, and the least it is ever given again. Every open
/// stream keeps one, and tonic writes on through it (each write split off its front)
/// until it is used up, touching every page of it: at 256 KiB, a thousand idle
/// single-watcher streams came to hold a quarter of a GiB after a thousand events
/// each. A single watcher's response fits in this one.
const BUFFER_BYTES: usize = 2 * 1024;
/// What tonic hands to HTTP/2 at once. The buffer grows to what one look at the queue
/// encodes before handing it over and keeps that size for the stream's life, so this
/// bounds what an idle stream holds after a burst (at 64 KiB, a thousand streams that
/// had fallen a few events behind held 60 MiB more than before). A hundred watchers'
/// copies of one event go out in a few pieces instead of one; HTTP/2 cuts them into
/// 16 KiB frames either way.
const YIELD_BYTES: usize = 4 * 1024;
/// The request decoder's buffer: watch requests are a few dozen bytes (tonic's default
/// of 8 KiB, one per stream, would mostly sit unused).
const REQUEST_BUFFER_BYTES: usize = 512;

pub struct WatchCodec {
    core: Arc<Core>,
}

impl WatchCodec {
    pub fn new(core: Arc<Core>) -> WatchCodec {
        WatchCodec { core }
    }
}

impl Codec for WatchCodec {
    type Encode = Outgoing;
    type Decode = WatchRequest;
    type Encoder = OutgoingEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> OutgoingEncoder {
        OutgoingEncoder {
            core: self.core.clone(),
            header: None,
        }
    }

    fn decoder(&mut self) -> RequestDecoder {
        RequestDecoder
    }
}

pub struct OutgoingEncoder {
    core: Arc<Core>,
    /// The last header written, encoded: the responses of one publish share it.
    header: Option<(ResponseHeader, Vec<u8>)>,
}

impl Encoder for OutgoingEncoder {
    type Item = Outgoing;
    type Error = Status;

    fn encode(&mut self, item: Outgoing, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        let header = self.core.header(item.revision);
        let field = match &mut self.header {
            Some((last, field)) if *last == header => field,
            cached => &mut cached.insert((header, header_field(&header))).1,
        };
        item.encode_with_header(field, dst);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(BUFFER_BYTES, YIELD_BYTES)
    }
}

pub struct RequestDecoder;

impl Decoder for RequestDecoder {
    type Item = WatchRequest;
    type Error = Status;

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(REQUEST_BUFFER_BYTES, YIELD_BYTES)
    }

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<WatchRequest>, Status> {
        // gRPC maps a message that does not parse to INTERNAL.
        WatchRequest::decode(buf)
            .map(Some)
            .map_err(|error| Status::internal(error.to_string()))
    }
}
