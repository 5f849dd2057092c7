//! How the replica loop exchanges protocol messages with its peers.
//!
//! The loop calls [`Net::send`] for every `Send` command of a pass, [`Net::flush`] once at the
//! end of the pass (so messages to one peer leave as one write), and [`Net::drain`] at the start
//! of the next pass to collect what arrived. A backend that receives on other threads notifies
//! the loop's [`crate::runtime::Signal`] (given at construction) so a parked loop wakes.
//!
//! Delivery is best effort, as the protocol core expects: a message to an unreachable peer is
//! dropped, and the core's timers resend what matters. Tests drop messages on purpose through
//! [`fault::FaultNet`], a wrapper around any backend that the replica installs only when its
//! configuration names a fault file.

pub mod fault;
mod link;
pub mod local;
#[cfg(feature = "rdma")]
pub mod rdma;
pub mod shm;
pub mod tcp;

use keel_core::Message;
use keel_core::ReplicaId;

/// A message transport as the replica loop sees it.
pub trait Net: Send {
    /// Queues `msg` for `to` (dropped if `to` is unknown or unreachable).
    fn send(&mut self, to: ReplicaId, msg: Message);
    /// Pushes queued messages out; called once at the end of every loop pass.
    fn flush(&mut self);
    /// Moves every message that arrived into `out`, as `(sender, message)`.
    fn drain(&mut self, out: &mut Vec<(ReplicaId, Message)>);
    /// Stops background threads; called once when the replica stops.
    fn close(&mut self) {}
}
