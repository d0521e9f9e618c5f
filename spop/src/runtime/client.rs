//! The HAProxy side of the protocol: connect, say HELLO, send NOTIFY, read
//! ACKs. Used by tests and load tools, and by anyone testing their agent.

use std::io;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::{
    AgentHello, Capabilities, Disconnect, Error, Frame, FrameBody, HaproxyHello, Notify, SpopCodec,
};

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The transport or a frame failed.
    #[error(transparent)]
    Protocol(#[from] Error),
    /// The agent refused the handshake.
    #[error("agent disconnected: {} ({})", .0.status, String::from_utf8_lossy(&.0.message))]
    Disconnected(Disconnect),
    /// The agent closed the connection.
    #[error("connection closed by the agent")]
    Closed,
    /// The agent sent a frame that does not belong here.
    #[error("unexpected {0} frame")]
    Unexpected(crate::FrameType),
}

impl From<io::Error> for ClientError {
    fn from(err: io::Error) -> Self {
        Self::Protocol(Error::Io(err))
    }
}

impl HaproxyHello {
    /// The HELLO HAProxy 3.x sends: version "2.0", this frame size,
    /// these capabilities, no engine-id.
    pub fn new(max_frame_size: u32, capabilities: Capabilities) -> Self {
        Self {
            supported_versions: bytes::Bytes::from_static(b"2.0"),
            max_frame_size,
            capabilities,
            healthcheck: false,
            engine_id: None,
        }
    }
}

/// A connection to an agent, after the handshake.
#[derive(Debug)]
pub struct Client<S> {
    framed: Framed<S, SpopCodec>,
    agent_hello: AgentHello,
}

impl Client<TcpStream> {
    /// Connects over TCP and says `hello`.
    ///
    /// # Errors
    ///
    /// A connection error, or the agent refusing the handshake.
    pub async fn connect(
        addr: impl tokio::net::ToSocketAddrs,
        hello: HaproxyHello,
    ) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Self::handshake(stream, hello).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Says `hello` on an open stream and reads the agent's answer.
    ///
    /// # Errors
    ///
    /// A transport error, [`ClientError::Disconnected`] if the agent refuses,
    /// [`ClientError::Closed`] if it closes.
    pub async fn handshake(stream: S, hello: HaproxyHello) -> Result<Self, ClientError> {
        let max = hello.max_frame_size;
        let mut framed = Framed::new(stream, SpopCodec::new());
        framed.send(Frame::haproxy_hello(hello)).await?;
        let frame = framed.next().await.ok_or(ClientError::Closed)??;
        match frame.body {
            FrameBody::AgentHello(agent_hello) => {
                let size = agent_hello.max_frame_size.min(max);
                framed.codec_mut().set_max_frame_size(size);
                Ok(Self {
                    framed,
                    agent_hello,
                })
            }
            FrameBody::AgentDisconnect(d) => Err(ClientError::Disconnected(d)),
            _ => Err(ClientError::Unexpected(frame.frame_type())),
        }
    }

    /// The agent's answer to the HELLO.
    pub fn agent_hello(&self) -> &AgentHello {
        &self.agent_hello
    }

    /// Sends a frame (flushing it).
    ///
    /// # Errors
    ///
    /// A transport or encoding error.
    pub async fn send(&mut self, frame: Frame) -> Result<(), ClientError> {
        self.framed.send(frame).await.map_err(Into::into)
    }

    /// Queues a frame without flushing (for pipelining; see [`Client::flush`]).
    ///
    /// # Errors
    ///
    /// A transport or encoding error.
    pub async fn feed(&mut self, frame: Frame) -> Result<(), ClientError> {
        self.framed.feed(frame).await.map_err(Into::into)
    }

    /// Writes what was fed.
    ///
    /// # Errors
    ///
    /// A transport error.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        SinkExt::<Frame>::flush(&mut self.framed)
            .await
            .map_err(Into::into)
    }

    /// Sends a NOTIFY.
    ///
    /// # Errors
    ///
    /// A transport or encoding error.
    pub async fn notify(
        &mut self,
        stream_id: u64,
        frame_id: u64,
        notify: Notify,
    ) -> Result<(), ClientError> {
        self.send(Frame::notify(stream_id, frame_id, notify)).await
    }

    /// The next frame from the agent, `None` once it closed.
    ///
    /// # Errors
    ///
    /// A transport or decoding error.
    pub async fn recv(&mut self) -> Result<Option<Frame>, ClientError> {
        self.framed.next().await.transpose().map_err(Into::into)
    }

    /// Sends HAPROXY-DISCONNECT and waits for the agent's AGENT-DISCONNECT.
    ///
    /// # Errors
    ///
    /// A transport error, or a frame other than AGENT-DISCONNECT.
    pub async fn disconnect(mut self) -> Result<Disconnect, ClientError> {
        self.send(Frame::haproxy_disconnect(crate::Status::NORMAL, "bye"))
            .await?;
        loop {
            match self.recv().await? {
                None => return Err(ClientError::Closed),
                Some(Frame {
                    body: FrameBody::AgentDisconnect(d),
                    ..
                }) => return Ok(d),
                // ACKs still in flight may arrive first.
                Some(Frame {
                    body: FrameBody::Ack(_),
                    ..
                }) => {}
                Some(other) => return Err(ClientError::Unexpected(other.frame_type())),
            }
        }
    }

    /// The framed stream, for full control.
    pub fn into_framed(self) -> Framed<S, SpopCodec> {
        self.framed
    }
}
