//! Training the fine-rank model from the world's interaction log.
//!
//! For every user the five most recent interactions are positives and the rest
//! of the history is their context (as a request would carry it). Each
//! positive gets five negatives: popular items (tagged `popular`) and random
//! items (tagged `i2i` when their category is in the context, else `ann`),
//! mirroring the recall channels. Plain SGD on log loss with L2, examples in a
//! seeded order, single-threaded: the same world gives the same weights.

use world::{World, mix};

use crate::features::FeatureBuilder;
use crate::model::{FEATURES, Model, TrainInfo, sigmoid};
use crate::{Features, stage::ChannelTag};

/// Training hyper-parameters of one model version.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainParams {
    /// Version name of the result.
    pub version: String,
    /// Passes over the examples.
    pub epochs: usize,
    /// SGD step.
    pub learning_rate: f32,
    /// L2 penalty.
    pub l2: f32,
    /// Features forced to zero (ablations), by name.
    pub without: Vec<String>,
    /// At most this many users (a deterministic prefix).
    pub max_users: usize,
}

impl TrainParams {
    /// The shipped versions: `v1` uses every feature; `v2` drops popularity
    /// and regularises harder.
    pub fn versions() -> Vec<TrainParams> {
        vec![
            TrainParams {
                version: "v1".into(),
                epochs: 4,
                learning_rate: 0.05,
                l2: 1e-5,
                without: Vec::new(),
                max_users: 20_000,
            },
            TrainParams {
                version: "v2".into(),
                epochs: 4,
                learning_rate: 0.05,
                l2: 1e-3,
                without: vec!["popularity".into()],
                max_users: 20_000,
            },
        ]
    }
}

/// Builds the labelled examples.
fn examples(world: &World, max_users: usize) -> Vec<(Features, f32)> {
    let seed = world.config().seed;
    let n = world.len() as u64;
    let mut out = Vec::new();
    for user in 0..(world.users().min(max_users) as u64) {
        let history = world.history(user);
        if history.len() < 10 {
            continue;
        }
        let (positives, context) = history.split_at(5);
        let builder = FeatureBuilder::new(world, user, context);
        for (k, pos) in positives.iter().enumerate() {
            let tag = if builder.category_in_context(*pos) {
                ChannelTag::I2i
            } else {
                ChannelTag::Ann
            };
            out.push((builder.row(*pos, tag), 1.0));
            for j in 0..5u64 {
                let draw = mix(seed, &[30, user, k as u64, j]);
                let (item, tag) = if j < 2 {
                    // Popular: the top 1% of the catalogue.
                    (
                        world.by_popularity()[(draw % (n / 100).max(1)) as usize],
                        ChannelTag::Popular,
                    )
                } else {
                    let item = draw % n;
                    let tag = if builder.category_in_context(item) {
                        ChannelTag::I2i
                    } else {
                        ChannelTag::Ann
                    };
                    (item, tag)
                };
                if !history.contains(&item) {
                    out.push((builder.row(item, tag), 0.0));
                }
            }
        }
    }
    out
}

/// Trains one model version on `world`.
pub fn train(world: &World, params: &TrainParams) -> Model {
    let data = examples(world, params.max_users);
    let mask: Vec<f32> = FEATURES
        .iter()
        .map(|f| {
            if params.without.iter().any(|w| w == f) {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    let mut model = Model {
        version: params.version.clone(),
        features: FEATURES.map(String::from).to_vec(),
        weights: vec![0.0; FEATURES.len()],
        bias: 0.0,
        trained: TrainInfo {
            world_seed: world.config().seed,
            examples: data.len(),
            epochs: params.epochs,
            l2: params.l2,
            final_log_loss: 0.0,
        },
    };
    let mut order: Vec<usize> = (0..data.len()).collect();
    for epoch in 0..params.epochs {
        order.sort_by_cached_key(|i| mix(world.config().seed, &[31, epoch as u64, *i as u64]));
        let mut loss = 0.0f64;
        for i in &order {
            let (x, y) = &data[*i];
            let p = sigmoid(model.logit(x));
            let g = p - y;
            for ((w, xi), m) in model.weights.iter_mut().zip(x.0).zip(&mask) {
                *w -= params.learning_rate * (g * xi + params.l2 * *w) * m;
            }
            model.bias -= params.learning_rate * g;
            let p = f64::from(p).clamp(1e-7, 1.0 - 1e-7);
            loss -= if *y > 0.5 { p.ln() } else { (1.0 - p).ln() };
        }
        model.trained.final_log_loss = (loss / data.len().max(1) as f64) as f32;
    }
    model
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_is_deterministic_and_learns() {
        let cfg = world::WorldConfig {
            items: 3_000,
            users: 300,
            dims: 16,
            ..world::WorldConfig::default()
        };
        let world = World::generate(&cfg);
        let params = &TrainParams::versions()[0];
        let a = train(&world, params);
        assert_eq!(a, train(&world, params));
        // Better than always guessing the base rate (log loss of p = 1/6 is 0.45).
        assert!(a.trained.final_log_loss < 0.43, "{:?}", a.trained);
        // Taste (dot) must matter positively.
        assert!(a.weights[0] > 0.0, "{:?}", a.weights);
        let v2 = train(&world, &TrainParams::versions()[1]);
        assert_eq!(v2.weights[2], 0.0, "v2 drops popularity");
    }
}
