//! The watch benchmark's client side: a gRPC Watch stream whose responses are not decoded
//! into messages but scanned in place for what the benchmark needs (created, and each
//! event's key). On a small machine the load generator shares the cores with the server;
//! a client that allocates a message, a key and a value per event measures itself as much
//! as the server. Both targets (concord and etcd) are driven by this same client.

use anyhow::{Context, Result, bail};
use bytes::Buf;
use concord_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, watch_request};
use prost::Message;
use prost::encoding::{WireType, decode_key, decode_varint};
use tokio::sync::mpsc;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

const WATCH_PATH: &str = "/etcdserverpb.Watch/Watch";
/// `WatchResponse`, `Event` and `KeyValue` field numbers.
const RESPONSE_CREATED: u32 = 3;
const RESPONSE_CANCELED: u32 = 4;
const RESPONSE_EVENTS: u32 = 11;
const EVENT_KV: u32 = 2;
const KV_KEY: u32 = 1;

/// What the benchmark reads of one `WatchResponse`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub created: bool,
    pub canceled: bool,
    /// For each event whose key is the watched prefix followed by decimal digits, that
    /// number (the benchmark's put sequence); other events are not listed.
    pub sequences: Vec<usize>,
}

/// One open Watch stream.
pub struct WatchStream {
    responses: tonic::Streaming<Summary>,
    /// Kept open: a client that closes its side ends the stream.
    _requests: mpsc::UnboundedSender<WatchRequest>,
}

impl WatchStream {
    /// Opens a stream with `watchers` watchers of every key under `prefix` and waits
    /// until all of them are created; `channel` from [`crate::etcd::dial`].
    pub async fn open(channel: Channel, prefix: &str, watchers: usize) -> Result<WatchStream> {
        let (requests, queued) = mpsc::unbounded_channel();
        let range_end = crate::etcd::prefix_end(prefix.as_bytes());
        for _ in 0..watchers {
            let create = WatchCreateRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: range_end.clone(),
                ..Default::default()
            };
            requests
                .send(WatchRequest {
                    request_union: Some(watch_request::RequestUnion::CreateRequest(create)),
                })
                .context("queue a watch create request")?;
        }
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.context("watch connection not ready")?;
        let outbound = tokio_stream::wrappers::UnboundedReceiverStream::new(queued);
        let mut responses = grpc
            .streaming(
                tonic::Request::new(outbound),
                PathAndQuery::from_static(WATCH_PATH),
                ScanCodec,
            )
            .await
            .context("open the watch stream")?
            .into_inner();
        let mut created = 0;
        while created < watchers {
            let summary = responses
                .message()
                .await?
                .context("the stream ended before its watchers were created")?;
            if !summary.created || summary.canceled {
                bail!("a response other than `created`: {summary:?}");
            }
            created += 1;
        }
        Ok(WatchStream {
            responses,
            _requests: requests,
        })
    }

    /// The next response, `None` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<Summary>> {
        Ok(self.responses.message().await?)
    }
}

/// Encodes requests with prost, scans responses.
#[derive(Clone, Copy, Default)]
struct ScanCodec;

impl Codec for ScanCodec {
    type Encode = WatchRequest;
    type Decode = Summary;
    type Encoder = RequestEncoder;
    type Decoder = ScanDecoder;

    fn encoder(&mut self) -> RequestEncoder {
        RequestEncoder
    }

    fn decoder(&mut self) -> ScanDecoder {
        ScanDecoder
    }
}

struct RequestEncoder;

impl Encoder for RequestEncoder {
    type Item = WatchRequest;
    type Error = Status;

    fn encode(&mut self, item: WatchRequest, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|error| Status::internal(error.to_string()))
    }
}

struct ScanDecoder;

impl Decoder for ScanDecoder {
    type Item = Summary;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Summary>, Status> {
        let length = buf.remaining();
        let summary = if buf.chunk().len() >= length {
            scan_response(&buf.chunk()[..length])
        } else {
            scan_response(&buf.copy_to_bytes(length))
        };
        buf.advance(buf.remaining());
        summary
            .map(Some)
            .map_err(|error| Status::internal(format!("watch response: {error}")))
    }
}

/// Reads `WatchResponse` bytes for [`Summary`]; anything else in them is skipped.
pub fn scan_response(mut bytes: &[u8]) -> Scan<Summary> {
    let mut summary = Summary::default();
    while bytes.has_remaining() {
        let (field, wire_type) = key(&mut bytes)?;
        match (field, wire_type) {
            (RESPONSE_CREATED, WireType::Varint) => summary.created = varint(&mut bytes)? != 0,
            (RESPONSE_CANCELED, WireType::Varint) => summary.canceled = varint(&mut bytes)? != 0,
            (RESPONSE_EVENTS, WireType::LengthDelimited) => {
                let event = take_field(&mut bytes)?;
                if let Some(sequence) = event_key(event)?.and_then(trailing_number) {
                    summary.sequences.push(sequence);
                }
            }
            (_, wire_type) => skip(&mut bytes, wire_type)?,
        }
    }
    Ok(summary)
}

/// A scan's outcome; the error says what was malformed.
type Scan<T> = Result<T, &'static str>;

fn key(bytes: &mut &[u8]) -> Scan<(u32, WireType)> {
    decode_key(bytes).map_err(|_| "malformed field key")
}

fn varint(bytes: &mut &[u8]) -> Scan<u64> {
    decode_varint(bytes).map_err(|_| "malformed varint")
}

/// The key of an `Event`'s `kv`, if it has one.
fn event_key(mut event: &[u8]) -> Scan<Option<&[u8]>> {
    while event.has_remaining() {
        let (field, wire_type) = key(&mut event)?;
        if (field, wire_type) == (EVENT_KV, WireType::LengthDelimited) {
            let mut kv = take_field(&mut event)?;
            while kv.has_remaining() {
                let (field, wire_type) = key(&mut kv)?;
                if (field, wire_type) == (KV_KEY, WireType::LengthDelimited) {
                    return Ok(Some(take_field(&mut kv)?));
                }
                skip(&mut kv, wire_type)?;
            }
            return Ok(None);
        }
        skip(&mut event, wire_type)?;
    }
    Ok(None)
}

/// The decimal number a key ends with (the benchmark's keys are `prefix` + sequence).
fn trailing_number(key: &[u8]) -> Option<usize> {
    let digits = key.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    std::str::from_utf8(&key[key.len() - digits..])
        .ok()?
        .parse()
        .ok()
}

/// A length-delimited field's bytes; `bytes` moves past them.
fn take_field<'a>(bytes: &mut &'a [u8]) -> Scan<&'a [u8]> {
    let length = usize::try_from(varint(bytes)?).map_err(|_| "field length overflows")?;
    if length > bytes.len() {
        return Err("field runs past the message");
    }
    let (field, rest) = bytes.split_at(length);
    *bytes = rest;
    Ok(field)
}

fn skip(bytes: &mut &[u8], wire_type: WireType) -> Scan<()> {
    match wire_type {
        WireType::Varint => {
            varint(bytes)?;
        }
        WireType::LengthDelimited => {
            take_field(bytes)?;
        }
        WireType::SixtyFourBit => advance(bytes, 8)?,
        WireType::ThirtyTwoBit => advance(bytes, 4)?,
        WireType::StartGroup | WireType::EndGroup => {
            return Err("groups are not used by etcd");
        }
    }
    Ok(())
}

fn advance(bytes: &mut &[u8], count: usize) -> Scan<()> {
    if count > bytes.len() {
        return Err("fixed field runs past the message");
    }
    *bytes = &bytes[count..];
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_proto::etcdserverpb::{ResponseHeader, WatchResponse};
    use concord_proto::mvccpb::{Event, KeyValue};

    fn event(key: &str) -> Event {
        Event {
            r#type: 0,
            kv: Some(KeyValue {
                key: key.as_bytes().to_vec(),
                value: vec![b'w'; 256],
                create_revision: 7,
                mod_revision: 9,
                version: 2,
                lease: 0,
            }),
            prev_kv: Some(KeyValue {
                key: b"/p/999".to_vec(),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn scans_what_prost_encodes() {
        let response = WatchResponse {
            header: Some(ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 9,
                raft_term: 3,
            }),
            watch_id: 41,
            created: false,
            canceled: false,
            compact_revision: 5,
            cancel_reason: "x".into(),
            fragment: true,
            events: vec![event("/p/12"), event("/p/x"), event("/p/3")],
        };
        let summary = scan_response(&response.encode_to_vec()).unwrap();
        assert_eq!(
            summary,
            Summary {
                created: false,
                canceled: false,
                sequences: vec![12, 3],
            }
        );
        let created = WatchResponse {
            created: true,
            ..Default::default()
        };
        assert!(scan_response(&created.encode_to_vec()).unwrap().created);
    }

    #[test]
    fn truncated_responses_are_errors() {
        let bytes = WatchResponse {
            events: vec![event("/p/1")],
            ..Default::default()
        }
        .encode_to_vec();
        for cut in 1..bytes.len() {
            assert!(scan_response(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
