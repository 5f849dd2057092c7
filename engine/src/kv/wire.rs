//! The example service's client/admin protocol: length-prefixed frames (`u32` little-endian
//! length, then the body), each request tagged with an id its response echoes. Responses on
//! one connection come back in request order.

use std::io::{Read, Write};

use crate::codec::{DecodeError, Reader, Writer};
use crate::replica::MemberChange;

/// Largest frame either side accepts.
pub const FRAME_MAX_BYTES: usize = 64 << 20;

/// A client or admin request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Replicate a put.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Replicate a delete.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Linearizable read (leader).
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Session-consistent read on any replica, at or after `min_slot`.
    FastGet {
        /// The key.
        key: Vec<u8>,
        /// The highest slot the client has seen.
        min_slot: u64,
    },
    /// The replica's status as JSON.
    Status,
    /// A membership change.
    Members(MemberChange),
    /// Hand leadership to `to`.
    Transfer {
        /// The next leader.
        to: u64,
    },
    /// Step down.
    Relinquish,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A put or delete was applied at `slot`; `prev` is the value it replaced.
    Written {
        /// The decree.
        slot: u64,
        /// The previous value.
        prev: Option<Vec<u8>>,
    },
    /// A read's value, as of `slot`.
    Value {
        /// The decree the state reflects.
        slot: u64,
        /// The value.
        value: Option<Vec<u8>>,
    },
    /// The replica's [`crate::Status`] as JSON.
    Status(String),
    /// An admin request was carried out (membership: at `slot`; others: 0).
    Done {
        /// The decree, where there is one.
        slot: u64,
    },
}

/// Why a request failed, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not the leader; retry at `leader`.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader, if known.
        leader: Option<u64>,
    },
    /// The outcome is unknown (the write may or may not be applied).
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// Refused (retrying the same request will not help).
    #[error("refused: {0}")]
    Refused(String),
    /// Busy or lagging; retry later.
    #[error("retry later: {0}")]
    Retry(String),
    /// The replica failed or is shutting down.
    #[error("replica unavailable: {0}")]
    Unavailable(String),
}

impl From<crate::Error> for WireError {
    fn from(e: crate::Error) -> WireError {
        use crate::Error as E;
        match e {
            E::NotLeader { leader } => WireError::NotLeader { leader },
            E::Aborted { .. } | E::Timeout { .. } | E::Dropped => WireError::Unknown(e.to_string()),
            E::Refused { .. } | E::AlreadyTaken => WireError::Refused(e.to_string()),
            E::Busy { .. } | E::ReadRefused { .. } => WireError::Retry(e.to_string()),
            E::Failed(_) | E::ShutDown => WireError::Unavailable(e.to_string()),
        }
    }
}

fn put_opt(w: &mut Writer<'_>, v: &Option<Vec<u8>>) {
    match v {
        None => w.u8(0),
        Some(v) => {
            w.u8(1);
            w.bytes(v);
        }
    }
}

fn get_opt(r: &mut Reader<'_>) -> Result<Option<Vec<u8>>, DecodeError> {
    let at = r.at();
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(r.bytes()?.to_vec())),
        tag => Err(DecodeError::BadTag {
            what: "option",
            tag,
            at,
        }),
    }
}

fn bad(what: &'static str, tag: u8) -> DecodeError {
    DecodeError::BadTag { what, tag, at: 0 }
}

/// Encodes request `id` into `out`.
pub fn encode_request(id: u64, req: &Request, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    w.u64(id);
    match req {
        Request::Put { key, value } => {
            w.u8(1);
            w.bytes(key);
            w.bytes(value);
        }
        Request::Delete { key } => {
            w.u8(2);
            w.bytes(key);
        }
        Request::Get { key } => {
            w.u8(3);
            w.bytes(key);
        }
        Request::FastGet { key, min_slot } => {
            w.u8(4);
            w.bytes(key);
            w.u64(*min_slot);
        }
        Request::Status => w.u8(5),
        Request::Members(change) => {
            w.u8(6);
            let (tag, a, b) = match *change {
                MemberChange::AddLearner(id) => (1, id, 0),
                MemberChange::AddVoter(id) => (2, id, 0),
                MemberChange::Promote(id) => (3, id, 0),
                MemberChange::Remove(id) => (4, id, 0),
                MemberChange::Replace { old, new } => (5, old, new),
            };
            w.u8(tag);
            w.u64(a);
            w.u64(b);
        }
        Request::Transfer { to } => {
            w.u8(7);
            w.u64(*to);
        }
        Request::Relinquish => w.u8(8),
    }
}

/// Decodes a request frame body.
pub fn decode_request(bytes: &[u8]) -> Result<(u64, Request), DecodeError> {
    let mut r = Reader::new(bytes);
    let id = r.u64()?;
    let req = match r.u8()? {
        1 => Request::Put {
            key: r.bytes()?.to_vec(),
            value: r.bytes()?.to_vec(),
        },
        2 => Request::Delete {
            key: r.bytes()?.to_vec(),
        },
        3 => Request::Get {
            key: r.bytes()?.to_vec(),
        },
        4 => Request::FastGet {
            key: r.bytes()?.to_vec(),
            min_slot: r.u64()?,
        },
        5 => Request::Status,
        6 => {
            let tag = r.u8()?;
            let a = r.u64()?;
            let b = r.u64()?;
            Request::Members(match tag {
                1 => MemberChange::AddLearner(a),
                2 => MemberChange::AddVoter(a),
                3 => MemberChange::Promote(a),
                4 => MemberChange::Remove(a),
                5 => MemberChange::Replace { old: a, new: b },
                t => return Err(bad("member change", t)),
            })
        }
        7 => Request::Transfer { to: r.u64()? },
        8 => Request::Relinquish,
        t => return Err(bad("request", t)),
    };
    r.finish()?;
    Ok((id, req))
}

/// Encodes the response to request `id` into `out`.
pub fn encode_response(id: u64, resp: &Result<Reply, WireError>, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    w.u64(id);
    match resp {
        Ok(Reply::Written { slot, prev }) => {
            w.u8(1);
            w.u64(*slot);
            put_opt(&mut w, prev);
        }
        Ok(Reply::Value { slot, value }) => {
            w.u8(2);
            w.u64(*slot);
            put_opt(&mut w, value);
        }
        Ok(Reply::Status(json)) => {
            w.u8(3);
            w.bytes(json.as_bytes());
        }
        Ok(Reply::Done { slot }) => {
            w.u8(4);
            w.u64(*slot);
        }
        Err(e) => {
            let (tag, text, leader) = match e {
                WireError::NotLeader { leader } => (10, String::new(), leader.unwrap_or(0)),
                WireError::Unknown(s) => (11, s.clone(), 0),
                WireError::Refused(s) => (12, s.clone(), 0),
                WireError::Retry(s) => (13, s.clone(), 0),
                WireError::Unavailable(s) => (14, s.clone(), 0),
            };
            w.u8(tag);
            w.u64(leader);
            w.bytes(text.as_bytes());
        }
    }
}

/// Decodes a response frame body.
pub fn decode_response(bytes: &[u8]) -> Result<(u64, Result<Reply, WireError>), DecodeError> {
    let mut r = Reader::new(bytes);
    let id = r.u64()?;
    let tag = r.u8()?;
    let resp = match tag {
        1 => Ok(Reply::Written {
            slot: r.u64()?,
            prev: get_opt(&mut r)?,
        }),
        2 => Ok(Reply::Value {
            slot: r.u64()?,
            value: get_opt(&mut r)?,
        }),
        3 => Ok(Reply::Status(
            String::from_utf8_lossy(r.bytes()?).into_owned(),
        )),
        4 => Ok(Reply::Done { slot: r.u64()? }),
        10..=14 => {
            let leader = r.u64()?;
            let text = String::from_utf8_lossy(r.bytes()?).into_owned();
            Err(match tag {
                10 => WireError::NotLeader {
                    leader: (leader != 0).then_some(leader),
                },
                11 => WireError::Unknown(text),
                12 => WireError::Refused(text),
                13 => WireError::Retry(text),
                _ => WireError::Unavailable(text),
            })
        }
        t => return Err(bad("response", t)),
    };
    r.finish()?;
    Ok((id, resp))
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    let len =
        u32::try_from(body.len()).map_err(|_| std::io::Error::other("frame larger than 4 GiB"))?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(body);
    w.write_all(&buf)
}

/// Reads one frame into `buf`; `Ok(false)` on a clean end of stream.
pub fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > FRAME_MAX_BYTES {
        return Err(std::io::Error::other(format!(
            "frame of {len} bytes exceeds the {FRAME_MAX_BYTES}-byte limit"
        )));
    }
    buf.resize(len, 0);
    r.read_exact(buf)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_round_trip() {
        let reqs = vec![
            Request::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
            Request::Delete { key: b"k".to_vec() },
            Request::Get { key: b"k".to_vec() },
            Request::FastGet {
                key: b"k".to_vec(),
                min_slot: 9,
            },
            Request::Status,
            Request::Members(MemberChange::Replace { old: 1, new: 4 }),
            Request::Members(MemberChange::AddLearner(4)),
            Request::Transfer { to: 2 },
            Request::Relinquish,
        ];
        for (i, req) in reqs.into_iter().enumerate() {
            let mut buf = Vec::new();
            encode_request(i as u64, &req, &mut buf);
            assert_eq!(decode_request(&buf).unwrap(), (i as u64, req));
        }
        let resps = vec![
            Ok(Reply::Written {
                slot: 3,
                prev: None,
            }),
            Ok(Reply::Value {
                slot: 3,
                value: Some(b"x".to_vec()),
            }),
            Ok(Reply::Status("{}".into())),
            Ok(Reply::Done { slot: 0 }),
            Err(WireError::NotLeader { leader: Some(2) }),
            Err(WireError::NotLeader { leader: None }),
            Err(WireError::Unknown("x".into())),
            Err(WireError::Retry("y".into())),
        ];
        for resp in resps {
            let mut buf = Vec::new();
            encode_response(7, &resp, &mut buf);
            assert_eq!(decode_response(&buf).unwrap(), (7, resp));
        }
    }
}
