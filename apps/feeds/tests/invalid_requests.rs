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

#[tokio::test]
async fn invalid_fields_are_named() {
    let servers = common::serve_groups(&[&Stage::ALL]).await;
    let mut client = BusinessClient::connect(format!("http://{}", servers.addrs[0]))
        .await
        .expect("connect");
    for (user, size, tenant, code, needle) in [
        ("1", 0, None, tonic::Code::InvalidArgument, "page_size"),
        ("1", 51, None, tonic::Code::InvalidArgument, "page_size"),
        (
            "1",
            21,
            Some("lite"),
            tonic::Code::InvalidArgument,
            "page_size",
        ),
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
