//! Routing one request: which cluster serves it, with which deadline, or why the proxy answers
//! it itself. Shared by the HTTP/1 fast path and the hyper path.
//!
//! - Plain listener: the fixed upstream cluster.
//! - Inbound listener: the app, after admission (rate limits, concurrency cap).
//! - Outbound listener: the service named by the absolute-form target or `Host`.
//! - Upstream-port listener: its fixed service, whatever the request names.
//! - Gateway listener: the Service whose `spec.ingress` matches Host and path best
//!   (`sidecar::gateway`); 404 when none does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::cluster::Cluster;
use crate::config::Direction;
use crate::metrics::{ErrorKind, Metrics, ServiceMetrics, UpstreamMetrics};
use crate::proxy::{Mode, Proxy};
use crate::sidecar::gateway;
use crate::sidecar::inbound::{self, Admitted};
use crate::sidecar::outbound::{self, Unresolved};

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenerKind {
    Plain,
    /// Index into the sidecar's inbound listeners.
    Inbound(usize),
    Outbound,
    /// Index into the sidecar's upstream-port listeners.
    Upstream(usize),
    /// The ingress gateway's listener.
    Gateway,
}

/// A listener's identity and the metric handles for requests that reach no cluster.
#[derive(Debug)]
pub(crate) struct ListenerCtx {
    pub(crate) kind: ListenerKind,
    pub(crate) svc: ServiceMetrics,
    pub(crate) local: UpstreamMetrics,
}

impl ListenerCtx {
    pub(crate) fn new(
        metrics: &Metrics,
        kind: ListenerKind,
        direction: Direction,
        service: &str,
    ) -> ListenerCtx {
        let d = direction.as_str();
        ListenerCtx {
            kind,
            svc: metrics.service(d, service),
            local: metrics.upstream(d, service, "local"),
        }
    }
}

/// How to read a request header (the ring-hash key), whichever engine parsed the request.
pub(crate) enum Headers<'a> {
    /// A raw HTTP/1 head, parsed again on demand (only ring-hash needs this).
    Raw(&'a [u8]),
    Map(&'a http::HeaderMap),
}

impl Headers<'_> {
    fn get(&self, name: &str) -> Option<Vec<u8>> {
        match self {
            Headers::Map(m) => m.get(name).map(|v| v.as_bytes().to_vec()),
            Headers::Raw(head) => {
                let mut headers = [httparse::EMPTY_HEADER; 128];
                let mut req = httparse::Request::new(&mut headers);
                req.parse(head).ok()?;
                req.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| h.value.to_vec())
            }
        }
    }
}

/// What routing looks at.
pub(crate) struct RequestView<'a> {
    pub(crate) method: &'a str,
    /// Origin-form target (path and query).
    pub(crate) target: &'a str,
    /// The absolute-form target's authority, else `Host`.
    pub(crate) authority: Option<&'a str>,
    pub(crate) headers: Headers<'a>,
    /// The caller's verified mesh identity (inbound mTLS connections).
    pub(crate) peer: Option<&'a weft_ca::SpiffeId>,
}

/// A routed request.
#[derive(Debug)]
pub(crate) struct Routed {
    pub(crate) cluster: Arc<Cluster>,
    /// Overall deadline (retries included).
    pub(crate) timeout: Duration,
    /// Ring-hash key.
    pub(crate) hash_key: Option<Vec<u8>>,
    /// Inbound concurrency slots, held until the request ends.
    pub(crate) _admitted: Option<Admitted>,
}

/// A request the proxy answers itself.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
    pub(crate) retry_after: Option<u64>,
    /// The cluster whose metrics count it, when the refusal is a policy's.
    pub(crate) cluster: Option<Arc<Cluster>>,
}

impl Refusal {
    fn new(status: StatusCode, kind: ErrorKind, message: String) -> Refusal {
        Refusal { status, kind, message, retry_after: None, cluster: None }
    }
}

/// Routes a request like [`route`], but holds one for a service with no endpoint (scaled to
/// zero) until an endpoint appears or the hold ends (`crate::hold`): the gateway, outbound and
/// upstream-port listeners of a dynamic sidecar hold; inbound and plain listeners, and static
/// configurations, never do.
pub(crate) async fn route_or_hold(
    proxy: &Proxy,
    listener: &ListenerCtx,
    req: &RequestView<'_>,
    now: Instant,
) -> Result<Routed, Refusal> {
    let routed = route(proxy, listener, req, now)?;
    let holds = matches!(
        listener.kind,
        ListenerKind::Outbound | ListenerKind::Upstream(_) | ListenerKind::Gateway
    );
    if !holds
        || routed.cluster.has_endpoints()
        || proxy.config.hold_queue == 0
        || !proxy.holds.active()
    {
        return Ok(routed);
    }
    let Some(id) = routed.cluster.target.clone() else { return Ok(routed) };
    // Boxed: the connection futures of the common path stay small.
    Box::pin(hold(proxy, listener, req, now, routed, id)).await
}

#[cold]
async fn hold(
    proxy: &Proxy,
    listener: &ListenerCtx,
    req: &RequestView<'_>,
    start: Instant,
    routed: Routed,
    id: crate::hold::ServiceId,
) -> Result<Routed, Refusal> {
    let cluster = routed.cluster.clone();
    let timeout = proxy.config.hold_timeout.min(routed.timeout);
    let deadline = start + timeout;
    let direction = cluster.direction.as_str();
    let mut ending =
        HoldEnding { proxy, direction, service: &cluster.service, result: "cancelled" };
    let mut place = match proxy.holds.enter(&id, proxy.config.hold_queue) {
        Ok(p) => p,
        Err(held) => {
            ending.result = "queue_full";
            let mut r = Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::HoldQueueFull,
                format!(
                    "service {:?} has no ready instance and {held} requests are already waiting                      for one to start; try again shortly\n",
                    cluster.service
                ),
            );
            r.retry_after = Some(1);
            r.cluster = Some(cluster.clone());
            return Err(r);
        }
    };
    drop(routed);
    loop {
        // Route again after taking the place: routes that changed in between are seen here,
        // and later changes wake the wait below.
        let routed = route(proxy, listener, req, Instant::now())?;
        if routed.cluster.has_endpoints() {
            ending.result = "released";
            return Ok(routed);
        }
        if !place.changed(deadline.into()).await {
            ending.result = "timeout";
            let mut r = Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::HoldTimeout,
                format!(
                    "service {:?} has no ready instance: held the request {} for one to start \
                     (it may be scaling from zero, or failing to start; see `weft get inst`)\n",
                    cluster.service,
                    crate::config::format_duration(timeout),
                ),
            );
            r.cluster = Some(cluster.clone());
            return Err(r);
        }
    }
}

/// Counts how a hold ended, including a client that went away (the future dropped).
struct HoldEnding<'a> {
    proxy: &'a Proxy,
    direction: &'static str,
    service: &'a str,
    result: &'static str,
}

impl Drop for HoldEnding<'_> {
    fn drop(&mut self) {
        self.proxy.metrics.held(self.direction, self.service, self.result);
    }
}

/// Routes a request that came in on `listener`.
pub(crate) fn route(
    proxy: &Proxy,
    listener: &ListenerCtx,
    req: &RequestView<'_>,
    now: Instant,
) -> Result<Routed, Refusal> {
    let sidecar = match &proxy.mode {
        Mode::Plain(cluster) => {
            return Ok(Routed {
                cluster: cluster.clone(),
                timeout: cluster.policy.timeout,
                hash_key: None,
                _admitted: None,
            });
        }
        Mode::Sidecar(s) => s,
    };
    let snap = sidecar.snapshot.load();
    let cluster = match listener.kind {
        ListenerKind::Inbound(i) => {
            let Some(r) = snap.inbound.get(i) else {
                return Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorKind::NoRoute,
                    "no inbound route\n".into(),
                ));
            };
            if let Some(authz) = &r.authz
                && let Err(message) = authz.check_http(req.peer, req.method, req.target)
            {
                return Err(Refusal {
                    status: StatusCode::FORBIDDEN,
                    kind: ErrorKind::Forbidden,
                    message,
                    retry_after: None,
                    cluster: Some(r.cluster.clone()),
                });
            }
            let admitted = if r.admissions.is_empty() {
                None
            } else {
                match inbound::admit(&r.admissions, req.method, req.target, now) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        return Err(Refusal {
                            status: e.status,
                            kind: e.kind,
                            message: e.message,
                            retry_after: e.retry_after,
                            cluster: Some(r.cluster.clone()),
                        });
                    }
                }
            };
            return Ok(Routed {
                cluster: r.cluster.clone(),
                timeout: r.cluster.policy.timeout,
                hash_key: None,
                _admitted: admitted,
            });
        }
        ListenerKind::Outbound => {
            let Some(authority) = req.authority.filter(|a| !a.is_empty()) else {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    ErrorKind::BadRequest,
                    "the request names no service: send http://SERVICE/... or a Host header\n"
                        .into(),
                ));
            };
            match outbound::resolve(&snap, authority) {
                Ok(c) => c.clone(),
                Err(Unresolved::NoService(m) | Unresolved::NoPort(m)) => {
                    return Err(Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        ErrorKind::NoRoute,
                        m,
                    ));
                }
            }
        }
        ListenerKind::Upstream(i) => match snap.upstream_ports.get(i).and_then(Option::as_ref) {
            Some(c) => c.clone(),
            None => {
                let spec = proxy.config.sidecar.as_ref().and_then(|s| s.upstream_ports.get(i));
                let message = match spec {
                    Some(u) => {
                        let ns = u.namespace.as_deref().unwrap_or(&snap.namespace);
                        let name = format!("{}.{ns}", u.service);
                        match snap.service(&name) {
                            Some(_) => format!(
                                "service {:?} in namespace {ns:?} has no port {} for {}\n",
                                u.service,
                                u.port.as_ref().map_or("(first)".to_string(), |p| p.to_string()),
                                u.listen
                            ),
                            None => snap.unknown_service(&name),
                        }
                    }
                    None => "no upstream route\n".to_string(),
                };
                return Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorKind::NoRoute,
                    message,
                ));
            }
        },
        ListenerKind::Gateway => {
            let authority = req.authority.unwrap_or("");
            match snap.ingress.route(authority, req.target) {
                Some(r) => r.cluster.clone(),
                None if !snap.synced => {
                    return Err(Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        ErrorKind::NoRoute,
                        "the gateway has no routes yet: no configuration from the control \
                         plane\n"
                            .into(),
                    ));
                }
                None => {
                    return Err(Refusal::new(
                        StatusCode::NOT_FOUND,
                        ErrorKind::NoRoute,
                        gateway::no_route(req.authority, req.target),
                    ));
                }
            }
        }
        ListenerKind::Plain => {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::NoRoute,
                "no route\n".into(),
            ));
        }
    };
    drop(snap);
    let policy = &cluster.policy;
    let hash_key = policy.hash_header.as_deref().and_then(|h| req.headers.get(h));
    Ok(Routed {
        timeout: policy.timeout_for(req.method, req.target),
        hash_key,
        cluster,
        _admitted: None,
    })
}
