//! Range evaluation shared by committed reads ([`crate::Store::range`]) and reads
//! inside a write batch: etcd's planning (when to fetch everything, the
//! one-extra fetch for `more`), filters, sorting, `limit`, `keys_only` and
//! `count_only`.

use std::cmp::Ordering;

use concord_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use concord_proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use concord_proto::mvccpb::KeyValue;
use prost::Message;

use crate::error::Error;
use crate::key_index::{KeyIndex, KeyRange};
use crate::revision::Revision;

/// Where key-values are read from by revision.
pub(crate) trait FetchKv {
    /// The key-value stored at `rev` (a put, never a tombstone); `None` if the
    /// backend no longer has it (compacted away after the index was read).
    fn fetch(&self, rev: Revision) -> Result<Option<KeyValue>, Error>;
}

/// A validated range request's options.
pub(crate) struct RangePlan {
    order: SortOrder,
    target: SortTarget,
    /// Fetch at most this many key-values (`None`: all).
    fetch_limit: Option<usize>,
}

impl RangePlan {
    /// Checks a request like etcd's API layer does.
    pub fn new(req: &RangeRequest) -> Result<Self, Error> {
        if req.key.is_empty() {
            return Err(Error::EmptyKey);
        }
        let order = SortOrder::try_from(req.sort_order).map_err(|_| Error::InvalidSortOption)?;
        let target = SortTarget::try_from(req.sort_target).map_err(|_| Error::InvalidSortOption)?;
        // etcd fetches everything when it has to sort or filter, and otherwise one
        // more than the limit so it can tell whether there is more.
        let fetch_everything = order != SortOrder::None
            || req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        let fetch_limit = if fetch_everything || req.limit <= 0 {
            None
        } else {
            Some(
                usize::try_from(req.limit)
                    .unwrap_or(usize::MAX)
                    .saturating_add(1),
            )
        };
        Ok(Self {
            order,
            target,
            fetch_limit,
        })
    }
}

/// The revision a range reads at: `Err` for future or compacted revisions.
pub(crate) fn read_revision(requested: i64, current: i64, compacted: i64) -> Result<i64, Error> {
    if requested > current {
        return Err(Error::FutureRevision);
    }
    let rev = if requested <= 0 { current } else { requested };
    if rev < compacted {
        return Err(Error::Compacted);
    }
    Ok(rev)
}

/// What the index says a range covers.
pub(crate) struct Collected {
    pub revisions: Vec<Revision>,
    pub count: i64,
}

/// Walks the index for a range: every visible key is counted, at most
/// `fetch_limit` are listed (none when `count_only`).
pub(crate) fn collect(
    index: &KeyIndex,
    req: &RangeRequest,
    plan: &RangePlan,
    rev: i64,
) -> Collected {
    let mut revisions = Vec::new();
    let mut count = 0i64;
    index.for_each_visible(KeyRange::new(&req.key, &req.range_end), rev, |_, point| {
        count += 1;
        if !req.count_only && plan.fetch_limit.is_none_or(|limit| revisions.len() < limit) {
            revisions.push(point.revision());
        }
        true
    });
    Collected { revisions, count }
}

/// Fetches the listed revisions; `Ok(None)` if one vanished.
pub(crate) fn fetch_all(
    fetch: &impl FetchKv,
    revisions: &[Revision],
) -> Result<Option<Vec<KeyValue>>, Error> {
    if revisions.len() <= 8 {
        let mut kvs = Vec::with_capacity(revisions.len());
        for rev in revisions {
            match fetch.fetch(*rev)? {
                Some(kv) => kvs.push(kv),
                None => return Ok(None),
            }
        }
        return Ok(Some(kvs));
    }
    // Many keys: read in revision order, so keys written together hit the same
    // backend blocks one after another, then put the results back in key order.
    let mut order: Vec<usize> = (0..revisions.len()).collect();
    order.sort_unstable_by_key(|&i| revisions.get(i).copied());
    let mut slots: Vec<Option<KeyValue>> = vec![None; revisions.len()];
    for i in order {
        let Some(rev) = revisions.get(i) else {
            continue;
        };
        match fetch.fetch(*rev)? {
            Some(kv) => {
                if let Some(slot) = slots.get_mut(i) {
                    *slot = Some(kv);
                }
            }
            None => return Ok(None),
        }
    }
    Ok(slots.into_iter().collect())
}

/// Applies filters, sort, limit and `keys_only` the way etcd's applier does.
pub(crate) fn finish(
    req: &RangeRequest,
    plan: &RangePlan,
    mut kvs: Vec<KeyValue>,
    count: i64,
    header_revision: i64,
) -> RangeResponse {
    if req.max_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision <= req.max_mod_revision);
    }
    if req.min_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision >= req.min_mod_revision);
    }
    if req.max_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision <= req.max_create_revision);
    }
    if req.min_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision >= req.min_create_revision);
    }
    let mut order = plan.order;
    if plan.target != SortTarget::Key && order == SortOrder::None {
        // Results come in ascending key order already; another target means
        // ascending by that target.
        order = SortOrder::Ascend;
    }
    if order != SortOrder::None {
        let by = |a: &KeyValue, b: &KeyValue| -> Ordering {
            match plan.target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            }
        };
        if order == SortOrder::Descend {
            kvs.sort_by(|a, b| by(b, a));
        } else {
            kvs.sort_by(by);
        }
    }
    let mut more = false;
    if let Ok(limit) = usize::try_from(req.limit)
        && limit > 0
        && kvs.len() > limit
    {
        kvs.truncate(limit);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    RangeResponse {
        header: Some(header(header_revision)),
        kvs,
        more,
        count,
    }
}

/// A response header carrying only the revision; the server fills the rest.
pub(crate) fn header(revision: i64) -> ResponseHeader {
    ResponseHeader {
        revision,
        ..Default::default()
    }
}

/// Decodes a stored key-value.
pub(crate) fn decode_kv(bytes: &[u8]) -> Result<KeyValue, Error> {
    KeyValue::decode(bytes).map_err(|e| Error::Corrupt(format!("undecodable key-value: {e}")))
}
