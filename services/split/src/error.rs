//! Errors of the split stage.

/// What can go wrong while splitting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Rerank failed.
    #[error(transparent)]
    Downstream(#[from] proxy_api::Status),
}

impl From<Error> for proxy_api::Status {
    fn from(err: Error) -> Self {
        match err {
            Error::Downstream(status) => status,
        }
    }
}
