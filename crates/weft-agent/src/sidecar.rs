//! The sidecar's command line: the one place that knows how `weft proxy` is invoked for an
//! instance (DESIGN.md "Sidecar").
//!
//! `weft proxy --server URL --instance NAME --namespace NS
//!   --inbound <port>=<node addr>:<public>:127.0.0.1:<app>:<protocol> …
//!   --mtls strict --outbound 127.0.0.1:<p> --admin 127.0.0.1:<p> [--upstream-port SVC[.NS][:PORT]=<WEFT_IP>:<local> …]`
//!
//! The proxy token is passed as `WEFT_TOKEN` in the sidecar's environment rather than as
//! `--token` (which `weft proxy` reads the same way): a command line is visible to every user
//! of the machine in `ps`, an environment is not.

use std::net::{IpAddr, Ipv4Addr};

use weft_api::kinds::template::Upstream;

use crate::env::PortAlloc;
use crate::options::SidecarObs;

/// What the sidecar of one instance needs to know.
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    pub server: &'a str,
    pub namespace: &'a str,
    pub instance: &'a str,
    pub node_address: IpAddr,
    pub ports: &'a [PortAlloc],
    pub outbound: u16,
    pub admin: u16,
    pub ip: Ipv4Addr,
    pub upstreams: &'a [Upstream],
    pub obs: &'a SidecarObs,
}

/// The agent's environment variable that sets its sidecars' `--mtls` mode.
pub(crate) const MTLS_ENV: &str = "WEFT_MESH_MTLS";

/// `--mtls` for the sidecars: `$WEFT_MESH_MTLS` when it is `strict`, `permissive` or `off`,
/// else `strict` (every hop between sidecars is mutually authenticated by default).
pub(crate) fn mtls_mode() -> String {
    match std::env::var(MTLS_ENV).as_deref() {
        Ok(m @ ("strict" | "permissive" | "off")) => m.to_string(),
        _ => "strict".into(),
    }
}

/// Arguments after the `weft` binary.
pub(crate) fn args(p: &Plan<'_>) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "proxy".into(),
        "--server".into(),
        p.server.into(),
        "--instance".into(),
        p.instance.into(),
        "--namespace".into(),
        p.namespace.into(),
    ];
    for port in p.ports {
        a.push("--inbound".into());
        a.push(match p.node_address {
            IpAddr::V4(addr) => format!(
                "{}={addr}:{}:127.0.0.1:{}:{}",
                port.name, port.public, port.app, port.protocol
            ),
            // IPv6 addresses have colons of their own: the proxy takes commas then.
            IpAddr::V6(addr) => format!(
                "{}=[{addr}]:{},127.0.0.1:{},{}",
                port.name, port.public, port.app, port.protocol
            ),
        });
    }
    a.extend(["--mtls".into(), mtls_mode()]);
    a.extend(["--outbound".into(), format!("127.0.0.1:{}", p.outbound)]);
    a.extend(["--admin".into(), format!("127.0.0.1:{}", p.admin)]);
    for u in p.upstreams {
        let mut svc = u.service.clone();
        if let Some(ns) = &u.namespace {
            svc = format!("{svc}.{ns}");
        }
        if let Some(port) = &u.port {
            svc = format!("{svc}:{port}");
        }
        a.extend(["--upstream-port".into(), format!("{svc}={}:{}", p.ip, u.local_port)]);
    }
    if let Some(e) = &p.obs.otlp_endpoint {
        a.extend(["--otlp-endpoint".into(), e.clone()]);
    }
    if let Some(r) = p.obs.trace_sample_ratio {
        a.extend(["--trace-sample-ratio".into(), r.to_string()]);
    }
    if p.obs.access_log {
        // The agent keeps the sidecar's stderr as the instance's sidecar log.
        a.extend(["--access-log".into(), "stderr".into()]);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::kinds::template::{PortRef, Protocol};

    #[test]
    fn follows_the_contract() {
        let ports = [PortAlloc {
            name: "http".into(),
            protocol: Protocol::Http,
            app: 41001,
            public: 31001,
        }];
        let ups = [Upstream {
            service: "cart".into(),
            namespace: Some("shop".into()),
            port: Some(PortRef::Name("grpc".into())),
            local_port: 9001,
        }];
        let a = args(&Plan {
            server: "http://127.0.0.1:7070",
            namespace: "default",
            instance: "web-1",
            node_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: &ports,
            outbound: 15001,
            admin: 15000,
            ip: Ipv4Addr::new(127, 1, 0, 2),
            upstreams: &ups,
            obs: &SidecarObs::default(),
        });
        assert_eq!(
            a.join(" "),
            "proxy --server http://127.0.0.1:7070 --instance web-1 --namespace default \
             --inbound http=127.0.0.1:31001:127.0.0.1:41001:http --mtls strict \
             --outbound 127.0.0.1:15001 \
             --admin 127.0.0.1:15000 --upstream-port cart.shop:grpc=127.1.0.2:9001"
        );
        let obs = SidecarObs {
            otlp_endpoint: Some("http://127.0.0.1:4318".into()),
            trace_sample_ratio: Some(0.5),
            access_log: true,
        };
        let a = args(&Plan { obs: &obs, upstreams: &[], ..plan(&ports) });
        assert!(
            a.join(" ").ends_with(
                "--otlp-endpoint http://127.0.0.1:4318 --trace-sample-ratio 0.5 --access-log stderr"
            ),
            "{a:?}"
        );
    }

    fn plan(ports: &[PortAlloc]) -> Plan<'_> {
        Plan {
            server: "http://127.0.0.1:7070",
            namespace: "default",
            instance: "web-1",
            node_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports,
            outbound: 15001,
            admin: 15000,
            ip: Ipv4Addr::new(127, 1, 0, 2),
            upstreams: &[],
            obs: const {
                &SidecarObs { otlp_endpoint: None, trace_sample_ratio: None, access_log: false }
            },
        }
    }
}
