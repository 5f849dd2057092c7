//! The replicated key-value state machine the simulator runs, with client sessions.
//!
//! A command carries the client's id and a per-client sequence number; a retried command
//! (same client, same sequence) is applied once and answered from the session table, so a
//! client that re-proposes after a timeout or a leader change never writes twice.

use std::collections::BTreeMap;

/// A client's identity.
pub type ClientId = u64;

/// An operation on the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvOp {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: u64,
        /// The value (unique per write in the simulator, which makes histories easy to check).
        value: u64,
    },
    /// Reads `key` through the log.
    Get {
        /// The key.
        key: u64,
    },
}

impl KvOp {
    /// The key the operation touches.
    pub fn key(&self) -> u64 {
        match *self {
            KvOp::Put { key, .. } | KvOp::Get { key } => key,
        }
    }
}

/// A command as it travels through the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvCommand {
    /// Who sent it.
    pub client: ClientId,
    /// The client's sequence number (starts at 1, grows by one per new operation).
    pub seq: u64,
    /// What to do.
    pub op: KvOp,
}

/// What an applied command answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvReply {
    /// A put took effect.
    Written,
    /// A get saw this value (`None`: the key was never written).
    Value(Option<u64>),
}

/// Errors decoding bytes that should hold a command or a snapshot.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The command bytes are malformed.
    #[error("malformed kv command ({len} bytes)")]
    Command {
        /// Length seen.
        len: usize,
    },
    /// The snapshot bytes are malformed.
    #[error("malformed kv snapshot ({len} bytes)")]
    Snapshot {
        /// Length seen.
        len: usize,
    },
}

const TAG_PUT: u8 = 1;
const TAG_GET: u8 = 2;
const COMMAND_LEN: usize = 1 + 8 * 4;

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

impl KvCommand {
    /// The command as log-entry bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(COMMAND_LEN);
        let (tag, key, value) = match self.op {
            KvOp::Put { key, value } => (TAG_PUT, key, value),
            KvOp::Get { key } => (TAG_GET, key, 0),
        };
        b.push(tag);
        for w in [self.client, self.seq, key, value] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b
    }

    /// Decodes log-entry bytes made by `encode`.
    pub fn decode(b: &[u8]) -> Result<KvCommand, DecodeError> {
        if b.len() != COMMAND_LEN {
            return Err(DecodeError::Command { len: b.len() });
        }
        let (client, seq, key, value) = (u64_at(b, 1), u64_at(b, 9), u64_at(b, 17), u64_at(b, 25));
        let op = match b[0] {
            TAG_PUT => KvOp::Put { key, value },
            TAG_GET => KvOp::Get { key },
            _ => return Err(DecodeError::Command { len: b.len() }),
        };
        Ok(KvCommand { client, seq, op })
    }
}

/// The store: data plus the session table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvStore {
    data: BTreeMap<u64, u64>,
    /// client -> (last applied sequence number, its reply).
    sessions: BTreeMap<ClientId, (u64, KvReply)>,
    /// Commands applied (not counting deduplicated retries).
    pub applied: u64,
}

impl KvStore {
    /// Applies one command; a retry of the client's last command is answered without effect.
    /// Returns `None` for a command older than the client's last one (its answer is gone; the
    /// client has moved on and will not wait for it).
    pub fn apply(&mut self, cmd: &KvCommand) -> Option<KvReply> {
        if let Some(&(seq, reply)) = self.sessions.get(&cmd.client) {
            if cmd.seq == seq {
                return Some(reply);
            }
            if cmd.seq < seq {
                return None;
            }
        }
        let reply = match cmd.op {
            KvOp::Put { key, value } => {
                self.data.insert(key, value);
                KvReply::Written
            }
            KvOp::Get { key } => KvReply::Value(self.data.get(&key).copied()),
        };
        self.applied += 1;
        self.sessions.insert(cmd.client, (cmd.seq, reply));
        Some(reply)
    }

    /// A local read (lease read, read-index read or session read) without a log entry.
    pub fn get(&self, key: u64) -> Option<u64> {
        self.data.get(&key).copied()
    }

    /// The whole store as bytes (the checkpoint).
    pub fn snapshot(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&self.applied.to_le_bytes());
        b.extend_from_slice(&(self.data.len() as u64).to_le_bytes());
        for (k, v) in &self.data {
            b.extend_from_slice(&k.to_le_bytes());
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&(self.sessions.len() as u64).to_le_bytes());
        for (c, (seq, reply)) in &self.sessions {
            let (tag, v) = match reply {
                KvReply::Written => (0u64, 0u64),
                KvReply::Value(None) => (1, 0),
                KvReply::Value(Some(v)) => (2, *v),
            };
            for w in [*c, *seq, tag, v] {
                b.extend_from_slice(&w.to_le_bytes());
            }
        }
        b
    }

    /// Rebuilds a store from `snapshot` bytes.
    pub fn restore(b: &[u8]) -> Result<KvStore, DecodeError> {
        let bad = || DecodeError::Snapshot { len: b.len() };
        let mut r = Reader { b, at: 0 };
        let applied = r.next().ok_or_else(bad)?;
        let n = r.next().ok_or_else(bad)?;
        let mut data = BTreeMap::new();
        for _ in 0..n {
            let k = r.next().ok_or_else(bad)?;
            let v = r.next().ok_or_else(bad)?;
            data.insert(k, v);
        }
        let m = r.next().ok_or_else(bad)?;
        let mut sessions = BTreeMap::new();
        for _ in 0..m {
            let c = r.next().ok_or_else(bad)?;
            let seq = r.next().ok_or_else(bad)?;
            let tag = r.next().ok_or_else(bad)?;
            let v = r.next().ok_or_else(bad)?;
            let reply = match tag {
                0 => KvReply::Written,
                1 => KvReply::Value(None),
                2 => KvReply::Value(Some(v)),
                _ => return Err(bad()),
            };
            sessions.insert(c, (seq, reply));
        }
        if r.at != b.len() {
            return Err(bad());
        }
        Ok(KvStore {
            data,
            sessions,
            applied,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn next(&mut self) -> Option<u64> {
        if self.at + 8 > self.b.len() {
            return None;
        }
        let w = u64_at(self.b, self.at);
        self.at += 8;
        Some(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(client: u64, seq: u64, key: u64, value: u64) -> KvCommand {
        KvCommand {
            client,
            seq,
            op: KvOp::Put { key, value },
        }
    }

    #[test]
    fn commands_round_trip_through_bytes_and_bad_bytes_are_refused() {
        let c = put(3, 9, 1, 77);
        assert_eq!(KvCommand::decode(&c.encode()), Ok(c));
        let g = KvCommand {
            client: 1,
            seq: 2,
            op: KvOp::Get { key: 5 },
        };
        assert_eq!(KvCommand::decode(&g.encode()), Ok(g));
        assert!(KvCommand::decode(&[1, 2, 3]).is_err());
        let mut b = c.encode();
        b[0] = 9;
        assert!(KvCommand::decode(&b).is_err());
    }

    #[test]
    fn a_retried_command_is_applied_once() {
        let mut s = KvStore::default();
        assert_eq!(s.apply(&put(1, 1, 0, 10)), Some(KvReply::Written));
        assert_eq!(s.apply(&put(2, 1, 0, 20)), Some(KvReply::Written));
        // Client 1 retries seq 1 after client 2 wrote: must not overwrite 20.
        assert_eq!(s.apply(&put(1, 1, 0, 10)), Some(KvReply::Written));
        assert_eq!(s.get(0), Some(20));
        assert_eq!(s.applied, 2);
        let g = KvCommand {
            client: 2,
            seq: 2,
            op: KvOp::Get { key: 0 },
        };
        assert_eq!(s.apply(&g), Some(KvReply::Value(Some(20))));
        assert_eq!(
            s.apply(&put(2, 1, 0, 99)),
            None,
            "an older command is dropped"
        );
        assert_eq!(s.get(0), Some(20));
    }

    #[test]
    fn a_snapshot_restores_data_and_sessions() {
        let mut s = KvStore::default();
        s.apply(&put(1, 1, 0, 10));
        s.apply(&KvCommand {
            client: 2,
            seq: 4,
            op: KvOp::Get { key: 9 },
        });
        let r = KvStore::restore(&s.snapshot()).unwrap();
        assert_eq!(r, s);
        let mut r2 = r.clone();
        assert_eq!(r2.apply(&put(1, 1, 0, 10)), Some(KvReply::Written));
        assert_eq!(
            r2.applied, s.applied,
            "the session table survived the snapshot"
        );
        assert!(KvStore::restore(&s.snapshot()[..5]).is_err());
        assert!(KvStore::restore(&[]).is_err());
    }
}
