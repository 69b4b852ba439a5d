//! Dye and stress routing on real processes: a dyed request and everything
//! it calls reach the `canary` pool, through a `local` hop and a `grpc` hop
//! before the routed one; undyed requests never do; a dye or stress tag from
//! an untrusted peer is removed at the entry; with `canary` down, dyed
//! requests fall back and succeed; stress traffic is labelled at every hop.
//!
//! ```text
//! client -> front [business -local-> split] -grpc-> back [rerank -local-> finerank]
//!                                                         -route-> recall a (default) | recall b (canary)
//! ```

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Proc, SERVING, free_addr, recall_served, sample, scrape, wait_health};
use tonic::metadata::MetadataValue;

struct Setup {
    front: Proc,
    front_metrics: SocketAddr,
    open_front: Proc,
    open_front_metrics: SocketAddr,
    back_metrics: SocketAddr,
    a: Proc,
    a_metrics: SocketAddr,
    b: Proc,
    b_metrics: SocketAddr,
    _back: Proc,
}

fn front(listen: SocketAddr, metrics: SocketAddr, back: SocketAddr, trusted: &str) -> String {
    format!(
        "[process]\nlisten = \"{listen}\"\nhost = [\"business\", \"split\"]\ntrusted_peers = [{trusted}]\n\n\
         [remote.rerank]\nendpoints = [\"http://{back}\"]\n\n[telemetry]\nmetrics_listen = \"{metrics}\"\n"
    )
}

async fn setup() -> Setup {
    let (a, b, back) = (free_addr(), free_addr(), free_addr());
    let (a_metrics, b_metrics, back_metrics) = (free_addr(), free_addr(), free_addr());
    let a_proc = Proc::start("recall-a", a, &common::recall_replica(a, a_metrics, ""));
    let b_proc = Proc::start("recall-b", b, &common::recall_replica(b, b_metrics, ""));
    let back_proc = Proc::start(
        "back",
        back,
        &format!(
            "[process]\nlisten = \"{back}\"\nhost = [\"rerank\", \"finerank\"]\n\n\
             [remote.recall]\nendpoints = [\"http://{a}\"]\nhealth_interval_ms = 200\n\n\
             [remote.recall.pools.canary]\nendpoints = [\"http://{b}\"]\nhealth_interval_ms = 200\n\n\
             [[routes.recall]]\ndye = \"canary\"\ntarget = \"canary\"\n\n\
             [telemetry]\nmetrics_listen = \"{back_metrics}\"\n"
        ),
    );
    let (trusted, open) = (free_addr(), free_addr());
    let (trusted_metrics, open_metrics) = (free_addr(), free_addr());
    let front_proc = Proc::start(
        "front",
        trusted,
        &front(trusted, trusted_metrics, back, "\"127.0.0.0/8\""),
    );
    let open_proc = Proc::start(
        "front-untrusting",
        open,
        &front(open, open_metrics, back, ""),
    );
    for addr in [a, b, back, trusted, open] {
        wait_health(addr, "", SERVING, Duration::from_secs(120)).await;
    }
    // The canary pool is healthy once probed (every 200 ms).
    tokio::time::sleep(Duration::from_millis(600)).await;
    Setup {
        front: front_proc,
        front_metrics: trusted_metrics,
        open_front: open_proc,
        open_front_metrics: open_metrics,
        back_metrics,
        a: a_proc,
        a_metrics,
        b: b_proc,
        b_metrics,
        _back: back_proc,
    }
}

/// Sends `n` valid requests to `addr` with `headers`; returns how many succeeded
/// and the `served by` path of the last one. Panics, naming the status, if
/// any fails: every call here is one that must succeed.
async fn send(
    addr: SocketAddr,
    n: usize,
    headers: &[(&'static str, &'static str)],
) -> (usize, String) {
    let mut client = common::business(addr).await;
    let cases = common::cases(60);
    let valid: Vec<_> = cases
        .iter()
        .filter(|c| {
            c.tenant != Some("lite") && c.request.page_size > 0 && !c.request.user_id.is_empty()
        })
        .take(n)
        .collect();
    assert_eq!(valid.len(), n, "not enough valid cases");
    let (mut ok, mut path) = (0, String::new());
    for (i, case) in valid.iter().enumerate() {
        let mut request = common::request(case, i);
        request.get_mut().explain = true;
        for (k, v) in headers {
            request
                .metadata_mut()
                .insert(*k, MetadataValue::from_static(v));
        }
        match client.get_feed(request).await {
            Ok(response) => {
                ok += 1;
                path = response
                    .metadata()
                    .get("x-tandem-path")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
            }
            Err(status) => panic!("request {i} to {addr} with {headers:?} failed: {status:?}"),
        }
    }
    (ok, path)
}

const DYE: (&str, &str) = ("x-tandem-dye", "canary");
const STRESS: (&str, &str) = ("x-tandem-stress", "1");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dye_and_stress_route_and_are_stripped_from_untrusted_peers() {
    let mut s = setup().await;
    let served = |m| recall_served(m);

    // Undyed: only the default pool.
    let (a0, b0) = (served(s.a_metrics).await, served(s.b_metrics).await);
    let (ok, path) = send(s.front.addr, 10, &[]).await;
    assert_eq!(ok, 10);
    assert!(path.contains("recall=default"), "{path}");
    assert_eq!(served(s.a_metrics).await - a0, 10.0);
    assert_eq!(served(s.b_metrics).await - b0, 0.0);

    // Dyed, from a trusted peer: the dye crosses business -local-> split
    // -grpc-> rerank -local-> finerank and reaches only the canary pool.
    let (a0, b0) = (served(s.a_metrics).await, served(s.b_metrics).await);
    let (ok, path) = send(s.front.addr, 10, &[DYE]).await;
    assert_eq!(ok, 10);
    assert!(path.contains("recall=canary"), "{path}");
    assert!(path.contains("rerank=default"), "{path}");
    assert_eq!(served(s.b_metrics).await - b0, 10.0);
    assert_eq!(served(s.a_metrics).await - a0, 0.0);

    // Dyed, from a peer the entry does not trust: the dye is removed.
    let (a0, b0) = (served(s.a_metrics).await, served(s.b_metrics).await);
    let (ok, _) = send(s.open_front.addr, 10, &[DYE]).await;
    assert_eq!(ok, 10);
    assert_eq!(served(s.a_metrics).await - a0, 10.0);
    assert_eq!(served(s.b_metrics).await - b0, 0.0);

    // Stress from a trusted peer: labelled at every hop, both bindings,
    // both ends.
    let (ok, _) = send(s.front.addr, 5, &[STRESS]).await;
    assert_eq!(ok, 5);
    let stress = "traffic=\"stress\"";
    let front_text = scrape(s.front_metrics).await;
    let back_text = scrape(s.back_metrics).await;
    let a_text = scrape(s.a_metrics).await;
    for (text, series, callee) in [
        (&front_text, "grpc_server_handled_total", "business"),
        (&front_text, "grpc_client_handled_total", "split"),
        (&front_text, "grpc_client_handled_total", "rerank"),
        (&back_text, "grpc_server_handled_total", "rerank"),
        (&back_text, "grpc_client_handled_total", "finerank"),
        (&back_text, "grpc_client_handled_total", "recall"),
        (&a_text, "grpc_server_handled_total", "recall"),
    ] {
        let callee = format!("callee=\"{callee}\"");
        assert_eq!(
            sample(text, series, &[stress, &callee]),
            5.0,
            "{series} {callee} not labelled stress"
        );
    }

    // Stress from an untrusted peer: gone at the first hop.
    let (ok, _) = send(s.open_front.addr, 5, &[STRESS]).await;
    assert_eq!(ok, 5);
    let open_text = scrape(s.open_front_metrics).await;
    assert_eq!(
        sample(&open_text, "grpc_server_handled_total", &[stress]),
        0.0
    );
    assert_eq!(
        sample(
            &scrape(s.a_metrics).await,
            "grpc_server_handled_total",
            &[stress]
        ),
        5.0,
        "untrusted stress reached recall"
    );

    // Canary down: dyed requests fall back to the default pool and succeed.
    s.b.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = s.b.wait_exit(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let a0 = served(s.a_metrics).await;
    let (ok, path) = send(s.front.addr, 10, &[DYE]).await;
    assert_eq!(ok, 10, "dyed requests failed with the canary down");
    assert!(path.contains("recall=default"), "{path}");
    assert_eq!(served(s.a_metrics).await - a0, 10.0);
    let fallbacks = sample(
        &scrape(s.back_metrics).await,
        "feeds_route_fallbacks_total",
        &["stage=\"recall\"", "from=\"canary\"", "to=\"default\""],
    );
    assert!(fallbacks >= 10.0, "fallbacks counted: {fallbacks}");
    drop(s.a);
}
