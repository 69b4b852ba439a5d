//! Deadlines. One timer at the process edge ([`ServerDeadline`], or the
//! local leaf when a caller outside any served call brings a deadline)
//! bounds the whole in-process call tree; every hop inside it costs a clock
//! read ([`Deadline`]), so DEADLINE_EXCEEDED names the stage that would have
//! been called too late. The remote leaf turns what is left into `grpc-timeout`.
//!
//! Inside a tree a timer bounds, the hop's read is of the coarse clock
//! ([`coarse_now`]): the timer ends the call at its deadline whatever the
//! check says, so the check only has to stop work that would start well
//! after it, and a precise read costs more than the rest of the hop.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pin_project_lite::pin_project;

use super::{BoxCall, Call, call_ref};
use crate::{Stage, Status};

/// The coarse clock is used only while its resolution is at most this.
const COARSE_MAX: Duration = Duration::from_millis(10);

/// The coarse clock's reading and the `Instant` it stands for, once.
static COARSE_BASE: OnceLock<Option<(Instant, Duration)>> = OnceLock::new();

/// The kernel's coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`, the time
/// of the last tick; a vDSO read several times cheaper than the precise one).
/// Read through rustix, which calls the vDSO without libc's errno path.
#[inline(always)]
fn coarse() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Now, from the coarse clock: never after `Instant::now()`, and at most two
/// of its ticks before (1 to 10 ms; 4 ms at 250 Hz). Where the coarse clock
/// is missing or coarser than [`COARSE_MAX`], the precise clock.
///
/// Why never after: the base pairs an `Instant` read first with a coarse
/// reading taken just after, less one resolution. A coarse reading is at
/// most one resolution behind the precise time it is taken at, so the base
/// is at or behind its `Instant`, and a later reading, at or behind its own
/// time, adds no more than the time that has passed.
#[inline]
pub(crate) fn coarse_now() -> Instant {
    let base = COARSE_BASE.get_or_init(|| {
        let resolution = nix::time::clock_getres(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
            .ok()
            .map(Duration::from)
            .filter(|r| *r <= COARSE_MAX)?;
        let precise = Instant::now();
        Some((precise, coarse() + resolution))
    });
    match base {
        Some((precise, at)) => *precise + coarse().saturating_sub(*at),
        None => Instant::now(),
    }
}

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
    /// Bounded by a timer above (see [`crate::Cx::assume_bounded`]), the
    /// clock read is `coarse_now`.
    #[inline(always)]
    pub fn check(&self, cx: &crate::Cx, now: Option<Instant>) -> Result<(), Status> {
        let Some(deadline) = cx.deadline() else {
            return Ok(());
        };
        let now = now.unwrap_or_else(|| match cx.bounded() {
            true => coarse_now(),
            false => Instant::now(),
        });
        match now >= deadline {
            true => Err(exceeded(self.stage)),
            false => Ok(()),
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
        Expired { status: Option<Box<Status>> },
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
            DeadlineProj::Expired { status } => Poll::Ready(Err(status.take().map_or_else(
                || Status::internal("deadline future polled after completion"),
                |status| *status,
            ))),
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

    #[inline(always)]
    fn call(&mut self, call: Call<'a, M>) -> Self::Future {
        let this: &'a Deadline<S> = self;
        if let Err(status) = this.check(call.cx, call.now) {
            return DeadlineFuture::Expired {
                status: Some(Box::new(status)),
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

    #[inline(always)]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_clock_is_never_ahead_and_at_most_two_ticks_behind() {
        for _ in 0..10_000 {
            let coarse = coarse_now();
            let precise = Instant::now();
            assert!(coarse <= precise, "{coarse:?} after {precise:?}");
            assert!(
                precise.duration_since(coarse) <= 2 * COARSE_MAX + Duration::from_millis(5),
                "{:?} behind",
                precise.duration_since(coarse)
            );
        }
    }

    #[test]
    fn a_bounded_hop_past_its_deadline_is_refused_naming_the_stage() {
        let layer = Deadline {
            stage: Stage::Recall,
            inner: (),
        };
        let past = crate::Cx::new()
            .with_deadline(Instant::now() - Duration::from_millis(50))
            .assume_bounded();
        let status = layer.check(&past, None).expect_err("past its deadline");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(status.message().contains("`recall`"), "{status:?}");
        let ahead = crate::Cx::new()
            .with_timeout(Duration::from_secs(60))
            .assume_bounded();
        assert!(layer.check(&ahead, None).is_ok());
    }
}
