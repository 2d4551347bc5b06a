//! Opening connections: TCP, TLS when the `tls` feature is on, then redis-rs on the stream.
//!
//! The provider dials itself instead of through `redis::Client` so that TLS uses a rustls
//! `ClientConfig` built with an explicit crypto provider: redis-rs builds its own with
//! `ClientConfig::builder()`, which installs a process-wide default provider as a side effect
//! (and an application's later `install_default().expect()` would then panic).

use std::time::Duration;

use leasehold_core::{Error, ErrorKind, Result};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisConnectionInfo};
use tokio::net::TcpStream;

use crate::config::{NodeAddr, TlsFiles};
use crate::errors;

/// How to reach nodes: timeouts and, with TLS, the rustls client configuration.
#[derive(Clone)]
pub(crate) struct Dialer {
    pub connect_timeout: Duration,
    pub conn_config: AsyncConnectionConfig,
    #[cfg(feature = "tls")]
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Dialer {
    pub(crate) fn new(
        connect_timeout: Duration,
        command_timeout: Duration,
        tls: Option<&TlsFiles>,
    ) -> Result<Dialer> {
        let conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(command_timeout));
        #[cfg(not(feature = "tls"))]
        let _ = tls;
        Ok(Dialer {
            connect_timeout,
            conn_config,
            #[cfg(feature = "tls")]
            tls: tls.map(tls::client_config).transpose()?,
        })
    }

    /// Connects to `addr` and runs the handshake of `info` (`AUTH`, `CLIENT SETINFO`).
    /// `scrub` is kept out of error messages.
    pub(crate) async fn dial(
        &self,
        addr: &NodeAddr,
        info: &RedisConnectionInfo,
        scrub: Option<&str>,
    ) -> Result<MultiplexedConnection> {
        let label = addr.label.as_str();
        let setup = async {
            let tcp = TcpStream::connect((addr.host.as_str(), addr.port))
                .await
                .map_err(|e| unavailable(label, &e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            if addr.tls {
                #[cfg(feature = "tls")]
                {
                    let stream = self.tls_handshake(addr, tcp).await?;
                    return self.redis_on(addr, info, stream, scrub).await;
                }
                #[cfg(not(feature = "tls"))]
                return Err(Error::invalid_config(format!(
                    "node {label}: TLS needs the leasehold-redis feature \"tls\""
                )));
            }
            self.redis_on(addr, info, tcp, scrub).await
        };
        match tokio::time::timeout(self.connect_timeout, setup).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("node {label}: connect timed out"),
            )
            .with_context("node", label)
            .with_context("operation", "connect")),
        }
    }

    async fn redis_on<S>(
        &self,
        addr: &NodeAddr,
        info: &RedisConnectionInfo,
        stream: S,
        scrub: Option<&str>,
    ) -> Result<MultiplexedConnection>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (conn, driver) =
            MultiplexedConnection::new_with_config(info, stream, self.conn_config.clone())
                .await
                .map_err(|e| errors::map(&e, &addr.label, "connect", scrub))?;
        tokio::spawn(driver);
        Ok(conn)
    }

    #[cfg(feature = "tls")]
    async fn tls_handshake(
        &self,
        addr: &NodeAddr,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let label = addr.label.as_str();
        let config = self
            .tls
            .clone()
            .ok_or_else(|| Error::invalid_config(format!("node {label}: TLS is not configured")))?;
        let name = rustls::pki_types::ServerName::try_from(addr.host.clone()).map_err(|e| {
            Error::invalid_config(format!(
                "node {label}: {:?} is not a TLS name: {e}",
                addr.host
            ))
        })?;
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| {
                let text = e.to_string();
                if text.contains("certificate") || text.contains("Certificate") {
                    Error::invalid_config(format!(
                        "node {label}: the TLS handshake failed: {text} (check ca_cert and \
                         the node's certificate)"
                    ))
                    .with_context("node", label)
                    .with_context("operation", "connect")
                } else {
                    unavailable(label, &format!("TLS handshake: {text}"))
                }
            })
    }
}

fn unavailable(label: &str, why: &str) -> Error {
    Error::new(
        ErrorKind::ProviderUnavailable,
        format!("node {label}: connect failed: {why}"),
    )
    .with_context("node", label)
    .with_context("operation", "connect")
    .temporary()
}

#[cfg(feature = "tls")]
mod tls {
    use std::sync::Arc;

    use leasehold_core::{Error, Result};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    use crate::config::TlsFiles;

    /// The crypto provider TLS uses: the process default when the application installed one,
    /// otherwise aws-lc-rs, handed to this `ClientConfig` only (nothing is installed).
    fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
        match rustls::crypto::CryptoProvider::get_default() {
            Some(p) => p.clone(),
            None => Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        }
    }

    pub(super) fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        match &files.ca_cert {
            Some(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| {
                        Error::invalid_config(format!("ca_cert: not a PEM certificate: {e}"))
                    })?;
                    roots
                        .add(cert)
                        .map_err(|e| Error::invalid_config(format!("ca_cert: refused: {e}")))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err(Error::invalid_config(
                        "ca_cert: not set, and the system trust store has no certificate",
                    ));
                }
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::invalid_config(format!("tls: {e}")))?
            .with_root_certificates(roots);
        let config = match &files.client {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| Error::invalid_config(format!("client_cert: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| Error::invalid_config(format!("client_key: {e}")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| Error::invalid_config(format!("client_cert: {e}")))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}
