//! Conversions between the `feeds.v1` messages and the fine-rank domain types.

use proxy_api::pb;

use crate::stage::ChannelTag;
use crate::{Query, Scored};

impl Query {
    /// Reads what fine-rank uses from a request.
    pub(crate) fn from_pb(request: &pb::RankRequest) -> Self {
        Self {
            user: world::user_key(&request.user_id),
            recent: request
                .context
                .as_ref()
                .map(|c| c.recent_items.clone())
                .unwrap_or_default(),
            params: request
                .assignment
                .as_ref()
                .map(|a| a.params.clone())
                .unwrap_or_default(),
        }
    }
}

impl ChannelTag {
    pub(crate) fn parse(channel: &str) -> Self {
        match channel {
            "ann" => ChannelTag::Ann,
            "i2i" => ChannelTag::I2i,
            "popular" => ChannelTag::Popular,
            _ => ChannelTag::Other,
        }
    }
}

impl From<Scored> for pb::ScoredItem {
    fn from(s: Scored) -> Self {
        pb::ScoredItem {
            item_id: s.item,
            score: s.score,
            channel: s.channel,
            reserve: s.reserve,
        }
    }
}
