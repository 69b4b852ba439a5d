//! Conversions between the `feeds.v1` messages and the business domain types.

use proxy_api::pb;
use world::World;

/// Fills catalogue metadata into a ranked item.
pub(crate) fn feed_item(world: &World, scored: pb::ScoredItem) -> Option<pb::FeedItem> {
    let item = world.item(scored.item_id)?;
    Some(pb::FeedItem {
        item_id: scored.item_id,
        score: scored.score,
        title: world.title(item),
        category: world.category_name(item.category),
        creator: world.creator_name(item.creator),
        channel: scored.channel,
    })
}

/// Cursors are the offset of the next page, as decimal text.
pub(crate) fn parse_cursor(cursor: &str) -> Option<u32> {
    if cursor.is_empty() {
        return Some(0);
    }
    cursor.strip_prefix("o").and_then(|n| n.parse().ok())
}

/// The cursor of the page starting at `offset`.
pub(crate) fn cursor(offset: u32) -> String {
    format!("o{offset}")
}
