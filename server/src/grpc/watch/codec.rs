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

/// The encode buffer: large enough that it seldom has to grow (which copies what a
/// batch wrote so far).
const BUFFER_BYTES: usize = 256 * 1024;
/// What tonic hands to HTTP/2 at once: a stream's responses of one publish (a hundred
/// watchers' copies of an event) mostly go out in one piece.
const YIELD_BYTES: usize = 64 * 1024;

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

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<WatchRequest>, Status> {
        // gRPC maps a message that does not parse to INTERNAL.
        WatchRequest::decode(buf)
            .map(Some)
            .map_err(|error| Status::internal(error.to_string()))
    }
}
