//! Book-keeping that turns raft's silence into explicit outcomes: pending proposals by
//! log index, and ReadIndex rounds batching concurrent reads.

use std::collections::{BTreeMap, BTreeSet};

use raft::ReadState;
use raft::eraftpb::Entry;

use crate::error::{ProposalError, ReadError};

/// The outcome of one accepted proposal (or conf change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposalOutcome {
    /// The request id given at propose time.
    pub id: u64,
    /// `Ok(index)`: applied at `index` (the state machine has seen it). `Err`: it failed.
    pub result: Result<u64, ProposalError>,
}

/// The outcome of one linearizable read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOutcome {
    /// The read id given to [`crate::Node::read_index`].
    pub id: u64,
    /// `Ok(index)`: the read may be served now from local state; the applied index is at
    /// least `index`, the commit index the leader confirmed after the read arrived.
    pub result: Result<u64, ReadError>,
}

#[derive(Debug, Clone, Copy)]
struct PendingProposal {
    id: u64,
    term: u64,
}

/// Proposals appended to the local log and not yet resolved, keyed by log index.
#[derive(Debug, Default)]
pub(crate) struct Proposals {
    by_index: BTreeMap<u64, PendingProposal>,
    ids: BTreeSet<u64>,
}

impl Proposals {
    pub(crate) fn contains_id(&self, id: u64) -> bool {
        self.ids.contains(&id)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_index.len()
    }

    pub(crate) fn insert(&mut self, index: u64, term: u64, id: u64) {
        self.ids.insert(id);
        self.by_index.insert(index, PendingProposal { id, term });
    }

    fn fail(&mut self, index: u64, error: ProposalError, out: &mut Vec<ProposalOutcome>) {
        if let Some(p) = self.by_index.remove(&index) {
            self.ids.remove(&p.id);
            out.push(ProposalOutcome {
                id: p.id,
                result: Err(error),
            });
        }
    }

    /// `entries` were just persisted, replacing the log from `entries[0].index` on. A
    /// pending proposal whose index now holds another term, or lies past the new end of
    /// the log, was overwritten.
    pub(crate) fn on_append(&mut self, entries: &[Entry], out: &mut Vec<ProposalOutcome>) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        let (start, end) = (first.index, last.index);
        let lost: Vec<u64> = self
            .by_index
            .range(start..)
            .filter(|&(&index, p)| index > end || entries[(index - start) as usize].term != p.term)
            .map(|(&index, _)| index)
            .collect();
        for index in lost {
            self.fail(index, ProposalError::Overwritten { index }, out);
        }
    }

    /// A snapshot up to `index` replaced the log: proposals it covers have an unknown
    /// outcome, later ones are gone.
    pub(crate) fn on_snapshot(&mut self, index: u64, out: &mut Vec<ProposalOutcome>) {
        let all: Vec<u64> = self.by_index.keys().copied().collect();
        for i in all {
            let error = if i <= index {
                ProposalError::OutcomeUnknown { index: i }
            } else {
                ProposalError::Overwritten { index: i }
            };
            self.fail(i, error, out);
        }
    }

    /// The entry at `index` was applied. Returns true if it was this member's pending
    /// proposal (`term` and `id` match), reporting success; reports failure otherwise.
    pub(crate) fn on_applied(
        &mut self,
        index: u64,
        term: u64,
        id: Option<u64>,
        out: &mut Vec<ProposalOutcome>,
    ) {
        let Some(p) = self.by_index.get(&index).copied() else {
            return;
        };
        if p.term == term && Some(p.id) == id {
            self.by_index.remove(&index);
            self.ids.remove(&p.id);
            out.push(ProposalOutcome {
                id: p.id,
                result: Ok(index),
            });
        } else {
            self.fail(index, ProposalError::Overwritten { index }, out);
        }
    }

    /// Every pending proposal ends with an unknown outcome (this member stops).
    pub(crate) fn fail_all(&mut self, out: &mut Vec<ProposalOutcome>) {
        let all: Vec<u64> = self.by_index.keys().copied().collect();
        for index in all {
            self.fail(index, ProposalError::OutcomeUnknown { index }, out);
        }
    }

    /// The entry at `index` (this member's conf change) was refused by raft at apply.
    pub(crate) fn reject(&mut self, index: u64, reason: String, out: &mut Vec<ProposalOutcome>) {
        self.fail(
            index,
            ProposalError::ConfChangeRejected { index, reason },
            out,
        );
    }
}

#[derive(Debug, Clone, Copy)]
struct PendingRead {
    id: u64,
    deadline: u64,
}

#[derive(Debug)]
struct Round {
    ctx: Vec<u8>,
    reads: Vec<PendingRead>,
    issued_at: u64,
    leader_id: u64,
    term: u64,
}

/// What a read round needs to know about the raft node to be issued.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeaderView {
    pub(crate) leader_id: u64,
    pub(crate) term: u64,
    /// This member is leader but has not committed an entry of its term yet: raft-rs
    /// would silently drop a ReadIndex now, so the round waits.
    pub(crate) leader_not_ready: bool,
}

/// ReadIndex batching: at most one round in flight; reads arriving meanwhile queue up
/// and all share the next round.
#[derive(Debug)]
pub(crate) struct Reads {
    node_id: u64,
    incarnation: u64,
    next_seq: u64,
    retry_ticks: u64,
    queued: Vec<PendingRead>,
    in_flight: Option<Round>,
    awaiting_apply: Vec<(u64, Vec<PendingRead>)>,
    ids: BTreeSet<u64>,
    rounds_issued: u64,
}

impl Reads {
    pub(crate) fn new(node_id: u64, incarnation: u64, retry_ticks: u64) -> Self {
        Reads {
            node_id,
            incarnation,
            next_seq: 0,
            retry_ticks: retry_ticks.max(1),
            queued: Vec::new(),
            in_flight: None,
            awaiting_apply: Vec::new(),
            ids: BTreeSet::new(),
            rounds_issued: 0,
        }
    }

    pub(crate) fn enqueue(&mut self, id: u64, deadline: u64) -> Result<(), ReadError> {
        if !self.ids.insert(id) {
            return Err(ReadError::DuplicateId(id));
        }
        self.queued.push(PendingRead { id, deadline });
        Ok(())
    }

    pub(crate) fn pending(&self) -> usize {
        self.ids.len()
    }

    pub(crate) fn rounds_issued(&self) -> u64 {
        self.rounds_issued
    }

    /// If no round is in flight and reads are queued, start a round: returns the request
    /// context to pass to raft's `read_index`. The context is unique across members and
    /// restarts (member id, incarnation, sequence) so a late answer to an earlier life's
    /// round can never be mistaken for a current one.
    pub(crate) fn next_round(&mut self, view: LeaderView, now: u64) -> Option<Vec<u8>> {
        if self.in_flight.is_some()
            || self.queued.is_empty()
            || view.leader_id == 0
            || view.leader_not_ready
        {
            return None;
        }
        self.next_seq += 1;
        let mut ctx = Vec::with_capacity(24);
        ctx.extend_from_slice(&self.node_id.to_be_bytes());
        ctx.extend_from_slice(&self.incarnation.to_be_bytes());
        ctx.extend_from_slice(&self.next_seq.to_be_bytes());
        self.in_flight = Some(Round {
            ctx: ctx.clone(),
            reads: std::mem::take(&mut self.queued),
            issued_at: now,
            leader_id: view.leader_id,
            term: view.term,
        });
        self.rounds_issued += 1;
        Some(ctx)
    }

    /// Read states from a Ready: the matching round's reads now wait for `index` to be
    /// applied. Answers to abandoned rounds are ignored.
    pub(crate) fn on_read_states(&mut self, states: Vec<ReadState>) {
        for state in states {
            if self
                .in_flight
                .as_ref()
                .is_some_and(|r| r.ctx == state.request_ctx)
                && let Some(round) = self.in_flight.take()
            {
                self.awaiting_apply.push((state.index, round.reads));
            }
        }
    }

    /// Complete every read whose index is applied.
    pub(crate) fn complete(&mut self, applied: u64, out: &mut Vec<ReadOutcome>) {
        let mut still = Vec::new();
        for (index, reads) in self.awaiting_apply.drain(..) {
            if index <= applied {
                for r in reads {
                    self.ids.remove(&r.id);
                    out.push(ReadOutcome {
                        id: r.id,
                        result: Ok(index),
                    });
                }
            } else {
                still.push((index, reads));
            }
        }
        self.awaiting_apply = still;
    }

    /// Fail every pending read with `error` (this member stops).
    pub(crate) fn fail_all(&mut self, error: ReadError, out: &mut Vec<ReadOutcome>) {
        let mut reads = std::mem::take(&mut self.queued);
        if let Some(round) = self.in_flight.take() {
            reads.extend(round.reads);
        }
        for (_, waiting) in self.awaiting_apply.drain(..) {
            reads.extend(waiting);
        }
        for r in reads {
            self.ids.remove(&r.id);
            out.push(ReadOutcome {
                id: r.id,
                result: Err(error.clone()),
            });
        }
    }

    pub(crate) fn has_completable(&self, applied: u64) -> bool {
        self.awaiting_apply
            .iter()
            .any(|(index, _)| *index <= applied)
    }

    /// The leader or term changed: the in-flight round is likely lost, so its reads go
    /// back to the queue and a new round is issued.
    pub(crate) fn on_leader_change(&mut self, view: LeaderView) {
        if self
            .in_flight
            .as_ref()
            .is_some_and(|r| r.leader_id != view.leader_id || r.term != view.term)
        {
            self.requeue();
        }
    }

    fn requeue(&mut self) {
        if let Some(round) = self.in_flight.take() {
            let mut reads = round.reads;
            reads.append(&mut self.queued);
            self.queued = reads;
        }
    }

    /// Time passed: fail reads past their deadline, retry a round unanswered for
    /// `retry_ticks` (raft drops ReadIndex requests silently, e.g. when the leader is
    /// unknown or the message is lost).
    pub(crate) fn on_tick(&mut self, now: u64, out: &mut Vec<ReadOutcome>) {
        let mut expired = Vec::new();
        let keep = |r: &PendingRead, expired: &mut Vec<u64>| {
            if r.deadline <= now {
                expired.push(r.id);
                false
            } else {
                true
            }
        };
        self.queued.retain(|r| keep(r, &mut expired));
        if let Some(round) = &mut self.in_flight {
            round.reads.retain(|r| keep(r, &mut expired));
        }
        for (_, reads) in &mut self.awaiting_apply {
            reads.retain(|r| keep(r, &mut expired));
        }
        self.awaiting_apply.retain(|(_, reads)| !reads.is_empty());
        for id in expired {
            self.ids.remove(&id);
            out.push(ReadOutcome {
                id,
                result: Err(ReadError::Timeout),
            });
        }
        if self
            .in_flight
            .as_ref()
            .is_some_and(|r| r.reads.is_empty() || now >= r.issued_at + self.retry_ticks)
        {
            self.requeue();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(leader_id: u64) -> LeaderView {
        LeaderView {
            leader_id,
            term: 1,
            leader_not_ready: false,
        }
    }

    #[test]
    fn reads_arriving_during_a_round_share_the_next_one() {
        let mut reads = Reads::new(1, 0, 10);
        reads.enqueue(1, 100).unwrap();
        let ctx1 = reads.next_round(view(2), 0).unwrap();
        reads.enqueue(2, 100).unwrap();
        reads.enqueue(3, 100).unwrap();
        assert!(
            reads.next_round(view(2), 0).is_none(),
            "one round at a time"
        );
        reads.on_read_states(vec![ReadState {
            index: 5,
            request_ctx: ctx1,
        }]);
        let ctx2 = reads.next_round(view(2), 1).unwrap();
        let mut out = Vec::new();
        reads.complete(4, &mut out);
        assert!(out.is_empty(), "index 5 is not applied yet");
        reads.complete(5, &mut out);
        assert_eq!(
            out,
            vec![ReadOutcome {
                id: 1,
                result: Ok(5)
            }]
        );
        reads.on_read_states(vec![ReadState {
            index: 6,
            request_ctx: ctx2,
        }]);
        reads.complete(6, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(reads.rounds_issued(), 2);
    }

    #[test]
    fn unanswered_rounds_are_retried_then_fail_at_the_deadline() {
        let mut reads = Reads::new(1, 0, 3);
        reads.enqueue(7, 10).unwrap();
        let ctx1 = reads.next_round(view(2), 0).unwrap();
        let mut out = Vec::new();
        reads.on_tick(3, &mut out);
        let ctx2 = reads.next_round(view(2), 3).unwrap();
        assert_ne!(ctx1, ctx2);
        // A late answer to the abandoned round is ignored.
        reads.on_read_states(vec![ReadState {
            index: 1,
            request_ctx: ctx1,
        }]);
        reads.complete(100, &mut out);
        assert!(out.is_empty());
        reads.on_tick(10, &mut out);
        assert_eq!(
            out,
            vec![ReadOutcome {
                id: 7,
                result: Err(ReadError::Timeout)
            }]
        );
        assert_eq!(reads.pending(), 0);
    }

    #[test]
    fn no_round_without_a_ready_leader() {
        let mut reads = Reads::new(1, 0, 3);
        reads.enqueue(1, 10).unwrap();
        assert!(reads.next_round(view(0), 0).is_none());
        let not_ready = LeaderView {
            leader_id: 1,
            term: 2,
            leader_not_ready: true,
        };
        assert!(reads.next_round(not_ready, 0).is_none());
        assert!(reads.next_round(view(1), 0).is_some());
        reads.on_leader_change(view(3));
        assert!(
            reads.next_round(view(3), 0).is_some(),
            "requeued after leader change"
        );
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    #[test]
    fn overwritten_and_truncated_proposals_fail() {
        let mut p = Proposals::default();
        p.insert(5, 2, 50);
        p.insert(6, 2, 60);
        p.insert(7, 2, 70);
        let mut out = Vec::new();
        // A new leader's log replaces index 6 with a term-3 entry and ends there.
        p.on_append(&[entry(5, 2), entry(6, 3)], &mut out);
        assert_eq!(
            out,
            vec![
                ProposalOutcome {
                    id: 60,
                    result: Err(ProposalError::Overwritten { index: 6 })
                },
                ProposalOutcome {
                    id: 70,
                    result: Err(ProposalError::Overwritten { index: 7 })
                },
            ]
        );
        out.clear();
        p.on_applied(5, 2, Some(50), &mut out);
        assert_eq!(
            out,
            vec![ProposalOutcome {
                id: 50,
                result: Ok(5)
            }]
        );
        assert_eq!(p.len(), 0);
        assert!(!p.contains_id(50));
    }
}
