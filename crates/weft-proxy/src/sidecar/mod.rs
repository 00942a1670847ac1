//! Sidecar and gateway modes: what the proxy listens on and where its services come from.
//!
//! A sidecar has inbound listeners (the instance's public ports, forwarding to the app), an
//! outbound listener (the app's `HTTP_PROXY`), fixed local ports per upstream service, and an
//! admin listener. Services, endpoints and policy come from a file (`file`) or from the api
//! server (`crate::control`); either way they become one immutable [`crate::routes::Snapshot`].
//! Requests are routed by `inbound` (policy of the instance's own services: rate limits,
//! concurrency) and `outbound` (which service a request names).
//!
//! The ingress gateway is the same machinery with one listener of another kind (`gateway`):
//! no instance, no inbound or outbound listeners; its routes are the Services' `spec.ingress`.

pub mod file;
pub(crate) mod gateway;
pub(crate) mod inbound;
pub(crate) mod outbound;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use serde::Serialize;
use weft_api::kinds::template::{PortRef, Protocol};

use crate::config::{ConfigError, ProxyArgs, bad, parse_addr};

/// The sidecar's listeners and the source of its configuration.
#[derive(Debug, Clone, Serialize)]
pub struct SidecarConfig {
    /// Where services, endpoints and policy come from.
    pub source: Source,
    /// One listener per instance port.
    pub inbound: Vec<InboundSpec>,
    /// The app's HTTP proxy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound: Option<SocketAddr>,
    /// Fixed local ports, one per upstream service (flags and file; in dynamic mode the
    /// Instance's `spec.template.upstreams` are added at start).
    pub upstream_ports: Vec<UpstreamPortSpec>,
    /// Gateway mode: the ingress gateway's listener (then there are no inbound, outbound or
    /// upstream-port listeners).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<SocketAddr>,
}

impl SidecarConfig {
    /// Whether this is an ingress gateway rather than an instance's sidecar.
    pub fn is_gateway(&self) -> bool {
        self.gateway.is_some()
    }
}

/// Where the sidecar's services come from.
#[derive(Clone, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Source {
    /// A `--config` file, read once.
    Static {
        file: String,
        /// The instance's namespace.
        namespace: String,
        /// The instance's labels: which services it serves (inbound policy).
        labels: BTreeMap<String, String>,
        /// Services and Endpoints, normalised by `weft_api::kinds::normalize`.
        #[serde(skip)]
        objects: Vec<serde_json::Value>,
    },
    /// The api server, followed by watch.
    Dynamic {
        server: String,
        /// The Instance a sidecar stands beside; `None` for a gateway, which serves no instance.
        #[serde(skip_serializing_if = "Option::is_none")]
        instance: Option<String>,
        namespace: String,
        #[serde(skip)]
        token: String,
        /// The Instance's labels and template ports, read at start
        /// ([`crate::control::read_instance`]).
        labels: BTreeMap<String, String>,
        #[serde(skip)]
        template_ports: Vec<weft_api::kinds::template::ContainerPort>,
    },
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Static { file, namespace, labels, objects } => f
                .debug_struct("Static")
                .field("file", file)
                .field("namespace", namespace)
                .field("labels", labels)
                .field("objects", &objects.len())
                .finish(),
            // Never the token.
            Source::Dynamic { server, instance, namespace, labels, .. } => f
                .debug_struct("Dynamic")
                .field("server", server)
                .field("instance", instance)
                .field("namespace", namespace)
                .field("labels", labels)
                .finish_non_exhaustive(),
        }
    }
}

impl Source {
    pub fn namespace(&self) -> &str {
        match self {
            Source::Static { namespace, .. } | Source::Dynamic { namespace, .. } => namespace,
        }
    }
}

/// An inbound listener: the instance's port `port` (the template's port name), owned by the
/// proxy at `listen`, forwarding to the app at `app`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InboundSpec {
    pub port: String,
    pub listen: SocketAddr,
    pub app: SocketAddr,
    pub protocol: Protocol,
}

/// A fixed local port forwarding to a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamPortSpec {
    pub service: String,
    /// Defaults to the instance's namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Service port (name or number); defaults to its first port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<PortRef>,
    pub listen: SocketAddr,
}

pub(crate) fn parse_protocol(text: &str) -> Option<Protocol> {
    match text {
        "http" => Some(Protocol::Http),
        "http2" => Some(Protocol::Http2),
        "grpc" => Some(Protocol::Grpc),
        "tcp" => Some(Protocol::Tcp),
        _ => None,
    }
}

/// `NAME=PUBLIC_ADDR:APP_ADDR[:PROTOCOL]`, or with commas (`NAME=PUBLIC,APP[,PROTOCOL]`, for
/// IPv6 addresses).
pub(crate) fn parse_inbound(text: &str) -> Result<InboundSpec, ConfigError> {
    const FORM: &str = "expected NAME=PUBLIC_ADDR:APP_ADDR[:PROTOCOL], \
                        e.g. http=127.0.0.1:31001:127.0.0.1:41001";
    let flag = "inbound";
    let (name, rest) =
        text.split_once('=').ok_or_else(|| bad(flag, format!("'{text}': {FORM}")))?;
    let name = name.trim();
    if let Err(e) = weft_api::validate::dns_label(name) {
        return Err(bad(flag, format!("'{text}': port name '{name}' {e}")));
    }
    let parts: Vec<&str> = if rest.contains(',') {
        rest.split(',').map(str::trim).collect()
    } else {
        // host:port:host:port[:protocol]
        let p: Vec<&str> = rest.split(':').collect();
        match p.len() {
            4 => vec![&rest[..p[0].len() + 1 + p[1].len()], &rest[p[0].len() + p[1].len() + 2..]],
            5 => {
                let cut = p[0].len() + p[1].len() + 2;
                let app_end = rest.len() - p[4].len() - 1;
                vec![&rest[..cut - 1], &rest[cut..app_end], p[4]]
            }
            _ => return Err(bad(flag, format!("'{text}': {FORM}"))),
        }
    };
    let (public, app, protocol) = match parts.as_slice() {
        [public, app] => (*public, *app, Protocol::Http),
        [public, app, proto] => {
            let p = parse_protocol(proto).ok_or_else(|| {
                bad(
                    flag,
                    format!("'{text}': unknown protocol '{proto}' (use http, http2, grpc or tcp)"),
                )
            })?;
            (*public, *app, p)
        }
        _ => return Err(bad(flag, format!("'{text}': {FORM}"))),
    };
    let listen = parse_addr(flag, public)?;
    let app = parse_addr(flag, app)?;
    Ok(InboundSpec { port: name.to_string(), listen, app, protocol })
}

/// `SERVICE[.NS][:PORT]=ADDR` (ADDR may be a bare port on 127.0.0.1).
pub(crate) fn parse_upstream_port(text: &str) -> Result<UpstreamPortSpec, ConfigError> {
    let flag = "upstream-port";
    const FORM: &str = "expected SERVICE[.NS][:PORT]=ADDR, e.g. catalog=127.0.0.1:9001";
    let (target, addr) =
        text.split_once('=').ok_or_else(|| bad(flag, format!("'{text}': {FORM}")))?;
    let (service, port) = match target.split_once(':') {
        Some((s, p)) => (s, Some(p)),
        None => (target, None),
    };
    let (service, namespace) = match service.split_once('.') {
        Some((s, ns)) => (s, Some(ns)),
        None => (service, None),
    };
    for (what, v) in [("service", Some(service)), ("namespace", namespace)] {
        if let Some(v) = v
            && let Err(e) = weft_api::validate::dns_label(v)
        {
            return Err(bad(flag, format!("'{text}': {what} '{v}' {e}")));
        }
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(0) => return Err(bad(flag, format!("'{text}': port 0 is not a port"))),
            Ok(n) => Some(PortRef::Number(n)),
            Err(_) if weft_api::validate::dns_label(p).is_ok() => Some(PortRef::Name(p.into())),
            Err(_) => {
                return Err(bad(flag, format!("'{text}': '{p}' is not a port name or number")));
            }
        },
    };
    let addr = addr.trim();
    let listen = match addr.parse::<u16>() {
        Ok(p) if p > 0 => SocketAddr::from(([127, 0, 0, 1], p)),
        _ => parse_addr(flag, addr)?,
    };
    Ok(UpstreamPortSpec {
        service: service.to_string(),
        namespace: namespace.map(str::to_string),
        port,
        listen,
    })
}

impl SidecarConfig {
    /// The sidecar (or gateway) part of the flags (and the file named by `--config`), and the
    /// admin address.
    pub(crate) fn from_args(
        args: &ProxyArgs,
    ) -> Result<(SidecarConfig, Option<SocketAddr>), ConfigError> {
        let gateway = args.gateway.as_deref().map(|a| parse_addr("gateway", a)).transpose()?;
        if gateway.is_some() {
            for (flag, given) in [
                ("inbound", !args.inbound.is_empty()),
                ("outbound", args.outbound.is_some()),
                ("upstream-port", !args.upstream_port.is_empty()),
            ] {
                if given {
                    return Err(bad(
                        flag,
                        "is a sidecar flag and does not go with --gateway (a gateway has only \
                         --gateway and --admin listeners)",
                    ));
                }
            }
            for (flag, given) in
                [("instance", args.instance.is_some()), ("namespace", args.namespace.is_some())]
            {
                if given {
                    return Err(bad(
                        flag,
                        "is for a sidecar: a gateway (--gateway) serves every Service with \
                         spec.ingress, in every namespace",
                    ));
                }
            }
        }
        let mut admin = args.admin.as_deref().map(|a| parse_addr("admin", a)).transpose()?;
        let mut outbound =
            args.outbound.as_deref().map(|a| parse_addr("outbound", a)).transpose()?;
        let mut inbound = Vec::new();
        let mut upstream_ports = Vec::new();
        let source = match (&args.config, &args.server) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "server",
                    "does not go with --config: a sidecar or gateway reads either a file or the \
                     api server",
                ));
            }
            (Some(path), None) => {
                for (flag, given) in
                    [("instance", args.instance.is_some()), ("namespace", args.namespace.is_some())]
                {
                    if given {
                        return Err(bad(
                            flag,
                            "is for dynamic mode (--server); with --config, set it in the file",
                        ));
                    }
                }
                let f = file::load(path)?;
                if gateway.is_some() {
                    for (field, given) in [
                        ("inbound", !f.inbound.is_empty()),
                        ("outbound", f.outbound.is_some()),
                        ("upstreams", !f.upstream_ports.is_empty()),
                    ] {
                        if given {
                            return Err(bad(
                                "config",
                                format!(
                                    "{path}: {field}: is a sidecar listener; a gateway \
                                     (--gateway) takes only objects, namespace and admin from \
                                     the file"
                                ),
                            ));
                        }
                    }
                }
                admin = admin.or(f.admin);
                outbound = outbound.or(f.outbound);
                inbound = f.inbound;
                upstream_ports = f.upstream_ports;
                Source::Static {
                    file: path.clone(),
                    namespace: f.namespace,
                    labels: f.labels,
                    objects: f.objects,
                }
            }
            (None, Some(server)) => {
                let token = args.token.clone().filter(|t| !t.trim().is_empty()).ok_or_else(|| {
                    bad("token", "is required with --server (or set WEFT_TOKEN); create one with `weft token create --role proxy`")
                })?;
                let instance = match gateway {
                    Some(_) => None,
                    None => {
                        let instance = args.instance.clone().ok_or_else(|| {
                            bad(
                                "instance",
                                "is required with --server: the Instance this sidecar serves \
                                 (or give --gateway ADDR to run the ingress gateway)",
                            )
                        })?;
                        if let Err(e) = weft_api::validate::dns_subdomain(&instance) {
                            return Err(bad("instance", format!("'{instance}' {e}")));
                        }
                        Some(instance)
                    }
                };
                let namespace = args.namespace.clone().unwrap_or_else(|| "default".into());
                if let Err(e) = weft_api::validate::dns_label(&namespace) {
                    return Err(bad("namespace", format!("'{namespace}' {e}")));
                }
                if let Err(e) = weft_client::Client::new(server, None) {
                    return Err(bad("server", e.to_string()));
                }
                Source::Dynamic {
                    server: server.trim_end_matches('/').to_string(),
                    instance,
                    namespace,
                    token: token.trim().to_string(),
                    labels: BTreeMap::new(),
                    template_ports: Vec::new(),
                }
            }
            (None, None) if gateway.is_some() => {
                return Err(bad(
                    "gateway",
                    "needs its routes from somewhere: --server URL (the api server, with a proxy \
                     token) or --config FILE",
                ));
            }
            (None, None) => {
                return Err(bad(
                    "upstream",
                    "a mode is required: --upstream ADDR (plain reverse proxy), --config FILE \
                     (static sidecar), --server URL (dynamic sidecar) or --gateway ADDR \
                     (ingress gateway); see --help",
                ));
            }
        };
        for text in &args.inbound {
            inbound.push(parse_inbound(text)?);
        }
        for text in &args.upstream_port {
            upstream_ports.push(parse_upstream_port(text)?);
        }
        let sidecar = SidecarConfig { source, inbound, outbound, upstream_ports, gateway };
        sidecar.check_clashes(admin)?;
        Ok((sidecar, admin))
    }

    /// Two listeners on one address (port 0 aside) or two inbound listeners for one port name
    /// are mistakes the user should hear about before anything binds.
    pub(crate) fn check_clashes(&self, admin: Option<SocketAddr>) -> Result<(), ConfigError> {
        let mut seen: Vec<(SocketAddr, &'static str)> = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        let mut add = |addr: SocketAddr, flag: &'static str| {
            if addr.port() != 0
                && let Some((_, other)) = seen.iter().find(|(a, _)| *a == addr)
            {
                return Err(bad(flag, format!("{addr} is already used by --{other}")));
            }
            seen.push((addr, flag));
            Ok(())
        };
        if let Some(a) = admin {
            add(a, "admin")?;
        }
        if let Some(a) = self.gateway {
            add(a, "gateway")?;
        }
        if let Some(a) = self.outbound {
            add(a, "outbound")?;
        }
        for i in &self.inbound {
            if names.contains(&i.port.as_str()) {
                return Err(bad("inbound", format!("port '{}' is given twice", i.port)));
            }
            names.push(&i.port);
            add(i.listen, "inbound")?;
        }
        for u in &self.upstream_ports {
            add(u.listen, "upstream-port")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_forms() {
        let i = parse_inbound("http=127.0.0.1:31001:127.0.0.1:41001").unwrap();
        assert_eq!(i.port, "http");
        assert_eq!(i.listen, "127.0.0.1:31001".parse().unwrap());
        assert_eq!(i.app, "127.0.0.1:41001".parse().unwrap());
        assert_eq!(i.protocol, Protocol::Http);
        let i = parse_inbound("db=127.0.0.1:31002:127.0.0.1:41002:tcp").unwrap();
        assert_eq!((i.app.port(), i.protocol), (41002, Protocol::Tcp));
        let i = parse_inbound("g=[::1]:31003,[::1]:41003,grpc").unwrap();
        assert_eq!((i.listen.port(), i.app.port(), i.protocol), (31003, 41003, Protocol::Grpc));
        for bad in [
            "http",
            "http=127.0.0.1:1",
            "http=127.0.0.1:1:127.0.0.1:2:udp",
            "Bad_Name=127.0.0.1:1:127.0.0.1:2",
            "http=127.0.0.1:1:nohost",
        ] {
            let e = parse_inbound(bad).unwrap_err();
            assert_eq!(e.flag, "inbound", "{bad}");
            assert!(e.to_string().starts_with("--inbound: "), "{e}");
        }
    }

    #[test]
    fn upstream_port_forms() {
        let u = parse_upstream_port("catalog=127.0.0.1:9001").unwrap();
        assert_eq!((u.service.as_str(), u.namespace.as_deref(), &u.port), ("catalog", None, &None));
        let u = parse_upstream_port("cart.shop:grpc=9002").unwrap();
        assert_eq!(u.namespace.as_deref(), Some("shop"));
        assert_eq!(u.port, Some(PortRef::Name("grpc".into())));
        assert_eq!(u.listen, "127.0.0.1:9002".parse().unwrap());
        let u = parse_upstream_port("db:5432=127.0.0.1:9003").unwrap();
        assert_eq!(u.port, Some(PortRef::Number(5432)));
        for bad in ["catalog", "Catalog=1", "c:0=1", "c=nope", "c:a_b=1"] {
            assert_eq!(parse_upstream_port(bad).unwrap_err().flag, "upstream-port", "{bad}");
        }
    }
}
