//! The `grpc` binding balances over several endpoints with power of two
//! choices and routes around one that is killed: after a replica dies
//! (SIGKILL, no drain), every request still succeeds on the other one.

mod common;

use std::time::Duration;

use nix::sys::signal::Signal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_routes_around_a_killed_endpoint() {
    let common::TwoReplicas {
        front,
        a: mut replica_a,
        b: _replica_b,
        a_metrics,
        b_metrics,
    } = common::two_replicas("").await;
    let front_addr = front.addr;
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
        common::recall_served(a_metrics).await,
        common::recall_served(b_metrics).await,
    );
    assert_eq!(share_a + share_b, valid.len() as f64);
    assert!(share_a > 0.0 && share_b > 0.0, "a={share_a} b={share_b}");

    // Kill one without warning; every following request still succeeds.
    replica_a.signal(Signal::SIGKILL);
    replica_a.wait_exit(Duration::from_secs(10)).await;
    let before_b = common::recall_served(b_metrics).await;
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
    let after_b = common::recall_served(b_metrics).await;
    assert_eq!(after_b - before_b, 3.0 * valid.len() as f64);
}
