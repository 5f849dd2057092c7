//! A registered pool of fixed send slots and the queue pair that writes from them.
//!
//! Ownership rule: a buffer handed to the NIC belongs to it until its completion is polled.
//! A [`Slot`] is the only way to touch a slot's bytes; [`WriteQueue::post_write`] consumes the
//! slot (it moves into the in-flight table under its index, which is the work-request id), and
//! only [`WriteQueue::poll`] moves it back to the free list when the completion for that index
//! arrives. So no safe code can modify bytes the NIC may still be reading.

use super::error::RdmaError;
use super::memory::{Mapping, MemorySource};
use super::verbs::{
    Access, CompletionQueue, MemoryRegion, ProtectionDomain, QpEndpoint, QueuePair, wc_status_str,
};
use ibverbs_sys as ffi;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest wait for a completion before the device is declared stuck (the queue pair's own
/// retry budget, 8 tries of about 67 ms, is far shorter).
pub const COMPLETION_TIMEOUT: Duration = Duration::from_secs(10);

/// Spins a little, then yields: soft-RoCE does its work in kernel context on the same CPUs,
/// and a pure spin on a machine with few cores starves it.
pub fn pause(spins: u32) {
    if spins < SPINS_BEFORE_YIELD {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// Busy polls before [`pause`] starts yielding the CPU.
pub const SPINS_BEFORE_YIELD: u32 = 128;

/// A send slot held by the CPU. Not `Clone`: whoever holds it owns the slot's bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Slot {
    index: u32,
}

impl Slot {
    /// Index of the slot (the work-request id while it is posted).
    pub fn index(&self) -> u32 {
        self.index
    }
}

/// Where to write on the peer: an address range of its registered region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteRegion {
    /// Peer virtual address of the first byte.
    pub addr: u64,
    /// Peer region length.
    pub len: u64,
    /// Peer's remote key.
    pub rkey: u32,
}

/// A queue pair with a registered pool of send slots.
#[derive(Debug)]
pub struct WriteQueue {
    // Field order is drop order: the queue pair is destroyed first (no more DMA from the
    // slots), then the in-flight handles, then the registration and the memory.
    qp: QueuePair,
    in_flight: Vec<Option<Slot>>,
    free: Vec<Slot>,
    slots: MemoryRegion<Mapping>,
    slot_bytes: usize,
    completions: Vec<ffi::ibv_wc>,
    broken: bool,
}

impl WriteQueue {
    /// A queue pair with `slot_count` slots of `slot_bytes` each (both > 0), on a fresh
    /// completion queue.
    pub fn new(
        pd: &Arc<ProtectionDomain>,
        slot_count: u32,
        slot_bytes: usize,
        psn: u32,
    ) -> Result<WriteQueue, RdmaError> {
        assert!(slot_count > 0 && slot_bytes > 0, "empty slot pool");
        let slot_bytes = slot_bytes.next_multiple_of(64);
        let depth = slot_count as usize;
        let cq = CompletionQueue::new(pd.context(), depth)?;
        let qp = QueuePair::new(pd, &cq, slot_count, psn)?;
        let mapping = Mapping::new(&MemorySource::Anonymous, depth * slot_bytes)?;
        let slots = MemoryRegion::register(pd, mapping, Access::LocalOnly)?;
        Ok(WriteQueue {
            qp,
            in_flight: (0..slot_count).map(|_| None).collect(),
            free: (0..slot_count).rev().map(|index| Slot { index }).collect(),
            slots,
            slot_bytes,
            completions: vec![ffi::ibv_wc::default(); depth.min(32)],
            broken: false,
        })
    }

    /// Our half of the out-of-band exchange.
    pub fn endpoint(&self) -> QpEndpoint {
        self.qp.endpoint()
    }

    /// Connects the queue pair to the peer's.
    pub fn connect(&self, remote: &QpEndpoint) -> Result<(), RdmaError> {
        self.qp.connect(remote)
    }

    /// The queue pair (to query its state or force it into the error state).
    pub fn queue_pair(&self) -> &QueuePair {
        &self.qp
    }

    /// Bytes per slot.
    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    /// Whether a work request failed (the queue pair is in the error state).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Work requests posted and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len() - self.free.len()
    }

    /// A free slot, if any (poll to reclaim completed ones).
    pub fn take_slot(&mut self) -> Option<Slot> {
        self.free.pop()
    }

    /// A free slot, polling completions until one is reclaimed. A healthy queue pair
    /// completes every work request (or fails it) within its retry budget, so waiting longer
    /// than [`COMPLETION_TIMEOUT`] means the device is stuck: reported, not spun on forever.
    pub fn take_slot_blocking(&mut self) -> Result<Slot, RdmaError> {
        let mut began = None;
        let mut spins = 0u32;
        loop {
            if self.broken {
                return Err(RdmaError::QueuePairInError);
            }
            if let Some(slot) = self.free.pop() {
                return Ok(slot);
            }
            self.poll()?;
            spins += 1;
            let began = *began.get_or_insert_with(Instant::now);
            if began.elapsed() > COMPLETION_TIMEOUT {
                return Err(self.stalled());
            }
            pause(spins);
        }
    }

    /// Copies `parts` (concatenated, at most one slot) into the slot's bytes; returns the length.
    ///
    /// # Panics
    /// If the parts do not fit in a slot.
    pub fn fill(&mut self, slot: &mut Slot, parts: &[&[u8]]) -> usize {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        assert!(
            total <= self.slot_bytes,
            "{total} bytes do not fit a {}-byte slot",
            self.slot_bytes
        );
        let mut at = slot.index as usize * self.slot_bytes;
        for part in parts {
            // The slot is ours (we hold its handle), so no DMA reads it now.
            self.slots.as_mapping().write_at(at, part);
            at += part.len();
        }
        total
    }

    /// Posts a signalled RDMA WRITE of the first `len` bytes of `slot` to `remote` at `offset`.
    /// The slot belongs to the NIC until [`Self::poll`] reclaims it. On error the slot returns
    /// to the free list (the NIC never got it).
    ///
    /// # Panics
    /// If `len` exceeds the slot or the write falls outside the remote region.
    pub fn post_write(
        &mut self,
        slot: Slot,
        len: usize,
        remote: &RemoteRegion,
        offset: u64,
    ) -> Result<(), RdmaError> {
        assert!(
            len <= self.slot_bytes,
            "write of {len} bytes exceeds a slot"
        );
        assert!(
            offset + len as u64 <= remote.len,
            "remote write [{offset}, +{len}) outside region of {} bytes",
            remote.len
        );
        if self.broken {
            self.free.push(slot);
            return Err(RdmaError::QueuePairInError);
        }
        let index = slot.index as usize;
        let local = self.slots.addr() + (index * self.slot_bytes) as u64;
        // SAFETY: the slot's bytes stay valid and unmodified until its completion is polled:
        // the handle moves into `in_flight` below and only `poll` gives it back; the memory is
        // owned by `self.slots`, dropped after the queue pair.
        let posted = unsafe {
            self.qp.post_write(
                u64::from(slot.index),
                local,
                u32::try_from(len).unwrap_or(u32::MAX),
                self.slots.lkey(),
                remote.addr + offset,
                remote.rkey,
            )
        };
        match posted {
            Ok(()) => {
                assert!(self.in_flight[index].is_none(), "slot {index} posted twice");
                self.in_flight[index] = Some(slot);
                Ok(())
            }
            Err(e) => {
                self.free.push(slot);
                if matches!(self.qp.state(), Ok(super::verbs::QpState::Error)) {
                    self.broken = true;
                }
                Err(e)
            }
        }
    }

    /// Polls completions, returning their slots to the free list. Returns how many completed;
    /// a failed work request marks the queue broken and is reported.
    pub fn poll(&mut self) -> Result<usize, RdmaError> {
        let mut total = 0;
        let mut failure = None;
        loop {
            let n = self.qp.cq().poll(&mut self.completions)?;
            for wc in &self.completions[..n] {
                let index = usize::try_from(wc.wr_id()).unwrap_or(usize::MAX);
                let slot = self
                    .in_flight
                    .get_mut(index)
                    .and_then(Option::take)
                    .unwrap_or_else(|| panic!("completion for unknown work request {index}"));
                self.free.push(slot);
                if let Some((status, _vendor)) = wc.error() {
                    self.broken = true;
                    // Flush errors follow the first real failure; report the first.
                    failure.get_or_insert(RdmaError::WorkRequestFailed {
                        wr_id: wc.wr_id(),
                        status,
                        status_name: wc_status_str(status),
                    });
                }
            }
            total += n;
            if n < self.completions.len() {
                break;
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    /// The peer stopped acknowledging (seen on soft-RoCE when the peer's queue pair is in the
    /// error state: no retry-exceeded error arrives). Treat the queue pair as failed: move it
    /// to the error state, so outstanding requests flush, and report it.
    fn stalled(&mut self) -> RdmaError {
        self.broken = true;
        // Already failing; the error state is what we want either way.
        let _ = self.qp.set_error();
        RdmaError::CompletionTimeout {
            in_flight: self.in_flight(),
            waited: COMPLETION_TIMEOUT,
        }
    }

    /// Polls until every posted write completed (or one failed, or [`COMPLETION_TIMEOUT`]
    /// passed).
    pub fn drain(&mut self) -> Result<(), RdmaError> {
        let began = Instant::now();
        let mut spins = 0u32;
        while self.in_flight() > 0 {
            self.poll()?;
            spins += 1;
            if began.elapsed() > COMPLETION_TIMEOUT {
                return Err(self.stalled());
            }
            pause(spins);
        }
        Ok(())
    }
}

impl MemoryRegion<Mapping> {
    /// The mapping under the registration.
    pub fn as_mapping(&self) -> &Mapping {
        self.memory()
    }
}
