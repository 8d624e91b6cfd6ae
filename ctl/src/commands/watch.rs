//! `watch`: one watch stream, printed response by response. With
//! `--interactive`, request lines read from stdin (`watch [options] <key>
//! [range_end] [-- exec-command ...]` and `progress`) share one stream.

use super::{Context, bytes_args};
use crate::cli;
use crate::client::MAX_RECV_MSG_SIZE;
use crate::error::{CtlError, ExitCode, status_message};
use crate::kv;
use concord_proto::etcdserverpb as pb;
use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

pub(super) async fn watch(a: cli::WatchArgs, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    use tokio_stream::StreamExt as _;
    let env = WatchEnv::read()?;
    if a.interactive {
        return watch_interactive(&env, ctx).await;
    }
    let args = watch_key_args(&a, &env)?;
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
    let client = ctx.client().await?;
    // Like clientv3, a watch broken by a restarting or unreachable server is
    // opened again from the revision after the last one seen.
    let mut started = a.rev != 0;
    'reconnect: loop {
        let first = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                create.clone(),
            )),
        };
        // Keep the request stream open for as long as we watch.
        let requests = tokio_stream::iter(vec![first]).chain(tokio_stream::pending());
        let opened = pb::watch_client::WatchClient::new(client.channel())
            .max_decoding_message_size(MAX_RECV_MSG_SIZE)
            .watch(client.request(requests))
            .await;
        let mut responses = match opened {
            Ok(resp) => resp.into_inner(),
            Err(s) if started && stream_broken(&s) => {
                tokio::time::sleep(REWATCH_BACKOFF).await;
                continue 'reconnect;
            }
            Err(s) => return Err(CtlError::error(status_message(&s))),
        };
        loop {
            match responses.message().await {
                Ok(Some(resp)) => {
                    if !started {
                        // Revision 0 means "from now": pin it for a reconnect.
                        create.start_revision = resp.header.as_ref().map_or(0, |h| h.revision) + 1;
                        started = true;
                    }
                    if let Some(last) = resp.events.last().and_then(|e| e.kv.as_ref()) {
                        create.start_revision = last.mod_revision + 1;
                    }
                    // A create the server refuses (no permission) comes back created
                    // and canceled at once: printed, it ends the watch.
                    if resp.created && !resp.canceled && resp.events.is_empty() {
                        continue;
                    }
                    print_response(&resp, &a.exec, ctx).await?;
                    if resp.canceled {
                        break 'reconnect;
                    }
                }
                Ok(None) => break,
                Err(s) if stream_broken(&s) => break,
                Err(s) => return Err(CtlError::error(status_message(&s))),
            }
        }
        tokio::time::sleep(REWATCH_BACKOFF).await;
    }
    Err(CtlError::new(
        ExitCode::Interrupted,
        "watch is canceled by the server",
    ))
}

/// The wait before opening a broken watch again.
const REWATCH_BACKOFF: std::time::Duration = std::time::Duration::from_millis(300);

/// Whether a watch stream failed because the connection did (the server is
/// restarting or unreachable) rather than by the server's answer.
fn stream_broken(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    ) && !s.message().starts_with("etcdserver: ")
}

/// `ETCDCTL_WATCH_KEY` and `ETCDCTL_WATCH_RANGE_END`: a key (and range end)
/// every watch uses in place of positional arguments.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct WatchEnv {
    key: Vec<u8>,
    range_end: Vec<u8>,
}

impl WatchEnv {
    fn read() -> Result<Self, CtlError> {
        let var = |name: &str| {
            std::env::var_os(name)
                .map(OsStringExt::into_vec)
                .unwrap_or_default()
        };
        let env = Self {
            key: var("ETCDCTL_WATCH_KEY"),
            range_end: var("ETCDCTL_WATCH_RANGE_END"),
        };
        if env.key.is_empty() && !env.range_end.is_empty() {
            return Err(CtlError::bad_args(format!(
                "ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END={}",
                crate::gofmt::quote(&env.range_end)
            )));
        }
        Ok(env)
    }

    /// The key and range end the environment supplies (empty without a key).
    fn keys(&self) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        if !self.key.is_empty() {
            keys.push(self.key.clone());
            if !self.range_end.is_empty() {
                keys.push(self.range_end.clone());
            }
        }
        keys
    }
}

/// The key and range end: from the arguments, or from the environment.
fn watch_key_args(a: &cli::WatchArgs, env: &WatchEnv) -> Result<Vec<Vec<u8>>, CtlError> {
    if env.key.is_empty() {
        return Ok(bytes_args(&a.args));
    }
    if !a.args.is_empty() {
        return Err(CtlError::bad_args(
            "bad number of arguments (found conflicting environment key)",
        ));
    }
    Ok(env.keys())
}

/// Prints one response as etcdctl's `printWatchCh` does, then runs the
/// exec-command (if any) for its events.
async fn print_response(
    resp: &pb::WatchResponse,
    exec: &[OsString],
    ctx: &mut Context<'_>,
) -> Result<(), CtlError> {
    if resp.canceled {
        let reason = if resp.compact_revision != 0 {
            "etcdserver: mvcc: required revision has been compacted".to_owned()
        } else {
            resp.cancel_reason.clone()
        };
        ctx.emit_err(&format!("watch was canceled ({reason})\n"))?;
    }
    if is_progress_notify(resp) {
        let revision = resp.header.as_ref().map_or(0, |h| h.revision);
        ctx.emit(format!("progress notify: {revision}\n").as_bytes())?;
    }
    let out = ctx.printer.watch(resp)?;
    ctx.emit(&out)?;
    if !exec.is_empty() {
        run_for_events(exec, resp, ctx).await?;
    }
    Ok(())
}

/// clientv3's `IsProgressNotify`: a response that only reports a revision.
fn is_progress_notify(resp: &pb::WatchResponse) -> bool {
    resp.events.is_empty()
        && !resp.canceled
        && !resp.created
        && resp.compact_revision == 0
        && resp.header.as_ref().is_some_and(|h| h.revision != 0)
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

/// Interactive watch: every stdin line is a request on one shared stream.
/// Invalid lines are reported on stderr and skipped; lines etcdctl rejects
/// as bad arguments (unknown flags, a trailing `--`) end the command.
async fn watch_interactive(env: &WatchEnv, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    use pb::watch_request::RequestUnion;
    let mut lines = spawn_line_reader()?;
    let client = ctx.client().await?;
    let (requests, request_stream) = tokio::sync::mpsc::unbounded_channel();
    // The stream is opened on a task of its own, and its responses come back through a
    // channel: etcd (grpc-go) sends a stream's response headers only with its first
    // response, which comes only after the first line asks for a watch, so waiting for
    // the call to open before reading stdin would wait forever against etcd.
    let (response_sender, mut responses) = tokio::sync::mpsc::unbounded_channel();
    let mut watch_client = pb::watch_client::WatchClient::new(client.channel())
        .max_decoding_message_size(MAX_RECV_MSG_SIZE);
    let request = client.request(tokio_stream::wrappers::UnboundedReceiverStream::new(
        request_stream,
    ));
    tokio::spawn(async move {
        let mut stream = match watch_client.watch(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                let _ = response_sender.send(Err(status));
                return;
            }
        };
        loop {
            let next = stream.message().await.transpose();
            let ended = !matches!(next, Some(Ok(_)));
            if let Some(next) = next
                && response_sender.send(next).is_err()
            {
                return;
            }
            if ended {
                return;
            }
        }
    });
    // The server answers creates in order, so the next `created` response
    // belongs to the oldest create still waiting.
    let mut awaiting_created: VecDeque<Vec<OsString>> = VecDeque::new();
    let mut exec_by_watch: BTreeMap<i64, Vec<OsString>> = BTreeMap::new();
    loop {
        tokio::select! {
            line = lines.recv() => {
                let line = match line {
                    Some(Ok(line)) => line,
                    Some(Err(reason)) => {
                        return Err(CtlError::invalid_input(format!(
                            "Error reading watch request line: {reason}"
                        )));
                    }
                    None => {
                        return Err(CtlError::invalid_input(
                            "Error reading watch request line: EOF",
                        ));
                    }
                };
                let request = match parse_interactive_line(&line, env)? {
                    LineAction::Watch { create, exec } => {
                        awaiting_created.push_back(exec);
                        RequestUnion::CreateRequest(create)
                    }
                    LineAction::Progress => {
                        RequestUnion::ProgressRequest(pb::WatchProgressRequest {})
                    }
                    LineAction::Complain(text) => {
                        ctx.emit_err(&text)?;
                        continue;
                    }
                };
                let sent = requests.send(pb::WatchRequest {
                    request_union: Some(request),
                });
                if sent.is_err() {
                    break; // the stream is gone; the response side reports why
                }
            }
            response = responses.recv() => {
                let resp = match response {
                    Some(Ok(resp)) => resp,
                    None => break,
                    Some(Err(s)) => return Err(CtlError::error(status_message(&s))),
                };
                if resp.created {
                    let exec = awaiting_created.pop_front().unwrap_or_default();
                    if !resp.canceled {
                        exec_by_watch.insert(resp.watch_id, exec.clone());
                    }
                    if resp.canceled || !resp.events.is_empty() {
                        print_response(&resp, &exec, ctx).await?;
                    }
                } else if resp.watch_id == -1 && is_progress_notify(&resp) {
                    // A progress request's answer is broadcast to every watcher,
                    // and each prints it (clientv3 does the same).
                    for _ in 0..exec_by_watch.len() {
                        print_response(&resp, &[], ctx).await?;
                    }
                } else {
                    let exec = exec_by_watch.get(&resp.watch_id).cloned().unwrap_or_default();
                    print_response(&resp, &exec, ctx).await?;
                    if resp.canceled {
                        exec_by_watch.remove(&resp.watch_id);
                    }
                }
            }
        }
    }
    Err(CtlError::new(
        ExitCode::Interrupted,
        "watch is canceled by the server",
    ))
}

/// Reads stdin lines on a thread of their own, so that responses keep
/// printing while we wait for input. Reads a duplicate of descriptor 0: the
/// command's own stdin handle is locked by the caller's thread. An item is a
/// line without its `\n`, or why reading stopped (`EOF` for a last line
/// without a newline too, as Go's `ReadString` reports it).
fn spawn_line_reader()
-> Result<tokio::sync::mpsc::UnboundedReceiver<Result<String, String>>, CtlError> {
    use std::io::BufRead as _;
    use std::os::fd::AsFd as _;
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| CtlError::invalid_input(e.to_string()))?;
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(std::fs::File::from(fd));
        loop {
            let mut line = Vec::new();
            let item = match reader.read_until(b'\n', &mut line) {
                Ok(_) if line.last() == Some(&b'\n') => {
                    line.pop();
                    Ok(String::from_utf8_lossy(&line).into_owned())
                }
                Ok(_) => Err("EOF".to_owned()),
                Err(e) => Err(e.to_string()),
            };
            let last = item.is_err();
            if sender.send(item).is_err() || last {
                return;
            }
        }
    });
    Ok(receiver)
}

/// What one interactive line asks for.
#[derive(Debug, Clone, PartialEq)]
enum LineAction {
    /// Start a watch; run `exec` for each of its events.
    Watch {
        create: pb::WatchCreateRequest,
        exec: Vec<OsString>,
    },
    /// Ask the server for the current revision on every watcher.
    Progress,
    /// Not a usable request: print this to stderr and read on.
    Complain(String),
}

/// Parses one interactive line as etcdctl 3.4 does. `Err` is a line etcdctl
/// exits on (bad arguments, unreadable quoting).
fn parse_interactive_line(line: &str, env: &WatchEnv) -> Result<LineAction, CtlError> {
    let args = crate::txn::argify(line)?;
    let Some(command) = args.first() else {
        return Ok(LineAction::Complain(format!(
            "Invalid command: {line} (watch and progress supported)\n"
        )));
    };
    match command.as_slice() {
        b"watch" => {}
        b"progress" => return Ok(LineAction::Progress),
        _ => {
            return Ok(LineAction::Complain(format!(
                "Invalid command {line} (only support watch)\n"
            )));
        }
    }
    if args.len() < 2 && env.key.is_empty() {
        return Ok(LineAction::Complain(format!(
            "Invalid command {line} (command type or key is not provided)\n"
        )));
    }
    let words = &args[1..];
    let separator = words.iter().position(|w| w == b"--");
    let (flag_words, exec_words) = match separator {
        Some(at) if at + 1 == words.len() => {
            return Err(CtlError::bad_args(
                "bad number of arguments (found separator --, but no commands)",
            ));
        }
        Some(at) => (&words[..at], &words[at + 1..]),
        None => (words, &[][..]),
    };
    let flags = LineFlags::parse(flag_words).map_err(CtlError::bad_args)?;
    if separator.is_none() {
        if env.key.is_empty() && flags.positional.is_empty() {
            return Err(CtlError::bad_args("bad number of arguments"));
        }
        if !env.key.is_empty() && !flags.positional.is_empty() {
            return Err(CtlError::bad_args(
                "bad number of arguments (found conflicting environment key)",
            ));
        }
    }
    let mut keys = env.keys();
    keys.extend(flags.positional.iter().cloned());
    match flags.create_request(&keys) {
        Ok(create) => Ok(LineAction::Watch {
            create,
            exec: exec_words
                .iter()
                .map(|w| OsString::from_vec(w.clone()))
                .collect(),
        }),
        Err(reason) => Ok(LineAction::Complain(format!(
            "Invalid command {line} ({reason})\n"
        ))),
    }
}

/// The watch flags of one interactive line (pflag rules: flags and
/// positionals mix, `--name value` or `--name=value`).
#[derive(Debug, Default)]
struct LineFlags {
    rev: i64,
    prefix: bool,
    prev_kv: bool,
    progress_notify: bool,
    positional: Vec<Vec<u8>>,
}

impl LineFlags {
    /// `Err` carries pflag's message.
    fn parse(words: &[Vec<u8>]) -> Result<Self, String> {
        let mut flags = Self::default();
        let mut iter = words.iter();
        while let Some(word) = iter.next() {
            let text = String::from_utf8_lossy(word);
            if let Some(body) = text.strip_prefix("--") {
                let (name, inline) = match body.split_once('=') {
                    Some((name, value)) => (name, Some(value.to_owned())),
                    None => (body, None),
                };
                let flag = format!("--{name}");
                let target = match name {
                    "rev" => {
                        let value = match inline {
                            Some(value) => value,
                            None => match iter.next() {
                                Some(next) => String::from_utf8_lossy(next).into_owned(),
                                None => return Err(format!("flag needs an argument: {flag}")),
                            },
                        };
                        flags.rev = kv::parse_decimal(&value).map_err(|e| {
                            format!(
                                "invalid argument {} for {} flag: {e}",
                                crate::gofmt::quote(value.as_bytes()),
                                crate::gofmt::quote(flag.as_bytes())
                            )
                        })?;
                        continue;
                    }
                    "prefix" => &mut flags.prefix,
                    "prev-kv" => &mut flags.prev_kv,
                    "progress-notify" => &mut flags.progress_notify,
                    // Accepted as the command's own flag; it changes nothing here.
                    "interactive" => &mut false,
                    "help" => return Err("pflag: help requested".to_owned()),
                    _ => return Err(format!("unknown flag: {flag}")),
                };
                *target = match inline {
                    None => true,
                    Some(value) => parse_go_bool(&value).ok_or_else(|| {
                        format!(
                            "invalid argument {} for {} flag: strconv.ParseBool: parsing {}: invalid syntax",
                            crate::gofmt::quote(value.as_bytes()),
                            crate::gofmt::quote(flag.as_bytes()),
                            crate::gofmt::quote(value.as_bytes())
                        )
                    })?,
                };
            } else if let Some(shorthands) = text.strip_prefix('-').filter(|s| !s.is_empty()) {
                if let Some(other) = shorthands.chars().find(|&c| c != 'i') {
                    if other == 'h' {
                        return Err("pflag: help requested".to_owned());
                    }
                    return Err(format!("unknown shorthand flag: '{other}' in {text}"));
                }
            } else {
                flags.positional.push(word.clone());
            }
        }
        Ok(flags)
    }

    /// The create request for `keys` (key, optional range end), or why
    /// etcdctl refuses to watch them.
    fn create_request(&self, keys: &[Vec<u8>]) -> Result<pb::WatchCreateRequest, String> {
        let Some(key) = keys.first() else {
            return Err("bad number of arguments".to_owned());
        };
        let mut create = pb::WatchCreateRequest {
            key: key.clone(),
            start_revision: self.rev,
            prev_kv: self.prev_kv,
            progress_notify: self.progress_notify,
            ..Default::default()
        };
        // etcdctl 3.4 uses a second argument as the range end only when there
        // are exactly two; more are ignored.
        if keys.len() == 2 {
            if self.prefix {
                return Err("`range_end` and `--prefix` are mutually exclusive".to_owned());
            }
            create.range_end = keys[1].clone();
        }
        if self.prefix {
            if create.key.is_empty() {
                create.key = vec![0];
                create.range_end = vec![0];
            } else {
                create.range_end = kv::prefix_range_end(&create.key);
            }
        }
        Ok(create)
    }
}

fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> WatchEnv {
        WatchEnv::default()
    }

    fn watch_of(action: LineAction) -> (pb::WatchCreateRequest, Vec<OsString>) {
        match action {
            LineAction::Watch { create, exec } => (create, exec),
            other => panic!("expected a watch, got {other:?}"),
        }
    }

    #[test]
    fn watch_line_with_flags_between_keys_and_an_exec_command() {
        let line = r#"watch sample --rev 1 samplx --prev-kv -- echo "Hello World!""#;
        let (create, exec) = watch_of(parse_interactive_line(line, &no_env()).unwrap());
        assert_eq!(create.key, b"sample");
        assert_eq!(create.range_end, b"samplx");
        assert_eq!(create.start_revision, 1);
        assert!(create.prev_kv);
        assert!(!create.progress_notify);
        assert_eq!(
            exec,
            vec![OsString::from("echo"), OsString::from("Hello World!")]
        );
    }

    #[test]
    fn prefix_and_progress_notify_flags() {
        let (create, exec) = watch_of(
            parse_interactive_line("watch key --prefix --rev=7 --progress-notify", &no_env())
                .unwrap(),
        );
        assert_eq!(create.key, b"key");
        assert_eq!(create.range_end, b"kez");
        assert_eq!(create.start_revision, 7);
        assert!(create.progress_notify);
        assert!(exec.is_empty());
        let (all, _) = watch_of(parse_interactive_line("watch '' --prefix", &no_env()).unwrap());
        assert_eq!((all.key, all.range_end), (vec![0], vec![0]));
    }

    #[test]
    fn environment_key_and_range_end_fill_in_the_keys() {
        let env = WatchEnv {
            key: b"key".to_vec(),
            range_end: b"key3".to_vec(),
        };
        let (create, exec) =
            watch_of(parse_interactive_line("watch --rev 1 -- echo hi", &env).unwrap());
        assert_eq!(
            (create.key.as_slice(), create.range_end.as_slice()),
            (&b"key"[..], &b"key3"[..])
        );
        assert_eq!(exec, vec![OsString::from("echo"), OsString::from("hi")]);
        let (bare, _) = watch_of(parse_interactive_line("watch", &env).unwrap());
        assert_eq!(bare.key, b"key");
        let conflict = parse_interactive_line("watch other", &env).unwrap_err();
        assert_eq!(
            conflict.message,
            "bad number of arguments (found conflicting environment key)"
        );
    }

    #[test]
    fn progress_and_lines_to_complain_about() {
        assert_eq!(
            parse_interactive_line("progress", &no_env()).unwrap(),
            LineAction::Progress
        );
        let complaint = |line: &str| parse_interactive_line(line, &no_env()).unwrap();
        assert_eq!(
            complaint(""),
            LineAction::Complain("Invalid command:  (watch and progress supported)\n".into())
        );
        assert_eq!(
            complaint("get foo"),
            LineAction::Complain("Invalid command get foo (only support watch)\n".into())
        );
        assert_eq!(
            complaint("watch"),
            LineAction::Complain(
                "Invalid command watch (command type or key is not provided)\n".into()
            )
        );
        assert_eq!(
            complaint("watch a b --prefix"),
            LineAction::Complain(
                "Invalid command watch a b --prefix (`range_end` and `--prefix` are mutually exclusive)\n"
                    .into()
            )
        );
    }

    #[test]
    fn lines_etcdctl_exits_on() {
        let fatal = |line: &str| parse_interactive_line(line, &no_env()).unwrap_err();
        let cases = [
            (
                "watch foo --",
                "bad number of arguments (found separator --, but no commands)",
            ),
            ("watch --rev 1", "bad number of arguments"),
            ("watch foo --bad", "unknown flag: --bad"),
            ("watch -x foo", "unknown shorthand flag: 'x' in -x"),
            ("watch foo --rev", "flag needs an argument: --rev"),
            (
                "watch --rev x foo",
                r#"invalid argument "x" for "--rev" flag: strconv.ParseInt: parsing "x": invalid syntax"#,
            ),
        ];
        for (line, message) in cases {
            let error = fatal(line);
            assert_eq!(error.message, message, "line {line:?}");
            assert_eq!(error.code, ExitCode::BadArgs, "line {line:?}");
        }
    }

    #[test]
    fn progress_notify_detection() {
        let header = Some(pb::ResponseHeader {
            revision: 5,
            ..Default::default()
        });
        let progress = pb::WatchResponse {
            header,
            watch_id: -1,
            ..Default::default()
        };
        assert!(is_progress_notify(&progress));
        let created = pb::WatchResponse {
            created: true,
            ..progress.clone()
        };
        assert!(!is_progress_notify(&created));
        let no_revision = pb::WatchResponse {
            header: None,
            ..progress
        };
        assert!(!is_progress_notify(&no_revision));
    }
}
