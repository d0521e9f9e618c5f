//! The mirroring engine: filters, sampling, one bounded queue and a worker
//! pool per target, a pooled keep-alive HTTP client, back-off on connection
//! errors. [`Mirror::submit`] never blocks and never waits.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, HOST};
use http::uri::{PathAndQuery, Uri};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::{Config, HostRewrite};
use crate::metrics::{Metrics, Reason, TargetError, TargetMetrics};
use crate::request::MirrorRequest;

/// What [`Mirror::submit`] did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Queued for this many targets.
    Queued(usize),
    /// Not mirrored at all.
    Dropped(Reason),
}

/// The settings the engine needs (from [`Config`]).
#[derive(Debug, Clone)]
pub struct MirrorConfig {
    /// The targets.
    pub targets: Vec<Uri>,
    /// Percent of requests mirrored.
    pub sample: f64,
    /// Methods mirrored (empty: all).
    pub methods: Vec<String>,
    /// Path prefixes mirrored (empty: all).
    pub path_prefixes: Vec<String>,
    /// Path regex.
    pub path_regex: Option<regex::Regex>,
    /// Headers added.
    pub add_headers: Vec<(http::HeaderName, HeaderValue)>,
    /// Host handling.
    pub host: HostRewrite,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Request timeout.
    pub request_timeout: Duration,
    /// In flight per target.
    pub max_concurrency: usize,
    /// Queue length per target.
    pub queue_size: usize,
    /// Bytes queued, all targets.
    pub max_queued_bytes: usize,
    /// Send truncated bodies.
    pub send_truncated: bool,
    /// h2c.
    pub http2: bool,
}

impl From<&Config> for MirrorConfig {
    fn from(c: &Config) -> Self {
        Self {
            targets: c.targets.clone(),
            sample: c.sample,
            methods: c.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
            path_prefixes: c.path_prefixes.clone(),
            path_regex: c.path_regex.clone(),
            add_headers: c.add_headers.clone(),
            host: c.host.clone(),
            connect_timeout: c.connect_timeout,
            request_timeout: c.request_timeout,
            max_concurrency: c.max_concurrency.max(1),
            queue_size: c.queue_size.max(1),
            max_queued_bytes: c.max_queued_bytes,
            send_truncated: c.send_truncated,
            http2: c.http2,
        }
    }
}

struct Target {
    index: usize,
    uri: Uri,
    /// The target's path, put in front of mirrored paths ("" for "/").
    prefix: String,
    authority: HeaderValue,
    tx: mpsc::Sender<Arc<MirrorRequest>>,
    /// Milliseconds since `epoch` before which requests are not sent.
    backoff_until: AtomicU64,
    failures: AtomicU32,
}

struct Inner {
    cfg: MirrorConfig,
    targets: Vec<Target>,
    metrics: Arc<Metrics>,
    rng: AtomicU64,
    epoch: Instant,
    shutdown: watch::Sender<bool>,
}

/// A handle on the engine; cheap to clone.
#[derive(Clone)]
pub struct Mirror {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("targets", &self.inner.cfg.targets)
            .finish()
    }
}

/// The engine's worker tasks; [`Workers::drain`] waits for them.
#[derive(Debug)]
pub struct Workers {
    tasks: JoinSet<()>,
}

impl Mirror {
    /// Starts one worker per target (on the current tokio runtime).
    pub fn start(cfg: MirrorConfig, metrics: Arc<Metrics>) -> (Self, Workers) {
        let (shutdown, _) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut targets = Vec::new();
        let mut receivers = Vec::new();
        for (index, uri) in cfg.targets.iter().enumerate() {
            let (tx, rx) = mpsc::channel(cfg.queue_size);
            let prefix = uri.path().trim_end_matches('/').to_owned();
            let authority = uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                .unwrap_or_else(|| HeaderValue::from_static("localhost"));
            targets.push(Target {
                index,
                uri: uri.clone(),
                prefix,
                authority,
                tx,
                backoff_until: AtomicU64::new(0),
                failures: AtomicU32::new(0),
            });
            receivers.push(rx);
        }
        let mirror = Self {
            inner: Arc::new(Inner {
                cfg,
                targets,
                metrics,
                rng: AtomicU64::new(seed()),
                epoch: Instant::now(),
                shutdown,
            }),
        };
        for (index, rx) in receivers.into_iter().enumerate() {
            // The target's connections share its queue; each owns one
            // keep-alive connection and sends one request at a time.
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            for _ in 0..mirror.inner.cfg.max_concurrency {
                tasks.spawn(connection_worker(
                    Arc::clone(&mirror.inner),
                    index,
                    Arc::clone(&rx),
                ));
            }
        }
        (mirror, Workers { tasks })
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Counts a received message (whether or not it becomes a request).
    pub fn received(&self) {
        self.inner.metrics.received();
    }

    /// Filters, samples and queues a request for every target. Never blocks.
    pub fn submit(&self, req: MirrorRequest) -> Submitted {
        let inner = &*self.inner;
        let m = &inner.metrics;
        let cfg = &inner.cfg;
        if req.uri_reencoded {
            m.reencoded();
        }
        if !self.selected(&req) {
            m.count_drop(Reason::Filtered);
            return Submitted::Dropped(Reason::Filtered);
        }
        if cfg.sample < 100.0 {
            let draw = splitmix(inner.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed)) % 1_000_000;
            if (draw as f64) >= cfg.sample * 10_000.0 {
                m.count_drop(Reason::SampledOut);
                return Submitted::Dropped(Reason::SampledOut);
            }
        }
        if req.truncated && !cfg.send_truncated {
            m.count_drop(Reason::TruncatedBody);
            return Submitted::Dropped(Reason::TruncatedBody);
        }
        let req = Arc::new(req);
        let now = self.now_ms();
        let mut queued = 0;
        for t in &inner.targets {
            let tm = &m.targets[t.index];
            if t.backoff_until.load(Relaxed) > now {
                tm.count_drop(Reason::TargetBackoff);
                continue;
            }
            let size = req.size as u64;
            if m.queued_bytes_now() + size > cfg.max_queued_bytes as u64 {
                tm.count_drop(Reason::QueueBytes);
                continue;
            }
            match t.tx.try_send(Arc::clone(&req)) {
                Ok(()) => {
                    m.queued_bytes(size as i64);
                    tm.queue(1);
                    queued += 1;
                }
                Err(mpsc::error::TrySendError::Full(_)) => tm.count_drop(Reason::QueueFull),
                Err(mpsc::error::TrySendError::Closed(_)) => tm.count_drop(Reason::Shutdown),
            }
        }
        if queued > 0 {
            m.accepted();
            Submitted::Queued(queued)
        } else {
            // Not mirrored anywhere: count why once, by the first target's reason.
            let why = inner
                .targets
                .first()
                .map(|t| {
                    let tm = &m.targets[t.index];
                    [
                        Reason::TargetBackoff,
                        Reason::QueueBytes,
                        Reason::QueueFull,
                        Reason::Shutdown,
                    ]
                    .into_iter()
                    .max_by_key(|&d| tm.dropped(d))
                    .unwrap_or(Reason::QueueFull)
                })
                .unwrap_or(Reason::QueueFull);
            m.count_drop(why);
            Submitted::Dropped(why)
        }
    }

    fn selected(&self, req: &MirrorRequest) -> bool {
        let cfg = &self.inner.cfg;
        if !cfg.methods.is_empty() && !cfg.methods.iter().any(|m| m == req.method.as_str()) {
            return false;
        }
        let path = req.path.as_str();
        if !cfg.path_prefixes.is_empty()
            && !cfg
                .path_prefixes
                .iter()
                .any(|p| path.starts_with(p.as_str()))
        {
            return false;
        }
        cfg.path_regex.as_ref().is_none_or(|re| re.is_match(path))
    }

    fn now_ms(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64
    }

    /// Stops taking requests; the workers send what is queued.
    pub fn close(&self) {
        self.inner.shutdown.send_replace(true);
    }
}

impl Workers {
    /// Waits for queued and in-flight requests, up to `deadline`; what is
    /// left then is dropped (and counted).
    pub async fn drain(mut self, deadline: Duration) -> bool {
        let done = tokio::time::timeout(deadline, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !done {
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        done
    }
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ u64::from(std::process::id()).rotate_left(32)
}

fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Holds one queued request's accounting until it is sent or dropped.
struct Ticket<'a> {
    metrics: &'a Metrics,
    size: i64,
}

impl std::ops::Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.metrics.queued_bytes(-self.size);
    }
}

type Queue = Arc<tokio::sync::Mutex<mpsc::Receiver<Arc<MirrorRequest>>>>;

/// One connection to a target: takes requests off the target's queue and
/// sends them one after another on a kept-alive connection, reconnecting
/// (after the back-off) when it breaks.
async fn connection_worker(inner: Arc<Inner>, index: usize, queue: Queue) {
    let mut conn: Option<Sender> = None;
    let mut shutdown = inner.shutdown.subscribe();
    loop {
        let next = {
            let mut rx = queue.lock().await;
            tokio::select! {
                next = rx.recv() => next,
                () = async { let _ = shutdown.wait_for(|s| *s).await; }, if !rx.is_closed() => {
                    // No new requests; what is queued still goes out.
                    rx.close();
                    rx.recv().await
                }
            }
        };
        let Some(req) = next else { break };
        let m = &inner.metrics;
        let tm = &m.targets[index];
        let t = &inner.targets[index];
        tm.queue(-1);
        let _ticket = Ticket {
            metrics: m,
            size: req.size as i64,
        };
        if t.backoff_until.load(Relaxed) > inner.epoch.elapsed().as_millis() as u64 {
            tm.count_drop(Reason::TargetBackoff);
            continue;
        }
        if conn.as_ref().is_none_or(Sender::is_closed) {
            conn = match connect(&inner, t).await {
                Ok(c) => Some(c),
                Err(e) => {
                    tm.error(e);
                    if e == TargetError::Connect {
                        backoff(&inner, t);
                    }
                    continue;
                }
            };
        }
        let Some(sender) = conn.as_mut() else {
            continue;
        };
        tm.flight(1);
        let ok = send(&inner, t, tm, sender, &req).await;
        tm.flight(-1);
        if !ok {
            conn = None;
        }
    }
}

/// A connection's request sender, HTTP/1.1 or h2c.
enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Self::Http1(s) => s.is_closed(),
            Self::Http2(s) => s.is_closed(),
        }
    }

    async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, hyper::Error> {
        match self {
            Self::Http1(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
            Self::Http2(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
        }
    }
}

async fn connect(inner: &Inner, t: &Target) -> Result<Sender, TargetError> {
    let host = t
        .uri
        .host()
        .unwrap_or("localhost")
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = t.uri.port_u16().unwrap_or(80);
    let stream = match tokio::time::timeout(
        inner.cfg.connect_timeout,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(target = %t.uri, error = %e, "connect failed");
            return Err(TargetError::Connect);
        }
        Err(_) => return Err(TargetError::Connect),
    };
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    if inner.cfg.http2 {
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|_| TargetError::Connect)?;
        tokio::spawn(conn);
        Ok(Sender::Http2(sender))
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|_| TargetError::Connect)?;
        tokio::spawn(conn);
        Ok(Sender::Http1(sender))
    }
}

/// Back off: 100 ms doubling to 10 s while connections fail.
fn backoff(inner: &Inner, t: &Target) {
    let n = t.failures.fetch_add(1, Relaxed).min(7);
    let wait = (100u64 << n).min(10_000);
    t.backoff_until
        .store(inner.epoch.elapsed().as_millis() as u64 + wait, Relaxed);
    tracing::debug!(target = %t.uri, backoff_ms = wait, "target unreachable; backing off");
}

fn build_request(
    cfg: &MirrorConfig,
    t: &Target,
    req: &MirrorRequest,
) -> Option<Request<Full<Bytes>>> {
    // "*" (OPTIONS) is never prefixed.
    let path = if t.prefix.is_empty() || req.path.as_str() == "*" {
        req.path.clone()
    } else {
        PathAndQuery::from_maybe_shared(Bytes::from(format!("{}{}", t.prefix, req.path.as_str())))
            .ok()?
    };
    // HTTP/1.1 goes out in origin-form; HTTP/2 needs scheme and authority.
    let uri = if cfg.http2 && path.as_str() != "*" {
        let mut parts = t.uri.clone().into_parts();
        parts.path_and_query = Some(path);
        Uri::from_parts(parts).ok()?
    } else {
        Uri::from(path)
    };
    let mut builder = Request::builder().method(req.method.clone()).uri(uri);
    let headers = builder.headers_mut()?;
    let host = match &cfg.host {
        HostRewrite::Keep => req.host.clone(),
        HostRewrite::Target => Some(t.authority.clone()),
        HostRewrite::Fixed(v) => Some(v.clone()),
    };
    // HTTP/2 carries the authority in the URI; Host would be a duplicate.
    if let (Some(host), false) = (host, cfg.http2) {
        headers.insert(HOST, host);
    }
    for (name, value) in &req.headers {
        headers.append(name.clone(), value.clone());
    }
    for (name, value) in &cfg.add_headers {
        headers.append(name.clone(), value.clone());
    }
    if req.has_body_framing || !req.body.is_empty() {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(req.body.len()));
    }
    builder.body(Full::new(req.body.clone())).ok()
}

/// Sends one request and reads its answer to the end; `false` if the
/// connection cannot be used again.
async fn send(
    inner: &Inner,
    t: &Target,
    tm: &TargetMetrics,
    sender: &mut Sender,
    req: &MirrorRequest,
) -> bool {
    let Some(request) = build_request(&inner.cfg, t, req) else {
        tm.error(TargetError::Other);
        return true;
    };
    let start = Instant::now();
    let outcome = tokio::time::timeout(inner.cfg.request_timeout, async {
        let resp = sender.send(request).await?;
        let status = resp.status().as_u16();
        // Read the answer to its end (keeps the connection reusable), keep nothing.
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            frame?;
        }
        Ok::<u16, hyper::Error>(status)
    })
    .await;
    match outcome {
        Ok(Ok(status)) => {
            tm.response(status, start.elapsed());
            t.failures.store(0, Relaxed);
            true
        }
        Ok(Err(e)) => {
            tm.error(TargetError::Other);
            tracing::debug!(target = %t.uri, error = %e, "mirrored request failed");
            false
        }
        Err(_) => {
            tm.error(TargetError::Timeout);
            false
        }
    }
}
