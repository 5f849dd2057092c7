//! Message streams: opaque byte messages, in order, each delivered at most once.
//!
//! [`MessageSender`] and [`MessageReceiver`] are what the replica runtime sends protocol
//! messages through. The TCP transport implements them ([`crate::tcp`]), and so does every
//! ring ([`RingWriter`]/[`RingReader`] over any backend: shared memory, RDMA), carrying each
//! message as one frame with ballot and slot 0.
//!
//! # Contract (checked by [`crate::conformance::messages`])
//! - Messages arrive in the order they were sent, each at most once, unchanged.
//! - Nothing is lost while the link stays up. A sender that cannot send within its timeout
//!   (the receiver is slow) returns an error; it never drops a message silently.
//! - A link that reconnects (TCP) may lose the messages in flight when it broke, never
//!   duplicates one, and keeps the order of the rest.
#![forbid(unsafe_code)]

use crate::ring::{AppendError, ReadError, RingReader, RingSink, RingSource, RingWriter};
use std::time::{Duration, Instant};

/// The sending end of a message stream.
pub trait MessageSender {
    /// Why a send failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Largest message accepted.
    fn max_message(&self) -> usize;

    /// Sends one message, waiting at most about `timeout` for the receiver to make room
    /// (flow control). Messages longer than [`Self::max_message`] are refused.
    fn send(&mut self, message: &[u8], timeout: Duration) -> Result<(), Self::Error>;
}

/// The receiving end of a message stream.
pub trait MessageReceiver {
    /// Why a receive failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Waits at most about `timeout` for the next message and calls `f` with it (the bytes
    /// are borrowed from the transport's buffer). `Ok(None)`: nothing arrived in time.
    fn recv_with<T>(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<Option<T>, Self::Error>;
}

/// Spins, then yields, then sleeps: a bounded busy-poll that does not starve the machine.
#[derive(Debug)]
pub(crate) struct Backoff {
    round: u32,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff { round: 0 }
    }

    pub(crate) fn wait(&mut self) {
        self.round = self.round.saturating_add(1);
        if self.round < 1024 {
            std::hint::spin_loop();
        } else if self.round < 1024 + 256 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

impl<S: RingSink> MessageSender for RingWriter<S> {
    type Error = AppendError;

    fn max_message(&self) -> usize {
        self.config().max_payload
    }

    fn send(&mut self, message: &[u8], timeout: Duration) -> Result<(), AppendError> {
        let start = Instant::now();
        let mut backoff = Backoff::new();
        loop {
            match RingWriter::send(self, 0, 0, message) {
                Ok(_) => return Ok(()),
                Err(AppendError::Full { .. }) if start.elapsed() < timeout => backoff.wait(),
                Err(e) => return Err(e),
            }
        }
    }
}

impl<R: RingSource> MessageReceiver for RingReader<R> {
    type Error = ReadError;

    fn recv_with<T>(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<Option<T>, ReadError> {
        let start = Instant::now();
        let mut backoff = Backoff::new();
        let mut f = Some(f);
        loop {
            let mut out = None;
            self.poll(1, |frame| {
                if let Some(f) = f.take() {
                    out = Some(f(frame.payload));
                }
            })?;
            if out.is_some() || start.elapsed() >= timeout {
                return Ok(out);
            }
            backoff.wait();
        }
    }
}
