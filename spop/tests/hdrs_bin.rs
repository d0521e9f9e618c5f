//! HAProxy 3.4's `set-headers-bin`, `add-headers-bin` and `del-headers-bin`
//! fed by an in-process agent: one variable carries a whole header set
//! (built with `HeadersBuilder`), one a base64 copy decoded with `b64dec`,
//! one the names to delete (`HeaderNames`); the backend echoes the request
//! headers it got. Found here: `set-headers-bin` sets entry after entry (a
//! name repeated in the block keeps its last value), `add-headers-bin` keeps
//! every entry.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

#[path = "support/haproxy.rs"]
mod haproxy;

use haproxy::{free_port, http_request, HaProxy, Version};
use haproxy_spop::runtime::{Agent, Listener, NotifyRequest};
use haproxy_spop::{base64, Ack, HeaderNames, HeadersBuilder, TypedData, VarScope};

async fn handler(_req: NotifyRequest) -> Ack {
    let mut set = HeadersBuilder::new();
    set.insert("x-from-agent", "yes")
        .unwrap()
        .insert("x-score", "87")
        .unwrap()
        .insert("x-multi", "a")
        .unwrap()
        .insert("x-multi", "b")
        .unwrap()
        .insert("user-agent", "replaced-by-agent")
        .unwrap();
    let mut b64 = HeadersBuilder::new();
    b64.insert("x-b64", "via base64")
        .unwrap()
        .insert("x-rep", "1")
        .unwrap()
        .insert("x-rep", "2")
        .unwrap();
    let mut del = HeaderNames::new();
    del.insert("x-drop").unwrap().insert("x-drop-too").unwrap();
    Ack::new()
        .set_var(VarScope::TRANSACTION, "hdrs", set.build())
        .set_var(
            VarScope::TRANSACTION,
            "h64",
            TypedData::from(base64(b64.build().as_bytes())),
        )
        .set_var(VarScope::TRANSACTION, "del", del.build())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_from_one_variable_reach_the_backend_v34() {
    let agent = Agent::builder().build(handler);
    let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let agent_addr = listener.local_addr().unwrap();
    tokio::spawn({
        let agent = agent.clone();
        async move { agent.serve_listener(listener).await }
    });
    let (www, app) = (free_port(), free_port());
    let cfg = format!(
        "global
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend www
    bind 127.0.0.1:{www}
    filter spoe engine hb config {{SPOE_CONF}}
    http-request send-spoe-group hb hb-grp
    http-request set-headers-bin var(txn.hb.hdrs)
    http-request add-headers-bin var(txn.hb.h64),b64dec
    http-request del-headers-bin var(txn.hb.del)
    default_backend app
backend app
    server app1 127.0.0.1:{app}
frontend app_server
    bind 127.0.0.1:{app}
    http-request return status 200 content-type text/plain lf-string \"%[req.hdrs]\"
backend agents
.if version_atleast(3.1)
    mode spop
.else
    mode tcp
.endif
    timeout connect 5s
    timeout server 10s
    server agent1 {agent_addr}
"
    );
    let spoe = "[hb]
spoe-agent hb-agent
    groups hb-grp
    option var-prefix hb
    option set-on-error error
    timeout hello 2s
    timeout idle 30s
    timeout processing 2s
    use-backend agents
spoe-group hb-grp
    messages hdrs
spoe-message hdrs
    args path=path
";
    let haproxy = HaProxy::start(Version::V34, &cfg, Some(spoe));
    let resp = tokio::task::spawn_blocking(move || {
        http_request(
            www,
            b"GET /x HTTP/1.1\r\nhost: t\r\nuser-agent: curl\r\nx-drop: 1\r\nx-drop-too: 2\r\nx-keep: 3\r\nconnection: close\r\n\r\n",
        )
    })
    .await
    .unwrap();
    let body = String::from_utf8_lossy(&resp.body).replace('\r', "");
    assert_eq!(resp.status, 200, "{body}\n{}", haproxy.log());
    let lines: Vec<&str> = body.lines().filter(|l| !l.is_empty()).collect();
    for want in [
        "x-from-agent: yes",
        "x-score: 87",
        // set-headers-bin sets each entry in turn: a repeated name keeps its last value...
        "x-multi: b",
        "user-agent: replaced-by-agent",
        "x-b64: via base64",
        // ...add-headers-bin keeps every entry.
        "x-rep: 1",
        "x-rep: 2",
        "x-keep: 3",
    ] {
        assert!(lines.contains(&want), "no {want:?} in {lines:?}");
    }
    for gone in [
        "x-drop: 1",
        "x-drop-too: 2",
        "user-agent: curl",
        "x-multi: a",
    ] {
        assert!(!lines.contains(&gone), "{gone:?} still in {lines:?}");
    }
    agent.shutdown();
}
