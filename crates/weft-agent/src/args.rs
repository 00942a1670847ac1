//! `weft agent` command-line flags.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use weft_api::kinds::template::ResourceList;
use weft_api::quantity::Quantity;

use crate::backoff::BackoffPolicy;
use crate::cgroups::CgroupMode;
use crate::error::AgentError;
use crate::options::{AgentOptions, SidecarMode, SidecarObs, defaults};

/// How `weft agent` explains itself (`--help`).
pub const HELP: &str = "\
The agent registers this machine as a Node, runs the Instances bound to it as local processes,
each behind its own sidecar (`weft proxy`), and reports their status, usage and logs.

State (per-instance pids and ports, logs, the sidecars' token) is kept in <data-dir>/agent/.
On SIGTERM the agent leaves instances running and a restarted agent adopts them; with
--stop-on-exit it stops them all first.

Examples:
  weft agent --join http://10.0.0.1:7070 --token $AGENT_TOKEN --address 10.0.0.2
  weft agent --name node-2 --address 10.0.0.2 --capacity cpu=4,memory=8Gi --reserved memory=1Gi

Exit codes: 0 after a clean shutdown, 64 for bad flags, 1 otherwise.";

/// `weft agent` arguments.
#[derive(Clone, clap::Args)]
#[command(after_help = HELP)]
pub struct AgentArgs {
    /// The api server, e.g. http://127.0.0.1:7070. Not a flag of its own: `weft` fills it from
    /// its global `--server`/`WEFT_SERVER` (or a local server's data dir).
    #[arg(skip)]
    pub server: Option<String>,
    /// The api server to join, e.g. http://10.0.0.1:7070 (the same as weft's global
    /// `--server`; with `--token`, an agent-role token).
    #[arg(long, value_name = "URL")]
    pub join: Option<String>,
    /// An api token with the agent role (`weft token create --role agent`); from `weft`'s
    /// global `--token`/`WEFT_TOKEN`.
    #[arg(skip)]
    pub token: Option<String>,
    /// The Node name [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The address other nodes reach this node's instances on; public ports bind here.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub address: IpAddr,
    /// What instances may use in all, e.g. cpu=4,memory=8Gi [default: this machine's cpus
    /// and memory].
    #[arg(long, value_name = "cpu=Q,memory=Q")]
    pub capacity: Option<String>,
    /// Kept back for the system: allocatable = capacity - reserved, e.g. memory=1Gi.
    #[arg(long, value_name = "cpu=Q,memory=Q")]
    pub reserved: Option<String>,
    /// The weft data dir (the agent uses <data-dir>/agent/) [default: ~/.weft]; from `weft`'s
    /// global `--data-dir`/`WEFT_DATA_DIR`.
    #[arg(skip)]
    pub data_dir: Option<PathBuf>,
    /// The weft binary to start sidecars with (`<bin> proxy ...`) [default: this executable].
    #[arg(long, value_name = "PATH")]
    pub weft_bin: Option<PathBuf>,
    /// Time between taking a stopping instance out of service and SIGTERM.
    #[arg(long, value_name = "DURATION", default_value = "2s")]
    pub drain_delay: String,
    /// Wait before the second restart of a crashing app; doubles per crash.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub backoff_base: String,
    /// Longest wait between restarts.
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub backoff_max: String,
    /// A run this long resets the backoff.
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub backoff_reset: String,
    /// How often the node's heartbeat is written.
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    pub heartbeat: String,
    /// How often instances' status.usage is refreshed (/metrics is always current).
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub usage_period: String,
    /// The admin listener: /metrics, /healthz and /logs (port 0: any free port; the Node's
    /// metricsAddress says which).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub admin: SocketAddr,
    /// Cpu and memory limits through cgroups: auto (where writable) or off.
    #[arg(long, value_enum, value_name = "MODE", default_value = "auto")]
    pub cgroups: CgroupMode,
    /// Stop every instance when the agent stops (instead of leaving them to be adopted).
    #[arg(long)]
    pub stop_on_exit: bool,
    /// Rotate a log file past this size.
    #[arg(long, value_name = "BYTES", default_value = "10Mi")]
    pub log_max_size: String,
    /// Log files kept per log (the live one included).
    #[arg(long, value_name = "N", default_value_t = defaults::LOG_FILES)]
    pub log_files: usize,
    /// Sidecars export a span per HTTP request over OTLP/HTTP to URL/v1/traces (e.g. an
    /// OpenTelemetry collector on http://127.0.0.1:4318).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Sidecars: share of new traces sampled, 0 to 1 [default: 1].
    #[arg(long, value_name = "RATIO")]
    pub trace_sample_ratio: Option<f64>,
    /// Sidecars write a JSON access log line per HTTP request to their stderr, kept in the
    /// instance's sidecar log (`weft logs INSTANCE --sidecar`): on or off.
    #[arg(long, value_name = "on|off", default_value = "off", value_parser = ["on", "off"])]
    pub access_log: String,
}

impl std::fmt::Debug for AgentArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentArgs")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("name", &self.name)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

fn duration(flag: &str, text: &str) -> Result<Duration, AgentError> {
    weft_api::duration::Duration::parse(text)
        .map(|d| d.as_std())
        .map_err(|e| AgentError::Config(format!("--{flag}: {e}")))
}

/// Parses `cpu=4,memory=8Gi` (either part optional).
pub fn parse_resources(flag: &str, text: &str) -> Result<ResourceList, AgentError> {
    let bad = |m: String| AgentError::Config(format!("--{flag} {text:?}: {m}"));
    let mut out = ResourceList::default();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) =
            part.split_once('=').ok_or_else(|| bad(format!("{part:?} is not name=quantity")))?;
        let q: Quantity = v.parse().map_err(|e| bad(format!("{e}")))?;
        match k.trim() {
            "cpu" => out.cpu = Some(q),
            "memory" => out.memory = Some(q),
            other => return Err(bad(format!("unknown resource {other:?} (use cpu and memory)"))),
        }
    }
    Ok(out)
}

impl AgentArgs {
    /// The options these flags describe. `--server` and `--token` are required here; a caller
    /// that can find them elsewhere (the data dir of a local server) fills them in first.
    pub fn into_options(self) -> Result<AgentOptions, AgentError> {
        let server = self.server.ok_or_else(|| {
            AgentError::Config("no api server (give --server URL or set WEFT_SERVER)".into())
        })?;
        let token = self.token.ok_or_else(|| {
            AgentError::Config(
                "no token (give --token with an agent token, or set WEFT_TOKEN)".into(),
            )
        })?;
        let data_dir = match self.data_dir {
            Some(d) => d,
            None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".weft")).ok_or_else(
                || AgentError::Config("no --data-dir and no HOME to default to".into()),
            )?,
        };
        let mut o = AgentOptions::new(server, token, data_dir);
        if let Some(n) = self.name {
            o.name = n;
        }
        o.address = self.address;
        if let Some(c) = &self.capacity {
            o.capacity = parse_resources("capacity", c)?;
        }
        if let Some(r) = &self.reserved {
            o.reserved = parse_resources("reserved", r)?;
        }
        if let Some(b) = self.weft_bin {
            o.weft_bin = b;
        }
        o.sidecar = SidecarMode::Process;
        o.drain_delay = duration("drain-delay", &self.drain_delay)?;
        o.backoff = BackoffPolicy {
            base: duration("backoff-base", &self.backoff_base)?,
            max: duration("backoff-max", &self.backoff_max)?,
            reset: duration("backoff-reset", &self.backoff_reset)?,
        };
        o.heartbeat_period = duration("heartbeat", &self.heartbeat)?;
        o.usage_period = duration("usage-period", &self.usage_period)?;
        o.admin_listen = self.admin;
        o.cgroups = self.cgroups;
        o.stop_on_exit = self.stop_on_exit;
        o.log_max_bytes = self
            .log_max_size
            .parse::<Quantity>()
            .map_err(|e| AgentError::Config(format!("--log-max-size: {e}")))?
            .as_units_ceil();
        o.log_files = self.log_files;
        o.sidecar_obs = SidecarObs {
            otlp_endpoint: self.otlp_endpoint.filter(|e| !e.trim().is_empty()),
            trace_sample_ratio: self.trace_sample_ratio,
            access_log: self.access_log == "on",
        };
        o.validate()?;
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: AgentArgs,
    }

    #[test]
    fn flags_become_options() {
        let bin = std::env::current_exe().unwrap();
        let mut cli = Cli::try_parse_from([
            "agent",
            "--name=n1",
            "--capacity=cpu=4,memory=8Gi",
            "--reserved=memory=1Gi",
            &format!("--weft-bin={}", bin.display()),
            "--backoff-base=1s",
            "--cgroups=off",
            "--stop-on-exit",
            "--log-max-size=1Ki",
        ])
        .unwrap();
        cli.args.server = Some("http://127.0.0.1:7070".into());
        cli.args.token = Some("t".into());
        cli.args.data_dir = Some("/tmp/x".into());
        let o = cli.args.into_options().unwrap();
        assert_eq!(o.name, "n1");
        assert_eq!(o.capacity.cpu.unwrap().as_milli_ceil(), 4000);
        assert_eq!(o.reserved.memory.unwrap().as_units_ceil(), 1 << 30);
        assert_eq!(o.backoff.base, Duration::from_secs(1));
        assert_eq!(o.backoff.max, Duration::from_secs(300));
        assert_eq!(o.cgroups, CgroupMode::Off);
        assert!(o.stop_on_exit);
        assert_eq!(o.log_max_bytes, 1024);
        assert_eq!(o.drain_delay, Duration::from_secs(2));
    }

    #[test]
    fn bad_flags_are_one_line() {
        let e = parse_resources("capacity", "cpu=4,disk=1").unwrap_err().to_string();
        assert_eq!(
            e,
            "bad agent configuration: --capacity \"cpu=4,disk=1\": unknown resource \"disk\" (use cpu and memory)"
        );
        assert!(parse_resources("capacity", "cpu").is_err());
        assert!(parse_resources("capacity", "memory=lots").is_err());
    }

    #[test]
    fn sidecar_tracing_flags() {
        let parse = |extra: &[&str]| {
            let mut line = vec!["agent"];
            line.extend_from_slice(extra);
            let mut cli = Cli::try_parse_from(line)?;
            cli.args.server = Some("http://127.0.0.1:7070".into());
            cli.args.token = Some("t".into());
            cli.args.data_dir = Some("/tmp/x".into());
            cli.args.name = Some("n1".into());
            Ok::<_, Box<dyn std::error::Error>>(cli.args.into_options()?)
        };
        let o = parse(&[
            "--otlp-endpoint",
            "http://127.0.0.1:4318",
            "--trace-sample-ratio",
            "0.1",
            "--access-log",
            "on",
        ])
        .unwrap();
        assert_eq!(o.sidecar_obs.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4318"));
        assert_eq!(o.sidecar_obs.trace_sample_ratio, Some(0.1));
        assert!(o.sidecar_obs.access_log);
        for bad in [
            &["--otlp-endpoint", "collector:4318"][..],
            &["--trace-sample-ratio", "1.5"],
            &["--trace-sample-ratio", "x"],
            &["--access-log", "stdout"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
