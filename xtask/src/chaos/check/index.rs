//! Lookups over a history that every check shares: value ids, who wrote each value, the
//! operations of each key, and the revision of every write the history pins down.

use std::collections::{BTreeMap, HashMap};

use crate::chaos::history::{Call, History, Operation, Outcome};

/// What an operation did, as far as revisions go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// It changed the key at this revision.
    Write(i64),
    /// It read the store at this header revision.
    Read(i64),
    /// Unknown outcome.
    Unknown,
}

pub(super) fn role(op: &Operation) -> Role {
    match (&op.call, &op.outcome) {
        (_, Outcome::Unknown) => Role::Unknown,
        (_, Outcome::Put { revision }) => Role::Write(*revision),
        (_, Outcome::Get { revision, .. }) => Role::Read(*revision),
        (_, Outcome::Delete { revision, deleted }) => {
            if *deleted > 0 {
                Role::Write(*revision)
            } else {
                Role::Read(*revision)
            }
        }
        (
            _,
            Outcome::Cas {
                revision,
                succeeded,
            },
        ) => {
            if *succeeded {
                Role::Write(*revision)
            } else {
                Role::Read(*revision)
            }
        }
    }
}

/// Whether the outcome is one the call can produce (a put answered like a get is a broken
/// record, not something to check).
pub(super) fn outcome_fits_call(op: &Operation) -> bool {
    matches!(
        (&op.call, &op.outcome),
        (_, Outcome::Unknown)
            | (Call::Put { .. }, Outcome::Put { .. })
            | (Call::Get { .. }, Outcome::Get { .. })
            | (Call::Delete { .. }, Outcome::Delete { .. })
            | (Call::Cas { .. }, Outcome::Cas { .. })
    )
}

#[derive(Debug)]
pub(super) struct Index<'h> {
    pub(super) history: &'h History,
    ids: HashMap<&'h str, u32>,
    names: Vec<&'h str>,
    /// For each value id, the operations whose call writes it.
    pub(super) writers: Vec<Vec<usize>>,
    /// Operation indices of each key, sorted by invocation.
    pub(super) by_key: BTreeMap<&'h str, Vec<usize>>,
    /// The revision of every write the history pins down: acknowledged writes, and writes of
    /// unknown outcome whose value a `Get` returned (the value names the write; the read's
    /// `mod_revision` is its revision). The first such read counts; reads that disagree are
    /// reported by the per-key checks.
    pub(super) write_revision: HashMap<usize, i64>,
}

impl<'h> Index<'h> {
    pub(super) fn new(history: &'h History) -> Index<'h> {
        let mut index = Index {
            history,
            ids: HashMap::new(),
            names: Vec::new(),
            writers: Vec::new(),
            by_key: BTreeMap::new(),
            write_revision: HashMap::new(),
        };
        for (position, op) in history.operations.iter().enumerate() {
            index
                .by_key
                .entry(op.call.key())
                .or_default()
                .push(position);
            if let Some(value) = op.call.written_value() {
                let id = index.intern(value);
                index.writers[id as usize].push(position);
            }
            if let Call::Cas {
                expected: Some(expected),
                ..
            } = &op.call
            {
                index.intern(expected);
            }
            if let Outcome::Get { kv: Some(kv), .. } = &op.outcome {
                index.intern(&kv.value);
            }
            if let Role::Write(revision) = role(op)
                && outcome_fits_call(op)
            {
                index.write_revision.insert(position, revision);
            }
        }
        for ops in index.by_key.values_mut() {
            ops.sort_by_key(|&position| (history.operations[position].invoke_ns, position));
        }
        let mut reads: Vec<usize> = (0..history.operations.len()).collect();
        reads.sort_by_key(|&position| (history.operations[position].invoke_ns, position));
        for position in reads {
            let op = &history.operations[position];
            let Outcome::Get { kv: Some(kv), .. } = &op.outcome else {
                continue;
            };
            if let Some(writer) = index.writer(&kv.value, op.call.key())
                && history.operations[writer].outcome == Outcome::Unknown
            {
                index
                    .write_revision
                    .entry(writer)
                    .or_insert(kv.mod_revision);
            }
        }
        index
    }

    fn intern(&mut self, value: &'h str) -> u32 {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = self.names.len() as u32;
        self.ids.insert(value, id);
        self.names.push(value);
        self.writers.push(Vec::new());
        id
    }

    pub(super) fn id(&self, value: &str) -> Option<u32> {
        self.ids.get(value).copied()
    }

    /// The operation that wrote `value` to `key`, when exactly one call did (values are unique
    /// per run; duplicates are reported as an invalid history).
    pub(super) fn writer(&self, value: &str, key: &str) -> Option<usize> {
        let id = self.id(value)?;
        let mut on_key = self.writers[id as usize]
            .iter()
            .filter(|&&position| self.history.operations[position].call.key() == key);
        let first = *on_key.next()?;
        on_key.next().is_none().then_some(first)
    }
}
