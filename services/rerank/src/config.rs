//! The `[rerank]` config section.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Rerank defaults; experiments override `rerank.lambda`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// MMR trade-off: 1.0 is pure relevance, 0.0 pure diversity.
    pub lambda: f32,
    /// Page rules for requests whose tenant has none of its own.
    pub rules: PageRules,
    /// Page rules by tenant (the `x-tenant` of the request).
    pub tenants: BTreeMap<String, PageRules>,
}

/// Per-tenant page rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PageRules {
    /// Most items of one category on a page.
    pub max_per_category: u32,
    /// Most items of one creator on a page.
    pub max_per_creator: u32,
    /// Added to relevance (in `[0, 1]`) times `exp(-age_days / 7)`.
    pub freshness_boost: f32,
}

impl Default for PageRules {
    fn default() -> Self {
        Self {
            max_per_category: 4,
            max_per_creator: 2,
            freshness_boost: 0.1,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let mut tenants = BTreeMap::new();
        tenants.insert(
            "lite".to_owned(),
            PageRules {
                max_per_category: 3,
                max_per_creator: 1,
                freshness_boost: 0.3,
            },
        );
        Self {
            lambda: 0.7,
            rules: PageRules::default(),
            tenants,
        }
    }
}

impl PageRules {
    fn validate(&self, at: &str) -> Result<(), proxy_api::ConfigError> {
        for (key, v) in [
            ("max_per_category", self.max_per_category),
            ("max_per_creator", self.max_per_creator),
        ] {
            if v == 0 {
                return Err(proxy_api::ConfigError::new(
                    format!("{at}.{key}"),
                    "must be at least 1",
                ));
            }
        }
        if !(0.0..=10.0).contains(&self.freshness_boost) {
            return Err(proxy_api::ConfigError::new(
                format!("{at}.freshness_boost"),
                format!("{} is outside 0.0..=10.0", self.freshness_boost),
            ));
        }
        Ok(())
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
        self.rules.validate("rerank.rules")?;
        for (name, rules) in &self.tenants {
            rules.validate(&format!("rerank.tenants.{name}"))?;
        }
        Ok(())
    }

    /// The rules for `tenant`.
    pub fn rules_for(&self, tenant: Option<&str>) -> &PageRules {
        tenant
            .and_then(|t| self.tenants.get(t))
            .unwrap_or(&self.rules)
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
        let cfg = Config {
            lambda: 1.5,
            ..Config::default()
        };
        assert_eq!(cfg.validate().expect_err("1.5").key, "rerank.lambda");
        let mut cfg = Config::default();
        cfg.tenants.get_mut("lite").expect("lite").max_per_creator = 0;
        assert_eq!(
            cfg.validate().expect_err("0").key,
            "rerank.tenants.lite.max_per_creator"
        );
    }
}
