//! Rerank: the third stage (business -> split -> **rerank** -> fine-rank ->
//! recall). Turns fine-rank's scored list into the final ranked page: maximal
//! marginal relevance over item embeddings (lambda from experiments), the
//! tenant's rules (at most k items per category and per creator, a freshness
//! boost), and the cut to the requested size.

mod config;
mod error;
mod pb;
mod stage;

pub use config::{Config, PageRules};
pub use error::Error;
pub use stage::{Factory, Pick, RerankStage};
