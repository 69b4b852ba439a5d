//! The ANN index over item embeddings (HNSW, from the `hnsw_rs` crate).
//!
//! Built by inserting items one at a time in id order: `hnsw_rs` draws layer
//! levels from a fixed-seed generator, so the same world always gives the
//! same graph, and a recall pod answers exactly as the monolith does.

use hnsw_rs::prelude::{Distance, Hnsw};
use world::World;

/// `1 - a.b` for unit vectors, clamped at 0. (`anndists`' `DistDot` asserts
/// instead of clamping, and rounding makes `a.a` slightly above 1.)
#[derive(Clone, Copy, Debug, Default)]
pub struct UnitDot;

impl Distance<f32> for UnitDot {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - world::dot(a, b)).max(0.0)
    }
}

/// HNSW graph parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexParams {
    /// Links per node.
    pub m: usize,
    /// Candidate list size while building.
    pub ef_construction: usize,
    /// Candidate list size while searching (raised to k when k is larger).
    pub ef_search: usize,
}

/// Nearest items by embedding (dot product of unit vectors).
pub struct AnnIndex {
    /// The graph; owns a copy of every vector.
    hnsw: Hnsw<'static, f32, UnitDot>,
    /// Search-time candidate list size.
    ef_search: usize,
}

impl AnnIndex {
    /// Indexes every item embedding of `world`.
    pub fn build(world: &World, params: IndexParams) -> Self {
        let n = world.len();
        let layers = 16.min(((n.max(2)) as f32).ln().ceil() as usize);
        let hnsw = Hnsw::new(params.m, n, layers, params.ef_construction, UnitDot);
        for (id, embedding) in world.item_embeddings().chunks(world.dims()).enumerate() {
            hnsw.insert((embedding, id));
        }
        Self {
            hnsw,
            ef_search: params.ef_search,
        }
    }

    /// Up to `k` items nearest `query` (a unit vector), nearest first, with
    /// their similarity (dot product).
    pub fn nearest(&self, query: &[f32], k: usize) -> Vec<(u64, f32)> {
        if k == 0 {
            return Vec::new();
        }
        let mut found: Vec<(u64, f32)> = self
            .hnsw
            .search(query, k, self.ef_search.max(k))
            .into_iter()
            .map(|n| (n.d_id as u64, 1.0 - n.distance))
            .collect();
        // Stable order for equal distances, so every process agrees.
        found.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_near_neighbours_deterministically() {
        let cfg = world::WorldConfig {
            items: 2_000,
            users: 10,
            dims: 16,
            ..world::WorldConfig::default()
        };
        let world = World::generate(&cfg);
        let params = IndexParams {
            m: 12,
            ef_construction: 64,
            ef_search: 64,
        };
        let a = AnnIndex::build(&world, params);
        let b = AnnIndex::build(&world, params);
        let q = world.item_embedding(7).expect("item 7");
        let got = a.nearest(q, 20);
        assert_eq!(got, b.nearest(q, 20));
        assert_eq!(got[0].0, 7, "an item is its own nearest neighbour");
        // Against brute force: most of the true top 20 are found.
        let mut exact: Vec<(u64, f32)> = (0..2_000u64)
            .map(|i| (i, world::dot(q, world.item_embedding(i).expect("item"))))
            .collect();
        exact.sort_by(|x, y| y.1.total_cmp(&x.1));
        let truth: std::collections::HashSet<u64> = exact.iter().take(20).map(|x| x.0).collect();
        let hits = got.iter().filter(|(i, _)| truth.contains(i)).count();
        assert!(hits >= 16, "recall@20 {hits}/20");
    }
}
