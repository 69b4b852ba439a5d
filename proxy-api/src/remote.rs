//! How a `grpc` binding is configured, checked and turned into a channel.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// How callers in this process reach a stage it does not host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteConfig {
    /// `http://host:port` (one endpoint) or `dns:///host:port` (every
    /// address the name resolves to, re-resolved; a Kubernetes headless
    /// Service). All of them are balanced with power of two choices.
    pub endpoints: Vec<String>,
    /// Bound on establishing a connection, so an unreachable stage fails fast.
    pub connect_timeout_ms: u64,
    /// How often `dns:///` names are resolved again.
    pub resolve_interval_ms: u64,
    /// How often every endpoint's gRPC health is probed.
    pub health_interval_ms: u64,
    /// HTTP/2 keepalive ping interval on idle and busy connections; 0 turns it off.
    pub keepalive_ms: u64,
    /// How long a keepalive ping may go unanswered before the connection is dropped.
    pub keepalive_timeout_ms: u64,
    /// Attempts per call, counting the first; only calls that never reached
    /// a server are retried, on another endpoint. 1 turns retries off.
    pub max_attempts: u32,
    /// Retry budget (gRFC A6): tokens in the bucket; retries stop while it is
    /// at or below half.
    pub retry_budget_tokens: u32,
    /// Tokens a successful call puts back.
    pub retry_token_ratio: f64,
    /// Deterministic subsetting: balance over this many of the endpoints
    /// (0 = all of them).
    pub subset_size: usize,
    /// This client's subsetting id; default: a hash of the host name.
    pub subset_client_id: Option<u64>,
    /// More pools of the same stage by name (`canary`, `v2`, ...), each a
    /// complete remote config, for routes to send calls to. The config
    /// above is the pool named `default`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pools: BTreeMap<String, RemoteConfig>,
    /// Mutual TLS for these connections: the process's `[process.tls]`,
    /// attached by the process (never written in a config file).
    #[serde(skip)]
    pub tls: Option<crate::tls::ClientTls>,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            connect_timeout_ms: 1_000,
            resolve_interval_ms: 5_000,
            health_interval_ms: 1_000,
            keepalive_ms: 20_000,
            keepalive_timeout_ms: 10_000,
            max_attempts: 2,
            retry_budget_tokens: 10,
            retry_token_ratio: 0.1,
            subset_size: 0,
            subset_client_id: None,
            pools: BTreeMap::new(),
            tls: None,
        }
    }
}

impl RemoteConfig {
    /// Checks the values; `prefix` is this section's dotted path
    /// (`remote.split`), used in the error's key.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.validate_with(prefix, true)
    }

    /// As [`RemoteConfig::validate`]; without `need_endpoints` (a stage this
    /// process also hosts, reached remotely only through named pools), an
    /// empty `endpoints` means there is no `default` pool.
    pub fn validate_with(&self, prefix: &str, need_endpoints: bool) -> Result<(), ConfigError> {
        for (name, pool) in &self.pools {
            let key = format!("{prefix}.pools.{name}");
            if [crate::route::LOCAL, crate::route::DEFAULT_POOL].contains(&name.as_str())
                || name.is_empty()
            {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "{name:?} is reserved (`local` is in-process, `default` is the section itself)"
                    ),
                ));
            }
            if !pool.pools.is_empty() {
                return Err(ConfigError::new(
                    format!("{key}.pools"),
                    "a pool cannot have pools of its own",
                ));
            }
            pool.validate(&key)?;
        }
        if self.endpoints.is_empty() && !need_endpoints {
            return Ok(());
        }
        if self.endpoints.is_empty() {
            return Err(ConfigError::new(
                format!("{prefix}.endpoints"),
                "a remote stage needs at least one endpoint (http://host:port or dns:///host:port)",
            ));
        }
        for (key, value) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("resolve_interval_ms", self.resolve_interval_ms),
            ("health_interval_ms", self.health_interval_ms),
            ("keepalive_timeout_ms", self.keepalive_timeout_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::new(
                    format!("{prefix}.{key}"),
                    "must be greater than 0",
                ));
            }
        }
        if !(1..=5).contains(&self.max_attempts) {
            return Err(ConfigError::new(
                format!("{prefix}.max_attempts"),
                format!("{} is out of range 1..=5", self.max_attempts),
            ));
        }
        if self.retry_budget_tokens == 0 {
            return Err(ConfigError::new(
                format!("{prefix}.retry_budget_tokens"),
                "must be greater than 0",
            ));
        }
        if !(self.retry_token_ratio > 0.0 && self.retry_token_ratio <= 1.0) {
            return Err(ConfigError::new(
                format!("{prefix}.retry_token_ratio"),
                format!("{} is out of range (0, 1]", self.retry_token_ratio),
            ));
        }
        for (i, url) in self.endpoints.iter().enumerate() {
            check_endpoint(url)
                .map_err(|why| ConfigError::new(format!("{prefix}.endpoints[{i}]"), why))?;
        }
        Ok(())
    }
}

/// `dns:///host:port` split into host and port; `None` when `url` is not a
/// `dns:///` endpoint, an error saying what is wrong when it is a bad one.
pub(crate) fn dns_target(url: &str) -> Option<Result<(&str, u16), String>> {
    let rest = url.strip_prefix("dns:///")?;
    let bad = || format!("invalid endpoint URL {url:?}: expected dns:///host:port");
    Some(match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains('/') => {
            port.parse::<u16>().map(|p| (host, p)).map_err(|_| bad())
        }
        _ => Err(bad()),
    })
}

/// Accepts `http://host:port` with nothing after the authority but `/`, or
/// `dns:///host:port`.
fn check_endpoint(url: &str) -> Result<(), String> {
    if let Some(target) = dns_target(url) {
        return target.map(|_| ());
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("invalid endpoint URL {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(format!(
                "invalid endpoint URL {url:?}: scheme `{other}` is not supported (use http:// or dns:///)"
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
        assert_eq!(
            remote(&["dns:///feeds-split:50051"]).validate("remote.split"),
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
            "dns://split:1",
            "dns:///split",
            "dns:///:1",
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
