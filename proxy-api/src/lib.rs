//! The stage contract (generated from `proto/`) and the runtime behind it:
//! the registry that hands every caller its downstream stage, bound `local`
//! (an in-process trait call) or `grpc` (a tonic channel), without the caller
//! knowing which, and the layers every call goes through on both sides.
//!
//! # Layout
//! - `generated/` (committed, from `cargo run -p codegen`):
//!   - `pb`: prost messages and tonic's client/server modules;
//!   - `stages`: per stage, the trait stage crates implement
//!     (`async fn recall(&self, cx: &Cx, request) -> Result<response, Status>`),
//!     its local, remote and server adapters (`XLocal`, `XRemote`, `XServe`),
//!     its registry marker (`XService`), plus [`Stage`] (with the call graph)
//!     and [`Registry`].
//! - `context`: [`Cx`], request id, tenant, deadline, trace context and `x-`
//!   headers, shared hop to hop.
//! - `stack`: the runtime as tower layers, caller side (observe -> deadline ->
//!   binding) and server side (deadline -> observe -> implementation).
//! - `server`: the process around the served stacks: listener, admission and
//!   size limits, health that follows downstreams, reflection, drain and grace.
//! - `overload`: the adaptive concurrency limit the server admits through,
//!   per-stage bulkheads and the compute pool CPU-heavy stages run on.
//! - `factory`: [`StageFactory`], the hook each stage crate exports (its config
//!   section and constructor), with [`Deps`] and [`Resources`].
//! - `route`: per-stage route tables (rules on tenant, dye, stress tag and
//!   users; weighted, sticky splits; health fallback), swapped on reload.
//! - `slot`: the runtime behind a registry slot: [`Service`], [`Slot`], [`AnySlot`].
//! - `registry`: binding remote slots from config, serving local slots, and
//!   describing the topology.
//! - `remote`: [`RemoteConfig`], how a `grpc` binding is configured.
//! - `balance`: [`Balancer`]: endpoints (static or DNS), subsetting, power of
//!   two choices, ejection, health probes, retries under a budget.
//! - `observe`: metrics families, call sites and spans used by the observe layer.
//! - `timing`: `SelfTimer`, a stage's own time excluding its downstream, kept
//!   by the adapters while explaining.
//! - `passthrough`: [`PassThrough`], the user context carried as the bytes
//!   that arrived until a stage reads it.
//! - `diff`: [`diff::Differ`], field-level comparison of two answers driven
//!   by the descriptor set, and the noise filter's [`diff::Verdict`].
//! - `record`: [`record::Recorders`], a sample of the calls to hosted stages
//!   written to rotating files for `feeds replay`, and their reader.
//! - `rollout`: [`rollout::Rollout`], a gated, stepwise move of a stage's
//!   route to a candidate target, rolled back by the first gate that fails.
//! - `shadow`: [`shadow::Shadows`], copies of routed calls sent to a second
//!   target off the request path and compared with the served answers.
//! - `codec`: the prost codec every generated client and server uses; counts
//!   encodes so tests can prove the local binding never encodes.
//! - `coalesce`: [`coalesce::Coalesce`], the connections between processes
//!   with each call's frames written together.
//! - `tls`: mutual TLS between processes, with certificate files reloaded
//!   when they change.
//! - `error`: [`RegistryError`] and [`ConfigError`].

mod balance;
pub mod coalesce;
pub mod codec;
pub mod context;
pub mod diff;
mod error;
mod factory;
pub mod observe;
pub mod overload;
mod passthrough;
pub mod record;
mod registry;
mod remote;
pub mod rollout;
pub mod route;
pub mod server;
pub mod shadow;
mod slot;
pub mod stack;
mod timing;
pub mod tls;

/// Prost messages and tonic clients/servers for `feeds.v1` (generated).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!("generated/feeds.v1.rs");
}

#[allow(clippy::all)]
mod stages {
    include!("generated/stages.rs");
}

/// The encoded `FileDescriptorSet` of `proto/`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("generated/feeds_descriptor.bin");

pub use async_trait::async_trait;
pub use balance::{Balancer, subset};
pub use context::Cx;
pub use error::{ConfigError, RegistryError};
pub use factory::{BuildError, Deps, Resources, StageFactory};
pub use passthrough::{PassThrough, Undecodable, decoded_fields};
pub use registry::{Binding, Limits, ServeOptions};
pub use remote::RemoteConfig;
pub use slot::{AnySlot, RemoteTarget, Service, Slot, SlotOf};
pub use stack::{BoxCall, RuntimeOptions};
pub use stages::*;
/// Status codes.
pub use tonic::Code;
/// The status every stage call answers with (tonic's).
pub use tonic::Status;
