//! Prometheus metrics (`GET /metrics`, text exposition format).

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: String,
    pub status: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub prompt_tokens: Counter,
    pub generated_tokens: Counter,
    /// Generations dropped because their client left.
    pub cancelled: Counter,
    /// Generations waiting for a slot.
    pub queue_depth: Gauge,
    /// Generations being advanced.
    pub active: Gauge,
    /// Tokens held in the KV caches of active generations.
    pub kv_tokens: Gauge,
    /// Bytes allocated by those caches.
    pub kv_bytes: Gauge,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("minerva");
        let r = &mut registry;
        Metrics {
            requests: registered(
                r,
                "requests",
                "HTTP API requests by endpoint and status",
                Family::default(),
            ),
            prompt_tokens: registered(
                r,
                "prompt_tokens",
                "Prompt tokens admitted for generation",
                Counter::default(),
            ),
            generated_tokens: registered(
                r,
                "generated_tokens",
                "Tokens generated",
                Counter::default(),
            ),
            cancelled: registered(
                r,
                "cancelled_generations",
                "Generations dropped because the client disconnected",
                Counter::default(),
            ),
            queue_depth: registered(
                r,
                "queue_depth",
                "Generations waiting for a slot",
                Gauge::default(),
            ),
            active: registered(
                r,
                "active_generations",
                "Generations in progress",
                Gauge::default(),
            ),
            kv_tokens: registered(
                r,
                "kv_cache_tokens",
                "Tokens held in KV caches",
                Gauge::default(),
            ),
            kv_bytes: registered(
                r,
                "kv_cache_bytes",
                "Bytes allocated for KV caches",
                Gauge::default(),
            ),
            time_to_first_token: registered(
                r,
                "time_to_first_token_seconds",
                "From request to first generated token, queueing included",
                // 1 ms .. ~65 s.
                Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            ),
            inter_token_latency: registered(
                r,
                "inter_token_latency_seconds",
                "Time between successive tokens of one generation",
                // 0.5 ms .. ~1 s.
                Histogram::new(exponential_buckets(0.0005, 2.0, 12)),
            ),
            registry,
        }
    }
}

/// Registers `metric` under `name` and returns it (metrics are shared handles).
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    pub fn count_request(&self, endpoint: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_string(),
                status: status.to_string(),
            })
            .inc();
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
