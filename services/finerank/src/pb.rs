//! Conversions between the `feeds.v1` messages and the fine-rank domain types.

use proxy_api::pb;

use crate::stage::ChannelTag;
use crate::{Error, Query, Scored};

impl Query {
    /// Reads what fine-rank uses from a request: of the context, only its
    /// `recent_items` (read from the bytes that arrived, skipping the rest;
    /// the context goes on to recall as it came).
    pub(crate) fn from_pb(request: &pb::RankRequest) -> Result<Self, Error> {
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
        })
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
