//! [`Limiter`]: admits a request while fewer than the limit are in flight
//! and refuses it at once otherwise; the limit is fixed or adaptive
//! ([`super::Vegas`]). Its limit, requests in flight and refusals are
//! exported per scope (`process`, or a stage's name).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use prometheus::{IntCounterVec, IntGaugeVec, Opts};

use super::vegas::{Step, Vegas, VegasConfig};

/// How a limiter picks its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitMode {
    /// Always this many.
    Fixed(usize),
    /// Adapts to latency between `config.min` and `config.max`.
    Adaptive(VegasConfig),
}

/// The metric families of every limiter in the process.
struct Families {
    limit: IntGaugeVec,
    in_flight: IntGaugeVec,
    rejected: IntCounterVec,
}

static FAMILIES: LazyLock<Option<Families>> = LazyLock::new(|| {
    let build = || -> Result<Families, prometheus::Error> {
        let limit = IntGaugeVec::new(
            Opts::new(
                "feeds_concurrency_limit",
                "Requests admitted at once, by scope (process, or a stage's bulkhead); \
                 adaptive at the process scope.",
            ),
            &["scope"],
        )?;
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "feeds_concurrency_in_flight",
                "Requests in flight under each concurrency limit, by scope.",
            ),
            &["scope"],
        )?;
        let rejected = IntCounterVec::new(
            Opts::new(
                "feeds_concurrency_rejected_total",
                "Requests refused with RESOURCE_EXHAUSTED because their scope was at its limit.",
            ),
            &["scope"],
        )?;
        if let Some(registry) = crate::observe::registry() {
            registry.register(Box::new(limit.clone()))?;
            registry.register(Box::new(in_flight.clone()))?;
            registry.register(Box::new(rejected.clone()))?;
        }
        Ok(Families {
            limit,
            in_flight,
            rejected,
        })
    };
    match build() {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!("concurrency metrics unavailable: {e}");
            None
        }
    }
});

/// One scope's series.
struct Series {
    limit: prometheus::IntGauge,
    in_flight: prometheus::IntGauge,
    rejected: prometheus::IntCounter,
}

/// A concurrency limit for one scope.
pub struct Limiter {
    /// `process` or a stage's name: the metrics label and the refusal's wording.
    scope: String,
    /// The limit admission compares against (the algorithm's, copied out so
    /// admitting takes no lock).
    limit: AtomicUsize,
    /// Requests admitted and not yet finished.
    in_flight: AtomicUsize,
    /// The algorithm, when adaptive; fed once per finished request.
    adaptive: Option<Mutex<Vegas>>,
    /// Time zero of the samples fed to the algorithm.
    epoch: Instant,
    /// Exported series, when the metrics registry is available.
    series: Option<Series>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("scope", &self.scope)
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl Limiter {
    /// A limiter for `scope` (`process`, or a stage's name).
    pub fn new(scope: &str, mode: LimitMode) -> Arc<Self> {
        let (limit, adaptive) = match mode {
            LimitMode::Fixed(n) => (n.max(1), None),
            LimitMode::Adaptive(config) => {
                let vegas = Vegas::new(config);
                (vegas.limit(), Some(Mutex::new(vegas)))
            }
        };
        let series = FAMILIES.as_ref().map(|f| Series {
            limit: f.limit.with_label_values(&[scope]),
            in_flight: f.in_flight.with_label_values(&[scope]),
            rejected: f.rejected.with_label_values(&[scope]),
        });
        if let Some(s) = &series {
            s.limit.set(limit as i64);
        }
        Arc::new(Self {
            scope: scope.to_owned(),
            limit: AtomicUsize::new(limit),
            in_flight: AtomicUsize::new(0),
            adaptive,
            epoch: Instant::now(),
            series,
        })
    }

    /// The scope it limits.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The limit now.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Admits one request if fewer than the limit are in flight; `None`
    /// (counted as a refusal) when the limit is reached.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        self.acquire_below(self.limit())
    }

    /// As [`Limiter::try_acquire`], for work that is shed first (shadow
    /// copies): admitted only while fewer than half the limit are in
    /// flight, so it never takes the places live requests need.
    pub fn try_acquire_sheddable(self: &Arc<Self>) -> Option<Permit> {
        self.acquire_below((self.limit() / 2).max(1))
    }

    fn acquire_below(self: &Arc<Self>, limit: usize) -> Option<Permit> {
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            });
        match admitted {
            Ok(before) => {
                if let Some(s) = &self.series {
                    s.in_flight.inc();
                }
                Some(Permit {
                    limiter: Arc::clone(self),
                    start: Instant::now(),
                    in_flight: before + 1,
                    outcome: None,
                })
            }
            Err(_) => {
                if let Some(s) = &self.series {
                    s.rejected.inc();
                }
                None
            }
        }
    }

    /// The RESOURCE_EXHAUSTED a refused request gets.
    pub fn refusal(&self) -> tonic::Status {
        tonic::Status::resource_exhausted(format!(
            "{}: at its concurrency limit ({} in flight); try again later",
            self.scope,
            self.limit()
        ))
    }

    fn finish(&self, permit: &Permit) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        if let Some(s) = &self.series {
            s.in_flight.dec();
        }
        let (Some(adaptive), Some(dropped)) = (&self.adaptive, permit.outcome) else {
            return;
        };
        let now = Instant::now();
        let mut vegas = adaptive
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let step = vegas.sample(
            now.duration_since(self.epoch),
            now.duration_since(permit.start),
            permit.in_flight,
            dropped,
        );
        if step != Step::Open {
            let limit = vegas.limit();
            tracing::debug!(
                target: "feeds::overload",
                scope = %self.scope,
                ?step,
                limit,
                window_ms = vegas.last_window().map(|d| d.as_secs_f64() * 1e3),
                noload_ms = vegas.noload().map(|d| d.as_secs_f64() * 1e3),
                "adaptive limit window closed"
            );
            drop(vegas);
            self.limit.store(limit, Ordering::Relaxed);
            if let Some(s) = &self.series {
                s.limit.set(limit as i64);
            }
        }
    }
}

/// One admitted request; dropping it frees its place. A request that
/// finished says so with [`Permit::done`] and becomes a latency sample; one
/// cancelled before it finished is not sampled.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<Limiter>,
    start: Instant,
    /// Requests in flight when it was admitted, itself included.
    in_flight: usize,
    /// `Some(ran out of its deadline)` once it finished.
    outcome: Option<bool>,
}

impl Permit {
    /// Marks the request finished; `dropped` when it ran out of its deadline
    /// (a sign of overload the algorithm backs off on).
    pub fn done(mut self, dropped: bool) {
        self.outcome = Some(dropped);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let limiter = Arc::clone(&self.limiter);
        limiter.finish(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_frees_on_drop() {
        let l = Limiter::new("test-fixed", LimitMode::Fixed(2));
        let a = l.try_acquire().expect("first");
        let b = l.try_acquire().expect("second");
        assert!(l.try_acquire().is_none());
        assert_eq!(l.in_flight(), 2);
        a.done(false);
        assert_eq!(l.in_flight(), 1);
        let c = l.try_acquire().expect("freed");
        drop((b, c));
        assert_eq!(l.in_flight(), 0);
        assert_eq!(l.refusal().code(), tonic::Code::ResourceExhausted);
        assert!(l.refusal().message().contains("test-fixed"));
    }

    #[test]
    fn shadow_work_takes_at_most_half_the_places() {
        let l = Limiter::new("test-shed", LimitMode::Fixed(4));
        let shadow: Vec<_> = (0..4).filter_map(|_| l.try_acquire_sheddable()).collect();
        assert_eq!(shadow.len(), 2, "shadow copies stop at half the limit");
        let live: Vec<_> = (0..4).filter_map(|_| l.try_acquire()).collect();
        assert_eq!(live.len(), 2, "live requests take the rest");
        drop(shadow);
        assert!(
            l.try_acquire_sheddable().is_none(),
            "live requests hold half or more"
        );
    }

    #[test]
    fn adaptive_starts_at_its_initial_limit() {
        let l = Limiter::new(
            "test-adaptive",
            LimitMode::Adaptive(VegasConfig {
                initial: 3,
                min: 1,
                ..VegasConfig::default()
            }),
        );
        assert_eq!(l.limit(), 3);
        let permits: Vec<_> = (0..5).filter_map(|_| l.try_acquire()).collect();
        assert_eq!(permits.len(), 3);
    }
}
