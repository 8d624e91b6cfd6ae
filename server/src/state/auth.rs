//! etcd 3.4's authentication and authorization store: users (bcrypt hashes, hashed by
//! the proposer before the request enters the log), roles with READ / WRITE / READWRITE
//! permissions on keys, ranges and prefixes, the enabled switch and the auth revision.
//! It is replicated state: changed only by committed entries ([`AuthStore::apply`]),
//! kept in the MVCC backend's side tables (`auth`, `auth_users`, `auth_roles`), so it
//! travels with raft snapshots and survives restarts. The decisions
//! ([`AuthStore::check_range`], [`AuthStore::check_put`], [`AuthStore::check_txn`], ...)
//! are the ones every face and the apply share, so gRPC and HTTP decide alike.
//!
//! Simple tokens live here too, but they are member-local (as in etcd): each member
//! registers the token when it applies the Authenticate entry and forgets it after the
//! TTL of inactivity. Time is an argument.
//!
//! ```
//! use concord_server::state::auth::{AuthInfo, AuthStore};
//! let auth = AuthStore::default();
//! // With auth disabled, everyone may do everything.
//! assert!(auth.check_range(&AuthInfo::default(), b"foo", b"").is_ok());
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use concord_mvcc::{Store, WriteBatch};
use concord_proto::authpb::{Permission, Role, User, UserAddOptions, permission};
use concord_proto::concordpb::{InternalAuthenticateRequest, apply_result, internal_request};
use concord_proto::etcdserverpb::{self as pb, DeleteRangeRequest, PutRequest, TxnRequest};
use parking_lot::{Mutex, RwLock};
use prost::Message;

use crate::etcd_error::EtcdError;

pub const ROOT_USER: &str = "root";
pub const ROOT_ROLE: &str = "root";

pub(crate) const AUTH_TABLE: &str = "auth";
pub(crate) const USERS_TABLE: &str = "auth_users";
pub(crate) const ROLES_TABLE: &str = "auth_roles";
pub(crate) const ENABLED_KEY: &[u8] = b"enabled";
pub(crate) const REVISION_KEY: &[u8] = b"revision";

/// Who makes a request: the user a token or certificate names, and the auth revision
/// the token was checked at (0: no user at all).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthInfo {
    pub username: String,
    pub revision: u64,
    /// The revision is whatever the auth store's was when the caller was identified (a
    /// simple token or a certificate name, not a JWT's own claim): a request refused
    /// for an old revision may be tried again as of the current one, as etcd's
    /// raftRequest and doSerialize do.
    pub follows_current_revision: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// The replicated part.
#[derive(Clone, Debug)]
struct AuthState {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
}

impl Default for AuthState {
    fn default() -> AuthState {
        // etcd commits revision 1 when it creates a fresh auth store.
        AuthState {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }
}

struct SimpleToken {
    username: String,
    last_used: Instant,
}

/// The auth store of one member: replicated state plus its simple tokens.
pub struct AuthStore {
    state: RwLock<AuthState>,
    tokens: Mutex<HashMap<String, SimpleToken>>,
    token_ttl: Duration,
}

impl Default for AuthStore {
    fn default() -> AuthStore {
        AuthStore::new(Duration::from_secs(300))
    }
}

fn corrupt(what: &str, error: prost::DecodeError) -> concord_mvcc::Error {
    concord_mvcc::Error::Corrupt(format!("{what}: {error}"))
}

impl AuthStore {
    /// An empty store whose simple tokens expire after `token_ttl` unused
    /// (`--auth-token-ttl`).
    pub fn new(token_ttl: Duration) -> AuthStore {
        AuthStore {
            state: RwLock::new(AuthState::default()),
            tokens: Mutex::new(HashMap::new()),
            token_ttl,
        }
    }

    /// Reads the state from the store (start-up, or a store a snapshot replaced). Tokens
    /// are dropped if auth ends up disabled.
    pub fn recover(&self, store: &Store) -> Result<(), concord_mvcc::Error> {
        let mut state = AuthState {
            enabled: store.meta_get(AUTH_TABLE, ENABLED_KEY)?.as_deref() == Some(&[1u8][..]),
            ..AuthState::default()
        };
        if let Some(bytes) = store.meta_get(AUTH_TABLE, REVISION_KEY)? {
            let bytes: [u8; 8] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| concord_mvcc::Error::Corrupt("auth revision".into()))?;
            state.revision = u64::from_be_bytes(bytes);
        }
        for (name, value) in store.meta_scan(USERS_TABLE)? {
            let user = User::decode(value.as_slice()).map_err(|e| corrupt("auth user", e))?;
            state
                .users
                .insert(String::from_utf8_lossy(&name).into_owned(), user);
        }
        for (name, value) in store.meta_scan(ROLES_TABLE)? {
            let role = Role::decode(value.as_slice()).map_err(|e| corrupt("auth role", e))?;
            state
                .roles
                .insert(String::from_utf8_lossy(&name).into_owned(), role);
        }
        if !state.enabled {
            self.tokens.lock().clear();
        }
        *self.state.write() = state;
        Ok(())
    }

    pub fn is_enabled(&self) -> bool {
        self.state.read().enabled
    }

    pub fn revision(&self) -> u64 {
        self.state.read().revision
    }

    /// The stored hash of a user's password for the proposer's check (etcd's
    /// `CheckPassword` minus the bcrypt comparison, which the caller runs off the async
    /// workers), and the auth revision it was read at.
    pub fn password_hash(&self, name: &str) -> Result<(Vec<u8>, u64), EtcdError> {
        let state = self.state.read();
        if !state.enabled {
            return Err(EtcdError::auth_not_enabled());
        }
        let user = state.users.get(name).ok_or_else(EtcdError::auth_failed)?;
        if is_no_password(user) {
            return Err(EtcdError::no_password_user());
        }
        Ok((user.password.clone(), state.revision))
    }

    /// Whether `user` has `role` (etcd's `HasRole`).
    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.state
            .read()
            .users
            .get(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == role))
    }

    // ---- simple tokens (member-local) ----

    /// The user a simple token names, if the token is known and was used within the TTL
    /// (each use extends it, as etcd's token keeper does).
    pub fn simple_token_user(&self, token: &str, now: Instant) -> Option<String> {
        let mut tokens = self.tokens.lock();
        let entry = tokens.get_mut(token)?;
        if now.saturating_duration_since(entry.last_used) >= self.token_ttl {
            tokens.remove(token);
            return None;
        }
        entry.last_used = now;
        Some(entry.username.clone())
    }

    fn forget_tokens_of(&self, user: &str) {
        self.tokens.lock().retain(|_, t| t.username != user);
    }

    // ---- decisions ----

    /// etcd's `isOpPermitted`: whether `info` may read or write `[key, range_end)` (a
    /// single key when `range_end` is empty, every key from `key` on when it is "\0").
    pub fn check_op(
        &self,
        info: &AuthInfo,
        key: &[u8],
        range_end: &[u8],
        access: Access,
    ) -> Result<(), EtcdError> {
        let state = self.state.read();
        state.check_op(info, key, range_end, access)
    }

    pub fn check_range(
        &self,
        info: &AuthInfo,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), EtcdError> {
        self.check_op(info, key, range_end, Access::Read)
    }

    /// A put: write on the key, read too if it asks for the previous value. The keys of
    /// the lease it attaches to are checked by the caller that knows them
    /// ([`AuthStore::check_keys_writable`]).
    pub fn check_put(&self, info: &AuthInfo, put: &PutRequest) -> Result<(), EtcdError> {
        let state = self.state.read();
        state.check_op(info, &put.key, b"", Access::Write)?;
        if put.prev_kv {
            state.check_op(info, &put.key, b"", Access::Read)?;
        }
        Ok(())
    }

    pub fn check_delete(
        &self,
        info: &AuthInfo,
        delete: &DeleteRangeRequest,
    ) -> Result<(), EtcdError> {
        let state = self.state.read();
        state.check_op(info, &delete.key, &delete.range_end, Access::Write)?;
        if delete.prev_kv {
            state.check_op(info, &delete.key, &delete.range_end, Access::Read)?;
        }
        Ok(())
    }

    /// Every compare and every operation of both branches (nested txns included, which
    /// etcd 3.4 leaves unchecked).
    pub fn check_txn(&self, info: &AuthInfo, txn: &TxnRequest) -> Result<(), EtcdError> {
        let state = self.state.read();
        state.check_txn(info, txn)
    }

    /// Keys a lease carries: revoking it (or attaching a put to it) writes them all.
    pub fn check_keys_writable(&self, info: &AuthInfo, keys: &[Vec<u8>]) -> Result<(), EtcdError> {
        let state = self.state.read();
        for key in keys {
            state.check_op(info, key, b"", Access::Write)?;
        }
        Ok(())
    }

    /// etcd's `IsAdminPermitted`: the user must hold the root role.
    pub fn check_admin(&self, info: &AuthInfo) -> Result<(), EtcdError> {
        self.state.read().check_admin(info)
    }

    // ---- apply ----

    /// Applies one auth request of a committed entry made by `info`; `header_present`
    /// is false for the member's own internal requests, which need no permission.
    pub fn apply(
        &self,
        batch: &mut WriteBatch<'_>,
        info: Option<&AuthInfo>,
        request: internal_request::Request,
        now: Instant,
    ) -> Result<apply_result::Result, EtcdError> {
        use apply_result::Result as Out;
        use internal_request::Request as R;
        let mut state = self.state.write();
        if let Some(info) = info
            && needs_admin(&request)
        {
            state.check_admin(info)?;
        }
        let result = match request {
            R::AuthEnable(_) => {
                if !state.enabled {
                    let root = state
                        .users
                        .get(ROOT_USER)
                        .ok_or_else(EtcdError::root_user_not_exist)?;
                    if !root.roles.iter().any(|r| r == ROOT_ROLE) {
                        return Err(EtcdError::root_role_not_exist());
                    }
                    state.enabled = true;
                    batch.meta_put(AUTH_TABLE, ENABLED_KEY, &[1]);
                }
                Out::AuthEnable(pb::AuthEnableResponse::default())
            }
            R::AuthDisable(_) => {
                if state.enabled {
                    state.enabled = false;
                    batch.meta_put(AUTH_TABLE, ENABLED_KEY, &[0]);
                    state.commit_revision(batch);
                    self.tokens.lock().clear();
                }
                Out::AuthDisable(pb::AuthDisableResponse::default())
            }
            R::AuthStatus(_) => Out::AuthStatus(pb::AuthStatusResponse {
                header: None,
                enabled: state.enabled,
                auth_revision: state.revision,
            }),
            R::Authenticate(request) => {
                Out::Authenticate(self.apply_authenticate(&state, request, now)?)
            }
            R::AuthUserAdd(request) => {
                if request.name.is_empty() {
                    return Err(EtcdError::user_empty());
                }
                if state.users.contains_key(&request.name) {
                    return Err(EtcdError::user_already_exist());
                }
                let options = request
                    .options
                    .unwrap_or(UserAddOptions { no_password: false });
                let password = if options.no_password {
                    Vec::new()
                } else {
                    request.hashed_password.into_bytes()
                };
                let user = User {
                    name: request.name.clone().into_bytes(),
                    password,
                    roles: Vec::new(),
                    options: Some(options),
                };
                state.save_user(batch, user);
                Out::AuthUserAdd(pb::AuthUserAddResponse::default())
            }
            R::AuthUserDelete(request) => {
                if state.enabled && request.name == ROOT_USER {
                    return Err(EtcdError::invalid_auth_mgmt());
                }
                if state.users.remove(&request.name).is_none() {
                    return Err(EtcdError::user_not_found());
                }
                batch.meta_delete(USERS_TABLE, request.name.as_bytes());
                state.commit_revision(batch);
                self.forget_tokens_of(&request.name);
                Out::AuthUserDelete(pb::AuthUserDeleteResponse::default())
            }
            R::AuthUserChangePassword(request) => {
                let mut user = state.user_to_change(&request.name)?;
                user.password = request.hashed_password.into_bytes();
                state.save_user(batch, user);
                self.forget_tokens_of(&request.name);
                Out::AuthUserChangePassword(pb::AuthUserChangePasswordResponse::default())
            }
            R::AuthUserGrantRole(request) => {
                let mut user = state.user_to_change(&request.user)?;
                if request.role != ROOT_ROLE && !state.roles.contains_key(&request.role) {
                    return Err(EtcdError::role_not_found());
                }
                if let Err(at) = user.roles.binary_search(&request.role) {
                    user.roles.insert(at, request.role);
                    state.save_user(batch, user);
                }
                Out::AuthUserGrantRole(pb::AuthUserGrantRoleResponse::default())
            }
            R::AuthUserRevokeRole(request) => {
                if state.enabled && request.name == ROOT_USER && request.role == ROOT_ROLE {
                    return Err(EtcdError::invalid_auth_mgmt());
                }
                let mut user = state.user_to_change(&request.name)?;
                let before = user.roles.len();
                user.roles.retain(|r| *r != request.role);
                if user.roles.len() == before {
                    return Err(EtcdError::role_not_granted());
                }
                state.save_user(batch, user);
                Out::AuthUserRevokeRole(pb::AuthUserRevokeRoleResponse::default())
            }
            R::AuthUserGet(request) => {
                // Anyone may read their own user.
                state.check_admin_unless(info, |info| request.name == info.username)?;
                let user = state
                    .users
                    .get(&request.name)
                    .ok_or_else(EtcdError::user_not_found)?;
                Out::AuthUserGet(pb::AuthUserGetResponse {
                    header: None,
                    roles: user.roles.clone(),
                })
            }
            R::AuthUserList(_) => Out::AuthUserList(pb::AuthUserListResponse {
                header: None,
                users: state.users.keys().cloned().collect(),
            }),
            R::AuthRoleAdd(request) => {
                if request.name.is_empty() {
                    return Err(EtcdError::role_empty());
                }
                if state.roles.contains_key(&request.name) {
                    return Err(EtcdError::role_already_exist());
                }
                let role = Role {
                    name: request.name.into_bytes(),
                    key_permission: Vec::new(),
                };
                state.save_role(batch, role);
                Out::AuthRoleAdd(pb::AuthRoleAddResponse::default())
            }
            R::AuthRoleDelete(request) => {
                if state.enabled && request.role == ROOT_ROLE {
                    return Err(EtcdError::invalid_auth_mgmt());
                }
                if state.roles.remove(&request.role).is_none() {
                    return Err(EtcdError::role_not_found());
                }
                batch.meta_delete(ROLES_TABLE, request.role.as_bytes());
                let holders: Vec<User> = state
                    .users
                    .values()
                    .filter(|u| u.roles.contains(&request.role))
                    .cloned()
                    .collect();
                for mut user in holders {
                    user.roles.retain(|r| *r != request.role);
                    state.put_user(batch, user);
                }
                state.commit_revision(batch);
                Out::AuthRoleDelete(pb::AuthRoleDeleteResponse::default())
            }
            R::AuthRoleGet(request) => {
                // Anyone may read the roles they hold.
                state.check_admin_unless(info, |info| {
                    state
                        .users
                        .get(&info.username)
                        .is_some_and(|u| u.roles.contains(&request.role))
                })?;
                let role = state
                    .roles
                    .get(&request.role)
                    .ok_or_else(EtcdError::role_not_found)?;
                Out::AuthRoleGet(pb::AuthRoleGetResponse {
                    header: None,
                    perm: role.key_permission.clone(),
                })
            }
            R::AuthRoleList(_) => Out::AuthRoleList(pb::AuthRoleListResponse {
                header: None,
                roles: state.roles.keys().cloned().collect(),
            }),
            R::AuthRoleGrantPermission(request) => {
                let mut role = state.role_to_change(&request.name)?;
                let perm = request.perm.unwrap_or_default();
                match role
                    .key_permission
                    .iter_mut()
                    .find(|p| p.key == perm.key && p.range_end == perm.range_end)
                {
                    Some(existing) => existing.perm_type = perm.perm_type,
                    None => {
                        role.key_permission.push(Permission {
                            perm_type: perm.perm_type,
                            key: perm.key,
                            range_end: perm.range_end,
                        });
                        // etcd keeps them sorted by key (a stable sort).
                        role.key_permission.sort_by(|a, b| a.key.cmp(&b.key));
                    }
                }
                state.save_role(batch, role);
                Out::AuthRoleGrantPermission(pb::AuthRoleGrantPermissionResponse::default())
            }
            R::AuthRoleRevokePermission(request) => {
                let mut role = state.role_to_change(&request.role)?;
                let before = role.key_permission.len();
                role.key_permission
                    .retain(|p| p.key != request.key || p.range_end != request.range_end);
                if role.key_permission.len() == before {
                    return Err(EtcdError::permission_not_granted());
                }
                state.save_role(batch, role);
                Out::AuthRoleRevokePermission(pb::AuthRoleRevokePermissionResponse::default())
            }
            _ => return Err(EtcdError::internal("not an auth request")),
        };
        Ok(result)
    }

    fn apply_authenticate(
        &self,
        state: &AuthState,
        request: InternalAuthenticateRequest,
        now: Instant,
    ) -> Result<pb::AuthenticateResponse, EtcdError> {
        if !state.enabled {
            return Err(EtcdError::auth_not_enabled());
        }
        let user = state
            .users
            .get(&request.name)
            .ok_or_else(EtcdError::auth_failed)?;
        if is_no_password(user) {
            return Err(EtcdError::auth_failed());
        }
        // The password was checked by the proposer; an entry carries no password.
        if !request.simple_token.is_empty() {
            self.tokens.lock().insert(
                request.simple_token.clone(),
                SimpleToken {
                    username: request.name,
                    last_used: now,
                },
            );
        }
        Ok(pb::AuthenticateResponse {
            header: None,
            token: request.simple_token,
        })
    }
}

/// etcd's `needAdminPermission`: the auth requests only root may make (UserGet and
/// RoleGet decide for themselves).
fn needs_admin(request: &internal_request::Request) -> bool {
    use internal_request::Request as R;
    matches!(
        request,
        R::AuthEnable(_)
            | R::AuthDisable(_)
            | R::AuthUserAdd(_)
            | R::AuthUserDelete(_)
            | R::AuthUserChangePassword(_)
            | R::AuthUserGrantRole(_)
            | R::AuthUserRevokeRole(_)
            | R::AuthRoleAdd(_)
            | R::AuthRoleGrantPermission(_)
            | R::AuthRoleRevokePermission(_)
            | R::AuthRoleDelete(_)
            | R::AuthUserList(_)
            | R::AuthRoleList(_)
    )
}

/// Whether a request is one [`AuthStore::apply`] handles.
pub fn is_auth_request(request: &internal_request::Request) -> bool {
    use internal_request::Request as R;
    needs_admin(request)
        || matches!(
            request,
            R::AuthStatus(_) | R::Authenticate(_) | R::AuthUserGet(_) | R::AuthRoleGet(_)
        )
}

fn is_no_password(user: &User) -> bool {
    user.options.as_ref().is_some_and(|o| o.no_password)
}

fn has_root_role(user: &User) -> bool {
    user.roles.iter().any(|r| r == ROOT_ROLE)
}

impl AuthState {
    fn commit_revision(&mut self, batch: &mut WriteBatch<'_>) {
        self.revision += 1;
        batch.meta_put(AUTH_TABLE, REVISION_KEY, &self.revision.to_be_bytes());
    }

    fn put_user(&mut self, batch: &mut WriteBatch<'_>, user: User) {
        batch.meta_put(USERS_TABLE, &user.name, &user.encode_to_vec());
        self.users
            .insert(String::from_utf8_lossy(&user.name).into_owned(), user);
    }

    fn put_role(&mut self, batch: &mut WriteBatch<'_>, role: Role) {
        batch.meta_put(ROLES_TABLE, &role.name, &role.encode_to_vec());
        self.roles
            .insert(String::from_utf8_lossy(&role.name).into_owned(), role);
    }

    /// A copy of the user `name` to change and then [`AuthState::save_user`].
    fn user_to_change(&self, name: &str) -> Result<User, EtcdError> {
        self.users
            .get(name)
            .cloned()
            .ok_or_else(EtcdError::user_not_found)
    }

    /// A copy of the role `name` to change and then [`AuthState::save_role`].
    fn role_to_change(&self, name: &str) -> Result<Role, EtcdError> {
        self.roles
            .get(name)
            .cloned()
            .ok_or_else(EtcdError::role_not_found)
    }

    /// Stores a new or changed user; every such change is a new auth revision.
    fn save_user(&mut self, batch: &mut WriteBatch<'_>, user: User) {
        self.put_user(batch, user);
        self.commit_revision(batch);
    }

    /// Stores a new or changed role; every such change is a new auth revision.
    fn save_role(&mut self, batch: &mut WriteBatch<'_>, role: Role) {
        self.put_role(batch, role);
        self.commit_revision(batch);
    }

    /// The admin check of a client's request (`info`; None for the member's own),
    /// waived when `allowed` says the sender may do it anyway: etcd's UserGet and
    /// RoleGet, which answer non-root users about themselves and their roles.
    fn check_admin_unless(
        &self,
        info: Option<&AuthInfo>,
        allowed: impl FnOnce(&AuthInfo) -> bool,
    ) -> Result<(), EtcdError> {
        match info {
            Some(info) => match self.check_admin(info) {
                Err(error) if !allowed(info) => Err(error),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    fn check_admin(&self, info: &AuthInfo) -> Result<(), EtcdError> {
        if !self.enabled {
            return Ok(());
        }
        if info.username.is_empty() {
            return Err(EtcdError::user_empty());
        }
        let user = self
            .users
            .get(&info.username)
            .ok_or_else(EtcdError::user_not_found)?;
        if !has_root_role(user) {
            return Err(EtcdError::permission_denied());
        }
        Ok(())
    }

    fn check_op(
        &self,
        info: &AuthInfo,
        key: &[u8],
        range_end: &[u8],
        access: Access,
    ) -> Result<(), EtcdError> {
        if !self.enabled {
            return Ok(());
        }
        if info.revision == 0 {
            return Err(EtcdError::user_empty());
        }
        if info.revision < self.revision {
            return Err(EtcdError::auth_old_revision());
        }
        let Some(user) = self.users.get(&info.username) else {
            return Err(EtcdError::permission_denied());
        };
        if has_root_role(user) {
            return Ok(());
        }
        let granted = self.granted_intervals(user, access);
        let permitted = if range_end.is_empty() {
            granted.iter().any(|g| g.contains_point(key))
        } else {
            covers(&granted, &Interval::of_range(key, range_end))
        };
        if permitted {
            Ok(())
        } else {
            Err(EtcdError::permission_denied())
        }
    }

    fn granted_intervals(&self, user: &User, access: Access) -> Vec<Interval> {
        let mut granted = Vec::new();
        for role in user.roles.iter().filter_map(|name| self.roles.get(name)) {
            for perm in &role.key_permission {
                let read = perm.perm_type == permission::Type::Read as i32
                    || perm.perm_type == permission::Type::Readwrite as i32;
                let write = perm.perm_type == permission::Type::Write as i32
                    || perm.perm_type == permission::Type::Readwrite as i32;
                let applies = match access {
                    Access::Read => read,
                    Access::Write => write,
                };
                if !applies {
                    continue;
                }
                granted.push(if perm.range_end.is_empty() {
                    Interval::point(&perm.key)
                } else {
                    Interval::of_range(&perm.key, &perm.range_end)
                });
            }
        }
        granted
    }

    fn check_txn(&self, info: &AuthInfo, txn: &TxnRequest) -> Result<(), EtcdError> {
        use pb::request_op::Request as Op;
        for compare in &txn.compare {
            self.check_op(info, &compare.key, &compare.range_end, Access::Read)?;
        }
        for op in txn.success.iter().chain(&txn.failure) {
            match &op.request {
                Some(Op::RequestRange(range)) => {
                    self.check_op(info, &range.key, &range.range_end, Access::Read)?;
                }
                Some(Op::RequestPut(put)) => {
                    self.check_op(info, &put.key, b"", Access::Write)?;
                }
                Some(Op::RequestDeleteRange(delete)) => {
                    if delete.prev_kv {
                        self.check_op(info, &delete.key, &delete.range_end, Access::Read)?;
                    }
                    self.check_op(info, &delete.key, &delete.range_end, Access::Write)?;
                }
                Some(Op::RequestTxn(nested)) => self.check_txn(info, nested)?,
                None => {}
            }
        }
        Ok(())
    }
}

/// A key interval `[begin, end)` in etcd's "affine" order, where an empty end is past
/// every key (a from-key range, written "\0" in requests).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Interval {
    begin: Vec<u8>,
    end: Vec<u8>,
}

/// Byte strings ordered as etcd's `BytesAffineComparable`: empty is the greatest.
fn affine_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.cmp(b),
    }
}

impl Interval {
    /// One key: `[key, key + "\0")`.
    fn point(key: &[u8]) -> Interval {
        let mut end = key.to_vec();
        end.push(0);
        Interval {
            begin: key.to_vec(),
            end,
        }
    }

    /// A request's or permission's range; "\0" as the end means "to the last key".
    fn of_range(key: &[u8], range_end: &[u8]) -> Interval {
        let end = if range_end == [0] {
            Vec::new()
        } else {
            range_end.to_vec()
        };
        Interval {
            begin: key.to_vec(),
            end,
        }
    }

    fn contains_point(&self, key: &[u8]) -> bool {
        self.overlaps(&Interval::point(key))
    }

    /// etcd's interval comparison: `other` is neither wholly left nor wholly right.
    fn overlaps(&self, other: &Interval) -> bool {
        use std::cmp::Ordering::*;
        let left_of = affine_cmp(&other.begin, &self.begin) == Less
            && affine_cmp(&other.end, &self.begin) != Greater;
        let right_of = affine_cmp(&other.begin, &self.end) != Less;
        !left_of && !right_of
    }
}

/// Whether the granted intervals together cover `wanted` without a gap (etcd's
/// `IntervalTree.Contains`: the intervals meeting `wanted`, in order of their start,
/// must join up and reach from its start to its end).
fn covers(granted: &[Interval], wanted: &Interval) -> bool {
    use std::cmp::Ordering::*;
    let mut meeting: Vec<&Interval> = granted.iter().filter(|g| g.overlaps(wanted)).collect();
    meeting.sort_by(|a, b| affine_cmp(&a.begin, &b.begin));
    let Some(first) = meeting.first() else {
        return false;
    };
    let mut max_end = first.end.as_slice();
    for interval in &meeting[1..] {
        if affine_cmp(max_end, &interval.begin) == Less {
            return false;
        }
        if affine_cmp(&interval.end, max_end) == Greater {
            max_end = &interval.end;
        }
    }
    affine_cmp(max_end, &wanted.end) != Less && affine_cmp(&first.begin, &wanted.begin) != Greater
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(list: &[(&str, &str)]) -> Vec<Interval> {
        list.iter()
            .map(|(k, e)| {
                if e.is_empty() {
                    Interval::point(k.as_bytes())
                } else {
                    Interval::of_range(k.as_bytes(), e.as_bytes())
                }
            })
            .collect()
    }

    #[test]
    fn coverage_follows_etcds_interval_tree() {
        let granted = ranges(&[("a", "c"), ("c", "e"), ("x", "")]);
        let cases: &[(&str, &str, bool)] = &[
            ("a", "e", true),
            ("b", "d", true),
            ("a", "f", false),
            ("0", "b", false),
            ("x", "x\0", true),
            ("x", "y", false),
        ];
        for (key, end, want) in cases {
            let wanted = Interval::of_range(key.as_bytes(), end.as_bytes());
            assert_eq!(covers(&granted, &wanted), *want, "[{key}, {end})");
        }
        // A from-key grant covers every range from its key on, "\0"-ended ones too.
        let from = vec![Interval::of_range(b"k", b"\0")];
        assert!(covers(&from, &Interval::of_range(b"k", b"\0")));
        assert!(covers(&from, &Interval::of_range(b"m", b"z")));
        assert!(!covers(&from, &Interval::of_range(b"j", b"\0")));
        assert!(from[0].contains_point(b"zzz"));
        assert!(!from[0].contains_point(b"a"));
    }

    #[test]
    fn gaps_between_grants_deny() {
        let granted = ranges(&[("a", "b"), ("c", "d")]);
        assert!(!covers(&granted, &Interval::of_range(b"a", b"d")));
        assert!(granted[1].contains_point(b"c"));
        assert!(!granted[1].contains_point(b"d"));
    }
}
