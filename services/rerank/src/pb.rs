//! Conversions between the `feeds.v1` messages and the rerank domain types.

use proxy_api::pb;

use crate::Pick;

impl From<Pick> for pb::ScoredItem {
    fn from(p: Pick) -> Self {
        pb::ScoredItem {
            item_id: p.item,
            score: p.score,
            channel: p.channel,
            reserve: false,
        }
    }
}

impl From<pb::ScoredItem> for Pick {
    fn from(s: pb::ScoredItem) -> Self {
        Pick {
            item: s.item_id,
            score: s.score,
            channel: s.channel,
            reserve: s.reserve,
        }
    }
}
