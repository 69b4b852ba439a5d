//! The adaptive limit algorithm: TCP Vegas applied to request concurrency,
//! as Netflix's concurrency-limits library does, over sample windows.
//!
//! Why Vegas and not its siblings:
//! - **Vegas** compares each window's average latency with the *no-load*
//!   latency (the lowest window average seen) and estimates the queue as
//!   `limit * (1 - noload / rtt)`. The limit grows while that queue is short
//!   and shrinks when it is long, so admitted requests stay near the latency
//!   the process shows unloaded: what a latency-protecting limit is for.
//!   Netflix's own README recommends it for servers.
//! - **Gradient2** measures against a long-term *average* of latency, which
//!   follows the latency up during a long overload (by design: it adapts to
//!   the loaded latency), so admitted latency can creep with it.
//! - **AIMD** reacts only to drops (timeouts, errors), i.e. after latency has
//!   already gone past the deadline.
//!
//! Departures from the library, each for a reason:
//! - Where Netflix's Vegas steps down by `log10(limit)` per window, this one
//!   removes the whole excess queue (over `beta`) in one window, at most
//!   halving: a sudden 5x overload is shed within a few windows, not minutes.
//! - A drop (a request that ran out of its deadline) cuts the limit by 10%.
//! - The no-load latency is re-measured every `probe_multiplier * limit`
//!   windows (it is reset to the current window's average), so a lasting
//!   change in the work per request is learnt instead of shedding forever.
//!
//! Time is passed in, never read: the algorithm is a pure function of its
//! samples, so tests replay latency sequences deterministically.

use std::time::Duration;

/// The algorithm's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VegasConfig {
    /// The limit before any sample.
    pub initial: usize,
    /// The limit never goes below this.
    pub min: usize,
    /// The limit never goes above this (the hard ceiling).
    pub max: usize,
    /// A window closes once it is this old and holds `min_samples`.
    pub window: Duration,
    /// Samples a window needs before it can close early.
    pub min_samples: u32,
    /// A window closes at this age whatever its sample count.
    pub max_window: Duration,
    /// The no-load latency is re-measured every this many times `limit` windows.
    pub probe_multiplier: u64,
}

impl Default for VegasConfig {
    fn default() -> Self {
        Self {
            initial: 20,
            min: 4,
            max: 1_024,
            window: Duration::from_millis(100),
            min_samples: 10,
            max_window: Duration::from_secs(1),
            probe_multiplier: 30,
        }
    }
}

/// One sample window being filled.
#[derive(Clone, Copy, Debug, Default)]
struct Window {
    /// When its first sample came (time since the caller's epoch).
    start: Option<Duration>,
    /// Samples in it.
    samples: u32,
    /// Their latencies, summed, in nanoseconds.
    sum_ns: u128,
    /// The most requests in flight any of them saw.
    max_in_flight: usize,
    /// Whether one of them ran out of its deadline.
    dropped: bool,
}

/// What closing a window did to the limit, for tests and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The window is still open.
    Open,
    /// The window set the no-load latency (first window, a new low, or a probe).
    Baseline,
    /// Too few requests in flight to say anything about capacity.
    AppLimited,
    /// The limit moved (or held) by the Vegas rule or a drop.
    Updated,
}

/// The adaptive limit's state.
#[derive(Clone, Debug)]
pub struct Vegas {
    config: VegasConfig,
    /// The current limit (fractional, so small steps accumulate).
    limit: f64,
    /// The lowest window-average latency seen since the last probe.
    noload_ns: Option<f64>,
    /// The window being filled.
    window: Window,
    /// Windows closed since the last probe.
    since_probe: u64,
}

impl Vegas {
    /// A fresh limit at `config.initial` (clamped to `min..=max`).
    pub fn new(config: VegasConfig) -> Self {
        let max = config.max.max(1);
        let min = config.min.clamp(1, max);
        let config = VegasConfig { min, max, ..config };
        Self {
            limit: config.initial.clamp(min, max) as f64,
            config,
            noload_ns: None,
            window: Window::default(),
            since_probe: 0,
        }
    }

    /// The limit now.
    pub fn limit(&self) -> usize {
        self.limit as usize
    }

    /// The no-load latency now, once a window has measured it.
    pub fn noload(&self) -> Option<Duration> {
        self.noload_ns.map(|ns| Duration::from_nanos(ns as u64))
    }

    /// Records one finished request: `now` (time since any fixed epoch),
    /// its latency, how many requests were in flight when it was admitted
    /// (itself included) and whether it ran out of its deadline.
    pub fn sample(
        &mut self,
        now: Duration,
        rtt: Duration,
        in_flight: usize,
        dropped: bool,
    ) -> Step {
        let w = &mut self.window;
        let start = *w.start.get_or_insert(now);
        w.samples += 1;
        w.sum_ns += rtt.as_nanos();
        w.max_in_flight = w.max_in_flight.max(in_flight);
        w.dropped |= dropped;
        let age = now.saturating_sub(start);
        let full = age >= self.config.window && w.samples >= self.config.min_samples;
        if !(full || age >= self.config.max_window) {
            return Step::Open;
        }
        let window = std::mem::take(&mut self.window);
        let rtt_ns = window.sum_ns as f64 / f64::from(window.samples.max(1));
        self.close(rtt_ns, window.max_in_flight, window.dropped)
    }

    fn close(&mut self, rtt_ns: f64, in_flight: usize, dropped: bool) -> Step {
        self.since_probe += 1;
        let limit = self.limit;
        if self.since_probe >= self.config.probe_multiplier.saturating_mul(limit as u64) {
            self.since_probe = 0;
            self.noload_ns = Some(rtt_ns);
            return Step::Baseline;
        }
        let noload = match self.noload_ns {
            Some(n) if rtt_ns >= n => n,
            _ => {
                self.noload_ns = Some(rtt_ns);
                return Step::Baseline;
            }
        };
        let next = if dropped {
            limit * 0.9
        } else if (in_flight as f64) * 2.0 < limit {
            return Step::AppLimited;
        } else {
            let queue = (limit * (1.0 - noload / rtt_ns)).ceil();
            let log = limit.log10().max(1.0);
            let (alpha, beta) = (3.0 * log, 6.0 * log);
            if queue <= log {
                limit + beta
            } else if queue < alpha {
                limit + log
            } else if queue > beta {
                (limit - (queue - beta)).max(limit / 2.0)
            } else {
                limit
            }
        };
        self.limit = next.clamp(self.config.min as f64, self.config.max as f64);
        Step::Updated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `windows` windows of `n` samples each, every sample `rtt(limit)`
    /// with `in_flight(limit)` in flight; returns the limit after each window.
    fn run(
        vegas: &mut Vegas,
        clock: &mut Duration,
        windows: usize,
        rtt: impl Fn(usize) -> Duration,
        in_flight: impl Fn(usize) -> usize,
    ) -> Vec<usize> {
        let mut limits = Vec::new();
        for _ in 0..windows {
            let (r, f) = (rtt(vegas.limit()), in_flight(vegas.limit()));
            // Ten samples 12 ms apart: the tenth closes the window (108 ms).
            for i in 0..10 {
                *clock += 12 * MS;
                let step = vegas.sample(*clock, r, f, false);
                assert_eq!(step == Step::Open, i < 9, "sample {i}: {step:?}");
            }
            limits.push(vegas.limit());
        }
        limits
    }

    /// A CPU-bound server: `parallel` requests run at once at `service`
    /// each; more queue, so latency grows with concurrency past it.
    fn cpu_bound(service: Duration, parallel: usize) -> impl Fn(usize) -> Duration {
        move |concurrency| service * (concurrency.max(parallel) as u32) / (parallel as u32)
    }

    fn config() -> VegasConfig {
        VegasConfig {
            probe_multiplier: 1_000_000,
            ..VegasConfig::default()
        }
    }

    #[test]
    fn a_window_closes_on_age_and_count() {
        let mut v = Vegas::new(config());
        for i in 1..10 {
            assert_eq!(v.sample(i * 50 * MS, MS, 20, false), Step::Open, "{i}");
        }
        // Tenth sample, 500 ms in: the window closes and sets the baseline.
        assert_eq!(v.sample(500 * MS, MS, 20, false), Step::Baseline);
        assert_eq!(v.noload(), Some(MS));
        // A slow trickle: the window closes at max_window with few samples.
        assert_eq!(v.sample(600 * MS, MS, 20, false), Step::Open);
        assert_eq!(v.sample(1_700 * MS, MS, 20, false), Step::Updated);
    }

    #[test]
    fn grows_while_latency_stays_at_the_baseline() {
        let mut v = Vegas::new(config());
        let mut clock = Duration::ZERO;
        let limits = run(&mut v, &mut clock, 200, |_| 2 * MS, |l| l);
        assert!(limits.windows(2).all(|w| w[1] >= w[0]), "{limits:?}");
        assert_eq!(*limits.last().expect("limits"), 1_024, "{limits:?}");
    }

    #[test]
    fn settles_near_the_capacity_of_a_cpu_bound_server() {
        // 4 requests at once take 2 ms each; the client always fills the limit.
        let service = 2 * MS;
        let mut v = Vegas::new(VegasConfig {
            initial: 200,
            ..config()
        });
        let mut clock = Duration::ZERO;
        // First window at low load measures the baseline.
        run(&mut v, &mut clock, 1, |_| service, |_| 200);
        let limits = run(&mut v, &mut clock, 200, cpu_bound(service, 4), |l| l);
        let tail = &limits[150..];
        let (lo, hi) = (
            *tail.iter().min().expect("tail"),
            *tail.iter().max().expect("tail"),
        );
        // Parallelism plus a few queued: alpha..beta is 3..6 at these sizes.
        assert!(lo >= 4 && hi <= 12, "{lo}..{hi}: {limits:?}");
        // What the admitted requests see: at most 3x the unloaded latency.
        assert!(cpu_bound(service, 4)(hi) <= service * 3, "{hi}");
    }

    #[test]
    fn a_sudden_overload_is_shed_within_a_few_windows() {
        let service = MS;
        let mut v = Vegas::new(VegasConfig {
            initial: 1_000,
            ..config()
        });
        let mut clock = Duration::ZERO;
        run(&mut v, &mut clock, 1, |_| service, |_| 1_000);
        let limits = run(&mut v, &mut clock, 12, cpu_bound(service, 2), |l| l);
        assert!(limits[11] <= 16, "{limits:?}");
    }

    #[test]
    fn an_idle_server_does_not_grow_its_limit() {
        let mut v = Vegas::new(config());
        let mut clock = Duration::ZERO;
        // Two in flight against a limit of 20: app-limited, the limit holds.
        let limits = run(&mut v, &mut clock, 50, |_| MS, |_| 2);
        assert!(limits.iter().all(|l| *l == 20), "{limits:?}");
    }

    #[test]
    fn drops_cut_the_limit_and_it_stays_within_bounds() {
        let mut v = Vegas::new(VegasConfig {
            initial: 100,
            min: 8,
            max: 200,
            ..config()
        });
        let mut clock = Duration::ZERO;
        run(&mut v, &mut clock, 1, |_| MS, |_| 100);
        let mut last = v.limit();
        for _ in 0..100 {
            for _ in 0..10 {
                clock += 12 * MS;
                v.sample(clock, MS, 100, true);
            }
            assert!(v.limit() <= last.max(8));
            last = v.limit();
        }
        assert_eq!(v.limit(), 8);
        let limits = run(&mut v, &mut clock, 100, |_| MS, |l| l);
        assert_eq!(*limits.last().expect("limits"), 200);
    }

    #[test]
    fn a_probe_learns_a_lasting_change_in_the_work() {
        let probing = VegasConfig {
            probe_multiplier: 1,
            initial: 10,
            min: 1,
            ..VegasConfig::default()
        };
        let mut v = Vegas::new(probing);
        let mut clock = Duration::ZERO;
        run(&mut v, &mut clock, 1, |_| MS, |_| 10);
        // Every request now takes 5 ms whatever the load: without probes the
        // queue estimate says 80% queued and the limit would sink to the floor.
        let limits = run(&mut v, &mut clock, 200, |_| 5 * MS, |l| l);
        assert!(v.noload() >= Some(5 * MS), "{:?}", v.noload());
        assert!(*limits.last().expect("limits") >= 10, "{limits:?}");
    }

    #[test]
    fn settings_are_clamped() {
        let v = Vegas::new(VegasConfig {
            initial: 5_000,
            min: 0,
            max: 64,
            ..config()
        });
        assert_eq!(v.limit(), 64);
        let v = Vegas::new(VegasConfig {
            initial: 1,
            min: 100,
            max: 64,
            ..config()
        });
        assert_eq!(v.limit(), 64);
    }
}
