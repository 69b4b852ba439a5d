//! Progress of long work (generating, building, loading): `done/total` and an
//! ETA on a terminal, a log line at intervals otherwise.
//!
//! Cheap enough for inner loops: [`Progress::add`] is one atomic add, and
//! only every 4,096th unit of work reads the clock.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often a terminal line is redrawn.
const TTY_EVERY: Duration = Duration::from_millis(200);
/// How often a log line is written when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// One piece of long work being counted.
pub struct Progress {
    what: String,
    total: u64,
    done: AtomicU64,
    started: Instant,
    tty: bool,
    /// When the last report was made.
    last: Mutex<Instant>,
}

impl Progress {
    /// Starts counting `total` units of `what` (for example "world: items").
    pub fn new(what: impl Into<String>, total: u64) -> Self {
        let now = Instant::now();
        Self {
            what: what.into(),
            total: total.max(1),
            done: AtomicU64::new(0),
            started: now,
            tty: std::io::stderr().is_terminal(),
            last: Mutex::new(now),
        }
    }

    /// `n` more units are done; reports when it is time to.
    pub fn add(&self, n: u64) {
        let before = self.done.fetch_add(n, Ordering::Relaxed);
        if (before + n) >> 12 != before >> 12 {
            self.maybe_report();
        }
    }

    fn maybe_report(&self) {
        let every = if self.tty { TTY_EVERY } else { LOG_EVERY };
        let Ok(mut last) = self.last.try_lock() else {
            return;
        };
        if last.elapsed() < every {
            return;
        }
        *last = Instant::now();
        self.report(false);
    }

    fn report(&self, finished: bool) {
        let done = self.done.load(Ordering::Relaxed).min(self.total);
        let elapsed = self.started.elapsed().as_secs_f64();
        let pct = done as f64 * 100.0 / self.total as f64;
        let eta = if done > 0 && !finished {
            elapsed * (self.total - done) as f64 / done as f64
        } else {
            0.0
        };
        if self.tty {
            let mut err = std::io::stderr().lock();
            let end = if finished { "\n" } else { "" };
            let _ = write!(
                err,
                "\r{}: {done}/{} ({pct:.0}%), {elapsed:.1} s, ETA {eta:.0} s   {end}",
                self.what, self.total
            );
            let _ = err.flush();
        } else if finished {
            tracing::info!(
                what = %self.what,
                total = self.total,
                seconds = format!("{elapsed:.1}"),
                "done"
            );
        } else {
            tracing::info!(
                what = %self.what,
                done,
                total = self.total,
                percent = format!("{pct:.0}"),
                eta_seconds = format!("{eta:.0}"),
                "progress"
            );
        }
    }

    /// Marks the work finished and reports it, with the time it took.
    pub fn finish(self) {
        self.done.store(self.total, Ordering::Relaxed);
        self.report(true);
    }
}
