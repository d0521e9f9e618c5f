//! An agent on this crate's runtime that answers every NOTIFY with an empty
//! ACK and does nothing else: the ceiling for any agent built on the runtime
//! behind HAProxy (`benches/mirror-wrk.sh` compares spop-mirror with it).
//!
//! `cargo run --release -p spop-benches --bin ack-agent -- 127.0.0.1:12347`

use haproxy_spop::runtime::{Agent, NotifyRequest};
use haproxy_spop::Ack;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:12347".into());
    if addr == "--version" || addr == "-V" {
        println!("ack-agent {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    let agent = Agent::builder().build(|_req: NotifyRequest| std::future::ready(Ack::new()));
    agent.serve(addr.parse()?).await
}
