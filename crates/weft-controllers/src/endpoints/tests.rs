use serde_json::json;
use weft_api::kinds::instance::InstanceStatus;

use super::*;

fn service(ports: serde_json::Value) -> Service {
    let v = json!({
        "apiVersion": "weft/v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"deployment": "web"}, "ports": ports}
    });
    serde_json::from_value(weft_api::kinds::SERVICE.normalize(v).unwrap()).unwrap()
}

fn instance(
    name: &str,
    labels: serde_json::Value,
    state: (Phase, bool),
    public: &[(&str, u16)],
) -> Instance {
    let v = json!({
        "apiVersion": "weft/v1", "kind": "Instance",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"deployment": "web", "node": "n1", "template": {
            "command": ["web"],
            "ports": [{"name": "http", "port": 8080}, {"name": "admin", "port": 9090}]
        }}
    });
    let mut i: Instance =
        serde_json::from_value(weft_api::kinds::INSTANCE.normalize(v).unwrap()).unwrap();
    i.status = Some(InstanceStatus {
        phase: state.0,
        ready: state.1,
        address: "127.0.0.1".into(),
        ports: public.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
        ..InstanceStatus::default()
    });
    i
}

const READY: (Phase, bool) = (Phase::Running, true);

#[test]
fn ready_selected_instances_sorted_with_mapped_ports() {
    let svc = service(json!([{"name": "http", "port": 80, "targetPort": "http"}]));
    let web = json!({"deployment": "web"});
    let b = instance("b", web.clone(), READY, &[("http", 40002), ("admin", 41002)]);
    let a = instance("a", web.clone(), READY, &[("http", 40001), ("admin", 41001)]);
    let spec = endpoints_for(&svc, [&b, &a]);
    assert_eq!(
        serde_json::to_value(&spec).unwrap(),
        json!({"addresses": [
            {"instance": "a", "node": "n1", "ip": "127.0.0.1", "ports": {"http": 40001}, "ready": true},
            {"instance": "b", "node": "n1", "ip": "127.0.0.1", "ports": {"http": 40002}, "ready": true}
        ]})
    );
}

#[test]
fn only_running_ready_not_terminating_selected_instances() {
    let svc = service(json!([{"name": "http", "port": 80, "targetPort": "http"}]));
    let web = json!({"deployment": "web"});
    let ports = [("http", 40001)];
    let ok = instance("ok", web.clone(), READY, &ports);
    let not_ready = instance("not-ready", web.clone(), (Phase::Running, false), &ports);
    let starting = instance("starting", web.clone(), (Phase::Starting, true), &ports);
    let mut terminating = instance("terminating", web.clone(), READY, &ports);
    terminating.spec.terminating = true;
    let other = instance("other", json!({"deployment": "api"}), READY, &ports);
    let mut elsewhere = instance("elsewhere", web.clone(), READY, &ports);
    elsewhere.metadata.namespace = Some("prod".into());
    let mut no_address = instance("no-address", web.clone(), READY, &ports);
    no_address.status.as_mut().unwrap().address.clear();
    let all = [&ok, &not_ready, &starting, &terminating, &other, &elsewhere, &no_address];
    let names: Vec<String> =
        endpoints_for(&svc, all).addresses.into_iter().map(|a| a.instance).collect();
    assert_eq!(names, ["ok"]);
}

#[test]
fn target_ports_resolve_by_name_or_number_and_keys_are_names_or_numbers() {
    let svc = service(json!([
        {"name": "web", "port": 80, "targetPort": 8080},
        {"name": "ops", "port": 81, "targetPort": "admin"},
        {"name": "missing", "port": 82, "targetPort": "nope"}
    ]));
    let i =
        instance("a", json!({"deployment": "web"}), READY, &[("http", 40001), ("admin", 41001)]);
    let spec = endpoints_for(&svc, [&i]);
    let want: BTreeMap<String, u16> =
        [("ops".to_string(), 41001), ("web".to_string(), 40001)].into();
    assert_eq!(spec.addresses[0].ports, want);

    // An unnamed port is keyed by its number; targetPort defaults to the port itself.
    let svc = service(json!([{"port": 8080}]));
    let spec = endpoints_for(&svc, [&i]);
    assert_eq!(spec.addresses[0].ports, [("8080".to_string(), 40001)].into());
}

#[test]
fn instances_without_the_target_port_are_left_out() {
    let svc = service(json!([{"name": "http", "port": 80, "targetPort": "http"}]));
    // Ready, but the agent has not reported the public port.
    let i = instance("a", json!({"deployment": "web"}), READY, &[("admin", 41001)]);
    assert!(endpoints_for(&svc, [&i]).addresses.is_empty());
}

#[test]
fn the_object_is_named_after_the_service() {
    let svc = service(json!([{"port": 80}]));
    let ep = endpoints_object(&svc, EndpointsSpec::default());
    assert_eq!(ep.metadata.name, "web");
    assert_eq!(ep.metadata.namespace.as_deref(), Some("default"));
    // What we build passes the api's validation.
    weft_api::kinds::ENDPOINTS.normalize(serde_json::to_value(&ep).unwrap()).unwrap();
}
