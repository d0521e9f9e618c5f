//! An agent that dies must not stall production. The spop-mirror binary runs
//! as a child process behind real HAProxy with the example config
//! (`examples/haproxy/mirror.cfg` and `mirror-spoe.conf`, ports moved), in
//! front of a recording application and a recording shadow target. 16
//! keep-alive clients written here send GETs for 7.5 s, each at most 50 a
//! second and never two at once (closed loop); the agent is SIGKILLed at
//! 2.5 s and started again on the same port at 4.5 s.
//!
//! Asserted, per HAProxy line:
//! - no second from the kill to the end (any four 250 ms intervals in a row,
//!   from the first whole one after the kill) completes fewer than half the
//!   requests per second of the time between 1 s (after the warm-up) and the
//!   kill, and that rate is at least half the offered load. The offered load (800 requests/s) is below what the debug build
//!   serves on a busy shared machine, so the rate falls only when requests
//!   wait; at full load, other processes' CPU use made even 500 ms intervals
//!   dip below half with no stall, and fast requests hid slow ones;
//! - at most two requests per client take 80 ms or more after the kill (the
//!   SPOE `timeout processing` is 100 ms): those in flight at the kill, and
//!   HAProxy 3.0's rare event queued for a connection that never comes (about
//!   1 in 100 before `retries 0`, still seen at times since); the old
//!   settings make hundreds wait;
//! - no request fails;
//! - the shadow target receives a request sent after the restart within 2 s
//!   of it.
//!
//! With the old settings (`check inter 2s` alone, no `nbsrv` condition) the
//! rate fell to 128 of ~790 requests/s for the whole 2 s the agent was away,
//! on 2.6 and 3.4 (every request waited 100 ms: 320 slow answers); with the
//! server settings but no `nbsrv` condition on the SPOE event, HAProxy 2.6
//! still made about 1 request in 6 wait (192 slow answers, 456 requests/s).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{free_port, haproxy_config, HaProxy, Target, Version};

/// Client connections (like `wrk -c16`).
const CLIENTS: usize = 16;
/// Requests per second each client sends at most: 16 x 50 = 800 requests/s
/// offered, below what the debug build serves even on a busy machine (1 700
/// to 8 000 requests/s seen), so that the rate measures stalls, not the CPU
/// other processes take. A stalled request holds its client: with every
/// request waiting the 100 ms processing timeout, 16 clients make at most
/// 160 requests/s.
const PER_CLIENT: u32 = 50;
/// The counting interval.
const INTERVAL: Duration = Duration::from_millis(250);
/// Not counted: connections and SPOP connections being set up.
const WARM_UP: Duration = Duration::from_secs(1);
/// SIGKILL at this point of the run...
const KILL_AT: Duration = Duration::from_millis(2500);
/// ... start the agent again on the same port here...
const RESTART_AT: Duration = Duration::from_millis(4500);
/// ... and stop the load here.
const END_AT: Duration = Duration::from_millis(7500);
/// A request this slow waited for the agent: the SPOE `timeout processing`
/// of mirror-spoe.conf is 100 ms, HAProxy's own work takes a few ms.
const WAITED: Duration = Duration::from_millis(80);
/// Mirroring must resume within this time after the restart.
const RESUME_WITHIN: Duration = Duration::from_secs(2);

/// One at a time: each test measures throughput on a shared machine, and
/// another one's load starting or stopping would show as a dip or a rise.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The spop-mirror binary, SIGKILLed on drop.
struct Agent(Child);

impl Agent {
    fn start(spop: u16, target: &str) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_spop-mirror"))
            .args([
                "--listen",
                &format!("127.0.0.1:{spop}"),
                "--target",
                target,
                "--threads",
                "1",
                "--log-level",
                "error",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start spop-mirror");
        let mut agent = Self(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", spop)).is_err() {
            if let Some(status) = agent.0.try_wait().unwrap() {
                panic!("spop-mirror exited ({status}) before listening on {spop}");
            }
            assert!(Instant::now() < deadline, "spop-mirror did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        agent
    }

    /// SIGKILL: no AGENT-DISCONNECT, no drain; the kernel resets the
    /// connections.
    fn kill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one client saw: (completion time since the start, latency) per
/// request, and the failures.
#[derive(Default)]
struct ClientLog {
    done: Vec<(Duration, Duration)>,
    not_200: u64,
    io_errors: u64,
}

/// Reads one response (status line, headers, Content-Length body) from
/// `stream`, keeping bytes that follow in `buf`. Returns the status.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let len: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.drain(..head_end + len);
    Ok(status)
}

/// One closed-loop keep-alive client until `end`: a GET every
/// 1/`PER_CLIENT` s, or as soon as the last answer arrived when that took
/// longer (never two at once, no catching up). Client `i` of `CLIENTS` starts
/// `i / CLIENTS` of a period late, so that the load is even. Request paths
/// are `/r{seq}` with `seq` from the shared counter, so that the target's
/// records tell when a request was sent.
async fn client(
    www: u16,
    i: usize,
    start: Instant,
    end: Instant,
    seq: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> ClientLog {
    let mut log = ClientLog::default();
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::new();
    let period = Duration::from_secs(1) / PER_CLIENT;
    tokio::time::sleep(period * i as u32 / CLIENTS as u32).await;
    let mut pace = tokio::time::interval(period);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < end {
        pace.tick().await;
        let stream = match conn.as_mut() {
            Some(s) => s,
            None => match TcpStream::connect(("127.0.0.1", www)).await {
                Ok(s) => {
                    s.set_nodelay(true).ok();
                    buf.clear();
                    conn.insert(s)
                }
                Err(_) => {
                    log.io_errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let n = seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let req = format!("GET /r{n} HTTP/1.1\r\nHost: load.test\r\n\r\n");
        let t0 = Instant::now();
        let res = match stream.write_all(req.as_bytes()).await {
            Ok(()) => read_response(stream, &mut buf).await,
            Err(e) => Err(e),
        };
        match res {
            Ok(status) => {
                let now = Instant::now();
                log.done.push((now - start, now - t0));
                if status != 200 {
                    log.not_200 += 1;
                }
            }
            Err(_) => {
                log.io_errors += 1;
                conn = None;
            }
        }
    }
    log
}

/// The sequence number in a recorded `/r{seq}` path.
fn seq_of(path: &str) -> Option<u64> {
    path.strip_prefix("/r")?.parse().ok()
}

fn p99(mut v: Vec<Duration>) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

async fn agent_killed_under_load(version: Version) {
    let _one = ONE_AT_A_TIME.lock().await;
    let shadow = Target::start(Duration::ZERO, 204).await;
    let app = Target::start(Duration::ZERO, 200).await;
    let spop = free_port();
    let shadow_url = shadow.url();
    let mut agent = Agent::start(spop, &shadow_url);
    // The config's own shadow frontend stays unused: the agent's target is `shadow`.
    let (www, haproxy_shadow) = (free_port(), free_port());
    let agent_addr: SocketAddr = ([127, 0, 0, 1], spop).into();
    let (cfg, spoe) = haproxy_config(www, app.addr.port(), haproxy_shadow, agent_addr, None);
    let haproxy = tokio::task::spawn_blocking(move || HaProxy::start(version, &cfg, Some(&spoe)))
        .await
        .unwrap();
    // Mirroring works before the load starts.
    support::send(
        www,
        b"GET /before HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
    )
    .await;
    shadow.wait_for(1).await;

    let seq = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let end = start + END_AT;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(client(www, i, start, end, seq.clone())))
        .collect();

    tokio::time::sleep_until((start + KILL_AT).into()).await;
    let killed_at = start.elapsed();
    tokio::task::block_in_place(|| agent.kill());
    tokio::time::sleep_until((start + RESTART_AT).into()).await;
    agent = tokio::task::block_in_place(|| Agent::start(spop, &shadow_url));
    let restarted = Instant::now();
    let restarted_at = restarted - start;
    let first_after = seq.load(std::sync::atomic::Ordering::Relaxed);
    // Mirroring resumes: the target records a request sent after the restart.
    let mut scanned = 0;
    let resumed = loop {
        {
            let seen = shadow.seen.lock().unwrap();
            if seen[scanned..]
                .iter()
                .any(|r| seq_of(&r.path).is_some_and(|n| n >= first_after))
            {
                break Some(restarted.elapsed());
            }
            scanned = seen.len();
        }
        if Instant::now() >= end {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    let mut logs = Vec::new();
    for c in clients {
        logs.push(c.await.unwrap());
    }
    drop(agent);
    let not_200: u64 = logs.iter().map(|l| l.not_200).sum();
    let io_errors: u64 = logs.iter().map(|l| l.io_errors).sum();
    let done: Vec<(Duration, Duration)> = logs.into_iter().flat_map(|l| l.done).collect();

    // Requests completed per interval, from the start.
    let slots = (END_AT.as_nanos() / INTERVAL.as_nanos()) as usize;
    let mut per = vec![0u64; slots];
    for (at, _) in &done {
        let i = (at.as_nanos() / INTERVAL.as_nanos()) as usize;
        if i < slots {
            per[i] += 1;
        }
    }
    let slot = |d: Duration| (d.as_nanos() / INTERVAL.as_nanos()) as usize;
    let before = &per[slot(WARM_UP)..slot(killed_at)];
    let mean_before = before.iter().sum::<u64>() as f64 / before.len() as f64;
    // From the first whole interval after the kill: the requests in flight
    // at the kill may wait once, up to the processing timeout (HAProxy 2.6
    // makes some wait; with 16 clients that alone can take half of a 250 ms
    // interval), and the bound on slow answers below covers them.
    let after = &per[slot(killed_at) + 1..];
    // The issue's measure: no second (any four intervals in a row) below half
    // the rate before the kill. A single 250 ms interval also dips when this
    // shared machine stalls for a moment, with no request waiting.
    let per_second = (Duration::from_secs(1).as_nanos() / INTERVAL.as_nanos()) as usize;
    let worst_after = after
        .windows(per_second)
        .map(|w| w.iter().sum::<u64>())
        .min()
        .unwrap_or(0) as f64
        / per_second as f64;
    let lat = |from: Duration, to: Duration| {
        p99(done
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, l)| *l)
            .collect())
    };
    // Requests that waited for the dead agent. The ones in flight at the kill
    // (one per client at most) may; later ones must not.
    let waited = done
        .iter()
        .filter(|(at, l)| *at >= killed_at && *l >= WAITED)
        .count();
    let rate = |n: f64| n / INTERVAL.as_secs_f64();
    let report = format!(
        "HAProxy {}: per {} ms: {per:?}\n\
         kill at {killed_at:.2?}, restart at {restarted_at:.2?}; \
         before the kill {:.0} req/s, p99 {:.1?}; \
         worst second after it {:.0} req/s; \
         p99 kill..restart {:.1?}, restart..end {:.1?}; \
         answers after the kill that took {WAITED:?} or more: {waited}; \
         mirroring resumed after {resumed:.2?}; not 200: {not_200}, I/O errors: {io_errors}",
        version.line(),
        INTERVAL.as_millis(),
        rate(mean_before),
        lat(WARM_UP, killed_at),
        rate(worst_after),
        lat(killed_at, restarted_at),
        lat(restarted_at, END_AT),
    );
    // HAProxy's view of the agent (its log also has a line per SPOE event).
    let log = haproxy.log();
    let states: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("Server mirroragents/agent1 is"))
        .collect();
    let report = format!("{report}\n{}", states.join("\n"));
    eprintln!("{report}");
    // A baseline well below the offered load means the machine was too busy
    // for the rate to mean anything.
    let offered = f64::from(PER_CLIENT) * CLIENTS as f64 * INTERVAL.as_secs_f64();
    assert!(
        mean_before >= offered / 2.0,
        "too busy to judge: {offered} requests offered per interval:\n{report}"
    );
    assert!(
        worst_after >= mean_before / 2.0,
        "production stalled after the agent was killed:\n{report}"
    );
    assert!(
        waited <= 2 * CLIENTS,
        "requests waited for the dead agent:\n{report}"
    );
    assert_eq!((not_200, io_errors), (0, 0), "{report}");
    let resumed = resumed.unwrap_or_else(|| panic!("mirroring never resumed:\n{report}"));
    assert!(
        resumed <= RESUME_WITHIN,
        "mirroring resumed only after {resumed:?}:\n{report}"
    );
}

per_version!(async agent_killed_under_load, agent_killed_under_load);
