//! Per-candidate features, assembled the same way for serving and training.

use world::World;

use crate::Features;
use crate::stage::ChannelTag;

/// Feature assembly for one user and their context.
pub(crate) struct FeatureBuilder<'w> {
    /// The catalogue.
    world: &'w World,
    /// The user's embedding, or the mean of their context items', or zeros.
    user: Vec<f32>,
    /// Share of the context in each category.
    affinity: Vec<f32>,
    /// `ln(items)`, to scale log popularity into `[0, 1]`.
    log_items: f32,
}

impl<'w> FeatureBuilder<'w> {
    pub(crate) fn new(world: &'w World, user: u64, context: &[u64]) -> Self {
        let dims = world.dims();
        let mut affinity = vec![0f32; world.config().categories as usize];
        let mut mean = vec![0f32; dims];
        let mut known = 0f32;
        for item in context.iter().filter_map(|id| world.item(*id)) {
            affinity[item.category as usize] += 1.0;
            if let Some(e) = world.item_embedding(item.id) {
                mean.iter_mut().zip(e).for_each(|(m, x)| *m += x);
            }
            known += 1.0;
        }
        if known > 0.0 {
            affinity.iter_mut().for_each(|a| *a /= known);
        }
        let user = match world.user_embedding(user) {
            Some(e) => e.to_vec(),
            None => {
                world::normalize(&mut mean);
                mean
            }
        };
        Self {
            world,
            user,
            affinity,
            log_items: (world.len().max(2) as f32).ln(),
        }
    }

    pub(crate) fn category_in_context(&self, item: u64) -> bool {
        self.world
            .item(item)
            .is_some_and(|i| self.affinity[i.category as usize] > 0.0)
    }

    pub(crate) fn row(&self, item: u64, channel: ChannelTag) -> Features {
        let Some(it) = self.world.item(item) else {
            return Features::default();
        };
        let dot = self
            .world
            .item_embedding(item)
            .map_or(0.0, |e| world::dot(&self.user, e));
        let onehot = |c: ChannelTag| if c == channel { 1.0 } else { 0.0 };
        Features([
            dot,
            self.affinity[it.category as usize],
            1.0 + it.popularity.ln() / self.log_items,
            (-it.age_days / 30.0).exp(),
            onehot(ChannelTag::Ann),
            onehot(ChannelTag::I2i),
            onehot(ChannelTag::Popular),
        ])
    }
}
