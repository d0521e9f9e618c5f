//! Issue 9 behind real HAProxy: per-target policies from a `[[target]]`
//! file (own shares, sticky sampling, filters, redaction, the loop marker),
//! a rate cap, https targets with a private CA, HAProxy talking TLS to the
//! agent, and live reload under load.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use spop_mirror::policy::{hash, threshold};
use support::{free_port, haproxy_config, send, Dir, HaProxy, Mirror, Target, Version};
use tokio_rustls::rustls;

struct Setup {
    haproxy: HaProxy,
    mirror: Mirror,
    www: u16,
    _app: Target,
}

/// spop-mirror with `args`, behind HAProxy (`server_opts`, when given,
/// replace the agent server line's options; the message also sends
/// `arg_src=src`).
async fn setup(version: Version, args: &[&str], server_opts: Option<&str>) -> Setup {
    let mirror = Mirror::start(args).await;
    let app = Target::start(Duration::ZERO, 200).await;
    let (www, shadow) = (free_port(), free_port());
    let (mut cfg, spoe) = haproxy_config(www, app.addr.port(), shadow, mirror.spop, None);
    let spoe = spoe.replace(
        "arg_body_size=req.body_size",
        "arg_body_size=req.body_size arg_src=src",
    );
    if let Some(opts) = server_opts {
        // The whole agent server line, whatever options the example has.
        cfg = cfg
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("server agent1 ") {
                    format!("    server agent1 {} {opts}", mirror.spop)
                } else {
                    l.to_owned()
                }
            })
            .map(|l| l + "\n")
            .collect();
    }
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

fn get(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: shop.test\r\n{headers}\r\n").into_bytes()
}

/// Waits until the metric reaches `want` (10 s at most).
async fn wait_metric(m: &Mirror, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = m.metric(series).await;
        if v >= want {
            return;
        }
        assert!(Instant::now() < deadline, "{series} = {v}, want {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two targets with their own policies, and a third sampling by client
/// address: each gets its own share; a user's requests all land the same
/// way; credentials never reach the load-test target; the loop marker is
/// sent, and a request carrying it is not mirrored again.
async fn own_shares(version: Version) {
    let canary = Target::start(Duration::ZERO, 200).await;
    let load = Target::start(Duration::ZERO, 200).await;
    let by_src = Target::start(Duration::ZERO, 200).await;
    let dir = Dir::new("shares");
    let file = dir.write(
        "m.toml",
        &format!(
            r#"
[[target]]
url = "{canary}"
name = "canary"

[[target]]
url = "{load}"
name = "load"
sample = 30
sticky = "header:x-user"
path_prefixes = ["/api/v2"]
redact = "credentials"
redact_value = "xxx"
set_headers = ["X-Env: load-test"]
remove_headers = ["x-internal"]

[[target]]
url = "{by_src}"
name = "by-src"
sample = 50
sticky = "src"
"#,
            canary = canary.url(),
            load = load.url(),
            by_src = by_src.url()
        ),
    );
    let s = setup(version, &["--config", file.to_str().unwrap()], None).await;
    let users = 60;
    let mut sent = 0;
    for round in 0..2 {
        for u in 0..users {
            for path in ["/api/v2/items", "/other"] {
                let raw = get(
                    &format!("{path}?r={round}"),
                    &format!(
                        "x-user: u{u}\r\nAuthorization: Bearer s3cret-{u}\r\nCookie: sid=s3cret\r\nX-Api-Key: s3cret\r\nx-internal: 1\r\n"
                    ),
                );
                assert_eq!(send(s.www, raw).await.status, 200);
                sent += 1;
            }
        }
    }
    // The canary gets everything, unchanged but for the loop marker.
    let got = canary.wait_for(sent).await;
    assert!(got
        .iter()
        .all(|r| r.header_str("x-mirrored-by").as_deref() == Some("spop-mirror")));
    assert!(got.iter().all(|r| r
        .header_str("authorization")
        .is_some_and(|a| a.starts_with("Bearer s3cret"))));
    // The load-test target: /api/v2 of the sticky 30 % of users, exactly.
    let chosen: Vec<usize> = (0..users)
        .filter(|u| hash(format!("u{u}").as_bytes()) < threshold(30.0))
        .collect();
    assert!(!chosen.is_empty() && chosen.len() < users);
    let got = load.wait_for(chosen.len() * 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_all = load.seen.lock().unwrap().clone();
    assert_eq!(got_all.len(), chosen.len() * 2, "{got:#?}");
    for r in &got_all {
        assert!(r.path.starts_with("/api/v2/"), "{}", r.path);
        let user: usize = r.header_str("x-user").unwrap()[1..].parse().unwrap();
        assert!(chosen.contains(&user), "user {user} was not to be mirrored");
        for h in ["authorization", "cookie", "x-api-key"] {
            assert_eq!(r.header_str(h).as_deref(), Some("xxx"), "{h}");
        }
        assert!(r
            .headers
            .iter()
            .all(|(_, v)| !String::from_utf8_lossy(v).contains("s3cret")));
        assert!(r.header("x-internal").is_none());
        assert_eq!(r.header_str("x-env").as_deref(), Some("load-test"));
    }
    // Sticky by client address: all from 127.0.0.1, so all or nothing.
    let all_src = hash(&[127, 0, 0, 1]) < threshold(50.0);
    if all_src {
        by_src.wait_for(sent).await;
    }
    let m = &s.mirror;
    wait_metric(
        m,
        "spop_mirror_target_dropped_total{target=\"load\",reason=\"filtered\"}",
        f64::from(users as u32 * 2),
    )
    .await;
    assert_eq!(
        m.metric("spop_mirror_target_dropped_total{target=\"load\",reason=\"sampled_out\"}")
            .await,
        ((users - chosen.len()) * 2) as f64
    );
    assert_eq!(
        m.metric("spop_mirror_target_dropped_total{target=\"by-src\",reason=\"sampled_out\"}")
            .await,
        if all_src { 0.0 } else { sent as f64 }
    );
    if !all_src {
        assert_eq!(by_src.count(), 0);
    }
    // A mirrored request coming back through HAProxy is not mirrored again.
    let before = canary.count();
    for _ in 0..5 {
        let raw = get("/again", "X-Mirrored-By: spop-mirror\r\n");
        assert_eq!(send(s.www, raw).await.status, 200);
    }
    wait_metric(
        m,
        "spop_mirror_requests_dropped_total{reason=\"loop\"}",
        5.0,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(canary.count(), before);
    drop(s);
}

per_version!(async own_shares_sticky_redacted_and_loop, own_shares);

/// A rate cap of 40/s, offered far more for three seconds: the target gets
/// 40/s (plus the burst of 4) within 10 %.
async fn rate_cap(version: Version) {
    let t = Target::start(Duration::ZERO, 200).await;
    let url = t.url();
    let s = setup(version, &["--target", &url, "--rate-limit", "40"], None).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let senders: Vec<_> = (0..3)
        .map(|_| {
            let (stop, sent, www) = (Arc::clone(&stop), Arc::clone(&sent), s.www);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let r = support::http_request(www, &get("/rate", ""));
                    assert_eq!(r.status, 200);
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for h in senders {
        tokio::task::spawn_blocking(move || h.join().unwrap())
            .await
            .unwrap();
    }
    let took = start.elapsed().as_secs_f64();
    let sent = sent.load(Ordering::Relaxed) as f64;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = t.count() as f64;
    let cap = 40.0 * took + 4.0;
    assert!(sent > cap * 2.0, "offered only {sent} in {took:.2}s");
    assert!(
        (got - cap).abs() <= cap * 0.1,
        "got {got}, cap {cap:.0} ({sent} sent in {took:.2}s)"
    );
    let limited = s
        .mirror
        .metric(&format!(
            "spop_mirror_target_dropped_total{{target=\"{url}/\",reason=\"rate_limited\"}}"
        ))
        .await;
    assert!(limited > 0.0);
    assert_eq!(
        s.mirror
            .metric("spop_mirror_requests_dropped_total{reason=\"rate_limited\"}")
            .await,
        limited
    );
    drop(s);
}

per_version!(async rate_cap_is_held_within_ten_percent, rate_cap);

/// Test PKI: a CA, a server certificate for `shadow.test` and
/// `agent.test` signed by it.
fn pki(dir: &Dir) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "mirror test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = p.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["shadow.test".to_owned(), "agent.test".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    dir.write("ca.pem", &ca.pem());
    dir.write("server.pem", &cert.pem());
    dir.write("server.key", &key.serialize_pem());
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["spop-mirror.test".to_owned()])
        .unwrap()
        .signed_by(&client_key, &ca, &ca_key)
        .unwrap();
    dir.write("client.pem", &client.pem());
    dir.write("client.key", &client_key.serialize_pem());
}

/// An https target (HTTP/2 and HTTP/1.1 by ALPN) recording the paths and
/// protocol versions of what it gets; with `client_ca`, it requires a
/// client certificate signed by it.
async fn https_target(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> (SocketAddr, Arc<Mutex<Vec<(String, String)>>>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(c.unwrap()).unwrap();
            }
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap(),
            )
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(certs, key).unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, seen) = (acceptor.clone(), Arc::clone(&seen2));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req: http::Request<Incoming>| {
                    let seen = Arc::clone(&seen);
                    async move {
                        let (parts, body) = req.into_parts();
                        let _ = body.collect().await;
                        seen.lock()
                            .unwrap()
                            .push((parts.uri.path().to_owned(), format!("{:?}", parts.version)));
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// An https target trusted through a private CA gets its requests (over
/// HTTP/2, chosen by ALPN); the same target without the CA is refused and
/// counted as `tls`. HAProxy itself talks TLS to the agent.
async fn https_targets(version: Version) {
    let dir = Dir::new("tls");
    pki(&dir);
    let (cert, key, ca) = (
        dir.path("server.pem"),
        dir.path("server.key"),
        dir.path("ca.pem"),
    );
    let (addr, seen) = https_target(&cert, &key, None).await;
    let (addr2, seen2) = https_target(&cert, &key, None).await;
    let (addr3, seen3) = https_target(&cert, &key, Some(&ca)).await;
    let file = dir.write(
        "m.toml",
        &format!(
            r#"
tls_cert = "{cert}"
tls_key = "{key}"

[[target]]
url = "https://{addr}"
name = "trusted"
tls_ca_file = "{ca}"
tls_server_name = "shadow.test"

[[target]]
url = "https://{addr2}"
name = "untrusted"
tls_server_name = "shadow.test"

[[target]]
url = "https://{addr3}"
name = "mtls"
tls_ca_file = "{ca}"
tls_server_name = "shadow.test"
tls_client_cert = "{client_cert}"
tls_client_key = "{client_key}"
http1_only = true

[[target]]
url = "https://{addr3}"
name = "mtls-without-certificate"
tls_ca_file = "{ca}"
tls_server_name = "shadow.test"

[[target]]
url = "https://{addr3}"
name = "mtls-without-certificate-h1"
tls_ca_file = "{ca}"
tls_server_name = "shadow.test"
http1_only = true
"#,
            cert = cert.display(),
            key = key.display(),
            ca = ca.display(),
            client_cert = dir.path("client.pem").display(),
            client_key = dir.path("client.key").display(),
        ),
    );
    let opts = format!(
        "check inter 500ms ssl verify required ca-file {} verifyhost agent.test",
        dir.path("ca.pem").display()
    );
    let s = setup(version, &["--config", file.to_str().unwrap()], Some(&opts)).await;
    // HAProxy may take a moment to see the agent up over TLS.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    while seen.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "nothing mirrored over TLS; HAProxy log:\n{}",
            s.haproxy.log()
        );
        assert_eq!(send(s.www, get(&format!("/warm{n}"), "")).await.status, 200);
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..10 {
        assert_eq!(send(s.www, get(&format!("/tls{i}"), "")).await.status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < n + 10 {
        assert!(Instant::now() < deadline, "{:?}", seen.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = seen.lock().unwrap().clone();
    assert!(got.iter().all(|(_, v)| v == "HTTP/2.0"), "{got:?}");
    assert!(got.iter().any(|(p, _)| p == "/tls9"));
    wait_metric(
        &s.mirror,
        "spop_mirror_target_errors_total{target=\"untrusted\",kind=\"tls\"}",
        1.0,
    )
    .await;
    assert!(seen2.lock().unwrap().is_empty());
    // mTLS, HTTP/1.1 by ALPN.
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen3.lock().unwrap().len() < n + 10 {
        assert!(Instant::now() < deadline, "{:?}", seen3.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen3.lock().unwrap().iter().all(|(_, v)| v == "HTTP/1.1"));
    // Without the client certificate: refused (TLS 1.3 says so after the
    // handshake, on the first request), counted as `tls`.
    for t in ["mtls-without-certificate", "mtls-without-certificate-h1"] {
        wait_metric(
            &s.mirror,
            &format!("spop_mirror_target_errors_total{{target=\"{t}\",kind=\"tls\"}}"),
            1.0,
        )
        .await;
    }
    assert_eq!(
        s.mirror
            .metric("spop_mirror_requests_mirrored_total{target=\"mtls-without-certificate\",class=\"2xx\"}")
            .await,
        0.0
    );
    wait_metric(
        &s.mirror,
        "spop_mirror_requests_mirrored_total{target=\"trusted\",class=\"2xx\"}",
        (n + 10) as f64,
    )
    .await;
    drop(s);
}

per_version!(async https_targets_and_tls_from_haproxy, https_targets);

/// Under steady load through HAProxy, the file changes: a target is added,
/// another one's policy changes; then a bad file is refused. No client
/// error, no new SPOP connection, the old target keeps its figures.
async fn reload_under_load(version: Version) {
    let a = Target::start(Duration::ZERO, 200).await;
    let b = Target::start(Duration::ZERO, 200).await;
    let dir = Dir::new("reload");
    let first = format!("[[target]]\nurl = \"{}\"\nname = \"a\"\n", a.url());
    let file = dir.write("m.toml", &first);
    let s = setup(
        version,
        &["--config", file.to_str().unwrap(), "--watch-config"],
        // No health checks: each would be a new SPOP connection.
        Some(""),
    )
    .await;
    let m = &s.mirror;
    assert_eq!(m.metric("spop_mirror_config_generation").await, 1.0);
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicUsize::new(0));
    let loader = {
        let (stop, errors, www) = (Arc::clone(&stop), Arc::clone(&errors), s.www);
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = support::http_request(www, &get(&format!("/load{n}"), ""));
                if r.status != 200 {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            n
        })
    };
    a.wait_for(20).await;
    let spop = |m: &Mirror| {
        let port = m.metrics.port();
        async move {
            (
                support::scrape(port, "spop_connections_total").await,
                support::scrape(port, "spop_connections").await,
            )
        }
    };
    let conns_before = spop(m).await;
    dir.write(
        "m.toml",
        &format!(
            "{first}set_headers = [\"X-Gen: 2\"]\n\n[[target]]\nurl = \"{}\"\nname = \"b\"\n",
            b.url()
        ),
    );
    wait_metric(m, "spop_mirror_config_generation", 2.0).await;
    b.wait_for(20).await;
    let after = a.count();
    a.wait_for(after + 20).await;
    assert!(a.seen.lock().unwrap()[after..]
        .iter()
        .all(|r| r.header_str("x-gen").as_deref() == Some("2")));
    // A bad file: refused, generation 2 stays, mirroring goes on.
    dir.write("m.toml", "[[target]]\nurl = \"http://x\"\nsampel = 5\n");
    wait_metric(m, "spop_mirror_config_reload_failures_total", 1.0).await;
    assert_eq!(m.metric("spop_mirror_config_generation").await, 2.0);
    let nb = b.count();
    b.wait_for(nb + 20).await;
    let conns_after = spop(m).await;
    stop.store(true, Ordering::Relaxed);
    let sent = tokio::task::spawn_blocking(move || loader.join().unwrap())
        .await
        .unwrap();
    assert_eq!(errors.load(Ordering::Relaxed), 0, "of {sent}");
    assert_eq!(conns_before, conns_after, "SPOP connections (total, open)");
    // Target a was kept: its counter covers the whole run.
    let mirrored = m
        .metric("spop_mirror_requests_mirrored_total{target=\"a\",class=\"2xx\"}")
        .await;
    assert!(mirrored >= (after + 20) as f64, "{mirrored}");
    assert!(sent > 100, "{sent}");
    drop(s);
}

per_version!(async reload_under_load_keeps_connections, reload_under_load);

fn request(path: &str) -> spop_mirror::request::MirrorRequest {
    use haproxy_spop::{Headers, Notify};
    let n = Notify::builder()
        .message("mirror")
        .arg("arg_method", "GET")
        .arg("arg_path", path.to_owned())
        .arg("arg_ver", "1.1")
        .arg("arg_hdrs", Headers::encode([(&b"host"[..], &b"h"[..])]))
        .build()
        .unwrap();
    spop_mirror::request::build(&n.message("mirror").unwrap(), &Default::default()).unwrap()
}

fn target_set(args: &[&str], generation: u64) -> spop_mirror::policy::TargetSet {
    let mut all = vec!["spop-mirror"];
    all.extend_from_slice(args);
    let c = spop_mirror::config::Config::load(all).unwrap();
    spop_mirror::policy::TargetSet::build(&c, generation).unwrap()
}

/// The engine alone: a reload that removes a slow target lets its queue
/// drain (every queued request still arrives) while the new target takes
/// the new requests; one that only changes a policy keeps the queue.
#[tokio::test]
async fn a_removed_target_drains_and_a_kept_one_keeps_its_queue() {
    use spop_mirror::metrics::Metrics;
    use spop_mirror::mirror::{Mirror, Submitted};
    let slow = Target::start(Duration::from_millis(50), 200).await;
    let next = Target::start(Duration::ZERO, 200).await;
    let (su, nu) = (slow.url(), next.url());
    let metrics = Metrics::new([]);
    let (mirror, workers) = Mirror::start(
        target_set(&["--target", &su, "--max-concurrency", "1"], 1),
        Arc::clone(&metrics),
    );
    for i in 0..10 {
        assert_eq!(
            mirror.submit(request(&format!("/q{i}"))),
            Submitted::Queued(1)
        );
    }
    // Same connection settings, another policy: the queue is kept.
    mirror.reload(target_set(
        &[
            "--target",
            &su,
            "--max-concurrency",
            "1",
            "--add-header",
            "x-gen: 2",
        ],
        2,
    ));
    assert!(metrics.targets()[0].queue_depth() > 0);
    // Removed: what it has queued still goes out.
    mirror.reload(target_set(&["--target", &nu], 3));
    assert_eq!(mirror.target_set().generation, 3);
    for i in 0..5 {
        assert_eq!(
            mirror.submit(request(&format!("/n{i}"))),
            Submitted::Queued(1)
        );
    }
    let got = slow.wait_for(10).await;
    assert_eq!(got.len(), 10);
    next.wait_for(5).await;
    assert_eq!(metrics.targets().len(), 1);
    assert_eq!(metrics.targets()[0].label, format!("{nu}/"));
    assert_eq!(metrics.config_generation(), 3);
    mirror.close();
    assert!(workers.drain(Duration::from_secs(5)).await);
}
