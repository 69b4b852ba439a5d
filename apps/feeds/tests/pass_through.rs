//! The user context passes through the stages that only forward it as the
//! bytes that arrived: split and rerank never decode it, fine-rank decodes it
//! once to read it, and what reaches recall is byte for byte what the client
//! sent, including a field that only the client's (newer) proto knows. With
//! `process.pass_through = false` every hop decodes and re-encodes it, and
//! the unknown field is lost on the way: the contrast shows the test can fail.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxy_api::{Cx, Recall, Stage, pb};

/// `feeds.v1.UserContext` as a newer proto would have it: one more field.
#[derive(Clone, PartialEq, prost::Message)]
struct NewerContext {
    #[prost(uint64, repeated, tag = "1")]
    recent_items: Vec<u64>,
    #[prost(message, optional, tag = "3")]
    device: Option<pb::Device>,
    #[prost(bytes = "vec", tag = "5")]
    blob: Vec<u8>,
    #[prost(string, tag = "99")]
    novelty: String,
}

/// `feeds.v1.SplitRequest` carrying the newer context.
#[derive(Clone, PartialEq, prost::Message)]
struct NewerSplitRequest {
    #[prost(string, tag = "1")]
    user_id: String,
    #[prost(uint32, tag = "2")]
    limit: u32,
    #[prost(message, optional, tag = "3")]
    context: Option<NewerContext>,
    #[prost(uint32, tag = "7")]
    page_size: u32,
}

/// Recall that keeps the context bytes it received and answers a few items.
#[derive(Default)]
struct Recorder(Mutex<Vec<Option<bytes::Bytes>>>);

#[proxy_api::async_trait]
impl Recall for Recorder {
    async fn recall(
        &self,
        _cx: &Cx,
        request: pb::RecallRequest,
    ) -> Result<pb::RecallResponse, proxy_api::Status> {
        let raw = request.context.as_ref().and_then(|c| c.raw().cloned());
        self.0.lock().expect("lock").push(raw);
        Ok(pb::RecallResponse {
            items: (0..50)
                .map(|id| pb::ScoredItem {
                    item_id: id,
                    score: 1.0 / (1.0 + id as f32),
                    channel: "popular".into(),
                    reserve: false,
                })
                .collect(),
            timings: Vec::new(),
        })
    }
}

/// Serves `recorder` as recall on a loopback port, with the runtime's
/// server (health included, which fine-rank's readiness follows).
async fn serve_recorder(recorder: Arc<Recorder>) -> SocketAddr {
    let mut local = proxy_api::Registry::empty();
    local.provide_recall(recorder).expect("provide");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let options = proxy_api::server::ServerOptions {
        grace: Duration::from_secs(1),
        ..proxy_api::server::ServerOptions::default()
    };
    tokio::spawn(async move {
        let _ = proxy_api::server::run(&local, listener, &options, std::future::pending()).await;
    });
    common::wait_serving(addr).await;
    addr
}

/// Split, rerank and fine-rank, each its own server, fine-rank calling
/// recall at `recall`.
async fn chain(recall: SocketAddr, pass_through: bool) -> common::InProcess {
    let mut servers = Vec::new();
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        );
    }
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr().expect("addr"))
        .collect();
    let stages = [Stage::Split, Stage::Rerank, Stage::FineRank];
    for (i, listener) in listeners.into_iter().enumerate() {
        let next = match i {
            2 => (Stage::Recall, recall),
            _ => (stages[i + 1], addrs[i + 1]),
        };
        let (mut config, _) = common::config_for(&stages[i..=i], addrs[i], &[next]);
        config.process.pass_through = pass_through;
        let plan = config.validate().expect("valid");
        servers.push((config, plan, listener));
    }
    common::spawn_servers(servers).await
}

fn newer_request(i: u64) -> NewerSplitRequest {
    NewerSplitRequest {
        user_id: (i * 7).to_string(),
        limit: 11,
        context: Some(NewerContext {
            recent_items: vec![i, i + 3, i + 9],
            device: Some(pb::Device {
                os: "android".into(),
                ..Default::default()
            }),
            blob: vec![(i % 200) as u8; 16 * 1024],
            novelty: format!("only the client's proto knows this #{i}"),
        }),
        page_size: 10,
    }
}

/// Sends the newer request to split the way a client built from the newer
/// proto would, and returns the number of items that came back.
async fn send(split: SocketAddr, request: NewerSplitRequest) -> usize {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{split}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(request);
    request.set_timeout(Duration::from_secs(20));
    let response: tonic::Response<pb::SplitResponse> = grpc
        .unary(
            request,
            http::uri::PathAndQuery::from_static("/feeds.v1.Split/Split"),
            tonic_prost::ProstCodec::<NewerSplitRequest, pb::SplitResponse>::default(),
        )
        .await
        .expect("split answers");
    response.into_inner().items.len()
}

/// Runs `n` requests through the chain; returns what recall received and
/// how many pass-through decodes the process made.
async fn run(pass_through: bool, n: u64) -> (Vec<(NewerContext, Option<bytes::Bytes>)>, u64) {
    let recorder = Arc::new(Recorder::default());
    // Recall keeps what arrives as it arrived, so the test sees what
    // fine-rank sent.
    let recall = serve_recorder(Arc::clone(&recorder)).await;
    let servers = chain(recall, pass_through).await;
    let before = proxy_api::decoded_fields();
    let mut sent = Vec::new();
    for i in 0..n {
        let request = newer_request(i);
        let context = request.context.clone().expect("set");
        assert!(
            send(servers.addrs[0], request).await > 0,
            "request {i} answered"
        );
        sent.push(context);
    }
    let decoded = proxy_api::decoded_fields() - before;
    servers.stop().await;
    let received = recorder.0.lock().expect("lock").clone();
    assert_eq!(received.len(), sent.len(), "every request reached recall");
    (sent.into_iter().zip(received).collect(), decoded)
}

#[tokio::test]
async fn the_context_reaches_recall_as_the_client_sent_it() {
    let n = 8;
    let (pairs, decoded) = run(true, n).await;
    for (i, (sent, received)) in pairs.iter().enumerate() {
        let raw = received.as_ref().expect("recall got the context undecoded");
        assert_eq!(
            raw.as_ref(),
            prost::Message::encode_to_vec(sent).as_slice(),
            "request {i}: the bytes changed on the way"
        );
        let back: NewerContext = prost::Message::decode(raw.clone()).expect("decodes");
        assert_eq!(
            back.novelty, sent.novelty,
            "request {i}: the unknown field is intact"
        );
    }
    // Fine-rank reads the context (its recent items), once per request;
    // split and rerank never decode it.
    assert_eq!(decoded, n, "pass-through decodes");

    // The old way: decoded at every hop, re-encoded from what each hop's
    // proto understood, so the field only the client knows is gone.
    let (pairs, decoded) = run(false, n).await;
    for (sent, received) in &pairs {
        let raw = received.as_ref().expect("re-encoded bytes");
        let back: NewerContext = prost::Message::decode(raw.clone()).expect("decodes");
        assert_eq!(back.recent_items, sent.recent_items);
        assert!(
            back.novelty.is_empty(),
            "decoding every hop drops unknown fields"
        );
    }
    // Split, rerank and fine-rank each decode it.
    assert_eq!(decoded, 3 * n, "decodes with pass-through off");
}
