//! The rerank logic and its `Rerank` implementation.

use std::collections::BTreeMap;
use std::sync::Arc;

use proxy_api::{Cx, Status, pb};
use world::World;

use crate::{Config, Error, PageRules};

/// An item placed on the page.
#[derive(Clone, Debug, PartialEq)]
pub struct Pick {
    /// Item id.
    pub item: u64,
    /// Its relevance score from fine-rank.
    pub score: f32,
    /// Recall channel, carried through.
    pub channel: String,
    /// Fine-rank's reserve: placed only when no other candidate satisfies
    /// the caps.
    pub reserve: bool,
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

    /// Lambda for `params`: the config default unless an experiment sets it.
    pub fn lambda(&self, params: &BTreeMap<String, String>) -> Result<f32, Error> {
        let Some(v) = params.get("rerank.lambda") else {
            return Ok(self.config.lambda);
        };
        match v.parse::<f32>() {
            Ok(l) if (0.0..=1.0).contains(&l) => Ok(l),
            _ => Err(Error::BadParam {
                key: "rerank.lambda",
                value: v.clone(),
            }),
        }
    }

    /// Greedy MMR: repeatedly places the candidate maximising
    /// `lambda * relevance - (1 - lambda) * max similarity to the list`,
    /// where relevance is the fine-rank score scaled to `[0, 1]` plus the
    /// tenant's freshness boost and similarity is the dot product of item
    /// embeddings.
    ///
    /// The category and creator caps hold within every page: each window of
    /// `page_size` places (the whole list when it is 0). Fine-rank's reserve
    /// candidates are placed only when no other candidate satisfies the
    /// caps. The caps are relaxed only when no candidate left in the pool
    /// satisfies them, and then only for the rest of that page; the answer
    /// says how many pages that was.
    pub fn compose(
        &self,
        lambda: f32,
        rules: &PageRules,
        limit: usize,
        page_size: usize,
        pool: Vec<Pick>,
    ) -> Composed {
        // Relevance is scaled over the main pool: the reserve, kept only for
        // the caps, must not stretch the scale the main candidates compete on.
        let (lo, hi) = pool
            .iter()
            .filter(|p| !p.reserve)
            .fold((f32::MAX, f32::MIN), |(lo, hi), p| {
                (lo.min(p.score), hi.max(p.score))
            });
        let span = if hi > lo { hi - lo } else { 1.0 };
        struct Slot<'w> {
            pick: Option<Pick>,
            relevance: f32,
            embedding: Option<&'w [f32]>,
            category: u32,
            creator: u32,
            max_sim: f32,
        }
        let mut slots: Vec<Slot<'_>> = pool
            .into_iter()
            .filter_map(|p| {
                let item = self.world.item(p.item)?;
                let relevance = ((p.score - lo) / span).max(0.0)
                    + rules.freshness_boost * (-item.age_days / 7.0).exp();
                Some(Slot {
                    relevance,
                    embedding: self.world.item_embedding(p.item),
                    category: item.category,
                    creator: item.creator,
                    max_sim: 0.0,
                    pick: Some(p),
                })
            })
            .collect();
        let window = if page_size == 0 {
            limit.max(1)
        } else {
            page_size
        };
        let mut per_category: BTreeMap<u32, u32> = BTreeMap::new();
        let mut per_creator: BTreeMap<u32, u32> = BTreeMap::new();
        // `limit` comes from the request: the page can never hold more than
        // the pool, so a huge one must not reserve memory for itself.
        let mut page = Vec::with_capacity(limit.min(slots.len()));
        let mut relaxed_pages = 0;
        let mut relaxed_at = 0;
        let mut capped = true;
        while page.len() < limit {
            // The best candidate within the caps, from the main pool if one
            // qualifies, else from the reserve.
            let mut best: Option<(usize, f32, bool)> = None;
            for (i, s) in slots.iter().enumerate() {
                let Some(pick) = &s.pick else {
                    continue;
                };
                if capped
                    && (per_category.get(&s.category).copied().unwrap_or(0)
                        >= rules.max_per_category
                        || per_creator.get(&s.creator).copied().unwrap_or(0)
                            >= rules.max_per_creator)
                {
                    continue;
                }
                let value = lambda * s.relevance - (1.0 - lambda) * s.max_sim;
                let better = match best {
                    None => true,
                    Some((_, v, reserve)) => {
                        (reserve && !pick.reserve) || (reserve == pick.reserve && value > v)
                    }
                };
                if better {
                    best = Some((i, value, pick.reserve));
                }
            }
            let Some((i, _, _)) = best else {
                if capped {
                    // Nothing left satisfies the caps: fill this page
                    // without them rather than serve it short.
                    capped = false;
                    relaxed_pages += 1;
                    relaxed_at = page.len();
                    continue;
                }
                // The pool ran out; a relaxation that placed nothing
                // changed nothing.
                if page.len() == relaxed_at {
                    relaxed_pages -= 1;
                }
                break;
            };
            let Some(pick) = slots[i].pick.take() else {
                break;
            };
            *per_category.entry(slots[i].category).or_default() += 1;
            *per_creator.entry(slots[i].creator).or_default() += 1;
            if let Some(placed) = slots[i].embedding {
                for s in slots.iter_mut().filter(|s| s.pick.is_some()) {
                    if let Some(e) = s.embedding {
                        s.max_sim = s.max_sim.max(world::dot(placed, e));
                    }
                }
            }
            page.push(pick);
            // A new page starts with its own caps. (Reset here, after a
            // placement, and not at the top of the loop: there it undid the
            // relaxation of a page whose pool had run out at a page boundary,
            // and the loop never ended.)
            if page.len() % window == 0 {
                per_category.clear();
                per_creator.clear();
                capped = true;
            }
        }
        Composed {
            picks: page,
            relaxed_pages,
        }
    }
}

/// What [`RerankStage::compose`] made.
#[derive(Clone, Debug, PartialEq)]
pub struct Composed {
    /// The list, best first.
    pub picks: Vec<Pick>,
    /// Pages on which the caps had to be relaxed to fill them.
    pub relaxed_pages: usize,
}

#[proxy_api::async_trait]
impl proxy_api::Rerank for RerankStage {
    async fn rerank(
        &self,
        cx: &Cx,
        request: pb::RerankRequest,
    ) -> Result<pb::RerankResponse, Status> {
        let params = request
            .assignment
            .as_ref()
            .map(|a| a.params.clone())
            .unwrap_or_default();
        let lambda = self.lambda(&params)?;
        let rules = self.config.rules_for(cx.tenant());
        let ranked = self
            .finerank
            .rank(
                cx,
                pb::RankRequest {
                    user_id: request.user_id,
                    context: request.context,
                    assignment: request.assignment,
                    explain: request.explain,
                    constraints: request.constraints,
                },
            )
            .await?;
        let pool = ranked.items.into_iter().map(Pick::from).collect();
        let composed = self.compose(
            lambda,
            rules,
            request.limit as usize,
            request.page_size as usize,
            pool,
        );
        if composed.relaxed_pages > 0 {
            let tenant = match cx.tenant() {
                Some(t) if self.config.tenants.contains_key(t) => t,
                Some(_) => "other",
                None => "default",
            };
            proxy_api::observe::count_caps_relaxed("rerank", tenant);
            cx.note(|| {
                format!(
                    "caps relaxed on {} page(s): the allowed candidates could not fill them \
                     (max_per_category {}, max_per_creator {})",
                    composed.relaxed_pages, rules.max_per_category, rules.max_per_creator
                )
            });
        }
        let items = composed.picks.into_iter().map(Into::into).collect();
        Ok(pb::RerankResponse {
            items,
            timings: Vec::new(),
        })
    }
}

/// How a process builds the rerank stage (see [`proxy_api::StageFactory`]).
pub struct Factory;

impl proxy_api::StageFactory for Factory {
    type Service = proxy_api::RerankService;
    type Config = Config;

    fn validate(config: &Config) -> Result<(), proxy_api::ConfigError> {
        config.validate()
    }

    fn build(
        config: &Config,
        deps: &proxy_api::Deps<'_>,
    ) -> Result<Arc<dyn proxy_api::Rerank>, proxy_api::BuildError> {
        Ok(Arc::new(RerankStage::new(
            deps.resource::<World>()?,
            config.clone(),
            deps.downstream::<proxy_api::FineRankService>()?,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage() -> RerankStage {
        let cfg = world::WorldConfig {
            items: 2_000,
            categories: 5,
            creators: 50,
            dims: 16,
            ..world::WorldConfig::default()
        };
        RerankStage::new(
            Arc::new(World::generate(&cfg)),
            Config::default(),
            Arc::new(proxy_api::Unimplemented),
        )
    }

    fn pool(n: u64) -> Vec<Pick> {
        (0..n)
            .map(|i| Pick {
                item: i,
                score: 1.0 - i as f32 / n as f32,
                channel: "t".into(),
                reserve: false,
            })
            .collect()
    }

    fn loose() -> PageRules {
        PageRules {
            max_per_category: 100,
            max_per_creator: 100,
            freshness_boost: 0.0,
        }
    }

    /// `compose` on another thread, bounded: a regression to a loop that
    /// never ends fails the test instead of hanging it.
    fn compose_bounded(limit: usize, page_size: usize, pool: Vec<Pick>) -> Composed {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(stage().compose(0.5, &loose(), limit, page_size, pool));
        });
        rx.recv_timeout(std::time::Duration::from_secs(30))
            .expect("compose returns")
    }

    #[test]
    fn a_pool_that_runs_out_at_a_page_boundary_ends_the_list() {
        // Found by fuzzing: with the pool used up exactly at a page
        // boundary (or empty from the start), the caps were reset and
        // relaxed in turn forever.
        let composed = compose_bounded(100, 3, pool(6));
        assert_eq!(composed.picks.len(), 6);
        assert_eq!(composed.relaxed_pages, 0);
        let composed = compose_bounded(10, 0, Vec::new());
        assert!(composed.picks.is_empty());
        assert_eq!(composed.relaxed_pages, 0);
    }

    #[test]
    fn a_huge_limit_is_cut_to_the_pool() {
        // A request's `limit` of u32::MAX once reserved ~170 GB up front
        // and aborted the process.
        let composed = stage().compose(0.5, &loose(), u32::MAX as usize, 0, pool(30));
        assert_eq!(composed.picks.len(), 30);
    }

    #[test]
    fn caps_hold_and_page_is_cut() {
        let s = stage();
        let rules = PageRules {
            max_per_category: 2,
            max_per_creator: 1,
            freshness_boost: 0.0,
        };
        let page = s.compose(1.0, &rules, 8, 0, pool(200)).picks;
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
    fn caps_hold_within_every_page_of_a_long_list() {
        let s = stage();
        let rules = PageRules {
            max_per_category: 2,
            max_per_creator: 1,
            freshness_boost: 0.0,
        };
        // Five categories, caps of two: a page of 10 is full under the caps,
        // so none is relaxed over 10 pages.
        let composed = s.compose(1.0, &rules, 100, 10, pool(400));
        assert_eq!(composed.picks.len(), 100);
        assert_eq!(composed.relaxed_pages, 0);
        for page in composed.picks.chunks(10) {
            let mut cats = BTreeMap::new();
            for p in page {
                *cats
                    .entry(s.world.item(p.item).map(|i| i.category))
                    .or_insert(0) += 1;
            }
            assert!(cats.values().all(|n| *n <= 2), "{cats:?}");
        }
    }

    #[test]
    fn narrow_pool_still_fills_the_page() {
        let s = stage();
        let one_category: Vec<Pick> = s
            .world
            .category_items(0)
            .iter()
            .take(50)
            .map(|id| Pick {
                item: *id,
                score: 0.5,
                channel: "t".into(),
                reserve: false,
            })
            .collect();
        let rules = PageRules {
            max_per_category: 2,
            max_per_creator: 1,
            freshness_boost: 0.0,
        };
        let composed = s.compose(0.7, &rules, 10, 10, one_category);
        assert_eq!(composed.picks.len(), 10);
        assert_eq!(composed.relaxed_pages, 1);
    }

    #[test]
    fn pure_relevance_keeps_score_order() {
        let s = stage();
        let page = s.compose(1.0, &loose(), 10, 0, pool(200)).picks;
        assert_eq!(
            page.iter().map(|p| p.item).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn lower_lambda_diversifies() {
        let s = stage();
        let spread = |lambda| {
            let page = s.compose(lambda, &loose(), 10, 0, pool(200)).picks;
            let e: Vec<&[f32]> = page
                .iter()
                .filter_map(|p| s.world.item_embedding(p.item))
                .collect();
            let mut sim = 0.0;
            for i in 0..e.len() {
                for j in 0..i {
                    sim += world::dot(e[i], e[j]);
                }
            }
            sim
        };
        assert!(
            spread(0.3) < spread(1.0),
            "{} vs {}",
            spread(0.3),
            spread(1.0)
        );
    }

    #[test]
    fn bad_param_is_refused() {
        let s = stage();
        let mut params = BTreeMap::new();
        params.insert("rerank.lambda".to_owned(), "2".to_owned());
        assert!(s.lambda(&params).is_err());
    }
}
