//! Deadlines are honoured in both bindings: an expired deadline answers
//! DEADLINE_EXCEEDED (never CANCELLED or UNKNOWN), whether the slow stage is
//! in-process or behind gRPC, and end to end through the chain.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use proxy_api::{Cx, Limits, Recall, Registry, RemoteConfig, Stage, pb};

/// A recall that takes far longer than any deadline in these tests.
struct Slow;

#[proxy_api::async_trait]
impl Recall for Slow {
    async fn recall(
        &self,
        _: &Cx,
        _: pb::RecallRequest,
    ) -> Result<pb::RecallResponse, proxy_api::Status> {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(pb::RecallResponse::default())
    }
}

fn with_deadline(after: Duration) -> Cx {
    Cx::new().with_deadline(Instant::now() + after)
}

async fn expect_deadline(stub: Arc<dyn Recall>, after: Duration) {
    let started = Instant::now();
    // The outer timeout only turns a hang into a failure.
    let cx = with_deadline(after);
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        stub.recall(&cx, pb::RecallRequest::default()),
    )
    .await
    .expect("the deadline must end the call")
    .expect_err("the stage is too slow");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(
        started.elapsed() >= after.saturating_sub(Duration::from_millis(5)),
        "answered before the deadline"
    );
}

#[tokio::test]
async fn slow_stage_times_out_in_both_bindings() {
    let mut local = Registry::empty();
    local.provide_recall(Arc::new(Slow)).expect("provide");
    expect_deadline(local.recall().expect("local"), Duration::from_millis(200)).await;

    let (remote, server) = common::over_grpc(&local, Stage::Recall).await;
    for _ in 0..5 {
        expect_deadline(remote.recall().expect("remote"), Duration::from_millis(200)).await;
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_deadline_end_to_end() {
    let case = &common::cases(3)[2];
    let short = |cx: Cx| cx.with_timeout(Duration::from_micros(1));
    // In-process monolith.
    let (config, plan) = common::config_for(&Stage::ALL, "127.0.0.1:0".parse().expect("addr"), &[]);
    let registry = feeds::build(&config, &plan).expect("registry");
    let status = registry
        .business()
        .expect("local")
        .get_feed(&short(common::cx(case, 0)), case.request.clone())
        .await
        .expect_err("expired");
    assert_eq!(
        status.code(),
        tonic::Code::DeadlineExceeded,
        "monolith: {status:?}"
    );

    // Five stages over gRPC, reached through the grpc binding (a bare tonic
    // client reports its own timer as CANCELLED; the binding maps it).
    let groups: Vec<&[Stage]> = Stage::ALL.iter().map(std::slice::from_ref).collect();
    let servers = common::serve_groups(&groups).await;
    let mut remote = Registry::empty();
    let cfg = RemoteConfig {
        endpoints: vec![format!("http://{}", servers.addrs[0])],
        ..RemoteConfig::default()
    };
    remote
        .bind_remote(Stage::Business, &cfg, Limits::default())
        .expect("bind");
    let business = remote.business().expect("remote business");
    for after in [Duration::from_micros(1), Duration::from_micros(500)] {
        let cx = common::cx(case, 0).with_deadline(Instant::now() + after);
        let status = business
            .get_feed(&cx, case.request.clone())
            .await
            .expect_err("expired");
        assert_eq!(
            status.code(),
            tonic::Code::DeadlineExceeded,
            "five stages over gRPC, {after:?}: {status:?}"
        );
    }
    servers.stop().await;
}

#[tokio::test]
async fn requests_without_a_deadline_get_the_default() {
    let mut local = Registry::empty();
    local.provide_recall(Arc::new(Slow)).expect("provide");
    let options = proxy_api::ServeOptions {
        default_deadline: Some(Duration::from_millis(200)),
        ..Default::default()
    };
    let (remote, server) = common::over_grpc_with(&local, Stage::Recall, options).await;
    let started = Instant::now();
    // No deadline on the request: the server's default ends it.
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        remote
            .recall()
            .expect("remote")
            .recall(&Cx::new(), pb::RecallRequest::default()),
    )
    .await
    .expect("the default deadline must end the call")
    .expect_err("the stage is too slow");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() >= Duration::from_millis(190));
    server.abort();
}
