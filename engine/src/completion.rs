//! One-shot completions: the answer to a proposal, a read, or an administrative request.
//!
//! A [`Completion`] is the caller's end; the runtime holds the matching [`Completer`]. The caller
//! may block on it ([`Completion::wait`], [`Completion::wait_timeout`]), poll it
//! ([`Completion::try_take`]), register a callback ([`Completion::on_complete`]) or `.await` it
//! (it implements [`std::future::Future`], so any executor works; none is required).
//!
//! A channel that may never be answered carries a `Result`: dropping a [`Completer`] without
//! answering completes the caller's end with [`Error::Dropped`], so no caller waits forever when
//! the replica stops or a request is lost.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::Error;

type Callback<T> = Box<dyn FnOnce(Result<T, Error>) + Send + 'static>;

enum State<T> {
    /// Not answered yet; maybe a callback or an async waker is registered.
    Pending {
        callback: Option<Callback<T>>,
        waker: Option<Waker>,
    },
    /// Answered; the value waits to be taken.
    Ready(Result<T, Error>),
    /// The value was handed to the caller (or to its callback).
    Taken,
}

struct Slot<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    /// Ends of the current pair not yet let go (2, then 1, then 0). The end that brings it to
    /// 0 recycles the slot, whichever order the two threads drop their `Arc`s in (a count of
    /// `Arc` owners cannot tell: both ends may see the other's clone still alive).
    ends: AtomicUsize,
    /// Where the slot goes back once both ends are gone (none: freed).
    pool: Weak<Pool<T>>,
}

impl<T> Slot<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A poisoned lock only means a callback panicked elsewhere; the state itself is whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Creates a connected pair: the runtime answers through the [`Completer`], the caller reads the
/// [`Completion`].
pub fn pair<T>() -> (Completer<T>, Completion<T>) {
    ends(new_slot(Weak::new()))
}

fn new_slot<T>(pool: Weak<Pool<T>>) -> Arc<Slot<T>> {
    Arc::new(Slot {
        state: Mutex::new(State::Pending {
            callback: None,
            waker: None,
        }),
        ready: Condvar::new(),
        ends: AtomicUsize::new(2),
        pool,
    })
}

fn ends<T>(slot: Arc<Slot<T>>) -> (Completer<T>, Completion<T>) {
    // A fresh slot, or one both ends of its last pair let go of: nobody else reads `ends`.
    slot.ends.store(2, Ordering::Release);
    (
        Completer {
            slot: Some(Arc::clone(&slot)),
        },
        Completion { slot: Some(slot) },
    )
}

/// Recycles the shared state of completed pairs, so a steady stream of requests (the
/// replica's proposals) allocates none once the pool is warm.
///
/// A pair from [`Pool::pair`] works exactly like one from [`pair`]. When the last of its two
/// ends is dropped (the caller's [`Completion`] after it took the answer, or the [`Completer`]
/// after it answered), the end that finds itself the only owner resets the state and puts it
/// on the free list (up to the pool's bound; beyond it the state is freed).
pub struct Pool<T> {
    free: Mutex<Vec<Arc<Slot<T>>>>,
    max_free: usize,
}

impl<T> fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("free", &self.free_count())
            .field("max_free", &self.max_free)
            .finish()
    }
}

impl<T> Pool<T> {
    /// A pool keeping at most `max_free` idle states.
    pub fn new(max_free: usize) -> Arc<Pool<T>> {
        Arc::new(Pool {
            free: Mutex::new(Vec::new()),
            max_free,
        })
    }

    /// A connected pair whose state comes from the free list (allocated when it is empty).
    pub fn pair(self: &Arc<Self>) -> (Completer<T>, Completion<T>) {
        let recycled = self.lock().pop();
        ends(recycled.unwrap_or_else(|| new_slot(Arc::downgrade(self))))
    }

    /// Idle states on the free list.
    pub fn free_count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Slot<T>>>> {
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Called by each end as it lets go of `slot`: the last owner returns it to its pool.
fn recycle<T>(slot: Arc<Slot<T>>) {
    // The other end, if it let go first, touches the slot no more after its decrement (it only
    // drops its `Arc`), so the last end may reset and reuse it at once.
    if slot.ends.fetch_sub(1, Ordering::AcqRel) != 1 {
        return;
    }
    let Some(pool) = slot.pool.upgrade() else {
        return;
    };
    *slot.lock() = State::Pending {
        callback: None,
        waker: None,
    };
    let mut free = pool.lock();
    if free.len() < pool.max_free {
        free.push(slot);
    }
}

/// The caller's end of a one-shot answer. See the [module docs](self).
#[must_use = "a completion does nothing unless waited on, polled or given a callback"]
pub struct Completion<T> {
    /// Always `Some` until dropped (taken by `Drop` to recycle it).
    slot: Option<Arc<Slot<T>>>,
}

impl<T> Drop for Completion<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            recycle(slot);
        }
    }
}

impl<T> fmt::Debug for Completion<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*self.shared().lock() {
            State::Pending { .. } => "pending",
            State::Ready(_) => "ready",
            State::Taken => "taken",
        };
        f.debug_struct("Completion").field("state", &state).finish()
    }
}

impl<T> Completion<T> {
    fn shared(&self) -> &Slot<T> {
        match &self.slot {
            Some(slot) => slot,
            None => panic!("a Completion's state is only taken by its Drop"),
        }
    }

    /// A completion that is already answered (used when a request fails before it is queued).
    pub fn ready(result: Result<T, Error>) -> Self {
        let (completer, completion) = pair();
        completer.complete(result);
        completion
    }

    /// Blocks until the answer arrives and returns it.
    pub fn wait(self) -> Result<T, Error> {
        let mut state = self.shared().lock();
        loop {
            match std::mem::replace(&mut *state, State::Taken) {
                State::Ready(result) => return result,
                State::Taken => return Err(Error::AlreadyTaken),
                pending @ State::Pending { .. } => {
                    *state = pending;
                    state = self
                        .shared()
                        .ready
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }

    /// Blocks for at most `timeout`; returns `None` if the answer has not arrived by then (the
    /// completion stays usable).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Result<T, Error>> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared().lock();
        loop {
            match std::mem::replace(&mut *state, State::Taken) {
                State::Ready(result) => return Some(result),
                State::Taken => return Some(Err(Error::AlreadyTaken)),
                pending @ State::Pending { .. } => {
                    *state = pending;
                    let now = Instant::now();
                    if now >= deadline {
                        return None;
                    }
                    state = self
                        .shared()
                        .ready
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }

    /// Returns the answer if it has arrived, without blocking. After it returned `Some`, later
    /// calls return `Some(Err(Error::AlreadyTaken))`.
    pub fn try_take(&mut self) -> Option<Result<T, Error>> {
        let mut state = self.shared().lock();
        match std::mem::replace(&mut *state, State::Taken) {
            State::Ready(result) => Some(result),
            State::Taken => Some(Err(Error::AlreadyTaken)),
            pending @ State::Pending { .. } => {
                *state = pending;
                None
            }
        }
    }

    /// True once the answer has arrived (and has not been taken).
    pub fn is_ready(&self) -> bool {
        matches!(&*self.shared().lock(), State::Ready(_))
    }

    /// Runs `callback` with the answer: at once on this thread if it has already arrived, else on
    /// the runtime thread that answers (keep it short: it runs inside the replica loop).
    pub fn on_complete<F>(self, callback: F)
    where
        F: FnOnce(Result<T, Error>) + Send + 'static,
    {
        let mut state = self.shared().lock();
        match std::mem::replace(&mut *state, State::Taken) {
            State::Ready(result) => {
                drop(state);
                callback(result);
            }
            State::Taken => {
                drop(state);
                callback(Err(Error::AlreadyTaken));
            }
            State::Pending { waker, .. } => {
                *state = State::Pending {
                    callback: Some(Box::new(callback)),
                    waker,
                };
            }
        }
    }
}

impl<T> Future for Completion<T> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.shared().lock();
        match std::mem::replace(&mut *state, State::Taken) {
            State::Ready(result) => Poll::Ready(result),
            State::Taken => Poll::Ready(Err(Error::AlreadyTaken)),
            State::Pending { callback, .. } => {
                *state = State::Pending {
                    callback,
                    waker: Some(cx.waker().clone()),
                };
                Poll::Pending
            }
        }
    }
}

/// The runtime's end of a one-shot answer. Dropping it unanswered answers [`Error::Dropped`].
pub struct Completer<T> {
    slot: Option<Arc<Slot<T>>>,
}

impl<T> fmt::Debug for Completer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completer")
            .field("answered", &self.slot.is_none())
            .finish()
    }
}

impl<T> Completer<T> {
    /// Answers the request. Runs a registered callback on this thread.
    pub fn complete(mut self, result: Result<T, Error>) {
        self.answer(result);
    }

    /// True when the caller has dropped its [`Completion`] without registering a callback
    /// (nobody will read the answer).
    pub fn is_abandoned(&self) -> bool {
        self.slot.as_ref().is_none_or(|slot| {
            slot.ends.load(Ordering::Acquire) == 1
                && !matches!(
                    &*slot.lock(),
                    State::Pending {
                        callback: Some(_),
                        ..
                    }
                )
        })
    }

    fn answer(&mut self, result: Result<T, Error>) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let mut state = slot.lock();
        match std::mem::replace(&mut *state, State::Taken) {
            State::Pending {
                callback: Some(callback),
                ..
            } => {
                drop(state);
                callback(result);
            }
            State::Pending {
                callback: None,
                waker,
            } => {
                *state = State::Ready(result);
                drop(state);
                slot.ready.notify_all();
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
            State::Ready(_) | State::Taken => {
                panic!("completion answered twice: a Completer is single-use by construction")
            }
        }
        recycle(slot);
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        self.answer(Err(Error::Dropped));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    #[test]
    fn wait_returns_the_answer_given_on_another_thread() {
        let (completer, completion) = pair::<u32>();
        let t = std::thread::spawn(move || completer.complete(Ok(7)));
        assert_eq!(completion.wait().unwrap(), 7);
        t.join().unwrap();
    }

    /// The caller's end and the answering thread let go at the same moment: the state still
    /// comes back to the pool every time (both ends used to see the other's `Arc` alive and
    /// neither recycled it).
    #[test]
    fn a_pool_recycles_when_both_ends_let_go_at_once() {
        let pool = Pool::<u32>::new(4);
        let (to_answerer, completers) = std::sync::mpsc::channel::<Completer<u32>>();
        let (to_caller, answered) = std::sync::mpsc::channel::<()>();
        let answerer = std::thread::spawn(move || {
            for (i, completer) in completers.into_iter().enumerate() {
                completer.complete(Ok(i as u32));
                to_caller.send(()).unwrap();
            }
        });
        let mut lost = 0;
        for i in 0..5_000 {
            let (completer, mut completion) = pool.pair();
            to_answerer.send(completer).unwrap();
            // Spin so the caller lets go while the answerer is still letting go.
            let answer = loop {
                if let Some(a) = completion.try_take() {
                    break a;
                }
                std::hint::spin_loop();
            };
            assert_eq!(answer.unwrap(), i);
            drop(completion);
            answered.recv().unwrap();
            if pool.free_count() != 1 {
                lost += 1;
            }
        }
        drop(to_answerer);
        answerer.join().unwrap();
        assert_eq!(
            lost, 0,
            "the state was not recycled in {lost} of 5000 rounds"
        );
    }

    #[test]
    fn dropping_the_completer_answers_dropped() {
        let (completer, completion) = pair::<u32>();
        drop(completer);
        assert!(matches!(completion.wait(), Err(Error::Dropped)));
    }

    #[test]
    fn try_take_is_none_until_answered_then_once() {
        let (completer, mut completion) = pair::<u32>();
        assert!(completion.try_take().is_none());
        assert!(!completion.is_ready());
        completer.complete(Ok(1));
        assert!(completion.is_ready());
        assert_eq!(completion.try_take().unwrap().unwrap(), 1);
        assert!(matches!(
            completion.try_take(),
            Some(Err(Error::AlreadyTaken))
        ));
    }

    #[test]
    fn wait_timeout_times_out_and_stays_usable() {
        let (completer, mut completion) = pair::<u32>();
        assert!(completion.wait_timeout(Duration::from_millis(5)).is_none());
        completer.complete(Ok(3));
        assert_eq!(
            completion
                .wait_timeout(Duration::from_millis(5))
                .unwrap()
                .unwrap(),
            3
        );
    }

    #[test]
    fn callback_runs_once_whether_registered_before_or_after_the_answer() {
        let hits = Arc::new(AtomicUsize::new(0));
        let (completer, completion) = pair::<u32>();
        let h = Arc::clone(&hits);
        completion.on_complete(move |r| {
            assert_eq!(r.unwrap(), 5);
            h.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        completer.complete(Ok(5));
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        let (completer, completion) = pair::<u32>();
        completer.complete(Ok(5));
        let h = Arc::clone(&hits);
        completion.on_complete(move |r| {
            assert_eq!(r.unwrap(), 5);
            h.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn abandoned_is_seen_by_the_completer() {
        let (completer, completion) = pair::<u32>();
        assert!(!completer.is_abandoned());
        drop(completion);
        assert!(completer.is_abandoned());
        let (completer, completion) = pair::<u32>();
        completion.on_complete(|_| {});
        assert!(
            !completer.is_abandoned(),
            "a callback is waiting for the answer"
        );
    }

    #[test]
    fn a_pool_recycles_the_state_once_both_ends_are_gone() {
        let pool = Pool::<u32>::new(4);
        let (completer, completion) = pool.pair();
        completer.complete(Ok(1));
        assert_eq!(
            pool.free_count(),
            0,
            "the caller's end still holds the state"
        );
        assert_eq!(completion.wait().unwrap(), 1);
        assert_eq!(pool.free_count(), 1);
        // The recycled state starts pending again, whichever end lets go last.
        let (completer, mut completion) = pool.pair();
        assert_eq!(pool.free_count(), 0);
        assert!(completion.try_take().is_none());
        drop(completion);
        assert_eq!(pool.free_count(), 0, "the completer still holds the state");
        completer.complete(Ok(2));
        assert_eq!(pool.free_count(), 1);
        let (completer, completion) = pool.pair();
        let seen = Arc::new(AtomicUsize::new(0));
        let s = Arc::clone(&seen);
        completion.on_complete(move |r| {
            s.store(if r.is_err() { 99 } else { 1 }, Ordering::SeqCst);
        });
        drop(completer);
        assert_eq!(
            seen.load(Ordering::SeqCst),
            99,
            "dropped: the callback saw an error"
        );
        assert_eq!(pool.free_count(), 1);
    }

    #[test]
    fn a_pool_keeps_at_most_its_bound() {
        let pool = Pool::<u32>::new(2);
        let pairs: Vec<_> = (0..5).map(|_| pool.pair()).collect();
        for (completer, completion) in pairs {
            completer.complete(Ok(0));
            completion.wait().unwrap();
        }
        assert_eq!(pool.free_count(), 2);
    }

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn future_is_woken_when_answered() {
        let (completer, mut completion) = pair::<u32>();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut completion).poll(&mut cx).is_pending());
        completer.complete(Ok(9));
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        match Pin::new(&mut completion).poll(&mut cx) {
            Poll::Ready(Ok(9)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}
