//! Helpers shared by the integration tests: the request set, in-process
//! topologies on loopback, and clients.
#![allow(dead_code, missing_docs)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use feeds::{Config, Plan};
use proxy_api::context::{REQUEST_ID, TENANT};
use proxy_api::pb::{self, business_client::BusinessClient};
use proxy_api::{RemoteConfig, Stage};
use tokio::sync::oneshot;
use tonic::metadata::MetadataValue;

pub const EXE: &str = env!("CARGO_BIN_EXE_feeds");

/// The workspace's `deploy/local`.
pub fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local")
}

/// One request of the parity set.
#[derive(Clone, Debug)]
pub struct Case {
    pub tenant: Option<&'static str>,
    pub request: pb::GetFeedRequest,
}

/// `n` varied, deterministic requests: known, cold and non-numeric users,
/// three tenants, every page size, cursors, histories with unknown ids,
/// devices, features and payloads up to a few KB, plus a few invalid ones.
pub fn cases(n: usize) -> Vec<Case> {
    (0..n)
        .map(|i| {
            let tenant = match i % 4 {
                3 => Some("lite"),
                2 => Some("default"),
                _ => None,
            };
            let user_id = match i % 10 {
                0 => format!("guest-{i}"),
                1 => (20_000 + i).to_string(),
                _ => ((i * 37) % TEST_USERS as usize).to_string(),
            };
            let max = if tenant == Some("lite") { 20 } else { 50 };
            let page_size = match i {
                // A few invalid requests: errors must match too.
                57 => 0,
                113 => max + 1,
                _ => 1 + (i * 7) as u32 % max,
            };
            let user_id = if i == 171 { String::new() } else { user_id };
            let cursor = match i % 5 {
                4 => "o10".to_owned(),
                3 => "o3".to_owned(),
                _ => String::new(),
            };
            let recent: Vec<u64> = (0..(i % 25) as u64)
                .map(|k| (i as u64 * 131 + k * 977) % u64::from(TEST_ITEMS))
                .chain((i % 7 == 0).then_some(9_999_999))
                .collect();
            let events = recent
                .iter()
                .enumerate()
                .map(|(k, id)| pb::Event {
                    item_id: *id,
                    kind: (1 + k % 5) as i32,
                    ts_ms: 1_760_000_000_000 - (k as i64) * 60_000,
                    dwell_s: (k % 30) as f32 * 0.5,
                })
                .collect();
            let features = [
                ("hour".to_owned(), (i % 24).to_string()),
                ("country".to_owned(), ["us", "de", "br"][i % 3].to_owned()),
            ]
            .into_iter()
            .collect();
            let request = pb::GetFeedRequest {
                user_id,
                page_size,
                cursor,
                context: Some(proxy_api::PassThrough::new(pb::UserContext {
                    recent_items: recent,
                    events,
                    device: Some(pb::Device {
                        os: ["android", "ios", "web"][i % 3].into(),
                        model: format!("model-{}", i % 11),
                        locale: "en-GB".into(),
                        network: "wifi".into(),
                    }),
                    features,
                    blob: vec![i as u8; (i % 8) * 512].into(),
                })),
                explain: false,
            };
            Case { tenant, request }
        })
        .collect()
}

/// What a call returned, comparable across topologies.
pub type Outcome = Result<pb::GetFeedResponse, (tonic::Code, String)>;

pub fn request(case: &Case, i: usize) -> tonic::Request<pb::GetFeedRequest> {
    let mut request = tonic::Request::new(case.request.clone());
    request.set_timeout(Duration::from_secs(30));
    request.metadata_mut().insert(
        REQUEST_ID,
        MetadataValue::try_from(format!("parity-{i}")).expect("ascii"),
    );
    if let Some(t) = case.tenant {
        request
            .metadata_mut()
            .insert(TENANT, MetadataValue::from_static(t));
    }
    request
}

/// The context `request(case, i)` carries, for calls through a registry.
pub fn cx(case: &Case, i: usize) -> proxy_api::Cx {
    let cx = proxy_api::Cx::new()
        .with_timeout(Duration::from_secs(30))
        .with_request_id(&format!("parity-{i}"));
    match case.tenant {
        Some(t) => cx.with_tenant(t),
        None => cx,
    }
}

/// Case `i` through a registry's business stage (either binding).
pub async fn call(business: &dyn proxy_api::Business, case: &Case, i: usize) -> Outcome {
    business
        .get_feed(&cx(case, i), case.request.clone())
        .await
        .map_err(|s| (s.code(), s.message().to_owned()))
}

pub fn outcome(r: Result<tonic::Response<pb::GetFeedResponse>, tonic::Status>) -> Outcome {
    r.map(tonic::Response::into_inner)
        .map_err(|s| (s.code(), s.message().to_owned()))
}

/// Runs every case against the business stage at `addr` over gRPC.
pub async fn run_grpc(addr: SocketAddr, cases: &[Case]) -> Vec<Outcome> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to business");
    run_grpc_on(channel, cases).await
}

/// Runs every case against the business stage behind `channel`.
#[allow(dead_code)]
pub async fn run_grpc_on(channel: tonic::transport::Channel, cases: &[Case]) -> Vec<Outcome> {
    let mut client = BusinessClient::new(channel);
    let mut out = Vec::with_capacity(cases.len());
    for (i, case) in cases.iter().enumerate() {
        out.push(outcome(client.get_feed(request(case, i)).await));
    }
    out
}

/// World size for tests: big enough for every channel and cap to matter,
/// small enough that each process builds its index in well under a second.
pub const TEST_ITEMS: u32 = 5_000;
pub const TEST_USERS: u32 = 1_000;

/// Environment that gives OS-process topologies the test world.
pub fn test_env() -> Vec<(String, String)> {
    vec![
        ("RUST_LOG".to_owned(), "warn".to_owned()),
        ("FEEDS__WORLD__ITEMS".to_owned(), TEST_ITEMS.to_string()),
        ("FEEDS__WORLD__USERS".to_owned(), TEST_USERS.to_string()),
    ]
}

/// The default config hosting `stages`, with remotes for the others at `remotes`.
pub fn config_for(
    stages: &[Stage],
    listen: SocketAddr,
    remotes: &[(Stage, SocketAddr)],
) -> (Config, Plan) {
    let mut config = Config::default();
    config.world.items = TEST_ITEMS;
    config.world.users = TEST_USERS;
    config.process.listen = listen.to_string();
    config.process.host = stages.iter().map(|s| s.name().to_owned()).collect();
    for (stage, addr) in remotes {
        config.remote.insert(
            stage.name().to_owned(),
            RemoteConfig {
                endpoints: vec![format!("http://{addr}")],
                ..RemoteConfig::default()
            },
        );
    }
    let plan = config.validate().expect("test config is valid");
    (config, plan)
}

/// As [`config_for`], the config adjusted by `tweak` before it is checked.
pub fn config_with(
    stages: &[Stage],
    listen: SocketAddr,
    remotes: &[(Stage, SocketAddr)],
    tweak: impl FnOnce(&mut Config),
) -> (Config, Plan) {
    let (mut config, _) = config_for(stages, listen, remotes);
    tweak(&mut config);
    let plan = config.validate().expect("test config is valid");
    (config, plan)
}

/// Servers started in this process; dropping it stops them.
pub struct InProcess {
    pub addrs: Vec<SocketAddr>,
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl InProcess {
    pub async fn stop(mut self) {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

/// Starts one server per group of stages, each on its own loopback port,
/// every group's downstream bound over gRPC to the next group.
pub async fn serve_groups(groups: &[&[Stage]]) -> InProcess {
    serve_groups_with(groups, |_| {}).await
}

/// As [`serve_groups`], every process's config adjusted by `tweak`.
pub async fn serve_groups_with(groups: &[&[Stage]], tweak: impl Fn(&mut Config)) -> InProcess {
    let mut listeners = Vec::new();
    for _ in groups {
        listeners.push(
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        );
    }
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr().expect("addr"))
        .collect();
    let mut servers = Vec::new();
    for (i, (group, listener)) in groups.iter().zip(listeners).enumerate() {
        let remotes: Vec<(Stage, SocketAddr)> = groups
            .get(i + 1)
            .map(|next| vec![(next[0], addrs[i + 1])])
            .unwrap_or_default();
        let (config, plan) = config_with(group, addrs[i], &remotes, &tweak);
        servers.push((config, plan, listener));
    }
    spawn_servers(servers).await
}

/// The in-process monolith on a loopback port, its config adjusted by `tweak`.
pub async fn serve_monolith(tweak: impl FnOnce(&mut Config)) -> InProcess {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (config, plan) = config_with(&Stage::ALL, addr, &[], tweak);
    spawn_servers(vec![(config, plan, listener)]).await
}

pub async fn spawn_servers(servers: Vec<(Config, Plan, tokio::net::TcpListener)>) -> InProcess {
    let addrs: Vec<SocketAddr> = servers
        .iter()
        .map(|(_, _, l)| l.local_addr().expect("addr"))
        .collect();
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for (config, plan, listener) in servers {
        let (tx, rx) = oneshot::channel::<()>();
        stops.push(tx);
        tasks.push(tokio::spawn(async move {
            feeds::run(&config, &plan, listener, async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        }));
    }
    for addr in &addrs {
        wait_serving(*addr).await;
    }
    InProcess {
        addrs,
        stops,
        tasks,
    }
}

pub async fn wait_serving(addr: SocketAddr) {
    wait_health(addr, "", SERVING, Duration::from_secs(10)).await;
}

/// Serves `local`'s locally bound stages on a loopback port and returns a
/// registry that reaches `stage` there over gRPC, plus the server task.
pub async fn over_grpc(
    local: &proxy_api::Registry,
    stage: Stage,
) -> (proxy_api::Registry, tokio::task::JoinHandle<()>) {
    over_grpc_with(local, stage, proxy_api::ServeOptions::default()).await
}

/// As [`over_grpc`], with the server adapters built from `options`.
pub async fn over_grpc_with(
    local: &proxy_api::Registry,
    stage: Stage,
    options: proxy_api::ServeOptions,
) -> (proxy_api::Registry, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (routes, served) = local.routes(&options);
    assert!(served.contains(&stage), "{stage:?} is not bound local");
    let server = tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let _ = tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(incoming)
            .await;
    });
    let mut remote = proxy_api::Registry::empty();
    let cfg = RemoteConfig {
        endpoints: vec![format!("http://{addr}")],
        ..RemoteConfig::default()
    };
    remote
        .bind_remote(stage, &cfg, proxy_api::Limits::default())
        .expect("bind remote");
    (remote, server)
}

/// A loopback address nobody listens on (yet), never one this test binary
/// was handed before. The OS may give a port it just gave again once the
/// probe listener is closed, and a test that starts two processes on the same
/// port would find the first one answering for the second, which could not
/// bind.
pub fn free_addr() -> SocketAddr {
    static HANDED: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed = HANDED.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr");
        if !handed.contains(&addr.port()) {
            handed.push(addr.port());
            return addr;
        }
    }
    panic!("no loopback port not handed out before in 1000 tries");
}

/// A `feeds serve` OS process started from a TOML config; killed if dropped
/// while still running.
pub struct Proc {
    pub name: String,
    pub addr: SocketAddr,
    /// The config file it was started with (a test may rewrite it and
    /// send SIGHUP).
    pub config: PathBuf,
    child: std::process::Child,
    _dir: tempfile::TempDir,
    pub stderr: PathBuf,
}

impl Proc {
    /// Starts `feeds serve --config <toml>` with the test world; stderr goes
    /// to a file (see [`Proc::log`]).
    pub fn start(name: &str, addr: SocketAddr, toml: &str) -> Proc {
        Self::start_with_env(name, addr, toml, &[])
    }

    /// As [`Proc::start`], with extra environment variables (config overrides).
    pub fn start_with_env(
        name: &str,
        addr: SocketAddr,
        toml: &str,
        env: &[(String, String)],
    ) -> Proc {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join(format!("{name}.toml"));
        std::fs::write(&file, toml).expect("write config");
        let stderr = dir.path().join(format!("{name}.log"));
        let child = std::process::Command::new(EXE)
            .args(["serve", "--config"])
            .arg(&file)
            .envs(test_env())
            .env_remove("RUST_LOG")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("log file"))
            .spawn()
            .expect("spawn feeds serve");
        Proc {
            name: name.to_owned(),
            addr,
            config: file,
            child,
            _dir: dir,
            stderr,
        }
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal");
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "{} did not exit within {limit:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The health status of `service` at `addr`; `None` if nothing answers.
pub async fn health(addr: SocketAddr, service: &str) -> Option<i32> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(Duration::from_millis(200))
        .connect()
        .await
        .ok()?;
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.to_owned(),
    });
    request.set_timeout(Duration::from_millis(500));
    HealthClient::new(channel)
        .check(request)
        .await
        .ok()
        .map(|r| r.into_inner().status)
}

pub const SERVING: i32 = 1;
pub const NOT_SERVING: i32 = 2;

/// Waits (bounded by `limit`) until `service` at `addr` reports `status`.
pub async fn wait_health(addr: SocketAddr, service: &str, status: i32, limit: Duration) {
    let started = std::time::Instant::now();
    loop {
        let now = health(addr, service).await;
        if now == Some(status) {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{addr} {service:?}: expected status {status}, still {now:?} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Business client for `addr`.
pub async fn business(addr: SocketAddr) -> BusinessClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to business");
    BusinessClient::new(channel)
}

/// `GET /metrics` from `addr`, as text.
pub async fn scrape(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut body))
        .await
        .expect("metrics answer in time")
        .expect("read");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}

/// The value of the sample whose line starts with `name{` and contains
/// every one of `labels`; 0 when there is none.
pub fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Two recall replicas (`a`, `b`, each with a metrics endpoint) and a front
/// process hosting the rest of the chain, balancing over both.
pub struct TwoReplicas {
    pub front: Proc,
    pub a: Proc,
    pub b: Proc,
    pub a_metrics: SocketAddr,
    pub b_metrics: SocketAddr,
}

/// The config of one recall replica; `process_extra` goes into `[process]`.
pub fn recall_replica(listen: SocketAddr, metrics: SocketAddr, process_extra: &str) -> String {
    format!(
        "[process]\nlisten = \"{listen}\"\nhost = [\"recall\"]\n{process_extra}\n[telemetry]\nmetrics_listen = \"{metrics}\"\n"
    )
}

/// Starts [`TwoReplicas`] and waits until the front is SERVING.
pub async fn two_replicas(process_extra: &str) -> TwoReplicas {
    let (front_addr, a, b) = (free_addr(), free_addr(), free_addr());
    let (a_metrics, b_metrics) = (free_addr(), free_addr());
    let a_proc = Proc::start("recall-a", a, &recall_replica(a, a_metrics, process_extra));
    let b_proc = Proc::start("recall-b", b, &recall_replica(b, b_metrics, process_extra));
    let front = front_over_recall(front_addr, &[a, b]);
    wait_health(front_addr, "", SERVING, Duration::from_secs(90)).await;
    TwoReplicas {
        front,
        a: a_proc,
        b: b_proc,
        a_metrics,
        b_metrics,
    }
}

/// Calls to recall a replica answered OK, from its `/metrics`.
pub async fn recall_served(metrics: SocketAddr) -> f64 {
    sample(
        &scrape(metrics).await,
        "grpc_server_handled_total",
        &["callee=\"recall\"", "grpc_code=\"OK\""],
    )
}

/// A front hosting every stage but recall, which it calls at `pods`.
#[allow(dead_code)]
pub fn front_over_recall(front_addr: SocketAddr, pods: &[SocketAddr]) -> Proc {
    let endpoints: Vec<String> = pods.iter().map(|p| format!("\"http://{p}\"")).collect();
    Proc::start(
        "front",
        front_addr,
        &format!(
            "[process]\nlisten = \"{front_addr}\"\nhost = [\"business\", \"split\", \"rerank\", \"finerank\"]\n\n[remote.recall]\nendpoints = [{}]\nhealth_interval_ms = 200\n",
            endpoints.join(", ")
        ),
    )
}

/// Four clients sending to `front_addr` back to back until `stop` is set or
/// `limit` has passed; [`load_outcome`] gathers what they saw.
#[allow(dead_code)]
pub fn steady_load(
    front_addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    limit: Duration,
) -> Vec<tokio::task::JoinHandle<(u32, Vec<tonic::Status>)>> {
    let cases = cases(20);
    (0..4)
        .map(|worker| {
            let stop = std::sync::Arc::clone(&stop);
            let cases = cases.clone();
            tokio::spawn(async move {
                let mut client = business(front_addr).await;
                let (mut ok, mut failed) = (0u32, Vec::new());
                let started = std::time::Instant::now();
                let mut i = worker;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && started.elapsed() < limit
                {
                    let case = &cases[i % cases.len()];
                    match client.get_feed(request(case, i)).await {
                        Ok(_) => ok += 1,
                        Err(status) => failed.push(status),
                    }
                    i += 4;
                }
                (ok, failed)
            })
        })
        .collect()
}

/// Requests answered and the failures, over every client of [`steady_load`].
#[allow(dead_code)]
pub async fn load_outcome(
    load: Vec<tokio::task::JoinHandle<(u32, Vec<tonic::Status>)>>,
) -> (u32, Vec<tonic::Status>) {
    let (mut ok, mut failed) = (0, Vec::new());
    for task in load {
        let (o, f) = task.await.expect("load task");
        ok += o;
        failed.extend(f);
    }
    (ok, failed)
}
