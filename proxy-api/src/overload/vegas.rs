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
//! - **A latency bound** beside the queue thresholds: a window whose average
//!   latency is above `tolerance` times the no-load latency shrinks the
//!   limit in proportion (`limit * bound / rtt`, to a quarter at most), and no
//!   window grows the limit past the point where, latency growing with
//!   concurrency, it would pass the bound (`limit * bound / rtt`). Vegas's
//!   alpha and beta are counts of queued requests (3 and 6 at small limits),
//!   so on their own a limit of 6 or less never shrinks, and on a one-core
//!   server a queue of 6 is six service times. The bound holds the admitted
//!   latency near `tolerance` times the unloaded one whatever the core count.
//! - A drop (a request that ran out of its deadline) cuts the limit by 10%.
//! - The no-load latency is re-measured every `probe_multiplier * limit`
//!   windows, so a lasting change in the work per request is learnt instead
//!   of shedding forever. The probe window runs at `limit / tolerance`
//!   (at least `min`) and its average becomes the no-load latency; then the
//!   limit returns to where it was. Measuring at the loaded limit instead
//!   would take a loaded latency as the baseline, and in a long overload
//!   every probe would let the limit, and the admitted latency, climb by
//!   `tolerance` again.
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
    /// The no-load latency is re-measured every this many times `limit`
    /// windows (10 at least).
    pub probe_multiplier: u64,
    /// The latency bound: windows averaging above this many hundredths of
    /// the no-load latency shrink the limit (150, as Netflix's Gradient2
    /// defaults its rtt tolerance to 1.5).
    pub tolerance_pct: u32,
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
            tolerance_pct: 150,
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
    /// The latencies of those not dropped, summed, in nanoseconds.
    sum_ns: u128,
    /// How many were not dropped (the average's denominator).
    timed: u32,
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
    /// The window set the no-load latency (first window, a new low, or a
    /// probe's window, after which the limit is back where it was).
    Baseline,
    /// A probe starts: the next window runs at `limit / tolerance`.
    Probe,
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
    /// While a probe's window is open.
    probing: Option<Probing>,
    /// When the limit (as admission sees it) last changed.
    moved: Duration,
    /// The average latency of the last window closed.
    last_window: Option<Duration>,
}

/// A probe under way.
#[derive(Clone, Copy, Debug)]
struct Probing {
    /// The limit to go back to after it.
    restore: f64,
    /// Whether it is the periodic re-measurement (which may raise the
    /// baseline) rather than the check after the first window (which only
    /// lowers it).
    periodic: bool,
    /// Whether the limit bound in the window before it: only then can the
    /// baseline have had a queue in it.
    saturated: bool,
}

/// A probe window averaging below this fraction of the baseline shows the
/// baseline had a queue in it: halving the concurrency of a CPU-bound
/// server halves its latency, where noise moves it by a few tenths.
const LOADED: f64 = 0.8;

/// What a window with a dropped request does to the limit.
const DROP_CUT: f64 = 0.9;

/// Windows between two periodic probes at least, so a small limit still has
/// windows to move in between.
const MIN_PROBE_GAP: u64 = 10;

impl Vegas {
    /// A fresh limit at `config.initial` (clamped to `min..=max`).
    pub fn new(config: VegasConfig) -> Self {
        let max = config.max.max(1);
        let min = config.min.clamp(1, max);
        let tolerance_pct = config.tolerance_pct.max(101);
        let config = VegasConfig {
            min,
            max,
            tolerance_pct,
            ..config
        };
        Self {
            limit: config.initial.clamp(min, max) as f64,
            config,
            noload_ns: None,
            window: Window::default(),
            since_probe: 0,
            probing: None,
            moved: Duration::ZERO,
            last_window: None,
        }
    }

    /// The limit now.
    pub fn limit(&self) -> usize {
        self.limit as usize
    }

    /// The average latency of the last window closed.
    pub fn last_window(&self) -> Option<Duration> {
        self.last_window
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
        // A request admitted before the limit last moved shows the old
        // limit's latency, not the new one's: with latency near the window's
        // length, counting it would move the limit again for the same queue
        // (and a probe would measure the queue it is meant to be without).
        if now.saturating_sub(rtt) < self.moved {
            return Step::Open;
        }
        let w = &mut self.window;
        let start = *w.start.get_or_insert(now);
        w.samples += 1;
        // A dropped request's latency is not the service's: a refusal from
        // below comes back fast, and counting it would pull the window
        // (and the no-load latency) down.
        if !dropped {
            w.sum_ns += rtt.as_nanos();
            w.timed += 1;
        }
        w.max_in_flight = w.max_in_flight.max(in_flight);
        w.dropped |= dropped;
        let age = now.saturating_sub(start);
        let full = age >= self.config.window && w.samples >= self.config.min_samples;
        if !(full || age >= self.config.max_window) {
            return Step::Open;
        }
        let window = std::mem::take(&mut self.window);
        let before = self.limit();
        let step = if window.timed == 0 {
            // Every request dropped: no latency to learn from, only the cut.
            self.limit = self.clamped(self.limit * DROP_CUT);
            Step::Updated
        } else {
            let rtt_ns = window.sum_ns as f64 / f64::from(window.timed);
            self.last_window = Some(Duration::from_nanos(rtt_ns as u64));
            self.close(rtt_ns, window.max_in_flight, window.dropped)
        };
        if self.limit() != before {
            self.moved = now;
        }
        step
    }

    fn tolerance(&self) -> f64 {
        f64::from(self.config.tolerance_pct) / 100.0
    }

    /// Starts a probe: the next window runs at `limit / tolerance`, and the
    /// limit goes back to `restore` after it unless it finds the baseline
    /// was a loaded one.
    /// `limit` within the configured floor and ceiling.
    fn clamped(&self, limit: f64) -> f64 {
        limit.clamp(self.config.min as f64, self.config.max as f64)
    }

    fn probe(&mut self, restore: f64, periodic: bool, saturated: bool) -> Step {
        self.since_probe = 0;
        self.probing = Some(Probing {
            restore,
            periodic,
            saturated,
        });
        self.limit = self.clamped((self.limit / self.tolerance()).floor());
        Step::Probe
    }

    fn close(&mut self, rtt_ns: f64, in_flight: usize, dropped: bool) -> Step {
        // Whether the limit bound this window: it admitted up to it.
        let saturated = in_flight as f64 >= self.limit.floor();
        if let Some(Probing {
            restore,
            periodic,
            saturated: was_saturated,
        }) = self.probing.take()
        {
            let baseline = self.noload_ns.unwrap_or(rtt_ns);
            // Well under the baseline at a fraction of a limit that bound:
            // the baseline was measured with a queue, so the limit stays at
            // the probe's and the next window probes below it.
            if was_saturated && rtt_ns < LOADED * baseline {
                self.noload_ns = Some(rtt_ns);
                return self.probe(self.limit, periodic, saturated);
            }
            // A periodic probe re-measures (a lasting change in the work is
            // learnt either way); the one after the first window only lowers.
            self.noload_ns = Some(if periodic {
                rtt_ns
            } else {
                baseline.min(rtt_ns)
            });
            self.limit = restore;
            return Step::Baseline;
        }
        self.since_probe += 1;
        let limit = self.limit;
        let every = self
            .config
            .probe_multiplier
            .saturating_mul(limit as u64)
            .max(MIN_PROBE_GAP);
        // Not while a window is over the bound (unless the limit is at its
        // floor): the probe's requests would wait behind the queue the
        // limit was just cut for, and its window would measure that queue
        // draining and take it as the new unloaded latency.
        let over = self
            .noload_ns
            .is_some_and(|n| rtt_ns > n * self.tolerance());
        let floor = limit <= self.config.min as f64;
        if self.noload_ns.is_some() && self.since_probe >= every && (!over || floor) {
            return self.probe(limit, true, saturated);
        }
        let noload = match self.noload_ns {
            Some(n) if rtt_ns >= n => n,
            Some(_) => {
                self.noload_ns = Some(rtt_ns);
                return Step::Baseline;
            }
            None => {
                // The first window may already be loaded (a process started
                // into an overload): the next one checks at a lower limit.
                self.noload_ns = Some(rtt_ns);
                return self.probe(limit, false, saturated);
            }
        };
        // Past the bound, latency is taken to grow with concurrency: this is
        // the limit at which the window would have averaged the bound.
        let bound = noload * self.tolerance();
        let at_bound = limit * bound / rtt_ns;
        let next = if dropped {
            limit * DROP_CUT
        } else if (in_flight as f64) * 2.0 < limit {
            return Step::AppLimited;
        } else if rtt_ns > bound {
            // Queueing latency while the limit does not bind is the arrivals'
            // burstiness, which a smaller limit would only refuse.
            if !saturated {
                return Step::AppLimited;
            }
            at_bound.max(limit / 4.0)
        } else {
            let queue = (limit * (1.0 - noload / rtt_ns)).ceil();
            let log = limit.log10().max(1.0);
            let (alpha, beta) = (3.0 * log, 6.0 * log);
            if queue <= log {
                (limit + beta).min(at_bound)
            } else if queue < alpha {
                (limit + log).min(at_bound)
            } else if queue > beta {
                (limit - (queue - beta)).max(limit / 2.0)
            } else {
                limit
            }
        };
        self.limit = self.clamped(next);
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
            window(vegas, clock, r, f);
            limits.push(vegas.limit());
        }
        limits
    }

    /// One window of ten samples 12 ms apart, each `rtt` with `in_flight`
    /// in flight; the step that closed it.
    fn window(vegas: &mut Vegas, clock: &mut Duration, rtt: Duration, in_flight: usize) -> Step {
        // The window's requests are admitted after it starts (after the
        // last change of the limit) and finish `rtt` later.
        *clock += rtt;
        // Ten samples 12 ms apart: the tenth closes the window (108 ms).
        let mut step = Step::Open;
        for i in 0..10 {
            *clock += 12 * MS;
            step = vegas.sample(*clock, rtt, in_flight, false);
            assert_eq!(step == Step::Open, i < 9, "sample {i}: {step:?}");
        }
        step
    }

    /// A CPU-bound server: `parallel` requests run at once at `service`
    /// each; more queue, so latency grows with concurrency past it.
    fn cpu_bound(service: Duration, parallel: usize) -> impl Fn(usize) -> Duration {
        move |concurrency| service * (concurrency.max(parallel) as u32) / (parallel as u32)
    }

    fn config() -> VegasConfig {
        VegasConfig {
            probe_multiplier: 1_000_000,
            tolerance_pct: 200,
            ..VegasConfig::default()
        }
    }

    #[test]
    fn a_window_closes_on_age_and_count() {
        let mut v = Vegas::new(config());
        for i in 1..10 {
            assert_eq!(v.sample(i * 50 * MS, MS, 20, false), Step::Open, "{i}");
        }
        // Tenth sample, 500 ms in: the window closes and sets the baseline,
        // and the next window checks it at half the limit.
        assert_eq!(v.sample(500 * MS, MS, 20, false), Step::Probe);
        assert_eq!(v.noload(), Some(MS));
        assert_eq!(v.limit(), 10);
        // A slow trickle: the window closes at max_window with few samples.
        assert_eq!(v.sample(600 * MS, MS, 20, false), Step::Open);
        assert_eq!(v.sample(1_700 * MS, MS, 20, false), Step::Baseline);
        assert_eq!(v.limit(), 20);
        assert_eq!(v.sample(1_800 * MS, MS, 20, false), Step::Open);
        assert_eq!(v.sample(2_900 * MS, MS, 20, false), Step::Updated);
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
    fn a_one_core_server_is_held_at_the_latency_bound() {
        // One request at a time, 1 ms each: n in flight take n ms. The queue
        // thresholds alone settle where the queue is 6 (7 ms); the bound
        // holds the window average at twice the unloaded latency.
        let service = MS;
        let mut v = Vegas::new(VegasConfig { min: 1, ..config() });
        let mut clock = Duration::ZERO;
        run(&mut v, &mut clock, 1, |_| service, |_| 1);
        let limits = run(&mut v, &mut clock, 100, cpu_bound(service, 1), |l| l);
        let tail = &limits[20..];
        assert!(tail.iter().all(|l| (1..=2).contains(l)), "{limits:?}");
        // Growth stops at the bound instead of overshooting and coming back.
        assert!(tail.iter().filter(|l| **l == 2).count() > 70, "{limits:?}");
    }

    #[test]
    fn a_process_started_into_an_overload_finds_its_unloaded_latency() {
        // No quiet window ever: the first one has 20 queued. Each probe at
        // half the limit halves the latency, so the baseline was loaded and
        // the limit steps down until a probe stops finding less.
        let service = MS;
        let mut v = Vegas::new(VegasConfig { min: 1, ..config() });
        let mut clock = Duration::ZERO;
        let limits = run(&mut v, &mut clock, 60, cpu_bound(service, 1), |l| l);
        assert_eq!(v.noload(), Some(service), "{limits:?}");
        assert!(limits[10..].iter().all(|l| *l <= 2), "{limits:?}");
    }

    #[test]
    fn requests_admitted_before_a_probe_are_not_its_samples() {
        let mut v = Vegas::new(VegasConfig { min: 1, ..config() });
        // A loaded first window: 20 ms with 20 in flight.
        let mut clock = Duration::ZERO;
        for _ in 0..10 {
            clock += 20 * MS;
            v.sample(clock, 20 * MS, 20, false);
        }
        assert_eq!(v.limit(), 10, "the first window's check starts");
        // The probe's window: 20 requests admitted before it (queued behind
        // the old limit's work) finish in it, beside 10 admitted under it
        // at half the first window's latency. Only those 10 count: the
        // baseline was loaded.
        let probe = clock;
        for i in 1..=20u32 {
            clock = probe + i * 5 * MS;
            assert!(clock < probe + 200 * MS, "admitted before the probe");
            assert_eq!(v.sample(clock, 200 * MS, 20, false), Step::Open);
        }
        for i in 1..=10u32 {
            clock = probe + 100 * MS + i * 12 * MS;
            v.sample(clock, 10 * MS, 10, false);
        }
        assert_eq!(v.noload(), Some(10 * MS));
        assert_eq!(
            v.limit(),
            5,
            "a loaded baseline: the next probe is below it"
        );
    }

    #[test]
    fn probes_in_a_long_overload_keep_the_unloaded_baseline() {
        // Probing every `limit` windows through a lasting overload: each
        // probe runs at half the limit, so it measures the unloaded latency
        // again instead of taking the loaded one as the new baseline.
        let service = MS;
        let mut v = Vegas::new(VegasConfig {
            min: 1,
            probe_multiplier: 1,
            ..config()
        });
        let mut clock = Duration::ZERO;
        run(&mut v, &mut clock, 1, |_| service, |_| 1);
        let limits = run(&mut v, &mut clock, 300, cpu_bound(service, 1), |l| l);
        assert_eq!(v.noload(), Some(service));
        assert!(limits[20..].iter().all(|l| *l <= 2), "{limits:?}");
    }

    #[test]
    fn latency_while_the_limit_does_not_bind_leaves_it() {
        // Bursts of half the limit at 1.8x the unloaded latency: queueing
        // of a busy but not overloaded server. No request is refused, so a
        // smaller limit would only start refusing some.
        let mut v = Vegas::new(VegasConfig {
            tolerance_pct: 150,
            ..config()
        });
        let mut clock = Duration::ZERO;
        run(&mut v, &mut clock, 2, |_| MS, |_| 10);
        let limits = run(&mut v, &mut clock, 50, |_| MS * 18 / 10, |_| 10);
        assert!(limits.iter().all(|l| *l == 20), "{limits:?}");
        // The same latency with the limit reached: it shrinks.
        let limits = run(&mut v, &mut clock, 3, |_| MS * 18 / 10, |l| l);
        assert!(limits[2] < 20, "{limits:?}");
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
        // Two in flight against a limit of 20: app-limited, the limit holds
        // (after the check of the first window's baseline at half of it).
        let limits = run(&mut v, &mut clock, 50, |_| MS, |_| 2);
        assert_eq!(limits[0], 10, "{limits:?}");
        assert!(limits[1..].iter().all(|l| *l == 20), "{limits:?}");
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
        // The baseline, and its check at half the limit.
        run(&mut v, &mut clock, 2, |_| MS, |_| 100);
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
    fn no_periodic_probe_while_a_queue_drains() {
        // Measured on a one-core server: the limit was cut from 20 to 5 at
        // an overload's onset, the probe due came in the next window, its
        // requests waited behind the 20 admitted before, and it took 8.8 ms
        // (4.6x the unloaded 1.9 ms) as the new unloaded latency.
        let mut v = Vegas::new(VegasConfig {
            probe_multiplier: 1,
            min: 1,
            ..VegasConfig::default()
        });
        let mut clock = Duration::ZERO;
        assert_eq!(window(&mut v, &mut clock, 2 * MS, 1), Step::Probe);
        assert_eq!(window(&mut v, &mut clock, 2 * MS, 1), Step::Baseline);
        for _ in 0..15 {
            assert_eq!(window(&mut v, &mut clock, 2 * MS, 2), Step::AppLimited);
        }
        // The onset: cut to a quarter; a probe is now due (16 windows >= 10).
        assert_eq!(window(&mut v, &mut clock, 26 * MS, 20), Step::Updated);
        assert_eq!(v.limit(), 5);
        // Still draining: cut again, no probe.
        assert_eq!(window(&mut v, &mut clock, 13 * MS, 5), Step::Updated);
        assert_eq!(v.limit(), 1);
        assert_eq!(v.noload(), Some(2 * MS));
        // Drained: the probe runs now and keeps the unloaded latency.
        assert_eq!(window(&mut v, &mut clock, 2 * MS, 1), Step::Probe);
        assert_eq!(window(&mut v, &mut clock, 2 * MS, 1), Step::Baseline);
        assert_eq!(v.noload(), Some(2 * MS));
    }

    #[test]
    fn fast_refusals_from_below_do_not_lower_the_no_load_latency() {
        // Measured in five-pod: split's refusals came back to business in
        // well under a millisecond, the window averaged 1.9 ms against a
        // chain that takes 4.6 ms unloaded, and that became the baseline.
        let mut v = Vegas::new(VegasConfig {
            min: 1,
            ..VegasConfig::default()
        });
        let mut clock = Duration::ZERO;
        assert_eq!(window(&mut v, &mut clock, 5 * MS, 1), Step::Probe);
        assert_eq!(window(&mut v, &mut clock, 5 * MS, 1), Step::Baseline);
        assert_eq!(v.noload(), Some(5 * MS));
        // Half the window refused below at 0.2 ms, half served at 5 ms.
        clock += 5 * MS;
        let mut step = Step::Open;
        for i in 0..10 {
            clock += 12 * MS;
            let (rtt, dropped) = if i % 2 == 0 {
                (MS / 5, true)
            } else {
                (5 * MS, false)
            };
            step = v.sample(clock, rtt, 20, dropped);
        }
        assert_eq!(step, Step::Updated);
        assert_eq!(v.noload(), Some(5 * MS));
        assert_eq!(v.last_window(), Some(5 * MS));
        assert_eq!(v.limit(), 18, "cut by 10% for the drops");
        // A window of drops alone cuts again and learns nothing.
        clock += 5 * MS;
        for _ in 0..10 {
            clock += 12 * MS;
            step = v.sample(clock, MS / 5, 18, true);
        }
        assert_eq!(step, Step::Updated);
        assert_eq!(v.limit(), 16);
        assert_eq!(v.noload(), Some(5 * MS));
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
