//! Watch stream checks, each stream against the key-value history and against the other streams.
//!
//! A stream over `prefix` from `start_revision` must deliver, in revision order (per key strictly
//! increasing), each change of a key under the prefix exactly once, and nothing else:
//!
//! * every event names a write of the history: a put event carries a value some put or
//!   compare-and-set wrote (values are unique, so it names the write) at that write's revision
//!   when the history pins it; a delete event sits at the revision of an acknowledged delete of
//!   the key, or there is a delete of the key of unknown outcome it may be;
//! * every write the history pins to a revision in `start_revision..=complete_to` on a key under
//!   the prefix is delivered (`complete_to` is as far as the stream vouched; see `WatchRecord`);
//! * streams agree: one event per key and revision, and one revision per write.
//!
//! The checks assume, as the workload guarantees, that every write touches one key and that
//! nothing else writes under the prefix during the run.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::index::Index;
use super::{Anomaly, AnomalyKind, Findings, describe_event};
use crate::chaos::history::{Call, EventKind, Outcome, WatchEvent, WatchRecord};

pub(super) fn check(index: &Index<'_>, findings: &mut Findings) {
    let mut pinned: BTreeMap<i64, usize> = BTreeMap::new();
    for (&position, &revision) in &index.write_revision {
        let slot = pinned.entry(revision).or_insert(position);
        *slot = (*slot).min(position);
    }
    let mut checker = Checker {
        index,
        pinned,
        first_event: HashMap::new(),
        key_at: HashMap::new(),
        revision_of_value: HashMap::new(),
    };
    for (stream, record) in index.history.watches.iter().enumerate() {
        checker.check_stream(stream, record, findings);
    }
}

struct Checker<'h, 'i> {
    index: &'i Index<'h>,
    /// The write the history pins to each revision.
    pinned: BTreeMap<i64, usize>,
    /// (key, revision) → the first event any stream delivered for it, and which stream.
    first_event: HashMap<(&'h str, i64), (usize, &'h WatchEvent)>,
    /// revision → the key of the first event at it, and which stream.
    key_at: HashMap<i64, (&'h str, usize)>,
    /// A put event's value → its revision, and which stream (for writes the history does not pin).
    revision_of_value: HashMap<&'h str, (i64, usize)>,
}

impl<'h> Checker<'h, '_> {
    fn check_stream(&mut self, stream: usize, record: &'h WatchRecord, findings: &mut Findings) {
        let scope = format!("watch stream {stream}");
        let about = format!(
            "stream {stream} of watcher {}: prefix {:?}, from revision {}, complete to {}",
            record.watcher, record.prefix, record.start_revision, record.complete_to
        );
        let report = |kind: AnomalyKind, key: &str, summary: String, events: &[&WatchEvent]| {
            let mut anomaly = Anomaly::new(kind, Some(key), summary).with_note(about.clone());
            for event in events {
                anomaly = anomaly.with_note(format!("event: {}", describe_event(event)));
            }
            anomaly
        };
        let mut delivered: HashSet<(&str, i64)> = HashSet::new();
        let mut last: Option<(i64, &WatchEvent)> = None;
        let mut last_of_key: HashMap<&str, (i64, &WatchEvent)> = HashMap::new();
        for event in &record.events {
            let key = event.key.as_str();
            let revision = event.mod_revision;
            if !key.starts_with(&record.prefix) || revision < record.start_revision {
                findings.push(
                    &scope,
                    report(
                        AnomalyKind::WatchOutOfRange,
                        key,
                        "an event outside the stream's prefix or before its start revision"
                            .to_string(),
                        &[event],
                    ),
                );
                continue;
            }
            if !delivered.insert((key, revision)) {
                findings.push(
                    &scope,
                    report(
                        AnomalyKind::WatchDuplicate,
                        key,
                        format!("the event at revision {revision} was delivered twice"),
                        &[event],
                    ),
                );
                continue;
            }
            let backwards = match (last, last_of_key.get(key)) {
                (Some((previous, before)), _) if revision < previous => Some(before),
                (_, Some(&(previous, before))) if revision <= previous => Some(before),
                _ => None,
            };
            if let Some(before) = backwards {
                findings.push(
                    &scope,
                    report(
                        AnomalyKind::WatchOutOfOrder,
                        key,
                        format!(
                            "an event at revision {revision} after one at revision {}",
                            before.mod_revision
                        ),
                        &[before, event],
                    ),
                );
            }
            if last.is_none_or(|(previous, _)| revision > previous) {
                last = Some((revision, event));
            }
            let newest = last_of_key.entry(key).or_insert((revision, event));
            if revision > newest.0 {
                *newest = (revision, event);
            }
            if let Some(anomaly) = self.correspondence(event) {
                findings.push(&scope, anomaly.with_note(about.clone()));
            }
            if let Some(anomaly) = self.agreement(stream, event) {
                findings.push(&scope, anomaly.with_note(about.clone()));
            }
        }

        // Every pinned write in the vouched range must be there. A stream that was asked for
        // revision 0 ("from now") vouches from its first event.
        let from = if record.start_revision > 0 {
            record.start_revision
        } else {
            match record.events.first() {
                Some(event) => event.mod_revision,
                None => return,
            }
        };
        if from > record.complete_to {
            return;
        }
        let operations = &self.index.history.operations;
        for (&revision, &position) in self.pinned.range(from..=record.complete_to) {
            let op = &operations[position];
            let key = op.call.key();
            if key.starts_with(&record.prefix) && !delivered.contains(&(key, revision)) {
                findings.push(
                    &scope,
                    report(
                        AnomalyKind::WatchGap,
                        key,
                        format!(
                            "the write at revision {revision} is missing, though the stream \
                             vouched for revisions {from}..={}",
                            record.complete_to
                        ),
                        &[],
                    )
                    .with_operations([op]),
                );
            }
        }
    }

    /// The event must be a write of the history, at that write's revision.
    fn correspondence(&mut self, event: &'h WatchEvent) -> Option<Anomaly> {
        let operations = &self.index.history.operations;
        let key = event.key.as_str();
        let revision = event.mod_revision;
        let unknown = |summary: String| {
            Some(
                Anomaly::new(AnomalyKind::WatchUnknownEvent, Some(key), summary)
                    .with_note(format!("event: {}", describe_event(event))),
            )
        };
        let wrong = |summary: String, position: usize| {
            Some(
                Anomaly::new(AnomalyKind::WatchWrongRevision, Some(key), summary)
                    .with_operations([&operations[position]])
                    .with_note(format!("event: {}", describe_event(event))),
            )
        };
        let pinned_here = self.pinned.get(&revision).copied();
        match event.kind {
            EventKind::Put => {
                let Some(writer) = self.index.writer(&event.value, key) else {
                    return unknown(format!(
                        "a put event of {:?}, which no operation wrote to this key",
                        event.value
                    ));
                };
                let op = &operations[writer];
                if let Outcome::Cas {
                    succeeded: false, ..
                } = op.outcome
                {
                    return unknown(format!(
                        "a put event of {:?}, written only by a compare-and-set that reported \
                         failure",
                        event.value
                    ));
                }
                if let Some(&pinned) = self.index.write_revision.get(&writer) {
                    if pinned != revision {
                        return wrong(
                            format!(
                                "a put event at revision {revision} for the write at revision \
                                 {pinned}"
                            ),
                            writer,
                        );
                    }
                    return None;
                }
                if let Some(other) = pinned_here {
                    return wrong(
                        format!(
                            "a put event at revision {revision}, which belongs to another write"
                        ),
                        other,
                    );
                }
                None
            }
            EventKind::Delete => {
                if let Some(position) = pinned_here {
                    let op = &operations[position];
                    if matches!(op.call, Call::Delete { .. }) && op.call.key() == key {
                        return None;
                    }
                    return wrong(
                        format!(
                            "a delete event at revision {revision}, which belongs to another write"
                        ),
                        position,
                    );
                }
                let deletes: Vec<usize> = self
                    .index
                    .by_key
                    .get(key)
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|&p| matches!(operations[p].call, Call::Delete { .. }))
                    .collect();
                if deletes
                    .iter()
                    .any(|&p| operations[p].outcome == Outcome::Unknown)
                {
                    // One of the deletes of unknown outcome may have made it.
                    return None;
                }
                unknown(format!(
                    "a delete event at revision {revision}, but no delete of the key was \
                     acknowledged at that revision and none has an unknown outcome"
                ))
            }
        }
    }

    /// All streams must tell the same story.
    fn agreement(&mut self, stream: usize, event: &'h WatchEvent) -> Option<Anomaly> {
        let key = event.key.as_str();
        let revision = event.mod_revision;
        let disagree = |summary: String, other: &WatchEvent, other_stream: usize| {
            Some(
                Anomaly::new(AnomalyKind::WatchDisagreement, Some(key), summary)
                    .with_note(format!("event: {}", describe_event(event)))
                    .with_note(format!(
                        "stream {other_stream} delivered: {}",
                        describe_event(other)
                    )),
            )
        };
        let (first_stream, first) = *self
            .first_event
            .entry((key, revision))
            .or_insert((stream, event));
        if first.kind != event.kind || first.value != event.value {
            return disagree(
                format!("two different events for the key at revision {revision}"),
                first,
                first_stream,
            );
        }
        let (first_key, key_stream) = *self.key_at.entry(revision).or_insert((key, stream));
        if first_key != key {
            return Some(
                Anomaly::new(
                    AnomalyKind::RevisionReused,
                    Some(key),
                    format!(
                        "events for two keys at revision {revision} ({first_key:?} in stream \
                         {key_stream}); every write here touches one key"
                    ),
                )
                .with_note(format!("event: {}", describe_event(event))),
            );
        }
        if event.kind == EventKind::Put {
            let (first_revision, value_stream) = *self
                .revision_of_value
                .entry(event.value.as_str())
                .or_insert((revision, stream));
            if first_revision != revision {
                return Some(
                    Anomaly::new(
                        AnomalyKind::WatchDisagreement,
                        Some(key),
                        format!(
                            "the write of {:?} delivered at revision {revision}, and at revision \
                             {first_revision} by stream {value_stream}",
                            event.value
                        ),
                    )
                    .with_note(format!("event: {}", describe_event(event))),
                );
            }
        }
        None
    }
}
