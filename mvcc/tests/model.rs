//! Model-based test: seeded random sequences of put / delete / txn / compact /
//! range (at random revisions), grouped into apply rounds that are committed,
//! dropped, or followed by a restart, checked response by response and event by
//! event against a deliberately naive in-memory model of etcd's semantics.

use std::collections::{BTreeMap, HashSet};

use concord_mvcc::{Error, Store, StoreOptions, WriteBatch};
use concord_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use concord_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use concord_proto::etcdserverpb::request_op::Request;
use concord_proto::etcdserverpb::response_op::Response;
use concord_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use concord_proto::mvccpb::event::EventType;
use concord_proto::mvccpb::{Event, KeyValue};
use rand::prelude::*;
use rand_chacha::ChaCha8Rng;

// ---------------------------------------------------------------- the model

/// A key's whole history: `(main revision, value or None for a deletion)`.
#[derive(Clone, Default, Debug)]
struct Model {
    keys: BTreeMap<Vec<u8>, Vec<(i64, Option<KeyValue>)>>,
    rev: i64,
    compact: i64,
}

type MResult<T> = Result<T, String>;

const COMPACTED: &str = "mvcc: required revision has been compacted";
const FUTURE: &str = "mvcc: required revision is a future revision";

fn hdr(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        end => key >= start && key < end,
    }
}

/// One request's progress: writes share `begin + 1`.
struct Tx {
    begin: i64,
    changes: i64,
    events: Vec<Event>,
}

impl Tx {
    fn read_rev(&self) -> i64 {
        if self.changes > 0 {
            self.begin + 1
        } else {
            self.begin
        }
    }
}

impl Model {
    fn get(&self, key: &[u8], rev: i64) -> Option<&KeyValue> {
        self.keys
            .get(key)?
            .iter()
            .rev()
            .find(|(m, _)| *m <= rev)
            .and_then(|(_, kv)| kv.as_ref())
    }

    fn live(&self, start: &[u8], end: &[u8], rev: i64) -> Vec<KeyValue> {
        self.keys
            .keys()
            .filter(|k| in_range(k, start, end))
            .filter_map(|k| self.get(k, rev).cloned())
            .collect()
    }

    fn range_at(&self, req: &RangeRequest, current: i64) -> MResult<RangeResponse> {
        if req.key.is_empty() {
            return Err("etcdserver: key is not provided".into());
        }
        let order =
            SortOrder::try_from(req.sort_order).map_err(|_| "etcdserver: invalid sort option")?;
        let target =
            SortTarget::try_from(req.sort_target).map_err(|_| "etcdserver: invalid sort option")?;
        if req.revision > current {
            return Err(FUTURE.into());
        }
        let rev = if req.revision <= 0 {
            current
        } else {
            req.revision
        };
        if rev < self.compact {
            return Err(COMPACTED.into());
        }
        let all = self.live(&req.key, &req.range_end, rev);
        let count = all.len() as i64;
        if req.count_only {
            return Ok(RangeResponse {
                header: hdr(current),
                kvs: vec![],
                more: false,
                count,
            });
        }
        let fetch_all = order != SortOrder::None
            || req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        let mut kvs: Vec<KeyValue> = if !fetch_all && req.limit > 0 {
            all.into_iter().take(req.limit as usize + 1).collect()
        } else {
            all
        };
        kvs.retain(|kv| {
            (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                && (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
                && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
        });
        let order = if target != SortTarget::Key && order == SortOrder::None {
            SortOrder::Ascend
        } else {
            order
        };
        if order != SortOrder::None {
            let field = |kv: &KeyValue| -> (Vec<u8>, i64) {
                match target {
                    SortTarget::Key => (kv.key.clone(), 0),
                    SortTarget::Version => (vec![], kv.version),
                    SortTarget::Create => (vec![], kv.create_revision),
                    SortTarget::Mod => (vec![], kv.mod_revision),
                    SortTarget::Value => (kv.value.clone(), 0),
                }
            };
            if order == SortOrder::Descend {
                kvs.sort_by_key(|kv| std::cmp::Reverse(field(kv)));
            } else {
                kvs.sort_by_key(field);
            }
        }
        let mut more = false;
        if req.limit > 0 && kvs.len() > req.limit as usize {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        if req.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        Ok(RangeResponse {
            header: hdr(current),
            kvs,
            more,
            count,
        })
    }

    fn put_in(&mut self, tx: &mut Tx, req: &PutRequest) -> MResult<PutResponse> {
        let main = tx.begin + 1;
        let prev = self.get(&req.key, i64::MAX).cloned();
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err("etcdserver: key not found".into());
        }
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: prev.as_ref().map_or(main, |p| p.create_revision),
            mod_revision: main,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value: match &prev {
                Some(p) if req.ignore_value => p.value.clone(),
                _ => req.value.clone(),
            },
            lease: match &prev {
                Some(p) if req.ignore_lease => p.lease,
                _ => req.lease,
            },
        };
        self.keys
            .entry(req.key.clone())
            .or_default()
            .push((main, Some(kv.clone())));
        tx.changes += 1;
        tx.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: prev.clone(),
        });
        Ok(PutResponse {
            header: hdr(main),
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    fn delete_in(
        &mut self,
        tx: &mut Tx,
        key: &[u8],
        end: &[u8],
        want_prev: bool,
    ) -> (i64, Vec<KeyValue>) {
        let main = tx.begin + 1;
        let victims = self.live(key, end, i64::MAX);
        for prev in &victims {
            self.keys
                .entry(prev.key.clone())
                .or_default()
                .push((main, None));
            tx.changes += 1;
            tx.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: prev.key.clone(),
                    mod_revision: main,
                    ..Default::default()
                }),
                prev_kv: Some(prev.clone()),
            });
        }
        let n = victims.len() as i64;
        (n, if want_prev { victims } else { vec![] })
    }

    /// Runs one request; on error the model is left unchanged.
    fn request<T>(
        &mut self,
        f: impl FnOnce(&mut Model, &mut Tx) -> MResult<T>,
    ) -> MResult<(T, Vec<Event>)> {
        let saved = self.clone();
        let mut tx = Tx {
            begin: self.rev,
            changes: 0,
            events: vec![],
        };
        match f(self, &mut tx) {
            Ok(v) => {
                if tx.changes > 0 {
                    self.rev += 1;
                }
                Ok((v, tx.events))
            }
            Err(e) => {
                *self = saved;
                Err(e)
            }
        }
    }

    fn put(&mut self, req: &PutRequest) -> MResult<(PutResponse, Vec<Event>)> {
        check_put(req)?;
        self.request(|m, tx| m.put_in(tx, req))
    }

    fn delete(&mut self, req: &DeleteRangeRequest) -> MResult<(DeleteRangeResponse, Vec<Event>)> {
        if req.key.is_empty() {
            return Err("etcdserver: key is not provided".into());
        }
        self.request(|m, tx| {
            let (deleted, prev_kvs) = m.delete_in(tx, &req.key, &req.range_end, req.prev_kv);
            Ok(DeleteRangeResponse {
                header: hdr(tx.read_rev()),
                deleted,
                prev_kvs,
            })
        })
    }

    fn compare(&self, c: &Compare, rev: i64) -> bool {
        let kvs = self.live(&c.key, &c.range_end, rev);
        let target = CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version);
        if kvs.is_empty() && target == CompareTarget::Value {
            return false;
        }
        let check = |kv: &KeyValue| {
            let ord = match (&c.target_union, target) {
                (Some(TargetUnion::Value(v)), CompareTarget::Value) => kv.value.cmp(v),
                (_, CompareTarget::Value) => kv.value.as_slice().cmp(&[][..]),
                (Some(TargetUnion::Version(v)), CompareTarget::Version) => kv.version.cmp(v),
                (Some(TargetUnion::CreateRevision(v)), CompareTarget::Create) => {
                    kv.create_revision.cmp(v)
                }
                (Some(TargetUnion::ModRevision(v)), CompareTarget::Mod) => kv.mod_revision.cmp(v),
                (Some(TargetUnion::Lease(v)), CompareTarget::Lease) => kv.lease.cmp(v),
                (_, CompareTarget::Version) => kv.version.cmp(&0),
                (_, CompareTarget::Create) => kv.create_revision.cmp(&0),
                (_, CompareTarget::Mod) => kv.mod_revision.cmp(&0),
                (_, CompareTarget::Lease) => kv.lease.cmp(&0),
            };
            match CompareResult::try_from(c.result).unwrap_or(CompareResult::Equal) {
                CompareResult::Equal => ord.is_eq(),
                CompareResult::NotEqual => ord.is_ne(),
                CompareResult::Greater => ord.is_gt(),
                CompareResult::Less => ord.is_lt(),
            }
        };
        if kvs.is_empty() {
            check(&KeyValue::default())
        } else {
            kvs.iter().all(check)
        }
    }

    fn path(&self, req: &TxnRequest, rev: i64, out: &mut Vec<bool>) {
        let ok = req.compare.iter().all(|c| self.compare(c, rev));
        out.push(ok);
        for op in if ok { &req.success } else { &req.failure } {
            if let Some(Request::RequestTxn(t)) = &op.request {
                self.path(t, rev, out);
            }
        }
    }

    fn path_checks(
        &self,
        req: &TxnRequest,
        path: &[bool],
        at: &mut usize,
        ranges: bool,
    ) -> MResult<()> {
        let ok = path[*at];
        *at += 1;
        for op in if ok { &req.success } else { &req.failure } {
            match &op.request {
                Some(Request::RequestPut(p))
                    if !ranges
                        && (p.ignore_value || p.ignore_lease)
                        && self.get(&p.key, i64::MAX).is_none() =>
                {
                    return Err("etcdserver: key not found".into());
                }
                Some(Request::RequestRange(r)) if ranges && r.revision != 0 => {
                    if r.revision > self.rev {
                        return Err(FUTURE.into());
                    }
                    if r.revision < self.compact {
                        return Err(COMPACTED.into());
                    }
                }
                Some(Request::RequestTxn(t)) => self.path_checks(t, path, at, ranges)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn run(
        &mut self,
        tx: &mut Tx,
        req: &TxnRequest,
        path: &[bool],
        at: &mut usize,
    ) -> MResult<TxnResponse> {
        let ok = path[*at];
        *at += 1;
        let mut responses = vec![];
        for op in if ok { &req.success } else { &req.failure } {
            let r = match op.request.as_ref().ok_or("empty op")? {
                Request::RequestRange(r) => {
                    Response::ResponseRange(self.range_at(r, tx.read_rev())?)
                }
                Request::RequestPut(p) => Response::ResponsePut(self.put_in(tx, p)?),
                Request::RequestDeleteRange(d) => {
                    let (deleted, prev_kvs) = self.delete_in(tx, &d.key, &d.range_end, d.prev_kv);
                    Response::ResponseDeleteRange(DeleteRangeResponse {
                        header: hdr(tx.read_rev()),
                        deleted,
                        prev_kvs,
                    })
                }
                Request::RequestTxn(t) => Response::ResponseTxn(self.run(tx, t, path, at)?),
            };
            responses.push(ResponseOp { response: Some(r) });
        }
        Ok(TxnResponse {
            header: Some(ResponseHeader::default()),
            succeeded: ok,
            responses,
        })
    }

    fn txn(&mut self, req: &TxnRequest) -> MResult<(TxnResponse, Vec<Event>)> {
        check_txn_ops(req)?;
        if writes_twice(&req.success) || writes_twice(&req.failure) {
            return Err("etcdserver: duplicate key given in txn request".into());
        }
        self.request(|m, tx| {
            let mut path = vec![];
            m.path(req, m.rev, &mut path);
            m.path_checks(req, &path, &mut 0, false)?;
            m.path_checks(req, &path, &mut 0, true)?;
            let mut resp = m.run(tx, req, &path, &mut 0)?;
            resp.header = hdr(tx.read_rev());
            Ok(resp)
        })
    }

    fn do_compact(&mut self, rev: i64) -> MResult<()> {
        if rev <= self.compact {
            return Err(COMPACTED.into());
        }
        if rev > self.rev {
            return Err(FUTURE.into());
        }
        self.compact = rev;
        Ok(())
    }

    /// Every event with `start <= mod_revision <= current`, revision order.
    fn events(&self, start: &[u8], end: &[u8], from: i64) -> Vec<Event> {
        let mut all: Vec<(i64, usize, Event)> = vec![];
        for (key, hist) in &self.keys {
            if !in_range(key, start, end) {
                continue;
            }
            for (i, (main, kv)) in hist.iter().enumerate() {
                if *main < from {
                    continue;
                }
                let prev = if *main > self.compact && *main > 1 {
                    self.get(key, main - 1).cloned()
                } else {
                    None
                };
                let ev = match kv {
                    Some(kv) => Event {
                        r#type: EventType::Put as i32,
                        kv: Some(kv.clone()),
                        prev_kv: prev,
                    },
                    None => Event {
                        r#type: EventType::Delete as i32,
                        kv: Some(KeyValue {
                            key: key.clone(),
                            mod_revision: *main,
                            ..Default::default()
                        }),
                        prev_kv: prev,
                    },
                };
                all.push((*main, i, ev));
            }
        }
        // Within one revision, changes are in the order they were made: the
        // model does not remember it, so compare revision by revision as sets.
        all.sort_by(|a, b| {
            (a.0, &a.2.kv.as_ref().map(|k| k.key.clone()))
                .cmp(&(b.0, &b.2.kv.as_ref().map(|k| k.key.clone())))
        });
        all.into_iter().map(|(_, _, e)| e).collect()
    }
}

fn check_put(req: &PutRequest) -> MResult<()> {
    if req.key.is_empty() {
        return Err("etcdserver: key is not provided".into());
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err("etcdserver: value is provided".into());
    }
    if req.ignore_lease && req.lease != 0 {
        return Err("etcdserver: lease is provided".into());
    }
    Ok(())
}

fn check_txn_ops(req: &TxnRequest) -> MResult<()> {
    for op in req.success.iter().chain(&req.failure) {
        match &op.request {
            Some(Request::RequestPut(p)) => check_put(p)?,
            Some(Request::RequestTxn(t)) => check_txn_ops(t)?,
            _ => {}
        }
    }
    Ok(())
}

/// etcd's duplicate rule, restated: (puts, deletes) a list of ops may write.
type Interval = (Vec<u8>, Vec<u8>);

fn write_set(ops: &[RequestOp]) -> Option<(HashSet<Vec<u8>>, Vec<Interval>)> {
    let mut dels: Vec<Interval> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some((d.key.clone(), d.range_end.clone())),
            _ => None,
        })
        // etcd builds an empty interval for from-key deletes (and inverted ranges).
        .filter(|(k, e)| e.is_empty() || (e.as_slice() != [0] && e > k))
        .collect();
    let hits = |dels: &[Interval], k: &[u8]| dels.iter().any(|(s, e)| in_range(k, s, e));
    let mut puts = HashSet::new();
    for op in ops {
        if let Some(Request::RequestTxn(t)) = &op.request {
            let (then_puts, then_dels) = write_set(&t.success)?;
            let (else_puts, else_dels) = write_set(&t.failure)?;
            for k in &then_puts {
                if puts.contains(k) || hits(&dels, k) {
                    return None;
                }
                puts.insert(k.clone());
            }
            for k in &else_puts {
                if (puts.contains(k) && !then_puts.contains(k)) || hits(&dels, k) {
                    return None;
                }
                puts.insert(k.clone());
            }
            dels.extend(then_dels);
            dels.extend(else_dels);
        }
    }
    for op in ops {
        if let Some(Request::RequestPut(p)) = &op.request {
            if puts.contains(&p.key) || hits(&dels, &p.key) {
                return None;
            }
            puts.insert(p.key.clone());
        }
    }
    Some((puts, dels))
}

fn writes_twice(ops: &[RequestOp]) -> bool {
    write_set(ops).is_none()
}

// ---------------------------------------------------------------- generators

const KEYS: &[&str] = &[
    "a", "aa", "ab", "b", "ba", "c", "d", "e", "f", "g", "h", "i", "j",
];

fn key(rng: &mut ChaCha8Rng) -> Vec<u8> {
    KEYS.choose(rng)
        .map(|k| k.as_bytes().to_vec())
        .unwrap_or_default()
}

fn range_end(rng: &mut ChaCha8Rng, start: &[u8]) -> Vec<u8> {
    match rng.random_range(0..10) {
        0..=4 => vec![],
        5 => vec![0],
        6 => {
            // prefix end
            let mut e = start.to_vec();
            if let Some(last) = e.last_mut() {
                *last += 1;
            }
            e
        }
        _ => key(rng),
    }
}

fn gen_put(rng: &mut ChaCha8Rng) -> PutRequest {
    let ignore_value = rng.random_bool(0.1);
    let ignore_lease = rng.random_bool(0.1);
    PutRequest {
        key: key(rng),
        value: if ignore_value && rng.random_bool(0.8) {
            vec![]
        } else {
            format!("v{}", rng.random_range(0..20)).into_bytes()
        },
        lease: if ignore_lease && rng.random_bool(0.8) {
            0
        } else {
            rng.random_range(0..3)
        },
        prev_kv: rng.random_bool(0.4),
        ignore_value,
        ignore_lease,
    }
}

fn gen_delete(rng: &mut ChaCha8Rng) -> DeleteRangeRequest {
    let k = key(rng);
    DeleteRangeRequest {
        range_end: range_end(rng, &k),
        key: k,
        prev_kv: rng.random_bool(0.5),
    }
}

fn gen_range(rng: &mut ChaCha8Rng, rev_hint: (i64, i64)) -> RangeRequest {
    let k = key(rng);
    let (compact, current) = rev_hint;
    RangeRequest {
        range_end: range_end(rng, &k),
        key: k,
        limit: if rng.random_bool(0.3) {
            rng.random_range(1..4)
        } else {
            0
        },
        revision: if rng.random_bool(0.5) {
            0
        } else {
            rng.random_range((compact - 2)..=(current + 2))
        },
        sort_order: if rng.random_bool(0.3) {
            rng.random_range(0..3)
        } else {
            0
        },
        sort_target: if rng.random_bool(0.3) {
            rng.random_range(0..5)
        } else {
            0
        },
        serializable: false,
        keys_only: rng.random_bool(0.1),
        count_only: rng.random_bool(0.1),
        min_mod_revision: if rng.random_bool(0.1) {
            rng.random_range(0..=current.max(1))
        } else {
            0
        },
        max_mod_revision: if rng.random_bool(0.1) {
            rng.random_range(0..=current.max(1))
        } else {
            0
        },
        min_create_revision: if rng.random_bool(0.1) {
            rng.random_range(0..=current.max(1))
        } else {
            0
        },
        max_create_revision: if rng.random_bool(0.1) {
            rng.random_range(0..=current.max(1))
        } else {
            0
        },
    }
}

fn gen_compare(rng: &mut ChaCha8Rng, current: i64) -> Compare {
    let k = key(rng);
    let target = rng.random_range(0..5);
    let n = rng.random_range(0..=current.max(1) + 1);
    let union = match (rng.random_bool(0.9), target) {
        (false, _) => None,
        (true, 0) => Some(TargetUnion::Version(rng.random_range(0..4))),
        (true, 1) => Some(TargetUnion::CreateRevision(n)),
        (true, 2) => Some(TargetUnion::ModRevision(n)),
        (true, 3) => Some(TargetUnion::Value(
            format!("v{}", rng.random_range(0..20)).into_bytes(),
        )),
        (true, _) => Some(TargetUnion::Lease(rng.random_range(0..3))),
    };
    Compare {
        result: rng.random_range(0..4),
        target,
        range_end: if rng.random_bool(0.2) {
            range_end(rng, &k)
        } else {
            vec![]
        },
        key: k,
        target_union: union,
    }
}

fn gen_txn(rng: &mut ChaCha8Rng, revs: (i64, i64), depth: u32) -> TxnRequest {
    let ops = |rng: &mut ChaCha8Rng| -> Vec<RequestOp> {
        (0..rng.random_range(0..4))
            .map(|_| {
                let request = match rng.random_range(0..10) {
                    0..=3 => Request::RequestPut(gen_put(rng)),
                    4..=5 => Request::RequestDeleteRange(gen_delete(rng)),
                    6..=8 => Request::RequestRange(gen_range(rng, revs)),
                    _ if depth < 2 => Request::RequestTxn(gen_txn(rng, revs, depth + 1)),
                    _ => Request::RequestPut(gen_put(rng)),
                };
                RequestOp {
                    request: Some(request),
                }
            })
            .collect()
    };
    TxnRequest {
        compare: (0..rng.random_range(0..3))
            .map(|_| gen_compare(rng, revs.1))
            .collect(),
        success: ops(rng),
        failure: ops(rng),
    }
}

// ---------------------------------------------------------------- the test

fn err_text<T>(r: Result<T, Error>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

fn sort_events(mut evs: Vec<Event>) -> Vec<Event> {
    // Events inside one revision come in execution order from the store; the
    // model lists them by key. Compare as (revision, key)-sorted lists.
    evs.sort_by(|a, b| {
        let ka = a.kv.as_ref().map(|k| (k.mod_revision, k.key.clone()));
        let kb = b.kv.as_ref().map(|k| (k.mod_revision, k.key.clone()));
        ka.cmp(&kb)
    });
    evs
}

/// How often each kind of outcome happened, so the test can insist that the
/// interesting cases were actually exercised.
#[derive(Default, Debug)]
struct Coverage {
    outcomes: BTreeMap<String, usize>,
}

impl Coverage {
    fn note<T>(&mut self, what: &str, result: &MResult<T>) {
        let key = match result {
            Ok(_) => format!("{what}: ok"),
            Err(e) => format!("{what}: {e}"),
        };
        *self.outcomes.entry(key).or_default() += 1;
    }

    fn count(&self, key: &str) -> usize {
        self.outcomes.get(key).copied().unwrap_or(0)
    }
}

/// Applies one random operation to both and compares the answers.
#[allow(clippy::too_many_arguments)] // a test helper: the state it checks, spelled out
fn step(
    rng: &mut ChaCha8Rng,
    batch: &mut WriteBatch<'_>,
    store: &Store,
    working: &mut Model,
    committed: &Model,
    ctx: &str,
    cov: &mut Coverage,
    event_prev_kv: bool,
) {
    let revs = (working.compact, working.rev);
    // With prev_kv turned off for events, the model's events lose it too.
    fn strip<R>(r: MResult<(R, Vec<Event>)>, keep: bool) -> MResult<(R, Vec<Event>)> {
        r.map(|(resp, mut evs)| {
            if !keep {
                evs.iter_mut().for_each(|e| e.prev_kv = None);
            }
            (resp, evs)
        })
    }
    match rng.random_range(0..100) {
        0..=29 => {
            let req = gen_put(rng);
            let got = err_text(batch.put(&req));
            let want = strip(working.put(&req), event_prev_kv);
            cov.note("put", &want);
            assert_eq!(got, want, "{ctx}: put {req:?}");
        }
        30..=42 => {
            let req = gen_delete(rng);
            let got = err_text(batch.delete_range(&req));
            let want = strip(working.delete(&req), event_prev_kv);
            if let Ok((r, _)) = &want {
                cov.note(
                    if r.deleted > 1 {
                        "delete many"
                    } else {
                        "delete <= 1"
                    },
                    &Ok(()),
                );
            }
            assert_eq!(got, want, "{ctx}: delete {req:?}");
        }
        43..=62 => {
            let req = gen_txn(rng, revs, 0);
            let got = err_text(batch.txn(&req));
            let want = strip(working.txn(&req), event_prev_kv);
            cov.note("txn", &want);
            if let Ok((r, evs)) = &want {
                cov.note(
                    if r.succeeded {
                        "txn succeeded"
                    } else {
                        "txn failed"
                    },
                    &Ok(()),
                );
                if evs.len() > 1 {
                    cov.note("txn multi-write", &Ok(()));
                }
            }
            assert_eq!(got, want, "{ctx}: txn {req:?}");
        }
        63..=66 => {
            let rev = rng.random_range((working.compact - 1)..=(working.rev + 1));
            let got = err_text(batch.compact(rev));
            let want = working.do_compact(rev);
            cov.note("compact", &want);
            assert_eq!(got, want, "{ctx}: compact {rev}");
        }
        67..=81 => {
            // A read inside the batch sees the batch's writes.
            let req = gen_range(rng, revs);
            let got = err_text(batch.range(&req));
            let want = working.range_at(&req, working.rev);
            cov.note("batch range", &want);
            assert_eq!(got, want, "{ctx}: batch range {req:?}");
        }
        82..=94 => {
            // A committed read sees none of the open batch.
            let req = gen_range(rng, (committed.compact, committed.rev));
            let got = err_text(store.range(&req));
            let want = committed.range_at(&req, committed.rev);
            cov.note("store range", &want);
            if let Ok(r) = &want {
                cov.note(
                    if r.more {
                        "range more"
                    } else {
                        "range complete"
                    },
                    &Ok(()),
                );
            }
            assert_eq!(got, want, "{ctx}: store range {req:?}");
        }
        _ => {
            let k = key(rng);
            let end = range_end(rng, &k);
            let from = rng.random_range((committed.compact - 1)..=(committed.rev + 2));
            let got = err_text(store.events(&k, &end, from, 0, 0, true))
                .map(|(e, next)| (sort_events(e), next));
            // History starts at revision 1.
            let from = from.max(1);
            let want = if from <= committed.compact {
                Err(COMPACTED.to_string())
            } else {
                Ok((
                    committed.events(&k, &end, from),
                    committed.rev.max(from - 1) + 1,
                ))
            };
            let want = want.map(|(e, n)| (sort_events(e), n));
            cov.note("events", &want);
            assert_eq!(got, want, "{ctx}: events {k:?}..{end:?} from {from}");
        }
    }
}

fn run_seed(seed: u64, rounds: usize, cov: &mut Coverage) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = StoreOptions {
        max_txn_ops: 1024,
        // Odd seeds flush tiny memtables all the time, so reads also meet
        // revisions (and compactions' removals of them) in on-disk tables.
        memtable_size_bytes: if seed % 2 == 1 {
            4 * 1024
        } else {
            StoreOptions::default().memtable_size_bytes
        },
        ..StoreOptions::default()
    };
    let mut store = Store::open(dir.path(), opts.clone()).expect("open");
    // etcd's empty store is at revision 1, and its compact revision starts at -1
    // (so a first compaction at 0 succeeds).
    let mut committed = Model {
        rev: 1,
        compact: -1,
        ..Model::default()
    };
    let mut applied = 0u64;
    for round in 0..rounds {
        let ctx = format!("seed {seed} round {round}");
        let mut working = committed.clone();
        let mut batch = store.write_batch();
        let event_prev_kv = rng.random_bool(0.8);
        batch.set_event_prev_kv(event_prev_kv);
        for _ in 0..rng.random_range(1..6) {
            step(
                &mut rng,
                &mut batch,
                &store,
                &mut working,
                &committed,
                &ctx,
                cov,
                event_prev_kv,
            );
            assert_eq!(batch.revision(), working.rev, "{ctx}: batch revision");
        }
        if rng.random_bool(0.1) {
            drop(batch);
        } else {
            applied += 1;
            batch.set_applied_index(applied);
            batch.commit().expect("commit");
            committed = working;
        }
        assert_eq!(store.current_revision(), committed.rev, "{ctx}");
        assert_eq!(store.etcd_compact_revision(), committed.compact, "{ctx}");
        if rng.random_bool(0.03) {
            cov.note("restart", &Ok(()));
            drop(store);
            store = Store::open(dir.path(), opts.clone()).expect("reopen");
            assert_eq!(
                store.applied_index(),
                applied,
                "{ctx}: applied index after restart"
            );
            assert_eq!(
                store.current_revision(),
                committed.rev,
                "{ctx}: revision after restart"
            );
            assert_eq!(store.etcd_compact_revision(), committed.compact, "{ctx}");
        }
    }
    // Finally every key at every retained revision agrees.
    for rev in committed.compact.max(1)..=committed.rev {
        let req = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision: rev,
            ..Default::default()
        };
        assert_eq!(
            err_text(store.range(&req)),
            committed.range_at(&req, committed.rev),
            "seed {seed}: full range at {rev}"
        );
    }
}

#[test]
fn random_operations_match_the_model() {
    let mut cov = Coverage::default();
    for seed in 0..24 {
        run_seed(seed, 250, &mut cov);
    }
    eprintln!("{cov:#?}");
    for (what, at_least) in [
        ("put: ok", 1000),
        ("put: etcdserver: key not found", 20),
        ("put: etcdserver: value is provided", 10),
        ("put: etcdserver: lease is provided", 10),
        ("delete many: ok", 50),
        ("txn: ok", 500),
        ("txn succeeded: ok", 200),
        ("txn failed: ok", 100),
        ("txn multi-write: ok", 100),
        ("txn: etcdserver: duplicate key given in txn request", 50),
        ("txn: mvcc: required revision has been compacted", 5),
        ("compact: ok", 50),
        ("compact: mvcc: required revision has been compacted", 10),
        ("compact: mvcc: required revision is a future revision", 10),
        ("store range: ok", 500),
        (
            "store range: mvcc: required revision has been compacted",
            20,
        ),
        (
            "store range: mvcc: required revision is a future revision",
            20,
        ),
        ("batch range: ok", 500),
        ("range more: ok", 20),
        ("events: ok", 50),
        ("events: mvcc: required revision has been compacted", 10),
        ("restart: ok", 50),
    ] {
        assert!(
            cov.count(what) >= at_least,
            "only {} of {what:?}",
            cov.count(what)
        );
    }
}
