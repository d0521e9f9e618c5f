//! One HAProxy connection: handshake, then frames in, ACKs out.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::codec::Framed;

use super::{Handler, Inner, NotifyRequest};
use crate::{
    negotiate, Ack, Capabilities, Error, Frame, FrameBody, HaproxyHello, Reassembled, Reassembler,
    SpopCodec, Status,
};

/// How a handler's work ended.
enum Outcome {
    Ack(Ack),
    Failed,
    TimedOut,
    Panicked,
}

type InFlight = Pin<Box<dyn Future<Output = (u64, u64, Outcome)> + Send>>;

/// Why the main loop stopped.
enum End {
    /// The peer closed, or the transport failed: nothing more to send.
    Closed,
    /// Say AGENT-DISCONNECT with this status and message, then close.
    Disconnect(Status, String),
}

/// Logs the 1st, 2nd, 4th, 8th... occurrence of something: enough to notice,
/// never a flood.
fn worth_logging(count: u64) -> bool {
    count.is_power_of_two()
}

pub(super) async fn run<H, S>(inner: Arc<Inner<H>>, stream: S)
where
    H: Handler,
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let cfg = &inner.config;
    let stats = &inner.stats;
    let mut framed = Framed::new(stream, SpopCodec::new());

    // Handshake.
    let hello = match timeout(cfg.hello_timeout, framed.next()).await {
        Err(_) => {
            tracing::debug!("no HELLO in time");
            return disconnect(&inner, &mut framed, Status::TIMEOUT, "no HELLO in time").await;
        }
        Ok(None) => return,
        Ok(Some(Err(err))) => return fail(&inner, &mut framed, err).await,
        Ok(Some(Ok(frame))) => {
            stats.frame_received(frame.frame_type());
            match frame.body {
                FrameBody::HaproxyHello(hello) => hello,
                other => {
                    let msg = format!(
                        "expected HAPROXY-HELLO, got {}",
                        Frame {
                            metadata: frame.metadata,
                            body: other
                        }
                        .frame_type()
                    );
                    return disconnect(&inner, &mut framed, Status::INVALID_FRAME, &msg).await;
                }
            }
        }
    };
    let answer = match negotiate(&hello, cfg.max_frame_size, cfg.capabilities) {
        Ok(answer) => answer,
        Err(status) => {
            tracing::info!(%status, "refusing HELLO");
            return disconnect(&inner, &mut framed, status, status.description()).await;
        }
    };
    let caps = answer.capabilities;
    let frame_size = answer.max_frame_size;
    tracing::debug!(frame_size, %caps, healthcheck = hello.healthcheck, "handshake");
    if send(&inner, &mut framed, Frame::agent_hello(answer))
        .await
        .is_err()
    {
        return;
    }
    if hello.healthcheck {
        // HAProxy closes (often with a reset) once it has the answer: normal.
        stats.healthchecks.fetch_add(1, Relaxed);
        let _ = timeout(cfg.write_timeout, SinkExt::<Frame>::close(&mut framed)).await;
        return;
    }
    framed.codec_mut().set_max_frame_size(frame_size);

    let end = serve_frames(&inner, &mut framed, &hello, caps).await;
    match end {
        End::Closed => {}
        End::Disconnect(status, msg) => disconnect(&inner, &mut framed, status, &msg).await,
    }
}

async fn serve_frames<H, S>(
    inner: &Arc<Inner<H>>,
    framed: &mut Framed<S, SpopCodec>,
    hello: &HaproxyHello,
    caps: Capabilities,
) -> End
where
    H: Handler,
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let cfg = &inner.config;
    let stats = &inner.stats;
    let mut stop = std::pin::pin!(shutdown_requested(inner.shutdown.subscribe()));
    let mut draining = false;
    let mut drain_deadline = Instant::now() + cfg.shutdown_timeout;
    // One timer for idleness, re-armed lazily: it fires after a whole idle
    // period without frames (so detection takes between one and two periods),
    // and no timer is touched per frame.
    let mut idle = std::pin::pin!(tokio::time::sleep(cfg.idle_timeout));
    let (mut frames_seen, mut frames_at_idle_check) = (0u64, 0u64);
    let mut in_flight: FuturesUnordered<InFlight> = FuturesUnordered::new();
    let mut reassembler = Reassembler::new(cfg.max_reassembly_bytes);
    let fragmentation = caps.contains(Capabilities::FRAGMENTATION);

    let end = loop {
        if draining && in_flight.is_empty() {
            break End::Disconnect(Status::NORMAL, "agent shutting down".to_owned());
        }
        let can_read = !draining && in_flight.len() < cfg.max_in_flight;
        tokio::select! {
            biased;
            Some((stream_id, frame_id, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                stats.in_flight.fetch_sub(1, Relaxed);
                if let Err(end) = answer(inner, framed, stream_id, frame_id, outcome) {
                    break end;
                }
                // Gather every other finished handler before one flush.
                while let Some(Some((s, f, o))) = in_flight.next().now_or_never() {
                    stats.in_flight.fetch_sub(1, Relaxed);
                    if let Err(end) = answer(inner, framed, s, f, o) {
                        return end;
                    }
                }
            }
            () = &mut stop, if !draining => {
                draining = true;
                drain_deadline = Instant::now() + cfg.shutdown_timeout;
                continue;
            }
            frame = framed.next(), if can_read => {
                frames_seen += 1;
                let frame = match frame {
                    None => break End::Closed,
                    Some(Err(Error::Io(err))) => {
                        tracing::debug!(error = %err, "read failed");
                        break End::Closed;
                    }
                    Some(Err(err)) => {
                        tracing::info!(error = %err, "invalid frame");
                        break End::Disconnect(err.status(), err.to_string());
                    }
                    Some(Ok(frame)) => frame,
                };
                stats.frame_received(frame.frame_type());
                match on_frame(inner, frame, hello, fragmentation, &mut reassembler) {
                    Ok(Some(req)) => {
                        if let Some(pending) = dispatch(inner, framed, req) {
                            match pending {
                                Ok(fut) => {
                                    stats.in_flight.fetch_add(1, Relaxed);
                                    in_flight.push(fut);
                                }
                                Err(end) => break end,
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(end) => break end,
                }
                // Handle every frame already buffered before one flush.
                if frame_buffered(framed.read_buffer()) {
                    continue;
                }
            }
            () = &mut idle, if !draining && in_flight.is_empty() => {
                if frames_seen == frames_at_idle_check {
                    tracing::debug!("idle timeout");
                    break End::Disconnect(Status::TIMEOUT, "idle timeout".to_owned());
                }
                frames_at_idle_check = frames_seen;
                idle.as_mut().reset(Instant::now() + cfg.idle_timeout);
                continue;
            }
            () = sleep_until(drain_deadline), if draining => {
                break End::Disconnect(Status::NORMAL, "agent shutting down".to_owned());
            }
        }
        if let Err(end) = flush(inner, framed).await {
            break end;
        }
    };
    // Handlers still running are dropped: their ACKs can never go out late.
    let dropped = in_flight.len() as u64;
    stats.in_flight.fetch_sub(dropped, Relaxed);
    end
}

/// Completes once the agent is shutting down.
async fn shutdown_requested(mut rx: tokio::sync::watch::Receiver<bool>) {
    // An error means the agent is gone: stop too.
    let _ = rx.wait_for(|stop| *stop).await;
}

/// `true` if the read buffer already holds a whole frame (or a bad length,
/// which the next read reports without waiting).
fn frame_buffered(buf: &bytes::BytesMut) -> bool {
    buf.first_chunk::<4>()
        .is_some_and(|head| buf.len() >= 4 + u32::from_be_bytes(*head) as usize)
}

/// Runs the handler: a handler that is ready at once (the common case) is
/// answered right here, with no task, timer or queue; one that is not goes
/// in flight with its timeout.
fn dispatch<H, S>(
    inner: &Arc<Inner<H>>,
    framed: &mut Framed<S, SpopCodec>,
    req: NotifyRequest,
) -> Option<Result<InFlight, End>>
where
    H: Handler,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (stream_id, frame_id) = (req.stream_id, req.frame_id);
    // A span per frame (free unless TRACE is enabled for spop).
    let span = tracing::trace_span!("spop_frame", stream_id, frame_id);
    let _entered = span.enter();
    // A handler that panics while building its future is caught too.
    let Ok(fut) = std::panic::catch_unwind(AssertUnwindSafe(|| inner.handler.call(req))) else {
        return answer(inner, framed, stream_id, frame_id, Outcome::Panicked)
            .err()
            .map(Err);
    };
    let mut fut = Box::pin(AssertUnwindSafe(fut).catch_unwind());
    let outcome = match (&mut fut).now_or_never() {
        Some(result) => outcome(result, stream_id, frame_id),
        None => {
            let limit = inner.config.handler_timeout;
            let span = span.clone();
            return Some(Ok(Box::pin(tracing::Instrument::instrument(
                async move {
                    let outcome = match timeout(limit, fut).await {
                        Ok(result) => outcome(result, stream_id, frame_id),
                        Err(_) => Outcome::TimedOut,
                    };
                    (stream_id, frame_id, outcome)
                },
                span,
            ))));
        }
    };
    answer(inner, framed, stream_id, frame_id, outcome)
        .err()
        .map(Err)
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

/// What to do with one received frame after the handshake.
fn on_frame<H: Handler>(
    inner: &Arc<Inner<H>>,
    frame: Frame,
    hello: &HaproxyHello,
    fragmentation: bool,
    reassembler: &mut Reassembler,
) -> Result<Option<NotifyRequest>, End> {
    let frame = match frame.body {
        FrameBody::NotifyFragment(_) | FrameBody::Unset(_) => {
            if !fragmentation {
                return Err(End::Disconnect(
                    Status::FRAGMENTATION_NOT_SUPPORTED,
                    "fragmentation was not negotiated".to_owned(),
                ));
            }
            match reassembler.push(frame) {
                Ok(Reassembled::Frame(frame)) => frame,
                Ok(Reassembled::Pending) => return Ok(None),
                Ok(Reassembled::Aborted {
                    stream_id,
                    frame_id,
                }) => {
                    inner.stats.aborted_frames.fetch_add(1, Relaxed);
                    tracing::debug!(stream_id, frame_id, "fragmented frame aborted");
                    return Ok(None);
                }
                Err(err) => return Err(End::Disconnect(err.status(), err.to_string())),
            }
        }
        _ => frame,
    };
    match frame.body {
        FrameBody::Notify(notify) => Ok(Some(NotifyRequest {
            stream_id: frame.metadata.stream_id,
            frame_id: frame.metadata.frame_id,
            engine_id: hello.engine_id.clone(),
            notify,
        })),
        FrameBody::HaproxyDisconnect(d) => {
            inner.stats.disconnect_received(d.status);
            tracing::debug!(status = %d.status, message = %String::from_utf8_lossy(&d.message), "HAProxy disconnects");
            Err(End::Disconnect(Status::NORMAL, "bye".to_owned()))
        }
        other => {
            let t = Frame {
                metadata: frame.metadata,
                body: other,
            }
            .frame_type();
            Err(End::Disconnect(
                Status::INVALID_FRAME,
                format!("unexpected {t} frame"),
            ))
        }
    }
}

/// Queues the ACK for a finished handler.
fn answer<H: Handler, S>(
    inner: &Arc<Inner<H>>,
    framed: &mut Framed<S, SpopCodec>,
    stream_id: u64,
    frame_id: u64,
    outcome: Outcome,
) -> Result<(), End>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let stats = &inner.stats;
    let ack = match outcome {
        Outcome::Ack(ack) => ack,
        Outcome::Failed => {
            let n = stats.handler_errors.fetch_add(1, Relaxed) + 1;
            if worth_logging(n) {
                tracing::warn!(total = n, "handler returned an error; sent an empty ACK");
            }
            Ack::new()
        }
        Outcome::TimedOut => {
            let n = stats.handler_timeouts.fetch_add(1, Relaxed) + 1;
            if worth_logging(n) {
                tracing::warn!(total = n, "handler timed out; sent an empty ACK");
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
    };
    let frame = Frame::ack(stream_id, frame_id, ack);
    match framed.feed(&frame).now_or_never() {
        // Feeding only encodes into the write buffer (the codec's
        // back-pressure threshold is flushed separately), so it is ready.
        Some(Ok(())) | None => {
            stats.frame_sent(crate::FrameType::ACK);
            Ok(())
        }
        Some(Err(Error::Encode(err))) => {
            // The handler's actions do not fit the frame size: tell HAProxy
            // nothing rather than something cut.
            let n = stats.handler_errors.fetch_add(1, Relaxed) + 1;
            if worth_logging(n) {
                tracing::warn!(error = %err, "ACK too large; sent an empty ACK");
            }
            let _ = framed
                .feed(&Frame::ack(stream_id, frame_id, Ack::new()))
                .now_or_never();
            stats.frame_sent(crate::FrameType::ACK);
            Ok(())
        }
        Some(Err(err)) => {
            tracing::debug!(error = %err, "write failed");
            Err(End::Closed)
        }
    }
}

async fn flush<H, S>(inner: &Arc<Inner<H>>, framed: &mut Framed<S, SpopCodec>) -> Result<(), End>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if framed.write_buffer().is_empty() {
        return Ok(());
    }
    match timeout(inner.config.write_timeout, SinkExt::<Frame>::flush(framed)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "write failed");
            Err(End::Closed)
        }
        Err(_) => {
            tracing::info!("peer stopped reading; closing");
            Err(End::Closed)
        }
    }
}

async fn send<H, S>(
    inner: &Arc<Inner<H>>,
    framed: &mut Framed<S, SpopCodec>,
    frame: Frame,
) -> Result<(), ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let t = frame.frame_type();
    match timeout(inner.config.write_timeout, framed.send(&frame)).await {
        Ok(Ok(())) => {
            inner.stats.frame_sent(t);
            Ok(())
        }
        _ => Err(()),
    }
}

/// Sends AGENT-DISCONNECT and closes the connection.
async fn disconnect<H, S>(
    inner: &Arc<Inner<H>>,
    framed: &mut Framed<S, SpopCodec>,
    status: Status,
    message: &str,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    inner.stats.disconnect_sent(status);
    // The message must fit the frame size in force (never below 256).
    let mut end = message.len().min(200);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let frame = Frame::agent_disconnect(status, message.get(..end).unwrap_or_default().to_owned());
    if send(inner, framed, frame).await.is_ok() {
        let _ = timeout(inner.config.write_timeout, SinkExt::<Frame>::close(framed)).await;
    }
}

async fn fail<H, S>(inner: &Arc<Inner<H>>, framed: &mut Framed<S, SpopCodec>, err: Error)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match err {
        Error::Io(err) => tracing::debug!(error = %err, "read failed"),
        err => {
            tracing::info!(error = %err, "invalid frame");
            disconnect(inner, framed, err.status(), &err.to_string()).await;
        }
    }
}
