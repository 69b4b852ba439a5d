//! `feeds serve`: hosts the planned stages and serves them over gRPC.

use std::future::Future;
use std::net::SocketAddr;

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
    for stage in &served {
        health
            .set_service_status(stage.service_name(), ServingStatus::Serving)
            .await;
    }
    health.set_service_status("", ServingStatus::Serving).await;
    tracing::info!(%listen, services = ?served.iter().map(|s| s.service_name()).collect::<Vec<_>>(), "serving");
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_routes(routes)
        .add_service(health_service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    tracing::info!("stopped");
    Ok(())
}
