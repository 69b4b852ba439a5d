//! `feeds chaos`: the five-pod topology of `deploy/local/five-pod/` with two
//! replicas of every stage, as OS processes on loopback ports the OS picks,
//! under open-loop load, with one fault at a time injected into one replica
//! of a chosen stage and time to recover between faults:
//!
//! - `kill`: SIGKILL, down for a while, started again;
//! - `term`: SIGTERM (drain, exit), started again at once (a rolling restart);
//! - `stop`: SIGSTOP for a few seconds, then SIGCONT (a hung pod);
//! - `latency`: every chunk on the replica's connections held back a random
//!   50-200 ms each way, by a TCP proxy in front of it.
//!
//! For each fault it measures what the clients saw: failed requests by
//! status, time from the fault to the last error, requests that outlived
//! their deadline, latency during the fault against the nominal window
//! before any fault, and checks the targets.
//!
//! Replica `a` of a faulted stage sits behind a proxy from the start (its
//! callers' configs name the proxy), and takes the latency fault; replica `b`
//! is reached directly and takes the process faults, so a killed or stopped
//! process is seen by its callers exactly as it would be without the proxy
//! (a refused connection stays refused).
//!
//! # Layout
//! - `proxy`: the latency-injecting TCP proxy.
//! - `load`: open-loop load, every request's outcome recorded.
//! - `report`: each fault's figures and target, Markdown and JSON.

mod load;
mod proxy;
mod report;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use proxy_api::Stage;
use proxy_api::pb::{self, business_client::BusinessClient};
use serde::Serialize;
use tokio::time::Instant;
use tonic::transport::Channel;

pub use proxy::Proxy;
pub use report::{Episode, Report, Target, Window, write_report};

use crate::topology::{self, Launch, Running, TopologyError};

/// A fault injected into one replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// SIGKILL, then started again after `down_s`.
    Kill,
    /// SIGTERM (drain, exit), then started again.
    Term,
    /// SIGSTOP for `stop_s`, then SIGCONT.
    Stop,
    /// `latency_ms` added to every chunk each way for `latency_s`.
    Latency,
}

impl Fault {
    /// Every fault, in the order a run injects them.
    pub const ALL: [Fault; 4] = [Fault::Kill, Fault::Term, Fault::Stop, Fault::Latency];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Term => "term",
            Fault::Stop => "stop",
            Fault::Latency => "latency",
        }
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("unknown fault {s:?} (one of kill, term, stop, latency)"))
    }
}

/// What a chaos run does and for how long.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// The stages whose replicas are faulted, in order.
    pub stages: Vec<String>,
    /// The faults injected into each stage, in order.
    pub faults: Vec<Fault>,
    /// Open-loop arrival rate, requests per second.
    pub rate: f64,
    /// Every request's deadline, ms.
    pub deadline_ms: u64,
    /// Load before the nominal window, not measured, s.
    pub warmup_s: f64,
    /// The nominal window, before any fault, s.
    pub nominal_s: f64,
    /// How long a killed replica stays down before it is started again, s.
    pub down_s: f64,
    /// How long a stopped replica stays stopped, s.
    pub stop_s: f64,
    /// How long the latency fault lasts, s.
    pub latency_s: f64,
    /// The added delay per chunk and direction, ms: [min, max].
    pub latency_ms: [u64; 2],
    /// Quiet time after a faulted replica serves again, before the next fault, s.
    pub settle_s: f64,
    /// World size (`world.items`), if not the config's.
    pub items: Option<u32>,
    /// World users (`world.users`), if not the config's.
    pub users: Option<u32>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            stages: vec!["recall".into(), "rerank".into()],
            faults: Fault::ALL.to_vec(),
            rate: 50.0,
            deadline_ms: 2_000,
            warmup_s: 3.0,
            nominal_s: 10.0,
            down_s: 2.0,
            stop_s: 4.0,
            latency_s: 8.0,
            latency_ms: [50, 200],
            settle_s: 4.0,
            items: None,
            users: None,
        }
    }
}

impl Settings {
    /// Checks every value; the error names the option.
    pub fn validate(&self) -> Result<Vec<Stage>, ChaosError> {
        let bad = |option: &'static str, why: String| Err(ChaosError::Invalid { option, why });
        if self.stages.is_empty() {
            return bad("--stages", "name at least one stage".into());
        }
        let mut stages = Vec::new();
        for name in &self.stages {
            let Some(stage) = Stage::from_name(name) else {
                return bad(
                    "--stages",
                    format!("unknown stage {name:?} (one of split, rerank, finerank, recall)"),
                );
            };
            if stage.callers().is_empty() {
                return bad(
                    "--stages",
                    format!(
                        "{name} is the entry: the load generator calls it directly, so a fault there measures the generator, not the runtime"
                    ),
                );
            }
            if stages.contains(&stage) {
                return bad("--stages", format!("{name} named twice"));
            }
            stages.push(stage);
        }
        if self.faults.is_empty() {
            return bad("--faults", "name at least one fault".into());
        }
        if !(self.rate > 0.0 && self.rate <= 1_000.0) {
            return bad("--rate", format!("{} is out of range (0, 1000]", self.rate));
        }
        if !(100..=60_000).contains(&self.deadline_ms) {
            return bad(
                "--deadline-ms",
                format!("{} is out of range 100..=60000", self.deadline_ms),
            );
        }
        for (option, value, min) in [
            ("--warmup-s", self.warmup_s, 0.0),
            ("--nominal-s", self.nominal_s, 0.5),
            ("--down-s", self.down_s, 0.0),
            ("--stop-s", self.stop_s, 0.1),
            ("--latency-s", self.latency_s, 0.1),
            ("--settle-s", self.settle_s, 0.0),
        ] {
            if !(value >= min && value <= 600.0) {
                return bad(option, format!("{value} is out of range {min}..=600"));
            }
        }
        let [lo, hi] = self.latency_ms;
        if lo > hi || hi == 0 || hi > 10_000 {
            return bad(
                "--latency-ms",
                format!("{lo}-{hi}: want MIN-MAX with MIN <= MAX, 0 < MAX <= 10000"),
            );
        }
        Ok(stages)
    }
}

/// Everything `feeds chaos` needs.
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    /// What to do.
    pub settings: Settings,
    /// The `feeds` executable the replicas run.
    pub exe: PathBuf,
    /// Where `five-pod/` lives.
    pub deploy_dir: PathBuf,
    /// Results folder (the replicas' configs go in `topology/` under it).
    pub out: PathBuf,
    /// The exact command line, for the report.
    pub command: String,
}

/// Why a chaos run failed.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// A setting is out of range.
    #[error("{option}: {why}")]
    Invalid {
        /// The command-line option.
        option: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// Starting or stopping a process failed.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// A five-pod file is not what a replica can be made from.
    #[error("{file}: {why}")]
    Shape {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Reading, writing or binding failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Connecting the load generator failed.
    #[error("connecting to {0}: {1}")]
    Connect(SocketAddr, String),
    /// A faulted replica did not exit after its signal.
    #[error("{replica} did not exit within {limit:?} of {signal}")]
    NoExit {
        /// The replica.
        replica: String,
        /// The signal sent.
        signal: &'static str,
        /// How long we waited.
        limit: Duration,
    },
    /// A replica did not serve again after its fault.
    #[error("{replica} did not report SERVING within {limit:?} after its fault")]
    NotBack {
        /// The replica.
        replica: String,
        /// How long we waited.
        limit: Duration,
    },
    /// A replica that was not being faulted exited.
    #[error("{replica} exited during the run ({status})")]
    Died {
        /// The replica.
        replica: String,
        /// Its exit status.
        status: ExitStatus,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ChaosError {
    let what = what.into();
    move |source| ChaosError::Io { what, source }
}

/// How long a replica may take to report SERVING (the world and index are
/// built at start-up, ten processes at once on a small machine).
const READY: Duration = Duration::from_secs(600);
/// How long a faulted replica may take to serve again.
const BACK: Duration = Duration::from_secs(120);

/// One process of the replicated topology.
struct Replica {
    stage: Stage,
    /// `recall-a`, `recall-b`, ...
    name: String,
    /// Where its metrics are served (its share of calls comes from there).
    metrics: SocketAddr,
    /// How to start it (again).
    launch: Launch,
    /// The process; `None` while a fault has it down.
    running: Option<Running>,
}

impl Replica {
    fn pid(&self) -> Option<Pid> {
        let member = self.running.as_ref()?.members.first()?;
        Some(Pid::from_raw(member.pid()? as i32))
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(pid, signal);
        }
    }

    /// Waits (bounded) for the process to exit after `signal`.
    async fn wait_exit(
        &mut self,
        signal: &'static str,
        limit: Duration,
    ) -> Result<ExitStatus, ChaosError> {
        let no_exit = || ChaosError::NoExit {
            replica: self.name.clone(),
            signal,
            limit,
        };
        let Some(running) = self.running.as_mut() else {
            return Err(no_exit());
        };
        // Polled closely: when the process was gone is what tells a request
        // in flight on it from one sent after it.
        let started = Instant::now();
        loop {
            if let Some((_, status)) = running.exited()? {
                self.running = None;
                return Ok(status);
            }
            if started.elapsed() > limit {
                return Err(no_exit());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn start(&mut self, exe: &Path, envs: &[(String, String)]) -> Result<(), ChaosError> {
        let running = topology::launch(exe, vec![self.launch.clone()], envs, READY).await?;
        self.running = Some(running);
        Ok(())
    }
}

/// The replicated topology and the proxies in front of the faulted stages'
/// `a` replicas.
struct Cluster {
    replicas: Vec<Replica>,
    proxies: BTreeMap<Stage, Proxy>,
}

impl Cluster {
    /// Replica `index` (0 is `a`) of `stage`: `build` makes two of every
    /// stage, in chain order.
    fn replica(&mut self, stage: Stage, index: usize) -> &mut Replica {
        &mut self.replicas[stage_index(stage) * 2 + index]
    }

    /// Errors if a replica exited that nobody stopped.
    fn check_alive(&mut self) -> Result<(), ChaosError> {
        for r in &mut self.replicas {
            if let Some(running) = r.running.as_mut()
                && let Some((_, status)) = running.exited()?
            {
                return Err(ChaosError::Died {
                    replica: r.name.clone(),
                    status,
                });
            }
        }
        Ok(())
    }

    /// Stops every replica (continuing a stopped one first).
    async fn stop(self) {
        for r in &self.replicas {
            r.signal(Signal::SIGCONT);
        }
        for r in self.replicas {
            if let Some(running) = r.running {
                let _ = running.stop(Duration::from_secs(15)).await;
            }
        }
        drop(self.proxies);
    }
}

/// Copies the five-pod files into `dir` as two replicas per stage on free
/// loopback ports, each caller's remote section listing both replicas of its
/// callee (the proxy instead of replica `a` for a faulted stage), and starts
/// the proxies.
async fn build(opts: &ChaosOptions, faulted: &[Stage], dir: &Path) -> Result<Cluster, ChaosError> {
    let files = topology::resolve("five-pod", &opts.deploy_dir)?;
    let mut tables: BTreeMap<Stage, (PathBuf, toml::Table)> = BTreeMap::new();
    for file in files {
        let (_, plan) = crate::config::load(Some(&file)).map_err(TopologyError::from)?;
        let shape = |why: &str| ChaosError::Shape {
            file: file.clone(),
            why: why.to_owned(),
        };
        let [stage] = plan.hosted.as_slice() else {
            return Err(shape("a five-pod file hosts exactly one stage"));
        };
        if !plan.routes.is_empty() {
            return Err(shape(
                "has routes; chaos replicates plain five-pod files (remote endpoints only)",
            ));
        }
        let text = std::fs::read_to_string(&file).map_err(io(file.display().to_string()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| shape(&e.to_string()))?;
        tables.insert(*stage, (file, table));
    }
    for stage in Stage::ALL {
        if !tables.contains_key(&stage) {
            return Err(ChaosError::Shape {
                file: opts.deploy_dir.join("five-pod"),
                why: format!("no file hosts {}", stage.name()),
            });
        }
    }
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let ports = topology::free_addrs(std::iter::repeat_n(loopback, Stage::ALL.len() * 4))
        .map_err(io("picking free loopback ports"))?;
    // (listen, metrics) of replica `i` of the stage at `s` in Stage::ALL.
    let addr = |s: usize, i: usize| (ports[s * 4 + i * 2], ports[s * 4 + i * 2 + 1]);
    let mut proxies = BTreeMap::new();
    for stage in faulted {
        let listener = tokio::net::TcpListener::bind((loopback, 0))
            .await
            .map_err(io("binding a proxy"))?;
        let upstream = addr(stage_index(*stage), 0).0;
        let proxy = Proxy::start(listener, upstream).map_err(io("starting a proxy"))?;
        proxies.insert(*stage, proxy);
    }
    let endpoint = |stage: Stage, i: usize| -> String {
        let direct = addr(stage_index(stage), i).0;
        match (i, proxies.get(&stage)) {
            (0, Some(proxy)) => format!("http://{}", proxy.addr()),
            _ => format!("http://{direct}"),
        }
    };
    std::fs::create_dir_all(dir).map_err(io(dir.display().to_string()))?;
    let mut replicas = Vec::new();
    for (s, stage) in Stage::ALL.into_iter().enumerate() {
        let (file, table) = &tables[&stage];
        for (i, letter) in ["a", "b"].into_iter().enumerate() {
            let (listen, metrics) = addr(s, i);
            let mut table = table.clone();
            set(&mut table, "process", "listen", listen.to_string().into());
            set(
                &mut table,
                "telemetry",
                "metrics_listen",
                metrics.to_string().into(),
            );
            if let Some(toml::Value::Table(remotes)) = table.get_mut("remote") {
                for (name, section) in remotes.iter_mut() {
                    let Some(callee) = Stage::from_name(name) else {
                        continue;
                    };
                    let toml::Value::Table(section) = section else {
                        continue;
                    };
                    if section.contains_key("pools") {
                        return Err(ChaosError::Shape {
                            file: file.clone(),
                            why: format!(
                                "remote.{name} has pools; chaos replicates plain endpoints"
                            ),
                        });
                    }
                    let both = vec![endpoint(callee, 0).into(), endpoint(callee, 1).into()];
                    section.insert("endpoints".into(), toml::Value::Array(both));
                }
            }
            let name = format!("{}-{letter}", stage.name());
            let path = dir.join(format!("{name}.toml"));
            let text = toml::to_string(&table).map_err(|e| ChaosError::Shape {
                file: path.clone(),
                why: e.to_string(),
            })?;
            std::fs::write(&path, text).map_err(io(path.display().to_string()))?;
            // Validated as `feeds serve` will, so a bad copy starts nothing.
            crate::config::load(Some(&path)).map_err(TopologyError::from)?;
            replicas.push(Replica {
                stage,
                name,
                metrics,
                launch: Launch {
                    label: path.clone(),
                    args: vec!["serve".into(), "--config".into(), path.into_os_string()],
                    listen,
                    entry: stage.callers().is_empty(),
                },
                running: None,
            });
        }
    }
    Ok(Cluster { replicas, proxies })
}

/// Where `stage` is in [`Stage::ALL`].
fn stage_index(stage: Stage) -> usize {
    Stage::ALL.iter().position(|s| *s == stage).unwrap_or(0)
}

/// Sets `section.key` in a TOML document, creating the section.
fn set(table: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    let entry = table
        .entry(section.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = entry {
        t.insert(key.to_owned(), value);
    }
}

/// The environment of every replica: the world size, one tokio worker each
/// (ten processes share the machine), and quiet logs unless asked otherwise.
fn replica_env(settings: &Settings) -> Vec<(String, String)> {
    let mut envs = vec![("FEEDS__PROCESS__WORKER_THREADS".to_owned(), "1".to_owned())];
    if std::env::var_os("RUST_LOG").is_none() {
        envs.push(("RUST_LOG".into(), "error".into()));
    }
    if let Some(items) = settings.items {
        envs.push(("FEEDS__WORLD__ITEMS".into(), items.to_string()));
    }
    if let Some(users) = settings.users {
        envs.push(("FEEDS__WORLD__USERS".into(), users.to_string()));
    }
    envs
}

/// 200 requests: known users, a page of 20, a 1 KB user context (the
/// bench's request set).
fn requests(users: u32) -> Vec<pb::GetFeedRequest> {
    crate::bench::requests(1, users.max(1), false)
}

/// Two channels to each business replica, used in turn.
async fn clients(entries: &[SocketAddr]) -> Result<Vec<BusinessClient<Channel>>, ChaosError> {
    let mut out = Vec::new();
    for addr in entries {
        for _ in 0..2 {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| ChaosError::Connect(*addr, e.to_string()))?
                .tcp_nodelay(true)
                .connect()
                .await
                .map_err(|e| ChaosError::Connect(*addr, e.to_string()))?;
            out.push(BusinessClient::new(channel));
        }
    }
    Ok(out)
}

/// Calls of `stage` a replica has answered, from its `/metrics`.
async fn handled(metrics: SocketAddr, stage: Stage) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(metrics).await.ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: chaos\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        Some(body)
    };
    let body = tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .ok()??;
    let callee = format!("callee=\"{}\"", stage.name());
    Some(
        body.lines()
            .filter(|l| l.starts_with("grpc_server_handled_total{") && l.contains(&callee))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

/// Calls answered by each replica of `stage` so far.
async fn handled_pair(cluster: &Cluster, stage: Stage) -> [Option<f64>; 2] {
    let mut out = [None, None];
    for (i, r) in cluster
        .replicas
        .iter()
        .filter(|r| r.stage == stage)
        .enumerate()
        .take(2)
    {
        out[i] = handled(r.metrics, stage).await;
    }
    out
}

/// Replica `a`'s share of the calls between two counts of both.
fn share(before: [Option<f64>; 2], after: [Option<f64>; 2]) -> Option<f64> {
    let a = after[0]? - before[0]?;
    let b = after[1]? - before[1]?;
    (a + b > 0.0).then(|| a / (a + b))
}

/// Waits (bounded) until the replica at `listen` reports SERVING.
async fn wait_serving(replica: &Replica) -> Result<(), ChaosError> {
    let started = Instant::now();
    while !topology::is_serving(replica.launch.listen).await {
        if started.elapsed() > BACK {
            return Err(ChaosError::NotBack {
                replica: replica.name.clone(),
                limit: BACK,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Runs the whole chaos plan and returns the report (not yet written).
pub async fn run(opts: &ChaosOptions) -> Result<Report, ChaosError> {
    let settings = &opts.settings;
    let faulted = settings.validate()?;
    let mut cluster = build(opts, &faulted, &opts.out.join("topology")).await?;
    let envs = replica_env(settings);
    let result = drive(opts, &faulted, &mut cluster, &envs).await;
    cluster.stop().await;
    result
}

/// Starts every replica, runs the load and the faults, and computes the report.
async fn drive(
    opts: &ChaosOptions,
    faulted: &[Stage],
    cluster: &mut Cluster,
    envs: &[(String, String)],
) -> Result<Report, ChaosError> {
    let settings = &opts.settings;
    let secs = Duration::from_secs_f64;
    tracing::info!(
        replicas = cluster.replicas.len(),
        "chaos: starting the five-pod topology with two replicas of every stage"
    );
    let mut starting = Vec::new();
    for r in &cluster.replicas {
        let (exe, launch, envs) = (opts.exe.clone(), r.launch.clone(), envs.to_vec());
        starting.push(tokio::spawn(async move {
            topology::launch(&exe, vec![launch], &envs, READY).await
        }));
    }
    for (r, task) in cluster.replicas.iter_mut().zip(starting) {
        let running = match task.await {
            Ok(running) => running?,
            Err(e) => {
                return Err(ChaosError::Io {
                    what: format!("starting {}", r.name),
                    source: std::io::Error::other(e.to_string()),
                });
            }
        };
        r.running = Some(running);
    }
    let entries: Vec<SocketAddr> = cluster
        .replicas
        .iter()
        .filter(|r| r.launch.entry)
        .map(|r| r.launch.listen)
        .collect();
    let users = settings
        .users
        .unwrap_or_else(|| crate::Config::default().world.users);
    let epoch = Instant::now();
    let at = |t: Instant| t.duration_since(epoch).as_secs_f64() * 1e3;
    // An upper bound on the run; the generator is normally stopped sooner.
    let per_fault = settings.down_s + settings.stop_s + settings.latency_s + settings.settle_s;
    let limit = secs(settings.warmup_s + settings.nominal_s)
        + (secs(per_fault) + BACK * 2 + READY) * (faulted.len() * settings.faults.len()) as u32;
    let load = load::start(load::Plan {
        clients: clients(&entries).await?,
        requests: Arc::new(requests(users)),
        rate: settings.rate,
        deadline: Duration::from_millis(settings.deadline_ms),
        limit,
        epoch,
    });
    tracing::info!(
        rate = settings.rate,
        "chaos: topology serving; load started"
    );

    tokio::time::sleep(secs(settings.warmup_s)).await;
    let nominal_from = Instant::now();
    let mut nominal_counts = Vec::new();
    for stage in faulted {
        nominal_counts.push(handled_pair(cluster, *stage).await);
    }
    tokio::time::sleep(secs(settings.nominal_s)).await;
    let nominal_to = Instant::now();
    let mut nominal_share = BTreeMap::new();
    for (stage, before) in faulted.iter().zip(nominal_counts) {
        let after = handled_pair(cluster, *stage).await;
        nominal_share.insert(*stage, share(before, after));
    }

    let mut episodes = Vec::new();
    for stage in faulted {
        for fault in &settings.faults {
            tracing::info!(
                stage = stage.name(),
                fault = fault.name(),
                "chaos: injecting"
            );
            let mut e = inject(cluster, *stage, *fault, settings, &opts.exe, envs, &at).await?;
            e.nominal_share = (*fault == Fault::Latency)
                .then(|| nominal_share.get(stage).copied().flatten())
                .flatten();
            cluster.check_alive()?;
            tokio::time::sleep(secs(settings.settle_s)).await;
            episodes.push(e);
        }
    }
    let end = at(Instant::now());
    let records = load.finish().await;
    let nominal = (at(nominal_from), at(nominal_to));
    Ok(Report::new(
        opts,
        records,
        nominal,
        episodes,
        end,
        cluster
            .replicas
            .iter()
            .map(|r| r.launch.label.display().to_string())
            .collect(),
    ))
}

/// Injects one fault into one replica of `stage`, undoes it, and waits
/// until the replica serves again; returns the episode's timeline (its
/// figures are computed from the load's records afterwards).
async fn inject(
    cluster: &mut Cluster,
    stage: Stage,
    fault: Fault,
    settings: &Settings,
    exe: &Path,
    envs: &[(String, String)],
    at: &impl Fn(Instant) -> f64,
) -> Result<report::Timeline, ChaosError> {
    let secs = Duration::from_secs_f64;
    let victim_index = match fault {
        Fault::Latency => 0,
        _ => 1,
    };
    let mut timeline = report::Timeline::new(
        stage,
        fault,
        cluster.replica(stage, victim_index).name.clone(),
    );
    let counts_before = handled_pair(cluster, stage).await;
    let t0 = Instant::now();
    timeline.fault_ms = at(t0);
    match fault {
        Fault::Kill => {
            let victim = cluster.replica(stage, 1);
            victim.signal(Signal::SIGKILL);
            let status = victim.wait_exit("SIGKILL", Duration::from_secs(10)).await?;
            timeline.gone_ms = Some(at(Instant::now()));
            timeline.exit = Some(status.to_string());
            tokio::time::sleep(secs(settings.down_s)).await;
            victim.start(exe, envs).await?;
        }
        Fault::Term => {
            let victim = cluster.replica(stage, 1);
            victim.signal(Signal::SIGTERM);
            // Drain and grace are the process defaults (1 s and 10 s).
            let status = victim.wait_exit("SIGTERM", Duration::from_secs(30)).await?;
            timeline.gone_ms = Some(at(Instant::now()));
            timeline.exit = Some(status.to_string());
            victim.start(exe, envs).await?;
        }
        Fault::Stop => {
            let victim = cluster.replica(stage, 1);
            victim.signal(Signal::SIGSTOP);
            tokio::time::sleep(secs(settings.stop_s)).await;
            victim.signal(Signal::SIGCONT);
        }
        Fault::Latency => {
            let Some(proxy) = cluster.proxies.get(&stage) else {
                return Err(ChaosError::Invalid {
                    option: "--stages",
                    why: format!("{} has no proxy in front of it", stage.name()),
                });
            };
            let before = proxy.delayed_chunks();
            let [lo, hi] = settings.latency_ms;
            proxy.set_delay(Some((Duration::from_millis(lo), Duration::from_millis(hi))));
            tokio::time::sleep(secs(settings.latency_s)).await;
            proxy.set_delay(None);
            timeline.delayed_chunks = Some(proxy.delayed_chunks() - before);
        }
    }
    let undone = Instant::now();
    timeline.undone_ms = at(undone);
    wait_serving(cluster.replica(stage, victim_index)).await?;
    timeline.serving_ms = at(Instant::now());
    if fault == Fault::Latency {
        timeline.victim_share = share(counts_before, handled_pair(cluster, stage).await);
    }
    Ok(timeline)
}
