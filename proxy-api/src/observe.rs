//! Metrics and traces of stage calls: the metric families, the [`Site`] of
//! one method as one adapter sees it, and its span. The observe layer
//! (`crate::stack::Observe`) uses them in every stack, caller side in both
//! bindings and server side, so the series, the span names and the trace
//! context are the same in both bindings. Stage code does none of this itself.
//!
//! Metrics follow the go-grpc-prometheus names: `grpc_client_handled_total`
//! and `grpc_client_handling_seconds` for every call a process makes to a
//! stage (local or over gRPC), `grpc_server_handled_total` and
//! `grpc_server_handling_seconds` for every call that reached a process over
//! the network. Each series carries `grpc_service`, `grpc_method`, `binding`
//! (`local` or `grpc`), `caller` and `callee`; counters add `grpc_code`.
//!
//! Traces use W3C trace context: each call opens a span named `rpc` with
//! `otel.name` = `feeds.v1.Recall/Recall` (the same in both bindings), takes
//! the incoming `traceparent` as its parent, and rewrites `traceparent` so the
//! callee's span is its child. A request that arrives with no (or a malformed)
//! `traceparent` starts a new trace. When no subscriber records the span
//! (none installed, or `feeds::rpc` filtered out) the header passes through
//! untouched and no ids are made. When an OpenTelemetry layer is installed
//! (see [`set_otel_enabled`]) the ids are the exporter's; otherwise they are
//! made here, so logs carry a trace id either way.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{Cx, Stage};

/// Duration buckets in seconds: from 100 µs (an in-process hop) to 10 s.
const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Label names of the counters (histograms drop `grpc_code`). `target` is
/// the route target that served a client call (`local` or a pool; empty on
/// the server side), `traffic` is `shadow` for shadow copies, `stress` for
/// stress-tagged calls, else `live`.
const LABELS: [&str; 9] = [
    "grpc_type",
    "grpc_service",
    "grpc_method",
    "binding",
    "caller",
    "callee",
    "target",
    "traffic",
    "grpc_code",
];

/// The two values of the `traffic` label.
const TRAFFIC: [&str; 3] = ["live", "stress", "shadow"];

/// The process's metric families, registered once.
pub struct Metrics {
    registry: prometheus::Registry,
    route_fallbacks: IntCounterVec,
    route_reloads: IntCounterVec,
    degraded: IntCounterVec,
    caps_relaxed: IntCounterVec,
    retries: IntCounterVec,
    shadow_compared: IntCounterVec,
    shadow_diff: IntCounterVec,
    shadow_failed: IntCounterVec,
    shadow_dropped: IntCounterVec,
    recorded: IntCounterVec,
    record_dropped: IntCounterVec,
    rollout_weight: prometheus::GaugeVec,
    rollout_step: prometheus::IntGaugeVec,
    rollout_state: prometheus::IntGaugeVec,
    client_handled: IntCounterVec,
    client_seconds: HistogramVec,
    server_handled: IntCounterVec,
    server_seconds: HistogramVec,
}

fn build_metrics() -> Result<Metrics, prometheus::Error> {
    let registry = prometheus::Registry::new();
    let counter = |name: &str, help: &str| -> Result<IntCounterVec, prometheus::Error> {
        let c = IntCounterVec::new(Opts::new(name, help), &LABELS)?;
        registry.register(Box::new(c.clone()))?;
        Ok(c)
    };
    let histogram = |name: &str, help: &str| -> Result<HistogramVec, prometheus::Error> {
        let h = HistogramVec::new(
            HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
            &LABELS[..8],
        )?;
        registry.register(Box::new(h.clone()))?;
        Ok(h)
    };
    let plain =
        |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
    Ok(Metrics {
        route_fallbacks: plain(
            "feeds_route_fallbacks_total",
            "Calls whose route target had no healthy endpoint and went to the rule's fallback.",
            &["stage", "from", "to"],
        )?,
        route_reloads: plain(
            "feeds_route_reloads_total",
            "Route and pool reloads, by result (ok, error).",
            &["result"],
        )?,
        degraded: plain(
            "feeds_degraded_responses_total",
            "Answers served degraded (a stage below failed), by stage and tenant.",
            &["stage", "tenant"],
        )?,
        caps_relaxed: plain(
            "feeds_caps_relaxed_total",
            "Pages whose diversity caps were relaxed because the allowed candidates \
             could not fill them, by stage and tenant.",
            &["stage", "tenant"],
        )?,
        retries: plain(
            "feeds_client_retries_total",
            "Attempts sent again to another endpoint because the first never reached \
             its server (the same encoded bytes), by stage.",
            &["stage"],
        )?,
        shadow_compared: plain(
            "feeds_shadow_compared_total",
            "Shadow comparisons, by stage, shadow target and kind (candidate: the shadow \
             against the served answer; noise: the primary against itself).",
            &["stage", "target", "kind"],
        )?,
        shadow_diff: plain(
            "feeds_shadow_diff_total",
            "Shadow comparisons in which a field differed, by stage, shadow target, field and kind.",
            &["stage", "target", "field", "kind"],
        )?,
        shadow_failed: plain(
            "feeds_shadow_failed_total",
            "Shadow copies whose call failed while the served call succeeded.",
            &["stage", "target"],
        )?,
        shadow_dropped: plain(
            "feeds_shadow_dropped_total",
            "Shadow copies not made or not finished, by stage and reason \
             (shadow_unhealthy, queue_full, deadline, primary_failed).",
            &["stage", "reason"],
        )?,
        rollout_weight: {
            let g = prometheus::GaugeVec::new(
                Opts::new(
                    "feeds_rollout_weight",
                    "Percent of users a rollout sends to its candidate, by stage.",
                ),
                &["stage"],
            )?;
            registry.register(Box::new(g.clone()))?;
            g
        },
        rollout_step: {
            let g = prometheus::IntGaugeVec::new(
                Opts::new(
                    "feeds_rollout_step",
                    "The step a rollout is at (0 is the allow-listed users when it has them), by stage.",
                ),
                &["stage"],
            )?;
            registry.register(Box::new(g.clone()))?;
            g
        },
        rollout_state: {
            let g = prometheus::IntGaugeVec::new(
                Opts::new(
                    "feeds_rollout_state",
                    "1 for the state a rollout is in (running, paused, complete, rolled_back, aborted), by stage.",
                ),
                &["stage", "state"],
            )?;
            registry.register(Box::new(g.clone()))?;
            g
        },
        recorded: plain(
            "feeds_recorded_total",
            "Calls handed to the recorder, by stage.",
            &["stage"],
        )?,
        record_dropped: plain(
            "feeds_record_dropped_total",
            "Sampled calls not recorded, by stage and reason (queue_full, too_large, write_failed).",
            &["stage", "reason"],
        )?,
        client_handled: counter(
            "grpc_client_handled_total",
            "Stage calls made by this process, local or over gRPC, by status code.",
        )?,
        client_seconds: histogram(
            "grpc_client_handling_seconds",
            "Duration of stage calls made by this process, until the answer came back.",
        )?,
        server_handled: counter(
            "grpc_server_handled_total",
            "Stage calls this process received over gRPC, by status code.",
        )?,
        server_seconds: histogram(
            "grpc_server_handling_seconds",
            "Duration of stage calls this process received over gRPC, until it answered.",
        )?,
        registry,
    })
}

static METRICS: LazyLock<Option<Metrics>> = LazyLock::new(|| match build_metrics() {
    Ok(m) => Some(m),
    Err(e) => {
        tracing::error!("metrics unavailable: {e}");
        None
    }
});

/// Every series of this process in the Prometheus text format (0.0.4).
pub fn render() -> String {
    let Some(m) = METRICS.as_ref() else {
        return String::new();
    };
    let mut out = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(e) = encoder.encode(&m.registry.gather(), &mut out) {
        tracing::warn!("metrics encoding failed: {e}");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The Prometheus registry, for adding process-level collectors.
pub fn registry() -> Option<&'static prometheus::Registry> {
    METRICS.as_ref().map(|m| &m.registry)
}

static OTEL: AtomicBool = AtomicBool::new(false);

/// Tells the observe layer an OpenTelemetry layer is installed, so span and
/// trace ids come from it (and are the ones exported).
pub fn set_otel_enabled(enabled: bool) {
    OTEL.store(enabled, Ordering::Relaxed);
}

/// Which end of a call a [`Site`] observes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The caller: every call through a registry slot.
    Client,
    /// The server adapter: a call that arrived over gRPC.
    Server,
}

impl Side {
    fn kind(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }
}

/// One method of one stage as seen from one place (an adapter): its labels,
/// resolved once, and its span name.
#[derive(Clone)]
pub struct Site {
    side: Side,
    binding: &'static str,
    caller: &'static str,
    callee: Stage,
    method: &'static str,
    /// `feeds.v1.Recall/Recall`: the span's `otel.name`.
    name: String,
    /// The route target label.
    target: &'static str,
    /// The OK counter and the histogram per traffic kind, resolved once (the hot path).
    ok: [Option<IntCounter>; 3],
    seconds: [Option<Histogram>; 3],
}

impl Site {
    /// The site for `callee.method` over `binding`. The `caller` label is
    /// the stage that calls `callee` when the call graph has exactly one,
    /// `client` for an entry stage, `any` when several stages call it.
    pub fn new(
        side: Side,
        binding: &'static str,
        callee: Stage,
        method: &'static str,
        target: &'static str,
    ) -> Self {
        let caller = match callee.callers() {
            [] => "client",
            [one] => one.name(),
            _ => "any",
        };
        let family = METRICS.as_ref().map(|m| match side {
            Side::Client => (&m.client_handled, &m.client_seconds),
            Side::Server => (&m.server_handled, &m.server_seconds),
        });
        let labels = |traffic: &'static str| {
            [
                "unary",
                callee.service_name(),
                method,
                binding,
                caller,
                callee.name(),
                target,
                traffic,
            ]
        };
        let ok = TRAFFIC.map(|traffic| {
            family.and_then(|(handled, _)| {
                let mut with_code = labels(traffic).to_vec();
                with_code.push("OK");
                handled.get_metric_with_label_values(&with_code).ok()
            })
        });
        let seconds = TRAFFIC.map(|traffic| {
            family.and_then(|(_, seconds)| {
                seconds.get_metric_with_label_values(&labels(traffic)).ok()
            })
        });
        Self {
            side,
            binding,
            caller,
            callee,
            method,
            name: format!("{}/{method}", callee.service_name()),
            target,
            ok,
            seconds,
        }
    }

    /// Counts and times one call of traffic kind `t` (see [`crate::Cx::traffic`]).
    pub(crate) fn record(&self, code: tonic::Code, started: Instant, t: usize) {
        let t = t.min(TRAFFIC.len() - 1);
        if let Some(h) = &self.seconds[t] {
            h.observe(started.elapsed().as_secs_f64());
        }
        if code == tonic::Code::Ok {
            if let Some(c) = &self.ok[t] {
                c.inc();
            }
            return;
        }
        if let Some(m) = METRICS.as_ref() {
            let handled = match self.side {
                Side::Client => &m.client_handled,
                Side::Server => &m.server_handled,
            };
            if let Ok(c) = handled.get_metric_with_label_values(&[
                "unary",
                self.callee.service_name(),
                self.method,
                self.binding,
                self.caller,
                self.callee.name(),
                self.target,
                TRAFFIC[t],
                code_name(code),
            ]) {
                c.inc();
            }
        }
    }

    /// Opens the call's span, parented on the context's `traceparent`, and
    /// returns the `traceparent` that makes the callee's span its child.
    /// `(None, None)` when nothing records the span: no header is read and no
    /// id is made.
    pub(crate) fn span(&self, cx: &Cx) -> (Option<tracing::Span>, Option<TraceParent>) {
        let span = tracing::debug_span!(
            target: "feeds::rpc",
            "rpc",
            otel.name = %self.name,
            otel.kind = self.side.kind(),
            rpc.system = "grpc",
            rpc.service = self.callee.service_name(),
            rpc.method = self.method,
            binding = self.binding,
            caller = self.caller,
            callee = self.callee.name(),
            request_id = tracing::field::Empty,
            tenant = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        if span.is_disabled() {
            return (None, None);
        }
        if let Some(id) = cx.request_id() {
            span.record("request_id", id);
        }
        if let Some(tenant) = cx.tenant() {
            span.record("tenant", tenant);
        }
        let parent = cx.traceparent();
        let own = if OTEL.load(Ordering::Relaxed) {
            if let Some(p) = parent {
                let remote = SpanContext::new(
                    TraceId::from_bytes(p.trace_id.to_be_bytes()),
                    SpanId::from_bytes(p.parent_id.to_be_bytes()),
                    TraceFlags::new(p.flags),
                    true,
                    TraceState::default(),
                );
                let _ =
                    span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
            }
            let otel = span.context();
            let sc = otel.span().span_context().clone();
            if sc.is_valid() {
                TraceParent {
                    trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
                    parent_id: u64::from_be_bytes(sc.span_id().to_bytes()),
                    flags: sc.trace_flags().to_u8(),
                }
            } else {
                TraceParent::child_of(parent)
            }
        } else {
            TraceParent::child_of(parent)
        };
        span.record(
            "trace_id",
            tracing::field::display(format_args!("{:032x}", own.trace_id)),
        );
        span.record(
            "span_id",
            tracing::field::display(format_args!("{:016x}", own.parent_id)),
        );
        (Some(span), Some(own))
    }
}

/// Counts one call sent to a route's fallback.
pub(crate) fn count_fallback(stage: Stage, from: &str, to: &str) {
    if let Some(m) = METRICS.as_ref()
        && let Ok(c) = m
            .route_fallbacks
            .get_metric_with_label_values(&[stage.name(), from, to])
    {
        c.inc();
    }
}

/// Counts one call to `stage` sent again to another endpoint.
pub(crate) fn count_retry(stage: Stage) {
    if let Some(m) = METRICS.as_ref()
        && let Ok(c) = m.retries.get_metric_with_label_values(&[stage.name()])
    {
        c.inc();
    }
}

/// Counts one shadow comparison (`fields` differed; `None`: the copy failed).
pub(crate) fn count_shadow(stage: &str, target: &str, noise: bool, fields: Option<&[String]>) {
    let Some(m) = METRICS.as_ref() else { return };
    let kind = if noise { "noise" } else { "candidate" };
    let Some(fields) = fields else {
        if let Ok(c) = m
            .shadow_failed
            .get_metric_with_label_values(&[stage, target])
        {
            c.inc();
        }
        return;
    };
    if let Ok(c) = m
        .shadow_compared
        .get_metric_with_label_values(&[stage, target, kind])
    {
        c.inc();
    }
    for f in fields {
        if let Ok(c) = m
            .shadow_diff
            .get_metric_with_label_values(&[stage, target, f, kind])
        {
            c.inc();
        }
    }
}

/// Counts one shadow copy dropped for `reason`.
pub(crate) fn count_shadow_dropped(stage: &str, reason: &str) {
    if let Some(m) = METRICS.as_ref()
        && let Ok(c) = m
            .shadow_dropped
            .get_metric_with_label_values(&[stage, reason])
    {
        c.inc();
    }
}

/// Publishes a rollout's position: its weight, step and state.
pub(crate) fn set_rollout(stage: Stage, weight: f64, step: i64, state: &str) {
    let Some(m) = METRICS.as_ref() else { return };
    if let Ok(g) = m
        .rollout_weight
        .get_metric_with_label_values(&[stage.name()])
    {
        g.set(weight);
    }
    if let Ok(g) = m.rollout_step.get_metric_with_label_values(&[stage.name()]) {
        g.set(step);
    }
    for s in ["running", "paused", "complete", "rolled_back", "aborted"] {
        if let Ok(g) = m
            .rollout_state
            .get_metric_with_label_values(&[stage.name(), s])
        {
            g.set(i64::from(s == state));
        }
    }
}

/// Calls this process made to one target of a stage, as counted so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallStats {
    /// Calls answered.
    pub calls: u64,
    /// Of those, answered with an error.
    pub errors: u64,
    /// Cumulative counts per duration bucket (the histogram's bounds, then +Inf).
    pub buckets: Vec<u64>,
}

impl CallStats {
    /// What has been added since `earlier`.
    pub fn since(&self, earlier: &CallStats) -> CallStats {
        CallStats {
            calls: self.calls.saturating_sub(earlier.calls),
            errors: self.errors.saturating_sub(earlier.errors),
            buckets: self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, b)| b.saturating_sub(earlier.buckets.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    /// Errors over calls.
    pub fn error_rate(&self) -> f64 {
        self.errors as f64 / self.calls.max(1) as f64
    }

    /// The upper bound of the histogram bucket holding the 99th percentile,
    /// in seconds (`f64::INFINITY` past the last bound, 0 with no calls).
    pub fn p99(&self) -> f64 {
        let total = self.buckets.last().copied().unwrap_or(0);
        if total == 0 {
            return 0.0;
        }
        let want = (total as f64 * 0.99).ceil() as u64;
        self.buckets
            .iter()
            .position(|c| *c >= want)
            .map_or(f64::INFINITY, |i| {
                BUCKETS.get(i).copied().unwrap_or(f64::INFINITY)
            })
    }
}

/// The client-side calls this process made to `stage` through `target`, of
/// the given traffic kinds (`live`, `stress`, `shadow`), all methods.
pub fn client_stats(stage: Stage, target: &str, traffic: &[&str]) -> CallStats {
    use prometheus::core::Collector as _;
    let Some(m) = METRICS.as_ref() else {
        return CallStats::default();
    };
    let matches = |metric: &prometheus::proto::Metric| {
        let label = |name: &str| {
            metric
                .get_label()
                .iter()
                .find(|l| l.name() == name)
                .map(|l| l.value())
        };
        let (kind, code) = (label("traffic"), label("grpc_code"));
        // A shadow copy refused by the target's admission was shed first by
        // design (see `overload`): not an error of the target.
        let shed =
            kind == Some("shadow") && code == Some(code_name(tonic::Code::ResourceExhausted));
        label("callee") == Some(stage.name())
            && label("target") == Some(target)
            && kind.is_some_and(|t| traffic.contains(&t))
            && code.is_none_or(|c| c != "OK")
            && !shed
    };
    let mut out = CallStats {
        buckets: vec![0; BUCKETS.len() + 1],
        ..CallStats::default()
    };
    for family in m.client_seconds.collect() {
        for metric in family.get_metric().iter().filter(|x| matches(x)) {
            let h = metric.get_histogram();
            out.calls += h.get_sample_count();
            for (i, b) in h.get_bucket().iter().enumerate() {
                if let Some(slot) = out.buckets.get_mut(i) {
                    *slot += b.cumulative_count();
                }
            }
            if let Some(last) = out.buckets.last_mut() {
                *last += h.get_sample_count();
            }
        }
    }
    for family in m.client_handled.collect() {
        for metric in family.get_metric().iter().filter(|x| matches(x)) {
            out.errors += metric.get_counter().get_value() as u64;
        }
    }
    out
}

/// Counts one call handed to `stage`'s recorder.
pub(crate) fn count_recorded(stage: Stage) {
    if let Some(m) = METRICS.as_ref()
        && let Ok(c) = m.recorded.get_metric_with_label_values(&[stage.name()])
    {
        c.inc();
    }
}

/// Counts one sampled call of `stage` not recorded, for `reason`.
pub(crate) fn count_record_dropped(stage: Stage, reason: &str) {
    if let Some(m) = METRICS.as_ref()
        && let Ok(c) = m
            .record_dropped
            .get_metric_with_label_values(&[stage.name(), reason])
    {
        c.inc();
    }
}

/// Counts one degraded answer served by `stage` to `tenant`.
pub(crate) fn count_degraded(stage: Stage, tenant: &str) {
    if let Some(m) = METRICS.as_ref()
        && let Ok(c) = m
            .degraded
            .get_metric_with_label_values(&[stage.name(), tenant])
    {
        c.inc();
    }
}

/// Counts one page on which `stage` relaxed its diversity caps for `tenant`
/// (the allowed candidates could not fill the page under them).
pub fn count_caps_relaxed(stage: &str, tenant: &str) {
    if let Some(m) = METRICS.as_ref()
        && let Ok(c) = m
            .caps_relaxed
            .get_metric_with_label_values(&[stage, tenant])
    {
        c.inc();
    }
}

/// Counts one route reload by result (`ok` or `error`).
pub fn count_reload(result: &str) {
    if let Some(m) = METRICS.as_ref()
        && let Ok(c) = m.route_reloads.get_metric_with_label_values(&[result])
    {
        c.inc();
    }
}

/// go-grpc-prometheus spelling of a status code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// A parsed `traceparent` (version 00): trace id, parent span id, flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    /// 128-bit trace id, never zero.
    pub trace_id: u128,
    /// 64-bit id of the span that is the parent of the next one, never zero.
    pub parent_id: u64,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// Parses `00-<32 hex>-<16 hex>-<2 hex>`; `None` for anything else, or
    /// for all-zero ids (which the spec calls invalid).
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, n: usize| {
            s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if version != "00"
            || parts.next().is_some()
            || !hex(trace, 32)
            || !hex(parent, 16)
            || !hex(flags, 2)
        {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let parent_id = u64::from_str_radix(parent, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && parent_id != 0).then_some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// A new span in `parent`'s trace, or the root of a new sampled trace.
    pub fn child_of(parent: Option<TraceParent>) -> Self {
        match parent {
            Some(p) => Self {
                parent_id: nonzero_u64(),
                ..p
            },
            None => Self {
                trace_id: (u128::from(nonzero_u64()) << 64) | u128::from(nonzero_u64()),
                parent_id: nonzero_u64(),
                flags: 1,
            },
        }
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

thread_local! {
    /// xorshift64* state, seeded per thread from the OS-keyed hasher.
    static RNG: Cell<u64> = Cell::new({
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x9e37_79b9_7f4a_7c15);
        h.finish() | 1
    });
}

/// A random, nonzero 64-bit number (per-thread xorshift64*).
pub(crate) fn random_u64() -> u64 {
    nonzero_u64()
}

fn nonzero_u64() -> u64 {
    RNG.with(|s| {
        loop {
            let mut x = s.get();
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            s.set(x);
            let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
            if v != 0 {
                return v;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trip_and_rejects() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = TraceParent::parse(s).expect("valid");
        assert_eq!(tp.to_string(), s);
        let child = TraceParent::child_of(Some(tp));
        assert_eq!(child.trace_id, tp.trace_id);
        assert_ne!(child.parent_id, tp.parent_id);
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        let root = TraceParent::child_of(None);
        assert_ne!(root.trace_id, 0);
        assert_eq!(TraceParent::parse(&root.to_string()), Some(root));
    }

    #[test]
    fn a_shed_shadow_copy_is_not_an_error_of_its_target() {
        // Traffic index 2 is `shadow`; the target name is this test's own.
        let site = Site::new(Side::Client, "grpc", Stage::Recall, "Recall", "t-shed");
        let before = client_stats(Stage::Recall, "t-shed", &["live", "shadow"]);
        site.record(tonic::Code::Ok, Instant::now(), 2);
        site.record(tonic::Code::ResourceExhausted, Instant::now(), 2);
        site.record(tonic::Code::Internal, Instant::now(), 2);
        site.record(tonic::Code::ResourceExhausted, Instant::now(), 0);
        let stats = client_stats(Stage::Recall, "t-shed", &["live", "shadow"]).since(&before);
        assert_eq!(stats.calls, 4);
        assert_eq!(
            stats.errors, 2,
            "the live refusal and the shadow's INTERNAL"
        );
    }

    #[test]
    fn sites_count_by_code() {
        let site = Site::new(Side::Client, "local", Stage::Split, "Split", "local");
        site.record(tonic::Code::Ok, Instant::now(), 0);
        site.record(tonic::Code::NotFound, Instant::now(), 1);
        let text = render();
        assert!(text.contains("grpc_client_handled_total{binding=\"local\",callee=\"split\",caller=\"business\",grpc_code=\"OK\",grpc_method=\"Split\",grpc_service=\"feeds.v1.Split\",grpc_type=\"unary\",target=\"local\",traffic=\"live\"}"), "{text}");
        assert!(text.contains("traffic=\"stress\""), "{text}");
        assert!(text.contains("grpc_code=\"NotFound\""), "{text}");
        assert!(
            text.contains("grpc_client_handling_seconds_bucket"),
            "{text}"
        );
    }
}
