//! Cost of one hop through the registry, for 1 KB, 16 KB and 128 KB of user
//! context, on these paths:
//!
//! - `direct`: the stage implementation called as a concrete type;
//! - `local_serving`: the same implementation through the registry's `local`
//!   binding as every in-process hop of `feeds serve` runs it: the context
//!   carries a deadline that the server's timer bounds, observation on;
//! - `local_unobserved`: the same with `telemetry.observe_local_calls = false`;
//! - `grpc`: through the registry's `grpc` binding to a server built from the
//!   generated adapters, over loopback TCP;
//! - `bare_tonic`: tonic's generated client and server alone, same messages,
//!   same loopback: the floor for `grpc`.
//!
//! Before the timings it prints heap allocations per call for `direct` and
//! every local variant (also a call from outside any served request with a
//! deadline, which starts the edge timer), counted by a wrapping global
//! allocator (bench binary only).

// The counting allocator needs `unsafe impl GlobalAlloc`; nothing else here does.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use proxy_api::pb::{self, recall_client::RecallClient, recall_server::RecallServer};
use proxy_api::{Cx, Limits, Recall, Registry, RemoteConfig, RuntimeOptions, Stage};
use tokio::runtime::Runtime;

struct Counting;
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// wrapper only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A stage with no logic: answers every request with the same ten items.
struct Echo;

fn answer() -> pb::RecallResponse {
    pb::RecallResponse {
        items: (0..10)
            .map(|i| pb::ScoredItem {
                item_id: i,
                score: 0.5,
                channel: String::new(),
                reserve: false,
            })
            .collect(),
        timings: Vec::new(),
    }
}

#[proxy_api::async_trait]
impl Recall for Echo {
    async fn recall(
        &self,
        cx: &Cx,
        request: pb::RecallRequest,
    ) -> Result<pb::RecallResponse, proxy_api::Status> {
        black_box((cx, request));
        Ok(answer())
    }
}

/// The same stage written against tonic's generated server trait directly.
struct BareEcho;

#[tonic::async_trait]
impl pb::recall_server::Recall for BareEcho {
    async fn recall(
        &self,
        request: tonic::Request<pb::RecallRequest>,
    ) -> Result<tonic::Response<pb::RecallResponse>, tonic::Status> {
        black_box(request);
        Ok(tonic::Response::new(answer()))
    }
}

fn message(bytes: usize) -> pb::RecallRequest {
    pb::RecallRequest {
        user_id: "42".into(),
        context: Some(proxy_api::PassThrough::new(pb::UserContext {
            blob: vec![7; bytes].into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

async fn listener() -> (tokio::net::TcpListener, std::net::SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let a = l.local_addr().expect("addr");
    (l, a)
}

fn incoming(l: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true))
}

/// The context of an in-process hop inside a served request: a deadline
/// that the server adapter's timer bounds.
fn serving() -> Cx {
    Cx::new()
        .with_timeout(Duration::from_secs(3600))
        .assume_bounded()
}

/// Heap allocations per call of `stub` (or of `Echo` directly) in `cx`.
fn allocations_per_call(rt: &Runtime, stub: Option<&Arc<dyn Recall>>, cx: &Cx) -> f64 {
    const N: u64 = 10_000;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    rt.block_on(async {
        for _ in 0..N {
            // The default message allocates nothing of its own.
            let req = pb::RecallRequest::default();
            let _ = black_box(match stub {
                Some(stub) => stub.recall(cx, req).await,
                None => Echo.recall(cx, req).await,
            });
        }
    });
    // The answer's ten items are allocated in every path alike: subtract them.
    let answer_cost = {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        black_box(answer());
        ALLOCATIONS.load(Ordering::Relaxed) - before
    };
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / N as f64 - answer_cost as f64
}

/// Heap allocations per call over loopback gRPC, both ends in this
/// process: through the registry's `grpc` binding, or tonic's generated
/// client to its generated server (`bare`), with a `kb` KB context.
fn remote_allocations(
    rt: &Runtime,
    grpc: &Arc<dyn Recall>,
    bare: &RecallClient<tonic::transport::Channel>,
    kb: usize,
) -> (f64, f64) {
    const N: u64 = 2_000;
    let msg = message(kb * 1024);
    let count = |f: &dyn Fn()| {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        f();
        (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / N as f64
    };
    let cx = Cx::new().with_timeout(Duration::from_secs(3600));
    let ours = count(&|| {
        rt.block_on(async {
            for _ in 0..N {
                let _ = black_box(grpc.recall(&cx, msg.clone()).await);
            }
        })
    });
    let theirs = count(&|| {
        rt.block_on(async {
            for _ in 0..N {
                let mut r = tonic::Request::new(msg.clone());
                r.set_timeout(Duration::from_secs(3600));
                let _ = black_box(bare.clone().recall(r).await);
            }
        })
    });
    (ours, theirs)
}

/// Writes the allocation figures where `feeds bench` reads them
/// (`target/hop/allocations.json`), so its report can show them.
fn write_summary(fields: &[(&str, f64)]) {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("hop");
    let body = fields
        .iter()
        .map(|(k, v)| format!("  \"{k}\": {v:.2}"))
        .collect::<Vec<_>>()
        .join(",\n");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join("allocations.json"), format!("{{\n{body}\n}}\n"));
    }
}

/// The three in-process paths measured in turn, round after round, in one
/// loop each (no per-iteration setup), and the median round of each: on a
/// shared machine this is steadier than criterion's separate groups for
/// differences of tens of nanoseconds.
fn interleaved(rt: &Runtime, observed: &Arc<dyn Recall>, unobserved: &Arc<dyn Recall>, cx: &Cx) {
    const N: u32 = 200_000;
    const ROUNDS: usize = 9;
    let time = |stub: Option<&Arc<dyn Recall>>| {
        rt.block_on(async {
            let start = std::time::Instant::now();
            for _ in 0..N {
                let req = pb::RecallRequest::default();
                let _ = black_box(match stub {
                    Some(stub) => stub.recall(cx, req).await,
                    None => Echo.recall(cx, req).await,
                });
            }
            start.elapsed().as_nanos() as f64 / f64::from(N)
        })
    };
    let (mut direct, mut serving, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        direct.push(time(None));
        serving.push(time(Some(observed)));
        bare.push(time(Some(unobserved)));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (d, s, u) = (median(direct), median(serving), median(bare));
    println!(
        "interleaved, median of {ROUNDS} rounds of {N} calls (empty message): direct {d:.1} ns; \
         local_serving {s:.1} ns (adds {:.1} ns); local_unobserved {u:.1} ns (adds {:.1} ns)",
        s - d,
        u - d
    );
}

fn registry(observe_local_calls: bool) -> Registry {
    let mut registry = Registry::with_options(RuntimeOptions {
        observe_local_calls,
        ..RuntimeOptions::default()
    });
    registry.provide_recall(Arc::new(Echo)).expect("provide");
    registry
}

fn hops(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let (local_stub, unobserved_stub, grpc_stub, bare) = rt.block_on(async {
        let local = registry(true);
        let local_stub = local.recall().expect("local");
        let unobserved_stub = registry(false).recall().expect("local");

        let (l, addr) = listener().await;
        let (routes, _) = local.routes(&proxy_api::ServeOptions::default());
        tokio::spawn(
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_routes(routes)
                .serve_with_incoming(incoming(l)),
        );
        let mut remote = Registry::empty();
        let cfg = RemoteConfig {
            endpoints: vec![format!("http://{addr}")],
            ..RemoteConfig::default()
        };
        remote
            .bind_remote(Stage::Recall, &cfg, Limits::default())
            .expect("bind");
        let grpc_stub = remote.recall().expect("remote");

        let (l, addr) = listener().await;
        tokio::spawn(
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(RecallServer::new(BareEcho).max_decoding_message_size(16 << 20))
                .serve_with_incoming(incoming(l)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .tcp_nodelay(true)
            .connect()
            .await
            .expect("connect bare");
        (
            local_stub,
            unobserved_stub,
            grpc_stub,
            RecallClient::new(channel).max_decoding_message_size(16 << 20),
        )
    });

    let serving_cx = serving();
    let direct = allocations_per_call(&rt, None, &serving_cx);
    let serving_path = allocations_per_call(&rt, Some(&local_stub), &serving_cx);
    let unobserved = allocations_per_call(&rt, Some(&unobserved_stub), &serving_cx);
    let no_deadline = allocations_per_call(&rt, Some(&local_stub), &Cx::new());
    let edge = allocations_per_call(
        &rt,
        Some(&local_stub),
        &Cx::new().with_timeout(Duration::from_secs(3600)),
    );
    println!(
        "allocations per call (the answer's own excluded): direct {direct:.2}; \
         local_serving {serving_path:.2} (adds {:.2}); local_unobserved {unobserved:.2} (adds {:.2}); \
         local without deadline {no_deadline:.2} (adds {:.2}); \
         local from outside a served call, with deadline (starts the edge timer) {edge:.2} (adds {:.2})",
        serving_path - direct,
        unobserved - direct,
        no_deadline - direct,
        edge - direct,
    );

    let (grpc_allocs, bare_allocs) = remote_allocations(&rt, &grpc_stub, &bare, 16);
    println!(
        "allocations per call over loopback gRPC, both ends in this process, 16 KB context \
         (a clone of the message each call included): grpc binding {grpc_allocs:.2}; \
         bare tonic {bare_allocs:.2} (the binding adds {:.2})",
        grpc_allocs - bare_allocs
    );
    write_summary(&[
        ("direct", direct),
        ("local_serving", serving_path),
        ("local_unobserved", unobserved),
        ("local_from_outside_with_deadline", edge),
        ("grpc_16kb_both_ends", grpc_allocs),
        ("bare_tonic_16kb_both_ends", bare_allocs),
    ]);

    interleaved(&rt, &local_stub, &unobserved_stub, &serving_cx);

    let mut group = c.benchmark_group("hop");
    for kb in [1usize, 16, 128] {
        let msg = message(kb * 1024);
        let req = || msg.clone();
        let cx = &serving_cx;
        group.bench_with_input(
            BenchmarkId::new("direct", format!("{kb}KB")),
            &kb,
            |b, _| {
                b.to_async(&rt).iter_batched(
                    req,
                    |r| async move { black_box(Echo.recall(cx, r).await) },
                    BatchSize::SmallInput,
                )
            },
        );
        for (name, stub) in [
            ("local_serving", &local_stub),
            ("local_unobserved", &unobserved_stub),
            ("grpc", &grpc_stub),
        ] {
            group.bench_with_input(BenchmarkId::new(name, format!("{kb}KB")), &kb, |b, _| {
                b.to_async(&rt).iter_batched(
                    req,
                    |r| async move { black_box(stub.recall(cx, r).await) },
                    BatchSize::SmallInput,
                )
            });
        }
        group.bench_with_input(
            BenchmarkId::new("bare_tonic", format!("{kb}KB")),
            &kb,
            |b, _| {
                b.to_async(&rt).iter_batched(
                    req,
                    |r| {
                        let mut client = bare.clone();
                        async move {
                            let mut r = tonic::Request::new(r);
                            r.set_timeout(Duration::from_secs(3600));
                            black_box(client.recall(r).await)
                        }
                    },
                    BatchSize::SmallInput,
                )
            },
        );
    }
    group.finish();
}

criterion_group!(benches, hops);
criterion_main!(benches);
