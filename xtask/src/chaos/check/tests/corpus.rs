//! Handcrafted histories, small enough to verify by hand.

use super::*;

// ---- bad histories: each must be rejected, for the reason it was built for ----

#[test]
fn stale_read_after_a_newer_write_completed() {
    let h = history(
        vec![
            op(1, 0, Some(1), put("k", "a"), written(2)),
            op(1, 2, Some(3), put("k", "b"), written(3)),
            // Sees "a" (with its true revisions) after "b" was acknowledged.
            op(2, 4, Some(5), get("k"), read(3, "a", 2, 2, 1)),
        ],
        vec![],
    );
    let report = assert_rejected_with(&h, AnomalyKind::NotLinearizable);
    // Named for what it is, with the write that made it stale.
    let text = report.to_string();
    assert_eq!(
        kinds(&report),
        [AnomalyKind::NotLinearizable, AnomalyKind::StaleRead],
        "{text}"
    );
    assert_eq!(
        report.anomalies[1].operations,
        [h.operations[1].clone(), h.operations[2].clone()]
    );
    assert!(
        text.contains(
            "[stale read] key \"k\": a read returned \"a\" (mod_revision 2), older than \
             revision 3 that a write completed before the read was invoked had established"
        ),
        "{text}"
    );
    // Shrunk to the newer write and the read, starting from a state left open (which may hold
    // "a"), and the write of "a", whose revision is the floor of that open state.
    assert_eq!(report.anomalies[0].operations.len(), 3, "{text}");
    assert!(
        text.contains("client   2         4.000 ..        5.000 ms  get k"),
        "{text}"
    );
    assert!(
        text.contains("state before 2.000 ms is left open"),
        "{text}"
    );
}

#[test]
fn stale_read_with_an_old_header_is_also_a_revision_going_backwards() {
    let h = history(
        vec![
            op(1, 0, Some(1), put("k", "a"), written(2)),
            op(1, 2, Some(3), put("k", "b"), written(3)),
            op(2, 4, Some(5), get("k"), read(2, "a", 2, 2, 1)),
        ],
        vec![],
    );
    let report = assert_rejected_with(&h, AnomalyKind::RevisionWentBackwards);
    assert!(kinds(&report).contains(&AnomalyKind::NotLinearizable));
}

#[test]
fn stale_read_after_a_newer_read_completed() {
    let h = history(
        vec![
            op(1, 0, Some(1), put("k", "a"), written(2)),
            // The put of "b" is still running, yet one read sees it and a later one does not.
            op(2, 2, None, put("k", "b"), Outcome::Unknown),
            op(3, 3, Some(4), get("k"), read(3, "b", 2, 3, 2)),
            op(4, 5, Some(6), get("k"), read(3, "a", 2, 2, 1)),
        ],
        vec![],
    );
    let report = assert_rejected_with(&h, AnomalyKind::StaleRead);
    assert!(
        report.to_string().contains(
            "a read returned \"a\" (mod_revision 2), older than revision 3 that a read completed"
        ),
        "{report}"
    );
}

#[test]
fn stale_absence_after_a_put_completed() {
    let h = history(
        vec![
            op(1, 0, Some(1), put("k", "a"), written(2)),
            // No value, from the store as it was before the put.
            op(2, 2, Some(3), get("k"), absent(1)),
        ],
        vec![],
    );
    let report = assert_rejected_with(&h, AnomalyKind::StaleRead);
    assert!(
        report
            .to_string()
            .contains("a read returned no value as of revision 1"),
        "{report}"
    );
}

#[test]
fn a_stale_delete_is_a_stale_read_for_later_reads() {
    let h = history(
        vec![
            op(1, 0, Some(1), put("k", "a"), written(2)),
            op(1, 2, Some(3), delete("k"), deleted(3, 1)),
            // "a" again after its delete was acknowledged.
            op(2, 4, Some(5), get("k"), read(3, "a", 2, 2, 1)),
        ],
        vec![],
    );
    let report = assert_rejected_with(&h, AnomalyKind::StaleRead);
    assert!(
        report.to_string().contains("that a delete completed"),
        "{report}"
    );
}

#[test]
fn lost_write_never_visible_while_later_reads_see_the_older_value() {
    let h = history(
        vec![
            op(1, 0, Some(1), put("k", "a"), written(2)),
            op(2, 2, Some(3), put("k", "b"), written(3)),
            op(3, 10, Some(11), get("k"), read(5, "a", 2, 2, 1)),
            op(3, 12, Some(13), get("k"), read(5, "a", 2, 2, 1)),
        ],
        vec![],
    );
    assert_rejected_with(&h, AnomalyKind::NotLinearizable);
}

#[test]
fn lost_write_betrayed_by_the_version() {
    // "b" was acknowledged between "a" and "c", but the read counts only two versions.
    let h = history(
        vec![
            op(1, 0, Some(1), put("k", "a"), written(2)),
            op(1, 2, Some(3), put("k", "b"), written(3)),
            op(1, 4, Some(5), put("k", "c"), written(4)),
            op(2, 6, Some(7), get("k"), read(4, "c", 2, 4, 2)),
        ],
        vec![],
    );
    assert_rejected_with(&h, AnomalyKind::NotLinearizable);
}

#[test]
fn sequential_writes_observed_in_reverse_order() {
    // "b" was written after "a" completed, yet a reader sees "b" and then "a".
    let h = history(
        vec![
            op(1, 0, Some(1), put("k", "a"), written(2)),
            op(1, 2, Some(3), put("k", "b"), written(3)),
            op(2, 0, Some(4), get("k"), read(3, "b", 2, 3, 2)),
            op(2, 5, Some(6), get("k"), read(3, "a", 2, 2, 1)),
        ],
        vec![],
    );
    assert_rejected_with(&h, AnomalyKind::NotLinearizable);
}

#[test]
fn sequential_writes_given_revisions_in_reverse_order() {
    let h = history(
        vec![
            op(1, 0, Some(1), put("k", "a"), written(3)),
            op(1, 2, Some(3), put("k", "b"), written(2)),
        ],
        vec![],
    );
    let report = assert_rejected_with(&h, AnomalyKind::RevisionWentBackwards);
    assert!(kinds(&report).contains(&AnomalyKind::NotLinearizable));
}

#[test]
fn read_of_a_value_never_written() {
    let h = history(
        vec![
            op(1, 0, Some(1), put("k", "a"), written(2)),
            op(2, 2, Some(3), get("k"), read(2, "zzz", 2, 2, 1)),
        ],
        vec![],
    );
    assert_rejected_with(&h, AnomalyKind::PhantomRead);
}

#[test]
fn read_of_a_value_written_to_another_key_or_by_a_failed_cas_or_later() {
    let other_key = history(
        vec![
            op(1, 0, Some(1), put("j", "a"), written(2)),
            op(2, 2, Some(3), get("k"), read(2, "a", 2, 2, 1)),
        ],
        vec![],
    );
    assert_rejected_with(&other_key, AnomalyKind::PhantomRead);
    let failed_cas = history(
        vec![
            op(1, 0, Some(1), cas("k", Some("x"), "a"), swapped(1, false)),
            op(2, 2, Some(3), get("k"), read(2, "a", 2, 2, 1)),
        ],
        vec![],
    );
    assert_rejected_with(&failed_cas, AnomalyKind::PhantomRead);
    let from_the_future = history(
        vec![
            op(2, 0, Some(1), get("k"), read(2, "a", 2, 2, 1)),
            op(1, 5, None, put("k", "a"), Outcome::Unknown),
        ],
        vec![],
    );
    assert_rejected_with(&from_the_future, AnomalyKind::PhantomRead);
}

#[test]
fn read_reporting_another_revision_than_the_write_got() {
    let h = history(
        vec![
            op(1, 0, Some(1), put("k", "a"), written(2)),
            op(2, 2, Some(3), get("k"), read(4, "a", 3, 3, 1)),
        ],
        vec![],
    );
    assert_rejected_with(&h, AnomalyKind::ReadWrongRevision);
}

#[test]
fn revision_going_backwards_across_keys() {
    // Per key both are fine; the store revision went from 10 back to 8.
    let h = history(
        vec![
            op(1, 0, Some(1), get("k1"), absent(10)),
            op(2, 2, Some(3), get("k2"), absent(8)),
        ],
        vec![],
    );
    assert_rejected_with(&h, AnomalyKind::RevisionWentBackwards);
}

#[test]
fn write_not_above_a_revision_already_seen_on_another_key() {
    let h = history(
        vec![
            op(1, 0, Some(1), get("k1"), absent(10)),
            op(2, 2, Some(3), put("k2", "a"), written(9)),
        ],
        vec![],
    );
    assert_rejected_with(&h, AnomalyKind::RevisionWentBackwards);
}

#[test]
fn two_writes_acknowledged_at_one_revision() {
    let h = history(
        vec![
            op(1, 0, Some(5), put("k1", "a"), written(2)),
            op(2, 0, Some(5), put("k2", "b"), written(2)),
        ],
        vec![],
    );
    assert_rejected_with(&h, AnomalyKind::RevisionReused);
}

#[test]
fn header_below_the_returned_mod_revision() {
    let h = history(
        vec![
            op(1, 0, Some(1), put("k", "a"), written(5)),
            op(2, 2, Some(3), get("k"), read(4, "a", 5, 5, 1)),
        ],
        vec![],
    );
    assert_rejected_with(&h, AnomalyKind::ImpossibleResult);
}

#[test]
fn delete_of_an_absent_key_and_cas_on_a_wrong_value() {
    let delete_nothing = history(vec![op(1, 0, Some(1), delete("k"), deleted(2, 1))], vec![]);
    assert_rejected_with(&delete_nothing, AnomalyKind::NotLinearizable);
    let missed_delete = history(
        vec![
            op(1, 0, Some(1), put("k", "a"), written(2)),
            op(1, 2, Some(3), delete("k"), deleted(2, 0)),
        ],
        vec![],
    );
    assert_rejected_with(&missed_delete, AnomalyKind::NotLinearizable);
    let wrong_cas = history(
        vec![
            op(1, 0, Some(1), put("k", "a"), written(2)),
            op(1, 2, Some(3), put("k", "b"), written(3)),
            op(1, 4, Some(5), cas("k", Some("a"), "c"), swapped(4, true)),
        ],
        vec![],
    );
    assert_rejected_with(&wrong_cas, AnomalyKind::NotLinearizable);
    let cas_failed_though_it_held = history(
        vec![
            op(1, 0, Some(1), put("k", "a"), written(2)),
            op(1, 2, Some(3), cas("k", Some("a"), "c"), swapped(2, false)),
        ],
        vec![],
    );
    assert_rejected_with(&cas_failed_though_it_held, AnomalyKind::NotLinearizable);
}

#[test]
fn unknown_write_cannot_explain_a_read_before_its_write_was_needed() {
    // The unknown put of "x" may explain version 3 only if it happened before "b": it was
    // invoked after "b" completed, so it cannot.
    let h = history(
        vec![
            op(1, 0, Some(1), put("k", "a"), written(2)),
            op(1, 2, Some(3), put("k", "b"), written(4)),
            op(2, 5, None, put("k", "x"), Outcome::Unknown),
            op(3, 6, Some(7), get("k"), read(4, "b", 2, 4, 3)),
        ],
        vec![],
    );
    assert_rejected_with(&h, AnomalyKind::NotLinearizable);
}

fn two_writes() -> Vec<Operation> {
    vec![
        op(1, 0, Some(1), put("k", "a"), written(2)),
        op(1, 2, Some(3), put("k", "b"), written(3)),
        op(1, 4, Some(5), delete("k"), deleted(4, 1)),
    ]
}

#[test]
fn duplicated_watch_event() {
    let events = vec![
        put_event("k", "a", 2),
        put_event("k", "b", 3),
        put_event("k", "b", 3),
        delete_event("k", 4),
    ];
    let h = history(two_writes(), vec![stream(0, 1, 4, events)]);
    assert_rejected_with(&h, AnomalyKind::WatchDuplicate);
}

#[test]
fn missing_watch_event() {
    let events = vec![put_event("k", "a", 2), delete_event("k", 4)];
    let h = history(two_writes(), vec![stream(0, 1, 4, events)]);
    let report = assert_rejected_with(&h, AnomalyKind::WatchGap);
    assert!(
        report.to_string().contains("revision 3 is missing"),
        "{report}"
    );
    // Not a gap when the stream did not vouch that far, or started after it.
    let short = vec![put_event("k", "a", 2)];
    assert_accepted(&history(two_writes(), vec![stream(0, 1, 2, short)]));
    let late = vec![delete_event("k", 4)];
    assert_accepted(&history(two_writes(), vec![stream(0, 4, 4, late)]));
}

#[test]
fn watch_events_out_of_order() {
    let events = vec![
        put_event("k", "b", 3),
        put_event("k", "a", 2),
        delete_event("k", 4),
    ];
    let h = history(two_writes(), vec![stream(0, 1, 4, events)]);
    assert_rejected_with(&h, AnomalyKind::WatchOutOfOrder);
}

#[test]
fn watch_event_with_a_wrong_revision() {
    let events = vec![
        put_event("k", "a", 2),
        put_event("k", "b", 5),
        delete_event("k", 6),
    ];
    let h = history(two_writes(), vec![stream(0, 1, 6, events)]);
    let report = assert_rejected_with(&h, AnomalyKind::WatchWrongRevision);
    // And the writes at 3 and 4 are missing.
    assert!(kinds(&report).contains(&AnomalyKind::WatchGap));
}

#[test]
fn watch_event_matching_no_write() {
    let phantom_value = vec![put_event("k", "a", 2), put_event("k", "zzz", 3)];
    let h = history(two_writes(), vec![stream(0, 1, 2, phantom_value)]);
    assert_rejected_with(&h, AnomalyKind::WatchUnknownEvent);
    let phantom_delete = vec![put_event("k", "a", 2), delete_event("k", 3)];
    let h = history(
        two_writes()[..2].to_vec(),
        vec![stream(0, 1, 2, phantom_delete)],
    );
    assert_rejected_with(&h, AnomalyKind::WatchWrongRevision);
    let no_delete_at_all = vec![put_event("k", "a", 2), delete_event("k", 7)];
    let h = history(
        two_writes()[..2].to_vec(),
        vec![stream(0, 1, 2, no_delete_at_all)],
    );
    assert_rejected_with(&h, AnomalyKind::WatchUnknownEvent);
}

#[test]
fn watch_event_out_of_range() {
    let before_start = vec![put_event("k", "a", 2), put_event("k", "b", 3)];
    let h = history(two_writes(), vec![stream(0, 3, 3, before_start)]);
    assert_rejected_with(&h, AnomalyKind::WatchOutOfRange);
}

#[test]
fn watch_streams_disagreeing() {
    // An unknown put whose revision only the streams tell: they must tell the same.
    let ops = vec![
        op(1, 0, Some(1), put("k", "a"), written(2)),
        op(2, 2, None, put("k", "x"), Outcome::Unknown),
    ];
    let one = stream(
        0,
        1,
        3,
        vec![put_event("k", "a", 2), put_event("k", "x", 3)],
    );
    let other = stream(
        1,
        1,
        4,
        vec![put_event("k", "a", 2), put_event("k", "x", 4)],
    );
    let h = history(ops.clone(), vec![one.clone(), other]);
    assert_rejected_with(&h, AnomalyKind::WatchDisagreement);
    let third = stream(2, 3, 3, vec![delete_event("k", 3)]);
    let h = history(
        [ops, vec![op(3, 2, None, delete("k"), Outcome::Unknown)]].concat(),
        vec![one, third],
    );
    assert_rejected_with(&h, AnomalyKind::WatchDisagreement);
}

// ---- good histories: each must be accepted ----

#[test]
fn concurrent_operations_in_either_order() {
    // The put overlaps both reads; one saw it, the other did not, and the read that did not
    // see it may have been ordered first even though it returned later.
    let h = history(
        vec![
            op(1, 0, Some(10), put("k", "a"), written(2)),
            op(2, 1, Some(5), get("k"), read(2, "a", 2, 2, 1)),
            op(3, 2, Some(6), get("k"), absent(1)),
        ],
        vec![],
    );
    assert_accepted(&h);
    // Two concurrent puts, observed in the order of their revisions.
    let h = history(
        vec![
            op(1, 0, Some(10), put("k", "a"), written(3)),
            op(2, 0, Some(10), put("k", "b"), written(2)),
            op(3, 11, Some(12), get("k"), read(3, "a", 2, 3, 2)),
        ],
        vec![],
    );
    assert_accepted(&h);
}

#[test]
fn unknown_write_that_took_effect() {
    let h = history(
        vec![
            op(1, 0, None, put("k", "a"), Outcome::Unknown),
            op(2, 5, Some(6), get("k"), read(2, "a", 2, 2, 1)),
            op(2, 7, Some(8), put("k", "b"), written(3)),
        ],
        vec![stream(
            0,
            1,
            3,
            vec![put_event("k", "a", 2), put_event("k", "b", 3)],
        )],
    );
    assert_accepted(&h);
}

#[test]
fn unknown_write_that_did_not_take_effect_or_took_it_late() {
    let never = history(
        vec![
            op(1, 0, None, put("k", "a"), Outcome::Unknown),
            op(2, 5, Some(6), get("k"), absent(1)),
            op(3, 7, Some(8), put("k", "b"), written(2)),
            op(2, 9, Some(10), get("k"), read(2, "b", 2, 2, 1)),
        ],
        vec![],
    );
    assert_accepted(&never);
    let late = history(
        vec![
            op(1, 0, None, put("k", "a"), Outcome::Unknown),
            op(2, 5, Some(6), get("k"), absent(1)),
            op(2, 7, Some(8), get("k"), read(2, "a", 2, 2, 1)),
        ],
        vec![],
    );
    assert_accepted(&late);
}

#[test]
fn unknown_writes_explain_versions_and_create_revisions() {
    // A quiet unknown put between "a" and "b" explains version 3.
    let version = history(
        vec![
            op(1, 0, Some(1), put("k", "a"), written(2)),
            op(2, 1, None, put("k", "x"), Outcome::Unknown),
            op(1, 2, Some(3), put("k", "b"), written(4)),
            op(3, 5, Some(6), get("k"), read(4, "b", 2, 4, 3)),
        ],
        vec![],
    );
    assert_accepted(&version);
    // An unknown put created the key; a later read binds its revision through create_revision.
    let create = history(
        vec![
            op(1, 0, None, put("k", "x"), Outcome::Unknown),
            op(2, 5, Some(6), put("k", "b"), written(7)),
            op(3, 8, Some(9), get("k"), read(7, "b", 3, 7, 2)),
        ],
        vec![],
    );
    assert_accepted(&create);
    // An unknown delete explains a read of absence after an acknowledged put.
    let removal = history(
        vec![
            op(1, 0, Some(1), put("k", "a"), written(2)),
            op(2, 2, None, delete("k"), Outcome::Unknown),
            op(3, 5, Some(6), get("k"), absent(3)),
        ],
        vec![stream(
            0,
            1,
            3,
            vec![put_event("k", "a", 2), delete_event("k", 3)],
        )],
    );
    assert_accepted(&removal);
}

#[test]
fn compare_and_set_that_failed_and_that_succeeded() {
    let h = history(
        vec![
            op(1, 0, Some(1), cas("k", None, "a"), swapped(2, true)),
            op(2, 2, Some(3), cas("k", None, "x"), swapped(2, false)),
            op(2, 4, Some(5), cas("k", Some("zz"), "y"), swapped(2, false)),
            op(1, 6, Some(7), cas("k", Some("a"), "b"), swapped(3, true)),
            op(3, 8, Some(9), get("k"), read(3, "b", 2, 3, 2)),
            // An unknown compare-and-set expecting "b", observed by a later read.
            op(1, 10, None, cas("k", Some("b"), "c"), Outcome::Unknown),
            op(3, 12, Some(13), get("k"), read(5, "c", 2, 4, 3)),
        ],
        vec![],
    );
    assert_accepted(&h);
}

#[test]
fn deletes_and_recreation() {
    let h = history(
        vec![
            op(1, 0, Some(1), put("k", "a"), written(2)),
            op(1, 2, Some(3), delete("k"), deleted(3, 1)),
            op(2, 4, Some(5), get("k"), absent(3)),
            op(2, 6, Some(7), delete("k"), deleted(3, 0)),
            op(1, 8, Some(9), put("k", "b"), written(4)),
            op(2, 10, Some(11), get("k"), read(4, "b", 4, 4, 1)),
        ],
        vec![stream(
            0,
            1,
            4,
            vec![
                put_event("k", "a", 2),
                delete_event("k", 3),
                put_event("k", "b", 4),
            ],
        )],
    );
    assert_accepted(&h);
}

#[test]
fn reads_on_other_keys_interleave_with_revisions() {
    // Writes to other keys move the revision; per key only the order matters.
    let h = history(
        vec![
            op(1, 0, Some(1), put("k1", "a"), written(2)),
            op(2, 2, Some(3), put("k2", "b"), written(3)),
            op(1, 4, Some(5), get("k1"), read(3, "a", 2, 2, 1)),
            op(2, 4, Some(6), put("k1", "c"), written(4)),
            op(3, 5, Some(7), get("k1"), read(3, "a", 2, 2, 1)),
        ],
        vec![],
    );
    assert_accepted(&h);
}

#[test]
fn report_prints_a_summary_and_every_anomaly() {
    let h = history(
        vec![
            op(1, 0, Some(1), put("k", "a"), written(2)),
            op(2, 2, Some(3), get("k"), read(2, "zzz", 2, 2, 1)),
        ],
        vec![],
    );
    let text = check(&h).to_string();
    assert!(
        text.starts_with("checked 2 operations on 1 keys and 0 watch streams: 1 anomaly\n"),
        "{text}"
    );
    assert!(text.contains("[phantom read] key \"k\""), "{text}");
    assert!(
        text.contains("get k  ->  \"zzz\" (create 2, mod 2, version 1; header revision 2)"),
        "{text}"
    );
}
