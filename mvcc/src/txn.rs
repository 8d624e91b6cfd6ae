//! Txn checks done before anything is applied, as etcd's API layer does them:
//! op counts, empty keys, `ignore_*` misuse, and duplicate writes.

use std::collections::HashSet;

use concord_proto::etcdserverpb::request_op::Request;
use concord_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use crate::error::Error;
use crate::key_index::KeyRange;
use crate::read::RangePlan;

pub(crate) fn check_put(req: &PutRequest) -> Result<(), Error> {
    if req.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

pub(crate) fn check_delete(req: &DeleteRangeRequest) -> Result<(), Error> {
    if req.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

pub(crate) fn check_range(req: &RangeRequest) -> Result<(), Error> {
    RangePlan::new(req).map(|_| ())
}

/// etcd's `checkTxnRequest` followed by its duplicate-key check of each branch: the
/// checks that need no state, which etcd makes before a txn reaches raft (the server's
/// gRPC face calls this too, so their errors come before any lease lookup, as etcd's do).
pub fn check_txn(req: &TxnRequest, max_ops: usize) -> Result<(), Error> {
    check_txn_shape(req, max_ops)?;
    write_set(&req.success)?;
    write_set(&req.failure)?;
    Ok(())
}

fn check_txn_shape(req: &TxnRequest, max_ops: usize) -> Result<(), Error> {
    let ops = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len());
    if ops > max_ops {
        return Err(Error::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(Error::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        match &op.request {
            Some(Request::RequestRange(r)) => check_range(r)?,
            Some(Request::RequestPut(p)) => check_put(p)?,
            Some(Request::RequestDeleteRange(d)) => check_delete(d)?,
            Some(Request::RequestTxn(t)) => check_txn_shape(t, max_ops - ops)?,
            // etcd answers an empty op like this.
            None => return Err(Error::KeyNotFound),
        }
    }
    Ok(())
}

/// The keys a list of ops may write.
struct WriteSet<'a> {
    puts: HashSet<&'a [u8]>,
    deletes: Vec<KeyRange<'a>>,
}

impl WriteSet<'_> {
    fn deletes_key(&self, key: &[u8]) -> bool {
        self.deletes.iter().any(|d| d.contains(key))
    }
}

/// etcd's `checkIntervals`: a put may not meet another put or a delete of the
/// same key; both branches of a nested txn count, but they exclude each other.
/// Deletes may overlap each other. As in etcd, a delete whose `range_end` is
/// `"\0"` (or does not exceed its key) is not considered: etcd builds an empty
/// interval for it.
fn write_set(ops: &[RequestOp]) -> Result<WriteSet<'_>, Error> {
    let mut set = WriteSet {
        puts: HashSet::new(),
        deletes: Vec::new(),
    };
    for op in ops {
        if let Some(Request::RequestDeleteRange(d)) = &op.request {
            match KeyRange::new(&d.key, &d.range_end) {
                KeyRange::Span { end: None, .. } => {}
                KeyRange::Span {
                    start,
                    end: Some(end),
                } if end <= start => {}
                range => set.deletes.push(range),
            }
        }
    }
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let then = write_set(&t.success)?;
        let otherwise = write_set(&t.failure)?;
        for key in &then.puts {
            if set.puts.contains(key) || set.deletes_key(key) {
                return Err(Error::DuplicateKey);
            }
            set.puts.insert(key);
        }
        for key in &otherwise.puts {
            if (set.puts.contains(key) && !then.puts.contains(key)) || set.deletes_key(key) {
                return Err(Error::DuplicateKey);
            }
            set.puts.insert(key);
        }
        set.deletes.extend(then.deletes);
        set.deletes.extend(otherwise.deletes);
    }
    for op in ops {
        if let Some(Request::RequestPut(p)) = &op.request {
            let key = p.key.as_slice();
            if set.puts.contains(key) || set.deletes_key(key) {
                return Err(Error::DuplicateKey);
            }
            set.puts.insert(key);
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }
    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }
    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestTxn(TxnRequest {
                compare: vec![],
                success,
                failure,
            })),
        }
    }
    fn dup(ops: Vec<RequestOp>) -> bool {
        matches!(write_set(&ops), Err(Error::DuplicateKey))
    }

    #[test]
    fn duplicate_writes_table() {
        assert!(dup(vec![put("a"), put("a")]));
        assert!(dup(vec![put("b"), del("a", "c")]));
        assert!(dup(vec![del("b", ""), put("b")]));
        assert!(!dup(vec![del("a", "c"), del("b", "d")]));
        assert!(!dup(vec![put("c"), del("a", "c")]));
        // etcd ignores from-key deletes here.
        assert!(!dup(vec![put("c"), del("a", "\0")]));
        assert!(dup(vec![put("a"), txn(vec![put("a")], vec![])]));
        assert!(dup(vec![del("a", "b"), txn(vec![], vec![put("a")])]));
        assert!(dup(vec![txn(vec![del("a", "")], vec![]), put("a")]));
        // then/else are exclusive: the same key in both is fine.
        assert!(!dup(vec![txn(vec![put("a")], vec![put("a")])]));
        assert!(dup(vec![
            txn(vec![put("a")], vec![]),
            txn(vec![], vec![put("a")])
        ]));
        assert!(dup(vec![txn(vec![put("x"), put("x")], vec![])]));
    }

    #[test]
    fn shape_checks() {
        let empty_op = TxnRequest {
            success: vec![RequestOp { request: None }],
            ..Default::default()
        };
        assert!(matches!(check_txn(&empty_op, 128), Err(Error::KeyNotFound)));
        let many = TxnRequest {
            success: (0..5).map(|i| put(&format!("k{i}"))).collect(),
            ..Default::default()
        };
        assert!(matches!(check_txn(&many, 4), Err(Error::TooManyOps)));
        assert!(check_txn(&many, 5).is_ok());
        let bad_put = TxnRequest {
            failure: vec![RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    ignore_value: true,
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        assert!(matches!(
            check_txn(&bad_put, 128),
            Err(Error::ValueProvided)
        ));
    }
}
