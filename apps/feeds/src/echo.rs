//! `feeds echo`: the baselines of `feeds bench`, written against tonic's
//! generated code alone (no registry, no stage logic, no runtime layers).
//!
//! - The echo chain: five processes, one per stage, passing the same
//!   messages as the real chain: the context moves down every hop, recall
//!   answers 1,000 candidates, fine-rank passes 200 up, rerank the page,
//!   business fills placeholder metadata. Every hop decodes the context and
//!   encodes it again, as tonic with prost's generated types does: this is
//!   the floor five-pod is compared with.
//! - The one-hop echo: business alone (`--next` not given) answers the
//!   entry's request with a page of the same shape, in one process: the floor
//!   the monolith's framework cost is compared with.

use std::future::Future;

use proxy_api::pb::{
    self, business_server, fine_rank_server, recall_server, rerank_server, split_server,
};
use proxy_api::{Limits, Stage};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Candidates the echo recall returns, as the real one does.
const CANDIDATES: u64 = 1_000;
/// Items the echo fine-rank keeps, as the real one does.
const KEEP: usize = 200;

/// One echo stage: the tonic client of the next stage, if any.
#[derive(Clone)]
struct Echo {
    /// Channel to the next stage of the chain.
    next: Option<Channel>,
    /// Message size limits of the clients.
    limits: Limits,
}

impl Echo {
    fn next(&self) -> Result<Channel, Status> {
        self.next
            .clone()
            .ok_or_else(|| Status::failed_precondition("echo stage has no --next"))
    }
}

/// Decodes a received context and drops its bytes, so the hop encodes it
/// again from the decoded value: what plain generated types cost.
fn decoded(
    context: Option<proxy_api::PassThrough<pb::UserContext>>,
) -> Result<Option<proxy_api::PassThrough<pb::UserContext>>, Status> {
    let mut context = context;
    if let Some(c) = context.as_mut() {
        c.materialize()
            .map_err(|e| Status::invalid_argument(format!("context: {e}")))?;
    }
    Ok(context)
}

/// The experiment assignment every echo answer carries.
fn assignment() -> pb::Assignment {
    pb::Assignment {
        experiments: vec![pb::ExperimentHit {
            layer: "ranking".into(),
            experiment: "model-v2".into(),
            bucket: 183,
        }],
        params: split::Config::default().defaults,
    }
}

#[tonic::async_trait]
impl business_server::Business for Echo {
    async fn get_feed(
        &self,
        request: Request<pb::GetFeedRequest>,
    ) -> Result<Response<pb::GetFeedResponse>, Status> {
        let r = request.into_inner();
        let page = r.page_size as usize;
        let context = decoded(r.context)?;
        let down = match self.next.clone() {
            // One hop: the page is made here, from candidates of the shape
            // the chain would bring back.
            None => pb::SplitResponse {
                items: (0..page as u64 + 1)
                    .map(|i| pb::ScoredItem {
                        item_id: i * 37,
                        score: 1.0 / (1.0 + i as f32),
                        channel: "ann".into(),
                        reserve: false,
                    })
                    .collect(),
                assignment: Some(assignment()),
                timings: Vec::new(),
            },
            Some(next) => pb::split_client::SplitClient::new(next)
                .max_decoding_message_size(self.limits.max_recv_bytes)
                .split(pb::SplitRequest {
                    user_id: r.user_id,
                    limit: r.page_size + 1,
                    context,
                    layers: Vec::new(),
                    explain: false,
                    constraints: Some(pb::Constraints::default()),
                    page_size: r.page_size,
                })
                .await?
                .into_inner(),
        };
        let items = down
            .items
            .into_iter()
            .take(page)
            .map(|s| pb::FeedItem {
                item_id: s.item_id,
                score: s.score,
                title: format!("gaming-1 #{}", s.item_id),
                category: "gaming-1".into(),
                creator: format!("creator-{:05}", s.item_id % 2_000),
                channel: s.channel,
            })
            .collect();
        Ok(Response::new(pb::GetFeedResponse {
            items,
            next_cursor: String::new(),
            assignment: down.assignment,
            timings: Vec::new(),
            degraded: false,
        }))
    }
}

#[tonic::async_trait]
impl split_server::Split for Echo {
    async fn split(
        &self,
        request: Request<pb::SplitRequest>,
    ) -> Result<Response<pb::SplitResponse>, Status> {
        let r = request.into_inner();
        let mut client = pb::rerank_client::RerankClient::new(self.next()?)
            .max_decoding_message_size(self.limits.max_recv_bytes);
        let assignment = assignment();
        let down = client
            .rerank(pb::RerankRequest {
                user_id: r.user_id,
                limit: r.limit,
                context: decoded(r.context)?,
                assignment: Some(assignment.clone()),
                explain: false,
                constraints: r.constraints,
                page_size: r.page_size,
            })
            .await?
            .into_inner();
        Ok(Response::new(pb::SplitResponse {
            items: down.items,
            assignment: Some(assignment),
            timings: Vec::new(),
        }))
    }
}

#[tonic::async_trait]
impl rerank_server::Rerank for Echo {
    async fn rerank(
        &self,
        request: Request<pb::RerankRequest>,
    ) -> Result<Response<pb::RerankResponse>, Status> {
        let r = request.into_inner();
        let mut client = pb::fine_rank_client::FineRankClient::new(self.next()?)
            .max_decoding_message_size(self.limits.max_recv_bytes);
        let down = client
            .rank(pb::RankRequest {
                user_id: r.user_id,
                context: decoded(r.context)?,
                assignment: r.assignment,
                explain: false,
                constraints: r.constraints,
            })
            .await?
            .into_inner();
        let items = down.items.into_iter().take(r.limit as usize).collect();
        Ok(Response::new(pb::RerankResponse {
            items,
            timings: Vec::new(),
        }))
    }
}

#[tonic::async_trait]
impl fine_rank_server::FineRank for Echo {
    async fn rank(
        &self,
        request: Request<pb::RankRequest>,
    ) -> Result<Response<pb::RankResponse>, Status> {
        let r = request.into_inner();
        let mut client = pb::recall_client::RecallClient::new(self.next()?)
            .max_decoding_message_size(self.limits.max_recv_bytes);
        let down = client
            .recall(pb::RecallRequest {
                user_id: r.user_id,
                context: decoded(r.context)?,
                assignment: r.assignment,
                explain: false,
                constraints: r.constraints,
            })
            .await?
            .into_inner();
        let items = down.items.into_iter().take(KEEP).collect();
        Ok(Response::new(pb::RankResponse {
            items,
            timings: Vec::new(),
        }))
    }
}

#[tonic::async_trait]
impl recall_server::Recall for Echo {
    async fn recall(
        &self,
        request: Request<pb::RecallRequest>,
    ) -> Result<Response<pb::RecallResponse>, Status> {
        decoded(request.into_inner().context)?;
        let items = (0..CANDIDATES)
            .map(|i| pb::ScoredItem {
                item_id: i * 37,
                score: 1.0 / (1.0 + i as f32),
                channel: "ann".into(),
                reserve: false,
            })
            .collect();
        Ok(Response::new(pb::RecallResponse {
            items,
            timings: Vec::new(),
        }))
    }
}

/// Why an echo process could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    /// `--next` is not a usable URL.
    #[error("echo: --next: {0}")]
    Next(String),
    /// The gRPC server failed.
    #[error("echo: grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves the echo `stage` on `listener`, forwarding to `next`, until `shutdown`.
pub async fn run_echo(
    stage: Stage,
    listener: TcpListener,
    next: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), EchoError> {
    let limits = Limits::default();
    let next = match next {
        Some(url) => Some(
            tonic::transport::Endpoint::from_shared(url)
                .map_err(|e| EchoError::Next(e.to_string()))?
                .tcp_nodelay(true)
                .connect_lazy(),
        ),
        None => None,
    };
    let echo = Echo { next, limits };
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let (r, s) = (limits.max_recv_bytes, limits.max_send_bytes);
    let builder = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health_service);
    let router = match stage {
        Stage::Business => builder.add_service(
            business_server::BusinessServer::new(echo)
                .max_decoding_message_size(r)
                .max_encoding_message_size(s),
        ),
        Stage::Split => builder.add_service(
            split_server::SplitServer::new(echo)
                .max_decoding_message_size(r)
                .max_encoding_message_size(s),
        ),
        Stage::Rerank => builder.add_service(
            rerank_server::RerankServer::new(echo)
                .max_decoding_message_size(r)
                .max_encoding_message_size(s),
        ),
        Stage::FineRank => builder.add_service(
            fine_rank_server::FineRankServer::new(echo)
                .max_decoding_message_size(r)
                .max_encoding_message_size(s),
        ),
        Stage::Recall => builder.add_service(
            recall_server::RecallServer::new(echo)
                .max_decoding_message_size(r)
                .max_encoding_message_size(s),
        ),
    };
    router
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    Ok(())
}
