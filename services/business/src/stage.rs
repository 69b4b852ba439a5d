//! The business logic and its `Business` implementation.

use std::sync::Arc;

use proxy_api::{Cx, PassThrough, Status, pb};
use world::World;

use crate::config::MAX_POOL;
use crate::pb::{cursor, feed_item, parse_cursor};
use crate::{Config, Error};

/// Which slice of the ranked list a request wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// Index of the first item.
    pub offset: u32,
    /// Items on the page.
    pub size: u32,
}

/// The business stage.
pub struct BusinessStage {
    /// The shared catalogue (item metadata).
    world: Arc<World>,
    /// Tenants.
    config: Config,
    /// Where the request goes next, bound local or grpc.
    split: Arc<dyn proxy_api::Split>,
}

impl BusinessStage {
    /// A business stage in front of `split`.
    pub fn new(world: Arc<World>, config: Config, split: Arc<dyn proxy_api::Split>) -> Self {
        Self {
            world,
            config,
            split,
        }
    }

    /// Validates a request against its tenant; returns the tenant's name and the page.
    pub fn check(
        &self,
        tenant: Option<&str>,
        request: &pb::GetFeedRequest,
    ) -> Result<(String, Page), Error> {
        let tenant = tenant.unwrap_or(&self.config.default_tenant);
        let limits = self
            .config
            .tenants
            .get(tenant)
            .ok_or_else(|| Error::UnknownTenant(tenant.to_owned()))?;
        if request.user_id.trim().is_empty() {
            return Err(Error::InvalidArgument {
                field: "user_id",
                message: "must not be empty".into(),
            });
        }
        // AIP-158: 0 (unset) means the tenant's default, and a page larger
        // than the tenant allows is served at its maximum.
        let size = match request.page_size {
            0 => limits.default_page_size,
            n => n.min(limits.max_page_size),
        };
        let offset = parse_cursor(&request.cursor).ok_or_else(|| Error::InvalidArgument {
            field: "cursor",
            message: format!("{:?} is not a cursor this service issued", request.cursor),
        })?;
        if offset >= MAX_POOL {
            return Err(Error::InvalidArgument {
                field: "cursor",
                message: format!("offset {offset} is past the end of the feed"),
            });
        }
        Ok((tenant.to_owned(), Page { offset, size }))
    }
}

impl BusinessStage {
    /// The page out of the ranked list: the tenant's constraints (applied
    /// below already; checked again here, and what keeps a degraded page
    /// within them), the slice at the cursor, item metadata, and the next
    /// cursor.
    pub fn page(
        &self,
        tenant: &str,
        page: Page,
        ranked: Vec<pb::ScoredItem>,
    ) -> (Vec<pb::FeedItem>, String) {
        let limits = self.config.tenants.get(tenant);
        let allowed = limits
            .map(|t| t.allowed_categories.as_slice())
            .unwrap_or_default();
        let blocked = limits
            .map(|t| t.blocked_creators.as_slice())
            .unwrap_or_default();
        let shown = |s: &pb::ScoredItem| match self.world.item(s.item_id) {
            Some(item) => {
                (allowed.is_empty() || allowed.contains(&self.world.category_name(item.category)))
                    && (blocked.is_empty()
                        || !blocked.contains(&self.world.creator_name(item.creator)))
            }
            None => false,
        };
        let mut visible: Vec<pb::ScoredItem> = ranked.into_iter().filter(shown).collect();
        let end = (page.offset + page.size) as usize;
        let next_cursor = if visible.len() > end {
            cursor(end as u32)
        } else {
            String::new()
        };
        // Metadata only for the items on the page.
        visible.truncate(end);
        let items = visible
            .into_iter()
            .skip(page.offset as usize)
            .filter_map(|s| feed_item(&self.world, s))
            .collect();
        (items, next_cursor)
    }

    /// The degraded pool: the most popular items the user has not just seen,
    /// best first (the page then applies the tenant's categories).
    fn popular(&self, seen: &[u64]) -> Vec<pb::ScoredItem> {
        self.world
            .by_popularity()
            .iter()
            .filter(|id| !seen.contains(id))
            .take(MAX_POOL as usize * 4)
            .map(|&item_id| pb::ScoredItem {
                item_id,
                score: 0.0,
                channel: "popular".into(),
                reserve: false,
            })
            .collect()
    }

    /// The request's context, with the user's recent history from the
    /// interaction log when the product sent none (a known user), and the
    /// items the user has seen. Only `recent_items` is read; the history is
    /// appended to the bytes that arrived as an encoded `recent_items`
    /// (protobuf merges repeated fields by appending), so the rest of the
    /// context (an event sequence, a blob) is never decoded or encoded here.
    fn with_history(
        &self,
        user_id: &str,
        context: Option<PassThrough<pb::UserContext>>,
    ) -> Result<(PassThrough<pb::UserContext>, Vec<u64>), Error> {
        let broken = |e: proxy_api::Undecodable| Error::InvalidArgument {
            field: "context",
            message: e.to_string(),
        };
        let mut context = context.unwrap_or_default();
        let recent = context.recent_items().map_err(broken)?;
        if !recent.is_empty() {
            return Ok((context, recent));
        }
        let history = self.world.history(world::user_key(user_id)).to_vec();
        if !history.is_empty() {
            context
                .merge(&pb::UserContext {
                    recent_items: history.clone(),
                    ..Default::default()
                })
                .map_err(broken)?;
        }
        Ok((context, history))
    }
}

/// Whether a failure below business is one a degraded page stands in for:
/// the stages below failed or ran out of time, not the request itself.
fn degradable(status: &Status) -> bool {
    use proxy_api::Code;
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Internal
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
    )
}

#[proxy_api::async_trait]
impl proxy_api::Business for BusinessStage {
    async fn get_feed(
        &self,
        cx: &Cx,
        request: pb::GetFeedRequest,
    ) -> Result<pb::GetFeedResponse, Status> {
        let (tenant, page) = self.check(cx.tenant(), &request)?;
        let limits = &self.config.tenants[&tenant];
        // The stages below apply the tenant's constraints, so the list only
        // needs to reach one item past the page (which tells whether there
        // is a next page).
        let limit = (page.offset + page.size + 1).min(MAX_POOL);
        let (context, seen) = self.with_history(&request.user_id, request.context)?;
        let split = self
            .split
            .split(
                cx,
                pb::SplitRequest {
                    user_id: request.user_id,
                    limit,
                    context: Some(context),
                    layers: limits.layers.clone(),
                    explain: request.explain,
                    constraints: Some(pb::Constraints {
                        allowed_categories: limits.allowed_categories.clone(),
                        blocked_creators: limits.blocked_creators.clone(),
                    }),
                    page_size: page.size,
                },
            )
            .await;
        let split = match split {
            Ok(split) => split,
            Err(status) if limits.degraded_pages && degradable(&status) => {
                let (items, next_cursor) = self.page(&tenant, page, self.popular(&seen));
                return Ok(pb::GetFeedResponse {
                    items,
                    next_cursor,
                    assignment: None,
                    timings: Vec::new(),
                    degraded: true,
                });
            }
            Err(status) => return Err(Error::from(status).into()),
        };
        let (items, next_cursor) = self.page(&tenant, page, split.items);
        Ok(pb::GetFeedResponse {
            items,
            next_cursor,
            assignment: split.assignment,
            timings: Vec::new(),
            degraded: false,
        })
    }
}

/// How a process builds the business stage (see [`proxy_api::StageFactory`]).
pub struct Factory;

impl proxy_api::StageFactory for Factory {
    type Service = proxy_api::BusinessService;
    type Config = Config;

    fn validate(config: &Config) -> Result<(), proxy_api::ConfigError> {
        config.validate()
    }

    fn build(
        config: &Config,
        deps: &proxy_api::Deps<'_>,
    ) -> Result<Arc<dyn proxy_api::Business>, proxy_api::BuildError> {
        let world = deps.resource::<World>()?;
        check_names(config, &world)?;
        Ok(Arc::new(BusinessStage::new(
            world,
            config.clone(),
            deps.downstream::<proxy_api::SplitService>()?,
        )))
    }
}

/// Every category and creator a tenant names exists in the catalogue (a
/// misspelt name would otherwise empty the tenant's feed).
fn check_names(config: &Config, world: &World) -> Result<(), proxy_api::BuildError> {
    let categories: std::collections::HashSet<String> = (0..world.config().categories)
        .map(|c| world.category_name(c))
        .collect();
    let creators: std::collections::HashSet<String> = (0..world.config().creators)
        .map(|c| world.creator_name(c))
        .collect();
    for (name, tenant) in &config.tenants {
        for (key, names, known) in [
            (
                "allowed_categories",
                &tenant.allowed_categories,
                &categories,
            ),
            ("blocked_creators", &tenant.blocked_creators, &creators),
        ] {
            if let Some(bad) = names.iter().find(|n| !known.contains(*n)) {
                return Err(proxy_api::BuildError::new(format!(
                    "business.tenants.{name}.{key}: {bad:?} is not in the catalogue"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage() -> BusinessStage {
        let cfg = world::WorldConfig {
            items: 1_000,
            ..world::WorldConfig::default()
        };
        BusinessStage::new(
            Arc::new(World::generate(&cfg)),
            Config::default(),
            Arc::new(proxy_api::Unimplemented),
        )
    }

    fn request(user: &str, page_size: u32, cursor: &str) -> pb::GetFeedRequest {
        pb::GetFeedRequest {
            user_id: user.into(),
            page_size,
            cursor: cursor.into(),
            ..Default::default()
        }
    }

    fn field(err: Error) -> &'static str {
        match err {
            Error::InvalidArgument { field, .. } => field,
            other => panic!("expected an invalid argument, got {other}"),
        }
    }

    #[test]
    fn invalid_fields_are_named() {
        let s = stage();
        assert_eq!(
            field(s.check(None, &request("", 10, "")).expect_err("empty user")),
            "user_id"
        );
        // AIP-158: 0 is the tenant's default, too large is its maximum.
        let size = |tenant, n| s.check(tenant, &request("1", n, "")).expect("valid").1.size;
        assert_eq!(size(None, 0), 10);
        assert_eq!(size(None, 51), 50);
        assert_eq!(size(Some("lite"), 21), 20);
        assert_eq!(size(Some("lite"), 7), 7);
        assert_eq!(
            field(s.check(None, &request("1", 10, "zz")).expect_err("cursor")),
            "cursor"
        );
    }

    #[test]
    fn unknown_tenant_is_not_found() {
        let err = stage()
            .check(Some("acme"), &request("1", 10, ""))
            .expect_err("acme");
        assert_eq!(Status::from(err).code(), proxy_api::Code::NotFound);
    }

    #[test]
    fn next_cursor_only_when_more_items_exist() {
        let s = stage();
        let ranked = |n: u64| {
            (0..n)
                .map(|id| pb::ScoredItem {
                    item_id: id,
                    score: 0.5,
                    channel: "t".into(),
                    reserve: false,
                })
                .collect()
        };
        let page = Page {
            offset: 0,
            size: 10,
        };
        let (items, next) = s.page("default", page, ranked(11));
        assert_eq!((items.len(), next.as_str()), (10, "o10"));
        let (items, next) = s.page("default", page, ranked(10));
        assert_eq!((items.len(), next.as_str()), (10, ""));
        let (items, _) = s.page(
            "default",
            Page {
                offset: 10,
                size: 10,
            },
            ranked(15),
        );
        assert_eq!(
            items.iter().map(|i| i.item_id).collect::<Vec<_>>(),
            (10..15).collect::<Vec<_>>()
        );
    }

    #[test]
    fn cursor_round_trips() {
        let (_, page) = stage()
            .check(None, &request("1", 10, &cursor(30)))
            .expect("ok");
        assert_eq!(
            page,
            Page {
                offset: 30,
                size: 10
            }
        );
    }
}
