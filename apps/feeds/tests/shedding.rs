//! Above `process.max_concurrent_requests`, requests are shed at once with
//! RESOURCE_EXHAUSTED instead of queueing; the others succeed.

mod common;

use std::sync::Arc;

use proxy_api::Stage;
use proxy_api::pb::business_client::BusinessClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_above_the_limit_is_shed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (mut config, _) = common::config_for(&Stage::ALL, addr, &[]);
    config.process.max_concurrent_requests = 1;
    let plan = config.validate().expect("valid");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        feeds::run(&config, &plan, listener, async {
            let _ = stopped.await;
        })
        .await
    });
    common::wait_serving(addr).await;

    let client = BusinessClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let cases = Arc::new(common::cases(64));
    let mut calls = Vec::new();
    for i in 0..64 {
        let mut client = client.clone();
        let cases = cases.clone();
        calls.push(tokio::spawn(async move {
            let mut case = cases[i].clone();
            case.request.page_size = 5;
            case.request.user_id = i.to_string();
            case.tenant = None;
            client
                .get_feed(common::request(&case, i))
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        }));
    }
    let mut ok = 0;
    let mut shed = 0;
    for c in calls {
        match c.await.expect("task") {
            Ok(()) => ok += 1,
            Err(tonic::Code::ResourceExhausted) => shed += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(ok >= 1, "nothing got through");
    assert!(shed >= 1, "a burst of 64 over a limit of 1 shed nothing");
    let _ = stop.send(());
    server.await.expect("join").expect("server ran");
}
