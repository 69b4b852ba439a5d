//! The end of a remote stack: one call over the balancer, the context sent
//! as metadata and the deadline as `grpc-timeout` (per attempt, what is left).

use std::sync::Arc;
use std::task::{Context, Poll};

use super::{BoxCall, Call, Explain, SendFn, Timings};
use crate::{Balancer, Status};

/// Calls one method of a remote stage.
pub struct RemoteLeaf<M, R> {
    /// Picks the endpoint, retries what never left, maps transport errors.
    balancer: Arc<Balancer>,
    /// tonic's client call for the method.
    send: SendFn<M, R>,
    /// The pool's name, recorded in an explained call's path.
    target: &'static str,
}

impl<M, R> RemoteLeaf<M, R> {
    /// The leaf sending through `balancer` (the pool `target`) with `send`.
    pub fn new(balancer: Arc<Balancer>, send: SendFn<M, R>, target: &'static str) -> Self {
        Self {
            balancer,
            send,
            target,
        }
    }
}

impl<'a, M, R> tower::Service<Call<'a, M>> for &'a RemoteLeaf<M, R>
where
    M: Explain + Clone + Send + 'a,
    R: Timings + Send + 'a,
{
    type Response = R;
    type Error = Status;
    type Future = BoxCall<'a, R>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call<'a, M>) -> BoxCall<'a, R> {
        let leaf: &'a RemoteLeaf<M, R> = self;
        let Call { cx, msg, trace, .. } = call;
        Box::pin(async move {
            let explain = msg.explain();
            let request = tonic::Request::from_parts(cx.outbound(trace), Default::default(), msg);
            // The callee's time is not the caller's own time.
            let timer = cx.timer().filter(|_| explain);
            if let Some(timer) = timer {
                timer.pause();
            }
            let limits = leaf.balancer.limits();
            let out = leaf
                .balancer
                .call(request, cx.deadline(), move |channel, request| {
                    (leaf.send)(channel, request, limits)
                })
                .await;
            if let Some(timer) = timer {
                timer.resume();
            }
            let response = out?;
            if explain {
                if let Some(path) = response
                    .metadata()
                    .get(crate::route::PATH)
                    .and_then(|v| v.to_str().ok())
                {
                    cx.extend_path(path);
                }
                cx.push_path(leaf.balancer.stage(), leaf.target);
            }
            let mut response = response.into_inner();
            // Inside a timed stage, the callee's timings join the request's;
            // called from outside, the response keeps them.
            if timer.is_some()
                && let Some(timings) = response.timings()
            {
                cx.extend_timings(std::mem::take(timings));
            }
            Ok(response)
        })
    }
}
