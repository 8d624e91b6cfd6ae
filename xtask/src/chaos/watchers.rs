//! Watchers: streams over the key prefix, recorded as [`WatchRecord`]s for the checker.
//!
//! Each watcher runs one stream at a time, from an explicit start revision (never 0, whose
//! meaning depends on when the member handles it). A stream lives a few seconds and is then
//! closed and reopened on the next member from an earlier revision, so catch-up from the past is
//! exercised again and again; a stream that breaks is reopened from the revision after the last
//! one it vouched for. At the end the harness hands every watcher the final revision: it waits
//! until its stream has delivered that far, asks for a progress notification (etcd 3.4's
//! `progress_request`; sent only once the stream is caught up, since etcd 3.4 answers it even for
//! an unsynced watcher), records it in `complete_to`, and stops.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use concord_proto::etcdserverpb::WatchCreateRequest;
use concord_proto::mvccpb::event::EventType;
use tokio::sync::watch;
use tokio::time::Instant;

use super::history::{EventKind, WatchEvent, WatchRecord};
use super::workload::Shared;
use crate::etcd::{self, Client, WatchStream};
use crate::stats::SplitMix64;

/// How long the final catch-up (events up to the final revision, then the progress answer) may
/// take before the watcher is reported stalled.
const FINAL_CATCH_UP: Duration = Duration::from_secs(20);

/// What a watcher recorded, and whether it failed to catch up at the end.
#[derive(Debug, Default)]
pub struct WatcherOutcome {
    pub records: Vec<WatchRecord>,
    /// For each record, the member that served it and when it was opened (run clock, ns): for
    /// reading a failure, not for the checker.
    pub served_by: Vec<(usize, u64)>,
    pub stalled: Option<String>,
    /// Streams that broke (errors, end of stream, cancellation) rather than being closed by us.
    pub broken: usize,
}

/// Why a stream ended.
enum Ended {
    /// Closed on schedule: reopen from the past.
    Planned,
    /// Broke: reopen from where it stopped vouching.
    Broken,
    /// Caught up to the final revision and confirmed by progress: the watcher is done.
    Finished,
}

struct Watcher {
    rng: SplitMix64,
    shared: Arc<Shared>,
    clients: Vec<Option<Client>>,
    endpoint: usize,
    /// Set when the final revision arrives: the end of the final catch-up.
    finish_deadline: Option<Instant>,
}

impl Watcher {
    fn client(&mut self) -> Option<Client> {
        let slot = &mut self.clients[self.endpoint];
        if slot.is_none() {
            *slot = self.shared.connect(self.endpoint).ok();
        }
        slot.clone()
    }

    /// A revision in the past to start from: often recent, sometimes far back, sometimes 1.
    fn past_revision(&mut self) -> i64 {
        let highest = self.shared.highest_revision.load(Ordering::Relaxed).max(1);
        match self.rng.below(4) {
            0 => 1,
            1 => 1 + self.rng.below(highest as u64) as i64,
            _ => (highest - self.rng.below(100) as i64).max(1),
        }
    }

    async fn open(&mut self, start: i64) -> Option<WatchStream> {
        let mut client = self.client()?;
        let prefix = self.shared.prefix.as_bytes();
        let create = WatchCreateRequest {
            key: prefix.to_vec(),
            range_end: etcd::prefix_end(prefix),
            start_revision: start,
            ..Default::default()
        };
        let opening = client.watch(create);
        match tokio::time::timeout(self.shared.request_timeout, opening).await {
            Ok(Ok(stream)) => Some(stream),
            _ => None,
        }
    }

    /// Runs one stream into `record` until it ends.
    async fn stream(
        &mut self,
        stream: &mut WatchStream,
        record: &mut WatchRecord,
        final_revision: &mut watch::Receiver<Option<i64>>,
    ) -> Ended {
        let close_at = Instant::now() + Duration::from_millis(2000 + self.rng.below(6000));
        let mut progress_asked = false;
        loop {
            let finishing = *final_revision.borrow_and_update();
            if finishing.is_some() && self.finish_deadline.is_none() {
                self.finish_deadline = Some(Instant::now() + FINAL_CATCH_UP);
            }
            let give_up_at = self.finish_deadline.unwrap_or(close_at);
            if let Some(last) = finishing
                && record.complete_to >= last
                && !progress_asked
            {
                if stream.request_progress().is_err() {
                    return Ended::Broken;
                }
                progress_asked = true;
            }
            tokio::select! {
                message = stream.message() => {
                    let response = match message {
                        Ok(Some(response)) => response,
                        Ok(None) | Err(_) => return Ended::Broken,
                    };
                    if response.canceled {
                        return Ended::Broken;
                    }
                    if response.created {
                        continue;
                    }
                    if response.events.is_empty() {
                        // A progress notification: everything up to its revision was sent.
                        if let Some(header) = &response.header {
                            record.complete_to = record.complete_to.max(header.revision);
                        }
                        if progress_asked {
                            return Ended::Finished;
                        }
                        continue;
                    }
                    for event in &response.events {
                        let Some(kv) = &event.kv else { continue };
                        let (kind, value) = match EventType::try_from(event.r#type) {
                            Ok(EventType::Put) => (
                                EventKind::Put,
                                String::from_utf8_lossy(&kv.value).into_owned(),
                            ),
                            Ok(EventType::Delete) => (EventKind::Delete, String::new()),
                            // Neither etcd nor Concord sends another; the stream is not
                            // trusted past it.
                            Err(_) => return Ended::Broken,
                        };
                        record.events.push(WatchEvent {
                            kind,
                            key: String::from_utf8_lossy(&kv.key).into_owned(),
                            value,
                            mod_revision: kv.mod_revision,
                        });
                        record.complete_to = record.complete_to.max(kv.mod_revision);
                    }
                }
                _ = tokio::time::sleep_until(close_at), if finishing.is_none() => {
                    return Ended::Planned;
                }
                _ = tokio::time::sleep_until(give_up_at), if finishing.is_some() => {
                    return Ended::Broken;
                }
                changed = final_revision.changed(), if finishing.is_none() => {
                    if changed.is_err() {
                        return Ended::Planned;
                    }
                }
            }
        }
    }
}

/// Runs watcher `id` until it has caught up with the final revision sent on `final_revision`.
pub async fn run_watcher(
    id: usize,
    seed: u64,
    shared: Arc<Shared>,
    mut final_revision: watch::Receiver<Option<i64>>,
) -> WatcherOutcome {
    let endpoints = shared.endpoints.len();
    let mut watcher = Watcher {
        rng: SplitMix64::new(seed ^ (0x3A7C_0000 + id as u64)),
        shared: shared.clone(),
        clients: vec![None; endpoints],
        endpoint: id % endpoints,
        finish_deadline: None,
    };
    let mut outcome = WatcherOutcome::default();
    // The first streams: one from (about) now, one from the very beginning, others from the past.
    let mut start = match id {
        0 => shared.highest_revision.load(Ordering::Relaxed) + 1,
        1 => 1,
        _ => watcher.past_revision(),
    };
    let mut last_member = None;
    loop {
        if watcher.finish_deadline.is_none() && final_revision.borrow().is_some() {
            watcher.finish_deadline = Some(Instant::now() + FINAL_CATCH_UP);
        }
        if let Some(deadline) = watcher.finish_deadline
            && Instant::now() > deadline
        {
            let last = final_revision.borrow().unwrap_or_default();
            let reached = match (outcome.records.last(), last_member) {
                (Some(record), Some(member)) => format!(
                    "its last stream, on m{member} from revision {}, delivered up to {}",
                    record.start_revision, record.complete_to
                ),
                _ => "no stream opened".to_string(),
            };
            outcome.stalled = Some(format!(
                "watcher {id} did not deliver up to the final revision {last} within \
                 {FINAL_CATCH_UP:?}: {reached}"
            ));
            return outcome;
        }
        let opened_ns = shared.clock.now_ns();
        let Some(mut stream) = watcher.open(start).await else {
            watcher.endpoint = (watcher.endpoint + 1) % endpoints;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut record = WatchRecord {
            watcher: id,
            prefix: shared.prefix.clone(),
            start_revision: start,
            events: Vec::new(),
            complete_to: start - 1,
        };
        let ended = watcher
            .stream(&mut stream, &mut record, &mut final_revision)
            .await;
        let resume = record.complete_to + 1;
        outcome.records.push(record);
        outcome.served_by.push((watcher.endpoint, opened_ns));
        last_member = Some(watcher.endpoint);
        watcher.endpoint = (watcher.endpoint + 1) % endpoints;
        match ended {
            Ended::Finished => return outcome,
            Ended::Broken => {
                outcome.broken += 1;
                start = resume;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ended::Planned => {
                start = if final_revision.borrow().is_some() {
                    resume
                } else {
                    watcher.past_revision()
                };
            }
        }
    }
}
