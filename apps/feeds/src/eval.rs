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

/// What one tenant's users see, from one recommender.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PageQuality {
    /// NDCG@20 and Recall@100 of the first 100 items the tenant's users
    /// see (its pages, one after another), against the 100 best unseen
    /// items it allows.
    pub quality: Quality,
    /// Share of eligible users whose first page is empty.
    pub empty_page_rate: f64,
    /// Share of eligible users whose first page has fewer items than the
    /// tenant's page size (empty pages included).
    pub short_page_rate: f64,
    /// Share of non-empty first pages with more items of one category or
    /// one creator than the tenant's rerank caps allow.
    pub cap_violation_rate: f64,
    /// Mean number of distinct categories on a first page.
    pub categories_per_page: f64,
    /// Distinct items over all first pages, as a share of the items the
    /// tenant allows.
    pub coverage: f64,
}

/// One tenant's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TenantReport {
    /// Tenant name.
    pub tenant: String,
    /// Its default page size (the first page's size).
    pub page_size: u32,
    /// Users whose first page was measured.
    pub users: usize,
    /// Of those, users whose allowed unseen catalogue holds at least a page
    /// (the page rates count these).
    pub eligible: usize,
    /// The full pipeline.
    pub pipeline: PageQuality,
    /// Most popular unseen items the tenant allows.
    pub popularity: PageQuality,
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
    /// Per tenant.
    pub tenants: Vec<TenantReport>,
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

/// A tenant's constraints, as item predicates.
struct Constraints<'w> {
    world: &'w world::World,
    categories: HashSet<String>,
    creators: HashSet<String>,
}

impl Constraints<'_> {
    fn admits(&self, id: u64) -> bool {
        self.world.item(id).is_some_and(|item| {
            (self.categories.is_empty()
                || self
                    .categories
                    .contains(&self.world.category_name(item.category)))
                && !self
                    .creators
                    .contains(&self.world.creator_name(item.creator))
        })
    }
}

/// The `k` unseen allowed items of highest hidden affinity.
fn relevant_set(
    truth: &[f32],
    seen: &HashSet<u64>,
    admits: impl Fn(u64) -> bool,
    k: usize,
) -> HashSet<u64> {
    let mut unseen: Vec<u64> = (0..truth.len() as u64)
        .filter(|i| !seen.contains(i) && admits(*i))
        .collect();
    let order = |a: &u64, b: &u64| {
        truth[*b as usize]
            .total_cmp(&truth[*a as usize])
            .then(a.cmp(b))
    };
    if unseen.len() > k {
        unseen.select_nth_unstable_by(k - 1, order);
        unseen.truncate(k);
    }
    unseen.into_iter().collect()
}

/// Running sums of a [`PageQuality`].
#[derive(Default)]
struct PageSums {
    lists: usize,
    quality: Quality,
    eligible: usize,
    empty: usize,
    short: usize,
    pages: usize,
    violations: usize,
    categories: usize,
    shown: HashSet<u64>,
}

impl PageSums {
    fn list(&mut self, list: &[u64], relevant: &HashSet<u64>) {
        self.lists += 1;
        self.quality.ndcg_at_20 += ndcg(list, relevant);
        self.quality.recall_at_100 += recall(list, relevant);
    }

    fn page(
        &mut self,
        world: &world::World,
        page: &[u64],
        size: usize,
        eligible: bool,
        rules: &rerank::PageRules,
    ) {
        if eligible {
            self.eligible += 1;
            self.empty += usize::from(page.is_empty());
            self.short += usize::from(page.len() < size);
        }
        if page.is_empty() {
            return;
        }
        self.pages += 1;
        let mut categories = std::collections::BTreeMap::<u32, u32>::new();
        let mut creators = std::collections::BTreeMap::<u32, u32>::new();
        for item in page.iter().filter_map(|id| world.item(*id)) {
            *categories.entry(item.category).or_default() += 1;
            *creators.entry(item.creator).or_default() += 1;
        }
        let broken = categories.values().any(|n| *n > rules.max_per_category)
            || creators.values().any(|n| *n > rules.max_per_creator);
        self.violations += usize::from(broken);
        self.categories += categories.len();
        self.shown.extend(page.iter().copied());
    }

    fn finish(self, allowed: usize) -> PageQuality {
        let rate = |n: usize, of: usize| n as f64 / of.max(1) as f64;
        PageQuality {
            quality: Quality {
                ndcg_at_20: self.quality.ndcg_at_20 / self.lists.max(1) as f64,
                recall_at_100: self.quality.recall_at_100 / self.lists.max(1) as f64,
            },
            empty_page_rate: rate(self.empty, self.eligible),
            short_page_rate: rate(self.short, self.eligible),
            cap_violation_rate: rate(self.violations, self.pages),
            categories_per_page: rate(self.categories, self.pages),
            coverage: rate(self.shown.len(), allowed),
        }
    }
}

/// Evaluates the pipeline `config` describes (run as a monolith, in-process)
/// on `users` users spread over the world, and every tenant's first pages
/// on `page_users` users.
pub async fn eval(
    config: &Config,
    users: usize,
    page_users: usize,
) -> Result<EvalReport, EvalError> {
    let mut config = config.clone();
    config.process.host = proxy_api::Stage::ALL
        .iter()
        .map(|s| s.name().to_owned())
        .collect();
    config.remote.clear();
    let tenants: Vec<(String, business::TenantConfig)> = config
        .business
        .tenants
        .iter()
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    config.business.tenants.insert(
        EVAL_TENANT.into(),
        business::TenantConfig {
            max_page_size: K_RECALL as u32,
            ..business::TenantConfig::default()
        },
    );
    // The ranking-quality list: every category, and rerank's caps out of
    // the way (a 100-item list under a per-page cap measures the cap, not
    // the ranking); the tenants' own pages below keep their caps.
    let loose = K_RECALL as u32;
    config.rerank.tenants.insert(
        EVAL_TENANT.into(),
        rerank::PageRules {
            max_per_category: loose,
            max_per_creator: loose,
            ..config.rerank.rules.clone()
        },
    );
    let plan = Plan {
        listen: ([127, 0, 0, 1], 0).into(),
        hosted: proxy_api::Stage::ALL.to_vec(),
        remotes: Vec::new(),
        routes: Vec::new(),
        metrics_listen: None,
        trusted_peers: Vec::new(),
        rollouts: Vec::new(),
        // Offline: no admission limit, no bulkheads, no compute pool.
        admission: None,
        stage_limits: Vec::new(),
        compute_threads: 0,
        health_listen: None,
    };
    let world = Arc::new(wiring::world(&config)?);
    let hidden = world.truth().ok_or(EvalError::NoTruth)?;
    let registry = wiring::build_with(&config, &plan, Some(world.clone()))?;
    let business = registry.business().map_err(WiringError::from)?;
    let page = |user: u64, tenant: String, page_size: u32, cursor: String| {
        let business = business.clone();
        async move {
            let request = pb::GetFeedRequest {
                user_id: user.to_string(),
                page_size,
                cursor,
                ..Default::default()
            };
            let cx = proxy_api::Cx::new().with_tenant(&tenant);
            business
                .get_feed(&cx, request)
                .await
                .map(|r| {
                    let items = r.items.iter().map(|i| i.item_id).collect::<Vec<u64>>();
                    (items, r.next_cursor)
                })
                .map_err(|status| EvalError::Call { user, status })
        }
    };
    let get = |user: u64, tenant: String, page_size: u32| {
        let first = page(user, tenant, page_size, String::new());
        async move { first.await.map(|(items, _)| items) }
    };
    // The first 100 items a tenant's user sees, page after page.
    let scroll = |user: u64, tenant: String| {
        let page = &page;
        async move {
            let mut items = Vec::new();
            let mut cursor = String::new();
            loop {
                let (more, next) = page(user, tenant.clone(), 0, cursor).await?;
                items.extend(more);
                if next.is_empty() || items.len() >= K_RECALL {
                    break;
                }
                cursor = next;
            }
            items.truncate(K_RECALL);
            Ok::<_, EvalError>(items)
        }
    };

    let n = users.clamp(1, world.users());
    let step = world.users() / n;
    let mut pipeline = Quality::default();
    let mut popularity = Quality::default();
    for k in 0..n {
        let user = (k * step) as u64;
        let seen: HashSet<u64> = world.history(user).iter().copied().collect();
        let truth = hidden.affinities(user).ok_or(EvalError::NoTruth)?;
        let relevant = relevant_set(&truth, &seen, |_| true, K_RECALL);
        let recommended = get(user, EVAL_TENANT.into(), K_RECALL as u32).await?;
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

    let pages_n = page_users.clamp(1, world.users());
    let pages_step = world.users() / pages_n;
    let mut reports = Vec::new();
    for (name, tenant) in &tenants {
        let constraints = Constraints {
            world: &world,
            categories: tenant.allowed_categories.iter().cloned().collect(),
            creators: tenant.blocked_creators.iter().cloned().collect(),
        };
        let allowed = (0..world.len() as u64)
            .filter(|i| constraints.admits(*i))
            .count();
        let rules = config.rerank.rules_for(Some(name)).clone();
        let size = tenant.default_page_size as usize;
        let (mut ours, mut popular) = (PageSums::default(), PageSums::default());
        for k in 0..pages_n {
            let user = (k * pages_step) as u64;
            let seen: HashSet<u64> = world.history(user).iter().copied().collect();
            let unseen_allowed = allowed - seen.iter().filter(|i| constraints.admits(**i)).count();
            let eligible = unseen_allowed >= size;
            let page = get(user, name.clone(), 0).await?;
            ours.page(&world, &page, size, eligible, &rules);
            let by_popularity: Vec<u64> = world
                .by_popularity()
                .iter()
                .filter(|i| !seen.contains(i) && constraints.admits(**i))
                .take(K_RECALL)
                .copied()
                .collect();
            let top = &by_popularity[..size.min(by_popularity.len())];
            popular.page(&world, top, size, eligible, &rules);
            // The 100-item lists for NDCG and Recall, on about `n` of these
            // users.
            if k % (pages_n / n).max(1) == 0 {
                let truth = hidden.affinities(user).ok_or(EvalError::NoTruth)?;
                let relevant = relevant_set(&truth, &seen, |i| constraints.admits(i), K_RECALL);
                let list = scroll(user, name.clone()).await?;
                ours.list(&list, &relevant);
                popular.list(&by_popularity, &relevant);
            }
        }
        reports.push(TenantReport {
            tenant: name.clone(),
            page_size: tenant.default_page_size,
            users: pages_n,
            eligible: ours.eligible,
            pipeline: ours.finish(allowed),
            popularity: popular.finish(allowed),
        });
    }
    Ok(EvalReport {
        users: n,
        pipeline,
        popularity,
        tenants: reports,
    })
}

/// The report as the tables `feeds eval` prints.
pub fn eval_table(r: &EvalReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "users evaluated: {}", r.users);
    let _ = writeln!(out, "{:<12} {:>9} {:>11}", "", "NDCG@20", "Recall@100");
    for (name, q) in [("pipeline", &r.pipeline), ("popularity", &r.popularity)] {
        let _ = writeln!(
            out,
            "{name:<12} {:>9.4} {:>11.4}",
            q.ndcg_at_20, q.recall_at_100
        );
    }
    for t in &r.tenants {
        let _ = writeln!(
            out,
            "\ntenant {} (first pages of {} for {} users, {} with a page of unseen allowed items)",
            t.tenant, t.page_size, t.users, t.eligible
        );
        let _ = writeln!(
            out,
            "{:<12} {:>9} {:>11} {:>7} {:>7} {:>10} {:>11} {:>9}",
            "", "NDCG@20", "Recall@100", "empty", "short", "over cap", "categories", "coverage"
        );
        for (name, q) in [("pipeline", &t.pipeline), ("popularity", &t.popularity)] {
            let _ = writeln!(
                out,
                "{name:<12} {:>9.4} {:>11.4} {:>6.2}% {:>6.2}% {:>9.2}% {:>11.2} {:>8.2}%",
                q.quality.ndcg_at_20,
                q.quality.recall_at_100,
                q.empty_page_rate * 100.0,
                q.short_page_rate * 100.0,
                q.cap_violation_rate * 100.0,
                q.categories_per_page,
                q.coverage * 100.0
            );
        }
    }
    out
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
