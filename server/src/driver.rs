//! The raft driver: one std thread that owns the raft-core `Node` and the state machine.
//! Everything else talks to it through [`RaftHandle`] (commands in, oneshot replies out);
//! it ticks on a fixed interval and handles every `Ready` with `Node::handle_ready`, whose
//! doc is the ordering contract. The waiters of proposals and reads live here, and
//! nowhere else: a proposal's outcome carries its entry's result, which goes straight to
//! its waiter. A fatal storage or apply error stops the process: a failed fsync is never
//! retried.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use concord_proto::concordpb::ApplyResult;
use concord_raft_core::{
    LogStore, Node, Outbox, ProposalError, ProposalOutcome, ProposeError, ReadError, Role,
};
use futures::channel::oneshot;
use raft::eraftpb::{ConfChangeV2, Message, MessageType};

use crate::etcd_error::EtcdError;
use crate::state::Machine;

/// What a locally proposed request is waiting for.
pub type Waiter = oneshot::Sender<Result<Completed, EtcdError>>;

/// A request applied on this member: its result and where in the log it landed.
#[derive(Debug)]
pub struct Completed {
    pub result: ApplyResult,
    pub index: u64,
    pub term: u64,
}

/// What the rest of the server asks of the driver.
pub enum Command {
    /// Propose an encoded `InternalRequest` (leader only).
    Propose { data: Vec<u8>, reply: Waiter },
    /// Propose a membership change; the reply comes once it is applied here.
    ConfChange { change: ConfChangeV2, reply: Waiter },
    /// Wait for a linearizable read point: replies once this member's applied index has
    /// reached the index the leader confirmed.
    Read {
        reply: oneshot::Sender<Result<(), EtcdError>>,
    },
    /// A raft message from a peer.
    Step(Message),
    /// The transport's report on a snapshot sent to `to`.
    SnapshotReport { to: u64, delivered: bool },
    /// A message to `to` could not be delivered.
    Unreachable(u64),
    /// Hand leadership to another member.
    TransferLeader { to: u64 },
    /// A peer says this member was removed from the cluster.
    Removed,
    /// How far each member's log matches the leader's: `None` unless this member leads.
    Progress {
        reply: oneshot::Sender<Option<Progress>>,
    },
    /// Stop the driver (the node's state is already durable).
    Shutdown,
}

/// The leader's view of replication: its own id and each member's matched index.
#[derive(Debug, Clone)]
pub struct Progress {
    pub leader_id: u64,
    pub matched: HashMap<u64, u64>,
    /// Members the leader heard from within the last election timeout.
    pub active: std::collections::HashSet<u64>,
}

impl Progress {
    /// etcd's rule for promoting a learner: its log matches at least 90% of the
    /// leader's (`isLearnerReady`). An unknown member is left to the apply-time checks.
    pub fn in_sync(&self, id: u64) -> bool {
        let leader = self.matched.get(&self.leader_id).copied().unwrap_or(0);
        self.matched
            .get(&id)
            .is_none_or(|&matched| matched as f64 >= leader as f64 * 0.9)
    }
}

/// Figures about the local node, readable from any thread without asking the driver.
#[derive(Debug, Default)]
pub struct NodeStatus {
    pub member_id: AtomicU64,
    pub leader_id: AtomicU64,
    pub term: AtomicU64,
    pub commit_index: AtomicU64,
    pub applied_index: AtomicU64,
    pub is_leader: AtomicBool,
    pub is_learner: AtomicBool,
    /// Set once the driver has stopped (after a shutdown or a fatal error).
    pub stopped: AtomicBool,
}

impl NodeStatus {
    pub fn leader(&self) -> u64 {
        self.leader_id.load(Ordering::Acquire)
    }
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Acquire)
    }
    pub fn is_leader(&self) -> bool {
        self.is_leader.load(Ordering::Acquire)
    }
}

/// The async side's handle on the driver.
#[derive(Clone)]
pub struct RaftHandle {
    commands: Sender<Command>,
    pub status: Arc<NodeStatus>,
}

impl RaftHandle {
    pub fn send(&self, command: Command) -> Result<(), EtcdError> {
        self.commands
            .send(command)
            .map_err(|_| EtcdError::stopped())
    }

    /// Proposes an encoded request (a follower hands it to the leader) and waits until
    /// it is applied on this member, so the caller's next local read sees it.
    pub async fn propose_local(&self, data: Vec<u8>) -> Result<Completed, EtcdError> {
        let (reply, receiver) = oneshot::channel();
        self.send(Command::Propose { data, reply })?;
        receiver.await.map_err(|_| EtcdError::stopped())?
    }

    /// The leader's replication progress (`None` on a follower).
    pub async fn progress(&self) -> Result<Option<Progress>, EtcdError> {
        let (reply, receiver) = oneshot::channel();
        self.send(Command::Progress { reply })?;
        receiver.await.map_err(|_| EtcdError::stopped())
    }

    /// Proposes a membership change on this member (which must lead).
    pub async fn conf_change(&self, change: ConfChangeV2) -> Result<Completed, EtcdError> {
        let (reply, receiver) = oneshot::channel();
        self.send(Command::ConfChange { change, reply })?;
        receiver.await.map_err(|_| EtcdError::stopped())?
    }

    /// Waits for a linearizable read point.
    pub async fn read_barrier(&self) -> Result<(), EtcdError> {
        let (reply, receiver) = oneshot::channel();
        self.send(Command::Read { reply })?;
        receiver.await.map_err(|_| EtcdError::stopped())?
    }

    pub fn commands(&self) -> Sender<Command> {
        self.commands.clone()
    }
}

/// Where the driver's outgoing messages go.
pub trait MessageSink: Send + 'static {
    fn send(&mut self, messages: Vec<Message>);
}

/// Hands a Ready's messages to the transport, except commit notices: those wait until the
/// round's proposals and reads are answered, so on a single async worker the client's
/// response is written before them rather than after. Later messages to a peer with one
/// waiting wait too, so each peer still gets its messages in order.
struct SinkOutbox<'a> {
    sink: &'a mut dyn MessageSink,
    commit_notices: Vec<Message>,
}

impl SinkOutbox<'_> {
    /// A leader's append without entries (it only carries the new commit index), or a
    /// follower's acceptance of entries that are already committed (the answer to such a
    /// notice): nobody's commit waits for either.
    fn is_commit_notice(message: &Message) -> bool {
        match message.get_msg_type() {
            MessageType::MsgAppend => message.get_entries().is_empty(),
            MessageType::MsgAppendResponse => !message.reject && message.index <= message.commit,
            _ => false,
        }
    }
}

impl Outbox for SinkOutbox<'_> {
    fn send(&mut self, messages: Vec<Message>) {
        let mut now = Vec::with_capacity(messages.len());
        for message in messages {
            let peer_waits = self.commit_notices.iter().any(|m| m.to == message.to);
            if peer_waits || Self::is_commit_notice(&message) {
                self.commit_notices.push(message);
            } else {
                now.push(message);
            }
        }
        if !now.is_empty() {
            self.sink.send(now);
        }
    }
}

/// How a member learned that it was removed from the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// It applied the change that removed it.
    Applied,
    /// A peer refused it as a removed member.
    RefusedByPeer,
}

/// Things the driver reports as they happen.
pub trait DriverObserver: Send + 'static {
    /// Leadership or term changed.
    fn role_changed(&mut self, role: Role, leader_id: u64, term: u64);
    /// This member was removed from the cluster: raft ignores it from now on.
    fn removed(&mut self, how: Removal);
}

/// Starts the driver thread.
pub fn spawn<S: LogStore + Send + 'static>(
    node: Node<S>,
    machine: Machine,
    sink: Box<dyn MessageSink>,
    observer: Box<dyn DriverObserver>,
    tick_interval: Duration,
    commands: (Sender<Command>, Receiver<Command>),
) -> (RaftHandle, std::thread::JoinHandle<()>) {
    let status = Arc::new(NodeStatus::default());
    let (sender, receiver) = commands;
    let handle = RaftHandle {
        commands: sender,
        status: status.clone(),
    };
    let mut driver = Driver {
        node,
        machine,
        sink,
        observer,
        status,
        waiters: HashMap::new(),
        reads: HashMap::new(),
        next_id: request_id_seed(),
        tick_interval,
        told_removed: false,
    };
    driver.publish_status();
    let thread = std::thread::Builder::new()
        .name("raft-driver".into())
        .spawn(move || driver.run(receiver))
        .unwrap_or_else(|e| {
            tracing::error!("cannot start the raft driver thread: {e}");
            std::process::exit(1);
        });
    (handle, thread)
}

/// Request ids must not repeat across restarts while an old proposal may still be in the
/// log: start from the clock, as etcd's id generator does.
fn request_id_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    nanos.max(1)
}

struct Driver<S: LogStore> {
    node: Node<S>,
    machine: Machine,
    sink: Box<dyn MessageSink>,
    observer: Box<dyn DriverObserver>,
    status: Arc<NodeStatus>,
    /// Proposals (and conf changes) made on this member, by request id.
    waiters: HashMap<u64, Waiter>,
    reads: HashMap<u64, oneshot::Sender<Result<(), EtcdError>>>,
    next_id: u64,
    tick_interval: Duration,
    told_removed: bool,
}

/// Commands handled between two Ready rounds at most; bounds the latency of a round.
const MAX_COMMANDS_PER_ROUND: usize = 4096;

impl<S: LogStore> Driver<S> {
    fn run(mut self, commands: Receiver<Command>) {
        let mut next_tick = Instant::now() + self.tick_interval;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match commands.recv_timeout(wait) {
                Ok(Command::Shutdown) => break,
                Ok(command) => {
                    self.handle(command);
                    let mut handled = 1;
                    while handled < MAX_COMMANDS_PER_ROUND {
                        match commands.try_recv() {
                            Ok(Command::Shutdown) => {
                                self.finish_round();
                                return self.stop();
                            }
                            Ok(command) => self.handle(command),
                            Err(_) => break,
                        }
                        handled += 1;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            if now >= next_tick {
                self.node.tick();
                next_tick += self.tick_interval;
                // After a long stall (a slow fsync, a paused process) do not replay the
                // missed ticks in a burst: that would fire elections at once.
                if next_tick < now {
                    next_tick = now + self.tick_interval;
                }
            }
            self.finish_round();
        }
        self.stop();
    }

    fn stop(self) {
        self.status.stopped.store(true, Ordering::Release);
    }

    fn finish_round(&mut self) {
        while self.node.has_ready() {
            let mut outbox = SinkOutbox {
                sink: self.sink.as_mut(),
                commit_notices: Vec::new(),
            };
            let outcome = match self.node.handle_ready(&mut self.machine, &mut outbox) {
                Ok(outcome) => outcome,
                Err(error) => {
                    tracing::error!("fatal raft error, stopping the member: {error}");
                    std::process::exit(1);
                }
            };
            let commit_notices = std::mem::take(&mut outbox.commit_notices);
            // Waiters find their index applied as soon as they wake.
            self.publish_status();
            let term = self.node.term();
            for proposal in outcome.proposals {
                if let Some(waiter) = self.waiters.remove(&proposal.id) {
                    let _ = waiter.send(completion(proposal, term));
                }
            }
            for read in outcome.reads {
                let Some(waiter) = self.reads.remove(&read.id) else {
                    continue;
                };
                let reply = match read.result {
                    Ok(_) => Ok(()),
                    Err(ReadError::Timeout) => {
                        metrics::counter!("etcd_server_slow_read_indexes_total").increment(1);
                        Err(EtcdError::timeout())
                    }
                    Err(_) => {
                        metrics::counter!("etcd_server_read_indexes_failed_total").increment(1);
                        Err(EtcdError::internal("read failed"))
                    }
                };
                let _ = waiter.send(reply);
            }
            if !commit_notices.is_empty() {
                self.sink.send(commit_notices);
            }
            if outcome.removed {
                self.learned_removed(Removal::Applied);
            }
            if let Some(change) = outcome.role_change {
                self.observer
                    .role_changed(change.role, change.leader_id, change.term);
            }
            self.publish_status();
        }
    }

    fn publish_status(&mut self) {
        let status = &self.status;
        status.member_id.store(self.node.id(), Ordering::Release);
        status
            .leader_id
            .store(self.node.leader_id(), Ordering::Release);
        status.term.store(self.node.term(), Ordering::Release);
        status
            .commit_index
            .store(self.node.commit_index(), Ordering::Release);
        status
            .is_leader
            .store(self.node.is_leader(), Ordering::Release);
        status.is_learner.store(
            self.node.learners().contains(&self.node.id()),
            Ordering::Release,
        );
        status
            .applied_index
            .store(self.node.applied_index(), Ordering::Release);
    }

    fn next_request_id(&mut self) -> u64 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    /// This member learned it was removed from the cluster (by applying its removal, or
    /// from a peer refusing it): the observer is told once, and every request waiting
    /// here is answered now, as etcd answers what is pending on a member it stops
    /// (`ErrStopped`), rather than left to its timeout, which would hold up the exit.
    fn learned_removed(&mut self, how: Removal) {
        if self.told_removed {
            return;
        }
        self.told_removed = true;
        self.observer.removed(how);
        for (_, waiter) in self.waiters.drain() {
            let _ = waiter.send(Err(EtcdError::stopped()));
        }
        for (_, read) in self.reads.drain() {
            let _ = read.send(Err(EtcdError::stopped()));
        }
    }

    fn handle(&mut self, command: Command) {
        // A removed member takes no more requests: raft ignores it from now on.
        let command = match command {
            Command::Propose { reply, .. } | Command::ConfChange { reply, .. }
                if self.told_removed =>
            {
                let _ = reply.send(Err(EtcdError::stopped()));
                return;
            }
            Command::Read { reply } if self.told_removed => {
                let _ = reply.send(Err(EtcdError::stopped()));
                return;
            }
            command => command,
        };
        match command {
            Command::Propose { data, reply } => {
                let id = self.next_request_id();
                match self.node.propose(id, data) {
                    Ok(()) => {
                        self.waiters.insert(id, reply);
                    }
                    Err(error) => {
                        let _ = reply.send(Err(propose_error(error, self.node.leader_id())));
                    }
                }
            }
            Command::ConfChange { change, reply } => {
                let id = self.next_request_id();
                match self.node.propose_conf_change(id, change) {
                    Ok(()) => {
                        self.waiters.insert(id, reply);
                    }
                    Err(error) => {
                        let _ = reply.send(Err(propose_error(error, self.node.leader_id())));
                    }
                }
            }
            Command::Read { reply } => {
                let id = self.next_request_id();
                match self.node.read_index(id) {
                    Ok(()) => {
                        self.reads.insert(id, reply);
                    }
                    Err(_) => {
                        let _ = reply.send(Err(EtcdError::internal("duplicate read id")));
                    }
                }
            }
            Command::Step(message) => {
                if let Err(error) = self.node.step(message) {
                    tracing::debug!("ignored a raft message: {error}");
                }
            }
            Command::SnapshotReport { to, delivered } => self.node.report_snapshot(to, delivered),
            Command::Unreachable(to) => self.node.report_unreachable(to),
            Command::TransferLeader { to } => self.node.transfer_leader(to),
            Command::Removed => self.learned_removed(Removal::RefusedByPeer),
            Command::Progress { reply } => {
                let raft = &self.node.raw().raft;
                let progress = self.node.is_leader().then(|| Progress {
                    leader_id: self.node.id(),
                    matched: raft.prs().iter().map(|(&id, p)| (id, p.matched)).collect(),
                    active: raft
                        .prs()
                        .iter()
                        .filter(|(_, p)| p.recent_active)
                        .map(|(&id, _)| id)
                        .collect(),
                });
                let _ = reply.send(progress);
            }
            Command::Shutdown => {}
        }
    }
}

/// What a proposal's waiter is told.
fn completion(proposal: ProposalOutcome<ApplyResult>, term: u64) -> Result<Completed, EtcdError> {
    match proposal.result {
        Ok(index) => Ok(Completed {
            // raft-core answers every applied proposal with its entry's result.
            result: proposal.output.unwrap_or_default(),
            index,
            term,
        }),
        Err(ProposalError::Overwritten { .. } | ProposalError::Dropped { .. }) => {
            Err(EtcdError::leader_changed())
        }
        Err(ProposalError::ConfChangeRejected { reason, .. }) => Err(EtcdError {
            code: tonic::Code::FailedPrecondition,
            message: format!("etcdserver: {reason}"),
        }),
        Err(_) => Err(EtcdError::timeout_due_to_leader_fail()),
    }
}

fn propose_error(error: ProposeError, leader_id: u64) -> EtcdError {
    match error {
        ProposeError::NotLeader { .. } if leader_id == 0 => EtcdError::no_leader(),
        ProposeError::NotLeader { .. } => EtcdError::not_leader(),
        ProposeError::TooManyUncommitted => EtcdError::too_many_requests(),
        ProposeError::TransferInProgress => EtcdError::leader_changed(),
        ProposeError::ConfChangeRefused(reason) => EtcdError {
            code: tonic::Code::FailedPrecondition,
            message: format!("etcdserver: {reason}"),
        },
        other => EtcdError::internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorded(Vec<Vec<(u64, MessageType, usize)>>);

    impl MessageSink for Recorded {
        fn send(&mut self, messages: Vec<Message>) {
            self.0.push(
                messages
                    .iter()
                    .map(|m| (m.to, m.get_msg_type(), m.get_entries().len()))
                    .collect(),
            );
        }
    }

    fn message(to: u64, kind: MessageType, entries: usize) -> Message {
        let mut message = Message {
            to,
            ..Default::default()
        };
        message.set_msg_type(kind);
        message.set_entries(vec![raft::eraftpb::Entry::default(); entries].into());
        message
    }

    fn append_response(index: u64, commit: u64, reject: bool) -> Message {
        let mut message = message(1, MessageType::MsgAppendResponse, 0);
        message.index = index;
        message.commit = commit;
        message.reject = reject;
        message
    }

    #[test]
    fn a_follower_answers_new_entries_at_once_and_commit_notices_later() {
        let mut sink = Recorded::default();
        let mut outbox = SinkOutbox {
            sink: &mut sink,
            commit_notices: Vec::new(),
        };
        // Entry 8 persisted while 7 is committed: the leader waits for this to commit 8.
        outbox.send(vec![append_response(8, 7, false)]);
        // A rejection steers the leader's next append: never held back.
        outbox.send(vec![append_response(5, 7, true)]);
        assert_eq!(outbox.commit_notices.len(), 0);
        // The answer to a notice that 8 is committed acknowledges nothing new.
        outbox.send(vec![append_response(8, 8, false)]);
        assert_eq!(outbox.commit_notices.len(), 1);
        assert_eq!(sink.0.len(), 2);
    }

    #[test]
    fn commit_notices_wait_and_keep_each_peers_order() {
        let mut sink = Recorded::default();
        let mut outbox = SinkOutbox {
            sink: &mut sink,
            commit_notices: Vec::new(),
        };
        outbox.send(vec![
            message(2, MessageType::MsgAppend, 0),
            message(3, MessageType::MsgAppend, 2),
            message(3, MessageType::MsgHeartbeat, 0),
        ]);
        // Later in the same Ready: peer 2 has a notice waiting, so its append waits too.
        outbox.send(vec![
            message(2, MessageType::MsgAppend, 1),
            message(3, MessageType::MsgAppend, 1),
        ]);
        let waiting: Vec<_> = outbox
            .commit_notices
            .iter()
            .map(|m| (m.to, m.get_msg_type(), m.get_entries().len()))
            .collect();
        assert_eq!(
            sink.0,
            vec![
                vec![
                    (3, MessageType::MsgAppend, 2),
                    (3, MessageType::MsgHeartbeat, 0)
                ],
                vec![(3, MessageType::MsgAppend, 1)],
            ]
        );
        assert_eq!(
            waiting,
            vec![
                (2, MessageType::MsgAppend, 0),
                (2, MessageType::MsgAppend, 1)
            ]
        );
    }
}
