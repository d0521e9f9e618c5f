//! Counters, gauges and a latency histogram, kept in `prometheus-client`
//! metrics (the official Rust client) and rendered in its OpenMetrics text.
//!
//! Every series is made when its target is (all label values at zero), so
//! that scrapes see them from the start; a counter bump on the request path
//! is one atomic add on a handle kept by the target (no label lookup).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::request::BadMessage;

/// Why a request was not mirrored (to one target, or at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The target's queue was full.
    QueueFull,
    /// Too many bytes were queued already.
    QueueBytes,
    /// Not picked by `--sample`.
    SampledOut,
    /// Excluded by a method or path filter.
    Filtered,
    /// The body was cut short by HAProxy (and `--send-truncated` is off).
    TruncatedBody,
    /// The message could not be turned into a request.
    BadMessage,
    /// The target is backing off after connection errors.
    TargetBackoff,
    /// The agent was shutting down and the drain deadline passed (or the
    /// target was removed by a reload and its queue could not drain).
    Shutdown,
    /// Over the target's `rate_limit`.
    RateLimited,
    /// The request carries the loop marker: it is a mirrored one.
    Loop,
}

impl Reason {
    const ALL: [Self; 10] = [
        Self::QueueFull,
        Self::QueueBytes,
        Self::SampledOut,
        Self::Filtered,
        Self::TruncatedBody,
        Self::BadMessage,
        Self::TargetBackoff,
        Self::Shutdown,
        Self::RateLimited,
        Self::Loop,
    ];

    /// The reason's label.
    pub const fn label(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::QueueBytes => "queue_bytes",
            Self::SampledOut => "sampled_out",
            Self::Filtered => "filtered",
            Self::TruncatedBody => "truncated_body",
            Self::BadMessage => "bad_message",
            Self::TargetBackoff => "target_backoff",
            Self::Shutdown => "shutdown",
            Self::RateLimited => "rate_limited",
            Self::Loop => "loop",
        }
    }
}

/// Latency buckets, in seconds.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What went wrong with a mirrored request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetError {
    /// Could not connect.
    Connect,
    /// The request or its answer took longer than `--request-timeout`.
    Timeout,
    /// Anything else (reset, protocol error...).
    Other,
    /// The TLS handshake failed (certificate not trusted, no common
    /// protocol...).
    Tls,
}

impl TargetError {
    const ALL: [Self; 4] = [Self::Connect, Self::Timeout, Self::Other, Self::Tls];
    const fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Other => "other",
            Self::Tls => "tls",
        }
    }
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label sets: `(name, value)` pairs.
type Labels = Vec<(&'static str, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Registers a counter family with one label and returns its counters for
/// `values`, in their order (created at once, so that every value shows,
/// at 0, from the start).
fn labelled<const N: usize>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: [&'static str; N],
) -> [Counter; N] {
    let family = Counters::default();
    registry.register(name, help, family.clone());
    values.map(|v| family.get_or_create(&vec![(label, v.to_owned())]).clone())
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The per-target reasons shown in `spop_mirror_target_dropped_total`.
const TARGET_REASONS: [Reason; 7] = [
    Reason::QueueFull,
    Reason::QueueBytes,
    Reason::TargetBackoff,
    Reason::Shutdown,
    Reason::Filtered,
    Reason::SampledOut,
    Reason::RateLimited,
];

/// The families with a `target` label.
#[derive(Debug, Clone)]
struct TargetFamilies {
    mirrored: Counters,
    errors: Counters,
    dropped: Counters,
    up: Gauges,
    outages: Counters,
    queue_depth: Gauges,
    in_flight: Gauges,
    latency: Histograms,
}

impl TargetFamilies {
    fn new() -> Self {
        Self {
            mirrored: Counters::default(),
            errors: Counters::default(),
            dropped: Counters::default(),
            up: Gauges::default(),
            outages: Counters::default(),
            queue_depth: Gauges::default(),
            in_flight: Gauges::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
        }
    }
}

fn target_labels(label: &str) -> Labels {
    vec![("target", label.to_owned())]
}

fn with(label: &str, key: &'static str, value: &str) -> Labels {
    vec![("target", label.to_owned()), (key, value.to_owned())]
}

/// Per-target figures: handles on the target's series.
#[derive(Debug)]
pub struct TargetMetrics {
    /// The target's name, as a label.
    pub label: String,
    responses: [Counter; 5],
    errors: [Counter; TargetError::ALL.len()],
    dropped: [Counter; Reason::ALL.len()],
    latency: Histogram,
    queue_depth: Gauge,
    in_flight: Gauge,
    up: Gauge,
    down: AtomicBool,
    outages: Counter,
}

impl TargetMetrics {
    fn new(label: String, f: &TargetFamilies) -> Self {
        let responses = std::array::from_fn(|i| {
            f.mirrored
                .get_or_create(&with(&label, "class", &format!("{}xx", i + 1)))
                .clone()
        });
        let errors = std::array::from_fn(|i| {
            TargetError::ALL
                .get(i)
                .map(|e| {
                    f.errors
                        .get_or_create(&with(&label, "kind", e.label()))
                        .clone()
                })
                .unwrap_or_default()
        });
        // Reasons not shown per target count in handles of their own.
        let dropped = std::array::from_fn(|i| match Reason::ALL.get(i) {
            Some(r) if TARGET_REASONS.contains(r) => f
                .dropped
                .get_or_create(&with(&label, "reason", r.label()))
                .clone(),
            _ => Counter::default(),
        });
        let labels = target_labels(&label);
        let up = f.up.get_or_create(&labels).clone();
        up.set(1);
        Self {
            responses,
            errors,
            dropped,
            latency: f.latency.get_or_create(&labels).clone(),
            queue_depth: f.queue_depth.get_or_create(&labels).clone(),
            in_flight: f.in_flight.get_or_create(&labels).clone(),
            up,
            down: AtomicBool::new(false),
            outages: f.outages.get_or_create(&labels).clone(),
            label,
        }
    }

    /// Removes the target's series (a reload removed it).
    fn unregister(&self, f: &TargetFamilies) {
        let label = &self.label;
        for class in 1..=5 {
            f.mirrored
                .remove(&with(label, "class", &format!("{class}xx")));
        }
        for e in TargetError::ALL {
            f.errors.remove(&with(label, "kind", e.label()));
        }
        for r in TARGET_REASONS {
            f.dropped.remove(&with(label, "reason", r.label()));
        }
        let labels = target_labels(label);
        f.up.remove(&labels);
        f.outages.remove(&labels);
        f.queue_depth.remove(&labels);
        f.in_flight.remove(&labels);
        f.latency.remove(&labels);
    }

    /// Counts an answer with this status, and its latency.
    pub fn response(&self, status: u16, took: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        if let Some(c) = self.responses.get(class) {
            c.inc();
        }
        self.latency.observe(took.as_secs_f64());
    }

    /// Counts a failed request.
    pub fn error(&self, e: TargetError) {
        if let Some(c) = self.errors.get(e as usize) {
            c.inc();
        }
    }

    /// Counts a request this target did not get.
    pub fn count_drop(&self, why: Reason) {
        if let Some(c) = self.dropped.get(why as usize) {
            c.inc();
        }
    }

    /// Answers received with status `class`xx (1 to 5).
    pub fn responses(&self, class: usize) -> u64 {
        self.responses
            .get(class.wrapping_sub(1))
            .map_or(0, Counter::get)
    }

    /// Errors of this kind.
    pub fn errors(&self, e: TargetError) -> u64 {
        self.errors.get(e as usize).map_or(0, Counter::get)
    }

    /// Requests dropped for this target for this reason.
    pub fn dropped(&self, why: Reason) -> u64 {
        self.dropped.get(why as usize).map_or(0, Counter::get)
    }

    /// Answers received, all statuses.
    pub fn mirrored(&self) -> u64 {
        self.responses.iter().map(Counter::get).sum()
    }

    pub(crate) fn queue(&self, delta: i64) {
        self.queue_depth.inc_by(delta);
    }

    pub(crate) fn flight(&self, delta: i64) {
        self.in_flight.inc_by(delta);
    }

    /// Requests sent to this target and not answered yet.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// Requests waiting in this target's queue.
    pub fn queue_depth(&self) -> i64 {
        self.queue_depth.get()
    }

    pub(crate) fn went_down(&self) {
        self.outages.inc();
        self.down.store(true, Relaxed);
        self.up.set(0);
    }

    pub(crate) fn came_back(&self) {
        self.down.store(false, Relaxed);
        self.up.set(1);
    }

    /// Outages so far (a failed connection while the target was up starts one).
    pub fn outages(&self) -> u64 {
        self.outages.get()
    }

    /// Whether the target is taken as reachable.
    pub fn is_up(&self) -> bool {
        !self.down.load(Relaxed)
    }
}

/// Distinct `field` labels shown in the comparison's families; past it, a
/// new one is counted as `other` (JSON paths come from the data).
pub const MAX_FIELD_LABELS: usize = 200;

/// The comparison's figures (see [`crate::compare`]).
#[derive(Debug)]
pub struct CompareMetrics {
    compared: Counters,
    differences: Counters,
    noise: Counters,
    latency: Histograms,
    /// production, shadow, both.
    expired: [Counter; 3],
    /// production, shadow.
    unmatched: [Counter; 2],
    /// production, shadow.
    too_large: [Counter; 2],
    repeated: Counter,
    evicted: Counter,
    truncated: Counter,
    json_fallback: Counter,
    opened: Counter,
    queue_full: Counter,
    bad: [Counter; BadMessage::ALL.len()],
    bad_logged: [AtomicBool; BadMessage::ALL.len()],
    open: Gauge,
    bytes: Gauge,
    /// The `field` labels in use (at most [`MAX_FIELD_LABELS`]).
    fields: Mutex<HashSet<String>>,
}

impl CompareMetrics {
    fn new(registry: &mut Registry) -> Self {
        let compared = Counters::default();
        registry.register(
            "spop_mirror_compare",
            "compared requests by candidate target and result (equal, different)",
            compared.clone(),
        );
        let differences = Counters::default();
        registry.register(
            "spop_mirror_compare_differences",
            "differences reported against a candidate, by field (status, header:NAME, body, json:PATH; past 200 distinct fields: other)",
            differences.clone(),
        );
        let noise = Counters::default();
        registry.register(
            "spop_mirror_compare_noise",
            "differences not reported because production and the baseline differ there too, by field",
            noise.clone(),
        );
        let latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "spop_mirror_compare_latency_seconds",
            "time from the request's arrival at the agent to its answer, production's and the candidate's, of compared requests",
            latency.clone(),
        );
        let expired_family = Counters::default();
        registry.register(
            "spop_mirror_compare_expired",
            "compared requests dropped at the deadline, by the half missing (production, shadow, both)",
            expired_family.clone(),
        );
        let expired = ["production", "shadow", "both"].map(|m| {
            expired_family
                .get_or_create(&vec![("missing", m.to_owned())])
                .clone()
        });
        let unmatched_family = Counters::default();
        registry.register(
            "spop_mirror_compare_unmatched",
            "answers for no open comparison (never opened, already done, expired or evicted), by side",
            unmatched_family.clone(),
        );
        let unmatched = ["production", "shadow"].map(|m| {
            unmatched_family
                .get_or_create(&vec![("side", m.to_owned())])
                .clone()
        });
        let too_large_family = Counters::default();
        registry.register(
            "spop_mirror_compare_too_large",
            "answers over compare-max-bytes on their own (not kept; their comparisons given up), by side",
            too_large_family.clone(),
        );
        let too_large = ["production", "shadow"].map(|m| {
            too_large_family
                .get_or_create(&vec![("side", m.to_owned())])
                .clone()
        });
        let mut one = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let repeated = one(
            "spop_mirror_compare_repeated",
            "unique-ids opened again while open (the older entry is dropped)",
        );
        let evicted = one(
            "spop_mirror_compare_evicted",
            "entries dropped because the store was full (compare-max-entries, compare-max-bytes)",
        );
        let truncated = one(
            "spop_mirror_compare_truncated",
            "comparisons where a body was cut (compared by what arrived)",
        );
        let json_fallback = one(
            "spop_mirror_compare_json_fallback",
            "JSON comparisons where a body was not JSON (compared by digest)",
        );
        let opened = one(
            "spop_mirror_compare_opened",
            "requests chosen for comparison and queued to a candidate",
        );
        let queue_full = one(
            "spop_mirror_compare_queue_full",
            "comparison work (a request to open, an answer) dropped because the comparison thread's queue was full",
        );
        let bad = labelled(
            registry,
            "spop_mirror_compare_bad_messages",
            "compare messages that could not be read, by kind",
            "kind",
            BadMessage::ALL.map(BadMessage::label),
        );
        let open = Gauge::default();
        registry.register(
            "spop_mirror_compare_open",
            "compared requests awaiting answers",
            open.clone(),
        );
        let bytes = Gauge::default();
        registry.register(
            "spop_mirror_compare_bytes",
            "bytes of answers kept awaiting the other half",
            bytes.clone(),
        );
        Self {
            compared,
            differences,
            noise,
            latency,
            expired,
            unmatched,
            too_large,
            repeated,
            evicted,
            truncated,
            json_fallback,
            opened,
            queue_full,
            bad,
            bad_logged: Default::default(),
            open,
            bytes,
            fields: Mutex::new(HashSet::new()),
        }
    }

    /// The label of a field: itself while fewer than [`MAX_FIELD_LABELS`]
    /// are in use, else `other`.
    fn field(&self, label: String) -> String {
        let Ok(mut seen) = self.fields.lock() else {
            return "other".to_owned();
        };
        if seen.contains(&label) {
            return label;
        }
        if seen.len() < MAX_FIELD_LABELS {
            seen.insert(label.clone());
            return label;
        }
        "other".to_owned()
    }

    /// Makes a candidate's `spop_mirror_compare_total` series (at zero).
    pub fn candidate(&self, target: &str) {
        for result in ["equal", "different"] {
            let _ = self.compared.get_or_create(&with(target, "result", result));
        }
    }

    /// Counts one event of the store.
    pub fn event(&self, e: &crate::compare::Event) {
        use crate::compare::{Event, Side};
        match e {
            Event::Compared {
                candidate,
                report,
                production_latency,
                candidate_latency,
                ..
            } => {
                let target: &str = candidate;
                let result = if report.is_equal() {
                    "equal"
                } else {
                    "different"
                };
                self.compared
                    .get_or_create(&with(target, "result", result))
                    .inc();
                for d in &report.differences {
                    let field = self.field(d.field.label());
                    self.differences
                        .get_or_create(&with(target, "field", &field))
                        .inc();
                }
                for n in &report.noise {
                    let field = self.field(n.label());
                    self.noise
                        .get_or_create(&with(target, "field", &field))
                        .inc();
                }
                if report.truncated {
                    self.truncated.inc();
                }
                if report.json_fallback {
                    self.json_fallback.inc();
                }
                self.latency
                    .get_or_create(&with(target, "side", "production"))
                    .observe(production_latency.as_secs_f64());
                self.latency
                    .get_or_create(&with(target, "side", "candidate"))
                    .observe(candidate_latency.as_secs_f64());
            }
            Event::Expired {
                missing_production,
                missing_shadow,
                ..
            } => {
                let i = match (missing_production, missing_shadow) {
                    (true, true) => 2,
                    (true, false) => 0,
                    (false, true) => 1,
                    (false, false) => return,
                };
                if let Some(c) = self.expired.get(i) {
                    c.inc();
                }
            }
            Event::Unmatched { side } => {
                let i = usize::from(!matches!(side, Side::Production));
                if let Some(c) = self.unmatched.get(i) {
                    c.inc();
                }
            }
            Event::TooLarge { side } => {
                let i = usize::from(!matches!(side, Side::Production));
                if let Some(c) = self.too_large.get(i) {
                    c.inc();
                }
            }
            Event::Repeated => {
                self.repeated.inc();
            }
            Event::Evicted => {
                self.evicted.inc();
            }
        }
    }

    /// Counts a request chosen for comparison (the store opened it).
    pub fn opened(&self) {
        self.opened.inc();
    }

    /// Counts work dropped because the comparison thread's queue was full.
    pub fn queue_full(&self) {
        self.queue_full.inc();
    }

    /// The store's size now.
    pub fn store(&self, entries: usize, bytes: usize) {
        self.open.set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Counts a bad compare message; `true` the first time this kind is
    /// seen (log it then).
    pub fn bad_message(&self, kind: BadMessage) -> bool {
        let i = BadMessage::ALL.iter().position(|&k| k == kind).unwrap_or(0);
        if let Some(c) = self.bad.get(i) {
            c.inc();
        }
        self.bad_logged
            .get(i)
            .is_some_and(|l| !l.swap(true, Relaxed))
    }

    /// Compared requests of this candidate with this result (`equal`,
    /// `different`).
    pub fn compared(&self, target: &str, result: &str) -> u64 {
        self.compared
            .get_or_create(&with(target, "result", result))
            .get()
    }

    /// Differences of this candidate in this field (its label).
    pub fn differences(&self, target: &str, field: &str) -> u64 {
        self.differences
            .get_or_create(&with(target, "field", field))
            .get()
    }

    /// Requests chosen for comparison.
    pub fn opened_total(&self) -> u64 {
        self.opened.get()
    }

    /// Entries expired with this half missing (`production`, `shadow`, `both`).
    pub fn expired(&self, missing: &str) -> u64 {
        let i = match missing {
            "production" => 0,
            "shadow" => 1,
            _ => 2,
        };
        self.expired.get(i).map_or(0, Counter::get)
    }

    /// Compared requests awaiting answers now.
    pub fn open_now(&self) -> i64 {
        self.open.get()
    }
}

/// Everything spop-mirror counts.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    received: Counter,
    accepted: Counter,
    dropped: [Counter; Reason::ALL.len()],
    bad: [Counter; BadMessage::ALL.len()],
    bad_logged: [AtomicBool; BadMessage::ALL.len()],
    uri_reencoded: Counter,
    queued_bytes: Gauge,
    families: TargetFamilies,
    /// Per target, in configuration order; replaced on reload (a target
    /// kept keeps its figures).
    targets: RwLock<Vec<Arc<TargetMetrics>>>,
    config_generation: Gauge,
    config_loaded: Gauge<f64, std::sync::atomic::AtomicU64>,
    config_reload_failures: Counter,
    compare: CompareMetrics,
}

impl Metrics {
    /// Metrics for these targets.
    pub fn new(targets: impl IntoIterator<Item = String>) -> Arc<Self> {
        let mut registry = Registry::default();
        let received = Counter::default();
        registry.register(
            "spop_mirror_requests_received",
            "mirror messages received from HAProxy",
            received.clone(),
        );
        let accepted = Counter::default();
        registry.register(
            "spop_mirror_requests_accepted",
            "requests queued for at least one target",
            accepted.clone(),
        );
        let dropped = labelled(
            &mut registry,
            "spop_mirror_requests_dropped",
            "requests not mirrored, by reason (per target: see spop_mirror_target_dropped_total)",
            "reason",
            Reason::ALL.map(Reason::label),
        );
        let bad = labelled(
            &mut registry,
            "spop_mirror_bad_messages",
            "messages that could not become requests, by kind",
            "kind",
            BadMessage::ALL.map(BadMessage::label),
        );
        let uri_reencoded = Counter::default();
        registry.register(
            "spop_mirror_uri_reencoded",
            "URLs whose bytes had to be percent-encoded",
            uri_reencoded.clone(),
        );
        let queued_bytes = Gauge::default();
        registry.register(
            "spop_mirror_queued_bytes",
            "bytes of requests waiting in queues",
            queued_bytes.clone(),
        );
        let f = TargetFamilies::new();
        registry.register(
            "spop_mirror_requests_mirrored",
            "requests a target answered, by status class",
            f.mirrored.clone(),
        );
        registry.register(
            "spop_mirror_target_errors",
            "mirrored requests that failed, by kind",
            f.errors.clone(),
        );
        registry.register(
            "spop_mirror_target_dropped",
            "requests a target did not get, by reason",
            f.dropped.clone(),
        );
        registry.register(
            "spop_mirror_target_up",
            "1 while a target is reachable, 0 while it is probed after a failed connection",
            f.up.clone(),
        );
        registry.register(
            "spop_mirror_target_outages",
            "times a target became unreachable",
            f.outages.clone(),
        );
        registry.register(
            "spop_mirror_queue_depth",
            "requests waiting per target",
            f.queue_depth.clone(),
        );
        registry.register(
            "spop_mirror_in_flight",
            "requests being sent per target",
            f.in_flight.clone(),
        );
        registry.register(
            "spop_mirror_latency_seconds",
            "time from sending a mirrored request to the end of its answer",
            f.latency.clone(),
        );
        let config_generation = Gauge::default();
        registry.register(
            "spop_mirror_config_generation",
            "the configuration in force: 1 at start-up, +1 per reload applied",
            config_generation.clone(),
        );
        let config_loaded = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "spop_mirror_config_loaded_timestamp_seconds",
            "when the configuration in force was read (Unix time)",
            config_loaded.clone(),
        );
        let config_reload_failures = Counter::default();
        registry.register(
            "spop_mirror_config_reload_failures",
            "reloads refused (the file did not parse or a setting was bad)",
            config_reload_failures.clone(),
        );
        let compare = CompareMetrics::new(&mut registry);
        let targets = targets
            .into_iter()
            .map(|t| Arc::new(TargetMetrics::new(t, &f)))
            .collect();
        Arc::new(Self {
            registry,
            received,
            accepted,
            dropped,
            bad,
            bad_logged: Default::default(),
            uri_reencoded,
            queued_bytes,
            families: f,
            targets: RwLock::new(targets),
            config_generation,
            config_loaded,
            config_reload_failures,
            compare,
        })
    }

    /// The comparison's figures.
    pub const fn compare(&self) -> &CompareMetrics {
        &self.compare
    }

    /// The targets' figures now, in configuration order.
    pub fn targets(&self) -> Vec<Arc<TargetMetrics>> {
        self.targets.read().map(|t| t.clone()).unwrap_or_default()
    }

    /// The figures of the target labelled `label` (made if new).
    pub fn target(&self, label: &str) -> Arc<TargetMetrics> {
        if let Some(t) = self.targets().into_iter().find(|t| t.label == label) {
            return t;
        }
        let t = Arc::new(TargetMetrics::new(label.to_owned(), &self.families));
        if let Ok(mut all) = self.targets.write() {
            all.push(Arc::clone(&t));
        }
        t
    }

    /// After a reload: only these targets' figures are kept and shown, in
    /// this order; the others' series are removed.
    pub fn set_targets(&self, targets: Vec<Arc<TargetMetrics>>) {
        if let Ok(mut all) = self.targets.write() {
            for old in all.iter() {
                if !targets.iter().any(|t| t.label == old.label) {
                    old.unregister(&self.families);
                }
            }
            *all = targets;
        }
    }

    /// A configuration (`generation`, read at `loaded`) is in force.
    pub fn config_loaded(&self, generation: u64, loaded: std::time::SystemTime) {
        self.config_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        let secs = loaded
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.config_loaded.set(secs);
    }

    /// A reload was refused.
    pub fn config_reload_failed(&self) {
        self.config_reload_failures.inc();
    }

    /// The configuration generation in force.
    pub fn config_generation(&self) -> u64 {
        u64::try_from(self.config_generation.get()).unwrap_or(0)
    }

    /// Reloads refused.
    pub fn config_reload_failures(&self) -> u64 {
        self.config_reload_failures.get()
    }

    pub(crate) fn received(&self) {
        self.received.inc();
    }

    pub(crate) fn accepted(&self) {
        self.accepted.inc();
    }

    pub(crate) fn reencoded(&self) {
        self.uri_reencoded.inc();
    }

    pub(crate) fn queued_bytes(&self, delta: i64) {
        self.queued_bytes.inc_by(delta);
    }

    /// Bytes waiting in queues now.
    pub fn queued_bytes_now(&self) -> u64 {
        u64::try_from(self.queued_bytes.get()).unwrap_or(0)
    }

    /// Counts a request not mirrored at all.
    pub fn count_drop(&self, why: Reason) {
        if let Some(c) = self.dropped.get(why as usize) {
            c.inc();
        }
    }

    /// Counts a bad message; `true` the first time this kind is seen (log it then).
    pub fn bad_message(&self, kind: BadMessage) -> bool {
        let i = BadMessage::ALL.iter().position(|&k| k == kind).unwrap_or(0);
        if let Some(c) = self.bad.get(i) {
            c.inc();
        }
        self.count_drop(Reason::BadMessage);
        self.bad_logged
            .get(i)
            .is_some_and(|l| !l.swap(true, Relaxed))
    }

    /// `mirror` messages received.
    pub fn received_total(&self) -> u64 {
        self.received.get()
    }

    /// Requests accepted for mirroring (queued for at least one target).
    pub fn accepted_total(&self) -> u64 {
        self.accepted.get()
    }

    /// Requests not mirrored at all, for this reason.
    pub fn dropped(&self, why: Reason) -> u64 {
        self.dropped.get(why as usize).map_or(0, Counter::get)
    }

    /// Bad messages of this kind.
    pub fn bad_messages(&self, kind: BadMessage) -> u64 {
        let i = BadMessage::ALL.iter().position(|&k| k == kind).unwrap_or(0);
        self.bad.get(i).map_or(0, Counter::get)
    }

    /// The OpenMetrics text ([`CONTENT_TYPE`]) of every metric, and the
    /// agent's.
    pub fn render(&self, agent: Option<&haproxy_spop::runtime::Stats>) -> String {
        let mut o = String::with_capacity(8192);
        let _ = encode(&mut o, &self.registry);
        if let Some(s) = agent {
            // One "# EOF" at the very end.
            if o.ends_with("# EOF\n") {
                o.truncate(o.len() - "# EOF\n".len());
            }
            let _ = encode(&mut o, &agent_registry(&s.snapshot()));
        }
        o
    }
}

/// The SPOP agent's figures, as of one scrape.
fn agent_registry(snap: &haproxy_spop::runtime::StatsSnapshot) -> Registry {
    let mut r = Registry::default();
    let gauge = |v: u64| {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        g
    };
    let counter = |v: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        c
    };
    r.register(
        "spop_connections",
        "SPOP connections from HAProxy open now",
        gauge(snap.connections_active),
    );
    // The library's names: `spop_connections_total` shares its OpenMetrics
    // family name with the gauge above.
    r.register(
        "spop_connections",
        "SPOP connections accepted",
        counter(snap.connections_total),
    );
    let by = |pairs: Vec<(String, u64)>, key: &'static str| {
        let f = Counters::default();
        for (label, n) in pairs {
            f.get_or_create(&vec![(key, label)]).inc_by(n);
        }
        f
    };
    r.register(
        "spop_frames_received",
        "SPOP frames received, by type",
        by(
            snap.frames_received
                .iter()
                .map(|(t, n)| (t.name().to_owned(), *n))
                .collect(),
            "type",
        ),
    );
    r.register(
        "spop_frames_sent",
        "SPOP frames sent, by type",
        by(
            snap.frames_sent
                .iter()
                .map(|(t, n)| (t.name().to_owned(), *n))
                .collect(),
            "type",
        ),
    );
    r.register(
        "spop_disconnects_sent",
        "AGENT-DISCONNECT sent, by status",
        by(
            snap.disconnects_sent
                .iter()
                .map(|(st, n)| (st.code().to_string(), *n))
                .collect(),
            "status",
        ),
    );
    r.register(
        "spop_in_flight",
        "NOTIFY frames being handled",
        gauge(snap.in_flight),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_values() {
        let m = Metrics::new(["http://t1".to_owned()]);
        m.received();
        m.received();
        m.count_drop(Reason::SampledOut);
        assert!(m.bad_message(BadMessage::BadHeaders));
        assert!(
            !m.bad_message(BadMessage::BadHeaders),
            "logged once per kind"
        );
        let t = &m.targets()[0];
        t.response(204, Duration::from_millis(3));
        t.response(503, Duration::from_secs(20));
        t.error(TargetError::Connect);
        t.went_down();
        let text = m.render(None);
        for line in [
            "spop_mirror_requests_received_total 2",
            "spop_mirror_requests_dropped_total{reason=\"sampled_out\"} 1",
            "spop_mirror_requests_dropped_total{reason=\"bad_message\"} 2",
            "spop_mirror_bad_messages_total{kind=\"bad_headers\"} 2",
            "spop_mirror_requests_mirrored_total{target=\"http://t1\",class=\"2xx\"} 1",
            "spop_mirror_requests_mirrored_total{target=\"http://t1\",class=\"5xx\"} 1",
            "spop_mirror_target_errors_total{target=\"http://t1\",kind=\"connect\"} 1",
            "spop_mirror_latency_seconds_bucket{le=\"0.005\",target=\"http://t1\"} 1",
            "spop_mirror_latency_seconds_bucket{le=\"10.0\",target=\"http://t1\"} 1",
            "spop_mirror_latency_seconds_bucket{le=\"+Inf\",target=\"http://t1\"} 2",
            "spop_mirror_latency_seconds_count{target=\"http://t1\"} 2",
            "spop_mirror_target_up{target=\"http://t1\"} 0",
            "spop_mirror_target_outages_total{target=\"http://t1\"} 1",
            "spop_mirror_target_dropped_total{target=\"http://t1\",reason=\"rate_limited\"} 0",
            "spop_mirror_target_errors_total{target=\"http://t1\",kind=\"tls\"} 0",
            "spop_mirror_requests_dropped_total{reason=\"loop\"} 0",
            "spop_mirror_config_generation 0",
            "spop_mirror_config_reload_failures_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn compare_events_and_the_field_label_cap() {
        use crate::compare::{Difference, Event, Field, Report, Side};
        let m = Metrics::new(["c".to_owned()]);
        let cm = m.compare();
        cm.candidate("c");
        let compared = |fields: Vec<Field>, noise: Vec<Field>| Event::Compared {
            id: bytes::Bytes::from_static(b"1"),
            request: "GET /".into(),
            candidate: "c".into(),
            report: Report {
                differences: fields
                    .into_iter()
                    .map(|field| Difference {
                        field,
                        production: "1".into(),
                        candidate: "2".into(),
                    })
                    .collect(),
                noise,
                truncated: true,
                json_fallback: false,
                ..Report::default()
            },
            production_latency: Duration::from_millis(2),
            candidate_latency: Duration::from_millis(30),
        };
        cm.event(&compared(Vec::new(), Vec::new()));
        cm.event(&compared(
            vec![Field::Status, Field::Json("$.a[1]".into())],
            vec![Field::Header("x-id".into())],
        ));
        // 250 distinct paths: the first ones (up to 200 labels in all) are
        // shown, the rest count as "other".
        cm.event(&compared(
            (0..250).map(|i| Field::Json(format!("$.k{i}"))).collect(),
            Vec::new(),
        ));
        for e in [
            Event::Expired {
                candidate: Some("c".into()),
                missing_production: true,
                missing_shadow: false,
            },
            Event::Expired {
                candidate: None,
                missing_production: true,
                missing_shadow: true,
            },
            Event::Unmatched {
                side: Side::Target("c".into()),
            },
            Event::Unmatched {
                side: Side::Production,
            },
            Event::Repeated,
            Event::Evicted,
            Event::TooLarge {
                side: Side::Production,
            },
        ] {
            cm.event(&e);
        }
        cm.opened();
        cm.queue_full();
        cm.store(3, 4096);
        assert!(cm.bad_message(BadMessage::MissingArg));
        assert!(!cm.bad_message(BadMessage::MissingArg));
        let text = m.render(None);
        for line in [
            "spop_mirror_compare_total{target=\"c\",result=\"equal\"} 1",
            "spop_mirror_compare_total{target=\"c\",result=\"different\"} 2",
            "spop_mirror_compare_differences_total{target=\"c\",field=\"status\"} 1",
            "spop_mirror_compare_differences_total{target=\"c\",field=\"json:$.a[1]\"} 1",
            "spop_mirror_compare_differences_total{target=\"c\",field=\"json:$.k0\"} 1",
            "spop_mirror_compare_differences_total{target=\"c\",field=\"json:$.k196\"} 1",
            "spop_mirror_compare_differences_total{target=\"c\",field=\"other\"} 53",
            "spop_mirror_compare_noise_total{target=\"c\",field=\"header:x-id\"} 1",
            "spop_mirror_compare_expired_total{missing=\"production\"} 1",
            "spop_mirror_compare_expired_total{missing=\"both\"} 1",
            "spop_mirror_compare_expired_total{missing=\"shadow\"} 0",
            "spop_mirror_compare_unmatched_total{side=\"production\"} 1",
            "spop_mirror_compare_unmatched_total{side=\"shadow\"} 1",
            "spop_mirror_compare_repeated_total 1",
            "spop_mirror_compare_too_large_total{side=\"production\"} 1",
            "spop_mirror_compare_too_large_total{side=\"shadow\"} 0",
            "spop_mirror_compare_evicted_total 1",
            "spop_mirror_compare_truncated_total 3",
            "spop_mirror_compare_json_fallback_total 0",
            "spop_mirror_compare_opened_total 1",
            "spop_mirror_compare_queue_full_total 1",
            "spop_mirror_compare_bad_messages_total{kind=\"missing_argument\"} 2",
            "spop_mirror_compare_open 3",
            "spop_mirror_compare_bytes 4096",
            "spop_mirror_compare_latency_seconds_count{target=\"c\",side=\"production\"} 3",
            "spop_mirror_compare_latency_seconds_bucket{le=\"0.05\",target=\"c\",side=\"candidate\"} 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("json:$.k197\""), "capped");
        // The mirror's bad-message count is not touched.
        assert_eq!(m.bad_messages(BadMessage::MissingArg), 0);
        assert_eq!(cm.compared("c", "different"), 2);
        assert_eq!(cm.expired("both"), 1);
    }

    #[test]
    fn removed_targets_lose_their_series() {
        let m = Metrics::new(["a".to_owned(), "b".to_owned()]);
        m.targets()[1].count_drop(Reason::QueueFull);
        let a = m.target("a");
        a.response(200, Duration::from_millis(1));
        m.set_targets(vec![a, m.target("c")]);
        m.config_loaded(
            2,
            std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1000),
        );
        let text = m.render(None);
        assert!(!text.contains("target=\"b\""), "{text}");
        assert!(text.contains("spop_mirror_requests_mirrored_total{target=\"a\",class=\"2xx\"} 1"));
        assert!(text.contains("spop_mirror_target_up{target=\"c\"} 1"));
        assert!(text.contains("spop_mirror_config_generation 2\n"));
        assert!(
            text.contains("spop_mirror_config_loaded_timestamp_seconds 1000.0\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
