//! Builds the registry for a plan: binds the remote stages, then builds every
//! hosted stage through its crate's factory (see `stages.rs`), callees first,
//! so each finds its downstream already bound. Knows no stage crate by name.

use std::sync::Arc;

use proxy_api::overload::Bulkheads;
use proxy_api::tls::{ClientTls, Material};
use proxy_api::{BuildError, Registry, RegistryError, Resources, RuntimeOptions};
use world::{World, WorldDir};

use crate::config::{Config, Plan};

/// A stage or its data could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    /// Binding a slot failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The world files could not be loaded.
    #[error("world.dir: {0}")]
    World(#[from] world::FileError),
    /// A stage refused its config or data.
    #[error("{stage}: {message}")]
    Stage {
        /// The stage's name.
        stage: &'static str,
        /// What it said.
        message: String,
    },
    /// The TLS files could not be loaded.
    #[error("{0}")]
    Tls(String),
    /// The compute pool's threads could not be started.
    #[error("process.compute_threads: cannot start the compute pool: {0}")]
    ComputePool(std::io::Error),
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

/// The shared data stages may ask for: the world (made on first use, so a
/// process hosting no stage that reads it never builds it) and, with
/// `world.dir`, where its files are.
fn resources(config: &Config, world: Option<Arc<World>>) -> Resources {
    let mut resources = Resources::default();
    match world {
        Some(world) => resources.insert(world),
        None => {
            let config = config.clone();
            resources.lazy(move || self::world(&config).map_err(BuildError::new));
        }
    }
    if let Some(dir) = &config.world.dir {
        resources.insert(Arc::new(WorldDir(dir.into())));
    }
    resources
}

/// The registry for `plan`. Must run inside a tokio runtime.
pub fn build(config: &Config, plan: &Plan) -> Result<Registry, WiringError> {
    build_with(config, plan, None)
}

/// As [`build`], with a world the caller already has (tests share one).
pub fn build_with(
    config: &Config,
    plan: &Plan,
    world: Option<Arc<World>>,
) -> Result<Registry, WiringError> {
    let shadows =
        proxy_api::shadow::Shadows::new(config.shadow.clone()).map_err(RegistryError::from)?;
    let recorders = config
        .record
        .iter()
        .filter_map(|(name, r)| Some((proxy_api::Stage::from_name(name)?, r.clone())))
        .collect();
    let recorders = proxy_api::record::Recorders::new(&recorders).map_err(RegistryError::from)?;
    // Bulkheads for the hosted stages only: a remote stage's calls are
    // bounded by its own process.
    let bulkheads = Bulkheads::new(
        plan.stage_limits
            .iter()
            .filter(|(stage, _)| plan.hosts(*stage))
            .copied(),
        plan.compute_threads,
    )
    .map_err(WiringError::ComputePool)?;
    let tls = match config.process.tls.enabled {
        false => None,
        true => {
            let material = Material::load(&config.process.tls, "process.tls")
                .map_err(|e| WiringError::Tls(e.to_string()))?;
            Some(ClientTls::new(material).map_err(|e| WiringError::Tls(e.to_string()))?)
        }
    };
    let mut registry = Registry::with_options(RuntimeOptions {
        observe_local_calls: config.telemetry.observe_local_calls,
        shadows: Arc::new(shadows),
        recorders: Arc::new(recorders),
        bulkheads,
        tls,
    });
    let limits = config.process.limits;
    for (stage, remote) in &plan.remotes {
        registry.bind_remote(*stage, &with_tls(&registry, remote), limits)?;
    }
    // A stage's routes are in place before anything that calls it is built:
    // callers keep the stub they are given.
    let route = |registry: &mut Registry, stage: proxy_api::Stage| -> Result<(), WiringError> {
        if let Some(r) = plan.routes.iter().find(|r| r.stage == stage) {
            let pools = pools_with_tls(registry, &r.pools);
            for line in registry.route(stage, &r.rules, &pools, limits)? {
                tracing::info!(target: "feeds::routes", "{line}");
            }
        }
        Ok(())
    };
    for r in plan.routes.iter().filter(|r| !plan.hosts(r.stage)) {
        route(&mut registry, r.stage)?;
    }
    let resources = resources(config, world);
    for stage in proxy_api::Stage::ALL
        .iter()
        .rev()
        .filter(|s| plan.hosts(**s))
    {
        let started = std::time::Instant::now();
        crate::config::provide(*stage, config, &mut registry, &resources).map_err(|e| {
            WiringError::Stage {
                stage: stage.name(),
                message: e.to_string(),
            }
        })?;
        route(&mut registry, *stage)?;
        tracing::info!(
            stage = stage.name(),
            seconds = started.elapsed().as_secs_f32(),
            "stage ready"
        );
    }
    Ok(registry)
}

/// Applies the routes and pools of a reloaded `plan` to a running registry:
/// every stage in it must have been routed since start-up (checked for all
/// before any table changes); a stage routed before and absent now goes back
/// to its default target. Returns the new tables described, for logs.
pub fn reload(
    registry: &Registry,
    config: &Config,
    plan: &Plan,
    running: &Plan,
) -> Result<Vec<String>, WiringError> {
    for r in &plan.routes {
        if !registry.is_routed(r.stage) {
            return Err(RegistryError::NotRouted(r.stage.name()).into());
        }
    }
    let limits = config.process.limits;
    let mut lines = Vec::new();
    // A rollout owns its stage's table until it ends (its rules are read
    // at start-up).
    let rolling = |stage: proxy_api::Stage| running.rollouts.contains(&stage);
    for r in &plan.routes {
        if rolling(r.stage) {
            lines.push(format!(
                "{}: kept: its table is a rollout's (restart to change the rollout or its rules)",
                r.stage.name()
            ));
            continue;
        }
        let pools = pools_with_tls(registry, &r.pools);
        lines.extend(registry.reload_route(r.stage, &r.rules, &pools, limits)?);
    }
    for old in running
        .routes
        .iter()
        .filter(|o| !plan.routes.iter().any(|r| r.stage == o.stage) && !rolling(o.stage))
    {
        let mut pools = std::collections::BTreeMap::new();
        if let Some((_, remote)) = plan.remotes.iter().find(|(s, _)| *s == old.stage) {
            pools.insert(
                proxy_api::route::DEFAULT_POOL.to_owned(),
                with_tls(registry, remote),
            );
        }
        lines.extend(registry.reload_route(old.stage, &[], &pools, limits)?);
    }
    Ok(lines)
}

/// `remote` with the process's mutual TLS attached, when it has any.
fn with_tls(registry: &Registry, remote: &proxy_api::RemoteConfig) -> proxy_api::RemoteConfig {
    let mut remote = remote.clone();
    remote.tls.clone_from(&registry.options().tls);
    for pool in remote.pools.values_mut() {
        pool.tls.clone_from(&registry.options().tls);
    }
    remote
}

/// Every pool of `pools` with the process's mutual TLS attached.
pub(crate) fn pools_with_tls(
    registry: &Registry,
    pools: &std::collections::BTreeMap<String, proxy_api::RemoteConfig>,
) -> std::collections::BTreeMap<String, proxy_api::RemoteConfig> {
    pools
        .iter()
        .map(|(name, pool)| (name.clone(), with_tls(registry, pool)))
        .collect()
}
