//! The v2 watcher hub: the last [`HISTORY_CAPACITY`] events (what `waitIndex` replays)
//! and the watchers waiting for the next matching event, with etcd 3.4's matching
//! rules (exact key, recursive prefix, hidden `_` keys, deleted parent directories).

use std::collections::{BTreeMap, VecDeque};

use super::{Action, Event, V2Error};

/// Events kept for `waitIndex` (etcd's history size).
pub const HISTORY_CAPACITY: usize = 1000;

/// Where a watcher's events go. Returns false when the receiver is gone or cannot keep
/// up: the watcher is then dropped, as etcd drops a watcher whose channel is full.
pub type WatchSink = Box<dyn FnMut(&Event) -> bool + Send>;

struct Watcher {
    key: String,
    recursive: bool,
    stream: bool,
    since: u64,
    sink: WatchSink,
}

/// The event history and the registered watchers.
#[derive(Default)]
pub struct WatcherHub {
    history: VecDeque<Event>,
    watchers: BTreeMap<u64, Watcher>,
    next_watcher: u64,
}

/// How a watch started.
pub enum WatchStart {
    /// The history already holds a matching event: the answer, and no watcher.
    Immediate(Box<Event>),
    /// Registered: remove it with [`WatcherHub::remove`] when the client goes.
    Registered(u64),
}

impl WatcherHub {
    pub fn history(&self) -> impl Iterator<Item = &Event> {
        self.history.iter()
    }

    pub fn watcher_count(&self) -> usize {
        self.watchers.len()
    }

    /// Appends an event to the history, returning the event it pushed out.
    pub fn record(&mut self, event: Event) -> Option<Event> {
        self.history.push_back(event);
        if self.history.len() > HISTORY_CAPACITY {
            self.history.pop_front()
        } else {
            None
        }
    }

    /// Replaces the history (loaded from the store).
    pub fn restore(&mut self, events: Vec<Event>) {
        self.history = events.into();
    }

    /// Drops every watcher (the store was replaced by a snapshot; their clients see
    /// their connection end, as etcd's watchers are cleared on recovery).
    pub fn clear_watchers(&mut self) {
        self.watchers.clear();
    }

    /// The first event at or after `since` that a watcher of `key` would see.
    pub fn scan(&self, key: &str, recursive: bool, since: u64) -> Result<Option<&Event>, V2Error> {
        let Some(first) = self.history.front() else {
            return Ok(None);
        };
        let start = first.index();
        if since < start {
            return Err(V2Error::new(
                super::ECODE_EVENT_INDEX_CLEARED,
                format!("the requested history has been cleared [{start}/{since}]"),
                0,
            ));
        }
        Ok(self
            .history
            .iter()
            .filter(|e| e.index() >= since && !e.refresh && !e.internal)
            .find(|e| history_matches(e, key, recursive)))
    }

    /// Starts a watch from `since` (etcd's sinceIndex).
    pub fn watch(
        &mut self,
        key: &str,
        recursive: bool,
        stream: bool,
        since: u64,
        current_index: u64,
        sink: WatchSink,
    ) -> Result<WatchStart, V2Error> {
        match self.scan(key, recursive, since) {
            Err(mut error) => {
                error.index = current_index;
                Err(error)
            }
            Ok(Some(event)) if !stream => {
                let mut event = event.clone();
                event.etcd_index = current_index;
                Ok(WatchStart::Immediate(Box::new(event)))
            }
            Ok(found) => {
                // A stream gets the event found in history, then the ones after it.
                let mut since = since;
                let mut sink = sink;
                if let Some(event) = found {
                    let mut replay = event.clone();
                    replay.etcd_index = current_index;
                    since = event.index() + 1;
                    let later: Vec<Event> = self
                        .history
                        .iter()
                        .filter(|e| e.index() >= since && !e.refresh && !e.internal)
                        .filter(|e| history_matches(e, key, recursive))
                        .cloned()
                        .collect();
                    if !sink(&replay) {
                        return Ok(WatchStart::Registered(u64::MAX));
                    }
                    for event in &later {
                        if !sink(event) {
                            return Ok(WatchStart::Registered(u64::MAX));
                        }
                    }
                    if let Some(last) = later.last() {
                        since = last.index() + 1;
                    }
                }
                let id = self.next_watcher;
                self.next_watcher += 1;
                self.watchers.insert(
                    id,
                    Watcher {
                        key: key.to_string(),
                        recursive,
                        stream,
                        since,
                        sink,
                    },
                );
                Ok(WatchStart::Registered(id))
            }
        }
    }

    pub fn remove(&mut self, id: u64) {
        self.watchers.remove(&id);
    }

    /// Hands a new event to the watchers it concerns. `deleted` lists the paths the
    /// event removed (a watcher of a key under a deleted directory hears of it).
    pub fn notify(&mut self, event: &Event, deleted: &[String]) {
        let key = event.node.key.as_str();
        let mut done = Vec::new();
        for (&id, watcher) in self.watchers.iter_mut() {
            if event.index() < watcher.since {
                continue;
            }
            let wkey = watcher.key.as_str();
            let interested = if wkey == key || deleted.iter().any(|d| d == wkey) {
                true
            } else {
                watcher.recursive && is_ancestor(wkey, key) && !is_hidden(wkey, key)
            };
            if !interested {
                continue;
            }
            if !(watcher.sink)(event) || !watcher.stream {
                done.push(id);
            }
        }
        for id in done {
            self.watchers.remove(&id);
        }
    }
}

/// etcd's history match: the key itself, keys below it for a recursive watch, and a
/// deleted or expired directory above it.
fn history_matches(event: &Event, key: &str, recursive: bool) -> bool {
    let ekey = event.node.key.as_str();
    if ekey == key {
        return true;
    }
    if recursive {
        let prefix = if key.ends_with('/') {
            key.to_string()
        } else {
            format!("{key}/")
        };
        if ekey.starts_with(&prefix) {
            return true;
        }
    }
    if matches!(event.action, Action::Delete | Action::Expire)
        && let Some(prev) = &event.prev_node
        && prev.dir
        && key.starts_with(prev.key.as_str())
    {
        return true;
    }
    false
}

/// Whether `dir` is `key` or one of its ancestors.
fn is_ancestor(dir: &str, key: &str) -> bool {
    dir == "/"
        || key == dir
        || (key.starts_with(dir) && key.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// Whether the part of `key` below the watched `dir` passes through a hidden name.
fn is_hidden(dir: &str, key: &str) -> bool {
    if dir.len() > key.len() {
        return false;
    }
    let rest = key.get(dir.len()..).unwrap_or_default();
    format!("/{rest}").contains("/_")
}
