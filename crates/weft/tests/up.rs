//! `weft up` end to end: the real binary runs the whole platform (api, controllers, scheduler,
//! agent, gateway) with the demo shop from `examples/shop/`, driven through the gateway and the
//! CLI; bad workloads are explained in `weft describe`; Ctrl-C leaves no process behind.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::up::{Up, alive, http_get, processes_mentioning, repo, spawn_up};
use common::{closed_port, wait_for, weft};
use serde_json::Value;

#[test]
fn the_demo_shop_runs_behind_the_gateway_and_ctrl_c_leaves_nothing() {
    let mut up = Up::start(&["-f", repo("examples/shop").to_str().unwrap()]);
    let log = up.log_text();
    assert!(log.contains("ready"), "progress was shown:\n{log}");
    assert!(
        log.contains(&format!("http://{}/", up.gateway)),
        "the banner names the gateway:\n{log}"
    );

    // The shop's page through the gateway: frontend called catalog (which called pricing) and
    // cart through their sidecars, by service name.
    let home: Value = wait_for("the shop through the gateway", Duration::from_secs(60), || {
        let (status, body) = http_get(&up.gateway, "/api/home?user=alice").ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (status == 200 && v["errors"].as_array().is_some_and(|e| e.is_empty())).then_some(v)
    });
    let served: Vec<&str> =
        home["servedBy"].as_array().unwrap().iter().filter_map(|p| p["service"].as_str()).collect();
    for s in ["frontend", "catalog", "pricing", "cart"] {
        assert!(served.contains(&s), "{s} missing from {home}");
    }
    let (status, page) = http_get(&up.gateway, "/").unwrap();
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<html") || page.contains("<!doctype") || page.contains("<!DOCTYPE"));

    // The CLI against it: 8 instances running, wide output names nodes and addresses.
    let insts = up.items("inst");
    assert_eq!(insts.len(), 8, "{insts:?}");
    for i in &insts {
        assert_eq!(i["status"]["phase"], "Running", "{i}");
        assert_eq!(i["status"]["ready"], true, "{i}");
    }
    let wide = up.cli(&["get", "inst", "-o", "wide"]);
    wide.ok();
    assert!(wide.stdout.lines().count() >= 9, "{}", wide.stdout);
    let frontend = insts
        .iter()
        .find(|i| i["spec"]["deployment"] == "frontend")
        .and_then(|i| i["metadata"]["name"].as_str())
        .unwrap()
        .to_string();
    let logs = up.cli(&["logs", &frontend]);
    logs.ok();

    // Scale out, and follow the rollout.
    up.cli(&["scale", "deploy", "catalog", "--replicas", "3"]).ok();
    up.cli(&["rollout", "status", "deploy", "catalog", "--timeout", "90s"]).ok();
    let catalog = up.json(&["get", "deploy", "catalog"]);
    assert_eq!(catalog["status"]["availableReplicas"], 3, "{catalog}");

    // Every process weft up started: apps (status.pid) and sidecars (they name the api).
    let mut pids: Vec<u32> = up
        .items("inst")
        .iter()
        .filter_map(|i| i["status"]["pid"].as_u64())
        .map(|p| p as u32)
        .collect();
    let sidecars = processes_mentioning(&format!("http://{}", up.api));
    assert!(sidecars.len() >= 9, "one sidecar per instance: {sidecars:?}");
    pids.extend(sidecars);
    assert!(pids.iter().all(|p| alive(*p)));

    // What the next `weft up` on the same data dir must bring back in place.
    let before: Vec<String> = {
        let mut v: Vec<String> = up
            .items("inst")
            .iter()
            .filter_map(|i| i["metadata"]["name"].as_str().map(String::from))
            .collect();
        v.sort();
        v
    };
    let status = up.interrupt(Duration::from_secs(90));
    assert!(status.success(), "weft up exit: {status}\n{}", up.log_text());
    wait_for("every instance and sidecar to be gone", Duration::from_secs(10), || {
        pids.iter().all(|p| !alive(*p)).then_some(())
    });
    assert!(up.log_text().contains("weft stopped"));

    // The next `weft up` on the same data dir brings the same instances back (restarted in
    // place, not replaced), and the shop answers again.
    std::fs::remove_file(&up.log).unwrap();
    up.spawn(&[]);
    wait_for("the shop back through the gateway", Duration::from_secs(60), || {
        let (status, body) = http_get(&up.gateway, "/api/home?user=alice").ok()?;
        (status == 200 && body.contains("\"errors\":[]")).then_some(())
    });
    let after: Vec<String> = {
        let mut v: Vec<String> = up
            .items("inst")
            .iter()
            .filter_map(|i| i["metadata"]["name"].as_str().map(String::from))
            .collect();
        v.sort();
        v
    };
    assert_eq!(before, after, "instances were replaced across a restart");
    assert!(up.interrupt(Duration::from_secs(90)).success());
}

#[test]
fn bad_workloads_are_explained_and_disturb_nothing_else() {
    let mut up = Up::start(&[
        "-f",
        common::fixture("up/bad-workloads.yaml").to_str().unwrap(),
        "--capacity",
        "cpu=2,memory=4Gi",
        "--wait",
        "1s",
    ]);
    let describe = |name: &str| {
        let out = up.cli(&["describe", "deploy", name]);
        out.ok();
        out.stdout
    };
    let inst_of = |deploy: &str| -> Option<Value> {
        up.items("inst").into_iter().find(|i| i["spec"]["deployment"] == deploy)
    };
    let reason_of = |deploy: &str, want: &str, timeout: Duration| -> Value {
        wait_for(&format!("{deploy}: {want}"), timeout, || {
            let i = inst_of(deploy)?;
            let s = &i["status"];
            (s["reason"].as_str() == Some(want)
                || s["message"].as_str().is_some_and(|m| m.contains(want)))
            .then_some(i)
        })
    };

    // The good one is not disturbed by its neighbours.
    wait_for("ok ready", Duration::from_secs(60), || {
        inst_of("ok").filter(|i| i["status"]["ready"] == true)
    });

    // Two instances with the same upstream localPort on one node both serve.
    wait_for("both twins ready", Duration::from_secs(60), || {
        let twins: Vec<Value> =
            up.items("inst").into_iter().filter(|i| i["spec"]["deployment"] == "twins").collect();
        (twins.len() == 2 && twins.iter().all(|i| i["status"]["ready"] == true)).then_some(())
    });

    // A command that does not exist.
    let i = reason_of("missing", "CommandNotFound", Duration::from_secs(30));
    assert!(i["status"]["message"].as_str().unwrap().contains("no-such-program"), "{i}");

    // More than any node has: pending, with the scheduler's reason.
    let i = reason_of("greedy", "nodes can run it", Duration::from_secs(30));
    assert_eq!(i["status"]["phase"], "Pending", "{i}");
    assert!(i["spec"]["node"].is_null(), "{i}");

    // An app that crashes at once backs off instead of looping hot.
    let i = reason_of("crasher", "CrashLoopBackOff", Duration::from_secs(30));
    let restarts = i["status"]["restarts"].as_u64().unwrap_or(0);
    assert!(restarts <= 3, "backoff, not a hot loop: {i}");

    // A readiness probe that never passes: running, never ready, and it says why.
    let i = wait_for("unready explained", Duration::from_secs(30), || {
        let i = inst_of("unready")?;
        i["status"]["message"].as_str().is_some_and(|m| m.contains("readiness")).then_some(i)
    });
    assert_eq!(i["status"]["ready"], false, "{i}");

    // The deployments tell the same story in `describe`.
    assert!(describe("greedy").contains("nodes can run it"));
    assert!(inst_of("ok").is_some_and(|i| i["status"]["ready"] == true));
    let status = up.interrupt(Duration::from_secs(90));
    assert!(status.success(), "{status}\n{}", up.log_text());
}

#[test]
fn a_taken_port_or_a_bad_manifest_stops_weft_up_before_it_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let api = format!("127.0.0.1:{}", closed_port());
    let log = tmp.path().join("up.log");
    let mut child = spawn_up(&tmp.path().join("a"), &api, &taken_addr, &[], &log);
    let status =
        wait_for("weft up to give up", Duration::from_secs(30), || child.try_wait().unwrap());
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("cannot listen for the gateway on {taken_addr}")), "{text}");
    assert_eq!(text.trim().lines().filter(|l| l.starts_with("error:")).count(), 1, "{text}");

    let bad = tmp.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: weft/v1\nkind: Deployment\nmetadata: { name: web }\nspec:\n  replicas: 1\n  template:\n    command: []\n",
    )
    .unwrap();
    let out = weft(
        &["up", "--data-dir", tmp.path().join("b").to_str().unwrap(), "-f", bad.to_str().unwrap()],
        None,
    );
    assert_eq!(out.code, 64, "{out:?}");
    assert!(out.stderr.contains("bad.yaml") && out.stderr.contains("command"), "{}", out.stderr);
    assert!(!tmp.path().join("b/store.redb").exists(), "nothing started, nothing written");
}
