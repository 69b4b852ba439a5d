//! Overload: far more clients than the monolith admits. The excess is
//! answered RESOURCE_EXHAUSTED at once (by the adaptive process limit, or a
//! compute stage's bulkhead), the admitted requests succeed, and `/metrics`
//! shows the refusals and the adaptive limit.

mod common;

use std::time::{Duration, Instant};

use common::{Proc, SERVING, wait_health};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excess_is_refused_at_once_and_the_admitted_succeed() {
    let (addr, metrics) = (common::free_addr(), common::free_addr());
    // Adaptive, starting at 4 admitted requests, never above 64. Every
    // stage on one compute thread: in this unoptimised test build even the
    // light stages are heavy, and the point is that the async workers,
    // which admit and refuse, are not stuck behind stage work.
    let toml = format!(
        "[process]\nlisten = \"{addr}\"\ndrain_ms = 0\ncompute_threads = 1\n\
         initial_concurrent_requests = 4\nmin_concurrent_requests = 2\nmax_concurrent_requests = 64\n\
         [limits.business]\ncompute = true\n[limits.split]\ncompute = true\n\
         [limits.rerank]\ncompute = true\n\
         [telemetry]\nmetrics_listen = \"{metrics}\"\n"
    );
    let server = Proc::start("monolith", addr, &toml);
    wait_health(addr, "", SERVING, Duration::from_secs(60)).await;

    // 48 clients, each on a connection of its own, back to back for 2 s; a
    // refused client waits 10 ms before the next request, as clients do.
    let cases = std::sync::Arc::new(common::cases(48));
    let end = Instant::now() + Duration::from_secs(2);
    let mut clients = Vec::new();
    for c in 0..48 {
        let cases = cases.clone();
        clients.push(tokio::spawn(async move {
            let mut client = common::business(addr).await;
            let (mut admitted, mut refused) = (Vec::new(), Vec::new());
            let mut i = c;
            while Instant::now() < end {
                let mut case = cases[i % cases.len()].clone();
                case.tenant = None;
                case.request.user_id = i.to_string();
                let started = Instant::now();
                match client.get_feed(common::request(&case, i)).await {
                    Ok(page) => {
                        assert!(!page.into_inner().items.is_empty(), "empty page");
                        admitted.push(started.elapsed());
                    }
                    Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                        // The process's limit, or a compute stage's bulkhead
                        // when the process admitted more than it can take.
                        assert!(s.message().contains(": at its concurrency limit"), "{s:?}");
                        refused.push(started.elapsed());
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(other) => panic!("only OK or RESOURCE_EXHAUSTED expected, got {other:?}"),
                }
                i += 48;
            }
            (admitted, refused)
        }));
    }
    let (mut admitted, mut refused) = (Vec::new(), Vec::new());
    for client in clients {
        let (a, r) = client.await.expect("client");
        admitted.extend(a);
        refused.extend(r);
    }
    assert!(!admitted.is_empty(), "nothing was admitted");
    assert!(
        !refused.is_empty(),
        "48 clients over a limit of at most 64 that started at 4: none refused"
    );
    // Refusals do no work and wait for none: even generously, they are
    // faster than the admitted requests.
    let (a, r) = (median(admitted.clone()), median(refused.clone()));
    eprintln!(
        "admitted {} (median {a:?}), refused {} (median {r:?})",
        admitted.len(),
        refused.len()
    );
    assert!(
        r * 2 < a,
        "refusals took {r:?} (median), admitted requests {a:?}: refusals should not queue"
    );
    // Health is never limited.
    assert_eq!(common::health(addr, "").await, Some(SERVING));

    let text = common::scrape(metrics).await;
    // Every scope: the process and each stage's bulkhead.
    let rejected = common::sample(&text, "feeds_concurrency_rejected_total", &[]);
    assert!(
        rejected >= refused.len() as f64,
        "{rejected} < {}: {text}",
        refused.len()
    );
    let limit = common::sample(&text, "feeds_concurrency_limit", &["scope=\"process\""]);
    assert!((2.0..=64.0).contains(&limit), "limit {limit}");
    drop(server);
}
