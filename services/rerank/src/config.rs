//! The `[rerank]` config section.

use serde::{Deserialize, Serialize};

/// Rerank defaults; experiments override them through `rerank.<key>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// MMR trade-off: 1.0 is pure relevance, 0.0 pure diversity.
    pub lambda: f32,
    /// Most items of one category on a page.
    pub max_per_category: u32,
    /// Most items of one creator on a page.
    pub max_per_creator: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            lambda: 0.7,
            max_per_category: 4,
            max_per_creator: 2,
        }
    }
}

impl Config {
    /// Checks the values; errors name the key under `rerank.`.
    pub fn validate(&self) -> Result<(), proxy_api::ConfigError> {
        if !(0.0..=1.0).contains(&self.lambda) {
            return Err(proxy_api::ConfigError::new(
                "rerank.lambda",
                format!("{} is outside 0.0..=1.0", self.lambda),
            ));
        }
        for (key, v) in [
            ("rerank.max_per_category", self.max_per_category),
            ("rerank.max_per_creator", self.max_per_creator),
        ] {
            if v == 0 {
                return Err(proxy_api::ConfigError::new(key, "must be at least 1"));
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
    fn lambda_out_of_range_rejected() {
        let cfg = Config {
            lambda: 1.5,
            ..Config::default()
        };
        assert_eq!(cfg.validate().expect_err("1.5").key, "rerank.lambda");
    }
}
