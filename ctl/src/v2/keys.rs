//! The key commands over `/v2/keys`, with the Go client's requests (query and
//! form fields as `client.KeysAPI` builds them) and etcdctl's printing of a
//! response (`printResponseKey`, `printLs`).

use super::client::{self, Client, ClientError, Request};
use super::flags::Parsed;
use super::{EXIT_BAD_ARGS, EXIT_SERVER_ERROR, Exit, Globals, Outcome};
use serde_json::Value;

/// A node as the Go client decodes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub key: String,
    pub dir: bool,
    pub value: String,
    pub nodes: Option<Vec<Node>>,
    pub created_index: u64,
    pub modified_index: u64,
    pub expiration: Option<String>,
    pub ttl: i64,
}

impl Node {
    fn parse(v: &Value) -> Option<Self> {
        if v.is_null() {
            return None;
        }
        let text = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let number = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or_default();
        Some(Self {
            key: text("key"),
            dir: v.get("dir").and_then(Value::as_bool).unwrap_or_default(),
            value: text("value"),
            nodes: v
                .get("nodes")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Node::parse).collect()),
            created_index: number("createdIndex"),
            modified_index: number("modifiedIndex"),
            expiration: v
                .get("expiration")
                .and_then(Value::as_str)
                .map(str::to_owned),
            ttl: v.get("ttl").and_then(Value::as_i64).unwrap_or_default(),
        })
    }

    /// Go's `json.Marshal` of `client.Node`.
    fn to_json(&self, out: &mut String) {
        out.push_str("{\"key\":");
        out.push_str(&super::flags::go_quote(&self.key));
        if self.dir {
            out.push_str(",\"dir\":true");
        }
        out.push_str(",\"value\":");
        out.push_str(&super::flags::go_quote(&self.value));
        out.push_str(",\"nodes\":");
        match &self.nodes {
            None => out.push_str("null"),
            Some(nodes) => {
                out.push('[');
                for (i, n) in nodes.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    n.to_json(out);
                }
                out.push(']');
            }
        }
        out.push_str(&format!(
            ",\"createdIndex\":{},\"modifiedIndex\":{}",
            self.created_index, self.modified_index
        ));
        if let Some(expiration) = &self.expiration {
            out.push_str(",\"expiration\":");
            out.push_str(&super::flags::go_quote(expiration));
        }
        if self.ttl != 0 {
            out.push_str(&format!(",\"ttl\":{}", self.ttl));
        }
        out.push('}');
    }
}

/// A successful answer (`client.Response`).
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub action: String,
    pub node: Option<Node>,
    pub prev_node: Option<Node>,
    pub index: u64,
}

impl Response {
    fn to_json(&self) -> String {
        let mut out = String::from("{\"action\":");
        out.push_str(&super::flags::go_quote(&self.action));
        out.push_str(",\"node\":");
        match &self.node {
            Some(n) => n.to_json(&mut out),
            None => out.push_str("null"),
        }
        out.push_str(",\"prevNode\":");
        match &self.prev_node {
            Some(n) => n.to_json(&mut out),
            None => out.push_str("null"),
        }
        out.push('}');
        out
    }

    fn node(&self) -> Node {
        self.node.clone().unwrap_or_default()
    }
}

/// A failed key request: the transport's error or etcd's error body.
#[derive(Debug, Clone)]
pub enum KeyError {
    Client(ClientError),
    Etcd {
        code: i64,
        message: String,
        cause: String,
        index: u64,
    },
    /// The body was not an answer (`ErrEmptyBody`: a long poll that ended
    /// without an event).
    Empty,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Client(e) => write!(f, "{e}"),
            Self::Etcd {
                code,
                message,
                cause,
                index,
            } => write!(f, "{code}: {message} ({cause}) [{index}]"),
            Self::Empty => write!(f, "client: response body is empty"),
        }
    }
}

const INVALID_JSON: &str =
    "client: response is invalid json. The endpoint is probably not valid etcd cluster endpoint";

/// `unmarshalHTTPResponse`.
fn decode(reply: client::Reply) -> Result<Response, KeyError> {
    let invalid = || KeyError::Client(ClientError::Other(INVALID_JSON.to_owned()));
    if reply.status == 200 || reply.status == 201 {
        if reply.body.is_empty() {
            return Err(KeyError::Empty);
        }
        let v: Value = serde_json::from_slice(&reply.body).map_err(|_| invalid())?;
        return Ok(Response {
            action: v
                .get("action")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            node: v.get("node").and_then(Node::parse),
            prev_node: v.get("prevNode").and_then(Node::parse),
            index: reply.index.unwrap_or_default(),
        });
    }
    let v: Value = serde_json::from_slice(&reply.body).map_err(|_| invalid())?;
    Err(KeyError::Etcd {
        code: v
            .get("errorCode")
            .and_then(Value::as_i64)
            .unwrap_or_default(),
        message: v
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        cause: v
            .get("cause")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        index: v.get("index").and_then(Value::as_u64).unwrap_or_default(),
    })
}

/// The path of a key (`v2KeysURL`).
fn key_path(key: &str) -> String {
    let key = if key.is_empty() || key.starts_with('/') {
        key.to_owned()
    } else {
        format!("/{key}")
    };
    client::escape_path(&client::canonical_path(&format!("/v2/keys{key}")))
}

fn with_query(path: String, query: &[(&str, String)]) -> String {
    if query.is_empty() {
        path
    } else {
        format!("{path}?{}", client::encode_query(query))
    }
}

/// `SetOptions`.
#[derive(Debug, Default)]
struct SetOptions<'a> {
    prev_value: &'a str,
    prev_index: u64,
    /// `prevExist`: `Some("true")`, `Some("false")`, or ignored.
    prev_exist: Option<&'static str>,
    ttl: i64,
    dir: bool,
}

fn set_request(key: &str, value: &str, opts: &SetOptions<'_>) -> Request {
    let mut query = Vec::new();
    let mut form = Vec::new();
    if opts.dir {
        query.push(("dir", "true".to_owned()));
    } else {
        if !opts.prev_value.is_empty() {
            query.push(("prevValue", opts.prev_value.to_owned()));
        }
        form.push(("value", value.to_owned()));
    }
    if opts.prev_index != 0 {
        query.push(("prevIndex", opts.prev_index.to_string()));
    }
    if let Some(exist) = opts.prev_exist {
        query.push(("prevExist", exist.to_owned()));
    }
    if opts.ttl > 0 {
        form.push(("ttl", opts.ttl.to_string()));
    }
    let mut request =
        Request::new("PUT", with_query(key_path(key), &query)).form(client::encode_query(&form));
    request.one_shot = opts.prev_exist == Some("false");
    request
}

/// Sends a key request under the command's total timeout.
async fn call(
    globals: &Globals,
    client: &mut Client,
    request: Request,
) -> Result<Response, KeyError> {
    let reply = globals
        .with_deadline(client.send(&request))
        .await
        .map_err(KeyError::Client)?;
    decode(reply)
}

/// `handleError` for a key request. etcdctl means to print etcd's error as
/// JSON under `-o json`, but its check looks for a pointer the client never
/// returns, so the error is always printed as text.
fn key_error(globals: &Globals, code: i32, e: &KeyError) -> Exit {
    match e {
        KeyError::Client(c) => globals.handle_error(code, c),
        other => {
            eprintln!("Error:  {other}");
            Exit(code)
        }
    }
}

/// `printResponseKey`.
pub fn print_response(resp: &Response, format: &str) {
    let node = resp.node();
    match format {
        "simple" => {
            if resp.action != "delete" {
                println!("{}", node.value);
            } else {
                let prev = resp.prev_node.clone().unwrap_or_default();
                println!("PrevNode.Value: {}", prev.value);
            }
        }
        "extended" => {
            println!("Key: {}", node.key);
            println!("Created-Index: {}", node.created_index);
            println!("Modified-Index: {}", node.modified_index);
            if let Some(prev) = &resp.prev_node {
                println!("PrevNode.Value: {}", prev.value);
            }
            println!("TTL: {}", node.ttl);
            println!("Index: {}", resp.index);
            if resp.action != "delete" {
                println!();
                println!("{}", node.value);
            }
        }
        "json" => println!("{}", resp.to_json()),
        other => eprintln!("Unsupported output format: {other}"),
    }
}

/// `argOrStdin`.
fn arg_or_stdin(args: &[String], i: usize) -> Option<String> {
    if let Some(v) = args.get(i) {
        return Some(v.clone());
    }
    let mut text = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text);
    (!text.is_empty()).then_some(text)
}

/// One key command.
pub async fn run(globals: &Globals, command: &str, local: &Parsed) -> Outcome {
    let mut client = globals.must_client().await?;
    let args = &local.args;
    let output = globals.output();
    let key = || {
        args.first()
            .cloned()
            .ok_or_else(|| globals.fail(EXIT_BAD_ARGS, "key required"))
    };
    let value =
        || arg_or_stdin(args, 1).ok_or_else(|| globals.fail(EXIT_BAD_ARGS, "value required"));
    let done = |result: Result<Response, KeyError>| {
        result.map_err(|e| key_error(globals, EXIT_SERVER_ERROR, &e))
    };
    match command {
        "get" => {
            let key = key()?;
            let query = [
                ("recursive", "false".to_owned()),
                ("sorted", local.bool("sort").to_string()),
                ("quorum", local.bool("quorum").to_string()),
            ];
            let request = Request::new("GET", with_query(key_path(&key), &query));
            let resp = done(call(globals, &mut client, request).await)?;
            let node = resp.node();
            if node.dir {
                eprintln!("{}: is a directory", node.key);
                return Err(Exit(1));
            }
            print_response(&resp, &output);
        }
        "ls" => {
            let key = args.first().cloned().unwrap_or_else(|| "/".to_owned());
            let query = [
                ("recursive", local.bool("recursive").to_string()),
                ("sorted", local.bool("sort").to_string()),
                ("quorum", local.bool("quorum").to_string()),
            ];
            let request = Request::new("GET", with_query(key_path(&key), &query));
            let resp = done(call(globals, &mut client, request).await)?;
            if output == "simple" {
                let node = resp.node();
                if !node.dir {
                    println!("{}", node.key);
                }
                for child in node.nodes.iter().flatten() {
                    print_ls(child, local.bool("p"));
                }
            } else {
                print_response(&resp, &output);
            }
        }
        "set" => {
            let key = key()?;
            let value = value()?;
            let opts = SetOptions {
                ttl: local.int("ttl"),
                prev_value: &local.string("swap-with-value"),
                prev_index: u64::try_from(local.int("swap-with-index")).unwrap_or_default(),
                ..Default::default()
            };
            let resp = done(call(globals, &mut client, set_request(&key, &value, &opts)).await)?;
            print_response(&resp, &output);
        }
        "mk" => {
            let key = key()?;
            let value = value()?;
            let ttl = local.int("ttl");
            let request = if local.bool("in-order") {
                let mut form = vec![("value", value.clone())];
                if ttl > 0 {
                    form.push(("ttl", ttl.to_string()));
                }
                Request::new("POST", key_path(&key)).form(client::encode_query(&form))
            } else {
                let opts = SetOptions {
                    ttl,
                    prev_exist: Some("false"),
                    ..Default::default()
                };
                set_request(&key, &value, &opts)
            };
            let resp = done(call(globals, &mut client, request).await)?;
            print_response(&resp, &output);
        }
        "update" => {
            let key = key()?;
            let value = value()?;
            let opts = SetOptions {
                ttl: local.int("ttl"),
                prev_exist: Some("true"),
                ..Default::default()
            };
            let resp = done(call(globals, &mut client, set_request(&key, &value, &opts)).await)?;
            print_response(&resp, &output);
        }
        "mkdir" | "setdir" | "updatedir" => {
            let key = key()?;
            let opts = SetOptions {
                ttl: local.int("ttl"),
                dir: true,
                prev_exist: match command {
                    "mkdir" => Some("false"),
                    "updatedir" => Some("true"),
                    _ => None,
                },
                ..Default::default()
            };
            let resp = done(call(globals, &mut client, set_request(&key, "", &opts)).await)?;
            if output != "simple" {
                print_response(&resp, &output);
            }
        }
        "rm" | "rmdir" => {
            let key = key()?;
            let mut query = Vec::new();
            if command == "rm" {
                let prev_value = local.string("with-value");
                if !prev_value.is_empty() {
                    query.push(("prevValue", prev_value));
                }
                let prev_index = local.int("with-index");
                if prev_index != 0 {
                    query.push(("prevIndex", prev_index.to_string()));
                }
            }
            if command == "rmdir" || local.bool("dir") {
                query.push(("dir", "true".to_owned()));
            }
            if command == "rm" && local.bool("recursive") {
                query.push(("recursive", "true".to_owned()));
            }
            let mut request = Request::new("DELETE", with_query(key_path(&key), &query));
            request.one_shot = true;
            let resp = done(call(globals, &mut client, request).await)?;
            if !resp.node().dir || output != "simple" {
                print_response(&resp, &output);
            }
        }
        "watch" => watch(globals, &mut client, local, &output).await?,
        "exec-watch" => exec_watch(globals, &mut client, local).await?,
        _ => return Err(Exit(1)),
    }
    Ok(())
}

/// `rPrint`.
fn print_ls(node: &Node, slash: bool) {
    if node.dir && slash {
        println!("{}/", node.key);
    } else {
        println!("{}", node.key);
    }
    for child in node.nodes.iter().flatten() {
        print_ls(child, slash);
    }
}

/// The Go client's `Watcher`: each answer moves `waitIndex` past the event.
struct Watcher {
    key: String,
    recursive: bool,
    wait_index: u64,
}

impl Watcher {
    fn new(key: String, after_index: i64, recursive: bool) -> Self {
        let after = u64::try_from(after_index).unwrap_or_default();
        Self {
            key,
            recursive,
            wait_index: if after > 0 { after + 1 } else { 0 },
        }
    }

    async fn next(&mut self, client: &mut Client) -> Result<Response, KeyError> {
        loop {
            let query = [
                ("wait", "true".to_owned()),
                ("waitIndex", self.wait_index.to_string()),
                ("recursive", self.recursive.to_string()),
            ];
            let mut request = Request::new("GET", with_query(key_path(&self.key), &query));
            request.wait = true;
            let reply = client.send(&request).await.map_err(KeyError::Client)?;
            match decode(reply) {
                Err(KeyError::Empty) => continue,
                Err(e) => return Err(e),
                Ok(resp) => {
                    self.wait_index = resp.node().modified_index + 1;
                    return Ok(resp);
                }
            }
        }
    }
}

async fn watch(globals: &Globals, client: &mut Client, local: &Parsed, output: &str) -> Outcome {
    let Some(key) = local.args.first().cloned() else {
        return Err(globals.fail(EXIT_BAD_ARGS, "key required"));
    };
    let recursive = local.bool("recursive");
    let forever = local.bool("forever");
    let mut watcher = Watcher::new(key, local.int("after-index"), recursive);
    loop {
        let resp = watcher
            .next(client)
            .await
            .map_err(|e| key_error(globals, EXIT_SERVER_ERROR, &e))?;
        let node = resp.node();
        if node.dir {
            continue;
        }
        if recursive {
            println!("[{}] {}", resp.action, node.key);
        }
        print_response(&resp, output);
        if !forever {
            return Ok(());
        }
    }
}

async fn exec_watch(globals: &Globals, client: &mut Client, local: &Parsed) -> Outcome {
    let args = &local.args;
    if args.len() < 2 {
        return Err(globals.fail(EXIT_BAD_ARGS, "key and command to exec required"));
    }
    // With `--` after the key the command follows it; without, urfave's
    // reordering has put the key last.
    let separated = args.iter().skip(1).any(|a| a == "--");
    let (key, command) = if separated {
        (args[0].clone(), args[2..].to_vec())
    } else {
        (
            args[args.len() - 1].clone(),
            args[..args.len() - 1].to_vec(),
        )
    };
    let Some((program, program_args)) = command.split_first() else {
        return Err(globals.fail(EXIT_BAD_ARGS, "key and command to exec required"));
    };
    let mut watcher = Watcher::new(key, local.int("after-index"), local.bool("recursive"));
    // etcdctl exits 0 on an interrupt, leaving the commands it started running.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let resp = tokio::select! {
            resp = watcher.next(client) => resp,
            _ = &mut interrupted => return Ok(()),
        }
        .map_err(|e| key_error(globals, EXIT_SERVER_ERROR, &e))?;
        let node = resp.node();
        if node.dir {
            eprintln!("Ignored dir {} change", node.key);
            continue;
        }
        let spawned = std::process::Command::new(program)
            .args(program_args)
            .env("ETCD_WATCH_ACTION", &resp.action)
            .env("ETCD_WATCH_MODIFIED_INDEX", node.modified_index.to_string())
            .env("ETCD_WATCH_KEY", &node.key)
            .env("ETCD_WATCH_VALUE", &node.value)
            .spawn();
        match spawned {
            // The command runs on its own; reap it without waiting here.
            Ok(mut child) => {
                std::thread::spawn(move || child.wait());
            }
            Err(e) => {
                eprint!("exec: \"{program}\": {}", e.to_string().to_lowercase());
                return Err(Exit(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_go_clients_fields() {
        let r = set_request(
            "foo bar",
            "v 1",
            &SetOptions {
                ttl: 30,
                prev_value: "old",
                prev_exist: Some("false"),
                ..Default::default()
            },
        );
        assert_eq!(r.target, "/v2/keys/foo%20bar?prevExist=false&prevValue=old");
        assert_eq!(r.body.map(|b| b.0), Some(b"ttl=30&value=v+1".to_vec()));
        assert!(r.one_shot);
        let dir = set_request(
            "/d/",
            "",
            &SetOptions {
                dir: true,
                ..Default::default()
            },
        );
        assert_eq!(dir.target, "/v2/keys/d/?dir=true");
    }

    #[test]
    fn json_is_go_marshalled() {
        let v: Value = serde_json::from_str(
            r#"{"action":"get","node":{"key":"/d","dir":true,"nodes":[{"key":"/d/a","value":"<1>","modifiedIndex":5,"createdIndex":5}],"modifiedIndex":4,"createdIndex":4}}"#,
        )
        .unwrap();
        let resp = Response {
            action: "get".into(),
            node: v.get("node").and_then(Node::parse),
            ..Default::default()
        };
        assert_eq!(
            resp.to_json(),
            r#"{"action":"get","node":{"key":"/d","dir":true,"value":"","nodes":[{"key":"/d/a","value":"\u003c1\u003e","nodes":null,"createdIndex":5,"modifiedIndex":5}],"createdIndex":4,"modifiedIndex":4},"prevNode":null}"#
        );
    }
}
