//! What an agent is told: [`AgentOptions`] (built by `weft up` directly, or from the command
//! line through [`crate::AgentArgs`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use weft_api::kinds::template::ResourceList;

pub use crate::backoff::BackoffPolicy;
pub use crate::cgroups::CgroupMode;
use crate::error::AgentError;

/// How sidecars are run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SidecarMode {
    /// `<weft_bin> proxy --server … --instance … --inbound …` as a child process per instance,
    /// started before the app, which starts once the sidecar's `/ready` answers 200.
    #[default]
    Process,
}

/// Everything an agent needs. [`AgentOptions::new`] fills in the defaults of DESIGN.md.
#[derive(Clone)]
pub struct AgentOptions {
    /// The api server, e.g. `http://127.0.0.1:7070`.
    pub server: String,
    /// An `agent` (or `admin`) token.
    pub token: String,
    /// The Node name; defaults to the host name.
    pub name: String,
    /// Where other nodes reach this node's instances (public ports bind here).
    pub address: IpAddr,
    /// Overrides of the detected capacity (unset resources are detected).
    pub capacity: ResourceList,
    /// Kept back from instances: allocatable = capacity − reserved.
    pub reserved: ResourceList,
    /// The weft data dir; the agent keeps its state in `<data_dir>/agent/`.
    pub data_dir: PathBuf,
    /// The binary started as `<weft_bin> proxy …` for sidecars.
    pub weft_bin: PathBuf,
    pub sidecar: SidecarMode,
    /// Between marking an instance Terminating and SIGTERM, so callers' sidecars stop
    /// sending to it first.
    pub drain_delay: Duration,
    pub backoff: BackoffPolicy,
    pub heartbeat_period: Duration,
    /// How often `status.usage` is refreshed (figures on `/metrics` are always fresh).
    pub usage_period: Duration,
    /// The admin listener (`/metrics`, `/logs`); port 0 picks a free port.
    pub admin_listen: SocketAddr,
    pub cgroups: CgroupMode,
    /// On shutdown, stop every instance (what `weft up` wants) instead of leaving them
    /// running for the next agent to adopt (what a restarted `weft agent` wants).
    pub stop_on_exit: bool,
    /// Log rotation: size of a log file before it is rotated, and files kept per log.
    pub log_max_bytes: u64,
    pub log_files: usize,
    /// Directories put in front of the PATH instances inherit (`weft up` adds its own, so
    /// workload binaries built beside `weft`, such as `weft-demo`, are found by name).
    pub extra_path: Vec<PathBuf>,
    /// Tracing and access-log flags given to every sidecar.
    pub sidecar_obs: SidecarObs,
}

/// What the sidecars trace and log (`weft proxy --otlp-endpoint`, `--trace-sample-ratio`,
/// `--access-log`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SidecarObs {
    /// OTLP/HTTP endpoint (base URL) the sidecars export spans to.
    pub otlp_endpoint: Option<String>,
    /// Share of new traces sampled (the proxy's default, 1, when unset).
    pub trace_sample_ratio: Option<f64>,
    /// JSON access log lines on the sidecar's stderr, which the agent keeps in the instance's
    /// sidecar log (`weft logs INSTANCE --sidecar`).
    pub access_log: bool,
}

impl SidecarObs {
    /// Checks the values before any sidecar is started with them.
    pub fn validate(&self) -> Result<(), AgentError> {
        if let Some(e) = &self.otlp_endpoint
            && !(e.starts_with("http://") && e.len() > "http://".len())
        {
            return Err(AgentError::Config(format!(
                "--otlp-endpoint {e:?}: expected an http:// URL such as http://127.0.0.1:4318"
            )));
        }
        if let Some(r) = self.trace_sample_ratio
            && !(0.0..=1.0).contains(&r)
        {
            return Err(AgentError::Config(format!(
                "--trace-sample-ratio {r}: expected a number from 0 to 1"
            )));
        }
        Ok(())
    }
}

impl std::fmt::Debug for AgentOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Everything but the token.
        f.debug_struct("AgentOptions")
            .field("server", &self.server)
            .field("name", &self.name)
            .field("address", &self.address)
            .field("capacity", &self.capacity)
            .field("reserved", &self.reserved)
            .field("data_dir", &self.data_dir)
            .field("weft_bin", &self.weft_bin)
            .field("sidecar", &self.sidecar)
            .field("drain_delay", &self.drain_delay)
            .field("backoff", &self.backoff)
            .field("heartbeat_period", &self.heartbeat_period)
            .field("usage_period", &self.usage_period)
            .field("admin_listen", &self.admin_listen)
            .field("cgroups", &self.cgroups)
            .field("stop_on_exit", &self.stop_on_exit)
            .field("log_max_bytes", &self.log_max_bytes)
            .field("log_files", &self.log_files)
            .field("extra_path", &self.extra_path)
            .field("sidecar_obs", &self.sidecar_obs)
            .finish_non_exhaustive()
    }
}

/// Defaults (DESIGN.md).
pub mod defaults {
    use std::time::Duration;

    pub const DRAIN_DELAY: Duration = Duration::from_secs(2);
    pub const HEARTBEAT: Duration = Duration::from_secs(5);
    pub const USAGE_PERIOD: Duration = Duration::from_secs(10);
    pub const LOG_MAX_BYTES: u64 = 10 << 20;
    pub const LOG_FILES: usize = 3;
}

impl AgentOptions {
    /// Options with DESIGN.md's defaults: node named after the host, address 127.0.0.1,
    /// sidecars from the running executable, cgroups where writable, instances left running
    /// on exit.
    pub fn new(
        server: impl Into<String>,
        token: impl Into<String>,
        data_dir: impl Into<PathBuf>,
    ) -> AgentOptions {
        AgentOptions {
            server: server.into(),
            token: token.into(),
            name: crate::procfs::node_name(),
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            capacity: ResourceList::default(),
            reserved: ResourceList::default(),
            data_dir: data_dir.into(),
            weft_bin: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("weft")),
            sidecar: SidecarMode::Process,
            drain_delay: defaults::DRAIN_DELAY,
            backoff: BackoffPolicy::default(),
            heartbeat_period: defaults::HEARTBEAT,
            usage_period: defaults::USAGE_PERIOD,
            admin_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            cgroups: CgroupMode::Auto,
            stop_on_exit: false,
            log_max_bytes: defaults::LOG_MAX_BYTES,
            log_files: defaults::LOG_FILES,
            extra_path: Vec::new(),
            sidecar_obs: SidecarObs::default(),
        }
    }

    /// Checks what can be checked before starting.
    pub fn validate(&self) -> Result<(), AgentError> {
        self.sidecar_obs.validate()?;
        let bad = |m: String| Err(AgentError::Config(m));
        if let Err(e) = weft_api::validate::dns_subdomain(&self.name) {
            return bad(format!("node name {:?}: {e} (set one with --name)", self.name));
        }
        if self.token.trim().is_empty() {
            return bad("no token (give an agent token with --token or WEFT_TOKEN)".into());
        }
        if self.address.is_unspecified() {
            return bad(format!(
                "--address {}: give the address other nodes reach this one on",
                self.address
            ));
        }
        if !self.weft_bin.is_file() {
            return bad(format!(
                "the sidecar binary {} does not exist (set --weft-bin)",
                self.weft_bin.display()
            ));
        }
        for (what, d) in
            [("heartbeat period", self.heartbeat_period), ("usage period", self.usage_period)]
        {
            if d.is_zero() {
                return bad(format!("the {what} must be more than 0"));
            }
        }
        if self.backoff.base > self.backoff.max {
            return bad(format!(
                "backoff base {:?} is more than the maximum {:?}",
                self.backoff.base, self.backoff.max
            ));
        }
        if self.log_files == 0 || self.log_max_bytes == 0 {
            return bad("log rotation needs a size above 0 and at least 1 file".into());
        }
        Ok(())
    }
}
