//! Errors of the split stage.

/// What can go wrong while splitting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Rerank failed.
    #[error(transparent)]
    Downstream(#[from] tonic::Status),
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        match err {
            Error::Downstream(status) => status,
        }
    }
}
