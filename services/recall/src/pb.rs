//! Conversions between the `feeds.v1` messages and the recall domain types.

use proxy_api::pb;

use crate::{Candidate, Error, Query};

impl Query {
    /// Reads a query out of a request, keeping only what recall uses (the
    /// context is decoded here, once, if it arrived undecoded).
    pub(crate) fn from_pb(request: &pb::RecallRequest) -> Result<Self, Error> {
        let context = request
            .context
            .as_ref()
            .map(|c| c.get())
            .transpose()
            .map_err(Error::Context)?;
        Ok(Self {
            user: world::user_key(&request.user_id),
            recent: context.map(|c| c.recent_items.clone()).unwrap_or_default(),
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
