//! Gated rollouts on real processes: a front moves recall from the pool
//! `default` (pod A) to the pool `v2` one step at a time, on its own,
//! while a steady load runs.
//!
//! ```text
//! client -> front [business, split, rerank, finerank]
//!             recall: default -> pod A            (the baseline)
//!                     v2      -> pod B ...         (the candidate)
//! ```
//!
//! - a clean candidate (the same build) walks every step to 100%, and a
//!   pause (SIGUSR1) holds it at its step until resumed;
//! - a candidate that gets slow at the 10% step (a latency-adding proxy in
//!   front of pod B) goes back to 0% within 30 s, the log naming `latency`;
//! - a candidate that starts to differ at the 10% step (a replica built
//!   from another world joins pool `v2`) goes back to 0% within 30 s, the
//!   log naming `shadow`;
//! - SIGUSR2 aborts a rollout: every user back on the baseline.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Proc, SERVING, free_addr, sample, scrape, wait_health};
use proxy_api::pb;

/// Longest a rollout phase of this test may take.
const PHASE: Duration = Duration::from_secs(120);

/// The front: recall's baseline is pod A, its candidate the `v2` endpoints.
fn front(listen: SocketAddr, metrics: SocketAddr, a: SocketAddr, v2: &[SocketAddr]) -> String {
    let v2 = v2
        .iter()
        .map(|e| format!("\"http://{e}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[process]\nlisten = \"{listen}\"\nhost = [\"business\", \"split\", \"rerank\", \"finerank\"]\n\n\
         [telemetry]\nmetrics_listen = \"{metrics}\"\n\n\
         [remote.recall]\nendpoints = [\"http://{a}\"]\nhealth_interval_ms = 200\n\n\
         [remote.recall.pools.v2]\nendpoints = [{v2}]\nhealth_interval_ms = 200\n\n\
         [routes]\nrecall = []\n\n\
         [shadow]\nmax_pending = 512\nconcurrency = 8\ndeadline_ms = 5000\n\n\
         [rollout.recall]\nbaseline = \"default\"\ncandidate = \"v2\"\n\
         steps = [1, 2, 10, 20, 40, 80, 100]\ndwell_s = 1.0\ncheck_ms = 250\n\
         shadow_rate = 1.0\nshadow_noise = 0.2\n\
         gates = {{ min_calls = 50, max_p99_ratio = 4.0, max_diff_rate = 0.01, max_error_increase = 0.01 }}\n"
    )
}

fn recall_pod(listen: SocketAddr) -> String {
    format!("[process]\nlisten = \"{listen}\"\nhost = [\"recall\"]\n")
}

/// A steady closed-loop load of four clients until `stop`, bounded by
/// `PHASE`; returns (sent, failed).
fn load(addr: SocketAddr, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(usize, usize)> {
    tokio::spawn(async move {
        let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..4usize {
            let (stop, sent, failed) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&failed));
            tasks.push(tokio::spawn(async move {
                let mut client = common::business(addr).await;
                let mut i = c;
                while !stop.load(Ordering::Relaxed) && started.elapsed() < PHASE {
                    let mut request = tonic::Request::new(pb::GetFeedRequest {
                        user_id: ((i * 37) % common::TEST_USERS as usize).to_string(),
                        page_size: 10,
                        ..Default::default()
                    });
                    request.set_timeout(Duration::from_secs(10));
                    sent.fetch_add(1, Ordering::Relaxed);
                    if client.get_feed(request).await.is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 4;
                }
            }));
        }
        for t in tasks {
            t.await.expect("load task");
        }
        (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
    })
}

/// Waits (bounded by `PHASE`) until the front's log holds `needle`.
async fn wait_log(front: &Proc, needle: &str) -> Instant {
    let started = Instant::now();
    loop {
        let log = front.log();
        if log.contains(needle) {
            return Instant::now();
        }
        // A rollout that ended some other way will not log it: say why now.
        for end in ["rollout gate `", "rollout complete", "rollout aborted"] {
            assert!(
                !log.contains(end) || needle.contains(end),
                "waiting for {needle:?}, but the rollout ended ({end}); log:\n{log}"
            );
        }
        assert!(
            started.elapsed() < PHASE,
            "{:?} not logged within {PHASE:?}; log:\n{}",
            needle,
            front.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn gauge(metrics: SocketAddr, name: &str, labels: &[&str]) -> f64 {
    sample(&scrape(metrics).await, name, labels)
}

struct Front {
    proc: Proc,
    metrics: SocketAddr,
    stop: Arc<AtomicBool>,
    load: tokio::task::JoinHandle<(usize, usize)>,
}

async fn start_front(name: &str, a: SocketAddr, v2: &[SocketAddr]) -> Front {
    let (listen, metrics) = (free_addr(), free_addr());
    let proc = Proc::start(name, listen, &front(listen, metrics, a, v2));
    wait_health(listen, "", SERVING, Duration::from_secs(60)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(listen, Arc::clone(&stop));
    Front {
        proc,
        metrics,
        stop,
        load,
    }
}

impl Front {
    /// Stops the load; returns (sent, failed).
    async fn finish(self) -> (usize, usize, Proc) {
        self.stop.store(true, Ordering::Relaxed);
        let (sent, failed) = self.load.await.expect("load");
        (sent, failed, self.proc)
    }
}

/// After a rollback or abort: every user is on the baseline again, i.e. the
/// candidate gets no more live calls.
async fn candidate_live_calls(metrics: SocketAddr) -> f64 {
    gauge(
        metrics,
        "grpc_client_handled_total",
        &["callee=\"recall\"", "target=\"v2\"", "traffic=\"live\""],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollouts_advance_hold_and_roll_back_on_their_own() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let _a = Proc::start("pod-a", a_addr, &recall_pod(a_addr));
    let _b = Proc::start("pod-b", b_addr, &recall_pod(b_addr));
    wait_health(a_addr, "", SERVING, Duration::from_secs(60)).await;
    wait_health(b_addr, "", SERVING, Duration::from_secs(60)).await;

    // 1. A clean candidate walks every step; a pause holds it.
    let f = start_front("clean", a_addr, &[b_addr]).await;
    wait_log(&f.proc, "rollout advanced to 20% of users").await;
    f.proc.signal(nix::sys::signal::Signal::SIGUSR1);
    wait_log(&f.proc, "rollout paused at").await;
    let held = gauge(f.metrics, "feeds_rollout_step", &["stage=\"recall\""]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        gauge(f.metrics, "feeds_rollout_step", &["stage=\"recall\""]).await,
        held,
        "a paused rollout stays at its step"
    );
    assert_eq!(
        gauge(
            f.metrics,
            "feeds_rollout_state",
            &["stage=\"recall\"", "state=\"paused\""]
        )
        .await,
        1.0
    );
    f.proc.signal(nix::sys::signal::Signal::SIGUSR1);
    wait_log(&f.proc, "rollout resumed at").await;
    wait_log(&f.proc, "rollout complete: every user on v2").await;
    let log = f.proc.log();
    for step in [
        "1% of users",
        "2% of users",
        "10% of users",
        "40% of users",
        "80% of users",
        "100% of users",
    ] {
        assert!(log.contains(step), "step {step} not logged:\n{log}");
    }
    assert!(
        !log.contains("gate `"),
        "a clean candidate fails no gate:\n{log}"
    );
    assert_eq!(
        gauge(f.metrics, "feeds_rollout_weight", &["stage=\"recall\""]).await,
        100.0
    );
    assert_eq!(
        gauge(
            f.metrics,
            "feeds_rollout_state",
            &["stage=\"recall\"", "state=\"complete\""]
        )
        .await,
        1.0
    );
    let (sent, failed, _) = f.finish().await;
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed during a clean rollout"
    );

    // 2. A candidate that gets slow at 10% goes back to 0% within 30 s.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy = feeds::chaos::Proxy::start(listener, b_addr).expect("proxy");
    let f = start_front("slow", a_addr, &[proxy.addr()]).await;
    wait_log(&f.proc, "rollout advanced to 10% of users").await;
    proxy.set_delay(Some((
        Duration::from_millis(80),
        Duration::from_millis(120),
    )));
    let slowed = Instant::now();
    let failed_at = wait_log(&f.proc, "rollout gate `latency` failed at 10% of users").await;
    let took = failed_at - slowed;
    assert!(took < Duration::from_secs(30), "rolled back after {took:?}");
    assert_eq!(
        gauge(f.metrics, "feeds_rollout_weight", &["stage=\"recall\""]).await,
        0.0
    );
    assert_eq!(
        gauge(
            f.metrics,
            "feeds_rollout_state",
            &["stage=\"recall\"", "state=\"rolled_back\""]
        )
        .await,
        1.0
    );
    // Calls already on their way to the candidate finish; none follow.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = candidate_live_calls(f.metrics).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        candidate_live_calls(f.metrics).await,
        before,
        "after the rollback no user is served by the candidate"
    );
    let (sent, failed, front) = f.finish().await;
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed (slow candidate)"
    );
    eprintln!(
        "slow candidate rolled back {took:?} after it slowed; {}",
        line(&front.log(), "gate `latency`")
    );
    drop(proxy);

    // 3. A candidate that starts to differ at 10% goes back within 30 s: a
    //    replica built from another world joins pool v2.
    let d_addr = free_addr();
    let f = start_front("differs", a_addr, &[b_addr, d_addr]).await;
    wait_log(&f.proc, "rollout advanced to 10% of users").await;
    let joined = Instant::now();
    let _d = Proc::start_with_env(
        "pod-d",
        d_addr,
        &recall_pod(d_addr),
        &[("FEEDS__WORLD__SEED".to_owned(), "7".to_owned())],
    );
    let failed_at = wait_log(&f.proc, "rollout gate `shadow` failed at 10% of users").await;
    let took = failed_at - joined;
    assert!(
        took < Duration::from_secs(30),
        "rolled back {took:?} after the replica was started"
    );
    assert_eq!(
        gauge(f.metrics, "feeds_rollout_weight", &["stage=\"recall\""]).await,
        0.0
    );
    let (sent, failed, front) = f.finish().await;
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed (differing candidate)"
    );
    let log = front.log();
    let named = line(&log, "gate `shadow`");
    assert!(
        named.contains("items"),
        "the failing field is named: {named}"
    );
    eprintln!("differing candidate rolled back {took:?} after the replica started; {named}");

    // 4. SIGUSR2 aborts.
    let f = start_front("abort", a_addr, &[b_addr]).await;
    wait_log(&f.proc, "rollout started").await;
    f.proc.signal(nix::sys::signal::Signal::SIGUSR2);
    wait_log(&f.proc, "rollout aborted by the operator").await;
    assert_eq!(
        gauge(
            f.metrics,
            "feeds_rollout_state",
            &["stage=\"recall\"", "state=\"aborted\""]
        )
        .await,
        1.0
    );
    assert_eq!(
        gauge(f.metrics, "feeds_rollout_weight", &["stage=\"recall\""]).await,
        0.0
    );
    let (_, failed, _) = f.finish().await;
    assert_eq!(failed, 0);
}

fn line<'a>(log: &'a str, needle: &str) -> &'a str {
    log.lines().find(|l| l.contains(needle)).unwrap_or_default()
}
