//! Reading and writing objects: the api's semantics, apart from HTTP.
//!
//! Rules (DESIGN.md "API"): a spec write keeps the server-owned metadata (uid, creation time,
//! generation) and the status; a status write changes nothing but the status; a write carrying a
//! `resourceVersion` that is not current is a 409; without one, last writer wins. An object
//! written unchanged is not written at all (no new revision, no watch event). Apply is one
//! store transaction: every object or none.

use std::collections::HashMap;
use std::time::SystemTime;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;
use weft_api::selector::Selector;
use weft_api::wire::{ApplyAction, ApplyResponse, ApplyResult};
use weft_api::{API_VERSION, ApiError, KindInfo};
use weft_store::{KeyValue, Op, Precondition, StoreError};

use crate::error::{Error, Result};
use crate::state::AppState;
use crate::{keys, stored};

/// Optimistic-concurrency retries when a concurrent writer slips in between read and write.
const WRITE_ATTEMPTS: usize = 8;

/// Which part of an object a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// metadata (labels, annotations) and spec; status is kept.
    Spec,
    /// status only.
    Status,
}

/// A successful write.
#[derive(Debug)]
pub struct Written {
    /// The object as stored, with its resourceVersion.
    pub object: Bytes,
    pub action: ApplyAction,
    pub revision: u64,
}

fn what(kind: &KindInfo, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if kind.namespaced => format!("{} {name:?} in namespace {ns:?}", kind.singular),
        _ => format!("{} {name:?}", kind.singular),
    }
}

fn not_found(kind: &KindInfo, namespace: Option<&str>, name: &str) -> Error {
    ApiError::not_found(format!("{} not found", what(kind, namespace, name))).into()
}

pub async fn get(
    app: &AppState,
    kind: &KindInfo,
    namespace: Option<&str>,
    name: &str,
) -> Result<Bytes> {
    match app.store.get(&keys::object(kind, namespace, name)).await? {
        Some(kv) => Ok(stored::with_revision(&kv.value, kv.mod_revision)),
        None => Err(not_found(kind, namespace, name)),
    }
}

/// A `<Kind>List` of the matching objects, read from one store snapshot.
pub async fn list(
    app: &AppState,
    kind: &KindInfo,
    namespace: Option<&str>,
    selector: &Selector,
) -> Result<(Bytes, u64)> {
    let (kvs, revision) = app.store.list(&keys::prefix(kind, namespace)).await?;
    let mut out =
        BytesMut::with_capacity(64 + kvs.iter().map(|kv| kv.value.len() + 32).sum::<usize>());
    out.put_slice(format!("{{\"apiVersion\":\"{API_VERSION}\",\"items\":[").as_bytes());
    let mut first = true;
    for kv in &kvs {
        if !selector.is_everything() {
            let labels = stored::labels(&kv.value);
            if !selector.matches(&labels) {
                continue;
            }
        }
        if !first {
            out.put_u8(b',');
        }
        first = false;
        out.put_slice(&stored::with_revision(&kv.value, kv.mod_revision));
    }
    out.put_slice(
        format!(
            "],\"kind\":\"{}List\",\"metadata\":{{\"resourceVersion\":\"{revision}\"}}}}",
            kind.kind
        )
        .as_bytes(),
    );
    Ok((out.freeze(), revision))
}

/// The revision a write was conditioned on, if the client sent one.
fn requested_revision(value: &Value) -> Result<Option<u64>> {
    match value.get("metadata").and_then(|m| m.get("resourceVersion")) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| {
            ApiError::invalid("metadata.resourceVersion", format!("{s:?} is not a revision number"))
                .into()
        }),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
            ApiError::invalid("metadata.resourceVersion", "is not a revision number").into()
        }),
        Some(_) => {
            Err(ApiError::invalid("metadata.resourceVersion", "is not a revision number").into())
        }
    }
}

fn stale(
    kind: &KindInfo,
    namespace: Option<&str>,
    name: &str,
    sent: u64,
    current: Option<u64>,
) -> Error {
    let now = match current {
        Some(c) => format!("it is now at {c}"),
        None => "it no longer exists".to_string(),
    };
    ApiError::conflict(format!(
        "{} was modified since resourceVersion {sent} ({now}); get it again and reapply your change",
        what(kind, namespace, name)
    ))
    .with_field("metadata.resourceVersion")
    .into()
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The object to store for a spec write, and whether it differs from what is stored.
fn merge_spec(current: Option<&KeyValue>, incoming: &Value) -> Result<(Value, bool)> {
    let mut next = incoming.clone();
    let obj = next.as_object_mut().ok_or_else(|| ApiError::internal("object is not a map"))?;
    obj.remove("status");
    let meta = obj
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| ApiError::internal("object has no metadata"))?;
    meta.remove("resourceVersion");
    match current {
        None => {
            meta.insert("uid".into(), Value::String(uuid::Uuid::new_v4().to_string()));
            meta.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
            meta.insert("generation".into(), Value::from(1u64));
            Ok((next, true))
        }
        Some(kv) => {
            let old: Value = serde_json::from_slice(&kv.value)
                .map_err(|e| ApiError::internal(format!("stored object is not JSON: {e}")))?;
            let old_meta = old.get("metadata").cloned().unwrap_or(Value::Null);
            for field in ["uid", "creationTimestamp"] {
                match old_meta.get(field) {
                    Some(v) => meta.insert(field.into(), v.clone()),
                    None => meta.remove(field),
                };
            }
            let generation = old_meta.get("generation").and_then(Value::as_u64).unwrap_or(1);
            let spec_changed = old.get("spec") != next.get("spec");
            if let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("generation".into(), Value::from(generation + u64::from(spec_changed)));
            }
            if let (Some(status), Some(obj)) = (old.get("status"), next.as_object_mut()) {
                obj.insert("status".into(), status.clone());
            }
            let changed = next != old;
            Ok((next, changed))
        }
    }
}

/// The object to store for a status write: the current object with the incoming status,
/// validated as a whole.
fn merge_status(kind: &KindInfo, current: &KeyValue, incoming: &Value) -> Result<(Value, bool)> {
    let old: Value = serde_json::from_slice(&current.value)
        .map_err(|e| ApiError::internal(format!("stored object is not JSON: {e}")))?;
    let mut next = old.clone();
    if let Some(obj) = next.as_object_mut() {
        match incoming.get("status") {
            Some(Value::Null) | None => obj.remove("status"),
            Some(s) => obj.insert("status".into(), s.clone()),
        };
    }
    let next = kind.normalize(next)?;
    let mut next = next;
    if let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    let changed = next != old;
    Ok((next, changed))
}

/// Creates or updates one object. `incoming` must be normalized already for spec writes; for
/// status writes it is validated here, merged into the stored object.
pub async fn write(
    app: &AppState,
    kind: &'static KindInfo,
    namespace: Option<&str>,
    name: &str,
    incoming: &Value,
    mode: WriteMode,
    dry_run: bool,
) -> Result<Written> {
    let key = keys::object(kind, namespace, name);
    let sent = requested_revision(incoming)?;
    // With this held, a compare-and-swap can only lose to a writer on another server.
    let _locked = app.locks.lock([key.as_str()]).await;
    for _ in 0..WRITE_ATTEMPTS {
        let current = app.store.get(&key).await?;
        if let Some(rv) = sent
            && current.as_ref().map(|c| c.mod_revision) != Some(rv)
        {
            return Err(stale(kind, namespace, name, rv, current.map(|c| c.mod_revision)));
        }
        let (next, changed) = match mode {
            WriteMode::Spec => merge_spec(current.as_ref(), incoming)?,
            WriteMode::Status => match &current {
                Some(c) => merge_status(kind, c, incoming)?,
                None => return Err(not_found(kind, namespace, name)),
            },
        };
        let action = match (&current, changed) {
            (None, _) => ApplyAction::Created,
            (Some(_), true) => ApplyAction::Configured,
            (Some(_), false) => ApplyAction::Unchanged,
        };
        if action == ApplyAction::Unchanged || dry_run {
            let revision = current.as_ref().map_or(0, |c| c.mod_revision);
            let bytes = stored::encode(next)?;
            return Ok(Written {
                object: stored::with_revision(&bytes, revision),
                action,
                revision,
            });
        }
        let value = stored::encode(next)?;
        let precondition = match &current {
            Some(c) => Precondition::ModRevision(c.mod_revision),
            None => Precondition::Absent,
        };
        match app.store.put(&key, value, precondition).await {
            Ok(kv) => {
                app.metrics.record_write(kind.kind, &action.to_string());
                return Ok(Written {
                    object: stored::with_revision(&kv.value, kv.mod_revision),
                    action,
                    revision: kv.mod_revision,
                });
            }
            Err(StoreError::PreconditionFailed { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(format!(
        "{} is being changed by others too often; retry",
        what(kind, namespace, name)
    ))
    .into())
}

/// Deletes one object, returning it as it was, with the deletion's revision.
pub async fn delete(
    app: &AppState,
    kind: &KindInfo,
    namespace: Option<&str>,
    name: &str,
    revision: Option<u64>,
) -> Result<Bytes> {
    let key = keys::object(kind, namespace, name);
    let _locked = app.locks.lock([key.as_str()]).await;
    let precondition = match revision {
        Some(rv) => Precondition::ModRevision(rv),
        None => Precondition::Exists,
    };
    // An Instance takes its sidecar's token with it, in the same transaction: no credential
    // outlives the workload it was minted for.
    // So does a Node: its agent's and sidecars' node-bound tokens go with it.
    let tokens = match (kind.kind, namespace) {
        ("Instance", Some(ns)) => app.auth.keys_bound_to(ns, name),
        ("Node", None) => app.auth.keys_bound_to_node(name),
        _ => Vec::new(),
    };
    let mut ops = vec![Op::Delete { key: key.clone(), precondition }];
    ops.extend(
        tokens.iter().map(|k| Op::Delete { key: k.clone(), precondition: Precondition::None }),
    );
    match app.store.txn(ops).await {
        Ok(r) => match r.results.into_iter().next().flatten() {
            Some(kv) => {
                app.auth.forget(&tokens);
                app.metrics.record_write(kind.kind, "deleted");
                Ok(stored::with_revision(&kv.value, r.revision))
            }
            None => Err(not_found(kind, namespace, name)),
        },
        Err(StoreError::PreconditionFailed { actual, .. }) => match (revision, actual) {
            (_, None) => Err(not_found(kind, namespace, name)),
            (Some(rv), actual) => Err(stale(kind, namespace, name, rv, actual)),
            (None, Some(_)) => {
                Err(ApiError::internal("delete precondition failed unexpectedly").into())
            }
        },
        Err(e) => Err(e.into()),
    }
}

/// One object of an apply, already normalized.
pub struct ApplyItem {
    pub kind: &'static KindInfo,
    pub value: Value,
    /// 1-based document number, for errors.
    pub document: usize,
}

fn identity(item: &ApplyItem) -> (Option<String>, String) {
    let meta = &item.value["metadata"];
    let ns =
        item.kind.namespaced.then(|| meta["namespace"].as_str().unwrap_or("default").to_string());
    (ns, meta["name"].as_str().unwrap_or_default().to_string())
}

/// Creates or updates every object in one transaction: all of them or none.
pub async fn apply(app: &AppState, items: &[ApplyItem], dry_run: bool) -> Result<ApplyResponse> {
    let mut seen = HashMap::new();
    for item in items {
        let (ns, name) = identity(item);
        if let Some(prev) = seen.insert((item.kind.kind, ns.clone(), name.clone()), item.document) {
            return Err(ApiError::invalid(
                "metadata.name",
                format!(
                    "{} also appears in document {prev}",
                    what(item.kind, ns.as_deref(), &name)
                ),
            )
            .in_document(item.document, None)
            .into());
        }
    }
    let keys: Vec<String> = items
        .iter()
        .map(|item| {
            let (ns, name) = identity(item);
            keys::object(item.kind, ns.as_deref(), &name)
        })
        .collect();
    let _locked = app.locks.lock(keys.iter().map(String::as_str)).await;
    for _ in 0..WRITE_ATTEMPTS {
        let mut ops = Vec::new();
        let mut plans = Vec::new();
        for item in items {
            let (ns, name) = identity(item);
            let key = keys::object(item.kind, ns.as_deref(), &name);
            let current = app.store.get(&key).await?;
            let sent = requested_revision(&item.value)
                .map_err(|e| Error(e.0.in_document(item.document, None)))?;
            if let Some(rv) = sent
                && current.as_ref().map(|c| c.mod_revision) != Some(rv)
            {
                let e = stale(item.kind, ns.as_deref(), &name, rv, current.map(|c| c.mod_revision));
                return Err(Error(e.0.in_document(item.document, None)));
            }
            let (next, changed) = merge_spec(current.as_ref(), &item.value)?;
            let action = match (&current, changed) {
                (None, _) => ApplyAction::Created,
                (Some(_), true) => ApplyAction::Configured,
                (Some(_), false) => ApplyAction::Unchanged,
            };
            if action != ApplyAction::Unchanged {
                let precondition = match &current {
                    Some(c) => Precondition::ModRevision(c.mod_revision),
                    None => Precondition::Absent,
                };
                ops.push(Op::Put { key, value: stored::encode(next)?, precondition });
            }
            plans.push((item, ns, name, action, current.map_or(0, |c| c.mod_revision)));
        }
        let revision = if ops.is_empty() || dry_run {
            None
        } else {
            match app.store.txn(ops).await {
                Ok(r) => Some(r.revision),
                Err(StoreError::PreconditionFailed { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let results = plans
            .into_iter()
            .map(|(item, namespace, name, action, old)| {
                if revision.is_some() && action != ApplyAction::Unchanged {
                    app.metrics.record_write(item.kind.kind, &action.to_string());
                }
                let rv = match (action, revision) {
                    (ApplyAction::Unchanged, _) | (_, None) => old,
                    (_, Some(r)) => r,
                };
                ApplyResult {
                    kind: item.kind.kind.to_string(),
                    namespace,
                    name,
                    action,
                    resource_version: rv.to_string(),
                }
            })
            .collect();
        return Ok(ApplyResponse { results });
    }
    Err(ApiError::conflict("the objects are being changed by others too often; retry").into())
}
