//! Fine-rank: the fourth stage (business -> split -> rerank -> **fine-rank**
//! -> recall). Asks recall for candidates, assembles features per candidate
//! (taste dot product, category affinity from the history, popularity,
//! freshness, recall channel), scores them in one batch with a logistic
//! regression trained on the interaction log (version chosen by experiment),
//! and keeps the best few hundred.

mod config;
mod error;
mod features;
mod model;
mod pb;
mod stage;
mod train;

pub use config::Config;
pub use error::Error;
pub use model::{FEATURES, Features, Model, ModelError, TrainInfo};
pub use stage::{Factory, FineRankStage, Models, Query, Scored};
pub use train::{TrainParams, train};
