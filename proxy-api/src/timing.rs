//! A stage's own compute for one request: the CPU time of the thread while
//! the stage runs, excluding the time it awaits its downstream stage.
//! `--explain` reports it; the bench compares it with whole-process CPU.
//!
//! The adapters keep it, not stage code: the adapter that runs a stage starts
//! a timer in the stage's context, and every downstream call made with that
//! context pauses it until the answer is back. Thread CPU time is read at the
//! edges of each synchronous segment (no `.await` inside a segment, so a
//! segment never changes thread). Only explained requests pay for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::time::{ClockId, clock_gettime};

/// `segment` of a stopped timer.
const STOPPED: u64 = u64::MAX;

fn thread_cpu_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(0, |t| {
        u64::try_from(Duration::from(t).as_nanos()).unwrap_or(u64::MAX)
    })
}

/// One stage's own CPU time for one call. Shared through the stage's
/// context, hence atomics; only the task running the stage touches it.
#[derive(Debug)]
pub struct SelfTimer {
    /// Thread CPU time (ns) when the current segment started.
    segment: AtomicU64,
    /// CPU time (ns) of the finished segments.
    own: AtomicU64,
    /// Notes the stage left for `explain` (see [`crate::Cx::note`]).
    notes: std::sync::Mutex<Vec<String>>,
}

impl SelfTimer {
    /// Starts timing now.
    pub fn start() -> Self {
        Self {
            segment: AtomicU64::new(thread_cpu_ns()),
            own: AtomicU64::new(0),
            notes: std::sync::Mutex::default(),
        }
    }

    /// Keeps a note for this stage's explain timing.
    pub(crate) fn note(&self, note: String) {
        if let Ok(mut notes) = self.notes.lock() {
            notes.push(note);
        }
    }

    /// The notes kept so far.
    pub(crate) fn take_notes(&self) -> Vec<String> {
        self.notes
            .lock()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_default()
    }

    /// Ends the current segment: a downstream call starts.
    pub fn pause(&self) {
        let spent = thread_cpu_ns().saturating_sub(self.segment.load(Ordering::Relaxed));
        self.own.fetch_add(spent, Ordering::Relaxed);
    }

    /// Starts a new segment: the downstream call is back.
    pub fn resume(&self) {
        self.segment.store(thread_cpu_ns(), Ordering::Relaxed);
    }

    /// Ends the timing for good, on the thread the stage ran on: from then
    /// on [`SelfTimer::own`] gives the same total on any thread (a stage
    /// run on the compute pool is read back on the caller's thread, whose
    /// CPU clock is another one).
    pub fn stop(&self) {
        self.pause();
        self.segment.store(STOPPED, Ordering::Relaxed);
    }

    /// Own CPU time so far, the running segment included (none once
    /// stopped).
    pub fn own(&self) -> Duration {
        let running = match self.segment.load(Ordering::Relaxed) {
            STOPPED => 0,
            start => thread_cpu_ns().saturating_sub(start),
        };
        Duration::from_nanos(self.own.load(Ordering::Relaxed) + running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(d: Duration) {
        let start = thread_cpu_ns();
        while Duration::from_nanos(thread_cpu_ns().saturating_sub(start)) < d {
            std::hint::black_box(0u64);
        }
    }

    #[test]
    fn a_stopped_timer_reads_the_same_on_another_thread() {
        let timer = std::sync::Arc::new(SelfTimer::start());
        spin(Duration::from_millis(5));
        timer.stop();
        let own = timer.own();
        assert!(own >= Duration::from_millis(5), "{own:?}");
        let other = std::sync::Arc::clone(&timer);
        let elsewhere = std::thread::spawn(move || {
            spin(Duration::from_millis(20));
            other.own()
        })
        .join()
        .expect("thread");
        assert_eq!(elsewhere, own, "another thread's CPU clock is not added");
    }

    #[test]
    fn paused_time_is_excluded() {
        let timer = SelfTimer::start();
        spin(Duration::from_millis(5));
        timer.pause();
        spin(Duration::from_millis(30));
        timer.resume();
        // 5 ms of own CPU counted, the 30 ms downstream not.
        let own = timer.own();
        assert!(
            own >= Duration::from_millis(5) && own < Duration::from_millis(30),
            "{own:?}"
        );
    }
}
