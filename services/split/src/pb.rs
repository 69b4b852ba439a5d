//! Conversions between the `feeds.v1` messages and the split domain types.

use proxy_api::pb;

use crate::Assignment;

impl From<Assignment> for pb::Assignment {
    fn from(a: Assignment) -> Self {
        pb::Assignment {
            experiments: a
                .hits
                .into_iter()
                .map(|h| pb::ExperimentHit {
                    layer: h.layer,
                    experiment: h.experiment,
                    bucket: h.bucket,
                })
                .collect(),
            params: a.params,
        }
    }
}
