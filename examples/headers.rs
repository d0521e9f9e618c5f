//! An agent that reads `req.hdrs_bin`: it counts the request's headers, notes
//! whether it carries credentials, and classifies the User-Agent, setting
//! `txn.hdrs.count`, `txn.hdrs.has_auth` and `txn.hdrs.ua_class`.
//! HAProxy config: `examples/haproxy/headers.cfg` and
//! `examples/haproxy/headers-spoe.conf`.
//!
//! `cargo run -p spop-examples --bin headers -- 127.0.0.1:12346`
use haproxy_spop::runtime::{Agent, NotifyRequest};
use haproxy_spop::{Ack, VarScope};

fn classify(user_agent: &[u8]) -> &'static str {
    let ua = user_agent.to_ascii_lowercase();
    let has = |needle: &[u8]| ua.windows(needle.len()).any(|w| w == needle);
    if ua.is_empty() {
        "none"
    } else if has(b"bot") || has(b"crawler") || has(b"spider") {
        "bot"
    } else if has(b"curl") || has(b"wget") || has(b"python") {
        "tool"
    } else {
        "browser"
    }
}

fn handle(req: &NotifyRequest) -> Ack {
    let Some(msg) = req.message("inspect-headers") else {
        return Ack::new();
    };
    let Ok(headers) = msg.headers("hdrs") else {
        // A malformed block: say so, never fail the request.
        return Ack::new().set_var(VarScope::TRANSACTION, "error", "bad-headers");
    };
    let mut has_auth = false;
    let mut user_agent = bytes::Bytes::new();
    for (name, value) in &headers {
        match &name[..] {
            b"authorization" | b"cookie" => has_auth = true,
            b"user-agent" => user_agent = value,
            _ => {}
        }
    }
    Ack::new()
        .set_var(VarScope::TRANSACTION, "count", headers.len() as i64)
        .set_var(VarScope::TRANSACTION, "has_auth", has_auth)
        .set_var(VarScope::TRANSACTION, "ua_class", classify(&user_agent))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:12346".into());
    if addr == "--version" || addr == "-V" {
        println!("headers {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    let agent = Agent::builder().build(|req: NotifyRequest| {
        let ack = handle(&req);
        async move { ack }
    });
    let server = tokio::spawn({
        let agent = agent.clone();
        async move { agent.serve(addr.parse()?).await }
    });
    tokio::signal::ctrl_c().await?;
    agent.shutdown();
    server.await?
}
