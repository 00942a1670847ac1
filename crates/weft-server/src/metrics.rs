//! The control plane's Prometheus metrics (`GET /metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    pub route: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

/// Route templates and methods as `'static` label values, so recording a request allocates
/// nothing. Routes are a small fixed set (the router's templates), so interning them is bounded.
pub fn intern(s: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut seen = SEEN.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = seen.get(s) {
        return s;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    seen.insert(leaked);
    leaked
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
    pub action: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RouteLabels, Histogram>,
    pub watchers: Gauge,
    pub pollers: Gauge,
    pub watch_events_sent: Counter,
    pub store_revision: Gauge,
    pub watch_cache_events: Gauge,
    pub writes: Family<KindLabels, Counter>,
    /// Audit records lost because the writer fell behind (the api never waits for it).
    pub audit_dropped: Counter,
    pub audit_records: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("weft_api");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "API requests by method, route and status code",
            requests.clone(),
        );
        let request_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ])
        });
        registry.register(
            "request_duration_seconds",
            "Time to answer an API request (to the first byte for watches)",
            request_duration.clone(),
        );
        let watchers = Gauge::default();
        registry.register("watchers", "Open watch streams", watchers.clone());
        let pollers = Gauge::default();
        registry.register("pollers", "Long-poll requests waiting", pollers.clone());
        let watch_events_sent = Counter::default();
        registry.register(
            "watch_events_sent",
            "Events written to watch streams",
            watch_events_sent.clone(),
        );
        let store_revision = Gauge::default();
        registry.register(
            "store_revision",
            "Latest revision in the watch cache",
            store_revision.clone(),
        );
        let watch_cache_events = Gauge::default();
        registry.register(
            "watch_cache_events",
            "Events held by the watch cache",
            watch_cache_events.clone(),
        );
        let writes = Family::<KindLabels, Counter>::default();
        registry.register("object_writes", "Objects written, by kind and action", writes.clone());
        let audit_dropped = Counter::default();
        registry.register(
            "audit_dropped",
            "Audit records dropped because the audit writer fell behind",
            audit_dropped.clone(),
        );
        let audit_records = Counter::default();
        registry.register("audit_records", "Audit records written", audit_records.clone());
        Metrics {
            registry,
            audit_dropped,
            audit_records,
            requests,
            request_duration,
            watchers,
            pollers,
            watch_events_sent,
            store_revision,
            watch_cache_events,
            writes,
        }
    }

    pub fn record_write(&self, kind: &str, action: &str) {
        self.writes
            .get_or_create(&KindLabels { kind: kind.to_string(), action: action.to_string() })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

type Encode = std::sync::Arc<dyn Fn() -> String + Send + Sync>;

/// More metric registries to serve beside the api's own.
#[derive(Default)]
pub struct Sources(std::sync::RwLock<Vec<Encode>>);

impl Sources {
    pub fn add(&self, encode: impl Fn() -> String + Send + Sync + 'static) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).push(std::sync::Arc::new(encode));
    }

    /// `first` followed by every source, as one exposition: each part's `# EOF` terminator is
    /// dropped and one is put at the end.
    pub fn append_to(&self, first: String) -> String {
        let sources: Vec<Encode> = self.0.read().unwrap_or_else(|p| p.into_inner()).clone();
        if sources.is_empty() {
            return first;
        }
        let mut out = strip_eof(first);
        for encode in sources {
            out.push_str(&strip_eof(encode()));
        }
        out.push_str("# EOF\n");
        out
    }
}

fn strip_eof(mut text: String) -> String {
    if text.ends_with("# EOF\n") {
        text.truncate(text.len() - "# EOF\n".len());
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// Decrements a gauge when a watch or poll ends, however it ends.
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub fn new(g: &Gauge) -> GaugeGuard {
        g.inc();
        GaugeGuard(g.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_make_one_exposition() {
        let m = Metrics::new();
        let sources = Sources::default();
        assert_eq!(sources.append_to("a 1\n# EOF\n".into()), "a 1\n# EOF\n");
        sources.add(|| "weft_controllers_leader 1\n# EOF\n".to_string());
        let text = sources.append_to(m.encode());
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        assert!(text.ends_with("weft_controllers_leader 1\n# EOF\n"), "{text}");
        assert!(text.contains("weft_api_audit_dropped_total 0"), "{text}");
    }
}
