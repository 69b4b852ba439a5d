//! Request metadata (request id, tenant, deadline, `x-` headers) reaches the
//! callee identically under the `local` and `grpc` bindings, and the chain
//! forwards it hop to hop.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proxy_api::context::{REQUEST_ID, TENANT};
use proxy_api::{Cx, Recall, Registry, Stage, pb};

/// What the callee saw of its context.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CallContext {
    request_id: Option<String>,
    tenant: Option<String>,
    deadline: Option<Instant>,
    headers: BTreeMap<String, String>,
}

impl CallContext {
    fn of(cx: &Cx) -> Self {
        Self {
            request_id: cx.request_id().map(str::to_owned),
            tenant: cx.tenant().map(str::to_owned),
            deadline: cx.deadline(),
            headers: cx
                .headers()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }
}

/// A recall that records the context it was called with.
#[derive(Default)]
struct Capture(Mutex<Vec<CallContext>>);

#[proxy_api::async_trait]
impl Recall for Capture {
    async fn recall(
        &self,
        cx: &Cx,
        _: pb::RecallRequest,
    ) -> Result<pb::RecallResponse, proxy_api::Status> {
        self.0.lock().expect("lock").push(CallContext::of(cx));
        Ok(pb::RecallResponse::default())
    }
}

/// The context a stage forwards: request id, tenant, other `x-` headers,
/// trace context, and a header that must not cross.
fn incoming(deadline: Instant) -> Cx {
    Cx::new()
        .with_header(REQUEST_ID, "req-123")
        .with_header(TENANT, "acme")
        .with_header("x-colour", "blue")
        .with_header("x-shadow", "1")
        .with_header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .with_header("authorization", "not forwarded")
        .with_deadline(deadline)
}

fn message() -> pb::RecallRequest {
    pb::RecallRequest {
        user_id: "7".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn callee_sees_the_same_context_in_both_bindings() {
    let capture = Arc::new(Capture::default());
    let deadline = Instant::now() + Duration::from_secs(20);

    // local
    let mut local = Registry::empty();
    local.provide_recall(capture.clone()).expect("provide");
    local
        .recall()
        .expect("bound")
        .recall(&incoming(deadline), message())
        .await
        .expect("local call");

    // grpc: serve the same implementation, call it through a remote slot.
    let (remote, server) = common::over_grpc(&local, Stage::Recall).await;
    remote
        .recall()
        .expect("bound")
        .recall(&incoming(deadline), message())
        .await
        .expect("grpc call");
    server.abort();

    let seen = capture.0.lock().expect("lock").clone();
    let [via_local, via_grpc] = seen.as_slice() else {
        panic!("expected two calls, got {}", seen.len())
    };
    assert_eq!(via_local.request_id.as_deref(), Some("req-123"));
    assert_eq!(via_local.tenant.as_deref(), Some("acme"));
    assert_eq!(
        via_local.headers.get("x-colour").map(String::as_str),
        Some("blue")
    );
    assert!(via_local.headers.contains_key("traceparent"));
    assert!(!via_local.headers.contains_key("authorization"));
    assert_eq!(via_local.request_id, via_grpc.request_id);
    assert_eq!(via_local.tenant, via_grpc.tenant);
    // No subscriber records spans in this test, so `traceparent` passes
    // through as is (with one, each hop names its own span as the parent:
    // see the traces test).
    assert_eq!(via_local.headers, via_grpc.headers);
    assert_eq!(via_local.deadline, Some(deadline));
    let grpc_deadline = via_grpc.deadline.expect("deadline crossed the wire");
    // The wire carries the time left (to the microsecond), so the callee's
    // deadline differs from the caller's only by the transit time.
    let skew = if grpc_deadline > deadline {
        grpc_deadline - deadline
    } else {
        deadline - grpc_deadline
    };
    assert!(skew < Duration::from_secs(1), "deadline moved by {skew:?}");
}
