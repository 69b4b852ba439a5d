//! Fine-rank's own work per request on the default world: features for
//! 1,000 candidates, one batch of logistic-regression scores, top 200.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use finerank::{Config, FineRankStage, Query};
use proxy_api::pb;
use world::{World, WorldConfig};

fn bench(c: &mut Criterion) {
    let world = Arc::new(World::generate(&WorldConfig::default()));
    let stage = FineRankStage::new(
        world.clone(),
        Config::default(),
        Arc::new(proxy_api::Unimplemented),
    )
    .expect("models train");
    let user = 42;
    let recent = world.history(user).to_vec();
    let embedding = world.user_embedding(user).expect("known user");
    // 1,000 candidates as recall would send: the nearest by brute force.
    let mut scored: Vec<(u64, f32)> = (0..world.len() as u64)
        .map(|i| {
            (
                i,
                world::dot(embedding, world.item_embedding(i).expect("item")),
            )
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    let candidates: Vec<pb::ScoredItem> = scored
        .iter()
        .take(1_000)
        .enumerate()
        .map(|(k, (id, s))| pb::ScoredItem {
            item_id: *id,
            score: *s,
            channel: ["ann", "i2i", "popular"][k % 3].into(),
            reserve: false,
        })
        .collect();
    let query = Query {
        user,
        recent,
        ..Query::default()
    };
    c.bench_function("finerank/1000_candidates", |b| {
        b.iter_batched(
            || candidates.clone(),
            |c| black_box(stage.rank(&query, c).expect("rank")),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
