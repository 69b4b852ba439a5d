//! [`Cx`], what travels with a call besides its message: request id, tenant,
//! deadline, W3C trace context and every other `x-` header.
//!
//! A context is made once per request at the edge (the server adapter, or a
//! caller that builds one) and shared after that: the headers sit behind an
//! `Arc`, and an in-process hop passes the caller's `&Cx` on as it is. Only a
//! hop that needs something of its own (a child span's `traceparent`, own-time
//! accounting for `explain`, a timer) makes a child, which clones the `Arc`.
//! Under `grpc` the headers cross the wire and the deadline travels as
//! `grpc-timeout`; the server adapter reads them back into a `Cx`, so the
//! callee sees the same values under both bindings.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::observe::TraceParent;
use crate::timing::SelfTimer;
use crate::{Stage, pb};

/// Metadata key of the request id.
pub const REQUEST_ID: &str = "x-request-id";
/// Metadata key of the tenant.
pub const TENANT: &str = "x-tenant";
/// The W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";
/// Non-`x-` headers that are forwarded too (W3C trace context).
const TRACE_HEADERS: [&str; 2] = [TRACEPARENT, "tracestate"];
/// The gRPC wire form of a deadline.
pub(crate) const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The prefix of the project's own headers, trusted only from trusted peers.
pub const PROJECT_PREFIX: &str = "x-tandem-";

/// How much earlier than the wire deadline a server gives up: 1% of the
/// budget, between 1 and 10 ms. So it is this code (DEADLINE_EXCEEDED), not
/// tonic's own timer (CANCELLED), that answers, even on a busy machine where
/// the request waits a while before it is read, and the answer has that
/// long to travel back and reach the client before its own deadline.
fn server_margin(timeout: Duration) -> Duration {
    (timeout / 100).clamp(Duration::from_millis(1), Duration::from_millis(10))
}

/// Whether a header is forwarded hop to hop.
fn forwarded(key: &str) -> bool {
    key.starts_with("x-") || TRACE_HEADERS.contains(&key)
}

/// What every hop of one request shares.
#[derive(Debug, Default)]
struct Shared {
    /// Forwarded headers as they arrived (`x-*`, `traceparent`, `tracestate`).
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Own time of every stage of the request, innermost first, collected
    /// while explaining; the outermost frame moves them into its response.
    timings: Mutex<Vec<pb::StageTiming>>,
    /// Which target served each hop (`recall=canary`), innermost first,
    /// collected while explaining.
    path: Mutex<Vec<String>>,
    /// Whether the request carries the stress tag (read once).
    stress: bool,
    /// Whether it is a shadow copy (`x-tandem-shadow`, read once).
    shadow: bool,
}

impl Shared {
    fn new(headers: Vec<(HeaderName, HeaderValue)>) -> Self {
        let stress = headers.iter().any(|(k, v)| {
            k.as_str() == crate::route::STRESS
                && v.to_str()
                    .is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
        });
        let shadow = headers
            .iter()
            .any(|(k, _)| k.as_str() == crate::route::SHADOW);
        Self {
            headers,
            timings: Mutex::default(),
            path: Mutex::default(),
            stress,
            shadow,
        }
    }
}

/// The context of one call as the callee sees it, identical under both bindings.
#[derive(Debug)]
pub struct Cx {
    /// Headers and explain timings, shared by every hop of the request.
    shared: Arc<Shared>,
    /// When the whole call must be done by.
    deadline: Option<Instant>,
    /// This hop's `traceparent` when it differs from the shared header (a
    /// recorded span made itself the parent of what this hop calls).
    trace: Option<TraceParent>,
    /// Whether a timer higher up already bounds this call tree, so an
    /// in-process hop only needs to read the clock.
    bounded: bool,
    /// Own-time accounting of the stage running with this context, while
    /// explaining.
    timer: Option<SelfTimer>,
}

impl Default for Cx {
    fn default() -> Self {
        Self::new()
    }
}

impl Cx {
    /// An empty context: no headers, no deadline.
    pub fn new() -> Self {
        Self {
            shared: Arc::default(),
            deadline: None,
            trace: None,
            bounded: false,
            timer: None,
        }
    }

    /// Adds or replaces a forwarded header. Names are lower-cased; names
    /// that are not forwarded (`authorization`, ...) and values that are not
    /// valid header values are ignored, as they would be on the wire.
    #[must_use]
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        let name = name.to_ascii_lowercase();
        if !forwarded(&name) {
            return self;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            let shared = shared_mut(&mut self.shared);
            let mut headers = std::mem::take(&mut shared.headers);
            headers.retain(|(k, _)| *k != name);
            headers.push((name, value));
            *shared = Shared::new(headers);
        }
        self
    }

    /// With `x-request-id`.
    #[must_use]
    pub fn with_request_id(self, id: &str) -> Self {
        self.with_header(REQUEST_ID, id)
    }

    /// With `x-tenant`.
    #[must_use]
    pub fn with_tenant(self, tenant: &str) -> Self {
        self.with_header(TENANT, tenant)
    }

    /// With an absolute deadline.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// With a deadline `timeout` from now.
    #[must_use]
    pub fn with_timeout(self, timeout: Duration) -> Self {
        self.with_deadline(Instant::now() + timeout)
    }

    /// Marks the deadline as enforced by a timer the caller runs, as the
    /// server adapter does for every request it serves: in-process hops
    /// below then only check the clock. The caller must enforce it.
    #[must_use]
    pub fn assume_bounded(mut self) -> Self {
        self.bounded = true;
        self
    }

    /// A forwarded header's value, if present and ASCII text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.shared_header(name)
    }

    fn shared_header(&self, name: &str) -> Option<&str> {
        self.shared
            .headers
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .and_then(|(_, v)| v.to_str().ok())
    }

    /// Every forwarded header as (name, value), as it arrived at the edge.
    /// The `traceparent` this hop sends on may differ: see [`Cx::traceparent`].
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.shared
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
    }

    /// `x-request-id`, if the caller set one.
    pub fn request_id(&self) -> Option<&str> {
        self.shared_header(REQUEST_ID)
    }

    /// `x-tenant`, if the caller set one.
    pub fn tenant(&self) -> Option<&str> {
        self.shared_header(TENANT)
    }

    /// When the whole call must be done by.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline; `None` when there is no deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// The trace context this hop passes on: its own span's, when one is
    /// recorded, else the one that arrived.
    pub fn traceparent(&self) -> Option<TraceParent> {
        self.trace
            .or_else(|| self.shared_header(TRACEPARENT).and_then(TraceParent::parse))
    }

    /// Whether a timer higher up bounds this call tree.
    pub(crate) fn bounded(&self) -> bool {
        self.bounded
    }

    /// Whether this context belongs to a stage that accounts its own time.
    pub(crate) fn timer(&self) -> Option<&SelfTimer> {
        self.timer.as_ref()
    }

    /// A child for one hop: same headers and deadline, optionally its own
    /// `traceparent`, own-time accounting and a bounding timer.
    pub(crate) fn child(&self, trace: Option<TraceParent>, timed: bool, bounded: bool) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            deadline: self.deadline,
            trace: trace.or(self.trace),
            bounded: self.bounded || bounded,
            timer: timed.then(SelfTimer::start),
        }
    }

    /// Starts the own-time clock again, on the thread that will run the
    /// stage: a hop moved to the compute pool made its child on the caller's.
    pub(crate) fn restart_timer(&mut self) {
        if self.timer.is_some() {
            self.timer = Some(SelfTimer::start());
        }
    }

    /// Leaves a note for whoever reads this request's `explain` output: it
    /// appears under the running stage's timing. Does nothing (and costs a
    /// branch) when the request is not explaining.
    pub fn note(&self, note: impl FnOnce() -> String) {
        if let Some(timer) = &self.timer {
            timer.note(note());
        }
    }

    /// Appends one stage's own time to the request's explain timings.
    pub(crate) fn push_timing(&self, timing: pb::StageTiming) {
        if let Ok(mut t) = self.shared.timings.lock() {
            t.push(timing);
        }
    }

    /// Appends timings that came back from a remote stage.
    pub(crate) fn extend_timings(&self, timings: Vec<pb::StageTiming>) {
        if let Ok(mut t) = self.shared.timings.lock() {
            t.extend(timings);
        }
    }

    /// Whether the request carries the stress tag (`x-tandem-stress`).
    pub fn is_stress(&self) -> bool {
        self.shared.stress
    }

    /// Whether the request is a shadow copy (`x-tandem-shadow`): its answer
    /// is only compared, never returned, and it is never shadowed again.
    pub fn is_shadow(&self) -> bool {
        self.shared.shadow
    }

    /// The traffic kind metrics label this call with: 0 live, 1 stress,
    /// 2 shadow.
    pub(crate) fn traffic(&self) -> usize {
        match (self.shared.shadow, self.shared.stress) {
            (true, _) => 2,
            (false, true) => 1,
            (false, false) => 0,
        }
    }

    /// A context for a shadow copy of this call, made off the request path:
    /// the same headers plus `x-tandem-shadow`, its own `deadline`, and
    /// nothing that belongs to the original call (its timer, its explain
    /// timings and path).
    pub(crate) fn shadow_copy(&self, deadline: Instant) -> Cx {
        let mut headers = self.shared.headers.clone();
        headers.push((
            HeaderName::from_static(crate::route::SHADOW),
            HeaderValue::from_static("1"),
        ));
        Cx {
            shared: Arc::new(Shared::new(headers)),
            deadline: Some(deadline),
            trace: None,
            bounded: false,
            timer: None,
        }
    }

    /// Records the target that served `stage` (`explain` only).
    pub(crate) fn push_path(&self, stage: Stage, target: &str) {
        if let Ok(mut p) = self.shared.path.lock() {
            p.push(format!("{}={target}", stage.name()));
        }
    }

    /// Adds what a remote stage reported of its own hops.
    pub(crate) fn extend_path(&self, entries: &str) {
        if let Ok(mut p) = self.shared.path.lock() {
            p.extend(
                entries
                    .split(',')
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned),
            );
        }
    }

    /// Takes the path collected so far, comma-separated.
    pub(crate) fn take_path(&self) -> String {
        self.shared
            .path
            .lock()
            .map(|mut p| std::mem::take(&mut *p).join(","))
            .unwrap_or_default()
    }

    /// Takes every timing collected so far.
    pub(crate) fn take_timings(&self) -> Vec<pb::StageTiming> {
        self.shared
            .timings
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
    }

    /// Server side of the `grpc` binding: the context of a request that
    /// arrived with `metadata`. `grpc-timeout` (less [`server_margin`], so
    /// this code answers before tonic's own timer and the client's
    /// deadline) or else `default` becomes the
    /// deadline; a malformed `grpc-timeout` is INVALID_ARGUMENT naming it.
    ///
    /// Unless `trusted`, every `x-tandem-*` header (dye, stress, ...) is
    /// dropped: the entry stage passes false for peers outside the trusted
    /// ranges, so a tag from outside cannot steer traffic.
    pub(crate) fn inbound(
        metadata: &MetadataMap,
        default: Option<Duration>,
        trusted: bool,
    ) -> Result<Self, Status> {
        let now = Instant::now();
        let deadline = match metadata.get(GRPC_TIMEOUT) {
            None => default.map(|d| now + d),
            Some(raw) => {
                let timeout = raw.to_str().ok().and_then(parse_grpc_timeout).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "grpc-timeout: malformed value {raw:?} (expected 1-8 digits and a unit H, M, S, m, u or n)"
                    ))
                })?;
                let d = now + timeout;
                Some(d.checked_sub(server_margin(timeout)).unwrap_or(d))
            }
        };
        let headers = metadata
            .as_ref()
            .iter()
            .filter(|(k, _)| forwarded(k.as_str()))
            .filter(|(k, _)| trusted || !k.as_str().starts_with(PROJECT_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Self {
            shared: Arc::new(Shared::new(headers)),
            deadline,
            trace: None,
            // The server adapter's timer bounds what runs under it.
            bounded: true,
            timer: None,
        })
    }

    /// Client side of the `grpc` binding: the headers this hop sends, with
    /// `trace` (else this hop's own) as `traceparent`. The deadline is not
    /// among them; each attempt sets `grpc-timeout` from what is left when
    /// it is sent.
    pub(crate) fn outbound(&self, trace: Option<TraceParent>) -> MetadataMap {
        let mut map = http::HeaderMap::with_capacity(self.shared.headers.len());
        for (k, v) in &self.shared.headers {
            map.append(k.clone(), v.clone());
        }
        if let Some(trace) = trace.or(self.trace)
            && let Ok(v) = HeaderValue::from_str(&trace.to_string())
        {
            map.insert(HeaderName::from_static(TRACEPARENT), v);
        }
        MetadataMap::from_headers(map)
    }
}

/// `Arc::make_mut` for [`Shared`], which is not `Clone` (its timings are
/// not copied: a context is only edited before its first call).
fn shared_mut(this: &mut Arc<Shared>) -> &mut Shared {
    if Arc::get_mut(this).is_none() {
        *this = Arc::new(Shared::new(this.headers.clone()));
    }
    match Arc::get_mut(this) {
        Some(shared) => shared,
        None => unreachable!("the Arc was just made unique"),
    }
}

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits and a unit.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    #[test]
    fn server_margin_is_a_percent_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(server_margin(ms(2_000)), ms(10));
        assert_eq!(server_margin(ms(500)), ms(5));
        assert_eq!(server_margin(ms(50)), ms(1));
        assert_eq!(server_margin(Duration::from_secs(3_600)), ms(10));
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        assert_eq!(parse_grpc_timeout(""), None);
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("12x"), None);
        assert_eq!(parse_grpc_timeout("-1S"), None);
    }

    #[test]
    fn inbound_keeps_forwarded_headers_only() {
        let mut md = MetadataMap::new();
        md.insert(REQUEST_ID, MetadataValue::from_static("r-1"));
        md.insert(TENANT, MetadataValue::from_static("acme"));
        md.insert("x-colour", MetadataValue::from_static("blue"));
        md.insert("authorization", MetadataValue::from_static("secret"));
        md.insert(GRPC_TIMEOUT, MetadataValue::from_static("3S"));
        let cx = Cx::inbound(&md, None, true).expect("valid");
        assert_eq!(cx.request_id(), Some("r-1"));
        assert_eq!(cx.tenant(), Some("acme"));
        assert_eq!(cx.header("x-colour"), Some("blue"));
        assert_eq!(cx.header("authorization"), None);
        let left = cx.remaining().expect("deadline");
        assert!(left > Duration::from_secs(2) && left <= Duration::from_secs(3));
        let out = cx.outbound(None);
        assert_eq!(
            out.get("x-colour").and_then(|v| v.to_str().ok()),
            Some("blue")
        );
        assert!(out.get("authorization").is_none());
        let back = Cx::inbound(&out, None, true).expect("valid");
        assert_eq!(
            back.headers().collect::<Vec<_>>(),
            cx.headers().collect::<Vec<_>>()
        );
    }

    #[test]
    fn malformed_timeout_is_invalid_argument() {
        let mut md = MetadataMap::new();
        md.insert(GRPC_TIMEOUT, MetadataValue::from_static("soon"));
        let err = Cx::inbound(&md, None, true).expect_err("malformed");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("grpc-timeout"));
    }

    #[test]
    fn builder_ignores_unforwarded_headers() {
        let cx = Cx::new()
            .with_tenant("lite")
            .with_header("Authorization", "x")
            .with_header("X-Colour", "red")
            .with_tenant("acme");
        assert_eq!(cx.tenant(), Some("acme"));
        assert_eq!(cx.header("x-colour"), Some("red"));
        assert_eq!(cx.headers().count(), 2);
        let child = cx.child(None, true, true);
        assert_eq!(child.tenant(), Some("acme"));
        assert!(child.timer().is_some() && child.bounded());
    }
}
