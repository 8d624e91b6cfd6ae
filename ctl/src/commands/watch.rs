//! `watch`: one watch stream, printed response by response.

use super::{Context, bytes_args};
use crate::cli;
use crate::client::MAX_RECV_MSG_SIZE;
use crate::error::{CtlError, ExitCode, status_message};
use crate::kv;
use concord_proto::etcdserverpb as pb;

pub(super) async fn watch(a: cli::WatchArgs, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    use tokio_stream::StreamExt as _;
    let args = watch_key_args(&a)?;
    let Some(key) = args.first() else {
        return Err(CtlError::bad_args("bad number of arguments"));
    };
    if args.len() > 2 {
        return Err(CtlError::bad_args("bad number of arguments"));
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
                if !a.exec.is_empty() {
                    run_for_events(&a.exec, &resp, ctx).await?;
                }
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

/// The key and range end: from the arguments, or from `ETCDCTL_WATCH_KEY` and
/// `ETCDCTL_WATCH_RANGE_END`.
fn watch_key_args(a: &cli::WatchArgs) -> Result<Vec<Vec<u8>>, CtlError> {
    use std::os::unix::ffi::OsStringExt;
    let env = |name: &str| {
        std::env::var_os(name)
            .map(OsStringExt::into_vec)
            .unwrap_or_default()
    };
    let (env_key, env_range) = (env("ETCDCTL_WATCH_KEY"), env("ETCDCTL_WATCH_RANGE_END"));
    if env_key.is_empty() && !env_range.is_empty() {
        return Err(CtlError::bad_args(format!(
            "ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END={}",
            crate::gofmt::quote(&env_range)
        )));
    }
    if env_key.is_empty() {
        return Ok(bytes_args(&a.args));
    }
    if !a.args.is_empty() {
        return Err(CtlError::bad_args(
            "bad number of arguments (found conflicting environment key)",
        ));
    }
    let mut args = vec![env_key];
    if !env_range.is_empty() {
        args.push(env_range);
    }
    Ok(args)
}

/// Runs the exec-command once per event with etcdctl's `ETCD_WATCH_*`
/// environment; a failing command ends the watch with exit code 1.
async fn run_for_events(
    exec: &[std::ffi::OsString],
    resp: &pb::WatchResponse,
    ctx: &mut Context<'_>,
) -> Result<(), CtlError> {
    use crate::gofmt::quote;
    let revision = resp.header.as_ref().map_or(0, |h| h.revision);
    for event in &resp.events {
        let kv = event.kv.clone().unwrap_or_default();
        let kind = if event.r#type == concord_proto::mvccpb::event::EventType::Delete as i32 {
            "DELETE"
        } else {
            "PUT"
        };
        ctx.emit(b"")?; // our output first, then the command's
        let status = tokio::process::Command::new(&exec[0])
            .args(&exec[1..])
            .env("ETCD_WATCH_REVISION", revision.to_string())
            .env("ETCD_WATCH_EVENT_TYPE", format!("\"{kind}\""))
            .env("ETCD_WATCH_KEY", quote(&kv.key))
            .env("ETCD_WATCH_VALUE", quote(&kv.value))
            .status()
            .await;
        let failure = match status {
            Ok(s) if s.success() => continue,
            Ok(s) => match s.code() {
                Some(code) => format!("exit status {code}"),
                None => "signal: killed".to_owned(),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!(
                "exec: {}: executable file not found in $PATH",
                quote(exec[0].as_encoded_bytes())
            ),
            Err(e) => e.to_string(),
        };
        let command: Vec<String> = exec.iter().map(|a| quote(a.as_encoded_bytes())).collect();
        ctx.emit_err(&format!(
            "command [{}] error ({failure})\n",
            command.join(" ")
        ))?;
        return Err(CtlError::silent(ExitCode::Error));
    }
    Ok(())
}
