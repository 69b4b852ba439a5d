//! The client side of a `grpc` binding: endpoints (static or re-resolved from
//! DNS), optional deterministic subsetting, power-of-two-choices balancing,
//! ejection of endpoints that refuse connections, health probing, and
//! retries under a token-bucket budget (gRFC A6).
//!
//! Why not tonic's own balancer: it cannot say which endpoint a failed call
//! went to, so a dead endpoint keeps its share of calls. Here each endpoint
//! is its own lazily connecting [`Channel`] with an in-flight count, and a
//! call that could not reach an endpoint ejects it and, budget permitting,
//! goes to another one.
//!
//! Only failures where no byte of the call reached the server are retried:
//! a refused or timed-out connection, or a stream the server refused
//! (HTTP/2 `REFUSED_STREAM`, as sent for streams past a GOAWAY).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::codec::Payload;
use crate::{ConfigError, Limits, RemoteConfig, RemoteTarget, Stage};

/// Where a configured endpoint's addresses come from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    /// `http://host:port`: one endpoint, as written.
    Static(String),
    /// `dns:///host:port`: every address the name resolves to, re-resolved.
    Dns { host: String, port: u16 },
}

/// One endpoint: its channel and what the balancer knows about it.
struct Backend {
    /// `http://10.0.0.7:50051` (resolved) or the configured URL.
    key: String,
    channel: Channel,
    in_flight: AtomicUsize,
    /// Nanoseconds since the balancer's epoch until which it gets no calls.
    ejected_until: AtomicU64,
    /// Next ejection length, doubling up to [`MAX_EJECTION`].
    backoff_ms: AtomicU64,
    /// The last health probe said SERVING (true until a probe says otherwise).
    healthy: AtomicBool,
    /// A health probe has answered SERVING at least once.
    answered: AtomicBool,
}

/// One call in flight on a backend, for the power-of-two-choices load.
struct InFlight<'a>(&'a Backend);

impl<'a> InFlight<'a> {
    fn start(backend: &'a Backend) -> Self {
        backend.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(backend)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

const FIRST_EJECTION: Duration = Duration::from_millis(250);
const MAX_EJECTION: Duration = Duration::from_secs(30);

/// Balances one remote stage's calls over its endpoints.
pub struct Balancer {
    target: RemoteTarget,
    config: RemoteConfig,
    epoch: Instant,
    backends: RwLock<Arc<Vec<Arc<Backend>>>>,
    budget: RetryBudget,
    /// The DNS names, if any, so a call made before the first resolution can
    /// say what it is waiting for.
    dns: Vec<String>,
}

impl Balancer {
    /// A balancer for `stage` as `config` describes it. Static endpoints are
    /// set up at once (connecting lazily); DNS names are resolved by a task
    /// that re-resolves every `resolve_interval_ms`. A second task probes
    /// every endpoint's health every `health_interval_ms`. Must run inside a
    /// tokio runtime; the tasks end when the balancer is dropped.
    pub fn new(
        stage: Stage,
        config: &RemoteConfig,
        limits: Limits,
    ) -> Result<Arc<Self>, ConfigError> {
        let prefix = format!("remote.{}", stage.name());
        config.validate(&prefix)?;
        let sources: Vec<Source> = config
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, url)| {
                parse_source(url)
                    .map_err(|why| ConfigError::new(format!("{prefix}.endpoints[{i}]"), why))
            })
            .collect::<Result<_, _>>()?;
        let dns: Vec<String> = sources
            .iter()
            .filter_map(|s| match s {
                Source::Dns { host, port } => Some(format!("{host}:{port}")),
                Source::Static(_) => None,
            })
            .collect();
        let balancer = Arc::new(Self {
            target: RemoteTarget {
                stage,
                endpoints: config.endpoints.clone(),
                limits,
            },
            config: config.clone(),
            epoch: Instant::now(),
            backends: RwLock::new(Arc::new(Vec::new())),
            budget: RetryBudget::new(config.retry_budget_tokens, config.retry_token_ratio),
            dns,
        });
        let statics: Vec<String> = sources
            .iter()
            .filter_map(|s| match s {
                Source::Static(url) => Some(url.clone()),
                Source::Dns { .. } => None,
            })
            .collect();
        balancer.update(statics.clone());
        if !balancer.dns.is_empty() {
            tokio::spawn(resolve_loop(Arc::downgrade(&balancer), statics));
        }
        tokio::spawn(health_loop(Arc::downgrade(&balancer)));
        Ok(balancer)
    }

    /// The stage this balancer reaches.
    pub fn stage(&self) -> Stage {
        self.target.stage
    }

    /// The configured endpoints, as written.
    pub fn endpoints(&self) -> &[String] {
        &self.target.endpoints
    }

    /// The endpoints currently balanced over (after resolution and subsetting).
    pub fn backends(&self) -> Vec<String> {
        self.snapshot().iter().map(|b| b.key.clone()).collect()
    }

    /// The config it was built from.
    pub fn config(&self) -> &RemoteConfig {
        &self.config
    }

    /// True once some endpoint has answered a health probe with SERVING, and
    /// as long as one still does: the stage can be reached.
    pub fn reachable(&self) -> bool {
        self.snapshot()
            .iter()
            .any(|b| b.answered.load(Ordering::Relaxed) && b.healthy.load(Ordering::Relaxed))
    }

    fn snapshot(&self) -> Arc<Vec<Arc<Backend>>> {
        match self.backends.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces the endpoint set with `keys` (after subsetting), keeping the
    /// channel and state of endpoints that stay.
    fn update(&self, mut keys: Vec<String>) {
        keys.sort();
        keys.dedup();
        let keys = subset(
            keys,
            self.config
                .subset_client_id
                .unwrap_or_else(default_client_id),
            self.config.subset_size,
        );
        let current = self.snapshot();
        let old: BTreeMap<&str, &Arc<Backend>> =
            current.iter().map(|b| (b.key.as_str(), b)).collect();
        if keys.len() == old.len() && keys.iter().all(|k| old.contains_key(k.as_str())) {
            return;
        }
        let next: Vec<Arc<Backend>> = keys
            .iter()
            .filter_map(|k| match old.get(k.as_str()) {
                Some(b) => Some(Arc::clone(b)),
                None => self.backend(k),
            })
            .collect();
        tracing::info!(
            stage = self.target.stage.name(),
            endpoints = ?next.iter().map(|b| b.key.as_str()).collect::<Vec<_>>(),
            "endpoints updated"
        );
        let mut guard = match self.backends.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Arc::new(next);
    }

    fn backend(&self, key: &str) -> Option<Arc<Backend>> {
        let endpoint = match Endpoint::from_shared(key.to_owned()) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(stage = self.target.stage.name(), key, "bad endpoint: {e}");
                return None;
            }
        };
        let mut endpoint = endpoint
            .connect_timeout(Duration::from_millis(self.config.connect_timeout_ms))
            .tcp_nodelay(true);
        if self.config.keepalive_ms > 0 {
            endpoint = endpoint
                .http2_keep_alive_interval(Duration::from_millis(self.config.keepalive_ms))
                .keep_alive_timeout(Duration::from_millis(self.config.keepalive_timeout_ms))
                .keep_alive_while_idle(true);
        }
        Some(Arc::new(Backend {
            key: key.to_owned(),
            channel: match &self.config.tls {
                // The connector sets TCP_NODELAY itself.
                Some(tls) => endpoint.connect_with_connector_lazy(tls.connector()),
                None => endpoint.connect_lazy(),
            },
            in_flight: AtomicUsize::new(0),
            ejected_until: AtomicU64::new(0),
            backoff_ms: AtomicU64::new(FIRST_EJECTION.as_millis() as u64),
            healthy: AtomicBool::new(true),
            answered: AtomicBool::new(false),
        }))
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn eject(&self, backend: &Backend) {
        let backoff = backend.backoff_ms.load(Ordering::Relaxed);
        let until = self.now_ns() + backoff * 1_000_000;
        backend.ejected_until.store(until, Ordering::Relaxed);
        backend.backoff_ms.store(
            (backoff * 2).min(MAX_EJECTION.as_millis() as u64),
            Ordering::Relaxed,
        );
        tracing::warn!(
            stage = self.target.stage.name(),
            endpoint = %backend.key,
            ejected_ms = backoff,
            "endpoint unreachable; ejected"
        );
    }

    fn restore(&self, backend: &Backend) {
        backend.ejected_until.store(0, Ordering::Relaxed);
        backend
            .backoff_ms
            .store(FIRST_EJECTION.as_millis() as u64, Ordering::Relaxed);
    }

    /// Power of two choices over the endpoints not yet tried, preferring
    /// healthy, non-ejected ones; if every one is ejected, any will do.
    fn pick(&self, list: &[Arc<Backend>], tried: &[usize]) -> Option<usize> {
        let now = self.now_ns();
        let open = |i: &usize| !tried.contains(i);
        let good = |i: &usize| {
            let b = &list[*i];
            b.ejected_until.load(Ordering::Relaxed) <= now && b.healthy.load(Ordering::Relaxed)
        };
        let not_ejected = |i: &usize| list[*i].ejected_until.load(Ordering::Relaxed) <= now;
        let any = |_: &usize| true;
        // Healthy endpoints first, then any not ejected, then any at all:
        // counted and indexed in place, so picking allocates nothing.
        let tiers: [&dyn Fn(&usize) -> bool; 3] = [&good, &not_ejected, &any];
        for tier in tiers {
            let eligible = || (0..list.len()).filter(open).filter(|i| tier(i));
            let n = eligible().count();
            match n {
                0 => continue,
                1 => return eligible().next(),
                n => {
                    let r = crate::observe::random_u64();
                    let a = (r % n as u64) as usize;
                    let b = ((r >> 32) % (n as u64 - 1)) as usize;
                    let b = if b >= a { b + 1 } else { b };
                    let (a, b) = (eligible().nth(a)?, eligible().nth(b)?);
                    let load = |i: usize| list[i].in_flight.load(Ordering::Relaxed);
                    return Some(if load(b) < load(a) { b } else { a });
                }
            }
        }
        None
    }

    /// Sends `message` (with the headers `metadata` makes, once per
    /// attempt) as a call of the method at `path` to one endpoint; if the
    /// call never reached the server, ejects that endpoint and, within
    /// `max_attempts` and the retry budget, tries another. A call that may
    /// be sent more than once is encoded once and its bytes resent; one
    /// that cannot moves its message into its only attempt. `deadline`
    /// becomes `grpc-timeout` (what is left of it at each attempt).
    /// Transport failures come back as UNAVAILABLE naming the stage.
    pub async fn call<M, R>(
        &self,
        metadata: impl Fn() -> tonic::metadata::MetadataMap,
        message: M,
        deadline: Option<Instant>,
        path: &'static str,
    ) -> Result<Response<R>, Status>
    where
        M: prost::Message + Send + 'static,
        R: prost::Message + Default + Send + 'static,
    {
        let list = self.snapshot();
        let attempts = (self.config.max_attempts as usize).min(list.len()).max(1);
        let mut payload = Some(match attempts > 1 {
            true => Payload::Encoded(crate::codec::encode_once(&message)),
            false => Payload::Message(message),
        });
        let mut tried: Vec<usize> = Vec::new();
        loop {
            let Some(i) = self.pick(&list, &tried) else {
                return Err(self.no_endpoint(&list));
            };
            let backend = &list[i];
            let retry_possible = tried.len() + 1 < attempts;
            let body = match payload.take() {
                Some(Payload::Encoded(bytes)) if retry_possible => {
                    payload = Some(Payload::Encoded(bytes.clone()));
                    Payload::Encoded(bytes)
                }
                Some(body) => body,
                None => return Err(self.no_endpoint(&list)),
            };
            let mut attempt = Request::from_parts(metadata(), Default::default(), body);
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Status::deadline_exceeded(format!(
                        "deadline expired before calling stage `{}`",
                        self.target.stage.name()
                    )));
                }
                attempt.set_timeout(left);
            }
            let out = {
                // Counted until the call ends or is dropped (a caller's
                // deadline can drop it mid-flight).
                let _in_flight = InFlight::start(backend);
                crate::stack::unary(backend.channel.clone(), attempt, path, self.target.limits)
                    .await
            };
            match out {
                Ok(response) => {
                    self.budget.success();
                    if backend.ejected_until.load(Ordering::Relaxed) != 0 {
                        self.restore(backend);
                    }
                    return Ok(response);
                }
                Err(status) if never_sent(&status) => {
                    self.eject(backend);
                    self.budget.failure();
                    if retry_possible && self.budget.allows_retry() {
                        tracing::debug!(
                            stage = self.target.stage.name(),
                            endpoint = %backend.key,
                            "call never reached the endpoint; retrying elsewhere"
                        );
                        crate::observe::count_retry(self.target.stage);
                        tried.push(i);
                        continue;
                    }
                    return Err(self.target.status(status, &backend.key));
                }
                Err(status) => return Err(self.target.status(status, &backend.key)),
            }
        }
    }

    fn no_endpoint(&self, list: &[Arc<Backend>]) -> Status {
        if list.is_empty() && !self.dns.is_empty() {
            return Status::unavailable(format!(
                "stage `{}`: no address resolved yet for {}",
                self.target.stage.name(),
                self.dns.join(", ")
            ));
        }
        Status::unavailable(format!(
            "stage `{}`: no endpoint available ({})",
            self.target.stage.name(),
            self.target.endpoints.join(", ")
        ))
    }

    /// Client message size limits.
    pub fn limits(&self) -> Limits {
        self.target.limits
    }
}

/// True when the call provably never reached the server: the connection was
/// refused or could not be made in time, or the server refused the stream.
fn never_sent(status: &Status) -> bool {
    use std::error::Error as _;
    use std::io::ErrorKind;
    if status.code() != tonic::Code::Unavailable && status.code() != tonic::Code::Unknown {
        return false;
    }
    let mut next = status.source();
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::AddrNotAvailable
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
            )
        {
            return true;
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>()
            && h2.reason() == Some(h2::Reason::REFUSED_STREAM)
        {
            return true;
        }
        let text = e.to_string();
        if text.contains("tcp connect error") || text.contains("connect timed out") {
            return true;
        }
        if e.downcast_ref::<tonic::transport::Error>().is_some() && text.contains("timed out") {
            // tonic's connect_timeout: the connection was never made.
            return true;
        }
        next = e.source();
    }
    false
}

/// gRFC A6 retry throttling: a bucket of `max` tokens, minus one per failed
/// attempt, plus `ratio` per success; retries only while it is over half full.
struct RetryBudget {
    /// Milli-tokens.
    tokens: AtomicI64,
    max: i64,
    ratio: i64,
}

impl RetryBudget {
    fn new(max_tokens: u32, ratio: f64) -> Self {
        let max = i64::from(max_tokens) * 1000;
        Self {
            tokens: AtomicI64::new(max),
            max,
            ratio: (ratio * 1000.0).round() as i64,
        }
    }

    fn success(&self) {
        if self.tokens.load(Ordering::Relaxed) >= self.max {
            return;
        }
        let _ = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some((t + self.ratio).min(self.max))
            });
    }

    fn failure(&self) {
        let _ = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some((t - 1000).max(0))
            });
    }

    fn allows_retry(&self) -> bool {
        self.tokens.load(Ordering::Relaxed) > self.max / 2
    }
}

fn parse_source(url: &str) -> Result<Source, String> {
    Ok(match crate::remote::dns_target(url) {
        Some(target) => {
            let (host, port) = target?;
            Source::Dns {
                host: host.to_owned(),
                port,
            }
        }
        None => Source::Static(url.to_owned()),
    })
}

/// Re-resolves the DNS endpoints every `resolve_interval_ms` (sooner while
/// nothing has resolved) until the balancer is gone.
async fn resolve_loop(balancer: Weak<Balancer>, statics: Vec<String>) {
    loop {
        let Some(b) = balancer.upgrade() else { return };
        let mut keys = statics.clone();
        let mut ok = true;
        for name in &b.dns {
            match tokio::net::lookup_host(name.as_str()).await {
                Ok(addrs) => keys.extend(addrs.map(|a| format!("http://{a}"))),
                Err(e) => {
                    ok = false;
                    tracing::warn!(
                        stage = b.target.stage.name(),
                        name,
                        "DNS resolution failed: {e}"
                    );
                }
            }
        }
        // A failed lookup keeps the endpoints known so far.
        if ok || keys.len() > statics.len() {
            b.update(keys);
        }
        let wait = if b.snapshot().is_empty() {
            Duration::from_millis(200)
        } else {
            Duration::from_millis(b.config.resolve_interval_ms)
        };
        drop(b);
        tokio::time::sleep(wait).await;
    }
}

/// Asks every endpoint's `grpc.health.v1` about the stage's service every
/// `health_interval_ms`: NOT_SERVING or no answer marks it unhealthy (it gets
/// calls only when nothing else is left); SERVING marks it healthy again and
/// lifts an ejection.
async fn health_loop(balancer: Weak<Balancer>) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    loop {
        let Some(b) = balancer.upgrade() else { return };
        let timeout = Duration::from_millis(b.config.connect_timeout_ms.max(100));
        let service = b.target.stage.service_name();
        let list = b.snapshot();
        let probes = list.iter().map(|backend| {
            let backend = Arc::clone(backend);
            async move {
                let mut client = HealthClient::new(backend.channel.clone());
                let request = HealthCheckRequest {
                    service: service.to_owned(),
                };
                let answer = tokio::time::timeout(timeout, client.check(request)).await;
                let serving = matches!(
                    &answer,
                    Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32
                );
                (backend, serving)
            }
        });
        let results = futures_join_all(probes).await;
        for (backend, serving) in results {
            let was = backend.healthy.swap(serving, Ordering::Relaxed);
            if serving {
                backend.answered.store(true, Ordering::Relaxed);
                b.restore(&backend);
            }
            if was != serving {
                tracing::info!(
                    stage = b.target.stage.name(),
                    endpoint = %backend.key,
                    serving,
                    "endpoint health changed"
                );
            }
        }
        let wait = Duration::from_millis(b.config.health_interval_ms);
        drop(b);
        tokio::time::sleep(wait).await;
    }
}

/// Runs the futures concurrently and collects their outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

/// This process's subsetting id when none is configured: a hash of the host
/// name (a pod's name in Kubernetes), so it is stable across restarts.
fn default_client_id() -> u64 {
    let name = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_default();
    name.trim().bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Deterministic subsetting (Site Reliability Engineering, ch. 20): clients
/// are grouped in rounds; each round shuffles the backends with the round as
/// seed and gives each client of the round a disjoint slice of `size`.
/// `size` 0, or at least the number of backends, keeps them all.
pub fn subset(backends: Vec<String>, client_id: u64, size: usize) -> Vec<String> {
    if size == 0 || size >= backends.len() {
        return backends;
    }
    let mut backends = backends;
    let subset_count = (backends.len() / size) as u64;
    let round = client_id / subset_count;
    let mut state = round;
    for i in (1..backends.len()).rev() {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let j = (z % (i as u64 + 1)) as usize;
        backends.swap(i, j);
    }
    let start = ((client_id % subset_count) as usize) * size;
    backends[start..start + size].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_are_deterministic_disjoint_and_even() {
        let backends: Vec<String> = (0..12).map(|i| format!("http://10.0.0.{i}:1")).collect();
        let a = subset(backends.clone(), 7, 3);
        assert_eq!(a, subset(backends.clone(), 7, 3));
        assert_eq!(a.len(), 3);
        // The four clients of one round cover every backend exactly once.
        let round: Vec<String> = (4..8)
            .flat_map(|c| subset(backends.clone(), c, 3))
            .collect();
        let mut sorted = round.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 12);
        assert_eq!(subset(backends.clone(), 1, 0), backends);
        assert_eq!(subset(backends.clone(), 1, 50), backends);
    }

    #[test]
    fn budget_throttles_after_failures_and_refills() {
        let b = RetryBudget::new(10, 0.1);
        assert!(b.allows_retry());
        for _ in 0..5 {
            b.failure();
        }
        assert!(!b.allows_retry(), "at half the tokens retries stop");
        for _ in 0..11 {
            b.success();
        }
        assert!(b.allows_retry());
    }

    #[test]
    fn dns_sources_parse() {
        assert_eq!(
            parse_source("dns:///feeds-split:50051"),
            Ok(Source::Dns {
                host: "feeds-split".into(),
                port: 50051
            })
        );
        assert!(parse_source("dns:///feeds-split").is_err());
        assert!(parse_source("dns:///:1").is_err());
        assert_eq!(
            parse_source("http://a:1"),
            Ok(Source::Static("http://a:1".into()))
        );
    }

    #[tokio::test]
    async fn pick_prefers_healthy_untried_and_less_loaded() {
        let config = RemoteConfig {
            endpoints: (1..=4).map(|p| format!("http://127.0.0.1:{p}")).collect(),
            ..RemoteConfig::default()
        };
        let b = Balancer::new(Stage::Recall, &config, crate::Limits::default()).expect("balancer");
        let list = b.snapshot();
        assert_eq!(list.len(), 4);
        // Endpoint 2 alone is healthy: it is picked whatever the dice say.
        for (i, backend) in list.iter().enumerate() {
            backend.healthy.store(i == 2, Ordering::Relaxed);
        }
        for _ in 0..50 {
            assert_eq!(b.pick(&list, &[]), Some(2));
        }
        // Tried already: another one, never a tried one.
        for _ in 0..50 {
            let got = b.pick(&list, &[2]).expect("one left");
            assert_ne!(got, 2);
        }
        // All healthy, one busy: of any two it compares, the busy one loses.
        for backend in list.iter() {
            backend.healthy.store(true, Ordering::Relaxed);
        }
        list[0].in_flight.store(100, Ordering::Relaxed);
        let zero = (0..200).filter(|_| b.pick(&list, &[]) == Some(0)).count();
        assert_eq!(zero, 0, "the loaded endpoint was picked");
        assert_eq!(b.pick(&list, &[0, 1, 2, 3]), None);
    }
}
