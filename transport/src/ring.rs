//! The ring protocol, written once and generic over where the ring's memory lives.
//!
//! # Layout
//!
//! A ring is a data area of `capacity` bytes (a power of two) plus two 64-bit positions:
//!
//! - the **tail**, in the reader's memory, written by the writer: every byte below it is a
//!   complete frame;
//! - the **head**, in the writer's memory (or the mirror of it), written by the reader: every
//!   byte below it has been consumed and may be overwritten.
//!
//! Positions are absolute byte counts since the ring was created (they never wrap; a `u64`
//! lasts centuries); the byte at position `p` lives at data offset `p & (capacity - 1)`.
//! Frames ([`crate::frame`]) start at cache-line (64-byte) aligned positions, so no two
//! frames share a cache line, and never straddle the end of the data area: when a frame does
//! not fit before the end, the writer fills the rest with a padding frame (a header always
//! fits, since [`HEADER_BYTES`] is less than the alignment). The invariant is
//! `head <= tail <= head + capacity`.
//!
//! # Ordering and visibility contract (what a backend must provide)
//!
//! 1. [`RingSink::write`] places bytes in the data area; they need not be visible yet.
//! 2. [`RingSink::publish_tail`]`(t)`: once the reader observes the tail `t`
//!    ([`RingSource::load_tail`]), every byte the writer wrote below `t` must be visible to the
//!    reader (release/acquire in shared memory; over RDMA, the tail write posted after the
//!    frame writes on the same reliable connection, or after their completion, whichever the
//!    device guarantees).
//! 3. [`RingSource::store_head`]`(h)`: once the writer observes the head `h`
//!    ([`RingSink::load_head`]), the reader has finished reading every byte below `h` (its
//!    reads happen before the store, i.e. release; over RDMA the head write is posted after
//!    the frames were read).
//! 4. The writer never writes a byte at or above `head + capacity`, and the reader never reads a
//!    byte at or above `tail`; so no byte is ever read and written at the same time.
//!
//! The reader still validates every frame (magic, position, epoch, length, CRC-32C): bytes
//! below the published tail that do not validate are a torn or corrupt frame; the reader
//! reports [`ReadError::Corrupt`], delivers nothing from that point on, and stays stopped.
//!
//! The index protocol (these four rules driving [`RingWriter`] and [`RingReader`]) is model
//! checked with `loom` (`cfg(loom)` tests in `crate::shm`).
#![forbid(unsafe_code)]

use crate::frame::{self, Expect, FrameError, FrameHeader, FrameKind, HEADER_BYTES, frame_len};
use std::error::Error as StdError;
use thiserror::Error;

/// Boxed backend error carried as the source of ring errors.
pub type BackendError = Box<dyn StdError + Send + Sync + 'static>;

/// The writer's (leader's) side of a ring's memory: where frames are written, where the tail is
/// published, where the mirrored head is read. See the module docs for the ordering contract.
pub trait RingSink {
    /// Operating errors of the backend (e.g. a queue pair in the error state).
    type Error: StdError + Send + Sync + 'static;

    /// Size of the data area in bytes; a power of two, at least 256.
    fn capacity(&self) -> usize;

    /// Writes `parts`, concatenated, at data offset `offset`. The ring core guarantees that
    /// `offset` is frame-aligned ([`crate::frame::FRAME_ALIGN`]), that the bytes fit before
    /// the end of the data area and that they lie in the free region (no unread frame is
    /// overwritten).
    fn write(&mut self, offset: usize, parts: &[&[u8]]) -> Result<(), Self::Error>;

    /// Makes every byte written so far visible to the reader, then makes `tail` visible
    /// (contract rule 2). Tails are published in increasing order.
    fn publish_tail(&mut self, tail: u64) -> Result<(), Self::Error>;

    /// Loads the head last stored by the reader (acquire; contract rule 3).
    fn load_head(&mut self) -> Result<u64, Self::Error>;

    /// A hint, given after each publish: the next frames will be written at data offsets
    /// `offset..offset + len`, which lie in the free region (the reader does not read them
    /// until a later tail covers them). Shared memory takes ownership of those cache lines
    /// ahead of time so the next write does not wait for them; the default does nothing.
    fn prepare(&mut self, offset: usize, len: usize) {
        let _ = (offset, len);
    }
}

/// The reader's (follower's) side of a ring's memory: local ring memory, the published tail,
/// and the head written back. See the module docs for the ordering contract.
pub trait RingSource {
    /// Operating errors of the backend.
    type Error: StdError + Send + Sync + 'static;

    /// Size of the data area in bytes; a power of two, equal to the writer's.
    fn capacity(&self) -> usize;

    /// Loads the tail last published by the writer (acquire; contract rule 2).
    fn load_tail(&mut self) -> Result<u64, Self::Error>;

    /// Calls `f` with the `len` bytes at data offset `offset`. The ring core only asks for
    /// bytes that lie below the tail it loaded and at or above the head it stored, within the
    /// data area, so by the protocol no one writes them meanwhile.
    fn with_published<R>(&self, offset: usize, len: usize, f: impl FnOnce(&[u8]) -> R) -> R;

    /// Stores the consumed position so the writer may reuse the bytes below it (release;
    /// contract rule 3). Heads are stored in increasing order.
    fn store_head(&mut self, head: u64) -> Result<(), Self::Error>;

    /// A hint, given while waiting for a new tail: the next frame will be read at data
    /// offset `offset`. The default does nothing.
    fn expect_at(&self, offset: usize) {
        let _ = offset;
    }
}

/// Bytes past the tail handed to [`RingSink::prepare`] after each publish.
const PREPARE_BYTES: usize = 256;

/// Parameters both ends of a ring agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Connection epoch stamped in every frame; the reader refuses frames of another epoch.
    pub epoch: u64,
    /// Largest payload accepted; larger entries are refused with [`AppendError::TooLarge`].
    /// At most half the capacity minus a header, so a frame always fits once the reader
    /// has consumed everything (after at most one padding frame).
    pub max_payload: usize,
}

impl RingConfig {
    /// The largest `max_payload` a ring of `capacity` bytes allows.
    #[must_use]
    pub const fn max_payload_for(capacity: usize) -> usize {
        capacity / 2 - HEADER_BYTES
    }

    fn assert_fits(&self, capacity: usize) {
        assert!(
            capacity.is_power_of_two() && capacity >= 256,
            "ring capacity {capacity} must be a power of two >= 256"
        );
        assert!(
            self.max_payload <= Self::max_payload_for(capacity),
            "max_payload {} too large for a ring of {capacity} bytes (limit {})",
            self.max_payload,
            Self::max_payload_for(capacity)
        );
    }
}

/// Why an append did not happen.
#[derive(Debug, Error)]
pub enum AppendError {
    /// The payload is larger than [`RingConfig::max_payload`]; nothing was written.
    #[error("entry of {len} bytes exceeds the ring's limit of {max} bytes")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not enough free space until the reader consumes more; pending frames were published.
    /// Retry later.
    #[error("ring full: {needed} bytes needed, {free} free")]
    Full {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes free now.
        free: usize,
    },
    /// The reader's mirrored head is impossible (behind the old head or beyond the tail).
    #[error("mirrored head {head} is outside [{old_head}, {tail}]")]
    HeadOutOfRange {
        /// Head loaded.
        head: u64,
        /// Previous head.
        old_head: u64,
        /// The writer's tail.
        tail: u64,
    },
    /// The backend failed to write, publish or load.
    #[error("ring backend failed")]
    Backend(#[source] BackendError),
}

/// Why the reader stopped.
#[derive(Debug, Error)]
pub enum ReadError {
    /// A frame below the published tail is torn or corrupt; it was not delivered, and the
    /// reader delivers nothing more (every later poll returns this error again).
    #[error("corrupt frame at ring position {position}")]
    Corrupt {
        /// Ring position of the bad frame.
        position: u64,
        /// What is wrong with it.
        #[source]
        source: FrameError,
    },
    /// The published tail is impossible (behind the head, or more than a capacity ahead).
    #[error("published tail {tail} is outside [{head}, {head} + {capacity}]")]
    TailOutOfRange {
        /// Tail loaded.
        tail: u64,
        /// The reader's head.
        head: u64,
        /// Ring capacity.
        capacity: usize,
    },
    /// The backend failed to load the tail or store the head (the reader is not stopped:
    /// a later poll retries).
    #[error("ring backend failed")]
    Backend(#[source] BackendError),
}

/// What stopped a reader for good (kept to report it again on every later poll).
#[derive(Clone, Debug)]
enum Failure {
    Corrupt {
        position: u64,
        source: FrameError,
    },
    TailOutOfRange {
        tail: u64,
        head: u64,
        capacity: usize,
    },
}

impl Failure {
    fn of(e: &ReadError) -> Option<Failure> {
        match e {
            ReadError::Corrupt { position, source } => Some(Failure::Corrupt {
                position: *position,
                source: source.clone(),
            }),
            ReadError::TailOutOfRange {
                tail,
                head,
                capacity,
            } => Some(Failure::TailOutOfRange {
                tail: *tail,
                head: *head,
                capacity: *capacity,
            }),
            ReadError::Backend(_) => None,
        }
    }

    fn error(&self) -> ReadError {
        match self {
            Failure::Corrupt { position, source } => ReadError::Corrupt {
                position: *position,
                source: source.clone(),
            },
            Failure::TailOutOfRange {
                tail,
                head,
                capacity,
            } => ReadError::TailOutOfRange {
                tail: *tail,
                head: *head,
                capacity: *capacity,
            },
        }
    }
}

/// A frame delivered by [`RingReader::poll`]; the payload borrows ring memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Ring position of the frame.
    pub position: u64,
    /// Ballot stamped by the writer.
    pub ballot: u64,
    /// Slot stamped by the writer.
    pub slot: u64,
    /// The payload.
    pub payload: &'a [u8],
}

/// The writer (leader) end of a ring over backend `S`.
#[derive(Debug)]
pub struct RingWriter<S: RingSink> {
    sink: S,
    config: RingConfig,
    capacity: usize,
    /// Position where the next frame goes.
    tail: u64,
    /// Tail last published.
    published: u64,
    /// Head last loaded from the mirror.
    head: u64,
}

impl<S: RingSink> RingWriter<S> {
    /// A writer for a fresh ring (tail and head at 0).
    pub fn new(sink: S, config: RingConfig) -> Self {
        Self::resume(sink, config, 0)
    }

    /// A writer that continues a ring at `position`, the tail it last published (for
    /// example after the writer restarted): new frames start there. Until it loads the
    /// reader's head it assumes the ring is full (the head at least a capacity behind).
    ///
    /// # Panics
    /// If `position` is not frame-aligned or the configuration does not fit the capacity.
    pub fn resume(sink: S, config: RingConfig, position: u64) -> Self {
        let capacity = sink.capacity();
        config.assert_fits(capacity);
        assert!(
            position.is_multiple_of(frame::FRAME_ALIGN as u64),
            "resume position {position} not aligned"
        );
        RingWriter {
            sink,
            config,
            capacity,
            tail: position,
            published: position,
            head: position.saturating_sub(capacity as u64),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RingConfig {
        &self.config
    }

    /// Position where the next frame goes (everything below is written, maybe unpublished).
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// The reader's head as last loaded.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// The backend.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// The backend, mutably. Writing through it bypasses the ring's bookkeeping: meant for
    /// tests that inject faults and for backend maintenance.
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// Gives the backend back.
    pub fn into_sink(self) -> S {
        self.sink
    }

    /// Loads the mirrored head; returns the free bytes.
    pub fn refresh_head(&mut self) -> Result<usize, AppendError> {
        let head = self
            .sink
            .load_head()
            .map_err(|e| AppendError::Backend(Box::new(e)))?;
        if head < self.head || head > self.tail {
            return Err(AppendError::HeadOutOfRange {
                head,
                old_head: self.head,
                tail: self.tail,
            });
        }
        self.head = head;
        Ok(self.free())
    }

    fn free(&self) -> usize {
        let used = usize::try_from(self.tail - self.head).unwrap_or(usize::MAX);
        debug_assert!(used <= self.capacity, "ring over-full: used {used}");
        self.capacity - used
    }

    /// Ensures `needed` free bytes, loading the head if the cached one is not enough.
    fn reserve(&mut self, needed: usize) -> Result<(), AppendError> {
        if self.free() >= needed {
            return Ok(());
        }
        let free = self.refresh_head()?;
        if free >= needed {
            return Ok(());
        }
        // The reader can only make room if it sees what is pending.
        self.publish()?;
        Err(AppendError::Full { needed, free })
    }

    /// Writes one entry frame without publishing it (call [`Self::publish`] after a batch).
    /// Returns the frame's ring position.
    ///
    /// On [`AppendError::Full`] the pending frames (and any padding written to reach the
    /// next lap) are published so the reader can make room; retry later.
    pub fn write(&mut self, ballot: u64, slot: u64, payload: &[u8]) -> Result<u64, AppendError> {
        if payload.len() > self.config.max_payload {
            return Err(AppendError::TooLarge {
                len: payload.len(),
                max: self.config.max_payload,
            });
        }
        let needed = frame_len(payload.len());
        let offset = self.offset(self.tail);
        let to_end = self.capacity - offset;
        if to_end < needed {
            // The frame does not fit before the end: close this lap.
            self.reserve(to_end)?;
            debug_assert!(
                to_end >= HEADER_BYTES,
                "frames are aligned to more than a header"
            );
            let skip = u32::try_from(to_end - HEADER_BYTES).unwrap_or_else(|_| {
                panic!("padding of {to_end} bytes exceeds u32; capacity too large")
            });
            let pad = FrameHeader::padding(self.tail, self.config.epoch, skip);
            self.sink
                .write(offset, &[pad.as_bytes()])
                .map_err(|e| AppendError::Backend(Box::new(e)))?;
            self.tail += to_end as u64;
        }
        self.reserve(needed)?;
        let position = self.tail;
        let offset = self.offset(position);
        let header = FrameHeader::entry(position, self.config.epoch, ballot, slot, payload);
        self.sink
            .write(offset, &[header.as_bytes(), payload])
            .map_err(|e| AppendError::Backend(Box::new(e)))?;
        self.tail += needed as u64;
        debug_assert!(self.tail - self.head <= self.capacity as u64);
        Ok(position)
    }

    /// Makes every written frame visible to the reader.
    pub fn publish(&mut self) -> Result<(), AppendError> {
        if self.published != self.tail {
            self.sink
                .publish_tail(self.tail)
                .map_err(|e| AppendError::Backend(Box::new(e)))?;
            self.published = self.tail;
            let offset = self.offset(self.tail);
            let len = PREPARE_BYTES.min(self.free()).min(self.capacity - offset);
            if len > 0 {
                self.sink.prepare(offset, len);
            }
        }
        Ok(())
    }

    /// [`Self::write`] then [`Self::publish`].
    pub fn send(&mut self, ballot: u64, slot: u64, payload: &[u8]) -> Result<u64, AppendError> {
        let position = self.write(ballot, slot, payload)?;
        self.publish()?;
        Ok(position)
    }

    fn offset(&self, position: u64) -> usize {
        // Truncation is the point: the capacity is a power of two that fits usize.
        (position & (self.capacity as u64 - 1)) as usize
    }
}

/// The reader (follower) end of a ring over backend `R`.
#[derive(Debug)]
pub struct RingReader<R: RingSource> {
    source: R,
    config: RingConfig,
    capacity: usize,
    /// Position of the next frame to read.
    head: u64,
    /// Head last stored for the writer.
    stored_head: u64,
    /// Tail last loaded.
    tail: u64,
    /// Set once a corrupt frame or impossible tail is found.
    failed: Option<Failure>,
}

impl<R: RingSource> RingReader<R> {
    /// A reader for a fresh ring (head at 0).
    pub fn new(source: R, config: RingConfig) -> Self {
        Self::resume(source, config, 0)
    }

    /// A reader that continues at `head` (the head it last stored, e.g. after a restart).
    ///
    /// # Panics
    /// If `head` is not frame-aligned or the configuration does not fit the capacity.
    pub fn resume(source: R, config: RingConfig, head: u64) -> Self {
        let capacity = source.capacity();
        config.assert_fits(capacity);
        assert!(
            head.is_multiple_of(frame::FRAME_ALIGN as u64),
            "resume head {head} not aligned"
        );
        RingReader {
            source,
            config,
            capacity,
            head,
            stored_head: head,
            tail: head,
            failed: None,
        }
    }

    /// Position of the next frame to read.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// The backend.
    pub fn source(&self) -> &R {
        &self.source
    }

    /// The backend, mutably (for tests and maintenance).
    pub fn source_mut(&mut self) -> &mut R {
        &mut self.source
    }

    /// Gives the backend back.
    pub fn into_source(self) -> R {
        self.source
    }

    /// The error that stopped this reader for good, if any.
    pub fn failure(&self) -> Option<ReadError> {
        self.failed.as_ref().map(Failure::error)
    }

    /// Delivers up to `max_frames` published frames to `deliver`, in ring order, then stores
    /// the new head once (so the writer may reuse the space). Returns how many were delivered;
    /// 0 when nothing new is published. Never blocks.
    ///
    /// A torn or corrupt frame stops the reader: it is not delivered, frames before it are,
    /// and this and every later call return [`ReadError::Corrupt`].
    pub fn poll(
        &mut self,
        max_frames: usize,
        mut deliver: impl FnMut(Frame<'_>),
    ) -> Result<usize, ReadError> {
        if let Some(failed) = &self.failed {
            return Err(failed.error());
        }
        let result = self.poll_inner(max_frames, &mut deliver);
        // Store the head even when a bad frame follows good ones: those were consumed.
        let stored = self.store_head();
        match (result, stored) {
            (Err(e), _) => {
                self.failed = Failure::of(&e);
                Err(e)
            }
            (Ok(_), Err(e)) => Err(e),
            (Ok(n), Ok(())) => Ok(n),
        }
    }

    /// Delivers at most one frame to `f` and returns what `f` returned.
    pub fn try_recv<T>(&mut self, f: impl FnOnce(Frame<'_>) -> T) -> Result<Option<T>, ReadError> {
        let mut f = Some(f);
        let mut out = None;
        self.poll(1, |frame| {
            if let Some(f) = f.take() {
                out = Some(f(frame));
            }
        })?;
        Ok(out)
    }

    fn store_head(&mut self) -> Result<(), ReadError> {
        if self.stored_head != self.head {
            self.source
                .store_head(self.head)
                .map_err(|e| ReadError::Backend(Box::new(e)))?;
            self.stored_head = self.head;
        }
        Ok(())
    }

    fn poll_inner(
        &mut self,
        max_frames: usize,
        deliver: &mut impl FnMut(Frame<'_>),
    ) -> Result<usize, ReadError> {
        let mut delivered = 0;
        while delivered < max_frames {
            if self.head == self.tail
                && !{
                    self.source
                        .expect_at((self.head & (self.capacity as u64 - 1)) as usize);
                    self.load_tail()?
                }
            {
                break;
            }
            let offset = (self.head & (self.capacity as u64 - 1)) as usize;
            let to_end = self.capacity - offset;
            let expect = Expect {
                position: self.head,
                epoch: self.config.epoch,
                max_payload: self.config.max_payload,
            };
            let corrupt = |source| ReadError::Corrupt {
                position: expect.position,
                source,
            };
            self.check_within_tail(self.head, HEADER_BYTES)?;
            let header = self
                .source
                .with_published(offset, HEADER_BYTES, |bytes| {
                    FrameHeader::read(bytes).and_then(|h| h.check(&expect).map(|k| (h, k)))
                })
                .map_err(corrupt)?;
            let (header, kind) = header;
            let len = header.ring_len();
            if kind == FrameKind::Padding && len != to_end {
                return Err(corrupt(FrameError::BadPadding {
                    length: header.length,
                }));
            }
            if len > to_end {
                return Err(corrupt(FrameError::TooLong {
                    length: header.length,
                    max: to_end - HEADER_BYTES,
                }));
            }
            self.check_within_tail(self.head, len)?;
            let position = self.head;
            self.source
                .with_published(offset, len, |bytes| {
                    let (header, payload) = frame::decode_frame(bytes, &expect)?;
                    if kind == FrameKind::Entry {
                        deliver(Frame {
                            position,
                            ballot: header.ballot,
                            slot: header.slot,
                            payload,
                        });
                    }
                    Ok(())
                })
                .map_err(corrupt)?;
            self.head += len as u64;
            if kind == FrameKind::Entry {
                delivered += 1;
            }
        }
        Ok(delivered)
    }

    /// Loads the tail; returns whether there is anything new.
    fn load_tail(&mut self) -> Result<bool, ReadError> {
        let tail = self
            .source
            .load_tail()
            .map_err(|e| ReadError::Backend(Box::new(e)))?;
        if tail < self.tail
            || tail - self.head > self.capacity as u64
            || !tail.is_multiple_of(frame::FRAME_ALIGN as u64)
        {
            return Err(ReadError::TailOutOfRange {
                tail,
                head: self.head,
                capacity: self.capacity,
            });
        }
        self.tail = tail;
        Ok(tail > self.head)
    }

    /// A frame extending past the published tail is torn (the writer never publishes half a
    /// frame).
    fn check_within_tail(&self, position: u64, len: usize) -> Result<(), ReadError> {
        if position + len as u64 > self.tail {
            return Err(ReadError::Corrupt {
                position,
                source: FrameError::Truncated {
                    needed: len,
                    available: (self.tail - position) as usize,
                },
            });
        }
        Ok(())
    }
}
