//! spop-bench: a load generator that speaks HAProxy's side of SPOP.
//!
//! It opens N connections to an agent, says HELLO on each, then keeps
//! `--depth` NOTIFY frames in flight per connection (pipelining), made from a
//! captured HAProxy frame, for `--duration` seconds. It prints ACKs per second
//! and the latency percentiles of NOTIFY → ACK. It runs on one thread, so that
//! pinned to one core (`taskset -c 1`) it leaves the other to the agent.
//!
//! `cargo run --release -p spop-benches --bin spop-bench -- --addr 127.0.0.1:12345 -c 10 -d 8 -t 10`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures::{FutureExt, SinkExt, StreamExt};
use haproxy_spop::runtime::Client;
use haproxy_spop::{Capabilities, Frame, FrameBody, HaproxyHello};
use tokio::net::TcpStream;

/// Load an SPOP agent the way HAProxy does and measure it.
#[derive(Debug, Parser)]
#[command(name = "spop-bench", version)]
struct Args {
    /// The agent's address.
    #[arg(long, default_value = "127.0.0.1:12345")]
    addr: String,
    /// Connections.
    #[arg(short = 'c', long, default_value_t = 10)]
    connections: usize,
    /// NOTIFY frames in flight per connection.
    #[arg(short = 'd', long, default_value_t = 4)]
    depth: usize,
    /// Seconds of measurement (after one second of warm-up).
    #[arg(short = 't', long, default_value_t = 10)]
    duration: u64,
    /// A captured frame file (4-byte LENGTH included) whose NOTIFY is sent
    /// (default: the captured typed NOTIFY, whose `ip` argument the example
    /// agents read).
    #[arg(long)]
    frame: Option<PathBuf>,
    /// Rename the frame's messages to this (the example agents answer
    /// `check-client-ip`); an empty name keeps the captured names.
    #[arg(long, default_value = "check-client-ip")]
    message: String,
    /// Frame size proposed in the HELLO.
    #[arg(long, default_value_t = 16380)]
    max_frame_size: u32,
}

fn default_frame() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../spop/tests/vectors/haproxy-3.2.26/typed-01-notify.bin"
    ))
}

fn load_notify(path: &PathBuf, rename: &str) -> Result<haproxy_spop::Notify, String> {
    let raw = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let raw = Bytes::from(raw);
    let payload = raw
        .get(4..)
        .map(|_| raw.slice(4..))
        .ok_or("frame file too short")?;
    let FrameBody::Notify(notify) = Frame::decode(payload).map_err(|e| e.to_string())?.body else {
        return Err("not a complete NOTIFY frame".into());
    };
    if rename.is_empty() {
        return Ok(notify);
    }
    let mut builder = haproxy_spop::Notify::builder();
    for msg in notify.messages() {
        builder = builder.message(rename);
        for (name, value) in msg.args() {
            builder = builder.arg(name, value);
        }
    }
    builder.build().map_err(|e| e.to_string())
}

struct ConnResult {
    latencies_us: Vec<u32>,
    acks: u64,
    errors: u64,
}

async fn run_connection(
    args: &Args,
    notify: haproxy_spop::Notify,
    warmup_end: Instant,
    end: Instant,
) -> Result<ConnResult, String> {
    let hello = HaproxyHello::new(args.max_frame_size, Capabilities::PIPELINING);
    let client = Client::connect(args.addr.as_str(), hello)
        .await
        .map_err(|e| e.to_string())?;
    let mut framed = client.into_framed();
    let depth = args.depth.max(1);
    let mut sent_at = std::collections::HashMap::<u64, Instant>::with_capacity(depth * 2);
    let mut next_id: u64 = 1;
    let mut result = ConnResult {
        latencies_us: Vec::with_capacity(1 << 16),
        acks: 0,
        errors: 0,
    };
    'outer: loop {
        if Instant::now() >= end {
            break;
        }
        // Refill the window, then one write for the lot.
        while sent_at.len() < depth {
            let frame = Frame::notify(next_id, 1, notify.clone());
            SinkExt::<Frame>::feed(&mut framed, frame)
                .await
                .map_err(|e| e.to_string())?;
            sent_at.insert(next_id, Instant::now());
            next_id += 1;
        }
        SinkExt::<Frame>::flush(&mut framed)
            .await
            .map_err(|e| e.to_string())?;
        // Wait for one ACK, then take every ACK already read.
        let Ok(mut next) = tokio::time::timeout_at(end.into(), framed.next()).await else {
            break;
        };
        loop {
            let frame = match next {
                None => return Err("agent closed the connection".into()),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(frame)) => frame,
            };
            match frame.body {
                FrameBody::Ack(_) => {
                    let done = Instant::now();
                    match sent_at.remove(&frame.metadata.stream_id) {
                        Some(t0) if t0 >= warmup_end => {
                            result.acks += 1;
                            let us = done.duration_since(t0).as_micros();
                            result
                                .latencies_us
                                .push(u32::try_from(us).unwrap_or(u32::MAX));
                        }
                        Some(_) => {}
                        None => result.errors += 1,
                    }
                }
                FrameBody::AgentDisconnect(d) => {
                    return Err(format!("agent disconnected: {}", d.status));
                }
                _ => result.errors += 1,
            }
            match framed.next().now_or_never() {
                Some(n) => next = n,
                None => continue 'outer,
            }
        }
    }
    Ok(result)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    f64::from(sorted.get(rank).copied().unwrap_or(0)) / 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let notify = match load_notify(
        args.frame.as_ref().unwrap_or(&default_frame()),
        &args.message,
    ) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("spop-bench: {e}");
            std::process::exit(2);
        }
    };
    // Check the agent answers before starting the clock.
    if let Err(e) = TcpStream::connect(args.addr.as_str()).await {
        eprintln!("spop-bench: cannot connect to {}: {e}", args.addr);
        std::process::exit(2);
    }
    let args = std::sync::Arc::new(args);
    let start = Instant::now();
    let warmup_end = start + Duration::from_secs(1);
    let end = warmup_end + Duration::from_secs(args.duration);
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let args = args.clone();
        let notify = notify.clone();
        tasks.push(tokio::spawn(async move {
            run_connection(&args, notify, warmup_end, end).await
        }));
    }
    let mut all = Vec::new();
    let (mut acks, mut errors, mut failed) = (0u64, 0u64, 0usize);
    for t in tasks {
        match t.await {
            Ok(Ok(r)) => {
                acks += r.acks;
                errors += r.errors;
                all.extend(r.latencies_us);
            }
            Ok(Err(e)) => {
                failed += 1;
                eprintln!("connection failed: {e}");
            }
            Err(e) => {
                failed += 1;
                eprintln!("connection task failed: {e}");
            }
        }
    }
    all.sort_unstable();
    let secs = args.duration as f64;
    println!(
        "connections={} depth={} duration={}s acks={} acks/s={:.0} p50={:.3}ms p99={:.3}ms p999={:.3}ms errors={} failed_connections={}",
        args.connections,
        args.depth,
        args.duration,
        acks,
        acks as f64 / secs,
        percentile(&all, 50.0),
        percentile(&all, 99.0),
        percentile(&all, 99.9),
        errors,
        failed
    );
    if failed > 0 || acks == 0 {
        std::process::exit(1);
    }
}
