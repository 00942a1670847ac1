//! The static `--config FILE`: one YAML document with the instance's identity, its listeners
//! and the Services and Endpoints it may call, exactly as the api serves them.
//!
//! ```yaml
//! namespace: default
//! labels: { deployment: catalog }
//! admin: 127.0.0.1:15000
//! inbound: [ { port: http, listen: 127.0.0.1:31001, app: 127.0.0.1:41001, protocol: http } ]
//! outbound: { listen: 127.0.0.1:15001 }
//! upstreams: [ { service: cart, listen: 127.0.0.1:9001 } ]
//! objects:
//!   - { apiVersion: weft/v1, kind: Service, metadata: {name: cart}, spec: {...} }
//!   - { apiVersion: weft/v1, kind: Endpoints, metadata: {name: cart}, spec: {addresses: [...]} }
//! ```
//!
//! Unknown fields are errors, and every object goes through `weft_api::kinds::normalize`, the
//! same code the api server runs. Every error is one line naming the file, the field and (for
//! anything the YAML reader saw) the line and column.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;
use serde_json::Value;
use weft_api::kinds::template::{PortRef, Protocol};

use super::{InboundSpec, UpstreamPortSpec};
use crate::config::{ConfigError, bad};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    admin: Option<String>,
    #[serde(default)]
    inbound: Vec<FileInbound>,
    #[serde(default)]
    outbound: Option<FileOutbound>,
    #[serde(default)]
    upstreams: Vec<FileUpstream>,
    #[serde(default)]
    objects: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileInbound {
    port: String,
    listen: String,
    app: String,
    #[serde(default)]
    protocol: Protocol,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOutbound {
    listen: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUpstream {
    service: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    port: Option<PortRef>,
    listen: String,
}

/// What a file holds, checked.
#[derive(Debug, Clone)]
pub struct StaticFile {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub admin: Option<SocketAddr>,
    pub inbound: Vec<InboundSpec>,
    pub outbound: Option<SocketAddr>,
    pub upstream_ports: Vec<UpstreamPortSpec>,
    /// Normalised Services and Endpoints.
    pub objects: Vec<Value>,
}

/// Reads and checks a configuration file; errors name the file (`--config: FILE: ...`).
pub fn load(path: &str) -> Result<StaticFile, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad("config", format!("cannot read {path}: {e}")))?;
    parse(&text, path)
}

/// Checks the text of a configuration file; `name` is how errors refer to it.
pub fn parse(text: &str, name: &str) -> Result<StaticFile, ConfigError> {
    let fail = |field: &str, message: String| {
        let at = if field.is_empty() { String::new() } else { format!("{field}: ") };
        bad("config", format!("{name}: {at}{message}"))
    };
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let file: FileConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let location =
            inner.location().map(|l| format!("line {}, column {}: ", l.line(), l.column()));
        // serde_yaml appends the location to its message; it is said once, in front.
        let mut message = inner.to_string();
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        let field = if path == "." { String::new() } else { path };
        fail(&field, format!("{}{message}", location.unwrap_or_default()))
    })?;
    let namespace = file.namespace.unwrap_or_else(|| weft_api::DEFAULT_NAMESPACE.to_string());
    if let Err(e) = weft_api::validate::dns_label(&namespace) {
        return Err(fail("namespace", format!("'{namespace}' {e}")));
    }
    let addr = |field: String, text: &str| {
        crate::config::parse_addr("config", text).map_err(|e| fail(&field, e.message))
    };
    let admin = file.admin.as_deref().map(|a| addr("admin".into(), a)).transpose()?;
    let outbound =
        file.outbound.as_ref().map(|o| addr("outbound.listen".into(), &o.listen)).transpose()?;
    let mut inbound = Vec::new();
    for (i, f) in file.inbound.iter().enumerate() {
        if let Err(e) = weft_api::validate::dns_label(&f.port) {
            return Err(fail(&format!("inbound[{i}].port"), format!("'{}' {e}", f.port)));
        }
        inbound.push(InboundSpec {
            port: f.port.clone(),
            listen: addr(format!("inbound[{i}].listen"), &f.listen)?,
            app: addr(format!("inbound[{i}].app"), &f.app)?,
            protocol: f.protocol,
        });
    }
    let mut upstream_ports = Vec::new();
    for (i, u) in file.upstreams.iter().enumerate() {
        for (what, v) in [("service", Some(&u.service)), ("namespace", u.namespace.as_ref())] {
            if let Some(v) = v
                && let Err(e) = weft_api::validate::dns_label(v)
            {
                return Err(fail(&format!("upstreams[{i}].{what}"), format!("'{v}' {e}")));
            }
        }
        upstream_ports.push(UpstreamPortSpec {
            service: u.service.clone(),
            namespace: u.namespace.clone(),
            port: u.port.clone(),
            listen: addr(format!("upstreams[{i}].listen"), &u.listen)?,
        });
    }
    let mut objects = Vec::new();
    for (i, mut object) in file.objects.into_iter().enumerate() {
        let field = format!("objects[{i}]");
        let what = weft_api::kinds::describe_raw(&object)
            .map(|d| format!("{field} ({d})"))
            .unwrap_or(field.clone());
        // Objects without a namespace belong to the instance's.
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut)
            && !meta.contains_key("namespace")
        {
            meta.insert("namespace".into(), Value::String(namespace.clone()));
        }
        let (kind, normalized) = weft_api::kinds::normalize(object).map_err(|e| {
            let at = e.field.as_deref().map(|f| format!("{field}.{f}")).unwrap_or(field.clone());
            // ApiError's message repeats its field first; the file's path replaces it.
            let message = match &e.field {
                Some(f) => {
                    e.message.strip_prefix(&format!("{f}: ")).unwrap_or(&e.message).to_string()
                }
                None => e.message.clone(),
            };
            fail(&at, format!("{message} (in {what})"))
        })?;
        if kind != &weft_api::kinds::SERVICE
            && kind != &weft_api::kinds::ENDPOINTS
            && kind != &weft_api::kinds::AUTHORIZATION_POLICY
        {
            return Err(fail(
                &format!("objects[{i}].kind"),
                format!(
                    "a {} is not used by the proxy (use Service, Endpoints and \
                     AuthorizationPolicy)",
                    kind.kind
                ),
            ));
        }
        objects.push(normalized);
    }
    Ok(StaticFile {
        namespace,
        labels: file.labels,
        admin,
        inbound,
        outbound,
        upstream_ports,
        objects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
namespace: default
labels: { deployment: catalog }
admin: 127.0.0.1:15000
inbound: [ { port: http, listen: 127.0.0.1:31001, app: 127.0.0.1:41001 } ]
outbound: { listen: 127.0.0.1:15001 }
upstreams: [ { service: cart, port: 80, listen: 127.0.0.1:9001 } ]
objects:
  - apiVersion: weft/v1
    kind: Service
    metadata: { name: cart }
    spec:
      selector: { deployment: cart }
      ports: [ { name: http, port: 80 } ]
      traffic: { loadBalancer: round-robin, timeout: 2s }
  - apiVersion: weft/v1
    kind: Endpoints
    metadata: { name: cart }
    spec: { addresses: [ { instance: cart-1, ip: 127.0.0.1, ports: { http: 41002 } } ] }
"#;

    #[test]
    fn reads_a_good_file() {
        let f = parse(GOOD, "sidecar.yaml").unwrap();
        assert_eq!(f.namespace, "default");
        assert_eq!(f.inbound[0].protocol, Protocol::Http);
        assert_eq!(f.outbound, Some("127.0.0.1:15001".parse().unwrap()));
        assert_eq!(f.upstream_ports[0].port, Some(PortRef::Number(80)));
        assert_eq!(f.objects.len(), 2);
        // Normalised: defaults written out, namespace filled in.
        assert_eq!(f.objects[0]["metadata"]["namespace"], "default");
        assert_eq!(f.objects[0]["spec"]["traffic"]["retries"]["attempts"], 2);
    }

    fn error(text: &str) -> String {
        let e = parse(text, "sidecar.yaml").unwrap_err();
        assert_eq!(e.flag, "config");
        let line = e.to_string();
        assert!(!line.contains('\n'), "one line: {line}");
        assert!(line.starts_with("--config: sidecar.yaml: "), "{line}");
        line
    }

    #[test]
    fn errors_name_file_field_and_position() {
        let e = error("inbound: [ { port: http, lisen: 127.0.0.1:1, app: 127.0.0.1:2 } ]\n");
        assert!(e.contains("inbound[0]") && e.contains("unknown field `lisen`"), "{e}");
        assert!(e.contains("line 1, column"), "{e}");
        let e = error("namespace: [unclosed\n");
        assert!(e.contains("line "), "{e}");
        let e = error("outbound: { listen: nowhere }\n");
        assert!(e.contains("outbound.listen: ") && e.contains("'nowhere'"), "{e}");
        let e = error("nonsense: 1\n");
        assert!(e.contains("unknown field `nonsense`"), "{e}");
        let bad_port = GOOD
            .replace("ports: [ { name: http, port: 80 } ]", "ports: [ { name: http, port: 0 } ]");
        let e = error(&bad_port);
        assert!(e.contains("objects[0].spec.ports[0].port: must be between 1 and 65535"), "{e}");
        assert!(e.contains("(in objects[0] (Service cart))"), "{e}");
        let unknown = GOOD.replace("timeout: 2s }", "timeout: 2s, retrys: 1 }");
        let e = error(&unknown);
        assert!(e.contains("objects[0].spec.traffic") && e.contains("retrys"), "{e}");
        let e = error(
            "objects: [ { apiVersion: weft/v1, kind: Deployment, metadata: {name: d}, spec: {template: {command: [x]}} } ]\n",
        );
        assert!(e.contains("objects[0].kind: a Deployment is not used"), "{e}");
        let e = load("/nonexistent/sidecar.yaml").unwrap_err().to_string();
        assert!(e.starts_with("--config: cannot read /nonexistent/sidecar.yaml"), "{e}");
    }
}
