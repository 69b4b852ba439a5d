//! The fine-rank model: logistic regression over per-candidate features,
//! scored in one batch, stored as JSON.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Feature names, in the order of [`Features`].
pub const FEATURES: [&str; 7] = [
    "dot",
    "category_affinity",
    "popularity",
    "freshness",
    "channel_ann",
    "channel_i2i",
    "channel_popular",
];

/// One candidate's features, in [`FEATURES`] order.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Features(pub [f32; FEATURES.len()]);

/// A trained logistic regression.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Version name experiments select it by (`finerank.model`).
    pub version: String,
    /// Feature names the weights belong to; must equal [`FEATURES`].
    pub features: Vec<String>,
    /// One weight per feature.
    pub weights: Vec<f32>,
    /// Intercept.
    pub bias: f32,
    /// How it was trained, for the record.
    pub trained: TrainInfo,
}

/// Provenance of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainInfo {
    /// World seed it was trained on.
    pub world_seed: u64,
    /// Training examples.
    pub examples: usize,
    /// Passes over the examples.
    pub epochs: usize,
    /// L2 penalty.
    pub l2: f32,
    /// Log loss on the last epoch.
    pub final_log_loss: f32,
}

/// A model file is missing or malformed.
#[derive(Debug, thiserror::Error)]
#[error("model file {}: {message}", path.display())]
pub struct ModelError {
    /// The file.
    pub path: std::path::PathBuf,
    /// What is wrong.
    pub message: String,
}

impl Model {
    /// Probability of engagement for each row.
    pub fn score(&self, rows: &[Features]) -> Vec<f32> {
        rows.iter().map(|f| sigmoid(self.logit(f))).collect()
    }

    pub(crate) fn logit(&self, f: &Features) -> f32 {
        self.bias
            + f.0
                .iter()
                .zip(&self.weights)
                .map(|(x, w)| x * w)
                .sum::<f32>()
    }

    /// Checks the model matches this code's features.
    pub fn check(&self) -> Result<(), String> {
        if self.features != FEATURES {
            return Err(format!(
                "features {:?} do not match {:?}",
                self.features, FEATURES
            ));
        }
        if self.weights.len() != FEATURES.len() {
            return Err(format!(
                "{} weights for {} features",
                self.weights.len(),
                FEATURES.len()
            ));
        }
        if !self
            .weights
            .iter()
            .chain([&self.bias])
            .all(|w| w.is_finite())
        {
            return Err("a weight is not finite".into());
        }
        Ok(())
    }

    /// Reads and checks a model file.
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        let err = |message: String| ModelError {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let model: Model = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        model.check().map_err(err)?;
        Ok(model)
    }

    /// Writes the model as JSON.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let err = |message: String| ModelError {
            path: path.to_owned(),
            message,
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| err(e.to_string()))?;
        std::fs::write(path, text).map_err(|e| err(e.to_string()))
    }
}

pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        Model {
            version: "t".into(),
            features: FEATURES.map(String::from).to_vec(),
            weights: vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            bias: 0.0,
            trained: TrainInfo {
                world_seed: 1,
                examples: 0,
                epochs: 0,
                l2: 0.0,
                final_log_loss: 0.0,
            },
        }
    }

    #[test]
    fn scores_are_probabilities_ordered_by_logit() {
        let m = model();
        let s = m.score(&[
            Features([2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
            Features::default(),
        ]);
        assert!(s[0] > s[1] && (s[1] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn corrupt_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v1.json");
        std::fs::write(&path, "{ not json").expect("write");
        let e = Model::load(&path).expect_err("corrupt");
        assert!(e.to_string().contains("v1.json"), "{e}");
        let mut m = model();
        m.weights.pop();
        m.save(&path).expect("save");
        assert!(
            Model::load(&path)
                .expect_err("short")
                .to_string()
                .contains("weights")
        );
    }
}
