//! A pod whose connections are recycled often (`max_connection_age_ms`,
//! a GOAWAY each time) under steady load: calls the closing connection
//! never started are sent again on a new one, so not one request fails,
//! even with a single endpoint (no other replica to retry on).

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::{Proc, SERVING, free_addr, wait_health};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recycled_connections_fail_no_request() {
    let (front_addr, pod, pod_metrics) = (free_addr(), free_addr(), free_addr());
    let _pod = Proc::start(
        "recall",
        pod,
        &common::recall_replica(pod, pod_metrics, "max_connection_age_ms = 200"),
    );
    let front = common::front_over_recall(front_addr, &[pod]);
    wait_health(front_addr, "", SERVING, Duration::from_secs(90)).await;
    wait_health(pod, "", SERVING, Duration::from_secs(90)).await;

    // Four clients back to back for 4 s: about 20 connection lifetimes.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = common::load_outcome(common::steady_load(
        front_addr,
        stop,
        Duration::from_secs(4),
    ))
    .await;
    assert!(ok > 100, "only {ok} requests answered\n{}", front.log());
    assert!(
        failed.is_empty(),
        "{} of {} requests failed while the pod recycled its connections: {:?}\n{}",
        failed.len(),
        ok as usize + failed.len(),
        failed.iter().take(5).collect::<Vec<_>>(),
        front.log()
    );
}
