//! Errors of the rerank stage.

/// What can go wrong while reranking.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An experiment parameter could not be parsed or is out of range.
    #[error("experiment parameter `{key}` = {value:?} is invalid")]
    BadParam {
        /// The parameter's key.
        key: &'static str,
        /// Its value.
        value: String,
    },
    /// Fine-rank failed.
    #[error(transparent)]
    Downstream(#[from] proxy_api::Status),
}

impl From<Error> for proxy_api::Status {
    fn from(err: Error) -> Self {
        match err {
            Error::BadParam { .. } => proxy_api::Status::invalid_argument(err.to_string()),
            Error::Downstream(status) => status,
        }
    }
}
