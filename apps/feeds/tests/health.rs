//! Health follows the process and its downstreams: `liveness` is SERVING as
//! soon as the stages are built; `""` and the served services are
//! NOT_SERVING until the remote downstream answers, go NOT_SERVING when it
//! goes away and come back by themselves when it returns.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{NOT_SERVING, Proc, SERVING, wait_health};
use nix::sys::signal::Signal;

fn front_toml(listen: SocketAddr, recall: SocketAddr) -> String {
    format!(
        r#"
[process]
listen = "{listen}"
host = ["business", "split", "rerank", "finerank"]
drain_ms = 0

[remote.recall]
endpoints = ["http://{recall}"]
connect_timeout_ms = 300
health_interval_ms = 200
"#
    )
}

fn recall_toml(listen: SocketAddr) -> String {
    format!(
        r#"
[process]
listen = "{listen}"
host = ["recall"]
drain_ms = 0
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_downstream() {
    let (front_addr, recall_addr) = (common::free_addr(), common::free_addr());
    let front = Proc::start("front", front_addr, &front_toml(front_addr, recall_addr));
    let long = Duration::from_secs(60);

    // Up, but its downstream has never answered: alive, not ready.
    wait_health(front_addr, "liveness", SERVING, long).await;
    for service in ["", "feeds.v1.Business", "feeds.v1.FineRank"] {
        assert_eq!(
            common::health(front_addr, service).await,
            Some(NOT_SERVING),
            "{service:?} must wait for recall"
        );
    }
    let mut client = common::business(front_addr).await;
    let case = &common::cases(3)[2];
    let status = client
        .get_feed(common::request(case, 0))
        .await
        .expect_err("recall is down");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("recall"), "{status:?}");

    // The downstream comes up: ready.
    let mut recall = Proc::start("recall", recall_addr, &recall_toml(recall_addr));
    wait_health(front_addr, "", SERVING, long).await;
    wait_health(front_addr, "feeds.v1.Business", SERVING, long).await;
    client
        .get_feed(common::request(case, 0))
        .await
        .expect("serves once recall is up");

    // It goes away: not ready, still alive.
    recall.signal(Signal::SIGTERM);
    assert!(recall.wait_exit(Duration::from_secs(30)).await.success());
    wait_health(front_addr, "", NOT_SERVING, Duration::from_secs(10)).await;
    assert_eq!(common::health(front_addr, "liveness").await, Some(SERVING));

    // It comes back: ready again, with nothing done to the front process.
    let _recall = Proc::start("recall-again", recall_addr, &recall_toml(recall_addr));
    wait_health(front_addr, "", SERVING, long).await;
    client
        .get_feed(common::request(case, 1))
        .await
        .expect("serves again");
    drop(front);
}
