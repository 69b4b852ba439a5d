//! Cost of one hop through the registry, for 1 KB, 16 KB and 128 KB of user
//! context, on four paths:
//!
//! - `direct`: the stage implementation called as a concrete type;
//! - `local`: the same implementation through the registry's `local` binding
//!   (`Arc<dyn Recall>`);
//! - `grpc`: through the registry's `grpc` binding to a server built from the
//!   generated adapters, over loopback TCP;
//! - `bare_tonic`: tonic's generated client and server alone, same messages,
//!   same loopback: the floor for `grpc`.
//!
//! Before the timings it prints heap allocations per call for `direct` and
//! `local`, counted by a wrapping global allocator (bench binary only).

// The counting allocator needs `unsafe impl GlobalAlloc`; nothing else here does.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use proxy_api::pb::{self, recall_client::RecallClient, recall_server::RecallServer};
use proxy_api::{Limits, Recall, Registry, RemoteConfig, Stage};
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
            })
            .collect(),
        timings: Vec::new(),
    }
}

#[proxy_api::async_trait]
impl Recall for Echo {
    async fn recall(
        &self,
        request: tonic::Request<pb::RecallRequest>,
    ) -> Result<tonic::Response<pb::RecallResponse>, tonic::Status> {
        black_box(request);
        Ok(tonic::Response::new(answer()))
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
        context: Some(pb::UserContext {
            blob: vec![7; bytes],
            ..Default::default()
        }),
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

fn allocations_per_call(rt: &Runtime, stub: &Arc<dyn Recall>) -> (f64, f64) {
    const N: u64 = 10_000;
    let measure = |f: &dyn Fn() -> tonic::Request<pb::RecallRequest>, local: bool| {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        rt.block_on(async {
            for _ in 0..N {
                let req = f();
                let _ = if local {
                    stub.recall(req).await
                } else {
                    Echo.recall(req).await
                };
            }
        });
        (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / N as f64
    };
    // The request is built inside the loop for both paths alike: subtract it.
    let build = || tonic::Request::new(pb::RecallRequest::default());
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..N {
        black_box(build());
    }
    let request_cost = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / N as f64;
    (
        measure(&build, false) - request_cost,
        measure(&build, true) - request_cost,
    )
}

fn hops(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let (local_stub, grpc_stub, bare) = rt.block_on(async {
        let mut local = Registry::empty();
        local.provide_recall(Arc::new(Echo)).expect("provide");
        let local_stub = local.recall().expect("local");

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
            grpc_stub,
            RecallClient::new(channel).max_decoding_message_size(16 << 20),
        )
    });

    let (direct_allocs, local_allocs) = allocations_per_call(&rt, &local_stub);
    proxy_api::observe::set_local_calls_observed(false);
    let (_, unobserved_allocs) = allocations_per_call(&rt, &local_stub);
    proxy_api::observe::set_local_calls_observed(true);
    println!(
        "allocations per call (excluding building the request): direct {direct_allocs:.2}, local {local_allocs:.2} (adds {:.2}), local unobserved {unobserved_allocs:.2} (adds {:.2})",
        local_allocs - direct_allocs,
        unobserved_allocs - direct_allocs
    );

    let mut group = c.benchmark_group("hop");
    for kb in [1usize, 16, 128] {
        let msg = message(kb * 1024);
        let req = || tonic::Request::new(msg.clone());
        group.bench_with_input(
            BenchmarkId::new("direct", format!("{kb}KB")),
            &kb,
            |b, _| {
                b.to_async(&rt).iter_batched(
                    req,
                    |r| async { black_box(Echo.recall(r).await) },
                    BatchSize::SmallInput,
                )
            },
        );
        // Through the registry; `local_unobserved` is the binding alone
        // (local calls not observed: no metrics, no span).
        for (name, stub, observed) in [
            ("local", &local_stub, true),
            ("local_unobserved", &local_stub, false),
            ("grpc", &grpc_stub, true),
        ] {
            proxy_api::observe::set_local_calls_observed(observed);
            group.bench_with_input(BenchmarkId::new(name, format!("{kb}KB")), &kb, |b, _| {
                b.to_async(&rt).iter_batched(
                    req,
                    |r| async { black_box(stub.recall(r).await) },
                    BatchSize::SmallInput,
                )
            });
        }
        proxy_api::observe::set_local_calls_observed(true);
        group.bench_with_input(
            BenchmarkId::new("bare_tonic", format!("{kb}KB")),
            &kb,
            |b, _| {
                b.to_async(&rt).iter_batched(
                    req,
                    |r| {
                        let mut client = bare.clone();
                        async move { black_box(client.recall(r).await) }
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
