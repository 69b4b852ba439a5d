//! The process around the served stacks: one gRPC listener serving every
//! locally bound stage, health and reflection, behind the server-side HTTP
//! layers (admission through the adaptive concurrency limit, size-limit
//! status), with readiness that follows the remote downstreams and a
//! drain-then-grace shutdown.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::{Balancer, Limits, Registry, ServeOptions};

/// The health service name that says only "this process is up": SERVING
/// from the moment the stages are built until the process exits, whatever
/// its downstreams or a shutdown in progress. Liveness and startup probes
/// use it; readiness uses `""`.
pub const LIVENESS: &str = "liveness";

/// How the server of one process behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerOptions {
    /// Peers whose `x-tandem-*` headers the entry stage keeps.
    pub trusted_peers: Arc<[crate::route::Cidr]>,
    /// Message size limits.
    pub limits: Limits,
    /// The deadline of a request that arrives without `grpc-timeout`.
    pub default_deadline: Option<Duration>,
    /// NOT_SERVING for this long before refusing new connections.
    pub drain: Duration,
    /// After the drain, how long in-flight requests may take to finish.
    pub grace: Duration,
    /// How many stage requests are admitted at once (fixed, or adaptive
    /// under a ceiling); past it, RESOURCE_EXHAUSTED at once. Health and
    /// reflection are never limited. `None` means no limit.
    pub admission: Option<crate::overload::LimitMode>,
    /// HTTP/2 keepalive ping interval; `None` turns it off.
    pub keepalive: Option<Duration>,
    /// How long a keepalive ping may go unanswered.
    pub keepalive_timeout: Option<Duration>,
    /// Connections older than this are closed gracefully (GOAWAY).
    pub max_connection_age: Option<Duration>,
    /// Carry pass-through fields undecoded (see [`crate::PassThrough`]).
    pub pass_through: bool,
    /// Serve mutual TLS only (see [`crate::tls`]); `None`: plaintext.
    pub tls: Option<crate::tls::ServerTls>,
}

impl ServerOptions {
    fn serve_options(&self) -> ServeOptions {
        ServeOptions {
            limits: self.limits,
            default_deadline: self.default_deadline,
            trusted_peers: Arc::clone(&self.trusted_peers),
            pass_through: self.pass_through,
            recorders: Arc::default(),
            bulkheads: crate::overload::Bulkheads::default(),
        }
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            trusted_peers: Arc::from([]),
            limits: Limits::default(),
            default_deadline: None,
            drain: Duration::ZERO,
            grace: Duration::from_secs(10),
            admission: None,
            keepalive: None,
            keepalive_timeout: None,
            max_connection_age: None,
            pass_through: true,
            tls: None,
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The reflection service could not be built from the descriptors.
    #[error("reflection: {0}")]
    Reflection(String),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// tonic answers a message over the receive limit with OUT_OF_RANGE; gRPC
/// says RESOURCE_EXHAUSTED (and the message, which names the limit, stays).
/// The client side makes the same rewrite in [`crate::RemoteTarget::status`].
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
            .is_some_and(|m| m.replace("%20", " ").contains(crate::slot::TOO_LARGE));
    if too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}

/// Serves every locally bound stage of `registry` on `listener` until
/// `shutdown` resolves; in-flight calls finish (within the grace period)
/// before it returns.
///
/// Health: `""` and every served service are NOT_SERVING until every remote
/// downstream has answered a health probe with SERVING, follow them after
/// that (NOT_SERVING while one is unreachable, SERVING again when it is
/// back), and are NOT_SERVING for good from the first shutdown signal.
/// [`LIVENESS`] is SERVING from the start.
pub async fn run(
    registry: &Registry,
    listener: TcpListener,
    options: &ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    run_with_health(registry, listener, None, options, shutdown).await
}

/// As [`run`], and serves the same health statuses in plaintext on
/// `health`, when given: only `grpc.health.v1`, for probes that speak no
/// TLS while the main listener is mutual TLS only.
pub async fn run_with_health(
    registry: &Registry,
    listener: TcpListener,
    health: Option<TcpListener>,
    options: &ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let health_listener = health;
    // The server adapters record into the same recorders as the registry's
    // local bindings (one writer per stage), and share each stage's bulkhead
    // with the registry's local stacks, so a stage's limit counts its calls
    // however they arrive.
    let serve_options = ServeOptions {
        recorders: Arc::clone(&registry.options().recorders),
        bulkheads: registry.options().bulkheads.clone(),
        ..options.serve_options()
    };
    let (routes, served) = registry.routes(&serve_options);
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
    // Both reflection versions in use: v1, and v1alpha for the clients that
    // speak only it.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    let listen = listener.local_addr().ok();
    tracing::info!(listen = ?listen, services = ?served.iter().map(|s| s.service_name()).collect::<Vec<_>>(), "serving");

    let plain_health = health_listener.map(|l| {
        let service = health_service.clone();
        tokio::spawn(async move {
            let incoming = TcpIncoming::from(l).with_nodelay(Some(true));
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
            if let Err(e) = served {
                tracing::error!("plaintext health listener: {e}");
            }
        })
    });

    let draining = Arc::new(AtomicBool::new(false));
    let readiness = tokio::spawn(follow_downstreams(
        registry.balancers(),
        health.clone(),
        names.clone(),
        Arc::clone(&draining),
    ));

    // Shutdown: NOT_SERVING, drain, stop accepting, finish in-flight work
    // within the grace period, then return regardless.
    let (drain, grace) = (options.drain, options.grace);
    let (draining_done, grace_started) = tokio::sync::oneshot::channel::<()>();
    // Tells the TLS listener loop (which owns the socket) to stop accepting.
    let (stop_accepting, accepting) = tokio::sync::watch::channel(false);
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
        let _ = stop_accepting.send(true);
        let _ = draining_done.send(());
    };
    let hard_stop = async move {
        match grace_started.await {
            Ok(()) => tokio::time::sleep(grace).await,
            Err(_) => std::future::pending().await,
        }
    };
    let admission = options.admission.map(|mode| {
        crate::overload::AdmitLayer::new(crate::overload::Limiter::new("process", mode))
    });
    let mut builder = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .max_frame_size(options.limits.frame_size())
        .http2_keepalive_interval(options.keepalive)
        .http2_keepalive_timeout(options.keepalive_timeout);
    if let Some(age) = options.max_connection_age {
        builder = builder.max_connection_age(age);
    }
    // The server side's HTTP layers: admission -> size-limit status.
    let router = builder
        .layer(tower::util::option_layer(admission))
        .layer(tower::util::MapResponseLayer::new(size_limit_status))
        .add_routes(routes)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    type Serving =
        std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;
    let server: Serving = match &options.tls {
        None => {
            let incoming = TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .map(|tcp| tcp.map(crate::coalesce::Coalesce::new));
            Box::pin(router.serve_with_incoming_shutdown(incoming, signal))
        }
        Some(tls) => {
            let mut accepting = accepting;
            let stop = async move {
                let _ = accepting.wait_for(|stop| *stop).await;
            };
            let incoming = tls.incoming(listener, stop);
            Box::pin(router.serve_with_incoming_shutdown(incoming, signal))
        }
    };
    let result = tokio::select! {
        result = server => result.map_err(ServerError::from),
        () = hard_stop => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "shutdown: grace period over, closing with requests in flight");
            Ok(())
        }
    };
    readiness.abort();
    if let Some(task) = plain_health {
        task.abort();
    }
    result
}

/// Keeps `names` SERVING exactly while every remote downstream is reachable
/// and no shutdown has begun.
async fn follow_downstreams(
    balancers: Vec<Arc<Balancer>>,
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
