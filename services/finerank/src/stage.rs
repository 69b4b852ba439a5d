//! The fine-rank logic and its `FineRank` implementation.

use std::collections::BTreeMap;
use std::sync::Arc;

use proxy_api::{CallContext, SelfTimer, Stage, pb};
use world::{World, unit};

use crate::{Config, Error};

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

/// The features of one candidate, in model order.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Features(pub [f32; 5]);

/// A linear model over [`Features`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Model {
    /// One weight per feature.
    weights: [f32; 5],
    /// Added to every score.
    bias: f32,
}

impl Model {
    /// Known model versions.
    pub const NAMES: [&'static str; 2] = ["v1", "v2"];

    /// The model with this version name.
    pub fn named(name: &str) -> Option<Model> {
        // Features: popularity, freshness, category affinity, taste, recall score.
        match name {
            "v1" => Some(Model {
                weights: [0.35, 0.15, 0.30, 0.15, 0.05],
                bias: 0.0,
            }),
            "v2" => Some(Model {
                weights: [0.20, 0.25, 0.35, 0.15, 0.05],
                bias: 0.0,
            }),
            _ => None,
        }
    }

    /// Scores a batch of feature rows.
    pub fn score(&self, rows: &[Features]) -> Vec<f32> {
        rows.iter()
            .map(|f| {
                self.bias
                    + f.0
                        .iter()
                        .zip(&self.weights)
                        .map(|(x, w)| x * w)
                        .sum::<f32>()
            })
            .collect()
    }
}

/// One scored candidate.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// Item id.
    pub item: u64,
    /// Model score.
    pub score: f32,
    /// Recall channel, carried through.
    pub channel: String,
}

/// The fine-rank stage.
pub struct FineRankStage {
    /// The shared catalogue.
    world: Arc<World>,
    /// Defaults.
    config: Config,
    /// Where candidates come from, bound local or grpc.
    recall: Arc<dyn proxy_api::Recall>,
}

impl FineRankStage {
    /// A fine-rank stage reading candidates from `recall`.
    pub fn new(world: Arc<World>, config: Config, recall: Arc<dyn proxy_api::Recall>) -> Self {
        Self {
            world,
            config,
            recall,
        }
    }

    fn params(&self, query: &Query) -> Result<(Model, usize), Error> {
        let model_name = query
            .params
            .get("finerank.model")
            .unwrap_or(&self.config.model);
        let model = Model::named(model_name).ok_or_else(|| Error::BadParam {
            key: "finerank.model",
            value: model_name.clone(),
            why: format!("known models: {}", Model::NAMES.join(", ")),
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

    /// Features of every candidate for `query`.
    pub fn features(&self, query: &Query, candidates: &[pb::ScoredItem]) -> Vec<Features> {
        let categories = self.world.config().categories as usize;
        let mut affinity = vec![0f32; categories];
        let mut known = 0f32;
        for id in &query.recent {
            if let Some(item) = self.world.item(*id) {
                affinity[item.category as usize] += 1.0;
                known += 1.0;
            }
        }
        if known > 0.0 {
            affinity.iter_mut().for_each(|a| *a /= known);
        }
        let seed = self.world.config().seed;
        candidates
            .iter()
            .map(|c| match self.world.item(c.item_id) {
                Some(item) => Features([
                    item.popularity.sqrt(),
                    (-item.age_days / 60.0).exp(),
                    affinity[item.category as usize],
                    unit(seed, &[20, query.user, c.item_id]) as f32,
                    c.score,
                ]),
                None => Features::default(),
            })
            .collect()
    }

    /// Scores `candidates` and keeps the best, best first (ties by item id).
    pub fn rank(
        &self,
        query: &Query,
        candidates: Vec<pb::ScoredItem>,
    ) -> Result<Vec<Scored>, Error> {
        let (model, keep) = self.params(query)?;
        let scores = model.score(&self.features(query, &candidates));
        let mut scored: Vec<Scored> = candidates
            .into_iter()
            .zip(scores)
            .map(|(c, score)| Scored {
                item: c.item_id,
                score,
                channel: c.channel,
            })
            .collect();
        scored.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
        scored.truncate(keep);
        Ok(scored)
    }
}

#[proxy_api::async_trait]
impl proxy_api::FineRank for FineRankStage {
    async fn rank(
        &self,
        request: tonic::Request<pb::RankRequest>,
    ) -> Result<tonic::Response<pb::RankResponse>, tonic::Status> {
        let mut timer = SelfTimer::start();
        let ctx = CallContext::of(&request);
        let request = request.into_inner();
        let query = Query::from_pb(&request);
        let recalled = timer
            .downstream(self.recall.recall(ctx.request(pb::RecallRequest {
                user_id: request.user_id,
                context: request.context,
                assignment: request.assignment,
                explain: request.explain,
            })))
            .await?
            .into_inner();
        let items = self
            .rank(&query, recalled.items)?
            .into_iter()
            .map(Into::into)
            .collect();
        let mut timings = recalled.timings;
        timer.record(Stage::FineRank, request.explain, &mut timings);
        Ok(tonic::Response::new(pb::RankResponse { items, timings }))
    }
}
