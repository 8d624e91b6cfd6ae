//! The order of `handle_ready`'s actions, observed through recording store, state
//! machine and outbox.

use std::cell::RefCell;
use std::rc::Rc;

use raft::eraftpb::{
    ConfState, Entry, HardState, Message, MessageType, Snapshot, SnapshotMetadata,
};
use raft::{GetEntriesContext, RaftState, Storage};

use crate::{BoxError, Committed, LogStore, MemLogStore, Node, NodeConfig, Outbox, StateMachine};

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Send(MessageType),
    Persist { entries: usize, hard_state: bool },
    Apply(Vec<u64>),
}

type Log = Rc<RefCell<Vec<Event>>>;

struct RecordingStore {
    inner: MemLogStore,
    log: Log,
}

impl Storage for RecordingStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.inner.initial_state()
    }
    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.inner.entries(low, high, max_size, context)
    }
    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.inner.term(idx)
    }
    fn first_index(&self) -> raft::Result<u64> {
        self.inner.first_index()
    }
    fn last_index(&self) -> raft::Result<u64> {
        self.inner.last_index()
    }
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        self.inner.snapshot(request_index, to)
    }
}

impl LogStore for RecordingStore {
    fn append(&mut self, entries: &[Entry], hs: Option<&HardState>) -> Result<(), BoxError> {
        self.inner.append(entries, hs)?;
        self.log.borrow_mut().push(Event::Persist {
            entries: entries.len(),
            hard_state: hs.is_some(),
        });
        Ok(())
    }
    fn set_hard_state(&mut self, hs: &HardState) -> Result<(), BoxError> {
        self.inner.set_hard_state(hs)
    }
    fn set_conf_state(&mut self, cs: &ConfState) -> Result<(), BoxError> {
        self.inner.set_conf_state(cs)
    }
    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), BoxError> {
        self.inner.apply_snapshot(snapshot)
    }
    fn create_snapshot(&mut self, i: u64, cs: ConfState, data: Vec<u8>) -> Result<(), BoxError> {
        self.inner.create_snapshot(i, cs, data)
    }
    fn compact(&mut self, index: u64) -> Result<(), BoxError> {
        self.inner.compact(index)
    }
    fn latest_snapshot(&self) -> Result<Snapshot, BoxError> {
        self.inner.latest_snapshot()
    }
}

struct RecordingSm {
    applied: u64,
    log: Log,
}

impl StateMachine for RecordingSm {
    type Output = ();

    fn apply(&mut self, entries: &[Committed]) -> Result<Vec<()>, BoxError> {
        self.log
            .borrow_mut()
            .push(Event::Apply(entries.iter().map(Committed::index).collect()));
        self.applied = entries.last().map_or(self.applied, Committed::index);
        Ok(vec![(); entries.len()])
    }
    fn applied_index(&self) -> u64 {
        self.applied
    }
    fn snapshot(&mut self) -> Result<Vec<u8>, BoxError> {
        Ok(Vec::new())
    }
    fn restore(&mut self, meta: &SnapshotMetadata, _data: &[u8]) -> Result<(), BoxError> {
        self.applied = meta.index;
        Ok(())
    }
}

struct RecordingOutbox {
    log: Log,
    sent: Vec<Message>,
}

impl Outbox for RecordingOutbox {
    fn send(&mut self, messages: Vec<Message>) {
        for m in &messages {
            self.log.borrow_mut().push(Event::Send(m.get_msg_type()));
        }
        self.sent.extend(messages);
    }
}

struct Member {
    node: Node<RecordingStore>,
    sm: RecordingSm,
    log: Log,
}

fn cluster() -> Vec<Member> {
    (1..=3)
        .map(|id| {
            let log: Log = Rc::default();
            let mut inner = MemLogStore::new();
            Node::<MemLogStore>::bootstrap(&mut inner, &[1, 2, 3]).unwrap();
            let store = RecordingStore {
                inner,
                log: log.clone(),
            };
            let mut sm = RecordingSm {
                applied: 0,
                log: log.clone(),
            };
            let node = Node::new(NodeConfig::new(id), store, &mut sm).unwrap();
            Member { node, sm, log }
        })
        .collect()
}

/// Handle member `i`'s Ready once; returns its outgoing messages.
fn ready(members: &mut [Member], i: usize) -> (Vec<Message>, crate::ReadyOutcome) {
    let m = &mut members[i];
    let mut out = RecordingOutbox {
        log: m.log.clone(),
        sent: Vec::new(),
    };
    let outcome = m.node.handle_ready(&mut m.sm, &mut out).unwrap();
    (out.sent, outcome)
}

fn route_until_quiet(members: &mut [Member]) {
    for _ in 0..50 {
        let mut wire = Vec::new();
        for i in 0..members.len() {
            while members[i].node.has_ready() {
                wire.extend(ready(members, i).0);
            }
        }
        if wire.is_empty() {
            return;
        }
        for m in wire {
            let to = (m.to - 1) as usize;
            let _ = members[to].node.step(m);
        }
    }
}

fn position(log: &[Event], pred: impl Fn(&Event) -> bool) -> usize {
    log.iter().position(pred).expect("event present")
}

#[test]
fn handle_ready_sends_early_persists_once_sends_persisted_then_applies() {
    let mut members = cluster();
    members[0].node.campaign().unwrap();
    route_until_quiet(&mut members);
    assert!(members[0].node.is_leader());
    for m in &members {
        m.log.borrow_mut().clear();
    }

    // Leader: the appends go out before its own fsync, and one fsync covers it all.
    members[0].node.propose(42, b"x".to_vec()).unwrap();
    let (appends, _) = ready(&mut members, 0);
    let leader_log = members[0].log.borrow().clone();
    assert_eq!(
        leader_log,
        vec![
            Event::Send(MessageType::MsgAppend),
            Event::Send(MessageType::MsgAppend),
            Event::Persist {
                entries: 1,
                hard_state: false
            },
        ]
    );

    // Follower: persist first, then the append response may leave.
    let to_2 = appends.into_iter().find(|m| m.to == 2).unwrap();
    members[1].node.step(to_2).unwrap();
    let (responses, _) = ready(&mut members, 1);
    let follower_log = members[1].log.borrow().clone();
    let persist = position(&follower_log, |e| {
        matches!(e, Event::Persist { entries: 1, .. })
    });
    let respond = position(&follower_log, |e| {
        *e == Event::Send(MessageType::MsgAppendResponse)
    });
    assert!(persist < respond, "{follower_log:?}");

    // Leader: the quorum acknowledged, so the entry is applied and the proposal reported.
    members[0].log.borrow_mut().clear();
    for m in responses {
        members[0].node.step(m).unwrap();
    }
    let (_, outcome) = ready(&mut members, 0);
    let index = members[0].node.last_index();
    assert_eq!(outcome.proposals.len(), 1);
    assert_eq!(outcome.proposals[0].id, 42);
    assert_eq!(outcome.proposals[0].result, Ok(index));
    assert_eq!(outcome.applied_index, index);
    let leader_log = members[0].log.borrow().clone();
    let apply = position(&leader_log, |e| *e == Event::Apply(vec![index]));
    // The commit index reaches followers after the apply (LightReady messages).
    assert!(
        leader_log[..apply]
            .iter()
            .all(|e| !matches!(e, Event::Persist { entries: 1.., .. })),
        "{leader_log:?}"
    );
}

#[test]
fn a_vote_leaves_only_after_the_hard_state_is_persisted() {
    let mut members = cluster();
    members[0].node.campaign().unwrap();
    // Pre-vote round (changes no hard state).
    let (pre_votes, _) = ready(&mut members, 0);
    assert!(
        pre_votes
            .iter()
            .all(|m| m.get_msg_type() == MessageType::MsgRequestPreVote)
    );
    for m in pre_votes {
        let to = (m.to - 1) as usize;
        members[to].node.step(m).unwrap();
        let (responses, _) = ready(&mut members, to);
        for r in responses {
            members[0].node.step(r).unwrap();
        }
    }
    let (votes, _) = ready(&mut members, 0);
    let vote_for_2 = votes
        .into_iter()
        .find(|m| m.to == 2 && m.get_msg_type() == MessageType::MsgRequestVote)
        .unwrap();
    members[1].node.step(vote_for_2).unwrap();
    members[1].log.borrow_mut().clear();
    ready(&mut members, 1);
    let log = members[1].log.borrow().clone();
    let persist = position(&log, |e| {
        matches!(
            e,
            Event::Persist {
                hard_state: true,
                ..
            }
        )
    });
    let respond = position(&log, |e| {
        *e == Event::Send(MessageType::MsgRequestVoteResponse)
    });
    assert!(persist < respond, "{log:?}");
}
