//! `feeds diff-report`: what a process's shadow copies found, per stage,
//! shadow target and field: comparisons, the raw difference rate, the noise
//! rate (the primary against itself) and the verdict. It reads `GET /shadow`
//! from the process's metrics endpoint (`telemetry.metrics_listen`).

use std::fmt::Write as _;
use std::time::Duration;

use proxy_api::shadow::Report;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why the report could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum DiffReportError {
    /// `--addr` is not `http://host:port` or `host:port`.
    #[error("--addr {0:?}: expected http://host:port (the metrics endpoint)")]
    Addr(String),
    /// Nothing answered, or the answer was cut short.
    #[error("{addr}: {error}")]
    Fetch {
        /// Where.
        addr: String,
        /// What failed.
        error: String,
    },
    /// The answer is not a shadow report.
    #[error("{addr}/shadow: not a shadow report: {error}")]
    Parse {
        /// Where.
        addr: String,
        /// What the parser said.
        error: String,
    },
}

/// Fetches `GET /shadow` from the metrics endpoint at `addr`.
pub async fn fetch(addr: &str) -> Result<Report, DiffReportError> {
    let host = addr
        .strip_prefix("http://")
        .unwrap_or(addr)
        .trim_end_matches('/');
    if host.is_empty() || host.contains('/') || !host.contains(':') {
        return Err(DiffReportError::Addr(addr.to_owned()));
    }
    let fail = |error: String| DiffReportError::Fetch {
        addr: addr.to_owned(),
        error,
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(host)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let request = format!("GET /shadow HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok::<String, DiffReportError>(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| fail("no answer within 10 s".into()))??;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| fail("not an HTTP answer".into()))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(fail(head.lines().next().unwrap_or_default().to_owned()));
    }
    serde_json::from_str(body).map_err(|e| DiffReportError::Parse {
        addr: addr.to_owned(),
        error: e.to_string(),
    })
}

/// The report as a table.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let o = &report.options;
    let _ = writeln!(
        out,
        "significant: raw rate - noise rate > {} and raw rate >= {} x noise rate, after {} comparisons",
        o.absolute_threshold, o.relative_threshold, o.min_compared
    );
    let _ = writeln!(
        out,
        "{:<9} {:<10} {:<24} {:>9} {:>9} {:>9} {:>9}  verdict",
        "stage", "target", "field", "compared", "raw", "noise n", "noise"
    );
    for t in &report.targets {
        let _ = writeln!(
            out,
            "{:<9} {:<10} {:<24} {:>9} {:>9} {:>9} {:>9}  {}",
            t.stage,
            t.target,
            "(any)",
            t.tally.compared,
            "",
            t.tally.noise_compared,
            "",
            if t.fields
                .iter()
                .any(|f| f.verdict == proxy_api::diff::Verdict::Significant)
            {
                "significant"
            } else if t.tally.compared < o.min_compared {
                "undecided"
            } else {
                "same"
            }
        );
        for f in &t.fields {
            let _ = writeln!(
                out,
                "{:<9} {:<10} {:<24} {:>9} {:>8.2}% {:>9} {:>8.2}%  {}",
                t.stage,
                t.target,
                f.field,
                t.tally.compared,
                f.raw_rate * 100.0,
                t.tally.noise_compared,
                f.noise_rate * 100.0,
                f.verdict.name()
            );
        }
        if t.tally.failed > 0 {
            let _ = writeln!(
                out,
                "{:<9} {:<10} copies failed: {}",
                t.stage, t.target, t.tally.failed
            );
        }
    }
    if !report.dropped.is_empty() {
        let dropped: Vec<String> = report
            .dropped
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(out, "dropped: {}", dropped.join(", "));
    }
    out
}
