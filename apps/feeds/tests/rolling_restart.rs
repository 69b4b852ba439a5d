//! A stage with two replicas behind the `grpc` binding is restarted (SIGTERM,
//! drain, exit, start again) under steady load: not one request fails.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Proc, SERVING, wait_health};
use nix::sys::signal::Signal;

const REPLICA: &str = "drain_ms = 1000\ngrace_ms = 5000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_one_replica_under_load_fails_nothing() {
    let common::TwoReplicas {
        front,
        a: mut replica_a,
        b: _replica_b,
        a_metrics,
        ..
    } = common::two_replicas(REPLICA).await;
    let (front_addr, a) = (front.addr, replica_a.addr);
    wait_health(a, "", SERVING, Duration::from_secs(90)).await;

    // Steady load from four clients until told to stop (bounded by time).
    let stop = Arc::new(AtomicBool::new(false));
    let load = common::steady_load(front_addr, Arc::clone(&stop), Duration::from_secs(60));

    tokio::time::sleep(Duration::from_millis(1500)).await;
    replica_a.signal(Signal::SIGTERM);
    let status = replica_a.wait_exit(Duration::from_secs(30)).await;
    assert!(
        status.success(),
        "replica a exits 0 after SIGTERM: {status}"
    );
    let restarted = Proc::start(
        "recall-a2",
        a,
        &common::recall_replica(a, a_metrics, REPLICA),
    );
    wait_health(a, "", SERVING, Duration::from_secs(90)).await;
    // Long enough for the balancer to see it healthy and send it traffic.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.store(true, Ordering::Relaxed);

    let (ok, failed) = common::load_outcome(load).await;
    assert!(
        failed.is_empty(),
        "{} of {} requests failed across the restart: {:?}\n{}",
        failed.len(),
        ok as usize + failed.len(),
        failed.iter().take(5).collect::<Vec<_>>(),
        front.log()
    );
    assert!(ok > 20, "only {ok} requests completed");
    let served_again = common::recall_served(a_metrics).await;
    assert!(
        served_again > 0.0,
        "the restarted replica takes traffic again"
    );
    drop(restarted);
}
