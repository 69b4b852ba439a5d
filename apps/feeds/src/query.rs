//! `feeds query`: calls `GetFeed` and prints the page.

use std::time::Duration;

use proxy_api::context::{REQUEST_ID, TENANT};
use proxy_api::pb;
use tonic::metadata::MetadataValue;

/// What to ask for.
#[derive(Clone, Debug)]
pub struct QueryArgs {
    /// `http://host:port` of a process serving `Business`.
    pub addr: String,
    /// User id.
    pub user: String,
    /// Tenant (`x-tenant`); the service's default when absent.
    pub tenant: Option<String>,
    /// Items on the page.
    pub page_size: u32,
    /// Cursor from a previous page.
    pub cursor: String,
    /// Ask for per-stage timings.
    pub explain: bool,
    /// Whole-call deadline.
    pub timeout: Duration,
    /// Dye (`x-tandem-dye`): steers the request and all it calls to pools
    /// of that colour (kept only from trusted peers).
    pub dye: Option<String>,
    /// Mark the request as load-test traffic (`x-tandem-stress`).
    pub stress: bool,
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The address is not a usable endpoint.
    #[error("--addr {0:?}: {1}")]
    Addr(String, String),
    /// A header value is not valid ASCII.
    #[error("--tenant {0:?}: not a valid header value")]
    Tenant(String),
    /// A header value is not valid ASCII.
    #[error("--dye {0:?}: not a valid header value")]
    Dye(String),
    /// The call failed.
    #[error("GetFeed failed: {code:?}: {message}", code = .0.code(), message = .0.message())]
    Status(tonic::Status),
}

/// Calls `GetFeed` once.
pub async fn get_feed(args: &QueryArgs) -> Result<pb::GetFeedResponse, QueryError> {
    Ok(get_feed_with_path(args).await?.0)
}

/// Calls `GetFeed` once; also returns the target that served each hop
/// (`x-tandem-path`, present when the request explains).
pub async fn get_feed_with_path(
    args: &QueryArgs,
) -> Result<(pb::GetFeedResponse, Option<String>), QueryError> {
    let endpoint = tonic::transport::Endpoint::from_shared(args.addr.clone())
        .map_err(|e| QueryError::Addr(args.addr.clone(), e.to_string()))?
        .connect_timeout(Duration::from_secs(2));
    let mut client = pb::business_client::BusinessClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(64 << 20);
    let mut request = tonic::Request::new(pb::GetFeedRequest {
        user_id: args.user.clone(),
        page_size: args.page_size,
        cursor: args.cursor.clone(),
        context: None,
        explain: args.explain,
    });
    request.set_timeout(args.timeout);
    let id = format!("query-{}", std::process::id());
    if let Ok(v) = MetadataValue::try_from(id.as_str()) {
        request.metadata_mut().insert(REQUEST_ID, v);
    }
    if let Some(tenant) = &args.tenant {
        let v = MetadataValue::try_from(tenant.as_str())
            .map_err(|_| QueryError::Tenant(tenant.clone()))?;
        request.metadata_mut().insert(TENANT, v);
    }
    if let Some(dye) = &args.dye {
        let v = MetadataValue::try_from(dye.as_str()).map_err(|_| QueryError::Dye(dye.clone()))?;
        request.metadata_mut().insert(proxy_api::route::DYE, v);
    }
    if args.stress {
        request
            .metadata_mut()
            .insert(proxy_api::route::STRESS, MetadataValue::from_static("1"));
    }
    let response = client.get_feed(request).await.map_err(QueryError::Status)?;
    let path = response
        .metadata()
        .get(proxy_api::route::PATH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((response.into_inner(), path))
}

/// The response as JSON.
pub fn to_json(response: &pb::GetFeedResponse) -> serde_json::Value {
    let assignment = response.assignment.clone().unwrap_or_default();
    serde_json::json!({
        "items": response.items.iter().map(|i| serde_json::json!({
            "item_id": i.item_id,
            "score": i.score,
            "title": i.title,
            "category": i.category,
            "creator": i.creator,
            "channel": i.channel,
        })).collect::<Vec<_>>(),
        "next_cursor": response.next_cursor,
        "assignment": {
            "experiments": assignment.experiments.iter().map(|h| serde_json::json!({
                "layer": h.layer, "experiment": h.experiment, "bucket": h.bucket,
            })).collect::<Vec<_>>(),
            "params": assignment.params,
        },
        "timings": response.timings.iter().map(|t| serde_json::json!({
            "stage": t.stage, "self_us": t.self_us, "notes": t.notes,
        })).collect::<Vec<_>>(),
    })
}

/// The response as a table for people.
pub fn to_table(response: &pb::GetFeedResponse, explain: bool) -> String {
    let mut out = format!(
        "{:>4}  {:>8}  {:>7}  {:<12} {:<14} {:<9} {}\n",
        "rank", "item", "score", "category", "creator", "channel", "title"
    );
    for (rank, item) in response.items.iter().enumerate() {
        out.push_str(&format!(
            "{:>4}  {:>8}  {:>7.4}  {:<12} {:<14} {:<9} {}\n",
            rank + 1,
            item.item_id,
            item.score,
            item.category,
            item.creator,
            item.channel,
            item.title
        ));
    }
    let next = if response.next_cursor.is_empty() {
        "(last page)"
    } else {
        response.next_cursor.as_str()
    };
    out.push_str(&format!("next cursor: {next}\n"));
    if explain {
        if let Some(a) = &response.assignment {
            out.push_str("experiments:\n");
            for h in &a.experiments {
                out.push_str(&format!(
                    "  {:<10} {:<14} bucket {}\n",
                    h.layer, h.experiment, h.bucket
                ));
            }
            out.push_str("params:\n");
            for (k, v) in &a.params {
                out.push_str(&format!("  {k} = {v}\n"));
            }
        }
        out.push_str("stage self time (µs, excluding downstream):\n");
        for t in &response.timings {
            out.push_str(&format!("  {:<9} {:>8}\n", t.stage, t.self_us));
            for note in &t.notes {
                out.push_str(&format!("    note: {note}\n"));
            }
        }
    }
    out
}
