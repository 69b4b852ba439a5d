//! A pod whose connections are recycled often (`max_connection_age_ms`,
//! a GOAWAY each time) under steady load: calls the closing connection
//! never started are sent again on a new one, so not one request fails,
//! even with a single endpoint (no other replica to retry on).

mod common;

use std::time::{Duration, Instant};

use common::{Proc, SERVING, free_addr, wait_health};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recycled_connections_fail_no_request() {
    let (front_addr, pod, pod_metrics) = (free_addr(), free_addr(), free_addr());
    let _pod = Proc::start(
        "recall",
        pod,
        &common::recall_replica(pod, pod_metrics, "max_connection_age_ms = 200"),
    );
    let front = Proc::start(
        "front",
        front_addr,
        &format!(
            "[process]\nlisten = \"{front_addr}\"\nhost = [\"business\", \"split\", \"rerank\", \"finerank\"]\n\n[remote.recall]\nendpoints = [\"http://{pod}\"]\nhealth_interval_ms = 200\n"
        ),
    );
    wait_health(front_addr, "", SERVING, Duration::from_secs(90)).await;
    wait_health(pod, "", SERVING, Duration::from_secs(90)).await;

    // Four clients back to back for 4 s: about 20 connection lifetimes.
    let cases = common::cases(20);
    let mut load = Vec::new();
    for worker in 0..4 {
        let cases = cases.clone();
        load.push(tokio::spawn(async move {
            let mut client = common::business(front_addr).await;
            let (mut ok, mut failed) = (0u32, Vec::new());
            let started = Instant::now();
            let mut i = worker;
            while started.elapsed() < Duration::from_secs(4) {
                let case = &cases[i % cases.len()];
                match client.get_feed(common::request(case, i)).await {
                    Ok(_) => ok += 1,
                    Err(status) => failed.push(status),
                }
                i += 4;
            }
            (ok, failed)
        }));
    }
    let (mut ok, mut failed) = (0, Vec::new());
    for task in load {
        let (o, f) = task.await.expect("load task");
        ok += o;
        failed.extend(f);
    }
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
