//! Errors of the recall stage.

/// What can go wrong while recalling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An experiment parameter could not be parsed.
    #[error("experiment parameter `{key}` = {value:?} is not a number")]
    BadParam {
        /// The parameter's key.
        key: String,
        /// Its value.
        value: String,
    },
    /// A constraint names a category or creator the catalogue does not have.
    #[error("{field}: {name:?} is not in the catalogue")]
    UnknownName {
        /// The request field.
        field: &'static str,
        /// The name.
        name: String,
    },
    /// The user context arrived broken.
    #[error("context: {0}")]
    Context(proxy_api::Undecodable),
}

impl From<Error> for proxy_api::Status {
    fn from(err: Error) -> Self {
        match err {
            Error::BadParam { .. } | Error::UnknownName { .. } | Error::Context(_) => {
                proxy_api::Status::invalid_argument(err.to_string())
            }
        }
    }
}
