//! The generated world every stage reads: a catalogue of items with category,
//! creator, age and a Zipf-distributed popularity, deterministic from a seed
//! and a size, so a recall pod and a monolith built from the same config see
//! exactly the same catalogue.
//!
//! # Layout
//! - `config`: [`WorldConfig`], the seed and sizes, with `validate()`.
//! - `catalog`: [`World`] and [`Item`]: generation and look-ups.
//! - `hash`: [`mix`], the stable hash stages use for deterministic choices.

mod catalog;
mod config;
mod hash;

pub use catalog::{Item, World};
pub use config::{WorldConfig, WorldError};
pub use hash::{mix, unit, user_key};
