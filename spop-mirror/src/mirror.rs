//! The mirroring engine: filters, sampling, one bounded queue and a worker
//! pool per target, a pooled keep-alive HTTP client, back-off on connection
//! errors. [`Mirror::submit`] never blocks and never waits.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, HOST};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use arc_swap::ArcSwap;

use crate::comparing::CompareTag;
use crate::config::{HostRewrite, Role};
use crate::metrics::{Metrics, Reason, TargetError, TargetMetrics};
use crate::pipeline::{Lost, Pipe};
use crate::policy::{Policy, TargetSet};
use crate::request::MirrorRequest;

/// What [`Mirror::submit`] did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Queued for this many targets.
    Queued(usize),
    /// Not mirrored at all.
    Dropped(Reason),
}

/// A candidate target, and its baseline target when it has one (both by
/// name): what [`crate::compare::Store::open`] awaits.
pub type ComparePair = (Arc<str>, Option<Arc<str>>);

/// The settings the engine needs: the target set (see [`crate::policy`]).
pub type MirrorConfig = TargetSet;

struct Target {
    /// The target's name (it never changes: a reload that renames a target
    /// starts a new one).
    name: Arc<str>,
    /// The target's policy, replaced in place by a reload that keeps its
    /// connections (see [`Policy::same_connections`]).
    policy: ArcSwap<Policy>,
    /// Its figures.
    m: Arc<TargetMetrics>,
    /// Set when a reload removed (or replaced) the target: its workers
    /// send what is queued, then end.
    retired: watch::Sender<bool>,
    uri: Uri,
    /// The target's path, put in front of mirrored paths ("" for "/").
    prefix: String,
    authority: HeaderValue,
    tx: mpsc::Sender<Arc<Queued>>,
    /// The target is unreachable: requests are dropped (`target_backoff`)
    /// while one prober tries to connect.
    down: AtomicBool,
    /// Outages in a row (reset once the target stays up for
    /// [`HEALTHY_RESET`]): the probe interval doubles once per outage.
    outages: AtomicU32,
    /// Milliseconds since `epoch` when the target last came back.
    up_since: AtomicU64,
}

/// The configuration in force and its targets (`targets[i]` runs
/// `set.targets[i]`).
struct Live {
    set: Arc<TargetSet>,
    targets: Vec<Arc<Target>>,
}

struct Inner {
    live: ArcSwap<Live>,
    tasks: std::sync::Mutex<JoinSet<()>>,
    metrics: Arc<Metrics>,
    rng: AtomicU64,
    epoch: Instant,
    shutdown: watch::Sender<bool>,
    /// Where pipelined targets' workers run (`None`: the current runtime).
    pipelined_on: Option<tokio::runtime::Handle>,
}

/// A handle on the engine; cheap to clone.
#[derive(Clone)]
pub struct Mirror {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("generation", &self.inner.live.load().set.generation)
            .finish_non_exhaustive()
    }
}

/// The engine's worker tasks; [`Workers::drain`] waits for them.
pub struct Workers {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers").finish_non_exhaustive()
    }
}

impl Mirror {
    /// Starts `max_concurrency` workers per target (on the current tokio
    /// runtime).
    pub fn start(set: TargetSet, metrics: Arc<Metrics>) -> (Self, Workers) {
        Self::start_with(set, metrics, None)
    }

    /// As [`Mirror::start`], with the workers of pipelined targets
    /// (`pipeline = N`, now and after reloads) on the runtime of
    /// `pipelined_on` rather than the current one.
    ///
    /// spop-mirror runs them on the SPOP thread. A pipelined worker never
    /// waits on its target (non-blocking writes, answers read when it next
    /// writes or on a 1 ms tick), so its work per turn is bounded: encoding
    /// the requests of one batch, one write, one read. On that thread a
    /// batch goes out right after the ACKs of the NOTIFYs it came in,
    /// without waking another thread. The runtime must outlive
    /// [`Workers::drain`].
    pub fn start_with(
        set: TargetSet,
        metrics: Arc<Metrics>,
        pipelined_on: Option<tokio::runtime::Handle>,
    ) -> (Self, Workers) {
        let (shutdown, _) = watch::channel(false);
        metrics.config_loaded(set.generation, set.loaded_at);
        let set = Arc::new(set);
        let inner = Arc::new(Inner {
            live: ArcSwap::from_pointee(Live {
                set: Arc::clone(&set),
                targets: Vec::new(),
            }),
            tasks: std::sync::Mutex::new(JoinSet::new()),
            metrics,
            rng: AtomicU64::new(seed()),
            epoch: Instant::now(),
            shutdown,
            pipelined_on,
        });
        let targets = set
            .targets
            .iter()
            .map(|p| start_target(&inner, Arc::clone(p)))
            .collect::<Vec<_>>();
        inner
            .metrics
            .set_targets(targets.iter().map(|t| Arc::clone(&t.m)).collect());
        inner.live.store(Arc::new(Live { set, targets }));
        (
            Self {
                inner: Arc::clone(&inner),
            },
            Workers { inner },
        )
    }

    /// Puts a new configuration in force: a target whose connections
    /// settings are unchanged keeps its queue, connections and figures and
    /// takes its new policy at once; a new (or changed) one starts; a
    /// removed (or changed) one sends what it has queued, then ends.
    pub fn reload(&self, set: TargetSet) {
        let inner = &self.inner;
        if *inner.shutdown.borrow() {
            return;
        }
        let old = inner.live.load_full();
        let set = Arc::new(set);
        let mut kept = Vec::new();
        let targets = set
            .targets
            .iter()
            .map(|p| {
                match old
                    .targets
                    .iter()
                    .find(|t| t.policy.load().same_connections(p))
                {
                    Some(t) => {
                        t.policy.store(Arc::clone(p));
                        kept.push(Arc::as_ptr(t));
                        Arc::clone(t)
                    }
                    None => start_target(inner, Arc::clone(p)),
                }
            })
            .collect::<Vec<_>>();
        inner
            .metrics
            .set_targets(targets.iter().map(|t| Arc::clone(&t.m)).collect());
        inner.metrics.config_loaded(set.generation, set.loaded_at);
        inner.live.store(Arc::new(Live { set, targets }));
        for t in &old.targets {
            if !kept.contains(&Arc::as_ptr(t)) {
                t.retired.send_replace(true);
            }
        }
        if let Ok(mut tasks) = inner.tasks.lock() {
            while tasks.try_join_next().is_some() {}
        }
    }

    /// The configuration in force.
    pub fn target_set(&self) -> Arc<TargetSet> {
        Arc::clone(&self.inner.live.load().set)
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Whether a request is compared: the configuration's `--compare`
    /// share, with `draw` (a uniform 64-bit number) called only when the
    /// share is neither 0 nor 100 %.
    pub fn compares(&self, draw: impl FnOnce() -> u64) -> bool {
        let live = self.inner.live.load();
        match live.set.compare_threshold {
            None => false,
            Some(u64::MAX) => true,
            Some(_) => live.set.compares(draw()),
        }
    }

    /// Counts a received message (whether or not it becomes a request).
    pub fn received(&self) {
        self.inner.metrics.received();
    }

    /// Filters, samples and queues a request for every target. Never blocks.
    pub fn submit(&self, req: MirrorRequest) -> Submitted {
        self.submit_from(req, None)
    }

    /// [`Mirror::submit`], with the client address (for `sticky = "src"`).
    pub fn submit_from(&self, req: MirrorRequest, src: Option<std::net::IpAddr>) -> Submitted {
        self.submit_inner(req, src, None).0
    }

    /// [`Mirror::submit_from`] for a request chosen for comparison: the
    /// request carries `tag` to the targets' workers, and the answer lists
    /// the candidate targets that queued it, each with its baseline when
    /// that queued it too (the pairs [`crate::compare::Store::open`] takes).
    pub fn submit_compared(
        &self,
        req: MirrorRequest,
        src: Option<std::net::IpAddr>,
        tag: Arc<CompareTag>,
    ) -> (Submitted, Vec<ComparePair>) {
        self.submit_inner(req, src, Some(tag))
    }

    fn submit_inner(
        &self,
        req: MirrorRequest,
        src: Option<std::net::IpAddr>,
        tag: Option<Arc<CompareTag>>,
    ) -> (Submitted, Vec<ComparePair>) {
        let inner = &*self.inner;
        let m = &inner.metrics;
        let live = inner.live.load();
        let set = &*live.set;
        if req.uri_reencoded() {
            m.reencoded();
        }
        if set.is_loop(&req) {
            m.count_drop(Reason::Loop);
            return (Submitted::Dropped(Reason::Loop), Vec::new());
        }
        // Each target's policy, once (a rate cap takes a token): a bit per
        // target (a vector past 64 targets).
        let n = live.targets.len();
        let mut admitted_bits = 0u64;
        let mut admitted_more = if n > 64 { vec![false; n] } else { Vec::new() };
        let mut first_refusal = None;
        for (i, t) in live.targets.iter().enumerate() {
            let draw = || splitmix(inner.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed));
            match t.policy.load().admit(&req, src, draw) {
                Ok(()) if i < 64 => admitted_bits |= 1 << i,
                Ok(()) => {
                    if let Some(a) = admitted_more.get_mut(i) {
                        *a = true;
                    }
                }
                Err(why) => {
                    t.m.count_drop(why);
                    if i == 0 {
                        first_refusal = Some(why);
                    }
                }
            }
        }
        let admitted = |i: usize| {
            if i < 64 {
                admitted_bits & (1 << i) != 0
            } else {
                admitted_more.get(i).copied().unwrap_or(false)
            }
        };
        if admitted_bits == 0 && !admitted_more.contains(&true) {
            let why = first_refusal.unwrap_or(Reason::Filtered);
            m.count_drop(why);
            return (Submitted::Dropped(why), Vec::new());
        }
        if req.truncated() && !set.send_truncated {
            m.count_drop(Reason::TruncatedBody);
            return (Submitted::Dropped(Reason::TruncatedBody), Vec::new());
        }
        // The request's memory is counted once, however many targets share
        // it, until the last of them is done with it.
        let size = req.size() as u64;
        let over_budget = m.queued_bytes_now() + size > set.max_queued_bytes as u64;
        let comparing = tag.is_some();
        let req = (!over_budget).then(|| Queued::new(req, size, m, tag));
        let mut queued = 0;
        // With a tag: the targets that queued it (their roles are looked
        // at once, after).
        let mut roles: Vec<&Target> = Vec::new();
        let mut first_drop = None;
        for (i, t) in live.targets.iter().enumerate() {
            if !admitted(i) {
                continue;
            }
            let tm = &t.m;
            let why = if t.down.load(Relaxed) {
                Reason::TargetBackoff
            } else if let Some(req) = &req {
                match t.tx.try_send(Arc::clone(req)) {
                    Ok(()) => {
                        tm.queue(1);
                        queued += 1;
                        if comparing {
                            roles.push(t);
                        }
                        continue;
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => Reason::QueueFull,
                    Err(mpsc::error::TrySendError::Closed(_)) => Reason::Shutdown,
                }
            } else {
                Reason::QueueBytes
            };
            tm.count_drop(why);
            first_drop.get_or_insert(why);
        }
        if queued > 0 {
            m.accepted();
            (Submitted::Queued(queued), compare_pairs(&roles))
        } else {
            // Not mirrored anywhere: counted once, by the first target's reason.
            let why = first_drop.unwrap_or(Reason::QueueFull);
            m.count_drop(why);
            (Submitted::Dropped(why), Vec::new())
        }
    }

    /// Stops taking requests; the workers send what is queued.
    pub fn close(&self) {
        self.inner.shutdown.send_replace(true);
    }
}

impl Workers {
    /// Waits for queued and in-flight requests, up to `deadline`; what is
    /// left then is dropped (and counted).
    pub async fn drain(self, deadline: Duration) -> bool {
        let mut tasks = self
            .inner
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        let done = tokio::time::timeout(deadline, async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !done {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        done
    }
}

/// Starts a target's queue and workers.
fn start_target(inner: &Arc<Inner>, policy: Arc<Policy>) -> Arc<Target> {
    let (tx, rx) = mpsc::channel(policy.queue_size);
    let uri = policy.uri.clone();
    let prefix = uri.path().trim_end_matches('/').to_owned();
    let authority = uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        .unwrap_or_else(|| HeaderValue::from_static("localhost"));
    let t = Arc::new(Target {
        name: Arc::from(policy.name.as_str()),
        m: inner.metrics.target(&policy.name),
        retired: watch::channel(false).0,
        uri,
        prefix,
        authority,
        tx,
        down: AtomicBool::new(false),
        outages: AtomicU32::new(0),
        up_since: AtomicU64::new(0),
        policy: ArcSwap::new(Arc::clone(&policy)),
    });
    // hyper: the target's connections share its queue, each with one
    // keep-alive connection and one request at a time. `--pipeline N` (plain
    // http:// HTTP/1.1 targets): one task holds the target's connections,
    // up to N requests in flight on each, so that max_concurrency requests
    // in flight take max_concurrency / N of them.
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let pipelined = policy.pipeline > 0 && !policy.http2 && policy.tls.is_none();
    if let Ok(mut tasks) = inner.tasks.lock() {
        if pipelined {
            let slots = (policy.max_concurrency / policy.pipeline).max(1);
            let worker = pipeline_worker(
                Arc::clone(inner),
                Arc::clone(&t),
                rx,
                policy.pipeline,
                slots,
            );
            match &inner.pipelined_on {
                Some(rt) => tasks.spawn_on(worker, rt),
                None => tasks.spawn(worker),
            };
        } else {
            for _ in 0..policy.max_concurrency {
                let (inner, t, rx) = (Arc::clone(inner), Arc::clone(&t), Arc::clone(&rx));
                tasks.spawn(connection_worker(inner, t, rx));
            }
        }
    }
    t
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

/// The (candidate, baseline) pairs of the targets with a role that queued
/// a request: each candidate, with its baseline if that queued it too.
fn compare_pairs(roles: &[&Target]) -> Vec<ComparePair> {
    roles
        .iter()
        .filter_map(|t| {
            let p = t.policy.load();
            if p.role != Some(Role::Candidate) {
                return None;
            }
            let baseline = p.baseline.as_ref().and_then(|b| {
                roles
                    .iter()
                    .find(|o| o.name == *b && o.policy.load().role == Some(Role::Baseline))
                    .map(|o| Arc::clone(&o.name))
            });
            Some((Arc::clone(&t.name), baseline))
        })
        .collect()
}

/// A request shared by the targets' queues: its bytes count towards
/// `--max-queued-bytes` from its creation until the last target is done
/// with it (sent, or dropped).
struct Queued {
    req: MirrorRequest,
    size: u64,
    metrics: Arc<Metrics>,
    /// Set when the request is compared: its id and arrival.
    compare: Option<Arc<CompareTag>>,
}

impl Queued {
    fn new(
        req: MirrorRequest,
        size: u64,
        metrics: &Arc<Metrics>,
        compare: Option<Arc<CompareTag>>,
    ) -> Arc<Self> {
        metrics.queued_bytes(size as i64);
        Arc::new(Self {
            req,
            size,
            metrics: Arc::clone(metrics),
            compare,
        })
    }
}

impl std::ops::Drop for Queued {
    fn drop(&mut self) {
        self.metrics.queued_bytes(-(self.size as i64));
    }
}

type Queue = Arc<tokio::sync::Mutex<mpsc::Receiver<Arc<Queued>>>>;

/// One connection to a target: takes requests off the target's queue and
/// sends them one after another on a kept-alive connection, reconnecting
/// (after the back-off) when it breaks.
async fn connection_worker(inner: Arc<Inner>, t: Arc<Target>, queue: Queue) {
    let mut conn: Option<Sender> = None;
    let mut shutdown = inner.shutdown.subscribe();
    let mut retired = t.retired.subscribe();
    let mut one = Vec::with_capacity(1);
    loop {
        one.clear();
        if !next_batch(&queue, &mut shutdown, &mut retired, 1, &mut one).await {
            break;
        }
        let Some(req) = one.pop() else { continue };
        let tm = &*t.m;
        tm.queue(-1);
        if t.down.load(Relaxed) {
            tm.count_drop(Reason::TargetBackoff);
            continue;
        }
        if conn.as_ref().is_none_or(Sender::is_closed) {
            let attempt = inner.epoch.elapsed().as_millis() as u64;
            conn = match connect(&inner, &t).await {
                Ok(c) => Some(c),
                Err(e) => {
                    tm.error(e);
                    if matches!(e, TargetError::Connect | TargetError::Tls) {
                        target_down(&inner, &t, attempt);
                    }
                    continue;
                }
            };
        }
        let Some(sender) = conn.as_mut() else {
            continue;
        };
        tm.flight(1);
        let ok = send(&inner, &t, tm, sender, &req.req, req.compare.as_deref()).await;
        tm.flight(-1);
        if !ok {
            conn = None;
        }
    }
}

/// Waits for the first request of a batch, then takes up to `depth` (and
/// at most [`BATCH_BYTES`] past the first) of those already queued; `false`
/// once the queue is closed and empty.
async fn next_batch(
    queue: &Queue,
    shutdown: &mut watch::Receiver<bool>,
    retired: &mut watch::Receiver<bool>,
    depth: usize,
    batch: &mut Vec<Arc<Queued>>,
) -> bool {
    let mut rx = queue.lock().await;
    let first = tokio::select! {
        next = rx.recv() => next,
        () = async {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => {}
                _ = retired.wait_for(|s| *s) => {}
            }
        }, if !rx.is_closed() => {
            // No new requests; what is queued still goes out.
            rx.close();
            rx.recv().await
        }
    };
    let Some(first) = first else { return false };
    let mut bytes = first.size;
    batch.push(first);
    while batch.len() < depth && bytes < BATCH_BYTES {
        match rx.try_recv() {
            Ok(r) => {
                bytes += r.size;
                batch.push(r);
            }
            Err(_) => break,
        }
    }
    true
}

/// The pipelined connections of one target, spop-mirror's own HTTP/1.1
/// writer (`--pipeline N`), in one task: takes requests off the target's
/// queue as they come and writes each batch in one go (each request with the
/// target's policy applied: Host, header edits and redaction, the loop
/// marker, exactly as the hyper path does) without waiting for the answers
/// of the previous ones. A batch goes to the first connection with room
/// (fewer than `depth` in flight): a target that keeps up gets every request
/// on one connection, in the fewest writes and reads on both sides, and the
/// next of the `slots` connections opens only while the ones before it are
/// full (a slow target). Answers are read when the connection next writes,
/// or on a tick of [`ANSWER_TICK`] while requests are in flight (the sockets
/// are not watched, see [`crate::pipeline`]); each request has the request
/// timeout from its hand-over. The answer of a compared request to a
/// target with a role is kept and handed to the comparison, as [`send`]
/// does; the others are counted. Requests a connection loses (closed, timed
/// out, a bad answer) are counted as errors and never resent; that
/// connection is then dropped.
async fn pipeline_worker(
    inner: Arc<Inner>,
    t: Arc<Target>,
    queue: Queue,
    depth: usize,
    slots: usize,
) {
    let depth = depth.max(1);
    let slots = slots.max(1);
    // The open connections, the first to fill first.
    let mut conns: Vec<Conn> = Vec::new();
    let mut shutdown = inner.shutdown.subscribe();
    let mut retired = t.retired.subscribe();
    let mut batch: Vec<Arc<Queued>> = Vec::with_capacity(depth);
    let mut tick = tokio::time::interval(ANSWER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let tm = &*t.m;
    let mut open = true;
    let mut serviced = Instant::now();
    loop {
        let busy = conns.iter().any(|c| c.pipe.busy());
        if !open && !busy {
            break;
        }
        let space = conns.iter().map(|c| c.room(depth)).sum::<usize>()
            + slots.saturating_sub(conns.len()) * depth;
        batch.clear();
        let policy = t.policy.load_full();
        let ticked = if open && space > 0 {
            // More requests, and answers looked at by the way (or on the
            // tick when no request comes).
            tokio::select! {
                biased;
                more = next_batch(&queue, &mut shutdown, &mut retired, space, &mut batch) => {
                    open = more;
                    false
                }
                _ = tick.tick(), if busy => true,
            }
        } else {
            // No connection can take more (or the queue is closed): wait
            // for answers, or room to write, up to the oldest deadline.
            let mut waits: futures::stream::FuturesUnordered<_> = conns
                .iter_mut()
                .filter(|c| c.pipe.busy())
                .map(|c| {
                    let deadline = c
                        .pipe
                        .oldest()
                        .map_or_else(Instant::now, |at| at + policy.request_timeout);
                    c.pipe.ready(deadline)
                })
                .collect();
            // The first one ready is enough; the others stop watching.
            let _ = futures::StreamExt::next(&mut waits).await;
            false
        };
        // What the connections have for us: answers, a deadline passed,
        // output that now fits. Under load every batch looks, and the tick
        // has nothing to add.
        let mut now = Instant::now();
        let look = !ticked || now.saturating_duration_since(serviced) >= ANSWER_TICK / 2;
        if look {
            serviced = now;
        }
        conns.retain_mut(|c| {
            c.looked = look && c.pipe.busy();
            !c.looked || keep(&mut c.pipe, &inner, &t, policy.request_timeout, now)
        });
        if batch.is_empty() {
            continue;
        }
        tm.queue(-(batch.len() as i64));
        if t.down.load(Relaxed) {
            for _ in &batch {
                tm.count_drop(Reason::TargetBackoff);
            }
            continue;
        }
        let live = inner.live.load();
        let target = crate::h1::Target {
            policy: &policy,
            loop_marker: live.set.loop_marker.as_ref(),
            prefix: &t.prefix,
            authority: t.authority.as_bytes(),
        };
        // The first connection with room takes what it can, then the next;
        // a new one opens when those there are full.
        let mut next = 0;
        let mut k = 0;
        while next < batch.len() && k < slots {
            // An idle connection the target may have closed meanwhile (its
            // keep-alive timeout): found out now, not with the requests
            // written on it; and so for the one that takes its place.
            while k < conns.len()
                && !conns[k].looked
                && !conns[k].pipe.busy()
                && !keep(&mut conns[k].pipe, &inner, &t, policy.request_timeout, now)
            {
                conns.remove(k);
            }
            if k == conns.len() {
                let attempt = inner.epoch.elapsed().as_millis() as u64;
                let opened = match connect_tcp(&t, &policy).await {
                    Ok(s) => s
                        .into_std()
                        .and_then(Pipe::new)
                        .map_err(|_| TargetError::Connect),
                    Err(e) => Err(e),
                };
                // The requests' clock starts once the connection is there.
                now = Instant::now();
                match opened {
                    Ok(pipe) => conns.push(Conn { pipe, looked: true }),
                    Err(e) => {
                        for _ in next..batch.len() {
                            tm.error(e);
                        }
                        next = batch.len();
                        target_down(&inner, &t, attempt);
                    }
                }
            }
            let Some(c) = conns.get_mut(k) else { break };
            let take = c.room(depth).min(batch.len() - next);
            k += 1;
            if take == 0 {
                continue;
            }
            let mut sent = 0;
            for q in batch.get(next..next + take).unwrap_or_default() {
                if crate::h1::encode(&target, &q.req, c.pipe.output()) {
                    // A compared request to a target with a role: its
                    // answer is kept for the comparison.
                    let keep = q
                        .compare
                        .as_ref()
                        .filter(|_| policy.role.is_some())
                        .map(|tag| (tag.body_limit(), Arc::clone(tag)));
                    c.pipe.sent(q.req.method() == "HEAD", now, keep);
                    sent += 1;
                } else {
                    tm.error(TargetError::Other);
                }
            }
            next += take;
            tm.flight(sent);
            if let Err(e) = c.pipe.flush() {
                lose(&c.pipe, tm, e);
                k -= 1;
                conns.remove(k);
            }
        }
        // The batch was sized to the room there was, which only grows; a
        // request left over would be a bug, counted rather than kept.
        for _ in next..batch.len() {
            tm.error(TargetError::Other);
        }
        // The requests' memory is released once encoded.
        batch.clear();
    }
}

/// One open pipelined connection of [`pipeline_worker`]; the answers of
/// compared requests come back with their tags.
struct Conn {
    pipe: Pipe<Arc<CompareTag>>,
    /// Its answers were read in this turn of the loop.
    looked: bool,
}

impl Conn {
    /// What the connection can take now.
    fn room(&self, depth: usize) -> usize {
        if self.pipe.writing() {
            0
        } else {
            depth.saturating_sub(self.pipe.in_flight())
        }
    }
}

/// [`service`], and `false` (the requests in flight counted as lost) if
/// the connection is to be dropped.
fn keep(
    p: &mut Pipe<Arc<CompareTag>>,
    inner: &Inner,
    t: &Target,
    timeout: Duration,
    now: Instant,
) -> bool {
    match service(p, inner, t, timeout, now) {
        Ok(()) => true,
        Err(e) => {
            lose(p, &t.m, e);
            false
        }
    }
}

/// How often a pipelined connection with requests in flight looks for
/// their answers when no new request comes.
const ANSWER_TICK: Duration = Duration::from_millis(1);

/// Counts the answers a pipelined connection has (and hands those kept to
/// the comparison, as [`send`] does), gives up on it if its oldest request
/// is past the timeout, and writes pending output.
fn service(
    p: &mut Pipe<Arc<CompareTag>>,
    inner: &Inner,
    t: &Target,
    timeout: Duration,
    now: Instant,
) -> Result<(), Lost> {
    let tm = &*t.m;
    p.read_answers(now, |a| {
        tm.response(a.status, a.took);
        tm.flight(-1);
        if let Some((tag, kept)) = a.kept {
            let answer = kept.into_answer(a.status, now.saturating_duration_since(tag.arrival));
            let settings = Arc::clone(&inner.live.load().set.compare);
            tag.deliver(&t.name, answer, settings);
        }
    })?;
    if p.oldest()
        .is_some_and(|at| now.saturating_duration_since(at) >= timeout)
    {
        return Err(Lost::TimedOut);
    }
    p.flush()
}

/// Counts the requests a lost pipelined connection had in flight.
fn lose<K>(p: &Pipe<K>, tm: &TargetMetrics, why: Lost) {
    let kind = if why == Lost::TimedOut {
        TargetError::Timeout
    } else {
        TargetError::Other
    };
    let n = p.in_flight();
    for _ in 0..n {
        tm.error(kind);
    }
    tm.flight(-(n as i64));
    tracing::debug!(lost = n, why = ?why, "pipelined connection given up");
}

/// A pipelined batch stops growing past this many bytes of requests.
const BATCH_BYTES: u64 = 64 * 1024;

/// A plain TCP connection to an http:// target (the pipelined path).
async fn connect_tcp(t: &Target, policy: &Policy) -> Result<tokio::net::TcpStream, TargetError> {
    tokio::time::timeout(policy.connect_timeout, open_tcp(t, 80))
        .await
        .map_err(|_| TargetError::Connect)?
}

/// A TCP connection (no delay) to the target's host and port (`default_port`
/// when the URL has none); no deadline: the callers set theirs.
async fn open_tcp(t: &Target, default_port: u16) -> Result<tokio::net::TcpStream, TargetError> {
    let host = t
        .uri
        .host()
        .unwrap_or("localhost")
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = t.uri.port_u16().unwrap_or(default_port);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| {
            tracing::debug!(target = %t.uri, error = %e, "connect failed");
            TargetError::Connect
        })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
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

async fn connect(_inner: &Inner, t: &Target) -> Result<Sender, TargetError> {
    let policy = t.policy.load_full();
    let connecting = async {
        let stream = open_tcp(t, if policy.tls.is_some() { 443 } else { 80 }).await?;
        match &policy.tls {
            None => Ok((Io::Plain(stream), policy.http2)),
            Some(tls) => match tls.connect(stream).await {
                Ok((s, h2)) => Ok((Io::Tls(Box::new(s)), h2)),
                Err(e) => {
                    tracing::debug!(target = %t.uri, error = %e, "TLS handshake failed");
                    Err(TargetError::Tls)
                }
            },
        }
    };
    let (io, h2) = tokio::time::timeout(policy.connect_timeout, connecting)
        .await
        .map_err(|_| TargetError::Connect)??;
    match io {
        Io::Plain(s) => handshake(TokioIo::new(s), h2).await,
        Io::Tls(s) => handshake(TokioIo::new(*s), h2).await,
    }
}

/// A connected stream, before HTTP.
enum Io {
    Plain(tokio::net::TcpStream),
    Tls(Box<crate::tls::Stream>),
}

async fn handshake<I>(io: I, h2: bool) -> Result<Sender, TargetError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    if h2 {
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

/// The probe interval of a first outage; it doubles once per outage in a
/// row, up to [`PROBE_MAX`].
pub const PROBE_FIRST: Duration = Duration::from_millis(100);
/// The longest probe interval: mirroring resumes at most this long (plus a
/// connect) after a target comes back.
pub const PROBE_MAX: Duration = Duration::from_millis(800);
/// A target up this long starts again from [`PROBE_FIRST`] at its next outage.
pub const HEALTHY_RESET: Duration = Duration::from_secs(10);

/// The probe interval after `outages` outages in a row (1 for the first).
pub fn probe_interval(outages: u32) -> Duration {
    let shift = outages.saturating_sub(1).min(16);
    PROBE_FIRST.saturating_mul(1u32 << shift).min(PROBE_MAX)
}

/// A connection to target `index` failed. The first failure of an outage
/// marks the target down (requests are then dropped as `target_backoff`)
/// and starts its one prober; the other failures of the same outage (the
/// queued requests' connections failing together) change nothing, and so
/// does a failed attempt begun (at `attempt`, ms since `epoch`) before the
/// target last came back.
fn target_down(inner: &Arc<Inner>, t: &Arc<Target>, attempt: u64) {
    if attempt < t.up_since.load(Relaxed) || t.down.swap(true, Relaxed) {
        return;
    }
    t.m.went_down();
    let now = inner.epoch.elapsed().as_millis() as u64;
    let up_for = now.saturating_sub(t.up_since.load(Relaxed));
    if up_for >= HEALTHY_RESET.as_millis() as u64 {
        t.outages.store(0, Relaxed);
    }
    let outages = t.outages.fetch_add(1, Relaxed).saturating_add(1);
    let every = probe_interval(outages);
    tracing::warn!(target = %t.uri, outages, probe_ms = every.as_millis() as u64, "target unreachable; dropping its requests and probing it");
    tokio::spawn(probe(Arc::clone(inner), Arc::clone(t), every));
}

/// Tries to connect to a down target every `every`, one attempt at a time,
/// until it answers (or the engine closes).
async fn probe(inner: Arc<Inner>, t: Arc<Target>, every: Duration) {
    let mut shutdown = inner.shutdown.subscribe();
    let mut retired = t.retired.subscribe();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
            _ = retired.wait_for(|s| *s) => return,
        }
        if connect(&inner, &t).await.is_ok() {
            t.up_since
                .store(inner.epoch.elapsed().as_millis() as u64, Relaxed);
            t.down.store(false, Relaxed);
            t.m.came_back();
            tracing::info!(target = %t.uri, "target reachable again; mirroring resumes");
            return;
        }
    }
}

/// The request for one target, in hyper's types (the only conversion from
/// the request's byte views). `None` if it cannot be expressed (e.g. more
/// headers than an `http::HeaderMap` holds).
fn build_request(
    cfg: &Policy,
    h2: bool,
    loop_marker: Option<&(HeaderName, HeaderValue)>,
    target: &Uri,
    prefix: &str,
    authority: &HeaderValue,
    req: &MirrorRequest,
) -> Option<Request<Full<Bytes>>> {
    // "*" (OPTIONS) is never prefixed.
    let path = if prefix.is_empty() || req.path() == "*" {
        req.path_bytes()
    } else {
        Bytes::from(format!("{prefix}{}", req.path()))
    };
    let path = PathAndQuery::from_maybe_shared(path).ok()?;
    let host = match &cfg.host {
        HostRewrite::Keep => req
            .host_bytes()
            .and_then(|h| HeaderValue::from_maybe_shared(h).ok()),
        HostRewrite::Target => Some(authority.clone()),
        HostRewrite::Fixed(v) => Some(v.clone()),
    };
    // HTTP/1.1 goes out in origin-form with a Host header; HTTP/2 carries
    // the same choice as the URI's authority (`:authority`), falling back
    // to the target's when the Host is not a valid authority.
    let uri = if h2 && path.as_str() != "*" {
        let authority = host
            .as_ref()
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            .or_else(|| target.authority().cloned());
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(if cfg.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        });
        parts.authority = authority;
        parts.path_and_query = Some(path);
        Uri::from_parts(parts).ok()?
    } else {
        Uri::from(path)
    };
    let mut request = Request::new(Full::new(req.body()));
    *request.method_mut() = Method::from_bytes(req.method().as_bytes()).ok()?;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    if let (Some(host), false) = (host, h2) {
        headers.try_insert(HOST, host).ok()?;
    }
    for (name, value) in req.header_bytes() {
        let name = HeaderName::from_bytes(name).ok()?;
        let value = HeaderValue::from_maybe_shared(value).ok()?;
        headers.try_append(name, value).ok()?;
    }
    cfg.edit(headers)?;
    if let Some((name, value)) = loop_marker {
        headers.try_insert(name.clone(), value.clone()).ok()?;
    }
    if req.has_body_framing() || req.body_len() > 0 {
        headers
            .try_insert(CONTENT_LENGTH, HeaderValue::from(req.body_len()))
            .ok()?;
    }
    Some(request)
}

/// hyper's request for the set's first target, as the hyper path builds it
/// (tests compare the pipelined writer's bytes with it).
#[cfg(test)]
pub(crate) fn build_request_for_test(
    set: &TargetSet,
    req: &MirrorRequest,
) -> Option<Request<Full<Bytes>>> {
    let p = set.targets.first()?;
    let prefix = p.uri.path().trim_end_matches('/').to_owned();
    let authority = HeaderValue::from_str(p.uri.authority()?.as_str()).ok()?;
    build_request(
        p,
        false,
        set.loop_marker.as_ref(),
        &p.uri,
        &prefix,
        &authority,
        req,
    )
}

/// Sends one request and reads its answer to the end; `false` if the
/// connection cannot be used again. A compared request (`compare`) sent to
/// a target with a role has its answer kept (up to the body limit) and
/// handed to the comparison; every other answer is read and discarded.
async fn send(
    inner: &Inner,
    t: &Target,
    tm: &TargetMetrics,
    sender: &mut Sender,
    req: &MirrorRequest,
    compare: Option<&CompareTag>,
) -> bool {
    let policy = t.policy.load_full();
    let h2 = matches!(sender, Sender::Http2(_));
    let built = build_request(
        &policy,
        h2,
        inner.live.load().set.loop_marker.as_ref(),
        &t.uri,
        &t.prefix,
        &t.authority,
        req,
    );
    let Some(request) = built else {
        tm.error(TargetError::Other);
        return true;
    };
    let start = Instant::now();
    let capture = compare.filter(|_| policy.role.is_some());
    let outcome = tokio::time::timeout(policy.request_timeout, async {
        let resp = sender.send(request).await?;
        let status = resp.status().as_u16();
        if let Some(tag) = capture {
            let answer = crate::comparing::read_answer(resp, tag.body_limit(), tag.arrival).await?;
            tm.response(status, start.elapsed());
            let settings = Arc::clone(&inner.live.load().set.compare);
            tag.deliver(&t.name, answer, settings);
            return Ok(None);
        }
        // Read the answer to its end (keeps the connection reusable), keep nothing.
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            frame?;
        }
        Ok::<Option<u16>, hyper::Error>(Some(status))
    })
    .await;
    match outcome {
        Ok(Ok(Some(status))) => {
            tm.response(status, start.elapsed());
            true
        }
        // Counted already (before the comparison's work).
        Ok(Ok(None)) => true,
        Ok(Err(e)) => {
            let tls = crate::tls::is_tls_error(&e);
            tm.error(if tls {
                TargetError::Tls
            } else {
                TargetError::Other
            });
            tracing::debug!(target = %t.uri, error = %e, "mirrored request failed");
            false
        }
        Err(_) => {
            tm.error(TargetError::Timeout);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use haproxy_spop::{Headers, Notify};

    fn request(headers: &[(&[u8], &[u8])]) -> MirrorRequest {
        let n = Notify::builder()
            .message("mirror")
            .arg("arg_method", "POST")
            .arg("arg_path", "/p?q")
            .arg("arg_ver", "1.1")
            .arg("arg_hdrs", Headers::encode(headers.iter().copied()))
            .arg("arg_body", Bytes::from_static(b"hello"))
            .build()
            .unwrap();
        crate::request::build(&n.message("mirror").unwrap(), &Default::default()).unwrap()
    }

    fn cfg(args: &[&str]) -> MirrorConfig {
        let mut all = vec!["spop-mirror", "--target", "http://127.0.0.1:9/pre"];
        all.extend_from_slice(args);
        TargetSet::build(&Config::load(all).unwrap(), 1).unwrap()
    }

    fn to_http(cfg: &MirrorConfig, req: &MirrorRequest) -> Option<Request<Full<Bytes>>> {
        let p = &cfg.targets[0];
        let target = &p.uri;
        let authority = HeaderValue::from_str(target.authority().unwrap().as_str()).unwrap();
        build_request(
            p,
            p.http2,
            cfg.loop_marker.as_ref(),
            target,
            "/pre",
            &authority,
            req,
        )
    }

    #[test]
    fn http1_request_from_the_views() {
        let r = request(&[
            (b"host", b"shop.test"),
            (b"x", b"1"),
            (b"x", b"2"),
            (b"content-length", b"5"),
        ]);
        let c = cfg(&["--add-header", "X-Mirror: yes"]);
        let h = to_http(&c, &r).unwrap();
        assert_eq!(h.method(), "POST");
        assert_eq!(h.uri(), "/pre/p?q");
        assert_eq!(h.headers()["host"], "shop.test");
        assert_eq!(
            h.headers().get_all("x").iter().collect::<Vec<_>>(),
            ["1", "2"]
        );
        assert_eq!(h.headers()["x-mirror"], "yes");
        assert_eq!(h.headers()["content-length"], "5");
    }

    /// `--http2` honours `--host`: it becomes the URI's authority
    /// (`:authority`); a Host that is no authority falls back to the target's.
    #[test]
    fn http2_authority_follows_host() {
        let r = request(&[(b"host", b"shop.test:8443")]);
        for (args, want) in [
            (&["--http2"][..], "http://shop.test:8443/pre/p?q"),
            (
                &["--http2", "--host", "target"][..],
                "http://127.0.0.1:9/pre/p?q",
            ),
            (
                &["--http2", "--host", "fixed.example"][..],
                "http://fixed.example/pre/p?q",
            ),
            (
                &["--http2", "--host", "bad host"][..],
                "http://127.0.0.1:9/pre/p?q",
            ),
        ] {
            let h = to_http(&cfg(args), &r).unwrap();
            assert_eq!(h.uri().to_string(), want, "{args:?}");
            assert!(h.headers().get("host").is_none(), "{args:?}");
        }
    }

    /// Past what an `http::HeaderMap` holds (24 576), the conversion fails
    /// instead of panicking: the most headers a request keeps, plus 1 000
    /// added ones.
    #[test]
    fn too_many_headers_fail_without_panic() {
        let added: Vec<String> = (0..1000).map(|i| format!("x-add{i}: 1")).collect();
        let mut args = Vec::new();
        for a in &added {
            args.extend(["--add-header", a.as_str()]);
        }
        for (c, count, fits) in [
            (cfg(&[]), crate::request::MAX_HEADERS, true),
            (cfg(&args), crate::request::MAX_HEADERS, false),
        ] {
            let names: Vec<String> = (0..count).map(|i| format!("x-h{i}")).collect();
            let mut headers: Vec<(&[u8], &[u8])> = vec![(b"host", b"h")];
            headers.extend(names.iter().map(|n| (n.as_bytes(), &b"v"[..])));
            let r = request(&headers);
            let h = to_http(&c, &r);
            assert_eq!(h.is_some(), fits, "{count}");
            if let Some(h) = h {
                // Host, Content-Length and the loop marker too.
                assert_eq!(h.headers().len(), count + 3);
            }
        }
    }

    /// Two targets share one copy: its bytes are counted once, while
    /// either still holds it, and released when both are done.
    #[tokio::test]
    async fn shared_requests_are_counted_once() {
        // Targets that accept and never answer.
        let l1 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (u1, u2) = (
            format!("http://{}", l1.local_addr().unwrap()),
            format!("http://{}", l2.local_addr().unwrap()),
        );
        let c = TargetSet::build(
            &Config::load([
                "spop-mirror",
                "--target",
                &u1,
                "--target",
                &u2,
                "--request-timeout",
                "300ms",
            ])
            .unwrap(),
            1,
        )
        .unwrap();
        let metrics = Metrics::new([u1.clone(), u2.clone()]);
        let (mirror, workers) = Mirror::start(c, Arc::clone(&metrics));
        let r = request(&[(b"host", b"h")]);
        let size = r.size() as u64;
        assert_eq!(mirror.submit(r), Submitted::Queued(2));
        assert_eq!(metrics.queued_bytes_now(), size);
        // Both time out (no answer), then nothing is held.
        let deadline = Instant::now() + Duration::from_secs(5);
        while metrics.queued_bytes_now() != 0 {
            assert!(
                Instant::now() < deadline,
                "still {} bytes",
                metrics.queued_bytes_now()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(metrics.targets()[0].errors(TargetError::Timeout), 1);
        assert_eq!(metrics.targets()[1].errors(TargetError::Timeout), 1);
        mirror.close();
        assert!(workers.drain(Duration::from_secs(5)).await);
        drop((l1, l2));
    }

    /// What the test targets answer.
    const NO_CONTENT: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";

    /// The targets of `args`, a request, and its length as written.
    fn pipelined_set(args: &[&str]) -> (TargetSet, MirrorRequest, usize) {
        let set = || TargetSet::build(&Config::load(args).unwrap(), 1).unwrap();
        let req = request(&[(b"host", b"h")]);
        let len = encoded(&set(), [&req]).len();
        (set(), req, len)
    }

    /// Reads `n` bytes from a test target's side of a connection.
    async fn read_exactly(s: &mut tokio::net::TcpStream, n: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut got = vec![0u8; n];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        got
    }

    /// Waits up to 5 s for `ok`.
    async fn until(what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ok() {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The next connection to a test target, within 5 s.
    async fn accepted(l: &tokio::net::TcpListener) -> tokio::net::TcpStream {
        let (s, _) = tokio::time::timeout(Duration::from_secs(5), l.accept())
            .await
            .unwrap()
            .unwrap();
        s
    }

    /// The bytes the pipelined path writes for `reqs` to `c`'s first target.
    fn encoded<'a>(c: &TargetSet, reqs: impl IntoIterator<Item = &'a MirrorRequest>) -> Vec<u8> {
        let authority = c.targets[0].uri.authority().unwrap().as_str().to_owned();
        let target = crate::h1::Target {
            policy: &c.targets[0],
            loop_marker: c.loop_marker.as_ref(),
            prefix: "",
            authority: authority.as_bytes(),
        };
        let mut out = Vec::new();
        for r in reqs {
            assert!(crate::h1::encode(&target, r, &mut out));
        }
        out
    }

    /// `--pipeline` with its workers on a runtime of their own (as on the
    /// SPOP thread): at most N requests in flight on the connection, more
    /// written as answers come without waiting for a whole batch; requests
    /// unanswered past the timeout are counted as timeouts and the
    /// connection is dropped; at shutdown the answers of requests in flight
    /// are still awaited and counted.
    #[tokio::test]
    async fn pipelined_window_timeout_and_drain() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        async fn nothing_more(s: &mut tokio::net::TcpStream) {
            let mut b = [0u8; 1];
            let more = tokio::time::timeout(Duration::from_millis(100), s.read(&mut b)).await;
            assert!(more.is_err(), "nothing past the window: {more:?}");
        }
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let u = format!("http://{}", l.local_addr().unwrap());
        let args = [
            "spop-mirror",
            "--target",
            &u,
            "--pipeline",
            "4",
            "--max-concurrency",
            "1",
            "--request-timeout",
            "1s",
        ];
        let (set, req, len) = pipelined_set(&args);
        // The workers' runtime, on a thread of its own.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || rt.block_on(released));
        let metrics = Metrics::new([u.clone()]);
        let (mirror, workers) = Mirror::start_with(set, Arc::clone(&metrics), Some(handle));
        let tm = &metrics.targets()[0];

        for _ in 0..6 {
            assert_eq!(mirror.submit(req.clone()), Submitted::Queued(1));
        }
        let mut s = accepted(&l).await;
        read_exactly(&mut s, 4 * len).await;
        nothing_more(&mut s).await;
        assert_eq!(tm.in_flight(), 4);
        // Two answers make room for the last two.
        s.write_all(&NO_CONTENT.repeat(2)).await.unwrap();
        read_exactly(&mut s, 2 * len).await;
        nothing_more(&mut s).await;
        until("two answered", || tm.responses(2) == 2).await;
        // The other four are never answered: timeouts, connection dropped.
        until("four timed out", || tm.errors(TargetError::Timeout) == 4).await;
        assert_eq!(tm.in_flight(), 0);
        let mut b = [0u8; 1];
        let eof = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await;
        assert!(
            matches!(eof, Ok(Ok(0))),
            "the connection is closed: {eof:?}"
        );
        // Shutdown with two requests in flight: their answers still count.
        for _ in 0..2 {
            assert_eq!(mirror.submit(req.clone()), Submitted::Queued(1));
        }
        let mut s = accepted(&l).await;
        read_exactly(&mut s, 2 * len).await;
        mirror.close();
        let drain = tokio::spawn(workers.drain(Duration::from_secs(5)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!drain.is_finished(), "drain waits for the answers");
        s.write_all(&NO_CONTENT.repeat(2)).await.unwrap();
        assert!(drain.await.unwrap(), "drained in time");
        assert_eq!(tm.responses(2), 4);
        assert_eq!(tm.errors(TargetError::Timeout), 4);
        assert_eq!(tm.errors(TargetError::Other), 0);
        assert_eq!(tm.in_flight(), 0);
        drop(release);
        thread.join().unwrap().unwrap_err();
    }

    /// `--pipeline`: a target that keeps up gets every request on its first
    /// connection; the next connection opens only while the first has N in
    /// flight; an idle connection the target closed (and the one after it)
    /// is found out before requests are written on it.
    #[tokio::test]
    async fn pipelined_fill_first_then_spill() {
        use tokio::io::AsyncWriteExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let u = format!("http://{}", l.local_addr().unwrap());
        async fn no_new_connection(l: &tokio::net::TcpListener) {
            let more = tokio::time::timeout(Duration::from_millis(100), l.accept()).await;
            assert!(more.is_err(), "no other connection: {more:?}");
        }
        // Two connections of two requests each.
        let args = [
            "spop-mirror",
            "--target",
            &u,
            "--pipeline",
            "2",
            "--max-concurrency",
            "4",
        ];
        let (set, req, len) = pipelined_set(&args);
        let metrics = Metrics::new([u.clone()]);
        let (mirror, workers) = Mirror::start_with(set, Arc::clone(&metrics), None);
        let tm = &metrics.targets()[0];

        // One at a time, answered: all on the first connection.
        let mut a = None;
        for n in 1..=5 {
            assert_eq!(mirror.submit(req.clone()), Submitted::Queued(1));
            if n == 1 {
                a = Some(accepted(&l).await);
            }
            let a = a.as_mut().unwrap();
            read_exactly(a, len).await;
            a.write_all(NO_CONTENT).await.unwrap();
            until("answered", || tm.responses(2) == n).await;
        }
        no_new_connection(&l).await;
        let mut a = a.unwrap();
        // Three at once: two fill `first`, the third opens the next
        // connection (returned); all three answered.
        let spill = async |first: &mut tokio::net::TcpStream, answered: u64| {
            for _ in 0..3 {
                assert_eq!(mirror.submit(req.clone()), Submitted::Queued(1));
            }
            read_exactly(first, 2 * len).await;
            let mut next = accepted(&l).await;
            read_exactly(&mut next, len).await;
            first.write_all(&NO_CONTENT.repeat(2)).await.unwrap();
            next.write_all(NO_CONTENT).await.unwrap();
            until("three more answered", || tm.responses(2) == answered + 3).await;
            next
        };
        let mut b = spill(&mut a, 5).await;
        // The target closes the idle first connection: the next request goes
        // on the second, none is lost, no third connection.
        drop(a);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(mirror.submit(req.clone()), Submitted::Queued(1));
        read_exactly(&mut b, len).await;
        b.write_all(NO_CONTENT).await.unwrap();
        until("nine answered", || tm.responses(2) == 9).await;
        no_new_connection(&l).await;
        // Both connections idle and closed by the target: the request goes
        // on a new one.
        let c = spill(&mut b, 9).await;
        drop((b, c));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(mirror.submit(req.clone()), Submitted::Queued(1));
        let mut d = accepted(&l).await;
        read_exactly(&mut d, len).await;
        d.write_all(NO_CONTENT).await.unwrap();
        until("thirteen answered", || tm.responses(2) == 13).await;
        assert_eq!(tm.errors(TargetError::Other), 0);
        assert_eq!(tm.in_flight(), 0);
        mirror.close();
        assert!(workers.drain(Duration::from_secs(5)).await, "drained");
    }

    /// `--pipeline`: the queued requests go out in one write, byte for byte
    /// what is sent one at a time (the target's redaction and the loop
    /// marker included); 1xx, Content-Length and chunked answers are
    /// counted; requests a target drops mid-pipeline are errors, never
    /// resent, and the next request goes on a new connection.
    #[tokio::test]
    async fn pipelined_requests_and_a_target_closing_mid_pipeline() {
        use tokio::io::AsyncWriteExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let u = format!("http://{}", l.local_addr().unwrap());
        let set = || {
            TargetSet::build(
                &Config::load([
                    "spop-mirror",
                    "--target",
                    &u,
                    "--pipeline",
                    "8",
                    "--max-concurrency",
                    "1",
                    "--add-header",
                    "x-mirror: 1",
                    "--redact",
                    "authorization",
                ])
                .unwrap(),
                1,
            )
            .unwrap()
        };
        let c = set();
        let metrics = Metrics::new([u.clone()]);
        let (mirror, workers) = Mirror::start(set(), Arc::clone(&metrics));
        let tm = &metrics.targets()[0];
        let ids: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        let reqs: Vec<MirrorRequest> = ids
            .iter()
            .map(|i| {
                request(&[
                    (b"host", b"h"),
                    (b"x-i", i.as_bytes()),
                    (b"authorization", b"Bearer s3cret"),
                ])
            })
            .collect();
        let want = encoded(&c, &reqs[..4]);
        let text = String::from_utf8_lossy(&want).into_owned();
        assert!(
            !text.contains("s3cret"),
            "redacted on the pipelined path: {text}"
        );
        assert!(text.contains("x-mirrored-by: spop-mirror"), "{text}");
        for r in &reqs[..4] {
            assert_eq!(mirror.submit(r.clone()), Submitted::Queued(1));
        }
        let mut s = accepted(&l).await;
        assert_eq!(read_exactly(&mut s, want.len()).await, want);
        s.write_all(
            b"HTTP/1.1 100 Continue\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc\
              HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Len",
        )
        .await
        .unwrap();
        drop(s);
        let deadline = Instant::now() + Duration::from_secs(5);
        while tm.errors(TargetError::Other) < 2 {
            assert!(
                Instant::now() < deadline,
                "errors {}",
                tm.errors(TargetError::Other)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(tm.responses(2), 2);
        assert_eq!(tm.errors(TargetError::Other), 2);
        // Nothing is resent.
        assert!(tokio::time::timeout(Duration::from_millis(300), l.accept())
            .await
            .is_err());
        // The next request: a new connection, that request alone.
        assert_eq!(mirror.submit(reqs[4].clone()), Submitted::Queued(1));
        let one = encoded(&c, [&reqs[4]]);
        let mut s = accepted(&l).await;
        assert_eq!(read_exactly(&mut s, one.len()).await, one);
        s.write_all(NO_CONTENT).await.unwrap();
        while tm.responses(2) < 3 {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(tm.errors(TargetError::Other), 2);
        assert_eq!(metrics.queued_bytes_now(), 0);
        mirror.close();
        assert!(workers.drain(Duration::from_secs(5)).await);
    }

    #[test]
    fn probe_interval_doubles_per_outage_up_to_the_cap() {
        let got: Vec<u64> = (1..=6)
            .map(|n| probe_interval(n).as_millis() as u64)
            .collect();
        assert_eq!(got, [100, 200, 400, 800, 800, 800]);
        assert_eq!(probe_interval(0), PROBE_FIRST);
        assert_eq!(probe_interval(u32::MAX), PROBE_MAX);
    }
}
