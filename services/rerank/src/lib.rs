//! Rerank: the third stage (business -> split -> **rerank** -> fine-rank ->
//! recall). Turns fine-rank's scored list into the final ranked page:
//! diversity by maximal marginal relevance (lambda from experiments), at most
//! k items per category and per creator, and the cut to the requested size.

mod config;
mod error;
mod pb;
mod stage;

pub use config::Config;
pub use error::Error;
pub use stage::{Pick, Query, RerankStage, Rules};
