//! The end of a remote stack: one call over the balancer, the context sent
//! as metadata and the deadline as `grpc-timeout` (per attempt, what is left).
//!
//! The call is made with tonic's generic unary client over the endpoint's
//! channel and the method's path: no generated client is built per call,
//! and the message is never cloned (see [`crate::codec::Payload`]).

use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::BodyExt;

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
    let mut grpc = tonic::client::Grpc::new(OneFrame(Some(channel)))
        .max_decoding_message_size(limits.max_recv_bytes)
        .max_encoding_message_size(limits.max_send_bytes);
    grpc.ready().await.map_err(Status::from_error)?;
    grpc.unary(
        request,
        http::uri::PathAndQuery::from_static(path),
        PayloadCodec::<M, R>::default(),
    )
    .await
}

/// The endpoint's channel, sending each request body as one chunk that ends
/// the stream.
///
/// tonic's request body learns that it has ended only when polled once more
/// after its message, so HTTP/2 sends the message, then an empty DATA frame
/// that ends the stream, and h2 writes each in a syscall of its own (a DATA
/// frame over 256 bytes is written from its own buffer and flushed before the
/// next). Gathering the body first (it is ready at once: the message is
/// encoded as it is polled) lets the message's own frame end the stream.
///
/// One `OneFrame` carries one call: its channel (a clone made for the call)
/// goes into that call's future, so no second clone is made to take its
/// place.
pub(crate) struct OneFrame(Option<tonic::transport::Channel>);

/// The error of a `OneFrame` asked for a second call.
fn spent() -> tower::BoxError {
    Status::internal("remote call: channel already used by this call").into()
}

impl tower::Service<http::Request<tonic::body::Body>> for OneFrame {
    type Response = http::Response<tonic::body::Body>;
    type Error = tower::BoxError;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match &mut self.0 {
            Some(channel) => tower::Service::poll_ready(channel, cx).map_err(Into::into),
            None => Poll::Ready(Err(spent())),
        }
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        // The channel that was polled ready sends.
        let channel = self.0.take();
        Box::pin(async move {
            let mut channel = channel.ok_or_else(spent)?;
            let (parts, mut body) = request.into_parts();
            let mut data: Option<bytes::Bytes> = None;
            while let Some(frame) = body.frame().await {
                // An encode error (a message over the send limit) is the
                // call's status, as tonic's own body would make it.
                let Ok(chunk) = frame?.into_data() else {
                    continue;
                };
                data = Some(match data.take() {
                    None => chunk,
                    Some(head) => {
                        let mut joined = bytes::BytesMut::with_capacity(head.len() + chunk.len());
                        joined.extend_from_slice(&head);
                        joined.extend_from_slice(&chunk);
                        joined.freeze()
                    }
                });
            }
            // One chunk, ended as soon as it is taken, with an exact size.
            let body = tonic::body::Body::new(http_body_util::Full::new(data.unwrap_or_default()));
            tower::Service::call(&mut channel, http::Request::from_parts(parts, body))
                .await
                .map_err(Into::into)
        })
    }
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
