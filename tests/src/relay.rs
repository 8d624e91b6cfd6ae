//! A TCP relay in front of one port, for tests that must stop traffic at a point of their
//! choosing rather than hope to catch it there: it forwards what its clients send up to a
//! byte budget and then holds the rest (the connections stay open, nothing is lost or
//! refused) until the test opens it, and it can cut every connection it carries.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use concord_tests::relay::Relay;
//! // A member listening on 4001 is announced with peer port `relay.port`: the first MiB
//! // its peers send it gets through, then their traffic waits.
//! let relay = Relay::start(4001, Some(1024 * 1024)).await?;
//! relay.cut_and_hold();
//! relay.open();
//! # Ok(()) }
//! ```

use std::sync::{Arc, Mutex};

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinHandle};

/// Relays every connection made to `127.0.0.1:port` to `127.0.0.1:target`.
pub struct Relay {
    pub port: u16,
    shared: Arc<Shared>,
    accepting: JoinHandle<()>,
}

struct Shared {
    target: u16,
    /// Bytes still allowed towards the target, over every connection; `None`: no limit.
    budget: Mutex<Option<u64>>,
    /// Woken when the budget grows.
    opened: Notify,
    /// What the relay forwarded towards the target, over every connection.
    forwarded: Mutex<u64>,
    connections: Mutex<Vec<AbortHandle>>,
}

impl Relay {
    /// Starts relaying to `target`, letting `budget` bytes through towards it (all, if
    /// `None`). What the target sends back always passes.
    pub async fn start(target: u16, budget: Option<u64>) -> Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            target,
            budget: Mutex::new(budget),
            opened: Notify::new(),
            forwarded: Mutex::new(0),
            connections: Mutex::new(Vec::new()),
        });
        let accepting = tokio::spawn(accept(listener, shared.clone()));
        Ok(Relay {
            port,
            shared,
            accepting,
        })
    }

    /// Bytes forwarded towards the target so far.
    pub fn forwarded(&self) -> u64 {
        *lock(&self.shared.forwarded)
    }

    /// Closes every connection the relay carries, and forwards nothing more until
    /// [`Relay::open`] (new connections are accepted and wait).
    pub fn cut_and_hold(&self) {
        *lock(&self.shared.budget) = Some(0);
        for connection in lock(&self.shared.connections).drain(..) {
            connection.abort();
        }
    }

    /// Forwards everything from now on, what waited included.
    pub fn open(&self) {
        *lock(&self.shared.budget) = None;
        self.shared.opened.notify_waiters();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accepting.abort();
        for connection in lock(&self.shared.connections).drain(..) {
            connection.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        let task = tokio::spawn(relay_one(client, shared.clone()));
        let mut connections = lock(&shared.connections);
        connections.retain(|c| !c.is_finished());
        connections.push(task.abort_handle());
    }
}

async fn relay_one(client: TcpStream, shared: Arc<Shared>) {
    // A target that is not listening (yet) closes the client's connection, as the
    // target itself would refuse it.
    let Ok(target) = TcpStream::connect(("127.0.0.1", shared.target)).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (target_read, target_write) = target.into_split();
    let towards_target = forward_within_budget(client_read, target_write, &shared);
    let back = async move {
        let (mut from, mut to) = (target_read, client_write);
        let _ = tokio::io::copy(&mut from, &mut to).await;
        let _ = to.shutdown().await;
    };
    // Either side closing ends the connection.
    tokio::select! {
        () = towards_target => {}
        () = back => {}
    }
}

async fn forward_within_budget(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: &Shared,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let allowed = loop {
            // Made before the budget is read, so that an `open` in between wakes it.
            let opened = shared.opened.notified();
            match *lock(&shared.budget) {
                None => break buf.len(),
                Some(0) => {}
                Some(left) => break buf.len().min(usize::try_from(left).unwrap_or(usize::MAX)),
            }
            opened.await;
        };
        let n = match from.read(&mut buf[..allowed]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(left) = lock(&shared.budget).as_mut() {
            *left = left.saturating_sub(n as u64);
        }
        *lock(&shared.forwarded) += n as u64;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
