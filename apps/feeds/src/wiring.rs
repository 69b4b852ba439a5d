//! The one place that knows the concrete stage crates: builds the registry
//! for a plan, binding remote stages and providing hosted ones, callee first
//! so every hosted stage finds its downstream already bound.

use std::sync::Arc;

use proxy_api::{Registry, RegistryError, Stage};
use world::World;

/// A stage or its data could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    /// Binding a slot failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The world files could not be loaded.
    #[error("world.dir: {0}")]
    World(#[from] world::FileError),
    /// The saved ANN index next to the world files cannot be used.
    #[error("world.dir: recall index {0}")]
    Index(String),
    /// A stage refused its config or data.
    #[error("{stage}: {message}")]
    Stage {
        /// The stage's name.
        stage: &'static str,
        /// What it said.
        message: String,
    },
}

fn stage_err(stage: Stage, e: impl std::fmt::Display) -> WiringError {
    WiringError::Stage {
        stage: stage.name(),
        message: e.to_string(),
    }
}

/// The world `config` describes: loaded from `world.dir` or generated.
pub fn world(config: &Config) -> Result<World, WiringError> {
    let started = std::time::Instant::now();
    let world = match &config.world.dir {
        Some(dir) => World::load(std::path::Path::new(dir))?,
        None => World::generate(&config.world),
    };
    tracing::info!(
        items = world.len(),
        users = world.users(),
        dims = world.dims(),
        seconds = started.elapsed().as_secs_f32(),
        "world ready"
    );
    Ok(world)
}

use crate::config::{Config, Plan};

/// Where the recall index lives next to a world's files.
pub fn index_dir(world_dir: &std::path::Path) -> std::path::PathBuf {
    world_dir.join("index")
}

/// Stages that read the catalogue; a process hosting none of them skips it.
const READS_WORLD: [Stage; 4] = [
    Stage::Business,
    Stage::Rerank,
    Stage::FineRank,
    Stage::Recall,
];

/// The registry for `plan`. Generates the world once, shared by every hosted
/// stage, if any of them reads it. Must run inside a tokio runtime.
pub fn build(config: &Config, plan: &Plan) -> Result<Registry, WiringError> {
    let world = match READS_WORLD.iter().any(|s| plan.hosts(*s)) {
        true => Some(Arc::new(world(config)?)),
        false => None,
    };
    build_with(config, plan, world)
}

/// As [`build`], with a world the caller already has (tests share one).
pub fn build_with(
    config: &Config,
    plan: &Plan,
    world: Option<Arc<World>>,
) -> Result<Registry, WiringError> {
    let mut registry = Registry::empty();
    for (stage, remote) in &plan.remotes {
        registry.bind_remote(*stage, remote, config.process.limits)?;
    }
    let world = || {
        world.clone().ok_or(RegistryError::Unbound(
            "world (the catalogue was not generated)",
        ))
    };
    for stage in Stage::ALL.iter().rev().filter(|s| plan.hosts(**s)) {
        let started = std::time::Instant::now();
        match stage {
            Stage::Recall => {
                let stage = match &config.world.dir {
                    // Files next to the world: load the index saved there.
                    Some(dir) => recall::RecallStage::with_index_dir(
                        world()?,
                        config.recall.clone(),
                        &index_dir(std::path::Path::new(dir)),
                    )
                    .map_err(|e| WiringError::Index(e.to_string()))?,
                    None => recall::RecallStage::new(world()?, config.recall.clone()),
                };
                registry.provide_recall(Arc::new(stage))?
            }
            Stage::FineRank => {
                let stage = finerank::FineRankStage::new(
                    world()?,
                    config.finerank.clone(),
                    registry.recall()?,
                )
                .map_err(|e| stage_err(Stage::FineRank, e))?;
                registry.provide_finerank(Arc::new(stage))?
            }
            Stage::Rerank => {
                let stage =
                    rerank::RerankStage::new(world()?, config.rerank.clone(), registry.finerank()?);
                registry.provide_rerank(Arc::new(stage))?
            }
            Stage::Split => {
                let stage = split::SplitStage::new(config.split.clone(), registry.rerank()?)
                    .map_err(|e| stage_err(Stage::Split, e))?;
                registry.provide_split(Arc::new(stage))?
            }
            Stage::Business => {
                let stage = business::BusinessStage::new(
                    world()?,
                    config.business.clone(),
                    registry.split()?,
                );
                registry.provide_business(Arc::new(stage))?
            }
        }
        tracing::info!(
            stage = stage.name(),
            seconds = started.elapsed().as_secs_f32(),
            "stage ready"
        );
    }
    Ok(registry)
}
