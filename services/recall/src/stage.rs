//! The recall logic and its `Recall` implementation.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use proxy_api::{SelfTimer, Stage, pb};
use world::{World, mix};

use crate::{Config, Error};

/// A recall channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// From the user's taste.
    Personal,
    /// Related to the user's recent items.
    I2i,
    /// Globally popular.
    Popular,
}

impl Channel {
    /// The channel's name in responses and parameters.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Personal => "personal",
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
    /// Recall score, higher first within a channel.
    pub score: f32,
    /// Which channel found it.
    pub channel: Channel,
}

/// The recall stage.
pub struct RecallStage {
    /// The shared catalogue.
    world: Arc<World>,
    /// Default quotas.
    config: Config,
    /// History ids that are not in the catalogue, ignored and counted.
    unknown_history: AtomicU64,
}

impl RecallStage {
    /// A recall stage over `world`.
    pub fn new(world: Arc<World>, config: Config) -> Self {
        Self {
            world,
            config,
            unknown_history: AtomicU64::new(0),
        }
    }

    /// History item ids ignored so far because the catalogue lacks them.
    pub fn unknown_history(&self) -> u64 {
        self.unknown_history.load(Ordering::Relaxed)
    }

    fn quota(&self, query: &Query, channel: Channel, default: u32) -> Result<usize, Error> {
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

    /// Recalls candidates for `query`, channels merged in quota order; the
    /// popular channel makes up any shortfall of the others (cold users).
    pub fn recall(&self, query: &Query) -> Result<Vec<Candidate>, Error> {
        let quotas = [
            (
                Channel::Personal,
                self.quota(query, Channel::Personal, self.config.quota_personal)?,
            ),
            (
                Channel::I2i,
                self.quota(query, Channel::I2i, self.config.quota_i2i)?,
            ),
            (
                Channel::Popular,
                self.quota(query, Channel::Popular, self.config.quota_popular)?,
            ),
        ];
        let mut history = Vec::new();
        for id in &query.recent {
            if self.world.item(*id).is_some() {
                history.push(*id);
            } else {
                self.unknown_history.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut taken: HashSet<u64> = history.iter().copied().collect();
        let wanted: usize = quotas.iter().map(|(_, q)| q).sum();
        let mut out = Vec::with_capacity(wanted);
        for (channel, quota) in quotas {
            let before = out.len();
            // Popular is the fallback: it also fills what the others could not.
            let quota = if channel == Channel::Popular {
                wanted - before
            } else {
                quota
            };
            let mut push = |item: u64, out: &mut Vec<Candidate>| {
                if out.len() - before < quota && taken.insert(item) {
                    let rank = (out.len() - before) as f32;
                    out.push(Candidate {
                        item,
                        score: 1.0 / (1.0 + rank),
                        channel,
                    });
                }
                out.len() - before < quota
            };
            match channel {
                Channel::Personal => self.personal(query.user, &mut out, &mut push),
                Channel::I2i => self.i2i(&history, &mut out, &mut push),
                Channel::Popular => {
                    for id in self.world.by_popularity() {
                        if !push(*id, &mut out) {
                            break;
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The user's taste: three favourite categories (from the user key), walked
    /// from hash-chosen offsets. Unknown users get nothing here.
    fn personal(
        &self,
        user: u64,
        out: &mut Vec<Candidate>,
        push: &mut impl FnMut(u64, &mut Vec<Candidate>) -> bool,
    ) {
        if !self.world.knows_user(user) {
            return;
        }
        let seed = self.world.config().seed;
        let categories = self.world.config().categories;
        let lists: Vec<&[u64]> = (0..3)
            .map(|k| {
                self.world
                    .category_items((mix(seed, &[10, user, k]) % u64::from(categories)) as u32)
            })
            .collect();
        let offsets: Vec<usize> = (0..3u64)
            .map(|k| (mix(seed, &[11, user, k]) % 64) as usize)
            .collect();
        for step in 0.. {
            let mut any = false;
            for (list, offset) in lists.iter().zip(&offsets) {
                if let Some(id) = list.get(offset + step) {
                    any = true;
                    if !push(*id, out) {
                        return;
                    }
                }
            }
            if !any {
                return;
            }
        }
    }

    /// Items of the same category as each recent item, nearest in popularity.
    fn i2i(
        &self,
        history: &[u64],
        out: &mut Vec<Candidate>,
        push: &mut impl FnMut(u64, &mut Vec<Candidate>) -> bool,
    ) {
        let window = history.len().min(self.config.history_window as usize);
        for id in &history[..window] {
            let Some(item) = self.world.item(*id) else {
                continue;
            };
            let list = self.world.category_items(item.category);
            let at = list.iter().position(|x| x == id).unwrap_or(0);
            for near in list.iter().skip(at.saturating_sub(8)).take(17) {
                if !push(*near, out) {
                    return;
                }
            }
        }
    }
}

#[proxy_api::async_trait]
impl proxy_api::Recall for RecallStage {
    async fn recall(
        &self,
        request: tonic::Request<pb::RecallRequest>,
    ) -> Result<tonic::Response<pb::RecallResponse>, tonic::Status> {
        let timer = SelfTimer::start();
        let request = request.into_inner();
        let query = Query::from_pb(&request);
        let items = self.recall(&query)?.into_iter().map(Into::into).collect();
        let mut timings = Vec::new();
        timer.record(Stage::Recall, request.explain, &mut timings);
        Ok(tonic::Response::new(pb::RecallResponse { items, timings }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage() -> RecallStage {
        let cfg = world::WorldConfig {
            items: 5_000,
            users: 100,
            ..world::WorldConfig::default()
        };
        RecallStage::new(Arc::new(World::generate(&cfg)), Config::default())
    }

    #[test]
    fn fills_quotas_and_filters_seen() {
        let s = stage();
        let recent = vec![s.world.by_popularity()[0], 17, 99];
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
        assert!(got.iter().any(|c| c.channel == Channel::I2i));
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
        assert!(got.iter().all(|c| c.channel == Channel::Popular));
        assert_eq!(s.unknown_history(), 1);
    }

    #[test]
    fn quotas_follow_params() {
        let s = stage();
        let mut params = BTreeMap::new();
        params.insert("recall.quota.popular".to_owned(), "0".to_owned());
        params.insert("recall.quota.personal".to_owned(), "50".to_owned());
        params.insert("recall.quota.i2i".to_owned(), "0".to_owned());
        let got = s
            .recall(&Query {
                user: 3,
                params,
                ..Query::default()
            })
            .expect("recall");
        assert_eq!(got.len(), 50);
        assert!(got.iter().all(|c| c.channel == Channel::Personal));
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
