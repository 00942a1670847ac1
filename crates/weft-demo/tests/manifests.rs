//! `examples/shop/*.yaml` pass the api's own decoding and validation (what `weft apply` does
//! before writing anything), and hang together: each Deployment runs the matching `weft-demo`
//! subcommand, each Service selects it, the frontend is on the gateway and catalog scales.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use weft_api::codec::parse_documents;
use weft_api::kinds::normalize;

const SERVICES: [&str; 4] = ["frontend", "catalog", "pricing", "cart"];

/// kind → name → the normalized object (defaults filled in).
fn load() -> BTreeMap<String, BTreeMap<String, Value>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());

    let mut objects: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let docs = parse_documents(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for doc in docs {
            let (info, value) = normalize(doc.value).unwrap_or_else(|e| {
                panic!(
                    "{} document {} (line {:?}): {e} {:?}",
                    file.display(),
                    doc.index,
                    doc.line,
                    e.field
                )
            });
            let name = value["metadata"]["name"].as_str().unwrap().to_string();
            let previous =
                objects.entry(info.kind.to_string()).or_default().insert(name.clone(), value);
            assert!(previous.is_none(), "{} {name} is defined twice", info.kind);
        }
    }
    objects
}

#[test]
fn every_shop_manifest_is_valid_and_consistent() {
    let objects = load();
    let names = |kind: &str| objects.get(kind).map(|m| m.keys().cloned().collect::<Vec<_>>());
    let mut expected: Vec<String> = SERVICES.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(names("Deployment"), Some(expected.clone()));
    assert_eq!(names("Service"), Some(expected));
    assert_eq!(names("Autoscaler"), Some(vec!["catalog".to_string()]));

    for name in SERVICES {
        let deployment = &objects["Deployment"][name];
        let template = &deployment["spec"]["template"];
        assert_eq!(template["command"], serde_json::json!(["weft-demo", name]), "{name}");
        assert_eq!(template["readiness"]["http"]["path"], "/healthz", "{name}");
        let port_name = template["ports"][0]["name"].as_str().unwrap();

        let service = &objects["Service"][name];
        assert_eq!(service["spec"]["selector"], serde_json::json!({ "deployment": name }));
        assert_eq!(service["spec"]["ports"][0]["targetPort"], port_name, "{name}");
        // Callers write plain http://<name>/: the service port must be 80.
        assert_eq!(service["spec"]["ports"][0]["port"], 80, "{name}");
    }

    let traffic = |name: &str| objects["Service"][name]["spec"]["traffic"].clone();
    assert_eq!(objects["Service"]["frontend"]["spec"]["ingress"]["pathPrefix"], "/");
    assert!(traffic("frontend")["rateLimit"]["requestsPerSecond"].is_number());
    assert_eq!(traffic("catalog")["loadBalancer"], "p2c-ewma");
    assert_eq!(traffic("cart")["loadBalancer"], "ring-hash");
    assert_eq!(traffic("cart")["hashHeader"], "x-user-id", "the header the frontend sends");
    for name in SERVICES {
        assert!(objects["Service"][name]["spec"].get("ingress").is_none() || name == "frontend");
    }

    let scaler = &objects["Autoscaler"]["catalog"]["spec"];
    assert_eq!(scaler["target"]["name"], "catalog");
    assert_eq!(
        (scaler["minReplicas"].as_i64(), scaler["maxReplicas"].as_i64()),
        (Some(1), Some(5))
    );
    assert_eq!(scaler["metrics"][0]["type"], "concurrency");
    // Demo cooldowns, not the production defaults of minutes.
    assert_eq!(scaler["behavior"]["scaleUp"]["cooldown"], "10s");
    assert_eq!(scaler["behavior"]["scaleDown"]["cooldown"], "20s");
}
