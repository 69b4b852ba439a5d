//! The client side of a `grpc` binding: endpoints (static or re-resolved from
//! DNS), optional deterministic subsetting, power-of-two-choices balancing by
//! latency and load, ejection of endpoints that refuse connections, health
//! probing, and retries under a token-bucket budget (gRFC A6).
//!
//! Of two endpoints, a call goes to the one with the lower cost: its latency
//! estimate times one more than its calls in flight (Peak-EWMA, as linkerd
//! and Finagle balance). The estimate jumps to any slower answer and decays
//! towards zero over [`RTT_DECAY`], so an endpoint that turns slow loses its
//! share at its first slow answer and is tried again only now and then until
//! it is fast again; the calls it holds count against it for as long as they
//! have been waiting, so one that hangs stops getting calls within a few
//! milliseconds of the first call it holds, before any health probe says so.
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
    /// Peak-EWMA latency of answered calls, ns, as `f64` bits; 0 until the
    /// first answer. Decays from `rtt_at_ns` (see [`Backend::rtt_ns`]).
    rtt_bits: AtomicU64,
    /// When `rtt_bits` was last set, ns since the balancer's epoch.
    rtt_at_ns: AtomicU64,
    /// Sum of the start times (ns since the epoch) of the calls in flight:
    /// with `in_flight`, their mean age, which is what a hung endpoint's
    /// calls show long before they end.
    started_sum_ns: AtomicU64,
}

impl Backend {
    /// The latency estimate at `now_ns`: the last one, decayed towards zero
    /// since it was set; `None` before any call was answered.
    fn rtt_ns(&self, now_ns: u64) -> Option<f64> {
        let est = f64::from_bits(self.rtt_bits.load(Ordering::Relaxed));
        if est <= 0.0 {
            return None;
        }
        let since = now_ns.saturating_sub(self.rtt_at_ns.load(Ordering::Relaxed));
        Some(est * decay(since))
    }

    /// Takes an answered call's latency into the estimate: a slower answer
    /// replaces it (the peak), a faster one leaves the decayed estimate.
    /// Two answers recorded at once may lose one; the next one counts.
    fn observe(&self, now_ns: u64, rtt_ns: f64) {
        let decayed = self.rtt_ns(now_ns).unwrap_or(0.0);
        self.rtt_bits
            .store(decayed.max(rtt_ns).max(1.0).to_bits(), Ordering::Relaxed);
        self.rtt_at_ns.store(now_ns, Ordering::Relaxed);
    }

    /// How long the calls in flight have been waiting, on average, ns.
    fn in_flight_age_ns(&self, now_ns: u64) -> f64 {
        let n = self.in_flight.load(Ordering::Relaxed) as u64;
        if n == 0 {
            return 0.0;
        }
        // The two counters are read apart: a call starting or ending in
        // between can skew one read, never more.
        let mean_start = self.started_sum_ns.load(Ordering::Relaxed) / n;
        now_ns.saturating_sub(mean_start) as f64
    }

    /// What a call here would cost: the latency to expect (the estimate, or
    /// what the calls in flight have already waited, whichever is more; an
    /// endpoint with no answer yet is assumed as fast as `unknown`) times one
    /// more than the calls in flight.
    fn cost(&self, now_ns: u64, unknown: f64) -> f64 {
        let rtt = self
            .rtt_ns(now_ns)
            .unwrap_or(unknown)
            .max(self.in_flight_age_ns(now_ns));
        rtt * (self.in_flight.load(Ordering::Relaxed) + 1) as f64
    }

    /// The calls in flight have waited, on average, more than twice what
    /// calls here take (`unknown` when none was answered yet): the endpoint
    /// is behind, whatever its cost says. Calls in flight normally average
    /// half the latency, so this is an endpoint that has just turned slow or
    /// hung, and is told apart from a merely busy one before any answer.
    fn behind(&self, now_ns: u64, unknown: f64) -> bool {
        let rtt = self.rtt_ns(now_ns).unwrap_or(unknown);
        self.in_flight_age_ns(now_ns) > 2.0 * rtt.max(BEHIND_FLOOR.as_nanos() as f64)
    }
}

/// How much of a latency estimate is left after `since_ns`.
fn decay(since_ns: u64) -> f64 {
    (-(since_ns as f64) / RTT_DECAY.as_nanos() as f64).exp()
}

/// One call in flight on a backend, for the power-of-two-choices cost.
struct InFlight<'a> {
    backend: &'a Backend,
    /// When it started, ns since the balancer's epoch.
    started_ns: u64,
}

impl<'a> InFlight<'a> {
    fn start(backend: &'a Backend, now_ns: u64) -> Self {
        backend.started_sum_ns.fetch_add(now_ns, Ordering::Relaxed);
        backend.in_flight.fetch_add(1, Ordering::Relaxed);
        Self {
            backend,
            started_ns: now_ns,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.backend
            .started_sum_ns
            .fetch_sub(self.started_ns, Ordering::Relaxed);
    }
}

const FIRST_EJECTION: Duration = Duration::from_millis(250);
const MAX_EJECTION: Duration = Duration::from_secs(30);

/// Time constant of the latency estimate's decay (linkerd's and Finagle's
/// default): an endpoint 60 times slower than the others is tried again
/// about every 40 s while it stays slow.
pub const RTT_DECAY: Duration = Duration::from_secs(10);

/// The latency assumed for endpoints when none has answered yet.
const UNKNOWN_RTT: Duration = Duration::from_millis(1);

/// Below this, in-flight waits are scheduling noise, not an endpoint behind.
const BEHIND_FLOOR: Duration = Duration::from_millis(1);

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
            .tcp_nodelay(true)
            .max_frame_size(self.target.limits.frame_size());
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
                None => endpoint.connect_with_connector_lazy(crate::coalesce::Connector),
            },
            in_flight: AtomicUsize::new(0),
            ejected_until: AtomicU64::new(0),
            backoff_ms: AtomicU64::new(FIRST_EJECTION.as_millis() as u64),
            healthy: AtomicBool::new(true),
            answered: AtomicBool::new(false),
            rtt_bits: AtomicU64::new(0),
            rtt_at_ns: AtomicU64::new(0),
            started_sum_ns: AtomicU64::new(0),
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
    /// healthy, non-ejected ones; if every one is ejected, any will do. Of
    /// the two, one that is not [`Backend::behind`] wins over one that is;
    /// otherwise the lower [`Backend::cost`].
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
                    // An endpoint not yet answered is taken to be as fast
                    // as the fastest known one, so it gets its share at once.
                    let unknown = list
                        .iter()
                        .filter_map(|b| b.rtt_ns(now))
                        .min_by(f64::total_cmp)
                        .unwrap_or(UNKNOWN_RTT.as_nanos() as f64);
                    let cost = |i: usize| list[i].cost(now, unknown);
                    let behind = |i: usize| list[i].behind(now, unknown);
                    return Some(match (behind(a), behind(b)) {
                        (true, false) => b,
                        (false, true) => a,
                        _ if cost(b) < cost(a) => b,
                        _ => a,
                    });
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
        // A retry goes to another endpoint. A call failed by its connection
        // closing (a GOAWAY from the server's connection age, the server
        // closing the connection with the stream open, a request still
        // queued when the connection closed) goes to another endpoint if
        // there is one, else to the same endpoint again, as gRPC's
        // transparent retries do, up to
        // CLOSING_RETRIES times after 1, 4, 16 ms (the channel opens a new
        // connection meanwhile), so one endpoint is enough for that. Stage
        // calls are reads, so repeating one the server had started (cut off
        // when the closing connection ended) is harmless.
        // `max_attempts = 1` turns every retry off.
        let attempts = (self.config.max_attempts as usize).max(1);
        let mut payload = Some(match attempts > 1 {
            true => Payload::Encoded(crate::codec::encode_once(&message)),
            false => Payload::Message(message),
        });
        let mut tried: Vec<usize> = Vec::new();
        let mut again = false;
        let mut closing_retries = 0u32;
        let mut failed: Option<Status> = None;
        loop {
            let picked = match self.pick(&list, &tried) {
                Some(i) => Some(i),
                None if again => self.pick(&list, &[]),
                None => None,
            };
            let Some(i) = picked else {
                return Err(failed.unwrap_or_else(|| self.no_endpoint(&list)));
            };
            let backend = &list[i];
            let retry_possible = tried.len() + 1 < attempts;
            let body = match payload.take() {
                // A reference to the same bytes: a retry resends them.
                Some(Payload::Encoded(bytes)) => {
                    payload = Some(Payload::Encoded(bytes.clone()));
                    Payload::Encoded(bytes)
                }
                Some(body) => body,
                None => return Err(failed.unwrap_or_else(|| self.no_endpoint(&list))),
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
            let started = self.now_ns();
            let out = {
                // Counted until the call ends or is dropped (a caller's
                // deadline can drop it mid-flight).
                let _in_flight = InFlight::start(backend, started);
                crate::stack::unary(backend.channel.clone(), attempt, path, self.target.limits)
                    .await
            };
            let took = |now: u64| now.saturating_sub(started) as f64;
            match out {
                Ok(response) => {
                    let now = self.now_ns();
                    backend.observe(now, took(now));
                    self.budget.success();
                    if backend.ejected_until.load(Ordering::Relaxed) != 0 {
                        self.restore(backend);
                    }
                    return Ok(response);
                }
                Err(status) if let Some(why) = never_sent(&status) => {
                    // A closing connection says nothing of the endpoint, and
                    // a transparent retry does not spend the retry budget.
                    let closing = why == NeverSent::ConnectionClosing;
                    if !closing {
                        self.eject(backend);
                        self.budget.failure();
                    }
                    // Anything but a closing connection retries elsewhere,
                    // if there is an elsewhere.
                    let elsewhere = tried.len() + 1 < list.len();
                    let retry = match closing {
                        true => payload.is_some() && closing_retries < CLOSING_RETRIES,
                        false => retry_possible && elsewhere && self.budget.allows_retry(),
                    };
                    if retry {
                        if closing {
                            tokio::time::sleep(Duration::from_millis(1 << (2 * closing_retries)))
                                .await;
                            closing_retries += 1;
                        }
                        tracing::debug!(
                            stage = self.target.stage.name(),
                            endpoint = %backend.key,
                            ?why,
                            "call never reached the endpoint; retrying"
                        );
                        crate::observe::count_retry(self.target.stage);
                        tried.push(i);
                        again = closing;
                        failed = Some(self.target.status(status, &backend.key));
                        continue;
                    }
                    return Err(self.target.status(status, &backend.key));
                }
                Err(status) => {
                    // An answer is an answer; running out of the caller's
                    // time says more about the budget than the endpoint
                    // (a hung one is caught by its calls' age and probes).
                    if !matches!(
                        status.code(),
                        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
                    ) {
                        let now = self.now_ns();
                        backend.observe(now, took(now));
                    }
                    return Err(self.target.status(status, &backend.key));
                }
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

/// Transparent retries of a call whose connection was closing.
const CLOSING_RETRIES: u32 = 3;

/// Why a call provably never started at the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NeverSent {
    /// The endpoint is not there: the connection was refused or could not
    /// be made in time, or the server refused the stream.
    Unreachable,
    /// The connection was closing: the server's GOAWAY (no error) came
    /// before it accepted the stream, the server closed the connection with
    /// the stream still open, or the request was still queued when the
    /// connection closed. Said of the endpoint: nothing.
    ConnectionClosing,
}

/// Whether, and why, the call provably never reached the server.
fn never_sent(status: &Status) -> Option<NeverSent> {
    use std::error::Error as _;
    use std::io::ErrorKind;
    // tonic turns an h2 GOAWAY without error into INTERNAL, a dropped
    // request into CANCELLED: the source below decides.
    if !matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::Internal
    ) {
        return None;
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
            return Some(NeverSent::Unreachable);
        }
        // The endpoint's connect timeout (tonic wraps every connector in
        // it): the connection was never made.
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == ErrorKind::TimedOut
            && io
                .get_ref()
                .is_some_and(|inner| inner.is::<tokio::time::error::Elapsed>())
        {
            return Some(NeverSent::Unreachable);
        }
        // hyper passes h2's I/O errors on as `io::Error`s (see below).
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == ErrorKind::BrokenPipe
        {
            return Some(NeverSent::ConnectionClosing);
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return Some(NeverSent::Unreachable);
            }
            // A graceful GOAWAY resets only the streams the server had not
            // accepted (above its last stream id).
            if h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR) {
                return Some(NeverSent::ConnectionClosing);
            }
            // The server closed the connection with the stream still open:
            // after a GOAWAY, a server closes only once the streams it
            // accepted are done, so this one was not (a crashed server may
            // have started it: stage calls are reads, see `call`).
            if h2
                .get_io()
                .is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)
            {
                return Some(NeverSent::ConnectionClosing);
            }
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>()
            && hyper.is_canceled()
        {
            // Dropped from the connection's queue before it was sent.
            return Some(NeverSent::ConnectionClosing);
        }
        next = e.source();
    }
    None
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
/// `health_interval_ms`: NOT_SERVING or no answer within [`probe_timeout`]
/// marks it unhealthy (it gets calls only when nothing else is left);
/// SERVING marks it healthy again and lifts an ejection. Rounds start on a
/// fixed beat (or at once after a round that waited out a timeout), and a
/// probe counts as a call in flight while it waits, so the balancer turns
/// away from a hung endpoint within an interval of it hanging even if no
/// call of its own went there, before the timeout marks it.
async fn health_loop(balancer: Weak<Balancer>) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    loop {
        let Some(b) = balancer.upgrade() else { return };
        let round = Instant::now();
        let timeout = probe_timeout(&b.config);
        let service = b.target.stage.service_name();
        let list = b.snapshot();
        let started = b.now_ns();
        let probes = list.iter().map(|backend| {
            let backend = Arc::clone(backend);
            async move {
                let mut client = HealthClient::new(backend.channel.clone());
                let request = HealthCheckRequest {
                    service: service.to_owned(),
                };
                // A probe is a call like any other: one that hangs makes
                // its endpoint costly at once, before the timeout says so.
                let in_flight = InFlight::start(&backend, started);
                let answer = tokio::time::timeout(timeout, client.check(request)).await;
                drop(in_flight);
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
        let wait =
            Duration::from_millis(b.config.health_interval_ms).saturating_sub(round.elapsed());
        drop(b);
        tokio::time::sleep(wait).await;
    }
}

/// How long a health probe may take before it counts as no answer: the
/// connect timeout, at least 100 ms. Generous on purpose: an endpoint marked
/// unhealthy turns routes to their fallback and callers' readiness to
/// NOT_SERVING, which a busy machine's slow probe must not do. A stopped
/// process (which still accepts connections: the kernel does) loses its
/// calls sooner than that, through the age of the probe in flight.
fn probe_timeout(config: &RemoteConfig) -> Duration {
    Duration::from_millis(config.connect_timeout_ms.max(100))
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

    fn two() -> Arc<Balancer> {
        let config = RemoteConfig {
            endpoints: vec!["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()],
            ..RemoteConfig::default()
        };
        Balancer::new(Stage::Recall, &config, crate::Limits::default()).expect("balancer")
    }

    const MS: f64 = 1e6;

    #[tokio::test]
    async fn the_estimate_takes_peaks_and_decays() {
        let backend = &two().snapshot()[0];
        assert_eq!(backend.rtt_ns(0), None, "no answer yet");
        backend.observe(0, 300.0 * MS);
        assert_eq!(backend.rtt_ns(0), Some(300.0 * MS));
        // A faster answer right after leaves the peak.
        backend.observe(1, 5.0 * MS);
        let left = backend.rtt_ns(1).expect("known");
        assert!(left > 299.0 * MS, "{left}");
        // One time constant later, 1/e of it is left.
        let later = RTT_DECAY.as_nanos() as u64;
        let decayed = backend.rtt_ns(later).expect("known");
        assert!(
            (decayed / (300.0 * MS) - (-1.0f64).exp()).abs() < 1e-3,
            "{decayed}"
        );
        // A slower answer replaces it at once.
        backend.observe(later, 400.0 * MS);
        assert_eq!(backend.rtt_ns(later), Some(400.0 * MS));
    }

    #[tokio::test]
    async fn a_slow_endpoint_loses_its_share_until_the_other_is_busy() {
        let b = two();
        let list = b.snapshot();
        let now = b.now_ns();
        list[0].observe(now, 300.0 * MS);
        list[1].observe(now, 5.0 * MS);
        let slow = (0..200).filter(|_| b.pick(&list, &[]) == Some(0)).count();
        assert_eq!(slow, 0, "the slow endpoint was picked");
        // Ten calls in flight on the fast one still cost less than one on
        // the slow one; a hundred do not.
        list[1].in_flight.store(10, Ordering::Relaxed);
        assert_eq!(b.pick(&list, &[]), Some(1));
        list[1].in_flight.store(100, Ordering::Relaxed);
        assert_eq!(b.pick(&list, &[]), Some(0));
    }

    #[tokio::test]
    async fn calls_waiting_on_a_hung_endpoint_count_against_it() {
        let b = two();
        let list = b.snapshot();
        // Both equally fast so far.
        let now = b.now_ns() + 1_000_000_000;
        list[0].observe(now, 5.0 * MS);
        list[1].observe(now, 5.0 * MS);
        // Endpoint 0 holds one call started 300 ms ago; endpoint 1 holds
        // two that just started.
        let _waiting = InFlight::start(&list[0], now - 300_000_000);
        let _fresh = (
            InFlight::start(&list[1], now),
            InFlight::start(&list[1], now),
        );
        assert!((list[0].in_flight_age_ns(now) - 300.0 * MS).abs() < 1.0);
        assert_eq!(list[1].in_flight_age_ns(now), 0.0);
        assert!(list[0].cost(now, MS) > list[1].cost(now, MS));
        drop(_waiting);
        assert_eq!(list[0].in_flight_age_ns(now), 0.0, "nothing left in flight");
    }

    #[tokio::test]
    async fn a_hung_endpoint_counts_its_probe_and_is_marked_after_the_timeout() {
        // Accepts connections (the kernel does) and never answers: a
        // stopped process.
        let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let config = RemoteConfig {
            endpoints: vec![format!("http://{}", hung.local_addr().expect("addr"))],
            connect_timeout_ms: 100,
            health_interval_ms: 200,
            ..RemoteConfig::default()
        };
        assert_eq!(probe_timeout(&config), Duration::from_millis(100));
        let b = Balancer::new(Stage::Recall, &config, crate::Limits::default()).expect("balancer");
        let list = b.snapshot();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            list[0].in_flight.load(Ordering::Relaxed),
            1,
            "the probe waits"
        );
        assert!(list[0].in_flight_age_ns(b.now_ns()) >= 40.0 * MS);
        assert!(list[0].healthy.load(Ordering::Relaxed), "not marked yet");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !list[0].healthy.load(Ordering::Relaxed),
            "marked after 100 ms"
        );
        assert_eq!(list[0].in_flight.load(Ordering::Relaxed), 0);
    }

    /// A connect that times out (the SYN is never answered: the listener's
    /// accept queue is full) is a call that never reached the endpoint.
    #[tokio::test]
    async fn a_connect_timeout_is_never_sent() {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let addr = socket.local_addr().expect("addr");
        let full = socket.listen(0).expect("listen");
        // Never accepted: once these fill the queue, new SYNs are dropped.
        let mut filling = Vec::new();
        for _ in 0..3 {
            if let Ok(Ok(c)) = tokio::time::timeout(
                Duration::from_millis(200),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            {
                filling.push(c);
            }
        }
        let config = RemoteConfig {
            endpoints: vec![format!("http://{addr}")],
            connect_timeout_ms: 200,
            health_interval_ms: 60_000,
            ..RemoteConfig::default()
        };
        let b = Balancer::new(Stage::Recall, &config, crate::Limits::default()).expect("balancer");
        let list = b.snapshot();
        let mut client =
            tonic_health::pb::health_client::HealthClient::new(list[0].channel.clone());
        let status = tokio::time::timeout(
            Duration::from_secs(10),
            client.check(tonic_health::pb::HealthCheckRequest::default()),
        )
        .await
        .expect("the connect timeout must end the call")
        .expect_err("nothing accepts");
        assert_eq!(
            never_sent(&status),
            Some(NeverSent::Unreachable),
            "{status:?}"
        );
        drop((full, filling));
    }

    #[tokio::test]
    async fn an_endpoint_behind_loses_to_one_that_is_not() {
        let b = two();
        let list = b.snapshot();
        let now = b.now_ns() + 1_000_000_000;
        // Endpoint 0 is fast but its one call has waited 12 ms; endpoint 1
        // has been slow (40 ms) and is idle. By cost 0 would win (24 < 40).
        list[0].observe(now, 5.0 * MS);
        list[1].observe(now, 40.0 * MS);
        let _waiting = InFlight::start(&list[0], now - 12_000_000);
        assert!(list[0].cost(now, MS) < list[1].cost(now, MS));
        assert!(list[0].behind(now, MS) && !list[1].behind(now, MS));
        // A call of normal age is not behind.
        let _normal = InFlight::start(&list[1], now - 30_000_000);
        assert!(!list[1].behind(now, MS));
    }

    #[tokio::test]
    async fn an_endpoint_not_yet_answered_gets_its_share() {
        let b = two();
        let list = b.snapshot();
        list[0].observe(b.now_ns(), 5.0 * MS);
        let picks: Vec<usize> = (0..200).filter_map(|_| b.pick(&list, &[])).collect();
        assert!(picks.contains(&0) && picks.contains(&1), "{picks:?}");
    }
}
