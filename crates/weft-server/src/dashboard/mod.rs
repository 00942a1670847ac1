//! The web dashboard: static files at `/ui` ([`ui`]) and the figures it polls,
//! `GET /api/v1/dashboard/graph`.
//!
//! The graph endpoint lists the instances, scrapes every sidecar's admin `/metrics`
//! (`status.sidecarAdmin`) at once with a short timeout, and answers the service graph with
//! figures from the change since the previous round ([`graph`], [`math`]). Rounds are shared:
//! an answer younger than [`FRESH`] is served again, so many open tabs cost one round, and
//! concurrent requests wait for the round in progress instead of starting their own.

pub mod graph;
pub mod math;
pub mod ui;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use weft_api::{ApiError, Instance, Service, kinds};

use crate::auth::{Action, Caller};
use crate::error::Result;
use crate::state::AppState;
use crate::{keys, stored};

/// How long an answer is served again instead of scraping anew.
pub const FRESH: Duration = Duration::from_secs(1);
/// Per-sidecar scrape timeout: a sidecar slower than this has no figures this round.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_millis(800);
/// Without a previous round this recent, the first one scrapes twice, this far apart, so the
/// first answer already has rates.
const FIRST_WINDOW: Duration = Duration::from_millis(500);
const STALE: Duration = Duration::from_secs(15);
/// Largest `/metrics` body read from a sidecar.
const MAX_SCRAPE: usize = 4 << 20;

/// The graph endpoint's shared state: the last scrape of each sidecar and the last answer.
pub struct Dashboard {
    client: Client<HttpConnector, Empty<Bytes>>,
    rounds: tokio::sync::Mutex<Rounds>,
}

#[derive(Default)]
struct Rounds {
    /// Per instance (`ns/name`): sidecar address, when, what.
    last: HashMap<String, (String, Instant, math::Scrape)>,
    answer: Option<(Instant, Bytes)>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    /// RFC 3339, when the round was scraped.
    at: String,
    /// Seconds between this round and the previous one (the window the rates are over).
    window_seconds: f64,
    /// Sidecars scraped, and those that did not answer.
    scraped: usize,
    failed: usize,
    #[serde(flatten)]
    graph: graph::Graph,
}

impl Default for Dashboard {
    fn default() -> Self {
        Self::new()
    }
}

impl Dashboard {
    pub fn new() -> Dashboard {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(SCRAPE_TIMEOUT));
        http.set_nodelay(true);
        Dashboard {
            client: Client::builder(TokioExecutor::new()).build(http),
            rounds: tokio::sync::Mutex::new(Rounds::default()),
        }
    }

    async fn scrape(&self, addr: &str) -> Option<math::Scrape> {
        let uri: hyper::Uri = format!("http://{addr}/metrics").parse().ok()?;
        let fetch = async {
            let resp = self.client.get(uri).await.ok()?;
            if !resp.status().is_success() {
                return None;
            }
            let body = Limited::new(resp.into_body(), MAX_SCRAPE).collect().await.ok()?;
            let text = String::from_utf8(body.to_bytes().to_vec()).ok()?;
            math::parse(&text).ok().map(|s| math::counters(&s))
        };
        tokio::time::timeout(SCRAPE_TIMEOUT, fetch).await.ok().flatten()
    }

    /// One round over these instances: `(instance id, address, result)`.
    async fn scrape_all(
        &self,
        targets: &[(String, String)],
    ) -> Vec<(String, String, Instant, Option<math::Scrape>)> {
        futures::future::join_all(targets.iter().map(|(id, addr)| async move {
            let s = self.scrape(addr).await;
            (id.clone(), addr.clone(), Instant::now(), s)
        }))
        .await
    }

    /// The current answer, from the cache or a new round.
    async fn answer(&self, app: &AppState) -> Result<Bytes> {
        let mut rounds = self.rounds.lock().await;
        if let Some((at, body)) = &rounds.answer
            && at.elapsed() < FRESH
        {
            return Ok(body.clone());
        }
        let instances: Vec<Instance> = list(app, &kinds::INSTANCE).await?;
        let services: Vec<Service> = list(app, &kinds::SERVICE).await?;
        let id = |i: &Instance| format!("{}/{}", ns_of(&i.metadata.namespace), i.metadata.name);
        let targets: Vec<(String, String)> = instances
            .iter()
            .filter_map(|i| {
                let addr = i.status.as_ref()?.sidecar_admin.clone()?;
                Some((id(i), addr))
            })
            .collect();
        let recent = rounds.last.values().any(|(_, t, _)| t.elapsed() < STALE);
        if !recent && !targets.is_empty() {
            for (id, addr, t, s) in self.scrape_all(&targets).await {
                if let Some(s) = s {
                    rounds.last.insert(id, (addr, t, s));
                }
            }
            tokio::time::sleep(FIRST_WINDOW).await;
        }
        let results = self.scrape_all(&targets).await;
        let failed = results.iter().filter(|r| r.3.is_none()).count();
        let mut next = HashMap::new();
        let mut deltas: HashMap<String, (math::Scrape, f64)> = HashMap::new();
        let mut windows = Vec::new();
        for (id, addr, t, s) in results {
            let Some(s) = s else { continue };
            if let Some((prev_addr, prev_t, prev)) = rounds.last.get(&id)
                && *prev_addr == addr
            {
                let secs = t.duration_since(*prev_t).as_secs_f64();
                if secs > 0.0 {
                    windows.push(secs);
                    deltas.insert(id.clone(), (math::scrape_delta(prev, &s), secs));
                }
            }
            next.insert(id, (addr, t, s));
        }
        rounds.last = next;
        let rounds_in = instances
            .iter()
            .map(|i| graph::InstanceRound {
                namespace: ns_of(&i.metadata.namespace).to_string(),
                deployment: i.spec.deployment.clone(),
                ready: i.status.as_ref().is_some_and(|s| s.ready),
                delta: deltas.remove(&id(i)),
            })
            .collect::<Vec<_>>();
        let services: Vec<(String, String)> = services
            .iter()
            .map(|s| (ns_of(&s.metadata.namespace).to_string(), s.metadata.name.clone()))
            .collect();
        let window_seconds = if windows.is_empty() {
            0.0
        } else {
            windows.iter().sum::<f64>() / windows.len() as f64
        };
        let answer = Answer {
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            window_seconds,
            scraped: targets.len(),
            failed,
            graph: graph::build(&services, &rounds_in),
        };
        let body = Bytes::from(
            serde_json::to_vec(&answer).map_err(|e| ApiError::internal(e.to_string()))?,
        );
        rounds.answer = Some((Instant::now(), body.clone()));
        Ok(body)
    }
}

fn ns_of(ns: &Option<String>) -> &str {
    ns.as_deref().unwrap_or("default")
}

/// Every object of a kind in every namespace; objects that do not decode are left out (the
/// dashboard shows what it can).
async fn list<T: serde::de::DeserializeOwned>(
    app: &AppState,
    kind: &weft_api::KindInfo,
) -> Result<Vec<T>> {
    let (kvs, _) = app.store.list(&keys::prefix(kind, None)).await?;
    Ok(kvs
        .iter()
        .filter_map(|kv| stored::decode(&kv.value, kv.mod_revision).ok())
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect())
}

async fn graph_handler(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    uri: axum::http::Uri,
    dash: Arc<Dashboard>,
) -> Result<Response> {
    caller.require(Action::Read(&kinds::INSTANCE))?;
    if uri.query().is_some_and(|q| !q.is_empty()) {
        return Err(ApiError::bad_request(
            "unknown query parameters (this route takes none)".to_string(),
        )
        .into());
    }
    let body = dash.answer(&app).await?;
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// The dashboard's routes: `/ui`, `/ui/{file}` and `/api/v1/dashboard/graph`.
pub fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    let dash = Arc::new(Dashboard::new());
    Router::new()
        .route("/ui", get(ui::index))
        .route("/ui/", get(ui::index))
        .route("/ui/{file}", get(ui::asset))
        .route(
            "/api/v1/dashboard/graph",
            get(move |state, caller, uri| graph_handler(state, caller, uri, dash.clone())),
        )
        .with_state(state)
}
