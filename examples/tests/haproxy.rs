//! The example agents and the runtime against real HAProxy 2.6 and 3.2, on
//! loopback ports: variables set by the agent reach the response, the
//! SPOP health check marks the agent UP, a 100 KB body arrives whole through
//! fragmentation (2.6), and the agent survives HAProxy restarts.
//!
//! HAProxy comes from `.ci/install-haproxy.sh` (run by the README test command).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

#[path = "../../spop/tests/support/haproxy.rs"]
mod haproxy;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use haproxy::{free_port, http_request, HaProxy, Version};
use haproxy_spop::runtime::{Agent, Listener, NotifyRequest};
use haproxy_spop::{Ack, Capabilities, VarScope};

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_agent(bin: &str, port: u16) -> Proc {
    let child = Command::new(bin)
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start example agent");
    wait_port(port);
    Proc(child)
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The example config with its ports replaced by free ones and the SPOE file
/// path by the harness's placeholder.
fn example_config(name: &str, ports: &[(u16, u16)]) -> (String, String) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/haproxy");
    let mut cfg = std::fs::read_to_string(format!("{dir}/{name}.cfg")).unwrap();
    let spoe = std::fs::read_to_string(format!("{dir}/{name}-spoe.conf")).unwrap();
    for (from, to) in ports {
        cfg = cfg.replace(&format!("127.0.0.1:{from}"), &format!("127.0.0.1:{to}"));
    }
    cfg = cfg.replace(&format!("examples/haproxy/{name}-spoe.conf"), "{SPOE_CONF}");
    (cfg, spoe)
}

fn header<'a>(resp: &'a haproxy::RawResponse, name: &str) -> Option<&'a str> {
    resp.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn get(port: u16, extra: &str) -> haproxy::RawResponse {
    let req = format!("GET /x?y=1 HTTP/1.1\r\nHost: test\r\n{extra}Connection: close\r\n\r\n");
    http_request(port, req.as_bytes())
}

/// Waits for the first request that carries `name`, then checks that the next
/// ones all do.
fn assert_var_header(port: u16, extra: &str, name: &str, want: &str, haproxy: &HaProxy) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = get(port, extra);
        assert_eq!(resp.status, 200, "HAProxy log:\n{}", haproxy.log());
        if header(&resp, name) == Some(want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: {want} never came; last headers {:?}\nHAProxy log:\n{}",
            resp.headers,
            haproxy.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..20 {
        let resp = get(port, extra);
        assert_eq!(
            header(&resp, name),
            Some(want),
            "HAProxy log:\n{}",
            haproxy.log()
        );
    }
}

fn set_var_through(version: Version) {
    let (www, app, agent) = (free_port(), free_port(), free_port());
    let _agent = spawn_agent(env!("CARGO_BIN_EXE_set_var"), agent);
    let (cfg, spoe) = example_config("set-var", &[(8080, www), (8090, app), (12345, agent)]);
    let haproxy = HaProxy::start(version, &cfg, Some(&spoe));
    assert_var_header(www, "", "x-ip-score", "100", &haproxy);
}

per_version!(set_var_example_through_haproxy, set_var_through);

fn headers_through(version: Version) {
    let (www, app, agent) = (free_port(), free_port(), free_port());
    let _agent = spawn_agent(env!("CARGO_BIN_EXE_headers"), agent);
    let (cfg, spoe) = example_config("headers", &[(8081, www), (8091, app), (12346, agent)]);
    let haproxy = HaProxy::start(version, &cfg, Some(&spoe));
    let extra = "User-Agent: curl/8.0\r\nCookie: a=b\r\nX-One: 1\r\nX-One: 2\r\n";
    assert_var_header(www, extra, "x-ua-class", "tool", &haproxy);
    let resp = get(www, extra);
    // host, user-agent, cookie, x-one twice (HAProxy consumes Connection).
    assert_eq!(
        header(&resp, "x-hdr-count"),
        Some("5"),
        "{:?}",
        resp.headers
    );
    assert_eq!(header(&resp, "x-has-auth"), Some("1"), "{:?}", resp.headers);
    let resp = get(www, "User-Agent: Mozilla/5.0\r\n");
    assert_eq!(header(&resp, "x-ua-class"), Some("browser"));
    assert_eq!(header(&resp, "x-has-auth"), Some("0"));
}

per_version!(headers_example_through_haproxy, headers_through);

fn spop_check_marks_agent_up(version: Version) {
    let (www, app, agent) = (free_port(), free_port(), free_port());
    let (cfg, spoe) = example_config("set-var", &[(8080, www), (8090, app), (12345, agent)]);
    // The agent is down first: the check must say so...
    let haproxy = HaProxy::start(version, &cfg, Some(&spoe));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !haproxy.log().contains("agent1 is DOWN") {
        assert!(
            Instant::now() < deadline,
            "no DOWN in log:\n{}",
            haproxy.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // ...then UP once the agent answers the SPOP check.
    let _agent = spawn_agent(env!("CARGO_BIN_EXE_set_var"), agent);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !haproxy.log().contains("agent1 is UP") {
        assert!(
            Instant::now() < deadline,
            "no UP in log:\n{}",
            haproxy.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

per_version!(spop_check_marks_agent_up, spop_check_marks_agent_up);

fn survives_restart(version: Version) {
    let (www, app, agent) = (free_port(), free_port(), free_port());
    let _agent = spawn_agent(env!("CARGO_BIN_EXE_set_var"), agent);
    let (cfg, spoe) = example_config("set-var", &[(8080, www), (8090, app), (12345, agent)]);
    let mut haproxy = HaProxy::start(version, &cfg, Some(&spoe));
    assert_var_header(www, "", "x-ip-score", "100", &haproxy);
    haproxy.stop();
    haproxy.restart();
    assert_var_header(www, "", "x-ip-score", "100", &haproxy);
}

per_version!(agent_survives_haproxy_restart, survives_restart);

/// Serves `agent` on `127.0.0.1:port` on `rt`.
fn serve<H: haproxy_spop::runtime::Handler>(
    rt: &tokio::runtime::Runtime,
    agent: &Agent<H>,
    port: u16,
) {
    let listener = rt
        .block_on(Listener::bind(
            &format!("127.0.0.1:{port}").parse().unwrap(),
        ))
        .unwrap();
    let agent = agent.clone();
    rt.spawn(async move { agent.serve_listener(listener).await });
}

/// HAProxy's classic SPOE engine (2.6, 3.0) with 128 KB buffers sends a
/// 100 KB body to an agent that accepts 16 KB frames: in fragments, which the
/// runtime reassembles. (3.1+ never fragments.)
fn fragmentation(version: Version) {
    let (www, app, agent_port) = (free_port(), free_port(), free_port());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let _ = tracing_subscriber::fmt()
        .with_env_filter("haproxy_spop=debug")
        .with_test_writer()
        .try_init();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let agent = Agent::builder()
        .max_frame_size(16380)
        .capabilities(Capabilities::PIPELINING | Capabilities::FRAGMENTATION)
        .build({
            let seen = seen.clone();
            move |req: NotifyRequest| {
                let len = req
                    .message("body")
                    .and_then(|m| m.bytes("b").ok())
                    .map(|b| {
                        let ok = b.iter().all(|&c| c == b'z');
                        (b.len(), ok)
                    });
                seen.lock().unwrap().push(len);
                let n = len.map_or(-1, |(n, _)| n as i64);
                async move { Ack::new().set_var(VarScope::TRANSACTION, "len", n) }
            }
        });
    serve(&rt, &agent, agent_port);
    let cfg = format!(
        "global\n    tune.bufsize 131072\n    log stderr format raw local0 info\n\
defaults\n    mode http\n    log global\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
frontend www\n    bind 127.0.0.1:{www}\n    option http-buffer-request\n    filter spoe engine frag config {{SPOE_CONF}}\n\
    http-response set-header x-body-len \"%[var(txn.frag.len)]\"\n    default_backend app\n\
frontend app_server\n    bind 127.0.0.1:{app}\n    http-request return status 200 content-type text/plain string ok\n\
backend app\n    server app1 127.0.0.1:{app}\n\
backend agents\n.if version_atleast(3.1)\n    mode spop\n.else\n    mode tcp\n.endif\n    timeout connect 5s\n    timeout server 30s\n    server a1 127.0.0.1:{agent_port}\n"
    );
    let spoe = "[frag]\nspoe-agent frag-agent\n    messages body\n    option var-prefix frag\n    \
timeout hello 2s\n    timeout idle 30s\n    timeout processing 2s\n    use-backend agents\n    log global\n\n\
spoe-message body\n    args b=req.body\n    event on-frontend-http-request\n";
    let haproxy = HaProxy::start(version, &cfg, Some(spoe));
    let body = vec![b'z'; 100_000];
    let mut req = format!(
        "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    // The first message after a cold start may be refused by HAProxy itself
    // before any agent said hello (see the protocol notes): allow a few tries.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = http_request(www, &req);
        if header(&resp, "x-body-len") == Some("100000") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "headers {:?}\nlog:\n{}",
            resp.headers,
            haproxy.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let seen = seen.lock().unwrap();
    assert!(seen.contains(&Some((100_000, true))), "{seen:?}");
    assert!(
        agent
            .stats()
            .frames_received(haproxy_spop::FrameType::UNSET)
            >= 6,
        "{:?}",
        agent.stats()
    );
    agent.shutdown();
}

per_version!(
    large_body_arrives_whole_through_fragmentation,
    fragmentation,
    [V26, V30]
);

/// HAProxy keeps its SPOP connections: 200 requests, one after another,
/// reach the agent over a handful of connections. On HAProxy 3.1+ this needs
/// the agents' backend in `mode spop`, as the examples have it: in `mode
/// tcp`, with the backend declared before the frontend whose filter uses it
/// (as here), 3.4 opened a new connection for every message (HELLO, NOTIFY,
/// ACK, reset) and its rate fell to a third. `SPOP_TEST_AGENTS_MODE="    mode
/// tcp"` shows it.
fn keeps_connections(version: Version) {
    let (www, agent_port) = (free_port(), free_port());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let agent = Agent::builder().build(|_req: NotifyRequest| async {
        Ack::new().set_var(VarScope::TRANSACTION, "n", 1i32)
    });
    serve(&rt, &agent, agent_port);
    let mode = std::env::var("SPOP_TEST_AGENTS_MODE").unwrap_or_else(|_| {
        ".if version_atleast(3.1)\n    mode spop\n.else\n    mode tcp\n.endif".into()
    });
    let cfg = format!(
        "global\n    nbthread 1\n    log stderr format raw local0 info\n\
defaults\n    mode http\n    log global\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
backend agents\n{mode}\n    server a1 127.0.0.1:{agent_port}\n\
frontend www\n    bind 127.0.0.1:{www}\n    option http-buffer-request\n    filter spoe engine keep config {{SPOE_CONF}}\n\
    http-request return status 200 content-type text/plain lf-string \"n=%[var(txn.keep.n)]\"\n"
    );
    let spoe = "[keep]\nspoe-agent keep-agent\n    messages m\n    option var-prefix keep\n    \
timeout hello 2s\n    timeout idle 30s\n    timeout processing 2s\n    use-backend agents\n    log global\n\n\
spoe-message m\n    args method=method path=url hdrs=req.hdrs_bin body=req.body\n    event on-frontend-http-request\n";
    let haproxy = HaProxy::start(version, &cfg, Some(spoe));
    let get = || {
        http_request(
            www,
            b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
    };
    // The first message after a cold start may come before any agent said
    // hello (see the protocol notes): wait for the variable.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get().body != b"n=1" {
        assert!(Instant::now() < deadline, "log:\n{}", haproxy.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats = agent.stats();
    let (conns0, notifies0) = (
        stats.connections_total(),
        stats.frames_received(haproxy_spop::FrameType::NOTIFY),
    );
    for _ in 0..200 {
        assert_eq!(get().body, b"n=1", "log:\n{}", haproxy.log());
    }
    let conns = stats.connections_total() - conns0;
    let notifies = stats.frames_received(haproxy_spop::FrameType::NOTIFY) - notifies0;
    assert!(notifies >= 200, "{notifies} NOTIFYs for 200 requests");
    assert!(
        conns <= 4,
        "{conns} new SPOP connections for 200 requests, one after another"
    );
    agent.shutdown();
}

per_version!(haproxy_keeps_spop_connections, keeps_connections);
