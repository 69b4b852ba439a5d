//! `/metrics` shows the per-stage, per-method series after traffic, labelled
//! with binding, caller and callee: `local` hops in the monolith, `grpc`
//! hops (client and server side) in a split topology.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Proc, SERVING, sample, scrape, wait_health};
use tonic::metadata::MetadataValue;

async fn traffic(addr: SocketAddr, n: usize) {
    let mut client = common::business(addr).await;
    let cases = common::cases(n);
    for (i, case) in cases.iter().enumerate() {
        client
            .get_feed(common::request(case, i))
            .await
            .expect("valid request");
    }
    // One request for a tenant that does not exist: NOT_FOUND.
    let mut bad = common::request(&cases[0], 0);
    bad.metadata_mut()
        .insert("x-tenant", MetadataValue::from_static("nobody"));
    let status = client.get_feed(bad).await.expect_err("unknown tenant");
    assert_eq!(status.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_labelled_series_in_both_bindings() {
    let n = 12;
    // The monolith: every hop is local.
    let (mono, mono_metrics) = (common::free_addr(), common::free_addr());
    let _mono = Proc::start(
        "monolith",
        mono,
        &format!(
            "[process]\nlisten = \"{mono}\"\n[telemetry]\nmetrics_listen = \"{mono_metrics}\"\n"
        ),
    );
    // Mixed: business+split | rerank+finerank+recall, rerank over gRPC.
    let (front, front_metrics, back, back_metrics) = (
        common::free_addr(),
        common::free_addr(),
        common::free_addr(),
        common::free_addr(),
    );
    let _back = Proc::start(
        "back",
        back,
        &format!(
            "[process]\nlisten = \"{back}\"\nhost = [\"rerank\", \"finerank\", \"recall\"]\n[telemetry]\nmetrics_listen = \"{back_metrics}\"\n"
        ),
    );
    let _front = Proc::start(
        "front",
        front,
        &format!(
            "[process]\nlisten = \"{front}\"\nhost = [\"business\", \"split\"]\n[remote.rerank]\nendpoints = [\"http://{back}\"]\n[telemetry]\nmetrics_listen = \"{front_metrics}\"\n"
        ),
    );
    for addr in [mono, front] {
        wait_health(addr, "", SERVING, Duration::from_secs(90)).await;
        traffic(addr, n).await;
    }

    let ok = "grpc_code=\"OK\"";
    let text = scrape(mono_metrics).await;
    for (caller, callee) in [
        ("business", "split"),
        ("split", "rerank"),
        ("rerank", "finerank"),
        ("finerank", "recall"),
    ] {
        let labels = [
            "binding=\"local\"",
            &format!("caller=\"{caller}\""),
            &format!("callee=\"{callee}\""),
            ok,
        ];
        assert_eq!(
            sample(&text, "grpc_client_handled_total", &labels),
            n as f64,
            "{caller}->{callee} local\n{text}"
        );
        assert_eq!(
            sample(&text, "grpc_client_handling_seconds_count", &labels[..3]),
            n as f64,
            "{caller}->{callee} histogram"
        );
    }
    // The entry: the client's calls, by code, on the server side.
    let entry = [
        "binding=\"grpc\"",
        "caller=\"client\"",
        "callee=\"business\"",
        "grpc_method=\"GetFeed\"",
    ];
    assert_eq!(
        sample(
            &text,
            "grpc_server_handled_total",
            &[&entry[..], &[ok]].concat()
        ),
        n as f64
    );
    assert_eq!(
        sample(
            &text,
            "grpc_server_handled_total",
            &[&entry[..], &["grpc_code=\"NotFound\""]].concat()
        ),
        1.0
    );
    assert!(
        text.contains("grpc_server_handling_seconds_bucket{"),
        "{text}"
    );
    // Split is served too (anyone may call it), but nothing called it over gRPC.
    assert_eq!(
        sample(&text, "grpc_server_handled_total", &["callee=\"split\""]),
        0.0,
        "no gRPC hop inside the monolith"
    );

    // Mixed: the same hop split -> rerank is `grpc`, seen from both ends.
    let front_text = scrape(front_metrics).await;
    let back_text = scrape(back_metrics).await;
    let hop = [
        "binding=\"grpc\"",
        "caller=\"split\"",
        "callee=\"rerank\"",
        ok,
    ];
    assert_eq!(
        sample(&front_text, "grpc_client_handled_total", &hop),
        n as f64,
        "{front_text}"
    );
    assert_eq!(
        sample(&back_text, "grpc_server_handled_total", &hop),
        n as f64,
        "{back_text}"
    );
    assert_eq!(
        sample(
            &front_text,
            "grpc_client_handled_total",
            &[
                "binding=\"local\"",
                "caller=\"business\"",
                "callee=\"split\"",
                ok
            ]
        ),
        n as f64
    );
    assert_eq!(
        sample(
            &back_text,
            "grpc_client_handled_total",
            &[
                "binding=\"local\"",
                "caller=\"finerank\"",
                "callee=\"recall\"",
                ok
            ]
        ),
        n as f64
    );
}
