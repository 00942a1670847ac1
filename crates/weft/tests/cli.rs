//! The CLI against a real server: apply (file, dir, stdin), get in every format, kind aliases,
//! describe, delete.

mod common;

use common::*;
use serde_json::Value;

const EXAMPLE: &str = "example.yaml";

fn example() -> String {
    fixture(EXAMPLE).to_str().unwrap().to_string()
}

#[test]
fn apply_example_created_unchanged_configured_and_yaml_round_trip() {
    let s = Server::start();
    let out = s.cli(&["apply", "-f", &example()]);
    out.ok();
    assert_eq!(
        out.stdout,
        "deployment/catalog created\nservice/catalog created\nautoscaler/catalog created\n",
        "stderr: {}",
        out.stderr
    );
    let rev = s.revision();

    let out = s.cli(&["apply", "-f", &example()]);
    out.ok();
    assert_eq!(
        out.stdout,
        "deployment/catalog unchanged\nservice/catalog unchanged\nautoscaler/catalog unchanged\n"
    );
    assert_eq!(s.revision(), rev, "an unchanged apply must not write");

    // Change replicas: only the deployment is configured, and its generation moves.
    let changed = std::fs::read_to_string(fixture(EXAMPLE)).unwrap().replacen(
        "replicas: 2",
        "replicas: 5",
        1,
    );
    let path = s.tmp.path().join("changed.yaml");
    std::fs::write(&path, changed).unwrap();
    let out = s.cli(&["apply", "-f", path.to_str().unwrap()]);
    out.ok();
    assert_eq!(
        out.stdout,
        "deployment/catalog configured\nservice/catalog unchanged\nautoscaler/catalog unchanged\n"
    );
    let d = s.object(&deploy_path("catalog")).unwrap();
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["metadata"]["generation"], 2);
    assert!(s.revision() > rev);

    // What `get -o yaml` prints applies back unchanged: one object per kind, and a whole list.
    for kind in ["deploy", "svc", "as"] {
        let out = s.cli(&["get", kind, "catalog", "-o", "yaml"]);
        out.ok();
        assert!(out.stdout.contains("resourceVersion:"), "{}", out.stdout);
        let p = s.tmp.path().join(format!("{kind}.yaml"));
        std::fs::write(&p, &out.stdout).unwrap();
        let rev = s.revision();
        let out = s.cli(&["apply", "-f", p.to_str().unwrap()]);
        out.ok();
        assert!(out.stdout.ends_with(" unchanged\n"), "{kind}: {}", out.stdout);
        assert_eq!(s.revision(), rev, "{kind}: re-applying get -o yaml wrote something");
    }
    let out = s.cli(&["get", "deploy", "-o", "yaml"]);
    out.ok();
    assert!(out.stdout.contains("kind: List"), "{}", out.stdout);
    let rev = s.revision();
    let out = s.cli_stdin(&["apply", "-f", "-"], &out.stdout);
    out.ok();
    assert_eq!(out.stdout, "deployment/catalog unchanged\n");
    assert_eq!(s.revision(), rev);

    // ... and so does `get -o json`.
    let out = s.cli(&["get", "svc", "catalog", "-o", "json"]);
    out.ok();
    let out = s.cli_stdin(&["apply", "-f", "-"], &out.stdout);
    out.ok();
    assert_eq!(out.stdout, "service/catalog unchanged\n");
    assert_eq!(s.revision(), rev);
}

#[test]
fn get_formats_aliases_namespaces_and_selectors() {
    let s = Server::start();
    s.cli(&["apply", "-f", &example()]).ok();
    let r = s.apply_yaml(&std::fs::read_to_string(fixture("system.yaml")).unwrap());
    assert_eq!(r.status, 200, "{}", r.text());
    let mut other = service_labeled("other", serde_json::json!({ "tier": "back" }));
    other["metadata"]["namespace"] = "staging".into();
    let r = s.apply_json(&other);
    assert_eq!(r.status, 200, "{}", r.text());
    let front = service_labeled("front", serde_json::json!({ "tier": "web" }));
    assert_eq!(s.apply_json(&front).status, 200);

    // Every name of every kind lists the same thing.
    let kinds: [(&[&str], &str); 6] = [
        (&["deploy", "deployment", "deployments", "Deployment"], "deployment/catalog"),
        (&["svc", "service", "services"], "service/catalog\nservice/front"),
        (&["as", "hpa", "autoscaler", "autoscalers"], "autoscaler/catalog"),
        (&["inst", "instance", "instances"], "instance/catalog-abc12"),
        (&["ep", "endpoint", "endpoints"], "endpoint/catalog"),
        (&["no", "node", "nodes"], "node/node-1.local"),
    ];
    for (names, expected) in kinds {
        for n in names {
            let out = s.cli(&["get", n, "-o", "name"]);
            out.ok();
            assert_eq!(out.stdout.trim_end(), expected, "weft get {n} -o name");
        }
    }

    // Table and wide.
    let out = s.cli(&["get", "deploy"]);
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("READY") && lines[0].contains("AGE"),
        "{}",
        lines[0]
    );
    assert!(lines[1].starts_with("catalog") && lines[1].contains("0/2"), "{}", lines[1]);
    let out = s.cli(&["get", "deploy", "-o", "wide"]);
    out.ok();
    assert!(out.stdout.lines().next().unwrap().contains("COMMAND"), "{}", out.stdout);
    assert!(out.stdout.contains("weft-demo catalog"), "{}", out.stdout);
    let out = s.cli(&["get", "svc", "catalog", "-o", "wide"]);
    out.ok();
    assert!(
        out.stdout.contains("p2c-ewma") && out.stdout.contains("deployment=catalog"),
        "{}",
        out.stdout
    );

    // JSON: a List of full objects, or the object itself.
    let out = s.cli(&["get", "svc", "-o", "json"]);
    out.ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["kind"], "List");
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    let out = s.cli(&["get", "as", "catalog", "-o", "json"]);
    out.ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["kind"], "Autoscaler");
    assert_eq!(v["spec"]["maxReplicas"], 20);
    assert!(rv(&v) > 0);

    // Namespaces: default only, another, or all with a NAMESPACE column.
    let out = s.cli(&["get", "svc", "-o", "name"]);
    assert!(!out.stdout.contains("other"), "{}", out.stdout);
    let out = s.cli(&["get", "svc", "-n", "staging", "-o", "name"]);
    out.ok();
    assert_eq!(out.stdout, "service/other\n");
    let out = s.cli(&["get", "svc", "-A"]);
    out.ok();
    assert!(out.stdout.starts_with("NAMESPACE"), "{}", out.stdout);
    assert!(out.stdout.contains("staging") && out.stdout.contains("default"), "{}", out.stdout);
    assert_eq!(out.stdout.lines().count(), 4, "{}", out.stdout);

    // Label selectors.
    let out = s.cli(&["get", "svc", "-A", "-l", "tier=web", "-o", "name"]);
    out.ok();
    assert_eq!(out.stdout, "service/front\n");
    let out = s.cli(&["get", "svc", "-A", "-l", "tier", "-o", "name"]);
    out.ok();
    assert_eq!(out.lines(), vec!["service/front", "service/other"]);
    let out = s.cli(&["get", "svc", "-A", "-l", "tier!=web", "-o", "name"]);
    out.ok();
    assert_eq!(out.lines(), vec!["service/catalog", "service/other"]);

    // Empty lists: a note on stderr, nothing on stdout, success.
    let out = s.cli(&["get", "deploy", "-n", "empty"]);
    out.ok();
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("No deployments found"), "{}", out.stderr);

    // A missing object: exit 1 with one line.
    let out = s.cli(&["get", "deploy", "nope"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr, "error: deployment \"nope\" in namespace \"default\" not found\n");
}

#[test]
fn describe_and_delete_by_name_and_by_file() {
    let s = Server::start();
    s.cli(&["apply", "-f", &example()]).ok();

    let out = s.cli(&["describe", "deploy", "catalog"]);
    out.ok();
    for want in [
        "Name:",
        "catalog",
        "Namespace:",
        "default",
        "Kind:",
        "Deployment",
        "Replicas:",
        "2 desired",
        "Generation:",
    ] {
        assert!(out.stdout.contains(want), "describe lacks {want:?}:\n{}", out.stdout);
    }
    let out = s.cli(&["describe", "svc", "catalog"]);
    out.ok();
    assert!(out.stdout.contains("p2c-ewma"), "{}", out.stdout);
    let out = s.cli(&["describe", "as", "catalog"]);
    out.ok();
    assert!(out.stdout.contains("min 0 | max 20"), "{}", out.stdout);
    let out = s.cli(&["describe", "deploy", "missing"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("not found"), "{}", out.stderr);

    let out = s.cli(&["delete", "svc", "catalog"]);
    out.ok();
    assert_eq!(out.stdout, "service/catalog deleted\n");
    assert!(s.object(&svc_path("catalog")).is_none());
    let rev = s.revision();
    let out = s.cli(&["delete", "svc", "catalog"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("service \"catalog\" in namespace \"default\" not found"),
        "{}",
        out.stderr
    );
    assert_eq!(s.revision(), rev);

    // Deleting by manifest: the service is already gone (reported, exit 1), the rest go.
    let out = s.cli(&["delete", "-f", &example()]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stdout, "deployment/catalog deleted\nautoscaler/catalog deleted\n");
    assert!(out.stderr.contains("1 object(s) could not be deleted"), "{}", out.stderr);
    assert!(s.names("deployments").is_empty());
    assert!(s.names("autoscalers").is_empty());

    // All present: exit 0.
    s.cli(&["apply", "-f", &example()]).ok();
    let out = s.cli(&["delete", "-f", &example()]);
    out.ok();
    assert_eq!(
        out.lines(),
        vec!["autoscaler/catalog deleted", "deployment/catalog deleted", "service/catalog deleted"]
    );

    let out = s.cli(&["delete", "deploy"]);
    assert_eq!(out.code, 64, "{out:?}");
}

#[test]
fn apply_from_a_directory_and_from_stdin() {
    let s = Server::start();
    let dir = fixture("dir");
    let out = s.cli(&["apply", "-f", dir.to_str().unwrap()]);
    out.ok();
    // Files in name order, documents in file order; notes.txt is not a manifest.
    assert_eq!(out.stdout, "service/web created\nautoscaler/web created\ndeployment/web created\n");
    assert_eq!(s.object(&deploy_path("web")).unwrap()["spec"]["replicas"], 3);
    let out = s.cli(&["apply", "-f", dir.to_str().unwrap()]);
    out.ok();
    assert_eq!(out.stdout.matches(" unchanged").count(), 3, "{}", out.stdout);

    let text = std::fs::read_to_string(fixture(EXAMPLE)).unwrap();
    let out = s.cli_stdin(&["apply", "-f", "-"], &text);
    out.ok();
    assert_eq!(out.stdout.matches(" created").count(), 3, "{}", out.stdout);
    let out = s.cli_stdin(&["apply", "-n", "staging", "-f", "-"], &text);
    out.ok();
    assert!(s.object("/api/v1/namespaces/staging/services/catalog").is_some());

    // --dry-run writes nothing.
    let rev = s.revision();
    let changed = text.replacen("replicas: 2", "replicas: 7", 1);
    let out = s.cli_stdin(&["apply", "--dry-run", "-f", "-"], &changed);
    out.ok();
    assert!(out.stdout.contains("deployment/catalog configured (dry run)"), "{}", out.stdout);
    assert_eq!(s.revision(), rev);
    assert_eq!(s.object(&deploy_path("catalog")).unwrap()["spec"]["replicas"], 2);

    // Two files on one command line, one transaction.
    let out = s.cli(&["apply", "-f", &example(), "-f", dir.to_str().unwrap()]);
    out.ok();
    assert_eq!(out.stdout.lines().count(), 6, "{}", out.stdout);
}

#[test]
fn get_watch_prints_the_list_then_changes() {
    let s = Server::start();
    s.put_json(&svc_path("first"), &service("first"));
    let w = s.cli_stream(&["get", "svc", "-w", "-o", "name"]);
    let line = |w: &CliStream| {
        w.next_line(std::time::Duration::from_secs(10)).expect("a line from weft get -w")
    };
    assert_eq!(line(&w), "service/first");
    // The list was printed; changes follow (the watch may open just after this write, which it
    // then sees from the list's revision).
    s.put_json(&svc_path("second"), &service("second"));
    assert_eq!(line(&w), "service/second added");
    s.put_json(&svc_path("first"), &service_labeled("first", serde_json::json!({ "v": "2" })));
    assert_eq!(line(&w), "service/first modified");
    assert_eq!(s.delete(&svc_path("second")).status, 200);
    assert_eq!(line(&w), "service/second deleted");
    let w = s.cli_stream(&["get", "svc", "first", "-w", "-o", "json"]);
    let first: Value = serde_json::from_str(
        &std::iter::from_fn(|| w.next_line(std::time::Duration::from_secs(5)))
            .take_while(|l| l != "}")
            .chain(["}".to_string()])
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    assert_eq!(first["metadata"]["name"], "first");
    s.put_json(&svc_path("first"), &service("first"));
    let changed: Value = serde_json::from_str(&line(&w)).unwrap();
    assert!(rv(&changed) > rv(&first));
}
