//! `feeds eval`: runs the whole pipeline in-process for a sample of users
//! and scores it against the world's hidden ground truth, next to a
//! popularity-only baseline.
//!
//! For each user the relevant set is the 100 unseen items of highest hidden
//! affinity. NDCG@20 uses binary relevance (in the set or not); Recall@100 is
//! the share of the set found in the first 100 recommendations.

use std::collections::HashSet;
use std::sync::Arc;

use proxy_api::pb;
use serde::Serialize;

use crate::config::{Config, Plan};
use crate::wiring::{self, WiringError};

/// The relevant set size and the recommendation list length.
const K_RECALL: usize = 100;
/// Cut-off of NDCG.
const K_NDCG: usize = 20;
/// Tenant the evaluation asks through (pages of 100, every category).
const EVAL_TENANT: &str = "eval";

/// Quality of one recommender over the sample.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Quality {
    /// Mean NDCG@20.
    pub ndcg_at_20: f64,
    /// Mean Recall@100.
    pub recall_at_100: f64,
}

/// The evaluation report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalReport {
    /// Users evaluated.
    pub users: usize,
    /// The full pipeline.
    pub pipeline: Quality,
    /// Most popular unseen items.
    pub popularity: Quality,
}

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The stages could not be built.
    #[error(transparent)]
    Wiring(#[from] WiringError),
    /// The world was loaded from files: no ground truth.
    #[error(
        "the world has no hidden ground truth (it was loaded from world.dir); evaluate a generated world"
    )]
    NoTruth,
    /// A pipeline call failed.
    #[error("GetFeed for user {user}: {status}")]
    Call {
        /// The user.
        user: u64,
        /// What came back.
        status: tonic::Status,
    },
}

fn ndcg(recommended: &[u64], relevant: &HashSet<u64>) -> f64 {
    let dcg: f64 = recommended
        .iter()
        .take(K_NDCG)
        .enumerate()
        .filter(|(_, id)| relevant.contains(id))
        .map(|(i, _)| 1.0 / (i as f64 + 2.0).log2())
        .sum();
    let ideal: f64 = (0..K_NDCG.min(relevant.len()))
        .map(|i| 1.0 / (i as f64 + 2.0).log2())
        .sum();
    if ideal > 0.0 { dcg / ideal } else { 0.0 }
}

fn recall(recommended: &[u64], relevant: &HashSet<u64>) -> f64 {
    let hits = recommended
        .iter()
        .take(K_RECALL)
        .filter(|id| relevant.contains(id))
        .count();
    hits as f64 / relevant.len().max(1) as f64
}

/// Evaluates the pipeline `config` describes (run as a monolith, in-process)
/// on `users` users spread over the world.
pub async fn eval(config: &Config, users: usize) -> Result<EvalReport, EvalError> {
    let mut config = config.clone();
    config.process.host = proxy_api::Stage::ALL
        .iter()
        .map(|s| s.name().to_owned())
        .collect();
    config.remote.clear();
    config.business.tenants.insert(
        EVAL_TENANT.into(),
        business::TenantConfig {
            max_page_size: K_RECALL as u32,
            ..business::TenantConfig::default()
        },
    );
    let plan = Plan {
        listen: ([127, 0, 0, 1], 0).into(),
        hosted: proxy_api::Stage::ALL.to_vec(),
        remotes: Vec::new(),
        routes: Vec::new(),
        metrics_listen: None,
        trusted_peers: Vec::new(),
    };
    let world = Arc::new(wiring::world(&config)?);
    let hidden = world.truth().ok_or(EvalError::NoTruth)?;
    let registry = wiring::build_with(&config, &plan, Some(world.clone()))?;
    let business = registry.business().map_err(WiringError::from)?;

    let n = users.clamp(1, world.users());
    let step = world.users() / n;
    let mut pipeline = Quality::default();
    let mut popularity = Quality::default();
    for k in 0..n {
        let user = (k * step) as u64;
        let seen: HashSet<u64> = world.history(user).iter().copied().collect();
        let truth = hidden.affinities(user).ok_or(EvalError::NoTruth)?;
        let mut unseen: Vec<u64> = (0..world.len() as u64)
            .filter(|i| !seen.contains(i))
            .collect();
        unseen.sort_by(|a, b| {
            truth[*b as usize]
                .total_cmp(&truth[*a as usize])
                .then(a.cmp(b))
        });
        let relevant: HashSet<u64> = unseen.iter().take(K_RECALL).copied().collect();

        let request = pb::GetFeedRequest {
            user_id: user.to_string(),
            page_size: K_RECALL as u32,
            ..Default::default()
        };
        let cx = proxy_api::Cx::new().with_tenant(EVAL_TENANT);
        let response = business
            .get_feed(&cx, request)
            .await
            .map_err(|status| EvalError::Call { user, status })?;
        let recommended: Vec<u64> = response.items.iter().map(|i| i.item_id).collect();
        pipeline.ndcg_at_20 += ndcg(&recommended, &relevant);
        pipeline.recall_at_100 += recall(&recommended, &relevant);

        let popular: Vec<u64> = world
            .by_popularity()
            .iter()
            .filter(|i| !seen.contains(i))
            .take(K_RECALL)
            .copied()
            .collect();
        popularity.ndcg_at_20 += ndcg(&popular, &relevant);
        popularity.recall_at_100 += recall(&popular, &relevant);
    }
    for q in [&mut pipeline, &mut popularity] {
        q.ndcg_at_20 /= n as f64;
        q.recall_at_100 /= n as f64;
    }
    Ok(EvalReport {
        users: n,
        pipeline,
        popularity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics() {
        let relevant: HashSet<u64> = [1, 2, 3].into_iter().collect();
        assert!((ndcg(&[1, 2, 3], &relevant) - 1.0).abs() < 1e-9);
        assert_eq!(ndcg(&[7, 8, 9], &relevant), 0.0);
        assert!(ndcg(&[9, 1], &relevant) < ndcg(&[1, 9], &relevant));
        assert!((recall(&[1, 9, 2], &relevant) - 2.0 / 3.0).abs() < 1e-9);
    }
}
