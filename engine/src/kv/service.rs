//! Serves a [`KvStore`] replica over TCP: client requests (put, delete, get, fast get) and
//! admin requests (status, membership, leadership transfer, relinquish).
//!
//! Each connection has a reader thread, which decodes requests and submits them to the replica
//! at once (so one connection can pipeline many), and a writer thread, which waits for the
//! completions in request order and writes the responses.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use super::wire::{
    Reply, Request, WireError, decode_request, encode_response, read_frame, write_frame,
};
use super::{KvCommand, KvStore};
use crate::completion::Completion;
use crate::replica::{Applied, Replica};
use crate::stats::Status;

/// How long the writer waits for one answer before reporting the outcome as unknown.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

type KvOutput = Result<Option<Vec<u8>>, crate::codec::DecodeError>;

enum Pending {
    Now(Result<Reply, WireError>),
    Write(Completion<Applied<KvOutput>>),
    Read(Completion<Applied<Option<Vec<u8>>>>),
    Status(Completion<Status>),
    Slot(Completion<u64>),
    Unit(Completion<()>),
}

fn wait<T>(mut c: Completion<T>) -> Result<T, WireError> {
    match c.wait_timeout(ANSWER_TIMEOUT) {
        Some(r) => r.map_err(WireError::from),
        None => Err(WireError::Unknown(format!(
            "no answer within {} s",
            ANSWER_TIMEOUT.as_secs()
        ))),
    }
}

impl Pending {
    fn resolve(self) -> Result<Reply, WireError> {
        match self {
            Pending::Now(r) => r,
            Pending::Write(c) => {
                let a = wait(c)?;
                match a.value {
                    Ok(prev) => Ok(Reply::Written { slot: a.slot, prev }),
                    Err(e) => Err(WireError::Refused(format!("malformed command: {e}"))),
                }
            }
            Pending::Read(c) => wait(c).map(|a| Reply::Value {
                slot: a.slot,
                value: a.value,
            }),
            Pending::Status(c) => wait(c).and_then(|s| {
                serde_json::to_string(&s)
                    .map(Reply::Status)
                    .map_err(|e| WireError::Refused(e.to_string()))
            }),
            Pending::Slot(c) => wait(c).map(|slot| Reply::Done { slot }),
            Pending::Unit(c) => wait(c).map(|()| Reply::Done { slot: 0 }),
        }
    }
}

fn submit(replica: &Replica<KvStore>, req: Request) -> Pending {
    match req {
        Request::Put { key, value } => {
            Pending::Write(replica.propose(KvCommand::Put { key, value }.encode()))
        }
        Request::Delete { key } => {
            Pending::Write(replica.propose(KvCommand::Delete { key }.encode()))
        }
        Request::Get { key } => {
            Pending::Read(replica.read(move |kv: &KvStore| kv.get(&key).map(<[u8]>::to_vec)))
        }
        Request::FastGet { key, min_slot } => {
            Pending::Read(replica.fast_read(min_slot, move |kv: &KvStore| {
                kv.get(&key).map(<[u8]>::to_vec)
            }))
        }
        Request::Status => Pending::Status(replica.status()),
        Request::Members(change) => Pending::Slot(replica.change_membership(change)),
        Request::Transfer { to } => Pending::Unit(replica.transfer_leadership(to)),
        Request::Relinquish => Pending::Unit(replica.relinquish()),
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding the service address failed.
    #[error("cannot listen on {addr}: {source} (is the port in use?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The accept thread could not be spawned.
    #[error("cannot spawn the service thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Listens on `addr` and serves `replica` until the process exits. Returns the bound address.
pub fn serve(replica: Arc<Replica<KvStore>>, addr: SocketAddr) -> Result<SocketAddr, ServeError> {
    let listener = TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    std::thread::Builder::new()
        .name("keel-kv-accept".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let replica = Arc::clone(&replica);
                let _ = std::thread::Builder::new()
                    .name("keel-kv-conn".into())
                    .spawn(move || connection(replica, stream));
            }
        })
        .map_err(ServeError::Spawn)?;
    Ok(local)
}

fn connection(replica: Arc<Replica<KvStore>>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let (tx, rx) = channel::<(u64, Pending)>();
    let writer = std::thread::Builder::new()
        .name("keel-kv-write".into())
        .spawn(move || writer(write_half, rx));
    if writer.is_err() {
        return;
    }
    let mut reader = std::io::BufReader::new(stream);
    let mut buf = Vec::new();
    while let Ok(true) = read_frame(&mut reader, &mut buf) {
        let pending = match decode_request(&buf) {
            Ok((id, req)) => (id, submit(&replica, req)),
            Err(e) => (
                0,
                Pending::Now(Err(WireError::Refused(format!("malformed request: {e}")))),
            ),
        };
        if tx.send(pending).is_err() {
            return;
        }
    }
}

fn writer(stream: TcpStream, rx: Receiver<(u64, Pending)>) {
    let mut out = std::io::BufWriter::new(stream);
    let mut body = Vec::new();
    loop {
        // Block for the first pending answer, then write every answer that is ready before
        // flushing (one write for a burst of pipelined answers).
        let Ok((id, pending)) = rx.recv() else {
            return;
        };
        let mut next = Some((id, pending));
        while let Some((id, pending)) = next.take() {
            body.clear();
            encode_response(id, &pending.resolve(), &mut body);
            if write_frame(&mut out, &body).is_err() {
                return;
            }
            next = rx.try_recv().ok();
        }
        if std::io::Write::flush(&mut out).is_err() {
            return;
        }
    }
}
