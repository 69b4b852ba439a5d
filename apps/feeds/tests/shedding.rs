//! Above `process.max_concurrent_requests`, requests are shed at once with
//! RESOURCE_EXHAUSTED instead of queueing; the others succeed.

mod common;

use std::sync::Arc;

use proxy_api::pb::business_client::BusinessClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_above_the_limit_is_shed() {
    let server = common::serve_monolith(|config| config.process.max_concurrent_requests = 1).await;
    let addr = server.addrs[0];

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
    server.stop().await;
}
