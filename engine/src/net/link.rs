//! What the TCP and RDMA transports share (they differ only in how bytes move): the handoff of
//! a freshly dialed connection to the loop, the dialer thread that (re)connects, and the
//! receiving side of an inbound connection, which decodes frames into the loop's inbox.
//!
//! A receiver decodes with [`decode_message_reusing`] and its own [`DecodeSpares`], so in
//! steady state it allocates neither an accept's entry list nor its batch nor the copy of
//! the message bytes the requests share (all are refilled once the replica let go of the
//! earlier ones), and it gathers a read's messages in a batch that keeps its capacity and
//! reaches the inbox under one lock. `engine/tests/hot_path_allocations.rs` measures it over
//! TCP; the RDMA transport runs the same code in the soft-RoCE VM.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keel_core::codec::{DecodeError, DecodeSpares, decode_message_reusing};
use keel_core::{Message, ReplicaId};

use crate::runtime::{Health, Signal};

/// Messages that receiver threads decoded, waiting for the loop's [`drain`].
pub(crate) type Inbox = Arc<Mutex<Vec<(ReplicaId, Message)>>>;

/// Moves every message in `inbox` into `out` (the inbox keeps its capacity).
pub(crate) fn drain(inbox: &Inbox, out: &mut Vec<(ReplicaId, Message)>) {
    out.append(&mut inbox.lock().unwrap_or_else(PoisonError::into_inner));
}

/// A dialed connection on its way from the dialer thread to the loop.
pub(crate) struct Handoff<T> {
    /// A fresh connection waiting for the loop to take it.
    ready: Mutex<Option<T>>,
    /// The loop holds (or is about to take) a live connection: the dialer idles.
    connected: AtomicBool,
}

impl<T> Default for Handoff<T> {
    fn default() -> Handoff<T> {
        Handoff {
            ready: Mutex::new(None),
            connected: AtomicBool::new(false),
        }
    }
}

impl<T> Handoff<T> {
    /// The connection the dialer handed over, if one waits.
    pub(crate) fn take(&self) -> Option<T> {
        self.ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The loop dropped its connection: the dialer connects again.
    pub(crate) fn disconnected(&self) {
        self.connected.store(false, Ordering::Release);
    }

    fn idle(&self) -> bool {
        self.connected.load(Ordering::Acquire)
            || self
                .ready
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some()
    }
}

/// A dialer thread's body: while the replica runs and the loop holds no connection, calls
/// `dial` (with backoff between failures, 10 to 200 ms) and hands what it returns to the loop,
/// waking it.
pub(crate) fn redial<T, E>(
    handoff: &Handoff<T>,
    signal: &Signal,
    health: &Health,
    mut dial: impl FnMut() -> Result<T, E>,
) {
    const BACKOFF_MIN: Duration = Duration::from_millis(10);
    const BACKOFF_MAX: Duration = Duration::from_millis(200);
    let mut backoff = BACKOFF_MIN;
    while !health.stopping() {
        if handoff.idle() {
            std::thread::sleep(BACKOFF_MIN);
            continue;
        }
        match dial() {
            Ok(connection) => {
                backoff = BACKOFF_MIN;
                handoff.connected.store(true, Ordering::Release);
                *handoff.ready.lock().unwrap_or_else(PoisonError::into_inner) = Some(connection);
                signal.notify();
            }
            Err(_) => {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// The receiving side of one inbound connection: decodes its frames into spares it reuses and
/// delivers them to the loop's inbox.
pub(crate) struct Receiver<'a> {
    inbox: &'a Inbox,
    signal: &'a Signal,
    /// Lists, batches and message buffers of earlier messages, refilled once the replica let
    /// go of them.
    spares: DecodeSpares,
    /// Messages decoded since the last delivery (keeps its capacity).
    batch: Vec<(ReplicaId, Message)>,
}

impl<'a> Receiver<'a> {
    /// A receiver delivering to `inbox` and waking the loop through `signal`.
    pub(crate) fn new(inbox: &'a Inbox, signal: &'a Signal) -> Receiver<'a> {
        Receiver {
            inbox,
            signal,
            spares: DecodeSpares::default(),
            batch: Vec::new(),
        }
    }

    /// Decodes one message `from` sent (a whole frame's payload) and keeps it for
    /// [`Receiver::deliver`].
    pub(crate) fn decode(&mut self, from: ReplicaId, payload: &[u8]) -> Result<(), DecodeError> {
        let msg = decode_message_reusing(payload, &mut self.spares)?;
        self.batch.push((from, msg));
        Ok(())
    }

    /// Hands every message decoded since the last call to the loop and wakes it (nothing if
    /// there is none).
    pub(crate) fn deliver(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        self.inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .append(&mut self.batch);
        self.signal.notify();
        debug_assert!(self.batch.is_empty(), "every decoded message was delivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::codec::encode_message;

    #[test]
    fn a_receiver_delivers_decoded_messages_in_order_under_one_wake() {
        let inbox: Inbox = Arc::default();
        let signal = Signal::new();
        let mut rx = Receiver::new(&inbox, &signal);
        let msgs = [
            Message::PreVote {
                ballot: keel_core::Ballot::new(3, ReplicaId(2)),
                commit: 7,
            },
            Message::PreVoteReply {
                ballot: keel_core::Ballot::new(3, ReplicaId(2)),
                granted: true,
            },
        ];
        let mut bytes = Vec::new();
        for m in &msgs {
            bytes.clear();
            encode_message(m, &mut bytes);
            rx.decode(ReplicaId(2), &bytes).unwrap();
        }
        assert!(inbox.lock().unwrap().is_empty(), "nothing before deliver");
        assert!(rx.decode(ReplicaId(2), &[0xff, 1, 2]).is_err());
        rx.deliver();
        let mut out = Vec::new();
        drain(&inbox, &mut out);
        let expected: Vec<_> = msgs.iter().map(|m| (ReplicaId(2), m.clone())).collect();
        assert_eq!(out, expected);
        rx.deliver();
        drain(&inbox, &mut out);
        assert_eq!(out.len(), 2, "an empty deliver adds nothing");
    }

    #[test]
    fn a_handoff_idles_the_dialer_until_the_loop_disconnects() {
        let h: Handoff<u32> = Handoff::default();
        assert!(!h.idle());
        let health = Health::default();
        let signal = Signal::new();
        let mut calls = 0;
        // A dial, then the dialer idles until the loop drops the connection, then dials again.
        std::thread::scope(|s| {
            s.spawn(|| {
                redial(&h, &signal, &health, || {
                    calls += 1;
                    Ok::<u32, ()>(calls)
                })
            });
            let taken = || {
                let start = std::time::Instant::now();
                loop {
                    if let Some(c) = h.take() {
                        break c;
                    }
                    assert!(start.elapsed() < Duration::from_secs(10), "no dial");
                    std::thread::sleep(Duration::from_millis(1));
                }
            };
            assert_eq!(taken(), 1);
            assert!(h.idle(), "connected: the dialer waits");
            std::thread::sleep(Duration::from_millis(30));
            assert!(h.take().is_none(), "no second dial while connected");
            h.disconnected();
            assert_eq!(taken(), 2);
            health.stop();
        });
    }
}
