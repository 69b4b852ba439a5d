//! Recall: the last stage of the chain (business -> split -> rerank ->
//! fine-rank -> **recall**). Finds about a thousand candidates in the whole
//! catalogue from three channels: ANN search (HNSW) with the user's embedding,
//! item-to-item search from the recent history, and popularity as the
//! cold-start fallback, merged by per-channel quotas that come from experiment
//! parameters, with the user's seen items filtered out.

mod config;
mod error;
mod index;
mod pb;
mod stage;

pub use config::Config;
pub use error::Error;
pub use index::{AnnIndex, IndexFileError, IndexParams};
pub use stage::{Candidate, Channel, Factory, Query, RecallStage, index_dir};
