//! The process config: one section per stage plus `process`, `remote` and
//! `world`, layered defaults -> `--config` TOML -> `FEEDS__SECTION__KEY` env.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use proxy_api::overload::{LimitMode, StageLimit, VegasConfig};
use proxy_api::route::{Cidr, DEFAULT_POOL, LOCAL, RouteRule};
use proxy_api::tls::TlsConfig;
use proxy_api::{ConfigError, Limits, RemoteConfig, Stage};
use serde::{Deserialize, Serialize};

/// `telemetry.log_filter` when the config does not set it.
pub const DEFAULT_LOG_FILTER: &str = "info,hnsw_rs=warn";

/// Prefix of config environment variables; `__` separates keys.
pub const ENV_PREFIX: &str = "FEEDS__";

config_with_stages! {
    /// Everything one `feeds serve` process needs.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct Config {
        /// What this process hosts and where it listens.
        pub process: ProcessConfig,
        /// How to reach each stage this process does not host, by stage name.
        pub remote: BTreeMap<String, RemoteConfig>,
        /// Metrics endpoint, log format, trace export.
        pub telemetry: TelemetryConfig,
        /// The generated catalogue the stages share.
        pub world: world::WorldConfig,
        /// Per stage, the ordered rules that pick where each call to it
        /// goes (`local` or a pool); reloaded on SIGHUP.
        pub routes: BTreeMap<String, Vec<RouteRule>>,
        /// How shadow copies (a route rule's `shadow`) are bounded,
        /// compared and logged.
        pub shadow: proxy_api::shadow::ShadowConfig,
        /// Per hosted stage, a sample of its calls recorded to files for
        /// `feeds replay`.
        pub record: BTreeMap<String, proxy_api::record::RecordConfig>,
        /// Per routed stage, a gated move of its calls to a candidate target.
        pub rollout: BTreeMap<String, proxy_api::rollout::RolloutConfig>,
        /// Per stage, its bulkhead: how many of its calls run at once in
        /// this process and whether they run on the compute pool.
        pub limits: BTreeMap<String, StageLimitConfig>,
    }
    // The linked stage crates, by config key: the one list to extend when a
    // stage is added.
    stages {
        business => business::Factory,
        split => split::Factory,
        rerank => rerank::Factory,
        finerank => finerank::Factory,
        recall => recall::Factory,
    }
}

/// The `[process]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessConfig {
    /// gRPC listen address; every hosted stage is served there.
    pub listen: String,
    /// Stages hosted (run in-process and served), by name.
    pub host: Vec<String>,
    /// Message size limits for clients and servers.
    pub limits: Limits,
    /// Tokio worker threads; 0 means one per core.
    pub worker_threads: usize,
    /// On SIGTERM/SIGINT, report NOT_SERVING for this long before refusing
    /// new connections, so balancers and probes move traffic away first.
    pub drain_ms: u64,
    /// After the drain, how long in-flight requests may take to finish
    /// before the process exits anyway.
    pub grace_ms: u64,
    /// The hard ceiling of stage requests handled at once by this process
    /// (the adaptive limit never goes above it; with `concurrency_limit =
    /// "fixed"` it is the limit). Past the limit, new requests get
    /// RESOURCE_EXHAUSTED at once instead of queueing. 0 means no limit.
    pub max_concurrent_requests: usize,
    /// `adaptive`: the limit follows latency (Vegas, between
    /// `min_concurrent_requests` and the ceiling), so excess load is refused
    /// without per-machine tuning; `fixed`: the ceiling is the limit.
    pub concurrency_limit: ConcurrencyLimit,
    /// The adaptive limit never goes below this.
    pub min_concurrent_requests: usize,
    /// The adaptive limit's latency bound: a sample window averaging above
    /// this multiple of the no-load latency shrinks the limit, and growth
    /// stops where it would pass it (1.1 to 100).
    pub latency_tolerance: f64,
    /// The adaptive limit at start, before any latency is measured.
    pub initial_concurrent_requests: usize,
    /// Worker threads of the compute pool CPU-heavy stages run on (see
    /// `[limits.<stage>]`); 0 means one per core.
    pub compute_threads: usize,
    /// Mutual TLS for the server and every remote client of this process.
    pub tls: TlsConfig,
    /// Deadline of a request that arrives without `grpc-timeout`; 0 means none.
    pub default_deadline_ms: u64,
    /// HTTP/2 keepalive ping interval of the server; 0 turns it off.
    pub keepalive_ms: u64,
    /// How long a server keepalive ping may go unanswered.
    pub keepalive_timeout_ms: u64,
    /// Connections older than this are closed gracefully (GOAWAY), so
    /// clients reconnect and spread over new replicas; 0 means never.
    pub max_connection_age_ms: u64,
    /// Peers (address ranges: `10.0.0.0/8`, `127.0.0.1`) whose `x-tandem-*`
    /// headers (dye, stress tag) the entry stage keeps; from every other peer
    /// they are removed before routing. Empty: nobody's are kept.
    pub trusted_peers: Vec<String>,
    /// Stages that only forward the user context send on the bytes that
    /// arrived, and a stage that reads it decodes it once; false decodes it
    /// at every hop and encodes it again (the cost this removes, kept
    /// switchable so `feeds bench` can show both in one run).
    pub pass_through: bool,
}

/// How `process.max_concurrent_requests` is applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConcurrencyLimit {
    /// Follows latency, under the ceiling.
    #[default]
    Adaptive,
    /// The ceiling is the limit.
    Fixed,
}

/// One `[limits.<stage>]` section: the stage's bulkhead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StageLimitConfig {
    /// Calls of the stage in flight at once in this process (in-process and
    /// served together); past it, RESOURCE_EXHAUSTED at once. Default: 32 per
    /// compute thread for a compute stage, 256 for the others. 0: no limit.
    pub max_concurrent: Option<usize>,
    /// Run the stage's calls on the compute pool, off the async workers.
    /// Default: true for `recall` and `finerank` (CPU-heavy) in a process
    /// hosting more than one stage, false otherwise.
    pub compute: Option<bool>,
}

/// Stages whose calls run on the compute pool, in a process hosting more
/// than one stage, unless configured otherwise.
const COMPUTE_STAGES: [Stage; 2] = [Stage::Recall, Stage::FineRank];

/// A stage's limit when `[limits.<stage>]` does not set one.
const DEFAULT_STAGE_LIMIT: usize = 256;

/// A compute stage's default limit, per compute thread.
const DEFAULT_COMPUTE_LIMIT_PER_THREAD: usize = 32;

/// The `[telemetry]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Address of the Prometheus endpoint (`GET /metrics`); empty turns it off.
    pub metrics_listen: String,
    /// `text` or `json` (one object per line, with the span's request id,
    /// tenant and trace id).
    pub log_format: LogFormat,
    /// Which logs to keep, as `RUST_LOG` directives (`RUST_LOG` wins when set).
    pub log_filter: String,
    /// OTLP/gRPC collector to export spans to (`http://host:4317`); empty
    /// turns export off.
    pub otlp_endpoint: String,
    /// `service.name` of exported spans; empty means `feeds` plus the
    /// hosted stages (`feeds-recall`), or `feeds` for all of them.
    pub service_name: String,
    /// Count, time and trace calls through `local` bindings too (about
    /// 150 ns and one allocation per in-process hop); `grpc` calls are
    /// observed either way.
    pub observe_local_calls: bool,
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            metrics_listen: String::new(),
            log_format: LogFormat::Text,
            log_filter: DEFAULT_LOG_FILTER.into(),
            otlp_endpoint: String::new(),
            service_name: String::new(),
            observe_local_calls: true,
        }
    }
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            host: Stage::ALL.iter().map(|s| s.name().to_owned()).collect(),
            limits: Limits::default(),
            worker_threads: 0,
            drain_ms: 1_000,
            grace_ms: 10_000,
            max_concurrent_requests: 1_024,
            concurrency_limit: ConcurrencyLimit::Adaptive,
            min_concurrent_requests: 1,
            latency_tolerance: 1.5,
            initial_concurrent_requests: 20,
            compute_threads: 0,
            tls: TlsConfig::default(),
            default_deadline_ms: 5_000,
            keepalive_ms: 20_000,
            keepalive_timeout_ms: 10_000,
            max_connection_age_ms: 300_000,
            trusted_peers: Vec::new(),
            pass_through: true,
        }
    }
}

/// A validated config, resolved into what the process will run.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Parsed `process.listen`.
    pub listen: SocketAddr,
    /// Hosted stages, chain order.
    pub hosted: Vec<Stage>,
    /// Remote stages and how to reach them (their `default` pool), chain order.
    pub remotes: Vec<(Stage, RemoteConfig)>,
    /// Routed stages: their rules and every pool (`default` included when
    /// it has endpoints), chain order.
    pub routes: Vec<RoutePlan>,
    /// Parsed `telemetry.metrics_listen`, if set.
    pub metrics_listen: Option<SocketAddr>,
    /// Parsed `process.trusted_peers`.
    pub trusted_peers: Vec<Cidr>,
    /// Stages under a rollout (`[rollout.<stage>]`).
    pub rollouts: Vec<Stage>,
    /// How stage requests are admitted (`None`: no limit).
    pub admission: Option<LimitMode>,
    /// Every stage's bulkhead, chain order (defaults filled in).
    pub stage_limits: Vec<(Stage, StageLimit)>,
    /// Worker threads of the compute pool (resolved: at least 1).
    pub compute_threads: usize,
    /// Parsed `process.tls.health_listen`, when TLS is on and it is set.
    pub health_listen: Option<SocketAddr>,
}

/// One routed stage of a [`Plan`].
#[derive(Clone, Debug, PartialEq)]
pub struct RoutePlan {
    /// The stage whose calls are routed.
    pub stage: Stage,
    /// Its rules, in order.
    pub rules: Vec<RouteRule>,
    /// Every pool by name, `default` included when it has endpoints.
    pub pools: BTreeMap<String, RemoteConfig>,
}

impl Plan {
    /// Whether `stage` runs in this process.
    pub fn hosts(&self, stage: Stage) -> bool {
        self.hosted.contains(&stage)
    }
}

fn known_stages() -> String {
    Stage::ALL.map(Stage::name).join(", ")
}

impl Config {
    /// Checks every section and resolves the topology. Errors name the key.
    pub fn validate(&self) -> Result<Plan, ConfigError> {
        let listen: SocketAddr = self.process.listen.parse().map_err(|e| {
            ConfigError::new(
                "process.listen",
                format!("{:?} is not host:port ({e})", self.process.listen),
            )
        })?;
        if self.process.host.is_empty() {
            return Err(ConfigError::new(
                "process.host",
                "must name at least one stage",
            ));
        }
        let mut hosted = Vec::new();
        for (i, name) in self.process.host.iter().enumerate() {
            let stage = Stage::from_name(name).ok_or_else(|| {
                ConfigError::new(
                    format!("process.host[{i}]"),
                    format!("unknown stage {name:?} (known: {})", known_stages()),
                )
            })?;
            if hosted.contains(&stage) {
                return Err(ConfigError::new(
                    format!("process.host[{i}]"),
                    format!("stage {name:?} is listed twice"),
                ));
            }
            hosted.push(stage);
        }
        hosted.sort();
        let mut remotes = Vec::new();
        for (name, remote) in &self.remote {
            let key = format!("remote.{name}");
            let stage = Stage::from_name(name).ok_or_else(|| {
                ConfigError::new(
                    &key,
                    format!("unknown stage {name:?} (known: {})", known_stages()),
                )
            })?;
            let hosted_here = hosted.contains(&stage);
            if hosted_here && !self.routes.contains_key(name) {
                return Err(ConfigError::new(
                    &key,
                    format!(
                        "stage {name:?} is hosted by this process (process.host) and cannot also be remote (unless routes.{name} sends some calls there)"
                    ),
                ));
            }
            remote.validate_with(&key, !hosted_here)?;
            if !hosted_here {
                // The `default` pool alone: named pools are the routes' business.
                let mut default = remote.clone();
                default.pools.clear();
                remotes.push((stage, default));
            }
        }
        remotes.sort_by_key(|(s, _)| *s);
        let mut routes = Vec::new();
        for (name, rules) in &self.routes {
            let key = format!("routes.{name}");
            let stage = Stage::from_name(name).ok_or_else(|| {
                ConfigError::new(
                    &key,
                    format!("unknown stage {name:?} (known: {})", known_stages()),
                )
            })?;
            if stage.callers().is_empty() {
                return Err(ConfigError::new(
                    &key,
                    format!(
                        "{name:?} is the entry stage: clients call it, nothing in the process routes to it"
                    ),
                ));
            }
            let remote = self.remote.get(name);
            if !hosted.contains(&stage) && remote.is_none() {
                return Err(ConfigError::new(
                    &key,
                    format!(
                        "stage {name:?} is neither hosted here (process.host) nor remote (remote.{name})"
                    ),
                ));
            }
            let mut pools = BTreeMap::new();
            if let Some(remote) = remote {
                if !remote.endpoints.is_empty() {
                    let mut default = remote.clone();
                    default.pools.clear();
                    pools.insert(DEFAULT_POOL.to_owned(), default);
                }
                pools.extend(remote.pools.clone());
            }
            let targets: Vec<&str> = hosted
                .contains(&stage)
                .then_some(LOCAL)
                .into_iter()
                .chain(pools.keys().map(String::as_str))
                .collect();
            for (i, rule) in rules.iter().enumerate() {
                rule.validate(&format!("{key}[{i}]"), &targets)?;
            }
            routes.push(RoutePlan {
                stage,
                rules: rules.clone(),
                pools,
            });
        }
        routes.sort_by_key(|r| r.stage);
        for (name, rollout) in &self.rollout {
            let prefix = format!("rollout.{name}");
            let route = Stage::from_name(name).and_then(|s| routes.iter().find(|r| r.stage == s));
            let Some(route) = route else {
                return Err(ConfigError::new(
                    prefix,
                    format!(
                        "{name:?} is not a routed stage here: a rollout moves the route of a stage with `routes.{name}` (at least `routes.{name} = []`)"
                    ),
                ));
            };
            let targets = proxy_api::rollout::targets(hosted.contains(&route.stage), &route.pools);
            rollout.validate(&prefix, &targets)?;
        }
        let trusted_peers = self
            .process
            .trusted_peers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Cidr::parse(p)
                    .map_err(|e| ConfigError::new(format!("process.trusted_peers[{i}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Every stage a hosted stage calls (the proto's call graph) must be
        // reachable: hosted here or remote.
        for (caller, callee) in hosted
            .iter()
            .flat_map(|caller| caller.calls().iter().map(move |callee| (*caller, *callee)))
        {
            if !hosted.contains(&callee) && !remotes.iter().any(|(s, _)| *s == callee) {
                return Err(ConfigError::new(
                    format!("remote.{}.endpoints", callee.name()),
                    format!(
                        "stage {:?} is called by hosted stage {:?} but is not hosted here and has no endpoints",
                        callee.name(),
                        caller.name()
                    ),
                ));
            }
        }
        self.process.limits.validate("process.limits")?;
        if self.process.drain_ms > 600_000 {
            return Err(ConfigError::new(
                "process.drain_ms",
                format!("{} is above 600000 (10 minutes)", self.process.drain_ms),
            ));
        }
        if !(1..=600_000).contains(&self.process.grace_ms) {
            return Err(ConfigError::new(
                "process.grace_ms",
                format!("{} is out of range 1..=600000", self.process.grace_ms),
            ));
        }
        if self.process.keepalive_ms > 0 && self.process.keepalive_timeout_ms == 0 {
            return Err(ConfigError::new(
                "process.keepalive_timeout_ms",
                "must be greater than 0 when keepalive_ms is set",
            ));
        }
        let metrics_listen = match self.telemetry.metrics_listen.as_str() {
            "" => None,
            text => Some(text.parse::<SocketAddr>().map_err(|e| {
                ConfigError::new(
                    "telemetry.metrics_listen",
                    format!("{text:?} is not host:port ({e})"),
                )
            })?),
        };
        if metrics_listen.is_some_and(|m| m.port() != 0 && m == listen) {
            return Err(ConfigError::new(
                "telemetry.metrics_listen",
                "must differ from process.listen",
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.telemetry.log_filter) {
            return Err(ConfigError::new(
                "telemetry.log_filter",
                format!("{:?} is not a valid filter: {e}", self.telemetry.log_filter),
            ));
        }
        self.shadow.validate()?;
        for (name, record) in &self.record {
            let prefix = format!("record.{name}");
            match Stage::from_name(name) {
                None => {
                    return Err(ConfigError::new(
                        prefix,
                        format!("unknown stage {name:?} (known: {})", known_stages()),
                    ));
                }
                Some(stage) if !hosted.contains(&stage) => {
                    return Err(ConfigError::new(
                        prefix,
                        format!(
                            "this process does not host {name:?}; a stage is recorded where it is hosted"
                        ),
                    ));
                }
                Some(_) => record.validate(&prefix)?,
            }
        }
        let otlp = &self.telemetry.otlp_endpoint;
        if !(otlp.is_empty() || otlp.starts_with("http://") || otlp.starts_with("https://")) {
            return Err(ConfigError::new(
                "telemetry.otlp_endpoint",
                format!("{otlp:?} is not an http:// or https:// URL"),
            ));
        }
        self.world
            .validate()
            .map_err(|e| ConfigError::new(format!("world.{}", e.key), e.message))?;
        self.validate_stages()?;
        self.process.tls.validate("process.tls")?;
        let health_listen = match self.process.tls.enabled {
            true => self.process.tls.health_listen.parse::<SocketAddr>().ok(),
            false => None,
        };
        if health_listen.is_some_and(|h| h.port() != 0 && h == listen) {
            return Err(ConfigError::new(
                "process.tls.health_listen",
                "must differ from process.listen",
            ));
        }
        let admission = self.admission()?;
        let (stage_limits, compute_threads) = self.stage_limits(hosted.len())?;
        Ok(Plan {
            listen,
            hosted,
            remotes,
            routes,
            metrics_listen,
            trusted_peers,
            rollouts: self
                .rollout
                .keys()
                .filter_map(|n| Stage::from_name(n))
                .collect(),
            admission,
            stage_limits,
            compute_threads,
            health_listen,
        })
    }

    /// `process.max_concurrent_requests` and the adaptive limit's keys, checked.
    fn admission(&self) -> Result<Option<LimitMode>, ConfigError> {
        let p = &self.process;
        const MAX: usize = 1_000_000;
        if p.max_concurrent_requests > MAX {
            return Err(ConfigError::new(
                "process.max_concurrent_requests",
                format!("{} is above {MAX}", p.max_concurrent_requests),
            ));
        }
        let ceiling = match p.max_concurrent_requests {
            0 => MAX,
            n => n,
        };
        for (key, value) in [
            ("min_concurrent_requests", p.min_concurrent_requests),
            ("initial_concurrent_requests", p.initial_concurrent_requests),
        ] {
            if value == 0 {
                return Err(ConfigError::new(
                    format!("process.{key}"),
                    "must be greater than 0",
                ));
            }
        }
        if p.initial_concurrent_requests < p.min_concurrent_requests {
            return Err(ConfigError::new(
                "process.initial_concurrent_requests",
                format!(
                    "{} is below process.min_concurrent_requests ({})",
                    p.initial_concurrent_requests, p.min_concurrent_requests
                ),
            ));
        }
        if !(1.1..=100.0).contains(&p.latency_tolerance) {
            return Err(ConfigError::new(
                "process.latency_tolerance",
                format!(
                    "{} is outside 1.1 to 100 (a multiple of the no-load latency)",
                    p.latency_tolerance
                ),
            ));
        }
        // A lower ceiling alone is enough: the floor and the start follow it.
        let min = p.min_concurrent_requests.min(ceiling);
        Ok(match (p.concurrency_limit, p.max_concurrent_requests) {
            (ConcurrencyLimit::Fixed, 0) => None,
            (ConcurrencyLimit::Fixed, n) => Some(LimitMode::Fixed(n)),
            (ConcurrencyLimit::Adaptive, _) => Some(LimitMode::Adaptive(VegasConfig {
                initial: p.initial_concurrent_requests.clamp(min, ceiling),
                min,
                max: ceiling,
                tolerance_pct: (p.latency_tolerance * 100.0).round() as u32,
                ..VegasConfig::default()
            })),
        })
    }

    /// Every stage's bulkhead from `[limits.<stage>]` and the defaults, and
    /// the compute pool's size. The compute pool is a bulkhead between
    /// stages: by default recall and fine-rank run on it only when the
    /// process hosts more than one stage. A process hosting one stage has
    /// no neighbour to protect, and the hand-off between runtimes costs that
    /// stage's pod about 0.1 ms of CPU per call (README, Bulkheads);
    /// `limits.<stage>.compute = true` keeps it anyway.
    fn stage_limits(
        &self,
        hosted: usize,
    ) -> Result<(Vec<(Stage, StageLimit)>, usize), ConfigError> {
        if self.process.compute_threads > 256 {
            return Err(ConfigError::new(
                "process.compute_threads",
                format!("{} is above 256", self.process.compute_threads),
            ));
        }
        let threads = match self.process.compute_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        for (name, limit) in &self.limits {
            let key = format!("limits.{name}");
            if Stage::from_name(name).is_none() {
                return Err(ConfigError::new(
                    &key,
                    format!("unknown stage {name:?} (known: {})", known_stages()),
                ));
            }
            if limit.max_concurrent.is_some_and(|n| n > 1_000_000) {
                return Err(ConfigError::new(
                    format!("{key}.max_concurrent"),
                    "is above 1000000",
                ));
            }
        }
        let limits = Stage::ALL
            .iter()
            .map(|&stage| {
                let set = self.limits.get(stage.name()).copied().unwrap_or_default();
                let compute = set
                    .compute
                    .unwrap_or(hosted > 1 && COMPUTE_STAGES.contains(&stage));
                let max_concurrent = set.max_concurrent.unwrap_or(match compute {
                    true => DEFAULT_COMPUTE_LIMIT_PER_THREAD * threads,
                    false => DEFAULT_STAGE_LIMIT,
                });
                (
                    stage,
                    StageLimit {
                        max_concurrent,
                        compute,
                    },
                )
            })
            .collect();
        Ok((limits, threads))
    }
}

/// Loading failed; the message says which key in which file or variable.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The `--config` file does not exist or cannot be read.
    #[error("config file {}: {why}", path.display())]
    File {
        /// The file named by `--config`.
        path: PathBuf,
        /// Why it cannot be read.
        why: String,
    },
    /// The layered sources do not parse into a [`Config`].
    #[error("{}", figment_message(.0))]
    Parse(Box<figment::Error>),
    /// A value parsed but is invalid.
    #[error("{origin}: {error}")]
    Invalid {
        /// The key and what is wrong.
        error: ConfigError,
        /// Where the value came from: a file, an environment variable or the defaults.
        origin: String,
    },
}

fn figment_message(err: &figment::Error) -> String {
    err.clone()
        .into_iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The layered figment: defaults, then `file`, then the environment.
pub fn figment(file: Option<&Path>) -> Figment {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    if let Some(file) = file {
        fig = fig.merge(Toml::file_exact(file));
    }
    fig.merge(Env::prefixed(ENV_PREFIX).split("__"))
}

/// Loads and validates the config.
pub fn load(file: Option<&Path>) -> Result<(Config, Plan), LoadError> {
    if let Some(path) = file {
        std::fs::metadata(path).map_err(|e| LoadError::File {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
    }
    let fig = figment(file);
    let config: Config = fig.extract().map_err(|e| LoadError::Parse(Box::new(e)))?;
    let plan = config.validate().map_err(|error| LoadError::Invalid {
        origin: origin(&fig, &error.key, file),
        error,
    })?;
    Ok((config, plan))
}

/// Where the value at `key` (or its nearest present parent) came from.
fn origin(fig: &Figment, key: &str, file: Option<&Path>) -> String {
    let path: String = key.split('[').next().unwrap_or(key).to_owned();
    let mut parts: Vec<&str> = path.split('.').collect();
    while !parts.is_empty() {
        let candidate = parts.join(".");
        if fig.find_value(&candidate).is_ok()
            && let Some(md) = fig.find_metadata(&candidate)
        {
            return match &md.source {
                Some(figment::Source::File(p)) => format!("in {}", p.display()),
                _ if md.name.contains("environment") => {
                    let var = format!(
                        "{ENV_PREFIX}{}",
                        candidate.to_uppercase().replace('.', "__")
                    );
                    format!("from environment variable {var}")
                }
                _ => match file {
                    Some(f) => format!("in {}", f.display()),
                    None => "in the built-in defaults".to_owned(),
                },
            };
        }
        parts.pop();
    }
    match file {
        Some(f) => format!("in {}", f.display()),
        None => "in the built-in defaults".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_monolith() {
        let plan = Config::default().validate().expect("defaults are valid");
        assert_eq!(plan.hosted, Stage::ALL.to_vec());
        assert!(plan.remotes.is_empty());
        assert_eq!(plan.listen.to_string(), "127.0.0.1:50051");
    }

    fn front() -> Config {
        let mut cfg = Config::default();
        cfg.process.host = vec!["business".into(), "split".into()];
        cfg.remote.insert(
            "rerank".into(),
            RemoteConfig {
                endpoints: vec!["http://127.0.0.1:50053".into()],
                ..RemoteConfig::default()
            },
        );
        cfg
    }

    #[test]
    fn split_topology_is_valid() {
        let plan = front().validate().expect("front is valid");
        assert_eq!(plan.hosted, vec![Stage::Business, Stage::Split]);
        assert_eq!(plan.remotes.len(), 1);
    }

    #[test]
    fn rejections_name_the_key() {
        let key = |cfg: Config| cfg.validate().expect_err("invalid").key;
        let mut c = front();
        c.process.host.push("ranker".into());
        assert_eq!(key(c), "process.host[2]");
        let mut c = front();
        c.process.host.push("split".into());
        assert_eq!(key(c), "process.host[2]");
        let mut c = front();
        c.remote.insert("split".into(), c.remote["rerank"].clone());
        assert_eq!(key(c), "remote.split");
        let mut c = front();
        c.remote.clear();
        assert_eq!(key(c), "remote.rerank.endpoints");
        let mut c = front();
        c.remote.get_mut("rerank").expect("rerank").endpoints = vec!["localhost:1".into()];
        assert_eq!(key(c), "remote.rerank.endpoints[0]");
        let mut c = front();
        c.process.listen = "nowhere".into();
        assert_eq!(key(c), "process.listen");
        let mut c = front();
        c.remote.insert("bogus".into(), RemoteConfig::default());
        assert_eq!(key(c), "remote.bogus");
    }

    #[test]
    fn route_rejections_name_the_key() {
        let parse = |text: &str| -> Config {
            figment::Figment::from(Serialized::defaults(Config::default()))
                .merge(Toml::string(text))
                .extract()
                .expect("parses")
        };
        let key = |text: &str| parse(text).validate().expect_err("invalid").key;
        assert_eq!(
            key("[[routes.business]]\ntarget = \"local\"\n"),
            "routes.business"
        );
        assert_eq!(
            key("[[routes.recall]]\ntarget = \"canary\"\n"),
            "routes.recall[0].target"
        );
        assert_eq!(
            key("[process]\ntrusted_peers = [\"10.0.0.0/33\"]\n"),
            "process.trusted_peers[0]"
        );
        assert_eq!(
            key(
                "[remote.recall.pools.local]\nendpoints = [\"http://127.0.0.1:1\"]\n[[routes.recall]]\ntarget = \"local\"\n"
            ),
            "remote.recall.pools.local"
        );
        // A hosted stage with a pool, reached only through its routes.
        let ok = parse(
            "[remote.recall.pools.canary]\nendpoints = [\"http://127.0.0.1:1\"]\n\
             [[routes.recall]]\ndye = \"canary\"\ntarget = \"canary\"\n",
        )
        .validate()
        .expect("valid");
        assert_eq!(ok.routes.len(), 1);
        assert!(ok.routes[0].pools.contains_key("canary"));
        assert!(ok.remotes.is_empty());
    }

    #[test]
    fn admission_and_bulkheads_default_and_follow_the_keys() {
        let plan = Config::default().validate().expect("defaults are valid");
        match plan.admission {
            Some(LimitMode::Adaptive(v)) => {
                assert_eq!(
                    (v.initial, v.min, v.max, v.tolerance_pct),
                    (20, 1, 1_024, 150)
                );
            }
            other => panic!("default admission {other:?}"),
        }
        let threads = plan.compute_threads;
        assert!(threads >= 1);
        let limit = |plan: &Plan, stage: Stage| {
            plan.stage_limits
                .iter()
                .find(|(s, _)| *s == stage)
                .map(|(_, l)| *l)
                .expect("every stage has a bulkhead")
        };
        assert_eq!(
            limit(&plan, Stage::Recall),
            StageLimit {
                max_concurrent: 32 * threads,
                compute: true
            }
        );
        assert_eq!(
            limit(&plan, Stage::Split),
            StageLimit {
                max_concurrent: 256,
                compute: false
            }
        );

        let mut c = Config::default();
        c.process.max_concurrent_requests = 2;
        c.process.concurrency_limit = ConcurrencyLimit::Adaptive;
        match c
            .validate()
            .expect("a small ceiling alone is valid")
            .admission
        {
            // The start follows a lower ceiling (the floor of 1 is below it).
            Some(LimitMode::Adaptive(v)) => assert_eq!((v.initial, v.min, v.max), (2, 1, 2)),
            other => panic!("{other:?}"),
        }
        c.process.concurrency_limit = ConcurrencyLimit::Fixed;
        assert_eq!(
            c.validate().expect("valid").admission,
            Some(LimitMode::Fixed(2))
        );
        c.process.max_concurrent_requests = 0;
        assert_eq!(c.validate().expect("valid").admission, None);

        let mut c = Config::default();
        c.process.compute_threads = 3;
        c.limits.insert(
            "split".into(),
            StageLimitConfig {
                max_concurrent: Some(7),
                compute: Some(true),
            },
        );
        let plan = c.validate().expect("valid");
        assert_eq!(plan.compute_threads, 3);
        assert_eq!(
            limit(&plan, Stage::Split),
            StageLimit {
                max_concurrent: 7,
                compute: true
            }
        );
        assert_eq!(limit(&plan, Stage::FineRank).max_concurrent, 96);

        // A process hosting recall alone runs it on its async workers,
        // unless told otherwise.
        let mut c = Config::default();
        c.process.host = vec!["recall".into()];
        let plan = c.validate().expect("valid");
        assert_eq!(
            limit(&plan, Stage::Recall),
            StageLimit {
                max_concurrent: 256,
                compute: false
            }
        );
        c.limits.insert(
            "recall".into(),
            StageLimitConfig {
                max_concurrent: None,
                compute: Some(true),
            },
        );
        let plan = c.validate().expect("valid");
        assert!(limit(&plan, Stage::Recall).compute);
    }

    #[test]
    fn concurrency_rejections_name_the_key() {
        let key = |cfg: Config| cfg.validate().expect_err("invalid").key;
        let mut c = Config::default();
        c.process.min_concurrent_requests = 0;
        assert_eq!(key(c), "process.min_concurrent_requests");
        let mut c = Config::default();
        c.process.min_concurrent_requests = 4;
        c.process.initial_concurrent_requests = 2;
        assert_eq!(key(c), "process.initial_concurrent_requests");
        let mut c = Config::default();
        c.process.latency_tolerance = 1.0;
        assert_eq!(key(c), "process.latency_tolerance");
        let mut c = Config::default();
        c.process.compute_threads = 257;
        assert_eq!(key(c), "process.compute_threads");
        let mut c = Config::default();
        c.limits
            .insert("ranker".into(), StageLimitConfig::default());
        assert_eq!(key(c), "limits.ranker");
        let mut c = Config::default();
        c.process.tls.enabled = true;
        assert_eq!(key(c), "process.tls.cert_file");
        let mut c = Config::default();
        c.process.tls.enabled = true;
        c.process.tls.health_listen = "nowhere".into();
        assert_eq!(key(c), "process.tls.health_listen");
    }
}
