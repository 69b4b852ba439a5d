//! `feeds serve`: hosts the planned stages and serves them over gRPC.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use proxy_api::{Binding, ServeOptions, Stage};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::config::{Config, Plan};
use crate::wiring;

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
    /// The reflection service could not be built from the descriptors.
    #[error("reflection: {0}")]
    Reflection(String),
    /// An echo stage was given a bad `--next`.
    #[error("echo: {0}")]
    Echo(String),
    /// `telemetry.metrics_listen` cannot be bound.
    #[error("telemetry.metrics_listen: cannot listen on {addr}: {source}")]
    MetricsBind {
        /// The address from the config.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The sockets a process serves on, bound before anything else starts.
pub struct Listeners {
    /// `process.listen`: every hosted stage, health and reflection.
    pub grpc: TcpListener,
    /// `telemetry.metrics_listen`: `GET /metrics`.
    pub metrics: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(grpc: TcpListener) -> Self {
        Self {
            grpc,
            metrics: None,
        }
    }
}

/// The health service name that says only "this process is up": SERVING
/// from the moment the stages are built until the process exits, whatever
/// its downstreams or a shutdown in progress. Liveness and startup probes
/// use it; readiness uses `""`.
pub const LIVENESS: &str = "liveness";

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
    Ok(Listeners { grpc, metrics })
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

/// tonic answers a message over the receive limit with OUT_OF_RANGE; gRPC
/// says RESOURCE_EXHAUSTED (and the message, which names the limit, stays).
fn size_limit_status(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let headers = response.headers_mut();
    let too_large = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11")
        && headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            // grpc-message is percent-encoded on the wire.
            .is_some_and(|m| m.replace("%20", " ").contains("message length too large"));
    if too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}

/// Hosts the stages `plan` names and serves them on `listeners` until
/// `shutdown` resolves; in-flight calls finish before it returns.
///
/// Health: `""` and every served service are NOT_SERVING until every remote
/// downstream has answered a health probe with SERVING, follow them after
/// that (NOT_SERVING while one is unreachable, SERVING again when it is
/// back), and are NOT_SERVING for good from the first shutdown signal.
/// [`LIVENESS`] is SERVING from the moment the stages are built.
pub async fn run(
    config: &Config,
    plan: &Plan,
    listeners: impl Into<Listeners>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let Listeners {
        grpc: listener,
        metrics,
    } = listeners.into();
    let registry = wiring::build(config, plan)?;
    let listen = listener.local_addr().unwrap_or(plan.listen);
    for line in describe(&registry.topology(), listen) {
        tracing::info!(target: "feeds::topology", "{line}");
    }
    let options = ServeOptions {
        limits: config.process.limits,
        default_deadline: match config.process.default_deadline_ms {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        },
    };
    let (routes, served) = registry.routes(&options);
    let (health, health_service) = tonic_health::server::health_reporter();
    let names: Vec<&'static str> = served
        .iter()
        .map(|s| s.service_name())
        .chain([""])
        .collect();
    health
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    for name in &names {
        health
            .set_service_status(*name, ServingStatus::NotServing)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proxy_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    tracing::info!(%listen, services = ?names.iter().filter(|n| !n.is_empty()).collect::<Vec<_>>(), "serving");

    let draining = Arc::new(AtomicBool::new(false));
    let readiness = tokio::spawn(follow_downstreams(
        registry.balancers(),
        health.clone(),
        names.clone(),
        Arc::clone(&draining),
    ));
    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_task = metrics.map(|l| {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(%addr, "metrics on http://{addr}/metrics");
        }
        tokio::spawn(crate::telemetry::serve_metrics(l, async move {
            let _ = metrics_stopped.await;
        }))
    });

    // Shutdown: NOT_SERVING, drain, stop accepting, finish in-flight work
    // within the grace period, then return regardless.
    let drain = Duration::from_millis(config.process.drain_ms);
    let grace = Duration::from_millis(config.process.grace_ms);
    let (draining_done, grace_started) = tokio::sync::oneshot::channel::<()>();
    let stop_following = readiness.abort_handle();
    let signal = async move {
        shutdown.await;
        // No readiness update may land after the NOT_SERVING below.
        stop_following.abort();
        tracing::info!(
            drain_ms = drain.as_millis() as u64,
            "shutdown: NOT_SERVING, draining"
        );
        draining.store(true, Ordering::SeqCst);
        for name in &names {
            health
                .set_service_status(*name, ServingStatus::NotServing)
                .await;
        }
        tokio::time::sleep(drain).await;
        tracing::info!("shutdown: refusing new connections, finishing in-flight requests");
        let _ = draining_done.send(());
    };
    let hard_stop = async move {
        match grace_started.await {
            Ok(()) => tokio::time::sleep(grace).await,
            Err(_) => std::future::pending().await,
        }
    };
    let limit = match config.process.max_concurrent_requests {
        0 => tokio::sync::Semaphore::MAX_PERMITS,
        n => n,
    };
    let ms = |v: u64| (v > 0).then(|| Duration::from_millis(v));
    let mut builder = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(ms(config.process.keepalive_ms))
        .http2_keepalive_timeout(ms(config.process.keepalive_timeout_ms));
    if let Some(age) = ms(config.process.max_connection_age_ms) {
        builder = builder.max_connection_age(age);
    }
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = builder
        .load_shed(true)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(limit))
        .layer(tower::util::MapResponseLayer::new(size_limit_status))
        .add_routes(routes)
        .add_service(health_service)
        .add_service(reflection)
        .serve_with_incoming_shutdown(incoming, signal);
    let result = tokio::select! {
        result = server => result.map_err(ServeError::from),
        () = hard_stop => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "shutdown: grace period over, closing with requests in flight");
            Ok(())
        }
    };
    readiness.abort();
    let _ = metrics_stop.send(());
    if let Some(task) = metrics_task {
        let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
    }
    result?;
    tracing::info!("stopped");
    Ok(())
}

/// Keeps `names` SERVING exactly while every remote downstream is reachable
/// and no shutdown has begun.
async fn follow_downstreams(
    balancers: Vec<Arc<proxy_api::Balancer>>,
    health: tonic_health::server::HealthReporter,
    names: Vec<&'static str>,
    draining: Arc<AtomicBool>,
) {
    let mut serving = false;
    loop {
        let down: Vec<&'static str> = balancers
            .iter()
            .filter(|b| !b.reachable())
            .map(|b| b.stage().name())
            .collect();
        if draining.load(Ordering::SeqCst) {
            return;
        }
        let ready = down.is_empty();
        if ready != serving {
            let status = match ready {
                true => ServingStatus::Serving,
                false => ServingStatus::NotServing,
            };
            for name in &names {
                health.set_service_status(*name, status).await;
            }
            match ready {
                true => tracing::info!("ready: SERVING"),
                false => tracing::warn!(unreachable = ?down, "not ready: NOT_SERVING"),
            }
            serving = ready;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
