//! Fine-rank: the fourth stage (business -> split -> rerank -> **fine-rank**
//! -> recall). Asks recall for candidates, assembles features per candidate,
//! scores them in one batch with a linear model chosen by experiment, and
//! keeps the best few hundred.

mod config;
mod error;
mod pb;
mod stage;

pub use config::Config;
pub use error::Error;
pub use stage::{Features, FineRankStage, Model, Query, Scored};
