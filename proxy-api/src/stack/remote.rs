//! The end of a remote stack: one call over the balancer, the context sent
//! as metadata and the deadline as `grpc-timeout` (per attempt, what is left).
//!
//! The call is made with tonic's generic unary client over the endpoint's
//! channel and the method's path: no generated client is built per call,
//! and the message is never cloned (see [`crate::codec::Payload`]).

use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::{BoxCall, Call, Explain, Timings};
use crate::codec::{Payload, PayloadCodec};
use crate::{Balancer, Limits, Status};

/// Calls one method of a remote stage.
pub struct RemoteLeaf<M, R> {
    /// Picks the endpoint, retries what never left, maps transport errors.
    balancer: Arc<Balancer>,
    /// The method's gRPC path, `/feeds.v1.Recall/Recall`.
    path: &'static str,
    /// The pool's name, recorded in an explained call's path.
    target: &'static str,
    /// The messages it sends and receives.
    types: PhantomData<fn(M) -> R>,
}

impl<M, R> RemoteLeaf<M, R> {
    /// The leaf sending `path` calls through `balancer` (the pool `target`).
    pub fn new(balancer: Arc<Balancer>, path: &'static str, target: &'static str) -> Self {
        Self {
            balancer,
            path,
            target,
            types: PhantomData,
        }
    }
}

/// One attempt: `request` to the method at `path` over `channel`.
pub(crate) async fn unary<M, R>(
    channel: tonic::transport::Channel,
    request: tonic::Request<Payload<M>>,
    path: &'static str,
    limits: Limits,
) -> Result<tonic::Response<R>, Status>
where
    M: prost::Message + Send + 'static,
    R: prost::Message + Default + Send + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(limits.max_recv_bytes)
        .max_encoding_message_size(limits.max_send_bytes);
    grpc.ready()
        .await
        .map_err(|e| Status::from_error(e.into()))?;
    grpc.unary(
        request,
        http::uri::PathAndQuery::from_static(path),
        PayloadCodec::<M, R>::default(),
    )
    .await
}

impl<'a, M, R> tower::Service<Call<'a, M>> for &'a RemoteLeaf<M, R>
where
    M: Explain + prost::Message + Send + 'static,
    R: Timings + prost::Message + Default + Send + 'static,
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
            // The callee's time is not the caller's own time.
            let timer = cx.timer().filter(|_| explain);
            if let Some(timer) = timer {
                timer.pause();
            }
            let out = leaf
                .balancer
                .call(|| cx.outbound(trace), msg, cx.deadline(), leaf.path)
                .await;
            if let Some(timer) = timer {
                timer.resume();
            }
            let response: tonic::Response<R> = out?;
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
            let mut response: R = response.into_inner();
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
