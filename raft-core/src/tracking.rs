//! Book-keeping that turns raft's silence into explicit outcomes: pending proposals by
//! log index, and ReadIndex rounds batching concurrent reads.

use std::collections::{BTreeMap, BTreeSet};

use raft::ReadState;

use crate::error::{ProposalError, ReadError};

/// The outcome of one accepted proposal (or conf change), with what the state machine
/// answered for it (`O` is [`crate::StateMachine::Output`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposalOutcome<O = ()> {
    /// The request id given at propose time.
    pub id: u64,
    /// `Ok(index)`: applied at `index` (the state machine has seen it). `Err`: it failed.
    pub result: Result<u64, ProposalError>,
    /// What [`crate::StateMachine::apply`] returned for the entry: `Some` exactly when
    /// `result` is `Ok`, so the proposer gets its answer with its outcome.
    pub output: Option<O>,
}

impl ProposalOutcome {
    fn unanswered(id: u64, result: Result<u64, ProposalError>) -> Self {
        ProposalOutcome {
            id,
            result,
            output: None,
        }
    }

    /// The same outcome carrying the state machine's answer for it.
    pub(crate) fn answered<O>(self, output: Option<O>) -> ProposalOutcome<O> {
        ProposalOutcome {
            id: self.id,
            result: self.result,
            output,
        }
    }
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
///
/// A proposal (index i, term t) is resolved only by what is *committed*, never by what
/// one member's log happens to hold (a truncated entry may still win on another member):
/// - the committed entry at i has term t and the proposal's id: applied;
/// - the committed entry at i is another one: overwritten;
/// - an entry committed at c < i has a term above t: terms only grow along a log, so
///   the committed entry at i will have a term above t too: overwritten. (This also
///   resolves proposals beyond the end of a new leader's log: its first entry commits.)
/// - a snapshot covering i was installed: unknown here.
#[derive(Debug, Default)]
pub(crate) struct Proposals {
    by_index: BTreeMap<u64, PendingProposal>,
    ids: BTreeSet<u64>,
    /// How many pending proposals carry each term (to skip scans when none is older).
    terms: BTreeMap<u64, usize>,
}

impl Proposals {
    pub(crate) fn contains_id(&self, id: u64) -> bool {
        self.ids.contains(&id)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_index.len()
    }

    /// Record a proposal. If an older proposal of ours still waits at the same index
    /// (our log was truncated there and we lead again), it is replaced and reported
    /// with an unknown outcome: we stop tracking it.
    pub(crate) fn insert(
        &mut self,
        index: u64,
        term: u64,
        id: u64,
        out: &mut Vec<ProposalOutcome>,
    ) {
        self.resolve(index, Err(ProposalError::OutcomeUnknown { index }), out);
        self.ids.insert(id);
        *self.terms.entry(term).or_insert(0) += 1;
        self.by_index.insert(index, PendingProposal { id, term });
    }

    fn forget(&mut self, p: PendingProposal) {
        self.ids.remove(&p.id);
        if let Some(count) = self.terms.get_mut(&p.term) {
            *count -= 1;
            if *count == 0 {
                self.terms.remove(&p.term);
            }
        }
    }

    fn resolve(
        &mut self,
        index: u64,
        result: Result<u64, ProposalError>,
        out: &mut Vec<ProposalOutcome>,
    ) {
        if let Some(p) = self.by_index.remove(&index) {
            self.forget(p);
            out.push(ProposalOutcome::unanswered(p.id, result));
        }
    }

    /// Fail every pending proposal after `index` whose term is below `term`.
    fn fail_older_after(&mut self, index: u64, term: u64, out: &mut Vec<ProposalOutcome>) {
        if self
            .terms
            .keys()
            .next()
            .is_none_or(|&oldest| oldest >= term)
        {
            return;
        }
        let doomed: Vec<u64> = self
            .by_index
            .range(index + 1..)
            .filter(|(_, p)| p.term < term)
            .map(|(&i, _)| i)
            .collect();
        for i in doomed {
            self.resolve(i, Err(ProposalError::Overwritten { index: i }), out);
        }
    }

    /// A snapshot up to (`index`, `term`) replaced the log: proposals it covers have an
    /// unknown outcome; later ones of older terms are overwritten (see the type doc).
    pub(crate) fn on_snapshot(&mut self, index: u64, term: u64, out: &mut Vec<ProposalOutcome>) {
        let covered: Vec<u64> = self.by_index.range(..=index).map(|(&i, _)| i).collect();
        for i in covered {
            self.resolve(i, Err(ProposalError::OutcomeUnknown { index: i }), out);
        }
        self.fail_older_after(index, term, out);
    }

    /// The committed entry (`index`, `term`, `id`) was applied.
    pub(crate) fn on_applied(
        &mut self,
        index: u64,
        term: u64,
        id: Option<u64>,
        out: &mut Vec<ProposalOutcome>,
    ) {
        if let Some(p) = self.by_index.get(&index).copied() {
            let result = if p.term == term && Some(p.id) == id {
                Ok(index)
            } else {
                Err(ProposalError::Overwritten { index })
            };
            self.resolve(index, result, out);
        }
        self.fail_older_after(index, term, out);
    }

    /// Every pending proposal ends with an unknown outcome (this member stops).
    pub(crate) fn fail_all(&mut self, out: &mut Vec<ProposalOutcome>) {
        let all: Vec<u64> = self.by_index.keys().copied().collect();
        for index in all {
            self.resolve(index, Err(ProposalError::OutcomeUnknown { index }), out);
        }
    }

    /// The entry at `index` (this member's conf change) was refused by raft at apply.
    pub(crate) fn reject(&mut self, index: u64, reason: String, out: &mut Vec<ProposalOutcome>) {
        self.resolve(
            index,
            Err(ProposalError::ConfChangeRejected { index, reason }),
            out,
        );
    }
}

#[derive(Debug, Clone, Copy)]
struct ForwardedProposal {
    /// The term of the leader it was sent to: the only term it may be appended in.
    term: u64,
    /// Tick after which the outcome is given up as unknown.
    deadline: u64,
}

/// Proposals this member forwarded to the leader, keyed by request id. The leader
/// appends a forwarded proposal only in the term it was stamped with, so:
/// - an applied entry carrying this member's id for it: applied;
/// - an applied entry of a later term than its stamp, before it: every entry of the
///   stamp's term that will ever commit precedes that entry, so it never will: dropped;
/// - a snapshot of the stamp's term or later installed, the deadline passed, or the
///   member removed: unknown.
#[derive(Debug, Default)]
pub(crate) struct Forwarded {
    by_id: BTreeMap<u64, ForwardedProposal>,
    /// How many pending proposals carry each term (to skip scans when none is older).
    terms: BTreeMap<u64, usize>,
}

impl Forwarded {
    pub(crate) fn contains_id(&self, id: u64) -> bool {
        self.by_id.contains_key(&id)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn insert(&mut self, id: u64, term: u64, deadline: u64) {
        *self.terms.entry(term).or_insert(0) += 1;
        self.by_id.insert(id, ForwardedProposal { term, deadline });
    }

    fn resolve(
        &mut self,
        id: u64,
        result: Result<u64, ProposalError>,
        out: &mut Vec<ProposalOutcome>,
    ) {
        let Some(p) = self.by_id.remove(&id) else {
            return;
        };
        if let Some(count) = self.terms.get_mut(&p.term) {
            *count -= 1;
            if *count == 0 {
                self.terms.remove(&p.term);
            }
        }
        out.push(ProposalOutcome::unanswered(id, result));
    }

    fn resolve_where(
        &mut self,
        doomed: impl Fn(&ForwardedProposal) -> bool,
        error: impl Fn(&ForwardedProposal) -> ProposalError,
        out: &mut Vec<ProposalOutcome>,
    ) {
        let ids: Vec<(u64, ProposalError)> = self
            .by_id
            .iter()
            .filter(|(_, p)| doomed(p))
            .map(|(&id, p)| (id, error(p)))
            .collect();
        for (id, error) in ids {
            self.resolve(id, Err(error), out);
        }
    }

    /// The committed entry (`index`, `term`) was applied; `ours` is the request id it
    /// carries if this member forwarded it.
    pub(crate) fn on_applied(
        &mut self,
        index: u64,
        term: u64,
        ours: Option<u64>,
        out: &mut Vec<ProposalOutcome>,
    ) {
        if let Some(id) = ours {
            self.resolve(id, Ok(index), out);
        }
        if self
            .terms
            .keys()
            .next()
            .is_some_and(|&oldest| oldest < term)
        {
            self.resolve_where(
                |p| p.term < term,
                |p| ProposalError::Dropped { term: p.term },
                out,
            );
        }
    }

    /// Forwarding failed before the proposal left this member.
    pub(crate) fn drop_unsent(&mut self, id: u64, out: &mut Vec<ProposalOutcome>) {
        let term = self.by_id.get(&id).map_or(0, |p| p.term);
        self.resolve(id, Err(ProposalError::Dropped { term }), out);
    }

    /// A snapshot up to `term` replaced the log: what it covers is unknown here.
    pub(crate) fn on_snapshot(&mut self, term: u64, out: &mut Vec<ProposalOutcome>) {
        self.resolve_where(
            |p| p.term <= term,
            |_| ProposalError::OutcomeUnknown { index: 0 },
            out,
        );
    }

    pub(crate) fn on_tick(&mut self, now: u64, out: &mut Vec<ProposalOutcome>) {
        self.resolve_where(
            |p| p.deadline <= now,
            |_| ProposalError::OutcomeUnknown { index: 0 },
            out,
        );
    }

    pub(crate) fn fail_all(&mut self, out: &mut Vec<ProposalOutcome>) {
        self.resolve_where(
            |_| true,
            |_| ProposalError::OutcomeUnknown { index: 0 },
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

    #[test]
    fn proposals_resolve_by_what_commits() {
        let mut p = Proposals::default();
        let mut out = Vec::new();
        p.insert(5, 2, 50, &mut out);
        p.insert(6, 2, 60, &mut out);
        p.insert(9, 2, 90, &mut out);
        p.on_applied(5, 2, Some(50), &mut out);
        assert_eq!(
            out,
            vec![ProposalOutcome {
                id: 50,
                result: Ok(5),
                output: None
            }]
        );
        out.clear();
        // A term-3 leader's entry commits at 6: 6 holds another entry, and 9 (term 2)
        // can no longer commit after a term-3 entry.
        p.on_applied(6, 3, None, &mut out);
        assert_eq!(
            out,
            vec![
                ProposalOutcome {
                    id: 60,
                    result: Err(ProposalError::Overwritten { index: 6 }),
                    output: None
                },
                ProposalOutcome {
                    id: 90,
                    result: Err(ProposalError::Overwritten { index: 9 }),
                    output: None
                },
            ]
        );
        assert_eq!(p.len(), 0);
        assert!(!p.contains_id(60));
    }

    #[test]
    fn a_snapshot_makes_covered_proposals_unknown_and_keeps_later_ones_of_its_term() {
        let mut p = Proposals::default();
        let mut out = Vec::new();
        p.insert(5, 2, 50, &mut out);
        p.insert(8, 3, 80, &mut out);
        p.on_snapshot(6, 3, &mut out);
        assert_eq!(
            out,
            vec![ProposalOutcome {
                id: 50,
                result: Err(ProposalError::OutcomeUnknown { index: 5 }),
                output: None
            }]
        );
        assert_eq!(p.len(), 1, "index 8 of term 3 may still commit");
    }
}
