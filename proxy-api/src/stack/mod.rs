//! The runtime every stage call goes through, as tower layers, stacked the
//! same way for both bindings and both sides:
//!
//! ```text
//! caller side:  [route: XRouted picks a target, when the stage has routes]
//!               -> observe -> deadline (clock check)
//!               -> bulkhead -> local leaf (compute pool for compute stages) | remote leaf (balancer)
//! server side:  [admission (adaptive limit), size limits: on the HTTP server]
//!               -> deadline (timer) -> observe -> bulkhead -> local leaf
//! ```
//!
//! The route comes first because each target (`local`, each pool) is its own
//! stack, observed under its own `target` label (see [`crate::route`]).
//!
//! The generated adapters (`XLocal`, `XRemote`, `XServe`, `XRouted`) only
//! build these stacks and call them; stage code sees its messages and a [`Cx`].
//!
//! A stack's services are `&'a Layer<..>`: calling one borrows the stack
//! instead of cloning it per call. An observed local hop allocates one box
//! (the observed future) beyond the one the stage trait returns; an
//! unobserved one hands back the implementation's own future.
//!
//! # Layout
//! - `observe`: [`Observe`], metrics and spans (see [`crate::observe`]).
//! - `deadline`: [`Deadline`] (caller side, a clock read) and
//!   [`ServerDeadline`] (one timer bounding the process's call tree).
//! - `bulkhead`: [`Bulkhead`], the stage's own concurrency limit (see
//!   [`crate::overload`]).
//! - `local`: [`Leaf`], the call into an implementation, with the explain
//!   own-time accounting, on the compute pool for a compute stage.
//! - `remote`: [`RemoteLeaf`], the call over the balancer.
//! - `adapter`: [`LocalCall`], [`RemoteCall`], [`ServeCall`], the stacks the
//!   generated adapters hold.

mod adapter;
mod bulkhead;
mod deadline;
mod local;
mod observe;
mod remote;

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use crate::observe::TraceParent;
use crate::{Cx, Status, pb};

pub use adapter::{LocalCall, RemoteCall, ServeCall};
pub use bulkhead::{Bulkhead, BulkheadLayer};
pub use deadline::{Deadline, DeadlineLayer, ServerDeadline, ServerDeadlineLayer};
pub use local::Leaf;
pub use observe::{Observe, ObserveLayer};
pub use remote::RemoteLeaf;
pub(crate) use remote::unary;

/// The boxed future a stage method returns (async_trait's shape).
pub type BoxCall<'a, R> = Pin<Box<dyn Future<Output = Result<R, Status>> + Send + 'a>>;

/// One method of an implementation `I`, as a plain function (generated).
pub type Method<I, M, R> = for<'a> fn(&'a I, &'a Cx, M) -> BoxCall<'a, R>;

/// What the runtime knows of one stage method beyond its types (generated,
/// one constant per method): for shadow comparisons and recordings.
#[derive(Debug)]
pub struct MethodInfo {
    /// The stage.
    pub stage: crate::Stage,
    /// The gRPC path, `/feeds.v1.Recall/Recall`.
    pub path: &'static str,
    /// The request message's full name, `feeds.v1.RecallRequest`.
    pub request: &'static str,
    /// The response message's full name, `feeds.v1.RecallResponse`.
    pub response: &'static str,
}

/// One call as it moves down a stack.
#[derive(Debug)]
pub struct Call<'a, M> {
    /// The caller's context.
    pub cx: &'a Cx,
    /// The request message.
    pub msg: M,
    /// The `traceparent` the callee must see, when a recorded span made
    /// itself the parent.
    trace: Option<TraceParent>,
    /// A clock reading already taken for this call (by [`Observe`]), so the
    /// deadline check needs none of its own.
    now: Option<Instant>,
}

impl<'a, M> Call<'a, M> {
    /// A call of `msg` in `cx`.
    #[inline(always)]
    pub fn new(cx: &'a Cx, msg: M) -> Self {
        Self {
            cx,
            msg,
            trace: None,
            now: None,
        }
    }
}

/// A request message that may ask every stage to report its own time
/// (generated for every request type: its `explain` field, or false).
pub trait Explain {
    /// Whether the caller asked for `timings`.
    fn explain(&self) -> bool;
}

/// A request message whose pass-through fields (see [`crate::PassThrough`])
/// a server can decode on arrival instead of carrying them (generated for
/// every request type).
pub trait Carried {
    /// Decodes every pass-through field now and drops its received bytes;
    /// broken bytes are INVALID_ARGUMENT naming the field.
    fn materialize(&mut self) -> Result<(), Status>;
}

/// A response message that carries stage timings (generated for every
/// response type: its `timings` field, or none).
pub trait Timings {
    /// The response's timings, if it has any.
    fn timings(&mut self) -> Option<&mut Vec<pb::StageTiming>>;
}

/// A response message that may say it is a degraded answer (generated for
/// every response type: its `degraded` field, or false). Server adapters
/// count them in `feeds_degraded_responses_total{stage,tenant}`.
pub trait Degraded {
    /// Whether this answer stands in for a failure below.
    fn degraded(&self) -> bool;
}

/// How the caller-side stacks of one registry behave.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// Count, time and trace calls through `local` bindings too; `grpc`
    /// calls are observed either way.
    pub observe_local_calls: bool,
    /// Where routed calls with a shadow send their copies (one runtime per
    /// process: its bounds hold for all stages together).
    pub shadows: std::sync::Arc<crate::shadow::Shadows>,
    /// The recorders of the stages this process hosts (`[record.<stage>]`).
    pub recorders: std::sync::Arc<crate::record::Recorders>,
    /// Each stage's limit and compute pool, shared with the server side
    /// ([`crate::ServeOptions::bulkheads`]); the default has none.
    pub bulkheads: crate::overload::Bulkheads,
    /// The mutual TLS every remote binding of the process uses (attached to
    /// each remote config it binds, see [`crate::RemoteConfig::tls`]).
    pub tls: Option<crate::tls::ClientTls>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            observe_local_calls: true,
            shadows: std::sync::Arc::default(),
            recorders: std::sync::Arc::default(),
            bulkheads: crate::overload::Bulkheads::default(),
            tls: None,
        }
    }
}

/// Calls a stack service by shared reference.
#[inline(always)]
fn call_ref<'a, S, M>(
    service: &'a S,
    call: Call<'a, M>,
) -> <&'a S as tower::Service<Call<'a, M>>>::Future
where
    &'a S: tower::Service<Call<'a, M>>,
{
    let mut service = service;
    tower::Service::call(&mut service, call)
}
