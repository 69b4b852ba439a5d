//! A chaos run's figures, cut out of the one continuous stream of request
//! records: the nominal window before any fault, then per fault the
//! requests sent while it was in effect (latency) and the requests answered
//! between it and the next fault (failures, deadlines), each checked against
//! its target. Written as `chaos.json`, `chaos.md` and `requests.csv`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use proxy_api::Stage;
use serde::Serialize;

use super::load::Record;
use super::{ChaosError, ChaosOptions, Fault, Settings};
use crate::bench::Machine;

/// What happened when, for one fault (ms since the run's epoch).
#[derive(Clone, Debug)]
pub struct Timeline {
    /// The faulted stage.
    pub stage: Stage,
    /// The fault.
    pub fault: Fault,
    /// The replica it hit.
    pub victim: String,
    /// When the fault was injected.
    pub fault_ms: f64,
    /// When the process was seen gone (kill, term).
    pub gone_ms: Option<f64>,
    /// When it was undone: the replica restarted and SERVING (kill, term),
    /// continued (stop), or the delay lifted (latency).
    pub undone_ms: f64,
    /// When the replica answered a health check with SERVING afterwards.
    pub serving_ms: f64,
    /// How the process exited (kill, term).
    pub exit: Option<String>,
    /// Chunks the proxy held back (latency).
    pub delayed_chunks: Option<u64>,
    /// The victim's share of its stage's calls during the fault (latency).
    pub victim_share: Option<f64>,
    /// The same replica's share in the nominal window (latency).
    pub nominal_share: Option<f64>,
}

impl Timeline {
    /// A timeline with nothing recorded yet.
    pub fn new(stage: Stage, fault: Fault, victim: String) -> Self {
        Self {
            stage,
            fault,
            victim,
            fault_ms: 0.0,
            gone_ms: None,
            undone_ms: 0.0,
            serving_ms: 0.0,
            exit: None,
            delayed_chunks: None,
            victim_share: None,
            nominal_share: None,
        }
    }
}

/// Requests sent within a window, and how they went.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Window {
    /// Start, ms since the epoch.
    pub from_ms: f64,
    /// End, ms since the epoch.
    pub to_ms: f64,
    /// Requests sent in it.
    pub requests: u64,
    /// Of those, failed, by status.
    pub failed: BTreeMap<String, u64>,
    /// Of those, answered after their deadline.
    pub outlived_deadline: u64,
    /// Latency from the intended send time, ms.
    pub p50_ms: f64,
    /// Latency from the intended send time, ms.
    pub p99_ms: f64,
}

impl Window {
    fn of(records: &[Record], from_ms: f64, to_ms: f64) -> Self {
        let inside: Vec<&Record> = records
            .iter()
            .filter(|r| r.sent_ms >= from_ms && r.sent_ms < to_ms)
            .collect();
        let mut latencies: Vec<f64> = inside.iter().map(|r| r.latency_ms).collect();
        latencies.sort_by(f64::total_cmp);
        Window {
            from_ms,
            to_ms,
            requests: inside.len() as u64,
            failed: by_status(inside.iter().copied()),
            outlived_deadline: inside.iter().filter(|r| r.outlived).count() as u64,
            p50_ms: quantile(&latencies, 0.50),
            p99_ms: quantile(&latencies, 0.99),
        }
    }
}

/// Nearest-rank quantile of sorted values; 0 when there are none.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn by_status<'a>(records: impl Iterator<Item = &'a Record>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for code in records.filter_map(|r| r.code) {
        *out.entry(format!("{code:?}")).or_insert(0) += 1;
    }
    out
}

/// Requests that stalled on a hung replica (stop only): sent while it was
/// stopped, and answered only after `threshold_ms` or not in time.
#[derive(Clone, Debug, Serialize)]
pub struct Stalled {
    /// Slower than this counts as stalled: five times the nominal p99, at
    /// least 200 ms, at most half the deadline.
    pub threshold_ms: f64,
    /// How many.
    pub count: u64,
    /// The last one's send time after the fault, ms: when the hung replica
    /// last got a new call (as far as the clients can tell).
    pub last_sent_after_fault_ms: Option<f64>,
}

/// A fault's target and whether it was met.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// The bound.
    pub bound: String,
    /// What was measured.
    pub measured: String,
    /// Whether the bound holds.
    pub met: bool,
}

/// One fault's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Episode {
    /// The faulted stage.
    pub stage: String,
    /// The fault.
    pub fault: Fault,
    /// The replica it hit.
    pub victim: String,
    /// When the fault was injected, ms since the epoch.
    pub fault_ms: f64,
    /// When the process was seen gone (kill, term).
    pub gone_ms: Option<f64>,
    /// When it was undone (see `Timeline::undone_ms`).
    pub undone_ms: f64,
    /// When the replica reported SERVING afterwards.
    pub serving_ms: f64,
    /// When the next fault began (or the load stopped).
    pub end_ms: f64,
    /// Requests sent while the fault was in effect (fault to undone).
    pub window: Window,
    /// Requests answered between the fault and the end.
    pub answered: u64,
    /// Of those, failed, by status.
    pub failed: BTreeMap<String, u64>,
    /// Of those, how many failed in all.
    pub failed_total: u64,
    /// Failed requests that were sent after the fault took effect (for kill
    /// and term, after the process was gone), so were not in flight at it.
    pub failed_sent_after_fault: u64,
    /// From the fault to the last failed answer, ms.
    pub last_error_after_fault_ms: Option<f64>,
    /// Answers that came after their deadline.
    pub outlived_deadline: u64,
    /// The latest of those answers past the deadline, ms.
    pub max_overrun_ms: Option<f64>,
    /// A few of the failures: sent (ms after the fault), status, message.
    pub error_samples: Vec<String>,
    /// Stalled requests (stop only).
    pub stalled: Option<Stalled>,
    /// How the process exited (kill, term).
    pub exit: Option<String>,
    /// Chunks the proxy held back (latency).
    pub delayed_chunks: Option<u64>,
    /// The victim's share of its stage's calls during the fault (latency).
    pub victim_share: Option<f64>,
    /// Its share in the nominal window (latency).
    pub nominal_share: Option<f64>,
    /// The target and whether it was met.
    pub target: Target,
}

/// Everything a chaos run produced.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// The command that produced it.
    pub command: String,
    /// What it was asked to do.
    pub settings: Settings,
    /// The replicas' config files.
    pub replicas: Vec<String>,
    /// The window before any fault.
    pub nominal: Window,
    /// One per fault, in order.
    pub episodes: Vec<Episode>,
    /// Requests sent in all.
    pub requests: u64,
    /// The raw records, for `requests.csv`.
    #[serde(skip)]
    records: Vec<Record>,
}

impl Report {
    /// Cuts each window out of `records`.
    pub(super) fn new(
        opts: &ChaosOptions,
        records: Vec<Record>,
        nominal: (f64, f64),
        timelines: Vec<Timeline>,
        end_ms: f64,
        replicas: Vec<String>,
    ) -> Self {
        let deadline = opts.settings.deadline_ms as f64;
        let nominal = Window::of(&records, nominal.0, nominal.1);
        let ends: Vec<f64> = timelines
            .iter()
            .skip(1)
            .map(|t| t.fault_ms)
            .chain(std::iter::once(end_ms))
            .collect();
        let episodes = timelines
            .into_iter()
            .zip(ends)
            .map(|(t, end)| episode(&records, &nominal, deadline, t, end))
            .collect();
        Report {
            machine: Machine::probe(),
            command: opts.command.clone(),
            settings: opts.settings.clone(),
            replicas,
            nominal,
            episodes,
            requests: records.len() as u64,
            records,
        }
    }

    /// Whether every fault met its target.
    pub fn all_met(&self) -> bool {
        self.episodes.iter().all(|e| e.target.met)
    }

    /// The tables.
    pub fn markdown(&self) -> String {
        let s = &self.settings;
        let mut out = String::new();
        let _ = writeln!(out, "# feeds chaos\n");
        let _ = writeln!(out, "Command: `{}`\n", self.command);
        let _ = writeln!(
            out,
            "Machine: {} cores, {}, {} MiB, Linux {}\n",
            self.machine.cores, self.machine.cpu, self.machine.memory_mib, self.machine.kernel
        );
        let _ = writeln!(
            out,
            "Five-pod, two replicas of every stage (10 processes, one tokio worker each). \
             Open-loop load {} req/s to both business replicas, deadline {} ms; {} requests in all. \
             Replica `a` of a faulted stage is behind the fault proxy and takes the latency fault \
             ({}-{} ms per chunk each way); replica `b` takes the process faults.\n",
            s.rate, s.deadline_ms, self.requests, s.latency_ms[0], s.latency_ms[1]
        );
        let n = &self.nominal;
        let _ = writeln!(
            out,
            "Nominal ({:.1} s before any fault): {} requests, {} failed, p50 {:.1} ms, p99 {:.1} ms.\n",
            (n.to_ms - n.from_ms) / 1e3,
            n.requests,
            n.failed.values().sum::<u64>(),
            n.p50_ms,
            n.p99_ms
        );
        let _ = writeln!(
            out,
            "| stage | fault | victim | sent during fault | failed (by status) | failed, sent after fault took effect | last error after fault | outlived deadline | p50 ms nominal / fault | p99 ms nominal / fault | also | target | met |"
        );
        let _ = writeln!(
            out,
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for e in &self.episodes {
            let failed = match e.failed_total {
                0 => "0".to_owned(),
                n => format!(
                    "{n} ({})",
                    e.failed
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let last = e
                .last_error_after_fault_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0} ms"));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} / {:.1} | {:.1} / {:.1} | {} | {} | {} |",
                e.stage,
                e.fault.name(),
                e.victim,
                e.window.requests,
                failed,
                e.failed_sent_after_fault,
                last,
                match e.max_overrun_ms {
                    Some(ms) => format!("{} (latest by {ms:.0} ms)", e.outlived_deadline),
                    None => e.outlived_deadline.to_string(),
                },
                self.nominal.p50_ms,
                e.window.p50_ms,
                self.nominal.p99_ms,
                e.window.p99_ms,
                also(e),
                e.target.bound,
                if e.target.met { "yes" } else { "no" },
            );
        }
        let failures: Vec<&Episode> = self
            .episodes
            .iter()
            .filter(|e| !e.error_samples.is_empty())
            .collect();
        if !failures.is_empty() {
            let _ = writeln!(out, "\nFailures (first few; sent relative to the fault):\n");
            for e in failures {
                for line in &e.error_samples {
                    let _ = writeln!(out, "- {} {}: {line}", e.stage, e.fault.name());
                }
            }
        }
        out
    }
}

/// The fault-specific column.
fn also(e: &Episode) -> String {
    let back = (e.serving_ms - e.fault_ms) / 1e3;
    let pct = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{:.1}%", v * 100.0));
    match e.fault {
        Fault::Kill | Fault::Term => format!(
            "exit: {}; serving again {back:.1} s after the fault",
            e.exit.as_deref().unwrap_or("?")
        ),
        Fault::Stop => match &e.stalled {
            Some(s) => format!(
                "{} stalled (over {:.0} ms), last sent {}",
                s.count,
                s.threshold_ms,
                s.last_sent_after_fault_ms
                    .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0} ms after the stop"))
            ),
            None => String::new(),
        },
        Fault::Latency => format!(
            "victim's share of calls {} (nominal {}); {} chunks delayed",
            pct(e.victim_share),
            pct(e.nominal_share),
            e.delayed_chunks.unwrap_or(0)
        ),
    }
}

fn episode(
    records: &[Record],
    nominal: &Window,
    deadline_ms: f64,
    t: Timeline,
    end_ms: f64,
) -> Episode {
    let window = Window::of(records, t.fault_ms, t.undone_ms);
    let answered: Vec<&Record> = records
        .iter()
        .filter(|r| r.done_ms() >= t.fault_ms && r.done_ms() < end_ms)
        .collect();
    let failed: Vec<&Record> = answered
        .iter()
        .copied()
        .filter(|r| r.code.is_some())
        .collect();
    let effect_ms = t.gone_ms.unwrap_or(t.fault_ms);
    let failed_sent_after_fault = failed.iter().filter(|r| r.sent_ms >= effect_ms).count() as u64;
    let last_error_after_fault_ms = failed
        .iter()
        .map(|r| r.done_ms() - t.fault_ms)
        .max_by(f64::total_cmp);
    let outlived_deadline = answered.iter().filter(|r| r.outlived).count() as u64;
    let max_overrun_ms = answered
        .iter()
        .filter(|r| r.outlived)
        .map(|r| r.latency_ms - deadline_ms)
        .max_by(f64::total_cmp);
    let mut error_samples: Vec<String> = Vec::new();
    for r in &failed {
        let line = format!(
            "{:+.0} ms {:?}: {}",
            r.sent_ms - t.fault_ms,
            r.code.unwrap_or(tonic::Code::Unknown),
            r.message.as_deref().unwrap_or("")
        );
        if error_samples.len() < 5 {
            error_samples.push(line);
        }
    }
    let stalled = (t.fault == Fault::Stop).then(|| {
        let threshold_ms = (5.0 * nominal.p99_ms).max(200.0).min(deadline_ms / 2.0);
        let stalled: Vec<&Record> = records
            .iter()
            .filter(|r| r.sent_ms >= t.fault_ms && r.sent_ms < t.undone_ms)
            .filter(|r| r.latency_ms >= threshold_ms)
            .collect();
        Stalled {
            threshold_ms,
            count: stalled.len() as u64,
            last_sent_after_fault_ms: stalled
                .iter()
                .map(|r| r.sent_ms - t.fault_ms)
                .max_by(f64::total_cmp),
        }
    });
    let failed_total = failed.len() as u64;
    let last = |v: Option<f64>| v.map_or_else(|| "none".to_owned(), |ms| format!("{ms:.0} ms"));
    let target = match t.fault {
        Fault::Kill => Target {
            bound: "errors only for requests in flight at the kill, none after 1 s".into(),
            measured: format!(
                "{failed_total} failed, {failed_sent_after_fault} sent after the process was gone, last {}",
                last(last_error_after_fault_ms)
            ),
            met: failed_sent_after_fault == 0
                && last_error_after_fault_ms.is_none_or(|ms| ms <= 1_000.0),
        },
        Fault::Term => Target {
            bound: "0 failed".into(),
            measured: format!("{failed_total} failed"),
            met: failed_total == 0,
        },
        Fault::Stop => {
            let last_sent = stalled.as_ref().and_then(|s| s.last_sent_after_fault_ms);
            Target {
                bound:
                    "none outlives its deadline; no new call stalls on the hung replica after 1 s"
                        .into(),
                measured: format!(
                    "{outlived_deadline} outlived; last stalled request sent {}",
                    last(last_sent)
                ),
                met: outlived_deadline == 0 && last_sent.is_none_or(|ms| ms <= 1_000.0),
            }
        }
        Fault::Latency => Target {
            bound: "p99 within 2x nominal".into(),
            measured: format!(
                "p99 {:.1} ms vs nominal {:.1} ms ({:.2}x)",
                window.p99_ms,
                nominal.p99_ms,
                window.p99_ms / nominal.p99_ms.max(1e-9)
            ),
            met: window.p99_ms <= 2.0 * nominal.p99_ms,
        },
    };
    Episode {
        stage: t.stage.name().to_owned(),
        fault: t.fault,
        victim: t.victim,
        fault_ms: t.fault_ms,
        gone_ms: t.gone_ms,
        undone_ms: t.undone_ms,
        serving_ms: t.serving_ms,
        end_ms,
        window,
        answered: answered.len() as u64,
        failed: by_status(failed.iter().copied()),
        failed_total,
        failed_sent_after_fault,
        last_error_after_fault_ms,
        outlived_deadline,
        max_overrun_ms,
        error_samples,
        stalled,
        exit: t.exit,
        delayed_chunks: t.delayed_chunks,
        victim_share: t.victim_share,
        nominal_share: t.nominal_share,
        target,
    }
}

/// Writes `chaos.json`, `chaos.md` and `requests.csv` into `dir`.
pub fn write_report(report: &Report, dir: &Path) -> Result<(), ChaosError> {
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| ChaosError::Io {
            what: format!("writing {}", path.display()),
            source,
        })
    };
    std::fs::create_dir_all(dir).map_err(|source| ChaosError::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    let json = serde_json::to_string_pretty(report).map_err(|e| ChaosError::Io {
        what: "encoding the report".into(),
        source: std::io::Error::other(e),
    })?;
    write("chaos.json", json + "\n")?;
    write("chaos.md", report.markdown())?;
    let mut csv = String::from("sent_ms,latency_ms,status,outlived\n");
    for r in &report.records {
        let status = r.code.map_or_else(|| "Ok".to_owned(), |c| format!("{c:?}"));
        let _ = writeln!(
            csv,
            "{:.3},{:.3},{status},{}",
            r.sent_ms, r.latency_ms, r.outlived
        );
    }
    write("requests.csv", csv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sent_ms: f64, latency_ms: f64, code: Option<tonic::Code>) -> Record {
        Record {
            sent_ms,
            latency_ms,
            code,
            message: code.map(|c| format!("{c:?}")),
            outlived: latency_ms > 2_000.0,
        }
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn a_kill_episode_counts_what_failed_after_it() {
        let mut records: Vec<Record> = (0..100)
            .map(|i| record(f64::from(i) * 10.0, 5.0, None))
            .collect();
        // In flight at the kill (sent before, answered after): fails.
        records.push(record(495.0, 10.0, Some(tonic::Code::Unavailable)));
        let nominal = Window::of(&records, 0.0, 400.0);
        let mut t = Timeline::new(Stage::Recall, Fault::Kill, "recall-b".into());
        t.fault_ms = 500.0;
        t.gone_ms = Some(502.0);
        t.undone_ms = 800.0;
        let e = episode(&records, &nominal, 2_000.0, t.clone(), 1_000.0);
        assert_eq!(e.failed_total, 1);
        assert_eq!(e.failed_sent_after_fault, 0);
        assert_eq!(e.last_error_after_fault_ms, Some(5.0));
        assert!(e.target.met, "{:?}", e.target);
        // One sent after the kill and failing 1.5 s later misses it.
        records.push(record(900.0, 1_100.0, Some(tonic::Code::Unavailable)));
        let e = episode(&records, &nominal, 2_000.0, t, 3_000.0);
        assert_eq!(e.failed_sent_after_fault, 1);
        assert!(!e.target.met);
        assert_eq!(e.failed.get("Unavailable"), Some(&2));
    }

    #[test]
    fn a_stop_episode_finds_the_last_stalled_request() {
        let mut records: Vec<Record> = (0..300)
            .map(|i| record(f64::from(i) * 10.0, 4.0, None))
            .collect();
        records.push(record(1_050.0, 1_900.0, None));
        records.push(record(
            1_700.0,
            2_000.5,
            Some(tonic::Code::DeadlineExceeded),
        ));
        let nominal = Window::of(&records, 0.0, 1_000.0);
        let mut t = Timeline::new(Stage::Recall, Fault::Stop, "recall-b".into());
        t.fault_ms = 1_000.0;
        t.undone_ms = 2_500.0;
        let e = episode(&records, &nominal, 2_000.0, t, 4_000.0);
        let stalled = e.stalled.as_ref().expect("stop has stalls");
        assert_eq!(stalled.threshold_ms, 200.0);
        assert_eq!(stalled.count, 2);
        assert_eq!(stalled.last_sent_after_fault_ms, Some(700.0));
        assert_eq!(e.outlived_deadline, 1);
        assert!(!e.target.met);
    }

    #[test]
    fn a_latency_episode_compares_p99_with_nominal() {
        let mut records: Vec<Record> = (0..200)
            .map(|i| record(f64::from(i) * 10.0, 10.0, None))
            .collect();
        records.extend((0..5).map(|i| record(1_500.0 + f64::from(i), 300.0, None)));
        let nominal = Window::of(&records, 0.0, 1_000.0);
        let mut t = Timeline::new(Stage::Rerank, Fault::Latency, "rerank-a".into());
        t.fault_ms = 1_000.0;
        t.undone_ms = 2_000.0;
        let e = episode(&records, &nominal, 2_000.0, t, 2_500.0);
        // 5 slow of 105: more than 1%, so p99 is a slow one.
        assert_eq!(e.window.p99_ms, 300.0);
        assert!(!e.target.met);
    }
}
