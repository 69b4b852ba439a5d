//! Conversions between the `feeds.v1` messages and the recall domain types.

use proxy_api::pb;

use crate::{Candidate, Error, Query};

impl Query {
    /// Reads a query out of a request, keeping only what recall uses (of
    /// the context, its `recent_items`, read without decoding the rest).
    pub(crate) fn from_pb(request: &pb::RecallRequest) -> Result<Self, Error> {
        let recent = request
            .context
            .as_ref()
            .map(|c| c.recent_items())
            .transpose()
            .map_err(Error::Context)?
            .unwrap_or_default();
        Ok(Self {
            user: world::user_key(&request.user_id),
            recent,
            params: request
                .assignment
                .as_ref()
                .map(|a| a.params.clone())
                .unwrap_or_default(),
            allowed_categories: request
                .constraints
                .as_ref()
                .map(|c| c.allowed_categories.clone())
                .unwrap_or_default(),
            blocked_creators: request
                .constraints
                .as_ref()
                .map(|c| c.blocked_creators.clone())
                .unwrap_or_default(),
        })
    }
}

impl From<Candidate> for pb::ScoredItem {
    fn from(c: Candidate) -> Self {
        pb::ScoredItem {
            item_id: c.item,
            score: c.score,
            channel: c.channel.name().to_owned(),
            reserve: false,
        }
    }
}
