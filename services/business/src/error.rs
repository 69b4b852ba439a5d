//! Errors of the business stage.

/// What can go wrong while serving a feed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is invalid.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// The field's name in `GetFeedRequest`.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The request names a tenant that is not configured.
    #[error("tenant {0:?} is not configured")]
    UnknownTenant(String),
    /// A stage below failed.
    #[error(transparent)]
    Downstream(#[from] proxy_api::Status),
}

impl From<Error> for proxy_api::Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument { .. } => proxy_api::Status::invalid_argument(err.to_string()),
            Error::UnknownTenant(_) => proxy_api::Status::not_found(err.to_string()),
            Error::Downstream(status) => status,
        }
    }
}
