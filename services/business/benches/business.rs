//! Business's own work per request on the default world: validating the
//! request against its tenant, then filtering, slicing and filling metadata
//! into a page of 20 out of 200 ranked items.

use std::hint::black_box;
use std::sync::Arc;

use business::{BusinessStage, Config};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use proxy_api::pb;
use world::{World, WorldConfig};

fn bench(c: &mut Criterion) {
    let world = Arc::new(World::generate(&WorldConfig::default()));
    let stage = BusinessStage::new(
        world.clone(),
        Config::default(),
        Arc::new(proxy_api::Unimplemented),
    );
    let ranked: Vec<pb::ScoredItem> = world
        .by_popularity()
        .iter()
        .take(200)
        .map(|id| pb::ScoredItem {
            item_id: *id,
            score: 0.5,
            channel: "popular".into(),
            reserve: false,
        })
        .collect();
    let request = pb::GetFeedRequest {
        user_id: "42".into(),
        page_size: 20,
        ..Default::default()
    };
    c.bench_function("business/check_and_page", |b| {
        b.iter_batched(
            || ranked.clone(),
            |r| {
                let (tenant, page) = stage.check(None, &request).expect("valid");
                black_box(stage.page(&tenant, page, r))
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
