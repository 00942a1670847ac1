//! Per-instance figures: what the supervisors register, how cpu and memory are measured, and
//! the agent's `/metrics` (DESIGN.md "Agent state": `weft_instance_cpu_seconds_total`,
//! `weft_instance_memory_bytes`, `weft_instance_restarts_total`, plus
//! `weft_instance_sidecar_memory_bytes`, the resident memory of the instance's sidecar).
//!
//! Figures are read fresh at every scrape (the autoscaler scrapes every second): one cgroup
//! file pair per instance, or one pass over `/proc` for all instances without a cgroup.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry as PromRegistry;

use crate::cgroups::Group;
use crate::procfs;
use crate::status::StatusCell;

/// The processes of an instance, as the supervisor last set them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Procs {
    pub app: Option<u32>,
    pub sidecar: Option<u32>,
    pub group: Option<Group>,
}

/// One instance, as seen by metrics, usage reporting and log rotation.
#[derive(Debug)]
pub(crate) struct InstanceStats {
    pub namespace: String,
    pub name: String,
    pub deployment: String,
    pub restarts: AtomicU32,
    pub procs: Mutex<Procs>,
    pub status: Arc<StatusCell>,
    pub log_dir: PathBuf,
    /// The template's termination grace period (how long stopping it may take).
    pub grace: std::time::Duration,
    /// Last (time, cpu seconds) reported in `status.usage`, for the average over the interval.
    pub last_cpu: Mutex<Option<(std::time::Instant, f64)>>,
}

impl InstanceStats {
    pub(crate) fn set_procs(&self, f: impl FnOnce(&mut Procs)) {
        f(&mut self.procs.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn procs(&self) -> Procs {
        self.procs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The live instances, by `<ns>_<name>`.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    map: Mutex<BTreeMap<String, Arc<InstanceStats>>>,
}

impl Registry {
    pub(crate) fn insert(&self, key: String, s: Arc<InstanceStats>) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).insert(key, s);
    }

    pub(crate) fn remove(&self, key: &str) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    pub(crate) fn list(&self) -> Vec<Arc<InstanceStats>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }
}

/// Cpu and memory of one instance at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Measured {
    pub cpu_seconds: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub sidecar_memory_bytes: Option<u64>,
}

/// Measures every instance (blocking: reads `/proc` and cgroup files).
pub(crate) fn measure(list: &[Arc<InstanceStats>]) -> Vec<Measured> {
    let procs: Vec<Procs> = list.iter().map(|s| s.procs()).collect();
    // Apps without a cgroup (or without cpu accounting) are measured through /proc, all in
    // one pass.
    let wanted: HashSet<i32> = procs
        .iter()
        .filter(|p| p.group.as_ref().is_none_or(|g| g.usage().0.is_none()))
        .filter_map(|p| p.app.map(|pid| pid as i32))
        .collect();
    let scanned = procfs::scan_groups(&wanted);
    procs
        .iter()
        .map(|p| {
            let mut m = Measured {
                sidecar_memory_bytes: p.sidecar.and_then(procfs::rss_bytes),
                ..Measured::default()
            };
            let Some(pid) = p.app else { return m };
            if let Some(g) = &p.group {
                let (cpu, mem) = g.usage();
                m.cpu_seconds = cpu;
                m.memory_bytes = mem;
            }
            if let Some(u) = scanned.get(&(pid as i32)) {
                m.cpu_seconds = m.cpu_seconds.or(Some(u.cpu_seconds));
                m.memory_bytes = m.memory_bytes.or(Some(u.memory_bytes));
            }
            m
        })
        .collect()
}

/// One instance's labels, figures and restart count.
type Row = (Vec<(String, String)>, Measured, u32);

/// A scrape's worth of figures, encoded by prometheus-client.
#[derive(Debug)]
struct Snapshot {
    rows: Vec<Row>,
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::TypedMetric;
        {
            let mut e = encoder.encode_descriptor(
                "weft_instance_cpu_seconds",
                "Cpu time used by the instance's app (all its processes), in seconds.",
                None,
                ConstCounter::<f64>::TYPE,
            )?;
            for (labels, m, _) in &self.rows {
                if let Some(v) = m.cpu_seconds {
                    ConstCounter::new(v).encode(e.encode_family(labels)?)?;
                }
            }
        }
        {
            let mut e = encoder.encode_descriptor(
                "weft_instance_memory_bytes",
                "Memory in use by the instance's app (working set), in bytes.",
                None,
                ConstGauge::<i64>::TYPE,
            )?;
            for (labels, m, _) in &self.rows {
                if let Some(v) = m.memory_bytes {
                    ConstGauge::new(v as i64).encode(e.encode_family(labels)?)?;
                }
            }
        }
        {
            let mut e = encoder.encode_descriptor(
                "weft_instance_restarts",
                "Times the instance's app was restarted by this agent.",
                None,
                ConstCounter::<u64>::TYPE,
            )?;
            for (labels, _, restarts) in &self.rows {
                ConstCounter::new(u64::from(*restarts)).encode(e.encode_family(labels)?)?;
            }
        }
        {
            let mut e = encoder.encode_descriptor(
                "weft_instance_sidecar_memory_bytes",
                "Resident memory of the instance's sidecar proxy, in bytes.",
                None,
                ConstGauge::<i64>::TYPE,
            )?;
            for (labels, m, _) in &self.rows {
                if let Some(v) = m.sidecar_memory_bytes {
                    ConstGauge::new(v as i64).encode(e.encode_family(labels)?)?;
                }
            }
        }
        Ok(())
    }
}

/// The Prometheus text of all instances.
pub(crate) fn render(list: &[Arc<InstanceStats>], measured: &[Measured]) -> String {
    let rows = list
        .iter()
        .zip(measured)
        .map(|(s, m)| {
            let labels = vec![
                ("namespace".to_string(), s.namespace.clone()),
                ("instance".to_string(), s.name.clone()),
                ("deployment".to_string(), s.deployment.clone()),
            ];
            (labels, *m, s.restarts.load(Ordering::Relaxed))
        })
        .collect();
    let mut registry = PromRegistry::default();
    registry.register_collector(Box::new(Snapshot { rows }));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_documented_names() {
        let (status, _task) = {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let _g = rt.enter();
            crate::status::start(
                weft_client::Client::new("http://127.0.0.1:9", None).unwrap(),
                "default".into(),
                "web-1".into(),
                Default::default(),
                false,
            )
        };
        let s = Arc::new(InstanceStats {
            namespace: "default".into(),
            name: "web-1".into(),
            deployment: "web".into(),
            restarts: AtomicU32::new(2),
            procs: Mutex::default(),
            status,
            log_dir: PathBuf::new(),
            grace: std::time::Duration::ZERO,
            last_cpu: Mutex::default(),
        });
        let m = Measured {
            cpu_seconds: Some(1.5),
            memory_bytes: Some(1024),
            sidecar_memory_bytes: Some(4096),
        };
        let text = render(&[s], &[m]);
        let labels = r#"{namespace="default",instance="web-1",deployment="web"}"#;
        assert!(text.contains(&format!("weft_instance_cpu_seconds_total{labels} 1.5")), "{text}");
        assert!(text.contains(&format!("weft_instance_memory_bytes{labels} 1024")), "{text}");
        assert!(text.contains(&format!("weft_instance_restarts_total{labels} 2")), "{text}");
        assert!(
            text.contains(&format!("weft_instance_sidecar_memory_bytes{labels} 4096")),
            "{text}"
        );
    }
}
