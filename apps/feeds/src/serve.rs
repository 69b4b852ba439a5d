//! `feeds serve`: binds the sockets, builds the registry for the plan, logs
//! the topology and hands over to the runtime's server
//! ([`proxy_api::server::run`]), with the metrics endpoint beside it.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use proxy_api::server::ServerOptions;
use proxy_api::{Binding, Stage};
use tokio::net::TcpListener;

use crate::config::{Config, Plan};
use crate::wiring;

pub use proxy_api::server::LIVENESS;

/// Why a process could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// `process.listen` cannot be bound.
    #[error("process.listen: cannot listen on {addr}: {source}")]
    Bind {
        /// The address from the config.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The stages could not be set up.
    #[error(transparent)]
    Wiring(#[from] crate::wiring::WiringError),
    /// `process.tls.health_listen` cannot be bound.
    #[error("process.tls.health_listen: cannot listen on {addr}: {source}")]
    HealthBind {
        /// The address from the config.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// `telemetry.metrics_listen` cannot be bound.
    #[error("telemetry.metrics_listen: cannot listen on {addr}: {source}")]
    MetricsBind {
        /// The address from the config.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error(transparent)]
    Server(#[from] proxy_api::server::ServerError),
}

/// The sockets a process serves on, bound before anything else starts.
pub struct Listeners {
    /// `process.listen`: every hosted stage, health and reflection.
    pub grpc: TcpListener,
    /// `telemetry.metrics_listen`: `GET /metrics`.
    pub metrics: Option<TcpListener>,
    /// `process.tls.health_listen`: plaintext health for probes.
    pub health: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(grpc: TcpListener) -> Self {
        Self {
            grpc,
            metrics: None,
            health: None,
        }
    }
}

/// Binds `process.listen` and `telemetry.metrics_listen`, before anything
/// else starts, so a busy port fails the process cleanly. Must run inside a
/// tokio runtime.
pub fn bind(plan: &Plan) -> Result<Listeners, ServeError> {
    let err = |source| ServeError::Bind {
        addr: plan.listen,
        source,
    };
    let std = std::net::TcpListener::bind(plan.listen).map_err(err)?;
    std.set_nonblocking(true).map_err(err)?;
    let grpc = TcpListener::from_std(std).map_err(err)?;
    let metrics = match plan.metrics_listen {
        None => None,
        Some(addr) => Some(
            crate::telemetry::bind_metrics(addr)
                .map_err(|source| ServeError::MetricsBind { addr, source })?,
        ),
    };
    let health = match plan.health_listen {
        None => None,
        Some(addr) => {
            let err = |source| ServeError::HealthBind { addr, source };
            let std = std::net::TcpListener::bind(addr).map_err(err)?;
            std.set_nonblocking(true).map_err(err)?;
            Some(TcpListener::from_std(std).map_err(err)?)
        }
    };
    Ok(Listeners {
        grpc,
        metrics,
        health,
    })
}

/// One line per stage: how this process reaches it.
pub fn describe(topology: &[(Stage, Binding)], listen: SocketAddr) -> Vec<String> {
    topology
        .iter()
        .map(|(stage, binding)| match binding {
            Binding::Local => format!("{:<9} local, served on {listen}", stage.name()),
            other => format!("{:<9} {other}", stage.name()),
        })
        .collect()
}

/// The runtime's server options from the `[process]` section.
pub fn server_options(config: &Config, plan: &Plan) -> ServerOptions {
    let p = &config.process;
    let ms = |v: u64| (v > 0).then(|| Duration::from_millis(v));
    ServerOptions {
        trusted_peers: plan.trusted_peers.clone().into(),
        limits: p.limits,
        default_deadline: ms(p.default_deadline_ms),
        drain: Duration::from_millis(p.drain_ms),
        grace: Duration::from_millis(p.grace_ms),
        admission: plan.admission,
        keepalive: ms(p.keepalive_ms),
        keepalive_timeout: ms(p.keepalive_timeout_ms),
        max_connection_age: ms(p.max_connection_age_ms),
        pass_through: p.pass_through,
        tls: None,
    }
}

/// Hosts the stages `plan` names and serves them on `listeners` until
/// `shutdown` resolves; in-flight calls finish before it returns. Health,
/// drain and grace are the runtime's (see [`proxy_api::server::run`]).
pub async fn run(
    config: &Config,
    plan: &Plan,
    listeners: impl Into<Listeners>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    run_reloading(config, plan, listeners, shutdown, None::<fn() -> _>).await
}

/// As [`run`], and on every SIGHUP: loads the config again with `reload`
/// and applies its routes and pools (see `wiring::reload`). A config
/// that does not load or apply is refused naming the key, and the running
/// tables keep serving. `feeds_route_reloads_total{result}` counts both.
pub async fn run_reloading<F>(
    config: &Config,
    plan: &Plan,
    listeners: impl Into<Listeners>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reload: Option<F>,
) -> Result<(), ServeError>
where
    F: Fn() -> Result<(Config, Plan), crate::LoadError> + Send + Sync + 'static,
{
    let Listeners {
        grpc: listener,
        metrics,
        health,
    } = listeners.into();
    let registry = std::sync::Arc::new(wiring::build(config, plan)?);
    let listen = listener.local_addr().unwrap_or(plan.listen);
    for line in describe(&registry.topology(), listen) {
        tracing::info!(target: "feeds::topology", "{line}");
    }
    let reloader = reload.map(|reload| {
        tokio::spawn(follow_sighup(
            std::sync::Arc::clone(&registry),
            plan.clone(),
            reload,
        ))
    });
    let rollouts = start_rollouts(config, plan, &registry);
    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_task = metrics.map(|l| {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(%addr, "metrics on http://{addr}/metrics");
        }
        let shadows = std::sync::Arc::clone(&registry.options().shadows);
        tokio::spawn(crate::telemetry::serve_metrics(l, shadows, async move {
            let _ = metrics_stopped.await;
        }))
    });
    let mut options = server_options(config, plan);
    // The server presents and verifies with the same material as the clients.
    if let Some(tls) = &registry.options().tls {
        let tls = proxy_api::tls::ServerTls::new(std::sync::Arc::clone(tls.material()))
            .map_err(|e| crate::wiring::WiringError::Tls(format!("process.tls: {e}")))?;
        options.tls = Some(tls);
    }
    let result =
        proxy_api::server::run_with_health(&registry, listener, health, &options, shutdown).await;
    if let Some(task) = reloader {
        task.abort();
    }
    for task in rollouts {
        task.abort();
    }
    let _ = metrics_stop.send(());
    if let Some(task) = metrics_task {
        let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
    }
    result?;
    tracing::info!("stopped");
    Ok(())
}

/// Reloads routes and pools on every SIGHUP, for as long as it runs.
/// Starts every `[rollout.<stage>]`, and a task that turns SIGUSR1 into
/// pause/resume and SIGUSR2 into abort for all of them.
fn start_rollouts(
    config: &Config,
    plan: &Plan,
    registry: &std::sync::Arc<proxy_api::Registry>,
) -> Vec<tokio::task::JoinHandle<()>> {
    use proxy_api::rollout::{Command, Rollout};
    let mut tasks = Vec::new();
    let mut senders = Vec::new();
    for (name, rollout) in &config.rollout {
        let Some(route) = plan.routes.iter().find(|r| r.stage.name() == name) else {
            continue;
        };
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        senders.push(tx);
        let rollout = Rollout::new(
            route.stage,
            rollout.clone(),
            route.rules.clone(),
            crate::wiring::pools_with_tls(registry, &route.pools),
            config.process.limits,
            std::sync::Arc::clone(registry),
        );
        tasks.push(tokio::spawn(rollout.run(rx)));
    }
    if senders.is_empty() {
        return tasks;
    }
    tasks.push(tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut usr1), Ok(mut usr2)) = (
            signal(SignalKind::user_defined1()),
            signal(SignalKind::user_defined2()),
        ) else {
            tracing::warn!(
                "SIGUSR1/SIGUSR2 cannot be caught: rollouts cannot be paused or aborted"
            );
            return;
        };
        let mut paused = false;
        loop {
            let command = tokio::select! {
                Some(()) = usr1.recv() => {
                    paused = !paused;
                    if paused { Command::Pause } else { Command::Resume }
                }
                Some(()) = usr2.recv() => Command::Abort,
                else => return,
            };
            tracing::warn!("rollouts: {command:?} (signal)");
            for tx in &senders {
                let _ = tx.send(command).await;
            }
        }
    }));
    tasks
}

async fn follow_sighup<F>(
    registry: std::sync::Arc<proxy_api::Registry>,
    mut running: Plan,
    reload: F,
) where
    F: Fn() -> Result<(Config, Plan), crate::LoadError>,
{
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("SIGHUP cannot be caught: routes will not reload");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading routes and pools");
        let applied = reload()
            .map_err(|e| e.to_string())
            .and_then(|(config, plan)| {
                wiring::reload(&registry, &config, &plan, &running)
                    .map(|lines| (plan, lines))
                    .map_err(|e| e.to_string())
            });
        match applied {
            Ok((plan, lines)) => {
                proxy_api::observe::count_reload("ok");
                if plan.hosted != running.hosted
                    || plan.listen != running.listen
                    || plan.remotes != running.remotes
                {
                    tracing::warn!(
                        "reload: only routes and pools change while serving; restart for process.host, listen or remote endpoints"
                    );
                }
                for line in lines {
                    tracing::info!(target: "feeds::routes", "{line}");
                }
                tracing::info!("reload: applied");
                running = plan;
            }
            Err(e) => {
                proxy_api::observe::count_reload("error");
                tracing::error!("reload refused, the running routes stay: {e}");
            }
        }
    }
}
