//! The `[recall]` config section.

use serde::{Deserialize, Serialize};

/// Default quotas; experiments override them through `recall.quota.<channel>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Candidates from the user's taste (`personal` channel).
    pub quota_personal: u32,
    /// Candidates related to the user's recent items (`i2i` channel).
    pub quota_i2i: u32,
    /// Popular items, the cold-start fallback (`popular` channel).
    pub quota_popular: u32,
    /// Recent items considered by the i2i channel.
    pub history_window: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            quota_personal: 400,
            quota_i2i: 300,
            quota_popular: 300,
            history_window: 20,
        }
    }
}

impl Config {
    /// Checks the values; errors name the key under `recall.`.
    pub fn validate(&self) -> Result<(), proxy_api::ConfigError> {
        let total = self.quota_personal + self.quota_i2i + self.quota_popular;
        if total == 0 || total > 10_000 {
            return Err(proxy_api::ConfigError::new(
                "recall.quota_personal",
                format!("the three quotas add up to {total}; it must be in 1..=10000"),
            ));
        }
        if self.history_window == 0 {
            return Err(proxy_api::ConfigError::new(
                "recall.history_window",
                "must be at least 1",
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
    fn zero_quotas_rejected() {
        let cfg = Config {
            quota_personal: 0,
            quota_i2i: 0,
            quota_popular: 0,
            ..Config::default()
        };
        assert_eq!(
            cfg.validate().expect_err("zero").key,
            "recall.quota_personal"
        );
    }
}
