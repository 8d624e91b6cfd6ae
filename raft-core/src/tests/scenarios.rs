//! Named scenarios on the harness.

use raft::eraftpb::{ConfChangeType, MessageType};

use crate::codec::{add_learner, add_voter, conf_change, promote_learner};
use crate::harness::{Cluster, ClusterOptions};
use crate::{ProposalError, ProposeError};

fn elected(voters: u64, seed: u64, options: ClusterOptions) -> Cluster {
    let mut c = Cluster::with_options(voters, seed, options);
    c.elect(1).unwrap();
    c.assert_ok();
    c
}

fn propose_n(c: &mut Cluster, n: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for i in 0..n {
        let leader = c.leader().expect("a leader");
        ids.push(c.propose(leader, vec![i as u8; 8]).unwrap());
        c.deliver_all();
    }
    ids
}

#[test]
fn election_and_re_election_after_the_leader_crashes() {
    let mut c = elected(3, 1, ClusterOptions::default());
    let before = propose_n(&mut c, 5);
    c.run_ticks(2);
    let term = c.node(1).unwrap().term();
    c.crash(1);
    c.run_ticks(60);
    let leader = c.leader().expect("a new leader");
    assert_ne!(leader, 1);
    assert!(c.node(leader).unwrap().term() > term);
    let after = propose_n(&mut c, 5);
    c.restart(1);
    c.converge(200).unwrap();
    for id in before.iter().chain(&after) {
        assert!(c.acked().contains_key(id), "proposal {id} acknowledged");
    }
    assert!(!c.node(1).unwrap().is_leader());
}

#[test]
fn replication_continues_with_a_partitioned_minority() {
    let mut c = elected(5, 2, ClusterOptions::default());
    c.partition(&[&[1, 2, 3], &[4, 5]]);
    let ids = propose_n(&mut c, 10);
    c.run_ticks(3);
    for id in &ids {
        assert!(c.acked().contains_key(id), "majority side commits");
    }
    let commit = c.node(1).unwrap().commit_index();
    assert!(c.node(4).unwrap().applied_index() < commit);
    assert!(c.sm(4).unwrap().applied_ids().is_empty());
    // The minority cannot elect a leader (pre-vote keeps its terms stable, too).
    let term4 = c.node(4).unwrap().term();
    c.run_ticks(50);
    assert_eq!(c.leader(), Some(1));
    assert_eq!(c.node(4).unwrap().term(), term4);
    c.heal();
    c.converge(200).unwrap();
    assert_eq!(c.sm(4).unwrap().applied_ids().len(), 10);
}

#[test]
fn a_far_behind_follower_catches_up_by_snapshot() {
    let options = ClusterOptions {
        snapshot_interval: 20,
        snapshot_catchup_entries: 5,
        ..ClusterOptions::default()
    };
    let mut c = elected(3, 3, options);
    c.crash(3);
    propose_n(&mut c, 100);
    c.run_ticks(2);
    let leader_first = raft::Storage::first_index(c.node(1).unwrap().store()).unwrap();
    assert!(
        leader_first > 50,
        "leader compacted its log (first index {leader_first})"
    );
    c.restart(3);
    c.converge(200).unwrap();
    assert!(
        c.sm(3).unwrap().restores() >= 2,
        "bootstrap + leader snapshot"
    );
    assert_eq!(c.sm(3).unwrap().applied_ids().len(), 100);
    assert!(c.stats.snapshots_restored >= 1);
}

#[test]
fn a_far_behind_follower_catches_up_from_a_leader_that_checkpoints_in_place() {
    let options = ClusterOptions {
        snapshot_interval: 20,
        snapshot_catchup_entries: 5,
        checkpoints_in_place: true,
        ..ClusterOptions::default()
    };
    let mut c = elected(3, 3, options);
    c.crash(3);
    propose_n(&mut c, 100);
    c.run_ticks(2);
    let leader_store = c.node(1).unwrap().store();
    assert!(raft::Storage::first_index(leader_store).unwrap() > 50);
    let kept = raft::Storage::snapshot(leader_store, 0, 3).unwrap();
    assert_eq!(
        kept.get_data(),
        crate::CHECKPOINT_PLACEHOLDER,
        "the log store keeps no copy of the state"
    );
    // More writes after the checkpoint: the snapshot sent is the state as applied when
    // it leaves, past the checkpoint's index.
    propose_n(&mut c, 3);
    c.restart(3);
    c.converge(200).unwrap();
    let follower = c.sm(3).unwrap();
    assert!(follower.restores() >= 2, "bootstrap + leader snapshot");
    assert_eq!(follower.applied_ids().len(), 103);
    assert!(c.stats.snapshots_restored >= 1);
}

#[test]
fn a_follower_forwards_proposals_and_learns_their_outcome_by_applying_them() {
    let options = ClusterOptions {
        forward_proposals: true,
        ..ClusterOptions::default()
    };
    let mut c = elected(3, 5, options);
    let ids: Vec<u64> = (0..5)
        .map(|i| c.propose(2, vec![i; 4]).expect("a follower accepts"))
        .collect();
    c.deliver_all();
    c.converge(50).unwrap();
    for id in &ids {
        let index = c
            .acked()
            .get(id)
            .copied()
            .expect("acknowledged on member 2");
        assert_eq!(c.sm(1).unwrap().applied_ids().get(id), Some(&index));
    }
    assert!(c.failed().is_empty(), "{:?}", c.failed());
}

#[test]
fn a_forwarded_proposal_lost_with_its_leader_is_reported_dropped() {
    let options = ClusterOptions {
        forward_proposals: true,
        ..ClusterOptions::default()
    };
    let mut c = elected(3, 6, options);
    let id = c.propose(2, b"lost".to_vec()).unwrap();
    c.deliver_all_except(|_, _, m| m.get_msg_type() == raft::eraftpb::MessageType::MsgPropose);
    c.crash(1);
    c.run_ticks(60);
    assert!(c.leader().is_some_and(|l| l != 1), "{}", c.describe());
    propose_n(&mut c, 1);
    c.restart(1);
    c.converge(200).unwrap();
    assert!(
        matches!(c.failed().get(&id), Some(ProposalError::Dropped { .. })),
        "{:?}",
        c.failed()
    );
    for member in 1..=3 {
        assert!(!c.sm(member).unwrap().applied_ids().contains_key(&id));
    }
}

#[test]
fn membership_3_to_5_to_3_with_learner_promotion_while_proposals_flow() {
    let mut c = elected(3, 4, ClusterOptions::default());
    c.add_process(4);
    c.add_process(5);

    let change = |c: &mut Cluster, cc| {
        let leader = c.leader().unwrap();
        let id = c.propose_conf_change(leader, cc).unwrap();
        for _ in 0..100 {
            if c.acked().contains_key(&id) {
                break;
            }
            let leader = c.leader().unwrap();
            let _ = c.propose(leader, b"during".to_vec());
            c.run_ticks(1);
        }
        assert!(c.acked().contains_key(&id), "conf change {id} applied");
        c.run_ticks(3);
    };

    change(&mut c, add_learner(4));
    assert_eq!(c.node(1).unwrap().learners(), vec![4]);
    // A learner does not vote: the quorum is still 2 of {1,2,3}.
    change(&mut c, promote_learner(4));
    assert_eq!(c.node(1).unwrap().voters(), vec![1, 2, 3, 4]);
    assert!(c.node(1).unwrap().learners().is_empty());
    change(&mut c, add_voter(5));
    assert_eq!(c.node(1).unwrap().voters(), vec![1, 2, 3, 4, 5]);
    c.converge(200).unwrap();
    assert_eq!(c.node(5).unwrap().voters(), vec![1, 2, 3, 4, 5]);

    // 5 -> 3 in one step: joint consensus, left automatically.
    change(
        &mut c,
        conf_change(&[
            (ConfChangeType::RemoveNode, 4),
            (ConfChangeType::RemoveNode, 5),
        ]),
    );
    c.run_ticks(5);
    let conf = c.node(1).unwrap().conf_state();
    assert!(
        conf.voters_outgoing.is_empty(),
        "left the joint config: {conf:?}"
    );
    assert_eq!(c.node(1).unwrap().voters(), vec![1, 2, 3]);
    c.crash(4);
    c.crash(5);
    // The 3-voter cluster tolerates one failure.
    c.crash(3);
    let ids = propose_n(&mut c, 3);
    c.run_ticks(3);
    for id in &ids {
        assert!(c.acked().contains_key(id));
    }
    c.restart(3);
    c.converge(200).unwrap();
}

#[test]
fn conf_changes_are_refused_while_one_is_pending() {
    let mut c = elected(3, 5, ClusterOptions::default());
    c.add_process(4);
    c.propose_conf_change(1, add_learner(4)).unwrap();
    assert!(matches!(
        c.propose_conf_change(1, add_voter(4)),
        Err(ProposeError::ConfChangeRefused(_))
    ));
    c.converge(100).unwrap();
}

#[test]
fn leader_transfer() {
    let mut c = elected(3, 6, ClusterOptions::default());
    propose_n(&mut c, 3);
    c.transfer_leader(1, 2);
    // Proposals are refused while the transfer is in progress.
    assert_eq!(
        c.propose(1, b"x".to_vec()),
        Err(ProposeError::TransferInProgress)
    );
    c.deliver_all();
    c.run_ticks(2);
    assert_eq!(c.leader(), Some(2));
    propose_n(&mut c, 3);
    c.converge(100).unwrap();
}

#[test]
fn proposals_on_a_follower_are_refused_with_the_leader_hint() {
    let mut c = elected(3, 7, ClusterOptions::default());
    assert_eq!(
        c.propose(2, b"x".to_vec()),
        Err(ProposeError::NotLeader { leader_id: 1 })
    );
}

#[test]
fn too_many_uncommitted_bytes_are_refused() {
    let options = ClusterOptions {
        max_uncommitted_size: 1000,
        ..ClusterOptions::default()
    };
    let mut c = elected(3, 8, options);
    c.isolate(1);
    let mut refused = None;
    for _ in 0..10 {
        if let Err(e) = c.propose(1, vec![0; 400]) {
            refused = Some(e);
            break;
        }
    }
    assert_eq!(refused, Some(ProposeError::TooManyUncommitted));
}

#[test]
fn a_proposal_overwritten_after_a_leader_change_fails_explicitly() {
    let mut c = elected(3, 9, ClusterOptions::default());
    c.isolate(1);
    let lost = c.propose(1, b"lost".to_vec()).unwrap();
    c.run_ticks(60); // 2 or 3 elects a leader; 1 steps down (check quorum)
    let leader = c.leader().unwrap();
    assert_ne!(leader, 1);
    propose_n(&mut c, 3);
    c.heal();
    c.converge(200).unwrap();
    assert!(matches!(
        c.failed().get(&lost),
        Some(ProposalError::Overwritten { .. })
    ));
    assert!(!c.sm(2).unwrap().applied_ids().contains_key(&lost));
}

#[test]
fn a_read_index_read_never_completes_before_its_index_is_applied() {
    let mut c = elected(3, 10, ClusterOptions::default());
    propose_n(&mut c, 3);
    c.run_ticks(2);
    // Entries reach 2 and 3 but their commit index does not advance: 3 lags behind.
    let write = c.propose(1, b"w".to_vec()).unwrap();
    c.deliver_all_except(|_, to, m| to == 3 && m.get_msg_type() == MessageType::MsgAppend);
    assert!(c.acked().contains_key(&write));
    let lagging = c.node(3).unwrap().applied_index();
    let read = c.read(3).unwrap();
    // The ReadIndex round trip completes, but 3 has not applied the read's index yet.
    c.deliver_all_except(|_, to, m| {
        to == 3
            && matches!(
                m.get_msg_type(),
                MessageType::MsgAppend | MessageType::MsgHeartbeat
            )
    });
    assert!(c.node(3).unwrap().applied_index() == lagging);
    assert!(!c.reads_done().contains_key(&read));
    c.run_ticks(3);
    let index = *c
        .reads_done()
        .get(&read)
        .expect("read completes once applied");
    assert!(index >= c.acked()[&write]);
    c.assert_ok();
}

#[test]
fn concurrent_reads_share_one_read_index_round() {
    let mut c = elected(3, 11, ClusterOptions::default());
    let rounds = c.node(1).unwrap().read_rounds_issued();
    let reads: Vec<u64> = (0..10).map(|_| c.read(1).unwrap()).collect();
    // The first read started a round; the nine others wait for the next one.
    assert_eq!(c.node(1).unwrap().read_rounds_issued(), rounds + 1);
    c.deliver_all();
    c.deliver_all();
    assert_eq!(c.node(1).unwrap().read_rounds_issued(), rounds + 2);
    for r in &reads {
        assert!(c.reads_done().contains_key(r));
    }
}

#[test]
fn a_new_leader_serves_no_read_before_committing_an_entry_of_its_term() {
    let mut c = elected(3, 12, ClusterOptions::default());
    propose_n(&mut c, 2);
    c.run_ticks(2);
    // 2 or 3 wins an election, but no append response reaches it: its empty entry of
    // the new term stays uncommitted.
    c.isolate(1);
    let no_append_responses = |_: u64, _: u64, m: &raft::eraftpb::Message| {
        m.get_msg_type() == MessageType::MsgAppendResponse
    };
    let mut new_leader = None;
    for _ in 0..100 {
        c.tick_all();
        c.deliver_all_except(no_append_responses);
        new_leader = c.leader().filter(|&l| l != 1);
        if new_leader.is_some() {
            break;
        }
    }
    let l = new_leader.expect("a new leader");
    assert!(!c.node(l).unwrap().raw().raft.commit_to_current_term());
    let first_own_entry = c.node(l).unwrap().last_index();
    let read = c.read(l).unwrap();
    c.deliver_all_except(no_append_responses);
    assert!(!c.reads_done().contains_key(&read));
    // raft-rs itself (ReadOnlySafe) drops a ReadIndex stepped into such a leader: no
    // read state, nothing pending.
    let raw = c.node_mut(l).unwrap().raw_mut();
    raw.read_index(b"direct".to_vec());
    assert!(raw.raft.read_states.is_empty());
    assert_eq!(raw.raft.pending_read_count(), 0);
    // Once the entry of its term commits, the read is served, at an index covering it.
    c.deliver_all();
    c.run_ticks(2);
    let index = *c.reads_done().get(&read).expect("read served");
    assert!(index >= first_own_entry);
    let raw = c.node_mut(l).unwrap().raw_mut();
    assert!(raw.raft.commit_to_current_term());
    raw.read_index(b"direct".to_vec());
    assert_eq!(raw.raft.pending_read_count(), 1, "now raft accepts it");
}

#[test]
fn reads_fail_explicitly_when_no_leader_can_be_reached() {
    let mut c = elected(3, 13, ClusterOptions::default());
    c.isolate(3);
    let read = c.read(3).unwrap();
    c.run_ticks(60);
    assert!(c.reads_failed().contains(&read));
    assert_eq!(c.node(3).unwrap().pending_reads(), 0);
}

#[test]
fn restart_never_re_applies() {
    let mut c = elected(3, 14, ClusterOptions::default());
    propose_n(&mut c, 10);
    c.run_ticks(2);
    for id in [1, 2, 3] {
        c.crash(id);
        c.restart(id);
        c.run_ticks(30);
    }
    propose_n(&mut c, 2);
    c.converge(200).unwrap();
    // The test state machine records a violation on any re-applied index.
    c.assert_ok();
}

#[test]
fn a_crash_at_every_point_of_ready_handling_loses_no_acknowledged_entry() {
    for victim in [1u64, 2] {
        for successes in 0..12 {
            let mut c = elected(3, 100 + successes, ClusterOptions::default());
            propose_n(&mut c, 3);
            c.run_ticks(1);
            c.arm_crash(victim, successes);
            for i in 0..6u8 {
                if let Some(leader) = c.leader() {
                    let _ = c.propose(leader, vec![i]);
                }
                c.run_ticks(1);
            }
            c.run_ticks(30);
            for id in [1, 2, 3] {
                if c.node(id).is_none() {
                    c.restart(id);
                }
            }
            c.converge(300)
                .unwrap_or_else(|e| panic!("victim {victim}, crash after {successes} writes: {e}"));
            assert_eq!(
                c.crashes_fired(victim),
                1,
                "victim {victim}: the crash armed after {successes} writes happened, once"
            );
            assert_eq!(
                c.stats.ready_crashes, 1,
                "victim {victim}, {successes} writes"
            );
            assert!(c.acked().len() >= 3);
        }
    }
}

mod single_member {
    use raft::eraftpb::Message;

    use crate::harness::TestStateMachine;
    use crate::{Error, MemLogStore, Node, NodeConfig, ProposeError};

    fn config() -> NodeConfig {
        let mut config = NodeConfig::new(1);
        config.snapshot_interval = 10;
        config.snapshot_catchup_entries = 2;
        config
    }

    fn drain(node: &mut Node<MemLogStore>, sm: &mut TestStateMachine) -> Vec<u64> {
        let mut out: Vec<Message> = Vec::new();
        let mut acked = Vec::new();
        while node.has_ready() {
            let outcome = node.handle_ready(sm, &mut out).unwrap();
            for p in outcome.proposals {
                acked.push(p.result.unwrap());
            }
        }
        assert!(out.is_empty(), "a single member sends nothing");
        acked
    }

    fn leader_with_entries(n: u64) -> (Node<MemLogStore>, TestStateMachine) {
        let mut store = MemLogStore::new();
        assert!(Node::bootstrap(&mut store, &[1]).unwrap());
        assert!(!Node::bootstrap(&mut store, &[1]).unwrap(), "only once");
        let mut sm = TestStateMachine::default();
        let mut node = Node::new(config(), store, &mut sm).unwrap();
        node.campaign().unwrap();
        drain(&mut node, &mut sm);
        assert!(node.is_leader());
        for id in 1..=n {
            node.propose(id, vec![id as u8]).unwrap();
            assert_eq!(drain(&mut node, &mut sm).len(), 1);
        }
        (node, sm)
    }

    #[test]
    fn duplicate_request_ids_are_refused_while_pending() {
        let (mut node, mut sm) = leader_with_entries(0);
        node.propose(7, b"a".to_vec()).unwrap();
        assert_eq!(
            node.propose(7, b"b".to_vec()),
            Err(ProposeError::DuplicateId(7))
        );
        drain(&mut node, &mut sm);
        node.propose(7, b"c".to_vec()).unwrap();
    }

    #[test]
    fn a_state_machine_behind_the_compacted_log_is_restored_from_the_snapshot() {
        let (node, sm) = leader_with_entries(30);
        let store = node.into_store();
        let first = raft::Storage::first_index(&store).unwrap();
        assert!(
            first > 20,
            "compacted behind the snapshot (first index {first})"
        );
        // A state machine that lost everything (e.g. a wiped backend).
        let mut fresh = TestStateMachine::default();
        let node = Node::new(config(), store, &mut fresh).unwrap();
        assert_eq!(fresh.restores(), 1);
        assert!(fresh.applied_ids().len() >= 20);
        assert_eq!(
            node.applied_index(),
            crate::StateMachine::applied_index(&fresh)
        );
        assert!(node.applied_index() <= crate::StateMachine::applied_index(&sm));
    }

    #[test]
    fn a_checkpointed_state_machine_that_lost_its_state_is_refused() {
        let mut store = MemLogStore::new();
        Node::bootstrap(&mut store, &[1]).unwrap();
        let mut sm = TestStateMachine::checkpointing();
        let mut node = Node::new(config(), store, &mut sm).unwrap();
        node.campaign().unwrap();
        drain(&mut node, &mut sm);
        for id in 1..=30 {
            node.propose(id, vec![id as u8]).unwrap();
            drain(&mut node, &mut sm);
        }
        let store = node.into_store();
        assert!(raft::Storage::first_index(&store).unwrap() > 20);
        // The checkpoint promised the state was durable; a wiped state machine cannot be
        // rebuilt from a compacted log.
        let mut wiped = TestStateMachine::checkpointing();
        let err = Node::new(config(), store, &mut wiped).unwrap_err();
        assert!(
            matches!(&err, Error::Inconsistent(m) if m.contains("durable state was lost")),
            "{err}"
        );
    }

    #[test]
    fn a_state_machine_ahead_of_the_log_is_refused() {
        let (node, mut sm) = leader_with_entries(3);
        let mut store = MemLogStore::new();
        Node::bootstrap(&mut store, &[1]).unwrap();
        drop(node);
        let err = Node::new(config(), store, &mut sm).unwrap_err();
        assert!(matches!(err, Error::Inconsistent(_)), "{err}");
    }
}
