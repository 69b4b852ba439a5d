//! The files behind mutual TLS, loaded, checked and reloaded: this process's
//! certificate chain and key, and the CA that signs every peer's certificate.
//! Each handshake reads the current material, so files replaced on disk (a
//! rotated Kubernetes secret) take effect without a restart; a replacement
//! that does not load is logged and the material in use stays.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// The `[process.tls]` section: mutual TLS for the server and every client
/// of this process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Serve and call over mutual TLS only; plaintext and peers whose
    /// certificate the CA did not sign are refused.
    pub enabled: bool,
    /// PEM certificate chain of this process (leaf first).
    pub cert_file: String,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// PEM CA certificate(s) every peer's certificate must chain to.
    pub ca_file: String,
    /// The name every server certificate must carry; empty: the host of the
    /// endpoint called (its DNS name or IP address as written).
    pub server_name: String,
    /// How often the files are checked for changes (certificate rotation).
    pub reload_interval_ms: u64,
    /// A plaintext listener serving only `grpc.health.v1`, for probes that
    /// speak no TLS (the kubelet's gRPC probes); empty: none.
    pub health_listen: String,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            cert_file: String::new(),
            key_file: String::new(),
            ca_file: String::new(),
            server_name: String::new(),
            reload_interval_ms: 5_000,
            health_listen: String::new(),
        }
    }
}

impl TlsConfig {
    /// Checks the keys and loads the files once; `prefix` is the section's
    /// dotted path. Errors name the key and the file.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if self.reload_interval_ms == 0 {
            return Err(ConfigError::new(
                format!("{prefix}.reload_interval_ms"),
                "must be greater than 0",
            ));
        }
        if !self.server_name.is_empty()
            && rustls_pki_types::ServerName::try_from(self.server_name.as_str()).is_err()
        {
            return Err(ConfigError::new(
                format!("{prefix}.server_name"),
                format!("{:?} is not a DNS name or IP address", self.server_name),
            ));
        }
        if !self.health_listen.is_empty()
            && self.health_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ConfigError::new(
                format!("{prefix}.health_listen"),
                format!("{:?} is not host:port", self.health_listen),
            ));
        }
        Loaded::read(self, prefix).map(|_| ())
    }

    fn files(&self) -> [(&'static str, &str); 3] {
        [
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
            ("ca_file", &self.ca_file),
        ]
    }
}

/// The crypto provider every TLS config of the process uses (ring).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One consistent set of material.
pub(crate) struct Loaded {
    /// The files' bytes, to tell whether they changed.
    raw: [Vec<u8>; 3],
    /// This process's certificate and key.
    pub(crate) key: Arc<CertifiedKey>,
    /// Verifies clients' certificates against the CA.
    pub(crate) clients: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    /// Verifies servers' certificates against the CA.
    pub(crate) servers: Arc<rustls::client::WebPkiServerVerifier>,
}

impl Loaded {
    /// Reads and checks the three files; errors name `prefix.<key>` and the file.
    fn read(config: &TlsConfig, prefix: &str) -> Result<Self, ConfigError> {
        let mut raw: [Vec<u8>; 3] = Default::default();
        for (slot, (key, path)) in raw.iter_mut().zip(config.files()) {
            let err = |why: String| ConfigError::new(format!("{prefix}.{key}"), why);
            if path.is_empty() {
                return Err(err(format!("required when {prefix}.enabled is true")));
            }
            *slot = std::fs::read(path).map_err(|e| err(format!("cannot read {path}: {e}")))?;
        }
        Self::parse(config, prefix, raw)
    }

    fn parse(config: &TlsConfig, prefix: &str, raw: [Vec<u8>; 3]) -> Result<Self, ConfigError> {
        let err = |key: &str, path: &str, why: String| {
            ConfigError::new(format!("{prefix}.{key}"), format!("{path}: {why}"))
        };
        let certs = |key: &str, path: &str, bytes: &[u8]| {
            let certs = CertificateDer::pem_slice_iter(bytes)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(key, path, format!("invalid PEM: {e}")))?;
            match certs.is_empty() {
                true => Err(err(key, path, "no PEM certificate in the file".into())),
                false => Ok(certs),
            }
        };
        let chain = certs("cert_file", &config.cert_file, &raw[0])?;
        let private = PrivateKeyDer::from_pem_slice(&raw[1]).map_err(|e| {
            err(
                "key_file",
                &config.key_file,
                format!("no usable PEM private key: {e}"),
            )
        })?;
        let provider = provider();
        let key = CertifiedKey::from_der(chain, private, &provider).map_err(|e| {
            err(
                "key_file",
                &config.key_file,
                format!("does not go with {}: {e}", config.cert_file),
            )
        })?;
        let mut roots = RootCertStore::empty();
        for ca in certs("ca_file", &config.ca_file, &raw[2])? {
            roots.add(ca).map_err(|e| {
                err(
                    "ca_file",
                    &config.ca_file,
                    format!("not a CA certificate: {e}"),
                )
            })?;
        }
        let roots = Arc::new(roots);
        let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::clone(&roots),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|e| err("ca_file", &config.ca_file, e.to_string()))?;
        let servers = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| err("ca_file", &config.ca_file, e.to_string()))?;
        Ok(Self {
            raw,
            key: Arc::new(key),
            clients,
            servers,
        })
    }
}

/// The material in use, shared by the server and every client of the
/// process, and replaced whole when the files change.
pub struct Material {
    config: TlsConfig,
    current: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("cert_file", &self.config.cert_file)
            .field("ca_file", &self.config.ca_file)
            .finish()
    }
}

impl Material {
    /// Loads the files `config` names (`prefix` is its dotted path, for
    /// errors) and, inside a tokio runtime, starts checking them every
    /// `reload_interval_ms`; the check ends when the material is dropped.
    pub fn load(config: &TlsConfig, prefix: &str) -> Result<Arc<Self>, ConfigError> {
        let loaded = Loaded::read(config, prefix)?;
        let material = Arc::new(Self {
            config: config.clone(),
            current: RwLock::new(Arc::new(loaded)),
        });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let interval = Duration::from_millis(config.reload_interval_ms.max(1));
            handle.spawn(watch(
                Arc::downgrade(&material),
                interval,
                prefix.to_owned(),
            ));
        }
        Ok(material)
    }

    /// The material in use now.
    pub(crate) fn current(&self) -> Arc<Loaded> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The settings it was loaded from.
    pub fn config(&self) -> &TlsConfig {
        &self.config
    }

    /// Reads the files again and swaps the material in if they changed and
    /// load; returns whether it swapped.
    pub fn reload(&self, prefix: &str) -> Result<bool, ConfigError> {
        let mut raw: [Vec<u8>; 3] = Default::default();
        for (slot, (key, path)) in raw.iter_mut().zip(self.config.files()) {
            *slot = std::fs::read(path).map_err(|e| {
                ConfigError::new(
                    format!("{prefix}.{key}"),
                    format!("cannot read {path}: {e}"),
                )
            })?;
        }
        if raw == self.current().raw {
            return Ok(false);
        }
        let loaded = Loaded::parse(&self.config, prefix, raw)?;
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Arc::new(loaded);
        Ok(true)
    }
}

/// Checks the files every `interval` while the material is in use.
async fn watch(material: Weak<Material>, interval: Duration, prefix: String) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(material) = material.upgrade() else {
            return;
        };
        match material.reload(&prefix) {
            Ok(true) => tracing::info!(
                cert_file = %material.config.cert_file,
                "TLS certificate files changed: new handshakes use them"
            ),
            Ok(false) => {}
            // A rotation can be caught half-written: the next check retries.
            Err(e) => tracing::warn!("TLS files not reloaded, the loaded ones stay: {e}"),
        }
    }
}
