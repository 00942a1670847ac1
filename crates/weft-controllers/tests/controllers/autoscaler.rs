//! The metrics pipeline and the autoscaler against a real api server, the fake agent, and fake
//! sidecars: tiny HTTP servers on 127.0.0.1 serving canned Prometheus text that the test
//! changes as it goes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use weft_api::{Autoscaler, Deployment, Instance, Resource};
use weft_client::Client;
use weft_client::watcher::{self, Event};
use weft_controllers::Options;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(30);

/// How the fake sidecars answer.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// `in_flight` in total, shared evenly by the sidecars alive.
    Serve { in_flight: f64 },
    /// Accept and never answer (a stuck sidecar): the scrape must time out.
    Hang,
}

#[derive(Default)]
struct Shared {
    mode: Option<Mode>,
    /// Instance name → its server.
    alive: BTreeMap<String, JoinHandle<()>>,
}

/// A fake sidecar per ready instance of the watched deployment, published in the instance's
/// `status.sidecarAdmin` (the fake agent leaves a ready instance's status alone).
struct Sidecars {
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

impl Drop for Sidecars {
    fn drop(&mut self) {
        self.task.abort();
        for (_, t) in std::mem::take(&mut self.shared.lock().unwrap().alive) {
            t.abort();
        }
    }
}

impl Sidecars {
    fn start(client: &Client, deployment: &str, mode: Mode) -> Sidecars {
        let shared = Arc::new(Mutex::new(Shared { mode: Some(mode), alive: BTreeMap::new() }));
        let task = tokio::spawn(publish(client.clone(), deployment.to_string(), shared.clone()));
        Sidecars { shared, task }
    }

    fn set(&self, mode: Mode) {
        self.shared.lock().unwrap().mode = Some(mode);
    }
}

async fn publish(client: Client, deployment: String, shared: Arc<Mutex<Shared>>) {
    let stream = watcher::watcher(client.clone(), Instance::info(), watcher::Config::default());
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        let (items, deleted) = match ev {
            Ok(Event::Restarted(items)) => (items, false),
            Ok(Event::Applied(v)) => (vec![v], false),
            Ok(Event::Deleted(v)) => (vec![v], true),
            Err(_) => continue,
        };
        for v in items {
            let i: Instance = serde_json::from_value(v).unwrap();
            if i.spec.deployment != deployment {
                continue;
            }
            let name = i.metadata.name.clone();
            if deleted || i.spec.terminating {
                if let Some(t) = shared.lock().unwrap().alive.remove(&name) {
                    t.abort();
                }
                continue;
            }
            let has_admin = i.status.as_ref().is_some_and(|s| s.sidecar_admin.is_some());
            if !ready(&i) || has_admin {
                continue;
            }
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let server = tokio::spawn(serve(listener, shared.clone()));
            shared.lock().unwrap().alive.insert(name.clone(), server);
            let mut next = i.clone();
            next.metadata.resource_version = None;
            if let Some(s) = next.status.as_mut() {
                s.sidecar_admin = Some(addr);
            }
            let _ = client.put_status(&next).await;
        }
    }
}

async fn serve(listener: tokio::net::TcpListener, shared: Arc<Mutex<Shared>>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else { return };
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let (mode, n) = {
                let s = shared.lock().unwrap();
                (s.mode, s.alive.len().max(1))
            };
            let in_flight = match mode {
                Some(Mode::Serve { in_flight }) => in_flight / n as f64,
                _ => {
                    // Stuck: hold the connection without answering.
                    std::future::pending::<()>().await;
                    return;
                }
            };
            let body = format!(
                "# TYPE weft_requests_in_flight gauge\n\
weft_requests_in_flight{{direction=\"inbound\",service=\"web\"}} {in_flight}\n\
weft_requests_in_flight{{direction=\"outbound\",service=\"db\"}} 1000\n\
# TYPE weft_requests counter\n\
weft_requests_total{{direction=\"inbound\",service=\"web\",upstream=\"127.0.0.1:1\",code=\"200\"}} 7\n\
# EOF\n"
            );
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/openmetrics-text\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
        });
    }
}

fn autoscaler(name: &str, target: &str, min: i32, max: i32, metrics: Value) -> Value {
    json!({
        "apiVersion": "weft/v1", "kind": "Autoscaler",
        "metadata": {"name": name},
        "spec": {
            "target": {"name": target},
            "minReplicas": min, "maxReplicas": max,
            "metrics": metrics,
            "behavior": {
                "stableWindow": "2s",
                "tolerance": 0.1,
                "panic": {"window": "1s", "threshold": 100.0},
                "scaleToZeroGracePeriod": "1s",
                "scaleUp": {"cooldown": "0s", "stabilizationWindow": "0s",
                            "policies": [{"type": "Instances", "value": 10, "period": "1s"}]},
                "scaleDown": {"cooldown": "0s", "stabilizationWindow": "1s",
                              "policies": [{"type": "Percent", "value": 100, "period": "1s"}]}
            }
        }
    })
}

fn fast() -> Options {
    Options {
        scrape_interval: Duration::from_millis(250),
        scrape_timeout: Duration::from_millis(300),
        autoscaler_status_period: Duration::from_secs(1),
        ..options()
    }
}

fn cond<'a>(a: &'a Autoscaler, kind: &str) -> Option<&'a weft_api::meta::Condition> {
    a.status.as_ref()?.conditions.iter().find(|c| c.kind == kind)
}

/// Autoscaler rounds that finished, from the controllers' own metrics.
fn rounds(p: &Platform) -> u64 {
    let text = p.metrics.encode();
    text.lines()
        .filter(|l| l.starts_with("weft_controller_reconciles_total{controller=\"autoscaler\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits (polling the controllers' metrics, with a deadline) until `n` more autoscaler rounds
/// have run.
async fn more_rounds(p: &Platform, n: u64) {
    let from = rounds(p);
    let deadline = tokio::time::Instant::now() + WAIT;
    while rounds(p) < from + n {
        assert!(tokio::time::Instant::now() < deadline, "autoscaler rounds stalled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_up_and_down_on_sidecar_metrics_and_holds_when_they_stop() {
    let p = Platform::start(fast()).await;
    let _agent = FakeAgent::start(&p.client, &[("n1", "16", "32Gi")]).await;
    let sidecars = Sidecars::start(&p.client, "web", Mode::Serve { in_flight: 5.0 });
    let deployments = Mirror::<Deployment>::start(&p.client);
    let autoscalers = Mirror::<Autoscaler>::start(&p.client);
    let instances = Mirror::<Instance>::start(&p.client);
    let concurrency = json!([{"type": "concurrency", "target": 10}]);
    p.apply(&[deployment("web", 1, "v1", json!({})), autoscaler("web", "web", 0, 5, concurrency)])
        .await;

    // Warm and steady at 1: 5 in flight against a target of 10 per instance.
    autoscalers
        .wait("steady at 1 with metrics", WAIT, |s| {
            let a = s.get("web")?;
            let st = a.status.as_ref()?;
            let active = cond(a, "ScalingActive")?;
            (st.current_replicas == 1
                && active.status == "True"
                && st.current_metrics.first().is_some_and(|m| (m.current - 5.0).abs() < 0.01))
            .then_some(())
        })
        .await;

    // Load: 35 in flight → ceil(35 / 10) = 4.
    sidecars.set(Mode::Serve { in_flight: 35.0 });
    deployments
        .wait("scaled up to 4", WAIT, |s| (s.get("web")?.spec.replicas == 4).then_some(()))
        .await;
    let a = autoscalers
        .wait("the scale-up recorded", WAIT, |s| {
            let a = s.get("web")?;
            let st = a.status.as_ref()?;
            (st.desired_replicas == 4 && st.decisions.first().is_some_and(|d| d.to == 4))
                .then(|| a.clone())
        })
        .await;
    let st = a.status.as_ref().unwrap();
    assert!(st.decisions[0].from < 4, "{:?}", st.decisions);
    assert!(st.decisions[0].reason.contains("concurrency"), "{:?}", st.decisions);
    assert!(st.last_scale_time.is_some());
    assert_eq!(st.mode.as_deref(), Some("stable"));
    assert_eq!(cond(&a, "AbleToScale").unwrap().status, "True");
    instances
        .wait("4 ready instances", WAIT, |s| {
            (active(s, "web").iter().filter(|i| ready(i)).count() == 4).then_some(())
        })
        .await;

    // Load gone to 5 in flight in all → back down to 1.
    sidecars.set(Mode::Serve { in_flight: 5.0 });
    deployments
        .wait("scaled back down to 1", WAIT, |s| (s.get("web")?.spec.replicas == 1).then_some(()))
        .await;
    autoscalers
        .wait("the scale-down recorded", WAIT, |s| {
            let st = s.get("web")?.status.clone()?;
            st.decisions.first().is_some_and(|d| d.from > 1 && d.to == 1).then_some(())
        })
        .await;

    // The sidecars get stuck: metrics stop arriving. The autoscaler says so and holds; with
    // minReplicas 0 and a 1 s grace, missing metrics must never read as "no traffic".
    sidecars.set(Mode::Hang);
    autoscalers
        .wait("ScalingActive=False NoMetrics", WAIT, |s| {
            let c = cond(s.get("web")?, "ScalingActive")?;
            (c.status == "False" && c.reason == "NoMetrics").then_some(())
        })
        .await;
    more_rounds(&p, 16).await; // ~4 s: past the stable window and the grace period.
    let d = &deployments.snapshot()["web"];
    assert_eq!(d.spec.replicas, 1, "held at 1 without metrics");
    let a = &autoscalers.snapshot()["web"];
    assert_eq!(a.status.as_ref().unwrap().decisions[0].to, 1, "no decision to scale to zero");
    let live = p.live.snapshot();
    assert!(
        live.iter().any(|f| f.traffic.is_none()
            && f.traffic_error.as_deref().is_some_and(|e| e.contains("no answer"))),
        "the pipeline records why the scrapes fail: {live:?}"
    );
    drop(sidecars);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_reported_in_status() {
    let p = Platform::start(fast()).await;
    let _agent = FakeAgent::start(&p.client, &[("n1", "16", "32Gi")]).await;
    let autoscalers = Mirror::<Autoscaler>::start(&p.client);
    let deployments = Mirror::<Deployment>::start(&p.client);
    let concurrency = json!([{"type": "concurrency", "target": 10}]);

    // A target that does not exist: said in status, nothing else written.
    p.apply(&[autoscaler("ghost", "ghost", 1, 3, concurrency.clone())]).await;
    let a = autoscalers
        .wait("TargetNotFound", WAIT, |s| {
            let a = s.get("ghost")?;
            let c = cond(a, "AbleToScale")?;
            (c.status == "False" && c.reason == "TargetNotFound").then(|| a.clone())
        })
        .await;
    assert!(cond(&a, "AbleToScale").unwrap().message.contains("ghost"), "{a:?}");
    assert!(deployments.snapshot().is_empty(), "nothing created");
    // And it is written once, not every round.
    let rv = a.metadata.resource_version.clone();
    more_rounds(&p, 8).await;
    assert_eq!(autoscalers.snapshot()["ghost"].metadata.resource_version, rv);

    // minReplicas above maxReplicas: the api refuses it whole.
    let err = p
        .client
        .apply(&[autoscaler("inverted", "ghost", 4, 2, concurrency.clone())], None, false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("minReplicas"), "{err}");

    // Valid for the api, unusable for the policy: a cpu utilisation target on a deployment
    // that requests no cpu.
    let mut bare = deployment("bare", 2, "v1", json!({}));
    bare["spec"]["template"]["resources"] = json!({});
    p.apply(&[
        bare,
        autoscaler("bare", "bare", 1, 3, json!([{"type": "cpu", "targetUtilization": 50}])),
    ])
    .await;
    let a = autoscalers
        .wait("InvalidSpec", WAIT, |s| {
            let a = s.get("bare")?;
            let c = cond(a, "ScalingActive")?;
            (c.status == "False" && c.reason == "InvalidSpec").then(|| a.clone())
        })
        .await;
    let msg = &cond(&a, "ScalingActive").unwrap().message;
    assert!(msg.contains("spec.metrics[0].targetUtilization"), "{msg}");
    assert_eq!(deployments.snapshot()["bare"].spec.replicas, 2, "left alone");

    // The missing target appears: the autoscaler takes it on.
    p.apply(&[deployment("ghost", 1, "v1", json!({}))]).await;
    autoscalers
        .wait("ghost found", WAIT, |s| {
            let c = cond(s.get("ghost")?, "AbleToScale")?;
            (c.status == "True").then_some(())
        })
        .await;
    p.shutdown().await;
}
