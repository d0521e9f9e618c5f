//! Counters, gauges and a latency histogram, rendered as Prometheus text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

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

/// Per-target figures.
#[derive(Debug)]
pub struct TargetMetrics {
    /// The target's URL, as a label.
    pub label: String,
    responses: [AtomicU64; 5],
    errors: [AtomicU64; TargetError::ALL.len()],
    dropped: [AtomicU64; Reason::ALL.len()],
    latency: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
    queue_depth: AtomicI64,
    in_flight: AtomicI64,
    down: AtomicBool,
    outages: AtomicU64,
}

impl TargetMetrics {
    fn new(label: String) -> Self {
        Self {
            label,
            responses: Default::default(),
            errors: Default::default(),
            dropped: Default::default(),
            latency: Default::default(),
            latency_sum_us: AtomicU64::new(0),
            queue_depth: AtomicI64::new(0),
            in_flight: AtomicI64::new(0),
            down: AtomicBool::new(false),
            outages: AtomicU64::new(0),
        }
    }

    /// Counts an answer with this status, and its latency.
    pub fn response(&self, status: u16, took: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        if let Some(c) = self.responses.get(class) {
            c.fetch_add(1, Relaxed);
        }
        let secs = took.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        if let Some(c) = self.latency.get(slot) {
            c.fetch_add(1, Relaxed);
        }
        self.latency_sum_us
            .fetch_add(took.as_micros() as u64, Relaxed);
    }

    /// Counts a failed request.
    pub fn error(&self, e: TargetError) {
        if let Some(c) = self.errors.get(e as usize) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Counts a request this target did not get.
    pub fn count_drop(&self, why: Reason) {
        if let Some(c) = self.dropped.get(why as usize) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Answers received with status `class`xx (1 to 5).
    pub fn responses(&self, class: usize) -> u64 {
        self.responses
            .get(class.wrapping_sub(1))
            .map_or(0, |c| c.load(Relaxed))
    }

    /// Errors of this kind.
    pub fn errors(&self, e: TargetError) -> u64 {
        self.errors.get(e as usize).map_or(0, |c| c.load(Relaxed))
    }

    /// Requests dropped for this target for this reason.
    pub fn dropped(&self, why: Reason) -> u64 {
        self.dropped
            .get(why as usize)
            .map_or(0, |c| c.load(Relaxed))
    }

    /// Answers received, all statuses.
    pub fn mirrored(&self) -> u64 {
        self.responses.iter().map(|c| c.load(Relaxed)).sum()
    }

    pub(crate) fn queue(&self, delta: i64) {
        self.queue_depth.fetch_add(delta, Relaxed);
    }

    pub(crate) fn flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Relaxed);
    }

    /// Requests waiting in this target's queue.
    pub fn queue_depth(&self) -> i64 {
        self.queue_depth.load(Relaxed)
    }

    pub(crate) fn went_down(&self) {
        self.outages.fetch_add(1, Relaxed);
        self.down.store(true, Relaxed);
    }

    pub(crate) fn came_back(&self) {
        self.down.store(false, Relaxed);
    }

    /// Outages so far (a failed connection while the target was up starts one).
    pub fn outages(&self) -> u64 {
        self.outages.load(Relaxed)
    }

    /// Whether the target is taken as reachable.
    pub fn is_up(&self) -> bool {
        !self.down.load(Relaxed)
    }
}

/// Everything spop-mirror counts.
#[derive(Debug)]
pub struct Metrics {
    received: AtomicU64,
    accepted: AtomicU64,
    dropped: [AtomicU64; Reason::ALL.len()],
    bad: [AtomicU64; BadMessage::ALL.len()],
    bad_logged: [AtomicBool; BadMessage::ALL.len()],
    uri_reencoded: AtomicU64,
    queued_bytes: AtomicU64,
    /// Per target, in configuration order; replaced on reload (a target
    /// kept keeps its figures).
    targets: RwLock<Vec<Arc<TargetMetrics>>>,
    config_generation: AtomicU64,
    config_loaded_ms: AtomicU64,
    config_reload_failures: AtomicU64,
}

impl Metrics {
    /// Metrics for these targets.
    pub fn new(targets: impl IntoIterator<Item = String>) -> Arc<Self> {
        Arc::new(Self {
            received: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            dropped: Default::default(),
            bad: Default::default(),
            bad_logged: Default::default(),
            uri_reencoded: AtomicU64::new(0),
            queued_bytes: AtomicU64::new(0),
            targets: RwLock::new(
                targets
                    .into_iter()
                    .map(|t| Arc::new(TargetMetrics::new(t)))
                    .collect(),
            ),
            config_generation: AtomicU64::new(0),
            config_loaded_ms: AtomicU64::new(0),
            config_reload_failures: AtomicU64::new(0),
        })
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
        let t = Arc::new(TargetMetrics::new(label.to_owned()));
        if let Ok(mut all) = self.targets.write() {
            all.push(Arc::clone(&t));
        }
        t
    }

    /// After a reload: only these targets' figures are kept and shown, in
    /// this order.
    pub fn set_targets(&self, targets: Vec<Arc<TargetMetrics>>) {
        if let Ok(mut all) = self.targets.write() {
            *all = targets;
        }
    }

    /// A configuration (`generation`, read at `loaded`) is in force.
    pub fn config_loaded(&self, generation: u64, loaded: std::time::SystemTime) {
        self.config_generation.store(generation, Relaxed);
        let ms = loaded
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.config_loaded_ms.store(ms, Relaxed);
    }

    /// A reload was refused.
    pub fn config_reload_failed(&self) {
        self.config_reload_failures.fetch_add(1, Relaxed);
    }

    /// The configuration generation in force.
    pub fn config_generation(&self) -> u64 {
        self.config_generation.load(Relaxed)
    }

    /// Reloads refused.
    pub fn config_reload_failures(&self) -> u64 {
        self.config_reload_failures.load(Relaxed)
    }

    pub(crate) fn received(&self) {
        self.received.fetch_add(1, Relaxed);
    }

    pub(crate) fn accepted(&self) {
        self.accepted.fetch_add(1, Relaxed);
    }

    pub(crate) fn reencoded(&self) {
        self.uri_reencoded.fetch_add(1, Relaxed);
    }

    pub(crate) fn queued_bytes(&self, delta: i64) {
        if delta >= 0 {
            self.queued_bytes.fetch_add(delta as u64, Relaxed);
        } else {
            self.queued_bytes.fetch_sub(delta.unsigned_abs(), Relaxed);
        }
    }

    /// Bytes waiting in queues now.
    pub fn queued_bytes_now(&self) -> u64 {
        self.queued_bytes.load(Relaxed)
    }

    /// Counts a request not mirrored at all.
    pub fn count_drop(&self, why: Reason) {
        if let Some(c) = self.dropped.get(why as usize) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Counts a bad message; `true` the first time this kind is seen (log it then).
    pub fn bad_message(&self, kind: BadMessage) -> bool {
        let i = BadMessage::ALL.iter().position(|&k| k == kind).unwrap_or(0);
        if let Some(c) = self.bad.get(i) {
            c.fetch_add(1, Relaxed);
        }
        self.count_drop(Reason::BadMessage);
        self.bad_logged
            .get(i)
            .is_some_and(|l| !l.swap(true, Relaxed))
    }

    /// `mirror` messages received.
    pub fn received_total(&self) -> u64 {
        self.received.load(Relaxed)
    }

    /// Requests accepted for mirroring (queued for at least one target).
    pub fn accepted_total(&self) -> u64 {
        self.accepted.load(Relaxed)
    }

    /// Requests not mirrored at all, for this reason.
    pub fn dropped(&self, why: Reason) -> u64 {
        self.dropped
            .get(why as usize)
            .map_or(0, |c| c.load(Relaxed))
    }

    /// Bad messages of this kind.
    pub fn bad_messages(&self, kind: BadMessage) -> u64 {
        let i = BadMessage::ALL.iter().position(|&k| k == kind).unwrap_or(0);
        self.bad.get(i).map_or(0, |c| c.load(Relaxed))
    }

    /// The Prometheus text exposition of every metric, and the agent's.
    pub fn render(&self, agent: Option<&haproxy_spop::runtime::Stats>) -> String {
        let mut o = String::with_capacity(4096);
        let targets = self.targets();
        let family = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            &mut o,
            "spop_mirror_requests_received_total",
            "counter",
            "mirror messages received from HAProxy",
        );
        let _ = writeln!(
            o,
            "spop_mirror_requests_received_total {}",
            self.received_total()
        );
        family(
            &mut o,
            "spop_mirror_requests_accepted_total",
            "counter",
            "requests queued for at least one target",
        );
        let _ = writeln!(
            o,
            "spop_mirror_requests_accepted_total {}",
            self.accepted_total()
        );
        family(
            &mut o,
            "spop_mirror_requests_dropped_total",
            "counter",
            "requests not mirrored, by reason (per target: see spop_mirror_target_dropped_total)",
        );
        for why in Reason::ALL {
            let _ = writeln!(
                o,
                "spop_mirror_requests_dropped_total{{reason=\"{}\"}} {}",
                why.label(),
                self.dropped(why)
            );
        }
        family(
            &mut o,
            "spop_mirror_bad_messages_total",
            "counter",
            "messages that could not become requests, by kind",
        );
        for kind in BadMessage::ALL {
            let _ = writeln!(
                o,
                "spop_mirror_bad_messages_total{{kind=\"{}\"}} {}",
                kind.label(),
                self.bad_messages(kind)
            );
        }
        family(
            &mut o,
            "spop_mirror_uri_reencoded_total",
            "counter",
            "URLs whose bytes had to be percent-encoded",
        );
        let _ = writeln!(
            o,
            "spop_mirror_uri_reencoded_total {}",
            self.uri_reencoded.load(Relaxed)
        );
        family(
            &mut o,
            "spop_mirror_queued_bytes",
            "gauge",
            "bytes of requests waiting in queues",
        );
        let _ = writeln!(o, "spop_mirror_queued_bytes {}", self.queued_bytes_now());
        family(
            &mut o,
            "spop_mirror_requests_mirrored_total",
            "counter",
            "requests a target answered, by status class",
        );
        for t in &targets {
            for class in 1..=5 {
                let _ = writeln!(
                    o,
                    "spop_mirror_requests_mirrored_total{{target=\"{}\",class=\"{class}xx\"}} {}",
                    t.label,
                    t.responses(class)
                );
            }
        }
        family(
            &mut o,
            "spop_mirror_target_errors_total",
            "counter",
            "mirrored requests that failed, by kind",
        );
        for t in &targets {
            for e in TargetError::ALL {
                let _ = writeln!(
                    o,
                    "spop_mirror_target_errors_total{{target=\"{}\",kind=\"{}\"}} {}",
                    t.label,
                    e.label(),
                    t.errors(e)
                );
            }
        }
        family(
            &mut o,
            "spop_mirror_target_dropped_total",
            "counter",
            "requests a target did not get, by reason",
        );
        for t in &targets {
            for why in [
                Reason::QueueFull,
                Reason::QueueBytes,
                Reason::TargetBackoff,
                Reason::Shutdown,
                Reason::Filtered,
                Reason::SampledOut,
                Reason::RateLimited,
            ] {
                let _ = writeln!(
                    o,
                    "spop_mirror_target_dropped_total{{target=\"{}\",reason=\"{}\"}} {}",
                    t.label,
                    why.label(),
                    t.dropped(why)
                );
            }
        }
        family(
            &mut o,
            "spop_mirror_target_up",
            "gauge",
            "1 while a target is reachable, 0 while it is probed after a failed connection",
        );
        for t in &targets {
            let _ = writeln!(
                o,
                "spop_mirror_target_up{{target=\"{}\"}} {}",
                t.label,
                u8::from(t.is_up())
            );
        }
        family(
            &mut o,
            "spop_mirror_target_outages_total",
            "counter",
            "times a target became unreachable",
        );
        for t in &targets {
            let _ = writeln!(
                o,
                "spop_mirror_target_outages_total{{target=\"{}\"}} {}",
                t.label,
                t.outages()
            );
        }
        family(
            &mut o,
            "spop_mirror_queue_depth",
            "gauge",
            "requests waiting per target",
        );
        for t in &targets {
            let _ = writeln!(
                o,
                "spop_mirror_queue_depth{{target=\"{}\"}} {}",
                t.label,
                t.queue_depth()
            );
        }
        family(
            &mut o,
            "spop_mirror_in_flight",
            "gauge",
            "requests being sent per target",
        );
        for t in &targets {
            let _ = writeln!(
                o,
                "spop_mirror_in_flight{{target=\"{}\"}} {}",
                t.label,
                t.in_flight.load(Relaxed)
            );
        }
        family(
            &mut o,
            "spop_mirror_latency_seconds",
            "histogram",
            "time from sending a mirrored request to the end of its answer",
        );
        for t in &targets {
            let mut cumulative = 0;
            for (i, le) in BUCKETS.iter().enumerate() {
                cumulative += t.latency.get(i).map_or(0, |c| c.load(Relaxed));
                let _ = writeln!(
                    o,
                    "spop_mirror_latency_seconds_bucket{{target=\"{}\",le=\"{le}\"}} {cumulative}",
                    t.label
                );
            }
            cumulative += t.latency.get(BUCKETS.len()).map_or(0, |c| c.load(Relaxed));
            let _ = writeln!(
                o,
                "spop_mirror_latency_seconds_bucket{{target=\"{}\",le=\"+Inf\"}} {cumulative}",
                t.label
            );
            let sum = t.latency_sum_us.load(Relaxed) as f64 / 1e6;
            let _ = writeln!(
                o,
                "spop_mirror_latency_seconds_sum{{target=\"{}\"}} {sum}",
                t.label
            );
            let _ = writeln!(
                o,
                "spop_mirror_latency_seconds_count{{target=\"{}\"}} {cumulative}",
                t.label
            );
        }
        family(
            &mut o,
            "spop_mirror_config_generation",
            "gauge",
            "the configuration in force: 1 at start-up, +1 per reload applied",
        );
        let _ = writeln!(
            o,
            "spop_mirror_config_generation {}",
            self.config_generation()
        );
        family(
            &mut o,
            "spop_mirror_config_loaded_timestamp_seconds",
            "gauge",
            "when the configuration in force was read (Unix time)",
        );
        let _ = writeln!(
            o,
            "spop_mirror_config_loaded_timestamp_seconds {}",
            self.config_loaded_ms.load(Relaxed) as f64 / 1000.0
        );
        family(
            &mut o,
            "spop_mirror_config_reload_failures_total",
            "counter",
            "reloads refused (the file did not parse or a setting was bad)",
        );
        let _ = writeln!(
            o,
            "spop_mirror_config_reload_failures_total {}",
            self.config_reload_failures()
        );
        if let Some(s) = agent {
            let snap = s.snapshot();
            family(
                &mut o,
                "spop_connections",
                "gauge",
                "SPOP connections from HAProxy open now",
            );
            let _ = writeln!(o, "spop_connections {}", snap.connections_active);
            family(
                &mut o,
                "spop_connections_total",
                "counter",
                "SPOP connections accepted",
            );
            let _ = writeln!(o, "spop_connections_total {}", snap.connections_total);
            family(
                &mut o,
                "spop_frames_received_total",
                "counter",
                "SPOP frames received, by type",
            );
            for (t, n) in &snap.frames_received {
                let _ = writeln!(o, "spop_frames_received_total{{type=\"{}\"}} {n}", t.name());
            }
            family(
                &mut o,
                "spop_frames_sent_total",
                "counter",
                "SPOP frames sent, by type",
            );
            for (t, n) in &snap.frames_sent {
                let _ = writeln!(o, "spop_frames_sent_total{{type=\"{}\"}} {n}", t.name());
            }
            family(
                &mut o,
                "spop_disconnects_sent_total",
                "counter",
                "AGENT-DISCONNECT sent, by status",
            );
            for (st, n) in &snap.disconnects_sent {
                let _ = writeln!(
                    o,
                    "spop_disconnects_sent_total{{status=\"{}\"}} {n}",
                    st.code()
                );
            }
            family(
                &mut o,
                "spop_in_flight",
                "gauge",
                "NOTIFY frames being handled",
            );
            let _ = writeln!(o, "spop_in_flight {}", snap.in_flight);
        }
        o
    }
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
            "spop_mirror_latency_seconds_bucket{target=\"http://t1\",le=\"0.005\"} 1",
            "spop_mirror_latency_seconds_bucket{target=\"http://t1\",le=\"10\"} 1",
            "spop_mirror_latency_seconds_bucket{target=\"http://t1\",le=\"+Inf\"} 2",
            "spop_mirror_latency_seconds_count{target=\"http://t1\"} 2",
            "spop_mirror_target_up{target=\"http://t1\"} 0",
            "spop_mirror_target_outages_total{target=\"http://t1\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
