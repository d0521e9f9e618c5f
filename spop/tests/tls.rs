//! HAProxy talks TLS to the agent (`server ... ssl`), on every line: the
//! agent's certificate is verified by HAProxy (`verify required`, a private
//! CA, `verifyhost`), the HELLO and NOTIFY frames arrive inside TLS and the
//! agent's variable comes back; with mutual TLS the agent refuses an HAProxy
//! without a client certificate (counted), and serves one with it.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

#[path = "support/haproxy.rs"]
mod haproxy;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use haproxy::{free_port, http_request, HaProxy, Version};
use haproxy_spop::runtime::{tls, Agent, Listener, NotifyRequest};
use haproxy_spop::{Ack, VarScope};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// A CA, the agent's certificate for `agent.test` signed by it, and a
    /// client certificate for HAProxy signed by a second CA.
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("spop-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = |name: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, name);
            let key = KeyPair::generate().unwrap();
            let cert = p.self_signed(&key).unwrap();
            (cert, key)
        };
        let (agent_ca, agent_ca_key) = ca("agent test CA");
        let (client_ca, client_ca_key) = ca("haproxy client test CA");
        let agent_key = KeyPair::generate().unwrap();
        let agent = CertificateParams::new(vec!["agent.test".to_owned()])
            .unwrap()
            .signed_by(&agent_key, &agent_ca, &agent_ca_key)
            .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut cp = CertificateParams::new(vec!["haproxy.test".to_owned()]).unwrap();
        cp.distinguished_name
            .push(DnType::CommonName, "haproxy.test");
        let client = cp
            .signed_by(&client_key, &client_ca, &client_ca_key)
            .unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
        write("agent-ca.pem", agent_ca.pem());
        write("agent.pem", agent.pem());
        write("agent.key", agent_key.serialize_pem());
        write("client-ca.pem", client_ca.pem());
        write(
            "client.pem",
            format!("{}{}", client.pem(), client_key.serialize_pem()),
        );
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(www: u16, app: u16, agent: u16, server_opts: &str) -> (String, String) {
    let cfg = format!(
        "global\n    log stderr format raw local0 info\n\
defaults\n    mode http\n    log global\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
frontend www\n    bind 127.0.0.1:{www}\n    filter spoe engine tls config {{SPOE_CONF}}\n\
    http-response set-header x-tls-var \"%[var(txn.tls.seen)]\"\n    default_backend app\n\
frontend app_server\n    bind 127.0.0.1:{app}\n    http-request return status 200 content-type text/plain string ok\n\
backend app\n    server app1 127.0.0.1:{app}\n\
backend agents\n.if version_atleast(3.1)\n    mode spop\n.else\n    mode tcp\n.endif\n    timeout connect 5s\n    timeout server 30s\n    server a1 127.0.0.1:{agent} {server_opts}\n"
    );
    let spoe = "[tls]\nspoe-agent tls-agent\n    messages check\n    option var-prefix tls\n    \
timeout hello 2s\n    timeout idle 30s\n    timeout processing 2s\n    use-backend agents\n    log global\n\n\
spoe-message check\n    args path=path\n    event on-frontend-http-request\n";
    (cfg, spoe.to_owned())
}

/// Serves a TLS agent on `port` in a runtime of its own; returns the agent.
fn start_agent(
    rt: &tokio::runtime::Runtime,
    port: u16,
    acceptor: tls::TlsAcceptor,
) -> Agent<impl haproxy_spop::runtime::Handler> {
    let agent = Agent::builder().build(|req: NotifyRequest| async move {
        let path = req
            .message("check")
            .and_then(|m| m.bytes("path").ok())
            .unwrap_or_default();
        Ack::new().set_var(VarScope::TRANSACTION, "seen", path)
    });
    let listener = rt
        .block_on(Listener::bind_tls(
            format!("127.0.0.1:{port}").parse().unwrap(),
            acceptor,
        ))
        .unwrap();
    rt.spawn({
        let agent = agent.clone();
        async move { agent.serve_listener(listener).await }
    });
    agent
}

fn get(port: u16, path: &str) -> Option<String> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let resp = http_request(port, req.as_bytes());
    assert_eq!(resp.status, 200);
    resp.header("x-tls-var").map(str::to_owned)
}

/// Waits until a request comes back with the agent's variable.
fn wait_var(www: u16, haproxy: &HaProxy) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if get(www, "/over-tls").as_deref() == Some("/over-tls") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no variable over TLS; HAProxy log:\n{}",
            haproxy.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn verified_tls(version: Version) {
    let pki = Pki::new(version.line());
    let (www, app, agent_port) = (free_port(), free_port(), free_port());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let acceptor = tls::acceptor(&pki.path("agent.pem"), &pki.path("agent.key"), None).unwrap();
    let agent = start_agent(&rt, agent_port, acceptor);
    let opts = format!(
        "ssl verify required ca-file {} verifyhost agent.test",
        pki.path("agent-ca.pem").display()
    );
    let (cfg, spoe) = config(www, app, agent_port, &opts);
    let haproxy = HaProxy::start(version, &cfg, Some(&spoe));
    wait_var(www, &haproxy);
    for i in 0..10 {
        assert_eq!(
            get(www, &format!("/r{i}")).as_deref(),
            Some(format!("/r{i}").as_str())
        );
    }
    assert!(
        agent
            .stats()
            .frames_received(haproxy_spop::FrameType::NOTIFY)
            >= 11
    );
    assert_eq!(agent.stats().tls_handshake_failures(), 0);
    agent.shutdown();
}

fn mutual_tls(version: Version) {
    let pki = Pki::new(&format!("m{}", version.line()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let acceptor = tls::acceptor(
        &pki.path("agent.pem"),
        &pki.path("agent.key"),
        Some(&pki.path("client-ca.pem")),
    )
    .unwrap();
    let agent_port = free_port();
    let agent = start_agent(&rt, agent_port, acceptor);
    let verify = format!(
        "ssl verify required ca-file {} verifyhost agent.test",
        pki.path("agent-ca.pem").display()
    );
    // Without a client certificate: refused, counted, production unharmed.
    {
        let (www, app) = (free_port(), free_port());
        let (cfg, spoe) = config(www, app, agent_port, &verify);
        let haproxy = HaProxy::start(version, &cfg, Some(&spoe));
        let deadline = Instant::now() + Duration::from_secs(10);
        while agent.stats().tls_handshake_failures() == 0 {
            assert_eq!(
                get(www, "/no-cert"),
                Some(String::new()),
                "{}",
                haproxy.log()
            );
            assert!(
                Instant::now() < deadline,
                "no refused handshake:\n{}",
                haproxy.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            agent
                .stats()
                .frames_received(haproxy_spop::FrameType::NOTIFY),
            0
        );
    }
    // With it: served.
    let (www, app) = (free_port(), free_port());
    let opts = format!("{verify} crt {}", pki.path("client.pem").display());
    let (cfg, spoe) = config(www, app, agent_port, &opts);
    let haproxy = HaProxy::start(version, &cfg, Some(&spoe));
    wait_var(www, &haproxy);
    agent.shutdown();
}

per_version!(haproxy_verifies_the_agent_over_tls, verified_tls);
per_version!(
    mutual_tls_refuses_haproxy_without_a_client_certificate,
    mutual_tls
);

#[test]
fn bad_files_are_clear_errors() {
    let missing = Path::new("/nonexistent/agent.pem");
    let err = tls::acceptor(missing, missing, None).err().unwrap();
    assert!(err.to_string().contains("/nonexistent/agent.pem"), "{err}");
    let pki = Pki::new("bad");
    // A key that is not the certificate's.
    std::fs::write(
        pki.path("other.key"),
        KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let err = tls::acceptor(&pki.path("agent.pem"), &pki.path("other.key"), None)
        .err()
        .unwrap();
    assert!(err.to_string().contains("agent.pem"), "{err}");
    // A certificate file with no certificate.
    let err = tls::acceptor(&pki.path("agent.key"), &pki.path("agent.key"), None)
        .err()
        .unwrap();
    assert!(err.to_string().contains("no certificate"), "{err}");
}
