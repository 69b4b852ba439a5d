//! `feeds serve`: hosts the planned stages and serves them over gRPC.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use proxy_api::{Binding, Stage};
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
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Binds `process.listen`, before anything else starts, so a busy port
/// fails the process cleanly. Must run inside a tokio runtime.
pub fn bind(plan: &Plan) -> Result<TcpListener, ServeError> {
    let err = |source| ServeError::Bind {
        addr: plan.listen,
        source,
    };
    let std = std::net::TcpListener::bind(plan.listen).map_err(err)?;
    std.set_nonblocking(true).map_err(err)?;
    TcpListener::from_std(std).map_err(err)
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

/// Hosts the stages `plan` names and serves them on `listener` until
/// `shutdown` resolves; in-flight calls finish before it returns.
pub async fn run(
    config: &Config,
    plan: &Plan,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let registry = wiring::build(config, plan)?;
    let listen = listener.local_addr().unwrap_or(plan.listen);
    for line in describe(&registry.topology(), listen) {
        tracing::info!(target: "feeds::topology", "{line}");
    }
    let (routes, served) = registry.routes(&config.process.limits);
    let (health, health_service) = tonic_health::server::health_reporter();
    let names: Vec<&'static str> = served
        .iter()
        .map(|s| s.service_name())
        .chain([""])
        .collect();
    for name in &names {
        health
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proxy_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    tracing::info!(%listen, services = ?names.iter().filter(|n| !n.is_empty()).collect::<Vec<_>>(), "serving");

    // Shutdown: NOT_SERVING, drain, stop accepting, finish in-flight work
    // within the grace period, then return regardless.
    let drain = Duration::from_millis(config.process.drain_ms);
    let grace = Duration::from_millis(config.process.grace_ms);
    let (draining_done, grace_started) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!(
            drain_ms = drain.as_millis() as u64,
            "shutdown: NOT_SERVING, draining"
        );
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
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .load_shed(true)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(limit))
        .layer(tower::util::MapResponseLayer::new(size_limit_status))
        .add_routes(routes)
        .add_service(health_service)
        .add_service(reflection)
        .serve_with_incoming_shutdown(incoming, signal);
    tokio::select! {
        result = server => result?,
        () = hard_stop => tracing::warn!(grace_ms = grace.as_millis() as u64, "shutdown: grace period over, closing with requests in flight"),
    }
    tracing::info!("stopped");
    Ok(())
}
