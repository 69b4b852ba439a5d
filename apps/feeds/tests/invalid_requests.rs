//! Invalid request fields get INVALID_ARGUMENT naming the field, an unknown
//! tenant NOT_FOUND, over real gRPC.

mod common;

use proxy_api::Stage;
use proxy_api::pb::{self, business_client::BusinessClient};
use tonic::metadata::MetadataValue;

async fn call(
    client: &mut BusinessClient<tonic::transport::Channel>,
    user: &str,
    page_size: u32,
    tenant: Option<&'static str>,
) -> tonic::Status {
    let mut request = tonic::Request::new(pb::GetFeedRequest {
        user_id: user.into(),
        page_size,
        ..Default::default()
    });
    if let Some(t) = tenant {
        request
            .metadata_mut()
            .insert("x-tenant", MetadataValue::from_static(t));
    }
    client.get_feed(request).await.expect_err("invalid request")
}

/// AIP-158: `page_size` 0 (proto3's unset) is the tenant's default page
/// size, and one above the tenant's maximum is served at the maximum.
#[tokio::test]
async fn page_size_defaults_and_is_coerced() {
    let servers = common::serve_groups(&[&Stage::ALL]).await;
    let mut client = BusinessClient::connect(format!("http://{}", servers.addrs[0]))
        .await
        .expect("connect");
    for (size, tenant, want) in [
        (0, None, 10),
        (51, None, 50),
        (0, Some("lite"), 10),
        (21, Some("lite"), 20),
    ] {
        let mut request = tonic::Request::new(pb::GetFeedRequest {
            user_id: "1".into(),
            page_size: size,
            ..Default::default()
        });
        if let Some(t) = tenant {
            request
                .metadata_mut()
                .insert("x-tenant", tonic::metadata::MetadataValue::from_static(t));
        }
        let page = client.get_feed(request).await.expect("served").into_inner();
        assert!(
            page.items.len() <= want && (tenant.is_some() || page.items.len() == want),
            "page_size {size} ({tenant:?}): {} items, want {want}",
            page.items.len()
        );
    }
    servers.stop().await;
}

#[tokio::test]
async fn invalid_fields_are_named() {
    let servers = common::serve_groups(&[&Stage::ALL]).await;
    let mut client = BusinessClient::connect(format!("http://{}", servers.addrs[0]))
        .await
        .expect("connect");
    for (user, size, tenant, code, needle) in [
        ("", 10, None, tonic::Code::InvalidArgument, "user_id"),
        ("1", 10, Some("acme"), tonic::Code::NotFound, "acme"),
    ] {
        let status = call(&mut client, user, size, tenant).await;
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(needle), "{status:?}");
    }
    // And a valid one succeeds, so the errors above are not an outage.
    let ok = client
        .get_feed(pb::GetFeedRequest {
            user_id: "1".into(),
            page_size: 10,
            ..Default::default()
        })
        .await
        .expect("valid request");
    assert_eq!(ok.get_ref().items.len(), 10);
    servers.stop().await;
}
