//! A blocking client of the example key-value service that finds and follows the leader.

use std::io::{BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::wire::{
    Reply, Request, WireError, decode_response, encode_request, read_frame, write_frame,
};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service answered with an error.
    #[error(transparent)]
    Service(#[from] WireError),
    /// No replica answered within the deadline.
    #[error("no replica answered within {waited_ms} ms (last error: {last})")]
    Unreachable {
        /// How long the client tried.
        waited_ms: u64,
        /// The last error seen.
        last: String,
    },
    /// The connection broke after the request was sent: the outcome is unknown.
    #[error("connection to {addr} lost after sending: outcome unknown ({source})")]
    Lost {
        /// The replica's address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The service sent something this client does not understand.
    #[error("bad response from {addr}: {reason}")]
    Protocol {
        /// The replica's address.
        addr: SocketAddr,
        /// What was wrong.
        reason: String,
    },
}

impl ClientError {
    /// True when a write that failed this way may still have been applied.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            ClientError::Lost { .. } | ClientError::Service(WireError::Unknown(_))
        )
    }
}

/// One connection to one replica's service, with pipelining: [`Connection::send`] many, then
/// [`Connection::recv`] the answers in order.
pub struct Connection {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    next_id: u64,
    buf: Vec<u8>,
}

impl Connection {
    /// Connects to `addr` with a timeout; `io_timeout` bounds every read.
    pub fn open(addr: SocketAddr, io_timeout: Duration) -> std::io::Result<Connection> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(io_timeout))?;
        stream.set_write_timeout(Some(io_timeout))?;
        Ok(Connection {
            addr,
            reader: BufReader::new(stream.try_clone()?),
            writer: BufWriter::new(stream),
            next_id: 1,
            buf: Vec::new(),
        })
    }

    /// The replica's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues a request (written on [`Connection::flush`] or when the buffer fills); returns its id.
    pub fn send(&mut self, req: &Request) -> std::io::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        self.buf.clear();
        encode_request(id, req, &mut self.buf);
        write_frame(&mut self.writer, &self.buf)?;
        Ok(id)
    }

    /// Writes queued requests out.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }

    /// Reads the next answer.
    pub fn recv(&mut self) -> Result<(u64, Result<Reply, WireError>), ClientError> {
        match read_frame(&mut self.reader, &mut self.buf) {
            Ok(true) => decode_response(&self.buf).map_err(|e| ClientError::Protocol {
                addr: self.addr,
                reason: e.to_string(),
            }),
            Ok(false) => Err(ClientError::Lost {
                addr: self.addr,
                source: std::io::ErrorKind::UnexpectedEof.into(),
            }),
            Err(source) => Err(ClientError::Lost {
                addr: self.addr,
                source,
            }),
        }
    }

    /// Sends one request and waits for its answer.
    pub fn call(&mut self, req: &Request) -> Result<Reply, ClientError> {
        let sent = self.send(req).and_then(|id| self.flush().map(|()| id));
        let id = sent.map_err(|source| ClientError::Lost {
            addr: self.addr,
            source,
        })?;
        let (got, reply) = self.recv()?;
        if got != id {
            return Err(ClientError::Protocol {
                addr: self.addr,
                reason: format!("answer for request {got}, expected {id}"),
            });
        }
        Ok(reply?)
    }
}

/// A client that knows every replica's service address and sends each request to the leader,
/// following `NotLeader` hints and retrying on unreachable replicas until `deadline`.
pub struct KvClient {
    replicas: Vec<(u64, SocketAddr)>,
    leader: usize,
    conn: Option<Connection>,
    /// How long one call keeps retrying before it gives up.
    pub deadline: Duration,
    /// The highest slot this client has seen (for session-consistent fast reads).
    pub seen_slot: u64,
    /// How long one answer may take before the connection is given up (outcome unknown).
    pub io_timeout: Duration,
}

impl KvClient {
    /// A client of the replicas `(id, service address)`.
    pub fn new(replicas: Vec<(u64, SocketAddr)>) -> KvClient {
        KvClient {
            replicas,
            leader: 0,
            conn: None,
            deadline: Duration::from_secs(10),
            seen_slot: 0,
            io_timeout: Duration::from_secs(12),
        }
    }

    /// The replica the client currently sends to.
    pub fn current(&self) -> Option<u64> {
        self.replicas.get(self.leader).map(|r| r.0)
    }

    /// Sends `req` to the leader. Requests that may not be retried blindly (writes whose
    /// outcome became unknown) return [`ClientError::Lost`] or `Service(Unknown)` at once.
    pub fn call(&mut self, req: &Request) -> Result<Reply, ClientError> {
        let start = Instant::now();
        let mut last = String::from("none");
        while start.elapsed() < self.deadline {
            if self.replicas.is_empty() {
                break;
            }
            if self.conn.is_none() {
                let addr = self.replicas[self.leader].1;
                match Connection::open(addr, self.io_timeout) {
                    Ok(c) => self.conn = Some(c),
                    Err(e) => {
                        last = format!("{addr}: {e}");
                        self.leader = (self.leader + 1) % self.replicas.len();
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                }
            }
            let Some(conn) = self.conn.as_mut() else {
                continue;
            };
            match conn.call(req) {
                Ok(reply) => {
                    if let Reply::Written { slot, .. } | Reply::Value { slot, .. } = &reply {
                        self.seen_slot = self.seen_slot.max(*slot);
                    }
                    return Ok(reply);
                }
                Err(ClientError::Service(WireError::NotLeader { leader })) => {
                    last = format!("replica {:?} is not the leader", self.current());
                    self.conn = None;
                    self.leader =
                        match leader.and_then(|l| self.replicas.iter().position(|r| r.0 == l)) {
                            Some(i) => i,
                            None => {
                                std::thread::sleep(Duration::from_millis(20));
                                (self.leader + 1) % self.replicas.len()
                            }
                        };
                }
                Err(ClientError::Service(WireError::Retry(why))) => {
                    last = why;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e @ ClientError::Lost { .. }) => {
                    self.conn = None;
                    self.leader = (self.leader + 1) % self.replicas.len();
                    if matches!(req, Request::Put { .. } | Request::Delete { .. }) {
                        return Err(e);
                    }
                    last = e.to_string();
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Unreachable {
            waited_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
            last,
        })
    }

    /// Puts `value` at `key`; returns the slot and the previous value.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(u64, Option<Vec<u8>>), ClientError> {
        match self.call(&Request::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        })? {
            Reply::Written { slot, prev } => Ok((slot, prev)),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Linearizable get.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        match self.call(&Request::Get { key: key.to_vec() })? {
            Reply::Value { value, .. } => Ok(value),
            other => Err(self.unexpected(&other)),
        }
    }

    fn unexpected(&self, reply: &Reply) -> ClientError {
        ClientError::Protocol {
            addr: self.replicas[self.leader].1,
            reason: format!("unexpected reply {reply:?}"),
        }
    }
}
