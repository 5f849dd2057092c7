//! The ring protocol's backend over verbs: [`RdmaRingSink`] (leader) and [`RdmaRingSource`]
//! (follower), connected over TCP.
//!
//! Follower memory (registered for remote write, on device-DAX when given):
//! `[tail: 16 B][unused to DATA_OFFSET][data area: capacity B]`.
//! Leader memory: an [`AckArray`] of 64-byte entries, one per follower connection, each
//! holding the follower's head (16 B), written by the follower with a one-sided RDMA WRITE.
//! Tail and head are each published as a value and its check word in one 16-byte write, and
//! read only when the two agree ([`super::published`]): a read that races the NIC's copy and
//! sees a mix of two positions is not taken for a third.
//!
//! Ordering (the seam's contract rule 2): the leader posts the frame writes, then the tail
//! write, on the same reliable connection; an RC queue pair executes RDMA WRITEs in order, so
//! once the follower sees the tail, the frame bytes below it are in its memory. Rule 3: the
//! follower posts the head write after it has finished reading the frames below the head.
//!
//! Set-up (over TCP, leader dials): the ring handshake ([`crate::handshake`](mod@crate::handshake)) runs first; only a
//! peer that passed it receives an [`Offer`] with the ring's address and rkey. Then both ends
//! exchange offers, connect their queue pairs (INIT, RTR, RTS) and sync a ready byte.
//!
//! Error and reconnect: a failed work request puts the queue pair in the error state; the
//! backend reports [`RdmaError::WorkRequestFailed`] once and [`RdmaError::QueuePairInError`]
//! after. The leader calls [`RdmaRingSink::redial`], which returns the position to resume the
//! writer at ([`crate::RingWriter::resume`]); the follower first delivers everything published
//! (so its head equals its tail), then calls [`RdmaRingSource::reaccept`] (or
//! [`RdmaRingSource::try_reaccept`] from a polling loop). Entries the leader wrote above that
//! position are lost with the old queue pair and must be written again.

use super::error::RdmaError;
use super::memory::{Mapping, MemorySource};
use super::oob::{self, Offer};
use super::pool::{RemoteRegion, WriteQueue};
use super::published::{self, PUBLISHED_BYTES};
use super::verbs::{Access, Context, MemoryRegion, ProtectionDomain};
use crate::handshake::{HandshakeConfig, Peer, Role, handshake};
use crate::ring::{RingSink, RingSource};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Offset of the published tail (value and check word) in the follower's ring memory.
pub const TAIL_OFFSET: usize = 0;
/// Offset of the data area in the follower's ring memory (a page: the tail has its own).
pub const DATA_OFFSET: usize = 4096;
/// Bytes per acknowledgement entry (a cache line: followers do not share lines).
pub const ACK_ENTRY_BYTES: usize = 64;
/// Time limit for each blocking step of the out-of-band set-up.
pub const OOB_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings shared by both ends.
#[derive(Clone, Debug)]
pub struct RdmaConfig {
    /// Who we are and whom we accept.
    pub handshake: HandshakeConfig,
    /// Send slots per connection (work requests in flight at most).
    pub slots: u32,
    /// Bytes per send slot; larger writes are split across slots.
    pub slot_bytes: usize,
    /// Wait for the peer's acknowledgement of every tail (leader) or head (follower) write
    /// before returning: a published tail is then in the follower's memory, and a stored head
    /// in the leader's, when the call returns. Costs a round trip per publish; off by default
    /// (RC ordering alone keeps the ring correct). The conformance suite, which drives both
    /// ends from one thread, turns it on.
    pub wait_for_ack: bool,
}

impl RdmaConfig {
    /// 64 slots of 4 KiB.
    pub fn new(handshake: HandshakeConfig) -> RdmaConfig {
        RdmaConfig {
            handshake,
            slots: 64,
            slot_bytes: 4096,
            wait_for_ack: false,
        }
    }
}

/// An opened device and protection domain that connections share.
#[derive(Clone, Debug)]
pub struct RdmaDevice {
    pd: Arc<ProtectionDomain>,
}

impl RdmaDevice {
    /// Opens device `name` (e.g. `rxe0`) with the GID chosen by [`Context::open`].
    pub fn open(name: &str) -> Result<RdmaDevice, RdmaError> {
        let ctx = Context::open(name, None)?;
        Ok(RdmaDevice {
            pd: ProtectionDomain::new(&ctx)?,
        })
    }

    /// The protection domain.
    pub fn pd(&self) -> &Arc<ProtectionDomain> {
        &self.pd
    }
}

fn oob_err(step: &'static str) -> impl FnOnce(io::Error) -> RdmaError {
    move |source| RdmaError::OutOfBand { step, source }
}

fn set_timeouts(stream: &TcpStream) -> Result<(), RdmaError> {
    stream
        .set_read_timeout(Some(OOB_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(OOB_TIMEOUT)))
        .and_then(|()| stream.set_nodelay(true))
        .map_err(oob_err("configuring the TCP stream"))
}

fn fresh_psn() -> u32 {
    // Any 24-bit value works; vary it per connection so a stale packet of an old queue pair
    // is unlikely to match.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ std::process::id().rotate_left(8)) & 0x00ff_ffff
}

/// The leader's acknowledgement array: one 64-byte entry per follower connection, registered
/// for remote write; each follower writes its head into its own entry.
#[derive(Debug)]
pub struct AckArray {
    mr: MemoryRegion<Mapping>,
    entries: usize,
    /// Per entry, the largest head that validated (what a torn or old read falls back to).
    seen: Box<[AtomicU64]>,
    /// Reads of an entry whose two words did not agree (a write in progress), all entries.
    torn: AtomicU64,
}

impl AckArray {
    /// An array of `entries` zeroed entries.
    pub fn new(device: &RdmaDevice, entries: usize) -> Result<Arc<AckArray>, RdmaError> {
        assert!(entries > 0, "empty acknowledgement array");
        let mapping = Mapping::new(&MemorySource::Anonymous, entries * ACK_ENTRY_BYTES)?;
        let mr = MemoryRegion::register(device.pd(), mapping, Access::RemoteWrite)?;
        let acks = AckArray {
            mr,
            entries,
            seen: (0..entries).map(|_| AtomicU64::new(0)).collect(),
            torn: AtomicU64::new(0),
        };
        for index in 0..entries {
            acks.set_head(index, 0);
        }
        Ok(Arc::new(acks))
    }

    /// Number of entries.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// The head follower `index` last wrote (acquire): the largest head whose value and check
    /// word agreed (a read that races the follower's write keeps the previous head).
    pub fn head(&self, index: usize) -> u64 {
        assert!(
            index < self.entries,
            "ack entry {index} of {}",
            self.entries
        );
        let at = index * ACK_ENTRY_BYTES;
        let seen = &self.seen[index];
        match published::load(self.mr.word(at), self.mr.word(at + 8)) {
            // A read-modify-write only when the head moved (the writer polls this often).
            Some(head) if head > seen.load(Ordering::Acquire) => {
                seen.fetch_max(head, Ordering::AcqRel).max(head)
            }
            Some(_) => seen.load(Ordering::Acquire),
            None => {
                self.torn.fetch_add(1, Ordering::Relaxed);
                seen.load(Ordering::Acquire)
            }
        }
    }

    /// Reads of an entry that raced a follower's write (value and check word disagreed) and
    /// kept the previous head, since the array was made.
    pub fn torn_reads(&self) -> u64 {
        self.torn.load(Ordering::Relaxed)
    }

    /// Sets entry `index` to `head` locally (at set-up, before the follower writes it).
    fn set_head(&self, index: usize, head: u64) {
        assert!(
            index < self.entries,
            "ack entry {index} of {}",
            self.entries
        );
        let at = index * ACK_ENTRY_BYTES;
        published::store(self.mr.word(at), self.mr.word(at + 8), head);
        self.seen[index].store(head, Ordering::Release);
    }

    fn region(&self, index: usize) -> RemoteRegion {
        RemoteRegion {
            addr: self.mr.addr() + (index * ACK_ENTRY_BYTES) as u64,
            len: ACK_ENTRY_BYTES as u64,
            rkey: self.mr.rkey(),
        }
    }
}

/// The leader's end of one ring: writes frames and the tail into the follower's memory.
#[derive(Debug)]
pub struct RdmaRingSink {
    wq: WriteQueue,
    ring: RemoteRegion,
    capacity: usize,
    acks: Arc<AckArray>,
    ack_index: usize,
    device: RdmaDevice,
    config: RdmaConfig,
    follower: SocketAddr,
    follower_id: u64,
    epoch: u64,
    peer: Peer,
    // Kept open for the connection's life: the follower sees EOF when the leader goes away.
    _stream: TcpStream,
}

impl RdmaRingSink {
    /// Dials the follower `follower_id` at `addr`, runs the handshake (proposing `epoch`), and
    /// connects. Acknowledgements land in `acks[ack_index]`. Returns the sink and the ring
    /// position to start the writer at.
    #[allow(clippy::too_many_arguments)]
    pub fn dial(
        device: &RdmaDevice,
        addr: impl ToSocketAddrs,
        follower_id: u64,
        epoch: u64,
        acks: Arc<AckArray>,
        ack_index: usize,
        config: RdmaConfig,
    ) -> Result<(RdmaRingSink, u64), RdmaError> {
        let follower = addr
            .to_socket_addrs()
            .map_err(oob_err("resolving the follower address"))?
            .next()
            .ok_or(RdmaError::OutOfBand {
                step: "resolving the follower address",
                source: io::Error::new(io::ErrorKind::NotFound, "no address"),
            })?;
        let conn = Self::connect(
            device,
            follower,
            follower_id,
            epoch,
            &acks,
            ack_index,
            &config,
        )?;
        let sink = RdmaRingSink {
            wq: conn.wq,
            ring: conn.ring,
            capacity: conn.capacity,
            acks,
            ack_index,
            device: device.clone(),
            config,
            follower,
            follower_id,
            epoch,
            peer: conn.peer,
            _stream: conn.stream,
        };
        Ok((sink, conn.resume_at))
    }

    fn connect(
        device: &RdmaDevice,
        follower: SocketAddr,
        follower_id: u64,
        epoch: u64,
        acks: &Arc<AckArray>,
        ack_index: usize,
        config: &RdmaConfig,
    ) -> Result<Connected, RdmaError> {
        let mut stream = TcpStream::connect_timeout(&follower, OOB_TIMEOUT)
            .map_err(oob_err("connecting to the follower"))?;
        set_timeouts(&stream)?;
        let peer = handshake(
            &mut stream,
            &config.handshake,
            Role::Dialer {
                expected: follower_id,
                epoch,
            },
        )
        .map_err(RdmaError::Handshake)?;
        let wq = WriteQueue::new(device.pd(), config.slots, config.slot_bytes, fresh_psn())?;
        let ours = Offer {
            endpoint: wq.endpoint(),
            region: acks.region(ack_index),
            capacity: 0,
            resume_at: 0,
        };
        let theirs = oob::exchange(&mut stream, &ours)?;
        let capacity = usize::try_from(theirs.capacity).unwrap_or(0);
        if !capacity.is_power_of_two()
            || theirs.region.len != (DATA_OFFSET + capacity) as u64
            || !theirs.resume_at.is_multiple_of(8)
        {
            return Err(RdmaError::MalformedOutOfBand {
                what: "ring offer with impossible capacity, length or position",
            });
        }
        wq.connect(&theirs.endpoint)?;
        // The follower's head is its consumed position; mirror it before resuming so the
        // writer never sees a stale head of the previous connection.
        acks.set_head(ack_index, theirs.resume_at);
        oob::sync_ready(&mut stream)?;
        Ok(Connected {
            wq,
            ring: theirs.region,
            capacity,
            resume_at: theirs.resume_at,
            peer,
            stream,
        })
    }

    /// Re-establishes the connection after a queue-pair error (or at will): destroys the old
    /// queue pair, dials the follower again (handshake included) and returns the position to
    /// resume the writer at ([`crate::RingWriter::resume`]).
    pub fn redial(&mut self) -> Result<u64, RdmaError> {
        // Destroy the old queue pair first: nothing of it may land after the follower reports
        // its position. A fresh, unconnected queue stands in until the new one is ready.
        self.wq = WriteQueue::new(self.device.pd(), 1, 64, 0)?;
        let conn = Self::connect(
            &self.device,
            self.follower,
            self.follower_id,
            self.epoch,
            &self.acks,
            self.ack_index,
            &self.config,
        )?;
        if conn.capacity != self.capacity {
            return Err(RdmaError::CapacityMismatch {
                ours: self.capacity,
                theirs: conn.capacity,
            });
        }
        self.wq = conn.wq;
        self.ring = conn.ring;
        self.peer = conn.peer;
        self._stream = conn.stream;
        Ok(conn.resume_at)
    }

    /// The follower as the handshake identified it.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Whether the queue pair failed and the connection must be re-established.
    pub fn is_broken(&self) -> bool {
        self.wq.is_broken()
    }

    /// The write queue (to inspect or force the queue pair's state).
    pub fn write_queue(&self) -> &WriteQueue {
        &self.wq
    }

    /// Waits until every posted write completed.
    pub fn flush(&mut self) -> Result<(), RdmaError> {
        self.wq.drain()
    }

    fn post(&mut self, remote_offset: u64, parts: &[&[u8]]) -> Result<(), RdmaError> {
        let mut slot = self.wq.take_slot_blocking()?;
        let len = self.wq.fill(&mut slot, parts);
        self.wq.post_write(slot, len, &self.ring, remote_offset)
    }
}

struct Connected {
    wq: WriteQueue,
    ring: RemoteRegion,
    capacity: usize,
    resume_at: u64,
    peer: Peer,
    stream: TcpStream,
}

impl RingSink for RdmaRingSink {
    type Error = RdmaError;

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn write(&mut self, offset: usize, parts: &[&[u8]]) -> Result<(), RdmaError> {
        assert!(
            offset.is_multiple_of(8),
            "frame offset {offset} not aligned"
        );
        let total: usize = parts.iter().map(|p| p.len()).sum();
        assert!(
            offset + total <= self.capacity,
            "write [{offset}, +{total}) past the data area of {}",
            self.capacity
        );
        self.wq.poll()?;
        // Split the concatenation of `parts` into slot-sized chunks, each one RDMA WRITE.
        let chunk = self.wq.slot_bytes();
        let mut written = 0;
        let mut part = 0;
        let mut within = 0;
        while written < total {
            let want = chunk.min(total - written);
            let mut pieces: Vec<&[u8]> = Vec::with_capacity(4);
            let mut got = 0;
            while got < want {
                let p = parts[part];
                let take = (p.len() - within).min(want - got);
                pieces.push(&p[within..within + take]);
                got += take;
                within += take;
                if within == p.len() {
                    part += 1;
                    within = 0;
                }
            }
            self.post((DATA_OFFSET + offset + written) as u64, &pieces)?;
            written += want;
        }
        Ok(())
    }

    fn publish_tail(&mut self, tail: u64) -> Result<(), RdmaError> {
        // Posted after the frame writes on the same RC queue pair: executed after them.
        self.post(TAIL_OFFSET as u64, &[&published::encode(tail)])?;
        if self.config.wait_for_ack {
            self.wq.drain()
        } else {
            self.wq.poll().map(drop)
        }
    }

    fn load_head(&mut self) -> Result<u64, RdmaError> {
        self.wq.poll()?;
        Ok(self.acks.head(self.ack_index))
    }
}

/// Accepts leader connections for one follower ring.
#[derive(Debug)]
pub struct RingListener {
    tcp: TcpListener,
    device: RdmaDevice,
    ring: Option<MemoryRegion<Mapping>>,
    capacity: usize,
    config: RdmaConfig,
}

impl RingListener {
    /// Maps a ring of `capacity` data bytes (a power of two, at least 256) from `memory`,
    /// registers it for remote write and listens on `addr`.
    pub fn bind(
        device: &RdmaDevice,
        addr: impl ToSocketAddrs,
        capacity: usize,
        memory: &MemorySource,
        config: RdmaConfig,
    ) -> Result<RingListener, RdmaError> {
        assert!(
            capacity.is_power_of_two() && capacity >= 256,
            "ring capacity {capacity} must be a power of two >= 256"
        );
        let mapping = Mapping::new(memory, DATA_OFFSET + capacity)?;
        // Device-DAX keeps old contents: start from a published tail of 0.
        mapping.write_at(TAIL_OFFSET, &published::encode(0));
        let ring = MemoryRegion::register(device.pd(), mapping, Access::RemoteWrite)?;
        let tcp = TcpListener::bind(addr).map_err(oob_err("binding the listener"))?;
        Ok(RingListener {
            tcp,
            device: device.clone(),
            ring: Some(ring),
            capacity,
            config,
        })
    }

    /// The address leaders dial.
    pub fn local_addr(&self) -> Result<SocketAddr, RdmaError> {
        self.tcp
            .local_addr()
            .map_err(oob_err("reading the listener address"))
    }

    /// Accepts the first leader. A peer that fails the handshake is refused (it never learns
    /// the ring's rkey) and the error is returned; call again to wait for the next dialer.
    ///
    /// # Panics
    /// If the ring was already handed to a source (use [`RdmaRingSource::reaccept`]).
    pub fn accept(&mut self) -> Result<RdmaRingSource, RdmaError> {
        assert!(
            self.ring.is_some(),
            "ring already handed out: reconnect with RdmaRingSource::reaccept"
        );
        let (stream, _) = self.tcp.accept().map_err(oob_err("accepting"))?;
        let (wq, ack, peer, stream) = self.admit(stream, self.ring.as_ref(), 0)?;
        let ring = self
            .ring
            .take()
            .unwrap_or_else(|| unreachable!("checked above"));
        Ok(RdmaRingSource {
            wq,
            ack,
            ring,
            capacity: self.capacity,
            peer,
            stored_head: 0,
            tail_seen: 0,
            torn: AtomicU64::new(0),
            wait_for_ack: self.config.wait_for_ack,
            _stream: stream,
        })
    }

    fn admit(
        &self,
        mut stream: TcpStream,
        ring: Option<&MemoryRegion<Mapping>>,
        resume_at: u64,
    ) -> Result<(WriteQueue, RemoteRegion, Peer, TcpStream), RdmaError> {
        let ring = ring.unwrap_or_else(|| unreachable!("admit needs the ring"));
        set_timeouts(&stream)?;
        // The handshake comes first: a refused peer gets the verdict and nothing else.
        let peer = handshake(&mut stream, &self.config.handshake, Role::Acceptor)
            .map_err(RdmaError::Handshake)?;
        let wq = WriteQueue::new(self.device.pd(), self.config.slots, 64, fresh_psn())?;
        let ours = Offer {
            endpoint: wq.endpoint(),
            region: RemoteRegion {
                addr: ring.addr(),
                len: ring.len() as u64,
                rkey: ring.rkey(),
            },
            capacity: self.capacity as u64,
            resume_at,
        };
        let theirs = oob::exchange(&mut stream, &ours)?;
        if theirs.region.len < PUBLISHED_BYTES as u64 {
            return Err(RdmaError::MalformedOutOfBand {
                what: "acknowledgement region shorter than a published head",
            });
        }
        wq.connect(&theirs.endpoint)?;
        oob::sync_ready(&mut stream)?;
        Ok((wq, theirs.region, peer, stream))
    }
}

/// The follower's end of one ring: reads frames in local memory, writes the head back.
#[derive(Debug)]
pub struct RdmaRingSource {
    wq: WriteQueue,
    ack: RemoteRegion,
    ring: MemoryRegion<Mapping>,
    capacity: usize,
    peer: Peer,
    stored_head: u64,
    tail_seen: u64,
    /// Loads of the tail whose value and check word disagreed (a write in progress).
    torn: AtomicU64,
    wait_for_ack: bool,
    _stream: TcpStream,
}

impl RdmaRingSource {
    /// The leader as the handshake identified it.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Whether the queue pair failed and the connection must be re-established.
    pub fn is_broken(&self) -> bool {
        self.wq.is_broken()
    }

    /// The tail the leader last published into our memory: the pair in memory if its value
    /// and check word agree, otherwise (a write in progress) the last tail loaded; never less
    /// than that.
    pub fn published_tail(&self) -> u64 {
        let ring = &self.ring;
        match published::load(ring.word(TAIL_OFFSET), ring.word(TAIL_OFFSET + 8)) {
            Some(tail) => tail.max(self.tail_seen),
            None => {
                self.torn.fetch_add(1, Ordering::Relaxed);
                self.tail_seen
            }
        }
    }

    /// Loads of the tail that raced the leader's write (value and check word disagreed) and
    /// kept the previous tail, since this source was accepted.
    pub fn torn_reads(&self) -> u64 {
        self.torn.load(Ordering::Relaxed)
    }

    /// The write queue (to inspect or force the queue pair's state).
    pub fn write_queue(&self) -> &WriteQueue {
        &self.wq
    }

    /// Waits for the next leader connection on `listener` and switches to it. `reader_head` is
    /// the reader's head ([`crate::RingReader::head`]); it must equal the published tail
    /// (deliver everything first), and it is the position the leader resumes at.
    pub fn reaccept(
        &mut self,
        listener: &RingListener,
        reader_head: u64,
    ) -> Result<Peer, RdmaError> {
        listener
            .tcp
            .set_nonblocking(false)
            .map_err(oob_err("configuring the listener"))?;
        let (stream, _) = listener.tcp.accept().map_err(oob_err("accepting"))?;
        self.switch(listener, stream, reader_head)
    }

    /// Like [`Self::reaccept`], but returns `Ok(None)` at once when no leader is dialing.
    pub fn try_reaccept(
        &mut self,
        listener: &RingListener,
        reader_head: u64,
    ) -> Result<Option<Peer>, RdmaError> {
        listener
            .tcp
            .set_nonblocking(true)
            .map_err(oob_err("configuring the listener"))?;
        let accepted = listener.tcp.accept();
        listener
            .tcp
            .set_nonblocking(false)
            .map_err(oob_err("configuring the listener"))?;
        match accepted {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .map_err(oob_err("configuring the TCP stream"))?;
                self.switch(listener, stream, reader_head).map(Some)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(RdmaError::OutOfBand {
                step: "accepting",
                source: e,
            }),
        }
    }

    fn switch(
        &mut self,
        listener: &RingListener,
        stream: TcpStream,
        reader_head: u64,
    ) -> Result<Peer, RdmaError> {
        assert_eq!(
            listener.capacity, self.capacity,
            "reaccept on a listener of another ring"
        );
        // Destroy our old queue pair before reading the tail we report.
        self.wq = WriteQueue::new(listener.device.pd(), 1, 64, 0)?;
        let tail = self.published_tail();
        if reader_head != tail {
            return Err(RdmaError::Undrained {
                head: reader_head,
                tail,
            });
        }
        let (wq, ack, peer, stream) = listener.admit(stream, Some(&self.ring), reader_head)?;
        self.wq = wq;
        self.ack = ack;
        self.peer = peer;
        self.stored_head = reader_head;
        self._stream = stream;
        Ok(peer)
    }

    /// Address and rkey of our ring (what a leader that passed the handshake receives).
    pub fn ring_region(&self) -> RemoteRegion {
        RemoteRegion {
            addr: self.ring.addr(),
            len: self.ring.len() as u64,
            rkey: self.ring.rkey(),
        }
    }

    /// Overwrites ring bytes locally (tests use it to corrupt a published frame).
    ///
    /// # Panics
    /// If the range is outside the data area.
    pub fn corrupt_data(&mut self, offset: usize, bytes: &[u8]) {
        assert!(
            offset + bytes.len() <= self.capacity,
            "outside the data area"
        );
        self.ring.as_mapping().write_at(DATA_OFFSET + offset, bytes);
    }
}

impl RingSource for RdmaRingSource {
    type Error = RdmaError;

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn load_tail(&mut self) -> Result<u64, RdmaError> {
        // Tails are published in increasing order: keep the largest tail that validated (the
        // frames below it were complete when it was first observed). A smaller value was seen
        // once on soft-RoCE under heavy emulation before tails carried a check word: most
        // likely a torn read, which no longer validates.
        let tail = self.published_tail();
        self.tail_seen = self.tail_seen.max(tail);
        Ok(self.tail_seen)
    }

    fn with_published<R>(&self, offset: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        assert!(
            offset + len <= self.capacity,
            "read [{offset}, +{len}) past the data area of {}",
            self.capacity
        );
        // SAFETY: in bounds of the live registration; by the ring protocol these bytes lie
        // below the published tail and above our head, so the leader does not write them
        // while the slice exists (contract rule 4), and the tail's acquire load ordered them.
        let bytes = unsafe {
            std::slice::from_raw_parts(self.ring.as_ptr().add(DATA_OFFSET + offset), len)
        };
        f(bytes)
    }

    fn store_head(&mut self, head: u64) -> Result<(), RdmaError> {
        assert!(
            head >= self.stored_head,
            "head went back: {head} < {}",
            self.stored_head
        );
        self.wq.poll()?;
        let mut slot = self.wq.take_slot_blocking()?;
        let len = self.wq.fill(&mut slot, &[&published::encode(head)]);
        self.wq.post_write(slot, len, &self.ack, 0)?;
        self.stored_head = head;
        if self.wait_for_ack {
            self.wq.drain()?;
        }
        Ok(())
    }
}
