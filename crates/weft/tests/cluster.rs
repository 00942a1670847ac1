//! Several machines' worth of weft on one: `weft server --controllers` and two agents that
//! join it over the network (`weft agent --join URL --token T --address IP`), each node on its
//! own loopback address (127.0.0.1 and 127.0.0.2). A deployment spreads over both nodes; an
//! agent that stops has its instances replaced on the other node after the heartbeat timeout
//! (`node_grace`, 20 s). With the control plane killed, the mesh keeps serving (a gateway
//! reaches the instances over mTLS with what it had).

mod common;

use std::time::Duration;

use common::agent::AgentProcess;
use common::*;

#[test]
fn agents_join_over_the_network_and_a_stopped_agents_instances_move() {
    let s = Server::with_args(&["--controllers"]);
    let token = s.create_token("agent", None);
    let tmp = tempfile::tempdir().unwrap();
    let n2_dir = tmp.path().join("n2");
    let _n1 = AgentProcess::start(&s.url, &token, "n1", "127.0.0.1", &tmp.path().join("n1"), true);
    let mut n2 = AgentProcess::start(&s.url, &token, "n2", "127.0.0.2", &n2_dir, false);
    wait_for("both nodes Ready", Duration::from_secs(30), || {
        let nodes = s.get("/api/v1/nodes").json();
        let ready =
            nodes["items"].as_array()?.iter().filter(|n| n["status"]["ready"] == true).count();
        (ready == 2).then_some(())
    });
    // Each agent traded the join token for one bound to its node, kept in its data dir.
    let tokens = s.cli(&["token", "list"]).ok().stdout.clone();
    for n in ["n1", "n2"] {
        assert!(tokens.contains(&format!("agent of node {n}")), "{tokens}");
        let file = tmp.path().join(n).join(format!("agent/node-{n}.token"));
        let mode = std::os::unix::fs::PermissionsExt::mode(&file.metadata().unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
    assert_eq!(s.put_json(&deploy_path("web"), &demo_web(2)).status, 201);
    // Spread: one instance per node, each on its node's address.
    let placed = wait_for("an instance ready on each node", Duration::from_secs(60), || {
        let r = ready_web(&s);
        (r.len() == 2 && r[0].0 != r[1].0).then_some(r)
    });
    assert_eq!(
        placed,
        vec![("n1".into(), "127.0.0.1".into()), ("n2".into(), "127.0.0.2".into())],
        "{}",
        n2.log_text()
    );

    // n2's agent goes away without a word (its instance keeps running, heartbeats stop): after
    // the heartbeat timeout its instance is replaced on n1.
    n2.stop();
    let stopped = std::time::Instant::now();
    let moved = wait_for("both instances ready on n1", Duration::from_secs(90), || {
        let r = ready_web(&s);
        (r.len() == 2 && r.iter().all(|(n, _)| n == "n1")).then_some(r)
    });
    assert!(moved.iter().all(|(_, a)| a == "127.0.0.1"), "{moved:?}");
    eprintln!("n2 silent: its instance replaced on n1 after {:?}", stopped.elapsed());
    // Clean up what n2 left running: an agent on its data dir adopts it, and stops it on exit.
    // The join token is revoked by now: the agent comes back on its own node's token.
    s.cli(&["token", "revoke", &token]).ok();
    let mut again = AgentProcess::start(&s.url, &token, "n2", "127.0.0.2", &n2_dir, true);
    wait_for("n2 back", Duration::from_secs(30), || {
        let n = s.get("/api/v1/nodes/n2").json();
        (n["status"]["ready"] == true).then_some(())
    });
    again.stop();

    // Static stability: with the control plane gone, the mesh keeps serving. A gateway (its
    // certificate and routes from the server while it was up) reaches the instances over mTLS.
    assert_eq!(s.put_json(&svc_path("web"), &demo_web_service()).status, 201);
    let gateway = format!("127.0.0.1:{}", closed_port());
    let proxy_token = s.create_token("proxy", None);
    let mut gw = std::process::Command::new(BIN)
        .args(["proxy", "--gateway", &gateway, "--server", &s.url, "--token", &proxy_token])
        .args(["--mtls", "strict"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(tmp.path().join("gateway.log")).unwrap())
        .spawn()
        .unwrap();
    let through = |gw: &str| {
        request(gw, "GET", "/api/prices", None, &[], None).is_ok_and(|r| r.status == 200)
    };
    wait_for("the gateway to answer", Duration::from_secs(60), || through(&gateway).then_some(()));
    let mut s = s;
    s.kill();
    for _ in 0..20 {
        assert!(
            through(&gateway),
            "the mesh stopped serving without its control plane: {}",
            std::fs::read_to_string(tmp.path().join("gateway.log")).unwrap_or_default()
        );
    }
    let _ = gw.kill();
    let _ = gw.wait();
}
