//! `auth`, `user` and `role` commands, with etcdctl 3.4's arguments, password
//! prompts and output.

use crate::client::MAX_RECV_MSG_SIZE;
use crate::client::Retry;
use crate::commands::Context;
use crate::error::{CtlError, ExitCode};
use crate::gojson::{self, Obj};
use crate::printer::Format;
use concord_proto::authpb;
use concord_proto::etcdserverpb as pb;
use pb::auth_client::AuthClient;
use std::fmt::Write as _;

/// Sends one Auth RPC.
macro_rules! auth_call {
    ($client:expr, $retry:expr, $req:expr, $method:ident) => {
        $client
            .call($retry, $req, |c, r| async move {
                AuthClient::new(c)
                    .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                    .$method(r)
                    .await
            })
            .await
    };
}

/// Output of an auth mutation: `simple` text, the header in json/fields.
fn header_only(
    ctx: &mut Context<'_>,
    simple: String,
    header: Option<&pb::ResponseHeader>,
) -> Result<(), CtlError> {
    let out = match ctx.printer.format.unwrap_or(Format::Simple) {
        Format::Simple => simple,
        Format::Json => {
            Obj::new()
                .msg("header", header.map(gojson::header))
                .finish()
                + "\n"
        }
        Format::Fields => fields_header(header),
        // Every such response is just `header = 1`.
        Format::Protobuf => {
            let response = pb::AuthEnableResponse {
                header: header.copied(),
            };
            return emit_bytes(ctx, &prost::Message::encode_to_vec(&response));
        }
        other => return Err(unsupported(other)),
    };
    emit(ctx, &out)
}

fn emit_bytes(ctx: &mut Context<'_>, bytes: &[u8]) -> Result<(), CtlError> {
    ctx.out
        .write_all(bytes)
        .and_then(|()| ctx.out.flush())
        .map_err(|e| CtlError::new(ExitCode::Io, e.to_string()))
}

fn unsupported(format: Format) -> CtlError {
    let name = match format {
        Format::Simple => "simple",
        Format::Json => "json",
        Format::Fields => "fields",
        Format::Table => "table",
        Format::Protobuf => "protobuf",
    };
    CtlError::bad_feature(format!("{name} not supported as output format"))
}

fn fields_header(header: Option<&pb::ResponseHeader>) -> String {
    let h = header.cloned().unwrap_or_default();
    format!(
        "\"ClusterID\" : {}\n\"MemberID\" : {}\n\"Revision\" : {}\n\"RaftTerm\" : {}\n",
        h.cluster_id, h.member_id, h.revision, h.raft_term
    )
}

fn emit(ctx: &mut Context<'_>, text: &str) -> Result<(), CtlError> {
    ctx.out
        .write_all(text.as_bytes())
        .and_then(|()| ctx.out.flush())
        .map_err(|e| CtlError::new(ExitCode::Io, e.to_string()))
}

fn one_arg<'a>(args: &'a [String], message: &str) -> Result<&'a str, CtlError> {
    match args {
        [a] => Ok(a),
        _ => Err(CtlError::bad_args(message)),
    }
}

/// speakeasy's exit status when a signal interrupts a prompt (Go's `os.Exit(-1)`).
const INTERRUPTED_PROMPT_EXIT: i32 = 255;

/// The terminal while a password is typed: no echo (speakeasy runs `stty -echo` around
/// etcdctl's prompts), and no line discipline or signal keys either, so that this
/// reader sees Ctrl-C itself: the keys that would send SIGINT or SIGQUIT arrive as
/// bytes here, and the prompt restores the terminal and exits as speakeasy does. A
/// signal sent from elsewhere (`kill -INT`, `kill -TERM`, a hang-up) is caught while the
/// prompt waits, as speakeasy catches SIGHUP, SIGINT, SIGQUIT and SIGTERM, with the same
/// outcome (see [`PromptSignals`]). The saved settings come back when this is dropped.
struct HiddenInput {
    saved: rustix::termios::Termios,
    /// Declared after `saved` and dropped after the terminal is restored.
    _signals: Option<PromptSignals>,
}

impl HiddenInput {
    /// None when stdin is no terminal (a pipe, a file): its lines are read as they come.
    fn new() -> Option<HiddenInput> {
        use rustix::termios::{
            LocalModes, OptionalActions, SpecialCodeIndex, tcgetattr, tcsetattr,
        };
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        // Caught before the echo goes off, so no moment is left without them.
        let signals = PromptSignals::catch();
        let mut quiet = saved.clone();
        quiet
            .local_modes
            .remove(LocalModes::ECHO | LocalModes::ICANON | LocalModes::ISIG);
        quiet.special_codes[SpecialCodeIndex::VMIN] = 1;
        quiet.special_codes[SpecialCodeIndex::VTIME] = 0;
        tcsetattr(&stdin, OptionalActions::Now, &quiet).ok()?;
        Some(HiddenInput {
            saved,
            _signals: signals,
        })
    }

    fn key(&self, index: rustix::termios::SpecialCodeIndex) -> u8 {
        self.saved.special_codes[index]
    }

    /// One line typed on the terminal, edited as the saved settings say (erase, kill,
    /// end of file); the interrupt and quit keys end the process with the terminal
    /// restored.
    fn read_line(&self, stdin: &mut dyn std::io::BufRead) -> std::io::Result<String> {
        use rustix::termios::SpecialCodeIndex as Key;
        let mut line: Vec<u8> = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            if stdin.read(&mut byte)? == 0 {
                break;
            }
            match byte[0] {
                b'\n' | b'\r' => break,
                b if b == self.key(Key::VINTR) || b == self.key(Key::VQUIT) => {
                    self.restore();
                    std::process::exit(INTERRUPTED_PROMPT_EXIT);
                }
                b if b == self.key(Key::VERASE) || b == 0x08 => {
                    // Drop one whole character, not one byte of it.
                    let text = String::from_utf8_lossy(&line).into_owned();
                    let mut chars = text.chars();
                    chars.next_back();
                    line = chars.as_str().as_bytes().to_vec();
                }
                b if b == self.key(Key::VKILL) => line.clear(),
                b if b == self.key(Key::VEOF) => {
                    if line.is_empty() {
                        break;
                    }
                }
                b => line.push(b),
            }
        }
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    fn restore(&self) {
        let stdin = std::io::stdin();
        let _ =
            rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &self.saved);
    }
}

impl Drop for HiddenInput {
    fn drop(&mut self) {
        self.restore();
    }
}

/// The termination signals speakeasy catches around a prompt.
const PROMPT_SIGNALS: [libc::c_int; 4] = [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGTERM];

/// The terminal settings a signal during the prompt restores: set before the handler
/// is installed, never freed (at most a prompt or two per process), read by the
/// handler with one atomic load.
static TERMINAL_BEFORE_PROMPT: std::sync::atomic::AtomicPtr<libc::termios> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// Handles [`PROMPT_SIGNALS`] while a prompt waits: the terminal's settings from before
/// the prompt come back and the process ends with speakeasy's status 255. Only
/// async-signal-safe calls (`tcsetattr`, `_exit`). When this is dropped the actions the
/// process had before come back, so a later Ctrl-C (`watch`, `lock`) does what it did
/// (a handler left installed for good would change that).
struct PromptSignals {
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

#[allow(unsafe_code)]
extern "C" fn restore_terminal_and_exit(_signal: libc::c_int) {
    let saved = TERMINAL_BEFORE_PROMPT.load(std::sync::atomic::Ordering::Acquire);
    // SAFETY: `saved` is null or a leaked, never-freed termios written before this
    // handler was installed; tcsetattr and _exit are async-signal-safe.
    unsafe {
        if !saved.is_null() {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
        }
        libc::_exit(INTERRUPTED_PROMPT_EXIT);
    }
}

impl PromptSignals {
    /// None when stdin's settings cannot be read (then there is nothing to restore).
    #[allow(unsafe_code)]
    fn catch() -> Option<PromptSignals> {
        // SAFETY: a zeroed termios is a valid value for tcgetattr to fill in; the
        // sigaction structs are zeroed, then filled field by field as sigaction(2) wants;
        // the handler is an extern "C" fn that only makes async-signal-safe calls.
        unsafe {
            let mut terminal: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut terminal) != 0 {
                return None;
            }
            TERMINAL_BEFORE_PROMPT.store(
                Box::into_raw(Box::new(terminal)),
                std::sync::atomic::Ordering::Release,
            );
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = restore_terminal_and_exit as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous = Vec::with_capacity(PROMPT_SIGNALS.len());
            for signal in PROMPT_SIGNALS {
                let mut before: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, &action, &mut before) == 0 {
                    previous.push((signal, before));
                }
            }
            Some(PromptSignals { previous })
        }
    }
}

impl Drop for PromptSignals {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        for (signal, before) in &self.previous {
            // SAFETY: puts back the action sigaction(2) reported for this signal.
            unsafe {
                libc::sigaction(*signal, before, std::ptr::null_mut());
            }
        }
    }
}

/// Shows a prompt, then reads one line of a password from `stdin`, not echoed when
/// stdin is a terminal (the echo goes off before the prompt shows, so nothing typed
/// after it is echoed), without the white space around it (speakeasy trims it). Every
/// password prompt of concordctl reads through this.
pub(crate) fn read_hidden_line(
    stdin: &mut dyn std::io::BufRead,
    show_prompt: impl FnOnce() -> std::io::Result<()>,
) -> std::io::Result<String> {
    let line = match HiddenInput::new() {
        Some(terminal) => {
            show_prompt()?;
            terminal.read_line(stdin)?
        }
        None => {
            show_prompt()?;
            let mut line = String::new();
            stdin.read_line(&mut line)?;
            line
        }
    };
    Ok(line.trim().to_owned())
}

/// speakeasy's prompt as etcdctl uses it: the prompt on stdout, one line from stdin
/// with the terminal's echo off, then the newline the hidden input did not echo.
fn ask(ctx: &mut Context<'_>, prompt: &str) -> Result<String, CtlError> {
    let out = &mut *ctx.out;
    let line = read_hidden_line(ctx.stdin, || {
        out.write_all(prompt.as_bytes())?;
        out.flush()
    })
    .map_err(|e| CtlError::bad_args(format!("failed to ask password: {e}")))?;
    emit(ctx, "\n")?;
    Ok(line)
}

fn read_password_interactive(ctx: &mut Context<'_>, name: &str) -> Result<String, CtlError> {
    let first = ask(ctx, &format!("Password of {name}: "))?;
    if first.is_empty() {
        return Err(CtlError::bad_args("empty password"));
    }
    let second = ask(
        ctx,
        &format!("Type password of {name} again for confirmation: "),
    )?;
    if first != second {
        return Err(CtlError::bad_args("given passwords are different"));
    }
    Ok(first)
}

/// Go's `fmt.Scanf("%s")`: the first whitespace-separated word of stdin.
fn scan_word(ctx: &mut Context<'_>) -> String {
    let mut line = String::new();
    let _ = ctx.stdin.read_line(&mut line);
    line.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

pub async fn auth(command: crate::cli::AuthCommand, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    use crate::cli::AuthCommand;
    let client = ctx.client().await?;
    match command {
        AuthCommand::Enable => {
            // etcdctl creates the root role on demand and retries.
            loop {
                match auth_call!(
                    client,
                    Retry::NonRepeatable,
                    pb::AuthEnableRequest {},
                    auth_enable
                ) {
                    Ok(_) => break,
                    Err(e) if e.message == "etcdserver: root user does not have root role" => {
                        let role = pb::AuthRoleAddRequest {
                            name: "root".into(),
                        };
                        match auth_call!(client, Retry::NonRepeatable, role, role_add) {
                            Ok(_) => {}
                            Err(e) if e.message == "etcdserver: role name already exists" => {}
                            Err(e) => return Err(e),
                        }
                        let grant = pb::AuthUserGrantRoleRequest {
                            user: "root".into(),
                            role: "root".into(),
                        };
                        auth_call!(client, Retry::NonRepeatable, grant, user_grant_role)?;
                    }
                    Err(e) => return Err(e),
                }
            }
            emit(ctx, "Authentication Enabled\n")
        }
        AuthCommand::Disable => {
            auth_call!(
                client,
                Retry::NonRepeatable,
                pb::AuthDisableRequest {},
                auth_disable
            )?;
            emit(ctx, "Authentication Disabled\n")
        }
    }
}

pub async fn user(command: crate::cli::UserCommand, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    use crate::cli::UserCommand;
    match command {
        UserCommand::Add {
            args,
            no_password,
            interactive,
            new_user_password,
        } => {
            let arg = one_arg(&args, "user add command requires user name as its argument")?;
            let (name, password) = if no_password {
                (arg.to_owned(), String::new())
            } else if !new_user_password.is_empty() {
                (arg.to_owned(), new_user_password)
            } else if let Some((name, password)) = arg.split_once(':') {
                if name.is_empty() {
                    return Err(CtlError::bad_args("empty user name is not allowed"));
                }
                (name.to_owned(), password.to_owned())
            } else if interactive {
                (arg.to_owned(), read_password_interactive(ctx, arg)?)
            } else {
                (arg.to_owned(), scan_word(ctx))
            };
            let client = ctx.client().await?;
            let req = pb::AuthUserAddRequest {
                name: name.clone(),
                password,
                options: Some(authpb::UserAddOptions { no_password }),
                hashed_password: String::new(),
            };
            let resp = auth_call!(client, Retry::NonRepeatable, req, user_add)?;
            header_only(ctx, format!("User {name} created\n"), resp.header.as_ref())
        }
        UserCommand::Delete { args } => {
            let name = one_arg(
                &args,
                "user delete command requires user name as its argument",
            )?;
            let client = ctx.client().await?;
            let req = pb::AuthUserDeleteRequest {
                name: name.to_owned(),
            };
            let resp = auth_call!(client, Retry::NonRepeatable, req, user_delete)?;
            header_only(ctx, format!("User {name} deleted\n"), resp.header.as_ref())
        }
        UserCommand::Get { args, detail } => {
            let name = one_arg(&args, "user get command requires user name as its argument")?;
            let client = ctx.client().await?;
            let req = pb::AuthUserGetRequest {
                name: name.to_owned(),
            };
            let resp = auth_call!(client, Retry::Repeatable, req, user_get)?;
            if detail {
                emit(ctx, &format!("User: {name}\n"))?;
                for role in &resp.roles {
                    emit(ctx, "\n")?;
                    let req = pb::AuthRoleGetRequest { role: role.clone() };
                    let role_resp = auth_call!(client, Retry::Repeatable, req, role_get)?;
                    print_role(ctx, role, &role_resp)?;
                }
                return Ok(());
            }
            let out = match ctx.printer.format.unwrap_or(Format::Simple) {
                Format::Simple => {
                    let mut s = format!("User: {name}\nRoles:");
                    for r in &resp.roles {
                        let _ = write!(s, " {r}");
                    }
                    s + "\n"
                }
                Format::Json => {
                    Obj::new()
                        .msg("header", resp.header.as_ref().map(gojson::header))
                        .strings("roles", &resp.roles)
                        .finish()
                        + "\n"
                }
                Format::Protobuf => return emit_bytes(ctx, &prost::Message::encode_to_vec(&resp)),
                other => return Err(unsupported(other)),
            };
            emit(ctx, &out)
        }
        UserCommand::List => {
            let client = ctx.client().await?;
            let resp = auth_call!(
                client,
                Retry::Repeatable,
                pb::AuthUserListRequest {},
                user_list
            )?;
            let out = match ctx.printer.format.unwrap_or(Format::Simple) {
                Format::Simple => resp.users.iter().map(|u| format!("{u}\n")).collect(),
                Format::Json => {
                    Obj::new()
                        .msg("header", resp.header.as_ref().map(gojson::header))
                        .strings("users", &resp.users)
                        .finish()
                        + "\n"
                }
                Format::Protobuf => return emit_bytes(ctx, &prost::Message::encode_to_vec(&resp)),
                other => return Err(unsupported(other)),
            };
            emit(ctx, &out)
        }
        UserCommand::Passwd { args, interactive } => {
            let name = one_arg(
                &args,
                "user passwd command requires user name as its argument",
            )?;
            let password = if interactive {
                read_password_interactive(ctx, name)?
            } else {
                scan_word(ctx)
            };
            let client = ctx.client().await?;
            let req = pb::AuthUserChangePasswordRequest {
                name: name.to_owned(),
                password,
                hashed_password: String::new(),
            };
            let resp = auth_call!(client, Retry::NonRepeatable, req, user_change_password)?;
            header_only(ctx, "Password updated\n".to_owned(), resp.header.as_ref())
        }
        UserCommand::GrantRole { args } => {
            let [user, role] = args.as_slice() else {
                return Err(CtlError::bad_args(
                    "user grant command requires user name and role name as its argument",
                ));
            };
            let client = ctx.client().await?;
            let req = pb::AuthUserGrantRoleRequest {
                user: user.clone(),
                role: role.clone(),
            };
            let resp = auth_call!(client, Retry::NonRepeatable, req, user_grant_role)?;
            header_only(
                ctx,
                format!("Role {role} is granted to user {user}\n"),
                resp.header.as_ref(),
            )
        }
        UserCommand::RevokeRole { args } => {
            let [user, role] = args.as_slice() else {
                return Err(CtlError::bad_args(
                    "user revoke-role requires user name and role name as its argument",
                ));
            };
            let client = ctx.client().await?;
            let req = pb::AuthUserRevokeRoleRequest {
                name: user.clone(),
                role: role.clone(),
            };
            let resp = auth_call!(client, Retry::NonRepeatable, req, user_revoke_role)?;
            header_only(
                ctx,
                format!("Role {role} is revoked from user {user}\n"),
                resp.header.as_ref(),
            )
        }
    }
}

fn perm_type_name(t: i32) -> &'static str {
    match authpb::permission::Type::try_from(t) {
        Ok(authpb::permission::Type::Read) => "READ",
        Ok(authpb::permission::Type::Write) => "WRITE",
        Ok(authpb::permission::Type::Readwrite) => "READWRITE",
        Err(_) => "UNKNOWN",
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The simple form of one permission line inside `role get`.
fn simple_perm_line(out: &mut String, perm: &authpb::Permission) {
    if perm.range_end.is_empty() {
        let _ = writeln!(out, "\t{}", lossy(&perm.key));
        return;
    }
    let key = lossy(&perm.key);
    if perm.range_end != b"\0" {
        let _ = write!(out, "\t[{key}, {})", lossy(&perm.range_end));
    } else {
        let _ = write!(out, "\t[{key}, <open ended>");
    }
    if crate::kv::prefix_range_end(&perm.key) == perm.range_end {
        let _ = write!(out, " (prefix {key})");
    }
    out.push('\n');
}

fn print_role(
    ctx: &mut Context<'_>,
    role: &str,
    r: &pb::AuthRoleGetResponse,
) -> Result<(), CtlError> {
    use authpb::permission::Type;
    let out = match ctx.printer.format.unwrap_or(Format::Simple) {
        Format::Simple => {
            let mut s = format!("Role {role}\nKV Read:\n");
            for p in &r.perm {
                if p.perm_type == Type::Read as i32 || p.perm_type == Type::Readwrite as i32 {
                    simple_perm_line(&mut s, p);
                }
            }
            s.push_str("KV Write:\n");
            for p in &r.perm {
                if p.perm_type == Type::Write as i32 || p.perm_type == Type::Readwrite as i32 {
                    simple_perm_line(&mut s, p);
                }
            }
            s
        }
        Format::Json => {
            let perms = r
                .perm
                .iter()
                .map(|p| {
                    Obj::new()
                        .int("permType", i64::from(p.perm_type))
                        .bytes("key", &p.key)
                        .bytes("range_end", &p.range_end)
                        .finish()
                })
                .collect();
            Obj::new()
                .msg("header", r.header.as_ref().map(gojson::header))
                .msgs("perm", perms)
                .finish()
                + "\n"
        }
        Format::Fields => {
            let mut s = fields_header(r.header.as_ref());
            for p in &r.perm {
                let _ = writeln!(s, "\"PermType\" :  {}", perm_type_name(p.perm_type));
                let _ = writeln!(s, "\"Key\" : {}", crate::gofmt::quote(&p.key));
                let _ = writeln!(s, "\"RangeEnd\" : {}", crate::gofmt::quote(&p.range_end));
            }
            s
        }
        Format::Protobuf => return emit_bytes(ctx, &prost::Message::encode_to_vec(r)),
        other => return Err(unsupported(other)),
    };
    emit(ctx, &out)
}

/// `role grant-permission` / `revoke-permission` key arguments and flags.
fn perm_range(
    args: &[String],
    prefix: bool,
    from_key: bool,
) -> Result<(Vec<u8>, Vec<u8>), CtlError> {
    let key = args[0].as_bytes().to_vec();
    if key.is_empty() {
        if prefix && from_key {
            return Err(CtlError::bad_args(
                "--from-key and --prefix flags are mutually exclusive",
            ));
        }
        // The empty prefix must cover every key: ["\0", "\0") is open ended.
        let end = if prefix || from_key {
            vec![0]
        } else {
            Vec::new()
        };
        return Ok((vec![0], end));
    }
    let end = match args {
        [_] if prefix && from_key => {
            return Err(CtlError::bad_args(
                "--from-key and --prefix flags are mutually exclusive",
            ));
        }
        [_] if prefix => crate::kv::prefix_range_end(&key),
        [_] if from_key => vec![0],
        [_] => Vec::new(),
        _ if prefix => {
            return Err(CtlError::bad_args(
                "unexpected endkey argument with --prefix flag",
            ));
        }
        _ if from_key => {
            return Err(CtlError::bad_args(
                "unexpected endkey argument with --from-key flag",
            ));
        }
        [_, end, ..] => end.as_bytes().to_vec(),
        [] => Vec::new(),
    };
    Ok((key, end))
}

pub async fn role(command: crate::cli::RoleCommand, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    use crate::cli::RoleCommand;
    match command {
        RoleCommand::Add { args } => {
            let name = one_arg(&args, "role add command requires role name as its argument")?;
            let client = ctx.client().await?;
            let resp = auth_call!(
                client,
                Retry::NonRepeatable,
                pb::AuthRoleAddRequest {
                    name: name.to_owned()
                },
                role_add
            )?;
            header_only(ctx, format!("Role {name} created\n"), resp.header.as_ref())
        }
        RoleCommand::Delete { args } => {
            let name = one_arg(
                &args,
                "role delete command requires role name as its argument",
            )?;
            let client = ctx.client().await?;
            let resp = auth_call!(
                client,
                Retry::NonRepeatable,
                pb::AuthRoleDeleteRequest {
                    role: name.to_owned()
                },
                role_delete
            )?;
            header_only(ctx, format!("Role {name} deleted\n"), resp.header.as_ref())
        }
        RoleCommand::Get { args } => {
            let name = one_arg(&args, "role get command requires role name as its argument")?;
            let client = ctx.client().await?;
            let resp = auth_call!(
                client,
                Retry::Repeatable,
                pb::AuthRoleGetRequest {
                    role: name.to_owned()
                },
                role_get
            )?;
            print_role(ctx, name, &resp)
        }
        RoleCommand::List => {
            let client = ctx.client().await?;
            let resp = auth_call!(
                client,
                Retry::Repeatable,
                pb::AuthRoleListRequest {},
                role_list
            )?;
            let out = match ctx.printer.format.unwrap_or(Format::Simple) {
                Format::Simple => resp.roles.iter().map(|r| format!("{r}\n")).collect(),
                Format::Json => {
                    Obj::new()
                        .msg("header", resp.header.as_ref().map(gojson::header))
                        .strings("roles", &resp.roles)
                        .finish()
                        + "\n"
                }
                Format::Fields => {
                    let mut s = fields_header(resp.header.as_ref());
                    s.push_str("\"Roles\" :");
                    for r in &resp.roles {
                        let _ = write!(s, " {}", crate::gofmt::quote(r.as_bytes()));
                    }
                    s + "\n"
                }
                Format::Protobuf => return emit_bytes(ctx, &prost::Message::encode_to_vec(&resp)),
                other => return Err(unsupported(other)),
            };
            emit(ctx, &out)
        }
        RoleCommand::GrantPermission {
            args,
            prefix,
            from_key,
        } => {
            if args.len() < 3 {
                return Err(CtlError::bad_args(
                    "role grant command requires role name, permission type, and key [endkey] as its argument",
                ));
            }
            let perm_type = match args[1].to_uppercase().as_str() {
                "READ" => authpb::permission::Type::Read,
                "WRITE" => authpb::permission::Type::Write,
                "READWRITE" => authpb::permission::Type::Readwrite,
                _ => {
                    return Err(CtlError::bad_args(format!(
                        "invalid permission type: {}",
                        args[1]
                    )));
                }
            };
            let (key, range_end) = perm_range(&args[2..], prefix, from_key)?;
            let client = ctx.client().await?;
            let req = pb::AuthRoleGrantPermissionRequest {
                name: args[0].clone(),
                perm: Some(authpb::Permission {
                    perm_type: perm_type as i32,
                    key,
                    range_end,
                }),
            };
            let resp = auth_call!(client, Retry::NonRepeatable, req, role_grant_permission)?;
            header_only(
                ctx,
                format!("Role {} updated\n", args[0]),
                resp.header.as_ref(),
            )
        }
        RoleCommand::RevokePermission {
            args,
            prefix,
            from_key,
        } => {
            if args.len() < 2 {
                return Err(CtlError::bad_args(
                    "role revoke-permission command requires role name and key [endkey] as its argument",
                ));
            }
            let (key, range_end) = perm_range(&args[1..], prefix, from_key)?;
            let client = ctx.client().await?;
            let req = pb::AuthRoleRevokePermissionRequest {
                role: args[0].clone(),
                key,
                range_end: range_end.clone(),
            };
            let resp = auth_call!(client, Retry::NonRepeatable, req, role_revoke_permission)?;
            let (role, key, end) = (&args[0], &args[1], lossy(&range_end));
            let simple = if end.is_empty() {
                format!("Permission of key {key} is revoked from role {role}\n")
            } else if end != "\0" {
                format!("Permission of range [{key}, {end}) is revoked from role {role}\n")
            } else {
                format!("Permission of range [{key}, <open ended> is revoked from role {role}\n")
            };
            header_only(ctx, simple, resp.header.as_ref())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn permission_ranges_follow_etcdctl() {
        assert_eq!(
            perm_range(&strings(&["k"]), false, false).unwrap(),
            (b"k".to_vec(), vec![])
        );
        assert_eq!(
            perm_range(&strings(&["p"]), true, false).unwrap(),
            (b"p".to_vec(), b"q".to_vec())
        );
        assert_eq!(
            perm_range(&strings(&["f"]), false, true).unwrap(),
            (b"f".to_vec(), vec![0])
        );
        assert_eq!(
            perm_range(&strings(&["a", "z"]), false, false).unwrap(),
            (b"a".to_vec(), b"z".to_vec())
        );
        assert_eq!(
            perm_range(&strings(&[""]), true, false).unwrap(),
            (vec![0], vec![0])
        );
        assert_eq!(
            perm_range(&strings(&["a", "b"]), true, false)
                .unwrap_err()
                .message,
            "unexpected endkey argument with --prefix flag"
        );
    }

    #[test]
    fn role_permission_lines() {
        let mut s = String::new();
        simple_perm_line(
            &mut s,
            &authpb::Permission {
                perm_type: 0,
                key: b"k".to_vec(),
                range_end: vec![],
            },
        );
        simple_perm_line(
            &mut s,
            &authpb::Permission {
                perm_type: 0,
                key: b"p".to_vec(),
                range_end: b"q".to_vec(),
            },
        );
        simple_perm_line(
            &mut s,
            &authpb::Permission {
                perm_type: 0,
                key: b"f".to_vec(),
                range_end: vec![0],
            },
        );
        simple_perm_line(
            &mut s,
            &authpb::Permission {
                perm_type: 0,
                key: b"a".to_vec(),
                range_end: b"z".to_vec(),
            },
        );
        assert_eq!(
            s,
            "\tk\n\t[p, q) (prefix p)\n\t[f, <open ended>\n\t[a, z)\n"
        );
    }
}
