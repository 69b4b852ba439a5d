//! A remote call that may be retried is encoded once, and a retry resends
//! those bytes: no message is cloned or encoded again per attempt. (The
//! remote stack cannot clone a message at all: it does not require `Clone`.)

mod common;

use std::sync::Arc;
use std::time::Duration;

use proxy_api::{Cx, PassThrough, Recall, RemoteConfig, Stage, codec, pb};

/// Answers every recall with the request's user as the one item.
struct Echo;

#[proxy_api::async_trait]
impl Recall for Echo {
    async fn recall(
        &self,
        _cx: &Cx,
        request: pb::RecallRequest,
    ) -> Result<pb::RecallResponse, proxy_api::Status> {
        Ok(pb::RecallResponse {
            items: vec![pb::ScoredItem {
                item_id: request.user_id.parse().unwrap_or(0),
                ..Default::default()
            }],
            timings: Vec::new(),
        })
    }
}

fn request(i: u64) -> pb::RecallRequest {
    pb::RecallRequest {
        user_id: i.to_string(),
        context: Some(PassThrough::new(pb::UserContext {
            recent_items: vec![i, i + 1],
            blob: vec![7; 64 * 1024].into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn retries(text: &str) -> f64 {
    common::sample(text, "feeds_client_retries_total", &["stage=\"recall\""])
}

#[tokio::test]
async fn retried_calls_resend_the_bytes_encoded_once() {
    let mut local = proxy_api::Registry::empty();
    local.provide_recall(Arc::new(Echo)).expect("provide");
    let (served, server) = common::over_grpc(&local, Stage::Recall).await;
    let live = served
        .slots()
        .iter()
        .find_map(|s| s.balancer())
        .map(|b| b.endpoints()[0].clone())
        .expect("the served endpoint");

    // Two endpoints, one of which refuses connections: every call may be
    // retried, and the ones that pick the dead endpoint first are.
    let dead = format!("http://{}", common::free_addr());
    let mut remote = proxy_api::Registry::empty();
    remote
        .bind_remote(
            Stage::Recall,
            &RemoteConfig {
                endpoints: vec![dead, live],
                max_attempts: 2,
                connect_timeout_ms: 500,
                ..RemoteConfig::default()
            },
            proxy_api::Limits::default(),
        )
        .expect("bind");
    let recall = remote.recall().expect("remote recall");

    let calls = 40u64;
    let (retries_before, encoded_before) = (
        retries(&proxy_api::observe::render()),
        codec::encoded_messages(),
    );
    for i in 0..calls {
        let cx = Cx::new().with_timeout(Duration::from_secs(10));
        let answer = recall.recall(&cx, request(i)).await.expect("served");
        assert_eq!(answer.items[0].item_id, i, "call {i} answered");
        // Let the dead endpoint's ejection lapse now and then, so it is
        // picked (and the call retried) more than once.
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let retried = retries(&proxy_api::observe::render()) - retries_before;
    let encoded = codec::encoded_messages() - encoded_before;
    server.abort();
    assert!(
        retried >= 1.0,
        "no call was retried, so this proves nothing"
    );
    // Per call: the request, encoded once by the client whatever the
    // attempts, and the response, encoded once by the server (same process).
    assert_eq!(
        encoded,
        2 * calls,
        "{retried} retried calls: a retry must resend the same bytes"
    );
}
