//! Running it all: the SPOP agent, the metrics endpoint, signals and drain.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use haproxy_spop::runtime::{Agent, Listener};
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::comparing::Compare;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::mirror::Mirror;
use crate::policy::TargetSet;
use crate::request::ArgNames;

/// Limits of the metrics endpoint.
#[derive(Debug, Clone, Copy)]
pub struct MetricsLimits {
    /// Connections served at once; one more is closed at once.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (an idle or silent
    /// connection is closed after it).
    pub header_timeout: Duration,
}

impl Default for MetricsLimits {
    fn default() -> Self {
        Self {
            max_connections: 16,
            header_timeout: Duration::from_secs(5),
        }
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped: at most
/// `limits.max_connections` connections at once (more are closed as they
/// come), each given `limits.header_timeout` for its request's headers;
/// accept errors (e.g. out of file descriptors) are logged and retried
/// after a pause, never in a busy loop.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    agent: Arc<haproxy_spop::runtime::Stats>,
    limits: MetricsLimits,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "metrics: accept failed; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(
                limit = limits.max_connections,
                "metrics: too many connections; closing a new one"
            );
            drop(stream);
            continue;
        };
        let metrics = Arc::clone(&metrics);
        let agent = Arc::clone(&agent);
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req: http::Request<Incoming>| {
                let body = if req.uri().path() == "/metrics" {
                    Some(metrics.render(Some(&agent)))
                } else {
                    None
                };
                async move {
                    let resp = match body {
                        Some(text) => Response::builder()
                            .header("content-type", crate::metrics::CONTENT_TYPE)
                            .body(Full::new(Bytes::from(text))),
                        None => Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::from_static(b"try /metrics\n"))),
                    };
                    Ok::<_, Infallible>(resp.unwrap_or_default())
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Where a running instance listens (for tests and logs).
#[derive(Debug, Clone)]
pub struct Bound {
    /// The SPOP address (TCP), if TCP.
    pub spop: Option<SocketAddr>,
    /// The metrics address, if enabled.
    pub metrics: Option<SocketAddr>,
}

/// Runs spop-mirror until `stop` completes (a signal, in the binary): then it
/// stops accepting, lets HAProxy connections finish their frames and say
/// goodbye, drains the mirror queues up to `--drain-timeout`, and returns.
///
/// `ready` receives the bound addresses once listening.
///
/// # Errors
///
/// Binding the SPOP or metrics address.
pub async fn run(
    cfg: Config,
    stop: impl std::future::Future<Output = ()>,
    ready: Option<tokio::sync::oneshot::Sender<Bound>>,
) -> std::io::Result<()> {
    let set = TargetSet::build(&cfg, 1)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let target_names: Vec<String> = set.targets.iter().map(|t| t.name.clone()).collect();
    let metrics = Metrics::new(target_names.iter().cloned());
    if cfg.compare > 0.0 && !set.has_roles() {
        tracing::warn!(
            "--compare is set but no target has role = \"candidate\": nothing is compared"
        );
    }
    for t in &set.targets {
        if t.role == Some(crate::config::Role::Candidate) {
            metrics.compare().candidate(&t.name);
        }
    }
    // The SPOP side runs on a thread of its own, so that ACKs never wait
    // behind the mirroring runtime's work: HAProxy holds each request until
    // its ACK. Pipelined targets' workers run there too (they never wait and
    // do bounded work per turn, see `Mirror::start_with`), so a batch needs
    // no other thread woken. `--shared-runtime` runs everything on the
    // mirroring runtime instead.
    let spop_runtime = OwnRuntime(if cfg.shared_runtime {
        None
    } else {
        Some(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        )
    });
    let (mirror, workers) = Mirror::start_with(
        set,
        Arc::clone(&metrics),
        spop_runtime.0.as_ref().map(|rt| rt.handle().clone()),
    );
    let (compare, compare_tasks) = Compare::start(&cfg, Arc::clone(&metrics))?;
    let acceptor = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => Some(haproxy_spop::runtime::tls::acceptor(
            cert,
            key,
            cfg.tls_client_ca.as_deref(),
        )?),
        _ => None,
    };
    let names = ArgNames {
        method: cfg.arg_method.clone(),
        path: cfg.arg_path.clone(),
        version: cfg.arg_ver.clone(),
        headers: cfg.arg_hdrs.clone(),
        body: cfg.arg_body.clone(),
        body_size: Some(cfg.arg_body_size.clone()).filter(|n| !n.is_empty()),
    };
    let agent = Agent::builder()
        .max_connections(cfg.max_connections)
        .max_frame_size(cfg.max_frame_size)
        .shutdown_timeout(cfg.drain_timeout)
        .build(crate::handler(
            mirror.clone(),
            cfg.message.clone(),
            names,
            Some(cfg.arg_src.clone()).filter(|n| !n.is_empty()),
            Some(compare),
        ));
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let serve = {
        let agent = agent.clone();
        let listen = cfg.listen.clone();
        async move {
            let bound = match (acceptor, &listen) {
                (Some(acceptor), ListenAddr::Tcp(addr)) => {
                    Listener::bind_tls(*addr, acceptor).await
                }
                (Some(_), _) => Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "--tls-cert needs a TCP --listen address",
                )),
                (None, _) => Listener::bind(&listen).await,
            };
            let listener = match bound {
                Ok(l) => l,
                Err(e) => {
                    let _ = bound_tx.send(Err(e.kind()));
                    return Err(e);
                }
            };
            let _ = bound_tx.send(Ok(listener.local_addr()));
            agent.serve_listener(listener).await
        }
    };
    let agent_task = match spop_runtime.take() {
        Some(rt) => {
            let (served_tx, served) = tokio::sync::oneshot::channel();
            let (release, release_rx) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name("spop-agent".into())
                .spawn(move || {
                    rt.block_on(async move {
                        let result = serve.await;
                        let _ = served_tx.send(());
                        // The pipelined workers run here until drained.
                        let _ = release_rx.await;
                        result
                    })
                })?;
            AgentTask::Thread {
                thread,
                served,
                release,
            }
        }
        None => AgentTask::Task(tokio::spawn(serve)),
    };
    let spop_addr = match bound_rx.await {
        Ok(Ok(addr)) => addr,
        Ok(Err(kind)) => {
            return Err(std::io::Error::new(
                kind,
                format!("cannot listen on {}", cfg.listen),
            ));
        }
        Err(_) => return Err(std::io::Error::other("the SPOP side ended")),
    };
    let mut bound = Bound {
        spop: spop_addr,
        metrics: None,
    };
    let metrics_task = match cfg.metrics {
        Some(addr) => {
            let l = TcpListener::bind(addr).await?;
            bound.metrics = l.local_addr().ok();
            Some(tokio::spawn(serve_metrics(
                l,
                Arc::clone(&metrics),
                Arc::clone(agent.stats()),
                MetricsLimits {
                    max_connections: cfg.metrics_max_connections,
                    header_timeout: cfg.metrics_header_timeout,
                },
            )))
        }
        None => None,
    };
    let reloader = tokio::spawn(crate::reload::run(
        cfg.args.clone(),
        cfg.config.clone(),
        cfg.watch_config,
        Duration::from_secs(1),
        mirror.clone(),
        cfg.restart_only(),
    ));
    tracing::info!(listen = %cfg.listen, tls = cfg.tls_cert.is_some(), targets = ?target_names, metrics = ?bound.metrics, "spop-mirror started");
    if cfg.compare > 0.0 {
        let roles: Vec<String> = mirror
            .target_set()
            .targets
            .iter()
            .filter_map(|t| t.role.map(|r| format!("{}={}", t.name, r.label())))
            .collect();
        tracing::info!(
            share = cfg.compare,
            message = %cfg.compare_message,
            var = %cfg.compare_var,
            instance = cfg.instance,
            roles = ?roles,
            log = ?cfg.compare_log,
            "comparing answers"
        );
    }
    if let Some(ready) = ready {
        let _ = ready.send(bound);
    }
    stop.await;
    reloader.abort();
    tracing::info!("stopping: no new connections, draining");
    agent.shutdown();
    let drained = match agent_task {
        AgentTask::Thread {
            thread,
            served,
            release,
        } => {
            let _ = served.await;
            mirror.close();
            let drained = workers.drain(cfg.drain_timeout).await;
            drop(release);
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            drained
        }
        AgentTask::Task(t) => {
            let _ = t.await;
            mirror.close();
            workers.drain(cfg.drain_timeout).await
        }
    };
    if !drained {
        tracing::warn!("drain deadline passed; requests still queued were dropped");
    }
    compare_tasks.stop().await;
    if let Some(t) = metrics_task {
        t.abort();
    }
    if let ListenAddr::Unix(path) = &cfg.listen {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!(
        received = metrics.received_total(),
        accepted = metrics.accepted_total(),
        "spop-mirror stopped"
    );
    Ok(())
}

use haproxy_spop::runtime::ListenAddr;

/// The SPOP thread's runtime until the thread takes it; one dropped before
/// (an early error return, inside the main runtime) shuts down in the
/// background, as a runtime may not be dropped in async code.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    fn take(mut self) -> Option<tokio::runtime::Runtime> {
        self.0.take()
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Where the SPOP side runs.
enum AgentTask {
    /// On its own thread, which also runs the pipelined targets' workers:
    /// `served` says the SPOP side is done, dropping `release` lets the
    /// thread end once the workers are drained.
    Thread {
        thread: std::thread::JoinHandle<std::io::Result<()>>,
        served: tokio::sync::oneshot::Receiver<()>,
        release: tokio::sync::oneshot::Sender<()>,
    },
    Task(tokio::task::JoinHandle<std::io::Result<()>>),
}
