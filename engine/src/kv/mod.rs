//! The example replicated service: a key-value store.
//!
//! [`KvStore`] is the state machine (a `BTreeMap` of byte strings, checkpointed whole);
//! [`KvCommand`] is what clients replicate; [`service`] serves it over TCP for the `keel run`
//! process (client requests and the admin requests `keel status` / `keel members` send) and
//! [`client::KvClient`] talks to such a service, following the leader.

pub mod client;
pub mod service;
pub mod wire;

use std::collections::BTreeMap;
use std::io::{Read, Write};

use crate::codec::{DecodeError, Reader, Writer};
use crate::state_machine::StateMachine;

/// A replicated command of the key-value store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvCommand {
    /// Set `key` to `value`; yields the previous value.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove `key`; yields the previous value.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl KvCommand {
    /// The bytes that are replicated.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer(&mut out);
        match self {
            KvCommand::Put { key, value } => {
                w.u8(1);
                w.bytes(key);
                w.bytes(value);
            }
            KvCommand::Delete { key } => {
                w.u8(2);
                w.bytes(key);
            }
        }
        out
    }

    /// Decodes [`KvCommand::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Result<KvCommand, DecodeError> {
        let mut r = Reader::new(bytes);
        let cmd = match r.u8()? {
            1 => KvCommand::Put {
                key: r.bytes()?.to_vec(),
                value: r.bytes()?.to_vec(),
            },
            2 => KvCommand::Delete {
                key: r.bytes()?.to_vec(),
            },
            tag => {
                return Err(DecodeError::BadTag {
                    what: "kv command",
                    tag,
                    at: 0,
                });
            }
        };
        r.finish()?;
        Ok(cmd)
    }
}

/// The key-value state machine.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KvStore {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    applied: u64,
}

impl KvStore {
    /// An empty store.
    pub fn new() -> KvStore {
        KvStore::default()
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(Vec::as_slice)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no key is set.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Commands applied (including malformed ones, which change nothing).
    pub fn applied(&self) -> u64 {
        self.applied
    }
}

impl StateMachine for KvStore {
    /// The previous value, or `Err` with the decode error for a malformed command (which every
    /// replica rejects the same way).
    type Output = Result<Option<Vec<u8>>, DecodeError>;

    fn apply(&mut self, _decree: u64, command: &[u8]) -> Self::Output {
        self.applied += 1;
        match KvCommand::decode(command)? {
            KvCommand::Put { key, value } => Ok(self.map.insert(key, value)),
            KvCommand::Delete { key } => Ok(self.map.remove(&key)),
        }
    }

    fn save_checkpoint(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let mut w = Writer(&mut buf);
        w.u64(self.applied);
        w.u64(self.map.len() as u64);
        for (k, v) in &self.map {
            w.bytes(k);
            w.bytes(v);
        }
        out.write_all(&buf)
    }

    fn load_checkpoint(&mut self, input: &mut dyn Read) -> std::io::Result<()> {
        let mut buf = Vec::new();
        input.read_to_end(&mut buf)?;
        let mut r = Reader::new(&buf);
        let parse = |r: &mut Reader<'_>| -> Result<KvStore, DecodeError> {
            let applied = r.u64()?;
            let n = r.u64()?;
            let mut map = BTreeMap::new();
            for _ in 0..n {
                let k = r.bytes()?.to_vec();
                let v = r.bytes()?.to_vec();
                map.insert(k, v);
            }
            r.finish()?;
            Ok(KvStore { map, applied })
        };
        *self =
            parse(&mut r).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_and_checkpoint_round_trip() {
        let mut kv = KvStore::new();
        let put = KvCommand::Put {
            key: b"a".to_vec(),
            value: b"1".to_vec(),
        };
        assert_eq!(kv.apply(1, &put.encode()).unwrap(), None);
        let put2 = KvCommand::Put {
            key: b"a".to_vec(),
            value: b"2".to_vec(),
        };
        assert_eq!(kv.apply(2, &put2.encode()).unwrap(), Some(b"1".to_vec()));
        assert!(kv.apply(3, b"\xff").is_err());
        let mut ck = Vec::new();
        kv.save_checkpoint(&mut ck).unwrap();
        let mut back = KvStore::new();
        back.load_checkpoint(&mut &ck[..]).unwrap();
        assert_eq!(back, kv);
        assert!(back.load_checkpoint(&mut &ck[..ck.len() - 1]).is_err());
        let del = KvCommand::Delete { key: b"a".to_vec() };
        assert_eq!(KvCommand::decode(&del.encode()).unwrap(), del);
    }
}
