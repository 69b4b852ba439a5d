//! The observe layer: one [`Site`] per method and binding; the series, the
//! span and the trace context (see [`crate::observe`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use pin_project_lite::pin_project;

use super::{Call, call_ref};
use crate::Status;
use crate::observe::Site;

/// Observes every call of the service below it; `None` passes calls through.
#[derive(Clone)]
pub struct ObserveLayer {
    /// Where the call is counted and timed.
    site: Option<Site>,
}

impl ObserveLayer {
    /// A layer recording into `site`, or passing through when `None`.
    pub fn new(site: Option<Site>) -> Self {
        Self { site }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            site: self.site.clone(),
            inner,
        }
    }
}

/// See [`ObserveLayer`].
pub struct Observe<S> {
    /// Where the call is counted and timed.
    site: Option<Site>,
    /// The rest of the stack.
    inner: S,
}

impl<S> Observe<S> {
    /// Whether calls are observed at all.
    pub fn enabled(&self) -> bool {
        self.site.is_some()
    }

    /// The rest of the stack.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<'a, S, M, R> tower::Service<Call<'a, M>> for &'a Observe<S>
where
    &'a S: tower::Service<Call<'a, M>, Response = R, Error = Status>,
{
    type Response = R;
    type Error = Status;
    type Future = ObserveFuture<'a, <&'a S as tower::Service<Call<'a, M>>>::Future>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    #[inline(always)]
    fn call(&mut self, mut call: Call<'a, M>) -> Self::Future {
        let this: &'a Observe<S> = self;
        let Some(site) = &this.site else {
            return ObserveFuture {
                inner: call_ref::<S, M>(&this.inner, call),
                site: None,
                started: None,
                traffic: 0,
                span: None,
            };
        };
        let started = Instant::now();
        call.now = Some(started);
        let traffic = call.cx.traffic();
        let (span, trace) = site.span(call.cx);
        if trace.is_some() {
            call.trace = trace;
        }
        let inner = match &span {
            Some(span) => span.in_scope(|| call_ref::<S, M>(&this.inner, call)),
            None => call_ref::<S, M>(&this.inner, call),
        };
        ObserveFuture {
            inner,
            site: Some(site),
            started: Some(started),
            traffic,
            span,
        }
    }
}

pin_project! {
    /// The observed call: counts and times it when it ends.
    pub struct ObserveFuture<'a, F> {
        #[pin]
        inner: F,
        site: Option<&'a Site>,
        started: Option<Instant>,
        // Stress and shadow traffic are counted apart.
        traffic: usize,
        // Entered on every poll, as `Instrumented` does; `None` when no
        // subscriber records it.
        span: Option<tracing::Span>,
    }
}

impl<F, R> Future for ObserveFuture<'_, F>
where
    F: Future<Output = Result<R, Status>>,
{
    type Output = Result<R, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.as_ref().map(tracing::Span::enter);
        let out = match this.inner.poll(cx) {
            Poll::Ready(out) => out,
            Poll::Pending => return Poll::Pending,
        };
        if let (Some(site), Some(started)) = (this.site, this.started) {
            let code = match &out {
                Ok(_) => tonic::Code::Ok,
                Err(status) => status.code(),
            };
            site.record(code, *started, *this.traffic);
            if code != tonic::Code::Ok && this.span.is_some() {
                tracing::debug!(target: "feeds::rpc", code = crate::observe::code_name(code), "call failed");
            }
        }
        Poll::Ready(out)
    }
}
