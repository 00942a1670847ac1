//! Bearer tokens and roles.
//!
//! A token reads `weft_<id>_<secret>`. The store keeps only the SHA-256 of the whole token under
//! `/weft/tokens/<id>`, so a copy of the data dir does not leak credentials. Every server keeps
//! the table in memory, fed by a store watch, so that a check costs one hash and a map lookup,
//! and a token revoked on one server stops working on all of them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use futures::StreamExt;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use weft_api::wire::{CreatedToken, Role, TokenInfo};
use weft_api::{ApiError, ErrorCode, KindInfo, kinds};
use weft_store::{EventKind, Precondition, Store};

use crate::error::Error;
use crate::keys;
use crate::state::AppState;

/// The file in a data dir holding the bootstrap admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TokenRecord {
    id: String,
    role: Role,
    /// Hex SHA-256 of the whole token text.
    hash: String,
    created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_unix: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    /// `namespace/name` of the Instance a sidecar's token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    instance: Option<String>,
}

impl TokenRecord {
    fn info(&self) -> TokenInfo {
        TokenInfo {
            id: self.id.clone(),
            role: self.role,
            created: self.created.clone(),
            expires: self.expires_unix.map(|s| {
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s)).to_string()
            }),
            description: self.description.clone(),
            node: self.node.clone(),
            instance: self.instance.clone(),
        }
    }
}

/// What a token is bound to: nothing, a node (proxy and agent tokens), or an instance on a
/// node (proxy tokens).
#[derive(Clone, Copy, Debug, Default)]
pub struct Binding<'a> {
    pub node: Option<&'a str>,
    /// `namespace/name`; only with `node`.
    pub instance: Option<&'a str>,
}

/// Who is calling.
#[derive(Clone, Debug)]
pub struct Caller {
    pub role: Role,
    pub token_id: String,
    /// The node a proxy or agent token is bound to: a proxy's certificates are for that node's
    /// instances; an agent writes that node's objects only.
    pub node: Option<String>,
    /// The Instance (`namespace/name`) a sidecar's token is bound to: its one certificate.
    pub instance: Option<String>,
}

/// What a request wants to do, for the role check.
#[derive(Clone, Copy, Debug)]
pub enum Action<'a> {
    Read(&'a KindInfo),
    Write(&'a KindInfo),
    WriteStatus(&'a KindInfo),
    Delete(&'a KindInfo),
    /// Discovery, OpenAPI, metrics: anything a valid token may see.
    Discover,
    /// Creating, listing and revoking tokens.
    ManageTokens,
    /// Creating a token of this role (agents mint `proxy` tokens for their sidecars).
    CreateToken(Role),
    /// Asking for a service at zero to be scaled up (proxies holding a request for it).
    Activate,
}

impl Caller {
    /// The role matrix of DESIGN.md: least privilege per component.
    pub fn allowed(&self, action: Action<'_>) -> bool {
        use Action::*;
        let is = |k: &KindInfo, other: &KindInfo| k == other;
        match (self.role, action) {
            (Role::Admin, _) => true,
            (_, Discover) => true,
            (_, ManageTokens) => false,
            (Role::Viewer, Read(_)) => true,
            (Role::Agent, Read(_)) => true,
            (Role::Agent, WriteStatus(k) | Delete(k)) if is(k, &kinds::INSTANCE) => true,
            (Role::Agent, CreateToken(Role::Proxy)) => true,
            // A join token trades itself for one bound to the agent's node; a bound one may not.
            (Role::Agent, CreateToken(Role::Agent)) => self.node.is_none(),
            (_, CreateToken(_)) => false,
            (Role::Agent, Write(k) | WriteStatus(k) | Delete(k)) => is(k, &kinds::NODE),
            (Role::Proxy, Activate) => true,
            (Role::Proxy, Read(k)) => {
                is(k, &kinds::SERVICE)
                    || is(k, &kinds::ENDPOINTS)
                    || is(k, &kinds::INSTANCE)
                    || is(k, &kinds::AUTHORIZATION_POLICY)
                    || is(k, &kinds::MESH_CONFIG)
            }
            _ => false,
        }
    }

    /// An agent token bound to a node acts for that node only (the node restriction): it may
    /// write its own Node, and the Instances bound to it. `node` is the node the object names
    /// (a Node's name, an Instance's `spec.node`); `why` says what was refused. Other callers
    /// pass.
    pub fn require_node(
        &self,
        node: Option<&str>,
        why: impl FnOnce() -> String,
    ) -> Result<(), ApiError> {
        match (&self.role, &self.node) {
            (Role::Agent, Some(bound)) if node != Some(bound.as_str()) => Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("this agent token is bound to node {bound}; {}", why()),
            )),
            _ => Ok(()),
        }
    }

    pub fn require(&self, action: Action<'_>) -> Result<(), ApiError> {
        if self.allowed(action) {
            return Ok(());
        }
        let what = match action {
            Action::Read(k) => format!("read {}", k.plural),
            Action::Write(k) => format!("write {}", k.plural),
            Action::WriteStatus(k) => format!("write the status of {}", k.plural),
            Action::Delete(k) => format!("delete {}", k.plural),
            Action::Discover => "use discovery".to_string(),
            Action::ManageTokens => "manage tokens".to_string(),
            Action::CreateToken(r) => format!("create {r} tokens"),
            Action::Activate => "activate services".to_string(),
        };
        let article = if matches!(self.role, Role::Admin | Role::Agent) { "an" } else { "a" };
        Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("{article} {} token may not {what}", self.role),
        ))
    }
}

/// The token table.
pub struct Auth {
    store: Arc<dyn Store>,
    tokens: RwLock<HashMap<String, TokenRecord>>,
}

impl Auth {
    /// Loads every token and keeps the table current from a store watch.
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<Auth>, Error> {
        let (kvs, revision) = store.list(keys::TOKENS).await?;
        let mut map = HashMap::new();
        for kv in kvs {
            if let Ok(rec) = serde_json::from_slice::<TokenRecord>(&kv.value) {
                map.insert(rec.id.clone(), rec);
            }
        }
        let auth = Arc::new(Auth { store: store.clone(), tokens: RwLock::new(map) });
        let weak = Arc::downgrade(&auth);
        let mut watch = store.watch(keys::TOKENS, revision).await?;
        tokio::spawn(async move {
            while let Some(event) = watch.next().await {
                let Some(auth) = weak.upgrade() else { return };
                match event {
                    Ok(ev) => auth.apply(ev),
                    Err(e) => {
                        // Tokens change rarely; on a broken watch reload everything once.
                        tracing::warn!(error = %e, "token watch ended; reloading tokens");
                        if let Err(e) = auth.reload().await {
                            tracing::error!(error = %e.0, "reloading tokens failed");
                        }
                        return;
                    }
                }
            }
        });
        Ok(auth)
    }

    fn apply(&self, ev: weft_store::Event) {
        let id = ev.kv.key.trim_start_matches(keys::TOKENS).to_string();
        let mut tokens = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        match ev.kind {
            EventKind::Delete => {
                tokens.remove(&id);
            }
            EventKind::Put => {
                if let Ok(rec) = serde_json::from_slice::<TokenRecord>(&ev.kv.value) {
                    tokens.insert(id, rec);
                }
            }
        }
    }

    async fn reload(&self) -> Result<(), Error> {
        let (kvs, _) = self.store.list(keys::TOKENS).await?;
        let map = kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice::<TokenRecord>(&kv.value).ok())
            .map(|r| (r.id.clone(), r))
            .collect();
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(())
    }

    /// Checks a bearer token. The error message says what to do about it.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Caller, ApiError> {
        let unauthorized = |m: &str| ApiError::new(ErrorCode::Unauthorized, m);
        let token = token.ok_or_else(|| {
            unauthorized(
                "missing bearer token: pass --token or set WEFT_TOKEN (a local server writes an admin token to <data-dir>/admin.token)",
            )
        })?;
        let id = parse_id(token)
            .ok_or_else(|| unauthorized("malformed token (expected weft_<id>_<secret>)"))?;
        let tokens = self.tokens.read().unwrap_or_else(|p| p.into_inner());
        let rec = tokens.get(id).ok_or_else(|| unauthorized("unknown or revoked token"))?;
        if !constant_time_eq(hash(token).as_bytes(), rec.hash.as_bytes()) {
            return Err(unauthorized("unknown or revoked token"));
        }
        if let Some(exp) = rec.expires_unix
            && now_unix() >= exp
        {
            return Err(unauthorized("token expired; create a new one with `weft token create`"));
        }
        Ok(Caller {
            role: rec.role,
            token_id: rec.id.clone(),
            node: rec.node.clone(),
            instance: rec.instance.clone(),
        })
    }

    /// [`Auth::authenticate`], but a token this server's table does not know yet is looked up
    /// in the store: one created through another server moments ago works here at once, not
    /// only once the table's watch has caught up.
    pub async fn authenticate_fresh(&self, token: Option<&str>) -> Result<Caller, ApiError> {
        let first = self.authenticate(token);
        let Some(id) = token.and_then(parse_id) else { return first };
        let unknown = { !self.tokens.read().unwrap_or_else(|p| p.into_inner()).contains_key(id) };
        if first.is_ok() || !unknown {
            return first;
        }
        match self.store.get(&format!("{}{id}", keys::TOKENS)).await {
            Ok(Some(kv)) => match serde_json::from_slice::<TokenRecord>(&kv.value) {
                Ok(rec) => {
                    self.tokens
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(id.to_string())
                        .or_insert(rec);
                    self.authenticate(token)
                }
                Err(_) => first,
            },
            _ => first,
        }
    }

    /// Creates a token; the returned secret is never stored.
    pub async fn create(
        &self,
        role: Role,
        ttl: Option<Duration>,
        description: &str,
        binding: Binding<'_>,
    ) -> Result<CreatedToken, Error> {
        let mut id_bytes = [0u8; 6];
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut id_bytes);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let id = hex(&id_bytes);
        let token = format!("weft_{id}_{}", hex(&secret));
        let rec = TokenRecord {
            id: id.clone(),
            role,
            hash: hash(&token),
            created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            expires_unix: ttl.map(|t| now_unix() + t.as_secs().max(1)),
            description: description.to_string(),
            node: binding.node.map(str::to_string),
            instance: binding.instance.map(str::to_string),
        };
        let value = serde_json::to_vec(&rec).map_err(|e| ApiError::internal(e.to_string()))?;
        self.store.put(&keys::token(&id), value.into(), Precondition::Absent).await?;
        let info = rec.info();
        // Visible at once, not only once the watch catches up.
        self.tokens.write().unwrap_or_else(|p| p.into_inner()).insert(id, rec);
        Ok(CreatedToken { token, info })
    }

    /// Revokes a token by id or by the token text itself.
    pub async fn revoke(&self, id_or_token: &str) -> Result<TokenInfo, Error> {
        let id = parse_id(id_or_token).unwrap_or(id_or_token);
        let removed = self.store.delete(&keys::token(id), Precondition::None).await?;
        let Some(kv) = removed else {
            return Err(ApiError::not_found(format!("no token with id {id:?}")).into());
        };
        self.tokens.write().unwrap_or_else(|p| p.into_inner()).remove(id);
        let rec: TokenRecord = serde_json::from_slice(&kv.value)
            .map_err(|e| ApiError::internal(format!("stored token is corrupt: {e}")))?;
        Ok(rec.info())
    }

    /// The store keys of the tokens bound to an Instance: deleting the instance deletes them
    /// in the same transaction.
    pub fn keys_bound_to(&self, namespace: &str, name: &str) -> Vec<String> {
        let want = format!("{namespace}/{name}");
        self.keys_where(|r| r.instance.as_deref() == Some(want.as_str()))
    }

    /// The store keys of the tokens bound to a Node alone (its agent's; node-wide proxy
    /// tokens): deleting the Node deletes them in the same transaction. Sidecar tokens bound to
    /// an instance go with their instances, which keeps this transaction small.
    pub fn keys_bound_to_node(&self, node: &str) -> Vec<String> {
        self.keys_where(|r| r.node.as_deref() == Some(node) && r.instance.is_none())
    }

    fn keys_where(&self, bound: impl Fn(&TokenRecord) -> bool) -> Vec<String> {
        let tokens = self.tokens.read().unwrap_or_else(|p| p.into_inner());
        tokens.values().filter(|r| bound(r)).map(|r| keys::token(&r.id)).collect()
    }

    /// Forgets tokens just deleted by a transaction of this server (the watch would too, a
    /// moment later).
    pub fn forget(&self, token_keys: &[String]) {
        let mut tokens = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        for key in token_keys {
            tokens.remove(key.trim_start_matches(keys::TOKENS));
        }
    }

    pub fn list(&self) -> Vec<TokenInfo> {
        let tokens = self.tokens.read().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<TokenInfo> = tokens.values().map(TokenRecord::info).collect();
        list.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        list
    }

    /// Makes sure `<data_dir>/admin.token` holds a working admin token, creating one if the
    /// file is missing or its token is unknown to the store. Returns the token.
    pub async fn ensure_admin_token(&self, data_dir: &Path) -> Result<String, Error> {
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        if let Ok(text) = std::fs::read_to_string(&path) {
            let token = text.trim();
            if self.authenticate(Some(token)).is_ok_and(|c| c.role == Role::Admin) {
                return Ok(token.to_string());
            }
        }
        let created =
            self.create(Role::Admin, None, "bootstrap admin token", Binding::default()).await?;
        write_private(&path, &format!("{}\n", created.token)).map_err(|e| {
            ApiError::internal(format!("writing the admin token to {}: {e}", path.display()))
        })?;
        Ok(created.token)
    }
}

/// Writes a file only its owner can read, replacing it atomically.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

pub(crate) fn parse_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("weft_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 12 && !secret.is_empty()).then_some(id)
}

fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `Caller` as an extractor: a request without a valid token never reaches a handler.
impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Caller, Error> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION);
        let token = match header {
            None => None,
            Some(h) => {
                let text = h
                    .to_str()
                    .ok()
                    .and_then(|s| s.strip_prefix("Bearer ").or_else(|| s.strip_prefix("bearer ")));
                match text {
                    Some(t) => Some(t.trim()),
                    None => {
                        return Err(ApiError::new(
                            ErrorCode::Unauthorized,
                            "the Authorization header must read `Bearer <token>`",
                        )
                        .into());
                    }
                }
            }
        };
        let caller = state.auth.authenticate_fresh(token).await?;
        if let Some(slot) = parts.extensions.get::<crate::audit::CallerSlot>() {
            let _ = slot.0.set(caller.clone());
        }
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role) -> Caller {
        Caller { role, token_id: "x".into(), node: None, instance: None }
    }

    #[test]
    fn role_matrix() {
        let admin = caller(Role::Admin);
        let viewer = caller(Role::Viewer);
        let agent = caller(Role::Agent);
        let proxy = caller(Role::Proxy);
        for k in kinds::KINDS {
            assert!(admin.allowed(Action::Write(k)));
            assert!(viewer.allowed(Action::Read(k)));
            assert!(!viewer.allowed(Action::Write(k)));
            assert!(agent.allowed(Action::Read(k)));
        }
        assert!(agent.allowed(Action::Write(&kinds::NODE)));
        assert!(agent.allowed(Action::WriteStatus(&kinds::INSTANCE)));
        assert!(!agent.allowed(Action::Write(&kinds::INSTANCE)));
        assert!(agent.allowed(Action::Delete(&kinds::INSTANCE)));
        assert!(agent.allowed(Action::CreateToken(Role::Proxy)));
        assert!(!agent.allowed(Action::CreateToken(Role::Admin)));
        assert!(!agent.allowed(Action::ManageTokens));
        assert!(admin.allowed(Action::CreateToken(Role::Agent)));
        assert!(!agent.allowed(Action::Write(&kinds::DEPLOYMENT)));
        assert!(proxy.allowed(Action::Read(&kinds::SERVICE)));
        assert!(proxy.allowed(Action::Read(&kinds::ENDPOINTS)));
        assert!(proxy.allowed(Action::Read(&kinds::AUTHORIZATION_POLICY)));
        assert!(proxy.allowed(Action::Read(&kinds::MESH_CONFIG)));
        assert!(!proxy.allowed(Action::Write(&kinds::AUTHORIZATION_POLICY)));
        assert!(!proxy.allowed(Action::Read(&kinds::DEPLOYMENT)));
        assert!(!proxy.allowed(Action::WriteStatus(&kinds::INSTANCE)));
        assert!(proxy.allowed(Action::Activate));
        assert!(!viewer.allowed(Action::Activate));
        assert!(!agent.allowed(Action::Activate));
        assert_eq!(
            viewer.require(Action::Activate).unwrap_err().message,
            "a viewer token may not activate services"
        );
        assert!(!viewer.allowed(Action::ManageTokens));
        assert!(admin.allowed(Action::ManageTokens));
        let e = viewer.require(Action::Write(&kinds::SERVICE)).unwrap_err();
        assert_eq!(e.status(), 403);
        assert_eq!(e.message, "a viewer token may not write services");
        let e = agent.require(Action::Write(&kinds::DEPLOYMENT)).unwrap_err();
        assert_eq!(e.message, "an agent token may not write deployments");
    }

    #[test]
    fn token_ids() {
        assert_eq!(parse_id("weft_0123456789ab_ff"), Some("0123456789ab"));
        assert_eq!(parse_id("weft_short_ff"), None);
        assert_eq!(parse_id("bearer"), None);
        assert_eq!(parse_id("weft_0123456789ab_"), None);
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
