//! The end of a local stack: the call into the implementation. It passes the
//! caller's context on as it is unless this hop needs a child: a recorded
//! span's `traceparent`, own-time accounting for `explain`, or a timer when
//! no timer above bounds the call tree. A compute stage's leaf runs the
//! call on the compute pool (see [`crate::overload::ComputePool`]) instead,
//! unless its caller already runs there.

use std::sync::Arc;
use std::task::{Context, Poll};

use super::deadline::within;
use super::{BoxCall, Call, Explain, Method, Timings};
use crate::overload::ComputePool;
use crate::{Cx, Stage, Status, pb};

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
    /// The compute pool the call runs on, for a CPU-heavy stage.
    pool: Option<ComputePool>,
}

impl<I: ?Sized, M, R> Leaf<I, M, R> {
    /// The leaf calling `imp`'s `method`.
    pub fn new(imp: Arc<I>, method: Method<I, M, R>, stage: Stage, record_path: bool) -> Self {
        Self {
            imp,
            method,
            stage,
            record_path,
            pool: None,
        }
    }

    /// The same leaf, running its calls on `pool` when there is one.
    #[must_use]
    pub fn on_pool(mut self, pool: Option<ComputePool>) -> Self {
        self.pool = pool;
        self
    }
}

impl<'a, I, M, R> tower::Service<Call<'a, M>> for &'a Leaf<I, M, R>
where
    I: ?Sized + Send + Sync + 'static,
    M: Explain + Send + 'static,
    R: Timings + Send + 'static,
{
    type Response = R;
    type Error = Status;
    type Future = BoxCall<'a, R>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    #[inline(always)]
    fn call(&mut self, call: Call<'a, M>) -> BoxCall<'a, R> {
        let leaf: &'a Leaf<I, M, R> = self;
        let Call { cx, msg, trace, .. } = call;
        let explain = msg.explain();
        let unbounded = !cx.bounded() && cx.deadline().is_some();
        if let Some(pool) = &leaf.pool {
            return Box::pin(leaf.on(pool, cx, msg, trace, explain, unbounded));
        }
        if !explain && !unbounded && trace.is_none() {
            // The serving path: the implementation's own future, nothing added.
            return (leaf.method)(&leaf.imp, cx, msg);
        }
        Box::pin(leaf.here(cx, msg, trace, explain, unbounded))
    }
}

impl<I, M, R> Leaf<I, M, R>
where
    I: ?Sized + Send + Sync + 'static,
    M: Explain + Send + 'static,
    R: Timings + Send + 'static,
{
    /// The call on the caller's thread, in a child context.
    async fn here(
        &self,
        cx: &Cx,
        msg: M,
        trace: Option<crate::observe::TraceParent>,
        explain: bool,
        unbounded: bool,
    ) -> Result<R, Status> {
        if !explain && !unbounded && trace.is_none() {
            return (self.method)(&self.imp, cx, msg).await;
        }
        let child = cx.child(trace, explain, unbounded);
        let out = self
            .away(cx, unbounded, || (self.method)(&self.imp, &child, msg))
            .await;
        self.finish(cx, &child, out?, explain)
    }

    /// Starts `run` with the caller's own-time clock paused until it ends,
    /// bounded by the deadline when no timer above bounds the call tree.
    async fn away<T, F>(
        &self,
        cx: &Cx,
        unbounded: bool,
        run: impl FnOnce() -> F,
    ) -> Result<T, Status>
    where
        F: std::future::Future<Output = Result<T, Status>>,
    {
        if let Some(timer) = cx.timer() {
            timer.pause();
        }
        let run = run();
        let out = match unbounded {
            true => within(cx.deadline(), self.stage, run).await,
            false => run.await,
        };
        if let Some(timer) = cx.timer() {
            timer.resume();
        }
        out
    }

    /// The call on the compute pool: the child context and the
    /// implementation move onto it (its future must own what it borrows),
    /// and come back with the answer. Asked for on one of the pool's own
    /// workers (fine-rank calling recall), it runs there instead: it is
    /// already off the async workers, and the stage's limit still holds.
    async fn on(
        &self,
        pool: &ComputePool,
        cx: &Cx,
        msg: M,
        trace: Option<crate::observe::TraceParent>,
        explain: bool,
        unbounded: bool,
    ) -> Result<R, Status> {
        if pool.is_current() {
            return self.here(cx, msg, trace, explain, unbounded).await;
        }
        let mut child = cx.child(trace, explain, unbounded);
        let (imp, method) = (Arc::clone(&self.imp), self.method);
        let run = || {
            pool.spawn(self.stage, async move {
                // Own time is thread CPU time: start the clock where the stage runs.
                child.restart_timer();
                let out = method(&imp, &child, msg).await;
                // ... and stop it there: the answer is read on the caller's thread.
                if let Some(timer) = child.timer() {
                    timer.stop();
                }
                (out, child)
            })
        };
        let (out, child) = self.away(cx, unbounded, run).await?;
        self.finish(cx, &child, out?, explain)
    }

    /// What a finished call adds to an explained request: its path entry
    /// and its own time, and (outermost) every timing into the response.
    fn finish(&self, cx: &Cx, child: &Cx, mut out: R, explain: bool) -> Result<R, Status> {
        if explain && self.record_path {
            cx.push_path(self.stage, crate::route::LOCAL);
        }
        if let Some(timer) = child.timer() {
            cx.push_timing(pb::StageTiming {
                stage: self.stage.name().to_owned(),
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
    }
}
