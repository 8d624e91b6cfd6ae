//! `member list|add|remove|update` over `/v2/members`, and `cluster-health`
//! (each member's `/health` through its client URLs).

use super::client::{self, ClientError, Request};
use super::flags::Parsed;
use super::{EXIT_CLUSTER_NOT_HEALTHY, EXIT_SERVER_ERROR, Exit, Globals, Outcome};

/// Go's `membersError` text, or the unexpected status.
fn status_error(status: u16, body: &[u8], message_codes: &[u16]) -> String {
    if message_codes.contains(&status)
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
    {
        return v
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_owned();
    }
    format!("unexpected status code {status}")
}

async fn list(
    globals: &Globals,
    client: &mut client::Client,
) -> Result<Vec<client::Member>, String> {
    let reply = globals
        .with_deadline(client.send(&Request::new("GET", "/v2/members".to_owned())))
        .await
        .map_err(|e| e.to_string())?;
    if reply.status != 200 {
        return Err(format!("unexpected status code {}", reply.status));
    }
    client::parse_members(&reply.body).map_err(|e| e.to_string())
}

/// The JSON body of an add or update.
fn peer_urls_body(urls: &[String]) -> String {
    let quoted: Vec<String> = urls.iter().map(|u| super::flags::go_quote(u)).collect();
    format!("{{\"peerURLs\":[{}]}}", quoted.join(","))
}

/// `types.NewURLs`' checks on peer URLs.
fn check_urls(urls: &[String]) -> Result<(), String> {
    for u in urls {
        let Some((scheme, rest)) = u.split_once("://") else {
            return Err(format!(
                "URL scheme must be http, https, unix, or unixs: {u}"
            ));
        };
        if !matches!(scheme, "http" | "https" | "unix" | "unixs") {
            return Err(format!(
                "URL scheme must be http, https, unix, or unixs: {u}"
            ));
        }
        let host = rest.split('/').next().unwrap_or_default();
        if !host.contains(':') {
            return Err(format!(
                "URL address does not have the form \"host:port\": {u}"
            ));
        }
        if rest.contains('/') && !rest.ends_with('/') || rest.matches('/').count() > 1 {
            return Err(format!("URL must not contain a path: {u}"));
        }
    }
    Ok(())
}

pub async fn member(globals: &Globals, sub: &str, local: &Parsed) -> Outcome {
    let args = &local.args;
    let usage = |text: &str| {
        eprintln!("{text}");
        Err(Exit(1))
    };
    match sub {
        "list" => {
            if !args.is_empty() {
                return usage("No arguments accepted");
            }
            let mut client = globals.must_client().await?;
            let members = match list(globals, &mut client).await {
                Ok(m) => m,
                Err(e) => return usage(&e),
            };
            let reply = globals
                .with_deadline(client.send(&Request::new("GET", "/v2/members/leader".to_owned())))
                .await;
            let leader = match reply {
                Ok(r) if r.status == 200 => serde_json::from_slice::<serde_json::Value>(&r.body)
                    .map(|v| client::parse_member(&v))
                    .map_err(|e| e.to_string()),
                Ok(r) => Err(format!("unexpected status code {}", r.status)),
                Err(e) => Err(e.to_string()),
            };
            let leader = match leader {
                Ok(l) => l,
                Err(e) => return usage(&format!("Failed to get leader:  {e}")),
            };
            for m in members {
                if m.name.is_empty() {
                    println!("{}[unstarted]: peerURLs={}", m.id, m.peer_urls.join(","));
                } else {
                    println!(
                        "{}: name={} peerURLs={} clientURLs={} isLeader={}",
                        m.id,
                        m.name,
                        m.peer_urls.join(","),
                        m.client_urls.join(","),
                        m.id == leader.id
                    );
                }
            }
            Ok(())
        }
        "add" => {
            if args.len() != 2 {
                return usage("Provide a name and a single member peerURL");
            }
            let mut client = globals.must_client().await?;
            let (name, url) = (&args[0], &args[1]);
            if let Err(e) = check_urls(std::slice::from_ref(url)) {
                return usage(&e);
            }
            let request = Request::new("POST", "/v2/members".to_owned())
                .json(peer_urls_body(std::slice::from_ref(url)));
            let reply = match globals.with_deadline(client.send(&request)).await {
                Ok(r) => r,
                Err(e) => return usage(&e.to_string()),
            };
            if reply.status != 201 {
                return usage(&status_error(reply.status, &reply.body, &[409]));
            }
            let added = serde_json::from_slice::<serde_json::Value>(&reply.body)
                .map(|v| client::parse_member(&v))
                .unwrap_or_default();
            println!("Added member named {name} with ID {} to cluster", added.id);
            let members = match list(globals, &mut client).await {
                Ok(m) => m,
                Err(e) => return usage(&e),
            };
            let mut conf = Vec::new();
            for m in &members {
                for u in &m.peer_urls {
                    let n = if m.id == added.id { name } else { &m.name };
                    conf.push(format!("{n}={u}"));
                }
            }
            println!();
            println!("ETCD_NAME={}", super::flags::go_quote(name));
            println!(
                "ETCD_INITIAL_CLUSTER={}",
                super::flags::go_quote(&conf.join(","))
            );
            println!("ETCD_INITIAL_CLUSTER_STATE=\"existing\"");
            Ok(())
        }
        "remove" => {
            if args.len() != 1 {
                return usage("Provide a single member ID");
            }
            let id = &args[0];
            let mut client = globals.must_client().await?;
            let members = match list(globals, &mut client).await {
                Ok(m) => m,
                Err(e) => {
                    return usage(&format!(
                        "Error while verifying ID against known members: {e}"
                    ));
                }
            };
            let mut found = false;
            for m in &members {
                if &m.id == id {
                    found = true;
                }
                if &m.name == id {
                    eprint!(
                        "Found a member named {}; if this is correct, please use its ID, eg:\n\tetcdctl member remove {}\n",
                        m.name, m.id
                    );
                    eprint!(
                        "For more details, read the documentation at https://github.com/etcd-io/etcd/blob/master/Documentation/runtime-configuration.md#remove-a-member\n\n"
                    );
                }
            }
            if !found {
                eprintln!("Couldn't find a member in the cluster with an ID of {id}.");
                return Err(Exit(1));
            }
            let request =
                Request::new("DELETE", format!("/v2/members/{}", client::escape_path(id)));
            let result = match globals.with_deadline(client.send(&request)).await {
                Ok(r) if r.status == 204 || r.status == 410 => Ok(()),
                Ok(r) => Err(format!("unexpected status code {}", r.status)),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = result {
                eprint!("Received an error trying to remove member {id}: {e}");
                return Err(Exit(1));
            }
            println!("Removed member {id} from cluster");
            Ok(())
        }
        "update" => {
            if args.len() != 2 {
                return usage(
                    "Provide an ID and a list of comma separated peerURL (0xabcd http://example.com,http://example1.com)",
                );
            }
            let mut client = globals.must_client().await?;
            let id = &args[0];
            let urls: Vec<String> = args[1].split(',').map(str::to_owned).collect();
            if let Err(e) = check_urls(&urls) {
                return usage(&e);
            }
            let request = Request::new("PUT", format!("/v2/members/{}", client::escape_path(id)))
                .json(peer_urls_body(&urls));
            let reply = match globals.with_deadline(client.send(&request)).await {
                Ok(r) => r,
                Err(e) => return usage(&e.to_string()),
            };
            if reply.status != 204 {
                return usage(&status_error(reply.status, &reply.body, &[404, 409]));
            }
            println!("Updated member with ID {id} in cluster");
            Ok(())
        }
        _ => Err(Exit(1)),
    }
}

/// `cluster-health [--forever]`.
pub async fn health(globals: &Globals, local: &Parsed) -> Outcome {
    if local.bool("forever") {
        // etcdctl exits 0 on an interrupt, whatever the round is doing.
        tokio::spawn(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = std::io::Write::flush(&mut std::io::stdout());
                std::process::exit(0);
            }
        });
        tokio::task::yield_now().await;
    }
    let mut client = globals.must_client_no_sync().await?;
    let reply = client
        .send(&Request::new("GET", "/v2/members".to_owned()))
        .await;
    let members = match reply {
        Ok(r) if r.status == 200 => client::parse_members(&r.body),
        Ok(r) => Err(ClientError::Other(format!(
            "unexpected status code {}",
            r.status
        ))),
        Err(e) => Err(e),
    };
    let members = match members {
        Ok(m) => m,
        Err(e) => {
            println!("cluster may be unhealthy: failed to list members");
            return Err(globals.handle_error(EXIT_SERVER_ERROR, &e));
        }
    };
    loop {
        let mut healthy = 0;
        for m in &members {
            if m.client_urls.is_empty() {
                println!(
                    "member {} is unreachable: no available published client urls",
                    m.id
                );
                continue;
            }
            let mut checked = false;
            for url in &m.client_urls {
                let mut probe = client::Client::new(
                    vec![url.clone()],
                    globals.new_client().await.ok().and_then(|c| c.tls()),
                    None,
                    std::time::Duration::ZERO,
                    std::time::Duration::from_secs(30),
                    None,
                );
                let reply = probe.send(&Request::new("GET", "/health".to_owned())).await;
                let body = match reply {
                    Ok(r) => r.body,
                    Err(e) => {
                        let text = match e {
                            ClientError::Cluster(errors) => errors.join("; "),
                            other => other.to_string(),
                        };
                        println!(
                            "failed to check the health of member {} on {url}: Get \"{url}/health\": {text}",
                            m.id
                        );
                        continue;
                    }
                };
                let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&body);
                let Ok(v) = parsed else {
                    println!(
                        "failed to check the health of member {} on {url}: invalid character in response",
                        m.id
                    );
                    continue;
                };
                checked = true;
                let good = match v.get("health") {
                    Some(serde_json::Value::String(s)) => s == "true",
                    Some(serde_json::Value::Bool(b)) => *b,
                    _ => false,
                };
                if good {
                    println!("member {} is healthy: got healthy result from {url}", m.id);
                    healthy += 1;
                } else {
                    println!(
                        "member {} is unhealthy: got unhealthy result from {url}",
                        m.id
                    );
                }
                break;
            }
            if !checked {
                println!(
                    "member {} is unreachable: [{}] are all unreachable",
                    m.id,
                    m.client_urls.join(" ")
                );
            }
        }
        if healthy == members.len() {
            println!("cluster is healthy");
        } else if healthy == 0 {
            println!("cluster is unavailable");
        } else {
            println!("cluster is degraded");
        }
        if !local.bool("forever") {
            return if healthy == members.len() {
                Ok(())
            } else {
                Err(Exit(EXIT_CLUSTER_NOT_HEALTHY))
            };
        }
        print!("\nnext check after 10 second...\n\n");
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    }
}
