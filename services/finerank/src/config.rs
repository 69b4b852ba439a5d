//! The `[finerank]` config section.

use serde::{Deserialize, Serialize};

/// Fine-rank defaults; experiments override `finerank.keep` and `finerank.model`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Candidates kept after scoring.
    pub keep: u32,
    /// Besides the best `keep`, the best candidates of each category up to
    /// this many per category are kept as a reserve (marked `reserve`), so
    /// rerank can satisfy its per-page caps when the best-scored candidates
    /// crowd into a few categories. 0 keeps no reserve.
    pub reserve_per_category: u32,
    /// Model version used when no experiment picks one (`v1` or `v2`).
    pub model: String,
    /// Directory with `v1.json` and `v2.json` (written by `feeds train`);
    /// when absent, both are trained from the world at start-up.
    pub model_dir: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            keep: 200,
            reserve_per_category: 10,
            model: "v1".into(),
            model_dir: None,
        }
    }
}

impl Config {
    /// Checks the values; errors name the key under `finerank.`.
    pub fn validate(&self) -> Result<(), proxy_api::ConfigError> {
        if !(1..=5_000).contains(&self.keep) {
            return Err(proxy_api::ConfigError::new(
                "finerank.keep",
                format!("{} is out of range 1..=5000", self.keep),
            ));
        }
        if self.reserve_per_category > 1_000 {
            return Err(proxy_api::ConfigError::new(
                "finerank.reserve_per_category",
                format!("{} is out of range 0..=1000", self.reserve_per_category),
            ));
        }
        let known: Vec<String> = crate::TrainParams::versions()
            .into_iter()
            .map(|p| p.version)
            .collect();
        if !known.contains(&self.model) {
            return Err(proxy_api::ConfigError::new(
                "finerank.model",
                format!(
                    "unknown model {:?} (known: {})",
                    self.model,
                    known.join(", ")
                ),
            ));
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
    fn unknown_model_rejected() {
        let cfg = Config {
            model: "v9".into(),
            ..Config::default()
        };
        assert_eq!(cfg.validate().expect_err("v9").key, "finerank.model");
    }
}
