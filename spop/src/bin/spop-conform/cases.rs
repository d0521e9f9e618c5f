//! The cases: each plays one piece of HAProxy's side and checks the agent's
//! answer against SPOE.txt (HAProxy's doc/SPOE.txt, section numbers cited)
//! or against what HAProxy is known to do.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use haproxy_spop::{AgentHello, Capabilities, FrameBody, Notify, NotifyBuilder, TypedData};

use crate::wire::{self, ty, Conn, Got, Hello, ABORT, FIN};

/// A case's result besides a pass.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// The agent did something wrong.
    Fail(String),
    /// The case does not apply to this agent.
    Na(String),
}

/// A pass (with an optional note) or an [`Outcome`].
pub(crate) type V<T = Option<String>> = Result<T, Outcome>;

fn fail<T>(why: impl Into<String>) -> V<T> {
    Err(Outcome::Fail(why.into()))
}

fn na<T>(why: impl Into<String>) -> V<T> {
    Err(Outcome::Na(why.into()))
}

/// What every case gets.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) addr: SocketAddr,
    /// How long one answer may take.
    pub(crate) timeout: Duration,
    /// The user's message (`--message`, `--arg`).
    pub(crate) message: Notify,
    /// How long the timing cases run, each.
    pub(crate) timing: Duration,
    /// How long the idle case waits.
    pub(crate) idle: Duration,
    /// Frames of the agent that arrived split across reads, suite-wide.
    pub(crate) split_frames: AtomicUsize,
}

/// One case of the suite.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Case {
    pub(crate) id: &'static str,
    pub(crate) group: &'static str,
    /// The SPOE.txt section or HAProxy behaviour checked.
    pub(crate) cites: &'static str,
    pub(crate) run: fn(&Ctx) -> V,
}

impl Ctx {
    pub(crate) fn connect(&self) -> V<Conn> {
        Conn::connect(self.addr, self.timeout)
            .or_else(|e| fail(format!("cannot connect to {}: {e}", self.addr)))
    }

    fn recv(&self, conn: &mut Conn) -> Got {
        let got = conn.recv(self.timeout);
        if let Got::Frame(_, false) = got {
            self.split_frames.fetch_add(1, Ordering::Relaxed);
        }
        got
    }

    /// Sends `hello` and checks the AGENT-HELLO against it (SPOE.txt §3.2.5).
    pub(crate) fn handshake(&self, conn: &mut Conn, hello: &Hello) -> V<AgentHello> {
        conn.send(&hello.frame())
            .or_else(|e| fail(format!("writing the HAPROXY-HELLO: {e}")))?;
        let answer = match self.recv(conn) {
            Got::Frame(f, _) => match f.body {
                FrameBody::AgentHello(h) => h,
                _ => {
                    return fail(format!(
                        "answered the HAPROXY-HELLO with {}",
                        wire::describe_frame(&f)
                    ))
                }
            },
            other => {
                return fail(format!(
                    "answered the HAPROXY-HELLO with {}",
                    other.describe()
                ))
            }
        };
        if &answer.version[..] != b"2.0" {
            return fail(format!(
                "AGENT-HELLO version {:?}, not one HAProxy offered (SPOE.txt §3.2.5: one of supported-versions)",
                String::from_utf8_lossy(&answer.version)
            ));
        }
        if let Some(offered) = hello.offered_size() {
            if answer.max_frame_size > offered {
                return fail(format!(
                    "AGENT-HELLO max-frame-size {} is over the {} offered (SPOE.txt §3.2.5: lower than or equal)",
                    answer.max_frame_size, offered
                ));
            }
        }
        if answer.max_frame_size < 256 {
            return fail(format!(
                "AGENT-HELLO max-frame-size {} is under 256 (SPOE.txt §3.2: at least 256; HAProxy rejects it)",
                answer.max_frame_size
            ));
        }
        conn.max_frame_size = answer.max_frame_size;
        Ok(answer)
    }

    /// A connection after the usual handshake.
    pub(crate) fn session(&self) -> V<(Conn, AgentHello)> {
        let mut conn = self.connect()?;
        let hello = self.handshake(&mut conn, &Hello::standard())?;
        Ok((conn, hello))
    }

    /// Reads an ACK for these ids (SPOE.txt §3.2.7: same STREAM-ID and
    /// FRAME-ID as the NOTIFY, FIN set).
    fn expect_ack(&self, conn: &mut Conn, stream_id: u64, frame_id: u64, what: &str) -> V<()> {
        match self.recv(conn) {
            Got::Frame(f, _) => match f.body {
                FrameBody::Ack(_) => {
                    if (f.metadata.stream_id, f.metadata.frame_id) != (stream_id, frame_id) {
                        return fail(format!(
                            "{what}: ACK for stream-id {} frame-id {}, expected {stream_id}/{frame_id} (SPOE.txt §3.2.7)",
                            f.metadata.stream_id, f.metadata.frame_id
                        ));
                    }
                    if !f.metadata.flags.is_fin() {
                        return fail(format!("{what}: ACK without FIN (SPOE.txt §3.2.7)"));
                    }
                    Ok(())
                }
                _ => fail(format!(
                    "{what}: expected an ACK, got {}",
                    wire::describe_frame(&f)
                )),
            },
            other => fail(format!("{what}: expected an ACK, got {}", other.describe())),
        }
    }

    /// Reads until an AGENT-DISCONNECT whose status is in `ok` (ACKs of
    /// earlier NOTIFYs are skipped).
    fn expect_disconnect(&self, conn: &mut Conn, ok: &[u32], cite: &str) -> V<u32> {
        let want = ok
            .iter()
            .map(|s| format!("{s} ({})", haproxy_spop::Status(*s).description()))
            .collect::<Vec<_>>()
            .join(" or ");
        loop {
            match self.recv(conn) {
                Got::Frame(f, _) => match &f.body {
                    FrameBody::AgentDisconnect(d) if ok.contains(&d.status.code()) => {
                        return Ok(d.status.code())
                    }
                    FrameBody::AgentDisconnect(_) => {
                        return fail(format!(
                            "got {}, expected status {want} ({cite})",
                            wire::describe_frame(&f)
                        ))
                    }
                    FrameBody::Ack(_) => {}
                    _ => {
                        return fail(format!(
                            "got {}, expected AGENT-DISCONNECT {want} ({cite})",
                            wire::describe_frame(&f)
                        ))
                    }
                },
                other => {
                    return fail(format!(
                        "got {}, expected AGENT-DISCONNECT {want} ({cite})",
                        other.describe()
                    ))
                }
            }
        }
    }

    /// After a handshake, sends `bytes` and expects a disconnect with a status in `ok`.
    fn bad_after_hello(&self, bytes: &[u8], ok: &[u32], cite: &str) -> V {
        let (mut conn, _) = self.session()?;
        conn.send(bytes).or_else(|e| fail(format!("write: {e}")))?;
        let s = self.expect_disconnect(&mut conn, ok, cite)?;
        Ok(Some(format!("status {s}")))
    }

    /// Sends one NOTIFY and expects its ACK.
    fn notify_roundtrip(&self, n: &Notify, what: &str) -> V {
        let (mut conn, _) = self.session()?;
        conn.send(&wire::notify(1, 1, n))
            .or_else(|e| fail(format!("write: {e}")))?;
        self.expect_ack(&mut conn, 1, 1, what)?;
        Ok(None)
    }
}

fn built(b: NotifyBuilder) -> Notify {
    b.build()
        .unwrap_or_else(|e| panic!("a NOTIFY of the suite does not build: {e}"))
}

fn types_msg() -> NotifyBuilder {
    Notify::builder().message("spop-conform-types")
}

// ---------------------------------------------------------------- handshake

fn hello_ok(ctx: &Ctx, hello: Hello) -> V {
    let mut conn = ctx.connect()?;
    let h = ctx.handshake(&mut conn, &hello)?;
    Ok(Some(format!(
        "answered max-frame-size {}, capabilities {:?}",
        h.max_frame_size, h.capabilities
    )))
}

fn hello_bad(ctx: &Ctx, hello: Hello, ok: &[u32], cite: &str) -> V {
    let mut conn = ctx.connect()?;
    conn.send(&hello.frame())
        .or_else(|e| fail(format!("write: {e}")))?;
    let s = ctx.expect_disconnect(&mut conn, ok, cite)?;
    Ok(Some(format!("status {s}")))
}

fn version_2_0(ctx: &Ctx) -> V {
    hello_ok(ctx, Hello::standard())
}
fn version_list(ctx: &Ctx) -> V {
    hello_ok(ctx, Hello::standard().versions("1.0,2.0"))
}
fn version_spaces(ctx: &Ctx) -> V {
    hello_ok(ctx, Hello::standard().versions(" 1.0 , 2.0 "))
}
fn version_none_common(ctx: &Ctx) -> V {
    hello_bad(
        ctx,
        Hello::standard().versions("1.0"),
        &[8],
        "SPOE.txt §3.2.4, §3.5: no common version is status 8",
    )
}
fn version_missing(ctx: &Ctx) -> V {
    let mut h = Hello::standard();
    h.versions = None;
    hello_bad(
        ctx,
        h,
        &[5],
        "SPOE.txt §3.2.4: supported-versions is mandatory, status 5",
    )
}
fn mfs(ctx: &Ctx, size: u32) -> V {
    let r = hello_ok(ctx, Hello::standard().max_frame_size(size))?;
    Ok(r)
}
fn mfs_256(ctx: &Ctx) -> V {
    mfs(ctx, 256)
}
fn mfs_16380(ctx: &Ctx) -> V {
    mfs(ctx, 16380)
}
fn mfs_65536(ctx: &Ctx) -> V {
    mfs(ctx, 65536)
}
fn mfs_max(ctx: &Ctx) -> V {
    mfs(ctx, u32::MAX)
}
fn mfs_255(ctx: &Ctx) -> V {
    hello_bad(
        ctx,
        Hello::standard().max_frame_size(255),
        &[9],
        "SPOE.txt §3.2, §3.2.5: the agent's max-frame-size must be <= HAProxy's and >= 256, impossible below 256: status 9",
    )
}
fn mfs_missing(ctx: &Ctx) -> V {
    let mut h = Hello::standard();
    h.max_frame_size = None;
    hello_bad(
        ctx,
        h,
        &[6],
        "SPOE.txt §3.2.4: max-frame-size is mandatory, status 6",
    )
}
fn mfs_wrong_type(ctx: &Ctx) -> V {
    let mut h = Hello::standard();
    h.max_frame_size = Some(TypedData::from("16380"));
    hello_bad(
        ctx,
        h,
        &[6, 4],
        "SPOE.txt §3.2.4: max-frame-size is a UINT32; a STRING is no max-frame-size (6) or an invalid frame (4)",
    )
}
fn caps_missing(ctx: &Ctx) -> V {
    let mut h = Hello::standard();
    h.capabilities = None;
    hello_bad(
        ctx,
        h,
        &[7],
        "SPOE.txt §3.2.4: capabilities is mandatory, status 7",
    )
}
fn caps_empty(ctx: &Ctx) -> V {
    hello_ok(ctx, Hello::standard().capabilities(""))
}
fn caps_unknown(ctx: &Ctx) -> V {
    hello_ok(
        ctx,
        Hello::standard().capabilities("pipelining,async,frobnicate"),
    )
}
fn caps_spacing(ctx: &Ctx) -> V {
    let (_, plain) = ctx.session()?;
    let mut conn = ctx.connect()?;
    let spaced = ctx.handshake(
        &mut conn,
        &Hello::standard().capabilities("  pipelining ,  async "),
    )?;
    let p = Capabilities::PIPELINING;
    if plain.capabilities.contains(p) && !spaced.capabilities.contains(p) {
        return fail("announces pipelining for \"pipelining,async\" but not for \"  pipelining ,  async \" (SPOE.txt §3.2.1: spaces around names are allowed)");
    }
    Ok(None)
}
fn healthcheck(ctx: &Ctx, reset: bool) -> V {
    let mut hello = Hello::standard().capabilities("");
    hello.healthcheck = true;
    hello.engine_id = false;
    let mut conn = ctx.connect()?;
    if reset {
        conn.send(&hello.frame())
            .or_else(|e| fail(format!("write: {e}")))?;
        conn.reset_after(Duration::from_millis(100));
    } else {
        ctx.handshake(&mut conn, &hello)?;
        drop(conn);
    }
    std::thread::sleep(Duration::from_millis(50));
    let (mut conn, _) = ctx.session().map_err(|e| match e {
        Outcome::Fail(why) => Outcome::Fail(format!("after the health check: {why}")),
        other => other,
    })?;
    conn.send(&wire::notify(1, 1, &ctx.message))
        .or_else(|e| fail(format!("write: {e}")))?;
    ctx.expect_ack(&mut conn, 1, 1, "a NOTIFY after the health check")?;
    Ok(None)
}
fn healthcheck_close(ctx: &Ctx) -> V {
    healthcheck(ctx, false)
}
fn healthcheck_reset(ctx: &Ctx) -> V {
    healthcheck(ctx, true)
}

// ---------------------------------------------------------------- framing

fn hello_one_read(ctx: &Ctx) -> V {
    let mut split = 0;
    for _ in 0..5 {
        let mut conn = ctx.connect()?;
        conn.send(&Hello::standard().frame())
            .or_else(|e| fail(format!("write: {e}")))?;
        match conn.recv(ctx.timeout) {
            Got::Frame(_, true) => {}
            Got::Frame(_, false) => split += 1,
            other => {
                return fail(format!(
                    "answered the HAPROXY-HELLO with {}",
                    other.describe()
                ))
            }
        }
    }
    if split > 0 {
        return fail(format!(
            "{split} of 5 AGENT-HELLOs arrived split across reads: HAProxy 3.2 resets such connections (HAProxy issue #3478); write each frame in one write"
        ));
    }
    Ok(None)
}
fn acks_one_read(ctx: &Ctx) -> V {
    let (mut conn, _) = ctx.session()?;
    let mut split = 0;
    for i in 1..=50 {
        conn.send(&wire::notify(i, 1, &ctx.message))
            .or_else(|e| fail(format!("write: {e}")))?;
        // Read at once, without waiting, to see the agent's writes as they come.
        match conn.recv(ctx.timeout) {
            Got::Frame(f, whole) if matches!(f.body, FrameBody::Ack(_)) => {
                if !whole {
                    split += 1;
                }
            }
            other => {
                return fail(format!(
                    "NOTIFY {i}: expected an ACK, got {}",
                    other.describe()
                ))
            }
        }
    }
    if split > 0 {
        return fail(format!("{split} of 50 ACKs arrived split across reads"));
    }
    Ok(None)
}
/// A message "spop-conform-big" with one BINARY argument, `len` bytes in all.
fn filler(len: usize) -> Vec<u8> {
    let name = b"spop-conform-big";
    let mut n = Vec::new();
    haproxy_spop::varint::encode(name.len() as u64, &mut n);
    n.extend_from_slice(name);
    n.extend_from_slice(&[1, 1, b'b', 9]);
    let mut rest = len.saturating_sub(n.len());
    while rest > 0 && rest + haproxy_spop::varint::encoded_len(rest as u64) + n.len() > len {
        rest -= 1;
    }
    haproxy_spop::varint::encode(rest as u64, &mut n);
    n.resize(len, b'x');
    n
}

/// A NOTIFY (ids 1/1) whose frame is `size` bytes (LENGTH excluded): the
/// user's message, then a filler message.
fn notify_of_size(ctx: &Ctx, size: usize) -> Vec<u8> {
    let header = wire::frame(ty::NOTIFY, FIN, 1, 1, &[]).len() - 4;
    let mut p = ctx.message.payload().to_vec();
    p.extend(filler(size - header - p.len()));
    wire::frame(ty::NOTIFY, FIN, 1, 1, &p)
}

fn too_big(ctx: &Ctx) -> V {
    let (mut conn, hello) = ctx.session()?;
    // A NOTIFY whose LENGTH is one over the negotiated size.
    let f = notify_of_size(ctx, hello.max_frame_size as usize + 1);
    conn.send(&f).ok();
    let s = ctx.expect_disconnect(
        &mut conn,
        &[3],
        "SPOE.txt §3.5: a frame over max-frame-size is status 3",
    )?;
    Ok(Some(format!("status {s} for a {}-byte frame", f.len() - 4)))
}
fn at_max_size(ctx: &Ctx) -> V {
    let mut conn = ctx.connect()?;
    let hello = ctx.handshake(&mut conn, &Hello::standard().max_frame_size(65536))?;
    let size = hello.max_frame_size as usize;
    conn.send(&notify_of_size(ctx, size))
        .or_else(|e| fail(format!("write: {e}")))?;
    ctx.expect_ack(
        &mut conn,
        1,
        1,
        &format!("a NOTIFY of exactly the {size} bytes the agent announced"),
    )?;
    Ok(Some(format!("{size} bytes")))
}
fn notify_before_hello(ctx: &Ctx) -> V {
    let mut conn = ctx.connect()?;
    conn.send(&wire::notify(1, 1, &ctx.message)).ok();
    let s = ctx.expect_disconnect(
        &mut conn,
        &[4, 5],
        "SPOE.txt §3.2.3: HAPROXY-HELLO comes first; anything else is an invalid frame",
    )?;
    Ok(Some(format!("status {s}")))
}
fn agent_hello_to_agent(ctx: &Ctx) -> V {
    let mut p = Vec::new();
    wire::kv(&mut p, "version", &TypedData::from("2.0"));
    wire::kv(&mut p, "max-frame-size", &TypedData::Uint32(16380));
    wire::kv(&mut p, "capabilities", &TypedData::from(""));
    ctx.bad_after_hello(
        &wire::frame(ty::AGENT_HELLO, FIN, 0, 0, &p),
        &[4],
        "SPOE.txt §3.2.2: AGENT-HELLO only goes from agent to HAProxy",
    )
}
fn agent_disconnect_to_agent(ctx: &Ctx) -> V {
    let mut p = Vec::new();
    wire::kv(&mut p, "status-code", &TypedData::Uint32(0));
    wire::kv(&mut p, "message", &TypedData::from(""));
    ctx.bad_after_hello(
        &wire::frame(ty::AGENT_DISCONNECT, FIN, 0, 0, &p),
        &[4],
        "SPOE.txt §3.2.2: AGENT-DISCONNECT only goes from agent to HAProxy",
    )
}
fn ack_to_agent(ctx: &Ctx) -> V {
    ctx.bad_after_hello(
        &wire::frame(ty::ACK, FIN, 1, 1, &[]),
        &[4],
        "SPOE.txt §3.2.2: ACK only goes from agent to HAProxy",
    )
}
fn unknown_type(ctx: &Ctx) -> V {
    ctx.bad_after_hello(
        &wire::frame(42, FIN, 1, 1, &[]),
        &[4],
        "SPOE.txt §3.2.2: an unknown frame type is an invalid frame",
    )
}
fn hello_twice(ctx: &Ctx) -> V {
    ctx.bad_after_hello(
        &Hello::standard().frame(),
        &[4],
        "SPOE.txt §3.2.3: HAPROXY-HELLO once per connection, first",
    )
}
fn unset_unexpected(ctx: &Ctx) -> V {
    ctx.bad_after_hello(
        &wire::frame(ty::UNSET, FIN, 1, 1, b"\x01m\x00"),
        &[4, 10, 11, 12],
        "SPOE.txt §3.2.3 (fragmentation): an UNSET with no NOTIFY to continue is status 12 (or 10 without fragmentation, 11, 4)",
    )
}
fn length_zero(ctx: &Ctx) -> V {
    ctx.bad_after_hello(
        &[0, 0, 0, 0],
        &[4],
        "SPOE.txt §3.2: a frame has at least a type, flags and ids",
    )
}
fn bad_metadata(ctx: &Ctx) -> V {
    // type, flags, then a stream-id varint that never ends.
    ctx.bad_after_hello(
        &[0, 0, 0, 7, ty::NOTIFY, 0, 0, 0, 1, 0xf0, 0x80],
        &[4],
        "SPOE.txt §3.1/§3.2: a truncated varint is an invalid frame",
    )
}

// ---------------------------------------------------------------- NOTIFY

fn ids_edges(ctx: &Ctx) -> V {
    let (mut conn, _) = ctx.session()?;
    // HAProxy's stream and frame ids are 32-bit counters.
    let max = u64::from(u32::MAX);
    let ids: [(u64, u64); 7] = [
        (0, 0),
        (239, 240),
        (240, 239),
        (2287, 2288),
        (2288, 2287),
        (max, 1),
        (max, max),
    ];
    for (s, f) in ids {
        conn.send(&wire::notify(s, f, &ctx.message))
            .or_else(|e| fail(format!("write: {e}")))?;
        ctx.expect_ack(&mut conn, s, f, &format!("ids {s}/{f}"))?;
    }
    Ok(None)
}
fn int32(ctx: &Ctx) -> V {
    let mut b = types_msg();
    for (i, v) in [i32::MIN, -2289, -240, -1, 0, 239, 240, 2287, 2288, i32::MAX]
        .into_iter()
        .enumerate()
    {
        b = b.arg(format!("i{i}"), TypedData::Int32(v));
    }
    ctx.notify_roundtrip(&built(b), "INT32 edges")
}
fn uint32(ctx: &Ctx) -> V {
    let mut b = types_msg();
    for (i, v) in [0, 239, 240, 2287, 2288, 264_431, 264_432, u32::MAX]
        .into_iter()
        .enumerate()
    {
        b = b.arg(format!("u{i}"), TypedData::Uint32(v));
    }
    ctx.notify_roundtrip(&built(b), "UINT32 edges")
}
fn int64(ctx: &Ctx) -> V {
    let mut b = types_msg();
    for (i, v) in [i64::MIN, -1, 0, 2288, i64::MAX].into_iter().enumerate() {
        b = b.arg(format!("i{i}"), TypedData::Int64(v));
    }
    ctx.notify_roundtrip(&built(b), "INT64 edges")
}
fn uint64(ctx: &Ctx) -> V {
    let mut b = types_msg();
    for (i, v) in [0, 2288, u64::MAX].into_iter().enumerate() {
        b = b.arg(format!("u{i}"), TypedData::Uint64(v));
    }
    ctx.notify_roundtrip(&built(b), "UINT64 edges")
}
fn strings(ctx: &Ctx) -> V {
    let b = types_msg()
        .arg("empty", TypedData::String(Bytes::new()))
        .arg("empty-bin", TypedData::Binary(Bytes::new()))
        .arg(
            "not-utf8",
            TypedData::String(Bytes::from_static(b"\xff\xfe\xc3")),
        )
        .arg("nul", TypedData::String(Bytes::from_static(b"a\0b")))
        .arg("s239", TypedData::String(Bytes::from(vec![b's'; 239])))
        .arg("s240", TypedData::String(Bytes::from(vec![b's'; 240])))
        .arg("b2288", TypedData::Binary(Bytes::from(vec![0xAA; 2288])));
    ctx.notify_roundtrip(&built(b), "STRING/BINARY edges")
}
fn ips(ctx: &Ctx) -> V {
    let b = types_msg()
        .arg("v4a", TypedData::Ipv4(Ipv4Addr::UNSPECIFIED))
        .arg("v4b", TypedData::Ipv4(Ipv4Addr::BROADCAST))
        .arg("v6a", TypedData::Ipv6(Ipv6Addr::UNSPECIFIED))
        .arg("v6b", TypedData::Ipv6(Ipv6Addr::LOCALHOST))
        .arg("v6c", TypedData::Ipv6(Ipv6Addr::from(u128::MAX)))
        .arg(
            "mapped",
            TypedData::Ipv6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
        );
    ctx.notify_roundtrip(&built(b), "IPv4/IPv6")
}
fn null_bool(ctx: &Ctx) -> V {
    let b = types_msg()
        .arg("null", TypedData::Null)
        .arg("t", TypedData::Bool(true))
        .arg("f", TypedData::Bool(false))
        .arg("", TypedData::Null);
    ctx.notify_roundtrip(&built(b), "NULL/BOOL and an empty argument name")
}
fn many_messages(ctx: &Ctx) -> V {
    let mut b = Notify::builder();
    for i in 0..100 {
        b = b
            .message(format!("spop-conform-{i}"))
            .arg("i", TypedData::Int64(i));
    }
    let mut msg = built(b);
    // And the user's message last, as HAProxy groups messages of one event.
    let mut p = msg.payload().to_vec();
    p.extend_from_slice(ctx.message.payload());
    msg = Notify::decode(Bytes::from(p)).unwrap_or(msg);
    ctx.notify_roundtrip(&msg, "101 messages in one NOTIFY")
}
fn user_message(ctx: &Ctx) -> V {
    let (mut conn, _) = ctx.session()?;
    conn.send(&wire::notify(1, 1, &ctx.message))
        .or_else(|e| fail(format!("write: {e}")))?;
    match ctx.recv(&mut conn) {
        Got::Frame(f, _) => match &f.body {
            FrameBody::Ack(a) if (f.metadata.stream_id, f.metadata.frame_id) == (1, 1) => {
                Ok(Some(format!("ACK {a:?}")))
            }
            _ => fail(format!(
                "expected an ACK 1/1, got {}",
                wire::describe_frame(&f)
            )),
        },
        other => fail(format!("expected an ACK, got {}", other.describe())),
    }
}
fn unknown_data_type(ctx: &Ctx) -> V {
    // message "m", 1 argument "x" of type 15.
    let p = b"\x01m\x01\x01x\x0f";
    ctx.bad_after_hello(
        &wire::frame(ty::NOTIFY, FIN, 1, 1, p),
        &[4],
        "SPOE.txt §3.1: types are 0-9; another is an invalid frame",
    )
}
fn truncated(ctx: &Ctx) -> V {
    let full = built(
        types_msg()
            .arg("i", TypedData::Int64(-300))
            .arg("s", TypedData::from("hello"))
            .arg("ip", TypedData::Ipv4(Ipv4Addr::LOCALHOST))
            .arg("v6", TypedData::Ipv6(Ipv6Addr::LOCALHOST)),
    );
    let p = full.payload();
    let mut bad = Vec::new();
    let mut hangs = 0;
    let mut tried = 0;
    for cut in 1..p.len() {
        tried += 1;
        let frame = wire::frame(ty::NOTIFY, FIN, 1, 1, p.get(..cut).unwrap_or_default());
        match ctx.bad_after_hello(&frame, &[4], "SPOE.txt §3.2.6") {
            Ok(_) => {}
            Err(Outcome::Fail(why)) => {
                if why.contains("timeout") {
                    hangs += 1;
                }
                bad.push(format!("cut at {cut}/{}: {why}", p.len()));
            }
            Err(na) => return Err(na),
        }
        if hangs >= 3 {
            break;
        }
    }
    if let Some(first) = bad.first() {
        let more = if bad.len() > 1 {
            format!(" (and {} more)", bad.len() - 1)
        } else {
            String::new()
        };
        let stopped = if tried < p.len() - 1 {
            format!("; stopped after {tried} cuts, 3 hangs")
        } else {
            String::new()
        };
        return fail(format!(
            "{} of {tried} truncated NOTIFYs not refused with status 4 (SPOE.txt §3.2.6): {first}{more}{stopped}",
            bad.len()
        ));
    }
    Ok(Some(format!("{tried} cuts, each status 4")))
}

// ---------------------------------------------------------------- pipelining

/// Sends `n` NOTIFYs at once and collects the ACKs (any order).
fn burst(ctx: &Ctx, conn: &mut Conn, n: u64, wait: Duration) -> V<(usize, Option<String>)> {
    let mut all = Vec::new();
    for i in 0..n {
        all.extend_from_slice(&wire::notify(1000 + i, 1, &ctx.message));
    }
    conn.send(&all).or_else(|e| fail(format!("write: {e}")))?;
    let mut want: HashSet<u64> = (1000..1000 + n).collect();
    let deadline = Instant::now() + wait;
    while !want.is_empty() && Instant::now() < deadline {
        match conn.recv(ctx.timeout) {
            Got::Frame(f, _) => match &f.body {
                FrameBody::Ack(_) => {
                    if !want.remove(&f.metadata.stream_id) || f.metadata.frame_id != 1 {
                        return fail(format!(
                            "an ACK for stream-id {} frame-id {} that is not pending (SPOE.txt §3.2.7)",
                            f.metadata.stream_id, f.metadata.frame_id
                        ));
                    }
                }
                _ => {
                    return Ok((n as usize - want.len(), Some(wire::describe_frame(&f))));
                }
            },
            other => return Ok((n as usize - want.len(), Some(other.describe()))),
        }
    }
    Ok((n as usize - want.len(), None))
}
fn needs_pipelining(h: &AgentHello) -> V<()> {
    if h.capabilities.contains(Capabilities::PIPELINING) {
        Ok(())
    } else {
        na("the agent does not announce pipelining: HAProxy sends one NOTIFY at a time")
    }
}
fn pipe_20(ctx: &Ctx) -> V {
    let (mut conn, h) = ctx.session()?;
    needs_pipelining(&h)?;
    let (acked, end) = burst(ctx, &mut conn, 20, ctx.timeout * 3)?;
    if acked != 20 {
        return fail(format!(
            "{acked} of 20 pipelined NOTIFYs ACKed, then {} (HAProxy 3.1+ keeps about 20 in flight; SPOE.txt §3.2.1 pipelining)",
            end.unwrap_or_else(|| "nothing".into())
        ));
    }
    Ok(None)
}
fn pipe_past_limit(ctx: &Ctx) -> V {
    let (mut conn, h) = ctx.session()?;
    needs_pipelining(&h)?;
    let (acked, end) = burst(ctx, &mut conn, 500, ctx.timeout * 5)?;
    match end {
        None if acked == 500 => Ok(Some("all 500 ACKed".into())),
        Some(e) if e.starts_with("AGENT-DISCONNECT") => {
            Ok(Some(format!("{acked} ACKed, then {e} (a clean refusal)")))
        }
        e => fail(format!(
            "{acked} of 500 pipelined NOTIFYs ACKed, then {}: past its limit an agent should queue or AGENT-DISCONNECT (13), never drop silently",
            e.unwrap_or_else(|| "nothing".into())
        )),
    }
}
/// The user's message split in three fragments: NOTIFY without FIN, UNSET, UNSET with FIN.
fn fragments(ctx: &Ctx, stream_id: u64, frame_id: u64) -> Vec<u8> {
    let mut p = ctx.message.payload().to_vec();
    // Make it long enough to split in three.
    let pad = built(types_msg().arg("pad", TypedData::from("0123456789")));
    p.extend_from_slice(pad.payload());
    let a = p.len() / 3;
    let b = 2 * p.len() / 3;
    let mut out = wire::frame(
        ty::NOTIFY,
        0,
        stream_id,
        frame_id,
        p.get(..a).unwrap_or_default(),
    );
    out.extend(wire::frame(
        ty::UNSET,
        0,
        stream_id,
        frame_id,
        p.get(a..b).unwrap_or_default(),
    ));
    out.extend(wire::frame(
        ty::UNSET,
        FIN,
        stream_id,
        frame_id,
        p.get(b..).unwrap_or_default(),
    ));
    out
}
fn frag_announced(ctx: &Ctx) -> V {
    let (mut conn, h) = ctx.session()?;
    if !h.capabilities.contains(Capabilities::FRAGMENTATION) {
        return na("the agent does not announce fragmentation");
    }
    conn.send(&fragments(ctx, 7, 3))
        .or_else(|e| fail(format!("write: {e}")))?;
    ctx.expect_ack(
        &mut conn,
        7,
        3,
        "a NOTIFY in 3 fragments (SPOE.txt §3.2.3, HAProxy 2.x)",
    )?;
    Ok(None)
}
fn frag_not_announced(ctx: &Ctx) -> V {
    let (mut conn, h) = ctx.session()?;
    if h.capabilities.contains(Capabilities::FRAGMENTATION) {
        return na("the agent announces fragmentation");
    }
    conn.send(&fragments(ctx, 7, 3)).ok();
    match ctx.recv(&mut conn) {
        Got::Frame(f, _) => match &f.body {
            FrameBody::AgentDisconnect(d) if matches!(d.status.code(), 10 | 4) => {
                Ok(Some(format!("status {}", d.status.code())))
            }
            FrameBody::Ack(_) if (f.metadata.stream_id, f.metadata.frame_id) == (7, 3) => Ok(Some(
                "reassembled and ACKed although it does not announce fragmentation".into(),
            )),
            _ => fail(format!(
                "got {}, expected AGENT-DISCONNECT 10 (SPOE.txt §3.5 status 10: fragmentation not supported)",
                wire::describe_frame(&f)
            )),
        },
        other => fail(format!(
            "got {}, expected AGENT-DISCONNECT 10 (SPOE.txt §3.5)",
            other.describe()
        )),
    }
}
fn frag_abort(ctx: &Ctx) -> V {
    let (mut conn, h) = ctx.session()?;
    if !h.capabilities.contains(Capabilities::FRAGMENTATION) {
        return na("the agent does not announce fragmentation");
    }
    let p = ctx.message.payload();
    let half = p.len() / 2;
    let mut out = wire::frame(ty::NOTIFY, 0, 5, 1, p.get(..half).unwrap_or_default());
    out.extend(wire::frame(ty::UNSET, ABORT | FIN, 5, 1, &[]));
    out.extend(wire::notify(6, 1, &ctx.message));
    conn.send(&out).or_else(|e| fail(format!("write: {e}")))?;
    // The aborted frame may or may not be ACKed; the next one must be.
    for _ in 0..2 {
        match ctx.recv(&mut conn) {
            Got::Frame(f, _) if matches!(f.body, FrameBody::Ack(_)) => {
                if (f.metadata.stream_id, f.metadata.frame_id) == (6, 1) {
                    return Ok(None);
                }
            }
            other => {
                return fail(format!(
                    "after an aborted fragmented NOTIFY (ABORT flag, SPOE.txt §3.2.3), the next NOTIFY got {}",
                    other.describe()
                ))
            }
        }
    }
    fail("the NOTIFY after an aborted one was not ACKed")
}

fn frag_interlaced(ctx: &Ctx) -> V {
    let (mut conn, h) = ctx.session()?;
    if !h.capabilities.contains(Capabilities::FRAGMENTATION) {
        return na("the agent does not announce fragmentation");
    }
    let p = ctx.message.payload();
    let half = p.len() / 2;
    let (a, b) = (
        p.get(..half).unwrap_or_default(),
        p.get(half..).unwrap_or_default(),
    );
    let mut out = wire::frame(ty::NOTIFY, 0, 5, 1, a);
    out.extend(wire::frame(ty::NOTIFY, 0, 6, 1, a));
    out.extend(wire::frame(ty::UNSET, FIN, 5, 1, b));
    out.extend(wire::frame(ty::UNSET, FIN, 6, 1, b));
    conn.send(&out).or_else(|e| fail(format!("write: {e}")))?;
    let mut acked = HashSet::new();
    while acked.len() < 2 {
        match ctx.recv(&mut conn) {
            Got::Frame(f, _) => match &f.body {
                FrameBody::Ack(_) => {
                    acked.insert((f.metadata.stream_id, f.metadata.frame_id));
                }
                FrameBody::AgentDisconnect(d) if matches!(d.status.code(), 11 | 12) => {
                    return Ok(Some(format!("refused with status {}", d.status.code())))
                }
                _ => {
                    return fail(format!(
                        "got {}, expected both ACKs or AGENT-DISCONNECT 11 (SPOE.txt §3.5: invalid interlaced frames)",
                        wire::describe_frame(&f)
                    ))
                }
            },
            other => {
                return fail(format!(
                    "got {}, expected both ACKs or AGENT-DISCONNECT 11 (SPOE.txt §3.5)",
                    other.describe()
                ))
            }
        }
    }
    if acked == HashSet::from([(5, 1), (6, 1)]) {
        Ok(Some("reassembled both".into()))
    } else {
        fail(format!("ACKs for {acked:?}, expected 5/1 and 6/1"))
    }
}

// ---------------------------------------------------------------- resilience

fn haproxy_disconnect(ctx: &Ctx) -> V {
    let (mut conn, _) = ctx.session()?;
    conn.send(&wire::haproxy_disconnect(0, "spop-conform: bye"))
        .or_else(|e| fail(format!("write: {e}")))?;
    let s = ctx.expect_disconnect(
        &mut conn,
        &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 99],
        "SPOE.txt §3.2.8: the agent answers HAPROXY-DISCONNECT with AGENT-DISCONNECT",
    )?;
    match conn.recv(ctx.timeout) {
        Got::Closed | Got::Reset => Ok(Some(format!("status {s}, then closed"))),
        other => fail(format!(
            "AGENT-DISCONNECT {s} then {} instead of closing (SPOE.txt §3.2.8)",
            other.describe()
        )),
    }
}
fn idle(ctx: &Ctx) -> V {
    let (mut conn, _) = ctx.session()?;
    std::thread::sleep(ctx.idle);
    conn.send(&wire::notify(1, 1, &ctx.message))
        .or_else(|e| fail(format!("write after {:?} idle: {e}", ctx.idle)))?;
    ctx.expect_ack(
        &mut conn,
        1,
        1,
        &format!("a NOTIFY after {:?} idle", ctx.idle),
    )?;
    Ok(None)
}
fn slow_reader(ctx: &Ctx) -> V {
    let (conn, h) = ctx.session()?;
    needs_pipelining(&h)?;
    let n: u64 = 5000;
    let writer = conn
        .stream()
        .try_clone()
        .or_else(|e| fail(format!("clone: {e}")))?;
    let msg = ctx.message.clone();
    let sent = Arc::new(AtomicUsize::new(0));
    let sent2 = sent.clone();
    let t = std::thread::spawn(move || {
        use std::io::Write;
        let mut w = writer;
        let _ = w.set_write_timeout(Some(Duration::from_secs(5)));
        for i in 0..n {
            if w.write_all(&wire::notify(1 + i, 1, &msg)).is_err() {
                break;
            }
            sent2.fetch_add(1, Ordering::Relaxed);
        }
    });
    // Do not read for 2 s.
    std::thread::sleep(Duration::from_secs(2));
    let mut conn = conn;
    let mut acked = 0usize;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut end = None;
    loop {
        let written = sent.load(Ordering::Relaxed);
        if t.is_finished() && acked >= written {
            break;
        }
        if Instant::now() > deadline {
            end = Some("the 15 s bound".to_owned());
            break;
        }
        match conn.recv(ctx.timeout) {
            Got::Frame(f, _) if matches!(f.body, FrameBody::Ack(_)) => acked += 1,
            Got::Frame(f, _) => {
                end = Some(wire::describe_frame(&f));
                break;
            }
            other => {
                end = Some(other.describe());
                break;
            }
        }
    }
    let _ = t.join();
    let written = sent.load(Ordering::Relaxed);
    match end {
        None => Ok(Some(format!(
            "{acked} of {written} written NOTIFYs ACKed after a 2 s read stall"
        ))),
        Some(e) if e.starts_with("AGENT-DISCONNECT") => Ok(Some(format!(
            "{acked} of {written} ACKed, then {e} (a clean end)"
        ))),
        Some(e) => fail(format!(
            "after a 2 s read stall: {acked} of {written} written NOTIFYs ACKed, then {e}"
        )),
    }
}
fn reload_burst(ctx: &Ctx) -> V {
    let addr = ctx.addr;
    let timeout = ctx.timeout * 3;
    let threads: Vec<_> = (0..100)
        .map(|_| {
            std::thread::spawn(move || -> Result<(), String> {
                let mut c = Conn::connect(addr, timeout).map_err(|e| format!("connect: {e}"))?;
                c.send(&Hello::standard().frame())
                    .map_err(|e| format!("write: {e}"))?;
                match c.recv(timeout) {
                    Got::Frame(f, _) if matches!(f.body, FrameBody::AgentHello(_)) => Ok(()),
                    Got::Frame(f, _) => Err(wire::describe_frame(&f)),
                    other => Err(other.describe()),
                }
            })
        })
        .collect();
    let mut bad = Vec::new();
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bad.push(e),
            Err(_) => bad.push("thread panicked".into()),
        }
    }
    if let Some(first) = bad.first() {
        return fail(format!(
            "{} of 100 simultaneous HELLOs (as after a HAProxy reload) failed: {first}",
            bad.len()
        ));
    }
    Ok(None)
}
fn still_alive(ctx: &Ctx) -> V {
    ctx.notify_roundtrip(&ctx.message, "a NOTIFY at the end of the suite")
}

// ---------------------------------------------------------------- timing

fn latency(ctx: &Ctx, depth: u64) -> V {
    let (mut conn, h) = ctx.session()?;
    if depth > 1 {
        needs_pipelining(&h)?;
    }
    let mut sent_at = std::collections::HashMap::new();
    let mut next = 1u64;
    let mut lat = Vec::new();
    let start = Instant::now();
    for _ in 0..depth {
        sent_at.insert(next, Instant::now());
        conn.send(&wire::notify(next, 1, &ctx.message))
            .or_else(|e| fail(format!("write: {e}")))?;
        next += 1;
    }
    while !sent_at.is_empty() {
        match ctx.recv(&mut conn) {
            Got::Frame(f, _) if matches!(f.body, FrameBody::Ack(_)) => {
                let Some(t0) = sent_at.remove(&f.metadata.stream_id) else {
                    return fail(format!(
                        "an ACK for unknown stream-id {}",
                        f.metadata.stream_id
                    ));
                };
                lat.push(t0.elapsed());
                if start.elapsed() < ctx.timing {
                    sent_at.insert(next, Instant::now());
                    conn.send(&wire::notify(next, 1, &ctx.message))
                        .or_else(|e| fail(format!("write: {e}")))?;
                    next += 1;
                }
            }
            other => return fail(format!("after {} ACKs: {}", lat.len(), other.describe())),
        }
    }
    lat.sort();
    let pct = |p: f64| {
        let i = ((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1));
        lat.get(i).copied().unwrap_or_default()
    };
    let secs = start.elapsed().as_secs_f64();
    Ok(Some(format!(
        "{} ACKs, {:.0}/s, p50 {:?}, p99 {:?}, max {:?}",
        lat.len(),
        lat.len() as f64 / secs,
        pct(0.50),
        pct(0.99),
        lat.last().copied().unwrap_or_default()
    )))
}
fn latency_1(ctx: &Ctx) -> V {
    latency(ctx, 1)
}
fn latency_4(ctx: &Ctx) -> V {
    latency(ctx, 4)
}
fn latency_20(ctx: &Ctx) -> V {
    latency(ctx, 20)
}

macro_rules! case {
    ($id:literal, $group:literal, $cites:literal, $f:ident) => {
        Case {
            id: $id,
            group: $group,
            cites: $cites,
            run: $f,
        }
    };
}

/// Every case, in the order they run.
pub(crate) const ALL: &[Case] = &[
    case!(
        "hello.version.2.0",
        "handshake",
        "SPOE.txt §3.2.4, §3.2.5",
        version_2_0
    ),
    case!(
        "hello.version.list",
        "handshake",
        "SPOE.txt §3.2.4 (\"1.0,2.0\")",
        version_list
    ),
    case!(
        "hello.version.spaces",
        "handshake",
        "SPOE.txt §3.2.4 (\" 1.0 , 2.0 \")",
        version_spaces
    ),
    case!(
        "hello.version.none-common",
        "handshake",
        "SPOE.txt §3.2.4, §3.5 status 8",
        version_none_common
    ),
    case!(
        "hello.version.missing",
        "handshake",
        "SPOE.txt §3.2.4, §3.5 status 5",
        version_missing
    ),
    case!(
        "hello.max-frame-size.256",
        "handshake",
        "SPOE.txt §3.2, §3.2.5 (256 <= answer <= offered)",
        mfs_256
    ),
    case!(
        "hello.max-frame-size.16380",
        "handshake",
        "SPOE.txt §3.2.5; HAProxy's default",
        mfs_16380
    ),
    case!(
        "hello.max-frame-size.65536",
        "handshake",
        "SPOE.txt §3.2.5",
        mfs_65536
    ),
    case!(
        "hello.max-frame-size.u32-max",
        "handshake",
        "SPOE.txt §3.2.5",
        mfs_max
    ),
    case!(
        "hello.max-frame-size.255",
        "handshake",
        "SPOE.txt §3.2.5, §3.5 status 9",
        mfs_255
    ),
    case!(
        "hello.max-frame-size.missing",
        "handshake",
        "SPOE.txt §3.2.4, §3.5 status 6",
        mfs_missing
    ),
    case!(
        "hello.max-frame-size.wrong-type",
        "handshake",
        "SPOE.txt §3.2.4 (UINT32)",
        mfs_wrong_type
    ),
    case!(
        "hello.capabilities.missing",
        "handshake",
        "SPOE.txt §3.2.4, §3.5 status 7",
        caps_missing
    ),
    case!(
        "hello.capabilities.empty",
        "handshake",
        "SPOE.txt §3.2.1; HAProxy health checks",
        caps_empty
    ),
    case!(
        "hello.capabilities.unknown",
        "handshake",
        "SPOE.txt §3.2.1 (unknown names ignored)",
        caps_unknown
    ),
    case!(
        "hello.capabilities.spacing",
        "handshake",
        "SPOE.txt §3.2.1",
        caps_spacing
    ),
    case!(
        "hello.healthcheck.close",
        "handshake",
        "SPOE.txt §3.2.4 healthcheck; option spop-check",
        healthcheck_close
    ),
    case!(
        "hello.healthcheck.reset",
        "handshake",
        "HAProxy resets checks after the AGENT-HELLO",
        healthcheck_reset
    ),
    case!(
        "frame.agent-hello.one-read",
        "framing",
        "HAProxy 3.2 resets split AGENT-HELLOs (issue #3478)",
        hello_one_read
    ),
    case!(
        "frame.ack.one-read",
        "framing",
        "one frame per write",
        acks_one_read
    ),
    case!(
        "frame.too-big",
        "framing",
        "SPOE.txt §3.2.5, §3.5 status 3",
        too_big
    ),
    case!(
        "frame.at-max-frame-size",
        "framing",
        "SPOE.txt §3.2.5 (the agreed size holds for all frames)",
        at_max_size
    ),
    case!(
        "frame.notify-before-hello",
        "framing",
        "SPOE.txt §3.2.3",
        notify_before_hello
    ),
    case!(
        "frame.agent-hello-to-agent",
        "framing",
        "SPOE.txt §3.2.2",
        agent_hello_to_agent
    ),
    case!(
        "frame.agent-disconnect-to-agent",
        "framing",
        "SPOE.txt §3.2.2",
        agent_disconnect_to_agent
    ),
    case!(
        "frame.ack-to-agent",
        "framing",
        "SPOE.txt §3.2.2",
        ack_to_agent
    ),
    case!(
        "frame.unknown-type",
        "framing",
        "SPOE.txt §3.2.2",
        unknown_type
    ),
    case!(
        "frame.hello-twice",
        "framing",
        "SPOE.txt §3.2.3",
        hello_twice
    ),
    case!(
        "frame.unset-unexpected",
        "framing",
        "SPOE.txt §3.2.3, §3.5 status 12",
        unset_unexpected
    ),
    case!("frame.length-zero", "framing", "SPOE.txt §3.2", length_zero),
    case!("frame.bad-varint", "framing", "SPOE.txt §3.1", bad_metadata),
    case!(
        "notify.ids.varint-edges",
        "notify",
        "SPOE.txt §3.1 varint, §3.2.7",
        ids_edges
    ),
    case!("notify.int32", "notify", "SPOE.txt §3.1", int32),
    case!("notify.uint32", "notify", "SPOE.txt §3.1", uint32),
    case!("notify.int64", "notify", "SPOE.txt §3.1", int64),
    case!("notify.uint64", "notify", "SPOE.txt §3.1", uint64),
    case!("notify.string-binary", "notify", "SPOE.txt §3.1", strings),
    case!("notify.ipv4-ipv6", "notify", "SPOE.txt §3.1", ips),
    case!("notify.null-bool", "notify", "SPOE.txt §3.1", null_bool),
    case!(
        "notify.many-messages",
        "notify",
        "SPOE.txt §3.2.6 (LIST-OF-MESSAGES)",
        many_messages
    ),
    case!(
        "notify.user-message",
        "notify",
        "SPOE.txt §3.2.6, §3.2.7",
        user_message
    ),
    case!(
        "notify.unknown-data-type",
        "notify",
        "SPOE.txt §3.1, §3.5 status 4",
        unknown_data_type
    ),
    case!(
        "notify.truncated",
        "notify",
        "SPOE.txt §3.2.6, §3.5 status 4",
        truncated
    ),
    case!(
        "pipelining.20-in-flight",
        "pipelining",
        "SPOE.txt §3.2.1; HAProxy 3.1+ keeps ~20 in flight",
        pipe_20
    ),
    case!(
        "pipelining.past-limit",
        "pipelining",
        "SPOE.txt §3.5 status 13",
        pipe_past_limit
    ),
    case!(
        "fragmentation.announced",
        "pipelining",
        "SPOE.txt §3.2.1, §3.2.3; HAProxy 2.x/3.0",
        frag_announced
    ),
    case!(
        "fragmentation.not-announced",
        "pipelining",
        "SPOE.txt §3.5 status 10",
        frag_not_announced
    ),
    case!(
        "fragmentation.abort",
        "pipelining",
        "SPOE.txt §3.2.3 (ABORT flag)",
        frag_abort
    ),
    case!(
        "fragmentation.interlaced",
        "pipelining",
        "SPOE.txt §3.2.3, §3.5 status 11",
        frag_interlaced
    ),
    case!(
        "resilience.haproxy-disconnect",
        "resilience",
        "SPOE.txt §3.2.8, §3.2.9",
        haproxy_disconnect
    ),
    case!(
        "resilience.idle",
        "resilience",
        "SPOE.txt §3.5 (timeout idle)",
        idle
    ),
    case!(
        "resilience.slow-reader",
        "resilience",
        "HAProxy stops reading when its buffers fill",
        slow_reader
    ),
    case!(
        "resilience.reload-burst",
        "resilience",
        "HAProxy reload: 100 new connections at once",
        reload_burst
    ),
    case!(
        "resilience.still-alive",
        "resilience",
        "the agent survived the suite",
        still_alive
    ),
    case!(
        "timing.depth-1",
        "timing",
        "ACK latency, 1 in flight",
        latency_1
    ),
    case!(
        "timing.depth-4",
        "timing",
        "ACK latency, 4 in flight",
        latency_4
    ),
    case!(
        "timing.depth-20",
        "timing",
        "ACK latency, 20 in flight (HAProxy 3.1+)",
        latency_20
    ),
];
