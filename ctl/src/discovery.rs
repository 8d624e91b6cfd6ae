//! `--discovery-srv <domain>`: endpoints from DNS SRV records, as etcdctl 3.4
//! finds them (`pkg/srv.GetClient("etcd-client", domain, serviceName)`):
//! `_etcd-client-ssl[-<name>]._tcp.<domain>` gives `https://target:port`
//! endpoints and `_etcd-client[-<name>]._tcp.<domain>` gives `http://` ones;
//! only when both lookups fail is it an error. Without
//! `--insecure-discovery` the `http://` endpoints are dropped (with a notice).
//!
//! The lookup is a plain DNS query over UDP to the first `nameserver` of
//! `/etc/resolv.conf` (Go's resolver does the same for these names), with
//! Go's error texts (`lookup <name> on <server>: no such host`).

use crate::error::CtlError;
use std::net::SocketAddr;
use std::time::Duration;

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// The target host with its trailing dot, as Go reports it.
    pub target: String,
}

const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;
/// Go's resolver: 5 s per attempt, 2 attempts.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const ATTEMPTS: usize = 2;

/// The nameserver Go would ask: the first in resolv.conf (default 127.0.0.1:53).
pub fn nameserver(resolv_conf: &str) -> SocketAddr {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .next()
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 53)))
}

/// A DNS query for the SRV records of `name`.
pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend(id.to_be_bytes());
    q.extend([0x01, 0x00]); // recursion desired
    q.extend([0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in name.trim_end_matches('.').split('.') {
        let bytes = label.as_bytes();
        q.push(u8::try_from(bytes.len()).unwrap_or(63).min(63));
        q.extend(&bytes[..bytes.len().min(63)]);
    }
    q.push(0);
    q.extend(TYPE_SRV.to_be_bytes());
    q.extend(CLASS_IN.to_be_bytes());
    q
}

fn u16_at(msg: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]))
}

/// Reads a possibly compressed name at `at`; returns it (with a trailing
/// dot) and the position after it in the record.
fn read_name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut end = None;
    for _ in 0..128 {
        let len = *msg.get(at)?;
        if len & 0xc0 == 0xc0 {
            let pointer = usize::from(u16_at(msg, at)? & 0x3fff);
            end.get_or_insert(at + 2);
            at = pointer;
            continue;
        }
        if len == 0 {
            if name.is_empty() {
                name.push('.');
            }
            return Some((name, end.unwrap_or(at + 1)));
        }
        let label = msg.get(at + 1..at + 1 + usize::from(len))?;
        name.push_str(&String::from_utf8_lossy(label));
        name.push('.');
        at += 1 + usize::from(len);
    }
    None
}

/// What a response says: the SRV records, or Go's error word for it.
pub fn parse_response(id: u16, msg: &[u8]) -> Result<Vec<Srv>, &'static str> {
    const MISBEHAVING: &str = "server misbehaving";
    if u16_at(msg, 0) != Some(id) {
        return Err(MISBEHAVING);
    }
    let flags = u16_at(msg, 2).ok_or(MISBEHAVING)?;
    match flags & 0x000f {
        0 => {}
        3 => return Err("no such host"),
        _ => return Err(MISBEHAVING),
    }
    let questions = u16_at(msg, 4).ok_or(MISBEHAVING)?;
    let answers = u16_at(msg, 6).ok_or(MISBEHAVING)?;
    let mut at = 12;
    for _ in 0..questions {
        let (_, next) = read_name(msg, at).ok_or(MISBEHAVING)?;
        at = next + 4;
    }
    let mut records = Vec::new();
    for _ in 0..answers {
        let (_, next) = read_name(msg, at).ok_or(MISBEHAVING)?;
        let rtype = u16_at(msg, next).ok_or(MISBEHAVING)?;
        let rdlen = usize::from(u16_at(msg, next + 8).ok_or(MISBEHAVING)?);
        let rdata = next + 10;
        if rtype == TYPE_SRV {
            let (target, _) = read_name(msg, rdata + 6).ok_or(MISBEHAVING)?;
            records.push(Srv {
                priority: u16_at(msg, rdata).ok_or(MISBEHAVING)?,
                weight: u16_at(msg, rdata + 2).ok_or(MISBEHAVING)?,
                port: u16_at(msg, rdata + 4).ok_or(MISBEHAVING)?,
                target,
            });
        }
        at = rdata + rdlen;
    }
    if records.is_empty() {
        return Err("no such host");
    }
    // Go sorts by priority (and shuffles by weight within one; heavier first
    // here, which is one of the orders Go may pick).
    records.sort_by(|a, b| a.priority.cmp(&b.priority).then(b.weight.cmp(&a.weight)));
    Ok(records)
}

/// Go's `net.LookupSRV(service, "tcp", domain)`; the error is Go's text.
async fn lookup_srv(server: SocketAddr, name: &str) -> Result<Vec<Srv>, String> {
    let fail = |why: &str| format!("lookup {name} on {server}: {why}");
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| fail(&e.to_string()))?;
    socket
        .connect(server)
        .await
        .map_err(|e| fail(&e.to_string()))?;
    let id = u16::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos()
            & 0xffff,
    )
    .unwrap_or(1);
    let request = query(id, name);
    let mut buf = vec![0_u8; 4096];
    for _ in 0..ATTEMPTS {
        if let Err(e) = socket.send(&request).await {
            return Err(fail(&e.to_string()));
        }
        match tokio::time::timeout(ATTEMPT_TIMEOUT, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => return parse_response(id, &buf[..n]).map_err(fail),
            Ok(Err(e)) => return Err(fail(&e.to_string())),
            Err(_) => {}
        }
    }
    Err(fail("i/o timeout"))
}

/// The endpoints `--discovery-srv` finds, or etcdctl's error.
pub async fn endpoints(
    domain: &str,
    service_name: &str,
    insecure: bool,
    server: SocketAddr,
) -> Result<Vec<String>, CtlError> {
    let service = |ssl: bool| {
        let mut s = String::from("etcd-client");
        if ssl {
            s.push_str("-ssl");
        }
        if !service_name.is_empty() {
            s.push('-');
            s.push_str(service_name);
        }
        format!("_{s}._tcp.{domain}")
    };
    let mut endpoints = Vec::new();
    let mut errors = Vec::new();
    for (ssl, scheme) in [(true, "https"), (false, "http")] {
        match lookup_srv(server, &service(ssl)).await {
            Ok(records) => endpoints.extend(
                records
                    .into_iter()
                    .map(|r| format!("{scheme}://{}:{}", r.target, r.port)),
            ),
            Err(e) => errors.push(e),
        }
    }
    if errors.len() == 2 {
        return Err(CtlError::error(format!(
            "dns lookup errors: {} and {}",
            errors[0], errors[1]
        )));
    }
    if insecure {
        return Ok(endpoints);
    }
    Ok(endpoints
        .into_iter()
        .filter(|ep| {
            let plain = ep.starts_with("http://");
            if plain {
                eprintln!("ignoring discovered insecure endpoint \"{ep}\"");
            }
            !plain
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response to `query(7, "_etcd-client._tcp.example.com")` with two
    /// records, the second target compressed against the first.
    fn response() -> Vec<u8> {
        let mut m = query(7, "_etcd-client._tcp.example.com");
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = 2; // two answers
        let answer = |m: &mut Vec<u8>, prio: u16, weight: u16, port: u16, target: &[u8]| {
            m.extend([0xc0, 12]); // the question's name
            m.extend(TYPE_SRV.to_be_bytes());
            m.extend(CLASS_IN.to_be_bytes());
            m.extend([0, 0, 0, 60]);
            m.extend(u16::try_from(6 + target.len()).unwrap_or(0).to_be_bytes());
            m.extend(prio.to_be_bytes());
            m.extend(weight.to_be_bytes());
            m.extend(port.to_be_bytes());
            m.extend(target);
        };
        answer(&mut m, 10, 5, 2379, b"\x05infra\x07example\x03com\x00");
        // "infra0" + pointer to "example.com" inside the first target
        let first_target = m.len() - 19;
        let mut second = b"\x06infra0".to_vec();
        second.extend([0xc0, u8::try_from(first_target + 6).unwrap_or(0)]);
        answer(&mut m, 0, 0, 2380, &second);
        m
    }

    #[test]
    fn srv_answers_are_read_and_sorted() {
        let records = parse_response(7, &response()).unwrap_or_default();
        assert_eq!(
            records,
            [
                Srv {
                    priority: 0,
                    weight: 0,
                    port: 2380,
                    target: "infra0.example.com.".into()
                },
                Srv {
                    priority: 10,
                    weight: 5,
                    port: 2379,
                    target: "infra.example.com.".into()
                },
            ]
        );
    }

    #[test]
    fn errors_read_as_go_does() {
        let mut nx = query(9, "x.invalid");
        nx[3] = 0x83;
        assert_eq!(parse_response(9, &nx), Err("no such host"));
        assert_eq!(parse_response(8, &nx), Err("server misbehaving"));
        let mut fail = query(9, "x.invalid");
        fail[3] = 0x82;
        assert_eq!(parse_response(9, &fail), Err("server misbehaving"));
    }

    /// A nameserver on a local port that knows only the plain service's
    /// records (the TLS one does not exist).
    #[test]
    fn endpoints_from_a_nameserver() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        runtime.block_on(async {
            let dns = tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let server = dns.local_addr().unwrap_or_else(|e| panic!("{e}"));
            let answer = async {
                let mut buf = [0_u8; 512];
                for _ in 0..2 {
                    let (n, from) = dns
                        .recv_from(&mut buf)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    let id = u16_at(&buf, 0).unwrap_or(0);
                    let asked = read_name(&buf[..n], 12).map(|(name, _)| name);
                    let mut reply = if asked.as_deref() == Some("_etcd-client._tcp.example.com.") {
                        response()
                    } else {
                        let mut nx = buf[..n].to_vec();
                        nx[3] = 0x83;
                        nx
                    };
                    reply[..2].copy_from_slice(&id.to_be_bytes());
                    let _ = dns.send_to(&reply, from).await;
                }
            };
            let (found, ()) = tokio::join!(endpoints("example.com", "", true, server), answer);
            assert_eq!(
                found.unwrap_or_default(),
                [
                    "http://infra0.example.com.:2380",
                    "http://infra.example.com.:2379"
                ]
            );
        });
    }

    #[test]
    fn nameserver_from_resolv_conf() {
        assert_eq!(
            nameserver("# c\nsearch x\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n"),
            SocketAddr::from(([10, 0, 0, 2], 53))
        );
        assert_eq!(nameserver(""), SocketAddr::from(([127, 0, 0, 1], 53)));
    }
}
