//! spop-mirror behind real HAProxy 2.6, 3.0, 3.2 and 3.4 (each test once per
//! line, named after it): requests sent through HAProxy
//! reach a recording target intact, HAProxy's answers never wait for the
//! mirror, and drops, filters, sampling, added headers, several targets,
//! metrics and shutdown behave.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use support::{free_port, haproxy_config, load, send, HaProxy, Mirror, Target, Version};

struct Setup {
    haproxy: HaProxy,
    mirror: Mirror,
    www: u16,
    _app: Target,
}

async fn setup(
    version: Version,
    targets: &[&Target],
    extra: &[&str],
    bufsize: Option<u32>,
) -> Setup {
    let mut args: Vec<String> = Vec::new();
    for t in targets {
        args.push("--target".into());
        args.push(t.url());
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mirror = Mirror::start(&refs).await;
    let app = Target::start(Duration::ZERO, 200).await;
    let (www, shadow) = (free_port(), free_port());
    let (cfg, spoe) = haproxy_config(www, app.addr.port(), shadow, mirror.spop, bufsize);
    let haproxy = tokio::task::spawn_blocking(move || HaProxy::start(version, &cfg, Some(&spoe)))
        .await
        .unwrap();
    Setup {
        haproxy,
        mirror,
        www,
        _app: app,
    }
}

fn req(head: &str, body: &[u8]) -> Vec<u8> {
    let mut v = head.replace('\n', "\r\n").into_bytes();
    v.extend_from_slice(body);
    v
}

/// The cases the issue names, each: (raw request, method, path, body).
fn cases() -> Vec<(Vec<u8>, &'static str, &'static str, Vec<u8>)> {
    let binary: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    vec![
        (
            req("GET /search?q=a%20b&lang=en HTTP/1.1\nHost: shop.test\nCookie: a=1; b=2\nCookie: c=3\nAccept: */*\n\n", b""),
            "GET", "/search?q=a%20b&lang=en", vec![],
        ),
        (
            req("POST /form HTTP/1.1\nHost: shop.test\nContent-Type: application/x-www-form-urlencoded\nContent-Length: 19\n\n", b"name=x&comment=y%21"),
            "POST", "/form", b"name=x&comment=y%21".to_vec(),
        ),
        (
            {
                let mut v = req("PUT /blob HTTP/1.1\nHost: shop.test\nContent-Type: application/octet-stream\nContent-Length: 3000\n\n", b"");
                v.extend_from_slice(&binary);
                v
            },
            "PUT", "/blob", binary.clone(),
        ),
        (
            req("GET /multi HTTP/1.1\nHost: shop.test\nX-Rep: one\nX-Rep: two\nX-Other: z\nX-Rep: three\n\n", b""),
            "GET", "/multi", vec![],
        ),
        (req("GET /old HTTP/1.0\nHost: shop.test\n\n", b""), "GET", "/old", vec![]),
        (
            req("POST /chunked HTTP/1.1\nHost: shop.test\nTransfer-Encoding: chunked\n\n", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "POST", "/chunked", b"hello world".to_vec(),
        ),
        (
            req("GET /odd/%00/%ff/a%2Fb/~x?k=%FF%00&e= HTTP/1.1\nHost: shop.test\n\n", b""),
            "GET", "/odd/%00/%ff/a%2Fb/~x?k=%FF%00&e=", vec![],
        ),
        (req("DELETE /item/7 HTTP/1.1\nHost: shop.test\n\n", b""), "DELETE", "/item/7", vec![]),
        (
            req("PATCH /item/7 HTTP/1.1\nHost: shop.test\nContent-Type: application/json\nContent-Length: 11\n\n", b"{\"a\":true}\n"),
            "PATCH", "/item/7", b"{\"a\":true}\n".to_vec(),
        ),
        (req("OPTIONS * HTTP/1.1\nHost: shop.test\n\n", b""), "OPTIONS", "*", vec![]),
        (
            req("GET http://shop.test/abs?x=1 HTTP/1.1\nHost: shop.test\nConnection: keep-alive, X-Hop\nX-Hop: secret\nKeep-Alive: 5\nTE: trailers\nUpgrade: h2c\n\n", b""),
            "GET", "/abs?x=1", vec![],
        ),
    ]
}

async fn requests_arrive_intact(version: Version) {
    arrive_intact(version, &[]).await;
}

/// The same, with `--pipeline` (spop-mirror's own HTTP/1.1 writer): the same
/// bytes arrive.
async fn requests_arrive_intact_pipelined(version: Version) {
    arrive_intact(version, &["--pipeline", "8"]).await;
}

async fn arrive_intact(version: Version, extra: &[&str]) {
    let target = Target::start(Duration::ZERO, 204).await;
    let s = setup(version, &[&target], extra, None).await;
    let cases = cases();
    for (raw, ..) in &cases {
        let resp = send(s.www, raw.clone()).await;
        assert_eq!(
            resp.status,
            200,
            "{}\nHAProxy log:\n{}",
            String::from_utf8_lossy(raw),
            s.haproxy.log()
        );
    }
    let got = target.wait_for(cases.len()).await;
    for (raw, method, path, body) in &cases {
        let r = got
            .iter()
            .find(|r| r.method == *method && r.path == *path)
            .unwrap_or_else(|| panic!("{method} {path} not mirrored; got {got:#?}"));
        assert_eq!(&r.body, body, "{method} {path}: body");
        let cl = r.header_str("content-length");
        if body.is_empty() {
            assert!(
                cl.is_none() || cl.as_deref() == Some("0"),
                "{method} {path}: content-length {cl:?}"
            );
        } else {
            assert_eq!(
                cl,
                Some(body.len().to_string()),
                "{method} {path}: content-length"
            );
        }
        assert!(
            r.header("transfer-encoding").is_none(),
            "{method} {path}: sent chunked"
        );
        assert_eq!(
            r.header_str("host").as_deref(),
            Some("shop.test"),
            "{method} {path}: host kept"
        );
        let head = String::from_utf8_lossy(raw);
        for hop in [
            "connection",
            "keep-alive",
            "te",
            "upgrade",
            "x-hop",
            "proxy-connection",
            "trailer",
        ] {
            assert!(
                r.header(hop).is_none(),
                "{method} {path}: hop-by-hop {hop} forwarded"
            );
        }
        // Every end-to-end header of the original arrives, in order.
        let sent: Vec<(String, String)> = head
            .split("\r\n\r\n")
            .next()
            .unwrap()
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .filter(|(n, _)| {
                ![
                    "host",
                    "content-length",
                    "connection",
                    "keep-alive",
                    "te",
                    "upgrade",
                    "x-hop",
                    "transfer-encoding",
                ]
                .contains(&n.as_str())
            })
            .collect();
        let arrived: Vec<(String, String)> = r
            .headers
            .iter()
            .filter(|(n, _)| !["host", "content-length"].contains(&n.as_str()))
            .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        let mut want = sent.clone();
        // Same-name lines stay in their order; different names keep the order
        // of first appearance (RFC 9110 §5.3: only same-name order matters).
        want.sort_by_key(|(n, _)| sent.iter().position(|(m, _)| m == n));
        // The loop marker (`--loop-header`), added last.
        want.push(("x-mirrored-by".into(), "spop-mirror".into()));
        assert_eq!(arrived, want, "{method} {path}: headers");
    }
    let multi = got.iter().find(|r| r.path == "/multi").unwrap();
    assert_eq!(multi.all("x-rep"), ["one", "two", "three"]);
    let cookie = got.iter().find(|r| r.path.starts_with("/search")).unwrap();
    assert_eq!(cookie.all("cookie"), ["a=1; b=2", "c=3"]);
    assert_eq!(
        s.mirror.metric("spop_mirror_requests_received_total").await,
        cases.len() as f64
    );
    wait_answered(&s.mirror, &target, cases.len()).await;
}

/// Waits (up to 5 s) until `n` of the target's 2xx answers are counted.
async fn wait_answered(mirror: &Mirror, target: &Target, n: usize) {
    let series = format!(
        "spop_mirror_requests_mirrored_total{{target=\"{}/\",class=\"2xx\"}}",
        target.url()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while mirror.metric(&series).await < n as f64 {
        assert!(Instant::now() < deadline, "{n} answers counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `--pipeline 4 --max-concurrency 8` (up to two connections of four in
/// flight, the second opened while the first is full) towards a target that
/// takes 1 ms per answer, under 16 concurrent clients: both windows fill and
/// the worker waits for either connection's answers (the sockets are
/// watched only then), yet every request is mirrored exactly once, with no
/// error and nothing dropped.
async fn pipelined_under_load(version: Version) {
    const N: usize = 400;
    let target = Target::start(Duration::from_millis(1), 204).await;
    let s = setup(
        version,
        &[&target],
        &["--pipeline", "4", "--max-concurrency", "8"],
        None,
    )
    .await;
    load(s.www, N, 16, 200, |i| {
        format!("GET /load/{i} HTTP/1.1\r\nHost: shop.test\r\n\r\n").into_bytes()
    })
    .await;
    let got = target.wait_for(N).await;
    let mut paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    paths.sort_unstable();
    let mut want: Vec<String> = (0..N).map(|i| format!("/load/{i}")).collect();
    want.sort_unstable();
    assert_eq!(paths, want, "each request mirrored exactly once");
    wait_answered(&s.mirror, &target, N).await;
    for kind in ["other", "timeout", "connect"] {
        let errors = format!("{{target=\"{}/\",kind=\"{kind}\"}}", target.url());
        assert_eq!(
            s.mirror
                .metric(&format!("spop_mirror_target_errors_total{errors}"))
                .await,
            0.0,
            "{kind} errors"
        );
    }
    let full = format!("{{target=\"{}/\",reason=\"queue_full\"}}", target.url());
    assert_eq!(
        s.mirror
            .metric(&format!("spop_mirror_target_dropped_total{full}"))
            .await,
        0.0
    );
}

per_version!(async requests_arrive_intact, requests_arrive_intact);
per_version!(async pipelined_under_load_mirrors_each_once, pipelined_under_load);
per_version!(
    async requests_arrive_intact_pipelined,
    requests_arrive_intact_pipelined
);

async fn truncated_body(version: Version) {
    let target = Target::start(Duration::ZERO, 204).await;
    // Default 16 KB buffers: a 100 000-byte body arrives cut.
    let s = setup(version, &[&target], &[], Some(16384)).await;
    let body = vec![b'q'; 100_000];
    let head = format!(
        "POST /big HTTP/1.1\nHost: t\nContent-Length: {}\n\n",
        body.len()
    );
    // The first big message after a cold start may be refused by HAProxy
    // before any agent has said hello; send a small one first.
    send(s.www, req("GET /warm HTTP/1.1\nHost: t\n\n", b"")).await;
    target.wait_for(1).await;
    for _ in 0..3 {
        let resp = send(s.www, req(&head, &body)).await;
        assert_eq!(resp.status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while s
        .mirror
        .metric("spop_mirror_requests_dropped_total{reason=\"truncated_body\"}")
        .await
        < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "no truncated body counted; log:\n{}",
            s.haproxy.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Never sent with a length that lies: not sent at all.
    assert!(target.seen.lock().unwrap().iter().all(|r| r.path != "/big"));

    // With --send-truncated: sent, with its true length.
    let target2 = Target::start(Duration::ZERO, 204).await;
    let s2 = setup(version, &[&target2], &["--send-truncated"], Some(16384)).await;
    send(s2.www, req("GET /warm HTTP/1.1\nHost: t\n\n", b"")).await;
    target2.wait_for(1).await;
    send(s2.www, req(&head, &body)).await;
    let got = target2.wait_for(2).await;
    let big = got
        .iter()
        .find(|r| r.path == "/big")
        .expect("truncated body sent");
    assert!(big.body.len() < 100_000 && !big.body.is_empty());
    assert!(big.body.iter().all(|&b| b == b'q'));
    assert_eq!(
        big.header_str("content-length"),
        Some(big.body.len().to_string())
    );
}

per_version!(async truncated_body_is_not_sent_with_a_false_length, truncated_body);

/// A chunked body: `size` bytes of `fill` in 4 KB chunks.
fn chunked(size: usize, fill: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let mut left = size;
    while left > 0 {
        let n = left.min(4096);
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend(std::iter::repeat_n(fill, n));
        out.extend_from_slice(b"\r\n");
        left -= n;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A chunked 100 KB POST under the default 16 KB buffers: HAProxy passes a
/// cut body and no Content-Length; `req.body_size` (in the example SPOE
/// file) tells it was cut. Skipped and counted by default, sent with its
/// true length with --send-truncated; a complete chunked body is mirrored.
async fn truncated_chunked_body(version: Version) {
    let target = Target::start(Duration::ZERO, 204).await;
    let s = setup(version, &[&target], &[], Some(16384)).await;
    let head = "POST /chunked-big HTTP/1.1\nHost: t\nTransfer-Encoding: chunked\n\n";
    send(s.www, req("GET /warm HTTP/1.1\nHost: t\n\n", b"")).await;
    target.wait_for(1).await;
    for _ in 0..3 {
        let resp = send(s.www, req(head, &chunked(100_000, b'c'))).await;
        assert_eq!(resp.status, 200);
    }
    // A complete chunked body is not taken for a cut one.
    let small = "POST /chunked-small HTTP/1.1\nHost: t\nTransfer-Encoding: chunked\n\n";
    assert_eq!(send(s.www, req(small, &chunked(5, b's'))).await.status, 200);
    let got = target.wait_for(2).await;
    let complete = got
        .iter()
        .find(|r| r.path == "/chunked-small")
        .expect("complete chunked body mirrored");
    assert_eq!(complete.body, b"sssss");
    assert_eq!(complete.header_str("content-length").as_deref(), Some("5"));
    assert_eq!(complete.header("transfer-encoding"), None);
    let dropped = s
        .mirror
        .metric("spop_mirror_requests_dropped_total{reason=\"truncated_body\"}")
        .await;
    assert!(
        dropped >= 1.0,
        "no truncated chunked body counted; log:\n{}",
        s.haproxy.log()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        target
            .seen
            .lock()
            .unwrap()
            .iter()
            .all(|r| r.path != "/chunked-big"),
        "a cut chunked body was mirrored as complete"
    );

    let target2 = Target::start(Duration::ZERO, 204).await;
    let s2 = setup(version, &[&target2], &["--send-truncated"], Some(16384)).await;
    send(s2.www, req("GET /warm HTTP/1.1\nHost: t\n\n", b"")).await;
    target2.wait_for(1).await;
    send(s2.www, req(head, &chunked(100_000, b'c'))).await;
    let got = target2.wait_for(2).await;
    let big = got
        .iter()
        .find(|r| r.path == "/chunked-big")
        .expect("truncated body sent");
    eprintln!(
        "{version:?}: a chunked 100 000-byte body arrived as {} bytes",
        big.body.len()
    );
    assert!(big.body.len() < 100_000 && !big.body.is_empty());
    assert!(big.body.iter().all(|&b| b == b'c'));
    assert_eq!(
        big.header_str("content-length"),
        Some(big.body.len().to_string())
    );
}

per_version!(async truncated_chunked_body_is_detected, truncated_chunked_body);

async fn filters_sampling_headers_and_several_targets(version: Version) {
    let t1 = Target::start(Duration::ZERO, 200).await;
    let t2 = Target::start(Duration::ZERO, 404).await;
    let s = setup(
        version,
        &[&t1, &t2],
        &[
            "--method",
            "GET",
            "--path-prefix",
            "/api/",
            "--path-regex",
            "^/api/(v1|v2)/",
            "--add-header",
            "X-Mirrored: yes",
            "--host",
            "target",
        ],
        None,
    )
    .await;
    let ok = ["/api/v1/a", "/api/v2/b?x=1"];
    let filtered = ["/api/v3/c", "/other", "/api/v1/post"];
    for p in ok.iter().chain(filtered.iter()) {
        let method = if p.ends_with("post") { "POST" } else { "GET" };
        let raw = req(
            &format!("{method} {p} HTTP/1.1\nHost: shop.test\nContent-Length: 0\n\n"),
            b"",
        );
        assert_eq!(send(s.www, raw).await.status, 200);
    }
    for t in [&t1, &t2] {
        let got = t.wait_for(2).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let got_after = t.seen.lock().unwrap().clone();
        assert_eq!(got_after.len(), 2, "only the selected requests: {got:#?}");
        for r in &got_after {
            assert!(ok.contains(&r.path.as_str()));
            assert_eq!(r.header_str("x-mirrored").as_deref(), Some("yes"));
            assert_eq!(r.header_str("host"), Some(t.addr.to_string()));
        }
    }
    assert_eq!(
        s.mirror
            .metric("spop_mirror_requests_dropped_total{reason=\"filtered\"}")
            .await,
        3.0
    );
    let class = |t: &Target, c: &str| {
        format!(
            "spop_mirror_requests_mirrored_total{{target=\"{}/\",class=\"{c}\"}}",
            t.url()
        )
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.mirror.metric(&class(&t2, "4xx")).await < 2.0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.mirror.metric(&class(&t1, "2xx")).await, 2.0);

    // Sampling: 0% mirrors nothing, 50% about half.
    let t3 = Target::start(Duration::ZERO, 204).await;
    let s0 = setup(version, &[&t3], &["--sample", "0"], None).await;
    for _ in 0..20 {
        send(s0.www, req("GET /s HTTP/1.1\nHost: t\n\n", b"")).await;
    }
    assert_eq!(
        s0.mirror
            .metric("spop_mirror_requests_dropped_total{reason=\"sampled_out\"}")
            .await,
        20.0
    );
    assert_eq!(t3.count(), 0);
    let t4 = Target::start(Duration::ZERO, 204).await;
    let s50 = setup(version, &[&t4], &["--sample", "50"], None).await;
    for _ in 0..400 {
        send(s50.www, req("GET /s HTTP/1.1\nHost: t\n\n", b"")).await;
    }
    let out = s50
        .mirror
        .metric("spop_mirror_requests_dropped_total{reason=\"sampled_out\"}")
        .await;
    // Binomial(400, 0.5): mean 200, sd 10; ±60 is six standard deviations.
    assert!((140.0..=260.0).contains(&out), "{out} of 400 sampled out");
    drop((s, s0, s50));
}

per_version!(async filters_sampling_headers_and_several_targets, filters_sampling_headers_and_several_targets);

/// A dead target and a slow one: HAProxy's answers stay fast, drops are
/// counted, memory stays bounded.
async fn dead_and_slow_targets_never_slow_haproxy(version: Version) {
    // Dead: nothing listens there.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let slow = Target::start(Duration::from_secs(3), 200).await;
    let mut args = vec![
        "--target",
        dead.as_str(),
        "--queue-size",
        "16",
        "--max-concurrency",
        "4",
        "--request-timeout",
        "5s",
    ];
    let slow_url = slow.url();
    args.extend(["--target", slow_url.as_str()]);
    let s = setup(version, &[], &args, None).await;
    let mut worst = Duration::ZERO;
    for i in 0..200 {
        let t0 = Instant::now();
        let resp = send(s.www, req(&format!("GET /r{i} HTTP/1.1\nHost: t\n\n"), b"")).await;
        worst = worst.max(t0.elapsed());
        assert_eq!(resp.status, 200);
    }
    // HAProxy answered each at once (its own processing timeout is 100 ms).
    assert!(
        worst < Duration::from_millis(500),
        "slowest answer {worst:?}"
    );
    let dead_label = format!("{dead}/");
    let connect_errors = s
        .mirror
        .metric(&format!(
            "spop_mirror_target_errors_total{{target=\"{dead_label}\",kind=\"connect\"}}"
        ))
        .await;
    assert!(connect_errors >= 1.0);
    let backoff = s
        .mirror
        .metric(&format!(
            "spop_mirror_target_dropped_total{{target=\"{dead_label}\",reason=\"target_backoff\"}}"
        ))
        .await;
    assert!(backoff > 100.0, "dead target not backed off: {backoff}");
    let full = s
        .mirror
        .metric(&format!(
            "spop_mirror_target_dropped_total{{target=\"{}/\",reason=\"queue_full\"}}",
            slow.url()
        ))
        .await;
    assert!(full > 100.0, "slow target's queue never filled: {full}");
    assert!(
        s.mirror
            .metric(&format!(
                "spop_mirror_queue_depth{{target=\"{}/\"}}",
                slow.url()
            ))
            .await
            <= 16.0
    );
}

per_version!(async dead_and_slow_targets_never_slow_haproxy, dead_and_slow_targets_never_slow_haproxy);

async fn h2c_targets(version: Version) {
    let target = Target::start(Duration::ZERO, 204).await;
    let s = setup(version, &[&target], &["--http2"], None).await;
    let body = b"k=v".to_vec();
    let raw = req(
        "POST /h2?x=1 HTTP/1.1\nHost: shop.test\nContent-Length: 3\nX-A: 1\n\n",
        &body,
    );
    assert_eq!(send(s.www, raw).await.status, 200);
    let got = target.wait_for(1).await;
    assert_eq!(got[0].version, "HTTP/2.0");
    assert_eq!(
        (got[0].method.as_str(), got[0].path.as_str()),
        ("POST", "/h2?x=1")
    );
    assert_eq!(got[0].body, body);
    assert_eq!(got[0].header_str("x-a").as_deref(), Some("1"));
    // --host (keep, by default) is honoured: the original Host is the
    // request's authority.
    assert_eq!(got[0].authority.as_deref(), Some("shop.test"));
}

per_version!(async h2c_targets, h2c_targets);

/// The target vanishes for 0.3 s (listener and connections closed) while
/// HAProxy sends bursts of 32 requests every 50 ms to a target answering in
/// 200 ms (so every worker has a request in flight and more are queued when
/// it goes), then comes back on the same port: mirrored requests reach it
/// again within 1 s of its return. (Before: the queued requests' failed
/// connections each doubled the back-off, up to 10 s.)
async fn target_outage(version: Version) {
    let seen: Arc<Mutex<Vec<support::Recorded>>> = Arc::default();
    let any = "127.0.0.1:0".parse().unwrap();
    let delay = Duration::from_millis(200);
    let target = Target::start_at(any, delay, 204, Arc::clone(&seen)).await;
    let s = setup(version, &[&target], &[], None).await;
    let stop = Arc::new(AtomicBool::new(false));
    let www = s.www;
    let traffic = tokio::spawn({
        let stop = Arc::clone(&stop);
        async move {
            let mut i = 0u64;
            // Bounded: 30 s of bursts at most.
            let end = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                let burst: Vec<_> = (0..32)
                    .map(|_| {
                        i += 1;
                        send(www, req(&format!("GET /o{i} HTTP/1.1\nHost: t\n\n"), b""))
                    })
                    .collect();
                for r in futures::future::join_all(burst).await {
                    assert_eq!(r.status, 200);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    target.wait_for(200).await;
    target.vanish();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let back = Target::start_at(target.addr, delay, 204, Arc::clone(&seen)).await;
    let back_at = Instant::now();
    let deadline = back_at + Duration::from_secs(15);
    let recovery = loop {
        let first = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.at >= back_at)
            .map(|r| r.at)
            .min();
        if let Some(at) = first {
            break at - back_at;
        }
        assert!(
            Instant::now() < deadline,
            "no mirrored request 15 s after the target came back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    let label = format!("{}/", back.url());
    let backoff = s
        .mirror
        .metric(&format!(
            "spop_mirror_target_dropped_total{{target=\"{label}\",reason=\"target_backoff\"}}"
        ))
        .await;
    eprintln!("{version:?}: mirroring resumed {recovery:?} after the target came back ({backoff} requests dropped while it was away)");
    assert!(backoff >= 1.0, "the outage was not noticed");
    // One outage, however many connections failed in it; up again.
    let outages = s
        .mirror
        .metric(&format!(
            "spop_mirror_target_outages_total{{target=\"{label}\"}}"
        ))
        .await;
    assert_eq!(outages, 1.0);
    assert_eq!(
        s.mirror
            .metric(&format!("spop_mirror_target_up{{target=\"{label}\"}}"))
            .await,
        1.0
    );
    assert!(
        recovery < Duration::from_secs(1),
        "mirroring resumed {recovery:?} after the target came back"
    );
}

per_version!(async target_outage_recovers_within_a_second, target_outage);
