//! Per-stage bulkheads: a concurrency limit per stage, shared by the stage's
//! caller-side and server-side stacks, and the compute runtime CPU-heavy
//! stages run on.
//!
//! Why a separate runtime and not `spawn_blocking` or `block_in_place`: a
//! stage call is an async function that may await its downstream (fine-rank
//! awaits recall), so it needs an executor, not a thread; the blocking pool
//! is unbounded; and `block_in_place` hands the worker's other tasks to a
//! new thread on every call. A small multi-thread runtime runs the stage's
//! future to completion off the I/O workers, and the stage's limit bounds
//! how many of its calls wait there, so the queue is bounded too.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use super::{LimitMode, Limiter};
use crate::{Stage, Status};

/// One stage's bulkhead settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageLimit {
    /// Calls of the stage in flight at once in this process (in-process and
    /// served together); past it, RESOURCE_EXHAUSTED at once. 0: no limit.
    pub max_concurrent: usize,
    /// Run the stage's calls on the compute runtime.
    pub compute: bool,
}

/// Owns the compute runtime; shutting it down must not block, since the
/// last handle may be dropped inside another runtime.
struct Owner(Mutex<Option<tokio::runtime::Runtime>>);

impl Drop for Owner {
    fn drop(&mut self) {
        let runtime = self
            .0
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(runtime) = runtime {
            runtime.shutdown_background();
        }
    }
}

/// Tells pools apart: each gets the next number (0 is "no pool").
static NEXT_POOL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

thread_local! {
    /// The pool this thread is a worker of (0: none).
    static ON_POOL: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A small tokio runtime of its own for CPU-heavy stage work.
#[derive(Clone)]
pub struct ComputePool {
    handle: tokio::runtime::Handle,
    threads: usize,
    /// This pool's number, set in its workers' [`ON_POOL`].
    id: usize,
    /// Keeps the runtime alive while any clone is.
    _owner: Arc<Owner>,
}

impl std::fmt::Debug for ComputePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputePool")
            .field("threads", &self.threads)
            .finish()
    }
}

impl ComputePool {
    /// A runtime of `threads` workers (at least one), named `feeds-compute`.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let id = NEXT_POOL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("feeds-compute")
            .on_thread_start(move || ON_POOL.with(|p| p.set(id)))
            // A stage on it may call a remote downstream or sleep.
            .enable_all()
            .build()?;
        Ok(Self {
            handle: runtime.handle().clone(),
            threads,
            id,
            _owner: Arc::new(Owner(Mutex::new(Some(runtime)))),
        })
    }

    /// Whether the calling thread is one of this pool's workers: work asked
    /// for there (fine-rank's local call to recall) runs where it is, since
    /// handing it to another task of the same pool only adds two wake-ups.
    pub fn is_current(&self) -> bool {
        ON_POOL.with(|p| p.get() == self.id)
    }

    /// Its worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `work` on the pool; the returned future resolves to its output,
    /// and dropping it (a deadline, a cancelled request) aborts the work at
    /// its next await.
    pub fn spawn<F, T>(&self, stage: Stage, work: F) -> Joined<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        Joined {
            handle: self.handle.spawn(work),
            stage,
        }
    }
}

/// Work running on a [`ComputePool`].
pub struct Joined<T> {
    handle: tokio::task::JoinHandle<T>,
    stage: Stage,
}

impl<T> Future for Joined<T> {
    type Output = Result<T, Status>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let stage = self.stage;
        Pin::new(&mut self.handle).poll(cx).map(|joined| {
            joined.map_err(|e| match e.is_panic() {
                true => Status::internal(format!("stage `{}` panicked", stage.name())),
                false => Status::unavailable(format!(
                    "stage `{}`: the compute pool is shutting down",
                    stage.name()
                )),
            })
        })
    }
}

impl<T> Drop for Joined<T> {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// What one stage gets from its bulkhead.
#[derive(Clone, Debug, Default)]
pub struct StageBulkhead {
    /// Its limit, if it has one.
    pub limiter: Option<Arc<Limiter>>,
    /// The pool its calls run on, if it is a compute stage.
    pub pool: Option<ComputePool>,
}

#[derive(Debug)]
struct Inner {
    stages: Vec<(Stage, StageBulkhead)>,
    threads: usize,
}

/// Every stage's bulkhead in one process; cloning shares them. The default
/// has none: no stage limit, every stage on the async workers.
#[derive(Clone, Debug, Default)]
pub struct Bulkheads {
    inner: Option<Arc<Inner>>,
}

impl PartialEq for Bulkheads {
    fn eq(&self, other: &Self) -> bool {
        match (&self.inner, &other.inner) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Bulkheads {}

impl Bulkheads {
    /// The bulkheads `stages` describe; a compute pool of `compute_threads`
    /// workers is started if any stage is a compute stage.
    pub fn new(
        stages: impl IntoIterator<Item = (Stage, StageLimit)>,
        compute_threads: usize,
    ) -> std::io::Result<Self> {
        let stages: Vec<(Stage, StageLimit)> = stages.into_iter().collect();
        let pool = match stages.iter().any(|(_, l)| l.compute) {
            true => Some(ComputePool::new(compute_threads)?),
            false => None,
        };
        let threads = pool.as_ref().map_or(0, ComputePool::threads);
        let stages = stages
            .into_iter()
            .map(|(stage, limit)| {
                let limiter = (limit.max_concurrent > 0)
                    .then(|| Limiter::new(stage.name(), LimitMode::Fixed(limit.max_concurrent)));
                let pool = pool.clone().filter(|_| limit.compute);
                (stage, StageBulkhead { limiter, pool })
            })
            .collect();
        Ok(Self {
            inner: Some(Arc::new(Inner { stages, threads })),
        })
    }

    /// What `stage` gets: its limit and pool, if any.
    pub fn stage(&self, stage: Stage) -> StageBulkhead {
        self.inner
            .as_ref()
            .and_then(|i| i.stages.iter().find(|(s, _)| *s == stage))
            .map(|(_, b)| b.clone())
            .unwrap_or_default()
    }

    /// Worker threads of the compute pool (0 when there is none).
    pub fn compute_threads(&self) -> usize {
        self.inner.as_ref().map_or(0, |i| i.threads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_get_their_own_limit_and_the_shared_pool() {
        let b = Bulkheads::new(
            [
                (
                    Stage::Recall,
                    StageLimit {
                        max_concurrent: 3,
                        compute: true,
                    },
                ),
                (
                    Stage::Split,
                    StageLimit {
                        max_concurrent: 0,
                        compute: false,
                    },
                ),
            ],
            1,
        )
        .expect("pool");
        let recall = b.stage(Stage::Recall);
        assert_eq!(recall.limiter.as_ref().map(|l| l.limit()), Some(3));
        assert!(recall.pool.is_some());
        let split = b.stage(Stage::Split);
        assert!(split.limiter.is_none() && split.pool.is_none());
        assert!(b.stage(Stage::Business).limiter.is_none());
        assert_eq!(b.compute_threads(), 1);
        assert_eq!(b, b.clone());
        assert_ne!(b, Bulkheads::default());
    }

    #[tokio::test]
    async fn work_runs_off_the_caller_and_a_dropped_wait_aborts_it() {
        let pool = ComputePool::new(1).expect("pool");
        let name = pool
            .spawn(Stage::Recall, async {
                std::thread::current().name().map(str::to_owned)
            })
            .await
            .expect("joined");
        assert_eq!(name.as_deref(), Some("feeds-compute"));
        assert!(!pool.is_current(), "the test's own thread is not a worker");
        let (here, other) = {
            let (inner, other) = (pool.clone(), ComputePool::new(1).expect("pool"));
            pool.spawn(Stage::Recall, async move {
                (inner.is_current(), other.is_current())
            })
            .await
            .expect("joined")
        };
        assert!(here && !other, "a worker knows its own pool and only it");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let waiting = pool.spawn(Stage::Recall, async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        drop(waiting);
        // The aborted task drops its sender.
        assert!(rx.await.is_err());
        let boom = true;
        let panicked = pool
            .spawn(Stage::Recall, async move { assert!(!boom, "boom") })
            .await
            .expect_err("panic");
        assert_eq!(panicked.code(), tonic::Code::Internal);
        // Dropping the last handle inside a runtime must not panic.
        drop(pool);
    }
}
