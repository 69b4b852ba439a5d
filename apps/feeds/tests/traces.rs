//! A trace id survives five processes: each process exports its spans over
//! OTLP to a collector run by this test, and every stage's spans carry the
//! trace id the client sent, chained parent to child. The monolith exports
//! spans with the same names. JSON logs carry request id, tenant and trace id.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Proc, SERVING, wait_health};
use nix::sys::signal::Signal;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use proxy_api::Stage;
use tonic::metadata::MetadataValue;

/// One exported span: (service.name, name, trace id, span id, parent id).
#[derive(Clone, Debug)]
struct Exported {
    service: String,
    name: String,
    trace: Vec<u8>,
    span: Vec<u8>,
    parent: Vec<u8>,
}

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Exported>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut seen = self.0.lock().expect("lock");
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    seen.push(Exported {
                        service: service.clone(),
                        name: span.name,
                        trace: span.trace_id,
                        span: span.span_id,
                        parent: span.parent_span_id,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn telemetry(collector: SocketAddr, json: bool) -> String {
    let logs = if json {
        "log_format = \"json\"\nlog_filter = \"info,feeds::rpc=debug,hnsw_rs=warn\"\n"
    } else {
        ""
    };
    format!("\n[telemetry]\notlp_endpoint = \"http://{collector}\"\n{logs}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_id_survives_five_processes() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let collector_addr = listener.local_addr().expect("addr");
    let server = {
        let collector = collector.clone();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await;
        })
    };

    // Five pods, each exporting to the collector.
    let addrs: Vec<SocketAddr> = Stage::ALL.iter().map(|_| common::free_addr()).collect();
    let mut procs = Vec::new();
    for (i, stage) in Stage::ALL.iter().enumerate() {
        let mut toml = format!(
            "[process]\nlisten = \"{}\"\nhost = [\"{}\"]\ndrain_ms = 0\n",
            addrs[i],
            stage.name()
        );
        if let Some(next) = Stage::ALL.get(i + 1) {
            toml.push_str(&format!(
                "[remote.{}]\nendpoints = [\"http://{}\"]\n",
                next.name(),
                addrs[i + 1]
            ));
        }
        toml.push_str(&telemetry(collector_addr, *stage == Stage::Business));
        procs.push(Proc::start(stage.name(), addrs[i], &toml));
    }
    // And a monolith.
    let mono = common::free_addr();
    procs.push(Proc::start(
        "monolith",
        mono,
        &format!(
            "[process]\nlisten = \"{mono}\"\ndrain_ms = 0\n{}",
            telemetry(collector_addr, false)
        ),
    ));
    wait_health(addrs[0], "", SERVING, Duration::from_secs(120)).await;
    wait_health(mono, "", SERVING, Duration::from_secs(120)).await;

    let case = &common::cases(3)[2];
    let traced = |trace: &'static str, request_id: &'static str| {
        let mut r = common::request(case, 0);
        let md = r.metadata_mut();
        md.insert("traceparent", MetadataValue::from_static(trace));
        md.insert("x-request-id", MetadataValue::from_static(request_id));
        md.insert("x-tenant", MetadataValue::from_static("default"));
        r
    };
    let five_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mono_trace = "0af7651916cd43dd8448eb211c80319c";
    common::business(addrs[0])
        .await
        .get_feed(traced(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "five-pod-1",
        ))
        .await
        .expect("five-pod answers");
    common::business(mono)
        .await
        .get_feed(traced(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "monolith-1",
        ))
        .await
        .expect("monolith answers");
    // A failing call leaves a log line inside its span.
    let mut bad = traced(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "five-pod-bad",
    );
    bad.metadata_mut()
        .insert("x-tenant", MetadataValue::from_static("nobody"));
    let _ = common::business(addrs[0]).await.get_feed(bad).await;

    // Stopping flushes every exporter.
    for p in &procs {
        p.signal(Signal::SIGTERM);
    }
    for p in &mut procs {
        assert!(
            p.wait_exit(Duration::from_secs(30)).await.success(),
            "{}",
            p.name
        );
    }
    server.abort();
    let spans = collector.0.lock().expect("lock").clone();

    let of = |trace: &str| -> Vec<&Exported> {
        spans.iter().filter(|s| hex(&s.trace) == trace).collect()
    };
    let five = of(five_trace);
    let services: BTreeSet<&str> = five.iter().map(|s| s.service.as_str()).collect();
    let expected: BTreeSet<String> = Stage::ALL
        .iter()
        .map(|s| format!("feeds-{}", s.name()))
        .collect();
    assert_eq!(
        services,
        expected.iter().map(String::as_str).collect(),
        "every process exported spans of the trace: {five:#?}"
    );
    // Chained: every span's parent is another span of the trace, except the
    // entry, whose parent is the client's span.
    let ids: BTreeMap<String, &Exported> = five.iter().map(|s| (hex(&s.span), *s)).collect();
    for s in &five {
        let parent = hex(&s.parent);
        assert!(
            ids.contains_key(&parent) || parent == "00f067aa0ba902b7",
            "{s:?} has a parent outside the trace"
        );
    }
    let names = |spans: &[&Exported]| -> BTreeSet<String> {
        spans.iter().map(|s| s.name.clone()).collect()
    };
    let want: BTreeSet<String> = [
        "feeds.v1.Business/GetFeed",
        "feeds.v1.Split/Split",
        "feeds.v1.Rerank/Rerank",
        "feeds.v1.FineRank/Rank",
        "feeds.v1.Recall/Recall",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(names(&five), want);
    // The monolith: one process, the same span names, the same trace.
    let mono_spans = of(mono_trace);
    assert!(
        mono_spans.iter().all(|s| s.service == "feeds"),
        "{mono_spans:#?}"
    );
    assert_eq!(names(&mono_spans), want, "same span names in both bindings");

    // JSON logs carry request id, tenant and trace id.
    let log = procs[0].log();
    let line = log
        .lines()
        .find(|l| l.contains("five-pod-bad"))
        .unwrap_or_else(|| panic!("no log line for the failing call:\n{log}"));
    let json: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    let span = &json["span"];
    assert_eq!(span["request_id"], "five-pod-bad", "{line}");
    assert_eq!(span["tenant"], "nobody", "{line}");
    assert_eq!(span["trace_id"], five_trace, "{line}");
}
