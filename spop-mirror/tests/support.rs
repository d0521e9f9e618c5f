//! Shared test pieces: a recording HTTP target, spop-mirror in-process, the
//! example HAProxy config on free ports, metrics scraping.
#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

#[path = "../../spop/tests/support/haproxy.rs"]
pub mod haproxy;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

pub use haproxy::{free_port, http_request, HaProxy, RawResponse, Version};

/// One request as the target saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The URI's authority (HTTP/2's `:authority`), if any.
    pub authority: Option<String>,
    pub version: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// When the target had read it.
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
}

/// An HTTP/1.1 server on 127.0.0.1 that records every request, answering
/// after `delay` with `status`.
pub struct Target {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Target {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Target {
    pub async fn start(delay: Duration, status: u16) -> Self {
        Self::start_at(
            "127.0.0.1:0".parse().unwrap(),
            delay,
            status,
            Arc::default(),
        )
        .await
    }

    /// Stops listening and closes every connection (the target vanishes).
    pub fn vanish(&self) {
        self.task.abort();
    }

    /// A target at `addr` (port 0: any) recording into `seen`. Dropping it
    /// (or [`Target::vanish`]) closes its listener and its connections.
    pub async fn start_at(
        addr: SocketAddr,
        delay: Duration,
        status: u16,
        seen: Arc<Mutex<Vec<Recorded>>>,
    ) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(addr).unwrap();
        let listener = socket.listen(1024).unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                // Connections die with the listener's task.
                let mut conns = tokio::task::JoinSet::new();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    while conns.try_join_next().is_some() {}
                    let seen = seen.clone();
                    conns.spawn(async move {
                        let svc = service_fn(move |req: http::Request<Incoming>| {
                            let seen = seen.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                seen.lock().unwrap().push(Recorded {
                                    method: parts.method.to_string(),
                                    path: parts
                                        .uri
                                        .path_and_query()
                                        .map(|p| p.as_str().to_owned())
                                        .unwrap_or_default(),
                                    authority: parts.uri.authority().map(ToString::to_string),
                                    version: format!("{:?}", parts.version),
                                    headers: parts
                                        .headers
                                        .iter()
                                        .map(|(n, v)| {
                                            (n.as_str().to_owned(), v.as_bytes().to_vec())
                                        })
                                        .collect(),
                                    body: body.to_vec(),
                                    at: Instant::now(),
                                });
                                tokio::time::sleep(delay).await;
                                Ok::<_, Infallible>(
                                    http::Response::builder()
                                        .status(status)
                                        .body(Full::new(Bytes::from_static(b"shadow")))
                                        .unwrap(),
                                )
                            }
                        });
                        // HTTP/1.1, or h2c with prior knowledge.
                        let _ = hyper_util::server::conn::auto::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                    });
                }
            }
        });
        Self { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Waits until `n` requests arrived (10 s at most), then returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Recorded> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.seen.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "target got {} of {n} requests: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// spop-mirror running in this process.
pub struct Mirror {
    pub spop: SocketAddr,
    pub metrics: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Mirror {
    pub async fn start(args: &[&str]) -> Self {
        let mut all = vec![
            "spop-mirror",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--log-level",
            "warn",
        ];
        all.extend_from_slice(args);
        let cfg = spop_mirror::config::Config::load(all).unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(spop_mirror::server::run(
            cfg,
            async move {
                let _ = stop_rx.await;
            },
            Some(ready_tx),
        ));
        let bound = ready_rx.await.expect("spop-mirror started");
        Self {
            spop: bound.spop.unwrap(),
            metrics: bound.metrics.unwrap(),
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("stopped in time")
                .unwrap()
                .unwrap();
        }
    }

    /// The value of one metric line (`name{labels}` exactly as rendered).
    pub async fn metric(&self, series: &str) -> f64 {
        scrape(self.metrics.port(), series).await
    }
}

/// The text of `/metrics` on 127.0.0.1:`port`.
pub async fn metrics_text(port: u16) -> String {
    tokio::task::spawn_blocking(move || {
        String::from_utf8(
            http_request(
                port,
                b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
            )
            .body,
        )
        .unwrap()
    })
    .await
    .unwrap()
}

/// Reads `/metrics` on 127.0.0.1:`port` and returns the value of one series
/// (`name{labels}` exactly as rendered).
pub async fn scrape(port: u16, series: &str) -> f64 {
    let text = metrics_text(port).await;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

/// The example HAProxy set-up with its ports moved: www, the application
/// (a server of the test's), shadow, agent.
pub fn haproxy_config(
    www: u16,
    app: u16,
    shadow: u16,
    agent: SocketAddr,
    bufsize: Option<u32>,
) -> (String, String) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/haproxy");
    let mut cfg = std::fs::read_to_string(format!("{dir}/mirror.cfg")).unwrap();
    let spoe = std::fs::read_to_string(format!("{dir}/mirror-spoe.conf")).unwrap();
    // The application is a server of the test's (it reads whole bodies, as
    // real applications do; HAProxy's `http-request return` answers before
    // a large body has arrived and then aborts it): drop its stand-in.
    let start = cfg.find("# Production:").unwrap();
    let end = cfg.find("\nbackend app\n").unwrap() + 1;
    cfg.replace_range(start..end, "");
    cfg = cfg
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{www}"))
        .replace("127.0.0.1:8090", &format!("127.0.0.1:{app}"))
        .replace("127.0.0.1:8091", &format!("127.0.0.1:{shadow}"))
        .replace("127.0.0.1:12345", &agent.to_string())
        .replace("examples/haproxy/mirror-spoe.conf", "{SPOE_CONF}");
    if let Some(size) = bufsize {
        cfg = cfg.replace("tune.bufsize 65536", &format!("tune.bufsize {size}"));
    }
    (cfg, spoe)
}

/// Sends `n` requests (`request(i)`, i from 0) through HAProxy on `www`,
/// `clients` at a time; each must be answered `status`.
pub async fn load(www: u16, n: usize, clients: usize, status: u16, request: fn(usize) -> Vec<u8>) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let resp = send(www, request(i)).await;
                assert_eq!(resp.status, status, "request {i}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Plays HAProxy flooding an agent: sends `total` NOTIFYs on `client`, the
/// k-th (from 0) `notify(k)` as stream `first + k + 1`, with at most 64
/// unanswered at a time, and checks that each answer is an ACK (within 10 s
/// each, and the whole flood `within`, if given).
pub async fn flood(
    client: &mut haproxy_spop::runtime::Client<tokio::net::TcpStream>,
    first: u64,
    total: u64,
    within: Option<Duration>,
    mut notify: impl FnMut(u64) -> haproxy_spop::Notify,
) {
    let started = Instant::now();
    let (mut sent, mut acked) = (0u64, 0u64);
    while acked < total {
        while sent < total && sent - acked < 64 {
            let n = notify(sent);
            sent += 1;
            client
                .feed(haproxy_spop::Frame::notify(first + sent, 1, n))
                .await
                .unwrap();
        }
        client.flush().await.unwrap();
        let f = tokio::time::timeout(Duration::from_secs(10), client.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(matches!(f.body, haproxy_spop::FrameBody::Ack(_)), "{f:?}");
        acked += 1;
        if let Some(within) = within {
            assert!(started.elapsed() < within, "flood took too long");
        }
    }
}

/// Sends raw bytes to HAProxy off the async runtime.
pub async fn send(port: u16, raw: Vec<u8>) -> RawResponse {
    tokio::task::spawn_blocking(move || http_request(port, &raw))
        .await
        .unwrap()
}

/// A temporary directory, removed on drop.
pub struct Dir(pub std::path::PathBuf);

impl Dir {
    pub fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!(
            "spop-mirror-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
    pub fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let p = self.path(name);
        // Write then rename, so that a watcher never reads half a file.
        let tmp = self.path(&format!("{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
