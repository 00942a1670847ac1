//! `weft sim`, through the real binary: the example files, `--generate`, and bad input (exit 64
//! and one line that says where). No server is involved.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_weft");

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sim").join(name)
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `weft sim ARGS` in `dir`, with no server or data dir to find.
fn sim(dir: &Path, args: &[&str]) -> Out {
    let out = Command::new(BIN)
        .arg("sim")
        .args(args)
        .current_dir(dir)
        .env_remove("WEFT_SERVER")
        .env_remove("WEFT_TOKEN")
        .env("WEFT_DATA_DIR", dir.join("no-data-dir"))
        .output()
        .expect("running weft");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Exit 64, nothing on stdout, and one `error: …` line on stderr; returns the message.
#[track_caller]
fn usage_error(out: &Out) -> String {
    assert_eq!(out.code, 64, "exit code; stdout: {}; stderr: {}", out.stdout, out.stderr);
    assert_eq!(out.stdout, "", "stdout on error");
    let line = out.stderr.strip_suffix('\n').unwrap_or(&out.stderr);
    assert!(!line.contains('\n'), "more than one line on stderr: {:?}", out.stderr);
    assert!(line.starts_with("error: "), "{line:?}");
    assert!(!line.contains("panicked"), "{line:?}");
    line.trim_start_matches("error: ").to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[track_caller]
fn assert_outputs(dir: &Path) {
    let csv = std::fs::read_to_string(dir.join("timeline.csv")).expect("timeline.csv");
    assert!(csv.starts_with("t,rps,weft_desired,weft_ready,hpa_desired,hpa_ready\n"), "{csv}");
    let svg = std::fs::read_to_string(dir.join("chart.svg")).expect("chart.svg");
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.trim_end().ends_with("</svg>"));
}

/// The value of a summary row for weft and for the hpa.
fn row(stdout: &str, label: &str) -> (u64, u64) {
    let table = stdout.split("(lower is better)").nth(1).expect("summary table");
    let line = table.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| {
        panic!("no {label:?} row in:\n{stdout}");
    });
    let nums: Vec<u64> =
        line[label.len()..].split_whitespace().filter_map(|w| w.parse().ok()).collect();
    (nums[0], nums[1])
}

#[test]
fn replays_the_example_files() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = example("step.csv");
    let scaler = example("catalog-autoscaler.yaml");
    let out = sim(
        tmp.path(),
        &[
            "--trace",
            trace.to_str().unwrap(),
            "--autoscaler",
            scaler.to_str().unwrap(),
            "--out",
            "results/run1",
        ],
    );
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stderr, "");
    let s = &out.stdout;
    assert!(s.contains("catalog"), "{s}");
    let header = s.lines().find(|l| l.contains("(lower is better)")).expect("summary header");
    assert!(header.contains("weft") && header.contains("hpa") && header.contains("weft/hpa"));
    let (w_over, h_over) = row(s, "seconds over objective");
    let (w_rs, h_rs) = row(s, "replica-seconds");
    let (w_ev, h_ev) = row(s, "scale events");
    // The step needs more than one instance: both scale, and weft (burst mode, 1 s loop)
    // catches up sooner than the HPA (15 s loop), and gives back sooner (no 5 min window).
    assert!(w_ev > 0 && h_ev > 0, "{s}");
    assert!(w_over < h_over, "{s}");
    assert!(w_rs < h_rs, "{s}");
    // One sparkline per contender, and the scale events.
    assert!(s.lines().any(|l| l.trim_start().starts_with("weft |")), "{s}");
    assert!(s.lines().any(|l| l.trim_start().starts_with("hpa  |")), "{s}");
    assert!(s.contains("1 → 2"), "{s}");
    // Says where the files went.
    let dir = tmp.path().join("results/run1");
    assert!(s.contains("results/run1/timeline.csv") && s.contains("results/run1/chart.svg"), "{s}");
    assert_outputs(&dir);
    // 421 seconds, one row each.
    let csv = std::fs::read_to_string(dir.join("timeline.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 421);
}

#[test]
fn the_default_out_dir_is_the_current_one() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = example("step.csv");
    let scaler = example("catalog-autoscaler.yaml");
    let out = sim(
        tmp.path(),
        &["--trace", trace.to_str().unwrap(), "--autoscaler", scaler.to_str().unwrap()],
    );
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_outputs(tmp.path());
}

#[test]
fn generate_writes_an_example_trace() {
    let tmp = tempfile::tempdir().unwrap();
    let out = sim(tmp.path(), &["--generate", "step"]);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert!(out.stdout.contains("step.csv"), "{}", out.stdout);
    let written = std::fs::read_to_string(tmp.path().join("step.csv")).unwrap();
    // The example file is what --generate step writes.
    assert_eq!(written, std::fs::read_to_string(example("step.csv")).unwrap());
    // Nothing simulated without an autoscaler.
    assert!(!tmp.path().join("chart.svg").exists());
    // Again: the same file is fine.
    assert_eq!(sim(tmp.path(), &["--generate", "step"]).code, 0);

    // flat, to a named file, and replayed at once.
    let scaler = example("catalog-autoscaler.yaml");
    let out = sim(
        tmp.path(),
        &[
            "--generate",
            "flat",
            "--trace",
            "traces/flat.csv",
            "--autoscaler",
            scaler.to_str().unwrap(),
            "--out",
            "flat",
        ],
    );
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert!(out.stdout.contains("(lower is better)"), "{}", out.stdout);
    let flat = std::fs::read_to_string(tmp.path().join("traces/flat.csv")).unwrap();
    assert_eq!(flat.lines().count(), 1 + 601);
    assert_outputs(&tmp.path().join("flat"));

    // Never over someone's data.
    let mine = write(tmp.path(), "mine.csv", "0,1\n10,2\n");
    let msg = usage_error(&sim(tmp.path(), &["--generate", "step", "--trace", &mine]));
    assert!(msg.contains("mine.csv") && msg.contains("not overwriting"), "{msg}");
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "0,1\n10,2\n");
}

#[test]
fn bad_traces_name_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let scaler = example("catalog-autoscaler.yaml");
    let scaler = scaler.to_str().unwrap();
    let cases = [
        ("malformed.csv", "seconds,rps\n0,10\n5;20\n", ":3:", "expected two fields"),
        ("decreasing.csv", "0,10\n30,20\n20,20\n", ":3:", "time must increase"),
        ("repeated.csv", "0,10\n30,20\n30,25\n", ":3:", "time must increase"),
        ("negative.csv", "seconds,rps\n0,10\n\n5,-1\n", ":4:", "negative"),
        ("words.csv", "0,10\n5,lots\n", ":2:", "not a number"),
        ("empty.csv", "seconds,rps\n", ":1:", "empty"),
    ];
    for (name, text, line, what) in cases {
        let path = write(tmp.path(), name, text);
        let msg = usage_error(&sim(tmp.path(), &["--trace", &path, "--autoscaler", scaler]));
        assert!(msg.starts_with(&format!("{path}{line}")), "{name}: {msg}");
        assert!(msg.contains(what), "{name}: {msg}");
    }
    // Nothing written on error.
    assert!(!tmp.path().join("timeline.csv").exists());
    assert!(!tmp.path().join("chart.svg").exists());
}

#[test]
fn bad_autoscalers_name_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = example("step.csv");
    let trace = trace.to_str().unwrap();
    let run = |yaml: &str, extra: &[&str]| {
        let path = write(tmp.path(), "scaler.yaml", yaml);
        let mut args = vec!["--trace", trace, "--autoscaler", &path];
        args.extend_from_slice(extra);
        usage_error(&sim(tmp.path(), &args))
    };
    let head = "apiVersion: weft/v1\nkind: Autoscaler\nmetadata: {name: web}\nspec:\n  target: {name: web}\n";

    let msg = run(&format!("{head}  minReplicas: 4\n  maxReplicas: 2\n"), &[]);
    assert!(
        msg.contains(
            "scaler.yaml:1: Autoscaler web: spec.minReplicas: 4 is more than maxReplicas 2"
        ),
        "{msg}"
    );

    let msg = run(&format!("{head}  maxReplicas: 5\n  metrics: [{{type: rps}}]\n"), &[]);
    assert!(msg.contains("spec.metrics[0].target"), "{msg}");

    // Utilisation targets need a request: say which flag gives it.
    let cpu = format!(
        "{head}  maxReplicas: 5\n  metrics: [{{type: rps, target: 50}}, {{type: cpu, targetUtilization: 70}}]\n"
    );
    let msg = run(&cpu, &[]);
    assert!(
        msg.contains("spec.metrics[1].targetUtilization") && msg.contains("--cpu-request"),
        "{msg}"
    );
    let path = write(tmp.path(), "cpu.yaml", &cpu);
    let out = sim(
        tmp.path(),
        &["--trace", trace, "--autoscaler", &path, "--cpu-request", "250m", "--out", "cpu"],
    );
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert!(out.stdout.contains("cpu is not simulated"), "{}", out.stdout);

    // Exactly one Autoscaler.
    let svc = "apiVersion: weft/v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {a: b}\n  ports: [{name: http, port: 80}]\n";
    let msg = run(svc, &[]);
    assert!(msg.contains("no Autoscaler") && msg.contains("Service web"), "{msg}");
    let two = format!(
        "{head}  maxReplicas: 5\n---\n{}  maxReplicas: 5\n",
        head.replace("{name: web}\nspec", "{name: api}\nspec")
    );
    let msg = run(&two, &[]);
    assert!(msg.contains("2 Autoscalers") && msg.contains("exactly one"), "{msg}");

    // Broken YAML and bad flags.
    let msg = run("kind: [\n", &[]);
    assert!(msg.contains("scaler.yaml"), "{msg}");
    let msg = run(&format!("{head}  maxReplicas: 5\n"), &["--start-delay", "5"]);
    assert!(msg.starts_with("--start-delay:"), "{msg}");
    let msg = run(&format!("{head}  maxReplicas: 5\n"), &["--capacity=-3"]);
    assert!(msg.starts_with("--capacity:"), "{msg}");
}

#[test]
fn missing_files_get_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let scaler = example("catalog-autoscaler.yaml");
    let msg = usage_error(&sim(
        tmp.path(),
        &["--trace", "nope.csv", "--autoscaler", scaler.to_str().unwrap()],
    ));
    assert!(msg.contains("nope.csv"), "{msg}");
    let trace = example("step.csv");
    let msg = usage_error(&sim(
        tmp.path(),
        &["--trace", trace.to_str().unwrap(), "--autoscaler", "nope.yaml"],
    ));
    assert!(msg.contains("nope.yaml"), "{msg}");
}

#[test]
fn help_shows_examples() {
    let tmp = tempfile::tempdir().unwrap();
    let out = sim(tmp.path(), &["--help"]);
    assert_eq!(out.code, 0);
    for s in [
        "--trace",
        "--autoscaler",
        "--generate",
        "--capacity",
        "--start-delay",
        "--cpu-request",
        "--memory-request",
        "--out",
        "Examples:",
        "weft sim --generate step",
    ] {
        assert!(out.stdout.contains(s), "{s} missing from:\n{}", out.stdout);
    }
}
