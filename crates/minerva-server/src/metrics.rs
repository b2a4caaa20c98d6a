//! Prometheus metrics (`GET /metrics`, text exposition format).

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

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
        let mut m = Metrics {
            registry: Registry::with_prefix("minerva"),
            requests: Family::default(),
            prompt_tokens: Counter::default(),
            generated_tokens: Counter::default(),
            cancelled: Counter::default(),
            queue_depth: Gauge::default(),
            active: Gauge::default(),
            kv_tokens: Gauge::default(),
            kv_bytes: Gauge::default(),
            // 1 ms .. ~65 s.
            time_to_first_token: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            // 0.5 ms .. ~1 s.
            inter_token_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 12)),
        };
        let r = &mut m.registry;
        r.register(
            "requests",
            "HTTP API requests by endpoint and status",
            m.requests.clone(),
        );
        r.register(
            "prompt_tokens",
            "Prompt tokens admitted for generation",
            m.prompt_tokens.clone(),
        );
        r.register(
            "generated_tokens",
            "Tokens generated",
            m.generated_tokens.clone(),
        );
        r.register(
            "cancelled_generations",
            "Generations dropped because the client disconnected",
            m.cancelled.clone(),
        );
        r.register(
            "queue_depth",
            "Generations waiting for a slot",
            m.queue_depth.clone(),
        );
        r.register(
            "active_generations",
            "Generations in progress",
            m.active.clone(),
        );
        r.register(
            "kv_cache_tokens",
            "Tokens held in KV caches",
            m.kv_tokens.clone(),
        );
        r.register(
            "kv_cache_bytes",
            "Bytes allocated for KV caches",
            m.kv_bytes.clone(),
        );
        r.register(
            "time_to_first_token_seconds",
            "From request to first generated token, queueing included",
            m.time_to_first_token.clone(),
        );
        r.register(
            "inter_token_latency_seconds",
            "Time between successive tokens of one generation",
            m.inter_token_latency.clone(),
        );
        m
    }
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
