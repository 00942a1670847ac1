//! The environment an instance's app gets (DESIGN.md "Mesh wiring" and "Ports and addresses").

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use weft_api::kinds::template::{Protocol, Upstream};

/// The agent's variables passed on to apps and sidecars. Everything else of the agent's own
/// environment stays behind (it may hold the agent's token, `WEFT_TOKEN`).
pub(crate) const INHERITED: &[&str] =
    &["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"];

/// Used when the agent itself has no PATH.
pub(crate) const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// One template port and what the agent allocated for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PortAlloc {
    pub name: String,
    #[serde(default)]
    pub protocol: Protocol,
    /// Where the app listens (`PORT`, `PORT_<NAME>`).
    pub app: u16,
    /// The public port, on the node address, owned by the sidecar.
    pub public: u16,
}

/// Everything the wiring depends on.
#[derive(Debug)]
pub(crate) struct Wiring<'a> {
    pub namespace: &'a str,
    pub instance: &'a str,
    /// The deployment (`WEFT_SERVICE`); the instance name for a bare instance.
    pub service: &'a str,
    pub node: &'a str,
    pub ip: Ipv4Addr,
    pub ports: &'a [PortAlloc],
    pub outbound: u16,
    pub admin: u16,
    pub upstreams: &'a [Upstream],
}

/// `http` → `HTTP`, `grpc-web` → `GRPC_WEB`.
pub(crate) fn env_suffix(name: &str) -> String {
    name.chars().map(|c| if c == '-' || c == '.' { '_' } else { c.to_ascii_uppercase() }).collect()
}

/// The app's environment: the inherited basics, then the template's `env`, then the agent's
/// wiring, which wins on a clash (an app that overrides `PORT` would listen where its sidecar
/// does not forward).
pub(crate) fn app_env(
    w: &Wiring<'_>,
    inherited: &[(String, String)],
    template: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = inherited.iter().cloned().collect();
    env.extend(template.iter().map(|(k, v)| (k.clone(), v.clone())));
    let proxy = format!("http://127.0.0.1:{}", w.outbound);
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    if let Some(first) = w.ports.first() {
        set("PORT", first.app.to_string());
    }
    for p in w.ports {
        set(&format!("PORT_{}", env_suffix(&p.name)), p.app.to_string());
    }
    set("WEFT_IP", w.ip.to_string());
    set("HTTP_PROXY", proxy.clone());
    set("http_proxy", proxy);
    set("NO_PROXY", "localhost,127.0.0.1".into());
    set("no_proxy", "localhost,127.0.0.1".into());
    set("WEFT_SERVICE", w.service.to_string());
    set("WEFT_NAMESPACE", w.namespace.to_string());
    set("WEFT_INSTANCE", w.instance.to_string());
    set("WEFT_NODE", w.node.to_string());
    set("WEFT_SIDECAR_ADMIN", format!("127.0.0.1:{}", w.admin));
    for u in w.upstreams {
        set(
            &format!("WEFT_UPSTREAM_{}", env_suffix(&u.service)),
            format!("{}:{}", w.ip, u.local_port),
        );
    }
    env.into_iter().collect()
}

/// The inherited basics from the agent's own environment, with `extra_path` in front of PATH.
pub(crate) fn inherited(extra_path: &[std::path::PathBuf]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = INHERITED
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    let base = match out.iter().position(|(k, _)| k == "PATH") {
        Some(i) => out.remove(i).1,
        None => DEFAULT_PATH.to_string(),
    };
    out.push(("PATH".into(), prepend_path(extra_path, &base)));
    out
}

fn prepend_path(extra: &[std::path::PathBuf], base: &str) -> String {
    let mut dirs: Vec<String> = extra
        .iter()
        .map(|d| d.display().to_string())
        .filter(|d| !d.is_empty() && !d.contains(':'))
        .collect();
    for d in base.split(':').filter(|d| !d.is_empty()) {
        if !dirs.iter().any(|x| x == d) {
            dirs.push(d.to_string());
        }
    }
    dirs.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_path_goes_first_once() {
        let extra =
            [std::path::PathBuf::from("/opt/weft/bin"), std::path::PathBuf::from("/bad:dir")];
        assert_eq!(
            prepend_path(&extra, "/usr/bin:/opt/weft/bin:/bin"),
            "/opt/weft/bin:/usr/bin:/bin"
        );
        assert_eq!(prepend_path(&[], "/usr/bin"), "/usr/bin");
    }

    #[test]
    fn wiring_wins_over_the_template() {
        let ports = [
            PortAlloc { name: "http".into(), protocol: Protocol::Http, app: 41001, public: 31001 },
            PortAlloc {
                name: "admin-api".into(),
                protocol: Protocol::Tcp,
                app: 41002,
                public: 31002,
            },
        ];
        let ups =
            [Upstream { service: "cart-db".into(), namespace: None, port: None, local_port: 9001 }];
        let w = Wiring {
            namespace: "shop",
            instance: "web-abcde-fghij",
            service: "web",
            node: "n1",
            ip: Ipv4Addr::new(127, 1, 0, 7),
            ports: &ports,
            outbound: 15001,
            admin: 15000,
            upstreams: &ups,
        };
        let template =
            BTreeMap::from([("PORT".to_string(), "1".to_string()), ("LOG".into(), "debug".into())]);
        let env: BTreeMap<_, _> =
            app_env(&w, &[("PATH".into(), "/bin".into())], &template).into_iter().collect();
        assert_eq!(env["PORT"], "41001");
        assert_eq!(env["PORT_HTTP"], "41001");
        assert_eq!(env["PORT_ADMIN_API"], "41002");
        assert_eq!(env["LOG"], "debug");
        assert_eq!(env["PATH"], "/bin");
        assert_eq!(env["WEFT_IP"], "127.1.0.7");
        assert_eq!(env["HTTP_PROXY"], "http://127.0.0.1:15001");
        assert_eq!(env["http_proxy"], "http://127.0.0.1:15001");
        assert_eq!(env["NO_PROXY"], "localhost,127.0.0.1");
        assert_eq!(env["WEFT_SIDECAR_ADMIN"], "127.0.0.1:15000");
        assert_eq!(env["WEFT_UPSTREAM_CART_DB"], "127.1.0.7:9001");
        assert_eq!(env["WEFT_SERVICE"], "web");
    }
}
