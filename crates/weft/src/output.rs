//! How objects are shown: kubectl-like tables per kind, and YAML/JSON.

use std::time::SystemTime;

use serde_json::Value;
use weft_api::KindInfo;

/// `-o` formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table (the default).
    Table,
    /// A table with more columns.
    Wide,
    Yaml,
    Json,
    /// kind/name, one per line.
    Name,
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = v;
    for p in path {
        cur = cur.get(p).unwrap_or(&Value::Null);
    }
    cur
}

fn text(v: &Value, path: &[&str]) -> String {
    match s(v, path) {
        Value::Null => String::new(),
        Value::String(t) => t.clone(),
        Value::Number(n) => number(n),
        other => other.to_string(),
    }
}

/// `200`, not `200.0`: YAML and JSON readers parse whole floats back as floats anyway.
fn number(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => n.to_string(),
    }
}

fn num(v: &Value, path: &[&str]) -> i64 {
    s(v, path).as_i64().unwrap_or(0)
}

/// How long ago an RFC 3339 time was, kubectl style: `45s`, `12m`, `3h`, `5d`.
pub fn age(timestamp: &str) -> String {
    let Ok(t) = humantime::parse_rfc3339_weak(timestamp) else { return "?".into() };
    let secs = SystemTime::now().duration_since(t).map_or(0, |d| d.as_secs());
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// The columns of a kind's table.
pub fn headers(kind: &KindInfo, wide: bool, all_namespaces: bool) -> Vec<&'static str> {
    let mut h: Vec<&'static str> = Vec::new();
    if all_namespaces && kind.namespaced {
        h.push("NAMESPACE");
    }
    h.extend(match kind.kind {
        "Deployment" => vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "Service" => vec!["NAME", "PORTS", "BALANCER", "TIMEOUT", "AGE"],
        "Autoscaler" => vec!["NAME", "TARGET", "MIN", "MAX", "REPLICAS", "METRICS", "AGE"],
        "Instance" => vec!["NAME", "READY", "PHASE", "RESTARTS", "AGE"],
        "Endpoints" => vec!["NAME", "ENDPOINTS", "AGE"],
        "Node" => vec!["NAME", "STATUS", "CPU", "MEMORY", "AGE"],
        "NodePool" => vec!["NAME", "PROVIDER", "MIN", "MAX", "NODES", "DESIRED", "AGE"],
        "AuthorizationPolicy" => vec!["NAME", "TARGET", "ACTION", "RULES", "AGE"],
        "MeshConfig" => vec!["NAME", "MTLS", "AUTHZ-DEFAULT", "AGE"],
        _ => vec!["NAME", "AGE"],
    });
    if wide {
        h.extend(match kind.kind {
            "Deployment" => vec!["COMMAND", "PORTS"],
            "Service" => vec!["SELECTOR", "RETRIES", "RATE-LIMIT"],
            "Autoscaler" => vec!["MODE", "LAST-SCALE"],
            "Instance" => vec!["NODE", "ADDRESS", "PORTS", "REASON"],
            "Endpoints" => vec!["NOT-READY"],
            "Node" => vec!["ADDRESS", "ALLOCATABLE", "CGROUPS"],
            "NodePool" => vec!["TEMPLATE", "MESSAGE"],
            _ => vec![],
        });
    }
    h
}

/// One object's row, matching [`headers`].
pub fn row(kind: &KindInfo, o: &Value, wide: bool, all_namespaces: bool) -> Vec<String> {
    let mut r = Vec::new();
    if all_namespaces && kind.namespaced {
        r.push(text(o, &["metadata", "namespace"]));
    }
    let name = text(o, &["metadata", "name"]);
    let age = age(&text(o, &["metadata", "creationTimestamp"]));
    match kind.kind {
        "Deployment" => {
            let want = num(o, &["spec", "replicas"]);
            r.extend([
                name,
                format!("{}/{want}", num(o, &["status", "readyReplicas"])),
                num(o, &["status", "updatedReplicas"]).to_string(),
                num(o, &["status", "availableReplicas"]).to_string(),
                age,
            ]);
            if wide {
                let cmd = s(o, &["spec", "template", "command"])
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
                    .unwrap_or_default();
                let ports = list_of(s(o, &["spec", "template", "ports"]), |p| {
                    format!("{}:{}", text(p, &["name"]), text(p, &["port"]))
                });
                r.extend([cmd, ports]);
            }
        }
        "Service" => {
            let ports = list_of(s(o, &["spec", "ports"]), |p| {
                let target = text(p, &["targetPort"]);
                let target = if target.is_empty() { text(p, &["port"]) } else { target };
                format!("{}→{}/{}", text(p, &["port"]), target, text(p, &["protocol"]))
            });
            r.extend([
                name,
                ports,
                text(o, &["spec", "traffic", "loadBalancer"]),
                text(o, &["spec", "traffic", "timeout"]),
                age,
            ]);
            if wide {
                let sel = s(o, &["spec", "selector"])
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                let retries = format!("{}×", text(o, &["spec", "traffic", "retries", "attempts"]));
                let rl = match text(o, &["spec", "traffic", "rateLimit", "requestsPerSecond"]) {
                    r if r.is_empty() => "-".into(),
                    r => format!("{r}/s"),
                };
                r.extend([sel, retries, rl]);
            }
        }
        "Autoscaler" => {
            let metrics = list_of(s(o, &["spec", "metrics"]), |m| {
                let t = text(m, &["type"]);
                match text(m, &["targetUtilization"]) {
                    u if u.is_empty() => format!("{t}:{}", text(m, &["target"])),
                    u => format!("{t}:{u}%"),
                }
            });
            r.extend([
                name,
                format!("deploy/{}", text(o, &["spec", "target", "name"])),
                num(o, &["spec", "minReplicas"]).to_string(),
                num(o, &["spec", "maxReplicas"]).to_string(),
                num(o, &["status", "currentReplicas"]).to_string(),
                metrics,
                age,
            ]);
            if wide {
                let last = text(o, &["status", "lastScaleTime"]);
                r.extend([
                    or_dash(text(o, &["status", "mode"])),
                    if last.is_empty() { "-".into() } else { crate::output::age(&last) },
                ]);
            }
        }
        "Instance" => {
            let ready =
                if s(o, &["status", "ready"]).as_bool() == Some(true) { "1/1" } else { "0/1" };
            let phase = text(o, &["status", "phase"]);
            let reason = text(o, &["status", "reason"]);
            let shown =
                if reason.is_empty() || phase == "Running" { phase } else { reason.clone() };
            r.extend([
                name,
                ready.into(),
                or_dash(shown),
                num(o, &["status", "restarts"]).to_string(),
                age,
            ]);
            if wide {
                let ports = s(o, &["status", "ports"])
                    .as_object()
                    .map(|m| {
                        m.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(",")
                    })
                    .unwrap_or_default();
                r.extend([
                    or_dash(text(o, &["spec", "node"])),
                    or_dash(text(o, &["status", "address"])),
                    or_dash(ports),
                    or_dash(reason),
                ]);
            }
        }
        "Endpoints" => {
            let addrs = s(o, &["spec", "addresses"]).as_array().cloned().unwrap_or_default();
            let ready: Vec<String> = addrs
                .iter()
                .filter(|a| a.get("ready").and_then(Value::as_bool) != Some(false))
                .map(|a| {
                    let port = a
                        .get("ports")
                        .and_then(Value::as_object)
                        .and_then(|m| m.values().next().cloned());
                    match port {
                        Some(p) => format!("{}:{p}", text(a, &["ip"])),
                        None => text(a, &["ip"]),
                    }
                })
                .collect();
            let shown = match ready.len() {
                0 => "<none>".to_string(),
                1..=3 => ready.join(","),
                n => format!("{} + {} more", ready[..3].join(","), n - 3),
            };
            r.extend([name, shown, age]);
            if wide {
                r.push((addrs.len() - ready.len()).to_string());
            }
        }
        "Node" => {
            let ready = s(o, &["status", "ready"]).as_bool() == Some(true);
            let mut status = if ready { "Ready".to_string() } else { "NotReady".to_string() };
            if s(o, &["spec", "unschedulable"]).as_bool() == Some(true) {
                status.push_str(",SchedulingDisabled");
            }
            r.extend([
                name,
                status,
                or_dash(text(o, &["status", "capacity", "cpu"])),
                or_dash(text(o, &["status", "capacity", "memory"])),
                age,
            ]);
            if wide {
                r.extend([
                    or_dash(text(o, &["status", "address"])),
                    format!(
                        "cpu={},memory={}",
                        text(o, &["status", "allocatable", "cpu"]),
                        text(o, &["status", "allocatable", "memory"])
                    ),
                    if s(o, &["status", "cgroups"]).as_bool() == Some(true) {
                        "yes".into()
                    } else {
                        "no".into()
                    },
                ]);
            }
        }
        "NodePool" => {
            r.extend([
                name,
                text(o, &["spec", "provider"]),
                text(o, &["spec", "minNodes"]),
                text(o, &["spec", "maxNodes"]),
                s(o, &["status", "current"]).as_i64().unwrap_or(0).to_string(),
                s(o, &["status", "desired"]).as_i64().unwrap_or(0).to_string(),
                age,
            ]);
            if wide {
                r.extend([
                    format!(
                        "cpu={},memory={}",
                        text(o, &["spec", "template", "allocatable", "cpu"]),
                        text(o, &["spec", "template", "allocatable", "memory"])
                    ),
                    or_dash(text(o, &["status", "message"])),
                ]);
            }
        }
        "AuthorizationPolicy" => {
            let rules = s(o, &["spec", "rules"]).as_array().map_or(0, Vec::len);
            r.extend([
                name,
                format!("svc/{}", text(o, &["spec", "target", "service"])),
                text(o, &["spec", "action"]),
                rules.to_string(),
                age,
            ]);
        }
        "MeshConfig" => r.extend([
            name,
            text(o, &["spec", "mtls"]),
            text(o, &["spec", "authorization", "default"]),
            age,
        ]),
        _ => r.extend([name, age]),
    }
    r
}

fn or_dash(s: String) -> String {
    if s.is_empty() { "-".into() } else { s }
}

fn list_of(v: &Value, f: impl Fn(&Value) -> String) -> String {
    let items: Vec<String> = v.as_array().map(|a| a.iter().map(f).collect()).unwrap_or_default();
    if items.is_empty() { "-".into() } else { items.join(",") }
}

/// Renders rows under headers, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            out.push_str(c);
            if i + 1 < n {
                out.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
            }
        }
        out.push('\n');
    };
    line(headers.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// Rows only (for watch updates after the first table), padded like the header widths.
pub fn rows_only(headers: &[&str], rows: &[Vec<String>]) -> String {
    let full = table(headers, rows);
    full.lines().skip(1).map(|l| format!("{l}\n")).collect()
}

pub fn yaml(v: &Value) -> String {
    weft_api::codec::to_yaml(v)
}

pub fn json(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// `kind/name` as kubectl prints it.
pub fn kind_name(kind: &KindInfo, o: &Value) -> String {
    format!("{}/{}", kind.singular, text(o, &["metadata", "name"]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align() {
        let t = table(
            &["NAME", "AGE"],
            &[vec!["a-long-name".into(), "5s".into()], vec!["b".into(), "10m".into()]],
        );
        let lines: Vec<_> = t.lines().collect();
        assert_eq!(lines[0], "NAME          AGE");
        assert_eq!(lines[1], "a-long-name   5s");
        assert_eq!(lines[2], "b             10m");
    }

    #[test]
    fn deployment_rows() {
        let d = json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": {"replicas": 3}, "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let r = row(&weft_api::kinds::DEPLOYMENT, &d, false, true);
        assert_eq!(&r[..5], &["shop", "web", "2/3", "3", "2"]);
        assert_eq!(headers(&weft_api::kinds::DEPLOYMENT, false, true).len(), r.len());
        let w = row(&weft_api::kinds::DEPLOYMENT, &d, true, false);
        assert_eq!(headers(&weft_api::kinds::DEPLOYMENT, true, false).len(), w.len());
    }

    #[test]
    fn every_kind_has_matching_columns() {
        for k in weft_api::kinds::KINDS {
            for wide in [false, true] {
                for all in [false, true] {
                    assert_eq!(
                        headers(k, wide, all).len(),
                        row(k, &json!({}), wide, all).len(),
                        "{}",
                        k.kind
                    );
                }
            }
        }
    }

    #[test]
    fn ages() {
        let now = humantime::format_rfc3339_seconds(
            SystemTime::now() - std::time::Duration::from_secs(150),
        )
        .to_string();
        assert_eq!(age(&now), "2m");
        assert_eq!(age("garbage"), "?");
    }
}
