//! The writes etcd 3.4 makes in its v2 store for cluster membership. etcd keeps the
//! member table under `/0` of the v2 store (the user keys live under `/1`), so every
//! membership change moves the v2 index that `/v2/keys` answers with: a fresh
//! one-member etcd answers `X-Etcd-Index: 3` (the member added, its attributes
//! published, the cluster version set) before any key was written, and a client that
//! watches with `waitIndex` counts on that numbering.
//!
//! Concord keeps its member table elsewhere (the `members` side table), so here each
//! such write only takes its index and its slot in the event history, with the action
//! and key etcd's would have (`etcdserver/api/membership/store.go`); no `/v2/keys`
//! read or watcher sees it, as none sees etcd's `/0` from `/1`.
//!
//! The v2 auth API keeps its users, roles and switch in etcd's `/2` tree
//! (`etcdserver/api/v2auth`): proposed as v2 requests marked `internal`, applied here
//! to a small tree of their own (persisted in the `v2_auth` table), each success again
//! a write at the next index.

use super::{
    Action, ECODE_INVALID_FIELD, ECODE_KEY_NOT_FOUND, ECODE_NODE_EXIST, Event, Method, Request,
    V2Error, V2Store, clean_path,
};

/// The side table of the v2 auth tree: path to the JSON of `Option<String>` (a
/// directory is `null`).
pub const AUTH_TABLE: &str = "v2_auth";

const MEMBERS_PREFIX: &str = "/0/members";
const REMOVED_MEMBERS_PREFIX: &str = "/0/removed_members";
const CLUSTER_VERSION_KEY: &str = "/0/version";

/// etcd's types.ID text: lower-case hex without padding.
fn member_key(id: u64) -> String {
    format!("{MEMBERS_PREFIX}/{id:x}")
}

impl V2Store {
    /// A member joined (etcd's mustSaveMemberToStore: create its `raftAttributes`).
    pub fn member_added(&mut self, id: u64) {
        self.internal_write(
            Action::Create,
            &format!("{}/raftAttributes", member_key(id)),
        );
    }

    /// A member's peer URLs changed or a learner was promoted (etcd's
    /// mustUpdateMemberInStore: update its `raftAttributes`).
    pub fn member_raft_attributes_updated(&mut self, id: u64) {
        self.internal_write(
            Action::Update,
            &format!("{}/raftAttributes", member_key(id)),
        );
    }

    /// A member published its name and client URLs (etcd's
    /// mustUpdateMemberAttrInStore: set its `attributes`).
    pub fn member_attributes_set(&mut self, id: u64) {
        self.internal_write(Action::Set, &format!("{}/attributes", member_key(id)));
    }

    /// A member was removed (etcd's mustDeleteMemberFromStore: delete its directory,
    /// then create its entry among the removed members: two indexes).
    pub fn member_removed(&mut self, id: u64) {
        self.internal_write(Action::Delete, &member_key(id));
        self.internal_write(Action::Create, &format!("{REMOVED_MEMBERS_PREFIX}/{id:x}"));
    }

    /// The cluster version was decided (etcd's mustSaveClusterVersionToStore).
    pub fn cluster_version_set(&mut self) {
        self.internal_write(Action::Set, CLUSTER_VERSION_KEY);
    }

    /// Takes the next index for a write outside the user keys, counted in the store's
    /// statistics as etcd counts it, and records it in the history for no watcher.
    fn internal_write(&mut self, action: Action, key: &str) -> Event {
        let next = self.index + 1;
        let mut event = Event::new(action, key, next, next);
        event.etcd_index = next;
        event.internal = true;
        let stats = &mut self.stats;
        match action {
            Action::Create => stats.create_success += 1,
            Action::Set => stats.set_success += 1,
            Action::Update => stats.update_success += 1,
            Action::Delete => stats.delete_success += 1,
            _ => {}
        }
        self.set_index(next);
        self.record(event.clone());
        event
    }

    /// Applies a write to the v2 auth tree, as etcd's store applies the v2auth
    /// package's requests: create (`prevExist=false`, a directory with `dir`), update
    /// (`prevExist=true`), set, and delete (the node and everything below it).
    pub(super) fn apply_auth_write(&mut self, request: &Request) -> Result<Event, V2Error> {
        let path = clean_path(&request.path);
        let exists = self.auth_nodes.contains_key(&path);
        let value = (!request.dir).then(|| request.value.clone());
        let stats = &mut self.stats;
        let action = match (request.method, request.prev_exist) {
            (Method::Put, Some(false)) if exists => {
                stats.create_fail += 1;
                return Err(V2Error::new(ECODE_NODE_EXIST, path, self.index));
            }
            (Method::Put, Some(false)) => Action::Create,
            (Method::Put | Method::Delete, Some(true)) if !exists => {
                if request.method == Method::Delete {
                    stats.delete_fail += 1;
                } else {
                    stats.update_fail += 1;
                }
                return Err(V2Error::new(ECODE_KEY_NOT_FOUND, path, self.index));
            }
            (Method::Put, Some(true)) => Action::Update,
            (Method::Put, None) => Action::Set,
            (Method::Delete, _) if !exists => {
                stats.delete_fail += 1;
                return Err(V2Error::new(ECODE_KEY_NOT_FOUND, path, self.index));
            }
            (Method::Delete, _) => Action::Delete,
            _ => return Err(V2Error::new(ECODE_INVALID_FIELD, path, self.index)),
        };
        if action == Action::Delete {
            let below = format!("{path}/");
            let removed: Vec<String> = self
                .auth_nodes
                .keys()
                .filter(|k| **k == path || k.starts_with(&below))
                .cloned()
                .collect();
            for key in removed {
                self.auth_nodes.remove(&key);
                self.auth_dirty.insert(key);
            }
        } else {
            self.auth_nodes.insert(path.clone(), value);
            self.auth_dirty.insert(path.clone());
        }
        Ok(self.internal_write(action, &path))
    }

    /// A node of the v2 auth tree: `Some(None)` for a directory, `Some(Some(value))`
    /// for a file, `None` if there is none.
    pub fn auth_node(&self, path: &str) -> Option<Option<&str>> {
        self.auth_nodes
            .get(&clean_path(path))
            .map(|value| value.as_deref())
    }

    /// The names of a v2 auth directory's children, in key order.
    pub fn auth_children(&self, dir: &str) -> Vec<String> {
        let prefix = format!("{}/", clean_path(dir));
        self.auth_nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, _)| k.get(prefix.len()..))
            .filter(|rest| !rest.contains('/'))
            .map(str::to_string)
            .collect()
    }
}
