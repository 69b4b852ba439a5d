//! Overload protection: what a process admits, and where its work runs.
//!
//! - The server admits stage requests through one adaptive limit
//!   ([`AdmitLayer`] over a [`Limiter`] driven by [`Vegas`]): past it a
//!   request is answered RESOURCE_EXHAUSTED at once, so the admitted ones
//!   keep their latency without per-machine tuning. A hard ceiling
//!   (`process.max_concurrent_requests`) bounds it.
//! - Each stage has its own bulkhead ([`Bulkheads`]): a fixed limit shared
//!   by its caller-side (local) and server-side stacks, so one stage's
//!   overload cannot take every slot of the process; and CPU-heavy stages
//!   run on a small, separate compute runtime ([`ComputePool`]) so the
//!   async workers stay free for I/O, other stages and health checks.
//!
//! # Layout
//! - `vegas`: the adaptive limit algorithm (pure; tested on replayed latency).
//! - `limiter`: [`Limiter`] and [`Permit`], with the `feeds_concurrency_*` metrics.
//! - `layer`: [`AdmitLayer`], the server's HTTP-level admission.
//! - `bulkhead`: [`Bulkheads`] (per-stage limits) and [`ComputePool`].

mod bulkhead;
mod layer;
mod limiter;
mod vegas;

pub use bulkhead::{Bulkheads, ComputePool, Joined, StageBulkhead, StageLimit};
pub use layer::{Admit, AdmitLayer};
pub use limiter::{LimitMode, Limiter, Permit};
pub use vegas::{Step, Vegas, VegasConfig};
