//! One task per instance: the life of an Instance on this node.
//!
//! ```text
//!   Pending ──(sidecar launched)──▶ Starting ──(ready)──▶ Running
//!      ▲  command not found, port        │ crash / liveness   │
//!      │  in use: back off, retry        ▼                    ▼
//!      └──────────────────────────── Starting (CrashLoopBackOff, back off, restart app)
//!   any ──(spec.terminating)──▶ Terminating: drain delay, SIGTERM, grace, SIGKILL,
//!                               stop sidecar, delete the Instance
//!   any ──(object deleted)────▶ the same without the drain delay
//!   exit 0 ──▶ Succeeded (sidecar stopped; nothing restarts)
//!   requests > allocatable ──▶ Failed
//! ```
//!
//! Order of a start: allocate address and ports, check the template's fixed upstream ports,
//! find the program, start the sidecar and wait for its `/ready`, then start the app and its
//! probes. The sidecar keeps running across app restarts (its ports, and the app's
//! `HTTP_PROXY`, stay the same); it stops when the app is gone for good.
//!
//! The supervisor reacts to [`Command`]s from the agent at every wait: a terminating flag, a
//! deletion, or the agent shutting down (stop everything, or leave everything running for the
//! next agent to adopt).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use weft_api::Instance;
use weft_api::kinds::instance::{ExitInfo, InstanceStatus, Phase};
use weft_api::kinds::template::{PortRef, Probe, ResourceList, Template};
use weft_client::Client;

use crate::backoff::CrashLoop;
use crate::cgroups::{Cgroups, Group};
use crate::env::{self, PortAlloc, Wiring};
use crate::logs;
use crate::metrics::{InstanceStats, Registry};
use crate::node::now_rfc3339;
use crate::options::AgentOptions;
use crate::ports::{self, Allocator};
use crate::probe::{self, Check};
use crate::sidecar;
use crate::spawn::{self, Exit, Launch, Proc};
use crate::state::{self, Saved, SavedProc};
use crate::status::{self, StatusCell};

/// How long a sidecar has to answer `/ready` after it starts.
const SIDECAR_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a sidecar has to exit after SIGTERM (the app is gone by then: nothing is left to
/// drain but idle connections).
const SIDECAR_GRACE: Duration = Duration::from_secs(5);
/// Attempts at a sidecar start that fails with "address in use" (the port-allocation race).
const SIDECAR_PORT_ATTEMPTS: u32 = 3;

/// What the agent shares with every supervisor.
#[derive(Debug)]
pub(crate) struct Shared {
    pub client: Client,
    pub opts: AgentOptions,
    pub alloc: Mutex<Allocator>,
    pub cgroups: Cgroups,
    pub allocatable: ResourceList,
    pub registry: Arc<Registry>,
    pub inherited_env: Vec<(String, String)>,
    pub instances_dir: PathBuf,
    pub logs_dir: PathBuf,
}

impl Shared {
    fn alloc(&self) -> std::sync::MutexGuard<'_, Allocator> {
        self.alloc.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the agent tells a supervisor.
#[derive(Clone, Debug)]
pub(crate) enum Command {
    /// The latest version of the Instance (it may now be terminating).
    Run(Arc<Instance>),
    /// The Instance object is gone (or no longer bound here).
    Gone,
    /// The agent is stopping: stop the instance (`stop`) or leave it running.
    Shutdown { stop: bool },
}

/// Why a supervisor stops supervising.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// `spec.terminating`: drain, stop, delete the object.
    Graceful,
    /// Deleted outright: stop without the drain delay.
    Gone,
    /// The agent stops with its instances.
    Shutdown,
    /// The agent stops and leaves the instance running.
    Detach,
}

fn stop_of(c: &Command, node: &str) -> Option<Stop> {
    match c {
        Command::Run(i) if i.spec.node.as_deref() != Some(node) => Some(Stop::Gone),
        Command::Run(i) if i.spec.terminating => Some(Stop::Graceful),
        Command::Run(_) => None,
        Command::Gone => Some(Stop::Gone),
        Command::Shutdown { stop: true } => Some(Stop::Shutdown),
        Command::Shutdown { stop: false } => Some(Stop::Detach),
    }
}

/// Runs `fut` unless a stop arrives first.
async fn until_stop<F: Future>(
    rx: &mut watch::Receiver<Command>,
    node: &str,
    fut: F,
) -> Result<F::Output, Stop> {
    tokio::pin!(fut);
    loop {
        if let Some(s) = stop_of(&rx.borrow_and_update(), node) {
            return Err(s);
        }
        tokio::select! {
            biased;
            v = &mut fut => return Ok(v),
            r = rx.changed() => if r.is_err() { return Err(Stop::Detach) },
        }
    }
}

async fn exited(p: &mut Option<Proc>) -> Exit {
    match p {
        Some(p) => p.exited().await,
        None => std::future::pending().await,
    }
}

async fn probe_event(rx: &mut Option<mpsc::Receiver<probe::Event>>) -> probe::Event {
    if let Some(r) = rx
        && let Some(ev) = r.recv().await
    {
        return ev;
    }
    std::future::pending().await
}

/// Aborts a task when dropped (probe tasks, the status writer).
#[derive(Debug)]
struct Owned(JoinHandle<()>);

impl Drop for Owned {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts supervising `inst`, adopting what `saved` remembers. Returns the command channel
/// and the supervisor's future (for the agent to spawn).
pub(crate) fn supervise(
    sh: Arc<Shared>,
    inst: Arc<Instance>,
    saved: Option<Saved>,
) -> (watch::Sender<Command>, impl Future<Output = ()> + Send + 'static) {
    let (tx, rx) = watch::channel(Command::Run(inst.clone()));
    let sup = Supervisor::new(sh, inst, saved);
    (tx, sup.run(rx))
}

#[derive(Debug)]
struct Supervisor {
    sh: Arc<Shared>,
    inst: Arc<Instance>,
    ns: String,
    name: String,
    key: String,
    dir: PathBuf,
    log_dir: PathBuf,
    workdir: PathBuf,
    status: Arc<StatusCell>,
    _status_writer: Owned,
    stats: Arc<InstanceStats>,
    ip: Option<Ipv4Addr>,
    ports: Vec<PortAlloc>,
    outbound: u16,
    admin: u16,
    app: Option<Proc>,
    sidecar: Option<Proc>,
    /// The sidecar's api token, bound to this instance; minted at its first start and reused
    /// for restarts. The server revokes it when the Instance is deleted.
    sidecar_token: Option<String>,
    group: Option<Group>,
    /// Why the instance runs without a cgroup although the node has them (said once).
    cgroup_problem: Option<String>,
    oom_before: u64,
    restarts: u32,
    crash: CrashLoop,
    next_start: Option<Instant>,
    probes: Option<Owned>,
    probe_rx: Option<mpsc::Receiver<probe::Event>>,
    app_ready: bool,
    finished: bool,
}

impl Supervisor {
    fn new(sh: Arc<Shared>, inst: Arc<Instance>, saved: Option<Saved>) -> Supervisor {
        let ns = inst.metadata.namespace_or_default().to_string();
        let name = inst.metadata.name.clone();
        let key = state::key(&ns, &name);
        let dir = sh.instances_dir.join(&key);
        let log_dir = sh.logs_dir.join(&key);
        let workdir = match &inst.spec.template.workdir {
            Some(w) => PathBuf::from(w),
            None => dir.join("work"),
        };
        let mut initial: InstanceStatus = inst.status.clone().unwrap_or_default();
        initial.usage = None;
        let (status, writer) =
            status::start(sh.client.clone(), ns.clone(), name.clone(), initial.clone(), false);
        let deployment = if inst.spec.deployment.is_empty() {
            name.clone()
        } else {
            inst.spec.deployment.clone()
        };
        let stats = Arc::new(InstanceStats {
            namespace: ns.clone(),
            name: name.clone(),
            deployment,
            restarts: AtomicU32::new(0),
            procs: Mutex::default(),
            status: status.clone(),
            log_dir: log_dir.clone(),
            grace: inst.spec.template.termination_grace_period.as_std(),
            last_cpu: Mutex::default(),
        });
        sh.registry.insert(key.clone(), stats.clone());
        let mut s = Supervisor {
            sh,
            inst,
            ns,
            name,
            key,
            dir,
            log_dir,
            workdir,
            status,
            _status_writer: Owned(writer),
            stats,
            ip: None,
            ports: Vec::new(),
            outbound: 0,
            admin: 0,
            app: None,
            sidecar: None,
            sidecar_token: None,
            group: None,
            cgroup_problem: None,
            oom_before: 0,
            restarts: initial.restarts,
            crash: CrashLoop::default(),
            next_start: None,
            probes: None,
            probe_rx: None,
            app_ready: false,
            finished: false,
        };
        if let Some(saved) = saved {
            s.adopt(saved);
        }
        s.stats.restarts.store(s.restarts, Ordering::Relaxed);
        s
    }

    /// Takes over what an earlier agent left: addresses, ports, cgroup and live processes.
    fn adopt(&mut self, saved: Saved) {
        self.sh.alloc().reserve(saved.ip, saved.all_ports());
        self.ip = saved.ip;
        self.ports = saved.ports.clone();
        self.outbound = saved.outbound;
        self.admin = saved.admin;
        self.group = saved.cgroup.clone();
        self.restarts = self.restarts.max(saved.restarts);
        self.crash.streak = saved.streak;
        self.finished = saved.finished;
        let take = |p: &Option<SavedProc>| {
            p.as_ref()
                .filter(|p| p.alive())
                .and_then(|p| spawn::adopt(p.pid, p.start_ticks, p.started()))
        };
        self.app = take(&saved.app);
        self.sidecar = take(&saved.sidecar);
        if let Some(g) = &self.group {
            self.oom_before = g.oom_kills().unwrap_or(0);
        }
        tracing::info!(
            instance = %self.name, namespace = %self.ns,
            app = ?self.app.as_ref().map(|p| p.pid), sidecar = ?self.sidecar.as_ref().map(|p| p.pid),
            "adopted an instance left by an earlier agent"
        );
        if self.app.is_some() {
            self.start_probes();
        }
        self.publish_procs();
    }

    fn template(&self) -> &Template {
        &self.inst.spec.template
    }

    fn node(&self) -> String {
        self.sh.opts.name.clone()
    }

    fn grace(&self) -> Duration {
        self.template().termination_grace_period.as_std()
    }

    fn all_ports(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self.ports.iter().flat_map(|p| [p.app, p.public]).collect();
        v.extend([self.outbound, self.admin].into_iter().filter(|p| *p != 0));
        v
    }

    fn save(&self) {
        let of =
            |p: &Option<Proc>| p.as_ref().map(|p| SavedProc::of(p.pid, p.start_ticks, p.started));
        let s = Saved {
            namespace: self.ns.clone(),
            name: self.name.clone(),
            uid: self.inst.metadata.uid.clone().unwrap_or_default(),
            ip: self.ip,
            ports: self.ports.clone(),
            outbound: self.outbound,
            admin: self.admin,
            app: of(&self.app),
            sidecar: of(&self.sidecar),
            restarts: self.restarts,
            streak: self.crash.streak,
            cgroup: self.group.clone(),
            finished: self.finished,
            grace_ms: self.grace().as_millis() as u64,
        };
        if let Err(e) = state::save(&self.dir, &s) {
            // Without it a restarted agent cannot adopt this instance (it would clean it up):
            // worth a warning, not worth stopping the instance for.
            tracing::warn!(instance = %self.name, namespace = %self.ns, "cannot save instance state in {}: {e}", self.dir.display());
        }
    }

    fn publish_procs(&self) {
        let app = self.app.as_ref().map(|p| p.pid);
        let sidecar = self.sidecar.as_ref().map(|p| p.pid);
        let group = self.group.clone();
        self.stats.set_procs(|p| {
            p.app = app;
            p.sidecar = sidecar;
            p.group = group;
        });
    }

    /// Writes what is known about addresses and processes into the status.
    fn status_wiring(&self, s: &mut InstanceStatus) {
        s.address = self.sh.opts.address.to_string();
        s.ports = self.ports.iter().map(|p| (p.name.clone(), p.public)).collect();
        s.sidecar_admin = (self.admin != 0).then(|| format!("127.0.0.1:{}", self.admin));
        s.pid = self.app.as_ref().map(|p| p.pid);
        s.start_time =
            self.app.as_ref().map(|p| humantime::format_rfc3339_millis(p.started).to_string());
        s.restarts = self.restarts;
    }

    fn set(&self, phase: Phase, reason: &str, message: String) {
        let ready = self.app_ready && self.sidecar.is_some() && self.app.is_some();
        self.status.update(|s| {
            self.status_wiring(s);
            s.phase = phase;
            s.ready = ready && matches!(phase, Phase::Running);
            s.reason = reason.to_string();
            s.message = message;
        });
    }

    /// Publishes readiness (and the Starting → Running step it implies).
    fn publish_ready(&self, message: String) {
        let ready = self.app_ready && self.sidecar.is_some() && self.app.is_some();
        self.status.update(|s| {
            self.status_wiring(s);
            if ready {
                s.phase = Phase::Running;
                s.reason.clear();
                s.message.clear();
            } else {
                s.message = message;
            }
            s.ready = ready;
        });
    }

    // ---- the life -----------------------------------------------------------------------

    async fn run(mut self, mut rx: watch::Receiver<Command>) {
        let stop = self.live(&mut rx).await;
        self.finish(stop, &mut rx).await;
    }

    /// Runs the instance until it must stop.
    async fn live(&mut self, rx: &mut watch::Receiver<Command>) -> Stop {
        let node = self.node();
        if self.finished {
            return self.idle(rx).await;
        }
        if let Some(why) = self.unrunnable() {
            self.finished = true;
            self.set(Phase::Failed, "InsufficientResources", why);
            self.save();
            return self.idle(rx).await;
        }
        loop {
            if let Some(s) = stop_of(&rx.borrow_and_update(), &node) {
                return s;
            }
            if let Some(t) = self.next_start {
                if let Err(s) = until_stop(rx, &node, tokio::time::sleep_until(t)).await {
                    return s;
                }
                self.next_start = None;
            }
            if let Err(why) = self.allocate() {
                self.back_off(Duration::ZERO);
                self.set(Phase::Pending, "PortsUnavailable", self.retry_note(why));
                continue;
            }
            if self.sidecar.is_none()
                && self.app.is_none()
                && let Err(why) = self.check_upstreams()
            {
                self.back_off(Duration::ZERO);
                self.set(Phase::Pending, "PortInUse", self.retry_note(why));
                continue;
            }
            let mut program = None;
            if self.app.is_none() {
                let t = self.template();
                let path = self.path_env();
                match spawn::resolve(&t.command[0], &path, &self.workdir) {
                    Ok(p) => program = Some(p),
                    Err(e) => {
                        self.back_off(Duration::ZERO);
                        self.set(Phase::Pending, "CommandNotFound", self.retry_note(e.0));
                        continue;
                    }
                }
            }
            if self.sidecar.is_none() {
                match self.start_sidecar(rx).await {
                    Ok(()) => {}
                    Err(Err(s)) => return s,
                    Err(Ok(why)) => {
                        self.back_off(Duration::ZERO);
                        self.set(Phase::Starting, "SidecarFailed", self.retry_note(why));
                        continue;
                    }
                }
            }
            if let Some(program) = program
                && let Err((reason, why)) = self.start_app(program)
            {
                self.back_off(Duration::ZERO);
                self.set(Phase::Pending, reason, self.retry_note(why));
                continue;
            }
            tokio::select! {
                biased;
                r = rx.changed() => {
                    if r.is_err() {
                        return Stop::Detach;
                    }
                }
                e = exited(&mut self.app) => {
                    if self.on_app_exit(e, None) {
                        self.stop_sidecar().await;
                        self.finished = true;
                        self.save();
                        return self.idle(rx).await;
                    }
                }
                e = exited(&mut self.sidecar) => {
                    let last = logs::last_line(&self.log_dir.join(logs::SIDECAR_LOG)).unwrap_or_default();
                    let ran = self.sidecar.take().and_then(|p| p.started.elapsed().ok()).unwrap_or_default();
                    self.publish_procs();
                    // A sidecar that keeps dying backs off like an app (sharing its count).
                    self.back_off(ran);
                    let sep = if last.is_empty() { "" } else { ": " };
                    let why = self.retry_note(format!("the sidecar {}{sep}{last}", e.describe()));
                    tracing::warn!(instance = %self.name, namespace = %self.ns, "{why}");
                    let phase = self.status.get().phase;
                    self.set(phase, "SidecarFailed", why);
                }
                ev = probe_event(&mut self.probe_rx) => match ev {
                    probe::Event::Ready(ready, message) => {
                        self.app_ready = ready;
                        self.publish_ready(message);
                    }
                    probe::Event::LivenessFailed(message) => {
                        tracing::info!(instance = %self.name, namespace = %self.ns, "{message}; restarting the app");
                        self.probes = None;
                        self.probe_rx = None;
                        self.app_ready = false;
                        self.publish_ready(String::new());
                        let grace = self.grace();
                        let exit = match self.app.as_mut() {
                            Some(app) => app.stop(grace).await,
                            None => Exit::default(),
                        };
                        self.on_app_exit(exit, Some(("LivenessFailed", message)));
                    }
                },
            }
        }
    }

    /// After the app is gone for good: wait for the object to be stopped or deleted.
    async fn idle(&mut self, rx: &mut watch::Receiver<Command>) -> Stop {
        let node = self.node();
        until_stop(rx, &node, std::future::pending::<()>()).await.err().unwrap_or(Stop::Detach)
    }

    /// The template asks for more than the node has at all (DESIGN.md: Failed).
    fn unrunnable(&self) -> Option<String> {
        let req = &self.template().resources.requests;
        let a = &self.sh.allocatable;
        let node = &self.sh.opts.name;
        if let (Some(r), Some(have)) = (&req.memory, &a.memory)
            && r > have
        {
            return Some(format!(
                "it requests {r} of memory but node {node} has {have} allocatable in all"
            ));
        }
        if let (Some(r), Some(have)) = (&req.cpu, &a.cpu)
            && r > have
        {
            return Some(format!(
                "it requests {r} cpu but node {node} has {have} allocatable in all"
            ));
        }
        None
    }

    fn path_env(&self) -> String {
        // The template may set PATH for its program; else the agent's.
        self.template()
            .env
            .get("PATH")
            .cloned()
            .or_else(|| {
                self.sh.inherited_env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| env::DEFAULT_PATH.to_string())
    }

    /// Schedules the next attempt after a failure that lasted `ran`.
    fn back_off(&mut self, ran: Duration) {
        let wait = self.crash.failed(&self.sh.opts.backoff, ran);
        self.next_start = Some(Instant::now() + wait);
        self.save();
    }

    /// "…; retrying in 20s" for the wait just scheduled.
    fn retry_note(&self, why: String) -> String {
        let wait = self
            .next_start
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or_default();
        if wait < Duration::from_millis(500) {
            format!("{why}; retrying now")
        } else {
            format!(
                "{why}; retrying in {}",
                humantime::format_duration(Duration::from_secs(wait.as_secs_f64().round() as u64))
            )
        }
    }

    fn allocate(&mut self) -> Result<(), String> {
        let node_addr = self.sh.opts.address;
        let want_ports = self.ports.is_empty() && !self.template().ports.is_empty();
        let template_ports = self.template().ports.clone();
        let mut a = self.sh.alloc();
        if self.ip.is_none() {
            self.ip = Some(a.ip().ok_or("no free instance address left in 127.1.0.0/16")?);
        }
        let e =
            |what: &str, err: std::io::Error| format!("cannot allocate a port for {what}: {err}");
        if want_ports {
            for p in &template_ports {
                let app =
                    a.port(IpAddr::V4(Ipv4Addr::UNSPECIFIED)).map_err(|err| e(&p.name, err))?;
                let public = a.port(node_addr).map_err(|err| e(&p.name, err))?;
                self.ports.push(PortAlloc {
                    name: p.name.clone(),
                    protocol: p.protocol,
                    app,
                    public,
                });
            }
        }
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        if self.outbound == 0 {
            self.outbound = a.port(lo).map_err(|err| e("the sidecar's outbound listener", err))?;
        }
        if self.admin == 0 {
            self.admin = a.port(lo).map_err(|err| e("the sidecar's admin listener", err))?;
        }
        Ok(())
    }

    /// New public ports (and, while the app is not running, new outbound and admin ports:
    /// a running app has them in its environment) after a sidecar lost the port race.
    fn reallocate_sidecar_ports(&mut self) {
        let node_addr = self.sh.opts.address;
        let app_running = self.app.is_some();
        let mut a = self.sh.alloc();
        let mut old = Vec::new();
        for p in &mut self.ports {
            if let Ok(n) = a.port(node_addr) {
                old.push(std::mem::replace(&mut p.public, n));
            }
        }
        if !app_running {
            let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
            for slot in [&mut self.outbound, &mut self.admin] {
                if let Ok(n) = a.port(lo) {
                    old.push(std::mem::replace(slot, n));
                }
            }
        }
        a.release(None, old);
    }

    /// The template's fixed upstream ports must be free on the instance's address.
    fn check_upstreams(&self) -> Result<(), String> {
        let Some(ip) = self.ip else { return Ok(()) };
        for (i, u) in self.template().upstreams.iter().enumerate() {
            if let Err(e) = ports::check_free(SocketAddr::new(IpAddr::V4(ip), u.local_port)) {
                return Err(format!(
                    "upstreams[{i}] ({}): localPort {} on {ip} is taken ({e}); free it or pick another localPort",
                    u.service, u.local_port
                ));
            }
        }
        Ok(())
    }

    /// Starts the sidecar and waits for its `/ready`. `Err(Ok(why))`: it failed;
    /// `Err(Err(stop))`: a stop came first (the sidecar, if started, is kept for `finish`).
    async fn start_sidecar(
        &mut self,
        rx: &mut watch::Receiver<Command>,
    ) -> Result<(), Result<String, Stop>> {
        let node = self.node();
        let log_path = self.log_dir.join(logs::SIDECAR_LOG);
        let bin = self.sh.opts.weft_bin.clone();
        let token = match self.sidecar_token.clone() {
            Some(t) => t,
            None => {
                let mint = self.sh.client.create_instance_proxy_token(&node, &self.ns, &self.name);
                match until_stop(rx, &node, mint).await {
                    Err(stop) => return Err(Err(stop)),
                    Ok(Err(e)) => {
                        return Err(Ok(format!("cannot get the sidecar's api token: {e}")));
                    }
                    Ok(Ok(created)) => {
                        self.sidecar_token = Some(created.token.clone());
                        created.token
                    }
                }
            }
        };
        for attempt in 1..=SIDECAR_PORT_ATTEMPTS {
            let ip = self.ip.unwrap_or(Ipv4Addr::LOCALHOST);
            let args = sidecar::args(&sidecar::Plan {
                server: &self.sh.opts.server,
                namespace: &self.ns,
                instance: &self.name,
                node_address: self.sh.opts.address,
                ports: &self.ports,
                outbound: self.outbound,
                admin: self.admin,
                ip,
                upstreams: &self.template().upstreams,
                obs: &self.sh.opts.sidecar_obs,
            });
            let mut argv = vec![bin.display().to_string()];
            argv.extend(args);
            let mut env = self.sh.inherited_env.clone();
            env.push(("WEFT_TOKEN".into(), token.clone()));
            // An api server on https: the sidecar trusts what the agent trusts.
            if let Some(ca) = weft_client::tls::default_ca_file() {
                env.push((weft_client::tls::CA_FILE_ENV.into(), ca.display().to_string()));
            }
            let mut log = logs::open_append(&log_path).map_err(|e| {
                Ok(format!("cannot open the sidecar log {}: {e}", log_path.display()))
            })?;
            logs::note(
                &mut log,
                &format!(
                    "--- weft-agent {}: starting the sidecar: {}",
                    now_rfc3339(),
                    argv.join(" ")
                ),
            );
            std::fs::create_dir_all(&self.workdir).map_err(|e| {
                Ok(format!("cannot create the working directory {}: {e}", self.workdir.display()))
            })?;
            let proc = spawn::launch(&Launch {
                argv: &argv,
                env: &env,
                workdir: &self.workdir,
                log: &log,
                cgroup_procs: &[],
            })
            .map_err(|e| Ok(format!("cannot start the sidecar ({}): {e}", bin.display())))?;
            self.sidecar = Some(proc);
            self.publish_procs();
            self.save();
            if self.app.is_none() {
                self.set(Phase::Starting, "", String::new());
            }
            let admin = SocketAddr::from(([127, 0, 0, 1], self.admin));
            let Some(side) = self.sidecar.as_mut() else { unreachable!("just started") };
            match until_stop(rx, &node, wait_ready(side, admin)).await {
                Err(stop) => return Err(Err(stop)),
                Ok(SidecarStart::Ready) => {
                    if self.app.is_some() {
                        self.publish_ready(String::new());
                    }
                    return Ok(());
                }
                Ok(SidecarStart::Exited(exit)) => {
                    self.sidecar = None;
                    self.publish_procs();
                    self.save();
                    let last = logs::last_line(&log_path).unwrap_or_default();
                    if last.to_ascii_lowercase().contains("in use")
                        && attempt < SIDECAR_PORT_ATTEMPTS
                    {
                        tracing::info!(instance = %self.name, "sidecar lost a port race ({last}); new ports");
                        self.reallocate_sidecar_ports();
                        continue;
                    }
                    let sep = if last.is_empty() { "" } else { ": " };
                    return Err(Ok(format!("the sidecar {}{sep}{last}", exit.describe())));
                }
                Ok(SidecarStart::TimedOut) => {
                    if let Some(mut p) = self.sidecar.take() {
                        p.stop(Duration::from_secs(1)).await;
                    }
                    self.publish_procs();
                    self.save();
                    let last = logs::last_line(&log_path).unwrap_or_default();
                    return Err(Ok(format!(
                        "the sidecar did not answer /ready on {admin} within {SIDECAR_READY_TIMEOUT:?} (last log line: {last:?})"
                    )));
                }
            }
        }
        Err(Ok("the sidecar could not get free ports".into()))
    }

    /// Starts the app (the sidecar is ready). `Err((reason, message))` when it cannot.
    fn start_app(&mut self, program: PathBuf) -> Result<(), (&'static str, String)> {
        let t = self.template().clone();
        let mut argv = vec![program.display().to_string()];
        argv.extend(t.command[1..].iter().cloned());
        let env = self.app_env(&t);
        std::fs::create_dir_all(&self.workdir).map_err(|e| {
            (
                "StartFailed",
                format!("cannot create the working directory {}: {e}", self.workdir.display()),
            )
        })?;
        if self.group.is_none() && self.sh.cgroups.enabled() && self.cgroup_problem.is_none() {
            match self.sh.cgroups.create(&self.key, &t.resources) {
                Ok(g) => self.group = g,
                Err(e) => {
                    tracing::warn!(instance = %self.name, namespace = %self.ns, "running without a cgroup: {e}");
                    self.cgroup_problem = Some(e.to_string());
                }
            }
        }
        self.oom_before = self.group.as_ref().and_then(Group::oom_kills).unwrap_or(0);
        let log_path = self.log_dir.join(logs::APP_LOG);
        let mut log = logs::open_append(&log_path).map_err(|e| {
            ("StartFailed", format!("cannot open the app log {}: {e}", log_path.display()))
        })?;
        let run = if self.restarts == 0 {
            String::new()
        } else {
            format!(" (restart {})", self.restarts)
        };
        logs::note(
            &mut log,
            &format!("--- weft-agent {}: starting {}{run}", now_rfc3339(), argv.join(" ")),
        );
        let procs = self.group.as_ref().map(Group::procs_files).unwrap_or_default();
        let proc = spawn::launch(&Launch {
            argv: &argv,
            env: &env,
            workdir: &self.workdir,
            log: &log,
            cgroup_procs: &procs,
        })
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                ("CommandNotFound", format!("cannot start {}: {e}", argv[0]))
            }
            _ => ("StartFailed", format!("cannot start {}: {e}", argv[0])),
        })?;
        self.app = Some(proc);
        self.app_ready = false;
        self.publish_procs();
        self.save();
        if self.status.get().reason == "CrashLoopBackOff" {
            // Keep saying why it restarted until it is ready again.
            self.status.update(|s| {
                self.status_wiring(s);
                s.phase = Phase::Starting;
                s.ready = false;
            });
        } else {
            self.set(Phase::Starting, "", String::new());
        }
        self.start_probes_with(&env);
        Ok(())
    }

    fn start_probes(&mut self) {
        let t = self.template().clone();
        let env = self.app_env(&t);
        self.start_probes_with(&env);
    }

    /// The app's environment; probes (exec) get the same one.
    fn app_env(&self, t: &Template) -> Vec<(String, String)> {
        let deployment = self.stats.deployment.clone();
        let node = self.node();
        env::app_env(
            &Wiring {
                namespace: &self.ns,
                instance: &self.name,
                service: &deployment,
                node: &node,
                ip: self.ip.unwrap_or(Ipv4Addr::LOCALHOST),
                ports: &self.ports,
                outbound: self.outbound,
                admin: self.admin,
                upstreams: &t.upstreams,
            },
            &self.sh.inherited_env,
            &t.env,
        )
    }

    fn start_probes_with(&mut self, env: &[(String, String)]) {
        let t = self.template();
        let port_addr = |r: Option<&PortRef>| -> Option<SocketAddr> {
            let name = match r {
                None => &t.ports.first()?.name,
                Some(r) => &t.port(r)?.name,
            };
            let a = self.ports.iter().find(|p| &p.name == name)?;
            Some(SocketAddr::from(([127, 0, 0, 1], a.app)))
        };
        let check = |p: &Probe| -> Option<Check> {
            if let Some(h) = &p.http {
                return Some(Check::Http {
                    addr: port_addr(h.port.as_ref())?,
                    path: h.path.clone(),
                });
            }
            if let Some(c) = &p.tcp {
                return Some(Check::Tcp { addr: port_addr(c.port.as_ref())? });
            }
            let e = p.exec.as_ref()?;
            Some(Check::Exec {
                argv: e.command.clone(),
                env: env.to_vec(),
                workdir: self.workdir.clone(),
            })
        };
        let readiness = t.readiness.as_ref().and_then(|p| Some((p.clone(), check(p)?)));
        let plan = probe::Plan {
            default_port: if readiness.is_none() { port_addr(None) } else { None },
            readiness,
            liveness: t.liveness.as_ref().and_then(|p| Some((p.clone(), check(p)?))),
        };
        let (tx, rx) = mpsc::channel(16);
        self.probes = Some(Owned(tokio::spawn(probe::run(plan, tx))));
        self.probe_rx = Some(rx);
    }

    /// Records how the app ended. Returns true when it is gone for good (exit 0: Succeeded);
    /// otherwise schedules the restart.
    fn on_app_exit(&mut self, exit: Exit, forced: Option<(&'static str, String)>) -> bool {
        let Some(app) = self.app.take() else { return false };
        self.probes = None;
        self.probe_rx = None;
        self.app_ready = false;
        let ran = app.started.elapsed().unwrap_or_default();
        let oom =
            self.group.as_ref().and_then(Group::oom_kills).is_some_and(|n| n > self.oom_before);
        let log_path = self.log_dir.join(logs::APP_LOG);
        let last = logs::last_line(&log_path);
        let (reason, detail) = match &forced {
            Some((r, m)) => (*r, m.clone()),
            None if oom => {
                let limit = self
                    .template()
                    .resources
                    .limits
                    .memory
                    .map(|m| format!(" (limit {m})"))
                    .unwrap_or_default();
                ("OOMKilled", format!("the app {}: out of memory{limit}", exit.describe()))
            }
            None if exit.success() => {
                ("Completed", "the app exited with code 0; it is not restarted".into())
            }
            None if exit.code == Some(spawn::CGROUP_JOIN_FAILED) && self.group.is_some() => (
                "CgroupFailed",
                format!("the app could not join its cgroup: {}", last.clone().unwrap_or_default()),
            ),
            None => {
                let tail = last.map(|l| format!(": {l}")).unwrap_or_default();
                ("Error", format!("the app {}{tail}", exit.describe()))
            }
        };
        let info = ExitInfo {
            code: exit.code,
            signal: exit.signal,
            reason: reason.to_string(),
            time: Some(now_rfc3339()),
        };
        self.publish_procs();
        if forced.is_none() && exit.success() {
            self.status.update(|s| {
                self.status_wiring(s);
                s.phase = Phase::Succeeded;
                s.ready = false;
                s.reason = "Completed".into();
                s.message = detail;
                s.last_exit = Some(info);
            });
            return true;
        }
        self.restarts += 1;
        self.stats.restarts.store(self.restarts, Ordering::Relaxed);
        self.back_off(ran);
        let message = self.retry_note(detail);
        tracing::info!(instance = %self.name, namespace = %self.ns, "{message}");
        self.status.update(|s| {
            self.status_wiring(s);
            s.phase = Phase::Starting;
            s.ready = false;
            s.reason = "CrashLoopBackOff".into();
            s.message = message;
            s.last_exit = Some(info);
        });
        false
    }

    async fn stop_sidecar(&mut self) {
        if let Some(mut s) = self.sidecar.take() {
            s.stop(SIDECAR_GRACE).await;
        }
        self.publish_procs();
    }

    /// Stops the app (SIGTERM, grace, SIGKILL), whatever else is left in its cgroup, and the
    /// sidecar — in that order, so the sidecar serves until the app is gone.
    async fn stop_processes(&mut self) {
        self.probes = None;
        self.probe_rx = None;
        self.app_ready = false;
        let grace = self.grace();
        if let Some(mut app) = self.app.take() {
            app.stop(grace).await;
        }
        if let Some(g) = &self.group {
            // Processes that left the app's process group (setsid daemons) are still in its
            // cgroup.
            for pid in g.pids() {
                if let Ok(p) = i32::try_from(pid) {
                    let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                }
            }
        }
        self.stop_sidecar().await;
        self.save();
    }

    /// Frees everything the instance held on this node.
    async fn cleanup(&mut self, remove_logs: bool) {
        if let Some(g) = self.group.take() {
            // The kernel frees a group only once its last process is reaped.
            for _ in 0..40 {
                if g.remove().is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let ports = self.all_ports();
        self.sh.alloc().release(self.ip, ports);
        let _ = std::fs::remove_dir_all(&self.dir);
        if remove_logs {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }

    async fn finish(mut self, stop: Stop, rx: &mut watch::Receiver<Command>) {
        match stop {
            Stop::Detach => {
                // Leave everything running; the next agent adopts it from the state file.
                self.save();
            }
            Stop::Graceful => {
                let drain = self.sh.opts.drain_delay;
                self.status.update(|s| {
                    s.phase = Phase::Terminating;
                    s.ready = false;
                    s.reason.clear();
                    s.message = format!(
                        "stopping: draining for {}, then SIGTERM with a grace period of {}",
                        humantime::format_duration(drain),
                        humantime::format_duration(self.grace())
                    );
                });
                if self.app.is_some() && !drain.is_zero() {
                    // Deletion or an agent shutdown cuts the drain short.
                    let deadline = Instant::now() + drain;
                    let node = self.node();
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep_until(deadline) => break,
                            r = rx.changed() => {
                                let next = if r.is_err() { Some(Stop::Detach) } else { stop_of(&rx.borrow_and_update(), &node) };
                                match next {
                                    Some(Stop::Detach) => {
                                        self.save();
                                        self.sh.registry.remove(&self.key);
                                        return;
                                    }
                                    Some(Stop::Gone | Stop::Shutdown) => break,
                                    _ => {}
                                }
                            }
                        }
                    }
                }
                self.stop_processes().await;
                self.cleanup(true).await;
                self.delete_object().await;
            }
            Stop::Gone => {
                self.stop_processes().await;
                self.cleanup(true).await;
            }
            Stop::Shutdown => {
                self.stop_processes().await;
                self.status.update(|s| {
                    s.phase = Phase::Pending;
                    s.ready = false;
                    s.pid = None;
                    s.reason = "AgentStopped".into();
                    s.message = format!(
                        "the agent on node {} stopped; it starts again with the agent",
                        self.sh.opts.name
                    );
                });
                self.status.flush(Duration::from_secs(2)).await;
                // The logs stay: the instance still exists and will run here again.
                self.cleanup(false).await;
            }
        }
        self.sh.registry.remove(&self.key);
    }

    async fn delete_object(&self) {
        let mut delay = Duration::from_millis(100);
        for _ in 0..8 {
            match self.sh.client.delete::<Instance>(Some(&self.ns), &self.name).await {
                Ok(_) => return,
                Err(e) if e.is_not_found() => return,
                Err(e) => {
                    tracing::warn!(instance = %self.name, namespace = %self.ns, "cannot delete the stopped instance (retrying): {e}");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }
}

enum SidecarStart {
    Ready,
    Exited(Exit),
    TimedOut,
}

/// Polls the sidecar's `/ready` (every 2 ms at first, backing off to 100 ms) until it answers
/// 200, the sidecar exits, or the time is up.
async fn wait_ready(side: &mut Proc, admin: SocketAddr) -> SidecarStart {
    let start = Instant::now();
    loop {
        if let Some(e) = side.exit_now() {
            return SidecarStart::Exited(e);
        }
        let answer =
            tokio::time::timeout(Duration::from_millis(500), probe::http_status(admin, "/ready"))
                .await;
        if let Ok(Ok(200)) = answer {
            return SidecarStart::Ready;
        }
        if start.elapsed() > SIDECAR_READY_TIMEOUT {
            return SidecarStart::TimedOut;
        }
        let pause =
            (start.elapsed() / 10).clamp(Duration::from_millis(2), Duration::from_millis(100));
        tokio::select! {
            e = side.exited() => return SidecarStart::Exited(e),
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Stops and removes what an earlier agent left for an instance no longer bound here.
pub(crate) async fn clean_leftover(dir: PathBuf, logs_dir: PathBuf, saved: Option<Saved>) {
    if let Some(s) = &saved {
        tracing::info!(instance = %s.name, namespace = %s.namespace, "cleaning up an instance no longer bound to this node");
        let grace = s.grace().min(Duration::from_secs(30));
        if let Some(p) = &s.app {
            spawn::kill_leftover(p.pid, p.start_ticks, grace).await;
        }
        if let Some(g) = &s.cgroup {
            for pid in g.pids() {
                if let Ok(p) = i32::try_from(pid) {
                    let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                }
            }
        }
        if let Some(p) = &s.sidecar {
            spawn::kill_leftover(p.pid, p.start_ticks, SIDECAR_GRACE).await;
        }
        if let Some(g) = &s.cgroup {
            for _ in 0..40 {
                if g.remove().is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let _ = std::fs::remove_dir_all(logs_dir.join(state::key(&s.namespace, &s.name)));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
