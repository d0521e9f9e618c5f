//! The metrics endpoint's limits: a connection limit, and a header read
//! timeout (a client that connects and sends nothing is closed).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use std::time::{Duration, Instant};

use support::{Mirror, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends a scrape on `stream` and reads until the server closes (5 s at
/// most): what came back.
async fn scrape_on(stream: &mut TcpStream) -> Vec<u8> {
    let _ = stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
        .await;
    read_to_close(stream).await.0
}

/// Reads until EOF or an error, 5 s at most: (bytes, closed).
async fn read_to_close(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_closed() {
    let target = Target::start(Duration::ZERO, 204).await;
    let mut m = Mirror::start(&[
        "--target",
        &target.url(),
        "--metrics-max-connections",
        "2",
        "--metrics-header-timeout",
        "10s",
    ])
    .await;
    // Two connections that say nothing hold both slots.
    let mut idle1 = TcpStream::connect(m.metrics).await.unwrap();
    let idle2 = TcpStream::connect(m.metrics).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(m.metrics).await.unwrap();
    let got = scrape_on(&mut third).await;
    assert!(
        !got.starts_with(b"HTTP/1.1 200"),
        "a third connection was served: {}",
        String::from_utf8_lossy(&got)
    );
    // Freed slots serve again; a served connection is counted while open.
    drop(idle2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = TcpStream::connect(m.metrics).await.unwrap();
    let got = scrape_on(&mut fourth).await;
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(String::from_utf8_lossy(&got).contains("spop_mirror_requests_received_total"));
    // The first idle one is still open (the timeout is 10 s).
    let _ = idle1.write_all(b"").await;
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_closed_after_the_header_timeout() {
    let target = Target::start(Duration::ZERO, 204).await;
    let mut m = Mirror::start(&[
        "--target",
        &target.url(),
        "--metrics-header-timeout",
        "500ms",
    ])
    .await;
    // Nothing sent at all, and half a request head.
    let mut silent = TcpStream::connect(m.metrics).await.unwrap();
    let mut partial = TcpStream::connect(m.metrics).await.unwrap();
    partial
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let (_, closed) = read_to_close(&mut silent).await;
    let took = start.elapsed();
    assert!(closed, "a silent client was not closed within 5 s");
    assert!(
        took >= Duration::from_millis(300),
        "closed too early: {took:?}"
    );
    let (_, closed) = read_to_close(&mut partial).await;
    assert!(closed, "a client stuck in its headers was not closed");
    eprintln!("silent client closed after {took:?} (timeout 500 ms)");
    // A normal scrape still works.
    let mut ok = TcpStream::connect(m.metrics).await.unwrap();
    assert!(scrape_on(&mut ok).await.starts_with(b"HTTP/1.1 200"));
    m.stop().await;
}
