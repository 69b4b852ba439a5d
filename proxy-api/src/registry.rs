//! Registry behaviour shared by every slot: binding remotes from config,
//! serving the local implementations, describing the topology.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tonic::service::{Routes, RoutesBuilder};

use crate::{Balancer, ConfigError, Registry, RegistryError, RemoteConfig, Service, SlotOf, Stage};

/// Message size limits, for both the clients and the servers of this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest message this process accepts.
    pub max_recv_bytes: usize,
    /// Largest message this process sends.
    pub max_send_bytes: usize,
    /// Largest HTTP/2 frame payload this process's servers and clients
    /// accept (`SETTINGS_MAX_FRAME_SIZE`), 1 MiB unless set. At the
    /// protocol's default, 16,384 bytes, a 16 KB user context takes two DATA
    /// frames at every hop, and h2 writes each in a syscall of its own; at
    /// 1 MiB a message of up to 1 MiB is one frame. Each end advertises it
    /// for what it receives, so both directions use it; a peer that keeps
    /// the default is sent default-sized frames. The cost is memory: a
    /// connection's read buffer holds a whole frame, so a peer can make it
    /// hold up to this much. A process serving many connections it does not
    /// trust can set 16,384 and pay the extra writes.
    pub max_frame_bytes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        // Above tonic's 4 MiB default: a 256 KB user context times a few
        // hundred candidates must still fit.
        Self {
            max_recv_bytes: 16 << 20,
            max_send_bytes: 16 << 20,
            max_frame_bytes: 1 << 20,
        }
    }
}

impl Limits {
    /// Checks the values; `prefix` is the section's dotted path.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        for (key, v) in [
            ("max_recv_bytes", self.max_recv_bytes),
            ("max_send_bytes", self.max_send_bytes),
        ] {
            if v < 1024 {
                return Err(ConfigError::new(
                    format!("{prefix}.{key}"),
                    format!("{v} is too small (at least 1024)"),
                ));
            }
        }
        // The protocol's bounds (RFC 9113, 6.5.2); h2 panics outside them.
        if !(MIN_FRAME_BYTES..=MAX_FRAME_BYTES).contains(&self.max_frame_bytes) {
            return Err(ConfigError::new(
                format!("{prefix}.max_frame_bytes"),
                format!(
                    "{} is outside HTTP/2's range {MIN_FRAME_BYTES} to {MAX_FRAME_BYTES}",
                    self.max_frame_bytes
                ),
            ));
        }
        Ok(())
    }

    /// [`Limits::max_frame_bytes`] within HTTP/2's range, for the builders
    /// (which panic outside it) when the value skipped [`Limits::validate`].
    pub(crate) fn frame_size(&self) -> u32 {
        self.max_frame_bytes.clamp(MIN_FRAME_BYTES, MAX_FRAME_BYTES)
    }
}

/// The smallest `SETTINGS_MAX_FRAME_SIZE` HTTP/2 allows (its default).
const MIN_FRAME_BYTES: u32 = 1 << 14;
/// The largest `SETTINGS_MAX_FRAME_SIZE` HTTP/2 allows.
const MAX_FRAME_BYTES: u32 = (1 << 24) - 1;

/// What every server adapter of a process needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    /// Message size limits.
    pub limits: Limits,
    /// The deadline of a request that arrives without `grpc-timeout`.
    pub default_deadline: Option<Duration>,
    /// Peers whose `x-tandem-*` headers (dye, stress) the entry stage keeps;
    /// from every other peer they are dropped before routing.
    pub trusted_peers: Arc<[crate::route::Cidr]>,
    /// Carry pass-through fields (the user context) as the bytes that
    /// arrived; false decodes them on arrival, as every hop once did.
    pub pass_through: bool,
    /// The recorders of the stages served (`[record.<stage>]`).
    pub recorders: Arc<crate::record::Recorders>,
    /// Each stage's limit and compute pool, shared with the caller side
    /// ([`crate::RuntimeOptions::bulkheads`]).
    pub bulkheads: crate::overload::Bulkheads,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            default_deadline: None,
            trusted_peers: Arc::from([]),
            pass_through: true,
            recorders: Arc::default(),
            bulkheads: crate::overload::Bulkheads::default(),
        }
    }
}

/// How one stage is reached from this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// Nobody hosts or binds it; asking for it is an error.
    Unbound,
    /// In-process trait call.
    Local,
    /// Over gRPC, balanced across these endpoints.
    Grpc(Vec<String>),
    /// Behind a route table over these targets.
    Routed(Vec<String>),
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Binding::Unbound => f.write_str("unbound"),
            Binding::Local => f.write_str("local (in-process)"),
            Binding::Grpc(eps) => write!(f, "grpc -> {}", eps.join(", ")),
            Binding::Routed(targets) => write!(f, "routed -> {}", targets.join(" | ")),
        }
    }
}

impl Registry {
    /// Binds `stage` to the remote `config` describes (connections are made
    /// lazily, on the first call or health probe). Must run inside a tokio
    /// runtime.
    pub fn bind_remote(
        &mut self,
        stage: Stage,
        config: &RemoteConfig,
        limits: Limits,
    ) -> Result<(), RegistryError> {
        let balancer = Balancer::new(stage, config, limits)?;
        let (slots, options) = self.slots_mut();
        slots
            .into_iter()
            .find(|slot| slot.stage() == stage)
            .ok_or_else(|| RegistryError::unbound(stage))?
            .bind_remote(balancer, options)
    }

    /// The stage `S` as this process reaches it (generic form of `registry.recall()`).
    pub fn get<S: Service>(&self) -> Result<Arc<S::Api>, RegistryError>
    where
        Self: SlotOf<S>,
    {
        SlotOf::<S>::slot(self).get()
    }

    /// Registers the in-process implementation of `S` (generic form of
    /// `registry.provide_recall(..)`).
    pub fn provide<S: Service>(&mut self, imp: Arc<S::Api>) -> Result<(), RegistryError>
    where
        Self: SlotOf<S>,
    {
        let (slot, options) = SlotOf::<S>::slot_mut(self);
        slot.provide(imp, options)
    }

    /// Puts `stage` behind a route table at start-up (see [`crate::route`]):
    /// `rules` over its local implementation, if hosted, and `pools` (the
    /// complete set, `default` included when it has one). Returns the table
    /// described for logs. Must run inside a tokio runtime, before the
    /// stages that call `stage` are built.
    pub fn route(
        &mut self,
        stage: Stage,
        rules: &[crate::route::RouteRule],
        pools: &std::collections::BTreeMap<String, RemoteConfig>,
        limits: Limits,
    ) -> Result<Vec<String>, RegistryError> {
        let (slots, options) = self.slots_mut();
        let options = options.clone();
        slots
            .into_iter()
            .find(|slot| slot.stage() == stage)
            .ok_or_else(|| RegistryError::unbound(stage))?
            .set_routes(rules, pools, limits, &options)
    }

    /// Replaces the route table of `stage`, routed since start-up; calls in
    /// flight finish on the table they started with.
    pub fn reload_route(
        &self,
        stage: Stage,
        rules: &[crate::route::RouteRule],
        pools: &std::collections::BTreeMap<String, RemoteConfig>,
        limits: Limits,
    ) -> Result<Vec<String>, RegistryError> {
        let options = self.options().clone();
        self.slots()
            .into_iter()
            .find(|slot| slot.stage() == stage)
            .ok_or_else(|| RegistryError::unbound(stage))?
            .reload_routes(rules, pools, limits, &options)
    }

    /// Whether `stage` is behind a route table.
    pub fn is_routed(&self, stage: Stage) -> bool {
        self.slots()
            .iter()
            .any(|s| s.stage() == stage && matches!(s.binding(), Binding::Routed(_)))
    }

    /// The balancers of every `grpc` binding, chain order.
    pub fn balancers(&self) -> Vec<Arc<Balancer>> {
        self.slots().iter().filter_map(|s| s.balancer()).collect()
    }

    /// tonic routes serving every locally bound stage, and the stages they serve.
    pub fn routes(&self, options: &ServeOptions) -> (Routes, Vec<Stage>) {
        let mut builder = RoutesBuilder::default();
        let mut served = Vec::new();
        for slot in self.slots() {
            if slot.add_routes(&mut builder, options) {
                served.push(slot.stage());
            }
        }
        (builder.routes(), served)
    }

    /// Every stage and how this process reaches it, chain order.
    pub fn topology(&self) -> Vec<(Stage, Binding)> {
        self.slots()
            .iter()
            .map(|s| (s.stage(), s.binding()))
            .collect()
    }
}
