//! The load generator shared by `keel-bench local`/`client` and `keel-bench etcd`, so that Keel
//! and its peers are driven by the same load.
//!
//! - **Closed loop**: `clients` threads, each sending its next request when the previous one
//!   completed; latency from send to completion.
//! - **Open loop**: a target rate; request `k` is due at `start + k / rate` and is handed to
//!   client `k mod clients`. Latency is measured from the *intended* send time, so a backlog
//!   shows up as latency instead of being hidden (no coordinated omission). A client that falls
//!   behind sends at once; the report says how many requests went out late.
//!
//! Requests in the warm-up are not recorded. Errors are counted and reported, not retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::progress::{Counter, Progress};
use crate::stats::{Latencies, StatsError};

/// Boxed error of a request.
pub type RequestError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// One client's connection to the system under test. `request` returns when the request is
/// complete (committed, for a write).
pub trait Session: Send {
    /// Sends one request carrying `payload` (the client's `seq`-th) and waits for its answer.
    fn request(&mut self, seq: u64, payload: &[u8]) -> Result<(), RequestError>;
}

/// Opens one session per client.
pub trait Target: Sync {
    /// The session type.
    type Session: Session;
    /// Opens the session of client `client`.
    fn session(&self, client: usize) -> Result<Self::Session, RequestError>;
}

/// Closed or open loop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Each client sends when its previous request completed.
    Closed,
    /// Requests are due at a fixed total rate (per second) across all clients.
    Open {
        /// Requests per second.
        rate_per_s: f64,
    },
}

/// Parameters of a load run.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Concurrent clients.
    pub clients: usize,
    /// Closed or open loop.
    pub mode: Mode,
    /// Request payload in bytes.
    pub payload: usize,
    /// Recorded duration.
    pub duration: Duration,
    /// Unrecorded warm-up before it.
    pub warmup: Duration,
    /// Pin client `i` to core `cores[i % cores.len()]` (empty: no pinning).
    pub pin_cores: Vec<usize>,
    /// No progress line.
    pub quiet: bool,
    /// Label of the progress line.
    pub label: String,
}

/// Errors of the load generator itself.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A histogram failed.
    #[error("latency histogram")]
    Stats(#[from] StatsError),
    /// A client could not open its session.
    #[error("client {client} could not connect")]
    Session {
        /// The client.
        client: usize,
        /// Why.
        #[source]
        source: RequestError,
    },
    /// A client thread panicked.
    #[error("client thread {0} panicked")]
    Panicked(usize),
}

/// What a load run measured.
#[derive(Debug)]
pub struct LoadResult {
    /// Latencies of the recorded, successful requests.
    pub latencies: Latencies,
    /// Recorded wall-clock time.
    pub elapsed: Duration,
    /// Requests that failed during the recorded time.
    pub errors: u64,
    /// The first error message seen, if any.
    pub first_error: Option<String>,
    /// Open loop: recorded requests sent later than 1 ms after their due time.
    pub late: u64,
}

/// The send time of request `k` under an open loop at `rate_per_s`.
pub fn due_time(start: Instant, k: u64, rate_per_s: f64) -> Instant {
    assert!(rate_per_s > 0.0, "an open loop needs a positive rate");
    start + Duration::from_secs_f64(k as f64 / rate_per_s)
}

/// Runs the load against `target`.
pub fn run<T: Target>(target: &T, o: &LoadOptions) -> Result<LoadResult, LoadError> {
    assert!(o.clients >= 1, "at least one client");
    let stop = AtomicBool::new(false);
    let counter: Counter = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let record_from = t0 + o.warmup;
    let record_until = record_from + o.duration;
    let results = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for c in 0..o.clients {
            let stop = &stop;
            let counter = Arc::clone(&counter);
            handles.push(s.spawn(move || -> Result<ClientResult, LoadError> {
                if !o.pin_cores.is_empty() {
                    let id = o.pin_cores[c % o.pin_cores.len()];
                    core_affinity::set_for_current(core_affinity::CoreId { id });
                }
                let mut session = target
                    .session(c)
                    .map_err(|source| LoadError::Session { client: c, source })?;
                client_loop(
                    &mut session,
                    c,
                    o,
                    t0,
                    record_from,
                    record_until,
                    stop,
                    &counter,
                )
            }));
        }
        let progress = {
            std::thread::sleep(record_from.saturating_duration_since(Instant::now()));
            Progress::start(&o.label, Arc::clone(&counter), o.quiet)
        };
        std::thread::sleep(record_until.saturating_duration_since(Instant::now()));
        stop.store(true, Ordering::Relaxed);
        drop(progress);
        handles
            .into_iter()
            .enumerate()
            .map(|(i, h)| h.join().map_err(|_| LoadError::Panicked(i))?)
            .collect::<Vec<_>>()
    });
    let mut latencies = Latencies::new()?;
    let mut errors = 0;
    let mut late = 0;
    let mut first_error = None;
    for r in results {
        let r = r?;
        latencies.merge(&r.latencies)?;
        errors += r.errors;
        late += r.late;
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    Ok(LoadResult {
        latencies,
        elapsed: o.duration,
        errors,
        first_error,
        late,
    })
}

struct ClientResult {
    latencies: Latencies,
    errors: u64,
    first_error: Option<String>,
    late: u64,
}

#[allow(clippy::too_many_arguments)]
fn client_loop<S: Session>(
    session: &mut S,
    c: usize,
    o: &LoadOptions,
    t0: Instant,
    record_from: Instant,
    record_until: Instant,
    stop: &AtomicBool,
    counter: &AtomicU64,
) -> Result<ClientResult, LoadError> {
    let mut r = ClientResult {
        latencies: Latencies::new()?,
        errors: 0,
        first_error: None,
        late: 0,
    };
    let mut payload = vec![0u8; o.payload];
    let mut seq = 0u64;
    // Open loop: this client owns requests c, c + clients, c + 2 clients, ...
    let mut k = c as u64;
    while !stop.load(Ordering::Relaxed) {
        let intended = match o.mode {
            Mode::Closed => Instant::now(),
            Mode::Open { rate_per_s } => {
                let due = due_time(t0, k, rate_per_s);
                k += o.clients as u64;
                let now = Instant::now();
                if due > now {
                    // Sleep most of the wait, spin the last 50 us for precision.
                    let wait = due - now;
                    if wait > Duration::from_micros(100) {
                        std::thread::sleep(wait - Duration::from_micros(50));
                    }
                    while Instant::now() < due {
                        std::hint::spin_loop();
                    }
                }
                due
            }
        };
        if intended >= record_until {
            break;
        }
        let sent = Instant::now();
        // Vary the payload so no layer can dedupe it.
        if let Some(first) = payload.first_mut() {
            *first = seq as u8;
        }
        let outcome = session.request(seq, &payload);
        let done = Instant::now();
        seq += 1;
        if intended < record_from {
            continue;
        }
        match outcome {
            Ok(()) => {
                r.latencies.record(done.duration_since(intended));
                counter.fetch_add(1, Ordering::Relaxed);
                if sent.duration_since(intended) > Duration::from_millis(1) {
                    r.late += 1;
                }
            }
            Err(e) => {
                r.errors += 1;
                if r.first_error.is_none() {
                    r.first_error = Some(e.to_string());
                }
            }
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A target whose requests take a fixed time.
    struct Sleepy(Duration);
    struct SleepySession(Duration);
    impl Session for SleepySession {
        fn request(&mut self, _seq: u64, _payload: &[u8]) -> Result<(), RequestError> {
            std::thread::sleep(self.0);
            Ok(())
        }
    }
    impl Target for Sleepy {
        type Session = SleepySession;
        fn session(&self, _client: usize) -> Result<SleepySession, RequestError> {
            Ok(SleepySession(self.0))
        }
    }

    #[test]
    fn open_loop_due_times_are_evenly_spaced() {
        let start = Instant::now();
        assert_eq!(due_time(start, 0, 1000.0), start);
        assert_eq!(due_time(start, 5, 1000.0), start + Duration::from_millis(5));
        assert_eq!(due_time(start, 3, 2.0), start + Duration::from_millis(1500));
    }

    #[test]
    fn an_overloaded_open_loop_counts_queueing_in_latency() {
        // One client, 10 ms requests, due every 1 ms: each request starts later than the last,
        // so latency from the intended time grows far past the 10 ms service time.
        let o = LoadOptions {
            clients: 1,
            mode: Mode::Open { rate_per_s: 1000.0 },
            payload: 8,
            duration: Duration::from_millis(200),
            warmup: Duration::ZERO,
            pin_cores: vec![],
            quiet: true,
            label: "t".into(),
        };
        let r = run(&Sleepy(Duration::from_millis(10)), &o).unwrap();
        let s = r.latencies.summary(r.elapsed);
        assert!(r.late > 0);
        assert!(
            s.max_ns > 100e6,
            "max {} ns should include queueing",
            s.max_ns
        );
        assert_eq!(r.errors, 0);
    }

    #[test]
    fn closed_loop_latency_is_the_service_time() {
        let o = LoadOptions {
            clients: 2,
            mode: Mode::Closed,
            payload: 8,
            duration: Duration::from_millis(100),
            warmup: Duration::from_millis(10),
            pin_cores: vec![],
            quiet: true,
            label: "t".into(),
        };
        let r = run(&Sleepy(Duration::from_millis(5)), &o).unwrap();
        let s = r.latencies.summary(r.elapsed);
        assert!(s.count >= 1, "{}", s.count);
        assert!(s.p50_ns >= 5e6 && s.p50_ns < 1e9, "{}", s.p50_ns);
        assert_eq!(r.late, 0);
    }
}
