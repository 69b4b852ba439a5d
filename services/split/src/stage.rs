//! The split logic and its `Split` implementation.

use std::collections::BTreeMap;
use std::sync::Arc;

use proxy_api::{Cx, Status, pb};

use crate::config::BUCKETS;
use crate::{Config, Error, Experiments};

/// One experiment the user is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    /// Layer name.
    pub layer: String,
    /// Experiment name.
    pub experiment: String,
    /// The user's bucket in that layer.
    pub bucket: u32,
}

/// A user's experiments and effective parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Experiments the user is in, layer order.
    pub hits: Vec<Hit>,
    /// Defaults overridden by each hit, in layer order.
    pub params: BTreeMap<String, String>,
}

/// The split stage.
pub struct SplitStage {
    /// Layers and defaults in effect.
    experiments: Experiments,
    /// Layer salts, hashed once.
    salts: Vec<u64>,
    /// Where the request goes next, bound local or grpc.
    rerank: Arc<dyn proxy_api::Rerank>,
}

impl SplitStage {
    /// A split stage in front of `rerank`; reads `experiments_file` if the
    /// config names one.
    pub fn new(
        config: Config,
        rerank: Arc<dyn proxy_api::Rerank>,
    ) -> Result<Self, proxy_api::ConfigError> {
        let experiments = config.experiments()?;
        let salts = experiments
            .layers
            .iter()
            .map(|l| world::mix(0, &[world::user_key(&l.salt)]))
            .collect();
        Ok(Self {
            experiments,
            salts,
            rerank,
        })
    }

    /// The user's bucket in each layer and the resulting parameters. `layers`
    /// limits the layers considered (empty: all); unknown names are ignored.
    pub fn assign(&self, user_id: &str, layers: &[String]) -> Assignment {
        let user = world::user_key(user_id);
        let mut assignment = Assignment {
            hits: Vec::new(),
            params: self.experiments.defaults.clone(),
        };
        for (layer, salt) in self.experiments.layers.iter().zip(&self.salts) {
            if !layers.is_empty() && !layers.contains(&layer.name) {
                continue;
            }
            let bucket = (world::mix(*salt, &[user]) % u64::from(BUCKETS)) as u32;
            let Some(exp) = layer
                .experiments
                .iter()
                .find(|e| (e.buckets[0]..e.buckets[1]).contains(&bucket))
            else {
                continue;
            };
            assignment.params.extend(exp.params.clone());
            assignment.hits.push(Hit {
                layer: layer.name.clone(),
                experiment: exp.name.clone(),
                bucket,
            });
        }
        assignment
    }
}

#[proxy_api::async_trait]
impl proxy_api::Split for SplitStage {
    async fn split(&self, cx: &Cx, request: pb::SplitRequest) -> Result<pb::SplitResponse, Status> {
        let assignment: pb::Assignment = self.assign(&request.user_id, &request.layers).into();
        // The context is moved, not copied: split passes it through untouched.
        let reranked = self
            .rerank
            .rerank(
                cx,
                pb::RerankRequest {
                    user_id: request.user_id,
                    limit: request.limit,
                    context: request.context,
                    assignment: Some(assignment.clone()),
                    explain: request.explain,
                    constraints: request.constraints,
                    page_size: request.page_size,
                },
            )
            .await
            .map_err(Error::from)?;
        Ok(pb::SplitResponse {
            items: reranked.items,
            assignment: Some(assignment),
            timings: Vec::new(),
        })
    }
}

/// How a process builds the split stage (see [`proxy_api::StageFactory`]).
pub struct Factory;

impl proxy_api::StageFactory for Factory {
    type Service = proxy_api::SplitService;
    type Config = Config;

    fn validate(config: &Config) -> Result<(), proxy_api::ConfigError> {
        config.validate()
    }

    fn build(
        config: &Config,
        deps: &proxy_api::Deps<'_>,
    ) -> Result<Arc<dyn proxy_api::Split>, proxy_api::BuildError> {
        Ok(Arc::new(SplitStage::new(
            config.clone(),
            deps.downstream::<proxy_api::RerankService>()?,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_spread() {
        let s = SplitStage::new(Config::default(), Arc::new(proxy_api::Unimplemented))
            .expect("default config");
        assert_eq!(s.assign("42", &[]), s.assign("42", &[]));
        let in_v2 = (0..2_000)
            .filter(|u| {
                s.assign(&u.to_string(), &[])
                    .params
                    .get("finerank.model")
                    .map(String::as_str)
                    == Some("v2")
            })
            .count();
        // model-v2 owns 300 of 1000 buckets.
        assert!((450..750).contains(&in_v2), "{in_v2}");
    }

    #[test]
    fn layers_filter_and_override() {
        let s = SplitStage::new(Config::default(), Arc::new(proxy_api::Unimplemented))
            .expect("default config");
        let user = (0..1_000)
            .map(|u| u.to_string())
            .find(|u| s.assign(u, &[]).hits.len() == 2)
            .expect("some user is in both layers");
        let only_ranking = s.assign(&user, &["ranking".to_owned()]);
        assert_eq!(only_ranking.hits.len(), 1);
        assert_eq!(only_ranking.hits[0].layer, "ranking");
        assert_eq!(
            only_ranking
                .params
                .get("recall.quota.i2i")
                .map(String::as_str),
            Some("300")
        );
    }
}
