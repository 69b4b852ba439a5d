//! The generated world every stage reads: a catalogue of items with category,
//! creator, age and a Zipf-distributed popularity, deterministic from a seed
//! and a size, so a recall pod and a monolith built from the same config see
//! exactly the same catalogue.
//!
//! # Layout
//! - `config`: [`WorldConfig`], the seed and sizes, with `validate()`.
//! - `catalog`: [`World`] and [`Item`]: generation and look-ups.
//! - `hash`: [`mix`], the stable hash stages use for deterministic choices.
//! - `rng`: the seeded generator behind every draw, and vector helpers.
//! - `files`: [`World::save`] and [`World::load`], the on-disk format.

mod catalog;
mod config;
mod files;
mod hash;
pub mod progress;
mod rng;

pub use catalog::{Item, Truth, World};
pub use config::{WorldConfig, WorldError};
pub use files::FileError;
pub use hash::{mix, unit, user_key};
pub use rng::{dot, normalize};

/// The directory a world was loaded from (`world.dir`): stages that keep
/// files next to it (the recall index) find them there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorldDir(pub std::path::PathBuf);
