//! etcd 3.4's v2 store: a tree of directories and files with TTLs, its own index
//! (`X-Etcd-Index`, `modifiedIndex`, `createdIndex`) that moves on every v2 change, the
//! last 1,000 events for `waitIndex`, and the watcher hub. A keyspace of its own: v3
//! keys never show here, nor v2 keys in v3.
//!
//! Every change arrives as a committed raft entry ([`Request`]), so all members hold the
//! same tree at the same index. Time never comes from a clock in here: a TTL arrives as
//! an absolute expiration the proposer computed, and expiry happens only when the
//! leader proposes a [`Method::Sync`] with its time; every member then removes the same
//! nodes with the same `expire` events at the same indexes.
//!
//! Persistence (side tables of the MVCC store's meta keyspace, written in the same
//! batch as the applied raft index, so the tree survives restarts and travels in raft
//! snapshots with the rest of the state):
//! - `v2` table: one entry per node, keyed by its path (`/a/b`), value the JSON of
//!   [`Node`]; the root is implicit.
//! - `v2_index` table: key `current`, the store's index as 8 big-endian bytes.
//! - `v2_events` table: the history, keyed by event index (8 big-endian bytes), value
//!   the JSON of [`Event`].
//!
//! ```
//! use concord_server::state::v2::{Method, Request, V2Store};
//! let mut store = V2Store::default();
//! let set = Request { method: Method::Put, path: "/a/b".into(), value: "x".into(), ..Request::default() };
//! let event = store.apply(&set).unwrap().unwrap();
//! assert_eq!(event.node.modified_index, 1);
//! assert_eq!(store.get("/a", false, false).unwrap().node.nodes.unwrap().len(), 1);
//! ```

mod history;
mod internal;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use history::{HISTORY_CAPACITY, WatchSink, WatchStart, WatcherHub};

pub const NODES_TABLE: &str = "v2";
pub const INDEX_TABLE: &str = "v2_index";
pub const EVENTS_TABLE: &str = "v2_events";
pub use internal::AUTH_TABLE;
const INDEX_KEY: &[u8] = b"current";

/// Expirations before 2000-01-01 mean "permanent" (etcd's minExpireTime).
const MIN_EXPIRE_UNIX_NANOS: i64 = 946_684_800_000_000_000;

pub const ECODE_KEY_NOT_FOUND: u32 = 100;
pub const ECODE_TEST_FAILED: u32 = 101;
pub const ECODE_NOT_FILE: u32 = 102;
pub const ECODE_NOT_DIR: u32 = 104;
pub const ECODE_NODE_EXIST: u32 = 105;
pub const ECODE_ROOT_READ_ONLY: u32 = 107;
pub const ECODE_DIR_NOT_EMPTY: u32 = 108;
pub const ECODE_UNAUTHORIZED: u32 = 110;
pub const ECODE_PREV_VALUE_REQUIRED: u32 = 201;
pub const ECODE_TTL_NAN: u32 = 202;
pub const ECODE_INDEX_NAN: u32 = 203;
pub const ECODE_INVALID_FIELD: u32 = 209;
pub const ECODE_INVALID_FORM: u32 = 210;
pub const ECODE_REFRESH_VALUE: u32 = 211;
pub const ECODE_REFRESH_TTL_REQUIRED: u32 = 212;
pub const ECODE_RAFT_INTERNAL: u32 = 300;
pub const ECODE_LEADER_ELECT: u32 = 301;
pub const ECODE_EVENT_INDEX_CLEARED: u32 = 401;

/// etcd's v2 error: code, cause, and the store index it happened at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V2Error {
    pub code: u32,
    pub cause: String,
    pub index: u64,
}

impl V2Error {
    pub fn new(code: u32, cause: impl Into<String>, index: u64) -> V2Error {
        V2Error {
            code,
            cause: cause.into(),
            index,
        }
    }

    /// etcd's message for the code.
    pub fn message(&self) -> &'static str {
        match self.code {
            100 => "Key not found",
            101 => "Compare failed",
            102 => "Not a file",
            103 => "Reached the max number of peers in the cluster",
            104 => "Not a directory",
            105 => "Key already exists",
            106 => "The prefix of given key is a keyword in etcd",
            107 => "Root is read only",
            108 => "Directory not empty",
            109 => "Peer address has existed",
            110 => "The request requires user authentication",
            200 => "Value is Required in POST form",
            201 => "PrevValue is Required in POST form",
            202 => "The given TTL in POST form is not a number",
            203 => "The given index in POST form is not a number",
            204 => "Value or TTL is required in POST form",
            205 => "The given timeout in POST form is not a number",
            206 => "Name is required in POST form",
            207 => "Index or value is required",
            208 => "Index and value cannot both be specified",
            209 => "Invalid field",
            210 => "Invalid POST form",
            211 => "Value provided on refresh",
            212 => "A TTL must be provided on refresh",
            300 => "Raft Internal Error",
            301 => "During Leader Election",
            400 => "watcher is cleared due to etcd recovery",
            401 => "The event in requested index is outdated and cleared",
            402 => "Standby Internal Error",
            403 => "Invalid active size",
            404 => "Standby remove delay",
            _ => "Client Internal Error",
        }
    }

    /// etcd's HTTP status for the code.
    pub fn http_status(&self) -> u16 {
        match self.code {
            100 => 404,
            102 | 108 => 403,
            110 => 401,
            101 | 105 => 412,
            300 | 301 => 500,
            _ => 400,
        }
    }
}

/// A node as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub dir: bool,
    #[serde(default)]
    pub value: String,
    pub created: u64,
    pub modified: u64,
    /// Unix nanoseconds; `None` is permanent.
    #[serde(default)]
    pub expire_at: Option<i64>,
}

/// A node as answered (etcd's NodeExtern); the TTL is computed when it is written out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeView {
    pub key: String,
    pub value: Option<String>,
    pub dir: bool,
    pub expire_at: Option<i64>,
    pub nodes: Option<Vec<NodeView>>,
    pub modified_index: u64,
    pub created_index: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Get,
    Create,
    Set,
    Update,
    Delete,
    CompareAndSwap,
    CompareAndDelete,
    Expire,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Get => "get",
            Action::Create => "create",
            Action::Set => "set",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::CompareAndSwap => "compareAndSwap",
            Action::CompareAndDelete => "compareAndDelete",
            Action::Expire => "expire",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub action: Action,
    pub node: NodeView,
    pub prev_node: Option<NodeView>,
    /// The store's index when the event was answered (`X-Etcd-Index`).
    pub etcd_index: u64,
    #[serde(default)]
    pub refresh: bool,
    /// A write outside the user keys (etcd's membership under `/0`): it holds its
    /// index and its slot in the history, but no `/v2/keys` watcher sees it.
    #[serde(default)]
    pub internal: bool,
}

impl Event {
    fn new(action: Action, key: &str, modified: u64, created: u64) -> Event {
        Event {
            action,
            node: NodeView {
                key: key.to_string(),
                modified_index: modified,
                created_index: created,
                ..NodeView::default()
            },
            prev_node: None,
            etcd_index: 0,
            refresh: false,
            internal: false,
        }
    }

    /// The index the event happened at.
    pub fn index(&self) -> u64 {
        self.node.modified_index
    }

    /// Whether it created the node (answered with 201).
    pub fn is_created(&self) -> bool {
        self.action == Action::Create || (self.action == Action::Set && self.prev_node.is_none())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Method {
    #[default]
    Put,
    Post,
    Delete,
    /// A GET through raft (`quorum=true`).
    QGet,
    /// Expire every node due at `time` (proposed by the leader).
    Sync,
}

/// One v2 write (etcd's etcdserverpb.Request, as far as the v2 store uses it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub value: String,
    pub dir: bool,
    pub prev_value: String,
    pub prev_index: u64,
    pub prev_exist: Option<bool>,
    /// Unix nanoseconds, 0 for none.
    pub expiration: i64,
    pub refresh: bool,
    pub recursive: bool,
    pub sorted: bool,
    /// The leader's time of a `Sync`, Unix nanoseconds.
    pub time: i64,
    /// A write to etcd's v2 auth tree (`/2/...`), not to the user keys.
    pub internal: bool,
}

/// Operation counters (`/v2/stats/store`), local to the member.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub get_success: u64,
    pub get_fail: u64,
    pub set_success: u64,
    pub set_fail: u64,
    pub delete_success: u64,
    pub delete_fail: u64,
    pub update_success: u64,
    pub update_fail: u64,
    pub create_success: u64,
    pub create_fail: u64,
    pub compare_and_swap_success: u64,
    pub compare_and_swap_fail: u64,
    pub compare_and_delete_success: u64,
    pub compare_and_delete_fail: u64,
    pub expire_count: u64,
}

/// The v2 store. See the module doc.
#[derive(Default)]
pub struct V2Store {
    nodes: BTreeMap<String, Node>,
    /// (expiration, path) of every node with a TTL, soonest first.
    ttl: BTreeSet<(i64, String)>,
    index: u64,
    hub: WatcherHub,
    pub stats: Stats,
    /// Paths changed since the last `write_changes`.
    dirty: BTreeSet<String>,
    events_added: Vec<Event>,
    events_dropped: Vec<u64>,
    /// etcd's v2 auth tree (`/2`): path to value, `None` for a directory.
    auth_nodes: BTreeMap<String, Option<String>>,
    /// Auth paths changed since the last `write_changes`.
    auth_dirty: BTreeSet<String>,
}

/// etcd's path.Clean(path.Join("/", p)).
pub fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => path.get(..i).unwrap_or("/"),
    }
}

fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or_default()
}

fn is_hidden_name(path: &str) -> bool {
    name_of(path).starts_with('_')
}

fn expiration(nanos: i64) -> Option<i64> {
    (nanos >= MIN_EXPIRE_UNIX_NANOS).then_some(nanos)
}

impl V2Store {
    pub fn index(&self) -> u64 {
        self.index
    }

    pub fn hub(&mut self) -> &mut WatcherHub {
        &mut self.hub
    }

    pub fn watcher_count(&self) -> usize {
        self.hub.watcher_count()
    }

    /// The soonest expiration of any node (the leader proposes a sync once it passed).
    pub fn next_expiration(&self) -> Option<i64> {
        self.ttl.first().map(|(at, _)| *at)
    }

    /// Loads the store from the side tables.
    pub fn load(store: &concord_mvcc::Store) -> Result<V2Store, concord_mvcc::Error> {
        let mut v2 = V2Store::default();
        for (key, value) in store.meta_scan(NODES_TABLE)? {
            let (Ok(path), Ok(node)) = (
                String::from_utf8(key),
                serde_json::from_slice::<Node>(&value),
            ) else {
                return Err(concord_mvcc::Error::Corrupt(
                    "undecodable v2 node in the store".into(),
                ));
            };
            if let Some(at) = node.expire_at {
                v2.ttl.insert((at, path.clone()));
            }
            v2.nodes.insert(path, node);
        }
        if let Some(bytes) = store.meta_get(INDEX_TABLE, INDEX_KEY)? {
            let raw: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
                concord_mvcc::Error::Corrupt("undecodable v2 index in the store".into())
            })?;
            v2.index = u64::from_be_bytes(raw);
        }
        let mut events = Vec::new();
        for (_, value) in store.meta_scan(EVENTS_TABLE)? {
            let event = serde_json::from_slice::<Event>(&value).map_err(|_| {
                concord_mvcc::Error::Corrupt("undecodable v2 event in the store".into())
            })?;
            events.push(event);
        }
        v2.hub.restore(events);
        for (key, value) in store.meta_scan(AUTH_TABLE)? {
            let (Ok(path), Ok(node)) = (
                String::from_utf8(key),
                serde_json::from_slice::<Option<String>>(&value),
            ) else {
                return Err(concord_mvcc::Error::Corrupt(
                    "undecodable v2 auth node in the store".into(),
                ));
            };
            v2.auth_nodes.insert(path, node);
        }
        Ok(v2)
    }

    /// Replaces this store's state by `other`'s, keeping the counters; every watcher
    /// is dropped (the store they watched is gone).
    pub fn replace_with(&mut self, other: V2Store) {
        let stats = std::mem::take(&mut self.stats);
        *self = other;
        self.stats = stats;
    }

    /// Writes the changes since the last call into an apply batch.
    pub fn write_changes(&mut self, batch: &mut concord_mvcc::WriteBatch<'_>) {
        for path in std::mem::take(&mut self.dirty) {
            match self.nodes.get(&path).map(serde_json::to_vec) {
                Some(Ok(bytes)) => batch.meta_put(NODES_TABLE, path.as_bytes(), &bytes),
                Some(Err(error)) => tracing::error!("encoding a v2 node: {error}"),
                None => batch.meta_delete(NODES_TABLE, path.as_bytes()),
            }
        }
        batch.meta_put(INDEX_TABLE, INDEX_KEY, &self.index.to_be_bytes());
        for event in std::mem::take(&mut self.events_added) {
            if let Ok(bytes) = serde_json::to_vec(&event) {
                batch.meta_put(EVENTS_TABLE, &event.index().to_be_bytes(), &bytes);
            }
        }
        for index in std::mem::take(&mut self.events_dropped) {
            batch.meta_delete(EVENTS_TABLE, &index.to_be_bytes());
        }
        for path in std::mem::take(&mut self.auth_dirty) {
            match self.auth_nodes.get(&path).map(serde_json::to_vec) {
                Some(Ok(bytes)) => batch.meta_put(AUTH_TABLE, path.as_bytes(), &bytes),
                Some(Err(error)) => tracing::error!("encoding a v2 auth node: {error}"),
                None => batch.meta_delete(AUTH_TABLE, path.as_bytes()),
            }
        }
    }

    fn set_index(&mut self, index: u64) {
        self.index = index;
    }

    fn put_node(&mut self, path: &str, node: Node) {
        if let Some(old) = self.nodes.get(path)
            && let Some(at) = old.expire_at
        {
            self.ttl.remove(&(at, path.to_string()));
        }
        if let Some(at) = node.expire_at {
            self.ttl.insert((at, path.to_string()));
        }
        self.nodes.insert(path.to_string(), node);
        self.dirty.insert(path.to_string());
    }

    /// Removes a node and everything below it; returns the removed paths.
    fn remove_tree(&mut self, path: &str) -> Vec<String> {
        let prefix = format!("{path}/");
        let mut removed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        removed.push(path.to_string());
        for p in &removed {
            if let Some(old) = self.nodes.remove(p) {
                if let Some(at) = old.expire_at {
                    self.ttl.remove(&(at, p.clone()));
                }
                self.dirty.insert(p.clone());
            }
        }
        removed
    }

    /// The children of a directory, in key order.
    fn children(&self, dir: &str) -> Vec<(&String, &Node)> {
        let prefix = if dir == "/" {
            "/".to_string()
        } else {
            format!("{dir}/")
        };
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !k.get(prefix.len()..).unwrap_or_default().contains('/'))
            .collect()
    }

    fn has_children(&self, dir: &str) -> bool {
        !self.children(dir).is_empty()
    }

    /// The node at `path` (the root is a permanent directory at index 0).
    fn lookup(&self, path: &str) -> Result<Option<&Node>, V2Error> {
        if path == "/" {
            return Ok(None);
        }
        let mut current = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            current.push('/');
            current.push_str(part);
            match self.nodes.get(&current) {
                None => {
                    return Err(V2Error::new(ECODE_KEY_NOT_FOUND, current, self.index));
                }
                Some(node) if !node.dir && current != path => {
                    return Err(V2Error::new(ECODE_NOT_DIR, current, self.index));
                }
                Some(_) => {}
            }
        }
        Ok(self.nodes.get(path))
    }

    /// The external view of a node; directories list their visible children (with
    /// grandchildren only if `recursive`).
    fn view(&self, path: &str, node: Option<&Node>, recursive: bool, sorted: bool) -> NodeView {
        let is_dir = node.is_none_or(|n| n.dir);
        let mut view = NodeView {
            key: if path == "/" {
                String::new()
            } else {
                path.to_string()
            },
            dir: is_dir,
            value: None,
            expire_at: node.and_then(|n| n.expire_at),
            nodes: None,
            modified_index: node.map_or(0, |n| n.modified),
            created_index: node.map_or(0, |n| n.created),
        };
        if !is_dir {
            view.value = node.map(|n| n.value.clone());
        }
        if is_dir && recursive {
            let mut children: Vec<NodeView> = self
                .children(path)
                .into_iter()
                .filter(|(k, _)| !is_hidden_name(k))
                .map(|(k, n)| self.view(k, Some(n), recursive, sorted))
                .collect();
            if sorted {
                children.sort_by(|a, b| a.key.cmp(&b.key));
            }
            view.nodes = Some(children);
        }
        view
    }

    /// A node's view without children (prevNode and event nodes).
    fn flat_view(&self, path: &str) -> NodeView {
        let node = self.nodes.get(path);
        self.view(path, node, false, false)
    }

    /// etcd's Get: the node, and a directory's children (all levels if `recursive`).
    pub fn get(&mut self, path: &str, recursive: bool, sorted: bool) -> Result<Event, V2Error> {
        let path = clean_path(path);
        let result = self.get_inner(&path, recursive, sorted);
        match result {
            Ok(_) => self.stats.get_success += 1,
            Err(_) => self.stats.get_fail += 1,
        }
        result
    }

    fn get_inner(&self, path: &str, recursive: bool, sorted: bool) -> Result<Event, V2Error> {
        let node = self.lookup(path)?;
        let mut event = Event::new(
            Action::Get,
            path,
            node.map_or(0, |n| n.modified),
            node.map_or(0, |n| n.created),
        );
        event.etcd_index = self.index;
        event.node = self.view(path, node, false, sorted);
        if event.node.dir {
            // A directory always lists its children, with theirs only if recursive.
            let mut children: Vec<NodeView> = self
                .children(path)
                .into_iter()
                .filter(|(k, _)| !is_hidden_name(k))
                .map(|(k, n)| self.view(k, Some(n), recursive, sorted))
                .collect();
            if sorted {
                children.sort_by(|a, b| a.key.cmp(&b.key));
            }
            event.node.nodes = Some(children);
        }
        Ok(event)
    }

    /// Starts a watch (etcd's `wait=true`): `since` 0 means the next event.
    pub fn watch(
        &mut self,
        path: &str,
        recursive: bool,
        stream: bool,
        since: u64,
        sink: WatchSink,
    ) -> Result<WatchStart, V2Error> {
        let path = clean_path(path);
        let since = if since == 0 { self.index + 1 } else { since };
        let index = self.index;
        self.hub.watch(&path, recursive, stream, since, index, sink)
    }

    /// Applies one committed v2 request. `Ok(None)` for a sync.
    pub fn apply(&mut self, request: &Request) -> Result<Option<Event>, V2Error> {
        if request.internal {
            return self.apply_auth_write(request).map(Some);
        }
        let path = clean_path(&request.path);
        let expire = expiration(request.expiration);
        let result = match request.method {
            Method::Sync => {
                self.expire_due(request.time);
                return Ok(None);
            }
            Method::QGet => self.get(&path, request.recursive, request.sorted),
            Method::Post => self.counted(Action::Create, |s| {
                s.create(
                    &path,
                    request.dir,
                    &request.value,
                    true,
                    false,
                    expire,
                    Action::Create,
                )
            }),
            Method::Delete => {
                if request.prev_index > 0 || !request.prev_value.is_empty() {
                    self.counted(Action::CompareAndDelete, |s| {
                        s.compare_and_delete(&path, &request.prev_value, request.prev_index)
                    })
                } else {
                    self.counted(Action::Delete, |s| {
                        s.delete(&path, request.dir, request.recursive)
                    })
                }
            }
            Method::Put => self.put(&path, request, expire),
        };
        result.map(Some)
    }

    fn put(&mut self, path: &str, r: &Request, expire: Option<i64>) -> Result<Event, V2Error> {
        let conditional = r.prev_index > 0 || !r.prev_value.is_empty();
        match r.prev_exist {
            Some(true) if !conditional => self.counted(Action::Update, |s| {
                s.update(path, &r.value, expire, r.refresh)
            }),
            Some(true) => self.counted(Action::CompareAndSwap, |s| {
                s.compare_and_swap(
                    path,
                    &r.prev_value,
                    r.prev_index,
                    &r.value,
                    expire,
                    r.refresh,
                )
            }),
            Some(false) => self.counted(Action::Create, |s| {
                s.create(path, r.dir, &r.value, false, false, expire, Action::Create)
            }),
            None if conditional => self.counted(Action::CompareAndSwap, |s| {
                s.compare_and_swap(
                    path,
                    &r.prev_value,
                    r.prev_index,
                    &r.value,
                    expire,
                    r.refresh,
                )
            }),
            None => self.counted(Action::Set, |s| {
                s.set(path, r.dir, &r.value, expire, r.refresh)
            }),
        }
    }

    fn counted(
        &mut self,
        action: Action,
        op: impl FnOnce(&mut V2Store) -> Result<Event, V2Error>,
    ) -> Result<Event, V2Error> {
        let result = op(self);
        let ok = result.is_ok();
        let stats = &mut self.stats;
        let (success, fail) = match action {
            Action::Create => (&mut stats.create_success, &mut stats.create_fail),
            Action::Set => (&mut stats.set_success, &mut stats.set_fail),
            Action::Update => (&mut stats.update_success, &mut stats.update_fail),
            Action::Delete => (&mut stats.delete_success, &mut stats.delete_fail),
            Action::CompareAndSwap => (
                &mut stats.compare_and_swap_success,
                &mut stats.compare_and_swap_fail,
            ),
            Action::CompareAndDelete => (
                &mut stats.compare_and_delete_success,
                &mut stats.compare_and_delete_fail,
            ),
            Action::Get | Action::Expire => (&mut stats.get_success, &mut stats.get_fail),
        };
        if ok {
            *success += 1;
        } else {
            *fail += 1;
        }
        result
    }

    /// Records an event in the history and tells the watchers.
    fn publish(&mut self, event: &Event, deleted: &[String]) {
        self.record(event.clone());
        self.hub.notify(event, deleted);
    }

    fn record(&mut self, event: Event) {
        self.events_added.push(event.clone());
        if let Some(dropped) = self.hub.record(event) {
            let index = dropped.index();
            self.events_added.retain(|e| e.index() != index);
            self.events_dropped.push(index);
        }
    }

    fn root_read_only(&self, path: &str) -> Result<(), V2Error> {
        if path == "/" {
            return Err(V2Error::new(ECODE_ROOT_READ_ONLY, "/", self.index));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn create_node(
        &mut self,
        path: &str,
        dir: bool,
        value: &str,
        unique: bool,
        replace: bool,
        expire: Option<i64>,
        action: Action,
    ) -> Result<Event, V2Error> {
        let current = self.index;
        let next = current + 1;
        let path = if unique {
            clean_path(&format!("{path}/{next:020}"))
        } else {
            path.to_string()
        };
        self.root_read_only(&path)?;
        // Make the parent directories, as etcd's walk does (they stay even if the
        // create then fails).
        let mut walked = String::new();
        let parent = parent_of(&path).to_string();
        for part in parent.split('/').filter(|p| !p.is_empty()) {
            walked.push('/');
            walked.push_str(part);
            match self.nodes.get(&walked) {
                Some(node) if node.dir => {}
                Some(_) => return Err(V2Error::new(ECODE_NOT_DIR, walked, current)),
                None => {
                    let dir_node = Node {
                        dir: true,
                        value: String::new(),
                        created: next,
                        modified: next,
                        expire_at: None,
                    };
                    self.put_node(&walked, dir_node);
                }
            }
        }
        let mut event = Event::new(action, &path, next, next);
        if let Some(existing) = self.nodes.get(&path) {
            if !replace {
                return Err(V2Error::new(ECODE_NODE_EXIST, path, current));
            }
            if existing.dir {
                return Err(V2Error::new(ECODE_NOT_FILE, path, current));
            }
            event.prev_node = Some(self.flat_view(&path));
            self.remove_tree(&path);
        }
        if dir {
            event.node.dir = true;
        } else {
            event.node.value = Some(value.to_string());
        }
        event.node.expire_at = expire;
        let node = Node {
            dir,
            value: if dir {
                String::new()
            } else {
                value.to_string()
            },
            created: next,
            modified: next,
            expire_at: expire,
        };
        self.put_node(&path, node);
        self.set_index(next);
        event.etcd_index = next;
        Ok(event)
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        path: &str,
        dir: bool,
        value: &str,
        unique: bool,
        replace: bool,
        expire: Option<i64>,
        action: Action,
    ) -> Result<Event, V2Error> {
        let event = self.create_node(path, dir, value, unique, replace, expire, action)?;
        self.publish(&event, &[]);
        Ok(event)
    }

    fn set(
        &mut self,
        path: &str,
        dir: bool,
        value: &str,
        expire: Option<i64>,
        refresh: bool,
    ) -> Result<Event, V2Error> {
        let existing = match self.lookup(path) {
            Ok(node) => Ok(node.cloned()),
            Err(e) if e.code == ECODE_KEY_NOT_FOUND => Err(e),
            Err(e) => return Err(e),
        };
        let mut value = value.to_string();
        if refresh {
            match &existing {
                Err(e) => return Err(e.clone()),
                Ok(node) => value = node.as_ref().map(|n| n.value.clone()).unwrap_or_default(),
            }
        }
        let mut event = self.create_node(path, dir, &value, false, true, expire, Action::Set)?;
        if refresh {
            event.refresh = true;
            self.record(event.clone());
        } else {
            self.publish(&event, &[]);
        }
        Ok(event)
    }

    fn compare_fail(node: &Node, prev_value: &str, prev_index: u64, index: u64) -> Option<V2Error> {
        let index_match = prev_index == 0 || node.modified == prev_index;
        let value_match = prev_value.is_empty() || node.value == prev_value;
        let cause = match (value_match, index_match) {
            (true, true) => return None,
            (false, true) => format!("[{prev_value} != {}]", node.value),
            (true, false) => format!("[{prev_index} != {}]", node.modified),
            (false, false) => format!(
                "[{prev_value} != {}] [{prev_index} != {}]",
                node.value, node.modified
            ),
        };
        Some(V2Error::new(ECODE_TEST_FAILED, cause, index))
    }

    fn existing(&self, path: &str) -> Result<Node, V2Error> {
        match self.lookup(path)? {
            Some(node) => Ok(node.clone()),
            // The root: a directory.
            None => Ok(Node {
                dir: true,
                value: String::new(),
                created: 0,
                modified: 0,
                expire_at: None,
            }),
        }
    }

    fn compare_and_swap(
        &mut self,
        path: &str,
        prev_value: &str,
        prev_index: u64,
        value: &str,
        expire: Option<i64>,
        refresh: bool,
    ) -> Result<Event, V2Error> {
        self.root_read_only(path)?;
        let node = self.existing(path)?;
        if node.dir {
            return Err(V2Error::new(ECODE_NOT_FILE, path, self.index));
        }
        if let Some(error) = Self::compare_fail(&node, prev_value, prev_index, self.index) {
            return Err(error);
        }
        let value = if refresh {
            node.value.clone()
        } else {
            value.to_string()
        };
        let next = self.index + 1;
        let mut event = Event::new(Action::CompareAndSwap, path, next, node.created);
        event.prev_node = Some(self.flat_view(path));
        let updated = Node {
            value: value.clone(),
            modified: next,
            expire_at: expire,
            ..node
        };
        self.put_node(path, updated);
        self.set_index(next);
        event.etcd_index = next;
        event.node.value = Some(value);
        event.node.expire_at = expire;
        if refresh {
            event.refresh = true;
            self.record(event.clone());
        } else {
            self.publish(&event, &[]);
        }
        Ok(event)
    }

    fn update(
        &mut self,
        path: &str,
        value: &str,
        expire: Option<i64>,
        refresh: bool,
    ) -> Result<Event, V2Error> {
        self.root_read_only(path)?;
        let node = self.existing(path)?;
        if node.dir && !value.is_empty() {
            return Err(V2Error::new(ECODE_NOT_FILE, path, self.index));
        }
        let value = if refresh {
            node.value.clone()
        } else {
            value.to_string()
        };
        let next = self.index + 1;
        let mut event = Event::new(Action::Update, path, next, node.created);
        event.prev_node = Some(self.flat_view(path));
        let mut updated = node.clone();
        if node.dir {
            // etcd's write to a directory fails silently: its index stays.
            event.node.dir = true;
        } else {
            updated.value = value.clone();
            updated.modified = next;
            event.node.value = Some(value);
        }
        updated.expire_at = expire;
        event.node.expire_at = expire;
        self.put_node(path, updated);
        self.set_index(next);
        event.etcd_index = next;
        if refresh {
            event.refresh = true;
            self.record(event.clone());
        } else {
            self.publish(&event, &[]);
        }
        Ok(event)
    }

    fn delete(&mut self, path: &str, dir: bool, recursive: bool) -> Result<Event, V2Error> {
        self.root_read_only(path)?;
        let dir = dir || recursive;
        let node = self.existing(path)?;
        if node.dir {
            if !dir {
                return Err(V2Error::new(ECODE_NOT_FILE, path, self.index));
            }
            if !recursive && self.has_children(path) {
                return Err(V2Error::new(ECODE_DIR_NOT_EMPTY, path, self.index));
            }
        }
        Ok(self.remove_with_event(path, &node, Action::Delete))
    }

    /// Removes the node at `path` and everything below it at the next index, and
    /// publishes the `action` event (delete, compareAndDelete, expire) that says so.
    fn remove_with_event(&mut self, path: &str, node: &Node, action: Action) -> Event {
        let next = self.index + 1;
        let mut event = Event::new(action, path, next, node.created);
        event.etcd_index = next;
        event.prev_node = Some(self.flat_view(path));
        event.node.dir = node.dir;
        let removed = self.remove_tree(path);
        self.set_index(next);
        self.publish(&event, &removed);
        event
    }

    fn compare_and_delete(
        &mut self,
        path: &str,
        prev_value: &str,
        prev_index: u64,
    ) -> Result<Event, V2Error> {
        let node = self.existing(path)?;
        if node.dir {
            return Err(V2Error::new(ECODE_NOT_FILE, path, self.index));
        }
        if let Some(error) = Self::compare_fail(&node, prev_value, prev_index, self.index) {
            return Err(error);
        }
        Ok(self.remove_with_event(path, &node, Action::CompareAndDelete))
    }

    /// Removes every node whose expiration is at or before `cutoff`, soonest first,
    /// each with an `expire` event at an index of its own.
    fn expire_due(&mut self, cutoff: i64) {
        while let Some((at, path)) = self.ttl.first().cloned() {
            if at > cutoff {
                break;
            }
            let Some(node) = self.nodes.get(&path).cloned() else {
                self.ttl.remove(&(at, path));
                continue;
            };
            self.stats.expire_count += 1;
            self.remove_with_event(&path, &node, Action::Expire);
        }
    }
}

/// The v2 store as the member shares it: the apply loop writes, the HTTP face reads
/// and watches.
pub type SharedV2Store = std::sync::Arc<parking_lot::Mutex<V2Store>>;

impl Request {
    /// The request a raft entry carries.
    pub fn from_proto(proto: &concord_proto::concordpb::V2Request) -> Request {
        let method = match proto.method.as_str() {
            "POST" => Method::Post,
            "DELETE" => Method::Delete,
            "QGET" => Method::QGet,
            "SYNC" => Method::Sync,
            _ => Method::Put,
        };
        Request {
            method,
            path: proto.path.clone(),
            value: proto.value.clone(),
            dir: proto.dir,
            prev_value: proto.prev_value.clone(),
            prev_index: proto.prev_index,
            prev_exist: proto.prev_exist,
            expiration: proto.expiration,
            refresh: proto.refresh,
            recursive: proto.recursive,
            sorted: proto.sorted,
            time: proto.time,
            internal: proto.internal,
        }
    }

    pub fn to_proto(&self) -> concord_proto::concordpb::V2Request {
        let method = match self.method {
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            Method::QGet => "QGET",
            Method::Sync => "SYNC",
        };
        concord_proto::concordpb::V2Request {
            method: method.to_string(),
            path: self.path.clone(),
            value: self.value.clone(),
            dir: self.dir,
            prev_value: self.prev_value.clone(),
            prev_index: self.prev_index,
            prev_exist: self.prev_exist,
            expiration: self.expiration,
            refresh: self.refresh,
            recursive: self.recursive,
            sorted: self.sorted,
            time: self.time,
            internal: self.internal,
        }
    }
}

/// Applies a committed v2 request and writes what it changed into the round's batch.
pub fn apply_committed(
    store: &parking_lot::Mutex<V2Store>,
    batch: &mut concord_mvcc::WriteBatch<'_>,
    request: &concord_proto::concordpb::V2Request,
) -> concord_proto::concordpb::V2Outcome {
    let request = Request::from_proto(request);
    let mut store = store.lock();
    let outcome = store.apply(&request);
    store.write_changes(batch);
    encode_outcome(&outcome)
}

pub fn encode_outcome(
    outcome: &Result<Option<Event>, V2Error>,
) -> concord_proto::concordpb::V2Outcome {
    concord_proto::concordpb::V2Outcome {
        json: serde_json::to_vec(outcome).unwrap_or_default(),
    }
}

pub fn decode_outcome(
    outcome: &concord_proto::concordpb::V2Outcome,
) -> Result<Result<Option<Event>, V2Error>, serde_json::Error> {
    serde_json::from_slice(&outcome.json)
}
