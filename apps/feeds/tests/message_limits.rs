//! A message over `process.limits.max_recv_bytes` is refused with
//! RESOURCE_EXHAUSTED naming the limit; one under it passes.

mod common;

use proxy_api::Stage;
use proxy_api::pb::business_client::BusinessClient;

#[tokio::test]
async fn oversized_request_is_resource_exhausted() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (mut config, _) = common::config_for(&Stage::ALL, addr, &[]);
    config.process.limits.max_recv_bytes = 8 * 1024;
    let plan = config.validate().expect("valid");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        feeds::run(&config, &plan, listener, async {
            let _ = stopped.await;
        })
        .await
    });
    common::wait_serving(addr).await;
    let mut client = BusinessClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");

    let mut case = common::cases(1)[0].clone();
    case.request.page_size = 5;
    if let Some(ctx) = case.request.context.as_mut() {
        ctx.blob = vec![1; 2 * 1024];
    }
    client
        .get_feed(common::request(&case, 0))
        .await
        .expect("a 2 KB context fits");

    if let Some(ctx) = case.request.context.as_mut() {
        ctx.blob = vec![1; 64 * 1024];
    }
    let status = client
        .get_feed(common::request(&case, 1))
        .await
        .expect_err("64 KB is over the limit");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("8192"), "{status:?}");
    let _ = stop.send(());
    server.await.expect("join").expect("server ran");
}
