//! Registry behaviour shared by every slot: binding remotes from config,
//! serving the local implementations, describing the topology.

use std::fmt;

use serde::{Deserialize, Serialize};
use tonic::service::{Routes, RoutesBuilder};

use crate::{ConfigError, Registry, RegistryError, RemoteConfig, RemoteTarget, Stage};

/// Message size limits, for both the clients and the servers of this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest message this process accepts.
    pub max_recv_bytes: usize,
    /// Largest message this process sends.
    pub max_send_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // Above tonic's 4 MiB default: a 256 KB user context times a few
        // hundred candidates must still fit.
        Self {
            max_recv_bytes: 16 << 20,
            max_send_bytes: 16 << 20,
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
        Ok(())
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
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Binding::Unbound => f.write_str("unbound"),
            Binding::Local => f.write_str("local (in-process)"),
            Binding::Grpc(eps) => write!(f, "grpc -> {}", eps.join(", ")),
        }
    }
}

impl Registry {
    /// Binds `stage` to the remote `config` describes (a lazy channel: no
    /// connection is made until the first call).
    pub fn bind_remote(
        &mut self,
        stage: Stage,
        config: &RemoteConfig,
        limits: Limits,
    ) -> Result<(), RegistryError> {
        let channel = config.channel(&format!("remote.{}", stage.name()))?;
        let target = RemoteTarget {
            stage,
            endpoints: config.endpoints.clone(),
            limits,
        };
        self.slots_mut()
            .into_iter()
            .find(|slot| slot.stage() == stage)
            .ok_or_else(|| RegistryError::unbound(stage))?
            .bind_remote(channel, target)
    }

    /// tonic routes serving every locally bound stage, and the stages they serve.
    pub fn routes(&self, limits: &Limits) -> (Routes, Vec<Stage>) {
        let mut builder = RoutesBuilder::default();
        let mut served = Vec::new();
        for slot in self.slots() {
            if slot.add_routes(&mut builder, limits) {
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
