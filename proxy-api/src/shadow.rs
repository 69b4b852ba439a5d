//! Shadow traffic: a route rule may copy a sample of its requests to a
//! second target, off the request path, and compare that target's answers
//! with the ones actually served, field by field ([`crate::diff`]).
//!
//! What it never does is slow or fail the served call:
//! - a shadow target with no endpoint answering its health probe gets no
//!   copies (counted as dropped);
//! - the copy is taken only when a pending slot is free (`max_pending`);
//!   otherwise the call is served alone and the drop is counted;
//! - the copy runs on its own task, at most `concurrency` at a time, with
//!   its own deadline (`deadline_ms`); a copy that waits past it is dropped;
//! - it is marked `x-tandem-shadow`, so metrics count it as
//!   `traffic="shadow"`, routes never shadow it again, and a recording
//!   leaves it out.
//!
//! The served call pays only for copying its request and encoding its answer
//! (the answer's bytes are what the comparison reads), and only when it is
//! sampled.
//!
//! For a sampled fraction of the copies (`noise` in the rule), the primary is
//! called a second time: how often it disagrees with itself per field is the
//! noise that [`crate::diff::Verdict`] filters out, so a service that is not
//! deterministic (exploration, timing) does not read as a regression.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::diff::{DiffOptions, Differ, Verdict};
use crate::route::{ShadowPick, Target};
use crate::stack::{Method, MethodInfo};
use crate::{ConfigError, Cx, Status};

/// The `[shadow]` section: how shadow work is bounded, logged and judged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShadowConfig {
    /// Copies waiting or running at once; past it, copies are dropped (counted).
    pub max_pending: usize,
    /// Copies running at once.
    pub concurrency: usize,
    /// Each copy's deadline, from when it was taken.
    pub deadline_ms: u64,
    /// JSON-lines file of differing pairs (both answers, the fields);
    /// empty: no log.
    pub log: String,
    /// Fraction of differing pairs written to `log`.
    pub log_sample: f64,
    /// How answers are compared and judged.
    pub diff: DiffOptions,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        Self {
            max_pending: 256,
            concurrency: 4,
            deadline_ms: 2_000,
            log: String::new(),
            log_sample: 0.01,
            diff: DiffOptions::default(),
        }
    }
}

impl ShadowConfig {
    /// Checks the values, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::new(format!("shadow.{key}"), why));
        if self.max_pending == 0 {
            return bad("max_pending", "must be at least 1");
        }
        if self.concurrency == 0 || self.concurrency > self.max_pending {
            return bad("concurrency", "must be 1..=max_pending");
        }
        if self.deadline_ms == 0 {
            return bad("deadline_ms", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.log_sample) {
            return bad("log_sample", "must be a fraction (0..=1)");
        }
        self.diff.validate("shadow.diff")
    }
}

/// Comparisons of one stage against one shadow target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Candidate-vs-primary comparisons made.
    pub compared: u64,
    /// Primary-vs-primary comparisons made.
    pub noise_compared: u64,
    /// Copies whose call failed (the served call succeeded).
    pub failed: u64,
    /// Per field: (candidate-vs-primary differences, primary-vs-primary).
    pub fields: BTreeMap<String, (u64, u64)>,
}

impl Tally {
    /// What has been added since `earlier` (a snapshot of the same tally).
    pub fn since(&self, earlier: &Tally) -> Tally {
        let fields = self
            .fields
            .iter()
            .map(|(k, (raw, noise))| {
                let (r0, n0) = earlier.fields.get(k).copied().unwrap_or((0, 0));
                (
                    k.clone(),
                    (raw.saturating_sub(r0), noise.saturating_sub(n0)),
                )
            })
            .collect();
        Tally {
            compared: self.compared.saturating_sub(earlier.compared),
            noise_compared: self.noise_compared.saturating_sub(earlier.noise_compared),
            failed: self.failed.saturating_sub(earlier.failed),
            fields,
        }
    }

    /// The verdict on each field.
    pub fn verdicts(&self, options: &DiffOptions) -> Vec<FieldVerdict> {
        self.fields
            .iter()
            .map(|(field, (raw, noise))| FieldVerdict {
                field: field.clone(),
                raw_rate: *raw as f64 / self.compared.max(1) as f64,
                noise_rate: *noise as f64 / self.noise_compared.max(1) as f64,
                verdict: Verdict::of(*raw, self.compared, *noise, self.noise_compared, options),
            })
            .collect()
    }

    /// The largest excess of a significant field's difference rate over its
    /// noise rate (0 when no field is significant): the rate a rollout gate
    /// holds the shadow to.
    pub fn significant_rate(&self, options: &DiffOptions) -> f64 {
        self.verdicts(options)
            .iter()
            .filter(|v| v.verdict == Verdict::Significant)
            .map(|v| v.raw_rate - v.noise_rate)
            .fold(0.0, f64::max)
    }
}

/// One field's figures and verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldVerdict {
    /// The field's path (`items.item_id`).
    pub field: String,
    /// Candidate-vs-primary difference rate.
    pub raw_rate: f64,
    /// Primary-vs-primary difference rate.
    pub noise_rate: f64,
    /// What the noise filter says.
    pub verdict: Verdict,
}

/// One stage and shadow target in a [`Report`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetReport {
    /// The stage called.
    pub stage: String,
    /// The shadow target.
    pub target: String,
    /// Its tally.
    pub tally: Tally,
    /// Each differing field's figures and verdict.
    pub fields: Vec<FieldVerdict>,
}

/// Everything the process has compared, as `feeds diff-report` prints it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// Per stage and shadow target.
    pub targets: Vec<TargetReport>,
    /// Copies dropped, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// The thresholds the verdicts used.
    pub options: DiffOptions,
}

/// The process's shadow runtime: bounds, the differ, the tallies, the log.
pub struct Shadows {
    config: ShadowConfig,
    differ: Differ,
    /// Copies waiting or running.
    pending: Arc<Semaphore>,
    /// Copies running.
    running: Arc<Semaphore>,
    tallies: Mutex<BTreeMap<(String, String), Tally>>,
    dropped: Mutex<BTreeMap<String, u64>>,
    log: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
}

impl std::fmt::Debug for Shadows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadows")
            .field("config", &self.config)
            .finish()
    }
}

impl Default for Shadows {
    fn default() -> Self {
        Self::build(ShadowConfig::default(), None)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shadows {
    /// The runtime `config` describes; opens (appends to) its log file.
    pub fn new(config: ShadowConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let log = match config.log.as_str() {
            "" => None,
            path => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| ConfigError::new("shadow.log", format!("{path}: {e}")))?,
            ),
        };
        Ok(Self::build(config, log))
    }

    fn build(config: ShadowConfig, log: Option<std::fs::File>) -> Self {
        Self {
            differ: Differ::new(config.diff.clone()),
            pending: Arc::new(Semaphore::new(config.max_pending)),
            running: Arc::new(Semaphore::new(config.concurrency)),
            tallies: Mutex::default(),
            dropped: Mutex::default(),
            log: log.map(|f| Mutex::new(std::io::BufWriter::new(f))),
            config,
        }
    }

    /// The comparison options.
    pub fn options(&self) -> &DiffOptions {
        self.differ.options()
    }

    /// A copy of one stage's tally against one shadow target.
    pub fn tally(&self, stage: &str, target: &str) -> Tally {
        lock(&self.tallies)
            .get(&(stage.to_owned(), target.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// Everything compared so far, with verdicts.
    pub fn report(&self) -> Report {
        let options = self.options().clone();
        let targets = lock(&self.tallies)
            .iter()
            .map(|((stage, target), tally)| TargetReport {
                stage: stage.clone(),
                target: target.clone(),
                fields: tally.verdicts(&options),
                tally: tally.clone(),
            })
            .collect();
        Report {
            targets,
            dropped: lock(&self.dropped).clone(),
            options,
        }
    }

    fn drop_copy(&self, stage: &str, reason: &'static str) {
        *lock(&self.dropped).entry(reason.to_owned()).or_default() += 1;
        crate::observe::count_shadow_dropped(stage, reason);
    }

    fn add(&self, stage: &str, target: &str, noise: bool, fields: Option<&[String]>) {
        let mut tallies = lock(&self.tallies);
        let tally = tallies
            .entry((stage.to_owned(), target.to_owned()))
            .or_default();
        match fields {
            None => tally.failed += 1,
            Some(fields) => {
                match noise {
                    true => tally.noise_compared += 1,
                    false => tally.compared += 1,
                }
                for f in fields {
                    let e = tally.fields.entry(f.clone()).or_default();
                    match noise {
                        true => e.1 += 1,
                        false => e.0 += 1,
                    }
                }
            }
        }
        drop(tallies);
        crate::observe::count_shadow(stage, target, noise, fields);
    }

    fn log_pair(
        &self,
        method: &MethodInfo,
        target: &str,
        cx: &Cx,
        fields: &[String],
        primary: &[u8],
        shadow: &[u8],
    ) {
        let Some(log) = &self.log else { return };
        let draw = crate::observe::random_u64() % 1_000_000;
        if draw as f64 >= self.config.log_sample * 1_000_000.0 {
            return;
        }
        let as_json = |bytes: &[u8]| {
            self.differ
                .message(method.response)
                .ok()
                .and_then(|d| prost_reflect::DynamicMessage::decode(d, bytes).ok())
                .and_then(|m| serde_json::to_value(&m).ok())
                .unwrap_or(serde_json::Value::Null)
        };
        let line = serde_json::json!({
            "stage": method.stage.name(),
            "method": method.path,
            "target": target,
            "request_id": cx.request_id(),
            "tenant": cx.tenant(),
            "fields": fields,
            "primary": as_json(primary),
            "shadow": as_json(shadow),
        });
        let mut log = lock(log);
        let _ = writeln!(log, "{line}");
        let _ = log.flush();
    }
}

/// Serves `request` from `primary` and, off the request path, sends a copy
/// to `shadow`'s target and compares the answers (see the module docs).
/// The primary's answer is returned whatever the copy does.
pub async fn call<T, M, R>(
    shadows: &Arc<Shadows>,
    method: &'static MethodInfo,
    cx: &Cx,
    request: M,
    primary: &Target<T>,
    shadow: ShadowPick<'_, T>,
    run: Method<T, M, R>,
) -> Result<R, Status>
where
    T: ?Sized + Send + Sync + 'static,
    M: Clone + Send + 'static,
    R: prost::Message + Send + 'static,
{
    let stage = method.stage.name();
    if !shadow.target.healthy() {
        shadows.drop_copy(stage, "shadow_unhealthy");
        return run(&*primary.stub, cx, request).await;
    }
    let Ok(permit) = Arc::clone(&shadows.pending).try_acquire_owned() else {
        shadows.drop_copy(stage, "queue_full");
        return run(&*primary.stub, cx, request).await;
    };
    let copy = request.clone();
    let again = shadow.noise.then(|| request.clone());
    let out = run(&*primary.stub, cx, request).await;
    let served = match &out {
        Ok(answer) => answer.encode_to_vec(),
        Err(_) => {
            shadows.drop_copy(stage, "primary_failed");
            return out;
        }
    };
    let taken = Instant::now();
    let deadline = taken + Duration::from_millis(shadows.config.deadline_ms);
    let shadow_cx = cx.shadow_copy(deadline);
    let (shadows, target_name) = (Arc::clone(shadows), shadow.target.name.clone());
    let (shadow_stub, primary_stub) = (Arc::clone(&shadow.target.stub), Arc::clone(&primary.stub));
    tokio::spawn(async move {
        let _pending = permit;
        let running = tokio::time::timeout_at(
            deadline.into(),
            Arc::clone(&shadows.running).acquire_owned(),
        )
        .await;
        let Ok(Ok(_running)) = running else {
            shadows.drop_copy(stage, "deadline");
            return;
        };
        let compare = |answer: &[u8]| shadows.differ.diff(method.response, &served, answer);
        match run(&*shadow_stub, &shadow_cx, copy).await {
            Ok(answer) => {
                let bytes = answer.encode_to_vec();
                match compare(&bytes) {
                    Ok(fields) => {
                        let fields: Vec<String> = fields.into_iter().collect();
                        if !fields.is_empty() {
                            shadows.log_pair(
                                method,
                                &target_name,
                                &shadow_cx,
                                &fields,
                                &served,
                                &bytes,
                            );
                        }
                        shadows.add(stage, &target_name, false, Some(&fields));
                    }
                    Err(e) => {
                        tracing::warn!(stage, target = %target_name, "shadow comparison failed: {e}");
                        shadows.add(stage, &target_name, false, None);
                    }
                }
            }
            Err(status) => {
                tracing::debug!(stage, target = %target_name, code = ?status.code(), "shadow call failed");
                shadows.add(stage, &target_name, false, None);
            }
        }
        if let Some(again) = again {
            if Instant::now() >= deadline {
                shadows.drop_copy(stage, "deadline");
                return;
            }
            if let Ok(answer) = run(&*primary_stub, &shadow_cx, again).await
                && let Ok(fields) = compare(&answer.encode_to_vec())
            {
                let fields: Vec<String> = fields.into_iter().collect();
                shadows.add(stage, &target_name, true, Some(&fields));
            }
        }
    });
    out
}
