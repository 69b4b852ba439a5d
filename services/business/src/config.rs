//! The `[business]` config section: tenants.

use std::collections::BTreeMap;

use proxy_api::ConfigError;
use serde::{Deserialize, Serialize};

/// Largest page business ever asks rerank for (the fine-rank pool).
pub const MAX_POOL: u32 = 200;

/// Tenants and which one serves requests that name none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Tenant used when a request carries no `x-tenant`.
    pub default_tenant: String,
    /// Tenants by name.
    pub tenants: BTreeMap<String, TenantConfig>,
}

/// What one tenant may ask for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantConfig {
    /// Largest page; a larger `page_size` is served at this size (AIP-158).
    pub max_page_size: u32,
    /// The page size of a request whose `page_size` is 0 (proto3's "unset").
    pub default_page_size: u32,
    /// Category names this tenant may show; empty means all.
    pub allowed_categories: Vec<String>,
    /// Creator names this tenant never shows.
    pub blocked_creators: Vec<String>,
    /// Experiment layers this tenant takes part in; empty means all.
    pub layers: Vec<String>,
    /// When a stage below fails or runs out of time, serve a page of popular
    /// items within the tenant's constraints, marked `degraded`, instead of
    /// the error.
    pub degraded_pages: bool,
}

impl Default for TenantConfig {
    fn default() -> Self {
        Self {
            max_page_size: 50,
            default_page_size: 10,
            allowed_categories: Vec::new(),
            blocked_creators: Vec::new(),
            layers: Vec::new(),
            degraded_pages: false,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let mut tenants = BTreeMap::new();
        tenants.insert("default".to_owned(), TenantConfig::default());
        tenants.insert(
            "lite".to_owned(),
            TenantConfig {
                max_page_size: 20,
                default_page_size: 10,
                allowed_categories: ["news", "sports", "music", "tech", "food", "travel"]
                    .map(String::from)
                    .to_vec(),
                blocked_creators: Vec::new(),
                layers: vec!["ranking".to_owned()],
                degraded_pages: false,
            },
        );
        Self {
            default_tenant: "default".into(),
            tenants,
        }
    }
}

impl Config {
    /// Checks tenants; errors name the key under `business.`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.tenants.contains_key(&self.default_tenant) {
            return Err(ConfigError::new(
                "business.default_tenant",
                format!("{:?} is not one of business.tenants", self.default_tenant),
            ));
        }
        for (name, tenant) in &self.tenants {
            if !(1..=MAX_POOL).contains(&tenant.max_page_size) {
                return Err(ConfigError::new(
                    format!("business.tenants.{name}.max_page_size"),
                    format!("{} is out of range 1..={MAX_POOL}", tenant.max_page_size),
                ));
            }
            if !(1..=tenant.max_page_size).contains(&tenant.default_page_size) {
                return Err(ConfigError::new(
                    format!("business.tenants.{name}.default_page_size"),
                    format!(
                        "{} is out of range 1..={} (its max_page_size)",
                        tenant.default_page_size, tenant.max_page_size
                    ),
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
    fn missing_default_tenant_rejected() {
        let cfg = Config {
            default_tenant: "nobody".into(),
            ..Config::default()
        };
        assert_eq!(
            cfg.validate().expect_err("nobody").key,
            "business.default_tenant"
        );
    }

    #[test]
    fn zero_page_limit_rejected() {
        let mut cfg = Config::default();
        cfg.tenants.get_mut("lite").expect("lite").max_page_size = 0;
        assert_eq!(
            cfg.validate().expect_err("zero").key,
            "business.tenants.lite.max_page_size"
        );
    }
}
