//! The end of a local stack: the call into the implementation. It passes the
//! caller's context on as it is unless this hop needs a child: a recorded
//! span's `traceparent`, own-time accounting for `explain`, or a timer when
//! no timer above bounds the call tree.

use std::sync::Arc;
use std::task::{Context, Poll};

use super::deadline::within;
use super::{BoxCall, Call, Explain, Method, Timings};
use crate::{Stage, Status, pb};

/// Calls one method of an implementation `I`.
pub struct Leaf<I: ?Sized, M, R> {
    /// The implementation.
    imp: Arc<I>,
    /// Which of its methods.
    method: Method<I, M, R>,
    /// Its stage, for timings and errors.
    stage: Stage,
    /// Whether an explained call records `stage=local` in the path (caller
    /// side; a served call is recorded by its caller).
    record_path: bool,
}

impl<I: ?Sized, M, R> Leaf<I, M, R> {
    /// The leaf calling `imp`'s `method`.
    pub fn new(imp: Arc<I>, method: Method<I, M, R>, stage: Stage, record_path: bool) -> Self {
        Self {
            imp,
            method,
            stage,
            record_path,
        }
    }
}

impl<'a, I, M, R> tower::Service<Call<'a, M>> for &'a Leaf<I, M, R>
where
    I: ?Sized + Send + Sync + 'a,
    M: Explain + Send + 'a,
    R: Timings + Send + 'a,
{
    type Response = R;
    type Error = Status;
    type Future = BoxCall<'a, R>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call<'a, M>) -> BoxCall<'a, R> {
        let leaf: &'a Leaf<I, M, R> = self;
        let Call { cx, msg, trace, .. } = call;
        let explain = msg.explain();
        let unbounded = !cx.bounded() && cx.deadline().is_some();
        if !explain && !unbounded && trace.is_none() {
            // The serving path: the implementation's own future, nothing added.
            return (leaf.method)(&leaf.imp, cx, msg);
        }
        Box::pin(async move {
            let child = cx.child(trace, explain, unbounded);
            if let Some(timer) = cx.timer() {
                timer.pause();
            }
            let run = (leaf.method)(&leaf.imp, &child, msg);
            let out = match unbounded {
                true => within(cx.deadline(), leaf.stage, run).await,
                false => run.await,
            };
            if let Some(timer) = cx.timer() {
                timer.resume();
            }
            let mut out = out?;
            if explain && leaf.record_path {
                cx.push_path(leaf.stage, crate::route::LOCAL);
            }
            if let Some(timer) = child.timer() {
                cx.push_timing(pb::StageTiming {
                    stage: leaf.stage.name().to_owned(),
                    self_us: u64::try_from(timer.own().as_micros()).unwrap_or(u64::MAX),
                    notes: timer.take_notes(),
                });
                // The outermost stage of the request answers with them all.
                if cx.timer().is_none()
                    && let Some(timings) = out.timings()
                {
                    *timings = cx.take_timings();
                }
            }
            Ok(out)
        })
    }
}
