//! The connection handshake: who is on the other end, checked before anything else flows.
//!
//! Both ends send a fixed 48-byte [`Hello`] (cluster id, member id, protocol version, the
//! connection epoch proposed by the dialer), read the peer's, and judge it with
//! [`HandshakeConfig::judge`]: a peer of another cluster, that is not a configured member, that
//! is not the member the dialer meant to reach, or that speaks an incompatible protocol
//! version, is refused. Each end then sends a 16-byte [`Verdict`], so a refused peer learns
//! why with a typed error ([`HandshakeError::RefusedByPeer`]) instead of a closed socket.
//! Only when both verdicts are "accepted" does [`handshake`] return; a caller hands out the
//! ring (or its RDMA rkey), or the message stream, only after that.
//!
//! [`handshake`] works over any `Read + Write` stream, so the TCP transport, the shared-memory
//! set-up and the RDMA out-of-band exchange all use the same code.
#![forbid(unsafe_code)]

use bytemuck::{Pod, Zeroable};
use std::io::{Read, Write};
use thiserror::Error;

/// Magic of a [`Hello`] (`"KEELHELO"`).
pub const HELLO_MAGIC: u64 = u64::from_le_bytes(*b"KEELHELO");
/// Magic of a [`Verdict`] (`"KVRD"`).
pub const VERDICT_MAGIC: u32 = u32::from_le_bytes(*b"KVRD");
/// Size of an encoded [`Hello`].
pub const HELLO_BYTES: usize = 48;
/// Size of an encoded [`Verdict`].
pub const VERDICT_BYTES: usize = 16;

/// The protocol version this build speaks: major in the high 16 bits, minor in the low.
/// Peers are compatible when the majors are equal. Major 2: RDMA rings publish tail and head
/// with a check word (16 bytes where major 1 wrote an 8-byte word).
pub const PROTOCOL_VERSION: u32 = 2 << 16;

/// Major part of a protocol version.
#[must_use]
pub const fn major(version: u32) -> u16 {
    (version >> 16) as u16
}

/// What one end says about itself, as sent on the wire (little-endian).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Hello {
    /// [`HELLO_MAGIC`].
    pub magic: u64,
    /// Protocol version ([`PROTOCOL_VERSION`]).
    pub version: u32,
    /// Reserved, zero.
    pub flags: u32,
    /// The cluster this member belongs to.
    pub cluster_id: u64,
    /// The sender's member id.
    pub member_id: u64,
    /// Connection epoch proposed by the dialer (echoed by the acceptor); stamped in ring frames.
    pub epoch: u64,
    /// CRC-32C of the bytes above.
    pub checksum: u32,
    /// Reserved, zero.
    pub reserved: u32,
}
const _: () = assert!(core::mem::size_of::<Hello>() == HELLO_BYTES);

/// One end's judgement of the other's [`Hello`], as sent on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Verdict {
    /// [`VERDICT_MAGIC`].
    pub magic: u32,
    /// [`Refusal`] code, 0 for accepted.
    pub code: u32,
    /// The sender's protocol version (so a refused peer can say which it would need).
    pub version: u32,
    /// CRC-32C of the bytes above.
    pub checksum: u32,
}
const _: () = assert!(core::mem::size_of::<Verdict>() == VERDICT_BYTES);

/// Why bytes are not a valid [`Hello`] or [`Verdict`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Not enough bytes.
    #[error("need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        available: usize,
    },
    /// Wrong magic: not a Keel peer.
    #[error("bad magic {found:#x}: not a Keel peer")]
    BadMagic {
        /// Value found.
        found: u64,
    },
    /// Checksum mismatch.
    #[error("checksum mismatch")]
    Checksum,
    /// Reserved fields are not zero.
    #[error("reserved fields are not zero")]
    Reserved,
    /// Unknown verdict code.
    #[error("unknown verdict code {found}")]
    BadCode {
        /// Value found.
        found: u32,
    },
}

impl Hello {
    /// A hello for this build's protocol version.
    #[must_use]
    pub fn new(cluster_id: u64, member_id: u64, epoch: u64) -> Self {
        Self::with_version(cluster_id, member_id, epoch, PROTOCOL_VERSION)
    }

    /// A hello naming an explicit version (tests of version refusal use it).
    #[must_use]
    pub fn with_version(cluster_id: u64, member_id: u64, epoch: u64, version: u32) -> Self {
        let mut hello = Hello {
            magic: HELLO_MAGIC,
            version,
            flags: 0,
            cluster_id,
            member_id,
            epoch,
            checksum: 0,
            reserved: 0,
        };
        hello.checksum = crc32c::crc32c(&bytemuck::bytes_of(&hello)[..40]);
        hello
    }

    /// The wire bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; HELLO_BYTES] {
        bytemuck::cast(*self)
    }

    /// Decodes and checks a hello from the wire. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Hello, DecodeError> {
        let raw = bytes.get(..HELLO_BYTES).ok_or(DecodeError::Truncated {
            needed: HELLO_BYTES,
            available: bytes.len(),
        })?;
        let hello: Hello = bytemuck::pod_read_unaligned(raw);
        if hello.magic != HELLO_MAGIC {
            return Err(DecodeError::BadMagic { found: hello.magic });
        }
        if crc32c::crc32c(&raw[..40]) != hello.checksum {
            return Err(DecodeError::Checksum);
        }
        if hello.flags != 0 || hello.reserved != 0 {
            return Err(DecodeError::Reserved);
        }
        Ok(hello)
    }
}

/// Why a peer is refused (the verdict codes on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Refusal {
    /// The peer belongs to another cluster.
    WrongCluster = 1,
    /// The peer is not a configured member.
    NotAMember = 2,
    /// The peer's protocol major version differs.
    IncompatibleVersion = 3,
    /// The peer is a member, but not the one that was dialed.
    UnexpectedMember = 4,
    /// The peer's hello did not decode.
    Malformed = 5,
}

impl Refusal {
    fn from_code(code: u32) -> Result<Option<Refusal>, DecodeError> {
        Ok(Some(match code {
            0 => return Ok(None),
            1 => Refusal::WrongCluster,
            2 => Refusal::NotAMember,
            3 => Refusal::IncompatibleVersion,
            4 => Refusal::UnexpectedMember,
            5 => Refusal::Malformed,
            found => return Err(DecodeError::BadCode { found }),
        }))
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::WrongCluster => "wrong cluster",
            Refusal::NotAMember => "not a configured member",
            Refusal::IncompatibleVersion => "incompatible protocol version",
            Refusal::UnexpectedMember => "not the member that was dialed",
            Refusal::Malformed => "malformed hello",
        })
    }
}

impl Verdict {
    /// The verdict: `None` accepts.
    #[must_use]
    pub fn new(refusal: Option<Refusal>) -> Self {
        let mut verdict = Verdict {
            magic: VERDICT_MAGIC,
            code: refusal.map_or(0, |r| r as u32),
            version: PROTOCOL_VERSION,
            checksum: 0,
        };
        verdict.checksum = crc32c::crc32c(&bytemuck::bytes_of(&verdict)[..12]);
        verdict
    }

    /// The wire bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; VERDICT_BYTES] {
        bytemuck::cast(*self)
    }

    /// Decodes a verdict; returns it and the refusal it carries (`None`: accepted).
    pub fn decode(bytes: &[u8]) -> Result<(Verdict, Option<Refusal>), DecodeError> {
        let raw = bytes.get(..VERDICT_BYTES).ok_or(DecodeError::Truncated {
            needed: VERDICT_BYTES,
            available: bytes.len(),
        })?;
        let verdict: Verdict = bytemuck::pod_read_unaligned(raw);
        if verdict.magic != VERDICT_MAGIC {
            return Err(DecodeError::BadMagic {
                found: u64::from(verdict.magic),
            });
        }
        if crc32c::crc32c(&raw[..12]) != verdict.checksum {
            return Err(DecodeError::Checksum);
        }
        let refusal = Refusal::from_code(verdict.code)?;
        Ok((verdict, refusal))
    }
}

/// Who we are and whom we accept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeConfig {
    /// Our cluster.
    pub cluster_id: u64,
    /// Our member id.
    pub member_id: u64,
    /// The configured members (may include ourselves; a peer claiming our own id is refused).
    pub members: Vec<u64>,
    /// Our protocol version ([`PROTOCOL_VERSION`] unless testing).
    pub version: u32,
}

/// What the handshake learned about the accepted peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The peer's member id.
    pub member_id: u64,
    /// The peer's protocol version.
    pub version: u32,
    /// The connection epoch (the dialer's proposal).
    pub epoch: u64,
}

/// Why a handshake failed.
#[derive(Debug, Error)]
pub enum HandshakeError {
    /// Sending or receiving the handshake failed.
    #[error("handshake i/o failed")]
    Io(#[source] std::io::Error),
    /// The peer's bytes are not a valid hello or verdict.
    #[error("peer sent a malformed handshake")]
    Malformed(#[source] DecodeError),
    /// We refused the peer: it belongs to another cluster.
    #[error("refused peer: cluster {theirs:#x}, ours is {ours:#x}")]
    WrongCluster {
        /// Our cluster.
        ours: u64,
        /// Theirs.
        theirs: u64,
    },
    /// We refused the peer: it is not a configured member.
    #[error("refused peer: member {member} is not configured")]
    NotAMember {
        /// The id it claimed.
        member: u64,
    },
    /// We refused the peer: incompatible protocol version.
    #[error("refused peer: protocol version {theirs:#x} incompatible with ours {ours:#x}")]
    IncompatibleVersion {
        /// Ours.
        ours: u32,
        /// Theirs.
        theirs: u32,
    },
    /// We refused the peer: it is not the member we dialed.
    #[error("refused peer: dialed member {expected}, reached member {found}")]
    UnexpectedMember {
        /// Whom we dialed.
        expected: u64,
        /// Who answered.
        found: u64,
    },
    /// The peer refused us.
    #[error("peer refused us: {reason}")]
    RefusedByPeer {
        /// Its reason.
        reason: Refusal,
    },
}

impl HandshakeError {
    fn refusal(&self) -> Option<Refusal> {
        match self {
            HandshakeError::WrongCluster { .. } => Some(Refusal::WrongCluster),
            HandshakeError::NotAMember { .. } => Some(Refusal::NotAMember),
            HandshakeError::IncompatibleVersion { .. } => Some(Refusal::IncompatibleVersion),
            HandshakeError::UnexpectedMember { .. } => Some(Refusal::UnexpectedMember),
            HandshakeError::Malformed(_) => Some(Refusal::Malformed),
            HandshakeError::Io(_) | HandshakeError::RefusedByPeer { .. } => None,
        }
    }
}

/// Which end of the connection we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// We dialed member `expected` and propose `epoch` for the connection.
    Dialer {
        /// The member we meant to reach.
        expected: u64,
        /// The epoch we propose.
        epoch: u64,
    },
    /// We accepted the connection; the epoch is the dialer's.
    Acceptor,
}

impl HandshakeConfig {
    /// A configuration with this build's protocol version.
    #[must_use]
    pub fn new(cluster_id: u64, member_id: u64, members: Vec<u64>) -> Self {
        HandshakeConfig {
            cluster_id,
            member_id,
            members,
            version: PROTOCOL_VERSION,
        }
    }

    /// Judges a peer's hello: `Ok` accepts it.
    pub fn judge(&self, hello: &Hello, role: Role) -> Result<Peer, HandshakeError> {
        if major(hello.version) != major(self.version) {
            return Err(HandshakeError::IncompatibleVersion {
                ours: self.version,
                theirs: hello.version,
            });
        }
        if hello.cluster_id != self.cluster_id {
            return Err(HandshakeError::WrongCluster {
                ours: self.cluster_id,
                theirs: hello.cluster_id,
            });
        }
        if hello.member_id == self.member_id || !self.members.contains(&hello.member_id) {
            return Err(HandshakeError::NotAMember {
                member: hello.member_id,
            });
        }
        let epoch = match role {
            Role::Dialer { expected, epoch } => {
                if hello.member_id != expected {
                    return Err(HandshakeError::UnexpectedMember {
                        expected,
                        found: hello.member_id,
                    });
                }
                epoch
            }
            Role::Acceptor => hello.epoch,
        };
        Ok(Peer {
            member_id: hello.member_id,
            version: hello.version,
            epoch,
        })
    }

    fn hello(&self, role: Role, peer_epoch: u64) -> Hello {
        let epoch = match role {
            Role::Dialer { epoch, .. } => epoch,
            Role::Acceptor => peer_epoch,
        };
        Hello::with_version(self.cluster_id, self.member_id, epoch, self.version)
    }
}

/// Runs the handshake over `stream` (dialer: hello, read hello, verdict, read verdict;
/// acceptor: read hello, hello, verdict, read verdict). Returns the accepted peer.
///
/// Our refusal of the peer is returned as the matching [`HandshakeError`] variant (after
/// telling the peer); the peer's refusal of us as [`HandshakeError::RefusedByPeer`].
pub fn handshake<S: Read + Write>(
    stream: &mut S,
    config: &HandshakeConfig,
    role: Role,
) -> Result<Peer, HandshakeError> {
    let mut buf = [0u8; HELLO_BYTES];
    let decoded = match role {
        Role::Dialer { .. } => {
            stream
                .write_all(&config.hello(role, 0).encode())
                .map_err(HandshakeError::Io)?;
            stream.read_exact(&mut buf).map_err(HandshakeError::Io)?;
            Hello::decode(&buf)
        }
        Role::Acceptor => {
            stream.read_exact(&mut buf).map_err(HandshakeError::Io)?;
            let decoded = Hello::decode(&buf);
            let epoch = decoded.as_ref().map_or(0, |h| h.epoch);
            stream
                .write_all(&config.hello(role, epoch).encode())
                .map_err(HandshakeError::Io)?;
            decoded
        }
    };
    let judged = decoded
        .map_err(HandshakeError::Malformed)
        .and_then(|hello| config.judge(&hello, role));
    let ours = match &judged {
        Ok(_) => None,
        Err(e) => e.refusal(),
    };
    // A peer that refused us may already have closed the stream, so our verdict may not be
    // deliverable; its verdict, sent before it closed, is still readable and says more.
    let sent = stream
        .write_all(&Verdict::new(ours).encode())
        .and_then(|()| stream.flush());
    let peer = judged?;
    let mut vbuf = [0u8; VERDICT_BYTES];
    if let Err(read_error) = stream.read_exact(&mut vbuf) {
        return Err(HandshakeError::Io(sent.err().unwrap_or(read_error)));
    }
    match Verdict::decode(&vbuf).map_err(HandshakeError::Malformed)? {
        (_, Some(reason)) => Err(HandshakeError::RefusedByPeer { reason }),
        (_, None) => sent.map(|()| peer).map_err(HandshakeError::Io),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn run(
        dialer: HandshakeConfig,
        acceptor: HandshakeConfig,
        expected: u64,
    ) -> (Result<Peer, HandshakeError>, Result<Peer, HandshakeError>) {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || handshake(&mut b, &acceptor, Role::Acceptor));
        let d = handshake(&mut a, &dialer, Role::Dialer { expected, epoch: 9 });
        drop(a);
        (d, t.join().unwrap())
    }

    fn cfg(cluster: u64, me: u64) -> HandshakeConfig {
        HandshakeConfig::new(cluster, me, vec![1, 2, 3])
    }

    #[test]
    fn members_of_one_cluster_agree_on_the_dialers_epoch() {
        let (d, a) = run(cfg(5, 1), cfg(5, 2), 2);
        let d = d.unwrap();
        let a = a.unwrap();
        assert_eq!((d.member_id, d.epoch), (2, 9));
        assert_eq!((a.member_id, a.epoch), (1, 9));
    }

    #[test]
    fn peer_of_another_cluster_is_refused_on_both_sides() {
        let (d, a) = run(cfg(6, 1), cfg(5, 2), 2);
        assert!(matches!(
            a,
            Err(HandshakeError::WrongCluster { ours: 5, theirs: 6 })
        ));
        assert!(
            matches!(d, Err(HandshakeError::WrongCluster { .. })),
            "{d:?}"
        );
    }

    #[test]
    fn unconfigured_member_is_refused_and_told_why() {
        let (d, a) = run(HandshakeConfig::new(5, 9, vec![1, 2, 9]), cfg(5, 2), 2);
        assert!(matches!(a, Err(HandshakeError::NotAMember { member: 9 })));
        assert!(matches!(
            d,
            Err(HandshakeError::RefusedByPeer {
                reason: Refusal::NotAMember
            })
        ));
    }

    #[test]
    fn incompatible_version_is_refused() {
        let mut other = cfg(5, 1);
        other.version = PROTOCOL_VERSION + (1 << 16);
        let (d, a) = run(other, cfg(5, 2), 2);
        assert!(matches!(a, Err(HandshakeError::IncompatibleVersion { .. })));
        assert!(matches!(d, Err(HandshakeError::IncompatibleVersion { .. })));
    }

    #[test]
    fn reaching_the_wrong_member_is_refused_by_the_dialer() {
        let (d, a) = run(cfg(5, 1), cfg(5, 3), 2);
        assert!(matches!(
            d,
            Err(HandshakeError::UnexpectedMember {
                expected: 2,
                found: 3
            })
        ));
        assert!(matches!(
            a,
            Err(HandshakeError::RefusedByPeer {
                reason: Refusal::UnexpectedMember
            })
        ));
    }

    #[test]
    fn garbage_is_malformed() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(&[0x55; HELLO_BYTES]).unwrap();
        let r = handshake(&mut b, &cfg(5, 2), Role::Acceptor);
        assert!(matches!(r, Err(HandshakeError::Malformed(_))));
        let mut reply = [0u8; HELLO_BYTES + VERDICT_BYTES];
        a.read_exact(&mut reply).unwrap();
        let (_, refusal) = Verdict::decode(&reply[HELLO_BYTES..]).unwrap();
        assert_eq!(refusal, Some(Refusal::Malformed));
    }
}
