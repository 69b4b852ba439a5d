//! The world: generation and look-ups.
//!
//! The generative story: every category has a centroid in a `dims`-dimensional
//! taste space; an item's latent vector is its category centroid plus noise; a
//! user's latent taste is a weighted mix of three favourite categories plus
//! noise. The hidden affinity of a user for an item is
//! `5 * taste . latent + 0.4 * ln(popularity) - 0.3 * age_years`.
//! The stages never see latent vectors: they get *embeddings*, noisy views of
//! them (as a two-tower model would produce), and an interaction log sampled
//! from the affinity (Gumbel top-k over a popularity- and taste-biased pool).

use crate::rng::{Rng, dot, normalize};
use crate::{WorldConfig, mix};

/// Purposes of the per-entity generators (kept apart so changing one draw
/// never shifts another).
mod tag {
    pub const CENTROID: u64 = 100;
    pub const ITEM_LATENT: u64 = 101;
    pub const ITEM_EMBED: u64 = 102;
    pub const USER_TASTE: u64 = 103;
    pub const USER_EMBED: u64 = 104;
    pub const HISTORY: u64 = 105;
}

/// Weights of a user's three favourite categories in their taste.
const FAVOURITE_WEIGHTS: [f32; 3] = [0.6, 0.3, 0.1];
/// Noise of an item's latent vector around its category centroid (as a
/// vector norm: each dimension gets `spread / sqrt(dims)`).
const ITEM_SPREAD: f32 = 0.8;
/// Noise of a user's taste around their category mix.
const USER_SPREAD: f32 = 0.5;
/// Noise of an embedding around its latent vector (norm, before normalising).
const EMBED_NOISE: f32 = 0.35;

/// One item of the catalogue.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// Its id, equal to its index.
    pub id: u64,
    /// Category index, `0..categories`.
    pub category: u32,
    /// Creator index, `0..creators`.
    pub creator: u32,
    /// Days since publication; smaller is fresher.
    pub age_days: f32,
    /// Zipf-distributed popularity, normalised so the top item is 1.0.
    pub popularity: f32,
}

/// What only the generator knows: used to measure quality, never by stages.
#[derive(Debug)]
pub(crate) struct Hidden {
    /// Category centroids, `categories x dims`.
    pub(crate) centroids: Vec<f32>,
    /// User tastes, `users x dims`.
    pub(crate) tastes: Vec<f32>,
}

/// The world, read-only once built; share it with `Arc`.
#[derive(Debug)]
pub struct World {
    /// What it was generated from (or the manifest it was loaded with).
    pub(crate) config: WorldConfig,
    /// Items by id.
    pub(crate) items: Vec<Item>,
    /// Item ids, most popular first.
    pub(crate) by_popularity: Vec<u64>,
    /// Per category, its item ids, most popular first.
    pub(crate) by_category: Vec<Vec<u64>>,
    /// Item embeddings, `items x dims`, unit length.
    pub(crate) item_embeddings: Vec<f32>,
    /// User embeddings, `users x dims`, unit length.
    pub(crate) user_embeddings: Vec<f32>,
    /// Per user, interacted item ids, newest first.
    pub(crate) histories: Vec<Vec<u64>>,
    /// Ground truth; absent for a world loaded from files.
    pub(crate) hidden: Option<Hidden>,
}

impl World {
    /// Generates the world `config` describes. Deterministic: the same config
    /// gives the same world in every process, whatever the thread count.
    pub fn generate(config: &WorldConfig) -> Self {
        let seed = config.seed;
        let n = u64::from(config.items);
        let dims = config.dims as usize;
        // Popularity rank is a seeded permutation of ids, so popular items are
        // spread over the id space and over categories.
        let mut ranked: Vec<u64> = (0..n).collect();
        ranked.sort_by_cached_key(|id| mix(seed, &[1, *id]));
        let mut rank_of = vec![0u64; ranked.len()];
        for (rank, id) in ranked.iter().enumerate() {
            rank_of[*id as usize] = rank as u64;
        }
        let items: Vec<Item> = (0..n)
            .map(|id| Item {
                id,
                category: (mix(seed, &[2, id]) % u64::from(config.categories)) as u32,
                creator: (mix(seed, &[3, id]) % u64::from(config.creators)) as u32,
                age_days: (crate::unit(seed, &[4, id]) * 365.0) as f32,
                // Zipf with exponent 1: popularity of rank r is 1 / (r + 1).
                popularity: 1.0 / (rank_of[id as usize] as f32 + 1.0),
            })
            .collect();
        let mut by_category = vec![Vec::new(); config.categories as usize];
        for id in &ranked {
            by_category[items[*id as usize].category as usize].push(*id);
        }

        let mut centroids = vec![0f32; config.categories as usize * dims];
        for (c, row) in centroids.chunks_mut(dims).enumerate() {
            let mut rng = Rng::for_entity(seed, tag::CENTROID, c as u64);
            row.iter_mut().for_each(|x| *x = rng.gaussian());
            normalize(row);
        }
        let progress = crate::progress::Progress::new(
            "world: items and users",
            items.len() as u64 + u64::from(config.users),
        );
        let mut latents = vec![0f32; items.len() * dims];
        let mut item_embeddings = vec![0f32; items.len() * dims];
        for (item, (latent, embedding)) in items.iter().zip(
            latents
                .chunks_mut(dims)
                .zip(item_embeddings.chunks_mut(dims)),
        ) {
            item_latent(seed, item, &centroids, dims, latent);
            let mut rng = Rng::for_entity(seed, tag::ITEM_EMBED, item.id);
            for (e, l) in embedding.iter_mut().zip(latent.iter()) {
                *e = l + EMBED_NOISE * scale(dims) * rng.gaussian();
            }
            normalize(embedding);
            progress.add(1);
        }

        let users = config.users as usize;
        let mut tastes = vec![0f32; users * dims];
        let mut user_embeddings = vec![0f32; users * dims];
        let mut histories = Vec::with_capacity(users);
        for (u, (taste, embedding)) in tastes
            .chunks_mut(dims)
            .zip(user_embeddings.chunks_mut(dims))
            .enumerate()
        {
            let u = u as u64;
            let favourites = favourite_categories(seed, u, config.categories);
            let mut rng = Rng::for_entity(seed, tag::USER_TASTE, u);
            for (d, t) in taste.iter_mut().enumerate() {
                let mixed: f32 = favourites
                    .iter()
                    .zip(FAVOURITE_WEIGHTS)
                    .map(|(c, w)| w * centroids[*c as usize * dims + d])
                    .sum();
                *t = mixed + USER_SPREAD * scale(dims) * rng.gaussian();
            }
            normalize(taste);
            let mut rng = Rng::for_entity(seed, tag::USER_EMBED, u);
            for (e, t) in embedding.iter_mut().zip(taste.iter()) {
                *e = t + EMBED_NOISE * scale(dims) * rng.gaussian();
            }
            normalize(embedding);
            histories.push(sample_history(
                seed,
                u,
                taste,
                &favourites,
                &items,
                &latents,
                &ranked,
                &by_category,
                dims,
            ));
            progress.add(1);
        }
        progress.finish();

        Self {
            config: config.clone(),
            items,
            by_popularity: ranked,
            by_category,
            item_embeddings,
            user_embeddings,
            histories,
            hidden: Some(Hidden { centroids, tastes }),
        }
    }

    /// What this world was generated from.
    pub fn config(&self) -> &WorldConfig {
        &self.config
    }

    /// The item with this id, if the catalogue has it.
    pub fn item(&self, id: u64) -> Option<&Item> {
        usize::try_from(id).ok().and_then(|i| self.items.get(i))
    }

    /// Every item, by id.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when the catalogue is empty (never, for a validated config).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Embedding dimensions.
    pub fn dims(&self) -> usize {
        self.config.dims as usize
    }

    /// Whether `user` is one of the world's users (others are cold-start).
    pub fn knows_user(&self, user: u64) -> bool {
        user < self.histories.len() as u64
    }

    /// Number of users.
    pub fn users(&self) -> usize {
        self.histories.len()
    }

    /// Item ids, most popular first.
    pub fn by_popularity(&self) -> &[u64] {
        &self.by_popularity
    }

    /// Ids of one category's items, most popular first.
    pub fn category_items(&self, category: u32) -> &[u64] {
        self.by_category
            .get(category as usize)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// An item's embedding (unit length).
    pub fn item_embedding(&self, id: u64) -> Option<&[f32]> {
        row(&self.item_embeddings, id, self.dims())
    }

    /// All item embeddings, `items x dims`, row per item id.
    pub fn item_embeddings(&self) -> &[f32] {
        &self.item_embeddings
    }

    /// A known user's embedding (unit length).
    pub fn user_embedding(&self, user: u64) -> Option<&[f32]> {
        row(&self.user_embeddings, user, self.dims())
    }

    /// A known user's interacted items, newest first (empty for others).
    pub fn history(&self, user: u64) -> &[u64] {
        usize::try_from(user)
            .ok()
            .and_then(|u| self.histories.get(u))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Display title of an item.
    pub fn title(&self, item: &Item) -> String {
        format!("{} #{}", self.category_name(item.category), item.id)
    }

    /// Display name of a category.
    pub fn category_name(&self, category: u32) -> String {
        const NAMES: [&str; 12] = [
            "news", "sports", "music", "tech", "food", "travel", "gaming", "film", "science",
            "fashion", "comedy", "finance",
        ];
        let base = NAMES[category as usize % NAMES.len()];
        match category as usize / NAMES.len() {
            0 => base.to_owned(),
            k => format!("{base}-{k}"),
        }
    }

    /// Display name of a creator.
    pub fn creator_name(&self, creator: u32) -> String {
        format!("creator-{creator:05}")
    }

    /// Whether the hidden ground truth is available (generated, not loaded).
    pub fn has_truth(&self) -> bool {
        self.hidden.is_some()
    }

    /// The hidden ground truth, for offline evaluation only; `None` for a
    /// world loaded from files. Computing it rebuilds every item's latent
    /// vector once, so keep the result while scoring many users.
    pub fn truth(&self) -> Option<Truth<'_>> {
        let hidden = self.hidden.as_ref()?;
        let d = self.dims();
        let mut latents = vec![0f32; self.items.len() * d];
        for (item, row) in self.items.iter().zip(latents.chunks_mut(d)) {
            item_latent(self.config.seed, item, &hidden.centroids, d, row);
        }
        Some(Truth {
            world: self,
            hidden,
            latents,
        })
    }

    /// The hidden affinity of every item for `user` (see [`World::truth`]).
    pub fn true_affinities(&self, user: u64) -> Option<Vec<f32>> {
        self.truth()?.affinities(user)
    }
}

/// The hidden ground truth of a generated world.
pub struct Truth<'w> {
    /// The world it belongs to.
    world: &'w World,
    /// User tastes and centroids.
    hidden: &'w Hidden,
    /// Every item's latent vector, `items x dims`.
    latents: Vec<f32>,
}

impl Truth<'_> {
    /// The hidden affinity of every item for `user`, by item id; `None` for
    /// an unknown user.
    pub fn affinities(&self, user: u64) -> Option<Vec<f32>> {
        let d = self.world.dims();
        let u = usize::try_from(user)
            .ok()
            .filter(|u| *u < self.world.histories.len())?;
        let taste = &self.hidden.tastes[u * d..(u + 1) * d];
        Some(
            self.world
                .items
                .iter()
                .zip(self.latents.chunks(d))
                .map(|(item, latent)| affinity(taste, latent, item))
                .collect(),
        )
    }
}

/// Row `index` of a `rows x dims` matrix; `None` past the end (ids come from
/// requests, so any `u64` must be safe here).
fn row(matrix: &[f32], index: u64, dims: usize) -> Option<&[f32]> {
    let start = usize::try_from(index).ok()?.checked_mul(dims)?;
    matrix.get(start..start.checked_add(dims)?)
}

/// Per-dimension noise scale for a noise vector of unit expected norm.
fn scale(dims: usize) -> f32 {
    1.0 / (dims as f32).sqrt()
}

/// A user's three favourite categories.
fn favourite_categories(seed: u64, user: u64, categories: u32) -> [u32; 3] {
    let mut rng = Rng::for_entity(seed, tag::HISTORY + 1, user);
    [0; 3].map(|_| rng.below(u64::from(categories)) as u32)
}

fn item_latent(seed: u64, item: &Item, centroids: &[f32], dims: usize, out: &mut [f32]) {
    let mut rng = Rng::for_entity(seed, tag::ITEM_LATENT, item.id);
    let centroid = &centroids[item.category as usize * dims..(item.category as usize + 1) * dims];
    for (o, c) in out.iter_mut().zip(centroid) {
        *o = c + ITEM_SPREAD * scale(dims) * rng.gaussian();
    }
    normalize(out);
}

fn affinity(taste: &[f32], latent: &[f32], item: &Item) -> f32 {
    5.0 * dot(taste, latent) + 0.4 * item.popularity.ln() - 0.3 * item.age_days / 365.0
}

/// Samples a user's history: a pool of popular items (Zipf-like) and items of
/// their favourite categories, perturbed affinities (Gumbel), the top 20..60.
#[allow(clippy::too_many_arguments)]
fn sample_history(
    seed: u64,
    user: u64,
    taste: &[f32],
    favourites: &[u32; 3],
    items: &[Item],
    latents: &[f32],
    ranked: &[u64],
    by_category: &[Vec<u64>],
    dims: usize,
) -> Vec<u64> {
    let mut rng = Rng::for_entity(seed, tag::HISTORY, user);
    let n = items.len() as f64;
    let mut pool: Vec<u64> = Vec::with_capacity(300);
    for _ in 0..150 {
        // P(rank <= r) ~ ln(r + 1) / ln(n): Zipf with exponent 1.
        let rank = (n.powf(rng.unit()) - 1.0) as usize;
        pool.push(ranked[rank.min(ranked.len() - 1)]);
    }
    for k in 0..150usize {
        let category = favourites[if k < 90 {
            0
        } else if k < 135 {
            1
        } else {
            2
        }];
        let list = &by_category[category as usize];
        if !list.is_empty() {
            pool.push(list[rng.below(list.len() as u64) as usize]);
        }
    }
    pool.sort_unstable();
    pool.dedup();
    let mut scored: Vec<(f32, u64)> = pool
        .into_iter()
        .map(|id| {
            let item = &items[id as usize];
            let latent = &latents[id as usize * dims..(id as usize + 1) * dims];
            (affinity(taste, latent, item) + rng.gumbel(), id)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let len = 20 + rng.below(41) as usize;
    // The best-liked are the most recent: they stay at the front, newest first.
    scored.into_iter().take(len).map(|(_, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn small() -> WorldConfig {
        WorldConfig {
            items: 2_000,
            users: 50,
            categories: 8,
            creators: 40,
            dims: 16,
            ..WorldConfig::default()
        }
    }

    #[test]
    fn deterministic_from_seed() {
        let a = World::generate(&small());
        let b = World::generate(&small());
        assert_eq!(a.items, b.items);
        assert_eq!(a.item_embeddings, b.item_embeddings);
        assert_eq!(a.histories, b.histories);
        let c = World::generate(&WorldConfig { seed: 7, ..small() });
        assert_ne!(a.items, c.items);
    }

    #[test]
    fn popularity_is_zipf_and_ordered() {
        let w = World::generate(&small());
        let top = w.item(w.by_popularity()[0]).expect("top item");
        assert_eq!(top.popularity, 1.0);
        let second = w.item(w.by_popularity()[1]).expect("second item");
        assert_eq!(second.popularity, 0.5);
        assert_eq!(w.by_category.iter().map(Vec::len).sum::<usize>(), 2_000);
    }

    #[test]
    fn histories_follow_taste() {
        let w = World::generate(&small());
        let mut hit = 0.0;
        let mut base = 0.0;
        for u in 0..50 {
            let truth = w.true_affinities(u).expect("generated world");
            let h = w.history(u);
            assert!((20..=60).contains(&h.len()), "{}", h.len());
            hit += h.iter().map(|i| truth[*i as usize]).sum::<f32>() / h.len() as f32;
            base += truth.iter().sum::<f32>() / truth.len() as f32;
        }
        assert!(
            hit > base + 1.0,
            "history affinity {hit} vs catalogue {base}"
        );
    }

    #[test]
    fn any_id_is_safe() {
        let w = World::generate(&small());
        assert!(w.item_embedding(u64::MAX).is_none());
        assert!(w.user_embedding(u64::MAX).is_none());
        assert!(w.item(u64::MAX).is_none());
        assert!(w.history(u64::MAX).is_empty());
    }

    #[test]
    fn embeddings_are_unit_and_informative() {
        let w = World::generate(&small());
        let e = w.item_embedding(5).expect("item 5");
        assert!((dot(e, e) - 1.0).abs() < 1e-4);
        // A user's embedding is closer to items they interacted with than to average items.
        let u = w.user_embedding(3).expect("user 3");
        let seen: f32 = w
            .history(3)
            .iter()
            .filter_map(|i| w.item_embedding(*i))
            .map(|e| dot(u, e))
            .sum::<f32>()
            / w.history(3).len() as f32;
        let all: f32 = (0..2_000)
            .filter_map(|i| w.item_embedding(i))
            .map(|e| dot(u, e))
            .sum::<f32>()
            / 2_000.0;
        assert!(seen > all + 0.1, "{seen} vs {all}");
    }
}
