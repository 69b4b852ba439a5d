//! The catalogue: generation and look-ups.

use crate::{WorldConfig, mix, unit};

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

/// The generated world, read-only once built; share it with `Arc`.
#[derive(Debug)]
pub struct World {
    /// What it was generated from.
    config: WorldConfig,
    /// Items by id.
    items: Vec<Item>,
    /// Item ids, most popular first.
    by_popularity: Vec<u64>,
    /// Per category, its item ids, most popular first.
    by_category: Vec<Vec<u64>>,
}

impl World {
    /// Generates the world `config` describes. Deterministic: the same config
    /// gives the same world in every process.
    pub fn generate(config: &WorldConfig) -> Self {
        let seed = config.seed;
        let n = u64::from(config.items);
        // Popularity rank is a seeded permutation of ids, so popular items are
        // spread over the id space and over categories.
        let mut ranked: Vec<u64> = (0..n).collect();
        ranked.sort_by_key(|id| mix(seed, &[1, *id]));
        let mut rank_of = vec![0u64; ranked.len()];
        for (rank, id) in ranked.iter().enumerate() {
            rank_of[*id as usize] = rank as u64;
        }
        let items: Vec<Item> = (0..n)
            .map(|id| Item {
                id,
                category: (mix(seed, &[2, id]) % u64::from(config.categories)) as u32,
                creator: (mix(seed, &[3, id]) % u64::from(config.creators)) as u32,
                age_days: (unit(seed, &[4, id]) * 365.0) as f32,
                // Zipf with exponent 1: popularity of rank r is 1 / (r + 1).
                popularity: 1.0 / (rank_of[id as usize] as f32 + 1.0),
            })
            .collect();
        let mut by_category = vec![Vec::new(); config.categories as usize];
        for id in &ranked {
            by_category[items[*id as usize].category as usize].push(*id);
        }
        Self {
            config: config.clone(),
            items,
            by_popularity: ranked,
            by_category,
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

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when the catalogue is empty (never, for a validated config).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether `user` is one of the world's users (others are cold-start).
    pub fn knows_user(&self, user: u64) -> bool {
        user < u64::from(self.config.users)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> WorldConfig {
        WorldConfig {
            items: 1_000,
            users: 50,
            categories: 8,
            creators: 40,
            ..WorldConfig::default()
        }
    }

    #[test]
    fn deterministic_from_seed() {
        let a = World::generate(&small());
        let b = World::generate(&small());
        assert_eq!(a.items, b.items);
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
        assert_eq!(w.by_category.iter().map(Vec::len).sum::<usize>(), 1_000);
    }
}
