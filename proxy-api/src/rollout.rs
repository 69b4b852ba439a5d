//! Gated rollouts: the process that owns a stage's route moves users to a
//! candidate target one step at a time, the allow-listed users first, then
//! a growing sticky share (1, 2, 10, 20, 40, 80, 100% by default), and only
//! while the candidate holds up next to the baseline:
//!
//! - **shadow**: calls served by the baseline are copied to the candidate
//!   (`shadow_rate` of them) and compared; the largest excess of a
//!   significant field's difference rate over its noise (see
//!   [`crate::diff::Verdict`]) must stay at or below `gates.max_diff_rate`;
//! - **errors**: the candidate's error rate (its live calls and the shadow
//!   copies it answered; a shadow copy its admission refused was shed by
//!   design and is not an error) may exceed the baseline's by at most
//!   `gates.max_error_increase`;
//! - **latency**: the candidate's p99 may be at most `gates.max_p99_ratio`
//!   times the baseline's, once each side has [`P99_CALLS`] calls in the
//!   step.
//!
//! Each step lasts at least `dwell_s`, and advances only once every gate has
//! enough calls to judge (`gates.min_calls`) and holds. A gate that fails
//! sends every user back to the baseline at the next check (`check_ms`),
//! logging the gate and its figures. An operator pauses and resumes a
//! rollout, or aborts it (back to the baseline), with a [`Command`] (the
//! `feeds serve` process maps SIGUSR1 and SIGUSR2 to them).
//!
//! The rollout's rules come before the stage's own `routes.<stage>` rules,
//! which keep routing what the rollout does not match (other tenants).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::observe::{CallStats, client_stats};
use crate::route::{LOCAL, RouteRule, ShadowRule, Weighted};
use crate::shadow::{Shadows, Tally};
use crate::{ConfigError, Limits, Registry, RemoteConfig, Stage};

/// A rollout's gates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gates {
    /// Largest significant shadow difference rate (over the noise).
    pub max_diff_rate: f64,
    /// Largest excess of the candidate's error rate over the baseline's.
    pub max_error_increase: f64,
    /// Largest ratio of the candidate's p99 to the baseline's.
    pub max_p99_ratio: f64,
    /// Calls each side needs in a step before the gates judge it.
    pub min_calls: u64,
}

impl Default for Gates {
    fn default() -> Self {
        Self {
            max_diff_rate: 0.01,
            max_error_increase: 0.01,
            max_p99_ratio: 1.5,
            min_calls: 50,
        }
    }
}

/// One stage's `[rollout.<stage>]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutConfig {
    /// The target moved to (`local` or a pool).
    pub candidate: String,
    /// The target moved from.
    pub baseline: String,
    /// Only this tenant's calls (others follow `routes.<stage>`); all when unset.
    pub tenant: Option<String>,
    /// Users moved first, before any share (skipped when empty).
    pub users: Vec<String>,
    /// Percent of users on the candidate at each step, increasing, ending at 100.
    pub steps: Vec<f64>,
    /// Least time a step lasts, s.
    pub dwell_s: f64,
    /// How often the gates are checked, ms.
    pub check_ms: u64,
    /// Fraction of baseline-served calls copied to the candidate.
    pub shadow_rate: f64,
    /// Fraction of those copies whose baseline is called again (noise).
    pub shadow_noise: f64,
    /// The gates.
    pub gates: Gates,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self {
            candidate: String::new(),
            baseline: String::new(),
            tenant: None,
            users: Vec::new(),
            steps: vec![1.0, 2.0, 10.0, 20.0, 40.0, 80.0, 100.0],
            dwell_s: 300.0,
            check_ms: 1_000,
            shadow_rate: 0.1,
            shadow_noise: 0.2,
            gates: Gates::default(),
        }
    }
}

impl RolloutConfig {
    /// Checks the values; `prefix` is `rollout.<stage>` and `targets` the
    /// targets the stage has here.
    pub fn validate(&self, prefix: &str, targets: &[&str]) -> Result<(), ConfigError> {
        let bad = |key: &str, why: String| Err(ConfigError::new(format!("{prefix}.{key}"), why));
        for (key, t) in [("candidate", &self.candidate), ("baseline", &self.baseline)] {
            if !targets.contains(&t.as_str()) {
                return bad(
                    key,
                    format!(
                        "{t:?} is not a target of this stage here (known: {})",
                        targets.join(", ")
                    ),
                );
            }
        }
        if self.candidate == self.baseline {
            return bad("candidate", "must differ from the baseline".into());
        }
        if self.steps.is_empty() {
            return bad("steps", "must name at least one step".into());
        }
        let mut last = 0.0;
        for (i, s) in self.steps.iter().enumerate() {
            if !(s.is_finite() && *s > last && *s <= 100.0) {
                return bad(
                    &format!("steps[{i}]"),
                    format!("{s} must be above the step before and at most 100"),
                );
            }
            last = *s;
        }
        if last != 100.0 {
            return bad("steps", "the last step must be 100".into());
        }
        if !(self.dwell_s.is_finite() && self.dwell_s >= 0.0) {
            return bad("dwell_s", format!("{} is not a duration", self.dwell_s));
        }
        if self.check_ms == 0 || self.check_ms > 30_000 {
            return bad(
                "check_ms",
                "must be 1..=30000 (a failing gate acts within one check)".into(),
            );
        }
        for (key, v) in [
            ("shadow_rate", self.shadow_rate),
            ("shadow_noise", self.shadow_noise),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(key, format!("{v} is not a fraction (0..=1)"));
            }
        }
        let g = &self.gates;
        for (key, v) in [
            ("max_diff_rate", g.max_diff_rate),
            ("max_error_increase", g.max_error_increase),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(
                    &format!("gates.{key}"),
                    format!("{v} is not a rate (0..=1)"),
                );
            }
        }
        if !(g.max_p99_ratio.is_finite() && g.max_p99_ratio >= 1.0) {
            return bad(
                "gates.max_p99_ratio",
                format!("{} must be 1 or more", g.max_p99_ratio),
            );
        }
        if let Some(t) = &self.tenant
            && t.is_empty()
        {
            return bad(
                "tenant",
                "must not be empty (leave it out for all tenants)".into(),
            );
        }
        Ok(())
    }
}

/// Calls each side needs in a step before the latency gate compares p99s:
/// over fewer, a p99 is one or two calls (one slow outlier would fail it).
pub const P99_CALLS: u64 = 200;

/// What an operator can ask of a running rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Hold the current step (gates are still checked and can roll back).
    Pause,
    /// Go on from a pause.
    Resume,
    /// Every user back to the baseline, for good.
    Abort,
}

/// Where a rollout is.
#[derive(Clone, Debug, PartialEq)]
enum State {
    Running,
    Paused,
    Complete,
    RolledBack,
    Aborted,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Running => "running",
            State::Paused => "paused",
            State::Complete => "complete",
            State::RolledBack => "rolled_back",
            State::Aborted => "aborted",
        }
    }
}

/// One step of the plan.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    Users,
    Percent(f64),
}

/// What a rollout needs of the process to move its stage's route.
pub struct Rollout {
    stage: Stage,
    config: RolloutConfig,
    /// The stage's own rules, after the rollout's.
    base: Vec<RouteRule>,
    /// Every pool of the stage.
    pools: BTreeMap<String, RemoteConfig>,
    limits: Limits,
    registry: Arc<Registry>,
    shadows: Arc<Shadows>,
}

/// A gate that did not hold, with its figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// `shadow`, `errors` or `latency`.
    pub gate: &'static str,
    /// What was measured against what bound.
    pub detail: String,
}

/// The figures of one step so far.
#[derive(Clone, Debug, Default)]
struct Window {
    candidate: CallStats,
    baseline: CallStats,
    shadow: Tally,
}

impl Rollout {
    /// A rollout of `stage` over the stage's `base` rules and `pools`.
    pub fn new(
        stage: Stage,
        config: RolloutConfig,
        base: Vec<RouteRule>,
        pools: BTreeMap<String, RemoteConfig>,
        limits: Limits,
        registry: Arc<Registry>,
    ) -> Self {
        let shadows = Arc::clone(&registry.options().shadows);
        Self {
            stage,
            config,
            base,
            pools,
            limits,
            registry,
            shadows,
        }
    }

    fn steps(&self) -> Vec<Step> {
        let users = (!self.config.users.is_empty()).then_some(Step::Users);
        users
            .into_iter()
            .chain(self.config.steps.iter().map(|p| Step::Percent(*p)))
            .collect()
    }

    /// The rollout's rules at `step` (`None`: all on the baseline; at 100%
    /// all on the candidate), then the stage's own.
    fn rules(&self, step: Option<Step>) -> Vec<RouteRule> {
        let c = &self.config;
        let rule = |r: RouteRule| RouteRule {
            tenant: c.tenant.clone(),
            ..r
        };
        let shadow = Some(ShadowRule {
            target: c.candidate.clone(),
            rate: c.shadow_rate,
            noise: c.shadow_noise,
        });
        let mut out = match step {
            None => vec![rule(RouteRule {
                target: Some(c.baseline.clone()),
                ..RouteRule::default()
            })],
            Some(Step::Users) => vec![
                rule(RouteRule {
                    users: c.users.clone(),
                    target: Some(c.candidate.clone()),
                    ..RouteRule::default()
                }),
                rule(RouteRule {
                    target: Some(c.baseline.clone()),
                    shadow,
                    ..RouteRule::default()
                }),
            ],
            Some(Step::Percent(p)) if p >= 100.0 => vec![rule(RouteRule {
                target: Some(c.candidate.clone()),
                ..RouteRule::default()
            })],
            Some(Step::Percent(p)) => vec![rule(RouteRule {
                split: vec![
                    Weighted {
                        target: c.candidate.clone(),
                        weight: p,
                    },
                    Weighted {
                        target: c.baseline.clone(),
                        weight: 100.0 - p,
                    },
                ],
                shadow,
                ..RouteRule::default()
            })],
        };
        out.extend(self.base.iter().cloned());
        out
    }

    fn apply(&self, step: Option<Step>) -> Result<(), crate::RegistryError> {
        let lines =
            self.registry
                .reload_route(self.stage, &self.rules(step), &self.pools, self.limits)?;
        for line in lines {
            tracing::info!(target: "feeds::routes", "{line}");
        }
        Ok(())
    }

    fn stats(&self, target: &str, shadow_too: bool) -> CallStats {
        let traffic: &[&str] = match shadow_too {
            true => &["live", "shadow"],
            false => &["live"],
        };
        client_stats(self.stage, target, traffic)
    }

    fn window(&self) -> Window {
        Window {
            candidate: self.stats(&self.config.candidate, true),
            baseline: self.stats(&self.config.baseline, false),
            shadow: self
                .shadows
                .tally(self.stage.name(), &self.config.candidate),
        }
    }

    /// The gates on what `now` adds to `since`: `Err` for the first that
    /// fails, `Ok(true)` when every gate had enough calls and holds.
    fn judge(&self, since: &Window, now: &Window, weight: f64) -> Result<bool, Failure> {
        let g = &self.config.gates;
        let cand = now.candidate.since(&since.candidate);
        let base = now.baseline.since(&since.baseline);
        let shadow = now.shadow.since(&since.shadow);
        let options = self.shadows.options();
        let diff = shadow.significant_rate(options);
        if diff > g.max_diff_rate {
            let worst = shadow
                .verdicts(options)
                .into_iter()
                .filter(|v| v.verdict == crate::diff::Verdict::Significant)
                .max_by(|a, b| (a.raw_rate - a.noise_rate).total_cmp(&(b.raw_rate - b.noise_rate)));
            return Err(Failure {
                gate: "shadow",
                detail: match worst {
                    Some(v) => format!(
                        "{} differs in {:.1}% of {} comparisons (noise {:.1}%), {:.1} points over the noise, above {:.1}",
                        v.field,
                        v.raw_rate * 100.0,
                        shadow.compared,
                        v.noise_rate * 100.0,
                        diff * 100.0,
                        g.max_diff_rate * 100.0
                    ),
                    None => format!(
                        "difference rate {:.1}% above {:.1}%",
                        diff * 100.0,
                        g.max_diff_rate * 100.0
                    ),
                },
            });
        }
        let enough = |s: &CallStats| s.calls >= g.min_calls.max(1);
        let all_on_candidate = weight >= 100.0;
        let p99_judged = cand.calls >= P99_CALLS && base.calls >= P99_CALLS;
        if enough(&cand) && enough(&base) {
            let excess = cand.error_rate() - base.error_rate();
            if excess > g.max_error_increase {
                return Err(Failure {
                    gate: "errors",
                    detail: format!(
                        "candidate error rate {:.2}% ({} of {}) vs baseline {:.2}% ({} of {}): {:.2} points over, above {:.2}",
                        cand.error_rate() * 100.0,
                        cand.errors,
                        cand.calls,
                        base.error_rate() * 100.0,
                        base.errors,
                        base.calls,
                        excess * 100.0,
                        g.max_error_increase * 100.0
                    ),
                });
            }
            let (cp, bp) = (cand.p99(), base.p99());
            if p99_judged && bp > 0.0 && cp / bp > g.max_p99_ratio {
                return Err(Failure {
                    gate: "latency",
                    detail: format!(
                        "candidate p99 {:.1} ms vs baseline {:.1} ms: {:.2}x, above {:.2}x",
                        cp * 1e3,
                        bp * 1e3,
                        cp / bp,
                        g.max_p99_ratio
                    ),
                });
            }
        }
        let shadow_judged = shadow.compared >= options.min_compared.max(1);
        Ok(enough(&cand) && (all_on_candidate || (enough(&base) && shadow_judged && p99_judged)))
    }

    /// Runs the rollout to its end (complete, rolled back or aborted),
    /// taking operator commands from `commands`.
    pub async fn run(self, mut commands: tokio::sync::mpsc::Receiver<Command>) {
        let stage = self.stage.name();
        let steps = self.steps();
        let dwell = Duration::from_secs_f64(self.config.dwell_s);
        let check = Duration::from_millis(self.config.check_ms);
        let (mut index, mut state) = (0usize, State::Running);
        let weight_of = |s: Step| match s {
            Step::Users => 0.0,
            Step::Percent(p) => p,
        };
        let publish = |index: usize, state: &State| {
            let weight = match state {
                State::RolledBack | State::Aborted => 0.0,
                _ => steps.get(index).map_or(0.0, |s| weight_of(*s)),
            };
            crate::observe::set_rollout(self.stage, weight, index as i64, state.name());
        };
        if let Err(e) = self.apply(steps.first().copied()) {
            tracing::error!(stage, "rollout cannot start: {e}");
            return;
        }
        tracing::info!(stage, candidate = %self.config.candidate, baseline = %self.config.baseline, "rollout started: {}", describe(steps[0]));
        publish(index, &state);
        let (mut since, mut started) = (self.window(), Instant::now());
        let mut ticker = tokio::time::interval(check);
        let mut listening = true;
        loop {
            tokio::select! {
                command = commands.recv(), if listening => {
                    listening = command.is_some();
                    match (command, &state) {
                        (Some(Command::Pause), State::Running) => {
                            state = State::Paused;
                            tracing::warn!(stage, "rollout paused at {}", describe(steps[index]));
                        }
                        (Some(Command::Resume), State::Paused) => {
                            state = State::Running;
                            tracing::warn!(stage, "rollout resumed at {}", describe(steps[index]));
                        }
                        (Some(Command::Abort), State::Running | State::Paused) => {
                            state = State::Aborted;
                            match self.apply(None) {
                                Ok(()) => tracing::error!(stage, "rollout aborted by the operator: every user back on {}", self.config.baseline),
                                Err(e) => tracing::error!(stage, "rollout aborted, but the route could not be changed: {e}"),
                            }
                        }
                        (Some(c), s) => tracing::warn!(stage, "rollout {}: {c:?} ignored", s.name()),
                        (None, _) => {}
                    }
                    publish(index, &state);
                }
                _ = ticker.tick() => {}
            }
            if !matches!(state, State::Running | State::Paused) {
                return;
            }
            let step = steps[index];
            let now = self.window();
            match self.judge(&since, &now, weight_of(step)) {
                Err(failure) => {
                    state = State::RolledBack;
                    let moved = self.apply(None);
                    tracing::error!(
                        stage,
                        gate = failure.gate,
                        "rollout gate `{}` failed at {}: {}; every user back on {}{}",
                        failure.gate,
                        describe(step),
                        failure.detail,
                        self.config.baseline,
                        match moved {
                            Ok(()) => String::new(),
                            Err(e) => format!(" (route not changed: {e})"),
                        }
                    );
                    publish(index, &state);
                    return;
                }
                Ok(held) if held && state == State::Running && started.elapsed() >= dwell => {
                    if index + 1 == steps.len() {
                        state = State::Complete;
                        tracing::info!(
                            stage,
                            "rollout complete: every user on {}",
                            self.config.candidate
                        );
                        publish(index, &state);
                        return;
                    }
                    index += 1;
                    if let Err(e) = self.apply(Some(steps[index])) {
                        tracing::error!(
                            stage,
                            "rollout cannot move to {}: {e}",
                            describe(steps[index])
                        );
                        index -= 1;
                        continue;
                    }
                    tracing::info!(stage, "rollout advanced to {}", describe(steps[index]));
                    (since, started) = (self.window(), Instant::now());
                    publish(index, &state);
                }
                Ok(_) => {}
            }
        }
    }
}

fn describe(step: Step) -> String {
    match step {
        Step::Users => "the allow-listed users".into(),
        Step::Percent(p) => format!("{p}% of users"),
    }
}

/// The targets a stage has here: `local` when hosted, and its pools.
pub fn targets(hosted: bool, pools: &BTreeMap<String, RemoteConfig>) -> Vec<&str> {
    hosted
        .then_some(LOCAL)
        .into_iter()
        .chain(pools.keys().map(String::as_str))
        .collect()
}
