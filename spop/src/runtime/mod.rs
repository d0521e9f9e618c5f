//! A tokio agent runtime: listeners, handshake, health checks, pipelining,
//! fragment reassembly, timeouts, limits and graceful shutdown, so that an
//! agent is one [`Handler`].
//!
//! ```no_run
//! use haproxy_spop::runtime::{Agent, NotifyRequest};
//! use haproxy_spop::{Ack, VarScope};
//!
//! # #[allow(dead_code)]
//! # async fn run() -> std::io::Result<()> {
//! let agent = Agent::builder().build(|req: NotifyRequest| async move {
//!     let ip_ok = req.message("check-client-ip").is_some();
//!     Ack::new().set_var(VarScope::SESSION, "ip_ok", ip_ok)
//! });
//! agent.serve("127.0.0.1:12345".parse()?).await
//! # }
//! ```
//!
//! Each connection is a sans-IO [`conn::Connection`](crate::conn::Connection)
//! driven by a small tokio loop that only moves bytes and runs handlers.
//! What it does with each connection:
//! - waits for HAPROXY-HELLO (hello timeout), checks it with
//!   [`negotiate`](crate::negotiate) (version 2.x, `max-frame-size`,
//!   `capabilities`: statuses 5 to 9), answers AGENT-HELLO with the smaller
//!   frame size and the capabilities: `pipelining` if HAProxy has it,
//!   `fragmentation` (what the agent can receive; HAProxy 2.x uses it without
//!   listing it), never `async` (ACKs always go back on the connection the
//!   NOTIFY came on); a health check is answered and the close that follows is
//!   not an error;
//! - runs up to `max_in_flight` handlers at once per connection and writes each
//!   ACK as soon as its handler finishes (any order); past the limit it stops
//!   reading, which pushes back on HAProxy;
//! - reassembles fragmented NOTIFY frames up to `max_reassembly_bytes`;
//! - answers `min(max_frame_size, HAProxy's)` (default 16380), grows read
//!   buffers with the bytes that arrive (never the LENGTH announced), and
//!   charges read buffers, reassembly and unanswered NOTIFY frames to one
//!   memory budget, `max_memory` (default 256 MiB): a connection that would
//!   exceed it gets AGENT-DISCONNECT status 13, the others go on;
//! - answers HAPROXY-DISCONNECT with AGENT-DISCONNECT; any protocol error gets
//!   AGENT-DISCONNECT with its status code and closes that connection only;
//! - closes idle connections, bounds every write, and on shutdown lets
//!   in-flight frames finish up to a deadline, then says AGENT-DISCONNECT 0.

mod client;
mod connection;
mod handler;
#[cfg(feature = "tls")]
pub mod tls;

use std::fmt;
use std::io;
use std::net::SocketAddr;
#[cfg(unix)]
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
#[cfg(unix)]
use tokio::net::UnixListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

pub use crate::stats::{Stats, StatsSnapshot};
pub use client::{Client, ClientError};
pub use handler::{BoxError, Handler, IntoAck, NotifyRequest};

use crate::conn::{MemoryBudget, Settings, DEFAULT_MAX_MEMORY};
use crate::{Capabilities, MAX_FRAME_SIZE_CEILING};

/// Settings of an [`Agent`]; see [`AgentBuilder`] for each one's meaning.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The largest frame the agent accepts (the answer is the smaller of it
    /// and HAProxy's); at most [`MAX_FRAME_SIZE_CEILING`].
    pub max_frame_size: u32,
    /// Capabilities offered (intersected with HAProxy's).
    pub capabilities: Capabilities,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// NOTIFY frames handled at once per connection.
    pub max_in_flight: usize,
    /// Bytes a fragmented NOTIFY may reassemble to.
    pub max_reassembly_bytes: usize,
    /// Time HAProxy has to say HELLO after connecting.
    pub hello_timeout: Duration,
    /// A connection without frames or work for this long is closed.
    pub idle_timeout: Duration,
    /// Time a handler has before HAProxy gets an empty ACK instead.
    pub handler_timeout: Duration,
    /// Time a write may take (a peer that stops reading is disconnected).
    pub write_timeout: Duration,
    /// Time in-flight frames get to finish on shutdown.
    pub shutdown_timeout: Duration,
    /// The memory budget of the whole agent, in bytes: read buffers,
    /// reassembly and unanswered NOTIFY frames of all its connections.
    pub max_memory: usize,
}

impl Default for Config {
    /// The connection core's defaults ([`Settings::default`]), 1024
    /// connections and [`DEFAULT_MAX_MEMORY`].
    fn default() -> Self {
        let s = Settings::default();
        Self {
            max_frame_size: s.max_frame_size,
            capabilities: s.capabilities,
            max_connections: 1024,
            max_in_flight: s.max_in_flight,
            max_reassembly_bytes: s.max_reassembly_bytes,
            hello_timeout: s.hello_timeout,
            idle_timeout: s.idle_timeout,
            handler_timeout: s.handler_timeout,
            write_timeout: s.write_timeout,
            shutdown_timeout: s.shutdown_timeout,
            max_memory: DEFAULT_MAX_MEMORY,
        }
    }
}

impl Config {
    /// The settings of each connection.
    pub(crate) fn settings(&self) -> Settings {
        Settings {
            max_frame_size: self.max_frame_size,
            capabilities: self.capabilities,
            max_in_flight: self.max_in_flight,
            max_reassembly_bytes: self.max_reassembly_bytes,
            hello_timeout: self.hello_timeout,
            idle_timeout: self.idle_timeout,
            handler_timeout: self.handler_timeout,
            write_timeout: self.write_timeout,
            shutdown_timeout: self.shutdown_timeout,
        }
    }
}

/// Builds an [`Agent`].
#[derive(Debug, Clone, Default)]
pub struct AgentBuilder {
    config: Config,
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $t:ty) => {
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, value: $t) -> Self {
            self.config.$name = value;
            self
        }
    };
}

impl AgentBuilder {
    setter!(
        /// The largest frame the agent accepts (default 16380, HAProxy's
        /// default `tune.bufsize` 16384 - 4); the agent answers the smaller of
        /// it and what HAProxy proposes. HAProxy 3.x drops messages larger
        /// than the agreed size and 2.x fragments them, so with a larger
        /// `tune.bufsize` set `tune.bufsize - 4` here (`tune.bufsize 1048576`
        /// → `max_frame_size(1048572)`). Values above
        /// [`MAX_FRAME_SIZE_CEILING`] (16 MiB) are lowered to it; below 256
        /// every handshake is refused with status 9.
        max_frame_size: u32
    );
    setter!(
        /// Capabilities offered (default `pipelining,fragmentation`). `async`
        /// is ignored: this runtime answers on the connection the NOTIFY came on.
        capabilities: Capabilities
    );
    setter!(
        /// Connections served at once (default 1024).
        max_connections: usize
    );
    setter!(
        /// NOTIFY frames handled at once per connection (default 256).
        max_in_flight: usize
    );
    setter!(
        /// Bytes one fragmented NOTIFY may reassemble to (default 4 MiB);
        /// beyond it the connection ends with status 13.
        max_reassembly_bytes: usize
    );
    setter!(
        /// Time HAProxy has to say HELLO (default 5 s).
        hello_timeout: Duration
    );
    setter!(
        /// Idle connections are closed after this (default 300 s).
        idle_timeout: Duration
    );
    setter!(
        /// Time a handler has (default 1 s); keep it below HAProxy's
        /// `timeout processing`. Past it HAProxy gets an empty ACK and the
        /// handler's late result is dropped.
        handler_timeout: Duration
    );
    setter!(
        /// Time a write may take (default 5 s).
        write_timeout: Duration
    );
    setter!(
        /// Time in-flight frames get on shutdown (default 5 s).
        shutdown_timeout: Duration
    );
    setter!(
        /// The memory budget of the whole agent in bytes (default 256 MiB):
        /// the read buffers, reassembly buffers and unanswered NOTIFY payloads
        /// of all connections. A connection whose growth would exceed it is
        /// disconnected with AGENT-DISCONNECT status 13 and counted in
        /// [`Stats::memory_refusals`]; the others go on. Each connection
        /// holds about 8 to 16 KiB when idle, up to about twice its frame
        /// size while a large frame arrives, plus what it reassembles.
        max_memory: usize
    );

    /// Replaces every setting at once.
    #[must_use]
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The agent, with its handler.
    pub fn build<H: Handler>(self, handler: H) -> Agent<H> {
        let mut config = self.config;
        config.capabilities = config
            .capabilities
            .intersection(Capabilities::PIPELINING | Capabilities::FRAGMENTATION);
        config.max_in_flight = config.max_in_flight.max(1);
        config.max_frame_size = config.max_frame_size.min(MAX_FRAME_SIZE_CEILING);
        let (shutdown, _) = watch::channel(false);
        Agent {
            inner: Arc::new(Inner {
                connection_slots: Arc::new(Semaphore::new(config.max_connections.max(1))),
                budget: MemoryBudget::new(config.max_memory),
                handler,
                stats: Arc::new(Stats::default()),
                config,
                shutdown,
                next_id: AtomicU64::new(1),
            }),
        }
    }
}

pub(crate) struct Inner<H> {
    pub(crate) config: Config,
    pub(crate) handler: H,
    pub(crate) stats: Arc<Stats>,
    pub(crate) budget: MemoryBudget,
    pub(crate) shutdown: watch::Sender<bool>,
    connection_slots: Arc<Semaphore>,
    next_id: AtomicU64,
}

/// An SPOP agent: a handler and its settings, served on listeners.
///
/// Cheap to clone (one `Arc`); clones share counters and shutdown.
pub struct Agent<H> {
    inner: Arc<Inner<H>>,
}

impl<H> Clone for Agent<H> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<H> fmt::Debug for Agent<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent")
            .field("config", &self.inner.config)
            .field("stats", &self.inner.stats)
            .finish()
    }
}

/// Where to listen: `host:port` or `unix:/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path (Unix only).
    #[cfg(unix)]
    Unix(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = io::Error;

    fn from_str(s: &str) -> io::Result<Self> {
        if let Some(path) = s.strip_prefix("unix:") {
            #[cfg(not(unix))]
            {
                let _ = path;
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "unix sockets are not supported on this platform",
                ));
            }
            #[cfg(unix)]
            if path.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "empty unix socket path",
                ));
            }
            #[cfg(unix)]
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        s.parse().map(Self::Tcp).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad listen address {s:?}: {e}"),
            )
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            #[cfg(unix)]
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A bound listener, TCP or Unix, or TCP with TLS (feature `tls`).
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix socket listener (Unix only).
    #[cfg(unix)]
    Unix(UnixListener),
    /// A TCP listener whose connections speak TLS (see [`tls`]).
    #[cfg(feature = "tls")]
    Tls(TcpListener, tls::TlsAcceptor),
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(l) => f.debug_tuple("Tcp").field(l).finish(),
            #[cfg(unix)]
            Self::Unix(l) => f.debug_tuple("Unix").field(l).finish(),
            #[cfg(feature = "tls")]
            Self::Tls(l, _) => f.debug_tuple("Tls").field(l).finish(),
        }
    }
}

impl Listener {
    /// Binds `addr`. A stale Unix socket file is removed first.
    ///
    /// # Errors
    ///
    /// The bind error.
    pub async fn bind(addr: &ListenAddr) -> io::Result<Self> {
        match addr {
            ListenAddr::Tcp(addr) => TcpListener::bind(addr).await.map(Self::Tcp),
            #[cfg(unix)]
            ListenAddr::Unix(path) => {
                use std::os::unix::fs::FileTypeExt;
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    if meta.file_type().is_socket() {
                        std::fs::remove_file(path)?;
                    }
                }
                UnixListener::bind(path).map(Self::Unix)
            }
        }
    }

    /// Binds `addr` (TCP) and serves TLS on it with `acceptor` (see
    /// [`tls::acceptor`]).
    ///
    /// # Errors
    ///
    /// The bind error.
    #[cfg(feature = "tls")]
    pub async fn bind_tls(addr: SocketAddr, acceptor: tls::TlsAcceptor) -> io::Result<Self> {
        TcpListener::bind(addr)
            .await
            .map(|l| Self::Tls(l, acceptor))
    }

    /// The TCP address bound, if TCP.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(l) => l.local_addr().ok(),
            #[cfg(feature = "tls")]
            Self::Tls(l, _) => l.local_addr().ok(),
            #[cfg(unix)]
            Self::Unix(_) => None,
        }
    }
}

impl Agent<()> {
    /// A builder with the default settings.
    pub fn builder() -> AgentBuilder {
        AgentBuilder::default()
    }
}

impl<H: Handler> Agent<H> {
    /// The agent's settings.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The agent's counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.inner.stats
    }

    /// Starts a graceful shutdown: listeners stop accepting, connections stop
    /// reading, in-flight frames get `shutdown_timeout` to finish, then every
    /// connection gets AGENT-DISCONNECT status 0; the `serve*` calls return.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// `true` once [`Agent::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// Binds `addr` and serves it until [`Agent::shutdown`].
    ///
    /// # Errors
    ///
    /// The bind error.
    pub async fn serve(&self, addr: ListenAddr) -> io::Result<()> {
        let listener = Listener::bind(&addr).await?;
        self.serve_listener(listener).await
    }

    /// Serves a bound listener until [`Agent::shutdown`], then waits for the
    /// connections to drain (at most `shutdown_timeout` and a little more).
    ///
    /// # Errors
    ///
    /// None at present: accept errors are logged and retried after a pause.
    pub async fn serve_listener(&self, listener: Listener) -> io::Result<()> {
        let mut shutdown = self.inner.shutdown.subscribe();
        let mut tasks = JoinSet::new();
        let slots = Arc::clone(&self.inner.connection_slots);
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            let permit = tokio::select! {
                permit = Arc::clone(&slots).acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = shutdown.changed() => break,
            };
            let accepted = tokio::select! {
                a = accept(&listener) => a,
                _ = shutdown.changed() => break,
            };
            match accepted {
                Ok(Accepted::Tcp(stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let agent = self.clone();
                    tasks.spawn(async move {
                        agent.run(stream, peer.to_string()).await;
                        drop(permit);
                    });
                }
                #[cfg(feature = "tls")]
                Ok(Accepted::Tls(stream, peer, acceptor)) => {
                    let _ = stream.set_nodelay(true);
                    let agent = self.clone();
                    tasks.spawn(async move {
                        // The handshake is part of the HELLO's time.
                        let limit = agent.inner.config.hello_timeout;
                        match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => agent.run(tls, peer.to_string()).await,
                            Ok(Err(err)) => agent.tls_failed(&peer, &err.to_string()),
                            Err(_) => agent.tls_failed(&peer, "handshake timed out"),
                        }
                        drop(permit);
                    });
                }
                #[cfg(unix)]
                Ok(Accepted::Unix(stream)) => {
                    let agent = self.clone();
                    tasks.spawn(async move {
                        agent.run(stream, "unix".to_owned()).await;
                        drop(permit);
                    });
                }
                Err(err) => {
                    // EMFILE and friends: pause rather than spin.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            while tasks.try_join_next().is_some() {}
        }
        let grace = self.inner.config.shutdown_timeout + self.inner.config.write_timeout;
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tasks.abort_all();
        }
        Ok(())
    }

    /// Serves one connection accepted by the caller, until it ends.
    pub async fn serve_connection<S>(&self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        self.run(stream, "user".to_owned()).await;
    }

    #[cfg(feature = "tls")]
    fn tls_failed(&self, peer: &SocketAddr, why: &str) {
        let n = self
            .inner
            .stats
            .tls_handshake_failures
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if n.is_power_of_two() {
            tracing::warn!(%peer, error = why, total = n, "TLS handshake failed");
        }
    }

    async fn run<S>(&self, stream: S, peer: String)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let stats = &self.inner.stats;
        stats.connections_total.fetch_add(1, Ordering::Relaxed);
        stats.connections_active.fetch_add(1, Ordering::Relaxed);
        let span = tracing::debug_span!("spop_connection", id, peer = %peer);
        tracing::Instrument::instrument(connection::run(Arc::clone(&self.inner), stream), span)
            .await;
        stats.connections_active.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Accepted {
    Tcp(tokio::net::TcpStream, SocketAddr),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
    #[cfg(feature = "tls")]
    Tls(tokio::net::TcpStream, SocketAddr, tls::TlsAcceptor),
}

async fn accept(listener: &Listener) -> io::Result<Accepted> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, a)| Accepted::Tcp(s, a)),
        #[cfg(feature = "tls")]
        Listener::Tls(l, acceptor) => l
            .accept()
            .await
            .map(|(s, a)| Accepted::Tls(s, a, acceptor.clone())),
        #[cfg(unix)]
        Listener::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}
