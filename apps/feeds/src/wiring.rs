//! The one place that knows the concrete stage crates: builds the registry
//! for a plan, binding remote stages and providing hosted ones, callee first
//! so every hosted stage finds its downstream already bound.

use std::sync::Arc;

use proxy_api::{Registry, RegistryError, Stage};
use world::World;

use crate::config::{Config, Plan};

/// Stages that read the catalogue; a process hosting none of them skips it.
const READS_WORLD: [Stage; 4] = [
    Stage::Business,
    Stage::Rerank,
    Stage::FineRank,
    Stage::Recall,
];

/// The registry for `plan`. Generates the world once, shared by every hosted
/// stage, if any of them reads it. Must run inside a tokio runtime.
pub fn build(config: &Config, plan: &Plan) -> Result<Registry, RegistryError> {
    let world = READS_WORLD
        .iter()
        .any(|s| plan.hosts(*s))
        .then(|| Arc::new(World::generate(&config.world)));
    build_with(config, plan, world)
}

/// As [`build`], with a world the caller already has (tests share one).
pub fn build_with(
    config: &Config,
    plan: &Plan,
    world: Option<Arc<World>>,
) -> Result<Registry, RegistryError> {
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
        match stage {
            Stage::Recall => registry.provide_recall(Arc::new(recall::RecallStage::new(
                world()?,
                config.recall.clone(),
            )))?,
            Stage::FineRank => {
                let stage = finerank::FineRankStage::new(
                    world()?,
                    config.finerank.clone(),
                    registry.recall()?,
                );
                registry.provide_finerank(Arc::new(stage))?
            }
            Stage::Rerank => {
                let stage =
                    rerank::RerankStage::new(world()?, config.rerank.clone(), registry.finerank()?);
                registry.provide_rerank(Arc::new(stage))?
            }
            Stage::Split => registry.provide_split(Arc::new(split::SplitStage::new(
                config.split.clone(),
                registry.rerank()?,
            )))?,
            Stage::Business => {
                let stage = business::BusinessStage::new(
                    world()?,
                    config.business.clone(),
                    registry.split()?,
                );
                registry.provide_business(Arc::new(stage))?
            }
        }
    }
    Ok(registry)
}
