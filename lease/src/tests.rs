//! Deterministic tests: every instant is an offset from one base instant.

use std::time::{Duration, Instant};

use super::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn primary(min_ttl: i64, t0: Instant) -> Lessor {
    let mut lessor = Lessor::new(LessorConfig::with_min_ttl(min_ttl));
    lessor.promote(t0, Duration::ZERO);
    lessor
}

#[test]
fn grant_raises_ttl_to_the_minimum_and_refuses_bad_requests() {
    let t0 = Instant::now();
    let mut lessor = primary(2, t0);
    let cases: &[(LeaseId, i64, Result<i64, Error>)] = &[
        (1, 1, Ok(2)),
        (2, 2, Ok(2)),
        (3, 60, Ok(60)),
        (4, -5, Ok(2)),
        (5, MAX_LEASE_TTL, Ok(MAX_LEASE_TTL)),
        (6, MAX_LEASE_TTL + 1, Err(Error::TtlTooLarge)),
        (1, 10, Err(Error::LeaseExists)),
        (NO_LEASE, 10, Err(Error::LeaseNotFound)),
    ];
    for &(id, ttl, ref want) in cases {
        let got = lessor.grant(id, ttl, t0).map(|record| record.ttl);
        assert_eq!(&got, want, "grant({id}, {ttl})");
    }
    assert_eq!(lessor.ids(), vec![1, 2, 3, 4, 5]);
}

#[test]
fn keys_attach_move_and_detach() {
    let t0 = Instant::now();
    let mut lessor = primary(2, t0);
    lessor.grant(1, 10, t0).unwrap();
    lessor.grant(2, 10, t0).unwrap();
    lessor.attach(b"a".to_vec(), 1);
    lessor.attach(b"b".to_vec(), 1);
    lessor.attach(b"c".to_vec(), 1);
    // Put again with another lease, put without a lease, delete.
    lessor.attach(b"a".to_vec(), 2);
    lessor.attach(b"b".to_vec(), NO_LEASE);
    lessor.detach(b"c");
    // A lease that does not exist attaches nothing.
    lessor.attach(b"d".to_vec(), 99);
    let keys = |lessor: &Lessor, id| lessor.time_to_live(id, t0, true).unwrap().keys;
    assert_eq!(keys(&lessor, 1), Vec::<Vec<u8>>::new());
    assert_eq!(keys(&lessor, 2), vec![b"a".to_vec()]);
    assert_eq!(lessor.lease_of(b"a"), Some(2));
    assert_eq!(lessor.lease_of(b"b"), None);
    assert_eq!(lessor.lease_of(b"d"), None);
    assert_eq!(lessor.revoke(2).unwrap(), vec![b"a".to_vec()]);
    assert_eq!(lessor.lease_of(b"a"), None);
    assert_eq!(lessor.revoke(2), Err(Error::LeaseNotFound));
}

#[test]
fn revoke_returns_every_key_in_order() {
    let t0 = Instant::now();
    let mut lessor = primary(2, t0);
    lessor.grant(1, 10, t0).unwrap();
    for key in ["z", "m", "a"] {
        lessor.attach(key.as_bytes().to_vec(), 1);
    }
    assert_eq!(
        lessor.revoke(1).unwrap(),
        vec![b"a".to_vec(), b"m".to_vec(), b"z".to_vec()]
    );
    assert!(lessor.is_empty());
}

#[test]
fn primary_expires_renewed_leases_later() {
    let t0 = Instant::now();
    let mut lessor = primary(2, t0);
    lessor.grant(1, 10, t0).unwrap();
    lessor.grant(2, 5, t0).unwrap();
    assert_eq!(lessor.expired(t0 + secs(4), 10), Vec::<LeaseId>::new());
    assert_eq!(lessor.renew(2, t0 + secs(4)).unwrap().ttl, 5);
    assert_eq!(
        lessor
            .time_to_live(2, t0 + secs(6), false)
            .unwrap()
            .remaining_ttl,
        3
    );
    assert_eq!(lessor.expired(t0 + secs(8), 10), Vec::<LeaseId>::new());
    assert_eq!(
        lessor.expired(t0 + secs(9) - Duration::from_millis(1), 10),
        Vec::<LeaseId>::new()
    );
    // Lease 2, renewed at 4 s with TTL 5, expires at 9 s; lease 1 at 10 s.
    assert_eq!(lessor.expired(t0 + secs(10), 10), vec![2, 1]);
    assert_eq!(lessor.expired(t0 + secs(10), 10), Vec::<LeaseId>::new());
}

#[test]
fn expired_leases_cannot_be_renewed_and_are_offered_again_until_revoked() {
    let t0 = Instant::now();
    let mut lessor = primary(2, t0);
    lessor.grant(1, 5, t0).unwrap();
    assert_eq!(lessor.expired(t0 + secs(5), 10), vec![1]);
    assert_eq!(lessor.renew(1, t0 + secs(5)), Err(Error::LeaseNotFound));
    assert_eq!(
        lessor
            .time_to_live(1, t0 + secs(5), false)
            .unwrap()
            .remaining_ttl,
        0
    );
    // The revoke proposal was lost: the lease is offered again after the retry interval.
    assert_eq!(lessor.expired(t0 + secs(7), 10), Vec::<LeaseId>::new());
    assert_eq!(lessor.expired(t0 + secs(8), 10), vec![1]);
    lessor.revoke(1).unwrap();
    assert_eq!(lessor.expired(t0 + secs(100), 10), Vec::<LeaseId>::new());
}

#[test]
fn expiry_is_reported_in_batches_of_the_limit_earliest_first() {
    let t0 = Instant::now();
    let mut lessor = primary(1, t0);
    for id in 1..=25 {
        lessor.grant(id, 30 - id, t0).unwrap();
    }
    let now = t0 + secs(100);
    let first = lessor.expired(now, 10);
    assert_eq!(first, (16..=25).rev().collect::<Vec<_>>());
    assert_eq!(lessor.expired(now, 10).len(), 10);
    assert_eq!(lessor.expired(now, 10), vec![5, 4, 3, 2, 1]);
    assert_eq!(lessor.expired(now, 10), Vec::<LeaseId>::new());
}

#[test]
fn followers_never_expire_and_cannot_renew() {
    let t0 = Instant::now();
    let mut follower = Lessor::new(LessorConfig::with_min_ttl(2));
    follower.grant(1, 5, t0).unwrap();
    assert_eq!(follower.expired(t0 + secs(1000), 10), Vec::<LeaseId>::new());
    assert_eq!(follower.renew(1, t0), Err(Error::NotPrimary));
    assert_eq!(
        follower
            .time_to_live(1, t0 + secs(1000), false)
            .unwrap()
            .remaining_ttl,
        5
    );
}

#[test]
fn promotion_gives_every_lease_its_full_ttl_plus_the_extension() {
    let t0 = Instant::now();
    let mut lessor = primary(2, t0);
    lessor.grant(1, 10, t0).unwrap();
    // Leadership is lost at 8 s and regained at 20 s (after an election timeout).
    lessor.demote();
    assert_eq!(lessor.expired(t0 + secs(19), 10), Vec::<LeaseId>::new());
    lessor.promote(t0 + secs(20), secs(1));
    assert_eq!(lessor.expired(t0 + secs(30), 10), Vec::<LeaseId>::new());
    assert_eq!(lessor.expired(t0 + secs(31), 10), vec![1]);
}

#[test]
fn a_demoted_lessor_forgets_pending_expiries() {
    let t0 = Instant::now();
    let mut lessor = primary(2, t0);
    lessor.grant(1, 5, t0).unwrap();
    assert_eq!(lessor.expired(t0 + secs(6), 10), vec![1]);
    // The revoke was lost with the leadership; a new term starts the lease afresh.
    lessor.demote();
    lessor.promote(t0 + secs(10), Duration::ZERO);
    assert!(lessor.renew(1, t0 + secs(11)).is_ok());
}

fn checkpointing(min_ttl: i64, interval: u64) -> LessorConfig {
    LessorConfig {
        checkpoint_interval: Some(secs(interval)),
        ..LessorConfig::with_min_ttl(min_ttl)
    }
}

#[test]
fn checkpoints_carry_the_remaining_ttl_across_leader_changes() {
    let t0 = Instant::now();
    let mut leader = Lessor::new(checkpointing(2, 60));
    let mut follower = Lessor::new(checkpointing(2, 60));
    leader.promote(t0, Duration::ZERO);
    // Short leases are never checkpointed.
    for lessor in [&mut leader, &mut follower] {
        lessor.grant(1, 1000, t0).unwrap();
        lessor.grant(2, 30, t0).unwrap();
    }
    assert_eq!(leader.due_checkpoints(t0 + secs(59), 10), vec![]);
    let due = leader.due_checkpoints(t0 + secs(60), 10);
    assert_eq!(due, vec![(1, 940)]);
    // The checkpoint is applied on every member (through raft).
    for lessor in [&mut leader, &mut follower] {
        let record = lessor.checkpoint(1, 940, t0 + secs(60)).unwrap();
        assert_eq!(
            record,
            LeaseRecord {
                id: 1,
                ttl: 1000,
                remaining_ttl: 940
            }
        );
    }
    assert_eq!(follower.checkpoint(3, 5, t0), None);
    // The follower takes over: the lease has 940 s left, not 1000.
    follower.promote(t0 + secs(61), Duration::ZERO);
    // (Lease 2, never checkpointed, has its full 30 s from the promotion.)
    assert_eq!(follower.expired(t0 + secs(61 + 939), 10), vec![2]);
    assert_eq!(follower.expired(t0 + secs(61 + 940), 10), vec![1]);
}

#[test]
fn renewal_asks_to_clear_a_checkpoint() {
    let t0 = Instant::now();
    let mut lessor = Lessor::new(checkpointing(2, 60));
    lessor.promote(t0, Duration::ZERO);
    lessor.grant(1, 1000, t0).unwrap();
    let renewed = lessor.renew(1, t0 + secs(1)).unwrap();
    assert_eq!(
        renewed,
        Renewed {
            ttl: 1000,
            clear_checkpoint: false
        }
    );
    lessor.checkpoint(1, 900, t0 + secs(2)).unwrap();
    assert!(lessor.renew(1, t0 + secs(3)).unwrap().clear_checkpoint);
    lessor.checkpoint(1, 0, t0 + secs(3)).unwrap();
    assert!(!lessor.renew(1, t0 + secs(4)).unwrap().clear_checkpoint);
    // Without checkpoints enabled a renewal never asks.
    let mut plain = primary(2, t0);
    plain.recover(
        [LeaseRecord {
            id: 1,
            ttl: 100,
            remaining_ttl: 50,
        }],
        [],
    );
    plain.promote(t0, Duration::ZERO);
    assert!(!plain.renew(1, t0).unwrap().clear_checkpoint);
}

#[test]
fn records_round_trip_and_recovery_rebuilds_keys() {
    let record = LeaseRecord {
        id: 0x1234_5678_9abc,
        ttl: 77,
        remaining_ttl: 12,
    };
    let decoded = LeaseRecord::decode(&LeaseRecord::key(record.id), &record.encode_value());
    assert_eq!(decoded, Ok(record));
    assert!(LeaseRecord::decode(b"short", &record.encode_value()).is_err());
    assert_eq!(
        LeaseRecord::decode(&LeaseRecord::key(5), b"1234"),
        Err(Error::CorruptRecord(5))
    );

    let t0 = Instant::now();
    let mut lessor = primary(2, t0);
    lessor.grant(9, 100, t0).unwrap();
    lessor.recover(
        [
            record,
            LeaseRecord {
                id: 3,
                ttl: 10,
                remaining_ttl: 0,
            },
        ],
        [
            (b"k1".to_vec(), record.id),
            (b"k2".to_vec(), 3),
            (b"orphan".to_vec(), 42),
        ],
    );
    assert!(!lessor.is_primary());
    assert_eq!(lessor.ids(), vec![3, record.id]);
    let status = lessor.time_to_live(record.id, t0, true).unwrap();
    assert_eq!(status.keys, vec![b"k1".to_vec()]);
    assert_eq!(status.remaining_ttl, 12);
    assert_eq!(lessor.lease_of(b"orphan"), None);
}

#[test]
fn huge_ttls_do_not_overflow_the_clock() {
    let t0 = Instant::now();
    let mut lessor = primary(2, t0);
    lessor.grant(1, MAX_LEASE_TTL, t0).unwrap();
    assert_eq!(lessor.renew(1, t0 + secs(1)).unwrap().ttl, MAX_LEASE_TTL);
    assert_eq!(
        lessor.expired(t0 + secs(1_000_000), 10),
        Vec::<LeaseId>::new()
    );
}

#[test]
fn leases_list_soonest_expiry_first_as_etcd_lists_them() {
    let t0 = Instant::now();
    let mut lessor = primary(2, t0);
    lessor.grant(1, 300, t0).unwrap();
    lessor.grant(2, 100, t0).unwrap();
    lessor.grant(3, 150, t0).unwrap();
    assert_eq!(lessor.ids_by_expiry(), vec![2, 3, 1]);
    // A renewal moves a lease's expiry (t0+100 to t0+190), and with it its place.
    lessor.renew(2, t0 + secs(90)).unwrap();
    assert_eq!(lessor.ids_by_expiry(), vec![3, 2, 1]);

    // A lessor that is not primary has no expiry times: id order.
    let mut follower = Lessor::new(LessorConfig::with_min_ttl(2));
    follower.grant(9, 100, t0).unwrap();
    follower.grant(4, 300, t0).unwrap();
    assert_eq!(follower.ids_by_expiry(), vec![4, 9]);
}
