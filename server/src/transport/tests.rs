//! Transport tests: real members on 127.0.0.1 exchanging raft messages.

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use raft::eraftpb::{Message, MessageType};
use tokio::sync::oneshot;
use tonic::service::Routes;

use super::link::snapshot_chunks;
use super::*;
use crate::config::TlsSettings;
use crate::listener;
use crate::tls::tests::TestPki;
use crate::tls::{self, AutoTls, TlsConfigs};

/// How long any expected event may take; generous because the machine is shared.
const PATIENCE: Duration = Duration::from_secs(15);

struct Member {
    transport: PeerTransport,
    inbound: Receiver<Inbound>,
    url: Url,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
}

impl Member {
    /// Starts a member on a fresh port; `tls` decides http or https.
    async fn start(id: u64, cluster_id: u64, tls: Option<TlsConfigs>) -> Self {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = Url::parse(&format!("{scheme}://127.0.0.1:0")).unwrap();
        let bound = listener::bind(&url).await.unwrap();
        Self::serve_on(id, cluster_id, tls, bound)
    }

    fn serve_on(
        id: u64,
        cluster_id: u64,
        tls: Option<TlsConfigs>,
        bound: listener::BoundListener,
    ) -> Self {
        let (inbound_tx, inbound) = std::sync::mpsc::channel();
        let transport = PeerTransport::new(
            id,
            cluster_id,
            tls.as_ref().map(|t| t.client.clone()),
            inbound_tx,
        );
        let url = bound.bound_url();
        let routes = Routes::new(transport.service(move || MemberInfoResponse {
            member_id: id,
            cluster_id,
            ..Default::default()
        }));
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(listener::serve(
            bound,
            tls.map(|t| t.server),
            routes,
            None,
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            transport,
            inbound,
            url,
            stop: Some(stop),
            served: Some(served),
        }
    }

    /// Stops serving (open peer streams are ended) and waits until the port is closed.
    async fn shut_down(&mut self) {
        self.transport.stop();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            tokio::time::timeout(PATIENCE, served)
                .await
                .expect("the listener stops")
                .unwrap();
        }
    }

    /// The next inbound event, waiting at most [`PATIENCE`].
    async fn next_event(&self) -> Inbound {
        self.next_event_within(PATIENCE)
            .await
            .expect("an inbound event in time")
    }

    async fn next_event_within(&self, patience: Duration) -> Option<Inbound> {
        let deadline = Instant::now() + patience;
        loop {
            match self.inbound.try_recv() {
                Ok(event) => return Some(event),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
                Err(std::sync::mpsc::TryRecvError::Empty) if Instant::now() >= deadline => {
                    return None;
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }

    /// The next message received, skipping reports.
    async fn next_message(&self) -> Message {
        loop {
            if let Inbound::Message(message) = self.next_event().await {
                return message;
            }
        }
    }

    /// The events delivered so far and not yet read, without waiting. Once the member is
    /// [shut down](Member::shut_down) (its listener has finished every connection, and
    /// the service delivers inside the connection's task) this is everything it will
    /// ever have received: absence shown by state, not by a quiet spell.
    fn delivered(&self) -> Vec<Inbound> {
        std::iter::from_fn(|| self.inbound.try_recv().ok()).collect()
    }
}

fn append(from: u64, to: u64, index: u64) -> Message {
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgAppend);
    message.from = from;
    message.to = to;
    message.term = 3;
    message.index = index;
    message
}

fn snapshot_message(from: u64, to: u64, data: Vec<u8>) -> Message {
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgSnapshot);
    message.from = from;
    message.to = to;
    message.term = 5;
    let snapshot = message.mut_snapshot();
    snapshot.mut_metadata().index = 42;
    snapshot.mut_metadata().term = 4;
    snapshot.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
    snapshot.set_data(data.into());
    message
}

/// Sends `message` every 50 ms (as raft would retry) until `receiver` gets a message from
/// `message.from`; returns it.
async fn send_until_received(
    sender: &PeerTransport,
    receiver: &Member,
    message: &Message,
) -> Message {
    let deadline = Instant::now() + PATIENCE;
    loop {
        sender.send(vec![message.clone()]);
        if let Some(Inbound::Message(received)) =
            receiver.next_event_within(Duration::from_millis(50)).await
            && received.from == message.from
        {
            return received;
        }
        assert!(Instant::now() < deadline, "no message got through");
    }
}

/// Sends `marker` every 50 ms (as raft would retry) until `receiver` gets it (same
/// sender, type and index); returns the sender's messages that arrived before it.
///
/// A link delivers in order, so a message the sender queued for this link before the
/// marker either arrived before it (and is in the result) or never will: asserting it
/// is absent from the result proves it was not delivered, however fast or slow the
/// machine.
async fn messages_before_marker(
    sender: &PeerTransport,
    receiver: &Member,
    marker: &Message,
) -> Vec<Message> {
    let is_marker = |m: &Message| {
        (m.from, m.get_msg_type(), m.index) == (marker.from, marker.get_msg_type(), marker.index)
    };
    let deadline = Instant::now() + PATIENCE;
    let mut before = Vec::new();
    loop {
        sender.send(vec![marker.clone()]);
        if let Some(Inbound::Message(received)) =
            receiver.next_event_within(Duration::from_millis(50)).await
            && received.from == marker.from
        {
            if is_marker(&received) {
                return before;
            }
            before.push(received);
        }
        assert!(Instant::now() < deadline, "the marker never got through");
    }
}

async fn wait_for_unreachable(member: &Member, peer: u64) {
    loop {
        if let Inbound::Unreachable(id) = member.next_event().await {
            assert_eq!(id, peer);
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_exchange_messages_in_order() {
    let mut a = Member::start(1, 77, None).await;
    let mut b = Member::start(2, 77, None).await;
    a.transport.add_peer(2, vec![b.url.clone()]);
    b.transport.add_peer(1, vec![a.url.clone()]);

    // The first batch may race the connection; what arrives must still be in order.
    // Late copies of the retried first message may follow it; the loop below skips them
    // (they were queued before the batch, so they cannot come after any of it).
    let first = send_until_received(&a.transport, &b, &append(1, 2, 0)).await;
    assert_eq!(first.index, 0);

    a.transport
        .send((1..=1000).map(|index| append(1, 2, index)).collect());
    for index in 1..=1000 {
        let mut message = b.next_message().await;
        while message.index == 0 {
            // A late copy of the first, retried message.
            message = b.next_message().await;
        }
        assert_eq!((message.from, message.to, message.index), (1, 2, index));
        assert_eq!(message.get_msg_type(), MessageType::MsgAppend);
    }
    assert!(a.transport.is_active(2));

    let reply = send_until_received(&b.transport, &a, &append(2, 1, 9)).await;
    assert_eq!(reply.index, 9);

    a.shut_down().await;
    b.shut_down().await;
}

/// Member 2 does not know member 1 (say, it restarted before it applied the change that
/// added 1): 1's calls name 1's peer URLs, so 2 answers at them (etcd's remote peers),
/// unless 1 was removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_the_member_does_not_know_is_answered_at_the_urls_its_call_names() {
    let mut a = Member::start(1, 77, None).await;
    let mut b = Member::start(2, 77, None).await;
    let mut c = Member::start(3, 77, None).await;
    a.transport
        .set_advertised_peer_urls(std::slice::from_ref(&a.url));
    c.transport
        .set_advertised_peer_urls(std::slice::from_ref(&c.url));
    assert_eq!(b.transport.peer_ids(), Vec::<u64>::new());
    // Without having called, 1 is unknown to 2: what 2 sends it goes nowhere.
    b.transport.send(vec![append(2, 1, 1)]);
    wait_for_unreachable(&b, 1).await;

    a.transport.add_peer(2, vec![b.url.clone()]);
    send_until_received(&a.transport, &b, &append(1, 2, 1)).await;
    assert_eq!(b.transport.peer_ids(), vec![1]);
    let reply = send_until_received(&b.transport, &a, &append(2, 1, 7)).await;
    assert_eq!(reply.index, 7);

    // A removed member calling is refused, not made a remote.
    b.transport.mark_removed(3);
    c.transport.add_peer(2, vec![b.url.clone()]);
    c.transport.send(vec![append(3, 2, 1)]);
    wait_for_unreachable(&c, 2).await;
    assert_eq!(b.transport.peer_ids(), vec![1]);

    a.shut_down().await;
    b.shut_down().await;
    c.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_peer_is_unreachable_and_reconnects_when_it_comes_back() {
    let mut a = Member::start(1, 77, None).await;
    // Reserve a port for member 2, then close it: nothing listens there yet.
    let reserved = listener::bind(&Url::parse("http://127.0.0.1:0").unwrap())
        .await
        .unwrap();
    let b_url = reserved.bound_url();
    drop(reserved);

    a.transport.add_peer(2, vec![b_url.clone()]);
    a.transport.send(vec![append(1, 2, 1)]);
    wait_for_unreachable(&a, 2).await;
    assert!(!a.transport.is_active(2));

    let mut b = Member::serve_on(2, 77, None, listener::bind(&b_url).await.unwrap());
    let received = send_until_received(&a.transport, &b, &append(1, 2, 2)).await;
    assert_eq!(received.index, 2);
    assert!(a.transport.is_active(2));
    // The link reports only while disconnected, and it is connected (a message just
    // came through it): every report from before is already in the channel.
    let stale = a.delivered();
    assert!(
        stale.iter().all(|e| matches!(e, Inbound::Unreachable(2))),
        "{stale:?}"
    );

    // Member 2 goes away again: its stream breaks and member 1 is told. (The link
    // reports before it marks itself inactive, so wait for both.)
    b.shut_down().await;
    let deadline = Instant::now() + PATIENCE;
    let mut told = false;
    while !told || a.transport.is_active(2) {
        a.transport.send(vec![append(1, 2, 3)]);
        if let Some(Inbound::Unreachable(2)) = a.next_event_within(Duration::from_millis(50)).await
        {
            told = true;
        }
        assert!(
            Instant::now() < deadline,
            "never reported unreachable (told: {told})"
        );
    }
    a.shut_down().await;
}

#[tokio::test(flavor = "current_thread")]
async fn full_queues_and_unknown_peers_are_reported_at_once() {
    let a = Member::start(1, 77, None).await;
    // Port 9 (discard) on loopback: nothing listens, and on a current-thread runtime the
    // peer task cannot run while `send` fills its queue.
    a.transport
        .add_peer(2, vec![Url::parse("http://127.0.0.1:9").unwrap()]);
    let batch: Vec<Message> = (0..PEER_QUEUE_CAPACITY as u64 + 10)
        .map(|index| append(1, 2, index))
        .collect();
    a.transport.send(batch);
    assert!(matches!(a.inbound.try_recv(), Ok(Inbound::Unreachable(2))));
    assert!(a.inbound.try_recv().is_err(), "one report per send call");

    a.transport.send(vec![append(1, 3, 1)]);
    assert!(matches!(a.inbound.try_recv(), Ok(Inbound::Unreachable(3))));
    a.transport
        .send(vec![snapshot_message(1, 3, vec![1, 2, 3])]);
    assert!(matches!(
        a.inbound.try_recv(),
        Ok(Inbound::SnapshotReport {
            to: 3,
            delivered: false
        })
    ));
}

#[test]
fn snapshots_are_cut_into_chunks_with_offsets() {
    let data = bytes::Bytes::from(vec![7u8; 3 * SNAPSHOT_CHUNK_BYTES + 5]);
    let chunks: Vec<_> = snapshot_chunks(b"header".to_vec(), data).collect();
    assert_eq!(chunks.len(), 4);
    assert_eq!(chunks[0].message, b"header");
    assert!(chunks[1..].iter().all(|c| c.message.is_empty()));
    let offsets: Vec<u64> = chunks.iter().map(|c| c.offset).collect();
    let step = SNAPSHOT_CHUNK_BYTES as u64;
    assert_eq!(offsets, vec![0, step, 2 * step, 3 * step]);
    assert_eq!(chunks[3].data.len(), 5);
    assert_eq!(
        chunks.iter().map(|c| c.last).collect::<Vec<_>>(),
        vec![false, false, false, true]
    );

    let empty: Vec<_> = snapshot_chunks(b"h".to_vec(), bytes::Bytes::new()).collect();
    assert_eq!(empty.len(), 1);
    assert!(empty[0].last && empty[0].data.is_empty() && empty[0].message == b"h");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_snapshot_arrives_intact_and_is_reported_delivered() {
    let mut a = Member::start(1, 77, None).await;
    let mut b = Member::start(2, 77, None).await;
    a.transport.add_peer(2, vec![b.url.clone()]);

    let data: Vec<u8> = (0..3 * 1024 * 1024 + 123)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let sent = snapshot_message(1, 2, data);
    a.transport.send(vec![sent.clone()]);

    loop {
        match a.next_event().await {
            Inbound::SnapshotReport { to, delivered } => {
                assert_eq!((to, delivered), (2, true));
                break;
            }
            Inbound::Unreachable(_) => continue,
            Inbound::Message(other) => panic!("unexpected message {other:?}"),
        }
    }
    let received = b.next_message().await;
    assert_eq!(received, sent, "metadata and all data arrive unchanged");

    // A snapshot to a peer that is down is reported as not delivered.
    let reserved = listener::bind(&Url::parse("http://127.0.0.1:0").unwrap())
        .await
        .unwrap();
    a.transport.add_peer(3, vec![reserved.bound_url()]);
    drop(reserved);
    a.transport.send(vec![snapshot_message(1, 3, vec![9; 10])]);
    loop {
        if let Inbound::SnapshotReport { to, delivered } = a.next_event().await {
            assert_eq!((to, delivered), (3, false));
            break;
        }
    }
    a.shut_down().await;
    b.shut_down().await;
}

fn auto_tls(dir: &std::path::Path) -> TlsConfigs {
    let settings = TlsSettings {
        auto_tls: true,
        ..Default::default()
    };
    let auto = AutoTls {
        dir: dir.to_path_buf(),
        hosts: vec!["127.0.0.1".into()],
        validity_years: 1,
    };
    tls::build(&settings, &auto).unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_and_snapshots_flow_between_auto_tls_members() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Member::start(1, 77, Some(auto_tls(dirs.0.path()))).await;
    let mut b = Member::start(2, 77, Some(auto_tls(dirs.1.path()))).await;
    assert_eq!(a.url.scheme(), "https");
    a.transport.add_peer(2, vec![b.url.clone()]);
    b.transport.add_peer(1, vec![a.url.clone()]);

    send_until_received(&a.transport, &b, &append(1, 2, 1)).await;
    send_until_received(&b.transport, &a, &append(2, 1, 1)).await;

    let sent = snapshot_message(1, 2, vec![5; 2 * SNAPSHOT_CHUNK_BYTES + 1]);
    a.transport.send(vec![sent.clone()]);
    loop {
        if let Inbound::SnapshotReport { to, delivered } = a.next_event().await {
            assert_eq!((to, delivered), (2, true));
            break;
        }
    }
    loop {
        let message = b.next_message().await;
        if message.get_msg_type() == MessageType::MsgSnapshot {
            assert_eq!(message, sent);
            break;
        }
    }
    a.shut_down().await;
    b.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cert_auth_refuses_peers_without_a_valid_certificate() {
    let pki = TestPki::new();
    let build = |name: &str, serial: u64| {
        let leaf = pki.leaf(name, name, &["127.0.0.1", "localhost"], serial);
        tls::build(&pki.settings(&leaf, true), &AutoTls::default())
            .unwrap()
            .unwrap()
    };
    let mut b = Member::start(2, 77, Some(build("b", 2))).await;
    let mut trusted = Member::start(1, 77, Some(build("a", 1))).await;
    trusted.transport.add_peer(2, vec![b.url.clone()]);
    let received = send_until_received(&trusted.transport, &b, &append(1, 2, 1)).await;
    assert_eq!(received.from, 1);

    // Member 3 has a self-signed (auto TLS) certificate: member 2 refuses it.
    let dir = tempfile::tempdir().unwrap();
    let mut stranger = Member::start(3, 77, Some(auto_tls(dir.path()))).await;
    stranger.transport.add_peer(2, vec![b.url.clone()]);
    stranger.transport.send(vec![append(3, 2, 1)]);
    wait_for_unreachable(&stranger, 2).await;
    stranger.transport.send(vec![append(3, 2, 2)]);
    wait_for_unreachable(&stranger, 2).await;
    assert!(!stranger.transport.is_active(2));

    // Once member 2 has shut down, everything its service ever delivered is in its
    // channel: nothing came from the refused peer.
    stranger.shut_down().await;
    trusted.shut_down().await;
    b.shut_down().await;
    let from_stranger: Vec<_> = b
        .delivered()
        .into_iter()
        .filter(|e| matches!(e, Inbound::Message(m) if m.from == 3))
        .collect();
    assert!(
        from_stranger.is_empty(),
        "messages from the refused peer arrived: {from_stranger:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_another_cluster_are_refused() {
    let mut a = Member::start(1, 77, None).await;
    let mut b = Member::start(2, 88, None).await;
    a.transport.add_peer(2, vec![b.url.clone()]);
    a.transport.send(vec![append(1, 2, 1)]);
    wait_for_unreachable(&a, 2).await;

    // Once member 2 learns it is in cluster 77 after all, messages go through, and the
    // refused one is not among them: it was queued on the same link before the marker,
    // so it would have arrived first.
    b.transport.set_cluster_id(77);
    let before = messages_before_marker(&a.transport, &b, &append(1, 2, 2)).await;
    assert!(before.is_empty(), "refused messages arrived: {before:?}");
    a.shut_down().await;
    b.shut_down().await;
    let refused: Vec<_> = b
        .delivered()
        .into_iter()
        .filter(|e| matches!(e, Inbound::Message(m) if m.index == 1))
        .collect();
    assert!(refused.is_empty(), "a refused message arrived: {refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_info_answers_and_removed_peers_get_nothing() {
    let mut a = Member::start(1, 77, None).await;
    let mut b = Member::start(2, 77, None).await;
    let info = fetch_member_info(&b.url, None).await.unwrap();
    assert_eq!((info.member_id, info.cluster_id), (2, 77));

    a.transport.add_peer(2, vec![b.url.clone()]);
    send_until_received(&a.transport, &b, &append(1, 2, 1)).await;
    a.transport.remove_peer(2);
    assert!(a.transport.peer_ids().is_empty());
    a.transport.send(vec![append(1, 2, 2)]);
    loop {
        // Reports from before the connection may come first; all are about member 2.
        if let Inbound::Unreachable(id) = a.next_event().await {
            assert_eq!(id, 2);
            break;
        }
    }
    // Added back, member 2 gets a marker, and nothing sent while it was removed came
    // before it (had the old link lived on, the message would be queued ahead of it).
    a.transport.add_peer(2, vec![b.url.clone()]);
    let before = messages_before_marker(&a.transport, &b, &append(1, 2, 3)).await;
    assert!(
        before.iter().all(|m| m.index == 1),
        "only late copies of the first message may precede the marker: {before:?}"
    );
    a.shut_down().await;
    b.shut_down().await;
    let sent_while_removed: Vec<_> = b
        .delivered()
        .into_iter()
        .filter(|e| matches!(e, Inbound::Message(m) if m.index == 2))
        .collect();
    assert!(
        sent_while_removed.is_empty(),
        "a message to a removed peer was sent: {sent_while_removed:?}"
    );
}

/// Records what a transport reports, and whether a peer refused it as removed.
struct RemovalSink {
    events: std::sync::mpsc::Sender<Inbound>,
    removed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl InboundSink for RemovalSink {
    fn deliver(&self, event: Inbound) -> bool {
        self.events.send(event).is_ok()
    }

    fn removed_from_cluster(&self) {
        self.removed
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Member 2 removes member 1 while 1's stream to it is open and idle: 2 ends the stream
/// at once and 1 learns it was removed without sending anything more (as etcd's member
/// learns it from its refused stream dial), instead of at its next message, which a
/// removed follower that hears nothing sends only at its election timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_of_a_member_removed_is_ended_and_the_member_told_at_once() {
    let (events, _received) = std::sync::mpsc::channel();
    let removed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let a = PeerTransport::new(
        1,
        77,
        None,
        RemovalSink {
            events,
            removed: removed.clone(),
        },
    );
    let mut b = Member::start(2, 77, None).await;
    a.add_peer(2, vec![b.url.clone()]);
    send_until_received(&a, &b, &append(1, 2, 1)).await;
    assert!(!removed.load(std::sync::atomic::Ordering::SeqCst));

    b.transport.mark_removed(1);
    let deadline = Instant::now() + PATIENCE;
    while !removed.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "member 1 was never told");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.stop();
    b.shut_down().await;
}
