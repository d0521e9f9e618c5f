//! One HAProxy connection: a sans-IO [`Connection`] and a loop that moves
//! bytes between it and the socket, and runs handlers.
//!
//! The loop is one poll function: it reads when the core wants input (many
//! frames per read), hands every NOTIFY to the handler (answered inline when
//! the handler's future is ready at once, otherwise queued in a
//! `FuturesUnordered` with no timer of its own), writes what the core has to
//! send in one write per batch, and sleeps until the core's next deadline
//! (one timer, reset only when that deadline changes). Nothing is counted as
//! sent before the core has it in its write buffer, and the core counts a
//! frame as sent once its last byte is written.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::{AbortHandle, Abortable};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

use super::{Handler, Inner, NotifyRequest};
use crate::conn::{CloseReason, Connection, Event};
use crate::Ack;

/// How a handler's work ended.
enum Outcome {
    Ack(Ack),
    Failed,
    Panicked,
    /// Aborted after the core's handler timeout (already answered).
    Aborted,
}

type InFlight = Pin<Box<dyn Future<Output = (u64, u64, Outcome)> + Send>>;

/// Logs the 1st, 2nd, 4th, 8th... occurrence of something: enough to notice,
/// never a flood.
fn worth_logging(count: u64) -> bool {
    count.is_power_of_two()
}

/// Rounds of work one poll may do before yielding to other tasks.
const ROUNDS_PER_POLL: usize = 32;

struct Driver<'a, H, S> {
    inner: &'a Arc<Inner<H>>,
    conn: Connection,
    stream: S,
    in_flight: FuturesUnordered<InFlight>,
    /// Abort handles of the handlers that did not finish at once.
    aborts: HashMap<(u64, u64), AbortHandle>,
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    stopping: bool,
    /// Bytes written since the last flush.
    unflushed: bool,
    /// The write side was shut down.
    shut: bool,
}

pub(super) async fn run<H, S>(inner: Arc<Inner<H>>, stream: S)
where
    H: Handler,
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let now = Instant::now();
    let conn = Connection::new(inner.config.settings(), now)
        .with_stats(Arc::clone(&inner.stats))
        .with_budget(inner.budget.clone());
    let rx = inner.shutdown.subscribe();
    let mut driver = Driver {
        inner: &inner,
        conn,
        stream,
        in_flight: FuturesUnordered::new(),
        aborts: HashMap::new(),
        sleep: Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(
            crate::conn::after(now, inner.config.hello_timeout),
        ))),
        armed: None,
        stop: Box::pin(shutdown_requested(rx)),
        stopping: false,
        unflushed: false,
        shut: false,
    };
    std::future::poll_fn(|cx| driver.poll(cx)).await;
}

/// Completes once the agent is shutting down.
async fn shutdown_requested(mut rx: tokio::sync::watch::Receiver<bool>) {
    // An error means the agent is gone: stop too.
    let _ = rx.wait_for(|stop| *stop).await;
}

impl<H, S> Driver<'_, H, S>
where
    H: Handler,
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    /// Ready once the connection is over.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.conn.handle_timeout(Instant::now());
        if !self.stopping && self.stop.as_mut().poll(cx).is_ready() {
            self.stopping = true;
            self.conn.shutdown(Instant::now());
        }
        for _ in 0..ROUNDS_PER_POLL {
            let mut progress = false;
            // Finished handlers, all of them before one write.
            while let Poll::Ready(Some((stream_id, frame_id, outcome))) =
                if self.in_flight.is_empty() {
                    Poll::Ready(None)
                } else {
                    self.in_flight.poll_next_unpin(cx)
                }
            {
                self.aborts.remove(&(stream_id, frame_id));
                self.answer(stream_id, frame_id, outcome);
                progress = true;
            }
            // Every frame already read, before one write.
            while let Some(event) = self.conn.poll_event() {
                self.on_event(event);
                progress = true;
            }
            match self.poll_write(cx) {
                Poll::Ready(Ok(wrote)) => progress |= wrote,
                Poll::Ready(Err(err)) => {
                    tracing::debug!(error = %err, "write failed");
                    return Poll::Ready(());
                }
                Poll::Pending => {}
            }
            if self.conn.is_closed() {
                return self.poll_close(cx);
            }
            let wanted = self.conn.wants_read();
            if let Some(buf) = self.conn.read_buf() {
                match tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, buf) {
                    Poll::Ready(Ok(0)) => {
                        self.conn.handle_eof();
                        progress = true;
                    }
                    Poll::Ready(Ok(_)) => progress = true,
                    Poll::Ready(Err(err)) => {
                        tracing::debug!(error = %err, "read failed");
                        return Poll::Ready(());
                    }
                    Poll::Pending => {}
                }
            } else if wanted {
                // Refused (frame too big, memory budget): closing now.
                progress = true;
            }
            if self.poll_timer(cx) {
                progress = true;
            }
            if !progress {
                return Poll::Pending;
            }
        }
        // Plenty of work: let other connections run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Writes what the core has; `Ready(Ok(true))` if anything was written.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let mut wrote = false;
        while !self.conn.transmit().is_empty() {
            match Pin::new(&mut self.stream).poll_write(cx, self.conn.transmit()) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    self.conn.advance(n);
                    self.unflushed = true;
                    wrote = true;
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => {
                    return if wrote {
                        Poll::Ready(Ok(true))
                    } else {
                        Poll::Pending
                    }
                }
            }
        }
        if self.unflushed {
            match Pin::new(&mut self.stream).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => {}
            }
        }
        Poll::Ready(Ok(wrote))
    }

    /// Shuts the write side down (bounded by the write timeout's timer).
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.shut {
            self.shut = true;
            let deadline = crate::conn::after(Instant::now(), self.inner.config.write_timeout);
            self.sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline));
        }
        match Pin::new(&mut self.stream).poll_shutdown(cx) {
            Poll::Ready(_) => Poll::Ready(()),
            Poll::Pending => self.sleep.as_mut().poll(cx),
        }
    }

    /// Keeps the one timer on the core's next deadline; `true` if it fired.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let next = self.conn.poll_timeout();
        if next != self.armed {
            self.armed = next;
            if let Some(t) = next {
                self.sleep.as_mut().reset(tokio::time::Instant::from_std(t));
            }
        }
        if self.armed.is_some() && self.sleep.as_mut().poll(cx).is_ready() {
            self.conn.handle_timeout(Instant::now());
            // The same deadline may come back (a clock a hair early): re-arm.
            self.armed = None;
            return true;
        }
        false
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Notify(req) => self.dispatch(req),
            Event::HandlerTimedOut {
                stream_id,
                frame_id,
            } => {
                let n = self.inner.stats.handler_timeouts();
                if worth_logging(n) {
                    tracing::warn!(total = n, "handler timed out; sent an empty ACK");
                }
                if let Some(handle) = self.aborts.remove(&(stream_id, frame_id)) {
                    handle.abort();
                }
            }
            Event::Handshake {
                answer,
                healthcheck,
            } => {
                tracing::debug!(
                    frame_size = answer.max_frame_size,
                    caps = %answer.capabilities,
                    healthcheck,
                    "handshake"
                );
            }
            Event::Closed(reason) => self.on_close(&reason),
        }
    }

    fn on_close(&mut self, reason: &CloseReason) {
        match reason {
            CloseReason::Disconnected(d) => {
                let message = String::from_utf8_lossy(&d.message);
                if d.status == crate::Status::NORMAL {
                    tracing::debug!(%message, "disconnecting");
                } else {
                    tracing::info!(status = %d.status, %message, "disconnecting");
                }
            }
            CloseReason::PeerDisconnected(d) => {
                tracing::debug!(status = %d.status, message = %String::from_utf8_lossy(&d.message), "HAProxy disconnects");
            }
            CloseReason::WriteTimeout => tracing::info!("peer stopped reading; closing"),
            other => tracing::debug!(reason = ?other, "closing"),
        }
        // Handlers still running are dropped: their ACKs can never go out.
        for (_, handle) in self.aborts.drain() {
            handle.abort();
        }
        self.in_flight = FuturesUnordered::new();
    }

    /// Runs the handler: a handler that is ready at once (the common case)
    /// is answered right here, with no task, timer or queue; one that is not
    /// goes in flight (the core times it out).
    fn dispatch(&mut self, req: NotifyRequest) {
        let (stream_id, frame_id) = (req.stream_id, req.frame_id);
        // A span per frame (free unless TRACE is enabled for spop).
        let span = tracing::trace_span!("spop_frame", stream_id, frame_id);
        let _entered = span.enter();
        // A handler that panics while building its future is caught too.
        let handler = &self.inner.handler;
        let Ok(fut) = std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(req))) else {
            return self.answer(stream_id, frame_id, Outcome::Panicked);
        };
        let mut fut = Box::pin(AssertUnwindSafe(fut).catch_unwind());
        match (&mut fut).now_or_never() {
            Some(result) => {
                let outcome = outcome(result, stream_id, frame_id);
                self.answer(stream_id, frame_id, outcome);
            }
            None => {
                let (handle, registration) = AbortHandle::new_pair();
                self.aborts.insert((stream_id, frame_id), handle);
                let fut = Abortable::new(fut, registration);
                self.in_flight
                    .push(Box::pin(tracing::Instrument::instrument(
                        async move {
                            let outcome = match fut.await {
                                Ok(result) => outcome(result, stream_id, frame_id),
                                Err(_) => Outcome::Aborted,
                            };
                            (stream_id, frame_id, outcome)
                        },
                        span.clone(),
                    )));
            }
        }
    }

    /// Gives the core the ACK for a finished handler.
    fn answer(&mut self, stream_id: u64, frame_id: u64, outcome: Outcome) {
        let stats = &self.inner.stats;
        let ack = match outcome {
            Outcome::Ack(ack) => ack,
            Outcome::Failed => {
                let n = stats.handler_errors.fetch_add(1, Relaxed) + 1;
                if worth_logging(n) {
                    tracing::warn!(total = n, "handler returned an error; sent an empty ACK");
                }
                Ack::new()
            }
            Outcome::Panicked => {
                let n = stats.handler_panics.fetch_add(1, Relaxed) + 1;
                if worth_logging(n) {
                    tracing::error!(total = n, "handler panicked; sent an empty ACK");
                }
                Ack::new()
            }
            // Already answered by the core.
            Outcome::Aborted => return,
        };
        match self.conn.send_ack(stream_id, frame_id, ack) {
            crate::conn::AckStatus::Emptied => {
                let n = stats.acks_too_large();
                if worth_logging(n) {
                    tracing::warn!(total = n, "ACK too large; sent an empty ACK");
                }
            }
            crate::conn::AckStatus::Refused => {
                tracing::debug!(stream_id, frame_id, "late ACK dropped");
            }
            _ => {}
        }
    }
}

fn outcome(
    result: std::thread::Result<Result<Ack, super::BoxError>>,
    stream_id: u64,
    frame_id: u64,
) -> Outcome {
    match result {
        Ok(Ok(ack)) => Outcome::Ack(ack),
        Ok(Err(err)) => {
            tracing::debug!(error = %err, stream_id, frame_id, "handler failed");
            Outcome::Failed
        }
        Err(_) => Outcome::Panicked,
    }
}
