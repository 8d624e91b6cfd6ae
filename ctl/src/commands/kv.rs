//! `put`, `get`, `del`, `txn` and `compaction`.

use super::{Context, bytes_args};
use crate::cli;
use crate::client::MAX_RECV_MSG_SIZE;
use crate::client::Retry;
use crate::error::{CtlError, ExitCode};
use crate::kv::{self, DelOptions, GetOptions, PutOptions};
use crate::printer::Format;
use concord_proto::etcdserverpb as pb;
use pb::kv_client::KvClient;

pub(super) async fn put(a: cli::PutArgs, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    let args = bytes_args(&a.args);
    let stdin_value = if args.len() < 2 && !a.ignore_value && !args.is_empty() {
        let mut buf = Vec::new();
        ctx.stdin
            .read_to_end(&mut buf)
            .map_err(|e| CtlError::new(ExitCode::Io, e.to_string()))?;
        Some(buf)
    } else {
        None
    };
    let opts = PutOptions {
        lease: a.lease,
        prev_kv: a.prev_kv,
        ignore_value: a.ignore_value,
        ignore_lease: a.ignore_lease,
    };
    let req = kv::put_request(&args, stdin_value, &opts)?;
    let client = ctx.client().await?;
    let resp = client
        .call(Retry::NonRepeatable, req, |c, r| async move {
            KvClient::new(c)
                .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                .put(r)
                .await
        })
        .await?;
    let out = ctx.printer.put(&resp)?;
    ctx.emit(&out)
}

pub(super) async fn get(a: cli::GetArgs, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    let opts = GetOptions {
        consistency: a.consistency,
        order: a.order,
        sort_by: a.sort_by,
        limit: a.limit,
        prefix: a.prefix,
        from_key: a.from_key,
        rev: a.rev,
        keys_only: a.keys_only,
        count_only: a.count_only,
    };
    let req = kv::get_request(&bytes_args(&a.args), &opts)?;
    let client = ctx.client().await?;
    let resp = client
        .call(Retry::Repeatable, req, |c, r| async move {
            KvClient::new(c)
                .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                .range(r)
                .await
        })
        .await?;
    if a.count_only && ctx.printer.format != Some(Format::Fields) {
        return Err(CtlError::bad_args(
            "--count-only is only for `--write-out=fields`",
        ));
    }
    let mut printer = ctx.printer;
    if a.print_value_only {
        if printer.format != Some(Format::Simple) {
            return Err(CtlError::bad_args(
                "print-value-only is only for `--write-out=simple`",
            ));
        }
        printer.value_only = true;
    }
    let out = printer.get(&resp)?;
    ctx.emit(&out)
}

pub(super) async fn del(a: cli::DelArgs, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    let opts = DelOptions {
        prefix: a.prefix,
        prev_kv: a.prev_kv,
        from_key: a.from_key,
    };
    let req = kv::delete_request(&bytes_args(&a.args), &opts)?;
    let client = ctx.client().await?;
    let resp = client
        .call(Retry::NonRepeatable, req, |c, r| async move {
            KvClient::new(c)
                .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                .delete_range(r)
                .await
        })
        .await?;
    let out = ctx.printer.del(&resp)?;
    ctx.emit(&out)
}

fn txn_is_mutable(txn: &pb::TxnRequest) -> bool {
    use pb::request_op::Request;
    txn.success
        .iter()
        .chain(&txn.failure)
        .any(|op| match &op.request {
            Some(Request::RequestRange(_)) | None => false,
            Some(Request::RequestTxn(inner)) => txn_is_mutable(inner),
            Some(_) => true,
        })
}

pub(super) async fn txn(a: cli::TxnArgs, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    if !a.args.is_empty() {
        return Err(CtlError::bad_args("txn command does not accept argument"));
    }
    let req = crate::txn::read_txn(&mut ctx.stdin, a.interactive, &mut ctx.out)?;
    let retry = if txn_is_mutable(&req) {
        Retry::NonRepeatable
    } else {
        Retry::Repeatable
    };
    let client = ctx.client().await?;
    let resp = client
        .call(retry, req, |c, r| async move {
            KvClient::new(c)
                .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                .txn(r)
                .await
        })
        .await?;
    let out = ctx.printer.txn(&resp)?;
    ctx.emit(&out)
}

pub(super) async fn compaction(
    a: cli::CompactionArgs,
    ctx: &mut Context<'_>,
) -> Result<(), CtlError> {
    let [rev] = a.args.as_slice() else {
        return Err(CtlError::bad_args("compaction command needs 1 argument"));
    };
    let revision = kv::parse_decimal(rev).map_err(CtlError::error)?;
    let req = pb::CompactionRequest {
        revision,
        physical: a.physical,
    };
    let client = ctx.client().await?;
    client
        .call(Retry::Repeatable, req, |c, r| async move {
            KvClient::new(c)
                .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                .compact(r)
                .await
        })
        .await?;
    ctx.emit(format!("compacted revision {revision}\n").as_bytes())
}
