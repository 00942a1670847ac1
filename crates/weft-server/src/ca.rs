//! The certificate authority's route: `POST /api/v1/certificates` signs a sidecar's CSR for its
//! instance's workload identity (issue 6, mTLS between sidecars).
//!
//! The root lives in the data dir (`ca.key` 0600, `ca.crt`; see [`weft_ca::Ca::load_or_create`])
//! and is enabled with [`crate::Server::enable_ca`]. A request names an Instance (which must
//! exist) or the gateway; the identity it may have is decided here, never by the CSR:
//! `spiffe://<trust-domain>/ns/<namespace>/svc/<the template's identity, else the instance's
//! deployment, else its own name for a bare instance>`, and `spiffe://<trust-domain>/ns/weft-system/svc/gateway` for a gateway.
//! A CSR asking for anything else gets 403. Keys never reach the server: only CSRs do.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use weft_api::{ApiError, ErrorCode, Instance, kinds};
use weft_ca::{Ca, CaError, SpiffeId};

use crate::auth::Caller;
use crate::error::Result;
use crate::http::{json_body, read_body};
use crate::objects;
use crate::state::AppState;
use weft_api::wire::Role;

/// The namespace of the gateway's identity.
pub const GATEWAY_NAMESPACE: &str = "weft-system";
/// The service name of the gateway's identity.
pub const GATEWAY_SERVICE: &str = "gateway";

/// A server's CA and how it signs.
#[derive(Debug)]
pub struct CaService {
    pub ca: Ca,
    pub trust_domain: String,
    pub ttl: Duration,
}

/// `POST /api/v1/certificates` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CertificateRequest {
    /// PEM PKCS#10 request.
    csr: String,
    /// The instance whose sidecar asks (with `namespace`); absent with `gateway: true`.
    #[serde(default)]
    instance: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    /// A gateway asks for the gateway identity.
    #[serde(default)]
    gateway: bool,
}

/// The answer: the chain (leaf then root) and what it is.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CertificateResponse {
    certificate_chain: String,
    ca_certificate: String,
    identity: String,
    not_after: String,
    serial: String,
}

pub async fn create_certificate(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    if !matches!(caller.role, Role::Admin | Role::Proxy) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "a {} token may not request workload certificates (proxy or admin only)",
                caller.role
            ),
        )
        .into());
    }
    let text = read_body(&app, &headers, body).await?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    let req: CertificateRequest = kinds::from_value(value)?;
    let Some(svc) = app.ca.get() else {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "this api server has no certificate authority (start it with a data dir)",
        )
        .into());
    };
    let expected = match (&req.instance, req.gateway) {
        (Some(_), true) => {
            return Err(
                ApiError::bad_request("give either instance or gateway: true, not both").into()
            );
        }
        (None, false) => {
            return Err(ApiError::bad_request(
                "name the instance whose sidecar asks (instance, namespace), or set gateway: true",
            )
            .into());
        }
        (None, true) if caller.node.is_some() || caller.instance.is_some() => {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "a proxy token bound to a node or an instance may not ask for the gateway identity",
            )
            .into());
        }
        (None, true) => SpiffeId::new(&svc.trust_domain, GATEWAY_NAMESPACE, GATEWAY_SERVICE),
        (Some(name), false) => {
            let ns = req.namespace.as_deref().unwrap_or(weft_api::DEFAULT_NAMESPACE);
            weft_api::validate::dns_label(ns)
                .map_err(|e| ApiError::bad_request(format!("namespace: {e}")))?;
            // A sidecar's own token names its instance: it is certified as that one alone.
            if let Some(bound) = &caller.instance
                && *bound != format!("{ns}/{name}")
            {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "this proxy token is bound to instance {bound}; it may not ask for {ns}/{name}'s identity"
                    ),
                )
                .into());
            }
            let bytes = objects::get(&app, &kinds::INSTANCE, Some(ns), name).await?;
            let inst: Instance = serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::new(ErrorCode::Internal, format!("stored instance: {e}")))?;
            // A node's sidecars share its proxy token; bound to the node, it certifies only
            // that node's instances, so one compromised node cannot mint other nodes' identities.
            if let Some(bound) = &caller.node
                && inst.spec.node.as_deref() != Some(bound.as_str())
            {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "this proxy token is bound to node {bound}, and instance {ns}/{name} runs on {}",
                        inst.spec.node.as_deref().map_or("no node yet".to_string(), |n| format!("node {n}"))
                    ),
                )
                .into());
            }
            SpiffeId::new(&svc.trust_domain, ns, inst.spec.identity_service(name))
        }
    };
    let issued =
        svc.ca.sign_csr(&req.csr, &expected, svc.ttl, SystemTime::now()).map_err(|e| match e {
            CaError::BadCsr(m) => ApiError::bad_request(m),
            CaError::Identity(m) => ApiError::new(ErrorCode::Forbidden, m),
            other => ApiError::new(ErrorCode::Internal, other.to_string()),
        })?;
    tracing::info!(identity = %issued.identity, serial = %issued.serial, by = %caller.token_id, "workload certificate issued");
    Ok(json_body(
        StatusCode::CREATED,
        &CertificateResponse {
            certificate_chain: issued.chain_pem,
            ca_certificate: svc.ca.cert_pem().to_string(),
            identity: issued.identity.to_string(),
            not_after: humantime::format_rfc3339_seconds(issued.not_after).to_string(),
            serial: issued.serial,
        },
    ))
}
