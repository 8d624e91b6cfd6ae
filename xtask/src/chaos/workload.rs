//! The clients: sequential processes running put / linearizable get / compare-and-set / delete on
//! a small key set, each with one request in flight, recording every operation.
//!
//! A client starts on one member's endpoint and moves to the next member when a request fails
//! (a killed or partitioned member would otherwise idle it). A failed or timed-out request is
//! recorded with an unknown outcome, and the client then continues under a fresh client id: the
//! unknown request may still take effect after the client's next request was invoked, so the two
//! are no longer sequential. Values are `w<worker>-<seq>`, unique for the run.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use concord_proto::etcdserverpb::{ResponseHeader, TxnRequest};
use tokio::sync::watch;

use super::history::{Call, ObservedKv, Operation, Outcome};
use crate::etcd::{self, Client, Options, Read};
use crate::stats::SplitMix64;

/// The run's one monotonic clock: nanoseconds since the run started.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    pub fn now_ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }

    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

/// What every client and watcher shares.
#[derive(Debug)]
pub struct Shared {
    pub endpoints: Vec<String>,
    pub keys: Vec<String>,
    pub prefix: String,
    pub request_timeout: Duration,
    /// Self-test of the harness: gets are served from the member's local state (serializable)
    /// but recorded as linearizable, so stale reads under partitions must be caught.
    pub serializable_gets: bool,
    pub clock: Clock,
    /// The highest revision any response has shown: watchers start from revisions below it.
    pub highest_revision: AtomicI64,
    /// Client ids handed out after the initial `0..clients`.
    pub next_client_id: AtomicUsize,
}

impl Shared {
    pub fn saw_revision(&self, revision: i64) {
        self.highest_revision.fetch_max(revision, Ordering::Relaxed);
    }

    /// How clients and watchers talk to the members.
    pub fn options(&self) -> Options {
        Options::under_faults(self.request_timeout)
    }

    /// A client of member `endpoint`; nothing is dialed until the first request.
    pub fn connect(&self, endpoint: usize) -> Result<Client> {
        Client::connect(&self.endpoints[endpoint], &self.options())
    }
}

/// Sends `call` and turns the answer into an [`Outcome`]; any error is the caller's unknown.
async fn execute(client: &mut Client, call: &Call, serializable_gets: bool) -> Result<Outcome> {
    let revision = |header: Option<ResponseHeader>| {
        header
            .map(|h| h.revision)
            .context("response without a header")
    };
    Ok(match call {
        Call::Put { key, value } => {
            let response = client.put(key.as_str(), value.as_str()).await?;
            Outcome::Put {
                revision: revision(response.header)?,
            }
        }
        Call::Get { key } => {
            let read = if serializable_gets {
                Read::Serializable
            } else {
                Read::Linearizable
            };
            let response = client.get(key.as_str(), read).await?;
            let kv = response.kvs.first().map(|kv| ObservedKv {
                value: String::from_utf8_lossy(&kv.value).into_owned(),
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
                version: kv.version,
            });
            Outcome::Get {
                revision: revision(response.header)?,
                kv,
            }
        }
        Call::Delete { key } => {
            let response = client.delete(key.as_str()).await?;
            Outcome::Delete {
                revision: revision(response.header)?,
                deleted: response.deleted,
            }
        }
        Call::Cas {
            key,
            expected,
            value,
        } => {
            let compare = match expected {
                Some(expected) => etcd::value_is(key, expected),
                None => etcd::absent(key),
            };
            let txn = TxnRequest {
                compare: vec![compare],
                success: vec![etcd::put_op(key, value)],
                failure: vec![],
            };
            let response = client.txn(txn).await?;
            Outcome::Cas {
                revision: revision(response.header)?,
                succeeded: response.succeeded,
            }
        }
    })
}

/// One client's state between requests.
struct Worker {
    worker: usize,
    client_id: usize,
    rng: SplitMix64,
    seq: u64,
    /// The member it talks to now, and a lazily made client per member.
    endpoint: usize,
    clients: Vec<Option<Client>>,
    /// What this client last saw in each key (its compare-and-set expectation).
    last_seen: HashMap<String, Option<String>>,
}

impl Worker {
    fn next_call(&mut self, shared: &Shared) -> Call {
        let key = shared.keys[self.rng.below(shared.keys.len() as u64) as usize].clone();
        self.seq += 1;
        let value = format!("w{}-{}", self.worker, self.seq);
        match self.rng.below(100) {
            0..25 => Call::Put { key, value },
            25..60 => Call::Get { key },
            60..85 => {
                let expected = self.last_seen.get(&key).cloned().flatten();
                Call::Cas {
                    key,
                    expected,
                    value,
                }
            }
            _ => Call::Delete { key },
        }
    }

    fn learn(&mut self, call: &Call, outcome: &Outcome) {
        let key = call.key().to_string();
        match (call, outcome) {
            (Call::Put { value, .. }, Outcome::Put { .. })
            | (
                Call::Cas { value, .. },
                Outcome::Cas {
                    succeeded: true, ..
                },
            ) => {
                self.last_seen.insert(key, Some(value.clone()));
            }
            (Call::Get { .. }, Outcome::Get { kv, .. }) => {
                self.last_seen
                    .insert(key, kv.as_ref().map(|kv| kv.value.clone()));
            }
            (Call::Delete { .. }, Outcome::Delete { .. }) => {
                self.last_seen.insert(key, None);
            }
            _ => {}
        }
    }

    fn client(&mut self, shared: &Shared) -> Result<&mut Client> {
        let slot = &mut self.clients[self.endpoint];
        if slot.is_none() {
            *slot = Some(shared.connect(self.endpoint)?);
        }
        slot.as_mut().context("client just made")
    }

    async fn attempt(&mut self, shared: &Shared, call: &Call) -> Result<Outcome> {
        let timeout = shared.request_timeout;
        let serializable_gets = shared.serializable_gets;
        let client = self.client(shared)?;
        tokio::time::timeout(timeout, execute(client, call, serializable_gets))
            .await
            .context("timed out")?
    }
}

/// Runs client `worker` until `stop` turns true; returns its operations.
pub async fn run_client(
    worker: usize,
    seed: u64,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Vec<Operation> {
    let mut state = Worker {
        worker,
        client_id: worker,
        rng: SplitMix64::new(seed ^ (0xC11E_0000 + worker as u64)),
        seq: 0,
        endpoint: worker % shared.endpoints.len(),
        clients: vec![None; shared.endpoints.len()],
        last_seen: HashMap::new(),
    };
    let mut operations = Vec::new();
    while !*stop.borrow_and_update() {
        let call = state.next_call(&shared);
        let invoke_ns = shared.clock.now_ns();
        let result = state.attempt(&shared, &call).await;
        let return_ns = shared.clock.now_ns();
        match result {
            Ok(outcome) => {
                if let Outcome::Put { revision }
                | Outcome::Get { revision, .. }
                | Outcome::Delete { revision, .. }
                | Outcome::Cas { revision, .. } = outcome
                {
                    shared.saw_revision(revision);
                }
                state.learn(&call, &outcome);
                operations.push(Operation {
                    client: state.client_id,
                    invoke_ns,
                    return_ns: Some(return_ns),
                    call,
                    outcome,
                });
            }
            Err(_) => {
                operations.push(Operation {
                    client: state.client_id,
                    invoke_ns,
                    return_ns: None,
                    call,
                    outcome: Outcome::Unknown,
                });
                state.client_id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
                state.endpoint = (state.endpoint + 1) % shared.endpoints.len();
                // A refused connection fails at once: without a pause a dead member would fill
                // the history with unknown operations.
                let pause = Duration::from_millis(50 + state.rng.below(100));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
    operations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared {
            endpoints: vec!["http://127.0.0.1:1".into()],
            keys: vec!["chaos/k0".into(), "chaos/k1".into()],
            prefix: "chaos/".into(),
            request_timeout: Duration::from_secs(1),
            serializable_gets: false,
            clock: Clock::start(),
            highest_revision: AtomicI64::new(0),
            next_client_id: AtomicUsize::new(8),
        }
    }

    fn worker(id: usize) -> Worker {
        Worker {
            worker: id,
            client_id: id,
            rng: SplitMix64::new(id as u64),
            seq: 0,
            endpoint: 0,
            clients: vec![None],
            last_seen: HashMap::new(),
        }
    }

    #[test]
    fn values_are_unique_and_every_kind_is_called() {
        let shared = shared();
        let mut values = std::collections::HashSet::new();
        let mut kinds = std::collections::HashSet::new();
        for id in 0..3 {
            let mut w = worker(id);
            for _ in 0..500 {
                let call = w.next_call(&shared);
                kinds.insert(std::mem::discriminant(&call));
                assert!(shared.keys.iter().any(|k| k == call.key()));
                if let Some(value) = call.written_value() {
                    assert!(values.insert(value.to_string()), "{value} twice");
                }
            }
        }
        assert_eq!(kinds.len(), 4);
    }

    #[test]
    fn compare_and_set_expects_what_the_client_saw_last() {
        let shared = shared();
        let mut w = worker(0);
        let key = "chaos/k0".to_string();
        let get = Call::Get { key: key.clone() };
        let seen = Outcome::Get {
            revision: 5,
            kv: Some(ObservedKv {
                value: "w3-1".into(),
                create_revision: 4,
                mod_revision: 5,
                version: 1,
            }),
        };
        w.learn(&get, &seen);
        assert_eq!(w.last_seen[&key], Some("w3-1".to_string()));
        // A failed compare-and-set teaches nothing; a delete means absent.
        let cas = Call::Cas {
            key: key.clone(),
            expected: None,
            value: "w0-9".into(),
        };
        w.learn(
            &cas,
            &Outcome::Cas {
                revision: 6,
                succeeded: false,
            },
        );
        assert_eq!(w.last_seen[&key], Some("w3-1".to_string()));
        w.learn(
            &Call::Delete { key: key.clone() },
            &Outcome::Delete {
                revision: 7,
                deleted: 1,
            },
        );
        assert_eq!(w.last_seen[&key], None);
        let expected_of_next_cas = loop {
            if let Call::Cas {
                key: k, expected, ..
            } = w.next_call(&shared)
                && k == key
            {
                break expected;
            }
        };
        assert_eq!(expected_of_next_cas, None);
    }
}
