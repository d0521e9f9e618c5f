//! The smallest useful agent: scores the client IP HAProxy sends and sets
//! `txn.iprep.ip_score`. HAProxy config: `examples/haproxy/set-var.cfg` and
//! `examples/haproxy/set-var-spoe.conf`.
//!
//! `cargo run -p spop-examples --bin set_var -- 127.0.0.1:12345`
use haproxy_spop::runtime::{Agent, NotifyRequest};
use haproxy_spop::{Ack, VarScope};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:12345".into());
    if addr == "--version" || addr == "-V" {
        println!("set_var {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    let agent = Agent::builder().build(|req: NotifyRequest| async move {
        let score = match req.message("check-client-ip").map(|m| m.ip("ip")) {
            Some(Ok(ip)) if ip.is_loopback() => 100,
            Some(Ok(_)) => 50,
            _ => 0,
        };
        Ack::new().set_var(VarScope::TRANSACTION, "ip_score", score)
    });
    let server = tokio::spawn({
        let agent = agent.clone();
        async move { agent.serve(addr.parse()?).await }
    });
    tokio::signal::ctrl_c().await?;
    agent.shutdown();
    server.await?
}
