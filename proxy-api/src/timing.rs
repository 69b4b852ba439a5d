//! A stage's own time for one request: the wall time of its call minus the
//! time it spent awaiting its downstream stage. `--explain` reports it.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::{Stage, pb};

/// Measures one call's own time.
#[derive(Debug)]
pub struct SelfTimer {
    /// When the call started.
    started: Instant,
    /// Time spent awaiting downstream calls so far.
    downstream: Duration,
}

impl SelfTimer {
    /// Starts timing a call.
    pub fn start() -> Self {
        Self {
            started: Instant::now(),
            downstream: Duration::ZERO,
        }
    }

    /// Awaits a downstream call; its duration does not count as own time.
    pub async fn downstream<F: Future>(&mut self, call: F) -> F::Output {
        let at = Instant::now();
        let out = call.await;
        self.downstream += at.elapsed();
        out
    }

    /// Own time so far.
    pub fn own(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.downstream)
    }

    /// Appends `stage`'s own time to `timings` when the request asked to explain.
    pub fn record(&self, stage: Stage, explain: bool, timings: &mut Vec<pb::StageTiming>) {
        if explain {
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

    #[tokio::test]
    async fn downstream_time_is_excluded() {
        let mut timer = SelfTimer::start();
        timer
            .downstream(tokio::time::sleep(Duration::from_millis(30)))
            .await;
        // The sleep took at least 30 ms and none of it is own time.
        assert!(timer.own() + Duration::from_millis(30) <= timer.started.elapsed());
        let mut timings = Vec::new();
        timer.record(Stage::Split, false, &mut timings);
        assert!(timings.is_empty());
        timer.record(Stage::Split, true, &mut timings);
        assert_eq!(timings[0].stage, "split");
    }
}
