//! The checker's proof: handcrafted bad histories it must reject, good ones it must accept, and
//! seeded random histories from a simulated etcd (accepted as generated, rejected after a read is
//! made stale).

use super::*;
use crate::chaos::history::{ObservedKv, WatchRecord};

mod corpus;
mod random;
mod replay;

const MS: u64 = 1_000_000;

/// An operation with times in milliseconds; `ret` `None` for an unknown outcome.
fn op(client: usize, invoke: u64, ret: Option<u64>, call: Call, outcome: Outcome) -> Operation {
    Operation {
        client,
        invoke_ns: invoke * MS,
        return_ns: ret.map(|ret| ret * MS),
        call,
        outcome,
    }
}

fn put(key: &str, value: &str) -> Call {
    Call::Put {
        key: key.into(),
        value: value.into(),
    }
}

fn get(key: &str) -> Call {
    Call::Get { key: key.into() }
}

fn delete(key: &str) -> Call {
    Call::Delete { key: key.into() }
}

fn cas(key: &str, expected: Option<&str>, value: &str) -> Call {
    Call::Cas {
        key: key.into(),
        expected: expected.map(str::to_string),
        value: value.into(),
    }
}

fn written(revision: i64) -> Outcome {
    Outcome::Put { revision }
}

/// A read of `value` created at `create`, last modified at `modified`, at `version`.
fn read(header: i64, value: &str, create: i64, modified: i64, version: i64) -> Outcome {
    Outcome::Get {
        revision: header,
        kv: Some(ObservedKv {
            value: value.into(),
            create_revision: create,
            mod_revision: modified,
            version,
        }),
    }
}

fn absent(header: i64) -> Outcome {
    Outcome::Get {
        revision: header,
        kv: None,
    }
}

fn deleted(revision: i64, count: i64) -> Outcome {
    Outcome::Delete {
        revision,
        deleted: count,
    }
}

fn swapped(revision: i64, succeeded: bool) -> Outcome {
    Outcome::Cas {
        revision,
        succeeded,
    }
}

fn put_event(key: &str, value: &str, revision: i64) -> WatchEvent {
    WatchEvent {
        kind: EventKind::Put,
        key: key.into(),
        value: value.into(),
        mod_revision: revision,
    }
}

fn delete_event(key: &str, revision: i64) -> WatchEvent {
    WatchEvent {
        kind: EventKind::Delete,
        key: key.into(),
        value: String::new(),
        mod_revision: revision,
    }
}

fn stream(watcher: usize, start: i64, complete_to: i64, events: Vec<WatchEvent>) -> WatchRecord {
    WatchRecord {
        watcher,
        prefix: "k".into(),
        start_revision: start,
        events,
        complete_to,
    }
}

fn history(operations: Vec<Operation>, watches: Vec<WatchRecord>) -> History {
    History {
        operations,
        watches,
    }
}

fn kinds(report: &CheckReport) -> Vec<AnomalyKind> {
    report.anomalies.iter().map(|a| a.kind).collect()
}

#[track_caller]
fn assert_accepted(history: &History) {
    let report = check(history);
    assert!(report.is_ok(), "a good history was rejected:\n{report}");
}

#[track_caller]
fn assert_rejected_with(history: &History, kind: AnomalyKind) -> CheckReport {
    let report = check(history);
    assert!(
        kinds(&report).contains(&kind),
        "expected a {kind:?} anomaly, got:\n{report}"
    );
    report
}
