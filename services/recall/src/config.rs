//! The `[recall]` config section.

use serde::{Deserialize, Serialize};

/// Default quotas and index parameters; experiments override the quotas
/// through `recall.quota.<channel>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Candidates from ANN search with the user's embedding (`ann` channel).
    pub quota_ann: u32,
    /// Candidates near the user's recent items (`i2i` channel).
    pub quota_i2i: u32,
    /// Popular items (`popular` channel); also fills what the others leave.
    pub quota_popular: u32,
    /// Recent items the i2i channel takes neighbours of.
    pub history_window: u32,
    /// Neighbours per item in the item-to-item table (built with the index,
    /// or loaded with it from `world.dir`).
    pub i2i_neighbours: u32,
    /// How the user channel searches: `flat` (exact over quantised codes,
    /// one block per category) or `hnsw` (the HNSW graphs below; for
    /// catalogues too large to scan per request).
    pub ann: AnnKind,
    /// Nearest items every allowed category contributes to the ANN channel
    /// (`flat` only), so the candidates span the allowed catalogue; the
    /// rest of the quota is the nearest overall.
    pub category_floor: u32,
    /// HNSW links per node.
    pub hnsw_m: u32,
    /// HNSW candidate list while building.
    pub hnsw_ef_construction: u32,
    /// HNSW candidate list while searching.
    pub hnsw_ef_search: u32,
    /// Independent HNSW graphs the items are dealt into: built side by side
    /// (one thread each), all searched per query. Part of what makes the
    /// index, so every process of a deployment must agree on it.
    pub index_shards: u32,
}

/// The user channel's search structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnnKind {
    /// Exact search over quantised codes, one block per category.
    Flat,
    /// HNSW graphs; constraints and category quotas are applied to an
    /// oversampled result.
    Hnsw,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            quota_ann: 500,
            quota_i2i: 300,
            quota_popular: 200,
            history_window: 5,
            i2i_neighbours: 64,
            ann: AnnKind::Flat,
            category_floor: 2,
            hnsw_m: 10,
            hnsw_ef_construction: 40,
            hnsw_ef_search: 128,
            index_shards: 2,
        }
    }
}

impl Config {
    /// Checks the values; errors name the key under `recall.`.
    pub fn validate(&self) -> Result<(), proxy_api::ConfigError> {
        let total =
            u64::from(self.quota_ann) + u64::from(self.quota_i2i) + u64::from(self.quota_popular);
        if total == 0 || total > 10_000 {
            return Err(proxy_api::ConfigError::new(
                "recall.quota_ann",
                format!("the three quotas add up to {total}; it must be in 1..=10000"),
            ));
        }
        let ranges = [
            ("recall.history_window", self.history_window, 1, 100),
            ("recall.i2i_neighbours", self.i2i_neighbours, 1, 1_000),
            ("recall.category_floor", self.category_floor, 0, 1_000),
            ("recall.hnsw_m", self.hnsw_m, 2, 128),
            (
                "recall.hnsw_ef_construction",
                self.hnsw_ef_construction,
                8,
                2_000,
            ),
            ("recall.hnsw_ef_search", self.hnsw_ef_search, 8, 10_000),
            ("recall.index_shards", self.index_shards, 1, 64),
        ];
        for (key, v, min, max) in ranges {
            if !(min..=max).contains(&v) {
                return Err(proxy_api::ConfigError::new(
                    key,
                    format!("{v} is out of range {min}..={max}"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn bad_values_rejected() {
        let zero = Config {
            quota_ann: 0,
            quota_i2i: 0,
            quota_popular: 0,
            ..Config::default()
        };
        assert_eq!(zero.validate().expect_err("zero").key, "recall.quota_ann");
        let m = Config {
            hnsw_m: 1,
            ..Config::default()
        };
        assert_eq!(m.validate().expect_err("m").key, "recall.hnsw_m");
    }
}
