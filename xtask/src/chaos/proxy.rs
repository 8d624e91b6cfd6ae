//! The network between members: one TCP proxy in front of each member's peer listener, and the
//! faults the nemesis puts on the links between members.
//!
//! Member `t` advertises its proxy's port as its peer URL, so every peer connection to it is
//! accepted by the proxy, which dials `t`'s real peer port and forwards bytes both ways. On
//! accept the proxy finds which member dialed (see [`super::identify`]); the connection then
//! belongs to the link between the dialer and `t`, and obeys that link's fault:
//!
//! - blackhole: bytes are held (nothing is forwarded in either direction, connections stay open,
//!   new ones are accepted and held too) until the link heals, when they flow again, as TCP
//!   retransmission would deliver them after a partition ends;
//! - delay: each chunk is forwarded no earlier than its arrival plus the latency;
//! - drop: existing connections are cut and new ones closed right after accept.
//!
//! Faults live in a [`Links`] table behind a `tokio::sync::watch` channel: every connection sees
//! a change at once. A connection whose dialer is unknown (not a member) is never faulted; the
//! statistics count them so a failing identification does not go unnoticed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::identify;

/// Chunks read but not yet written, per direction of a connection: the proxy's buffer while a
/// link is blackholed or slow (then the sender's TCP window fills and it waits).
const CHUNKS_IN_FLIGHT: usize = 64;
const CHUNK_BYTES: usize = 64 * 1024;

/// What is wrong with a link between two members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkFault {
    Blackhole,
    Delay(Duration),
    Drop,
}

/// The fault of every link, by unordered member pair; links not listed are healthy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Links(BTreeMap<(usize, usize), LinkFault>);

impl Links {
    fn pair(a: usize, b: usize) -> (usize, usize) {
        (a.min(b), a.max(b))
    }

    pub fn set(&mut self, a: usize, b: usize, fault: LinkFault) {
        if a != b {
            self.0.insert(Self::pair(a, b), fault);
        }
    }

    pub fn get(&self, a: usize, b: usize) -> Option<LinkFault> {
        self.0.get(&Self::pair(a, b)).copied()
    }

    /// `fault` on every link between a member of `group` and a member outside it.
    pub fn around(group: &[usize], members: usize, fault: LinkFault) -> Links {
        let mut links = Links::default();
        for &inside in group {
            for outside in (0..members).filter(|m| !group.contains(m)) {
                links.set(inside, outside, fault);
            }
        }
        links
    }

    /// `fault` on every link of the cluster.
    pub fn all(members: usize, fault: LinkFault) -> Links {
        let mut links = Links::default();
        for a in 0..members {
            for b in a + 1..members {
                links.set(a, b, fault);
            }
        }
        links
    }
}

/// Counters of what the proxies did, for the run's summary.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub accepted: AtomicU64,
    /// Connections whose dialer was not found among the members' processes.
    pub unidentified: AtomicU64,
    /// Connections closed at accept because their link was dropped.
    pub refused: AtomicU64,
    /// Open connections cut when their link was dropped.
    pub cut: AtomicU64,
    pub bytes: AtomicU64,
}

/// The shared state of all proxies.
#[derive(Debug)]
pub struct Network {
    links: watch::Sender<Links>,
    /// Each member's pid while it runs: how a dialer is recognised.
    pids: RwLock<Vec<Option<u32>>>,
    pub stats: ProxyStats,
    /// Prints connections whose dialer is unknown.
    verbose: bool,
    /// Set while the cluster stops: connections from dying members are closed unexamined.
    closing: AtomicBool,
}

impl Network {
    pub fn new(members: usize, verbose: bool) -> Arc<Network> {
        Arc::new(Network {
            links: watch::Sender::new(Links::default()),
            pids: RwLock::new(vec![None; members]),
            stats: ProxyStats::default(),
            verbose,
            closing: AtomicBool::new(false),
        })
    }

    /// Replaces every link's fault at once.
    pub fn set_links(&self, links: Links) {
        self.links.send_replace(links);
    }

    pub fn heal(&self) {
        self.set_links(Links::default());
    }

    /// From now on new connections are closed at once (the cluster is being stopped).
    pub fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    pub fn set_pid(&self, member: usize, pid: Option<u32>) {
        if let Ok(mut pids) = self.pids.write()
            && let Some(slot) = pids.get_mut(member)
        {
            *slot = pid;
        }
    }

    fn member_pids(&self) -> Vec<(usize, u32)> {
        self.pids
            .read()
            .map(|pids| {
                pids.iter()
                    .enumerate()
                    .filter_map(|(member, pid)| pid.map(|pid| (member, pid)))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn fault(links: &Links, dialer: Option<usize>, target: usize) -> Option<LinkFault> {
        dialer.and_then(|dialer| links.get(dialer, target))
    }
}

/// Binds one proxy listener per member on a free port; their ports become the members'
/// advertised peer ports.
pub fn bind(members: usize) -> Result<Vec<std::net::TcpListener>> {
    (0..members)
        .map(|_| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind a proxy")?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .collect()
}

/// Serves the proxy in front of member `target` (whose real peer listener is `upstream`) until
/// the runtime shuts down.
pub fn spawn(
    listener: std::net::TcpListener,
    target: usize,
    upstream: SocketAddr,
    network: Arc<Network>,
) -> Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let proxy_port = listener.local_addr()?.port();
    tokio::spawn(async move {
        loop {
            let Ok((inbound, from)) = listener.accept().await else {
                // EMFILE and the like: let the process breathe, the members will redial.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            tokio::spawn(serve(
                inbound,
                from,
                proxy_port,
                target,
                upstream,
                network.clone(),
            ));
        }
    });
    Ok(())
}

async fn find_dialer(source_port: u16, proxy_port: u16, network: &Network) -> Option<usize> {
    // A member restarted a moment ago may dial before its pid is published: look again a few
    // times before giving up (an unidentified connection escapes every fault).
    for attempt in 0..5 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
        }
        let members = network.member_pids();
        let found = tokio::task::spawn_blocking(move || {
            identify::dialer(source_port, proxy_port, &members)
        })
        .await
        .ok()
        .flatten();
        if found.is_some() {
            return found;
        }
    }
    None
}

async fn serve(
    inbound: TcpStream,
    from: SocketAddr,
    proxy_port: u16,
    target: usize,
    upstream: SocketAddr,
    network: Arc<Network>,
) {
    if network.closing.load(Ordering::Relaxed) {
        return;
    }
    network.stats.accepted.fetch_add(1, Ordering::Relaxed);
    let dialer = find_dialer(from.port(), proxy_port, &network).await;
    if dialer.is_none() {
        network.stats.unidentified.fetch_add(1, Ordering::Relaxed);
        if network.verbose {
            println!("proxy: the connection from {from} to m{target} is not from a member");
        }
    }
    let mut links = network.links.subscribe();
    let dropped = |links: &Links| Network::fault(links, dialer, target) == Some(LinkFault::Drop);
    if dropped(&links.borrow_and_update()) {
        network.stats.refused.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let Ok(outbound) = TcpStream::connect(upstream).await else {
        // The member is down: closing the accepted connection is what the dialer would see.
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (inbound_read, inbound_write) = inbound.into_split();
    let (outbound_read, outbound_write) = outbound.into_split();
    let mut forward = tokio::spawn(pump(
        inbound_read,
        outbound_write,
        dialer,
        target,
        network.clone(),
    ));
    let mut backward = tokio::spawn(pump(
        outbound_read,
        inbound_write,
        dialer,
        target,
        network.clone(),
    ));
    let (mut forward_done, mut backward_done) = (false, false);
    // The connection lives while a direction still runs cleanly; a failed direction (reset,
    // write error) ends both, as it would end a real TCP connection.
    while !(forward_done && backward_done) {
        tokio::select! {
            clean = &mut forward, if !forward_done => {
                forward_done = true;
                if !clean.unwrap_or(false) { break; }
            }
            clean = &mut backward, if !backward_done => {
                backward_done = true;
                if !clean.unwrap_or(false) { break; }
            }
            changed = links.changed() => {
                if changed.is_err() { break; }
                if dropped(&links.borrow_and_update()) {
                    network.stats.cut.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    forward.abort();
    backward.abort();
}

/// Forwards one direction of a connection, chunk by chunk, obeying the link's fault. Returns
/// whether it ended cleanly (end of stream passed on).
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    dialer: Option<usize>,
    target: usize,
    network: Arc<Network>,
) -> bool {
    // `None` marks the end of the stream, which is held and delayed like data.
    let (chunks_tx, mut chunks_rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>(CHUNKS_IN_FLIGHT);
    let reader = async move {
        let mut buffer = vec![0u8; CHUNK_BYTES];
        loop {
            match from.read(&mut buffer).await {
                Ok(0) => {
                    let _ = chunks_tx.send((Instant::now(), None)).await;
                    return;
                }
                Ok(n) => {
                    let chunk = buffer[..n].to_vec();
                    if chunks_tx.send((Instant::now(), Some(chunk))).await.is_err() {
                        return;
                    }
                }
                // Dropping the sender ends the writer once it has drained what was read.
                Err(_) => return,
            }
        }
    };
    let writer = async {
        let mut links = network.links.subscribe();
        while let Some((read_at, chunk)) = chunks_rx.recv().await {
            loop {
                let fault = Network::fault(&links.borrow_and_update(), dialer, target);
                match fault {
                    Some(LinkFault::Blackhole | LinkFault::Drop) => {
                        if links.changed().await.is_err() {
                            return false;
                        }
                    }
                    Some(LinkFault::Delay(latency)) if Instant::now() < read_at + latency => {
                        tokio::select! {
                            _ = tokio::time::sleep_until(read_at + latency) => {}
                            changed = links.changed() => if changed.is_err() { return false; }
                        }
                    }
                    _ => break,
                }
            }
            let Some(bytes) = chunk else {
                let _ = to.shutdown().await;
                return true;
            };
            if to.write_all(&bytes).await.is_err() {
                return false;
            }
            network
                .stats
                .bytes
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        false
    };
    tokio::pin!(reader);
    tokio::pin!(writer);
    let mut reader_done = false;
    loop {
        tokio::select! {
            () = &mut reader, if !reader_done => reader_done = true,
            clean = &mut writer => return clean,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_unordered_pairs() {
        let mut links = Links::default();
        links.set(2, 0, LinkFault::Blackhole);
        assert_eq!(links.get(0, 2), Some(LinkFault::Blackhole));
        assert_eq!(links.get(2, 0), Some(LinkFault::Blackhole));
        assert_eq!(links.get(0, 1), None);
        links.set(1, 1, LinkFault::Drop);
        assert_eq!(links.get(1, 1), None, "a member has no link to itself");
    }

    #[test]
    fn around_a_group_cuts_it_from_the_rest_only() {
        let links = Links::around(&[0, 1], 5, LinkFault::Blackhole);
        assert_eq!(links.get(0, 1), None, "inside the group stays connected");
        assert_eq!(links.get(2, 3), None, "so does the rest");
        for inside in [0, 1] {
            for outside in [2, 3, 4] {
                assert_eq!(links.get(inside, outside), Some(LinkFault::Blackhole));
            }
        }
        assert_eq!(Links::all(3, LinkFault::Drop).0.len(), 3);
        assert_eq!(Links::default(), Links(BTreeMap::new()));
    }

    /// A proxy in front of an echo server, dialed by this process registered as member 0.
    async fn echo_behind_proxy() -> (Arc<Network>, TcpStream) {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    loop {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if conn.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        let network = Network::new(2, false);
        network.set_pid(0, Some(std::process::id()));
        let listener = bind(1).unwrap().pop().unwrap();
        let port = listener.local_addr().unwrap().port();
        spawn(listener, 1, upstream, network.clone()).unwrap();
        let conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        (network, conn)
    }

    async fn round_trip(conn: &mut TcpStream, text: &[u8]) -> Vec<u8> {
        conn.write_all(text).await.unwrap();
        let mut got = vec![0u8; text.len()];
        conn.read_exact(&mut got).await.unwrap();
        got
    }

    #[tokio::test]
    async fn forwards_and_identifies_the_dialer() {
        let (network, mut conn) = echo_behind_proxy().await;
        assert_eq!(round_trip(&mut conn, b"hello").await, b"hello");
        assert_eq!(network.stats.accepted.load(Ordering::Relaxed), 1);
        assert_eq!(network.stats.unidentified.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_blackhole_holds_bytes_until_healed() {
        let (network, mut conn) = echo_behind_proxy().await;
        assert_eq!(round_trip(&mut conn, b"before").await, b"before");
        network.set_links(Links::around(&[0], 2, LinkFault::Blackhole));
        conn.write_all(b"during").await.unwrap();
        let mut got = [0u8; 6];
        // Nothing may come back while the link is blackholed (the echo never even sees it).
        let held = tokio::time::timeout(Duration::from_millis(300), conn.read_exact(&mut got));
        assert!(held.await.is_err(), "bytes crossed a blackholed link");
        assert_eq!(network.stats.bytes.load(Ordering::Relaxed), 12);
        network.heal();
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"during");
    }

    #[tokio::test]
    async fn a_drop_cuts_open_connections_and_refuses_new_ones() {
        let (network, mut conn) = echo_behind_proxy().await;
        assert_eq!(round_trip(&mut conn, b"x").await, b"x");
        network.set_links(Links::all(2, LinkFault::Drop));
        let mut buf = [0u8; 1];
        // The cut shows as end of stream (or a reset) on the dialer's side.
        assert!(matches!(conn.read(&mut buf).await, Ok(0) | Err(_)));
        assert_eq!(network.stats.cut.load(Ordering::Relaxed), 1);
        let port = conn.peer_addr().unwrap().port();
        let mut again = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        assert!(matches!(again.read(&mut buf).await, Ok(0) | Err(_)));
        assert_eq!(network.stats.refused.load(Ordering::Relaxed), 1);
        network.heal();
        let mut healed = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        assert_eq!(round_trip(&mut healed, b"y").await, b"y");
    }

    #[tokio::test]
    async fn a_delay_holds_each_chunk_for_the_latency() {
        // A lower bound only: the proxy must hold each chunk at least that long, however slow
        // the machine.
        let (network, mut conn) = echo_behind_proxy().await;
        network.set_links(Links::all(2, LinkFault::Delay(Duration::from_millis(200))));
        let sent = Instant::now();
        assert_eq!(round_trip(&mut conn, b"slow").await, b"slow");
        // Both directions cross the delayed link.
        assert!(sent.elapsed() >= Duration::from_millis(400));
    }
}
