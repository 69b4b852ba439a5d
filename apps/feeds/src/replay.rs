//! `feeds replay`: sends recorded calls (`[record.<stage>]` files) again, to
//! a process hosting their stage, and compares each answer with the recorded
//! one field by field (the differ the shadow layer uses). A call recorded
//! as an error is equal when the same code comes back.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use proxy_api::diff::{DiffOptions, Differ};
use proxy_api::pb;
use proxy_api::record::{RecordError, RecordReader};
use serde::Serialize;
use tonic::metadata::{MetadataKey, MetadataValue};

/// What `feeds replay` was asked to do.
#[derive(Clone, Debug)]
pub struct ReplayArgs {
    /// Recording files, read in order.
    pub files: Vec<PathBuf>,
    /// The process to send them to, `http://host:port`.
    pub addr: String,
    /// Calls per second at most (`None`: one after another, as fast as
    /// they come back).
    pub rate: Option<f64>,
    /// Skip damaged records (counted) instead of stopping at the first.
    pub skip_damaged: bool,
    /// Each call's deadline.
    pub timeout: Duration,
    /// How answers are compared.
    pub diff: DiffOptions,
}

/// What the replay found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplayReport {
    /// Records sent.
    pub sent: u64,
    /// Answers equal to the recorded ones.
    pub equal: u64,
    /// Answers that differed (a field, or the status).
    pub different: u64,
    /// Calls that got no answer from the stage (unreachable, out of time).
    pub failed: u64,
    /// Damaged records skipped (`--skip-damaged`).
    pub skipped: u64,
    /// Per differing field (`status` for a different code): how many answers.
    pub fields: BTreeMap<String, u64>,
    /// Failures, by code.
    pub failures: BTreeMap<String, u64>,
}

impl ReplayReport {
    /// Different and failed answers over those sent.
    pub fn difference_rate(&self) -> f64 {
        (self.different + self.failed) as f64 / self.sent.max(1) as f64
    }

    /// The report as a table.
    pub fn table(&self, threshold: f64) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "replayed {}: {} equal, {} different, {} failed; difference rate {:.2}% (threshold {:.2}%){}",
            self.sent,
            self.equal,
            self.different,
            self.failed,
            self.difference_rate() * 100.0,
            threshold * 100.0,
            match self.skipped {
                0 => String::new(),
                n => format!("; {n} damaged records skipped"),
            }
        );
        if !self.fields.is_empty() {
            let _ = writeln!(out, "{:<28} {:>9} {:>8}", "field", "different", "rate");
            for (field, n) in &self.fields {
                let _ = writeln!(
                    out,
                    "{field:<28} {n:>9} {:>7.2}%",
                    *n as f64 / self.sent.max(1) as f64 * 100.0
                );
            }
        }
        for (code, n) in &self.failures {
            let _ = writeln!(out, "failed with {code}: {n}");
        }
        out
    }
}

/// Why a replay could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A file is damaged (and damage is not skipped) or unreadable.
    #[error("{0} (use --skip-damaged to skip damaged records)")]
    Damaged(RecordError),
    /// `--addr` is not a usable URL.
    #[error("--addr {addr:?}: {why}")]
    Addr {
        /// What was given.
        addr: String,
        /// Why it does not do.
        why: String,
    },
    /// Nothing answers at `--addr`.
    #[error("--addr {addr}: cannot connect: {why}")]
    Connect {
        /// Where.
        addr: String,
        /// What failed.
        why: String,
    },
}

/// Sends every record of `args.files` and compares the answers.
pub async fn replay(args: &ReplayArgs) -> Result<ReplayReport, ReplayError> {
    let endpoint = tonic::transport::Endpoint::from_shared(args.addr.clone()).map_err(|e| {
        ReplayError::Addr {
            addr: args.addr.clone(),
            why: e.to_string(),
        }
    })?;
    let channel = endpoint
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| ReplayError::Connect {
            addr: args.addr.clone(),
            why: e.to_string(),
        })?;
    let differ = Differ::new(args.diff.clone());
    let interval = args.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let mut report = ReplayReport::default();
    let mut next_send = Instant::now();
    for file in &args.files {
        let mut reader = RecordReader::open(file).map_err(ReplayError::Damaged)?;
        loop {
            let record = match reader.next_record() {
                Ok(Some(record)) => record,
                Ok(None) => break,
                // The header itself: not a recording at all.
                Err(e) if !args.skip_damaged || e.offset == 0 => {
                    return Err(ReplayError::Damaged(e));
                }
                Err(e) => {
                    tracing::warn!("skipping a damaged record: {e}");
                    report.skipped += 1;
                    reader.skip_damage().map_err(ReplayError::Damaged)?;
                    continue;
                }
            };
            if let Some(interval) = interval {
                tokio::time::sleep_until(next_send.into()).await;
                next_send = Instant::now().max(next_send) + interval;
            }
            let got = send(channel.clone(), &record, args.timeout).await;
            compare(&differ, &record, got, &mut report);
        }
    }
    Ok(report)
}

/// One recorded call, sent again with its recorded headers.
async fn send(
    channel: tonic::transport::Channel,
    record: &pb::Recording,
    timeout: Duration,
) -> Result<bytes::Bytes, tonic::Status> {
    let path = http::uri::PathAndQuery::try_from(record.method.as_str()).map_err(|e| {
        tonic::Status::invalid_argument(format!("recorded method {:?}: {e}", record.method))
    })?;
    let mut request = tonic::Request::new(record.request.clone());
    request.set_timeout(timeout);
    for h in &record.metadata {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(h.name.as_bytes()),
            MetadataValue::try_from(h.value.as_str()),
        ) {
            request.metadata_mut().append(k, v);
        }
    }
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("not ready: {e}")))?;
    grpc.unary(request, path, proxy_api::codec::RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

fn compare(
    differ: &Differ,
    record: &pb::Recording,
    got: Result<bytes::Bytes, tonic::Status>,
    report: &mut ReplayReport,
) {
    report.sent += 1;
    let recorded = tonic::Code::from_i32(record.code);
    let mut differ_in = |field: String| {
        *report.fields.entry(field).or_default() += 1;
    };
    match got {
        Err(status)
            if status.code() != recorded
                && matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                ) =>
        {
            report.failed += 1;
            *report
                .failures
                .entry(format!("{:?}", status.code()))
                .or_default() += 1;
        }
        Err(status) if status.code() == recorded => report.equal += 1,
        Err(_) => {
            differ_in("status".into());
            report.different += 1;
        }
        Ok(_) if recorded != tonic::Code::Ok => {
            differ_in("status".into());
            report.different += 1;
        }
        Ok(answer) => {
            let fields = differ
                .response_of(&record.method)
                .ok_or_else(|| format!("unknown method {}", record.method))
                .and_then(|name| {
                    differ
                        .diff(&name, &record.response, &answer)
                        .map_err(|e| e.to_string())
                });
            match fields {
                Ok(fields) if fields.is_empty() => report.equal += 1,
                Ok(fields) => {
                    for f in fields {
                        differ_in(f);
                    }
                    report.different += 1;
                }
                Err(why) => {
                    differ_in(format!("undecodable ({why})"));
                    report.different += 1;
                }
            }
        }
    }
}
