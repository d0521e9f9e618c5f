//! Comparison wiring without HAProxy: spop-mirror in-process, driven over
//! SPOP by the library's client (playing HAProxy), with local HTTP targets.
//! The ACK of a request chosen for comparison sets the transaction
//! variable; production's answer, sent in a compare message, meets the
//! candidate's and the baseline's; the differences reach the metrics and the
//! NDJSON log, and the noise is told apart.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use haproxy_spop::runtime::Client;
use haproxy_spop::{
    Action, Capabilities, FrameBody, HaproxyHello, Headers, Notify, TypedData, VarScope,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::Mirror;

/// An HTTP/1.1 server answering every request with `status`, `headers`
/// and `body`; counts the requests.
struct Answering {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Answering {
    async fn start(
        status: u16,
        headers: &[(&'static str, &'static str)],
        body: &'static str,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let headers: Vec<(&'static str, &'static str)> = headers.to_vec();
        let task = tokio::spawn({
            let hits = Arc::clone(&hits);
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (hits, headers) = (Arc::clone(&hits), headers.clone());
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: http::Request<Incoming>| {
                            let (hits, headers) = (Arc::clone(&hits), headers.clone());
                            async move {
                                let _ = req.into_body().collect().await;
                                hits.fetch_add(1, Ordering::SeqCst);
                                let mut b = http::Response::builder().status(status);
                                for (n, v) in headers {
                                    b = b.header(n, v);
                                }
                                Ok::<_, Infallible>(
                                    b.body(Full::new(Bytes::from_static(body.as_bytes())))
                                        .unwrap(),
                                )
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            }
        });
        Self { addr, hits, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.hits.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "{} requests of {n}",
                self.hits.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn mirror_message(id: Option<&str>, path: &str) -> Notify {
    let mut b = Notify::builder()
        .message("mirror")
        .arg("arg_method", "GET")
        .arg("arg_path", path.to_owned())
        .arg("arg_ver", "1.1")
        .arg("arg_hdrs", Headers::encode([("host", "shop.test")]))
        .arg("arg_body", Bytes::new());
    if let Some(id) = id {
        b = b.arg("id", id.to_owned());
    }
    b.build().unwrap()
}

fn compare_message(id: &str, status: i64, headers: &[(&str, &str)], body: &str) -> Notify {
    Notify::builder()
        .message("compare")
        .arg("id", id.to_owned())
        .arg("status", status)
        .arg("hdrs", Headers::encode(headers.iter().copied()))
        .arg("body", Bytes::from(body.to_owned()))
        .build()
        .unwrap()
}

async fn connect(addr: SocketAddr) -> Client<tokio::net::TcpStream> {
    Client::connect(addr, HaproxyHello::new(16380, Capabilities::PIPELINING))
        .await
        .unwrap()
}

/// Sends one NOTIFY and returns its ACK's actions.
async fn notify(client: &mut Client<tokio::net::TcpStream>, stream: u64, n: Notify) -> Vec<Action> {
    client.notify(stream, 1, n).await.unwrap();
    let f = tokio::time::timeout(Duration::from_secs(5), client.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match f.body {
        FrameBody::Ack(ack) => ack.actions,
        other => panic!("{other:?}"),
    }
}

fn sets_compare(actions: &[Action], var: &str, instance: i64) -> bool {
    actions.iter().any(|a| {
        matches!(a, Action::SetVar { scope, name, value }
            if *scope == VarScope::TRANSACTION && name == var.as_bytes() && *value == TypedData::Int64(instance))
    })
}

/// Polls a metric until it has `want` (5 s at most).
async fn wait_metric(m: &Mirror, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = m.metric(series).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{series} = {got}, want {want}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

const PRODUCTION_BODY: &str = r#"{"a":1,"b":"same","ts":100}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compared_request_meets_production_and_reports_differences() {
    meets_production(0).await;
}

/// The same with every target pipelined (`pipeline = 4`): spop-mirror's
/// own HTTP/1.1 path keeps the compared answers too.
#[tokio::test]
async fn pipelined_compared_request_meets_production() {
    meets_production(4).await;
}

async fn meets_production(pipeline: usize) {
    let candidate = Answering::start(
        200,
        &[
            ("content-type", "application/json"),
            ("x-version", "2"),
            ("date", "later"),
        ],
        r#"{"a":2,"b":"same","ts":200}"#,
    )
    .await;
    let baseline = Answering::start(
        200,
        &[("content-type", "application/json"), ("x-version", "1")],
        r#"{"a":1,"b":"same","ts":300}"#,
    )
    .await;
    let plain = Answering::start(500, &[], "plain").await;
    let dir = std::env::temp_dir().join(format!(
        "spop-mirror-cmp-agent-{}-{pipeline}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("diffs.ndjson");
    let _ = std::fs::remove_file(&log);
    let cfg = dir.join("m.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
compare = 100
compare_deadline = "400ms"
compare_log = "{}"
instance = 7
pipeline = {pipeline}
[[target]]
url = "{}"
name = "next"
role = "candidate"
baseline = "prod"

[[target]]
url = "{}"
name = "prod"
role = "baseline"

[[target]]
url = "{}"
name = "plain"
"#,
            log.display(),
            candidate.url(),
            baseline.url(),
            plain.url()
        ),
    )
    .unwrap();
    let mut m = Mirror::start(&["--config", cfg.to_str().unwrap()]).await;
    let mut client = connect(m.spop).await;

    // Chosen (100 %) and queued to the candidate: the ACK sets the variable.
    let actions = notify(&mut client, 1, mirror_message(Some("req-1"), "/item/1")).await;
    assert!(sets_compare(&actions, "compare", 7), "{actions:?}");
    // No id: mirrored, not compared.
    let actions = notify(&mut client, 2, mirror_message(None, "/item/2")).await;
    assert!(actions.is_empty(), "{actions:?}");
    candidate.wait_for(2).await;
    baseline.wait_for(2).await;
    plain.wait_for(2).await;
    wait_metric(&m, "spop_mirror_compare_opened_total", 1.0).await;
    wait_metric(&m, "spop_mirror_compare_open", 1.0).await;

    // Production's answer: the ACK is empty.
    let actions = notify(
        &mut client,
        3,
        compare_message(
            "req-1",
            200,
            &[
                ("Content-Type", "application/json"),
                ("x-version", "1"),
                ("date", "now"),
            ],
            PRODUCTION_BODY,
        ),
    )
    .await;
    assert!(actions.is_empty(), "{actions:?}");
    wait_metric(
        &m,
        "spop_mirror_compare_total{target=\"next\",result=\"different\"}",
        1.0,
    )
    .await;
    for (series, want) in [
        (
            "spop_mirror_compare_total{target=\"next\",result=\"equal\"}",
            0.0,
        ),
        (
            "spop_mirror_compare_differences_total{target=\"next\",field=\"json:$.a\"}",
            1.0,
        ),
        (
            "spop_mirror_compare_differences_total{target=\"next\",field=\"header:x-version\"}",
            1.0,
        ),
        (
            "spop_mirror_compare_noise_total{target=\"next\",field=\"json:$.ts\"}",
            1.0,
        ),
        (
            "spop_mirror_compare_latency_seconds_count{target=\"next\",side=\"production\"}",
            1.0,
        ),
        (
            "spop_mirror_compare_latency_seconds_count{target=\"next\",side=\"candidate\"}",
            1.0,
        ),
        (
            "spop_mirror_compare_unmatched_total{side=\"production\"}",
            0.0,
        ),
        ("spop_mirror_compare_unmatched_total{side=\"shadow\"}", 0.0),
        ("spop_mirror_compare_open", 0.0),
        ("spop_mirror_compare_bytes", 0.0),
    ] {
        assert_eq!(m.metric(series).await, want, "{series}");
    }
    // Neither the date header (ignored by default) nor $.b (equal) differ.
    for series in [
        "spop_mirror_compare_differences_total{target=\"next\",field=\"header:date\"}",
        "spop_mirror_compare_differences_total{target=\"next\",field=\"json:$.b\"}",
        "spop_mirror_compare_differences_total{target=\"next\",field=\"json:$.ts\"}",
    ] {
        assert!(!metrics_text(&m).await.contains(series), "{series}");
    }

    // The log line.
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().next() {
            break l.to_owned();
        }
        assert!(Instant::now() < deadline, "no log line");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    for want in [
        "\"id\":\"req-1\"",
        "\"candidate\":\"next\"",
        "GET /item/1",
        "json:$.a",
        "header:x-version",
    ] {
        assert!(line.contains(want), "{want} not in {line}");
    }

    // Production never answers: expired at the deadline, counted.
    let actions = notify(&mut client, 4, mirror_message(Some("req-2"), "/item/3")).await;
    assert!(sets_compare(&actions, "compare", 7), "{actions:?}");
    wait_metric(
        &m,
        "spop_mirror_compare_expired_total{missing=\"production\"}",
        1.0,
    )
    .await;
    wait_metric(&m, "spop_mirror_compare_open", 0.0).await;
    // An answer for an id never opened: unmatched.
    let actions = notify(&mut client, 5, compare_message("nobody", 200, &[], "")).await;
    assert!(actions.is_empty());
    wait_metric(
        &m,
        "spop_mirror_compare_unmatched_total{side=\"production\"}",
        1.0,
    )
    .await;
    // A bad compare message (no status): counted, still ACKed.
    let bad = Notify::builder()
        .message("compare")
        .arg("id", "x")
        .arg("hdrs", Headers::encode([("a", "b")]))
        .build()
        .unwrap();
    assert!(notify(&mut client, 6, bad).await.is_empty());
    wait_metric(
        &m,
        "spop_mirror_compare_bad_messages_total{kind=\"missing_argument\"}",
        1.0,
    )
    .await;
    m.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

async fn metrics_text(m: &Mirror) -> String {
    let port = m.metrics.port();
    tokio::task::spawn_blocking(move || {
        String::from_utf8(
            support::http_request(
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

/// A candidate answering like production: equal, nothing reported. With
/// `--compare 0`, or no candidate among the targets, the ACK stays empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_answers_and_requests_not_compared() {
    let candidate = Answering::start(
        200,
        &[
            ("content-type", "application/json"),
            ("x-version", "1"),
            ("server", "other"),
        ],
        PRODUCTION_BODY,
    )
    .await;
    let dir = std::env::temp_dir().join(format!("spop-mirror-cmp-equal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("m.toml");
    let write = |share: f64, role: &str| {
        std::fs::write(
            &cfg,
            format!(
                "compare = {share}\n[[target]]\nurl = \"{}\"\nname = \"next\"\n{role}\n",
                candidate.url()
            ),
        )
        .unwrap();
    };
    write(100.0, "role = \"candidate\"");
    let mut m = Mirror::start(&["--config", cfg.to_str().unwrap()]).await;
    let mut client = connect(m.spop).await;
    let actions = notify(&mut client, 1, mirror_message(Some("e-1"), "/same")).await;
    assert!(sets_compare(&actions, "compare", 1), "{actions:?}");
    candidate.wait_for(1).await;
    let actions = notify(
        &mut client,
        2,
        compare_message(
            "e-1",
            200,
            &[
                ("content-type", "application/json"),
                ("x-version", "1"),
                ("server", "haproxy"),
            ],
            PRODUCTION_BODY,
        ),
    )
    .await;
    assert!(actions.is_empty());
    wait_metric(
        &m,
        "spop_mirror_compare_total{target=\"next\",result=\"equal\"}",
        1.0,
    )
    .await;
    assert_eq!(
        m.metric("spop_mirror_compare_total{target=\"next\",result=\"different\"}")
            .await,
        0.0
    );
    m.stop().await;

    // 0 %: never chosen.
    write(0.0, "role = \"candidate\"");
    let mut m = Mirror::start(&["--config", cfg.to_str().unwrap()]).await;
    let mut client = connect(m.spop).await;
    for i in 0..20 {
        let actions = notify(
            &mut client,
            i + 1,
            mirror_message(Some(&format!("z-{i}")), "/z"),
        )
        .await;
        assert!(actions.is_empty(), "{actions:?}");
    }
    candidate.wait_for(21).await;
    assert_eq!(m.metric("spop_mirror_compare_opened_total").await, 0.0);
    m.stop().await;

    // 100 % but the target is a plain mirror: nothing to compare with.
    write(100.0, "");
    let mut m = Mirror::start(&["--config", cfg.to_str().unwrap()]).await;
    let mut client = connect(m.spop).await;
    let actions = notify(&mut client, 1, mirror_message(Some("p-1"), "/p")).await;
    assert!(actions.is_empty(), "{actions:?}");
    candidate.wait_for(22).await;
    assert_eq!(m.metric("spop_mirror_compare_opened_total").await, 0.0);
    m.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// A burst of compared requests (1 000, 64 in flight on one connection,
/// each followed by production's answer): every opened comparison ends
/// compared or expired, most of them compared, and the store empties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_fully_accounted_for() {
    burst(0).await;
}

/// The same burst to a pipelined candidate (`pipeline = 16`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_burst_is_fully_accounted_for() {
    burst(16).await;
}

async fn burst(pipeline: usize) {
    let candidate = Answering::start(
        200,
        &[("content-type", "application/json"), ("x-version", "1")],
        PRODUCTION_BODY,
    )
    .await;
    let dir = std::env::temp_dir().join(format!(
        "spop-mirror-cmp-burst-{}-{pipeline}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("m.toml");
    std::fs::write(
        &cfg,
        format!(
            "compare = 100\ncompare_deadline = \"1s\"\npipeline = {pipeline}\n[[target]]\nurl = \"{}\"\nname = \"next\"\nrole = \"candidate\"\n",
            candidate.url()
        ),
    )
    .unwrap();
    let mut m = Mirror::start(&["--config", cfg.to_str().unwrap()]).await;
    let mut client = connect(m.spop).await;
    let total = 1000u64;
    support::flood(&mut client, 0, 2 * total, None, |k| {
        let i = k / 2;
        if k % 2 == 0 {
            mirror_message(Some(&format!("b-{i}")), "/burst")
        } else {
            compare_message(
                &format!("b-{i}"),
                200,
                &[("content-type", "application/json"), ("x-version", "1")],
                PRODUCTION_BODY,
            )
        }
    })
    .await;
    wait_metric(&m, "spop_mirror_compare_open", 0.0).await;
    let opened = m.metric("spop_mirror_compare_opened_total").await;
    let equal = m
        .metric("spop_mirror_compare_total{target=\"next\",result=\"equal\"}")
        .await;
    let different = m
        .metric("spop_mirror_compare_total{target=\"next\",result=\"different\"}")
        .await;
    let mut expired = 0.0;
    for missing in ["production", "shadow", "both"] {
        expired += m
            .metric(&format!(
                "spop_mirror_compare_expired_total{{missing=\"{missing}\"}}"
            ))
            .await;
    }
    let evicted = m.metric("spop_mirror_compare_evicted_total").await;
    eprintln!("burst: opened {opened}, equal {equal}, expired {expired}, evicted {evicted}");
    assert!(opened > 0.0);
    // Most meet within the deadline (all of them, on a quiet machine): the
    // candidate's answers were kept and delivered.
    assert!(equal * 2.0 > opened, "{equal} of {opened} compared equal");
    assert_eq!(different, 0.0);
    assert_eq!(
        equal + expired + evicted,
        opened,
        "{equal} {expired} {evicted} {opened}"
    );
    assert_eq!(m.metric("spop_mirror_compare_bytes").await, 0.0);
    m.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}
