//! Request metadata (request id, tenant, deadline, `x-` headers) reaches the
//! callee identically under the `local` and `grpc` bindings, and the chain
//! forwards it hop to hop.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proxy_api::context::{Deadline, REQUEST_ID, TENANT};
use proxy_api::{CallContext, Recall, Registry, Stage, pb};
use tonic::metadata::MetadataValue;

/// A recall that records the context it was called with.
#[derive(Default)]
struct Capture(Mutex<Vec<CallContext>>);

#[proxy_api::async_trait]
impl Recall for Capture {
    async fn recall(
        &self,
        request: tonic::Request<pb::RecallRequest>,
    ) -> Result<tonic::Response<pb::RecallResponse>, tonic::Status> {
        self.0.lock().expect("lock").push(CallContext::of(&request));
        Ok(tonic::Response::new(pb::RecallResponse::default()))
    }
}

fn incoming(deadline: Instant) -> tonic::Request<pb::RecallRequest> {
    let mut request = tonic::Request::new(pb::RecallRequest {
        user_id: "7".into(),
        ..Default::default()
    });
    let md = request.metadata_mut();
    md.insert(REQUEST_ID, MetadataValue::from_static("req-123"));
    md.insert(TENANT, MetadataValue::from_static("acme"));
    md.insert("x-colour", MetadataValue::from_static("blue"));
    md.insert("x-shadow", MetadataValue::from_static("1"));
    md.insert(
        "traceparent",
        MetadataValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    md.insert("authorization", MetadataValue::from_static("not forwarded"));
    // As a stage forwards it: through CallContext::request.
    CallContext::of(&request)
        .request(request.into_inner())
        .tap_deadline(deadline)
}

trait TapDeadline {
    fn tap_deadline(self, deadline: Instant) -> Self;
}

impl<T> TapDeadline for tonic::Request<T> {
    fn tap_deadline(mut self, deadline: Instant) -> Self {
        self.extensions_mut().insert(Deadline(deadline));
        self
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
        .recall(incoming(deadline))
        .await
        .expect("local call");

    // grpc: serve the same implementation, call it through a remote slot.
    let (remote, server) = common::over_grpc(&local, Stage::Recall).await;
    remote
        .recall()
        .expect("bound")
        .recall(incoming(deadline))
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
