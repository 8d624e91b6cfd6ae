//! Leases: grant, revoke, renew, attached keys, the expiry queue and checkpoints.
//! Time is always an argument, never read from a clock here.
//!
//! A [`Lessor`] holds two kinds of state:
//! - **replicated** state, changed only by applying committed raft entries on every
//!   member in the same order: which leases exist, their granted TTL, their checkpointed
//!   remaining TTL ([`Lessor::grant`], [`Lessor::revoke`], [`Lessor::checkpoint`]) and
//!   which keys are attached to them ([`Lessor::attach`], [`Lessor::detach`]);
//! - **leader-local** state, as in etcd: when each lease expires. Only a *primary*
//!   lessor (the leader's, after [`Lessor::promote`]) has expiry times; it renews
//!   ([`Lessor::renew`]), reports expired leases ([`Lessor::expired`]) for the server to
//!   revoke through raft, and schedules checkpoints ([`Lessor::due_checkpoints`]).
//!   A demoted lessor (a follower's) never expires anything.
//!
//! Persistence is the caller's: [`Lessor::grant`] and [`Lessor::checkpoint`] return the
//! [`LeaseRecord`] to store, [`Lessor::recover`] rebuilds everything from stored records
//! and the keys' `lease` fields.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use concord_lease::{Lessor, LessorConfig};
//!
//! let t0 = Instant::now();
//! let mut lessor = Lessor::new(LessorConfig::with_min_ttl(2));
//! lessor.promote(t0, Duration::ZERO);
//! lessor.grant(7, 10, t0).unwrap();
//! lessor.attach(b"job".to_vec(), 7);
//! assert!(lessor.expired(t0 + Duration::from_secs(9), 100).is_empty());
//! assert_eq!(lessor.expired(t0 + Duration::from_secs(10), 100), vec![7]);
//! // The server proposes the revoke; applying it returns the keys to delete.
//! assert_eq!(lessor.revoke(7).unwrap(), vec![b"job".to_vec()]);
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// A lease's id; 0 means "no lease".
pub type LeaseId = i64;

/// The id meaning "no lease".
pub const NO_LEASE: LeaseId = 0;

/// etcd's largest lease TTL, in seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// etcd revokes at most this many expired leases per second.
pub const DEFAULT_REVOKE_RATE: usize = 1000;

/// How long an expired lease waits before it is offered for revocation again (its
/// revoke proposal may have been lost).
pub const DEFAULT_REVOKE_RETRY: Duration = Duration::from_secs(3);

/// etcd's default interval between checkpoints of a lease's remaining TTL.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(300);

/// What can go wrong with a lease operation. The server maps these to etcd's errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("requested lease not found")]
    LeaseNotFound,
    #[error("lease already exists")]
    LeaseExists,
    #[error("too large lease TTL")]
    TtlTooLarge,
    /// Renewal and expiry are the primary lessor's (the leader's) business.
    #[error("not a primary lessor")]
    NotPrimary,
    #[error("corrupt lease record for lease {0}")]
    CorruptRecord(LeaseId),
}

/// How a lessor behaves.
#[derive(Debug, Clone)]
pub struct LessorConfig {
    /// TTLs below this (seconds) are raised to it: etcd's ceil(1.5 x election timeout).
    pub min_ttl: i64,
    /// Checkpoint remaining TTLs at this interval (etcd's
    /// --experimental-enable-lease-checkpoint); `None` disables checkpoints.
    pub checkpoint_interval: Option<Duration>,
    /// See [`DEFAULT_REVOKE_RETRY`].
    pub revoke_retry: Duration,
}

impl LessorConfig {
    /// No checkpoints, etcd's retry interval.
    pub fn with_min_ttl(min_ttl: i64) -> LessorConfig {
        LessorConfig {
            min_ttl,
            checkpoint_interval: None,
            revoke_retry: DEFAULT_REVOKE_RETRY,
        }
    }
}

/// The persistent part of a lease, as stored next to the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRecord {
    pub id: LeaseId,
    /// Granted TTL (after raising it to the minimum), seconds.
    pub ttl: i64,
    /// Remaining TTL at the last checkpoint, seconds; 0 when none applies.
    pub remaining_ttl: i64,
}

impl LeaseRecord {
    /// The storage key: the id, big-endian, so records scan in id order.
    pub fn key(id: LeaseId) -> [u8; 8] {
        id.to_be_bytes()
    }

    /// The storage value: TTL then remaining TTL, big-endian.
    pub fn encode_value(&self) -> Vec<u8> {
        let mut value = Vec::with_capacity(16);
        value.extend_from_slice(&self.ttl.to_be_bytes());
        value.extend_from_slice(&self.remaining_ttl.to_be_bytes());
        value
    }

    /// Reads a record stored with [`LeaseRecord::key`] and [`LeaseRecord::encode_value`].
    pub fn decode(key: &[u8], value: &[u8]) -> Result<LeaseRecord, Error> {
        let id_bytes: [u8; 8] = key.try_into().map_err(|_| Error::CorruptRecord(NO_LEASE))?;
        let id = i64::from_be_bytes(id_bytes);
        let (Some(ttl), Some(remaining)) = (value.get(..8), value.get(8..16)) else {
            return Err(Error::CorruptRecord(id));
        };
        let word = |bytes: &[u8]| -> Result<i64, Error> {
            let array: [u8; 8] = bytes.try_into().map_err(|_| Error::CorruptRecord(id))?;
            Ok(i64::from_be_bytes(array))
        };
        Ok(LeaseRecord {
            id,
            ttl: word(ttl)?,
            remaining_ttl: word(remaining)?,
        })
    }
}

/// A lease as [`Lessor::time_to_live`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    pub id: LeaseId,
    pub granted_ttl: i64,
    /// Whole seconds left (truncated, as etcd reports), never negative. On a non-primary
    /// lessor, which has no expiry times, the granted or checkpointed TTL.
    pub remaining_ttl: i64,
    /// Attached keys in key order (empty unless asked for).
    pub keys: Vec<Vec<u8>>,
}

/// The outcome of a renewal on the primary lessor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewed {
    /// The granted TTL, which the lease has again from now.
    pub ttl: i64,
    /// The lease carries a checkpointed remaining TTL that must be cleared through raft
    /// (a checkpoint with remaining TTL 0), or the next leader would use the stale one.
    pub clear_checkpoint: bool,
}

#[derive(Debug)]
struct Lease {
    ttl: i64,
    remaining_ttl: i64,
    keys: BTreeSet<Vec<u8>>,
    /// When the lease expires (or, once expired, when it is offered for revocation
    /// again); `None` on a non-primary lessor (never).
    expiry: Option<Instant>,
    /// Expired on the primary and awaiting revocation: renewals fail.
    expired: bool,
}

/// The lease table and its queues. See the crate documentation.
#[derive(Debug)]
pub struct Lessor {
    config: LessorConfig,
    leases: BTreeMap<LeaseId, Lease>,
    /// Which lease each attached key belongs to.
    key_leases: HashMap<Vec<u8>, LeaseId>,
    primary: bool,
    /// (time, lease) pairs; an entry is stale unless it matches the lease's current
    /// expiry, so updates push instead of searching the heap.
    expiry_queue: BinaryHeap<Reverse<(Instant, LeaseId)>>,
    /// When to checkpoint each lease next (stale entries are skipped the same way).
    checkpoint_queue: BinaryHeap<Reverse<(Instant, LeaseId)>>,
    next_checkpoint: HashMap<LeaseId, Instant>,
}

impl Lessor {
    /// An empty, non-primary lessor.
    pub fn new(config: LessorConfig) -> Lessor {
        Lessor {
            config,
            leases: BTreeMap::new(),
            key_leases: HashMap::new(),
            primary: false,
            expiry_queue: BinaryHeap::new(),
            checkpoint_queue: BinaryHeap::new(),
            next_checkpoint: HashMap::new(),
        }
    }

    /// Replaces all state by stored records and the keys attached to them (from the
    /// keys' `lease` fields). Keys naming a lease without a record are ignored. The
    /// lessor comes back non-primary; the leader promotes it again.
    pub fn recover(
        &mut self,
        records: impl IntoIterator<Item = LeaseRecord>,
        attached: impl IntoIterator<Item = (Vec<u8>, LeaseId)>,
    ) {
        let config = self.config.clone();
        *self = Lessor::new(config);
        for record in records {
            self.leases.insert(
                record.id,
                Lease {
                    ttl: record.ttl,
                    remaining_ttl: record.remaining_ttl,
                    keys: BTreeSet::new(),
                    expiry: None,
                    expired: false,
                },
            );
        }
        for (key, id) in attached {
            self.attach(key, id);
        }
    }

    pub fn is_primary(&self) -> bool {
        self.primary
    }

    pub fn contains(&self, id: LeaseId) -> bool {
        self.leases.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Every lease id, in id order.
    pub fn ids(&self) -> Vec<LeaseId> {
        self.leases.keys().copied().collect()
    }

    /// Every lease id, soonest expiry first, as etcd's `LeaseLeases` lists them. Leases
    /// without an expiry time (every lease of a lessor that is not primary) come last, in id
    /// order, where etcd leaves their order unspecified.
    pub fn ids_by_expiry(&self) -> Vec<LeaseId> {
        let mut ids: Vec<(Option<Instant>, LeaseId)> = self
            .leases
            .iter()
            .map(|(&id, lease)| (lease.expiry, id))
            .collect();
        ids.sort_unstable_by_key(|&(expiry, id)| (expiry.is_none(), expiry, id));
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// The lease a key is attached to, if any.
    pub fn lease_of(&self, key: &[u8]) -> Option<LeaseId> {
        self.key_leases.get(key).copied()
    }

    /// Applies a grant. The TTL is raised to the minimum; the returned record is what to
    /// persist. Deterministic on every member except for the primary's expiry time.
    pub fn grant(&mut self, id: LeaseId, ttl: i64, now: Instant) -> Result<LeaseRecord, Error> {
        if id == NO_LEASE {
            return Err(Error::LeaseNotFound);
        }
        if ttl > MAX_LEASE_TTL {
            return Err(Error::TtlTooLarge);
        }
        if self.leases.contains_key(&id) {
            return Err(Error::LeaseExists);
        }
        let ttl = ttl.max(self.config.min_ttl);
        self.leases.insert(
            id,
            Lease {
                ttl,
                remaining_ttl: 0,
                keys: BTreeSet::new(),
                expiry: None,
                expired: false,
            },
        );
        if self.primary {
            self.refresh(id, now, Duration::ZERO);
            self.schedule_checkpoint(id, now);
        }
        Ok(LeaseRecord {
            id,
            ttl,
            remaining_ttl: 0,
        })
    }

    /// Applies a revocation: forgets the lease and returns its keys, in key order, for
    /// the caller to delete (in one revision).
    pub fn revoke(&mut self, id: LeaseId) -> Result<Vec<Vec<u8>>, Error> {
        let lease = self.leases.remove(&id).ok_or(Error::LeaseNotFound)?;
        self.next_checkpoint.remove(&id);
        for key in &lease.keys {
            self.key_leases.remove(key);
        }
        Ok(lease.keys.into_iter().collect())
    }

    /// Applies a checkpoint of a lease's remaining TTL. Returns the record to persist,
    /// or `None` for a lease that no longer exists. Like etcd, the remaining TTL takes
    /// effect at the next promotion, not on the current primary's expiry time.
    pub fn checkpoint(
        &mut self,
        id: LeaseId,
        remaining_ttl: i64,
        now: Instant,
    ) -> Option<LeaseRecord> {
        let lease = self.leases.get_mut(&id)?;
        lease.remaining_ttl = remaining_ttl;
        let record = LeaseRecord {
            id,
            ttl: lease.ttl,
            remaining_ttl,
        };
        if self.primary {
            self.schedule_checkpoint(id, now);
        }
        Some(record)
    }

    /// Records that `key` was written with lease `id` (0: none). Moves the key off any
    /// other lease. A lease that does not exist attaches nothing.
    pub fn attach(&mut self, key: Vec<u8>, id: LeaseId) {
        if self.key_leases.get(&key) == Some(&id) {
            return;
        }
        self.detach(&key);
        if id == NO_LEASE {
            return;
        }
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.insert(key.clone());
            self.key_leases.insert(key, id);
        }
    }

    /// Records that `key` was deleted.
    pub fn detach(&mut self, key: &[u8]) {
        if let Some(old) = self.key_leases.remove(key)
            && let Some(lease) = self.leases.get_mut(&old)
        {
            lease.keys.remove(key);
        }
    }

    /// Makes this lessor primary (the member leads and has applied every entry of the
    /// previous terms): every lease expires `extend` plus its checkpointed remaining TTL
    /// (or else its full TTL) from now.
    pub fn promote(&mut self, now: Instant, extend: Duration) {
        self.primary = true;
        self.expiry_queue.clear();
        self.checkpoint_queue.clear();
        self.next_checkpoint.clear();
        let ids: Vec<LeaseId> = self.leases.keys().copied().collect();
        for id in ids {
            self.refresh(id, now, extend);
            self.schedule_checkpoint(id, now);
        }
    }

    /// Makes this lessor non-primary: nothing expires, nothing is checkpointed.
    pub fn demote(&mut self) {
        self.primary = false;
        for lease in self.leases.values_mut() {
            lease.expiry = None;
            lease.expired = false;
        }
        self.expiry_queue.clear();
        self.checkpoint_queue.clear();
        self.next_checkpoint.clear();
    }

    /// Renews a lease on the primary: it has its full TTL again from now. An expired
    /// lease (awaiting its revocation) cannot be renewed.
    pub fn renew(&mut self, id: LeaseId, now: Instant) -> Result<Renewed, Error> {
        if !self.primary {
            return Err(Error::NotPrimary);
        }
        let lease = self.leases.get(&id).ok_or(Error::LeaseNotFound)?;
        if lease.expired || lease.expiry.is_some_and(|expiry| expiry <= now) {
            return Err(Error::LeaseNotFound);
        }
        let renewed = Renewed {
            ttl: lease.ttl,
            clear_checkpoint: self.config.checkpoint_interval.is_some() && lease.remaining_ttl > 0,
        };
        self.refresh(id, now, Duration::ZERO);
        Ok(renewed)
    }

    /// A lease's TTLs and, if asked, its keys; `None` if it does not exist.
    pub fn time_to_live(&self, id: LeaseId, now: Instant, with_keys: bool) -> Option<LeaseStatus> {
        let lease = self.leases.get(&id)?;
        let remaining_ttl = match lease.expiry {
            Some(_) if lease.expired => 0,
            Some(expiry) => expiry.saturating_duration_since(now).as_secs() as i64,
            None if lease.remaining_ttl > 0 => lease.remaining_ttl,
            None => lease.ttl,
        };
        Some(LeaseStatus {
            id,
            granted_ttl: lease.ttl,
            remaining_ttl,
            keys: if with_keys {
                lease.keys.iter().cloned().collect()
            } else {
                Vec::new()
            },
        })
    }

    /// Up to `limit` leases expired at `now`, earliest first, for the server to revoke
    /// through raft. Each is offered again after the retry interval if it still exists
    /// then (its revocation may have been lost). Empty unless primary.
    pub fn expired(&mut self, now: Instant, limit: usize) -> Vec<LeaseId> {
        let mut expired = Vec::new();
        while expired.len() < limit {
            let Some(&Reverse((time, id))) = self.expiry_queue.peek() else {
                break;
            };
            if time > now {
                break;
            }
            self.expiry_queue.pop();
            let Some(lease) = self.leases.get_mut(&id) else {
                continue;
            };
            if lease.expiry != Some(time) {
                continue;
            }
            // Renewals fail from now on; offer it again later if it is still here.
            let retry = now + self.config.revoke_retry;
            lease.expired = true;
            lease.expiry = Some(retry);
            self.expiry_queue.push(Reverse((retry, id)));
            expired.push(id);
        }
        expired
    }

    /// Up to `limit` checkpoints due at `now`: (lease, remaining TTL in whole seconds,
    /// rounded up), for the server to propose through raft. Empty unless primary and
    /// checkpoints are enabled.
    pub fn due_checkpoints(&mut self, now: Instant, limit: usize) -> Vec<(LeaseId, i64)> {
        let mut due = Vec::new();
        let Some(interval) = self.config.checkpoint_interval else {
            return due;
        };
        while due.len() < limit {
            let Some(&Reverse((time, id))) = self.checkpoint_queue.peek() else {
                break;
            };
            if time > now {
                break;
            }
            self.checkpoint_queue.pop();
            if self.next_checkpoint.get(&id) != Some(&time) {
                continue;
            }
            self.next_checkpoint.remove(&id);
            let Some(lease) = self.leases.get(&id) else {
                continue;
            };
            let Some(expiry) = lease.expiry.filter(|_| !lease.expired) else {
                continue;
            };
            let left = expiry.saturating_duration_since(now);
            let remaining = left.as_secs() as i64 + i64::from(left.subsec_nanos() > 0);
            if remaining <= 0 || remaining >= lease.ttl {
                continue;
            }
            due.push((id, remaining));
            // Until the checkpoint applies (which schedules the next one), try again
            // an interval later in case it is lost.
            let next = now + interval;
            self.next_checkpoint.insert(id, next);
            self.checkpoint_queue.push(Reverse((next, id)));
        }
        due
    }

    /// Sets a lease's expiry to `now + extend + (remaining or full TTL)`.
    fn refresh(&mut self, id: LeaseId, now: Instant, extend: Duration) {
        let Some(lease) = self.leases.get_mut(&id) else {
            return;
        };
        let seconds = if lease.remaining_ttl > 0 {
            lease.remaining_ttl
        } else {
            lease.ttl
        };
        let expiry = Duration::try_from_secs_f64(seconds.max(0) as f64)
            .ok()
            .and_then(|d| now.checked_add(d + extend));
        lease.expiry = expiry;
        lease.expired = false;
        if let Some(time) = expiry {
            self.expiry_queue.push(Reverse((time, id)));
        }
    }

    fn schedule_checkpoint(&mut self, id: LeaseId, now: Instant) {
        let Some(interval) = self.config.checkpoint_interval else {
            return;
        };
        let Some(lease) = self.leases.get(&id) else {
            return;
        };
        if lease.ttl <= interval.as_secs() as i64 {
            return;
        }
        let time = now + interval;
        self.next_checkpoint.insert(id, time);
        self.checkpoint_queue.push(Reverse((time, id)));
    }
}

#[cfg(test)]
mod tests;
