//! Round trips and streams over the RDMA ring, for `keel-bench ring --transport rdma`.
//!
//! One round trip: the leader writes a frame and publishes the tail (two RDMA WRITEs), the
//! follower thread sees the frame in its memory and writes its head back (one RDMA WRITE into
//! the leader's acknowledgement array), and the leader sees the head cover the frame. Leader
//! and follower run in this process on two threads, connected through the device like two
//! hosts (over loopback on soft-RoCE), with the same set-up and handshake as a cluster.

use super::error::RdmaError;
use super::memory::MemorySource;
use super::pool::pause;
use super::ring::{AckArray, RdmaConfig, RdmaDevice, RdmaRingSink, RingListener};
use crate::handshake::HandshakeConfig;
use crate::ring::{AppendError, ReadError, RingConfig, RingReader, RingWriter};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Why a round-trip run failed.
#[derive(Debug, Error)]
pub enum RoundTripError {
    /// Setting up or using the device failed.
    #[error("RDMA set-up failed")]
    Rdma(#[source] RdmaError),
    /// The leader's ring writer failed.
    #[error("leader ring write failed")]
    Append(#[source] AppendError),
    /// The follower's ring reader failed.
    #[error("follower ring read failed")]
    Read(#[source] ReadError),
    /// The follower thread panicked.
    #[error("follower thread panicked")]
    FollowerPanicked,
}

/// Options of a round-trip run.
#[derive(Clone, Debug)]
pub struct RoundTripOptions {
    /// RDMA device name (e.g. `rxe0`).
    pub device: String,
    /// Round trips to time.
    pub ops: usize,
    /// Payload bytes per frame (64 for the figure).
    pub payload_bytes: usize,
    /// Ring data capacity (a power of two).
    pub capacity: usize,
    /// Where the follower's ring lives.
    pub memory: MemorySource,
}

impl RoundTripOptions {
    /// `ops` round trips of 64-byte frames on `device`, 64 KiB ring, memory from the
    /// environment ([`MemorySource::from_env`]).
    pub fn new(device: &str, ops: usize) -> RoundTripOptions {
        RoundTripOptions {
            device: device.to_owned(),
            ops,
            payload_bytes: 64,
            capacity: 1 << 16,
            memory: MemorySource::from_env(),
        }
    }
}

const CLUSTER: u64 = 0xbe9c;
const LEADER: u64 = 1;
const FOLLOWER: u64 = 2;

/// Runs `options.ops` round trips and returns each one's latency, in order.
pub fn ring_round_trips(options: &RoundTripOptions) -> Result<Vec<Duration>, RoundTripError> {
    let payload = vec![0x5a_u8; options.payload_bytes];
    with_connected_pair(options, |writer| {
        let mut latencies = Vec::with_capacity(options.ops);
        for slot in 0..options.ops as u64 {
            let began = Instant::now();
            writer
                .send(1, slot, &payload)
                .map_err(RoundTripError::Append)?;
            wait_consumed(writer)?;
            latencies.push(began.elapsed());
        }
        Ok(latencies)
    })
}

/// What a stream run measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamReport {
    /// Frames delivered.
    pub frames: usize,
    /// Payload bytes delivered.
    pub payload_bytes: usize,
    /// From the first write until the follower's head covered the last frame.
    pub elapsed: Duration,
}

/// Streams `options.ops` frames as fast as the ring allows (the leader retries while the ring
/// is full) and returns how long until the follower had consumed them all.
pub fn ring_stream(options: &RoundTripOptions) -> Result<StreamReport, RoundTripError> {
    let payload = vec![0xa5_u8; options.payload_bytes];
    with_connected_pair(options, |writer| {
        let began = Instant::now();
        for slot in 0..options.ops as u64 {
            let mut spins = 0;
            loop {
                match writer.send(1, slot, &payload) {
                    Ok(_) => break,
                    Err(AppendError::Full { .. }) => {
                        spins += 1;
                        pause(spins);
                    }
                    Err(e) => return Err(RoundTripError::Append(e)),
                }
            }
        }
        wait_consumed(writer)?;
        Ok(StreamReport {
            frames: options.ops,
            payload_bytes: options.ops * options.payload_bytes,
            elapsed: began.elapsed(),
        })
    })
}

/// Spins (then yields) until the follower's head covers every written frame.
fn wait_consumed(writer: &mut RingWriter<RdmaRingSink>) -> Result<(), RoundTripError> {
    let mut spins = 0;
    while writer.head() < writer.tail() {
        writer.refresh_head().map_err(RoundTripError::Append)?;
        spins += 1;
        pause(spins);
    }
    Ok(())
}

/// Sets up a follower thread that consumes `options.ops` frames and a connected leader, runs
/// `leader` on the leader's writer, and tears both down.
fn with_connected_pair<T>(
    options: &RoundTripOptions,
    leader: impl FnOnce(&mut RingWriter<RdmaRingSink>) -> Result<T, RoundTripError>,
) -> Result<T, RoundTripError> {
    let device = RdmaDevice::open(&options.device).map_err(RoundTripError::Rdma)?;
    let members = vec![LEADER, FOLLOWER];
    let follower_cfg = RdmaConfig::new(HandshakeConfig::new(CLUSTER, FOLLOWER, members.clone()));
    let leader_cfg = RdmaConfig::new(HandshakeConfig::new(CLUSTER, LEADER, members));
    let mut listener = RingListener::bind(
        &device,
        "127.0.0.1:0",
        options.capacity,
        &options.memory,
        follower_cfg,
    )
    .map_err(RoundTripError::Rdma)?;
    let addr = listener.local_addr().map_err(RoundTripError::Rdma)?;
    let ring_config = RingConfig {
        epoch: 1,
        max_payload: options.payload_bytes.max(8),
    };
    let ops = options.ops;
    let stop = Arc::new(AtomicBool::new(false));
    let follower_stop = Arc::clone(&stop);
    let follower = std::thread::spawn(move || -> Result<(), RoundTripError> {
        let source = listener.accept().map_err(RoundTripError::Rdma)?;
        let mut reader = RingReader::new(source, ring_config);
        let mut seen = 0;
        let mut idle = 0;
        while seen < ops && !follower_stop.load(Ordering::Relaxed) {
            let got = reader
                .poll(usize::MAX, |_| {})
                .map_err(RoundTripError::Read)?;
            seen += got;
            idle = if got == 0 { idle + 1 } else { 0 };
            pause(idle);
        }
        Ok(())
    });
    let acks = AckArray::new(&device, 1).map_err(RoundTripError::Rdma)?;
    let led = RdmaRingSink::dial(&device, addr, FOLLOWER, 1, acks, 0, leader_cfg)
        .map_err(RoundTripError::Rdma)
        .and_then(|(sink, start)| leader(&mut RingWriter::resume(sink, ring_config, start)));
    // A failed leader must not leave the follower spinning or blocked in accept (its
    // handshake then fails on EOF).
    stop.store(true, Ordering::Relaxed);
    if led.is_err() {
        drop(std::net::TcpStream::connect(addr));
    }
    let followed = follower
        .join()
        .map_err(|_| RoundTripError::FollowerPanicked)?;
    let out = led?;
    followed?;
    Ok(out)
}
