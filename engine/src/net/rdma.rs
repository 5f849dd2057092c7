//! RDMA transport (cargo feature `rdma`): the core's messages, encoded as [`tcp`](super::tcp)
//! encodes them, carried as frames of `keel-transport`'s ring protocol over verbs.
//!
//! Per ordered pair of replicas there is one ring: the sender's [`RdmaRingSink`] writes frames
//! and the tail into the receiver's registered ring memory with one-sided RDMA WRITEs; the
//! receiver's [`RdmaRingSource`] reads them locally and writes its consumed head back, one-sided,
//! into the sender's acknowledgement array ([`AckArray`]), so the sender never overwrites unread
//! frames. Two replicas therefore share two rings, one each way.
//!
//! Connection set-up is `keel-transport`'s out-of-band exchange over TCP, which runs the member
//! handshake first: a peer that is not a configured member of this cluster is refused and never
//! learns a ring's address or rkey. Replica `R` with `addr = "host:port"` listens for its `k`-th
//! peer (peers ordered by id, `R` itself left out) on `host:port+k`, so it uses the TCP ports
//! `port ..= port + members - 2`. Frames are attributed to the member id the handshake
//! authenticated.
//!
//! Threads: per peer, a dialer that (re)connects the outbound ring and hands it to the loop, and
//! a receiver that accepts the inbound ring, polls it (bounded spinning, then short sleeps),
//! decodes frames into the loop's inbox and wakes the loop. When a sender's queue pair fails, or
//! its writes stop completing for [`STUCK_AFTER`] (a killed peer's queue pair may never fail
//! them), the loop drops the ring and the dialer connects again once the peer listens; a receiver whose peer comes back (a restarted process
//! dials anew) switches to the new connection ([`RdmaRingSource::try_reaccept`]).
//!
//! Delivery is best effort, as the core expects: a message for a peer that is not connected,
//! whose ring is full or whose send queue is saturated is dropped (never blocks the loop); a
//! message larger than half the ring is dropped too.
//!
//! Tested by `tests/tests/vm_e2e_rdma.rs`: three replica processes on soft-RoCE (`rxe0`) in the
//! VM harness, a client writing and reading, the leader killed with SIGKILL.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;
use keel_core::{Message, ReplicaId};
use keel_transport::HandshakeConfig;
use keel_transport::rdma::{
    AckArray, MemorySource, RdmaConfig, RdmaDevice, RdmaError, RdmaRingSink, RdmaRingSource,
    RingListener,
};
use keel_transport::ring::{AppendError, RingConfig, RingReader, RingWriter};

use super::Net;
use super::link::{Handoff, Inbox, Receiver, drain, redial};
use crate::config::Config;
use crate::runtime::{Health, Signal};
use keel_core::codec::encode_message;

/// Data bytes of each ring (a power of two); the largest message is half of it.
pub const RING_BYTES: usize = 1 << 20;
/// Send slots per connection (RDMA WRITEs in flight at most).
pub const SEND_SLOTS: u32 = 32;
/// Bytes per send slot; a larger frame is split across slots.
pub const SLOT_BYTES: usize = 16 << 10;

/// A send queue that stays saturated this long (no write completes) is taken for a dead
/// peer: the ring is torn down and redialed.
pub const STUCK_AFTER: Duration = Duration::from_secs(2);

/// Frames a receiver delivers per poll before it hands the batch to the loop.
const POLL_FRAMES: usize = 256;
/// First and longest sleep of a receiver whose ring is idle (after spinning).
const IDLE_NAP_MIN: Duration = Duration::from_micros(50);
const IDLE_NAP_MAX: Duration = Duration::from_millis(1);
/// How often an idle receiver checks for a new connection of its peer.
const REACCEPT_EVERY: Duration = Duration::from_millis(20);

/// Why the RDMA transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum RdmaNetError {
    /// The configuration names no device.
    #[error("transport \"rdma\" needs `rdma_device` (e.g. \"rxe0\"; see `ibv_devices`)")]
    NoDevice,
    /// The device could not be opened.
    #[error("cannot open RDMA device `{name}` (is it listed by `ibv_devices`?)")]
    OpenDevice {
        /// The device name.
        name: String,
        /// The verbs error.
        #[source]
        source: RdmaError,
    },
    /// A member's address is not `host:port`.
    #[error("address `{addr}` of replica {id} is not host:port")]
    BadAddress {
        /// The replica.
        id: u64,
        /// The address.
        addr: String,
    },
    /// Registering the acknowledgement array or a ring, or binding its listener, failed.
    #[error("cannot set up the ring for peer {peer} on {addr}")]
    Listen {
        /// The peer the ring receives from.
        peer: u64,
        /// The out-of-band address.
        addr: SocketAddr,
        /// The verbs or socket error.
        #[source]
        source: RdmaError,
    },
    /// Registering the acknowledgement array failed.
    #[error("cannot register the acknowledgement array")]
    AckArray(#[source] RdmaError),
    /// A thread could not be spawned.
    #[error("cannot spawn an RDMA transport thread")]
    Spawn(#[source] std::io::Error),
}

/// A freshly dialed ring `(sink, resume position, epoch)` on its way to the loop.
type Ready = Arc<Handoff<(RdmaRingSink, u64, u64)>>;

struct OutPeer {
    id: u64,
    /// Freshly dialed rings on their way from the dialer.
    ready: Ready,
    writer: Option<RingWriter<RdmaRingSink>>,
    /// Since when the send queue has had no room (no completions came back).
    saturated_since: Option<Instant>,
    /// Messages dropped because the ring was full or the send queue saturated.
    dropped: u64,
}

/// The loop's end of the RDMA transport.
pub struct RdmaNet {
    peers: BTreeMap<u64, OutPeer>,
    inbox: Inbox,
    scratch: Vec<u8>,
}

/// The out-of-band address on which replica `host` listens for the ring of its peer `from`.
fn oob_addr(config: &Config, host: u64, from: u64) -> Result<SocketAddr, RdmaNetError> {
    let m = config
        .members
        .iter()
        .find(|m| m.id == host)
        .unwrap_or_else(|| panic!("replica {host} is a member"));
    let addr = if host == config.id {
        m.listen_addr.as_deref().unwrap_or(&m.addr)
    } else {
        &m.addr
    };
    let bad = || RdmaNetError::BadAddress {
        id: host,
        addr: addr.to_string(),
    };
    let base = addr
        .to_socket_addrs()
        .map_err(|_| bad())?
        .next()
        .ok_or_else(bad)?;
    let index = config
        .members
        .iter()
        .filter(|p| p.id != host && p.id < from)
        .count();
    let port = usize::from(base.port()) + index;
    let port = u16::try_from(port).map_err(|_| bad())?;
    Ok(SocketAddr::new(base.ip(), port))
}

fn rdma_config(config: &Config) -> RdmaConfig {
    let mut c = RdmaConfig::new(HandshakeConfig::new(
        config.cluster_id,
        config.id,
        config.members.iter().map(|m| m.id).collect(),
    ));
    c.slots = SEND_SLOTS;
    c.slot_bytes = SLOT_BYTES;
    c
}

fn ring_config(epoch: u64) -> RingConfig {
    RingConfig {
        epoch,
        max_payload: RingConfig::max_payload_for(RING_BYTES),
    }
}

/// A connection epoch: distinct for every dial of every process (stamped in each frame, so a
/// receiver never takes a frame of an earlier connection for one of the current).
fn fresh_epoch() -> u64 {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    micros ^ (u64::from(std::process::id()) << 48)
}

impl RdmaNet {
    /// Opens the configured device, registers and listens on one ring per peer, and starts
    /// dialing every peer's ring.
    pub fn start(
        config: &Config,
        signal: Arc<Signal>,
        health: Arc<Health>,
    ) -> Result<RdmaNet, RdmaNetError> {
        let name = config
            .rdma_device
            .as_deref()
            .filter(|n| !n.is_empty())
            .ok_or(RdmaNetError::NoDevice)?;
        let device = RdmaDevice::open(name).map_err(|source| RdmaNetError::OpenDevice {
            name: name.to_string(),
            source,
        })?;
        let others: Vec<u64> = config
            .members
            .iter()
            .map(|m| m.id)
            .filter(|&id| id != config.id)
            .collect();
        let acks = AckArray::new(&device, others.len().max(1)).map_err(RdmaNetError::AckArray)?;
        let rc = rdma_config(config);
        let inbox = Inbox::default();
        let mut peers = BTreeMap::new();
        for (ack_index, &peer) in others.iter().enumerate() {
            // Inbound ring of `peer`.
            let listen = oob_addr(config, config.id, peer)?;
            let listener = RingListener::bind(
                &device,
                listen,
                RING_BYTES,
                &MemorySource::Anonymous,
                rc.clone(),
            )
            .map_err(|source| RdmaNetError::Listen {
                peer,
                addr: listen,
                source,
            })?;
            {
                let (inbox, signal, health) =
                    (Arc::clone(&inbox), Arc::clone(&signal), Arc::clone(&health));
                std::thread::Builder::new()
                    .name(format!("keel-rdma-rx-{}-{peer}", config.id))
                    .spawn(move || receive_loop(listener, &inbox, &signal, &health))
                    .map_err(RdmaNetError::Spawn)?;
            }
            // Outbound ring to `peer`.
            let target = oob_addr(config, peer, config.id)?;
            let ready: Ready = Arc::default();
            {
                let ready = Arc::clone(&ready);
                let (device, acks, rc) = (device.clone(), Arc::clone(&acks), rc.clone());
                let (signal, health) = (Arc::clone(&signal), Arc::clone(&health));
                std::thread::Builder::new()
                    .name(format!("keel-rdma-dial-{}-{peer}", config.id))
                    .spawn(move || {
                        let dialer = Dialer {
                            device,
                            target,
                            peer,
                            acks,
                            ack_index,
                            config: rc,
                        };
                        redial(&ready, &signal, &health, || dialer.dial());
                    })
                    .map_err(RdmaNetError::Spawn)?;
            }
            peers.insert(
                peer,
                OutPeer {
                    id: peer,
                    ready,
                    writer: None,
                    saturated_since: None,
                    dropped: 0,
                },
            );
        }
        Ok(RdmaNet {
            peers,
            inbox,
            scratch: Vec::with_capacity(64 * 1024),
        })
    }
}

impl OutPeer {
    fn disconnect(&mut self) {
        if self.writer.is_some() {
            eprintln!(
                "keel rdma: ring to replica {} failed; reconnecting",
                self.id
            );
        }
        self.writer = None;
        self.saturated_since = None;
        self.ready.disconnected();
    }

    /// Counts a dropped message; reports the first and every 1024th.
    fn drop_one(&mut self, why: &str) {
        if self.dropped.is_multiple_of(1024) {
            eprintln!(
                "keel rdma: message to replica {} dropped ({why}); {} dropped so far",
                self.id,
                self.dropped + 1
            );
        }
        self.dropped += 1;
    }

    /// The live writer, taking a freshly dialed ring if the loop holds none.
    fn writer(&mut self) -> Option<&mut RingWriter<RdmaRingSink>> {
        if self.writer.is_none() {
            let (sink, at, epoch) = self.ready.take()?;
            self.writer = Some(RingWriter::resume(sink, ring_config(epoch), at));
        }
        self.writer.as_mut()
    }
}

/// Whether the send queue has room for a frame of `len` bytes (its chunks and a tail write).
fn has_room(writer: &RingWriter<RdmaRingSink>, len: usize) -> bool {
    let wq = writer.sink().write_queue();
    // A frame may be preceded by a padding frame; +2 covers it and the tail write.
    let chunks = len.div_ceil(wq.slot_bytes()) + 2;
    wq.in_flight() + chunks <= SEND_SLOTS as usize
}

impl Net for RdmaNet {
    fn send(&mut self, to: ReplicaId, msg: Message) {
        let Some(peer) = self.peers.get_mut(&to.0) else {
            return;
        };
        let Some(writer) = peer.writer() else {
            return;
        };
        self.scratch.clear();
        encode_message(&msg, &mut self.scratch);
        let frame = self.scratch.len() + keel_transport::frame::HEADER_BYTES;
        if !has_room(writer, frame) {
            // Reclaim completed writes (polling happens when the head is loaded).
            if writer.refresh_head().is_err() {
                peer.disconnect();
                return;
            }
            if !has_room(writer, frame) {
                // Completions stopped coming: the peer is gone (a dead process's queue pair
                // may never fail our writes). Tear down and redial after a while.
                let since = *peer.saturated_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= STUCK_AFTER {
                    peer.disconnect();
                } else {
                    peer.drop_one("send queue saturated");
                }
                return;
            }
        }
        peer.saturated_since = None;
        let Some(writer) = peer.writer.as_mut() else {
            return;
        };
        match writer.write(0, 0, &self.scratch) {
            Ok(_) => {}
            Err(e @ (AppendError::Full { .. } | AppendError::TooLarge { .. })) => {
                peer.drop_one(&e.to_string());
            }
            Err(AppendError::Backend(_) | AppendError::HeadOutOfRange { .. }) => peer.disconnect(),
        }
    }

    fn flush(&mut self) {
        for peer in self.peers.values_mut() {
            if let Some(writer) = peer.writer.as_mut()
                && (writer.publish().is_err() || writer.sink().is_broken())
            {
                peer.disconnect();
            }
        }
    }

    fn drain(&mut self, out: &mut Vec<(ReplicaId, Message)>) {
        drain(&self.inbox, out);
    }

    fn close(&mut self) {
        for peer in self.peers.values_mut() {
            peer.disconnect();
        }
    }
}

struct Dialer {
    device: RdmaDevice,
    target: SocketAddr,
    peer: u64,
    acks: Arc<AckArray>,
    ack_index: usize,
    config: RdmaConfig,
}

impl Dialer {
    /// Dials the peer's ring once, with a fresh epoch.
    fn dial(&self) -> Result<(RdmaRingSink, u64, u64), RdmaError> {
        let epoch = fresh_epoch();
        let (sink, at) = RdmaRingSink::dial(
            &self.device,
            self.target,
            self.peer,
            epoch,
            Arc::clone(&self.acks),
            self.ack_index,
            self.config.clone(),
        )?;
        Ok((sink, at, epoch))
    }
}

fn receive_loop(listener: RingListener, inbox: &Inbox, signal: &Signal, health: &Health) {
    let mut listener = listener;
    // The first connection: a refused dialer (not a member) is dropped and we wait again.
    let source: RdmaRingSource = loop {
        if health.stopping() {
            return;
        }
        match listener.accept() {
            Ok(source) => break source,
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let mut from = ReplicaId(source.peer().member_id);
    let epoch = source.peer().epoch;
    let mut reader = RingReader::new(source, ring_config(epoch));
    let mut receiver = Receiver::new(inbox, signal);
    let mut reported = false;
    let mut last_check = Instant::now();
    let backoff = Backoff::new();
    let mut nap = IDLE_NAP_MIN;
    while !health.stopping() {
        let polled = reader.poll(POLL_FRAMES, |frame| {
            if let Err(e) = receiver.decode(from, frame.payload) {
                eprintln!(
                    "keel rdma: undecodable message from replica {}: {e}",
                    from.0
                );
            }
        });
        receiver.deliver();
        match polled {
            Ok(n) if n > 0 => {
                backoff.reset();
                nap = IDLE_NAP_MIN;
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                if !reported {
                    eprintln!("keel rdma: ring from replica {} stopped: {e}", from.0);
                    reported = true;
                }
            }
        }
        let head = reader.head();
        if last_check.elapsed() >= REACCEPT_EVERY && reader.source().published_tail() == head {
            last_check = Instant::now();
            // A new connection of the peer (it restarted, or redialed after an error): the
            // writer resumes at our head, stamping frames with the new connection's epoch.
            match reader.source_mut().try_reaccept(&listener, head) {
                Ok(Some(peer)) => {
                    from = ReplicaId(peer.member_id);
                    reported = false;
                    reader =
                        RingReader::resume(reader.into_source(), ring_config(peer.epoch), head);
                    backoff.reset();
                    continue;
                }
                Ok(None) => {}
                Err(e) => eprintln!("keel rdma: reconnect from a peer refused: {e}"),
            }
        }
        if backoff.is_completed() {
            // Idle: sleep, longer the longer the ring stays quiet (a busy ring never gets
            // here), so idle receivers leave the cores to the loops.
            std::thread::sleep(nap);
            nap = (nap * 2).min(IDLE_NAP_MAX);
        } else {
            backoff.snooze();
        }
    }
}

/// `e` and its sources, joined by ": " (what a start error reports).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}
