//! The progress line printed to stderr once a second while a measurement runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A shared operation counter the measured threads bump and the progress line reads.
pub type Counter = Arc<AtomicU64>;

/// A running progress line; stops (and prints nothing more) when dropped.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts printing `label: <elapsed>s, <n> ops, <rate> ops/s (last second)` to stderr every
    /// second, reading `counter`. `quiet` turns it off (tests, scripts).
    pub fn start(label: &str, counter: Counter, quiet: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        if quiet {
            return Self { stop, thread: None };
        }
        let label = label.to_string();
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut last = counter.load(Ordering::Relaxed);
            let mut next = start + Duration::from_secs(1);
            while !stop2.load(Ordering::Relaxed) {
                // Sleep in short steps so that drop does not wait a whole second.
                std::thread::sleep(Duration::from_millis(50));
                let now = Instant::now();
                if now < next {
                    continue;
                }
                next += Duration::from_secs(1);
                let n = counter.load(Ordering::Relaxed);
                eprintln!(
                    "  {label}: {:.0}s, {n} ops, {} ops/s",
                    now.duration_since(start).as_secs_f64(),
                    crate::report::fmt_rate((n - last) as f64)
                );
                last = n;
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // A panic in the progress thread only loses progress lines.
            let _ = t.join();
        }
    }
}
