//! Deadlines. One timer at the process edge ([`ServerDeadline`], or the
//! local leaf when a caller outside any served call brings a deadline)
//! bounds the whole in-process call tree; every hop inside it costs a clock
//! read ([`Deadline`]), so DEADLINE_EXCEEDED names the stage that would have
//! been called too late. The remote leaf turns what is left into `grpc-timeout`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use pin_project_lite::pin_project;

use super::{BoxCall, Call, call_ref};
use crate::{Stage, Status};

/// The status of a call that ran out of time in or before `stage`.
pub(crate) fn exceeded(stage: Stage) -> Status {
    Status::deadline_exceeded(format!("deadline exceeded in stage `{}`", stage.name()))
}

/// Caller side: refuses a call whose deadline has passed before it starts.
#[derive(Clone, Copy, Debug)]
pub struct DeadlineLayer {
    /// The stage called, named in the error.
    stage: Stage,
}

impl DeadlineLayer {
    /// The layer for calls to `stage`.
    pub fn new(stage: Stage) -> Self {
        Self { stage }
    }
}

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            stage: self.stage,
            inner,
        }
    }
}

/// See [`DeadlineLayer`].
pub struct Deadline<S> {
    /// The stage called.
    stage: Stage,
    /// The rest of the stack.
    inner: S,
}

impl<S> Deadline<S> {
    /// The check this layer makes, on its own: `Err` when the deadline of
    /// `cx` has passed (`now`, if the caller already read the clock).
    pub fn check(&self, cx: &crate::Cx, now: Option<Instant>) -> Result<(), Status> {
        match cx.deadline() {
            Some(deadline) if now.unwrap_or_else(Instant::now) >= deadline => {
                Err(exceeded(self.stage))
            }
            _ => Ok(()),
        }
    }

    /// The rest of the stack.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

pin_project! {
    /// A call that either never started (its deadline had passed) or runs.
    #[project = DeadlineProj]
    pub enum DeadlineFuture<F> {
        /// Refused before it started.
        Expired { status: Option<Status> },
        /// Running.
        Running { #[pin] inner: F },
    }
}

impl<F, R> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<R, Status>>,
{
    type Output = Result<R, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            DeadlineProj::Expired { status } => Poll::Ready(Err(status
                .take()
                .unwrap_or_else(|| Status::internal("deadline future polled after completion")))),
            DeadlineProj::Running { inner } => inner.poll(cx),
        }
    }
}

impl<'a, S, M, R> tower::Service<Call<'a, M>> for &'a Deadline<S>
where
    &'a S: tower::Service<Call<'a, M>, Response = R, Error = Status>,
{
    type Response = R;
    type Error = Status;
    type Future = DeadlineFuture<<&'a S as tower::Service<Call<'a, M>>>::Future>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call<'a, M>) -> Self::Future {
        let this: &'a Deadline<S> = self;
        if let Err(status) = this.check(call.cx, call.now) {
            return DeadlineFuture::Expired {
                status: Some(status),
            };
        }
        DeadlineFuture::Running {
            inner: call_ref::<S, M>(&this.inner, call),
        }
    }
}

/// Server side: the one timer of a served call. It bounds everything the
/// call runs in this process; the hops below it only read the clock.
#[derive(Clone, Copy, Debug)]
pub struct ServerDeadlineLayer {
    /// The stage served, named in the error.
    stage: Stage,
}

impl ServerDeadlineLayer {
    /// The layer for calls served by `stage`.
    pub fn new(stage: Stage) -> Self {
        Self { stage }
    }
}

impl<S> tower::Layer<S> for ServerDeadlineLayer {
    type Service = ServerDeadline<S>;

    fn layer(&self, inner: S) -> ServerDeadline<S> {
        ServerDeadline {
            stage: self.stage,
            inner,
        }
    }
}

/// See [`ServerDeadlineLayer`].
pub struct ServerDeadline<S> {
    /// The stage served.
    stage: Stage,
    /// The rest of the stack.
    inner: S,
}

impl<'a, S, M, R> tower::Service<Call<'a, M>> for &'a ServerDeadline<S>
where
    &'a S: tower::Service<Call<'a, M>, Response = R, Error = Status>,
    <&'a S as tower::Service<Call<'a, M>>>::Future: Send + 'a,
    R: Send + 'a,
{
    type Response = R;
    type Error = Status;
    type Future = BoxCall<'a, R>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call<'a, M>) -> Self::Future {
        let this: &'a ServerDeadline<S> = self;
        let deadline = call.cx.deadline();
        let inner = call_ref::<S, M>(&this.inner, call);
        Box::pin(within(deadline, this.stage, inner))
    }
}

/// Runs `call`, answering DEADLINE_EXCEEDED (naming `stage`) if `deadline`
/// passes first. Checked before and after as well as by the timer: a stage
/// whose work never yields (most of them) would otherwise finish late.
pub(crate) async fn within<T>(
    deadline: Option<Instant>,
    stage: Stage,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let Some(deadline) = deadline else {
        return call.await;
    };
    if Instant::now() >= deadline {
        return Err(exceeded(stage));
    }
    let out = tokio::time::timeout_at(deadline.into(), call)
        .await
        .map_err(|_| exceeded(stage))?;
    if Instant::now() > deadline {
        return Err(exceeded(stage));
    }
    out
}
