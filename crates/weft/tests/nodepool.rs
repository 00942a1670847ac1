//! Node pools with the `local` provider, end to end: `weft up` on a small node (1 cpu), a
//! NodePool (min 0, max 3) of 2-cpu nodes, and a deployment that needs more cpu than the home
//! node has. The pool starts a `weft agent` process, the pending instances run and serve on
//! it; an instance too big for any pool node leaves the pool alone and says why; maxNodes caps
//! growth; when the load goes, the pool node is drained and removed and its agent stops.
//! Invalid pools are refused whole, nothing written.

mod common;

use std::time::{Duration, Instant};

use common::up::{Up, http_get, processes_mentioning};
use common::*;
use serde_json::{Value, json};

fn pool(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "weft/v1", "kind": "NodePool", "metadata": {"name": name}, "spec": spec})
}

fn good_spec() -> Value {
    json!({
        "provider": "local", "minNodes": 0, "maxNodes": 3,
        "template": {"capacity": {"cpu": "2", "memory": "2Gi"}, "labels": {"tier": "burst"}},
        "scaleDown": {"unneededTime": "5s"}
    })
}

#[test]
fn invalid_pools_are_refused_and_nothing_is_written() {
    let s = Server::start();
    let path = "/api/v1/nodepools/burst";
    let with = |f: &dyn Fn(&mut Value)| {
        let mut spec = good_spec();
        f(&mut spec);
        pool("burst", spec)
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (with(&|s| s["minNodes"] = json!(4)), "spec.minNodes", "more than maxNodes 3"),
        (with(&|s| s["maxNodes"] = json!(1000)), "spec.maxNodes", "at most 100"),
        (with(&|s| s["maxNodes"] = json!(0)), "spec.maxNodes", "at least 1"),
        (with(&|s| s["provider"] = json!("aws")), "spec.provider", "unknown provider \"aws\""),
        (
            with(&|s| s["template"]["capacity"]["cpu"] = json!("2Xi")),
            "spec.template.capacity.cpu",
            "unknown suffix",
        ),
        (
            with(&|s| s["template"]["capacity"] = json!({"cpu": "2"})),
            "spec.template.capacity.memory",
            "is required",
        ),
        (
            with(&|s| s["template"]["allocatable"] = json!({"cpu": "3"})),
            "spec.template.allocatable.cpu",
            "more than the capacity",
        ),
        (
            with(&|s| s["scaleDown"]["utilizationThreshold"] = json!(1.5)),
            "spec.scaleDown.utilizationThreshold",
            "at most 1",
        ),
        (
            with(&|s| s["scaleDown"]["unneededTime"] = json!("0s")),
            "spec.scaleDown.unneededTime",
            "at least 1s",
        ),
        (
            with(&|s| s["template"]["labels"] = json!({"bad key!": "x"})),
            "spec.template.labels",
            "label key",
        ),
    ];
    for (obj, field, words) in cases {
        let m = s.put_json(path, &obj).error(422, "Invalid");
        assert!(m.starts_with(field), "{field}: {m}");
        assert!(m.contains(words), "{field}: {m}");
    }
    assert!(s.names("nodepools").is_empty(), "an invalid pool was written");
    // The CLI says the same in one line, and writes nothing either.
    let bad = "apiVersion: weft/v1\nkind: NodePool\nmetadata: {name: burst}\nspec:\n  provider: local\n  minNodes: 5\n  maxNodes: 2\n  template: {capacity: {cpu: '2', memory: 2Gi}}\n";
    let out = s.cli_stdin(&["apply", "-f", "-"], bad);
    assert_eq!(out.code, 64, "{out:?}");
    assert!(out.stderr.contains("spec.minNodes: 5 is more than maxNodes 2"), "{}", out.stderr);
    assert!(s.names("nodepools").is_empty());
    // A good one is written with its defaults, found by its short names.
    assert_eq!(s.put_json(path, &pool("burst", good_spec())).status, 201);
    let got = s.object(path).unwrap();
    assert_eq!(got["spec"]["scaleDown"]["utilizationThreshold"], 0.5);
    assert_eq!(got["spec"]["template"]["allocatable"]["cpu"], "2");
    let table = s.cli(&["get", "np"]);
    table.ok();
    assert!(
        table.stdout.contains("PROVIDER") && table.stdout.contains("burst"),
        "{}",
        table.stdout
    );
}

fn apply(up: &Up, v: &Value) {
    let out = weft(
        &["--data-dir", up.dir.to_str().unwrap(), "apply", "-f", "-"],
        Some(&serde_json::to_string(v).unwrap()),
    );
    out.ok();
}

fn web(replicas: i64, cpu: &str) -> Value {
    let mut d = demo_web(replicas);
    d["spec"]["template"]["resources"]["requests"]["cpu"] = json!(cpu);
    d
}

/// Ready, not terminating instances of a deployment, by node.
fn ready_on(up: &Up, deployment: &str) -> Vec<String> {
    let mut nodes: Vec<String> = up
        .items("inst")
        .iter()
        .filter(|i| i["spec"]["deployment"] == deployment && i["spec"]["terminating"] != true)
        .filter(|i| i["status"]["ready"] == true)
        .map(|i| i["spec"]["node"].as_str().unwrap_or("").to_string())
        .collect();
    nodes.sort();
    nodes
}

fn pool_status(up: &Up) -> Value {
    up.json(&["get", "nodepool", "burst"])["status"].clone()
}

fn pool_nodes(up: &Up) -> Vec<String> {
    up.items("nodes")
        .iter()
        .filter(|n| n["spec"]["pool"] == "burst")
        .map(|n| n["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_local_pool_grows_for_pending_instances_and_shrinks_when_they_go() {
    let up = Up::start(&["--capacity", "cpu=1,memory=2Gi"]);
    apply(&up, &pool("burst", good_spec()));
    apply(&up, &demo_web_service());

    // 3 × 900m: one fits the 1-cpu home node, two wait; one 2-cpu pool node takes both.
    let asked = Instant::now();
    apply(&up, &web(3, "900m"));
    let placed =
        wait_for("3 web instances ready, 2 on a pool node", Duration::from_secs(180), || {
            let r = ready_on(&up, "web");
            (r.len() == 3 && r.iter().filter(|n| n.starts_with("burst-")).count() == 2).then_some(r)
        });
    let took = asked.elapsed();
    println!("NODEPOOL_PENDING_TO_RUNNING_MS={}", took.as_millis());
    let node = placed.iter().find(|n| n.starts_with("burst-")).unwrap().clone();
    let status = pool_status(&up);
    assert_eq!(status["current"], 1, "{status}");
    assert!(
        status["lastScaleUp"]["reason"]
            .as_str()
            .unwrap()
            .contains("2 pending instances need 1 more node"),
        "{status}"
    );
    let n = up.json(&["get", "node", &node]);
    assert_eq!(n["metadata"]["labels"]["tier"], "burst", "{n}");
    assert_eq!(n["metadata"]["labels"]["weft.dev/pool"], "burst", "{n}");
    assert_eq!(n["status"]["allocatable"]["cpu"], "2", "{n}");
    assert!(!processes_mentioning(&node).is_empty(), "no agent process for {node}");
    // Served through the gateway, by the instances on the pool node too.
    let on_pool: Vec<String> = up
        .items("inst")
        .iter()
        .filter(|i| i["spec"]["node"] == node.as_str())
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    wait_for("a pool-node instance answering through the gateway", Duration::from_secs(60), || {
        served_by(&up).into_iter().find(|i| on_pool.contains(i))
    });

    // Too big for any pool node: pending, the pool stays, and says why.
    let mut huge = web(1, "3");
    huge["metadata"]["name"] = json!("huge");
    apply(&up, &huge);
    let status = wait_for("the pool to explain the huge instance", Duration::from_secs(60), || {
        let s = pool_status(&up);
        s["message"].as_str()?.contains("more than a pool node offers").then_some(s)
    });
    assert_eq!(status["current"], 1, "{status}");
    let described = up.cli(&["describe", "np", "burst"]);
    described.ok();
    assert!(described.stdout.contains("more than a pool node offers"), "{}", described.stdout);
    assert!(
        described.stdout.contains("Pool nodes:") && described.stdout.contains(&node),
        "{}",
        described.stdout
    );
    assert!(described.stdout.contains("Scaling decisions"), "{}", described.stdout);
    up.cli(&["delete", "deploy", "huge"]).ok();

    // maxNodes: 8 × 900m want the home node and 4 pool nodes; the pool stops at 3 and says so.
    up.cli(&["scale", "deploy", "web", "--replicas", "8"]).ok();
    let status = wait_for("the pool at maxNodes", Duration::from_secs(240), || {
        let s = pool_status(&up);
        (s["current"] == 3 && s["message"].as_str()?.contains("at maxNodes 3")).then_some(s)
    });
    assert_eq!(pool_nodes(&up).len(), 3, "{status}");
    wait_for("7 web instances ready", Duration::from_secs(240), || {
        (ready_on(&up, "web").len() == 7).then_some(())
    });

    // Load gone: every pool node is drained and removed, one at a time, back to minNodes 0.
    up.cli(&["scale", "deploy", "web", "--replicas", "1"]).ok();
    wait_for("the pool back to 0 nodes", Duration::from_secs(300), || {
        let s = pool_status(&up);
        (s["current"] == 0 && pool_nodes(&up).is_empty()).then_some(())
    });
    let status = pool_status(&up);
    assert!(
        status["lastScaleDown"]["reason"].as_str().unwrap().contains("of its allocatable"),
        "{status}"
    );
    wait_for("the pool nodes' agents gone", Duration::from_secs(60), || {
        processes_mentioning("burst-").is_empty().then_some(())
    });
    wait_for("web served from the home node", Duration::from_secs(60), || {
        let r = ready_on(&up, "web");
        (r.len() == 1 && !r[0].starts_with("burst-")).then_some(())
    });
    wait_for("the gateway serving web", Duration::from_secs(60), || {
        (!served_by(&up).is_empty()).then_some(())
    });
}

/// Scale-down moves a service whose only replica sits on the pool node without a failed or
/// even a held request: the deployment makes the replacement elsewhere first (its surge), and
/// the old instance stops once the new one is ready.
#[test]
fn a_drained_pool_nodes_only_replica_moves_without_a_failed_or_held_request() {
    let admin = format!("127.0.0.1:{}", closed_port());
    let up = Up::start(&["--capacity", "cpu=1,memory=2Gi", "--gateway-admin", &admin]);
    let mut spec = good_spec();
    spec["maxNodes"] = json!(1);
    apply(&up, &pool("burst", spec));
    // The filler takes the home node; web must go to a pool node.
    let mut filler = web(1, "900m");
    filler["metadata"]["name"] = json!("filler");
    apply(&up, &filler);
    wait_for("the filler ready at home", Duration::from_secs(120), || {
        (ready_on(&up, "filler").len() == 1).then_some(())
    });
    apply(&up, &demo_web_service());
    apply(&up, &web(1, "500m"));
    let first = wait_for("web ready on a pool node", Duration::from_secs(180), || {
        let r = ready_on(&up, "web");
        (r.len() == 1 && r[0].starts_with("burst-")).then(|| r[0].clone())
    });
    wait_for("web served through the gateway", Duration::from_secs(60), || {
        (!served_by(&up).is_empty()).then_some(())
    });

    // Steady load through the gateway while the pool node goes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, gw) = (stop.clone(), up.gateway.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match http_get(&gw, "/api/prices?ids=tea") {
                    Ok((200, _)) => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (ok, failed)
        })
    };
    // Room at home again: the pool node (500m of 2 cpu) is unneeded after 5 s, and drained.
    up.cli(&["delete", "deploy", "filler"]).ok();
    wait_for("the pool node removed", Duration::from_secs(180), || {
        pool_nodes(&up).is_empty().then_some(())
    });
    let home = wait_for("web ready at home", Duration::from_secs(60), || {
        let r = ready_on(&up, "web");
        (r.len() == 1 && !r[0].starts_with("burst-")).then(|| r[0].clone())
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.join().unwrap();
    println!("DRAIN_REQUESTS ok={ok} failed={}", failed.len());
    assert!(
        failed.is_empty(),
        "{} failed of {}: {:?}",
        failed.len(),
        ok,
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 50, "too little load to say anything: {ok}");
    let metrics = request(&admin, "GET", "/metrics", None, &[], None).unwrap().text();
    let held: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("weft_held_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(held, 0.0, "requests were held (web had no endpoint during the drain): {metrics}");
    assert_ne!(home, first);
    let status = pool_status(&up);
    assert!(
        status["lastScaleDown"]["reason"].as_str().unwrap_or("").contains("of its allocatable"),
        "{status}"
    );
}

/// The instances that answered 20 requests through the gateway.
fn served_by(up: &Up) -> Vec<String> {
    let mut who = Vec::new();
    for _ in 0..20 {
        if let Ok((200, body)) = http_get(&up.gateway, "/api/prices?ids=tea")
            && let Ok(v) = serde_json::from_str::<Value>(&body)
            && let Some(i) = v["instance"].as_str()
        {
            who.push(i.to_string());
        }
    }
    who
}

#[test]
fn pool_agents_stop_with_the_server() {
    let mut up = Up::start(&["--capacity", "cpu=1,memory=2Gi"]);
    let mut spec = good_spec();
    spec["minNodes"] = json!(1);
    apply(&up, &pool("burst", spec));
    let node = wait_for("the pool's min node ready", Duration::from_secs(120), || {
        up.items("nodes")
            .iter()
            .find(|n| n["spec"]["pool"] == "burst" && n["status"]["ready"] == true)
            .map(|n| n["metadata"]["name"].as_str().unwrap().to_string())
    });
    assert!(!processes_mentioning(&node).is_empty());
    let status = up.interrupt(Duration::from_secs(120));
    assert!(status.success(), "{status}\n{}", up.log_text());
    assert!(processes_mentioning(&node).is_empty(), "agent {node} outlived weft up");
    // The next start cleans up the old node and makes a new one for minNodes.
    up.spawn(&["--capacity", "cpu=1,memory=2Gi"]);
    let second = wait_for("a new min node, the old one gone", Duration::from_secs(120), || {
        new_ready_pool_node(&up, &node)
    });
    // SIGKILLed, the server cannot stop its agent; the next start does (clean up, not adopt).
    let mut child = up.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!processes_mentioning(&second).is_empty(), "the agent should survive a SIGKILL");
    up.spawn(&["--capacity", "cpu=1,memory=2Gi"]);
    wait_for("the orphaned agent stopped", Duration::from_secs(60), || {
        processes_mentioning(&second).is_empty().then_some(())
    });
    wait_for("a third min node", Duration::from_secs(120), || new_ready_pool_node(&up, &second));
}

/// The pool's only node, once it is ready and is not `old`.
fn new_ready_pool_node(up: &Up, old: &str) -> Option<String> {
    let nodes: Vec<Value> =
        up.items("nodes").into_iter().filter(|n| n["spec"]["pool"] == "burst").collect();
    match nodes.as_slice() {
        [n] if n["metadata"]["name"] != old && n["status"]["ready"] == true => {
            Some(n["metadata"]["name"].as_str().unwrap().to_string())
        }
        _ => None,
    }
}
