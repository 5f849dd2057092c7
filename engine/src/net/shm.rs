//! Shared-memory transport: one `keel-transport` ring per ordered pair of replicas
//! ([`keel_transport::shm::ShmRing`]), written with the ring protocol (frame, checksum,
//! release-published tail, mirrored head).
//!
//! - [`ShmMesh`]: replicas of one process, rings in anonymous shared mappings; the sender wakes
//!   the receiver's loop after publishing.
//! - `ShmProcessNet`: replicas in processes of one host, ring files with the handshake and a
//!   rendezvous that survives restarts (see its docs). An idle receiver sleeps on its doorbell
//!   (`keel_transport::shm::Doorbell`, a futex word in its `.bell` file), which a sender rings
//!   after publishing, only when the receiver announced it is about to sleep: so an idle
//!   replica wakes as soon as a message arrives, and a busy one costs its senders no syscall.
//!
//! Every message of a loop pass is written into the peer's ring and the tail is published once
//! at the end of the pass. A full ring drops the message (the protocol resends what matters).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use keel_core::{Message, ReplicaId};
use keel_transport::shm::{Doorbell, RingWatch, ShmRing, ShmSink, ShmSource};
use keel_transport::{RingConfig, RingReader, RingWriter};

use super::Net;
use crate::runtime::Signal;
use keel_core::codec::{DecodeSpares, decode_message_reusing, encode_message};

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
            spares: DecodeSpares::default(),
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
    /// Accept entry lists decoded earlier, reused once the core dropped them.
    spares: DecodeSpares,
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
        let spares = &mut self.spares;
        for (from, reader) in &mut self.ends.readers {
            let from = ReplicaId(*from);
            let polled = reader.poll(usize::MAX, |frame| {
                // A frame that passed the ring's checksum but does not decode is a bug in a
                // peer of this very process.
                match decode_message_reusing(frame.payload, spares) {
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

/// Shared-memory transport between processes of one host: one ring file per ordered pair of
/// replicas under a shared directory (`/dev/shm` by default), created by the receiving replica
/// and opened by the sender, each checked with `keel-transport`'s handshake.
///
/// Rendezvous, which survives either side's restart: the sender writes its incarnation nonce
/// to `<pair>.want`; the receiver, seeing a nonce it has not served (or its own restart, or a
/// failed ring), creates a fresh ring file, names it in `<pair>.current` with that nonce, and
/// waits for the sender's hello; the sender opens whatever `<pair>.current` names for its
/// nonce, and reopens when that changes.
pub(crate) struct ShmProcessNet {
    peers: BTreeMap<u64, ProcessPeer>,
    inbound: Vec<Arc<InboundSlot>>,
    readers: Vec<(u64, RingReader<ShmSource>, Arc<InboundSlot>)>,
    scratch: Vec<u8>,
    /// Accept entry lists decoded earlier, reused once the core dropped them.
    spares: DecodeSpares,
    dirty: Vec<u64>,
    parker: Arc<BellParker>,
}

/// The loop's [`Parker`](crate::runtime::Parker): this replica's doorbell, and the inbound
/// rings to look at before sleeping.
struct BellParker {
    bell: Doorbell,
    watches: Mutex<Vec<RingWatch>>,
}

impl crate::runtime::Parker for BellParker {
    fn wake(&self) {
        self.bell.ring();
    }

    fn park(&self, timeout: std::time::Duration, ready: &dyn Fn() -> bool) {
        self.bell.sleep(timeout, || {
            ready()
                || self
                    .watches
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .any(RingWatch::has_unread)
        });
    }
}

/// A sender's ring to a peer and the peer's doorbell.
type Outbound = (RingWriter<ShmSink>, Option<Doorbell>);

struct ProcessPeer {
    slot: Arc<Mutex<Option<Outbound>>>,
    writer: Option<RingWriter<ShmSink>>,
    bell: Option<Doorbell>,
    /// Writes failing since (a receiver that went away leaves its ring full).
    failing_since: Option<std::time::Instant>,
    broken: Arc<std::sync::atomic::AtomicBool>,
}

struct InboundSlot {
    from: u64,
    ready: Mutex<Option<RingReader<ShmSource>>>,
    failed: std::sync::atomic::AtomicBool,
}

fn pair_base(dir: &std::path::Path, cluster: u64, from: u64, to: u64) -> std::path::PathBuf {
    dir.join(format!("keel-{cluster:x}-{from}-to-{to}"))
}

fn bell_path(dir: &std::path::Path, cluster: u64, id: u64) -> std::path::PathBuf {
    dir.join(format!("keel-{cluster:x}-{id}.bell"))
}

fn write_atomic(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn nonce() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 32)
}

impl ShmProcessNet {
    pub(crate) fn start(
        config: &crate::config::Config,
        signal: Arc<Signal>,
        health: Arc<crate::runtime::Health>,
    ) -> std::io::Result<ShmProcessNet> {
        use std::sync::atomic::AtomicBool;
        let dir = config
            .shm_dir
            .clone()
            .unwrap_or_else(|| std::path::PathBuf::from("/dev/shm"));
        std::fs::create_dir_all(&dir)?;
        let hs = keel_transport::HandshakeConfig::new(
            config.cluster_id,
            config.id,
            config.members.iter().map(|m| m.id).collect(),
        );
        let ring_config = |epoch| RingConfig {
            epoch,
            max_payload: RingConfig::max_payload_for(RING_BYTES),
        };
        let me = config.id;
        // Our doorbell exists before any ring to us is named, so a sender that opened a ring
        // finds it.
        let parker = Arc::new(BellParker {
            bell: Doorbell::create(&bell_path(&dir, config.cluster_id, me))
                .map_err(std::io::Error::other)?,
            watches: Mutex::new(Vec::new()),
        });
        signal.set_parker(Arc::clone(&parker) as Arc<dyn crate::runtime::Parker>);
        let mut peers = BTreeMap::new();
        let mut inbound = Vec::new();
        for peer in config.members.iter().map(|m| m.id).filter(|&p| p != me) {
            // Outbound: ask for a ring, open the one named for us.
            let base = pair_base(&dir, config.cluster_id, me, peer);
            let peer_bell = bell_path(&dir, config.cluster_id, peer);
            let slot = Arc::new(Mutex::new(None));
            let broken = Arc::new(AtomicBool::new(false));
            let (s, b, dial_hs, h, sig) = (
                Arc::clone(&slot),
                Arc::clone(&broken),
                hs.clone(),
                Arc::clone(&health),
                Arc::clone(&signal),
            );
            std::thread::Builder::new()
                .name(format!("keel-shm-dial-{me}-{peer}"))
                .spawn(move || {
                    let w = nonce();
                    let want = base.with_extension("want");
                    let current = base.with_extension("current");
                    let mut opened: Option<String> = None;
                    while !h.stopping() {
                        if opened.is_none() || b.swap(false, std::sync::atomic::Ordering::AcqRel) {
                            let _ = write_atomic(&want, &w.to_string());
                        }
                        let named = std::fs::read_to_string(&current).ok().and_then(|t| {
                            let (nw, file) = t.split_once(' ')?;
                            (nw.parse::<u64>().ok() == Some(w)).then(|| file.to_string())
                        });
                        if let Some(file) = named
                            && opened.as_deref() != Some(file.as_str())
                        {
                            let epoch = nonce() | 1;
                            if let Ok((ring, _)) =
                                ShmRing::open(std::path::Path::new(&file), &dial_hs, peer, epoch)
                            {
                                let writer = RingWriter::new(ring.into_sink(), ring_config(epoch));
                                // The receiver made its doorbell before naming the ring; a
                                // receiver without one is woken by its tick instead.
                                let bell = Doorbell::open(&peer_bell).ok();
                                *s.lock().unwrap_or_else(PoisonError::into_inner) =
                                    Some((writer, bell));
                                opened = Some(file);
                                sig.notify();
                            }
                        }
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                })?;
            peers.insert(
                peer,
                ProcessPeer {
                    slot,
                    writer: None,
                    bell: None,
                    failing_since: None,
                    broken,
                },
            );
            // Inbound: serve the sender's requests for a ring.
            let base = pair_base(&dir, config.cluster_id, peer, me);
            let inslot = Arc::new(InboundSlot {
                from: peer,
                ready: Mutex::new(None),
                failed: AtomicBool::new(false),
            });
            inbound.push(Arc::clone(&inslot));
            let (accept_hs, h, sig) = (hs.clone(), Arc::clone(&health), Arc::clone(&signal));
            std::thread::Builder::new()
                .name(format!("keel-shm-accept-{me}-{peer}"))
                .spawn(move || {
                    // Ring files of this pair left by an earlier incarnation (killed before it
                    // could unlink them): this replica is their only creator.
                    if let (Some(parent), Some(name)) = (base.parent(), base.file_name()) {
                        let prefix = format!("{}.ring-", name.to_string_lossy());
                        for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
                            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                                let _ = std::fs::remove_file(entry.path());
                            }
                        }
                    }
                    let r = nonce();
                    let want = base.with_extension("want");
                    let current = base.with_extension("current");
                    let mut served: Option<u64> = None;
                    let mut attempt = 0u64;
                    while !h.stopping() {
                        let wanted = std::fs::read_to_string(&want)
                            .ok()
                            .and_then(|t| t.trim().parse::<u64>().ok());
                        let failed = inslot
                            .failed
                            .swap(false, std::sync::atomic::Ordering::AcqRel);
                        if let Some(w) = wanted
                            && (served != Some(w) || failed)
                        {
                            attempt += 1;
                            let file = base.with_extension(format!("ring-{r:x}-{attempt}"));
                            if let Ok(pending) = ShmRing::create(&file, RING_BYTES, &accept_hs) {
                                let _ = write_atomic(&current, &format!("{w} {}", file.display()));
                                if let Ok((ring, peer_hello)) =
                                    pending.accept(&accept_hs, std::time::Duration::from_secs(1))
                                {
                                    let reader = RingReader::new(
                                        ring.into_source(),
                                        ring_config(peer_hello.epoch),
                                    );
                                    *inslot.ready.lock().unwrap_or_else(PoisonError::into_inner) =
                                        Some(reader);
                                    served = Some(w);
                                    sig.notify();
                                }
                            }
                        }
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                })?;
        }
        Ok(ShmProcessNet {
            peers,
            inbound,
            readers: Vec::new(),
            scratch: Vec::with_capacity(64 * 1024),
            spares: DecodeSpares::default(),
            dirty: Vec::new(),
            parker,
        })
    }
}

/// A sender whose writes fail this long gives up the ring and asks for a fresh one (the
/// receiver restarted or stopped reading).
const SHM_STALL: std::time::Duration = std::time::Duration::from_millis(300);

impl Net for ShmProcessNet {
    fn send(&mut self, to: ReplicaId, msg: Message) {
        let Some(p) = self.peers.get_mut(&to.0) else {
            return;
        };
        if let Some((fresh, bell)) = p.slot.lock().unwrap_or_else(PoisonError::into_inner).take() {
            p.writer = Some(fresh);
            p.bell = bell;
            p.failing_since = None;
        }
        let Some(w) = p.writer.as_mut() else {
            return;
        };
        self.scratch.clear();
        encode_message(&msg, &mut self.scratch);
        match w.write(0, 0, &self.scratch) {
            Ok(_) => p.failing_since = None,
            Err(_) => {
                let since = *p.failing_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > SHM_STALL {
                    p.writer = None;
                    p.bell = None;
                    p.failing_since = None;
                    p.broken.store(true, std::sync::atomic::Ordering::Release);
                }
            }
        }
        if !self.dirty.contains(&to.0) {
            self.dirty.push(to.0);
        }
    }

    fn flush(&mut self) {
        for to in self.dirty.drain(..) {
            if let Some(p) = self.peers.get_mut(&to)
                && let Some(w) = p.writer.as_mut()
            {
                let _ = w.publish();
                // A syscall only if the receiver announced it is about to sleep.
                if let Some(bell) = &p.bell {
                    bell.ring();
                }
            }
        }
    }

    fn drain(&mut self, out: &mut Vec<(ReplicaId, Message)>) {
        let mut changed = false;
        for slot in &self.inbound {
            if let Some(fresh) = slot
                .ready
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            {
                self.readers.retain(|(from, _, _)| *from != slot.from);
                self.readers.push((slot.from, fresh, Arc::clone(slot)));
                changed = true;
            }
        }
        let mut failed = Vec::new();
        let spares = &mut self.spares;
        for (i, (from, reader, slot)) in self.readers.iter_mut().enumerate() {
            let sender = ReplicaId(*from);
            let polled = reader.poll(usize::MAX, |frame| {
                if let Ok(msg) = decode_message_reusing(frame.payload, spares) {
                    out.push((sender, msg));
                }
            });
            if polled.is_err() {
                slot.failed
                    .store(true, std::sync::atomic::Ordering::Release);
                failed.push(i);
            }
        }
        for i in failed.into_iter().rev() {
            self.readers.remove(i);
            changed = true;
        }
        if changed {
            // The rings the loop reads are the ones to look at before it sleeps.
            *self
                .parker
                .watches
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = self
                .readers
                .iter()
                .map(|(_, r, _)| r.source().watch())
                .collect();
        }
    }
}
