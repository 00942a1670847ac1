//! Dynamic configuration from the api server.
//!
//! At start, [`read_instance`] reads the sidecar's own Instance (labels for inbound policy,
//! template ports, template upstreams as fixed local ports), retrying until the api answers.
//! Then [`run`] follows Services and Endpoints in all namespaces with
//! `weft_client::watcher` (push, falling back to long-poll), and rebuilds the routes after each
//! batch of changes.
//!
//! Every object received is checked with `weft_api::kinds::normalize`, the code the api server
//! runs on writes: an invalid one is rejected (`weft_config_updates_total{result="rejected"}`)
//! and the last good version of that object stays in force. When the control plane is away the
//! watchers retry with backoff and the proxy keeps serving the last good configuration; when it
//! returns they resume from the last revision seen (or re-list), and the routes catch up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use weft_api::kinds::{self, KindInfo};
use weft_api::{AuthorizationPolicy, Endpoints, Instance, MeshConfig, Resource, Service};
use weft_client::watcher::{self, Event};
use weft_client::{Client, ClientError};

use crate::config::Config;
use crate::proxy::Proxy;
use crate::routes::Desired;
use crate::sidecar::{Source, UpstreamPortSpec};

/// Checks an object the way the api server does and decodes it.
pub(crate) fn validate<T: Resource + DeserializeOwned>(
    kind: &'static KindInfo,
    value: Value,
) -> Result<T, String> {
    let (info, normalized) = kinds::normalize(value).map_err(|e| e.message)?;
    if info != kind {
        return Err(format!("expected a {}, got a {}", kind.kind, info.kind));
    }
    kinds::from_value::<T>(normalized).map_err(|e| e.message)
}

fn key_of(v: &Value) -> Option<(String, String)> {
    let meta = v.get("metadata")?;
    let name = meta.get("name")?.as_str()?.to_string();
    let ns = meta.get("namespace").and_then(Value::as_str).unwrap_or(weft_api::DEFAULT_NAMESPACE);
    Some((ns.to_string(), name))
}

fn revision_of(v: &Value) -> u64 {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Prints control-plane trouble once per distinct message (and at most every 30 s for a
/// repeated one), not once per retry.
#[derive(Default)]
struct Reporter {
    last: Option<(String, Instant)>,
}

impl Reporter {
    fn error(&mut self, what: &str, revision: u64) {
        let repeat = self
            .last
            .as_ref()
            .is_some_and(|(m, at)| m == what && at.elapsed() < Duration::from_secs(30));
        if !repeat {
            eprintln!(
                "weft proxy: control plane: {what}; serving the last good configuration (revision {revision})"
            );
            self.last = Some((what.to_string(), Instant::now()));
        }
    }

    fn ok(&mut self) {
        if self.last.take().is_some() {
            eprintln!("weft proxy: control plane: receiving updates again");
        }
    }
}

/// Reads the Instance this sidecar serves into `config` (labels, template ports, upstream
/// ports), retrying with backoff until the api answers with a valid one. Does nothing outside
/// dynamic mode, and for a gateway (which serves no instance).
pub async fn read_instance(config: &mut Config) -> anyhow::Result<()> {
    let service = read_instance_only(config).await?;
    setup_mtls(config, service).await
}

/// The identity of this proxy and how to renew it, or a fixed one from files; sets
/// `config.mtls.mesh`. A dynamic sidecar or gateway asks the api server's CA (retrying with
/// backoff until it answers: nothing is served without an identity under mTLS).
async fn setup_mtls(config: &mut Config, service: Option<String>) -> anyhow::Result<()> {
    use crate::tls::{Enrolment, Material, Mesh, MtlsMode};
    let mtls = &config.mtls;
    if mtls.mode == MtlsMode::Off || config.sidecar.is_none() {
        return Ok(());
    }
    if let Some(files) = &mtls.files {
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
        };
        let material = Material { chain_pem: read(&files.cert)?, key_pem: read(&files.key)? };
        let ca = read(&files.ca)?;
        let mesh = Mesh::new(mtls.mode, &mtls.trust_domain, &material, &ca)
            .map_err(|e| anyhow::anyhow!("--mtls-cert/--mtls-key/--mtls-ca: {e}"))?;
        config.mtls.mesh = Some(Arc::new(mesh));
        return Ok(());
    }
    let Some(side) = config.sidecar.as_ref() else { return Ok(()) };
    let Source::Dynamic { server, instance, namespace, token, .. } = &side.source else {
        return Ok(());
    };
    let (identity, inst) = match (instance, side.is_gateway()) {
        (Some(name), _) => {
            let svc = service.unwrap_or_else(|| name.clone());
            (
                weft_ca::SpiffeId::new(&mtls.trust_domain, namespace, &svc),
                Some((namespace.clone(), name.clone())),
            )
        }
        (None, true) => {
            (weft_ca::SpiffeId::new(&mtls.trust_domain, "weft-system", "gateway"), None)
        }
        (None, false) => return Ok(()),
    };
    let client = Client::new(server, Some(token.clone()))?;
    let mut delay = Duration::from_millis(100);
    let mut reporter = Reporter::default();
    let (material, ca) = loop {
        let i = inst.as_ref().map(|(ns, n)| (ns.as_str(), n.as_str()));
        match crate::tls::obtain(&client, &identity, i).await {
            Ok(got) => break got,
            Err(e) => {
                reporter.error(&format!("getting a workload certificate for {identity}: {e}"), 0)
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    };
    reporter.ok();
    let mesh = Mesh::new(mtls.mode, &mtls.trust_domain, &material, &ca)
        .map_err(|e| anyhow::anyhow!("the workload certificate from {server}: {e}"))?;
    config.mtls.enrolment =
        Some(Enrolment { server: server.clone(), token: token.clone(), instance: inst, identity });
    config.mtls.mesh = Some(Arc::new(mesh));
    Ok(())
}

/// [`read_instance`] without mTLS; returns the service name of the instance's identity.
async fn read_instance_only(config: &mut Config) -> anyhow::Result<Option<String>> {
    let Some(side) = config.sidecar.as_mut() else { return Ok(None) };
    let Source::Dynamic {
        server,
        instance: Some(instance),
        namespace,
        token,
        labels,
        template_ports,
    } = &mut side.source
    else {
        return Ok(None);
    };
    let client = Client::new(server, Some(token.clone()))?;
    let mut delay = Duration::from_millis(100);
    let mut reporter = Reporter::default();
    let inst: Instance = loop {
        let problem = match client.get_value(&kinds::INSTANCE, Some(namespace), instance).await {
            Ok(v) => match validate::<Instance>(&kinds::INSTANCE, v) {
                Ok(i) => break i,
                Err(e) => format!("the api sent an invalid Instance {namespace}/{instance}: {e}"),
            },
            Err(e) if e.is_not_found() => format!("no Instance {namespace}/{instance} yet ({e})"),
            Err(e) => e.to_string(),
        };
        reporter.error(&problem, 0);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    };
    reporter.ok();
    let mut l = inst.spec.template.labels.clone();
    l.extend(inst.metadata.labels.clone());
    if !inst.spec.deployment.is_empty() {
        l.entry("deployment".into()).or_insert_with(|| inst.spec.deployment.clone());
    }
    *labels = l;
    *template_ports = inst.spec.template.ports.clone();
    for u in &inst.spec.template.upstreams {
        let listen = SocketAddr::from(([127, 0, 0, 1], u.local_port));
        // A flag for the same local port wins over the template, whatever its address: the
        // agent gives each instance its own loopback address (WEFT_IP) so that two instances
        // with the same localPort do not clash; binding 127.0.0.1 as well would.
        if side.upstream_ports.iter().any(|p| p.listen.port() == u.local_port) {
            continue;
        }
        side.upstream_ports.push(UpstreamPortSpec {
            service: u.service.clone(),
            namespace: u.namespace.clone(),
            port: u.port.clone(),
            listen,
        });
    }
    Ok(Some(inst.spec.identity_service(&inst.metadata.name).to_string()))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Service,
    Endpoints,
    AuthorizationPolicy,
    MeshConfig,
}

impl Kind {
    fn info(self) -> &'static KindInfo {
        match self {
            Kind::Service => &kinds::SERVICE,
            Kind::Endpoints => &kinds::ENDPOINTS,
            Kind::AuthorizationPolicy => &kinds::AUTHORIZATION_POLICY,
            Kind::MeshConfig => &kinds::MESH_CONFIG,
        }
    }
}

type Objects<T> = BTreeMap<(String, String), T>;

/// The last good state of every followed object.
struct State {
    desired: Desired,
    services: Objects<Service>,
    endpoints: Objects<Endpoints>,
    /// The own namespace's policies.
    policies: Objects<AuthorizationPolicy>,
    /// Every namespace's (the own one and the mesh-wide one matter).
    mesh_configs: Objects<MeshConfig>,
    listed: [bool; 4],
}

impl State {
    fn new(desired: Desired) -> State {
        State {
            desired,
            services: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            policies: BTreeMap::new(),
            mesh_configs: BTreeMap::new(),
            listed: [false; 4],
        }
    }

    fn synced(&self) -> bool {
        self.listed == [true; 4]
    }

    /// Applies one watcher item; returns whether the state changed.
    fn handle(
        &mut self,
        kind: Kind,
        item: Result<Event, ClientError>,
        proxy: &Proxy,
        reporter: &mut Reporter,
    ) -> bool {
        let event = match item {
            Ok(e) => e,
            Err(e) => {
                reporter.error(&e.to_string(), self.desired.revision);
                return false;
            }
        };
        reporter.ok();
        if matches!(event, Event::Restarted(_)) {
            self.listed[kind as usize] = true;
        }
        let rev = &mut self.desired.revision;
        match kind {
            Kind::Service => apply(&mut self.services, kind, event, rev, proxy),
            Kind::Endpoints => apply(&mut self.endpoints, kind, event, rev, proxy),
            Kind::AuthorizationPolicy => apply(&mut self.policies, kind, event, rev, proxy),
            Kind::MeshConfig => apply(&mut self.mesh_configs, kind, event, rev, proxy),
        }
    }

    /// The MeshConfig in force for `namespace`: its own, else the mesh-wide one.
    fn mesh_config(&self, namespace: &str) -> Option<&MeshConfig> {
        let name = kinds::mesh::MESH_CONFIG_NAME.to_string();
        self.mesh_configs.get(&(namespace.to_string(), name.clone())).or_else(|| {
            self.mesh_configs.get(&(kinds::mesh::MESH_WIDE_NAMESPACE.to_string(), name))
        })
    }

    fn desired(&mut self) -> &Desired {
        self.desired.synced = self.synced();
        self.desired.services = self.services.values().cloned().collect();
        self.desired.endpoints = self.endpoints.values().cloned().collect();
        self.desired.authz = self.policies.values().cloned().collect();
        let deny = self
            .mesh_config(&self.desired.namespace)
            .is_some_and(|m| m.spec.authorization.default == kinds::mesh::AuthzDefault::Deny);
        self.desired.authz_default_deny = deny;
        &self.desired
    }
}

/// Applies one event to the objects of one kind; returns whether they changed. An invalid
/// object keeps its previous (good) version.
fn apply<T: Resource + DeserializeOwned>(
    objects: &mut Objects<T>,
    kind: Kind,
    event: Event,
    revision: &mut u64,
    proxy: &Proxy,
) -> bool {
    match event {
        Event::Restarted(items) => {
            let old = std::mem::take(objects);
            for v in items {
                *revision = (*revision).max(revision_of(&v));
                let key = key_of(&v);
                match check::<T>(kind, v, proxy) {
                    Some(o) => {
                        objects.insert(key.unwrap_or_default(), o);
                    }
                    None => {
                        if let Some(prev) = key.and_then(|k| old.get(&k).map(|o| (k, o.clone()))) {
                            objects.insert(prev.0, prev.1);
                        }
                    }
                }
            }
            true
        }
        Event::Applied(v) => {
            *revision = (*revision).max(revision_of(&v));
            let Some(key) = key_of(&v) else {
                reject(kind, &v, "metadata.name: is required", proxy);
                return false;
            };
            match check::<T>(kind, v, proxy) {
                Some(o) => {
                    objects.insert(key, o);
                    true
                }
                None => false,
            }
        }
        Event::Deleted(v) => {
            *revision = (*revision).max(revision_of(&v));
            let Some(key) = key_of(&v) else {
                reject(kind, &v, "metadata.name: is required", proxy);
                return false;
            };
            objects.remove(&key).is_some()
        }
    }
}

fn check<T: Resource + DeserializeOwned>(kind: Kind, v: Value, proxy: &Proxy) -> Option<T> {
    let label = kinds::describe_raw(&v);
    match validate::<T>(kind.info(), v) {
        Ok(t) => Some(t),
        Err(e) => {
            proxy.metrics.config_update(false);
            eprintln!(
                "weft proxy: rejected an invalid {} from the control plane: {e}; keeping the last good version",
                label.unwrap_or_else(|| kind.info().kind.to_string())
            );
            None
        }
    }
}

fn reject(kind: Kind, v: &Value, why: &str, proxy: &Proxy) {
    proxy.metrics.config_update(false);
    let label = kinds::describe_raw(v).unwrap_or_else(|| kind.info().kind.to_string());
    eprintln!("weft proxy: rejected an invalid {label} from the control plane: {why}");
}

/// Applies the namespace's MeshConfig `mtls` to the inbound ports (new connections). The
/// `--mtls` flag is the mode when no MeshConfig exists; with `--mtls off` there is no mesh and
/// nothing to switch.
fn apply_mesh_mode(proxy: &Proxy, state: &State) {
    use crate::tls::MtlsMode;
    let Some(mesh) = proxy.config.mtls.mesh.as_ref() else { return };
    let mode = match state.mesh_config(&state.desired.namespace).map(|m| m.spec.mtls) {
        Some(kinds::mesh::MeshMtls::Strict) => MtlsMode::Strict,
        Some(kinds::mesh::MeshMtls::Permissive) => MtlsMode::Permissive,
        None => proxy.config.mtls.mode,
    };
    if mesh.set_mode(mode) {
        let name = if mode == MtlsMode::Strict { "strict" } else { "permissive" };
        eprintln!("weft proxy: mTLS mode of inbound ports is now {name}");
    }
}

/// Asks the api server to start an instance of a service that has none (requests for it are
/// held): `POST /api/v1/namespaces/{ns}/services/{name}/activate`.
struct ApiActivator {
    client: Client,
}

impl crate::hold::Activator for ApiActivator {
    fn activate(&self, namespace: &str, service: &str) {
        let client = self.client.clone();
        let path = format!("/api/v1/namespaces/{namespace}/services/{service}/activate");
        let what = format!("{namespace}/{service}");
        tokio::spawn(async move {
            if let Err(e) = client.call(http::Method::POST, &path, None).await {
                eprintln!("weft proxy: asking the control plane to start service {what}: {e}");
            }
        });
    }
}

/// Follows the api server and applies every change to `proxy`'s routes, forever (run it as a
/// task; it ends only if the proxy is not a dynamic sidecar). Call [`read_instance`] first.
pub async fn run(proxy: Arc<Proxy>) {
    let Some(side) = &proxy.config.sidecar else { return };
    let Source::Dynamic { server, token, namespace, labels, template_ports, .. } = &side.source
    else {
        return;
    };
    let client = match Client::new(server, Some(token.clone())) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weft proxy: control plane: {e}");
            return;
        }
    };
    proxy.set_activator(Arc::new(ApiActivator { client: client.clone() }));
    // Renewal lives as long as the control-plane task.
    let _renewal = match (&proxy.config.mtls.mesh, &proxy.config.mtls.enrolment) {
        (Some(mesh), Some(enrol)) => {
            proxy.metrics.set_cert_expiry(mesh.not_after());
            Some(AbortOnDrop(tokio::spawn(crate::tls::renew_forever(
                mesh.clone(),
                enrol.clone(),
                proxy.metrics.clone(),
            ))))
        }
        _ => None,
    };
    let follow = watcher::Config { mode: watcher::Mode::Auto, ..watcher::Config::default() };
    let services = watcher::watcher(client.clone(), &kinds::SERVICE, follow.clone())
        .map(|e| (Kind::Service, e));
    let endpoints = watcher::watcher(client.clone(), &kinds::ENDPOINTS, follow.clone())
        .map(|e| (Kind::Endpoints, e));
    // Policies of the own namespace only (a policy targets a service of its namespace);
    // MeshConfigs of every namespace, for the mesh-wide one.
    let own = watcher::Config { namespace: Some(namespace.clone()), ..follow.clone() };
    let policies = watcher::watcher(client.clone(), &kinds::AUTHORIZATION_POLICY, own)
        .map(|e| (Kind::AuthorizationPolicy, e));
    let mesh_configs =
        watcher::watcher(client, &kinds::MESH_CONFIG, follow).map(|e| (Kind::MeshConfig, e));
    let mut events = std::pin::pin!(futures::stream::select(
        futures::stream::select(services, endpoints),
        futures::stream::select(policies, mesh_configs),
    ));
    let mut state = State::new(Desired {
        namespace: namespace.clone(),
        labels: labels.clone(),
        template_ports: template_ports.clone(),
        ..Desired::default()
    });
    let mut reporter = Reporter::default();
    let mut announced = false;
    while let Some((kind, item)) = events.next().await {
        let mut changed = state.handle(kind, item, &proxy, &mut reporter);
        // Everything that already arrived goes into the same rebuild.
        while let Some(Some((kind, item))) = events.next().now_or_never() {
            changed |= state.handle(kind, item, &proxy, &mut reporter);
        }
        if changed && state.synced() {
            if !side.inbound.is_empty() {
                apply_mesh_mode(&proxy, &state);
            }
            proxy.apply(state.desired());
            if !announced {
                announced = true;
                let routes = match side.gateway {
                    Some(_) => {
                        let n = state.services.values().filter(|s| s.spec.ingress.is_some());
                        format!(", {} with ingress", n.count())
                    }
                    None => String::new(),
                };
                eprintln!(
                    "weft proxy: configured from {server} (revision {}, {} services{routes})",
                    state.desired.revision,
                    state.services.len()
                );
            }
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
