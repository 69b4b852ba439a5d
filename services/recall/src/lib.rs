//! Recall: the last stage of the chain (business -> split -> rerank ->
//! fine-rank -> **recall**). Finds about a thousand candidates in the whole
//! catalogue from three channels: nearest items to the user's embedding (an
//! exact scan of quantised embeddings kept by category, or HNSW), the
//! neighbours of the recent history from a precomputed item-to-item table,
//! and popularity as the cold-start fallback, merged by per-channel quotas
//! that come from experiment parameters. The tenant's constraints (allowed
//! categories, blocked creators) and the user's seen items are applied while
//! the candidates are generated, and no category takes more than its share
//! of the nearest-item channel.

mod config;
mod error;
mod flat;
mod i2i;
mod index;
mod pb;
mod stage;

pub use config::{AnnKind, Config};
pub use error::Error;
pub use flat::{Categories, FlatIndex};
pub use i2i::I2iTable;
pub use index::{AnnIndex, IndexFileError, IndexParams};
pub use stage::{Candidate, Channel, Factory, Query, RecallStage, index_dir};
