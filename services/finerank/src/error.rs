//! Errors of the fine-rank stage.

/// What can go wrong while ranking or starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An experiment parameter names no known model or is not a number.
    #[error("experiment parameter `{key}` = {value:?}: {why}")]
    BadParam {
        /// The parameter's key.
        key: &'static str,
        /// Its value.
        value: String,
        /// Why it was refused.
        why: String,
    },
    /// A model file could not be used.
    #[error(transparent)]
    Model(#[from] crate::ModelError),
    /// The user context arrived broken.
    #[error("context: {0}")]
    Context(proxy_api::Undecodable),
    /// Recall failed.
    #[error(transparent)]
    Downstream(#[from] proxy_api::Status),
}

impl From<Error> for proxy_api::Status {
    fn from(err: Error) -> Self {
        match err {
            Error::BadParam { .. } | Error::Context(_) => {
                proxy_api::Status::invalid_argument(err.to_string())
            }
            Error::Model(_) => proxy_api::Status::internal(err.to_string()),
            Error::Downstream(status) => status,
        }
    }
}
