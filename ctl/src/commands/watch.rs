//! `watch`: one watch stream, printed response by response.

use super::{Context, bytes_args};
use crate::cli;
use crate::client::MAX_RECV_MSG_SIZE;
use crate::error::{CtlError, ExitCode, status_message};
use crate::kv;
use concord_proto::etcdserverpb as pb;

pub(super) async fn watch(a: cli::WatchArgs, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    use tokio_stream::StreamExt as _;
    let args = bytes_args(&a.args);
    let Some(key) = args.first() else {
        return Err(CtlError::bad_args("bad number of arguments"));
    };
    if args.len() > 2 {
        // etcdctl would run the remaining arguments as a command per event.
        return Err(CtlError::bad_args("watch exec-command is not supported"));
    }
    let mut create = pb::WatchCreateRequest {
        key: key.clone(),
        start_revision: a.rev,
        prev_kv: a.prev_kv,
        progress_notify: a.progress_notify,
        ..Default::default()
    };
    if let Some(end) = args.get(1) {
        if a.prefix {
            return Err(CtlError::bad_args("unexpected range_end with --prefix"));
        }
        create.range_end = end.clone();
    }
    if a.prefix {
        if create.key.is_empty() {
            create.key = vec![0];
            create.range_end = vec![0];
        } else {
            create.range_end = kv::prefix_range_end(&create.key);
        }
    }
    let first = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
    };
    // Keep the request stream open for as long as we watch.
    let requests = tokio_stream::iter(vec![first]).chain(tokio_stream::pending());
    let client = ctx.client().await?;
    let mut responses = pb::watch_client::WatchClient::new(client.channel())
        .max_decoding_message_size(MAX_RECV_MSG_SIZE)
        .watch(client.request(requests))
        .await
        .map_err(|s| CtlError::error(status_message(&s)))?
        .into_inner();
    loop {
        match responses.message().await {
            Ok(Some(resp)) => {
                if resp.created && resp.events.is_empty() {
                    continue;
                }
                if resp.canceled {
                    let reason = if resp.compact_revision != 0 {
                        "etcdserver: mvcc: required revision has been compacted".to_owned()
                    } else {
                        resp.cancel_reason.clone()
                    };
                    ctx.emit_err(&format!("watch was canceled ({reason})\n"))?;
                }
                let out = ctx.printer.watch(&resp)?;
                ctx.emit(&out)?;
                if resp.canceled {
                    break;
                }
            }
            Ok(None) => break,
            Err(s) => return Err(CtlError::error(status_message(&s))),
        }
    }
    Err(CtlError::new(
        ExitCode::Interrupted,
        "watch is canceled by the server",
    ))
}
