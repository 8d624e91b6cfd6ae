//! `/v2/auth`: etcd 3.4's v2 auth API (`etcdserver/api/v2auth` and v2http's
//! `client_auth.go`), separate from v3 RBAC. Users, roles and the switch live in the v2
//! store's `/2` tree, written through raft as v2 requests (so each write moves the v2
//! index, as in etcd); passwords are bcrypt hashes at Go's default cost; permissions
//! are path globs (`/foo/*`), and the `guest` role decides for requests without
//! credentials once auth is on. The same checks guard `/v2/keys` (a key's prefix) and
//! `/v2/members` (root only for writes).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Extensions, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::keys::{V2State, error_response, propose};
use crate::core::Core;
use crate::state::v2::{
    ECODE_KEY_NOT_FOUND, ECODE_NODE_EXIST, Method as V2Method, Request, V2Error,
};

const AUTH_PREFIX: &str = "/v2/auth";
/// Where etcd keeps the v2 auth tree in its v2 store.
const STORE_PREFIX: &str = "/2";
const ROOT_ROLE: &str = "root";
const GUEST_ROLE: &str = "guest";
/// Go's bcrypt.DefaultCost, which etcd's v2 auth hashes with.
const BCRYPT_COST: u32 = 10;

/// etcd's v2auth.User (its JSON field names and `omitempty` rules).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    #[serde(default)]
    pub user: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password: String,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "is_empty_list")]
    pub grant: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "is_empty_list")]
    pub revoke: Option<Vec<String>>,
}

/// etcd's v2auth.Role.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Role {
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub permissions: Permissions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Permissions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke: Option<Permissions>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Permissions {
    #[serde(default)]
    pub kv: RwPermission,
}

/// Path globs: `/a/b` is that key, `/a/*` every key that starts with `/a/`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RwPermission {
    #[serde(default)]
    pub read: Option<Vec<String>>,
    #[serde(default)]
    pub write: Option<Vec<String>>,
}

fn is_empty_list(list: &Option<Vec<String>>) -> bool {
    list.as_ref().is_none_or(Vec::is_empty)
}

fn everything() -> Role {
    let all = Some(vec!["/*".to_string()]);
    Role {
        role: String::new(),
        permissions: Permissions {
            kv: RwPermission {
                read: all.clone(),
                write: all,
            },
        },
        grant: None,
        revoke: None,
    }
}

fn root_role() -> Role {
    Role {
        role: ROOT_ROLE.into(),
        ..everything()
    }
}

fn guest_role() -> Role {
    Role {
        role: GUEST_ROLE.into(),
        ..everything()
    }
}

/// The sorted union (or difference) of two lists, as etcd's string sets give it: a
/// list, never null.
fn sorted(set: std::collections::BTreeSet<String>) -> Option<Vec<String>> {
    Some(set.into_iter().collect())
}

impl Permissions {
    fn is_empty(permissions: &Option<Permissions>) -> bool {
        permissions
            .as_ref()
            .is_none_or(|p| is_empty_list(&p.kv.read) && is_empty_list(&p.kv.write))
    }
}

impl RwPermission {
    fn grant(&self, more: &RwPermission) -> Result<RwPermission, Failure> {
        let mut read: std::collections::BTreeSet<String> =
            self.read.iter().flatten().cloned().collect();
        for path in more.read.iter().flatten() {
            if !read.insert(path.clone()) {
                return Err(Failure::auth(
                    StatusCode::CONFLICT,
                    format!("Granting duplicate read permission {path}"),
                ));
            }
        }
        let mut write: std::collections::BTreeSet<String> =
            self.write.iter().flatten().cloned().collect();
        for path in more.write.iter().flatten() {
            if !write.insert(path.clone()) {
                return Err(Failure::auth(
                    StatusCode::CONFLICT,
                    format!("Granting duplicate write permission {path}"),
                ));
            }
        }
        Ok(RwPermission {
            read: sorted(read),
            write: sorted(write),
        })
    }

    /// Revoking what was never granted is skipped, as etcd does (it only logs it).
    fn revoke(&self, less: &RwPermission) -> RwPermission {
        let mut read: std::collections::BTreeSet<String> =
            self.read.iter().flatten().cloned().collect();
        for path in less.read.iter().flatten() {
            read.remove(path);
        }
        let mut write: std::collections::BTreeSet<String> =
            self.write.iter().flatten().cloned().collect();
        for path in less.write.iter().flatten() {
            write.remove(path);
        }
        RwPermission {
            read: sorted(read),
            write: sorted(write),
        }
    }

    fn list(&self, write: bool) -> impl Iterator<Item = &String> {
        if write { &self.write } else { &self.read }
            .iter()
            .flatten()
    }

    /// etcd's HasAccess: a glob ending in `*` matches by prefix, any other exactly.
    fn has_access(&self, key: &str, write: bool) -> bool {
        self.list(write)
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => key.starts_with(prefix),
                None => key == pattern,
            })
    }

    /// etcd's HasRecursiveAccess: only globs ending in `*` cover a whole tree.
    fn has_recursive_access(&self, key: &str, write: bool) -> bool {
        self.list(write).any(|pattern| {
            pattern
                .strip_suffix('*')
                .is_some_and(|prefix| key.starts_with(prefix))
        })
    }
}

impl Role {
    fn has_key_access(&self, key: &str, write: bool) -> bool {
        self.role == ROOT_ROLE || self.permissions.kv.has_access(key, write)
    }

    fn has_recursive_access(&self, key: &str, write: bool) -> bool {
        self.role == ROOT_ROLE || self.permissions.kv.has_recursive_access(key, write)
    }

    /// etcd's Role.merge: the grants added, then the revokes taken away.
    fn merge(&self, change: &Role) -> Result<Role, Failure> {
        if self.role != change.role {
            return Err(Failure::auth(
                StatusCode::CONFLICT,
                format!(
                    "Merging role with conflicting names: {} {}",
                    self.role, change.role
                ),
            ));
        }
        let mut permissions = self.permissions.clone();
        if let Some(grant) = &change.grant {
            permissions.kv = permissions.kv.grant(&grant.kv)?;
        }
        if let Some(revoke) = &change.revoke {
            permissions.kv = permissions.kv.revoke(&revoke.kv);
        }
        Ok(Role {
            role: self.role.clone(),
            permissions,
            grant: None,
            revoke: None,
        })
    }
}

/// Why an auth operation failed: an auth error (etcd's `auth: ...` HTTP errors) or a
/// store error (written as a v2 error).
#[derive(Debug)]
pub enum Failure {
    Auth(StatusCode, String),
    Store(V2Error),
}

impl Failure {
    fn auth(status: StatusCode, message: String) -> Failure {
        Failure::Auth(status, format!("auth: {message}"))
    }

    fn response(&self, core: &Core) -> Response {
        match self {
            Failure::Auth(status, message) => super::http_error(*status, message),
            Failure::Store(error) => error_response(core, error),
        }
    }

    fn is_store_code(&self, code: u32) -> bool {
        matches!(self, Failure::Store(error) if error.code == code)
    }
}

impl From<V2Error> for Failure {
    fn from(error: V2Error) -> Failure {
        Failure::Store(error)
    }
}

/// Runs bcrypt off the async threads.
async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| Failure::auth(StatusCode::INTERNAL_SERVER_ERROR, format!("bcrypt: {e}")))
}

async fn hash_password(password: String) -> Result<String, Failure> {
    blocking(move || {
        bcrypt::hash_with_result(password, BCRYPT_COST)
            .map(|parts| parts.format_for_version(bcrypt::Version::TwoA))
    })
    .await?
    .map_err(|e| Failure::auth(StatusCode::INTERNAL_SERVER_ERROR, format!("bcrypt: {e}")))
}

/// The v2 auth store over a member's v2 store (etcd's v2auth.store).
pub struct AuthStore<'a> {
    state: &'a V2State,
}

impl<'a> AuthStore<'a> {
    pub fn new(state: &'a V2State) -> AuthStore<'a> {
        AuthStore { state }
    }

    fn core(&self) -> &Core {
        &self.state.core
    }

    /// A node of the `/2` tree; a `quorum` read first catches up with the leader (what
    /// etcd's QGET through raft guarantees).
    async fn read(&self, resource: &str, quorum: bool) -> Result<Option<Option<String>>, Failure> {
        if quorum {
            self.core()
                .linearizable_barrier()
                .await
                .map_err(|e| V2Error::new(crate::state::v2::ECODE_RAFT_INTERNAL, e.message, 0))?;
        }
        let path = format!("{STORE_PREFIX}{resource}");
        Ok(self
            .state
            .store
            .lock()
            .auth_node(&path)
            .map(|node| node.map(str::to_string)))
    }

    fn children(&self, resource: &str) -> Vec<String> {
        self.state
            .store
            .lock()
            .auth_children(&format!("{STORE_PREFIX}{resource}"))
    }

    async fn write(
        &self,
        method: V2Method,
        resource: &str,
        value: String,
        dir: bool,
        prev_exist: Option<bool>,
    ) -> Result<(), Failure> {
        let request = Request {
            method,
            path: format!("{STORE_PREFIX}{resource}"),
            value,
            dir,
            prev_exist,
            internal: true,
            ..Request::default()
        };
        propose(self.core(), &request).await?;
        Ok(())
    }

    /// etcd's ensureAuthDirectories: `/2`, `/2/users/`, `/2/roles/` and `/2/enabled`
    /// (false) are created before the first auth write.
    async fn ensure_directories(&self) -> Result<(), Failure> {
        if self.read("/enabled", false).await?.is_some() {
            return Ok(());
        }
        for dir in ["", "/users/", "/roles/"] {
            match self
                .write(V2Method::Put, dir, String::new(), true, Some(false))
                .await
            {
                Err(e) if !e.is_store_code(ECODE_NODE_EXIST) => return Err(e),
                _ => {}
            }
        }
        match self
            .write(
                V2Method::Put,
                "/enabled",
                "false".into(),
                false,
                Some(false),
            )
            .await
        {
            Err(e) if !e.is_store_code(ECODE_NODE_EXIST) => Err(e),
            _ => Ok(()),
        }
    }

    async fn set_resource(
        &self,
        resource: &str,
        json: String,
        prev_exist: bool,
    ) -> Result<(), Failure> {
        self.ensure_directories().await?;
        self.write(V2Method::Put, resource, json, false, Some(prev_exist))
            .await
    }

    /// Writes a new user or role; one already there is a conflict, said as `exists`.
    async fn create_resource(
        &self,
        resource: &str,
        value: &impl Serialize,
        exists: String,
    ) -> Result<(), Failure> {
        let json = serde_json::to_string(value).unwrap_or_default();
        match self.set_resource(resource, json, false).await {
            Err(e) if e.is_store_code(ECODE_NODE_EXIST) => {
                Err(Failure::auth(StatusCode::CONFLICT, exists))
            }
            other => other,
        }
    }

    /// Writes a user or role changed from `old` into `merged`; no change at all is a
    /// bad request, said as `unchanged`.
    async fn replace_resource<T: Serialize + PartialEq>(
        &self,
        resource: &str,
        old: &T,
        merged: T,
        unchanged: &str,
    ) -> Result<T, Failure> {
        if merged == *old {
            return Err(Failure::auth(StatusCode::BAD_REQUEST, unchanged.into()));
        }
        let json = serde_json::to_string(&merged).unwrap_or_default();
        self.set_resource(resource, json, true).await?;
        Ok(merged)
    }

    /// Deletes a user or role; a missing one is not found, said as `missing`.
    async fn delete_resource(&self, resource: &str, missing: String) -> Result<(), Failure> {
        self.ensure_directories().await?;
        match self
            .write(V2Method::Delete, resource, String::new(), false, Some(true))
            .await
        {
            Err(e) if e.is_store_code(ECODE_KEY_NOT_FOUND) => {
                Err(Failure::auth(StatusCode::NOT_FOUND, missing))
            }
            other => other,
        }
    }

    pub fn auth_enabled(&self) -> bool {
        self.state
            .store
            .lock()
            .auth_node(&format!("{STORE_PREFIX}/enabled"))
            .is_some_and(|value| value == Some("true"))
    }

    pub async fn get_user(&self, name: &str, quorum: bool) -> Result<User, Failure> {
        let Some(Some(json)) = self.read(&format!("/users/{name}"), quorum).await? else {
            return Err(Failure::auth(
                StatusCode::NOT_FOUND,
                format!("User {name} does not exist."),
            ));
        };
        let mut user: User = serde_json::from_str(&json)
            .map_err(|e| Failure::auth(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        if user.user == "root" {
            attach_root_role(&mut user);
        }
        Ok(user)
    }

    pub async fn get_role(&self, name: &str, quorum: bool) -> Result<Role, Failure> {
        if name == ROOT_ROLE {
            return Ok(root_role());
        }
        let Some(Some(json)) = self.read(&format!("/roles/{name}"), quorum).await? else {
            return Err(Failure::auth(
                StatusCode::NOT_FOUND,
                format!("Role {name} does not exist."),
            ));
        };
        serde_json::from_str(&json)
            .map_err(|e| Failure::auth(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    }

    fn all_users(&self) -> Vec<String> {
        self.children("/users")
    }

    fn all_roles(&self) -> Vec<String> {
        let mut roles = self.children("/roles");
        roles.push(ROOT_ROLE.into());
        roles.sort();
        roles
    }

    async fn create_user(&self, mut user: User) -> Result<User, Failure> {
        if user.user == "root" {
            attach_root_role(&mut user);
        }
        if user.password.is_empty() {
            return Err(Failure::auth(
                StatusCode::BAD_REQUEST,
                format!("Cannot create user {} with an empty password", user.user),
            ));
        }
        user.password = hash_password(std::mem::take(&mut user.password)).await?;
        self.create_resource(
            &format!("/users/{}", user.user),
            &user,
            format!("User {} already exists.", user.user),
        )
        .await?;
        Ok(user)
    }

    async fn update_user(&self, change: User) -> Result<User, Failure> {
        let old = self.get_user(&change.user, true).await?;
        let merged = merge_user(&old, &change).await?;
        self.replace_resource(
            &format!("/users/{}", change.user),
            &old,
            merged,
            "User not updated. Use grant/revoke/password to update the user.",
        )
        .await
    }

    async fn delete_user(&self, name: &str) -> Result<(), Failure> {
        if self.auth_enabled() && name == "root" {
            return Err(Failure::auth(
                StatusCode::FORBIDDEN,
                "Cannot delete root user while auth is enabled.".into(),
            ));
        }
        self.delete_resource(
            &format!("/users/{name}"),
            format!("User {name} does not exist"),
        )
        .await
    }

    async fn create_role(&self, role: &Role) -> Result<(), Failure> {
        if role.role == ROOT_ROLE {
            return Err(root_role_refused(&role.role));
        }
        self.create_resource(
            &format!("/roles/{}", role.role),
            role,
            format!("Role {} already exists.", role.role),
        )
        .await
    }

    async fn update_role(&self, change: &Role) -> Result<Role, Failure> {
        if change.role == ROOT_ROLE {
            return Err(root_role_refused(&change.role));
        }
        let old = self.get_role(&change.role, true).await?;
        let merged = old.merge(change)?;
        self.replace_resource(
            &format!("/roles/{}", change.role),
            &old,
            merged,
            "Role not updated. Use grant/revoke to update the role.",
        )
        .await
    }

    async fn delete_role(&self, name: &str) -> Result<(), Failure> {
        if name == ROOT_ROLE {
            return Err(root_role_refused(name));
        }
        self.delete_resource(
            &format!("/roles/{name}"),
            format!("Role {name} doesn't exist."),
        )
        .await
    }

    async fn enable(&self) -> Result<(), Failure> {
        if self.auth_enabled() {
            return Err(Failure::auth(
                StatusCode::CONFLICT,
                "already enabled".into(),
            ));
        }
        if self.get_user("root", true).await.is_err() {
            return Err(Failure::auth(
                StatusCode::CONFLICT,
                "No root user available, please create one".into(),
            ));
        }
        if self.get_role(GUEST_ROLE, true).await.is_err() {
            self.create_role(&guest_role()).await?;
        }
        self.set_resource("/enabled", "true".into(), true).await
    }

    async fn disable(&self) -> Result<(), Failure> {
        if !self.auth_enabled() {
            return Err(Failure::auth(
                StatusCode::CONFLICT,
                "already disabled".into(),
            ));
        }
        self.set_resource("/enabled", "false".into(), true).await
    }

    /// The user a request authenticates as: its client certificate's common name
    /// (with `--client-cert-auth` and no Authorization header) or its basic auth.
    async fn user_of(&self, headers: &HeaderMap, extensions: &Extensions) -> Option<User> {
        if headers.get("authorization").is_none() && self.core().config.client_tls.client_cert_auth
        {
            let name = extensions
                .get::<crate::listener::ConnectionInfo>()
                .and_then(|c| c.common_name())?;
            return self.get_user(&name, false).await.ok();
        }
        let (name, password) = basic_auth(headers)?;
        let user = self.get_user(&name, false).await.ok()?;
        let hash = user.password.clone();
        let matches = blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        matches.then_some(user)
    }

    /// etcd's hasRootAccess.
    pub async fn has_root_access(&self, headers: &HeaderMap, extensions: &Extensions) -> bool {
        if !self.auth_enabled() {
            return true;
        }
        self.user_of(headers, extensions)
            .await
            .is_some_and(|user| user.roles.iter().flatten().any(|role| role == ROOT_ROLE))
    }

    /// etcd's hasWriteRootAccess: reads are free, writes need root.
    pub async fn has_write_root_access(
        &self,
        method: &Method,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> bool {
        *method == Method::GET
            || *method == Method::HEAD
            || self.has_root_access(headers, extensions).await
    }

    /// etcd's hasKeyPrefixAccess for a `/v2/keys` request on `key` (the raw path).
    pub async fn has_key_prefix_access(
        &self,
        method: &Method,
        headers: &HeaderMap,
        extensions: &Extensions,
        key: &str,
        recursive: bool,
    ) -> bool {
        if !self.auth_enabled() {
            return true;
        }
        let write = *method != Method::GET && *method != Method::HEAD;
        let user = if headers.get("authorization").is_none() {
            let from_certificate = if self.core().config.client_tls.client_cert_auth {
                self.user_of(headers, extensions).await
            } else {
                None
            };
            match from_certificate {
                Some(user) => user,
                None => {
                    return self
                        .get_role(GUEST_ROLE, false)
                        .await
                        .is_ok_and(|guest| guest.has_key_access(key, write));
                }
            }
        } else {
            match self.user_of(headers, extensions).await {
                Some(user) => user,
                None => return false,
            }
        };
        for name in user.roles.iter().flatten() {
            let Ok(role) = self.get_role(name, false).await else {
                continue;
            };
            let allowed = if recursive {
                role.has_recursive_access(key, write)
            } else {
                role.has_key_access(key, write)
            };
            if allowed {
                return true;
            }
        }
        false
    }
}

fn root_role_refused(name: &str) -> Failure {
    Failure::auth(
        StatusCode::FORBIDDEN,
        format!("Cannot modify role {name}: is root role."),
    )
}

fn attach_root_role(user: &mut User) {
    let roles = user.roles.get_or_insert_with(Vec::new);
    if !roles.iter().any(|r| r == ROOT_ROLE) {
        roles.push(ROOT_ROLE.into());
    }
}

/// etcd's User.merge: a new password hashed, the grants added, the revokes taken away.
async fn merge_user(old: &User, change: &User) -> Result<User, Failure> {
    if old.user != change.user {
        return Err(Failure::auth(
            StatusCode::CONFLICT,
            format!(
                "Merging user data with conflicting usernames: {} {}",
                old.user, change.user
            ),
        ));
    }
    let password = if change.password.is_empty() {
        old.password.clone()
    } else {
        hash_password(change.password.clone()).await?
    };
    let mut roles: std::collections::BTreeSet<String> =
        old.roles.iter().flatten().cloned().collect();
    for role in change.grant.iter().flatten() {
        if !roles.insert(role.clone()) {
            return Err(Failure::auth(
                StatusCode::CONFLICT,
                format!("Granting duplicate role {role} for user {}", change.user),
            ));
        }
    }
    for role in change.revoke.iter().flatten() {
        if !roles.remove(role) {
            return Err(Failure::auth(
                StatusCode::CONFLICT,
                format!("Revoking ungranted role {role} for user {}", change.user),
            ));
        }
    }
    Ok(User {
        user: old.user.clone(),
        password,
        roles: sorted(roles),
        grant: None,
        revoke: None,
    })
}

/// Go's Request.BasicAuth: `Basic base64(user:password)`.
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_string(), password.to_string()))
}

/// etcd's answer to a request without the credentials it needs.
pub fn no_auth() -> Response {
    super::http_error(StatusCode::UNAUTHORIZED, "Insufficient credentials")
}

fn allow(method: &Method, allowed: &[Method], text: &'static str) -> Option<Response> {
    (!allowed.contains(method)).then(|| super::method_not_allowed(text))
}

/// A JSON answer as Go's json.Encoder writes it (a newline after the value).
fn encoded(core: &Core, status: StatusCode, json: String) -> Response {
    let mut response = Response::new(Body::from(format!("{json}\n")));
    *response.status_mut() = status;
    with_headers(core, response)
}

fn with_headers(core: &Core, mut response: Response) -> Response {
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&format!("{:x}", core.cluster_id)) {
        headers.insert("x-etcd-cluster-id", id);
    }
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    response
}

/// A user as listed: its name and its roles' full descriptions.
#[derive(Serialize)]
struct UserWithRoles {
    user: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    roles: Vec<Role>,
}

/// `/v2/auth/enable`: GET the switch, PUT to enable, DELETE to disable.
pub async fn enable(
    State(state): State<V2State>,
    method: Method,
    headers: HeaderMap,
    extensions: Extensions,
) -> Response {
    if let Some(refused) = allow(
        &method,
        &[Method::GET, Method::PUT, Method::DELETE],
        "GET,PUT,DELETE",
    ) {
        return refused;
    }
    let store = AuthStore::new(&state);
    let core = &state.core;
    if !store
        .has_write_root_access(&method, &headers, &extensions)
        .await
    {
        return no_auth();
    }
    let outcome = match method {
        Method::GET => {
            let json = format!("{{\"enabled\":{}}}", store.auth_enabled());
            return encoded(core, StatusCode::OK, json);
        }
        Method::PUT => store.enable().await,
        _ => store.disable().await,
    };
    match outcome {
        Ok(()) => with_headers(core, Response::new(Body::empty())),
        Err(failure) => failure.response(core),
    }
}

/// The two collections of the v2 auth API: the same routes, checks and answers around
/// their own store calls.
#[derive(Clone, Copy)]
enum Collection {
    Users,
    Roles,
}

impl Collection {
    async fn list(self, store: &AuthStore<'_>) -> Response {
        match self {
            Collection::Users => list_users(store).await,
            Collection::Roles => list_roles(store).await,
        }
    }

    async fn get(self, store: &AuthStore<'_>, name: &str) -> Result<Response, Failure> {
        match self {
            Collection::Users => get_user(store, name).await,
            Collection::Roles => {
                let role = store.get_role(name, false).await?;
                let json = serde_json::to_string(&role).unwrap_or_default();
                Ok(encoded(store.core(), StatusCode::OK, json))
            }
        }
    }

    async fn put(
        self,
        store: &AuthStore<'_>,
        name: &str,
        body: &[u8],
    ) -> Result<Response, Failure> {
        match self {
            Collection::Users => put_user(store, name, body).await,
            Collection::Roles => put_role(store, name, body).await,
        }
    }

    async fn delete(self, store: &AuthStore<'_>, name: &str) -> Result<(), Failure> {
        match self {
            Collection::Users => store.delete_user(name).await,
            Collection::Roles => store.delete_role(name).await,
        }
    }
}

/// `/v2/auth/users` and `/v2/auth/users/{name}`.
pub async fn users(
    State(state): State<V2State>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    extensions: Extensions,
    body: Bytes,
) -> Response {
    let request = (method, uri, headers, extensions, body);
    collection(&state, Collection::Users, request).await
}

/// `/v2/auth/roles` and `/v2/auth/roles/{name}`.
pub async fn roles(
    State(state): State<V2State>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    extensions: Extensions,
    body: Bytes,
) -> Response {
    let request = (method, uri, headers, extensions, body);
    collection(&state, Collection::Roles, request).await
}

/// A collection (GET lists it) or one of its members (GET, PUT, DELETE), for root only.
async fn collection(
    state: &V2State,
    kind: Collection,
    (method, uri, headers, extensions, body): (Method, Uri, HeaderMap, Extensions, Bytes),
) -> Response {
    let store = AuthStore::new(state);
    let core = &state.core;
    let name = match resource_name(uri.path()) {
        Ok(None) => {
            if let Some(refused) = allow(&method, &[Method::GET], "GET") {
                return refused;
            }
            if !store.has_root_access(&headers, &extensions).await {
                return no_auth();
            }
            return kind.list(&store).await;
        }
        Ok(Some(name)) => name,
        Err(InvalidPath) => {
            return super::http_error(StatusCode::BAD_REQUEST, "Invalid path");
        }
    };
    if let Some(refused) = allow(
        &method,
        &[Method::GET, Method::PUT, Method::DELETE],
        "GET,PUT,DELETE",
    ) {
        return refused;
    }
    if !store.has_root_access(&headers, &extensions).await {
        return no_auth();
    }
    let result = match method {
        Method::GET => kind.get(&store, &name).await,
        Method::PUT => kind.put(&store, &name, &body).await,
        _ => kind
            .delete(&store, &name)
            .await
            .map(|()| with_headers(core, Response::new(Body::empty()))),
    };
    result.unwrap_or_else(|failure| failure.response(core))
}

async fn list_users(store: &AuthStore<'_>) -> Response {
    let core = store.core();
    let mut users = Vec::new();
    for name in store.all_users() {
        let user = match store.get_user(&name, false).await {
            Ok(user) => user,
            Err(failure) => return failure.response(core),
        };
        let mut roles = Vec::new();
        for role in user.roles.iter().flatten() {
            if let Ok(role) = store.get_role(role, false).await {
                roles.push(role);
            }
        }
        users.push(UserWithRoles {
            user: user.user,
            roles,
        });
    }
    let users = (!users.is_empty()).then_some(users);
    let json = format!(
        "{{\"users\":{}}}",
        serde_json::to_string(&users).unwrap_or_default()
    );
    encoded(core, StatusCode::OK, json)
}

async fn get_user(store: &AuthStore<'_>, name: &str) -> Result<Response, Failure> {
    let user = store.get_user(name, false).await?;
    let mut roles = Vec::new();
    for role in user.roles.iter().flatten() {
        roles.push(store.get_role(role, false).await?);
    }
    let json = serde_json::to_string(&UserWithRoles {
        user: user.user,
        roles,
    })
    .unwrap_or_default();
    Ok(encoded(store.core(), StatusCode::OK, json))
}

/// A PUT's user or role (`kind`), which must be the one its URL names.
fn named_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    name: &str,
    kind: &str,
    name_of: fn(&T) -> &str,
) -> Result<T, Failure> {
    let Ok(value) = serde_json::from_slice::<T>(body) else {
        return Err(Failure::Auth(
            StatusCode::BAD_REQUEST,
            "Invalid JSON in request body.".into(),
        ));
    };
    if name_of(&value) != name {
        return Err(Failure::Auth(
            StatusCode::BAD_REQUEST,
            format!("{kind} JSON name does not match the name in the URL"),
        ));
    }
    Ok(value)
}

async fn put_user(store: &AuthStore<'_>, name: &str, body: &[u8]) -> Result<Response, Failure> {
    let user: User = named_body(body, name, "User", |user: &User| &user.user)?;
    let (mut out, created) = if is_empty_list(&user.grant) && is_empty_list(&user.revoke) {
        if !is_empty_list(&user.roles) {
            (store.create_user(user).await?, true)
        } else if store.get_user(&user.user, true).await.is_ok() {
            (store.update_user(user).await?, false)
        } else {
            (store.create_user(user).await?, true)
        }
    } else {
        if !is_empty_list(&user.roles) {
            return Err(Failure::Auth(
                StatusCode::BAD_REQUEST,
                "User JSON contains both roles and grant/revoke".into(),
            ));
        }
        (store.update_user(user).await?, false)
    };
    out.password.clear();
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let json = serde_json::to_string(&out).unwrap_or_default();
    Ok(encoded(store.core(), status, json))
}

async fn list_roles(store: &AuthStore<'_>) -> Response {
    let core = store.core();
    let mut roles = Vec::new();
    for name in store.all_roles() {
        match store.get_role(&name, false).await {
            Ok(role) => roles.push(role),
            Err(failure) => return failure.response(core),
        }
    }
    let json = format!(
        "{{\"roles\":{}}}",
        serde_json::to_string(&roles).unwrap_or_default()
    );
    encoded(core, StatusCode::OK, json)
}

async fn put_role(store: &AuthStore<'_>, name: &str, body: &[u8]) -> Result<Response, Failure> {
    let role: Role = named_body(body, name, "Role", |role: &Role| &role.role)?;
    let core = store.core();
    if Permissions::is_empty(&role.grant) && Permissions::is_empty(&role.revoke) {
        store.create_role(&role).await?;
        let json = serde_json::to_string(&role).unwrap_or_default();
        return Ok(encoded(core, StatusCode::CREATED, json));
    }
    if !Permissions::is_empty(&Some(role.permissions.clone())) {
        return Err(Failure::Auth(
            StatusCode::BAD_REQUEST,
            "Role JSON contains both permissions and grant/revoke".into(),
        ));
    }
    let out = store.update_role(&role).await?;
    let json = serde_json::to_string(&out).unwrap_or_default();
    Ok(encoded(core, StatusCode::OK, json))
}

/// A path below a collection's member (etcd's "Invalid path").
struct InvalidPath;

/// The name in `/v2/auth/{users,roles}/{name}` (None for the collection itself), as
/// etcd splits the cleaned path; deeper paths are etcd's "Invalid path".
fn resource_name(path: &str) -> Result<Option<String>, InvalidPath> {
    // Go's URL.Path is percent-decoded: `/users/Autogenerated%20CA` names a user with a space.
    let sub = crate::state::v2::clean_path(&super::keys::decode_path(
        path.get(AUTH_PREFIX.len()..).unwrap_or(""),
    ));
    let pieces: Vec<&str> = sub.split('/').collect();
    match pieces.as_slice() {
        [_, _] => Ok(None),
        [_, _, name] => Ok(Some(name.to_string())),
        _ => Err(InvalidPath),
    }
}

/// The routes of the v2 auth API.
pub fn routes() -> axum::Router<V2State> {
    use axum::routing::any;
    axum::Router::new()
        .route("/v2/auth/enable", any(enable))
        .route("/v2/auth/users", any(users))
        .route("/v2/auth/users/", any(users))
        .route("/v2/auth/users/{*rest}", any(users))
        .route("/v2/auth/roles", any(roles))
        .route("/v2/auth/roles/", any(roles))
        .route("/v2/auth/roles/{*rest}", any(roles))
}
