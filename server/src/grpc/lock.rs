//! etcd's server-side Lock service (`v3lockpb.Lock`), built as etcd builds it: on the
//! member's own KV, Watch and Lease services, called over an in-process connection
//! ([`crate::listener::in_process_channel`]) as the caller (its token, or its client
//! certificate's name), so every step passes the same permission checks as the
//! caller's own requests would, as etcd's `v3lock` does through its in-process client.
//!
//! `Lock(name, lease)` writes the key `name/<lease in hex>` with the lease (a fresh
//! 60-second lease when none is given, as etcd's session does), then waits until every
//! key under `name/` created before it is gone, watching the newest of them each time;
//! it answers with the key, which `Unlock` deletes. If the caller goes away while
//! waiting, the key is deleted. If the key itself vanishes while waiting (its lease
//! expired), the lock is not held: etcd's "mutex: session is expired".
//!
//! The helpers at the bottom ([`OwnClient`]) are shared with the Election service.

use concord_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use concord_proto::etcdserverpb::kv_client::KvClient;
use concord_proto::etcdserverpb::lease_client::LeaseClient;
use concord_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use concord_proto::etcdserverpb::request_op::Request as Op;
use concord_proto::etcdserverpb::watch_client::WatchClient;
use concord_proto::etcdserverpb::watch_request::RequestUnion;
use concord_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RangeResponse,
    RequestOp, ResponseHeader, TxnRequest, TxnResponse, WatchCreateRequest, WatchRequest,
};
use concord_proto::mvccpb::event::EventType;
use concord_proto::mvccpb::{Event, KeyValue};
use concord_proto::v3lockpb::lock_server::Lock;
use concord_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// etcd's session TTL when a lock or campaign names no lease.
const DEFAULT_SESSION_TTL: i64 = 60;
/// etcd 3.5's answer when the lock's own key vanished while it waited.
const SESSION_EXPIRED: &str = "mutex: session is expired";

pub struct LockService {
    channel: Channel,
}

impl LockService {
    pub fn new(channel: Channel) -> LockService {
        LockService { channel }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let client = OwnClient::new(self.channel.clone(), &request);
        let request = request.into_inner();
        let lease = client.session_lease(request.lease).await?;
        let prefix = [request.name.as_slice(), b"/"].concat();
        let key = session_key(&prefix, lease);
        let txn = TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![put_op(&key, b"", lease), first_created_op(&prefix)],
            failure: vec![range_op(&key), first_created_op(&prefix)],
        };
        let response = client.txn(txn).await?;
        let header = response.header;
        let my_revision = if response.succeeded {
            header.as_ref().map_or(0, |h| h.revision)
        } else {
            first_kv(range_of(&response, 0)).map_or(0, |kv| kv.create_revision)
        };
        let owner = first_kv(range_of(&response, 1));
        if owner.is_none_or(|owner| owner.create_revision == my_revision) {
            return Ok(Response::new(LockResponse { header, key }));
        }
        // Waiting: if the caller goes away (this future is dropped) or the wait fails,
        // the key goes, so that it does not hold up the waiters behind it.
        let mut release = DeleteOnDrop::new(&client, key.clone());
        let header = client.wait_deletes(&prefix, my_revision - 1).await?;
        let still_mine = client.range(range_request(&key)).await?;
        if first_kv(Some(&still_mine)).is_none_or(|kv| kv.create_revision != my_revision) {
            release.disarm();
            return Err(Status::unknown(SESSION_EXPIRED));
        }
        release.disarm();
        Ok(Response::new(LockResponse {
            header: Some(header),
            key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let client = OwnClient::new(self.channel.clone(), &request);
        let key = request.into_inner().key;
        let response = client
            .delete(DeleteRangeRequest {
                key,
                ..Default::default()
            })
            .await?;
        Ok(Response::new(UnlockResponse {
            header: response.header,
        }))
    }
}

/// The key a session holds under `prefix`: the prefix and its lease in lowercase hex
/// (Go's `%x` of the lease id).
pub(crate) fn session_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let hex = if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    };
    [prefix, hex.as_bytes()].concat()
}

/// `create_revision(key) == revision`.
pub(crate) fn created_at(key: &[u8], revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(TargetUnion::CreateRevision(revision)),
    }
}

pub(crate) fn put_op(key: &[u8], value: &[u8], lease: i64) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        })),
    }
}

pub(crate) fn range_request(key: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

pub(crate) fn range_op(key: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestRange(range_request(key))),
    }
}

pub(crate) fn delete_op(key: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })),
    }
}

/// The key under `prefix` with the lowest (`ascend`) or highest create revision, up to
/// `max_create_revision` (0: any): clientv3's `WithFirstCreate` / `WithLastCreate`.
pub(crate) fn by_creation(
    prefix: &[u8],
    order: SortOrder,
    max_create_revision: i64,
) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: order as i32,
        sort_target: SortTarget::Create as i32,
        max_create_revision,
        ..Default::default()
    }
}

pub(crate) fn first_created_op(prefix: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestRange(by_creation(prefix, SortOrder::Ascend, 0))),
    }
}

/// The end of the range of every key starting with `prefix` (clientv3's `GetPrefixRangeEnd`).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte is 0xff: the range runs to the end of the keyspace.
    vec![0]
}

/// The range response of a txn's `index`th op, if it is one.
pub(crate) fn range_of(txn: &TxnResponse, index: usize) -> Option<&RangeResponse> {
    use concord_proto::etcdserverpb::response_op::Response as OpResponse;
    match txn.responses.get(index)?.response.as_ref()? {
        OpResponse::ResponseRange(range) => Some(range),
        _ => None,
    }
}

pub(crate) fn first_kv(range: Option<&RangeResponse>) -> Option<&KeyValue> {
    range?.kvs.first()
}

/// The member's own KV, Watch and Lease services as one caller sees them: every call
/// carries the caller's auth metadata.
#[derive(Clone)]
pub(crate) struct OwnClient {
    channel: Channel,
    metadata: MetadataMap,
}

impl OwnClient {
    /// Carries over what identifies the caller: its token, and its certificate's name
    /// (which the in-process connection cannot show by itself).
    pub(crate) fn new<T>(channel: Channel, caller: &Request<T>) -> OwnClient {
        let metadata = crate::auth::Credentials::of(caller).to_metadata();
        OwnClient { channel, metadata }
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        *request.metadata_mut() = self.metadata.clone();
        request
    }

    fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone()).max_decoding_message_size(usize::MAX)
    }

    pub(crate) async fn txn(&self, txn: TxnRequest) -> Result<TxnResponse, Status> {
        Ok(self.kv().txn(self.request(txn)).await?.into_inner())
    }

    pub(crate) async fn range(&self, range: RangeRequest) -> Result<RangeResponse, Status> {
        Ok(self.kv().range(self.request(range)).await?.into_inner())
    }

    pub(crate) async fn delete(
        &self,
        delete: DeleteRangeRequest,
    ) -> Result<concord_proto::etcdserverpb::DeleteRangeResponse, Status> {
        Ok(self
            .kv()
            .delete_range(self.request(delete))
            .await?
            .into_inner())
    }

    /// The lease a session uses: the caller's, or (for 0) a fresh one of etcd's default
    /// session TTL.
    pub(crate) async fn session_lease(&self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let grant = LeaseClient::new(self.channel.clone())
            .lease_grant(self.request(LeaseGrantRequest {
                ttl: DEFAULT_SESSION_TTL,
                id: 0,
            }))
            .await?
            .into_inner();
        Ok(grant.id)
    }

    /// Waits until no key under `prefix` created at or before `max_create_revision` is
    /// left (clientv3's `waitDeletes`); the header of the last look.
    pub(crate) async fn wait_deletes(
        &self,
        prefix: &[u8],
        max_create_revision: i64,
    ) -> Result<ResponseHeader, Status> {
        loop {
            let newest = self
                .range(by_creation(prefix, SortOrder::Descend, max_create_revision))
                .await?;
            let Some(kv) = newest.kvs.first() else {
                return Ok(newest.header.unwrap_or_default());
            };
            let revision = newest.header.as_ref().map_or(0, |h| h.revision);
            self.watch_until(&kv.key, Vec::new(), revision, |event| {
                event.r#type == EventType::Delete as i32
            })
            .await?;
        }
    }

    /// Opens a watch on `[key, range_end)` from `start_revision`.
    pub(crate) async fn watch(
        &self,
        key: &[u8],
        range_end: Vec<u8>,
        start_revision: i64,
    ) -> Result<Watch, Status> {
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: key.to_vec(),
                range_end,
                start_revision,
                ..Default::default()
            })),
        };
        // Sent before the call opens: the channel holds one request.
        let _ = sender.send(create).await;
        let responses = WatchClient::new(self.channel.clone())
            .max_decoding_message_size(usize::MAX)
            .watch(self.request(tokio_stream::wrappers::ReceiverStream::new(receiver)))
            .await?
            .into_inner();
        Ok(Watch {
            responses,
            _requests: sender,
        })
    }

    /// Watches `key` from `start_revision` until an event satisfies `done`; returns it.
    pub(crate) async fn watch_until(
        &self,
        key: &[u8],
        range_end: Vec<u8>,
        start_revision: i64,
        mut done: impl FnMut(&Event) -> bool,
    ) -> Result<(ResponseHeader, Event), Status> {
        let mut watch = self.watch(key, range_end, start_revision).await?;
        loop {
            let (header, events) = watch.next().await?;
            if let Some(event) = events.into_iter().find(|event| done(event)) {
                return Ok((header, event));
            }
        }
    }
}

/// An open watch of [`OwnClient::watch`].
pub(crate) struct Watch {
    responses: tonic::Streaming<concord_proto::etcdserverpb::WatchResponse>,
    /// Kept so the stream's sending side stays open.
    _requests: tokio::sync::mpsc::Sender<WatchRequest>,
}

impl Watch {
    /// The next events with their header; an error once the watch ends (cancelled, e.g.
    /// by a compaction, or the stream closed).
    pub(crate) async fn next(&mut self) -> Result<(ResponseHeader, Vec<Event>), Status> {
        loop {
            let Some(response) = self.responses.message().await? else {
                return Err(Status::unavailable("lost watcher waiting for delete"));
            };
            if response.canceled {
                let reason = if response.cancel_reason.is_empty() {
                    "watch canceled".to_string()
                } else {
                    response.cancel_reason
                };
                return Err(Status::unknown(reason));
            }
            if response.created && response.events.is_empty() {
                continue;
            }
            if !response.events.is_empty() {
                return Ok((response.header.unwrap_or_default(), response.events));
            }
        }
    }
}

/// Deletes a key when dropped (a waiting lock or campaign whose caller went away or
/// whose wait failed), unless disarmed.
pub(crate) struct DeleteOnDrop {
    client: Option<OwnClient>,
    key: Vec<u8>,
}

impl DeleteOnDrop {
    pub(crate) fn new(client: &OwnClient, key: Vec<u8>) -> DeleteOnDrop {
        DeleteOnDrop {
            client: Some(client.clone()),
            key,
        }
    }

    pub(crate) fn disarm(&mut self) {
        self.client = None;
    }
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let key = std::mem::take(&mut self.key);
            tokio::spawn(async move {
                let _ = client
                    .delete(DeleteRangeRequest {
                        key,
                        ..Default::default()
                    })
                    .await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_keys_are_the_prefix_and_the_lease_in_lowercase_hex() {
        assert_eq!(
            session_key(b"lk/", 0x694d7a1b2c3d4e5f),
            b"lk/694d7a1b2c3d4e5f"
        );
        assert_eq!(session_key(b"lk/", 10), b"lk/a");
    }

    #[test]
    fn prefix_end_is_clientv3s() {
        assert_eq!(prefix_end(b"abc"), b"abd");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\x00");
    }
}
