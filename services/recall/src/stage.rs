//! The recall logic and its `Recall` implementation.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use proxy_api::{Cx, Status, pb};
use world::World;

use crate::{AnnIndex, Config, Error, IndexParams};

/// A recall channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// ANN search with the user's embedding.
    Ann,
    /// ANN search from each recent item's embedding.
    I2i,
    /// Globally popular.
    Popular,
}

impl Channel {
    /// Every channel, in merge order.
    pub const ALL: [Channel; 3] = [Channel::Ann, Channel::I2i, Channel::Popular];

    /// The channel's name in responses and parameters.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Ann => "ann",
            Channel::I2i => "i2i",
            Channel::Popular => "popular",
        }
    }
}

/// What recall needs from a request.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// Numeric user key.
    pub user: u64,
    /// Recent item ids, newest first.
    pub recent: Vec<u64>,
    /// Effective experiment parameters.
    pub params: BTreeMap<String, String>,
}

/// One recalled item.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Item id.
    pub item: u64,
    /// Channel score: similarity for ann/i2i, popularity for popular.
    pub score: f32,
    /// Which channel found it.
    pub channel: Channel,
}

fn index_params(config: &Config) -> IndexParams {
    IndexParams {
        m: config.hnsw_m as usize,
        ef_construction: config.hnsw_ef_construction as usize,
        ef_search: config.hnsw_ef_search as usize,
        shards: config.index_shards as usize,
    }
}

/// The recall stage.
pub struct RecallStage {
    /// The shared catalogue.
    world: Arc<World>,
    /// Default quotas.
    config: Config,
    /// HNSW over item embeddings.
    index: AnnIndex,
    /// History ids that are not in the catalogue, ignored and counted.
    unknown_history: AtomicU64,
}

impl RecallStage {
    /// A recall stage over `world`; builds the ANN index (seconds for the
    /// default world).
    pub fn new(world: Arc<World>, config: Config) -> Self {
        let index = AnnIndex::build(&world, index_params(&config));
        Self::with_index(world, config, index)
    }

    /// A recall stage over `world` whose index is loaded from `dir` when it
    /// holds one (see [`RecallStage::save_index`]) and built otherwise. A
    /// saved index that is unreadable or made for another world or other
    /// parameters is an error naming the file.
    pub fn with_index_dir(
        world: Arc<World>,
        config: Config,
        dir: &std::path::Path,
    ) -> Result<Self, crate::IndexFileError> {
        let params = index_params(&config);
        let started = std::time::Instant::now();
        let index = match AnnIndex::load(dir, &world, params)? {
            Some(index) => {
                tracing::info!(
                    dir = %dir.display(),
                    shards = params.shards,
                    seconds = started.elapsed().as_secs_f32(),
                    "recall index loaded"
                );
                index
            }
            None => AnnIndex::build(&world, params),
        };
        Ok(Self::with_index(world, config, index))
    }

    /// Writes this stage's index into `dir`, for [`RecallStage::with_index_dir`].
    pub fn save_index(&self, dir: &std::path::Path) -> Result<(), crate::IndexFileError> {
        self.index
            .save(dir, &self.world, index_params(&self.config))
    }

    fn with_index(world: Arc<World>, config: Config, index: AnnIndex) -> Self {
        Self {
            world,
            config,
            index,
            unknown_history: AtomicU64::new(0),
        }
    }

    /// History item ids ignored so far because the catalogue lacks them.
    pub fn unknown_history(&self) -> u64 {
        self.unknown_history.load(Ordering::Relaxed)
    }

    fn quota(&self, query: &Query, channel: Channel) -> Result<usize, Error> {
        let default = match channel {
            Channel::Ann => self.config.quota_ann,
            Channel::I2i => self.config.quota_i2i,
            Channel::Popular => self.config.quota_popular,
        };
        let key = format!("recall.quota.{}", channel.name());
        match query.params.get(&key) {
            None => Ok(default as usize),
            Some(v) => v
                .parse::<u32>()
                .map(|q| q.min(10_000) as usize)
                .map_err(|_| Error::BadParam {
                    key,
                    value: v.clone(),
                }),
        }
    }

    /// The user's query vector: their embedding if known, else the mean of
    /// their recent items' embeddings, else none (cold start).
    fn user_vector(&self, user: u64, history: &[u64]) -> Option<Vec<f32>> {
        if let Some(e) = self.world.user_embedding(user) {
            return Some(e.to_vec());
        }
        let mut mean = vec![0f32; self.world.dims()];
        let mut n = 0;
        for e in history
            .iter()
            .filter_map(|id| self.world.item_embedding(*id))
        {
            mean.iter_mut().zip(e).for_each(|(m, x)| *m += x);
            n += 1;
        }
        (n > 0).then(|| {
            world::normalize(&mut mean);
            mean
        })
    }

    /// Recalls candidates for `query`, channels merged in quota order; the
    /// popular channel makes up any shortfall of the others (cold users).
    pub fn recall(&self, query: &Query) -> Result<Vec<Candidate>, Error> {
        let quotas = Channel::ALL.map(|c| self.quota(query, c).map(|q| (c, q)));
        let mut history = Vec::new();
        for id in &query.recent {
            if self.world.item(*id).is_some() {
                history.push(*id);
            } else {
                self.unknown_history.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut taken: HashSet<u64> = history.iter().copied().collect();
        let mut wanted = 0;
        let mut out = Vec::new();
        for quota in quotas {
            let (channel, quota) = quota?;
            wanted += quota;
            let room = wanted - out.len();
            let found: Vec<(u64, f32)> = match channel {
                // Ask for extra: seen items are filtered after the search.
                Channel::Ann => match self.user_vector(query.user, &history) {
                    Some(v) => self.index.nearest(&v, room + history.len()),
                    None => Vec::new(),
                },
                Channel::I2i => self.item_to_item(&history, room),
                Channel::Popular => self
                    .world
                    .by_popularity()
                    .iter()
                    .filter(|id| !taken.contains(id))
                    .take(room)
                    .filter_map(|id| self.world.item(*id).map(|i| (*id, i.popularity)))
                    .collect(),
            };
            out.extend(
                found
                    .into_iter()
                    .filter(|(id, _)| taken.insert(*id))
                    .take(room)
                    .map(|(item, score)| Candidate {
                        item,
                        score,
                        channel,
                    }),
            );
        }
        Ok(out)
    }

    /// Nearest items of each of the most recent items, interleaved so each
    /// recent item contributes.
    fn item_to_item(&self, history: &[u64], room: usize) -> Vec<(u64, f32)> {
        let window = history.len().min(self.config.history_window as usize);
        if window == 0 || room == 0 {
            return Vec::new();
        }
        let per_item = room.div_ceil(window) + window;
        let lists: Vec<Vec<(u64, f32)>> = history[..window]
            .iter()
            .filter_map(|id| self.world.item_embedding(*id))
            .map(|e| self.index.nearest(e, per_item))
            .collect();
        let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
        (0..longest)
            .flat_map(|k| lists.iter().filter_map(move |l| l.get(k).copied()))
            .collect()
    }
}

#[proxy_api::async_trait]
impl proxy_api::Recall for RecallStage {
    async fn recall(
        &self,
        _cx: &Cx,
        request: pb::RecallRequest,
    ) -> Result<pb::RecallResponse, Status> {
        let query = Query::from_pb(&request);
        let items = self.recall(&query)?.into_iter().map(Into::into).collect();
        Ok(pb::RecallResponse {
            items,
            timings: Vec::new(),
        })
    }
}

/// How a process builds the recall stage (see [`proxy_api::StageFactory`]).
/// With a world loaded from files ([`world::WorldDir`]) it loads the index
/// saved next to them instead of building one.
pub struct Factory;

impl proxy_api::StageFactory for Factory {
    type Service = proxy_api::RecallService;
    type Config = Config;

    fn validate(config: &Config) -> Result<(), proxy_api::ConfigError> {
        config.validate()
    }

    fn build(
        config: &Config,
        deps: &proxy_api::Deps<'_>,
    ) -> Result<Arc<dyn proxy_api::Recall>, proxy_api::BuildError> {
        let world = deps.resource::<World>()?;
        let stage = match deps.optional::<world::WorldDir>()? {
            Some(dir) => RecallStage::with_index_dir(world, config.clone(), &index_dir(&dir.0))
                .map_err(|e| proxy_api::BuildError::new(format!("world.dir: recall index {e}")))?,
            None => RecallStage::new(world, config.clone()),
        };
        Ok(Arc::new(stage))
    }
}

/// Where the recall index lives next to a world's files.
pub fn index_dir(world_dir: &std::path::Path) -> std::path::PathBuf {
    world_dir.join("index")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage() -> RecallStage {
        let cfg = world::WorldConfig {
            items: 3_000,
            users: 100,
            dims: 16,
            ..world::WorldConfig::default()
        };
        RecallStage::new(Arc::new(World::generate(&cfg)), Config::default())
    }

    #[test]
    fn fills_quotas_and_filters_seen() {
        let s = stage();
        let recent = s.world.history(3).to_vec();
        let got = s
            .recall(&Query {
                user: 3,
                recent: recent.clone(),
                ..Query::default()
            })
            .expect("recall");
        assert_eq!(got.len(), 1_000);
        assert!(got.iter().all(|c| !recent.contains(&c.item)));
        let unique: HashSet<u64> = got.iter().map(|c| c.item).collect();
        assert_eq!(unique.len(), got.len());
        for channel in Channel::ALL {
            assert!(
                got.iter().any(|c| c.channel == channel),
                "{channel:?} missing"
            );
        }
    }

    #[test]
    fn cold_user_gets_popular_and_unknown_history_is_counted() {
        let s = stage();
        let got = s
            .recall(&Query {
                user: 1 << 40,
                recent: vec![9_999_999],
                ..Query::default()
            })
            .expect("recall");
        assert_eq!(got.len(), 1_000);
        assert!(got.iter().all(|c| c.channel == Channel::Popular));
        assert_eq!(s.unknown_history(), 1);
    }

    #[test]
    fn ann_channel_finds_what_the_user_likes() {
        let s = stage();
        let got = s
            .recall(&Query {
                user: 5,
                ..Query::default()
            })
            .expect("recall");
        let truth = s.world.true_affinities(5).expect("truth");
        let ann: Vec<f32> = got
            .iter()
            .filter(|c| c.channel == Channel::Ann)
            .map(|c| truth[c.item as usize])
            .collect();
        let mean_ann = ann.iter().sum::<f32>() / ann.len() as f32;
        let mean_all = truth.iter().sum::<f32>() / truth.len() as f32;
        assert!(mean_ann > mean_all + 0.5, "{mean_ann} vs {mean_all}");
    }

    #[test]
    fn quotas_follow_params() {
        let s = stage();
        let mut params = BTreeMap::new();
        params.insert("recall.quota.popular".to_owned(), "0".to_owned());
        params.insert("recall.quota.ann".to_owned(), "50".to_owned());
        params.insert("recall.quota.i2i".to_owned(), "0".to_owned());
        let got = s
            .recall(&Query {
                user: 3,
                params,
                ..Query::default()
            })
            .expect("recall");
        assert_eq!(got.len(), 50);
        assert!(got.iter().all(|c| c.channel == Channel::Ann));
        let mut bad = BTreeMap::new();
        bad.insert("recall.quota.i2i".to_owned(), "many".to_owned());
        assert!(
            s.recall(&Query {
                user: 3,
                params: bad,
                ..Query::default()
            })
            .is_err()
        );
    }
}
