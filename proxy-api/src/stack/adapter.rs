//! The three stacks the generated adapters hold, one per method.

use std::sync::Arc;
use std::time::Duration;

use tower::ServiceBuilder;

use super::{
    BoxCall, Bulkhead, BulkheadLayer, Call, DeadlineLayer, Explain, Leaf, Method, MethodInfo,
    Observe, ObserveLayer, RemoteLeaf, RuntimeOptions, ServerDeadline, ServerDeadlineLayer,
    Timings, call_ref,
};
use crate::observe::{Side, Site};
use crate::{Balancer, Cx, ServeOptions, Stage, Status};

/// Caller side, `local` binding: observe -> deadline -> the stage's
/// bulkhead -> the implementation (on the compute pool for a compute stage).
pub struct LocalCall<I: ?Sized, M, R> {
    /// The stack.
    stack: Observe<super::Deadline<Bulkhead<Leaf<I, M, R>>>>,
    /// The method, named in recordings.
    info: &'static MethodInfo,
    /// The stage's recorder, when `[record.<stage>]` is set.
    record: Option<Arc<crate::record::Recorder>>,
}

impl<I, M, R> LocalCall<I, M, R>
where
    I: ?Sized + Send + Sync + 'static,
    M: Explain + prost::Message + Send + 'static,
    R: Timings + prost::Message + Send + 'static,
{
    /// The stack calling `imp`'s `method` (`name` in metrics and spans).
    pub fn new(
        imp: Arc<I>,
        stage: Stage,
        name: &'static str,
        info: &'static MethodInfo,
        method: Method<I, M, R>,
        options: &RuntimeOptions,
    ) -> Self {
        let site = options
            .observe_local_calls
            .then(|| Site::new(Side::Client, "local", stage, name, crate::route::LOCAL));
        let bulkhead = options.bulkheads.stage(stage);
        Self {
            stack: ServiceBuilder::new()
                .layer(ObserveLayer::new(site))
                .layer(DeadlineLayer::new(stage))
                .layer(BulkheadLayer::new(bulkhead.limiter))
                .service(Leaf::new(imp, method, stage, true).on_pool(bulkhead.pool)),
            info,
            record: options.recorders.get(stage),
        }
    }

    /// One call in `cx` (recorded when the stage's recorder samples it).
    #[inline(always)]
    pub fn call<'a>(&'a self, cx: &'a Cx, msg: M) -> BoxCall<'a, R> {
        if let Some(pending) = self
            .record
            .as_ref()
            .and_then(|r| r.begin(self.info, "local", cx, &msg))
        {
            let call = self.call_unrecorded(cx, msg);
            return Box::pin(async move {
                let out = call.await;
                pending.finish(&out);
                out
            });
        }
        self.call_unrecorded(cx, msg)
    }

    #[inline(always)]
    fn call_unrecorded<'a>(&'a self, cx: &'a Cx, msg: M) -> BoxCall<'a, R> {
        if self.stack.enabled() {
            return Box::pin(call_ref::<
                Observe<super::Deadline<Bulkhead<Leaf<I, M, R>>>>,
                M,
            >(&self.stack, Call::new(cx, msg)));
        }
        // Unobserved and unlimited, nothing runs after the call: the deadline
        // layer's check is made here and the leaf's own future handed back,
        // unwrapped.
        let deadline = self.stack.inner();
        let bulkhead = deadline.inner();
        match deadline.check(cx, None) {
            Ok(()) if bulkhead.limited() => Box::pin(call_ref::<Bulkhead<Leaf<I, M, R>>, M>(
                bulkhead,
                Call::new(cx, msg),
            )),
            Ok(()) => call_ref::<Leaf<I, M, R>, M>(bulkhead.inner(), Call::new(cx, msg)),
            Err(status) => Box::pin(std::future::ready(Err(status))),
        }
    }
}

/// Caller side, `grpc` binding: observe -> deadline -> the balancer.
pub struct RemoteCall<M, R> {
    /// The stack.
    stack: Observe<super::Deadline<RemoteLeaf<M, R>>>,
}

impl<M, R> RemoteCall<M, R>
where
    M: Explain + prost::Message + Send + 'static,
    R: Timings + prost::Message + Default + Send + 'static,
{
    /// The stack sending `name` calls (gRPC path `path`) through
    /// `balancer`, the pool `target`.
    pub fn new(
        balancer: Arc<Balancer>,
        stage: Stage,
        name: &'static str,
        path: &'static str,
        target: &str,
        _options: &RuntimeOptions,
    ) -> Self {
        let target = crate::route::intern(target);
        let site = Site::new(Side::Client, "grpc", stage, name, target);
        Self {
            stack: ServiceBuilder::new()
                .layer(ObserveLayer::new(Some(site)))
                .layer(DeadlineLayer::new(stage))
                .service(RemoteLeaf::new(balancer, path, target)),
        }
    }

    /// One call in `cx`.
    pub fn call<'a>(&'a self, cx: &'a Cx, msg: M) -> BoxCall<'a, R> {
        Box::pin(call_ref::<Observe<super::Deadline<RemoteLeaf<M, R>>>, M>(
            &self.stack,
            Call::new(cx, msg),
        ))
    }
}

/// The server-side stack of one method.
type ServeStack<I, M, R> = ServerDeadline<Observe<Bulkhead<Leaf<I, M, R>>>>;

/// Server side: deadline (the one timer) -> observe -> the stage's bulkhead
/// -> the implementation (on the compute pool for a compute stage).
/// Admission and size limits sit before it, on the HTTP server.
pub struct ServeCall<I: ?Sized, M, R> {
    /// The stack.
    stack: ServeStack<I, M, R>,
    /// The deadline of a request that arrives without `grpc-timeout`.
    default_deadline: Option<Duration>,
    /// The stage served.
    stage: Stage,
    /// Whether it is the entry stage: `x-tandem-*` headers from untrusted
    /// peers are dropped there.
    entry: bool,
    /// Peers whose `x-tandem-*` headers the entry stage keeps.
    trusted: Arc<[crate::route::Cidr]>,
    /// Carry pass-through fields as received (else decode them on arrival).
    pass_through: bool,
    /// The method, named in recordings.
    info: &'static MethodInfo,
    /// The stage's recorder, when `[record.<stage>]` is set.
    record: Option<Arc<crate::record::Recorder>>,
}

impl<I, M, R> ServeCall<I, M, R>
where
    I: ?Sized + Send + Sync + 'static,
    M: Explain + super::Carried + prost::Message + Send + 'static,
    R: Timings + super::Degraded + prost::Message + Send + 'static,
{
    /// The stack serving `imp`'s `method` (`name` in metrics and spans).
    pub fn new(
        imp: Arc<I>,
        stage: Stage,
        name: &'static str,
        info: &'static MethodInfo,
        method: Method<I, M, R>,
        options: &ServeOptions,
    ) -> Self {
        let site = Site::new(Side::Server, "grpc", stage, name, "");
        let bulkhead = options.bulkheads.stage(stage);
        Self {
            stack: ServiceBuilder::new()
                .layer(ServerDeadlineLayer::new(stage))
                .layer(ObserveLayer::new(Some(site)))
                .layer(BulkheadLayer::new(bulkhead.limiter))
                .service(Leaf::new(imp, method, stage, false).on_pool(bulkhead.pool)),
            default_deadline: options.default_deadline,
            stage,
            entry: stage.callers().is_empty(),
            trusted: Arc::clone(&options.trusted_peers),
            pass_through: options.pass_through,
            info,
            record: options.recorders.get(stage),
        }
    }

    /// Serves one request that arrived over gRPC.
    pub async fn serve(&self, request: tonic::Request<M>) -> Result<tonic::Response<R>, Status> {
        let trusted = !self.entry
            || request
                .remote_addr()
                .is_some_and(|peer| self.trusted.iter().any(|c| c.contains(peer.ip())));
        let (metadata, _, mut msg) = request.into_parts();
        if !self.pass_through {
            msg.materialize()?;
        }
        let explain = msg.explain();
        let cx = Cx::inbound(&metadata, self.default_deadline, trusted)?;
        let pending = self
            .record
            .as_ref()
            .and_then(|r| r.begin(self.info, "grpc", &cx, &msg));
        let mut stack: &ServeStack<I, M, R> = &self.stack;
        let call: BoxCall<'_, R> = tower::Service::call(&mut stack, Call::new(&cx, msg));
        let out = call.await;
        if let Some(pending) = pending {
            pending.finish(&out);
        }
        let out = out?;
        if out.degraded() {
            crate::observe::count_degraded(self.stage, cx.tenant().unwrap_or(""));
        }
        let mut response = tonic::Response::new(out);
        if explain
            && let Ok(path) = tonic::metadata::MetadataValue::try_from(cx.take_path())
            && !path.is_empty()
        {
            response.metadata_mut().insert(crate::route::PATH, path);
        }
        Ok(response)
    }
}
