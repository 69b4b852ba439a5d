//! The fine-rank logic and its `FineRank` implementation.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use proxy_api::{Cx, Status, pb};
use world::World;

use crate::features::FeatureBuilder;
use crate::{Config, Error, Model, TrainParams, train};

/// Which recall channel produced a candidate (a feature).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChannelTag {
    Ann,
    I2i,
    Popular,
    Other,
}

/// What fine-rank needs from a request.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// Numeric user key.
    pub user: u64,
    /// Recent item ids, newest first.
    pub recent: Vec<u64>,
    /// Effective experiment parameters.
    pub params: BTreeMap<String, String>,
}

/// One scored candidate.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// Item id.
    pub item: u64,
    /// Model score (probability of engagement).
    pub score: f32,
    /// Recall channel, carried through.
    pub channel: String,
    /// Kept only so rerank can satisfy its caps (see [`FineRankStage::rank`]).
    pub reserve: bool,
}

/// The model versions experiments can choose from.
#[derive(Clone, Debug, PartialEq)]
pub struct Models(BTreeMap<String, Model>);

impl Models {
    /// Trains every shipped version on `world` (deterministic, about a second
    /// for the default world).
    pub fn train(world: &World) -> Self {
        Self(
            TrainParams::versions()
                .iter()
                .map(|p| (p.version.clone(), train(world, p)))
                .collect(),
        )
    }

    /// Loads `<dir>/<version>.json` for every shipped version.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let mut models = BTreeMap::new();
        for p in TrainParams::versions() {
            let model = Model::load(&dir.join(format!("{}.json", p.version)))?;
            models.insert(p.version, model);
        }
        Ok(Self(models))
    }

    /// The model of one version.
    pub fn get(&self, version: &str) -> Option<&Model> {
        self.0.get(version)
    }

    /// Every model, by version.
    pub fn all(&self) -> impl Iterator<Item = &Model> {
        self.0.values()
    }
}

/// The fine-rank stage.
pub struct FineRankStage {
    /// The shared catalogue.
    world: Arc<World>,
    /// Defaults.
    config: Config,
    /// Model versions.
    models: Models,
    /// Where candidates come from, bound local or grpc.
    recall: Arc<dyn proxy_api::Recall>,
}

impl FineRankStage {
    /// A fine-rank stage reading candidates from `recall`; loads the models
    /// from `config.model_dir` or trains them from the world.
    pub fn new(
        world: Arc<World>,
        config: Config,
        recall: Arc<dyn proxy_api::Recall>,
    ) -> Result<Self, Error> {
        let models = match &config.model_dir {
            Some(dir) => Models::load(Path::new(dir))?,
            None => Models::train(&world),
        };
        Ok(Self {
            world,
            config,
            models,
            recall,
        })
    }

    fn params(&self, query: &Query) -> Result<(&Model, usize), Error> {
        let name = query
            .params
            .get("finerank.model")
            .unwrap_or(&self.config.model);
        let model = self.models.get(name).ok_or_else(|| Error::BadParam {
            key: "finerank.model",
            value: name.clone(),
            why: "no such model version".into(),
        })?;
        let keep = match query.params.get("finerank.keep") {
            None => self.config.keep as usize,
            Some(v) => v
                .parse::<u32>()
                .map(|k| k.clamp(1, 5_000) as usize)
                .map_err(|e| Error::BadParam {
                    key: "finerank.keep",
                    value: v.clone(),
                    why: e.to_string(),
                })?,
        };
        Ok((model, keep))
    }

    /// Scores `candidates` and keeps the best `keep`, best first (ties by
    /// item id), followed by the per-category reserve (best first).
    pub fn rank(
        &self,
        query: &Query,
        candidates: Vec<pb::ScoredItem>,
    ) -> Result<Vec<Scored>, Error> {
        let (model, keep) = self.params(query)?;
        let builder = FeatureBuilder::new(&self.world, query.user, &query.recent);
        let rows: Vec<_> = candidates
            .iter()
            .map(|c| builder.row(c.item_id, ChannelTag::parse(&c.channel)))
            .collect();
        let scores = model.score(&rows);
        let mut scored: Vec<Scored> = candidates
            .into_iter()
            .zip(scores)
            .map(|(c, score)| Scored {
                item: c.item_id,
                score,
                channel: c.channel,
                reserve: false,
            })
            .collect();
        scored.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
        let explore = self.explore(query, keep)?;
        if explore > 0 {
            explore_slots(&mut scored, keep, explore, request_entropy());
        }
        Ok(self.with_reserve(scored, keep))
    }

    /// How many of the kept slots this request gives to exploration
    /// (experiment key `finerank.explore`; 0 by default).
    fn explore(&self, query: &Query, keep: usize) -> Result<usize, Error> {
        match query.params.get("finerank.explore") {
            None => Ok(0),
            Some(v) => v
                .parse::<u32>()
                .map(|n| (n as usize).min(keep))
                .map_err(|e| Error::BadParam {
                    key: "finerank.explore",
                    value: v.clone(),
                    why: e.to_string(),
                }),
        }
    }

    /// The best `keep` of `scored` (best first), then the reserve: for every
    /// category, its best candidates beyond those until it has
    /// `reserve_per_category` in all, marked `reserve`.
    fn with_reserve(&self, mut scored: Vec<Scored>, keep: usize) -> Vec<Scored> {
        if scored.len() <= keep {
            return scored;
        }
        let rest = scored.split_off(keep);
        let per = self.config.reserve_per_category as usize;
        if per == 0 {
            return scored;
        }
        let category = |s: &Scored| self.world.item(s.item).map_or(u32::MAX, |i| i.category);
        let mut count: BTreeMap<u32, usize> = BTreeMap::new();
        for s in &scored {
            *count.entry(category(s)).or_default() += 1;
        }
        for mut s in rest {
            let n = count.entry(category(&s)).or_default();
            if *n < per {
                *n += 1;
                s.reserve = true;
                scored.push(s);
            }
        }
        scored
    }
}

/// Exploration: `n` random slots among the best `keep` go to random
/// candidates from beyond them, which take the displaced candidates' scores
/// (so they reach rerank's page like the items they replace). Each request
/// explores differently: that is the point, and what makes answers vary
/// between two identical calls.
fn explore_slots(scored: &mut [Scored], keep: usize, n: usize, seed: u64) {
    let keep = keep.min(scored.len());
    let beyond = scored.len() - keep;
    if keep == 0 || beyond == 0 {
        return;
    }
    // splitmix64: plenty for choosing slots.
    let mut state = seed;
    let mut below = |n: usize| {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    };
    for _ in 0..n.min(beyond) {
        let slot = below(keep);
        let pick = keep + below(beyond);
        let score = scored[slot].score;
        scored.swap(slot, pick);
        scored[slot].score = score;
        scored[slot].channel = "explore".into();
    }
}

/// A seed no two requests share.
fn request_entropy() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[proxy_api::async_trait]
impl proxy_api::FineRank for FineRankStage {
    async fn rank(&self, cx: &Cx, request: pb::RankRequest) -> Result<pb::RankResponse, Status> {
        let query = Query::from_pb(&request)?;
        let recalled = self
            .recall
            .recall(
                cx,
                pb::RecallRequest {
                    user_id: request.user_id,
                    context: request.context,
                    assignment: request.assignment,
                    explain: request.explain,
                    constraints: request.constraints,
                },
            )
            .await?;
        let items = self
            .rank(&query, recalled.items)?
            .into_iter()
            .map(Into::into)
            .collect();
        Ok(pb::RankResponse {
            items,
            timings: Vec::new(),
        })
    }
}

/// How a process builds the fine-rank stage (see [`proxy_api::StageFactory`]).
pub struct Factory;

impl proxy_api::StageFactory for Factory {
    type Service = proxy_api::FineRankService;
    type Config = Config;

    fn validate(config: &Config) -> Result<(), proxy_api::ConfigError> {
        config.validate()
    }

    fn build(
        config: &Config,
        deps: &proxy_api::Deps<'_>,
    ) -> Result<Arc<dyn proxy_api::FineRank>, proxy_api::BuildError> {
        let stage = FineRankStage::new(
            deps.resource::<World>()?,
            config.clone(),
            deps.downstream::<proxy_api::RecallService>()?,
        )
        .map_err(proxy_api::BuildError::new)?;
        Ok(Arc::new(stage))
    }
}

#[cfg(test)]
mod tests {
    use super::{Scored, explore_slots};

    fn list(n: u64) -> Vec<Scored> {
        (0..n)
            .map(|i| Scored {
                item: i,
                score: 1.0 - i as f32 / 100.0,
                channel: "ann".into(),
                reserve: false,
            })
            .collect()
    }

    #[test]
    fn exploration_swaps_kept_slots_with_candidates_beyond_them() {
        let (keep, n) = (20, 3);
        let mut scored = list(50);
        explore_slots(&mut scored, keep, n, 7);
        let explored: Vec<&Scored> = scored[..keep]
            .iter()
            .filter(|s| s.channel == "explore")
            .collect();
        assert!(
            (1..=n).contains(&explored.len()),
            "{} slots explored",
            explored.len()
        );
        // Every explored slot now holds an item from beyond the kept list,
        // at the score of the slot, so the order by score stays as it was.
        assert!(explored.iter().all(|s| s.item >= keep as u64));
        let scores: Vec<f32> = scored[..keep].iter().map(|s| s.score).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]));
        // Nothing is lost or repeated.
        let mut items: Vec<u64> = scored.iter().map(|s| s.item).collect();
        items.sort_unstable();
        assert_eq!(items, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn the_seed_decides_and_nothing_to_swap_changes_nothing() {
        let run = |seed| {
            let mut s = list(50);
            explore_slots(&mut s, 20, 3, seed);
            s.iter().map(|x| x.item).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        let mut short = list(10);
        explore_slots(&mut short, 20, 3, 1);
        assert!(
            short
                .iter()
                .enumerate()
                .all(|(i, s)| s.item == i as u64 && s.channel == "ann")
        );
        let mut none = list(50);
        explore_slots(&mut none, 20, 0, 1);
        assert!(none.iter().all(|s| s.channel == "ann"));
    }
}
