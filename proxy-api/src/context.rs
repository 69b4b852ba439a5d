//! What travels with a call besides its message: request id, tenant, deadline
//! and every `x-` header (plus W3C trace context).
//!
//! Under the `local` binding the `tonic::Request` is moved to the callee as it
//! is, extensions included; under `grpc` the headers cross the wire and the
//! deadline travels as `grpc-timeout`, which the server adapter turns back into
//! a [`Deadline`] extension. Either way the callee's [`CallContext::of`] reads
//! the same values.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataValue};
use tonic::{Request, Status};

/// Metadata key of the request id.
pub const REQUEST_ID: &str = "x-request-id";
/// Metadata key of the tenant.
pub const TENANT: &str = "x-tenant";
/// Non-`x-` headers that are forwarded too (W3C trace context).
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];
/// The gRPC wire form of a deadline.
const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The absolute deadline of a call, kept as a request extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline(pub Instant);

/// The call's context as the callee sees it, identical under both bindings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallContext {
    /// `x-request-id`, if the caller set one.
    pub request_id: Option<String>,
    /// `x-tenant`, if the caller set one.
    pub tenant: Option<String>,
    /// When the whole call must be done by.
    pub deadline: Option<Instant>,
    /// Every forwarded header (`x-*`, `traceparent`, `tracestate`) by name;
    /// includes the request id and tenant.
    pub headers: BTreeMap<String, String>,
}

fn forwarded(key: &str) -> bool {
    key.starts_with("x-") || TRACE_HEADERS.contains(&key)
}

impl CallContext {
    /// Reads the context of an incoming request.
    pub fn of<T>(request: &Request<T>) -> Self {
        let mut headers = BTreeMap::new();
        for entry in request.metadata().iter() {
            if let KeyAndValueRef::Ascii(key, value) = entry
                && let (true, Ok(value)) = (forwarded(key.as_str()), value.to_str())
            {
                headers.insert(key.as_str().to_owned(), value.to_owned());
            }
        }
        let deadline = deadline_of(request);
        Self {
            request_id: headers.get(REQUEST_ID).cloned(),
            tenant: headers.get(TENANT).cloned(),
            deadline,
            headers,
        }
    }

    /// Time left before the deadline; `None` when there is no deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// A downstream request carrying this context: the same forwarded headers
    /// and the same absolute deadline (so each hop inherits what is left).
    pub fn request<U>(&self, message: U) -> Request<U> {
        let mut request = Request::new(message);
        let metadata = request.metadata_mut();
        for (key, value) in &self.headers {
            if let (Ok(key), Ok(value)) = (
                MetadataKey::from_bytes(key.as_bytes()),
                MetadataValue::try_from(value.as_str()),
            ) {
                metadata.insert(key, value);
            }
        }
        if let Some(deadline) = self.deadline {
            request.extensions_mut().insert(Deadline(deadline));
        }
        request
    }
}

/// The request's deadline: the [`Deadline`] extension, else `grpc-timeout`.
pub fn deadline_of<T>(request: &Request<T>) -> Option<Instant> {
    request
        .extensions()
        .get::<Deadline>()
        .map(|d| d.0)
        .or_else(|| {
            request
                .metadata()
                .get(GRPC_TIMEOUT)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_grpc_timeout)
                .map(|t| Instant::now() + t)
        })
}

/// The [`Deadline`] extension alone: what the `local` binding enforces. Every
/// in-process hop carries it (set by [`CallContext::request`] and by the
/// server adapter), and reading it costs no header lookup on the hot path.
pub fn deadline_ext<T>(request: &Request<T>) -> Option<Instant> {
    request.extensions().get::<Deadline>().map(|d| d.0)
}

/// Runs `call`, answering DEADLINE_EXCEEDED (naming `stage`) if `deadline`
/// passes first. Both bindings enforce deadlines through this.
pub async fn within<T>(
    deadline: Option<Instant>,
    stage: &'static str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let Some(deadline) = deadline else {
        return call.await;
    };
    let exceeded = || Status::deadline_exceeded(format!("deadline exceeded in stage `{stage}`"));
    // Checked before and after as well as by the timer: a stage whose work
    // never yields (most of them) would otherwise finish past its deadline.
    if Instant::now() >= deadline {
        return Err(exceeded());
    }
    let out = tokio::time::timeout_at(deadline.into(), call)
        .await
        .map_err(|_| exceeded())?;
    if Instant::now() > deadline {
        return Err(exceeded());
    }
    out
}

/// How much earlier than the wire deadline a server gives up, so it is this
/// code (DEADLINE_EXCEEDED) and not tonic's own timer (CANCELLED) that answers.
const SERVER_MARGIN: Duration = Duration::from_millis(1);

/// The deadline a server enforces for `request`: the wire deadline less a
/// small margin (see [`SERVER_MARGIN`]).
pub fn server_deadline<T>(request: &Request<T>) -> Option<Instant> {
    deadline_of(request).map(|d| d.checked_sub(SERVER_MARGIN).unwrap_or(d))
}

/// Client side of the `grpc` binding: turns the [`Deadline`] extension into
/// `grpc-timeout`. A deadline already past fails here, before any bytes go out.
pub fn outbound<T>(mut request: Request<T>) -> Result<Request<T>, Status> {
    if let Some(Deadline(deadline)) = request.extensions().get::<Deadline>().copied() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Status::deadline_exceeded(
                "deadline expired before the call was sent",
            ));
        }
        request.set_timeout(left);
    }
    Ok(request)
}

/// Server side of the `grpc` binding: turns `grpc-timeout` (or, when absent,
/// `default`) into a [`Deadline`] extension, so stage code reads the deadline
/// the same way as in-process. A malformed `grpc-timeout` is INVALID_ARGUMENT.
pub fn inbound<T>(
    mut request: Request<T>,
    default: Option<Duration>,
) -> Result<Request<T>, Status> {
    let Some(raw) = request.metadata().get(GRPC_TIMEOUT) else {
        if let Some(default) = default {
            request
                .extensions_mut()
                .insert(Deadline(Instant::now() + default));
        }
        return Ok(request);
    };
    let timeout = raw
        .to_str()
        .ok()
        .and_then(parse_grpc_timeout)
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "grpc-timeout: malformed value {raw:?} (expected 1-8 digits and a unit H, M, S, m, u or n)"
            ))
        })?;
    let deadline = Instant::now() + timeout;
    request.extensions_mut().insert(Deadline(deadline));
    Ok(request)
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
    fn forwarded_request_keeps_context() {
        let mut incoming = Request::new(());
        let md = incoming.metadata_mut();
        md.insert(REQUEST_ID, MetadataValue::from_static("r-1"));
        md.insert(TENANT, MetadataValue::from_static("acme"));
        md.insert("x-colour", MetadataValue::from_static("blue"));
        md.insert("authorization", MetadataValue::from_static("secret"));
        let deadline = Instant::now() + Duration::from_secs(3);
        incoming.extensions_mut().insert(Deadline(deadline));

        let ctx = CallContext::of(&incoming);
        assert_eq!(ctx.request_id.as_deref(), Some("r-1"));
        assert_eq!(ctx.tenant.as_deref(), Some("acme"));
        assert!(!ctx.headers.contains_key("authorization"));
        let next = ctx.request(42u8);
        assert_eq!(CallContext::of(&next), ctx);
    }

    #[test]
    fn malformed_timeout_is_invalid_argument() {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert(GRPC_TIMEOUT, MetadataValue::from_static("soon"));
        let err = inbound(request, None).expect_err("malformed");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("grpc-timeout"));
    }

    #[test]
    fn expired_deadline_is_not_sent() {
        let mut request = Request::new(());
        request
            .extensions_mut()
            .insert(Deadline(Instant::now() - Duration::from_millis(1)));
        let err = outbound(request).expect_err("expired");
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
    }
}
