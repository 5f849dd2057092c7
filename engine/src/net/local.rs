//! In-process transport: replicas of one process exchange messages through shared queues.
//!
//! Used by in-process clusters (tests, the doctest quick start, `keel demo --transport local`).
//! Links can be cut and healed ([`LocalNetwork::isolate`], [`LocalNetwork::heal`]) to inject
//! partitions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use keel_core::Message;
use keel_core::ReplicaId;

use super::Net;
use crate::runtime::Signal;

struct Inbox {
    queue: Mutex<Vec<(ReplicaId, Message)>>,
    signal: Arc<Signal>,
}

#[derive(Default)]
struct Hub {
    inboxes: BTreeMap<ReplicaId, Arc<Inbox>>,
    /// Replicas cut off from every other replica.
    isolated: BTreeSet<ReplicaId>,
}

/// A set of in-process replicas that can reach each other. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct LocalNetwork {
    hub: Arc<Mutex<Hub>>,
}

impl std::fmt::Debug for LocalNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hub = self.lock();
        f.debug_struct("LocalNetwork")
            .field("replicas", &hub.inboxes.keys().collect::<Vec<_>>())
            .field("isolated", &hub.isolated)
            .finish()
    }
}

impl LocalNetwork {
    /// An empty network.
    pub fn new() -> LocalNetwork {
        LocalNetwork::default()
    }

    fn lock(&self) -> MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Cuts every link to and from replica `id` (messages are dropped) until [`heal`].
    ///
    /// [`heal`]: LocalNetwork::heal
    pub fn isolate(&self, id: u64) {
        self.lock().isolated.insert(ReplicaId(id));
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().isolated.clear();
    }

    /// Joins replica `id`; returns its endpoint. A replica restarting in the same process gets
    /// a fresh inbox.
    pub(crate) fn join(&self, id: ReplicaId, signal: Arc<Signal>) -> LocalEndpoint {
        let inbox = Arc::new(Inbox {
            queue: Mutex::new(Vec::new()),
            signal,
        });
        self.lock().inboxes.insert(id, Arc::clone(&inbox));
        LocalEndpoint {
            id,
            network: self.clone(),
            inbox,
            outbox: Vec::new(),
        }
    }
}

/// One replica's end of a [`LocalNetwork`].
pub(crate) struct LocalEndpoint {
    id: ReplicaId,
    network: LocalNetwork,
    inbox: Arc<Inbox>,
    outbox: Vec<(ReplicaId, Message)>,
}

impl Net for LocalEndpoint {
    fn send(&mut self, to: ReplicaId, msg: Message) {
        self.outbox.push((to, msg));
    }

    fn flush(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        let hub = self.network.lock();
        let me_cut = hub.isolated.contains(&self.id);
        for (to, msg) in self.outbox.drain(..) {
            if me_cut || hub.isolated.contains(&to) {
                continue;
            }
            if let Some(inbox) = hub.inboxes.get(&to) {
                inbox
                    .queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((self.id, msg));
                inbox.signal.notify();
            }
        }
    }

    fn drain(&mut self, out: &mut Vec<(ReplicaId, Message)>) {
        let mut q = self
            .inbox
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        out.append(&mut q);
    }

    fn close(&mut self) {
        let mut hub = self.network.lock();
        if hub
            .inboxes
            .get(&self.id)
            .is_some_and(|i| Arc::ptr_eq(i, &self.inbox))
        {
            hub.inboxes.remove(&self.id);
        }
    }
}
