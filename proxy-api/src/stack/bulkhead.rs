//! [`Bulkhead`]: a stage's own concurrency limit, in front of the leaf on
//! the local caller side and on the server side. One limiter per stage is
//! shared by both stacks (see [`crate::overload::Bulkheads`]), so the
//! stage's calls in this process are bounded whichever way they arrive; a
//! call past it is answered RESOURCE_EXHAUSTED at once, without queueing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::{Call, call_ref};
use crate::Status;
use crate::overload::{Limiter, Permit};

/// Adds a stage's limit to a stack.
#[derive(Clone, Debug)]
pub struct BulkheadLayer {
    limiter: Option<Arc<Limiter>>,
}

impl BulkheadLayer {
    /// The layer for `limiter`; `None` passes every call.
    pub fn new(limiter: Option<Arc<Limiter>>) -> Self {
        Self { limiter }
    }
}

impl<S> tower::Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;

    fn layer(&self, inner: S) -> Bulkhead<S> {
        Bulkhead {
            limiter: self.limiter.clone(),
            inner,
        }
    }
}

/// See [`BulkheadLayer`].
pub struct Bulkhead<S> {
    /// The stage's limit, if it has one.
    limiter: Option<Arc<Limiter>>,
    /// The rest of the stack.
    inner: S,
}

pin_project! {
    /// A call that was refused, or runs holding its place.
    #[project = BulkheadProj]
    pub enum BulkheadFuture<F> {
        /// Refused at once.
        Refused { status: Option<Box<Status>> },
        /// Running; the place is freed when it finishes or is dropped.
        Running { #[pin] inner: F, permit: Option<Permit> },
    }
}

impl<F, R> Future for BulkheadFuture<F>
where
    F: Future<Output = Result<R, Status>>,
{
    type Output = Result<R, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            BulkheadProj::Refused { status } => Poll::Ready(Err(status.take().map_or_else(
                || Status::internal("bulkhead future polled after completion"),
                |status| *status,
            ))),
            BulkheadProj::Running { inner, permit } => {
                let out = std::task::ready!(inner.poll(cx));
                if let Some(permit) = permit.take() {
                    permit
                        .done(matches!(&out, Err(s) if s.code() == tonic::Code::DeadlineExceeded));
                }
                Poll::Ready(out)
            }
        }
    }
}

impl<'a, S, M, R> tower::Service<Call<'a, M>> for &'a Bulkhead<S>
where
    &'a S: tower::Service<Call<'a, M>, Response = R, Error = Status>,
{
    type Response = R;
    type Error = Status;
    type Future = BulkheadFuture<<&'a S as tower::Service<Call<'a, M>>>::Future>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    #[inline(always)]
    fn call(&mut self, call: Call<'a, M>) -> Self::Future {
        let this: &'a Bulkhead<S> = self;
        let permit = match &this.limiter {
            None => None,
            Some(limiter) => match limiter.try_acquire() {
                Some(permit) => Some(permit),
                None => {
                    return BulkheadFuture::Refused {
                        status: Some(Box::new(limiter.refusal())),
                    };
                }
            },
        };
        BulkheadFuture::Running {
            inner: call_ref::<S, M>(&this.inner, call),
            permit,
        }
    }
}

impl<S> Bulkhead<S> {
    /// Whether the stage has a limit (else the layer passes every call).
    pub fn limited(&self) -> bool {
        self.limiter.is_some()
    }

    /// The rest of the stack.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}
