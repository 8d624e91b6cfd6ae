//! `make-mirror [options] <destination>`: copies the source cluster's keys
//! (all, or those under `--prefix`) to a destination cluster and keeps them in
//! step, as etcdctl 3.4 and clientv3's `mirror.Syncer` do:
//!
//! 1. a linearizable read fixes the revision to copy from;
//! 2. the keys as of that revision are read in pages of 1000 and put one by one;
//! 3. a watch from the next revision replays every later change, the events of
//!    one source revision as one destination transaction.
//!
//! Keys are renamed by replacing the first occurrence of `--prefix` with
//! `--dest-prefix` (the prefix itself by default, nothing with
//! `--no-dest-prefix`). Every 30 seconds the number of keys written so far is
//! printed. Nothing has a deadline: while either cluster is down (restarting)
//! requests wait and are sent again, and a broken watch is opened again from
//! the revision after the last one applied. A compacted revision ends the
//! mirror with etcd's error.

use super::Context;
use crate::cli;
use crate::client::{Client, MAX_RECV_MSG_SIZE};
use crate::error::{CtlError, status_message};
use crate::kv::prefix_range_end;
use concord_proto::etcdserverpb as pb;
use concord_proto::mvccpb;
use std::cell::Cell;
use std::time::Duration;

/// clientv3 mirror's page size.
const BATCH_LIMIT: i64 = 1000;
/// How often etcdctl prints the running total.
const REPORT_EVERY: Duration = Duration::from_secs(30);
/// The wait before opening a broken watch again.
const REWATCH_BACKOFF: Duration = Duration::from_millis(200);

pub(super) async fn make_mirror(
    a: cli::MakeMirrorArgs,
    ctx: &mut Context<'_>,
) -> Result<(), CtlError> {
    let [destination] = a.args.as_slice() else {
        return Err(CtlError::bad_args(
            "make-mirror takes one destination argument",
        ));
    };
    let mut dest_config = ctx.config.clone();
    dest_config.endpoints = vec![destination.clone()];
    dest_config.credentials = None;
    dest_config.tls = crate::tls::settings(
        Some(&a.dest_cacert),
        Some(&a.dest_cert),
        Some(&a.dest_key),
        None,
        a.dest_insecure_transport,
        false,
    );
    let dest = Client::connect(&dest_config).await?;
    let source = ctx.client().await?;

    let total = Cell::new(0_i64);
    let work = mirror(&source, &dest, &a, &total);
    tokio::pin!(work);
    let mut report =
        tokio::time::interval_at(tokio::time::Instant::now() + REPORT_EVERY, REPORT_EVERY);
    loop {
        tokio::select! {
            result = &mut work => {
                result?;
                // etcdctl exits through ExitWithError even when the watch
                // simply ends (it never does here: a broken watch reopens).
                return Err(CtlError::error("<nil>"));
            }
            _ = report.tick() => ctx.emit(format!("{}\n", total.get()).as_bytes())?,
        }
    }
}

/// `key` with the first occurrence of `from` replaced by `to` (Go's
/// `strings.Replace(key, from, to, 1)`: an empty `from` matches at the start).
fn rename(key: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = if from.is_empty() {
        Some(0)
    } else {
        key.windows(from.len()).position(|w| w == from)
    };
    match at {
        Some(i) => [&key[..i], to, &key[i + from.len()..]].concat(),
        None => key.to_vec(),
    }
}

/// The key range mirrored: everything, or the keys under `prefix`.
fn mirrored_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        (vec![0], vec![0])
    } else {
        (prefix.to_vec(), prefix_range_end(prefix))
    }
}

async fn range(source: &Client, req: pb::RangeRequest) -> Result<pb::RangeResponse, CtlError> {
    source
        .call_until_done(req, |c, r| async move {
            pb::kv_client::KvClient::new(c)
                .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                .range(r)
                .await
        })
        .await
}

async fn mirror(
    source: &Client,
    dest: &Client,
    a: &cli::MakeMirrorArgs,
    total: &Cell<i64>,
) -> Result<(), CtlError> {
    let prefix = a.prefix.as_bytes();
    // The revision to copy: any linearizable read tells it.
    let base = range(
        source,
        pb::RangeRequest {
            key: b"foo".to_vec(),
            ..Default::default()
        },
    )
    .await;
    // etcdctl checks its flags only once this first read has been tried.
    if a.no_dest_prefix && !a.dest_prefix.is_empty() {
        return Err(CtlError::bad_args(
            "`--dest-prefix` and `--no-dest-prefix` cannot be set at the same time, choose one",
        ));
    }
    let dest_prefix = match (a.no_dest_prefix, a.dest_prefix.is_empty()) {
        (true, _) => &b""[..],
        (false, true) => prefix,
        (false, false) => a.dest_prefix.as_bytes(),
    };
    let revision = base?.header.map_or(0, |h| h.revision);

    let (mut key, range_end) = mirrored_range(prefix);
    loop {
        let page = range(
            source,
            pb::RangeRequest {
                key: key.clone(),
                range_end: range_end.clone(),
                limit: BATCH_LIMIT,
                revision,
                ..Default::default()
            },
        )
        .await?;
        for kv in &page.kvs {
            let put = pb::PutRequest {
                key: rename(&kv.key, prefix, dest_prefix),
                value: kv.value.clone(),
                ..Default::default()
            };
            dest.call_until_done(put, |c, r| async move {
                pb::kv_client::KvClient::new(c)
                    .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                    .put(r)
                    .await
            })
            .await?;
            total.set(total.get() + 1);
        }
        match page.kvs.last() {
            Some(last) if page.more => {
                key = last.key.clone();
                key.push(0);
            }
            _ => break,
        }
    }

    let (key, range_end) = mirrored_range(prefix);
    let mut next = revision + 1;
    loop {
        let mut events = match watch(source, &key, &range_end, next).await {
            Ok(events) => events,
            Err(status) if retryable(&status) => {
                tokio::time::sleep(REWATCH_BACKOFF).await;
                continue;
            }
            Err(status) => return Err(CtlError::error(status_message(&status))),
        };
        loop {
            let resp = match events.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => break,
                Err(status) if retryable(&status) => break,
                Err(status) => return Err(CtlError::error(status_message(&status))),
            };
            if resp.compact_revision != 0 {
                return Err(CtlError::error(
                    "etcdserver: mvcc: required revision has been compacted",
                ));
            }
            if resp.canceled {
                return Err(CtlError::error(if resp.cancel_reason.is_empty() {
                    "watch canceled by the server".to_owned()
                } else {
                    resp.cancel_reason
                }));
            }
            for batch in resp
                .events
                .chunk_by(|x, y| mod_revision(x) == mod_revision(y))
            {
                apply(dest, batch, prefix, dest_prefix).await?;
                total.set(total.get() + i64::try_from(batch.len()).unwrap_or(i64::MAX));
                next = mod_revision(&batch[0]) + 1;
            }
        }
        // The source went away (restart, lost connection): pick up from the
        // revision after the last one applied.
        tokio::time::sleep(REWATCH_BACKOFF).await;
    }
}

fn mod_revision(event: &mvccpb::Event) -> i64 {
    event.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

/// Whether a failed watch is worth opening again (the source is restarting or
/// unreachable) rather than an answer to report.
fn retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    ) && !status.message().starts_with("etcdserver: mvcc")
}

/// One source revision's events as one destination transaction.
async fn apply(
    dest: &Client,
    events: &[mvccpb::Event],
    prefix: &[u8],
    dest_prefix: &[u8],
) -> Result<(), CtlError> {
    use pb::request_op::Request;
    let ops = events
        .iter()
        .filter_map(|e| {
            let kv = e.kv.as_ref()?;
            let key = rename(&kv.key, prefix, dest_prefix);
            let request = if e.r#type == mvccpb::event::EventType::Delete as i32 {
                Request::RequestDeleteRange(pb::DeleteRangeRequest {
                    key,
                    ..Default::default()
                })
            } else {
                Request::RequestPut(pb::PutRequest {
                    key,
                    value: kv.value.clone(),
                    ..Default::default()
                })
            };
            Some(pb::RequestOp {
                request: Some(request),
            })
        })
        .collect();
    let txn = pb::TxnRequest {
        success: ops,
        ..Default::default()
    };
    dest.call_until_done(txn, |c, r| async move {
        pb::kv_client::KvClient::new(c)
            .max_decoding_message_size(MAX_RECV_MSG_SIZE)
            .txn(r)
            .await
    })
    .await
    .map(|_| ())
}

async fn watch(
    source: &Client,
    key: &[u8],
    range_end: &[u8],
    start_revision: i64,
) -> Result<tonic::Streaming<pb::WatchResponse>, tonic::Status> {
    let create = pb::WatchCreateRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        start_revision,
        ..Default::default()
    };
    source.open_watch(create).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_renamed_like_go_strings_replace_once() {
        assert_eq!(rename(b"o_key1", b"o_", b"d_"), b"d_key1");
        assert_eq!(rename(b"o_key1", b"o_", b""), b"key1");
        assert_eq!(rename(b"key1", b"", b"p/"), b"p/key1");
        assert_eq!(rename(b"ab_o_x", b"o_", b"d_"), b"ab_d_x");
        assert_eq!(rename(b"o_o_", b"o_", b""), b"o_");
        assert_eq!(rename(b"zz", b"o_", b"d_"), b"zz");
    }

    #[test]
    fn everything_or_a_prefix() {
        assert_eq!(mirrored_range(b""), (vec![0], vec![0]));
        assert_eq!(mirrored_range(b"a"), (b"a".to_vec(), b"b".to_vec()));
    }
}
