//! Rerank's own work per request on the default world: MMR over a pool of
//! 200 scored items with category/creator caps, for a page of 20.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use rerank::{Config, PageRules, Pick, RerankStage};
use world::{World, WorldConfig};

fn bench(c: &mut Criterion) {
    let world = Arc::new(World::generate(&WorldConfig::default()));
    let stage = RerankStage::new(
        world.clone(),
        Config::default(),
        Arc::new(proxy_api::Unimplemented),
    );
    let embedding = world.user_embedding(7).expect("known user");
    let mut scored: Vec<(u64, f32)> = (0..world.len() as u64)
        .map(|i| {
            (
                i,
                world::dot(embedding, world.item_embedding(i).expect("item")),
            )
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    let pool: Vec<Pick> = scored
        .iter()
        .take(200)
        .map(|(id, s)| Pick {
            item: *id,
            score: *s,
            channel: "ann".into(),
            reserve: false,
        })
        .collect();
    let rules = PageRules::default();
    c.bench_function("rerank/mmr_200_to_20", |b| {
        b.iter_batched(
            || pool.clone(),
            |p| black_box(stage.compose(0.7, &rules, 20, 10, p)),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
