//! TLS to `https://` targets, with rustls (the `ring` provider).
//!
//! Certificates are verified against the system's root store by default
//! (`rustls-native-certs`: on Debian, `/etc/ssl/certs`, read once per
//! process), so that a CA the operator installed system-wide is trusted; a
//! system without one (small container images often have none) falls back
//! to the Mozilla roots compiled in by `webpki-roots`, with a warning.
//! `tls_ca_file` replaces either with a private CA.
//! `tls_client_cert`/`tls_client_key` present a client certificate (mTLS).
//! SNI and the name verified are the URL's host, or `tls_server_name`.
//! ALPN offers `h2` and `http/1.1` (`http2`: `h2` only; `http1_only`:
//! `http/1.1` only); the server's choice decides the protocol spoken.

use std::io;
use std::path::Path;
use std::sync::Arc;

use http::Uri;
use tokio::net::TcpStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::TrustAnchor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_rustls::TlsConnector;

use crate::config::Config;

/// A target's TLS settings, ready to connect.
#[derive(Clone)]
pub struct Client {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("tls::Client")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// A TLS stream to a target, and whether `h2` was negotiated.
pub type Stream = tokio_rustls::client::TlsStream<TcpStream>;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    Ok(certs)
}

impl Client {
    /// The TLS client of a target with these effective settings.
    ///
    /// # Errors
    ///
    /// An unreadable or invalid file, or a bad server name.
    pub fn new(uri: &Uri, c: &Config) -> Result<Self, String> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if c.tls_insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
        } else {
            let mut roots = RootCertStore::empty();
            match &c.tls_ca_file {
                Some(path) => {
                    for cert in certs(path)? {
                        roots
                            .add(cert)
                            .map_err(|e| format!("{}: {e}", path.display()))?;
                    }
                }
                None => roots.extend(system_roots().iter().cloned()),
            }
            builder.with_root_certificates(roots)
        };
        let mut config = match (&c.tls_client_cert, &c.tls_client_key) {
            (Some(cert), Some(key)) => {
                let chain = certs(cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("{}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("client certificate: {e}"))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err("tls_client_cert and tls_client_key go together".to_owned()),
        };
        config.alpn_protocols = if c.http2 {
            vec![b"h2".to_vec()]
        } else if c.http1_only {
            vec![b"http/1.1".to_vec()]
        } else {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        };
        let host = match &c.tls_server_name {
            Some(n) => n.clone(),
            None => uri
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        };
        let server_name =
            ServerName::try_from(host.clone()).map_err(|e| format!("server name {host:?}: {e}"))?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// The TLS handshake on a connected stream; `true` with it if the
    /// server chose `h2`.
    ///
    /// # Errors
    ///
    /// The handshake failed (bad certificate, no common protocol...).
    pub async fn connect(&self, tcp: TcpStream) -> io::Result<(Stream, bool)> {
        let stream = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await?;
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok((stream, h2))
    }
}

/// `tls_insecure`: any certificate is accepted (signatures are still checked
/// against the certificate presented, so the handshake itself is sound).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Whether a request's error came from TLS (e.g. the server refusing the
/// client certificate, which TLS 1.3 reports after the handshake, on the
/// first read). HTTP/1.1 keeps rustls's error as the I/O error's cause;
/// HTTP/2 (the `h2` crate) keeps only its text, so rustls's messages are
/// recognized too.
pub fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    const RUSTLS: [&str; 5] = [
        "received fatal alert",
        "invalid peer certificate",
        "peer is incompatible",
        "peer misbehaved",
        "peer sent no certificates",
    ];
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(inner) = io.get_ref() {
                if inner.is::<rustls::Error>() {
                    return true;
                }
                let text = inner.to_string();
                if io.kind() == io::ErrorKind::InvalidData
                    && RUSTLS.iter().any(|p| text.starts_with(p))
                {
                    return true;
                }
            }
        }
        cur = err.source();
    }
    false
}

/// The system's trust anchors, read once; the compiled-in Mozilla roots
/// when the system has none.
fn system_roots() -> &'static [TrustAnchor<'static>] {
    static ROOTS: std::sync::OnceLock<Vec<TrustAnchor<'static>>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let anchors: Vec<TrustAnchor<'static>> = found
            .certs
            .iter()
            .filter_map(|c| {
                webpki::anchor_from_trusted_cert(c)
                    .ok()
                    .map(|a| a.to_owned())
            })
            .collect();
        if anchors.is_empty() {
            tracing::warn!(
                errors = found.errors.len(),
                "no system root certificates found; https targets are verified against the compiled-in Mozilla roots"
            );
            webpki_roots::TLS_SERVER_ROOTS.to_vec()
        } else {
            tracing::debug!(roots = anchors.len(), "system root certificates loaded");
            anchors
        }
    })
}
