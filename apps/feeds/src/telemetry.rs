//! Logs, trace export and the metrics endpoint of a `feeds serve` process,
//! from the `[telemetry]` section. The per-call spans and series themselves
//! come from the registry's middleware (`proxy_api::observe`).

use std::net::SocketAddr;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::net::TcpListener;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{DEFAULT_LOG_FILTER, LogFormat, Plan, TelemetryConfig};

/// Flushes exported spans when the process stops.
#[derive(Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports what is still buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!("trace export shutdown: {e}");
        }
    }
}

/// The filter: `RUST_LOG` if set, else `telemetry.log_filter`.
fn filter(config: &TelemetryConfig) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// The `service.name` of exported spans.
pub fn service_name(config: &TelemetryConfig, plan: &Plan) -> String {
    if !config.service_name.is_empty() {
        return config.service_name.clone();
    }
    if plan.hosted.len() == proxy_api::Stage::ALL.len() {
        return "feeds".into();
    }
    let names: Vec<&str> = plan.hosted.iter().map(|s| s.name()).collect();
    format!("feeds-{}", names.join("-"))
}

/// Installs the global subscriber: text or JSON lines on stderr, plus OTLP
/// export when `otlp_endpoint` is set. Must run inside a tokio runtime when
/// export is on.
pub fn init(config: &TelemetryConfig, plan: &Plan) -> anyhow::Result<TelemetryGuard> {
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match config.log_format {
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    let mut guard = TelemetryGuard::default();
    let otel = if config.otlp_endpoint.is_empty() {
        None
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.otlp_endpoint.clone())
            .build()
            .map_err(|e| {
                anyhow::anyhow!("telemetry.otlp_endpoint: {:?}: {e}", config.otlp_endpoint)
            })?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service_name(config, plan))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("feeds");
        guard.provider = Some(provider);
        // The call spans are at debug level: exported whatever the log
        // filter says, while the logs keep their own filter.
        let export = EnvFilter::try_new(format!("{DEFAULT_LOG_FILTER},feeds::rpc=debug"))
            .unwrap_or_else(|_| EnvFilter::new("info"));
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(export),
        )
    };
    let enabled = otel.is_some();
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter(config)))
        .with(otel)
        .try_init()
        .map_err(|e| anyhow::anyhow!("logging: {e}"))?;
    proxy_api::observe::set_otel_enabled(enabled);
    if enabled {
        tracing::info!(endpoint = %config.otlp_endpoint, "exporting spans over OTLP");
    }
    Ok(guard)
}

/// The plain subscriber of the commands other than `serve`.
pub fn init_default() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(&TelemetryConfig::default()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Binds the metrics address (before anything else starts, so a busy port
/// fails the process cleanly).
pub fn bind_metrics(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let std = std::net::TcpListener::bind(addr)?;
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}

/// Serves `GET /metrics` (Prometheus text format) and `GET /shadow` (the
/// shadow comparisons with their verdicts, JSON: what `feeds diff-report`
/// prints) until `shutdown` resolves.
pub async fn serve_metrics(
    listener: TcpListener,
    shadows: std::sync::Arc<proxy_api::shadow::Shadows>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    async fn metrics() -> impl axum::response::IntoResponse {
        (
            [(
                http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            proxy_api::observe::render(),
        )
    }
    let report = move || {
        let shadows = std::sync::Arc::clone(&shadows);
        async move {
            (
                [(http::header::CONTENT_TYPE, "application/json")],
                serde_json::to_string_pretty(&shadows.report()).unwrap_or_default(),
            )
        }
    };
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .route("/shadow", axum::routing::get(report));
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!("metrics endpoint stopped: {e}");
    }
}
