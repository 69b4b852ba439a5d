//! Live reload of routes on real processes (SIGHUP): a weighted, sticky ramp
//! of recall from in-process to a remote pool, 0 -> 1 -> 10 -> 50 -> 100% and
//! back to 0, with the observed share within 2 points of the weight over
//! 10,000 requests at every step, no user switching target more than once on
//! the way up, and no failed request; then reloads under load, one of them
//! invalid: refused naming the key, the old table keeps serving, 0 failures.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Proc, SERVING, free_addr, wait_health};
use proxy_api::pb;
use tonic::metadata::MetadataValue;

/// Requests per ramp step.
const PER_STEP: usize = 10_000;
/// Distinct users the load cycles over.
const USERS: usize = 2_000;
/// Clients sending at once.
const CLIENTS: usize = 8;

/// Where the front listens and serves `/metrics`, and the pool `v2`.
#[derive(Clone, Copy)]
struct Addrs {
    listen: SocketAddr,
    metrics: SocketAddr,
    pool: SocketAddr,
}

/// The front: all five stages, recall split between `v2` and `local`.
fn front_config(a: Addrs, weight: f64, extra: &str) -> String {
    let Addrs {
        listen,
        metrics,
        pool,
    } = a;
    format!(
        "[process]\nlisten = \"{listen}\"\nhost = [\"business\", \"split\", \"rerank\", \"finerank\", \"recall\"]\n\n\
         [telemetry]\nmetrics_listen = \"{metrics}\"\n\n\
         [remote.recall.pools.v2]\nendpoints = [\"http://{pool}\"]\nhealth_interval_ms = 200\n\n\
         [[routes.recall]]\nsplit = [{{ target = \"v2\", weight = {weight} }}, {{ target = \"local\", weight = {} }}]\n{extra}",
        100.0 - weight
    )
}

/// One request for `user`, explained so the response names the recall target.
fn request(user: usize) -> tonic::Request<pb::GetFeedRequest> {
    let mut r = tonic::Request::new(pb::GetFeedRequest {
        user_id: format!("user-{user}"),
        page_size: 5,
        explain: true,
        ..Default::default()
    });
    r.set_timeout(Duration::from_secs(30));
    r.metadata_mut()
        .insert("x-request-id", MetadataValue::from_static("ramp"));
    r
}

/// Sends `n` requests over `CLIENTS` clients, users in turn; returns per user
/// the recall targets seen, and the failures.
async fn load(addr: SocketAddr, n: usize) -> (HashMap<usize, Vec<String>>, usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let next = Arc::clone(&next);
        let mut client = common::business(addr).await;
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut failed = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return (seen, failed);
                }
                let user = i % USERS;
                match client.get_feed(request(user)).await {
                    Ok(r) => {
                        let path = r
                            .metadata()
                            .get("x-tandem-path")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default();
                        let target = path
                            .split(',')
                            .find_map(|hop| hop.strip_prefix("recall="))
                            .unwrap_or("?")
                            .to_owned();
                        seen.push((user, target));
                    }
                    Err(_) => failed += 1,
                }
            }
        }));
    }
    let mut by_user: HashMap<usize, Vec<String>> = HashMap::new();
    let mut failed = 0;
    for t in tasks {
        let (seen, f) = t.await.expect("load task");
        failed += f;
        for (user, target) in seen {
            by_user.entry(user).or_default().push(target);
        }
    }
    (by_user, failed)
}

/// Rewrites the front's config, sends SIGHUP and waits for the `n`th reload
/// line (`applied` or `refused`) in its log.
async fn reload(front: &Proc, file: &std::path::Path, text: &str, n: usize) {
    std::fs::write(file, text).expect("write config");
    front.signal(nix::sys::signal::Signal::SIGHUP);
    let started = std::time::Instant::now();
    loop {
        let log = front.log();
        let done = log.matches("reload: applied").count() + log.matches("reload refused").count();
        if done >= n {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no reload line:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_ramp_and_reloads_under_load() {
    let (pool, pool_metrics) = (free_addr(), free_addr());
    let a = Addrs {
        listen: free_addr(),
        metrics: free_addr(),
        pool,
    };
    let listen = a.listen;
    let _pool = Proc::start(
        "recall-v2",
        pool,
        &common::recall_replica(pool, pool_metrics, ""),
    );
    // The front reads its config from a file this test rewrites.
    let front = Proc::start("front", listen, &front_config(a, 0.0, ""));
    let file = front.config.clone();
    wait_health(pool, "", SERVING, Duration::from_secs(120)).await;
    wait_health(listen, "", SERVING, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;

    // The ramp: every step measured over PER_STEP requests after its reload.
    let mut reloads = 0;
    let mut first_target: HashMap<usize, Vec<String>> = HashMap::new();
    for (step, weight) in [0.0, 1.0, 10.0, 50.0, 100.0, 0.0].into_iter().enumerate() {
        if step > 0 {
            reloads += 1;
            reload(&front, &file, &front_config(a, weight, ""), reloads).await;
        }
        let (by_user, failed) = load(listen, PER_STEP).await;
        assert_eq!(failed, 0, "step {weight}%: failed requests");
        let total: usize = by_user.values().map(Vec::len).sum();
        let on_v2: usize = by_user
            .values()
            .flat_map(|t| t.iter())
            .filter(|t| *t == "v2")
            .count();
        let share = 100.0 * on_v2 as f64 / total as f64;
        assert!(
            (share - weight).abs() <= 2.0,
            "step {weight}%: observed {share:.2}% over {total} requests"
        );
        // Sticky: each user on one target within a step.
        for (user, targets) in &by_user {
            assert!(
                targets.iter().all(|t| *t == targets[0]),
                "user {user} moved within step {weight}%: {targets:?}"
            );
            if step <= 4 {
                first_target
                    .entry(*user)
                    .or_default()
                    .push(targets[0].clone());
            }
        }
    }
    // Up the ramp (0 -> 100), no user switches target more than once.
    for (user, targets) in &first_target {
        let switches = targets.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(
            switches <= 1,
            "user {user} switched {switches} times: {targets:?}"
        );
    }

    // Reloads under load, one invalid: no request fails, the invalid one is
    // refused naming the key and the table before it keeps serving.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..4 {
        let (stop, failures, sent) = (Arc::clone(&stop), Arc::clone(&failures), Arc::clone(&sent));
        let mut client = common::business(listen).await;
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            // Bounded in count as well as by the stop flag.
            while !stop.load(Ordering::Relaxed) && i < 200_000 {
                if client.get_feed(request(i % USERS)).await.is_err() {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                sent.fetch_add(1, Ordering::Relaxed);
                i += 4;
            }
        }));
    }
    for weight in [20.0, 80.0] {
        reloads += 1;
        reload(&front, &file, &front_config(a, weight, ""), reloads).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    reloads += 1;
    let invalid = front_config(a, 40.0, "fallback = \"nowhere\"\n");
    reload(&front, &file, &invalid, reloads).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("load task");
    }
    assert!(
        sent.load(Ordering::Relaxed) > 100,
        "too little load to mean anything"
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    let log = front.log();
    assert!(
        log.contains("reload refused") && log.contains("routes.recall[0].fallback"),
        "the invalid reload was not refused naming the key:\n{log}"
    );
    // Still the 80% table.
    let (by_user, failed) = load(listen, 2_000).await;
    assert_eq!(failed, 0);
    let on_v2 = by_user.values().flatten().filter(|t| *t == "v2").count();
    let share = 100.0 * on_v2 as f64 / 2_000.0;
    assert!(
        (share - 80.0).abs() <= 4.0,
        "after the refused reload: {share:.1}%"
    );
    let text = common::scrape(a.metrics).await;
    let count = |result: &str| {
        common::sample(
            &text,
            "feeds_route_reloads_total",
            &[&format!("result=\"{result}\"")],
        )
    };
    assert_eq!(count("ok"), 7.0, "valid reloads counted");
    assert_eq!(count("error"), 1.0, "refused reloads counted");
}
