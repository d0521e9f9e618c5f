//! Raw SPOP over a blocking TCP connection: frames are built byte by byte so
//! that malformed ones can be sent, and reads record whether each frame of
//! the agent arrived in one read.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes};
use haproxy_spop::{varint, Frame, FrameBody, Notify, TypedData};

/// Frame type bytes (SPOE.txt §3.2.2).
pub(crate) mod ty {
    pub(crate) const UNSET: u8 = 0;
    pub(crate) const HAPROXY_HELLO: u8 = 1;
    pub(crate) const HAPROXY_DISCONNECT: u8 = 2;
    pub(crate) const NOTIFY: u8 = 3;
    pub(crate) const AGENT_HELLO: u8 = 101;
    pub(crate) const AGENT_DISCONNECT: u8 = 102;
    pub(crate) const ACK: u8 = 103;
}

pub(crate) const FIN: u32 = 1;
pub(crate) const ABORT: u32 = 2;

/// One frame with its LENGTH prefix.
pub(crate) fn frame(ty: u8, flags: u32, stream_id: u64, frame_id: u64, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(payload.len() + 16);
    body.put_u8(ty);
    body.put_u32(flags);
    varint::encode(stream_id, &mut body);
    varint::encode(frame_id, &mut body);
    body.put_slice(payload);
    let mut out = Vec::with_capacity(body.len() + 4);
    out.put_u32(body.len() as u32);
    out.extend_from_slice(&body);
    out
}

/// A KV-LIST item.
pub(crate) fn kv(out: &mut Vec<u8>, key: &str, value: &TypedData) {
    varint::encode(key.len() as u64, out);
    out.put_slice(key.as_bytes());
    value.encode(out);
}

/// A HAPROXY-HELLO's payload: `None` leaves a key out.
#[derive(Debug, Clone)]
pub(crate) struct Hello {
    pub(crate) versions: Option<TypedData>,
    pub(crate) max_frame_size: Option<TypedData>,
    pub(crate) capabilities: Option<TypedData>,
    pub(crate) healthcheck: bool,
    pub(crate) engine_id: bool,
}

impl Hello {
    /// What HAProxy 2.6/3.0 send: "2.0", 16380, "pipelining,async".
    pub(crate) fn standard() -> Self {
        Self {
            versions: Some(TypedData::from("2.0")),
            max_frame_size: Some(TypedData::Uint32(16380)),
            capabilities: Some(TypedData::from("pipelining,async")),
            healthcheck: false,
            engine_id: true,
        }
    }

    pub(crate) fn versions(mut self, v: &str) -> Self {
        self.versions = Some(TypedData::from(v.to_owned()));
        self
    }

    pub(crate) fn max_frame_size(mut self, v: u32) -> Self {
        self.max_frame_size = Some(TypedData::Uint32(v));
        self
    }

    pub(crate) fn capabilities(mut self, v: &str) -> Self {
        self.capabilities = Some(TypedData::from(v.to_owned()));
        self
    }

    pub(crate) fn offered_size(&self) -> Option<u32> {
        self.max_frame_size
            .as_ref()
            .and_then(TypedData::as_u64)
            .and_then(|v| u32::try_from(v).ok())
    }

    pub(crate) fn payload(&self) -> Vec<u8> {
        let mut p = Vec::new();
        if let Some(v) = &self.versions {
            kv(&mut p, "supported-versions", v);
        }
        if let Some(v) = &self.max_frame_size {
            kv(&mut p, "max-frame-size", v);
        }
        if let Some(v) = &self.capabilities {
            kv(&mut p, "capabilities", v);
        }
        if self.healthcheck {
            kv(&mut p, "healthcheck", &TypedData::Bool(true));
        }
        if self.engine_id {
            kv(
                &mut p,
                "engine-id",
                &TypedData::from("spop-conform-0000-0000"),
            );
        }
        p
    }

    pub(crate) fn frame(&self) -> Vec<u8> {
        frame(ty::HAPROXY_HELLO, FIN, 0, 0, &self.payload())
    }
}

/// A NOTIFY frame with FIN.
pub(crate) fn notify(stream_id: u64, frame_id: u64, n: &Notify) -> Vec<u8> {
    frame(ty::NOTIFY, FIN, stream_id, frame_id, n.payload())
}

/// A HAPROXY-DISCONNECT frame.
pub(crate) fn haproxy_disconnect(status: u32, message: &str) -> Vec<u8> {
    let mut p = Vec::new();
    kv(&mut p, "status-code", &TypedData::Uint32(status));
    kv(&mut p, "message", &TypedData::from(message.to_owned()));
    frame(ty::HAPROXY_DISCONNECT, FIN, 0, 0, &p)
}

/// What a read gave.
#[derive(Debug)]
pub(crate) enum Got {
    /// A frame, and whether it arrived in one read.
    Frame(Frame, bool),
    /// The agent closed the connection (FIN).
    Closed,
    /// The connection was reset.
    Reset,
    /// Nothing within the time allowed.
    Timeout,
    /// Bytes that are no valid frame.
    Invalid(String),
}

impl Got {
    /// A short description for failure reasons.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Frame(f, _) => describe_frame(f),
            Self::Closed => "a close without AGENT-DISCONNECT".into(),
            Self::Reset => "a connection reset without AGENT-DISCONNECT".into(),
            Self::Timeout => "nothing (timeout)".into(),
            Self::Invalid(why) => format!("an invalid frame ({why})"),
        }
    }
}

pub(crate) fn describe_frame(f: &Frame) -> String {
    match &f.body {
        FrameBody::AgentDisconnect(d) => format!(
            "AGENT-DISCONNECT status {} ({})",
            d.status.code(),
            String::from_utf8_lossy(&d.message)
        ),
        FrameBody::Ack(_) => format!(
            "ACK stream-id {} frame-id {}",
            f.metadata.stream_id, f.metadata.frame_id
        ),
        FrameBody::AgentHello(h) => format!(
            "AGENT-HELLO version {:?} max-frame-size {} capabilities {:?}",
            String::from_utf8_lossy(&h.version),
            h.max_frame_size,
            h.capabilities
        ),
        _ => format!("a {} frame", f.frame_type()),
    }
}

/// A connection to the agent.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Reads that contributed to the bytes at the start of `buf`.
    pending_reads: usize,
    /// The largest frame accepted from the agent.
    pub(crate) max_frame_size: u32,
}

pub(crate) fn resolve(addr: &str) -> io::Result<SocketAddr> {
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))
}

impl Conn {
    pub(crate) fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(timeout.max(Duration::from_secs(1))))?;
        Ok(Self {
            stream,
            buf: Vec::new(),
            pending_reads: 0,
            max_frame_size: 16380,
        })
    }

    pub(crate) fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The next frame from the agent, waiting up to `timeout`.
    pub(crate) fn recv(&mut self, timeout: Duration) -> Got {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 16384];
        loop {
            if let Some(got) = self.pop() {
                return got;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Got::Timeout;
            }
            if self.stream.set_read_timeout(Some(left)).is_err() {
                return Got::Reset;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) if self.buf.is_empty() => return Got::Closed,
                Ok(0) => {
                    return Got::Invalid(format!(
                        "the connection closed inside a frame ({} bytes of it read)",
                        self.buf.len()
                    ))
                }
                Ok(n) => {
                    self.buf
                        .extend_from_slice(chunk.get(..n).unwrap_or_default());
                    self.pending_reads += 1;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Got::Timeout
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Got::Reset,
            }
        }
    }

    fn pop(&mut self) -> Option<Got> {
        let head: [u8; 4] = self.buf.get(..4)?.try_into().ok()?;
        let len = u32::from_be_bytes(head) as usize;
        if len > self.max_frame_size as usize {
            let got = Got::Invalid(format!(
                "LENGTH {len} is over the max-frame-size {}",
                self.max_frame_size
            ));
            self.buf.clear();
            return Some(got);
        }
        if self.buf.len() < 4 + len {
            return None;
        }
        let whole = self.pending_reads <= 1;
        let bytes: Vec<u8> = self.buf.drain(..4 + len).collect();
        self.pending_reads = usize::from(!self.buf.is_empty());
        let payload = Bytes::from(bytes).slice(4..);
        Some(match Frame::decode(payload) {
            Ok(f) => Got::Frame(f, whole),
            Err(e) => Got::Invalid(e.to_string()),
        })
    }

    /// Closes with a reset: unread data in the receive buffer makes Linux
    /// send RST on close (also true on the BSDs and Windows).
    pub(crate) fn reset_after(self, wait: Duration) {
        std::thread::sleep(wait);
        let mut probe = [0u8; 1];
        let _ = self
            .stream
            .set_read_timeout(Some(Duration::from_millis(200)));
        let _ = self.stream.peek(&mut probe);
        drop(self.stream);
    }
}
