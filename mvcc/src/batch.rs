//! The write side: one [`WriteBatch`] per apply round.

use std::cmp::Ordering as CmpOrdering;
use std::sync::atomic::Ordering;
use std::time::Instant;

use concord_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use concord_proto::etcdserverpb::request_op::Request;
use concord_proto::etcdserverpb::response_op::Response;
use concord_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, ResponseOp, TxnRequest, TxnResponse,
};
use concord_proto::mvccpb::event::EventType;
use concord_proto::mvccpb::{Event, KeyValue};
use fjall::PersistMode;
use parking_lot::MutexGuard;
use prost::Message;

use crate::error::Error;
use crate::key_index::{KeyRange, Point};
use crate::metrics::OpCounts;
use crate::read::{self, FetchKv, RangePlan};
use crate::revision::{Revision, encode_revision_key};
use crate::store::{
    BackendFetch, META_APPLIED_INDEX, META_COMPACT_REV, META_CURRENT_REV, Store, meta_user_key,
    rev_to_u64,
};
use crate::txn;

/// A change made in this batch, not yet in the backend.
#[derive(Debug)]
struct PendingChange {
    rev: Revision,
    tombstone: bool,
    /// The encoded `KeyValue` (for a tombstone: only the key, as etcd stores it).
    encoded: Vec<u8>,
}

/// The revision bookkeeping of one request.
#[derive(Debug)]
struct Ctx {
    /// The batch's revision before the request.
    begin: i64,
    /// Changes made so far; the next change's sub-revision.
    changes: u32,
    events: Vec<Event>,
    /// What the request did, for the store's metrics.
    ops: OpCounts,
}

impl Ctx {
    /// etcd reads inside a write at `begin + 1` once it has changed something.
    fn read_rev(&self) -> i64 {
        if self.changes > 0 {
            self.begin + 1
        } else {
            self.begin
        }
    }
}

/// All writes of one apply round, committed to the backend as one fjall batch
/// together with the applied raft index.
///
/// Each request either applies completely (and gets the next revision if it
/// changed anything) or fails and changes nothing. Later requests see earlier
/// ones. Dropping the batch without [`WriteBatch::commit`] discards everything.
/// Holding a batch blocks other writers, not readers; readers see none of it
/// until it is committed.
pub struct WriteBatch<'a> {
    store: &'a Store,
    _writer: MutexGuard<'a, ()>,
    /// Committed revision when the batch started.
    base_rev: i64,
    /// Revision including this batch's writes so far.
    rev: i64,
    /// Compaction revision in force for reads in this batch.
    compact_rev: i64,
    pending_compact: Option<i64>,
    changes: Vec<PendingChange>,
    meta_ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    applied_index: Option<u64>,
    /// Whether events carry `prev_kv` (costs a backend read per overwrite).
    event_prev_kv: bool,
    finished: bool,
    /// The operations of this batch's successful requests, recorded at commit.
    ops: OpCounts,
}

impl std::fmt::Debug for WriteBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBatch")
            .field("base_rev", &self.base_rev)
            .field("rev", &self.rev)
            .field("changes", &self.changes.len())
            .finish_non_exhaustive()
    }
}

impl FetchKv for WriteBatch<'_> {
    fn fetch(&self, rev: Revision) -> Result<Option<KeyValue>, Error> {
        if rev.main <= self.base_rev {
            return BackendFetch(self.store).fetch(rev);
        }
        match self.changes.binary_search_by(|c| c.rev.cmp(&rev)) {
            Ok(i) => match self.changes.get(i) {
                Some(c) if !c.tombstone => read::decode_kv(&c.encoded).map(Some),
                _ => Ok(None),
            },
            Err(_) => Ok(None),
        }
    }
}

impl<'a> WriteBatch<'a> {
    pub(crate) fn new(store: &'a Store) -> Self {
        let writer = store.writer.lock();
        let (rev, compact_rev) = {
            let state = store.state.read();
            (state.current_rev, state.compact_rev)
        };
        Self {
            store,
            _writer: writer,
            base_rev: rev,
            rev,
            compact_rev,
            pending_compact: None,
            changes: Vec::new(),
            meta_ops: Vec::new(),
            applied_index: None,
            event_prev_kv: true,
            finished: false,
            ops: OpCounts::default(),
        }
    }

    /// Whether the events of later writes in this batch carry `prev_kv` (on by
    /// default). Filling it costs a backend read per overwritten or deleted key;
    /// the server can turn it off for rounds in which no watcher wants it.
    /// Responses' own `prev_kv` (requested by the client) are unaffected.
    pub fn set_event_prev_kv(&mut self, on: bool) {
        self.event_prev_kv = on;
    }

    /// The revision after the writes made so far in this batch.
    pub fn revision(&self) -> i64 {
        self.rev
    }

    /// etcd's Put. Returns the response (its `header.revision` is the put's
    /// revision; other header fields are left for the server) and the PUT event
    /// (with `prev_kv` when the key existed).
    pub fn put(&mut self, req: &PutRequest) -> Result<(PutResponse, Vec<Event>), Error> {
        txn::check_put(req)?;
        self.apply(|b, ctx| b.apply_put(ctx, req))
    }

    /// etcd's DeleteRange. No revision is used when nothing is deleted; then
    /// `header.revision` is the unchanged current revision.
    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<(DeleteRangeResponse, Vec<Event>), Error> {
        txn::check_delete(req)?;
        self.apply(|b, ctx| {
            let (deleted, prev_kvs) =
                b.apply_delete(ctx, KeyRange::new(&req.key, &req.range_end), req.prev_kv)?;
            Ok(DeleteRangeResponse {
                header: Some(read::header(ctx.read_rev())),
                deleted,
                prev_kvs,
            })
        })
    }

    /// etcd's Txn: compares (of this and every nested txn on the taken path) are
    /// evaluated against the state before the txn; all writes share one revision
    /// with increasing sub-revisions; a txn that changes nothing uses no
    /// revision. Nested range / put / delete responses carry `header.revision`
    /// as etcd's do; a nested txn's header is empty, as in etcd.
    pub fn txn(&mut self, req: &TxnRequest) -> Result<(TxnResponse, Vec<Event>), Error> {
        txn::check_txn(req, self.store.opts.max_txn_ops)?;
        self.apply(|b, ctx| {
            let mut path = Vec::new();
            b.txn_path(ctx.read_rev(), req, &mut path, &mut ctx.ops.ranges)?;
            b.check_path_puts(req, &path, &mut 0)?;
            b.check_path_ranges(ctx.begin, req, &path, &mut 0)?;
            let mut resp = b.run_txn(ctx, req, &path, &mut 0)?;
            resp.header = Some(read::header(ctx.read_rev()));
            Ok(resp)
        })
    }

    /// Deletes the given keys (those that exist) in one revision, as a lease
    /// revocation does. Returns the DELETE events.
    pub fn delete_keys(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Event>, Error> {
        self.apply(|b, ctx| {
            for key in keys {
                if !key.is_empty() {
                    b.apply_delete(ctx, KeyRange::Single(key), false)?;
                }
            }
            Ok(())
        })
        .map(|((), events)| events)
    }

    /// A range that sees this batch's writes (for the apply loop's own use).
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, Error> {
        let ctx = Ctx {
            begin: self.rev,
            changes: 0,
            events: Vec::new(),
            ops: OpCounts::default(),
        };
        self.range_in(&ctx, req)
    }

    /// etcd's Compact: drops history at or below `rev`, keeping each live key's
    /// newest revision at or below it. `Err(Compacted)` if `rev` is not above the
    /// current compaction, `Err(FutureRevision)` if above this batch's revision.
    /// Takes effect for reads in this batch at once and for everyone at commit.
    pub fn compact(&mut self, rev: i64) -> Result<(), Error> {
        if rev <= self.compact_rev {
            return Err(Error::Compacted);
        }
        if rev > self.rev {
            return Err(Error::FutureRevision);
        }
        self.compact_rev = rev;
        self.pending_compact = Some(rev);
        Ok(())
    }

    /// Writes a side-table entry (leases, auth, members) in this batch.
    pub fn meta_put(&mut self, keyspace: &str, key: &[u8], value: &[u8]) {
        self.meta_ops
            .push((meta_user_key(keyspace, key), Some(value.to_vec())));
    }

    /// Deletes a side-table entry in this batch.
    pub fn meta_delete(&mut self, keyspace: &str, key: &[u8]) {
        self.meta_ops.push((meta_user_key(keyspace, key), None));
    }

    /// Reads a side-table entry, seeing this batch's `meta_put`s and deletes.
    pub fn meta_get(&self, keyspace: &str, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let full = meta_user_key(keyspace, key);
        if let Some((_, v)) = self.meta_ops.iter().rev().find(|(k, _)| *k == full) {
            return Ok(v.clone());
        }
        self.store.meta_get(keyspace, key)
    }

    /// Records the raft index this round applies up to; stored in the same
    /// fjall batch as the data.
    pub fn set_applied_index(&mut self, index: u64) {
        self.applied_index = Some(index);
    }

    /// Writes everything as one fjall batch and makes it visible to readers.
    /// A failed commit poisons the store (treat it as fatal).
    pub fn commit(mut self) -> Result<(), Error> {
        let store = self.store;
        if store.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned);
        }
        let nothing_to_write = self.changes.is_empty()
            && self.meta_ops.is_empty()
            && self.applied_index.is_none()
            && self.pending_compact.is_none();
        if nothing_to_write {
            self.finished = true;
            store.metrics.record(&self.ops);
            return Ok(());
        }
        let started = Instant::now();
        store.write_behind.wake();
        let mut batch = store.db.batch();
        if store.opts.sync_on_commit {
            batch = batch.durability(Some(PersistMode::SyncAll));
        }
        // fjall copies the bytes either way; keeping ours lets a failed commit
        // roll the index back (in Drop) like any discarded batch.
        let mut written_bytes = 0u64;
        for change in &self.changes {
            let key = encode_revision_key(change.rev, change.tombstone);
            written_bytes += (key.len() + change.encoded.len()) as u64;
            batch.insert(&store.kv, key, change.encoded.as_slice());
        }
        batch.insert(
            &store.meta,
            META_CURRENT_REV,
            rev_to_u64(self.rev).to_be_bytes(),
        );
        if let Some(index) = self.applied_index {
            batch.insert(&store.meta, META_APPLIED_INDEX, index.to_be_bytes());
        }
        if let Some(rev) = self.pending_compact {
            batch.insert(&store.meta, META_COMPACT_REV, rev_to_u64(rev).to_be_bytes());
        }
        // The side tables' share of the in-use size: what each entry weighs after this
        // batch, against what it weighed before (a batch may write one key twice).
        let mut meta_weights: Vec<(&[u8], u64)> = Vec::new();
        let mut meta_delta = 0i64;
        for (key, value) in &self.meta_ops {
            let before = match meta_weights
                .iter()
                .rev()
                .find(|(k, _)| *k == key.as_slice())
            {
                Some((_, weight)) => *weight,
                None => crate::store::stored_bytes(&store.meta, key)?,
            };
            let after = value.as_ref().map_or(0, |v| (key.len() + v.len()) as u64);
            meta_delta += after as i64 - before as i64;
            meta_weights.push((key.as_slice(), after));
        }
        drop(meta_weights);
        for (key, value) in std::mem::take(&mut self.meta_ops) {
            match value {
                Some(v) => batch.insert(&store.meta, key, v),
                None => batch.remove(&store.meta, key),
            }
        }
        if let Err(e) = batch.commit() {
            store.poisoned.store(true, Ordering::Release);
            return Err(e.into());
        }
        store
            .metrics
            .commit_seconds
            .record(started.elapsed().as_secs_f64());

        // Publish: from here on readers see the batch.
        let mut dead = Vec::new();
        {
            let mut state = store.state.write();
            if let Some(rev) = self.pending_compact {
                state.index.compact(rev, &mut dead);
                state.compact_rev = rev;
                store.compact_rev.store(rev, Ordering::Release);
            }
            state.current_rev = self.rev;
            store.current_rev.store(self.rev, Ordering::Release);
            if let Some(index) = self.applied_index {
                store.applied_index.store(index, Ordering::Release);
            }
        }
        self.finished = true;
        store.metrics.record(&self.ops);
        store.live_bytes.fetch_add(written_bytes, Ordering::AcqRel);
        store
            .meta_live_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |weight| {
                Some(weight.saturating_add_signed(meta_delta))
            })
            .ok();

        // Only now remove the compacted history: a reader that looked at the
        // index before the publish may still be fetching it, and retries when a
        // revision it listed has vanished. A crash before this point is
        // repaired at open.
        if !dead.is_empty() {
            let mut batch = store.db.batch();
            // What the removal frees, for the in-use size: read in one forward scan
            // over the removed revisions' span, not one point read each (a large
            // compaction removes hundreds of thousands, on the apply thread).
            let keys = crate::store::sorted_revision_keys(&dead);
            let freed = crate::store::stored_bytes_of_sorted(&store.kv, &keys)?;
            for key in keys {
                batch.remove(&store.kv, key);
            }
            if let Err(e) = batch.commit() {
                store.poisoned.store(true, Ordering::Release);
                return Err(e.into());
            }
            store
                .live_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| {
                    Some(live.saturating_sub(freed))
                })
                .ok();
        }
        store.table_reads.release_replaced_tables(&store.kv);
        Ok(())
    }

    /// Runs one request; on failure undoes whatever it did.
    fn apply<T>(
        &mut self,
        f: impl FnOnce(&mut Self, &mut Ctx) -> Result<T, Error>,
    ) -> Result<(T, Vec<Event>), Error> {
        let mut ctx = Ctx {
            begin: self.rev,
            changes: 0,
            events: Vec::new(),
            ops: OpCounts::default(),
        };
        let mark = self.changes.len();
        match f(self, &mut ctx) {
            Ok(value) => {
                if ctx.changes > 0 {
                    self.rev += 1;
                }
                self.ops.add_request(&ctx.ops);
                Ok((value, ctx.events))
            }
            Err(e) => {
                self.discard_from(mark, self.rev);
                Err(e)
            }
        }
    }

    /// Forgets the changes from `mark` on, and their index entries above `keep`.
    fn discard_from(&mut self, mark: usize, keep: i64) {
        if self.changes.len() <= mark {
            return;
        }
        let mut state = self.store.state.write();
        for change in self.changes.drain(mark..) {
            // The key is only in the encoded value; a rollback is rare enough to
            // decode it rather than keep a copy of every key.
            if let Ok(kv) = read::decode_kv(&change.encoded) {
                state.index.rollback_above(&kv.key, keep);
            }
        }
    }

    fn bump_changes(&self, ctx: &mut Ctx) -> Result<(), Error> {
        ctx.changes = ctx
            .changes
            .checked_add(1)
            .ok_or_else(|| Error::Corrupt("too many changes in one revision".into()))?;
        Ok(())
    }

    fn record_change(
        &mut self,
        ctx: &mut Ctx,
        key: &[u8],
        point: Point,
        encoded: Vec<u8>,
    ) -> Result<(), Error> {
        self.bump_changes(ctx)?;
        self.store.state.write().index.record(key, point);
        self.changes.push(PendingChange {
            rev: point.revision(),
            tombstone: point.tombstone,
            encoded,
        });
        Ok(())
    }

    fn apply_put(&mut self, ctx: &mut Ctx, req: &PutRequest) -> Result<PutResponse, Error> {
        let main = ctx.begin + 1;
        let sub = ctx.changes;
        ctx.ops.puts += 1;
        ctx.ops.put_bytes += (req.key.len() + req.value.len()) as u64;
        ctx.ops.ranges += u64::from(req.ignore_value || req.ignore_lease || req.prev_kv);
        // The common put needs nothing from the previous value but the event's
        // prev_kv: record first (one index lookup), fetch the previous value after.
        let mut value = None;
        let mut lease = req.lease;
        if req.ignore_value || req.ignore_lease {
            let latest = self.store.state.read().index.latest_live(&req.key);
            let prev = match latest {
                Some(p) => self.fetch_required(p.revision())?,
                None => return Err(Error::KeyNotFound),
            };
            if req.ignore_value {
                value = Some(prev.value);
            }
            if req.ignore_lease {
                lease = prev.lease;
            }
        }
        self.bump_changes(ctx)?;
        let (point, prev_point) = self
            .store
            .state
            .write()
            .index
            .record_put(&req.key, main, sub);
        ctx.ops.live_keys_delta += i64::from(prev_point.is_none());
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: point.created_main,
            mod_revision: main,
            version: point.version,
            value: value.unwrap_or_else(|| req.value.clone()),
            lease,
        };
        self.changes.push(PendingChange {
            rev: point.revision(),
            tombstone: false,
            encoded: kv.encode_to_vec(),
        });
        let prev = match prev_point {
            Some(p) if req.prev_kv || self.event_prev_kv => {
                Some(self.fetch_required(p.revision())?)
            }
            _ => None,
        };
        ctx.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: prev.clone().filter(|_| self.event_prev_kv),
        });
        Ok(PutResponse {
            header: Some(read::header(main)),
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    fn apply_delete(
        &mut self,
        ctx: &mut Ctx,
        range: KeyRange<'_>,
        want_prev: bool,
    ) -> Result<(i64, Vec<KeyValue>), Error> {
        ctx.ops.deletes += 1;
        ctx.ops.ranges += u64::from(want_prev);
        let mut targets: Vec<(Vec<u8>, Revision)> = Vec::new();
        self.store
            .state
            .read()
            .index
            .for_each_visible(range, ctx.read_rev(), |key, p| {
                targets.push((key.to_vec(), p.revision()));
                true
            });
        let mut prev_kvs = Vec::new();
        let deleted = i64::try_from(targets.len()).unwrap_or(i64::MAX);
        ctx.ops.live_keys_delta -= deleted;
        for (key, rev) in targets {
            let prev = if want_prev || self.event_prev_kv {
                Some(self.fetch_required(rev)?)
            } else {
                None
            };
            let main = ctx.begin + 1;
            let point = Point {
                main,
                created_main: 0,
                version: 0,
                sub: ctx.changes,
                tombstone: true,
            };
            let stored = KeyValue {
                key: key.clone(),
                ..Default::default()
            };
            self.record_change(ctx, &key, point, stored.encode_to_vec())?;
            ctx.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key,
                    mod_revision: main,
                    ..Default::default()
                }),
                prev_kv: prev.clone().filter(|_| self.event_prev_kv),
            });
            if let Some(prev) = prev.filter(|_| want_prev) {
                prev_kvs.push(prev);
            }
        }
        Ok((deleted, prev_kvs))
    }

    fn range_in(&self, ctx: &Ctx, req: &RangeRequest) -> Result<RangeResponse, Error> {
        let plan = RangePlan::new(req)?;
        let current = ctx.read_rev();
        let rev = read::read_revision(req.revision, current, self.compact_rev)?;
        let collected = read::collect(&self.store.state.read().index, req, &plan, rev);
        let kvs = read::fetch_all(self, &collected.revisions)?.ok_or_else(missing_revision)?;
        Ok(read::finish(req, &plan, kvs, collected.count, current))
    }

    fn fetch_required(&self, rev: Revision) -> Result<KeyValue, Error> {
        self.fetch(rev)?.ok_or_else(missing_revision)
    }

    /// Which branch every txn on the taken path takes, in visiting order.
    /// `compares` counts the compares evaluated (etcd reads a key for each).
    fn txn_path(
        &self,
        rev: i64,
        req: &TxnRequest,
        path: &mut Vec<bool>,
        compares: &mut u64,
    ) -> Result<(), Error> {
        let mut ok = true;
        for c in &req.compare {
            *compares += 1;
            if !self.compare_holds(rev, c)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        for op in if ok { &req.success } else { &req.failure } {
            if let Some(Request::RequestTxn(t)) = &op.request {
                self.txn_path(rev, t, path, compares)?;
            }
        }
        Ok(())
    }

    fn compare_holds(&self, rev: i64, c: &Compare) -> Result<bool, Error> {
        let mut revisions = Vec::new();
        self.store.state.read().index.for_each_visible(
            KeyRange::new(&c.key, &c.range_end),
            rev,
            |_, p| {
                revisions.push(p.revision());
                true
            },
        );
        if revisions.is_empty() {
            // A missing key has no value to compare (nil == "" on the wire);
            // its revisions, version and lease compare as 0.
            if c.target == CompareTarget::Value as i32 {
                return Ok(false);
            }
            return Ok(compare_kv(c, &KeyValue::default()));
        }
        for rev in revisions {
            if !compare_kv(c, &self.fetch_required(rev)?) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// `ignore_value` / `ignore_lease` puts on the taken path need an existing key.
    fn check_path_puts(
        &self,
        req: &TxnRequest,
        path: &[bool],
        cursor: &mut usize,
    ) -> Result<(), Error> {
        let ok = path.get(*cursor).copied().unwrap_or(false);
        *cursor += 1;
        for op in if ok { &req.success } else { &req.failure } {
            match &op.request {
                Some(Request::RequestPut(p))
                    if (p.ignore_value || p.ignore_lease)
                        && self.store.state.read().index.latest_live(&p.key).is_none() =>
                {
                    return Err(Error::KeyNotFound);
                }
                Some(Request::RequestTxn(t)) => self.check_path_puts(t, path, cursor)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Ranges on the taken path may not ask for future or compacted revisions.
    fn check_path_ranges(
        &self,
        current: i64,
        req: &TxnRequest,
        path: &[bool],
        cursor: &mut usize,
    ) -> Result<(), Error> {
        let ok = path.get(*cursor).copied().unwrap_or(false);
        *cursor += 1;
        for op in if ok { &req.success } else { &req.failure } {
            match &op.request {
                Some(Request::RequestRange(r)) if r.revision != 0 => {
                    if r.revision > current {
                        return Err(Error::FutureRevision);
                    }
                    if r.revision < self.compact_rev {
                        return Err(Error::Compacted);
                    }
                }
                Some(Request::RequestTxn(t)) => {
                    self.check_path_ranges(current, t, path, cursor)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn run_txn(
        &mut self,
        ctx: &mut Ctx,
        req: &TxnRequest,
        path: &[bool],
        cursor: &mut usize,
    ) -> Result<TxnResponse, Error> {
        let ok = path.get(*cursor).copied().unwrap_or(false);
        *cursor += 1;
        let ops = if ok { &req.success } else { &req.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(Request::RequestRange(r)) => {
                    ctx.ops.ranges += 1;
                    Response::ResponseRange(self.range_in(ctx, r)?)
                }
                Some(Request::RequestPut(p)) => Response::ResponsePut(self.apply_put(ctx, p)?),
                Some(Request::RequestDeleteRange(d)) => {
                    let (deleted, prev_kvs) =
                        self.apply_delete(ctx, KeyRange::new(&d.key, &d.range_end), d.prev_kv)?;
                    Response::ResponseDeleteRange(DeleteRangeResponse {
                        header: Some(read::header(ctx.read_rev())),
                        deleted,
                        prev_kvs,
                    })
                }
                Some(Request::RequestTxn(t)) => {
                    Response::ResponseTxn(self.run_txn(ctx, t, path, cursor)?)
                }
                None => return Err(Error::KeyNotFound),
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        Ok(TxnResponse {
            // etcd leaves a nested txn's header empty; the caller fills the
            // top-level one.
            header: Some(Default::default()),
            succeeded: ok,
            responses,
        })
    }
}

impl Drop for WriteBatch<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let base = self.base_rev;
            self.discard_from(0, base);
        }
    }
}

fn missing_revision() -> Error {
    Error::Corrupt("a revision listed by the key index is missing".into())
}

/// etcd's `compareKV`: a target union of another kind compares as zero / empty.
fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let int = |v: i64, want: Option<i64>| v.cmp(&want.unwrap_or(0));
    let result = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Value) => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(want)
        }
        Ok(CompareTarget::Create) => int(
            kv.create_revision,
            match c.target_union {
                Some(TargetUnion::CreateRevision(r)) => Some(r),
                _ => None,
            },
        ),
        Ok(CompareTarget::Mod) => int(
            kv.mod_revision,
            match c.target_union {
                Some(TargetUnion::ModRevision(r)) => Some(r),
                _ => None,
            },
        ),
        Ok(CompareTarget::Version) => int(
            kv.version,
            match c.target_union {
                Some(TargetUnion::Version(v)) => Some(v),
                _ => None,
            },
        ),
        Ok(CompareTarget::Lease) => int(
            kv.lease,
            match c.target_union {
                Some(TargetUnion::Lease(l)) => Some(l),
                _ => None,
            },
        ),
        Err(_) => CmpOrdering::Equal,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => result == CmpOrdering::Equal,
        Ok(CompareResult::NotEqual) => result != CmpOrdering::Equal,
        Ok(CompareResult::Greater) => result == CmpOrdering::Greater,
        Ok(CompareResult::Less) => result == CmpOrdering::Less,
        Err(_) => true,
    }
}
