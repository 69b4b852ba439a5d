//! Load generation: a closed loop (N clients back to back, for peak
//! throughput) and an open loop (a fixed arrival rate, latency measured from
//! each request's intended send time so a slow server cannot hide its queue:
//! no coordinated omission).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use proxy_api::pb::{self, business_client::BusinessClient};
use serde::Serialize;
use tokio::sync::Mutex;
use tonic::transport::Channel;

/// What one load phase measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Phase {
    /// Requests that completed (successfully or not).
    pub requests: u64,
    /// Failed requests by gRPC status code name.
    pub errors: BTreeMap<String, u64>,
    /// Wall time of the phase.
    pub seconds: f64,
    /// Latency percentiles in milliseconds: p50, p90, p99, p99.9.
    pub latency_ms: [f64; 4],
    /// The same, of the successful requests only.
    pub ok_latency_ms: [f64; 4],
    /// Requests refused with RESOURCE_EXHAUSTED (overload).
    pub rejected: u64,
    /// Latency percentiles of those refusals, ms.
    pub rejected_latency_ms: [f64; 4],
    /// Health checks made beside the load (`--health-ms`), if any.
    pub health: Option<Health>,
    /// Each stage's own CPU per request, µs (mean over the phase's
    /// successful requests that asked for it; empty when the server reports
    /// no timings).
    pub stage_self_us: BTreeMap<String, f64>,
}

/// Health checks (`grpc.health.v1`, service `""`) made on their own
/// connection while the load ran.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Health {
    /// Checks made.
    pub checks: u64,
    /// Checks that failed or did not answer SERVING.
    pub failed: u64,
    /// Latency percentiles in milliseconds: p50, p90, p99, max.
    pub latency_ms: [f64; 4],
}

impl Phase {
    /// Completed requests per second.
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }

    /// One line: requests, throughput, latency percentiles, errors.
    pub fn summary(&self) -> String {
        let [p50, p90, p99, p999] = self.latency_ms;
        format!(
            "{} requests in {:.1} s ({:.0}/s); latency ms p50 {p50:.2} p90 {p90:.2} p99 {p99:.2} p99.9 {p999:.2}; errors {:?}",
            self.requests,
            self.seconds,
            self.throughput(),
            self.errors
        ) + &self.detail()
    }

    /// Admitted and refused latency when something was refused, and the
    /// health checks when they were made.
    fn detail(&self) -> String {
        let mut out = String::new();
        let ok = self.requests - self.errors.values().sum::<u64>();
        if self.rejected > 0 {
            let [p50, _, p99, p999] = self.ok_latency_ms;
            let [r50, _, r99, r999] = self.rejected_latency_ms;
            out += &format!(
                "\nadmitted {ok} ok: latency ms p50 {p50:.2} p99 {p99:.2} p99.9 {p999:.2}; \
                 rejected {} ({:.1}%) RESOURCE_EXHAUSTED: latency ms p50 {r50:.2} p99 {r99:.2} p99.9 {r999:.2}",
                self.rejected,
                100.0 * self.rejected as f64 / self.requests.max(1) as f64,
            );
        }
        if let Some(h) = &self.health {
            let [p50, p90, p99, max] = h.latency_ms;
            out += &format!(
                "\nhealth {} checks, {} failed: latency ms p50 {p50:.2} p90 {p90:.2} p99 {p99:.2} max {max:.2}",
                h.checks, h.failed
            );
        }
        out
    }
}

/// Checks health every `every` on a connection of its own until `end`.
pub async fn probe_health(
    addr: std::net::SocketAddr,
    every: Duration,
    duration: Duration,
) -> Health {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let mut hist = histogram();
    let (mut checks, mut failed) = (0u64, 0u64);
    let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) else {
        return Health::default();
    };
    let mut client = HealthClient::new(channel.connect_lazy());
    let start = tokio::time::Instant::now();
    let mut next = start;
    while next < start + duration {
        tokio::time::sleep_until(next).await;
        let sent = Instant::now();
        let mut request = tonic::Request::new(HealthCheckRequest::default());
        request.set_timeout(Duration::from_secs(5));
        let answer = client.check(request).await;
        hist.saturating_record(sent.elapsed().as_micros().max(1) as u64);
        checks += 1;
        if !answer.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32) {
            failed += 1;
        }
        next += every;
    }
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    Health {
        checks,
        failed,
        latency_ms: [q(0.5), q(0.9), q(0.99), hist.max() as f64 / 1000.0],
    }
}

/// Latency of the successful requests and of the refused ones.
#[derive(Clone)]
struct Outcomes {
    ok: Histogram<u64>,
    rejected: Histogram<u64>,
}

impl Outcomes {
    fn new() -> Self {
        Self {
            ok: histogram(),
            rejected: histogram(),
        }
    }

    fn record(&mut self, micros: u64, code: Option<tonic::Code>) {
        match code {
            None => self.ok.saturating_record(micros),
            Some(tonic::Code::ResourceExhausted) => self.rejected.saturating_record(micros),
            Some(_) => {}
        }
    }

    fn add(&mut self, other: &Self) {
        let _ = self.ok.add(&other.ok);
        let _ = self.rejected.add(&other.rejected);
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s, 3 significant digits; values above saturate.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds are valid")
}

/// Per-stage own time summed over successful calls, and their count.
type Timings = (BTreeMap<String, f64>, u64);

/// Adds one answer's timings; answers to requests that did not explain
/// carry none and are not counted.
fn add_timings(into: &mut Timings, timings: &[pb::StageTiming]) {
    if timings.is_empty() {
        return;
    }
    for t in timings {
        *into.0.entry(t.stage.clone()).or_insert(0.0) += t.self_us as f64;
    }
    into.1 += 1;
}

fn finish(
    hist: &Histogram<u64>,
    outcomes: &Outcomes,
    requests: u64,
    errors: BTreeMap<String, u64>,
    seconds: f64,
    timings: &Timings,
) -> Phase {
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    let of = |h: &Histogram<u64>| {
        [0.50, 0.90, 0.99, 0.999].map(|p| h.value_at_quantile(p) as f64 / 1000.0)
    };
    let stage_self_us = timings
        .0
        .iter()
        .map(|(k, v)| (k.clone(), v / timings.1.max(1) as f64))
        .collect();
    Phase {
        requests,
        errors,
        seconds,
        latency_ms: [q(0.50), q(0.90), q(0.99), q(0.999)],
        ok_latency_ms: of(&outcomes.ok),
        rejected: outcomes.rejected.len(),
        rejected_latency_ms: of(&outcomes.rejected),
        health: None,
        stage_self_us,
    }
}

/// One call; the client is cheap to clone (it shares the channel). Returns
/// the stages' timings (present when the request asked to explain).
async fn call(
    client: &mut BusinessClient<Channel>,
    request: &pb::GetFeedRequest,
    tenant: Option<&'static str>,
) -> Result<Vec<pb::StageTiming>, tonic::Code> {
    let mut r = tonic::Request::new(request.clone());
    r.set_timeout(Duration::from_secs(10));
    if let Some(tenant) = tenant {
        r.metadata_mut().insert(
            proxy_api::context::TENANT,
            tonic::metadata::MetadataValue::from_static(tenant),
        );
    }
    client
        .get_feed(r)
        .await
        .map(|r| r.into_inner().timings)
        .map_err(|s| s.code())
}

/// `concurrency` clients each send the next request as soon as the last
/// returned, for `duration`.
pub async fn closed_loop(
    clients: &[BusinessClient<Channel>],
    tenant: Option<&'static str>,
    requests: Arc<Vec<pb::GetFeedRequest>>,
    concurrency: usize,
    duration: Duration,
) -> Phase {
    let shared = Arc::new(Mutex::new((
        histogram(),
        0u64,
        BTreeMap::<String, u64>::new(),
        Timings::default(),
        Outcomes::new(),
    )));
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = Vec::new();
    for worker in 0..concurrency.max(1) {
        let mut client = clients[worker % clients.len()].clone();
        let requests = requests.clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            let mut outcomes = Outcomes::new();
            let mut errors = BTreeMap::new();
            let mut timings = Timings::default();
            let mut done = 0u64;
            let mut i = worker;
            while Instant::now() < end {
                let sent = Instant::now();
                let result = call(&mut client, &requests[i % requests.len()], tenant).await;
                let micros = sent.elapsed().as_micros().max(1) as u64;
                hist.saturating_record(micros);
                outcomes.record(micros, result.as_ref().err().copied());
                match result {
                    Ok(t) => add_timings(&mut timings, &t),
                    Err(code) => *errors.entry(format!("{code:?}")).or_insert(0) += 1,
                }
                done += 1;
                i += concurrency;
            }
            let mut s = shared.lock().await;
            let _ = s.0.add(&hist);
            s.4.add(&outcomes);
            s.1 += done;
            for (k, v) in errors {
                *s.2.entry(k).or_insert(0) += v;
            }
            for (k, v) in timings.0 {
                *s.3.0.entry(k).or_insert(0.0) += v;
            }
            s.3.1 += timings.1;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let s = shared.lock().await;
    finish(&s.0, &s.4, s.1, s.2.clone(), seconds, &s.3)
}

/// Sends at `rate` per second for `duration`, each request on its own task
/// at its intended time; latency counts from that time. Bounded: at most
/// `rate * duration` requests, each with a 10 s deadline.
pub async fn open_loop(
    clients: &[BusinessClient<Channel>],
    tenant: Option<&'static str>,
    requests: Arc<Vec<pb::GetFeedRequest>>,
    rate: f64,
    duration: Duration,
) -> Phase {
    let shared = Arc::new(std::sync::Mutex::new((
        histogram(),
        0u64,
        BTreeMap::<String, u64>::new(),
        Outcomes::new(),
    )));
    let total = (rate * duration.as_secs_f64()).ceil().max(1.0) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let intended = start + interval * i as u32;
        tokio::time::sleep_until(intended).await;
        let mut client = clients[i as usize % clients.len()].clone();
        let request = requests[i as usize % requests.len()].clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let result = call(&mut client, &request, tenant).await;
            let latency = intended.elapsed().as_micros().max(1) as u64;
            if let Ok(mut s) = shared.lock() {
                s.0.saturating_record(latency);
                s.3.record(latency, result.as_ref().err().copied());
                s.1 += 1;
                if let Err(code) = result {
                    *s.2.entry(format!("{code:?}")).or_insert(0) += 1;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let Ok(s) = shared.lock() else {
        return Phase::default();
    };
    finish(&s.0, &s.3, s.1, s.2.clone(), seconds, &Timings::default())
}
