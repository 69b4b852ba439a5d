//! Size and seed of the generated world.

use serde::{Deserialize, Serialize};

/// How big a world to generate, and from which seed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorldConfig {
    /// Every random choice derives from it.
    pub seed: u64,
    /// Items in the catalogue; ids are `0..items`.
    pub items: u32,
    /// Users; ids are `0..users`, others are cold-start.
    pub users: u32,
    /// Distinct categories.
    pub categories: u32,
    /// Distinct creators.
    pub creators: u32,
    /// Embedding dimensions.
    pub dims: u32,
    /// Load the world from this directory (written by `feeds world --out`)
    /// instead of generating it; the sizes above are then ignored.
    pub dir: Option<String>,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            items: 50_000,
            users: 10_000,
            categories: 24,
            creators: 2_000,
            dims: 64,
            dir: None,
        }
    }
}

/// A world config value is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("world.{key}: {message}")]
pub struct WorldError {
    /// Field name inside the `world` section.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

impl WorldConfig {
    /// Checks every size is usable.
    pub fn validate(&self) -> Result<(), WorldError> {
        let check = |key: &'static str, v: u32, min: u32, max: u32| {
            if (min..=max).contains(&v) {
                Ok(())
            } else {
                Err(WorldError {
                    key,
                    message: format!("{v} is out of range {min}..={max}"),
                })
            }
        };
        check("items", self.items, 100, 20_000_000)?;
        check("users", self.users, 1, 100_000_000)?;
        check("categories", self.categories, 1, 10_000)?;
        check("creators", self.creators, 1, 10_000_000)?;
        check("dims", self.dims, 2, 1_024)?;
        if self.categories > self.items {
            return Err(WorldError {
                key: "categories",
                message: format!("{} categories for {} items", self.categories, self.items),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(WorldConfig::default().validate(), Ok(()));
    }

    #[test]
    fn rejects_zero_dims() {
        let cfg = WorldConfig {
            dims: 0,
            ..WorldConfig::default()
        };
        assert_eq!(cfg.validate().expect_err("zero").key, "dims");
    }

    #[test]
    fn rejects_tiny_catalogue() {
        let cfg = WorldConfig {
            items: 5,
            ..WorldConfig::default()
        };
        assert_eq!(cfg.validate().expect_err("too small").key, "items");
    }
}
