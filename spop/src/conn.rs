//! A sans-IO agent connection: bytes and time in, frames, events and bytes
//! out. No sockets, no tasks, no timers, no async runtime.
//!
//! [`Connection`] is the whole agent side of one HAProxy connection: the
//! handshake (and health checks), the frame size limit, fragment reassembly,
//! the in-flight bound, timeouts, HAPROXY-DISCONNECT, graceful shutdown, and
//! every protocol error as an AGENT-DISCONNECT with its status code. An I/O
//! loop around it only moves bytes:
//!
//! 1. tell it the time with [`Connection::handle_timeout`] whenever it wakes
//!    (cheap: it only compares instants), and wake at
//!    [`Connection::poll_timeout`];
//! 2. while [`Connection::wants_read`], read into [`Connection::read_buf`];
//! 3. take [`Connection::poll_event`] until `None`: each
//!    [`Event::Notify`] is handed to the application, which answers with
//!    [`Connection::send_ack`] (at once or later);
//! 4. write [`Connection::transmit`] and report what was written with
//!    [`Connection::advance`];
//! 5. once [`Connection::is_closed`], close the socket.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use haproxy_spop::conn::{Connection, Event, Settings};
//! use haproxy_spop::{Ack, Capabilities, Frame, HaproxyHello, Notify, VarScope};
//!
//! let t0 = Instant::now();
//! let mut conn = Connection::new(Settings::default(), t0);
//! // What HAProxy sends: HELLO, then a NOTIFY, in one read.
//! let mut wire = Vec::new();
//! let hello = HaproxyHello {
//!     supported_versions: "2.0".into(),
//!     max_frame_size: 16380,
//!     capabilities: Capabilities::PIPELINING,
//!     healthcheck: false,
//!     engine_id: None,
//! };
//! Frame::haproxy_hello(hello).encode_framed(&mut wire, 16380).unwrap();
//! let notify = Notify::builder().message("m").arg("n", 7).build().unwrap();
//! Frame::notify(1, 1, notify).encode_framed(&mut wire, 16380).unwrap();
//! assert_eq!(conn.recv(&wire), wire.len());
//!
//! assert!(matches!(conn.poll_event(), Some(Event::Handshake { healthcheck: false, .. })));
//! let Some(Event::Notify(req)) = conn.poll_event() else { panic!() };
//! conn.send_ack(req.stream_id, req.frame_id, Ack::new().set_var(VarScope::TRANSACTION, "n", 7));
//! // AGENT-HELLO and the ACK are ready to be written in one go.
//! let out = conn.transmit().to_vec();
//! conn.advance(out.len());
//! assert!(conn.transmit().is_empty());
//!
//! // Nothing happens for the idle timeout: AGENT-DISCONNECT status 2.
//! conn.handle_timeout(t0 + Duration::from_secs(301));
//! assert!(matches!(conn.poll_event(), Some(Event::Closed(_))));
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{
    negotiate, Ack, AgentHello, Capabilities, DecodeError, Disconnect, Frame, FrameBody, FrameType,
    HaproxyHello, Message, Messages, Notify, Reassembled, Reassembler, Status,
};

pub use crate::stats::{Stats, StatsSnapshot};

/// HAProxy's default max-frame-size (`tune.bufsize` 16384 - 4), and the
/// agent's default limit.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16380;

/// The hard ceiling on an agent's max-frame-size setting: 16 MiB. Larger
/// settings are lowered to it. HAProxy proposes `tune.bufsize - 4`, so this
/// covers `tune.bufsize` up to 16 MiB (`tune.bufsize 1048576` → set
/// `max_frame_size` 1048572).
pub const MAX_FRAME_SIZE_CEILING: u32 = 16 << 20;

/// A read buffer grows by at most this much beyond what it holds, whatever
/// LENGTH a frame announces: memory follows the bytes that actually arrive.
pub const READ_STEP: usize = 64 << 10;

/// The smallest room offered to a read (so that many small frames arrive in
/// one read).
const MIN_READ: usize = 8 << 10;

/// Above this many bytes waiting to be written, a connection stops reading.
pub const WRITE_HIGH_WATER: usize = 128 << 10;

/// The default process-wide memory budget: 256 MiB.
pub const DEFAULT_MAX_MEMORY: usize = 256 << 20;

/// One complete NOTIFY frame handed to the application: owned and
/// `'static`, its strings and binaries views into the received buffer.
#[derive(Clone)]
pub struct NotifyRequest {
    /// The stream-id of the NOTIFY (the ACK echoes it).
    pub stream_id: u64,
    /// The frame-id of the NOTIFY (the ACK echoes it).
    pub frame_id: u64,
    /// The `engine-id` HAProxy sent in its HELLO (one per HAProxy process).
    pub engine_id: Option<Bytes>,
    /// The messages.
    pub notify: Notify,
}

impl NotifyRequest {
    /// The messages of the frame.
    pub fn messages(&self) -> Messages<'_> {
        self.notify.messages()
    }

    /// The first message with this name.
    pub fn message(&self, name: &str) -> Option<Message<'_>> {
        self.notify.message(name)
    }
}

impl fmt::Debug for NotifyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifyRequest")
            .field("stream_id", &self.stream_id)
            .field("frame_id", &self.frame_id)
            .field("notify", &self.notify)
            .finish()
    }
}

/// The settings of one connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Settings {
    /// The agent's own frame size limit; the agent answers the smaller of it
    /// and HAProxy's (default [`DEFAULT_MAX_FRAME_SIZE`], at most
    /// [`MAX_FRAME_SIZE_CEILING`]).
    pub max_frame_size: u32,
    /// Capabilities offered (intersected with HAProxy's; `fragmentation` is
    /// kept, it says what the agent can receive).
    pub capabilities: Capabilities,
    /// NOTIFY frames handed out and not yet answered, at most.
    pub max_in_flight: usize,
    /// Bytes a fragmented NOTIFY may reassemble to.
    pub max_reassembly_bytes: usize,
    /// Time HAProxy has to say HELLO.
    pub hello_timeout: Duration,
    /// A connection with nothing in flight and no frame for this long is
    /// closed (status 2).
    pub idle_timeout: Duration,
    /// Time an answer may take before the connection answers an empty ACK
    /// itself.
    pub handler_timeout: Duration,
    /// Bytes pending with no write progress for this long: the peer stopped
    /// reading, the connection is closed.
    pub write_timeout: Duration,
    /// Time in-flight frames get after [`Connection::shutdown`].
    pub shutdown_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            capabilities: Capabilities::PIPELINING | Capabilities::FRAGMENTATION,
            max_in_flight: 256,
            max_reassembly_bytes: 4 << 20,
            hello_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            handler_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

/// A memory budget shared by connections (one per process or per agent).
///
/// Each connection charges what it holds: its read buffer's capacity, the
/// payload it is reassembling and the payload of the NOTIFY frames it handed
/// out and that are not yet answered. A connection whose growth would take
/// the total over the limit is disconnected with status 13 instead.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    inner: Arc<BudgetInner>,
}

#[derive(Debug)]
struct BudgetInner {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Arc::new(BudgetInner {
                limit,
                used: AtomicUsize::new(0),
            }),
        }
    }

    /// No limit (the counting still happens).
    pub fn unlimited() -> Self {
        Self::new(usize::MAX)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Bytes charged now, by all connections.
    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// Charges `n` more bytes, unless that would pass the limit.
    fn try_grow(&self, n: usize) -> bool {
        let limit = self.inner.limit;
        self.inner
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(n).filter(|&total| total <= limit)
            })
            .is_ok()
    }

    /// Charges `n` more bytes, limit or not (memory already taken).
    fn force_grow(&self, n: usize) {
        self.inner.used.fetch_add(n, Ordering::Relaxed);
    }

    fn shrink(&self, n: usize) {
        let _ = self
            .inner
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(n))
            });
    }
}

impl Default for MemoryBudget {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MEMORY)
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// A health check was answered; HAProxy closes next (a normal end).
    HealthCheck,
    /// HAProxy said HAPROXY-DISCONNECT (its status); it was answered with
    /// AGENT-DISCONNECT status 0.
    PeerDisconnected(Disconnect),
    /// The agent said AGENT-DISCONNECT with this status and message: a
    /// protocol error, a timeout, the memory budget, or a shutdown (status 0).
    Disconnected(Disconnect),
    /// The peer closed the connection without a DISCONNECT.
    PeerClosed,
    /// Bytes could not be written for `write_timeout`: closed without more.
    WriteTimeout,
}

/// What a [`Connection`] has to tell the application.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// The handshake is done: `answer` was queued. A health check ends here.
    Handshake {
        /// The AGENT-HELLO sent.
        answer: AgentHello,
        /// `true` for a health check (the connection closes after the answer).
        healthcheck: bool,
    },
    /// A NOTIFY to answer with [`Connection::send_ack`].
    Notify(NotifyRequest),
    /// The answer to this NOTIFY is late: an empty ACK was sent, the late
    /// ACK will be refused; the application may stop working on it.
    HandlerTimedOut {
        /// The frame's stream-id.
        stream_id: u64,
        /// The frame's frame-id.
        frame_id: u64,
    },
    /// The connection ends (what remains to write is still written, unless
    /// the reason is [`CloseReason::WriteTimeout`] or
    /// [`CloseReason::PeerClosed`]).
    Closed(CloseReason),
}

/// What [`Connection::send_ack`] did with an ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AckStatus {
    /// Queued for writing.
    Queued,
    /// Its actions did not fit the frame size: an empty ACK was queued
    /// instead (counted in [`Stats::acks_too_large`]).
    Emptied,
    /// No NOTIFY with these ids awaits an answer (late after a handler
    /// timeout, a duplicate, or unknown ids); nothing was queued (counted in
    /// [`Stats::acks_refused`]).
    Refused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for HAPROXY-HELLO until the deadline.
    Hello { deadline: Instant },
    /// Exchanging NOTIFY and ACK.
    Open,
    /// Shutting down: no new frames, in-flight ones until the deadline.
    Draining { deadline: Instant },
    /// The last frames are being written, then closed.
    Closing,
    /// Nothing more to do.
    Closed,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    deadline: Instant,
    bytes: usize,
}

/// The agent side of one SPOP connection, sans-IO; see the [module
/// documentation](self).
pub struct Connection {
    settings: Settings,
    stats: Arc<Stats>,
    budget: MemoryBudget,
    /// Bytes charged to the budget.
    charged: usize,
    state: State,
    /// The latest instant given.
    clock: Instant,
    /// The frame size limit in force (16380 until the handshake, then the
    /// negotiated value).
    frame_size: u32,
    engine_id: Option<Bytes>,
    fragmentation: bool,
    reassembler: Reassembler,
    read: BytesMut,
    write: BytesMut,
    /// Ends of the frames queued in `write`, as totals of bytes queued, to
    /// count each frame as sent once its last byte is written.
    queued: VecDeque<(u64, FrameType)>,
    queued_total: u64,
    written_total: u64,
    /// Since when bytes are pending without progress.
    write_since: Option<Instant>,
    events: VecDeque<Event>,
    pending: HashMap<(u64, u64), Pending, IdHasher>,
    /// What [`Stats::in_flight`] was told of this connection.
    reported_in_flight: u64,
    /// Handler deadlines in order (handler_timeout is constant); entries whose
    /// frame was answered are skipped.
    deadlines: VecDeque<(Instant, u64, u64)>,
    in_flight_bytes: usize,
    last_activity: Instant,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("state", &self.state)
            .field("frame_size", &self.frame_size)
            .field("in_flight", &self.pending.len())
            .field("read", &self.read.len())
            .field("write", &self.write.len())
            .field("charged", &self.charged)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A new connection accepted at `now`, with its own [`Stats`] and no
    /// memory limit (see [`Connection::with_stats`],
    /// [`Connection::with_budget`]).
    pub fn new(settings: Settings, now: Instant) -> Self {
        let mut settings = settings;
        settings.max_frame_size = settings.max_frame_size.min(MAX_FRAME_SIZE_CEILING);
        settings.max_in_flight = settings.max_in_flight.max(1);
        Self {
            reassembler: Reassembler::new(settings.max_reassembly_bytes),
            state: State::Hello {
                deadline: after(now, settings.hello_timeout),
            },
            settings,
            stats: Arc::new(Stats::default()),
            budget: MemoryBudget::unlimited(),
            charged: 0,
            clock: now,
            frame_size: DEFAULT_MAX_FRAME_SIZE,
            engine_id: None,
            fragmentation: false,
            read: BytesMut::new(),
            write: BytesMut::new(),
            queued: VecDeque::new(),
            queued_total: 0,
            written_total: 0,
            write_since: None,
            events: VecDeque::new(),
            pending: HashMap::default(),
            reported_in_flight: 0,
            deadlines: VecDeque::new(),
            in_flight_bytes: 0,
            last_activity: now,
        }
    }

    /// Counts into `stats` (shared by an agent's connections).
    #[must_use]
    pub fn with_stats(mut self, stats: Arc<Stats>) -> Self {
        self.stats = stats;
        self
    }

    /// Charges memory to `budget` (shared by an agent's connections).
    #[must_use]
    pub fn with_budget(mut self, budget: MemoryBudget) -> Self {
        self.budget.shrink(self.charged);
        self.charged = 0;
        self.budget = budget;
        self
    }

    /// The counters this connection updates.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The frame size limit in force.
    pub fn max_frame_size(&self) -> u32 {
        self.frame_size
    }

    /// NOTIFY frames handed out and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Bytes charged to the memory budget now.
    pub fn memory(&self) -> usize {
        self.charged
    }

    /// The read buffer (for inspection: its capacity follows what arrived).
    pub fn read_buffer(&self) -> &BytesMut {
        &self.read
    }

    // ----- input -----

    /// `true` if the loop should read: not past `max_in_flight`, not
    /// draining or closing, and not above [`WRITE_HIGH_WATER`] bytes waiting
    /// to be written.
    pub fn wants_read(&self) -> bool {
        match self.state {
            State::Hello { .. } => true,
            State::Open => {
                self.pending.len() < self.settings.max_in_flight
                    && self.write.len() < WRITE_HIGH_WATER
            }
            State::Draining { .. } | State::Closing | State::Closed => false,
        }
    }

    /// The buffer to read into, with room for the next read; `None` if the
    /// connection does not read now ([`Connection::wants_read`] is false, or
    /// the frame under way is too big, or the memory budget refused the
    /// room: then the connection is closing).
    ///
    /// The room offered is what the frame under way still needs, at least
    /// 8 KiB and at most [`READ_STEP`] beyond what is buffered: a LENGTH
    /// announcing more reserves nothing until the bytes arrive.
    pub fn read_buf(&mut self) -> Option<&mut BytesMut> {
        if !self.wants_read() {
            return None;
        }
        let need = match self.read.first_chunk::<4>() {
            Some(head) => {
                let len = u32::from_be_bytes(*head);
                if len > self.frame_size {
                    self.frame_too_big(len);
                    return None;
                }
                (len as usize)
                    .saturating_add(4)
                    .saturating_sub(self.read.len())
            }
            None => 4 - self.read.len().min(4),
        };
        let want = need.clamp(MIN_READ, READ_STEP);
        let spare = self.read.capacity() - self.read.len();
        if spare < want {
            // Check the budget before allocating, then charge what the
            // allocator actually gave.
            let target = self.usage() - self.read.capacity() + self.read.len() + want;
            if !self.charge(target) {
                return None;
            }
            let len = self.read.len();
            if len <= READ_STEP {
                // Small: let BytesMut reclaim room in place or grow (at most
                // a few steps).
                self.read.reserve(want);
            } else {
                // Large frame under way: grow exactly, not by doubling.
                let mut grown = BytesMut::with_capacity(len + want);
                grown.extend_from_slice(&self.read);
                self.read = grown;
            }
            self.sync_memory();
        }
        Some(&mut self.read)
    }

    /// Copies `data` into the read buffer as [`Connection::read_buf`] allows;
    /// returns how many bytes were taken (all of them unless the connection
    /// stopped reading). Frames are processed by [`Connection::poll_event`].
    pub fn recv(&mut self, data: &[u8]) -> usize {
        let mut taken = 0;
        while let Some(rest) = data.get(taken..).filter(|r| !r.is_empty()) {
            let Some(buf) = self.read_buf() else { break };
            let room = buf.capacity() - buf.len();
            let n = room.min(rest.len());
            buf.extend_from_slice(rest.get(..n).unwrap_or_default());
            taken += n;
        }
        taken
    }

    /// The peer closed its side (a read returned 0 bytes).
    pub fn handle_eof(&mut self) {
        match self.state {
            State::Closed => {}
            State::Closing => self.close(None),
            _ => self.close(Some(CloseReason::PeerClosed)),
        }
    }

    /// Advances the clock to `now` and acts on every deadline passed: hello,
    /// idle, handler (an empty ACK is sent), write and shutdown timeouts.
    /// Cheap when nothing is due: call it whenever the loop wakes.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now > self.clock {
            self.clock = now;
        }
        let now = self.clock;
        if let Some(since) = self.write_since {
            if !self.write.is_empty() && now >= after(since, self.settings.write_timeout) {
                self.stats.write_timeouts.fetch_add(1, Ordering::Relaxed);
                self.close(Some(CloseReason::WriteTimeout));
                return;
            }
        }
        match self.state {
            State::Hello { deadline } if now >= deadline => {
                self.disconnect(Status::TIMEOUT, "no HELLO in time");
            }
            State::Open | State::Draining { .. } => {
                self.expire_handlers(now);
                match self.state {
                    State::Open
                        if self.pending.is_empty()
                            && now >= after(self.last_activity, self.settings.idle_timeout) =>
                    {
                        self.disconnect(Status::TIMEOUT, "idle timeout");
                    }
                    State::Draining { deadline } if now >= deadline => {
                        self.disconnect(Status::NORMAL, "agent shutting down");
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        // Release what was freed since the last growth (with some slack, so
        // that a busy connection does not touch the shared budget per wake).
        if self.charged > self.usage().saturating_add(READ_STEP) {
            self.sync_memory();
        }
        self.sync_gauge();
    }

    /// The next instant at which [`Connection::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let write = self
            .write_since
            .filter(|_| !self.write.is_empty() && self.state != State::Closed)
            .map(|t| after(t, self.settings.write_timeout));
        let state = match self.state {
            State::Hello { deadline } => Some(deadline),
            State::Open => {
                if self.pending.is_empty() {
                    Some(after(self.last_activity, self.settings.idle_timeout))
                } else {
                    self.deadlines.front().map(|&(t, _, _)| t)
                }
            }
            State::Draining { deadline } => Some(
                self.deadlines
                    .front()
                    .map_or(deadline, |&(t, _, _)| t.min(deadline)),
            ),
            State::Closing | State::Closed => None,
        };
        match (write, state) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Starts a graceful shutdown at `now`: no new frames are read, frames in
    /// flight get `shutdown_timeout` to be answered, then AGENT-DISCONNECT
    /// status 0.
    pub fn shutdown(&mut self, now: Instant) {
        self.handle_timeout(now);
        match self.state {
            State::Hello { .. } => self.disconnect(Status::NORMAL, "agent shutting down"),
            State::Open => {
                self.state = State::Draining {
                    deadline: after(self.clock, self.settings.shutdown_timeout),
                };
                self.finish_draining();
            }
            _ => {}
        }
    }

    // ----- output -----

    /// The next event: the handshake, a NOTIFY to answer (frames are decoded
    /// from the read buffer here, as long as fewer than `max_in_flight` are
    /// unanswered), a handler timeout, the end of the connection.
    pub fn poll_event(&mut self) -> Option<Event> {
        loop {
            if let Some(ev) = self.events.pop_front() {
                return Some(ev);
            }
            match self.state {
                State::Hello { .. } => {}
                State::Open if self.pending.len() < self.settings.max_in_flight => {}
                _ => {
                    self.sync_gauge();
                    return None;
                }
            }
            let frame = match self.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    self.sync_gauge();
                    return None;
                }
                Err(err) => {
                    self.protocol_error(&err);
                    continue;
                }
            };
            self.stats.frame_received(frame.frame_type());
            self.last_activity = self.clock;
            if let State::Hello { .. } = self.state {
                self.on_hello(frame);
                continue;
            }
            if let Some(req) = self.on_frame(frame) {
                return Some(Event::Notify(req));
            }
        }
    }

    /// Queues the ACK for a NOTIFY handed out by [`Connection::poll_event`].
    ///
    /// An ACK for ids that await none (late after a handler timeout, a
    /// duplicate) is refused; one too large for the frame size becomes an
    /// empty ACK. Both are counted.
    pub fn send_ack(&mut self, stream_id: u64, frame_id: u64, ack: Ack) -> AckStatus {
        let Some(p) = self.pending.remove(&(stream_id, frame_id)) else {
            self.stats.acks_refused.fetch_add(1, Ordering::Relaxed);
            return AckStatus::Refused;
        };
        self.answered(p);
        let frame = Frame::ack(stream_id, frame_id, ack);
        let status = if self.queue(&frame) {
            AckStatus::Queued
        } else {
            self.stats.acks_too_large.fetch_add(1, Ordering::Relaxed);
            self.queue(&Frame::ack(stream_id, frame_id, Ack::new()));
            AckStatus::Emptied
        };
        self.last_activity = self.clock;
        if let State::Draining { .. } = self.state {
            self.finish_draining();
        }
        status
    }

    /// The bytes to write now (empty if none).
    pub fn transmit(&self) -> &[u8] {
        if self.state == State::Closed {
            return &[];
        }
        &self.write
    }

    /// `n` bytes of [`Connection::transmit`] were written.
    pub fn advance(&mut self, n: usize) {
        let n = n.min(self.write.len());
        if n == 0 {
            return;
        }
        self.write.advance(n);
        self.written_total += n as u64;
        while let Some(&(end, t)) = self.queued.front() {
            if end > self.written_total {
                break;
            }
            self.stats.frame_sent(t);
            self.queued.pop_front();
        }
        self.write_since = (!self.write.is_empty()).then_some(self.clock);
        self.sync_gauge();
        if self.write.is_empty() && self.state == State::Closing {
            self.close(None);
        }
    }

    /// `true` once everything was written (or abandoned): close the socket.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    // ----- internals -----

    fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        match take_frame(&mut self.read, self.frame_size)? {
            Some(payload) => Frame::decode(payload).map(Some),
            None => Ok(None),
        }
    }

    fn on_hello(&mut self, frame: Frame) {
        let hello = match frame.body {
            FrameBody::HaproxyHello(hello) => hello,
            other => {
                let t = Frame {
                    metadata: frame.metadata,
                    body: other,
                }
                .frame_type();
                self.disconnect(
                    Status::INVALID_FRAME,
                    &format!("expected HAPROXY-HELLO, got {t}"),
                );
                return;
            }
        };
        let answer = match negotiate(
            &hello,
            self.settings.max_frame_size,
            self.settings.capabilities,
        ) {
            Ok(answer) => answer,
            Err(status) => {
                self.disconnect(status, status.description());
                return;
            }
        };
        self.handshake(&hello, answer);
    }

    fn handshake(&mut self, hello: &HaproxyHello, answer: AgentHello) {
        self.queue(&Frame::agent_hello(answer.clone()));
        self.events.push_back(Event::Handshake {
            answer: answer.clone(),
            healthcheck: hello.healthcheck,
        });
        if hello.healthcheck {
            self.stats.healthchecks.fetch_add(1, Ordering::Relaxed);
            self.release_input();
            self.state = State::Closing;
            self.events
                .push_back(Event::Closed(CloseReason::HealthCheck));
            return;
        }
        self.frame_size = answer.max_frame_size;
        self.fragmentation = answer.capabilities.contains(Capabilities::FRAGMENTATION);
        self.engine_id.clone_from(&hello.engine_id);
        self.state = State::Open;
    }

    /// One frame after the handshake; a complete NOTIFY comes back.
    fn on_frame(&mut self, frame: Frame) -> Option<NotifyRequest> {
        let frame = match frame.body {
            FrameBody::NotifyFragment(_) | FrameBody::Unset(_) => {
                if !self.fragmentation {
                    self.disconnect(
                        Status::FRAGMENTATION_NOT_SUPPORTED,
                        "fragmentation was not negotiated",
                    );
                    return None;
                }
                match self.reassembler.push(frame) {
                    Ok(Reassembled::Frame(frame)) => frame,
                    Ok(Reassembled::Pending) => {
                        // On refusal the connection is disconnecting.
                        let _ = self.charge(self.usage());
                        return None;
                    }
                    Ok(Reassembled::Aborted { .. }) => {
                        self.stats.aborted_frames.fetch_add(1, Ordering::Relaxed);
                        return None;
                    }
                    Err(err) => {
                        self.protocol_error(&err);
                        return None;
                    }
                }
            }
            _ => frame,
        };
        let metadata = frame.metadata;
        match frame.body {
            FrameBody::Notify(notify) => {
                let ids = (metadata.stream_id, metadata.frame_id);
                if self.pending.contains_key(&ids) {
                    self.disconnect(
                        Status::INVALID_FRAME,
                        "NOTIFY with the ids of a frame in flight",
                    );
                    return None;
                }
                let deadline = after(self.clock, self.settings.handler_timeout);
                let bytes = notify.payload().len();
                self.pending.insert(ids, Pending { deadline, bytes });
                self.deadlines.push_back((deadline, ids.0, ids.1));
                self.in_flight_bytes += bytes;
                Some(NotifyRequest {
                    stream_id: ids.0,
                    frame_id: ids.1,
                    engine_id: self.engine_id.clone(),
                    notify,
                })
            }
            FrameBody::HaproxyDisconnect(d) => {
                self.stats.disconnect_received(d.status);
                self.disconnect_with(
                    Status::NORMAL,
                    "bye",
                    Some(CloseReason::PeerDisconnected(d)),
                );
                None
            }
            other => {
                let t = Frame {
                    metadata,
                    body: other,
                }
                .frame_type();
                self.disconnect(Status::INVALID_FRAME, &format!("unexpected {t} frame"));
                None
            }
        }
    }

    fn frame_too_big(&mut self, len: u32) {
        let err = DecodeError::FrameTooLarge {
            len: u64::from(len),
            max: self.frame_size,
        };
        self.protocol_error(&err);
    }

    fn protocol_error(&mut self, err: &DecodeError) {
        self.disconnect(err.status(), &err.to_string());
    }

    /// Bookkeeping for an answered (or expired) frame.
    fn answered(&mut self, p: Pending) {
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(p.bytes);
        // Forget deadlines of frames already answered.
        while let Some(&(t, s, f)) = self.deadlines.front() {
            if self.pending.get(&(s, f)).is_some_and(|p| p.deadline == t) {
                break;
            }
            self.deadlines.pop_front();
        }
    }

    fn expire_handlers(&mut self, now: Instant) {
        while let Some(&(t, s, f)) = self.deadlines.front() {
            if t > now {
                break;
            }
            self.deadlines.pop_front();
            let live = self.pending.get(&(s, f)).is_some_and(|p| p.deadline == t);
            if !live {
                continue;
            }
            if let Some(p) = self.pending.remove(&(s, f)) {
                self.answered(p);
            }
            self.stats.handler_timeouts.fetch_add(1, Ordering::Relaxed);
            self.queue(&Frame::ack(s, f, Ack::new()));
            self.last_activity = now;
            self.events.push_back(Event::HandlerTimedOut {
                stream_id: s,
                frame_id: f,
            });
        }
        if let State::Draining { .. } = self.state {
            self.finish_draining();
        }
    }

    fn finish_draining(&mut self) {
        if self.pending.is_empty() {
            self.disconnect(Status::NORMAL, "agent shutting down");
        }
    }

    /// Encodes `frame` into the write buffer; `false` (nothing written) if
    /// it does not fit the frame size.
    fn queue(&mut self, frame: &Frame) -> bool {
        let len = frame.encoded_len();
        if len > self.frame_size as usize {
            return false;
        }
        if self.write.is_empty() {
            self.write_since = Some(self.clock);
        }
        self.write.reserve(4 + len);
        // len <= frame_size, a u32.
        self.write.put_u32(len as u32);
        frame.encode(&mut self.write);
        self.queued_total += 4 + len as u64;
        self.queued
            .push_back((self.queued_total, frame.frame_type()));
        true
    }

    fn disconnect(&mut self, status: Status, message: &str) {
        let reason = Disconnect::new(status, Bytes::copy_from_slice(message.as_bytes()));
        self.disconnect_with(status, message, Some(CloseReason::Disconnected(reason)));
    }

    /// Queues AGENT-DISCONNECT, drops all input and work, and closes once it
    /// is written.
    fn disconnect_with(&mut self, status: Status, message: &str, reason: Option<CloseReason>) {
        if matches!(self.state, State::Closing | State::Closed) {
            return;
        }
        self.stats.disconnect_sent(status);
        // The message must fit the frame size in force (never below 256).
        let mut end = message.len().min(200);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let message = Bytes::copy_from_slice(message.get(..end).unwrap_or_default().as_bytes());
        self.queue(&Frame::agent_disconnect(status, message));
        self.release_input();
        self.state = State::Closing;
        if let Some(reason) = reason {
            self.events.push_back(Event::Closed(reason));
        }
    }

    /// Closes now: what is not written is dropped.
    fn close(&mut self, reason: Option<CloseReason>) {
        if self.state == State::Closed {
            return;
        }
        self.release_input();
        self.write = BytesMut::new();
        self.queued.clear();
        self.write_since = None;
        self.state = State::Closed;
        if let Some(reason) = reason {
            self.events.push_back(Event::Closed(reason));
        }
    }

    /// Drops the read buffer, reassembly and frames in flight.
    fn release_input(&mut self) {
        self.pending.clear();
        self.deadlines.clear();
        self.in_flight_bytes = 0;
        self.reassembler.clear();
        self.read = BytesMut::new();
        self.sync_memory();
        self.sync_gauge();
    }

    /// Brings [`Stats::in_flight`] up to date (once per batch, not per frame:
    /// the counters are shared by all connections).
    fn sync_gauge(&mut self) {
        let now = self.pending.len() as u64;
        if now > self.reported_in_flight {
            let d = now - self.reported_in_flight;
            self.stats.in_flight.fetch_add(d, Ordering::Relaxed);
        } else if now < self.reported_in_flight {
            let d = self.reported_in_flight - now;
            self.stats.in_flight.fetch_sub(d, Ordering::Relaxed);
        }
        self.reported_in_flight = now;
    }

    /// What this connection holds, as charged to the budget.
    fn usage(&self) -> usize {
        self.read.capacity() + self.reassembler.held() + self.in_flight_bytes
    }

    /// Charges the budget up to `target` bytes; on refusal the connection is
    /// disconnected with status 13 and `false` returned.
    fn charge(&mut self, target: usize) -> bool {
        if target <= self.charged {
            return true;
        }
        if self.budget.try_grow(target - self.charged) {
            self.charged = target;
            return true;
        }
        self.stats.memory_refusals.fetch_add(1, Ordering::Relaxed);
        self.disconnect(Status::RESOURCE_ALLOCATION, "memory budget exceeded");
        false
    }

    /// Makes the charge equal what is held (memory already allocated).
    fn sync_memory(&mut self) {
        let usage = self.usage();
        if usage > self.charged {
            self.budget.force_grow(usage - self.charged);
        } else {
            self.budget.shrink(self.charged - usage);
        }
        self.charged = usage;
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.budget.shrink(self.charged);
        self.stats
            .in_flight
            .fetch_sub(self.reported_in_flight, Ordering::Relaxed);
    }
}

/// `t + d`, or a far instant if that overflows (a `Duration::MAX` setting
/// means "never", not a panic).
pub(crate) fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(t)
}

/// A cheap hasher for the (stream-id, frame-id) keys of frames in flight.
/// The peer chooses the ids, but the map holds at most `max_in_flight`
/// entries, so collisions cost little.
#[derive(Clone, Copy, Default)]
struct IdHasher;

impl std::hash::BuildHasher for IdHasher {
    type Hasher = IdHash;
    fn build_hasher(&self) -> IdHash {
        IdHash(0)
    }
}

struct IdHash(u64);

impl std::hash::Hasher for IdHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// Splits one whole frame's payload off `src` if it holds one.
///
/// # Errors
///
/// [`DecodeError::FrameTooLarge`] as soon as a LENGTH above `max` is seen.
pub(crate) fn take_frame(src: &mut BytesMut, max: u32) -> Result<Option<Bytes>, DecodeError> {
    let Some(head) = src.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*head);
    if len > max {
        return Err(DecodeError::FrameTooLarge {
            len: u64::from(len),
            max,
        });
    }
    let total = (len as usize).saturating_add(4);
    if src.len() < total {
        return Ok(None);
    }
    src.advance(4);
    Ok(Some(src.split_to(len as usize).freeze()))
}
