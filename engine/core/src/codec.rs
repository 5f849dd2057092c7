//! The wire (and disk) encoding of [`Message`] and [`PersistOp`].
//!
//! Layout: one version byte ([`WIRE_VERSION`]), one kind tag, then the fields in declaration
//! order. Integers are little-endian fixed width (`u64` as 8 bytes, lengths as `u32`), `bool`
//! and `Option` as one byte that must be 0 or 1, sequences as a `u32` count then the items,
//! byte strings as a `u32` length then the bytes. Decoding checks every length against a fixed
//! bound and against the bytes actually left before allocating, so arbitrary input can neither
//! panic the decoder nor make it allocate more than a small multiple of the input's size.
//! A decoded buffer must be consumed exactly ([`DecodeError::TrailingBytes`] otherwise).

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::io::PersistOp;
use crate::message::Message;
use crate::types::{
    AcceptedEntry, Ballot, Batch, Decree, Membership, Payload, Proposal, ProposalId,
    ReleasedBatches, ReleasedBuffers, ReplicaId, SlotDecree, SlotDecrees, Snapshot, SnapshotMeta,
};

/// The encoding version written first in every buffer.
pub const WIRE_VERSION: u8 = 1;
/// The most items any one sequence may hold (entries, proposals, members).
pub const MAX_ITEMS: u32 = 1 << 20;
/// The most bytes one byte string may hold (a payload or a checkpoint).
pub const MAX_BLOB_BYTES: u32 = 1 << 30;

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside a field.
    #[error("input truncated: {what} needs {needed} bytes at offset {offset}, {left} left")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Where it starts.
        offset: usize,
        /// Bytes left.
        left: usize,
    },
    /// The version byte is not one this build reads.
    #[error("unsupported encoding version {0} (this build reads {WIRE_VERSION})")]
    UnsupportedVersion(u8),
    /// A kind tag is unknown.
    #[error("unknown {what} tag {tag}")]
    UnknownTag {
        /// Which enum.
        what: &'static str,
        /// The tag read.
        tag: u8,
    },
    /// A length or count exceeds its bound.
    #[error("{what} length {len} exceeds {max}")]
    TooLong {
        /// The field.
        what: &'static str,
        /// The length read.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// A flag byte is neither 0 nor 1.
    #[error("invalid flag byte {0} (must be 0 or 1)")]
    InvalidFlag(u8),
    /// Bytes remain after the value.
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
}

/// Encodes `msg` (appending to `out`).
pub fn encode_message(msg: &Message, out: &mut Vec<u8>) {
    let mut w = Writer { out };
    w.u8(WIRE_VERSION);
    match msg {
        Message::PreVote { ballot, commit } => {
            w.u8(0);
            w.ballot(ballot);
            w.u64(*commit);
        }
        Message::PreVoteReply { ballot, granted } => {
            w.u8(1);
            w.ballot(ballot);
            w.bool(*granted);
        }
        Message::Prepare {
            ballot,
            from_slot,
            transfer_from,
        } => {
            w.u8(2);
            w.ballot(ballot);
            w.u64(*from_slot);
            match transfer_from {
                None => w.u8(0),
                Some(b) => {
                    w.u8(1);
                    w.ballot(b);
                }
            }
        }
        Message::Promise {
            ballot,
            from_slot,
            log_start,
            commit,
            accepted,
        } => {
            w.u8(3);
            w.ballot(ballot);
            w.u64(*from_slot);
            w.u64(*log_start);
            w.u64(*commit);
            w.len(accepted.len());
            for e in accepted {
                w.accepted_entry(e);
            }
        }
        Message::Nack { ballot, promised } => {
            w.u8(4);
            w.ballot(ballot);
            w.ballot(promised);
        }
        Message::Accept {
            ballot,
            commit,
            entries,
        } => {
            w.u8(5);
            w.ballot(ballot);
            w.u64(*commit);
            w.slot_decrees(entries);
        }
        Message::Accepted { ballot, slots } => {
            w.u8(6);
            w.ballot(ballot);
            w.len(slots.len());
            for s in slots {
                w.u64(*s);
            }
        }
        Message::Heartbeat {
            ballot,
            commit,
            seq,
            sent_at,
        } => {
            w.u8(7);
            w.ballot(ballot);
            w.u64(*commit);
            w.u64(*seq);
            w.u64(*sent_at);
        }
        Message::HeartbeatReply {
            ballot,
            seq,
            sent_at,
            commit,
        } => {
            w.u8(8);
            w.ballot(ballot);
            w.u64(*seq);
            w.u64(*sent_at);
            w.u64(*commit);
        }
        Message::CatchUpRequest { commit } => {
            w.u8(9);
            w.u64(*commit);
        }
        Message::Learn { entries } => {
            w.u8(10);
            w.slot_decrees(entries);
        }
        Message::InstallSnapshot { snapshot } => {
            w.u8(11);
            w.snapshot(snapshot);
        }
        Message::TimeoutNow { ballot } => {
            w.u8(12);
            w.ballot(ballot);
        }
    }
}

/// Encodes `msg` into a new buffer.
pub fn message_to_vec(msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode_message(msg, &mut out);
    out
}

/// Decodes one message that fills `bytes` exactly. Never panics.
pub fn decode_message(bytes: &[u8]) -> Result<Message, DecodeError> {
    decode_message_inner(bytes, None)
}

/// Lists a receiver keeps to decode into ([`decode_message_reusing`]).
#[derive(Debug, Default)]
pub struct DecodeSpares {
    /// Entry lists of accepts decoded earlier.
    lists: Vec<SlotDecrees>,
    /// Where an accept's entries are gathered before they move into a list.
    scratch: Vec<SlotDecree>,
    /// Batches decoded earlier (the receiving replica keeps them in its log until a
    /// checkpoint), reused once nothing else holds them.
    batches: ReleasedBatches,
    /// Where a batch's requests are gathered before they move into a batch.
    proposals: Vec<Proposal>,
    /// Buffers earlier messages were copied into (their requests share them, and the
    /// receiving replica keeps those until a checkpoint), refilled once nothing else holds
    /// them.
    buffers: ReleasedBuffers,
}

/// Entry lists a [`DecodeSpares`] keeps (accepts decoded in one pass of a receiver's loop
/// are all handled before the next pass, so a few suffice).
const DECODE_SPARE_LISTS: usize = 8;

/// [`decode_message`], decoding an accept's entry list into a list of `spares` that nobody
/// holds any more (of the same length) instead of a new allocation. The receiving replica does
/// not keep the list past the step that handles the accept (it keeps the decrees, not the
/// list), so a receiver that decodes accept after accept allocates no list in steady state.
/// Likewise it refills the batches and the message-byte copies (which the requests' payloads
/// share) of earlier accepts once the replica let go of them (bounded; see `DecodeSpares`).
/// The result equals what [`decode_message`] returns.
pub fn decode_message_reusing(
    bytes: &[u8],
    spares: &mut DecodeSpares,
) -> Result<Message, DecodeError> {
    decode_message_inner(bytes, Some(spares))
}

fn decode_message_inner(
    bytes: &[u8],
    spares: Option<&mut DecodeSpares>,
) -> Result<Message, DecodeError> {
    let mut r = Reader::new(bytes);
    r.version()?;
    let msg = match r.u8("message tag")? {
        0 => Message::PreVote {
            ballot: r.ballot()?,
            commit: r.u64("commit")?,
        },
        1 => Message::PreVoteReply {
            ballot: r.ballot()?,
            granted: r.bool()?,
        },
        2 => {
            let ballot = r.ballot()?;
            let from_slot = r.u64("from_slot")?;
            let transfer_from = if r.bool()? { Some(r.ballot()?) } else { None };
            Message::Prepare {
                ballot,
                from_slot,
                transfer_from,
            }
        }
        3 => {
            let ballot = r.ballot()?;
            let from_slot = r.u64("from_slot")?;
            let log_start = r.u64("log_start")?;
            let commit = r.u64("commit")?;
            let n = r.count("accepted entries", 25)?;
            let mut accepted = Vec::with_capacity(n);
            for _ in 0..n {
                accepted.push(r.accepted_entry()?);
            }
            Message::Promise {
                ballot,
                from_slot,
                log_start,
                commit,
                accepted,
            }
        }
        4 => Message::Nack {
            ballot: r.ballot()?,
            promised: r.ballot()?,
        },
        5 => {
            let ballot = r.ballot()?;
            let commit = r.u64("commit")?;
            let entries = match spares {
                Some(spares) => r.reused_slot_decrees(spares)?,
                None => r.shared_slot_decrees()?,
            };
            Message::Accept {
                ballot,
                commit,
                entries,
            }
        }
        6 => {
            let ballot = r.ballot()?;
            let n = r.count("slots", 8)?;
            let mut slots = crate::types::AcceptedSlots::with_capacity(n);
            for _ in 0..n {
                slots.push(r.u64("slot")?);
            }
            Message::Accepted { ballot, slots }
        }
        7 => Message::Heartbeat {
            ballot: r.ballot()?,
            commit: r.u64("commit")?,
            seq: r.u64("seq")?,
            sent_at: r.u64("sent_at")?,
        },
        8 => Message::HeartbeatReply {
            ballot: r.ballot()?,
            seq: r.u64("seq")?,
            sent_at: r.u64("sent_at")?,
            commit: r.u64("commit")?,
        },
        9 => Message::CatchUpRequest {
            commit: r.u64("commit")?,
        },
        10 => Message::Learn {
            entries: r.slot_decrees()?,
        },
        11 => Message::InstallSnapshot {
            snapshot: r.snapshot()?,
        },
        12 => Message::TimeoutNow {
            ballot: r.ballot()?,
        },
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "message",
                tag,
            });
        }
    };
    r.finish()?;
    Ok(msg)
}

/// Encodes a persist operation (for hosts that log them as records).
pub fn encode_persist_op(op: &PersistOp, out: &mut Vec<u8>) {
    let mut w = Writer { out };
    w.u8(WIRE_VERSION);
    match op {
        PersistOp::SavePromise { ballot } => {
            w.u8(0);
            w.ballot(ballot);
        }
        PersistOp::Append { entries } => {
            w.u8(1);
            w.len(entries.len());
            for e in entries {
                w.accepted_entry(e);
            }
        }
        PersistOp::SaveSnapshot { snapshot } => {
            w.u8(2);
            w.snapshot(snapshot);
        }
    }
}

/// Decodes one persist operation that fills `bytes` exactly. Never panics.
pub fn decode_persist_op(bytes: &[u8]) -> Result<PersistOp, DecodeError> {
    let mut r = Reader::new(bytes);
    r.version()?;
    let op = match r.u8("persist tag")? {
        0 => PersistOp::SavePromise {
            ballot: r.ballot()?,
        },
        1 => {
            let n = r.count("accepted entries", 25)?;
            let mut entries = crate::types::AcceptedEntries::with_capacity(n);
            for _ in 0..n {
                entries.push(r.accepted_entry()?);
            }
            PersistOp::Append { entries }
        }
        2 => PersistOp::SaveSnapshot {
            snapshot: r.snapshot()?,
        },
        tag => {
            return Err(DecodeError::UnknownTag {
                what: "persist op",
                tag,
            });
        }
    };
    r.finish()?;
    Ok(op)
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    fn bool(&mut self, v: bool) {
        self.out.push(u8::from(v));
    }
    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    /// Writes a length. Values built by this crate stay far below `u32::MAX`; a larger one is
    /// a caller bug the decoder would refuse anyway, so it saturates rather than wraps.
    fn len(&mut self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.out.extend_from_slice(&n.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.out.extend_from_slice(b);
    }
    fn ballot(&mut self, b: &Ballot) {
        self.u64(b.round);
        self.u64(b.leader.0);
    }
    fn ids(&mut self, ids: &BTreeSet<ReplicaId>) {
        self.len(ids.len());
        for id in ids {
            self.u64(id.0);
        }
    }
    fn membership(&mut self, m: &Membership) {
        self.ids(&m.voters);
        self.ids(&m.learners);
    }
    fn decree(&mut self, d: &Decree) {
        match d {
            Decree::Noop => self.u8(0),
            Decree::Batch(props) => {
                self.u8(1);
                self.len(props.len());
                for p in props {
                    self.u64(p.id.0);
                    self.bytes(&p.payload);
                }
            }
            Decree::Membership(m) => {
                self.u8(2);
                self.membership(m);
            }
        }
    }
    fn accepted_entry(&mut self, e: &AcceptedEntry) {
        self.u64(e.slot);
        self.ballot(&e.ballot);
        self.decree(&e.decree);
    }
    fn slot_decrees(&mut self, entries: &[SlotDecree]) {
        self.len(entries.len());
        for e in entries {
            self.u64(e.slot);
            self.decree(&e.decree);
        }
    }
    fn snapshot(&mut self, s: &Snapshot) {
        self.u64(s.meta.slot);
        self.membership(&s.meta.membership);
        self.bytes(&s.data);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// A copy of `bytes` that request payloads share, made at the first payload.
    shared: Option<Arc<Vec<u8>>>,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader {
            bytes,
            pos: 0,
            shared: None,
        }
    }

    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, what: &'static str, n: usize) -> Result<&[u8], DecodeError> {
        let left = self.left();
        if n > left {
            return Err(DecodeError::Truncated {
                what,
                needed: n,
                offset: self.pos,
                left,
            });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn version(&mut self) -> Result<(), DecodeError> {
        match self.u8("version")? {
            WIRE_VERSION => Ok(()),
            v => Err(DecodeError::UnsupportedVersion(v)),
        }
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(what, 1)?[0])
    }

    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8("flag")? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(DecodeError::InvalidFlag(b)),
        }
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(what, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(what, 4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Ok(u32::from_le_bytes(a))
    }

    /// A sequence count, checked against [`MAX_ITEMS`] and against the bytes left given each
    /// item's minimum encoded size (so capacity reserved never exceeds the input).
    fn count(&mut self, what: &'static str, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let n = self.u32(what)?;
        if n > MAX_ITEMS {
            return Err(DecodeError::TooLong {
                what,
                len: n.into(),
                max: MAX_ITEMS.into(),
            });
        }
        let n = n as usize;
        let left = self.left();
        if n.saturating_mul(min_item_bytes) > left {
            return Err(DecodeError::Truncated {
                what,
                needed: n.saturating_mul(min_item_bytes),
                offset: self.pos,
                left,
            });
        }
        Ok(n)
    }

    fn bytes(&mut self, what: &'static str) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32(what)?;
        if n > MAX_BLOB_BYTES {
            return Err(DecodeError::TooLong {
                what,
                len: n.into(),
                max: MAX_BLOB_BYTES.into(),
            });
        }
        Ok(self.take(what, n as usize)?.to_vec())
    }

    /// A request payload: a range of one copy of the whole input that every payload of this
    /// input shares (one allocation per message, not one per request).
    fn payload(&mut self) -> Result<Payload, DecodeError> {
        let what = "payload";
        let n = self.u32(what)?;
        if n > MAX_BLOB_BYTES {
            return Err(DecodeError::TooLong {
                what,
                len: n.into(),
                max: MAX_BLOB_BYTES.into(),
            });
        }
        let start = self.pos;
        self.take(what, n as usize)?;
        let buf = match &self.shared {
            Some(buf) => Arc::clone(buf),
            None => {
                let buf = Arc::new(self.bytes.to_vec());
                self.shared = Some(Arc::clone(&buf));
                buf
            }
        };
        Ok(Payload::shared(buf, start, self.pos))
    }

    fn ballot(&mut self) -> Result<Ballot, DecodeError> {
        Ok(Ballot {
            round: self.u64("ballot round")?,
            leader: ReplicaId(self.u64("ballot leader")?),
        })
    }

    fn ids(&mut self, what: &'static str) -> Result<BTreeSet<ReplicaId>, DecodeError> {
        let n = self.count(what, 8)?;
        let mut ids = BTreeSet::new();
        for _ in 0..n {
            ids.insert(ReplicaId(self.u64(what)?));
        }
        Ok(ids)
    }

    fn membership(&mut self) -> Result<Membership, DecodeError> {
        Ok(Membership {
            voters: self.ids("voters")?,
            learners: self.ids("learners")?,
        })
    }

    fn decree(&mut self) -> Result<Decree, DecodeError> {
        match self.u8("decree tag")? {
            0 => Ok(Decree::Noop),
            1 => {
                let n = self.count("proposals", 12)?;
                let filler = || Proposal {
                    id: ProposalId(0),
                    payload: Vec::new().into(),
                };
                let batch: Batch = self.shared_items(n, filler, |r| {
                    let id = ProposalId(r.u64("proposal id")?);
                    let payload = r.payload()?;
                    Ok(Proposal { id, payload })
                })?;
                Ok(Decree::Batch(batch))
            }
            2 => Ok(Decree::Membership(self.membership()?)),
            tag => Err(DecodeError::UnknownTag {
                what: "decree",
                tag,
            }),
        }
    }

    /// [`Reader::decree`], moving a batch's requests into a batch of `batches` nobody holds any
    /// more (see [`Batch::recycle`]) and keeping the batch there for later reuse.
    ///
    /// The bytes the requests share are copied into a buffer of `buffers`
    /// ([`ReleasedBuffers::fill`]) rather than a new one.
    fn decree_reusing(
        &mut self,
        batches: &mut ReleasedBatches,
        proposals: &mut Vec<Proposal>,
        buffers: &mut ReleasedBuffers,
    ) -> Result<Decree, DecodeError> {
        let at = self.pos;
        if self.u8("decree tag")? != 1 {
            self.pos = at;
            return self.decree();
        }
        let n = self.count("proposals", 12)?;
        if n > 0 && self.shared.is_none() {
            self.shared = Some(buffers.fill(self.bytes));
        }
        proposals.clear();
        for _ in 0..n {
            let item = self.u64("proposal id").and_then(|id| {
                let payload = self.payload()?;
                Ok(Proposal {
                    id: ProposalId(id),
                    payload,
                })
            });
            match item {
                Ok(p) => proposals.push(p),
                Err(e) => {
                    proposals.clear();
                    return Err(e);
                }
            }
        }
        let batch = Batch::recycle(batches, proposals);
        batches.release(batch.clone(), true);
        Ok(Decree::Batch(batch))
    }

    fn accepted_entry(&mut self) -> Result<AcceptedEntry, DecodeError> {
        let slot = self.u64("slot")?;
        let ballot = self.ballot()?;
        Ok(AcceptedEntry {
            slot,
            ballot,
            decree: self.decree()?,
        })
    }

    /// Decodes `n` items straight into a shared slice ([`Batch`], [`SlotDecrees`]): one
    /// allocation, sized up front from the count (which [`Reader::count`] bounded by the input
    /// left). After the first error the remaining places are filled with `filler()` and the
    /// error is returned.
    fn shared_items<T, S: FromIterator<T>>(
        &mut self,
        n: usize,
        filler: impl Fn() -> T,
        mut item: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<S, DecodeError> {
        let mut failed = None;
        let items: S = (0..n)
            .map(|_| {
                if failed.is_some() {
                    return filler();
                }
                item(self).unwrap_or_else(|e| {
                    failed = Some(e);
                    filler()
                })
            })
            .collect();
        match failed {
            Some(e) => Err(e),
            None => Ok(items),
        }
    }

    /// An accept's entries, decoded straight into one shared list.
    fn shared_slot_decrees(&mut self) -> Result<SlotDecrees, DecodeError> {
        let n = self.count("entries", 9)?;
        let filler = || SlotDecree {
            slot: 0,
            decree: Decree::Noop,
        };
        self.shared_items(n, filler, |r| {
            let slot = r.u64("slot")?;
            Ok(SlotDecree {
                slot,
                decree: r.decree()?,
            })
        })
    }

    /// An accept's entries, gathered in `spares`' scratch buffer, then moved into a spare list
    /// nobody holds any more (or a new one).
    fn reused_slot_decrees(
        &mut self,
        spares: &mut DecodeSpares,
    ) -> Result<SlotDecrees, DecodeError> {
        let n = self.count("entries", 9)?;
        let DecodeSpares {
            lists,
            scratch,
            batches,
            proposals,
            buffers,
        } = spares;
        scratch.clear();
        for _ in 0..n {
            let slot = match self.u64("slot") {
                Ok(slot) => slot,
                Err(e) => {
                    scratch.clear();
                    return Err(e);
                }
            };
            match self.decree_reusing(batches, proposals, buffers) {
                Ok(decree) => scratch.push(SlotDecree { slot, decree }),
                Err(e) => {
                    scratch.clear();
                    return Err(e);
                }
            }
        }
        Ok(SlotDecrees::recycle(lists, scratch, DECODE_SPARE_LISTS))
    }

    fn slot_decrees(&mut self) -> Result<Vec<SlotDecree>, DecodeError> {
        let n = self.count("entries", 9)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let slot = self.u64("slot")?;
            v.push(SlotDecree {
                slot,
                decree: self.decree()?,
            });
        }
        Ok(v)
    }

    fn snapshot(&mut self) -> Result<Snapshot, DecodeError> {
        let slot = self.u64("snapshot slot")?;
        let membership = self.membership()?;
        let data = self.bytes("snapshot data")?;
        Ok(Snapshot {
            meta: SnapshotMeta { slot, membership },
            data,
        })
    }

    fn finish(&self) -> Result<(), DecodeError> {
        match self.left() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::{btree_set, vec};
    use proptest::prelude::*;

    fn ballot() -> impl Strategy<Value = Ballot> {
        (any::<u64>(), any::<u64>()).prop_map(|(r, l)| Ballot::new(r, ReplicaId(l)))
    }

    fn membership() -> impl Strategy<Value = Membership> {
        (
            btree_set(any::<u64>().prop_map(ReplicaId), 0..6),
            btree_set(any::<u64>().prop_map(ReplicaId), 0..3),
        )
            .prop_map(|(voters, learners)| Membership { voters, learners })
    }

    fn decree() -> impl Strategy<Value = Decree> {
        prop_oneof![
            Just(Decree::Noop),
            vec((any::<u64>(), vec(any::<u8>(), 0..40)), 0..5).prop_map(|ps| Decree::Batch(
                ps.into_iter()
                    .map(|(id, payload)| Proposal {
                        id: ProposalId(id),
                        payload: payload.into()
                    })
                    .collect()
            )),
            membership().prop_map(Decree::Membership),
        ]
    }

    fn slot_decrees() -> impl Strategy<Value = Vec<SlotDecree>> {
        vec(
            (any::<u64>(), decree()).prop_map(|(slot, decree)| SlotDecree { slot, decree }),
            0..5,
        )
    }

    fn accepted() -> impl Strategy<Value = Vec<AcceptedEntry>> {
        vec(
            (any::<u64>(), ballot(), decree()).prop_map(|(slot, ballot, decree)| AcceptedEntry {
                slot,
                ballot,
                decree,
            }),
            0..5,
        )
    }

    fn snapshot() -> impl Strategy<Value = Snapshot> {
        (any::<u64>(), membership(), vec(any::<u8>(), 0..64)).prop_map(
            |(slot, membership, data)| Snapshot {
                meta: SnapshotMeta { slot, membership },
                data,
            },
        )
    }

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (ballot(), any::<u64>())
                .prop_map(|(ballot, commit)| Message::PreVote { ballot, commit }),
            (ballot(), any::<bool>())
                .prop_map(|(ballot, granted)| Message::PreVoteReply { ballot, granted }),
            (ballot(), any::<u64>(), proptest::option::of(ballot())).prop_map(
                |(ballot, from_slot, transfer_from)| Message::Prepare {
                    ballot,
                    from_slot,
                    transfer_from
                }
            ),
            (
                ballot(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                accepted()
            )
                .prop_map(|(ballot, from_slot, log_start, commit, accepted)| {
                    Message::Promise {
                        ballot,
                        from_slot,
                        log_start,
                        commit,
                        accepted,
                    }
                }),
            (ballot(), ballot()).prop_map(|(ballot, promised)| Message::Nack { ballot, promised }),
            (ballot(), any::<u64>(), slot_decrees()).prop_map(|(ballot, commit, entries)| {
                Message::Accept {
                    ballot,
                    commit,
                    entries: entries.into(),
                }
            }),
            (ballot(), vec(any::<u64>(), 0..8)).prop_map(|(ballot, slots)| Message::Accepted {
                ballot,
                slots: slots.into(),
            }),
            (ballot(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
                |(ballot, commit, seq, sent_at)| {
                    Message::Heartbeat {
                        ballot,
                        commit,
                        seq,
                        sent_at,
                    }
                }
            ),
            (ballot(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
                |(ballot, seq, sent_at, commit)| {
                    Message::HeartbeatReply {
                        ballot,
                        seq,
                        sent_at,
                        commit,
                    }
                }
            ),
            any::<u64>().prop_map(|commit| Message::CatchUpRequest { commit }),
            slot_decrees().prop_map(|entries| Message::Learn { entries }),
            snapshot().prop_map(|snapshot| Message::InstallSnapshot { snapshot }),
            ballot().prop_map(|ballot| Message::TimeoutNow { ballot }),
        ]
    }

    fn persist_op() -> impl Strategy<Value = PersistOp> {
        prop_oneof![
            ballot().prop_map(|ballot| PersistOp::SavePromise { ballot }),
            accepted().prop_map(|entries| PersistOp::Append {
                entries: entries.into(),
            }),
            snapshot().prop_map(|snapshot| PersistOp::SaveSnapshot { snapshot }),
        ]
    }

    proptest! {
        #[test]
        fn message_round_trips(msg in message()) {
            let bytes = message_to_vec(&msg);
            prop_assert_eq!(decode_message(&bytes), Ok(msg));
        }

        /// Decoding into spare lists gives what a fresh decode gives, for valid and corrupted
        /// input alike (the spares carry nothing from one message into the next).
        #[test]
        fn reusing_decode_equals_fresh_decode(
            msgs in vec(message(), 1..6),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut spares = DecodeSpares::default();
            for (i, msg) in msgs.iter().enumerate() {
                let mut bytes = message_to_vec(msg);
                if i == 1 {
                    let j = at.index(bytes.len());
                    bytes[j] = byte;
                }
                prop_assert_eq!(decode_message_reusing(&bytes, &mut spares), decode_message(&bytes));
            }
        }

        #[test]
        fn persist_op_round_trips(op in persist_op()) {
            let mut bytes = Vec::new();
            encode_persist_op(&op, &mut bytes);
            prop_assert_eq!(decode_persist_op(&bytes), Ok(op));
        }

        /// Every strict prefix of a valid encoding is refused as truncated, never a panic.
        #[test]
        fn truncated_messages_are_refused(msg in message(), cut in any::<prop::sample::Index>()) {
            let bytes = message_to_vec(&msg);
            let cut = cut.index(bytes.len());
            let truncated = matches!(decode_message(&bytes[..cut]), Err(DecodeError::Truncated { .. }));
            prop_assert!(truncated, "prefix of {} bytes not refused as truncated", cut);
        }

        /// Stand-in for the fuzz target on stable: arbitrary bytes never panic the decoders,
        /// and whatever decodes re-encodes to the same bytes (the encoding is canonical except
        /// for member-set order, which a BTreeSet normalises).
        #[test]
        fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
            if let Ok(msg) = decode_message(&bytes) {
                prop_assert_eq!(decode_message(&message_to_vec(&msg)), Ok(msg));
            }
            let _ = decode_persist_op(&bytes);
        }

        /// Mutating one byte of a valid encoding never panics the decoder.
        #[test]
        fn corrupted_messages_never_panic(msg in message(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = message_to_vec(&msg);
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let _ = decode_message(&bytes);
        }
    }

    #[test]
    fn an_accept_decoded_after_the_previous_one_was_dropped_reuses_its_list() {
        let accept = |slot| Message::Accept {
            ballot: Ballot::new(3, ReplicaId(1)),
            commit: slot - 1,
            entries: vec![SlotDecree {
                slot,
                decree: Decree::Noop,
            }]
            .into(),
        };
        let mut spares = DecodeSpares::default();
        let first = decode_message_reusing(&message_to_vec(&accept(5)), &mut spares).unwrap();
        let Message::Accept { entries, .. } = &first else {
            panic!("not an accept: {first:?}");
        };
        let list = entries.as_ptr();
        // Still held: the next accept gets a list of its own.
        let second = decode_message_reusing(&message_to_vec(&accept(6)), &mut spares).unwrap();
        let Message::Accept { entries, .. } = &second else {
            panic!("not an accept: {second:?}");
        };
        assert_ne!(entries.as_ptr(), list);
        assert_eq!(second, accept(6));
        drop(first);
        let third = decode_message_reusing(&message_to_vec(&accept(7)), &mut spares).unwrap();
        let Message::Accept { entries, .. } = &third else {
            panic!("not an accept: {third:?}");
        };
        assert_eq!(
            entries.as_ptr(),
            list,
            "the dropped accept's list was not reused"
        );
        assert_eq!(third, accept(7));
    }

    #[test]
    fn a_batch_decoded_after_the_previous_one_was_dropped_refills_its_message_copy() {
        let accept = |slot: u64| Message::Accept {
            ballot: Ballot::new(3, ReplicaId(1)),
            commit: slot - 1,
            entries: vec![SlotDecree {
                slot,
                decree: Decree::Batch(Batch::from(vec![Proposal {
                    id: ProposalId(slot),
                    payload: vec![slot as u8; 16].into(),
                }])),
            }]
            .into(),
        };
        let batch = |msg: &Message| match msg {
            Message::Accept { entries, .. } => match &entries[0].decree {
                Decree::Batch(b) => b.clone(),
                other => panic!("not a batch: {other:?}"),
            },
            other => panic!("not an accept: {other:?}"),
        };
        let payload_at = |msg: &Message| batch(msg).proposals()[0].payload.as_ptr();
        let list_at = |msg: &Message| batch(msg).proposals().as_ptr();
        let mut spares = DecodeSpares::default();
        let first = decode_message_reusing(&message_to_vec(&accept(5)), &mut spares).unwrap();
        let (bytes, list) = (payload_at(&first), list_at(&first));
        // Still held: the next accept's requests get a copy and a batch of their own.
        let second = decode_message_reusing(&message_to_vec(&accept(6)), &mut spares).unwrap();
        assert_ne!(payload_at(&second), bytes);
        assert_ne!(list_at(&second), list);
        assert_eq!(second, accept(6));
        drop(first);
        // The spare entry list holds the first batch until it is reused, and the batch holds
        // the first copy's requests until it is reused in turn: the copy comes free, and is
        // refilled, within the next three accepts (all still held here).
        let later: Vec<Message> = (7..10)
            .map(|slot| decode_message_reusing(&message_to_vec(&accept(slot)), &mut spares))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(later, (7..10).map(accept).collect::<Vec<_>>());
        assert!(
            later.iter().any(|m| payload_at(m) == bytes),
            "the dropped accept's message copy was not refilled"
        );
        assert!(
            later.iter().any(|m| list_at(m) == list),
            "the dropped accept's batch was not reused"
        );
        drop(second);
    }

    #[test]
    fn typed_errors() {
        assert_eq!(
            decode_message(&[]),
            Err(DecodeError::Truncated {
                what: "version",
                needed: 1,
                offset: 0,
                left: 0
            })
        );
        assert_eq!(
            decode_message(&[9, 0]),
            Err(DecodeError::UnsupportedVersion(9))
        );
        assert_eq!(
            decode_message(&[WIRE_VERSION, 200]),
            Err(DecodeError::UnknownTag {
                what: "message",
                tag: 200
            })
        );
        let mut bytes = message_to_vec(&Message::CatchUpRequest { commit: 5 });
        bytes.push(0);
        assert_eq!(decode_message(&bytes), Err(DecodeError::TrailingBytes(1)));
        let mut bytes = message_to_vec(&Message::PreVoteReply {
            ballot: Ballot::ZERO,
            granted: true,
        });
        let last = bytes.len() - 1;
        bytes[last] = 2;
        assert_eq!(decode_message(&bytes), Err(DecodeError::InvalidFlag(2)));
        // A count far beyond the input is refused before anything is allocated.
        let mut bytes = vec![WIRE_VERSION, 10];
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_message(&bytes),
            Err(DecodeError::TooLong {
                what: "entries",
                ..
            })
        ));
        let mut bytes = vec![WIRE_VERSION, 10];
        bytes.extend_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(
            decode_message(&bytes),
            Err(DecodeError::Truncated {
                what: "entries",
                ..
            })
        ));
    }

    #[test]
    fn layout_is_stable() {
        // Pin the layout: a change here is a wire-format change and needs a version bump.
        let msg = Message::Heartbeat {
            ballot: Ballot::new(2, ReplicaId(3)),
            commit: 4,
            seq: 5,
            sent_at: 6,
        };
        let bytes = message_to_vec(&msg);
        let mut want = vec![WIRE_VERSION, 7];
        for v in [2u64, 3, 4, 5, 6] {
            want.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(bytes, want);
    }
}
