//! The reference agent for load comparisons: nbari's `spop` 0.13 crate, its
//! codec and a plain tokio loop, as its `examples/agent_tcp.rs` does (without
//! the per-frame printing, which would only slow it down). It answers the same
//! `check-client-ip` message as `examples/set_var.rs`, setting the same variable.
//!
//! `cargo run --release -p spop-benches --bin nbari-agent -- 127.0.0.1:12346`

use futures::{SinkExt, StreamExt};
use nbari_spop::actions::VarScope;
use nbari_spop::frame::{FramePayload, FrameType};
use nbari_spop::frames::{Ack, AgentDisconnect, AgentHello, FrameCapabilities, HaproxyHello};
use nbari_spop::{SpopCodec, StatusCode, TypedData, MAX_FRAME_SIZE_LIMIT};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:12346".into());
    if addr == "--version" || addr == "-V" {
        println!("nbari-agent {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    let listener = TcpListener::bind(&addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(handle_connection(stream));
    }
}

async fn disconnect(socket: &mut Framed<TcpStream, SpopCodec>, status: StatusCode) {
    let frame = AgentDisconnect {
        status_code: status.to_u32(),
        message: status.message().to_string(),
    };
    let _ = socket.send(Box::new(frame)).await;
    let _ = socket.close().await;
}

async fn handle_connection(stream: TcpStream) {
    let mut socket = Framed::new(stream, SpopCodec::default());
    while let Some(Ok(frame)) = socket.next().await {
        match frame.frame_type() {
            FrameType::HaproxyHello => {
                let Ok(hello) = HaproxyHello::try_from(frame.payload()) else {
                    return disconnect(&mut socket, StatusCode::Invalid).await;
                };
                let is_healthcheck = hello.healthcheck.unwrap_or(false);
                let Some(version) = hello.negotiate_version() else {
                    return disconnect(&mut socket, StatusCode::BadVersion).await;
                };
                let max_frame_size = match hello.negotiate_max_frame_size(MAX_FRAME_SIZE_LIMIT) {
                    Ok(size) => size,
                    Err(status) => return disconnect(&mut socket, status).await,
                };
                socket.codec_mut().set_max_frame_size(max_frame_size);
                let agent_hello = AgentHello {
                    version,
                    max_frame_size,
                    capabilities: vec![FrameCapabilities::Pipelining],
                };
                if socket.send(Box::new(agent_hello)).await.is_err() || is_healthcheck {
                    return;
                }
            }
            FrameType::HaproxyDisconnect => {
                return disconnect(&mut socket, StatusCode::None).await;
            }
            FrameType::Notify => {
                if let FramePayload::ListOfMessages(messages) = &frame.payload() {
                    let mut ack = Ack::new(frame.metadata().stream_id, frame.metadata().frame_id);
                    for message in messages.iter() {
                        if message.name == "check-client-ip" {
                            let score = match message.get("ip") {
                                Some(TypedData::IPv4(ip)) if ip.is_loopback() => 100,
                                Some(TypedData::IPv6(ip)) if ip.is_loopback() => 100,
                                Some(TypedData::IPv4(_) | TypedData::IPv6(_)) => 50,
                                _ => 0,
                            };
                            ack = ack.set_var(VarScope::Transaction, "ip_score", score);
                        }
                    }
                    if socket.send(Box::new(ack)).await.is_err() {
                        return;
                    }
                }
            }
            _ => {}
        }
    }
}
