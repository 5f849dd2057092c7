//! Byte encodings owned by the runtime: persistence-log records (one [`PersistOp`] each) and
//! protocol messages on the wire ([`Message`]).
//!
//! Little-endian, length-prefixed, versioned by a leading tag byte. Decoding never panics on bad
//! input: it returns [`DecodeError`] (the persistence log already rejects records whose checksum
//! fails, so a decode error here means a format mismatch, not a torn write).

use std::collections::BTreeSet;

use keel_core::{
    AcceptedEntry, Ballot, Decree, Membership, Message, PersistOp, Proposal, ProposalId, ReplicaId,
    SlotDecree, Snapshot, SnapshotMeta,
};

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside a value.
    #[error("record truncated at byte {at} (needed {needed} more)")]
    Truncated {
        /// Where the input ended.
        at: usize,
        /// Bytes missing.
        needed: usize,
    },
    /// A tag byte names no known variant.
    #[error("unknown {what} tag {tag} at byte {at}")]
    BadTag {
        /// What was being decoded.
        what: &'static str,
        /// The tag.
        tag: u8,
        /// Where.
        at: usize,
    },
    /// Bytes were left over after the value.
    #[error("{extra} trailing bytes after the record")]
    Trailing {
        /// How many.
        extra: usize,
    },
}

/// Appends little-endian values to a buffer.
pub(crate) struct Writer<'a>(pub &'a mut Vec<u8>);

impl Writer<'_> {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
}

/// Reads little-endian values from a slice.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let rest = self.buf.len() - self.at;
        if rest < n {
            return Err(DecodeError::Truncated {
                at: self.at,
                needed: n - rest,
            });
        }
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    pub fn len(&mut self) -> Result<usize, DecodeError> {
        let n = self.u64()?;
        let rest = self.buf.len() - self.at;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= rest)
            .ok_or(DecodeError::Truncated {
                at: self.at,
                needed: usize::try_from(n)
                    .unwrap_or(usize::MAX)
                    .saturating_sub(rest),
            })
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.len()?;
        self.take(n)
    }
    pub fn at(&self) -> usize {
        self.at
    }
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.buf.len() - self.at {
            0 => Ok(()),
            extra => Err(DecodeError::Trailing { extra }),
        }
    }
}

fn put_ballot(w: &mut Writer<'_>, b: Ballot) {
    w.u64(b.round);
    w.u64(b.leader.0);
}

fn get_ballot(r: &mut Reader<'_>) -> Result<Ballot, DecodeError> {
    Ok(Ballot::new(r.u64()?, ReplicaId(r.u64()?)))
}

fn put_set(w: &mut Writer<'_>, s: &BTreeSet<ReplicaId>) {
    w.u64(s.len() as u64);
    for id in s {
        w.u64(id.0);
    }
}

fn get_set(r: &mut Reader<'_>) -> Result<BTreeSet<ReplicaId>, DecodeError> {
    let n = r.u64()?;
    let mut s = BTreeSet::new();
    for _ in 0..n {
        s.insert(ReplicaId(r.u64()?));
    }
    Ok(s)
}

fn put_membership(w: &mut Writer<'_>, m: &Membership) {
    put_set(w, &m.voters);
    put_set(w, &m.learners);
}

fn get_membership(r: &mut Reader<'_>) -> Result<Membership, DecodeError> {
    Ok(Membership {
        voters: get_set(r)?,
        learners: get_set(r)?,
    })
}

fn put_decree(w: &mut Writer<'_>, d: &Decree) {
    match d {
        Decree::Noop => w.u8(0),
        Decree::Batch(props) => {
            w.u8(1);
            w.u64(props.len() as u64);
            for p in props {
                w.u64(p.id.0);
                w.bytes(&p.payload);
            }
        }
        Decree::Membership(m) => {
            w.u8(2);
            put_membership(w, m);
        }
    }
}

fn get_decree(r: &mut Reader<'_>) -> Result<Decree, DecodeError> {
    let at = r.at();
    match r.u8()? {
        0 => Ok(Decree::Noop),
        1 => {
            let n = r.u64()?;
            let mut props = Vec::new();
            for _ in 0..n {
                let id = ProposalId(r.u64()?);
                let payload = r.bytes()?.to_vec();
                props.push(Proposal { id, payload });
            }
            Ok(Decree::Batch(props))
        }
        2 => Ok(Decree::Membership(get_membership(r)?)),
        tag => Err(DecodeError::BadTag {
            what: "decree",
            tag,
            at,
        }),
    }
}

/// Appends the encoding of `op` to `out`.
pub fn encode_persist_op(op: &PersistOp, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    match op {
        PersistOp::SavePromise { ballot } => {
            w.u8(1);
            put_ballot(&mut w, *ballot);
        }
        PersistOp::Append { entries } => {
            w.u8(2);
            put_accepted(&mut w, entries);
        }
        PersistOp::SaveSnapshot { snapshot } => {
            w.u8(3);
            put_snapshot(&mut w, snapshot);
        }
    }
}

/// Decodes one record written by [`encode_persist_op`].
pub fn decode_persist_op(bytes: &[u8]) -> Result<PersistOp, DecodeError> {
    let mut r = Reader::new(bytes);
    let op = match r.u8()? {
        1 => PersistOp::SavePromise {
            ballot: get_ballot(&mut r)?,
        },
        2 => PersistOp::Append {
            entries: get_accepted(&mut r)?,
        },
        3 => PersistOp::SaveSnapshot {
            snapshot: get_snapshot(&mut r)?,
        },
        tag => {
            return Err(DecodeError::BadTag {
                what: "persist op",
                tag,
                at: 0,
            });
        }
    };
    r.finish()?;
    Ok(op)
}

fn put_slot_decrees(w: &mut Writer<'_>, entries: &[SlotDecree]) {
    w.u64(entries.len() as u64);
    for e in entries {
        w.u64(e.slot);
        put_decree(w, &e.decree);
    }
}

fn get_slot_decrees(r: &mut Reader<'_>) -> Result<Vec<SlotDecree>, DecodeError> {
    let n = r.u64()?;
    let mut v = Vec::new();
    for _ in 0..n {
        let slot = r.u64()?;
        let decree = get_decree(r)?;
        v.push(SlotDecree { slot, decree });
    }
    Ok(v)
}

fn put_accepted(w: &mut Writer<'_>, entries: &[AcceptedEntry]) {
    w.u64(entries.len() as u64);
    for e in entries {
        w.u64(e.slot);
        put_ballot(w, e.ballot);
        put_decree(w, &e.decree);
    }
}

fn get_accepted(r: &mut Reader<'_>) -> Result<Vec<AcceptedEntry>, DecodeError> {
    let n = r.u64()?;
    let mut entries = Vec::new();
    for _ in 0..n {
        let slot = r.u64()?;
        let ballot = get_ballot(r)?;
        let decree = get_decree(r)?;
        entries.push(AcceptedEntry {
            slot,
            ballot,
            decree,
        });
    }
    Ok(entries)
}

fn put_snapshot(w: &mut Writer<'_>, snapshot: &Snapshot) {
    w.u64(snapshot.meta.slot);
    put_membership(w, &snapshot.meta.membership);
    w.bytes(&snapshot.data);
}

fn get_snapshot(r: &mut Reader<'_>) -> Result<Snapshot, DecodeError> {
    let slot = r.u64()?;
    let membership = get_membership(r)?;
    let data = r.bytes()?.to_vec();
    Ok(Snapshot {
        meta: SnapshotMeta { slot, membership },
        data,
    })
}

/// Appends the wire encoding of `msg` to `out`.
pub fn encode_message(msg: &Message, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    match msg {
        Message::PreVote { ballot, commit } => {
            w.u8(1);
            put_ballot(&mut w, *ballot);
            w.u64(*commit);
        }
        Message::PreVoteReply { ballot, granted } => {
            w.u8(2);
            put_ballot(&mut w, *ballot);
            w.u8(u8::from(*granted));
        }
        Message::Prepare {
            ballot,
            from_slot,
            transfer_from,
        } => {
            w.u8(3);
            put_ballot(&mut w, *ballot);
            w.u64(*from_slot);
            match transfer_from {
                None => w.u8(0),
                Some(b) => {
                    w.u8(1);
                    put_ballot(&mut w, *b);
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
            w.u8(4);
            put_ballot(&mut w, *ballot);
            w.u64(*from_slot);
            w.u64(*log_start);
            w.u64(*commit);
            put_accepted(&mut w, accepted);
        }
        Message::Nack { ballot, promised } => {
            w.u8(5);
            put_ballot(&mut w, *ballot);
            put_ballot(&mut w, *promised);
        }
        Message::Accept {
            ballot,
            commit,
            entries,
        } => {
            w.u8(6);
            put_ballot(&mut w, *ballot);
            w.u64(*commit);
            put_slot_decrees(&mut w, entries);
        }
        Message::Accepted { ballot, slots } => {
            w.u8(7);
            put_ballot(&mut w, *ballot);
            w.u64(slots.len() as u64);
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
            w.u8(8);
            put_ballot(&mut w, *ballot);
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
            w.u8(9);
            put_ballot(&mut w, *ballot);
            w.u64(*seq);
            w.u64(*sent_at);
            w.u64(*commit);
        }
        Message::CatchUpRequest { commit } => {
            w.u8(10);
            w.u64(*commit);
        }
        Message::Learn { entries } => {
            w.u8(11);
            put_slot_decrees(&mut w, entries);
        }
        Message::InstallSnapshot { snapshot } => {
            w.u8(12);
            put_snapshot(&mut w, snapshot);
        }
        Message::TimeoutNow { ballot } => {
            w.u8(13);
            put_ballot(&mut w, *ballot);
        }
    }
}

/// Decodes one message written by [`encode_message`].
pub fn decode_message(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader::new(bytes);
    let msg = match r.u8()? {
        1 => Message::PreVote {
            ballot: get_ballot(&mut r)?,
            commit: r.u64()?,
        },
        2 => Message::PreVoteReply {
            ballot: get_ballot(&mut r)?,
            granted: r.u8()? != 0,
        },
        3 => {
            let ballot = get_ballot(&mut r)?;
            let from_slot = r.u64()?;
            let at = r.at();
            let transfer_from = match r.u8()? {
                0 => None,
                1 => Some(get_ballot(&mut r)?),
                tag => {
                    return Err(DecodeError::BadTag {
                        what: "option",
                        tag,
                        at,
                    });
                }
            };
            Message::Prepare {
                ballot,
                from_slot,
                transfer_from,
            }
        }
        4 => Message::Promise {
            ballot: get_ballot(&mut r)?,
            from_slot: r.u64()?,
            log_start: r.u64()?,
            commit: r.u64()?,
            accepted: get_accepted(&mut r)?,
        },
        5 => Message::Nack {
            ballot: get_ballot(&mut r)?,
            promised: get_ballot(&mut r)?,
        },
        6 => Message::Accept {
            ballot: get_ballot(&mut r)?,
            commit: r.u64()?,
            entries: get_slot_decrees(&mut r)?,
        },
        7 => {
            let ballot = get_ballot(&mut r)?;
            let n = r.u64()?;
            let mut slots = Vec::new();
            for _ in 0..n {
                slots.push(r.u64()?);
            }
            Message::Accepted { ballot, slots }
        }
        8 => Message::Heartbeat {
            ballot: get_ballot(&mut r)?,
            commit: r.u64()?,
            seq: r.u64()?,
            sent_at: r.u64()?,
        },
        9 => Message::HeartbeatReply {
            ballot: get_ballot(&mut r)?,
            seq: r.u64()?,
            sent_at: r.u64()?,
            commit: r.u64()?,
        },
        10 => Message::CatchUpRequest { commit: r.u64()? },
        11 => Message::Learn {
            entries: get_slot_decrees(&mut r)?,
        },
        12 => Message::InstallSnapshot {
            snapshot: get_snapshot(&mut r)?,
        },
        13 => Message::TimeoutNow {
            ballot: get_ballot(&mut r)?,
        },
        tag => {
            return Err(DecodeError::BadTag {
                what: "message",
                tag,
                at: 0,
            });
        }
    };
    r.finish()?;
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops() -> Vec<PersistOp> {
        let m = Membership {
            voters: [ReplicaId(1), ReplicaId(2)].into_iter().collect(),
            learners: [ReplicaId(9)].into_iter().collect(),
        };
        vec![
            PersistOp::SavePromise {
                ballot: Ballot::new(3, ReplicaId(2)),
            },
            PersistOp::Append {
                entries: vec![
                    AcceptedEntry {
                        slot: 1,
                        ballot: Ballot::new(3, ReplicaId(2)),
                        decree: Decree::Noop,
                    },
                    AcceptedEntry {
                        slot: 2,
                        ballot: Ballot::new(3, ReplicaId(2)),
                        decree: Decree::Batch(vec![
                            Proposal {
                                id: ProposalId(7),
                                payload: b"hello".to_vec(),
                            },
                            Proposal {
                                id: ProposalId(8),
                                payload: vec![],
                            },
                        ]),
                    },
                    AcceptedEntry {
                        slot: 3,
                        ballot: Ballot::new(4, ReplicaId(1)),
                        decree: Decree::Membership(m.clone()),
                    },
                ],
            },
            PersistOp::SaveSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        slot: 2,
                        membership: m,
                    },
                    data: vec![1, 2, 3],
                },
            },
        ]
    }

    fn messages() -> Vec<Message> {
        let b = Ballot::new(5, ReplicaId(3));
        let snapshot = match ops().pop() {
            Some(PersistOp::SaveSnapshot { snapshot }) => snapshot,
            other => panic!("{other:?}"),
        };
        let accepted = match ops().remove(1) {
            PersistOp::Append { entries } => entries,
            other => panic!("{other:?}"),
        };
        let decrees: Vec<SlotDecree> = accepted
            .iter()
            .map(|e| SlotDecree {
                slot: e.slot,
                decree: e.decree.clone(),
            })
            .collect();
        vec![
            Message::PreVote {
                ballot: b,
                commit: 9,
            },
            Message::PreVoteReply {
                ballot: b,
                granted: true,
            },
            Message::Prepare {
                ballot: b,
                from_slot: 4,
                transfer_from: None,
            },
            Message::Prepare {
                ballot: b,
                from_slot: 4,
                transfer_from: Some(Ballot::new(4, ReplicaId(1))),
            },
            Message::Promise {
                ballot: b,
                from_slot: 4,
                log_start: 2,
                commit: 3,
                accepted,
            },
            Message::Nack {
                ballot: b,
                promised: Ballot::new(6, ReplicaId(2)),
            },
            Message::Accept {
                ballot: b,
                commit: 2,
                entries: decrees.clone(),
            },
            Message::Accepted {
                ballot: b,
                slots: vec![1, 2, 3],
            },
            Message::Heartbeat {
                ballot: b,
                commit: 1,
                seq: 2,
                sent_at: 3,
            },
            Message::HeartbeatReply {
                ballot: b,
                seq: 2,
                sent_at: 3,
                commit: 1,
            },
            Message::CatchUpRequest { commit: 7 },
            Message::Learn { entries: decrees },
            Message::InstallSnapshot { snapshot },
            Message::TimeoutNow { ballot: b },
        ]
    }

    #[test]
    fn messages_round_trip_and_truncations_are_errors() {
        for msg in messages() {
            let mut buf = Vec::new();
            encode_message(&msg, &mut buf);
            assert_eq!(decode_message(&buf).unwrap(), msg);
            for cut in 0..buf.len() {
                assert!(
                    decode_message(&buf[..cut]).is_err(),
                    "{} cut at {cut}",
                    msg.kind()
                );
            }
        }
    }

    #[test]
    fn persist_ops_round_trip() {
        for op in ops() {
            let mut buf = Vec::new();
            encode_persist_op(&op, &mut buf);
            assert_eq!(decode_persist_op(&buf).unwrap(), op);
        }
    }

    #[test]
    fn every_truncation_and_bad_tag_is_an_error_not_a_panic() {
        for op in ops() {
            let mut buf = Vec::new();
            encode_persist_op(&op, &mut buf);
            for cut in 0..buf.len() {
                assert!(decode_persist_op(&buf[..cut]).is_err(), "cut at {cut}");
            }
            let mut longer = buf.clone();
            longer.push(0);
            assert_eq!(
                decode_persist_op(&longer),
                Err(DecodeError::Trailing { extra: 1 })
            );
        }
        assert!(matches!(
            decode_persist_op(&[77]),
            Err(DecodeError::BadTag { tag: 77, .. })
        ));
    }
}
