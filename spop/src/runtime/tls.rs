//! TLS between HAProxy and the agent (feature `tls`).
//!
//! HAProxy speaks TLS to an agent whose `server` line says `ssl` (checked on
//! 2.6, 3.0, 3.2 and 3.4: the HAPROXY-HELLO arrives inside TLS):
//!
//! ```text
//! backend agents
//!     mode tcp
//!     server agent1 127.0.0.1:12345 ssl verify required ca-file /etc/haproxy/agent-ca.pem
//!     # with a client certificate for mutual TLS:
//!     # server agent1 127.0.0.1:12345 ssl verify required ca-file agent-ca.pem crt haproxy-client.pem
//! ```
//!
//! The agent side: [`acceptor`] builds a [`TlsAcceptor`] from PEM files
//! (optionally requiring a client certificate signed by a given CA), and
//! [`Listener::bind_tls`](super::Listener::bind_tls) serves a TCP address with it. The
//! handshake runs in the connection's own task, bounded by the hello
//! timeout; a failed handshake closes that connection only and is counted
//! ([`Stats::tls_handshake_failures`](super::Stats::tls_handshake_failures)).

use std::io;
use std::path::Path;
use std::sync::Arc;

pub use tokio_rustls::rustls;
pub use tokio_rustls::TlsAcceptor;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

fn invalid(what: &Path, err: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {err}", what.display()),
    )
}

fn certificates(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| invalid(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, e))?;
    if certs.is_empty() {
        return Err(invalid(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// A TLS acceptor for an agent: its certificate chain and private key (PEM
/// files), and, for mutual TLS, the CA certificates (PEM) that HAProxy's
/// client certificate must chain to (`client_ca`; without it, no client
/// certificate is asked for). TLS 1.2 and 1.3, ALPN not used.
///
/// # Errors
///
/// A file that cannot be read or holds no usable certificate or key, or a
/// key that does not match the certificate.
pub fn acceptor(
    cert_chain: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> io::Result<TlsAcceptor> {
    let certs = certificates(cert_chain)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid(key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?;
    let builder = match client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(path)? {
                roots.add(cert).map_err(|e| invalid(path, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| invalid(path, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| invalid(cert_chain, e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
