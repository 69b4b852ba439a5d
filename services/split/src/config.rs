//! The `[split]` config section: parameter defaults and experiment layers.

use std::collections::BTreeMap;

use proxy_api::ConfigError;
use serde::{Deserialize, Serialize};

/// Buckets per layer.
pub const BUCKETS: u32 = 1_000;

/// Parameter defaults and experiment layers, inline or from a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// A TOML file with `defaults` and `[[layers]]` (the shape of this
    /// section); when set, it replaces the inline values below.
    pub experiments_file: Option<String>,
    /// Parameters every request gets unless an experiment overrides them.
    pub defaults: BTreeMap<String, String>,
    /// Independent layers; a user is in at most one experiment per layer.
    pub layers: Vec<Layer>,
}

/// The content of an experiments file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Experiments {
    /// Parameters every request gets unless an experiment overrides them.
    pub defaults: BTreeMap<String, String>,
    /// Independent layers.
    pub layers: Vec<Layer>,
}

/// A layer: experiments in it own disjoint bucket ranges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// Name, as tenants refer to it.
    pub name: String,
    /// Salt of the bucket hash, so layers assign independently.
    pub salt: String,
    /// The layer's experiments.
    #[serde(default)]
    pub experiments: Vec<Experiment>,
}

/// An experiment: a bucket range and the parameters it sets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Name, returned in the assignment.
    pub name: String,
    /// Buckets `[start, end)` out of 1000.
    pub buckets: [u32; 2],
    /// Parameters it overrides.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            experiments_file: None,
            defaults: params(&[
                ("recall.quota.ann", "500"),
                ("recall.quota.i2i", "300"),
                ("recall.quota.popular", "200"),
                ("finerank.model", "v1"),
                ("finerank.keep", "200"),
                ("rerank.lambda", "0.7"),
            ]),
            layers: vec![
                Layer {
                    name: "recall".into(),
                    salt: "recall-2026-11".into(),
                    experiments: vec![Experiment {
                        name: "i2i-heavy".into(),
                        buckets: [0, 200],
                        params: params(&[("recall.quota.i2i", "500"), ("recall.quota.ann", "300")]),
                    }],
                },
                Layer {
                    name: "ranking".into(),
                    salt: "ranking-2026-11".into(),
                    experiments: vec![
                        Experiment {
                            name: "model-v2".into(),
                            buckets: [0, 300],
                            params: params(&[("finerank.model", "v2")]),
                        },
                        Experiment {
                            name: "mmr-strong".into(),
                            buckets: [300, 500],
                            params: params(&[("rerank.lambda", "0.4")]),
                        },
                    ],
                },
            ],
        }
    }
}

impl Config {
    /// The experiments in effect: the file's when `experiments_file` is set
    /// (read and checked now), else the inline ones.
    pub fn experiments(&self) -> Result<Experiments, ConfigError> {
        let Some(path) = &self.experiments_file else {
            return Ok(Experiments {
                defaults: self.defaults.clone(),
                layers: self.layers.clone(),
            });
        };
        let key = "split.experiments_file";
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(key, format!("{path}: {e}")))?;
        let experiments: Experiments =
            toml::from_str(&text).map_err(|e| ConfigError::new(key, format!("{path}: {e}")))?;
        validate_layers(&experiments.layers, "layers")
            .map_err(|e| ConfigError::new(key, format!("{path}: {e}")))?;
        Ok(experiments)
    }

    /// Checks layers and bucket ranges (and reads the experiments file, if
    /// any); errors name the key under `split.`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_layers(&self.layers, "split.layers")?;
        self.experiments().map(|_| ())
    }
}

fn validate_layers(layers: &[Layer], prefix: &str) -> Result<(), ConfigError> {
    let mut names = std::collections::BTreeSet::new();
    for (i, layer) in layers.iter().enumerate() {
        let at = format!("{prefix}[{i}]");
        if layer.name.is_empty() || !names.insert(layer.name.as_str()) {
            return Err(ConfigError::new(
                format!("{at}.name"),
                format!("layer name {:?} is empty or repeated", layer.name),
            ));
        }
        let mut ranges: Vec<(u32, u32, usize)> = Vec::new();
        for (j, exp) in layer.experiments.iter().enumerate() {
            let [start, end] = exp.buckets;
            let key = format!("{at}.experiments[{j}].buckets");
            if start >= end || end > BUCKETS {
                return Err(ConfigError::new(
                    key,
                    format!("[{start}, {end}) must satisfy start < end <= {BUCKETS}"),
                ));
            }
            if let Some((s, e, k)) = ranges.iter().find(|(s, e, _)| start < *e && *s < end) {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "[{start}, {end}) overlaps experiments[{k}] [{s}, {e}) in layer {:?}",
                        layer.name
                    ),
                ));
            }
            ranges.push((start, end, j));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn overlapping_buckets_rejected() {
        let mut cfg = Config::default();
        cfg.layers[1].experiments[1].buckets = [250, 400];
        assert_eq!(
            cfg.validate().expect_err("overlap").key,
            "split.layers[1].experiments[1].buckets"
        );
    }

    #[test]
    fn experiments_file_replaces_inline_and_is_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("exp.toml");
        std::fs::write(&path, "[defaults]\n\"rerank.lambda\" = \"0.5\"\n[[layers]]\nname = \"l\"\nsalt = \"s\"\n[[layers.experiments]]\nname = \"e\"\nbuckets = [0, 10]\n").expect("write");
        let cfg = Config {
            experiments_file: Some(path.display().to_string()),
            ..Config::default()
        };
        let exp = cfg.experiments().expect("valid file");
        assert_eq!(exp.layers.len(), 1);
        assert_eq!(
            exp.defaults.get("rerank.lambda").map(String::as_str),
            Some("0.5")
        );
        std::fs::write(&path, "[[layers]]\nname = \"l\"\nsalt = \"s\"\n[[layers.experiments]]\nname = \"e\"\nbuckets = [10, 5]\n").expect("write");
        let err = cfg.validate().expect_err("bad buckets");
        assert_eq!(err.key, "split.experiments_file");
        assert!(
            err.message.contains("exp.toml") && err.message.contains("buckets"),
            "{err}"
        );
    }

    #[test]
    fn out_of_range_buckets_rejected() {
        let mut cfg = Config::default();
        cfg.layers[0].experiments[0].buckets = [900, 1001];
        assert!(cfg.validate().is_err());
    }
}
