//! Split's own work per request: bucketing the user in every layer and
//! merging the experiments' parameters over the defaults.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use split::{Config, SplitStage};

fn bench(c: &mut Criterion) {
    let stage = SplitStage::new(Config::default(), Arc::new(proxy_api::Unimplemented))
        .expect("default config");
    let users: Vec<String> = (0..1_000).map(|u| u.to_string()).collect();
    let mut i = 0;
    c.bench_function("split/assign", |b| {
        b.iter(|| {
            i = (i + 1) % users.len();
            black_box(stage.assign(&users[i], &[]))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
