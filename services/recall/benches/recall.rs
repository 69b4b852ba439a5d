//! Recall's own work per request on the default world (50,000 items x 64
//! dims): ANN with the user's embedding, i2i from five recent items,
//! popularity fill, seen-filter, 1,000 candidates.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use recall::{Config, Query, RecallStage};
use world::{World, WorldConfig};

fn bench(c: &mut Criterion) {
    let world = Arc::new(World::generate(&WorldConfig::default()));
    let stage = RecallStage::new(world.clone(), Config::default());
    let queries: Vec<Query> = (0..64u64)
        .map(|k| Query {
            user: k * 97,
            recent: world.history(k * 97).to_vec(),
            ..Query::default()
        })
        .collect();
    let mut i = 0;
    c.bench_function("recall/known_user", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            black_box(stage.recall(&queries[i]).expect("recall"))
        })
    });
    let cold = Query {
        user: u64::MAX,
        ..Query::default()
    };
    c.bench_function("recall/cold_user", |b| {
        b.iter(|| black_box(stage.recall(&cold).expect("recall")))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
