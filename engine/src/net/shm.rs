//! Shared-memory transport for replicas of one process: one `keel-transport` ring per ordered
//! pair of replicas, in an anonymous shared mapping ([`keel_transport::shm::ShmRing`]), written
//! with the ring protocol (frame, checksum, release-published tail, mirrored head).
//!
//! Every message of a loop pass is written into the peer's ring and the tail is published once
//! at the end of the pass, then the peer's loop is woken. A full ring drops the message (the
//! protocol resends what matters). Rings between processes (ring files under `/dev/shm`, with
//! the handshake and restarts) are not wired into the replica yet: see `docs/EMBEDDING.md`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use keel_core::{Message, ReplicaId};
use keel_transport::shm::{ShmRing, ShmSink, ShmSource};
use keel_transport::{RingConfig, RingReader, RingWriter};

use super::Net;
use crate::codec::{decode_message, encode_message};
use crate::runtime::Signal;

/// Bytes of each ring's data area.
pub const RING_BYTES: usize = 8 << 20;

/// Why the mesh could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot map a shared-memory ring: {0}")]
pub struct ShmMeshError(#[source] keel_transport::shm::ShmError);

struct Ends {
    writers: BTreeMap<u64, RingWriter<ShmSink>>,
    readers: Vec<(u64, RingReader<ShmSource>)>,
}

/// The rings between a fixed set of in-process replicas. Cheap to clone (shared). Each replica
/// takes its ends once, when it starts.
#[derive(Clone)]
pub struct ShmMesh {
    ends: Arc<Mutex<BTreeMap<u64, Ends>>>,
    signals: Arc<Mutex<BTreeMap<u64, Arc<Signal>>>>,
}

impl std::fmt::Debug for ShmMesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmMesh").finish_non_exhaustive()
    }
}

impl ShmMesh {
    /// Maps one ring for every ordered pair of `ids`.
    pub fn new(ids: &[u64]) -> Result<ShmMesh, ShmMeshError> {
        let config = RingConfig {
            epoch: 1,
            max_payload: RingConfig::max_payload_for(RING_BYTES),
        };
        let mut ends: BTreeMap<u64, Ends> = ids
            .iter()
            .map(|&id| {
                (
                    id,
                    Ends {
                        writers: BTreeMap::new(),
                        readers: Vec::new(),
                    },
                )
            })
            .collect();
        for &from in ids {
            for &to in ids.iter().filter(|&&to| to != from) {
                let (sink, source) = ShmRing::anonymous(RING_BYTES)
                    .map_err(ShmMeshError)?
                    .split();
                if let Some(e) = ends.get_mut(&from) {
                    e.writers.insert(to, RingWriter::new(sink, config));
                }
                if let Some(e) = ends.get_mut(&to) {
                    e.readers.push((from, RingReader::new(source, config)));
                }
            }
        }
        Ok(ShmMesh {
            ends: Arc::new(Mutex::new(ends)),
            signals: Arc::new(Mutex::new(BTreeMap::new())),
        })
    }

    /// Takes replica `id`'s ends; `None` if it is not in the mesh or already took them.
    pub(crate) fn join(&self, id: u64, signal: Arc<Signal>) -> Option<ShmEndpoint> {
        let ends = self
            .ends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id)?;
        self.signals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, signal);
        Some(ShmEndpoint {
            ends,
            signals: Arc::clone(&self.signals),
            dirty: Vec::new(),
            scratch: Vec::with_capacity(64 * 1024),
            dropped: 0,
        })
    }
}

/// One replica's rings.
pub(crate) struct ShmEndpoint {
    ends: Ends,
    signals: Arc<Mutex<BTreeMap<u64, Arc<Signal>>>>,
    /// Peers written to in this pass (to publish and wake).
    dirty: Vec<u64>,
    scratch: Vec<u8>,
    /// Messages dropped because a ring was full or a message too large.
    pub dropped: u64,
}

impl Net for ShmEndpoint {
    fn send(&mut self, to: ReplicaId, msg: Message) {
        let Some(w) = self.ends.writers.get_mut(&to.0) else {
            return;
        };
        self.scratch.clear();
        encode_message(&msg, &mut self.scratch);
        if w.write(0, 0, &self.scratch).is_err() {
            self.dropped += 1;
        }
        if !self.dirty.contains(&to.0) {
            self.dirty.push(to.0);
        }
    }

    fn flush(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let signals = self.signals.lock().unwrap_or_else(PoisonError::into_inner);
        for to in self.dirty.drain(..) {
            if let Some(w) = self.ends.writers.get_mut(&to) {
                // Publishing only fails if the backend fails; shared memory does not.
                let _ = w.publish();
            }
            if let Some(s) = signals.get(&to) {
                s.notify();
            }
        }
    }

    fn drain(&mut self, out: &mut Vec<(ReplicaId, Message)>) {
        for (from, reader) in &mut self.ends.readers {
            let from = ReplicaId(*from);
            let polled = reader.poll(usize::MAX, |frame| {
                // A frame that passed the ring's checksum but does not decode is a bug in a
                // peer of this very process.
                match decode_message(frame.payload) {
                    Ok(msg) => out.push((from, msg)),
                    Err(e) => panic!("undecodable message from replica {}: {e}", from.0),
                }
            });
            if let Err(e) = polled {
                panic!("shared-memory ring from replica {} failed: {e}", from.0);
            }
        }
    }
}
