//! How a `grpc` binding is configured, checked and turned into a channel.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};

use crate::ConfigError;

/// How callers in this process reach a stage it does not host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteConfig {
    /// `http://host:port` URLs; more than one are balanced (power of two choices).
    pub endpoints: Vec<String>,
    /// Bound on establishing a connection, so an unreachable stage fails fast.
    pub connect_timeout_ms: u64,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            connect_timeout_ms: 1_000,
        }
    }
}

impl RemoteConfig {
    /// Checks the values; `prefix` is this section's dotted path
    /// (`remote.split`), used in the error's key.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.endpoints.is_empty() {
            return Err(ConfigError::new(
                format!("{prefix}.endpoints"),
                "a remote stage needs at least one endpoint (http://host:port)",
            ));
        }
        if self.connect_timeout_ms == 0 {
            return Err(ConfigError::new(
                format!("{prefix}.connect_timeout_ms"),
                "must be greater than 0",
            ));
        }
        for (i, url) in self.endpoints.iter().enumerate() {
            check_endpoint(url)
                .map_err(|why| ConfigError::new(format!("{prefix}.endpoints[{i}]"), why))?;
        }
        Ok(())
    }

    /// A lazily connecting channel over every endpoint. Must run inside a
    /// tokio runtime (the balancer spawns its worker).
    pub fn channel(&self, prefix: &str) -> Result<Channel, ConfigError> {
        self.validate(prefix)?;
        let timeout = Duration::from_millis(self.connect_timeout_ms);
        let mut endpoints = Vec::with_capacity(self.endpoints.len());
        for (i, url) in self.endpoints.iter().enumerate() {
            let endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| ConfigError::new(format!("{prefix}.endpoints[{i}]"), e.to_string()))?
                .connect_timeout(timeout)
                .tcp_nodelay(true);
            endpoints.push(endpoint);
        }
        Ok(match endpoints.as_slice() {
            [one] => one.connect_lazy(),
            _ => Channel::balance_list(endpoints.into_iter()),
        })
    }
}

/// Accepts `http://host:port` with nothing after the authority but `/`.
fn check_endpoint(url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("invalid endpoint URL {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(format!(
                "invalid endpoint URL {url:?}: scheme `{other}` is not supported (use http://)"
            ));
        }
        None => {
            return Err(format!(
                "invalid endpoint URL {url:?}: missing scheme (use http://host:port)"
            ));
        }
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("invalid endpoint URL {url:?}: missing host"))?;
    if authority.host().is_empty() {
        return Err(format!("invalid endpoint URL {url:?}: missing host"));
    }
    if authority.port_u16().is_none() {
        return Err(format!("invalid endpoint URL {url:?}: missing port"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "invalid endpoint URL {url:?}: only http://host:port is accepted"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(urls: &[&str]) -> RemoteConfig {
        RemoteConfig {
            endpoints: urls.iter().map(|s| s.to_string()).collect(),
            ..RemoteConfig::default()
        }
    }

    #[test]
    fn accepts_host_port() {
        assert_eq!(
            remote(&["http://127.0.0.1:50052"]).validate("remote.split"),
            Ok(())
        );
        assert_eq!(
            remote(&["http://split.feeds.svc:50051/"]).validate("remote.split"),
            Ok(())
        );
    }

    #[test]
    fn rejects_bad_urls_naming_the_index() {
        for bad in [
            "127.0.0.1:50052",
            "htp://x:1",
            "http://:50052",
            "http://host",
            "https://h:1",
            "http://h:1/x",
            "not a url",
        ] {
            let err = remote(&["http://ok:1", bad])
                .validate("remote.split")
                .expect_err(bad);
            assert_eq!(err.key, "remote.split.endpoints[1]", "{bad}: {err}");
        }
    }

    #[test]
    fn rejects_no_endpoint() {
        let err = remote(&[]).validate("remote.rerank").expect_err("empty");
        assert_eq!(err.key, "remote.rerank.endpoints");
    }
}
