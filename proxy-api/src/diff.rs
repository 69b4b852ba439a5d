//! Field-level comparison of two answers of the same method, driven by the
//! message descriptors of `proto/` (the descriptor set the reflection
//! service serves), not by code written per message: the shadow layer and
//! `feeds replay` use it to say *which* fields differ.
//!
//! Rules:
//! - Fields are named by their path from the root, without indices:
//!   `items.item_id`, `assignment.params`.
//! - Repeated fields are compared in order; a repeated field whose lengths
//!   differ is itself a difference (`items`), and the common prefix is still
//!   compared element by element.
//! - Map fields are compared by key; any difference in a map is the map
//!   field's (`assignment.params`).
//! - `float` and `double` are equal within `tolerance` (absolute, scaled by
//!   the larger magnitude when above one).
//! - Fields in `ignore` (a path, or a prefix of one) are never compared;
//!   `timings` by default, since a stage's own time is never the same twice.
//!
//! [`Verdict`] is the noise filter that Twitter's Diffy made known: a field
//! counts as different only when its candidate-vs-primary difference rate
//! clearly exceeds its primary-vs-primary rate (the noise of the service
//! itself, measured by calling the primary twice).

use std::collections::BTreeSet;
use std::sync::Arc;

use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, MessageDescriptor, ReflectMessage, Value,
};
use serde::{Deserialize, Serialize};

/// How two answers are compared, and when a difference is significant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiffOptions {
    /// Floats closer than this are equal.
    pub float_tolerance: f64,
    /// Field paths never compared (a path or its prefix).
    pub ignore: Vec<String>,
    /// A field is significant only when its raw difference rate exceeds its
    /// noise rate by at least this much (absolute, 0.01 = one point).
    pub absolute_threshold: f64,
    /// ... and, when it has noise, is at least this many times the noise rate.
    pub relative_threshold: f64,
    /// Comparisons a field needs before a verdict is given.
    pub min_compared: u64,
}

impl Default for DiffOptions {
    fn default() -> Self {
        Self {
            float_tolerance: 1e-6,
            ignore: vec!["timings".into()],
            absolute_threshold: 0.01,
            relative_threshold: 2.0,
            min_compared: 50,
        }
    }
}

impl DiffOptions {
    /// Checks the values; `prefix` is the section's dotted path.
    pub fn validate(&self, prefix: &str) -> Result<(), crate::ConfigError> {
        let bad =
            |key: &str, why: String| Err(crate::ConfigError::new(format!("{prefix}.{key}"), why));
        if !(self.float_tolerance.is_finite() && self.float_tolerance >= 0.0) {
            return bad(
                "float_tolerance",
                format!("{} is not a tolerance (0 or more)", self.float_tolerance),
            );
        }
        if !(0.0..=1.0).contains(&self.absolute_threshold) {
            return bad(
                "absolute_threshold",
                format!("{} is not a rate (0..=1)", self.absolute_threshold),
            );
        }
        if !(self.relative_threshold.is_finite() && self.relative_threshold >= 1.0) {
            return bad(
                "relative_threshold",
                format!("{} must be 1 or more", self.relative_threshold),
            );
        }
        if let Some(i) = self.ignore.iter().position(String::is_empty) {
            return bad(&format!("ignore[{i}]"), "must not be empty".into());
        }
        Ok(())
    }
}

/// Why two answers could not be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiffError {
    /// The descriptor set does not describe this message.
    #[error("no message {0} in the descriptor set")]
    UnknownMessage(String),
    /// One of the answers does not decode as that message.
    #[error("{which} answer is not a valid {message}: {error}")]
    Undecodable {
        /// `first` or `second`.
        which: &'static str,
        /// The message's full name.
        message: String,
        /// What the decoder said.
        error: String,
    },
}

/// Compares encoded messages field by field (see the module docs).
#[derive(Clone, Debug)]
pub struct Differ {
    pool: DescriptorPool,
    options: Arc<DiffOptions>,
}

impl Differ {
    /// A differ over the messages of `proto/`.
    pub fn new(options: DiffOptions) -> Self {
        // The committed descriptor set is generated from `proto/` and checked
        // by the drift test; an empty pool would only make every diff fail.
        let pool = DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET).unwrap_or_default();
        Self {
            pool,
            options: Arc::new(options),
        }
    }

    /// The options it compares with.
    pub fn options(&self) -> &DiffOptions {
        &self.options
    }

    /// The descriptor of the message `name` (`feeds.v1.RecallResponse`).
    pub fn message(&self, name: &str) -> Result<MessageDescriptor, DiffError> {
        self.pool
            .get_message_by_name(name)
            .ok_or_else(|| DiffError::UnknownMessage(name.to_owned()))
    }

    /// The full name of the response message of the method at gRPC `path`
    /// (`/feeds.v1.Recall/Recall` -> `feeds.v1.RecallResponse`).
    pub fn response_of(&self, path: &str) -> Option<String> {
        let (service, method) = path.trim_start_matches('/').split_once('/')?;
        let service = self.pool.get_service_by_name(service)?;
        let method = service.methods().find(|m| m.name() == method)?;
        Some(method.output().full_name().to_owned())
    }

    /// The field paths where two encodings of the message `name` differ.
    pub fn diff(&self, name: &str, a: &[u8], b: &[u8]) -> Result<BTreeSet<String>, DiffError> {
        let desc = self.message(name)?;
        let decode = |which: &'static str, bytes: &[u8]| {
            DynamicMessage::decode(desc.clone(), bytes).map_err(|e| DiffError::Undecodable {
                which,
                message: name.to_owned(),
                error: e.to_string(),
            })
        };
        let (a, b) = (decode("first", a)?, decode("second", b)?);
        let mut out = BTreeSet::new();
        self.message_diff(&a, &b, "", &mut out);
        Ok(out)
    }

    fn ignored(&self, path: &str) -> bool {
        self.options.ignore.iter().any(|i| {
            path == i
                || path
                    .strip_prefix(i.as_str())
                    .is_some_and(|r| r.starts_with('.'))
        })
    }

    fn message_diff(
        &self,
        a: &DynamicMessage,
        b: &DynamicMessage,
        prefix: &str,
        out: &mut BTreeSet<String>,
    ) {
        for field in a.descriptor().fields() {
            let path = match prefix {
                "" => field.name().to_owned(),
                p => format!("{p}.{}", field.name()),
            };
            if self.ignored(&path) {
                continue;
            }
            let (x, y) = (a.get_field(&field), b.get_field(&field));
            self.value_diff(&field, &x, &y, &path, out);
        }
    }

    fn value_diff(
        &self,
        field: &FieldDescriptor,
        x: &Value,
        y: &Value,
        path: &str,
        out: &mut BTreeSet<String>,
    ) {
        match (x, y) {
            (Value::List(xs), Value::List(ys)) => {
                if xs.len() != ys.len() {
                    out.insert(path.to_owned());
                }
                for (x, y) in xs.iter().zip(ys) {
                    self.value_diff(field, x, y, path, out);
                }
            }
            (Value::Map(xs), Value::Map(ys)) => {
                let same = xs.len() == ys.len()
                    && xs.iter().all(|(k, v)| {
                        ys.get(k).is_some_and(|w| {
                            let mut inner = BTreeSet::new();
                            self.value_diff(field, v, w, path, &mut inner);
                            inner.is_empty()
                        })
                    });
                if !same {
                    out.insert(path.to_owned());
                }
            }
            (Value::Message(x), Value::Message(y)) if !field.is_map() => {
                self.message_diff(x, y, path, out);
            }
            (Value::F32(x), Value::F32(y)) => {
                if !self.close(f64::from(*x), f64::from(*y)) {
                    out.insert(path.to_owned());
                }
            }
            (Value::F64(x), Value::F64(y)) => {
                if !self.close(*x, *y) {
                    out.insert(path.to_owned());
                }
            }
            (x, y) => {
                if x != y {
                    out.insert(path.to_owned());
                }
            }
        }
    }

    fn close(&self, x: f64, y: f64) -> bool {
        if x == y {
            return true;
        }
        let scale = x.abs().max(y.abs()).max(1.0);
        (x - y).abs() <= self.options.float_tolerance * scale
    }
}

/// What the noise filter says of one field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Too few comparisons yet.
    Undecided,
    /// No difference beyond the primary's own noise.
    Same,
    /// Candidate-vs-primary differences clearly exceed the noise.
    Significant,
}

impl Verdict {
    /// The verdict for a field that differed `raw` times in `compared`
    /// candidate-vs-primary comparisons and `noise` times in `noise_compared`
    /// primary-vs-primary ones: significant when the raw rate exceeds the
    /// noise rate by `absolute_threshold` and, if there is noise, is at
    /// least `relative_threshold` times it.
    pub fn of(raw: u64, compared: u64, noise: u64, noise_compared: u64, o: &DiffOptions) -> Self {
        if compared < o.min_compared.max(1) {
            return Verdict::Undecided;
        }
        let raw_rate = raw as f64 / compared as f64;
        let noise_rate = match noise_compared {
            0 => 0.0,
            n => noise as f64 / n as f64,
        };
        let beyond = raw_rate - noise_rate > o.absolute_threshold;
        let relative = noise_rate == 0.0 || raw_rate >= o.relative_threshold * noise_rate;
        match beyond && relative {
            true => Verdict::Significant,
            false => Verdict::Same,
        }
    }

    /// Lower-case name, as printed.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Undecided => "undecided",
            Verdict::Same => "same",
            Verdict::Significant => "significant",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use prost::Message as _;

    fn response(items: &[(u64, f32)]) -> pb::RecallResponse {
        pb::RecallResponse {
            items: items
                .iter()
                .map(|(id, score)| pb::ScoredItem {
                    item_id: *id,
                    score: *score,
                    channel: "ann".into(),
                    reserve: false,
                })
                .collect(),
            timings: vec![pb::StageTiming {
                stage: "recall".into(),
                self_us: 17,
                notes: Vec::new(),
            }],
        }
    }

    fn diff(a: &pb::RecallResponse, b: &pb::RecallResponse) -> Vec<String> {
        Differ::new(DiffOptions::default())
            .diff(
                "feeds.v1.RecallResponse",
                &a.encode_to_vec(),
                &b.encode_to_vec(),
            )
            .expect("diffs")
            .into_iter()
            .collect()
    }

    #[test]
    fn fields_are_named_by_path_and_timings_ignored() {
        let a = response(&[(1, 0.5), (2, 0.25)]);
        let mut b = a.clone();
        b.timings[0].self_us = 99;
        assert!(diff(&a, &b).is_empty(), "timings are ignored");
        b.items[1].item_id = 3;
        assert_eq!(diff(&a, &b), ["items.item_id"]);
        b.items.push(b.items[0].clone());
        assert_eq!(diff(&a, &b), ["items", "items.item_id"]);
    }

    #[test]
    fn floats_compare_within_tolerance() {
        let a = response(&[(1, 0.5)]);
        let b = response(&[(1, 0.500_000_1)]);
        assert!(diff(&a, &b).is_empty());
        let c = response(&[(1, 0.51)]);
        assert_eq!(diff(&a, &c), ["items.score"]);
    }

    #[test]
    fn maps_compare_by_key() {
        let with = |pairs: &[(&str, &str)]| pb::SplitResponse {
            assignment: Some(pb::Assignment {
                experiments: Vec::new(),
                params: pairs
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
            }),
            ..Default::default()
        };
        let d = Differ::new(DiffOptions::default());
        let run = |a: &pb::SplitResponse, b: &pb::SplitResponse| {
            d.diff(
                "feeds.v1.SplitResponse",
                &a.encode_to_vec(),
                &b.encode_to_vec(),
            )
            .expect("diffs")
        };
        assert!(
            run(
                &with(&[("a", "1"), ("b", "2")]),
                &with(&[("b", "2"), ("a", "1")])
            )
            .is_empty()
        );
        assert_eq!(
            run(&with(&[("a", "1")]), &with(&[("a", "2")]))
                .into_iter()
                .collect::<Vec<_>>(),
            ["assignment.params"]
        );
    }

    #[test]
    fn bad_input_is_named() {
        let d = Differ::new(DiffOptions::default());
        assert!(matches!(
            d.diff("feeds.v1.Nope", b"", b""),
            Err(DiffError::UnknownMessage(_))
        ));
        assert!(matches!(
            d.diff("feeds.v1.RecallResponse", &[0x0a, 0x05], b""),
            Err(DiffError::Undecodable { which: "first", .. })
        ));
    }

    #[test]
    fn the_noise_filter_needs_a_clear_margin() {
        let o = DiffOptions::default();
        // Too few comparisons.
        assert_eq!(Verdict::of(10, 10, 0, 0, &o), Verdict::Undecided);
        // Noise explains it: 30% raw, 28% noise.
        assert_eq!(Verdict::of(300, 1000, 28, 100, &o), Verdict::Same);
        // Clear excess: 30% raw, 5% noise.
        assert_eq!(Verdict::of(300, 1000, 5, 100, &o), Verdict::Significant);
        // No noise and almost no differences: under the absolute threshold.
        assert_eq!(Verdict::of(5, 1000, 0, 100, &o), Verdict::Same);
        assert_eq!(Verdict::of(50, 1000, 0, 100, &o), Verdict::Significant);
    }
}
