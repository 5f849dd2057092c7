//! Identifiers and the values a log slot holds.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use smallvec::SmallVec;

/// A replica's identity, unique in the cluster for its whole life (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ReplicaId(pub u64);

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// A log position (a "decree" in RSL's words). Slot 0 is never used for a value: it stands for
/// "before the first decree", so a commit index of 0 means nothing is chosen yet.
pub type Slot = u64;

/// A Paxos ballot: ordered by `round`, then by `leader`, so two candidates never share one.
///
/// Ballots only grow: a replica's promised ballot never decreases (checked in every handler and
/// in [`crate::Replica::validate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ballot {
    /// The election round; the major ordering key.
    pub round: u64,
    /// The replica that leads this ballot; breaks ties between equal rounds.
    pub leader: ReplicaId,
}

impl Ballot {
    /// The ballot below every real ballot: "nothing promised yet".
    pub const ZERO: Ballot = Ballot {
        round: 0,
        leader: ReplicaId(0),
    };

    /// A ballot of `round` led by `leader`.
    pub const fn new(round: u64, leader: ReplicaId) -> Ballot {
        Ballot { round, leader }
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.round, self.leader.0)
    }
}

/// The host's name for a client request; echoed back in [`crate::Command::Apply`] (inside the
/// decree), [`crate::Command::ProposalAborted`] and read results. The core never interprets it;
/// the host keeps it unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ProposalId(pub u64);

/// One client request inside a batch decree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Proposal {
    /// The host's id for the request.
    pub id: ProposalId,
    /// The opaque request the state machine executes.
    pub payload: Payload,
}

/// The bytes of one request: either the proposer's own buffer, moved in (the leader), or a
/// range of one buffer shared by every request decoded from the same message (a follower:
/// decoding a message of many requests copies it once for all their bytes, not once each, into
/// a buffer a receiver recycles once nothing holds it any more, see
/// [`crate::codec::decode_message_reusing`]).
///
/// Reads as a `&[u8]` (`Deref`). Equality, ordering of bytes and hashing look at the bytes
/// only, so a moved-in and a decoded payload of the same bytes are equal.
#[derive(Clone)]
pub struct Payload(PayloadRepr);

#[derive(Clone)]
enum PayloadRepr {
    Owned(Vec<u8>),
    Shared {
        buf: Arc<Vec<u8>>,
        start: usize,
        end: usize,
    },
}

impl Payload {
    /// `buf[start..end]`, sharing `buf` (a reference count, no copy).
    ///
    /// Panics if the range is not within `buf` (a bug in the caller).
    pub fn shared(buf: Arc<Vec<u8>>, start: usize, end: usize) -> Payload {
        assert!(
            start <= end && end <= buf.len(),
            "payload range {start}..{end} outside a buffer of {} bytes",
            buf.len()
        );
        Payload(PayloadRepr::Shared { buf, start, end })
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.0 {
            PayloadRepr::Owned(v) => v,
            PayloadRepr::Shared { buf, start, end } => &buf[*start..*end],
        }
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl From<Vec<u8>> for Payload {
    /// Moves the buffer in (no copy, no allocation).
    fn from(v: Vec<u8>) -> Payload {
        Payload(PayloadRepr::Owned(v))
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Payload {}

impl std::hash::Hash for Payload {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

/// The client requests of one [`Decree::Batch`], in order: immutable and shared.
///
/// Cloning a `Batch` only bumps a reference count, so the leader hands the same requests to
/// its own log, to every peer's accept message, to its in-flight window and to the apply
/// command without copying a payload (no allocation per request). The list's storage is
/// recycled: the leader keeps batches a checkpoint released and reuses one once nothing else
/// holds it ([`Batch::recycle`]), so after warm-up a decree allocates no batch at all.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Batch(Arc<Vec<Proposal>>);

impl Batch {
    /// The requests, in order.
    pub fn proposals(&self) -> &[Proposal] {
        &self.0
    }

    /// Moves `items` into a batch: the oldest released batch in `released` when nothing else
    /// holds it any more (its list is cleared and refilled, keeping its capacity: no
    /// allocation), otherwise a new one. Released batches still shared (a follower over the
    /// local net, a message in flight) stay queued until they are free.
    pub(crate) fn recycle(released: &mut ReleasedBatches, items: &mut Vec<Proposal>) -> Batch {
        for _ in 0..RECYCLE_TRIES.min(released.queue.len()) {
            let Some(mut batch) = released.queue.pop_front() else {
                break;
            };
            match Arc::get_mut(&mut batch.0) {
                Some(list) => {
                    released.capacity -= list.capacity();
                    list.clear();
                    list.append(items);
                    return batch;
                }
                // Still held (a follower that has not checkpointed yet, a spare message
                // list): to the back, so it does not block the ones behind it.
                None => released.queue.push_back(batch),
            }
        }
        // Sized to the requests, so `items` keeps its capacity for the next decree.
        let mut list = Vec::with_capacity(items.len());
        list.append(items);
        Batch(Arc::new(list))
    }
}

/// Released batches [`Batch::recycle`] looks at (from the oldest) before it allocates.
const RECYCLE_TRIES: usize = 4;

/// Batches the replica's log let go of (a checkpoint truncated them), kept for
/// [`Batch::recycle`], oldest first. Bounded by the proposal places their lists hold
/// ([`ReleasedBatches::MAX_PLACES`]); a batch beyond the bound is dropped.
#[derive(Debug, Default)]
pub(crate) struct ReleasedBatches {
    queue: std::collections::VecDeque<Batch>,
    /// Sum of the lists' capacities (proposal places) in `queue`.
    capacity: usize,
}

impl ReleasedBatches {
    /// At most this many proposal places (about 40 bytes each, 10 MiB in all) are kept
    /// across the queue: more than one default checkpoint interval (100,000 decrees) of
    /// one-request decrees, so a single closed-loop client recycles every batch.
    pub(crate) const MAX_PLACES: usize = 1 << 18;

    /// Keeps `batch` for reuse if the bound allows: unshared, its requests are dropped now;
    /// shared, they stay until the other holders let go and the batch is reused.
    ///
    /// A shared batch is kept only when `keep_shared` (the leader that cut it: the followers'
    /// copies over the local net go when they checkpoint); others would never come free.
    pub(crate) fn release(&mut self, mut batch: Batch, keep_shared: bool) {
        let places = batch.0.capacity();
        if self.capacity + places > Self::MAX_PLACES {
            return;
        }
        match Arc::get_mut(&mut batch.0) {
            Some(list) => list.clear(),
            None if keep_shared => {}
            None => return,
        }
        self.capacity += places;
        self.queue.push_back(batch);
    }

    /// Batches kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

/// Message buffers a receiver copied messages into, kept (oldest first) so that one nobody
/// holds any more (the replica's log let go of the requests sharing it at a checkpoint) is
/// refilled in place instead of allocating ([`ReleasedBuffers::fill`]). Bounded by the bytes
/// their capacities hold ([`ReleasedBuffers::MAX_BYTES`]); a buffer beyond the bound is not
/// kept.
#[derive(Debug, Default)]
pub(crate) struct ReleasedBuffers {
    queue: std::collections::VecDeque<Arc<Vec<u8>>>,
    /// Sum of the buffers' capacities (bytes) in `queue`.
    capacity: usize,
}

impl ReleasedBuffers {
    /// At most this many bytes of buffer capacity are kept across the queue (32 MiB): more
    /// than one default checkpoint interval (100,000 decrees) of one-request accepts of small
    /// requests (about 70 bytes each on the wire, plus the request).
    pub(crate) const MAX_BYTES: usize = 1 << 25;

    /// A buffer holding a copy of `bytes`: the oldest kept buffer nothing else holds (cleared
    /// and refilled, keeping its capacity: no allocation when `bytes` fit), otherwise a new
    /// one. The buffer is kept (shared) for a later reuse if the bound allows.
    pub(crate) fn fill(&mut self, bytes: &[u8]) -> Arc<Vec<u8>> {
        let mut found = None;
        for _ in 0..RECYCLE_TRIES.min(self.queue.len()) {
            let Some(mut buf) = self.queue.pop_front() else {
                break;
            };
            match Arc::get_mut(&mut buf) {
                Some(v) => {
                    self.capacity -= v.capacity();
                    v.clear();
                    v.extend_from_slice(bytes);
                    found = Some(buf);
                    break;
                }
                // Still held (requests in the log until a checkpoint, in an apply command):
                // to the back, so it does not block the ones behind it.
                None => self.queue.push_back(buf),
            }
        }
        let buf = found.unwrap_or_else(|| Arc::new(bytes.to_vec()));
        let bytes_kept = buf.capacity();
        if self.capacity + bytes_kept <= Self::MAX_BYTES {
            self.capacity += bytes_kept;
            self.queue.push_back(Arc::clone(&buf));
        }
        debug_assert_eq!(
            buf.as_slice(),
            bytes,
            "the buffer holds the bytes copied in"
        );
        buf
    }

    /// Buffers kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

impl std::ops::Deref for Batch {
    type Target = [Proposal];

    fn deref(&self) -> &[Proposal] {
        &self.0
    }
}

impl From<Vec<Proposal>> for Batch {
    fn from(v: Vec<Proposal>) -> Batch {
        Batch(Arc::new(v))
    }
}

impl FromIterator<Proposal> for Batch {
    /// One allocation when the iterator knows its exact length (a `Vec`'s `drain`).
    fn from_iter<I: IntoIterator<Item = Proposal>>(iter: I) -> Batch {
        Batch(Arc::new(iter.into_iter().collect()))
    }
}

impl<'a> IntoIterator for &'a Batch {
    type Item = &'a Proposal;
    type IntoIter = std::slice::Iter<'a, Proposal>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

/// The voting and non-voting members of the cluster.
///
/// A voter accepts, votes in elections and counts toward quorums; a learner receives the log
/// and snapshots but never counts and never runs for leader. No id is in both sets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Membership {
    /// Replicas whose acceptance counts toward a majority.
    pub voters: BTreeSet<ReplicaId>,
    /// Replicas that follow the log without voting.
    pub learners: BTreeSet<ReplicaId>,
}

impl Membership {
    /// A membership of `voters` and no learners.
    pub fn with_voters(voters: impl IntoIterator<Item = ReplicaId>) -> Membership {
        Membership {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }

    /// Every member, voters first then learners, each in id order.
    pub fn members(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: ReplicaId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// The number of acceptances that make a majority of the voters.
    pub fn quorum(&self) -> usize {
        crate::quorum::majority(self.voters.len())
    }

    /// Whether `ids` contains a majority of the voters (non-voters in `ids` are ignored).
    pub fn is_quorum<'a>(&self, ids: impl IntoIterator<Item = &'a ReplicaId>) -> bool {
        let count = ids
            .into_iter()
            .filter(|id| self.voters.contains(id))
            .count();
        !self.voters.is_empty() && count >= self.quorum()
    }

    /// The membership after `change`, or why the change is refused.
    pub fn apply_change(
        &self,
        change: &MembershipChange,
    ) -> Result<Membership, crate::MembershipError> {
        use crate::MembershipError as E;
        let mut next = self.clone();
        match *change {
            MembershipChange::AddLearner(id) => {
                if self.contains(id) {
                    return Err(E::AlreadyMember(id));
                }
                next.learners.insert(id);
            }
            MembershipChange::AddVoter(id) => {
                if self.voters.contains(&id) {
                    return Err(E::AlreadyMember(id));
                }
                next.learners.remove(&id);
                next.voters.insert(id);
            }
            MembershipChange::PromoteLearner(id) => {
                if !self.learners.contains(&id) {
                    return Err(E::NotALearner(id));
                }
                next.learners.remove(&id);
                next.voters.insert(id);
            }
            MembershipChange::Remove(id) => {
                if !self.contains(id) {
                    return Err(E::NotAMember(id));
                }
                next.voters.remove(&id);
                next.learners.remove(&id);
            }
            MembershipChange::ReplaceVoter { old, new } => {
                if !self.voters.contains(&old) {
                    return Err(E::NotAMember(old));
                }
                if self.voters.contains(&new) {
                    return Err(E::AlreadyMember(new));
                }
                next.voters.remove(&old);
                next.learners.remove(&new);
                next.voters.insert(new);
            }
        }
        if next.voters.is_empty() {
            return Err(E::NoVotersLeft);
        }
        Ok(next)
    }
}

/// One step of a membership change, proposed with [`crate::Event::ChangeMembership`].
///
/// Each change is replicated as one [`Decree::Membership`] carrying the whole new membership;
/// chosen at slot `k`, it governs every slot from `k + alpha` on (RSL style, alpha =
/// [`crate::Config::membership_alpha`], see [`crate::Replica`] docs). One change at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MembershipChange {
    /// Add a non-voting member that receives the log.
    AddLearner(ReplicaId),
    /// Add a voter directly (a learner that is already a member is promoted).
    AddVoter(ReplicaId),
    /// Turn a learner into a voter (do this once it has caught up).
    PromoteLearner(ReplicaId),
    /// Remove a voter or a learner.
    Remove(ReplicaId),
    /// Replace voter `old` with `new` in one decree.
    ReplaceVoter {
        /// The voter leaving.
        old: ReplicaId,
        /// The replica joining as a voter.
        new: ReplicaId,
    },
}

/// The value of one log slot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Decree {
    /// Fills a gap or commits a new leader's ballot; the state machine skips it.
    Noop,
    /// Client requests batched into one decree, executed in order (shared: cloning the
    /// decree copies no request).
    Batch(Batch),
    /// The cluster membership for every slot from this one's + alpha on.
    Membership(Membership),
}

impl Decree {
    /// An estimate of the bytes this decree occupies on the wire (for batching bounds).
    pub fn size_bytes(&self) -> usize {
        match self {
            Decree::Noop => 1,
            Decree::Batch(props) => props.iter().map(|p| 12 + p.payload.len()).sum::<usize>() + 5,
            Decree::Membership(m) => 9 + 8 * (m.voters.len() + m.learners.len()),
        }
    }
}

/// A value an acceptor accepted: `decree` at `slot` in `ballot`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AcceptedEntry {
    /// The log position.
    pub slot: Slot,
    /// The ballot in which it was accepted.
    pub ballot: Ballot,
    /// The value.
    pub decree: Decree,
}

/// The values of one [`crate::PersistOp::Append`]: up to two are held inline, so a log append
/// of one or two decrees (the usual phase 2a) allocates nothing; more spill to the heap.
pub type AcceptedEntries = SmallVec<[AcceptedEntry; 2]>;

/// The slots of one [`crate::Message::Accepted`]: up to four are held inline, so the usual
/// acknowledgement allocates nothing; more spill to the heap.
pub type AcceptedSlots = SmallVec<[Slot; 4]>;

/// A decree to place at a slot (phase 2a payload and catch-up payload).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SlotDecree {
    /// The log position.
    pub slot: Slot,
    /// The value.
    pub decree: Decree,
}

/// The values of one phase 2a ([`crate::Message::Accept`]), in slot order: immutable and
/// shared, like [`Batch`]. The leader builds the list once and every peer's accept message
/// (and its own durable acceptance) shares it by reference count.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SlotDecrees(Arc<[SlotDecree]>);

impl SlotDecrees {
    /// Moves `items` (left empty) into a shared list, reusing a list from `spare` of the same
    /// length that nobody else holds any more (its messages were sent or dropped and its
    /// acceptance released): then nothing is allocated. Otherwise a new list is allocated.
    /// Either way the list also goes to `spare` (which holds at most `keep`) for a later call.
    ///
    /// A spare list keeps its old values (reference counts on their batches) until it is
    /// reused or dropped: at most `keep` lists' worth.
    pub(crate) fn recycle(
        spare: &mut Vec<SlotDecrees>,
        items: &mut Vec<SlotDecree>,
        keep: usize,
    ) -> SlotDecrees {
        let n = items.len();
        let reusable = spare
            .iter_mut()
            .position(|s| s.0.len() == n && Arc::get_mut(&mut s.0).is_some());
        let list = match reusable {
            Some(i) => {
                let mut list = spare.swap_remove(i);
                match Arc::get_mut(&mut list.0) {
                    Some(slots) => {
                        for (dst, src) in slots.iter_mut().zip(items.drain(..)) {
                            *dst = src;
                        }
                        list
                    }
                    None => items.drain(..).collect(),
                }
            }
            None => items.drain(..).collect(),
        };
        debug_assert!(items.is_empty(), "recycle left values behind");
        if spare.len() < keep {
            spare.push(list.clone());
        }
        list
    }
}

impl std::ops::Deref for SlotDecrees {
    type Target = [SlotDecree];

    fn deref(&self) -> &[SlotDecree] {
        &self.0
    }
}

impl From<Vec<SlotDecree>> for SlotDecrees {
    fn from(v: Vec<SlotDecree>) -> SlotDecrees {
        SlotDecrees(v.into())
    }
}

impl FromIterator<SlotDecree> for SlotDecrees {
    /// One allocation when the iterator knows its exact length (a `Vec`'s `drain`).
    fn from_iter<I: IntoIterator<Item = SlotDecree>>(iter: I) -> SlotDecrees {
        SlotDecrees(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a SlotDecrees {
    type Item = &'a SlotDecree;
    type IntoIter = std::slice::Iter<'a, SlotDecree>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Debug for SlotDecrees {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

/// What a state machine checkpoint covers: every decree up to and including `slot` is in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    /// The last slot the checkpoint includes.
    pub slot: Slot,
    /// The membership that governs the slots after `slot`.
    pub membership: Membership,
}

/// A state machine checkpoint and what it covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Snapshot {
    /// What the checkpoint covers.
    pub meta: SnapshotMeta,
    /// The host's serialized state machine (opaque to the core).
    pub data: Vec<u8>,
}

#[cfg(test)]
mod recycle_tests {
    use super::*;

    fn p(id: u64) -> Proposal {
        Proposal {
            id: ProposalId(id),
            payload: vec![id as u8].into(),
        }
    }

    #[test]
    fn a_released_batch_is_reused_once_nothing_else_holds_it() {
        let mut released = ReleasedBatches::default();
        let mut items = vec![p(1), p(2)];
        let first = Batch::recycle(&mut released, &mut items);
        assert!(
            items.is_empty() && items.capacity() >= 2,
            "the scratch keeps its capacity"
        );
        let held = first.clone();
        let storage = first.proposals().as_ptr();
        released.release(first, true);
        assert_eq!(released.len(), 1);
        // Still held elsewhere: a new batch.
        items.push(p(3));
        let second = Batch::recycle(&mut released, &mut items);
        assert_ne!(second.proposals().as_ptr(), storage);
        assert_eq!(released.len(), 1, "the held batch stays queued");
        drop(held);
        items.push(p(4));
        let third = Batch::recycle(&mut released, &mut items);
        assert_eq!(
            third.proposals().as_ptr(),
            storage,
            "the free batch's list is reused"
        );
        assert_eq!(third.proposals(), &[p(4)][..]);
        assert_eq!(released.len(), 0);
        // A shared batch is not kept unless asked; past the bound nothing is kept.
        let shared = second.clone();
        released.release(second, false);
        assert_eq!(released.len(), 0);
        drop(shared);
        let big = Batch::from(Vec::with_capacity(ReleasedBatches::MAX_PLACES + 1));
        released.release(big, true);
        assert_eq!(released.len(), 0);
    }

    #[test]
    fn a_kept_buffer_is_refilled_once_nothing_else_holds_it() {
        let mut kept = ReleasedBuffers::default();
        let first = kept.fill(b"hello");
        assert_eq!(first.as_slice(), b"hello");
        assert_eq!(kept.len(), 1, "the new buffer is kept");
        let storage = first.as_ptr();
        // Still held (by `first`): a new buffer.
        let second = kept.fill(b"abc");
        assert_ne!(second.as_ptr(), storage);
        assert_eq!(kept.len(), 2);
        drop(first);
        let third = kept.fill(b"xyz");
        assert_eq!(
            third.as_ptr(),
            storage,
            "the free buffer is refilled in place"
        );
        assert_eq!(third.as_slice(), b"xyz");
        assert_eq!(kept.len(), 2, "refilled, it stays kept");
        // Past the bound a new buffer is not kept.
        let big = vec![0u8; ReleasedBuffers::MAX_BYTES];
        let held = kept.fill(&big);
        assert_eq!(held.len(), big.len());
        assert_eq!(kept.len(), 2);
        drop((second, third));
    }
}
