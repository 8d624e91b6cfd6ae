//! What the store counts, through the `metrics` facade (the server exports it in
//! Prometheus form under etcd's names).
//!
//! etcd counts, per request applied or read, the ranges, puts and deletes it did
//! (a put or delete that returns `prev_kv` first does a range, and so does each
//! compare of a txn), and counts a txn when one request did more than one of them
//! (etcd's `metricsTxnWrite.End`). A write batch adds up its requests' counts and
//! records them once, at commit: a batch that is dropped or fails records nothing.

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

/// etcd 3.4 exposes each mvcc counter twice: under `etcd_mvcc_` and, until 3.5,
/// under `etcd_debugging_mvcc_`.
pub(crate) struct StoreMetrics {
    range: [Counter; 2],
    put: [Counter; 2],
    delete: [Counter; 2],
    txn: [Counter; 2],
    /// `etcd_debugging_mvcc_total_put_size_in_bytes`: key + value bytes of every put.
    put_size: Gauge,
    /// `etcd_debugging_mvcc_keys_total`: live keys.
    pub(crate) keys: Gauge,
    /// `etcd_disk_backend_commit_duration_seconds`: one write batch's commit.
    pub(crate) commit_seconds: Histogram,
    /// `etcd_mvcc_db_open_read_transactions`: consistent views open now.
    open_reads: Gauge,
    /// `etcd_disk_backend_defrag_duration_seconds`: one defragmentation that succeeded.
    pub(crate) defrag_seconds: Histogram,
    /// `etcd_disk_defrag_inflight`: 1 while a defragmentation runs.
    defrag_inflight: Gauge,
}

impl StoreMetrics {
    /// Registers the handles once; every later update is an atomic add.
    pub(crate) fn new() -> Self {
        let pair = |name: &'static str| {
            [
                counter!(format!("etcd_mvcc_{name}")),
                counter!(format!("etcd_debugging_mvcc_{name}")),
            ]
        };
        StoreMetrics {
            range: pair("range_total"),
            put: pair("put_total"),
            delete: pair("delete_total"),
            txn: pair("txn_total"),
            put_size: gauge!("etcd_debugging_mvcc_total_put_size_in_bytes"),
            keys: gauge!("etcd_debugging_mvcc_keys_total"),
            commit_seconds: histogram!("etcd_disk_backend_commit_duration_seconds"),
            open_reads: gauge!("etcd_mvcc_db_open_read_transactions"),
            defrag_seconds: histogram!("etcd_disk_backend_defrag_duration_seconds"),
            defrag_inflight: gauge!("etcd_disk_defrag_inflight"),
        }
    }

    /// Counts a consistent view of the backend as an open read transaction while the
    /// returned guard lives (etcd counts its backend's open bolt read transactions).
    pub(crate) fn open_read(&self) -> OpenRead {
        self.open_reads.increment(1.0);
        OpenRead(self.open_reads.clone())
    }

    /// Shows a defragmentation in flight while the returned guard lives.
    pub(crate) fn defragmenting(&self) -> Defragmenting {
        self.defrag_inflight.set(1.0);
        Defragmenting(self.defrag_inflight.clone())
    }

    /// One read request (a `Range` outside a write).
    pub(crate) fn record_read(&self) {
        add(&self.range, 1);
    }

    /// A committed batch's tallies.
    pub(crate) fn record(&self, ops: &OpCounts) {
        add(&self.range, ops.ranges);
        add(&self.put, ops.puts);
        add(&self.delete, ops.deletes);
        add(&self.txn, ops.txns);
        if ops.put_bytes > 0 {
            self.put_size.increment(ops.put_bytes as f64);
        }
        if ops.live_keys_delta != 0 {
            self.keys.increment(ops.live_keys_delta as f64);
        }
    }
}

/// An open read transaction, counted until dropped (see [`StoreMetrics::open_read`]).
pub(crate) struct OpenRead(Gauge);

impl Drop for OpenRead {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// A defragmentation in flight (see [`StoreMetrics::defragmenting`]).
pub(crate) struct Defragmenting(Gauge);

impl Drop for Defragmenting {
    fn drop(&mut self) {
        self.0.set(0.0);
    }
}

fn add(pair: &[Counter; 2], n: u64) {
    if n > 0 {
        for counter in pair {
            counter.increment(n);
        }
    }
}

/// Operations done by one request, or (summed) by a batch.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct OpCounts {
    pub ranges: u64,
    pub puts: u64,
    pub deletes: u64,
    pub txns: u64,
    pub put_bytes: u64,
    /// Keys created minus keys deleted.
    pub live_keys_delta: i64,
}

impl OpCounts {
    /// Adds one finished request's counts, counting it as a txn when it did more
    /// than one operation.
    pub(crate) fn add_request(&mut self, request: &OpCounts) {
        self.ranges += request.ranges;
        self.puts += request.puts;
        self.deletes += request.deletes;
        self.txns += u64::from(request.ranges + request.puts + request.deletes > 1);
        self.put_bytes += request.put_bytes;
        self.live_keys_delta += request.live_keys_delta;
    }
}
