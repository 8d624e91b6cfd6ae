//! Watch responses in the shape they go on the wire. A published event is encoded once
//! per shape (with or without `prev_kv`) and the encoded bytes are shared, reference-
//! counted, by every response it goes into: fanning one event out to thousands of
//! watchers copies no key or value and runs no protobuf encoder per watcher.
//! [`Outgoing::encode`] then writes a `WatchResponse` byte for byte as prost would.

use bytes::{BufMut, Bytes};
use concord_proto::etcdserverpb::{ResponseHeader, WatchResponse};
use concord_proto::mvccpb::Event;
use prost::Message;
use prost::encoding::{self, WireType, encode_key, encode_varint, encoded_len_varint, key_len};

/// `mvccpb.Event` field numbers.
const EVENT_TYPE_FIELD: u32 = 1;
const EVENT_KV_FIELD: u32 = 2;
const EVENT_PREV_KV_FIELD: u32 = 3;
/// `WatchResponse` field numbers.
const HEADER_FIELD: u32 = 1;
const WATCH_ID_FIELD: u32 = 2;
const CREATED_FIELD: u32 = 3;
const CANCELED_FIELD: u32 = 4;
const COMPACT_REVISION_FIELD: u32 = 5;
const CANCEL_REASON_FIELD: u32 = 6;
const FRAGMENT_FIELD: u32 = 7;
const EVENTS_FIELD: u32 = 11;

/// One encoded `mvccpb.Event` and the revision it belongs to. The bytes are the whole
/// `events` field of a `WatchResponse` (tag, length, message): a response is written
/// with one copy per event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireEvent {
    revision: i64,
    field: Bytes,
    /// Where the message starts in `field`.
    message_at: u8,
}

impl WireEvent {
    /// `event` as a watcher sees it: with its `prev_kv` only if `with_prev_kv`.
    pub fn encode(event: &Event, with_prev_kv: bool) -> WireEvent {
        let revision = event.kv.as_ref().map_or(0, |kv| kv.mod_revision);
        let type_len = if event.r#type != 0 {
            encoding::int32::encoded_len(EVENT_TYPE_FIELD, &event.r#type)
        } else {
            0
        };
        let kv_len = event
            .kv
            .as_ref()
            .map_or(0, |kv| encoding::message::encoded_len(EVENT_KV_FIELD, kv));
        let prev_kv = event.prev_kv.as_ref().filter(|_| with_prev_kv);
        let prev_kv_len = prev_kv.map_or(0, |kv| {
            encoding::message::encoded_len(EVENT_PREV_KV_FIELD, kv)
        });
        let message_len = type_len + kv_len + prev_kv_len;
        let prefix_len = key_len(EVENTS_FIELD) + encoded_len_varint(message_len as u64);
        let mut field = Vec::with_capacity(prefix_len + message_len);
        encode_key(EVENTS_FIELD, WireType::LengthDelimited, &mut field);
        encode_varint(message_len as u64, &mut field);
        // Field by field (as prost would): a stripped copy of the event would clone
        // its key and values first.
        if event.r#type != 0 {
            encoding::int32::encode(EVENT_TYPE_FIELD, &event.r#type, &mut field);
        }
        if let Some(kv) = &event.kv {
            encoding::message::encode(EVENT_KV_FIELD, kv, &mut field);
        }
        if let Some(kv) = prev_kv {
            encoding::message::encode(EVENT_PREV_KV_FIELD, kv, &mut field);
        }
        WireEvent {
            revision,
            field: Bytes::from(field),
            message_at: prefix_len as u8,
        }
    }

    /// The `mod_revision` of the event's key-value.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The encoded `mvccpb.Event`.
    pub fn message(&self) -> &[u8] {
        &self.field[usize::from(self.message_at)..]
    }

    pub fn decode(&self) -> Result<Event, prost::DecodeError> {
        Event::decode(self.message())
    }

    /// Bytes the event adds to an encoded `WatchResponse`.
    pub fn field_len(&self) -> usize {
        self.field.len()
    }
}

/// A response's events. One event (a synced watcher's usual lot) is held inline: fanning
/// an event out allocates nothing per watcher.
#[derive(Clone, Debug, Default)]
pub struct Events(Held);

#[derive(Clone, Debug, Default)]
enum Held {
    #[default]
    None,
    One(WireEvent),
    Many(Vec<WireEvent>),
}

impl Events {
    pub fn new() -> Events {
        Events::default()
    }

    pub fn push(&mut self, event: WireEvent) {
        self.0 = match std::mem::take(&mut self.0) {
            Held::None => Held::One(event),
            Held::One(first) => Held::Many(vec![first, event]),
            Held::Many(mut events) => {
                events.push(event);
                Held::Many(events)
            }
        };
    }

    pub fn into_vec(self) -> Vec<WireEvent> {
        match self.0 {
            Held::None => Vec::new(),
            Held::One(event) => vec![event],
            Held::Many(events) => events,
        }
    }
}

/// Equal when they hold the same events, however held.
impl PartialEq for Events {
    fn eq(&self, other: &Events) -> bool {
        self[..] == other[..]
    }
}

impl Eq for Events {}

impl std::ops::Deref for Events {
    type Target = [WireEvent];

    fn deref(&self) -> &[WireEvent] {
        match &self.0 {
            Held::None => &[],
            Held::One(event) => std::slice::from_ref(event),
            Held::Many(events) => events,
        }
    }
}

impl From<Vec<WireEvent>> for Events {
    fn from(events: Vec<WireEvent>) -> Events {
        Events(Held::Many(events))
    }
}

impl From<WireEvent> for Events {
    fn from(event: WireEvent) -> Events {
        Events(Held::One(event))
    }
}

impl FromIterator<WireEvent> for Events {
    fn from_iter<I: IntoIterator<Item = WireEvent>>(iter: I) -> Events {
        let mut events = Events::new();
        for event in iter {
            events.push(event);
        }
        events
    }
}

/// Room for `watch_id`, `created`, `canceled` and `compact_revision`: two 11-byte and
/// two 2-byte fields.
const SMALL_FIELDS_MAX: usize = 32;

/// The `header` field of a `WatchResponse`, encoded.
pub fn header_field(header: &ResponseHeader) -> Vec<u8> {
    let mut field = Vec::with_capacity(encoding::message::encoded_len(HEADER_FIELD, header));
    encoding::message::encode(HEADER_FIELD, header, &mut field);
    field
}

/// One response of a watch stream: a `WatchResponse` whose header carries only the
/// revision (the server adds cluster, member and term when it encodes it) and whose
/// events are already encoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outgoing {
    /// The header's revision.
    pub revision: i64,
    pub watch_id: i64,
    pub created: bool,
    pub canceled: bool,
    pub compact_revision: i64,
    pub cancel_reason: String,
    pub fragment: bool,
    pub events: Events,
}

impl Outgoing {
    /// The header as the registry knows it.
    pub fn header(&self) -> ResponseHeader {
        ResponseHeader {
            revision: self.revision,
            ..Default::default()
        }
    }

    /// The encoded length with `header` (whose revision is used as given).
    pub fn encoded_len(&self, header: &ResponseHeader) -> usize {
        encoding::message::encoded_len(HEADER_FIELD, header)
            + self.len_between()
            + self.events.iter().map(WireEvent::field_len).sum::<usize>()
    }

    /// The length of the fields between the header and the events.
    fn len_between(&self) -> usize {
        let mut len = 0;
        if self.watch_id != 0 {
            len += encoding::int64::encoded_len(WATCH_ID_FIELD, &self.watch_id);
        }
        if self.created {
            len += encoding::bool::encoded_len(CREATED_FIELD, &self.created);
        }
        if self.canceled {
            len += encoding::bool::encoded_len(CANCELED_FIELD, &self.canceled);
        }
        if self.compact_revision != 0 {
            len += encoding::int64::encoded_len(COMPACT_REVISION_FIELD, &self.compact_revision);
        }
        if !self.cancel_reason.is_empty() {
            len += encoding::string::encoded_len(CANCEL_REASON_FIELD, &self.cancel_reason);
        }
        if self.fragment {
            len += encoding::bool::encoded_len(FRAGMENT_FIELD, &self.fragment);
        }
        len
    }

    /// Writes the `WatchResponse` with `header` (whose revision is used as given),
    /// fields in number order and defaults left out, as prost encodes it.
    pub fn encode(&self, header: &ResponseHeader, buf: &mut impl BufMut) {
        self.encode_with_header(&header_field(header), buf);
    }

    /// [`Outgoing::encode`] with the header field already encoded ([`header_field`]):
    /// the responses of one batch mostly share it.
    pub fn encode_with_header(&self, header_field: &[u8], buf: &mut impl BufMut) {
        buf.put_slice(header_field);
        // The small fields gathered first: one copy into `buf` instead of a call per
        // byte of every varint.
        let mut small = [0u8; SMALL_FIELDS_MAX];
        let mut rest = &mut small[..];
        if self.watch_id != 0 {
            encoding::int64::encode(WATCH_ID_FIELD, &self.watch_id, &mut rest);
        }
        if self.created {
            encoding::bool::encode(CREATED_FIELD, &self.created, &mut rest);
        }
        if self.canceled {
            encoding::bool::encode(CANCELED_FIELD, &self.canceled, &mut rest);
        }
        if self.compact_revision != 0 {
            encoding::int64::encode(COMPACT_REVISION_FIELD, &self.compact_revision, &mut rest);
        }
        let used = SMALL_FIELDS_MAX - rest.len();
        buf.put_slice(&small[..used]);
        if !self.cancel_reason.is_empty() {
            encoding::string::encode(CANCEL_REASON_FIELD, &self.cancel_reason, buf);
        }
        if self.fragment {
            encoding::bool::encode(FRAGMENT_FIELD, &self.fragment, buf);
        }
        for event in self.events.iter() {
            buf.put_slice(&event.field);
        }
    }

    /// The response as a message (its header with the revision only).
    pub fn to_response(&self) -> Result<WatchResponse, prost::DecodeError> {
        Ok(WatchResponse {
            header: Some(self.header()),
            watch_id: self.watch_id,
            created: self.created,
            canceled: self.canceled,
            compact_revision: self.compact_revision,
            cancel_reason: self.cancel_reason.clone(),
            fragment: self.fragment,
            events: self
                .events
                .iter()
                .map(WireEvent::decode)
                .collect::<Result<_, _>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_proto::mvccpb::KeyValue;
    use concord_proto::mvccpb::event::EventType;

    fn kv(key: &str, value: &str, revision: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: 2,
            mod_revision: revision,
            version: 3,
            lease: 7,
        }
    }

    fn events() -> Vec<Event> {
        vec![
            Event {
                r#type: EventType::Put as i32,
                kv: Some(kv("a", "new", 9)),
                prev_kv: Some(kv("a", "old", 8)),
            },
            Event {
                r#type: EventType::Delete as i32,
                kv: Some(kv("b", "", 9)),
                prev_kv: None,
            },
            Event {
                r#type: EventType::Delete as i32,
                kv: Some(kv("c", "", 9)),
                prev_kv: Some(kv("c", "gone", 4)),
            },
        ]
    }

    #[test]
    fn an_event_without_prev_kv_encodes_as_the_stripped_message() {
        for event in events() {
            let stripped = Event {
                prev_kv: None,
                ..event.clone()
            };
            let bare = WireEvent::encode(&event, false);
            assert_eq!(bare.message(), stripped.encode_to_vec().as_slice());
            assert_eq!(bare.decode().unwrap(), stripped);
            assert_eq!(bare.revision(), 9);
            let full = WireEvent::encode(&event, true);
            assert_eq!(full.message(), event.encode_to_vec().as_slice());
            assert_eq!(full.decode().unwrap(), event);
            // The field as prost writes `events` in a `WatchResponse`.
            let mut field = Vec::new();
            encoding::message::encode(EVENTS_FIELD, &event, &mut field);
            assert_eq!(full.field_len(), field.len());
        }
    }

    #[test]
    fn event_lists_hold_one_inline_and_grow_past_it_in_order() {
        let wire: Vec<WireEvent> = events()
            .iter()
            .map(|e| WireEvent::encode(e, false))
            .collect();
        let mut list = Events::new();
        assert!(list.is_empty());
        for (n, event) in wire.iter().enumerate() {
            list.push(event.clone());
            assert_eq!(&list[..], &wire[..=n]);
        }
        assert_eq!(list.clone().into_vec(), wire);
        assert_eq!(wire.iter().cloned().collect::<Events>(), list);
        assert_eq!(Events::from(wire[0].clone()).into_vec(), wire[..1].to_vec());
        assert_eq!(
            Events::from(wire[..1].to_vec()),
            Events::from(wire[0].clone())
        );
    }

    #[test]
    fn responses_encode_byte_for_byte_as_prost_does() {
        let header = ResponseHeader {
            cluster_id: 0x1234_5678_9abc,
            member_id: 42,
            revision: 0,
            raft_term: 5,
        };
        let wire: Vec<WireEvent> = events()
            .iter()
            .map(|e| WireEvent::encode(e, true))
            .collect();
        let cases = vec![
            Outgoing {
                revision: 9,
                watch_id: 3,
                events: wire.clone().into(),
                ..Default::default()
            },
            Outgoing {
                revision: 9,
                watch_id: -1,
                created: true,
                canceled: true,
                cancel_reason: "mvcc: watcher range is empty".into(),
                ..Default::default()
            },
            Outgoing {
                revision: 0,
                watch_id: 0,
                canceled: true,
                compact_revision: 17,
                ..Default::default()
            },
            Outgoing {
                revision: 9,
                watch_id: 1,
                fragment: true,
                events: wire[0].clone().into(),
                ..Default::default()
            },
            Outgoing {
                revision: i64::MAX,
                watch_id: i64::MIN,
                created: true,
                canceled: true,
                compact_revision: i64::MAX,
                ..Default::default()
            },
            Outgoing::default(),
        ];
        for outgoing in cases {
            let header = ResponseHeader {
                revision: outgoing.revision,
                ..header
            };
            let mut expected = outgoing.to_response().unwrap();
            expected.header = Some(header);
            let mut buf = Vec::new();
            outgoing.encode(&header, &mut buf);
            assert_eq!(buf, expected.encode_to_vec(), "{outgoing:?}");
            assert_eq!(outgoing.encoded_len(&header), buf.len());
            assert_eq!(WatchResponse::decode(buf.as_slice()).unwrap(), expected);
        }
    }
}
