//! Comparison at run time: the sans-IO [`crate::compare::Store`] owned by
//! one thread, fed through a bounded queue by the SPOP handler (requests
//! chosen for comparison, and production's answers from the compare
//! message) and by the mirror workers (the targets' answers). The thread
//! also expires entries every 100 ms, counts the store's events
//! ([`crate::metrics::CompareMetrics`]) and writes the difference log
//! ([`crate::compare::DiffLog`]).
//!
//! ```text
//!  handler: mirror msg ──draw──> submit (tagged) ─> Open ──┐        ACK set-var txn.<prefix>.compare
//!  handler: compare msg ──────────────────────────> Answer ─┤ bounded   ┌> store.open / answer / expire
//!  worker:  target's answer ──────────────────────> Answer ─┴─ queue ──>┤  (the comparison runs here)
//!                                                                        └> events: metrics, NDJSON log
//! ```
//!
//! The comparison itself (JSON diffs of bodies up to the body limit) runs
//! on that thread: never on the SPOP thread, whose ACKs HAProxy waits for,
//! and under no lock others wait on. Order: a request's `Open` is queued
//! before any of its targets' answers. The handler queues it once it knows
//! which candidates took the request, under the request's own small lock
//! ([`CompareTag`]); a target answering sooner leaves its answer in the tag,
//! and the handler queues it after the `Open`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{
    sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError,
};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use haproxy_spop::{ArgError, DataType, Message};

use crate::compare::{Answer, DiffLog, Event, Limits, LogSettings, Settings, Side, Store};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::mirror::{ComparePair, Mirror, Submitted};
use crate::request::{BadMessage, MirrorRequest};

/// Work waiting for the comparison thread, at most; past it (or past
/// `--compare-max-bytes` of answers waiting) new work is dropped and
/// counted (`spop_mirror_compare_queue_full_total`). Room for what comes
/// in one [`DRAIN_EVERY`] at 1M commands (three per compared request) a
/// second.
pub const QUEUE: usize = 1024;

/// While work comes, the comparison thread takes it every so often rather
/// than being woken for each piece. A thread woken for every compared
/// request (a futex wake from the SPOP thread, then a switch) cost HAProxy
/// 17% of its rate with 10% of the requests compared (HAProxy 3.2,
/// everything mirrored, issue 11's set-up): the woken thread takes a CPU
/// from HAProxy or the SPOP thread at once, many thousand times a second.
/// Polled, it wakes at most 1000 times a second under load, and is woken
/// by a sender only after an idle turn.
pub const DRAIN_EVERY: Duration = Duration::from_millis(1);

/// How often entries past their deadline are removed.
pub const EXPIRE_EVERY: Duration = Duration::from_millis(100);

/// The longest request line (`GET /path`) kept per entry, in bytes.
pub const REQUEST_LINE_CUT: usize = 256;

/// The argument names of the compare message (and the mirror message's id).
#[derive(Debug, Clone)]
pub struct CompareNames {
    /// The compare message's name.
    pub message: String,
    /// The `unique-id` argument, in both messages.
    pub id: String,
    /// `status`.
    pub status: String,
    /// `res.hdrs_bin`.
    pub headers: String,
    /// `res.body`.
    pub body: String,
    /// `res.body_size`, optional (`None`: not looked for).
    pub body_size: Option<String>,
}

impl Default for CompareNames {
    fn default() -> Self {
        Self {
            message: "compare".into(),
            id: "id".into(),
            status: "status".into(),
            headers: "hdrs".into(),
            body: "body".into(),
            body_size: Some("body_size".into()),
        }
    }
}

/// What the comparison thread is asked to do.
enum Command {
    /// A request chosen for comparison was queued to these candidates.
    Open {
        id: Bytes,
        request: String,
        pairs: Vec<ComparePair>,
        arrival: Instant,
    },
    /// An answer (production's latency is measured by the thread, from the
    /// request's arrival to `at`).
    Answer {
        id: Bytes,
        side: Side,
        answer: Answer,
        settings: Arc<Settings>,
        at: Instant,
    },
}

/// A target's answer that came before its request's `Open` was queued.
struct Early {
    target: Arc<str>,
    answer: Answer,
    settings: Arc<Settings>,
}

#[derive(Default)]
struct TagState {
    /// `None` until the handler knows; then the targets whose answers are
    /// awaited (empty: not compared).
    expected: Option<Box<[Arc<str>]>>,
    early: Vec<Early>,
}

/// A request chosen for comparison, as carried to the targets' workers
/// with the queued request.
pub struct CompareTag {
    /// The request's unique-id (a compact copy).
    pub id: Bytes,
    /// When the agent received the request's message (latencies are
    /// measured from it).
    pub arrival: Instant,
    state: Mutex<TagState>,
    compare: Arc<Compare>,
}

impl std::fmt::Debug for CompareTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompareTag")
            .field("id_len", &self.id.len())
            .finish_non_exhaustive()
    }
}

impl CompareTag {
    fn state(&self) -> std::sync::MutexGuard<'_, TagState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this target's answer is awaited (`false` until known).
    pub fn expects(&self, target: &str) -> bool {
        self.state()
            .expected
            .as_ref()
            .is_some_and(|e| e.iter().any(|t| &**t == target))
    }

    /// The most body bytes kept of an answer.
    pub fn body_limit(&self) -> usize {
        self.compare.body_limit
    }

    /// Hands a target's answer to the comparison (nothing if it is not
    /// awaited).
    pub fn deliver(&self, target: &Arc<str>, answer: Answer, settings: Arc<Settings>) {
        let mut st = self.state();
        match &st.expected {
            None => st.early.push(Early {
                target: Arc::clone(target),
                answer,
                settings,
            }),
            Some(e) if e.iter().any(|t| t == target) => {
                self.compare.send(Command::Answer {
                    id: self.id.clone(),
                    side: Side::Target(Arc::clone(target)),
                    answer,
                    settings,
                    at: Instant::now(),
                });
            }
            Some(_) => {}
        }
    }
}

/// The comparison's shared handle: the queue to its thread, the draw.
pub struct Compare {
    tx: SyncSender<Command>,
    /// Bytes of answers waiting in the queue.
    queued_bytes: AtomicUsize,
    max_queued_bytes: usize,
    metrics: Arc<Metrics>,
    rng: AtomicU64,
    body_limit: usize,
    var: Bytes,
    instance: u32,
    names: CompareNames,
}

impl std::fmt::Debug for Compare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compare")
            .field("instance", &self.instance)
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

/// The comparison thread; [`CompareTasks::stop`] (or dropping it) ends it.
#[derive(Debug)]
pub struct CompareTasks {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CompareTasks {
    /// Stops the thread (what is queued then is dropped) and waits for it,
    /// on a blocking thread.
    pub async fn stop(mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl Drop for CompareTasks {
    /// Tells the thread to stop (it wakes at least every 100 ms).
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

impl Compare {
    /// The comparison thread and its handle, from the configuration.
    ///
    /// # Errors
    ///
    /// The difference log cannot be opened, or the thread not started.
    pub fn start(
        cfg: &Config,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Arc<Self>, CompareTasks)> {
        let log = match &cfg.compare_log {
            None => None,
            Some(path) => Some(
                DiffLog::open(LogSettings {
                    path: (path != "-").then(|| path.into()),
                    max_bytes: cfg.compare_log_max_bytes as u64,
                    keep: cfg.compare_log_keep,
                    sample: cfg.compare_log_sample,
                    per_second: cfg.compare_log_per_second,
                })
                .map_err(|e| std::io::Error::new(e.kind(), format!("compare_log {path}: {e}")))?,
            ),
        };
        let names = CompareNames {
            message: cfg.compare_message.clone(),
            id: cfg.arg_id.clone(),
            status: cfg.compare_arg_status.clone(),
            headers: cfg.compare_arg_hdrs.clone(),
            body: cfg.compare_arg_body.clone(),
            body_size: Some(cfg.compare_arg_body_size.clone()).filter(|n| !n.is_empty()),
        };
        let limits = Limits {
            max_entries: cfg.compare_max_entries,
            max_bytes: cfg.compare_max_bytes,
            deadline: cfg.compare_deadline,
        };
        let (tx, rx) = sync_channel(QUEUE);
        let compare = Arc::new(Self {
            tx,
            queued_bytes: AtomicUsize::new(0),
            max_queued_bytes: cfg.compare_max_bytes,
            metrics: Arc::clone(&metrics),
            rng: AtomicU64::new(seed()),
            body_limit: cfg.compare_body_limit,
            var: Bytes::from(cfg.compare_var.clone()),
            instance: cfg.instance,
            names,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            store: Store::new(limits),
            metrics,
            log,
            log_warned: false,
            compare: Arc::downgrade(&compare),
        };
        let thread = std::thread::Builder::new()
            .name("spop-compare".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || {
                    worker.run(&rx, &stop);
                }
            })?;
        Ok((
            compare,
            CompareTasks {
                stop,
                thread: Some(thread),
            },
        ))
    }

    /// The names of the compare message and its arguments.
    pub const fn names(&self) -> &CompareNames {
        &self.names
    }

    /// A uniform 64-bit draw (independent of the mirror's sampling).
    pub fn draw(&self) -> u64 {
        splitmix(self.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed))
    }

    /// The variable set in the ACK of a compared request, and its value.
    pub fn var(&self) -> (Bytes, i64) {
        (self.var.clone(), i64::from(self.instance))
    }

    /// Queues work for the thread; `false` (counted) when the queue is
    /// full, or answers over `--compare-max-bytes` are waiting already.
    fn send(&self, c: Command) -> bool {
        let size = match &c {
            Command::Answer { answer, .. } => answer.size(),
            Command::Open { .. } => 0,
        };
        if size > 0
            && self
                .queued_bytes
                .fetch_add(size, Relaxed)
                .saturating_add(size)
                > self.max_queued_bytes
        {
            self.queued_bytes.fetch_sub(size, Relaxed);
            self.metrics.compare().queue_full();
            return false;
        }
        match self.tx.try_send(c) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued_bytes.fetch_sub(size, Relaxed);
                self.metrics.compare().queue_full();
                false
            }
        }
    }

    /// Queues a request chosen for comparison (see [`Mirror::submit_compared`])
    /// and, if at least one candidate target took it, opens its entry:
    /// `true` then (the ACK sets the variable).
    pub fn submit(
        self: &Arc<Self>,
        mirror: &Mirror,
        req: MirrorRequest,
        src: Option<IpAddr>,
        id: Bytes,
        arrival: Instant,
    ) -> (Submitted, bool) {
        let request = request_line(&req);
        let tag = Arc::new(CompareTag {
            // A compact copy: the id must not pin the frame it came in.
            id: Bytes::copy_from_slice(&id),
            arrival,
            state: Mutex::new(TagState::default()),
            compare: Arc::clone(self),
        });
        let (submitted, pairs) = mirror.submit_compared(req, src, Arc::clone(&tag));
        let opened = self.open(&tag, pairs, request);
        (submitted, opened)
    }

    /// Queues the `Open` of a request the `pairs` took (none: not
    /// compared), then the answers that came before it; `true` if opened.
    fn open(&self, tag: &CompareTag, pairs: Vec<ComparePair>, request: String) -> bool {
        let mut st = tag.state();
        let mut expected: Vec<Arc<str>> = Vec::with_capacity(pairs.len() * 2);
        for (c, b) in &pairs {
            expected.push(Arc::clone(c));
            if let Some(b) = b {
                if !expected.contains(b) {
                    expected.push(Arc::clone(b));
                }
            }
        }
        let opened = !pairs.is_empty()
            && self.send(Command::Open {
                id: tag.id.clone(),
                request,
                pairs,
                arrival: tag.arrival,
            });
        if !opened {
            expected.clear();
        }
        // Answers that came first go after the Open.
        for e in std::mem::take(&mut st.early) {
            if expected.contains(&e.target) {
                self.send(Command::Answer {
                    id: tag.id.clone(),
                    side: Side::Target(e.target),
                    answer: e.answer,
                    settings: e.settings,
                    at: Instant::now(),
                });
            }
        }
        st.expected = Some(expected.into_boxed_slice());
        drop(st);
        if opened {
            self.metrics.compare().opened();
        }
        opened
    }

    /// Reads a compare message (production's answer) and queues it for the
    /// comparison.
    ///
    /// # Errors
    ///
    /// The kind of bad message (counted by the caller).
    pub fn production(&self, msg: &Message<'_>, settings: Arc<Settings>) -> Result<(), BadMessage> {
        let at = Instant::now();
        let (id, answer) = production_answer(msg, &self.names, self.body_limit)?;
        self.send(Command::Answer {
            id,
            side: Side::Production,
            answer,
            settings,
            at,
        });
        Ok(())
    }
}

/// The comparison thread's state.
struct Worker {
    store: Store,
    metrics: Arc<Metrics>,
    log: Option<DiffLog>,
    log_warned: bool,
    /// To give back the queue's byte count.
    compare: std::sync::Weak<Compare>,
}

impl Worker {
    /// Takes work until `stop` (checked at least every [`EXPIRE_EVERY`]),
    /// or until every handle is gone: what is queued, every
    /// [`DRAIN_EVERY`] while work comes; after a turn without work, it
    /// waits to be woken by the next piece (senders only wake a waiting
    /// receiver).
    /// Returns the turns that took work (for tests).
    fn run(mut self, rx: &Receiver<Command>, stop: &AtomicBool) -> u64 {
        let mut out = Vec::new();
        let mut last_expiry = Instant::now();
        let mut turns = 0;
        while !stop.load(Relaxed) {
            let mut took = 0usize;
            loop {
                match rx.try_recv() {
                    Ok(c) => {
                        self.handle(c, &mut out);
                        took += 1;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return turns + u64::from(took > 0),
                }
            }
            if took == 0 {
                match rx.recv_timeout(EXPIRE_EVERY) {
                    Ok(c) => {
                        self.handle(c, &mut out);
                        turns += 1;
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            let now = Instant::now();
            if now.saturating_duration_since(last_expiry) >= EXPIRE_EVERY {
                last_expiry = now;
                self.store.expire(now, &mut out);
            }
            self.events(&mut out);
            if took > 0 {
                turns += 1;
                std::thread::sleep(DRAIN_EVERY);
            }
        }
        turns
    }

    fn handle(&mut self, c: Command, out: &mut Vec<Event>) {
        let now = Instant::now();
        match c {
            Command::Open {
                id,
                request,
                pairs,
                arrival,
            } => {
                // Opened at the request's arrival: production's latency
                // is measured from it, and the deadline runs from it.
                self.store.open(id, request, pairs, arrival, out);
            }
            Command::Answer {
                id,
                side,
                mut answer,
                settings,
                at,
            } => {
                if let Some(c) = self.compare.upgrade() {
                    c.queued_bytes.fetch_sub(answer.size(), Relaxed);
                }
                if side == Side::Production {
                    answer.latency = self
                        .store
                        .opened_at(&id)
                        .map_or(Duration::ZERO, |a| at.saturating_duration_since(a));
                }
                self.store.answer(&id, side, answer, &settings, now, out);
            }
        }
    }

    /// Counts and logs the store's events.
    fn events(&mut self, out: &mut Vec<Event>) {
        let cm = self.metrics.compare();
        cm.store(self.store.len(), self.store.bytes());
        for e in out.drain(..) {
            cm.event(&e);
            let Some(log) = self.log.as_mut() else {
                continue;
            };
            if let Event::Compared { report, .. } = &e {
                if report.is_equal() {
                    continue;
                }
                if let Err(err) = log.write(&e, SystemTime::now()) {
                    if !self.log_warned {
                        self.log_warned = true;
                        tracing::warn!(error = %err, "cannot write the compare log (logged once)");
                    }
                }
            }
        }
    }
}

/// `GET /path`, cut to [`REQUEST_LINE_CUT`] bytes.
fn request_line(req: &MirrorRequest) -> String {
    let mut line = format!("{} {}", req.method(), req.path());
    if line.len() > REQUEST_LINE_CUT {
        let mut at = REQUEST_LINE_CUT;
        while !line.is_char_boundary(at) {
            at -= 1;
        }
        line.truncate(at);
    }
    line
}

/// Production's answer from a compare message: its id and the answer
/// (latency zero: the caller knows the request's arrival). Headers are copied
/// with lowercase names; the body is copied up to `limit` bytes, and marked
/// truncated when longer, or shorter than its `body_size` argument (or,
/// without one, its Content-Length).
///
/// # Errors
///
/// A missing or mistyped id, status or headers argument, or a malformed
/// header block.
pub fn production_answer(
    msg: &Message<'_>,
    names: &CompareNames,
    limit: usize,
) -> Result<(Bytes, Answer), BadMessage> {
    let arg = |e: ArgError| match e {
        ArgError::Missing => BadMessage::MissingArg,
        ArgError::Invalid(_) => BadMessage::BadHeaders,
        _ => BadMessage::WrongType,
    };
    let id = msg.bytes(&names.id).map_err(arg)?;
    let status = msg.int(&names.status).map_err(arg)?;
    let status = u16::try_from(status)
        .ok()
        .filter(|s| (100..=999).contains(s))
        .ok_or(BadMessage::WrongType)?;
    let block = msg.headers(&names.headers).map_err(arg)?;
    let body = match msg.bytes(&names.body) {
        Ok(b) => b,
        Err(ArgError::Missing) => Bytes::new(),
        Err(ArgError::WrongType { found, .. }) if found == DataType::NULL => Bytes::new(),
        Err(e) => return Err(arg(e)),
    };
    let mut headers = Vec::with_capacity(block.len());
    let mut content_length = None;
    for (name, value) in block.iter() {
        if name.eq_ignore_ascii_case(b"content-length") {
            content_length = std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
        }
        headers.push((
            Bytes::from(name.to_ascii_lowercase()),
            Bytes::copy_from_slice(&value),
        ));
    }
    let size = names
        .body_size
        .as_deref()
        .and_then(|n| msg.int(n).ok())
        .and_then(|n| u64::try_from(n).ok());
    let got = body.len() as u64;
    let cut_by_haproxy = match size {
        Some(size) => size > got,
        // A HEAD or 304 answer has a Content-Length and no body: only a
        // body that started and stopped short counts.
        None => got > 0 && content_length.is_some_and(|cl| cl > got),
    };
    let kept = body.get(..limit.min(body.len())).unwrap_or_default();
    Ok((
        id,
        Answer {
            status,
            headers,
            body: Bytes::copy_from_slice(kept),
            truncated: cut_by_haproxy || body.len() > limit,
            latency: Duration::ZERO,
        },
    ))
}

/// Reads a target's answer for comparison: status, headers (lowercase
/// names, in `http::HeaderMap` order: a name's values together, in their
/// order), and the body up to `limit` bytes (the rest is read and
/// discarded, and the answer marked truncated). `latency` is measured from
/// `arrival` when the body ends.
///
/// # Errors
///
/// Reading the body failed.
pub async fn read_answer<B>(
    resp: http::Response<B>,
    limit: usize,
    arrival: Instant,
) -> Result<Answer, B::Error>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    use http_body_util::BodyExt;
    let status = resp.status().as_u16();
    let (parts, mut body) = resp.into_parts();
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                Bytes::copy_from_slice(n.as_str().as_bytes()),
                Bytes::copy_from_slice(v.as_bytes()),
            )
        })
        .collect();
    let mut kept = Kept::new(headers, limit, 0);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            kept.add_body(&data);
        }
    }
    Ok(kept.into_answer(status, arrival.elapsed()))
}

/// A target's answer being kept for the comparison, by either path (hyper's,
/// [`read_answer`], and the pipelined reader): its header fields in order
/// (names in lower case, as hyper gives them) and its body's first bytes,
/// up to a limit (de-chunked; trailers are not kept).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Kept {
    pub(crate) headers: Vec<(Bytes, Bytes)>,
    pub(crate) body: Vec<u8>,
    /// The body was longer than the limit.
    pub(crate) truncated: bool,
    limit: usize,
}

impl Kept {
    /// An answer with these fields, keeping up to `limit` body bytes, with
    /// room for `capacity` of them reserved.
    pub(crate) fn new(headers: Vec<(Bytes, Bytes)>, limit: usize, capacity: usize) -> Self {
        Self {
            headers,
            body: Vec::with_capacity(capacity.min(limit)),
            truncated: false,
            limit,
        }
    }

    /// Keeps what fits of the body's next bytes.
    pub(crate) fn add_body(&mut self, data: &[u8]) {
        let room = self.limit.saturating_sub(self.body.len());
        if data.len() > room {
            self.truncated = true;
        }
        self.body
            .extend_from_slice(data.get(..room.min(data.len())).unwrap_or_default());
    }

    /// The body, without the room it did not use.
    pub(crate) fn into_body(mut self) -> Bytes {
        if self.body.capacity() > self.body.len().saturating_mul(2).max(4096) {
            self.body.shrink_to_fit();
        }
        Bytes::from(self.body)
    }

    /// The answer for the comparison (`latency`: from the request's arrival
    /// at the agent).
    pub(crate) fn into_answer(mut self, status: u16, latency: Duration) -> Answer {
        let headers = std::mem::take(&mut self.headers);
        let truncated = self.truncated;
        Answer {
            status,
            headers,
            body: self.into_body(),
            truncated,
            latency,
        }
    }
}

fn seed() -> u64 {
    let t = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // Not the mirror's seed: a draw independent of its sampling.
    (t ^ u64::from(std::process::id())).rotate_left(17) ^ 0xA076_1D64_78BD_642F
}

fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use haproxy_spop::{Headers, Notify};

    fn answer(
        args: &[(&str, haproxy_spop::TypedData)],
        limit: usize,
    ) -> Result<(Bytes, Answer), BadMessage> {
        let mut b = Notify::builder().message("compare");
        for (n, v) in args {
            b = b.arg(*n, v.clone());
        }
        let n = b.build().unwrap();
        production_answer(
            &n.message("compare").unwrap(),
            &CompareNames::default(),
            limit,
        )
    }

    fn hdrs(h: &[(&str, &str)]) -> haproxy_spop::TypedData {
        Headers::encode(h.iter().copied()).into()
    }

    #[test]
    fn production_answers_from_compare_messages() {
        let (id, a) = answer(
            &[
                ("id", "r1".into()),
                ("status", 404i32.into()),
                (
                    "hdrs",
                    hdrs(&[("Content-Type", "text/plain"), ("x-A", "1")]),
                ),
                ("body", Bytes::from_static(b"hello").into()),
            ],
            1024,
        )
        .unwrap();
        assert_eq!(id, "r1");
        assert_eq!(a.status, 404);
        assert_eq!(
            a.headers,
            [
                (Bytes::from("content-type"), Bytes::from("text/plain")),
                (Bytes::from("x-a"), Bytes::from("1"))
            ]
        );
        assert_eq!(a.body, "hello");
        assert!(!a.truncated);
        // Our limit.
        let (_, a) = answer(
            &[
                ("id", "r".into()),
                ("status", 200i64.into()),
                ("hdrs", hdrs(&[])),
                ("body", Bytes::from_static(b"0123456789").into()),
            ],
            4,
        )
        .unwrap();
        assert_eq!((a.body.as_ref(), a.truncated), (&b"0123"[..], true));
        // HAProxy's buffer: body_size, else Content-Length (a HEAD's empty
        // body is not cut).
        for (args, truncated) in [
            (vec![("body_size", 11i64.into())], true),
            (vec![("body_size", 10i64.into())], false),
            (vec![("hdrs", hdrs(&[("content-length", "20")]))], true),
            (vec![("hdrs", hdrs(&[("content-length", "10")]))], false),
        ] {
            let mut all = vec![
                ("id", "r".into()),
                ("status", 200i64.into()),
                ("body", Bytes::from_static(b"0123456789").into()),
            ];
            if !args.iter().any(|(n, _)| *n == "hdrs") {
                all.push(("hdrs", hdrs(&[])));
            }
            all.extend(args.clone());
            let (_, a) = answer(&all, 1024).unwrap();
            assert_eq!(a.truncated, truncated, "{args:?}");
        }
        let (_, a) = answer(
            &[
                ("id", "r".into()),
                ("status", 200i64.into()),
                ("hdrs", hdrs(&[("content-length", "20")])),
            ],
            1024,
        )
        .unwrap();
        assert!(!a.truncated && a.body.is_empty());
        // Bad ones.
        for (args, kind) in [
            (
                vec![("status", 200i64.into()), ("hdrs", hdrs(&[]))],
                BadMessage::MissingArg,
            ),
            (
                vec![("id", "r".into()), ("hdrs", hdrs(&[]))],
                BadMessage::MissingArg,
            ),
            (
                vec![("id", "r".into()), ("status", 200i64.into())],
                BadMessage::MissingArg,
            ),
            (
                vec![
                    ("id", "r".into()),
                    ("status", "200".into()),
                    ("hdrs", hdrs(&[])),
                ],
                BadMessage::WrongType,
            ),
            (
                vec![
                    ("id", "r".into()),
                    ("status", 70000i64.into()),
                    ("hdrs", hdrs(&[])),
                ],
                BadMessage::WrongType,
            ),
            (
                vec![
                    ("id", "r".into()),
                    ("status", 200i64.into()),
                    ("hdrs", Bytes::from_static(b"\x04host").into()),
                ],
                BadMessage::BadHeaders,
            ),
            (
                vec![
                    ("id", "r".into()),
                    ("status", 200i64.into()),
                    ("hdrs", hdrs(&[])),
                    ("body", 5i64.into()),
                ],
                BadMessage::WrongType,
            ),
        ] {
            assert_eq!(answer(&args, 10).unwrap_err(), kind, "{args:?}");
        }
    }

    /// Work queued while the thread sleeps is taken in one turn, not one
    /// wake-up per piece (see [`DRAIN_EVERY`]).
    #[test]
    fn queued_work_is_taken_in_one_turn() {
        let (tx, rx) = sync_channel(QUEUE);
        for i in 0..100 {
            tx.send(Command::Open {
                id: Bytes::from(format!("r{i}")),
                request: String::new(),
                pairs: Vec::new(),
                arrival: Instant::now(),
            })
            .unwrap();
        }
        drop(tx);
        let metrics = Metrics::new(Vec::<String>::new());
        let worker = Worker {
            store: Store::new(Limits {
                max_entries: 1000,
                max_bytes: 1 << 20,
                deadline: Duration::from_secs(5),
            }),
            metrics: Arc::clone(&metrics),
            log: None,
            log_warned: false,
            compare: std::sync::Weak::new(),
        };
        let turns = worker.run(&rx, &AtomicBool::new(false));
        assert_eq!(turns, 1);
    }

    #[tokio::test]
    async fn target_answers_are_cut_at_the_limit() {
        let resp = http::Response::builder()
            .status(201)
            .header("X-B", "1")
            .header("content-type", "a")
            .body(http_body_util::Full::new(Bytes::from_static(b"abcdefgh")))
            .unwrap();
        let a = read_answer(resp, 3, Instant::now()).await.unwrap();
        assert_eq!(a.status, 201);
        assert_eq!(a.headers[0].0, "x-b");
        assert_eq!(a.headers.len(), 2);
        assert_eq!((a.body.as_ref(), a.truncated), (&b"abc"[..], true));
        let resp = http::Response::new(http_body_util::Full::new(Bytes::from_static(b"abc")));
        let a = read_answer(resp, 3, Instant::now()).await.unwrap();
        assert_eq!((a.body.as_ref(), a.truncated), (&b"abc"[..], false));
    }

    /// Roles change on reload: the store keys targets by name, and the
    /// same target (same connections) starts being compared.
    #[tokio::test]
    async fn a_reload_can_give_a_target_a_role() {
        // A target that accepts and never answers.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let dir = std::env::temp_dir().join(format!("spop-mirror-roles-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.toml");
        let load = |role: &str| {
            std::fs::write(
                &path,
                format!("compare = 100\n[[target]]\nurl = \"{url}\"\nname = \"t\"\n{role}\n"),
            )
            .unwrap();
            Config::load(["spop-mirror", "--config", path.to_str().unwrap()]).unwrap()
        };
        let cfg = load("");
        let metrics = Metrics::new(["t".to_owned()]);
        let set = crate::policy::TargetSet::build(&cfg, 1).unwrap();
        let (mirror, workers) = Mirror::start(set, Arc::clone(&metrics));
        let (compare, tasks) = Compare::start(&cfg, Arc::clone(&metrics)).unwrap();
        let req = || {
            let n = Notify::builder()
                .message("mirror")
                .arg("arg_method", "GET")
                .arg("arg_path", "/")
                .arg("arg_hdrs", Headers::encode([("host", "h")]))
                .build()
                .unwrap();
            crate::request::build(&n.message("mirror").unwrap(), &Default::default()).unwrap()
        };
        let id = Bytes::from_static(b"id-1");
        let (s, opened) = compare.submit(&mirror, req(), None, id.clone(), Instant::now());
        assert_eq!((s, opened), (Submitted::Queued(1), false), "a plain mirror");
        mirror.reload(crate::policy::TargetSet::build(&load("role = \"candidate\""), 2).unwrap());
        let (s, opened) = compare.submit(&mirror, req(), None, id, Instant::now());
        assert_eq!((s, opened), (Submitted::Queued(1), true), "a candidate now");
        assert_eq!(metrics.compare().opened_total(), 1);
        // The thread opens it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while metrics.compare().open_now() != 1 {
            assert!(Instant::now() < deadline, "not opened");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        mirror.close();
        tasks.stop().await;
        drop(l);
        assert!(workers.drain(Duration::from_secs(5)).await);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A target answering before the handler has queued the request's
    /// `Open` still meets production: its answer waits in the tag and goes
    /// after the `Open`. A target the entry does not await is left out.
    #[tokio::test]
    async fn an_answer_before_the_open_is_kept_in_order() {
        let cfg = Config::load(["spop-mirror", "--target", "http://127.0.0.1:9"]).unwrap();
        let metrics = Metrics::new(Vec::<String>::new());
        let (compare, tasks) = Compare::start(&cfg, Arc::clone(&metrics)).unwrap();
        let tag = CompareTag {
            id: Bytes::from_static(b"early"),
            arrival: Instant::now(),
            state: Mutex::new(TagState::default()),
            compare: Arc::clone(&compare),
        };
        let answer = |status| Answer {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            truncated: false,
            latency: Duration::from_millis(1),
        };
        let settings = Arc::new(Settings::default());
        let cand: Arc<str> = Arc::from("cand");
        tag.deliver(&cand, answer(503), Arc::clone(&settings));
        tag.deliver(&Arc::from("other"), answer(200), Arc::clone(&settings));
        assert!(!tag.expects("cand"), "not known yet");
        assert!(compare.open(&tag, vec![(Arc::clone(&cand), None)], "GET /".into()));
        assert!(tag.expects("cand") && !tag.expects("other"));
        compare.send(Command::Answer {
            id: tag.id.clone(),
            side: Side::Production,
            answer: answer(200),
            settings,
            at: Instant::now(),
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while metrics.compare().compared("cand", "different") != 1 {
            assert!(Instant::now() < deadline, "not compared");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(metrics.compare().differences("cand", "status"), 1);
        assert_eq!(compare.queued_bytes.load(Relaxed), 0, "given back");
        tasks.stop().await;
    }

    #[test]
    fn request_lines_are_cut() {
        let long = format!("/{}", "a".repeat(400));
        let n = Notify::builder()
            .message("mirror")
            .arg("arg_method", "GET")
            .arg("arg_path", long)
            .arg("arg_hdrs", Headers::encode([("host", "h")]))
            .build()
            .unwrap();
        let r = crate::request::build(&n.message("mirror").unwrap(), &Default::default()).unwrap();
        let line = request_line(&r);
        assert_eq!(line.len(), REQUEST_LINE_CUT);
        assert!(line.starts_with("GET /aaa"));
    }
}
