//! [`AdmitLayer`]: the server's HTTP-level admission. A stage request that
//! finds the process at its limit is answered RESOURCE_EXHAUSTED at once,
//! before it is decoded or queued; an admitted one holds its place until its
//! response is ready, and its latency feeds the limit. Health and reflection
//! are never limited: probes must keep answering under overload. Shadow
//! copies (`x-tandem-shadow`) are shed first: they are admitted only while
//! fewer than half the limit are in flight.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::{Limiter, Permit};

/// Paths that bypass the limit.
const EXEMPT: [&str; 2] = ["/grpc.health.v1.Health/", "/grpc.reflection."];

/// The gRPC status a response carries in its headers (trailers-only
/// responses: every error a handler returns).
fn header_code(response: &http::Response<tonic::body::Body>) -> Option<tonic::Code> {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(tonic::Code::from_i32)
}

/// Puts a [`Limiter`] in front of a server's services.
#[derive(Clone, Debug)]
pub struct AdmitLayer {
    limiter: Arc<Limiter>,
}

impl AdmitLayer {
    /// Admission through `limiter`.
    pub fn new(limiter: Arc<Limiter>) -> Self {
        Self { limiter }
    }
}

impl<S> tower::Layer<S> for AdmitLayer {
    type Service = Admit<S>;

    fn layer(&self, inner: S) -> Admit<S> {
        Admit {
            inner,
            limiter: Arc::clone(&self.limiter),
        }
    }
}

/// The service [`AdmitLayer`] makes.
#[derive(Clone, Debug)]
pub struct Admit<S> {
    inner: S,
    limiter: Arc<Limiter>,
}

impl<S, B> tower::Service<http::Request<B>> for Admit<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = AdmitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if EXEMPT.iter().any(|p| path.starts_with(p)) {
            return AdmitFuture::Admitted {
                inner: self.inner.call(request),
                permit: None,
            };
        }
        // Shadow copies are shed first: they take at most half the places.
        let acquired = match request.headers().contains_key(crate::route::SHADOW) {
            true => self.limiter.try_acquire_sheddable(),
            false => self.limiter.try_acquire(),
        };
        match acquired {
            Some(permit) => AdmitFuture::Admitted {
                inner: self.inner.call(request),
                permit: Some(permit),
            },
            None => AdmitFuture::Refused {
                status: Some(self.limiter.refusal()),
            },
        }
    }
}

pin_project! {
    /// The future of one request through [`Admit`].
    #[project = AdmitProj]
    pub enum AdmitFuture<F> {
        /// Admitted (or exempt): the inner service's future and its place.
        Admitted { #[pin] inner: F, permit: Option<Permit> },
        /// Refused: the answer, ready at once.
        Refused { status: Option<tonic::Status> },
    }
}

impl<F, E> Future for AdmitFuture<F>
where
    F: Future<Output = Result<http::Response<tonic::body::Body>, E>>,
{
    type Output = Result<http::Response<tonic::body::Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AdmitProj::Admitted { inner, permit } => {
                let out = std::task::ready!(inner.poll(cx));
                if let Some(permit) = permit.take() {
                    // Out of its deadline, or refused by a stage's bulkhead
                    // inside: either way more was admitted than the process
                    // can take, and its short latency is no sample of work.
                    let dropped = out.as_ref().is_ok_and(|r| {
                        matches!(
                            header_code(r),
                            Some(tonic::Code::DeadlineExceeded | tonic::Code::ResourceExhausted)
                        )
                    });
                    permit.done(dropped);
                }
                Poll::Ready(out)
            }
            AdmitProj::Refused { status } => {
                let status = status
                    .take()
                    .unwrap_or_else(|| tonic::Status::resource_exhausted("refused"));
                Poll::Ready(Ok(status.into_http()))
            }
        }
    }
}
