//! The stage contract (generated from `proto/`) and the registry that hands
//! every caller its downstream stage, bound `local` (an in-process trait call)
//! or `grpc` (a tonic channel), without the caller knowing which.
//!
//! # Layout
//! - `pb`: prost messages and tonic's client/server modules (generated).
//! - `stages`: per stage, the trait stage crates implement, its remote adapter
//!   (`XRemote`), its server adapter (`XServe`), its registry marker
//!   (`XService`), plus [`Stage`] and [`Registry`] (generated).
//! - `slot`: the runtime behind a registry slot: [`Service`], [`Slot`], [`AnySlot`].
//! - `registry`: binding remote slots from config, serving local slots, and
//!   describing the topology.
//! - `remote`: [`RemoteConfig`], how a `grpc` binding is configured.
//! - `balance`: [`Balancer`]: endpoints (static or DNS), subsetting, power of
//!   two choices, ejection, health probes, retries under a budget.
//! - `observe`: the middleware every call goes through in both bindings:
//!   Prometheus series, `tracing` spans, W3C trace context.
//! - `context`: [`CallContext`]: request id, tenant, deadline and `x-` headers,
//!   read identically under both bindings and forwarded hop to hop.
//! - `timing`: [`SelfTimer`], a stage's own time excluding its downstream.
//! - `codec`: the prost codec every generated client and server uses; counts
//!   encodes so tests can prove the local binding never encodes.
//! - `error`: [`RegistryError`] and [`ConfigError`].

mod balance;
pub mod codec;
pub mod context;
mod error;
pub mod observe;
mod registry;
mod remote;
mod slot;
mod timing;

/// Prost messages and tonic clients/servers for `feeds.v1` (generated).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/feeds.v1.rs"));
}

#[allow(missing_docs, clippy::all)]
mod stages {
    include!(concat!(env!("OUT_DIR"), "/stages.rs"));
}

/// The encoded `FileDescriptorSet` of `proto/`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/feeds_descriptor.bin"));

pub use async_trait::async_trait;
pub use balance::{Balancer, subset};
pub use context::CallContext;
pub use error::{ConfigError, RegistryError};
pub use registry::{Binding, Limits, ServeOptions};
pub use remote::RemoteConfig;
pub use slot::{AnySlot, RemoteTarget, Service, Slot};
pub use stages::*;
pub use timing::SelfTimer;
