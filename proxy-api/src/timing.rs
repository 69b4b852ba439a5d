//! A stage's own compute for one request: the CPU time of the thread while
//! the stage runs, excluding the time it awaits its downstream stage.
//! `--explain` reports it; the bench compares it with whole-process CPU.
//!
//! Thread CPU time is read at the edges of each synchronous segment (no
//! `.await` inside a segment, so a segment never changes thread). It is only
//! read when the request asked to explain, so the common path pays nothing.

use std::future::Future;
use std::time::Duration;

use nix::time::{ClockId, clock_gettime};

use crate::{Stage, pb};

fn thread_cpu() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

/// Measures one call's own CPU time.
#[derive(Debug)]
pub struct SelfTimer {
    /// Whether to measure at all (the request asked to explain).
    on: bool,
    /// Thread CPU time when the current segment started.
    segment: Duration,
    /// CPU time of the finished segments.
    own: Duration,
}

impl SelfTimer {
    /// Starts timing a call if `explain` is set.
    pub fn start(explain: bool) -> Self {
        Self {
            on: explain,
            segment: if explain {
                thread_cpu()
            } else {
                Duration::ZERO
            },
            own: Duration::ZERO,
        }
    }

    /// Awaits a downstream call; its time does not count as own time.
    pub async fn downstream<F: Future>(&mut self, call: F) -> F::Output {
        if self.on {
            self.own += thread_cpu().saturating_sub(self.segment);
        }
        let out = call.await;
        if self.on {
            self.segment = thread_cpu();
        }
        out
    }

    /// Own CPU time so far (zero when not measuring).
    pub fn own(&self) -> Duration {
        if self.on {
            self.own + thread_cpu().saturating_sub(self.segment)
        } else {
            Duration::ZERO
        }
    }

    /// Appends `stage`'s own time to `timings` when measuring.
    pub fn record(&self, stage: Stage, timings: &mut Vec<pb::StageTiming>) {
        if self.on {
            timings.push(pb::StageTiming {
                stage: stage.name().to_owned(),
                self_us: u64::try_from(self.own().as_micros()).unwrap_or(u64::MAX),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(d: Duration) {
        let start = thread_cpu();
        while thread_cpu().saturating_sub(start) < d {
            std::hint::black_box(0u64);
        }
    }

    #[tokio::test]
    async fn downstream_time_is_excluded() {
        let mut timer = SelfTimer::start(true);
        spin(Duration::from_millis(5));
        timer
            .downstream(async { spin(Duration::from_millis(30)) })
            .await;
        // 5 ms of own CPU counted, the 30 ms downstream not.
        let own = timer.own();
        assert!(
            own >= Duration::from_millis(5) && own < Duration::from_millis(30),
            "{own:?}"
        );
        let mut timings = Vec::new();
        timer.record(Stage::Split, &mut timings);
        assert_eq!(timings[0].stage, "split");
    }

    #[test]
    fn off_when_not_explaining() {
        let timer = SelfTimer::start(false);
        let mut timings = Vec::new();
        timer.record(Stage::Split, &mut timings);
        assert!(timings.is_empty());
        assert_eq!(timer.own(), Duration::ZERO);
    }
}
