//! Recall's own work per request on the default world (50,000 items x 64
//! dims), and the user channel's search structures side by side.
//!
//! - `recall/known_user`: the stage as configured by default (flat user
//!   channel with category floors, i2i from the precomputed table, popularity
//!   fill, seen-filter, 1,000 candidates).
//! - `recall/known_user_hnsw_search`: the path this replaced, in the same
//!   run: HNSW for the user channel (k = 500 + history) and one HNSW search
//!   per recent item (five) for i2i, then the same merge.
//! - `ann/*`: one user-channel query of k = 500: the flat scan, HNSW, and
//!   exact `f32` dot products over the whole catalogue. Before the timings,
//!   each structure's recall@500 against the exact answer is printed.

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use recall::{AnnIndex, Categories, Config, FlatIndex, IndexParams, Query, RecallStage};
use world::{World, WorldConfig};

const K: usize = 500;

fn exact(world: &World, q: &[f32], k: usize) -> Vec<(u64, f32)> {
    let mut all: Vec<(u64, f32)> = world
        .item_embeddings()
        .chunks_exact(world.dims())
        .enumerate()
        .map(|(i, e)| (i as u64, world::dot(q, e)))
        .collect();
    all.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all
}

/// The replaced recall path: HNSW user channel, five i2i HNSW searches,
/// popularity fill, with the old quotas (500 / 300 / 200).
fn hnsw_search_recall(world: &World, index: &AnnIndex, user: u64, recent: &[u64]) -> usize {
    let mut taken: HashSet<u64> = recent.iter().copied().collect();
    let mut out = Vec::with_capacity(1_000);
    if let Some(v) = world.user_embedding(user) {
        out.extend(
            index
                .nearest(v, 500 + recent.len())
                .into_iter()
                .filter(|(id, _)| taken.insert(*id))
                .take(500),
        );
    }
    let window = recent.len().min(5);
    if window > 0 {
        let per_item = 300usize.div_ceil(window) + window;
        let lists: Vec<Vec<(u64, f32)>> = recent[..window]
            .iter()
            .filter_map(|id| world.item_embedding(*id))
            .map(|e| index.nearest(e, per_item))
            .collect();
        let room = 800 - out.len();
        let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
        let found: Vec<(u64, f32)> = (0..longest)
            .flat_map(|k| lists.iter().filter_map(move |l| l.get(k).copied()))
            .filter(|(id, _)| taken.insert(*id))
            .take(room)
            .collect();
        out.extend(found);
    }
    let room = 1_000 - out.len();
    let popular: Vec<(u64, f32)> = world
        .by_popularity()
        .iter()
        .filter(|id| taken.insert(**id))
        .take(room)
        .map(|id| (*id, 0.0))
        .collect();
    out.extend(popular);
    out.len()
}

fn bench(c: &mut Criterion) {
    let world = Arc::new(World::generate(&WorldConfig::default()));
    let config = Config::default();
    let stage = RecallStage::new(world.clone(), config.clone());
    let params = IndexParams {
        m: config.hnsw_m as usize,
        ef_construction: config.hnsw_ef_construction as usize,
        ef_search: config.hnsw_ef_search as usize,
        shards: config.index_shards as usize,
    };
    let hnsw = AnnIndex::build(&world, params);
    let flat = FlatIndex::build(&world);
    let users: Vec<u64> = (0..64u64).map(|k| k * 97).collect();
    let queries: Vec<Query> = users
        .iter()
        .map(|u| Query {
            user: *u,
            recent: world.history(*u).to_vec(),
            ..Query::default()
        })
        .collect();

    // Quality of the user channel's structures against exact search.
    let all = Categories::all();
    let (mut flat_hits, mut hnsw_hits) = (0, 0);
    for u in &users {
        let q = world.user_embedding(*u).expect("known user");
        let truth: HashSet<u64> = exact(&world, q, K).into_iter().map(|x| x.0).collect();
        flat_hits += flat
            .search(q, K, 0, &all, |_| false)
            .iter()
            .filter(|x| truth.contains(&x.0))
            .count();
        hnsw_hits += hnsw
            .nearest(q, K)
            .iter()
            .filter(|x| truth.contains(&x.0))
            .count();
    }
    let of = (users.len() * K) as f64;
    println!(
        "recall@{K} against exact f32 search over {} users: flat {:.4}, hnsw {:.4}",
        users.len(),
        flat_hits as f64 / of,
        hnsw_hits as f64 / of
    );

    let mut i = 0;
    c.bench_function("recall/known_user", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            black_box(stage.recall(&queries[i]).expect("recall"))
        })
    });
    let mut i = 0;
    c.bench_function("recall/known_user_hnsw_search", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            black_box(hnsw_search_recall(
                &world,
                &hnsw,
                queries[i].user,
                &queries[i].recent,
            ))
        })
    });
    let cold = Query {
        user: u64::MAX,
        ..Query::default()
    };
    c.bench_function("recall/cold_user", |b| {
        b.iter(|| black_box(stage.recall(&cold).expect("recall")))
    });

    let vectors: Vec<&[f32]> = users
        .iter()
        .map(|u| world.user_embedding(*u).expect("known user"))
        .collect();
    let mut i = 0;
    c.bench_function("ann/flat_k500", |b| {
        b.iter(|| {
            i = (i + 1) % vectors.len();
            black_box(flat.search(vectors[i], K, 0, &all, |_| false))
        })
    });
    let mut i = 0;
    c.bench_function("ann/hnsw_k500", |b| {
        b.iter(|| {
            i = (i + 1) % vectors.len();
            black_box(hnsw.nearest(vectors[i], K))
        })
    });
    let mut i = 0;
    c.bench_function("ann/exact_f32_k500", |b| {
        b.iter(|| {
            i = (i + 1) % vectors.len();
            black_box(exact(&world, vectors[i], K))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
