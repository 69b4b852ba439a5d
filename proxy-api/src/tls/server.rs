//! The server side of mutual TLS: a rustls acceptor whose certificate and
//! client verifier are read from the current [`Material`] at every
//! handshake, and the listener loop that hands tonic only connections whose
//! handshake succeeded. Handshakes run concurrently, each bounded in time,
//! so a plaintext or stalled client cannot hold up the others.

use std::sync::Arc;
use std::time::Duration;

use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

use super::Material;
use crate::coalesce::Coalesce;

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections whose handshake finished, waiting for the server to take them.
const ACCEPTED_BACKLOG: usize = 128;

#[derive(Debug)]
struct Resolver(Arc<Material>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.current().key))
    }
}

#[derive(Debug)]
struct ClientVerifier(Arc<Material>);

impl ClientCertVerifier for ClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; the CA may change under us, so none are sent.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .current()
            .clients
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .clients
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .clients
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().clients.supported_verify_schemes()
    }
}

/// The server's TLS: requires a client certificate signed by the CA.
#[derive(Clone)]
pub struct ServerTls {
    material: Arc<Material>,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.material, &other.material)
    }
}

impl Eq for ServerTls {}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("material", &self.material)
            .finish()
    }
}

impl ServerTls {
    /// The server side over `material`.
    pub fn new(material: Arc<Material>) -> Result<Self, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::new(ClientVerifier(Arc::clone(&material))))
            .with_cert_resolver(Arc::new(Resolver(Arc::clone(&material))));
        config.alpn_protocols = vec![b"h2".to_vec()];
        // No session resumption: a resumed session skips the certificate
        // check, so a peer whose certificate no longer chains to the current
        // CA (rotated away) could keep reconnecting. Connections are
        // long-lived HTTP/2, so the full handshake is rare anyway.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Self {
            material,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Accepts on `listener` until `stop` resolves (or the stream is
    /// dropped): every connection is handshaken on its own task, and those
    /// that succeed are yielded.
    pub fn incoming(
        &self,
        listener: TcpListener,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio_stream::wrappers::ReceiverStream<
        Result<TlsStream<Coalesce<TcpStream>>, std::io::Error>,
    > {
        let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_BACKLOG);
        let acceptor = self.acceptor.clone();
        tokio::spawn(async move {
            tokio::pin!(stop);
            loop {
                let (tcp, peer) = tokio::select! {
                    () = &mut stop => return,
                    () = tx.closed() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!("accept: {e}");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        acceptor.accept(Coalesce::new(tcp)),
                    )
                    .await
                    {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(tls)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake refused: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}
