//! Split: the second stage (business -> **split** -> rerank -> fine-rank ->
//! recall). Places the user in layered, overlapping experiments (one bucket per
//! layer from a salted hash), attaches the resulting parameters and passes the
//! user's context through to rerank unchanged.

mod config;
mod error;
mod pb;
mod stage;

pub use config::{Config, Experiment, Experiments, Layer};
pub use error::Error;
pub use stage::{Assignment, Factory, Hit, SplitStage};
