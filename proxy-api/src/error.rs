//! Errors of the registry and of binding configuration.

use crate::Stage;

/// A slot was asked for something its binding cannot give.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Nobody provided or bound the stage.
    #[error("stage `{0}` is neither hosted in this process nor bound to a remote endpoint")]
    Unbound(&'static str),
    /// The stage is already bound; a slot holds exactly one binding.
    #[error("stage `{stage}` is already bound {existing}; it cannot also be bound {requested}")]
    AlreadyBound {
        /// The stage's name.
        stage: &'static str,
        /// The binding it has.
        existing: &'static str,
        /// The binding that was refused.
        requested: &'static str,
    },
    /// Routes can be reloaded only for a stage that had them at start-up
    /// (its callers hold the routing adapter from then on).
    #[error(
        "routes.{0}: this process started without routes for `{0}`; adding them needs a restart (start with `routes.{0} = []` to route later)"
    )]
    NotRouted(&'static str),
    /// The remote configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl RegistryError {
    pub(crate) fn unbound(stage: Stage) -> Self {
        Self::Unbound(stage.name())
    }
}

impl From<RegistryError> for tonic::Status {
    fn from(err: RegistryError) -> Self {
        tonic::Status::failed_precondition(err.to_string())
    }
}

/// A configuration value is invalid. `key` is the dotted path of the value
/// (`remote.split.endpoints[0]`) so the caller can say where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// Dotted path of the offending value.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// An error about the value at `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}
