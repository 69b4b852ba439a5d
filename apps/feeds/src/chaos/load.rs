//! Open-loop load for a chaos run: requests at a fixed rate for as long as
//! the run lasts (bounded by a time limit), each on its own task at its
//! intended time, every outcome recorded with its send time, so each fault's
//! window can be cut out of one continuous stream afterwards.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxy_api::pb::{self, business_client::BusinessClient};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::Channel;

/// One request's outcome.
#[derive(Clone, Debug)]
pub struct Record {
    /// When it was meant to be sent, ms since the run's epoch.
    pub sent_ms: f64,
    /// From the intended send time to the answer, ms (a slow generator
    /// cannot hide a queue).
    pub latency_ms: f64,
    /// The status code when it failed.
    pub code: Option<tonic::Code>,
    /// The status message when it failed.
    pub message: Option<String>,
    /// The answer came after the client's deadline (or never came).
    pub outlived: bool,
}

impl Record {
    /// When the answer came, ms since the epoch.
    pub fn done_ms(&self) -> f64 {
        self.sent_ms + self.latency_ms
    }
}

/// The generator, running until [`Load::finish`] or its time limit.
pub struct Load {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<JoinHandle<()>>>,
    records: Arc<Mutex<Vec<Record>>>,
}

/// What the generator needs.
pub struct Plan {
    /// Clients, used in turn.
    pub clients: Vec<BusinessClient<Channel>>,
    /// Requests, used in turn.
    pub requests: Arc<Vec<pb::GetFeedRequest>>,
    /// Requests per second.
    pub rate: f64,
    /// Each request's deadline (sent as `grpc-timeout`).
    pub deadline: Duration,
    /// The generator stops by itself after this long.
    pub limit: Duration,
    /// Time zero of the records.
    pub epoch: Instant,
}

/// Starts sending.
pub fn start(plan: Plan) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let records = Arc::new(Mutex::new(Vec::new()));
    let task = tokio::spawn(generate(plan, Arc::clone(&stop), Arc::clone(&records)));
    Load {
        stop,
        task,
        records,
    }
}

impl Load {
    /// Stops sending, waits for the requests in flight (each bounded by its
    /// deadline and a second) and returns every record in send order.
    pub async fn finish(self) -> Vec<Record> {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(tasks) = self.task.await {
            for t in tasks {
                let _ = t.await;
            }
        }
        let mut records = match self.records.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        records.sort_by(|a, b| a.sent_ms.total_cmp(&b.sent_ms));
        records
    }
}

async fn generate(
    plan: Plan,
    stop: Arc<AtomicBool>,
    records: Arc<Mutex<Vec<Record>>>,
) -> Vec<JoinHandle<()>> {
    let interval = Duration::from_secs_f64(1.0 / plan.rate);
    let start = Instant::now();
    let end = start + plan.limit;
    let mut tasks = Vec::new();
    for i in 0u64.. {
        let intended = start + interval.mul_f64(i as f64);
        if intended >= end || stop.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep_until(intended).await;
        let mut client = plan.clients[i as usize % plan.clients.len()].clone();
        let mut request =
            tonic::Request::new(plan.requests[i as usize % plan.requests.len()].clone());
        request.set_timeout(plan.deadline);
        let (deadline, epoch, records) = (plan.deadline, plan.epoch, Arc::clone(&records));
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            // The server enforces the deadline; this bound only keeps a
            // request that never answers from holding the run.
            let answer =
                tokio::time::timeout(deadline + Duration::from_secs(1), client.get_feed(request))
                    .await;
            let took = sent.elapsed();
            let (code, message) = match answer {
                Ok(Ok(_)) => (None, None),
                Ok(Err(status)) => (Some(status.code()), Some(status.message().to_owned())),
                Err(_) => (
                    Some(tonic::Code::DeadlineExceeded),
                    Some("no answer within the deadline and a second".to_owned()),
                ),
            };
            let record = Record {
                sent_ms: intended.duration_since(epoch).as_secs_f64() * 1e3,
                latency_ms: intended.elapsed().as_secs_f64() * 1e3,
                code,
                message,
                outlived: took > deadline,
            };
            if let Ok(mut g) = records.lock() {
                g.push(record);
            }
        }));
        // Finished tasks need not be kept.
        if tasks.len() >= 4096 {
            tasks.retain(|t| !t.is_finished());
        }
    }
    tasks
}
