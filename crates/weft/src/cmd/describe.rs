//! `weft describe`: one object, for people: identity, what it wants, what it is, and why.

use std::fmt::Write as _;

use serde_json::Value;
use weft_api::KindInfo;

use crate::cmd::get::resolve_kind;
use crate::connect::Connection;
use crate::output;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  weft describe deploy catalog\n  weft describe inst catalog-7d4f9-x2k8p"
)]
pub struct DescribeArgs {
    pub kind: String,
    pub name: String,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
}

pub async fn run(conn: &Connection, args: DescribeArgs) -> anyhow::Result<()> {
    let kind = resolve_kind(&args.kind)?;
    let client = conn.client()?;
    let ns = kind.namespaced.then_some(args.namespace.as_str());
    let obj = client.get_value(kind, ns, &args.name).await?;
    print!("{}", describe(kind, &obj));
    Ok(())
}

fn get<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |cur, p| cur.get(p).unwrap_or(&Value::Null))
}

fn text(v: &Value, path: &[&str]) -> String {
    match get(v, path) {
        Value::Null => "<none>".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn map_line(v: &Value) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(&v.to_string())))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "<none>".into(),
    }
}

/// Renders the description.
pub fn describe(kind: &KindInfo, o: &Value) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| {
        let _ = writeln!(out, "{:<18}{v}", format!("{k}:"));
    };
    line(&mut out, "Name", text(o, &["metadata", "name"]));
    if kind.namespaced {
        line(&mut out, "Namespace", text(o, &["metadata", "namespace"]));
    }
    line(&mut out, "Kind", kind.kind.to_string());
    line(&mut out, "Labels", map_line(get(o, &["metadata", "labels"])));
    if get(o, &["metadata", "annotations"]).is_object() {
        line(&mut out, "Annotations", map_line(get(o, &["metadata", "annotations"])));
    }
    let created = text(o, &["metadata", "creationTimestamp"]);
    line(&mut out, "Created", format!("{created} ({} ago)", output::age(&created)));
    line(&mut out, "Generation", text(o, &["metadata", "generation"]));
    line(&mut out, "ResourceVersion", text(o, &["metadata", "resourceVersion"]));
    match kind.kind {
        "Deployment" => {
            line(
                &mut out,
                "Replicas",
                format!(
                    "{} desired | {} updated | {} ready | {} available",
                    text(o, &["spec", "replicas"]),
                    get(o, &["status", "updatedReplicas"]).as_i64().unwrap_or(0),
                    get(o, &["status", "readyReplicas"]).as_i64().unwrap_or(0),
                    get(o, &["status", "availableReplicas"]).as_i64().unwrap_or(0)
                ),
            );
            line(
                &mut out,
                "Strategy",
                format!(
                    "RollingUpdate (maxSurge {}, maxUnavailable {})",
                    text(o, &["spec", "strategy", "maxSurge"]),
                    text(o, &["spec", "strategy", "maxUnavailable"])
                ),
            );
        }
        "Service" => {
            line(&mut out, "Selector", map_line(get(o, &["spec", "selector"])));
            line(&mut out, "Balancer", text(o, &["spec", "traffic", "loadBalancer"]));
            line(&mut out, "Timeout", text(o, &["spec", "traffic", "timeout"]));
        }
        "Autoscaler" => {
            line(
                &mut out,
                "Target",
                format!("Deployment/{}", text(o, &["spec", "target", "name"])),
            );
            line(
                &mut out,
                "Replicas",
                format!(
                    "min {} | max {} | current {} | desired {}",
                    text(o, &["spec", "minReplicas"]),
                    text(o, &["spec", "maxReplicas"]),
                    get(o, &["status", "currentReplicas"]).as_i64().unwrap_or(0),
                    get(o, &["status", "desiredReplicas"]).as_i64().unwrap_or(0)
                ),
            );
            if get(o, &["status", "mode"]).is_string() {
                line(&mut out, "Mode", text(o, &["status", "mode"]));
            }
            line(&mut out, "Vertical", vertical_line(o));
            if let Some(t) = get(o, &["status", "lastScaleTime"]).as_str() {
                line(&mut out, "Last scale", format!("{t} ({} ago)", output::age(t)));
            }
            line(&mut out, "Metrics", metrics_line(get(o, &["status", "currentMetrics"])));
        }
        "Instance" => {
            line(&mut out, "Deployment", text(o, &["spec", "deployment"]));
            line(&mut out, "Node", text(o, &["spec", "node"]));
            line(&mut out, "Phase", text(o, &["status", "phase"]));
            line(&mut out, "Ready", text(o, &["status", "ready"]));
            line(&mut out, "Restarts", text(o, &["status", "restarts"]));
            if get(o, &["status", "reason"]).is_string() {
                line(&mut out, "Reason", text(o, &["status", "reason"]));
            }
            if get(o, &["status", "message"]).is_string() {
                line(&mut out, "Message", text(o, &["status", "message"]));
            }
        }
        "AuthorizationPolicy" => {
            line(
                &mut out,
                "Target",
                format!("Service/{}", text(o, &["spec", "target", "service"])),
            );
            line(&mut out, "Action", text(o, &["spec", "action"]));
        }
        "MeshConfig" => {
            line(&mut out, "mTLS", text(o, &["spec", "mtls"]));
            line(&mut out, "Authorization default", text(o, &["spec", "authorization", "default"]));
        }
        "Node" => {
            line(&mut out, "Address", text(o, &["status", "address"]));
            line(&mut out, "Ready", text(o, &["status", "ready"]));
            line(&mut out, "Heartbeat", text(o, &["status", "heartbeatTime"]));
            line(&mut out, "Capacity", map_line(get(o, &["status", "capacity"])));
            line(&mut out, "Allocatable", map_line(get(o, &["status", "allocatable"])));
            if get(o, &["spec", "pool"]).is_string() {
                line(&mut out, "Pool", text(o, &["spec", "pool"]));
            }
        }
        "NodePool" => {
            line(&mut out, "Provider", text(o, &["spec", "provider"]));
            line(
                &mut out,
                "Nodes",
                format!(
                    "min {} | max {} | current {} | desired {}",
                    text(o, &["spec", "minNodes"]),
                    text(o, &["spec", "maxNodes"]),
                    get(o, &["status", "current"]).as_i64().unwrap_or(0),
                    get(o, &["status", "desired"]).as_i64().unwrap_or(0)
                ),
            );
            line(&mut out, "Template", map_line(get(o, &["spec", "template", "allocatable"])));
            line(
                &mut out,
                "Scale down",
                format!(
                    "under {} of allocatable for {}",
                    text(o, &["spec", "scaleDown", "utilizationThreshold"]),
                    text(o, &["spec", "scaleDown", "unneededTime"])
                ),
            );
            if let Some(m) = get(o, &["status", "message"]).as_str() {
                line(&mut out, "Message", m.to_string());
            }
        }
        _ => {}
    }
    section(&mut out, "Spec", get(o, &["spec"]));
    let status = get(o, &["status"]);
    let mut status_rest = status.clone();
    if let Some(m) = status_rest.as_object_mut() {
        m.remove("conditions");
        m.remove("decisions");
        if kind.kind == "NodePool" {
            // Shown below, as a table.
            m.remove("nodes");
        }
        if kind.kind == "Autoscaler" {
            // Shown above, with units.
            m.remove("currentMetrics");
        }
    }
    section(&mut out, "Status", &status_rest);
    if let Some(conds) = get(status, &["conditions"]).as_array().filter(|c| !c.is_empty()) {
        out.push_str("Conditions:\n");
        let rows: Vec<Vec<String>> = conds
            .iter()
            .map(|c| {
                vec![
                    text(c, &["type"]),
                    text(c, &["status"]),
                    get(c, &["reason"]).as_str().unwrap_or("").to_string(),
                    get(c, &["message"]).as_str().unwrap_or("").to_string(),
                ]
            })
            .collect();
        indent(&mut out, &output::table(&["TYPE", "STATUS", "REASON", "MESSAGE"], &rows));
    }
    if let Some(nodes) = get(status, &["nodes"]).as_array().filter(|n| !n.is_empty()) {
        out.push_str("Pool nodes:\n");
        let rows: Vec<Vec<String>> = nodes
            .iter()
            .map(|n| {
                let util = get(n, &["utilization"]).as_f64().unwrap_or(0.0);
                vec![
                    text(n, &["name"]),
                    text(n, &["state"]),
                    format!("{:.0}%", util * 100.0),
                    text(n, &["instances"]),
                ]
            })
            .collect();
        indent(&mut out, &output::table(&["NAME", "STATE", "REQUESTED", "INSTANCES"], &rows));
    }
    if let Some(decisions) = get(status, &["decisions"]).as_array().filter(|d| !d.is_empty()) {
        out.push_str("Scaling decisions (newest first):\n");
        let rows: Vec<Vec<String>> = decisions
            .iter()
            .map(|d| {
                vec![
                    output::age(&text(d, &["time"])),
                    format!("{} → {}", text(d, &["from"]), text(d, &["to"])),
                    text(d, &["reason"]),
                ]
            })
            .collect();
        let what = if kind.kind == "NodePool" { "NODES" } else { "REPLICAS" };
        indent(&mut out, &output::table(&["AGO", what, "REASON"], &rows));
    }
    out
}

/// An autoscaler's vertical recommendation: mode, cpu and memory as `target (lower–upper)`,
/// and what was done with it.
fn vertical_line(o: &Value) -> String {
    let mode = get(o, &["spec", "vertical", "mode"]).as_str().unwrap_or("off").to_string();
    let v = get(o, &["status", "vertical"]);
    let range = |r: &str| {
        let r = get(v, &[r]);
        r.is_object().then(|| {
            format!("{} ({}–{})", text(r, &["target"]), text(r, &["lower"]), text(r, &["upper"]))
        })
    };
    let mut parts = vec![format!("mode {mode}")];
    match (range("cpu"), range("memory")) {
        (Some(c), Some(m)) => parts.push(format!("recommends cpu {c}, memory {m}")),
        _ => parts.push("no recommendation yet".into()),
    }
    if get(v, &["oomBumped"]).as_bool() == Some(true) {
        parts.push("memory raised after an out-of-memory kill".into());
    }
    if let Some(m) = get(v, &["message"]).as_str() {
        parts.push(m.to_string());
    }
    parts.join("; ")
}

/// An autoscaler's `status.currentMetrics`, per instance against the target: cpu and memory
/// in percent of the request, as the spec's `targetUtilization`.
fn metrics_line(v: &Value) -> String {
    let Some(list) = v.as_array().filter(|l| !l.is_empty()) else {
        return "<none yet>".into();
    };
    list.iter()
        .map(|m| {
            let kind = text(m, &["type"]);
            let pct = if kind == "cpu" || kind == "memory" { "%" } else { "" };
            let num = |k: &str| get(m, &[k]).as_f64().unwrap_or(0.0);
            format!(
                "{kind} {:.2}{pct} per instance (target {}{pct})",
                num("current"),
                get(m, &["target"]),
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn section(out: &mut String, title: &str, v: &Value) {
    let empty = v.is_null() || v.as_object().is_some_and(|m| m.is_empty());
    if empty {
        let _ = writeln!(out, "{title}:{}<none>", " ".repeat(18 - title.len() - 1));
        return;
    }
    let _ = writeln!(out, "{title}:");
    indent(out, &output::yaml(v));
}

fn indent(out: &mut String, text: &str) {
    for l in text.lines() {
        let _ = writeln!(out, "  {l}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn describes_an_instance_with_reason() {
        let o = json!({
            "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"deployment": "web", "template": {"command": ["x"]}},
            "status": {"phase": "Pending", "reason": "Unschedulable", "message": "no node has 64 cpu free",
                       "conditions": [{"type": "Scheduled", "status": "False", "reason": "Unschedulable"}]}
        });
        let d = describe(&weft_api::kinds::INSTANCE, &o);
        assert!(d.contains("Reason:           Unschedulable"), "{d}");
        assert!(d.contains("no node has 64 cpu free"));
        assert!(d.contains("Conditions:"));
    }

    #[test]
    fn describes_an_autoscaler_with_metrics_and_decisions() {
        let o = json!({
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"target": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 5},
            "status": {"currentReplicas": 4, "desiredReplicas": 4, "mode": "stable",
                       "lastScaleTime": "2026-01-01T00:01:00Z",
                       "currentMetrics": [{"type": "concurrency", "current": 8.75, "target": 10.0},
                                          {"type": "cpu", "current": 42.0, "target": 50.0}],
                       "decisions": [{"time": "2026-01-01T00:01:00Z", "from": 1, "to": 4,
                                      "reason": "concurrency 35.00 per instance (target 10.00) over 2s asks for 4"}],
                       "conditions": [{"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound"}]}
        });
        let d = describe(&weft_api::kinds::AUTOSCALER, &o);
        assert!(d.contains("min 1 | max 5 | current 4 | desired 4"), "{d}");
        assert!(d.contains("Mode:             stable"), "{d}");
        assert!(d.contains("concurrency 8.75 per instance (target 10.0)"), "{d}");
        assert!(d.contains("cpu 42.00% per instance (target 50.0%)"), "{d}");
        assert!(d.contains("1 → 4"), "{d}");
        assert!(d.contains("asks for 4"), "{d}");
        assert!(!d.contains("currentMetrics"), "{d}");
    }
}
