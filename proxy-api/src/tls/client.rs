//! The client side of mutual TLS: a connector for tonic channels that dials
//! TCP and shakes hands with rustls, presenting this process's certificate
//! and checking the server's against the CA, both read from the current
//! [`Material`] at every handshake.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::Material;
use crate::coalesce::Coalesce;

#[derive(Debug)]
struct Resolver(Arc<Material>);

impl ResolvesClientCert for Resolver {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.current().key))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[derive(Debug)]
struct ServerVerifier(Arc<Material>);

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.current().servers.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .servers
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .servers
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().servers.supported_verify_schemes()
    }
}

/// Every remote client's TLS: presents this process's certificate and
/// accepts only servers whose certificate the CA signed for the expected name.
#[derive(Clone)]
pub struct ClientTls {
    material: Arc<Material>,
    connector: tokio_rustls::TlsConnector,
    /// The name server certificates must carry, when not the endpoint's host.
    server_name: Option<ServerName<'static>>,
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.material, &other.material)
    }
}

impl Eq for ClientTls {}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("material", &self.material)
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl ClientTls {
    /// The client side over `material`.
    pub fn new(material: Arc<Material>) -> Result<Self, rustls::Error> {
        let mut config = rustls::ClientConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            // Not a weaker check: the web PKI verifier over the CA, re-read
            // from the current material at every handshake.
            .with_custom_certificate_verifier(Arc::new(ServerVerifier(Arc::clone(&material))))
            .with_client_cert_resolver(Arc::new(Resolver(Arc::clone(&material))));
        config.alpn_protocols = vec![b"h2".to_vec()];
        // Every new connection checks the server's certificate against the
        // current CA (see the server side: no resumption either way).
        config.resumption = rustls::client::Resumption::disabled();
        let server_name = match material.config().server_name.as_str() {
            "" => None,
            name => Some(
                ServerName::try_from(name.to_owned())
                    .map_err(|e| rustls::Error::General(format!("server_name {name:?}: {e}")))?,
            ),
        };
        Ok(Self {
            material,
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// The material it presents and verifies with.
    pub fn material(&self) -> &Arc<Material> {
        &self.material
    }

    /// A connector for `tonic::transport::Endpoint::connect_with_connector*`:
    /// the endpoint's URI stays `http://host:port`, the bytes go over TLS.
    pub fn connector(&self) -> Connector {
        Connector { tls: self.clone() }
    }
}

/// See [`ClientTls::connector`].
#[derive(Clone, Debug)]
pub struct Connector {
    tls: ClientTls,
}

type Connecting = Pin<
    Box<
        dyn Future<Output = Result<TokioIo<TlsStream<Coalesce<TcpStream>>>, std::io::Error>> + Send,
    >,
>;

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<TlsStream<Coalesce<TcpStream>>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, why);
            let name = match &tls.server_name {
                Some(name) => name.clone(),
                None => {
                    let host = crate::coalesce::host(&uri)?.to_owned();
                    ServerName::try_from(host.clone())
                        .map_err(|e| invalid(format!("{host}: not a server name: {e}")))?
                }
            };
            let tcp = crate::coalesce::connect(&uri).await?;
            let stream = tls.connector.connect(name, Coalesce::new(tcp)).await?;
            Ok(TokioIo::new(stream))
        })
    }
}
