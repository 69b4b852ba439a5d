//! The `grpc` binding balances over several endpoints with power of two
//! choices and routes around one that is killed: after a replica dies
//! (SIGKILL, no drain), every request still succeeds on the other one.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Proc, SERVING, wait_health};
use nix::sys::signal::Signal;

fn replica(listen: SocketAddr, metrics: SocketAddr) -> String {
    format!(
        r#"
[process]
listen = "{listen}"
host = ["recall"]

[telemetry]
metrics_listen = "{metrics}"
"#
    )
}

fn served(text: &str) -> f64 {
    common::sample(
        text,
        "grpc_server_handled_total",
        &["callee=\"recall\"", "grpc_code=\"OK\""],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_routes_around_a_killed_endpoint() {
    let (front_addr, a, b) = (
        common::free_addr(),
        common::free_addr(),
        common::free_addr(),
    );
    let (a_metrics, b_metrics) = (common::free_addr(), common::free_addr());
    let mut replica_a = Proc::start("recall-a", a, &replica(a, a_metrics));
    let _replica_b = Proc::start("recall-b", b, &replica(b, b_metrics));
    let front = Proc::start(
        "front",
        front_addr,
        &format!(
            r#"
[process]
listen = "{front_addr}"
host = ["business", "split", "rerank", "finerank"]

[remote.recall]
endpoints = ["http://{a}", "http://{b}"]
health_interval_ms = 200
"#
        ),
    );
    wait_health(front_addr, "", SERVING, Duration::from_secs(90)).await;
    let mut client = common::business(front_addr).await;
    let cases = common::cases(40);
    let valid: Vec<_> = cases
        .iter()
        .filter(|c| {
            c.request.page_size > 0 && c.request.page_size <= 20 && !c.request.user_id.is_empty()
        })
        .collect();

    // Both replicas take a share.
    for (i, case) in valid.iter().enumerate() {
        client
            .get_feed(common::request(case, i))
            .await
            .expect("both replicas up");
    }
    let (share_a, share_b) = (
        served(&common::scrape(a_metrics).await),
        served(&common::scrape(b_metrics).await),
    );
    assert_eq!(share_a + share_b, valid.len() as f64);
    assert!(share_a > 0.0 && share_b > 0.0, "a={share_a} b={share_b}");

    // Kill one without warning; every following request still succeeds.
    replica_a.signal(Signal::SIGKILL);
    replica_a.wait_exit(Duration::from_secs(10)).await;
    let before_b = served(&common::scrape(b_metrics).await);
    for round in 0..3 {
        for (i, case) in valid.iter().enumerate() {
            if let Err(status) = client.get_feed(common::request(case, i)).await {
                panic!(
                    "round {round} request {i} failed after the kill: {status:?}\n{}",
                    front.log()
                );
            }
        }
    }
    let after_b = served(&common::scrape(b_metrics).await);
    assert_eq!(after_b - before_b, 3.0 * valid.len() as f64);
}
