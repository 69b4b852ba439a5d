//! `feeds bench`: the monolith, five-pod and mixed topologies, and a bare
//! tonic echo chain as the floor, each started as real OS processes and driven
//! with the same requests; CPU per request, latency, throughput and memory,
//! side by side, written as JSON, Markdown and SVG.
//!
//! # Layout
//! - `load`: closed-loop and open-loop load generation (HdrHistogram).
//! - `procstat`: CPU seconds and peak RSS from `/proc`.
//! - `report`: the results folder: `results.json`, `report.md`, charts.

mod load;
mod procstat;
mod report;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use proxy_api::pb::{self, business_client::BusinessClient};
use proxy_api::{Cx, Recall, Registry, Stage};
use serde::Serialize;
use tonic::transport::Channel;

pub use load::Phase;
pub use report::{Machine, Report, write_report};

use crate::topology::{self, Launch, Running, TopologyError};

/// How long and how wide a bench run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Mode {
    /// A few seconds on a tiny world: proves the harness works (CI).
    Smoke,
    /// Under two minutes: one payload, small world.
    Quick,
    /// The full sweep: five payloads on the default world plus a corpus axis.
    Full,
}

/// What `feeds bench` was asked to do.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Length and breadth.
    pub mode: Mode,
    /// Results folder.
    pub out: PathBuf,
    /// The `feeds` executable the processes run.
    pub exe: PathBuf,
    /// Where `monolith.toml`, `five-pod/` and `mixed/` live.
    pub deploy_dir: PathBuf,
    /// The exact command line, for the report.
    pub command: String,
    /// Only these payloads (KB) on the mode's main world (`--kb`).
    pub payloads: Option<Vec<usize>>,
}

/// The knobs a mode sets.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// (catalogue items, payload sizes in KB) pairs to run.
    pub sweep: Vec<(u32, Vec<usize>)>,
    /// Users in the world.
    pub users: u32,
    /// Measured repetitions of each configuration.
    pub runs: usize,
    /// Closed-loop phase length, seconds.
    pub closed_s: f64,
    /// Open-loop phase length, seconds.
    pub open_s: f64,
    /// Warm-up before measuring, seconds.
    pub warmup_s: f64,
    /// Closed-loop clients.
    pub concurrency: usize,
    /// Open-loop arrival rate, requests per second.
    pub rate: f64,
    /// Total tokio worker threads per topology (a process gets its share, at least one).
    pub worker_budget: usize,
    /// Responses compared across topologies for each payload.
    pub parity_sample: usize,
}

impl Settings {
    /// The settings of `mode` on a machine with `cores` cores.
    pub fn of(mode: Mode, cores: usize) -> Self {
        let base = Settings {
            sweep: Vec::new(),
            users: 10_000,
            runs: 3,
            closed_s: 3.0,
            open_s: 3.0,
            warmup_s: 1.0,
            concurrency: 8,
            rate: 100.0,
            worker_budget: cores.max(1),
            parity_sample: 20,
        };
        match mode {
            Mode::Smoke => Settings {
                sweep: vec![(2_000, vec![4])],
                users: 500,
                runs: 1,
                closed_s: 0.5,
                open_s: 0.5,
                warmup_s: 0.2,
                concurrency: 2,
                rate: 20.0,
                parity_sample: 5,
                ..base
            },
            Mode::Quick => Settings {
                sweep: vec![(5_000, vec![16])],
                users: 1_000,
                closed_s: 2.0,
                open_s: 2.0,
                warmup_s: 0.5,
                ..base
            },
            Mode::Full => Settings {
                sweep: vec![(50_000, vec![1, 4, 16, 64, 256, 1024]), (10_000, vec![16])],
                ..base
            },
        }
    }
}

/// Why a bench run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A topology could not start or stop.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// Connecting the load generator failed.
    #[error("connecting to {0}: {1}")]
    Connect(SocketAddr, String),
    /// Two topologies answered the same request differently.
    #[error(
        "parity: {topology} answered request {index} ({payload_kb} KB) differently from {reference}"
    )]
    Mismatch {
        /// The topology that differed.
        topology: String,
        /// The reference topology.
        reference: String,
        /// Index in the request set.
        index: usize,
        /// Payload size.
        payload_kb: usize,
    },
    /// A parity or explain call failed.
    #[error("{topology}: {status}")]
    Call {
        /// Where.
        topology: String,
        /// What came back.
        status: tonic::Status,
    },
    /// Writing the results failed.
    #[error("writing {0}: {1}")]
    Write(PathBuf, String),
    /// No free loopback port for the echo chain.
    #[error("picking free ports for the echo chain: {0}")]
    Io(std::io::Error),
}

/// One measured repetition.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// Closed-loop phase.
    pub closed: Phase,
    /// Open-loop phase.
    pub open: Phase,
    /// The open loop's arrival rate, requests per second: the configured
    /// rate, or half the closed loop's throughput when that is lower, so
    /// the open loop measures latency below capacity and not a queue.
    pub open_rate: f64,
    /// Server CPU (all processes) per request in the closed-loop phase, ms.
    pub cpu_ms_per_req: f64,
    /// Server CPU per request in the open-loop phase, ms.
    pub open_cpu_ms_per_req: f64,
    /// For a floor row (see `floor_of`): the arrival rate of its matched
    /// phase, the closed-loop throughput of the topology it is the floor of.
    pub matched_rate: Option<f64>,
    /// Server CPU per request in that phase (open loop at `matched_rate`), ms.
    pub matched_cpu_ms_per_req: Option<f64>,
    /// The load generator's own CPU per request (closed loop), ms.
    pub loadgen_cpu_ms_per_req: f64,
    /// Each process's share of the topology's CPU (closed loop).
    pub process_share: Vec<(String, f64)>,
}

/// Median and range over the runs.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Stat {
    /// Median.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Stat {
    fn of(mut values: Vec<f64>) -> Stat {
        values.sort_by(f64::total_cmp);
        match values.as_slice() {
            [] => Stat::default(),
            v => Stat {
                median: v[v.len() / 2],
                min: v[0],
                max: v[v.len() - 1],
            },
        }
    }
}

/// One topology at one corpus size and payload.
#[derive(Clone, Debug, Serialize)]
pub struct ConfigResult {
    /// Topology name.
    pub topology: String,
    /// Catalogue items.
    pub items: u32,
    /// User-context payload, KB.
    pub payload_kb: usize,
    /// The repetitions.
    pub runs: Vec<RunResult>,
    /// Closed-loop throughput, requests/s.
    pub throughput: Stat,
    /// Server CPU per request (closed loop), ms.
    pub cpu_ms_per_req: Stat,
    /// A floor row's CPU per request at its topology's throughput (median).
    pub matched_cpu_ms_per_req: Option<f64>,
    /// That rate (median over the runs), requests per second.
    pub matched_rate: Option<f64>,
    /// Open-loop latency p50, p90, p99, p99.9 (ms).
    pub open_latency_ms: [Stat; 4],
    /// The open loop's arrival rate (median over the runs), requests per
    /// second.
    pub open_rate: f64,
    /// Closed-loop latency p50, p90, p99, p99.9 (ms).
    pub closed_latency_ms: [Stat; 4],
    /// Failed requests over all runs, by status.
    pub errors: BTreeMap<String, u64>,
    /// Load generator CPU per request, ms (median).
    pub loadgen_cpu_ms_per_req: f64,
    /// Each stage's own CPU per request, µs, measured during the closed-loop
    /// phases (median over runs); empty for the echo chain.
    pub stage_self_us: BTreeMap<String, f64>,
}

/// Peak memory of one topology at one corpus size.
#[derive(Clone, Debug, Serialize)]
pub struct RssResult {
    /// Topology name.
    pub topology: String,
    /// Catalogue items.
    pub items: u32,
    /// Sum of the processes' peak RSS, MiB.
    pub total_mib: f64,
    /// Each process's peak RSS, MiB.
    pub per_process_mib: Vec<(String, f64)>,
}

/// The local binding's cost over a direct call, measured in this process.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct LocalHop {
    /// A direct call to the stage implementation, ns.
    pub direct_ns: f64,
    /// The same call through the registry's local binding, ns, with local
    /// calls observed (metrics and spans: the default).
    pub local_ns: f64,
    /// The same, with `telemetry.observe_local_calls = false`: the binding alone.
    pub local_unobserved_ns: f64,
}

/// The rows that run the per-tenant deployment, and their reference.
fn is_tenant_row(name: &str) -> bool {
    name.starts_with("per-tenant") || name == "monolith-lite"
}

/// The payload closest to 16 KB of a sweep step.
fn reference_payload(payloads: &[usize]) -> usize {
    payloads
        .iter()
        .copied()
        .min_by_key(|kb| kb.abs_diff(16))
        .unwrap_or(16)
}

/// One row of the bench: a topology's processes and the tenant its
/// traffic belongs to (`None`: the default tenant).
struct Row {
    /// The row's name in the report.
    name: String,
    /// The processes it starts.
    launches: Vec<Launch>,
    /// Sent as `x-tenant`.
    tenant: Option<&'static str>,
    /// Environment of its processes on top of the bench's own.
    env: Vec<(String, String)>,
}

/// The row that runs five-pod with `process.pass_through = false`: every hop
/// decodes the user context and encodes it again, as before pass-through.
pub const FIVE_POD_EAGER: &str = "five-pod-eager";

/// Rows of the bare-tonic baselines.
fn is_echo_row(name: &str) -> bool {
    name.starts_with("echo")
}

/// The topology a bare-tonic row is the floor of: the one-hop echo the
/// monolith's, the echo chain five-pod's. The floor is also measured at that
/// topology's closed-loop throughput, since CPU per request depends on the
/// request rate (fewer wake-ups and syscalls per request at a higher rate):
/// the echo's own peak is 10 to 20 times the topologies'.
fn floor_of(name: &str) -> Option<&'static str> {
    match name {
        "echo-one-hop" => Some("monolith"),
        "echo-chain" => Some("five-pod"),
        _ => None,
    }
}

/// `n` distinct loopback ports the OS picks.
fn free_ports(n: usize) -> Result<Vec<u16>, BenchError> {
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    let addrs = topology::free_addrs(std::iter::repeat_n(loopback, n)).map_err(BenchError::Io)?;
    Ok(addrs.iter().map(SocketAddr::port).collect())
}

/// The topologies, with the processes each one starts. Every topology runs
/// from a copy of its files under `out/topologies/` moved to ports the OS
/// picks, so the bench runs beside a server on the shipped ports.
fn topologies(opts: &BenchOptions) -> Result<Vec<Row>, BenchError> {
    let mut out: Vec<Row> = Vec::new();
    // `per-tenant-default`: the per-tenant deployment under the default
    // tenant's traffic, which it sends to the per-stage processes.
    for (name, dir) in [
        ("monolith", "monolith"),
        ("five-pod", "five-pod"),
        ("mixed", "mixed"),
        ("per-tenant-default", "per-tenant"),
    ] {
        let files = topology::resolve(dir, &opts.deploy_dir)?;
        let files = topology::relocate(&files, &opts.out.join("topologies").join(dir))?.files;
        let mut launches = Vec::new();
        for file in files {
            let (_, plan) = crate::config::load(Some(&file)).map_err(TopologyError::from)?;
            launches.push(Launch {
                args: vec![
                    "serve".into(),
                    "--config".into(),
                    file.clone().into_os_string(),
                ],
                label: file,
                listen: plan.listen,
                entry: plan.hosted.iter().any(|s| s.callers().is_empty()),
            });
        }
        out.push(Row {
            name: name.to_owned(),
            launches,
            tenant: None,
            env: Vec::new(),
        });
    }
    // Five-pod again with pass-through off, so one run shows both.
    if let Some(five) = out.iter().find(|r| r.name == "five-pod") {
        let launches = five.launches.clone();
        out.insert(
            2,
            Row {
                name: FIVE_POD_EAGER.to_owned(),
                launches,
                tenant: None,
                env: vec![("FEEDS__PROCESS__PASS_THROUGH".into(), "false".into())],
            },
        );
    }
    // The per-tenant deployment under `lite` traffic, which it serves
    // in-process, and the monolith under the same traffic as its reference.
    for (name, from, tenant) in [
        ("per-tenant-lite", "per-tenant-default", Some("lite")),
        ("monolith-lite", "monolith", Some("lite")),
    ] {
        let launches = out
            .iter()
            .find(|r| r.name == from)
            .map(|r| r.launches.clone())
            .unwrap_or_default();
        out.push(Row {
            name: name.to_owned(),
            launches,
            tenant,
            env: Vec::new(),
        });
    }
    // The echo chain, one process per stage in chain order, on free ports,
    // and the one-hop echo (business alone) after it.
    let ports = free_ports(Stage::ALL.len() + 1)?;
    let port = |i: usize| ports[i];
    let echo = Stage::ALL
        .iter()
        .enumerate()
        .map(|(i, stage)| {
            let listen = SocketAddr::from(([127, 0, 0, 1], port(i)));
            let mut args: Vec<std::ffi::OsString> = vec![
                "echo".into(),
                "--stage".into(),
                stage.name().into(),
                "--listen".into(),
                listen.to_string().into(),
            ];
            if i + 1 < Stage::ALL.len() {
                args.push("--next".into());
                args.push(format!("http://127.0.0.1:{}", port(i + 1)).into());
            }
            Launch {
                label: PathBuf::from(format!("echo/{}", stage.name())),
                args,
                listen,
                entry: i == 0,
            }
        })
        .collect();
    out.push(Row {
        name: "echo-chain".to_owned(),
        launches: echo,
        tenant: None,
        env: Vec::new(),
    });
    let listen = SocketAddr::from(([127, 0, 0, 1], port(Stage::ALL.len())));
    out.push(Row {
        name: "echo-one-hop".to_owned(),
        launches: vec![Launch {
            label: PathBuf::from("echo/one-hop"),
            args: vec![
                "echo".into(),
                "--stage".into(),
                Stage::Business.name().into(),
                "--listen".into(),
                listen.to_string().into(),
            ],
            listen,
            entry: true,
        }],
        tenant: None,
        env: Vec::new(),
    });
    Ok(out)
}

/// One request in this many asks the stages for their own time.
pub const EXPLAIN_EVERY: u32 = 8;

/// The request set: 200 users, a page of 20, a user context of about `kb`
/// KB (see [`context`]). With `explain`, every [`EXPLAIN_EVERY`]th request
/// asks every stage to report its own CPU time: a sample is enough for the
/// mean, and explaining costs clock reads and a longer answer that
/// production requests do not pay.
pub(crate) fn requests(kb: usize, users: u32, explain: bool) -> Vec<pb::GetFeedRequest> {
    // One context per hour of the day, shared by the requests of that hour:
    // at 1 MB, 24 buffers instead of 200.
    let contexts: Vec<bytes::Bytes> = (0..24).map(|hour| context(kb, hour)).collect();
    (0..200u32)
        .map(|i| pb::GetFeedRequest {
            user_id: ((i * 37) % users).to_string(),
            page_size: 20,
            cursor: String::new(),
            context: Some(proxy_api::PassThrough::from_raw(
                contexts[(i % 24) as usize].clone(),
            )),
            explain: explain && i % EXPLAIN_EVERY == 0,
        })
        .collect()
}

/// The bench's user context, encoded, of `kb` KB give or take one event:
/// the device, the hour as a feature, and the user's raw interaction events
/// (item, kind, time, dwell: about 20 bytes each on the wire) filling the
/// rest. That is the shape of a feeds product's context, a long behaviour
/// sequence of small fields, and the case pass-through is for: the stages
/// read only `recent_items` (empty here, so business fills it from the
/// world's history), and the events are what every hop decodes and encodes
/// again unless it passes them on as bytes.
pub fn context(kb: usize, hour: u32) -> bytes::Bytes {
    use prost::Message;
    let mut context = pb::UserContext {
        device: Some(pb::Device {
            os: "android".into(),
            model: "pixel".into(),
            locale: "en-GB".into(),
            network: "wifi".into(),
        }),
        features: [("hour".to_owned(), hour.to_string())]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let target = kb * 1024;
    let mut len = context.encoded_len();
    let mut k = 0u64;
    while len < target {
        let event = pb::Event {
            item_id: (u64::from(hour) * 7_919 + k * 104_729) % 50_000 + 1,
            kind: (1 + k % 5) as i32,
            ts_ms: 1_790_000_000_000 - (k as i64) * 37_000,
            dwell_s: (k % 30) as f32 * 0.5,
        };
        // The field's tag and length prefix, one byte each at this size.
        len += event.encoded_len() + 2;
        context.events.push(event);
        k += 1;
    }
    context.encode_to_vec().into()
}

async fn clients(addr: SocketAddr, n: usize) -> Result<Vec<BusinessClient<Channel>>, BenchError> {
    let mut out = Vec::new();
    for _ in 0..n {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| BenchError::Connect(addr, e.to_string()))?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| BenchError::Connect(addr, e.to_string()))?;
        out.push(
            BusinessClient::new(channel)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        );
    }
    Ok(out)
}

fn cpu_of(running: &Running) -> Vec<Duration> {
    running
        .members
        .iter()
        .map(|m| {
            m.pid()
                .and_then(|p| procstat::cpu(Some(p)))
                .unwrap_or_default()
        })
        .collect()
}

fn delta(after: &[Duration], before: &[Duration]) -> Vec<f64> {
    after
        .iter()
        .zip(before)
        .map(|(a, b)| a.saturating_sub(*b).as_secs_f64())
        .collect()
}

/// `feeds load`: the bench's request set at `kb` KB against `addr` for
/// `duration`: closed loop with `concurrency` clients, or open loop at
/// `rate` requests per second.
pub async fn load_once(
    addr: SocketAddr,
    kb: usize,
    concurrency: usize,
    duration: Duration,
    tenant: Option<String>,
    rate: Option<f64>,
    health_every: Option<Duration>,
) -> Result<Phase, BenchError> {
    let clients = clients(addr, concurrency.min(4)).await?;
    // The tenant header needs a `'static` value; one per process run.
    let tenant: Option<&'static str> = tenant.map(|t| &*Box::leak(t.into_boxed_str()));
    let requests = Arc::new(requests(kb, 10_000, false));
    let health = health_every.map(|every| tokio::spawn(load::probe_health(addr, every, duration)));
    let mut phase = match rate {
        Some(rate) => load::open_loop(&clients, tenant, requests, rate, duration).await,
        None => load::closed_loop(&clients, tenant, requests, concurrency, duration).await,
    };
    if let Some(health) = health {
        phase.health = health.await.ok();
    }
    Ok(phase)
}

/// Runs the whole bench and returns the report (not yet written).
pub async fn run(opts: &BenchOptions) -> Result<Report, BenchError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut settings = Settings::of(opts.mode, cores);
    if let Some(payloads) = &opts.payloads {
        settings.sweep.truncate(1);
        if let Some((_, sweep)) = settings.sweep.first_mut() {
            sweep.clone_from(payloads);
        }
    }
    let topologies = topologies(opts)?;
    let phases: u64 = settings
        .sweep
        .iter()
        .map(|(_, p)| p.len() as u64)
        .sum::<u64>()
        * topologies
            .iter()
            .filter(|r| !is_tenant_row(&r.name))
            .count() as u64
        + settings.sweep.len() as u64
            * topologies.iter().filter(|r| is_tenant_row(&r.name)).count() as u64;
    let bar = ProgressBar::new(phases * settings.runs as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let local_hop = local_hop().await;
    let mut configs = Vec::new();
    let mut rss = Vec::new();
    for (items, payloads) in &settings.sweep {
        // Parity: every topology's sample, per payload, against the first one's.
        let mut reference: BTreeMap<usize, (String, Vec<pb::GetFeedResponse>)> = BTreeMap::new();
        for Row {
            name,
            launches,
            tenant,
            env,
        } in &topologies
        {
            bar.set_message(format!("{name}, {items} items: starting"));
            let processes = launches.len();
            let workers = (settings.worker_budget / processes).max(1);
            let mut envs = env.clone();
            envs.extend([
                ("RUST_LOG".to_owned(), "warn".to_owned()),
                ("FEEDS__WORLD__ITEMS".to_owned(), items.to_string()),
                ("FEEDS__WORLD__USERS".to_owned(), settings.users.to_string()),
                (
                    "FEEDS__PROCESS__WORKER_THREADS".to_owned(),
                    workers.to_string(),
                ),
                // The bench measures what serving costs, not admission: the
                // closed loop keeps 8 requests in flight on two cores, which
                // the adaptive limit rightly sees as a queue and trims with
                // RESOURCE_EXHAUSTED, and refusals would count as cheap
                // requests. The fixed ceiling (1024) is never reached here.
                (
                    "FEEDS__PROCESS__CONCURRENCY_LIMIT".to_owned(),
                    "fixed".to_owned(),
                ),
            ]);
            let running =
                topology::launch(&opts.exe, launches.clone(), &envs, Duration::from_secs(600))
                    .await?;
            let entry = running.entry().unwrap_or(running.members[0].listen);
            let clients = clients(entry, 4).await?;
            // The per-tenant rows answer "does each tenant cost what its
            // placement costs alone", at the reference payload only.
            let payloads: Vec<usize> = match is_tenant_row(name) {
                false => payloads.clone(),
                true => vec![reference_payload(payloads)],
            };
            for kb in &payloads {
                bar.set_message(format!("{name}, {items} items, {kb} KB"));
                let echo = is_echo_row(name);
                // A floor is also measured at its topology's rate.
                let matched_rate = floor_of(name).and_then(|of| {
                    configs
                        .iter()
                        .find(|c: &&ConfigResult| {
                            c.topology == of && c.items == *items && c.payload_kb == *kb
                        })
                        .map(|c| c.throughput.median)
                        .filter(|r| *r >= 1.0)
                });
                let requests = Arc::new(requests(*kb, settings.users, !echo));
                load::closed_loop(
                    &clients,
                    *tenant,
                    requests.clone(),
                    settings.concurrency,
                    Duration::from_secs_f64(settings.warmup_s),
                )
                .await;
                // Answers are compared for the default tenant's traffic.
                if !echo && tenant.is_none() {
                    let sample = self::requests(*kb, settings.users, false);
                    check_parity(
                        name,
                        &clients[0],
                        &sample[..settings.parity_sample],
                        *kb,
                        &mut reference,
                    )
                    .await?;
                }
                let mut runs = Vec::new();
                for _ in 0..settings.runs {
                    let (b, own) = (cpu_of(&running), procstat::cpu(None).unwrap_or_default());
                    let closed = load::closed_loop(
                        &clients,
                        *tenant,
                        requests.clone(),
                        settings.concurrency,
                        Duration::from_secs_f64(settings.closed_s),
                    )
                    .await;
                    let (a, own_after) =
                        (cpu_of(&running), procstat::cpu(None).unwrap_or_default());
                    let used = delta(&a, &b);
                    let total: f64 = used.iter().sum();
                    let capacity = closed.throughput();
                    let open_rate = settings.rate.min(capacity / 2.0).max(1.0);
                    let open_loop = |rate: f64, seconds: f64| {
                        load::open_loop(
                            &clients,
                            *tenant,
                            requests.clone(),
                            rate,
                            Duration::from_secs_f64(seconds),
                        )
                    };
                    let open = open_loop(open_rate, settings.open_s).await;
                    let after_open = cpu_of(&running);
                    let open_total: f64 = delta(&after_open, &a).iter().sum();
                    let per = |cpu: f64, n: u64| 1000.0 * cpu / n.max(1) as f64;
                    let mut matched_cpu_ms_per_req = None;
                    if let Some(rate) = matched_rate {
                        let matched = open_loop(rate, settings.closed_s).await;
                        let cpu: f64 = delta(&cpu_of(&running), &after_open).iter().sum();
                        matched_cpu_ms_per_req = Some(per(cpu, matched.requests));
                    }
                    runs.push(RunResult {
                        cpu_ms_per_req: per(total, closed.requests),
                        open_cpu_ms_per_req: per(open_total, open.requests),
                        matched_rate,
                        matched_cpu_ms_per_req,
                        loadgen_cpu_ms_per_req: per(
                            own_after.saturating_sub(own).as_secs_f64(),
                            closed.requests,
                        ),
                        process_share: running
                            .members
                            .iter()
                            .zip(&used)
                            .map(|(m, u)| (m.file.display().to_string(), u / total.max(1e-9)))
                            .collect(),
                        closed,
                        open,
                        open_rate,
                    });
                    bar.inc(1);
                }
                configs.push(summarise(name, *items, *kb, runs));
            }
            let per_process: Vec<(String, f64)> = running
                .members
                .iter()
                .map(|m| {
                    (
                        m.file.display().to_string(),
                        m.pid().and_then(procstat::peak_rss).unwrap_or(0) as f64 / (1 << 20) as f64,
                    )
                })
                .collect();
            rss.push(RssResult {
                topology: name.clone(),
                items: *items,
                total_mib: per_process.iter().map(|(_, v)| v).sum(),
                per_process_mib: per_process,
            });
            running.stop(Duration::from_secs(15)).await?;
        }
    }
    bar.finish_with_message("done");
    Ok(Report::new(opts, settings, configs, rss, local_hop))
}

async fn check_parity(
    name: &str,
    client: &BusinessClient<Channel>,
    sample: &[pb::GetFeedRequest],
    kb: usize,
    reference: &mut BTreeMap<usize, (String, Vec<pb::GetFeedResponse>)>,
) -> Result<(), BenchError> {
    let mut got = Vec::new();
    for r in sample {
        let response =
            client
                .clone()
                .get_feed(r.clone())
                .await
                .map_err(|status| BenchError::Call {
                    topology: name.to_owned(),
                    status,
                })?;
        got.push(response.into_inner());
    }
    match reference.get(&kb) {
        None => {
            reference.insert(kb, (name.to_owned(), got));
        }
        Some((first, want)) => {
            if let Some(index) = want.iter().zip(&got).position(|(a, b)| a != b) {
                return Err(BenchError::Mismatch {
                    topology: name.to_owned(),
                    reference: first.clone(),
                    index,
                    payload_kb: kb,
                });
            }
        }
    }
    Ok(())
}

fn summarise(name: &str, items: u32, kb: usize, runs: Vec<RunResult>) -> ConfigResult {
    // Per stage, the median over the runs of the closed-loop mean.
    let mut stage_self_us = BTreeMap::new();
    let stages: Vec<String> = runs
        .first()
        .map(|r| r.closed.stage_self_us.keys().cloned().collect())
        .unwrap_or_default();
    for stage in stages {
        let values = runs
            .iter()
            .filter_map(|r| r.closed.stage_self_us.get(&stage).copied())
            .collect();
        stage_self_us.insert(stage, Stat::of(values).median);
    }
    let stat = |f: &dyn Fn(&RunResult) -> f64| Stat::of(runs.iter().map(f).collect());
    let mut errors = BTreeMap::new();
    for r in &runs {
        for (k, v) in r.closed.errors.iter().chain(&r.open.errors) {
            *errors.entry(k.clone()).or_insert(0) += v;
        }
    }
    ConfigResult {
        topology: name.to_owned(),
        items,
        payload_kb: kb,
        throughput: stat(&|r| r.closed.throughput()),
        cpu_ms_per_req: stat(&|r| r.cpu_ms_per_req),
        matched_cpu_ms_per_req: median_of(&runs, |r| r.matched_cpu_ms_per_req),
        matched_rate: median_of(&runs, |r| r.matched_rate),
        open_latency_ms: [0, 1, 2, 3].map(|i| stat(&|r: &RunResult| r.open.latency_ms[i])),
        open_rate: stat(&|r| r.open_rate).median,
        closed_latency_ms: [0, 1, 2, 3].map(|i| stat(&|r: &RunResult| r.closed.latency_ms[i])),
        errors,
        loadgen_cpu_ms_per_req: stat(&|r| r.loadgen_cpu_ms_per_req).median,
        stage_self_us,
        runs,
    }
}

/// The median of a figure only some rows measure: `None` unless every run has it.
fn median_of(runs: &[RunResult], figure: impl Fn(&RunResult) -> Option<f64>) -> Option<f64> {
    runs.iter()
        .map(figure)
        .collect::<Option<Vec<f64>>>()
        .filter(|v| !v.is_empty())
        .map(|v| Stat::of(v).median)
}

/// A stage with no logic, for the local-hop measurement.
struct Nop;

#[proxy_api::async_trait]
impl Recall for Nop {
    async fn recall(
        &self,
        _: &Cx,
        _: pb::RecallRequest,
    ) -> Result<pb::RecallResponse, proxy_api::Status> {
        Ok(pb::RecallResponse::default())
    }
}

/// Direct call vs local binding, the same loop, the same process, on the
/// serving path: the context has a deadline that a timer above bounds, as
/// inside every request `feeds serve` handles.
async fn local_hop() -> LocalHop {
    const N: u32 = 200_000;
    let stub = |observe_local_calls| {
        let mut registry = Registry::with_options(proxy_api::RuntimeOptions {
            observe_local_calls,
            ..Default::default()
        });
        registry.provide_recall(Arc::new(Nop)).ok()?;
        registry.recall().ok()
    };
    let (Some(observed), Some(unobserved)) = (stub(true), stub(false)) else {
        return LocalHop::default();
    };
    let cx = Cx::new()
        .with_timeout(Duration::from_secs(3600))
        .assume_bounded();
    let time = |stub: Option<Arc<dyn Recall>>| {
        let cx = &cx;
        async move {
            let start = Instant::now();
            for _ in 0..N {
                let r = pb::RecallRequest::default();
                let _ = std::hint::black_box(match &stub {
                    Some(stub) => stub.recall(cx, r).await,
                    None => Nop.recall(cx, r).await,
                });
            }
            start.elapsed().as_nanos() as f64 / f64::from(N)
        }
    };
    // Interleave to spread any machine noise over all three.
    let (mut direct, mut local, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        direct.push(time(None).await);
        local.push(time(Some(observed.clone())).await);
        bare.push(time(Some(unobserved.clone())).await);
    }
    LocalHop {
        direct_ns: Stat::of(direct).median,
        local_ns: Stat::of(local).median,
        local_unobserved_ns: Stat::of(bare).median,
    }
}
