//! `weft up`'s tracing, access-log and gateway-admin flags: what the gateway it runs and the
//! agent's sidecars are told (`weft proxy --otlp-endpoint`, `--trace-sample-ratio`,
//! `--access-log`, `--admin`).

use std::net::SocketAddr;

use weft_agent::SidecarObs;

use crate::exit;

#[derive(Debug, Clone, clap::Args)]
pub struct UpObsArgs {
    /// Gateway and sidecars export a span per HTTP request over OTLP/HTTP to URL/v1/traces,
    /// e.g. http://127.0.0.1:4318 (an OpenTelemetry collector, Jaeger, Tempo)
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Share of new traces (requests without a traceparent) sampled, 0 to 1
    #[arg(long, default_value = "1", value_name = "RATIO")]
    pub trace_sample_ratio: String,
    /// Gateway: JSON access log, one line per request: off, stdout, stderr or a file path
    #[arg(long, default_value = "off", value_name = "off|stdout|stderr|PATH")]
    pub access_log: String,
    /// Sidecars: JSON access log lines in each instance's sidecar log (`weft logs INSTANCE
    /// --sidecar`): on or off
    #[arg(long, default_value = "off", value_name = "on|off", value_parser = ["on", "off"])]
    pub sidecar_access_log: String,
    /// The gateway's admin listener (/metrics, /ready, /config): ADDR, auto (a free port on
    /// 127.0.0.1, printed) or off
    #[arg(long, default_value = "auto", value_name = "ADDR|auto|off")]
    pub gateway_admin: String,
}

impl UpObsArgs {
    /// The gateway admin address to use: `auto` takes a free port now (like the gateway's own
    /// address, it is bound for real by the proxy a moment later).
    pub fn gateway_admin(&self) -> anyhow::Result<Option<SocketAddr>> {
        match self.gateway_admin.trim() {
            "off" | "0" => Ok(None),
            "auto" => {
                let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| {
                    exit::usage(format!("--gateway-admin auto: no free port on 127.0.0.1: {e}"))
                })?;
                Ok(Some(l.local_addr()?))
            }
            text => text.parse().map(Some).map_err(|_| {
                exit::usage(format!(
                    "--gateway-admin {text:?} is not an address such as 127.0.0.1:7071 (or auto, \
                     off)"
                ))
            }),
        }
    }

    /// `weft proxy` flags for the gateway.
    pub fn gateway_flags(&self, admin: Option<SocketAddr>) -> Vec<String> {
        let mut a = vec![
            "--trace-sample-ratio".to_string(),
            self.trace_sample_ratio.clone(),
            "--access-log".into(),
            self.access_log.clone(),
        ];
        if let Some(e) = self.otlp_endpoint.as_ref().filter(|e| !e.trim().is_empty()) {
            a.extend(["--otlp-endpoint".into(), e.clone()]);
        }
        if let Some(admin) = admin {
            a.extend(["--admin".into(), admin.to_string()]);
        }
        a
    }

    /// What the agent tells its sidecars (the ratio was checked with the gateway's flags).
    pub fn sidecar_obs(&self) -> SidecarObs {
        SidecarObs {
            otlp_endpoint: self.otlp_endpoint.clone().filter(|e| !e.trim().is_empty()),
            trace_sample_ratio: self.trace_sample_ratio.trim().parse().ok(),
            access_log: self.sidecar_access_log == "on",
        }
    }
}
