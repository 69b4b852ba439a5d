//! Bulkheads: a stage past its own limit is refused RESOURCE_EXHAUSTED at
//! once (naming the stage) while the process keeps serving, and a CPU-bound
//! stage on the compute pool leaves the async workers, and so health
//! checks, free.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxy_api::overload::{Bulkheads, StageLimit};
use proxy_api::pb::recall_client::RecallClient;
use proxy_api::{Cx, Recall, Stage, pb};

/// How long one recall call keeps a thread busy.
const BUSY: Duration = Duration::from_millis(30);

/// Recall that burns CPU for [`BUSY`] without yielding, as a heavy index
/// scan does.
struct Spinner;

#[proxy_api::async_trait]
impl Recall for Spinner {
    async fn recall(
        &self,
        _cx: &Cx,
        _request: pb::RecallRequest,
    ) -> Result<pb::RecallResponse, proxy_api::Status> {
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < BUSY {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        Ok(pb::RecallResponse {
            items: vec![pb::ScoredItem {
                item_id: x % 1000,
                score: 1.0,
                channel: "popular".into(),
                reserve: false,
            }],
            timings: Vec::new(),
        })
    }
}

/// Serves [`Spinner`] as recall with `bulkheads`; returns its address.
async fn serve(bulkheads: Bulkheads) -> SocketAddr {
    let mut registry = proxy_api::Registry::with_options(proxy_api::RuntimeOptions {
        bulkheads,
        ..proxy_api::RuntimeOptions::default()
    });
    registry.provide_recall(Arc::new(Spinner)).expect("provide");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let options = proxy_api::server::ServerOptions::default();
        let _ = proxy_api::server::run(&registry, listener, &options, std::future::pending()).await;
    });
    common::wait_serving(addr).await;
    addr
}

/// What one overload run saw.
struct Seen {
    ok: Vec<Duration>,
    refused: Vec<Duration>,
    health: Vec<Duration>,
}

fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

/// Twelve callers keep recall busy for a second while health is checked
/// every 20 ms on a connection of its own.
async fn overload(addr: SocketAddr) -> Seen {
    let end = Instant::now() + Duration::from_secs(1);
    let client = RecallClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let mut callers = Vec::new();
    for _ in 0..12 {
        let mut client = client.clone();
        callers.push(tokio::spawn(async move {
            let (mut ok, mut refused) = (Vec::new(), Vec::new());
            while Instant::now() < end {
                let started = Instant::now();
                match client.recall(pb::RecallRequest::default()).await {
                    Ok(_) => ok.push(started.elapsed()),
                    Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                        assert!(
                            s.message().contains("recall: at its concurrency limit"),
                            "{s:?}"
                        );
                        refused.push(started.elapsed());
                        // A refused caller backs off a little, as clients do.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err(other) => panic!("unexpected {other:?}"),
                }
            }
            (ok, refused)
        }));
    }
    let mut health = Vec::new();
    while Instant::now() < end {
        let started = Instant::now();
        assert_eq!(common::health(addr, "").await, Some(common::SERVING));
        health.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut seen = Seen {
        ok: Vec::new(),
        refused: Vec::new(),
        health,
    };
    for caller in callers {
        let (ok, refused) = caller.await.expect("caller");
        seen.ok.extend(ok);
        seen.refused.extend(refused);
    }
    seen
}

// One async worker: without the compute pool, recall's CPU would hold it.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_cpu_bound_stage_leaves_health_answering_and_overflow_is_refused() {
    let limit = StageLimit {
        max_concurrent: 4,
        compute: true,
    };
    let pooled = serve(Bulkheads::new([(Stage::Recall, limit)], 1).expect("pool")).await;
    let seen = overload(pooled).await;
    assert!(!seen.ok.is_empty(), "no recall call succeeded");
    assert!(
        !seen.refused.is_empty(),
        "12 callers over a limit of 4: none refused"
    );
    // Refusals do not queue behind the busy calls.
    assert!(
        percentile(&seen.refused, 0.5) < BUSY,
        "refusals took {:?} (median)",
        percentile(&seen.refused, 0.5)
    );
    let pooled_health = percentile(&seen.health, 0.9);

    // The same stage on the async worker: health waits behind it.
    let inline = StageLimit {
        max_concurrent: 4,
        compute: false,
    };
    let on_worker = serve(Bulkheads::new([(Stage::Recall, inline)], 1).expect("bulkheads")).await;
    let blocked = overload(on_worker).await;
    let blocked_health = percentile(&blocked.health, 0.9);
    // Generous: on an idle machine the pooled figure is a fraction of a
    // millisecond; blocked, health waits out whole busy calls.
    assert!(
        pooled_health * 2 < blocked_health,
        "health p90 {pooled_health:?} with the compute pool, {blocked_health:?} without"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_past_its_limit_is_refused_naming_it() {
    let server = common::serve_monolith(|config| {
        config.process.concurrency_limit = feeds::ConcurrencyLimit::Fixed;
        config.limits.insert(
            "recall".into(),
            feeds::StageLimitConfig {
                max_concurrent: Some(1),
                compute: None,
            },
        );
        // Fine-rank waits on recall: unlimited, so recall alone refuses.
        config.limits.insert(
            "finerank".into(),
            feeds::StageLimitConfig {
                max_concurrent: Some(0),
                compute: None,
            },
        );
    })
    .await;
    let client = common::business(server.addrs[0]).await;
    let cases = Arc::new(common::cases(48));
    let mut calls = Vec::new();
    for i in 0..48 {
        let mut client = client.clone();
        let cases = cases.clone();
        calls.push(tokio::spawn(async move {
            let mut case = cases[i].clone();
            case.tenant = None;
            case.request.user_id = i.to_string();
            client.get_feed(common::request(&case, i)).await.map(|_| ())
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for call in calls {
        match call.await.expect("task") {
            Ok(()) => ok += 1,
            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                assert!(
                    s.message().contains("recall: at its concurrency limit"),
                    "{s:?}"
                );
                refused += 1;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(ok >= 1 && refused >= 1, "ok {ok}, refused {refused}");
    server.stop().await;
}

/// Where a stage call ran: its thread's name and its tokio task.
type Place = (Option<String>, Option<tokio::task::Id>);

fn here() -> Place {
    (
        std::thread::current().name().map(str::to_owned),
        tokio::task::try_id(),
    )
}

/// Recall that says where it ran.
struct WhereRecall(std::sync::Mutex<Vec<Place>>);

#[proxy_api::async_trait]
impl Recall for WhereRecall {
    async fn recall(
        &self,
        _cx: &Cx,
        _request: pb::RecallRequest,
    ) -> Result<pb::RecallResponse, proxy_api::Status> {
        self.0.lock().expect("lock").push(here());
        Ok(pb::RecallResponse::default())
    }
}

/// Fine-rank that says where it ran, then calls recall.
struct WhereFineRank {
    recall: Arc<dyn Recall>,
    seen: std::sync::Mutex<Vec<Place>>,
}

#[proxy_api::async_trait]
impl proxy_api::FineRank for WhereFineRank {
    async fn rank(
        &self,
        cx: &Cx,
        _request: pb::RankRequest,
    ) -> Result<pb::RankResponse, proxy_api::Status> {
        self.seen.lock().expect("lock").push(here());
        self.recall.recall(cx, pb::RecallRequest::default()).await?;
        Ok(pb::RankResponse::default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compute_stage_called_from_the_compute_pool_runs_there_without_a_second_hand_off() {
    let limit = StageLimit {
        max_concurrent: 8,
        compute: true,
    };
    let bulkheads =
        Bulkheads::new([(Stage::Recall, limit), (Stage::FineRank, limit)], 2).expect("pool");
    let mut registry = proxy_api::Registry::with_options(proxy_api::RuntimeOptions {
        bulkheads,
        ..proxy_api::RuntimeOptions::default()
    });
    let recall = Arc::new(WhereRecall(std::sync::Mutex::default()));
    registry
        .provide_recall(recall.clone() as Arc<dyn Recall>)
        .expect("provide recall");
    let finerank = Arc::new(WhereFineRank {
        recall: registry.recall().expect("recall binding"),
        seen: std::sync::Mutex::default(),
    });
    registry
        .provide_finerank(finerank.clone() as Arc<dyn proxy_api::FineRank>)
        .expect("provide finerank");
    let binding = registry.finerank().expect("finerank binding");
    let cx = Cx::new();
    for explain in [false, true] {
        let request = pb::RankRequest {
            explain,
            ..pb::RankRequest::default()
        };
        binding.rank(&cx, request).await.expect("rank");
    }
    let ranks = finerank.seen.lock().expect("lock").clone();
    let recalls = recall.0.lock().expect("lock").clone();
    assert_eq!((ranks.len(), recalls.len()), (2, 2));
    for (rank, recall) in ranks.iter().zip(&recalls) {
        assert_eq!(
            rank.0.as_deref(),
            Some("feeds-compute"),
            "fine-rank on the pool"
        );
        assert_eq!(
            rank, recall,
            "recall ran in fine-rank's own task, on its thread"
        );
    }
    // Called from the test's task, not a compute thread, recall hands off.
    let outside = registry.recall().expect("recall binding");
    outside
        .recall(&cx, pb::RecallRequest::default())
        .await
        .expect("recall from the test's task");
    let last = recall
        .0
        .lock()
        .expect("lock")
        .last()
        .cloned()
        .expect("seen");
    assert_eq!(
        last.0.as_deref(),
        Some("feeds-compute"),
        "handed off from outside"
    );
    assert_ne!(last.1, tokio::task::try_id(), "in a task of its own");
}
