//! Thread-per-core machinery: pinned loop threads, bounded spin-then-park idling, wake-ups, and
//! panic capture.
//!
//! Each runtime thread runs inside [`spawn_loop`]: it is pinned to its configured core, and its
//! body runs under `catch_unwind`. A panic is recorded as a [`Failure`] (thread, replica, what the
//! loop was doing, the message, where it was raised, a backtrace) in the replica's [`Health`],
//! which every handle call checks; the other threads see the stop flag and wind down, and every
//! request still queued is answered with [`crate::Error::Failed`].
//!
//! An idle loop first busy-polls for a bounded time (`runtime.spin_us`), pacing itself with
//! `crossbeam_utils::Backoff` (spin, then `yield_now` so loops sharing a core let each other
//! run), then parks until it is notified ([`Signal::notify`]) or its next deadline (the next
//! protocol tick) passes. It parks on its thread, or on the transport's [`Parker`] when there
//! is one (the `shm` transport's doorbell, which writers in other processes ring).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;

/// A panic caught in one of a replica's runtime threads.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The replica whose thread panicked.
    pub replica: u64,
    /// The thread's name (`keel-loop-1`, `keel-persist-1`).
    pub thread: String,
    /// What the loop was doing when it panicked.
    pub doing: &'static str,
    /// The panic message.
    pub message: String,
    /// Where the panic was raised (`file:line:column`), if known.
    pub location: Option<String>,
    /// The backtrace captured when the panic was raised.
    pub backtrace: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "replica {} thread {} panicked while {}: {}",
            self.replica, self.thread, self.doing, self.message
        )?;
        if let Some(location) = &self.location {
            write!(f, " at {location}")?;
        }
        Ok(())
    }
}

/// Shared liveness of one replica: the first failure, and the stop flag every thread watches.
#[derive(Debug, Default)]
pub struct Health {
    failure: OnceLock<Arc<Failure>>,
    stop: AtomicBool,
    signals: Mutex<Vec<Arc<Signal>>>,
}

impl Health {
    /// The first failure, if a thread failed.
    pub fn failure(&self) -> Option<Arc<Failure>> {
        self.failure.get().cloned()
    }

    /// True once the replica is stopping (shut down or failed).
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Asks every thread to stop and wakes them.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        for s in self
            .signals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            s.notify();
        }
    }

    /// Records a failure (the first one wins) and stops the replica.
    pub fn fail(&self, failure: Failure) {
        let _ = self.failure.set(Arc::new(failure));
        self.stop();
    }

    /// Registers a signal to be notified on stop.
    pub fn watch(&self, signal: Arc<Signal>) {
        self.signals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(signal);
    }
}

/// Where a loop can sleep instead of its thread's own parker, so that wakers in other
/// processes reach it: the `shm` transport's doorbell (a futex word in a shared file).
///
/// Contract: [`Parker::park`] announces the sleep, then calls `ready` and returns at once if it
/// says there is work; [`Parker::wake`], called after the waker made work visible, wakes a
/// sleeper that announced itself, and costs no syscall otherwise. Together they never lose a
/// wake-up (see `keel_transport::shm::Doorbell`).
pub trait Parker: Send + Sync {
    /// Wakes the loop if it is sleeping in [`Parker::park`].
    fn wake(&self);
    /// Sleeps for at most `timeout`, unless `ready()` (checked after announcing the sleep)
    /// finds work.
    fn park(&self, timeout: Duration, ready: &dyn Fn() -> bool);
}

/// Wakes a parked loop. Cheap when the loop is awake (one atomic swap).
#[derive(Default)]
pub struct Signal {
    notified: AtomicBool,
    thread: OnceLock<Thread>,
    parker: OnceLock<Arc<dyn Parker>>,
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signal")
            .field("notified", &self.notified)
            .field("parker", &self.parker.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Signal {
    /// A signal not yet bound to a thread.
    pub fn new() -> Arc<Signal> {
        Arc::new(Signal::default())
    }

    /// Binds the signal to the calling thread (the loop that parks on it).
    pub fn bind_current(&self) {
        let _ = self.thread.set(std::thread::current());
    }

    /// Makes the loop sleep on `parker` rather than its thread's parker (set once, by the
    /// transport, before the loop runs; a second call is ignored).
    pub fn set_parker(&self, parker: Arc<dyn Parker>) {
        let _ = self.parker.set(parker);
    }

    /// Wakes the loop if it is parked (or makes its next park return at once).
    pub fn notify(&self) {
        if !self.notified.swap(true, Ordering::SeqCst) {
            if let Some(p) = self.parker.get() {
                p.wake();
            } else if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }

    /// Clears and returns the notified flag.
    pub fn take(&self) -> bool {
        self.notified.swap(false, Ordering::AcqRel)
    }

    /// Parks the calling loop for at most `timeout`, or until notified.
    fn park(&self, timeout: Duration) {
        match self.parker.get() {
            Some(p) => p.park(timeout, &|| self.notified.load(Ordering::SeqCst)),
            None => std::thread::park_timeout(timeout),
        }
    }
}

/// Bounded spin, then park: the idle policy of every loop.
#[derive(Debug)]
pub struct Idle {
    backoff: Backoff,
    spin: Duration,
    idle_since: Option<Instant>,
    /// Times this loop parked (statistics).
    pub parks: u64,
}

impl Idle {
    /// An idle policy that busy-polls for `spin` before parking.
    pub fn new(spin: Duration) -> Idle {
        Idle {
            backoff: Backoff::new(),
            spin,
            idle_since: None,
            parks: 0,
        }
    }

    /// The loop did work this pass: start spinning afresh next time it is idle.
    pub fn busy(&mut self) {
        self.backoff.reset();
        self.idle_since = None;
    }

    /// The loop found nothing to do this pass: spin a little, or park until `signal` is notified
    /// or `deadline` passes.
    pub fn idle(&mut self, signal: &Signal, deadline: Instant) {
        let now = Instant::now();
        let since = *self.idle_since.get_or_insert(now);
        if signal.take() {
            self.busy();
            return;
        }
        if now.duration_since(since) < self.spin && now < deadline {
            // Spins first, then yields: with more loops than cores the yield lets the others run.
            self.backoff.snooze();
            return;
        }
        if now < deadline {
            self.parks += 1;
            signal.park(deadline - now);
        }
        let _ = signal.take();
        self.busy();
    }
}

thread_local! {
    static DOING: Cell<&'static str> = const { Cell::new("starting") };
    static LAST_PANIC: RefCell<Option<(String, Option<String>, String)>> =
        const { RefCell::new(None) };
    static IN_RUNTIME: Cell<bool> = const { Cell::new(false) };
}

/// Records what the current runtime thread is doing, for the failure report if it panics.
pub fn doing(what: &'static str) {
    DOING.with(|d| d.set(what));
}

fn payload_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

fn install_hook() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
            if IN_RUNTIME.with(Cell::get) {
                let message = payload_message(info.payload());
                let location = info.location().map(ToString::to_string);
                let backtrace = std::backtrace::Backtrace::force_capture().to_string();
                LAST_PANIC.with(|p| *p.borrow_mut() = Some((message, location, backtrace)));
            }
            previous(info);
        }));
    });
}

/// Pins the calling thread to `core`; returns false if pinning failed (the thread still runs).
pub fn pin_to_core(core: usize) -> bool {
    core_affinity::set_for_current(core_affinity::CoreId { id: core })
}

/// Runs `body`, catching a panic: the panic is recorded in `health` as a [`Failure`] of
/// `thread` (which stops the replica) and returned.
pub fn guard<R>(
    replica: u64,
    thread: &str,
    health: &Health,
    body: impl FnOnce() -> R,
) -> Result<R, Arc<Failure>> {
    install_hook();
    let was = IN_RUNTIME.with(|r| r.replace(true));
    let result = std::panic::catch_unwind(AssertUnwindSafe(body));
    IN_RUNTIME.with(|r| r.set(was));
    result.map_err(|payload| {
        let (message, location, backtrace) = LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| (payload_message(&*payload), None, String::new()));
        health.fail(Failure {
            replica,
            thread: thread.to_string(),
            doing: DOING.with(Cell::get),
            message,
            location,
            backtrace,
        });
        health
            .failure()
            .unwrap_or_else(|| panic!("failure recorded just above"))
    })
}

/// Spawns a runtime thread named `name`, pinned to `core` if given. `body` runs under
/// [`guard`], so a panic is recorded in `health` (and stops the replica) instead of going
/// unnoticed until join.
pub fn spawn_loop<F>(
    name: String,
    replica: u64,
    core: Option<usize>,
    health: Arc<Health>,
    body: F,
) -> std::io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    install_hook();
    let thread_name = name.clone();
    std::thread::Builder::new().name(name).spawn(move || {
        if let Some(c) = core
            && !pin_to_core(c)
        {
            eprintln!("keel: {thread_name}: could not pin to core {c}; running unpinned");
        }
        let _ = guard(replica, &thread_name, &health, body);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_loop_is_recorded_with_context_and_stops_the_replica() {
        let health = Arc::new(Health::default());
        let h = spawn_loop("keel-test-7".into(), 7, None, Arc::clone(&health), || {
            doing("applying decree 12");
            panic!("boom at slot 12");
        })
        .unwrap();
        h.join().unwrap();
        let f = health.failure().unwrap();
        assert!(health.stopping());
        assert_eq!(f.replica, 7);
        assert_eq!(f.thread, "keel-test-7");
        assert_eq!(f.doing, "applying decree 12");
        assert_eq!(f.message, "boom at slot 12");
        assert!(f.location.as_deref().unwrap().contains("runtime.rs"));
        assert!(f.to_string().contains("boom at slot 12"));
    }

    #[test]
    fn a_clean_exit_records_nothing() {
        let health = Arc::new(Health::default());
        spawn_loop("keel-test-ok".into(), 1, None, Arc::clone(&health), || {})
            .unwrap()
            .join()
            .unwrap();
        assert!(health.failure().is_none());
        assert!(!health.stopping());
    }

    #[test]
    fn notify_wakes_a_parked_loop_before_its_deadline() {
        let signal = Signal::new();
        let health = Arc::new(Health::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let s = Arc::clone(&signal);
        let h = spawn_loop("keel-test-park".into(), 1, None, health, move || {
            s.bind_current();
            tx.send(()).unwrap();
            let mut idle = Idle::new(Duration::from_micros(10));
            let start = Instant::now();
            let deadline = start + Duration::from_secs(30);
            while !s.notified.load(Ordering::Acquire) && start.elapsed() < Duration::from_secs(20) {
                idle.idle(&s, deadline);
                if idle.parks > 0 {
                    break;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(20));
        })
        .unwrap();
        rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        signal.notify();
        h.join().unwrap();
    }
}
