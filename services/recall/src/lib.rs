//! Recall: the last stage of the chain (business -> split -> rerank ->
//! fine-rank -> **recall**). Finds about a thousand candidates in the whole
//! catalogue from several channels, merged by per-channel quotas that come from
//! experiment parameters, with the user's seen items filtered out.

mod config;
mod error;
mod pb;
mod stage;

pub use config::Config;
pub use error::Error;
pub use stage::{Candidate, Channel, Query, RecallStage};
