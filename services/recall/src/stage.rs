//! The recall logic and its `Recall` implementation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use proxy_api::{Cx, Status, pb};
use world::World;

use crate::config::AnnKind;
use crate::flat::{Categories, FlatIndex};
use crate::i2i::I2iTable;
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
    /// Category names the tenant allows (empty: all).
    pub allowed_categories: Vec<String>,
    /// Creator names the tenant never shows.
    pub blocked_creators: Vec<String>,
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

/// A set of item ids as one bit per catalogue item: a request's seen and
/// recalled items (6 KB for the default world, cheaper than hashing).
struct Bits {
    words: Vec<u64>,
    count: usize,
}

impl Bits {
    fn new(items: usize) -> Self {
        Self {
            words: vec![0; items.div_ceil(64)],
            count: 0,
        }
    }

    fn contains(&self, id: u64) -> bool {
        self.words
            .get((id / 64) as usize)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// Adds `id`; false when it was there already or is outside the
    /// catalogue.
    fn insert(&mut self, id: u64) -> bool {
        match self.words.get_mut((id / 64) as usize) {
            Some(w) if *w & (1 << (id % 64)) == 0 => {
                *w |= 1 << (id % 64);
                self.count += 1;
                true
            }
            _ => false,
        }
    }
}

/// A request's constraints, resolved against the catalogue.
struct Allowed<'q> {
    categories: Categories,
    blocked: HashSet<u32>,
    /// Seen items: the history, then everything already recalled.
    taken: Bits,
    world: &'q World,
}

impl Allowed<'_> {
    /// Whether `id` may still be recalled.
    fn admits(&self, id: u64) -> bool {
        !self.taken.contains(id)
            && self.world.item(id).is_some_and(|item| {
                self.categories.contains(item.category)
                    && (self.blocked.is_empty() || !self.blocked.contains(&item.creator))
            })
    }
}

/// The recall stage.
pub struct RecallStage {
    /// The shared catalogue.
    world: Arc<World>,
    /// Default quotas.
    config: Config,
    /// Quantised embeddings by category (the `flat` user channel, and what
    /// the i2i table is built from).
    flat: FlatIndex,
    /// HNSW graphs, when `ann = "hnsw"`.
    hnsw: Option<AnnIndex>,
    /// Each item's nearest items.
    i2i: I2iTable,
    /// Category and creator ids by name, for constraints.
    categories: HashMap<String, u32>,
    creators: HashMap<String, u32>,
    /// History ids that are not in the catalogue, ignored and counted.
    unknown_history: AtomicU64,
}

impl RecallStage {
    /// A recall stage over `world`; builds its index and i2i table (about a
    /// second for the default world).
    pub fn new(world: Arc<World>, config: Config) -> Self {
        let flat = FlatIndex::build(&world);
        let i2i = I2iTable::build(&world, &flat, config.i2i_neighbours as usize);
        let hnsw =
            (config.ann == AnnKind::Hnsw).then(|| AnnIndex::build(&world, index_params(&config)));
        Self::with_parts(world, config, flat, hnsw, i2i)
    }

    /// A recall stage over `world` whose i2i table (and HNSW graphs, with
    /// `ann = "hnsw"`) are loaded from `dir` when it holds them (see
    /// [`RecallStage::save_index`]) and built otherwise. A saved file that
    /// is unreadable or made for another world or other parameters is an
    /// error naming the file.
    pub fn with_index_dir(
        world: Arc<World>,
        config: Config,
        dir: &std::path::Path,
    ) -> Result<Self, crate::IndexFileError> {
        let started = std::time::Instant::now();
        let flat = FlatIndex::build(&world);
        let neighbours = config.i2i_neighbours as usize;
        let i2i = match I2iTable::load(dir, &world, neighbours)? {
            Some(table) => table,
            None => I2iTable::build(&world, &flat, neighbours),
        };
        let hnsw = match config.ann {
            AnnKind::Flat => None,
            AnnKind::Hnsw => {
                let params = index_params(&config);
                Some(match AnnIndex::load(dir, &world, params)? {
                    Some(index) => index,
                    None => AnnIndex::build(&world, params),
                })
            }
        };
        tracing::info!(
            dir = %dir.display(),
            seconds = started.elapsed().as_secs_f32(),
            "recall index ready"
        );
        Ok(Self::with_parts(world, config, flat, hnsw, i2i))
    }

    /// Writes this stage's i2i table (and HNSW graphs, if it has them) into
    /// `dir`, for [`RecallStage::with_index_dir`].
    pub fn save_index(&self, dir: &std::path::Path) -> Result<(), crate::IndexFileError> {
        self.i2i.save(dir, &self.world)?;
        match &self.hnsw {
            Some(index) => index.save(dir, &self.world, index_params(&self.config)),
            None => Ok(()),
        }
    }

    fn with_parts(
        world: Arc<World>,
        config: Config,
        flat: FlatIndex,
        hnsw: Option<AnnIndex>,
        i2i: I2iTable,
    ) -> Self {
        let categories = (0..world.config().categories)
            .map(|c| (world.category_name(c), c))
            .collect();
        let creators = (0..world.config().creators)
            .map(|c| (world.creator_name(c), c))
            .collect();
        Self {
            world,
            config,
            flat,
            hnsw,
            i2i,
            categories,
            creators,
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

    /// The query's constraints as category and creator ids; an unknown name
    /// is an error naming the field.
    fn allowed(&self, query: &Query) -> Result<Allowed<'_>, Error> {
        let lookup = |names: &[String], map: &HashMap<String, u32>, field: &'static str| {
            names
                .iter()
                .map(|n| {
                    map.get(n).copied().ok_or_else(|| Error::UnknownName {
                        field,
                        name: n.clone(),
                    })
                })
                .collect::<Result<Vec<u32>, Error>>()
        };
        let categories = if query.allowed_categories.is_empty() {
            Categories::all()
        } else {
            Categories::only(
                self.flat.categories(),
                lookup(
                    &query.allowed_categories,
                    &self.categories,
                    "constraints.allowed_categories",
                )?,
            )
        };
        let blocked = lookup(
            &query.blocked_creators,
            &self.creators,
            "constraints.blocked_creators",
        )?
        .into_iter()
        .collect();
        Ok(Allowed {
            categories,
            blocked,
            taken: Bits::new(self.world.len()),
            world: &self.world,
        })
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

    /// Recalls candidates for `query` from the items its constraints allow,
    /// channels merged in quota order; the popular channel makes up any
    /// shortfall of the others (cold users, narrow tenants).
    pub fn recall(&self, query: &Query) -> Result<Vec<Candidate>, Error> {
        let quotas = Channel::ALL.map(|c| self.quota(query, c).map(|q| (c, q)));
        let mut allowed = self.allowed(query)?;
        let mut history = Vec::new();
        for id in &query.recent {
            if self.world.item(*id).is_some() {
                history.push(*id);
            } else {
                self.unknown_history.fetch_add(1, Ordering::Relaxed);
            }
        }
        for id in &history {
            allowed.taken.insert(*id);
        }
        let mut wanted = 0;
        let mut out = Vec::new();
        for quota in quotas {
            let (channel, quota) = quota?;
            wanted += quota;
            let room = wanted - out.len();
            if room == 0 {
                continue;
            }
            let found: Vec<(u64, f32)> = match channel {
                Channel::Ann => match self.user_vector(query.user, &history) {
                    Some(v) => self.nearest(&v, room, &allowed),
                    None => Vec::new(),
                },
                Channel::I2i => self.item_to_item(&history, room, &allowed),
                Channel::Popular => self
                    .world
                    .by_popularity()
                    .iter()
                    .filter(|id| allowed.admits(**id))
                    .take(room)
                    .filter_map(|id| self.world.item(*id).map(|i| (*id, i.popularity)))
                    .collect(),
            };
            let before = out.len();
            for (item, score) in found {
                if out.len() - before >= room {
                    break;
                }
                if allowed.taken.insert(item) {
                    out.push(Candidate {
                        item,
                        score,
                        channel,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The ANN channel: up to `room` allowed items nearest `v`, with every
    /// allowed category's nearest `category_floor` among them (`flat`).
    fn nearest(&self, v: &[f32], room: usize, allowed: &Allowed<'_>) -> Vec<(u64, f32)> {
        match &self.hnsw {
            None => self.flat.search(
                v,
                room,
                self.config.category_floor as usize,
                &allowed.categories,
                |id| !allowed.admits(id),
            ),
            // HNSW cannot filter while searching: ask for four times what
            // is needed, then filter.
            Some(hnsw) => hnsw
                .nearest(v, (room + allowed.taken.count) * 4)
                .into_iter()
                .filter(|(id, _)| allowed.admits(*id))
                .take(room)
                .collect(),
        }
    }

    /// Neighbours of each of the most recent items from the i2i table,
    /// interleaved so each recent item contributes.
    fn item_to_item(&self, history: &[u64], room: usize, allowed: &Allowed<'_>) -> Vec<(u64, f32)> {
        let window = history.len().min(self.config.history_window as usize);
        if window == 0 || room == 0 {
            return Vec::new();
        }
        let mut lists: Vec<_> = history[..window]
            .iter()
            .map(|id| self.i2i.of(*id))
            .collect();
        // Duplicates (two recent items sharing a neighbour) are dropped
        // when the channels merge, so this may return more than `room`.
        let mut out = Vec::with_capacity(room + window);
        while out.len() < room + window {
            let mut any = false;
            for list in &mut lists {
                if let Some((id, score)) = list.next() {
                    any = true;
                    if allowed.admits(id) {
                        out.push((id, score));
                    }
                }
            }
            if !any {
                break;
            }
        }
        out
    }
}

#[proxy_api::async_trait]
impl proxy_api::Recall for RecallStage {
    async fn recall(
        &self,
        _cx: &Cx,
        request: pb::RecallRequest,
    ) -> Result<pb::RecallResponse, Status> {
        let query = Query::from_pb(&request)?;
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
    fn constraints_apply_while_recalling() {
        let s = stage();
        let allowed: Vec<String> = [1, 3].iter().map(|c| s.world.category_name(*c)).collect();
        let blocked = s.world.creator_name(7);
        let got = s
            .recall(&Query {
                user: 3,
                recent: s.world.history(3).to_vec(),
                allowed_categories: allowed.clone(),
                blocked_creators: vec![blocked],
                ..Query::default()
            })
            .expect("recall");
        // Two of 24 categories of 3,000 items hold fewer than the 1,000
        // wanted: every allowed unseen item comes back.
        let seen = s.world.history(3);
        let expected = s
            .world
            .items()
            .iter()
            .filter(|i| [1, 3].contains(&i.category) && i.creator != 7 && !seen.contains(&i.id))
            .count();
        assert_eq!(got.len(), expected);
        for c in &got {
            let item = s.world.item(c.item).expect("item");
            assert!([1, 3].contains(&item.category), "{c:?}");
            assert_ne!(item.creator, 7, "{c:?}");
        }
        // Both allowed categories reach the nearest-item channel.
        for category in [1, 3] {
            assert!(got.iter().any(|c| c.channel == Channel::Ann
                && s.world.item(c.item).is_some_and(|i| i.category == category)));
        }
        let err = s
            .recall(&Query {
                user: 3,
                allowed_categories: vec!["no-such-category".into()],
                ..Query::default()
            })
            .expect_err("unknown category");
        assert!(
            err.to_string().contains("constraints.allowed_categories"),
            "{err}"
        );
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
