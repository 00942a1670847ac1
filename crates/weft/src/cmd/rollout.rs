//! `weft rollout status deploy NAME`: follow a rollout until it completes.

use std::time::Duration;

use futures::StreamExt;
use weft_api::Deployment;
use weft_api::wire::EventType;

use crate::cmd::get::resolve_kind;
use crate::connect::Connection;
use crate::exit;

#[derive(Debug, clap::Subcommand)]
pub enum RolloutCommand {
    /// Wait until a deployment runs its current template on all replicas, showing progress
    #[command(after_help = "Example:\n  weft rollout status deploy catalog --timeout 2m")]
    Status {
        kind: String,
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Give up after this long (exit 1)
        #[arg(long, default_value = "5m")]
        timeout: String,
    },
}

/// Where a rollout stands, and the line to show for it.
pub fn progress(d: &Deployment) -> (bool, String) {
    let want = d.spec.replicas;
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(s) = &d.status else {
        return (false, "Waiting for the deployment controller to act on the deployment...".into());
    };
    if s.observed_generation < generation {
        return (false, "Waiting for the deployment controller to see the latest change...".into());
    }
    if s.updated_replicas < want {
        return (
            false,
            format!(
                "Waiting for rollout to finish: {} of {want} replicas run the new template...",
                s.updated_replicas
            ),
        );
    }
    if s.replicas > s.updated_replicas {
        return (
            false,
            format!(
                "Waiting for rollout to finish: {} old replicas are stopping...",
                s.replicas - s.updated_replicas
            ),
        );
    }
    if s.available_replicas < want {
        return (
            false,
            format!(
                "Waiting for rollout to finish: {} of {want} updated replicas are available...",
                s.available_replicas
            ),
        );
    }
    (true, format!("deployment \"{}\" successfully rolled out ({want} replicas)", d.metadata.name))
}

pub async fn run(conn: &Connection, cmd: RolloutCommand) -> anyhow::Result<()> {
    let RolloutCommand::Status { kind, name, namespace, timeout } = cmd;
    let kind = resolve_kind(&kind)?;
    if kind.kind != "Deployment" {
        return Err(exit::usage(format!(
            "rollout status applies to deployments, not {}",
            kind.plural
        )));
    }
    let timeout: Duration = timeout
        .parse::<weft_api::duration::Duration>()
        .map_err(|e| exit::usage(format!("--timeout: {e}")))?
        .as_std();
    let client = conn.client()?;
    let follow = async {
        let d: Deployment = client.get(Some(&namespace), &name).await?;
        let (done, line) = progress(&d);
        println!("{line}");
        if done {
            return Ok(());
        }
        let mut last = line;
        let after = d.metadata.revision();
        let mut events = client.watch(kind, Some(&namespace), Some(&name), None, after).await?;
        while let Some(ev) = events.next().await {
            let ev = ev?;
            match ev.kind {
                EventType::Deleted => {
                    anyhow::bail!("deployment/{name} was deleted during the rollout")
                }
                EventType::Bookmark => continue,
                EventType::Error => anyhow::bail!("the watch ended: {}", ev.object["message"]),
                _ => {}
            }
            let d: Deployment = serde_json::from_value(ev.object)?;
            let (done, line) = progress(&d);
            if line != last {
                println!("{line}");
                last = line;
            }
            if done {
                return Ok(());
            }
        }
        anyhow::bail!("the server ended the watch; run the command again")
    };
    match tokio::time::timeout(timeout, follow).await {
        Ok(r) => r,
        Err(_) => Err(exit::Exit {
            code: exit::FAILURE,
            message: format!("deployment/{name} did not finish rolling out within {}; see `weft describe deploy {name}`", humantime::format_duration(timeout)),
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(replicas: i32, generation: u64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "apiVersion": "weft/v1", "kind": "Deployment",
            "metadata": {"name": "web", "generation": generation},
            "spec": {"replicas": replicas, "template": {"command": ["x"]}},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn progress_lines() {
        assert!(!progress(&deploy(3, 2, json!({"observedGeneration": 1}))).0);
        let (done, line) = progress(&deploy(
            3,
            2,
            json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 1}),
        ));
        assert!(!done);
        assert_eq!(line, "Waiting for rollout to finish: 1 of 3 replicas run the new template...");
        let (_, line) = progress(&deploy(
            3,
            2,
            json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3}),
        ));
        assert!(line.contains("1 old replicas are stopping"), "{line}");
        let (_, line) = progress(&deploy(
            3,
            2,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2}),
        ));
        assert!(line.contains("2 of 3 updated replicas are available"), "{line}");
        let (done, _) = progress(&deploy(
            3,
            2,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
        ));
        assert!(done);
    }
}
