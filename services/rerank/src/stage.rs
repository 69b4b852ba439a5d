//! The rerank logic and its `Rerank` implementation.

use std::collections::BTreeMap;
use std::sync::Arc;

use proxy_api::{CallContext, SelfTimer, Stage, pb};
use world::World;

use crate::{Config, Error};

/// What rerank needs from a request.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// Items wanted.
    pub limit: usize,
    /// Effective experiment parameters.
    pub params: BTreeMap<String, String>,
}

/// Page rules in effect for one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rules {
    /// MMR trade-off.
    pub lambda: f32,
    /// Per-category cap.
    pub max_per_category: usize,
    /// Per-creator cap.
    pub max_per_creator: usize,
}

/// An item placed on the page.
#[derive(Clone, Debug, PartialEq)]
pub struct Pick {
    /// Item id.
    pub item: u64,
    /// Its relevance score from fine-rank.
    pub score: f32,
    /// Recall channel, carried through.
    pub channel: String,
}

/// The rerank stage.
pub struct RerankStage {
    /// The shared catalogue (category and creator of each item).
    world: Arc<World>,
    /// Defaults.
    config: Config,
    /// Where scored candidates come from, bound local or grpc.
    finerank: Arc<dyn proxy_api::FineRank>,
}

impl RerankStage {
    /// A rerank stage over `finerank`.
    pub fn new(world: Arc<World>, config: Config, finerank: Arc<dyn proxy_api::FineRank>) -> Self {
        Self {
            world,
            config,
            finerank,
        }
    }

    /// The rules for `params`: config defaults overridden by experiments.
    pub fn rules(&self, params: &BTreeMap<String, String>) -> Result<Rules, Error> {
        fn get<T: std::str::FromStr>(
            params: &BTreeMap<String, String>,
            key: &'static str,
            default: T,
        ) -> Result<T, Error> {
            params.get(key).map_or(Ok(default), |v| {
                v.parse().map_err(|_| Error::BadParam {
                    key,
                    value: v.clone(),
                })
            })
        }
        let rules = Rules {
            lambda: get(params, "rerank.lambda", self.config.lambda)?,
            max_per_category: get(
                params,
                "rerank.max_per_category",
                self.config.max_per_category as usize,
            )?,
            max_per_creator: get(
                params,
                "rerank.max_per_creator",
                self.config.max_per_creator as usize,
            )?,
        };
        if !(0.0..=1.0).contains(&rules.lambda) {
            return Err(Error::BadParam {
                key: "rerank.lambda",
                value: rules.lambda.to_string(),
            });
        }
        Ok(rules)
    }

    /// Greedy MMR: repeatedly takes the candidate maximising
    /// `lambda * score - (1 - lambda) * redundancy`, where redundancy is the
    /// share of the page already in its category, skipping candidates over a
    /// cap, until `limit` items are placed.
    pub fn compose(&self, rules: Rules, limit: usize, pool: Vec<Pick>) -> Vec<Pick> {
        let mut pool: Vec<Option<Pick>> = pool.into_iter().map(Some).collect();
        let mut per_category: BTreeMap<u32, usize> = BTreeMap::new();
        let mut per_creator: BTreeMap<u32, usize> = BTreeMap::new();
        let mut page = Vec::with_capacity(limit);
        while page.len() < limit {
            let mut best: Option<(usize, f32)> = None;
            for (i, slot) in pool.iter().enumerate() {
                let Some(pick) = slot else { continue };
                let Some(item) = self.world.item(pick.item) else {
                    continue;
                };
                let in_category = per_category.get(&item.category).copied().unwrap_or(0);
                if in_category >= rules.max_per_category
                    || per_creator.get(&item.creator).copied().unwrap_or(0) >= rules.max_per_creator
                {
                    continue;
                }
                let redundancy = if page.is_empty() {
                    0.0
                } else {
                    in_category as f32 / page.len() as f32
                };
                let value = rules.lambda * pick.score - (1.0 - rules.lambda) * redundancy;
                if best.is_none_or(|(_, v)| value > v) {
                    best = Some((i, value));
                }
            }
            let Some((i, _)) = best else { break };
            let Some(pick) = pool[i].take() else { break };
            if let Some(item) = self.world.item(pick.item) {
                *per_category.entry(item.category).or_default() += 1;
                *per_creator.entry(item.creator).or_default() += 1;
            }
            page.push(pick);
        }
        page
    }
}

#[proxy_api::async_trait]
impl proxy_api::Rerank for RerankStage {
    async fn rerank(
        &self,
        request: tonic::Request<pb::RerankRequest>,
    ) -> Result<tonic::Response<pb::RerankResponse>, tonic::Status> {
        let mut timer = SelfTimer::start();
        let ctx = CallContext::of(&request);
        let request = request.into_inner();
        let params = request
            .assignment
            .as_ref()
            .map(|a| a.params.clone())
            .unwrap_or_default();
        let rules = self.rules(&params)?;
        let ranked = timer
            .downstream(self.finerank.rank(ctx.request(pb::RankRequest {
                user_id: request.user_id,
                context: request.context,
                assignment: request.assignment,
                explain: request.explain,
            })))
            .await?
            .into_inner();
        let pool = ranked.items.into_iter().map(Pick::from).collect();
        let items = self
            .compose(rules, request.limit as usize, pool)
            .into_iter()
            .map(Into::into)
            .collect();
        let mut timings = ranked.timings;
        timer.record(Stage::Rerank, request.explain, &mut timings);
        Ok(tonic::Response::new(pb::RerankResponse { items, timings }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoFineRank;

    #[proxy_api::async_trait]
    impl proxy_api::FineRank for NoFineRank {
        async fn rank(
            &self,
            _: tonic::Request<pb::RankRequest>,
        ) -> Result<tonic::Response<pb::RankResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("not in this test"))
        }
    }

    fn stage() -> RerankStage {
        let cfg = world::WorldConfig {
            items: 2_000,
            categories: 5,
            creators: 50,
            ..world::WorldConfig::default()
        };
        RerankStage::new(
            Arc::new(World::generate(&cfg)),
            Config::default(),
            Arc::new(NoFineRank),
        )
    }

    fn pool(n: u64) -> Vec<Pick> {
        (0..n)
            .map(|i| Pick {
                item: i,
                score: 1.0 - i as f32 / n as f32,
                channel: "t".into(),
            })
            .collect()
    }

    #[test]
    fn caps_hold_and_page_is_cut() {
        let s = stage();
        let rules = Rules {
            lambda: 1.0,
            max_per_category: 2,
            max_per_creator: 1,
        };
        let page = s.compose(rules, 8, pool(200));
        assert_eq!(page.len(), 8);
        let mut cats = BTreeMap::new();
        for p in &page {
            *cats
                .entry(s.world.item(p.item).map(|i| i.category))
                .or_insert(0) += 1;
        }
        assert!(cats.values().all(|n| *n <= 2));
    }

    #[test]
    fn lower_lambda_diversifies() {
        let s = stage();
        let distinct = |lambda| {
            let page = s.compose(
                Rules {
                    lambda,
                    max_per_category: 100,
                    max_per_creator: 100,
                },
                10,
                pool(200),
            );
            page.iter()
                .filter_map(|p| s.world.item(p.item).map(|i| i.category))
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        };
        assert!(distinct(0.2) >= distinct(1.0));
        assert_eq!(distinct(0.2), 5);
    }

    #[test]
    fn bad_param_is_refused() {
        let s = stage();
        let mut params = BTreeMap::new();
        params.insert("rerank.lambda".to_owned(), "2".to_owned());
        assert!(s.rules(&params).is_err());
    }
}
