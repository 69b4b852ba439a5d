//! A message over `process.limits.max_recv_bytes` is refused with
//! RESOURCE_EXHAUSTED naming the limit; one under it passes.

mod common;

use proxy_api::pb::business_client::BusinessClient;

#[tokio::test]
async fn oversized_request_is_resource_exhausted() {
    let server =
        common::serve_monolith(|config| config.process.limits.max_recv_bytes = 8 * 1024).await;
    let addr = server.addrs[0];
    let mut client = BusinessClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");

    let mut case = common::cases(1)[0].clone();
    case.request.page_size = 5;
    if let Some(ctx) = case.request.context.as_mut() {
        ctx.get_mut().expect("made here").blob = vec![1; 2 * 1024].into();
    }
    client
        .get_feed(common::request(&case, 0))
        .await
        .expect("a 2 KB context fits");

    if let Some(ctx) = case.request.context.as_mut() {
        ctx.get_mut().expect("made here").blob = vec![1; 64 * 1024].into();
    }
    let status = client
        .get_feed(common::request(&case, 1))
        .await
        .expect_err("64 KB is over the limit");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("8192"), "{status:?}");
    server.stop().await;
}
