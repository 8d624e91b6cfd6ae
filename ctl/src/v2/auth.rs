//! `user`, `role` and `auth enable|disable` over `/v2/auth`, as the Go
//! client's `AuthUserAPI`, `AuthRoleAPI` and `AuthAPI` send and read them.

use super::client::{self, Client, Request};
use super::flags::Parsed;
use super::{Exit, Globals, Outcome};
use serde_json::Value;

fn fail(text: &str) -> Exit {
    eprintln!("{text}");
    Exit(1)
}

/// Sends and reads an auth request: the body on one of `ok`, else the
/// server's `message` (or Go's status error when there is none).
async fn call(
    globals: &Globals,
    client: &mut Client,
    request: Request,
    ok: &[u16],
    message_on_error: bool,
) -> Result<Vec<u8>, String> {
    let reply = globals
        .with_deadline(client.send(&request))
        .await
        .map_err(|e| e.to_string())?;
    if ok.contains(&reply.status) {
        return Ok(reply.body);
    }
    if !message_on_error {
        return Err(format!("unexpected status code {}", reply.status));
    }
    let v: Value = serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
    Err(v
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned())
}

fn auth_path(kind: &str, name: &str) -> String {
    if name.is_empty() {
        format!("/v2/auth/{kind}")
    } else {
        client::escape_path(&client::canonical_path(&format!("/v2/auth/{kind}/{name}")))
    }
}

fn strings_json(v: &[String]) -> String {
    let quoted: Vec<String> = v.iter().map(|s| super::flags::go_quote(s)).collect();
    format!("[{}]", quoted.join(","))
}

/// Role names from a user's `roles`, given as names or as role objects.
fn role_names(v: &Value) -> Vec<String> {
    v.get("roles")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| {
                    r.as_str()
                        .or_else(|| r.get("role").and_then(Value::as_str))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `user list` and `role list`: the `field` of each entry of `/v2/auth/{kind}`, one a
/// line.
async fn list_names(
    globals: &Globals,
    args: &[String],
    kind: &str,
    field: &str,
    message_on_error: bool,
) -> Outcome {
    if !args.is_empty() {
        return Err(fail("No arguments accepted"));
    }
    let mut client = globals.must_client().await?;
    if globals.debug() {
        eprintln!("Cluster-Endpoints: {}", client.endpoints().join(", "));
    }
    let request = Request::new("GET", auth_path(kind, ""));
    let body = call(globals, &mut client, request, &[200], message_on_error)
        .await
        .map_err(|e| fail(&e))?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| fail(&e.to_string()))?;
    for entry in v.get(kind).and_then(Value::as_array).into_iter().flatten() {
        println!(
            "{}",
            entry.get(field).and_then(Value::as_str).unwrap_or_default()
        );
    }
    Ok(())
}

pub async fn user(globals: &Globals, sub: &str, local: &Parsed) -> Outcome {
    let args = &local.args;
    if sub == "list" {
        // etcdctl prints the server's message when listing users fails.
        return list_names(globals, args, "users", "user", true).await;
    }
    if sub == "grant" || sub == "revoke" {
        let roles = local.strings("roles");
        if roles.is_empty() {
            return Err(fail("No roles specified; please use `--roles`"));
        }
    }
    if args.len() != 1 {
        return Err(fail("Please provide a username"));
    }
    let mut client = globals.must_client().await?;
    if globals.debug() {
        eprintln!("Cluster-Endpoints: {}", client.endpoints().join(", "));
    }
    let name = args[0].clone();
    match sub {
        "add" => {
            let user = name.split(':').next().unwrap_or_default().to_owned();
            let (_, password) = super::username_password("New password: ", &name)
                .map_err(|e| fail(&format!("Error reading password: {e}")))?;
            let body = format!(
                "{{\"user\":{},\"password\":{},\"roles\":null}}",
                super::flags::go_quote(&user),
                super::flags::go_quote(&password)
            );
            let request = Request::new("PUT", auth_path("users", &user)).json(body);
            call(globals, &mut client, request, &[200, 201], true)
                .await
                .map_err(|e| fail(&e))?;
            println!("User {user} created");
        }
        "remove" => {
            let request = Request::new("DELETE", auth_path("users", &name));
            call(globals, &mut client, request, &[200, 201], true)
                .await
                .map_err(|e| fail(&e))?;
            println!("User {name} removed");
        }
        "passwd" => {
            let password = super::prompt_password("New password: ")
                .map_err(|e| fail(&format!("Error reading password: {e}")))?;
            let body = format!(
                "{{\"user\":{},\"password\":{},\"roles\":null}}",
                super::flags::go_quote(&name),
                super::flags::go_quote(&password)
            );
            let request = Request::new("PUT", auth_path("users", &name)).json(body);
            call(globals, &mut client, request, &[200], true)
                .await
                .map_err(|e| fail(&e))?;
            println!("Password updated");
        }
        "grant" | "revoke" => {
            let field = if sub == "grant" { "grant" } else { "revoke" };
            let body = format!(
                "{{\"user\":{},\"roles\":null,\"{field}\":{}}}",
                super::flags::go_quote(&name),
                strings_json(&local.strings("roles"))
            );
            let request = Request::new("PUT", auth_path("users", &name)).json(body);
            call(globals, &mut client, request, &[200], true)
                .await
                .map_err(|e| fail(&e))?;
            println!("User {name} updated");
        }
        "get" => {
            let request = Request::new("GET", auth_path("users", &name));
            let body = call(globals, &mut client, request, &[200], true)
                .await
                .map_err(|e| fail(&e))?;
            let v: Value = serde_json::from_slice(&body).map_err(|e| fail(&e.to_string()))?;
            println!(
                "User: {}",
                v.get("user").and_then(Value::as_str).unwrap_or_default()
            );
            println!("Roles: {}", role_names(&v).join(" "));
        }
        _ => return Err(Exit(1)),
    }
    Ok(())
}

/// A role's read and write paths.
fn permissions(v: &Value) -> (Vec<String>, Vec<String>) {
    let list = |kind: &str| {
        v.get("permissions")
            .and_then(|p| p.get("kv"))
            .and_then(|kv| kv.get(kind))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    (list("read"), list("write"))
}

/// Go's `pathutil.CanonicalURLPath`.
fn canonical(path: &str) -> String {
    client::canonical_path(path)
}

pub async fn role(globals: &Globals, sub: &str, local: &Parsed) -> Outcome {
    let args = &local.args;
    if sub == "list" {
        // ...and Go's status error when listing roles fails.
        return list_names(globals, args, "roles", "role", false).await;
    }
    let mut perm = None;
    if sub == "grant" || sub == "revoke" {
        let path = local.string("path");
        if path.is_empty() {
            return Err(fail("No path specified; please use `--path`"));
        }
        if canonical(&path) != path {
            return Err(fail(&format!(
                "Not canonical path; please use `--path={}`",
                canonical(&path)
            )));
        }
        let chosen: Vec<&str> = ["read", "write", "readwrite"]
            .into_iter()
            .filter(|f| local.bool(f))
            .collect();
        if chosen.len() != 1 {
            return Err(fail(
                "Please specify exactly one of --read, --write or --readwrite",
            ));
        }
        perm = Some((path, chosen[0]));
    }
    if args.len() != 1 {
        return Err(fail("Please provide a role name"));
    }
    let name = args[0].clone();
    let mut client = globals.must_client().await?;
    if globals.debug() {
        eprintln!("Cluster-Endpoints: {}", client.endpoints().join(", "));
    }
    let get_request = || Request::new("GET", auth_path("roles", &name));
    match sub {
        "add" => {
            if call(globals, &mut client, get_request(), &[200], true)
                .await
                .is_ok()
            {
                eprintln!("Role {name} already exists");
                return Err(Exit(1));
            }
            let body = format!(
                "{{\"role\":{},\"permissions\":{{\"kv\":{{\"read\":null,\"write\":null}}}}}}",
                super::flags::go_quote(&name)
            );
            let request = Request::new("PUT", auth_path("roles", &name)).json(body);
            call(globals, &mut client, request, &[200, 201], true)
                .await
                .map_err(|e| fail(&e))?;
            println!("Role {name} created");
        }
        "remove" => {
            let request = Request::new("DELETE", auth_path("roles", &name));
            call(globals, &mut client, request, &[200, 201], true)
                .await
                .map_err(|e| fail(&e))?;
            println!("Role {name} removed");
        }
        "get" => {
            let body = call(globals, &mut client, get_request(), &[200], true)
                .await
                .map_err(|e| fail(&e))?;
            let v: Value = serde_json::from_slice(&body).map_err(|e| fail(&e.to_string()))?;
            println!(
                "Role: {}",
                v.get("role").and_then(Value::as_str).unwrap_or_default()
            );
            let (read, write) = permissions(&v);
            println!("KV Read:");
            for p in read {
                println!("\t{p}");
            }
            println!("KV Write:");
            for p in write {
                println!("\t{p}");
            }
        }
        "grant" | "revoke" => {
            let Some((path, kind)) = perm else {
                return Err(Exit(1));
            };
            let current = call(globals, &mut client, get_request(), &[200], true)
                .await
                .map_err(|e| fail(&e))?;
            let paths = strings_json(std::slice::from_ref(&path));
            let (read, write) = match kind {
                "read" => (paths.as_str(), "null"),
                "write" => ("null", paths.as_str()),
                _ => (paths.as_str(), paths.as_str()),
            };
            let body = format!(
                "{{\"role\":{},\"permissions\":{{\"kv\":{{\"read\":null,\"write\":null}}}},\"{sub}\":{{\"kv\":{{\"read\":{read},\"write\":{write}}}}}}}",
                super::flags::go_quote(&name)
            );
            let request = Request::new("PUT", auth_path("roles", &name)).json(body);
            let updated = call(globals, &mut client, request, &[200], true)
                .await
                .map_err(|e| fail(&e))?;
            let before: Value = serde_json::from_slice(&current).unwrap_or_default();
            let after: Value = serde_json::from_slice(&updated).unwrap_or_default();
            if before.get("role") == after.get("role")
                && permissions(&before) == permissions(&after)
            {
                if sub == "grant" {
                    print!("Role unchanged; already granted");
                } else {
                    print!("Role unchanged; already revoked");
                }
            }
            println!("Role {name} updated");
        }
        _ => return Err(Exit(1)),
    }
    Ok(())
}

pub async fn enable_disable(globals: &Globals, enable: bool, local: &Parsed) -> Outcome {
    if !local.args.is_empty() {
        return Err(fail("No arguments accepted"));
    }
    let mut client = globals.must_client().await?;
    if globals.debug() {
        eprintln!("Cluster-Endpoints: {}", client.endpoints().join(", "));
    }
    let method = if enable { "PUT" } else { "DELETE" };
    let request = Request::new(method, "/v2/auth/enable".to_owned());
    call(globals, &mut client, request, &[200, 201], true)
        .await
        .map_err(|e| fail(&e))?;
    if enable {
        println!("Authentication Enabled");
    } else {
        println!("Authentication Disabled");
    }
    Ok(())
}
